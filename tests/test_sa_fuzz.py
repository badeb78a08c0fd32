"""The SA never raises and always answers well-formed MADs with a legal status, whatever it gets."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric import wire as w
from fabric.sm.mcast import FULL_STATES
from fabric.sm.sa import McastChanged, Requester, SaReply, SaReport, SubnetAdministrator
from fabric.wire.sa_attrs import MCM_COMP, MCMemberRecord, comp_mask
from test_sa_net import build_subnet, ca, gid

SUB = build_subnet("fattree:3,2,2,1")
SETTINGS = settings(max_examples=500, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LEGAL = {0x0000, 0x0004, 0x0008, 0x000C, 0x0100, 0x0200, 0x0300, 0x0400, 0x0500, 0x0600}
ATTRS = [w.ATTR_CLASS_PORT_INFO, w.ATTR_INFORM_INFO, w.ATTR_NODE_RECORD, w.ATTR_PORT_INFO_RECORD,
         w.ATTR_PATH_RECORD, w.ATTR_MCMEMBER_RECORD, w.ATTR_NOTICE, 0x0000, 0xFF00]
METHODS = [w.GET, w.SET, w.GET_TABLE, w.DELETE, w.SEND, w.TRAP, w.REPORT, w.TRAP_REPRESS,
           w.GET_MULTI, w.GET_TRACE_TABLE, 0x04, 0x7F, w.GET_RESP, w.REPORT_RESP]


def lid_strategy():
    lids = sorted(p.lid for p in SUB.endports())
    return st.one_of(st.sampled_from(lids), st.sampled_from(lids), st.sampled_from(lids),
                     st.integers(0, 0xFFFF))


def gid_strategy():
    gids = [gid(p) for p in SUB.endports()] + [w.ipoib_broadcast_mgid(0xFFFF)]
    return st.one_of(st.sampled_from(gids), st.sampled_from(gids), st.binary(min_size=16, max_size=16))


VALID = {w.ATTR_CLASS_PORT_INFO: [w.GET], w.ATTR_INFORM_INFO: [w.SET],
         w.ATTR_NODE_RECORD: [w.GET, w.GET_TABLE], w.ATTR_PORT_INFO_RECORD: [w.GET, w.GET_TABLE],
         w.ATTR_PATH_RECORD: [w.GET, w.GET_TABLE],
         w.ATTR_MCMEMBER_RECORD: [w.GET, w.GET_TABLE, w.SET, w.DELETE]}
# where each record keeps its GIDs and LIDs: (offset, "gid" | "lid")
SLOTS = {w.ATTR_PATH_RECORD: [(8, "gid"), (24, "gid"), (40, "lid"), (42, "lid")],
         w.ATTR_MCMEMBER_RECORD: [(0, "gid"), (16, "gid"), (36, "mlid")],
         w.ATTR_NODE_RECORD: [(0, "lid")], w.ATTR_PORT_INFO_RECORD: [(0, "lid")],
         w.ATTR_INFORM_INFO: [(0, "gid"), (16, "lid"), (18, "lid")]}


@st.composite
def sa_request(draw):
    """An SA MAD: mostly a supported attribute and method with a sparse component mask and
    plausible GIDs/LIDs planted in the record, sometimes anything at all."""
    wild = draw(st.integers(0, 4)) == 0
    if wild:
        attr = draw(st.sampled_from(ATTRS))
        method = draw(st.sampled_from(METHODS))
        mask = draw(st.integers(0, 2 ** 64 - 1))
    else:
        attr = draw(st.sampled_from(sorted(VALID)))
        method = draw(st.sampled_from(VALID[attr]))
        mask = 0
        for bit in draw(st.lists(st.integers(0, 23), max_size=8)):
            mask |= 1 << bit
        if draw(st.booleans()):   # the components requests usually carry
            mask |= {w.ATTR_PATH_RECORD: draw(st.sampled_from([0b100, 0b10000, 0b1100, 0b110000])),
                     w.ATTR_MCMEMBER_RECORD: draw(st.sampled_from([0x10003, 0x1F0C7]))}.get(attr, 0)
    data = bytearray(draw(st.binary(min_size=200, max_size=200)))
    if not wild and draw(st.integers(0, 3)):
        data[:] = bytes(200)
        for off, kind in SLOTS.get(attr, []):
            if kind == "gid":
                data[off:off + 16] = draw(gid_strategy())
            elif kind == "lid":
                data[off:off + 2] = draw(lid_strategy()).to_bytes(2, "big")
            else:
                data[off:off + 2] = draw(st.sampled_from([0xC000, 0xC001, 0])).to_bytes(2, "big")
        if attr == w.ATTR_MCMEMBER_RECORD:   # Q_Key, P_Key, JoinState, selectors
            data[32:36] = draw(st.sampled_from([0x0B1B, 0, 7])).to_bytes(4, "big")
            data[38] = draw(st.integers(0, 255))
            data[40:42] = draw(st.sampled_from([0xFFFF, 0x7FFF, 0x8001, 0])).to_bytes(2, "big")
            data[42] = draw(st.integers(0, 255))
            data[48] = draw(st.integers(0, 255))
        if attr == w.ATTR_INFORM_INFO:
            data[20:26] = bytes([0, 0, 1, draw(st.integers(0, 2)), 0xFF, 0xFF])
            data[26:28] = draw(st.sampled_from([0xFFFF, 64, 65, 66, 67, 256])).to_bytes(2, "big")
    mad = w.new_mad(
        w.SAMad, method=method, attr_id=attr,
        tid=draw(st.integers(0, 2 ** 64 - 1)), attr_mod=draw(st.integers(0, 2 ** 32 - 1)),
        comp_mask=mask, sm_key=draw(st.sampled_from([0, 0, 0, 5, 0xBAD])),
        status=draw(st.sampled_from([0, 0x1C])),
        data=bytes(data))
    if draw(st.integers(0, 9)) == 0:
        mad = mad.replace(rmpp_version=draw(st.sampled_from([0, 1])), rmpp_type=draw(st.integers(0, 5)),
                          rmpp_flags=draw(st.integers(0, 7)))
    raw = bytearray(mad.pack())
    if draw(st.integers(0, 20)) == 0:
        raw[2] = draw(st.integers(0, 255))      # class version
    if draw(st.integers(0, 40)) == 0:
        raw[0] = draw(st.integers(0, 255))      # base version
    return bytes(raw)


def check(sa, raw, src):
    before = sa.stats.get("internal_error", 0)
    actions = sa.handle(raw, src, 1.0)
    assert sa.stats.get("internal_error", 0) == before, "a handler raised"
    assert isinstance(actions, list)
    req = w.SAMad.unpack(raw) if len(raw) >= 256 else None
    for a in actions:
        assert isinstance(a, (SaReply, McastChanged, SaReport))
        if isinstance(a, SaReply):
            assert a.dest is src and a.mads
            for i, octets in enumerate(a.mads):
                assert len(octets) == 256
                r = w.SAMad.unpack(octets)
                assert r.method & w.RESPONSE_BIT and r.tid == req.tid and r.attr_id == req.attr_id
                assert r.status in LEGAL, hex(r.status)
                assert r.sm_key == 0
                if len(a.mads) > 1:
                    assert r.rmpp_flags & w.RMPP_FLAG_ACTIVE and r.rmpp_data1 == i + 1
        if isinstance(a, SaReport):
            assert len(a.mad) == 256
    if req is not None and (req.method & w.RESPONSE_BIT or req.method in (w.SEND, w.TRAP, w.TRAP_REPRESS)):
        assert not [a for a in actions if isinstance(a, SaReply)]
    return actions


SA_PLAIN = SubnetAdministrator(SUB)
SA_KEYED = SubnetAdministrator(SUB, sm_key=5)


@SETTINGS
@given(sa_request(), lid_strategy(), st.booleans())
def test_random_requests_never_raise(raw, lid, keyed):
    sa = SA_KEYED if keyed else SA_PLAIN
    check(sa, raw, Requester(lid=lid, qpn=1))


@SETTINGS
@given(st.binary(min_size=0, max_size=300), lid_strategy())
def test_random_octets_never_raise(raw, lid):
    actions = SA_PLAIN.handle(raw, Requester(lid=lid), 0.0)
    assert isinstance(actions, list)
    assert SA_PLAIN.stats.get("internal_error", 0) == 0
    for a in actions:
        assert all(len(x) == 256 for x in a.mads)


OPS = st.lists(st.tuples(st.sampled_from(["join", "leave", "gone"]), st.integers(1, 6),
                         st.integers(0, 15), st.integers(0, 2)), max_size=30)
MGIDS = [w.ipoib_broadcast_mgid(0xFFFF), bytes.fromhex("ff12e01b000000000000000000000001"),
         bytes.fromhex("ff15e01b000000000000000000000002")]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_join_leave_sequences_keep_invariants(ops):
    sub = build_subnet("fattree:3,2,2,1")
    sa = SubnetAdministrator(sub)
    create = comp_mask(MCM_COMP, "mgid", "port_gid", "join_state", "qkey", "pkey", "sl",
                       "flow_label", "tclass")
    for op, i, state, gi in ops:
        port = ca(sub, i)
        src = Requester(lid=port.lid)
        if op == "gone":
            sa.gid_out_of_service(port)
            continue
        rec = MCMemberRecord(mgid=MGIDS[gi], port_gid=gid(port), join_state=state, qkey=0x0B1B, pkey=0xFFFF)
        method = w.SET if op == "join" else w.DELETE
        raw = w.new_mad(w.SAMad, method=method, attr_id=w.ATTR_MCMEMBER_RECORD, comp_mask=create,
                        data=rec.pack().ljust(200, b"\0")).pack()
        check(sa, raw, src)
    mlids = [g.mlid for g in sa.mcast]
    assert len(mlids) == len(set(mlids))
    for g in sa.mcast:
        assert all(0 < s <= 0xF for s in g.members.values())
        if not g.created_by_sm:
            assert any(s & FULL_STATES for s in g.members.values())   # else it would be gone
        assert sa.mcast.by_mlid(g.mlid) is g
