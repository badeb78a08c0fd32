"""Emulated devices: switches and HCAs with their SMA and PMA agents (sans-IO)."""

from . import training  # noqa: F401
from .base import Device, SmpError  # noqa: F401
from .hca import HCA, UDQP, Completion, send_smp  # noqa: F401
from .port import Port, PortCounterSet  # noqa: F401
from .switch import SWITCH_PORT0_CAPS, Switch  # noqa: F401
from .base import _smafast

if _smafast is not None:  # the SMA's PortInfo Get and Set in C for these classes as they are
    from ..wire import smp_attrs as _sa
    _smafast.register_port_info(HCA, Switch, Port, _sa.PortInfo.FIELDS, SWITCH_PORT0_CAPS)


def make_device(spec):
    """The device model for a topology node."""
    if spec.kind == "switch":
        return Switch(spec)
    if spec.kind == "hca":
        return HCA(spec)
    raise ValueError(f"unknown node kind {spec.kind!r}")


_WIDTH_BITS = {"1x": 1, "4x": 2, "8x": 4, "12x": 8, "2x": 16}
_SPEED_CODES = {"SDR": 1, "DDR": 2, "QDR": 4}


def cable(a_dev, a_port: int, b_dev, b_port: int, link) -> None:
    """Mark both ends cabled, with the link's active width and speed (FDR and faster show as QDR:
    PortInfo's extended speed fields are not modelled)."""
    for dev, num in ((a_dev, a_port), (b_dev, b_port)):
        if dev is None:
            continue
        p = dev.ports[num]
        p.cabled = True
        p.width_active = p.width_enabled = _WIDTH_BITS.get(str(link.width).lower(), 2)
        p.speed_active = _SPEED_CODES.get(str(link.speed).upper(), 4)
