"""The differential routing test, whole-system version: our fabric against OpenSM on ibsim.

For each topology, OpenSM runs once on ibsim and ``dump_fts`` reads its LFTs. Then our fabric comes
up with our SM (real device processes) and ``ibfab dump-fts`` reads our LFTs back with real SMPs,
in the same dump_fts format. Compared: every HCA pair reachable through both sets of tables, the
same hop count on every pair, and per-switch balance (HCA LIDs per output port among the ports that
lead to the same next switch) no worse than OpenSM's. The share of identical entries is printed.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict

import pytest

import refsm
from paths import shared_topology

from fabric import Fabric
from fabric.topology import load_topology

TOPOLOGIES = ["ibsim/net", "ibsim/net.2sw2path", "ibsim/net.2sw2path4hca", "ibsim/net.2sw2path4hca2port",
              "fattree-6x3x12x2.net"]


@pytest.fixture(scope="module", autouse=True)
def opensm_tools():
    miss = refsm.missing_tools()
    if miss:
        pytest.fail(f"the reference SM needs {', '.join(miss)}: install the Debian packages "
                    "opensm, ibsim-utils, infiniband-diags (scripts/install-debs.sh)")


def _trace(topo, lfts, owner, src_hca, src_port, dlid):
    """Hops from an HCA port to ``dlid`` through ``lfts`` ({switch guid: {lid: port}}); None if
    the tables do not deliver it."""
    guid_of = {n.name: n.node_guid for n in topo.nodes.values()}
    at = topo.peer(src_hca, src_port)
    hops = 1
    seen = set()
    while at is not None:
        name, _in_port = at
        node = topo.nodes[name]
        if node.kind == "hca":
            return hops if owner.get(dlid) == (name, _in_port) else None
        if name in seen:
            return None  # loop
        seen.add(name)
        out = lfts.get(guid_of[name], {}).get(dlid)
        if out is None:
            return None
        if out == 0:
            return hops if owner.get(dlid) == (name, 0) else None
        at = topo.peer(name, out)
        hops += 1
    return None


def _owners(topo, lids):
    """LID -> (node name, port) from {port guid: lid}."""
    by_guid = {}
    for n in topo.nodes.values():
        if n.kind == "switch":
            by_guid[n.node_guid] = (n.name, 0)
        for p, g in n.port_guids.items():
            if n.kind == "hca":
                by_guid[g] = (n.name, p)
    return {lid: by_guid[g] for g, lid in lids.items() if g in by_guid}


def _balance(topo, lfts, owner):
    """Worst spread (max - min) of HCA LIDs per port among parallel ports to the same neighbour."""
    worst = 0
    guid_of = {n.name: n.node_guid for n in topo.nodes.values()}
    for sw in topo.switches():
        groups = defaultdict(list)
        for port in range(1, sw.num_ports + 1):
            peer = topo.peer(sw.name, port)
            if peer is not None and topo.nodes[peer[0]].kind == "switch":
                groups[peer[0]].append(port)
        table = lfts.get(guid_of[sw.name], {})
        load = Counter(p for lid, p in table.items() if topo.nodes[owner[lid][0]].kind == "hca")
        for ports in groups.values():
            if len(ports) > 1:
                counts = [load.get(p, 0) for p in ports]
                worst = max(worst, max(counts) - min(counts))
    return worst


@pytest.mark.parametrize("rel", TOPOLOGIES)
def test_fabric_routes_match_opensm(rel, tmp_path, capsys):
    topo = load_topology(shared_topology(rel))
    ref = refsm.run_opensm(topo.to_net(), str(tmp_path / "osm"))
    with Fabric(topo) as fab:
        out = subprocess.run([sys.executable, "-m", "fabric.cli", "dump-fts", "--name", fab.name],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    ours_lfts, ours_lids, _, _ = refsm.parse_dump_fts(out.stdout)
    assert len(ours_lfts) == len(topo.switches())
    owner_ref = _owners(topo, ref.lids)
    owner_ours = _owners(topo, ours_lids)
    hcas = [(n.name, p) for n in topo.hcas() for p in n.port_guids if topo.peer(n.name, p) is not None]
    pairs = 0
    for src in hcas:
        for dst in hcas:
            if src == dst:
                continue
            dl_ref = next(l for l, o in owner_ref.items() if o == dst)
            dl_ours = next(l for l, o in owner_ours.items() if o == dst)
            h_ref = _trace(topo, ref.lfts, owner_ref, *src, dl_ref)
            h_ours = _trace(topo, ours_lfts, owner_ours, *src, dl_ours)
            assert h_ref is not None, f"OpenSM does not route {src} -> {dst}"
            assert h_ours is not None, f"we do not route {src} -> {dst}"
            assert h_ours == h_ref, f"{src} -> {dst}: {h_ours} hops, OpenSM {h_ref}"
            pairs += 1
    b_ours, b_ref = _balance(topo, ours_lfts, owner_ours), _balance(topo, ref.lfts, owner_ref)
    assert b_ours <= b_ref, f"balance spread {b_ours} is worse than OpenSM's {b_ref}"
    same = sum(1 for g in ref.lfts for lid, p in ref.lfts[g].items() if ours_lfts.get(g, {}).get(lid) == p)
    total = sum(len(t) for t in ref.lfts.values())
    with capsys.disabled():
        print(f"\n{rel}: {pairs} HCA pairs, equal hop counts; balance spread ours {b_ours} / OpenSM {b_ref}; "
              f"LIDs identical: {ours_lids == ref.lids}; identical LFT entries {same}/{total}")
