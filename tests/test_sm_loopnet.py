"""Behaviour of the subnet manager, end to end over LoopNet (sans-IO, deterministic, fast).

The real SM runs on an HCA (``SmNet``); everything it does reaches the devices as SMPs, and every
check below looks at the devices (their ports, tables, queues, counters), at what an SMP Get from
another HCA reads back, or at what SA MADs from an HCA's QP1 get answered: not at the SM's own
idea of the fabric.

Topologies: ``fattree:2,2,2,2`` (2 leaves, 2 spines, 2 HCAs per leaf, 2 parallel cables between
each leaf and each spine: node0001/node0002 on leaf01 ports 1-2, node0003/node0004 on leaf02;
leaf ports 3-4 go to spine01, 5-6 to spine02) and ``fattree:2,2,3,2`` for multicast.
"""

from __future__ import annotations

import contextlib
import itertools
import random

import pytest

from fabric import wire as w
from fabric.mad import saclient as sc
from fabric.wire import smp_attrs as sa
from handsm import pop_mad
from smnet import SmNet
from fabric.topology import load_topology

FT = "fattree:2,2,2,2"
SWITCHES = ("leaf01", "leaf02", "spine01", "spine02")
HCAS = ("node0001", "node0002", "node0003", "node0004")
BCAST = w.ipoib_broadcast_mgid(0xFFFF)
_tids = itertools.count(0x7E570000)


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def net():
    n = SmNet(FT)
    n.start_sm()
    assert n.agent.last_up is not None, n.sm.log
    return n


def gid(net, name, port=1):
    return w.make_gid(w.GID_PREFIX_DEFAULT, net.devices[name].ports[port].guid)


def sa_query(net, client, octets):
    """One SA request from ``client``'s QP1 to its SM LID; the one complete response."""
    d = net.devices[client]
    d.post_send(1, dlid=d.ports[1].sm_lid, dest_qp=1, payload=octets,
                qkey=w.QKEY_GSI, now=net.now)
    net.inject(client)
    done = net.sa_responses(client)
    assert len(done) == 1, f"{len(done)} responses"
    return done[0]


def sa_raw(net, client, octets):
    """Send SA octets as they are; the raw response MADs (maybe none)."""
    d = net.devices[client]
    d.post_send(1, dlid=d.ports[1].sm_lid, dest_qp=1, payload=octets,
                qkey=w.QKEY_GSI, now=net.now)
    net.inject(client)
    return [w.SAMad.unpack(c.payload) for c in d.qps[1].poll(10000)]


def smp_get(net, src, dlid, attr_id, attr_mod=0):
    """A LID-routed Get from ``src`` (an HCA that runs no SM); the GetResp, or None."""
    from fabric.devices.hca import send_smp

    hca = net.devices[src]
    assert hca.sm_consumer is None, "responses to the SM's node go to the SM"
    smp = w.new_mad(w.SMPLid, method=w.GET, tid=next(_tids), attr_id=attr_id, attr_mod=attr_mod)
    send_smp(hca, 1, smp, net.now, dlid=dlid)
    net.inject(src)
    return pop_mad(hca, smp.tid)


def port_info(net, name, src="node0002"):
    d = net.devices[name]
    r = smp_get(net, src, net.lid(name), w.ATTR_PORT_INFO, 0 if d.kind == "switch" else 1)
    assert r is not None and r.status == 0, r
    return w.PortInfo.unpack(r.data)


def all_pairs_talk(net, names=HCAS):
    for a, b in itertools.permutations(names, 2):
        got = net.send_ud(a, b, f"{a}>{b}".encode())
        assert [(c.payload, c.slid) for c in got] == [(f"{a}>{b}".encode(), net.lid(a))], (a, b)


def cabled_ports(net):
    for name, d in net.devices.items():
        for num, p in d.ports.items():
            if p.cabled:
                yield name, num, p


@contextlib.contextmanager
def smps_sent(sm):
    """Record (method, attribute) of every SMP the SM's engine sends meanwhile."""
    log = []
    orig = sm.engine._send

    def spy(req, now):
        log.append((req.smp.method, req.smp.attr_id))
        return orig(req, now)

    sm.engine._send = spy
    try:
        yield log
    finally:
        sm.engine._send = orig


def lft_of(net, name):
    d = net.devices[name]
    return bytes(d.lft[:d.lft_top + 1])


def routes_through(net, name, port):
    """LIDs that ``name``'s LFT sends out of ``port``."""
    return [lid for lid, p in enumerate(lft_of(net, name)) if p == port]


def read_guid2lid(path):
    out = {}
    with open(path) as f:
        for line in f:
            guid, lid, top = line.split()
            assert int(lid, 16) == int(top, 16)  # LMC 0
            out[int(guid, 16)] = int(lid, 16)
    return out


# -- 1. bring-up -------------------------------------------------------------------------------


