"""`ibfab perf`: UDP throughput and ICMP round-trip latency between two nodes of a running fabric."""

import json
import subprocess
import sys

import pytest

from fabric import Fabric

IBFAB = [sys.executable, "-m", "fabric.cli"]


@pytest.fixture(scope="module")
def fab():
    with Fabric("fattree:2,2,2,2", name="perfcli") as f:
        assert f.nodes["node0001"].ping("node0004")["received"] == 1  # IPoIB is up
        yield f


def _perf(*args):
    r = subprocess.run(IBFAB + ["perf", *args, "--name", "perfcli", "--json"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_udp_throughput_is_measured_and_counted(fab):
    before = fab.nodes["node0004"].status()["interfaces"][0]["stats"]["rx_packets"]
    out = _perf("node0001", "node0004", "--size", "512", "--seconds", "0.5")
    after = fab.nodes["node0004"].status()["interfaces"][0]["stats"]["rx_packets"]
    assert out["mode"] == "udp" and out["sent"] > 100
    assert 0 < out["received"] <= out["sent"]
    assert after - before >= out["received"]  # every datagram counted really crossed ib0
    assert out["pps"] > 0 and out["gbps"] == pytest.approx(out["pps"] * 512 * 8 / 1e9, rel=0.05)


def test_latency_reports_median_and_p99(fab):
    out = _perf("node0001", "node0004", "--latency", "--count", "50")
    assert out["samples"] == 50 and out["lost"] == 0
    assert 0 < out["median_us"] <= out["p99_us"]


def test_perf_to_a_missing_node_is_a_clear_error(fab):
    r = subprocess.run(IBFAB + ["perf", "node0001", "nosuchnode", "--name", "perfcli"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "ibfab perf:" in r.stderr


def _ibfab(*args):
    return subprocess.run(IBFAB + [*args, "--name", "perfcli"], capture_output=True, text=True, timeout=60)


def test_coalesce_is_read_and_changed_at_run_time(fab):
    import ipoib

    r = _ibfab("coalesce", "node0004", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rx_usecs"] == 0
    r = _ibfab("coalesce", "node0004", "--rx-usecs", "50", "--rx-frames", "16", "--json")
    if ipoib.backend_name == "std":  # the device hosts run the same backend as this process
        assert r.returncode == 2 and "not supported" in r.stderr
        return
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"rx_usecs": 50, "rx_frames": 16, "adaptive": False, "rx_usecs_effective": 50}
    # visible in the interface's status, and traffic still flows through the moderated queues
    assert fab.nodes["node0004"].interface()["coalesce"]["rx_usecs"] == 50
    assert fab.nodes["node0001"].ping("node0004", count=3, interval=0.05)["received"] == 3
    bad = _ibfab("coalesce", "node0004", "--rx-usecs", "-5")
    assert bad.returncode == 2 and "rx-usecs must be an integer" in bad.stderr
    assert fab.nodes["node0004"].interface()["coalesce"]["rx_usecs"] == 50  # a bad value changes nothing
    assert _ibfab("coalesce", "node0004", "--rx-usecs", "0", "--rx-frames", "0").returncode == 0


def test_queues_show_per_queue_counters(fab):
    import ipoib

    out = _perf("node0001", "node0004", "--size", "256", "--seconds", "0.3")
    r = _ibfab("queues", "node0004", "--json")
    assert r.returncode == 0, r.stderr
    q = json.loads(r.stdout)
    nrx = 4 if ipoib.backend_name == "fast" else 1
    assert sorted(k for k in q if k.endswith("_packets") and k[:2] == "rx" and k[2].isdigit()) == \
        [f"rx{i}_packets" for i in range(nrx)]
    rx_total = sum(q[f"rx{i}_packets"] for i in range(nrx))
    assert rx_total >= out["received"] > 0  # every perf datagram came through an RX queue
    text = _ibfab("queues", "node0004")
    assert text.returncode == 0 and "rx0_packets:" in text.stdout
    assert _ibfab("queues", "node0004", "--ifname", "ib9").returncode == 2


def test_up_with_queue_counts():
    import ipoib

    r = subprocess.run(IBFAB + ["up", "single:2", "--name", "queuescli", "--tx-queues", "2", "--rx-queues", "3"],
                       capture_output=True, text=True, timeout=120)
    try:
        assert r.returncode == 0, r.stderr
        q = subprocess.run(IBFAB + ["queues", "node0001", "--name", "queuescli", "--json"], capture_output=True,
                           text=True, timeout=60)
        assert q.returncode == 0, q.stderr
        keys = json.loads(q.stdout)
        if ipoib.backend_name == "fast":
            assert "tx1_packets" in keys and "tx2_packets" not in keys and "rx2_packets" in keys
        else:  # the standard provider has one queue each way, whatever is asked
            assert "tx0_packets" in keys and "tx1_packets" not in keys
    finally:
        subprocess.run(IBFAB + ["down", "--name", "queuescli"], capture_output=True, timeout=60)
    bad = subprocess.run(IBFAB + ["up", "single:2", "--name", "queuesbad", "--tx-queues", "65"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--tx-queues: must be 1 to 64, not 65" in bad.stderr


def test_features_are_read_and_switched_at_run_time(fab):
    import ipoib

    r = _ibfab("features", "node0004", "--json")
    assert r.returncode == 0, r.stderr
    f = json.loads(r.stdout)
    assert f["rx-flow-hash-udp4"] == "sd"
    r = _ibfab("features", "node0004", "--gro", "off", "--rx-flow-hash-udp4", "sdfn", "--json")
    if ipoib.backend_name == "std":
        assert r.returncode == 2 and "not supported" in r.stderr
        return
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rx-gro"] is False
    assert fab.nodes["node0004"].interface()["features"]["rx-flow-hash-udp4"] == "sdfn"
    out = _perf("node0001", "node0004", "--size", "256", "--seconds", "0.3")  # still flows without GRO
    assert out["received"] > 0
    assert _ibfab("features", "node0004", "--gro", "on", "--rx-flow-hash-udp4", "sd").returncode == 0
