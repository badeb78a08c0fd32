"""SubnetAdministrator driven directly on a Subnet: every attribute, exact statuses and fields."""

from __future__ import annotations

import pytest

from fabric import wire as w
from fabric.mad import saclient
from fabric.sm.mcast import McastManager
from fabric.sm.partitions import default_partitions, parse_partitions
from fabric.mad.rmpp import reassemble
from fabric.sm.sa import (NR_COMP_FULL, PIR_COMP_FULL, GraphPaths, McastChanged, Requester,
                          SaReply, SaReport, SubnetAdministrator)
from fabric.wire import smp_attrs as smp
from fabric.wire.sa_attrs import (MCM_COMP, PR_COMP, ClassPortInfo, InformInfo, MCMemberRecord,
                                  NodeRecord, PathRecord, PortInfoRecord, comp_mask)
from test_sa_net import build_subnet, ca, gid, one_reply, replies, req_of, sa_mad, switch

BCAST = w.ipoib_broadcast_mgid(0xFFFF)
JOIN = comp_mask(MCM_COMP, "mgid", "port_gid", "join_state")
CREATE = comp_mask(MCM_COMP, "mgid", "port_gid", "join_state", "qkey", "pkey", "sl", "flow_label",
                   "tclass")
FULL, NON, SO_NON, SO_FULL = 1, 2, 4, 8


def make(spec="fattree:4,2,3,1", partitions=None, **kw):
    sub = build_subnet(spec, lmc=kw.pop("lmc", 0))
    paths = GraphPaths(sub)
    kw.setdefault("route_hops", paths.route_hops)
    kw.setdefault("link_mtu_rate", paths.link_mtu_rate)
    cfg = partitions if partitions is None or not isinstance(partitions, str) else parse_partitions(partitions)
    sa = SubnetAdministrator(sub, cfg or default_partitions(), McastManager(), **kw)
    return sub, sa


@pytest.fixture
def net():
    return make()


def table(actions, cls):
    (r,) = replies(actions)
    first = w.SAMad.unpack(r.mads[0])
    assert first.method == w.GET_TABLE_RESP and first.status == 0
    payload = reassemble(r.mads)
    if not payload:
        assert first.attr_offset == 0
        return []
    stride = first.attr_offset * 8
    assert stride == (cls.SIZE + 7) & ~7
    return [cls.unpack(payload, i) for i in range(0, len(payload), stride)]


def status_of(actions) -> int:
    return one_reply(actions).status


def path(sa, requester, method=w.GET, **fields):
    names = [n for n in fields if n in PR_COMP]
    return sa.handle(sa_mad(method, w.ATTR_PATH_RECORD, PathRecord(**fields), comp_mask(PR_COMP, *names)),
                     requester, 0.0)


def join(sa, requester, port, mgid=BCAST, state=FULL, mask=JOIN, **fields):
    rec = MCMemberRecord(mgid=mgid, port_gid=gid(port), join_state=state, **fields)
    return sa.handle(sa_mad(w.SET, w.ATTR_MCMEMBER_RECORD, rec, mask), requester, 0.0)


def leave(sa, requester, port, mgid=BCAST, state=FULL, mask=JOIN):
    rec = MCMemberRecord(mgid=mgid, port_gid=gid(port), join_state=state)
    return sa.handle(sa_mad(w.DELETE, w.ATTR_MCMEMBER_RECORD, rec, mask), requester, 0.0)


def subscribe(sa, requester, trap=0xFFFF, on=1, **kw):
    ii = InformInfo(is_generic=1, subscribe=on, type=0xFFFF, trap_num=trap, producer_type=0xFFFFFF,
                    lid_range_begin=kw.pop("lid_begin", 0xFFFF), lid_range_end=kw.pop("lid_end", 0),
                    **kw)
    return sa.handle(sa_mad(w.SET, w.ATTR_INFORM_INFO, ii, sm_key=0), requester, 0.0)


def reports(actions):
    return [a for a in actions if isinstance(a, SaReport)]


def notice_of(report: SaReport):
    mad = w.SAMad.unpack(report.mad)
    assert mad.method == w.REPORT and mad.attr_id == w.ATTR_NOTICE
    return w.Notice.unpack(mad.data)


# -- ClassPortInfo and generic errors --------------------------------------------------------


def test_class_port_info(net):
    sub, sa = net
    r = one_reply(sa.handle(sa_mad(w.GET, w.ATTR_CLASS_PORT_INFO, tid=77), req_of(ca(sub, 3)), 0))
    assert (r.method, r.status, r.tid, r.attr_id, r.sm_key) == (w.GET_RESP, 0, 77, w.ATTR_CLASS_PORT_INFO, 0)
    cpi = ClassPortInfo.unpack(r.data)
    assert (cpi.base_version, cpi.class_version) == (1, 2)
    assert cpi.capability_mask == (1 << 1) | (1 << 9)
    assert cpi.capability_mask2 == 1 << 12
    assert cpi.resp_time_value == 16


@pytest.mark.parametrize("method,attr,status,resp_method", [
    (w.GET, 0x00FF, 0x000C, w.GET_RESP),                         # unknown attribute
    (w.GET_TABLE, w.ATTR_CLASS_PORT_INFO, 0x000C, w.GET_TABLE_RESP),
    (w.SET, w.ATTR_PATH_RECORD, 0x000C, w.GET_RESP),             # read-only record
    (w.DELETE, w.ATTR_NODE_RECORD, 0x000C, w.DELETE_RESP),
    (w.GET, w.ATTR_INFORM_INFO, 0x000C, w.GET_RESP),
    (w.GET, w.ATTR_NOTICE, 0x000C, w.GET_RESP),
    (0x04, w.ATTR_PATH_RECORD, 0x0008, 0x84),                    # no such method
    (w.GET_MULTI, w.ATTR_PATH_RECORD, 0x0008, w.GET_MULTI_RESP),
    (w.GET_TRACE_TABLE, w.ATTR_PATH_RECORD, 0x0008, w.GET_TABLE_RESP),
    (w.REPORT, w.ATTR_NOTICE, 0x0008, w.REPORT_RESP),
    (0x7F, 0x1234, 0x0008, 0xFF),
])
def test_unsupported_method_or_attribute(net, method, attr, status, resp_method):
    sub, sa = net
    r = one_reply(sa.handle(sa_mad(method, attr, tid=5), req_of(ca(sub, 2)), 0))
    assert (r.status, r.method, r.tid, r.attr_id) == (status, resp_method, 5, attr)


def test_bad_versions(net):
    sub, sa = net
    raw = bytearray(sa_mad(w.GET, w.ATTR_CLASS_PORT_INFO, tid=9))
    raw[2] = 1  # class version 1
    r = one_reply(sa.handle(bytes(raw), req_of(ca(sub, 2)), 0))
    assert (r.status, r.method, r.tid, r.class_version) == (0x0004, w.GET_RESP, 9, 1)
    raw[2], raw[0] = 2, 2  # base version 2
    assert one_reply(sa.handle(bytes(raw), req_of(ca(sub, 2)), 0)).status == 0x0004


def test_dropped_silently(net):
    sub, sa = net
    src = req_of(ca(sub, 2))
    good = sa_mad(w.GET, w.ATTR_CLASS_PORT_INFO)
    assert sa.handle(good[:100], src, 0) == []                       # short
    pma = bytearray(good)
    pma[1] = w.CLASS_PERF
    assert sa.handle(bytes(pma), src, 0) == []                      # not SA
    for method in (w.GET_RESP, w.GET_TABLE_RESP, w.SEND, w.TRAP, w.TRAP_REPRESS):
        assert sa.handle(sa_mad(method, w.ATTR_PATH_RECORD), src, 0) == []
    # an RMPP ACK of one of our transfers is a response too
    ack = w.new_mad(w.SAMad, method=w.GET_TABLE_RESP, attr_id=w.ATTR_NODE_RECORD, rmpp_version=1,
                    rmpp_type=w.RMPP_TYPE_ACK, rmpp_flags=1, rmpp_data1=3, rmpp_data2=3)
    assert sa.handle(ack, src, 0) == []


