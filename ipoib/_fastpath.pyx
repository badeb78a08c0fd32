# cython: language_level=3
"""Accelerated data-path core (backend ``fast``): preallocated numpy ring buffers.

Same names and behaviour as :mod:`ipoib._stdpath`. A ring is one contiguous uint8 array of
``slots x slot_size`` plus a length per slot; head and tail are plain C integers, so pushing and
popping a packet is a memcpy and two index updates, with no Python object per slot.
"""

import numpy as np
cimport numpy as cnp
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from fabric._wirefast cimport write_ud_packet

cnp.import_array()

__all__ = ["BACKEND", "PacketRing", "RingFull", "Provider"]

BACKEND = "fast"

# Copies at least this long run without the GIL; below it the release costs more than the copy.
DEF NOGIL_COPY = 2048
DEF META = 8  # TX slot header: DLID(2) SL(1) reserved(1) DestQP(4)


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
        dst[0] = (dlid >> 8) & 0xFF
        dst[1] = dlid & 0xFF
        dst[2] = sl & 0xF
        dst[3] = 0
        dst[4] = (dqpn >> 24) & 0xFF
        dst[5] = (dqpn >> 16) & 0xFF
        dst[6] = (dqpn >> 8) & 0xFF
        dst[7] = dqpn & 0xFF
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

cdef inline unsigned int flow_hash(const unsigned char *f, Py_ssize_t n) noexcept nogil:
    """Hash of an IPoIB frame's IPv4 flow (addresses, protocol, ports): the TX queue for TSS and
    the RX queue for RSS. Non-IPv4 frames hash to 0, so ARP stays on one queue, in order."""
    cdef unsigned int h, ihl
    if n < 4 + 20 or f[0] != 0x08 or f[1] != 0x00:
        return 0
    h = ((f[16] << 24) | (f[17] << 16) | (f[18] << 8) | f[19]) ^ ((f[20] << 24) | (f[21] << 16) | (f[22] << 8) | f[23])
    h ^= f[13]
    ihl = (f[4] & 0xF) * 4
    if (f[13] == 17 or f[13] == 6) and n >= 4 + ihl + 4 and not ((f[10] & 0x1F) or f[11]):
        h ^= (f[4 + ihl] << 24) | (f[5 + ihl] << 16) | (f[6 + ihl] << 8) | f[7 + ihl]
    h *= 0x9E3779B1U
    return h ^ (h >> 16)


def frame_flow_hash(const unsigned char[::1] frame not None):
    return flow_hash(&frame[0] if frame.shape[0] else <const unsigned char *> b"", frame.shape[0])


TX_SLOTS = 256
MAX_FRAME = 4096 + 8


def push_burst(list rings, list frames, unsigned int dlid, unsigned int sl, unsigned int dqpn, list counts):
    """TSS for a whole burst: each frame to the ring its flow hashes to, in one C loop. Stops at the
    first frame whose ring is full; returns how many were queued (counts[q] += per queue)."""
    cdef Py_ssize_t i, nq = len(rings), done = 0
    cdef unsigned int q
    cdef const unsigned char[::1] view
    cdef PacketRing ring
    for i in range(len(frames)):
        view = frames[i]
        q = flow_hash(&view[0] if view.shape[0] else <const unsigned char *> b"", view.shape[0]) % nq
        ring = <PacketRing> rings[q]
        if not ring._push_ud(dlid, sl, dqpn, &view[0] if view.shape[0] else <const unsigned char *> b"",
                             view.shape[0]):
            break
        counts[q] += 1
        done += 1
    return done


