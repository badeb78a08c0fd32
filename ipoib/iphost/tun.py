"""A TUN device as the kernel's view of an IPoIB interface: open its queues, set its carrier, address,
MTU and state, read its counters.

The device is an L3 TUN with packet information (``struct tun_pi``: flags and the ethertype before
each packet), so that what the kernel sends is known by protocol (IPv4, IPv6, anything else) before
it is parsed. It is multi-queue (``IFF_MULTI_QUEUE``): one file descriptor per queue, as a NIC
has one ring per queue; the provider's queues own them (the next step reads them from C). The
carrier (``TUNSETCARRIER``) follows the IPoIB carrier, so the kernel sees "NO-CARRIER" until the
broadcast group is joined, as with the kernel's ipoib.

Every call that configures the device must run inside the device's namespace
(:func:`ipoib.iphost.netns.entered`) or use a :class:`IfControl` made there.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

TUNSETIFF = 0x400454CA
TUNSETCARRIER = 0x400454E2
IFF_TUN = 0x0001
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
IFF_NAPI = 0x0010  # what we write is received in NAPI context, in batches, as a NIC's receive ring
VNET_LEN = 10  # struct virtio_net_hdr
IFF_UP = 0x1

SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
SIOCSIFADDR, SIOCSIFBRDADDR, SIOCSIFNETMASK = 0x8916, 0x891A, 0x891C
SIOCGIFMTU, SIOCSIFMTU = 0x8921, 0x8922

PI = struct.Struct("=HH")  # flags (host order), then the ethertype as the kernel gives it (big-endian)
PI_LEN = PI.size
PI_IPV4 = PI.pack(0, socket.htons(0x0800))
ETH_P_IPV4, ETH_P_IPV6 = 0x0800, 0x86DD


def open_queues(ifname: str, queues: int, *, vnet_hdr: bool = False) -> list[int]:
    """Create (or attach to) TUN device ``ifname`` in the current namespace with ``queues`` queues;
    one non-blocking file descriptor per queue. ``vnet_hdr``: every packet comes and goes with a
    virtio_net_hdr after the packet information (offloads; which ones, TUNSETOFFLOAD says)."""
    fds = []
    flags = IFF_TUN | IFF_MULTI_QUEUE | (IFF_VNET_HDR | IFF_NAPI if vnet_hdr else 0)
    try:
        for _ in range(queues):
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            fds.append(fd)
            ifr = struct.pack("16sH22x", ifname.encode(), flags)
            fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def set_carrier(fd: int, on: bool) -> None:
    fcntl.ioctl(fd, TUNSETCARRIER, struct.pack("i", 1 if on else 0))


def _sockaddr_in(addr: bytes) -> bytes:
    return struct.pack("=HH4s8x", socket.AF_INET, 0, addr)


class IfControl:
    """ioctls on one interface, through a socket made inside its namespace (so this object works
    from anywhere once made there)."""

    def __init__(self, ifname: str):
        self.ifname = ifname
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._name = ifname.encode().ljust(16, b"\0")

    def _ifreq(self, cmd: int, data: bytes) -> bytes:
        return fcntl.ioctl(self.sock, cmd, self._name + data.ljust(24, b"\0"))

    def set_address(self, addr: bytes, prefix: int) -> None:
        mask = ((0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF).to_bytes(4, "big")
        bcast = (int.from_bytes(addr, "big") | (~int.from_bytes(mask, "big") & 0xFFFFFFFF)).to_bytes(4, "big")
        self._ifreq(SIOCSIFADDR, _sockaddr_in(addr))
        self._ifreq(SIOCSIFNETMASK, _sockaddr_in(mask))
        if prefix < 31:
            self._ifreq(SIOCSIFBRDADDR, _sockaddr_in(bcast))

    def set_mtu(self, mtu: int) -> None:
        self._ifreq(SIOCSIFMTU, struct.pack("i", mtu))

    def mtu(self) -> int:
        return struct.unpack_from("i", self._ifreq(SIOCGIFMTU, b""), 16)[0]

    def set_up(self, up: bool = True) -> None:
        flags = struct.unpack_from("H", self._ifreq(SIOCGIFFLAGS, b""), 16)[0]
        flags = flags | IFF_UP if up else flags & ~IFF_UP
        self._ifreq(SIOCSIFFLAGS, struct.pack("H", flags))

    def close(self) -> None:
        self.sock.close()


def read_counters(proc_net_dev, ifname: str) -> dict | None:
    """``ip -s link``'s counters of ``ifname`` from an open /proc/net/dev of its namespace."""
    proc_net_dev.seek(0)
    for line in proc_net_dev.read().splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() == ifname:
            v = [int(x) for x in rest.split()]
            return {"rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2], "rx_dropped": v[3],
                    "multicast": v[7], "tx_bytes": v[8], "tx_packets": v[9], "tx_errors": v[10],
                    "tx_dropped": v[11]}
    return None


def read_igmp(proc_net_igmp) -> dict[str, set[bytes]]:
    """``{ifname: {IPv4 group}}`` from an open /proc/net/igmp of a namespace: the groups the
    kernel's sockets joined on each interface (what ``ip maddr`` shows)."""
    proc_net_igmp.seek(0)
    out: dict[str, set[bytes]] = {}
    dev = None
    for line in proc_net_igmp.read().splitlines()[1:]:
        if not line.strip():
            continue
        if not line[0].isspace():  # "2\tib0       :     2      V3"
            dev = line.split()[1] if len(line.split()) > 1 else None
            if dev is not None:
                out.setdefault(dev, set())
            continue
        if dev is None:
            continue
        word = line.split()[0]  # the group, as a host-order (little-endian here) hex u32
        try:
            out[dev].add(struct.pack("=I", int(word, 16)))
        except ValueError:
            continue
    return out
