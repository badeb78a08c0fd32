"""Topologies written in Python (``fabric.Topo``, Mininet's style): the same Topology as the net
file that declares the same fabric, the validator's errors with the Python line, and ``ibfab up
--custom FILE --topo NAME`` bringing one up that pings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fabric import Fabric, Topo
from fabric.topology import (
    LinkSpec,
    NodeSpec,
    Topology,
    TopologyError,
    load_topology,
    parse_topology,
)

IBFAB = [sys.executable, "-m", "fabric.cli"]
pytestmark = pytest.mark.timeout(60)

# written by hand, ibsim's format: GUIDs are ibsim's (switches 0x200000.., HCAs 0x100000.., each HCA
# taking 1 + ports), links 4x SDR, the SM on the first HCA port cabled
NET = """
Switch 8 "sw1"
[1] "h1"[1]
[2] "h2"[1]
[5] "sw2"[3]

Switch 8 "sw2"
[1] "h3"[1]

Hca 2 "h1"
[1] "sw1"[1]

Hca 1 "h2"
[1] "sw1"[2]

Hca 1 "h3" # "third host"
[1] "sw2"[1]
"""


class TwoSwitches(Topo):
    def build(self):
        sw1 = self.add_switch("sw1", ports=8)
        sw2 = self.add_switch("sw2", ports=8)
        self.add_hca("h1", ports=2)
        self.add_hca("h2")
        self.add_hca("h3", description="third host")
        self.add_link(sw1, "h1")  # free ports: sw1[1] and h1[1]
        self.add_link(sw1, "h2")
        self.add_link(sw1, sw2, 5, 3)
        self.add_link("h3", sw2)  # sw2's lowest free port is 1


def test_a_topo_is_the_topology_of_the_same_net_file():
    from_net = parse_topology(NET)
    from_python = TwoSwitches().topology()
    assert from_python == from_net
    assert from_python.nodes["h1"].port_guids == {1: 0x100001, 2: 0x100002}
    assert from_python.nodes["h2"].node_guid == 0x100003  # h1 took 1 + 2 GUIDs
    assert from_python.peer("sw2", 1) == ("h3", 1)
    assert (from_python.sm_node, from_python.sm_port) == ("h1", 1)
    # one link moved changes it; Fabric and load_topology take an instance or the class
    other = TwoSwitches()
    other._topology.links[0] = LinkSpec("sw1", 4, "h1", 1, "4x", "SDR")
    assert other.topology() != from_net
    assert load_topology(TwoSwitches) == from_net
    assert Fabric(TwoSwitches()).topology == from_net


def test_a_bad_topo_fails_with_the_validators_message_at_its_python_line():
    class Full(Topo):
        def build(self, hcas):
            s = self.add_switch("sw", ports=2)
            for i in range(hcas):
                self.add_link(s, self.add_hca(f"h{i}"))

    line = Full.build.__code__.co_firstlineno + 3  # the add_link line
    with pytest.raises(TopologyError) as got:
        Full(3).topology()
    # the same cable in a Topology made by hand, checked by the same validator
    nodes = {"sw": NodeSpec("sw", "switch", 2, 0x200000, 0x200000, {0: 0x200000}, "sw")}
    for i in range(3):
        g = 0x100000 + 2 * i
        nodes[f"h{i}"] = NodeSpec(f"h{i}", "hca", 1, g, g, {1: g + 1}, f"h{i}")
    links = [LinkSpec("sw", 1 + i, f"h{i}", 1, "4x", "SDR") for i in range(3)]
    with pytest.raises(TopologyError) as want:
        Topology(nodes=nodes, links=links, sm_node="h0", sm_port=1).validate()
    assert got.value.reason == want.value.reason
    assert (got.value.source, got.value.line) == (__file__, line)
    assert Full(2).topology().peer("sw", 2) == ("h1", 1)

    class Twice(Topo):
        def build(self):
            self.add_hca("h")
            self.add_switch("h")

    with pytest.raises(TopologyError, match=r"node 'h' is declared twice \(first at .*test_topo_python.py:\d+\)"):
        Twice()


CUSTOM = """
from fabric import Topo


class Star(Topo):
    def build(self, n=2, ports=8):
        sw = self.add_switch("hub", ports=ports)
        for i in range(1, n + 1):
            self.add_link(self.add_hca(f"host{i}"), sw)


topos = {"star": Star, "tiny": lambda: Star(2, ports=1)}
"""


def _up(*args, timeout=60):
    return subprocess.run(IBFAB + ["up", *args], capture_output=True, text=True, timeout=timeout)


def test_ibfab_up_custom_topo_comes_up_and_pings(tmp_path):
    path = tmp_path / "star.py"
    path.write_text(CUSTOM)
    name = "pytopo"
    r = _up("--custom", str(path), "--topo", "star,3", "--name", name, "-q")
    try:
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""  # -q
        st = subprocess.run(IBFAB + ["status", "--name", name, "--json"], capture_output=True, text=True,
                            timeout=30)
        devices = {d["name"]: d for d in json.loads(st.stdout)["devices"]}
        assert sorted(devices) == ["host1", "host2", "host3", "hub"]
        peers = sorted(p["peer"] for p in devices["hub"]["ports"] if p["cabled"])
        assert peers == ["host1/1", "host2/1", "host3/1"]
        ping = subprocess.run(IBFAB + ["ping", "host1", "host3", "-c", "2", "--name", name], capture_output=True,
                              text=True, timeout=30)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert "2 received" in ping.stdout, ping.stdout
    finally:
        subprocess.run(IBFAB + ["down", "--name", name], capture_output=True, timeout=60)


@pytest.mark.parametrize("args,msg", [
    (["--custom", "{dir}/nothere.py", "--topo", "star"], "--custom {dir}/nothere.py: no such file"),
    (["--custom", "{dir}/star.py", "--topo", "ring"], "no topology 'ring' (it has: star, tiny)"),
    (["--custom", "{dir}/star.py", "--topo", "tiny"], "port 2 is out of range for 'hub', which has ports 1..1"),
    (["--custom", "{dir}/star.py", "--topo", "star,2,colour=red"], "TypeError"),
    (["--custom", "{dir}/star.py"], "name one with --topo (it has: star, tiny)"),
    (["--topo", "star"], "--topo names a topology of a --custom file"),
    (["single:2", "--custom", "{dir}/star.py", "--topo", "star"], "give one of them"),
    ([], "give a topology"),
])
def test_bad_custom_topologies_are_one_line_usage_errors(tmp_path, args, msg):
    (tmp_path / "star.py").write_text(CUSTOM)
    args = [a.format(dir=tmp_path) for a in args]
    r = _up(*args, "--name", "pytopobad", timeout=30)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("ibfab up: ") and r.stderr.count("\n") == 1, r.stderr
    assert msg.format(dir=tmp_path) in r.stderr
    assert "Traceback" not in r.stderr
    from fabric import launcher

    assert not launcher.is_running("pytopobad")
