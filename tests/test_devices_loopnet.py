"""Behaviour of the emulated switches and HCAs, driven with real SMPs and datagrams over LoopNet.

The fabric is ibsim's net.2sw2path4hca unless a test says otherwise:

    Hca1[1] -- [1]Switch1[3] ==== [3]Switch2[1] -- [1]Hca2        (the SM runs on Hca1 port 1)
    Hca3[1] -- [2]Switch1[5] ==== [5]Switch2[2] -- [1]Hca4

Every test builds its own fabric (a bring-up takes ~0.1 s) so that counters start from a known state.
"""

import pytest

from fabric import wire as w
from fabric.devices import send_smp
from fabric.devices.base import TRAP_MAX_SENDS, TRAP_RESEND_S
from fabric.wire import smp_attrs as sa
from devnet import Fab, counter_delta, drop_delta, ext_delta, patch, words
from handsm import SMPFailed

QKEY = 0x11110000
MLID = 0xC001
MGID = bytes.fromhex("ff12601bffff00000000000000000001")


@pytest.fixture
def fab():
    return Fab()


def pinfo_set(fab, name, port, **changes):
    """PortInfo Set on ``name``'s port via HandSM: the current value with ``changes``, every
    write-only / no-change field neutral. Returns the PortInfo of the response."""
    path = fab.path(name)
    cur = fab.sm.get(w.PortInfo, w.ATTR_PORT_INFO, path, attr_mod=port)
    new = cur.replace(**{"port_state": 0, "phys_state": 0, "client_reregister": 0, "neighbor_mtu": 0,
                         "link_speed_enabled": 0, "link_width_enabled": 0, **changes})
    return fab.sm.set(w.PortInfo, w.ATTR_PORT_INFO, path, new, attr_mod=port)


def pinfo(fab, name, port, m_key=0):
    resp = fab.sm.dr(w.GET, w.ATTR_PORT_INFO, fab.path(name), attr_mod=port, m_key=m_key)
    assert resp.status == 0
    return w.PortInfo.unpack(resp.data)


def dr_smp(path, method=w.GET, attr_id=w.ATTR_NODE_INFO, attr_mod=0, data=bytes(64), tid=0x77, **kw):
    return w.new_mad(w.SMPDirected, method=method, tid=tid, attr_id=attr_id, attr_mod=attr_mod,
                     hop_cnt=len(path), dr_slid=w.LID_PERMISSIVE, dr_dlid=w.LID_PERMISSIVE,
                     initial_path=bytes([0, *path]).ljust(64, b"\0"), data=data, **kw)


def poll_all(fab):
    """{(hca, qpn): [Completion]} of every non-empty receive queue (drained)."""
    out = {}
    for d in fab.net.hcas():
        for qpn, qp in d.qps.items():
            got = qp.poll(10_000)
            if got:
                out[(d.name, qpn)] = got
    return out


# == 1. discovery and directed-route mechanics ===================================================


@pytest.mark.parametrize("topo", [None, "linear:3", "fattree:2,2,2,2"])
def test_dr_discovery_finds_every_node_and_cabled_port(topo):
    fab = Fab(topo) if topo else Fab()
    t = fab.topo
    by_guid = {spec.node_guid: spec for spec in t.nodes.values()}
    assert set(fab.sm.nodes) == set(by_guid)
    for guid, node in fab.sm.nodes.items():
        spec, ni = by_guid[guid], node["info"]
        assert ni.node_type == (sa.NODE_TYPE_SWITCH if spec.kind == "switch" else sa.NODE_TYPE_CA)
        assert ni.num_ports == spec.num_ports
        assert node["desc"] == spec.description
        assert ni.port_guid == spec.port_guid(ni.local_port if spec.kind == "hca" else 0)
    want = set()
    for link in t.links:
        a = (t.nodes[link.a].node_guid, link.a_port)
        b = (t.nodes[link.b].node_guid, link.b_port)
        want |= {(a, b), (b, a)}
    assert set(fab.sm.links.items()) == want
    # every cabled port is Active after bring-up, every uncabled one Down
    for name, dev in fab.net.devices.items():
        for p in dev.ports.values():
            if p.num == 0:
                continue
            assert p.state == (sa.PORT_ACTIVE if p.cabled else sa.PORT_DOWN), (name, p.num)


def test_dr_get_through_two_switches_fills_return_path(fab):
    seen = []

    def capture(name, port, pkt):
        m = w.parse_mad(w.split_ud_packet(pkt).payload)
        if m.tid == 0x77:
            seen.append((name, port, m.d, m.hop_ptr))

    fab.net.capture = capture
    resp = fab.smp(dr_smp((1, 3, 1)))
    assert resp is not None and resp.status == 0
    assert (resp.method, resp.d, resp.hop_cnt, resp.hop_ptr) == (w.GET_RESP, 1, 3, 0)
    # arrival ports: Switch1 port 1, Switch2 port 3, Hca2 port 1
    assert resp.return_path[:5] == bytes([0, 1, 3, 1, 0])
    assert resp.initial_path[:5] == bytes([0, 1, 3, 1, 0])
    ni = w.NodeInfo.unpack(resp.data)
    assert (ni.node_guid, ni.local_port) == (fab.guid("Hca2"), 1)
    # the hop pointer on every link, out and back (IBA 14.2.2)
    assert seen == [("Hca1", 1, 0, 1), ("Switch1", 3, 0, 2), ("Switch2", 1, 0, 3),
                    ("Hca2", 1, 1, 3), ("Switch2", 3, 1, 2), ("Switch1", 1, 1, 1)]


@pytest.mark.parametrize("bad", [0, 9, 255])
def test_dr_bad_initial_path_port_is_dropped(fab, bad):
    before = fab.drops()
    assert fab.smp(dr_smp((1, bad))) is None
    assert drop_delta(before, fab.drops()) == {("Switch1", "dr_path"): 1}


def test_dr_path_through_uncabled_port_is_dropped(fab):
    before = fab.drops()
    assert fab.smp(dr_smp((1, 4))) is None  # Switch1 port 4 has no cable
    assert drop_delta(before, fab.drops()) == {("Switch1", "dr_egress_down"): 1}


def test_dr_channel_adapter_does_not_forward(fab):
    before = fab.drops()
    assert fab.smp(dr_smp((1, 2, 1))) is None  # Hca3 would have to forward it
    assert drop_delta(before, fab.drops()) == {("Hca3", "dr_path"): 1}


@pytest.mark.parametrize("hop_cnt, hop_ptr", [(64, 1), (100, 80), (255, 255), (64, 65)])
def test_dr_hop_count_beyond_63_is_dropped(fab, hop_cnt, hop_ptr):
    smp = dr_smp((3,)).replace(hop_cnt=hop_cnt, hop_ptr=hop_ptr, initial_path=bytes([0] + [3] * 63))
    raw = w.build_ud_packet(slid=w.LID_PERMISSIVE, dlid=w.LID_PERMISSIVE, dest_qp=0, src_qp=0, qkey=0,
                            vl=w.VL15, payload=smp.pack())
    before = fab.drops()
    fab.inject_raw("Hca1", 1, raw)
    assert drop_delta(before, fab.drops()) == {("Switch1", "dr_path"): 1}


def test_dr_hop_count_zero_is_answered_locally(fab):
    hca = fab["Hca1"]
    before = fab.counters()
    send_smp(hca, 1, dr_smp(()), fab.net.now)
    assert hca.outbox == []  # nothing on the wire
    (c,) = hca.qps[0].poll()
    m = w.parse_mad(c.payload)
    assert (m.method, m.d, m.hop_ptr, m.hop_cnt, m.status) == (w.GET_RESP, 1, 0, 0, 0)
    ni = w.NodeInfo.unpack(m.data)
    assert (ni.node_guid, ni.port_guid, ni.local_port) == (hca.node_guid, hca.ports[1].guid, 1)
    assert counter_delta(before, fab.counters()) == {}


