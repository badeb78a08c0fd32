"""Device host: one OS process running one or many emulated devices in a single ZeroMQ event loop.

    python -m fabric.host RUN_DIR HOST_INDEX

reads ``RUN_DIR/fabric.json`` (written by the launcher), builds the devices assigned to it, binds one
PULL ingress socket per device, connects one PUSH socket per cabled port to the peer's ingress, and
serves msgpack RPC on a ROUTER control socket. The loop blocks in ``zmq.Poller.poll`` with the next
timer as its timeout, so an idle fabric uses no CPU.
"""

from __future__ import annotations

from collections import deque
import os
import signal
import sys
import time
import traceback

import msgpack
import zmq

from . import wire as w
from .devices import HCA, cable, make_device, send_smp
from .devices.events import apply_events
from .link import (BURST_HDR, BURST_VERSION, KIND_DATA, KIND_DOWN, KIND_HELLO, KIND_HELLO_ACK, LEN,
                   decode_burst_header, decode_burst_packets, encode_control)
from .runinfo import RunInfo
from .topology import load_topology
from .wire.errors import ParseError

RX_BUDGET = 64  # bursts read from one socket before looking at the others
ZERO_COPY_MIN = 65536  # below this a copy is cheaper than zero-copy bookkeeping (DESIGN.md 3)
LOCAL_BUDGET = 512  # in-process bursts delivered per loop iteration
FLUSH_AT = 4096  # packets in one outgoing burst at most (the count field is 16 bits)
SNDHWM = 1000  # bursts queued per link before the link drops (UD: overflow drops, never blocks)


class RpcError(Exception):
    pass


