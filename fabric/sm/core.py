"""The subnet manager (sans-IO): sweeps that turn devices into a subnet.

A heavy sweep runs these phases, each a batch of SMPs followed by a barrier:

1. discovery: directed-route BFS (``Discovery``);
2. LIDs: the guid2lid cache first, then LIDs the ports already carry, then new ones
   (``lids.assign_lids``);
3. ports: PortInfo Set for every endport (LID, LMC, SM LID, NeighborMTU, and ClientReregister on
   the first master sweep and for new ports);
4. routes: LFT blocks that changed, and LinearFDBTop;
5. partitions: P_Key tables of CA ports;
6. multicast: MFT blocks that changed;
7. states: every Init port to Armed, then every Armed port to Active;
8. subnet up.

Light sweeps run on a period: one SwitchInfo Get per switch. A PortStateChange bit, or a Trap 128
arriving at any time, starts a heavy sweep. Because every Set is computed as a difference from what
the ports report or what this SM last programmed, a sweep of an unchanged subnet writes nothing,
and a new SM taking over keeps LIDs and routes, so unicast traffic keeps flowing.

Inputs: ``start(now)``, ``on_smp(mad, now)`` (responses and traps), ``tick(now)``.
Output: lists of actions (``SendSmp``, ``SubnetUp``, ``Guid2LidChanged``, ``SaAction``s from the SA).
The core reads and writes no files: the guid2lid cache comes in through the constructor, and each
change to it goes out as a ``Guid2LidChanged`` for the driver to persist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import wire as w
from ..wire import smp_attrs as sa
from .discovery import Discovery
from .engine import RequestEngine, SendSmp, dr_octets, ok

DEFAULT_PARTITIONS = "Default=0x7fff, ipoib : ALL=full;\n"


@dataclass
class SMConfig:
    lmc: int = 0
    subnet_timeout: int = 18
    sweep_interval: float = 10.0  # light sweep period, seconds (OpenSM's default)
    routing_engine: str = "minhop"
    partitions: str = DEFAULT_PARTITIONS
    guid2lid_path: str | None = None  # the driver's: where it keeps the cache across SM restarts
    sm_key: int = 0
    window: int = 128
    smp_timeout: float = 0.25
    retries: int = 3
    # OpenSM's part_enforce: the switch ports that face end ports get those ports' P_Key tables
    # and check packets against them, inbound and/or outbound ("both", "in", "out", "off")
    part_enforce: str = "both"
    # several SMs (OpenSM's -p): the highest priority, then the lowest port GUID, is master; the
    # others stand by, poll the master's SMInfo every poll_s and take over after poll_retries
    # polls in a row go unanswered (OpenSM: polling_timeout, polling_retry_number)
    priority: int = 0
    poll_s: float = 1.0
    poll_retries: int = 2


# SMInfo.SMState (IBA 14.2.5.13)
SM_NOT_ACTIVE, SM_DISCOVERING, SM_STANDBY, SM_MASTER = 0, 1, 2, 3
SM_STATE_NAMES = {0: "not-active", 1: "discovering", 2: "standby", 3: "master"}


@dataclass(frozen=True)
class SubnetUp:
    """Action/event: a heavy sweep finished; every port is Active and every LFT programmed."""

    sweep: int
    seconds: float
    nodes: int
    ports_active: int
    lids: int = 0  # end ports with a LID
    switches_routed: int = 0
    stages: tuple = ()  # (step, seconds from the sweep's start when it began), in order


@dataclass(frozen=True)
class Guid2LidChanged:
    """Action: the LID cache changed; persist it (``{port GUID: base LID}``, LMC for the ranges)."""

    guid2lid: dict
    lmc: int


@dataclass
class SweepStats:
    sweep: int = 0
    started: float = 0.0
    sets: dict = field(default_factory=dict)
    # how far the sweep is, for progress reports (ibfab up): discovery -> lids -> routes -> ports -> up
    stage: str = "discovery"
    discovery: object = None  # the Discovery under way (its subnet counts the nodes found so far)
    nodes: int = 0  # nodes found, once discovery is done
    lids: int = 0  # end ports given a LID
    switches_routed: int = 0  # switches whose LFT was computed (and its changed blocks written)
    stage_at: dict = field(default_factory=dict)  # step -> seconds from the start when it began

    def enter(self, stage: str, now: float) -> None:
        self.stage = stage
        self.mark(stage, now)

    def mark(self, step: str, now: float) -> None:
        """When a step began (a stage, or a step within one: the ports' Armed and Active Sets)."""
        self.stage_at[step] = now - self.started


class SubnetManager:
    def __init__(self, config: SMConfig | None = None, *, tid_base: int = 0x5300, guid2lid: dict | None = None,
                 sm_guid: int = 0):
        from .mcast import McastManager
        from .partitions import parse_partitions
        from .sa import SubnetAdministrator

        self.config = config or SMConfig()
        self.engine = RequestEngine(window=self.config.window, timeout=self.config.smp_timeout,
                                    retries=self.config.retries, tid_base=tid_base)
        self.partitions = parse_partitions(self.config.partitions)
        self.mcast = McastManager()
        self.subnet = None
        self.now = 0.0
        self.state = "idle"
        self.sm_guid = sm_guid  # the port GUID SMInfo names this SM by
        self.sm_state = SM_DISCOVERING
        self.master = None  # (DR path, GUID) of the master SM, while standing by
        self.next_poll = None
        self.poll_failures = 0
        self.master_lost = False  # a standby whose master went: discovering to take over
        self.sweeps = 0
        self.sa_ready = False  # the SA answers once the first sweep has given it the routed subnet
        self.resweep = False
        self.next_light = None
        self.light_pending = False
        self.guid2lid: dict[int, int] = dict(guid2lid or {})
        self.programmed_lft: dict[int, bytearray] = {}
        self.programmed_mft: dict[int, dict] = {}  # switch guid -> {mlid: mask}
        self.programmed_mft_top: dict[int, int] = {}  # switch guid -> the MulticastFDBTop it was given
        self.programmed_pkeys: dict[int, list] = {}  # CA port guid -> P_Keys
        self.known_ca_ports: set[int] = set()
        self.out: list = []  # actions produced by callbacks (SubnetUp, SA reports)
        self.stats = SweepStats()
        self.log: list[str] = []
        self.traps_seen = 0
        self.ignore_existing_lfts = True
        self.lfts: dict = {}
        from .subnet import Subnet

        self.sa = SubnetAdministrator(Subnet(), self.partitions, self.mcast, sm_key=self.config.sm_key,
                                      route_hops=self._route_hops)

    # -- entry points --------------------------------------------------------------------------

    def start(self, now: float) -> list:
        self.now = now
        self._begin_heavy()
        return self._flush(self.engine.pump(now))

    def stop(self) -> None:
        self.state = "stopped"
        self.sm_state = SM_NOT_ACTIVE
        self.next_poll = None
        self.engine.queue.clear()
        self.engine.outstanding.clear()

    def on_smp(self, mad, now: float) -> list:
        self.now = now
        if self.state == "stopped":
            return []
        if mad.method == w.TRAP:
            return self._flush(self._on_trap(mad, now))
        if mad.method == w.GET_RESP:
            return self._flush(self.engine.on_response(mad, now))
        return []

    def tick(self, now: float) -> list:
        self.now = now
        if self.state == "stopped":
            return []
        out = self.engine.tick(now) + self.sa.tick(now)  # SA: Report resends to subscribers
        if self.sm_state == SM_STANDBY and self.next_poll is not None and now >= self.next_poll:
            self.next_poll = None
            self.engine.request_octets(dr_octets(w.GET, w.ATTR_SM_INFO, self.master[0]), self._polled)
            out += self.engine.pump(now)
        if self.next_light is not None and now >= self.next_light and self.state == "up":
            self.next_light = None
            self._light_sweep()
            out += self.engine.pump(now)
        return self._flush(out)

    def next_deadline(self):
        # the device host asks after every burst through the SM's node: no lists
        best = self.engine.next_deadline()
        for d in (self.next_light, self.sa.next_timer(), self.next_poll):
            if d is not None and (best is None or d < best):
                best = d
        return best

    def _flush(self, actions: list) -> list:
        if self.out:
            actions = actions + self.out
            self.out = []
        return actions

    # -- sweeps --------------------------------------------------------------------------------

    def request_sweep(self) -> list:
        """Heavy sweep now, or right after the one in progress. Returns the actions to carry out
        (the first discovery SMPs): nothing else would send them before the next timer."""
        if self.state in ("stopped", "standby"):
            return []  # a standby SM leaves the subnet to the master
        if self.state == "sweeping":
            self.resweep = True
            return []
        self.next_light = None
        self._begin_heavy()
        return self._flush(self.engine.pump(self.now))

    def _begin_heavy(self) -> None:
        self.state = "sweeping"
        self.resweep = False
        self.stats = SweepStats(sweep=self.sweeps + 1, started=self.now)
        self.stats.mark("discovery", self.now)
        # An SM that has programmed nothing yet (a new SM, maybe taking over) reads the LFTs the
        # switches hold, so that it rewrites only the blocks that differ (docs/sm.md).
        self.stats.discovery = Discovery(self.engine, read_lfts=not self.programmed_lft, on_done=self._discovered)
        self.stats.discovery.start()

    def _count(self, what: str) -> None:
        self.stats.sets[what] = self.stats.sets.get(what, 0) + 1

    def _set(self, what: str, smp_attr_id: int, path, attr, attr_mod: int = 0, done=None) -> None:
        self._count(what)
        self.engine.request_octets(dr_octets(w.SET, smp_attr_id, path, attr, attr_mod=attr_mod),
                                   done or (lambda r: self._check(what, r)))

    def _check(self, what: str, resp) -> None:
        if not ok(resp):
            self.log.append(f"sweep {self.stats.sweep}: {what} Set failed "
                            f"({'no response' if resp is None else f'status 0x{resp.status:04x}'})")

    # -- master election (IBA 14.4: SMInfo; OpenSM's sm_state_mgr) --------------------------------

    def sm_info(self) -> w.SMInfo:
        """What this SM answers to an SMInfo Get (its SM_Key stays its own)."""
        return w.SMInfo(guid=self.sm_guid, sm_key=0, act_count=self.engine.sent & 0xFFFFFFFF,
                        priority=self.config.priority, sm_state=self.sm_state)

    def _discovered(self, subnet) -> None:
        """A discovery ended. A master configures the subnet; a discovering SM first asks every
        other port that says IsSM for its SMInfo, and stands by if it finds a master, or a
        discovering or standby SM that outranks it."""
        sm_port = subnet.sm_port
        if self.sm_state == SM_MASTER or sm_port is None:
            return self._configure(subnet)
        others = [p for p in subnet.ca_ports() if p is not sm_port and p.info is not None
                  and p.info.capability_mask & sa.CAP_IS_SM]
        if not others:
            self._master()
            return self._configure(subnet)
        infos: dict = {}
        for p in others:
            self.engine.request_octets(dr_octets(w.GET, w.ATTR_SM_INFO, p.node.path),
                                       lambda r, p=p: infos.__setitem__(p, r))
        self.engine.when_idle(lambda: self._elect(subnet, infos))

    def _elect(self, subnet, infos: dict) -> None:
        rank = (self.config.priority, -self.sm_guid)  # the higher priority, then the lower GUID
        best = None
        for p, r in infos.items():
            if not ok(r):
                continue
            info = w.SMInfo.unpack(r.data)
            if info.sm_state == SM_MASTER:
                best = (p, info)  # a master stays master: a newcomer stands by
                break
            if info.sm_state in (SM_DISCOVERING, SM_STANDBY) and (info.priority, -info.guid) > rank:
                if best is None or (info.priority, -info.guid) > (best[1].priority, -best[1].guid):
                    best = (p, info)
        if best is None:
            self._master()
            return self._configure(subnet)
        p, info = best
        self.sm_state, self.state = SM_STANDBY, "standby"
        self.master = (p.node.path, info.guid)
        self.poll_failures = 0
        self.next_poll = self.now + self.config.poll_s
        self.log.append(f"standby: SM 0x{info.guid:016x} ({SM_STATE_NAMES.get(info.sm_state, '?')}, "
                        f"priority {info.priority}) is in charge")

    def _master(self) -> None:
        if self.sm_state != SM_MASTER:
            if self.master_lost:
                self.log.append("taking over as master")
                self.master_lost = False
            self.sm_state = SM_MASTER
            self.master = None
            self.next_poll = None

    def _polled(self, resp) -> None:
        if self.sm_state != SM_STANDBY:
            return
        if ok(resp) and w.SMInfo.unpack(resp.data).sm_state in (SM_MASTER, SM_DISCOVERING):
            self.poll_failures = 0
        else:
            self.poll_failures += 1
        if self.poll_failures >= self.config.poll_retries:
            self.log.append(f"master SM 0x{self.master[1]:016x} gone ({self.poll_failures} polls unanswered): "
                            f"discovering")
            # discovering again, not master: another standby may be taking over too, and the
            # election after the discovery decides between us (one master, never two)
            self.sm_state, self.master, self.next_poll = SM_DISCOVERING, None, None
            self.master_lost = True
            self.state = "idle"
            self._begin_heavy()
            return
        self.next_poll = self.now + self.config.poll_s

    def _configure(self, subnet) -> None:
        from .lids import assign_lids

        prev = self.subnet
        self.subnet = subnet
        # A switch that holds no LID and no LFT was reset (its host restarted, a power cycle):
        # what this SM programmed there is gone, so all of it is written again (OpenSM's
        # need_update). The same for an end port without a LID and its P_Key table.
        for sw in subnet.switches():
            p0, si = sw.ports.get(0), sw.switch_info
            if (p0 is not None and p0.info is not None and p0.info.lid == 0) or (si is not None
                                                                               and not si.linear_fdb_top):
                self.programmed_lft.pop(sw.guid, None)
                self.programmed_mft.pop(sw.guid, None)
                self.programmed_mft_top.pop(sw.guid, None)
                for num in sw.ports:
                    self.programmed_pkeys.pop((sw.guid, num), None)
        for port in subnet.ca_ports():
            if port.info is not None and port.info.lid == 0:
                self.programmed_pkeys.pop(port.guid, None)
        sm_port = subnet.sm_port
        if sm_port is None:
            self.log.append("discovery did not find the SM's own port")
            self.state = "up"
            return
        # OpenSM's ignore_existing_lfts (docs/routing.md): route from scratch on the first sweep,
        # when a switch appeared, or when a switch port needs updating (a link came up: Init);
        # otherwise entries that are still least-hop stay where they are.
        self.ignore_existing_lfts = (
            prev is None or {n.guid for n in subnet.switches()} != {n.guid for n in prev.switches()}
            or any(num and p.linked and p.state == sa.PORT_INIT
                   for n in subnet.switches() for num, p in n.ports.items()))
        lids = assign_lids(subnet, self.guid2lid, lmc=self.config.lmc)
        self.stats.nodes, self.stats.discovery = len(subnet.nodes), None
        self.stats.enter("lids", self.now)
        self.stats.lids = sum(1 for lid in lids.values() if lid)
        merged = dict(self.guid2lid)
        merged.update(lids)  # absent ports keep their LIDs reserved, as OpenSM's cache does
        if merged != self.guid2lid:
            self.guid2lid = merged
            self.out.append(Guid2LidChanged(dict(merged), self.config.lmc))
        sm_lid = lids.get(sm_port.guid, 0)
        first = self.sweeps == 0
        ca_guids = {p.guid for p in subnet.ca_ports()}
        # 3. ports
        for port in subnet.endports():
            lid = lids.get(port.guid or port.node.guid, 0)
            lmc = 0 if port.node.is_switch else self.config.lmc  # switches take one LID (OpenSM default)
            pi = port.info
            if pi is None:
                continue
            reregister = not port.node.is_switch and (first or port.guid not in self.known_ca_ports)
            nmtu = self._neighbor_mtu(port)
            # A port in Init is armed by the same Set that gives it its LID (one SMP instead of
            # two); it goes Active once the routes are in place.
            arm = port.linked and not port.node.is_switch and port.state == sa.PORT_INIT
            if (pi.lid != lid or pi.master_sm_lid != sm_lid or pi.lmc != lmc or reregister or arm
                    or (nmtu and pi.neighbor_mtu != nmtu)
                    or pi.subnet_timeout != self.config.subnet_timeout):
                new = pi.replace(lid=lid, master_sm_lid=sm_lid, lmc=lmc,
                                 port_state=sa.PORT_ARMED if arm else sa.PORT_NOP,
                                 phys_state=sa.PHYS_NOP, neighbor_mtu=nmtu or 0, link_width_enabled=0,
                                 link_speed_enabled=0, client_reregister=int(reregister), m_key=0,
                                 subnet_timeout=self.config.subnet_timeout, gid_prefix=w.GID_PREFIX_DEFAULT)
                self._set("PortInfo", w.ATTR_PORT_INFO, port.node.path, new, port.num,
                          done=self._state_from_reply(port, "PortInfo"))
            port.lid, port.lmc = lid, lmc
        for sw in subnet.switches():  # external ports: MTU negotiated with the neighbour, and armed
            for num, port in sorted(sw.ports.items()):
                if num == 0 or port.info is None or not port.linked:
                    continue
                nmtu = self._neighbor_mtu(port)
                arm = port.state == sa.PORT_INIT
                if (nmtu and port.info.neighbor_mtu != nmtu) or arm:
                    new = port.info.replace(port_state=sa.PORT_ARMED if arm else sa.PORT_NOP,
                                            phys_state=sa.PHYS_NOP, neighbor_mtu=nmtu or 0,
                                            link_width_enabled=0, link_speed_enabled=0, client_reregister=0)
                    self._set("PortInfo", w.ATTR_PORT_INFO, sw.path, new, num,
                              done=self._state_from_reply(port, "PortInfo"))
        # GID in/out of service for InformInfo subscribers
        for p in subnet.ca_ports():
            if p.guid not in self.known_ca_ports and not first:
                self.out.extend(self.sa.gid_in_service(p))
        if prev is not None:
            for g in self.known_ca_ports - ca_guids:
                self.out.extend(self.sa.gid_out_of_service(g))
        self.known_ca_ports = ca_guids
        self.engine.when_idle(self._route)

    def _route_hops(self, src_port, dst_port):
        """Hops of the programmed route between two end ports (for PathRecord), None if none."""
        from .routing import TraceError, trace

        if self.subnet is None or not dst_port.lid:
            return None
        try:
            return len(trace(self.subnet, self.lfts, src_port, dst_port.lid))
        except TraceError:
            return None

    def _state_from_reply(self, port, what: str):
        def done(r):
            if ok(r):
                # The SMA answers a Set with the PortInfo now in force: keep it as the model's, so
                # later Sets of this sweep (Armed, Active) start from what the port holds, not
                # from what discovery read before the LID/SM LID/SubnetTimeout Set.
                port.info = w.PortInfo.unpack(r.data)
                port.state = port.info.port_state
            else:
                self._check(what, r)
        return done

    def _neighbor_mtu(self, port) -> int:
        if port.remote is None:
            return 0
        return min(port.mtu_cap or sa.MTU_4096, port.remote.mtu_cap or sa.MTU_4096)

    def _route(self) -> None:
        from .routing import lft_blocks_changed, route

        subnet = self.subnet
        kw = {"existing": self.programmed_lft} if (self.config.routing_engine == "minhop"
                                                   and not self.ignore_existing_lfts) else {}
        self.stats.enter("routes", self.now)
        lfts = route(subnet, self.config.routing_engine, **kw)
        top = subnet.max_lid()
        for sw in subnet.switches():
            new = lfts.get(sw.guid)
            if new is None:
                continue
            old = self.programmed_lft.get(sw.guid)
            if old is None and sw.lft is not None and sw.switch_info is not None \
                    and sw.switch_info.linear_fdb_top:
                old = sw.lft  # never programmed by this SM: compare with what the switch holds
            for block in lft_blocks_changed(old, new[:top + 1]):
                base = block * w.LFT_BLOCK
                ports = bytes(new[base:base + w.LFT_BLOCK]).ljust(w.LFT_BLOCK, b"\xff")
                self._set("LFT", w.ATTR_LFT, sw.path, w.LinearForwardingTable(ports=tuple(ports)), block)
            self.programmed_lft[sw.guid] = bytearray(new[:top + 1])
            sw.lft = bytearray(new[:top + 1])
            si = sw.switch_info
            if si is not None and (si.linear_fdb_top != top or si.port_state_change):
                # MulticastFDBTop as the SM last set it: the value discovery read may be older (a
                # join between discovery and routing moved it)
                mtop = self.programmed_mft_top.get(sw.guid, si.mcast_fdb_top)
                self._set("SwitchInfo", w.ATTR_SWITCH_INFO, sw.path,
                          si.replace(linear_fdb_top=top, port_state_change=1, mcast_fdb_top=mtop))  # write one: clear PSC
        self.lfts = lfts
        self.stats.switches_routed = len(lfts)
        self.engine.when_idle(self._pkeys)

    def _sa_refresh(self) -> None:
        self.sa_ready = True
        self.sa.subnet = self.subnet
        self.out.extend(self.sa.on_sweep_done(self.now))

    def _pkeys(self) -> None:
        self.stats.enter("ports", self.now)
        sm_port = self.subnet.sm_port
        for port in self.subnet.ca_ports():
            want = self.partitions.pkeys_for(port, sm_port_guid=sm_port.guid)
            want = (list(want) + [0] * w.PKEY_BLOCK)[:w.PKEY_BLOCK]
            port.pkeys = [k for k in want if k & 0x7FFF]
            if self.programmed_pkeys.get(port.guid) != want:
                self._set("P_KeyTable", w.ATTR_PKEY_TABLE, port.node.path, w.PKeyTable(pkeys=tuple(want)), 0)
                self.programmed_pkeys[port.guid] = want
            self._enforce_at(port.remote, want)
        self.engine.when_idle(self._mfts)

    def _enforce_at(self, sw_port, want: list) -> None:
        """Partition enforcement on the switch port facing an end port: its table first, then the
        PortInfo enforcement bits (so no packet of a partition is refused in between)."""
        if sw_port is None or not sw_port.node.is_switch or sw_port.info is None:
            return
        mode = self.config.part_enforce
        inbound, outbound = int(mode in ("both", "in")), int(mode in ("both", "out"))
        key = (sw_port.node.guid, sw_port.num)
        if (inbound or outbound) and self.programmed_pkeys.get(key) != want:
            def table_done(r, key=key, want=want):
                self._check("P_KeyTable", r)
                if ok(r):  # recorded once the switch has it: a failed Set is tried again next sweep
                    self.programmed_pkeys[key] = want

            self._set("P_KeyTable", w.ATTR_PKEY_TABLE, sw_port.node.path, w.PKeyTable(pkeys=tuple(want)),
                      sw_port.num << 16, done=table_done)
        pi = sw_port.info
        if (pi.partition_enforcement_inbound, pi.partition_enforcement_outbound) != (inbound, outbound):
            new = pi.replace(port_state=sa.PORT_NOP, phys_state=sa.PHYS_NOP, link_width_enabled=0,
                             link_speed_enabled=0, client_reregister=0, partition_enforcement_inbound=inbound,
                             partition_enforcement_outbound=outbound)
            self._set("PortInfo", w.ATTR_PORT_INFO, sw_port.node.path, new, sw_port.num)
            # our copy keeps what the port reports (its states, enabled width and speed): the SA's
            # PortInfoRecords are made from it
            sw_port.info = pi.replace(partition_enforcement_inbound=inbound, partition_enforcement_outbound=outbound)

    def _mfts(self) -> None:
        self._sa_refresh()
        self.program_mfts()
        self.engine.when_idle(self._arm)

    def program_mfts(self) -> None:
        """Program the MFT blocks that differ from what multicast membership now needs."""
        if self.subnet is None:
            return
        want: dict[int, dict] = {sw.guid: {} for sw in self.subnet.switches()}
        index = {p.gid_guid: p for p in self.subnet.endports()}  # once, not once per group
        for guid, masks in self.mcast.all_mfts(self.subnet, port_index=index).items():
            if guid in want:
                want[guid] = {mlid: m for mlid, m in masks.items() if m}
        for sw in self.subnet.switches():
            have = self.programmed_mft.get(sw.guid, {})
            new = want[sw.guid]
            if have == new:
                continue
            dirty = {(m - w.LID_MCAST_FIRST) // w.MFT_BLOCK for m in set(have) | set(new)
                     if have.get(m) != new.get(m)}
            for block in sorted(dirty):
                for position in range(sw.num_ports // 16 + 1):
                    masks = tuple((new.get(w.LID_MCAST_FIRST + block * w.MFT_BLOCK + i, 0) >> (16 * position))
                                  & 0xFFFF for i in range(w.MFT_BLOCK))
                    self._set("MFT", w.ATTR_MFT, sw.path, w.MulticastForwardingTable(port_masks=masks),
                              sa.mft_attr_mod(block, position))
            self.programmed_mft[sw.guid] = dict(new)
            sw.mft = dict(new)
            self._mft_top(sw, max(new) if new else sa.MFT_TOP_NONE)

    def _mft_top(self, sw, top: int) -> None:
        """SwitchInfo.MulticastFDBTop: the highest MLID the MFT holds (0xBFFF: none), as OpenSM
        sets it after programming MFTs; tools (ibroute -M) read the table only up to it."""
        si = sw.switch_info
        lft = self.programmed_lft.get(sw.guid)
        if si is None or self.programmed_mft_top.get(sw.guid) == top:
            return
        self.programmed_mft_top[sw.guid] = top
        self._set("SwitchInfo", w.ATTR_SWITCH_INFO, sw.path,
                  si.replace(linear_fdb_top=len(lft) - 1 if lft else si.linear_fdb_top, mcast_fdb_top=top,
                             port_state_change=0))  # 0: PortStateChange left as it is

    def _arm(self) -> None:
        self.stats.mark("armed", self.now)
        self._to_state(sa.PORT_ARMED, (sa.PORT_INIT,))
        self.engine.when_idle(self._activate)

    def _activate(self) -> None:
        self.stats.mark("active", self.now)
        self._to_state(sa.PORT_ACTIVE, (sa.PORT_ARMED,))
        self.engine.when_idle(self._subnet_up)

    def _to_state(self, state: int, from_states: tuple) -> None:
        for n in self.subnet.nodes.values():
            for num, port in sorted(n.ports.items()):
                if (num == 0 and n.is_switch) or not port.linked or port.info is None:
                    continue
                if port.state in from_states:
                    done = self._state_from_reply(port, "PortState")
                    new = port.info.replace(port_state=state, phys_state=sa.PHYS_NOP, neighbor_mtu=0,
                                            link_width_enabled=0, link_speed_enabled=0, client_reregister=0,
                                            lid=port.lid if not n.is_switch else port.info.lid,
                                            master_sm_lid=port.info.master_sm_lid if n.is_switch else
                                            self.guid2lid.get(self.subnet.sm_port.guid, 0))
                    self._set("PortState", w.ATTR_PORT_INFO, n.path, new, num, done=done)

    def _subnet_up(self) -> None:
        self.sweeps += 1
        ports = sum(1 for n in self.subnet.nodes.values() for num, p in n.ports.items()
                    if p.state == sa.PORT_ACTIVE and not (n.is_switch and num == 0))
        seconds = self.now - self.stats.started
        self.stats.enter("up", self.now)
        self.out.append(SubnetUp(self.sweeps, seconds, len(self.subnet.nodes), ports, self.stats.lids,
                                    self.stats.switches_routed, tuple(self.stats.stage_at.items())))
        steps = ", ".join(f"{k} {v:.3f}" for k, v in self.stats.stage_at.items())
        self.log.append(f"sweep {self.sweeps}: SUBNET UP in {seconds:.3f} s, {len(self.subnet.nodes)} nodes, "
                        f"{ports} active ports, sets {self.stats.sets}; steps began at (s): {steps}")
        self.state = "up"
        self.next_light = self.now + self.config.sweep_interval
        if self.resweep:
            self._begin_heavy()

    def _light_sweep(self) -> None:
        """One SwitchInfo Get per switch; a PortStateChange bit means the topology moved."""
        self.light_pending = False
        changed = []

        def done(r, sw):
            if r is None or (ok(r) and w.SwitchInfo.unpack(r.data).port_state_change):
                changed.append(sw)

        for sw in self.subnet.switches():
            self.engine.dr_get(w.ATTR_SWITCH_INFO, sw.path, lambda r, sw=sw: done(r, sw))

        def decide():
            if changed or self.resweep:
                self._begin_heavy()
            else:
                self.next_light = self.now + self.config.sweep_interval

        self.engine.when_idle(decide)

    # -- traps ---------------------------------------------------------------------------------

    def _on_trap(self, mad, now: float) -> list:
        self.traps_seen += 1
        notice = w.Notice.unpack(mad.data.ljust(80, b"\0"))
        out = []
        if isinstance(mad, w.SMPLid):
            # repress: the same TID back to the issuer, so it stops resending
            rep = mad.replace(method=w.TRAP_REPRESS, status=0)
            out.append(SendSmp(rep, notice.issuer_lid))
        if notice.is_generic and notice.trap_num == sa.TRAP_LINK_STATE_CHANGE:
            self.log.append(f"trap 128 from LID {notice.issuer_lid}: link state change, sweeping")
            if self.state == "up":
                self.next_light = None
                self._begin_heavy()
            else:
                self.resweep = True
        return out + self.engine.pump(now)

    # -- for the SA ----------------------------------------------------------------------------

    def status(self) -> dict:
        return {"state": self.state, "sm_state": SM_STATE_NAMES[self.sm_state], "priority": self.config.priority,
                "master_guid": self.master[1] if self.master else None, "sweeps": self.sweeps,
                "engine_sent": self.engine.sent,
                "timeouts": self.engine.timeouts, "late_answers": self.engine.late_answers,
                "failed": self.engine.failed, "traps": self.traps_seen,
                "sweep": self.sweep_progress(),
                "log": self.log[-20:]}

    def sweep_progress(self) -> dict:
        """How far the current (or last) heavy sweep got: its stage, the nodes found, the end ports
        given a LID, the switches routed (``ibfab up`` shows them as it waits)."""
        st = self.stats
        found = len(st.discovery.subnet.nodes) if st.discovery is not None else st.nodes
        return {"number": st.sweep, "stage": st.stage, "nodes": found, "lids": st.lids,
                "switches_routed": st.switches_routed}
