"""Round-trip properties of every field-table Struct exported by :mod:`fabric.wire` and by IPoIB's
:mod:`ipoib.encap`.

The hypothesis strategies are derived generically from each class's ``FIELDS`` table, and the
reserved-bit mask used by the octet-level property is recomputed here from the table (walking the
fields most significant bit first), independently of the ``_layout`` the module derives.
"""

from __future__ import annotations

import inspect

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fabric.wire as wire
import ipoib.encap as encap
from fabric.wire import ParseError, Struct, WireError

EXPECTED_STRUCTS = {
    # headers
    "LRH", "GRH", "BTH", "DETH", "IPoIBHeader", "IPoIBLinkAddr", "IPoIBArp",
    # MAD layouts
    "MADHeader", "MAD", "SMPLid", "SMPDirected", "SAMad", "PMAMad",
    # attributes
    "NodeInfo", "NodeDescription", "PortInfo", "SwitchInfo", "LinearForwardingTable",
    "MulticastForwardingTable", "PKeyTable", "GUIDInfo", "SMInfo", "Notice", "PortCounters",
    "PortCountersExtended", "ClassPortInfo", "PathRecord", "MCMemberRecord", "NodeRecord",
    "PortInfoRecord", "InformInfo",
}

# Sizes in octets as given by the IBA (vol. 1 ch. 5, 9, 13-16) and RFC 4391.
SPEC_SIZES = {
    "LRH": 8, "GRH": 40, "BTH": 12, "DETH": 8, "IPoIBHeader": 4, "IPoIBLinkAddr": 20, "IPoIBArp": 56,
    "MADHeader": 24, "MAD": 256, "SMPLid": 256, "SMPDirected": 256, "SAMad": 256, "PMAMad": 256,
    "NodeInfo": 40, "NodeDescription": 64, "PortInfo": 64, "SwitchInfo": 20,
    "LinearForwardingTable": 64, "MulticastForwardingTable": 64, "PKeyTable": 64, "GUIDInfo": 64,
    "SMInfo": 21, "Notice": 80, "PortCounters": 44, "PortCountersExtended": 72,
    "ClassPortInfo": 72, "PathRecord": 64, "MCMemberRecord": 52, "NodeRecord": 108,
    "PortInfoRecord": 68, "InformInfo": 36,
}


def _exported_structs():
    out = {}
    for mod in (wire, encap):
        for name in dir(mod):
            obj = getattr(mod, name)
            if inspect.isclass(obj) and issubclass(obj, Struct) and obj is not Struct:
                out[name] = obj
    return out


STRUCTS = _exported_structs()
ALL = sorted(STRUCTS.items())
IDS = [n for n, _ in ALL]
CLASSES = [c for _, c in ALL]

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_expected_struct_is_exported():
    # every property below runs over *all* exported Struct subclasses (STRUCTS), so a new one is
    # covered automatically; this only guards against one disappearing
    assert EXPECTED_STRUCTS <= set(STRUCTS)


@pytest.mark.parametrize("name", sorted(SPEC_SIZES))
def test_size_matches_spec(name):
    assert STRUCTS[name].SIZE == SPEC_SIZES[name]


# -- strategies built from FIELDS ----------------------------------------------------------------

_TEXT_CHARS = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))


def text_fitting(nbytes: int):
    """Text without NUL whose UTF-8 encoding fits in ``nbytes`` (cut at a character boundary)."""
    return st.text(_TEXT_CHARS, max_size=nbytes).map(
        lambda s: s.encode("utf-8")[:nbytes].decode("utf-8", "ignore"))


