"""The Linux kernel as a node's IP host: each IPoIB interface is a TUN device in the node's network
namespace, so the kernel's own ping, iperf3, ss and any application run over the fabric.

It implements the IP-host side of the boundary in :mod:`ipoib.iphost` (``attach`` returns a
:class:`KernelLink`, the ``HostLink`` the ULP talks to):

- what the kernel sends on ``ib0`` (one TUN read per packet) goes to the ULP's ``xmit`` with the
  destination as next hop: the namespace routes only its on-link subnet, so the destination is the
  neighbour. ARP, PathRecords and multicast MGIDs are the ULP's, on the wire, as in the kernel's
  ipoib (a TUN device has no link layer: the kernel does no ARP on it);
- what the ULP receives goes to the kernel (one TUN write per packet; a GRO run from the fast
  provider is written datagram by datagram);
- the carrier, MTU and address follow the ULP (``set_carrier``, ``set_mtu``);
- IPv4 multicast memberships follow the kernel's: /proc/net/igmp of the namespace is read again
  when an interface comes up, when its carrier comes on, and whenever the kernel sends an IGMP
  packet (it reports every join and leave at once), and the ULP joins or leaves the group's MGID
  (224.0.0.1 excepted, which every host is in, as with the embedded stack). Nothing polls: an idle
  node costs no wake-ups;
- IPv6 is switched off in the namespace (``disable_ipv6``): an IPv6 packet the kernel sends
  anyway, or any other non-IPv4 packet, is counted and dropped here.

The TUN file descriptors are one per queue of the interface, registered with the device host's
loop (``add_reader``); they belong to the queues, so an accelerated provider can take them over.
"""

from __future__ import annotations

import errno
import logging
import os
import time

from ..gso import GsoPacket, segment
from . import netns, tun
from .common import ALL_HOSTS, _ipstr

log = logging.getLogger(__name__)
READ_BUDGET = 64  # packets read from one TUN queue before the loop looks at its other sockets
MAX_PACKET = 65535 + tun.PI_LEN


class KernelLink:
    """One interface as the kernel sees it: a TUN device with as many queues as the interface's
    provider has TX queues."""

    def __init__(self, host: "KernelHost", driver, addr: bytes, prefix: int, mtu: int):
        self.host = host
        self.driver = driver
        self.ifname = driver.ifname
        self.addr, self.prefix = addr, prefix
        # an accelerated provider reads and writes the queues itself, with offloads (issue 12's
        # "as a vendor driver does"); otherwise this link does it, one packet at a time
        self.accel = bool(getattr(driver, "tun_offloads", lambda: False)())
        with netns.entered(host.netns):
            queues = max(1, getattr(getattr(driver, "params", None), "tx_queues", 1))
            self.fds = tun.open_queues(self.ifname, queues, vnet_hdr=self.accel)
            self.ctl = tun.IfControl(self.ifname)
        self.hdr = tun.PI_IPV4 + (bytes(tun.VNET_LEN) if self.accel else b"")  # before a packet we write
        tun.set_carrier(self.fds[0], False)  # off until the broadcast group is joined
        self.ctl.set_address(addr, prefix)
        self.ctl.set_mtu(mtu)
        self.ctl.set_up()
        if self.ifname == "ib0":
            # IPv4 multicast leaves by ib0: the namespace has no default route for it to follow
            netns.ip_in(host.netns, "route", "add", "224.0.0.0/4", "dev", self.ifname)
        self.groups: set[bytes] = set()  # IPv4 groups the ULP joined for the kernel
        self.stats = {"from_kernel": 0, "to_kernel": 0, "to_kernel_failed": 0}
        self.drops: dict[str, int] = {}
        self.paused: set[int] = set()
        if self.accel and not driver.offload_tun(self.fds, self._slow):
            raise RuntimeError(f"{self.ifname}: the provider offered the TUN queues and then refused them")
        for q in range(len(self.fds)):
            self._watch(q)

    def _watch(self, q: int) -> None:
        fd = self.fds[q]
        reader = getattr(self.driver, "tun_reader", lambda q: None)(q) if self.accel else None
        if reader is not None:  # the provider's own, in C: no Python between the loop and its read
            self.host.add_reader(fd, reader)
        elif self.accel:
            self.host.add_reader(fd, lambda now, q=q: self._readable(q, now))
        else:
            self.host.add_reader(fd, lambda now, fd=fd: self.read(fd, now))

    def queue_state(self, q: int, stopped: bool) -> None:
        """The ULP's TX queue ``q`` stopped (or woke): stop (or resume) reading TUN queue ``q``;
        the kernel's qdisc holds what it has meanwhile, as it does for a NIC's full ring."""
        if q >= len(self.fds) or (q in self.paused) == stopped:
            return
        if stopped:
            self.paused.add(q)
            self.host.remove_reader(self.fds[q])
        else:
            self.paused.discard(q)
            self._watch(q)

    def _readable(self, q: int, now: float) -> None:
        self.driver.tun_readable(q)

    def _slow(self, q: int, proto: int, packet: bytes) -> None:
        """What the provider's C path leaves to the ULP: not IPv4, or no neighbour known yet. It
        comes inside the provider's read, whose caller (the host loop) holds the time: the clock
        is read again here, the node's clock being time.monotonic too."""
        self.stats["from_kernel_slow"] = self.stats.get("from_kernel_slow", 0) + 1
        self._to_ulp(proto, packet, time.monotonic())

    # -- the kernel -> the ULP -----------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def read(self, fd: int, now: float) -> None:
        for _ in range(READ_BUDGET):
            try:
                data = os.read(fd, MAX_PACKET)
            except BlockingIOError:
                return
            except OSError as exc:  # the device went away under us (namespace removed)
                if exc.errno not in (errno.EBADFD, errno.EIO, errno.EBADF):
                    log.warning("%s: read from %s: %s", self.host.netns, self.ifname, exc)
                return
            self.stats["from_kernel"] += 1
            self._from_kernel(data, now)

    def _from_kernel(self, data: bytes, now: float) -> None:
        if len(data) < tun.PI_LEN + 20:
            self._drop("runt")
            return
        self._to_ulp((data[2] << 8) | data[3], data[tun.PI_LEN:], now)

    def _to_ulp(self, proto: int, pkt: bytes, now: float) -> None:
        if proto != tun.ETH_P_IPV4:
            self._drop("ipv6" if proto == tun.ETH_P_IPV6 else f"ethertype_0x{proto:04x}")
            return
        if pkt[0] >> 4 != 4:
            self._drop("not_ipv4")
            return
        if pkt[9] == 2:  # IGMP: the kernel joined or left a group, or answers a query
            self.host.resync_due = now
        self.driver.xmit(pkt[16:20], pkt, now)

    # -- the ULP -> the kernel (HostLink) ------------------------------------------------------

    def receive(self, packet) -> None:
        for pkt in segment(packet) if type(packet) is GsoPacket else (packet,):
            if self.accel:
                # the provider writes this queue from a thread of its own too: its write keeps
                # this frame behind what that thread holds (and counts it with its own writes)
                if not self.driver.tun_write(0, self.hdr + pkt):
                    self._drop("tun_write")
                continue
            try:
                os.write(self.fds[0], self.hdr + pkt)
                self.stats["to_kernel"] += 1
            except OSError:  # the kernel's backlog is full, or the device is going away
                self.stats["to_kernel_failed"] += 1
                self._drop("tun_write")

    def set_carrier(self, up: bool) -> None:
        tun.set_carrier(self.fds[0], up)
        if up:  # what the kernel joined while the carrier was off was never reported on the link
            self.host.resync_due = 0.0

    def set_mtu(self, mtu: int) -> None:
        self.ctl.set_mtu(mtu)

    @property
    def address(self) -> tuple[bytes, int]:
        return self.addr, self.prefix

    def detach(self) -> None:
        if self.accel:
            self.driver.release_tun()  # before the fds close: their numbers may be reused at once
        for fd in self.fds:
            self.host.remove_reader(fd)
            os.close(fd)
        self.fds = []
        self.ctl.close()
        self.host.links.pop(self.ifname, None)

    # -- multicast memberships -----------------------------------------------------------------

    def sync_groups(self, kernel_groups: set[bytes], now: float) -> None:
        want = kernel_groups - {ALL_HOSTS}
        for g in sorted(want - self.groups):
            self.driver.join_group(g, now)
        for g in sorted(self.groups - want):
            self.driver.leave_group(g, now)
        self.groups = want

    def snapshot(self) -> dict:
        kernel = tun.read_counters(self.host.proc_dev, self.ifname) or {}
        link = dict(self.stats)
        if self.accel:  # the provider read and wrote most of it, in C
            st = self.driver.tun_stats()
            link["from_kernel"] += st.get("tun_tx_reads", 0)
            link["to_kernel"] += st.get("tun_rx_written", 0)
            link["to_kernel_failed"] += st.get("tun_rx_write_errors", 0)
        return {"ifname": self.ifname, "addr": f"{_ipstr(self.addr)}/{self.prefix}", "mtu": self.ctl.mtu(),
                "kernel": kernel, "link": link, "drops": dict(sorted(self.drops.items())),
                "groups": sorted(_ipstr(g) for g in self.groups), "offloads": self.accel,
                "paused_queues": sorted(self.paused)}


