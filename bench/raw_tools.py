"""Raw pyzmq baselines for the issue 6 end-to-end benchmarks (test_bench_e2e.py, test_bench_latency.py).

They move the same octets as the fabric over the same number of hops with the same framing: a
ZeroMQ message is a burst (``fabric.wire.burst``: a 16-octet header ``!BBBxH8sH`` version/kind/port/count/token/device,
then per packet a 16-bit length and the packet), and each packet is as long as the UD packet the
fabric puts on the wire (LRH, BTH, DETH, the IPoIB frame, pad, ICRC, VCRC). Nothing else happens:
no parsing, no checks, no IP stack. Three roles, as in ``single:2``:

- the *sender* (node0001) or *client* (the pinging node0001): sends bursts;
- the *forwarder* (the switch): receives each burst and re-sends it, with the destination port
  byte of the header rewritten, towards the port the burst did not come from;
- the *sink* (node0002): counts packets; or the *echo server*: sends each burst back.

Two layouts, mirroring how the launcher places the fabric's devices:

- ``1p``: every role in one process and one loop (``inproc://`` sockets), like one device host
  running node0001, the switch and node0002. Each loop iteration lets the active role act once (a
  burst, or one echo request) and then serves whatever arrived on the sockets, as the host loop
  does (``zmq.Poller.poll``, then up to 64 messages per socket).
- ``3p``: each role in its own process with its own loop, over ``ipc://``, like one device host
  per device.

Command line (each prints one JSON line; the passive roles of ``3p`` print "ready" and run until
killed):

    python bench/raw_tools.py stream-1p WIRE_LEN BURST SECONDS
    python bench/raw_tools.py rr-1p WIRE_LEN COUNT MODE             MODE = flood | sequential
    python bench/raw_tools.py sink IN_EP IDLE_S
    python bench/raw_tools.py fwd IN_EP OUT1_EP OUT2_EP             port 1 -> OUT2, port 2 -> OUT1
    python bench/raw_tools.py echo IN_EP OUT_EP
    python bench/raw_tools.py gen OUT_EP WIRE_LEN BURST SECONDS
    python bench/raw_tools.py client IN_EP OUT_EP WIRE_LEN COUNT MODE

The helpers :func:`stream` and :func:`request_response` run either layout from the benchmarks and
clean up every process they start. The last section has the fabric side of the same measurements
(:func:`ipoib_fabric`, :func:`fabric_perf`, the pings, :func:`cpu_seconds`), shared by
test_bench_e2e.py, test_bench_latency.py and test_bench_moderation.py; it imports the fabric only
when called, so the raw roles stay lean.

``flood`` sends one echo request per loop iteration without waiting for the replies, as the
fabric's ping does with ``interval=0`` (``ibfab perf --latency``); ``sequential`` waits for each
reply before the next request (one in flight).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import zmq

HDR = struct.Struct("!BBBxH8sH")  # the size of fabric.wire.burst's header (format 3: token, device)
LEN = struct.Struct("!H")
HWM = 1000  # bursts queued per link, as fabric.host.loop.SNDHWM
RX_BUDGET = 64  # messages read from one socket per loop iteration, as fabric.host.loop.RX_BUDGET
HERE = os.path.abspath(__file__)


def wire_len_udp(payload: int) -> int:
    """Octets the fabric puts on the wire for one IPoIB UDP datagram of ``payload`` octets:
    IPoIB header 4 + IP 20 + UDP 8 + payload, behind LRH 8 + BTH 12 + DETH 8, padded to 4, then
    ICRC 4 and VCRC 2."""
    frame = 4 + 20 + 8 + payload
    return 28 + frame + (-frame) % 4 + 4 + 2


def wire_len_icmp(data: int) -> int:
    """The same for one ICMP echo with ``data`` octets of data (ICMP header 8)."""
    return wire_len_udp(data)  # 8 octets of ICMP header in place of the 8 of UDP


def burst(wire_len: int, count: int, port: int = 1) -> bytes:
    pkt = bytes(wire_len)
    return HDR.pack(3, 0, port, count, bytes(8), 0) + (LEN.pack(wire_len) + pkt) * count


def _pull(ctx, ep):
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.RCVHWM, HWM)
    s.bind(ep)
    return s


def _push(ctx, ep):
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, HWM)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ep)
    return s


def _send(sock, msg, block: bool) -> bool:
    try:
        # always copied: pyzmq's zero-copy send (which the device host uses for bursts of 64 KiB
        # and more on its sockets) is 2 to 3 times slower here, and the baseline should be the
        # best raw pyzmq does (the fabric's in-process links do not use ZeroMQ at all)
        sock.send(msg, 0 if block else zmq.NOBLOCK)
        return True
    except zmq.Again:
        return False


# -- roles: each handles the messages of its ingress socket ------------------------------------


class Sink:
    def __init__(self):
        self.packets = 0
        self.bursts = 0
        self.first = self.last = None

    def handle(self, msg) -> None:
        _v, kind, _port, n, _tok, _dev = HDR.unpack_from(msg)
        if kind != 0:
            return
        t = time.perf_counter()
        if self.first is None:
            self.first = t
        self.last = t
        self.packets += n
        self.bursts += 1

    def result(self) -> dict:
        return {"packets": self.packets, "bursts": self.bursts,
                "seconds": (self.last - self.first) if self.first is not None else 0.0}


class Forwarder:
    """The switch: a burst that came in on port 1 leaves on port 2 and the other way round. The
    header's port byte is the receiving device's port (1 on an HCA), as on the fabric's links."""

    def __init__(self, out1, out2, block: bool):
        self.out = {1: out2, 2: out1}  # in-port -> egress link
        self.block = block
        self.drops = 0

    def handle(self, msg) -> None:
        out = bytearray(msg)  # the outgoing burst: one copy, as the switch copies into it
        out[2] = 1
        if not _send(self.out[msg[2]], out, self.block):
            self.drops += 1


