"""Transport headers of a UD packet (IBA vol. 1 ch. 5 and 9), LIDs, P_Keys, GIDs and MGIDs."""

from __future__ import annotations

from .fields import B, R, Struct, U

# LRH.LNH: what follows the LRH
LNH_RAW, LNH_IP_NON_IBA, LNH_IBA_LOCAL, LNH_IBA_GLOBAL = 0, 1, 2, 3
GRH_NXTHDR_IBA = 0x1B
IPV6_VERSION = 6

OPCODE_UD_SEND_ONLY = 0x64
OPCODE_UD_SEND_ONLY_IMM = 0x65

VL15 = 15  # management VL: QP0 SMPs travel on it
QP0, QP1 = 0, 1
QKEY_GSI = 0x80010000  # the well-known Q_Key of QP1
PKEY_DEFAULT = 0xFFFF
PKEY_FULL_BIT = 0x8000

LID_PERMISSIVE = 0xFFFF
LID_MCAST_FIRST = 0xC000
LID_MCAST_LAST = 0xFFFE


def is_mcast_lid(lid: int) -> bool:
    return LID_MCAST_FIRST <= lid <= LID_MCAST_LAST


class LRH(Struct):
    """Local Route Header, 8 octets."""

    FIELDS = (
        U("vl", 4), U("lver", 4), U("sl", 4), R(2), U("lnh", 2),
        U("dlid", 16),
        R(5), U("pktlen", 11),  # 4-octet words from the first octet of LRH to the last of ICRC
        U("slid", 16),
    )


class GRH(Struct):
    """Global Route Header, 40 octets; same shape as an IPv6 header."""

    FIELDS = (
        U("ipver", 4, IPV6_VERSION), U("tclass", 8), U("flow_label", 20),
        U("paylen", 16),  # octets after the GRH up to and including ICRC
        U("nxthdr", 8, GRH_NXTHDR_IBA), U("hoplmt", 8, 255),
        B("sgid", 16), B("dgid", 16),
    )


class BTH(Struct):
    """Base Transport Header, 12 octets."""

    FIELDS = (
        U("opcode", 8, OPCODE_UD_SEND_ONLY), U("se", 1), U("m", 1), U("padcnt", 2), U("tver", 4),
        U("pkey", 16, PKEY_DEFAULT),
        R(8),  # resv8a: variant, masked in the ICRC
        U("dest_qp", 24),
        U("ack_req", 1), R(7), U("psn", 24),
    )


class DETH(Struct):
    """Datagram Extended Transport Header, 8 octets."""

    FIELDS = (U("qkey", 32), R(8), U("src_qp", 24))


# -- multicast -----------------------------------------------------------------------------------

QPN_MULTICAST = 0xFFFFFF  # the destination QP of every multicast packet (IBA 10.5.2.2)

# The broadcast group of IPoIB (RFC 4391), which the SM creates for every partition that
# partitions.conf flags ``ipoib``, as OpenSM does: the one IPoIB fact the fabric needs.
IPOIB_QKEY = 0x0B1B


def ipoib_broadcast_mgid(pkey: int, scope: int = 2) -> bytes:
    """Broadcast MGID ff1<scope>:401b:<P_Key>::ffff:ffff; the full-membership bit is always set."""
    pkey |= PKEY_FULL_BIT
    return bytes([0xFF, 0x10 | scope, 0x40, 0x1B, pkey >> 8, pkey & 0xFF]) + bytes(6) + b"\xff\xff\xff\xff"


def fmt_gid(gid: bytes) -> str:
    """GID in the colon-separated form infiniband-diags prints (fe80:0000:...)."""
    h = gid.hex()
    return ":".join(h[i:i + 4] for i in range(0, 32, 4))


def parse_gid(text: str) -> bytes:
    import ipaddress
    return ipaddress.IPv6Address(text).packed


def make_gid(prefix: int, guid: int) -> bytes:
    return prefix.to_bytes(8, "big") + guid.to_bytes(8, "big")


GID_PREFIX_DEFAULT = 0xFE80000000000000
