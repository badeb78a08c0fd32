"""The host IPv4 layer of an IPoIB node: a sans-IO IPv4/ICMP/UDP stack.

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
import ipaddress
import logging
import math
import os
import zlib
from collections import deque

from fabric.wire.errors import ParseError

from .gso import GsoPacket, segment
from .inet import (ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_TIME_EXCEEDED, IP_FLAG_DF,
                   IP_FLAG_MF, IPPROTO_ICMP, IPPROTO_UDP, build_icmp, build_icmp_echo, build_ipv4, build_udp,
                   inet_checksum, ip4, parse_icmp, parse_ipv4, parse_udp)

__all__ = ["IpStack", "Interface", "PingSession", "UdpSocket", "UdpMessage", "IpError", "UdpError",
           "RX_ERROR_REASONS", "RX_DROP_REASONS", "TX_ERROR_REASONS", "TX_DROP_REASONS",
           "REASM_TIMEOUT", "EPHEMERAL_PORTS", "MIN_MTU"]

log = logging.getLogger(__name__)

ANY = bytes(4)
BROADCAST = b"\xff\xff\xff\xff"
ALL_HOSTS = bytes([224, 0, 0, 1])
MIN_MTU = 68  # RFC 791: every IPv4 host must take 68-octet datagrams unfragmented
MAX_MTU = 65535
LO_MTU = 65536
MAX_DATAGRAM = 65535
MAX_UDP_PAYLOAD = MAX_DATAGRAM - 20 - 8
MAX_PING_SIZE = MAX_DATAGRAM - 20 - 8
ICMP_ERROR_MAX = 576  # an ICMP error, IP header included, is at most this long (RFC 1812 4.3.2.3)
REASM_TIMEOUT = 30.0  # net.ipv4.ipfrag_time
REASM_MAX_QUEUES = 64
REASM_MAX_BYTES = 4 << 20  # net.ipv4.ipfrag_high_thresh
RCVBUF_DATAGRAMS = 256
EPHEMERAL_PORTS = (32768, 60999)  # net.ipv4.ip_local_port_range
MAX_MEMBERSHIPS = 20  # net.ipv4.igmp_max_memberships, per socket

# Why a received packet was dropped. Errors are damaged packets (rx_errors); drops are well-formed
# packets nobody wanted (rx_dropped). A ParseError kind not listed here counts as an error.
RX_ERROR_REASONS = frozenset({
    "truncated", "ip_version", "ip_header", "ip_length", "ip_checksum", "malformed",
    "udp_truncated", "udp_length", "udp_checksum",
    "icmp_truncated", "icmp_checksum", "icmp_format",
    "frag_bad", "frag_overlap", "internal_error",
})
RX_DROP_REASONS = frozenset({
    "no_interface", "martian_source", "not_for_us", "unknown_protocol",
    "no_socket", "rcvbuf",
    "echo_broadcast", "icmp_broadcast", "icmp_type", "icmp_unmatched", "no_session",
    "frag_dup", "frag_timeout", "frag_overflow",
})
TX_ERROR_REASONS = frozenset({"xmit_error"})
TX_DROP_REASONS = frozenset({"carrier_down", "xmit_failed", "no_route"})

_LINK_KEYS = ("rx_packets", "rx_bytes", "rx_errors", "rx_dropped", "tx_packets", "tx_bytes", "tx_errors",
              "tx_dropped", "multicast")
_EXTRA_KEYS = ("rx_delivered", "reasm_pending")

_SNMP = {
    "ip": ("InReceives", "InHdrErrors", "InAddrErrors", "InUnknownProtos", "InDiscards", "InDelivers",
           "OutRequests", "OutDiscards", "OutNoRoutes", "ReasmTimeout", "ReasmReqds", "ReasmOKs",
           "ReasmFails", "ReasmOverlaps", "FragOKs", "FragFails", "FragCreates"),
    "icmp": ("InMsgs", "InErrors", "InCsumErrors", "InDestUnreachs", "InTimeExcds", "InEchos", "InEchoReps",
             "OutMsgs", "OutErrors", "OutDestUnreachs", "OutTimeExcds", "OutEchos", "OutEchoReps"),
    "udp": ("InDatagrams", "NoPorts", "InErrors", "OutDatagrams", "RcvbufErrors", "SndbufErrors",
            "InCsumErrors"),
}

# iputils ping's wording (pr_icmph)
_UNREACH_TEXT = {
    0: "Destination Net Unreachable", 1: "Destination Host Unreachable",
    2: "Destination Protocol Unreachable", 3: "Destination Port Unreachable",
    4: "Frag needed and DF set", 5: "Source Route Failed", 6: "Destination Net Unknown",
    7: "Destination Host Unknown", 8: "Source Host Isolated", 9: "Destination Net Prohibited",
    10: "Destination Host Prohibited", 11: "Destination Net Unreachable for Type of Service",
    12: "Destination Host Unreachable for Type of Service", 13: "Packet filtered",
    14: "Precedence Violation", 15: "Precedence Cutoff",
}
_TIMXCEED_TEXT = {0: "Time to live exceeded", 1: "Frag reassembly time exceeded"}
_ICMP_QUERY_TYPES = frozenset({0, 8, 13, 14, 15, 16, 17, 18})  # not errors: may be answered with one


class IpError(OSError):
    """A send or a socket call failed. ``errno``/``strerror`` as in OSError; ``reason`` is the
    errno's name ('ENETUNREACH', 'EADDRINUSE', ...)."""

    def __init__(self, code: int, detail: str | None = None):
        text = os.strerror(code) + (f" ({detail})" if detail else "")
        super().__init__(code, text)
        self.reason = _errno.errorcode.get(code, str(code))


