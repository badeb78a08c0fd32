"""Malformed input: split_ud_packet and parse_mad raise ParseError with the right ``kind`` for every
class of defect, and nothing but ParseError for arbitrary octets. Plus build -> split round trips."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.wire import (
    BTH, GRH, LRH, MAD_SIZE, ParseError, SAMad, SMPDirected, SMPLid, PMAMad, UDPacket, WireError,
    build_ud_packet, new_mad, parse_mad, split_ud_packet, vcrc_bytes,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SGID = bytes.fromhex("fe800000000000000002c90300001235")
DGID = bytes.fromhex("fe800000000000000002c9030000aaaa")
MIN_LOCAL = 8 + 12 + 8 + 4 + 2    # LRH BTH DETH ICRC VCRC, empty payload
MIN_GLOBAL = MIN_LOCAL + 40


def _pkt(grh: bool, payload: bytes = b"0123456789abc", **kw) -> bytes:
    args = dict(slid=3, dlid=4, dest_qp=0x48, src_qp=0x49, qkey=0x0B1B, payload=payload)
    if grh:
        args.update(sgid=SGID, dgid=DGID)
    args.update(kw)
    return build_ud_packet(**args)


def _icrc_independent(body: bytes) -> bytes:
    """ICRC computed here (mask by hand, zlib CRC-32), so sealing a short packet cannot crash."""
    m = bytearray(body)
    if len(m) > 0:
        m[0] |= 0xF0
    bth = 8
    if len(m) > 1 and m[1] & 3 == 3:
        m[0:8] = b"\xff" * min(8, len(m))
        if len(m) > 11:
            m[8] |= 0x0F
            m[9:12] = b"\xff\xff\xff"
        if len(m) > 15:
            m[15] = 0xFF
        bth = 48
    if len(m) > bth + 4:
        m[bth + 4] = 0xFF
    return (zlib.crc32(bytes(m)) & 0xFFFFFFFF).to_bytes(4, "little")


def seal(body: bytes) -> bytes:
    """Append a correct ICRC and VCRC to LRH..pad."""
    body = bytes(body) + _icrc_independent(body)
    return body + vcrc_bytes(body)


def edit(pkt: bytes, index: int, value: int) -> bytes:
    """Set one octet of LRH..pad and recompute both CRCs."""
    body = bytearray(pkt[:-6])
    body[index] = value
    return seal(bytes(body))


def kind_of(data, **kw) -> str:
    with pytest.raises(ParseError) as ei:
        split_ud_packet(data, **kw)
    return ei.value.kind


# -- the valid baseline -------------------------------------------------------------------------------


@pytest.mark.parametrize("grh", [False, True], ids=["lrh", "grh"])
def test_baseline_is_valid_and_seal_matches_builder(grh):
    pkt = _pkt(grh)
    assert seal(pkt[:-6]) == pkt
    p = split_ud_packet(pkt)
    assert isinstance(p, UDPacket) and p.payload == b"0123456789abc"
    assert (p.grh is not None) == grh


# -- truncation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("verify", [True, False], ids=["crc", "nocrc"])
@pytest.mark.parametrize("grh", [False, True], ids=["lrh", "grh"])
def test_every_prefix_is_rejected(grh, verify):
    pkt = _pkt(grh)
    for n in range(len(pkt)):
        kind = kind_of(pkt[:n], verify_crc=verify)
        # Below the smallest possible UD packet the parser says "truncated"; above it, the intact LRH
        # announces more octets than arrived, which the parser reports as a PktLen mismatch.
        assert kind == ("truncated" if n < MIN_LOCAL else "pktlen"), (n, kind)


def test_empty_and_tiny_inputs():
    for data in (b"", b"\x00", bytes(7), bytes(8), bytes(MIN_LOCAL - 1), bytearray(3), memoryview(bytes(5))):
        assert kind_of(data) == "truncated"


@pytest.mark.parametrize("cut", [4, 8, 12])
def test_global_packet_truncated_with_consistent_pktlen(cut):
    # LRH says LNH=3 and PktLen matches, CRCs are right, but there is no room for GRH+BTH+DETH.
    full = _pkt(True, b"")[:-6]           # 68 octets: LRH GRH BTH DETH
    body = bytearray(full[:-cut])
    words = (len(body) + 4) // 4
    body[4:6] = words.to_bytes(2, "big")
    assert kind_of(seal(bytes(body))) == "truncated"


# Regression: the ICRC masking used to index BTH.Resv8a of a short LNH=3 packet before the GRH
# length check, so it escaped as IndexError.
@pytest.mark.parametrize("n", [34, 38, 46, 58])
def test_short_global_packet_with_valid_vcrc_is_a_parse_error(n):
    body = bytearray(n - 6)
    body[0:8] = LRH(lnh=3, pktlen=(n - 2) // 4, dlid=1, slid=2).pack()
    pkt = seal(bytes(body))
    assert len(pkt) == n
    assert kind_of(pkt) == "truncated"


@pytest.mark.parametrize("n", [34, 38, 46, 58])
def test_short_global_packet_without_crc_check_is_truncated(n):
    body = bytearray(n - 6)
    body[0:8] = LRH(lnh=3, pktlen=(n - 2) // 4).pack()
    assert kind_of(seal(bytes(body)), verify_crc=False) == "truncated"


# -- LRH defects ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("grh", [False, True], ids=["lrh", "grh"])
@pytest.mark.parametrize("delta", [-1, 1, 0x100, -0x10])
def test_wrong_pktlen(grh, delta):
    pkt = _pkt(grh)
    lrh = LRH.unpack(pkt)
    bad = lrh.replace(pktlen=(lrh.pktlen + delta) % 0x800)
    body = bad.pack() + pkt[8:-6]
    assert kind_of(seal(body)) == "pktlen"
    assert kind_of(seal(body), verify_crc=False) == "pktlen"


@pytest.mark.parametrize("lnh", [0, 1])
@pytest.mark.parametrize("grh", [False, True], ids=["lrh", "grh"])
def test_wrong_lnh(grh, lnh):
    pkt = _pkt(grh)
    bad = edit(pkt, 1, (pkt[1] & ~0x03) | lnh)
    assert kind_of(bad) == "lnh"
    assert kind_of(bad, verify_crc=False) == "lnh"


def test_lnh_local_on_a_packet_with_grh_misparses_the_grh_as_bth():
    # LNH=2 on a packet that carries a GRH: the GRH's first octet (0x60) is read as a BTH opcode
    pkt = _pkt(True)
    assert kind_of(edit(pkt, 1, (pkt[1] & ~0x03) | 2)) == "opcode"


@pytest.mark.parametrize("lver", [1, 0xF])
def test_wrong_lver(lver):
    pkt = _pkt(False)
    assert kind_of(edit(pkt, 0, (pkt[0] & 0xF0) | lver)) == "lver"


# -- CRC defects ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("grh", [False, True], ids=["lrh", "grh"])
@pytest.mark.parametrize("octet", [0, 1, 2, 3])
def test_bad_icrc_with_good_vcrc(grh, octet):
    pkt = _pkt(grh)
    body, icrc = pkt[:-6], bytearray(pkt[-6:-2])
    icrc[octet] ^= 0x01
    bad = body + bytes(icrc)
    bad += vcrc_bytes(bad)
    assert kind_of(bad) == "icrc"
    # without CRC checking the packet is accepted as is
    assert split_ud_packet(bad, verify_crc=False).payload == b"0123456789abc"


@pytest.mark.parametrize("grh", [False, True], ids=["lrh", "grh"])
def test_invariant_field_changed_in_flight_is_an_icrc_error(grh):
    # a hop changed the P_Key and recomputed only the VCRC (as a link would)
    pkt = _pkt(grh)
    off = 48 if grh else 8
    body = bytearray(pkt[:-2])
    body[off + 3] ^= 0x01
    bad = bytes(body) + vcrc_bytes(bytes(body))
    assert kind_of(bad) == "icrc"


@pytest.mark.parametrize("grh", [False, True], ids=["lrh", "grh"])
def test_variant_field_changed_in_flight_is_accepted(grh):
    # a switch moved the packet to another VL and recomputed the VCRC: still valid end to end
    pkt = _pkt(grh)
    body = bytearray(pkt[:-2])
    body[0] = (body[0] & 0x0F) | 0x70
    ok = bytes(body) + vcrc_bytes(bytes(body))
    assert split_ud_packet(ok).lrh.vl == 7


@pytest.mark.parametrize("grh", [False, True], ids=["lrh", "grh"])
@pytest.mark.parametrize("where", ["vcrc0", "vcrc1", "icrc", "payload", "lrh"])
def test_bad_vcrc(grh, where):
    pkt = bytearray(_pkt(grh))
    index = {"vcrc0": -2, "vcrc1": -1, "icrc": -4, "payload": -8, "lrh": 3}[where]
    pkt[index] ^= 0x20
    assert kind_of(bytes(pkt)) == "vcrc"


# -- transport defects -------------------------------------------------------------------------------


@pytest.mark.parametrize("grh", [False, True], ids=["lrh", "grh"])
@pytest.mark.parametrize("opcode", [0x04, 0x00, 0x0A, 0x24, 0x63, 0x66, 0x81, 0xFF])
def test_unknown_opcode(grh, opcode):
    pkt = _pkt(grh)
    assert kind_of(edit(pkt, 48 if grh else 8, opcode)) == "opcode"


def test_wrong_tver():
    pkt = _pkt(False)
    assert kind_of(edit(pkt, 9, pkt[9] | 0x01)) == "tver"


@pytest.mark.parametrize("index,value", [(8, 0x40), (8, 0x7F), (14, 0x11), (14, 0x3A)],
                         ids=["ipver4", "ipver7", "nxthdr-udp", "nxthdr-ipv6-nonext"])
def test_grh_not_iba(index, value):
    pkt = _pkt(True)
    assert kind_of(edit(pkt, index, value)) == "grh"


@pytest.mark.parametrize("delta", [-1, 1, 4])
def test_grh_paylen_mismatch(delta):
    pkt = _pkt(True)
    paylen = int.from_bytes(pkt[12:14], "big") + delta
    body = bytearray(pkt[:-6])
    body[12:14] = paylen.to_bytes(2, "big")
    assert kind_of(seal(bytes(body))) == "pktlen"


def test_padcnt_larger_than_payload():
    pkt = _pkt(False, b"")                        # empty payload, PadCnt 0
    assert kind_of(edit(pkt, 9, pkt[9] | 0x30)) == "padcnt"   # PadCnt = 3 with nothing to strip
    pkt = _pkt(True, b"")
    assert kind_of(edit(pkt, 49, pkt[49] | 0x10)) == "padcnt"


def test_padcnt_strips_exactly_the_pad():
    pkt = _pkt(False, b"abcd")                    # 4 octets, PadCnt 0
    p = split_ud_packet(edit(pkt, 9, pkt[9] | 0x30))  # claim 3 octets of pad
    assert p.payload == b"a" and p.bth.padcnt == 3


def test_immediate_opcode():
    pkt = _pkt(False, b"\x01\x02\x03\x04payload!")
    p = split_ud_packet(edit(pkt, 8, 0x65))
    assert p.immediate == 0x01020304 and p.payload == b"payload!"
    # SEND-only-with-immediate whose packet has no room for the immediate data
    assert kind_of(edit(_pkt(False, b""), 8, 0x65)) == "truncated"


# -- MADs -----------------------------------------------------------------------------------------------


def _mad(cls=SMPLid, **kw) -> bytes:
    return new_mad(cls, method=1, tid=1, attr_id=0x11, **kw).pack()


@pytest.mark.parametrize("cls", [SMPLid, SMPDirected, SAMad, PMAMad])
def test_valid_mads_parse_to_their_class(cls):
    raw = _mad(cls)
    m = parse_mad(raw)
    assert type(m) is cls and m.pack() == raw
    # octets beyond 256 are ignored
    assert parse_mad(raw + b"\xff" * 8) == m
    assert parse_mad(bytearray(raw)) == m


@pytest.mark.parametrize("base", [0, 2, 0x81, 0xFF])
def test_wrong_base_version(base):
    raw = bytearray(_mad())
    raw[0] = base
    with pytest.raises(ParseError) as ei:
        parse_mad(bytes(raw))
    assert ei.value.kind == "mad_version"


@pytest.mark.parametrize("cls,version", [(SAMad, 3), (SAMad, 1), (SMPLid, 2), (SMPDirected, 0), (PMAMad, 2)])
def test_wrong_class_version(cls, version):
    raw = bytearray(_mad(cls))
    raw[2] = version
    with pytest.raises(ParseError) as ei:
        parse_mad(bytes(raw))
    assert ei.value.kind == "mad_version"


@pytest.mark.parametrize("mgmt_class", [0x00, 0x02, 0x05, 0x06, 0x07, 0x09, 0x0A, 0x21, 0x30, 0x80, 0x83, 0xFF])
def test_unknown_management_class(mgmt_class):
    raw = bytearray(_mad())
    raw[1] = mgmt_class
    with pytest.raises(ParseError) as ei:
        parse_mad(bytes(raw))
    assert ei.value.kind == "mad_class"


@pytest.mark.parametrize("n", [0, 1, 24, 64, MAD_SIZE - 1])
def test_short_mad(n):
    with pytest.raises(ParseError) as ei:
        parse_mad(_mad()[:n])
    assert ei.value.kind == "truncated"


# -- fuzz: only ParseError ----------------------------------------------------------------------------------


def _only_parse_error(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except ParseError:
        pass


@SETTINGS
@given(st.binary(max_size=200), st.booleans())
def test_split_arbitrary_bytes_raises_only_parse_error(data, verify):
    _only_parse_error(split_ud_packet, data, verify_crc=verify)


@st.composite
def sealed_packets(draw):
    """Arbitrary octets with a plausible LRH (LVer 0, LNH 2/3, matching PktLen) and correct CRCs, so
    that the parser gets past the link checks and into the GRH/BTH/DETH/PadCnt logic."""
    words = draw(st.integers(MIN_LOCAL // 4, 40))
    n = words * 4 + 2
    body = bytearray(draw(st.binary(min_size=n - 6, max_size=n - 6)))
    lnh = draw(st.sampled_from([2, 3]))
    body[0] &= 0xF0                                  # LVer 0
    body[1] = (body[1] & 0xFC) | lnh
    body[4:6] = (((body[4] & 0xF8) << 8) | words).to_bytes(2, "big")
    if draw(st.booleans()):                          # often make the transport headers plausible too
        bth = 48 if lnh == 3 else 8
        if lnh == 3 and len(body) >= 48:
            body[8] = 0x60 | (body[8] & 0x0F)
            body[14] = 0x1B
        if len(body) > bth + 1:
            body[bth] = draw(st.sampled_from([0x64, 0x65]))
            body[bth + 1] &= 0xF0
    return seal(bytes(body))


@SETTINGS
@given(sealed_packets())
def test_split_sealed_arbitrary_packets_raises_only_parse_error(pkt):
    try:
        p = split_ud_packet(pkt)
    except ParseError:
        return
    assert isinstance(p, UDPacket)
    assert len(p.payload) <= len(pkt) - MIN_LOCAL


@SETTINGS
@given(st.binary(max_size=300))
def test_parse_mad_arbitrary_bytes_raises_only_parse_error(data):
    _only_parse_error(parse_mad, data)


@SETTINGS
@given(st.sampled_from([(0x01, 1), (0x81, 1), (0x03, 2), (0x04, 1)]), st.binary(min_size=253, max_size=260))
def test_parse_mad_valid_header_arbitrary_body(cls_ver, rest):
    m = parse_mad(bytes([1, cls_ver[0], cls_ver[1]]) + rest)
    assert m.mgmt_class == cls_ver[0] and m.class_version == cls_ver[1]


# -- build -> split round trip ---------------------------------------------------------------------------


@SETTINGS
@given(slid=st.integers(0, 0xFFFF), dlid=st.integers(0, 0xFFFF), dest_qp=st.integers(0, 0xFFFFFF),
       src_qp=st.integers(0, 0xFFFFFF), qkey=st.integers(0, 0xFFFFFFFF), pkey=st.integers(0, 0xFFFF),
       sl=st.integers(0, 15), vl=st.integers(0, 15), psn=st.integers(0, 0xFFFFFF), se=st.integers(0, 1),
       payload=st.one_of(st.binary(max_size=64), st.binary(max_size=4096)),
       grh=st.one_of(st.none(), st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
                                          st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFFF))))
def test_build_split_roundtrip(slid, dlid, dest_qp, src_qp, qkey, pkey, sl, vl, psn, se, payload, grh):
    kw = {}
    if grh is not None:
        kw = dict(sgid=grh[0], dgid=grh[1], hoplmt=grh[2], tclass=grh[3], flow_label=grh[4])
    pkt = build_ud_packet(slid=slid, dlid=dlid, dest_qp=dest_qp, src_qp=src_qp, qkey=qkey, payload=payload,
                          pkey=pkey, sl=sl, vl=vl, psn=psn, se=se, **kw)
    pad = (4 - len(payload) % 4) % 4
    hdr = 8 + (40 if grh else 0) + 12 + 8
    assert len(pkt) == hdr + len(payload) + pad + 6
    assert (len(pkt) - 2) % 4 == 0
    # pad octets are zero and sit right before the ICRC
    assert pkt[hdr + len(payload):len(pkt) - 6] == bytes(pad)

    p = split_ud_packet(pkt)
    assert p.payload == payload
    assert p.slid == slid and p.dlid == dlid
    assert p.lrh.sl == sl and p.lrh.vl == vl and p.lrh.lver == 0
    assert p.lrh.lnh == (3 if grh else 2)
    assert p.lrh.pktlen * 4 == len(pkt) - 2
    assert p.bth.opcode == 0x64 and p.bth.padcnt == pad and p.bth.tver == 0
    assert p.bth.pkey == pkey and p.bth.dest_qp == dest_qp and p.bth.psn == psn and p.bth.se == se
    assert p.deth.qkey == qkey and p.deth.src_qp == src_qp
    assert p.immediate is None
    if grh is None:
        assert p.grh is None
    else:
        assert p.grh.sgid == grh[0] and p.grh.dgid == grh[1]
        assert p.grh.hoplmt == grh[2] and p.grh.tclass == grh[3] and p.grh.flow_label == grh[4]
        assert p.grh.ipver == 6 and p.grh.nxthdr == 0x1B
        # PayLen: octets after the GRH through the ICRC, i.e. everything but LRH, GRH and VCRC
        assert p.grh.paylen == len(pkt) - 8 - 40 - 2 == 12 + 8 + len(payload) + pad + 4


@pytest.mark.parametrize("n", range(0, 9))
def test_padcnt_for_each_residue(n):
    pkt = _pkt(False, bytes(range(1, n + 1)))
    assert BTH.unpack(pkt, 8).padcnt == (-n) % 4
    assert split_ud_packet(pkt).payload == bytes(range(1, n + 1))


def test_explicit_grh_object_gets_its_paylen_filled_in():
    g = GRH(sgid=SGID, dgid=DGID, paylen=0xFFFF, tclass=3)
    pkt = build_ud_packet(slid=1, dlid=2, dest_qp=3, src_qp=4, qkey=5, payload=b"xyz", grh=g)
    p = split_ud_packet(pkt)
    assert p.grh.paylen == 12 + 8 + 3 + 1 + 4 and p.grh.tclass == 3


def test_build_rejects_what_cannot_be_encoded():
    with pytest.raises(WireError):
        build_ud_packet(slid=0x10000, dlid=1, dest_qp=1, src_qp=1, qkey=1, payload=b"")
    with pytest.raises(WireError):
        build_ud_packet(slid=1, dlid=1, dest_qp=1 << 24, src_qp=1, qkey=1, payload=b"")
    with pytest.raises(WireError):  # PktLen is 11 bits: at most 2047 words
        build_ud_packet(slid=1, dlid=1, dest_qp=1, src_qp=1, qkey=1, payload=bytes(8200))


@pytest.mark.parametrize("grh", [False, True], ids=["lrh", "grh"])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 255, 256, 2048, 4093, 4094, 4095, 4096])
def test_build_split_boundary_payload_sizes(grh, size):
    payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
    pkt = _pkt(grh, payload)
    p = split_ud_packet(pkt)
    assert p.payload == payload
    assert p.bth.padcnt == (-size) % 4
    assert p.lrh.pktlen * 4 + 2 == len(pkt)
    if grh:
        assert p.grh.paylen == 12 + 8 + size + (-size) % 4 + 4
