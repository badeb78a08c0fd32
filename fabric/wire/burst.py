"""Link burst framing: a ZeroMQ message on a link is a burst of IB packets.

    octet 0     format version (3)
    octet 1     kind: DATA, or a link-training/control frame (HELLO, HELLO_ACK, DOWN)
    octet 2     destination port number on the receiving device
    octet 3     reserved (0)
    octets 4-5  packet count, big-endian
    octets 6-13 the fabric's link token: a host takes a burst only from its own fabric (not from a
                stale process of an earlier fabric of the same name, nor anyone else who can
                reach the socket); zero in-process (LoopNet)
    octets 14-15 the receiving device: its place in the run's device list, host by host
                (RunInfo.device_order); a device host has one ingress socket for all its devices
    then, per packet: a 16-bit big-endian length and the packet octets (LRH through VCRC)

One message carries many packets so the per-message cost of ZeroMQ (about 0.7 us) is shared; see
DESIGN.md section 3. Control frames carry no packets: they model link training (both ends must see
each other before the physical state is LinkUp, see :mod:`fabric.devices.training`) and a cable
pulled at one end.

Compiled paths (a switch forwarding a burst, the accelerated IPoIB provider sending) build the
packets of a burst straight into a buffer that starts with ``BURST_HEADROOM`` free octets, a
:class:`Segment`; the host writes the burst header into that room and sends the buffer as it is.
"""

from __future__ import annotations

import struct

from .errors import ParseError

BURST_VERSION = 3
KIND_DATA, KIND_HELLO, KIND_HELLO_ACK, KIND_DOWN = 0, 1, 2, 3
KIND_NAMES = {0: "data", 1: "hello", 2: "hello-ack", 3: "down"}
BURST_HDR = struct.Struct("!BBBxH8sH")
NO_TOKEN = bytes(8)
LEN = struct.Struct("!H")
MAX_BURST_PACKETS = 0xFFFF
BURST_HEADROOM = BURST_HDR.size  # what a compiled path leaves free in front of a Segment's packets


class Segment:
    """Packets framed for one egress port's next burst: ``buf`` holds ``BURST_HEADROOM`` octets of
    room for the burst header, then ``count`` length-prefixed packets. A device puts one in its
    outbox instead of ``count`` ``(port, packet)`` pairs, so the host sends it without a copy."""

    __slots__ = ("port", "count", "buf")

    def __init__(self, port: int, count: int, buf):
        self.port = port
        self.count = count
        self.buf = buf

    def packets(self) -> list:
        """The packets, one by one (for in-process delivery and captures)."""
        return decode_burst_packets(self.buf, BURST_HEADROOM, self.count)

    def __repr__(self):
        return f"Segment(port={self.port}, count={self.count}, {len(self.buf) - BURST_HEADROOM} octets)"


def encode_burst(dest_port: int, packets, kind: int = KIND_DATA, token: bytes = NO_TOKEN, device: int = 0) -> bytes:
    packets = list(packets)
    if len(packets) > MAX_BURST_PACKETS:
        raise ValueError("too many packets for one burst")
    parts = [BURST_HDR.pack(BURST_VERSION, kind, dest_port, len(packets), token, device)]
    for p in packets:
        if len(p) > 0xFFFF:
            raise ValueError(f"packet of {len(p)} octets cannot be framed")
        parts.append(LEN.pack(len(p)))
        parts.append(p)
    return b"".join(parts)


def encode_control(dest_port: int, kind: int, token: bytes = NO_TOKEN, device: int = 0) -> bytes:
    return BURST_HDR.pack(BURST_VERSION, kind, dest_port, 0, token, device)


def burst_device(data) -> int | None:
    """The receiving device's index a burst names, or None when it is too short to name one."""
    if len(data) < BURST_HDR.size:
        return None
    return (data[14] << 8) | data[15]


def decode_burst_header(data, token: bytes = NO_TOKEN) -> tuple[int, int, int]:
    """(kind, dest_port, count) of a burst; ParseError if the header is bad or carries another
    fabric's token."""
    if len(data) < BURST_HDR.size:
        raise ParseError(f"burst of {len(data)} octets is shorter than its header", kind="burst")
    version, kind, port, count, tok, _ = BURST_HDR.unpack_from(data)
    if version != BURST_VERSION:
        raise ParseError(f"burst format version {version} is not {BURST_VERSION}", kind="burst")
    if kind not in KIND_NAMES:
        raise ParseError(f"burst kind {kind} is unknown", kind="burst")
    if tok != token:
        raise ParseError("burst from another fabric (its link token is not ours)", kind="token")
    return kind, port, count


def decode_burst(data) -> tuple[int, int, list]:
    """(kind, dest_port, [packet, ...]); ParseError if the framing is inconsistent."""
    data = bytes(data)
    kind, port, count = decode_burst_header(data)
    return kind, port, decode_burst_packets(data, BURST_HDR.size, count)


def decode_burst_packets(data, off: int, count: int) -> list:
    out = []
    n = len(data)
    for i in range(count):
        if off + 2 > n:
            raise ParseError(f"burst truncated at packet {i} of {count}", kind="burst")
        (ln,) = LEN.unpack_from(data, off)
        off += 2
        if off + ln > n:
            raise ParseError(f"burst packet {i} claims {ln} octets, {n - off} left", kind="burst")
        out.append(data[off:off + ln])
        off += ln
    if off != n:
        raise ParseError(f"{n - off} trailing octets after {count} packets", kind="burst")
    return out
