"""Topology files (ibsim net files, ibnetdiscover dumps), GUID allocation, generators, to_net.

The shared example topologies live in ../shared/topologies (IBFAB_TOPOLOGIES overrides the path).
The live tests at the end run the real ibsim and ibnetdiscover; they are skipped only when those
binaries are not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from fabric.topology import (
    LinkSpec,
    NodeSpec,
    Topology,
    TopologyError,
    generate,
    load_topology,
    parse_topology,
)

TOPO_DIR = Path(os.environ.get("IBFAB_TOPOLOGIES",
                               Path(__file__).resolve().parents[2] / "shared" / "topologies"))
SHARED_FILES = [
    "ibsim/net",
    "ibsim/net.1",
    "ibsim/net.2sw2path",
    "ibsim/net.2sw2path4hca",
    "ibsim/net.2sw2path4hca2port",
    "fattree-6x3x12x2.net",
    "ibnetdiscover/ibsim-2sw2path4hca.ibnetdiscover",
    "ibnetdiscover/fattree-6x3x12x2.ibnetdiscover",
]


def shared(name: str) -> Path:
    path = TOPO_DIR / name
    if not path.is_file():
        pytest.fail(f"missing shared topology {path} (set IBFAB_TOPOLOGIES to the directory)")
    return path


def by_desc(topo: Topology):
    """Nodes and cables keyed by NodeDescription, to compare a net file with a dump of it."""
    desc = {n.name: n.description for n in topo.nodes.values()}
    assert len(set(desc.values())) == len(desc), "descriptions are not unique"
    nodes = {n.description: (n.kind, n.num_ports, n.node_guid, n.sys_guid, dict(n.port_guids),
                             n.vendor_id, n.device_id) for n in topo.nodes.values()}
    links = sorted(tuple(sorted([(desc[lk.a], lk.a_port), (desc[lk.b], lk.b_port)]))
                   + (lk.width, lk.speed) for lk in topo.links)
    return nodes, links


def dump_guids(text: str):
    """GUIDs straight from an ibnetdiscover dump, without our parser.

    Returns ({description: node GUID}, {(description, port): port GUID}) for HCAs and switches.
    """
    nodes, ports = {}, {}
    guid = None
    current = None
    for line in text.splitlines():
        m = re.match(r"(?:caguid|switchguid)=0x([0-9a-f]+)", line)
        if m:
            guid = int(m.group(1), 16)
            continue
        m = re.match(r'(Switch|Ca)\s+\d+\s+"[^"]+"\s+#\s+"([^"]+)"', line)
        if m:
            current = m.group(2)
            nodes[current] = guid
            if m.group(1) == "Switch":
                ports[(current, 0)] = guid
            continue
        m = re.match(r"\[(\d+)\]\(([0-9a-f]+)\)", line)
        if m:
            ports[(current, int(m.group(1)))] = int(m.group(2), 16)
    return nodes, ports


# --- every shared file -------------------------------------------------------------------------

@pytest.mark.parametrize("name", SHARED_FILES)
def test_shared_file_parses_with_expected_counts(name):
    path = shared(name)
    text = path.read_text()
    lines = text.splitlines()
    n_switch = sum(1 for ln in lines if re.match(r"Switch\s", ln))
    n_hca = sum(1 for ln in lines if re.match(r"(Hca|Ca)\s", ln))
    port_lines = sum(1 for ln in lines if ln.startswith("["))
    assert port_lines % 2 == 0  # every cable is listed from both ends in these files
    topo = load_topology(str(path))
    topo.validate()
    assert len(topo.switches()) == n_switch
    assert len(topo.hcas()) == n_hca
    assert len(topo.links) == port_lines // 2
    assert topo.summary() == f"{n_switch} switches, {n_hca} HCAs, {port_lines // 2} links"
    assert topo.warnings == []
    # each cable once, and peer() agrees with it from both ends
    for lk in topo.links:
        assert topo.peer(lk.a, lk.a_port) == (lk.b, lk.b_port)
        assert topo.peer(lk.b, lk.b_port) == (lk.a, lk.a_port)
    # the SM port is an HCA port with a cable
    assert topo.nodes[topo.sm_node].kind == "hca"
    assert topo.peer(topo.sm_node, topo.sm_port) is not None


def test_expected_sizes_of_shared_files():
    assert load_topology(str(shared("fattree-6x3x12x2.net"))).summary() == \
        "9 switches, 72 HCAs, 108 links"
    t = load_topology(str(shared("ibsim/net.2sw2path4hca2port")))
    assert t.summary() == "2 switches, 2 HCAs, 6 links"
    assert t.connected_ports("Hca1") == {1: ("Switch1", 1), 2: ("Switch1", 2)}


# --- GUIDs: what ibsim assigns -----------------------------------------------------------------

@pytest.mark.parametrize("net,dump", [
    ("ibsim/net.2sw2path4hca", "ibnetdiscover/ibsim-2sw2path4hca.ibnetdiscover"),
    ("fattree-6x3x12x2.net", "ibnetdiscover/fattree-6x3x12x2.ibnetdiscover"),
])
def test_net_file_guids_equal_those_ibsim_gave(net, dump):
    topo = load_topology(str(shared(net)))
    node_guids, port_guids = dump_guids(shared(dump).read_text())
    assert len(node_guids) == len(topo.nodes)
    for node in topo.nodes.values():
        assert node.node_guid == node_guids[node.description], node.name
        assert node.sys_guid == node.node_guid
        if node.kind == "switch":
            assert node.port_guids == {0: node.node_guid}
    checked = 0
    for (desc, port), guid in port_guids.items():
        node = next(n for n in topo.nodes.values() if n.description == desc)
        assert node.port_guids[port] == guid, (desc, port)
        checked += 1
    assert checked == len(topo.nodes)  # every HCA's cabled port and every switch port 0


def test_guids_follow_declaration_order_not_first_mention():
    topo = load_topology(str(shared("ibsim/net.2sw2path4hca")))
    # Switch1 mentions Hca1 and Hca3 before Hca2 is mentioned; the HCAs are declared 1, 2, 3, 4.
    assert {n: topo.nodes[n].node_guid for n in ("Hca1", "Hca2", "Hca3", "Hca4")} == {
        "Hca1": 0x100000, "Hca2": 0x100003, "Hca3": 0x100006, "Hca4": 0x100009}
    assert topo.nodes["Hca2"].port_guids == {1: 0x100004, 2: 0x100005}
    assert topo.nodes["Switch1"].node_guid == 0x200000
    assert topo.nodes["Switch2"].node_guid == 0x200001


def test_guid_bases_and_node_settings():
    text = """
