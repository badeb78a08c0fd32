"""UDP sockets (bind, sendto, recvfrom, multicast membership, UDP_SEGMENT and UDP_GRO) and UDP
receive: which sockets a datagram goes to, with Linux's rules."""

from __future__ import annotations

import errno as _errno
import logging
from collections import deque
from typing import TYPE_CHECKING

from fabric.wire.errors import ParseError

from ..gso import GsoPacket
from .common import (ANY, BROADCAST, EPHEMERAL_PORTS, MAX_MEMBERSHIPS, MAX_UDP_PAYLOAD, UdpError, _addr,
                     _Datagram, _ipstr, _is_mcast)
from ..inet import ICMP_DEST_UNREACH, IPPROTO_UDP, build_udp, parse_udp

if TYPE_CHECKING:  # the stack these are mixed into
    from .stack import IpStack

log = logging.getLogger(__name__)


# -- UDP ----------------------------------------------------------------------------------------


class UdpMessage(tuple):
    """What :meth:`UdpSocket.recvmsg` returns: (data, (src_ip, sport), dst_ip, ifname)."""

    __slots__ = ()

    def __new__(cls, data, src, dst, ifname):
        return tuple.__new__(cls, (data, src, dst, ifname))

    data = property(lambda self: self[0])
    src = property(lambda self: self[1])
    dst = property(lambda self: self[2])
    ifname = property(lambda self: self[3])
    gso_size = 0  # UDP_GRO's segment size: 0, one datagram

    @property
    def segments(self) -> int:
        return 1


