"""ICRC / VCRC against the definitions (IBA vol. 1 section 7.8), with an independent bit-by-bit
CRC implemented here (a shift register, no tables, no zlib)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.wire import build_ud_packet, icrc32, icrc_bytes, split_ud_packet, vcrc16, vcrc_bytes
from fabric.wire import crc as crc_mod
from fabric.wire.crc import icrc_masked


def _vcrc_implementations():
    """The public vcrc16 plus any alternative implementation the module carries (pure Python
    fallback, compiled extension), so that every one of them is checked against the definition."""
    impls = {"vcrc16": vcrc16}
    if hasattr(crc_mod, "vcrc16_py"):
        impls["vcrc16_py"] = crc_mod.vcrc16_py
    try:
        from fabric._wirefast import vcrc16 as fast  # type: ignore
    except ImportError:
        pass
    else:
        impls["_wirefast.vcrc16"] = lambda data: fast(bytes(data))
    return impls


VCRC_IMPLS = _vcrc_implementations()

SETTINGS = settings(max_examples=100, deadline=None)


def _reflect(value: int, width: int) -> int:
    out = 0
    for _ in range(width):
        out = (out << 1) | (value & 1)
        value >>= 1
    return out


def crc_msb_register(data: bytes, *, width: int, poly: int, init: int, xorout: int) -> int:
    """Reflected CRC computed with the textbook MSB-first shift register: each octet's bits are fed
    least significant first (reflected input), the final register is bit-reversed (reflected output)."""
    top = 1 << (width - 1)
    mask = (1 << width) - 1
    reg = init
    for byte in data:
        for i in range(8):
            bit = (byte >> i) & 1
            feedback = (1 if reg & top else 0) ^ bit
            reg = (reg << 1) & mask
            if feedback:
                reg ^= poly
    return _reflect(reg, width) ^ xorout


def crc_lsb_register(data: bytes, *, width: int, poly: int, init: int, xorout: int) -> int:
    """The same CRC with the right-shifting register and the bit-reversed polynomial."""
    rpoly = _reflect(poly, width)
    reg = _reflect(init, width)
    for byte in data:
        reg ^= byte
        for _ in range(8):
            reg = (reg >> 1) ^ rpoly if reg & 1 else reg >> 1
    return reg ^ xorout


def crc32_ref(data: bytes) -> int:
    return crc_msb_register(data, width=32, poly=0x04C11DB7, init=0xFFFFFFFF, xorout=0xFFFFFFFF)


def crc16_ref(data: bytes) -> int:
    return crc_msb_register(data, width=16, poly=0x100B, init=0xFFFF, xorout=0xFFFF)


def icrc_ref(pkt_without_crcs: bytes) -> int:
    """ICRC from the definition: ones in the variant fields, then CRC-32 over LRH..payload+pad.

    Local packet: LRH.VL and BTH.Resv8a are variant. Global packet (GRH present): the whole LRH is
    variant (a router rebuilds it), plus GRH.TClass, GRH.FlowLabel, GRH.HopLmt and BTH.Resv8a.
    """
    m = bytearray(pkt_without_crcs)
    m[0] |= 0xF0                          # LRH.VL (high nibble of byte 0)
    bth = 8
    if m[1] & 0x03 == 3:                  # LNH = IBA global: a GRH follows
        m[0:8] = b"\xff" * 8               # the entire LRH
        m[8] |= 0x0F                      # GRH.TClass high nibble (IPVer keeps its 4 bits)
        m[9:12] = b"\xff\xff\xff"         # TClass low nibble + FlowLabel (20 bits)
        m[15] = 0xFF                      # GRH.HopLmt (GRH byte 7)
        bth = 48
    m[bth + 4] = 0xFF                     # BTH.Resv8a
    return crc32_ref(bytes(m))


# -- the CRC engines ---------------------------------------------------------------------------


def test_crc32_standard_check_value():
    assert crc32_ref(b"123456789") == 0xCBF43926
    assert crc_lsb_register(b"123456789", width=32, poly=0x04C11DB7, init=0xFFFFFFFF,
                            xorout=0xFFFFFFFF) == 0xCBF43926


def test_crc16_0x100b_check_value():
    check = crc16_ref(b"123456789")
    # two different shift-register formulations agree with each other ...
    assert check == crc_lsb_register(b"123456789", width=16, poly=0x100B, init=0xFFFF, xorout=0xFFFF)
    # ... and with the module
    assert vcrc16(b"123456789") == check
    assert check == 0x0A3D, hex(check)  # the value the two register loops above produce
    assert vcrc_bytes(b"123456789") == check.to_bytes(2, "little")


def test_crc_of_empty_input():
    # with init all ones and xorout all ones, the CRC of nothing is 0
    assert crc32_ref(b"") == 0 and vcrc16(b"") == 0 and crc16_ref(b"") == 0


@pytest.mark.parametrize("name", sorted(VCRC_IMPLS))
def test_vcrc16_implementations_match_independent_crc(name):
    impl = VCRC_IMPLS[name]
    assert impl(b"123456789") == 0x0A3D
    assert impl(b"") == 0

    @SETTINGS
    @given(st.binary(max_size=600))
    def run(data):
        assert impl(data) == crc16_ref(data)
        assert impl(bytearray(data)) == impl(memoryview(data)) == impl(data)

    run()


@SETTINGS
@given(st.binary(min_size=28, max_size=600), st.booleans())
def test_icrc32_matches_independent_crc(data, grh):
    data = bytearray(data)
    # force the LNH so the masking covers a GRH (LNH=3) or not (LNH=2)
    if grh:
        data = data + bytes(max(0, 60 - len(data)))
    data[1] = (data[1] & ~0x03) | (3 if grh else 2)
    data = bytes(data)
    assert icrc32(data) == icrc_ref(data)
    assert icrc_bytes(data) == icrc_ref(data).to_bytes(4, "little")


# -- CRCs in built packets ------------------------------------------------------------------------

SGID = bytes.fromhex("fe800000000000000002c90300001235")
DGID = bytes.fromhex("fe800000000000000002c9030000aaaa")


def _pkt(grh: bool, payload: bytes = b"hello, fabric!", **kw):
    args = dict(slid=3, dlid=4, dest_qp=0x48, src_qp=0x49, qkey=0x0B1B, payload=payload, pkey=0xFFFF,
                sl=1, vl=2, psn=7)
    if grh:
        args.update(sgid=SGID, dgid=DGID, hoplmt=64, tclass=0x10, flow_label=0x12345)
    args.update(kw)
    return build_ud_packet(**args)


@pytest.mark.parametrize("grh", [False, True], ids=["lrh", "grh"])
def test_built_packet_carries_both_crcs_lsb_first(grh):
    pkt = _pkt(grh)
    body, icrc, vcrc = pkt[:-6], pkt[-6:-2], pkt[-2:]
    assert icrc == icrc_ref(body).to_bytes(4, "little")
    assert vcrc == crc16_ref(pkt[:-2]).to_bytes(2, "little")
    # the VCRC covers the ICRC too
    assert crc16_ref(body) != crc16_ref(pkt[:-2])


@SETTINGS
@given(payload=st.binary(max_size=1024), grh=st.booleans(), vl=st.integers(0, 15), sl=st.integers(0, 15),
       pkey=st.integers(0, 0xFFFF), psn=st.integers(0, 0xFFFFFF))
def test_random_packets_crcs_match_independent(payload, grh, vl, sl, pkey, psn):
    pkt = _pkt(grh, payload, vl=vl, sl=sl, pkey=pkey, psn=psn)
    assert pkt[-6:-2] == icrc_ref(pkt[:-6]).to_bytes(4, "little")
    assert pkt[-2:] == crc16_ref(pkt[:-2]).to_bytes(2, "little")
    split_ud_packet(pkt)  # and the parser accepts them


def test_max_size_packet_crcs():
    pkt = _pkt(True, bytes(range(256)) * 16)  # 4096-octet payload
    assert pkt[-6:-2] == icrc_ref(pkt[:-6]).to_bytes(4, "little")
    assert pkt[-2:] == crc16_ref(pkt[:-2]).to_bytes(2, "little")


# -- ICRC masking -----------------------------------------------------------------------------------


def _flip(pkt: bytes, index: int, bits: int) -> bytes:
    b = bytearray(pkt)
    b[index] ^= bits
    return bytes(b)


# (name, octet index relative to the packet start, bit mask to flip); GRH at 8..47, BTH at 48 with GRH
VARIANT_NO_GRH = [
    ("LRH.VL", 0, 0xF0),
    ("LRH.VL low bit", 0, 0x10),
    ("BTH.Resv8a", 8 + 4, 0xFF),
    ("BTH.Resv8a one bit", 8 + 4, 0x01),
]
VARIANT_GRH = [
    # with a GRH the whole LRH is variant: routers rebuild it
    ("LRH.VL", 0, 0xF0),
    ("LRH.SL", 1, 0x10),
    ("LRH.DLID", 3, 0x01),
    ("LRH.SLID", 6, 0x80),
    ("LRH.PktLen", 5, 0x04),
    ("GRH.TClass high nibble", 8, 0x0F),
    ("GRH.TClass low nibble", 9, 0xF0),
    ("GRH.FlowLabel top", 9, 0x0F),
    ("GRH.FlowLabel mid", 10, 0xFF),
    ("GRH.FlowLabel low", 11, 0x01),
    ("GRH.HopLmt", 15, 0xFF),
    ("BTH.Resv8a", 48 + 4, 0x80),
]
INVARIANT_NO_GRH = [
    ("LRH.LVer", 0, 0x01),
    ("LRH.SL", 1, 0x10),
    ("LRH reserved bits", 1, 0x0C),
    ("LRH.DLID", 3, 0x01),
    ("LRH.DLID high", 2, 0x80),
    ("LRH.PktLen", 5, 0x01),
    ("LRH.SLID", 7, 0x01),
    ("BTH.OpCode", 8, 0x01),
    ("BTH.SE/M/PadCnt/TVer", 9, 0x80),
    ("BTH.P_Key", 8 + 2, 0x01),
    ("BTH.P_Key low", 8 + 3, 0x01),
    ("BTH.DestQP", 8 + 7, 0x01),
    ("BTH.A", 8 + 8, 0x80),
    ("BTH.PSN", 8 + 11, 0x01),
    ("DETH.Q_Key", 20, 0x01),
    ("DETH reserved", 24, 0x01),
    ("DETH.SrcQP", 27, 0x01),
    ("payload first octet", 28, 0x01),
    ("payload last octet", 28 + 13, 0x80),
]
INVARIANT_GRH = [
    ("GRH.IPVer", 8, 0x10),
    ("GRH.PayLen", 13, 0x01),
    ("GRH.NxtHdr", 14, 0x01),
    ("GRH.SGID", 16, 0x01),
    ("GRH.DGID", 39, 0x80),
    ("BTH.P_Key", 48 + 2, 0x01),
    ("BTH.DestQP", 48 + 5, 0x01),
    ("payload", 68, 0x01),
]


def _cases(grh, table):
    return [pytest.param(grh, i, bits, id=f"{'grh' if grh else 'lrh'}-{name}") for name, i, bits in table]


@pytest.mark.parametrize("grh,index,bits", _cases(False, VARIANT_NO_GRH) + _cases(True, VARIANT_GRH))
def test_icrc_ignores_variant_fields(grh, index, bits):
    pkt = _pkt(grh)
    body = pkt[:-6]
    flipped = _flip(body, index, bits)
    assert flipped != body
    assert icrc_bytes(flipped) == icrc_bytes(body) == pkt[-6:-2]
    assert icrc_ref(flipped) == icrc_ref(body)
    # but the link-level VCRC sees every change
    assert vcrc_bytes(flipped + pkt[-6:-2]) != pkt[-2:]


@pytest.mark.parametrize("grh,index,bits", _cases(False, INVARIANT_NO_GRH) + _cases(True, INVARIANT_GRH))
def test_icrc_covers_invariant_fields(grh, index, bits):
    pkt = _pkt(grh)
    body = pkt[:-6]
    flipped = _flip(body, index, bits)
    assert icrc_bytes(flipped) != icrc_bytes(body)
    assert icrc_ref(flipped) == int.from_bytes(icrc_bytes(flipped), "little")
    assert vcrc_bytes(flipped + pkt[-6:-2]) != pkt[-2:]


def test_icrc_unchanged_when_a_switch_rewrites_vl_and_a_router_rewrites_grh():
    a = _pkt(True, vl=0, tclass=0x00, flow_label=0, hoplmt=255)
    b = _pkt(True, vl=7, tclass=0xA5, flow_label=0xFFFFF, hoplmt=1)
    assert a[:-6] != b[:-6]
    assert a[-6:-2] == b[-6:-2]  # same ICRC
    assert a[-2:] != b[-2:]      # different VCRC
    c = _pkt(False, vl=0)
    d = _pkt(False, vl=15)
    assert c[-6:-2] == d[-6:-2] and c[-2:] != d[-2:]


def test_icrc_masked_sets_exactly_the_variant_bits():
    for grh in (False, True):
        body = _pkt(grh, vl=0, **({"tclass": 0, "flow_label": 0, "hoplmt": 0} if grh else {}))[:-6]
        m = icrc_masked(body)
        diff = [(i, body[i] ^ m[i]) for i in range(len(body)) if body[i] != m[i]]
        if grh:
            # all of the LRH, then GRH TClass/FlowLabel (IPVer kept), HopLmt, and BTH.Resv8a
            expected = [(i, body[i] ^ 0xFF) for i in range(8) if body[i] != 0xFF]
            expected += [(8, 0x0F), (9, 0xFF), (10, 0xFF), (11, 0xFF), (15, 0xFF), (52, 0xFF)]
            assert diff == expected
        else:
            assert diff == [(0, 0xF0), (12, 0xFF)]


@pytest.mark.parametrize("grh", [False, True], ids=["lrh", "grh"])
def test_vcrc_changes_on_any_single_bit_flip(grh):
    pkt = _pkt(grh)
    covered = pkt[:-2]
    vcrc = pkt[-2:]
    for i in range(len(covered)):
        for bit in (0x01, 0x80):
            assert vcrc_bytes(_flip(covered, i, bit)) != vcrc, (i, bit)
