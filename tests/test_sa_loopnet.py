"""The SA behind the real SM on a LoopNet: queries travel as GMPs from an HCA's QP1 to the SM's
port and back (RMPP included), and joins end up in the switches' MFTs."""

from __future__ import annotations

import pytest

from fabric import wire as w
from fabric.mad import saclient as sc
from smnet import SmNet

BCAST = w.ipoib_broadcast_mgid(0xFFFF)


@pytest.fixture(scope="module")
def net():
    n = SmNet("fattree:4,2,3,1")
    n.start_sm()
    n.settle(2.0)
    assert n.agent.last_up is not None
    return n


def gid(net, name):
    return w.make_gid(w.GID_PREFIX_DEFAULT, net.devices[name].ports[1].guid)


def query(net, name, mad):
    d = net.devices[name]
    d.post_send(1, dlid=net.lid("node0001"), dest_qp=1, payload=mad,
                qkey=w.QKEY_GSI, now=net.now)
    net.inject(name)
    net.settle()
    done = net.sa_responses(name)
    assert len(done) == 1
    return done[0]


def test_path_record_over_the_wire(net):
    r = query(net, "node0005", sc.path_record_query(gid(net, "node0005"), gid(net, "node0011"))[1])
    (pr,) = r.records
    assert r.ok and (pr.slid, pr.dlid) == (net.lid("node0005"), net.lid("node0011"))
    assert (pr.pkey, pr.mtu, pr.rate, pr.hop_limit) == (0xFFFF, 5, 3, 0)


def test_node_records_over_the_wire_with_rmpp(net):
    r = query(net, "node0007", sc.node_records()[1])
    assert r.ok and len(r.records) == 18
    assert {x.node_desc.description for x in r.records} >= {"node0001", "spine02"}


def test_joins_program_the_mfts(net):
    for name in ("node0005", "node0009"):
        r = query(net, name, sc.mcmember_join(BCAST, gid(net, name), 1)[1])
        assert r.ok and r.records[0].mlid == 0xC000
    net.settle(1.0)
    # leaves: HCAs on ports 1-3, spine01 on port 4; the tree's root is spine01
    assert net.devices["leaf02"].mft[0] == 0b10100    # node0005 on port 2, up to spine01
    assert net.devices["leaf03"].mft[0] == 0b11000    # node0009 on port 3
    assert net.devices["spine01"].mft[0] == 0b01100   # down to leaf02 and leaf03
    assert net.devices["leaf01"].mft[0] == 0