def test_bring_up_every_cabled_port_active_and_lids_unique_as_in_guid2lid(tmp_path):
    g2l = tmp_path / "guid2lid"
    net = SmNet(FT, guid2lid_path=str(g2l))
    net.start_sm()
    up = net.agent.last_up
    assert (up.sweep, up.nodes, up.ports_active) == (1, 8, 24)
    # when each step of the sweep began, in order, the last being SUBNET UP itself
    steps = dict(up.stages)
    assert list(steps) == ["discovery", "lids", "routes", "ports", "armed", "active", "up"]
    assert list(steps.values()) == sorted(steps.values()) and steps["discovery"] == 0.0
    assert steps["up"] == up.seconds
    assert "steps began at (s): discovery 0.000, lids" in net.sm.log[-1]
    states = {(name, num): (p.state, p.phys) for name, num, p in cabled_ports(net)}
    assert len(states) == 24
    assert set(states.values()) == {(sa.PORT_ACTIVE, sa.PHYS_LINKUP)}
    lids = {n: net.lid(n) for n in net.devices}
    assert all(0 < lid < w.LID_MCAST_FIRST for lid in lids.values())
    assert len(set(lids.values())) == len(lids)
    # the file holds exactly the LIDs the ports were given, keyed by port GUID (switch: node GUID)
    guids = {n: (d.node_guid if d.kind == "switch" else d.ports[1].guid) for n, d in net.devices.items()}
    assert read_guid2lid(g2l) == {guids[n]: lids[n] for n in net.devices}
    # the SM's port takes the first LID, as OpenSM's does
    assert lids["node0001"] == 1


def test_bring_up_sm_lid_and_subnet_timeout_in_every_portinfo(net):
    sm_lid = net.lid("node0001")
    for name in net.devices:
        pi = port_info(net, name)
        assert (pi.lid, pi.master_sm_lid) == (net.lid(name), sm_lid), name
        assert pi.port_state == sa.PORT_ACTIVE
        # Sets after the LID Set (Armed, Active) must not undo it: the SM arms and activates
        # from the PortInfo the port answered with, not from what discovery read before.
        assert pi.subnet_timeout == 18, name
    assert all(net.devices[h].ports[1].sm_lid == sm_lid for h in HCAS)
    # ClientReregister on the first master sweep: once on every CA port, never on a switch
    rereg = [(n, p) for n, k, p in net.events_seen if k == "client_reregister"]
    assert sorted(rereg) == [(h, 1) for h in HCAS]


def test_bring_up_lfts_carry_ud_between_every_hca_pair(net):
    hca_lids = [net.lid(h) for h in HCAS]
    for sw in SWITCHES:
        lft = lft_of(net, sw)
        assert lft[net.lid(sw)] == 0  # the switch's own LID: port 0
        assert all(lft[lid] not in (0, 0xFF) for lid in hca_lids)
        assert lft == bytes(net.sm.lfts[net.devices[sw].node_guid][:len(lft)])
    all_pairs_talk(net)
    assert not [(n, k) for n, d in net.devices.items() for k in d.drops], \
        {n: dict(d.drops) for n, d in net.devices.items()}


def test_path_record_between_two_hcas(net):
    src, dst = "node0002", "node0004"
    r = sa_query(net, src, sc.path_record_query(gid(net, src), gid(net, dst))[1])
    assert r.ok and r.method == w.GET_RESP
    (pr,) = r.records
    assert (pr.sgid, pr.dgid) == (gid(net, src), gid(net, dst))
    assert (pr.slid, pr.dlid) == (net.lid(src), net.lid(dst))
    assert (pr.pkey, pr.sl, pr.mtu, pr.rate) == (0xFFFF, 0, sa.MTU_4096, 3)
    assert (pr.hop_limit, pr.reversible, pr.pkt_life) == (0, 1, 18)
    # the same path asked by LIDs, by a third port
    r2 = sa_query(net, "node0003", sc.path_record_query(None, None, slid=net.lid(src),
                                                         dlid=net.lid(dst))[1])
    assert r2.ok and r2.records[0].dlid == net.lid(dst) and r2.records[0].slid == net.lid(src)
    # to a LID nobody has: no record
    r3 = sa_query(net, src, sc.path_record_query(gid(net, src), None, dlid=0x1234)[1])
    assert r3.status == w.SA_ERR_NO_RECORDS and r3.records == ()


def test_second_heavy_sweep_of_an_unchanged_fabric_sets_nothing(net):
    sweeps = net.sm.sweeps
    with smps_sent(net.sm) as sent:
        net.request_sweep()
    assert net.sm.sweeps == sweeps + 1
    assert net.sm.stats.sets == {}, net.sm.log[-1]
    assert sent and {m for m, _ in sent} == {w.GET}
    assert {a for _, a in sent} >= {w.ATTR_NODE_INFO, w.ATTR_PORT_INFO, w.ATTR_SWITCH_INFO}


def test_light_sweep_sends_only_switchinfo_gets(net):
    sweeps = net.sm.sweeps
    with smps_sent(net.sm) as sent:
        net.settle(10.5)  # one sweep_interval
    assert sent == [(w.GET, w.ATTR_SWITCH_INFO)] * len(SWITCHES)
    assert net.sm.sweeps == sweeps  # nothing changed: no heavy sweep
    with smps_sent(net.sm) as sent:
        net.settle(10.5)
    assert len(sent) == len(SWITCHES)  # and again a period later


def test_sm_on_a_clock_that_does_not_start_at_zero():
    """Answers of the SM node's own SMA reach the SM with the current time (they were stamped
    0.0, so every SMP sent from their callback timed out at the next tick: a spurious retry on
    every bring-up of a real fabric, whose clock is time.monotonic())."""
    net = SmNet(FT)
    net.advance(1000.0)
    agent = net.start_sm(run=False)  # the first SMPs are in the queue, undelivered
    net.advance(0.01)  # a timer tick before the answers arrive
    net.settle()
    assert agent.last_up is not None
    assert (agent.sm.engine.timeouts, agent.sm.engine.failed) == (0, 0)
    assert 0 <= agent.last_up.seconds < 0.1
    assert agent.sm.next_light == pytest.approx(net.now + 10.0, abs=0.1)


