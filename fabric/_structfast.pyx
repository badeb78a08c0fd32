# cython: language_level=3
"""The management structs of :mod:`fabric.wire.fields` packed and parsed in C (``StructCodec``), from
the operations ``fabric/wire/_codegen.py`` derives from each field table. Chosen with the compiled
wire helpers (:mod:`fabric.wire.compiled`); the generated Python stays the reference.
"""

from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.long cimport PyLong_FromUnsignedLongLong, PyLong_CheckExact, PyLong_AsUnsignedLongLong
from cpython.object cimport PyObject
from cpython.list cimport PyList_CheckExact
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_New, PyTuple_SET_ITEM

cdef extern from "Python.h":
    object PyObject_GenericGetDict(object, void *)


cdef inline void _put_be(unsigned char *p, unsigned long long v, int n) noexcept:
    """``v`` as ``n`` big-endian octets at ``p``."""
    cdef int k
    for k in range(n):
        p[k] = <unsigned char> (v >> (8 * (n - 1 - k)))


cdef inline unsigned long long _get_be(const unsigned char *p, int n) noexcept:
    cdef unsigned long long acc = 0
    cdef int k
    for k in range(n):
        acc = (acc << 8) | p[k]
    return acc


cdef inline PyObject *_value(dict d, tuple keys, dict over, PyObject **ov, Py_ssize_t i, object name):
    """Field ``i``'s value for ``_pack`` (borrowed; NULL when missing): by its name in ``d``, or
    mapped by ``keys`` (an override by name first: from ``ov``, the overrides by field index,
    when _pack could place them so, else looked up in ``over``)."""
    cdef PyObject *o
    if keys is None:
        return PyDict_GetItem(d, name)
    if ov != NULL:
        if ov[i] != NULL:
            return ov[i]
    elif over is not None:
        o = PyDict_GetItem(over, name)
        if o != NULL:
            return o
    key = keys[i]
    if type(key) is str:
        return PyDict_GetItem(d, key)
    return <PyObject *> key


