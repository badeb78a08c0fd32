"""Frames the ULP holds: those waiting for a neighbour or a path to be resolved (:class:`FrameQueue`,
the kernel's neighbour queue) and those a stopped TX queue refused (:class:`Qdisc`, the qdisc the
kernel keeps in front of ipoib's ib0). What goes in and out, and what is counted, is the ULP's."""

from __future__ import annotations

from collections import deque

# Frames waiting for an unresolved neighbour (ARP) or path (PathRecord): bounded in octets as the
# kernel's neighbour queue is (unres_qlen_bytes, 212992 by default), so that the first datagram to
# a new peer survives resolution whole, even as 30 fragments.
RESOLVE_QUEUE_BYTES = 212992
RESOLVE_QUEUE_FRAMES = 1000
TXQUEUELEN = 1000  # frames the qdisc holds per TX queue (ip link: qlen 1000, as ipoib's ib0)


class FrameQueue:
    """A FIFO of frames bounded in octets and in count; when one more does not fit, the oldest
    go (as the kernel's neighbour queue does), and ``offer`` says how many."""

    __slots__ = ("q", "octets")

    def __init__(self):
        self.q: deque = deque()
        self.octets = 0

    def offer(self, item, size: int) -> int:
        evicted = 0
        while self.q and (self.octets + size > RESOLVE_QUEUE_BYTES or len(self.q) >= RESOLVE_QUEUE_FRAMES):
            self.octets -= self.q.popleft()[0]
            evicted += 1
        self.q.append((size, item))
        self.octets += size
        return evicted

    def popleft(self):
        size, item = self.q.popleft()
        self.octets -= size
        return item

    def clear(self) -> None:
        self.q.clear()
        self.octets = 0

    def __len__(self) -> int:
        return len(self.q)

    def __bool__(self) -> bool:
        return bool(self.q)


class Qdisc:
    """A backlog per TX queue, ``limit`` frames each (``ip link set ib0 txqueuelen N``; 0: a refused
    frame is dropped). Frames for one queue leave in order; ``woken`` are the queues whose backlog
    may go on the next pass."""

    __slots__ = ("backlog", "length", "limit", "woken")

    def __init__(self, limit: int = TXQUEUELEN):
        self.backlog: dict[int, deque] = {}
        self.length = 0
        self.limit = limit
        self.woken: set = set()

    def holds(self, q: int) -> bool:
        return bool(self.backlog.get(q))

    def hold(self, q: int, item) -> bool:
        """Keep ``item`` for queue ``q``; False when its backlog is full."""
        b = self.backlog.get(q)
        if b is None:
            b = self.backlog[q] = deque()
        if len(b) >= self.limit:
            return False
        b.append(item)
        self.length += 1
        return True

    def wake(self, queues) -> bool:
        """Mark the queues among ``queues`` that hold frames; True if any."""
        new = [q for q in queues if self.backlog.get(q)]
        self.woken.update(new)
        return bool(new)

    def take_woken(self) -> list:
        woken, self.woken = self.woken, set()
        return sorted(woken)

    def head(self, q: int):
        b = self.backlog.get(q)
        return b[0] if b else None

    def pop(self, q: int) -> None:
        self.backlog[q].popleft()
        self.length -= 1

    def reset(self) -> list:
        """Empty every backlog (the device went down); what was held."""
        items = [item for b in self.backlog.values() for item in b]
        self.backlog.clear()
        self.length = 0
        self.woken.clear()
        return items
