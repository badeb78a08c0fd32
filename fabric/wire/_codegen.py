"""Compile a field table into straight-line ``__init__``, pack and unpack functions.

The generic, table-walking code in :mod:`fabric.wire.fields` (``to_int``/``from_int``) stays as the
reference; this module generates the fast path the way ``dataclasses`` and ``namedtuple`` do, so
that the SM, the SMA and the SA do not pay a loop over field objects for every MAD. The field table
is cut into byte-aligned chunks: each chunk is read with one ``int.from_bytes`` of a few octets and
split with constant shifts and masks, and octet strings and arrays are sliced directly.
"""

from __future__ import annotations

import marshal
import os
import struct
import sys
from types import CodeType as _CodeType

from .errors import ParseError, WireError

_ARRAY_FMT = {8: "B", 16: "H", 32: "I", 64: "Q"}


def _chunks(fields):
    chunk, bits = [], 0
    for f in fields:
        chunk.append(f)
        bits += f.width
        if bits % 8 == 0:
            yield chunk, bits // 8
            chunk, bits = [], 0
    if chunk:
        raise TypeError("field table does not end on an octet boundary")


def _bad_uint(cls, name, bits, v):
    if isinstance(v, bool):
        v = int(v)
        if not v >> bits:
            return v
    if not isinstance(v, int):
        raise WireError(f"{cls.__name__}.{name}: expected an int, got {type(v).__name__}")
    raise WireError(f"{cls.__name__}.{name}: {v} does not fit in {bits} bits")


def _bad_bytes(cls, name, n, v):
    if isinstance(v, (bytearray, memoryview)) and len(v) == n:
        return bytes(v)
    if not isinstance(v, (bytes, bytearray, memoryview)):
        raise WireError(f"{cls.__name__}.{name}: expected bytes, got {type(v).__name__}")
    raise WireError(f"{cls.__name__}.{name}: expected {n} octets, got {len(v)}")


def _enc_text(cls, name, n, v):
    if not isinstance(v, str):
        raise WireError(f"{cls.__name__}.{name}: expected str, got {type(v).__name__}")
    try:
        raw = v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise WireError(f"{cls.__name__}.{name}: text is not encodable as UTF-8 ({exc.reason})") from None
    if len(raw) > n:
        raise WireError(f"{cls.__name__}.{name}: {len(raw)} octets do not fit in {n}")
    return raw.ljust(n, b"\0")


def _dec_text(raw):
    return bytes(raw).split(b"\0", 1)[0].decode("utf-8", "replace")


def _enc_array(cls, name, bits, count, fmt, v):
    if not isinstance(v, (tuple, list)):
        raise WireError(f"{cls.__name__}.{name}: expected a sequence of {count} ints, got {type(v).__name__}")
    if len(v) != count:
        raise WireError(f"{cls.__name__}.{name}: expected {count} entries, got {len(v)}")
    for i, e in enumerate(v):
        if isinstance(e, bool) or not isinstance(e, int) or e < 0 or e >> bits:
            raise WireError(f"{cls.__name__}.{name}[{i}]: {e!r} does not fit in {bits} bits")
    return struct.pack(fmt, *v)


def _enc_struct(cls, name, sub, v):
    if not isinstance(v, sub):
        raise WireError(f"{cls.__name__}.{name}: expected {sub.__name__}, got {type(v).__name__}")
    return v.pack()


# -- the compiled code, cached ------------------------------------------------------------------------
# Compiling the generated source of every struct is half of `import fabric.wire` (20 ms of 40), at
# every start of every process (each device host's fork server, each ibfab command, each tool). Its
# code objects are kept as bytecode is, in __pycache__ beside this file, keyed by the source itself:
# a table that changed misses its entry and is compiled afresh, and never runs stale code.
# `make install` writes the file (as compileall writes .pyc files, also under
# PYTHONDONTWRITEBYTECODE); an import that compiled anything rewrites it, unless bytecode writing
# is off or the directory is not writable. IBFAB_CODEGEN_CACHE names another file.
CACHE_PATH = os.path.abspath(os.environ.get("IBFAB_CODEGEN_CACHE") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "__pycache__", f"_codegen.{sys.implementation.cache_tag}.marshal"))
# ours, then the interpreter's bytecode magic (as a .pyc starts): code objects from another build
# of Python, even one with the same cache tag, are never loaded
_CACHE_MAGIC = b"IBFCG3" + sys.modules["_frozen_importlib_external"].MAGIC_NUMBER
_CACHE_MAX = 512  # entries; past it the file keeps only what the writing process used
_cache: dict | None = None
_compiled_now: dict = {}  # what this process compiled: source -> code
_used: set = set()  # the sources this process looked up


