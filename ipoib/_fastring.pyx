# cython: language_level=3
"""Packet rings of the accelerated data path: preallocated numpy ring buffers.

A ring is one contiguous uint8 array of ``slots x slot_size`` plus a length per slot; head and tail
are plain C integers, so pushing and popping a packet is a memcpy and two index updates, with no
Python object per slot. The provider's TX queues and the receive engine's RSS queues are rings;
the flow hash that picks their queue and the checksum helpers are in ``_fastring.pxd``.
"""

import mmap as _mmap

import numpy as np
cimport numpy as cnp
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from fabric._wirefast cimport write_ud_packet

cnp.import_array()

MAPPED_MIN = 1 << 16  # a ring this big or bigger lives in its own anonymous mapping


cdef class PacketRing:
    """A bounded FIFO of packets with ``slots`` entries of at most ``slot_size`` octets."""

    def __cinit__(self, Py_ssize_t slots, Py_ssize_t slot_size):
        if slots < 1 or slot_size < 1:
            raise ValueError("slots and slot_size must be positive")
        self.slots = slots
        self.slot_size = slot_size
        if slots * slot_size >= MAPPED_MIN:
            # An anonymous mapping: its pages are zero and cost nothing until a packet is written
            # there. np.zeros of a ring's megabyte comes from the heap once glibc's mmap threshold
            # is above it (a device host raises it to keep link bursts in the heap, and glibc
            # raises it itself after a large free), and is then cleared at once: 0.6 ms and up a
            # ring set, and the memory, for every HCA a fabric starts (the array keeps the mapping
            # alive as its base)
            # (private: a shared one is shmem, whose first touch of a page costs twice as much; and
            # no transparent huge pages, which would map 2 MB at a packet's first touch)
            m = _mmap.mmap(-1, slots * slot_size, flags=_mmap.MAP_PRIVATE)
            if hasattr(m, "madvise") and hasattr(_mmap, "MADV_NOHUGEPAGE"):
                m.madvise(_mmap.MADV_NOHUGEPAGE)
            self.buffer = np.frombuffer(m, dtype=np.uint8).reshape(slots, slot_size)
        else:
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

    cpdef tuple drain_ud(self, bytearray seg, unsigned int slid, unsigned int pkey, unsigned int qkey,
                         unsigned int src_qp, Py_ssize_t budget):
        """Build a UD packet from each queued frame, appended to ``seg`` length-prefixed (the link
        burst format). One C loop, no Python object per packet. Returns (packets, words, octets)."""
        cdef unsigned long long words = 0, octets = 0
        n = self.drain_ud_c(seg, slid, pkey, qkey, src_qp, budget, &words, &octets)
        return n, words, octets

    cdef Py_ssize_t drain_ud_c(self, bytearray seg, unsigned int slid, unsigned int pkey, unsigned int qkey,
                               unsigned int src_qp, Py_ssize_t budget, unsigned long long *words,
                               unsigned long long *octets) except -1:
        """drain_ud for the compiled provider: the packets built, their words and octets added to
        ``*words`` and ``*octets`` (no tuple per burst)."""
        cdef Py_ssize_t i, slot, need = 0, off
        cdef unsigned char *out
        cdef Py_ssize_t wd = 0, oc = 0
        cdef Py_ssize_t take = self._count if self._count < budget else budget
        if seg is None:
            raise TypeError("drain_ud needs a bytearray to build the burst into, not None")
        if take <= 0:
            return 0
        for i in range(take):
            slot = self._head + i
            if slot >= self.slots:
                slot -= self.slots
            need += 2 + 28 + (self._len[slot] - META) + 3 + 6
        off = len(seg)
        PyByteArray_Resize(seg, off + need)
        out = <unsigned char *> PyByteArray_AS_STRING(seg)
        if need >= NOGIL_DRAIN:  # a short burst: letting the GIL go costs more than building it
            with nogil:
                off = self._drain_loop(out, off, take, slid, pkey, qkey, src_qp, &wd, &oc)
        else:
            off = self._drain_loop(out, off, take, slid, pkey, qkey, src_qp, &wd, &oc)
        self.popped += take
        PyByteArray_Resize(seg, off)
        words[0] += wd
        octets[0] += oc
        return take

    cdef Py_ssize_t _drain_loop(self, unsigned char *out, Py_ssize_t off, Py_ssize_t take, unsigned int slid,
                                unsigned int pkey, unsigned int qkey, unsigned int src_qp, Py_ssize_t *wd,
                                Py_ssize_t *oc) noexcept nogil:
        """drain_ud_c's loop: ``take`` packets built at ``out + off``; returns the new offset."""
        cdef Py_ssize_t i, slot, n, plen
        cdef unsigned char *src
        cdef unsigned int dlid, sl, dqpn
        for i in range(take):
            slot = self._head
            src = self._buf + slot * self.slot_size
            n = self._len[slot] - META
            dlid = (src[0] << 8) | src[1]
            sl = src[2]
            dqpn = (src[5] << 16) | (src[6] << 8) | src[7]
            plen = write_ud_packet(out + off + 2, src + META, n, slid, dlid, sl, pkey, dqpn, src_qp, qkey, 0, 0, 0)
            out[off] = (plen >> 8) & 0xFF
            out[off + 1] = plen & 0xFF
            off += 2 + plen
            wd[0] += (plen - 2) >> 2
            oc[0] += n
            self._head = slot + 1 if slot + 1 < self.slots else 0
            self._count -= 1
        return off


cdef Py_ssize_t push_gso(PacketRing ring, unsigned int dlid, unsigned int sl, unsigned int dqpn,
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
        tx_address(d, dlid, sl, dqpn)
        memcpy(d + META, f, l3 + 24)  # link header, IPv4 header, UDP ports
        ip = d + META + l3
        ip[2] = ((28 + seg) >> 8) & 0xFF
        ip[3] = (28 + seg) & 0xFF
        ident = (ident0 + i) & 0xFFFF
        ip[4] = ident >> 8
        ip[5] = ident & 0xFF
        ip[10] = 0
        ip[11] = 0
        c = (~csum_fold(csum_add(0, ip, 20))) & 0xFFFF
        ip[10] = c >> 8
        ip[11] = c & 0xFF
        udp = ip + 20
        ulen = 8 + seg
        udp[4] = (ulen >> 8) & 0xFF
        udp[5] = ulen & 0xFF
        udp[6] = 0
        udp[7] = 0
        memcpy(udp + 8, f + l3 + 28 + o, seg)
        acc = csum_add(0, ip + 12, 8)  # the pseudo-header: addresses, protocol, UDP length
        acc += 17 + ulen
        acc = csum_add(acc, udp, ulen)
        c = (~csum_fold(acc)) & 0xFFFF
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
