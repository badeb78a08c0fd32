# C-level API of ipoib._fastrx for ipoib._fastpath: the provider reads its receive engine's
# attributes straight from the struct (the send path reads udp_ports per packet).
from ipoib._fastring cimport PacketRing


cdef class RxOwner:
    """What owns an RxEngine (the fast provider): called per link burst, at C level."""
    cpdef _rx_refresh(self, RxEngine engine, port)
    cpdef _rx_event(self, RxEngine engine, now)


cdef class RxEngine:
    cdef public list rings
    cdef public int nq
    cdef public unsigned int qpn
    cdef public unsigned int qkey
    cdef public unsigned int pkey
    cdef readonly Py_ssize_t frame_max
    cdef public bint enabled
    cdef public bint udp_ports     # hash UDP ports too (rx-flow-hash udp4 sdfn)
    cdef public RxOwner owner
    cdef public unsigned long long fresh_packets
    cdef public unsigned long long fresh_bytes
    cdef public unsigned long long fresh_overflow
    cdef public unsigned long long up_calls  # frames poll_queue handed to Python (deliver, a sink, reflect)
    cdef public bint gro                # coalesce runs of UDP datagrams (ethtool -K gro)
    cdef public unsigned long long gro_runs
    cdef public unsigned long long gro_packets
    cdef Py_ssize_t _gro_size
    cdef unsigned long long _last_key   # the RxInfo of the last sender, for the next frame
    cdef object _last_info
    cdef unsigned long long _rx_bytes[64]  # per queue (nq of them)

    cdef inline bint _take(self, const unsigned char *p, Py_ssize_t n, unsigned int slid,
                           unsigned int src_qp) noexcept
    cdef Py_ssize_t _gro_run(self, PacketRing ring, Py_ssize_t limit)
    cdef bytes _gro_take(self, PacketRing ring, Py_ssize_t run)
