# cython: language_level=3
"""The accelerated provider's TUN queues: the kernel as the IP host, served as a vendor driver serves
its NIC's queues.

Each TUN queue (``IFF_MULTI_QUEUE``, one fd each) belongs to one TX and one RX queue of the provider.
Every packet on an fd comes after a ``struct tun_pi`` (4 octets: flags, ethertype) and a
``struct virtio_net_hdr`` (10 octets, little-endian), which is how the kernel hands over and takes
back offloaded work:

- TX (``read_queue``): one read per packet, in C. A TCP or UDP super-packet (``gso_type`` TCPV4 or
  UDP_L4, up to 64 KB) is cut into IPoIB-MTU datagrams straight into the TX ring's slots, each with
  its own IP length, identification and checksum, TCP sequence number and flags, and TCP or UDP
  checksum (TSO, USO); a packet that asks for its checksum (NEEDS_CSUM) gets it (checksum offload).
  The destination comes from the neighbour table the ULP fills (``set_neigh``): an IPv4 address,
  the path's DLID and SL and the neighbour's QPN. What the table does not hold (a neighbour not yet
  resolved, multicast, broadcast, anything not IPv4) goes to the ULP's ``xmit`` in Python
  (``slow``), already cut and checksummed, so the control plane (ARP, PathRecords, joins) is the
  ULP's as ever.
- RX (``write_run``): the frames of an RX ring go up with one write each, or, for consecutive
  segments of one TCP flow, as one super-packet with ``gso_type`` TCPV4 (GRO): every segment's
  checksum is verified first, the super-packet's carries the pseudo-header sum and NEEDS_CSUM, as a
  NIC's GRO hands the stack a verified ``CHECKSUM_PARTIAL`` packet.

No Python object per packet on either path. ``segment`` and ``coalesce`` expose the two
transformations for the tests, which compare them with the kernel's own segmentation.
"""

cimport cython
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from posix.unistd cimport read
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from ipoib._fastring cimport (META, PacketRing, csum_add, csum_fold, csum_native, ibf_copy_sum32,
                              tx_address)


cdef extern from "tunwriter.h" nogil:
    int tw_idle()
    unsigned char *tw_reserve()
    void tw_commit(int fd, size_t len, size_t counted, tw_stats *st)
    void tw_quiesce()
    enum: TW_BUF

import os as _os
# IBFAB_TUN_WRITER=0: every write up to the kernel from the host's own thread (for comparisons)
cdef bint THREADED = _os.environ.get("IBFAB_TUN_WRITER", "1") != "0"


cdef enum:
    VNET_F_NEEDS_CSUM = 1
    VNET_F_DATA_VALID = 2
    GSO_NONE = 0
    GSO_TCPV4 = 1
    GSO_UDP = 3
    GSO_TCPV6 = 4
    GSO_UDP_L4 = 5
    GSO_ECN = 0x80
    RING_RESERVE = 64    # free TX slots needed before another read: a 64 KB super-packet's segments
    MAX_RUN = 64         # frames coalesced into one write at most
    UDP_MAX_SEGMENTS = 128  # the kernel's limit for one UDP GSO packet
    TCP_FIN = 0x01
    TCP_SYN = 0x02
    TCP_RST = 0x04
    TCP_PSH = 0x08
    TCP_URG = 0x20
    TCP_CWR = 0x80
    DEF_BUF = 65613      # TUN_HDR + MAX_SUPER + 64: one read or write, whatever it holds



