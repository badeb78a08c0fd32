"""The device host's event loop: its devices' links (ZeroMQ sockets and in-memory queues), link
training, timers, and the control socket it serves (:mod:`fabric.host.ops` has the operations).

The loop blocks in one epoll (TUN devices, and the ZeroMQ sockets' notification descriptors) with
the next timer as its timeout, so an idle fabric uses no CPU (with the compiled backend the wait is
``_localfast.wait``, which serves readable TUN queues itself). After every call into a device (a
burst, a timer, an RPC) the host empties the device's ``outbox`` into the next burst of each
egress link: it is the only one that does.
"""

from __future__ import annotations

import select
import sys
import time
import traceback
from collections import deque

import msgpack
import zmq

from .. import plugins, zsock
from ..devices import cable, make_device, training
from ..devices.events import apply_events
from ..runinfo import RunInfo
from ..wire.burst import (BURST_HDR, BURST_HEADROOM, BURST_VERSION, KIND_DATA, KIND_HELLO, LEN, Segment,
                          burst_device, decode_burst_header, encode_control)
from ..wire.compiled import wirefast
from ..wire.errors import ParseError
from .capture import CaptureOps
from .ops import DEFERRED, HostOps, RpcError, one_line, user_message
from .zap import Gate

RX_BUDGET = 256  # bursts read from the ingress socket before looking at the others
ZERO_COPY_MIN = 65536  # below this a copy is cheaper than zero-copy bookkeeping (DESIGN.md 3)
LOCAL_BUDGET = 512  # in-process bursts delivered per loop iteration
FLUSH_AT = 4096  # packets in one outgoing burst at most (the count field is 16 bits)
SNDHWM = 1000  # bursts queued on the in-process links before they drop (UD: overflow drops, never blocks)
PEER_HWM = 4000  # bursts queued toward one peer host (all the links to it) before they drop
_EMPTY = bytearray()

# run_local in C (a switch's hop without Python per burst) comes with the compiled wire code and
# follows its backend choice (fabric.wire.compiled): the std backend runs the Python below
_localfast = None
if wirefast is not None:
    try:
        from . import _localfast
    except ImportError as exc:  # pragma: no cover - depends on the build
        raise ImportError("fabric._wirefast is built but fabric.host._localfast is not (run `make install`)") from exc

# The host's fields that _localfast reads on every burst and every wake (its HostCore keeps them in
# a C struct; fabric/host/_localfast.pyx declares them, a test compares): with the std backend, a
# base with none, the same attributes in the instance's dict
HOST_CORE_FIELDS = ("devices", "readers", "txq", "links", "local", "_stale", "zcheck", "local_q", "pending",
                    "capture", "running")
if _localfast is not None:
    HostCore = _localfast.HostCore
else:
    class HostCore:
        __slots__ = ()


def log_error(text: str) -> None:
    print(f"fabric.host: {text}", file=sys.stderr, flush=True)


