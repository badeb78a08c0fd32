"""Backend selection (msgpack style) and the ring-buffer core of both backends."""

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ipoib
from ipoib import _stdpath

_fastpath = pytest.importorskip("ipoib._fastpath", reason="extension not built")

BACKENDS = {"std": _stdpath, "fast": _fastpath}


def _run(code, **env):
    e = dict(os.environ)
    e.pop("IPOIB_BACKEND", None)
    e.update(env)
    return subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True,
                          env=e, timeout=60)


def test_active_backend_matches_environment():
    forced = os.environ.get("IPOIB_BACKEND", "")
    assert ipoib.backend_name == (forced or "fast")
    assert ipoib.PacketRing is BACKENDS[ipoib.backend_name].PacketRing


@pytest.mark.parametrize("name", ["std", "fast"])
def test_forcing_a_backend(name):
    r = _run("import ipoib; print(ipoib.backend_name, type(ipoib.PacketRing(1, 1)).__module__)",
             IPOIB_BACKEND=name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [name, f"ipoib._{name}path"]


def test_bad_backend_name_is_a_clear_error():
    r = _run("import ipoib", IPOIB_BACKEND="turbo")
    assert r.returncode != 0
    assert "IPOIB_BACKEND must be 'std' or 'fast'" in r.stderr


BLOCK_EXT = "import sys; sys.modules['ipoib._fastpath'] = None\n"


def test_missing_extension_falls_back_to_std_with_a_warning():
    r = _run(BLOCK_EXT + "import ipoib; print(ipoib.backend_name)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "std"
    assert "RuntimeWarning" in r.stderr and "_fastpath is not built" in r.stderr


def test_forced_fast_without_extension_fails_loudly():
    r = _run(BLOCK_EXT + "import ipoib", IPOIB_BACKEND="fast")
    assert r.returncode != 0
    assert "IPOIB_BACKEND=fast but the Cython extension" in r.stderr


@pytest.mark.parametrize("mod", BACKENDS.values(), ids=BACKENDS.keys())
def test_ring_fifo_bounds_and_counters(mod):
    r = mod.PacketRing(3, 8)
    assert len(r) == 0 and r.free == 3 and r.pop() is None
    assert r.push(b"a") and r.push(b"bb") and r.push(b"ccc")
    assert not r.push(b"d")  # full: refused, counted
    assert not r.push(b"x" * 9)  # larger than a slot
    assert r.pop() == b"a"
    assert r.push(b"12345678")  # wraps around into the freed slot
    assert r.pop_many(10) == [b"bb", b"ccc", b"12345678"]
    s = r.stats()
    assert (s["pushed"], s["popped"], s["dropped_full"], s["dropped_oversize"], s["used"]) == (4, 4, 1, 1, 0)


@pytest.mark.parametrize("mod", BACKENDS.values(), ids=BACKENDS.keys())
def test_ring_rejects_bad_geometry(mod):
    with pytest.raises(ValueError):
        mod.PacketRing(0, 10)
    with pytest.raises(ValueError):
        mod.PacketRing(10, 0)


def test_fast_ring_is_preallocated_numpy():
    import numpy as np

    r = _fastpath.PacketRing(16, 2048)
    assert isinstance(r.buffer, np.ndarray) and r.buffer.shape == (16, 2048) and r.buffer.dtype == np.uint8
    buf_id = r.buffer.ctypes.data
    for i in range(100):
        r.push(bytes([i]) * 100)
        r.pop()
    assert r.buffer.ctypes.data == buf_id  # same storage, no reallocation
    # an empty ring starts over at its first slot: one packet at a time never leaves slot 0 (its
    # page mapped and warm), while a backlog goes round the ring as ever
    assert r.buffer[1:, 0].tolist() == [0] * 15 and r.buffer[0, 0] == 99
    for i in range(20):
        r.push(bytes([200 + i]) * 10)
    assert len(r) == 16 and r.pop() == bytes([200]) * 10 and r.push(b"\x07")
    assert r.buffer[0, 0] == 7 and r.buffer[15, 0] == 215  # wrapped into the freed first slot
    assert r.pop_many(16)[-1] == b"\x07" and len(r) == 0
    assert r.push(b"\x08") and r.buffer[0, 0] == 8


def _mapping_of(addr: int) -> tuple[str, int]:
    """The permissions and resident kilobytes of the mapping that holds ``addr``."""
    lines = open("/proc/self/smaps").read().split("\n")
    for i, line in enumerate(lines):
        head = line.split()
        if len(head) >= 5 and "-" in head[0]:
            try:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
            except ValueError:
                continue
            if lo <= addr < hi:
                rss = next(x for x in lines[i + 1:] if x.startswith("Rss:"))
                return head[1], int(rss.split()[1])
    raise AssertionError(f"no mapping holds {addr:#x}")


def test_a_big_fast_ring_is_a_private_mapping_touched_only_where_used():
    r = _fastpath.PacketRing(1024, 4096)  # 4 MiB: its own anonymous mapping
    perms, rss = _mapping_of(r.buffer.ctypes.data)
    assert perms[3] == "p" and rss == 0  # private (not shmem), nothing touched yet
    for _ in range(3000):
        r.push(b"x" * 1500)
        r.pop()
    assert _mapping_of(r.buffer.ctypes.data)[1] <= 8  # one packet at a time: a page, not the ring



def test_a_ring_set_is_one_mapping_of_independent_page_aligned_rings():
    from ipoib._fastring import ring_set

    rings = ring_set(_fastpath.PacketRing, 4, 256, 4104)
    assert [type(r) for r in rings] == [_fastpath.PacketRing] * 4
    bases = [r.buffer.ctypes.data for r in rings]
    assert all(b % 4096 == 0 for b in bases) and len(set(bases)) == 4
    # one block for the set, in order, each ring's slots to a whole page; the lengths one block
    # apart (in the heap), each ring's right after the one before
    share = bases[1] - bases[0]
    assert bases == [bases[0] + i * share for i in range(4)] and share == -(-256 * 4104 // 4096) * 4096
    assert all(r.storage is rings[0].storage for r in rings)
    lens = [r.lengths.ctypes.data for r in rings]
    assert lens == [lens[0] + 4 * 256 * i for i in range(4)]
    assert not any(bases[0] <= a < bases[-1] + share for a in lens)
    assert _mapping_of(bases[0])[1] == 0  # nothing touched yet
    for i, r in enumerate(rings):  # each ring its own FIFO: a packet in one is in no other
        assert r.push(bytes([i + 1]) * (10 + i))
    assert [len(r) for r in rings] == [1] * 4
    assert [r.lengths[0] for r in rings] == [10, 11, 12, 13]
    assert [r.pop() for r in rings] == [bytes([i + 1]) * (10 + i) for i in range(4)]
    assert _mapping_of(bases[2])[1] <= 4 * 4  # a page of slots per ring, not the set


def test_a_rings_lengths_do_not_alias_its_page_aligned_slots():
    """A ring of 4096-octet slots: every slot starts a page. Lengths right after the slots would
    start a page too, their first line in the same L1 set as every slot's (pushes and pops half as
    fast); they live in the heap instead, apart from the slots."""
    r = _fastpath.PacketRing(256, 4096)
    data, lens = r.buffer.ctypes.data, r.lengths.ctypes.data
    assert not data <= lens < data + 256 * 4096
    r.push(b"x" * 100)
    assert r.lengths[0] == 100 and r.pop() == b"x" * 100


def test_a_ring_sets_memory_lives_as_long_as_any_view_of_it():
    import gc

    from ipoib._fastring import ring_set

    rings = ring_set(_fastpath.PacketRing, 2, 256, 4104)
    rings[1].push(b"kept")
    buf, lengths = rings[1].buffer, rings[1].lengths
    del rings
    gc.collect()
    assert bytes(buf[0, :4]) == b"kept" and lengths[0] == 4
    buf[255, 4103] = 7  # the last octet of the last ring's slots: still mapped
    assert buf[255, 4103] == 7


def test_a_device_host_with_the_fast_provider_imports_no_numpy():
    """numpy is how a ring is looked at (``buffer``, ``lengths``), not what it is: a device host
    running IPoIB never imports it (a twentieth of a fabric's launch), and a ring's arrays still
    come when asked."""
    r = _run("import sys; import fabric.host.__main__, ipoib, ipoib.node; from fabric import plugins; "
             "plugins.node_software('ipoib'); "
             "ring = ipoib.core.PacketRing(256, 4104); ring.push(b'abc'); before = 'numpy' in sys.modules; "
             "print(before, ipoib.backend_name, bytes(ring.buffer[0, :3]), int(ring.lengths[0]))",
             IPOIB_BACKEND="fast")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "fast", "b'abc'", "3"]


def test_ring_set_refusals():
    from ipoib._fastring import ring_set

    with pytest.raises(ValueError):
        ring_set(_fastpath.PacketRing, 0, 256, 4104)
    with pytest.raises(ValueError):
        ring_set(_fastpath.PacketRing, 2, 0, 4104)
    with pytest.raises(TypeError):
        ring_set(bytearray, 2, 256, 4104)
    small = ring_set(_fastpath.PacketRing, 3, 16, 64)  # below a mapping's size: each in the heap
    assert len(small) == 3 and all(r.push(b"x") for r in small)
    # a ring may not be placed outside the set whose memory it names, nor without its lengths
    pair = ring_set(_fastpath.PacketRing, 2, 256, 4104)
    shared, lengths = pair[0].storage, pair[0].lengths.base.obj  # the set's lengths block
    assert _fastpath.PacketRing(256, 4104, shared, 1, lengths).buffer.ctypes.data == pair[1].buffer.ctypes.data
    for index in (2, -1):
        with pytest.raises(ValueError, match="outside its ring set"):
            _fastpath.PacketRing(256, 4104, shared, index, lengths)
    with pytest.raises(ValueError, match="outside its ring set"):
        _fastpath.PacketRing(512, 4104, shared, 1, lengths)  # bigger rings than the set was made of
    with pytest.raises(ValueError, match="outside its ring set"):
        _fastpath.PacketRing(256, 4104, shared, 1)


ops = st.lists(st.one_of(
    st.tuples(st.just("push"), st.binary(max_size=40)),
    st.tuples(st.just("push_many"), st.lists(st.binary(max_size=40), max_size=6)),
    st.tuples(st.just("pop"), st.none()),
    st.tuples(st.just("pop_many"), st.integers(0, 8)),
), max_size=60)


@settings(max_examples=200, deadline=None)
@given(slots=st.integers(1, 6), slot_size=st.integers(1, 32), seq=ops)
def test_backends_behave_identically(slots, slot_size, seq):
    a, b = _stdpath.PacketRing(slots, slot_size), _fastpath.PacketRing(slots, slot_size)
    for op, arg in seq:
        ra = getattr(a, op)(arg) if arg is not None else getattr(a, op)()
        rb = getattr(b, op)(arg) if arg is not None else getattr(b, op)()
        assert ra == rb, (op, arg)
        assert len(a) == len(b)
    assert a.stats() == b.stats()


# -- fabric._wirefast follows the same rule (FABRIC_BACKEND) ---------------------------------------

BLOCK_WIREFAST = "import sys; sys.modules['fabric._wirefast'] = None\n"
WIRE_PROBE = ("from fabric.wire import crc; from fabric.devices import switch; "
              "print(crc._vcrc16_c is not None, switch._forward_burst is not None)")


def test_fabric_wire_uses_the_extension_unless_told():
    r = _run(WIRE_PROBE, FABRIC_BACKEND="")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True"]
    r = _run(WIRE_PROBE, FABRIC_BACKEND="std")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


def test_fabric_wire_falls_back_loudly_and_forced_fast_fails():
    r = _run(BLOCK_WIREFAST + WIRE_PROBE, FABRIC_BACKEND="")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]
    assert "RuntimeWarning" in r.stderr and "fabric._wirefast is not built" in r.stderr
    r = _run(BLOCK_WIREFAST + WIRE_PROBE, FABRIC_BACKEND="fast")
    assert r.returncode != 0 and "FABRIC_BACKEND=fast but the Cython extension" in r.stderr
    r = _run(WIRE_PROBE, FABRIC_BACKEND="turbo")
    assert r.returncode != 0 and "FABRIC_BACKEND must be 'std' or 'fast'" in r.stderr


def test_the_python_wire_code_computes_what_the_extension_does():
    """The same VCRCs, and a switch that forwards packet by packet delivers what the compiled
    burst path delivers (the device tests run on both: make test-std sets FABRIC_BACKEND=std)."""
    code = ("import random; from fabric.wire import crc; r = random.Random(5); "
            "d = [bytes(r.getrandbits(8) for _ in range(r.randrange(1, 300))) for _ in range(200)]; "
            "print([crc.vcrc16(x) for x in d])")
    a, b = _run(code, FABRIC_BACKEND="fast"), _run(code, FABRIC_BACKEND="std")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout


# -- the two backends export the same API -----------------------------------------------------------

# What only the compiled backend has, on purpose: its ring builds UD packets straight into a burst
# (drain_ud) and exposes its storage (a block of C memory, shared by a provider's rings) as numpy
# arrays; its provider dispatches ops in C (bind_op, which
# RdmaNetdev asks for) and has an RSS hash choice (ethtool -N) the standard provider does not offer.
FAST_ONLY = {"PacketRing": {"drain_ud", "buffer", "lengths", "storage"}, "Provider": {"bind_op", "set_rx_flow_hash"}}
INSTANCES = {"PacketRing": lambda m: m.PacketRing(4, 64), "UdpSink": lambda m: m.UdpSink(5201)}


def _public(obj, callables_only=False) -> set:
    return {a for a in dir(obj) if not a.startswith("_") and (not callables_only or callable(getattr(obj, a)))}


def test_both_backends_export_the_same_names_and_class_apis():
    assert sorted(_stdpath.__all__) == sorted(_fastpath.__all__)
    for name in _stdpath.__all__:
        s, f = getattr(_stdpath, name), getattr(_fastpath, name)
        if not isinstance(s, type):
            assert type(s) is type(f), name
            continue
        assert isinstance(f, type), name
        make = INSTANCES.get(name)
        # methods from the classes (the provider's state is its own business); instance
        # attributes from instances where one is cheap to make
        std_api, fast_api = _public(s, callables_only=True), _public(f, callables_only=True)
        if make is not None:
            std_api |= _public(make(_stdpath))
            fast_api |= _public(make(_fastpath))
        assert std_api - fast_api == set(), f"{name}: only in std"
        assert fast_api - std_api == FAST_ONLY.get(name, set()), f"{name}: only in fast"
