"""RMPP framing of SA responses (IBA vol. 1 section 13.6), sans-IO.

An SA GetTableResp carries its records as one RMPP transfer: the records, each padded to a
multiple of 8 octets, are concatenated and cut into 200-octet pieces, one per MAD. Every segment
repeats the common MAD header and the 20-octet SA header (SM_Key, AttributeOffset, ComponentMask)
and carries its own RMPP header:

- RMPPVersion 1, RMPPType DATA, RMPPFlags Active on every segment, plus First on the first and Last
  on the last (a one-segment transfer has all three);
- SegmentNumber (Data1) counts from 1;
- PayloadLength (Data2) counts the octets after the RMPP header, so each segment contributes 220
  (the SA header and its 200 data octets). The first segment holds the length of the whole transfer,
  ``records + 20 * segments``; the last holds its own share, ``220 - padding``; middle segments
  hold 0. A one-segment transfer holds ``records + 20`` (both rules agree). This is what the Linux
  MAD layer (``ib_mad``'s RMPP sender) puts on the wire for OpenSM, and what its receiver uses to
  size the reassembled MAD.

The sender here sends every segment at once and ignores ACKs: the emulated fabric has no need for
RMPP's window and retransmission, and this project's SA clients reassemble with
:class:`Reassembler`, which rejects a gap (a lost segment) instead of waiting for a resend.
"""

from __future__ import annotations

from ..wire import mad as m
from ..wire.errors import ParseError

SEG_DATA = m.SA_DATA_LEN          # 200 data octets per SA segment
SA_HDR_EXTRA = 20                 # SM_Key, AttributeOffset, reserved, ComponentMask
SEG_PAYLOAD = SEG_DATA + SA_HDR_EXTRA  # 220: what PayloadLength counts per segment
RMPP_HDR_OFFSET = 24              # the RMPP header follows the common MAD header
SA_DATA_OFFSET = m.MAD_SIZE - SEG_DATA  # 56