class DeviceHost(HostOps, CaptureOps, HostCore):
    def __init__(self, run_dir: str, index: int, topology=None):
        self.info = RunInfo.load(run_dir)
        self.index = index
        # ``topology``: the fabric's, already read (by the process that forked this host)
        self.topology = topology if topology is not None else self.info.load_topology()
        self.names = self.info.hosts[index]["devices"]
        # every burst carries the fabric's token, and one without it is dropped (fabric.wire.burst)
        self.token = bytes.fromhex(self.info.data.get("link_token") or "00" * 8)
        self.devices = {n: make_device(self.topology.nodes[n]) for n in self.names}
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, 65536)
        self.links: dict = {}  # (name, port) -> (push socket of the peer's host, peer port, peer device index)
        self.txq: dict = {}  # (name, port) -> [packet count, [framed parts], first part has headroom]
        self.pending: list = []  # deferred RPC replies: (deadline, check, envelope, default, on_timeout)
        self.running = True
        self.sm = None  # SmAgent when the subnet manager runs on a device of this host
        self.extra_ops: dict = {}  # RPC operations contributed by the node software
        self.samplers: dict = {}  # name -> fn(now): sections the node software adds to ``ibfab top``
        self._specs: dict = {}  # op name -> OpSpec, made at its first call
        self.readers: dict = {}  # fd -> (device name, fn(now)): file descriptors node software watches
        self.closers: list = []  # what node software must undo when the host stops (namespaces, ...)
        self.sim_servers: dict = {}  # device -> SimServer: ibsim-protocol endpoints (fabric.simproto)
        self.capture = None  # fabric.host.capture.Taps while anything captures
        self.started = time.monotonic()  # the loop's clock: uptime is ``now - started``
        self.bursts_in = 0
        self.bursts_out = 0
        self.burst_errors = 0
        self.control_dropped = 0  # link-training frames the queue to a peer host had no room for
        # each device's next timer, asked again only after something called into the device: the
        # loop's cost per pass follows what happened, not how many devices the host runs
        self._due: dict = {}  # name -> deadline, for the devices that have one
        self._stale: set = set(self.names)  # devices whose deadline may have moved
        # One ingress socket for all the host's devices and one PUSH socket per peer host: a
        # zmq_poll costs about 0.6 us per socket it watches, so a socket per device (thousands)
        # made every pass of the loop cost as much as the work it did. A burst names its device.
        order = self.info.device_order()
        self.by_index = {i: n for i, n in enumerate(order) if n in self.devices}
        index_of = {n: i for i, n in enumerate(order)}
        host_of = {d: h for h, hinfo in enumerate(self.info.hosts) for d in hinfo["devices"]}
        # a fabric on several machines: CURVE on every socket, and only the fabric's key gets in
        self.curve = self.info.curve_keys() if self.info.remote(index) else None
        self.gate = Gate(self.ctx, self.curve) if self.curve is not None else None
        self.ingress_sock = self.ctx.socket(zmq.PULL)
        self.ingress_sock.setsockopt(zmq.RCVHWM, PEER_HWM)
        self._serve(self.ingress_sock, self.info.ingress(index))
        self.peers: dict = {}  # peer host index -> PUSH socket
        self.peer_links: dict = {}  # peer host index -> [(name, port)] of our links to it
        self.monitors: dict = {}  # monitor socket -> the peer host whose connection it watches
        self.peer_lost = 0  # links whose far end's process went away
        self.local: dict = {}  # (name, port) -> (peer name, peer port) when both ends live here
        self.local_q: deque = deque()  # (device, burst) delivered in memory within this process
        for link in self.topology.links:
            for (a, ap, b, bp) in ((link.a, link.a_port, link.b, link.b_port), (link.b, link.b_port, link.a, link.a_port)):
                if a in self.devices and b in self.devices:
                    # Both ends in this process: the cable is an in-memory queue. ZeroMQ links
                    # connect processes; a socket round trip to ourselves would only burn CPU.
                    self.local[(a, ap)] = (b, bp)
                    cable(self.devices[a], ap, None, 0, link)
                elif a in self.devices:
                    h = host_of[b]
                    s = self.peers.get(h)
                    if s is None:
                        s = self.peers[h] = self.ctx.socket(zmq.PUSH)
                        s.setsockopt(zmq.SNDHWM, PEER_HWM)
                        s.setsockopt(zmq.LINGER, 0)
                        # the peer's process going away shows as a disconnect on this socket
                        mon = s.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
                        self.monitors[mon] = h
                        if self.curve is not None:
                            self.curve.client(s)
                        zsock.connect(s, self.info.ingress(h))
                    self.peer_links.setdefault(h, []).append((a, ap))
                    self.links[(a, ap)] = (s, bp, index_of[b])
                    cable(self.devices[a], ap, None, 0, link)
        self.control = self.ctx.socket(zmq.ROUTER)
        self._serve(self.control, self.info.control(index))
        # One epoll for the TUN devices and the ZeroMQ sockets' notification descriptors. zmq_poll
        # asks every socket for its events (a syscall each) on every pass, even when what woke the
        # loop was a TUN device; here a socket is asked only when its descriptor fired or the loop
        # used it (ZMQ_FD is edge-like: the loop reads until EAGAIN, and asks again after a send).
        self.epoll = select.epoll()
        self.zsocks: dict = {}  # ZMQ_FD -> socket
        self.zhandlers: dict = {}  # socket -> fn(now) that reads it until EAGAIN (or its budget)
        self.zcheck: set = set()  # sockets whose events the loop must ask for on this pass
        self._watch_zmq(self.ingress_sock, self.on_ingress)
        self._watch_zmq(self.control, self.on_control)
        for mon, h in self.monitors.items():
            self._watch_zmq(mon, lambda now, mon=mon, h=h: self.on_monitor(mon, h, now))
        if self.gate is not None:
            self._watch_zmq(self.gate.handler, lambda now: self.gate.on_request())
            for m in self.gate.monitors:
                self._watch_zmq(m, lambda now, m=m: self.gate.on_monitor(m))
        software = plugins.node_software(self.info.data.get("node_software"), self.info.data.get("node_software_ref"))
        if software is not None:
            software.attach(self)  # found by name: the fabric itself imports no node software

    def _watch_zmq(self, sock, fn) -> None:
        fd = sock.getsockopt(zmq.FD)
        self.zsocks[fd] = sock
        self.zhandlers[sock] = fn
        self.epoll.register(fd, select.EPOLLIN)
        self.zcheck.add(sock)  # what arrived before the loop first waits

    def _serve(self, sock, endpoint: str) -> None:
        if endpoint.startswith("tcp://"):
            if self.gate is None:  # never plaintext over a network (fabric.curve)
                raise PermissionError(f"{endpoint}: a tcp:// endpoint without the fabric's CURVE keys")
            self.curve.server(sock)
            self.gate.watch(sock)
        sock.bind(endpoint)

    @property
    def node_config(self) -> dict:
        """The node software's settings, as the launcher recorded them."""
        return self.info.data.get("node_config") or {}

    def add_op(self, name: str, fn) -> None:
        """An RPC operation of the node software: ``fn(env, now, **args)``."""
        self.extra_ops[name] = fn

    def add_sampler(self, name: str, fn) -> None:
        """A section of ``ibfab top``: ``fn(now)`` gives ``{"title", "columns": [[key, heading,
        kind], ...], "rows": {row name: {key: value}}}``, where a ``rate`` column is a counter that
        ``top`` shows per second and a ``value`` column is shown as it is (a ring's fill). It runs
        inside the ``top`` operation, once per refresh."""
        self.samplers[name] = fn

    def add_reader(self, fd: int, device: str, fn) -> None:
        """Call ``fn(now)`` whenever ``fd`` is readable (a TUN device of the node software on
        ``device``); the device's software runs and its outbox is drained right after, as after
        a burst. ``fn`` returns True to say it called no software of the device (a driver's data
        path in C that only posted sends): its timers stand, and only the outbox is drained."""
        self.readers[fd] = (device, fn)
        try:
            self.epoll.register(fd, select.EPOLLIN)
        except FileExistsError:  # the number of a descriptor closed without remove_reader, reused
            self.epoll.modify(fd, select.EPOLLIN)

    def remove_reader(self, fd: int) -> None:
        if self.readers.pop(fd, None) is not None:
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):  # already closed: the kernel dropped it from the set
                pass

    def add_closer(self, fn) -> None:
        """``fn()`` runs when the host stops (also on SIGTERM), before its sockets close."""
        self.closers.append(fn)

    # -- link layer ----------------------------------------------------------------------------

    def send_control(self, name: str, port: int, kind: int) -> None:
        peer = self.local.get((name, port))
        if peer is not None:
            self.local_q.append((peer[0], -1, encode_control(peer[1], kind, self.token), 0))
            return
        link = self.links.get((name, port))
        if link is None:
            return
        try:
            link[0].send(encode_control(link[1], kind, self.token, link[2]), zmq.NOBLOCK)
        except zmq.Again:
            # the queue to the peer's host is full: counted; a HELLO is retried by the peer's own
            self.control_dropped += 1

    def _controls(self, name: str, controls) -> None:
        for port, kind in controls:
            self.send_control(name, port, kind)

    def drain(self, name: str, dev) -> None:
        """Move what the device sent into the next bursts of each egress link, in order. A run of
        packets becomes one burst of length-prefixed parts; a Segment, already framed with room
        for the header, is a burst of its own, sent in place: joining it to its neighbours would
        copy every packet in it once more."""
        if not dev.outbox:
            return
        out, dev.outbox[:] = list(dev.outbox), []
        txq = self.txq
        for item in out:
            if type(item) is Segment:
                key = (name, item.port)
                chunks = txq.get(key)
                if chunks is None:
                    chunks = txq[key] = []
                chunks.append([item.count, item.buf])
                continue
            port, pkt = item
            key = (name, port)
            chunks = txq.get(key)
            if chunks is None:
                chunks = txq[key] = []
            if not chunks or chunks[-1][1] is not None:
                chunks.append([0, None, []])  # a burst of plain packets: [count, None, parts]
            q = chunks[-1]
            q[0] += 1
            q[2].append(LEN.pack(len(pkt)))
            q[2].append(pkt)
            if q[0] >= FLUSH_AT:
                self.flush()
                txq = self.txq

    def drain_all(self) -> None:
        for name, dev in self.devices.items():
            if dev.outbox:
                self.drain(name, dev)

    def flush(self) -> None:
        txq, self.txq = self.txq, {}
        for (name, port), chunks in txq.items():
            link = self.links.get((name, port))
            peer = self.local.get((name, port)) if link is None else None
            if link is None and peer is None:  # an uncabled port: lost, and counted
                dev = self.devices.get(name)
                if dev is not None and port in dev.ports:
                    dev.ports[port].counters.lost["uncabled"] += sum(c[0] for c in chunks)
                continue
            dest, dev_index = (link[1], link[2]) if link else (peer[1], 0)
            for chunk in chunks:
                count, buf = chunk[0], chunk[1]
                if buf is not None:  # a Segment: the header goes into its headroom
                    if link is not None:
                        buf[:BURST_HEADROOM] = BURST_HDR.pack(BURST_VERSION, KIND_DATA, dest, count, self.token,
                                                              dev_index)
                    msg = buf
                else:
                    hdr = BURST_HDR.pack(BURST_VERSION, KIND_DATA, dest, count, self.token, dev_index)
                    # in memory, a bytearray: a buffer the next device may forward in place
                    msg = _EMPTY.join([hdr, *chunk[2]]) if peer is not None else hdr + b"".join(chunk[2])
                if peer is not None:
                    if len(self.local_q) >= SNDHWM:
                        self._link_full(name, port, count)
                        continue
                    # in memory the burst goes with its port and count: no header to decode (the
                    # headroom stays, for a switch that forwards the buffer in place)
                    self.local_q.append((peer[0], peer[1], msg, count))
                else:
                    try:
                        link[0].send(msg, zmq.NOBLOCK, copy=len(msg) < ZERO_COPY_MIN)
                        self.bursts_out += 1
                    except zmq.Again:
                        self._link_full(name, port, count)
                        continue
                if self.capture is not None:  # what went on the cable: a burst its queue refused did not
                    self.capture(name, port, memoryview(msg)[BURST_HEADROOM:], count)

    def _link_full(self, name: str, port: int, count: int) -> None:
        dev = self.devices[name]
        dev.ports[port].counters.inc("port_xmit_discards", count)
        dev.ports[port].counters.lost["link_full"] += count
        dev.drops["link_queue_full"] += count

    def on_burst(self, name: str, data: bytes, now: float) -> None:
        dev = self.devices[name]
        try:
            kind, port, count = decode_burst_header(data, self.token)
        except ParseError as exc:
            self.burst_errors += 1
            dev.drops["foreign_burst" if exc.kind == "token" else "bad_burst"] += 1
            return
        if port not in dev.ports or port == 0 and dev.kind == "switch":
            dev.drops["burst_bad_port"] += 1
            return
        if kind == KIND_DATA:
            if _localfast is not None:  # a switch's hop and an HCA's receive in C, as run_local's
                return _localfast.data_burst(self, name, port, data, count, now, SNDHWM)
            return self.receive_data(name, port, data, BURST_HDR.size, count, now)
        try:
            self._controls(name, training.on_control(dev, port, kind, now))
        finally:
            self._stale.add(name)
            self.drain(name, dev)
        self.handle_events(name, now)

    def handle_events(self, name: str, now: float) -> None:
        dev = self.devices[name]
        if dev.events:
            apply_events(dev, now, control=lambda port, kind: self.send_control(name, port, kind))
            self.drain(name, dev)
        if dev.keeps_time():
            # an event can move a deadline of the node's software or of a trap it sent; a device
            # with neither has none (a switch whose SMA set a port Active: the common case in a
            # sweep, which then costs no pass of the loop)
            self._stale.add(name)

    def on_monitor(self, mon, host: int, now: float) -> None:
        """The process of a peer host went away (each port cabled to its devices loses its signal,
        as when the peer HCA loses power) or came back (a restarted host: train again)."""
        while True:
            try:
                event, _ = zsock.monitor_event(mon, zmq.NOBLOCK)
            except zmq.Again:
                break
            for name, port in self.peer_links.get(host, ()):
                dev = self.devices[name]
                self._stale.add(name)
                p = dev.ports[port]
                if event == zmq.EVENT_DISCONNECTED and p.link_up:
                    self.peer_lost += 1
                    dev.set_link(port, False, now)
                    self.drain(name, dev)
                    self.handle_events(name, now)
                elif event == zmq.EVENT_CONNECTED and p.admin_up and not p.link_up:
                    self.send_control(name, port, KIND_HELLO)

    def set_admin(self, name: str, port: int, up: bool, now: float) -> None:
        dev = self.devices[name]
        self._stale.add(name)
        self._controls(name, training.set_admin(dev, port, up, now))
        self.drain(name, dev)
        self.handle_events(name, now)

    # -- control socket ------------------------------------------------------------------------

    def reply(self, env: tuple, ok: bool, value, kind: str | None = None) -> None:
        frames, rid = env
        body = {"ok": True, "result": value, "id": rid} if ok else {"ok": False, "error": one_line(str(value)),
                                                                      "id": rid, "kind": kind}
        try:
            data = msgpack.packb(body, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:  # a result msgpack cannot carry
            log_error(f"reply to {rid!r} cannot be packed: {exc}")
            data = msgpack.packb({"ok": False, "error": "internal error: the result cannot be sent (see the host's log)",
                                  "id": rid, "kind": "internal"}, use_bin_type=True)
        self.control.send_multipart(frames + [data])
        self.zcheck.add(self.control)  # a send may have taken the notification of a request

    def on_control(self, now: float) -> None:
        while True:
            try:
                frames = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            env, body = (frames[:-1], None), frames[-1]
            op = None
            try:
                req = msgpack.unpackb(body, raw=False)
                if not isinstance(req, dict):
                    raise RpcError("request must be a map")
                rid = req.pop("id", None)
                env = (frames[:-1], rid if type(rid) in (int, str) or rid is None else None)
                op = req.get("op")
                if op not in self.READ_ONLY_OPS:
                    self._stale.update(self.devices)  # an operation may reach into any device
                result = self.rpc(env, req, now)
                if result is not DEFERRED:
                    self.reply(env, True, result)
            except (RpcError, ValueError, KeyError, TypeError, ParseError, OSError, msgpack.UnpackException) as exc:
                self.reply(env, False, user_message(exc), type(exc).__name__)
            except Exception as exc:  # never let one request kill the host: an error reply and a log line
                traceback.print_exc()
                self.reply(env, False, f"internal error in {op!r} ({type(exc).__name__}; the host's log has the "
                                       f"traceback)", "internal")
        self.drain_all()  # what the operations made devices send (rare: the cost per device is fine)

    # -- loop ----------------------------------------------------------------------------------

    def _deadlines(self) -> dict:
        """Every device's next deadline, asking again only those something called into since."""
        if self._stale:
            due, devices = self._due, self.devices
            for name in self._stale:
                dev = devices[name]
                d = dev.next_deadline() if dev.keeps_time() else None
                if d is None:
                    due.pop(name, None)
                else:
                    due[name] = d
            self._stale.clear()
        return self._due

    def next_timeout_ms(self, now: float):
        if self.local_q or self.zcheck:
            return 0
        due = self._deadlines()
        first = min(due.values()) if due else None
        if self.pending:
            p = min(p[0] for p in self.pending)
            first = p if first is None or p < first else first
        if first is None:
            return None
        wait = first - now
        # zmq polls in whole milliseconds: a deadline closer than that (an interrupt moderation
        # timer of a few microseconds) is waited for by polling without blocking, never by
        # sleeping a whole millisecond past it
        return 0 if wait < 0.001 else int(wait * 1000) + 1

    def run(self) -> None:
        for name, dev in self.devices.items():
            self._controls(name, training.start(dev))
        epoll, zsocks, readers = self.epoll, self.zsocks, self.readers
        epfd = epoll.fileno()
        while self.running:
            now = time.monotonic()
            ms = self.next_timeout_ms(now)
            try:
                if _localfast is not None:  # the same wait, with readable TUN queues served in C
                    events = _localfast.wait(self, epfd, ms, LOCAL_BUDGET, SNDHWM)
                else:
                    events = epoll.poll(-1 if ms is None else ms / 1000.0)
            except InterruptedError:
                events = ()
            now = time.monotonic()
            for fd, _ in events:
                sock = zsocks.get(fd)
                if sock is not None:
                    self.zcheck.add(sock)
                    continue
                reader = readers.get(fd)
                if reader is not None:
                    self._read(reader, now)
            if self.zcheck:
                self._serve_sockets(now)
            if self.txq:  # what the devices answered leaves before their software's timers run
                self.flush()
            due = self._deadlines()
            for name in [n for n, d in due.items() if d <= now]:
                self._tick_if_due(self.devices[name], now)
            if self.txq:
                self.flush()
            if self.local_q:
                self.run_local(now)
            if self.pending:  # after local delivery: an answer may have just arrived in memory
                self._stale.update(self.devices)  # what a deferred request checks or undoes
                self.service_pending(now)
                if self.txq:
                    self.flush()

    def _serve_sockets(self, now: float) -> None:
        """Read the sockets that may have input; keep those that still have some (a budget ran
        out, or more came meanwhile) for the next pass."""
        check, self.zcheck = self.zcheck, set()
        for sock in check:
            if sock.closed:
                continue
            if sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self.zhandlers[sock](now)
                if sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    self.zcheck.add(sock)

    def on_ingress(self, now: float) -> None:
        sock = self.ingress_sock
        for _ in range(RX_BUDGET):
            try:
                data = sock.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            self.bursts_in += 1
            name = self.by_index.get(burst_device(data))
            if name is None:  # too short to name a device, or names none of ours
                self.burst_errors += 1
                continue
            self._deliver(name, data, now)

    def _deliver(self, name: str, data, now: float) -> None:
        try:
            self.on_burst(name, data, now)
        except Exception:  # a bad packet must never kill the host
            traceback.print_exc()
            self.devices[name].drops["internal_error"] += 1
            self.drain(name, self.devices[name])

    def receive_data(self, name: str, port: int, data, offset: int, count: int, now: float) -> None:
        """A data burst's ``count`` packets from ``offset`` on into ``name``'s ``port``: from a
        socket after its header was checked, or over an in-process link as it is (both ends are
        ours: no header, no token)."""
        dev = self.devices[name]
        try:
            dev.receive_burst(port, data, offset, count, now)
        except ParseError:
            self.burst_errors += 1
            dev.drops["bad_burst"] += 1
        except Exception:  # a bad packet must never kill the host
            traceback.print_exc()
            dev.drops["internal_error"] += 1
        self._stale.add(name)
        if dev.outbox:
            self.drain(name, dev)
        if dev.events:
            self.handle_events(name, now)

    def _read(self, reader, now: float) -> None:
        """``reader`` is ``(device, fn)``, and its file descriptor is readable. A quiet reader
        (``fn`` returned True) leaves the node's software alone; ``fabric/host/_localfast.pyx:
        read_ready`` does the same in C, and sends what the reader posted on at once."""
        if _localfast is not None:
            return _localfast.read_ready(self, reader, now, LOCAL_BUDGET, SNDHWM)
        name, fn = reader
        dev = self.devices[name]
        try:
            quiet = fn(now) is True
        except Exception:  # what a node's own file descriptor brings must not kill the host
            traceback.print_exc()
            dev.drops["internal_error"] += 1
            quiet = False
        if not quiet:  # the reader called into the node's software: its timers may have moved
            self._stale.add(name)
            self._tick_if_due(dev, now)
        if dev.outbox:
            self.drain(name, dev)

    def run_local(self, now: float) -> None:
        """Deliver bursts on in-process links; a budget keeps the sockets served meanwhile.
        ``fabric/host/_localfast.pyx`` does the same in C, with a switch's hop there."""
        if _localfast is not None:
            return _localfast.run_local(self, LOCAL_BUDGET, SNDHWM)
        budget = LOCAL_BUDGET
        while self.local_q and budget:
            name, port, msg, count = self.local_q.popleft()
            budget -= 1
            now = time.monotonic()  # a whole sweep can run inside this loop: keep the clock honest
            if port < 0:
                self._deliver(name, msg, now)  # a link-training frame, framed as on a socket
            else:
                self.receive_data(name, port, msg, BURST_HEADROOM, count, now)
            dev = self.devices[name]
            if dev.agents:
                # the node's software runs right after its "interrupt" (a NAPI poll it asked for, an
                # answer it waits for), not one host-loop pass later: a request and its response
                # can cross the in-process links within this one loop. What the device itself
                # answered (its SMA: hardware on a real card) leaves first, not after the software.
                if self.txq:
                    self.flush()
                self._tick_if_due(dev, now)
            if not self.local_q:
                if self.txq:
                    self.flush()
        if self.txq:
            self.flush()

    def _tick_if_due(self, dev, now: float, rounds: int = 2) -> None:
        """Run a device's timers and agents if any is due; again (up to ``rounds``) if what they
        did made another due at once (an agent's send asks for a NAPI poll of its node)."""
        name = dev.name
        for _ in range(rounds):
            d = dev.next_deadline()
            if d is None or d > now:
                # asked after everything this call did to the device: the deadline the loop
                # would ask for again this pass (an HCA's agents take a dozen calls to ask)
                self._stale.discard(name)
                if d is None:
                    self._due.pop(name, None)
                else:
                    self._due[name] = d
                return
            try:
                dev.tick(now)
            except Exception:  # software on a node must not take the host down
                traceback.print_exc()
                dev.drops["internal_error"] += 1
                return
            finally:
                self._stale.add(name)
                if dev.outbox:
                    self.drain(name, dev)
            self.handle_events(name, now)

    def close(self) -> None:
        if self.ctx.closed:
            return
        self.close_sim_servers()
        for sid in list(self.capture.sessions if self.capture is not None else ()):
            self.end_capture(sid)  # their sockets, before the context ends
        while self.closers:
            fn = self.closers.pop()
            try:
                fn()
            except Exception:  # one failed undo must not keep the others from running
                traceback.print_exc()
        for s in [self.ingress_sock, *self.peers.values(), self.control, *self.monitors]:
            s.close(0)
        if self.gate is not None:
            self.gate.close()
        self.epoll.close()
        self.ctx.term()