def test_sm_key():
    sub, sa = make(sm_key=0x1234)
    src = req_of(ca(sub, 2))
    assert sa.handle(sa_mad(w.GET, w.ATTR_CLASS_PORT_INFO, sm_key=0x9999), src, 0) == []
    assert sa.stats["bad_sm_key"] == 1
    for key in (0, 0x1234):
        r = one_reply(sa.handle(sa_mad(w.GET, w.ATTR_CLASS_PORT_INFO, sm_key=key), src, 0))
        assert r.status == 0 and r.sm_key == 0   # C15-0.1.5: responses carry SM_Key 0


def test_sm_key_unset_ignores_keys(net):
    sub, sa = net
    r = one_reply(sa.handle(sa_mad(w.GET, w.ATTR_CLASS_PORT_INFO, sm_key=0x9999), req_of(ca(sub, 2)), 0))
    assert r.status == 0


def test_unknown_requester(net):
    sub, sa = net
    assert status_of(path(sa, Requester(lid=999), dgid=gid(ca(sub, 2)))) == w.SA_ERR_REQ_INVALID


def test_multi_segment_request_refused(net):
    sub, sa = net
    mad = sa_mad(w.GET, w.ATTR_PATH_RECORD, PathRecord(dgid=gid(ca(sub, 2))), comp_mask(PR_COMP, "dgid"),
                 rmpp_version=1, rmpp_type=1, rmpp_flags=w.RMPP_FLAG_ACTIVE | w.RMPP_FLAG_FIRST)
    assert status_of(sa.handle(mad, req_of(ca(sub, 1)), 0)) == w.SA_ERR_REQ_INVALID
    single = sa_mad(w.GET, w.ATTR_PATH_RECORD, PathRecord(dgid=gid(ca(sub, 2))), comp_mask(PR_COMP, "dgid"),
                    rmpp_version=1, rmpp_type=1, rmpp_flags=7)
    assert status_of(sa.handle(single, req_of(ca(sub, 1)), 0)) == 0


def test_internal_error_becomes_a_status(net, caplog):
    sub, sa = net

    def boom(a, b):
        raise RuntimeError("routing engine bug")

    sa.route_hops = boom
    acts = path(sa, req_of(ca(sub, 1)), dgid=gid(ca(sub, 5)))
    assert status_of(acts) == w.SA_ERR_NO_RESOURCES
    assert sa.stats["internal_error"] == 1
    assert "routing engine bug" in caplog.text


def test_error_reply_echoes_request(net):
    sub, sa = net
    mad = sa_mad(w.GET_TABLE, w.ATTR_PATH_RECORD, PathRecord(sl=3), comp_mask(PR_COMP, "sl"), tid=0x42)
    r = one_reply(sa.handle(mad, req_of(ca(sub, 1)), 0))
    assert (r.status, r.method, r.tid, r.attr_offset, r.rmpp_flags) == \
        (w.SA_ERR_REQ_INSUFFICIENT_COMPONENTS, w.GET_TABLE_RESP, 0x42, 0, 0)
    assert r.comp_mask == comp_mask(PR_COMP, "sl")
    assert PathRecord.unpack(r.data).sl == 3


# -- PathRecord ------------------------------------------------------------------------------


def test_path_record_get(net):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 12)
    r = one_reply(path(sa, req_of(a), sgid=gid(a), dgid=gid(b)))
    assert (r.method, r.status, r.attr_offset) == (w.GET_RESP, 0, 8)
    pr = PathRecord.unpack(r.data)
    assert (pr.sgid, pr.dgid, pr.slid, pr.dlid) == (gid(a), gid(b), a.lid, b.lid)
    assert (pr.pkey, pr.sl, pr.hop_limit, pr.flow_label, pr.tclass) == (0xFFFF, 0, 0, 0, 0)
    assert (pr.mtu_selector, pr.mtu, pr.rate_selector, pr.rate) == (2, smp.MTU_4096, 2, 3)
    assert (pr.pkt_life_selector, pr.pkt_life) == (2, 0x12)
    assert (pr.reversible, pr.numb_path, pr.preference, pr.raw_traffic) == (1, 0, 0, 0)


def test_path_record_by_lids_source_defaults_to_requester(net):
    sub, sa = net
    a, b = ca(sub, 4), ca(sub, 9)
    pr = PathRecord.unpack(one_reply(path(sa, req_of(a), dlid=b.lid)).data)
    assert (pr.slid, pr.dlid, pr.sgid, pr.dgid) == (a.lid, b.lid, gid(a), gid(b))
    pr = PathRecord.unpack(one_reply(path(sa, req_of(a), slid=b.lid, dlid=a.lid)).data)
    assert (pr.slid, pr.dlid) == (b.lid, a.lid)


def test_path_record_gettable_all_sources(net):
    sub, sa = net
    b = ca(sub, 7)
    recs = table(path(sa, req_of(ca(sub, 1)), w.GET_TABLE, dgid=gid(b)), PathRecord)
    assert len(recs) == 18  # every end port, switches included, and b itself
    assert {r.slid for r in recs} == set(range(1, 19))
    assert all(r.dgid == gid(b) and r.dlid == b.lid for r in recs)
    me = [r for r in recs if r.slid == b.lid][0]
    assert me.pkt_life == 0  # loopback path: packet lifetime 0


def test_path_record_switch_endport(net):
    sub, sa = net
    sw = switch(sub, "spine02").ports[0]
    pr = PathRecord.unpack(one_reply(path(sa, req_of(ca(sub, 1)), dlid=sw.lid)).data)
    assert pr.dgid == gid(sw) and pr.dlid == sw.lid


@pytest.mark.parametrize("fields,status", [
    (dict(sl=0), w.SA_ERR_REQ_INSUFFICIENT_COMPONENTS),           # neither DGID nor DLID
    (dict(sgid="a"), w.SA_ERR_REQ_INSUFFICIENT_COMPONENTS),
    (dict(dgid="x"), w.SA_ERR_REQ_INVALID_GID),                    # unknown GUID
    (dict(dgid="prefix"), w.SA_ERR_REQ_INVALID_GID),               # another subnet's prefix
    (dict(dgid="b", sgid="x"), w.SA_ERR_REQ_INVALID_GID),
    (dict(dlid=900), w.SA_ERR_NO_RECORDS),                         # no such LID
    (dict(dgid="b", dlid="a"), w.SA_ERR_REQ_INVALID),              # DGID and DLID disagree
    (dict(sgid="a", slid="b", dgid="b"), w.SA_ERR_REQ_INVALID),
    (dict(dgid="b", mtu_selector=2, mtu=7), w.SA_ERR_REQ_INVALID),
    (dict(dgid="b", rate_selector=2, rate=1), w.SA_ERR_REQ_INVALID),
])
def test_path_record_errors(net, fields, status):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 5)
    fixed = {}
    for k, v in fields.items():
        if v == "a":
            v = gid(a) if "gid" in k else a.lid
        elif v == "b":
            v = gid(b) if "gid" in k else b.lid
        elif v == "x":
            v = w.make_gid(w.GID_PREFIX_DEFAULT, 0xDEAD)
        elif v == "prefix":
            v = w.make_gid(0xFEC0000000000000, b.gid_guid)
        fixed[k] = v
    assert status_of(path(sa, req_of(a), **fixed)) == status