# -- 2. SM restart and takeover ----------------------------------------------------------------


def test_restart_on_the_same_port_keeps_lids_and_rewrites_no_route(tmp_path):
    g2l = str(tmp_path / "guid2lid")
    net = SmNet(FT, guid2lid_path=g2l)
    net.start_sm()
    lids = {n: net.lid(n) for n in net.devices}
    net.stop_sm()
    net.events_seen.clear()
    agent = net.start_sm()  # a new SM process: nothing programmed yet, same guid2lid
    assert agent.sm.sweeps == 1 and agent is net.agent
    assert {n: net.lid(n) for n in net.devices} == lids
    kinds = [k for _, k, _ in net.events_seen]
    assert "lid_change" not in kinds and "sm_change" not in kinds
    # it reads the LFTs and finds them right; ports stay Active (no Armed/Active Set)
    assert "LFT" not in agent.sm.stats.sets and "PortState" not in agent.sm.stats.sets
    assert sorted(p for p, k, _ in net.events_seen if k == "client_reregister") == list(HCAS)
    all_pairs_talk(net)


def test_guid2lid_file_wins_over_fresh_assignment(tmp_path):
    """A power-cycled fabric (ports carry no LID) gets the LIDs of the guid2lid file."""
    g2l = tmp_path / "guid2lid"
    first = SmNet(FT, guid2lid_path=str(g2l))
    first.start_sm()
    cache = read_guid2lid(g2l)
    # an operator pinned node0004 to LID 0x40 and spine02 to 0x41
    pinned = {first.devices["node0004"].ports[1].guid: 0x40, first.devices["spine02"].node_guid: 0x41}
    cache.update(pinned)
    g2l.write_text("".join(f"0x{g:016x} 0x{lid:04x} 0x{lid:04x}\n" for g, lid in cache.items()))
    net = SmNet(FT, guid2lid_path=str(g2l))  # the same fabric after a power cycle
    assert all(net.lid(n) == 0 for n in net.devices)
    net.start_sm()
    assert (net.lid("node0004"), net.lid("spine02")) == (0x40, 0x41)
    for n in net.devices:
        d = net.devices[n]
        assert net.lid(n) == cache[d.node_guid if d.kind == "switch" else d.ports[1].guid]
    all_pairs_talk(net)
    assert read_guid2lid(g2l) == cache


def test_new_sm_on_another_hca_keeps_the_lids_the_ports_carry(net):
    lids = {n: net.lid(n) for n in net.devices}
    lfts = {s: lft_of(net, s) for s in SWITCHES}
    net.stop_sm()
    net.events_seen.clear()
    agent = net.start_sm("node0003", 1)  # no guid2lid file
    assert agent.sm.config.guid2lid_path is None and agent.last_up is not None
    assert {n: net.lid(n) for n in net.devices} == lids
    assert {s: lft_of(net, s) for s in SWITCHES} == lfts
    assert "LFT" not in agent.sm.stats.sets  # only the blocks that differ: none
    new_sm = net.lid("node0003")
    for name in net.devices:
        if name != "node0002":
            assert port_info(net, name).master_sm_lid == new_sm, name
    assert net.devices["node0002"].ports[1].sm_lid == new_sm
    # every CA port is told to re-register with the new SA, exactly once
    rereg = sorted(p for p, k, _ in net.events_seen if k == "client_reregister")
    assert rereg == list(HCAS)
    assert not [e for e in net.events_seen if e[1] in ("lid_change", "port_state")]
    # the SA moved with it
    r = sa_query(net, "node0002", sc.path_record_query(gid(net, "node0002"), gid(net, "node0001"))[1])
    assert r.ok and r.records[0].dlid == lids["node0001"]
    all_pairs_talk(net)


def test_unicast_keeps_flowing_during_a_takeover(net):
    qps = {h: net.devices[h].create_qp(0x2222) for h in HCAS}
    posted = {h: [] for h in HCAS}
    seq = itertools.count()

    def post_all():
        """Every HCA sends to every other, without running the queue."""
        for a, b in itertools.permutations(HCAS, 2):
            payload = f"{next(seq)}:{a}>{b}".encode()
            net.devices[a].post_send(qps[a].qpn, dlid=net.lid(b), dest_qp=qps[b].qpn,
                                     payload=payload, now=net.now)
            net.send_out(a)
            posted[b].append(payload)

    post_all()
    net.run()
    net.stop_sm()
    agent = net.start_sm("node0004", 1, run=False)
    during = 0
    while net.queue:
        net.run(max_steps=20)
        if agent.sm.state == "sweeping" and during < 10:
            during += 1
            post_all()
    assert during >= 5, "the datagrams were not interleaved with the sweep"
    assert agent.last_up is not None and agent.sm.state == "up"
    post_all()
    net.run()
    for h in HCAS:
        got = [c.payload for c in qps[h].poll(100000)]
        assert sorted(got) == sorted(posted[h]), h
    drops = {n: dict(d.drops) for n, d in net.devices.items() if d.drops}
    assert drops == {}


# -- 3. Trap 128 and rerouting -----------------------------------------------------------------