switchguid=0x500
Switch 4 "s1"
[1] "h1"[1]

caguid=0x1000
vendid=0x2c9
devid=0x1003
sysimgguid=0x77
Hca 2 "h1"   # "host one HCA-1"
[1](1009) "s1"[1]

Hca 1 "h2"

caguid+0x10
Hca 1 "h3"

switchguid=0x600(601)
Switch 4 "s2"
"""
    t = parse_topology(text)
    h1, h2, h3 = t.nodes["h1"], t.nodes["h2"], t.nodes["h3"]
    assert t.nodes["s1"].node_guid == 0x500
    assert (h1.node_guid, h1.sys_guid, h1.vendor_id, h1.device_id) == (0x1000, 0x77, 0x2c9, 0x1003)
    assert h1.description == "host one HCA-1"
    assert h1.port_guids == {1: 0x1009, 2: 0x1002}  # port 1 from the file, port 2 = node + 2
    # ibsim: vendid and sysimgguid apply to one node, devid stays in force
    assert (h2.node_guid, h2.sys_guid, h2.vendor_id, h2.device_id) == (0x1003, 0x1003, 0, 0x1003)
    assert h3.node_guid == 0x1010  # '+' is relative to the last absolute base
    assert t.nodes["s2"].node_guid == 0x600 and t.nodes["s2"].port_guids == {0: 0x601}


def test_generated_guids_are_ibsim_allocation():
    t = generate("fattree:2,2,3,1")
    assert [n.name for n in t.nodes.values()] == [
        "node0001", "node0002", "node0003", "node0004", "node0005", "node0006",
        "leaf01", "leaf02", "spine01", "spine02"]
    assert [n.node_guid for n in t.hcas()] == [0x100000 + 2 * i for i in range(6)]
    assert [n.port_guids[1] for n in t.hcas()] == [0x100001 + 2 * i for i in range(6)]
    assert [n.node_guid for n in t.switches()] == [0x200000, 0x200001, 0x200002, 0x200003]


# --- a dump and its net file describe the same fabric ------------------------------------------

@pytest.mark.parametrize("net,dump", [
    ("ibsim/net.2sw2path4hca", "ibnetdiscover/ibsim-2sw2path4hca.ibnetdiscover"),
    ("fattree-6x3x12x2.net", "ibnetdiscover/fattree-6x3x12x2.ibnetdiscover"),
])
def test_dump_and_net_file_give_the_same_graph(net, dump):
    a = load_topology(str(shared(net)))
    b = load_topology(str(shared(dump)))
    assert by_desc(a) == by_desc(b)
    assert all(lk.width == "4x" and lk.speed == "SDR" for lk in b.links)


def test_dump_details():
    t = load_topology(str(shared("ibnetdiscover/ibsim-2sw2path4hca.ibnetdiscover")))
    assert list(t.nodes)[0] == "S-0000000000200001"  # file order
    sw2 = t.nodes["S-0000000000200001"]
    assert (sw2.kind, sw2.num_ports, sw2.description, sw2.lid_hint) == ("switch", 8, "Switch2",
                                                                       {0: 3})
    hca4 = t.nodes["H-0000000000100009"]
    assert (hca4.description, hca4.lid_hint, hca4.port_guids[1]) == ("Hca4", {1: 6}, 0x10000a)
    # The dump was initiated from Switch1 port 0, so the SM is the first HCA port in the file
    assert (t.sm_node, t.sm_port) == ("H-0000000000100003", 1)
    fat = load_topology(str(shared("ibnetdiscover/fattree-6x3x12x2.ibnetdiscover")))
    # "Initiated from node 0000000000100000 port 0000000000100001": node0001 port 1
    assert fat.nodes[fat.sm_node].description == "node0001" and fat.sm_port == 1


def test_generated_fattree_equals_the_shared_net_file():
    from_file = load_topology(str(shared("fattree-6x3x12x2.net")))
    gen = generate("fattree:6,3,12,2")
    assert gen == from_file
    assert list(gen.nodes) == list(from_file.nodes)
    assert list(gen.nodes.values()) == list(from_file.nodes.values())
    assert (gen.sm_node, gen.sm_port) == ("node0001", 1) == (from_file.sm_node, from_file.sm_port)


# --- format details ----------------------------------------------------------------------------

def test_sm_port_rule_and_first_hca_port_in_file():
    t = load_topology(str(shared("ibsim/net.2sw2path4hca")))
    assert (t.sm_node, t.sm_port) == ("Hca1", 1)
    text = ('Switch 4 "s"\n[1] "a"[1]\n[2] "b"[2]\n\n'
            'Hca 2 "b"\n[2] "s"[2]\n\nHca 2 "a"\n[1] "s"[1]\n')
    t = parse_topology(text)
    assert (t.sm_node, t.sm_port) == ("a", 1)  # first HCA port appearing in the file
    t = parse_topology('Switch 4 "s"\n\nHca 2 "b"\n')
    assert (t.sm_node, t.sm_port) == ("b", 1)  # nothing cabled: the first HCA's port 1


def test_tabs_spaces_comments_defaults_and_one_sided_links():
    text = (
        "# a comment\n"
        "   # an indented comment\n"
        "Switch\t8   \"sw\"\t# \"Big switch\" enhanced port 0 lid 7 lmc 0\n"
        "[1]   \"h1\"\n"                  # remote port omitted: 1
        "# comment inside a record\n"
        "[2]\t\"h2\"[1]   # one-sided: h2 does not list it\n"
        "\n"
        "Hca 1 \"h1\"   # plain desc lid 3\n"
        "[1] \"sw\"[1]\n"
        "\n"
        "Ca 1 \"h2\"\n"
        "\n"
        "do start\n"
    )
    t = parse_topology(text, source="fmt.net")
    assert t.nodes["sw"].description == "Big switch" and t.nodes["sw"].lid_hint == {0: 7}
    assert t.nodes["h1"].description == "plain desc"
    assert t.nodes["h2"].description == "h2"
    assert t.peer("sw", 1) == ("h1", 1) and t.peer("h2", 1) == ("sw", 2)
    assert t.peer("sw", 3) is None
    assert len(t.links) == 2
    assert any("fmt.net:13" in w and "do start" in w for w in t.warnings)
    with pytest.raises(KeyError):
        t.peer("nope", 1)


def test_link_rates_options_comments_and_globals():
    text = """
