"""The base of ``ipoib.netdev.NetdevContext`` when the extension is built: the fields the
accelerated provider reads on every burst and every poll (its HCA and port, its QP, the
statistics, the slow path's queues, the receive hook, the callbacks into the host) in a C struct,
so that ``_fastpath`` reads each with a pointer load instead of a type lookup and a dict lookup.
Python code (the ULP, the standard provider) sees ordinary attributes. Without the extension
``NetdevContext`` has the pure-Python base in ``ipoib/netdev.py`` (no fields of its own: plain
attributes). The fields are declared once, in the .pxd; ``FIELDS`` in netdev.py names them (a
test compares the two)."""


cdef class ContextCore:
    pass
