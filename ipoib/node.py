"""An IPoIB node: the ULP interfaces on an HCA, and the IP host above them.

Sans-IO like the devices: what it sends, the HCA sends (``post_send``, ``post_segment``) and queues
in ``hca.outbox``, which only the device host (or LoopNet) empties. It is an agent of the HCA, so
its timers run from the host loop, and it gets the HCA's events (port state, LID change,
ClientReregister, P_Key change) through ``on_event``. It is the glue that reads the clock it was
given, once per entry point, and hands ``now`` to the ULP, which never reads one.
"""

from __future__ import annotations

import ipaddress
import logging

from fabric import wire as w
from fabric.mad import saclient
from fabric.wire import smp_attrs as sa

from . import core as backend_core
from .iphost import IpStack
from .netdev import AddressHandle, NetdevContext, RdmaNetdev
from .ulp import SA_TIMEOUT_S, IPoIBInterface

log = logging.getLogger(__name__)
NAPI_BUDGET = 64
# what one pass may deliver across all polls before the host loop looks at its sockets again (the
# kernel's net.core.netdev_budget, 300): a busy queue is polled again at once, not a pass later
NETDEV_BUDGET = 300
DEFAULT_NET = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking block


def default_address(index: int, pkey: int) -> tuple[str, int]:
    """198.18.0.0/16 for the default partition (host = index + 1); 198.19.<k>.0/24 for the
    partition with P_Key k (its low 8 bits, k = 1..255)."""
    pkey &= 0x7FFF
    if pkey == 0x7FFF:
        return str(ipaddress.IPv4Address(int(DEFAULT_NET.network_address) + index + 1)), 16
    k = pkey & 0xFF or 1
    if index + 1 > 254:
        raise ValueError("a P_Key child subnet holds at most 254 nodes")
    return f"198.19.{k}.{index + 1}", 24