Switch 8 "sw"
[1] "h1"[1] w=8 s=4
[2] "h2"[1] # "h2" lid 4 12xQDR
[3] "h3"[1] s=4 e=1
[4] "h4"[1] w=1
[5] "h5"[1] # "h5" lid 9 4xFDR10
[6] "h6"[1] w=12x
[7] "h7"[1] # "h7" lid 4 4xDDR
[8] "h8"[1] # "h8" lid 4 1xSDR

Hca 1 "h7"
[1] "sw"[7] # lid 2 lmc 0 "sw" lid 1 4xDDR

Hca 1 "h8"
[1] "sw"[8] # lid 2 lmc 0 "sw" lid 1 4xSDR

Hca 1 "h1"
[1] "sw"[1] w=8 s=4

Hca 1 "h2"
[1](a00004) "sw"[2] # lid 4 lmc 0 "sw" lid 1 12xQDR

Hca 1 "h3"
[1] "sw"[3] s=4 e=3

Hca 1 "h4"
[1] "sw"[4] w=3

Hca 1 "h5"
[1] "sw"[5] # lid 2 lmc 0 "sw" lid 1 4xFDR10

Hca 1 "h6"
[1] "sw"[6] w=8
"""
    t = parse_topology(text)
    rate = {lk.b: (lk.width, lk.speed) for lk in t.links}
    assert rate == {"h1": ("12x", "QDR"), "h2": ("12x", "QDR"), "h3": ("4x", "FDR"),
                    "h4": ("1x", "SDR"), "h5": ("4x", "FDR10"), "h6": ("12x", "SDR"),
                    "h7": ("4x", "DDR"),
                    # as in the ibnetdiscover man page: the ends disagree, ibsim takes the
                    # widest width both enable ("4x" enables 1x and 4x)
                    "h8": ("1x", "SDR")}
    assert any("w=12x" in w for w in t.warnings)  # not ibsim syntax: warned
    t = parse_topology('width=8\nspeed=2\nSwitch 2 "s"\n[1] "h"[1]\n\nHca 1 "h"\n[1] "s"[1]\n')
    assert (t.links[0].width, t.links[0].speed) == ("12x", "DDR")


def test_mismatched_enabled_width_is_an_error():
    text = 'Switch 2 "s"\n[1] "h"[1] w=1\n\nHca 1 "h"\n[1] "s"[1] w=8\n'
    with pytest.raises(TopologyError, match=r"^m.net:2: .*no common width"):
        parse_topology(text, source="m.net")


def test_header_directly_after_a_record_warns():
    t = parse_topology('Switch 8 "s"\n[1] "h"[1]\nHca 1 "h"\n[1] "s"[1]\n', source="w.net")
    assert len(t.links) == 1
    assert any(w.startswith("w.net:3:") and "blank line" in w for w in t.warnings)


# --- include -----------------------------------------------------------------------------------

def test_include_relative_to_the_including_file(tmp_path, monkeypatch):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "hcas.net").write_text(
        'Hca 2 "h1"\n[1] "sw"[1]\n\ninclude "more/h2.net"\n')
    (tmp_path / "parts" / "more").mkdir()
    (tmp_path / "parts" / "more" / "h2.net").write_text('Hca 2 "h2"\n[1] "sw"[2]\n')
    main = tmp_path / "main.net"
    main.write_text('Switch 8 "sw"\n[1] "h1"[1]\n[2] "h2"[1]\n\ninclude "parts/hcas.net"  # HCAs\n'
                    '\nHca 1 "h3"\n')
    monkeypatch.chdir(tempfile.gettempdir())
    t = load_topology(str(main))
    assert list(t.nodes) == ["sw", "h1", "h2", "h3"]
    assert [t.nodes[n].node_guid for n in ("h1", "h2", "h3")] == [0x100000, 0x100003, 0x100006]
    assert len(t.links) == 2
    # parse_topology with base_dir; the other spellings of include
    t2 = parse_topology(main.read_text(), source="text", base_dir=str(tmp_path))
    assert t2 == t
    for spelling in ("include parts/hcas.net", "include <parts/hcas.net>"):
        text = main.read_text().replace('include "parts/hcas.net"  # HCAs', spelling)
        assert parse_topology(text, base_dir=str(tmp_path)) == t


def test_include_cycle_and_missing_include(tmp_path):
    (tmp_path / "a.net").write_text('Switch 8 "sw"\n\ninclude "b.net"\n')
    (tmp_path / "b.net").write_text('# b\n\ninclude "a.net"\n')
    with pytest.raises(TopologyError) as ei:
        load_topology(str(tmp_path / "a.net"))
    msg = str(ei.value)
    assert msg.startswith(f"{tmp_path / 'b.net'}:3: include cycle")
    assert f"included from {tmp_path / 'a.net'}:3" in msg
    (tmp_path / "self.net").write_text('include "self.net"\n')
    with pytest.raises(TopologyError, match="self.net:1: include cycle"):
        load_topology(str(tmp_path / "self.net"))
    (tmp_path / "c.net").write_text('\n\ninclude "nope.net"\n')
    with pytest.raises(TopologyError, match=r"c\.net:3: cannot include"):
        load_topology(str(tmp_path / "c.net"))


def test_error_inside_an_included_file_names_both(tmp_path):
    (tmp_path / "inc.net").write_text('Switch 8 "sw"\n[9] "h"[1]\n')
    (tmp_path / "top.net").write_text('# top\ninclude "inc.net"\n')
    with pytest.raises(TopologyError) as ei:
        load_topology(str(tmp_path / "top.net"))
    assert str(ei.value).startswith(f"{tmp_path / 'inc.net'}:2: port 9 is out of range")
    assert str(ei.value).endswith(f"(included from {tmp_path / 'top.net'}:2)")
    assert ei.value.line == 2


# --- errors: file and line ---------------------------------------------------------------------

ERROR_CASES = [
    # (text, line, fragment of the reason)
    ('Switch 8 "sw"\n[1] "h1"[1]\n[2] "ghost"[1]\n\nHca 1 "h1"\n[1] "sw"[1]\n',
     3, "unknown node 'ghost'"),
    ('Switch 8 "sw"\n[9] "h1"[1]\n\nHca 1 "h1"\n', 2, "port 9 is out of range"),
    ('Switch 8 "sw"\n[0] "h1"[1]\n\nHca 1 "h1"\n', 2, "port 0 is out of range"),
    ('Switch 8 "sw"\n[1] "h1"[3]\n\nHca 2 "h1"\n', 2, "remote port h1[3] is out of range"),
    ('Switch 8 "sw"\n[1] "h1"[1]\n[1] "h2"[1]\n\nHca 1 "h1"\n\nHca 1 "h2"\n',
     3, "cabled twice"),
    # A1 -> B2, but B2 -> C3
    ('Switch 8 "A"\n[1] "B"[2]\n\nSwitch 8 "B"\n[2] "C"[3]\n\nSwitch 8 "C"\n[3] "B"[2]\n',
     5, "conflicting cables"),
    # two ports claim the same remote port
    ('Switch 8 "A"\n[1] "H"[1]\n[2] "H"[1]\n\nHca 1 "H"\n', 3, "conflicting cables"),
    ('Switch "sw"\n', 1, "bad node header"),
    ('Switch 8 sw\n', 1, "bad node header"),
    ('Switch 300 "sw"\n', 1, "port count 300"),
    ('Hca 1 "h" junk\n', 1, "unexpected text"),
    ('Hca 1 "a#b"\n', 1, "reserved"),
    ('Switch 8 "sw"\n\nRt 2 "r1"\n[1] "sw"[1]\n', 3, "router"),
    ('Switch 8 "sw"\n\nSwitch 4 "sw"\n', 3, "declared twice"),
    ('Switch 8 "sw"\nfoo bar\n', 2, "unrecognised line"),
    ('Switch 8 "sw"\n\n[1] "h"[1]\n', 3, "outside a node record"),
    ('frobnicate=3\n', 1, "unknown setting"),
    ('caguid=zz\n', 1, "bad value"),
    ('Switch 8 "sw"\n[1] "h"[1] w=99\n\nHca 1 "h"\n', 2, "bad width option"),
    ('Switch 8 "sw"\n[1] "h"[1]\n\nHca 1 "h"\n[1](zz) "sw"[1]\n', 5, "bad port GUID"),
    ('Switch 8 "sw"\n[1] "h"[1](123)\n\nHca 1 "h"\n[1](100001) "sw"[1]\n', 2,
     "does not match its GUID"),
    ('Switch 8 "sw"\n[1] "@a"[1]\n', 2, "aliases"),
    ('caguid=0x200000\nHca 1 "h"\n\nSwitch 8 "sw"\n', 4, "also the GUID of node 'h'"),
]


@pytest.mark.parametrize("text,line,fragment", ERROR_CASES)
def test_errors_name_file_and_line(text, line, fragment):
    with pytest.raises(TopologyError) as ei:
        parse_topology(text, source="bad.net")
    msg = str(ei.value)
    assert msg.startswith(f"bad.net:{line}: "), msg
    assert fragment in msg, msg
    assert (ei.value.source, ei.value.line) == ("bad.net", line)


def test_empty_file_is_an_error():
    with pytest.raises(TopologyError, match="empty.net: no nodes"):
        parse_topology("# nothing\n", source="empty.net")


@pytest.mark.parametrize("spec,fragment", [
    ("mesh:3", "unknown generator 'mesh'"),
    ("single:x", "not a positive integer"),
    ("single:-1", "not a positive integer"),
    ("single:0", "at least 1"),
    ("fattree:2,2,0,1", "at least 1"),
    ("single:255", "at most 254"),
    ("fattree:2,2,2", "takes 4 arguments"),
    ("fattree:2,10,200,10", "at most 254"),
    ("fattree:255,1,1,1", "at most 254"),
    ("fattree3:2,2,2,2", "takes 5 arguments"),
    ("fattree3:2,40,250,30,2", "at most 254"),
    ("fattree3:100,1,1,1,1", "two-digit names"),
    ("single", "expected KIND:ARGS"),
])
def test_bad_generator_specs(spec, fragment):
    with pytest.raises(TopologyError) as ei:
        generate(spec)
    assert spec in str(ei.value) and fragment in str(ei.value), str(ei.value)


def test_load_topology_arguments(tmp_path):
    t = generate("single:2")
    assert load_topology(t) is t
    assert load_topology("single:2") == t
    p = tmp_path / "t.net"
    p.write_text(t.to_net())
    assert load_topology(p) == t
    assert load_topology(str(p)) == t
    with pytest.raises(TopologyError, match="nope: no such topology file"):
        load_topology("nope")
    with pytest.raises(TopologyError, match="unknown generator"):
        load_topology("nope:3")


# --- validate() on hand-built topologies --------------------------------------------------------

def _hand_built():
    nodes = {
        "s": NodeSpec("s", "switch", 4, 0x10, 0x10, {0: 0x10}, "s"),
        "h": NodeSpec("h", "hca", 1, 0x20, 0x20, {1: 0x21}, "h"),
        "g": NodeSpec("g", "hca", 1, 0x30, 0x30, {1: 0x31}, "g"),
    }
    links = [LinkSpec("s", 1, "h", 1), LinkSpec("s", 2, "g", 1)]
    return Topology(nodes=nodes, links=links, sm_node="h", sm_port=1, source="hand")


@pytest.mark.parametrize("mutate,fragment", [
    (lambda t: t.links.append(LinkSpec("s", 3, "h", 1)), "cabled twice"),
    (lambda t: t.links.append(LinkSpec("h", 1, "s", 1)), "cabled twice"),  # listed from both ends
    (lambda t: t.links.append(LinkSpec("s", 3, "x", 1)), "unknown node 'x'"),
    (lambda t: t.links.append(LinkSpec("s", 5, "g", 1)), "out of range"),
    (lambda t: t.links.append(LinkSpec("s", 3, "s", 3)), "itself"),
    (lambda t: t.links.append(LinkSpec("s", 3, "s", 4, "3x")), "width"),
    (lambda t: setattr(t.nodes["g"], "node_guid", 0x20), "also the GUID"),
    (lambda t: t.nodes["g"].port_guids.update({1: 0x21}), "also a port GUID"),
    (lambda t: t.nodes["g"].port_guids.update({2: 0x32}), "port GUIDs are given for ports"),
    (lambda t: setattr(t, "sm_node", "zz"), "SM node"),
    (lambda t: setattr(t, "sm_port", 2), "SM port"),
    (lambda t: setattr(t.nodes["g"], "description", "x" * 65), "64 bytes"),
])
def test_validate_hand_built(mutate, fragment):
    t = _hand_built()
    t.validate()
    mutate(t)
    with pytest.raises(TopologyError, match=re.escape(fragment)):
        t.validate()


def test_validate_cites_the_line_of_a_parsed_link():
    t = load_topology(str(shared("ibsim/net.1")))
    t.links.append(LinkSpec("Switch1", 2, "Hca1", 1, "4x", "SDR"))
    with pytest.raises(TopologyError) as ei:
        t.validate()
    # net.1 line 22 is Switch1's "[1] Hca1[1]", the cable the new one collides with
    assert str(ei.value).startswith(f"{shared('ibsim/net.1')}:22: port Hca1[1] is cabled twice")


# --- generators --------------------------------------------------------------------------------

def test_fattree_sizes():
    t = generate("fattree:4,2,24,6")
    assert (len(t.hcas()), len(t.switches()), len(t.links)) == (96, 6, 96 + 4 * 2 * 6)
    assert {n.num_ports for n in t.switches()} == {36}
    big = generate("fattree:36,18,18,1")
    assert (len(big.hcas()), len(big.switches()), len(big.links)) == (648, 54, 648 + 36 * 18)
    assert {n.num_ports for n in big.switches()} == {36}
    assert {len(big.connected_ports(n.name)) for n in big.switches()} == {36}
    wide = generate("fattree:2,1,40,20")  # leaves need 60 ports
    assert wide.nodes["leaf01"].num_ports == 60 and wide.nodes["spine01"].num_ports == 40
    for topo in (t, big, wide):
        topo.validate()


def test_fattree_port_numbering():
    t = generate("fattree:3,2,4,2")
    assert t.peer("leaf01", 1) == ("node0001", 1)
    assert t.peer("leaf03", 4) == ("node0012", 1)
    # leaf ports after the HCAs: spine by spine, K cables each; spine ports leaf by leaf
    assert [t.peer("leaf02", p) for p in range(5, 9)] == [
        ("spine01", 3), ("spine01", 4), ("spine02", 3), ("spine02", 4)]
    assert t.peer("leaf02", 9) is None


def test_three_level_fattree():
    t = generate("fattree3:8,18,18,18,4")
    assert (len(t.hcas()), len(t.switches())) == (2592, 8 * 36 + 72)
    assert len(t.links) == 2592 + 8 * 18 * 18 + 8 * 18 * 4
    assert {n.num_ports for n in t.switches()} == {36}
    t.validate()
    small = generate("fattree3:2,2,2,3,2")
    assert small.peer("p01leaf01", 1) == ("node0001", 1)
    assert small.peer("p02leaf02", 3) == ("node0012", 1)
    # a leaf's uplinks: one to each aggregation switch of its pod; an aggregation switch's: one to
    # each core of its group; a core: one port per pod
    assert [small.peer("p02leaf02", p) for p in (4, 5)] == [("p02agg01", 2), ("p02agg02", 2)]
    assert [small.peer("p01agg02", p) for p in (3, 4)] == [("core0201", 1), ("core0202", 1)]
    assert small.connected_ports("core0102") == {1: ("p01agg01", 4), 2: ("p02agg01", 4)}
    assert small.summary() == "12 switches, 12 HCAs, 28 links"


def test_single_and_linear():
    t = generate("single:3")
    assert t.summary() == "1 switches, 3 HCAs, 3 links"
    assert t.nodes["sw01"].num_ports == 8
    assert t.connected_ports("sw01") == {1: ("node0001", 1), 2: ("node0002", 1),
                                         3: ("node0003", 1)}
    assert generate("single:20").nodes["sw01"].num_ports == 20
    t = generate("linear:4")
    assert t.summary() == "4 switches, 4 HCAs, 7 links"
    assert t.connected_ports("sw02") == {1: ("node0002", 1), 2: ("sw01", 3), 3: ("sw03", 2)}
    assert t.connected_ports("sw04") == {1: ("node0004", 1), 2: ("sw03", 3)}
    assert (t.sm_node, t.sm_port) == ("node0001", 1)
    assert [n.node_guid for n in t.switches()] == [0x200000, 0x200001, 0x200002, 0x200003]
    assert generate("linear:1").summary() == "1 switches, 1 HCAs, 1 links"
    assert all(lk.width == "4x" and lk.speed == "SDR" for lk in t.links)


# --- to_net ------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["single:5", "linear:4", "fattree:3,2,4,2", "fattree:6,3,12,2"])
def test_to_net_round_trip_generated(spec):
    t = generate(spec)
    text = t.to_net()
    back = parse_topology(text)
    assert back == t
    assert back.warnings == []
    first_record = re.search(r'^(Switch|Hca)\s+\d+\s+"([^"]+)"', text, re.M)
    assert first_record.group(2) == t.sm_node


@pytest.mark.parametrize("name", SHARED_FILES)
def test_to_net_round_trip_parsed(name):
    t = load_topology(str(shared(name)))
    back = parse_topology(t.to_net())
    assert back == t
    assert by_desc(back) == by_desc(t)


def _unusual_topology() -> Topology:
    """GUIDs ibsim would not allocate, odd rates, SM on a later HCA's second port."""
    text = """
vendid=0x2c9
devid=0x1003
sysimgguid=0x9000
caguid=0x5000
Hca 2 "a"   # "host a"
[1] "sw1"[1] s=4
[2](5009) "sw2"[1] w=8 s=4 e=2

caguid=0x100000
Hca 1 "b"
[1] "sw1"[2]

switchguid=0x300000(300005)
Switch 8 "sw2"   # "spine one"
[1] "a"[2] w=8 s=4 e=2
[3] "sw1"[3] # "x" lid 1 4xFDR10

Switch 8 "sw1"
[1] "a"[1] s=4
[2] "b"[1]
[3] "sw2"[3] # "x" lid 1 4xFDR10
"""
    t = parse_topology(text, source="odd.net")
    t.sm_node, t.sm_port = "a", 2
    return t


