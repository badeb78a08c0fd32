"""The real OpenSM (Debian ``opensm``) as the fabric's SM (``Fabric(..., sm="opensm")``), with IPoIB
over it (whichever backend ``IPOIB_BACKEND`` picks).

What OpenSM says it did (its log, and the tables it dumps with ``-D 0x43``: ERROR, INFO and
ROUTING, whose dumps land in ``<run_dir>/opensm/``) is compared with what the switches hold, read
back with the real ``dump_fts`` through ``ibfab tool`` and with our own ``ibfab dump-fts``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

import refsm
from paths import require_tools

from fabric import Fabric

pytestmark = pytest.mark.timeout(150)

IBFAB = [sys.executable, "-m", "fabric.cli"]
TOPO = "fattree:2,2,2,1"  # 2 leaves, 2 spines, 2 HCAs per leaf, 1 cable per leaf-spine pair


@pytest.fixture(scope="module", autouse=True)
def opensm_installed():
    require_tools("opensm", "dump_fts")


def _wait(pred, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(step)


def _bcast(fab, node) -> dict:
    ifc = fab.nodes[node].interface("ib0")
    return {"carrier": ifc["carrier"], "stats": ifc["stats"],
            "bcast": next((g for g in ifc["mcg"] if g["mgid"].startswith("ff12:401b:ffff:")), None)}


def _ipoib_ready(fab, node) -> bool:
    b = _bcast(fab, node)
    return b["carrier"] and b["bcast"] is not None and b["bcast"]["state"] == "joined"


def wait_ipoib(fab, timeout: float = 20.0) -> None:
    """Every ib0 joined to the broadcast group (OpenSM creates it on the first join)."""
    ok = _wait(lambda: all(_ipoib_ready(fab, n) for n in fab.nodes), timeout)
    assert ok, {n: _bcast(fab, n)["bcast"] for n in fab.nodes}


def ping_all_pairs(fab) -> list:
    """The pairs whose one ping was not answered."""
    names = sorted(fab.nodes)
    return [(a, b) for a in names for b in names if a != b and fab.nodes[a].ping(b, count=1)["received"] != 1]


def log_text(fab) -> str:
    with open(os.path.join(fab.info.run_dir, "opensm.log"), errors="replace") as f:
        return f.read()


def subnet_ups(fab) -> int:
    return log_text(fab).count("SUBNET UP")


def real_dump_fts(fab, node="node0003"):
    """The real dump_fts, attached to an HCA that is not OpenSM's."""
    r = subprocess.run(IBFAB + ["tool", "--name", fab.name, node, "--", "dump_fts"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return refsm.parse_dump_fts(r.stdout)


def our_dump_fts(fab):
    r = subprocess.run(IBFAB + ["dump-fts", "--name", fab.name], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return refsm.parse_dump_fts(r.stdout)


_OSM_HDR = re.compile(r"Unicast lids \[[^\]]*\] of switch .*guid (0x[0-9a-fA-F]+)")
_OSM_ENT = re.compile(r"(0x[0-9a-fA-F]+)\s+(\d+)\s+#\s+(Switch|Channel Adapter|Router) portguid (0x[0-9a-fA-F]+)")
_OSM_FOOT = re.compile(r"(\d+) lids dumped")


def opensm_lfts(fab):
    """OpenSM's own ``opensm-lfts.dump``: ({switch GUID: {LID: port}}, {port GUID: LID})."""
    with open(os.path.join(fab.info.run_dir, "opensm", "opensm-lfts.dump")) as f:
        text = f.read()
    lfts, lids, cur = {}, {}, None
    for line in text.splitlines():
        m = _OSM_HDR.match(line)
        if m:
            cur = lfts.setdefault(int(m.group(1), 16), {})
            continue
        m = _OSM_ENT.match(line)
        if m:
            lid = int(m.group(1), 16)
            cur[lid] = int(m.group(2))
            lids[int(m.group(4), 16)] = lid
            continue
        m = _OSM_FOOT.match(line)
        if m:
            assert int(m.group(1)) == len(cur), line
            continue
        assert not line.strip(), f"unexpected line in opensm-lfts.dump: {line!r}"
    return lfts, lids


def opensm_guid2lid(fab) -> dict:
    out = {}
    with open(os.path.join(fab.info.run_dir, "opensm", "guid2lid")) as f:
        for line in f:
            if line.strip():
                g, lo, _hi = line.split()
                out[int(g, 16)] = int(lo, 16)
    return out


def our_lids(fab) -> dict:
    """{port GUID: LID} as our devices hold them (a switch: its port 0)."""
    out = {}
    for d in fab.devices().values():
        if d["type"] == "switch":
            out[d["guid"]] = d["lid"]
        else:
            for p in d["ports"]:
                if p["cabled"]:
                    out[p["guid"]] = p["lid"]
    return out


def trace(topo, lfts, lids, src, dst):
    """Follow ``lfts`` over the topology's cables from HCA ``src`` to HCA ``dst``'s LID; the
    (switch, out port) hops, or an AssertionError when they do not get there."""
    guid = {n.name: n.node_guid for n in topo.nodes.values()}
    dlid = lids[topo.nodes[dst].port_guids[1]]
    at, hops = topo.peer(src, 1), []
    while topo.nodes[at[0]].kind == "switch":
        out = lfts[guid[at[0]]].get(dlid)
        assert out, f"{src} -> {dst}: {at[0]} has no route to LID {dlid}"
        hops.append((at[0], out))
        assert len(hops) < 8, f"{src} -> {dst}: loop {hops}"
        at = topo.peer(at[0], out)
        assert at is not None, f"{src} -> {dst}: {hops[-1]} leads to no cable"
    assert at == (dst, 1), f"{src} -> {dst} ends at {at}"
    return hops


def check_routes(topo, lfts, lids):
    hcas = [n.name for n in topo.hcas()]
    for a in hcas:
        for b in hcas:
            if a != b:
                trace(topo, lfts, lids, a, b)


@pytest.fixture(scope="module")
def fab():
    with Fabric(TOPO, sm="opensm", sm_args=["-D", "0x43"]) as f:
        wait_ipoib(f)
        yield f


# --- the subnet and its tables -------------------------------------------------------------------


def test_subnet_up_and_tables_are_what_opensm_computed(fab):
    assert fab.sm_status()["running"] and fab.sm_status()["kind"] == "opensm"
    log = log_text(fab)
    assert "SUBNET UP" in log and "Entering MASTER state" in log
    assert "minhop tables configured on all switches" in log
    for _ in range(10):  # a sweep that completes while we read rewrites the dump: read again
        n = subnet_ups(fab)
        osm, osm_lids = opensm_lfts(fab)
        real, real_lids, _, _ = real_dump_fts(fab)
        if subnet_ups(fab) == n:
            break
    assert len(osm) == len(fab.topology.switches())
    assert real == osm
    assert real_lids == osm_lids == opensm_guid2lid(fab) == our_lids(fab)
    ours, ours_lids, _, _ = our_dump_fts(fab)
    assert ours == real and ours_lids == real_lids
    check_routes(fab.topology, real, real_lids)


def test_ipoib_pings_all_pairs(fab):
    assert ping_all_pairs(fab) == []


# --- a cable pulled: OpenSM reroutes -------------------------------------------------------------


def test_cable_pull_reroutes_and_pings_recover(fab):
    topo = fab.topology
    port, (spine, spine_port) = next((p, peer) for p, peer in topo.connected_ports("leaf01").items()
                                     if topo.nodes[peer[0]].kind == "switch")
    guid = {n.name: n.node_guid for n in topo.nodes.values()}
    cross = [(a, b) for a in ("node0001", "node0002") for b in ("node0003", "node0004")]

    def uses_pulled(lfts) -> list:
        """The LFT entries that send through either end of the pulled cable."""
        return [(sw, lid) for sw, p in (("leaf01", port), (spine, spine_port))
                for lid, out in lfts[guid[sw]].items() if out == p]

    before, lids, _, _ = real_dump_fts(fab)
    assert uses_pulled(before), "minhop spreads leaf01's routes over both spines"
    n0 = subnet_ups(fab)
    fab.link_down("leaf01", port)
    try:
        # Trap 128 from the switches: OpenSM sweeps again and routes around the missing cable
        assert _wait(lambda: subnet_ups(fab) > n0, 10.0), log_text(fab)[-2000:]
        t0 = time.monotonic()
        assert _wait(lambda: not uses_pulled(real_dump_fts(fab)[0]), 10.0, step=0.2)
        after, after_lids, _, _ = real_dump_fts(fab)
        assert after_lids == lids
        check_routes(topo, after, after_lids)
        # pings across the leaves recover within a few seconds
        assert _wait(lambda: all(fab.nodes[a].ping(b, count=1, timeout=0.5)["received"] == 1 for a, b in cross),
                     10.0, step=0.2), "pings across leaves did not recover"
        assert time.monotonic() - t0 < 10.0
        assert all(fab.nodes[b].ping(a, count=1)["received"] == 1 for a, b in cross)
    finally:
        n1 = subnet_ups(fab)
        fab.link_up("leaf01", port)
    assert _wait(lambda: subnet_ups(fab) > n1, 10.0)
    # the cable is back in use
    assert _wait(lambda: uses_pulled(real_dump_fts(fab)[0]), 10.0, step=0.2)
    assert _wait(lambda: ping_all_pairs(fab) == [], 10.0, step=0.2)


# --- OpenSM restarted ----------------------------------------------------------------------------


def test_restart_sm_keeps_lids_and_ipoib_rejoins(fab):
    lids = our_lids(fab)
    old = fab.sm_status()
    joins = {n: _bcast(fab, n)["stats"]["joins"] for n in fab.nodes}
    n0 = subnet_ups(fab)
    fab.restart_sm()
    new = fab.sm_status()
    assert new["running"] and new["pid"] != old["pid"]
    assert subnet_ups(fab) > n0
    log = log_text(fab)
    assert log.rfind("SUBNET UP") > log.rfind("Exiting SM") > 0
    assert our_lids(fab) == lids
    # OpenSM's first sweep sets ClientReregister: every node joins the broadcast group again
    wait_ipoib(fab)
    assert all(_bcast(fab, n)["stats"]["joins"] > joins[n] for n in fab.nodes), \
        {n: _bcast(fab, n)["stats"]["joins"] for n in fab.nodes}
    assert ping_all_pairs(fab) == []


# --- each routing engine -------------------------------------------------------------------------

# Every engine here fits fattree:2,2,2,1: OpenSM 3.3.23 logs "<engine> tables configured on all
# switches" with the engine it asked for (ftree recognises this two-level fat tree; dor and lash take
# any topology). Had one not fitted, OpenSM would have fallen back to minhop and said "minhop" in
# that line; the test asserts the engine that really routed.
ENGINES = ["minhop", "updn", "ftree", "dor", "lash"]


@pytest.mark.parametrize("engine", ENGINES)
def test_routing_engine_brings_the_subnet_up(engine):
    with Fabric(TOPO, sm="opensm", sm_args=["-R", engine]) as f:
        log = log_text(f)
        assert "SUBNET UP" in log
        used = re.findall(r"(\w+) tables configured on all switches", log)
        assert used and set(used) == {engine}, log
        lfts, lids, _, _ = real_dump_fts(f)
        assert lids == our_lids(f)
        check_routes(f.topology, lfts, lids)
        wait_ipoib(f)
        assert ping_all_pairs(f) == []


# --- the first sweep's placement (fabric.opensm.SweepPlacement) ------------------------------------


def _cpus_of(pid: int) -> set:
    return {c for t in os.listdir(f"/proc/{pid}/task") for c in os.sched_getaffinity(int(t))}


def _policies_of(pid: int) -> set:
    return {os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{pid}/task")}


def test_after_the_first_sweep_opensm_and_the_host_run_anywhere_again(fab):
    """During the first sweep the SM's device host and OpenSM share one CPU as SCHED_BATCH; once
    SUBNET UP is seen, every thread of both has the CPUs it had before (the launcher's) and
    SCHED_OTHER."""
    from fabric import opensm

    everywhere = os.sched_getaffinity(0)
    host = fab.pids()[fab.info.host_of(fab.topology.sm_node)]
    for pid in (host, opensm.pid(fab.info)):
        assert _cpus_of(pid) == everywhere
        assert _policies_of(pid) == {os.SCHED_OTHER}


class _Info:
    def __init__(self, tmp_path, host_pid):
        self.tmp_path, self.hosts = tmp_path, [{"devices": ["sm"]}]
        (tmp_path / "host-0.pid").write_text(str(host_pid))

    def pid_file(self, i):
        return str(self.tmp_path / f"host-{i}.pid")

    def host_of(self, device):
        return 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: nothing to place")
def test_sweep_placement_places_the_host_and_gives_both_back(tmp_path, monkeypatch):
    from fabric.opensm import SweepPlacement

    host = subprocess.Popen(["sleep", "30"])
    idle = subprocess.Popen(["sleep", "30"])
    sm = None
    try:
        everywhere = os.sched_getaffinity(0)
        p = SweepPlacement.begin(_Info(tmp_path, host.pid), "sm")
        assert p is not None and len(p.cpus) == 1 and p.cpus <= everywhere
        assert _cpus_of(host.pid) == p.cpus and _policies_of(host.pid) == {os.SCHED_BATCH}
        with p.forking():  # as opensm.start starts OpenSM: the child inherits both
            sm = subprocess.Popen(["sleep", "30"])
        assert os.sched_getaffinity(0) == everywhere and os.sched_getscheduler(0) == os.SCHED_OTHER
        assert _cpus_of(sm.pid) == p.cpus and _policies_of(sm.pid) == {os.SCHED_BATCH}
        p.end(sm.pid)
        for pid in (host.pid, sm.pid):
            assert _cpus_of(pid) == everywhere and _policies_of(pid) == {os.SCHED_OTHER}
        # a host someone made SCHED_IDLE is placed on one CPU but keeps its policy
        os.sched_setscheduler(idle.pid, os.SCHED_IDLE, os.sched_param(0))
        q = SweepPlacement.begin(_Info(tmp_path, idle.pid), "sm")
        assert q.policy is None and _policies_of(idle.pid) == {os.SCHED_IDLE}
        q.end(None)
        assert _cpus_of(idle.pid) == everywhere and _policies_of(idle.pid) == {os.SCHED_IDLE}
        monkeypatch.setenv("IBFAB_OPENSM_SWEEP_CPU", "0")  # left to the scheduler
        assert SweepPlacement.begin(_Info(tmp_path, host.pid), "sm") is None
        assert _cpus_of(host.pid) == everywhere and _policies_of(host.pid) == {os.SCHED_OTHER}
        monkeypatch.delenv("IBFAB_OPENSM_SWEEP_CPU")
        gone = tmp_path / "gone"
        gone.mkdir()
        assert SweepPlacement.begin(_Info(gone, 2 ** 22 + 1), "sm") is None  # no such host: nothing to do
    finally:
        for proc in (host, idle, sm):
            if proc is not None:
                proc.kill()
                proc.wait()