class Echo:
    """The pinged node: every burst goes back where it came from (the switch's port 2)."""

    def __init__(self, out, block: bool):
        self.out, self.block = out, block

    def handle(self, msg) -> None:
        out = bytearray(msg)
        out[2] = 2
        _send(self.out, out, self.block)


class Sender:
    """node0001's perf sender: ``bursts`` bursts per loop iteration for ``seconds`` (as many as
    the fabric's sender posts per host-loop pass)."""

    def __init__(self, out, wire_len: int, count: int, seconds: float, block: bool, bursts: int = 1):
        self.out, self.block, self.bursts = out, block, bursts
        self.msg = burst(wire_len, count, port=1)
        self.count = count
        self.end = time.perf_counter() + seconds
        self.sent = self.dropped = 0
        self.done = False

    def tick(self) -> None:
        if self.done:
            return
        if time.perf_counter() >= self.end:
            self.done = True
            return
        for _ in range(self.bursts):
            if _send(self.out, self.msg, self.block):
                self.sent += self.count
            else:
                self.dropped += self.count


class Client:
    """The pinging node: a one-packet request burst, and the RTT of each reply (matched by a
    sequence number in the packet, where the BTH's PSN would be)."""

    def __init__(self, out, wire_len: int, count: int, mode: str, block: bool):
        self.out, self.block = out, block
        self.wire_len, self.count, self.mode = wire_len, count, mode
        self.sent_at: dict[int, float] = {}
        self.rtts: list[float] = []
        self.seq = 0
        self.waiting = False

    @property
    def done(self) -> bool:
        return len(self.rtts) >= self.count

    def tick(self) -> None:
        if self.seq >= self.count or (self.mode == "sequential" and self.waiting):
            return
        self.seq += 1
        pkt = struct.pack("!I", self.seq) + bytes(self.wire_len - 4)
        msg = HDR.pack(3, 0, 1, 1, bytes(8), 0) + LEN.pack(self.wire_len) + pkt
        self.sent_at[self.seq] = time.perf_counter()
        if _send(self.out, msg, self.block):
            self.waiting = True

    def handle(self, msg) -> None:
        (seq,) = struct.unpack_from("!I", msg, HDR.size + 2)
        t0 = self.sent_at.pop(seq, None)
        if t0 is not None:
            self.rtts.append(time.perf_counter() - t0)
        self.waiting = False


