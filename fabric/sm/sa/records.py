"""The SA's read-only descriptions: ClassPortInfo (the SA's own capabilities), NodeRecord and
PortInfoRecord (the subnet's nodes and ports as the SM found them); OpenSM's
osm_sa_class_port_info.c, osm_sa_node_record.c and osm_sa_portinfo_record.c."""

from __future__ import annotations

from ...wire import smp_attrs as smp
from ...wire.sa_attrs import NR_COMP_FULL, PIR_COMP_FULL, ClassPortInfo, NodeRecord, PortInfoRecord
from ...wire.smp_attrs import NodeDescription, NodeInfo, PortInfo

# ClassPortInfo:CapabilityMask bits of the SA (IBA table 191; OpenSM's OSM_CAP_IS_*)
SA_CAP_GET_SET_NOTICE = 1 << 1   # event forwarding: InformInfo subscriptions and Report(Notice)
SA_CAP_UD_MCAST = 1 << 9         # UD multicast (MCMemberRecord join/leave)
SA_CAP2_SEND_ONLY_FULL = 1 << 12  # SendOnlyFullMember JoinState


class RecordMixin:
    """Get(ClassPortInfo), Get and GetTable(NodeRecord, PortInfoRecord), for
    :class:`~fabric.sm.sa.SubnetAdministrator`."""

    def _class_port_info(self, req, src):
        cpi = ClassPortInfo(base_version=1, class_version=2,
                            capability_mask=SA_CAP_GET_SET_NOTICE | SA_CAP_UD_MCAST,
                            capability_mask2=SA_CAP2_SEND_ONLY_FULL,
                            resp_time_value=self.resp_time_value, redirect_qp=1,
                            redirect_qkey=0x80010000, trap_qkey=0x80010000)
        return [self._reply_one(req, src, cpi, ClassPortInfo.SIZE)]

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


def _desc(text: str) -> str:
    raw = (text or "").encode("utf-8")[:64]
    return raw.decode("utf-8", "ignore")
