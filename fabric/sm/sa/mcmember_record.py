"""MCMemberRecord (IBA 15.2.5.17): multicast joins (Set), leaves (Delete) and queries
(Get/GetTable); group creation and its validation; and the MFT bookkeeping that turns membership
changes into McastChanged actions (OpenSM's osm_sa_mcmember_record.c). The groups themselves and
their spanning trees are :class:`~fabric.sm.mcast.McastManager`'s."""

from __future__ import annotations

from ...wire import mad as m
from ...wire import smp_attrs as smp
from ...wire.headers import PKEY_FULL_BIT, make_gid
from ...wire.sa_attrs import MCM_COMP, SELECTOR_BEST, SELECTOR_EXACT, MCMemberRecord, comp_fields
from ..mcast import (FULL_STATES, RECEIVER_STATES, McastError, McGroup, compare_rates, mtu_valid,
                     port_rate, rate_valid)
from .actions import McastChanged, SaStatus
from .selector import EXACT_UNCHECKED, check_mtu_rate, select_value, selector_ok


class MCMemberRecordMixin:
    """Set, Delete, Get and GetTable(MCMemberRecord), for
    :class:`~fabric.sm.sa.SubnetAdministrator`."""

    _JOIN_COMPS = ("mgid", "port_gid", "join_state")
    _CREATE_COMPS = ("mgid", "port_gid", "join_state", "qkey", "tclass", "pkey", "flow_label", "sl")

    def _membership_request(self, req, what: str):
        """The record and components of a join or leave: MGID, PortGID and JoinState are
        required, and an MTU or rate given must be valid."""
        rec = MCMemberRecord.unpack(req.data)
        comps = set(comp_fields(MCM_COMP, req.comp_mask))
        if not all(c in comps for c in self._JOIN_COMPS):
            raise SaStatus(m.SA_ERR_REQ_INSUFFICIENT_COMPONENTS, f"{what} needs MGID, PortGID, JoinState")
        check_mtu_rate(rec, comps)
        return rec, comps

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
        if "mtu_selector" in comps and not selector_ok(rec.mtu_selector, rec.mtu, g.mtu):
            return False
        if "rate_selector" in comps and not selector_ok(rec.rate_selector, rec.rate, g.rate, rate=True):
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
            raise SaStatus(m.SA_ERR_REQ_INVALID_GID, "PortGID prefix is not this subnet's")
        port = self._port_by_guid(guid)
        if port is None:
            raise SaStatus(m.SA_ERR_REQ_INVALID, f"unknown PortGID GUID 0x{guid:016x}")
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
        rec, comps = self._membership_request(req, "join")
        req_port = self._requester_port(src)
        port = self._mcm_port(rec)
        proxy = port is not req_port
        if proxy and not self._share_pkey(port, req_port):
            raise SaStatus(m.SA_ERR_REQ_INVALID, "proxy join between ports that share no partition")
        if "pkey" in comps and not rec.pkey & 0x7FFF:
            raise SaStatus(m.SA_ERR_REQ_INVALID, "invalid P_Key")
        join_state = rec.join_state
        member = self._member_key(port)
        actions: list = []
        g = self.mcast.get(rec.mgid)
        created = False
        if g is None:
            if not join_state & FULL_STATES:
                raise SaStatus(m.SA_ERR_REQ_INVALID, "only a full member can create a group")
            if not all(c in comps for c in self._CREATE_COMPS):
                raise SaStatus(m.SA_ERR_REQ_INSUFFICIENT_COMPONENTS,
                              "creating a group needs MGID, PortGID, JoinState, Q_Key, P_Key, "
                              "SL, FlowLabel, TClass")
            g = self._create_group(rec, comps, port)
            created = True
        elif not self._other_fields_match(rec, comps, g):
            raise SaStatus(m.SA_ERR_REQ_INVALID, "components differ from the group's")
        try:
            if not self._selectors_match(rec, comps, g):
                raise SaStatus(m.SA_ERR_REQ_INVALID, "MTU/rate selector does not match the group")
            if port.neighbor_mtu and port.neighbor_mtu < g.mtu and not port.node.is_switch:
                raise SaStatus(m.SA_ERR_REQ_INVALID, "port MTU below the group's")
            if not port.node.is_switch and compare_rates(
                    port_rate(port.width_active, port.speed_active), g.rate) < 0:
                raise SaStatus(m.SA_ERR_REQ_INVALID, "port rate below the group's")
            if not join_state:
                raise SaStatus(m.SA_ERR_REQ_INVALID, "JoinState 0")
            if not self._has_pkey(port, g.pkey):
                raise SaStatus(m.SA_ERR_REQ_INVALID, "port is not in the group's partition")
            if not created and member in g.members and not self._validate_modify(g, member, req_port):
                raise SaStatus(m.SA_ERR_REQ_INVALID, "not allowed to modify this membership")
        except SaStatus:
            if created:
                self.mcast.delete_group(g.mgid)
            raise
        # A change of a member's role (receiver, sender only, none) may change the group's tree.
        # The SM recomputes each changed group's tree once per batch of joins and writes only the
        # MFT blocks that differ; a tree here per join cost O(N^2) when N ports join after a sweep.
        changed = created or self._role_changes(g, member, join_state)
        old, new = self.mcast.join(g.mgid, member, join_state, proxy=proxy)
        if changed:
            actions.append(McastChanged(g.mlid))
        if not old & FULL_STATES and new & FULL_STATES and g.count_full(2) == 1:
            actions += self._notify(smp.TRAP_MCG_CREATED, g.mgid, group=g)
        resp = self._group_record(g, rec.port_gid, new, rec.proxy_join)
        return [self._reply_one(req, src, resp, MCMemberRecord.SIZE)] + actions

    def _create_group(self, rec, comps, port) -> McGroup:
        mgid = bytes(rec.mgid)
        scope_req = rec.scope if "scope" in comps else 2
        if self._gid_is_zero(mgid):
            mgid = self._new_mgid(scope_req or 2)
        else:
            self._validate_mgid(mgid)
            sig = mgid[2] << 8 | mgid[3]
            if sig in (0x401B, 0x601B):
                bcast = bytes([0xFF, 0x10 | (mgid[1] & 0xF), 0x40, 0x1B, mgid[4], mgid[5]]) + bytes(6) + b"\xff" * 4
                if mgid != bcast:
                    b = self.mcast.get(bcast)
                    if b is None or not self._other_fields_match(rec, comps, b):
                        raise SaStatus(m.SA_ERR_REQ_INVALID,
                                      "IPoIB group without a matching broadcast group")
        if self.create_requires_full and not self._is_full(port, rec.pkey):
            raise SaStatus(m.SA_ERR_REQ_INVALID, "only a full member of the partition creates a group")
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
            raise SaStatus(m.SA_ERR_NO_RESOURCES, str(e)) from None

    def _new_mgid(self, scope: int) -> bytes:
        for _ in range(1 << 16):
            self._mgid_counter = (self._mgid_counter + 1) & 0xFFFFFFFF
            mgid = (bytes([0xFF, 0x10 | (scope & 0xF), 0xA0, 0x1B]) + self.gid_prefix.to_bytes(8, "big")
                    + self._mgid_counter.to_bytes(4, "big"))
            if self.mcast.get(mgid) is None:
                return mgid
        raise SaStatus(m.SA_ERR_NO_RESOURCES, "no MGID left")

    @staticmethod
    def _validate_mgid(mgid: bytes):
        """o15-0.1.5: a requested MGID must be multicast; apart from IPoIB's, its flags must be
        0 or T, and the SA's own signature A01B may not be link-local."""
        if mgid[0] != 0xFF:
            raise SaStatus(m.SA_ERR_REQ_INVALID, "MGID is not multicast")
        sig = mgid[2] << 8 | mgid[3]
        if sig in (0x401B, 0x601B):
            return
        if mgid[1] & 0xE0:
            raise SaStatus(m.SA_ERR_REQ_INVALID, "MGID uses reserved flags")
        if sig == 0xA01B and mgid[1] & 0xF == 2:
            raise SaStatus(m.SA_ERR_REQ_INVALID, "SA-signature MGID with link-local scope")

    def _realizable(self, rec, comps, port) -> tuple[int, int]:
        """MTU and rate of a new group (OpenSM's mgrp_request_is_realizable): the port's own when
        not asked for, else what the selector allows."""
        port_mtu = port.neighbor_mtu or port.mtu_cap
        prate = port_rate(port.width_active, port.speed_active)
        mtu, rate = port_mtu, prate
        if "mtu" in comps and "mtu_selector" in comps and rec.mtu_selector != SELECTOR_BEST:
            mtu = select_value(rec.mtu_selector, rec.mtu, port_mtu, exact=EXACT_UNCHECKED)
            if mtu is None or not mtu_valid(mtu):
                raise SaStatus(m.SA_ERR_REQ_INVALID, "MTU not realizable on the port")
        if "rate" in comps and "rate_selector" in comps and rec.rate_selector != SELECTOR_BEST:
            rate = select_value(rec.rate_selector, rec.rate, prate, rate=True, exact=EXACT_UNCHECKED)
            if rate is None or not rate_valid(rate):
                raise SaStatus(m.SA_ERR_REQ_INVALID, "rate not realizable on the port")
        return mtu, rate

    def _mcmember_leave(self, req, src):
        rec, comps = self._membership_request(req, "leave")
        prefix, guid = self._guid_of_gid(rec.port_gid)
        if not self._prefix_ok(prefix):
            raise SaStatus(m.SA_ERR_REQ_INVALID_GID, "PortGID prefix is not this subnet's")
        req_port = self._requester_port(src)
        g = self.mcast.get(rec.mgid)
        if g is None:
            raise SaStatus(m.SA_ERR_REQ_INVALID, "no such group")
        member = make_gid(self.gid_prefix, guid)
        stored = g.members.get(member)
        if stored is None:
            raise SaStatus(m.SA_ERR_REQ_INVALID, "port is not a member")
        want = rec.join_state
        if not want & stored or want & ~stored & 0xF:
            raise SaStatus(m.SA_ERR_REQ_INVALID, "JoinState does not match the membership")
        if not self._validate_modify(g, member, req_port):
            raise SaStatus(m.SA_ERR_REQ_INVALID, "not allowed to modify this membership")
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
        full_before = g.count_full(2)
        changed = (force or self._role_changes(g, member, 0, clear=bits)
                   or (stored & FULL_STATES and full_before == 1))
        old, new, _ = self.mcast.leave(g.mgid, member, bits)
        actions: list = [McastChanged(g.mlid)] if changed else []
        if old & FULL_STATES and not new & FULL_STATES and g.count_full(1) == 0:
            actions += self._notify(smp.TRAP_MCG_DELETED, g.mgid, group=g)
        return actions

    @staticmethod
    def _role(state: int) -> int:
        return 2 if state & RECEIVER_STATES else (1 if state else 0)

    def _role_changes(self, g: McGroup, member: bytes, join_bits: int, clear: int = 0) -> bool:
        old = g.members.get(member, 0)
        new = (old | join_bits) & ~clear & 0xF
        return self._role(old) != self._role(new)

    def _mcmember_query(self, req, src):
        rec = MCMemberRecord.unpack(req.data)
        comps = set(comp_fields(MCM_COMP, req.comp_mask))
        check_mtu_rate(rec, comps)
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
