"""IPoIB's own wire formats (RFC 4391): the encapsulation header, the 20-octet hardware address,
the IPv4 multicast MGIDs and ARP with IB hardware addresses.

The IB transport headers underneath are :mod:`fabric.wire`'s. The one IPoIB fact the fabric keeps
is the broadcast group (``fabric.wire.ipoib_broadcast_mgid``, ``IPOIB_QKEY``), because the SM
creates it for partitions.conf's ``ipoib`` flag, as OpenSM does.
"""

from __future__ import annotations

from fabric.wire import ParseError, ipoib_broadcast_mgid
from fabric.wire import _codegen
from fabric.wire.fields import B, R, Struct, U

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD
IPOIB_HDR_LEN = 4


class IPoIBHeader(Struct):
    """The 4-octet encapsulation header that precedes every IPoIB payload."""

    FIELDS = (U("ethertype", 16), R(16))


class IPoIBLinkAddr(Struct):
    """The 20-octet IPoIB hardware address: flags (connected-mode bit etc.), QPN, port GID."""

    FIELDS = (U("flags", 8), U("qpn", 24), B("gid", 16))


def hwaddr(qpn: int, gid: bytes) -> bytes:
    return IPoIBLinkAddr(flags=0, qpn=qpn, gid=gid).pack()


def split_hwaddr(hw: bytes) -> tuple[int, bytes]:
    """(QPN, GID) of a 20-octet hardware address."""
    a = IPoIBLinkAddr.unpack(hw)
    return a.qpn, a.gid


def ipv4_mcast_mgid(ipv4: bytes, pkey: int, scope: int = 2) -> bytes:
    """RFC 4391 section 4: ff1<scope>:401b:<P_Key>::<low 28 bits of the IPv4 group>."""
    if len(ipv4) != 4:
        raise ValueError("IPv4 group address must be 4 octets")
    # the broadcast group's prefix (signature 401b and P_Key), then the group's low 28 bits
    return ipoib_broadcast_mgid(pkey, scope)[:12] + bytes([ipv4[0] & 0x0F]) + bytes(ipv4[1:])


# -- ARP (RFC 4391 section 8) --------------------------------------------------------------------

ARPHRD_INFINIBAND = 32
ARP_REQUEST, ARP_REPLY = 1, 2


class IPoIBArp(Struct):
    """ARP over IPoIB (RFC 4391 section 8): 20-octet hardware addresses, 56 octets."""

    FIELDS = (
        U("htype", 16, ARPHRD_INFINIBAND), U("ptype", 16, ETHERTYPE_IPV4), U("hlen", 8, 20), U("plen", 8, 4),
        U("oper", 16),
        B("sha", 20), B("spa", 4), B("tha", 20), B("tpa", 4),
    )


def parse_arp(data) -> IPoIBArp:
    data = bytes(data)
    if len(data) < IPoIBArp.SIZE:
        raise ParseError(f"ARP packet of {len(data)} octets is too short for IPoIB", kind="truncated")
    a = IPoIBArp.unpack(data)
    if a.htype != ARPHRD_INFINIBAND or a.ptype != ETHERTYPE_IPV4 or a.hlen != 20 or a.plen != 4:
        raise ParseError(f"ARP htype {a.htype} ptype 0x{a.ptype:04x} hlen {a.hlen} plen {a.plen} "
                         "is not IPoIB over IPv4", kind="arp_format")
    if a.oper not in (ARP_REQUEST, ARP_REPLY):
        raise ParseError(f"ARP operation {a.oper} is not request or reply", kind="arp_oper")
    return a


_codegen.write_cache()  # the code of the headers above, kept for the next process (fabric/wire/_codegen.py)
