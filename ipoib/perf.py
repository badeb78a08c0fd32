"""``ibfab perf``: throughput and latency between two nodes (like iperf3, ib_send_bw and
ib_send_lat), run as agents of the HCAs inside the device hosts, and their RPC operations."""

from __future__ import annotations

import itertools
import time

from fabric.host.lease import Lease

from . import encap, inet


class PerfSender:
    """Sends UDP datagrams as fast as the stack takes them, a burst per loop iteration, for
    ``seconds``; runs as an agent of the HCA so the host loop stays responsive."""

    def __init__(self, node, sock, dst, port, size, seconds, burst=32, gso=False):
        self.node, self.sock, self.dst, self.port = node, sock, dst, port
        self.payload = bytes(size)
        self.burst = burst
        self.gso = gso and size > 0  # UDP_SEGMENT: the burst as one buffer, one sendto
        if self.gso:
            sock.gso_size = size
            self.buffer = self.payload * burst
        self.start = time.monotonic()
        self.end = self.start + seconds
        self.sent = 0
        self.errors = 0
        self.done = False
        node.hca.agents.append(self)

    def next_deadline(self):
        return None if self.done else 0.0

    def tick(self, now: float) -> None:
        if time.monotonic() >= self.end:
            self.done = True
            self.finished = time.monotonic()
            self.node.hca.agents.remove(self)
            return
        if self.gso:
            try:
                self.sock.sendto(self.buffer, (self.dst, self.port))
                self.sent += self.burst
            except OSError:
                self.errors += self.burst
            return
        for _ in range(self.burst):
            try:
                self.sock.sendto(self.payload, (self.dst, self.port))
                self.sent += 1
            except OSError:
                self.errors += 1

    def stop(self) -> None:
        """^C: stop now."""
        if not self.done:
            self.done = True
            self.finished = time.monotonic()
            if self in self.node.hca.agents:
                self.node.hca.agents.remove(self)

    def progress(self) -> dict:
        end = self.finished if self.done else time.monotonic()
        return {"sent": self.sent, "errors": self.errors, "seconds": end - self.start, "done": self.done}

    def result(self) -> dict:
        return {"sent": self.sent, "errors": self.errors, "seconds": self.finished - self.start}


class PerfSink:
    """Counts and discards what arrives on a UDP port (drained every loop iteration)."""

    def __init__(self, node, sock):
        self.node, self.sock = node, sock
        self.packets = self.bytes = 0
        self.first = self.last = None
        node.hca.agents.append(self)

    def next_deadline(self):
        return 0.0 if self.sock.pending() else None

    def tick(self, now: float) -> None:
        while True:
            m = self.sock.recvmsg()  # with UDP_GRO: a message may hold several datagrams
            if m is None:
                return
            t = time.monotonic()
            self.first = self.first or t
            self.last = t
            self.packets += m.segments
            self.bytes += len(m.data)

    def result(self) -> dict:
        return {"packets": self.packets, "bytes": self.bytes,
                "seconds": (self.last - self.first) if self.first else 0.0,
                "rcvbuf_drops": self.sock.rx_dropped}

    def close(self) -> None:
        if self in self.node.hca.agents:
            self.node.hca.agents.remove(self)
        self.sock.close()


BURSTS_PER_TICK = 4  # posts of ``burst`` frames per pass of the host loop (each its own link burst)


