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

cnp.import_array()

__all__ = ["BACKEND", "PacketRing", "RingFull", "Provider"]

BACKEND = "fast"

# Copies at least this long run without the GIL; below it the release costs more than the copy.
DEF NOGIL_COPY = 2048


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

    cdef inline bint _push(self, const unsigned char *src, Py_ssize_t n):
        cdef Py_ssize_t slot
        cdef unsigned char *dst
        if n > self.slot_size:
            self.dropped_oversize += 1
            return False
        if self._count >= self.slots:
            self.dropped_full += 1
            return False
        slot = self._head + self._count
        if slot >= self.slots:
            slot -= self.slots
        dst = self._buf + slot * self.slot_size
        if n >= NOGIL_COPY:
            with nogil:
                memcpy(dst, src, n)
        else:
            memcpy(dst, src, n)
        self._len[slot] = <unsigned int> n
        self._count += 1
        self.pushed += 1
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


# -- rdma_netdev provider ----------------------------------------------------------------------

class Provider:
    """The accelerated rdma_netdev provider. For now it offers get_params (its multi-queue
    geometry) and leaves every other op to the standard implementation, op by op, which is what
    the contract allows: the accelerated data path (TSS/RSS rings, NAPI, moderation) grows here."""

    name = "fast"
    TX_QUEUES = 4
    RX_QUEUES = 4

    def __init__(self, ctx):
        self.ctx = ctx

    def get_params(self):
        from ipoib.netdev import NetdevParams

        return NetdevParams(tx_queues=self.TX_QUEUES, rx_queues=self.RX_QUEUES, priv_size=0)
