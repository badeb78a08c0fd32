"""IPv4 reassembly (RFC 791, RFC 815), the way Linux does it: 30 s per queue, bounded memory,
an overlap kills the queue, an exact duplicate is dropped alone (since 4.19)."""

from __future__ import annotations

from .common import MAX_DATAGRAM, _Datagram
from ..inet import ICMP_TIME_EXCEEDED, IP_FLAG_DF, IP_FLAG_MF, inet_checksum


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


class Reassembly:
    """The reassembly half of :class:`ipoib.iphost.stack.IpStack` (mixed in)."""


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
