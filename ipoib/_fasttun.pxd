# C-level API of ipoib._fasttun for ipoib._fastrx and ipoib._fastpath: the accelerated provider's TUN
# queues (the kernel as the IP host, with virtio_net_hdr offloads).
from ipoib._fastring cimport PacketRing


cdef enum:
    PI_LEN = 4          # struct tun_pi: flags, ethertype
    VNET_LEN = 10       # struct virtio_net_hdr
    TUN_HDR = 14        # what precedes every packet on the fd
    NEIGH_SLOTS = 4096  # the neighbour table (open addressing; a power of two)
    MAX_SUPER = 65535   # the largest IPv4 packet, and so the largest super-packet


cdef extern from *:
    # the TUN writer's counters (ipoib/tunwriter.h, which only _fasttun includes: its state is
    # static, one writer per process, and must not be copied into the modules that cimport this)
    """
    #ifndef IBFAB_TW_STATS
    #define IBFAB_TW_STATS
    typedef struct { unsigned long long written, bytes, errors; } tw_stats;
    #endif
    """
    ctypedef struct tw_stats:
        unsigned long long written
        unsigned long long bytes
        unsigned long long errors


cdef struct Neigh:
    unsigned int ip          # IPv4 address, host order; 0: empty slot
    unsigned int dqpn
    unsigned short dlid
    unsigned char sl
    unsigned char live


cdef extern from "sys/uio.h" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len
    ssize_t writev(int fd, const iovec *iov, int iovcnt)


cdef class TunPath:
    cdef int nfd
    cdef int fds[64]
    cdef Neigh table[NEIGH_SLOTS]
    cdef public Py_ssize_t neighbours
    cdef unsigned char *rbuf            # one read: TUN header and a super-packet
    cdef unsigned char *wbuf            # one write: TUN header and a coalesced run
    cdef unsigned char *sbuf            # one software segment for the slow path
    cdef public bint tso                # what the device offers the kernel (TUNSETOFFLOAD)
    cdef public bint uso
    cdef public bint csum
    cdef public bint gro                # coalesce TCP runs before writing them up
    cdef public unsigned int mtu        # the IPoIB MTU: no segment is longer
    cdef public object slow             # slow(q, ipv4 packet octets): the ULP's xmit, for misses
    # counters, read by queue_stats()
    cdef public unsigned long long tx_reads
    cdef public unsigned long long tx_packets
    cdef public unsigned long long tx_segments
    cdef public unsigned long long tx_super
    cdef public unsigned long long tx_slow
    cdef public unsigned long long tx_bad_vnet
    cdef public unsigned long long tx_not_ip
    cdef public unsigned long long rx_written
    cdef public unsigned long long rx_bytes
    cdef public unsigned long long rx_gro_runs
    cdef public unsigned long long rx_gro_segments
    cdef public unsigned long long rx_write_errors
    cdef public unsigned long long rx_bad_csum
    cdef tw_stats wst                   # what the TUN writer's thread wrote for this path
    cdef public bint threaded           # writes up go through that thread (IBFAB_TUN_WRITER=0: not)

    cdef inline Neigh *_find(self, unsigned int ip) noexcept nogil
    cpdef Py_ssize_t read_queue(self, int q, PacketRing ring, Py_ssize_t budget)
    cdef void _tx_one(self, int q, PacketRing ring, unsigned char *buf, Py_ssize_t n)
    cdef inline bint _push(self, PacketRing ring, Neigh *nb, const unsigned char *p, Py_ssize_t plen) noexcept
    cdef void _segment_out(self, int q, PacketRing ring, unsigned char *p, Py_ssize_t plen, unsigned int ihl,
                           unsigned int l4h, unsigned int proto, unsigned int mss)
    cdef inline bint _tcp_ok(self, const unsigned char *ip, Py_ssize_t n, unsigned int thl) noexcept nogil
    cdef Py_ssize_t write_run(self, int q, const unsigned char **frames, Py_ssize_t *lens, Py_ssize_t k) noexcept
    cdef Py_ssize_t _write_one(self, int fd, const unsigned char *hdr, const unsigned char *pkt,
                               Py_ssize_t n) noexcept
    cdef Py_ssize_t _writev(self, int fd, iovec *iov, int cnt, Py_ssize_t payload) noexcept
    cdef Py_ssize_t gro_run_len(self, const unsigned char **frames, Py_ssize_t *lens, Py_ssize_t k) noexcept nogil
