"""An in-process fabric without sockets: the devices of a topology wired directly to each other.

This is the sans-IO harness: the same device objects the device hosts run, driven by a plain queue
instead of ZeroMQ, with time as an explicit input. Tests of the SMA, forwarding, DR routing and the
SM use it to be fast and deterministic; the real fabric (``fabric.host``) moves the same octets over
ZeroMQ links between processes. Like a device host, LoopNet is the only one that empties a
device's ``outbox``, and link training is :mod:`fabric.devices.training`'s, as there.
"""

from __future__ import annotations

from collections import deque

from .devices import HCA, cable, make_device, training
from .devices.events import apply_events
from .wire.burst import KIND_DATA, LEN


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
        for name, dev in self.devices.items():
            self._controls(name, training.start(dev))
        self.run()

    def set_link(self, name: str, port: int, up: bool) -> None:
        """Pull (or plug back) the cable at ``name``:``port``; the far end sees it too."""
        dev = self.devices[name]
        self._controls(name, training.set_admin(dev, port, up, self.now))
        self._drain(name, dev)
        self._handle_events(name)
        self.run()

    def _controls(self, name, controls) -> None:
        for port, kind in controls:
            self._control(name, port, kind)

    def _control(self, name, port, kind):
        peer = self.peers.get((name, port))
        if peer is not None:
            self.queue.append((peer[0], peer[1], kind, None))

    # -- packets -------------------------------------------------------------------------------

    def _drain(self, name: str, dev) -> None:
        """Put what the device sent on its cables."""
        if dev.outbox:
            for port, pkt in dev.take_outbox():
                self._emit_one(name, port, pkt)

    def _emit_one(self, name: str, port: int, pkt: bytes) -> None:
        peer = self.peers.get((name, port))
        if self.capture is not None:
            self.capture(name, port, pkt)
        if peer is not None:  # nothing cabled: the packet is lost on the floor
            self.queue.append((peer[0], peer[1], KIND_DATA, pkt))

    def send_out(self, name: str) -> None:
        """Put what ``name`` queued in its outbox (what a test made it send) on its cables, and act
        on the events it recorded, without running the fabric: a test can interleave its own
        traffic (``run(max_steps=N)``)."""
        self._drain(name, self.devices[name])
        self._handle_events(name)

    def inject(self, name: str, raw=()) -> None:
        """Put ``raw`` ((port, octets) pairs: anything at all) on ``name``'s cables, then what the
        device queued in its outbox meanwhile (what a test made it send), and run the fabric until
        quiet. Events the device recorded (an SMP its own SMA answered locally) are acted on, as
        the host does."""
        for port, pkt in raw:
            self._emit_one(name, port, pkt)
        self.send_out(name)
        self._service(name, self.devices[name])
        self.run()

    def _handle_events(self, name: str) -> None:
        dev = self.devices[name]
        if dev.events:
            apply_events(dev, self.now, control=lambda port, kind: self._control(name, port, kind),
                         observe=lambda kind, port, detail: self.on_event(name, kind, port, detail))
            self._drain(name, dev)

    def on_event(self, name, kind, port, detail) -> None:
        """Hook for tests and drivers (ClientReregister, LID change, ...)."""

    def run(self, max_steps: int = 1_000_000) -> int:
        """Deliver queued packets until the fabric is quiet; returns how many were delivered."""
        steps = 0
        while self.queue and steps < max_steps:
            name, port, kind, pkt = self.queue.popleft()
            dev = self.devices[name]
            if kind != KIND_DATA:
                self._controls(name, training.on_control(dev, port, kind, self.now))
            elif dev.kind == "hca":  # a burst of one, so that a compiled receive path sees it
                dev.receive_burst(port, LEN.pack(len(pkt)) + pkt, 0, 1, self.now)
                self.delivered += 1
            else:
                dev.receive(port, pkt, self.now)
                self.delivered += 1
            self._drain(name, dev)
            self._handle_events(name)
            self._service(name, dev)
            steps += 1
        return steps

    def _service(self, name: str, dev) -> None:
        """Software on the node (IPoIB's NAPI polls, queued sends) that is due right now."""
        if dev.agents:
            d = dev.next_deadline()
            if d is not None and d <= self.now:
                dev.tick(self.now)
                self._drain(name, dev)
                self._handle_events(name)

    def advance(self, seconds: float) -> None:
        """Move time forward and run device timers (trap resends)."""
        self.now += seconds
        for name, dev in self.devices.items():
            dev.tick(self.now)
            self._drain(name, dev)
            self._handle_events(name)
        self.run()