def test_path_record_half_service_id(net):
    sub, sa = net
    mad = sa_mad(w.GET, w.ATTR_PATH_RECORD, PathRecord(dgid=gid(ca(sub, 2)), service_id=5),
                 comp_mask(PR_COMP, "dgid") | 1)
    assert status_of(sa.handle(mad, req_of(ca(sub, 1)), 0)) == w.SA_ERR_REQ_INSUFFICIENT_COMPONENTS
    mad = sa_mad(w.GET, w.ATTR_PATH_RECORD, PathRecord(dgid=gid(ca(sub, 2)), service_id=5),
                 comp_mask(PR_COMP, "dgid", "service_id"))
    assert PathRecord.unpack(one_reply(sa.handle(mad, req_of(ca(sub, 1)), 0)).data).service_id == 5


def test_path_record_gettable_unknown_lid_is_empty(net):
    sub, sa = net
    assert table(path(sa, req_of(ca(sub, 1)), w.GET_TABLE, dlid=900), PathRecord) == []


def test_path_record_no_route():
    sub, sa = make(route_hops=lambda s, d: None if d.lid == 5 else 2)
    a = ca(sub, 1)
    assert status_of(path(sa, req_of(a), dlid=5)) == w.SA_ERR_NO_RECORDS
    assert status_of(path(sa, req_of(a), dlid=6)) == 0
    recs = table(path(sa, req_of(a), w.GET_TABLE, dlid=5), PathRecord)
    assert [(r.slid, r.dlid) for r in recs] == [(5, 5)]   # only the loopback path is left


def test_path_record_not_reversible():
    sub, sa = make(route_hops=lambda s, d: None if s.lid == 5 else 2)
    a, b = ca(sub, 1), ca(sub, 5)
    pr = PathRecord.unpack(one_reply(path(sa, req_of(a), dgid=gid(b))).data)
    assert pr.reversible == 0
    assert status_of(path(sa, req_of(a), dgid=gid(b), reversible=1)) == w.SA_ERR_NO_RECORDS
    assert status_of(path(sa, req_of(a), dgid=gid(b), reversible=0)) == 0


def test_path_record_mtu_and_rate_from_callable():
    sub, sa = make(link_mtu_rate=lambda s, d: (smp.MTU_1024, 6))
    pr = PathRecord.unpack(one_reply(path(sa, req_of(ca(sub, 1)), dlid=8)).data)
    assert (pr.mtu, pr.rate) == (smp.MTU_1024, 6)


def test_path_record_mtu_is_min_along_path(net):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 12)
    b.remote.neighbor_mtu = smp.MTU_2048   # the leaf port facing b
    sa.on_sweep_done()
    assert PathRecord.unpack(one_reply(path(sa, req_of(a), dgid=gid(b))).data).mtu == smp.MTU_2048
    assert PathRecord.unpack(one_reply(path(sa, req_of(a), dgid=gid(ca(sub, 2)))).data).mtu == smp.MTU_4096


@pytest.mark.parametrize("sel,want,result", [
    ((2, smp.MTU_2048), None, smp.MTU_2048),     # exactly 2048: a 4096 path can carry it
    ((2, smp.MTU_4096), None, smp.MTU_4096),
    ((0, smp.MTU_4096), "none", None),           # greater than 4096
    ((0, smp.MTU_1024), None, smp.MTU_4096),
    ((1, smp.MTU_4096), None, smp.MTU_2048),     # less than 4096: the next lower
    ((1, smp.MTU_256), "none", None),
    ((3, smp.MTU_256), None, smp.MTU_4096),      # largest available
])
def test_path_record_mtu_selector(net, sel, want, result):
    sub, sa = net
    acts = path(sa, req_of(ca(sub, 1)), dlid=9, mtu_selector=sel[0], mtu=sel[1])
    if want == "none":
        assert status_of(acts) == w.SA_ERR_NO_RECORDS
    else:
        assert PathRecord.unpack(one_reply(acts).data).mtu == result


@pytest.mark.parametrize("sel,rate,result", [
    (2, 3, 3), (2, 7, None), (0, 3, None), (0, 5, 3), (1, 7, 3), (1, 3, 5), (1, 2, None), (3, 2, 3),
])
def test_path_record_rate_selector(net, sel, rate, result):
    sub, sa = net
    acts = path(sa, req_of(ca(sub, 1)), dlid=9, rate_selector=sel, rate=rate)
    if result is None:
        assert status_of(acts) == w.SA_ERR_NO_RECORDS
    else:
        assert PathRecord.unpack(one_reply(acts).data).rate == result


def test_path_record_pkt_life_selector(net):
    sub, sa = net
    pr = PathRecord.unpack(one_reply(path(sa, req_of(ca(sub, 1)), dlid=9, pkt_life_selector=1,
                                          pkt_life=10)).data)
    assert pr.pkt_life == 9
    assert status_of(path(sa, req_of(ca(sub, 1)), dlid=9, pkt_life_selector=0, pkt_life=20)) == \
        w.SA_ERR_NO_RECORDS


def test_path_record_numb_path_with_lmc():
    sub, sa = make(lmc=1)
    a, b = ca(sub, 1), ca(sub, 6)
    assert (a.lid, b.lid) == (1, 11)
    recs = table(path(sa, req_of(a), w.GET_TABLE, sgid=gid(a), dgid=gid(b)), PathRecord)
    assert [(r.slid, r.dlid, r.preference) for r in recs] == [(1, 11, 0), (2, 12, 0), (1, 12, 2), (2, 11, 2)]
    recs = table(path(sa, req_of(a), w.GET_TABLE, sgid=gid(a), dgid=gid(b), numb_path=2), PathRecord)
    assert [(r.slid, r.dlid) for r in recs] == [(1, 11), (2, 12)]
    pr = PathRecord.unpack(one_reply(path(sa, req_of(a), sgid=gid(a), dgid=gid(b))).data)
    assert (pr.slid, pr.dlid) == (1, 11)
    pr = PathRecord.unpack(one_reply(path(sa, req_of(a), dlid=12)).data)
    assert (pr.slid, pr.dlid) == (1, 12)


def test_path_record_raw_traffic(net):
    sub, sa = net
    pr = PathRecord.unpack(one_reply(path(sa, req_of(ca(sub, 1)), dlid=9, raw_traffic=1)).data)
    assert (pr.raw_traffic, pr.pkey) == (1, 0)


def test_path_record_multicast(net):
    sub, sa = net
    pr = PathRecord.unpack(one_reply(path(sa, req_of(ca(sub, 1)), dgid=BCAST)).data)
    assert (pr.dgid, pr.dlid, pr.pkey, pr.mtu, pr.rate, pr.sl, pr.hop_limit, pr.numb_path) == \
        (BCAST, 0xC000, 0xFFFF, smp.MTU_2048, 3, 0, 0, 1)
    assert status_of(path(sa, req_of(ca(sub, 1)), dgid=w.ipoib_broadcast_mgid(0x8123))) == \
        w.SA_ERR_NO_RECORDS


# -- partitions at the SA ------------------------------------------------------------------

PARTS = """
Default=0x7fff, ipoib : ALL=limited, SELF=full ;
Red=0x0010, ipoib, sl=3 : {n2}, {n3}, {n4}=full ;
Blue=0x0020 : {n5}=full, {n6}=full ;
"""


def parted():
    sub = build_subnet("fattree:4,2,3,1")
    names = {f"n{i}": f"0x{ca(sub, i).gid_guid:x}" for i in range(1, 13)}
    _, sa = make(partitions=parse_partitions(PARTS.format(**names)))
    sa.subnet = sub
    sa.paths = GraphPaths(sub)
    sa.route_hops, sa.link_mtu_rate = sa.paths.route_hops, sa.paths.link_mtu_rate
    sa.on_sweep_done()
    return sub, sa


