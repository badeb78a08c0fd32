"""The SA itself: :class:`SubnetAdministrator` takes SA MADs, checks and decodes them, dispatches
each to the handler of its attribute and method, and frames the replies (one MAD, or the RMPP
segments of a GetTableResp); it keeps the port and P_Key lookups the record handlers share and the
hooks the SM calls after a sweep or on a timer (OpenSM's osm_sa.c and osm_sa_mad_ctrl.c). The
record handlers are the mixins of the modules beside this one."""

from __future__ import annotations

import logging

from ...mad import rmpp
from ...wire import mad as m
from ...wire import smp_attrs as smp
from ...wire.errors import ParseError, WireError
from ...wire.headers import GID_PREFIX_DEFAULT, LID_MCAST_FIRST, PKEY_FULL_BIT, make_gid
from ..mcast import DEFAULT_PKT_LIFE, McastManager
from ..partitions import PartitionConfig, default_partitions
from .actions import Requester, SaReply, SaReport, SaStatus
from .informinfo import InformInfoMixin, PendingReport, Subscription
from .mcmember_record import MCMemberRecordMixin
from .path_record import GraphPaths, PathRecordMixin
from .records import RecordMixin

log = logging.getLogger(__package__)

_NO_RESPONSE_METHODS = {m.SEND, m.TRAP, m.TRAP_REPRESS}
_REQUEST_METHODS = {m.GET, m.SET, m.GET_TABLE, m.DELETE}


def _pad8(n: int) -> int:
    return (n + 7) & ~7


class SubnetAdministrator(PathRecordMixin, MCMemberRecordMixin, RecordMixin, InformInfoMixin):
    """The SA. ``partitions`` defaults to OpenSM's default configuration, ``mcast`` to a new
    :class:`McastManager`; without ``route_hops``/``link_mtu_rate`` the SA uses min-hop paths on
    the subnet model (:class:`GraphPaths`).

    The record handlers come from one mixin per attribute family (path_record, mcmember_record,
    records, informinfo); this class holds what they share."""

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
        self.pending_reports: dict[int, PendingReport] = {}
        self.stats: dict[str, int] = {}
        self._now = 0.0
        self._report_tid = 0x5A000000
        self._mgid_counter = 0
        self._by_guid: dict[int, object] = {}
        self._by_lid: dict[int, object] = {}
        self._index_nodes = -1
        self._pkey_cache: dict = {}
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
        if not self.pending_reports:
            return None
        return min(p.deadline for p in self.pending_reports.values())

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
        except SaStatus as e:
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
            raise SaStatus(m.SA_ERR_REQ_INVALID, f"unknown requester LID {src.lid}")
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

    @staticmethod
    def _gid_is_zero(g: bytes) -> bool:
        return not any(g)

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
