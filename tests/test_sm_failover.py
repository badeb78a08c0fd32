"""The SM going away and coming back, as IPoIB sees it: a new SM's ClientReregister is a light
flush, so the interfaces rejoin at once and keep their carrier meanwhile (the kernel's ipoib does
the same: no "Network is down" while the subnet is up)."""

import threading
import time

import pytest

from fabric import Fabric, launcher

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