def test_limited_members_get_no_path_on_their_partition():
    sub, sa = parted()
    n2, n3, n4 = ca(sub, 2), ca(sub, 3), ca(sub, 4)
    assert status_of(path(sa, req_of(n2), sgid=gid(n2), dgid=gid(n3), pkey=0x8010)) == w.SA_ERR_NO_RECORDS
    assert status_of(path(sa, req_of(n2), sgid=gid(n2), dgid=gid(n3), pkey=0x0010)) == w.SA_ERR_NO_RECORDS
    # nor on any other partition: both are limited in the default too
    assert status_of(path(sa, req_of(n2), sgid=gid(n2), dgid=gid(n3))) == w.SA_ERR_NO_RECORDS
    pr = PathRecord.unpack(one_reply(path(sa, req_of(n2), sgid=gid(n2), dgid=gid(n4))).data)
    assert (pr.pkey, pr.sl) == (0x0010, 3)   # n2's own (limited) P_Key; the partition's SL
    pr = PathRecord.unpack(one_reply(path(sa, req_of(n4), sgid=gid(n4), dgid=gid(n2))).data)
    assert pr.pkey == 0x8010
    pr = PathRecord.unpack(one_reply(path(sa, req_of(n2), dgid=gid(n4), pkey=0x8010)).data)
    assert pr.pkey == 0x8010


def test_no_path_across_partitions():
    sub, sa = parted()
    n2, n5, n6, sm = ca(sub, 2), ca(sub, 5), ca(sub, 6), ca(sub, 1)
    assert status_of(path(sa, req_of(n2), dgid=gid(n5))) == w.SA_ERR_NO_RECORDS
    assert status_of(path(sa, req_of(n5), dgid=gid(n2), pkey=0x8020)) == w.SA_ERR_NO_RECORDS
    pr = PathRecord.unpack(one_reply(path(sa, req_of(n5), dgid=gid(n6))).data)
    assert pr.pkey == 0x8020
    # everyone reaches the SM's port through the default partition
    pr = PathRecord.unpack(one_reply(path(sa, req_of(n5), dgid=gid(sm))).data)
    assert pr.pkey == 0x7FFF
    # a requester must share a partition with both ends
    assert status_of(path(sa, req_of(n2), sgid=gid(n5), dgid=gid(n6))) == w.SA_ERR_NO_RECORDS
    # the table a limited member gets holds only the ports it may talk to
    n4 = ca(sub, 4)
    recs = table(path(sa, req_of(n2), w.GET_TABLE, dgid=gid(n4)), PathRecord)
    assert {r.slid for r in recs} == {n2.lid, n4.lid, sm.lid}   # not n3: both limited


def test_node_records_visible_only_through_a_shared_partition():
    sub, sa = parted()
    n2 = ca(sub, 2)
    recs = table(sa.handle(sa_mad(w.GET_TABLE, w.ATTR_NODE_RECORD), req_of(n2), 0), NodeRecord)
    assert sorted(r.lid for r in recs) == sorted([ca(sub, 1).lid, n2.lid, ca(sub, 4).lid])


# -- MCMemberRecord --------------------------------------------------------------------------


def test_join_broadcast_group(net):
    sub, sa = net
    a = ca(sub, 3)
    acts = join(sa, req_of(a), a)
    r = one_reply(acts)
    assert (r.method, r.status, r.attr_offset) == (w.GET_RESP, 0, 7)
    rec = MCMemberRecord.unpack(r.data)
    assert (rec.mgid, rec.port_gid, rec.qkey, rec.mlid, rec.pkey) == (BCAST, gid(a), 0x0B1B, 0xC000, 0xFFFF)
    assert (rec.mtu_selector, rec.mtu, rec.rate_selector, rec.rate) == (2, smp.MTU_2048, 2, 3)
    assert (rec.pkt_life_selector, rec.pkt_life, rec.sl, rec.scope, rec.join_state) == (2, 0x12, 0, 2, 1)
    assert McastChanged(0xC000) in acts
    leaf = switch(sub, "leaf01")
    assert sa.mcast.mft_for(sub, sa.mcast.get(BCAST)) == {leaf.guid: 1 << 3}
    acts = join(sa, req_of(a), a)                 # again: nothing changes
    assert status_of(acts) == 0 and not [x for x in acts if isinstance(x, McastChanged)]


def test_join_that_changes_no_role_emits_nothing(net):
    """McastChanged comes with a change of a member's role (receiver, sender only, none): the SM
    recomputes the group's tree once per batch and writes only what differs. A join that changes
    no role (the same state again) emits nothing."""
    sub, sa = net
    for i in (1, 2):
        join(sa, req_of(ca(sub, i)), ca(sub, i))
    acts = join(sa, req_of(ca(sub, 2)), ca(sub, 2))                 # the same state again
    assert status_of(acts) == 0 and [a for a in acts if isinstance(a, McastChanged)] == []
    acts = join(sa, req_of(ca(sub, 3)), ca(sub, 3), state=SO_NON)   # sender only: a new role
    assert status_of(acts) == 0 and McastChanged(0xC000) in acts
    acts = join(sa, req_of(ca(sub, 3)), ca(sub, 3), state=NON)      # now a receiver
    assert McastChanged(0xC000) in acts


@pytest.mark.parametrize("fields,mask,status", [
    (dict(), comp_mask(MCM_COMP, "mgid", "port_gid"), w.SA_ERR_REQ_INSUFFICIENT_COMPONENTS),
    (dict(state=0), JOIN, w.SA_ERR_REQ_INVALID),
    (dict(qkey=0x1234), JOIN | comp_mask(MCM_COMP, "qkey"), w.SA_ERR_REQ_INVALID),
    (dict(qkey=0x0B1B), JOIN | comp_mask(MCM_COMP, "qkey"), 0),
    (dict(pkey=0x8001), JOIN | comp_mask(MCM_COMP, "pkey"), w.SA_ERR_REQ_INVALID),
    (dict(pkey=0x7FFF), JOIN | comp_mask(MCM_COMP, "pkey"), 0),  # one of the two is full
    (dict(pkey=0x8000), JOIN | comp_mask(MCM_COMP, "pkey"), w.SA_ERR_REQ_INVALID),
    (dict(sl=1), JOIN | comp_mask(MCM_COMP, "sl"), w.SA_ERR_REQ_INVALID),
    (dict(tclass=1), JOIN | comp_mask(MCM_COMP, "tclass"), w.SA_ERR_REQ_INVALID),
    (dict(flow_label=1), JOIN | comp_mask(MCM_COMP, "flow_label"), w.SA_ERR_REQ_INVALID),
    (dict(hop_limit=1), JOIN | comp_mask(MCM_COMP, "hop_limit"), w.SA_ERR_REQ_INVALID),
    (dict(mtu_selector=2, mtu=4), JOIN | comp_mask(MCM_COMP, "mtu_selector", "mtu"), 0),
    (dict(mtu_selector=2, mtu=5), JOIN | comp_mask(MCM_COMP, "mtu_selector", "mtu"), w.SA_ERR_REQ_INVALID),
    (dict(mtu_selector=1, mtu=5), JOIN | comp_mask(MCM_COMP, "mtu_selector", "mtu"), 0),
    (dict(mtu_selector=2, mtu=7), JOIN | comp_mask(MCM_COMP, "mtu_selector", "mtu"), w.SA_ERR_REQ_INVALID),
    (dict(rate_selector=2, rate=3), JOIN | comp_mask(MCM_COMP, "rate_selector", "rate"), 0),
    (dict(rate_selector=0, rate=3), JOIN | comp_mask(MCM_COMP, "rate_selector", "rate"), w.SA_ERR_REQ_INVALID),
    (dict(rate_selector=2, rate=0), JOIN | comp_mask(MCM_COMP, "rate_selector", "rate"), w.SA_ERR_REQ_INVALID),
])
def test_join_component_checks(net, fields, mask, status):
    sub, sa = net
    a = ca(sub, 2)
    state = fields.pop("state", FULL)
    assert status_of(join(sa, req_of(a), a, state=state, mask=mask, **fields)) == status


