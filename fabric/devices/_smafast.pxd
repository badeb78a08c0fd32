# C-level API of fabric.devices._smafast for other Cython modules (fabric.simproto._simfast sends
# an ibsim client's directed-route request with it; fabric.host._localfast hands an HCA its SMPs).
from fabric._corefast cimport HCACore

cdef bint send_dr_packet_c(object hca, int out, bytes packet) except -1
cdef object hca_smp_fast_c(HCACore hca, int in_port, object data, double now)
