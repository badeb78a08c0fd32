"""InformInfo (IBA 13.4.8.3, 15.2.5.12): event subscriptions, and the Report(Notice) each matching
subscriber gets for traps 64-67 (OpenSM's osm_sa_informinfo.c and its notice matching). The SA
resends a Report until its ReportResp arrives: see :meth:`~fabric.sm.sa.SubnetAdministrator.tick`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ...wire import mad as m
from ...wire import smp_attrs as smp
from ...wire.sa_attrs import InformInfo
from ...wire.smp_attrs import Notice
from ..mcast import McGroup
from .actions import Requester, SaReport

log = logging.getLogger(__package__)

SECURITY_TRAPS = range(256, 260)   # bad M_Key, bad P_Key, bad Q_Key, switch bad P_Key
NOTICE_GENERIC_TYPE = smp.NOTICE_TYPE_SM  # OpenSM issues traps 64-67 as "subnet management"
PRODUCER_CLASS_MANAGER = smp.PRODUCER_SM


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
class PendingReport:
    dest: Requester
    mad: bytes
    deadline: float
    tries: int = 1


class InformInfoMixin:
    """Set(InformInfo) and the Reports, for :class:`~fabric.sm.sa.SubnetAdministrator`."""

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
            if not self._gid_is_zero(ii.gid):
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
            if not self._gid_is_zero(s.gid):
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
        self.pending_reports[tid] = PendingReport(dest, mad, self._now + self.report_timeout)
        return SaReport(dest, mad)