def test_join_bad_port_gid(net):
    sub, sa = net
    a = ca(sub, 2)
    rec = MCMemberRecord(mgid=BCAST, port_gid=w.make_gid(w.GID_PREFIX_DEFAULT, 0xBAD), join_state=1)
    assert status_of(sa.handle(sa_mad(w.SET, w.ATTR_MCMEMBER_RECORD, rec, JOIN), req_of(a), 0)) == \
        w.SA_ERR_REQ_INVALID
    rec = rec.replace(port_gid=w.make_gid(0x1234, a.gid_guid))
    assert status_of(sa.handle(sa_mad(w.SET, w.ATTR_MCMEMBER_RECORD, rec, JOIN), req_of(a), 0)) == \
        w.SA_ERR_REQ_INVALID_GID


def test_join_port_rate_and_mtu_too_small(net):
    sub, sa = net
    a = ca(sub, 2)
    a.neighbor_mtu = smp.MTU_1024
    assert status_of(join(sa, req_of(a), a)) == w.SA_ERR_REQ_INVALID
    a.neighbor_mtu = smp.MTU_4096
    a.width_active = smp.WIDTH_1X   # 2.5 Gb/s < the group's 10
    assert status_of(join(sa, req_of(a), a)) == w.SA_ERR_REQ_INVALID


def test_create_group_with_sa_assigned_mgid(net):
    sub, sa = net
    a = ca(sub, 5)
    acts = join(sa, req_of(a), a, mgid=bytes(16), mask=CREATE, qkey=0x11, pkey=0xFFFF, sl=0,
                flow_label=0, tclass=0)
    rec = MCMemberRecord.unpack(one_reply(acts).data)
    assert rec.mgid == bytes.fromhex("ff12a01bfe8000000000000000000001")
    assert (rec.mlid, rec.qkey, rec.mtu, rec.rate, rec.join_state) == (0xC001, 0x11, smp.MTU_4096, 3, 1)
    assert McastChanged(0xC001) in acts
    assert sa.mcast.get(rec.mgid).members == {gid(a): FULL}


def test_create_with_scope_and_requested_mlid_and_mtu(net):
    sub, sa = net
    a = ca(sub, 5)
    mask = CREATE | comp_mask(MCM_COMP, "scope", "mlid", "mtu_selector", "mtu", "rate_selector", "rate")
    rec = MCMemberRecord.unpack(one_reply(join(
        sa, req_of(a), a, mgid=bytes(16), mask=mask, qkey=1, pkey=0xFFFF, scope=5, mlid=0xC123,
        mtu_selector=1, mtu=smp.MTU_4096, rate_selector=2, rate=3)).data)
    assert rec.mgid[:2] == b"\xff\x15" and rec.mlid == 0xC123 and rec.mtu == smp.MTU_2048
    assert rec.rate == 3 and rec.scope == 5


@pytest.mark.parametrize("mgid,state,mask,status", [
    (bytes.fromhex("ff12a01b000000000000000000000099"), FULL, CREATE, w.SA_ERR_REQ_INVALID),  # o15-0.1.5
    (bytes.fromhex("ff12e01b000000000000000000000099"), FULL, JOIN, w.SA_ERR_REQ_INSUFFICIENT_COMPONENTS),
    (bytes.fromhex("ff12e01b000000000000000000000099"), NON, CREATE, w.SA_ERR_REQ_INVALID),
    (bytes.fromhex("ff12e01b000000000000000000000099"), SO_FULL, CREATE, 0),
    (bytes.fromhex("ff15a01b000000000000000000000099"), FULL, CREATE, 0),
    (bytes.fromhex("fe800000000000000000000000000099"), FULL, CREATE, w.SA_ERR_REQ_INVALID),
    (bytes.fromhex("ff320000000000000000000000000099"), FULL, CREATE, w.SA_ERR_REQ_INVALID),
    (bytes.fromhex("ff12401bffff0000000000000a000001"), FULL, CREATE, 0),     # IPv4 group
    (bytes.fromhex("ff12401b80100000000000000a000001"), FULL, CREATE, w.SA_ERR_REQ_INVALID),  # no broadcast
])
def test_create_group_rules(net, mgid, state, mask, status):
    sub, sa = net
    a = ca(sub, 5)
    acts = join(sa, req_of(a), a, mgid=mgid, state=state, mask=mask, qkey=0x0B1B, pkey=0xFFFF)
    assert status_of(acts) == status
    assert (sa.mcast.get(mgid) is not None) == (status == 0)


def test_ipoib_group_must_match_broadcast(net):
    sub, sa = net
    a = ca(sub, 5)
    mgid = bytes.fromhex("ff12401bffff0000000000000a000001")
    assert status_of(join(sa, req_of(a), a, mgid=mgid, mask=CREATE, qkey=0x1234, pkey=0xFFFF)) == \
        w.SA_ERR_REQ_INVALID


def test_partition_rules_for_joins():
    sub, sa = parted()
    n2, n4, n5 = ca(sub, 2), ca(sub, 4), ca(sub, 5)
    red = w.ipoib_broadcast_mgid(0x8010)
    assert status_of(join(sa, req_of(n2), n2, mgid=red)) == 0     # limited members may join
    assert status_of(join(sa, req_of(n5), n5, mgid=red)) == w.SA_ERR_REQ_INVALID   # not in Red
    new = bytes.fromhex("ff12e01b000000000000000000000042")
    assert status_of(join(sa, req_of(n2), n2, mgid=new, mask=CREATE, qkey=1, pkey=0x8010)) == \
        w.SA_ERR_REQ_INVALID                                       # a limited member cannot create
    assert status_of(join(sa, req_of(n4), n4, mgid=new, mask=CREATE, qkey=1, pkey=0x8010)) == 0


def test_proxy_join_and_modify_rules(net):
    sub, sa = net
    a, b, c = ca(sub, 1), ca(sub, 2), ca(sub, 3)
    assert status_of(join(sa, req_of(a), b)) == 0                  # a joins b by proxy
    g = sa.mcast.get(BCAST)
    assert g.proxy[gid(b)] is True
    assert status_of(leave(sa, req_of(c), b)) == 0                 # proxy record: any partition member
    assert status_of(join(sa, req_of(c), c)) == 0
    assert status_of(join(sa, req_of(a), c, state=NON)) == w.SA_ERR_REQ_INVALID   # c's own record
    assert status_of(leave(sa, req_of(a), c)) == w.SA_ERR_REQ_INVALID


def test_proxy_join_needs_a_shared_partition():
    sub, sa = parted()
    n2, n5 = ca(sub, 2), ca(sub, 5)
    blue_grp = bytes.fromhex("ff12e01b000000000000000000000077")
    assert status_of(join(sa, req_of(n2), n5, mgid=blue_grp, mask=CREATE, qkey=1, pkey=0x8020)) == \
        w.SA_ERR_REQ_INVALID