class UdpGroMessage(UdpMessage):
    """On a socket with ``udp_gro``: several datagrams of ``gso_size`` octets in one message (the
    last may be shorter), as UDP_GRO's cmsg says."""

    def __new__(cls, data, src, dst, ifname, gso_size):
        self = super().__new__(cls, data, src, dst, ifname)
        self.gso_size = gso_size
        return self

    @property
    def segments(self) -> int:
        return -(-len(self[0]) // self.gso_size)


class UdpSocket:
    """A UDP socket of an :class:`IpStack`.

    Options, set as attributes before use: ``reuseaddr`` (SO_REUSEADDR: sockets that all set it may
    share a port), ``rcvbuf`` (receive queue bound, in datagrams), ``ttl`` (unicast and broadcast),
    ``multicast_ttl`` (default 1, as Linux), ``multicast_if`` (IP_MULTICAST_IF, an ifname),
    ``multicast_all`` (IP_MULTICAST_ALL, default True), ``recverr`` (IP_RECVERR: a datagram the link
    refused raises ENOBUFS instead of counting SndbufErrors silently).

    ``errors`` collects the ICMP errors that came back for datagrams this socket sent (the
    IP_RECVERR error queue): (errno name, offender ip, (dst ip, dport)) tuples, the newest 64.

    ``gso_size`` (UDP_SEGMENT): a buffer longer than this is sent as consecutive datagrams of this
    many octets (the last may be shorter), at most 64, handed down as one GSO packet that the
    provider cuts up (ipoib/gso.py). Each must fit the interface MTU (else EINVAL).

    ``udp_gro`` (UDP_GRO): a run of datagrams the provider coalesced (GRO) arrives as one message,
    its ``gso_size`` telling the datagram size; without it, such a run is split back into the
    datagrams it was made of before the stack sees them.
    """

    def __init__(self, stack: "IpStack"):
        self._stack = stack
        self.addr: bytes | None = None
        self.port: int | None = None
        self.closed = False
        self.reuseaddr = False
        self.rcvbuf = stack.rcvbuf
        self.ttl = 64
        self.gso_size = 0
        self.udp_gro = False
        self.multicast_ttl = 1
        self.multicast_if: str | None = None
        self.multicast_all = True
        self.recverr = False
        self.memberships: set[tuple[str, bytes]] = set()
        self.errors: deque = deque(maxlen=64)
        self.rx_dropped = 0  # datagrams this socket lost to a full queue
        self._queue: deque = deque()

    def __repr__(self):
        where = "unbound" if self.port is None else f"{_ipstr(self.addr)}:{self.port}"
        return f"UdpSocket({where}{', closed' if self.closed else ''})"

    def _check_open(self) -> None:
        if self.closed:
            raise UdpError(_errno.EBADF)

    def getsockname(self) -> tuple[str, int]:
        if self.port is None:
            return ("0.0.0.0", 0)
        return (_ipstr(self.addr), self.port)

    def bind(self, port: int = 0, addr=None) -> tuple[str, int]:
        """Bind to ``port`` (0: an ephemeral port from 32768) on ``addr`` (None or '0.0.0.0': every
        address; else one of ours, a broadcast address, or a multicast group). Returns the bound
        (ip, port)."""
        self._check_open()
        if self.port is not None:
            raise UdpError(_errno.EINVAL, "already bound")
        if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise UdpError(_errno.EINVAL, f"port {port!r}")
        try:
            a = ANY if addr is None else _addr(addr)
        except ValueError:
            raise UdpError(_errno.EINVAL, f"address {addr!r}") from None
        st = self._stack
        if a != ANY and not (a in st._local or _is_mcast(a) or a == BROADCAST
                             or any(i.broadcast == a for i in st._ifaces.values())):
            raise UdpError(_errno.EADDRNOTAVAIL, _ipstr(a))
        if port == 0:
            port = st._ephemeral()
        elif st._port_conflict(port, a, self.reuseaddr):
            raise UdpError(_errno.EADDRINUSE, f"{_ipstr(a)}:{port}")
        self.addr, self.port = a, port
        st._ports.setdefault(port, []).append(self)
        return self.getsockname()

    def sendto(self, data, address, ifname: str | None = None) -> int:
        """Send one datagram to ``address`` = (ip, port). ``ifname`` picks the interface (like
        SO_BINDTODEVICE). Returns len(data). Raises UdpError: EBADF, EINVAL (bad address or port 0),
        EMSGSIZE (over 65507 octets), ENODEV, ENETUNREACH (no interface's subnet holds the
        destination), ENETDOWN (carrier off), ENOBUFS (the link refused it, only with ``recverr``)."""
        self._check_open()
        data = bytes(data)
        try:
            host, dport = address
            dst = _addr(host)
        except (TypeError, ValueError):
            raise UdpError(_errno.EINVAL, f"address {address!r}") from None
        if not isinstance(dport, int) or not 0 < dport <= 0xFFFF:
            raise UdpError(_errno.EINVAL, f"port {dport!r}")
        if len(data) > MAX_UDP_PAYLOAD:
            raise UdpError(_errno.EMSGSIZE, f"{len(data)} octets")
        st = self._stack
        mcast = _is_mcast(dst)
        iface = None
        name = ifname if ifname is not None else (self.multicast_if if mcast else None)
        if name is not None:
            iface = st._ifaces.get(name)
            if iface is None:
                raise UdpError(_errno.ENODEV, name)
        if dst not in st._local:
            if iface is None:
                iface = st.route(dst)
            if iface is None:
                st._no_route()
                raise UdpError(_errno.ENETUNREACH, _ipstr(dst))
        if self.port is None:
            self.bind(0)
        if self.addr in st._local:
            src = self.addr
        elif dst in st._local:
            src = dst
        else:
            src = iface.addr
        if self.gso_size and len(data) > self.gso_size:
            return self._sendto_gso(data, src, dst, dport, iface, mcast)
        dgram = build_udp(src, dst, self.port, dport, data)
        err = st._send_ip(dst, IPPROTO_UDP, dgram, src=src, iface=iface,
                          ttl=self.multicast_ttl if mcast else self.ttl, df=False)
        udp = st._snmp["udp"]
        if err == _errno.EHOSTUNREACH:  # the link dropped it: Linux's NET_XMIT_DROP -> ENOBUFS
            udp["SndbufErrors"] += 1
            if self.recverr:
                raise UdpError(_errno.ENOBUFS)
            return len(data)
        if err:
            raise UdpError(err, _ipstr(dst))
        udp["OutDatagrams"] += 1
        return len(data)

    def _sendto_gso(self, data: bytes, src: bytes, dst: bytes, dport: int, iface, mcast: bool) -> int:
        """UDP_SEGMENT: ``data`` as datagrams of ``gso_size`` octets; one GSO packet down the stack
        to a unicast peer, datagram by datagram to ourselves and to groups (as Linux segments
        those in software before the loopback and multicast paths)."""
        from ..gso import MAX_SEGMENTS

        gso = self.gso_size
        segs = -(-len(data) // gso)
        if segs > MAX_SEGMENTS:
            raise UdpError(_errno.EINVAL, f"{segs} segments of {gso} octets: at most {MAX_SEGMENTS}")
        if iface is not None and 28 + gso > iface.mtu:
            raise UdpError(_errno.EINVAL, f"segment of {gso} octets over the MTU of {iface.name}")
        st = self._stack
        if mcast or dst in st._local or dst == b"\xff\xff\xff\xff" or iface is None:
            g, self.gso_size = self.gso_size, 0
            try:
                for o in range(0, len(data), gso):
                    self.sendto(data[o:o + gso], (_ipstr(dst), dport), ifname=iface.name if iface else None)
            finally:
                self.gso_size = g
            return len(data)
        err = st._send_udp_gso(dst, src, self.port, dport, data, gso, segs, iface, self.ttl)
        udp = st._snmp["udp"]
        if err == _errno.EHOSTUNREACH:
            udp["SndbufErrors"] += segs
            if self.recverr:
                raise UdpError(_errno.ENOBUFS)
            return len(data)
        if err:
            raise UdpError(err, _ipstr(dst))
        udp["OutDatagrams"] += segs
        return len(data)

    def recvfrom(self) -> tuple[bytes, tuple[str, int]] | None:
        """The oldest queued datagram as (data, (src_ip, sport)), or None (EAGAIN)."""
        self._check_open()
        if not self._queue:
            return None
        m = self._queue.popleft()
        return m[0], m[1]

    def recvmsg(self) -> UdpMessage | None:
        """Like recvfrom, with the destination address and the interface (IP_PKTINFO)."""
        self._check_open()
        return self._queue.popleft() if self._queue else None

    def pending(self) -> int:
        return len(self._queue)

    def join_group(self, group, ifname: str | None = None) -> None:
        """IP_ADD_MEMBERSHIP. ``ifname`` None: the interface the group routes to (the first up one).
        The interface's ``join`` hook runs when its first member joins."""
        self._check_open()
        g, iface = self._group_args(group, ifname)
        if (iface.name, g) in self.memberships:
            raise UdpError(_errno.EADDRINUSE, f"{_ipstr(g)} on {iface.name}")
        if len(self.memberships) >= MAX_MEMBERSHIPS:
            raise UdpError(_errno.ENOBUFS, "too many memberships")
        self._stack._group_ref(iface, g, +1)
        self.memberships.add((iface.name, g))

    def leave_group(self, group, ifname: str | None = None) -> None:
        """IP_DROP_MEMBERSHIP; the interface's ``leave`` hook runs when the last member leaves."""
        self._check_open()
        g, iface = self._group_args(group, ifname)
        if (iface.name, g) not in self.memberships:
            raise UdpError(_errno.EADDRNOTAVAIL, f"{_ipstr(g)} on {iface.name}")
        self.memberships.discard((iface.name, g))
        self._stack._group_ref(iface, g, -1)

    def _group_args(self, group, ifname):
        try:
            g = _addr(group)
        except ValueError:
            raise UdpError(_errno.EINVAL, f"group {group!r}") from None
        if not _is_mcast(g):
            raise UdpError(_errno.EINVAL, f"{_ipstr(g)} is not a multicast group")
        st = self._stack
        if ifname is not None:
            iface = st._ifaces.get(ifname)
            if iface is None:
                raise UdpError(_errno.ENODEV, ifname)
        else:
            iface = st.route(g)
            if iface is None:
                raise UdpError(_errno.ENODEV, "no interface")
        return g, iface

    def close(self) -> None:
        """Leave every group, release the port, drop the queue. Closing twice is harmless."""
        if self.closed:
            return
        st = self._stack
        for name, g in sorted(self.memberships):
            iface = st._ifaces.get(name)
            if iface is not None:
                try:
                    st._group_ref(iface, g, -1)
                except Exception:  # a hook failed: the socket goes away regardless
                    log.exception("%s: leaving %s on %s", st.node, _ipstr(g), name)
        self.memberships.clear()
        if self.port is not None:
            lst = st._ports.get(self.port, [])
            if self in lst:
                lst.remove(self)
            if not lst:
                st._ports.pop(self.port, None)
        self._queue.clear()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Udp:
    """The UDP half of :class:`ipoib.iphost.stack.IpStack` (mixed in)."""


    def _udp_rcv(self, d: _Datagram) -> None:
        udp = self._snmp["udp"]
        h = d.hdr
        try:
            uh, data = parse_udp(h.src, h.dst, d.payload)
        except ParseError as e:
            udp["InErrors"] += 1
            if e.kind == "udp_checksum":
                udp["InCsumErrors"] += 1
            self._frames_drop(d.frames, "udp_truncated" if e.kind == "truncated" else e.kind)
            return
        socks = self._ports.get(uh.dport, ())
        dst = h.dst
        if d.kind == "local":
            best = None
            for s in socks:  # a socket bound to the address beats a wildcard; then the newest
                if s.addr == dst or (s.addr == ANY and (best is None or best.addr == ANY)):
                    best = s
            targets = [best] if best is not None else []
        else:
            targets = [s for s in socks if s.addr in (ANY, dst)]
            if d.kind == "multicast":
                targets = [s for s in targets if s.multicast_all or (d.iface.name, dst) in s.memberships]
        if not targets:
            udp["NoPorts"] += 1
            self._frames_drop(d.frames, "no_socket")
            self._icmp_error(d, ICMP_DEST_UNREACH, 3)  # only for unicast: _icmp_error checks
            return
        g = self._gro
        if g is not None and len(targets) == 1 and targets[0].udp_gro and len(targets[0]._queue) < targets[0].rcvbuf:
            self._gro_run(g, targets[0], h, uh, d)
            return
        msg = UdpMessage(data, (_ipstr(h.src), uh.sport), _ipstr(dst), d.iface.name)
        queued = False
        for s in targets:
            if len(s._queue) >= s.rcvbuf:
                s.rx_dropped += 1
                udp["RcvbufErrors"] += 1
                udp["InErrors"] += 1
            else:
                s._queue.append(msg)
                queued = True
        if queued:
            udp["InDatagrams"] += 1
            self._frames_ok(d.frames)
        else:
            self._frames_drop(d.frames, "rcvbuf")

    def _gro_run(self, g: GsoPacket, sock, h, uh, d: _Datagram) -> None:
        """UDP_GRO: the whole coalesced run to ``sock`` as one message; the first datagram was
        counted on its way here, the others are counted now as if each had come alone."""
        self._gro_taken = True
        n = g.segments
        extra = n - 1
        sock._queue.append(UdpGroMessage(bytes(g[28:]), (_ipstr(h.src), uh.sport), _ipstr(h.dst), d.iface.name,
                                         g.gso_size))
        self._snmp["udp"]["InDatagrams"] += n
        ip = self._snmp["ip"]
        ip["InReceives"] += extra
        ip["InDelivers"] += extra  # the first one's is counted by _deliver
        for c in d.frames:
            c.c["rx_delivered"] += n
            c.c["rx_packets"] += extra
            c.c["rx_bytes"] += g.wire_len - (28 + g.gso_size)

    def _port_conflict(self, port: int, addr: bytes, reuse: bool) -> bool:
        for s in self._ports.get(port, ()):
            if (s.addr == ANY or addr == ANY or s.addr == addr) and not (reuse and s.reuseaddr):
                return True
        return False

    def _ephemeral(self) -> int:
        """The next port of 32768..60999 nobody holds, round robin like Linux's hint."""
        lo, hi = EPHEMERAL_PORTS
        n = hi - lo + 1
        for _ in range(n):
            p = self._next_ephemeral
            self._next_ephemeral = lo + (p - lo + 1) % n
            if p not in self._ports:
                return p
        raise UdpError(_errno.EADDRINUSE, "no ephemeral port left")

    def udp_socket(self) -> UdpSocket:
        return UdpSocket(self)
