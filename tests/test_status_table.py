"""``ibfab status`` for a person: a summary, one short line per device (GUID, LID, IP, provider,
host), a device's ports with NODE; ``--json`` complete with GUIDs as the diags print them; a dead
device host named with exit code 1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from fabric import Fabric

IBFAB = [sys.executable, "-m", "fabric.cli"]
pytestmark = pytest.mark.timeout(60)
TOPO = "fattree:2,2,4,2"  # 36-port leaves and spines, 8 HCAs


def _status(name, *args):
    return subprocess.run(IBFAB + ["status", "--name", name, *args], capture_output=True, text=True, timeout=30)


def _rows(out: str) -> dict:
    """The device lines of the table, by name, as {column title: value}."""
    lines = [line.split() for line in out.splitlines()]
    header = next(line for line in lines if line[:2] == ["name", "type"])
    return {line[0]: dict(zip(header, line)) for line in lines if len(line) == len(header) and line is not header}


@pytest.fixture(scope="module")
def fab():
    with Fabric(TOPO, name="stattable", hosts=2) as f:
        yield f


def _wait(pred, seconds=10.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    return pred()


def test_summary_and_one_short_line_per_device(fab):
    r = _status(fab.name)
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) < 100, r.stdout
    topo = fab.topology
    assert f"links: {len(topo.links)}/{len(topo.links)} up" in r.stdout
    assert f"{len(topo.nodes)} devices ({len(topo.switches())} switches, {len(topo.hcas())} HCAs)" in r.stdout
    sm_line = next(line for line in r.stdout.splitlines() if line.startswith("SM: "))
    assert f" on {topo.sm_node} port {topo.sm_port}" in sm_line and "SUBNET UP" in sm_line
    rows = _rows(r.stdout)
    assert set(rows) == set(topo.nodes)
    devices = fab.devices()
    for name, node in topo.nodes.items():
        row = rows[name]
        assert row["type"] == node.kind
        assert int(row["GUID"], 16) == node.node_guid and row["GUID"].startswith("0x")
        assert row["host"] == str(fab.info.host_of(name))
        lid = next(p["lid"] for p in devices[name]["ports"] if p["lid"])
        assert row["LID"] == str(lid)
    for name in fab.nodes:  # what the node itself says of its ib0, read another way
        ib0 = fab.client.call(name, "ipoib_status")["interfaces"][0]
        assert rows[name]["IP"] == ib0["addr"]
        assert rows[name]["provider"] == fab.nodes[name].status()["backend"]
        assert rows[name]["joined"] == ("yes" if ib0["carrier"] else "no") == "yes"
    for sw in topo.switches():
        assert rows[sw.name]["IP"] == "-"


def test_a_devices_ports_and_a_pulled_cable(fab):
    topo = fab.topology
    r = _status(fab.name, "leaf01")
    assert r.returncode == 0, r.stderr
    ports = {int(line.split()[0]): line.split() for line in r.stdout.splitlines()[2:]}
    assert sorted(ports) == sorted(topo.connected_ports("leaf01"))
    for port, (peer, peer_port) in topo.connected_ports("leaf01").items():
        _, state, phys, _, shown_peer, mtu, width, *_ = ports[port]
        assert (state, phys, shown_peer) == ("Active", "LinkUp", f"{peer}/{peer_port}")
        assert mtu == "4096" and width == "4X"
    fab.link_down("leaf01", 2)
    try:
        def shows_down():
            out = _status(fab.name, "leaf01").stdout
            line = next(x for x in out.splitlines() if x.split()[:1] == ["2"])
            return line.split()[1:3] if line.split()[1] == "Down" else None
        assert _wait(shows_down) == ["Down", "Disabled"]
        r = _status(fab.name)
        assert f"links: {len(topo.links) - 1}/{len(topo.links)} up" in r.stdout
        peer = topo.peer("leaf01", 2)[0]
        assert _rows(r.stdout)[peer]["active"] == "0/1"
    finally:
        fab.link_up("leaf01", 2)
    assert _wait(lambda: f"links: {len(topo.links)}/{len(topo.links)} up" in _status(fab.name).stdout)
    r = _status(fab.name, "nosuchnode")
    assert r.returncode == 2 and r.stderr.startswith("ibfab status: ") and "Traceback" not in r.stderr


def test_json_is_complete_with_guids_as_hex_strings(fab):
    r = _status(fab.name, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["name"] == fab.name and doc["dead_hosts"] == []
    topo = fab.topology
    devices = {d["name"]: d for d in doc["devices"]}
    assert set(devices) == set(topo.nodes)
    hexguid = re.compile(r"0x[0-9a-f]{16}\Z")
    for name, node in topo.nodes.items():
        d = devices[name]
        assert hexguid.match(d["guid"]) and int(d["guid"], 16) == node.node_guid
        assert d["pid"] in fab.pids() and d["host"] == fab.info.host_of(name)
        for p in d["ports"]:
            assert hexguid.match(p["guid"]), p
            if p["port"] and node.kind == "hca":
                assert int(p["guid"], 16) == node.port_guids[p["port"]]
            peer = topo.peer(name, p["port"]) if p["port"] else None
            assert p["peer"] == (f"{peer[0]}/{peer[1]}" if peer else None)
    for name in fab.nodes:
        assert devices[name]["ip"] == fab.client.call(name, "ipoib_status")["interfaces"][0]["addr"]
    assert set(doc["providers"]) == set(fab.nodes)  # what the node software added before stays
    s = doc["summary"]
    assert (s["links"], s["links_up"], s["switches"], s["hcas"]) == (len(topo.links), len(topo.links),
                                                                     len(topo.switches()), len(topo.hcas()))
    assert doc["sm"]["node"] == topo.sm_node and doc["sm"]["subnet_up"]["nodes"] == len(topo.nodes)
    one = json.loads(_status(fab.name, "node0003", "--json").stdout)
    assert one["name"] == "node0003" and one["ports"][0]["peer"] == "leaf01/3"


def test_a_dead_host_is_named_with_exit_code_1():
    with Fabric("fattree:2,2,2,1", name="statdead", hosts=3) as f:
        victim = 1
        gone = f.info.hosts[victim]["devices"]
        f.kill_host(victim)
        assert _wait(lambda: f.dead_hosts() == [victim], 5)
        r = _status(f.name)
        assert r.returncode == 1, r.stderr
        assert f"DEAD (device host {victim}" in r.stdout and f"restart-host --name statdead {victim}" in r.stdout
        rows = _rows(r.stdout)
        assert set(rows) == set(f.topology.nodes) - set(gone)  # the live ones still listed
        j = _status(f.name, "--json")
        assert j.returncode == 1 and [d["host"] for d in json.loads(j.stdout)["dead_hosts"]] == [victim]
        one = _status(f.name, gone[0])
        assert one.returncode == 1 and f"is on device host {victim}, which is dead" in one.stderr