def _load_cache() -> dict:
    global _cache
    if _cache is None:
        _cache = {}
        try:
            with open(CACHE_PATH, "rb") as f:
                if f.read(len(_CACHE_MAGIC)) == _CACHE_MAGIC:
                    got = marshal.load(f)
                    if isinstance(got, dict):
                        _cache = got
        except (OSError, EOFError, ValueError, TypeError):
            pass  # none yet, or unreadable: compile
    return _cache


def _code(src: str):
    key = src  # the whole source: no digest to collide (and no hashlib, 2-4 ms to import)
    _used.add(key)
    code = _load_cache().get(key)
    if type(code) is not _CodeType:  # not cached (or not code: a file that is not ours)
        code = _compiled_now[key] = compile(src, "<fabric.wire generated>", "exec")
    return code


def write_cache(force: bool = False) -> bool:
    """Write what this process compiled (and the entries still in use) to CACHE_PATH, atomically.
    Without ``force``, only when something was compiled and bytecode writing is on. Whether it
    was written; an unwritable place is no error."""
    if not _compiled_now and not force:
        return False
    if sys.dont_write_bytecode and not force:
        return False
    entries = dict(_load_cache())
    entries.update(_compiled_now)
    if len(entries) > _CACHE_MAX:  # old tables' code piling up: keep what is in use
        entries = {k: v for k, v in entries.items() if k in _used}
    import tempfile  # here: 6 ms to import, and only a process that writes needs it

    tmp = None
    try:
        os.makedirs(os.path.dirname(CACHE_PATH), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(CACHE_PATH) + ".", suffix=".tmp",
                                   dir=os.path.dirname(CACHE_PATH))
        with os.fdopen(fd, "wb") as f:
            f.write(_CACHE_MAGIC)
            marshal.dump(entries, f)
        os.chmod(tmp, 0o644)  # as a .pyc: readable by every user of the tree
        os.replace(tmp, CACHE_PATH)  # readers see the old file or the new one, never a part
    except (OSError, ValueError):
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False
    global _cache
    _cache = entries
    _compiled_now.clear()
    return True


def main() -> int:
    """Compile every struct of the package (fabric.wire's and ipoib's headers) and write the
    cache (``make install``)."""
    import importlib

    for mod in ("fabric.wire", "ipoib.encap", "ipoib.inet"):
        try:
            importlib.import_module(mod)
        except ImportError:
            pass
    return 0 if write_cache(force=True) else 1