class UdPerfSender:
    """``perf --ud``: IPoIB frames (IPv4/UDP inside, the same octets as ``--udp`` puts on the wire)
    posted straight to the interface's QP through the rdma_netdev burst op, like ib_send_bw on a UD
    QP: no IP stack. The path comes from the ULP: one datagram through the stack resolves ARP and
    the PathRecord first."""

    RESOLVE_S = 3.0

    def __init__(self, node, sock, dst, port, size, seconds, burst=64):
        self.node, self.sock, self.dst, self.port, self.size = node, sock, dst, port, size
        self.burst, self.seconds = burst, seconds
        iface = node.ip.route(dst)
        if iface is None:
            raise ValueError(f"no route to {dst}")
        self.ifc = node.ifs[iface.name]
        if size + 28 + 4 > self.ifc.mtu + 4:
            raise ValueError(f"--ud sends whole datagrams: at most {self.ifc.mtu - 28} octets on {iface.name}")
        src, dip = iface.addr, inet.ip4(dst)
        frame = encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack() + inet.build_ipv4(
            src, dip, inet.IPPROTO_UDP, inet.build_udp(src, dip, sock.port, port, bytes(size)), ident=1)
        self.frames = [frame] * burst
        self.dip = dip
        self.sent, self.busy, self.errors = 1, 0, 0  # 1: the datagram that resolves the path
        self.start = self.end = None
        self.deadline = time.monotonic() + self.RESOLVE_S
        self.ah = None
        self.done = False
        self.error = None
        sock.sendto(bytes(size), (dst, port))  # ARP and the path, through the stack
        node.hca.agents.append(self)

    def _resolve(self):
        n = self.ifc.neigh.get(self.dip)
        if n is None or n.hwaddr is None:
            return None
        qpn, dgid = encap.split_hwaddr(n.hwaddr)
        p = self.ifc.paths.get(dgid)
        return (p.ah, qpn) if p is not None and p.valid else None

    def next_deadline(self):
        return None if self.done else 0.0

    def _finish(self, error=None):
        self.done = True
        self.error = error
        self.finished = time.monotonic()
        if self in self.node.hca.agents:
            self.node.hca.agents.remove(self)

    def stop(self) -> None:
        """^C: stop now."""
        if not self.done:
            self._finish()

    def progress(self) -> dict:
        if self.error:
            raise ValueError(self.error)
        end = self.finished if self.done else time.monotonic()
        return {"sent": self.sent, "errors": self.errors, "busy": self.busy,
                "seconds": end - (self.start or end), "done": self.done}

    def _path_ready(self, t: float) -> bool:
        """True once ARP and the PathRecord gave us the address handle (``_on_path`` runs then);
        gives up after RESOLVE_S."""
        if self.ah is not None:
            return True
        r = self._resolve()
        if r is None:
            if t > self.deadline:
                self._finish(f"could not resolve {self.dst} (ARP or PathRecord)")
            return False
        self.ah, self.dqpn = r
        self._on_path(t)
        return True

    def _on_path(self, t: float) -> None:
        self.start, self.end = t, t + self.seconds

    def tick(self, now: float) -> None:
        t = time.monotonic()
        if not self._path_ready(t):
            return
        if t >= self.end:
            self._finish()
            return
        for _ in range(BURSTS_PER_TICK):
            n = self.ifc.netdev.send_burst(self.frames, self.ah, self.dqpn)
            self.sent += n
            if n < self.burst:
                self.busy += 1  # the send queue is full: wait for it, as ib_send_bw waits on its CQ
                break

    def result(self) -> dict:
        if self.error:
            raise ValueError(self.error)
        return {"sent": self.sent, "errors": self.errors, "busy": self.busy,
                "seconds": self.finished - (self.start or self.finished)}


SETTLE_S = 0.2  # how long the latency client waits for the echo of the path's resolving datagram