# == 2. UD datagrams and data counters ===========================================================


def test_ud_datagrams_between_every_hca_pair(fab):
    names = fab.hca_names()
    qps = {n: fab[n].create_qp(QKEY + i) for i, n in enumerate(names)}
    for src in names:
        for dst in names:
            if src == dst:
                continue
            payload = f"{src}->{dst}".encode() * 7
            fab.send(src, qps[src].qpn, dst, qps[dst].qpn, payload, qkey=qps[dst].qkey)
            got = poll_all(fab)
            assert list(got) == [(dst, qps[dst].qpn)], (src, dst, got)
            (c,) = got[(dst, qps[dst].qpn)]
            assert c.payload == payload
            assert (c.slid, c.src_qp, c.pkey, c.pkey_index, c.qkey, c.port, c.sl, c.grh) == \
                (fab.lid(src), qps[src].qpn, 0xFFFF, 0, qps[dst].qkey, 1, 0, None)
    assert all(not d.drops for d in fab.net.devices.values())


def test_pma_data_counters_advance_along_the_path(fab):
    a, b = fab["Hca3"].create_qp(QKEY), fab["Hca2"].create_qp(QKEY)
    assert fab["Switch1"].lft_port(fab.lid("Hca2")) == 3
    before = fab.counters()
    (tx,) = fab.send("Hca3", a.qpn, "Hca2", b.qpn, bytes(1000))
    raw = tx[1]
    assert len(raw) == 8 + 12 + 8 + 1000 + 4 + 2
    n = words(raw)
    assert n == 258
    want = {}
    for node, port, d in (("Hca3", 1, "xmit"), ("Switch1", 2, "rcv"), ("Switch1", 3, "xmit"),
                          ("Switch2", 3, "rcv"), ("Switch2", 1, "xmit"), ("Hca2", 1, "rcv")):
        want[(node, port, f"port_{d}_data")] = n
        want[(node, port, f"port_{d}_pkts")] = 1
    assert counter_delta(before, fab.counters()) == want
    ext = ext_delta(before, fab.counters())
    assert ext[("Switch1", 3, "port_unicast_xmit_pkts")] == 1
    assert ext[("Switch2", 3, "port_rcv_data")] == n
    assert not any("multicast" in k[2] for k in ext)
    assert len(b.poll()) == 1


def test_data_counters_saturate_at_their_width(fab):
    p = fab["Switch1"].ports[2].counters
    p.pc["port_rcv_pkts"] = 0xFFFFFFFE
    p.pc["port_rcv_data"] = 0xFFFFFFF0
    ext0 = p.ext["port_rcv_pkts"]
    a, b = fab["Hca3"].create_qp(QKEY), fab["Hca1"].create_qp(QKEY)
    for _ in range(3):
        fab.send("Hca3", a.qpn, "Hca1", b.qpn, bytes(100))
    assert p.pc["port_rcv_pkts"] == 0xFFFFFFFF
    assert p.pc["port_rcv_data"] == 0xFFFFFFFF
    assert p.ext["port_rcv_pkts"] == ext0 + 3  # the 64-bit counters go on
    assert len(b.poll()) == 3


def test_pending_counts_read_as_if_added_at_once():
    """What compiled code counts into ``pending`` (fabric._wirefast.count_unicast) reads, through
    ``pc`` and ``ext``, exactly as the same counts added with add_rcv/add_xmit: saturating at 32
    bits, the 64-bit set going on, a PMA reset folding first (so it clears them too)."""
    from fabric.devices.port import PortCounterSet

    folded, added = PortCounterSet(), PortCounterSet()
    for c in (folded, added):
        c.pc["port_rcv_pkts"] = 0xFFFFFFF0
        c.pc["port_xmit_data"] = 7
    q = folded.pending
    q[0], q[1], q[2], q[3] = 40, 4000, 2, 30  # received packets and words, then sent
    added.add_rcv(40, 4000)
    added.add_xmit(2, 30)
    assert folded.snapshot() == added.snapshot()
    assert folded.pc["port_rcv_pkts"] == 0xFFFFFFFF and folded.ext["port_rcv_pkts"] == 40
    assert folded.ext["port_unicast_xmit_pkts"] == 2 and list(q) == [0, 0, 0, 0]
    q[0] = 5
    folded.reset(1 << 15)  # CounterSelect: PortRcvPkts
    assert folded.pc["port_rcv_pkts"] == 0 and folded.ext["port_rcv_pkts"] == 45


# == 3. switch drop classes ======================================================================


def _one_packet(fab, src="Hca3", payload=bytes(40), **kw):
    qp = fab[src].create_qp(QKEY)
    assert fab[src].post_send(qp.qpn, dest_qp=0x48, payload=payload, now=fab.net.now, **kw)
    ((_, raw),) = fab[src].take_outbox()
    return raw


def _errors_only(delta):
    """The counter deltas without the data/packet counters."""
    return {k: v for k, v in delta.items() if not k[2].endswith(("_data", "_pkts"))}


def test_switch_unprogrammed_dlid_is_a_relay_error(fab):
    before, dbefore = fab.counters(), fab.drops()
    fab.send("Hca3", fab["Hca3"].create_qp(QKEY).qpn, 0x50, 0x48, b"x" * 64)
    assert _errors_only(counter_delta(before, fab.counters())) == \
        {("Switch1", 2, "port_rcv_switch_relay_errors"): 1}
    assert drop_delta(dbefore, fab.drops()) == {("Switch1", "no_route"): 1}


def test_switch_out_of_a_down_port_is_a_xmit_discard(fab):
    assert fab["Switch1"].lft_port(fab.lid("Hca2")) == 3
    fab.net.set_link("Switch1", 3, False)  # pull the ISL the route to Hca2 uses
    assert fab["Switch1"].ports[3].state == sa.PORT_DOWN
    assert fab["Switch2"].ports[3].state == sa.PORT_DOWN
    b = fab["Hca2"].create_qp(QKEY)
    before, dbefore = fab.counters(), fab.drops()
    fab.send("Hca3", fab["Hca3"].create_qp(QKEY).qpn, "Hca2", b.qpn, b"y" * 64)
    assert _errors_only(counter_delta(before, fab.counters())) == {("Switch1", 3, "port_xmit_discards"): 1}
    assert drop_delta(dbefore, fab.drops()) == {("Switch1", "egress_not_active"): 1}
    assert b.poll() == []


def test_switch_ingress_port_mtu(fab):
    pi = pinfo_set(fab, "Switch1", 2, neighbor_mtu=sa.MTU_256)  # the port Hca3 sends into
    assert pi.neighbor_mtu == sa.MTU_256
    a, b = fab["Hca3"].create_qp(QKEY), fab["Hca1"].create_qp(QKEY)
    before, dbefore = fab.counters(), fab.drops()
    fab.send("Hca3", a.qpn, "Hca1", b.qpn, bytes(1000))
    assert _errors_only(counter_delta(before, fab.counters())) == {("Switch1", 2, "port_rcv_errors"): 1}
    assert drop_delta(dbefore, fab.drops()) == {("Switch1", "over_mtu"): 1}
    fab.send("Hca3", a.qpn, "Hca1", b.qpn, bytes(256))  # exactly the MTU passes
    fab.send("Hca3", a.qpn, "Hca1", b.qpn, bytes(257))
    assert [len(c.payload) for c in b.poll()] == [256]
    assert fab["Switch1"].drops["over_mtu"] == 2


