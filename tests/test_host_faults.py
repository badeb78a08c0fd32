"""A device host killed with SIGKILL: its peers' ports go down at once (the SM gets Trap 128 and
reroutes), ``status`` and ``list`` name the dead host instead of hanging, a call to one of its
devices says so, ``restart-host`` brings the same devices back with their old LIDs, and after the
SM's own host dies a new SM can start elsewhere."""

import subprocess
import sys
import time

import pytest

from fabric import Fabric

IBFAB = [sys.executable, "-m", "fabric.cli"]
pytestmark = pytest.mark.timeout(180)


def _ibfab(*args, timeout=60):
    return subprocess.run(IBFAB + list(args), capture_output=True, text=True, timeout=timeout)


def _wait(pred, seconds, step=0.05):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def _ports_down_facing(fab, dead_devices):
    """Ports of live devices whose cable leads to a device of the dead host: is each down?"""
    out = {}
    devs = fab.client.devices()
    for link in fab.topology.links:
        for a, ap, b in ((link.a, link.a_port, link.b), (link.b, link.b_port, link.a)):
            if b in dead_devices and a not in dead_devices:
                p = next(x for x in devs[a]["ports"] if x["port"] == ap)
                out[(a, ap)] = p["phys"] != "LinkUp"
    return out


def _ping_ok(fab, src, dst, seconds=10):
    def once():
        try:
            return fab.nodes[src].ping(dst)["received"] == 1
        except Exception:
            return False
    return _wait(once, seconds, 0.2)


@pytest.fixture
def fab():
    # host 0: leaf01 and its HCAs (the SM's), host 1: leaf02 and its HCAs, host 2: the spines
    with Fabric("fattree:2,2,2,1", name="hostfault", hosts=3) as f:
        assert f.info.hosts[1]["devices"] == ["leaf02", "node0003", "node0004"]
        yield f


def test_a_killed_host_is_reported_and_restarted_with_its_old_lids(fab):
    victim = 1
    dead_devices = set(fab.info.hosts[victim]["devices"])
    hcas = [n for n in dead_devices if fab.topology.nodes[n].kind == "hca"]
    live_hca = next(n.name for n in fab.topology.hcas() if n.name not in dead_devices)
    lids = {n: fab.nodes[n].lid for n in hcas}
    sweeps = fab.sm_status()["sweeps"]

    t0 = time.monotonic()
    fab.kill_host(victim)
    assert _wait(lambda: fab.dead_hosts() == [victim], 1.0, 0.01)
    facing = _wait(lambda: (lambda d: d if all(d.values()) else None)(_ports_down_facing(fab, dead_devices)),
                   2.0, 0.01)
    assert facing, "ports facing the dead host's devices stayed up"
    assert time.monotonic() - t0 < 1.5
    assert _wait(lambda: fab.sm_status()["sweeps"] > sweeps, 5), "no sweep after the Trap 128"
    assert fab.dead_hosts() == [victim]

    t1 = time.monotonic()
    r = _ibfab("status", "--name", "hostfault")
    assert time.monotonic() - t1 < 5
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"DEAD (device host {victim}" in r.stdout and f"restart-host --name hostfault {victim}" in r.stdout
    assert live_hca in r.stdout  # the live hosts' devices are still listed
    r = _ibfab("list")
    assert "hostfault\tdegraded (device host" in r.stdout
    t1 = time.monotonic()
    with pytest.raises(Exception, match=f"on device host {victim}, which is dead"):
        fab.nodes[hcas[0]].ping(live_hca)
    assert time.monotonic() - t1 < 1.0  # not an RPC timeout

    r = _ibfab("restart-host", "--name", "hostfault", str(victim))
    assert r.returncode == 0, r.stderr
    assert "restarted" in r.stdout
    from fabric.runinfo import RunInfo

    fab.info = fab.client.info = RunInfo.load(fab.info.run_dir)
    assert fab.dead_hosts() == []
    got = _wait(lambda: (lambda l: l if all(l.values()) else None)({n: fab.nodes[n].lid for n in hcas}), 10, 0.1)
    assert got == lids, "the SM did not give the restarted ports their old LIDs"
    assert _ping_ok(fab, hcas[0], live_hca)
    assert _ibfab("list").stdout.count("hostfault\trunning") == 1
    r = _ibfab("restart-host", "--name", "hostfault", str(victim))
    assert r.returncode == 1 and "is running" in r.stderr