def test_leave(net):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 12)
    join(sa, req_of(a), a, state=FULL | NON)
    join(sa, req_of(b), b)
    acts = leave(sa, req_of(a), a, state=FULL)
    r = one_reply(acts)
    assert (r.method, r.status) == (w.DELETE_RESP, 0)
    assert MCMemberRecord.unpack(r.data).join_state == NON
    assert [x for x in acts if isinstance(x, McastChanged)] == []  # still a receiver
    acts = leave(sa, req_of(a), a, state=NON)
    assert MCMemberRecord.unpack(one_reply(acts).data).join_state == 0
    assert McastChanged(0xC000) in acts
    assert gid(a) not in sa.mcast.get(BCAST).members


@pytest.mark.parametrize("case,status", [
    ("bits_not_held", w.SA_ERR_REQ_INVALID), ("no_group", w.SA_ERR_REQ_INVALID),
    ("not_member", w.SA_ERR_REQ_INVALID), ("no_join_state", w.SA_ERR_REQ_INSUFFICIENT_COMPONENTS),
    ("zero_state", w.SA_ERR_REQ_INVALID), ("bad_prefix", w.SA_ERR_REQ_INVALID_GID),
])
def test_leave_errors(net, case, status):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 2)
    join(sa, req_of(a), a, state=FULL)
    if case == "bits_not_held":
        acts = leave(sa, req_of(a), a, state=FULL | NON)
    elif case == "no_group":
        acts = leave(sa, req_of(a), a, mgid=bytes.fromhex("ff12e01b000000000000000000000001"))
    elif case == "not_member":
        acts = leave(sa, req_of(b), b)
    elif case == "no_join_state":
        acts = leave(sa, req_of(a), a, mask=comp_mask(MCM_COMP, "mgid", "port_gid"))
    elif case == "zero_state":
        acts = leave(sa, req_of(a), a, state=0)
    else:
        rec = MCMemberRecord(mgid=BCAST, port_gid=w.make_gid(0x99, a.gid_guid), join_state=1)
        acts = sa.handle(sa_mad(w.DELETE, w.ATTR_MCMEMBER_RECORD, rec, JOIN), req_of(a), 0)
    assert status_of(acts) == status


def test_last_full_member_deletes_group_and_frees_mlid(net):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 12)
    subscribe(sa, req_of(ca(sub, 6)), trap=0xFFFF)
    new = bytes.fromhex("ff12e01b0000000000000000000000aa")
    acts = join(sa, req_of(a), a, mgid=new, mask=CREATE, qkey=5, pkey=0xFFFF)
    (rep66,) = reports(acts)
    n = notice_of(rep66)
    assert (n.trap_num, n.data_details[6:22]) == (66, new)
    join(sa, req_of(b), b, mgid=new, state=NON)
    acts = leave(sa, req_of(a), a, mgid=new)
    assert sa.mcast.get(new) is None
    assert McastChanged(0xC001) in acts
    (rep67,) = reports(acts)
    n = notice_of(rep67)
    assert (n.trap_num, n.data_details[6:22], n.issuer_lid) == (67, new, ca(sub, 1).lid)
    acts = join(sa, req_of(a), a, mgid=bytes(16), mask=CREATE, qkey=5, pkey=0xFFFF)
    assert MCMemberRecord.unpack(one_reply(acts).data).mlid == 0xC001   # reused


def test_sm_group_persists_and_reports_66_67(net):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 2)
    subscribe(sa, req_of(b), trap=66)
    subscribe(sa, req_of(b), trap=67)
    acts = join(sa, req_of(a), a)
    assert [notice_of(r).trap_num for r in reports(acts)] == [66]
    assert reports(join(sa, req_of(b), b, state=NON)) == []
    acts = leave(sa, req_of(a), a)
    assert [notice_of(r).trap_num for r in reports(acts)] == [67]
    g = sa.mcast.get(BCAST)
    assert g is not None and g.members == {} and g.mlid == 0xC000
    assert McastChanged(0xC000) in acts


def test_mcmember_queries_untrusted(net):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 2)
    join(sa, req_of(a), a)
    join(sa, req_of(a), a, mgid=bytes(16), mask=CREATE, qkey=9, pkey=0xFFFF)
    recs = table(sa.handle(sa_mad(w.GET_TABLE, w.ATTR_MCMEMBER_RECORD), req_of(b), 0), MCMemberRecord)
    assert [r.mlid for r in recs] == [0xC000, 0xC001]   # in MGID order
    assert all(r.port_gid == bytes(16) and r.join_state == 0 and r.proxy_join == 0 for r in recs)
    mad = sa_mad(w.GET, w.ATTR_MCMEMBER_RECORD, MCMemberRecord(mlid=0xC000), comp_mask(MCM_COMP, "mlid"))
    r = MCMemberRecord.unpack(one_reply(sa.handle(mad, req_of(b), 0)).data)
    assert (r.mgid, r.qkey) == (BCAST, 0x0B1B)
    mad = sa_mad(w.GET, w.ATTR_MCMEMBER_RECORD, MCMemberRecord(mlid=0xC0FF), comp_mask(MCM_COMP, "mlid"))
    assert status_of(sa.handle(mad, req_of(b), 0)) == w.SA_ERR_NO_RECORDS
    mad = sa_mad(w.GET, w.ATTR_MCMEMBER_RECORD)
    assert status_of(sa.handle(mad, req_of(b), 0)) == w.SA_ERR_TOO_MANY_RECORDS
    mad = sa_mad(w.GET_TABLE, w.ATTR_MCMEMBER_RECORD, MCMemberRecord(port_gid=gid(b)),
                 comp_mask(MCM_COMP, "port_gid"))
    assert table(sa.handle(mad, req_of(b), 0), MCMemberRecord) == []
    mad = sa_mad(w.GET_TABLE, w.ATTR_MCMEMBER_RECORD, MCMemberRecord(port_gid=gid(a)),
                 comp_mask(MCM_COMP, "port_gid"))
    assert len(table(sa.handle(mad, req_of(b), 0), MCMemberRecord)) == 2


def test_mcmember_queries_trusted():
    sub, sa = make(sm_key=0xC0FFEE)
    a, b = ca(sub, 1), ca(sub, 2)
    join(sa, req_of(a), a, state=FULL)
    join(sa, req_of(b), b, state=NON)
    mad = sa_mad(w.GET_TABLE, w.ATTR_MCMEMBER_RECORD, MCMemberRecord(mgid=BCAST),
                 comp_mask(MCM_COMP, "mgid"), sm_key=0xC0FFEE)
    recs = table(sa.handle(mad, req_of(b), 0), MCMemberRecord)
    assert sorted((r.port_gid, r.join_state) for r in recs) == sorted([(gid(a), FULL), (gid(b), NON)])
    mad = sa_mad(w.GET_TABLE, w.ATTR_MCMEMBER_RECORD, MCMemberRecord(mgid=BCAST, join_state=NON),
                 comp_mask(MCM_COMP, "mgid", "join_state"), sm_key=0xC0FFEE)
    assert [r.port_gid for r in table(sa.handle(mad, req_of(b), 0), MCMemberRecord)] == [gid(b)]


def test_mcmember_query_hides_other_partitions():
    sub, sa = parted()
    n5 = ca(sub, 5)
    recs = table(sa.handle(sa_mad(w.GET_TABLE, w.ATTR_MCMEMBER_RECORD), req_of(n5), 0), MCMemberRecord)
    assert [r.pkey for r in recs] == [0xFFFF]        # the Red broadcast group is invisible to n5
    recs = table(sa.handle(sa_mad(w.GET_TABLE, w.ATTR_MCMEMBER_RECORD), req_of(ca(sub, 2)), 0),
                 MCMemberRecord)
    assert sorted(r.pkey for r in recs) == [0x8010, 0xFFFF]


# -- NodeRecord / PortInfoRecord ------------------------------------------------------------