def _loop(handlers: dict, active=None, *, until=None, idle: float = 0.5) -> None:
    """One device-host-like loop: the active role acts once, then every readable socket is
    drained (up to RX_BUDGET messages). Stops when ``until()`` is true, or after ``idle`` seconds
    with nothing to do once the active role is done."""
    poller = zmq.Poller()
    for s in handlers:
        poller.register(s, zmq.POLLIN)
    last_work = time.perf_counter()
    while True:
        if active is not None and not active.done:
            active.tick()
            timeout = 0
        else:
            timeout = 10
        events = poller.poll(timeout)
        for sock, _ in events:
            h = handlers[sock]
            for _ in range(RX_BUDGET):
                try:
                    msg = sock.recv(zmq.NOBLOCK, copy=True)
                except zmq.Again:
                    break
                h(msg)
        now = time.perf_counter()
        if events:
            last_work = now
        if until is not None and until():
            return
        if (active is None or active.done) and now - last_work > idle:
            return


# -- one process: every role in one loop (inproc://) ---------------------------------------------


def stream_1p(wire_len, count, seconds, bursts=1) -> dict:
    wire_len, count, seconds, bursts = int(wire_len), int(count), float(seconds), int(bursts)
    ctx = zmq.Context()
    sw_in, n2_in = _pull(ctx, "inproc://sw"), _pull(ctx, "inproc://n2")
    n1_in = _pull(ctx, "inproc://n1")  # node0001's ingress: polled like the host polls it, never used
    to_sw, sw_to_n1, sw_to_n2 = _push(ctx, "inproc://sw"), _push(ctx, "inproc://n1"), _push(ctx, "inproc://n2")
    sink = Sink()
    fwd = Forwarder(sw_to_n1, sw_to_n2, block=False)
    snd = Sender(to_sw, wire_len, count, seconds, block=False, bursts=bursts)
    _loop({sw_in: fwd.handle, n2_in: sink.handle, n1_in: lambda msg: None}, snd, idle=0.2)
    out = dict(sink.result(), sent=snd.sent, dropped=snd.dropped + fwd.drops)
    ctx.destroy(linger=0)
    return out


def rr_1p(wire_len, count, mode) -> dict:
    wire_len, count = int(wire_len), int(count)
    ctx = zmq.Context()
    n1_in, sw_in, n2_in = _pull(ctx, "inproc://n1"), _pull(ctx, "inproc://sw"), _pull(ctx, "inproc://n2")
    n1_to_sw, n2_to_sw = _push(ctx, "inproc://sw"), _push(ctx, "inproc://sw")
    sw_to_n1, sw_to_n2 = _push(ctx, "inproc://n1"), _push(ctx, "inproc://n2")
    client = Client(n1_to_sw, wire_len, count, mode, block=False)
    fwd = Forwarder(sw_to_n1, sw_to_n2, block=False)
    echo = Echo(n2_to_sw, block=False)
    t0 = time.perf_counter()
    _loop({n1_in: client.handle, sw_in: fwd.handle, n2_in: echo.handle}, client,
          until=lambda: client.done or time.perf_counter() - t0 > 30, idle=1.0)
    ctx.destroy(linger=0)
    return {"rtts": client.rtts, "sent": client.seq}


# -- one process per role (ipc://) ---------------------------------------------------------------


def _serve(handlers_of) -> None:
    """Run a passive role until killed."""
    ctx = zmq.Context()
    handlers = handlers_of(ctx)
    print("ready", flush=True)
    try:
        _loop(handlers, None, idle=float("inf"))
    finally:
        ctx.destroy(linger=0)


