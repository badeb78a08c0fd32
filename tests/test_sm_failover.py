"""The SM going away and coming back, as IPoIB sees it: a new SM's ClientReregister is a light
flush, so the interfaces rejoin at once and keep their carrier meanwhile (the kernel's ipoib does
the same: no "Network is down" while the subnet is up)."""

import threading
import time

import pytest

from fabric import Fabric, launcher, smctl

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def fab():
    with Fabric("fattree:2,2,2,1", name="smfail") as f:
        assert f.nodes["node0002"].ping("node0004")["received"] == 1
        yield f


def test_an_sm_restart_keeps_the_carrier_and_traffic_resumes_at_once(fab):
    watched = ("node0002", "node0004")
    seen_down = []
    stop = threading.Event()

    def watch():
        with launcher.FabricClient("smfail") as fc:  # its own sockets: ZeroMQ's are per thread
            while not stop.is_set():
                for n in watched:
                    if not fc.call(n, "ipoib_status")["interfaces"][0]["carrier"]:
                        seen_down.append((n, time.monotonic()))
                time.sleep(0.01)

    before = {n: fab.nodes[n].interface()["stats"] for n in watched}
    t = threading.Thread(target=watch)
    t.start()
    try:
        up = fab.restart_sm("node0003", 1)
        t_up = time.monotonic()
        r = None
        while time.monotonic() - t_up < 2.0:
            r = fab.nodes["node0002"].ping("node0004", count=1, timeout=0.2)
            if r["received"]:
                break
        resumed = time.monotonic() - t_up
    finally:
        stop.set()
        t.join()
    assert up["nodes"] == 8
    assert not seen_down, f"carrier dropped during the SM restart: {seen_down[:3]}"
    assert r["received"] == 1 and resumed < 0.5, (r, resumed)
    after = {n: fab.nodes[n].interface()["stats"] for n in watched}
    for n in watched:
        assert after[n]["flushes_light"] > before[n]["flushes_light"]  # it did rejoin
        assert after[n]["flushes_normal"] == before[n]["flushes_normal"]
        assert after[n]["joins"] > before[n]["joins"]
    end = time.monotonic() + 3
    while time.monotonic() < end:
        groups = fab.nodes["node0002"].interface()["mcg"]
        if all(g["state"] == "joined" for g in groups):
            break
        time.sleep(0.05)
    assert all(g["state"] == "joined" for g in groups), groups


def test_a_standby_sm_takes_over_when_the_masters_host_dies_and_traffic_goes_on():
    """Two SMs on two device hosts: kill -9 of the master's host, and within a few seconds the
    standby is master, every live port names it, the LIDs stay, and IPoIB carries traffic."""
    import subprocess
    import sys

    ibfab = [sys.executable, "-m", "fabric.cli"]
    with Fabric("fattree:2,2,2,1", name="smstandby", hosts=3) as fab:
        assert fab.info.hosts[1]["devices"] == ["leaf02", "node0003", "node0004"]
        st = fab.start_standby_sm("node0003")
        assert st["state"] == "standby" and st["sm_state"] == "standby"
        r = subprocess.run(ibfab + ["sm", "status", "--name", "smstandby"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0 and "SM on node0001 port 1 (ours, master" in r.stdout, r.stdout
        assert "SM on node0003 port 1 (ours, standby" in r.stdout
        lids = {n: fab.nodes[n].lid for n in ("node0003", "node0004")}
        fab.kill_host(0)  # the master's host: leaf01, node0001, node0002
        t0 = time.monotonic()
        new = None
        while time.monotonic() - t0 < 15:
            new = fab.sm_status()
            if new and new.get("node") == "node0003" and new.get("state") == "up":
                break
            time.sleep(0.1)
        took = time.monotonic() - t0
        assert new and new["node"] == "node0003" and new["sm_state"] == "master", new
        assert took < 8, took
        sm_lid = fab.nodes["node0003"].lid
        devs = fab.devices()
        assert devs["node0004"]["ports"][0]["sm_lid"] == sm_lid
        assert {n: fab.nodes[n].lid for n in ("node0003", "node0004")} == lids
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if fab.nodes["node0004"].ping("node0003", timeout=0.3)["received"] == 1:
                break
        else:
            pytest.fail("no IPoIB traffic after the takeover")
        # the dead host comes back: its SM finds the new master and stands by
        fab.restart_host(0)
        deadline = time.monotonic() + 10
        back = None
        while time.monotonic() < deadline:
            back = next((x for x in smctl.sm_statuses(fab.info) if x["node"] == "node0001"), None)
            if back and back.get("state") == "standby":
                break
            time.sleep(0.1)
        assert back and back["state"] == "standby", back
        assert fab.sm_status()["node"] == "node0003"
