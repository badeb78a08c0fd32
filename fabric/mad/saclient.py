"""SA client side (for IPoIB's path and multicast queries and for ``saquery``), sans-IO.

Builders return the 256 octets of a request MAD; send them to the SA (the SM port's LID, QP1,
Q_Key 0x80010000, the GSI's). Feed what comes back to a :class:`SaCollector`,
which reassembles RMPP transfers per transaction and yields an :class:`SaResponse` with the
decoded records::

    tid, mad = path_record_query(my_gid, peer_gid, pkey=0xffff)
    ... send mad, receive reply octets ...
    resp = collector.feed(reply)          # None until the transfer is complete
    if resp and resp.ok: path = resp.records[0]

Every builder takes ``tid=None`` (a fresh TID from a process-wide counter) and returns
``(tid, mad_octets)``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..wire import mad as m
from ..wire.headers import IPOIB_QKEY
from ..wire.sa_attrs import (MCM_COMP, NR_COMP_FULL, PIR_COMP_FULL, PR_COMP, SELECTOR_EXACT,
                             ClassPortInfo, InformInfo, MCMemberRecord, NodeRecord, PathRecord,
                             PortInfoRecord, comp_mask)
from ..wire.smp_attrs import Notice
from .rmpp import Reassembler, RmppError, reassembled

__all__ = ["SaResponse", "SaCollector", "parse_response", "path_record_query", "mcmember_join",
           "mcmember_leave", "mcmember_records", "node_records", "port_info_records",
           "class_port_info", "inform_info", "report_response", "parse_report", "RECORD_TYPES",
           "next_tid"]

RECORD_TYPES = {
    m.ATTR_CLASS_PORT_INFO: ClassPortInfo, m.ATTR_PATH_RECORD: PathRecord,
    m.ATTR_MCMEMBER_RECORD: MCMemberRecord, m.ATTR_NODE_RECORD: NodeRecord,
    m.ATTR_PORT_INFO_RECORD: PortInfoRecord, m.ATTR_INFORM_INFO: InformInfo,
    m.ATTR_NOTICE: Notice,
}

_tids = itertools.count(0x53410000)


def next_tid() -> int:
    return next(_tids) & 0xFFFFFFFFFFFFFFFF


def _request(method: int, attr_id: int, record, mask: int, tid, sm_key: int = 0):
    tid = next_tid() if tid is None else tid
    data = record.pack().ljust(m.SA_DATA_LEN, b"\0") if record is not None else bytes(m.SA_DATA_LEN)
    mad = m.new_mad(m.SAMad, method=method, tid=tid, attr_id=attr_id, comp_mask=mask,
                    sm_key=sm_key, data=data)
    return tid, mad.pack()


# -- builders ----------------------------------------------------------------------------------


def _selectors(f: dict, names: list, **pairs) -> None:
    """Add (selector, value) components such as mtu=(2, 4) as mtu_selector and mtu."""
    for name, pair in pairs.items():
        if pair is not None:
            f[f"{name}_selector"], f[name] = pair
            names += [f"{name}_selector", name]


def path_record_query(sgid: bytes, dgid: bytes, pkey: int | None = None, tid: int | None = None, *,
                      method: int = m.GET, sl: int | None = None, numb_path: int | None = None,
                      reversible: bool | None = None, mtu: tuple | None = None,
                      rate: tuple | None = None, slid: int | None = None, dlid: int | None = None,
                      service_id: int | None = None, sm_key: int = 0):
    """PathRecord Get (or GetTable) from ``sgid`` to ``dgid`` (either may be None to leave it out).
    ``mtu``/``rate`` are (selector, value)."""
    f = {}
    names = []
    for name, val in (("sgid", sgid), ("dgid", dgid), ("pkey", pkey), ("sl", sl),
                      ("numb_path", numb_path), ("slid", slid), ("dlid", dlid),
                      ("service_id", service_id)):
        if val is not None:
            f[name] = bytes(val) if isinstance(val, (bytes, bytearray)) else val
            names.append(name)
    if reversible is not None:
        f["reversible"] = int(reversible)
        names.append("reversible")
    _selectors(f, names, mtu=mtu, rate=rate)
    return _request(method, m.ATTR_PATH_RECORD, PathRecord(**f), comp_mask(PR_COMP, *names), tid, sm_key)


def mcmember_join(mgid: bytes, port_gid: bytes, join_state: int, qkey: int | None = None,
                  pkey: int | None = None, tid: int | None = None, *, sl: int | None = None,
                  flow_label: int | None = None, tclass: int | None = None,
                  hop_limit: int | None = None, scope: int | None = None,
                  mtu: tuple | None = None, rate: tuple | None = None, mlid: int | None = None,
                  proxy: bool = False, create: bool = False, sm_key: int = 0):
    """Set(MCMemberRecord): join ``port_gid`` to ``mgid`` (all-zero MGID: the SA assigns one).
    ``create=True`` fills the components a group creation needs (Q_Key 0x0b1b, P_Key 0xffff,
    SL, FlowLabel, TClass 0) unless given. ``mtu``/``rate`` are (selector, value)."""
    if create:
        qkey = IPOIB_QKEY if qkey is None else qkey
        pkey = 0xFFFF if pkey is None else pkey
        sl = 0 if sl is None else sl
        flow_label = 0 if flow_label is None else flow_label
        tclass = 0 if tclass is None else tclass
    f = {"mgid": bytes(mgid), "port_gid": bytes(port_gid), "join_state": join_state,
         "proxy_join": int(proxy)}
    names = ["mgid", "port_gid", "join_state"]
    for name, val in (("qkey", qkey), ("pkey", pkey), ("sl", sl), ("flow_label", flow_label),
                      ("tclass", tclass), ("hop_limit", hop_limit), ("scope", scope), ("mlid", mlid)):
        if val is not None:
            f[name] = val
            names.append(name)
    _selectors(f, names, mtu=mtu, rate=rate)
    return _request(m.SET, m.ATTR_MCMEMBER_RECORD, MCMemberRecord(**f), comp_mask(MCM_COMP, *names),
                    tid, sm_key)


def mcmember_leave(mgid: bytes, port_gid: bytes, join_state: int, tid: int | None = None, *,
                   sm_key: int = 0):
    """Delete(MCMemberRecord): clear ``join_state`` bits of the port's membership."""
    rec = MCMemberRecord(mgid=bytes(mgid), port_gid=bytes(port_gid), join_state=join_state)
    return _request(m.DELETE, m.ATTR_MCMEMBER_RECORD, rec,
                    comp_mask(MCM_COMP, "mgid", "port_gid", "join_state"), tid, sm_key)