def role_sink(in_ep, idle) -> None:
    ctx = zmq.Context()
    s = _pull(ctx, in_ep)
    sink = Sink()
    print("ready", flush=True)
    while not s.poll(10_000):  # wait for the first burst (the sender may take a while to start)
        pass
    _loop({s: sink.handle}, None, idle=float(idle))
    print(json.dumps(sink.result()), flush=True)
    ctx.destroy(linger=0)


def role_fwd(in_ep, out1_ep, out2_ep) -> None:
    _serve(lambda ctx: {_pull(ctx, in_ep): Forwarder(_push(ctx, out1_ep), _push(ctx, out2_ep), block=True).handle})


def role_echo(in_ep, out_ep) -> None:
    _serve(lambda ctx: {_pull(ctx, in_ep): Echo(_push(ctx, out_ep), block=True).handle})


def role_gen(out_ep, wire_len, count, seconds, bursts=1) -> None:
    ctx = zmq.Context()
    out = _push(ctx, out_ep)
    time.sleep(0.2)  # let the connection come up
    snd = Sender(out, int(wire_len), int(count), float(seconds), block=True, bursts=int(bursts))  # back-pressure
    while not snd.done:
        snd.tick()
    out.setsockopt(zmq.LINGER, 5000)
    out.close()
    print(json.dumps({"sent": snd.sent, "dropped": snd.dropped}), flush=True)
    ctx.term()


def role_client(in_ep, out_ep, wire_len, count, mode) -> None:
    ctx = zmq.Context()
    s_in, out = _pull(ctx, in_ep), _push(ctx, out_ep)
    time.sleep(0.2)
    client = Client(out, int(wire_len), int(count), mode, block=True)
    t0 = time.perf_counter()
    _loop({s_in: client.handle}, client, until=lambda: client.done or time.perf_counter() - t0 > 30, idle=1.0)
    print(json.dumps({"rtts": client.rtts, "sent": client.seq}), flush=True)
    ctx.destroy(linger=0)


# -- helpers for the benchmarks ------------------------------------------------------------------


def _spawn(*args, ready: bool = False) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, HERE, *map(str, args)], stdout=subprocess.PIPE, text=True)
    if ready:
        line = p.stdout.readline().strip()
        if line != "ready":
            p.kill()
            raise RuntimeError(f"raw role {args[0]} did not start: {line!r}")
    return p


def _stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stdout:
            p.stdout.close()


def _json_line(p: subprocess.Popen, timeout: float) -> dict:
    out, _ = p.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def stream(layout: str, wire_len: int, burst_count: int, seconds: float, bursts: int = 1) -> dict:
    """Sender -> forwarder -> sink for ``seconds``, ``bursts`` bursts of ``burst_count`` packets
    per sender iteration: {sent, packets, seconds, ...}."""
    procs = []
    tmp = tempfile.mkdtemp(prefix="ibraw-")
    try:
        if layout == "1p":
            procs.append(_spawn("stream-1p", wire_len, burst_count, seconds, bursts))
            return _json_line(procs[0], seconds + 60)
        eps = {n: f"ipc://{tmp}/{n}" for n in ("n1", "sw", "n2")}
        sink = _spawn("sink", eps["n2"], 0.5, ready=True)
        procs.append(sink)
        procs.append(_spawn("fwd", eps["sw"], eps["n1"], eps["n2"], ready=True))
        gen = _spawn("gen", eps["sw"], wire_len, burst_count, seconds, bursts)
        procs.append(gen)
        sent = _json_line(gen, seconds + 60)
        return dict(_json_line(sink, 60), **sent)
    finally:
        _stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


def request_response(layout: str, wire_len: int, count: int, mode: str) -> dict:
    """Client -> forwarder -> echo -> forwarder -> client, ``count`` times: {rtts (s), sent}."""
    procs = []
    tmp = tempfile.mkdtemp(prefix="ibraw-")
    try:
        if layout == "1p":
            procs.append(_spawn("rr-1p", wire_len, count, mode))
            return _json_line(procs[0], 60)
        eps = {n: f"ipc://{tmp}/{n}" for n in ("n1", "sw", "n2")}
        procs.append(_spawn("echo", eps["n2"], eps["sw"], ready=True))
        procs.append(_spawn("fwd", eps["sw"], eps["n1"], eps["n2"], ready=True))
        client = _spawn("client", eps["n1"], eps["sw"], wire_len, count, mode)
        procs.append(client)
        return _json_line(client, 60)
    finally:
        _stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