def test_switch_egress_port_mtu(fab):
    pinfo_set(fab, "Switch1", 1, neighbor_mtu=sa.MTU_256)  # the port towards Hca1
    a, b = fab["Hca3"].create_qp(QKEY), fab["Hca1"].create_qp(QKEY)
    before, dbefore = fab.counters(), fab.drops()
    fab.send("Hca3", a.qpn, "Hca1", b.qpn, bytes(1000))
    assert _errors_only(counter_delta(before, fab.counters())) == {("Switch1", 1, "port_xmit_discards"): 1}
    assert drop_delta(dbefore, fab.drops()) == {("Switch1", "egress_over_mtu"): 1}
    assert b.poll() == []
    # management packets (256-octet MADs on VL15) still leave through it
    assert fab.sm.get(w.NodeInfo, w.ATTR_NODE_INFO, fab.path("Hca4")).node_guid == fab.guid("Hca4")


def test_switch_bad_vcrc_is_a_rcv_error(fab):
    raw = _one_packet(fab, dlid=fab.lid("Hca1"))
    bad = raw[:-1] + bytes([raw[-1] ^ 0x01])
    before, dbefore = fab.counters(), fab.drops()
    fab.inject_raw("Hca3", 1, bad)
    assert _errors_only(counter_delta(before, fab.counters())) == {("Switch1", 2, "port_rcv_errors"): 1}
    assert drop_delta(dbefore, fab.drops()) == {("Switch1", "vcrc"): 1}


@pytest.mark.parametrize("delta_words", [-1, 1, 100])
def test_switch_bad_pktlen_is_a_rcv_error(fab, delta_words):
    raw = _one_packet(fab, dlid=fab.lid("Hca1"))
    pktlen = (len(raw) - 2) // 4 + delta_words
    bad = patch(raw, 4, bytes([pktlen >> 8 & 7, pktlen & 0xFF]), crcs="both")
    before, dbefore = fab.counters(), fab.drops()
    fab.inject_raw("Hca3", 1, bad)
    assert _errors_only(counter_delta(before, fab.counters())) == {("Switch1", 2, "port_rcv_errors"): 1}
    assert drop_delta(dbefore, fab.drops()) == {("Switch1", "pktlen"): 1}


def test_switch_multicast_with_empty_mft_is_a_relay_error(fab):
    a = fab["Hca3"].create_qp(QKEY)
    before, dbefore = fab.counters(), fab.drops()
    fab.send("Hca3", a.qpn, MLID, 0xFFFFFF, b"m" * 32, dgid=MGID)
    assert _errors_only(counter_delta(before, fab.counters())) == \
        {("Switch1", 2, "port_rcv_switch_relay_errors"): 1}
    assert drop_delta(dbefore, fab.drops()) == {("Switch1", "no_mcast_route"): 1}
    assert poll_all(fab) == {}


def test_switch_drops_data_on_a_port_that_is_not_active():
    fab = Fab(bring_up=False)
    fab.sm.discover().assign_lids().route()  # LIDs and routes, ports still Init
    assert fab["Switch1"].ports[2].state == sa.PORT_INIT
    raw = w.build_ud_packet(slid=fab.lid("Hca3"), dlid=fab.lid("Hca1"), dest_qp=0x48, src_qp=0x48,
                            qkey=QKEY, payload=bytes(16))
    before, dbefore = fab.counters(), fab.drops()
    fab.inject_raw("Hca3", 1, raw)
    assert _errors_only(counter_delta(before, fab.counters())) == {("Switch1", 2, "port_rcv_errors"): 1}
    assert drop_delta(dbefore, fab.drops()) == {("Switch1", "ingress_not_active"): 1}


# == 4. HCA receive checks =======================================================================


def _to_hca1(fab, *, dlid=None, pkey=0xFFFF, dest_qp=None, qkey=None, vl=0, payload=b"z" * 24):
    qp = fab["Hca1"].qps.get(0x48) or fab["Hca1"].create_qp(QKEY, qpn=0x48)
    return w.build_ud_packet(slid=fab.lid("Hca3"), dlid=fab.lid("Hca1") if dlid is None else dlid,
                             dest_qp=qp.qpn if dest_qp is None else dest_qp, src_qp=0x50,
                             qkey=qp.qkey if qkey is None else qkey, pkey=pkey, vl=vl, payload=payload)


# one fault more per row, each row still caught by the earliest check (IBA ch. 7 then ch. 9/10)
_ORDER = [
    ("vcrc", dict(dlid=0x33, pkey=0x7777, dest_qp=0x999, qkey=1), "vcrc", "port_rcv_errors"),
    ("icrc", dict(dlid=0x33, pkey=0x7777, dest_qp=0x999, qkey=1), "icrc", "port_rcv_errors"),
    (None, dict(dlid=0x33, pkey=0x7777, dest_qp=0x999, qkey=1), "dlid_mismatch", "port_rcv_errors"),
    (None, dict(pkey=0x7777, dest_qp=0x999, qkey=1), "pkey", "p_key_violations"),
    (None, dict(dest_qp=0x999, qkey=1), "no_qp", None),
    (None, dict(qkey=1), "qkey", "q_key_violations"),
]


@pytest.mark.parametrize("crc_fault, fields, reason, counter", _ORDER, ids=[r[2] for r in _ORDER])
def test_hca_receive_checks_in_hardware_order(fab, crc_fault, fields, reason, counter):
    raw = _to_hca1(fab, **fields)
    if crc_fault == "vcrc":
        raw = raw[:-2] + bytes([raw[-2] ^ 0xFF, raw[-1]])
    elif crc_fault == "icrc":
        raw = patch(raw, len(raw) - 6, bytes([raw[-6] ^ 0x80]), crcs="vcrc")
    hca = fab["Hca1"]
    before, dbefore = fab.counters(), fab.drops()
    pi0 = pinfo(fab, "Hca1", 1)
    hca.receive(1, raw, fab.net.now)
    assert hca.outbox == []
    assert drop_delta(dbefore, fab.drops()) == {("Hca1", reason): 1}
    errs = _errors_only(counter_delta(before, fab.counters()))
    pi1 = pinfo(fab, "Hca1", 1)
    if counter == "port_rcv_errors":
        assert errs == {("Hca1", 1, "port_rcv_errors"): 1}
    else:
        assert errs == {}
    for name in ("p_key_violations", "q_key_violations", "m_key_violations"):
        assert getattr(pi1, name) - getattr(pi0, name) == (1 if name == counter else 0), name
    assert hca.qps[0x48].poll() == []


def test_hca_bad_icrc_crosses_the_switch_and_is_dropped_at_the_hca(fab):
    raw = _to_hca1(fab)
    bad = patch(raw, 30, b"\xAA", crcs="vcrc")  # a payload octet: ICRC broken, VCRC fine
    before, dbefore = fab.counters(), fab.drops()
    fab.inject_raw("Hca3", 1, bad)
    assert _errors_only(counter_delta(before, fab.counters())) == {("Hca1", 1, "port_rcv_errors"): 1}
    assert drop_delta(dbefore, fab.drops()) == {("Hca1", "icrc"): 1}
    fab.inject_raw("Hca3", 1, raw)
    assert len(fab["Hca1"].qps[0x48].poll()) == 1


def _pkeys(fab, name, *keys, port=1):
    table = w.PKeyTable(pkeys=tuple(keys) + (0,) * (32 - len(keys)))
    mod = port << 16 if fab[name].kind == "switch" else 0
    got = fab.sm.set(w.PKeyTable, w.ATTR_PKEY_TABLE, fab.path(name), table, attr_mod=mod)
    assert got == table


@pytest.mark.parametrize("sender_key, table_key, accepted", [
    (0x0001, 0x0001, False),  # both limited: no communication between limited members
    (0x0001, 0x8001, True),  # limited packet, full member table entry
    (0x8001, 0x0001, True),  # full packet, limited member table entry
    (0x8001, 0x8001, True),
    (0x8002, 0x8001, False),  # another partition
])
def test_hca_pkey_membership_rule(fab, sender_key, table_key, accepted):
    _pkeys(fab, "Hca3", 0xFFFF, sender_key)
    _pkeys(fab, "Hca1", 0xFFFF, table_key)
    a = fab["Hca3"].create_qp(QKEY, pkey_index=1)
    b = fab["Hca1"].create_qp(QKEY)
    v0 = pinfo(fab, "Hca1", 1).p_key_violations
    fab.send("Hca3", a.qpn, "Hca1", b.qpn, b"partition")
    got = b.poll()
    v1 = pinfo(fab, "Hca1", 1).p_key_violations
    if accepted:
        ((c,),) = (got,)
        assert (c.pkey, c.pkey_index) == (sender_key, 1)
        assert v1 == v0
    else:
        assert got == []
        assert v1 == v0 + 1
        assert fab["Hca1"].drops["pkey"] == 1


