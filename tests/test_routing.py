"""Routing engines (fabric/sm/routing/) and LID assignment (fabric/sm/lids.py), without OpenSM.

The differential test against OpenSM itself is tests/test_routing_opensm.py.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque

import pytest

from fabric.sm import routing as R
from fabric.sm.lids import assign_lids, osm_guid_key
from fabric.sm.subnet import CA, SWITCH, SmNode, SmPort, Subnet
from fabric.topology import parse_topology


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def hand_subnet(switches: dict, cas: dict, links: list, sm: tuple) -> Subnet:
    """A Subnet built by hand: ``switches``/``cas`` map name -> (GUID, ports); ``links`` are
    ``(name, port, name, port)``; LIDs come from assign_lids."""
    sub = Subnet()
    nodes = {}
    for name, (guid, n) in switches.items():
        node = SmNode(guid=guid, kind=SWITCH, num_ports=n, desc=name)
        for p in range(n + 1):
            node.ports[p] = SmPort(node, p, guid=guid if p == 0 else 0)
        nodes[name] = sub.nodes[guid] = node
    for name, (guid, n) in cas.items():
        node = SmNode(guid=guid, kind=CA, num_ports=n, desc=name)
        nodes[name] = sub.nodes[guid] = node
    for a, ap, b, bp in links:
        ends = []
        for name, p in ((a, ap), (b, bp)):
            node = nodes[name]
            if p not in node.ports:
                node.ports[p] = SmPort(node, p, guid=node.guid + p)
            ends.append(node.ports[p])
        ends[0].remote, ends[1].remote = ends[1], ends[0]
    sub.sm_node, sub.sm_port_num = nodes[sm[0]], sm[1]
    for p_guid, lid in assign_lids(sub).items():
        sub.port_by_guid(p_guid).lid = lid
    return sub


def graph_hops(sub: Subnet, src: SmPort, dst: SmPort) -> int:
    """Fewest cables from src to dst through switches only (an oracle independent of routing)."""
    if src is dst:
        return 0
    start = src.remote.node if not src.node.is_switch else src.node
    goal = dst.remote.node if not dst.node.is_switch else dst.node
    base = (0 if src.node.is_switch else 1) + (0 if dst.node.is_switch else 1)
    dist = {start.guid: 0}
    q = deque([start])
    while q:
        n = q.popleft()
        if n is goal:
            return base + dist[n.guid]
        for p in n.ports.values():
            r = p.remote
            if p.num and r is not None and r.node.is_switch and r.node.guid not in dist:
                dist[r.node.guid] = dist[n.guid] + 1
                q.append(r.node)
    raise AssertionError(f"no path from {src} to {dst}")


def check_all_pairs(sub: Subnet, lfts: dict, *, minimal: bool = True) -> int:
    """Every CA port reaches every endport through the LFTs, loop-free; hop counts minimal."""
    n = 0
    eps = sub.endports()
    for src in sub.ca_ports():
        for dst in eps:
            path = R.trace(sub, lfts, src, dst.lid)
            if minimal:
                assert len(path) == graph_hops(sub, src, dst), (src, dst, path)
            n += 1
    return n


def lft_of(sub: Subnet, lfts: dict, name: str) -> bytearray:
    return next(lfts[n.guid] for n in sub.nodes.values() if n.desc == name)


def node(sub: Subnet, name: str) -> SmNode:
    return next(n for n in sub.nodes.values() if n.desc == name)


TWO_SW = dict(
    switches={"S1": (0x200000, 8), "S2": (0x200001, 8)},
    cas={"H1": (0x100000, 1), "H2": (0x100002, 1), "H3": (0x100004, 1), "H4": (0x100006, 1)},
    links=[("S1", 1, "H1", 1), ("S1", 2, "H3", 1), ("S1", 3, "S2", 3), ("S1", 5, "S2", 5),
           ("S2", 1, "H2", 1), ("S2", 2, "H4", 1)],
    sm=("H1", 1))


def random_net(seed: int, nsw: int = 10, nca: int = 24, nports: int = 12) -> str:
    """An irregular fabric: a random spanning tree of switches, extra (and parallel) cables, CAs
    with one or two ports on random switches."""
    rnd = random.Random(seed)
    names = [f"sw{i}" for i in range(nsw)]
    free = {s: rnd.sample(range(1, nports + 1), nports) for s in names}
    links = []
    for i in range(1, nsw):
        a, b = names[i], names[rnd.randrange(i)]
        links.append((a, free[a].pop(), b, free[b].pop()))
    for _ in range(nsw):
        a, b = rnd.sample(names, 2)
        if free[a] and free[b]:
            links.append((a, free[a].pop(), b, free[b].pop()))
    cas = {}
    for j in range(nca):
        cas[f"ca{j}"] = rnd.choice([1, 1, 2])
        for p in range(1, cas[f"ca{j}"] + 1):
            s = rnd.choice([n for n in names if free[n]])
            links.append((f"ca{j}", p, s, free[s].pop()))
    recs: dict[str, list[str]] = {}
    for a, ap, b, bp in links:
        recs.setdefault(a, []).append(f'[{ap}]\t"{b}"[{bp}]')
        recs.setdefault(b, []).append(f'[{bp}]\t"{a}"[{ap}]')
    order = list(cas) + names
    rnd.shuffle(order)
    out = []
    for n in order:
        out.append(f'Switch\t{nports} "{n}"' if n in free else f'Hca\t{cas[n]} "{n}"')
        out += sorted(recs.get(n, []))
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------
# minhop on hand-made subnets
# ------------------------------------------------------------------------------------------------

def test_two_switches_parallel_links_exact_lfts():
    sub = hand_subnet(**TWO_SW)
    lids = {n.desc: n.lid for n in sub.nodes.values()}
    # OpenSM's order on a fresh fabric: the SM port, then byte-swapped GUID order
    assert lids == {"H1": 1, "S1": 2, "S2": 3, "H2": 4, "H3": 5, "H4": 6}
    lfts = R.route_minhop(sub)
    assert set(lfts) == {0x200000, 0x200001}
    # H1 (lid 1), H3 (5) hang off S1; H2 (4), H4 (6) off S2. The remote CAs alternate over the
    # two parallel cables (least loaded, lowest port first); switch LIDs do not add load, so
    # S2's LID takes port 3 again on S1. The switch's own LID is port 0.
    assert list(lft_of(sub, lfts, "S1")[:7]) == [0xFF, 1, 0, 3, 3, 2, 5]
    assert list(lft_of(sub, lfts, "S2")[:7]) == [0xFF, 3, 3, 0, 1, 5, 2]
    assert all(len(lft) == 64 for lft in lfts.values())
    assert lft_of(sub, lfts, "S1")[7:] == b"\xff" * 57
    assert check_all_pairs(sub, lfts) == 4 * 6


def test_ring_routes_minimal_and_loop_free():
    # six switches in a ring, a CA on each: both directions are used, never a loop
    n = 6
    sws = {f"S{i}": (0x200000 + i, 4) for i in range(n)}
    cas = {f"H{i}": (0x100000 + 2 * i, 1) for i in range(n)}
    links = [(f"S{i}", 1, f"H{i}", 1) for i in range(n)]
    links += [(f"S{i}", 2, f"S{(i + 1) % n}", 3) for i in range(n)]
    sub = hand_subnet(sws, cas, links, ("H0", 1))
    lfts = R.route_minhop(sub)
    assert check_all_pairs(sub, lfts) == n * 2 * n
    s0 = lft_of(sub, lfts, "S0")
    ports = Counter(s0[node(sub, f"H{i}").lid] for i in range(1, n))
    # H1, H2 clockwise, H4, H5 the other way; H3 is at 3 hops both ways and takes the less
    # loaded port 3 (H1 and H2 were routed before it, in switch GUID order)
    assert ports == {2: 2, 3: 3}
    assert s0[node(sub, "H3").lid] == 3


def test_ca_with_two_ports_on_two_switches():
    sws = {"S1": (0x200000, 4), "S2": (0x200001, 4)}
    cas = {"H1": (0x100000, 2), "H2": (0x100003, 1)}
    links = [("S1", 1, "H1", 1), ("S2", 1, "H1", 2), ("S1", 2, "S2", 2), ("S2", 3, "H2", 1)]
    sub = hand_subnet(sws, cas, links, ("H1", 1))
    lfts = R.route_minhop(sub)
    h1 = node(sub, "H1")
    assert h1.ports[1].lid and h1.ports[2].lid and h1.ports[1].lid != h1.ports[2].lid
    assert lft_of(sub, lfts, "S2")[h1.ports[2].lid] == 1
    assert lft_of(sub, lfts, "S2")[h1.ports[1].lid] == 2
    check_all_pairs(sub, lfts)


def test_unreachable_destinations_get_no_route():
    # S3 is cabled to nothing: nobody reaches it, and it reaches nobody
    sws = {"S1": (0x200000, 4), "S2": (0x200001, 4), "S3": (0x200002, 4)}
    cas = {"H1": (0x100000, 1), "H2": (0x100002, 1), "H3": (0x100004, 1)}
    links = [("S1", 1, "H1", 1), ("S2", 1, "H2", 1), ("S1", 2, "S2", 2), ("S3", 1, "H3", 1)]
    sub = hand_subnet(sws, cas, links, ("H1", 1))
    lfts = R.route_minhop(sub)
    h3 = node(sub, "H3").ports[1]
    assert lft_of(sub, lfts, "S1")[h3.lid] == R.NO_ROUTE
    assert lft_of(sub, lfts, "S3")[node(sub, "H1").lid] == R.NO_ROUTE
    assert lft_of(sub, lfts, "S3")[h3.lid] == 1
    with pytest.raises(R.TraceError) as e:
        R.trace(sub, lfts, node(sub, "H1").ports[1], h3.lid)
    assert e.value.kind == "no_route" and len(e.value.path) == 1


def test_trace_detects_loops_dead_ends_and_wrong_delivery():
    sub = hand_subnet(**TWO_SW)
    lfts = R.route_minhop(sub)
    h1, h2 = node(sub, "H1").ports[1], node(sub, "H2").ports[1]
    path = R.trace(sub, lfts, h1, h2.lid)
    assert [(p.node.desc, p.num) for p in path] == [("H1", 1), ("S1", 3), ("S2", 1)]
    assert R.trace(sub, lfts, h1, h1.lid) == []
    # from a switch's port 0: the path starts at its egress port
    assert [(p.node.desc, p.num) for p in R.trace(sub, lfts, node(sub, "S1").ports[0],
                                                   h2.lid)] == [("S1", 3), ("S2", 1)]
    bad = {g: bytearray(l) for g, l in lfts.items()}
    lft_of(sub, bad, "S2")[h2.lid] = 3  # back to S1, which sends it to S2 again
    with pytest.raises(R.TraceError) as e:
        R.trace(sub, bad, h1, h2.lid)
    assert e.value.kind == "loop"
    lft_of(sub, bad, "S2")[h2.lid] = 7  # a port without a cable
    with pytest.raises(R.TraceError) as e:
        R.trace(sub, bad, h1, h2.lid)
    assert e.value.kind == "unlinked"
    lft_of(sub, bad, "S2")[h2.lid] = 2  # H4's port
    with pytest.raises(R.TraceError) as e:
        R.trace(sub, bad, h1, h2.lid)
    assert e.value.kind == "wrong_port"
    lft_of(sub, bad, "S2")[h2.lid] = 0
    with pytest.raises(R.TraceError) as e:
        R.trace(sub, bad, h1, h2.lid)
    assert e.value.kind == "wrong_port"
    # dict LFTs (as parsed from dump_fts) work too
    as_dict = {g: {lid: p for lid, p in enumerate(l) if p != 0xFF} for g, l in lfts.items()}
    assert R.trace(sub, as_dict, h1, h2.lid) == path


def test_min_hops_mapping():
    sub = hand_subnet(**TWO_SW)
    mh = R.min_hops(sub)
    s1, s2 = node(sub, "S1"), node(sub, "S2")
    lid = {n.desc: n.lid for n in sub.nodes.values()}
    assert set(mh) == {s1.guid, s2.guid} and len(mh) == 2
    assert mh[s1.guid][lid["S1"]] == {0: 0, 3: 2, 5: 2}
    assert mh[s1.guid][lid["S2"]] == {3: 1, 5: 1}
    assert mh[s1.guid][lid["H2"]] == {3: 2, 5: 2}
    assert mh[s1.guid][lid["H1"]] == {1: 1, 3: 3, 5: 3}
    assert mh.least(s1.guid, lid["H2"]) == 2 and mh.least(s1.guid, lid["H1"]) == 1
    assert mh.best_ports(s1.guid, lid["H2"]) == [3, 5]
    assert mh.best_ports(s1.guid, lid["S1"]) == [0]
    assert mh.switch_distance(s1.guid, s2.guid) == 1


def test_existing_routes_are_kept_while_still_least_hop():
    sub = hand_subnet(**TWO_SW)
    fresh = R.route_minhop(sub)
    s1 = node(sub, "S1")
    h2, h4 = node(sub, "H2").lid, node(sub, "H4").lid
    old = {g: bytearray(l) for g, l in fresh.items()}
    old[s1.guid][h2], old[s1.guid][h4] = 5, 5  # both over the second cable
    old[s1.guid][node(sub, "H3").lid] = 3  # not least-hop: replaced
    kept = R.route_minhop(sub, existing=old)
    assert kept[s1.guid][h2] == 5 and kept[s1.guid][h4] == 5
    assert kept[s1.guid][node(sub, "H3").lid] == 2
    assert R.route_minhop(sub)[s1.guid] == fresh[s1.guid]  # without `existing`: from scratch


# ------------------------------------------------------------------------------------------------
# minhop on generated fabrics
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["single:6", "linear:5", "fattree:4,2,6,2", "fattree:6,3,12,2"])
def test_generated_fabrics_all_pairs(spec):
    sub = R.subnet_from_topology(spec)
    lfts = R.route_minhop(sub)
    assert len(lfts) == len(sub.switches())
    check_all_pairs(sub, lfts)


def test_fattree_uplinks_balanced():
    sub = R.subnet_from_topology("fattree:6,3,12,2")
    lfts = R.route_minhop(sub)
    for leaf in (n for n in sub.switches() if n.desc.startswith("leaf")):
        lft = lfts[leaf.guid]
        local = {p.remote.lid for p in leaf.ports.values() if p.num and p.remote
                 and not p.remote.node.is_switch}
        loads = Counter(lft[p.lid] for p in sub.ca_ports() if p.lid not in local)
        assert set(loads) == set(range(13, 19)), loads  # only the six uplinks
        assert max(loads.values()) - min(loads.values()) <= 1, (leaf, loads)
        assert sum(loads.values()) == 60
    for spine in (n for n in sub.switches() if n.desc.startswith("spine")):
        loads = Counter(lfts[spine.guid][p.lid] for p in sub.ca_ports())
        assert sorted(loads.values()) == [6] * 12  # each of the 2 cables to a leaf: 6 HCAs


@pytest.mark.parametrize("seed", range(4))
def test_irregular_fabrics_all_pairs(seed):
    sub = R.subnet_from_topology(parse_topology(random_net(seed)))
    check_all_pairs(sub, R.route_minhop(sub))


def test_subnet_from_topology():
    sub = R.subnet_from_topology("fattree:2,1,2,2")
    leaf = node(sub, "leaf01")
    assert sorted(leaf.ports) == list(range(37)) and leaf.ports[0].guid == leaf.guid
    assert leaf.ports[3].remote.node.desc == "spine01" and leaf.ports[3].guid == 0
    hca = node(sub, "node0001")
    assert list(hca.ports) == [1] and hca.ports[1].guid == hca.guid + 1
    assert sub.sm_node is hca and sub.sm_port.lid == 1
    assert hca.path == () and leaf.path == (1,) and node(sub, "spine01").path == (1, 3)
    assert node(sub, "node0003").path == (1, 3, 3, 1)
    assert hca.node_info.sys_guid == hca.guid
    assert all(p.lid for p in sub.endports())
    assert all(p.state == 4 for p in sub.ca_ports())


def test_route_fattree_648_hcas_timing():
    t0 = time.perf_counter()
    sub = R.subnet_from_topology("fattree:36,18,18,1")
    t1 = time.perf_counter()
    lfts = R.route_minhop(sub)
    t2 = time.perf_counter()
    R.min_hops(sub).least(sub.switches()[0].guid, 1)
    print(f"\nfattree:36,18,18,1 ({len(sub.ca_ports())} HCAs, {len(lfts)} switches, "
          f"{sub.max_lid()} LIDs): subnet built in {t1 - t0:.3f} s, minhop routed in "
          f"{t2 - t1:.3f} s")
    assert t2 - t1 < 5.0
    assert len(lfts) == 54 and all(len(l) == 704 for l in lfts.values())
    # spot-check the result: a few sources to every endport
    eps = sub.endports()
    for src in sub.ca_ports()[::97]:
        for dst in eps:
            assert len(R.trace(sub, lfts, src, dst.lid)) == graph_hops(sub, src, dst)
    for leaf in [n for n in sub.switches() if n.desc.startswith("leaf")][:3]:
        loads = Counter(lfts[leaf.guid][p.lid] for p in sub.ca_ports()
                        if p.remote.node is not leaf)
        assert max(loads.values()) - min(loads.values()) <= 1


# ------------------------------------------------------------------------------------------------
# LMC > 0
# ------------------------------------------------------------------------------------------------

def test_lmc_routes_every_lid_and_spreads_them():
    sub = R.subnet_from_topology("fattree:4,2,4,2", lmc=2)
    for p in sub.ca_ports():
        assert p.lmc == 2 and p.lid % 4 == 0
    for n in sub.switches():
        assert n.ports[0].lmc == 0
    lfts = R.route_minhop(sub)
    leaf = node(sub, "leaf01")
    remote = [p for p in sub.ca_ports() if p.remote.node is not leaf]
    for dst in remote:
        ports = [lfts[leaf.guid][dst.lid + i] for i in range(4)]
        spines = [leaf.ports[p].remote.node.desc for p in ports]
        # OpenSM's LMC mode prefers a system not used yet by the destination's other LIDs:
        # the first two LIDs take the two spines (then it is load and port order; OpenSM gives
        # exactly these tables, see test_routing_opensm.py)
        assert spines[0] != spines[1], (ports, spines)
        assert len(set(ports)) >= 3, ports
    for src in sub.ca_ports()[:3]:
        for dst in sub.ca_ports():
            for i in range(4):
                assert len(R.trace(sub, lfts, src, dst.lid + i)) == graph_hops(sub, src, dst)


# ------------------------------------------------------------------------------------------------
# up/down
# ------------------------------------------------------------------------------------------------

def _updn_violations(sub: Subnet, lfts: dict, roots: list[int]) -> list:
    """Routes that go down then up, in OpenSM's terms (osm_ucast_updn.c): ranks are BFS distances
    from the roots; seen from the destination outwards, a cable is UP towards the lower rank
    (equal ranks: from the larger GUID to the smaller; between two roots: UP both ways), and a
    route may never take a DOWN step and then an UP one."""
    rank = {g: 0 for g in roots}
    q = deque(sub.nodes[g] for g in roots)
    while q:
        n = q.popleft()
        for p in n.ports.values():
            r = p.remote
            if p.num and r is not None and r.node.is_switch and r.node.guid not in rank:
                rank[r.node.guid] = rank[n.guid] + 1
                q.append(r.node)

    def up(u, v):  # direction of the step u -> v, from the destination outwards
        if rank[u.guid] == 0 and rank[v.guid] == 0:
            return True
        if rank[u.guid] != rank[v.guid]:
            return rank[u.guid] > rank[v.guid]
        return u.guid > v.guid

    bad = []
    for src in sub.ca_ports():
        for dst in sub.ca_ports():
            try:
                path = R.trace(sub, lfts, src, dst.lid)
            except R.TraceError as e:
                if e.kind == "no_route":
                    continue  # with several roots, some pairs have no up/down path at all
                raise
            sws = [p.remote.node for p in path[:-1]]  # switches, in packet order
            steps = [up(sws[i], sws[i - 1]) for i in range(len(sws) - 1, 0, -1)]
            if any(not a and b for i, a in enumerate(steps) for b in steps[i + 1:]):
                bad.append((src, dst, [n.desc for n in sws]))
    return bad


def test_updn_ring_goes_through_the_root():
    # six switches in a ring, root S0: S2 <-> S4 may not take the short way through S3
    n = 6
    sws = {f"S{i}": (0x200000 + i, 4) for i in range(n)}
    cas = {f"H{i}": (0x100000 + 2 * i, 1) for i in range(n)}
    links = [(f"S{i}", 1, f"H{i}", 1) for i in range(n)]
    links += [(f"S{i}", 2, f"S{(i + 1) % n}", 3) for i in range(n)]
    sub = hand_subnet(sws, cas, links, ("H0", 1))
    root = node(sub, "S0").guid
    lfts = R.route_updn(sub, roots=[root])
    assert _updn_violations(sub, lfts, [root]) == []
    h2, h4 = node(sub, "H2").ports[1], node(sub, "H4").ports[1]
    path = R.trace(sub, lfts, h2, h4.lid)
    assert [p.remote.node.desc for p in path] == ["S2", "S1", "S0", "S5", "S4", "H4"]
    assert len(R.trace(sub, R.route_minhop(sub), h2, h4.lid)) == 4


def test_updn_fattree_roots_are_the_spines():
    sub = R.subnet_from_topology("fattree:6,3,12,2")
    roots = R.updn_roots(sub)
    assert sorted(sub.nodes[g].desc for g in roots) == ["spine01", "spine02", "spine03"]
    lfts = R.route_updn(sub)
    assert _updn_violations(sub, lfts, roots) == []
    check_all_pairs(sub, lfts)  # up/down paths are the min-hop ones in a fat tree
    # spine to spine would be down then up: no route (OpenSM leaves these empty too)
    s1, s2 = node(sub, "spine01"), node(sub, "spine02")
    assert lfts[s1.guid][s2.lid] == R.NO_ROUTE


@pytest.mark.parametrize("seed", range(6))
def test_updn_irregular_never_down_then_up(seed):
    sub = R.subnet_from_topology(parse_topology(random_net(seed)))
    rnd = random.Random(seed)
    roots = [n.guid for n in rnd.sample(sorted(sub.switches(), key=lambda n: n.guid),
                                        1 + seed % 3)]
    lfts = R.route_updn(sub, roots=roots)
    assert _updn_violations(sub, lfts, roots) == []
    if len(roots) == 1:  # one root: everybody reaches everybody through it
        check_all_pairs(sub, lfts, minimal=False)


def test_updn_without_roots_falls_back_to_minhop():
    sub = hand_subnet(**TWO_SW)  # every switch sees 50% of the CAs at each distance: no root
    assert R.updn_roots(sub) == []
    assert R.route_updn(sub) == R.route_minhop(sub)
    with pytest.raises(R.RoutingError):
        R.route_updn(sub, fallback=False)
    assert R.route(sub, "updn") == R.route(sub, "minhop")
    with pytest.raises(ValueError):
        R.route(sub, "ftree")


# ------------------------------------------------------------------------------------------------
# LFT blocks
# ------------------------------------------------------------------------------------------------

def test_lft_blocks_changed():
    a = bytearray(b"\xff") * 192
    assert R.lft_blocks_changed(None, a) == [0, 1, 2]
    assert R.lft_blocks_changed(a, bytearray(a)) == []
    b = bytearray(a)
    b[1] = 3
    b[130] = 0
    assert R.lft_blocks_changed(a, b) == [0, 2]
    assert R.lft_blocks_changed(b, a) == [0, 2]
    longer = bytearray(a) + bytearray(b"\xff") * 64
    assert R.lft_blocks_changed(a, longer) == []  # new entries all 0xFF: nothing to write
    longer[200] = 1
    assert R.lft_blocks_changed(a, longer) == [3]
    assert R.lft_blocks_changed(longer, a) == [3]
    # between two routings after a cable is pulled: only the blocks that moved
    sub = R.subnet_from_topology("fattree:4,2,24,2")
    before = R.route_minhop(sub)
    leaf = node(sub, "leaf01")
    cable = leaf.ports[25]
    cable.remote.remote, cable.remote = None, None
    after = R.route_minhop(sub)
    changed = {g: R.lft_blocks_changed(before[g], after[g]) for g in before}
    assert changed[leaf.guid] and all(b in (0, 1) for b in changed[leaf.guid])
    assert check_all_pairs(sub, after)


# ------------------------------------------------------------------------------------------------
# LID assignment
# ------------------------------------------------------------------------------------------------

def test_assign_lids_fresh_fabric_order():
    sub = R.subnet_from_topology("fattree:6,3,12,2", lids={})
    lids = assign_lids(sub)
    sm = sub.sm_port
    assert lids[sm.gid_guid] == 1
    rest = sorted((p for p in sub.endports() if p is not sm),
                  key=lambda p: osm_guid_key(p.gid_guid))
    assert [lids[p.gid_guid] for p in rest] == list(range(2, 2 + len(rest)))
    by_name = {p.node.desc: lids[p.gid_guid] for p in sub.endports()}
    # the byte-swapped order puts leaf01 (0x200000) before every HCA but the SM's
    assert by_name["leaf01"] == 2 and by_name["leaf02"] == 3 and by_name["node0002"] == 5


def test_assign_lids_keeps_cache_and_current_lids():
    sub = hand_subnet(**TWO_SW)
    ports = {p.node.desc: p for p in sub.endports()}
    fresh = assign_lids(sub)
    # the cache wins; its entries for absent ports still reserve their LIDs
    g2l = {ports["H2"].gid_guid: 40, 0xDEAD: 2, ports["S2"].gid_guid: 40}
    for p in sub.endports():
        p.lid = 0
    lids = assign_lids(sub, g2l)
    assert lids[ports["H2"].gid_guid] == 40
    assert 2 not in lids.values()  # reserved for 0xDEAD
    assert lids[ports["S2"].gid_guid] != 40  # duplicate cache entry dropped
    assert len(set(lids.values())) == len(lids)
    # ports keep the LIDs they have when nothing claims them; the cache beats a current LID
    for p in sub.endports():
        p.lid = fresh[p.gid_guid] + 10
    lids = assign_lids(sub, {ports["H3"].gid_guid: 3})
    assert lids[ports["H3"].gid_guid] == 3
    assert all(lids[g] == fresh[g] + 10 for g in fresh if g != ports["H3"].gid_guid)
    # two ports claiming one LID: the first in OpenSM's order keeps it, the other moves
    for p in sub.endports():
        p.lid = 0
    ports["H2"].lid = ports["H4"].lid = 9
    lids = assign_lids(sub)
    assert lids[ports["H2"].gid_guid] == 9  # 0x100003 comes before 0x100007
    assert lids[ports["H4"].gid_guid] == 5  # the lowest free one: 1..4 went to H1 S1 S2 H3
    assert len(set(lids.values())) == len(lids)
    # keep_current=False ignores them
    assert assign_lids(sub, keep_current=False) == fresh


def test_assign_lids_lmc_alignment():
    sub = hand_subnet(**TWO_SW)
    for p in sub.endports():
        p.lid = 0  # a fresh fabric
    lids = assign_lids(sub, lmc=2)
    ports = {p.node.desc: p for p in sub.endports()}
    for name in ("H1", "H2", "H3", "H4"):
        assert lids[ports[name].gid_guid] % 4 == 0
    # the SM's range starts at 4 (1..3 are skipped and lost for this sweep, as in OpenSM), the
    # switches take single LIDs after it
    assert lids[ports["H1"].gid_guid] == 4
    assert lids[ports["S1"].gid_guid] == 8 and lids[ports["S2"].gid_guid] == 9
    used = sorted(l + i for n, p in ports.items() for l in [lids[p.gid_guid]]
                  for i in range(1 if n.startswith("S") else 4))
    assert len(used) == len(set(used))
    with pytest.raises(ValueError):
        assign_lids(sub, lmc=8)
