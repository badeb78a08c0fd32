"""The real infiniband-diags (Debian ``infiniband-diags``), preloaded with ibsim's ``libumad2sim.so``,
against our fabric and our SM, through ``ibfab tool``.

Every answer a tool prints is compared with an independent truth: the topology the fabric was
made from (or the recorded ibnetdiscover dump of the same net file on ibsim), what our devices
report over the control RPC (``fab.devices()``, ``fab.counters()``), and our own SMP readers
(``ibfab dump-fts``). The outputs are parsed here, not with the project's parsers.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import signal
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

import refsm
from paths import require_tools, shared_topology

from fabric import Fabric
from fabric.topology import load_topology

pytestmark = pytest.mark.timeout(120)

IBFAB = [sys.executable, "-m", "fabric.cli"]
TOOLS = ("ibnetdiscover", "smpquery", "perfquery", "ibroute", "dump_fts", "ibstat", "ibtracert", "saquery")


@pytest.fixture(scope="module", autouse=True)
def diags():
    require_tools(*TOOLS)


@pytest.fixture(scope="module")
def fab():
    with Fabric("fattree:2,2,4,2") as f:
        end = time.monotonic() + 20
        while not all(f.nodes[n].interface("ib0")["carrier"] for n in f.nodes):
            assert time.monotonic() < end, "IPoIB: no carrier"
            time.sleep(0.05)
        yield f


def tool(fab, node, *argv, port=None, timeout=60, rc=0):
    """Run a real tool attached to ``node``'s port through ``ibfab tool``; its stdout."""
    cmd = IBFAB + ["tool", "--name", fab.name, node] + (["--port", str(port)] if port else []) + ["--", *argv]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if rc is not None:
        assert r.returncode == rc, f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def fields(text: str) -> dict:
    """``Name:.......value`` lines (smpquery, perfquery) and ``\\t\\tname.....value`` (saquery)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\w+):?\.{2,}(.*)$", line) or re.match(r"(\w+):\.*(.+)$", line)
        if m:
            out.setdefault(m.group(1), m.group(2).strip())
    return out


def num(v: str) -> int:
    return int(v, 0)


def lid_of(devs, name: str) -> int:
    d = devs[name]
    if d["type"] == "switch":
        return d["lid"]
    return next(p["lid"] for p in d["ports"] if p["port"] == 1)


def port_of(devs, name: str, port: int) -> dict:
    return next(p for p in devs[name]["ports"] if p["port"] == port)


# --- ibnetdiscover: the topology, as the real tool reads it ---------------------------------------


def parse_ibnetdiscover(text: str):
    """Our own reading of ibnetdiscover's output: ``(nodes, port_guids, links, initiated, rates)``.

    nodes: {node GUID: (kind "switch"|"hca", num ports, description)}; port_guids: {(node GUID,
    port): port GUID} for CA ports; links: {frozenset({(guid, port), (guid, port)})}, each cable
    once (every cable is printed from both ends, and both ends must agree); initiated: (node GUID,
    port GUID) of the "Initiated from" comment; rates: {link: "4xSDR"} from the comments.
    """
    ids = {}  # the quoted node id -> node GUID
    nodes, port_guids, raw, rate_of = {}, {}, [], []
    guid = cur = None
    initiated = None
    for line in text.splitlines():
        m = re.match(r"#\s*Initiated from node ([0-9a-fA-F]+) port ([0-9a-fA-F]+)", line)
        if m:
            initiated = (int(m.group(1), 16), int(m.group(2), 16))
            continue
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"(switchguid|caguid|rtguid)=0x([0-9a-fA-F]+)", line)
        if m:
            guid = int(m.group(2), 16)
            continue
        m = re.match(r'(Switch|Ca|Rt)\s+(\d+)\s+"([^"]+)"[^#]*(?:#\s*"([^"]*)")?', line)
        if m:
            assert guid is not None, line
            kind = {"Switch": "switch", "Ca": "hca", "Rt": "router"}[m.group(1)]
            nodes[guid] = (kind, int(m.group(2)), m.group(4))
            ids[m.group(3)] = guid
            cur, guid = m.group(3), None
            continue
        m = re.match(r'\[(\d+)\](?:\(([0-9a-fA-F]+)\))?\s+"([^"]+)"\[(\d+)\]', line)
        if m:
            assert cur is not None, line
            port = int(m.group(1))
            if m.group(2):
                port_guids[(ids[cur], port)] = int(m.group(2), 16)
            raw.append((cur, port, m.group(3), int(m.group(4))))
            r = re.search(r"\s(\d+x[A-Z0-9]+)\s*$", line)
            rate_of.append(r.group(1) if r else None)
            continue
        if re.match(r"(vendid|devid|sysimgguid)=", line):
            continue
        raise AssertionError(f"unexpected ibnetdiscover line: {line!r}")
    ends = [((ids[a], pa), (ids[b], pb)) for a, pa, b, pb in raw]
    directed = set(ends)
    for x, y in ends:
        assert (y, x) in directed, f"cable {x} -> {y} is printed from one end only"
    rates = {}
    for e, r in zip(ends, rate_of):
        assert rates.setdefault(frozenset(e), r) == r, f"the ends of {e} print different rates"
    return nodes, port_guids, {frozenset(e) for e in ends}, initiated, rates


def topology_view(topo):
    """The same view of a fabric.topology.Topology."""
    g = {n.name: n.node_guid for n in topo.nodes.values()}
    nodes = {n.node_guid: (n.kind, n.num_ports, n.description) for n in topo.nodes.values()}
    port_guids = {(n.node_guid, p): pg for n in topo.hcas() for p, pg in n.port_guids.items()
                  if topo.peer(n.name, p) is not None}
    links = {frozenset({(g[lk.a], lk.a_port), (g[lk.b], lk.b_port)}) for lk in topo.links}
    rates = {frozenset({(g[lk.a], lk.a_port), (g[lk.b], lk.b_port)}): f"{lk.width}{lk.speed}" for lk in topo.links}
    return nodes, port_guids, links, rates


def _attach_node(topo) -> str:
    """An HCA whose port 1 is cabled (tools attach to port 1)."""
    return next(n.name for n in topo.hcas() if topo.peer(n.name, 1) is not None)


def _check_discovered(out: str, topo, attached: str):
    nodes, port_guids, links, initiated, rates = parse_ibnetdiscover(out)
    t_nodes, t_port_guids, t_links, t_rates = topology_view(topo)
    assert nodes == t_nodes  # node GUIDs, types, port counts and NodeDescriptions
    assert port_guids == t_port_guids
    assert links == t_links  # the same cables between the same ports
    assert rates == t_rates  # each trained to the width and speed the topology gives it
    n = topo.nodes[attached]
    assert initiated == (n.node_guid, n.port_guids[1])
    return nodes, port_guids, links


def test_ibnetdiscover_of_generated_fattree(fab):
    out = tool(fab, "node0003", "ibnetdiscover")
    nodes, _, links = _check_discovered(out, fab.topology, "node0003")
    assert len(nodes) == 12 and len(links) == 2 * 4 + 2 * 2 * 2  # HCA cables + 2 per leaf-spine pair
    # LIDs in the comments are the ones our SM gave
    devs = fab.devices()
    for name in ("node0001", "node0008"):
        assert f'# "{name}" lid {lid_of(devs, name)} ' in out


# (net file the fabric is made from, ibnetdiscover's dump of that net file on the real ibsim)
SHARED = [
    ("ibsim/net.2sw2path4hca", "ibnetdiscover/ibsim-2sw2path4hca.ibnetdiscover"),
    ("fattree-6x3x12x2.net", "ibnetdiscover/fattree-6x3x12x2.ibnetdiscover"),
    ("ibsim/net.2sw2path4hca2port", None),
    ("ibsim/net", None),
    ("ibnetdiscover/ibsim-2sw2path4hca.ibnetdiscover", None),
]


@pytest.mark.parametrize("rel,recorded", SHARED, ids=[r for r, _ in SHARED])
def test_ibnetdiscover_of_shared_topology(rel, recorded):
    topo = load_topology(shared_topology(rel))
    with Fabric(topo, node_software="none") as f:
        node = _attach_node(f.topology)
        out = tool(f, node, "ibnetdiscover")
    _check_discovered(out, topo, node)
    if recorded:
        # the independent truth: what the same tool printed for the same net file on ibsim
        with open(shared_topology(recorded)) as fh:
            r_nodes, r_port_guids, r_links, r_init, r_rates = parse_ibnetdiscover(fh.read())
        nodes, port_guids, links, init, rates = parse_ibnetdiscover(out)
        assert (nodes, port_guids, links, rates) == (r_nodes, r_port_guids, r_links, r_rates)


# --- smpquery --------------------------------------------------------------------------------------


def test_smpquery_nodeinfo_by_lid(fab):
    devs = fab.devices()
    topo = fab.topology
    for name in ("node0005", "leaf02", "spine01"):
        spec = topo.nodes[name]
        ni = fields(tool(fab, "node0001", "smpquery", "nodeinfo", str(lid_of(devs, name))))
        assert ni["NodeType"] == ("Switch" if spec.kind == "switch" else "Channel Adapter")
        assert num(ni["NumPorts"]) == spec.num_ports
        assert num(ni["Guid"]) == devs[name]["guid"] == spec.node_guid
        assert num(ni["SystemGuid"]) == spec.sys_guid
        if spec.kind == "switch":
            assert num(ni["PortGuid"]) == spec.node_guid
            assert num(ni["NumPorts"]) == len(devs[name]["ports"]) - 1  # port 0 besides
        else:
            assert num(ni["PortGuid"]) == port_of(devs, name, 1)["guid"] == spec.port_guids[1]
            assert num(ni["NumPorts"]) == len(devs[name]["ports"])
            assert num(ni["LocalPort"]) == 1


def test_smpquery_nodeinfo_by_directed_route(fab):
    topo = fab.topology
    first, in_port = topo.peer("node0001", 1)
    ni = fields(tool(fab, "node0001", "smpquery", "-D", "nodeinfo", "0,1"))
    assert ni["NodeType"] == "Switch"
    assert num(ni["Guid"]) == topo.nodes[first].node_guid == fab.devices()[first]["guid"]
    assert num(ni["LocalPort"]) == in_port  # the port the SMP came in by
    # one hop further: out of the leaf's first spine port
    up = next(p for p, (peer, _) in topo.connected_ports(first).items() if peer.startswith("spine"))
    second, in2 = topo.peer(first, up)
    ni = fields(tool(fab, "node0001", "smpquery", "-D", "nodeinfo", f"0,1,{up}"))
    assert num(ni["Guid"]) == topo.nodes[second].node_guid and num(ni["LocalPort"]) == in2


def test_smpquery_portinfo(fab):
    devs = fab.devices()
    sm_lid = lid_of(devs, fab.topology.sm_node)
    # an HCA port
    p = port_of(devs, "node0005", 1)
    pi = fields(tool(fab, "node0001", "smpquery", "portinfo", str(p["lid"]), "1"))
    assert num(pi["Lid"]) == p["lid"] and num(pi["SMLid"]) == p["sm_lid"] == sm_lid
    assert num(pi["LMC"]) == p["lmc"]
    assert pi["LinkState"] == p["state"] == "Active"
    assert pi["PhysLinkState"] == p["phys"] == "LinkUp"
    assert num(pi["NeighborMTU"]) == p["mtu"]
    assert num(pi["GidPrefix"]) == 0xFE80000000000000
    link = fab.topology.link_at("node0005", 1)  # trained to the cable's width and speed
    assert pi["LinkWidthActive"] == link.width.upper()
    assert pi["LinkSpeedActive"] == {"SDR": "2.5 Gbps", "DDR": "5.0 Gbps", "QDR": "10.0 Gbps"}[link.speed]
    # a switch's cabled port and an uncabled one
    lid = lid_of(devs, "leaf02")
    for port in (5, 9):
        p = port_of(devs, "leaf02", port)
        pi = fields(tool(fab, "node0001", "smpquery", "portinfo", str(lid), str(port)))
        assert pi["LinkState"] == p["state"], port
        assert pi["PhysLinkState"] == p["phys"], port
        assert (p["state"], p["cabled"]) == (("Active", True) if port == 5 else ("Down", False))
    # port 0 of a switch carries its LID and the SM's
    p0 = port_of(devs, "leaf02", 0)
    pi = fields(tool(fab, "node0001", "smpquery", "portinfo", str(lid), "0"))
    assert num(pi["Lid"]) == p0["lid"] == lid and num(pi["SMLid"]) == p0["sm_lid"] == sm_lid


def test_smpquery_switchinfo(fab):
    devs = fab.devices()
    top = max(lid_of(devs, n) for n in devs)
    for name in ("leaf01", "spine02"):
        si = fields(tool(fab, "node0001", "smpquery", "switchinfo", str(devs[name]["lid"])))
        assert num(si["LinearFdbTop"]) == devs[name]["lft_top"] == top
        assert num(si["LinearFdbCap"]) >= top


# --- perfquery -------------------------------------------------------------------------------------


def _pq(fab, lid, port):
    f = fields(tool(fab, "node0001", "perfquery", str(lid), str(port)))
    return {k: num(f[k]) for k in ("PortXmitPkts", "PortRcvPkts", "PortXmitData", "PortRcvData")}


def _ours(fab, dev, port):
    c = fab.counters(dev, port)["counters"]
    return {"PortXmitPkts": c["port_xmit_pkts"], "PortRcvPkts": c["port_rcv_pkts"],
            "PortXmitData": c["port_xmit_data"], "PortRcvData": c["port_rcv_data"]}


def test_perfquery_counters_equal_ours(fab):
    devs = fab.devices()
    leaf_lid = devs["leaf02"]["lid"]
    hca_lid = lid_of(devs, "node0005")
    assert fab.topology.peer("leaf02", 1) == ("node0005", 1)
    before = _pq(fab, leaf_lid, 1)
    assert fab.nodes["node0001"].ping("node0005", count=5)["received"] == 5
    # leaf02 port 1 (to node0005): the perfquery MAD from node0001 enters leaf02 by a spine port and
    # is answered by its port 0, so it never crosses port 1: the counters read are exactly ours.
    # Read ours before and after, and retry if anything else moved them meanwhile.
    for _ in range(5):
        a = _ours(fab, "leaf02", 1)
        pq = _pq(fab, leaf_lid, 1)
        b = _ours(fab, "leaf02", 1)
        if a == b:
            break
    assert a == b, "leaf02 port 1 kept counting"
    assert pq == b
    assert pq["PortXmitPkts"] - before["PortXmitPkts"] >= 5 and pq["PortRcvPkts"] - before["PortRcvPkts"] >= 5
    # node0005's own port: perfquery sends it two PMA requests (ClassPortInfo for the CapMask, then
    # PortCounters). Both are counted received before the PMA reads the counters for the second;
    # of the two responses, only the first is counted sent by then.
    for _ in range(5):
        a = _ours(fab, "node0005", 1)
        pq = _pq(fab, hca_lid, 1)
        b = _ours(fab, "node0005", 1)
        if (b["PortRcvPkts"] - a["PortRcvPkts"], b["PortXmitPkts"] - a["PortXmitPkts"]) == (2, 2):
            break
    assert (b["PortRcvPkts"] - a["PortRcvPkts"], b["PortXmitPkts"] - a["PortXmitPkts"]) == (2, 2)
    assert (pq["PortRcvPkts"], pq["PortXmitPkts"]) == (b["PortRcvPkts"], b["PortXmitPkts"] - 1)
    assert pq["PortRcvData"] == b["PortRcvData"]
    assert pq["PortXmitData"] - a["PortXmitData"] == b["PortXmitData"] - pq["PortXmitData"] > 0  # one MAD each
    assert pq["PortRcvPkts"] >= 5 and pq["PortXmitPkts"] >= 5


# --- LFTs: ibroute, dump_fts -----------------------------------------------------------------------


def _trace_all(topo, devs, lfts):
    """Every HCA port reaches every other HCA's LID through ``lfts``, over the topology's cables."""
    guid = {n.name: n.node_guid for n in topo.nodes.values()}
    for src in topo.hcas():
        for dst in topo.hcas():
            if src is dst:
                continue
            dlid = lid_of(devs, dst.name)
            at, hops = topo.peer(src.name, 1), 0
            while topo.nodes[at[0]].kind == "switch":
                out = lfts[guid[at[0]]][dlid]
                at, hops = topo.peer(at[0], out), hops + 1
                assert hops < 8, f"{src.name} -> {dst.name}: loop"
            assert at == (dst.name, 1), f"{src.name} -> {dst.name} ends at {at}"


def test_ibroute_and_dump_fts_equal_ours(fab):
    r = subprocess.run(IBFAB + ["dump-fts", "--name", fab.name], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    our_lfts, our_lids, _, _ = refsm.parse_dump_fts(r.stdout)
    real_lfts, real_lids, real_names, _ = refsm.parse_dump_fts(tool(fab, "node0002", "dump_fts"))
    assert real_lfts == our_lfts and real_lids == our_lids
    devs = fab.devices()
    assert len(real_lfts) == len(fab.topology.switches())
    for sw in fab.topology.switches():
        one, _, _, _ = refsm.parse_dump_fts(tool(fab, "node0002", "ibroute", str(devs[sw.name]["lid"])))
        assert one == {sw.node_guid: our_lfts[sw.node_guid]}, sw.name
        assert real_names[sw.node_guid] == sw.description
    # LIDs named in the tables are the ones our devices hold
    assert real_lids == {(d["guid"] if d["type"] == "switch" else port_of(devs, n, 1)["guid"]): lid_of(devs, n)
                         for n, d in devs.items()}
    _trace_all(fab.topology, devs, real_lfts)


# --- ibstat ----------------------------------------------------------------------------------------


def test_ibstat(fab):
    devs = fab.devices()
    out = tool(fab, "node0006", "ibstat")
    f = {}
    for line in out.splitlines():
        m = re.match(r"\s*([A-Za-z ]+):\s*(.*)$", line)
        if m:
            f.setdefault(m.group(1).strip(), m.group(2).strip())
    p = port_of(devs, "node0006", 1)
    assert f["State"] == p["state"] == "Active"
    assert f["Physical state"] == p["phys"]
    assert num(f["Base lid"]) == p["lid"] > 0
    assert num(f["SM lid"]) == p["sm_lid"] == lid_of(devs, fab.topology.sm_node)
    assert num(f["Port GUID"]) == p["guid"] == fab.topology.nodes["node0006"].port_guids[1]
    assert num(f["Node GUID"]) == devs["node0006"]["guid"]
    assert num(f["LMC"]) == p["lmc"]
    assert num(f["Number of ports"]) == len(devs["node0006"]["ports"])


# --- ibtracert -------------------------------------------------------------------------------------

_FROM = re.compile(r"From (ca|switch) \{(0x[0-9a-f]+)\} portnum (\d+) lid (\d+)-(\d+) \"(.*)\"")
_HOP = re.compile(r"\[(\d+)\] -> (ca port|switch port|switch) \{(0x[0-9a-f]+)\}\[(\d+)\] lid (\d+)-(\d+) \"(.*)\"")
_TO = re.compile(r"To (ca|switch) \{(0x[0-9a-f]+)\} portnum (\d+) lid (\d+)-(\d+) \"(.*)\"")


@pytest.mark.parametrize("src,dst", [("node0001", "node0005"), ("node0002", "node0008"),
                                     ("node0007", "node0003")])
def test_ibtracert_follows_our_lfts(fab, src, dst):
    topo = fab.topology
    devs = fab.devices()
    assert topo.peer(src, 1)[0] != topo.peer(dst, 1)[0]  # different leaves
    r = subprocess.run(IBFAB + ["dump-fts", "--name", fab.name], capture_output=True, text=True, timeout=60)
    lfts, _, _, _ = refsm.parse_dump_fts(r.stdout)
    by_guid = {}
    for n in topo.nodes.values():
        by_guid[n.node_guid] = n.name
        for pg in n.port_guids.values():
            by_guid[pg] = n.name
    slid, dlid = lid_of(devs, src), lid_of(devs, dst)
    out = tool(fab, "node0001", "ibtracert", str(slid), str(dlid))  # attached elsewhere than src
    lines = [x for x in out.splitlines() if x.strip()]
    m = _FROM.match(lines[0])
    assert m and by_guid[int(m.group(2), 16)] == src and int(m.group(4)) == slid, lines[0]
    at, at_port = src, int(m.group(3))
    hops = [_HOP.match(x) for x in lines[1:-1]]
    assert all(hops), out
    switches = 0
    for i, h in enumerate(hops):
        out_port = int(h.group(1))
        nxt, in_port = by_guid[int(h.group(3), 16)], int(h.group(4))
        if topo.nodes[at].kind == "switch":
            assert lfts[topo.nodes[at].node_guid][dlid] == out_port, f"{at}: printed port {out_port}"
            switches += 1
        else:
            assert i == 0 and out_port == at_port
        assert topo.peer(at, out_port) == (nxt, in_port)  # the cable printed is the real one
        assert int(h.group(5)) == lid_of(devs, nxt)
        at = nxt
    assert at == dst and switches == 3  # leaf, spine, leaf
    m = _TO.match(lines[-1])
    assert m and by_guid[int(m.group(2), 16)] == dst and int(m.group(4)) == dlid, lines[-1]


# --- saquery ---------------------------------------------------------------------------------------


def test_saquery_node_record(fab):
    devs = fab.devices()
    for name in ("node0004", "node0007"):
        lid = lid_of(devs, name)
        out = tool(fab, "node0002", "saquery", "NR", str(lid))
        assert out.count("NodeRecord dump:") == 1, out
        f = fields(out)
        assert num(f["lid"]) == lid
        assert f["NodeDescription"] == devs[name]["description"] == fab.topology.nodes[name].description
        assert num(f["node_guid"]) == devs[name]["guid"]
        assert num(f["port_guid"]) == port_of(devs, name, 1)["guid"]
        assert f["node_type"] == "Channel Adapter"


def _path_records(out: str) -> list[dict]:
    return [fields(part) for part in out.split("PathRecord dump:")[1:]]


def _gid(port_guid: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address((0xFE80 << 112) | port_guid)


def test_saquery_path_record(fab):
    devs = fab.devices()
    a, b = lid_of(devs, "node0002"), lid_of(devs, "node0007")
    out = tool(fab, "node0003", "saquery", "--slid", str(a), "--dlid", str(b), "PR")
    recs = _path_records(out)
    assert recs, out
    pr = recs[0]
    assert (num(pr["slid"]), num(pr["dlid"])) == (a, b)
    assert ipaddress.IPv6Address(pr["sgid"]) == _gid(port_of(devs, "node0002", 1)["guid"])
    assert ipaddress.IPv6Address(pr["dgid"]) == _gid(port_of(devs, "node0007", 1)["guid"])
    assert num(pr["pkey"]) == 0xFFFF
    assert num(pr["mtu"]) & 0x3F == 5  # 4096, as every port's MTU
    assert all(port_of(devs, n, 1)["mtu"] == 4096 for n in ("node0002", "node0007"))


def test_saquery_path_record_is_one_record(fab):
    devs = fab.devices()
    a, b = lid_of(devs, "node0002"), lid_of(devs, "node0007")
    out = tool(fab, "node0003", "saquery", "--slid", str(a), "--dlid", str(b), "PR")
    recs = _path_records(out)
    assert len(recs) == 1, f"{len(recs)} PathRecords printed for one:\n{out}"


def _ibfab_out(fab, *argv) -> str:
    r = subprocess.run(IBFAB + [*argv, "--name", fab.name], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_ibfab_saquery_prints_what_saquery_prints(fab):
    """Our saquery's dumps are the real one's, field for field and octet for octet, so that what
    parses saquery's output parses ours (the real one gets only the first RMPP segment of a table
    through umad2sim, so tables are compared record by record)."""
    devs = fab.devices()
    for name in ("node0004", "leaf02"):
        assert _ibfab_out(fab, "saquery", "nodes", name, "--via", "node0002") == \
            tool(fab, "node0002", "saquery", "NR", str(lid_of(devs, name)))
    a, b = lid_of(devs, "node0002"), lid_of(devs, "node0007")
    assert _ibfab_out(fab, "saquery", "path", "node0002", "node0007", "--via", "node0003") == \
        tool(fab, "node0003", "saquery", "--slid", str(a), "--dlid", str(b), "PR")
    ours = _ibfab_out(fab, "saquery", "mcmembers", "--via", "node0002").split("MCMember Record dump:")[1:]
    real = tool(fab, "node0002", "saquery", "MCMR").split("MCMember Record dump:")[1:]
    assert real and all(r in ours for r in real), (real, ours)


# --- bad input -------------------------------------------------------------------------------------


def test_tool_with_unknown_sim_host_fails_at_once(fab):
    r = subprocess.run(IBFAB + ["env", "--name", fab.name, "node0001"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "IBSIM_SOCKNAME", "SIM_HOST")}
    for line in r.stdout.splitlines():
        m = re.match(r"export (\w+)=(.*)$", line)
        if m:
            env[m.group(1)] = shlex.split(m.group(2))[0]
    assert {"LD_PRELOAD", "IBSIM_SOCKNAME", "SIM_HOST"} <= set(env)
    assert env["SIM_HOST"] == "node0001"
    env["SIM_HOST"] = "nosuch"
    smpquery = shutil.which("smpquery") or "/usr/sbin/smpquery"
    with tempfile.TemporaryDirectory(prefix="ibft-simhost-") as work:
        t0 = time.monotonic()
        bad = subprocess.run([smpquery, "nodeinfo", "1"], env=env, cwd=work, capture_output=True, text=True,
                             timeout=30)
        took = time.monotonic() - t0
    assert bad.returncode != 0, bad.stdout
    assert took < 5.0, f"took {took:.1f} s"
    assert "Guid" not in bad.stdout
    # the endpoint still serves a client that names the node right
    env["SIM_HOST"] = "node0001"
    with tempfile.TemporaryDirectory(prefix="ibft-simhost-") as work:
        good = subprocess.run([smpquery, "nodeinfo", str(lid_of(fab.devices(), "node0001"))], env=env, cwd=work,
                              capture_output=True, text=True, timeout=30)
    assert good.returncode == 0, good.stderr
    assert num(fields(good.stdout)["Guid"]) == fab.topology.nodes["node0001"].node_guid


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_ibfab_tool_stops_the_tool_and_removes_its_directory(fab, sig):
    """ibfab tool runs the tool in a private directory of its own (umad2sim's fake sysfs goes
    there): SIGTERM or SIGHUP ends it as ^C does, the tool stopped and the directory gone."""
    import glob

    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "ibfab-tool-*")))
    p = subprocess.Popen(IBFAB + ["tool", "--name", fab.name, "node0001", "--", "sleep", "60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sleeper: list = []
    try:
        end = time.monotonic() + 20
        while not (set(glob.glob(os.path.join(tempfile.gettempdir(), "ibfab-tool-*"))) - before):
            assert time.monotonic() < end and p.poll() is None, p.communicate()
            time.sleep(0.02)
        mine = set(glob.glob(os.path.join(tempfile.gettempdir(), "ibfab-tool-*"))) - before
        sleeper = subprocess.run(["pgrep", "-P", str(p.pid), "sleep"], capture_output=True, text=True).stdout.split()
        p.send_signal(sig)
        assert p.wait(timeout=20) == 130
        time.sleep(0.2)  # the tool's own exit, after ibfab killed it
    finally:
        p.kill()
        p.wait()
        leftover = [pid for pid in sleeper if os.path.exists(f"/proc/{pid}")]
        for pid in leftover:  # never left behind, whatever failed
            os.kill(int(pid), signal.SIGKILL)
    assert not [d for d in mine if os.path.exists(d)]
    assert sleeper and not leftover, (sleeper, leftover)  # the tool itself was stopped with it