class UdpError(IpError):
    """A UDP socket call failed."""


def _ipstr(a: bytes) -> str:
    return "%d.%d.%d.%d" % (a[0], a[1], a[2], a[3])


def _addr(a) -> bytes:
    try:
        return ip4(a)
    except (ValueError, TypeError, ipaddress.AddressValueError) as exc:
        raise ValueError(f"not an IPv4 address: {a!r}") from exc


def _is_mcast(a: bytes) -> bool:
    return a[0] & 0xF0 == 0xE0


def _mask(prefix: int) -> int:
    return (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF


# -- counters -----------------------------------------------------------------------------------


class _Counters:
    """Link counters of one interface (``ip -s link``) and its drops by reason.

    Frames, not datagrams: each received frame ends in exactly one of rx_delivered, rx_errors,
    rx_dropped (its reason counted in ``drops``), or is still in a reassembly queue
    (``reasm_pending``); each frame handed to the link ends in tx_packets, tx_errors or tx_dropped.
    """

    __slots__ = ("name", "c", "drops")

    def __init__(self, name: str):
        self.name = name
        self.c = dict.fromkeys(_LINK_KEYS + _EXTRA_KEYS, 0)
        self.drops: dict[str, int] = {}

    def rx_drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        self.c["rx_dropped" if reason in RX_DROP_REASONS else "rx_errors"] += 1

    def tx_drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        self.c["tx_errors" if reason in TX_ERROR_REASONS else "tx_dropped"] += 1

    def as_dict(self) -> dict:
        d = dict(self.c)
        d["drops"] = dict(sorted(self.drops.items()))
        return d


# -- interfaces ---------------------------------------------------------------------------------


class Interface:
    """One IPv4 interface: an address with its prefix, an MTU, a carrier and the link's ``xmit``."""

    def __init__(self, name: str, addr: bytes, prefix: int, mtu: int, xmit, carrier: bool = True):
        self.name = name
        self.addr = addr
        self.prefix = prefix
        self.mtu = mtu
        self.xmit = xmit
        self.carrier = carrier
        self.counters = _Counters(name)
        # group -> number of socket memberships; ALL_HOSTS is permanent (Linux joins it on every
        # multicast-capable interface) and is not announced through the hooks
        self.groups: dict[bytes, int] = {ALL_HOSTS: 1}

    @property
    def netmask(self) -> bytes:
        return _mask(self.prefix).to_bytes(4, "big")

    @property
    def network(self) -> bytes:
        return (int.from_bytes(self.addr, "big") & _mask(self.prefix)).to_bytes(4, "big")

    @property
    def broadcast(self) -> bytes | None:
        """The subnet's directed broadcast; None on /31 and /32 (RFC 3021)."""
        if self.prefix >= 31:
            return None
        return (int.from_bytes(self.addr, "big") | (~_mask(self.prefix) & 0xFFFFFFFF)).to_bytes(4, "big")

    def on_link(self, dst: bytes) -> bool:
        m = _mask(self.prefix)
        return int.from_bytes(dst, "big") & m == int.from_bytes(self.addr, "big") & m

    @property
    def memberships(self) -> frozenset:
        return frozenset(self.groups)

    def __repr__(self):
        return (f"Interface({self.name!r}, {_ipstr(self.addr)}/{self.prefix}, mtu={self.mtu}, "
                f"carrier={'up' if self.carrier else 'down'})")


class _Datagram:
    """A whole IPv4 datagram on its way up: header, header octets, payload, how it was addressed
    ('local', 'broadcast', 'multicast'), the interface it came in on, and the counters of its frames."""

    __slots__ = ("hdr", "head", "payload", "kind", "iface", "frames")

    def __init__(self, hdr, head, payload, kind, iface, frames):
        self.hdr, self.head, self.payload, self.kind, self.iface, self.frames = hdr, head, payload, kind, iface, frames


class _Frag:
    __slots__ = ("start", "end", "data", "ctr")

    def __init__(self, start, end, data, ctr):
        self.start, self.end, self.data, self.ctr = start, end, data, ctr


class _FragQueue:
    __slots__ = ("created", "frags", "total", "first", "kind", "iface", "nbytes")

    def __init__(self, created: float):
        self.created = created
        self.frags: list[_Frag] = []
        self.total: int | None = None  # known once the last fragment (MF=0) arrived
        self.first = None  # (hdr, head, payload) of the offset-0 fragment
        self.kind = "local"
        self.iface = None
        self.nbytes = 0


# -- ping ---------------------------------------------------------------------------------------


class PingSession:
    """One ``ping``: ``count`` echo requests ``interval`` seconds apart, each waited for ``timeout``
    seconds. The first is sent by :meth:`IpStack.ping`, the others by :meth:`IpStack.tick`.

    ``sent``, ``received``, ``duplicates`` (replies to a sequence number already answered),
    ``rtts`` (seconds, in arrival order), ``errors`` (ping's wording, one per failed echo:
    'Destination Host Unreachable', 'Network is down', ...), ``error_details`` ((seq, from_ip or
    None, text) tuples), ``corrupted`` (replies whose data differ from the request's), ``done``.
    """

    def __init__(self, stack: "IpStack", dst: bytes, ident: int, *, count: int, interval: float,
                 timeout: float, size: int, ifname: str | None, ttl: int, start: float,
                 adaptive: bool = False):
        self._stack = stack
        self.adaptive = adaptive  # ping -A: the next request leaves when the last one is answered
        self.dst = _ipstr(dst)
        self._dst = dst
        self.ident = ident
        self.count = count
        self.interval = interval
        self.timeout = timeout
        self.size = size
        self.ifname = ifname
        self.ttl = ttl
        self.started = start
        self.finished: float | None = None
        self.sent = 0
        self.received = 0
        self.duplicates = 0
        self.corrupted = 0
        self.rtts: list[float] = []
        self.replies: list[tuple[int, float]] = []  # (icmp_seq, rtt) in arrival order, for ping's lines
        self.errors: list[str] = []
        self.error_details: list[tuple] = []
        self.done = False
        self.data = bytes(i & 0xFF for i in range(size))  # iputils fills the data area with i
        self._sent_at: dict[int, float] = {}
        self._answered: set[int] = set()
        self._failed: set[int] = set()
        self._waiting: set[int] = set()  # sent, neither answered nor failed, not timed out yet
        self._next_send: float | None = start

    def __repr__(self):
        return (f"PingSession({self.dst}, id={self.ident}, sent={self.sent}, received={self.received}, "
                f"errors={len(self.errors)}, done={self.done})")

    # -- driven by the stack --

    def _send(self, now: float) -> None:
        self.sent += 1
        seq = self.sent & 0xFFFF
        self._sent_at[seq] = now
        self._answered.discard(seq)
        self._failed.discard(seq)
        self._waiting.add(seq)
        self._next_send = now + self.interval if self.sent < self.count and not self.adaptive else None
        st = self._stack
        iface = None
        if self.ifname is not None:
            iface = st._ifaces.get(self.ifname)
            if iface is None:
                self._fail(seq, None, "No such device")
                return
        st._snmp["icmp"]["OutMsgs"] += 1
        st._snmp["icmp"]["OutEchos"] += 1
        icmp = build_icmp_echo(self.ident, seq, self.data)
        # ping's default is IP_PMTUDISC_WANT: DF when the datagram fits, fragments when it does not
        out_if = iface or st.route(self._dst)
        fits = out_if is not None and 20 + len(icmp) <= out_if.mtu
        err = st._send_ip(self._dst, IPPROTO_ICMP, icmp, iface=iface, ttl=self.ttl, df=fits)
        if err:
            self._fail(seq, None, _LOCAL_ERROR_TEXT.get(err, os.strerror(err)))

    def _fail(self, seq: int, src: bytes | None, text: str) -> None:
        if seq in self._failed or seq in self._answered:
            return
        self._failed.add(seq)
        self._waiting.discard(seq)
        self._next_after(seq, self._stack._now())
        self.errors.append(text)
        self.error_details.append((seq, _ipstr(src) if src else None, text))

    def _reply(self, seq: int, data: bytes, now: float) -> bool:
        if seq not in self._sent_at:
            return False
        if seq in self._answered:
            self.duplicates += 1
            return True
        self._answered.add(seq)  # late replies (after the timeout) still count, as with ping
        self._waiting.discard(seq)
        self._next_after(seq, now)
        self.received += 1
        self.rtts.append(max(0.0, now - self._sent_at[seq]))
        self.replies.append((seq, self.rtts[-1]))
        if data != self.data:
            self.corrupted += 1
        return True

    def _next_after(self, seq: int, now: float) -> None:
        """ping -A: the latest request is settled (answered, failed or timed out), send the next."""
        if self.adaptive and seq == self.sent & 0xFFFF and self.sent < self.count and not self.done:
            self._next_send = now

    def _deadline(self) -> float | None:
        if self.done:
            return None
        c = [] if self._next_send is None else [self._next_send]
        c += [self._sent_at[s] + self.timeout for s in self._waiting]
        return min(c, default=None)

    def _tick(self, now: float) -> None:
        if self.done:
            return
        if self._next_send is not None and now >= self._next_send and self.sent < self.count:
            self._send(now)
        self._check_done(now)

    def _check_done(self, now: float) -> None:
        if self.done:
            return
        for s in [s for s in self._waiting if now >= self._sent_at[s] + self.timeout]:
            self._waiting.discard(s)
            self._next_after(s, now)
        if self.sent < self.count or self._waiting:
            return
        self.done = True
        self.finished = now
        self._stack._sessions.pop(self.ident, None)

    def cancel(self) -> None:
        """Stop now (^C): nothing more is sent, late replies are no longer counted."""
        if not self.done:
            self.done = True
            self.finished = self._stack._now()
            self._next_send = None
            self._stack._sessions.pop(self.ident, None)

    def summary(self) -> dict:
        """ping's closing statistics. Times in milliseconds like ping prints them; rtt_* are None
        when no reply came. ``packet_loss`` is a percentage of ``transmitted``."""
        end = self.finished if self.finished is not None else self._stack._now()
        out = {
            "destination": self.dst, "transmitted": self.sent, "received": self.received,
            "duplicates": self.duplicates, "corrupted": self.corrupted, "errors": len(self.errors),
            "packet_loss": (100.0 * (self.sent - self.received) / self.sent) if self.sent else 0.0,
            "time_ms": max(0.0, end - self.started) * 1000.0,
            "rtt_min_ms": None, "rtt_avg_ms": None, "rtt_max_ms": None, "rtt_mdev_ms": None,
        }
        if self.rtts:
            ms = [r * 1000.0 for r in self.rtts]
            avg = sum(ms) / len(ms)
            out.update(rtt_min_ms=min(ms), rtt_avg_ms=avg, rtt_max_ms=max(ms),
                       rtt_mdev_ms=math.sqrt(max(0.0, sum(m * m for m in ms) / len(ms) - avg * avg)))
        return out


_LOCAL_ERROR_TEXT = {
    _errno.ENETUNREACH: "Network is unreachable",
    _errno.ENETDOWN: "Network is down",
    _errno.EHOSTUNREACH: "Destination Host Unreachable",
    _errno.EMSGSIZE: "Message too long",
}


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
        from .gso import MAX_SEGMENTS, GsoPacket

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
        The stack calls ``on_join_group(ifname, group)`` when the interface's first member joins."""
        self._check_open()
        g, iface = self._group_args(group, ifname)
        if (iface.name, g) in self.memberships:
            raise UdpError(_errno.EADDRINUSE, f"{_ipstr(g)} on {iface.name}")
        if len(self.memberships) >= MAX_MEMBERSHIPS:
            raise UdpError(_errno.ENOBUFS, "too many memberships")
        self._stack._group_ref(iface, g, +1)
        self.memberships.add((iface.name, g))

    def leave_group(self, group, ifname: str | None = None) -> None:
        """IP_DROP_MEMBERSHIP; ``on_leave_group(ifname, group)`` follows when the last member leaves."""
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


# -- the stack ----------------------------------------------------------------------------------


class IpStack:
    """The IPv4 host stack of one node. See the module docstring and docs/ip.md."""

    on_join_group = None  # callable(ifname, group: bytes) on a group's first membership on ifname
    on_leave_group = None  # callable(ifname, group: bytes) when its last membership goes

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

    def add_interface(self, ifname: str, addr, prefix: int, mtu: int, xmit, *, carrier: bool = True) -> Interface:
        """``xmit(ifname, next_hop: bytes, ip_packet: bytes) -> bool`` hands one IPv4 packet to the
        link; False means the link refused or dropped it (None counts as accepted)."""
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
        self._ifaces[ifname] = iface
        self._local.add(a)
        return iface

    def remove_interface(self, ifname: str) -> None:
        """Remove the interface: its groups are left (``on_leave_group``), sockets lose their
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
            self._hook(self.on_leave_group, ifname, g)

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
        from .gso import GsoPacket

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

    # -- reassembly ------------------------------------------------------------------------------

    def _defrag(self, iface, ctr, hdr, head, payload, kind) -> None:
        ip = self._snmp["ip"]
        ip["ReasmReqds"] += 1
        start = hdr.frag_offset * 8
        end = start + len(payload)
        mf = bool(hdr.flags & IP_FLAG_MF)
        key = (hdr.src, hdr.dst, hdr.proto, hdr.ident)
        q = self._frags.get(key)
        bad = end == start or (mf and len(payload) % 8) or len(head) + end > MAX_DATAGRAM
        if not bad and q is not None:
            if mf:
                bad = q.total is not None and end > q.total
            else:
                bad = (q.total is not None and end != q.total) or any(f.end > end for f in q.frags)
        if bad:
            ip["ReasmFails"] += 1
            if q is not None:
                self._frag_discard(key, q, "frag_bad")
            ctr.rx_drop("frag_bad")
            return
        if q is not None:
            for f in q.frags:
                if f.start == start and f.end == end:
                    ctr.rx_drop("frag_dup")  # a duplicate: dropped alone, the queue lives on
                    return
                if start < f.end and f.start < end:
                    ip["ReasmFails"] += 1
                    ip["ReasmOverlaps"] += 1
                    self._frag_discard(key, q, "frag_overlap")
                    ctr.rx_drop("frag_overlap")
                    return
        if self._frag_bytes + len(payload) > self.reasm_max_bytes or (
                q is None and len(self._frags) >= self.reasm_max_queues):
            ip["ReasmFails"] += 1
            ctr.rx_drop("frag_overflow")
            return
        if q is None:
            q = self._frags[key] = _FragQueue(self._now())
        q.frags.append(_Frag(start, end, payload, ctr))
        q.nbytes += len(payload)
        self._frag_bytes += len(payload)
        ctr.c["reasm_pending"] += 1
        q.kind, q.iface = kind, iface
        if not mf:
            q.total = end
        if start == 0:
            q.first = (hdr, head, payload)
        if q.total is None or q.first is None or q.nbytes != q.total:
            return
        # complete: no overlaps and nothing beyond the end, so the lengths adding up means no holes
        del self._frags[key]
        self._frag_bytes -= q.nbytes
        q.frags.sort(key=lambda f: f.start)
        for f in q.frags:
            f.ctr.c["reasm_pending"] -= 1
        ip["ReasmOKs"] += 1
        hdr0, head0, _ = q.first
        whole = b"".join(f.data for f in q.frags)
        hdr_full = hdr0.replace(total_length=len(head0) + len(whole), flags=hdr0.flags & IP_FLAG_DF, frag_offset=0)
        h = bytearray(head0)
        h[2:4] = hdr_full.total_length.to_bytes(2, "big")
        h[6:8] = ((hdr_full.flags << 13) & 0xFFFF).to_bytes(2, "big")
        h[10:12] = b"\0\0"
        h[10:12] = inet_checksum(h).to_bytes(2, "big")
        self._deliver(_Datagram(hdr_full, bytes(h), whole, q.kind, q.iface, [f.ctr for f in q.frags]))

    def _frag_discard(self, key, q: _FragQueue, reason: str) -> None:
        self._frags.pop(key, None)
        self._frag_bytes -= q.nbytes
        for f in q.frags:
            f.ctr.c["reasm_pending"] -= 1
            f.ctr.rx_drop(reason)

    def _frag_expire(self, now: float) -> None:
        for key, q in list(self._frags.items()):
            if now < q.created + self.reasm_timeout:
                continue
            ip = self._snmp["ip"]
            ip["ReasmTimeout"] += 1
            ip["ReasmFails"] += 1
            self._frag_discard(key, q, "frag_timeout")
            if q.first is not None and q.kind == "local":
                hdr0, head0, payload0 = q.first
                d = _Datagram(hdr0.replace(frag_offset=0), head0, payload0, q.kind, q.iface, [])
                self._icmp_error(d, ICMP_TIME_EXCEEDED, 1)

    # -- ICMP ------------------------------------------------------------------------------------

    def _icmp_error(self, d: _Datagram, icmp_type: int, code: int) -> None:
        """Send an ICMP error about ``d`` to its source, unless RFC 1122 3.2.2 forbids it: not
        about a broadcast or multicast datagram, a non-first fragment, an ICMP error, or from a
        source that is not a single host."""
        h = d.hdr
        if d.kind != "local" or h.frag_offset or h.src == ANY:
            return
        if h.src not in self._local and self._martian(h.src, h.dst):  # our own: through the loopback
            return
        if h.proto == IPPROTO_ICMP and (not d.payload or d.payload[0] not in _ICMP_QUERY_TYPES):
            return
        icmp = self._snmp["icmp"]
        icmp["OutMsgs"] += 1
        icmp["OutDestUnreachs" if icmp_type == ICMP_DEST_UNREACH else "OutTimeExcds"] += 1
        orig = (d.head + d.payload)[:ICMP_ERROR_MAX - 20 - 8]
        self._send_ip(h.src, IPPROTO_ICMP, build_icmp(icmp_type, code, orig), src=h.dst, df=False)

    def _icmp_rcv(self, d: _Datagram) -> None:
        icmp = self._snmp["icmp"]
        try:
            ih, body = parse_icmp(d.payload)
        except ParseError as e:
            icmp["InErrors"] += 1
            if e.kind == "icmp_checksum":
                icmp["InCsumErrors"] += 1
            self._frames_drop(d.frames, "icmp_truncated" if e.kind == "truncated" else e.kind)
            return
        icmp["InMsgs"] += 1
        t = ih.type
        if t == ICMP_ECHO_REQUEST:
            icmp["InEchos"] += 1
            if d.kind != "local" and self.icmp_echo_ignore_broadcasts:
                self._frames_drop(d.frames, "echo_broadcast")
                return
            self._frames_ok(d.frames)
            src = d.hdr.dst if d.kind == "local" else d.iface.addr
            reply = build_icmp(ICMP_ECHO_REPLY, ih.code, body, rest=d.payload[4:8])
            icmp["OutMsgs"] += 1
            icmp["OutEchoReps"] += 1
            self._send_ip(d.hdr.src, IPPROTO_ICMP, reply, src=src, df=False)
            return
        if d.kind != "local":  # RFC 1122 3.2.2.6/3.2.2: only echo requests are taken from broadcasts
            self._frames_drop(d.frames, "icmp_broadcast")
            return
        if t == ICMP_ECHO_REPLY:
            icmp["InEchoReps"] += 1
            s = self._sessions.get(ih.ident)
            if s is not None and s._reply(ih.seq, body, self._now()):
                self._frames_ok(d.frames)
                s._check_done(self._now())
            else:
                self._frames_drop(d.frames, "no_session")
            return
        if t in (ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED):
            icmp["InDestUnreachs" if t == ICMP_DEST_UNREACH else "InTimeExcds"] += 1
            self._icmp_error_rcv(d, t, ih.code, body)
            return
        self._frames_drop(d.frames, "icmp_type")  # timestamps, redirects, ...: ignored

    def _icmp_error_rcv(self, d: _Datagram, t: int, code: int, body: bytes) -> None:
        """An ICMP error: find what of ours it is about in the quoted header and 8 octets."""
        if len(body) < 28 or body[0] >> 4 != 4 or (body[0] & 0xF) < 5 or len(body) < (body[0] & 0xF) * 4 + 8:
            self._snmp["icmp"]["InErrors"] += 1
            self._frames_drop(d.frames, "icmp_format")
            return
        hl = (body[0] & 0xF) * 4
        proto, osrc, odst = body[9], body[12:16], body[16:20]
        first8 = body[hl:hl + 8]
        if t == ICMP_DEST_UNREACH:
            text = _UNREACH_TEXT.get(code, f"Dest Unreachable, Bad Code: {code}")
        else:
            text = _TIMXCEED_TEXT.get(code, f"Time exceeded, Bad Code: {code}")
        if osrc in self._local and proto == IPPROTO_ICMP and first8[0] == ICMP_ECHO_REQUEST:
            s = self._sessions.get(int.from_bytes(first8[4:6], "big"))
            seq = int.from_bytes(first8[6:8], "big")
            if s is not None and seq in s._sent_at:
                s._fail(seq, d.hdr.src, text)
                self._frames_ok(d.frames)
                s._check_done(self._now())
                return
        elif osrc in self._local and proto == IPPROTO_UDP:
            sport, dport = int.from_bytes(first8[0:2], "big"), int.from_bytes(first8[2:4], "big")
            socks = [s for s in self._ports.get(sport, ()) if s.addr in (ANY, osrc)]
            if socks:
                name = {(ICMP_DEST_UNREACH, 3): "ECONNREFUSED", (ICMP_DEST_UNREACH, 4): "EMSGSIZE"}.get(
                    (t, code), "EHOSTUNREACH" if t == ICMP_DEST_UNREACH else "ETIMEDOUT")
                for s in socks:
                    s.errors.append((name, _ipstr(d.hdr.src), (_ipstr(odst), dport)))
                self._frames_ok(d.frames)
                return
        self._frames_drop(d.frames, "icmp_unmatched")

    # -- UDP -------------------------------------------------------------------------------------

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
                    self._hook(self.on_join_group, iface.name, group)
                except BaseException:
                    iface.groups.pop(group, None)
                    raise
        else:
            if n <= 1:
                iface.groups.pop(group, None)
                if group == ALL_HOSTS:
                    iface.groups[group] = 1
                else:
                    self._hook(self.on_leave_group, iface.name, group)
            else:
                iface.groups[group] = n - 1

    # -- ICMP echo ---------------------------------------------------------------------------------

    def ping(self, dst, *, count: int = 1, interval: float = 1.0, timeout: float = 1.0, size: int = 56,
             ifname: str | None = None, ttl: int = 64, adaptive: bool = False) -> PingSession:
        """Start a ping: the first echo request leaves now, the others from :meth:`tick`, each
        ``interval`` after the last or, with ``adaptive`` (ping -A), as soon as the last is answered
        (one request outstanding: a request/response latency measurement).
        Raises ValueError for bad arguments and IpError(ENETUNREACH/ENODEV) when nothing could be
        sent at all (``ping: connect: Network is unreachable``); failures of single echoes (carrier
        off, the link refusing, ICMP errors) land in the session's ``errors``."""
        d = _addr(dst)
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count {count!r} must be a positive int")
        if not isinstance(size, int) or not 0 <= size <= MAX_PING_SIZE:
            raise ValueError(f"size {size!r} is not 0..{MAX_PING_SIZE}")
        if not 0 < ttl <= 255:
            raise ValueError(f"ttl {ttl!r} is not 1..255")
        if interval < 0 or timeout < 0:
            raise ValueError("interval and timeout must not be negative")
        if ifname is not None:
            if ifname not in self._ifaces:
                raise IpError(_errno.ENODEV, ifname)
        elif d not in self._local and self.route(d) is None:
            self._no_route()
            raise IpError(_errno.ENETUNREACH, _ipstr(d))
        ident = self._ping_id
        for _ in range(0x10000):
            ident = (ident + 1) & 0xFFFF
            if ident not in self._sessions:
                break
        else:
            raise IpError(_errno.EAGAIN, "every ICMP identifier is in use")
        self._ping_id = ident
        s = PingSession(self, d, ident, count=count, interval=interval, timeout=timeout, size=size,
                        ifname=ifname, ttl=ttl, start=self._now(), adaptive=bool(adaptive))
        self._sessions[ident] = s
        s._send(s.started)
        s._check_done(self._now())
        return s

    # -- time --------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Run the timers due at ``now``: reassembly timeouts, ping sends and ping timeouts."""
        self._frag_expire(now)
        for s in list(self._sessions.values()):
            s._tick(now)

    def next_deadline(self) -> float | None:
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
