"""PathRecord (IBA 15.2.5.16): the paths between two end ports, or to a multicast group, and
:class:`GraphPaths`, the min-hop path engine the SA uses when the SM gives it none (OpenSM's
osm_sa_path_record.c)."""

from __future__ import annotations

from collections import deque

from ...wire import mad as m
from ...wire.sa_attrs import PR_COMP, SELECTOR_EXACT, PathRecord, comp_fields
from ..mcast import compare_rates, port_rate
from .actions import SaStatus
from .selector import EXACT_EQUAL, check_mtu_rate, select_value


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


class PathRecordMixin:
    """Get and GetTable(PathRecord), for :class:`~fabric.sm.sa.SubnetAdministrator`."""

    def _path_record(self, req, src):
        pr = PathRecord.unpack(req.data)
        comps = set(comp_fields(PR_COMP, req.comp_mask))
        mask = req.comp_mask

        def has(bit):
            return mask >> bit & 1

        check_mtu_rate(pr, comps)
        if has(0) != has(1):
            raise SaStatus(m.SA_ERR_REQ_INSUFFICIENT_COMPONENTS, "half a ServiceID")
        req_port = self._requester_port(src)
        if "dgid" in comps and pr.dgid[0] == 0xFF:
            recs = self._multicast_path(pr, comps)
            return [self._reply_records(req, src, recs, PathRecord.SIZE)]
        if "dgid" not in comps and "dlid" not in comps:
            raise SaStatus(m.SA_ERR_REQ_INSUFFICIENT_COMPONENTS, "PathRecord without DGID or DLID")
        ends = []
        for gid_name, lid_name in (("sgid", "slid"), ("dgid", "dlid")):
            port = self._gid_port(getattr(pr, gid_name)) if gid_name in comps else None
            if lid_name in comps:
                p = self._port_by_lid(getattr(pr, lid_name))
                if p is None:
                    return [self._reply_records(req, src, [], PathRecord.SIZE)]
                if port is not None and p is not port:
                    raise SaStatus(m.SA_ERR_REQ_INVALID,
                                   f"{gid_name.upper()} and {lid_name.upper()} name different ports")
                port = p
            ends.append(port)
        src_port, dst_port = ends
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
            raise SaStatus(m.SA_ERR_REQ_INVALID_GID, f"GID prefix 0x{prefix:016x} is not this subnet's")
        p = self._port_by_guid(guid)
        if p is None:
            raise SaStatus(m.SA_ERR_REQ_INVALID_GID, f"no port with GUID 0x{guid:016x}")
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
            mtu = select_value(pr.mtu_selector, pr.mtu, mtu)
            if mtu is None:
                return None
        if "rate_selector" in comps and "rate" in comps:
            rate = select_value(pr.rate_selector, pr.rate, rate, rate=True, exact=EXACT_EQUAL)
            if rate is None:
                return None
        if "pkt_life_selector" in comps and "pkt_life" in comps:
            pkt_life = select_value(pr.pkt_life_selector, pr.pkt_life, pkt_life)
            if pkt_life is None:
                return None
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