def mcmember_records(mgid: bytes | None = None, mlid: int | None = None,
                     port_gid: bytes | None = None, tid: int | None = None, *,
                     method: int = m.GET_TABLE, sm_key: int = 0):
    f, names = {}, []
    for name, val in (("mgid", mgid), ("mlid", mlid), ("port_gid", port_gid)):
        if val is not None:
            f[name] = bytes(val) if isinstance(val, (bytes, bytearray)) else val
            names.append(name)
    return _request(method, m.ATTR_MCMEMBER_RECORD, MCMemberRecord(**f), comp_mask(MCM_COMP, *names),
                    tid, sm_key)


def node_records(lid: int | None = None, node_guid: int | None = None, port_guid: int | None = None,
                 tid: int | None = None, *, node_desc: str | None = None, method: int = m.GET_TABLE,
                 sm_key: int = 0):
    from ..wire.smp_attrs import NodeDescription, NodeInfo
    ni = {}
    mask = 0
    if node_guid is not None:
        ni["node_guid"] = node_guid
        mask |= 1 << NR_COMP_FULL["node_guid"]
    if port_guid is not None:
        ni["port_guid"] = port_guid
        mask |= 1 << NR_COMP_FULL["port_guid"]
    rec = NodeRecord(lid=lid or 0, node_info=NodeInfo(**ni),
                     node_desc=NodeDescription(description=node_desc or ""))
    if lid is not None:
        mask |= 1 << NR_COMP_FULL["lid"]
    if node_desc is not None:
        mask |= 1 << NR_COMP_FULL["node_desc"]
    return _request(method, m.ATTR_NODE_RECORD, rec, mask, tid, sm_key)