def compile_struct(cls) -> bool:
    """Install generated ``__init__``, ``pack`` and ``_unpack_at`` on ``cls``. Returns False (and
    leaves the generic code in place) for tables it does not handle."""
    ns = {"ParseError": ParseError, "WireError": WireError, "_bad_uint": _bad_uint, "_bad_bytes": _bad_bytes,
          "_enc_text": _enc_text, "_dec_text": _dec_text, "_enc_array": _enc_array, "_enc_struct": _enc_struct,
          "_from_bytes": int.from_bytes, "_unpack_from": struct.unpack_from, "cls": cls}
    init_args, init_body = [], []
    pack, unpack = [], []
    off = 0
    for chunk, nbytes in _chunks(cls.FIELDS):
        kinds = {f.kind for f in chunk}
        if kinds <= {"uint", "rsvd"}:
            live = [f for f in chunk if f.kind == "uint"]
            if not live:
                pack.append(f"    _parts.append({bytes(nbytes)!r})")
            else:
                shift = nbytes * 8
                terms = []
                rd = [f"    _c = _from_bytes(_data[_o + {off}:_o + {off + nbytes}], 'big')"]
                for f in chunk:
                    shift -= f.width
                    if f.kind == "rsvd":
                        continue
                    m = (1 << f.bits) - 1
                    pack.append(f"    v_{f.name} = _d[{f.name!r}]")
                    pack.append(f"    if v_{f.name}.__class__ is not int or v_{f.name} < 0 or v_{f.name} > {m}:")
                    pack.append(f"        v_{f.name} = _bad_uint(cls, {f.name!r}, {f.bits}, v_{f.name})")
                    terms.append(f"(v_{f.name} << {shift})" if shift else f"v_{f.name}")
                    if shift == 0 and f.bits == nbytes * 8:
                        rd.append(f"    _d[{f.name!r}] = _c")
                    else:
                        rd.append(f"    _d[{f.name!r}] = (_c >> {shift}) & {m}")
                pack.append(f"    _parts.append(({' | '.join(terms)}).to_bytes({nbytes}, 'big'))")
                unpack.extend(rd)
        elif len(chunk) == 1:
            f = chunk[0]
            n = f.width // 8
            if f.kind == "bytes":
                pack.append(f"    _v = _d[{f.name!r}]")
                pack.append(f"    if _v.__class__ is not bytes or len(_v) != {n}:")
                pack.append(f"        _v = _bad_bytes(cls, {f.name!r}, {n}, _v)")
                pack.append("    _parts.append(_v)")
                unpack.append(f"    _d[{f.name!r}] = bytes(_data[_o + {off}:_o + {off + n}])")
            elif f.kind == "text":
                pack.append(f"    _parts.append(_enc_text(cls, {f.name!r}, {n}, _d[{f.name!r}]))")
                unpack.append(f"    _d[{f.name!r}] = _dec_text(_data[_o + {off}:_o + {off + n}])")
            elif f.kind == "array" and f.bits in _ARRAY_FMT:
                fmt = f">{f.count}{_ARRAY_FMT[f.bits]}"
                pack.append(f"    _parts.append(_enc_array(cls, {f.name!r}, {f.bits}, {f.count}, {fmt!r}, "
                            f"_d[{f.name!r}]))")
                unpack.append(f"    _d[{f.name!r}] = _unpack_from({fmt!r}, _data, _o + {off})")
            elif f.kind == "struct":
                ns[f"sub_{f.name}"] = f.sub
                pack.append(f"    _parts.append(_enc_struct(cls, {f.name!r}, sub_{f.name}, _d[{f.name!r}]))")
                unpack.append(f"    _d[{f.name!r}] = sub_{f.name}._unpack_at(_data, _o + {off})")
            else:
                return False
        else:
            return False
        off += nbytes
    for f in cls.FIELDS:
        if f.kind == "rsvd":
            continue
        if f.kind == "struct":
            ns[f"sub_{f.name}"] = f.sub
            init_args.append(f"{f.name}=None")
            init_body.append(f"    _d[{f.name!r}] = sub_{f.name}() if {f.name} is None else {f.name}")
        else:
            ns[f"def_{f.name}"] = f.default
            init_args.append(f"{f.name}=def_{f.name}")
            if f.kind == "array":
                init_body.append(f"    _d[{f.name!r}] = tuple({f.name}) if {f.name}.__class__ is list else {f.name}")
            else:
                init_body.append(f"    _d[{f.name!r}] = {f.name}")
    size = cls.SIZE
    src = [
        f"def __init__(self, *, {', '.join(init_args)}):" if init_args else "def __init__(self):",
        "    _d = self.__dict__",
        *init_body,
        "",
        "def pack(self):",
        "    _d = self.__dict__",
        "    _parts = []",
        *pack,
        "    return b''.join(_parts)",
        "",
        "def _unpack_at(_data, _o):",
        f"    if _o < 0 or len(_data) < _o + {size}:",
        f"        raise ParseError(f'{cls.__name__}: need {size} octets at offset {{_o}}, have "
        f"{{max(0, len(_data) - _o)}}', kind='truncated')",
        "    _obj = cls.__new__(cls)",
        "    _d = _obj.__dict__",
        *unpack,
        "    return _obj",
    ]
    exec(_code("\n".join(src)), ns)  # noqa: S102 - generated from our own field tables
    cls.__init__ = ns["__init__"]
    cls.pack = ns["pack"]
    cls._unpack_at = staticmethod(ns["_unpack_at"])
    _compile_c(cls, ns["pack"], ns["_unpack_at"])
    return True


def _c_ops(cls):
    """The table as :class:`fabric._structfast.StructCodec` takes it, or None when it has a field
    kind the codec does not pack (text, nested structs) or a chunk wider than 64 bits."""
    ops, off = [], 0
    for chunk, nbytes in _chunks(cls.FIELDS):
        if all(f.kind == "rsvd" for f in chunk):
            pass  # zeros on the wire (the packed buffer starts zeroed), ignored when parsed
        elif {f.kind for f in chunk} <= {"uint", "rsvd"}:
            if nbytes > 8:
                return None
            shift = nbytes * 8
            for f in chunk:
                shift -= f.width
                ops.append((f.name if f.kind == "uint" else None, 0, off, nbytes, shift, f.width))
        elif len(chunk) == 1 and chunk[0].kind == "bytes":
            ops.append((chunk[0].name, 1, off, nbytes, 0, 0))
        elif len(chunk) == 1 and chunk[0].kind == "array" and chunk[0].bits in _ARRAY_FMT:
            f = chunk[0]
            ops.append((f.name, 2, off, f.bits // 8, f.count, f.bits))
        else:
            return None
        off += nbytes
    return ops


def _compile_c(cls, py_pack, py_unpack) -> None:
    """Pack and parse ``cls`` in C when the compiled wire code is there (FABRIC_BACKEND): the same
    octets, the generated Python above handling whatever the C code refuses (and its errors)."""
    from .compiled import structfast

    ops = _c_ops(cls) if structfast is not None else None
    if not ops or len(ops) > 128:
        return
    codec = structfast.StructCodec(cls, cls.SIZE, ops, py_unpack)
    cls.pack = structfast.struct_pack_method(codec, py_pack)
    cls._unpack_at = staticmethod(codec.unpack_at)
    cls._c_codec = codec
    cls._py_pack, cls._py_unpack_at = py_pack, staticmethod(py_unpack)  # the reference, for tests
