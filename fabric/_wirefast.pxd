# C-level API of fabric._wirefast for other Cython modules (ipoib._fastpath builds packets with it).
from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef uint16_t vcrc16_raw(const uint8_t *p, Py_ssize_t n) noexcept nogil
cdef uint32_t crc32_update(uint32_t crc, const uint8_t *p, Py_ssize_t n) noexcept nogil
cdef uint32_t icrc_local(const uint8_t *p, Py_ssize_t n) noexcept nogil
cdef void seal_local(uint8_t *p, Py_ssize_t plen) noexcept nogil
cdef bint crcs_ok_local(const uint8_t *p, Py_ssize_t plen) noexcept nogil
cdef Py_ssize_t write_ud_packet(uint8_t *out, const uint8_t *payload, Py_ssize_t n, unsigned int slid,
                                unsigned int dlid, unsigned int sl, unsigned int pkey, unsigned int dest_qp,
                                unsigned int src_qp, unsigned int qkey, unsigned int psn, unsigned int vl,
                                unsigned int se) noexcept nogil
cdef bint _smp_sound(const uint8_t *p, Py_ssize_t plen, unsigned int mclass) noexcept nogil
cdef int _dr_transit_port(const uint8_t *p, Py_ssize_t plen, int nports) noexcept nogil
cdef int _dr_route_port(const uint8_t *p, int nports) noexcept nogil
cdef void _dr_transit_patch(uint8_t *q, int in_port) noexcept nogil
cdef enum:
    COUNT_RCV = 0  # fabric.devices.port.PENDING's order
    COUNT_XMIT = 1

from fabric._corefast cimport CountersCore, HCACore, PortCore, QPCore

cdef void hca_post_segment_c(HCACore hca, object qpn, object port_num, object count, object words,
                             object buf) except *
cdef void hca_post_segment_qp(HCACore hca, PortCore port, QPCore qp, object port_num, unsigned long long count,
                              unsigned long long words, object buf) except *
cdef void count_unicast(CountersCore counters, int direction, unsigned long long pkts, unsigned long long words) except *

cdef enum:
    FWD_SLOW = 0     # the per-packet path classifies it
    FWD_OUT = 1      # forwarded by the LFT's port
    FWD_RELAY = 2    # no route (PortRcvSwitchRelayErrors)
    FWD_DISCARD = 3  # the egress port is not Active (PortXmitDiscards)

cdef int unicast_verdict(const uint8_t *p, Py_ssize_t plen, int in_port, bint ingress_active,
                         const uint8_t *lft, Py_ssize_t lft_len, Py_ssize_t lft_top, const uint8_t *port_flags,
                         Py_ssize_t nports, const unsigned int *port_mtu, const unsigned short *port_pkeys,
                         unsigned int own_lid_base, unsigned int own_lid_count, int *outp) noexcept nogil

cdef enum:
    SMP_KIND_REQUEST_DR = 1   # smp_arrival's verdicts
    SMP_KIND_REQUEST_LID = 2
    SMP_KIND_RESPONSE_DR = 3

cdef int smp_kind(const uint8_t *p, Py_ssize_t n) noexcept nogil
cdef bytes smp_answer_packet(const uint8_t *req, int in_port, const uint8_t *data, unsigned int status)

cdef bint _plain_dr_request(const uint8_t *m) noexcept
cdef bytes _dr_request_packet(const uint8_t *m, bint with_tid, unsigned long long tid)
