"""pcapng captures of InfiniBand packets, with one interface per link end (``leaf01/3``), so that
Wireshark shows which cable, and in which direction, each packet crossed: ERF's two interface bits
cannot name more than four.

A file is a Section Header Block, then Interface Description Blocks and Enhanced Packet Blocks in
any order, as long as an interface is described before its first packet: the writer declares
each link end when its first packet comes, so a live capture never needs to know the fabric's
ports up front. Every block is written whole and the stream flushed after each batch, so a reader
at the other end of a pipe (``tshark -i -``) sees packets as they come and a capture cut short
by ^C is still a valid file. Timestamps are nanoseconds (``if_tsresol`` 9).

Blocks are little-endian (the byte-order magic tells readers). The link type is 197, LINKTYPE_ERF:
each packet is an ERF record of type 21 (InfiniBand, :mod:`fabric.capture`), which Wireshark's
ERF dissector hands to its InfiniBand dissector, down to IPoIB and MADs. The natural type, 247
(LINKTYPE_INFINIBAND, the bare packet from LRH to VCRC), is written with ``linktype=247``, but
tshark 4.0 (Debian 12) does not map 247 to its InfiniBand dissector: it reads such packets as
"WTAP_ENCAP = 0", undecoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .capture import ERF_HDR_LEN, ERF_TYPE_INFINIBAND, CaptureFile, encode_record
from .wire.errors import ParseError

LINKTYPE_ERF = 197
LINKTYPE_INFINIBAND = 247
BT_SHB, BT_IDB, BT_ISB, BT_EPB = 0x0A0D0D0A, 0x00000001, 0x00000005, 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
# option codes (pcapng spec, section 4): those this writer uses
OPT_END, OPT_COMMENT = 0, 1
SHB_USERAPPL = 4
IF_NAME, IF_DESCRIPTION, IF_TSRESOL = 2, 3, 9
EPB_FLAGS = 2
ISB_STARTTIME, ISB_ENDTIME, ISB_IFRECV, ISB_IFDROP = 2, 3, 4, 5
EPB_OUTBOUND = 0x2  # epb_flags bits 0-1: direction; a link end records what it transmits
MAX_SNAPLEN = 0xFFFF  # an InfiniBand packet is at most 4,096 octets of payload plus headers


def _pad(n: int) -> int:
    return -n % 4


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * _pad(len(value))


def _options(opts) -> bytes:
    body = b"".join(_option(c, v) for c, v in opts)
    return body + struct.pack("<HH", OPT_END, 0) if body else b""


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def section_header(application: str = "ibfab capture") -> bytes:
    # section length -1: not known in advance (the file may be a pipe)
    return _block(BT_SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
                  + _options([(SHB_USERAPPL, application.encode())]))


def interface_description(name: str, description: str | None = None, *, linktype: int = LINKTYPE_ERF,
                          snaplen: int = MAX_SNAPLEN) -> bytes:
    opts = [(IF_NAME, name.encode())]
    if description:
        opts.append((IF_DESCRIPTION, description.encode()))
    opts.append((IF_TSRESOL, bytes([9])))
    return _block(BT_IDB, struct.pack("<HHI", linktype, 0, snaplen) + _options(opts))


def enhanced_packet(interface: int, ts_ns: int, packet, *, wire_length: int | None = None,
                    flags: int | None = EPB_OUTBOUND) -> bytes:
    packet = bytes(packet)
    wlen = len(packet) if wire_length is None else wire_length
    opts = _options([(EPB_FLAGS, struct.pack("<I", flags))] if flags is not None else [])
    return _block(BT_EPB, struct.pack("<IIIII", interface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(packet), wlen)
                  + packet + b"\0" * _pad(len(packet)) + opts)


def interface_statistics(interface: int, ts_ns: int, *, received: int | None = None, dropped: int | None = None,
                         start_ns: int | None = None) -> bytes:
    """What a link end saw and lost, written at the end of a capture (Wireshark's Capture File
    Properties show it)."""
    opts = []
    if start_ns is not None:
        opts.append((ISB_STARTTIME, struct.pack("<II", start_ns >> 32, start_ns & 0xFFFFFFFF)))
    opts.append((ISB_ENDTIME, struct.pack("<II", ts_ns >> 32, ts_ns & 0xFFFFFFFF)))
    if received is not None:
        opts.append((ISB_IFRECV, struct.pack("<Q", received)))
    if dropped is not None:
        opts.append((ISB_IFDROP, struct.pack("<Q", dropped)))
    return _block(BT_ISB, struct.pack("<III", interface, ts_ns >> 32, ts_ns & 0xFFFFFFFF) + _options(opts))


class PcapngWriter(CaptureFile):
    """Write InfiniBand packets to a pcapng stream, one interface per name, declared at its first
    packet. ``out`` is a path or a binary file object (``sys.stdout.buffer`` for ``-w -``)."""

    def __init__(self, out, *, application: str = "ibfab capture", snaplen: int = MAX_SNAPLEN,
                 linktype: int = LINKTYPE_ERF):
        if linktype not in (LINKTYPE_ERF, LINKTYPE_INFINIBAND):
            raise ValueError(f"link type {linktype}: InfiniBand is written as ERF (197) or bare (247)")
        super().__init__(out)
        self.linktype = linktype
        self.snaplen = snaplen
        self.interfaces: dict = {}  # name -> interface id, in the order they were declared
        self.descriptions: dict = {}  # name -> if_description, given before the first packet
        self.received: dict = {}  # interface id -> packets written
        self.count = 0
        self.first_ns: int | None = None
        self._f.write(section_header(application))

    def interface(self, name: str) -> int:
        """The id of interface ``name``, declaring it first if this is its first use."""
        i = self.interfaces.get(name)
        if i is None:
            i = self.interfaces[name] = len(self.interfaces)
            self.received[i] = 0
            self._f.write(interface_description(name, self.descriptions.get(name), linktype=self.linktype,
                                                snaplen=self.snaplen))
        return i

    def write(self, name: str, ts_ns: int, packet) -> None:
        i = self.interface(name)
        n = len(packet)
        packet = packet[:self.snaplen]
        if self.linktype == LINKTYPE_ERF:  # the wire length counts the ERF header too, as libpcap's
            packet, n = encode_record(packet, ts_ns, wire_length=n), n + ERF_HDR_LEN
        self._f.write(enhanced_packet(i, ts_ns, packet, wire_length=n))
        self.received[i] += 1
        self.count += 1
        if self.first_ns is None:
            self.first_ns = ts_ns

    def statistics(self, ts_ns: int, dropped: dict | None = None) -> None:
        """An Interface Statistics Block per interface: packets written, and ``dropped[name]``
        (declaring the interfaces that lost packets but wrote none)."""
        dropped = dropped or {}
        for name in dropped:
            self.interface(name)
        for name, i in self.interfaces.items():
            self._f.write(interface_statistics(i, ts_ns, received=self.received[i], dropped=dropped.get(name, 0),
                                               start_ns=self.first_ns))


@dataclass(frozen=True)
class PcapngPacket:
    interface: str  # if_name of its interface
    timestamp_ns: int
    packet: bytes
    wire_length: int


def _parse_options(data: bytes, off: int, end: int) -> dict:
    opts: dict = {}
    while off + 4 <= end:
        code, ln = struct.unpack_from("<HH", data, off)
        if code == OPT_END:
            break
        opts.setdefault(code, bytes(data[off + 4:off + 4 + ln]))
        off += 4 + ln + _pad(ln)
    return opts


def parse_pcapng(data: bytes) -> list[PcapngPacket]:
    """The packets of a little-endian pcapng section as this writer makes it (with the interface
    names); enough to list our own captures, not a general reader."""
    out, names, res, erf = [], [], [], []
    off, n = 0, len(data)
    while off < n:
        if n - off < 12:
            raise ParseError(f"pcapng block at offset {off}: {n - off} octets left", kind="truncated")
        btype, total = struct.unpack_from("<II", data, off)
        if total < 12 or total % 4 or off + total > n:
            raise ParseError(f"pcapng block at offset {off}: length {total} is invalid", kind="pcapng_length")
        body_end = off + total - 4
        if btype == BT_SHB:
            if struct.unpack_from("<I", data, off + 8)[0] != BYTE_ORDER_MAGIC:
                raise ParseError("pcapng: only little-endian sections are read", kind="pcapng_order")
        elif btype == BT_IDB:
            opts = _parse_options(data, off + 16, body_end)
            names.append(opts.get(IF_NAME, b"").decode(errors="replace") or f"if{len(names)}")
            erf.append(struct.unpack_from("<H", data, off + 8)[0] == LINKTYPE_ERF)
            tsres = opts.get(IF_TSRESOL, b"\x06")[0]
            res.append(10 ** (9 - tsres) if not tsres & 0x80 and tsres <= 9 else 1)
        elif btype == BT_EPB:
            iface, hi, lo, caplen, wlen = struct.unpack_from("<IIIII", data, off + 8)
            if iface >= len(names) or off + 28 + caplen > body_end:
                raise ParseError(f"pcapng packet at offset {off}: interface {iface} or length {caplen} is invalid",
                                 kind="pcapng_epb")
            pkt = bytes(data[off + 28:off + 28 + caplen])
            if erf[iface]:
                if len(pkt) < ERF_HDR_LEN or pkt[8] & 0x7F != ERF_TYPE_INFINIBAND:
                    raise ParseError(f"pcapng packet at offset {off}: not an ERF InfiniBand record", kind="erf_type")
                pkt, wlen = pkt[ERF_HDR_LEN:], wlen - ERF_HDR_LEN
            out.append(PcapngPacket(names[iface], ((hi << 32) | lo) * res[iface], pkt, wlen))
        off += total
    return out


def is_pcapng(data: bytes) -> bool:
    return len(data) >= 4 and struct.unpack_from("<I", data)[0] == BT_SHB
