"""The compiled packet builder and CRC-32 against the reference implementations, octet for octet."""

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric import wire as w
from fabric._wirefast import build_ud_packet_fast, crc32, write_ud_packet_into


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000))
def test_crc32_is_zlibs(data):
    assert crc32(data) == zlib.crc32(data)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=4096), slid=st.integers(1, 0xBFFF), dlid=st.integers(1, 0xBFFF),
       dqp=st.integers(0, 0xFFFFFF), sqp=st.integers(0, 0xFFFFFF), qkey=st.integers(0, 0xFFFFFFFF),
       pkey=st.integers(0, 0xFFFF), sl=st.integers(0, 15), psn=st.integers(0, 0xFFFFFF), vl=st.integers(0, 15),
       se=st.integers(0, 1))
def test_compiled_ud_packet_equals_the_reference(payload, slid, dlid, dqp, sqp, qkey, pkey, sl, psn, vl, se):
    from fabric.wire import packet

    compiled, packet._build_c = packet._build_c, None  # the reference: build_ud_packet in Python
    try:
        ref = w.build_ud_packet(slid=slid, dlid=dlid, dest_qp=dqp, src_qp=sqp, qkey=qkey, pkey=pkey, sl=sl,
                                psn=psn, vl=vl, se=se, payload=payload)
    finally:
        packet._build_c = compiled
    fast = build_ud_packet_fast(payload, slid, dlid, dqp, sqp, qkey, pkey, sl, psn, vl, se)
    assert fast == ref
    # and build_ud_packet itself, which takes the compiled builder for packets without a GRH
    assert w.build_ud_packet(slid=slid, dlid=dlid, dest_qp=dqp, src_qp=sqp, qkey=qkey, pkey=pkey, sl=sl,
                             psn=psn, vl=vl, se=se, payload=payload) == ref
    p = w.split_ud_packet(fast)  # and it validates: CRCs, lengths
    assert p.payload == payload and p.deth.qkey == qkey


# -- the three ways the compiled CRCs run: VPCLMULQDQ (512-bit), PCLMULQDQ (128-bit), tables --------

_CRC_PROBE = r"""
import json, random
from fabric import _wirefast as wf
r = random.Random(11)
lengths = list(range(0, 600)) + [1023, 1024, 1025, 2044, 2048, 2049, 4096 + 30, 9000, 65535]
out = {"method": wf.CRC_METHOD, "crc": [], "vcrc": [], "sealed": [], "checked": []}
for n in lengths:
    b = bytes(r.getrandbits(8) for _ in range(n))
    out["crc"].append(wf.crc32(b))
    out["vcrc"].append(wf.vcrc16(b))
    if n <= 8000:  # a packet's two CRCs, sealed and checked in one pass where the fold pairs them
        pkt = wf.build_ud_packet_fast(b, 1, 2, 3, 4, 5, 0xFFFF, 0, n & 0xFFFFFF, n & 15, 0)
        out["sealed"].append(pkt[-6:].hex())
        flip = bytearray(pkt)
        flip[r.randrange(len(pkt))] ^= 1 << r.randrange(8)
        out["checked"].append([wf.crcs_ok(pkt), wf.crcs_ok(bytes(flip))])
print(json.dumps(out))
"""


