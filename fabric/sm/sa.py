"""Subnet Administrator (IBA vol. 1 chapter 15), sans-IO.

:class:`SubnetAdministrator` takes SA MADs and returns actions::

    sa = SubnetAdministrator(subnet, partitions, McastManager(), sm_key=0,
                             route_hops=..., link_mtu_rate=...)
    actions = sa.handle(mad_octets, Requester(lid=5, qpn=1, pkey=0xffff), now)

Actions are frozen dataclasses: :class:`SaReply` (the response MADs to send back to the requester:
one MAD, or the RMPP segments of a GetTableResp), :class:`McastChanged` (a group's spanning tree
changed: the SM reprograms that MLID's MFT entries), :class:`SaReport` (a Report(Notice) for an
InformInfo subscriber; resent by :meth:`SubnetAdministrator.tick` until a ReportResp arrives).

The SA never raises out of :meth:`~SubnetAdministrator.handle`: a request it cannot serve gets an
error status, and an unexpected exception inside a handler is logged and answered with
SA_ERR_NO_RESOURCES. docs/sa.md describes the behaviour attribute by attribute.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from ..wire import mad as m
from ..wire import smp_attrs as smp
from ..wire.errors import ParseError, WireError
from ..wire.headers import GID_PREFIX_DEFAULT, LID_MCAST_FIRST, PKEY_FULL_BIT, make_gid
from ..wire.sa_attrs import (MCM_COMP, NR_COMP_FULL, PIR_COMP_FULL, PR_COMP, SELECTOR_BEST,
                             SELECTOR_EXACT, SELECTOR_GT, SELECTOR_LT, ClassPortInfo, InformInfo,
                             MCMemberRecord, NodeRecord, PathRecord, PortInfoRecord, comp_fields)
from ..wire.smp_attrs import NodeDescription, NodeInfo, Notice, PortInfo
from ..mad import rmpp
from .mcast import (DEFAULT_PKT_LIFE, FULL_STATES, RECEIVER_STATES, McastError, McastManager,
                    McGroup, compare_rates, mtu_valid, port_rate, rate_prev, rate_valid)
from .partitions import PartitionConfig, default_partitions

log = logging.getLogger(__name__)

__all__ = ["SubnetAdministrator", "Requester", "SaReply", "McastChanged", "SaReport", "GraphPaths",
           "NR_COMP_FULL", "PIR_COMP_FULL", "SA_CAP_UD_MCAST", "SA_CAP_GET_SET_NOTICE",
           "SELECTOR_GT", "SELECTOR_LT", "SELECTOR_EXACT", "SELECTOR_BEST"]

# ClassPortInfo:CapabilityMask bits of the SA (IBA table 191; OpenSM's OSM_CAP_IS_*)
SA_CAP_GET_SET_NOTICE = 1 << 1   # event forwarding: InformInfo subscriptions and Report(Notice)
SA_CAP_UD_MCAST = 1 << 9         # UD multicast (MCMemberRecord join/leave)
SA_CAP2_SEND_ONLY_FULL = 1 << 12  # SendOnlyFullMember JoinState

SECURITY_TRAPS = range(256, 260)   # bad M_Key, bad P_Key, bad Q_Key, switch bad P_Key
NOTICE_GENERIC_TYPE = smp.NOTICE_TYPE_SM  # OpenSM issues traps 64-67 as "subnet management"
PRODUCER_CLASS_MANAGER = smp.PRODUCER_SM
SA_HDR = 56

_NO_RESPONSE_METHODS = {m.SEND, m.TRAP, m.TRAP_REPRESS}
_REQUEST_METHODS = {m.GET, m.SET, m.GET_TABLE, m.DELETE}


# -- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requester:
    """Where a request came from (and where its response goes): the source LID and QP of the
    request, the P_Key it was sent with, and the source GID when it had a GRH."""

    lid: int
    qpn: int = 1
    pkey: int = 0xFFFF
    gid: bytes | None = None


@dataclass(frozen=True)
class SaReply:
    dest: Requester
    mads: tuple  # 256-octet MADs: one, or the RMPP segments of a GetTableResp, in order


@dataclass(frozen=True)
class McastChanged:
    mlid: int


@dataclass(frozen=True)
class SaReport:
    dest: Requester
    mad: bytes  # a Report(Notice), method 0x06, 256 octets


class _Status(Exception):
    def __init__(self, status: int, reason: str = ""):
        super().__init__(reason or f"status 0x{status:04x}")
        self.status = status


# -- default path engine -----------------------------------------------------------------------


class GraphPaths:
    """Min-hop paths on the subnet model, for an SA that is given no routing callables.

    ``route_hops(src, dst)`` is the number of links on a shortest path (0 from a port to itself),
    or None when no path exists; ``link_mtu_rate(src, dst)`` is (MTU code, rate code) of that path:
    the smallest MTU (each port's MTUCap and NeighborMTU) and the slowest link on it. Paths run
    through switches only. Results are cached per destination port until :meth:`reset`.
    """

    def __init__(self, subnet):
        self.subnet = subnet
        self._trees: dict = {}

    def reset(self):
        self._trees.clear()

    def _tree(self, dst):
        key = (dst.node.guid, dst.num)
        t = self._trees.get(key)
        if t is not None:
            return t
        dist: dict[int, int] = {}
        toward: dict[int, object] = {}  # node GUID -> the port of that node on its path to dst
        q = deque()
        if dst.node.is_switch:
            dist[dst.node.guid] = 0
            q.append(dst.node)
        elif dst.remote is not None:
            r = dst.remote
            dist[r.node.guid] = 1
            toward[r.node.guid] = r
            if r.node.is_switch:
                q.append(r.node)
        while q:
            n = q.popleft()
            d = dist[n.guid]
            for num in sorted(n.ports):
                p = n.ports[num]
                r = p.remote
                if num == 0 or r is None:
                    continue
                nb = r.node
                if nb.guid in dist:
                    continue
                dist[nb.guid] = d + 1
                toward[nb.guid] = r
                if nb.is_switch:
                    q.append(nb)
        t = (dist, toward)
        self._trees[key] = t
        return t

    def _links(self, src, dst):
        """The links (egress port, ingress port) from src to dst, or None."""
        if src is dst:
            return []
        dist, toward = self._tree(dst)
        links = []
        if src.node.is_switch:
            node = src.node
            if node.guid not in dist:
                return None
        else:
            if src.remote is None:
                return None
            if src.remote is dst:
                return [(src, dst)]
            node = src.remote.node
            if node.guid not in dist or not node.is_switch:
                return None
            links.append((src, src.remote))
        hops = 0
        while not (node is dst.node and (dst.node.is_switch or not links or links[-1][1] is dst)):
            egress = toward.get(node.guid)
            if egress is None:
                return None
            links.append((egress, egress.remote))
            node = egress.remote.node
            hops += 1
            if hops > 255:
                return None
        return links

    def route_hops(self, src, dst) -> int | None:
        links = self._links(src, dst)
        return None if links is None else len(links)

    def link_mtu_rate(self, src, dst):
        links = self._links(src, dst)
        if links is None:
            return None
        if not links:
            return min(src.mtu_cap, src.neighbor_mtu or src.mtu_cap), port_rate(src.width_active, src.speed_active)
        mtu = 5
        rate = None
        for a, b in links:
            for p in (a, b):
                mtu = min(mtu, p.mtu_cap, p.neighbor_mtu or p.mtu_cap)
            r = port_rate(a.width_active, a.speed_active)
            if rate is None or compare_rates(r, rate) < 0:
                rate = r
        for p in (src, dst):  # switch port 0 ends
            mtu = min(mtu, p.mtu_cap)
        return mtu, rate


# -- InformInfo subscriptions ------------------------------------------------------------------


@dataclass
class Subscription:
    requester: Requester
    port_guid: int
    gid: bytes
    lid_begin: int
    lid_end: int
    is_generic: int
    type: int
    trap_num: int
    producer_type: int
    info: InformInfo = None

    def key(self):
        return (self.port_guid, self.gid, self.lid_begin, self.lid_end, self.is_generic, self.type,
                self.trap_num, self.producer_type)


@dataclass
class _Pending:
    dest: Requester
    mad: bytes
    deadline: float
    tries: int = 1


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def _gid_is_zero(g: bytes) -> bool:
    return not any(g)


# -- the SA ------------------------------------------------------------------------------------


class SubnetAdministrator:
    """The SA. ``partitions`` defaults to OpenSM's default configuration, ``mcast`` to a new
    :class:`McastManager`; without ``route_hops``/``link_mtu_rate`` the SA uses min-hop paths on
    the subnet model (:class:`GraphPaths`)."""

    def __init__(self, subnet, partitions: PartitionConfig | None = None,
                 mcast: McastManager | None = None, *, sm_key: int = 0, route_hops=None,
                 link_mtu_rate=None, gid_prefix: int = GID_PREFIX_DEFAULT, resp_time_value: int = 16,
                 subnet_timeout: int = DEFAULT_PKT_LIFE, report_timeout: float = 1.0,
                 report_retries: int = 3, create_requires_full: bool = True):
        self._subnet = subnet
        self.paths = GraphPaths(subnet)
        self.partitions = partitions if partitions is not None else default_partitions()
        self.mcast = mcast if mcast is not None else McastManager()
        self.sm_key = sm_key
        self._route_hops = route_hops
        self._link_mtu_rate = link_mtu_rate
        self.gid_prefix = gid_prefix
        self.resp_time_value = resp_time_value
        self.subnet_timeout = subnet_timeout
        self.report_timeout = report_timeout
        self.report_retries = report_retries
        self.create_requires_full = create_requires_full
        self.subscriptions: list[Subscription] = []
        self.pending_reports: dict[int, _Pending] = {}
        self.stats: dict[str, int] = {}
        self._now = 0.0
        self._report_tid = 0x5A000000
        self._mgid_counter = 0
        self._by_guid: dict[int, object] = {}
        self._by_lid: dict[int, object] = {}
        self._index_nodes = -1
        self._pkey_cache: dict = {}
        self._last_mft: dict[int, dict] = {}
        self.mcast.ensure_sm_groups(self.partitions.groups())

    # -- the subnet and the path callables (replaceable at any time) ----------------------------

    @property
    def subnet(self):
        return self._subnet

    @subnet.setter
    def subnet(self, subnet):
        """A new subnet model (a sweep may build a fresh one): indexes and caches start over."""
        self._subnet = subnet
        self.paths = GraphPaths(subnet)
        self._index_nodes = -1
        self._pkey_cache.clear()
        self._last_mft.clear()

    @property
    def route_hops(self):
        return self._route_hops or self.paths.route_hops

    @route_hops.setter
    def route_hops(self, fn):
        self._route_hops = fn

    @property
    def link_mtu_rate(self):
        return self._link_mtu_rate or self.paths.link_mtu_rate

    @link_mtu_rate.setter
    def link_mtu_rate(self, fn):
        self._link_mtu_rate = fn

    # ------------------------------------------------------------------------------------------
    # SM core integration

    def on_sweep_done(self, now: float | None = None) -> list:
        """Call after every sweep (LIDs, links or P_Keys may have changed). Refreshes the SA's
        indexes and caches, creates the SM's multicast groups that are missing, and drops group
        members whose port is gone. Returns the resulting actions (McastChanged, SaReport)."""
        if now is not None:
            self._now = now
        self._reindex()
        self._pkey_cache.clear()
        self._last_mft.clear()
        self.paths.reset()
        self.mcast.ensure_sm_groups(self.partitions.groups())
        actions: list = []
        for g in list(self.mcast):
            for gid in list(g.members):
                if self._port_by_guid(int.from_bytes(gid[8:], "big")) is None:
                    actions += self._remove_member(g, gid, 0xF, force=True)
        return actions

    refresh = on_sweep_done

    def set_partitions(self, partitions: PartitionConfig, now: float | None = None) -> list:
        """Replace the partition configuration (a reread partitions.conf)."""
        self.partitions = partitions
        return self.on_sweep_done(now)

    def gid_in_service(self, port, now: float | None = None) -> list:
        """A port became reachable (call once per new end port after a sweep): trap 64 Reports."""
        if now is not None:
            self._now = now
        self._reindex()
        return self._notify(smp.TRAP_GID_IN_SERVICE, self._port_gid(port), subject_port=port)

    def gid_out_of_service(self, port, now: float | None = None) -> list:
        """A port is gone (call before or after removing it from the subnet; ``port`` is the
        SmPort or its port GUID): trap 65 Reports, the port leaves every multicast group
        (McastChanged, trap 67 as needed), and its InformInfo subscriptions are dropped."""
        if now is not None:
            self._now = now
        if isinstance(port, int):
            guid = port
            subject = self._by_guid.get(guid)  # the index may still know it: for the P_Key check
        else:
            guid, subject = port.gid_guid, port
        gid = make_gid(self.gid_prefix, guid)
        actions = self._notify(smp.TRAP_GID_OUT_OF_SERVICE, gid, subject_port=subject)
        for g in list(self.mcast):
            for member in list(g.members):
                if member[8:] == gid[8:]:
                    actions += self._remove_member(g, member, 0xF, force=True)
        self.subscriptions = [s for s in self.subscriptions if s.port_guid != guid]
        self._reindex()
        return actions

    def tick(self, now: float) -> list:
        """Resend Reports whose ReportResp is overdue; give up after ``report_retries`` sends."""
        self._now = now
        out = []
        for tid, p in list(self.pending_reports.items()):
            if p.deadline > now:
                continue
            if p.tries >= self.report_retries:
                del self.pending_reports[tid]
                self._count("report_timeout")
                continue
            p.tries += 1
            p.deadline = now + self.report_timeout
            out.append(SaReport(p.dest, p.mad))
        return out

    def next_timer(self) -> float | None:
        """When :meth:`tick` next has something to do (None: nothing pending)."""
        return min((p.deadline for p in self.pending_reports.values()), default=None)

    def mft_updates(self, mlid: int) -> dict[int, int]:
        """On McastChanged(mlid): {switch node GUID: port mask} to write for that MLID, with 0 for
        switches whose programmed MFT (``SmNode.mft``) has the MLID but that left the tree."""
        self._check_index()
        return self.mcast.mft_updates(self.subnet, mlid, port_index=self._by_guid)

    def all_mfts(self) -> dict[int, dict[int, int]]:
        """After a sweep: {switch node GUID: {MLID: port mask}} for every group."""
        self._check_index()
        return self.mcast.all_mfts(self.subnet, port_index=self._by_guid)

    # ------------------------------------------------------------------------------------------
    # entry point

    def handle(self, mad, src: Requester, now: float = 0.0) -> list:
        """Process one received SA MAD (256 octets or an :class:`~fabric.wire.SAMad`)."""
        self._now = now
        req = None
        try:
            req = self._decode(mad, src)
            if isinstance(req, list):
                return req
            return self._dispatch(req, src)
        except _Status as e:
            if req is None or isinstance(req, list):
                return []
            return [self._error(req, src, e.status)]
        except (ParseError, WireError) as e:
            log.info("SA: malformed request from LID %s: %s", getattr(src, "lid", "?"), e)
            self._count("malformed")
            if req is None or isinstance(req, list):
                return []
            return [self._error(req, src, m.SA_ERR_REQ_INVALID)]
        except Exception:  # never let a request take the SM down
            log.exception("SA: internal error on a request from LID %s", getattr(src, "lid", "?"))
            self._count("internal_error")
            if req is None or isinstance(req, list):
                return []
            try:
                return [self._error(req, src, m.SA_ERR_NO_RESOURCES)]
            except Exception:
                return []

    def _count(self, key: str):
        self.stats[key] = self.stats.get(key, 0) + 1

    def _decode(self, mad, src):
        if isinstance(mad, m.SAMad):
            raw = None
            req = mad
        else:
            raw = bytes(mad)
            if len(raw) < m.MAD_SIZE:
                self._count("short")
                return []
            if raw[1] != m.CLASS_SUBN_ADM:
                self._count("not_sa")
                return []
            req = m.SAMad.unpack(raw)
        if req.mgmt_class != m.CLASS_SUBN_ADM:
            self._count("not_sa")
            return []
        if req.method & m.RESPONSE_BIT:
            if req.method == m.REPORT_RESP:
                p = self.pending_reports.get(req.tid)
                if p is not None and p.dest.lid == src.lid:
                    del self.pending_reports[req.tid]
                    self._count("report_acked")
            return []  # responses (RMPP ACKs included) are never answered
        if req.method in _NO_RESPONSE_METHODS:
            self._count("ignored_method")
            return []
        if req.base_version != m.BASE_VERSION or req.class_version != m.CLASS_VERSIONS[m.CLASS_SUBN_ADM]:
            self._count("bad_version")
            return [self._error(req, src, m.STATUS_BAD_VERSION)]
        if self.sm_key and req.sm_key and req.sm_key != self.sm_key:
            # C15-0.1.5: a nonzero SM_Key that is not ours: discard
            log.warning("SA: discarding a MAD from LID %s with a wrong SM_Key", src.lid)
            self._count("bad_sm_key")
            return []
        return req

    def _dispatch(self, req, src):
        if req.method not in _REQUEST_METHODS:
            return [self._error(req, src, m.STATUS_METHOD_UNSUPPORTED)]
        handlers = {
            (m.ATTR_CLASS_PORT_INFO, m.GET): self._class_port_info,
            (m.ATTR_PATH_RECORD, m.GET): self._path_record,
            (m.ATTR_PATH_RECORD, m.GET_TABLE): self._path_record,
            (m.ATTR_MCMEMBER_RECORD, m.GET): self._mcmember_query,
            (m.ATTR_MCMEMBER_RECORD, m.GET_TABLE): self._mcmember_query,
            (m.ATTR_MCMEMBER_RECORD, m.SET): self._mcmember_join,
            (m.ATTR_MCMEMBER_RECORD, m.DELETE): self._mcmember_leave,
            (m.ATTR_NODE_RECORD, m.GET): self._node_record,
            (m.ATTR_NODE_RECORD, m.GET_TABLE): self._node_record,
            (m.ATTR_PORT_INFO_RECORD, m.GET): self._port_info_record,
            (m.ATTR_PORT_INFO_RECORD, m.GET_TABLE): self._port_info_record,
            (m.ATTR_INFORM_INFO, m.SET): self._inform_info,
        }
        h = handlers.get((req.attr_id, req.method))
        if h is None:
            return [self._error(req, src, m.STATUS_METHOD_ATTR_UNSUPPORTED)]
        if req.rmpp_flags & m.RMPP_FLAG_ACTIVE and (
                req.rmpp_type != m.RMPP_TYPE_DATA
                or req.rmpp_flags & (m.RMPP_FLAG_FIRST | m.RMPP_FLAG_LAST)
                != m.RMPP_FLAG_FIRST | m.RMPP_FLAG_LAST):
            # a multi-segment request (only GetMulti needs one): not supported
            return [self._error(req, src, m.SA_ERR_REQ_INVALID)]
        return h(req, src)

    # ------------------------------------------------------------------------------------------
    # responses

    def _error(self, req, src, status: int) -> SaReply:
        self._count(f"status_0x{status:04x}")
        resp = req.replace(method=m.response_method(req.method), status=status, sm_key=0,
                           attr_offset=0, rmpp_version=0, rmpp_type=0, rmpp_resp_time=0,
                           rmpp_flags=0, rmpp_status=0, rmpp_data1=0, rmpp_data2=0)
        return SaReply(src, (resp.pack(),))

    def _reply_records(self, req, src, records: list, size: int) -> SaReply:
        stride = _pad8(size)
        if req.method == m.GET:
            if not records:
                return self._error(req, src, m.SA_ERR_NO_RECORDS)
            if len(records) > 1:
                return self._error(req, src, m.SA_ERR_TOO_MANY_RECORDS)
            return self._reply_one(req, src, records[0], size)
        payload = b"".join(r.pack().ljust(stride, b"\0") for r in records)
        hdr = req.replace(method=m.GET_TABLE_RESP, status=0, sm_key=0,
                          attr_offset=stride // 8 if records else 0)
        return SaReply(src, tuple(rmpp.segment(hdr, payload)))

    def _reply_one(self, req, src, record, size: int) -> SaReply:
        resp = req.replace(method=m.response_method(req.method), status=0, sm_key=0,
                           attr_offset=_pad8(size) // 8, rmpp_version=0, rmpp_type=0,
                           rmpp_resp_time=0, rmpp_flags=0, rmpp_status=0, rmpp_data1=0,
                           rmpp_data2=0, data=record.pack().ljust(m.SA_DATA_LEN, b"\0"))
        return SaReply(src, (resp.pack(),))

    # ------------------------------------------------------------------------------------------
    # subnet lookups

    def _reindex(self):
        by_guid, by_lid = {}, {}
        for p in self.subnet.endports():
            by_guid[p.gid_guid] = p
            if p.lid:
                for lid in range(p.lid, p.lid + (1 << p.lmc)):
                    by_lid[lid] = p
        self._by_guid, self._by_lid = by_guid, by_lid
        self._index_nodes = len(self.subnet.nodes)

    def _check_index(self):
        if self._index_nodes != len(self.subnet.nodes):
            self._reindex()

    def _port_by_guid(self, guid: int):
        self._check_index()
        p = self._by_guid.get(guid)
        if p is None or p.gid_guid != guid or p.node.guid not in self.subnet.nodes:
            self._reindex()
            p = self._by_guid.get(guid)
        return p

    def _port_by_lid(self, lid: int):
        if not lid or lid >= LID_MCAST_FIRST:
            return None
        self._check_index()
        p = self._by_lid.get(lid)
        if p is None or not p.lid or not p.lid <= lid < p.lid + (1 << p.lmc) \
                or p.node.guid not in self.subnet.nodes:
            self._reindex()
            p = self._by_lid.get(lid)
        return p

    def _requester_port(self, src: Requester):
        p = self._port_by_lid(src.lid)
        if p is None:
            raise _Status(m.SA_ERR_REQ_INVALID, f"unknown requester LID {src.lid}")
        return p

    def _port_gid(self, port) -> bytes:
        return make_gid(self.gid_prefix, port.gid_guid)

    def _sm_gid(self) -> bytes:
        sp = self.subnet.sm_port
        return make_gid(self.gid_prefix, sp.gid_guid) if sp is not None else bytes(16)

    def _sm_lid(self) -> int:
        sp = self.subnet.sm_port
        return sp.lid if sp is not None else 0

    def _endport_of(self, port):
        """The port whose P_Keys and LID stand for ``port``: port 0 for a switch port."""
        if port.node.is_switch:
            return port.node.ports.get(0, port)
        return port

    def _guid_of_gid(self, gid: bytes) -> tuple[int, int]:
        return int.from_bytes(gid[:8], "big"), int.from_bytes(gid[8:], "big")

    def _prefix_ok(self, prefix: int) -> bool:
        return prefix in (self.gid_prefix, GID_PREFIX_DEFAULT)

    # -- partitions ----------------------------------------------------------------------------

    def _pkeys(self, port) -> list[int]:
        port = self._endport_of(port)
        key = (port.node.guid, port.num)
        pk = self._pkey_cache.get(key)
        if pk is None:
            sp = self.subnet.sm_port
            pk = self.partitions.pkeys_for(port, sm_port_guid=sp.gid_guid if sp is not None else 0)
            self._pkey_cache[key] = pk
        return pk

    def _has_pkey(self, port, pkey: int) -> bool:
        base = pkey & 0x7FFF
        return any(k & 0x7FFF == base for k in self._pkeys(port))

    def _is_full(self, port, pkey: int) -> bool:
        base = pkey & 0x7FFF
        return any(k & 0x7FFF == base and k & PKEY_FULL_BIT for k in self._pkeys(port))

    def _share_this_pkey(self, a, b, pkey: int) -> bool:
        """Both ports have ``pkey``'s partition and at least one of them is a full member."""
        base = pkey & 0x7FFF
        ka = [k for k in self._pkeys(a) if k & 0x7FFF == base]
        kb = [k for k in self._pkeys(b) if k & 0x7FFF == base]
        return any((x | y) & PKEY_FULL_BIT for x in ka for y in kb)

    def _common_pkey(self, a, b) -> int:
        """A P_Key of ``a`` that ``b`` shares with at least one full member, the lowest partition
        first (OpenSM's osm_physp_find_common_pkey); 0 if none. Returned with ``a``'s bit 15."""
        kb = {}
        for k in self._pkeys(b):
            kb[k & 0x7FFF] = kb.get(k & 0x7FFF, 0) | (PKEY_FULL_BIT if k & PKEY_FULL_BIT else 1)
        for k in sorted(self._pkeys(a), key=lambda x: (x & 0x7FFF, -(x & PKEY_FULL_BIT))):
            other = kb.get(k & 0x7FFF)
            if other and (k & PKEY_FULL_BIT or other & PKEY_FULL_BIT):
                return k
        return 0

    def _share_pkey(self, a, b) -> bool:
        """The two ports may talk: the same port, or a common P_Key with a full member."""
        if self._endport_of(a) is self._endport_of(b):
            return True
        return self._common_pkey(a, b) != 0

    # ------------------------------------------------------------------------------------------
    # ClassPortInfo

    def _class_port_info(self, req, src):
        cpi = ClassPortInfo(base_version=1, class_version=2,
                            capability_mask=SA_CAP_GET_SET_NOTICE | SA_CAP_UD_MCAST,
                            capability_mask2=SA_CAP2_SEND_ONLY_FULL,
                            resp_time_value=self.resp_time_value, redirect_qp=1,
                            redirect_qkey=0x80010000, trap_qkey=0x80010000)
        return [self._reply_one(req, src, cpi, ClassPortInfo.SIZE)]

    # ------------------------------------------------------------------------------------------
    # PathRecord

    def _path_record(self, req, src):
        pr = PathRecord.unpack(req.data)
        comps = set(comp_fields(PR_COMP, req.comp_mask))
        mask = req.comp_mask

        def has(bit):
            return mask >> bit & 1

        if has(PR_COMP["rate_selector"][0]) and has(PR_COMP["rate"][0]) and not rate_valid(pr.rate):
            raise _Status(m.SA_ERR_REQ_INVALID, "invalid rate")
        if has(PR_COMP["mtu_selector"][0]) and has(PR_COMP["mtu"][0]) and not mtu_valid(pr.mtu):
            raise _Status(m.SA_ERR_REQ_INVALID, "invalid MTU")
        if has(0) != has(1):
            raise _Status(m.SA_ERR_REQ_INSUFFICIENT_COMPONENTS, "half a ServiceID")
        req_port = self._requester_port(src)
        if "dgid" in comps and pr.dgid[0] == 0xFF:
            recs = self._multicast_path(pr, comps)
            return [self._reply_records(req, src, recs, PathRecord.SIZE)]
        if "dgid" not in comps and "dlid" not in comps:
            raise _Status(m.SA_ERR_REQ_INSUFFICIENT_COMPONENTS, "PathRecord without DGID or DLID")
        src_port = dst_port = None
        if "sgid" in comps:
            src_port = self._gid_port(pr.sgid)
        if "slid" in comps:
            p = self._port_by_lid(pr.slid)
            if p is None:
                return [self._reply_records(req, src, [], PathRecord.SIZE)]
            if src_port is not None and p is not src_port:
                raise _Status(m.SA_ERR_REQ_INVALID, "SGID and SLID name different ports")
            src_port = p
        if "dgid" in comps:
            dst_port = self._gid_port(pr.dgid)
        if "dlid" in comps:
            p = self._port_by_lid(pr.dlid)
            if p is None:
                return [self._reply_records(req, src, [], PathRecord.SIZE)]
            if dst_port is not None and p is not dst_port:
                raise _Status(m.SA_ERR_REQ_INVALID, "DGID and DLID name different ports")
            dst_port = p
        if src_port is not None:
            sources = [src_port]
        elif req.method == m.GET:
            sources = [req_port]
        else:
            self._check_index()
            sources = sorted(set(self._by_guid.values()), key=lambda p: p.gid_guid)
        out = []
        for s in sources:
            out.extend(self._port_pair_paths(req, pr, comps, req_port, s, dst_port))
            if req.method == m.GET and out:
                break
        return [self._reply_records(req, src, out, PathRecord.SIZE)]

    def _gid_port(self, gid: bytes):
        prefix, guid = self._guid_of_gid(gid)
        if not self._prefix_ok(prefix):
            raise _Status(m.SA_ERR_REQ_INVALID_GID, f"GID prefix 0x{prefix:016x} is not this subnet's")
        p = self._port_by_guid(guid)
        if p is None:
            raise _Status(m.SA_ERR_REQ_INVALID_GID, f"no port with GUID 0x{guid:016x}")
        return p

    def _multicast_path(self, pr, comps) -> list:
        g = self.mcast.get(pr.dgid)
        if g is None:
            return []
        if "pkey" in comps and pr.pkey != g.pkey:
            return []
        if "sl" in comps and pr.sl != g.sl:
            return []
        if "tclass" in comps and pr.tclass != g.tclass:
            return []
        if "flow_label" in comps and pr.flow_label != g.flow_label:
            return []
        if "hop_limit" in comps and pr.hop_limit != g.hop_limit:
            return []
        if "qos_class" in comps and pr.qos_class != 0:
            return []
        return [pr.replace(dgid=g.mgid, dlid=g.mlid, tclass=g.tclass, numb_path=1, reversible=0,
                           pkey=g.pkey, mtu_selector=SELECTOR_EXACT, mtu=g.mtu,
                           rate_selector=SELECTOR_EXACT, rate=g.rate,
                           pkt_life_selector=SELECTOR_EXACT, pkt_life=g.pkt_life, sl=g.sl,
                           qos_class=0, flow_label=g.flow_label,
                           hop_limit=g.hop_limit if g.scope == 2 else 0xFF)]

    def _port_pair_paths(self, req, pr, comps, req_port, s, d) -> list:
        if not (self._share_pkey(req_port, s) and self._share_pkey(req_port, d)
                and self._share_pkey(s, d)):
            return []
        s_end, d_end = self._endport_of(s), self._endport_of(d)
        if "slid" in comps:
            slids = [pr.slid]
        else:
            slids = list(range(s_end.lid, s_end.lid + (1 << s_end.lmc))) if s_end.lid else []
        if "dlid" in comps:
            dlids = [pr.dlid]
        else:
            dlids = list(range(d_end.lid, d_end.lid + (1 << d_end.lmc))) if d_end.lid else []
        if not slids or not dlids:
            return []
        if req.method == m.GET:
            limit = 1
        elif "numb_path" in comps:
            limit = pr.numb_path
        else:
            limit = len(slids) * len(dlids)
        params = self._path_params(pr, comps, s, d)
        if params is None:
            return []
        pairs = [(slids[i], dlids[i], 0) for i in range(min(len(slids), len(dlids)))]
        pairs += [(a, b, 2) for i, a in enumerate(slids) for j, b in enumerate(dlids) if i != j]
        out = []
        for slid, dlid, pref in pairs[:limit]:
            out.append(self._build_path(pr, comps, s, d, slid, dlid, pref, params))
        return out

    def _path_params(self, pr, comps, s, d):
        """(mtu, rate, pkt_life, pkey, sl, reversible) of the path s -> d, or None."""
        if s is d:
            hops = 0
            mtu, rate = min(s.mtu_cap, s.neighbor_mtu or s.mtu_cap), port_rate(s.width_active, s.speed_active)
        else:
            hops = self.route_hops(s, d)
            if hops is None:
                return None
            mr = self.link_mtu_rate(s, d)
            if mr is None:
                return None
            mtu, rate = mr
        pkt_life = 0 if s is d else self.subnet_timeout
        if "mtu_selector" in comps and "mtu" in comps:
            want = pr.mtu
            sel = pr.mtu_selector
            if sel == SELECTOR_GT and mtu <= want:
                return None
            if sel == SELECTOR_LT and mtu >= want:
                if want <= 1:
                    return None
                mtu = want - 1
            if sel == SELECTOR_EXACT:
                if mtu < want:
                    return None
                mtu = want
        if "rate_selector" in comps and "rate" in comps:
            want = pr.rate
            sel = pr.rate_selector
            if sel == SELECTOR_GT and compare_rates(rate, want) <= 0:
                return None
            if sel == SELECTOR_LT and compare_rates(rate, want) >= 0:
                rate = rate_prev(want)
                if not rate:
                    return None
            if sel == SELECTOR_EXACT:
                if compare_rates(rate, want) != 0:
                    return None
                rate = want
        if "pkt_life_selector" in comps and "pkt_life" in comps:
            want = pr.pkt_life
            sel = pr.pkt_life_selector
            if sel == SELECTOR_GT and pkt_life <= want:
                return None
            if sel == SELECTOR_LT and pkt_life >= want:
                if want <= 1:
                    return None
                pkt_life = want - 1
            if sel == SELECTOR_EXACT:
                if pkt_life < want:
                    return None
                pkt_life = want
        raw = "raw_traffic" in comps and pr.raw_traffic
        if "pkey" in comps and not raw:
            pkey = pr.pkey
            if not self._share_this_pkey(s, d, pkey):
                return None
        else:
            pkey = self._common_pkey(s, d)
            if not pkey:
                return None
        sl = pr.sl if "sl" in comps else self.partitions.sl_for(pkey)
        if raw:
            pkey = 0
        reversible = s is d or self.route_hops(d, s) is not None
        if "reversible" in comps and pr.reversible and not reversible:
            return None
        return mtu, rate, pkt_life, pkey, sl, reversible

    def _build_path(self, pr, comps, s, d, slid, dlid, pref, params) -> PathRecord:
        mtu, rate, pkt_life, pkey, sl, reversible = params
        return PathRecord(
            service_id=pr.service_id if "service_id" in comps else 0,
            dgid=self._port_gid(d), sgid=self._port_gid(s), dlid=dlid, slid=slid,
            raw_traffic=pr.raw_traffic if "raw_traffic" in comps else 0,
            flow_label=0, hop_limit=0, tclass=0, reversible=1 if reversible else 0, numb_path=0,
            pkey=pkey, qos_class=0, sl=sl, mtu_selector=SELECTOR_EXACT, mtu=mtu,
            rate_selector=SELECTOR_EXACT, rate=rate, pkt_life_selector=SELECTOR_EXACT,
            pkt_life=pkt_life, preference=pref)

    # ------------------------------------------------------------------------------------------
    # MCMemberRecord

    _JOIN_COMPS = ("mgid", "port_gid", "join_state")
    _CREATE_COMPS = ("mgid", "port_gid", "join_state", "qkey", "tclass", "pkey", "flow_label", "sl")

    def _mcm_validate_rate_mtu(self, rec, comps):
        if "rate_selector" in comps and "rate" in comps and not rate_valid(rec.rate):
            raise _Status(m.SA_ERR_REQ_INVALID, "invalid rate")
        if "mtu_selector" in comps and "mtu" in comps and not mtu_valid(rec.mtu):
            raise _Status(m.SA_ERR_REQ_INVALID, "invalid MTU")

    @staticmethod
    def _other_fields_match(rec, comps, g: McGroup) -> bool:
        """Q_Key, P_Key, TClass, SL, FlowLabel, HopLimit of the request against the group's."""
        if "qkey" in comps and rec.qkey != g.qkey:
            return False
        if "pkey" in comps:
            if not (rec.pkey | g.pkey) & PKEY_FULL_BIT:
                return False
            if rec.pkey & 0x7FFF != g.pkey & 0x7FFF:
                return False
        if "tclass" in comps and rec.tclass != g.tclass:
            return False
        if "sl" in comps and rec.sl != g.sl:
            return False
        if "flow_label" in comps and rec.flow_label != g.flow_label:
            return False
        if "hop_limit" in comps and rec.hop_limit != g.hop_limit:
            return False
        return True

    @staticmethod
    def _selectors_match(rec, comps, g: McGroup) -> bool:
        if "mtu_selector" in comps:
            sel, want = rec.mtu_selector, rec.mtu
            if sel == SELECTOR_GT and g.mtu <= want:
                return False
            if sel == SELECTOR_LT and g.mtu >= want:
                return False
            if sel == SELECTOR_EXACT and g.mtu != want:
                return False
        if "rate_selector" in comps:
            sel, want = rec.rate_selector, rec.rate
            c = compare_rates(g.rate, want)
            if sel == SELECTOR_GT and c <= 0:
                return False
            if sel == SELECTOR_LT and c >= 0:
                return False
            if sel == SELECTOR_EXACT and c != 0:
                return False
        return True

    def _group_record(self, g: McGroup, port_gid: bytes, join_state: int, proxy: int) -> MCMemberRecord:
        return MCMemberRecord(
            mgid=g.mgid, port_gid=port_gid, qkey=g.qkey, mlid=g.mlid, mtu_selector=SELECTOR_EXACT,
            mtu=g.mtu, tclass=g.tclass, pkey=g.pkey, rate_selector=SELECTOR_EXACT, rate=g.rate,
            pkt_life_selector=SELECTOR_EXACT, pkt_life=g.pkt_life, sl=g.sl, flow_label=g.flow_label,
            hop_limit=g.hop_limit, scope=g.scope, join_state=join_state, proxy_join=proxy)

    def _mcm_port(self, rec):
        """The member port named by PortGID (prefix checked)."""
        prefix, guid = self._guid_of_gid(rec.port_gid)
        if not self._prefix_ok(prefix):
            raise _Status(m.SA_ERR_REQ_INVALID_GID, "PortGID prefix is not this subnet's")
        port = self._port_by_guid(guid)
        if port is None:
            raise _Status(m.SA_ERR_REQ_INVALID, f"unknown PortGID GUID 0x{guid:016x}")
        return port

    def _member_key(self, port) -> bytes:
        return self._port_gid(port)

    def _validate_modify(self, g: McGroup, member: bytes, req_port) -> bool:
        """o15-0.2.1: only the port itself may change a record it joined without ProxyJoin; a
        proxy-joined record may be changed by any port of the group's partition."""
        if g.proxy.get(member):
            return self._has_pkey(req_port, g.pkey)
        return self._member_key(req_port) == member

    def _mcmember_join(self, req, src):
        rec = MCMemberRecord.unpack(req.data)
        comps = set(comp_fields(MCM_COMP, req.comp_mask))
        if not all(c in comps for c in self._JOIN_COMPS):
            raise _Status(m.SA_ERR_REQ_INSUFFICIENT_COMPONENTS, "join needs MGID, PortGID, JoinState")
        self._mcm_validate_rate_mtu(rec, comps)
        req_port = self._requester_port(src)
        port = self._mcm_port(rec)
        proxy = port is not req_port
        if proxy and not self._share_pkey(port, req_port):
            raise _Status(m.SA_ERR_REQ_INVALID, "proxy join between ports that share no partition")
        if "pkey" in comps and not rec.pkey & 0x7FFF:
            raise _Status(m.SA_ERR_REQ_INVALID, "invalid P_Key")
        join_state = rec.join_state
        member = self._member_key(port)
        actions: list = []
        g = self.mcast.get(rec.mgid)
        created = False
        if g is None:
            if not join_state & FULL_STATES:
                raise _Status(m.SA_ERR_REQ_INVALID, "only a full member can create a group")
            if not all(c in comps for c in self._CREATE_COMPS):
                raise _Status(m.SA_ERR_REQ_INSUFFICIENT_COMPONENTS,
                              "creating a group needs MGID, PortGID, JoinState, Q_Key, P_Key, "
                              "SL, FlowLabel, TClass")
            g = self._create_group(rec, comps, port)
            created = True
        elif not self._other_fields_match(rec, comps, g):
            raise _Status(m.SA_ERR_REQ_INVALID, "components differ from the group's")
        try:
            if not self._selectors_match(rec, comps, g):
                raise _Status(m.SA_ERR_REQ_INVALID, "MTU/rate selector does not match the group")
            if port.neighbor_mtu and port.neighbor_mtu < g.mtu and not port.node.is_switch:
                raise _Status(m.SA_ERR_REQ_INVALID, "port MTU below the group's")
            if not port.node.is_switch and compare_rates(
                    port_rate(port.width_active, port.speed_active), g.rate) < 0:
                raise _Status(m.SA_ERR_REQ_INVALID, "port rate below the group's")
            if not join_state:
                raise _Status(m.SA_ERR_REQ_INVALID, "JoinState 0")
            if not self._has_pkey(port, g.pkey):
                raise _Status(m.SA_ERR_REQ_INVALID, "port is not in the group's partition")
            if not created and member in g.members and not self._validate_modify(g, member, req_port):
                raise _Status(m.SA_ERR_REQ_INVALID, "not allowed to modify this membership")
        except _Status:
            if created:
                self.mcast.delete_group(g.mgid)
            raise
        before = self._mft_before(g) if created or self._role_changes(g, member, join_state) else None
        old, new = self.mcast.join(g.mgid, member, join_state, proxy=proxy)
        if before is not None:
            actions += self._mft_changed(g, before)
        if not old & FULL_STATES and new & FULL_STATES and g.full_members == 1:
            actions += self._notify(smp.TRAP_MCG_CREATED, g.mgid, group=g)
        resp = self._group_record(g, rec.port_gid, new, rec.proxy_join)
        return [self._reply_one(req, src, resp, MCMemberRecord.SIZE)] + actions

    def _create_group(self, rec, comps, port) -> McGroup:
        mgid = bytes(rec.mgid)
        scope_req = rec.scope if "scope" in comps else 2
        if _gid_is_zero(mgid):
            mgid = self._new_mgid(scope_req or 2)
        else:
            self._validate_mgid(mgid)
            sig = mgid[2] << 8 | mgid[3]
            if sig in (0x401B, 0x601B):
                bcast = bytes([0xFF, 0x10 | (mgid[1] & 0xF), 0x40, 0x1B, mgid[4], mgid[5]]) + bytes(6) + b"\xff" * 4
                if mgid != bcast:
                    b = self.mcast.get(bcast)
                    if b is None or not self._other_fields_match(rec, comps, b):
                        raise _Status(m.SA_ERR_REQ_INVALID,
                                      "IPoIB group without a matching broadcast group")
        if self.create_requires_full and not self._is_full(port, rec.pkey):
            raise _Status(m.SA_ERR_REQ_INVALID, "only a full member of the partition creates a group")
        mtu, rate = self._realizable(rec, comps, port)
        try:
            return self.mcast.create_group(
                mgid, qkey=rec.qkey, pkey=rec.pkey, mtu=mtu, rate=rate, sl=rec.sl,
                flow_label=rec.flow_label, tclass=rec.tclass,
                hop_limit=rec.hop_limit if "hop_limit" in comps else 0,
                scope=mgid[1] & 0xF,
                pkt_life=rec.pkt_life if "pkt_life" in comps else self.subnet_timeout,
                mlid=rec.mlid if "mlid" in comps else None, join_state=rec.join_state)
        except McastError as e:
            raise _Status(m.SA_ERR_NO_RESOURCES, str(e)) from None

    def _new_mgid(self, scope: int) -> bytes:
        for _ in range(1 << 16):
            self._mgid_counter = (self._mgid_counter + 1) & 0xFFFFFFFF
            mgid = (bytes([0xFF, 0x10 | (scope & 0xF), 0xA0, 0x1B]) + self.gid_prefix.to_bytes(8, "big")
                    + self._mgid_counter.to_bytes(4, "big"))
            if self.mcast.get(mgid) is None:
                return mgid
        raise _Status(m.SA_ERR_NO_RESOURCES, "no MGID left")

    @staticmethod
    def _validate_mgid(mgid: bytes):
        """o15-0.1.5: a requested MGID must be multicast; apart from IPoIB's, its flags must be
        0 or T, and the SA's own signature A01B may not be link-local."""
        if mgid[0] != 0xFF:
            raise _Status(m.SA_ERR_REQ_INVALID, "MGID is not multicast")
        sig = mgid[2] << 8 | mgid[3]
        if sig in (0x401B, 0x601B):
            return
        if mgid[1] & 0xE0:
            raise _Status(m.SA_ERR_REQ_INVALID, "MGID uses reserved flags")
        if sig == 0xA01B and mgid[1] & 0xF == 2:
            raise _Status(m.SA_ERR_REQ_INVALID, "SA-signature MGID with link-local scope")

    def _realizable(self, rec, comps, port) -> tuple[int, int]:
        """MTU and rate of a new group (OpenSM's mgrp_request_is_realizable): the port's own when
        not asked for, else what the selector allows."""
        port_mtu = port.neighbor_mtu or port.mtu_cap
        prate = port_rate(port.width_active, port.speed_active)
        if "mtu" in comps and "mtu_selector" in comps and rec.mtu_selector != SELECTOR_BEST:
            want, sel = rec.mtu, rec.mtu_selector
            mtu = want
            if sel == SELECTOR_GT:
                if want >= port_mtu:
                    raise _Status(m.SA_ERR_REQ_INVALID, "MTU above the port's")
                mtu = port_mtu
            elif sel == SELECTOR_LT:
                mtu = port_mtu if want > port_mtu else want - 1
            if not mtu_valid(mtu):
                raise _Status(m.SA_ERR_REQ_INVALID, "MTU out of range")
        else:
            mtu = port_mtu
        if "rate" in comps and "rate_selector" in comps and rec.rate_selector != SELECTOR_BEST:
            want, sel = rec.rate, rec.rate_selector
            rate = want
            if sel == SELECTOR_GT:
                if compare_rates(want, prate) >= 0:
                    raise _Status(m.SA_ERR_REQ_INVALID, "rate above the port's")
                rate = prate
            elif sel == SELECTOR_LT:
                rate = prate if compare_rates(want, prate) > 0 else rate_prev(want)
            if not rate_valid(rate):
                raise _Status(m.SA_ERR_REQ_INVALID, "rate out of range")
        else:
            rate = prate
        return mtu, rate

    def _mcmember_leave(self, req, src):
        rec = MCMemberRecord.unpack(req.data)
        comps = set(comp_fields(MCM_COMP, req.comp_mask))
        if not all(c in comps for c in self._JOIN_COMPS):
            raise _Status(m.SA_ERR_REQ_INSUFFICIENT_COMPONENTS, "leave needs MGID, PortGID, JoinState")
        self._mcm_validate_rate_mtu(rec, comps)
        prefix, guid = self._guid_of_gid(rec.port_gid)
        if not self._prefix_ok(prefix):
            raise _Status(m.SA_ERR_REQ_INVALID_GID, "PortGID prefix is not this subnet's")
        req_port = self._requester_port(src)
        g = self.mcast.get(rec.mgid)
        if g is None:
            raise _Status(m.SA_ERR_REQ_INVALID, "no such group")
        member = make_gid(self.gid_prefix, guid)
        stored = g.members.get(member)
        if stored is None:
            raise _Status(m.SA_ERR_REQ_INVALID, "port is not a member")
        want = rec.join_state
        if not want & stored or want & ~stored & 0xF:
            raise _Status(m.SA_ERR_REQ_INVALID, "JoinState does not match the membership")
        if not self._validate_modify(g, member, req_port):
            raise _Status(m.SA_ERR_REQ_INVALID, "not allowed to modify this membership")
        new = stored & ~want & 0xF
        resp = self._group_record(g, rec.port_gid, new, rec.proxy_join)
        actions = self._remove_member(g, member, want)
        return [self._reply_one(req, src, resp, MCMemberRecord.SIZE)] + actions

    def _remove_member(self, g: McGroup, member: bytes, bits: int, force: bool = False) -> list:
        """Clear ``bits`` of a member (McastChanged and trap 67 as needed). ``force``: the port
        is gone from the subnet, so the tree the SM programmed is stale whatever it was."""
        if member not in g.members:
            return []
        stored = g.members[member]
        full_before = g.full_members
        role_change = self._role_changes(g, member, 0, clear=bits)
        before = self._mft_before(g) if role_change or (stored & FULL_STATES and full_before == 1) else None
        old, new, deleted = self.mcast.leave(g.mgid, member, bits)
        actions: list = []
        if before is not None:
            actions += self._mft_changed(g, before, deleted=deleted)
        if force and not actions:
            self._last_mft.pop(g.mlid, None)
            actions.append(McastChanged(g.mlid))
        if old & FULL_STATES and not new & FULL_STATES and g.full_members == 0:
            actions += self._notify(smp.TRAP_MCG_DELETED, g.mgid, group=g)
        return actions

    @staticmethod
    def _role(state: int) -> int:
        return 2 if state & RECEIVER_STATES else (1 if state else 0)

    def _role_changes(self, g: McGroup, member: bytes, join_bits: int, clear: int = 0) -> bool:
        old = g.members.get(member, 0)
        new = (old | join_bits) & ~clear & 0xF
        return self._role(old) != self._role(new)

    def _mft_before(self, g: McGroup) -> dict:
        cached = self._last_mft.get(g.mlid)
        if cached is not None and cached[0] is g:
            return cached[1]
        return self._compute_mft(g)

    def _compute_mft(self, g: McGroup) -> dict:
        self._check_index()
        mft = self.mcast.mft_for(self.subnet, g, port_index=self._by_guid)
        self._last_mft[g.mlid] = (g, mft)
        return mft

    def _mft_changed(self, g: McGroup, before: dict, deleted: bool = False) -> list:
        if deleted or self.mcast.get(g.mgid) is not g:
            self._last_mft.pop(g.mlid, None)
            after: dict = {}
        else:
            after = self._compute_mft(g)
        return [McastChanged(g.mlid)] if after != before or deleted else []

    def _mcmember_query(self, req, src):
        rec = MCMemberRecord.unpack(req.data)
        comps = set(comp_fields(MCM_COMP, req.comp_mask))
        self._mcm_validate_rate_mtu(rec, comps)
        req_port = self._requester_port(src)
        trusted = bool(self.sm_key) and req.sm_key == self.sm_key
        out = []
        for g in self.mcast:
            if "mgid" in comps and rec.mgid != g.mgid:
                continue
            if "mlid" in comps and rec.mlid != g.mlid:
                continue
            if not self._has_pkey(req_port, g.pkey):
                continue
            if not self._other_fields_match(rec, comps, g):
                continue
            if "proxy_join" in comps and rec.proxy_join != 0:
                continue
            if not self._selectors_match(rec, comps, g):
                continue

            def state_ok(state):
                if "scope" in comps and rec.scope != g.scope:
                    return False
                if "join_state" in comps and rec.join_state != state:
                    return False
                return True

            if "port_gid" in comps:
                prefix, guid = self._guid_of_gid(rec.port_gid)
                member = make_gid(self.gid_prefix, guid)
                if member not in g.members or not state_ok(g.members[member]):
                    continue
                out.append(self._group_record(g, member, g.members[member], int(g.proxy.get(member, False))))
            elif trusted:
                for member, state in sorted(g.members.items()):
                    if state_ok(state):
                        out.append(self._group_record(g, member, state, int(g.proxy.get(member, False))))
            else:
                if state_ok(g.join_state):
                    out.append(self._group_record(g, bytes(16), g.join_state, 0))
        if not trusted:  # PortGID, JoinState and ProxyJoin are only for trusted requesters
            out = [r.replace(port_gid=bytes(16), join_state=0, proxy_join=0) for r in out]
        return [self._reply_records(req, src, out, MCMemberRecord.SIZE)]

    # ------------------------------------------------------------------------------------------
    # NodeRecord, PortInfoRecord

    def _node_info(self, port) -> NodeInfo:
        n = port.node
        ni = n.node_info if isinstance(n.node_info, NodeInfo) else NodeInfo(
            node_type=smp.NODE_TYPE_SWITCH if n.is_switch else smp.NODE_TYPE_CA,
            num_ports=n.num_ports, sys_guid=n.guid, node_guid=n.guid, port_guid=port.gid_guid,
            partition_cap=32, local_port=port.num)
        if n.is_switch:
            return ni.replace(port_guid=port.gid_guid)
        return ni.replace(port_guid=port.gid_guid, local_port=port.num)

    def _node_records(self):
        for n in sorted(self.subnet.nodes.values(), key=lambda n: n.guid):
            ports = [n.ports[0]] if n.is_switch and 0 in n.ports else \
                [p for _, p in sorted(n.ports.items()) if not n.is_switch and p.linked]
            for p in ports:
                yield p, NodeRecord(lid=p.lid, node_info=self._node_info(p),
                                    node_desc=NodeDescription(description=_desc(n.desc)))

    def _node_record(self, req, src):
        rec = NodeRecord.unpack(req.data)
        mask = req.comp_mask
        req_port = self._requester_port(src)
        want = {name: bit for name, bit in NR_COMP_FULL.items() if mask >> bit & 1}
        out = []
        for p, r in self._node_records():
            if not self._share_pkey(req_port, p):
                continue
            if not self._nr_match(r, rec, want, p):
                continue
            out.append(r)
        return [self._reply_records(req, src, out, NodeRecord.SIZE)]

    @staticmethod
    def _nr_match(r, q, want, port) -> bool:
        for name in want:
            if name == "lid":
                if not port.lid or not port.lid <= q.lid < port.lid + (1 << port.lmc):
                    return False
            elif name == "node_desc":
                if r.node_desc.description != q.node_desc.description:
                    return False
            elif getattr(r.node_info, name) != getattr(q.node_info, name):
                return False
        return True

    def _port_info(self, port) -> PortInfo:
        end = self._endport_of(port)
        sp = self.subnet.sm_port
        base = port.info if isinstance(port.info, PortInfo) else PortInfo(
            gid_prefix=self.gid_prefix, master_sm_lid=self._sm_lid(),
            capability_mask=smp.CAP_IS_SM if sp is port else 0,
            link_width_enabled=port.width_active, link_width_supported=port.width_active,
            link_speed_supported=port.speed_active, link_speed_enabled=port.speed_active,
            link_down_default_state=2, vl_cap=1, operational_vls=1, guid_cap=1,
            subnet_timeout=self.subnet_timeout)
        kw = dict(local_port=port.num, port_state=port.state, phys_state=port.phys,
                  mtu_cap=port.mtu_cap, neighbor_mtu=port.neighbor_mtu,
                  link_width_active=port.width_active, link_speed_active=port.speed_active)
        if end is port:
            kw.update(lid=port.lid, lmc=port.lmc)
        return base.replace(**kw)

    def _port_info_record(self, req, src):
        rec = PortInfoRecord.unpack(req.data)
        mask = req.comp_mask
        req_port = self._requester_port(src)
        trusted = bool(self.sm_key) and req.sm_key == self.sm_key
        want = [name for name, bit in PIR_COMP_FULL.items() if mask >> bit & 1]
        out = []
        for n in sorted(self.subnet.nodes.values(), key=lambda n: n.guid):
            for num, p in sorted(n.ports.items()):
                if not n.is_switch and not p.linked:
                    continue
                end = self._endport_of(p)
                if not self._share_pkey(req_port, end):
                    continue
                r = PortInfoRecord(lid=end.lid, port_num=num, options=0, port_info=self._port_info(p))
                if not self._pir_match(r, rec, want, end):
                    continue
                if not trusted:
                    r = r.replace(port_info=r.port_info.replace(m_key=0))
                out.append(r)
        return [self._reply_records(req, src, out, PortInfoRecord.SIZE)]

    @staticmethod
    def _pir_match(r, q, want, end) -> bool:
        for name in want:
            if name == "lid":
                if not end.lid or not end.lid <= q.lid < end.lid + (1 << end.lmc):
                    return False
            elif name in ("port_num", "options"):
                if getattr(r, name) != getattr(q, name):
                    return False
            elif name == "pi_lid":
                if r.port_info.lid != q.port_info.lid:
                    return False
            elif getattr(r.port_info, name) != getattr(q.port_info, name):
                return False
        return True

    # ------------------------------------------------------------------------------------------
    # InformInfo and Reports

    def _inform_info(self, req, src):
        ii = InformInfo.unpack(req.data)
        req_port = self._requester_port(src)
        trusted = bool(self.sm_key) and req.sm_key == self.sm_key

        def fail(reason):
            # o13-13.1.1: the response carries Subscribe = 0
            log.info("SA: InformInfo from LID %s refused: %s", src.lid, reason)
            bad = req.replace(data=ii.replace(subscribe=0).pack().ljust(m.SA_DATA_LEN, b"\0"))
            return [self._error(bad, src, m.SA_ERR_REQ_INVALID)]

        if ii.subscribe > 1:
            return fail("Subscribe is neither 0 nor 1")
        if ii.is_generic and ii.trap_num in SECURITY_TRAPS and not trusted:
            return fail("security traps need a trusted (SM_Key) requester")
        end = ii.lid_range_end or ii.lid_range_begin
        sub = Subscription(requester=src, port_guid=req_port.gid_guid, gid=bytes(ii.gid),
                           lid_begin=ii.lid_range_begin, lid_end=end, is_generic=ii.is_generic,
                           type=ii.type, trap_num=ii.trap_num, producer_type=ii.producer_type,
                           info=ii)
        existing = [s for s in self.subscriptions if s.key() == sub.key()]
        if ii.subscribe:
            if not _gid_is_zero(ii.gid):
                prefix, guid = self._guid_of_gid(ii.gid)
                port = self._port_by_guid(guid) if self._prefix_ok(prefix) else None
                if port is None:
                    return fail("unknown GID")
                if not self._share_pkey(port, req_port):
                    return fail("GID and requester share no partition")
            elif ii.lid_range_begin != 0xFFFF and ii.lid_range_begin > end:
                return fail("LIDRangeBegin above LIDRangeEnd")
            for s in existing:
                self.subscriptions.remove(s)
            self.subscriptions.append(sub)
        else:
            if not existing:
                return fail("no such subscription")
            for s in existing:
                self.subscriptions.remove(s)
        return [self._reply_one(req, src, ii, InformInfo.SIZE)]

    def _notice(self, trap: int, gid: bytes) -> Notice:
        details = bytes(6) + bytes(gid) + bytes(54 - 22)
        return Notice(is_generic=1, type=NOTICE_GENERIC_TYPE, producer_type=PRODUCER_CLASS_MANAGER,
                      trap_num=trap, issuer_lid=self._sm_lid(), notice_toggle=0, notice_count=0,
                      data_details=details, issuer_gid=self._sm_gid())

    def _notify(self, trap: int, gid: bytes, *, subject_port=None, group: McGroup | None = None) -> list:
        """Report(Notice) for every subscription the notice matches (OpenSM's match rules; for
        traps 64-67 a subscription's GID or LID range may name the SM or the subject)."""
        if not self.subscriptions:
            return []
        ntc = self._notice(trap, gid)
        out = []
        drop = []
        subject_lid = subject_port.lid if subject_port is not None else 0
        for s in self.subscriptions:
            if not s.is_generic:
                continue
            if not _gid_is_zero(s.gid):
                if s.gid not in (ntc.issuer_gid, bytes(gid)):
                    continue
            elif s.lid_begin != 0xFFFF:
                if not (s.lid_begin <= ntc.issuer_lid <= s.lid_end
                        or (subject_lid and s.lid_begin <= subject_lid <= s.lid_end)):
                    continue
            if s.type != 0xFFFF and s.type != ntc.type:
                continue
            if s.trap_num != 0xFFFF and s.trap_num != trap:
                continue
            if s.producer_type != 0xFFFFFF and s.producer_type != ntc.producer_type:
                continue
            dest_port = self._port_by_lid(s.requester.lid)
            if dest_port is None:
                continue
            if group is not None:
                if not self._has_pkey(dest_port, group.pkey):
                    continue
            elif subject_port is not None and not self._share_pkey(subject_port, dest_port):
                if s.lid_begin != 0xFFFF:
                    drop.append(s)  # o13-17.1.2
                continue
            out.append(self._report(s.requester, ntc))
        for s in drop:
            if s in self.subscriptions:
                self.subscriptions.remove(s)
        return out

    def _report(self, dest: Requester, ntc: Notice) -> SaReport:
        self._report_tid = (self._report_tid + 1) & 0xFFFFFFFF or 1
        tid = self._report_tid
        mad = m.new_mad(m.SAMad, method=m.REPORT, tid=tid, attr_id=m.ATTR_NOTICE,
                        data=ntc.pack().ljust(m.SA_DATA_LEN, b"\0")).pack()
        self.pending_reports[tid] = _Pending(dest, mad, self._now + self.report_timeout)
        return SaReport(dest, mad)


def _desc(text: str) -> str:
    raw = (text or "").encode("utf-8")[:64]
    return raw.decode("utf-8", "ignore")