def test_trap_128_reroutes_around_a_pulled_cable_and_back():
    net = SmNet(FT)
    net.start_sm()
    sm = net.sm
    before = {s: lft_of(net, s) for s in SWITCHES}
    dst = net.lid("node0004")
    port = before["leaf01"][dst]  # the uplink that carries node0001/2 -> node0004
    assert 3 <= port <= 6
    peer, peer_port = net.peers[("leaf01", port)]
    assert routes_through(net, "leaf01", port)
    traps, sweeps = sm.traps_seen, sm.sweeps

    net.set_link("leaf01", port, False)
    assert sm.traps_seen > traps  # leaf01's trap went straight to the SM
    assert sm.sweeps > sweeps  # and it swept at once
    net.settle(5.0)  # the far end's trap is resent until it gets through and is repressed
    assert sm.traps_seen >= traps + 2
    assert all(not net.devices[s]._traps for s in SWITCHES), "a trap was never repressed"
    seen = sm.traps_seen
    net.settle(5.0)
    assert sm.traps_seen == seen  # TrapRepress: no more resends
    assert routes_through(net, "leaf01", port) == [] and routes_through(net, peer, peer_port) == []
    assert lft_of(net, "leaf01")[dst] != port
    assert net.devices["leaf01"].ports[port].state == sa.PORT_DOWN
    all_pairs_talk(net)

    sweeps = sm.sweeps
    net.set_link("leaf01", port, True)
    net.settle(1.0)
    assert sm.sweeps > sweeps
    assert net.devices["leaf01"].ports[port].state == sa.PORT_ACTIVE
    assert net.devices[peer].ports[peer_port].state == sa.PORT_ACTIVE
    # routed from scratch again (OpenSM's ignore_existing_lfts when a port comes up): balanced
    # as at bring-up, so the cable carries routes again
    assert routes_through(net, "leaf01", port)
    assert {s: lft_of(net, s) for s in SWITCHES} == before
    all_pairs_talk(net)


def test_light_sweep_finds_a_link_whose_traps_were_lost():
    net = SmNet(FT, sweep_interval=5.0)
    net.start_sm()
    sm = net.sm
    for s in SWITCHES:  # switches that send no trap: only PortStateChange tells
        net.devices[s].queue_trap = lambda *a, **k: []
    net.set_link("leaf02", 5, False)
    net.settle(0.5)
    assert sm.traps_seen == 0 and net.devices["leaf02"].port_state_change == 1
    sweeps = sm.sweeps
    net.settle(5.5)
    assert sm.sweeps == sweeps + 1  # the light sweep saw PortStateChange
    assert net.devices["leaf02"].port_state_change == 0  # cleared by the heavy sweep
    assert routes_through(net, "leaf02", 5) == []
    net.set_link("leaf02", 5, True)
    assert net.devices["leaf02"].ports[5].state == sa.PORT_INIT  # nobody arms it yet
    net.settle(5.5)
    assert net.devices["leaf02"].ports[5].state == sa.PORT_ACTIVE
    assert routes_through(net, "leaf02", 5)
    all_pairs_talk(net)


# -- 4. multicast ------------------------------------------------------------------------------


def test_ipoib_broadcast_group_exists_from_the_start(net):
    r = sa_query(net, "node0003", sc.mcmember_records(mgid=BCAST, method=w.GET)[1])
    assert r.ok
    (g,) = r.records
    assert bytes(g.mgid) == bytes.fromhex("ff12401bffff000000000000ffffffff")
    assert (g.mlid, g.qkey, g.pkey, g.mtu, g.rate, g.scope) == (0xC000, 0x0B1B, 0xFFFF, 4, 3, 2)
    # an IPoIB port joins it without creating anything
    r = sa_query(net, "node0003", sc.mcmember_join(BCAST, gid(net, "node0003"), 1)[1])
    assert r.ok and r.records[0].mlid == 0xC000 and r.records[0].qkey == 0x0B1B


def test_multicast_join_send_and_leave_through_the_sa():
    net = SmNet("fattree:2,2,3,2")  # leaf01: node0001-3 on ports 1-3; leaf02: node0004-6
    net.start_sm()
    mgid = bytes.fromhex("ff150000000000000000000000abcdef")
    members = ("node0001", "node0002", "node0005")
    mlid = None
    for name in members:
        r = sa_query(net, name, sc.mcmember_join(mgid, gid(net, name), 1, create=True)[1])
        assert r.ok, hex(r.status)
        assert mlid in (None, r.records[0].mlid)
        mlid = r.records[0].mlid
    assert w.LID_MCAST_FIRST < mlid <= w.LID_MCAST_LAST  # 0xC000 is IPoIB's broadcast group
    net.settle(0.1, step=0.01)  # the SM programs the MFTs just after the joins (batched), as OpenSM
    idx = mlid - w.LID_MCAST_FIRST
    mft = {s: net.devices[s].mft[idx] for s in SWITCHES}
    # leaf ports 4-5 go to spine01, 6-7 to spine02; spine01 ports 1-2 to leaf01, 3-4 to leaf02.
    # Tree: rooted at spine01 (closest to both leaves, lowest GUID), lowest port of each cable pair
    assert mft == {"leaf01": 1 << 1 | 1 << 2 | 1 << 4, "leaf02": 1 << 2 | 1 << 4,
                   "spine01": 1 << 1 | 1 << 3, "spine02": 0}

    qps = {}
    for name in ("node0001", "node0002", "node0003", "node0005", "node0006"):
        h = net.devices[name]
        qps[name] = h.create_qp(0x0B1B)
        # node0003 and node0006 attach locally without joining through the SA: no MFT leads to them
        h.attach_mcast(qps[name].qpn, mgid, mlid)

    def send(tag):
        h = net.devices["node0001"]
        h.post_send(qps["node0001"].qpn, dlid=mlid, dest_qp=w.QPN_MULTICAST,
                    payload=tag, dgid=mgid, now=net.now)
        net.inject("node0001")
        return {n: [c.payload for c in q.poll()] for n, q in qps.items()}

    got = send(b"one")
    assert got == {"node0001": [b"one"], "node0002": [b"one"], "node0005": [b"one"],
                   "node0003": [], "node0006": []}  # node0001's own copy is HCA loopback
    r = sa_query(net, "node0005", sc.mcmember_leave(mgid, gid(net, "node0005"), 1)[1])
    assert r.ok and r.method == w.DELETE_RESP and r.records[0].join_state == 0
    mft = {s: net.devices[s].mft[idx] for s in SWITCHES}
    assert mft == {"leaf01": 1 << 1 | 1 << 2, "leaf02": 0, "spine01": 0, "spine02": 0}
    got = send(b"two")
    assert got == {"node0001": [b"two"], "node0002": [b"two"], "node0005": [],
                   "node0003": [], "node0006": []}
    drops = {n: dict(net.devices[n].drops) for n in ("node0003", "node0005", "node0006")}
    assert drops == {"node0003": {}, "node0005": {}, "node0006": {}}  # nothing even got there
    # the group is listed with its two remaining members
    r = sa_query(net, "node0002", sc.mcmember_records(mgid=mgid)[1])
    assert r.ok and len(r.records) == 1 and r.records[0].mlid == mlid


