"""The embedded IP host of an IPoIB node: a sans-IO IPv4/ICMP/UDP stack.

No sockets, no threads, no clock of its own: packets come in through :meth:`IpStack.input`, go out
through each interface's ``xmit`` callable, and time comes from the ``now`` callable and from
:meth:`IpStack.tick`. The stack is a host: it never forwards. What it does and why is in
``docs/ip.md``; the short version:

- on-link routing only (longest prefix among the interfaces' subnets), weak host model on receive;
- ICMP echo replies, echo requests through :class:`PingSession`, port/protocol unreachable and
  fragment-reassembly-time-exceeded errors; broadcast and multicast echo requests are ignored
  (Linux's ``icmp_echo_ignore_broadcasts=1``, switchable);
- IPv4 fragmentation on send, reassembly on receive (30 s, bounded memory, overlaps kill the
  queue, exact duplicates are dropped alone, like Linux since 4.19);
- UDP sockets with bind/sendto/recvfrom, a bounded receive queue, multicast membership with the
  Linux default ``IP_MULTICAST_ALL=1``;
- every received packet ends in exactly one place: delivered, dropped with a reason, or waiting in
  a reassembly queue; nothing a peer sends can make :meth:`IpStack.input` raise.
"""

from __future__ import annotations

import errno as _errno
import logging
import zlib
from collections import deque

from fabric.wire.errors import ParseError

from ..gso import GsoPacket, segment
from .common import (_EXTRA_KEYS, _LINK_KEYS, _SNMP, ALL_HOSTS, ANY, BROADCAST, LO_MTU, MAX_DATAGRAM, MAX_MTU,
                     MIN_MTU, RCVBUF_DATAGRAMS, REASM_MAX_BYTES, REASM_MAX_QUEUES, REASM_TIMEOUT, EPHEMERAL_PORTS,
                     Interface, _addr, _Counters, _Datagram, _ipstr, _is_mcast)
from .frag import Reassembly, _FragQueue
from .icmp import Icmp, PingSession
from ..inet import (ICMP_DEST_UNREACH, IP_FLAG_MF, IPPROTO_ICMP, IPPROTO_UDP, build_ipv4, build_udp,
                   parse_ipv4)
from .udp import Udp, UdpSocket

log = logging.getLogger(__name__)