class DeviceHost:
    def __init__(self, run_dir: str, index: int):
        self.info = RunInfo.load(run_dir)
        self.index = index
        self.topology = load_topology(self.info.topology_path)
        self.names = self.info.hosts[index]["devices"]
        self.devices = {n: make_device(self.topology.nodes[n]) for n in self.names}
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, 65536)
        self.ingress: dict = {}  # socket -> device name
        self.links: dict = {}  # (name, port) -> (push socket, peer port)
        self.txq: dict = {}  # (name, port) -> [packets]
        self.timers: list = []  # heap of (time, seq, callable)
        self._seq = 0
        self.pending: list = []  # deferred RPC replies: (deadline, check, envelope)
        self.running = True
        self.sm = None  # SmAgent when the subnet manager runs on a device of this host
        self.extra_ops: dict = {}  # RPC operations contributed by a node-software plugin
        self.capture = None  # ErfWriter while capturing
        self.captured = 0
        self.started = time.time()
        self.bursts_in = 0
        self.bursts_out = 0
        self.burst_errors = 0
        for n in self.names:
            sock = self.ctx.socket(zmq.PULL)
            sock.setsockopt(zmq.RCVHWM, SNDHWM)
            sock.bind(self.info.ingress(self.topology.nodes[n].node_guid))
            self.ingress[sock] = n
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
                    s = self.ctx.socket(zmq.PUSH)
                    s.setsockopt(zmq.SNDHWM, SNDHWM)
                    s.setsockopt(zmq.LINGER, 0)
                    s.connect(self.info.ingress(self.topology.nodes[b].node_guid))
                    self.links[(a, ap)] = (s, bp)
                    cable(self.devices[a], ap, None, 0, link)
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.bind(self.info.control(index))
        plugin = self.info.data.get("node_software")
        if plugin:
            # software that runs on the HCAs (IPoIB); named, not imported statically: the fabric
            # itself knows nothing of IP
            import importlib

            mod_name, _, fn_name = plugin.partition(":")
            getattr(importlib.import_module(mod_name), fn_name)(self)
        self.poller = zmq.Poller()
        for s in self.ingress:
            self.poller.register(s, zmq.POLLIN)
        self.poller.register(self.control, zmq.POLLIN)

    # -- link layer ----------------------------------------------------------------------------

    def send_control(self, name: str, port: int, kind: int) -> None:
        peer = self.local.get((name, port))
        if peer is not None:
            self.local_q.append((peer[0], encode_control(peer[1], kind)))
            return
        link = self.links.get((name, port))
        if link is None:
            return
        try:
            link[0].send(encode_control(link[1], kind), zmq.NOBLOCK)
        except zmq.Again:
            pass  # the peer is not draining; training will be retried by its own HELLO

    def queue_tx(self, name: str, txs) -> None:
        """Queue packets for the next burst of each egress link (length-prefixed parts). An item
        may also be ("segment", port, count, framed packets after burst-header headroom), which a
        compiled send path builds."""
        for item in txs:
            if len(item) == 4:
                self.queue_segment(name, item[1], item[2], item[3])
                continue
            port, pkt = item
            q = self.txq.get((name, port))
            if q is None:
                q = self.txq[(name, port)] = [0, [], False]
            q[0] += 1
            q[1].append(LEN.pack(len(pkt)))
            q[1].append(pkt)
            if q[0] >= FLUSH_AT:
                self.flush()

    def queue_segment(self, name: str, port: int, count: int, segment: bytearray) -> None:
        """Queue a compiled-path segment: SEG_HEADROOM octets of room for the header, then packets."""
        q = self.txq.get((name, port))
        if q is None:
            self.txq[(name, port)] = [count, [segment], True]  # sent in place, header written into it
            return
        q[0] += count
        q[1].append(memoryview(segment)[BURST_HDR.size:])
        if q[0] >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        for dev in self.timed_devices():
            if dev.outbox:
                out, dev.outbox[:] = list(dev.outbox), []
                self.queue_tx(dev.name, out)
        txq, self.txq = self.txq, {}
        for (name, port), (count, parts, headroom) in txq.items():
            link = self.links.get((name, port))
            peer = self.local.get((name, port)) if link is None else None
            if link is None and peer is None:
                continue  # uncabled port: lost
            hdr = BURST_HDR.pack(BURST_VERSION, KIND_DATA, link[1] if link else peer[1], count)
            if self.capture is not None:
                self._capture(name, port, parts, headroom)
            if headroom and len(parts) == 1:
                msg = parts[0]
                msg[:BURST_HDR.size] = hdr
            else:
                if headroom:
                    parts[0] = memoryview(parts[0])[BURST_HDR.size:]
                msg = b"".join([hdr] + parts)
            if peer is not None:
                if len(self.local_q) >= SNDHWM:
                    self.devices[name].ports[port].counters.inc("port_xmit_discards", count)
                    self.devices[name].drops["link_queue_full"] += count
                else:
                    self.local_q.append((peer[0], msg))
                continue
            try:
                link[0].send(msg, zmq.NOBLOCK, copy=len(msg) < ZERO_COPY_MIN)
                self.bursts_out += 1
            except zmq.Again:
                self.devices[name].ports[port].counters.inc("port_xmit_discards", count)
                self.devices[name].drops["link_queue_full"] += count

    def _capture(self, name, port, parts, headroom) -> None:
        """Write every packet leaving a device port to this host's capture (a tap on each link)."""
        raw = b"".join(bytes(memoryview(p)[BURST_HDR.size:]) if headroom and i == 0 else bytes(p)
                       for i, p in enumerate(parts))
        off = 0
        ts = time.time_ns()
        while off + 2 <= len(raw):
            (ln,) = LEN.unpack_from(raw, off)
            self.capture.write(raw[off + 2:off + 2 + ln], ts, interface=port & 3)
            off += 2 + ln
        self.captured += 1

    def op_capture_start(self, env, now, path):
        from .capture import ErfWriter

        if self.capture is not None:
            self.capture.close()
        self.capture = ErfWriter(f"{path}.host{self.index}")
        return True

    def op_capture_stop(self, env, now):
        if self.capture is not None:
            self.capture.close()
            self.capture = None
        return True

    def on_burst(self, name: str, data: bytes, now: float) -> None:
        dev = self.devices[name]
        try:
            kind, port, count = decode_burst_header(data)
            if port not in dev.ports or port == 0 and dev.kind == "switch":
                dev.drops["burst_bad_port"] += 1
                return
            if kind == KIND_DATA and hasattr(dev, "receive_burst"):
                segs, txs = dev.receive_burst(port, data, BURST_HDR.size, count, now)
                for out, (n, seg) in segs.items():
                    self.queue_segment(name, out, n, seg)
                self.queue_tx(name, txs)
                self.handle_events(name, now)
                return
            pkts = decode_burst_packets(data, BURST_HDR.size, count)
        except ParseError:
            self.burst_errors += 1
            dev.drops["bad_burst"] += 1
            return
        p = dev.ports[port]
        if kind == KIND_DATA:
            for pkt in pkts:
                self.queue_tx(name, dev.receive(port, pkt, now))
        elif kind == KIND_HELLO:
            if p.admin_up:
                was_up = p.link_up
                self.queue_tx(name, dev.set_link(port, True, now))
                if not was_up:
                    self.send_control(name, port, KIND_HELLO_ACK)
        elif kind == KIND_HELLO_ACK:
            if p.admin_up:
                self.queue_tx(name, dev.set_link(port, True, now))
        elif kind == KIND_DOWN:
            self.queue_tx(name, dev.set_link(port, False, now))
        self.handle_events(name, now)

    def handle_events(self, name: str, now: float) -> None:
        dev = self.devices[name]
        if dev.events:
            apply_events(dev, now, emit=lambda txs: self.queue_tx(name, txs),
                         control=lambda port, kind: self.send_control(name, port, kind))

    def set_admin(self, name: str, port: int, up: bool, now: float) -> None:
        dev = self.devices[name]
        p = dev.ports[port]
        p.admin_up = up
        if up:
            self.send_control(name, port, KIND_HELLO)
        else:
            self.queue_tx(name, dev.set_link(port, False, now))
            self.send_control(name, port, KIND_DOWN)
        self.handle_events(name, now)

    # -- RPC -----------------------------------------------------------------------------------

    def rpc(self, env: tuple, req: dict, now: float):
        op = req.get("op")
        fn = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if fn is None and isinstance(op, str):
            fn = self.extra_ops.get(op)
        if fn is None:
            raise RpcError(f"unknown operation {op!r}")
        return fn(env=env, now=now, **{k: v for k, v in req.items() if k != "op"})

    def reply(self, env: tuple, ok: bool, value) -> None:
        frames, rid = env
        body = {"ok": True, "result": value, "id": rid} if ok else {"ok": False, "error": str(value), "id": rid}
        self.control.send_multipart(frames + [msgpack.packb(body, use_bin_type=True)])

    def device(self, name: str):
        dev = self.devices.get(name)
        if dev is None:
            raise RpcError(f"device {name!r} is not on host {self.index}")
        return dev

    def hca(self, name: str) -> HCA:
        dev = self.device(name)
        if not isinstance(dev, HCA):
            raise RpcError(f"{name} is not an HCA")
        return dev

    def op_hello(self, env, now):
        return {"host": self.index, "pid": os.getpid()}

    def op_status(self, env, now):
        return {"host": self.index, "pid": os.getpid(), "uptime": now - self.started,
                "bursts_in": self.bursts_in, "bursts_out": self.bursts_out, "burst_errors": self.burst_errors,
                "devices": [self.devices[n].snapshot() for n in self.names]}

    def op_counters(self, env, now, device, port):
        return self.device(device).ports[port].counters.snapshot()

    def op_link(self, env, now, device, port, up):
        dev = self.device(device)
        if port not in dev.ports or port == 0 and dev.kind == "switch":
            raise RpcError(f"{device} has no port {port}")
        self.set_admin(device, port, bool(up), now)
        return True

    def op_sm_start(self, env, now, device, port=1, config=None):
        """Run the subnet manager on an HCA port of this host (stopping one that runs here)."""
        from .sm.core import SMConfig
        from .sm.driver import SmAgent

        dev = self.hca(device)
        if self.sm is not None:
            self.sm.detach()
        cfg = SMConfig(**(config or {}))
        if cfg.guid2lid_path is None:
            cfg.guid2lid_path = os.path.join(self.info.run_dir, "guid2lid")
        self.sm = SmAgent(dev, port, cfg)
        self.queue_tx(device, self.sm.start(now))
        return True

    def op_sm_stop(self, env, now):
        if self.sm is not None:
            self.sm.detach()
            self.sm = None
        return True

    def op_sm_status(self, env, now):
        return None if self.sm is None else dict(self.sm.status(), node=self.sm.hca.name, port=self.sm.port)

    def op_discover(self, env, now, device, port=1, lfts=False, timeout=30.0):
        """Read the fabric with DR SMPs from an HCA port (ibnetdiscover, dump_fts)."""
        from .diag import DiagAgent, subnet_to_dict

        agent = DiagAgent(self.hca(device), port, read_lfts=bool(lfts))
        self.queue_tx(device, agent.start(now))

        def check():
            return subnet_to_dict(agent.result) if agent.result is not None else None

        def on_timeout():
            agent.detach()

        return self.defer(env, now, timeout, check, None, on_timeout)

    def op_shutdown(self, env, now):
        self.running = False
        return True

    def op_create_qp(self, env, now, device, qkey, port=1):
        return self.hca(device).create_qp(qkey, port).qpn

    def op_attach_mcast(self, env, now, device, qpn, mgid, mlid):
        self.hca(device).attach_mcast(qpn, mgid, mlid)
        return True

    def op_post_send(self, env, now, device, qpn, dlid, dest_qp, payload, qkey=None, pkey_index=None,
                     dgid=None, sl=0):
        dev = self.hca(device)
        self.queue_tx(device, dev.post_send(qpn, dlid=dlid, dest_qp=dest_qp, payload=payload, qkey=qkey,
                                            pkey_index=pkey_index, dgid=dgid, sl=sl, now=now))
        self.handle_events(device, now)
        return True

    def op_send_raw(self, env, now, device, port, packet):
        """Put arbitrary octets on a link from a device's port (tests provoke drops with this)."""
        self.device(device)
        self.queue_tx(device, [(port, packet)])
        return True

    def op_poll(self, env, now, device, qpn, max=64, timeout=0.0):
        """Receive completions of a QP; waits up to ``timeout`` for the first one."""
        qp = self.hca(device).qps.get(qpn)
        if qp is None:
            raise RpcError(f"{device} has no QP 0x{qpn:x}")

        def check():
            if not qp.rq:
                return None
            return [_completion(c) for c in qp.poll(max)]

        return self.defer(env, now, timeout, check, [])

    def op_smp(self, env, now, device, port, smp, dlid=None, timeout=2.0):
        """Send an SMP from an HCA port as an SM would and wait for its response (matched by TID)."""
        dev = self.hca(device)
        mad = w.parse_mad(smp)
        tid = mad.tid
        self.queue_tx(device, send_smp(dev, port, mad, now, dlid=dlid))
        self.handle_events(device, now)
        qp0 = dev.qps[0]

        def check():
            for c in list(qp0.rq):
                if w.MADHeader.unpack(c.payload).tid == tid:
                    qp0.rq.remove(c)
                    return c.payload
            return None

        return self.defer(env, now, timeout, check, None)

    def op_gmp(self, env, now, device, dlid, mad, port=1, dest_qp=1, timeout=2.0):
        """Send a GMP (SA or PMA MAD) from an HCA's QP1 and wait for its answer: a list of the
        response MADs (several for an RMPP transfer), or None on timeout."""
        dev = self.hca(device)
        tid = w.MADHeader.unpack(mad).tid
        mux = _GmpMux.on(dev)
        mux.waiting[tid] = []
        self.queue_tx(device, dev.post_send(1, dlid=dlid, dest_qp=dest_qp, payload=bytes(mad), qkey=w.QKEY_GSI,
                                            now=now, port_num=port))

        def check():
            got = mux.waiting.get(tid)
            if got and mux.complete(got):
                del mux.waiting[tid]
                return got
            return None

        return self.defer(env, now, timeout, check, None, on_timeout=lambda: mux.waiting.pop(tid, None))

    def defer(self, env, now, timeout, check, default, on_timeout=None):
        """Answer now if ``check`` has a result, else when it has one or the timeout passes."""
        value = check()
        if value is not None or timeout <= 0:
            return value if value is not None else default
        self.pending.append((now + timeout, check, env, default, on_timeout))
        return _DEFERRED

    def service_pending(self, now: float) -> None:
        keep = []
        for deadline, check, env, default, on_timeout in self.pending:
            try:
                value = check()
            except Exception as exc:  # a deferred request that fails is answered with the error
                self.reply(env, False, f"{type(exc).__name__}: {exc}")
                continue
            if value is not None:
                self.reply(env, True, value)
            elif now >= deadline:
                if on_timeout is not None:
                    on_timeout()
                self.reply(env, True, default)
            else:
                keep.append((deadline, check, env, default, on_timeout))
        self.pending = keep

    def on_control(self, now: float) -> None:
        while True:
            try:
                frames = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            env, body = (frames[:-1], None), frames[-1]
            try:
                req = msgpack.unpackb(body, raw=False)
                if not isinstance(req, dict):
                    raise RpcError("request must be a map")
                env = (frames[:-1], req.pop("id", None))
                result = self.rpc(env, req, now)
                if result is not _DEFERRED:
                    self.reply(env, True, result)
            except (RpcError, ValueError, KeyError, TypeError, ParseError, msgpack.UnpackException) as exc:
                self.reply(env, False, f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # never let one request kill the host
                traceback.print_exc()
                self.reply(env, False, f"internal error: {type(exc).__name__}: {exc}")

    # -- loop ----------------------------------------------------------------------------------

    def timed_devices(self):
        """Devices that have timers: pending traps or software agents (the SM). Checking only
        these keeps the loop's cost independent of how many devices the host runs."""
        return [dev for dev in self.devices.values() if dev._traps or dev.agents]

    def next_timeout_ms(self, now: float):
        if self.local_q:
            return 0
        deadlines = [d for d in (dev.next_deadline() for dev in self.timed_devices()) if d is not None]
        deadlines += [p[0] for p in self.pending]
        if not deadlines:
            return None
        wait = min(deadlines) - now
        # zmq polls in whole milliseconds: a deadline closer than that (an interrupt moderation
        # timer of a few microseconds) is waited for by polling without blocking, never by
        # sleeping a whole millisecond past it
        return 0 if wait < 0.001 else int(wait * 1000) + 1

    def run(self) -> None:
        now = time.monotonic()
        for (name, port) in list(self.links) + list(self.local):
            if self.devices[name].ports[port].admin_up:
                self.send_control(name, port, KIND_HELLO)
        while self.running:
            now = time.monotonic()
            events = dict(self.poller.poll(self.next_timeout_ms(now)))
            now = time.monotonic()
            for sock in events:
                if sock is self.control:
                    self.on_control(now)
                    continue
                name = self.ingress[sock]
                for _ in range(RX_BUDGET):
                    try:
                        data = sock.recv(zmq.NOBLOCK, copy=True)
                    except zmq.Again:
                        break
                    self.bursts_in += 1
                    try:
                        self.on_burst(name, data, now)
                    except Exception:  # a bad packet must never kill the host
                        traceback.print_exc()
                        self.devices[name].drops["internal_error"] += 1
            for dev in self.timed_devices():
                self._tick_if_due(dev, now)
            self.flush()
            self.run_local(now)
            if self.pending:  # after local delivery: an answer may have just arrived in memory
                self.service_pending(now)
                self.flush()

    def run_local(self, now: float) -> None:
        """Deliver bursts on in-process links; a budget keeps the sockets served meanwhile."""
        budget = LOCAL_BUDGET
        while self.local_q and budget:
            name, msg = self.local_q.popleft()
            budget -= 1
            now = time.monotonic()  # a whole sweep can run inside this loop: keep the clock honest
            try:
                self.on_burst(name, msg, now)
            except Exception:
                traceback.print_exc()
                self.devices[name].drops["internal_error"] += 1
            dev = self.devices[name]
            if dev.agents:
                # the node's software runs right after its "interrupt" (a NAPI poll it asked for, an
                # answer it waits for), not one host-loop pass later: a request and its response
                # can cross the in-process links within this one loop
                self._tick_if_due(dev, now)
            if not self.local_q:
                self.flush()
        self.flush()

    def _tick_if_due(self, dev, now: float, rounds: int = 2) -> None:
        """Run a device's timers and agents if any is due; again (up to ``rounds``) if what they
        did made another due at once (an agent's send asks for a NAPI poll of its node)."""
        for _ in range(rounds):
            d = dev.next_deadline()
            if d is None or d > now:
                return
            try:
                self.queue_tx(dev.name, dev.tick(now))
            except Exception:  # software on a node must not take the host down
                traceback.print_exc()
                dev.drops["internal_error"] += 1
                return

    def close(self) -> None:
        if self.ctx.closed:
            return
        for s in list(self.ingress) + [x[0] for x in self.links.values()] + [self.control]:
            s.close(0)
        self.ctx.term()


_DEFERRED = object()


class _GmpMux:
    """Sits in front of an HCA's QP1 consumer: answers to GMPs sent through the ``gmp`` RPC are
    kept for it, everything else goes where it went before (IPoIB's SA client, or the queue)."""

    def __init__(self, hca):
        self.qp = hca.qps[1]
        self.prev = self.qp.consumer
        self.waiting: dict = {}
        self.qp.consumer = self

    @classmethod
    def on(cls, hca):
        c = hca.qps[1].consumer
        return c if isinstance(c, cls) else cls(hca)

    def __call__(self, comp) -> None:
        try:
            hdr = w.MADHeader.unpack(comp.payload)
        except w.ParseError:
            hdr = None
        if hdr is not None and hdr.tid in self.waiting and hdr.method & w.RESPONSE_BIT:
            self.waiting[hdr.tid].append(comp.payload)
        elif self.prev is not None:
            self.prev(comp)
        else:
            self.qp.rq.append(comp)

    @staticmethod
    def complete(mads: list) -> bool:
        last = mads[-1]
        if last[1] != w.CLASS_SUBN_ADM:
            return True
        sa_mad = w.SAMad.unpack(last)
        return not sa_mad.rmpp_flags & w.RMPP_FLAG_ACTIVE or bool(sa_mad.rmpp_flags & w.RMPP_FLAG_LAST)


def _completion(c) -> dict:
    return {"port": c.port, "slid": c.slid, "src_qp": c.src_qp, "pkey": c.pkey, "pkey_index": c.pkey_index,
            "sl": c.sl, "payload": c.payload, "qkey": c.qkey,
            "sgid": c.grh.sgid if c.grh else None, "dgid": c.grh.dgid if c.grh else None}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m fabric.host RUN_DIR HOST_INDEX", file=sys.stderr)
        return 2
    def stop(*_):
        raise SystemExit(0)  # interrupts a blocking poll; run() closes the sockets on the way out

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host = DeviceHost(argv[0], int(argv[1]))
    host.info.mark_ready(int(argv[1]), os.getpid())
    profile = os.environ.get("IBFAB_PROFILE")  # a directory: write host-<i>.prof (cProfile) there
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    try:
        host.run()
    finally:
        host.close()
        if prof is not None:
            prof.disable()
            prof.dump_stats(os.path.join(profile, f"host-{argv[1]}.prof"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