def test_a_restarted_leafs_hosts_first_broadcast_arrives(fab):
    """After its host restarts, leaf02 holds no multicast tree, and its HCAs join the broadcast
    group again. The SM answers such a join once the MFT blocks of the new branch are written:
    the HCA's first ARP (a broadcast, sent as soon as the join is answered) reaches the other
    side, so one ARP request is enough and the first ping is answered at once, not after the
    neighbour table's one-second retransmission."""
    victim, node, live = 1, "node0003", "node0001"
    assert node in fab.info.hosts[victim]["devices"] and live not in fab.info.hosts[victim]["devices"]
    fab.kill_host(victim)
    assert _wait(lambda: fab.dead_hosts() == [victim], 2)
    fab.restart_host(victim)

    def ib0():
        try:
            ifs = fab.nodes[node].status()["interfaces"]
        except Exception:
            return None
        return ifs[0] if ifs and ifs[0]["carrier"] else None

    assert _wait(ib0, 10, 0.01), "no carrier on the restarted HCA"
    assert ib0()["stats"].get("arp_requests", 0) == 0
    r = fab.nodes[node].ping(live, count=1, timeout=3)
    assert r["received"] == 1
    assert ib0()["stats"]["arp_requests"] == 1  # the first broadcast was not lost at the leaf


def test_restart_host_through_the_api_and_a_new_sm_after_the_sm_host_dies(fab):
    sm_host = fab.info.host_of(fab.topology.sm_node)
    assert sm_host == 0
    new_sm, peer = "node0003", "node0004"  # behind leaf02, which lives

    fab.kill_host(sm_host)
    assert _wait(lambda: fab.dead_hosts() == [sm_host], 2)
    r = _ibfab("sm", "status", "--name", "hostfault")
    assert r.returncode == 1 and "gone with its device host" in r.stdout
    r = _ibfab("sm", "start", "--name", "hostfault", "--node", new_sm)
    assert r.returncode == 0, r.stderr
    assert f"SM on {new_sm} port 1: SUBNET UP" in r.stdout
    r = _ibfab("sm", "status", "--name", "hostfault")
    assert r.returncode == 0 and f"SM on {new_sm}" in r.stdout and ": up," in r.stdout
    assert _ping_ok(fab, new_sm, peer)

    fab.restart_host(sm_host)  # the SM stays where it now runs; the restarted ports join its subnet
    assert fab.dead_hosts() == []
    assert fab.sm_status()["node"] == new_sm
    back = next(n for n in fab.info.hosts[sm_host]["devices"] if fab.topology.nodes[n].kind == "hca")
    assert _ping_ok(fab, back, new_sm)

    r = _ibfab("sm", "stop", "--name", "hostfault")
    assert r.returncode == 0
    r = _ibfab("sm", "status", "--name", "hostfault")
    assert r.returncode == 1 and "not running" in r.stdout
    r = _ibfab("sm", "start", "--name", "hostfault", "--node", "nosuch")
    assert r.returncode == 2 and "no node 'nosuch'" in r.stderr


def test_a_link_takes_frames_only_from_its_own_fabric(fab):
    """Anyone who can reach a host's ingress socket (a stale process of an earlier fabric of the
    same name, another program) cannot pull a cable: a burst without the fabric's link token is
    dropped and counted, and only one with it is obeyed."""
    import os
    import stat

    import zmq

    from fabric.wire.burst import KIND_DOWN, encode_control

    assert stat.S_IMODE(os.stat(fab.info.run_dir).st_mode) == 0o700  # the token's file is private
    token = bytes.fromhex(fab.info.data["link_token"])
    sw = "leaf01"
    port = next(lk.a_port if lk.a == sw else lk.b_port for lk in fab.topology.links
                if sw in (lk.a, lk.b) and "node" in (lk.b if lk.a == sw else lk.a))
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(fab.info.ingress(fab.info.host_of(sw)))
    dev = fab.info.device_index(sw)  # a burst names its device: the host has one ingress socket
    try:
        def phys():
            d = fab.client.devices()[sw]
            return next(p for p in d["ports"] if p["port"] == port)["phys"], d["drops"].get("foreign_burst", 0)

        for bad in (bytes(8), os.urandom(8)):
            sock.send(encode_control(port, KIND_DOWN, bad, dev))
        assert _wait(lambda: phys()[1] == 2, 2), phys()
        assert phys()[0] == "LinkUp"
        sock.send(encode_control(port, KIND_DOWN, token, dev))  # the check is what stopped the others
        assert _wait(lambda: phys()[0] != "LinkUp", 2)
    finally:
        sock.close()
    fab.link_up(sw, port)
    assert _wait(lambda: phys()[0] == "LinkUp", 5)
