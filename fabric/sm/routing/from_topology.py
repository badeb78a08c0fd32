"""A Subnet built straight from a Topology, as an SM would discover it: for tests and tools."""

from __future__ import annotations

from collections import deque

from ...wire import smp_attrs as sa
from ..lids import assign_lids
from ..subnet import CA, SWITCH, SmNode, SmPort, Subnet

_WIDTH = {"1x": sa.WIDTH_1X, "2x": sa.WIDTH_2X, "4x": sa.WIDTH_4X, "8x": sa.WIDTH_8X,
          "12x": sa.WIDTH_12X}
_SPEED = {"SDR": sa.SPEED_SDR, "DDR": sa.SPEED_DDR, "QDR": sa.SPEED_QDR}


def subnet_from_topology(topo, lids: dict | None = None, *, lmc: int = 0) -> Subnet:
    """The Subnet an SM would discover on ``topo`` (a Topology, path or generator spec), with
    every cabled port Active.

    Switches get ports 0..N, CAs their cabled ports. ``lids`` (``{port GUID: LID}``, e.g. what
    OpenSM assigned) sets the LIDs; ports it does not name get none. Without it LIDs come from
    :func:`fabric.sm.lids.assign_lids` on a fresh fabric. ``SmNode.path`` is the directed route
    from the SM port found breadth first, ports in ascending order. ``node_info`` carries a
    NodeInfo with the node's GUIDs (the system image GUID is used by LMC-aware routing).
    """
    from ...topology import load_topology

    topo = load_topology(topo)
    sub = Subnet()
    by_name: dict[str, SmNode] = {}
    for spec in topo.nodes.values():
        kind = SWITCH if spec.is_switch else CA
        node = SmNode(guid=spec.node_guid, kind=kind, num_ports=spec.num_ports,
                      desc=spec.description)
        node.node_info = sa.NodeInfo(
            node_type=sa.NODE_TYPE_SWITCH if spec.is_switch else sa.NODE_TYPE_CA,
            num_ports=spec.num_ports, sys_guid=spec.sys_guid, node_guid=spec.node_guid,
            port_guid=spec.port_guids[0] if spec.is_switch else spec.port_guids[1],
            device_id=spec.device_id, vendor_id=spec.vendor_id)
        if spec.is_switch:
            for pn in range(spec.num_ports + 1):
                node.ports[pn] = SmPort(node, pn, guid=spec.port_guids[0] if pn == 0 else 0)
            node.ports[0].state = sa.PORT_ACTIVE
            node.ports[0].phys = sa.PHYS_LINKUP
        sub.nodes[node.guid] = node
        by_name[spec.name] = node
    for lk in topo.links:
        ends = []
        for name, pn in lk.ends():
            node = by_name[name]
            p = node.ports.get(pn)
            if p is None:
                p = node.ports[pn] = SmPort(node, pn, guid=topo.nodes[name].port_guids[pn])
            p.state, p.phys = sa.PORT_ACTIVE, sa.PHYS_LINKUP
            p.width_active = _WIDTH.get(lk.width, sa.WIDTH_4X)
            p.speed_active = _SPEED.get(lk.speed, sa.SPEED_QDR)
            ends.append(p)
        a, b = ends
        a.remote, b.remote = b, a
    for node in sub.nodes.values():
        if not node.is_switch:
            node.ports = dict(sorted(node.ports.items()))
    sm = by_name[topo.sm_node]
    sub.sm_node, sub.sm_port_num = sm, topo.sm_port
    if not sm.is_switch and topo.sm_port not in sm.ports:
        sm.ports[topo.sm_port] = SmPort(sm, topo.sm_port,
                                        guid=topo.nodes[topo.sm_node].port_guids[topo.sm_port])

    # directed routes, breadth first from the SM port
    sm.path = ()
    seen = {sm.guid}
    q = deque()
    if sm.is_switch:
        q.append(sm)
    else:
        r = sm.ports[topo.sm_port].remote
        if r is not None and r.node.guid not in seen:
            r.node.path = (topo.sm_port,)
            seen.add(r.node.guid)
            q.append(r.node)
    while q:
        n = q.popleft()
        if not n.is_switch:
            continue
        for pn in sorted(n.ports):
            r = n.ports[pn].remote
            if pn and r is not None and r.node.guid not in seen:
                r.node.path = n.path + (pn,)
                seen.add(r.node.guid)
                q.append(r.node)

    for node in sub.nodes.values():
        for p in node.ports.values():
            if p.num == 0 or not node.is_switch:
                p.lmc = 0 if node.is_switch else lmc
    if lids is None:
        lids = assign_lids(sub, None, lmc=lmc)
    for p in sub.endports():
        p.lid = lids.get(p.gid_guid, 0)
    if sm.ports.get(topo.sm_port) is not None and not sm.ports[topo.sm_port].lid:
        sm.ports[topo.sm_port].lid = lids.get(sm.ports[topo.sm_port].gid_guid, 0)
    return sub