def test_every_crc_method_computes_the_same_crcs():
    """Every length around the thresholds (80 octets to fold at all, 512 for the wide registers)
    and the packet sizes that matter, alone and as a packet's ICRC and VCRC (sealed, checked);
    the table method is the reference (and zlib, for CRC-32)."""
    import json
    import os
    import subprocess
    import sys

    from fabric import _wirefast

    runs = {}
    for method in ("table", "pclmul", ""):
        env = dict(os.environ, IBFAB_CRC=method)
        r = subprocess.run([sys.executable, "-c", _CRC_PROBE], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        runs[method] = json.loads(r.stdout)
    assert runs["table"]["method"] == "slicing-by-8"
    if _wirefast.CRC_METHOD == "slicing-by-8":
        import pytest

        pytest.skip("this CPU has no PCLMULQDQ: only the tables run here")
    assert runs["pclmul"]["method"] == "pclmulqdq"
    assert all(ok == [True, False] for ok in runs["table"]["checked"])  # a flipped bit is caught
    for method in ("pclmul", ""):
        for what in ("crc", "vcrc", "sealed", "checked"):
            assert runs[method][what] == runs["table"][what], (runs[method]["method"], what)


def test_the_crcs_read_nothing_outside_the_payload():
    """The folded CRCs read the message in 64-octet lanes with the octets outside it masked off,
    and a packet's from its header words and its payload: with the payload against an unmapped
    page on either side, every length that takes those paths still seals right (a read past the
    payload would kill this process), and a packet written against them writes its own octets and
    no others."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    m = mmap.mmap(-1, 3 * page)
    view = memoryview(m)
    holder = ctypes.c_char.from_buffer(m)
    base = ctypes.addressof(holder)
    from fabric.wire import packet

    try:
        for off in (0, 2 * page):  # the first page and the last unmapped
            assert libc.mprotect(base + off, page, 0) == 0, ctypes.get_errno()
        r = __import__("random").Random(5)
        rand = bytes(r.getrandbits(8) for _ in range(page))
        m[page:2 * page] = rand
        compiled, packet._build_c = packet._build_c, None
        try:
            for n in range(1, 520):
                for payload in (view[page:page + n], view[2 * page - n:2 * page]):
                    ref = w.build_ud_packet(slid=3, dlid=9, dest_qp=0x12, src_qp=0x34, qkey=0x11223344,
                                            pkey=0xFFFF, sl=1, psn=n, vl=0, se=0, payload=bytes(payload))
                    assert build_ud_packet_fast(payload, 3, 9, 0x12, 0x34, 0x11223344, 0xFFFF, 1, n) == ref, n
                    assert crc32(payload) == zlib.crc32(payload), n
                # and written against them: from the first octet of the page and up to its last
                src = rand[:n]
                ref = build_ud_packet_fast(src, 3, 9, 0x12, 0x34, 0x11223344, 0xFFFF, 1, n)
                for at in (page, 2 * page - len(ref)):
                    m[page:2 * page] = b"\xaa" * page
                    assert write_ud_packet_into(view, at, src, 3, 9, 0x12, 0x34, 0x11223344, 0xFFFF, 1, n) == len(ref)
                    assert m[at:at + len(ref)] == ref, n
                    rest = m[page:at] + m[at + len(ref):2 * page]
                    assert rest == b"\xaa" * len(rest), n  # nothing else written
                m[page:2 * page] = rand
        finally:
            packet._build_c = compiled
    finally:
        del holder, payload
        view.release()
        m.close()


# -- the management structs packed and parsed in C (fabric._structfast.StructCodec) --------------

def _structs_in_c():
    from fabric.wire.fields import Struct

    def subs(c):
        for s in c.__subclasses__():
            yield s
            yield from subs(s)
    return sorted({c for c in subs(Struct) if "_c_codec" in c.__dict__}, key=lambda c: c.__name__)


_IN_C = _structs_in_c()
needs_c = pytest.mark.skipif(not _IN_C, reason="the compiled codec comes with FABRIC_BACKEND fast")


@needs_c
def test_the_hot_structs_are_packed_in_c():
    names = {c.__name__ for c in _IN_C}
    assert {"SMPDirected", "SMPLid", "PortInfo", "NodeInfo", "SwitchInfo", "SAMad", "PMAMad", "LRH",
            "BTH", "DETH", "LinearForwardingTable", "MulticastForwardingTable", "PKeyTable"} <= names


@needs_c
@pytest.mark.parametrize("cls", _IN_C, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_compiled_structs_pack_and_parse_as_the_generated_code(cls, data):
    """Every struct the codec packs, from random octets at random offsets: the same objects as the
    generated Python (the reference) parses, and the same octets when packed again."""
    off = data.draw(st.integers(0, 7))
    raw = data.draw(st.binary(min_size=cls.SIZE + off, max_size=cls.SIZE + off + 9))
    for buf in (raw, bytearray(raw), memoryview(raw)):
        got, ref = cls.unpack(buf, off), cls._py_unpack_at(buf, off)
        assert type(got) is cls and got == ref
    assert got.pack() == cls._py_pack(ref)
    assert cls.unpack(got.pack()) == got
    edges = {f.name: (1 << f.bits) - 1 for f in cls.FIELDS if f.kind == "uint"}  # every field at its top
    top = cls(**edges)
    assert top.pack() == cls._py_pack(top) and cls.unpack(top.pack()) == top


def _packs_as_the_reference(cls, name, value):
    """``cls()`` with ``value`` in field ``name``: the same octets, or the same error, both ways."""
    obj = cls()
    obj.__dict__[name] = value
    try:
        want = cls._py_pack(obj)
    except w.WireError as exc:
        with pytest.raises(w.WireError) as got:
            obj.pack()
        assert str(got.value) == str(exc)
    else:
        assert obj.pack() == want


@needs_c
@pytest.mark.parametrize("bad", [-1, "big", True, 2.0, "str", None])
def test_compiled_structs_refuse_what_the_generated_code_refuses(bad):
    """A value the C code cannot pack goes to the generated code: the same octets (a bool) or the
    same error; a truncated buffer gets the same ParseError."""
    for cls in _IN_C:
        for f in cls.FIELDS:
            if f.kind not in ("uint", "bytes"):
                continue
            v = (1 << f.bits) if bad == "big" else bad
            _packs_as_the_reference(cls, f.name, v if f.kind == "uint" or bad != "big" else bytes(f.bits // 8 + 1))
        for f in cls.FIELDS:
            if f.kind != "array":
                continue
            top = (1 << f.bits) - 1
            cases = {-1: (-1,) + (0,) * (f.count - 1), "big": (top + 1,) * f.count, True: (True,) * f.count,
                     2.0: (0,) * (f.count - 1), "str": "x" * f.count, None: [top] * f.count}
            _packs_as_the_reference(cls, f.name, cases[bad])
        with pytest.raises(w.ParseError) as got:
            cls.unpack(bytes(cls.SIZE - 1))
        with pytest.raises(w.ParseError) as ref:
            cls._py_unpack_at(bytes(cls.SIZE - 1), 0)
        assert str(got.value) == str(ref.value)
        with pytest.raises(w.ParseError):
            cls.unpack(bytes(cls.SIZE), -1)


@pytest.mark.skipif(__import__("fabric.wire.compiled", fromlist=["wirefast"]).wirefast is None,
                    reason="HCA.post_segment runs compiled with FABRIC_BACKEND fast")
def test_the_compiled_post_segment_is_the_hca_methods_twin():
    """``HCA.post_segment`` runs compiled with the fast backend (fabric._wirefast); the Python
    method stays the reference: the same counters (saturating), QP counts, drops and outbox."""
    from fabric._wirefast import hca_post_segment
    from fabric.devices import make_device
    from fabric.devices.hca import HCA
    from fabric.topology import load_topology
    from fabric.wire import smp_attrs as sa
    from fabric.wire.burst import BURST_HEADROOM

    assert HCA.post_segment is hca_post_segment
    node = load_topology("single:2").nodes["node0001"]

    def run(post, up):
        hca = make_device(node)
        port = hca.ports[1]
        if up:
            port.phys, port.state = sa.PHYS_LINKUP, sa.PORT_ACTIVE
        buf = bytearray(BURST_HEADROOM) + bytes(range(40))
        for count, words in ((3, 30), (2, 0xFFFFFFF0)):  # the second saturates PortXmitData
            post(hca, 1, 1, count, words, buf)
        c = port.counters
        return (dict(c.pc), dict(c.ext), hca.qps[1].sent, dict(hca.drops),
                [(s.port, s.count, bytes(s.buf)) for s in hca.outbox])

    for up in (True, False):
        ref = run(HCA.post_segment_py, up)
        assert run(hca_post_segment, up) == ref
    assert ref[0]["port_xmit_discards"] == 5 and not ref[4]  # down: refused, counted, nothing sent
    up = run(hca_post_segment, True)
    assert up[0]["port_xmit_data"] == 0xFFFFFFFF and up[1]["port_xmit_data"] == 30 + 0xFFFFFFF0
    assert up[2] == 5 and [s[:2] for s in up[4]] == [(1, 3), (1, 2)]


@pytest.mark.skipif(__import__("fabric.wire.compiled", fromlist=["wirefast"]).wirefast is None,
                    reason="send_dr_request builds its packet in C with FABRIC_BACKEND fast")
@settings(max_examples=300, deadline=None)
@given(mad=st.binary(min_size=256, max_size=256), method=st.sampled_from([0x01, 0x02, 0x81]),
       d=st.booleans(), hop_ptr=st.sampled_from([0, 0, 1]), hop_cnt=st.sampled_from([0, 1, 2, 63, 64]),
       permissive=st.booleans(), out=st.sampled_from([0, 1, 2, 9]), cls=st.sampled_from([0x81, 0x81, 0x01]),
       short=st.booleans())
def test_a_plain_directed_route_request_is_built_in_c_as_in_python(mad, method, d, hop_ptr, hop_cnt, permissive,
                                                                     out, cls, short):
    """``send_dr_request`` (what our SM and an ibsim client's requests take) with its packet from
    ``_wirefast.dr_request_packet`` against its Python reference: which MADs it takes, the octets
    on the wire, the drops."""
    from fabric.devices import hca as hca_mod
    from fabric.devices import make_device
    from fabric.topology import load_topology
    from fabric.wire import smp_attrs as sa

    m = bytearray(mad)
    m[0], m[1], m[3], m[4] = 1, cls, method, (0x80 if d else 0) | (m[4] & 0x7F)
    m[6], m[7], m[129] = hop_ptr, hop_cnt, out
    if permissive:
        m[32:36] = b"\xff\xff\xff\xff"
    raw = bytes(m[:255] if short else m)
    node = load_topology("single:2").nodes["node0001"]

    def run():
        hca = make_device(node)
        hca.ports[1].phys, hca.ports[1].state = sa.PHYS_LINKUP, sa.PORT_ACTIVE
        sent = hca_mod.send_dr_request(hca, 1, raw)
        return sent, list(hca.outbox), dict(hca.drops), dict(hca.ports[1].counters.pc)

    fast = run()
    compiled, hca_mod._dr_request_packet = hca_mod._dr_request_packet, None
    try:
        ref = run()
    finally:
        hca_mod._dr_request_packet = compiled
    assert fast == ref
