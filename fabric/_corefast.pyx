"""The devices' hot fields in C structs: the bases of ``PortCounterSet``, ``Port``, ``UDQP``,
``Device``, ``Switch`` and ``HCA`` (``fabric/devices/cores.py`` chooses these or their pure-Python
twins, which have no fields: plain attributes).

The compiled paths (a switch's hop, an HCA's receive and send, the accelerated IPoIB provider)
read these on every burst: a port's states and LID, its counters' pending array, a switch's
forwarding tables, a device's outbox. Through a plain instance each such read is a type lookup
and a dict lookup; cimported from ``_corefast.pxd``, a field here is a pointer load, and its
cache lines are the object's own. Python code sees ordinary attributes (a descriptor each; what
differs, docs/architecture.md: not in ``__dict__``, None when unset, a container field takes only
its type); the fields are declared once, in the .pxd.
"""


cdef class CountersCore:
    pass


cdef class PortCore:
    pass


cdef class QPCore:
    pass


cdef class DeviceCore:
    pass


cdef class SwitchCore(DeviceCore):
    pass


cdef class HCACore(DeviceCore):
    pass


def fields(cls) -> tuple:
    """The names of the fields ``cls`` (one of the classes above) adds to its base's, in the order
    they are declared: what the pure-Python twins list as ``FIELDS`` (a test compares them)."""
    own = [n for n, v in vars(cls).items() if type(v).__name__ == "getset_descriptor" and not n.startswith("__")]
    return tuple(own)