# -- 5. partitions -----------------------------------------------------------------------------


@pytest.fixture
def pnet():
    from fabric.topology import load_topology

    topo = load_topology(FT)
    pg = {n.name: n.port_guids[1] for n in topo.hcas()}
    conf = ("Default=0x7fff, ipoib : ALL=full;\n"
            f"Storage=0x0002 : 0x{pg['node0001']:016x}=full, 0x{pg['node0002']:016x},"
            f" 0x{pg['node0003']:016x};\n")
    n = SmNet(topo, partitions=conf)
    n.start_sm()
    assert n.agent.last_up is not None
    return n


def test_partition_pkey_tables_are_programmed(pnet):
    want = {"node0001": [0xFFFF, 0x8002], "node0002": [0xFFFF, 0x0002], "node0003": [0xFFFF, 0x0002],
            "node0004": [0xFFFF]}
    for name, keys in want.items():
        src = "node0004" if name == "node0002" else "node0002"
        r = smp_get(pnet, src, pnet.lid(name), w.ATTR_PKEY_TABLE, 0)
        assert r is not None and r.status == 0
        table = w.PKeyTable.unpack(r.data).pkeys
        assert list(table) == keys + [0] * (32 - len(keys)), name


def _facing(net, hca):
    """The switch port an HCA's port 1 is cabled to: (switch device, port number)."""
    for lk in net.topology.links:
        if (lk.a, lk.a_port) == (hca, 1):
            return net.devices[lk.b], lk.b_port
        if (lk.b, lk.b_port) == (hca, 1):
            return net.devices[lk.a], lk.a_port
    raise KeyError(hca)


def test_limited_members_cannot_talk_but_the_full_member_reaches_both(pnet):
    before = port_info(pnet, "node0003", src="node0004").p_key_violations
    sw, num = _facing(pnet, "node0002")
    # partition enforcement (part_enforce both, OpenSM's default): the switch port facing the
    # sender has its table; the partition is in it, so the switch lets the packet through, and
    # the limited receiver refuses a limited sender (membership is the end ports' to enforce)
    assert sw.ports[num].pkey_enforce_in and sw.ports[num].pkey_enforce_out
    assert [k for k in sw.ports[num].pkeys if k] == [0xFFFF, 0x0002]
    assert pnet.send_ud("node0002", "node0003", b"limited>limited", pkey_index=1) == []
    assert port_info(pnet, "node0003", src="node0004").p_key_violations == before + 1
    assert pnet.devices["node0003"].drops["pkey"] == 1 and not sw.drops["pkey_inbound"]
    for limited in ("node0002", "node0003"):
        got = pnet.send_ud("node0001", limited, b"full>limited", pkey_index=1)
        assert [(c.payload, c.pkey) for c in got] == [(b"full>limited", 0x8002)]
        got = pnet.send_ud(limited, "node0001", b"limited>full", pkey_index=1)
        assert [(c.payload, c.pkey) for c in got] == [(b"limited>full", 0x0002)]
    # the default partition still joins them all
    assert pnet.send_ud("node0002", "node0003", b"default", pkey_index=0)[0].payload == b"default"
    # node0004 has no entry for 0x0002: it cannot even send with it
    assert pnet.devices["node0004"].ports[1].pkeys[1] == 0


def test_inbound_enforcement_refuses_a_partition_the_sender_is_not_in():
    """A sender uses a P_Key of a partition it was never given (set by hand): the switch port
    facing it refuses the packet on the way in (PortRcvConstraintErrors)."""
    net = SmNet("fattree:2,2,2,2", part_enforce="in")
    net.start_sm()
    net.devices["node0001"].ports[1].pkeys[1] = 0x8005
    sw, num = _facing(net, "node0001")
    rcv = sw.ports[num].counters.snapshot()["counters"]["port_rcv_constraint_errors"]
    assert net.send_ud("node0001", "node0003", b"foreign", pkey_index=1) == []
    assert sw.ports[num].counters.snapshot()["counters"]["port_rcv_constraint_errors"] == rcv + 1
    assert sw.drops["pkey_inbound"] == 1 and not net.devices["node0003"].drops["pkey"]


