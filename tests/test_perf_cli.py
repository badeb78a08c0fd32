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