def test_node_records(net):
    sub, sa = net
    a = ca(sub, 1)
    recs = table(sa.handle(sa_mad(w.GET_TABLE, w.ATTR_NODE_RECORD), req_of(a), 0), NodeRecord)
    assert len(recs) == 18
    assert sorted(r.lid for r in recs) == list(range(1, 19))
    r6 = [r for r in recs if r.lid == ca(sub, 6).lid][0]
    ni = r6.node_info
    assert (ni.node_type, ni.num_ports, ni.port_guid, ni.local_port) == (1, 1, ca(sub, 6).gid_guid, 1)
    assert r6.node_desc.description == "node0006"
    sw = [r for r in recs if r.node_desc.description == "spine01"][0]
    assert (sw.node_info.node_type, sw.node_info.num_ports) == (2, 36)


@pytest.mark.parametrize("field,value,expect", [
    ("lid", 7, ["node0007"]),
    ("node_guid", "guid7", ["node0007"]),
    ("port_guid", "guid7", ["node0007"]),
    ("node_desc", "leaf02", ["leaf02"]),
    ("node_type", 2, None),
    ("num_ports", 1, None),
    ("lid", 999, []),
])
def test_node_record_component_masks(net, field, value, expect):
    sub, sa = net
    a = ca(sub, 1)
    ni, desc, lid = {}, "", 0
    if value == "guid7":
        value = ca(sub, 7).gid_guid if field == "port_guid" else ca(sub, 7).node.guid
    if field == "lid":
        lid = value
    elif field == "node_desc":
        desc = value
    else:
        ni[field] = value
    rec = NodeRecord(lid=lid, node_info=smp.NodeInfo(**ni), node_desc=smp.NodeDescription(description=desc))
    mad = sa_mad(w.GET_TABLE, w.ATTR_NODE_RECORD, rec, 1 << NR_COMP_FULL[field])
    names = sorted(r.node_desc.description for r in table(sa.handle(mad, req_of(a), 0), NodeRecord))
    if expect is None:
        expect = sorted(n.desc for n in sub.nodes.values()
                        if (field == "node_type" and n.is_switch) or (field == "num_ports" and not n.is_switch))
    assert names == expect
    get = sa.handle(sa_mad(w.GET, w.ATTR_NODE_RECORD, rec, 1 << NR_COMP_FULL[field]), req_of(a), 0)
    assert status_of(get) == (0 if len(expect) == 1 else
                              w.SA_ERR_NO_RECORDS if not expect else w.SA_ERR_TOO_MANY_RECORDS)


def test_node_record_lid_in_lmc_range():
    sub, sa = make(lmc=2)
    b = ca(sub, 3)
    rec = NodeRecord(lid=b.lid + 3)
    r = one_reply(sa.handle(sa_mad(w.GET, w.ATTR_NODE_RECORD, rec, 1), req_of(ca(sub, 1)), 0))
    assert NodeRecord.unpack(r.data).lid == b.lid


def test_702_node_records_reassemble():
    sub = build_subnet("fattree:36,18,18,1")
    sa = SubnetAdministrator(sub)
    assert len(sub.nodes) == 702
    _, mad = saclient.node_records()
    (reply,) = replies(sa.handle(mad, req_of(ca(sub, 1)), 0))
    assert len(reply.mads) == -(-702 * 112 // 200) == 394
    resp = saclient.parse_response(list(reply.mads))
    assert resp.ok and len(resp.records) == 702
    assert len({r.node_info.port_guid for r in resp.records}) == 702
    assert {r.node_desc.description for r in resp.records} >= {"node0648", "leaf36", "spine18"}


def test_port_info_records(net):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 4)
    rec = PortInfoRecord(lid=b.lid, port_num=1)
    mask = 1 << PIR_COMP_FULL["lid"] | 1 << PIR_COMP_FULL["port_num"]
    r = PortInfoRecord.unpack(one_reply(sa.handle(sa_mad(w.GET, w.ATTR_PORT_INFO_RECORD, rec, mask),
                                                  req_of(a), 0)).data)
    pi = r.port_info
    assert (r.lid, r.port_num, pi.lid, pi.local_port, pi.port_state) == (b.lid, 1, b.lid, 1, smp.PORT_ACTIVE)
    assert (pi.mtu_cap, pi.link_width_active, pi.master_sm_lid) == (smp.MTU_4096, smp.WIDTH_4X, a.lid)
    leaf = switch(sub, "leaf03")
    mad = sa_mad(w.GET_TABLE, w.ATTR_PORT_INFO_RECORD, PortInfoRecord(lid=leaf.lid), 1)
    recs = table(sa.handle(mad, req_of(a), 0), PortInfoRecord)
    assert [x.port_num for x in recs] == list(range(0, 37))
    assert {x.lid for x in recs} == {leaf.lid}
    all_recs = table(sa.handle(sa_mad(w.GET_TABLE, w.ATTR_PORT_INFO_RECORD), req_of(a), 0), PortInfoRecord)
    assert len(all_recs) == 12 + 6 * 37
    down = leaf.ports[20]
    mad = sa_mad(w.GET_TABLE, w.ATTR_PORT_INFO_RECORD,
                 PortInfoRecord(lid=leaf.lid, port_info=smp.PortInfo(port_state=smp.PORT_DOWN)),
                 1 | 1 << PIR_COMP_FULL["port_state"])
    assert down.state == smp.PORT_DOWN
    assert len(table(sa.handle(mad, req_of(a), 0), PortInfoRecord)) == 36 - 3 - 2


def test_port_info_record_m_key_only_for_trusted():
    sub, sa = make(sm_key=0x77)
    a = ca(sub, 2)
    a.info = smp.PortInfo(m_key=0x1122334455667788, lid=a.lid)
    mask = 1 << PIR_COMP_FULL["lid"]
    for key, expect in ((0, 0), (0x77, 0x1122334455667788)):
        mad = sa_mad(w.GET, w.ATTR_PORT_INFO_RECORD, PortInfoRecord(lid=a.lid), mask, sm_key=key)
        r = PortInfoRecord.unpack(one_reply(sa.handle(mad, req_of(a), 0)).data)
        assert r.port_info.m_key == expect


# -- InformInfo, Reports ---------------------------------------------------------------------


def test_subscribe_and_gid_in_service_report(net):
    sub, sa = net
    s, newcomer = ca(sub, 3), ca(sub, 9)
    acts = subscribe(sa, Requester(lid=s.lid, qpn=0x48, pkey=0xFFFF), trap=64)
    r = one_reply(acts)
    assert (r.method, r.status) == (w.GET_RESP, 0)
    assert InformInfo.unpack(r.data).subscribe == 1
    (rep,) = sa.gid_in_service(newcomer, now=10.0)
    assert rep.dest == Requester(lid=s.lid, qpn=0x48, pkey=0xFFFF)
    mad = w.SAMad.unpack(rep.mad)
    assert (mad.method, mad.attr_id, mad.class_version, mad.status) == (w.REPORT, w.ATTR_NOTICE, 2, 0)
    n = w.Notice.unpack(mad.data)
    assert (n.is_generic, n.type, n.producer_type, n.trap_num) == (1, 3, 4, 64)
    assert n.issuer_lid == ca(sub, 1).lid and n.issuer_gid == gid(ca(sub, 1))
    assert n.data_details[:6] == bytes(6) and n.data_details[6:22] == gid(newcomer)
    assert w.SAMad.unpack(rep.mad).data[16:32] == gid(newcomer)  # Notice octets 16..31
    assert sa.gid_out_of_service(newcomer) == []                 # not subscribed to 65