def field_strategy(f):
    if f.kind == "uint":
        return st.integers(0, (1 << f.bits) - 1)
    if f.kind == "bytes":
        return st.binary(min_size=f.bits // 8, max_size=f.bits // 8)
    if f.kind == "text":
        return text_fitting(f.bits // 8)
    if f.kind == "array":
        return st.lists(st.integers(0, (1 << f.bits) - 1), min_size=f.count, max_size=f.count).map(tuple)
    if f.kind == "struct":
        return struct_strategy(f.sub)
    raise AssertionError(f.kind)


_STRATEGY_CACHE: dict = {}


def struct_strategy(cls):
    if cls not in _STRATEGY_CACHE:
        fields = {f.name: field_strategy(f) for f in cls.FIELDS if f.kind != "rsvd"}
        _STRATEGY_CACHE[cls] = st.fixed_dictionaries(fields).map(lambda d: cls(**d))
    return _STRATEGY_CACHE[cls]


def total_bits(cls) -> int:
    return sum(f.bits * f.count for f in cls.FIELDS)


def reserved_mask(cls) -> int:
    """Mask (as an int of SIZE*8 bits, MSB = first wire bit) of every reserved bit, nested included."""
    width = total_bits(cls)
    mask = 0
    pos = 0  # bit offset from the start of the struct, MSB first
    for f in cls.FIELDS:
        w = f.bits * f.count
        lsb_shift = width - pos - w
        if f.kind == "rsvd":
            mask |= ((1 << w) - 1) << lsb_shift
        elif f.kind == "struct":
            mask |= reserved_mask(f.sub) << lsb_shift
        pos += w
    assert pos == width
    return mask


def has_text(cls) -> bool:
    return any(f.kind == "text" or (f.kind == "struct" and has_text(f.sub)) for f in cls.FIELDS)


def canonical_wire_int(cls):
    """Random wire images whose text areas are canonical (valid UTF-8 without NUL, NUL padded);
    every other bit, reserved ones included, is random."""
    parts = []
    for f in cls.FIELDS:
        w = f.bits * f.count
        if f.kind == "text":
            n = f.bits // 8
            parts.append(text_fitting(n).map(lambda s, n=n: int.from_bytes(s.encode().ljust(n, b"\0"), "big")))
        elif f.kind == "struct":
            parts.append(canonical_wire_int(f.sub))
        else:
            parts.append(st.integers(0, (1 << w) - 1))
    widths = [f.bits * f.count for f in cls.FIELDS]

    def combine(values):
        acc = 0
        for v, w in zip(values, widths):
            acc = (acc << w) | v
        return acc

    return st.tuples(*parts).map(combine)


def wire_images(cls):
    if has_text(cls):
        return canonical_wire_int(cls).map(lambda v: v.to_bytes(cls.SIZE, "big"))
    return st.binary(min_size=cls.SIZE, max_size=cls.SIZE)


def test_text_structs_are_the_expected_ones():
    assert {c.__name__ for c in CLASSES if has_text(c)} == {"NodeDescription", "NodeRecord"}


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_field_table_is_whole_octets(cls):
    assert total_bits(cls) == cls.SIZE * 8


def test_reserved_masks_of_headers_match_the_spec():
    # LRH: byte 1 bits 3..2 (Rsv2) and the top 5 bits of byte 4 (Rsv5)
    assert reserved_mask(wire.LRH).to_bytes(8, "big") == bytes.fromhex("000c0000f8000000")
    # BTH: byte 4 (Resv8a) and the low 7 bits of byte 8 (Resv7)
    assert reserved_mask(wire.BTH).to_bytes(12, "big") == bytes.fromhex("00000000ff0000007f000000")
    # DETH: byte 4
    assert reserved_mask(wire.DETH).to_bytes(8, "big") == bytes.fromhex("00000000ff000000")
    # GRH has no reserved bits; NodeRecord's are octets 2..3 only (nested NodeInfo/NodeDescription have none)
    assert reserved_mask(wire.GRH) == 0
    assert reserved_mask(wire.NodeRecord).to_bytes(108, "big") == bytes.fromhex("0000ffff") + bytes(104)
    # PortInfoRecord: the nested PortInfo's reserved bits, shifted by 4 octets
    assert reserved_mask(wire.PortInfoRecord) == reserved_mask(wire.PortInfo)


# -- properties ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_pack_unpack_roundtrip(cls):
    @FAST
    @given(struct_strategy(cls))
    def run(x):
        raw = x.pack()
        assert isinstance(raw, bytes)
        assert len(raw) == cls.SIZE
        assert bytes(x) == raw
        y = cls.unpack(raw)
        assert y == x
        assert hash(y) == hash(x)
        assert y.pack() == raw
        # from_int is the integer face of unpack
        assert cls.from_int(int.from_bytes(raw, "big")) == x
        # unpack at an offset inside a larger buffer leaves the surrounding octets alone
        assert cls.unpack(b"\xa5" * 3 + raw + b"\x5a" * 2, 3) == x
        assert cls.unpack(bytearray(raw)) == x
        assert cls.unpack(memoryview(raw)) == x

    run()


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_bytes_roundtrip_zeroes_reserved_bits(cls):
    mask = reserved_mask(cls)
    keep = ((1 << (cls.SIZE * 8)) - 1) & ~mask

    @FAST
    @given(wire_images(cls))
    def run(b):
        obj = cls.unpack(b)
        expected = (int.from_bytes(b, "big") & keep).to_bytes(cls.SIZE, "big")
        assert obj.pack() == expected
        # parsing ignores the reserved bits entirely
        assert cls.unpack(expected) == obj

    run()


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_as_dict_and_replace(cls):
    names = [f.name for f in cls.FIELDS if f.kind != "rsvd"]
    fields = {f.name: f for f in cls.FIELDS}

    @FAST
    @given(struct_strategy(cls), st.data())
    def run(x, data):
        flat = x.as_dict(nested=False)
        assert list(flat) == names
        assert cls(**flat) == x
        nested = x.as_dict()
        for n in names:
            if fields[n].kind == "struct":
                assert nested[n] == getattr(x, n).as_dict()
            else:
                assert nested[n] == getattr(x, n)
        # replace one field: only that field changes, the original is untouched
        name = data.draw(st.sampled_from(names))
        value = data.draw(field_strategy(fields[name]))
        before = x.pack()
        y = x.replace(**{name: value})
        assert getattr(y, name) == value
        for other in names:
            if other != name:
                assert getattr(y, other) == getattr(x, other)
        assert x.pack() == before
        assert cls.unpack(y.pack()) == y

    run()


def test_invalid_utf8_text_is_replaced_not_raised():
    raw = b"node\xff\xfe" + bytes(58)
    nd = wire.NodeDescription.unpack(raw)
    assert nd.description == "node\ufffd\ufffd"
    # text stops at the first NUL
    nd = wire.NodeDescription.unpack(b"ab\0cd" + bytes(59))
    assert nd.description == "ab"
    # a description that fills all 64 octets has no terminator
    full = ("x" * 64).encode()
    assert wire.NodeDescription.unpack(full).description == "x" * 64
    assert wire.NodeDescription(description="x" * 64).pack() == full


def test_unknown_constructor_field_is_a_type_error():
    with pytest.raises(TypeError):
        wire.LRH(no_such_field=1)


def test_defaults():
    # Defaults the spec calls for: IPv6 version / IBA next header / hop limit, BTH UD SEND, full P_Key.
    assert wire.GRH().ipver == 6 and wire.GRH().nxthdr == 0x1B and wire.GRH().hoplmt == 255
    assert wire.BTH().opcode == 0x64 and wire.BTH().pkey == 0xFFFF
    assert wire.NodeInfo().base_version == 1 and wire.NodeInfo().class_version == 1
    assert wire.MADHeader().base_version == 1
    assert wire.NodeRecord().node_info == wire.NodeInfo()
    assert wire.PortInfoRecord().port_info == wire.PortInfo()


# -- out-of-range values raise WireError ---------------------------------------------------------

FIELD_CASES = [(cls, f) for cls in CLASSES for f in cls.FIELDS if f.kind != "rsvd"]
FIELD_IDS = [f"{cls.__name__}.{f.name}" for cls, f in FIELD_CASES]


def _bad_values(f):
    if f.kind == "uint":
        return [1 << f.bits, -1, (1 << f.bits) + 12345, 1.0, "1", None]
    if f.kind == "bytes":
        n = f.bits // 8
        return [bytes(n - 1), bytes(n + 1), b"", "x" * n, None]
    if f.kind == "text":
        n = f.bits // 8
        return ["x" * (n + 1), "\u00e9" * (n // 2 + 1), "\U0001f600" * (n // 4 + 1), b"abc", None]
    if f.kind == "array":
        top = (1 << f.bits) - 1
        return [(0,) * (f.count - 1), (0,) * (f.count + 1), (top + 1,) + (0,) * (f.count - 1),
                (0,) * (f.count - 1) + (-1,), ("1",) + (0,) * (f.count - 1), ()]
    if f.kind == "struct":
        others = [c for c in CLASSES if c is not f.sub]
        return [others[0](), 0, b"\0" * f.sub.SIZE]
    raise AssertionError(f.kind)


def _good_max(f):
    if f.kind == "uint":
        return (1 << f.bits) - 1
    if f.kind == "bytes":
        return b"\xff" * (f.bits // 8)
    if f.kind == "text":
        return "\u00e9" * (f.bits // 16)
    if f.kind == "array":
        return ((1 << f.bits) - 1,) * f.count
    if f.kind == "struct":
        return f.sub()
    raise AssertionError(f.kind)


@pytest.mark.parametrize("cls,f", FIELD_CASES, ids=FIELD_IDS)
def test_out_of_range_raises_wire_error(cls, f):
    # the largest legal value packs
    cls(**{f.name: _good_max(f)}).pack()
    for bad in _bad_values(f):
        obj = cls()
        object.__setattr__(obj, f.name, bad)  # also covers values set after construction
        with pytest.raises(WireError):
            obj.pack()
        with pytest.raises(WireError):
            cls(**{f.name: bad}).pack()


def test_bool_is_accepted_as_a_one_bit_uint():
    assert wire.BTH(se=True).pack() == wire.BTH(se=1).pack()


# -- short input raises ParseError -----------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_unpack_short_raises_parse_error(cls):
    for data in (bytes(cls.SIZE - 1), b"", bytearray(cls.SIZE - 1), memoryview(bytes(cls.SIZE - 1))):
        with pytest.raises(ParseError) as ei:
            cls.unpack(data)
        assert ei.value.kind == "truncated"
    # enough octets in total, but not after the offset
    with pytest.raises(ParseError) as ei:
        cls.unpack(bytes(cls.SIZE), 1)
    assert ei.value.kind == "truncated"
    with pytest.raises(ParseError):
        cls.unpack(bytes(cls.SIZE + 4), 5)
    with pytest.raises(ParseError):
        cls.unpack(bytes(cls.SIZE), -1)
    # exactly SIZE at the offset is fine
    assert cls.unpack(bytes(cls.SIZE + 4), 4) == cls.unpack(bytes(cls.SIZE))


def test_parse_error_is_a_wire_error_with_reason_and_kind():
    e = ParseError("why", kind="icrc")
    assert isinstance(e, WireError) and isinstance(e, ValueError)
    assert e.reason == "why" and e.kind == "icrc" and str(e) == "why"
    assert ParseError("x").kind == "malformed"


# -- wrong types: WireError, never TypeError / UnicodeEncodeError ---------------------------------
# (regression tests: these three raised TypeError, UnicodeEncodeError and compared unequal before
# fabric/wire/fields.py was fixed)


@pytest.mark.parametrize("bad", [None, 5, 1.5, object()])
def test_array_of_wrong_type_raises_wire_error(bad):
    with pytest.raises(WireError):
        wire.PKeyTable(pkeys=bad).pack()


@pytest.mark.parametrize("text", ["\ud800", "ok\udfff"])
def test_unencodable_text_raises_wire_error(text):
    with pytest.raises(WireError):
        wire.NodeDescription(description=text).pack()


def test_array_given_as_list_roundtrips_equal():
    lft = wire.LinearForwardingTable(ports=list(range(64)))
    assert wire.LinearForwardingTable.unpack(lft.pack()) == lft
    assert hash(wire.LinearForwardingTable.unpack(lft.pack())) == hash(lft)
    assert lft.replace(ports=[1] * 64) == wire.LinearForwardingTable(ports=(1,) * 64)


def test_pack_fields_is_the_constructor_and_pack():
    """What the SMA packs from a port's fields without the object: the same octets, a field not
    given at its default, and the constructor's and the packer's errors for what they refuse."""
    from fabric.devices.port import Port

    d = Port(3, guid=0x1234).port_info_fields(2, 7, sm_lid=1, lmc=2)
    assert wire.PortInfo.pack_fields(d) == wire.PortInfo(**d).pack()
    assert wire.PortInfo.pack_fields({}) == wire.PortInfo().pack()
    with pytest.raises(TypeError):
        wire.PortInfo.pack_fields(dict(d, no_such_field=1))
    with pytest.raises(WireError):
        wire.PortInfo.pack_fields(dict(d, lid=1 << 16))


def _port_info_widths():
    from fabric.devices.port import PORT_INFO

    bits = {f.name: f.bits for f in wire.PortInfo.FIELDS}
    return {attr: bits[field] for field, attr in PORT_INFO.sources.items() if type(attr) is str}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_field_map_packs_what_its_fields_say(data):
    """The SMA's PortInfo answer, packed from a Port's attributes through the one table (in C when
    compiled): the octets of the attribute built from the same table's fields, overrides on top."""
    from fabric.devices.port import PORT_INFO, Port, port_core_fields, port_info_overrides

    port = Port(5, guid=0x1234)
    for attr, width in _port_info_widths().items():
        setattr(port, attr, data.draw(st.integers(0, (1 << width) - 1), label=attr))
    # as a device answers: the port's core fields (not in its __dict__ when compiled), its own on top
    over = port_core_fields(port)
    over.update(port_info_overrides(*(data.draw(st.none() | st.integers(0, top), label=name) for name, top in
                                      (("local_port", 255), ("lid", 0xFFFF))),
                                    sm_lid=data.draw(st.none() | st.integers(0, 0xFFFF), label="sm_lid"),
                                    lmc=data.draw(st.none() | st.integers(0, 7), label="lmc")))
    fields = PORT_INFO.fields(port.__dict__, over)
    expected = wire.PortInfo(**fields).pack()
    assert PORT_INFO.pack(port.__dict__, over) == expected
    compiled = PORT_INFO.compiled()
    if compiled is not None:  # the C packer itself, not the reference it falls back on
        codec, keys = compiled
        assert codec.pack_mapped(port.__dict__, keys, over) == expected
    assert wire.PortInfo.pack_fields(fields) == expected
    pi = wire.PortInfo.unpack(expected)
    assert (pi.lid, pi.local_port) == (over.get("lid", port.lid), over.get("local_port", port.num))


def test_field_map_refuses_what_the_constructor_refuses():
    from fabric.devices.port import PORT_INFO, Port, port_core_fields

    port = Port(1)
    port.lid = 1 << 16  # wider than the field: the C packer declines, the reference raises
    with pytest.raises(WireError):
        PORT_INFO.pack(port.__dict__, port_core_fields(port))
    del port.sm_lid
    with pytest.raises(KeyError):
        PORT_INFO.pack(port.__dict__, port_core_fields(port))
    with pytest.raises(TypeError, match="no_such_field"):
        wire.FieldMap(wire.PortInfo, {"no_such_field": "lid"})
    if wire.PortInfo.__dict__.get("_c_codec") is not None:
        with pytest.raises(ValueError):
            wire.PortInfo._c_codec.pack_mapped({}, (), None)


def test_offset_of_is_where_a_field_lands_in_the_octets():
    smp = wire.new_mad(wire.SMPDirected, tid=0x1122334455667788, attr_id=0xABCD, hop_cnt=5,
                       initial_path=bytes(range(64)))
    raw = smp.pack()
    o = wire.SMPDirected.offset_of
    assert raw[o("tid"):o("tid") + 8] == (0x1122334455667788).to_bytes(8, "big")
    assert raw[o("attr_id"):o("attr_id") + 2] == b"\xab\xcd" and raw[o("hop_cnt")] == 5
    assert raw[o("initial_path"):o("initial_path") + 64] == bytes(range(64))
    with pytest.raises(KeyError):
        o("no_such_field")
    with pytest.raises(TypeError):
        wire.PortInfo.offset_of("lmc")  # three bits inside an octet
