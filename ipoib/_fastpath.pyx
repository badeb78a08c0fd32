# cython: language_level=3
"""Accelerated data-path core (backend ``fast``): preallocated numpy ring buffers.

Same names and behaviour as :mod:`ipoib._stdpath`. A ring is one contiguous uint8 array of
``slots x slot_size`` plus a length per slot; head and tail are plain C integers, so pushing and
popping a packet is a memcpy and two index updates, with no Python object per slot.
"""

import numpy as np
cimport cython
cimport numpy as cnp
from libc.string cimport memcmp, memcpy, memset
from libc.stdint cimport uint16_t, uint32_t
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from fabric._wirefast cimport write_ud_packet, vcrc16_raw, crc32_update

cnp.import_array()

from ipoib.netdev import BUSY, OK, NetdevParams, NotSupported, RxInfo
from ipoib.gso import GsoPacket
from fabric.wire import ParseError

__all__ = ["BACKEND", "PacketRing", "RingFull", "Provider", "UdpSink"]

BACKEND = "fast"

# Copies at least this long run without the GIL; below it the release costs more than the copy.
DEF NOGIL_COPY = 2048
DEF META = 8  # TX slot header: DLID(2) SL(1) reserved(1) DestQP(4)
DEF RXMETA = 8      # RX slot header: SLID(2) P_Key(2) SrcQP(4), then the IPoIB frame
DEF GRH_AREA = 40   # receive buffers start with room for a GRH (ipoib_ib.c: IB_GRH_BYTES)
DEF UD_HDRS = 28    # LRH BTH DETH


cdef inline void _tx_address(unsigned char *d, unsigned int dlid, unsigned int sl, unsigned int dqpn) noexcept nogil:
    """A TX slot's 8-octet header: where the frame goes (DLID, SL, destination QPN)."""
    d[0] = (dlid >> 8) & 0xFF
    d[1] = dlid & 0xFF
    d[2] = sl & 0xF
    d[3] = 0
    d[4] = (dqpn >> 24) & 0xFF
    d[5] = (dqpn >> 16) & 0xFF
    d[6] = (dqpn >> 8) & 0xFF
    d[7] = dqpn & 0xFF


class RingFull(Exception):
    """Raised by ``push_or_raise`` when no slot is free."""


cdef class PacketRing:
    """A bounded FIFO of packets with ``slots`` entries of at most ``slot_size`` octets."""

    cdef readonly Py_ssize_t slots
    cdef readonly Py_ssize_t slot_size
    cdef readonly object buffer      # numpy uint8 [slots, slot_size]
    cdef readonly object lengths     # numpy uint32 [slots]
    cdef unsigned char *_buf
    cdef unsigned int *_len
    cdef Py_ssize_t _head            # next slot to pop
    cdef Py_ssize_t _count
    cdef readonly unsigned long long pushed
    cdef readonly unsigned long long popped
    cdef readonly unsigned long long dropped_full
    cdef readonly unsigned long long dropped_oversize

    def __cinit__(self, Py_ssize_t slots, Py_ssize_t slot_size):
        if slots < 1 or slot_size < 1:
            raise ValueError("slots and slot_size must be positive")
        self.slots = slots
        self.slot_size = slot_size
        self.buffer = np.zeros((slots, slot_size), dtype=np.uint8)
        self.lengths = np.zeros(slots, dtype=np.uint32)
        self._buf = <unsigned char *> cnp.PyArray_DATA(self.buffer)
        self._len = <unsigned int *> cnp.PyArray_DATA(self.lengths)
        self._head = 0
        self._count = 0

    def __len__(self):
        return self._count

    @property
    def free(self):
        return self.slots - self._count

    cdef inline Py_ssize_t _reserve(self, Py_ssize_t n):
        """The slot for an ``n``-octet entry at the tail, or -1 (counted) if it is full or too big."""
        cdef Py_ssize_t slot
        if n > self.slot_size:
            self.dropped_oversize += 1
            return -1
        if self._count >= self.slots:
            self.dropped_full += 1
            return -1
        slot = self._head + self._count
        return slot - self.slots if slot >= self.slots else slot

    cdef inline void _commit(self, Py_ssize_t slot, Py_ssize_t n):
        self._len[slot] = <unsigned int> n
        self._count += 1
        self.pushed += 1

    cdef inline bint _push(self, const unsigned char *src, Py_ssize_t n):
        cdef Py_ssize_t slot = self._reserve(n)
        cdef unsigned char *dst
        if slot < 0:
            return False
        dst = self._buf + slot * self.slot_size
        if n >= NOGIL_COPY:
            with nogil:
                memcpy(dst, src, n)
        else:
            memcpy(dst, src, n)
        self._commit(slot, n)
        return True

    def push(self, const unsigned char[::1] packet not None):
        return self._push(&packet[0] if packet.shape[0] else <const unsigned char *> b"", packet.shape[0])

    def push_many(self, packets):
        cdef Py_ssize_t n = 0
        cdef const unsigned char[::1] view
        for p in packets:
            view = p
            if not self._push(&view[0] if view.shape[0] else <const unsigned char *> b"", view.shape[0]):
                break
            n += 1
        return n

    cdef inline bytes _pop(self):
        cdef Py_ssize_t slot = self._head
        cdef bytes out = PyBytes_FromStringAndSize(
            <char *> (self._buf + slot * self.slot_size), self._len[slot])
        self._head = slot + 1 if slot + 1 < self.slots else 0
        self._count -= 1
        self.popped += 1
        return out

    def pop(self):
        if self._count == 0:
            return None
        return self._pop()

    def pop_many(self, Py_ssize_t budget):
        cdef list out = []
        while self._count > 0 and len(out) < budget:
            out.append(self._pop())
        return out

    def stats(self):
        return {"slots": self.slots, "slot_size": self.slot_size, "used": self._count,
                "pushed": self.pushed, "popped": self.popped, "dropped_full": self.dropped_full,
                "dropped_oversize": self.dropped_oversize}

    # -- the TX queue of the accelerated provider: slots hold an 8-octet address then the frame --

    cdef bint _push_ud(self, unsigned int dlid, unsigned int sl, unsigned int dqpn,
                       const unsigned char *frame, Py_ssize_t n):
        cdef Py_ssize_t slot = self._reserve(n + META)
        cdef unsigned char *dst
        if slot < 0:
            return False
        dst = self._buf + slot * self.slot_size
        _tx_address(dst, dlid, sl, dqpn)
        if n:
            memcpy(dst + META, frame, n)
        self._commit(slot, n + META)
        return True

    def push_ud(self, unsigned int dlid, unsigned int sl, unsigned int dqpn, const unsigned char[::1] frame not None):
        """Queue one frame for (dlid, sl, dqpn); False when the ring is full or the frame too big."""
        return self._push_ud(dlid, sl, dqpn, &frame[0] if frame.shape[0] else <const unsigned char *> b"",
                             frame.shape[0])

    def drain_ud(self, bytearray seg not None, unsigned int slid, unsigned int pkey, unsigned int qkey,
                 unsigned int src_qp, Py_ssize_t budget):
        """Build a UD packet from each queued frame, appended to ``seg`` length-prefixed (the link
        burst format). One C loop, no Python object per packet. Returns (packets, words, octets)."""
        cdef Py_ssize_t i, slot, n, need = 0, k = 0, off
        cdef unsigned char *src
        cdef unsigned char *out
        cdef unsigned int dlid, sl, dqpn
        cdef Py_ssize_t plen, words = 0, octets = 0
        cdef Py_ssize_t take = self._count if self._count < budget else budget
        if take <= 0:
            return 0, 0, 0
        for i in range(take):
            slot = self._head + i
            if slot >= self.slots:
                slot -= self.slots
            n = self._len[slot] - META
            need += 2 + 28 + n + 3 + 6
        off = len(seg)
        PyByteArray_Resize(seg, off + need)
        out = <unsigned char *> PyByteArray_AS_STRING(seg)
        with nogil:
            for i in range(take):
                slot = self._head
                src = self._buf + slot * self.slot_size
                n = self._len[slot] - META
                dlid = (src[0] << 8) | src[1]
                sl = src[2]
                dqpn = (src[5] << 16) | (src[6] << 8) | src[7]
                plen = write_ud_packet(out + off + 2, src + META, n, slid, dlid, sl, pkey, dqpn, src_qp, qkey, 0)
                out[off] = (plen >> 8) & 0xFF
                out[off + 1] = plen & 0xFF
                off += 2 + plen
                words += (plen - 2) >> 2
                octets += n
                self._head = slot + 1 if slot + 1 < self.slots else 0
                self._count -= 1
        self.popped += take
        PyByteArray_Resize(seg, off)
        return take, words, octets


