# C-level API of fabric.devices._smafast for other Cython modules (fabric.simproto._simfast sends
# an ibsim client's directed-route request with it).

cdef bint send_dr_packet_c(object hca, int out, bytes packet) except -1
