"""Packet captures as ERF records of type 21 (InfiniBand), which Wireshark and tshark decode.

An ERF record is a 16-octet header followed by the packet, starting at its LRH and ending with its
VCRC:

    ts     8  little-endian 32.32 fixed point: seconds since the epoch . binary fraction
    type   1  21 = InfiniBand
    flags  1  bit 2 'varying record length' (we never pad), bits 0-1 the capture interface
    rlen   2  big-endian, record length including this header
    lctr   2  big-endian, loss counter: packets lost before this one
    wlen   2  big-endian, length of the packet on the wire
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .wire.errors import ParseError

ERF_TYPE_INFINIBAND = 21
ERF_FLAG_VLEN = 0x04
ERF_FLAG_TRUNCATED = 0x08
ERF_FLAG_RXERROR = 0x10
ERF_HDR_LEN = 16
MAX_RECORD = 0xFFFF


@dataclass(frozen=True)
class ErfRecord:
    timestamp: float  # seconds
    packet: bytes
    interface: int = 0
    loss: int = 0
    wire_length: int = 0
    flags: int = ERF_FLAG_VLEN

    @property
    def truncated(self) -> bool:
        return bool(self.flags & ERF_FLAG_TRUNCATED)


def _ts_encode(t) -> bytes:
    """``t`` in seconds (float) or in nanoseconds (int); ints keep full precision."""
    if isinstance(t, int):
        sec, ns = divmod(t, 1_000_000_000)
        frac = (ns << 32) // 1_000_000_000
    else:
        sec = int(t)
        frac = int(round((t - sec) * (1 << 32)))
        if frac >> 32:
            sec, frac = sec + 1, 0
    return ((sec << 32) | frac).to_bytes(8, "little")


def encode_record(packet: bytes, timestamp: float | int | None = None, *, interface: int = 0, loss: int = 0,
                  wire_length: int | None = None, rx_error: bool = False) -> bytes:
    packet = bytes(packet)
    rlen = ERF_HDR_LEN + len(packet)
    if rlen > MAX_RECORD:
        raise ValueError(f"packet of {len(packet)} octets does not fit in one ERF record")
    wlen = len(packet) if wire_length is None else wire_length
    flags = ERF_FLAG_VLEN | (interface & 0x3)
    if wlen > len(packet):
        flags |= ERF_FLAG_TRUNCATED
    if rx_error:
        flags |= ERF_FLAG_RXERROR
    ts = time.time_ns() if timestamp is None else timestamp
    return (_ts_encode(ts) + bytes([ERF_TYPE_INFINIBAND, flags]) + rlen.to_bytes(2, "big")
            + min(loss, 0xFFFF).to_bytes(2, "big") + min(wlen, 0xFFFF).to_bytes(2, "big") + packet)


class CaptureFile:
    """A capture written to a path (opened here, closed by ``close``) or to a binary file object
    the caller owns (flushed, left open). Usable as a context manager."""

    def __init__(self, path_or_file):
        self._own = isinstance(path_or_file, (str, bytes)) or hasattr(path_or_file, "__fspath__")
        self._f = open(path_or_file, "wb") if self._own else path_or_file

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if self._own:
            self._f.close()
        else:
            self._f.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ErfWriter(CaptureFile):
    """Append InfiniBand packets to an ERF file."""

    def __init__(self, path_or_file, *, snaplen: int = MAX_RECORD - ERF_HDR_LEN):
        super().__init__(path_or_file)
        self.snaplen = snaplen
        self.count = 0

    def write(self, packet: bytes, timestamp: float | int | None = None, *, interface: int = 0,
              loss: int = 0, rx_error: bool = False) -> None:
        packet = bytes(packet)
        self._f.write(encode_record(packet[:self.snaplen], timestamp, interface=interface, loss=loss,
                                    wire_length=len(packet), rx_error=rx_error))
        self.count += 1


def parse_records(data: bytes) -> list[ErfRecord]:
    """Decode every record of an ERF capture; ParseError says where and why a record is bad."""
    out = []
    off = 0
    n = len(data)
    while off < n:
        if n - off < ERF_HDR_LEN:
            raise ParseError(f"ERF record at offset {off}: {n - off} octets left, header needs 16",
                             kind="truncated")
        ts_raw = int.from_bytes(data[off:off + 8], "little")
        rtype, flags = data[off + 8], data[off + 9]
        rlen = int.from_bytes(data[off + 10:off + 12], "big")
        lctr = int.from_bytes(data[off + 12:off + 14], "big")
        wlen = int.from_bytes(data[off + 14:off + 16], "big")
        if rtype & 0x7F != ERF_TYPE_INFINIBAND:
            raise ParseError(f"ERF record at offset {off}: type {rtype & 0x7F} is not InfiniBand (21)",
                             kind="erf_type")
        if rtype & 0x80:
            raise ParseError(f"ERF record at offset {off}: extension headers are not supported",
                             kind="erf_ext")
        if rlen < ERF_HDR_LEN or off + rlen > n:
            raise ParseError(f"ERF record at offset {off}: rlen {rlen} is invalid", kind="erf_rlen")
        pkt = bytes(data[off + ERF_HDR_LEN:off + rlen])
        ts = (ts_raw >> 32) + (ts_raw & 0xFFFFFFFF) / (1 << 32)
        out.append(ErfRecord(ts, pkt, flags & 0x3, lctr, wlen, flags))
        off += rlen
    return out


def read_erf(path) -> list[ErfRecord]:
    with open(path, "rb") as f:
        return parse_records(f.read())
