"""IPoIB on a real fabric: device-host processes, ZeroMQ links, the SM, and the IPoIB node plugin.

Few and focused; the behaviour in detail is tested sans-IO in test_ipoib_loopnet.py. One fabric
(ibsim's two-switch, two-path net with four HCAs) serves the module; the test that pulls a cable
puts it back.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from fabric import Fabric
from paths import shared_topology

GROUP = "239.1.2.3"
GROUP_MGID = "ff12:401b:ffff:0000:0000:0000:0f01:0203"
HCAS = ["Hca1", "Hca2", "Hca3", "Hca4"]


def _wait(cond, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


@pytest.fixture(scope="module")
def fab():
    with Fabric(shared_topology("ibsim/net.2sw2path4hca"), name="ipoib-proc") as f:
        assert _wait(lambda: all(f.nodes[n].interface("ib0")["carrier"] for n in HCAS)), "no carrier"
        yield f


def _group_state(node, mgid=GROUP_MGID):
    for g in node.interface("ib0")["mcg"]:
        if g["mgid"] == mgid:
            return g
    return None


def test_ping_between_hcas_on_different_switches(fab):
    lids = {n: fab.nodes[n].lid for n in HCAS}
    hw = {n: fab.nodes[n].interface("ib0")["hwaddr"] for n in HCAS}
    for i, n in enumerate(HCAS):
        assert fab.nodes[n].ip == f"198.18.0.{i + 1}"
    pairs = [("Hca1", "Hca2"), ("Hca2", "Hca3"), ("Hca3", "Hca4"), ("Hca4", "Hca1"), ("Hca2", "Hca4")]
    for a, b in pairs:
        r = fab.nodes[a].ping(b, count=2, interval=0.05)
        assert (r["transmitted"], r["received"], r["errors"]) == (2, 2, 0), (a, b, r)
        assert [seq for seq, _, _ in r["replies"]] == [1, 2] and all(ttl == 64 for _, _, ttl in r["replies"])
        st = fab.nodes[a].interface("ib0")
        neigh = {e["ip"]: e for e in st["neigh"]}
        assert neigh[fab.nodes[b].ip] == {"ip": fab.nodes[b].ip, "lladdr": hw[b], "state": "REACHABLE"}
        assert lids[b] in {p["dlid"] for p in st["paths"] if p["valid"]}


def _cli(*args, timeout=20):
    return subprocess.run([sys.executable, "-m", "fabric.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_cli_ping_prints_like_ping_and_sets_the_exit_code(fab):
    r = _cli("ping", "Hca1", "Hca4", "-c", "2", "-i", "0.05", "--name", fab.name)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("PING Hca4 (198.18.0.4) 56(84) bytes of data.\n"), out
    replies = re.findall(r"^64 bytes from 198\.18\.0\.4: icmp_seq=(\d+) ttl=64 time=[\d.]+ ms$", out, re.M)
    assert replies == ["1", "2"], out
    assert "--- Hca4 ping statistics ---" in out
    assert re.search(r"^2 packets transmitted, 2 received, 0% packet loss, time \d+ms$", out, re.M), out
    assert re.search(r"^rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms$", out, re.M), out
    # an address of the subnet that no host holds: no reply, exit code 1
    r = _cli("ping", "Hca2", "198.18.0.250", "-c", "1", "-W", "0.5", "--name", fab.name)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert re.search(r"^1 packets transmitted, 0 received, 100% packet loss", r.stdout, re.M), r.stdout
    assert "bytes from" not in r.stdout


def test_udp_multicast_reaches_exactly_its_members(fab):
    members = ["Hca1", "Hca2", "Hca3"]
    socks = {n: fab.nodes[n].udp_socket(7000) for n in HCAS}
    try:
        for n in members:
            socks[n].join(GROUP)
        assert _wait(lambda: all((_group_state(fab.nodes[n]) or {}).get("state") == "joined" for n in members))
        assert _group_state(fab.nodes["Hca4"]) is None
        # the non-member sends: a send-only join, then its datagram reaches the three members
        socks["Hca4"].sendto(b"from a sender", (GROUP, 7000))
        for n in members:
            got = socks[n].recv(timeout=3.0)
            assert [(d["data"], d["ip"]) for d in got] == [(b"from a sender", "198.18.0.4")], n
        g4 = _group_state(fab.nodes["Hca4"])
        assert g4["state"] == "joined" and g4["join_state"] in (4, 8)
        # a member sends: the other members get it, the bound but unjoined socket does not
        socks["Hca1"].sendto(b"from a member", (GROUP, 7000))
        for n in ("Hca2", "Hca3"):
            assert [d["data"] for d in socks[n].recv(timeout=3.0)] == [b"from a member"], n
        assert socks["Hca4"].recv(timeout=0.3) == []
        assert socks["Hca1"].recv(timeout=0.1) == []  # no multicast loop
        # leaving stops delivery
        socks["Hca2"].leave(GROUP)
        assert _wait(lambda: _group_state(fab.nodes["Hca2"]) is None)
        time.sleep(0.2)  # the SA's MFT update reaches the switches
        socks["Hca4"].sendto(b"after the leave", (GROUP, 7000))
        assert [d["data"] for d in socks["Hca3"].recv(timeout=3.0)] == [b"after the leave"]
        assert socks["Hca2"].recv(timeout=0.3) == []
    finally:
        for s in socks.values():
            s.close()


def test_capture_of_ipoib_on_the_real_fabric_decodes_in_tshark(fab, tshark, tmp_path):
    path = tmp_path / "real.erf"
    rx = fab.nodes["Hca3"].udp_socket(7100)
    try:
        with fab.capture(path):
            assert fab.nodes["Hca1"].ping("198.18.0.2", count=1)["received"] == 1
            fab.nodes["Hca2"].udp_socket().sendto(b"over the wire", ("Hca3", 7100))
            assert [d["data"] for d in rx.recv(timeout=3.0)] == [b"over the wire"]
    finally:
        rx.close()
    out = subprocess.run([tshark, "-r", str(path), "-T", "json", "-V"], capture_output=True, text=True,
                         timeout=60, check=True)
    frames = json.loads(out.stdout)
    assert frames
    text = json.dumps(frames)
    assert "_ws.malformed" not in text and "_ws.expert" not in text
    protos = [f["_source"]["layers"]["frame"]["frame.protocols"] for f in frames]
    assert any(":infiniband:ethertype:ip:icmp" in p for p in protos)
    assert any(":infiniband:ethertype:ip:udp" in p for p in protos)


def test_pulling_a_cable_drops_the_carrier_and_plugging_it_back_restores_it(fab):
    n3 = fab.nodes["Hca3"]
    assert fab.nodes["Hca1"].ping("Hca3", count=1)["received"] == 1
    fab.link_down("Hca3", 1)
    try:
        assert _wait(lambda: not n3.interface("ib0")["carrier"], timeout=5.0)
        r = n3.ping("198.18.0.1", count=1, timeout=0.3)
        assert r["received"] == 0 and r["error_texts"] == ["Network is down"]
        assert n3.status()["ip"]["drops"].get("carrier_down", 0) >= 1
    finally:
        fab.link_up("Hca3", 1)
    assert _wait(lambda: n3.interface("ib0")["carrier"], timeout=10.0)
    assert fab.nodes["Hca1"].ping("Hca3", count=1)["received"] == 1
    assert n3.ping("Hca2", count=1)["received"] == 1