class UdLatencyClient(UdPerfSender):
    """``perf --latency --ud``: one UDP-in-IPoIB frame at a time posted to the QP (like
    ib_send_lat), answered by an echo hook at the far driver, its answer caught by a hook at ours;
    the round trip is the time between the post and the poll that sees the answer."""

    def __init__(self, node, sock, dst, port, size, count, timeout=1.0):
        super().__init__(node, sock, dst, port, size, seconds=0.0, burst=1)
        self.count, self.timeout = count, timeout
        self.ctx = self.ifc.netdev.standard.ctx
        self.hook = node.backend.UdpSink(sock.port)
        self.rtts, self.lost = [], 0
        self.sent_at = None
        self.expect = 0
        self.settle_until = None
        self.strays = 0

    def _on_path(self, t: float) -> None:
        self.ctx.rx_sink = self.hook  # catch the answers at our driver
        # the datagram that resolved the path went to the echo too, and its echo may still be on
        # its way: counted as the answer to our first frame, it would leave two frames in flight
        # and every round trip measured against the wrong answer (half of them from a stale echo)
        self.settle_until = t + SETTLE_S

    def tick(self, now: float) -> None:
        t = time.monotonic()
        if not self._path_ready(t):
            return
        if self.settle_until is not None:
            if self.hook.packets == 0 and t < self.settle_until:
                return
            self.settle_until = None
            self.strays = self.hook.packets  # echoes that answer none of ours
        if self.sent_at is not None:
            if self.hook.packets > self.expect:
                self.rtts.append(self.hook.last - self.sent_at)
                self.sent_at = None
            elif t - self.sent_at > self.timeout:
                self.lost += 1
                self.sent_at = None
            else:
                return
        if len(self.rtts) + self.lost >= self.count:
            self._finish()
            return
        self.expect = self.hook.packets
        self.sent_at = time.monotonic()
        if self.ifc.netdev.send(self.frames[0], self.ah, self.dqpn) != 0:
            self.lost += 1
            self.sent_at = None

    def next_deadline(self):
        if self.done:
            return None
        if self.settle_until is not None and self.hook.packets == 0:
            return self.settle_until
        if self.sent_at is None or self.hook.packets > self.expect:
            return 0.0
        return self.sent_at + self.timeout

    def _finish(self, error=None):
        if self.ctx.rx_sink is self.hook:
            self.ctx.rx_sink = None
        super()._finish(error)

    def result(self) -> dict:
        if self.error:
            raise ValueError(self.error)
        return {"rtts": self.rtts, "lost": self.lost, "sent": len(self.rtts) + self.lost, "strays": self.strays,
                "echoes": self.hook.packets}