class IpStack(Reassembly, Icmp, Udp):
    """The IPv4 host stack of one node. See the module docstring and docs/ip.md."""

    def __init__(self, node: str, *, now=lambda: 0.0, reasm_timeout: float = REASM_TIMEOUT,
                 reasm_max_queues: int = REASM_MAX_QUEUES, reasm_max_bytes: int = REASM_MAX_BYTES,
                 rcvbuf: int = RCVBUF_DATAGRAMS):
        self.node = node
        self._now = now
        self.reasm_timeout = reasm_timeout
        self.reasm_max_queues = reasm_max_queues
        self.reasm_max_bytes = reasm_max_bytes
        self.rcvbuf = rcvbuf
        self.icmp_echo_ignore_broadcasts = True  # net.ipv4.icmp_echo_ignore_broadcasts
        self.default_ttl = 64  # net.ipv4.ip_default_ttl
        self._ifaces: dict[str, Interface] = {}
        self._local: set[bytes] = set()
        self._lo = Interface("lo", bytes([127, 0, 0, 1]), 8, LO_MTU, None)
        self._stack_ctr = _Counters("")  # frames for no interface, sends with no route
        self._retired: list[_Counters] = []
        self._snmp = {k: dict.fromkeys(v, 0) for k, v in _SNMP.items()}
        seed = zlib.crc32(node.encode())
        self._ident = seed & 0xFFFF
        self._ping_id = (seed >> 16) & 0xFFFF
        self._sessions: dict[int, PingSession] = {}
        self._ports: dict[int, list[UdpSocket]] = {}
        self._next_ephemeral = EPHEMERAL_PORTS[0]
        self._frags: dict[tuple, _FragQueue] = {}
        self._frag_bytes = 0
        self._loopq: deque = deque()
        self._draining = False
        self._gro, self._gro_taken = None, False  # the coalesced run whose first datagram is being received

    def __repr__(self):
        return f"IpStack({self.node!r}, {list(self._ifaces.values())!r})"

    # -- interfaces ------------------------------------------------------------------------------

    @property
    def interfaces(self) -> dict[str, Interface]:
        return dict(self._ifaces)

    def attach(self, driver, addr, prefix: int, mtu: int) -> "StackLink":
        """The IP-host boundary (:mod:`ipoib.iphost`): take ``driver.ifname`` as an interface with
        ``addr``/``prefix``, carrier off until the link says otherwise."""
        self.add_interface(driver.ifname, addr, prefix, mtu,
                           lambda ifname, next_hop, pkt: driver.xmit(next_hop, pkt, self._now()),
                           carrier=False, join=lambda ifname, g: driver.join_group(g, self._now()),
                           leave=lambda ifname, g: driver.leave_group(g, self._now()))
        return StackLink(self, driver.ifname)

    def add_interface(self, ifname: str, addr, prefix: int, mtu: int, xmit, *, carrier: bool = True,
                      join=None, leave=None) -> Interface:
        """``xmit(ifname, next_hop: bytes, ip_packet: bytes) -> bool`` hands one IPv4 packet to the
        link; False means the link refused or dropped it (None counts as accepted).
        ``join(ifname, group)``/``leave(ifname, group)`` tell the link that the interface's first
        member of an IPv4 group came, or its last went (the link joins the group's MGID)."""
        if not ifname or ifname in self._ifaces or ifname == "lo":
            raise ValueError(f"interface name {ifname!r} is empty, taken or reserved")
        a = _addr(addr)
        prefix = int(prefix)
        if not 0 <= prefix <= 32:
            raise ValueError(f"prefix /{prefix} is not 0..32")
        if _is_mcast(a) or a in (ANY, BROADCAST) or a[0] == 127:
            raise ValueError(f"{_ipstr(a)} cannot be an interface address")
        if not callable(xmit):
            raise TypeError("xmit must be callable")
        iface = Interface(ifname, a, prefix, self._check_mtu(mtu), xmit, bool(carrier))
        iface.join, iface.leave = join, leave
        self._ifaces[ifname] = iface
        self._local.add(a)
        return iface

    def remove_interface(self, ifname: str) -> None:
        """Remove the interface: its groups are left (its ``leave`` hook), sockets lose their
        memberships on it, its counters still count in the totals of :meth:`stats`."""
        iface = self._iface(ifname)
        for sockets in self._ports.values():
            for s in sockets:
                s.memberships = {m for m in s.memberships if m[0] != ifname}
        groups = [g for g in iface.groups if g != ALL_HOSTS]
        del self._ifaces[ifname]
        self._local = {i.addr for i in self._ifaces.values()}
        self._retired.append(iface.counters)
        for g in groups:
            iface.groups.pop(g, None)
            self._hook(iface.leave, ifname, g)

    def set_mtu(self, ifname: str, mtu: int) -> None:
        self._iface(ifname).mtu = self._check_mtu(mtu)

    def set_carrier(self, ifname: str, up: bool) -> None:
        self._iface(ifname).carrier = bool(up)

    def _iface(self, ifname: str) -> Interface:
        try:
            return self._ifaces[ifname]
        except KeyError:
            raise KeyError(f"{self.node}: no interface {ifname!r}") from None

    @staticmethod
    def _check_mtu(mtu) -> int:
        mtu = int(mtu)
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise ValueError(f"MTU {mtu} is not {MIN_MTU}..{MAX_MTU}")
        return mtu

    def memberships(self, ifname: str) -> frozenset:
        """The IPv4 groups ``ifname`` receives (224.0.0.1 always; ``ip maddr show``)."""
        return self._iface(ifname).memberships

    def route(self, dst, ifname: str | None = None) -> Interface | None:
        """The interface a packet to ``dst`` leaves by. On-link routes only: the longest prefix
        among the interfaces' subnets (an up interface wins a tie, then the first added); one of
        our own addresses gives the interface that holds it (the packet itself loops back);
        255.255.255.255 and 224.0.0.0/4 go out ``ifname`` if given, else the first up interface
        (the first interface when none is up). ``ifname`` given: that interface, whatever ``dst``."""
        dst = _addr(dst)
        if ifname is not None:
            return self._ifaces.get(ifname)
        if dst == BROADCAST or _is_mcast(dst):
            for i in self._ifaces.values():
                if i.carrier:
                    return i
            return next(iter(self._ifaces.values()), None)
        best, key = None, None
        for n, i in enumerate(self._ifaces.values()):
            if i.addr == dst:
                return i
            if i.on_link(dst):
                k = (i.prefix, i.carrier, -n)
                if key is None or k > key:
                    best, key = i, k
        return best

    # -- transmit --------------------------------------------------------------------------------

    def _next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def _no_route(self) -> None:
        self._snmp["ip"]["OutNoRoutes"] += 1
        self._stack_ctr.tx_drop("no_route")

    def _send_ip(self, dst: bytes, proto: int, payload: bytes, *, src: bytes | None = None,
                 iface: Interface | None = None, ttl: int | None = None, df: bool = False) -> int:
        """Send one datagram, fragmenting it to the interface's MTU. Returns 0 or an errno:
        ENETUNREACH (no route), EMSGSIZE, ENETDOWN (carrier off), EHOSTUNREACH (xmit refused)."""
        ip = self._snmp["ip"]
        ip["OutRequests"] += 1
        ttl = self.default_ttl if ttl is None else ttl
        if 20 + len(payload) > MAX_DATAGRAM:
            ip["OutDiscards"] += 1
            return _errno.EMSGSIZE
        if dst in self._local:  # to ourselves: through the loopback, unfragmented
            pkt = build_ipv4(src or dst, dst, proto, payload, ttl=ttl, ident=self._next_ident(), df=df)
            lo = self._lo.counters.c
            lo["tx_packets"] += 1
            lo["tx_bytes"] += len(pkt)
            self._loop(pkt)
            return 0
        if iface is None:
            iface = self.route(dst)
            if iface is None:
                self._no_route()
                return _errno.ENETUNREACH
        src = src or iface.addr
        ident = self._next_ident()
        if 20 + len(payload) <= iface.mtu:
            pkts = [build_ipv4(src, dst, proto, payload, ttl=ttl, ident=ident, df=df)]
        elif df:
            ip["FragFails"] += 1
            return _errno.EMSGSIZE
        else:
            chunk = (iface.mtu - 20) & ~7
            pkts = [build_ipv4(src, dst, proto, payload[o:o + chunk], ttl=ttl, ident=ident, df=False,
                               mf=o + chunk < len(payload), frag_offset=o >> 3)
                    for o in range(0, len(payload), chunk)]
            ip["FragOKs"] += 1
            ip["FragCreates"] += len(pkts)
        ctr = iface.counters
        if not iface.carrier:
            for _ in pkts:
                ctr.tx_drop("carrier_down")
            ip["OutDiscards"] += 1
            return _errno.ENETDOWN
        for pkt in pkts:
            try:
                ok = iface.xmit(iface.name, dst, pkt)
            except Exception:
                log.exception("%s: xmit on %s raised", self.node, iface.name)
                ctr.tx_drop("xmit_error")
                ip["OutDiscards"] += 1
                return _errno.EHOSTUNREACH
            if ok is not None and not ok:
                ctr.tx_drop("xmit_failed")
                ip["OutDiscards"] += 1
                return _errno.EHOSTUNREACH  # the rest of a fragmented datagram is not sent
            ctr.c["tx_packets"] += 1
            ctr.c["tx_bytes"] += len(pkt)
        return 0

    def _send_udp_gso(self, dst: bytes, src: bytes, sport: int, dport: int, data: bytes, gso: int, segs: int,
                      iface: Interface, ttl: int) -> int:
        """The GSO half of _send_ip: one packet standing for ``segs`` datagrams, with consecutive
        IP identifications from the first. Every counter counts datagrams, as if sent one by one."""
        ip = self._snmp["ip"]
        ip["OutRequests"] += segs
        ctr = iface.counters
        if not iface.carrier:
            for _ in range(segs):
                ctr.tx_drop("carrier_down")
            ip["OutDiscards"] += segs
            return _errno.ENETDOWN
        ident = self._next_ident()
        self._ident = (ident + segs - 1) & 0xFFFF  # the identifications the segments will carry
        first = build_ipv4(src, dst, IPPROTO_UDP, build_udp(src, dst, sport, dport, data[:gso]), ttl=ttl,
                           ident=ident, df=False)
        pkt = GsoPacket(first[:28] + data, gso)
        try:
            ok = iface.xmit(iface.name, dst, pkt)
        except Exception:
            log.exception("%s: xmit on %s raised", self.node, iface.name)
            ok = False
        if ok is not None and not ok:
            for _ in range(segs):
                ctr.tx_drop("xmit_failed")
            ip["OutDiscards"] += segs
            return _errno.EHOSTUNREACH
        ctr.c["tx_packets"] += segs
        ctr.c["tx_bytes"] += pkt.wire_len
        return 0

    def _loop(self, pkt: bytes) -> None:
        self._loopq.append(pkt)
        if self._draining:
            return
        self._draining = True
        try:
            while self._loopq:
                p = self._loopq.popleft()
                c = self._lo.counters
                c.c["rx_packets"] += 1
                c.c["rx_bytes"] += len(p)
                self._snmp["ip"]["InReceives"] += 1
                try:
                    self._ip_rcv(self._lo, c, p, loop=True)
                except Exception:
                    log.exception("%s: loopback receive failed", self.node)
                    c.rx_drop("internal_error")
        finally:
            self._draining = False

    # -- receive ---------------------------------------------------------------------------------

    def input(self, ifname: str, ip_packet) -> None:
        """An IPv4 packet from the link layer of ``ifname``. Never raises."""
        if type(ip_packet) is GsoPacket:
            self._input_gro(ifname, ip_packet)
            return
        iface = self._ifaces.get(ifname)
        ctr = iface.counters if iface is not None else self._stack_ctr
        try:
            data = bytes(ip_packet)
        except Exception:
            data = None
        ctr.c["rx_packets"] += 1
        ctr.c["rx_bytes"] += len(data) if data is not None else 0
        self._snmp["ip"]["InReceives"] += 1
        if iface is None:
            ctr.rx_drop("no_interface")
            return
        if data is None:
            ctr.rx_drop("malformed")
            return
        try:
            self._ip_rcv(iface, ctr, data)
        except Exception:  # a bug of ours; a peer's packet must not take the node down
            log.exception("%s: receive on %s failed", self.node, ifname)
            ctr.rx_drop("internal_error")

    def _input_gro(self, ifname: str, pkt: GsoPacket) -> None:
        """A run of UDP datagrams the provider coalesced (GRO): consecutive IP identifications,
        the same headers otherwise, every checksum verified. The first datagram goes through the
        whole receive path; if it lands on a socket with ``udp_gro``, that socket gets the run as
        one message and every counter counts each datagram; otherwise (or if anything is off) the
        run is split back into its datagrams, octet for octet, and each is received on its own."""
        try:
            first = bytes(pkt[:28 + pkt.gso_size])
            self._gro, self._gro_taken = pkt, False
            try:
                self.input(ifname, first)
            finally:
                self._gro = None
            if self._gro_taken:
                return
            rest = segment(pkt)[1:]
        except Exception:
            log.exception("%s: GRO receive on %s failed", self.node, ifname)
            return
        for seg in rest:
            self.input(ifname, seg)

    def _martian(self, src: bytes, dst: bytes) -> bool:
        if src == ANY:
            return dst != BROADCAST  # 0.0.0.0 only as a DHCP-style client's limited broadcast
        if _is_mcast(src) or src == BROADCAST or src[0] == 127 or src in self._local:
            return True
        return any(i.broadcast == src for i in self._ifaces.values())

    def _ip_rcv(self, iface: Interface, ctr: _Counters, data: bytes, loop: bool = False) -> None:
        ip = self._snmp["ip"]
        try:
            hdr, payload = parse_ipv4(data)
        except ParseError as e:
            ip["InHdrErrors"] += 1
            ctr.rx_drop(e.kind)
            return
        src, dst = hdr.src, hdr.dst
        if _is_mcast(dst):
            ctr.c["multicast"] += 1
        if loop:
            kind = "local"
        else:
            if self._martian(src, dst):
                ip["InAddrErrors"] += 1
                ctr.rx_drop("martian_source")
                return
            if dst in self._local:
                kind = "local"
            elif dst == BROADCAST or dst == iface.broadcast:
                kind = "broadcast"
            elif _is_mcast(dst) and dst in iface.groups:
                kind = "multicast"
            else:
                ip["InAddrErrors"] += 1
                ctr.rx_drop("not_for_us")  # a host does not forward
                return
        head = data[:hdr.ihl * 4]
        if hdr.flags & IP_FLAG_MF or hdr.frag_offset:
            self._defrag(iface, ctr, hdr, head, payload, kind)
            return
        self._deliver(_Datagram(hdr, head, payload, kind, iface, [ctr]))

    @staticmethod
    def _frames_ok(frames) -> None:
        for c in frames:
            c.c["rx_delivered"] += 1

    @staticmethod
    def _frames_drop(frames, reason: str) -> None:
        for c in frames:
            c.rx_drop(reason)

    def _deliver(self, d: _Datagram) -> None:
        proto = d.hdr.proto
        if proto == IPPROTO_ICMP:
            self._icmp_rcv(d)
        elif proto == IPPROTO_UDP:
            self._udp_rcv(d)
        else:
            self._snmp["ip"]["InUnknownProtos"] += 1
            self._frames_drop(d.frames, "unknown_protocol")
            self._icmp_error(d, ICMP_DEST_UNREACH, 2)
            return
        # InDelivers: handed to a transport, whatever it then made of it
        self._snmp["ip"]["InDelivers"] += 1

    # -- multicast membership ---------------------------------------------------------------------

    def _hook(self, fn, ifname: str, group: bytes) -> None:
        if fn is not None:
            fn(ifname, group)

    def _group_ref(self, iface: Interface, group: bytes, delta: int) -> None:
        n = iface.groups.get(group, 0)
        if delta > 0:
            iface.groups[group] = n + 1
            if n == 0 and group != ALL_HOSTS:
                try:
                    self._hook(iface.join, iface.name, group)
                except BaseException:
                    iface.groups.pop(group, None)
                    raise
        else:
            if n <= 1:
                iface.groups.pop(group, None)
                if group == ALL_HOSTS:
                    iface.groups[group] = 1
                else:
                    self._hook(iface.leave, iface.name, group)
            else:
                iface.groups[group] = n - 1

    # -- time --------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Run the timers due at ``now``: reassembly timeouts, ping sends and ping timeouts."""
        if not self._frags and not self._sessions:
            return  # the node ticks for every NAPI poll: nothing of ours is due then
        self._frag_expire(now)
        for s in list(self._sessions.values()):
            s._tick(now)

    def next_deadline(self) -> float | None:
        if not self._frags and not self._sessions:
            return None  # the usual case, asked after every packet the node receives
        c = [q.created + self.reasm_timeout for q in self._frags.values()]
        c += [d for d in (s._deadline() for s in self._sessions.values()) if d is not None]
        return min(c, default=None)

    # -- counters ----------------------------------------------------------------------------------

    def stats(self, ifname: str | None = None) -> dict:
        """Counters. With ``ifname`` (or 'lo'): that interface's ``ip -s link`` counters (rx_packets,
        rx_bytes, rx_errors, rx_dropped, tx_packets, tx_bytes, tx_errors, tx_dropped, multicast),
        rx_delivered, reasm_pending and ``drops`` by reason. Without: the same summed over every
        interface the stack ever had (plus the loopback and the frames that had no interface),
        ``interfaces`` (each current one, and 'lo'), and the /proc/net/snmp-style ``ip``, ``icmp``
        and ``udp`` groups, which count datagrams rather than frames."""
        if ifname is not None:
            if ifname == "lo":
                return self._lo.counters.as_dict()
            return self._iface(ifname).counters.as_dict()
        every = [i.counters for i in self._ifaces.values()] + [self._lo.counters, self._stack_ctr] + self._retired
        out = dict.fromkeys(_LINK_KEYS + _EXTRA_KEYS, 0)
        drops: dict[str, int] = {}
        for c in every:
            for k, v in c.c.items():
                out[k] += v
            for k, v in c.drops.items():
                drops[k] = drops.get(k, 0) + v
        out["drops"] = dict(sorted(drops.items()))
        out["interfaces"] = {n: i.counters.as_dict() for n, i in self._ifaces.items()}
        out["interfaces"]["lo"] = self._lo.counters.as_dict()
        for k, v in self._snmp.items():
            out[k] = dict(v)
        out["reasm_queues"] = len(self._frags)
        out["ping_sessions"] = len(self._sessions)
        return out


class StackLink:
    """What the embedded stack gives a link layer for one interface (:class:`ipoib.iphost.HostLink`)."""

    __slots__ = ("stack", "ifname")

    def __init__(self, stack: IpStack, ifname: str):
        self.stack, self.ifname = stack, ifname

    def receive(self, packet) -> None:
        self.stack.input(self.ifname, packet)

    def set_carrier(self, up: bool) -> None:
        self.stack.set_carrier(self.ifname, up)

    def set_mtu(self, mtu: int) -> None:
        self.stack.set_mtu(self.ifname, mtu)

    @property
    def address(self) -> tuple[bytes, int]:
        i = self.stack._iface(self.ifname)
        return i.addr, i.prefix

    def detach(self) -> None:
        self.stack.remove_interface(self.ifname)
