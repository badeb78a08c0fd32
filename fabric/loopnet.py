"""An in-process fabric without sockets: the devices of a topology wired directly to each other.

This is the sans-IO harness: the same device objects the device hosts run, driven by a plain queue
instead of ZeroMQ, with time as an explicit input. Tests of the SMA, forwarding, DR routing and the
SM use it to be fast and deterministic; the real fabric (``fabric.host``) moves the same octets over
ZeroMQ links between processes.
"""

from __future__ import annotations

from collections import deque

from .devices import HCA, cable, make_device
from .devices.events import apply_events
from .link import BURST_HDR, KIND_DOWN, KIND_HELLO, KIND_HELLO_ACK, LEN, decode_burst_packets


class LoopNet:
    def __init__(self, topology, *, capture=None):
        self.topology = topology
        self.devices = {name: make_device(spec) for name, spec in topology.nodes.items()}
        self.peers: dict[tuple, tuple] = {}
        for link in topology.links:
            self.peers[(link.a, link.a_port)] = (link.b, link.b_port)
            self.peers[(link.b, link.b_port)] = (link.a, link.a_port)
            cable(self.devices[link.a], link.a_port, self.devices[link.b], link.b_port, link)
        self.now = 0.0
        self.queue: deque = deque()  # (device, port, kind, packet)
        self.capture = capture  # callable(device, port, packet) for every packet put on a link
        self.delivered = 0
        self.links_down: set = set()

    def __getitem__(self, name):
        return self.devices[name]

    def hcas(self) -> list[HCA]:
        return [d for d in self.devices.values() if d.kind == "hca"]

    # -- links ---------------------------------------------------------------------------------

    def train_all(self) -> None:
        """Bring every cabled link to LinkUp (ports go to Init), as the hosts' training does."""
        for (name, port) in self.peers:
            self._control(name, port, KIND_HELLO)
        self.run()

    def set_link(self, name: str, port: int, up: bool) -> None:
        """Pull (or plug back) the cable at ``name``:``port``; the far end sees it too."""
        dev = self.devices[name]
        dev.ports[port].admin_up = up
        if up:
            self._control(name, port, KIND_HELLO)
        else:
            self._emit(name, dev.set_link(port, False, self.now))
            self._control(name, port, KIND_DOWN)
        self._handle_events(name)
        self.run()

    def _control(self, name, port, kind):
        peer = self.peers.get((name, port))
        if peer is not None:
            self.queue.append((peer[0], peer[1], kind, None))

    # -- packets -------------------------------------------------------------------------------

    def _emit(self, name: str, txs) -> None:
        for item in txs:
            if len(item) == 4:  # a burst segment built by a compiled send path
                for pkt in decode_burst_packets(item[3], BURST_HDR.size, item[2]):
                    self._emit_one(name, item[1], pkt)
            else:
                self._emit_one(name, *item)

    def _emit_one(self, name: str, port: int, pkt: bytes) -> None:
        peer = self.peers.get((name, port))
        if self.capture is not None:
            self.capture(name, port, pkt)
        if peer is not None:  # nothing cabled: the packet is lost on the floor
            self.queue.append((peer[0], peer[1], 0, pkt))

    def inject(self, name: str, txs) -> None:
        """Packets a device's host logic produced (e.g. post_send results). Events the device
        recorded meanwhile (an SMP its own SMA answered locally) are acted on, as the host does."""
        self._emit(name, txs)
        self._handle_events(name)
        self._service(name, self.devices[name])
        self.run()

    def _handle_events(self, name: str) -> None:
        dev = self.devices[name]
        if dev.events:
            apply_events(dev, self.now, emit=lambda txs: self._emit(name, txs),
                         control=lambda port, kind: self._control(name, port, kind),
                         observe=lambda kind, port, detail: self.on_event(name, kind, port, detail))

    def on_event(self, name, kind, port, detail) -> None:
        """Hook for tests and drivers (ClientReregister, LID change, ...)."""

    def run(self, max_steps: int = 1_000_000) -> int:
        """Deliver queued packets until the fabric is quiet; returns how many were delivered."""
        steps = 0
        while self.queue and steps < max_steps:
            name, port, kind, pkt = self.queue.popleft()
            dev = self.devices[name]
            p = dev.ports[port]
            if kind == KIND_HELLO:
                if p.admin_up:
                    was_up = p.link_up
                    self._emit(name, dev.set_link(port, True, self.now))
                    if not was_up:
                        self._control(name, port, KIND_HELLO_ACK)
            elif kind == KIND_HELLO_ACK:
                if p.admin_up:
                    self._emit(name, dev.set_link(port, True, self.now))
            elif kind == KIND_DOWN:
                self._emit(name, dev.set_link(port, False, self.now))
            elif dev.kind == "hca":  # a burst of one, so that a compiled receive path sees it
                self._emit(name, dev.receive_burst(port, LEN.pack(len(pkt)) + pkt, 0, 1, self.now)[1])
                self.delivered += 1
            else:
                self._emit(name, dev.receive(port, pkt, self.now))
                self.delivered += 1
            self._handle_events(name)
            self._service(name, dev)
            steps += 1
        return steps

    def _service(self, name: str, dev) -> None:
        """Software on the node (IPoIB's NAPI polls, queued sends) that is due right now."""
        if dev.outbox:
            out, dev.outbox[:] = list(dev.outbox), []
            self._emit(name, out)
        if dev.agents:
            d = dev.next_deadline()
            if d is not None and d <= self.now:
                self._emit(name, dev.tick(self.now))
                self._handle_events(name)

    def advance(self, seconds: float) -> None:
        """Move time forward and run device timers (trap resends)."""
        self.now += seconds
        for name, dev in self.devices.items():
            self._emit(name, dev.tick(self.now))
            self._handle_events(name)
        self.run()