def test_report_retries_until_report_resp(net):
    sub, sa = net
    s = ca(sub, 3)
    subscribe(sa, req_of(s))
    (rep,) = sa.gid_in_service(ca(sub, 4), now=0.0)
    assert sa.next_timer() == 1.0
    assert sa.tick(0.5) == []
    assert sa.tick(1.0) == [rep]
    assert sa.tick(2.0) == [rep]
    assert sa.tick(3.0) == []            # three sends, then given up
    assert sa.pending_reports == {}
    (rep,) = sa.gid_in_service(ca(sub, 4), now=5.0)
    assert sa.handle(saclient.report_response(rep.mad), req_of(s), 5.1) == []
    assert sa.pending_reports == {} and sa.tick(10.0) == []


def test_subscription_filters(net):
    sub, sa = net
    s = ca(sub, 3)
    subscribe(sa, req_of(s), trap=65)
    assert sa.gid_in_service(ca(sub, 4)) == []
    assert len(sa.gid_out_of_service(ca(sub, 4))) == 1
    subscribe(sa, req_of(s), trap=65, on=0)
    assert sa.gid_out_of_service(ca(sub, 4)) == []
    # a subscription by GID hears about that GID only (or about the SM's)
    subscribe(sa, req_of(s), trap=0xFFFF, gid=gid(ca(sub, 7)))
    assert sa.gid_in_service(ca(sub, 4)) == []
    assert len(sa.gid_in_service(ca(sub, 7))) == 1
    # a LID range covering the subject
    sa.subscriptions.clear()
    subscribe(sa, req_of(s), trap=0xFFFF, lid_begin=8, lid_end=9)
    assert sa.gid_in_service(ca(sub, 4)) == [] and len(sa.gid_in_service(ca(sub, 9))) == 1


@pytest.mark.parametrize("kw,status", [
    (dict(on=2), w.SA_ERR_REQ_INVALID),
    (dict(trap=256), w.SA_ERR_REQ_INVALID),             # security trap, untrusted
    (dict(gid=w.make_gid(w.GID_PREFIX_DEFAULT, 0xBAD)), w.SA_ERR_REQ_INVALID),
    (dict(lid_begin=9, lid_end=3), w.SA_ERR_REQ_INVALID),
    (dict(on=0), w.SA_ERR_REQ_INVALID),                 # unsubscribe what was never subscribed
    (dict(trap=64), 0),
])
def test_inform_info_errors(net, kw, status):
    sub, sa = net
    r = one_reply(subscribe(sa, req_of(ca(sub, 2)), **kw))
    assert r.status == status
    if status:
        assert InformInfo.unpack(r.data).subscribe == 0   # o13-13.1.1


def test_security_trap_subscription_needs_sm_key():
    sub, sa = make(sm_key=5)
    ii = InformInfo(is_generic=1, subscribe=1, type=0xFFFF, trap_num=256, producer_type=0xFFFFFF,
                    lid_range_begin=0xFFFF)
    assert status_of(sa.handle(sa_mad(w.SET, w.ATTR_INFORM_INFO, ii, sm_key=5), req_of(ca(sub, 2)), 0)) == 0


def test_reports_respect_partitions():
    sub, sa = parted()
    n2, n5, n6 = ca(sub, 2), ca(sub, 5), ca(sub, 6)
    subscribe(sa, req_of(n2), trap=0xFFFF)
    subscribe(sa, req_of(n5), trap=0xFFFF, lid_begin=1, lid_end=100)
    assert [r.dest.lid for r in sa.gid_in_service(ca(sub, 4))] == [n2.lid]   # n5 shares nothing
    assert len(sa.subscriptions) == 1                                        # o13-17.1.2
    subscribe(sa, req_of(n5), trap=0xFFFF)
    acts = join(sa, req_of(n6), n6, mgid=bytes.fromhex("ff12e01b000000000000000000000020"),
                mask=CREATE, qkey=1, pkey=0x8020)
    assert [r.dest.lid for r in reports(acts)] == [n5.lid]   # only Blue members hear about it
    assert [r.dest.lid for r in sa.gid_in_service(n6)] == [n5.lid]


def test_gid_out_of_service_leaves_groups_and_drops_subscriptions(net):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 12)
    join(sa, req_of(a), a)
    join(sa, req_of(b), b)
    subscribe(sa, req_of(b), trap=0xFFFF)
    acts = sa.gid_out_of_service(b)
    assert McastChanged(0xC000) in acts
    assert [notice_of(r).trap_num for r in reports(acts)] == [65]
    assert gid(b) not in sa.mcast.get(BCAST).members
    assert sa.subscriptions == []


def test_sweep_drops_members_of_vanished_ports(net):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 12)
    join(sa, req_of(a), a)
    join(sa, req_of(b), b)
    leaf = b.remote
    leaf.remote = None
    del sub.nodes[b.node.guid]
    acts = sa.on_sweep_done()
    assert acts == [McastChanged(0xC000)]
    assert list(sa.mcast.get(BCAST).members) == [gid(a)]


def test_path_record_after_lid_change(net):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 5)
    b.lid = 200
    sa.on_sweep_done()
    pr = PathRecord.unpack(one_reply(path(sa, req_of(a), dgid=gid(b))).data)
    assert pr.dlid == 200
    b.lid = 201  # not told: the SA notices the stale index by itself
    assert PathRecord.unpack(one_reply(path(sa, req_of(a), dlid=201)).data).dgid == gid(b)


def test_replies_are_frozen_and_addressed(net):
    sub, sa = net
    src = Requester(lid=ca(sub, 2).lid, qpn=0x99, pkey=0x7FFF)
    (r,) = sa.handle(sa_mad(w.GET, w.ATTR_CLASS_PORT_INFO), src, 0)
    assert isinstance(r, SaReply) and r.dest is src and isinstance(r.mads, tuple)
    with pytest.raises(Exception):
        r.dest = None


def test_mft_updates_for_the_sm(net):
    sub, sa = net
    a, b = ca(sub, 1), ca(sub, 12)
    join(sa, req_of(a), a)
    acts = join(sa, req_of(b), b)
    (chg,) = [x for x in acts if isinstance(x, McastChanged)]
    upd = sa.mft_updates(chg.mlid)
    assert upd == sa.mcast.mft_for(sub, sa.mcast.get(BCAST)) and len(upd) == 3
    for guid, mask in upd.items():          # what the SM core does after writing the MFT blocks
        sub.nodes[guid].mft[chg.mlid] = mask
    assert sa.all_mfts() == {g: {0xC000: m} for g, m in upd.items()}
    acts = leave(sa, req_of(b), b)
    upd = sa.mft_updates(0xC000)
    assert sorted(upd.values()).count(0) == 2     # the spine and leaf04 are cleared
    assert upd[switch(sub, "leaf01").guid] == 0b10


def test_subnet_can_be_replaced_and_ports_named_by_guid():
    sub, sa = make(route_hops=None, link_mtu_rate=None)
    a = ca(sub, 1)
    subscribe(sa, req_of(ca(sub, 2)), trap=65)
    join(sa, req_of(a), a)
    gone = ca(sub, 12)
    join(sa, req_of(gone), gone)
    new = build_subnet("fattree:4,2,3,1")      # a fresh model, as a sweep builds it
    del new.nodes[ca(new, 12).node.guid]
    acts = sa.gid_out_of_service(gone.gid_guid)   # the core knows only the GUID by then
    assert [notice_of(r).trap_num for r in reports(acts)] == [65]
    assert McastChanged(0xC000) in acts
    sa.subnet = new
    assert sa.on_sweep_done() == []
    b = ca(new, 7)
    pr = PathRecord.unpack(one_reply(path(sa, req_of(ca(new, 1)), dgid=gid(b))).data)
    assert (pr.dlid, pr.mtu, pr.rate) == (b.lid, smp.MTU_4096, 3)   # the default engine follows
