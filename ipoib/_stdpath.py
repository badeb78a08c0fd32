"""Pure-Python data-path core (backend ``std``): the reference behaviour of ``_fastpath``.

Both modules export the same names; :mod:`ipoib` picks one at import. Keep them in step: the test
suite runs once per backend, and the differential tests compare them.
"""

from __future__ import annotations

from collections import deque

__all__ = ["BACKEND", "PacketRing", "Provider", "UdpSink"]

BACKEND = "std"


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


class UdpSink:
    """A receive hook at the driver, like an XDP program that counts and drops: IPoIB frames that
    carry a whole UDP datagram to ``port`` are counted and consumed before the IP stack; anything
    else passes on. The providers run it on every frame they would deliver (``ctx.rx_sink``): the
    standard one in Python, the fast one in C on the ring slot itself."""

    def __init__(self, port: int, echo: bool = False):
        if not 0 < int(port) < 65536:
            raise ValueError(f"UDP port must be 1 to 65535, not {port!r}")
        self.port = int(port)
        self.echo = bool(echo)  # reflect each one to its sender instead (XDP_TX), for latency
        self.packets = 0
        self.bytes = 0
        self.first = None
        self.last = None
        self._seen = 0

    def consume(self, frame, off: int = 0) -> bool:
        """Count ``frame[off:]`` (an IPoIB frame) if it is ours; True when consumed."""
        if len(frame) - off < 4 + 28 or frame[off] != 0x08 or frame[off + 1] != 0x00:
            return False
        ip = off + 4
        ihl = (frame[ip] & 0xF) * 4
        if (frame[ip] >> 4 != 4 or frame[ip + 9] != 17 or (frame[ip + 6] & 0x3F) or frame[ip + 7]
                or len(frame) - ip < ihl + 8):
            return False
        u = ip + ihl
        if (frame[u + 2] << 8 | frame[u + 3]) != self.port:
            return False
        ulen = frame[u + 4] << 8 | frame[u + 5]
        if not 8 <= ulen <= len(frame) - u:
            return False  # a UDP length that does not fit: not a whole datagram, the stack drops it
        self.packets += 1
        self.bytes += ulen - 8
        return True

    def reflect(self, frame, off: int = 0) -> bytes:
        """The frame that answers ``frame[off:]``: IPv4 addresses and UDP ports swapped. Both
        checksums stay valid (a sum does not depend on the order of its terms)."""
        f = bytearray(frame[off:])
        ihl = (f[4] & 0xF) * 4 if len(f) > 4 else 0
        if ihl < 20 or len(f) < 4 + ihl + 8:
            raise ValueError("not an IPoIB frame with an IPv4 header and a UDP header")
        f[16:20], f[20:24] = f[20:24], f[16:20]
        u = 4 + ihl
        f[u:u + 2], f[u + 2:u + 4] = f[u + 2:u + 4], f[u:u + 2]
        return bytes(f)

    def mark(self, now: float) -> None:
        """After a poll: when the first and the last counted datagram arrived."""
        if self.packets != self._seen:
            self._seen = self.packets
            if self.first is None:
                self.first = now
            self.last = now

    def result(self) -> dict:
        return {"packets": self.packets, "bytes": self.bytes,
                "seconds": (self.last - self.first) if self.first is not None else 0.0}