class RmppError(ValueError):
    """A segment stream that cannot be reassembled. ``kind``: not_rmpp, not_first, missing,
    bad_length, mismatch, aborted, complete."""

    def __init__(self, reason: str, *, kind: str):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def segment_count(payload_len: int) -> int:
    return max(1, -(-payload_len // SEG_DATA))


def paylen_first(payload_len: int) -> int:
    """PayloadLength of the first segment of a transfer of ``payload_len`` record octets."""
    return payload_len + SA_HDR_EXTRA * segment_count(payload_len)


def paylen_last(payload_len: int) -> int:
    """PayloadLength of the last segment."""
    n = segment_count(payload_len)
    return payload_len - (n - 1) * SEG_DATA + SA_HDR_EXTRA


def segment(header_mad, payload: bytes) -> list[bytes]:
    """Cut ``payload`` into RMPP DATA segments that repeat ``header_mad``'s MAD and SA headers.

    ``header_mad`` is an :class:`~fabric.wire.SAMad` (or its 256 octets) with the method, TID,
    status, attribute, SM_Key, AttributeOffset and ComponentMask of the response; its RMPP fields
    and data are replaced. Returns one 256-octet MAD per segment (at least one, even for an empty
    payload).
    """
    base = bytearray(header_mad if isinstance(header_mad, (bytes, bytearray)) else header_mad.pack())
    if len(base) != m.MAD_SIZE:
        raise ValueError(f"header MAD of {len(base)} octets, expected {m.MAD_SIZE}")
    payload = bytes(payload)
    n = segment_count(len(payload))
    out = []
    for i in range(n):
        flags = m.RMPP_FLAG_ACTIVE
        paylen = 0
        if i == 0:
            flags |= m.RMPP_FLAG_FIRST
            paylen = paylen_first(len(payload))
        if i == n - 1:
            flags |= m.RMPP_FLAG_LAST
            paylen = paylen_last(len(payload))
        seg = bytearray(base)
        seg[RMPP_HDR_OFFSET] = m.RMPP_VERSION
        seg[RMPP_HDR_OFFSET + 1] = m.RMPP_TYPE_DATA
        seg[RMPP_HDR_OFFSET + 2] = flags  # RRespTime 0 in the top five bits
        seg[RMPP_HDR_OFFSET + 3] = 0
        seg[RMPP_HDR_OFFSET + 4:RMPP_HDR_OFFSET + 8] = (i + 1).to_bytes(4, "big")
        seg[RMPP_HDR_OFFSET + 8:RMPP_HDR_OFFSET + 12] = paylen.to_bytes(4, "big")
        seg[SA_DATA_OFFSET:] = payload[i * SEG_DATA:(i + 1) * SEG_DATA].ljust(SEG_DATA, b"\0")
        out.append(bytes(seg))
    return out


class Reassembler:
    """Reassembles the segments of one SA response (client side).

    ``feed(mad)`` takes a 256-octet MAD (or an SAMad) and returns the whole payload (the records
    as sent, padding between records included) once the transfer is complete, else None. A MAD
    without the RMPP Active flag is a complete one-MAD response: its 200 data octets are returned
    at once. A repeated segment is ignored and counted in ``duplicates``; a gap, a first segment
    without the First flag, inconsistent PayloadLengths or an ABORT/STOP raise :class:`RmppError`.
    """

    def __init__(self):
        self.header = None      # SAMad of the first segment
        self.next_seg = 1
        self.parts: list[bytes] = []
        self.first_paylen = None
        self.duplicates = 0
        self.result: bytes | None = None

    @property
    def complete(self) -> bool:
        return self.result is not None

    def feed(self, mad) -> bytes | None:
        if isinstance(mad, (bytes, bytearray, memoryview)):
            raw = bytes(mad)
            if len(raw) < m.MAD_SIZE:
                raise ParseError(f"MAD of {len(raw)} octets", kind="truncated")
            sa = m.SAMad.unpack(raw)
        else:
            sa = mad
        if self.result is not None:
            if sa.rmpp_flags & m.RMPP_FLAG_ACTIVE and sa.rmpp_type == m.RMPP_TYPE_DATA:
                self.duplicates += 1
                return None
            raise RmppError("transfer already complete", kind="complete")
        if not sa.rmpp_flags & m.RMPP_FLAG_ACTIVE:
            if self.parts:
                raise RmppError("non-RMPP MAD in the middle of a transfer", kind="not_rmpp")
            self.header = sa
            self.result = bytes(sa.data)
            return self.result
        if sa.rmpp_type in (m.RMPP_TYPE_ABORT, m.RMPP_TYPE_STOP):
            raise RmppError(f"sender sent RMPP {'ABORT' if sa.rmpp_type == m.RMPP_TYPE_ABORT else 'STOP'}"
                            f" (status {sa.rmpp_status})", kind="aborted")
        if sa.rmpp_type != m.RMPP_TYPE_DATA:
            return None  # an ACK is not ours to reassemble
        seg = sa.rmpp_data1
        if seg < self.next_seg:
            self.duplicates += 1
            return None
        if seg > self.next_seg:
            raise RmppError(f"segment {seg} arrived, expected {self.next_seg}: segment(s) missing",
                            kind="missing")
        if seg == 1:
            if not sa.rmpp_flags & m.RMPP_FLAG_FIRST:
                raise RmppError("segment 1 without the First flag", kind="not_first")
            self.header = sa
            self.first_paylen = sa.rmpp_data2
        elif sa.rmpp_flags & m.RMPP_FLAG_FIRST:
            raise RmppError(f"segment {seg} carries the First flag", kind="not_first")
        elif (sa.tid, sa.attr_id) != (self.header.tid, self.header.attr_id):
            raise RmppError("segment of another transaction", kind="mismatch")
        self.parts.append(bytes(sa.data))
        self.next_seg += 1
        if not sa.rmpp_flags & m.RMPP_FLAG_LAST:
            return None
        last = sa.rmpp_data2
        if not SA_HDR_EXTRA <= last <= SEG_PAYLOAD:
            raise RmppError(f"last segment PayloadLength {last} outside {SA_HDR_EXTRA}..{SEG_PAYLOAD}",
                            kind="bad_length")
        n = len(self.parts)
        total = (n - 1) * SEG_DATA + last - SA_HDR_EXTRA
        if self.first_paylen != total + SA_HDR_EXTRA * n:
            raise RmppError(f"first segment PayloadLength {self.first_paylen} disagrees with "
                            f"{n} segments of {total} octets", kind="bad_length")
        self.result = b"".join(self.parts)[:total]
        return self.result


def reassembled(mads) -> "Reassembler":
    """Feed a complete list of segments (in order) to a Reassembler; its ``result`` is the
    payload and its ``header`` the first segment's. RmppError if the transfer is incomplete."""
    r = Reassembler()
    out = None
    for mad in mads:
        out = r.feed(mad)
    if out is None:
        raise RmppError("transfer incomplete", kind="missing")
    return r


def reassemble(mads) -> bytes:
    """Reassemble a complete list of segments (any order is not accepted: they must be in order)."""
    return reassembled(mads).result
