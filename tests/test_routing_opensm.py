"""Differential test of the routing engines against OpenSM itself, at the routing-engine level.

For each topology: OpenSM runs once on ibsim with the net file ``Topology.to_net()`` writes
(tests/refsm.py); its LFTs come back through ``dump_fts``, with the LIDs it assigned. Our Subnet is
built from the same topology with those LIDs and routed by our engine. Then:

- every CA port reaches every endport through both sets of tables, with the same hop count;
- per switch and destination, the set of equal-cost ports is the same as OpenSM's own hop matrix
  (``opensm-lid-matrix.dump``);
- balance: for each switch and each group of destinations sharing a set of equal-cost ports, the
  spread (max - min) of CA LIDs per port; ours must be no worse than OpenSM's;
- our LID assignment on the fresh fabric gives OpenSM's LIDs;
- and the share of LFT entries identical to OpenSM's is printed (and, for minhop, required to be
  all of them: that is the claim of docs/routing.md).

OpenSM, ibsim and dump_fts must be installed (scripts/install-debs.sh): their absence fails the
tests, it does not skip them.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict

import pytest

import refsm
from paths import shared_topology
from test_routing import random_net

from fabric.sm import routing as R
from fabric.sm.lids import assign_lids
from fabric.topology import load_topology, parse_topology

IBSIM_NETS = ["ibsim/net", "ibsim/net.1", "ibsim/net.2sw2path", "ibsim/net.2sw2path4hca",
              "ibsim/net.2sw2path4hca2port"]
FATTREE = "fattree-6x3x12x2.net"


@pytest.fixture(scope="module", autouse=True)
def opensm_tools():
    miss = refsm.missing_tools()
    if miss:
        pytest.fail(f"the reference SM needs {', '.join(miss)}: install the Debian packages "
                    "opensm, ibsim-utils, infiniband-diags (scripts/install-debs.sh)")


def run_ref(topo, workdir, **kw) -> refsm.RefResult:
    """OpenSM on ibsim; a net file ibsim refuses is skipped, after checking that this is why."""
    try:
        return refsm.run_opensm(topo.to_net(), str(workdir), **kw)
    except refsm.RefSMError as e:
        msg = str(e)
        assert msg.startswith("ibsim exited"), msg  # anything else is a real failure
        pytest.skip(f"ibsim cannot load {topo.source}: {msg}")


def ours_for(topo, ref: refsm.RefResult, *, lmc: int = 0):
    sub = R.subnet_from_topology(topo, lids=ref.lids, lmc=lmc)
    assert {p.gid_guid for p in sub.endports()} == set(ref.lids), "same endports as OpenSM"
    return sub


def identical_entries(sub, ours: dict, ref: refsm.RefResult) -> tuple[int, int]:
    """(entries equal, entries in either table) over all switches and LIDs."""
    same = total = 0
    for g in ref.lfts:
        mine = {lid: p for lid, p in enumerate(ours[g]) if p != R.NO_ROUTE}
        theirs = ref.lfts[g]
        for lid in set(mine) | set(theirs):
            total += 1
            same += mine.get(lid) == theirs.get(lid)
    return same, total


def check_paths(sub, ours: dict, ref: refsm.RefResult) -> int:
    """Every CA port to every endport: reachable in both, same hop count. Returns the pairs."""
    n = 0
    for src in sub.ca_ports():
        for dst in sub.endports():
            a = R.trace(sub, ours, src, dst.lid)
            b = R.trace(sub, ref.lfts, src, dst.lid)
            assert len(a) == len(b), (src, dst, a, b)
            n += 1
    return n


def opensm_equal_cost(sub, ref: refsm.RefResult, sw, lid: int) -> set[int]:
    """OpenSM's equal-cost ports on switch `sw` towards `lid`, from its own hop matrix."""
    dst = sub.port_by_lid(lid)
    if dst.node is sw:
        return {0}
    if not dst.node.is_switch and dst.remote.node is sw:
        return {dst.remote.num}
    target = dst.node if dst.node.is_switch else dst.remote.node
    row = ref.lid_matrix[sw.guid][target.lid]
    return {p for p in range(1, len(row)) if row[p] == row[0]}


def check_equal_cost_sets(sub, ref: refsm.RefResult) -> int:
    mh = R.min_hops(sub)
    n = 0
    for sw in sub.switches():
        for lid in ref.lfts[sw.guid]:
            assert set(mh.best_ports(sw.guid, lid)) == opensm_equal_cost(sub, ref, sw, lid), \
                (sw, lid)
            n += 1
    return n


def balance(sub, lfts: dict) -> tuple[int, int]:
    """(worst spread, sum of spreads): per switch, CA destinations grouped by their set of
    equal-cost ports; a group's spread is max - min of its LIDs per port of the set."""
    mh = R.min_hops(sub)
    worst = total = 0
    for sw in sub.switches():
        groups: dict[frozenset, Counter] = defaultdict(Counter)
        for dst in sub.ca_ports():
            for off in range(1 << dst.lmc):
                lid = dst.lid + off
                ports = frozenset(mh.best_ports(sw.guid, lid))
                if len(ports) > 1:
                    lft = lfts[sw.guid]
                    groups[ports][lft.get(lid) if isinstance(lft, dict) else lft[lid]] += 1
        for ports, cnt in groups.items():
            spread = max(cnt.get(p, 0) for p in ports) - min(cnt.get(p, 0) for p in ports)
            worst = max(worst, spread)
            total += spread
    return worst, total


