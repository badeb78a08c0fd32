"""A fabric whose HCAs run different IPoIB providers: the seeds' own case ("each HW vendor can supply
the acceleration for the IPoIB or leave IPoIB to work as before"). Nodes on the standard provider
and nodes on the fast one ping each other, exchange UDP and multicast, and every port counts what
an all-standard fabric counts for the same traffic; ``ibfab status`` and each node say which
provider it runs; bad settings are one-line errors before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fabric import Fabric

TOPO = "single:4"
MIXED = {"node0001": "std", "node0002": "fast", "node0003": "std", "node0004": "fast"}  # node0001: the SM's
GROUP = "239.9.9.9"
GROUP_MGID = "ff12:401b:ffff:0000:0000:0000:0f09:0909"  # RFC 4391: the group's low 28 bits
IBFAB = [sys.executable, "-m", "fabric.cli"]

pytestmark = pytest.mark.timeout(180)


def _wait(cond, seconds=5.0):
    end = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _traffic(fab) -> dict:
    """Pings between every pair, a UDP datagram each way between two nodes, one multicast datagram
    to three members; what arrived, per receiver."""
    nodes = sorted(fab.nodes)
    for a in nodes:
        for b in nodes:
            if a != b:
                assert fab.nodes[a].ping(b, count=1, timeout=2.0)["received"] == 1, (a, b)
    got = {}
    socks = {n: fab.nodes[n].udp_socket(7000) for n in nodes}
    try:
        socks["node0001"].sendto(b"std to fast", ("node0002", 7000))
        socks["node0002"].sendto(b"fast to std", ("node0001", 7000))
        for n in ("node0001", "node0002"):
            got[n] = [d["data"] for d in socks[n].recv(timeout=3.0)]
        members = ["node0001", "node0002", "node0003"]
        for n in members:
            socks[n].join(GROUP)
        assert _wait(lambda: all(any(g["mgid"] == GROUP_MGID and g["state"] == "joined"
                                     for g in fab.nodes[n].interface("ib0")["mcg"]) for n in members))
        time.sleep(0.3)  # the SM programs the group's MFT right after the joins
        socks["node0004"].sendto(b"to the group", (GROUP, 7000))
        for n in members:
            got[f"mc-{n}"] = [d["data"] for d in socks[n].recv(timeout=3.0)]
    finally:
        for s in socks.values():
            s.close()
    return got


def _hca_counters(fab) -> dict:
    """PortXmitPkts and PortRcvPkts of every HCA but the SM's (its SMPs and SA answers, light
    sweeps included, come when they come)."""
    return {n: {k: fab.counters(n, 1)["counters"][k] for k in ("port_xmit_pkts", "port_rcv_pkts")}
            for n in sorted(fab.nodes) if n != fab.topology.sm_node}


@pytest.mark.skipif(os.environ.get("IPOIB_BACKEND") == "std", reason="IPOIB_BACKEND=std: no compiled code in this run")
def test_std_and_fast_nodes_talk_and_count_as_an_all_std_fabric():
    results = {}
    for label, cfg in (("mixed", {"backends": MIXED}), ("std", {"backend": "std"})):
        with Fabric(TOPO, name=f"prov{label}", **cfg) as fab:
            providers = {n: fab.nodes[n].status()["backend"] for n in fab.nodes}
            if label == "mixed":
                assert providers == MIXED
                r = subprocess.run(IBFAB + ["status", "--name", fab.name], capture_output=True, text=True,
                                   timeout=60)
                assert r.returncode == 0, r.stderr
                lines = [line.split() for line in r.stdout.splitlines()]
                header = next(line for line in lines if line[:2] == ["name", "type"])
                shown = {line[0]: line[header.index("provider")] for line in lines
                         if len(line) == len(header) and line[0] in MIXED}
                assert shown == MIXED, r.stdout
            else:
                assert set(providers.values()) == {"std"}
            before = _hca_counters(fab)
            got = _traffic(fab)
            time.sleep(0.3)
            after = _hca_counters(fab)
            results[label] = (got, {n: {k: after[n][k] - before[n][k] for k in after[n]} for n in after})
    got_mixed, counts_mixed = results["mixed"]
    got_std, counts_std = results["std"]
    assert got_mixed == got_std
    assert got_mixed["node0001"] == [b"fast to std"] and got_mixed["node0002"] == [b"std to fast"]
    assert all(got_mixed[f"mc-{n}"] == [b"to the group"] for n in ("node0001", "node0002", "node0003"))
    assert counts_mixed == counts_std


@pytest.mark.parametrize("argv,msg", [
    (["--backend", "slow"], "invalid choice"),
    (["--node-backend", "node0001=slow"], "backend of node0001"),
    (["--node-backend", "node9=std"], "no HCA node9"),
    (["--node-backend", "node0001"], "NODE=std"),
])
def test_bad_provider_settings_are_one_line_errors(argv, msg):
    r = subprocess.run(IBFAB + ["up", TOPO, "--name", "provbad", *argv], capture_output=True, text=True, timeout=60)
    try:
        # one line (after argparse's usage, for what argparse itself refuses)
        assert r.returncode != 0 and msg in r.stderr.strip().splitlines()[-1], r.stderr
    finally:
        subprocess.run(IBFAB + ["down", "--name", "provbad"], capture_output=True, timeout=60)