def test_without_enforcement_the_receiving_hca_refuses_the_packet():
    topo = load_topology("fattree:2,2,2,2")
    pg = {n.name: n.port_guids[1] for n in topo.hcas()}
    conf = ("Default=0x7fff, ipoib : ALL=full;\n"
            f"Storage=0x0002 : 0x{pg['node0001']:016x}=full, 0x{pg['node0002']:016x}, 0x{pg['node0003']:016x};\n")
    net = SmNet("fattree:2,2,2,2", partitions=conf, part_enforce="off")
    net.start_sm()
    sw, num = _facing(net, "node0002")
    assert not sw.ports[num].pkey_enforce_in and not sw.ports[num].pkey_enforce_out
    before = port_info(net, "node0003", src="node0004").p_key_violations
    assert net.send_ud("node0002", "node0003", b"limited>limited", pkey_index=1) == []
    assert port_info(net, "node0003", src="node0004").p_key_violations == before + 1
    assert net.devices["node0003"].drops["pkey"] == 1 and not sw.drops["pkey_inbound"]


def test_outbound_enforcement_refuses_a_packet_the_receiver_is_not_in():
    """A full member sends with a P_Key the receiver lacks: the switch port facing the receiver
    refuses it on the way out (PortXmitConstraintErrors) instead of the HCA."""
    net = SmNet("fattree:2,2,2,2", part_enforce="out")
    net.start_sm()
    a = net.devices["node0001"]
    a.ports[1].pkeys[1] = 0x8005  # a key the SM never gave anyone else (set by hand)
    sw, num = _facing(net, "node0003")
    assert sw.ports[num].pkey_enforce_out and not sw.ports[num].pkey_enforce_in
    xmit = sw.ports[num].counters.snapshot()["counters"]["port_xmit_constraint_errors"]
    assert net.send_ud("node0001", "node0003", b"foreign", pkey_index=1) == []
    assert sw.ports[num].counters.snapshot()["counters"]["port_xmit_constraint_errors"] == xmit + 1
    assert sw.drops["pkey_outbound"] == 1 and not net.devices["node0003"].drops["pkey"]
    assert net.send_ud("node0001", "node0003", b"default", pkey_index=0)[0].payload == b"default"


def test_path_records_follow_the_partitions(pnet):
    def path(req, a, b, pkey):
        return sa_query(pnet, req, sc.path_record_query(gid(pnet, a), gid(pnet, b), pkey=pkey)[1])

    for pkey in (0x0002, 0x8002):  # two limited members share nothing in Storage
        r = path("node0002", "node0002", "node0003", pkey)
        assert r.status == w.SA_ERR_NO_RECORDS and r.records == ()
    r = path("node0001", "node0001", "node0003", 0x8002)
    assert r.ok and (r.records[0].pkey, r.records[0].dlid) == (0x8002, pnet.lid("node0003"))
    r = path("node0002", "node0002", "node0001", 0x0002)
    assert r.ok and r.records[0].pkey == 0x0002  # the source's membership bit
    # node0004 is outside Storage: no Storage path from it, nor between it and a member
    r = path("node0004", "node0004", "node0002", 0x8002)
    assert r.status == w.SA_ERR_NO_RECORDS
    # without a P_Key, the lowest partition they share: the default one
    r = path("node0004", "node0004", "node0002", None)
    assert r.ok and r.records[0].pkey == 0xFFFF


# -- 6. malformed and invalid MADs -------------------------------------------------------------


def _with(octets, **fields):
    return w.SAMad.unpack(octets).replace(**fields).pack()


def test_sa_answers_bad_requests_with_the_spec_status_and_keeps_working(net):
    me = gid(net, "node0002")
    other = gid(net, "node0004")
    _, pr = sc.path_record_query(me, other)
    _, cpi = sc.class_port_info()
    new_mgid = bytes.fromhex("ff150000000000000000000000001234")
    cases = [
        ("GetTraceTable", _with(pr, method=w.GET_TRACE_TABLE), w.STATUS_METHOD_UNSUPPORTED),
        ("GetMulti", _with(pr, method=w.GET_MULTI), w.STATUS_METHOD_UNSUPPORTED),
        ("unknown attribute", _with(cpi, attr_id=0x7777), w.STATUS_METHOD_ATTR_UNSUPPORTED),
        ("Set(PathRecord)", _with(pr, method=w.SET), w.STATUS_METHOD_ATTR_UNSUPPORTED),
        ("Delete(NodeRecord)", _with(sc.node_records()[1], method=w.DELETE),
         w.STATUS_METHOD_ATTR_UNSUPPORTED),
        ("class version 1", _with(pr, class_version=1), w.STATUS_BAD_VERSION),
        ("base version 2", _with(pr, base_version=2), w.STATUS_BAD_VERSION),
        ("PathRecord without DGID/DLID", sc.path_record_query(me, None)[1],
         w.SA_ERR_REQ_INSUFFICIENT_COMPONENTS),
        ("PathRecord with half a ServiceID",
         _with(sc.path_record_query(me, other, service_id=5)[1],
               comp_mask=w.comp_mask(w.PR_COMP, "sgid", "dgid") | 1),
         w.SA_ERR_REQ_INSUFFICIENT_COMPONENTS),
        ("PathRecord MTU 7", sc.path_record_query(me, other, mtu=(2, 7))[1], w.SA_ERR_REQ_INVALID),
        ("PathRecord unknown DGID", sc.path_record_query(me, w.make_gid(w.GID_PREFIX_DEFAULT, 0xDEAD))[1],
         w.SA_ERR_REQ_INVALID_GID),
        ("create without Q_Key, P_Key, SL, FlowLabel, TClass", sc.mcmember_join(new_mgid, me, 1)[1],
         w.SA_ERR_REQ_INSUFFICIENT_COMPONENTS),
        ("join without JoinState",
         _with(sc.mcmember_join(BCAST, me, 1)[1], comp_mask=w.comp_mask(w.MCM_COMP, "mgid", "port_gid")),
         w.SA_ERR_REQ_INSUFFICIENT_COMPONENTS),
        ("create as a non-member", sc.mcmember_join(new_mgid, me, 2, create=True)[1], w.SA_ERR_REQ_INVALID),
        ("leave a group never joined", sc.mcmember_leave(new_mgid, me, 1)[1], w.SA_ERR_REQ_INVALID),
    ]
    for what, octets, status in cases:
        req = w.SAMad.unpack(octets)
        got = sa_raw(net, "node0002", octets)
        assert len(got) == 1, what
        (resp,) = got
        assert resp.status == status, f"{what}: 0x{resp.status:04x}"
        assert resp.tid == req.tid and resp.attr_id == req.attr_id, what
        assert resp.method == w.response_method(req.method), what
    # answered by nobody: Trap/Send/TrapRepress, responses, short MADs, other classes
    for octets in (_with(pr, method=w.SEND), _with(pr, method=w.TRAP), _with(pr, method=w.GET_RESP),
                   _with(pr, mgmt_class=w.CLASS_PERF), pr[:100]):
        assert sa_raw(net, "node0002", octets) == []
    assert net.sm.sa.mcast.get(new_mgid) is None  # no half-created group left behind
    r = sa_query(net, "node0002", pr)
    assert r.ok and r.records[0].dlid == net.lid("node0004")
    sweeps = net.sm.sweeps
    net.request_sweep()
    assert net.sm.sweeps == sweeps + 1 and net.sm.stats.sets == {}