def port_info_records(lid: int | None = None, port_num: int | None = None, tid: int | None = None,
                      *, method: int = m.GET_TABLE, sm_key: int = 0):
    rec = PortInfoRecord(lid=lid or 0, port_num=port_num or 0)
    mask = (0 if lid is None else 1 << PIR_COMP_FULL["lid"]) | \
        (0 if port_num is None else 1 << PIR_COMP_FULL["port_num"])
    return _request(method, m.ATTR_PORT_INFO_RECORD, rec, mask, tid, sm_key)


def class_port_info(tid: int | None = None):
    return _request(m.GET, m.ATTR_CLASS_PORT_INFO, None, 0, tid)


def inform_info(subscribe: bool, trap_num: int = 0xFFFF, tid: int | None = None, *,
                gid: bytes | None = None, lid_range: tuple = (0xFFFF, 0), type: int = 0xFFFF,
                producer_type: int = 0xFFFFFF, qpn: int = 1, sm_key: int = 0):
    """Set(InformInfo): subscribe to (or unsubscribe from) generic notices ``trap_num``
    (0xFFFF: all) about ``gid`` or a LID range (0xFFFF: every port)."""
    ii = InformInfo(gid=bytes(gid) if gid else bytes(16), lid_range_begin=lid_range[0],
                    lid_range_end=lid_range[1], is_generic=1, subscribe=int(subscribe), type=type,
                    trap_num=trap_num, qpn=qpn, producer_type=producer_type)
    return _request(m.SET, m.ATTR_INFORM_INFO, ii, 0, tid, sm_key)


def report_response(report_mad) -> bytes:
    """The ReportResp that acknowledges a Report(Notice) (same TID, Notice echoed)."""
    r = m.SAMad.unpack(bytes(report_mad)) if not isinstance(report_mad, m.SAMad) else report_mad
    return r.replace(method=m.REPORT_RESP, status=0).pack()


def parse_report(report_mad) -> Notice:
    r = m.SAMad.unpack(bytes(report_mad)) if not isinstance(report_mad, m.SAMad) else report_mad
    if r.method != m.REPORT or r.attr_id != m.ATTR_NOTICE:
        raise ValueError(f"not a Report(Notice): method 0x{r.method:02x} attribute 0x{r.attr_id:04x}")
    return Notice.unpack(r.data)


# -- responses ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SaResponse:
    tid: int
    method: int
    attr_id: int
    status: int
    records: tuple
    header: object  # SAMad of the (first) response MAD

    @property
    def ok(self) -> bool:
        return self.status == m.STATUS_OK


def _split(header, payload: bytes) -> tuple:
    cls = RECORD_TYPES.get(header.attr_id)
    if cls is None or header.status != m.STATUS_OK:
        return ()
    if header.method == m.GET_TABLE_RESP:
        stride = header.attr_offset * 8
        if stride == 0:
            return ()
        if stride < cls.SIZE:
            raise RmppError(f"AttributeOffset {header.attr_offset} is smaller than a "
                            f"{cls.__name__}", kind="bad_length")
        return tuple(cls.unpack(payload, i) for i in range(0, len(payload) - cls.SIZE + 1, stride))
    return (cls.unpack(payload),)


def parse_response(mads) -> SaResponse:
    """Decode a complete response: one MAD (octets or SAMad) or the list of its RMPP segments."""
    if isinstance(mads, (bytes, bytearray, m.SAMad)):
        mads = [mads]
    r = reassembled(mads)
    h = r.header
    return SaResponse(h.tid, h.method, h.attr_id, h.status, _split(h, r.result), h)


class SaCollector:
    """Reassembles responses of several outstanding transactions, by TID."""

    def __init__(self):
        self._open: dict[int, Reassembler] = {}

    def feed(self, mad) -> SaResponse | None:
        sa = m.SAMad.unpack(bytes(mad)) if not isinstance(mad, m.SAMad) else mad
        if not sa.method & m.RESPONSE_BIT:
            return None
        r = self._open.setdefault(sa.tid, Reassembler())
        try:
            payload = r.feed(sa)
        except RmppError:
            self._open.pop(sa.tid, None)
            raise
        if payload is None:
            return None
        del self._open[sa.tid]
        h = r.header
        return SaResponse(h.tid, h.method, h.attr_id, h.status, _split(h, payload), h)

    def pending(self) -> list[int]:
        return list(self._open)

    def abandon(self, tid: int) -> None:
        self._open.pop(tid, None)


__all__ += ["SELECTOR_EXACT"]