def attach_perf(host, embedded) -> None:
    """The perf RPC ops; ``embedded(device)`` is the IPoIB node whose embedded IP stack they use (a
    clear error for a node whose IP host is the kernel).

    ``perf_sink`` + ``perf_send`` + ``perf_sink_result`` run a measurement in one call each (the
    benches); ``ibfab perf`` streams instead: ``perf_start``, then ``perf_status`` and
    ``perf_sink_result(close=False)`` every second, ``perf_stop`` on ^C. What it opens is under a
    :class:`Lease`: freed when nobody has asked about it for LEASE_S."""
    sinks: dict = {}
    senders: dict = {}
    ids = itertools.count(1)

    def _port(port):
        port = int(port)
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not 1..65535")
        return port

    def _close_sink(sid):
        s = sinks.pop(sid, None)
        if s is None:
            return
        lease = s[-1]
        if isinstance(s[0], PerfSink):
            s[0].close()
        else:
            _, n, sock, hook, _ = s
            for ifc in n.ifs.values():
                if ifc.netdev.standard.ctx.rx_sink is hook:
                    ifc.netdev.standard.ctx.rx_sink = None
            sock.close()
        if lease is not None:
            lease.cancel()

    def op_perf_sink(env, now, device: str, port: int = 5201, ud: bool = False, echo: bool = False, lease: bool = False):
        n = embedded(device)
        port = _port(port)
        s = n.ip.udp_socket()
        try:
            s.bind(port)
        except OSError:
            s.close()
            raise
        s.rcvbuf = 1 << 16
        s.udp_gro = True  # as iperf3 does not, but a UDP receiver that wants speed would (UDP_GRO)
        sid = next(ids)
        guard = Lease(n.hca, lambda: _close_sink(sid), now) if lease else None
        if ud:  # count at the driver of every interface, before the stack
            hook = n.backend.UdpSink(port, echo=bool(echo))  # the node's provider (a fabric may mix them)
            for ifc in n.ifs.values():
                ifc.netdev.standard.ctx.rx_sink = hook
            sinks[sid] = ("ud", n, s, hook, guard)
        else:
            sinks[sid] = (PerfSink(n, s), guard)
        return sid

    def op_perf_sink_result(env, now, device: str, sink: int, close: bool = True):
        s = sinks.get(sink)
        if s is None:
            raise KeyError(f"no perf sink {sink!r} (closed, or its client went away)")
        if isinstance(s[0], PerfSink):
            s[0].tick(now)
            r = s[0].result()
        else:
            r = dict(s[3].result(), rcvbuf_drops=0)
        if close:
            _close_sink(sink)
        elif s[-1] is not None:
            s[-1].renew(now)
        return r

    def _sender(device, dst, port, size, seconds, ud, gso):
        n = embedded(device)
        port, size, seconds = _port(port), int(size), float(seconds)
        if not 0 <= size <= 65507:
            raise ValueError(f"size {size} is not 0..65507 (a UDP datagram)")
        if not 0 < seconds <= 86400:
            raise ValueError(f"seconds {seconds:g} is not above 0 and at most a day")
        s = n.ip.udp_socket()
        s.bind(0)
        try:
            if ud:
                return n, s, UdPerfSender(n, s, dst, port, size, seconds)
            return n, s, PerfSender(n, s, dst, port, size, seconds, gso=bool(gso))
        except Exception:
            s.close()
            raise

    def op_perf_send(env, now, device: str, dst: str, port: int = 5201, size: int = 1024, seconds: float = 1.0,
                     ud: bool = False, gso: bool = False):
        if not seconds <= 600:
            raise ValueError(f"a run of {seconds:g} s is too long to wait for in one call (at most 600 s): "
                             f"stream it with perf_start")
        _, s, sender = _sender(device, dst, port, size, seconds, ud, gso)

        def check():
            if not sender.done:
                return None
            s.close()
            return sender.result()

        return host.defer(env, now, float(seconds) + 5.0, check, None)

    def _drop_sender(sid):
        e = senders.pop(sid, None)
        if e is not None:
            _, sock, sender, lease = e
            sender.stop()
            sock.close()
            lease.release()

    def op_perf_start(env, now, device: str, dst: str, port: int = 5201, size: int = 1024, seconds: float = 1.0,
                      ud: bool = False, gso: bool = False):
        n, s, sender = _sender(device, dst, port, size, seconds, ud, gso)
        sid = next(ids)
        senders[sid] = (n, s, sender, Lease(n.hca, lambda: _drop_sender(sid), now))
        return sid

    def op_perf_status(env, now, device: str, sender: int):
        e = senders.get(sender)
        if e is None:
            raise KeyError(f"no perf sender {sender!r} (finished and collected, or its client went away)")
        e[3].renew(now)
        try:
            r = e[2].progress()
        except ValueError:
            _drop_sender(sender)
            raise
        if r["done"]:
            _drop_sender(sender)
        return r

    def op_perf_stop(env, now, device: str, sender: int):
        e = senders.get(sender)
        if e is None:
            return None
        e[2].stop()
        r = e[2].progress()
        _drop_sender(sender)
        return r

    def op_perf_ping_ud(env, now, device: str, dst: str, port: int = 5201, size: int = 56, count: int = 200,
                        timeout: float = 1.0):
        if not (0 <= size <= 65507 and 1 <= count <= 1_000_000 and 0 < timeout <= 60):
            raise ValueError("size must be 0..65507, count 1..1000000 and timeout above 0 and at most 60 s")
        n = embedded(device)
        s = n.ip.udp_socket()
        s.bind(0)
        try:
            client = UdLatencyClient(n, s, dst, _port(port), int(size), int(count), float(timeout))
        except Exception:
            s.close()
            raise

        def check():
            if not client.done:
                return None
            s.close()
            return client.result()

        return host.defer(env, now, UdLatencyClient.RESOLVE_S + count * timeout + 2.0, check, None,
                          on_timeout=lambda: (client.stop(), s.close()))

    for fn in (op_perf_sink, op_perf_sink_result, op_perf_send, op_perf_start, op_perf_status, op_perf_stop,
               op_perf_ping_ud):
        host.add_op(fn.__name__[3:], fn)
