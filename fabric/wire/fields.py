"""Declarative field tables for InfiniBand headers and MAD attributes.

Every header is a subclass of :class:`Struct` with a ``FIELDS`` table; the size, the pack and the
parse code are derived from that table. Bit order is the IBA's: big-endian, the first field in the
table occupies the most significant bits of the first byte.

Packing composes one Python int from all fields and emits it with ``int.to_bytes``; this keeps
arbitrary bit widths (5-bit LMC, 20-bit FlowLabel, 11-bit PktLen) exact and simple. The data path
of the accelerated provider does not use this module; it parses headers in Cython.
"""

from __future__ import annotations

from ._codegen import _enc_text
from .errors import ParseError, WireError

__all__ = ["Field", "U", "R", "B", "T", "A", "S", "Struct", "FieldMap"]


class Field:
    """One entry of a field table.

    kind: 'uint' (unsigned integer), 'rsvd' (reserved: zero on pack, ignored on parse),
    'bytes' (fixed-size octet string), 'text' (NUL-padded UTF-8 string), 'array' (``count`` uints of
    ``bits`` each, as a tuple), 'struct' (a nested Struct, byte aligned).
    """

    __slots__ = ("name", "bits", "kind", "count", "default", "sub")

    def __init__(self, name, bits, kind="uint", count=1, default=None, sub=None):
        self.name = name
        self.bits = bits  # bits of one element
        self.kind = kind
        self.count = count
        self.sub = sub
        if default is None:
            default = {
                "uint": 0,
                "rsvd": 0,
                "bytes": bytes(bits // 8),
                "text": "",
                "array": (0,) * count,
                "struct": None,
            }[kind]
        self.default = default

    @property
    def width(self) -> int:
        return self.bits * self.count

    def __repr__(self):
        return f"Field({self.name!r}, {self.bits}, {self.kind!r})"


def U(name: str, bits: int, default: int = 0) -> Field:
    """Unsigned integer field of ``bits`` bits."""
    return Field(name, bits, "uint", default=default)


_rsvd_counter = [0]


def R(bits: int) -> Field:
    """Reserved bits: transmitted as zero, ignored on receive (IBA C4-... 'reserved' rule)."""
    _rsvd_counter[0] += 1
    return Field(f"_rsvd{_rsvd_counter[0]}", bits, "rsvd")


def B(name: str, nbytes: int) -> Field:
    """Fixed-size octet string (GIDs, raw MAD data areas, DR paths)."""
    return Field(name, nbytes * 8, "bytes")


def T(name: str, nbytes: int) -> Field:
    """NUL-padded UTF-8 text of at most ``nbytes`` octets (NodeDescription)."""
    return Field(name, nbytes * 8, "text")


def A(name: str, bits: int, count: int) -> Field:
    """Array of ``count`` unsigned integers of ``bits`` bits each (LFT ports, P_Keys, GUIDs)."""
    return Field(name, bits, "array", count=count)


def S(name: str, struct_cls: type) -> Field:
    """A nested Struct (NodeInfo inside NodeRecord, PortInfo inside PortInfoRecord)."""
    return Field(name, struct_cls.SIZE * 8, "struct", sub=struct_cls)


class Struct:
    """Base of every header and attribute. Subclasses set ``FIELDS``."""

    FIELDS: tuple = ()
    SIZE: int = 0
    _names: tuple = ()

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        total = sum(f.width for f in cls.FIELDS)
        if total % 8:
            raise TypeError(f"{cls.__name__}: field table is {total} bits, not a whole number of octets")
        names = [f.name for f in cls.FIELDS if f.kind != "rsvd"]
        if len(set(names)) != len(names):
            raise TypeError(f"{cls.__name__}: duplicate field names")
        cls.SIZE = total // 8
        cls._names = tuple(names)
        # (field, shift) with the shift of the field's least significant bit in the whole int
        layout = []
        pos = total
        for f in cls.FIELDS:
            pos -= f.width
            layout.append((f, pos))
        cls._layout = tuple(layout)
        cls._defaults = {f.name: f.default for f in cls.FIELDS if f.kind not in ("rsvd", "struct")}
        cls._plain = frozenset(cls._defaults)  # the fields a value is stored in as it is given
        from ._codegen import compile_struct

        cls._compiled = compile_struct(cls)

    def __init__(self, **values):
        for f in self.FIELDS:
            if f.kind == "rsvd":
                continue
            if f.kind == "struct":
                v = values.pop(f.name, None)
                object.__setattr__(self, f.name, v if v is not None else f.sub())
            else:
                v = values.pop(f.name, f.default)
                if f.kind == "array" and isinstance(v, list):
                    v = tuple(v)  # unpack yields tuples; keep equality with round trips
                object.__setattr__(self, f.name, v)
        if values:
            raise TypeError(f"{type(self).__name__}: unknown field(s) {sorted(values)}")

    # -- packing -------------------------------------------------------------------------------

    def to_int(self) -> int:
        acc = 0
        for f, shift in self._layout:
            if f.kind == "rsvd":
                continue
            v = getattr(self, f.name)
            acc |= _encode(self, f, v) << shift
        return acc

    def pack(self) -> bytes:
        # replaced per class by the generated version (see _codegen); this is the reference
        return self.to_int().to_bytes(self.SIZE, "big")

    def __bytes__(self) -> bytes:
        return self.pack()

    @classmethod
    def unpack(cls, data, offset: int = 0):
        """Parse ``SIZE`` octets at ``offset``; extra octets after them are left alone."""
        if cls._compiled:
            return cls._unpack_at(data, offset)
        end = offset + cls.SIZE
        if offset < 0 or len(data) < end:
            raise ParseError(f"{cls.__name__}: need {cls.SIZE} octets at offset {offset}, have {max(0, len(data) - offset)}", kind="truncated")
        return cls.from_int(int.from_bytes(bytes(data[offset:end]), "big"))

    @classmethod
    def from_int(cls, acc: int):
        obj = cls.__new__(cls)
        for f, shift in cls._layout:
            if f.kind == "rsvd":
                continue
            raw = (acc >> shift) & ((1 << f.width) - 1)
            object.__setattr__(obj, f.name, _decode(f, raw))
        return obj

    @classmethod
    def offset_of(cls, name: str) -> int:
        """Where field ``name`` starts in the packed octets (it must start on an octet), from the
        table: for code that patches fields into prebuilt octets."""
        for f, shift in cls._layout:
            if f.name == name:
                start = cls.SIZE * 8 - shift - f.width
                if start % 8:
                    raise TypeError(f"{cls.__name__}.{name} does not start on an octet")
                return start // 8
        raise KeyError(f"{cls.__name__} has no field {name!r}")

    @classmethod
    def pack_fields(cls, fields: dict) -> bytes:
        """``cls(**fields).pack()``, without making the object when the compiled codec packs the
        fields (the rest at their defaults): the SMA packs its answers so."""
        codec = cls.__dict__.get("_c_codec")
        if codec is not None:
            d = cls._defaults.copy()  # a field not given takes its default, as in the constructor
            d.update(fields)
            if len(d) == len(cls._names):  # no name the table lacks
                raw = codec.pack_fields(d)
                if raw is not None:
                    return raw
        return cls(**fields).pack()

    # -- conveniences --------------------------------------------------------------------------

    def replace(self, **values):
        cls = type(self)
        plain = cls._plain
        for k, v in values.items():
            if k not in plain or type(v) is list:
                break  # an unknown name, a nested struct, a list for an array: the constructor's way
        else:  # every value as the constructor keeps it: the copy without the constructor's call
            obj = cls.__new__(cls)
            d = obj.__dict__
            d.update(self.__dict__)
            d.update(values)
            return obj
        d = dict(self.__dict__)
        d.update(values)
        return cls(**d)

    def as_dict(self, nested: bool = True) -> dict:
        out = {}
        for n in self._names:
            v = getattr(self, n)
            if nested and isinstance(v, Struct):
                v = v.as_dict()
            out[n] = v
        return out

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self):
        return hash((type(self), tuple(_hashable(getattr(self, n)) for n in self._names)))

    def __repr__(self):
        parts = []
        for f in self.FIELDS:
            if f.kind == "rsvd":
                continue
            v = getattr(self, f.name)
            if f.kind == "uint" and f.bits > 8:
                parts.append(f"{f.name}=0x{v:x}")
            elif f.kind == "bytes" and len(v) > 16:
                parts.append(f"{f.name}=<{len(v)} octets>")
            else:
                parts.append(f"{f.name}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


class FieldMap:
    """A struct packed from another object's attributes: ``sources`` gives, per field, the name
    of the attribute that holds it (a str) or the value itself (anything else); fields it leaves
    out take their defaults. One table serves the dict (``fields``) and the octets (``pack``),
    which the compiled codec writes straight from the object's ``__dict__`` with no dict of
    fields made in between (a device's SMA answers PortInfo so, thousands of times a sweep)."""

    __slots__ = ("cls", "sources", "_codec", "_keys")

    def __init__(self, cls: type, sources: dict):
        unknown = set(sources) - set(cls._names)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
        self.cls, self.sources = cls, dict(sources)
        self._codec = cls.__dict__.get("_c_codec")
        self._keys = None
        if self._codec is not None:
            defaults = cls._defaults
            self._keys = tuple(None if n is None else self.sources.get(n, defaults[n])
                               for n in self._codec.field_names())

    def fields(self, values: dict, overrides: dict | None = None) -> dict:
        """The fields by name, from ``values`` (the object's ``__dict__``), ``overrides`` on top
        (an overridden field need not be in ``values``: a Port keeps some in its core)."""
        over = overrides or {}
        d = {f: values[k] if type(k) is str else k for f, k in self.sources.items() if f not in over}
        d.update(over)
        return d

    def compiled(self) -> tuple | None:
        """``(codec, keys)``, what ``pack`` hands ``StructCodec.pack_mapped``, for compiled code that
        packs without this method's frame (the SMA's PortInfo); None without the compiled codec."""
        return None if self._codec is None else (self._codec, self._keys)

    def pack(self, values: dict, overrides: dict | None = None) -> bytes:
        """``cls(**self.fields(values, overrides)).pack()``."""
        if self._codec is not None:
            raw = self._codec.pack_mapped(values, self._keys, overrides)
            if raw is not None:
                return raw
        return self.cls.pack_fields(self.fields(values, overrides))


def _hashable(v):
    return v if not isinstance(v, list) else tuple(v)


def _encode(obj, f: Field, v) -> int:
    cls = type(obj).__name__
    if f.kind == "uint":
        if isinstance(v, bool):
            v = int(v)
        if not isinstance(v, int):
            raise WireError(f"{cls}.{f.name}: expected an int, got {type(v).__name__}")
        if v < 0 or v >> f.bits:
            raise WireError(f"{cls}.{f.name}: {v} does not fit in {f.bits} bits")
        return int(v)
    if f.kind == "bytes":
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise WireError(f"{cls}.{f.name}: expected bytes, got {type(v).__name__}")
        n = f.bits // 8
        if len(v) != n:
            raise WireError(f"{cls}.{f.name}: expected {n} octets, got {len(v)}")
        return int.from_bytes(v, "big")
    if f.kind == "text":
        return int.from_bytes(_enc_text(type(obj), f.name, f.bits // 8, v), "big")
    if f.kind == "array":
        if not isinstance(v, (tuple, list)):
            raise WireError(f"{cls}.{f.name}: expected a sequence of {f.count} ints, got {type(v).__name__}")
        if len(v) != f.count:
            raise WireError(f"{cls}.{f.name}: expected {f.count} entries, got {len(v)}")
        acc = 0
        for i, e in enumerate(v):
            if not isinstance(e, int) or e < 0 or e >> f.bits:
                raise WireError(f"{cls}.{f.name}[{i}]: {e!r} does not fit in {f.bits} bits")
            acc = (acc << f.bits) | e
        return acc
    if f.kind == "struct":
        if not isinstance(v, f.sub):
            raise WireError(f"{cls}.{f.name}: expected {f.sub.__name__}, got {type(v).__name__}")
        return v.to_int()
    raise AssertionError(f.kind)


def _decode(f: Field, raw: int):
    if f.kind == "uint":
        return raw
    if f.kind == "bytes":
        return raw.to_bytes(f.bits // 8, "big")
    if f.kind == "text":
        return raw.to_bytes(f.bits // 8, "big").split(b"\0", 1)[0].decode("utf-8", "replace")
    if f.kind == "array":
        mask = (1 << f.bits) - 1
        return tuple((raw >> (f.bits * (f.count - 1 - i))) & mask for i in range(f.count))
    if f.kind == "struct":
        return f.sub.from_int(raw)
    raise AssertionError(f.kind)