def test_hca_qkey_mismatch_counts_a_violation(fab):
    a, b = fab["Hca3"].create_qp(0x2222), fab["Hca1"].create_qp(0x1111)
    fab.send("Hca3", a.qpn, "Hca1", b.qpn, b"wrong key", qkey=0x2222)
    fab.send("Hca3", a.qpn, "Hca1", b.qpn, b"wrong key", qkey=0x1112)
    assert b.poll() == []
    assert fab["Hca1"].drops["qkey"] == 2
    assert pinfo(fab, "Hca1", 1).q_key_violations == 2
    fab.send("Hca3", a.qpn, "Hca1", b.qpn, b"right key", qkey=0x1111)
    assert [c.payload for c in b.poll()] == [b"right key"]


def test_hca_controlled_qkey_on_send_uses_the_qps_own_qkey(fab):
    a, b = fab["Hca3"].create_qp(0x1111), fab["Hca1"].create_qp(0x1111)
    fab.send("Hca3", a.qpn, "Hca1", b.qpn, b"controlled", qkey=0x80002222)
    (c,) = b.poll()
    assert c.qkey == 0x1111 and c.payload == b"controlled"
    # a consumer QP cannot reach QP1 by naming the GSI Q_Key: its own key goes out, QP1 refuses it
    gmp = w.new_mad(w.PMAMad, method=w.GET, tid=9, attr_id=w.ATTR_PORT_COUNTERS,
                    data=w.put_attr(w.PortCounters(port_select=1), 192)).pack()
    fab.send("Hca3", a.qpn, "Hca1", 1, gmp, qkey=w.QKEY_GSI)
    assert fab["Hca1"].drops["qkey"] == 1
    assert pinfo(fab, "Hca1", 1).q_key_violations == 1
    assert fab["Hca3"].qps[a.qpn].poll() == []


def test_hca_qp1_requires_the_gsi_qkey(fab):
    hca1 = fab["Hca1"]
    payload = b"\x01" * 256  # not a PMA request: it would be queued on QP1
    fab.send("Hca3", 1, "Hca1", 1, payload, qkey=0x80010001)
    assert hca1.qps[1].poll() == []
    assert hca1.drops["qkey"] == 1
    fab.send("Hca3", 1, "Hca1", 1, payload, qkey=w.QKEY_GSI)
    (c,) = hca1.qps[1].poll()
    assert (c.qkey, c.src_qp, c.payload) == (w.QKEY_GSI, 1, payload)


def test_hca_no_such_qp(fab):
    fab.send("Hca3", fab["Hca3"].create_qp(QKEY).qpn, "Hca1", 0x1234, b"nobody")
    assert drop_delta({n: {} for n in fab.net.devices}, fab.drops()) == {("Hca1", "no_qp"): 1}


def _program_mft(fab, members):
    """MLID ``MLID`` (block 0, index 1) on every switch: ``members`` = {switch: ports}."""
    for sw in ("Switch1", "Switch2"):
        masks = [0] * 32
        masks[MLID - 0xC000] = sum(1 << p for p in members.get(sw, ()))
        got = fab.sm.set(w.MulticastForwardingTable, w.ATTR_MFT, fab.path(sw),
                         w.MulticastForwardingTable(port_masks=tuple(masks)), attr_mod=sa.mft_attr_mod(0, 0))
        assert got.port_masks[MLID - 0xC000] == masks[MLID - 0xC000]


def test_hca_multicast_to_an_mlid_not_attached_is_dropped(fab):
    _program_mft(fab, {"Switch1": (1, 2)})
    a = fab["Hca3"].create_qp(QKEY)
    fab["Hca1"].create_qp(QKEY)
    fab.send("Hca3", a.qpn, MLID, 0xFFFFFF, b"anyone?", dgid=MGID)
    assert fab["Hca1"].drops == {"mlid_not_joined": 1}
    assert poll_all(fab) == {}


def test_multicast_reaches_exactly_the_attached_qps(fab):
    # members: Hca1 (sender), Hca2 and Hca4; Hca3 is not in the group
    _program_mft(fab, {"Switch1": (1, 3), "Switch2": (1, 2, 3)})
    mq = {n: fab[n].create_qp(QKEY) for n in ("Hca1", "Hca2", "Hca4")}
    extra = fab["Hca4"].create_qp(QKEY)
    bystander = fab["Hca2"].create_qp(QKEY)  # same HCA, not attached
    other_group = fab["Hca2"].create_qp(QKEY)  # attached to the MLID with another MGID
    for n, qp in mq.items():
        fab[n].attach_mcast(qp.qpn, MGID, MLID)
    fab["Hca4"].attach_mcast(extra.qpn, MGID, MLID)
    fab["Hca2"].attach_mcast(other_group.qpn, MGID[:-1] + b"\x02", MLID)
    before, dbefore = fab.counters(), fab.drops()
    (tx,) = fab.send("Hca1", mq["Hca1"].qpn, MLID, 0xFFFFFF, b"to the group", dgid=MGID)
    got = poll_all(fab)
    assert sorted(got) == sorted([("Hca1", mq["Hca1"].qpn), ("Hca2", mq["Hca2"].qpn),
                                  ("Hca4", mq["Hca4"].qpn), ("Hca4", extra.qpn)])
    for (n, _), cs in got.items():
        (c,) = cs  # exactly once each, the sender's own copy included (loopback, not a reflection)
        assert c.payload == b"to the group" and c.slid == fab.lid("Hca1") and c.src_qp == mq["Hca1"].qpn
        assert c.grh is not None and c.grh.dgid == MGID and c.grh.sgid == fab["Hca1"].gid(1)
    assert bystander.poll() == [] and other_group.poll() == []
    n = words(tx[1])
    want = {}
    for node, port, d in (("Hca1", 1, "xmit"), ("Switch1", 1, "rcv"), ("Switch1", 3, "xmit"),
                          ("Switch2", 3, "rcv"), ("Switch2", 1, "xmit"), ("Switch2", 2, "xmit"),
                          ("Hca2", 1, "rcv"), ("Hca4", 1, "rcv")):
        want[(node, port, f"port_{d}_data")] = n
        want[(node, port, f"port_{d}_pkts")] = 1
    assert counter_delta(before, fab.counters()) == want  # nothing back out of Switch1 port 1
    ext = ext_delta(before, fab.counters())
    assert ext[("Switch2", 2, "port_multicast_xmit_pkts")] == 1
    assert ext[("Hca4", 1, "port_multicast_rcv_pkts")] == 1
    assert drop_delta(dbefore, fab.drops()) == {}


