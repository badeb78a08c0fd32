"""The client end of a live capture (``ibfab capture``): which link ends to tap, the sessions on
the device hosts, and the pcapng stream their packets become.

The client binds a ZeroMQ PULL socket in the fabric's run directory and asks every host that runs
a tapped link end to push it the bursts leaving those ends (``capture_open``,
:mod:`fabric.host.capture`). Polling each session renews its lease; a client that dies leaves
its sessions to end by themselves. At the end, ``capture_close`` tells how many messages each host
sent, so that the client reads exactly what is still on its way before it closes the file.

A link end is ``(device, port)``, and the pcapng interface that carries what it transmits is
named ``device/port``: a cable is two interfaces, one per direction.
"""

from __future__ import annotations

import os
import threading
import time

import msgpack
import zmq

from .wire.burst import LEN

RCVHWM = 1000  # bursts the client's socket holds before the hosts' own queues fill
DRAIN_S = 5.0  # how long the end waits for what the hosts said they sent


def parse_spec(text: str) -> tuple[str, int | None]:
    """``DEVICE`` or ``DEVICE:PORT`` (a GUID or LID may name the device); a colon not followed by
    a port number is part of the name."""
    dev, sep, port = text.rpartition(":")
    if sep and dev and port.isdigit():
        return dev, int(port)
    if not text or text.endswith(":"):
        raise ValueError(f"-i {text!r}: expected DEVICE or DEVICE:PORT")
    return text, None


def link_ends(topology, selected) -> list[tuple[str, int]] | None:
    """The link ends to tap for ``selected`` (``[(device, port or None)]``; empty: every end):
    each selected port's own end and the far end of its cable, so that both directions of the
    cable are seen, as ``tcpdump -i`` sees what an interface sends and receives."""
    if not selected:
        return None
    ends: dict = {}
    for dev, port in selected:
        cabled = topology.connected_ports(dev)
        if port is None:
            if not cabled:
                raise ValueError(f"{dev} has no cabled port")
            ports = sorted(cabled)
        elif port not in cabled:
            node = topology.nodes[dev]
            if port > node.num_ports or port == 0:  # a switch's port 0 is its management port: no cable
                raise ValueError(f"{dev} has no port {port}")
            raise ValueError(f"{dev} port {port} has no cable")
        else:
            ports = [port]
        for p in ports:
            ends[(dev, p)] = None
            ends[cabled[p]] = None
    return list(ends)


def describe(topology) -> dict:
    """Every link end's interface name and what it says of the cable (``if_description``)."""
    out = {}
    for link in topology.links:
        for a, ap, b, bp in ((link.a, link.a_port, link.b, link.b_port), (link.b, link.b_port, link.a, link.a_port)):
            out[f"{a}/{ap}"] = f"{a} port {ap} -> {b} port {bp} ({link.width} {link.speed})"
    return out


def local_only(info) -> None:
    """A live capture streams to an ipc:// socket of this machine, which the hosts of a fabric
    across machines (``--machines``) cannot reach: a one-line error for those."""
    for host in info.hosts:
        if host.get("machine") is not None:
            machine = info.machines[host["machine"]]["name"]
            raise ValueError(f"live capture streams to an ipc:// socket of this machine, which the device hosts of "
                             f"a fabric across machines (here {machine!r}) cannot reach")


def split_burst(body):
    """The packets of a burst body, each behind its 16-bit length."""
    raw = bytes(body)
    off, n = 0, len(raw)
    while off + 2 <= n:
        (ln,) = LEN.unpack_from(raw, off)
        yield raw[off + 2:off + 2 + ln]
        off += 2 + ln