def _to_sm(net, payload, *, front=False, slid=None):
    """An SMP (or anything) on the wire from leaf01 to node0001's QP0, the SM's."""
    raw = w.build_ud_packet(slid=slid or net.lid("leaf01"), dlid=net.lid("node0001"), dest_qp=0,
                            src_qp=0, qkey=0, vl=w.VL15, payload=payload)
    if front:
        net.queue.appendleft(("node0001", 1, 0, raw))
    else:
        net.inject("leaf01", [(1, raw)])


def test_garbage_at_the_sms_qp0_never_breaks_it(net):
    rng = random.Random(20240601)
    sm = net.sm
    lids = {n: net.lid(n) for n in net.devices}
    # random octets, random MADs of every SM class and method, responses nobody asked for
    for i in range(200):
        kind = i % 4
        if kind == 0:
            payload = bytes(rng.getrandbits(8) for _ in range(rng.choice([24, 64, 256])))
        else:
            cls = rng.choice([w.SMPLid, w.SMPDirected])
            mad = w.new_mad(cls, method=rng.choice([w.GET_RESP, w.TRAP, w.GET, w.SET, w.TRAP_REPRESS, 0x13]),
                            tid=rng.getrandbits(64), attr_id=rng.choice([2, 0x11, 0x12, 0x15, 0x19, 0xFF0]),
                            attr_mod=rng.getrandbits(8), data=bytes(rng.getrandbits(8) for _ in range(64)))
            payload = mad.pack()
        _to_sm(net, payload)
    net.settle(3.0)
    assert sm.state == "up" and net.devices["node0001"].drops  # dropped and counted, not raised
    # responses with the TIDs of outstanding requests but another attribute or class: ignored
    for trial in range(10):
        net.agent.request_sweep(net.now)
        net.send_out("node0001")
        net.run(max_steps=rng.randrange(1, 60))
        for tid, req in list(sm.engine.outstanding.items()):
            q = req.smp
            bad = w.new_mad(w.SMPLid, method=w.GET_RESP, tid=tid, attr_id=q.attr_id ^ 0x0F00,
                            attr_mod=q.attr_mod, data=bytes(rng.getrandbits(8) for _ in range(64)))
            _to_sm(net, bad.pack(), front=True)  # ahead of the real answer
            bad = w.new_mad(w.SMPLid, method=w.GET_RESP, tid=tid, attr_id=q.attr_id, attr_mod=q.attr_mod + 1,
                            data=bytes(64))
            _to_sm(net, bad.pack(), front=True)
        net.settle(1.0)
        assert sm.state == "up"
        assert sm.subnet is not None and len(sm.subnet.nodes) == 8, sm.log[-1]
        assert sm.stats.sets == {}, sm.log[-1]
    assert sm.engine.mismatched > 0 and sm.engine.failed == 0
    # and with matching attributes but random contents: no crash, and the next sweep mends all
    net.agent.request_sweep(net.now)
    net.send_out("node0001")
    net.run(max_steps=30)
    for tid, req in list(sm.engine.outstanding.items()):
        q = req.smp
        _to_sm(net, w.new_mad(w.SMPLid, method=w.GET_RESP, tid=tid, attr_id=q.attr_id, attr_mod=q.attr_mod,
                              data=bytes(rng.getrandbits(8) for _ in range(64))).pack(), front=True)
    net.settle(2.0)
    net.request_sweep()
    net.settle(1.0)
    assert sm.state == "up" and len(sm.subnet.nodes) == 8
    assert {n: net.lid(n) for n in net.devices} == lids
    assert set(p.state for _, _, p in cabled_ports(net)) == {sa.PORT_ACTIVE}
    all_pairs_talk(net)