# -- the fabric side: the same measurements over the emulated fabric (used by the benchmarks) -----


def perf_burst() -> int:
    """Datagrams the fabric's perf sender sends per host-loop iteration (its default ``burst``),
    read from the code at run time so the raw baseline batches the same way."""
    import inspect

    from ipoib.perf import PerfSender

    return int(inspect.signature(PerfSender).parameters["burst"].default)


def ud_burst():
    """Frames per host-loop iteration of ``perf --ud`` (``UdPerfSender``'s default ``burst``), or
    None when this tree has no such mode."""
    import inspect

    from ipoib import perf

    cls = getattr(perf, "UdPerfSender", None)
    return None if cls is None else int(inspect.signature(cls).parameters["burst"].default)


def ud_bursts_per_tick() -> int:
    """Bursts ``perf --ud`` posts per host-loop pass (``ipoib.perf.BURSTS_PER_TICK``; 1 in trees
    without it), so that the raw baseline's sender does the same."""
    from ipoib import perf

    return int(getattr(perf, "BURSTS_PER_TICK", 1))


def _restore_env(key: str, old) -> None:
    if old is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = old


@contextlib.contextmanager
def ipoib_fabric(backend: str, name: str, topology: str = "single:2", src: str = "node0001",
                 dst: str = "node0002", timeout: float = 30.0):
    """A fabric whose device hosts run the IPoIB ``backend`` (the hosts pick it from
    IPOIB_BACKEND when they import ipoib), returned once ``src`` can ping ``dst``. Torn down on
    the way out, whatever happens."""
    from fabric import Fabric

    old = os.environ.get("IPOIB_BACKEND")
    os.environ["IPOIB_BACKEND"] = backend
    try:
        with Fabric(topology, name=name) as fab:
            _restore_env("IPOIB_BACKEND", old)
            running = fab.nodes[src].status().get("backend")
            if running != backend:
                raise RuntimeError(f"asked for the {backend} backend, the device host runs {running!r}")
            ip = fab.nodes[dst].ip
            deadline = time.monotonic() + timeout
            while True:  # IPoIB is ready when the first echo comes back (join, ARP, path done)
                r = fab.client.call(src, "ping", dst=ip, count=1, interval=0.0, timeout=0.5, size=56)
                if r["received"]:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{src} cannot ping {dst} ({ip}) after {timeout} s: {r}")
            yield fab
    finally:
        _restore_env("IPOIB_BACKEND", old)


def layout_of(fab) -> str:
    """'1p' when every device of the fabric runs in one device-host process, else '3p'."""
    return "1p" if len(fab.info.hosts) == 1 else "3p"


LAYOUT_TEXT = {"1p": "sender, forwarder and sink in 1 process (inproc://)",
               "3p": "sender, forwarder and sink in 3 processes (ipc://)"}


def fabric_perf(fab, size: int, seconds: float, src: str = "node0001", dst: str = "node0002",
                port: int = 5201, ud: bool = False, gso: bool = False) -> dict:
    """UDP throughput the way ``ibfab perf`` measures it (fabric/cli.py ``_cmd_perf``); with
    ``ud``, ``ibfab perf --ud``: frames posted to the QP and counted at the driver, no IP stack."""
    ip = fab.nodes[dst].ip
    extra = {"ud": True} if ud else {}
    sink = fab.client.call(dst, "perf_sink", port=port, **extra)
    snd = fab.client.call(src, "perf_send", dst=ip, port=port, size=size, seconds=seconds, **extra,
                          **({"gso": True} if gso else {}))
    time.sleep(0.2)  # let the tail drain
    rcv = fab.client.call(dst, "perf_sink_result", sink=sink)
    secs = rcv["seconds"] or snd["seconds"]
    return {"sent": snd["sent"], "received": rcv["packets"], "seconds": secs,
            "loss_pct": 100.0 * (1 - rcv["packets"] / snd["sent"]) if snd["sent"] else 0.0,
            "pps": rcv["packets"] / secs if secs else 0.0,
            "gbps": rcv["bytes"] * 8 / secs / 1e9 if secs else 0.0,
            "rcvbuf_drops": rcv.get("rcvbuf_drops", 0)}