# -- rdma_netdev provider ----------------------------------------------------------------------

cdef inline unsigned int flow_hash(const unsigned char *f, Py_ssize_t n, bint udp_ports) noexcept nogil:
    """Hash of an IPoIB frame's IPv4 flow: the TX queue for TSS and the RX queue for RSS.

    Addresses and protocol always; TCP ports too, and UDP ports when ``udp_ports`` (ethtool's
    ``rx-flow-hash udp4 sdfn``; the default is ``sd``, as ixgbe's). Ports count only in
    unfragmented datagrams (MF clear, offset 0), and a fragment carries none, so with UDP ports
    hashed, a flow's fragmented datagrams take another queue than its whole ones and the two
    can pass each other; hashing UDP by addresses keeps every datagram between two hosts in
    order, as the standard provider's single queue does. Non-IPv4 frames hash to 0, so ARP
    stays on one queue, in order."""
    cdef unsigned int h, ihl
    if n < 4 + 20 or f[0] != 0x08 or f[1] != 0x00:
        return 0
    h = ((f[16] << 24) | (f[17] << 16) | (f[18] << 8) | f[19]) ^ ((f[20] << 24) | (f[21] << 16) | (f[22] << 8) | f[23])
    h ^= f[13]
    ihl = (f[4] & 0xF) * 4
    if (f[13] == 6 or (f[13] == 17 and udp_ports)) and n >= 4 + ihl + 4 and not ((f[10] & 0x3F) or f[11]):
        h ^= (f[4 + ihl] << 24) | (f[5 + ihl] << 16) | (f[6 + ihl] << 8) | f[7 + ihl]
    h *= 0x9E3779B1U
    return h ^ (h >> 16)


cdef inline unsigned int _csum_fold(unsigned long long acc) noexcept nogil:
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return <unsigned int> acc


cdef inline unsigned long long _csum_add(unsigned long long acc, const unsigned char *p, Py_ssize_t n) noexcept nogil:
    """Add ``p[:n]`` to a ones' complement sum as 16-bit big-endian words (an odd last octet is
    the high half of a word, as when it ends the checksummed data)."""
    cdef Py_ssize_t i = 0
    while i + 1 < n:
        acc += (p[i] << 8) | p[i + 1]
        i += 2
    if i < n:
        acc += p[i] << 8
    return acc


