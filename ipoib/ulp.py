"""The IPoIB ULP: the control plane of one interface (``ib0``, or a P_Key child such as ``ib0.8001``).

What it owns, as in drivers/infiniband/ulp/ipoib (the upstream split the seeds describe):

- the link address: 20 octets of flags, QPN and port GID; the broadcast address from the P_Key;
- multicast: the broadcast group is joined first, through the SA; the carrier goes on only once
  that join is done and the port is Active. The MTU is the broadcast group's MTU minus 4, capped by
  the admin MTU. IPv4 groups are mapped to MGIDs (RFC 4391). Sending to a group the interface has
  not joined makes a send-only join, with a bounded queue of frames waiting for it. Joins that fail
  are retried with exponential backoff up to 16 s;
- ARP (hardware type 32) and a neighbour table with garbage collection;
- path resolution by SA PathRecord, with a pending queue per path (bounded in octets, as the kernel's
  neighbour queue) and a timeout, and an AH cache;
- events: port Active, port error or LID change trigger a normal flush; ClientReregister or a new
  SM a light flush, which keeps the carrier (rejoin groups, re-resolve paths); a P_Key change a heavy flush; TX timeout a stop and
  reopen.

The data path is the rdma_netdev provider's (``self.netdev``): ``send(frame, ah, dqpn)`` and
received frames through ``rx_frame``. Above, the interface is a link of an IP host
(:mod:`ipoib.iphost`): it is that host's ``LinkDriver`` (``xmit``, ``join_group``, ``leave_group``)
and talks to it only through the ``HostLink`` it was attached with (``self.host``).

Sans-IO: every entry point takes ``now``; nothing here reads a clock.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field

from fabric import wire as w
from fabric.mad import saclient
from fabric.wire import sa_attrs
from fabric.wire import smp_attrs as sa

from . import encap
from .gso import GsoPacket
from .netdev import BUSY, AddressHandle
from .queues import FrameQueue, Qdisc

ARP_RETRIES = 3
ARP_RETRY_S = 1.0
PATH_AGE_S = 300.0  # a path in use is revalidated with the SA this often
PATH_REVALIDATE_TRIES = 3  # failed revalidations before the old AH is no longer used
NEIGH_STALE_S = 60.0  # an unused neighbour is collected after this long
PATH_TIMEOUT_S = 2.0  # an unanswered PathRecord query
MCAST_QUEUE = 3  # IPOIB_MAX_MCAST_QUEUE
JOIN_BACKOFF_MAX = 16.0
SA_TIMEOUT_S = 1.0
TX_TIMEOUT_S = 5.0  # the netdev watchdog (watchdog_timeo)
GRH_AREA = 40
_IPV4_HDR = encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack()


@dataclass
class Neighbour:
    ip: bytes
    hwaddr: bytes | None = None
    state: str = "INCOMPLETE"  # INCOMPLETE, REACHABLE, FAILED
    pending: FrameQueue = field(default_factory=FrameQueue)
    tries: int = 0
    next_retry: float = 0.0
    used: float = 0.0


@dataclass
class Path:
    dgid: bytes
    ah: AddressHandle | None = None
    mtu: int = 0
    rate: int = 0  # the PathRecord's rate code (IBA 15.2.5.16: 3 = 10 Gb/s, 6 = 30, 7 = 40, ...)
    valid: bool = False
    querying: bool = False
    deadline: float = 0.0
    pending: FrameQueue = field(default_factory=FrameQueue)
    failures: int = 0
    resolved: float = 0.0  # when its PathRecord last came: one older than PATH_AGE_S is asked again
    next_try: float = 0.0  # after a failed revalidation, not before


@dataclass
class McastGroup:
    mgid: bytes
    join_state: int
    state: str = "idle"  # idle, waiting (for the broadcast group), joining, joined, failed
    mlid: int = 0
    qkey: int = 0
    mtu: int = 0
    sl: int = 0
    backoff: float = 1.0
    next_try: float = 0.0
    attached: bool = False
    pending: deque = field(default_factory=lambda: deque(maxlen=MCAST_QUEUE))
    ip: bytes | None = None
    tid: int | None = None  # the join in flight; an answer to an earlier one is stale
    used: float = 0.0  # a send-only membership unused for NEIGH_STALE_S is left (the kernel's GC)

    @property
    def send_only(self) -> bool:
        return not self.join_state & (w.JOIN_FULL_MEMBER | w.JOIN_NON_MEMBER)


class IPoIBInterface:
    def __init__(self, node, ifname: str, pkey: int, netdev, *, admin_mtu: int | None = None):
        self.node = node
        self.ifname = ifname
        self.pkey = pkey | w.PKEY_FULL_BIT
        self.netdev = netdev
        self.params = netdev.get_params()  # rdma_netdev_get_params, before any other op
        self.admin_mtu = admin_mtu
        self.qpn = 0
        self.up = False  # administratively up (ip link set up)
        self.carrier = False
        self.mtu = 0
        self.bcast_mgid = w.ipoib_broadcast_mgid(self.pkey)
        self.groups: dict[bytes, McastGroup] = {}
        self.neigh: dict[bytes, Neighbour] = {}
        self.paths: dict[bytes, Path] = {}
        self.host = None  # the HostLink of the IP host this interface is a link of
        self.tun_fast = False  # the provider serves the kernel's TUN queues itself (attach_tun)
        self.published: dict[bytes, tuple] = {}  # neighbours the provider's C path knows
        self._bcast_of, self._bcast = None, None
        self.queue_stopped = False  # every TX queue stopped: frames are dropped here
        self.stopped_queues: dict = {}  # TX queue -> since when it is stopped
        self.qdisc = Qdisc()  # what a stopped TX queue refused, until it wakes
        self.stopped_since = 0.0
        # the earliest timer, or earlier: every place that sets a timer lowers it (_arm), tick()
        # recomputes it exactly when it passes. The host asks for it several times per loop pass,
        # so it must not cost a walk over every neighbour.
        self._due: float | None = None
        self.stats = dict(rx_packets=0, rx_bytes=0, rx_errors=0, rx_dropped=0, tx_packets=0, tx_bytes=0,
                          tx_errors=0, tx_dropped=0, tx_queued=0, multicast=0, tx_multicast=0, arp_requests=0, arp_replies=0,
                          path_queries=0, joins=0, join_failures=0, flushes_light=0, flushes_normal=0,
                          flushes_heavy=0, tx_busy=0)
        self.drops: dict[str, int] = {}

    # -- helpers -------------------------------------------------------------------------------

    @property
    def port(self):
        return self.node.hca.ports[self.node.port]

    @property
    def gid(self) -> bytes:
        return self.node.hca.gid(self.node.port)

    @property
    def hwaddr(self) -> bytes:
        return encap.hwaddr(self.qpn, self.gid)

    @property
    def ip(self) -> tuple[bytes, int] | None:
        """The interface's IPv4 address and prefix, as its IP host has them (ARP answers for it)."""
        return self.host.address if self.host is not None else None

    @property
    def broadcast(self) -> bytes:
        return encap.hwaddr(w.QPN_MULTICAST, self.bcast_mgid)

    def _drop(self, reason: str, counter: str = "rx_dropped", n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n
        self.stats[counter] += n

    def pkey_index(self) -> int | None:
        return self.port.pkey_index(self.pkey)

    # -- open / stop ---------------------------------------------------------------------------

    def open(self, now: float) -> None:
        """ip link set up: hardware init and open, then the broadcast join (control plane)."""
        self.qpn = self.netdev.init()
        idx = self.pkey_index()
        if idx is not None:
            self.netdev.set_id(idx)
        self.netdev.open()
        self.stopped_queues.clear()  # netif_tx_start_all_queues
        self.queue_stopped = False
        self.up = True
        self.join(self.bcast_mgid, w.JOIN_FULL_MEMBER, now)
        self._update_carrier(now)

    def stop(self, now: float) -> None:
        self._unpublish()
        for g in list(self.groups.values()):
            self._leave(g, now)
        self.groups.clear()
        self.netdev.stop()
        self._reset_backlog()
        self.up = False
        self._set_carrier(False)

    def _update_carrier(self, now: float) -> None:
        g = self.groups.get(self.bcast_mgid)
        ok = (self.up and self.port.state == sa.PORT_ACTIVE and g is not None and g.state == "joined"
              and self.pkey_index() is not None)
        self._set_carrier(ok)

    def _set_carrier(self, on: bool) -> None:
        if on == self.carrier:
            return
        self.carrier = on
        if self.host is not None:
            self.host.set_carrier(on)

    # -- multicast -----------------------------------------------------------------------------

    def join(self, mgid: bytes, join_state: int, now: float, ip: bytes | None = None) -> McastGroup:
        g = self.groups.get(mgid)
        if g is None:
            g = self.groups[mgid] = McastGroup(mgid, join_state, ip=ip, used=now)
        elif g.join_state & join_state == join_state and g.state in ("joined", "joining", "waiting"):
            return g
        else:
            g.join_state |= join_state
        self._send_join(g, now)
        return g

    def _send_join(self, g: McastGroup, now: float) -> None:
        g.tid = None  # whatever join was in flight is superseded: its answer will be stale
        if self.port.state != sa.PORT_ACTIVE or not self.port.sm_lid:
            g.state, g.next_try = "failed", now + g.backoff  # retried once the port is up
            self._arm(g.next_try)
            return
        bcast = self.groups.get(self.bcast_mgid)
        if g.mgid != self.bcast_mgid and (bcast is None or bcast.state != "joined"):
            # the broadcast group first (its parameters are the ones a new group copies), then the
            # others, as the kernel's join task does; _join_done of the broadcast group sends these
            g.state = "waiting"
            return
        g.state = "joining"
        if g.mgid == self.bcast_mgid:
            tid, mad = saclient.mcmember_join(g.mgid, self.gid, g.join_state)
        else:
            # a group we may create: copy the broadcast group's parameters, as the kernel does
            tid, mad = saclient.mcmember_join(g.mgid, self.gid, g.join_state, qkey=bcast.qkey, pkey=self.pkey,
                                              sl=bcast.sl, flow_label=0, tclass=0, mtu=(2, bcast.mtu),
                                              create=True)
        self.stats["joins"] += 1
        g.tid = tid
        self.node.sa_query(tid, mad, lambda resp, now, g=g, tid=tid: self._join_done(g, resp, now, tid), now)

    def _join_done(self, g: McastGroup, resp, now: float, tid: int | None = None) -> None:
        if self.groups.get(g.mgid) is not g:
            return  # left meanwhile
        if tid is not None and tid != g.tid:
            return  # a newer join (a flush) superseded this one: its answer, or timeout, is stale
        g.tid = None
        if resp is None or not resp.ok or not resp.records:
            self.stats["join_failures"] += 1
            if not g.join_state & (w.JOIN_FULL_MEMBER | w.JOIN_NON_MEMBER) and g.mgid != self.bcast_mgid:
                # a send-only join is not retried: its queued frames are dropped, and the next
                # frame for the group tries again (the kernel's ipoib_mcast_join_complete)
                for _ in g.pending:
                    self._drop("mcast_join_failed", "tx_dropped")
                g.pending.clear()
                g.state, g.backoff = "idle", 1.0
                return
            g.state = "failed"
            g.next_try = now + g.backoff
            self._arm(g.next_try)
            g.backoff = min(g.backoff * 2, JOIN_BACKOFF_MAX)
            return
        rec = resp.records[0]
        if g.attached and g.mlid != rec.mlid:  # a rejoin (light flush) that moved the group
            self.netdev.detach_mcast(g.mgid, g.mlid)
            g.attached = False
        g.mlid, g.qkey, g.mtu, g.sl = rec.mlid, rec.qkey, rec.mtu, rec.sl
        g.state = "joined"
        g.backoff = 1.0
        is_bcast = g.mgid == self.bcast_mgid
        if not g.attached and (g.join_state & (w.JOIN_FULL_MEMBER | w.JOIN_NON_MEMBER) or is_bcast):
            self.netdev.attach_mcast(g.mgid, g.mlid, is_bcast, g.qkey)
            g.attached = True
        if is_bcast:
            mtu = sa.MTU_BYTES.get(g.mtu, 2048) - encap.IPOIB_HDR_LEN
            self.mtu = min(mtu, self.admin_mtu) if self.admin_mtu else mtu
            if self.host is not None:
                self.host.set_mtu(self.mtu)
            if self.tun_fast:
                self.netdev.set_tun_mtu(self.mtu)
            self._update_carrier(now)
            for other in list(self.groups.values()):
                if other.state == "waiting":
                    self._send_join(other, now)
        while g.pending:
            frame = g.pending.popleft()
            self.stats["tx_multicast"] += 1
            self._send_frame(frame, self._mcast_ah(g), w.QPN_MULTICAST)

    def _leave(self, g: McastGroup, now: float) -> None:
        if g.attached:
            self.netdev.detach_mcast(g.mgid, g.mlid)
            g.attached = False
        if g.state == "joined" and self.port.sm_lid:
            tid, mad = saclient.mcmember_leave(g.mgid, self.gid, g.join_state)
            self.node.sa_query(tid, mad, lambda resp, now: None, now)
        g.state = "idle"

    def leave(self, mgid: bytes, now: float) -> None:
        g = self.groups.pop(mgid, None)
        if g is not None:
            self._leave(g, now)

    def _mcast_ah(self, g: McastGroup) -> AddressHandle:
        return AddressHandle(dlid=g.mlid, sl=g.sl, dgid=g.mgid)

    def ip_mgid(self, group: bytes) -> bytes:
        return encap.ipv4_mcast_mgid(group, self.pkey)

    # -- the IP host's side (LinkDriver) -------------------------------------------------------

    def join_group(self, group: bytes, now: float) -> None:
        """The IP host's first member of an IPv4 group on this interface: join its MGID."""
        self.join(self.ip_mgid(group), w.JOIN_FULL_MEMBER, now, ip=group)

    def leave_group(self, group: bytes, now: float) -> None:
        self.leave(self.ip_mgid(group), now)

    # -- transmit ------------------------------------------------------------------------------

    def xmit(self, next_hop: bytes, packet: bytes, now: float) -> bool:
        """From the IP host: one IPv4 packet for ``next_hop``."""
        if not self.carrier:
            self._drop("no_carrier", "tx_dropped")
            return False
        if type(packet) is GsoPacket:  # UDP_SEGMENT: each segment must fit, the whole need not
            frame = packet.with_header(_IPV4_HDR)
            if 28 + packet.gso_size > self.mtu:
                self._drop("over_mtu", "tx_dropped")
                return False
        else:
            frame = _IPV4_HDR + packet
            if len(packet) > self.mtu:
                self._drop("over_mtu", "tx_dropped")
                return False
        if next_hop[0] & 0xF0 == 0xE0:  # IPv4 multicast
            return self._xmit_mcast(self.ip_mgid(next_hop), frame, now, ip=next_hop)
        if next_hop == b"\xff\xff\xff\xff" or self._is_subnet_broadcast(next_hop):
            return self._xmit_mcast(self.bcast_mgid, frame, now)
        n = self.neigh.get(next_hop)
        if n is None:
            n = self.neigh[next_hop] = Neighbour(next_hop)
            self._arm(now + NEIGH_STALE_S)
        n.used = now
        if n.state == "REACHABLE" and self.tun_fast:
            return self._xmit_unicast(n.hwaddr, frame, now, publish=next_hop)
        if n.state != "REACHABLE":
            if n.state == "FAILED" and now < n.next_retry:
                self._drop("neigh_failed", "tx_dropped")
                return False
            for _ in range(n.pending.offer(frame, len(frame))):
                self._drop("neigh_queue_full", "tx_dropped")
            if n.state != "INCOMPLETE" or n.tries == 0:
                n.state, n.tries = "INCOMPLETE", 0
                self._arp_request(n, now)
            return True
        return self._xmit_unicast(n.hwaddr, frame, now)

    def _is_subnet_broadcast(self, ip: bytes) -> bool:
        if self.ip is None:
            return False
        if self._bcast_of != self.ip:  # per packet: computed once per address, not per call
            addr, prefix = self.ip
            self._bcast = (int.from_bytes(addr, "big") | ((1 << (32 - prefix)) - 1)).to_bytes(4, "big")
            self._bcast_of = self.ip
        return ip == self._bcast

    def _xmit_mcast(self, mgid: bytes, frame: bytes, now: float, ip: bytes | None = None) -> bool:
        g = self.groups.get(mgid)
        if g is None:
            # SendOnlyFullMember, as the kernel: it may create the group, so sending to a group
            # that has no member yet works (the frames go nowhere until one joins)
            g = self.join(mgid, w.JOIN_SENDONLY_FULL_MEMBER, now, ip=ip)
            self._arm(now + NEIGH_STALE_S)
        g.used = now
        if g.state != "joined":
            if len(g.pending) == g.pending.maxlen:
                self._drop("mcast_queue_full", "tx_dropped")
            g.pending.append(frame)
            if g.state == "idle":  # a send-only join that failed: this frame tries again
                self._send_join(g, now)
            return True
        self.stats["tx_multicast"] += 1  # ip -s link's "multicast" counts received ones only
        return self._send_frame(frame, self._mcast_ah(g), w.QPN_MULTICAST)

    def _xmit_unicast(self, hwaddr: bytes, frame: bytes, now: float, publish: bytes | None = None) -> bool:
        qpn, dgid = encap.split_hwaddr(hwaddr)
        p = self.paths.get(dgid)
        if p is None:
            p = self.paths[dgid] = Path(dgid)
        if p.ah is not None and (not p.valid or now - p.resolved > PATH_AGE_S) and not p.querying \
                and now >= p.next_try:
            # revalidate a path in use, invalidated by a flush (a new SM) or aged: the frames keep
            # going by the AH we have until the answer replaces it, as the kernel's neighbours do
            self._path_query(p, now)
        if p.ah is not None:
            if publish is not None and p.valid and self.published.get(publish) != (p.ah, qpn):
                # the neighbour and its path are known: the provider's C path sends to it from now on
                self.netdev.set_neigh(publish, p.ah, qpn)
                self.published[publish] = (p.ah, qpn)
            return self._send_frame(frame, p.ah, qpn)
        for _ in range(p.pending.offer((frame, qpn), len(frame))):
            self._drop("path_queue_full", "tx_dropped")
        if not p.querying:
            self._path_query(p, now)
        return True

    def _send_frame(self, frame: bytes, ah: AddressHandle, dqpn: int) -> bool:
        segs = frame.segments if type(frame) is GsoPacket else 1  # a GSO packet counts its datagrams
        if self.qdisc.length or self.queue_stopped:
            q = self.netdev.select_queue(frame)
            if self.queue_stopped or self.qdisc.holds(q):  # behind what waits there: order kept
                return self._enqueue(q, frame, ah, dqpn, segs)
        rc = self.netdev.send(frame, ah, dqpn)
        if rc == BUSY:
            self.stats["tx_busy"] += 1
            return self._enqueue(self.netdev.select_queue(frame), frame, ah, dqpn, segs)
        return self._count_tx(frame, segs)

    # -- the qdisc: what a stopped TX queue cannot take waits, up to txqueuelen frames per queue,
    # and goes when the queue wakes (the kernel's qdisc in front of ipoib's ib0, qlen 1000)

    def _enqueue(self, q: int, frame, ah, dqpn: int, segs: int) -> bool:
        if not self.qdisc.hold(q, (frame, ah, dqpn, segs)):
            self._drop("qdisc_full", "tx_dropped", segs)
            return False
        self.stats["tx_queued"] += 1
        if q not in self.stopped_queues:  # refused without a stop: try again on the next pass
            self.qdisc.wake((q,))
            self._arm(0.0)
        return True

    def _run_backlog(self) -> None:
        for q in self.qdisc.take_woken():
            while q not in self.stopped_queues and (item := self.qdisc.head(q)) is not None:
                frame, ah, dqpn, segs = item
                if self.netdev.send(frame, ah, dqpn) == BUSY:
                    self.stats["tx_busy"] += 1
                    break
                self.qdisc.pop(q)
                self._count_tx(frame, segs)

    def _reset_backlog(self) -> None:
        """The device went down: what waited is dropped and counted (qdisc_reset)."""
        for *_, segs in self.qdisc.reset():
            self._drop("qdisc_reset", "tx_dropped", segs)

    def _count_tx(self, frame, segs: int) -> bool:
        if segs > 1 or type(frame) is GsoPacket:
            self.stats["tx_packets"] += segs
            self.stats["tx_bytes"] += frame.wire_len
            return True
        self.stats["tx_packets"] += 1
        self.stats["tx_bytes"] += len(frame)
        return True

    # -- paths ---------------------------------------------------------------------------------

    def _path_query(self, p: Path, now: float) -> None:
        if not self.port.sm_lid:
            for _ in range(len(p.pending)):
                self._drop("path_unresolved", "tx_dropped")
            p.pending.clear()
            return
        p.querying = True
        p.deadline = now + PATH_TIMEOUT_S
        self._arm(p.deadline)
        self.stats["path_queries"] += 1
        tid, mad = saclient.path_record_query(self.gid, p.dgid, pkey=self.pkey, numb_path=1, reversible=True)
        self.node.sa_query(tid, mad, lambda resp, now, p=p: self._path_done(p, resp, now), now)

    def _path_done(self, p: Path, resp, now: float) -> None:
        p.querying = False
        if self.paths.get(p.dgid) is not p:
            return
        if resp is None or not resp.ok or not resp.records:
            p.failures += 1
            for _ in range(len(p.pending)):
                self._drop("path_unresolved", "tx_dropped")
            p.pending.clear()
            if p.ah is not None:
                # a revalidation that failed: ask again later, and after a few failures stop using
                # the old AH (the next frame resolves the path afresh)
                p.valid = False
                p.next_try = now + min(2.0 ** p.failures, 60.0)
                if p.failures >= PATH_REVALIDATE_TRIES:
                    p.ah = None
                    self._unpublish()
            return
        p.failures = 0
        rec = resp.records[0]
        ah = AddressHandle(dlid=rec.dlid, sl=rec.sl)
        if p.ah is not None and p.ah != ah:
            self._unpublish()  # the C path must not keep the old route
        p.ah = ah
        p.mtu = rec.mtu
        p.rate = rec.rate
        p.valid = True
        p.resolved = now
        while p.pending:
            frame, qpn = p.pending.popleft()
            self._send_frame(frame, p.ah, qpn)

    # -- ARP -----------------------------------------------------------------------------------

    def _arp_request(self, n: Neighbour, now: float) -> None:
        if self.ip is None:
            return
        n.tries += 1
        n.next_retry = now + ARP_RETRY_S
        self._arm(n.next_retry)
        arp = encap.IPoIBArp(oper=encap.ARP_REQUEST, sha=self.hwaddr, spa=self.ip[0], tha=bytes(20), tpa=n.ip)
        self.stats["arp_requests"] += 1
        frame = encap.IPoIBHeader(ethertype=encap.ETHERTYPE_ARP).pack() + arp.pack()
        self._xmit_mcast(self.bcast_mgid, frame, now)

    def _arp_input(self, data: bytes, now: float) -> None:
        try:
            a = encap.parse_arp(data)
        except w.ParseError as exc:
            self._drop("arp_" + exc.kind, "rx_errors")
            return
        if a.spa == bytes(4):
            return  # ARP probe: nothing to learn
        ours = self.ip is not None and a.tpa == self.ip[0]
        n = self.neigh.get(a.spa)
        if n is not None or ours:
            # learn the sender, as Linux does for requests aimed at us and for replies
            if n is None:
                n = self.neigh[a.spa] = Neighbour(a.spa)
                self._arm(now + NEIGH_STALE_S)
            elif n.hwaddr is not None and n.hwaddr != a.sha and a.spa in self.published:
                self._unpublish()  # it moved (another QPN or GID): the C path must ask again
            n.hwaddr, n.state, n.used = a.sha, "REACHABLE", now
            while n.pending:
                self._xmit_unicast(n.hwaddr, n.pending.popleft(), now)
        if a.oper == encap.ARP_REQUEST and ours:
            rep = encap.IPoIBArp(oper=encap.ARP_REPLY, sha=self.hwaddr, spa=self.ip[0], tha=a.sha, tpa=a.spa)
            self.stats["arp_replies"] += 1
            frame = encap.IPoIBHeader(ethertype=encap.ETHERTYPE_ARP).pack() + rep.pack()
            self._xmit_unicast(a.sha, frame, now)

    # -- receive -------------------------------------------------------------------------------

    def rx_frame(self, buf: bytes, info, now: float) -> None:
        """netif_receive_skb: a frame from the provider, after the 40-octet GRH area."""
        if len(buf) < GRH_AREA + encap.IPOIB_HDR_LEN:
            self._drop("runt", "rx_errors")
            return
        if type(buf) is GsoPacket:  # a run of UDP datagrams the provider coalesced (GRO)
            frame = GsoPacket(buf[GRH_AREA:], buf.gso_size, buf.l3 - GRH_AREA)
            self.stats["rx_packets"] += frame.segments
            self.stats["rx_bytes"] += frame.wire_len
            self.host.receive(GsoPacket(frame[encap.IPOIB_HDR_LEN:], frame.gso_size, 0))
            return
        frame = buf[GRH_AREA:]
        try:
            hdr = encap.IPoIBHeader.unpack(frame)
        except w.ParseError:
            self._drop("bad_header", "rx_errors")
            return
        self.stats["rx_packets"] += 1
        self.stats["rx_bytes"] += len(frame)
        if info.dgid is not None and info.dgid[0] == 0xFF:
            self.stats["multicast"] += 1
        body = frame[encap.IPOIB_HDR_LEN:]
        if hdr.ethertype == encap.ETHERTYPE_IPV4:
            self.host.receive(body)
        elif hdr.ethertype == encap.ETHERTYPE_ARP:
            self._arp_input(body, now)
        else:
            self._drop(f"ethertype_0x{hdr.ethertype:04x}")

    # -- events --------------------------------------------------------------------------------

    def flush(self, level: str, now: float) -> None:
        """light: rejoin groups, re-resolve paths; normal: also re-evaluate the carrier;
        heavy: stop and reopen the device (new P_Key index), then rejoin everything."""
        self.stats[f"flushes_{level}"] += 1
        self._unpublish()
        for p in self.paths.values():
            p.valid = False
        if level == "heavy":
            groups = [(g.mgid, g.join_state, g.ip) for g in self.groups.values()]
            self.stop(now)
            if self.pkey_index() is None:
                return  # our P_Key left the table: stay down
            self.open(now)
            for mgid, js, ip in groups:
                if mgid != self.bcast_mgid:
                    self.join(mgid, js, now, ip=ip)
            return
        for g in list(self.groups.values()):
            if g.attached and level != "light":
                self.netdev.detach_mcast(g.mgid, g.mlid)
                g.attached = False
            g.backoff = 1.0
            self._send_join(g, now)
        if level != "light":
            self._update_carrier(now)

    # -- the kernel's TUN queues (the LinkDriver's optional part, ipoib.iphost.kernel) ---------------

    def tun_offloads(self) -> bool:
        """Will the provider serve the kernel's TUN queues itself (with virtio_net_hdr offloads)?"""
        return bool(self.netdev.tun_offloads())

    def offload_tun(self, fds, slow) -> bool:
        """Hand the TUN queues to the provider; ``slow(q, ethertype, packet)`` gets what its C path
        leaves to the ULP (the IP host passes it on to ``xmit``)."""
        self.tun_fast = bool(self.netdev.attach_tun(list(fds), self.mtu, slow))
        return self.tun_fast

    def release_tun(self) -> None:
        if self.tun_fast:
            self.netdev.detach_tun()
            self.tun_fast = False
            self.published.clear()

    def tun_readable(self, queue: int) -> int:
        return self.netdev.tun_read(queue)

    def tun_reader(self, queue: int):
        """The provider's own reader of TUN queue ``queue`` for the host loop, or None."""
        return self.netdev.tun_reader(queue)

    def tun_write(self, queue: int, data: bytes) -> bool:
        return bool(self.netdev.tun_write(queue, data))

    def tun_stats(self) -> dict:
        return {k: v for k, v in self.netdev.queue_stats().items() if k.startswith("tun_")} if self.tun_fast else {}

    def _unpublish(self) -> None:
        if self.published:
            self.netdev.flush_neigh()
            self.published.clear()

    def queue_stop(self, queue: int, now: float) -> None:
        """netif_tx_stop_queue, from the provider, for one TX queue. The interface stops handing
        out frames only when every queue is stopped; a frame for a stopped queue among running
        ones is the provider's to refuse (BUSY), since only it knows which queue a frame takes."""
        self.stopped_queues.setdefault(queue, now)
        self.stopped_since = min(self.stopped_queues.values())  # the watchdog: the longest stopped
        self._arm(self.stopped_since + TX_TIMEOUT_S)
        self.queue_stopped = len(self.stopped_queues) >= max(1, self.params.tx_queues)
        hook = getattr(self.host, "queue_state", None)
        if hook is not None:
            hook(queue, True)  # the IP host holds its packets (a TUN device stops being read)

    def queue_wake(self, queue: int) -> None:
        hook = getattr(self.host, "queue_state", None)
        if hook is not None:
            hook(queue, False)
        self.stopped_queues.pop(queue, None)
        self.queue_stopped = False
        if self.stopped_queues:
            self.stopped_since = min(self.stopped_queues.values())
        # the qdisc runs on the next pass (not inside the poll), every backlog whose queue runs: a
        # frame the provider left to the standard path waits on the queue its hash names but
        # is refused by another (the standard send queue), whose wake is this one
        if self.qdisc.wake([q for q in self.qdisc.backlog if q not in self.stopped_queues]):
            self._arm(0.0)

    def tx_timeout(self, now: float) -> None:
        """The TX queue made no progress for TX_TIMEOUT_S (the netdev watchdog): the provider's
        tx_timeout op, then stop and reopen the device, keeping the control plane's state."""
        self.stats["tx_timeouts"] = self.stats.get("tx_timeouts", 0) + 1
        for q in sorted(self.stopped_queues) or [0]:
            self.netdev.tx_timeout(q)
        self.netdev.stop()
        self.netdev.open()
        self.stopped_queues.clear()
        self.queue_stopped = False
        self.qdisc.wake(list(self.qdisc.backlog))  # the queues run again

    # -- timers --------------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        if self._due is None or when < self._due:
            self._due = when

    def tick(self, now: float) -> None:
        if self._due is None or now < self._due:
            return  # no timer has passed
        self._tick(now)
        self._due = self._next_timer()

    def _tick(self, now: float) -> None:
        if self.qdisc.woken:
            self._run_backlog()
        if self.stopped_queues and now - self.stopped_since >= TX_TIMEOUT_S:
            self.tx_timeout(now)
        for g in list(self.groups.values()):
            if g.state == "failed" and now >= g.next_try:
                self._send_join(g, now)
            elif g.state in ("joined", "idle") and g.send_only and g.mgid != self.bcast_mgid \
                    and now - g.used > NEIGH_STALE_S:
                self.leave(g.mgid, now)  # nobody here sends to it any more
        for ip, n in list(self.neigh.items()):
            if n.state == "INCOMPLETE" and now >= n.next_retry:
                if n.tries >= ARP_RETRIES:
                    for _ in range(len(n.pending)):
                        self._drop("arp_timeout", "tx_dropped")
                    n.pending.clear()
                    n.state, n.next_retry = "FAILED", now + ARP_RETRY_S
                else:
                    self._arp_request(n, now)
            elif n.state != "INCOMPLETE" and now - n.used > NEIGH_STALE_S:
                if ip in self.published:
                    # the C path may have used it all along without telling us: ask it once, by
                    # letting the next frame to it take the slow path, which publishes it again
                    self._unpublish()
                    n.used = now
                    continue
                del self.neigh[ip]  # garbage collection of unused neighbours
        for p in self.paths.values():
            if p.querying and now >= p.deadline:
                self._path_done(p, None, now)

    def next_deadline(self):
        return self._due

    def _next_timer(self):
        c = [g.next_try for g in self.groups.values() if g.state == "failed"]
        c += [g.used + NEIGH_STALE_S for g in self.groups.values() if g.send_only and g.state in ("joined", "idle")]
        if self.qdisc.woken:
            c.append(0.0)
        c += [n.next_retry for n in self.neigh.values() if n.state == "INCOMPLETE"]
        c += [n.used + NEIGH_STALE_S for n in self.neigh.values() if n.state != "INCOMPLETE"]
        c += [p.deadline for p in self.paths.values() if p.querying]
        if self.stopped_queues:
            c.append(self.stopped_since + TX_TIMEOUT_S)
        return min(c, default=None)

    # -- inspection (like debugfs _path and _mcg, ip neigh) -----------------------------------

    def snapshot(self) -> dict:
        def ip_str(b):
            return str(ipaddress.IPv4Address(b))

        queues, coalesce = self.netdev.queue_stats(), self.netdev.get_coalesce()  # ethtool -S, -c
        features = self.netdev.get_features()  # ethtool -k
        return {
            "ifname": self.ifname, "pkey": self.pkey, "qpn": self.qpn, "hwaddr": self.hwaddr.hex(":"),
            "carrier": self.carrier, "mtu": self.mtu,
            "addr": f"{ip_str(self.ip[0])}/{self.ip[1]}" if self.ip else None,
            "neigh": [{"ip": ip_str(n.ip), "lladdr": n.hwaddr.hex(":") if n.hwaddr else None, "state": n.state}
                      for n in self.neigh.values()],
            "paths": [{"dgid": w.fmt_gid(p.dgid), "dlid": p.ah.dlid if p.ah else 0, "sl": p.ah.sl if p.ah else 0,
                       "valid": p.valid, "rate_gbps": sa_attrs.RATE_GBPS.get(p.rate, 0), "mtu": sa.MTU_BYTES.get(p.mtu, 0),
                       "pending": len(p.pending)} for p in self.paths.values()],
            "mcg": [{"mgid": w.fmt_gid(g.mgid), "mlid": g.mlid, "state": g.state, "join_state": g.join_state,
                     "qkey": g.qkey} for g in self.groups.values()],
            "stats": dict(self.stats), "drops": dict(self.drops),
            "netdev": dict(getattr(self.netdev.standard.ctx, "stats", None) or {}),
            "served_by": dict(self.netdev.served_by),
            "queues": queues,
            "coalesce": coalesce,
            "features": features,
        }