def fabric_ping_adaptive(fab, count: int, size: int = 56, src: str = "node0001", dst: str = "node0002") -> dict:
    """``ibfab perf --latency``: ping -A, the next echo request as soon as the last is answered
    (one in flight), all in the device host. {rtts (s), sent, received}."""
    rtts, sent, received = [], 0, 0
    while sent < count:
        # one call may not wait longer than the RPC limit (600 s) in the worst case of every echo
        # timing out: chunks of 400 echoes of at most 1 s each
        n = min(400, count - sent)
        r = fab.client.call(src, "ping", dst=fab.nodes[dst].ip, count=n, interval=0.0, timeout=1.0, size=size,
                            adaptive=True)
        rtts += [x[1] for x in r.get("replies", [])]
        sent += r["transmitted"]
        received += r["received"]
    return {"rtts": rtts, "sent": sent, "received": received}


def fabric_ping_ud(fab, count: int, size: int = 56, src: str = "node0001", dst: str = "node0002",
                   port: int = 5202) -> dict:
    """``ibfab perf --latency --ud``: one UDP-in-IPoIB frame at a time posted to the QP, echoed by
    a hook at the far driver (ib_send_lat on UD). {rtts (s), sent, received}."""
    sink = fab.client.call(dst, "perf_sink", port=port, ud=True, echo=True)
    try:
        r = fab.client.call(src, "perf_ping_ud", dst=fab.nodes[dst].ip, port=port, size=size, count=count)
    finally:
        fab.client.call(dst, "perf_sink_result", sink=sink)
    return {"rtts": r["rtts"], "sent": r["sent"], "received": len(r["rtts"])}


def fabric_ping_sequential(fab, count: int, size: int = 56, src: str = "node0001", dst: str = "node0002",
                           give_up: int = 3) -> dict:
    """One echo at a time (a ping of count 1 per RPC call, so one in flight); the RTT is the one
    the IP stack measures, without the RPC. Stops early after ``give_up`` echoes lost in a row
    (each costs the 1 s timeout)."""
    ip = fab.nodes[dst].ip
    rtts, sent, lost_in_a_row = [], 0, 0
    for _ in range(count):
        r = fab.client.call(src, "ping", dst=ip, count=1, interval=0.0, timeout=1.0, size=size)
        sent += r["transmitted"]
        got = [x[1] for x in r.get("replies", [])]
        rtts += got
        lost_in_a_row = 0 if got else lost_in_a_row + 1
        if lost_in_a_row >= give_up:
            break
    return {"rtts": rtts, "sent": sent, "received": len(rtts)}


def cpu_seconds(pids) -> float:
    """utime + stime of the processes (from /proc/<pid>/stat), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        total += int(rest[11]) + int(rest[12])  # fields 14 and 15
    return total / tick


def median_p99(values) -> tuple:
    """(median, p99) of a sample, as ``ibfab perf --latency`` computes them; (None, None) if empty."""
    v = sorted(values)
    if not v:
        return None, None
    n = len(v)
    med = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return med, v[min(n - 1, int(n * 0.99))]


ROLES = {"stream-1p": lambda *a: print(json.dumps(stream_1p(*a)), flush=True),
         "rr-1p": lambda *a: print(json.dumps(rr_1p(*a)), flush=True),
         "sink": role_sink, "fwd": role_fwd, "echo": role_echo, "gen": role_gen, "client": role_client}

if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ROLES[sys.argv[1]](*sys.argv[2:])
