"""Program a fabric by hand with the SMPs a subnet manager sends (used until the real SM exists).

``exchange(smp) -> response MAD`` is the only I/O: over LoopNet for the sans-IO tests, over the
host RPC for the multi-process ones. Discovery is a directed-route BFS; routes are min-hop.
"""

from __future__ import annotations

from collections import deque

from fabric import wire as w
from fabric.wire import smp_attrs as sa


class SMPFailed(AssertionError):
    pass


class HandSM:
    def __init__(self, exchange):
        self.exchange = exchange
        self.tid = 0x5A000000
        self.nodes = {}  # node_guid -> dict(info, desc, path, kind, ports)
        self.links = {}  # (guid, port) -> (guid, port)
        self.lids = {}  # (guid, port or 0) -> lid
        self.sm_lid = 0

    # -- SMP I/O -------------------------------------------------------------------------------

    def dr(self, method, attr_id, path, attr=None, attr_mod=0, m_key=0):
        self.tid += 1
        ipath = bytes([0] + list(path)).ljust(64, b"\0")
        smp = w.new_mad(w.SMPDirected, method=method, tid=self.tid, attr_id=attr_id, attr_mod=attr_mod,
                        hop_cnt=len(path), dr_slid=w.LID_PERMISSIVE, dr_dlid=w.LID_PERMISSIVE,
                        initial_path=ipath, m_key=m_key,
                        data=w.put_attr(attr, 64) if attr is not None else bytes(64))
        resp = self.exchange(smp)
        if resp is None:
            raise SMPFailed(f"no response to {w.METHOD_NAMES[method]} 0x{attr_id:04x} via {list(path)}")
        if resp.tid != self.tid or not resp.d or resp.method != w.GET_RESP:
            raise SMPFailed(f"bad response {resp!r}")
        return resp

    def get(self, cls, attr_id, path, attr_mod=0):
        resp = self.dr(w.GET, attr_id, path, attr_mod=attr_mod)
        if resp.status:
            raise SMPFailed(f"Get 0x{attr_id:04x} via {list(path)}: status 0x{resp.status:04x}")
        return cls.unpack(resp.data)

    def set(self, cls, attr_id, path, attr, attr_mod=0):
        resp = self.dr(w.SET, attr_id, path, attr, attr_mod)
        if resp.status:
            raise SMPFailed(f"Set 0x{attr_id:04x} via {list(path)}: status 0x{resp.status:04x}")
        return cls.unpack(resp.data)

    # -- discovery -----------------------------------------------------------------------------

    def discover(self):
        queue = deque([()])
        while queue:
            path = queue.popleft()
            ni = self.get(w.NodeInfo, w.ATTR_NODE_INFO, path)
            desc = self.get(w.NodeDescription, w.ATTR_NODE_DESC, path).description
            if path:
                prev_guid = self._guid_at(path[:-1])
                self.links[(prev_guid, path[-1])] = (ni.node_guid, ni.local_port)
                self.links[(ni.node_guid, ni.local_port)] = (prev_guid, path[-1])
            if ni.node_guid in self.nodes:
                continue
            node = {"info": ni, "desc": desc, "path": path, "ports": {}}
            self.nodes[ni.node_guid] = node
            if ni.node_type == sa.NODE_TYPE_SWITCH:
                for port in range(0, ni.num_ports + 1):
                    pi = self.get(w.PortInfo, w.ATTR_PORT_INFO, path, attr_mod=port)
                    node["ports"][port] = pi
                    if port and pi.phys_state == sa.PHYS_LINKUP:
                        queue.append(path + (port,))
            else:
                node["ports"][ni.local_port] = self.get(w.PortInfo, w.ATTR_PORT_INFO, path, attr_mod=ni.local_port)
                if not path:  # the SM's own node: leave through its port
                    queue.append((ni.local_port,))
        return self

    def _guid_at(self, path):
        for g, n in self.nodes.items():
            if n["path"] == tuple(path):
                return g
        raise KeyError(path)

    def switches(self):
        return [g for g, n in self.nodes.items() if n["info"].node_type == sa.NODE_TYPE_SWITCH]

    def hcas(self):
        return [g for g, n in self.nodes.items() if n["info"].node_type == sa.NODE_TYPE_CA]

    # -- configuration -------------------------------------------------------------------------

    def assign_lids(self):
        lid = 1
        sm_guid = self._guid_at(())
        order = [sm_guid] + [g for g in self.nodes if g != sm_guid]
        for g in order:
            n = self.nodes[g]
            ports = [0] if n["info"].node_type == sa.NODE_TYPE_SWITCH else list(n["ports"])
            for p in ports:
                self.lids[(g, p)] = lid
                lid += 1
        self.sm_lid = self.lids[(sm_guid, self.nodes[sm_guid]["info"].local_port)]
        for (g, p), l in self.lids.items():
            n = self.nodes[g]
            pi = n["ports"][p].replace(lid=l, master_sm_lid=self.sm_lid, lmc=0, port_state=0, phys_state=0,
                                       link_speed_enabled=0, link_width_enabled=0, neighbor_mtu=0,
                                       client_reregister=1 if p else 0)
            n["ports"][p] = self.set(w.PortInfo, w.ATTR_PORT_INFO, n["path"], pi, attr_mod=p)
        return self

    def lid_of(self, guid):
        n = self.nodes[guid]
        p = 0 if n["info"].node_type == sa.NODE_TYPE_SWITCH else n["info"].local_port
        return self.lids[(guid, p)]

    def route(self):
        """Min-hop LFTs: BFS from every destination over the switch graph."""
        for sw in self.switches():
            lft = {}
            for (g, p), lid in self.lids.items():
                if g == sw:
                    lft[lid] = 0
                    continue
                lft[lid] = self._next_port(sw, g, p)
            top = max(self.lids.values())
            for block in range(top // w.LFT_BLOCK + 1):
                ports = tuple(lft.get(block * w.LFT_BLOCK + i, 0xFF) for i in range(w.LFT_BLOCK))
                self.set(w.LinearForwardingTable, w.ATTR_LFT, self.nodes[sw]["path"],
                         w.LinearForwardingTable(ports=ports), attr_mod=block)
            si = self.get(w.SwitchInfo, w.ATTR_SWITCH_INFO, self.nodes[sw]["path"])
            self.set(w.SwitchInfo, w.ATTR_SWITCH_INFO, self.nodes[sw]["path"], si.replace(linear_fdb_top=top))
        return self

    def _next_port(self, src_sw, dst_guid, dst_port):
        """First hop port out of src_sw on a shortest path to (dst_guid, dst_port)."""
        # BFS backwards from the destination node
        dist = {dst_guid: 0}
        q = deque([dst_guid])
        while q:
            g = q.popleft()
            for (a, ap), (b, bp) in self.links.items():
                if a == g and b not in dist and (b in self.switches() or b == dst_guid):
                    dist[b] = dist[g] + 1
                    q.append(b)
        best = None
        for (a, ap), (b, bp) in sorted(self.links.items()):
            if a == src_sw and b in dist and (best is None or dist[b] < best[0]):
                best = (dist[b], ap)
        return best[1] if best else 0xFF

    def activate(self):
        for state in (sa.PORT_ARMED, sa.PORT_ACTIVE):
            for g, n in self.nodes.items():
                ports = [p for p in n["ports"] if p] if n["info"].node_type == sa.NODE_TYPE_SWITCH else list(n["ports"])
                for p in ports:
                    cur = self.get(w.PortInfo, w.ATTR_PORT_INFO, n["path"], attr_mod=p)
                    if cur.phys_state != sa.PHYS_LINKUP:
                        continue
                    new = cur.replace(port_state=state, phys_state=0, client_reregister=0, neighbor_mtu=0,
                                      link_speed_enabled=0, link_width_enabled=0)
                    self.set(w.PortInfo, w.ATTR_PORT_INFO, n["path"], new, attr_mod=p)
        return self

    def bring_up(self):
        return self.discover().assign_lids().route().activate()


def pop_mad(hca, tid):
    """The MAD with ``tid`` from an HCA's QP0 receive queue (removed from it), or None."""
    for c in list(hca.qps[0].rq):
        m = w.parse_mad(c.payload)
        if m.tid == tid:
            hca.qps[0].rq.remove(c)
            return m
    return None


def loopnet_exchange(net, hca_name, port=1):
    """exchange() over a LoopNet: send from hca_name's port and pop the response by TID."""
    hca = net[hca_name]
    from fabric.devices import send_smp

    def exchange(smp):
        send_smp(hca, port, smp, net.now)
        net.inject(hca_name)
        return pop_mad(hca, smp.tid)

    return exchange