def test_to_net_round_trip_unusual():
    t = _unusual_topology()
    assert t.nodes["a"].port_guids == {1: 0x5001, 2: 0x5009}
    assert t.nodes["a"].sys_guid == 0x9000 and t.nodes["b"].sys_guid == 0x100000
    assert t.nodes["b"].device_id == 0x1003 and t.nodes["b"].vendor_id == 0
    assert t.nodes["sw2"].node_guid == 0x300000 and t.nodes["sw1"].node_guid == 0x300001
    text = t.to_net()
    back = parse_topology(text)
    assert back == t
    assert (back.sm_node, back.sm_port) == ("a", 2)
    assert by_desc(back) == by_desc(t)


def test_to_net_rejects_unwritable_description():
    t = generate("single:1")
    t.nodes["node0001"].description = 'say "hi"'
    with pytest.raises(TopologyError, match="cannot be written"):
        t.to_net()


# --- live: the real ibsim and ibnetdiscover -----------------------------------------------------

LIVE_TOOLS = ("ibsim", "ibsim-run", "ibnetdiscover")


def _ibnetdiscover_on_ibsim(netpath: Path, workdir: Path, sim_host: str | None = None) -> str:
    """Run ibsim on `netpath` on a private socket name, return what ibnetdiscover printed.

    ibsim's sockets live in the abstract namespace under IBSIM_SOCKNAME, so concurrent runs with
    different names do not meet. Every process started here runs in its own session and is
    killed (by process group) before returning.
    """
    missing = [t for t in LIVE_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (ibsim-utils, infiniband-diags)")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "SIM_HOST")}
    env["IBSIM_SOCKNAME"] = f"ibfab-topo-{uuid.uuid4().hex[:12]}"
    log_path = workdir / "ibsim.log"
    procs = []
    with open(log_path, "w+") as log:
        sim = subprocess.Popen(["ibsim", "-s", "-n", str(netpath)], stdin=subprocess.DEVNULL,
                               stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
        procs.append(sim)
        try:
            deadline = time.monotonic() + 10
            while "Network simulator ready" not in log_path.read_text():
                if sim.poll() is not None:
                    pytest.fail(f"ibsim exited: {log_path.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"ibsim not ready after 10 s: {log_path.read_text()}")
                time.sleep(0.05)
            if sim_host:
                env["SIM_HOST"] = sim_host
            disc = subprocess.Popen(["ibsim-run", "ibnetdiscover"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env,
                                    start_new_session=True)
            procs.append(disc)
            out, err = disc.communicate(timeout=20)
            assert disc.returncode == 0, err
            return out
        finally:
            for p in procs:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()


def test_live_ibnetdiscover_of_ibsim_net_file(tmp_path):
    net = shared("ibsim/net.2sw2path4hca")
    out = _ibnetdiscover_on_ibsim(net, tmp_path)
    live = parse_topology(out, source="live ibnetdiscover")
    # the same fabric as the net file, and as the dump recorded with OpenSM running
    assert by_desc(live) == by_desc(load_topology(str(net)))
    assert live == load_topology(str(shared("ibnetdiscover/ibsim-2sw2path4hca.ibnetdiscover")))
    # ibsim attached the (SM-less) client at the first record's first port: Switch1 port 0
    assert "Initiated from node 0000000000200000 port 0000000000200000" in out


def test_live_to_net_through_ibsim(tmp_path):
    """Our net file, read by ibsim, gives the GUIDs, rates and cabling we meant; the SM port
    is where ibsim attaches a client that names no node."""
    t = _unusual_topology()
    # ibsim ignores the port GUIDs a net file gives ([p](guid), switchguid=X(guid)): make them
    # the ones it computes
    t.nodes["a"].port_guids[2] = 0x5002
    t.nodes["sw2"].port_guids[0] = t.nodes["sw2"].node_guid
    net = tmp_path / "unusual.net"
    net.write_text(t.to_net())
    out = _ibnetdiscover_on_ibsim(net, tmp_path)
    live = parse_topology(out, source="live ibnetdiscover")
    assert by_desc(live) == by_desc(t)
    # ibsim attaches a client that names no node to the first port of the first record: the
    # right node, but always its port 1 (the SM here is on port 2, which ibsim cannot express)
    assert "Initiated from node 0000000000005000 port 0000000000005001" in out
    assert live.nodes[live.sm_node].description == "host a" and live.sm_port == 1


@pytest.mark.parametrize("spec", ["linear:4", "fattree:3,2,4,2", "fattree:36,18,18,1"])
def test_live_generated_through_ibsim(tmp_path, spec):
    t = generate(spec)
    net = tmp_path / "generated.net"
    net.write_text(t.to_net())
    live = parse_topology(_ibnetdiscover_on_ibsim(net, tmp_path), source="live")
    assert by_desc(live) == by_desc(t)
    assert live.nodes[live.sm_node].description == "node0001"


# -- a run directory's topology: the file, and the launcher's snapshot beside it --------------------


def _run_info(tmp_path):
    from fabric.runinfo import RunInfo

    return RunInfo(str(tmp_path), {"name": "t", "topology": str(tmp_path / "topology.net"), "hosts": []})


def test_a_run_directorys_topology_is_read_back_from_its_snapshot(tmp_path, monkeypatch):
    import fabric.topology

    topo = load_topology("fattree:4,2,3,1")
    info = _run_info(tmp_path)
    info.save_topology(topo)
    assert load_topology(info.topology_path) == topo  # the file is the whole truth
    # the snapshot is what the hosts read: no parse of the file at all
    monkeypatch.setattr(fabric.topology, "load_topology", lambda *a: pytest.fail("parsed the file"))
    got = info.load_topology()
    assert got == topo and list(got.nodes) == list(topo.nodes)
    assert got.sm_node == topo.sm_node and got.sm_port == topo.sm_port


def test_a_changed_or_damaged_topology_snapshot_gives_way_to_the_file(tmp_path):
    topo = load_topology("fattree:4,2,3,1")
    info = _run_info(tmp_path)
    info.save_topology(topo)
    # the file edited after the launch (another size and time): the file is read, not the snapshot
    other = load_topology("single:3")
    time.sleep(0.01)
    with open(info.topology_path, "w") as f:
        f.write(other.to_net())
    assert info.load_topology() == other
    info.save_topology(topo)
    for damage in (b"", b"\x80\x05not a pickle", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."):
        with open(info.topology_path + ".pickle", "wb") as f:
            f.write(damage)
        assert info.load_topology() == topo
    os.remove(info.topology_path + ".pickle")
    assert info.load_topology() == topo