def report(name, sub, ours, ref, extra=""):
    same, total = identical_entries(sub, ours, ref)
    bo, br = balance(sub, ours), balance(sub, ref.lfts)
    print(f"\n{name}: {same}/{total} LFT entries identical to OpenSM "
          f"({100.0 * same / max(total, 1):.1f}%); balance (worst spread, sum) ours {bo}, "
          f"OpenSM {br}; OpenSM SUBNET UP {ref.subnet_up_seconds:.3f} s{extra}")
    assert bo[0] <= br[0] and bo[1] <= br[1], (bo, br)
    return same, total


# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", IBSIM_NETS + [FATTREE])
def test_minhop_matches_opensm(name, tmp_path):
    topo = load_topology(shared_topology(name))
    ref = run_ref(topo, tmp_path, dump_routing=True)
    # LIDs: ours on the fresh fabric are OpenSM's
    fresh = R.subnet_from_topology(topo, lids={})
    assert assign_lids(fresh) == ref.lids
    sub = ours_for(topo, ref)
    ours = R.route_minhop(sub)
    assert set(ours) == set(ref.lfts)
    pairs = check_paths(sub, ours, ref)
    cells = check_equal_cost_sets(sub, ref)
    same, total = report(name, sub, ours, ref, f"; {pairs} paths, {cells} equal-cost sets")
    assert same == total, "minhop is meant to give OpenSM's tables exactly"


@pytest.mark.parametrize("seed", range(3))
def test_minhop_matches_opensm_irregular(seed, tmp_path):
    topo = parse_topology(random_net(seed), source=f"random_net({seed})")
    ref = run_ref(topo, tmp_path, dump_routing=True)
    assert assign_lids(R.subnet_from_topology(topo, lids={})) == ref.lids
    sub = ours_for(topo, ref)
    ours = R.route_minhop(sub)
    check_paths(sub, ours, ref)
    check_equal_cost_sets(sub, ref)
    same, total = report(f"random_net({seed})", sub, ours, ref)
    assert same == total


def test_minhop_lmc_matches_opensm(tmp_path):
    topo = load_topology(shared_topology(FATTREE))
    ref = run_ref(topo, tmp_path, extra_args=("-l", "1"))
    assert assign_lids(R.subnet_from_topology(topo, lids={}), lmc=1) == ref.lids
    sub = ours_for(topo, ref, lmc=1)
    ours = R.route_minhop(sub)
    for src in sub.ca_ports()[::7]:
        for dst in sub.ca_ports():
            for off in range(2):
                assert len(R.trace(sub, ours, src, dst.lid + off)) == \
                    len(R.trace(sub, ref.lfts, src, dst.lid + off))
    same, total = report(f"{FATTREE} LMC 1", sub, ours, ref)
    assert same == total


def test_updn_matches_opensm_fattree(tmp_path):
    topo = load_topology(shared_topology(FATTREE))
    ref = run_ref(topo, tmp_path, engine="updn")
    assert "updn tables configured" in ref.log
    assert assign_lids(R.subnet_from_topology(topo, lids={})) == ref.lids
    sub = ours_for(topo, ref)
    ours = R.route_updn(sub)
    check_paths(sub, ours, ref)
    same, total = report(f"{FATTREE} updn", sub, ours, ref)
    assert same == total


@pytest.mark.parametrize("seed", range(2))
def test_updn_matches_opensm_irregular_with_roots(seed, tmp_path):
    topo = parse_topology(random_net(seed), source=f"random_net({seed})")
    rnd = random.Random(seed)
    roots = [n.node_guid for n in rnd.sample(topo.switches(), 2)]
    roots_file = tmp_path / "roots"
    roots_file.write_text("".join(f"0x{g:016x}\n" for g in roots))
    ref = run_ref(topo, tmp_path / "run", engine="updn", extra_args=("-a", str(roots_file)))
    assert "updn tables configured" in ref.log
    assert assign_lids(R.subnet_from_topology(topo, lids={})) == ref.lids
    sub = ours_for(topo, ref)
    ours = R.route_updn(sub, roots=roots)
    for src in sub.ca_ports():
        for dst in sub.ca_ports():
            try:
                b = len(R.trace(sub, ref.lfts, src, dst.lid))
            except R.TraceError as e:  # two roots: not every pair has an up/down path
                assert e.kind == "no_route"
                with pytest.raises(R.TraceError):
                    R.trace(sub, ours, src, dst.lid)
                continue
            assert len(R.trace(sub, ours, src, dst.lid)) == b
    same, total = report(f"random_net({seed}) updn, 2 roots", sub, ours, ref)
    assert same == total


def test_fattree_648_hcas_against_opensm(tmp_path):
    """The big one: identical tables, and our compute time next to OpenSM's bring-up time."""
    topo = load_topology("fattree:36,18,18,1")
    ref = run_ref(topo, tmp_path)
    t0 = time.perf_counter()
    fresh = R.subnet_from_topology(topo, lids={})
    t1 = time.perf_counter()
    lids = assign_lids(fresh)
    for p in fresh.endports():
        p.lid = lids[p.gid_guid]
    ours = R.route_minhop(fresh)
    t2 = time.perf_counter()
    assert lids == ref.lids
    same, total = report("fattree:36,18,18,1", fresh, ours, ref,
                         f"; ours: LIDs + minhop {t2 - t1:.3f} s (subnet model built in "
                         f"{t1 - t0:.3f} s)")
    assert same == total
    src = fresh.ca_ports()[0]
    for dst in fresh.endports():
        assert len(R.trace(fresh, ours, src, dst.lid)) == len(R.trace(fresh, ref.lfts, src,
                                                                      dst.lid))
