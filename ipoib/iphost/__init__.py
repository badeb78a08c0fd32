"""IP hosts: what sits above an IPoIB interface, and the small interface between the two.

The ULP (:mod:`ipoib.ulp`) presents each IPoIB interface to an IP host, as the kernel's ipoib
presents a net_device to the IP stack. The boundary, in both directions:

down, host -> ULP (a :class:`LinkDriver`, one per interface, that the ULP hands to the host):
    ``ifname``
    ``xmit(next_hop, packet, now) -> bool``   one IPv4 packet (bytes, or a GsoPacket for
                                              UDP_SEGMENT) for ``next_hop`` on the link; ARP,
                                              paths and multicast joins are the ULP's business
    ``join_group(group, now)``                the host's first member of an IPv4 group on the
    ``leave_group(group, now)``               interface came, or its last went (the ULP joins or
                                              leaves the group's MGID)

up, ULP -> host (a :class:`HostLink` that ``IpHost.attach`` returns):
    ``receive(packet)``                       an IPv4 packet from the link (a GsoPacket: a GRO run)
    ``set_carrier(up)``                       carrier on once the broadcast group is joined
    ``set_mtu(mtu)``                          the broadcast group's MTU minus the IPoIB header
    ``address -> (addr, prefix)``             the interface's IPv4 address (ARP answers for it)
    ``detach()``                              the interface is going away

``IpHost.attach(driver, addr, prefix, mtu) -> HostLink``; ``tick(now)`` and ``next_deadline()`` for
its timers. Two hosts will implement it: the embedded Python stack here (:class:`IpStack`,
sans-IO, no root needed), and the kernel over a TUN device in a network namespace.

The embedded stack, one module per concern: :mod:`.stack` (interfaces, routing, send and receive),
:mod:`.frag` (reassembly), :mod:`.icmp` (ICMP and ping), :mod:`.udp` (sockets), :mod:`.inet`
:mod:`.common` (what they share); the IPv4, ICMP and UDP formats are :mod:`ipoib.inet`.
"""

from __future__ import annotations

from typing import Protocol

from .common import (EPHEMERAL_PORTS, MIN_MTU, REASM_TIMEOUT, RX_DROP_REASONS, RX_ERROR_REASONS,  # noqa: F401
                     TX_DROP_REASONS, TX_ERROR_REASONS, Interface, IpError, UdpError)
from .icmp import PingSession  # noqa: F401
from .stack import IpStack, StackLink  # noqa: F401
from .udp import UdpMessage, UdpSocket  # noqa: F401


class LinkDriver(Protocol):
    ifname: str

    def xmit(self, next_hop: bytes, packet, now: float) -> bool: ...

    def join_group(self, group: bytes, now: float) -> None: ...

    def leave_group(self, group: bytes, now: float) -> None: ...


class HostLink(Protocol):
    def receive(self, packet) -> None: ...

    def set_carrier(self, up: bool) -> None: ...

    def set_mtu(self, mtu: int) -> None: ...

    @property
    def address(self) -> tuple[bytes, int]: ...

    def detach(self) -> None: ...


class IpHost(Protocol):
    def attach(self, driver: LinkDriver, addr, prefix: int, mtu: int) -> HostLink: ...

    def tick(self, now: float) -> None: ...

    def next_deadline(self) -> float | None: ...
