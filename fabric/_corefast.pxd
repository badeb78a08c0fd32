# The fields of the devices' objects that the compiled data paths read per burst (see _corefast.pyx).

cdef class CountersCore:
    cdef public object pending

cdef class PortCore:
    cdef public object num, state, phys, lid, lmc, pkeys, counters

cdef class QPCore:
    cdef public object qpn, qkey, pkey_index, sent, received

cdef class DeviceCore:
    cdef public dict ports
    cdef public list outbox, events, agents, _traps
    cdef public object drops

cdef class SwitchCore(DeviceCore):
    cdef public object lft, lft_top, _flags, _mtu, _pkeys, _dirty, _dirty_ports

cdef class HCACore(DeviceCore):
    cdef public object rx_accel, user_mad, sm_consumer
    cdef public dict qps, smp_waiting


cdef extern from "Python.h":
    ctypedef struct _TypeWithTag "PyTypeObject":
        unsigned int tp_version_tag
    ctypedef struct _PyObj "PyObject":
        pass
    _PyObj **_PyObject_GetDictPtr(object obj)
    _PyObj *_dict_get "PyDict_GetItemWithError"(object d, object key) except? NULL


cdef inline bint class_unchanged(object cls, unsigned int *tag, dict methods) except -1:
    """Whether ``cls`` still has ``methods`` (name -> the function it had when a compiled path
    took its place): CPython gives a class a new version tag whenever it or a base changes, so
    the check is made again only then. ``tag`` is the caller's, 0 at first."""
    cdef unsigned int now = (<_TypeWithTag *> cls).tp_version_tag
    if now != 0 and now == tag[0]:
        return True
    for name, fn in methods.items():
        if getattr(cls, name) is not fn:
            tag[0] = 0
            return False
    tag[0] = (<_TypeWithTag *> cls).tp_version_tag
    return True


cdef inline bint not_patched(object obj, str name) except -1:
    """No ``name`` in ``obj``'s own dict (a test's spy on one device, say): with class_unchanged,
    whether a compiled path may stand for that method of that object."""
    cdef _PyObj **d = _PyObject_GetDictPtr(obj)
    return d == NULL or d[0] == NULL or _dict_get(<object> d[0], name) == NULL
