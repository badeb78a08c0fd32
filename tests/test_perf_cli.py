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


# -- long and interrupted runs (issue 14) ----------------------------------------------------------


def _popen(*args, env=None):
    import os

    return subprocess.Popen(IBFAB + [*args, "--name", "perfcli"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, **(env or {})))


def _lines_until(proc, pattern, n, timeout=20.0):
    """Read proc's stdout until ``n`` lines matched ``pattern``: proof that they came while it ran."""
    import re
    import select
    import time

    got, seen = [], []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(got)} of {n} lines: {seen}"
        if select.select([proc.stdout], [], [], left)[0]:
            line = proc.stdout.readline()
            assert line, f"the command ended early: {seen} {proc.stderr.read()}"
            seen.append(line)
            if re.search(pattern, line):
                got.append(line)
    return got


def test_a_perf_longer_than_the_rpc_timeout_streams_interval_lines(fab):
    """No single RPC waits for the whole run: with the client's RPC timeout at 1 s, a 3 s perf
    prints a line a second as iperf3 does, then its sender and receiver lines."""
    p = _popen("perf", "node0001", "node0004", "--size", "256", "--seconds", "3", env={"IBFAB_RPC_TIMEOUT": "1"})
    try:
        lines = _lines_until(p, r"^\[  5\]\s+\d+\.\d\d-\d+\.\d\d\s+sec .* \d+$", 2)
        assert lines[0].split()[2].startswith("0.00-")
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 0, err
    assert " sender" in out and " receiver" in out, out
    assert "packets/s" in out


def test_ping_streams_its_replies_and_prints_the_statistics_after_an_interrupt(fab):
    import signal

    p = _popen("ping", "node0001", "node0004", "-c", "0", "-i", "0.2", env={"IBFAB_RPC_TIMEOUT": "1"})
    try:
        lines = _lines_until(p, r"^64 bytes from 198\.18\.0\.4: icmp_seq=\d+ ttl=64 time=[\d.]+ ms$", 3)
        assert [int(x.split("icmp_seq=")[1].split()[0]) for x in lines] == [1, 2, 3]
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 0, err
    assert "Traceback" not in err
    assert "--- node0004 ping statistics ---" in out
    import re

    m = re.search(r"^(\d+) packets transmitted, (\d+) received", out, re.M)
    assert m and int(m.group(1)) >= 3 and int(m.group(2)) >= 3, out


def test_an_interrupted_perf_frees_the_receivers_port(fab):
    import signal

    p = _popen("perf", "node0001", "node0004", "--size", "256", "--seconds", "30")
    try:
        _lines_until(p, r"^\[  5\]\s+0\.00-", 1)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
        p.wait()
    assert "Traceback" not in err and " receiver" in out, (out, err)
    # the next run on the same port works at once
    assert _perf("node0001", "node0004", "--size", "256", "--seconds", "0.3")["received"] > 0


def test_bad_perf_and_ping_arguments_are_refused_up_front(fab):
    for args, text in ((("perf", "node0001", "node0004", "--size", "70000"), "--size: must be 0 to 65507"),
                       (("perf", "node0001", "node0004", "--seconds", "-1"), "--seconds: must be above 0"),
                       (("perf", "node0001", "node0004", "--port", "0"), "--port: must be 1 to 65535"),
                       (("ping", "node0001", "node0004", "-s", "70000"), "-s/--size: must be 0 to 65507"),
                       (("ping", "node0001", "node0004", "-i", "-1"), "-i/--interval: must be at least 0")):
        r = _ibfab(*args)
        assert r.returncode == 2 and text in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_a_perf_whose_client_dies_has_its_port_freed_by_the_lease():
    """kill -9 of ``ibfab perf``: nothing closes the sink for it, so the node does, once nobody has
    asked about it for IBFAB_LEASE_S (here 3 s, set for the hosts of this fabric; the client asks
    every second)."""
    import os
    import time

    os.environ["IBFAB_LEASE_S"] = "3"
    try:
        with Fabric("single:2", name="perflease") as f:
            assert f.nodes["node0001"].ping("node0002")["received"] == 1
            p = subprocess.Popen(IBFAB + ["perf", "node0001", "node0002", "--seconds", "30", "--name", "perflease"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                _lines_until(p, r"^\[  5\]\s+0\.00-", 1)
            finally:
                p.kill()
                p.wait()
            # the port is still bound now ...
            busy = subprocess.run(IBFAB + ["perf", "node0001", "node0002", "--seconds", "0.2", "--name", "perflease"],
                                  capture_output=True, text=True, timeout=60)
            assert busy.returncode == 2 and "in use" in busy.stderr, busy.stderr
            time.sleep(4)  # ... and free once the lease ran out; the sender stopped too
            again = subprocess.run(IBFAB + ["perf", "node0001", "node0002", "--seconds", "0.3", "--name", "perflease",
                                            "--json"], capture_output=True, text=True, timeout=60)
            assert again.returncode == 0, again.stderr
            assert json.loads(again.stdout)["received"] > 0
    finally:
        del os.environ["IBFAB_LEASE_S"]


@pytest.mark.timeout(60)
def test_ud_latency_times_each_frame_against_its_own_echo(fab):
    """perf --latency --ud posts one frame at a time and counts echoes at its driver; the datagram
    that resolved the path is echoed too, and when that echo was taken for the first frame's answer
    every later round trip was timed against the previous frame's echo (half of them a few us,
    half the rest of the real time). It is counted apart now, and every answer is the echo of the
    frame just sent."""
    dst = fab.nodes["node0004"].ip
    sink = fab.client.call("node0004", "perf_sink", port=5219, ud=True, echo=True)
    try:
        r = fab.client.call("node0001", "perf_ping_ud", dst=dst, port=5219, size=56, count=60)
    finally:
        far = fab.client.call("node0004", "perf_sink_result", sink=sink)
    rtts = sorted(r["rtts"])
    assert r["lost"] == 0 and len(rtts) == 60
    assert r["strays"] <= 1  # the resolving datagram's echo, when it came after the hook was set
    assert far["packets"] == 60 + 1  # our 60 frames and the resolving datagram, each echoed once
    assert r["echoes"] == r["strays"] + 60  # every answer counted was the echo of one of ours
    median = rtts[len(rtts) // 2]
    assert sum(1 for x in rtts if x < median / 2) <= len(rtts) // 4, [round(x * 1e6) for x in r["rtts"]]