cdef inline Py_ssize_t _gro_payload(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    """The UDP payload length of an IPoIB frame GRO may coalesce, or -1: IPv4 without options or
    ECN, UDP, not a fragment, exact lengths, and both checksums valid and in the form our own
    stack writes them (so that ipoib.gso.segment gives back exactly the datagrams coalesced)."""
    cdef unsigned int tot, ulen, c
    cdef unsigned long long acc
    if n < 4 + 28 or p[0] != 0x08 or p[1] != 0x00 or p[4] != 0x45 or (p[5] & 3) or p[13] != 17:
        return -1
    if (p[10] & 0xBF) or p[11]:
        return -1
    tot = (p[6] << 8) | p[7]
    ulen = (p[28] << 8) | p[29]
    if tot != <unsigned int> (n - 4) or ulen != tot - 20 or ulen <= 8:
        return -1
    acc = _csum_add(0, p + 4, 10)
    acc = _csum_add(acc, p + 16, 8)
    c = (~_csum_fold(acc)) & 0xFFFF
    if <unsigned int> ((p[14] << 8) | p[15]) != c:
        return -1
    acc = _csum_add(0, p + 16, 8)
    acc += 17 + ulen
    acc = _csum_add(acc, p + 24, 6)
    acc = _csum_add(acc, p + 32, ulen - 8)
    c = (~_csum_fold(acc)) & 0xFFFF
    if c == 0:
        c = 0xFFFF
    if <unsigned int> ((p[30] << 8) | p[31]) != c:
        return -1
    return ulen - 8


cdef inline bint _gro_same_flow(const unsigned char *a, const unsigned char *b, unsigned int k) noexcept nogil:
    """``b`` (with its slot header) continues ``a``'s run as its ``k``-th datagram: the same
    sender, link header and IP and UDP headers but for lengths, checksums and an identification
    ``k`` higher."""
    cdef unsigned int ia, ib
    if memcmp(a, b, RXMETA + 6) != 0:          # slot header (SLID, P_Key, SrcQP), IPoIB, IP ver/TOS
        return False
    a += RXMETA
    b += RXMETA
    if memcmp(a + 10, b + 10, 4) != 0 or memcmp(a + 16, b + 16, 12) != 0:
        return False                              # flags, TTL, protocol; addresses and ports
    ia = (a[8] << 8) | a[9]
    ib = (b[8] << 8) | b[9]
    return ((ia + k) & 0xFFFF) == ib


def frame_flow_hash(const unsigned char[::1] frame not None, bint udp_ports=False):
    return flow_hash(&frame[0] if frame.shape[0] else <const unsigned char *> b"", frame.shape[0], udp_ports)


TX_SLOTS = 256
MAX_FRAME = 4096 + 8


def push_burst(list rings, list frames, unsigned int dlid, unsigned int sl, unsigned int dqpn, list counts,
               bint udp_ports=False):
    """TSS for a whole burst: each frame to the ring its flow hashes to, in one C loop. Stops at the
    first frame whose ring is full; returns how many were queued (counts[q] += per queue)."""
    cdef Py_ssize_t i, nq = len(rings), done = 0
    cdef unsigned int q
    cdef const unsigned char[::1] view
    cdef PacketRing ring
    for i in range(len(frames)):
        view = frames[i]
        q = flow_hash(&view[0] if view.shape[0] else <const unsigned char *> b"", view.shape[0], udp_ports) % nq
        ring = <PacketRing> rings[q]
        if not ring._push_ud(dlid, sl, dqpn, &view[0] if view.shape[0] else <const unsigned char *> b"",
                             view.shape[0]):
            break
        counts[q] += 1
        done += 1
    return done


# -- receive: the HCA's compiled receive path for IPoIB QPs, into RSS rings --------------------

RX_SLOTS = 256
INFO_CACHE = 1024  # RxInfo objects kept for reuse, one per (SLID, P_Key, SrcQP)


cdef class UdpSink:
    """A receive hook at the driver, like an XDP program that counts and drops: IPoIB frames that
    carry a whole UDP datagram to ``port`` are counted and consumed before the IP stack (the same
    rule as ``ipoib._stdpath.UdpSink``; the fast provider runs it in C on the ring slot)."""

    cdef readonly unsigned int port
    cdef readonly bint echo
    cdef readonly unsigned long long packets
    cdef readonly unsigned long long bytes
    cdef readonly object first
    cdef readonly object last
    cdef unsigned long long _seen

    def __cinit__(self, port, echo=False):
        if not 0 < int(port) < 65536:
            raise ValueError(f"UDP port must be 1 to 65535, not {port!r}")
        self.port = int(port)
        self.echo = bool(echo)  # reflect each one to its sender instead (XDP_TX), for latency

    cdef inline bint _consume(self, const unsigned char *f, Py_ssize_t n) noexcept:
        cdef Py_ssize_t ihl, ulen
        if n < 4 + 28 or f[0] != 0x08 or f[1] != 0x00:
            return False
        ihl = (f[4] & 0xF) * 4
        if (f[4] >> 4) != 4 or f[13] != 17 or (f[10] & 0x3F) or f[11] or n - 4 < ihl + 8:
            return False
        if <unsigned int> ((f[4 + ihl + 2] << 8) | f[4 + ihl + 3]) != self.port:
            return False
        ulen = (f[4 + ihl + 4] << 8) | f[4 + ihl + 5]
        if ulen < 8 or ulen > n - 4 - ihl:
            return False  # a UDP length that does not fit: not a whole datagram, the stack drops it
        self.packets += 1
        self.bytes += ulen - 8
        return True

    def consume(self, const unsigned char[::1] frame not None, Py_ssize_t off=0):
        if off < 0 or off > frame.shape[0]:
            return False
        return self._consume(&frame[0] + off if frame.shape[0] else <const unsigned char *> b"",
                             frame.shape[0] - off)

    def reflect(self, frame, Py_ssize_t off=0):
        """The frame that answers ``frame[off:]``: IPv4 addresses and UDP ports swapped (both
        checksums stay valid: a sum does not depend on the order of its terms)."""
        cdef bytearray f = bytearray(frame[off:])
        cdef unsigned char *p = <unsigned char *> PyByteArray_AS_STRING(f)
        cdef Py_ssize_t ihl = (p[4] & 0xF) * 4 if len(f) > 4 else 0
        cdef unsigned char t[4]
        if ihl < 20 or len(f) < 4 + ihl + 8:
            raise ValueError("not an IPoIB frame with an IPv4 header and a UDP header")
        memcpy(t, p + 16, 4)
        memcpy(p + 16, p + 20, 4)
        memcpy(p + 20, t, 4)
        memcpy(t, p + 4 + ihl, 2)
        memcpy(p + 4 + ihl, p + 6 + ihl, 2)
        memcpy(p + 6 + ihl, t, 2)
        return bytes(f)

    def mark(self, now):
        if self.packets != self._seen:
            self._seen = self.packets
            if self.first is None:
                self.first = now
            self.last = now

    def result(self):
        return {"packets": self.packets, "bytes": self.bytes,
                "seconds": (self.last - self.first) if self.first is not None else 0.0}


cdef class RxEngine:
    """The receive side of one IPoIB QP: ``nq`` RSS rings of preallocated slots, plus counters.

    Filled by :class:`RxDispatch` straight from a link burst, drained by ``poll_queue`` (NAPI).
    ``fresh_*`` count what arrived since the provider last folded them into its statistics.
    """

    cdef public list rings
    cdef public int nq
    cdef public unsigned int qpn
    cdef public unsigned int qkey
    cdef public unsigned int pkey
    cdef public int port_num
    cdef readonly Py_ssize_t frame_max
    cdef public bint enabled
    cdef public bint udp_ports     # hash UDP ports too (rx-flow-hash udp4 sdfn)
    cdef public object owner
    cdef public unsigned long long fresh_packets
    cdef public unsigned long long fresh_bytes
    cdef public unsigned long long fresh_overflow
    cdef public bint gro                # coalesce runs of UDP datagrams (ethtool -K gro)
    cdef public unsigned long long gro_runs
    cdef public unsigned long long gro_packets
    cdef Py_ssize_t _gro_size
    cdef unsigned long long _last_key   # the RxInfo of the last sender, for the next frame
    cdef object _last_info
    cdef readonly object rx_bytes      # numpy uint64 [nq]
    cdef unsigned long long *_rx_bytes

    def __cinit__(self, int nq, Py_ssize_t slots, Py_ssize_t frame_max, owner=None):
        if nq < 1 or nq > 64:
            raise ValueError("an RX engine has 1 to 64 queues")
        self.nq = nq
        self.rings = [PacketRing(slots, RXMETA + frame_max) for _ in range(nq)]
        self.frame_max = frame_max  # longer frames (over any MTU) go the per-packet way
        self.rx_bytes = np.zeros(nq, dtype=np.uint64)
        self._rx_bytes = <unsigned long long *> cnp.PyArray_DATA(self.rx_bytes)
        self.owner = owner
        self.enabled = False
        self.port_num = 1
        self.gro = True  # on by default, as Linux's; what no socket asked to get whole is split again

    @property
    def pending(self):
        cdef Py_ssize_t n = 0
        cdef PacketRing r
        for r in self.rings:
            n += r._count
        return n

    cdef inline bint _take(self, const unsigned char *p, Py_ssize_t n, unsigned int slid,
                           unsigned int src_qp) noexcept:
        """Queue one IPoIB frame (RSS by flow); False when its ring is full (counted there)."""
        cdef unsigned int q = flow_hash(p, n, self.udp_ports) % self.nq
        cdef PacketRing ring = <PacketRing> self.rings[q]
        cdef Py_ssize_t slot = ring._reserve(n + RXMETA)
        cdef unsigned char *dst
        if slot < 0:
            self.fresh_overflow += 1
            return False
        dst = ring._buf + slot * ring.slot_size
        dst[0] = (slid >> 8) & 0xFF
        dst[1] = slid & 0xFF
        dst[2] = (self.pkey >> 8) & 0xFF
        dst[3] = self.pkey & 0xFF
        dst[4] = 0
        dst[5] = (src_qp >> 16) & 0xFF
        dst[6] = (src_qp >> 8) & 0xFF
        dst[7] = src_qp & 0xFF
        if n >= NOGIL_COPY:
            with nogil:
                memcpy(dst + RXMETA, p, n)
        else:
            memcpy(dst + RXMETA, p, n)
        ring._commit(slot, n + RXMETA)
        self.fresh_packets += 1
        self.fresh_bytes += n
        self._rx_bytes[q] += n
        return True

    def poll_queue(self, int q, Py_ssize_t budget, deliver, dict infos, make_info, sink=None, reflect=None):
        """NAPI poll of RX queue ``q``: hand up to ``budget`` frames (each after a 40-octet GRH
        area, as the standard provider delivers them) to ``deliver(frame, info)``. ``infos``
        caches the RxInfo of each (SLID, P_Key, SrcQP); ``make_info(slid, pkey, src_qp)`` makes one."""
        cdef PacketRing ring = <PacketRing> self.rings[q]
        cdef Py_ssize_t done = 0, slot, n
        cdef unsigned char *src
        cdef bytes frame
        cdef char *dst
        cdef unsigned long long key
        cdef unsigned int slid, pkey, src_qp
        cdef UdpSink csink = sink if isinstance(sink, UdpSink) else None
        while done < budget and ring._count > 0:
            slot = ring._head
            src = ring._buf + slot * ring.slot_size
            n = ring._len[slot] - RXMETA
            if csink is not None and csink._consume(src + RXMETA, n):
                ring._head = slot + 1 if slot + 1 < ring.slots else 0  # counted and dropped in place
                ring._count -= 1
                ring.popped += 1
                done += 1
                if csink.echo and reflect is not None:
                    reflect(csink.reflect(PyBytes_FromStringAndSize(<char *> src + RXMETA, n)),
                            (src[0] << 8) | src[1], (src[5] << 16) | (src[6] << 8) | src[7])
                continue
            if self.gro and sink is None and ring._count > 1 and budget - done > 1:
                run = self._gro_run(ring, budget - done)
                if run > 1:
                    slid = (src[0] << 8) | src[1]
                    pkey = (src[2] << 8) | src[3]
                    src_qp = (src[5] << 16) | (src[6] << 8) | src[7]
                    frame = self._gro_take(ring, run)
                    done += run
                    self.gro_runs += 1
                    self.gro_packets += run
                    key = (<unsigned long long> slid << 40) | (<unsigned long long> pkey << 24) | src_qp
                    if key != self._last_key or self._last_info is None:
                        info = infos.get(key)
                        if info is None:
                            if len(infos) >= INFO_CACHE:
                                infos.clear()
                            info = infos[key] = make_info(slid, pkey, src_qp)
                        self._last_key, self._last_info = key, info
                    deliver(GsoPacket(frame, self._gro_size, GRH_AREA + 4), self._last_info)
                    continue
            frame = PyBytes_FromStringAndSize(NULL, GRH_AREA + n)
            dst = PyBytes_AS_STRING(frame)
            memset(dst, 0, GRH_AREA)
            memcpy(dst + GRH_AREA, src + RXMETA, n)
            slid = (src[0] << 8) | src[1]
            pkey = (src[2] << 8) | src[3]
            src_qp = (src[5] << 16) | (src[6] << 8) | src[7]
            # the slot is free before the frame goes up: what the ULP does with it may re-enter us
            ring._head = slot + 1 if slot + 1 < ring.slots else 0
            ring._count -= 1
            ring.popped += 1
            key = (<unsigned long long> slid << 40) | (<unsigned long long> pkey << 24) | src_qp
            done += 1
            if sink is not None and csink is None and sink.consume(frame, GRH_AREA):
                if sink.echo and reflect is not None:
                    reflect(sink.reflect(frame, GRH_AREA), slid, src_qp)
                continue
            if key != self._last_key or self._last_info is None:  # most frames come from one peer
                info = infos.get(key)
                if info is None:
                    if len(infos) >= INFO_CACHE:  # senders pick their QPNs: keep the cache bounded
                        infos.clear()
                    info = infos[key] = make_info(slid, pkey, src_qp)
                self._last_key, self._last_info = key, info
            deliver(frame, self._last_info)
        return done

    cdef Py_ssize_t _gro_run(self, PacketRing ring, Py_ssize_t limit):
        """How many frames from the ring's head form one GRO run (1 when none does)."""
        cdef Py_ssize_t slot = ring._head, k = 1, slot_k, n0, nk, p0, pk, total
        cdef unsigned char *a = ring._buf + slot * ring.slot_size
        cdef unsigned char *b
        n0 = ring._len[slot] - RXMETA
        p0 = _gro_payload(a + RXMETA, n0)
        if p0 <= 0:
            return 1
        total = p0
        while k < ring._count and k < limit and k < 64:
            slot_k = ring._head + k
            if slot_k >= ring.slots:
                slot_k -= ring.slots
            b = ring._buf + slot_k * ring.slot_size
            nk = ring._len[slot_k] - RXMETA
            pk = _gro_payload(b + RXMETA, nk)
            if pk <= 0 or pk > p0 or total + pk + 28 > 0xFFFF or not _gro_same_flow(a, b, <unsigned int> k):
                break
            total += pk
            k += 1
            if pk < p0:
                break  # a shorter datagram ends a run
        self._gro_size = p0
        return k

    cdef bytes _gro_take(self, PacketRing ring, Py_ssize_t run):
        """Pop ``run`` frames as one: GRH area, the first frame's IPoIB, IP and UDP headers, then
        every payload."""
        cdef Py_ssize_t i, slot, n, total = 0, off
        cdef unsigned char *p
        for i in range(run):
            slot = ring._head + i
            if slot >= ring.slots:
                slot -= ring.slots
            total += ring._len[slot] - RXMETA - 32
        cdef bytes out = PyBytes_FromStringAndSize(NULL, GRH_AREA + 32 + total)
        cdef char *d = PyBytes_AS_STRING(out)
        memset(d, 0, GRH_AREA)
        memcpy(d + GRH_AREA, ring._buf + ring._head * ring.slot_size + RXMETA, 32)
        off = GRH_AREA + 32
        for i in range(run):
            slot = ring._head
            p = ring._buf + slot * ring.slot_size
            n = ring._len[slot] - RXMETA - 32
            memcpy(d + off, p + RXMETA + 32, n)
            off += n
            ring._head = slot + 1 if slot + 1 < ring.slots else 0
            ring._count -= 1
            ring.popped += 1
        return out

    def clear(self):
        cdef PacketRing r
        for r in self.rings:
            r._head = 0
            r._count = 0

    def queue_stats(self):
        cdef PacketRing r
        out = {}
        for q in range(self.nq):
            r = self.rings[q]
            out[f"rx{q}_packets"] = r.pushed
            out[f"rx{q}_bytes"] = int(self._rx_bytes[q])
            out[f"rx{q}_overflow"] = r.dropped_full
            out[f"rx{q}_queued"] = r._count
        out["rx_gro_runs"] = self.gro_runs
        out["rx_gro_packets"] = self.gro_packets
        return out


cdef inline bint _icrc_ok(const unsigned char *p, Py_ssize_t total) noexcept nogil:
    """The ICRC of a packet without GRH (``total`` octets up to and including the ICRC)."""
    cdef unsigned char masked[UD_HDRS]
    cdef uint32_t crc
    memcpy(masked, p, UD_HDRS)
    masked[0] |= 0xF0   # LRH.VL
    masked[12] = 0xFF   # BTH.resv8a
    crc = crc32_update(0xFFFFFFFFU, masked, UD_HDRS)
    crc = crc32_update(crc, p + UD_HDRS, total - UD_HDRS - 4) ^ 0xFFFFFFFFU
    return (p[total - 4] == (crc & 0xFF) and p[total - 3] == ((crc >> 8) & 0xFF)
            and p[total - 2] == ((crc >> 16) & 0xFF) and p[total - 1] == (crc >> 24))


cdef class RxDispatch:
    """An HCA's compiled receive path (``hca.rx_accel``): a link burst is checked packet by packet
    in C, in the order hardware checks (length, VCRC, ICRC, LRH, DLID, BTH, destination QP, P_Key,
    Q_Key). Unicast UD SENDs to a registered IPoIB QP that pass every check go straight into its
    RSS rings. Everything else (multicast, GRH, management, any packet that fails a check) is
    returned to the HCA's per-packet path, which delivers, drops and counts it exactly as before."""

    cdef public dict engines   # QPN -> RxEngine
    cdef readonly unsigned long long fast_packets
    cdef readonly unsigned long long slow_packets

    def __cinit__(self):
        self.engines = {}

    def add(self, RxEngine engine not None):
        self.engines[engine.qpn] = engine

    def remove(self, unsigned int qpn):
        self.engines.pop(qpn, None)

    def __call__(self, port, const unsigned char[::1] burst not None, Py_ssize_t offset, Py_ssize_t count, now):
        cdef Py_ssize_t n = burst.shape[0], off = offset, i, plen, fn
        cdef const unsigned char *p
        cdef unsigned int lid, span, dlid, pad, dqp, last_qpn = 0xFFFFFFFF
        cdef unsigned long long taken = 0, words = 0
        cdef uint16_t c
        cdef RxEngine eng = None
        cdef list slow = []
        cdef list touched = []
        # the framing first, so that a bad burst is refused before any packet is taken
        for i in range(count):
            if off + 2 > n:
                raise ParseError(f"burst truncated at packet {i} of {count}", kind="burst")
            off += 2 + ((burst[off] << 8) | burst[off + 1])
            if off > n:
                raise ParseError(f"burst truncated at packet {i} of {count}", kind="burst")
        if off != n:
            raise ParseError("trailing octets after the burst's packets", kind="burst")
        for e in self.engines.values():
            e.owner._rx_refresh(e, port)
        lid = port.lid
        span = 1 << port.lmc
        off = offset
        for i in range(count):
            plen = (burst[off] << 8) | burst[off + 1]
            off += 2
            p = &burst[off]
            off += plen
            # once one packet goes the per-packet way, the rest of the burst follows it: the two
            # paths deliver in one order only if nothing overtakes what went slow
            if slow or (plen < UD_HDRS + 6 or (p[0] >> 4) == 15 or (p[0] & 0xF) != 0 or (p[1] & 3) != 2
                    or <Py_ssize_t> ((((p[4] & 7) << 8) | p[5]) * 4 + 2) != plen):
                slow.append(PyBytes_FromStringAndSize(<char *> p, plen))
                continue
            dlid = (p[2] << 8) | p[3]
            dqp = (p[13] << 16) | (p[14] << 8) | p[15]
            if dlid - lid >= span or p[8] != 0x64 or (p[9] & 0xF) != 0:
                slow.append(PyBytes_FromStringAndSize(<char *> p, plen))
                continue
            if dqp != last_qpn:
                eng = self.engines.get(dqp)
                last_qpn = dqp
            pad = (p[9] >> 4) & 3
            fn = plen - UD_HDRS - 6 - pad
            if (eng is None or not eng.enabled or fn < 0 or fn > eng.frame_max
                    or <unsigned int> ((p[10] << 8) | p[11]) != eng.pkey or not (eng.pkey & 0x8000)
                    or ((<unsigned int> p[20] << 24) | (p[21] << 16) | (p[22] << 8) | p[23]) != eng.qkey):
                slow.append(PyBytes_FromStringAndSize(<char *> p, plen))
                continue
            c = vcrc16_raw(p, plen - 2)
            if p[plen - 2] != (c & 0xFF) or p[plen - 1] != (c >> 8) or not _icrc_ok(p, plen - 2):
                slow.append(PyBytes_FromStringAndSize(<char *> p, plen))
                continue
            taken += 1
            words += (plen - 2) >> 2
            if eng.fresh_packets == 0 and eng.fresh_overflow == 0:
                touched.append(eng)
            eng._take(p + UD_HDRS, fn, (p[6] << 8) | p[7], (p[25] << 16) | (p[26] << 8) | p[27])
        self.fast_packets += taken
        self.slow_packets += len(slow)
        if taken:
            port.counters.add_rcv(taken, words)
        for e in touched:
            e.owner._rx_event(e, now)
        return slow


# -- the rdma_netdev provider ------------------------------------------------------------------

# Adaptive interrupt moderation (like the kernel's net_dim): the receive rate picks rx-usecs.
# Rows are (rate below, in packets/s; rx-usecs); the last row applies above every threshold.
ADAPTIVE_PROFILE = ((10_000, 0), (100_000, 8), (400_000, 32), (None, 64))
ADAPTIVE_WINDOW_S = 0.002
COALESCE_LIMITS = {"rx_usecs": 100_000, "rx_frames": RX_SLOTS}


cdef Py_ssize_t _push_gso(PacketRing ring, unsigned int dlid, unsigned int sl, unsigned int dqpn,
                          const unsigned char *f, Py_ssize_t n, Py_ssize_t gso, Py_ssize_t l3) noexcept:
    """UDP segmentation in C: the GSO frame ``f`` (link header, IPv4 and UDP headers of the first
    segment, then the whole payload) as datagrams of ``gso`` payload octets, each into a ring slot
    with its own IP total length, identification and checksum and UDP length and checksum, octet
    for octet what ipoib.gso.segment makes. The caller made sure the ring has room; returns the
    octets queued (frames, link headers included)."""
    cdef Py_ssize_t plen = n - l3 - 28, o = 0, seg, slot, flen, total = 0
    cdef unsigned int ident0 = (f[l3 + 4] << 8) | f[l3 + 5], ident, ulen, c
    cdef unsigned long long acc
    cdef unsigned char *d
    cdef unsigned char *ip
    cdef unsigned char *udp
    cdef int i = 0
    while True:
        seg = plen - o if plen - o < gso else gso
        flen = l3 + 28 + seg
        slot = ring._reserve(flen + META)
        if slot < 0:
            break
        d = ring._buf + slot * ring.slot_size
        _tx_address(d, dlid, sl, dqpn)
        memcpy(d + META, f, l3 + 24)  # link header, IPv4 header, UDP ports
        ip = d + META + l3
        ip[2] = ((28 + seg) >> 8) & 0xFF
        ip[3] = (28 + seg) & 0xFF
        ident = (ident0 + i) & 0xFFFF
        ip[4] = ident >> 8
        ip[5] = ident & 0xFF
        ip[10] = 0
        ip[11] = 0
        c = (~_csum_fold(_csum_add(0, ip, 20))) & 0xFFFF
        ip[10] = c >> 8
        ip[11] = c & 0xFF
        udp = ip + 20
        ulen = 8 + seg
        udp[4] = (ulen >> 8) & 0xFF
        udp[5] = ulen & 0xFF
        udp[6] = 0
        udp[7] = 0
        memcpy(udp + 8, f + l3 + 28 + o, seg)
        acc = _csum_add(0, ip + 12, 8)  # the pseudo-header: addresses, protocol, UDP length
        acc += 17 + ulen
        acc = _csum_add(acc, udp, ulen)
        c = (~_csum_fold(acc)) & 0xFFFF
        if c == 0:
            c = 0xFFFF
        udp[6] = c >> 8
        udp[7] = c & 0xFF
        ring._commit(slot, flen + META)
        total += flen
        i += 1
        o += seg
        if o >= plen:
            break
    return total


@cython.final
cdef class Provider:
    """The accelerated rdma_netdev provider: every op, over preallocated rings.

    TX: ``tx_queues`` rings; ``send`` picks one by flow hash (TSS) and copies the frame into a
    slot behind an 8-octet address; ``poll`` builds every queued packet in C (LRH, BTH, DETH,
    ICRC, VCRC) straight into one link burst. A queue stops when its ring is full and wakes at half.

    RX: the HCA's compiled receive path (:class:`RxDispatch`) checks each packet of a link burst in
    C and puts the IPoIB frame into one of ``rx_queues`` rings by flow hash (RSS), with no Python
    object per packet. Interrupt moderation (rx-usecs, rx-frames, adaptive) decides when NAPI runs;
    ``poll(budget)`` serves each RX queue up to ``budget`` frames.

    What the hardware leaves to its slow path goes through the standard implementation, packet by
    packet: multicast (GRH) and loopback sends, sends on a port that is not Active, frames over the
    MTU, and any received packet the compiled path does not take (so every drop is classified and
    counted in one place, exactly as the standard provider does).
    """

    name = "fast"
    TX_QUEUES = 4
    RX_QUEUES = 4

    cdef public object ctx
    cdef public int ntx
    cdef public int nrx
    cdef public list rings
    # per TX queue, in C: the send path touches them per packet
    cdef bint _stopped[64]
    cdef unsigned long long _qpk[64]
    cdef unsigned long long _qby[64]
    cdef unsigned long long _qbusy[64]
    cdef unsigned long long _qstops[64]
    cdef unsigned long long _qwakes[64]
    cdef bint _up               # the QP exists and the device is open (set by our own ops)
    cdef object _port
    cdef object _ah             # the last AddressHandle send() checked, and what it found
    cdef unsigned int _ah_dlid
    cdef unsigned int _ah_sl
    cdef unsigned int _ah_lid
    cdef bint _kicked   # a poll is already scheduled for what the rings hold (one doorbell per batch)
    cdef public RxEngine rx
    cdef public list rx_polls
    cdef public list rx_exhausted
    cdef public object _std
    cdef public dict _infos
    cdef public dict coalesce
    cdef public bint napi_scheduled
    cdef public object timer
    cdef public unsigned long long interrupts
    cdef public int _dim_usecs
    cdef public object _win_start
    cdef public unsigned long long _win_packets

    def __init__(self, ctx):
        from ipoib.std import StdProvider

        self.ctx = ctx
        self.ntx = int(getattr(ctx, "tx_queues", self.TX_QUEUES))
        self.nrx = int(getattr(ctx, "rx_queues", self.RX_QUEUES))
        if not 1 <= self.ntx <= 64 or not 1 <= self.nrx <= 64:
            raise ValueError("tx_queues and rx_queues must be 1 to 64")
        self.rings = [PacketRing(TX_SLOTS, MAX_FRAME) for _ in range(self.ntx)]
        self.rx = RxEngine(self.nrx, RX_SLOTS, MAX_FRAME, self)
        self.set_rx_flow_hash(getattr(ctx, "rx_flow_hash_udp4", "sd"))
        self.rx_polls = [0] * self.nrx
        self.rx_exhausted = [0] * self.nrx
        self._std = StdProvider(ctx)  # the slow path: what the compiled one hands back
        self._infos = {}
        # rx-frames 128 as mlx5's default: a timer never lets a ring overflow on its own
        self.coalesce = {"rx_usecs": 0, "rx_frames": 128, "adaptive": False}
        self.napi_scheduled = False
        self.timer = None
        self.interrupts = 0
        self._dim_usecs = 0
        self._win_start = None
        self._win_packets = 0
        st = ctx.stats
        for k in ("interrupts", "napi_polls"):
            st.setdefault(k, 0)

    def bind_op(self, op, standard, served_by, fallbacks):
        """For RdmaNetdev: a compiled dispatcher for the per-packet ops (send, send_burst, poll),
        which calls our method in C and falls back to ``standard`` on NotSupported, as the
        generic dispatcher does; None for the others."""
        if op in ("send", "send_burst", "poll"):
            return _FastOp(self, op, standard, served_by, fallbacks)
        return None

    @property
    def stopped(self):
        return [bool(self._stopped[q]) for q in range(self.ntx)]

    @property
    def q_packets(self):
        return [self._qpk[q] for q in range(self.ntx)]

    @property
    def q_bytes(self):
        return [self._qby[q] for q in range(self.ntx)]

    # -- control-facing operations -------------------------------------------------------------

    def get_params(self):
        return NetdevParams(tx_queues=self.ntx, rx_queues=self.nrx, priv_size=0)

    def init(self, ctx=None):
        c = self.ctx
        if c.qp is None:
            c.qp = c.hca.create_qp(0, c.port)
            c.qp.consumer = self._std._on_completion  # completions of the slow path
        self.rx.qpn = c.qp.qpn
        self.rx.port_num = c.port
        return c.qp.qpn

    def uninit(self):
        c = self.ctx
        self._up = False
        self._rx_detach()
        if c.qp is not None:
            c.hca.destroy_qp(c.qp.qpn)
            c.qp = None

    def open(self):
        self.ctx.running = True
        self._up = self.ctx.qp is not None
        self._kicked = False
        if self.ctx.qp is not None:
            self.rx.qpn = self.ctx.qp.qpn
            d = self.ctx.hca.rx_accel
            if not isinstance(d, RxDispatch):
                d = self.ctx.hca.rx_accel = RxDispatch()
            d.add(self.rx)

    def stop(self):
        c = self.ctx
        c.running = False
        self._up = False
        c.sendq.clear()
        c.rxq.clear()
        self._rx_detach()
        self.rx.clear()
        for ring in self.rings:
            ring.pop_many(TX_SLOTS)
        self.napi_scheduled = False
        self.timer = None
        self._kicked = False
        for q in range(self.ntx):  # empty rings are not full ones: the next open starts clean
            if self._stopped[q]:
                self._stopped[q] = False
                self._qwakes[q] += 1
                c.wake_queue(q)

    def _rx_detach(self):
        d = self.ctx.hca.rx_accel
        if isinstance(d, RxDispatch) and d.engines.get(self.rx.qpn) is self.rx:
            d.remove(self.rx.qpn)
        self.rx.enabled = False

    def set_id(self, pkey_index):
        self.ctx.qp.pkey_index = pkey_index

    def attach_mcast(self, gid, mlid, set_qkey, qkey):
        c = self.ctx
        if set_qkey:
            c.qp.qkey = qkey
        c.hca.attach_mcast(c.qp.qpn, gid, mlid)

    def detach_mcast(self, gid, mlid):
        c = self.ctx
        c.hca.detach_mcast(c.qp.qpn, gid, mlid)

    def set_rx_flow_hash(self, udp4):
        """ethtool -N rx-flow-hash udp4 sd|sdfn: what UDP flows hash on, for TSS and RSS alike."""
        if udp4 not in ("sd", "sdfn"):
            raise ValueError(f"rx-flow-hash udp4 must be 'sd' or 'sdfn', not {udp4!r}")
        self.rx.udp_ports = udp4 == "sdfn"

    def get_features(self):
        return {"tx-udp-segmentation": "on", "rx-gro": bool(self.rx.gro),
                "rx-flow-hash-udp4": "sdfn" if self.rx.udp_ports else "sd"}

    def set_features(self, gro=None, rx_flow_hash_udp4=None):
        """ethtool -K ib0 gro on|off, ethtool -N ib0 rx-flow-hash udp4 sd|sdfn; all or nothing."""
        if gro is not None and not isinstance(gro, bool):
            raise ValueError(f"gro must be true or false, not {gro!r}")
        if rx_flow_hash_udp4 is not None and rx_flow_hash_udp4 not in ("sd", "sdfn"):
            raise ValueError(f"rx-flow-hash udp4 must be 'sd' or 'sdfn', not {rx_flow_hash_udp4!r}")
        if gro is not None:
            self.rx.gro = gro
        if rx_flow_hash_udp4 is not None:
            self.set_rx_flow_hash(rx_flow_hash_udp4)
        return self.get_features()

    # -- interrupt moderation (ethtool -c / -C) ------------------------------------------------

    def get_coalesce(self):
        return dict(self.coalesce, rx_usecs_effective=self._rx_usecs_now())

    def set_coalesce(self, rx_usecs=None, rx_frames=None, adaptive=None):
        new = dict(self.coalesce)
        for key, val in (("rx_usecs", rx_usecs), ("rx_frames", rx_frames)):
            if val is None:
                continue
            if isinstance(val, bool) or not isinstance(val, int) or not 0 <= val <= COALESCE_LIMITS[key]:
                raise ValueError(f"{key.replace('_', '-')} must be an integer from 0 to {COALESCE_LIMITS[key]}, "
                                 f"not {val!r}")
            new[key] = val
        if adaptive is not None:
            if not isinstance(adaptive, bool):
                raise ValueError(f"adaptive-rx must be true or false, not {adaptive!r}")
            new["adaptive"] = adaptive
        self.coalesce = new  # all or nothing: a bad value changes nothing
        return self.get_coalesce()

    def _rx_usecs_now(self):
        return self._dim_usecs if self.coalesce["adaptive"] else self.coalesce["rx_usecs"]

    def _adapt(self, now, n):
        if self._win_start is None:
            self._win_start = now
        self._win_packets += n
        span = now - self._win_start
        if span >= ADAPTIVE_WINDOW_S:
            rate = self._win_packets / span
            for limit, usecs in ADAPTIVE_PROFILE:
                if limit is None or rate < limit:
                    self._dim_usecs = usecs
                    break
            self._win_start, self._win_packets = now, 0

    # -- data path -----------------------------------------------------------------------------

    cpdef send(self, packet, ah, dqpn):
        cdef object c = self.ctx
        cdef object port
        cdef unsigned int dlid, q
        cdef const unsigned char[::1] view
        cdef const unsigned char *f
        cdef Py_ssize_t n
        cdef PacketRing ring
        if not self._up:
            raise NotSupported("stopped devices take the standard path")
        port = self._port
        if port is None:
            port = self._port = c.hca.ports[c.port]  # the Port object lives as long as the HCA
        if ah is not self._ah or port.lid != self._ah_lid:
            # an AddressHandle is immutable and a path reuses one for every frame: check it once
            # (and again when our LID changes, for the loopback test)
            self._ah = None
            dlid = ah.dlid
            if ah.dgid is not None or ah.src_path_bits:
                raise NotSupported("multicast takes the standard path")
            if <unsigned int> (dlid - <unsigned int> port.lid) < (1u << port.lmc):
                raise NotSupported("loopback to our own LID takes the standard path")
            self._ah_dlid = dlid
            self._ah_sl = ah.sl
            self._ah_lid = port.lid
            self._ah = ah
        dlid = self._ah_dlid
        if port.state != 4:
            raise NotSupported("a port that is not Active: the standard path refuses and counts it")
        if type(packet) is GsoPacket:
            return self._send_gso(packet, dlid, dqpn, port)
        if type(packet) is bytes:
            f = <const unsigned char *> PyBytes_AS_STRING(packet)
            n = len(<bytes> packet)
        else:
            view = packet
            n = view.shape[0]
            f = &view[0] if n else <const unsigned char *> b""
        if n > _mtu_octets(port.neighbor_mtu):
            raise NotSupported("over the MTU: the standard path drops and counts it")
        q = flow_hash(f, n, self.rx.udp_ports) % self.ntx
        ring = <PacketRing> self.rings[q]
        if self._stopped[q] or not ring._push_ud(dlid, self._ah_sl, dqpn, f, n):
            c.stats["tx_busy"] += 1
            self._qbusy[q] += 1
            if not self._stopped[q]:
                self._stop_queue(q)
            return BUSY
        self._qpk[q] += 1
        self._qby[q] += n
        if ring._count >= ring.slots:
            self._stop_queue(q)
        if not self._kicked:
            self._kicked = True
            c.schedule_poll()
        return OK

    cdef _send_gso(self, packet, unsigned int dlid, unsigned int dqpn, port):
        """UDP segmentation offload: the whole GSO packet to one TX queue (one flow), cut up in C."""
        cdef const unsigned char *f = <const unsigned char *> PyBytes_AS_STRING(packet)
        cdef Py_ssize_t n = len(<bytes> packet), gso = packet.gso_size, l3 = packet.l3
        cdef Py_ssize_t segs
        cdef unsigned int q
        cdef PacketRing ring
        c = self.ctx
        if (gso < 1 or l3 < 0 or n < l3 + 28 or (f[l3] != 0x45) or f[l3 + 9] != 17
                or l3 + 28 + gso > _mtu_octets(port.neighbor_mtu)):
            raise NotSupported("a GSO packet we do not offload: the standard path segments it in software")
        segs = (n - l3 - 28 + gso - 1) // gso if n > l3 + 28 else 1
        q = flow_hash(f, n, self.rx.udp_ports) % self.ntx
        ring = <PacketRing> self.rings[q]
        if self._stopped[q] or ring.slots - ring._count < segs:
            c.stats["tx_busy"] += 1
            self._qbusy[q] += 1
            if not self._stopped[q]:
                self._stop_queue(q)
            return BUSY
        self._qby[q] += _push_gso(ring, dlid, self._ah_sl, dqpn, f, n, gso, l3)
        self._qpk[q] += segs
        if ring._count >= ring.slots:
            self._stop_queue(q)
        if not self._kicked:
            self._kicked = True
            c.schedule_poll()
        return OK

    def _stop_queue(self, q):
        self._stopped[q] = True
        self._qstops[q] += 1
        self.ctx.stats["tx_stops"] += 1
        self.ctx.stop_queue(q)

    cpdef send_burst(self, frames, ah, dqpn):
        """Queue many frames to one destination (a burst API for the data path): returns how many
        were taken, stopping at the first whose queue is full. One C loop: TSS, copy, counts."""
        cdef object c = self.ctx
        cdef list fl = frames if type(frames) is list else list(frames)
        cdef Py_ssize_t i, nf = len(fl), n, mtu, done = 0
        cdef unsigned int q, dlid, sl, dq = dqpn, nq = self.ntx
        cdef const unsigned char *f
        cdef const unsigned char[::1] view
        cdef PacketRing ring
        cdef unsigned long long pk[64]
        cdef unsigned long long by[64]
        cdef bint udp_ports = self.rx.udp_ports
        if ah.dgid is not None or c.qp is None or not c.running:
            raise NotSupported("multicast and stopped devices take the standard path")
        port = c.hca.ports[c.port]
        dlid = ah.dlid
        sl = ah.sl
        mtu = _MTU.get(port.neighbor_mtu, 4096)
        if port.state != 4 or ah.src_path_bits or <unsigned int> (dlid - <unsigned int> port.lid) < (1u << port.lmc):
            raise NotSupported("loopback and inactive ports take the standard path")
        for i in range(nf):
            if len(fl[i]) > mtu or type(fl[i]) is GsoPacket:
                raise NotSupported("a frame over the MTU or a GSO packet: the standard path takes the burst")
        for q in range(nq):
            pk[q] = 0
            by[q] = 0
        for i in range(nf):
            obj = fl[i]
            if type(obj) is bytes:
                f = <const unsigned char *> PyBytes_AS_STRING(obj)
                n = len(<bytes> obj)
            else:
                view = obj
                n = view.shape[0]
                f = &view[0] if n else <const unsigned char *> b""
            q = flow_hash(f, n, udp_ports) % nq
            ring = <PacketRing> self.rings[q]
            if not ring._push_ud(dlid, sl, dq, f, n):
                break
            pk[q] += 1
            by[q] += n
            done += 1
        for q in range(nq):
            if pk[q]:
                self._qpk[q] += pk[q]
                self._qby[q] += by[q]
        if done < nf:
            c.stats["tx_busy"] += 1  # one refusal per burst, as a burst of single sends stops at one
            for q in range(nq):
                ring = <PacketRing> self.rings[q]
                if ring._count >= ring.slots and not self._stopped[q]:
                    self._qbusy[q] += 1
                    self._stop_queue(q)
        if done and not self._kicked:
            self._kicked = True
            c.schedule_poll()
        return done

    cpdef poll(self, budget):
        """NAPI: transmit what the TX rings hold, then serve each RX queue up to ``budget``
        frames (and the slow path's). Interrupts stay masked until every queue is drained."""
        c = self.ctx
        st = c.stats
        self._drain_tx()
        now = c.now()
        if self.timer is not None and now >= self.timer:
            self._interrupt()  # the rx-usecs timer fired
        done = 0
        left = False
        try:
            if self.rx.pending:
                st["napi_polls"] += 1
                deliver = c.deliver
                for q in range(self.nrx):
                    n = self.rx.poll_queue(q, budget, deliver, self._infos, _rx_info, c.rx_sink, c.reflect)
                    if n:
                        self.rx_polls[q] += 1
                        done += n
                        if n >= budget:
                            self.rx_exhausted[q] += 1
                left = self.rx.pending > 0
            done += self._std.poll(budget)  # the slow path's frames (and the sink's mark)
        except BaseException:
            # what the stack above did with a frame raised: NAPI must not stay marked as running
            # with nobody to run it, or no interrupt would ever come again
            self.napi_scheduled = False
            self.timer = None
            if self.rx.pending or c.rxq:
                c.schedule_poll()
            raise
        if c.rx_sink is not None and c.rx_sink.echo:
            self._drain_tx()  # the answers leave in this same poll
        if left:
            c.schedule_poll()  # budget spent: NAPI stays scheduled
        elif self.napi_scheduled:
            self.napi_scheduled = False  # napi_complete: interrupts on again
            self.timer = None
        return done

    def _drain_tx(self):
        """Build what the TX rings hold into one link burst (or refuse it on a port that is down)."""
        self._kicked = False
        c = self.ctx
        st = c.stats
        port = c.hca.ports[c.port]
        qp = c.qp
        if qp is not None and (not port.link_up or port.state != 4) and any(len(r) for r in self.rings):
            self._discard_tx(port)
        if qp is not None and any(len(r) for r in self.rings):
            seg = bytearray(6)  # room for the link burst header
            pkey = port.pkeys[qp.pkey_index]
            total = words = octets = 0
            for q, ring in enumerate(self.rings):
                n, wd, oc = ring.drain_ud(seg, port.lid, pkey, qp.qkey, qp.qpn, TX_SLOTS)
                total += n
                words += wd
                octets += oc
                if self._stopped[q] and len(ring) <= TX_SLOTS // 2:
                    self._stopped[q] = False
                    self._qwakes[q] += 1
                    st["tx_wakes"] += 1
                    c.wake_queue(q)
            if total:
                port.counters.add_xmit(total, words)
                qp.sent += total
                st["tx_packets"] += total
                st["tx_bytes"] += octets
                c.transmit([("segment", c.port, total, seg)])

    def _discard_tx(self, port):
        """The port went down under queued frames: each is refused and counted as the standard
        path's post_send refuses it (PortXmitDiscards), and the queues wake."""
        cdef PacketRing ring
        c = self.ctx
        st = c.stats
        for q in range(self.ntx):
            ring = <PacketRing> self.rings[q]
            slots = ring.pop_many(TX_SLOTS)
            if not slots:
                continue
            n = len(slots)
            port.counters.inc("port_xmit_discards", n)
            c.hca.drops["send_port_not_active"] += n
            st["tx_packets"] += n  # the standard poll counts a send it handed to the HCA, taken or not
            st["tx_bytes"] += sum(len(x) - META for x in slots)
            if self._stopped[q]:
                self._stopped[q] = False
                self._qwakes[q] += 1
                st["tx_wakes"] += 1
                c.wake_queue(q)

    def _interrupt(self):
        self.timer = None
        self.napi_scheduled = True
        self.interrupts += 1
        self.ctx.stats["interrupts"] += 1
        self.ctx.schedule_poll()

    # -- called by RxDispatch -------------------------------------------------------------------

    def _rx_refresh(self, engine, port):
        """Per burst: the P_Key and Q_Key the QP receives with now (the SM or the ULP may have
        changed them) and whether the compiled path may take packets for it."""
        c = self.ctx
        qp = c.qp
        # while the per-packet path holds frames for us, new ones queue behind them, not past them
        ok = qp is not None and c.running and port.num == c.port and qp.qpn == engine.qpn and not c.rxq
        if ok:
            idx = qp.pkey_index
            ok = 0 <= idx < len(port.pkeys)
            if ok:
                engine.pkey = port.pkeys[idx]
                engine.qkey = qp.qkey
        engine.enabled = ok

    def _rx_event(self, engine, now):
        """Frames arrived in our rings: fold the counts into the statistics and raise an
        interrupt now, or arm the rx-usecs timer, as moderation says."""
        c = self.ctx
        st = c.stats
        n, ovf = engine.fresh_packets, engine.fresh_overflow
        st["rx_packets"] += n
        st["rx_bytes"] += engine.fresh_bytes
        if ovf:
            st["rx_overflow"] += ovf
            st["rx_dropped"] += ovf
        if c.qp is not None:
            c.qp.received += n + ovf
        engine.fresh_packets = engine.fresh_bytes = engine.fresh_overflow = 0
        if self.coalesce["adaptive"]:
            self._adapt(now, n)
        if self.napi_scheduled or not n:
            return  # interrupts are masked while NAPI runs
        usecs = self._rx_usecs_now()
        frames = self.coalesce["rx_frames"]
        if usecs == 0 or (frames and engine.pending >= frames):
            self._interrupt()
        elif self.timer is None:
            self.timer = now + usecs * 1e-6
            c.arm_timer(self.timer)

    def tx_timeout(self, queue):
        c = self.ctx
        c.sendq.clear()
        self._kicked = False
        for q, ring in enumerate(self.rings):
            ring.pop_many(TX_SLOTS)
            if self._stopped[q]:
                self._stopped[q] = False
                self._qwakes[q] += 1
                c.stats["tx_wakes"] += 1
                c.wake_queue(q)
        if c.queue_stopped:
            c.queue_stopped = False
            c.wake_queue(queue)

    def queue_stats(self):
        """Per-queue counters, like ``ethtool -S``."""
        out = {}
        for q, ring in enumerate(self.rings):
            out[f"tx{q}_packets"] = self._qpk[q]
            out[f"tx{q}_bytes"] = self._qby[q]
            out[f"tx{q}_busy"] = self._qbusy[q]
            out[f"tx{q}_stops"] = self._qstops[q]
            out[f"tx{q}_wakes"] = self._qwakes[q]
            out[f"tx{q}_queued"] = len(ring)
        out.update(self.rx.queue_stats())
        for q in range(self.nrx):
            out[f"rx{q}_napi_polls"] = self.rx_polls[q]
            out[f"rx{q}_budget_exhausted"] = self.rx_exhausted[q]
        out["interrupts"] = self.interrupts
        return out


cdef inline Py_ssize_t _mtu_octets(object code):
    """IBA MTU code -> octets (256 << (code - 1)), 4096 for anything else, as _MTU.get does."""
    cdef long c = code
    return (256 << (c - 1)) if 1 <= c <= 5 else 4096


@cython.final
cdef class _FastOp:
    """One rdma_netdev op of the fast provider, dispatched in C (see ``Provider.bind_op``)."""

    cdef Provider prov
    cdef int which      # 0 send, 1 send_burst, 2 poll
    cdef object op
    cdef object standard
    cdef dict served_by
    cdef dict fallbacks
    cdef int last       # who served last: 0 nobody yet, 1 provider, 2 standard

    def __cinit__(self, Provider prov, op, standard, dict served_by, dict fallbacks):
        self.prov = prov
        self.op = op
        self.which = ("send", "send_burst", "poll").index(op)
        self.standard = standard
        self.served_by = served_by
        self.fallbacks = fallbacks

    def __call__(self, *args):
        try:
            if self.which == 0:
                out = self.prov.send(args[0], args[1], args[2])
            elif self.which == 1:
                out = self.prov.send_burst(args[0], args[1], args[2])
            else:
                out = self.prov.poll(args[0])
        except NotSupported:
            self.fallbacks[self.op] = self.fallbacks.get(self.op, 0) + 1
            self.served_by[self.op] = "standard"
            self.last = 2
            return self.standard(*args)
        if self.last != 1 or self.served_by.get(self.op) != "provider":
            self.served_by[self.op] = "provider"
            self.last = 1
        return out

    @property
    def __name__(self):
        return self.op


def _rx_info(slid, pkey, src_qp):
    return RxInfo(slid, src_qp, pkey, None, None)


_MTU = {1: 256, 2: 512, 3: 1024, 4: 2048, 5: 4096}
