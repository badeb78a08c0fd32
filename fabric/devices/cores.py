"""The bases of the devices' classes that hold the fields the compiled paths read per burst.

When the extension is built these are ``fabric._corefast``'s C structs, under either backend: they
hold data, not code (``FABRIC_BACKEND=std`` still runs every path in Python, and a compiled driver,
the IPoIB fast provider, may then still read a Port or an HCA of the std backend's); without it,
the classes below, which hold nothing of their own (the fields are plain attributes of the
instance, as they always were). ``FIELDS`` names each class's fields as
``fabric/_corefast.pxd`` declares them (a test compares the two).
"""

from __future__ import annotations

try:
    from .. import _corefast as corefast
except ImportError:  # pragma: no cover - depends on the build
    corefast = None

FIELDS = {
    "CountersCore": ("pending",),
    "PortCore": ("num", "state", "phys", "lid", "lmc", "pkeys", "counters"),
    "QPCore": ("qpn", "qkey", "pkey_index", "sent", "received"),
    "DeviceCore": ("ports", "outbox", "events", "agents", "_traps", "drops"),
    "SwitchCore": ("lft", "lft_top", "_flags", "_mtu", "_pkeys", "_dirty", "_dirty_ports"),
    "HCACore": ("rx_accel", "user_mad", "sm_consumer", "qps", "smp_waiting"),
}


class CountersCore:
    __slots__ = ("pending",)  # PortCounterSet has slots: this one is its, in either backend


class PortCore:
    __slots__ = ()


class QPCore:
    __slots__ = ()


class DeviceCore:
    __slots__ = ()


class SwitchCore(DeviceCore):
    __slots__ = ()


class HCACore(DeviceCore):
    __slots__ = ()


if corefast is not None:
    CountersCore = corefast.CountersCore  # noqa: F811
    PortCore = corefast.PortCore  # noqa: F811
    QPCore = corefast.QPCore  # noqa: F811
    DeviceCore = corefast.DeviceCore  # noqa: F811
    SwitchCore = corefast.SwitchCore  # noqa: F811
    HCACore = corefast.HCACore  # noqa: F811
