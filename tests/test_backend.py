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