cdef inline unsigned int _u16(const unsigned char *p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef inline unsigned int _u32(const unsigned char *p) noexcept nogil:
    return (<unsigned int> p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]


cdef inline void _put16(unsigned char *p, unsigned int v) noexcept nogil:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


cdef inline void _put32(unsigned char *p, unsigned int v) noexcept nogil:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline unsigned int _le16(const unsigned char *p) noexcept nogil:
    return p[0] | (p[1] << 8)


cdef inline void _ip_checksum(unsigned char *ip, unsigned int ihl) noexcept nogil:
    ip[10] = 0
    ip[11] = 0
    _put16(ip + 10, (~csum_fold(csum_add(0, ip, ihl))) & 0xFFFF)


cdef inline unsigned long long _pseudo(const unsigned char *ip, unsigned int proto, unsigned int l4len) noexcept nogil:
    """The IPv4 pseudo-header's contribution to a TCP or UDP checksum."""
    return csum_add(0, ip + 12, 8) + proto + l4len


cdef inline bint _is_unicast(unsigned int dst) noexcept nogil:
    return not ((dst >> 28) == 0xE or dst == 0xFFFFFFFFu or dst == 0)


cdef Py_ssize_t _build_segment(unsigned char *d, const unsigned char *p, unsigned int ihl, unsigned int l4h,
                               unsigned int proto, Py_ssize_t i, Py_ssize_t off, Py_ssize_t L,
                               bint last) noexcept nogil:
    """Segment ``i`` of a super-packet ``p`` (IP header ``ihl``, L4 header ``l4h``): its headers and
    the ``L`` payload octets from ``off``, with every length, identification, sequence number, flag
    and checksum as a segment sent on its own would have them. Returns its length."""
    cdef unsigned int hdrs = ihl + l4h, total = hdrs + <unsigned int> L, c
    cdef unsigned char *l4 = d + ihl
    cdef Py_ssize_t L8 = L & ~7
    cdef unsigned long long body
    memcpy(d, p, hdrs)
    # the payload is copied and summed in one pass; it starts at an even offset of the L4 header
    # (whose length is a multiple of 4), so its native sum joins the header's
    body = ibf_copy_sum32(d + hdrs, p + hdrs + off, L8)
    memcpy(d + hdrs + L8, p + hdrs + off + L8, L - L8)
    _put16(d + 2, total)
    _put16(d + 4, (_u16(p + 4) + i) & 0xFFFF)
    _ip_checksum(d, ihl)
    if proto == 6:
        _put32(l4 + 4, _u32(p + ihl + 4) + <unsigned int> off)
        if not last:
            l4[13] &= ~(TCP_FIN | TCP_PSH)
        if i:
            l4[13] &= ~TCP_CWR
        l4[16] = 0
        l4[17] = 0
        c = (~csum_fold(csum_add(csum_native(csum_add(_pseudo(d, 6, l4h + L), l4, l4h), body),
                                 d + hdrs + L8, L - L8))) & 0xFFFF
        _put16(l4 + 16, c)
    else:
        _put16(l4 + 4, 8 + <unsigned int> L)
        l4[6] = 0
        l4[7] = 0
        c = (~csum_fold(csum_add(csum_native(csum_add(_pseudo(d, 17, 8 + L), l4, 8), body),
                                 d + hdrs + L8, L - L8))) & 0xFFFF
        _put16(l4 + 6, c if c else 0xFFFF)
    return total


cdef class TunPath:
    """The TUN queues of one interface: ``fds[q]`` is queue ``q``'s file descriptor (TX queue ``q``
    reads it, RX queue ``q`` writes it). ``slow(q, packet)`` takes what the C path leaves to the ULP."""

    def __cinit__(self, fds, unsigned int mtu, slow):
        cdef int q
        if not 1 <= len(fds) <= 64:
            raise ValueError("a TUN device has 1 to 64 queues here")
        self.nfd = len(fds)
        for q in range(self.nfd):
            self.fds[q] = fds[q]
        memset(self.table, 0, sizeof(self.table))
        self.rbuf = <unsigned char *> malloc(DEF_BUF)
        self.wbuf = <unsigned char *> malloc(DEF_BUF)
        self.sbuf = <unsigned char *> malloc(DEF_BUF)
        if self.rbuf == NULL or self.wbuf == NULL or self.sbuf == NULL:
            raise MemoryError()
        self.mtu = mtu
        self.slow = slow
        self.tso = self.uso = self.csum = self.gro = True
        self.threaded = THREADED
        memset(&self.wst, 0, sizeof(self.wst))

    def quiesce(self):
        """Wait until the TUN writer has written everything queued (before the fds close)."""
        with nogil:
            tw_quiesce()

    def __dealloc__(self):
        tw_quiesce()  # the writer may still count into self.wst
        free(self.rbuf)
        free(self.wbuf)
        free(self.sbuf)

    # -- the neighbour table (the ULP's ARP and PathRecord answers, for the C path) --------------

    cdef inline Neigh *_find(self, unsigned int ip) noexcept nogil:
        cdef unsigned int h = (ip * 0x9E3779B1u) >> 20, i
        cdef Neigh *e
        for i in range(NEIGH_SLOTS):
            e = &self.table[(h + i) & (NEIGH_SLOTS - 1)]
            if e.ip == ip or e.ip == 0:
                return e
        return NULL

    def set_neigh(self, bytes ip, unsigned int dlid, unsigned int sl, unsigned int dqpn):
        """``ip`` (4 octets) is reachable: DLID and SL of its path, QPN of its interface."""
        cdef unsigned int a = _u32(<const unsigned char *> PyBytes_AS_STRING(ip))
        cdef Neigh *e
        if len(ip) != 4 or not _is_unicast(a):
            raise ValueError("a neighbour is a unicast IPv4 address")
        e = self._find(a)
        if e == NULL or (e.ip == 0 and self.neighbours >= NEIGH_SLOTS // 2):
            self.flush_neigh()  # full: start again; what is missing takes the slow path once
            e = self._find(a)
        if e.ip == 0:
            self.neighbours += 1
        e.ip, e.dlid, e.sl, e.dqpn, e.live = a, dlid, sl, dqpn, 1

    def flush_neigh(self):
        """Forget every neighbour (an event flushed the ULP's tables): the slow path teaches us again."""
        memset(self.table, 0, sizeof(self.table))
        self.neighbours = 0

    def neigh(self, bytes ip):
        """(DLID, SL, QPN) of a neighbour, or None (for tests and ``ibfab neigh``)."""
        cdef Neigh *e = self._find(_u32(<const unsigned char *> PyBytes_AS_STRING(ip)))
        if e == NULL or e.ip == 0:
            return None
        return (e.dlid, e.sl, e.dqpn)

    # -- TX: the kernel's packets into the TX rings -------------------------------------------

    cpdef Py_ssize_t read_queue(self, int q, PacketRing ring, Py_ssize_t budget):
        """Read up to ``budget`` packets from TUN queue ``q`` into ``ring``. Returns how many were
        read; fewer when the fd is empty or the ring has no room for another super-packet's
        segments (the caller stops reading until the ring drains: the kernel's queue holds them)."""
        cdef Py_ssize_t done = 0, n
        cdef int fd = self.fds[q]
        while done < budget:
            if ring.slots - ring._count < RING_RESERVE:
                break
            with nogil:
                n = read(fd, self.rbuf, DEF_BUF)
            if n < 0:
                if errno == EINTR:
                    continue
                break  # EAGAIN: empty; anything else: the device is going away
            done += 1
            self.tx_reads += 1
            self._tx_one(q, ring, self.rbuf, n)
        return done

    cdef void _tx_one(self, int q, PacketRing ring, unsigned char *buf, Py_ssize_t n):
        cdef unsigned int proto, flags, gso_type, gso_size, cstart, coff, ihl, total, dst, l4h, ipproto
        cdef unsigned char *p
        cdef Py_ssize_t plen
        cdef Neigh *nb
        if n < TUN_HDR + 20:
            self.tx_bad_vnet += 1
            return
        proto = (buf[2] << 8) | buf[3]
        p = buf + TUN_HDR
        plen = n - TUN_HDR
        if proto != 0x0800 or p[0] >> 4 != 4:
            self.tx_not_ip += 1
            self.slow(q, proto, PyBytes_FromStringAndSize(<char *> p, plen))
            return
        flags, gso_type = buf[PI_LEN], buf[PI_LEN + 1]
        gso_size = _le16(buf + PI_LEN + 4)
        cstart, coff = _le16(buf + PI_LEN + 6), _le16(buf + PI_LEN + 8)
        ihl = (p[0] & 0xF) * 4
        total = _u16(p + 2)
        if ihl < 20 or total < ihl or total > plen:
            self.tx_bad_vnet += 1
            return
        plen = total
        ipproto = p[9]
        gso_type &= ~GSO_ECN
        if gso_type != GSO_NONE:
            if gso_type == GSO_TCPV4 and ipproto == 6 and plen >= ihl + 20:
                l4h = (p[ihl + 12] >> 4) * 4
            elif gso_type == GSO_UDP_L4 and ipproto == 17 and plen >= ihl + 8:
                l4h = 8
            else:
                self.tx_bad_vnet += 1
                return
            if l4h < (20 if ipproto == 6 else 8) or ihl + l4h > plen or gso_size == 0 or \
                    ihl + l4h + gso_size > self.mtu or (p[6] & 0x3F) or p[7] or \
                    (ipproto == 17 and plen - ihl - 8 > gso_size * UDP_MAX_SEGMENTS):
                self.tx_bad_vnet += 1
                return
            self._segment_out(q, ring, p, plen, ihl, l4h, ipproto, gso_size)
            return
        if flags & VNET_F_NEEDS_CSUM:
            if cstart < ihl or cstart + coff + 2 > plen:
                self.tx_bad_vnet += 1
                return
            # the field holds the pseudo-header sum: summing it in with the rest completes it
            _put16(p + cstart + coff, (~csum_fold(csum_add(0, p + cstart, plen - cstart))) & 0xFFFF)
        dst = _u32(p + 16)
        nb = self._find(dst) if _is_unicast(dst) else NULL
        if nb == NULL or nb.ip == 0 or plen > self.mtu:
            self.tx_slow += 1
            self.slow(q, 0x0800, PyBytes_FromStringAndSize(<char *> p, plen))
            return
        if not self._push(ring, nb, p, plen):
            return
        self.tx_packets += 1

    cdef inline bint _push(self, PacketRing ring, Neigh *nb, const unsigned char *p, Py_ssize_t plen) noexcept:
        cdef Py_ssize_t slot = ring._reserve(META + 4 + plen)
        cdef unsigned char *d
        if slot < 0:
            return False
        d = ring._buf + slot * ring.slot_size
        tx_address(d, nb.dlid, nb.sl, nb.dqpn)
        d[META], d[META + 1], d[META + 2], d[META + 3] = 0x08, 0x00, 0, 0
        memcpy(d + META + 4, p, plen)
        ring._commit(slot, META + 4 + plen)
        return True

    cdef void _segment_out(self, int q, PacketRing ring, unsigned char *p, Py_ssize_t plen, unsigned int ihl,
                           unsigned int l4h, unsigned int proto, unsigned int mss):
        """Cut a super-packet into the ring (its neighbour known) or into the slow path."""
        cdef Py_ssize_t payload = plen - ihl - l4h, nseg, i, off, L, slot, seglen
        cdef unsigned int dst = _u32(p + 16)
        cdef Neigh *nb = self._find(dst) if _is_unicast(dst) else NULL
        cdef unsigned char *d
        nseg = (payload + mss - 1) // mss if payload > 0 else 1
        self.tx_super += 1
        if nb != NULL and nb.ip != 0 and ring.slots - ring._count >= nseg:
            off = 0
            for i in range(nseg):
                L = mss if payload - off > mss else payload - off
                slot = ring._reserve(META + 4 + ihl + l4h + L)
                d = ring._buf + slot * ring.slot_size
                tx_address(d, nb.dlid, nb.sl, nb.dqpn)
                d[META], d[META + 1], d[META + 2], d[META + 3] = 0x08, 0x00, 0, 0
                seglen = _build_segment(d + META + 4, p, ihl, l4h, proto, i, off, L, i == nseg - 1)
                ring._commit(slot, META + 4 + seglen)
                off += L
            self.tx_segments += nseg
            self.tx_packets += nseg
            return
        off = 0
        for i in range(nseg):  # the slow path: each segment to the ULP on its own
            L = mss if payload - off > mss else payload - off
            seglen = _build_segment(self.sbuf, p, ihl, l4h, proto, i, off, L, i == nseg - 1)
            self.tx_slow += 1
            self.slow(q, 0x0800, PyBytes_FromStringAndSize(<char *> self.sbuf, seglen))
            off += L

    # -- RX: frames up to the kernel, coalesced --------------------------------------------------

    cdef Py_ssize_t gro_run_len(self, const unsigned char **frames, Py_ssize_t *lens, Py_ssize_t k) noexcept nogil:
        """How many of the ``k`` IPoIB frames form one TCP GRO run (1 when none does). A run: one
        flow (addresses, ports), consecutive sequence numbers, the same IP and TCP headers but for
        identification, lengths, sequence and checksums (so the same options, ACK and window), full
        segments but the last, no SYN, RST or URG, PSH or FIN only on the last; every checksum right."""
        cdef const unsigned char *a = frames[0] + 4
        cdef const unsigned char *b
        cdef Py_ssize_t na = lens[0] - 4, nb, j
        cdef unsigned int ihl, thl, mss, pb, seq, i
        cdef unsigned long long total
        cdef bint same
        if not self.gro or k < 2 or na < 40 or frames[0][0] != 0x08 or frames[0][1] != 0 or a[0] != 0x45 \
                or a[9] != 6 or (a[6] & 0x3F) or a[7] or _u16(a + 2) != na:
            return 1
        ihl = 20
        thl = (a[ihl + 12] >> 4) * 4
        if thl < 20 or ihl + thl >= na or a[ihl + 13] & (TCP_SYN | TCP_RST | TCP_URG | TCP_FIN | TCP_PSH):
            return 1
        if not self._tcp_ok(a, na, thl):
            return 1
        mss = na - ihl - thl
        seq = _u32(a + ihl + 4) + mss
        total = na
        j = 1
        while j < k and j < MAX_RUN:
            b = frames[j] + 4
            nb = lens[j] - 4
            if nb < ihl + thl or frames[j][0] != 0x08 or frames[j][1] != 0 or b[0] != 0x45 \
                    or _u16(b + 2) != nb:
                break
            pb = nb - ihl - thl
            if pb == 0 or pb > mss or total + pb > MAX_SUPER:
                break
            # the IP header but for length, identification and checksum; the TCP header but for
            # sequence, checksum and PSH/FIN
            if a[1] != b[1] or a[6] != b[6] or a[7] != b[7] or a[8] != b[8] or a[9] != b[9] \
                    or _u32(a + 12) != _u32(b + 12) or _u32(a + 16) != _u32(b + 16) \
                    or _u32(a + 20) != _u32(b + 20) or _u32(b + 24) != seq or _u32(a + 28) != _u32(b + 28) \
                    or b[32] != a[32] or (b[33] & ~(TCP_PSH | TCP_FIN)) != a[33] or _u16(a + 34) != _u16(b + 34) \
                    or _u16(a + 38) != _u16(b + 38):
                break
            same = True
            for i in range(20, thl):  # the TCP options too
                if a[ihl + i] != b[ihl + i]:
                    same = False
                    break
            if not same or not self._tcp_ok(b, nb, thl):
                break
            total += pb
            seq += pb
            j += 1
            if pb < mss or b[33] & (TCP_PSH | TCP_FIN):
                break  # a short segment or PSH/FIN ends a run
        return j

    cdef inline bint _tcp_ok(self, const unsigned char *ip, Py_ssize_t n, unsigned int thl) noexcept nogil:
        """The segment's IP and TCP checksums are right (what GRO may not take on trust)."""
        if csum_fold(csum_add(0, ip, 20)) != 0xFFFF:
            return False
        if csum_fold(csum_add(_pseudo(ip, 6, n - 20), ip + 20, n - 20)) != 0xFFFF:
            self.rx_bad_csum += 1
            return False
        return True

    cdef Py_ssize_t write_run(self, int q, const unsigned char **frames, Py_ssize_t *lens, Py_ssize_t k) noexcept:
        """Write IPoIB frames ``frames[:k]`` (which ``gro_run_len`` chose) up on queue ``q``: one
        frame as it is, or a run as one super-packet. A run goes to the TUN writer's thread
        (ipoib/tunwriter.h), and so does a lone frame while the thread has writes queued (a queue
        keeps its order); a lone frame is written here otherwise. Returns the octets written or
        queued (0 when the kernel refused them: counted)."""
        cdef iovec iov[MAX_RUN + 2]
        cdef unsigned char *h = self.wbuf
        cdef unsigned char *buf
        cdef const unsigned char *a = frames[0] + 4
        cdef unsigned int thl, mss, total, j, hlen
        cdef Py_ssize_t off
        cdef int fd = self.fds[q % self.nfd]
        memset(h, 0, TUN_HDR)
        h[2], h[3] = 0x08, 0x00
        if k == 1:
            return self._write_one(fd, h, a, lens[0] - 4)
        thl = (a[32] >> 4) * 4
        mss = lens[0] - 4 - 20 - thl
        total = 20 + thl
        for j in range(k):
            total += lens[j] - 4 - 20 - thl
        # virtio_net_hdr: NEEDS_CSUM, TCPV4, hdr_len, gso_size, csum_start, csum_offset (LE)
        h[PI_LEN] = VNET_F_NEEDS_CSUM
        h[PI_LEN + 1] = GSO_TCPV4
        h[PI_LEN + 2], h[PI_LEN + 3] = (20 + thl) & 0xFF, (20 + thl) >> 8
        h[PI_LEN + 4], h[PI_LEN + 5] = mss & 0xFF, mss >> 8
        h[PI_LEN + 6], h[PI_LEN + 7] = 20, 0
        h[PI_LEN + 8], h[PI_LEN + 9] = 16, 0
        memcpy(h + TUN_HDR, a, 20 + thl)  # the first segment's headers, then every payload
        _put16(h + TUN_HDR + 2, total)
        _ip_checksum(h + TUN_HDR, 20)
        h[TUN_HDR + 20 + 13] |= frames[k - 1][4 + 20 + 13] & (TCP_PSH | TCP_FIN)
        _put16(h + TUN_HDR + 20 + 16, csum_fold(_pseudo(h + TUN_HDR, 6, total - 20)))  # CHECKSUM_PARTIAL
        self.rx_gro_runs += 1
        self.rx_gro_segments += k
        hlen = TUN_HDR + 20 + thl
        if self.threaded:
            with nogil:
                buf = tw_reserve()
            if buf != NULL:
                memcpy(buf, h, hlen)
                off = hlen
                for j in range(k):
                    memcpy(buf + off, frames[j] + 4 + 20 + thl, lens[j] - 4 - 20 - thl)
                    off += lens[j] - 4 - 20 - thl
                tw_commit(fd, off, total, &self.wst)
                return off
        iov[0].iov_base = h
        iov[0].iov_len = hlen
        for j in range(k):
            iov[j + 1].iov_base = <void *> (frames[j] + 4 + 20 + thl)
            iov[j + 1].iov_len = lens[j] - 4 - 20 - thl
        return self._writev(fd, iov, k + 1, total)

    cdef Py_ssize_t _writev(self, int fd, iovec *iov, int cnt, Py_ssize_t payload) noexcept:
        """One write up to the kernel, counted: the octets written, or 0 when it refused them."""
        cdef Py_ssize_t r
        with nogil:
            r = writev(fd, iov, cnt)
        if r < 0:
            self.rx_write_errors += 1
            return 0
        self.rx_written += 1
        self.rx_bytes += payload
        return r

    cdef Py_ssize_t _write_one(self, int fd, const unsigned char *hdr, const unsigned char *pkt,
                               Py_ssize_t n) noexcept:
        """A lone frame (``hdr``, TUN_HDR octets, then ``n`` octets of packet) up on ``fd``: queued
        behind the TUN writer's writes while it has some (a queue keeps its order), written at once
        otherwise. Returns the octets written or queued (0 when the kernel refused them: counted)."""
        cdef unsigned char *buf
        cdef iovec iov[2]
        if self.threaded and not tw_idle():
            if TUN_HDR + n <= TW_BUF:
                with nogil:
                    buf = tw_reserve()
                if buf != NULL:
                    memcpy(buf, hdr, TUN_HDR)
                    memcpy(buf + TUN_HDR, pkt, n)
                    tw_commit(fd, TUN_HDR + n, n, &self.wst)
                    return TUN_HDR + n
            with nogil:
                tw_quiesce()
        iov[0].iov_base = <void *> hdr
        iov[0].iov_len = TUN_HDR
        iov[1].iov_base = <void *> pkt
        iov[1].iov_len = n
        return self._writev(fd, iov, 2, n)

    def write_frame(self, int q, bytes data):
        """Write ``data`` (the TUN header and a packet) up on queue ``q`` as ``write_run`` writes a
        lone frame. False when the kernel refused it (counted)."""
        cdef const unsigned char *p = <const unsigned char *> PyBytes_AS_STRING(data)
        if len(data) < TUN_HDR:
            raise ValueError("a TUN frame starts with its 14-octet header")
        return self._write_one(self.fds[q % self.nfd], p, p + TUN_HDR, len(data) - TUN_HDR) > 0

    def stats(self):
        return {"tun_tx_reads": self.tx_reads, "tun_tx_packets": self.tx_packets, "tun_tx_segments": self.tx_segments,
                "tun_tx_super": self.tx_super, "tun_tx_slow": self.tx_slow, "tun_tx_bad_vnet": self.tx_bad_vnet,
                "tun_tx_not_ip": self.tx_not_ip, "tun_rx_written": self.rx_written + self.wst.written,
                "tun_rx_bytes": self.rx_bytes + self.wst.bytes, "tun_rx_gro_runs": self.rx_gro_runs,
                "tun_rx_gro_segments": self.rx_gro_segments,
                "tun_rx_write_errors": self.rx_write_errors + self.wst.errors, "tun_rx_bad_csum": self.rx_bad_csum,
                "tun_neighbours": self.neighbours}


# -- for the tests: the two transformations, on Python objects ------------------------------------

def segment(bytes vnet_packet, unsigned int mtu=65535):
    """What the TX path makes of ``vnet_packet`` (a virtio_net_hdr, then an IPv4 packet): the
    packets it puts on the wire (without IPoIB headers), or [] when it refuses it."""
    cdef list out = []
    cdef TunPath tp = TunPath([0], mtu, lambda q, proto, pkt: out.append(pkt))
    cdef bytes buf = b"\0\0\x08\0" + vnet_packet
    cdef unsigned char *b = <unsigned char *> PyBytes_AS_STRING(buf)
    memcpy(tp.rbuf, b, len(buf))
    tp._tx_one(0, None, tp.rbuf, len(buf))  # no neighbour known: every segment takes the slow path
    return out


def coalesce(list ipv4_packets, bint threaded=True, list then=None):
    """What the RX path writes up for these packets, queued in this order: a list of (virtio_net_hdr,
    packet) as the kernel would read them. ``threaded``: through the TUN writer's thread, as the
    provider writes, every run queued before any is read (False: every write from this thread).
    ``then``: packets the ULP writes up after those (``write_frame``). The "TUN queue" is a
    datagram socket, read by a thread of our own meanwhile."""
    cdef Py_ssize_t k = len(ipv4_packets), i = 0, j, run
    cdef list frames = [b"\x08\x00\x00\x00" + bytes(p) for p in ipv4_packets]
    cdef const unsigned char *ptrs[MAX_RUN]
    cdef Py_ssize_t lens[MAX_RUN]
    cdef TunPath tp = TunPath([-1], 65535, None)
    cdef list got = []
    import socket
    import threading
    r, w = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    w.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE: room for whole super-packets

    def reader():
        while True:
            data = r.recv(DEF_BUF)
            if len(data) == 1:  # the end mark, written after everything else
                return
            got.append(data)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    tp.fds[0] = w.fileno()
    tp.threaded = threaded
    try:
        while i < k:
            run = min(k - i, MAX_RUN)
            for j in range(run):
                ptrs[j] = <const unsigned char *> PyBytes_AS_STRING(frames[i + j])
                lens[j] = len(frames[i + j])
            run = tp.gro_run_len(ptrs, lens, run)
            tp.write_run(0, ptrs, lens, run)
            i += run
        for pkt in then or ():
            tp.write_frame(0, b"\0\0\x08\0" + bytes(VNET_LEN) + bytes(pkt))  # tun_pi, an empty vnet header
        tp.quiesce()
        w.send(b"!")
        t.join(30)
    finally:
        tp.quiesce()
        r.close()
        w.close()
    return [(data[PI_LEN:TUN_HDR], data[TUN_HDR:]) for data in got]
