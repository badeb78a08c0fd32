"""The subnet manager on a real fabric: device-host processes, ZeroMQ links, control RPC.

Few and focused; the behaviour in detail is tested sans-IO in test_sm_loopnet.py. Each test
launches its own fabric (well under a second) with the SM on the topology's SM port.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import pytest

from fabric import Fabric, smctl
from fabric import wire as w
from fabric.sm.routing import route, subnet_from_topology
from paths import shared_topology
from refsm import parse_dump_fts

_tids = itertools.count(0x7E5A0000)


def _lft_block0(fab, via: str, switch_lid: int) -> bytes:
    """LFT block 0 of a switch, read with a LID-routed Get from ``via`` (an HCA without the SM)."""
    smp = w.new_mad(w.SMPLid, method=w.GET, tid=next(_tids), attr_id=w.ATTR_LFT, attr_mod=0)
    r = fab.smp(via, smp, dlid=switch_lid)
    assert r is not None and r.status == 0, r
    return bytes(w.LinearForwardingTable.unpack(r.data).ports)


def _lids(fab) -> dict:
    """{device: LID} of every HCA port 1 and switch port 0, from the hosts."""
    out = {}
    for name, d in fab.devices().items():
        p = next(p for p in d["ports"] if p["port"] == (0 if d["type"] == "switch" else 1))
        out[name] = p["lid"]
    return out


def _exchange(fab, qpn, lids, pairs, tag, timeout=5.0):
    """Send one datagram per (src, dst) pair; returns {dst: sorted payloads received}."""
    want = {}
    for src, dst in pairs:
        payload = f"{tag}:{src}>{dst}".encode()
        fab.post_send(src, qpn[src], dlid=lids[dst], dest_qp=qpn[dst], payload=payload)
        want.setdefault(dst, []).append(payload)
    got = {}
    for dst, payloads in want.items():
        rx = []
        deadline = time.monotonic() + timeout
        while len(rx) < len(payloads) and time.monotonic() < deadline:
            rx += [c["payload"] for c in fab.poll(dst, qpn[dst], timeout=0.5)]
        got[dst] = sorted(rx)
    return got, {d: sorted(p) for d, p in want.items()}


@pytest.fixture
def two_switch():
    with Fabric(shared_topology("ibsim/net.2sw2path4hca")) as fab:
        yield fab


def test_bring_up_and_dump_fts_match_the_sms_routes(two_switch):
    fab = two_switch
    topo = fab.topology
    up = fab.info.data["subnet_up"]
    assert up["sweep"] >= 1 and up["nodes"] == len(topo.nodes) == 6
    assert list(up["stages"]) == ["discovery", "lids", "routes", "ports", "armed", "active", "up"]
    assert 0 < up["stages"]["lids"] <= up["stages"]["up"] == up["seconds"]  # discovery took round trips
    assert up["ports_active"] == 2 * len(topo.links) == 12
    st = smctl.sm_status(fab.info)
    assert (st["node"], st["port"], st["state"]) == (topo.sm_node, topo.sm_port, "up")
    assert (st["timeouts"], st["failed"]) == (0, 0), st  # no SMP lost or answered late
    devs = fab.devices()
    lids = _lids(fab)
    assert sorted(lids.values()) == list(range(1, 7))  # unique, compact
    sm_lid = lids[topo.sm_node]
    for name, d in devs.items():
        for p in d["ports"]:
            if p["cabled"]:
                assert p["state"] == "Active" and p["phys"] == "LinkUp", (name, p)
        if d["type"] == "hca":
            assert d["ports"][0]["sm_lid"] == sm_lid, name
    # the LFTs the SM computed for this fabric, by the same rules on the topology
    guid_lid = {}
    for n in topo.nodes.values():
        if n.kind == "switch":
            guid_lid[n.node_guid] = lids[n.name]
        else:
            guid_lid[n.port_guids.get(1, n.node_guid + 1)] = lids[n.name]
    expected = route(subnet_from_topology(topo, guid_lid), "minhop")

    out = subprocess.run([sys.executable, "-m", "fabric.cli", "dump-fts", "--name", fab.name],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lfts, dumped_lids, names, kinds = parse_dump_fts(out.stdout)
    switches = {n.node_guid: n for n in topo.switches()}
    assert set(lfts) == set(switches)
    assert dumped_lids == guid_lid
    hca_lids = {lids[n.name] for n in topo.hcas()}
    for guid, table in lfts.items():
        sw = switches[guid]
        assert table[lids[sw.name]] == 0, sw.name  # its own LID: port 0
        assert hca_lids <= set(table), sw.name  # every HCA routed
        want = {lid: p for lid, p in enumerate(expected[guid]) if p != 0xFF and lid}
        assert table == want, sw.name
        # and what a plain LFT Get reads from the switch agrees
        block = _lft_block0(fab, "Hca2", lids[sw.name])
        assert {lid: p for lid, p in enumerate(block) if p != 0xFF and lid} == table


def test_sm_moves_to_another_hca_over_rpc_and_traffic_keeps_flowing(two_switch):
    fab = two_switch
    info = fab.info
    hcas = [n.name for n in fab.topology.hcas()]
    lids = _lids(fab)
    qpn = {h: fab.create_qp(h, qkey=0x4242) for h in hcas}
    pairs = list(itertools.permutations(hcas, 2))
    got, want = _exchange(fab, qpn, lids, pairs, "before")
    assert got == want

    smctl.stop_sm(info)
    assert smctl.sm_status(info) is None
    got, want = _exchange(fab, qpn, lids, pairs, "no-sm")  # the tables stay; nobody needs an SM
    assert got == want
    smctl.start_sm(info, "Hca4", 1)
    up = smctl.wait_subnet_up(info, deadline=time.monotonic() + 15, after_sweep=0)
    assert up["sweep"] == 1 and up["ports_active"] == 12
    st = smctl.sm_status(info)
    assert (st["node"], st["port"]) == ("Hca4", 1)
    assert "'LFT'" not in st["log"][-1] and "PortState" not in st["log"][-1], st["log"][-1]
    assert _lids(fab) == lids
    for name, d in fab.devices().items():
        if d["type"] == "hca":
            assert d["ports"][0]["sm_lid"] == lids["Hca4"], name
            assert d["ports"][0]["state"] == "Active"
    got, want = _exchange(fab, qpn, lids, pairs, "after")
    assert got == want


def test_pulled_cable_on_a_redundant_fabric_is_routed_around():
    with Fabric("fattree:2,2,2,2") as fab:
        info = fab.info
        lids = _lids(fab)
        src, dst = "node0001", "node0004"  # leaf01 -> leaf02
        port = _lft_block0(fab, "node0002", lids["leaf01"])[lids[dst]]
        assert 3 <= port <= 6  # an uplink
        qpn = {h: fab.create_qp(h, qkey=0x77) for h in (src, dst)}
        got, want = _exchange(fab, qpn, lids, [(src, dst)], "before")
        assert got == want
        sweeps = smctl.sm_status(info)["sweeps"]

        t0 = time.monotonic()
        fab.link_down("leaf01", port)
        arrived = None
        while arrived is None and time.monotonic() - t0 < 5.0:
            fab.post_send(src, qpn[src], dlid=lids[dst], dest_qp=qpn[dst], payload=b"after")
            rx = fab.poll(dst, qpn[dst], timeout=0.2)
            if any(c["payload"] == b"after" for c in rx):
                arrived = time.monotonic() - t0
        assert arrived is not None, smctl.sm_status(info)
        st = smctl.sm_status(info)
        assert st["traps"] >= 1 and st["sweeps"] > sweeps, st
        assert _lft_block0(fab, "node0002", lids["leaf01"])[lids[dst]] != port
        d = fab.devices()["leaf01"]
        assert next(p for p in d["ports"] if p["port"] == port)["state"] == "Down"
