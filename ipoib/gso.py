"""UDP segmentation offload (like Linux's UDP_SEGMENT / NETIF_F_GSO_UDP_L4).

A socket with ``gso_size`` set hands the stack one buffer of many segments; the stack builds one
:class:`GsoPacket` (the first segment's IPv4 and UDP headers followed by the whole payload) and
passes it down as one frame. A provider that offloads it (``fast``) cuts it into datagrams in C as
it queues them; the standard provider does it here, in software, as the kernel does for a device
without the feature. Both make, octet for octet, the datagrams separate sends would have made:
consecutive IP identifications, each with its own lengths and checksums.
"""

from __future__ import annotations

from . import inet

MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS


class GsoPacket(bytes):
    """``bytes`` of [link header] IPv4 header, UDP header, payload; ``l3`` is where the IPv4 header
    starts (0 in the IP layer, 4 in an IPoIB frame), ``gso_size`` the payload octets per segment."""

    gso_size: int
    l3: int

    def __new__(cls, data, gso_size: int, l3: int = 0):
        self = super().__new__(cls, data)
        self.gso_size = int(gso_size)
        self.l3 = int(l3)
        return self

    def with_header(self, link_header: bytes) -> "GsoPacket":
        return GsoPacket(link_header + self, self.gso_size, self.l3 + len(link_header))

    @property
    def payload_len(self) -> int:
        return len(self) - self.l3 - 28

    @property
    def segments(self) -> int:
        return max(1, -(-self.payload_len // self.gso_size))

    @property
    def wire_len(self) -> int:
        """Octets of all the segments (each with its own headers)."""
        return self.segments * (self.l3 + 28) + self.payload_len


def segment(pkt: GsoPacket) -> list[bytes]:
    """Software GSO: the datagrams ``pkt`` stands for, each after the same link header."""
    l3, gso = pkt.l3, pkt.gso_size
    head = bytes(pkt[:l3])
    ip = pkt[l3:l3 + 20]
    udp = pkt[l3 + 20:l3 + 28]
    src, dst = bytes(ip[12:16]), bytes(ip[16:20])
    ident0 = int.from_bytes(ip[4:6], "big")
    flags = ip[6] >> 5
    ttl, dscp = ip[8], ip[1] >> 2
    sport, dport = int.from_bytes(udp[0:2], "big"), int.from_bytes(udp[2:4], "big")
    payload = bytes(pkt[l3 + 28:])
    out = []
    for i, o in enumerate(range(0, max(len(payload), 1), gso)):
        dgram = inet.build_udp(src, dst, sport, dport, payload[o:o + gso])
        out.append(head + inet.build_ipv4(src, dst, inet.IPPROTO_UDP, dgram, ttl=ttl, ident=(ident0 + i) & 0xFFFF,
                                          dscp=dscp, df=bool(flags & 2)))
    return out
