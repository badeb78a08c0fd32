"""Whole UD packets: LRH [GRH] BTH DETH payload pad ICRC VCRC."""

from __future__ import annotations

from dataclasses import dataclass

from .compiled import wirefast
from .crc import icrc_bytes, vcrc_bytes
from .errors import ParseError, WireError
from .headers import (
    BTH, DETH, GRH, LNH_IBA_GLOBAL, LNH_IBA_LOCAL, LRH, OPCODE_UD_SEND_ONLY, OPCODE_UD_SEND_ONLY_IMM,
    GRH_NXTHDR_IBA, IPV6_VERSION,
)

ICRC_LEN, VCRC_LEN = 4, 2
MAX_PKTLEN_WORDS = (1 << 11) - 1
# Largest packet on the wire: LRH+GRH+BTH+DETH (68) + 4096 payload + ICRC + VCRC.
MAX_PACKET = 8 + 40 + 12 + 8 + 4096 + ICRC_LEN + VCRC_LEN

_build_c = wirefast.build_ud_packet_fast if wirefast is not None else None
_MAX_PAYLOAD_NO_GRH = MAX_PKTLEN_WORDS * 4 - 8 - 12 - 8 - ICRC_LEN  # what PktLen can carry without a GRH

UD_OPCODES = {OPCODE_UD_SEND_ONLY: "UD SEND only", OPCODE_UD_SEND_ONLY_IMM: "UD SEND only with immediate"}


@dataclass(frozen=True)
class UDPacket:
    """A received UD packet, split and validated."""

    lrh: LRH
    grh: GRH | None
    bth: BTH
    deth: DETH
    payload: bytes
    immediate: int | None = None

    @property
    def slid(self) -> int:
        return self.lrh.slid

    @property
    def dlid(self) -> int:
        return self.lrh.dlid


def build_ud_packet(*, slid: int, dlid: int, dest_qp: int, src_qp: int, qkey: int, payload: bytes,
                    pkey: int = 0xFFFF, sl: int = 0, vl: int = 0, psn: int = 0, se: int = 0,
                    grh: GRH | None = None, sgid: bytes | None = None, dgid: bytes | None = None,
                    hoplmt: int = 255, tclass: int = 0, flow_label: int = 0) -> bytes:
    """Build a complete UD SEND-only packet, CRCs included.

    A GRH is added when ``grh`` is given or when ``sgid``/``dgid`` are; its PayLen is filled in.
    Without one, the compiled builder makes the same octets (tests/test_wirefast.py compares them).
    """
    if _build_c is not None and grh is None and sgid is None and dgid is None \
            and not ((slid | dlid | pkey) >> 16 or (dest_qp | src_qp | psn) >> 24 or qkey >> 32 or (sl | vl) >> 4
                     or se >> 1) and len(payload) <= _MAX_PAYLOAD_NO_GRH:
        return _build_c(payload, slid, dlid, dest_qp, src_qp, qkey, pkey, sl, psn, vl, se)
    payload = bytes(payload)
    padcnt = (-len(payload)) % 4
    if grh is None and (sgid is not None or dgid is not None):
        grh = GRH(sgid=sgid or bytes(16), dgid=dgid or bytes(16), hoplmt=hoplmt, tclass=tclass,
                  flow_label=flow_label)
    body_len = 12 + 8 + len(payload) + padcnt  # BTH DETH payload pad
    if grh is not None:
        grh = grh.replace(paylen=body_len + ICRC_LEN)
    total = 8 + (40 if grh is not None else 0) + body_len + ICRC_LEN
    words = total // 4
    if words > MAX_PKTLEN_WORDS:
        raise WireError(f"packet of {total} octets exceeds the LRH PktLen range")
    lrh = LRH(vl=vl, sl=sl, lnh=LNH_IBA_GLOBAL if grh is not None else LNH_IBA_LOCAL,
              dlid=dlid, pktlen=words, slid=slid)
    bth = BTH(opcode=OPCODE_UD_SEND_ONLY, se=se, padcnt=padcnt, pkey=pkey, dest_qp=dest_qp, psn=psn)
    deth = DETH(qkey=qkey, src_qp=src_qp)
    parts = [lrh.pack()]
    if grh is not None:
        parts.append(grh.pack())
    parts += [bth.pack(), deth.pack(), payload, bytes(padcnt)]
    pkt = b"".join(parts)
    pkt += icrc_bytes(pkt)
    return pkt + vcrc_bytes(pkt)


def check_vcrc(data) -> bool:
    return len(data) >= VCRC_LEN and vcrc_bytes(data[:-VCRC_LEN]) == bytes(data[-VCRC_LEN:])


def split_ud_packet(data, *, verify_crc: bool = True) -> UDPacket:
    """Validate and split a received packet. Raises ParseError (with ``kind``) on anything wrong."""
    data = bytes(data)
    n = len(data)
    if n < 8 + 12 + 8 + ICRC_LEN + VCRC_LEN:
        raise ParseError(f"packet of {n} octets is shorter than LRH+BTH+DETH+CRCs", kind="truncated")
    lrh = LRH.unpack(data)
    if lrh.lver != 0:
        raise ParseError(f"LRH.LVer {lrh.lver} is not 0", kind="lver")
    if lrh.lnh not in (LNH_IBA_LOCAL, LNH_IBA_GLOBAL):
        raise ParseError(f"LRH.LNH {lrh.lnh} is not an IBA transport packet", kind="lnh")
    if lrh.pktlen * 4 + VCRC_LEN != n:
        raise ParseError(f"LRH.PktLen says {lrh.pktlen * 4 + VCRC_LEN} octets with VCRC, packet has {n}",
                         kind="pktlen")
    if lrh.lnh == LNH_IBA_GLOBAL and n < 8 + 40 + 12 + 8 + 6:
        raise ParseError("packet too short for GRH+BTH+DETH", kind="truncated")
    if verify_crc:
        if not check_vcrc(data):
            raise ParseError("VCRC mismatch", kind="vcrc")
        if icrc_bytes(data[:-6]) != data[-6:-2]:
            raise ParseError("ICRC mismatch", kind="icrc")
    off = 8
    grh = None
    if lrh.lnh == LNH_IBA_GLOBAL:
        grh = GRH.unpack(data, off)
        if grh.ipver != IPV6_VERSION or grh.nxthdr != GRH_NXTHDR_IBA:
            raise ParseError(f"GRH IPVer {grh.ipver} / NxtHdr 0x{grh.nxthdr:x} is not IBA", kind="grh")
        if grh.paylen != n - off - 40 - VCRC_LEN:
            raise ParseError(f"GRH.PayLen {grh.paylen} disagrees with packet length", kind="pktlen")
        off += 40
    bth = BTH.unpack(data, off)
    if bth.opcode not in UD_OPCODES:
        raise ParseError(f"BTH opcode 0x{bth.opcode:02x} is not a UD SEND", kind="opcode")
    if bth.tver != 0:
        raise ParseError(f"BTH.TVer {bth.tver} is not 0", kind="tver")
    off += 12
    deth = DETH.unpack(data, off)
    off += 8
    imm = None
    if bth.opcode == OPCODE_UD_SEND_ONLY_IMM:
        if n - off - 6 < 4:
            raise ParseError("immediate data missing", kind="truncated")
        imm = int.from_bytes(data[off:off + 4], "big")
        off += 4
    end = n - ICRC_LEN - VCRC_LEN - bth.padcnt
    if end < off:
        raise ParseError(f"PadCnt {bth.padcnt} exceeds the payload", kind="padcnt")
    return UDPacket(lrh, grh, bth, deth, data[off:end], imm)
