"""IPv4, ICMP and UDP formats, as field tables like the IB headers in :mod:`fabric.wire`.

Parsers raise :class:`fabric.wire.ParseError` with a ``kind`` for the receive counters; they never
let IndexError or struct.error escape.
"""

from __future__ import annotations

import functools
import ipaddress
import sys
from array import array as _array

from fabric.wire.errors import ParseError
from fabric.wire import _codegen
from fabric.wire.fields import B, Struct, U

IPPROTO_ICMP = 1
IPPROTO_UDP = 17
ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11


_LITTLE = sys.byteorder == "little"


def inet_checksum(data) -> int:
    """RFC 1071 one's-complement sum.

    The words are summed in the machine's byte order by ``array('H')`` (a C loop) and the folded
    sum is byte-swapped at the end on little-endian machines: the one's-complement sum does not
    depend on byte order except for that final swap (RFC 1071 section 2(B)).
    """
    data = bytes(data)
    if len(data) % 2:
        data += b"\0"
    s = sum(_array("H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    if _LITTLE:
        s = ((s & 0xFF) << 8) | (s >> 8)
    return ~s & 0xFFFF


def ip4(addr) -> bytes:
    """Four octets from '198.18.0.1', an IPv4Address, or bytes."""
    if isinstance(addr, (bytes, bytearray)):
        if len(addr) != 4:
            raise ValueError("IPv4 address must be 4 octets")
        return bytes(addr)
    if isinstance(addr, str):
        return _ip4_text(addr)
    return ipaddress.IPv4Address(addr).packed


@functools.lru_cache(maxsize=4096)
def _ip4_text(addr: str) -> bytes:
    """Parsing dotted quads is most of a small sendto's cost; an application sends to few."""
    return ipaddress.IPv4Address(addr).packed


class IPv4Header(Struct):
    """IPv4 header without options, 20 octets."""

    FIELDS = (
        U("version", 4, 4), U("ihl", 4, 5), U("dscp", 6), U("ecn", 2), U("total_length", 16),
        U("ident", 16), U("flags", 3), U("frag_offset", 13),
        U("ttl", 8, 64), U("proto", 8), U("checksum", 16),
        B("src", 4), B("dst", 4),
    )


IP_FLAG_DF = 0x2
IP_FLAG_MF = 0x1


class ICMPEcho(Struct):
    """ICMP echo request/reply header, 8 octets (the data follows)."""

    FIELDS = (U("type", 8), U("code", 8), U("checksum", 16), U("ident", 16), U("seq", 16))


class UDPHeader(Struct):
    FIELDS = (U("sport", 16), U("dport", 16), U("length", 16), U("checksum", 16))


def build_ipv4(src, dst, proto: int, payload: bytes, *, ttl: int = 64, ident: int = 0,
               dscp: int = 0, df: bool = True, mf: bool = False, frag_offset: int = 0) -> bytes:
    """One IPv4 packet (no options). ``mf`` and ``frag_offset`` (in 8-octet units) make it a fragment."""
    flags = (IP_FLAG_DF if df else 0) | (IP_FLAG_MF if mf else 0)
    h = IPv4Header(total_length=20 + len(payload), ident=ident, flags=flags, ttl=ttl,
                   proto=proto, src=ip4(src), dst=ip4(dst), dscp=dscp, frag_offset=frag_offset)
    raw = h.pack()
    raw = raw[:10] + inet_checksum(raw).to_bytes(2, "big") + raw[12:]
    return raw + bytes(payload)


def parse_ipv4(data) -> tuple[IPv4Header, bytes]:
    """Validate an IPv4 packet; return (header, payload). Options are skipped."""
    data = bytes(data)
    if len(data) < 20:
        raise ParseError(f"IPv4 packet of {len(data)} octets is shorter than its header", kind="truncated")
    h = IPv4Header.unpack(data)
    if h.version != 4:
        raise ParseError(f"IP version {h.version} is not 4", kind="ip_version")
    hl = h.ihl * 4
    if h.ihl < 5 or hl > len(data):
        raise ParseError(f"IPv4 IHL {h.ihl} is invalid for {len(data)} octets", kind="ip_header")
    if h.total_length < hl or h.total_length > len(data):
        raise ParseError(f"IPv4 total length {h.total_length} disagrees with {len(data)} octets",
                         kind="ip_length")
    if inet_checksum(data[:hl]) != 0:
        raise ParseError("IPv4 header checksum mismatch", kind="ip_checksum")
    return h, data[hl:h.total_length]


def build_icmp_echo(ident: int, seq: int, data: bytes = b"", *, reply: bool = False) -> bytes:
    h = ICMPEcho(type=ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST, ident=ident, seq=seq)
    raw = h.pack() + bytes(data)
    csum = inet_checksum(raw)
    return raw[:2] + csum.to_bytes(2, "big") + raw[4:]


def build_icmp(icmp_type: int, code: int, data: bytes = b"", rest: bytes = bytes(4)) -> bytes:
    """Any ICMP message: type, code, checksum, the 4-octet rest of the header, then ``data``
    (for errors: the offending IPv4 header and the start of its payload)."""
    if len(rest) != 4:
        raise ValueError("the rest of the ICMP header is 4 octets")
    raw = bytes([icmp_type, code, 0, 0]) + bytes(rest) + bytes(data)
    return raw[:2] + inet_checksum(raw).to_bytes(2, "big") + raw[4:]


def parse_icmp(data) -> tuple[ICMPEcho, bytes]:
    data = bytes(data)
    if len(data) < 8:
        raise ParseError(f"ICMP message of {len(data)} octets is too short", kind="truncated")
    if inet_checksum(data) != 0:
        raise ParseError("ICMP checksum mismatch", kind="icmp_checksum")
    return ICMPEcho.unpack(data), data[8:]


def _udp_pseudo(src: bytes, dst: bytes, length: int) -> bytes:
    return src + dst + bytes([0, IPPROTO_UDP]) + length.to_bytes(2, "big")


def build_udp(src, dst, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram (header + payload) with its checksum over the IPv4 pseudo-header."""
    length = 8 + len(payload)
    if length > 0xFFFF:
        raise ValueError("UDP datagram too long")
    raw = UDPHeader(sport=sport, dport=dport, length=length).pack() + bytes(payload)
    csum = inet_checksum(_udp_pseudo(ip4(src), ip4(dst), length) + raw) or 0xFFFF
    return raw[:6] + csum.to_bytes(2, "big") + raw[8:]


def parse_udp(src: bytes, dst: bytes, data) -> tuple[UDPHeader, bytes]:
    data = bytes(data)
    if len(data) < 8:
        raise ParseError(f"UDP datagram of {len(data)} octets is too short", kind="truncated")
    h = UDPHeader.unpack(data)
    if h.length < 8 or h.length > len(data):
        raise ParseError(f"UDP length {h.length} disagrees with {len(data)} octets", kind="udp_length")
    if h.checksum and inet_checksum(_udp_pseudo(src, dst, h.length) + data[:h.length]) != 0:
        raise ParseError("UDP checksum mismatch", kind="udp_checksum")
    return h, data[8:h.length]


_codegen.write_cache()  # the code of the headers above, kept for the next process (fabric/wire/_codegen.py)
