"""Pure-Python data-path core (backend ``std``): the reference behaviour of ``_fastpath``.

Both modules export the same names; :mod:`ipoib` picks one at import. Keep them in step: the test
suite runs once per backend, and the differential tests compare them.
"""

from __future__ import annotations

from collections import deque

__all__ = ["BACKEND", "PacketRing", "RingFull", "Provider"]

BACKEND = "std"


class RingFull(Exception):
    """Raised by ``push_or_raise`` when no slot is free."""


class PacketRing:
    """A bounded FIFO of packets with ``slots`` entries of at most ``slot_size`` octets.

    ``push`` never blocks: a full ring refuses the packet (UD semantics: the caller counts the drop
    or stops its queue). The std backend keeps Python ``bytes`` objects; the fast one copies into a
    preallocated numpy array.
    """

    def __init__(self, slots: int, slot_size: int):
        if slots < 1 or slot_size < 1:
            raise ValueError("slots and slot_size must be positive")
        self.slots = int(slots)
        self.slot_size = int(slot_size)
        self._q: deque = deque()
        self.pushed = 0
        self.popped = 0
        self.dropped_full = 0
        self.dropped_oversize = 0

    def __len__(self) -> int:
        return len(self._q)

    @property
    def free(self) -> int:
        return self.slots - len(self._q)

    def push(self, packet) -> bool:
        if len(packet) > self.slot_size:
            self.dropped_oversize += 1
            return False
        if len(self._q) >= self.slots:
            self.dropped_full += 1
            return False
        self._q.append(bytes(packet))
        self.pushed += 1
        return True

    def push_many(self, packets) -> int:
        """Push packets in order until one is refused; return how many went in."""
        n = 0
        for p in packets:
            if not self.push(p):
                break
            n += 1
        return n

    def pop(self):
        if not self._q:
            return None
        self.popped += 1
        return self._q.popleft()

    def pop_many(self, budget: int) -> list:
        out = []
        q = self._q
        while q and len(out) < budget:
            out.append(q.popleft())
        self.popped += len(out)
        return out

    def stats(self) -> dict:
        return {"slots": self.slots, "slot_size": self.slot_size, "used": len(self._q),
                "pushed": self.pushed, "popped": self.popped, "dropped_full": self.dropped_full,
                "dropped_oversize": self.dropped_oversize}


def __getattr__(name):
    if name == "Provider":  # the standard rdma_netdev implementation (ipoib/std.py), lazily
        from .std import StdProvider

        return StdProvider
    raise AttributeError(name)
