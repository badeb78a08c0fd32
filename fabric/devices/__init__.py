"""Emulated devices: switches and HCAs with their SMA and PMA agents (sans-IO)."""

from .base import Device, SmpError  # noqa: F401
from .hca import HCA, UDQP, Completion, send_smp  # noqa: F401
from .port import Port, PortCounterSet  # noqa: F401
from .switch import Switch  # noqa: F401


def make_device(spec):
    """The device model for a topology node."""
    if spec.kind == "switch":
        return Switch(spec)
    if spec.kind == "hca":
        return HCA(spec)
    raise ValueError(f"unknown node kind {spec.kind!r}")