def test_multicast_qkey_is_checked_per_qp(fab):
    _program_mft(fab, {"Switch1": (2, 3), "Switch2": (2, 3)})
    good, bad = fab["Hca4"].create_qp(QKEY), fab["Hca4"].create_qp(QKEY + 1)
    for qp in (good, bad):
        fab["Hca4"].attach_mcast(qp.qpn, MGID, MLID)
    fab.send("Hca3", fab["Hca3"].create_qp(QKEY).qpn, MLID, 0xFFFFFF, b"q", dgid=MGID)
    assert len(good.poll()) == 1 and bad.poll() == []
    assert pinfo(fab, "Hca4", 1).q_key_violations == 1
    assert fab["Hca4"].drops == {"qkey": 1}
    fab["Hca4"].detach_mcast(good.qpn, MGID, MLID)
    fab.send("Hca3", 0x48, MLID, 0xFFFFFF, b"q", dgid=MGID)
    assert good.poll() == [] and bad.poll() == []
    assert pinfo(fab, "Hca4", 1).q_key_violations == 2
    assert fab["Hca4"].drops == {"qkey": 2}  # the one copy was refused: one drop, not two
    fab["Hca4"].detach_mcast(bad.qpn, MGID, MLID)
    fab.send("Hca3", 0x48, MLID, 0xFFFFFF, b"q", dgid=MGID)
    assert fab["Hca4"].drops == {"qkey": 2, "mlid_not_joined": 1}


# == 5. SMA ======================================================================================


def test_sma_init_to_active_is_rejected_and_changes_nothing():
    fab = Fab(bring_up=False)
    fab.sm.discover().assign_lids().route()
    path, lid = fab.path("Hca3"), fab.lid("Hca3")
    cur = fab.sm.get(w.PortInfo, w.ATTR_PORT_INFO, path, attr_mod=1)
    assert cur.port_state == sa.PORT_INIT
    fab.events.clear()
    bad = cur.replace(port_state=sa.PORT_ACTIVE, lid=0x77, master_sm_lid=0x66, phys_state=0,
                      neighbor_mtu=0, link_speed_enabled=0, link_width_enabled=0, client_reregister=0)
    resp = fab.sm.dr(w.SET, w.ATTR_PORT_INFO, path, bad, attr_mod=1)
    assert resp.status == w.STATUS_INVALID_FIELD == 0x001C
    now = fab.sm.get(w.PortInfo, w.ATTR_PORT_INFO, path, attr_mod=1)
    assert now == cur
    assert (now.lid, now.port_state) == (lid, sa.PORT_INIT)
    assert fab.events == []
    # Init -> Armed -> Active is the way
    for state in (sa.PORT_ARMED, sa.PORT_ACTIVE):
        assert pinfo_set(fab, "Hca3", 1, port_state=state).port_state == state
    assert fab["Hca3"].ports[1].state == sa.PORT_ACTIVE


def test_sma_armed_port_goes_active_on_first_data_packet():
    fab = Fab(bring_up=False)
    fab.sm.discover().assign_lids().route()
    ends = (("Hca1", 1), ("Switch1", 1), ("Switch1", 2), ("Hca3", 1))
    for name, port in ends:
        pinfo_set(fab, name, port, port_state=sa.PORT_ARMED)
    a, b = fab["Hca1"].create_qp(QKEY), fab["Hca3"].create_qp(QKEY)
    # an Armed port transmits no data (IBA 7.2: only SMPs until it is Active)
    assert fab["Hca1"].post_send(a.qpn, dlid=fab.lid("Hca3"), dest_qp=b.qpn, payload=b"x") is False
    assert fab["Hca1"].outbox == []
    assert fab["Hca1"].drops["send_port_not_active"] == 1
    pinfo_set(fab, "Hca1", 1, port_state=sa.PORT_ACTIVE)
    before = fab.counters()
    fab.send("Hca1", a.qpn, "Hca3", b.qpn, b"first")
    assert fab["Switch1"].ports[1].state == sa.PORT_ACTIVE  # the first data packet it received
    assert fab["Switch1"].ports[2].state == sa.PORT_ARMED  # cannot send it on
    assert _errors_only(counter_delta(before, fab.counters())) == {("Switch1", 2, "port_xmit_discards"): 1}
    assert b.poll() == []
    pinfo_set(fab, "Switch1", 2, port_state=sa.PORT_ACTIVE)
    fab.send("Hca1", a.qpn, "Hca3", b.qpn, b"second")
    assert [c.payload for c in b.poll()] == [b"second"]
    assert [fab[n].ports[p].state for n, p in ends] == [sa.PORT_ACTIVE] * 4
    assert [e[:3] for e in fab.events if e[3] == (sa.PORT_ARMED, sa.PORT_ACTIVE)] == \
        [("Hca1", "port_state", 1), ("Switch1", "port_state", 1), ("Switch1", "port_state", 2),
         ("Hca3", "port_state", 1)]


def test_sma_port_state_down_bounces_the_link(fab):
    fab.events.clear()
    pi = pinfo_set(fab, "Switch1", 2, port_state=sa.PORT_DOWN)
    assert pi is not None
    changes = [(n, p, d) for n, k, p, d in fab.events if k == "port_state"]
    A, D, I = sa.PORT_ACTIVE, sa.PORT_DOWN, sa.PORT_INIT
    assert ("Switch1", 2, (A, D)) in changes and ("Hca3", 1, (A, D)) in changes
    assert changes.index(("Hca3", 1, (A, D))) < changes.index(("Hca3", 1, (D, I)))
    assert changes.index(("Switch1", 2, (A, D))) < changes.index(("Switch1", 2, (D, I)))
    assert len(changes) == 4
    for name, port in (("Switch1", 2), ("Hca3", 1)):
        p = fab[name].ports[port]
        assert (p.state, p.phys) == (sa.PORT_INIT, sa.PHYS_LINKUP)
        assert p.counters.pc["link_downed_counter"] == 1
    # the SM can bring it back
    for state in (sa.PORT_ARMED, sa.PORT_ACTIVE):
        pinfo_set(fab, "Switch1", 2, port_state=state)
        pinfo_set(fab, "Hca3", 1, port_state=state)
    a, b = fab["Hca3"].create_qp(QKEY), fab["Hca1"].create_qp(QKEY)
    fab.send("Hca3", a.qpn, "Hca1", b.qpn, b"back")
    assert len(b.poll()) == 1


def test_sma_port_state_down_on_the_sms_own_port_bounces_it(fab):
    # the SMP never leaves Hca1 (hop count 0): the bounce must still happen
    pinfo_set(fab, "Hca1", 1, port_state=sa.PORT_DOWN)
    for name, port in (("Hca1", 1), ("Switch1", 1)):
        p = fab[name].ports[port]
        assert (p.state, p.phys) == (sa.PORT_INIT, sa.PHYS_LINKUP), name
        assert p.counters.pc["link_downed_counter"] == 1


def test_sma_phys_state_disabled_keeps_the_link_down_until_polling(fab):
    pinfo_set(fab, "Switch1", 5, phys_state=sa.PHYS_DISABLED)
    s1, s2 = fab["Switch1"].ports[5], fab["Switch2"].ports[5]
    assert (s1.state, s1.phys) == (sa.PORT_DOWN, sa.PHYS_DISABLED)
    assert (s2.state, s2.phys) == (sa.PORT_DOWN, sa.PHYS_POLLING)
    assert pinfo(fab, "Switch1", 5).phys_state == sa.PHYS_DISABLED
    fab.net.set_link("Switch2", 5, True)  # the far end keeps trying to train
    assert not s1.link_up and not s2.link_up
    pinfo_set(fab, "Switch1", 5, phys_state=sa.PHYS_POLLING)
    assert (s1.state, s1.phys) == (sa.PORT_INIT, sa.PHYS_LINKUP)
    assert (s2.state, s2.phys) == (sa.PORT_INIT, sa.PHYS_LINKUP)