class LiveCapture:
    """Sessions on the hosts of a running fabric, streaming into ``writer`` (a
    :class:`fabric.pcapng.PcapngWriter`). ``ends``: the link ends to tap, None for all."""

    def __init__(self, fabric_client, writer, ends=None, *, count: int | None = None, log=None):
        self.fc, self.info = fabric_client, fabric_client.info
        self.writer, self.ends, self.limit = writer, ends, count
        self.log = log or (lambda text: None)
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.RCVHWM, RCVHWM)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.path = os.path.join(self.info.run_dir, f"cap-{os.getpid()}-{os.urandom(3).hex()}")
        self.endpoint = f"ipc://{self.path}"
        self.sock.bind(self.endpoint)
        self.sessions: dict = {}  # host index -> session id
        self.received: dict = {}  # host index -> messages read
        self.dropped: dict = {}  # "device/port" -> packets the hosts dropped
        self.lease = 10.0
        self.renewed = 0.0
        self.closed = False

    @property
    def done(self) -> bool:
        return self.limit is not None and self.writer.count >= self.limit

    def open(self) -> None:
        """A session on every live host that runs a tapped link end."""
        from . import launcher

        local_only(self.info)

        mine = None if self.ends is None else {d for d, _ in self.ends}
        for i, host in enumerate(self.info.hosts):
            if mine is not None and not mine & set(host["devices"]):
                continue
            if launcher.host_dead(self.info, i):
                self.log(f"device host {i} is dead: its links are not captured")
                continue
            r = self.fc.clients[i].call("capture_open", endpoint=self.endpoint,
                                        ends=None if self.ends is None else [list(e) for e in self.ends])
            self.sessions[i] = r["session"]
            self.received[i] = 0
            self.lease = min(self.lease, float(r["lease"]))
        self.renewed = time.monotonic()

    def renew(self) -> None:
        """Poll every session (its lease) if a third of the lease has passed since the last time."""
        from .rpc import RpcError

        from . import launcher

        now = time.monotonic()
        if now - self.renewed < self.lease / 3:
            return
        self.renewed = now
        if self.sessions and not os.path.isdir(self.info.run_dir):
            self.log(f"fabric {self.info.name!r} was stopped")
            self.sessions.clear()
        for i, sid in list(self.sessions.items()):
            if launcher.host_dead(self.info, i):  # say so now, not after an RPC timeout
                self.log(f"device host {i} died: its links are no longer captured")
                del self.sessions[i]
                continue
            try:
                self.fc.clients[i].call("capture_poll", session=sid)
            except RpcError as exc:
                self.log(f"device host {i}: {exc}; its links are no longer captured")
                del self.sessions[i]

    def pump(self, timeout: float) -> int:
        """Write what has arrived, waiting up to ``timeout`` seconds for the first of it; the
        number of packets written. Flushes, so a pipe reader sees them now."""
        if not self.sock.poll(int(timeout * 1000)):
            return 0
        before = self.writer.count
        for _ in range(RCVHWM):
            try:
                head, body = self.sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            self._take(head, body)
            if self.done:
                break
        self.writer.flush()
        return self.writer.count - before

    def _take(self, head: bytes, body: bytes) -> None:
        host, dev, port, ts, _count = msgpack.unpackb(head)
        self.received[host] = self.received.get(host, 0) + 1
        name = f"{dev}/{port}"
        for pkt in split_burst(body):
            if self.done:
                return
            self.writer.write(name, ts, pkt)

    def close(self) -> None:
        """End every session, read what the hosts sent before they ended, and write each
        interface's statistics (what it lost included). Safe to call twice."""
        from .rpc import RpcError

        if self.closed:
            return
        self.closed = True

        expected = {}
        for i, sid in list(self.sessions.items()):
            try:
                st = self.fc.clients[i].call("capture_close", session=sid)
            except RpcError as exc:
                self.log(f"device host {i}: {exc}")
                continue
            expected[i] = st["sent"]
            for dev, port, n in st["drops"]:
                self.dropped[f"{dev}/{port}"] = self.dropped.get(f"{dev}/{port}", 0) + n
        self.sessions.clear()
        deadline = time.monotonic() + DRAIN_S
        try:
            while not self.done and any(self.received.get(i, 0) < n for i, n in expected.items()):
                left = deadline - time.monotonic()
                if left <= 0:
                    self.log("some packets the device hosts sent did not arrive in time")
                    break
                self.pump(min(left, 0.2))
            self.writer.statistics(time.time_ns(), self.dropped)
            self.writer.flush()
        finally:  # the reader of a pipe may be gone: the socket and its file go all the same
            self.sock.close(0)
            try:
                os.unlink(self.path)
            except OSError:
                pass

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())


class CaptureThread(threading.Thread):
    """A live capture of the fabric ``name`` pumped by a thread of its own, for Python callers
    (``Fabric.capture`` with a ``.pcapng`` path): its own RPC clients, since sockets are not
    shared between threads. ``start()`` returns once the hosts tap; ``finish()`` ends it."""

    def __init__(self, name: str, writer, ends=None):
        super().__init__(name=f"capture-{name}", daemon=True)
        self.fabric, self.writer, self.ends = name, writer, ends
        self.ready, self.stopping = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.capture: LiveCapture | None = None

    def run(self) -> None:
        from . import launcher

        try:
            with launcher.FabricClient(self.fabric) as fc:
                cap = self.capture = LiveCapture(fc, self.writer, self.ends)
                try:
                    cap.open()
                    self.ready.set()
                    while not self.stopping.is_set():
                        cap.pump(0.05)
                        cap.renew()
                finally:
                    cap.close()
        except Exception as exc:  # handed to the caller by start() or finish()
            self.error = exc
        finally:
            self.ready.set()

    def start(self) -> None:
        super().start()
        self.ready.wait()
        if self.error is not None:
            self.join()
            raise self.error

    def finish(self) -> None:
        self.stopping.set()
        self.join()
        if self.error is not None:
            raise self.error