def test_a_new_sa_answers_nothing_before_its_first_sweep_has_routed_the_subnet(net):
    """OpenSM does not answer SA queries before its first sweep: a restarted SM's SA must not answer
    from an empty subnet (status 0x0200). It holds what comes early and answers it, correctly, once
    the sweep has given it the subnet."""
    query = sc.path_record_query(gid(net, "node0003"), gid(net, "node0004"))[1]
    net.stop_sm()
    agent = net.start_sm(run=False)  # its first SMPs are queued: the sweep has not run
    d = net.devices["node0003"]
    answered_at = []
    sm_hca = agent.hca
    orig = agent._gmp

    def spy(dest, mad, now):
        answered_at.append(agent.sm.sa_ready)
        return orig(dest, mad, now)

    agent._gmp = spy
    d.post_send(1, dlid=d.ports[1].sm_lid, dest_qp=1, payload=query, qkey=w.QKEY_GSI, now=net.now)
    net.inject("node0003")  # the request reaches the SM long before the sweep has gone round
    assert agent.sm.sa.stats.get("held_before_subnet_up") == 1
    assert agent.sm.sweeps >= 1 and answered_at and all(answered_at)  # answered, and only once ready
    done = net.sa_responses("node0003", wait=0)  # answered already: no time passes
    assert len(done) == 1 and done[0].ok and done[0].records[0].dlid == net.lid("node0004")
    assert sm_hca is agent.hca


# -- several SMs: master election, standby polling, takeover ------------------------------------


def _second_sm(net, node, **config):
    from fabric.sm.core import SMConfig
    from fabric.sm.driver import SmAgent

    agent = SmAgent(net.devices[node], 1, SMConfig(**config))
    agent.start(net.now)
    net.send_out(node)
    return agent


def test_a_second_sm_finds_the_master_stands_by_and_takes_over_when_it_goes(net):
    master = net.agent
    lids = {n: net.lid(n) for n in HCAS}
    standby = _second_sm(net, "node0004", priority=5)  # outranks it, but a master stays master
    net.settle(0.5, step=0.1)
    assert standby.sm.state == "standby" and standby.sm.sm_state == 2
    assert standby.sm.master[1] == net.devices["node0001"].ports[1].guid
    assert master.sm.sm_state == 3 and master.sm.state == "up"
    assert all(net.devices[n].ports[1].sm_lid == net.lid("node0001") for n in HCAS)  # untouched
    assert standby.sm.sweeps == 0 and not standby.sm.sa_ready  # it configured nothing
    # it keeps polling the master's SMInfo
    sent = standby.sm.engine.sent
    net.settle(3.0, step=0.25)
    assert standby.sm.engine.sent >= sent + 2 and standby.sm.state == "standby"
    # the master goes (its SM stops: SMInfo is no longer answered); the standby takes over
    master.detach()
    t0 = net.now
    while net.now - t0 < 10 and standby.sm.state != "up":
        net.advance(0.1)
    took = net.now - t0
    assert standby.sm.state == "up" and standby.sm.sm_state == 3, standby.sm.log
    assert took <= standby.sm.config.poll_s * (standby.sm.config.poll_retries + 1) + 1.5, took
    assert any("taking over" in line for line in standby.sm.log)
    assert {n: net.lid(n) for n in HCAS} == lids  # the ports keep their LIDs
    assert all(net.devices[n].ports[1].sm_lid == net.lid("node0004") for n in HCAS)
    got = net.send_ud("node0002", "node0003", b"after takeover")
    assert [c.payload for c in got] == [b"after takeover"]


def test_two_sms_starting_together_elect_the_higher_priority():
    net = SmNet(FT)
    low = _second_sm(net, "node0001", priority=1)
    high = _second_sm(net, "node0004", priority=9)
    net.settle(1.0, step=0.1)
    assert high.sm.state == "up" and high.sm.sm_state == 3, (high.sm.log, low.sm.log)
    assert low.sm.state == "standby" and low.sm.master[1] == net.devices["node0004"].ports[1].guid
    assert all(net.devices[n].ports[1].sm_lid == net.lid("node0004") for n in HCAS)


def test_smInfo_is_answered_by_the_sm_and_isSM_is_set_on_its_port(net):
    from fabric.wire import smp_attrs as smp

    pi = net.devices["node0001"].ports[1]
    assert pi.capability_mask & smp.CAP_IS_SM
    r = smp_get(net, "node0003", net.lid("node0001"), w.ATTR_SM_INFO)
    assert r is not None and r.status == 0
    info = w.SMInfo.unpack(r.data)
    assert (info.guid, info.sm_state, info.sm_key) == (pi.guid, 3, 0)
    net.agent.detach()
    assert not pi.capability_mask & smp.CAP_IS_SM


def test_two_standbys_left_without_a_master_elect_one(net):
    """Both standbys see the master go; each discovers again and the election leaves one master
    (the higher priority), never two."""
    s3 = _second_sm(net, "node0003", priority=2)
    s4 = _second_sm(net, "node0004", priority=7)
    net.settle(0.5, step=0.1)
    assert s3.sm.state == s4.sm.state == "standby"
    net.agent.detach()
    t0 = net.now
    while net.now - t0 < 15 and "up" not in (s3.sm.state, s4.sm.state):
        net.advance(0.1)
    net.settle(3.0, step=0.1)
    states = sorted([(s3.sm.sm_state, "node0003"), (s4.sm.sm_state, "node0004")])
    assert [st for st, _ in states] == [2, 3], (s3.sm.log, s4.sm.log)
    assert s4.sm.state == "up" and s3.sm.state == "standby"
    assert all(net.devices[n].ports[1].sm_lid == net.lid("node0004") for n in HCAS)