cdef class StructCodec:
    """``pack`` and ``_unpack_at`` of one Struct class whose table is unsigned fields (in
    byte-aligned chunks of at most eight octets) and octet strings: the same octets as the Python
    code ``fabric/wire/_codegen.py`` generates from the same table, which stays the reference and
    handles every value this refuses (``pack`` returns None then: a wrong type or a value too wide
    gets the generated code's error). ``ops`` are (name or None for reserved bits, kind 0 uint,
    1 octets or 2 array, offset of its chunk, octets of the chunk (of one element), shift in the
    chunk (the number of elements), width in bits (of one element))."""

    cdef object cls
    cdef object py_unpack
    cdef Py_ssize_t size
    cdef Py_ssize_t n
    cdef list names
    cdef dict index  # field name -> its place in the table, when no name is there twice
    cdef int kinds[128]
    cdef Py_ssize_t offs[128]
    cdef int nbytes[128]
    cdef int shifts[128]
    cdef unsigned long long masks[128]
    cdef bint ends[128]  # the last field of its chunk: the chunk is written after it

    def __init__(self, cls, Py_ssize_t size, ops, py_unpack):
        cdef Py_ssize_t i
        if len(ops) > 128:
            raise ValueError("too many fields for the compiled codec")
        self.cls, self.size, self.n, self.names, self.py_unpack = cls, size, len(ops), [], py_unpack
        for i, (name, kind, off, nb, shift, width) in enumerate(ops):
            if kind != 1 and not (0 < nb <= 8 and 0 < width <= 64):
                raise ValueError("chunk or element wider than 64 bits")
            self.names.append(name)
            self.kinds[i], self.offs[i], self.nbytes[i], self.shifts[i] = kind, off, nb, shift
            self.masks[i] = 0xFFFFFFFFFFFFFFFF if width >= 64 else ((<unsigned long long> 1 << width) - 1)
        named = [nm for nm in self.names if nm is not None]
        self.index = {nm: i for i, nm in enumerate(self.names) if nm is not None} \
            if len(set(named)) == len(named) else None
        for i in range(self.n):
            self.ends[i] = i + 1 == self.n or self.offs[i + 1] != self.offs[i] or self.kinds[i] != 0
            if self.kinds[i] == 2 and self.shifts[i] * self.nbytes[i] + self.offs[i] > size:
                raise ValueError("array beyond the struct")

    cdef object pack_dict(self, dict d):
        """The octets of a struct whose ``__dict__`` is ``d``; None when a value is not an int of
        its width (or the octets of their length)."""
        return self._pack(d, None, None)

    def pack_mapped(self, dict values, tuple keys, dict over):
        """The octets of a struct whose fields come from another object's ``values`` (its
        ``__dict__``): ``keys`` has, per field of the table (in ``names`` order, None for reserved
        bits), the key in ``values`` (a str) or the field's value itself (anything else);
        ``over`` (or None) holds values by field name that take precedence. None as pack_dict."""
        if len(keys) != self.n:
            raise ValueError(f"{len(keys)} keys for {self.n} fields")
        return self._pack(values, keys, over or None)

    def field_names(self):
        """The table's field names in its order, None for reserved bits (what pack_mapped's keys
        follow)."""
        return tuple(self.names)

    cdef object _pack(self, dict d, tuple keys, dict over):
        cdef bytes out = PyBytes_FromStringAndSize(NULL, self.size)
        cdef unsigned char *p = <unsigned char *> PyBytes_AS_STRING(out)
        cdef unsigned long long acc = 0, v
        cdef Py_ssize_t i, j
        cdef PyObject *o
        cdef PyObject *ov_by_index[128]
        cdef PyObject **ov = NULL
        memset(p, 0, self.size)
        if over is not None and keys is not None and self.index is not None:
            # the few overrides placed by field once, rather than looked up for every field
            memset(ov_by_index, 0, self.n * sizeof(PyObject *))
            for name, value in over.items():
                at = self.index.get(name)
                if at is not None:
                    ov_by_index[<Py_ssize_t> at] = <PyObject *> value
            ov = ov_by_index
        for i in range(self.n):
            name = self.names[i]
            if self.kinds[i] == 0:
                if name is not None:
                    o = _value(d, keys, over, ov, i, name)
                    if o == NULL or not PyLong_CheckExact(<object> o):
                        return None
                    try:
                        v = PyLong_AsUnsignedLongLong(<object> o)
                    except OverflowError:
                        return None
                    if v > self.masks[i]:
                        return None
                    acc |= v << self.shifts[i]
                if self.ends[i]:
                    _put_be(p + self.offs[i], acc, self.nbytes[i])
                    acc = 0
            elif self.kinds[i] == 1:
                o = _value(d, keys, over, ov, i, name)
                if o == NULL or not PyBytes_CheckExact(<object> o) or PyBytes_GET_SIZE(<object> o) != self.nbytes[i]:
                    return None
                memcpy(p + self.offs[i], PyBytes_AS_STRING(<object> o), self.nbytes[i])
            else:  # an array: shifts[i] elements of nbytes[i] octets each
                o = _value(d, keys, over, ov, i, name)
                if o == NULL or not (PyTuple_CheckExact(<object> o) or PyList_CheckExact(<object> o)) \
                        or len(<object> o) != self.shifts[i]:
                    return None
                for j, e in enumerate(<object> o):
                    if not PyLong_CheckExact(e):
                        return None
                    try:
                        v = PyLong_AsUnsignedLongLong(e)
                    except OverflowError:
                        return None
                    if v > self.masks[i]:
                        return None
                    _put_be(p + self.offs[i] + j * self.nbytes[i], v, self.nbytes[i])
        return out

    def pack_fields(self, dict d):
        """``pack_dict`` for Python: the octets of a struct with the fields ``d``, or None."""
        return self.pack_dict(d)

    def unpack_at(self, data, Py_ssize_t o):
        """A new instance from ``size`` octets of ``data`` at ``o`` (the generated code's, with
        its error, when they are not there)."""
        cdef const unsigned char[::1] view
        cdef const unsigned char *p
        cdef dict d
        if o < 0 or len(data) < o + self.size:
            return self.py_unpack(data, o)
        if PyBytes_CheckExact(data):
            p = <const unsigned char *> PyBytes_AS_STRING(data) + o
        else:
            view = data
            p = &view[o]
        obj = self.cls.__new__(self.cls)
        d = PyObject_GenericGetDict(obj, NULL)
        cdef unsigned long long acc = 0
        cdef Py_ssize_t i, j, start = -1
        for i in range(self.n):
            name = self.names[i]
            if self.kinds[i] == 0:
                if self.offs[i] != start:
                    start = self.offs[i]
                    acc = _get_be(p + start, self.nbytes[i])
                if name is not None:
                    PyDict_SetItem(d, name, PyLong_FromUnsignedLongLong((acc >> self.shifts[i]) & self.masks[i]))
            elif self.kinds[i] == 1:
                start = -1
                PyDict_SetItem(d, name, PyBytes_FromStringAndSize(<char *> p + self.offs[i], self.nbytes[i]))
            else:
                start = -1
                items = PyTuple_New(self.shifts[i])
                for j in range(self.shifts[i]):
                    e = PyLong_FromUnsignedLongLong(_get_be(p + self.offs[i] + j * self.nbytes[i], self.nbytes[i]))
                    Py_INCREF(e)
                    PyTuple_SET_ITEM(items, j, e)
                PyDict_SetItem(d, name, items)
        return obj


def struct_pack_method(StructCodec codec, py_pack):
    """A ``pack`` method for the codec's class: the C packing, or ``py_pack`` (the generated code,
    with its error) for a value the C one refuses."""
    def pack(self):
        r = codec.pack_dict(PyObject_GenericGetDict(self, NULL))
        return py_pack(self) if r is None else r
    return pack
