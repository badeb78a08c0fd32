"""The cache of the generated codecs' compiled code (fabric/wire/_codegen.py): a table's code comes
from the cache only for the very source it was compiled from, a bad file is ignored, and what a
process compiled is written back atomically."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys

import pytest

from fabric.wire import _codegen
from fabric.wire.fields import B, R, Struct, U

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache file of the test's own, empty, with this process' bookkeeping set aside."""
    path = str(tmp_path / "pycache" / "_codegen.test.marshal")
    monkeypatch.setattr(_codegen, "CACHE_PATH", path)
    monkeypatch.setattr(_codegen, "_cache", None)
    monkeypatch.setattr(_codegen, "_compiled_now", {})
    monkeypatch.setattr(_codegen, "_used", set())
    return path


def _table(width: int) -> type:
    class Probe(Struct):
        FIELDS = (U("a", 8), U("b", width), R(16 - width), B("c", 2))
    return Probe


def test_a_table_compiled_once_comes_from_the_cache_after(cache):
    probe = _table(4)
    assert len(_codegen._compiled_now) == 1  # compiled here: nothing cached yet
    assert _codegen.write_cache(force=True)
    with open(cache, "rb") as f:
        assert f.read(len(_codegen._CACHE_MAGIC)) == _codegen._CACHE_MAGIC
        assert len(marshal.load(f)) == 1
    _codegen._cache = None  # a new process: the file is read again
    again = _table(4)
    assert not _codegen._compiled_now  # the same source: its code came from the file
    for cls in (probe, again):
        assert cls(a=1, b=9, c=b"xy").pack() == b"\x01\x90\x00xy"
        assert cls.unpack(b"\x01\x90\x00xy").b == 9


def test_a_changed_table_never_runs_the_cached_code(cache):
    _table(4)
    assert _codegen.write_cache(force=True)
    _codegen._cache = None
    wider = _table(6)  # another layout: another source, another key
    assert len(_codegen._compiled_now) == 1
    assert wider(a=1, b=33, c=b"xy").pack() == b"\x01\x84\x00xy"  # b in 6 bits, not the cached 4


@pytest.mark.parametrize("content", [b"", b"IBFCG2", b"IBFCG2garbage", b"not ours at all", b"IBFCG2" +
                                     marshal.dumps([1, 2])])
def test_a_bad_cache_file_is_ignored(cache, content):
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache, "wb") as f:
        f.write(content)
    probe = _table(4)
    assert len(_codegen._compiled_now) == 1
    assert probe(a=2, b=1, c=b"zz").pack() == b"\x02\x10\x00zz"
    assert _codegen.write_cache(force=True)  # and replaced by a good one
    _codegen._cache = None
    assert len(_codegen._load_cache()) == 1


def test_without_bytecode_writing_nothing_is_written_unless_forced(cache, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    _table(4)
    assert not _codegen.write_cache()
    assert not os.path.exists(cache)
    assert _codegen.write_cache(force=True) and os.path.exists(cache)
    assert not _codegen.write_cache()  # nothing compiled since: nothing to write


def test_an_unwritable_place_is_no_error(cache, monkeypatch):
    _table(4)
    monkeypatch.setattr(_codegen, "CACHE_PATH", "/proc/no-such-dir/_codegen.marshal")
    assert not _codegen.write_cache(force=True)
    monkeypatch.undo()


def test_a_failed_write_leaves_neither_a_part_nor_a_temporary_file(cache, monkeypatch):
    _table(4)
    assert _codegen.write_cache(force=True)
    before = open(cache, "rb").read()
    _table(5)

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    assert not _codegen.write_cache(force=True)
    monkeypatch.undo()
    assert os.listdir(os.path.dirname(cache)) == [os.path.basename(cache)]  # the temporary one is gone
    assert open(cache, "rb").read() == before  # and the old file stands whole


def test_a_file_of_another_python_build_is_not_loaded(cache):
    """The header carries the interpreter's bytecode magic, as a .pyc does: code objects marshalled
    by another build of Python are never executed."""
    assert _codegen._CACHE_MAGIC.endswith(__import__("importlib.util").util.MAGIC_NUMBER)
    _table(4)
    assert _codegen.write_cache(force=True)
    raw = open(cache, "rb").read()
    n = len(_codegen._CACHE_MAGIC)
    with open(cache, "wb") as f:
        f.write(raw[:n - 4] + b"\xff\xff\r\n" + raw[n:])  # another magic number
    _codegen._cache = None
    _codegen._compiled_now.clear()
    _table(4)
    assert len(_codegen._compiled_now) == 1  # compiled here, not taken from the foreign file


def test_an_entry_that_is_not_code_is_compiled_instead(cache):
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    probe_src = []
    real = _codegen._code

    def spy(src):
        probe_src.append(src)
        return real(src)

    _codegen._code, saved = spy, _codegen._code
    try:
        _table(4)
    finally:
        _codegen._code = saved
    with open(cache, "wb") as f:
        f.write(_codegen._CACHE_MAGIC + marshal.dumps({probe_src[0]: "not code"}))
    _codegen._cache = None
    _codegen._compiled_now.clear()
    probe = _table(4)
    assert len(_codegen._compiled_now) == 1 and probe(a=1, b=2, c=b"ab").pack() == b"\x01\x20\x00ab"


def test_the_installed_cache_covers_every_struct_of_the_package(tmp_path):
    """What `make install` writes (``_codegen.main``) serves a fresh process' imports of
    fabric.wire and ipoib's headers without compiling anything; without it they compile."""
    env = dict(os.environ, PYTHONPATH=ROOT, IBFAB_CODEGEN_CACHE=str(tmp_path / "_codegen.marshal"),
               PYTHONDONTWRITEBYTECODE="1")
    count = ("import fabric.wire, ipoib.encap, ipoib.inet; from fabric.wire import _codegen as c; "
             "print(len(c._compiled_now), len(c._used))")

    def compiled() -> list[int]:
        out = subprocess.run([sys.executable, "-c", count], check=True, env=env, cwd=ROOT, timeout=60,
                             capture_output=True, text=True).stdout.split()
        return [int(x) for x in out]

    fresh = compiled()
    assert fresh[0] >= 30 and fresh[0] == fresh[1]  # no file: every table compiled, nothing written
    subprocess.run([sys.executable, "-c", "import sys; from fabric.wire import _codegen; sys.exit(_codegen.main())"],
                   check=True, env=env, cwd=ROOT, timeout=60)
    assert compiled() == [0, fresh[1]]
