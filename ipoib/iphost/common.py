"""What the embedded IPv4 stack's parts share: limits, errors, address helpers, an interface and
its counters, and a datagram on its way up."""

from __future__ import annotations

import errno as _errno
import ipaddress
import os

from ..inet import ip4

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
        self.join = self.leave = None  # the link's hooks for the first member of a group, the last
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