class KernelHost:
    """The kernel of namespace ``netns_name`` as the IP host of one node's interfaces.
    ``add_reader(fd, fn)``/``remove_reader(fd)``: the device host's loop watches the TUN queues."""

    def __init__(self, netns_name: str, *, add_reader, remove_reader):
        self.netns = netns_name
        self.add_reader, self.remove_reader = add_reader, remove_reader
        self.links: dict[str, KernelLink] = {}
        self.resync_due: float | None = 0.0
        with netns.entered(netns_name):
            # IPv6 off: the ULP carries IPv4 and ARP (see the module docstring)
            for scope in ("all", "default"):
                netns.write_sysctl(f"ipv6/conf/{scope}/disable_ipv6", "1")
            lo = tun.IfControl("lo")
            lo.set_up()
            lo.close()
            # opened inside: these files keep showing this namespace when read from outside it
            self.proc_igmp = open("/proc/thread-self/net/igmp")
            self.proc_dev = open("/proc/thread-self/net/dev")

    def attach(self, driver, addr, prefix: int, mtu: int) -> KernelLink:
        from .common import _addr

        link = KernelLink(self, driver, _addr(addr), int(prefix), int(mtu))
        self.links[link.ifname] = link
        self.resync_due = 0.0
        return link

    def tick(self, now: float) -> None:
        if self.resync_due is not None and now >= self.resync_due:
            self.resync_due = None
            memberships = tun.read_igmp(self.proc_igmp)
            for link in list(self.links.values()):
                link.sync_groups(memberships.get(link.ifname, set()), now)

    def next_deadline(self) -> float | None:
        return self.resync_due

    def stats(self, ifname: str | None = None) -> dict:
        if ifname is not None:
            link = self.links.get(ifname)
            return link.snapshot() if link is not None else {}
        return {"kind": "kernel", "netns": self.netns,
                "interfaces": {n: link.snapshot() for n, link in self.links.items()}}

    def close(self) -> None:
        for link in list(self.links.values()):
            link.detach()
        for f in (self.proc_igmp, self.proc_dev):
            f.close()