class Provider:
    """The accelerated rdma_netdev provider.

    TX: ``TX_QUEUES`` preallocated rings; ``send`` picks one by flow hash (TSS) and copies the frame
    into a slot behind an 8-octet address; ``poll`` builds every queued packet in C (LRH, BTH,
    DETH, ICRC, VCRC) straight into one link burst, with no Python object per packet. A queue
    stops when its ring is full and wakes at half, per queue.

    Sends the fast path does not cover raise NotSupported, and the standard implementation takes
    them, call by call: multicast (GRH), loopback to our own LID, a port that is not Active. The
    control ops and the receive side are the standard ones for now (per-op fallback).
    """

    name = "fast"
    TX_QUEUES = 4
    RX_QUEUES = 4

    def __init__(self, ctx):
        self.ctx = ctx
        self.ntx = int(getattr(ctx, "tx_queues", self.TX_QUEUES))
        self.rings = [PacketRing(TX_SLOTS, MAX_FRAME) for _ in range(self.ntx)]
        self.stopped = [False] * self.ntx
        self.q_packets = [0] * self.ntx
        self._std = None

    def _standard(self):
        if self._std is None:
            from ipoib.std import StdProvider

            self._std = StdProvider(self.ctx)
        return self._std

    def get_params(self):
        from ipoib.netdev import NetdevParams

        return NetdevParams(tx_queues=self.ntx, rx_queues=self.RX_QUEUES, priv_size=0)

    def send(self, packet, ah, dqpn):
        from ipoib.netdev import BUSY, OK, NotSupported

        c = self.ctx
        if ah.dgid is not None or c.qp is None or not c.running:
            raise NotSupported("multicast and stopped devices take the standard path")
        port = c.hca.ports[c.port]
        if port.state != 4 or port.owns_lid(ah.dlid) or ah.src_path_bits:
            raise NotSupported("loopback and inactive ports take the standard path")
        if len(packet) > _MTU.get(port.neighbor_mtu, 4096):
            raise NotSupported("over the MTU: the standard path drops and counts it")
        q = frame_flow_hash(packet) % self.ntx
        ring = self.rings[q]
        if self.stopped[q] or not ring.push_ud(ah.dlid, ah.sl, dqpn, packet):
            c.stats["tx_busy"] += 1
            if not self.stopped[q]:
                self.stopped[q] = True
                c.stats["tx_stops"] += 1
                c.stop_queue(q)
            return BUSY
        self.q_packets[q] += 1
        if ring.free == 0:
            self.stopped[q] = True
            c.stats["tx_stops"] += 1
            c.stop_queue(q)
        c.schedule_poll()
        return OK

    def send_burst(self, frames, ah, dqpn):
        """Queue many frames to one destination (a burst API for the data path): returns how many
        were taken. The ones the fast path does not cover fall back like single sends."""
        from ipoib.netdev import NotSupported

        c = self.ctx
        if ah.dgid is not None or c.qp is None or not c.running:
            raise NotSupported("multicast and stopped devices take the standard path")
        port = c.hca.ports[c.port]
        mtu = _MTU.get(port.neighbor_mtu, 4096)
        if port.state != 4 or port.owns_lid(ah.dlid) or ah.src_path_bits or any(len(f) > mtu for f in frames):
            raise NotSupported("loopback, inactive ports and oversized frames take the standard path")
        done = push_burst(self.rings, list(frames), ah.dlid, ah.sl, dqpn, self.q_packets)
        if done < len(frames):
            c.stats["tx_busy"] += len(frames) - done
            for q, ring in enumerate(self.rings):
                if ring.free == 0 and not self.stopped[q]:
                    self.stopped[q] = True
                    c.stats["tx_stops"] += 1
                    c.stop_queue(q)
        if done:
            c.schedule_poll()
        return done

    def poll(self, budget):
        c = self.ctx
        port = c.hca.ports[c.port]
        qp = c.qp
        if qp is not None and any(len(r) for r in self.rings):
            seg = bytearray(6)  # room for the link burst header
            pkey = port.pkeys[qp.pkey_index]
            total = words = octets = 0
            for q, ring in enumerate(self.rings):
                n, wd, oc = ring.drain_ud(seg, port.lid, pkey, qp.qkey, qp.qpn, TX_SLOTS)
                total += n
                words += wd
                octets += oc
                if self.stopped[q] and len(ring) <= TX_SLOTS // 2:
                    self.stopped[q] = False
                    c.stats["tx_wakes"] += 1
                    c.wake_queue(q)
            if total:
                port.counters.add_xmit(total, words)
                qp.sent += total
                c.stats["tx_packets"] += total
                c.stats["tx_bytes"] += octets
                c.transmit([("segment", c.port, total, seg)])
        return self._standard().poll(budget)

    def tx_timeout(self, queue):
        from ipoib.netdev import NotSupported

        for q, ring in enumerate(self.rings):
            ring.pop_many(TX_SLOTS)
            if self.stopped[q]:
                self.stopped[q] = False
                self.ctx.wake_queue(q)
        raise NotSupported("the standard op resets its own queue too")

    def queue_stats(self):
        """Per-queue counters, like ethtool -S."""
        out = {}
        for q, ring in enumerate(self.rings):
            out[f"tx{q}_packets"] = self.q_packets[q]
            out[f"tx{q}_queued"] = len(ring)
            out[f"tx{q}_full"] = ring.dropped_full
        return out


_MTU = {1: 256, 2: 512, 3: 1024, 4: 2048, 5: 4096}