class IPoIBNode:
    def __init__(self, hca, index: int, *, port: int = 1, clock=None, backend=None, addresses=None,
                 children: bool = True, tx_queues: int | None = None, rx_queues: int | None = None,
                 iphost=None):
        self.hca = hca
        self.port = port
        self.index = index
        self._clock = clock or (lambda: 0.0)
        self.backend = backend or backend_core
        self.addresses = addresses or {}  # ifname -> "ip/prefix"
        self.auto_children = children
        self.queues = {k: v for k, v in (("tx_queues", tx_queues), ("rx_queues", rx_queues)) if v}  # ethtool -L
        self.ip = iphost if iphost is not None else IpStack(hca.name, now=self.now)  # the IP host above
        self.ifs: dict[str, IPoIBInterface] = {}
        self._sa_pending: dict[int, tuple] = {}  # tid -> (callback, deadline)
        self._collector = saclient.SaCollector()
        self._poll_pending: set = set()
        self._poll_timers: dict = {}  # ifname -> when its moderation timer fires
        self.started = False
        # ip link set ib0 up is the ULP's work, done from the node's next tick: not inside the
        # PortInfo Set that made the port Active, whose answer (the HCA's SMA, hardware on a real
        # card) must not wait behind it while the SM sweeps the rest of the subnet
        self._start_pending = False
        self._light_flush = None  # ((SM LID, LID), when) of the last light flush: events in one burst share it
        hca.qps[1].consumer = self._on_gsi
        hca.agents.append(self)

    def now(self) -> float:
        return self._clock()

    # -- interfaces ----------------------------------------------------------------------------

    def _make_interface(self, ifname: str, pkey: int) -> IPoIBInterface:
        clock = self._clock
        ctx = NetdevContext(self.hca, self.port,
                            deliver=lambda frame, info, n=ifname: self.ifs[n].rx_frame(frame, info, clock()),
                            schedule_poll=lambda n=ifname: self._poll_pending.add(n), now=self.now,
                            arm_timer=lambda t, n=ifname: self._arm_poll_timer(n, t),
                            stop_queue=lambda q, n=ifname: self._queue_state(n, q, True),
                            wake_queue=lambda q, n=ifname: self._queue_state(n, q, False))
        for k, v in self.queues.items():  # what the provider reads in get_params (the standard one has 1)
            setattr(ctx, k, v)
        netdev = RdmaNetdev.create(ctx, self.backend.Provider)
        # an echo hook at the driver (perf --latency --ud) answers through the same data path
        ctx.reflect = lambda frame, slid, src_qp, nd=netdev: nd.send(frame, AddressHandle(dlid=slid), src_qp)
        ifc = IPoIBInterface(self, ifname, pkey, netdev)
        self.ifs[ifname] = ifc
        addr = self.addresses.get(ifname)
        ip, prefix = addr.split("/") if addr else default_address(self.index, pkey)
        prefix = int(prefix)
        ifc.host = self.ip.attach(ifc, str(ip), prefix, 2044)  # carrier off until the broadcast join
        ifc.open(self.now())
        return ifc

    def _arm_poll_timer(self, ifname: str, deadline: float) -> None:
        t = self._poll_timers.get(ifname)
        if t is None or deadline < t:
            self._poll_timers[ifname] = deadline

    def _queue_state(self, ifname: str, q: int, stopped: bool) -> None:
        """netif_stop_queue / netif_wake_queue from the provider: the interface stops handing it
        frames while its send queue is full."""
        ifc = self.ifs.get(ifname)
        if ifc is None:
            return
        if stopped:
            ifc.queue_stop(q, self.now())  # the watchdog starts counting here
        else:
            ifc.queue_wake(q)

    def start(self) -> None:
        """ip link set ib0 up (and the P_Key children the port's table calls for)."""
        if self.started:
            return
        self.started = True
        self._make_interface("ib0", 0xFFFF)
        self._sync_children()

    def _sync_children(self) -> None:
        if not self.auto_children:
            return
        now = self.now()
        port = self.hca.ports[self.port]
        want = {p | w.PKEY_FULL_BIT for p in port.pkeys if p & 0x7FFF and p & 0x7FFF != 0x7FFF}
        have = {ifc.pkey: name for name, ifc in self.ifs.items() if name != "ib0"}
        for pkey in sorted(want - set(have)):
            self._make_interface(f"ib0.{pkey:04x}", pkey)
        for pkey in set(have) - want:
            name = have[pkey]
            self.ifs[name].stop(now)
            self.ifs[name].host.detach()
            del self.ifs[name]

    # -- events from the HCA -------------------------------------------------------------------

    def on_event(self, kind: str, port: int, detail) -> None:
        if port != self.port or not self.started:
            if kind == "port_state" and not self.started and self.hca.ports[self.port].state == sa.PORT_ACTIVE:
                self._start_pending = True
            return
        now = self.now()
        if kind in ("client_reregister", "sm_change"):
            # a new SM (or one that lost its records): rejoin and re-resolve at once, the carrier
            # staying up meanwhile (the kernel's light flush); the port itself did not change.
            # One PortInfo Set brings both events: one flush serves them, as the kernel's flush
            # work, queued twice while pending, runs once.
            port = self.hca.ports[self.port]
            key = (port.sm_lid, port.lid)
            if self._light_flush is not None and self._light_flush[0] == key and now - self._light_flush[1] < 0.05:
                return
            self._light_flush = (key, now)
            for ifc in self.ifs.values():
                ifc.flush("light", now)
        elif kind in ("port_state", "lid_change"):
            for ifc in self.ifs.values():
                ifc.flush("normal", now)
        elif kind == "pkey_change":
            self._sync_children()
            for ifc in list(self.ifs.values()):
                ifc.flush("heavy", now)

    # -- SA client -----------------------------------------------------------------------------

    def sa_query(self, tid: int, mad: bytes, callback, now: float) -> None:
        """Send an SA request; ``callback(response or None, now)`` once it is answered or times out."""
        port = self.hca.ports[self.port]
        if not port.sm_lid:
            callback(None, now)
            return
        self._sa_pending[tid] = (callback, now + SA_TIMEOUT_S)
        self.hca.post_send(1, dlid=port.sm_lid, dest_qp=1, payload=mad, qkey=w.QKEY_GSI, now=now,
                           port_num=self.port)

    def _on_gsi(self, comp) -> None:
        try:
            resp = self._collector.feed(comp.payload)
        except Exception:  # a bad or aborted transfer: the query times out
            return
        if resp is None:
            return
        entry = self._sa_pending.pop(resp.tid, None)
        if entry is not None:
            entry[0](resp, self.now())

    # -- agent protocol (timers and NAPI) ------------------------------------------------------

    def tick(self, now: float) -> None:
        if self._start_pending:
            self._start_pending = False
            if self.hca.ports[self.port].state == sa.PORT_ACTIVE:
                self.start()
        if self._poll_timers:
            for name, t in list(self._poll_timers.items()):
                if now >= t:
                    del self._poll_timers[name]
                    self._poll_pending.add(name)
        if self._poll_pending:
            self._run_polls()
        if self._sa_pending:
            for tid, (cb, deadline) in list(self._sa_pending.items()):
                if now >= deadline:
                    del self._sa_pending[tid]
                    self._collector.abandon(tid)
                    cb(None, now)
        for ifc in list(self.ifs.values()):
            ifc.tick(now)
        self.ip.tick(now)
        if self._poll_pending:
            self._run_polls()  # what the timers just sent leaves in this same pass, not the next one

    def _run_polls(self) -> None:
        """NAPI, as the kernel's net_rx_action: a poll of each interface that asked for one, and
        again for those that used their whole budget (they ask again), until NETDEV_BUDGET frames
        are delivered in all or a round delivers nothing; what is left runs on the next pass."""
        spent = 0
        while self._poll_pending and spent < NETDEV_BUDGET:
            pending, self._poll_pending = self._poll_pending, set()
            before = spent
            for name in pending:
                ifc = self.ifs.get(name)
                if ifc is None:
                    continue
                try:
                    spent += ifc.netdev.poll(NAPI_BUDGET) or 0
                except Exception:  # one interface's failure must not cost the others their poll
                    log.exception("%s: poll of %s failed", self.hca.name, name)
                    ifc.stats["poll_errors"] = ifc.stats.get("poll_errors", 0) + 1
            if spent == before:
                break

    def next_deadline(self):
        # asked several times per host-loop pass: no lists, no walks beyond the interfaces
        if self._poll_pending or self._start_pending:
            return 0.0  # due now, whatever the caller's clock says
        best = self.ip.next_deadline()
        for ifc in self.ifs.values():
            d = ifc.next_deadline()
            if d is not None and (best is None or d < best):
                best = d
        if self._poll_timers:
            d = min(self._poll_timers.values())
            if best is None or d < best:
                best = d
        if self._sa_pending:
            d = min(d for _, d in self._sa_pending.values())
            if best is None or d < best:
                best = d
        return best

    def snapshot(self) -> dict:
        return {"node": self.hca.name, "backend": getattr(self.backend, "BACKEND", "?"),
                "interfaces": [ifc.snapshot() for ifc in self.ifs.values()], "ip": self.ip.stats()}