@pytest.mark.parametrize("method, attr_id, attr_mod, status", [
    (w.SET, w.ATTR_NODE_INFO, 0, 0x000C),
    (w.SET, w.ATTR_NODE_DESC, 0, 0x000C),
    (w.GET, 0x00FF, 0, 0x000C),  # no such attribute
    (w.GET, w.ATTR_SM_INFO, 0, 0x000C),  # no SM on a switch
    (w.GET, w.ATTR_LFT, 0xC000 // 64, 0x001C),  # block 768: beyond LinearFDBCap
    (w.GET, w.ATTR_LFT, 0xC000 // 64 - 1, 0),
    (w.GET, w.ATTR_MFT, sa.mft_attr_mod(0, 1), 0x001C),  # ports 16-31 of an 8-port switch
    (w.GET, w.ATTR_MFT, sa.mft_attr_mod(32, 0), 0x001C),  # MLIDs beyond MulticastFDBCap
    (w.GET, w.ATTR_PORT_INFO, 9, 0x001C),
    (w.GET, w.ATTR_GUID_INFO, 1, 0x001C),
    (w.GET, w.ATTR_PKEY_TABLE, (9 << 16), 0x001C),
    (w.GET, w.ATTR_PKEY_TABLE, (1 << 16) | 1, 0x001C),  # block 1 of a 32-entry table
    (w.GET, w.ATTR_PKEY_TABLE, (0x102 << 16), 0x001C),  # port 258, not port 2
    (w.SEND, w.ATTR_NODE_INFO, 0, 0x0008),
])
def test_sma_status_codes(fab, method, attr_id, attr_mod, status):
    resp = fab.sm.dr(method, attr_id, fab.path("Switch1"), attr_mod=attr_mod)
    assert resp.status == status


def test_sma_lft_block_round_trip(fab):
    path = fab.path("Switch2")
    ports = tuple(range(64))
    fab.sm.set(w.LinearForwardingTable, w.ATTR_LFT, path, w.LinearForwardingTable(ports=ports), attr_mod=5)
    assert fab.sm.get(w.LinearForwardingTable, w.ATTR_LFT, path, attr_mod=5).ports == ports
    assert bytes(fab["Switch2"].lft[320:384]) == bytes(ports)


def test_sma_pkey_table_round_trip_with_switch_port_selection(fab):
    path = fab.path("Switch1")
    table = w.PKeyTable(pkeys=(0xFFFF, 0x8123, 0x0456) + (0,) * 29)
    assert fab.sm.set(w.PKeyTable, w.ATTR_PKEY_TABLE, path, table, attr_mod=2 << 16) == table
    assert fab.sm.get(w.PKeyTable, w.ATTR_PKEY_TABLE, path, attr_mod=2 << 16) == table
    assert fab["Switch1"].ports[2].pkeys[:3] == [0xFFFF, 0x8123, 0x0456]
    default = (0xFFFF,) + (0,) * 31
    for port in (0, 1, 3):
        assert fab.sm.get(w.PKeyTable, w.ATTR_PKEY_TABLE, path, attr_mod=port << 16).pkeys == default
    # an HCA: attr_mod is the block, the port is the one the SMP arrived on
    hpath = fab.path("Hca4")
    assert fab.sm.set(w.PKeyTable, w.ATTR_PKEY_TABLE, hpath, table) == table
    assert fab["Hca4"].ports[1].pkeys[:3] == [0xFFFF, 0x8123, 0x0456]
    assert ("Hca4", "pkey_change", 1, None) in fab.events


def test_sma_m_key_protection_level_2(fab):
    path = fab.path("Hca3")
    pinfo_set(fab, "Hca3", 1, m_key=0x1234, m_key_protect_bits=2)
    with pytest.raises(SMPFailed, match="no response"):
        fab.sm.get(w.PortInfo, w.ATTR_PORT_INFO, path, attr_mod=1)  # M_Key 0: wrong
    assert fab["Hca3"].drops["m_key_violation"] == 1
    resp = fab.sm.dr(w.GET, w.ATTR_PORT_INFO, path, attr_mod=1, m_key=0x1234)
    pi = w.PortInfo.unpack(resp.data)
    assert (resp.status, pi.m_key, pi.m_key_protect_bits, pi.m_key_violations) == (0, 0x1234, 2, 1)
    # a Set with the wrong key changes nothing
    new = pi.replace(lid=0x99, port_state=0, phys_state=0, neighbor_mtu=0, link_speed_enabled=0,
                     link_width_enabled=0)
    with pytest.raises(SMPFailed):
        fab.sm.dr(w.SET, w.ATTR_PORT_INFO, path, new, attr_mod=1, m_key=0x4321)
    assert fab["Hca3"].ports[1].lid == fab.lid("Hca3")
    assert pinfo(fab, "Hca3", 1, m_key=0x1234).m_key_violations == 2
    # other attributes are protected too, other nodes are not
    with pytest.raises(SMPFailed):
        fab.sm.get(w.NodeInfo, w.ATTR_NODE_INFO, path)
    assert fab.sm.get(w.NodeInfo, w.ATTR_NODE_INFO, fab.path("Hca4")).node_guid == fab.guid("Hca4")


def test_sma_m_key_protection_levels_0_and_1(fab):
    path = fab.path("Hca3")
    pinfo_set(fab, "Hca3", 1, m_key=0x1234, m_key_protect_bits=1)
    pi = fab.sm.get(w.PortInfo, w.ATTR_PORT_INFO, path, attr_mod=1)  # level 1: a Get succeeds ...
    assert (pi.m_key, pi.m_key_protect_bits) == (0, 1)  # ... with the M_Key hidden
    assert fab.sm.dr(w.GET, w.ATTR_PORT_INFO, path, attr_mod=1, m_key=0x1234).data[:8] == \
        (0x1234).to_bytes(8, "big")
    set_prot0 = pi.replace(m_key=0x1234, m_key_protect_bits=0, port_state=0, phys_state=0, neighbor_mtu=0,
                           link_speed_enabled=0, link_width_enabled=0)
    with pytest.raises(SMPFailed):  # a Set with the wrong key fails at level 1 ...
        fab.sm.dr(w.SET, w.ATTR_PORT_INFO, path, set_prot0, attr_mod=1, m_key=0)
    resp = fab.sm.dr(w.SET, w.ATTR_PORT_INFO, path, set_prot0, attr_mod=1, m_key=0x1234)
    assert resp.status == 0 and fab["Hca3"].ports[1].m_key_protect == 0
    pi = fab.sm.get(w.PortInfo, w.ATTR_PORT_INFO, path, attr_mod=1)  # level 0: Get shows the key
    assert pi.m_key == 0x1234
    with pytest.raises(SMPFailed):  # ... and at level 0 (IBA 14.2.4.1: protection bits only govern Gets)
        fab.sm.set(w.PortInfo, w.ATTR_PORT_INFO, path, set_prot0.replace(lid=0x99), attr_mod=1)
    assert fab["Hca3"].ports[1].lid == fab.lid("Hca3")
    assert fab["Hca3"].ports[1].m_key_violations == 2


def test_sma_lid_routed_smp_to_a_switch_lid(fab):
    for target in ("Switch2", "Switch1", "Hca4"):
        smp = w.new_mad(w.SMPLid, method=w.GET, tid=0x4000 + fab.lid(target), attr_id=w.ATTR_NODE_INFO)
        resp = fab.smp(smp, dlid=fab.lid(target))
        assert resp is not None, target
        assert (resp.mgmt_class, resp.method, resp.status) == (w.CLASS_SUBN_LID, w.GET_RESP, 0)
        ni = w.NodeInfo.unpack(resp.data)
        assert ni.node_guid == fab.guid(target)
    assert w.NodeInfo.unpack(resp.data).node_type == sa.NODE_TYPE_CA
    # LID-routed SMPs need routes: to a LID nobody has, the first switch drops it
    smp = w.new_mad(w.SMPLid, method=w.GET, tid=0x4999, attr_id=w.ATTR_NODE_INFO)
    assert fab.smp(smp, dlid=0x40) is None
    assert fab["Switch1"].drops["no_route"] == 1


# == 6. PMA ======================================================================================


def pma(fab, dst, method=w.GET, attr=None, attr_id=w.ATTR_PORT_COUNTERS, src="Hca1", tid=None):
    """A PerfMgt GMP from ``src``'s QP1 to ``dst``'s QP1; the response MAD."""
    data = w.put_attr(attr, 192) if attr is not None else bytes(192)
    tid = tid or (0x900000 + fab.net.delivered)
    mad = w.new_mad(w.PMAMad, method=method, tid=tid, attr_id=attr_id, data=data)
    fab.send(src, 1, dst, 1, mad.pack(), qkey=w.QKEY_GSI)
    got = [c for c in fab[src].qps[1].poll() if w.parse_mad(c.payload).tid == tid]
    assert len(got) == 1, f"no PMA response from {dst}"
    assert (got[0].src_qp, got[0].qkey) == (1, w.QKEY_GSI)
    resp = w.parse_mad(got[0].payload)
    assert isinstance(resp, w.PMAMad) and resp.method == w.GET_RESP
    return resp


def _traffic(fab, n=3, src="Hca3", dst="Hca4", size=100):
    a, b = fab[src].create_qp(QKEY), fab[dst].create_qp(QKEY)
    for _ in range(n):
        fab.send(src, a.qpn, dst, b.qpn, bytes(size))
    assert len(b.poll()) == n


def test_pma_port_counters_get_from_a_switch(fab):
    _traffic(fab, 3, "Hca3", "Hca4")  # Switch2 port 2 transmits 3 packets of 100 octets
    sw = fab["Switch2"]
    want = dict(sw.ports[2].counters.pc)
    resp = pma(fab, "Switch2", attr=w.PortCounters(port_select=2))
    assert resp.status == 0
    pc = w.PortCounters.unpack(resp.data)
    assert pc.port_select == 2
    assert {k: getattr(pc, k) for k in want} == want
    assert pc.port_xmit_pkts >= 3


def test_pma_port_counters_get_from_an_hca(fab):
    _traffic(fab, 2, "Hca3", "Hca4", size=40)
    c = dict(fab["Hca4"].ports[1].counters.pc)
    resp = pma(fab, "Hca4", attr=w.PortCounters(port_select=1))
    pc = w.PortCounters.unpack(resp.data)
    gmp_words = words(bytes(8 + 12 + 8 + 256 + 6))
    # read after the request arrived, before the response left
    assert (pc.port_rcv_pkts, pc.port_rcv_data) == (c["port_rcv_pkts"] + 1, c["port_rcv_data"] + gmp_words)
    assert (pc.port_xmit_pkts, pc.port_xmit_data) == (c["port_xmit_pkts"], c["port_xmit_data"])
    assert fab["Hca4"].ports[1].counters.pc["port_xmit_pkts"] == c["port_xmit_pkts"] + 1
    assert pc.port_rcv_errors == 0 and pc.port_select == 1


def test_pma_counter_select_resets_only_the_selected_counters(fab):
    _traffic(fab, 2, "Hca3", "Hca1")
    fab.send("Hca3", fab["Hca3"].create_qp(QKEY).qpn, 0x50, 1, b"nowhere")  # a relay error
    raw = _one_packet(fab, dlid=fab.lid("Hca1"))
    fab.inject_raw("Hca3", 1, raw[:-1] + bytes([raw[-1] ^ 1]))  # a receive error (bad VCRC)
    p = fab["Switch1"].ports[2].counters.pc
    assert p["port_rcv_errors"] == 1 and p["port_rcv_switch_relay_errors"] == 1
    before = dict(p)
    select = 1 << 3 | 1 << 13 | 1 << 15  # PortRcvErrors, PortRcvData, PortRcvPkts
    resp = pma(fab, "Switch1", method=w.SET, attr=w.PortCounters(port_select=2, counter_select=select))
    assert resp.status == 0
    pc = w.PortCounters.unpack(resp.data)
    assert (pc.port_rcv_errors, pc.port_rcv_data, pc.port_rcv_pkts) == (0, 0, 0)
    assert pc.port_rcv_switch_relay_errors == 1
    assert pc.port_xmit_pkts == before["port_xmit_pkts"] and pc.port_xmit_data == before["port_xmit_data"]
    assert {k: v for k, v in p.items() if k not in ("port_rcv_errors", "port_rcv_data", "port_rcv_pkts")} == \
        {k: v for k, v in before.items() if k not in ("port_rcv_errors", "port_rcv_data", "port_rcv_pkts")}
    assert fab["Switch1"].ports[2].counters.ext["port_rcv_pkts"] > 0  # extended counters are separate
    assert fab["Switch1"].ports[3].counters.pc["port_rcv_pkts"] > 0  # and other ports untouched


def test_pma_port_select_all_sums_the_ports(fab):
    _traffic(fab, 2, "Hca3", "Hca4")
    fab.send("Hca3", fab["Hca3"].create_qp(QKEY).qpn, 0x50, 1, b"nowhere")
    fab.send("Hca1", fab["Hca1"].create_qp(QKEY).qpn, 0x51, 1, b"nowhere")
    resp = pma(fab, "Switch1", attr=w.PortCounters(port_select=0xFF))
    pc = w.PortCounters.unpack(resp.data)
    ports = [fab["Switch1"].ports[n].counters.pc for n in range(1, 9)]
    total = {k: sum(p[k] for p in ports) for k in ports[0]}
    resp_words = words(bytes(8 + 12 + 8 + 256 + 6))  # the response itself left after the read
    assert pc.port_rcv_switch_relay_errors == total["port_rcv_switch_relay_errors"] == 2
    assert pc.port_rcv_pkts == total["port_rcv_pkts"] and pc.port_rcv_data == total["port_rcv_data"]
    assert pc.port_xmit_pkts == total["port_xmit_pkts"] - 1
    assert pc.port_xmit_data == total["port_xmit_data"] - resp_words
    # Set with PortSelect 0xFF resets every port
    pma(fab, "Switch1", method=w.SET, attr=w.PortCounters(port_select=0xFF, counter_select=1 << 5))
    assert all(fab["Switch1"].ports[n].counters.pc["port_rcv_switch_relay_errors"] == 0 for n in range(9))


def test_pma_port_counters_extended(fab):
    _traffic(fab, 3, "Hca3", "Hca4", size=200)
    ext = fab["Switch2"].ports[2].counters.ext
    want = dict(ext)
    resp = pma(fab, "Switch2", attr=w.PortCountersExtended(port_select=2), attr_id=w.ATTR_PORT_COUNTERS_EXT)
    pce = w.PortCountersExtended.unpack(resp.data)
    assert {k: getattr(pce, k) for k in want} == want
    assert pce.port_unicast_xmit_pkts == pce.port_xmit_pkts >= 3
    assert pce.port_multicast_xmit_pkts == 0
    select = 1 << 0 | 1 << 4  # PortXmitData, PortUnicastXmitPkts
    resp = pma(fab, "Switch2", method=w.SET, attr=w.PortCountersExtended(port_select=2, counter_select=select),
               attr_id=w.ATTR_PORT_COUNTERS_EXT)
    pce = w.PortCountersExtended.unpack(resp.data)
    assert (pce.port_xmit_data, pce.port_unicast_xmit_pkts) == (0, 0)
    assert pce.port_xmit_pkts == want["port_xmit_pkts"] and pce.port_rcv_pkts == want["port_rcv_pkts"]
    assert fab["Switch2"].ports[2].counters.pc["port_xmit_data"] > 0  # PortCounters are separate


@pytest.mark.parametrize("method, attr_id, attr, status", [
    (w.SEND, w.ATTR_PORT_COUNTERS, None, 0x0008),
    (w.GET_TABLE, w.ATTR_PORT_COUNTERS, None, 0x0008),
    (w.GET, 0x0077, None, 0x000C),
    (w.SET, w.ATTR_CLASS_PORT_INFO, None, 0x000C),
    (w.GET, w.ATTR_PORT_COUNTERS, w.PortCounters(port_select=9), 0x001C),
    (w.GET, w.ATTR_CLASS_PORT_INFO, None, 0),
])
def test_pma_status_codes(fab, method, attr_id, attr, status):
    resp = pma(fab, "Switch2", method=method, attr_id=attr_id, attr=attr)
    assert resp.status == status
    if attr_id == w.ATTR_CLASS_PORT_INFO and status == 0:
        cpi = w.ClassPortInfo.unpack(resp.data)
        assert cpi.capability_mask & (1 << 8)  # AllPortSelect


def test_pma_request_to_a_switch_needs_the_gsi_qkey(fab):
    mad = w.new_mad(w.PMAMad, method=w.GET, tid=1, attr_id=w.ATTR_PORT_COUNTERS)
    fab.send("Hca1", 1, "Switch1", 1, mad.pack(), qkey=0x1234)
    assert fab["Switch1"].drops["qkey"] == 1
    assert fab["Switch1"].ports[0].q_key_violations == 1
    assert fab["Hca1"].qps[1].poll() == []


def test_switch_answers_gmps_only_off_vl15(fab):
    mad = w.new_mad(w.PMAMad, method=w.GET, tid=3, attr_id=w.ATTR_PORT_COUNTERS,
                    data=w.put_attr(w.PortCounters(port_select=1), 192))
    raw = w.build_ud_packet(slid=fab.lid("Hca1"), dlid=fab.lid("Switch1"), dest_qp=1, src_qp=1,
                            qkey=w.QKEY_GSI, vl=w.VL15, payload=mad.pack())
    before, dbefore = fab.counters(), fab.drops()
    fab.inject_raw("Hca1", 1, raw)
    assert fab["Hca1"].qps[1].poll() == []
    assert drop_delta(dbefore, fab.drops()) == {("Switch1", "vl15_not_qp0"): 1}
    assert _errors_only(counter_delta(before, fab.counters())) == {("Switch1", 1, "port_rcv_errors"): 1}


def test_switch_key_violation_counters_saturate(fab):
    p0 = fab["Switch1"].ports[0]
    p0.q_key_violations = p0.p_key_violations = 0xFFFE
    mad = w.new_mad(w.PMAMad, method=w.GET, tid=1, attr_id=w.ATTR_PORT_COUNTERS).pack()
    for _ in range(2):
        fab.send("Hca1", 1, "Switch1", 1, mad, qkey=0x1234)
    _pkeys(fab, "Hca1", 0xFFFF, 0x8555)
    qp = fab["Hca1"].create_qp(w.QKEY_GSI, pkey_index=1)
    for _ in range(2):
        fab.send("Hca1", qp.qpn, "Switch1", 1, mad)
    assert fab["Switch1"].drops["qkey"] == 2 and fab["Switch1"].drops["pkey"] == 2
    pi = fab.sm.get(w.PortInfo, w.ATTR_PORT_INFO, fab.path("Switch1"), attr_mod=0)
    assert (pi.q_key_violations, pi.p_key_violations) == (0xFFFF, 0xFFFF)


# == 7. traps ====================================================================================


def _traps(fab):
    """Trap SMPs that reached the SM's QP0 (drained): [(tid, Notice, slid)]."""
    out = []
    for c in fab["Hca1"].qps[0].poll(1000):
        m = w.parse_mad(c.payload)
        if m.method == w.TRAP:
            out.append((m.tid, w.Notice.unpack(m.data.ljust(80, b"\0")), c.slid))
    return out


def test_trap_128_on_link_change_until_repressed(fab):
    sw_lid = fab.lid("Switch1")
    path = fab.path("Switch1")
    assert fab.sm.get(w.SwitchInfo, w.ATTR_SWITCH_INFO, path).port_state_change == 0
    fab.net.set_link("Switch1", 2, False)  # pull Hca3's cable
    traps = _traps(fab)
    assert len(traps) == 1
    tid, notice, slid = traps[0]
    assert slid == sw_lid
    assert (notice.is_generic, notice.type, notice.producer_type, notice.trap_num, notice.issuer_lid) == \
        (1, sa.NOTICE_TYPE_URGENT, sa.PRODUCER_SWITCH, 128, sw_lid)
    assert notice.data_details[:2] == sw_lid.to_bytes(2, "big")  # LIDADDR
    assert fab.sm.get(w.SwitchInfo, w.ATTR_SWITCH_INFO, path).port_state_change == 1
    # not repressed: resent every TRAP_RESEND_S with the same TID
    fab.net.advance(TRAP_RESEND_S / 2)
    assert _traps(fab) == []
    fab.net.advance(TRAP_RESEND_S * 0.6)
    assert [t[0] for t in _traps(fab)] == [tid]
    fab.net.advance(TRAP_RESEND_S * 1.1)
    assert [t[0] for t in _traps(fab)] == [tid]
    # TrapRepress with the same TID stops it
    rep = w.new_mad(w.SMPLid, method=w.TRAP_REPRESS, tid=tid, attr_id=w.ATTR_NOTICE, data=notice.pack()[:64])
    assert fab.smp(rep, dlid=sw_lid) is None  # a TrapRepress has no response
    for _ in range(5):
        fab.net.advance(TRAP_RESEND_S * 1.1)
    assert _traps(fab) == []
    # PortStateChange is write-one-to-clear
    si = fab.sm.get(w.SwitchInfo, w.ATTR_SWITCH_INFO, path)
    assert fab.sm.set(w.SwitchInfo, w.ATTR_SWITCH_INFO, path, si.replace(port_state_change=1)).port_state_change == 0
    assert fab.sm.get(w.SwitchInfo, w.ATTR_SWITCH_INFO, path).port_state_change == 0
    assert fab.sm.set(w.SwitchInfo, w.ATTR_SWITCH_INFO, path, si.replace(port_state_change=0)).port_state_change == 0


def test_trap_resends_are_bounded_without_a_repress(fab):
    fab.net.set_link("Switch2", 2, False)  # pull Hca4's cable at Switch2
    sent = _traps(fab)
    for _ in range(TRAP_MAX_SENDS + 3):
        fab.net.advance(TRAP_RESEND_S * 1.01)
        sent += _traps(fab)
    assert len(sent) == TRAP_MAX_SENDS and len({t[0] for t in sent}) == 1
    assert sent[0][1].issuer_lid == fab.lid("Switch2")


def test_trap_repress_with_another_tid_does_not_stop_it(fab):
    fab.net.set_link("Switch1", 2, False)
    ((tid, notice, _),) = _traps(fab)
    rep = w.new_mad(w.SMPLid, method=w.TRAP_REPRESS, tid=tid + 1, attr_id=w.ATTR_NOTICE)
    fab.smp(rep, dlid=fab.lid("Switch1"))
    fab.net.advance(TRAP_RESEND_S * 1.1)
    assert [t[0] for t in _traps(fab)] == [tid]


def test_trap_repress_needs_the_m_key(fab):
    sw_lid = fab.lid("Switch1")
    pinfo_set(fab, "Switch1", 0, m_key=0x55, m_key_protect_bits=0)
    fab.net.set_link("Switch1", 2, False)
    ((tid, notice, _),) = _traps(fab)
    rep = w.new_mad(w.SMPLid, method=w.TRAP_REPRESS, tid=tid, attr_id=w.ATTR_NOTICE, data=notice.pack()[:64])
    fab.smp(rep, dlid=sw_lid)  # M_Key 0: wrong
    assert fab["Switch1"].ports[0].m_key_violations == 1
    fab.net.advance(TRAP_RESEND_S * 1.1)
    assert [t[0] for t in _traps(fab)] == [tid]
    fab.smp(rep.replace(m_key=0x55), dlid=sw_lid)
    fab.net.advance(TRAP_RESEND_S * 1.1)
    assert _traps(fab) == []


def test_no_trap_before_the_switch_knows_the_sm():
    fab = Fab(bring_up=False)
    fab.net.set_link("Switch1", 2, False)
    assert fab["Switch1"].port_state_change == 1
    assert fab["Hca1"].qps[0].poll() == []
    assert fab["Switch1"].next_deadline() is None
