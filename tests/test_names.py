"""A node named the ways people name it (fabric.names): its id, the first word of its
NodeDescription, a node or port GUID, a LID; and what ``ibfab`` says when a name names nothing.
The fabric under test comes from an ibnetdiscover dump, whose node ids are ``H-<guid>`` and
``S-<guid>`` while the NodeDescriptions say ``node0061`` and ``leaf06``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fabric.names import UnknownNode, resolve
from fabric.topology import load_topology
from paths import shared_topology

DUMP = shared_topology("ibnetdiscover/ibsim-2sw2path4hca.ibnetdiscover")
IBFAB = [sys.executable, "-m", "fabric.cli"]


@pytest.fixture(scope="module")
def topo():
    return load_topology(DUMP)


def test_every_way_of_naming_a_node(topo):
    hca = next(n for n in topo.hcas())
    word = hca.description.split()[0]
    assert word != hca.name  # the dump's ids are not its descriptions: the case this is for
    assert resolve(topo, hca.name) == hca.name
    assert resolve(topo, word) == hca.name
    assert resolve(topo, f"0x{hca.node_guid:016x}") == hca.name
    assert resolve(topo, str(hca.node_guid)) == hca.name
    port_guid = hca.port_guids[1]
    assert resolve(topo, hex(port_guid)) == hca.name
    assert resolve(topo, "0x9", lids=lambda: {9: hca.name}) == hca.name
    assert resolve(topo, "9", lids=lambda: {9: hca.name}) == hca.name


def test_a_name_that_names_nothing_says_which_exist(topo):
    with pytest.raises(UnknownNode) as ei:
        resolve(topo, "nosuch")
    msg = str(ei.value)
    assert "'nosuch'" in msg and sorted(topo.nodes)[0] in msg and "\n" not in msg
    with pytest.raises(UnknownNode):
        resolve(topo, "0x7", lids=lambda: {})  # no such LID, no such GUID
    with pytest.raises(UnknownNode):
        resolve(topo, "12")  # a number, and no running fabric to ask for LIDs


def test_ibfab_takes_descriptions_guids_and_lids(tmp_path):
    from fabric import Fabric

    topo = load_topology(DUMP)
    a, b = sorted(topo.hcas(), key=lambda n: n.name)[:2]
    with Fabric(DUMP, name="names") as fab:
        lid_b = next(p["lid"] for p in fab.devices()[b.name]["ports"] if p["lid"])
        for src, dst in ((a.description.split()[0], b.description.split()[0]),
                         (f"0x{a.node_guid:x}", str(lid_b))):
            r = subprocess.run(IBFAB + ["ping", src, dst, "-c", "1", "--name", "names"], capture_output=True,
                               text=True, timeout=60)
            assert r.returncode == 0, (src, dst, r.stdout, r.stderr)
            assert "1 received" in r.stdout
        r = subprocess.run(IBFAB + ["perfquery", "nosuch", "--name", "names"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no node 'nosuch'" in r.stderr, r.stderr


def test_a_decimal_lid_with_a_leading_zero_is_a_lid(topo):
    hca = next(n for n in topo.hcas())
    assert resolve(topo, "010", lids=lambda: {10: hca.name}) == hca.name
