"""saclient: request builders and response parsing, end to end against the SA."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fabric import wire as w
from fabric.mad import saclient as sc
from fabric.mad.rmpp import RmppError
from fabric.sm.sa import SaReply, SubnetAdministrator
from fabric.wire.sa_attrs import MCM_COMP, PR_COMP, comp_mask
from test_sa_net import build_subnet, ca, gid, req_of, switch

BCAST = w.ipoib_broadcast_mgid(0xFFFF)


@pytest.fixture
def net():
    sub = build_subnet("fattree:4,2,3,1")
    return sub, SubnetAdministrator(sub)


def ask(sa, port, mad):
    (reply,) = [a for a in sa.handle(mad, req_of(port), 0.0) if isinstance(a, SaReply)]
    return sc.parse_response(list(reply.mads))


def test_path_record_query(net):
    sub, sa = net
    a, b = ca(sub, 2), ca(sub, 11)
    tid, mad = sc.path_record_query(gid(a), gid(b), pkey=0xFFFF)
    req = w.SAMad.unpack(mad)
    assert (req.method, req.attr_id, req.tid) == (w.GET, w.ATTR_PATH_RECORD, tid)
    assert req.comp_mask == comp_mask(PR_COMP, "sgid", "dgid", "pkey")
    resp = ask(sa, a, mad)
    assert resp.ok and resp.tid == tid and resp.method == w.GET_RESP
    (pr,) = resp.records
    assert (pr.slid, pr.dlid, pr.pkey, pr.mtu) == (a.lid, b.lid, 0xFFFF, 5)


def test_path_record_query_options(net):
    sub, sa = net
    a = ca(sub, 2)
    _, mad = sc.path_record_query(None, gid(ca(sub, 7)), method=w.GET_TABLE, sl=0, numb_path=1,
                                  reversible=True, mtu=(2, 4), rate=(2, 3))
    resp = ask(sa, a, mad)
    assert resp.ok and len(resp.records) == 18
    assert {r.mtu for r in resp.records} == {4}


def test_join_query_leave(net):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 6)
    resp = ask(sa, a, sc.mcmember_join(BCAST, gid(a), 1)[1])
    assert resp.ok and resp.records[0].mlid == 0xC000 and resp.records[0].qkey == 0x0B1B
    _, mad = sc.mcmember_join(bytes(16), gid(b), 1, create=True)
    assert w.SAMad.unpack(mad).comp_mask == comp_mask(
        MCM_COMP, "mgid", "port_gid", "join_state", "qkey", "pkey", "sl", "flow_label", "tclass")
    new = ask(sa, b, mad).records[0]
    assert new.mgid[:4] == bytes.fromhex("ff12a01b") and new.mlid == 0xC001
    resp = ask(sa, b, sc.mcmember_records(mgid=new.mgid)[1])
    assert [r.mlid for r in resp.records] == [0xC001]
    resp = ask(sa, b, sc.mcmember_records()[1])
    assert sorted(r.mlid for r in resp.records) == [0xC000, 0xC001]
    resp = ask(sa, b, sc.mcmember_leave(new.mgid, gid(b), 1)[1])
    assert resp.ok and resp.method == w.DELETE_RESP and resp.records[0].join_state == 0
    resp = ask(sa, b, sc.mcmember_records(mgid=new.mgid)[1])
    assert resp.ok and resp.records == ()
    resp = ask(sa, b, sc.mcmember_leave(new.mgid, gid(b), 1)[1])
    assert not resp.ok and resp.status == w.SA_ERR_REQ_INVALID and resp.records == ()


def test_join_options(net):
    sub, sa = net
    a = ca(sub, 3)
    mgid = bytes.fromhex("ff15e01b000000000000000000000003")
    _, mad = sc.mcmember_join(mgid, gid(a), 1, create=True, qkey=0x99, mtu=(2, 3), rate=(2, 3),
                              hop_limit=0xFF, scope=5, mlid=0xC200)
    (rec,) = ask(sa, a, mad).records
    assert (rec.mlid, rec.mtu, rec.qkey, rec.hop_limit, rec.scope) == (0xC200, 3, 0x99, 0xFF, 5)


def test_node_and_port_info_records(net):
    sub, sa = net
    a, leaf = ca(sub, 1), switch(sub, "leaf02")
    (nr,) = ask(sa, a, sc.node_records(lid=leaf.lid, method=w.GET)[1]).records
    assert nr.node_desc.description == "leaf02"
    (nr,) = ask(sa, a, sc.node_records(port_guid=ca(sub, 9).gid_guid)[1]).records
    assert nr.lid == ca(sub, 9).lid
    (nr,) = ask(sa, a, sc.node_records(node_desc="node0004")[1]).records
    assert nr.node_info.node_guid == ca(sub, 4).node.guid
    recs = ask(sa, a, sc.port_info_records(lid=leaf.lid)[1]).records
    assert len(recs) == 37
    (pir,) = ask(sa, a, sc.port_info_records(lid=a.lid, port_num=1, method=w.GET)[1]).records
    assert pir.port_info.lid == a.lid


def test_class_port_info(net):
    sub, sa = net
    (cpi,) = ask(sa, ca(sub, 1), sc.class_port_info()[1]).records
    assert cpi.class_version == 2 and cpi.capability_mask & (1 << 9)


def test_inform_info_and_reports(net):
    sub, sa = net
    s = ca(sub, 5)
    resp = ask(sa, s, sc.inform_info(True, trap_num=64)[1])
    assert resp.ok and resp.records[0].subscribe == 1
    (rep,) = sa.gid_in_service(ca(sub, 8))
    n = sc.parse_report(rep.mad)
    assert n.trap_num == 64 and n.data_details[6:22] == gid(ca(sub, 8))
    ack = sc.report_response(rep.mad)
    assert w.SAMad.unpack(ack).method == w.REPORT_RESP
    assert sa.handle(ack, req_of(s), 0.0) == [] and sa.pending_reports == {}
    resp = ask(sa, s, sc.inform_info(False, trap_num=64)[1])
    assert resp.ok and sa.subscriptions == []
    with pytest.raises(ValueError):
        sc.parse_report(sc.class_port_info()[1])


def test_collector_interleaves_transactions(net):
    sub, sa = net
    a = ca(sub, 1)
    t1, m1 = sc.node_records()
    t2, m2 = sc.port_info_records()
    r1 = [x for x in sa.handle(m1, req_of(a), 0) if isinstance(x, SaReply)][0].mads
    r2 = [x for x in sa.handle(m2, req_of(a), 0) if isinstance(x, SaReply)][0].mads
    col = sc.SaCollector()
    done = {}
    for i in range(max(len(r1), len(r2))):
        for mads in (r2, r1):
            if i < len(mads):
                resp = col.feed(mads[i])
                if resp is not None:
                    done[resp.tid] = resp
        if i == 3:
            assert set(col.pending()) == {t1, t2}
    assert len(done[t1].records) == 18 and len(done[t2].records) == 12 + 6 * 37
    assert col.pending() == []
    # a request (not a response) is not the collector's business
    assert col.feed(m1) is None


def test_collector_gap_raises_and_forgets(net):
    sub, sa = net
    _, mad = sc.port_info_records()
    mads = [x for x in sa.handle(mad, req_of(ca(sub, 1)), 0) if isinstance(x, SaReply)][0].mads
    col = sc.SaCollector()
    col.feed(mads[0])
    with pytest.raises(RmppError):
        col.feed(mads[2])
    assert col.pending() == []
    col.feed(mads[0])
    col.abandon(w.SAMad.unpack(mads[0]).tid)
    assert col.pending() == []


def test_parse_empty_table_and_error(net):
    sub, sa = net
    resp = ask(sa, ca(sub, 1), sc.path_record_query(None, None, method=w.GET_TABLE, dlid=999)[1])
    assert resp.ok and resp.records == () and resp.header.attr_offset == 0
    resp = ask(sa, ca(sub, 1), sc.path_record_query(None, None)[1])
    assert resp.status == w.SA_ERR_REQ_INSUFFICIENT_COMPONENTS and not resp.ok


def test_tids_are_fresh_and_explicit_tid_kept():
    t1, _ = sc.class_port_info()
    t2, _ = sc.class_port_info()
    assert t2 == t1 + 1
    t, mad = sc.class_port_info(tid=0x1234)
    assert t == 0x1234 and w.SAMad.unpack(mad).tid == 0x1234


def test_client_does_not_import_the_sa_server():
    # in a fresh interpreter: this one has the SA loaded already
    code = "import fabric.mad.saclient, sys; assert 'fabric.sm.sa' not in sys.modules, sorted(sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
