"""infiniband-diags-shaped commands over real MADs: perfquery (PMA), saquery (SA), and moving the SM
with the Python API."""

import subprocess
import sys
import time

import pytest

from fabric import Fabric

IBFAB = [sys.executable, "-m", "fabric.cli"]


@pytest.fixture(scope="module")
def fab():
    with Fabric("fattree:2,2,2,2", name="diagcli") as f:
        yield f


def _run(*args, rc=0):
    r = subprocess.run(IBFAB + list(args) + ["--name", "diagcli"], capture_output=True, text=True, timeout=60)
    assert r.returncode == rc, r.stderr
    return r.stdout


def _field(out: str, name: str) -> int:
    line = next(x for x in out.splitlines() if x.startswith(name + ":"))
    return int(line.rsplit(".", 1)[-1].lstrip("."), 0)


def test_perfquery_reads_and_resets_pma_counters(fab):
    assert fab.nodes["node0001"].ping("node0004", count=3)["received"] == 3
    out = _run("perfquery", "node0004", "1")
    assert out.startswith("# Port counters: Lid ")
    assert _field(out, "PortRcvPkts") >= 3 and _field(out, "PortXmitPkts") >= 3
    assert _field(out, "PortRcvData") > 0
    # the counters the PMA reports are the ones the device keeps
    assert _field(out, "PortRcvPkts") <= fab.counters("node0004", 1)["counters"]["port_rcv_pkts"]
    _run("perfquery", "node0004", "1", "--reset")
    assert fab.counters("node0004", 1)["counters"]["port_xmit_pkts"] <= 2  # just the PMA's own replies since
    ext = _run("perfquery", "leaf01", "1", "--extended")
    assert "Port extended counters" in ext and _field(ext, "PortXmitData") > 0


def test_a_port_queries_its_own_pma(fab):
    """perfquery from the very HCA that is asked (the default sender is the SM's HCA, node0001), and
    from another HCA about itself, as on real hardware: the MAD loops back to the port's PMA."""
    for via in ("node0001", "node0003"):
        out = _run("perfquery", via, "1", "--via", via)
        assert out.startswith(f"# Port counters: Lid {fab.nodes[via].lid} port 1")
        assert _field(out, "PortXmitPkts") >= 0 and "PortRcvData" in out


def test_saquery_nodes_path_and_groups(fab):
    out = _run("saquery", "nodes")
    assert out.count("NodeRecord dump:") == 8
    assert "NodeDescription.........spine02" in out
    path = _run("saquery", "path", "node0001", "node0004")
    assert f"dlid....................{fab.nodes['node0004'].lid}" in path
    assert f"slid....................{fab.nodes['node0001'].lid}" in path
    groups = _run("saquery", "mcmembers")
    assert "MGID....................ff12:401b:ffff::ffff:ffff" in groups  # inet_ntop's form, as saquery


def test_perfquery_without_lid_is_a_clear_error(fab):
    r = subprocess.run(IBFAB + ["perfquery", "nosuchnode", "--name", "diagcli"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0


def test_restart_sm_on_another_node_keeps_lids_and_traffic(fab):
    lids = {n: fab.nodes[n].lid for n in fab.nodes}
    up = fab.restart_sm("node0003", 1)
    assert up["nodes"] == 8
    assert {n: fab.nodes[n].lid for n in fab.nodes} == lids
    assert fab.sm_status()["node"] == "node0003"
    # ClientReregister: the nodes rejoin the broadcast group with the new SA, then traffic resumes
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(
            fab.nodes[n].interface()["carrier"] for n in ("node0002", "node0004")):
        time.sleep(0.05)
    assert fab.nodes["node0002"].ping("node0004", count=2)["received"] == 2
    assert fab.nodes["node0002"].interface()["stats"]["flushes_light"] >= 1
