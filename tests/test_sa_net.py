"""Helpers shared by the SA tests (a Subnet built from a Topology, request builders), and tests of
the helpers and of the SA's default min-hop path engine."""

from __future__ import annotations

from fabric import wire as w
from fabric.sm.sa import GraphPaths, Requester, SaReply, SubnetAdministrator
from fabric.sm.subnet import CA, SWITCH, SmNode, SmPort, Subnet
from fabric.topology import generate
from fabric.wire import smp_attrs as smp

_WIDTH = {"1x": smp.WIDTH_1X, "2x": smp.WIDTH_2X, "4x": smp.WIDTH_4X, "8x": smp.WIDTH_8X,
          "12x": smp.WIDTH_12X}
_SPEED = {"SDR": smp.SPEED_SDR, "DDR": smp.SPEED_DDR, "QDR": smp.SPEED_QDR}


def build_subnet(topo, *, lmc: int = 0) -> Subnet:
    """The SM's view of a topology after a sweep: every node, port and cable, all ports Active,
    sequential LIDs (CA ports first, then switches, in topology order; 2**lmc LIDs each)."""
    if isinstance(topo, str):
        topo = generate(topo)
    sub = Subnet()
    by_name = {}
    for ns in topo.nodes.values():
        node = SmNode(guid=ns.node_guid, kind=SWITCH if ns.is_switch else CA, num_ports=ns.num_ports,
                      desc=ns.description)
        if ns.is_switch:
            for num in range(0, ns.num_ports + 1):
                node.ports[num] = SmPort(node=node, num=num, guid=ns.node_guid if num == 0 else 0)
            node.ports[0].state = smp.PORT_ACTIVE
            node.ports[0].phys = smp.PHYS_LINKUP
        else:
            for num in range(1, ns.num_ports + 1):
                node.ports[num] = SmPort(node=node, num=num, guid=ns.port_guids[num])
        sub.nodes[node.guid] = node
        by_name[ns.name] = node
    for lk in topo.links:
        a = by_name[lk.a].ports[lk.a_port]
        b = by_name[lk.b].ports[lk.b_port]
        a.remote, b.remote = b, a
        for p in (a, b):
            p.state = smp.PORT_ACTIVE
            p.phys = smp.PHYS_LINKUP
            p.width_active = _WIDTH.get(lk.width, smp.WIDTH_4X)
            p.speed_active = _SPEED.get(lk.speed, smp.SPEED_SDR)
    lid = 1
    for n in sorted(sub.nodes.values(), key=lambda n: (n.is_switch, list(sub.nodes).index(n.guid))):
        ports = [n.ports[0]] if n.is_switch else [p for _, p in sorted(n.ports.items()) if p.linked]
        for p in ports:
            p.lid, p.lmc = lid, lmc
            lid += 1 << lmc
    sub.sm_node = by_name[topo.sm_node]
    sub.sm_port_num = topo.sm_port
    return sub


def ca(sub: Subnet, i: int):
    """Port 1 of HCA ``node{i:04d}``."""
    for n in sub.nodes.values():
        if n.desc == f"node{i:04d}":
            return n.ports[1]
    raise KeyError(i)


def switch(sub: Subnet, name: str):
    for n in sub.nodes.values():
        if n.desc == name:
            return n
    raise KeyError(name)


def gid(port) -> bytes:
    return w.make_gid(w.GID_PREFIX_DEFAULT, port.gid_guid)


def req_of(port, qpn: int = 1, pkey: int = 0xFFFF) -> Requester:
    return Requester(lid=port.lid, qpn=qpn, pkey=pkey)


TID = [0x1000]


def sa_mad(method, attr_id, attr=None, comp_mask=0, *, sm_key=0, attr_mod=0, tid=None, **kw) -> bytes:
    if tid is None:
        TID[0] += 1
        tid = TID[0]
    data = attr.pack().ljust(200, b"\0") if attr is not None else bytes(200)
    return w.new_mad(w.SAMad, method=method, tid=tid, attr_id=attr_id, attr_mod=attr_mod,
                     comp_mask=comp_mask, sm_key=sm_key, data=data, **kw).pack()


def replies(actions) -> list[SaReply]:
    return [a for a in actions if isinstance(a, SaReply)]


def one_reply(actions) -> w.SAMad:
    rs = replies(actions)
    assert len(rs) == 1 and len(rs[0].mads) == 1, actions
    return w.SAMad.unpack(rs[0].mads[0])


# -- tests of the helpers and of GraphPaths --------------------------------------------------


def test_build_subnet_fattree():
    sub = build_subnet("fattree:4,2,3,1")
    assert len(sub.cas()) == 12 and len(sub.switches()) == 6
    lids = sorted(p.lid for p in sub.endports())
    assert lids == list(range(1, 19))
    assert sub.sm_port is ca(sub, 1)
    assert len(sub.links()) == 12 + 8


def test_graph_paths_hops_and_mtu_rate():
    sub = build_subnet("fattree:4,2,3,1")
    gp = GraphPaths(sub)
    a, b, c = ca(sub, 1), ca(sub, 2), ca(sub, 12)
    assert gp.route_hops(a, a) == 0
    assert gp.route_hops(a, b) == 2          # a - leaf01 - b
    assert gp.route_hops(a, c) == 4          # a - leaf01 - spine - leaf04 - c
    leaf = switch(sub, "leaf01").ports[0]
    assert gp.route_hops(a, leaf) == 1
    assert gp.route_hops(leaf, c) == 3
    assert gp.link_mtu_rate(a, c) == (smp.MTU_4096, 3)  # 4x SDR = 10 Gb/s
    c.neighbor_mtu = smp.MTU_2048
    gp.reset()
    assert gp.link_mtu_rate(a, c) == (smp.MTU_2048, 3)
    c.remote.remote = None
    c.remote = None
    gp.reset()
    assert gp.route_hops(a, c) is None and gp.link_mtu_rate(a, c) is None


def test_graph_paths_linear_chain():
    sub = build_subnet("linear:5")
    gp = GraphPaths(sub)
    assert gp.route_hops(ca(sub, 1), ca(sub, 5)) == 6


def test_sa_constructs_with_defaults():
    sub = build_subnet("single:4")
    sa = SubnetAdministrator(sub)
    assert len(sa.mcast) == 1  # the default partition's IPoIB broadcast group
