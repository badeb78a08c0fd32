"""``ibfab perf``: throughput and latency between two nodes (like iperf3, ib_send_bw and
ib_send_lat), run as agents of the HCAs inside the device hosts, and their RPC operations."""

from __future__ import annotations

import itertools
import time


from . import core as backend_core
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
        self.node.hca.agents.remove(self)

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
        n = self.ifc.netdev.send_burst(self.frames, self.ah, self.dqpn)
        self.sent += n
        if n < self.burst:
            self.busy += 1  # the send queue is full: wait for it, as ib_send_bw waits on its CQ

    def result(self) -> dict:
        if self.error:
            raise ValueError(self.error)
        return {"sent": self.sent, "errors": self.errors, "busy": self.busy,
                "seconds": self.finished - (self.start or self.finished)}


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

    def _on_path(self, t: float) -> None:
        self.ctx.rx_sink = self.hook  # catch the answers at our driver

    def tick(self, now: float) -> None:
        t = time.monotonic()
        if not self._path_ready(t):
            return
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
        return {"rtts": self.rtts, "lost": self.lost, "sent": len(self.rtts) + self.lost}


def attach_perf(host, embedded) -> None:
    """The perf RPC ops; ``embedded(device)`` is the IPoIB node whose embedded IP stack they use (a
    clear error for a node whose IP host is the kernel)."""
    sinks: dict = {}
    ids = itertools.count(1)

    def op_perf_sink(env, now, device, port=5201, ud=False, echo=False):
        n = embedded(device)
        s = n.ip.udp_socket()
        s.bind(int(port))
        s.rcvbuf = 1 << 16
        s.udp_gro = True  # as iperf3 does not, but a UDP receiver that wants speed would (UDP_GRO)
        sid = next(ids)
        if ud:  # count at the driver of every interface, before the stack
            hook = backend_core.UdpSink(int(port), echo=bool(echo))
            for ifc in n.ifs.values():
                ifc.netdev.standard.ctx.rx_sink = hook
            sinks[sid] = ("ud", n, s, hook)
        else:
            sinks[sid] = PerfSink(n, s)
        return sid

    def op_perf_sink_result(env, now, device, sink, close=True):
        s = sinks[sink]
        if isinstance(s, tuple):
            _, n, sock, hook = s
            r = dict(hook.result(), rcvbuf_drops=0)
            if close:
                for ifc in n.ifs.values():
                    if ifc.netdev.standard.ctx.rx_sink is hook:
                        ifc.netdev.standard.ctx.rx_sink = None
                sock.close()
                del sinks[sink]
            return r
        s.tick(now)
        r = s.result()
        if close:
            s.close()
            del sinks[sink]
        return r

    def op_perf_send(env, now, device, dst, port=5201, size=1024, seconds=1.0, ud=False, gso=False):
        n = embedded(device)
        s = n.ip.udp_socket()
        s.bind(0)
        if ud:
            try:
                sender = UdPerfSender(n, s, dst, int(port), int(size), float(seconds))
            except Exception:
                s.close()
                raise
        else:
            sender = PerfSender(n, s, dst, int(port), int(size), float(seconds), gso=bool(gso))

        def check():
            if not sender.done:
                return None
            s.close()
            return sender.result()

        return host.defer(env, now, float(seconds) + 5.0, check, None)

    def op_perf_ping_ud(env, now, device, dst, port=5201, size=56, count=200, timeout=1.0):
        n = embedded(device)
        s = n.ip.udp_socket()
        s.bind(0)
        try:
            client = UdLatencyClient(n, s, dst, int(port), int(size), int(count), float(timeout))
        except Exception:
            s.close()
            raise

        def check():
            if not client.done:
                return None
            s.close()
            return client.result()

        return host.defer(env, now, UdLatencyClient.RESOLVE_S + count * timeout + 2.0, check, None)

    for fn in (op_perf_sink, op_perf_sink_result, op_perf_send, op_perf_ping_ud):
        host.add_op(fn.__name__[3:], fn)
