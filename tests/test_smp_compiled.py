"""The compiled SMI and SMA (``fabric._wirefast``: dr_transit, smp_arrival, smp_answer) against the
full path they stand in for (fabric.devices.smi and Device.handle_qp0): the same SMPs, well formed or
not, given to two identical devices, one with the compiled path and one without, must put the same
octets on the same ports, deliver the same answers to the SM, change the same state and count the
same drops and counters."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from devnet import Fab
from fabric import wire as w
from fabric.devices import base as base_mod
from fabric.devices import hca as hca_mod
from fabric.devices import switch as switch_mod
from fabric.wire.burst import BURST_HEADROOM, LEN, Segment, decode_burst_packets
from fabric.wire.crc import icrc_bytes, vcrc_bytes

pytestmark = pytest.mark.skipif(base_mod._smp_answer is None,
                                reason="FABRIC_BACKEND=std: SMPs take the full path only")

ATTRS = [w.ATTR_NODE_INFO, w.ATTR_NODE_DESC, w.ATTR_PORT_INFO, w.ATTR_SWITCH_INFO, w.ATTR_LFT, w.ATTR_MFT,
         w.ATTR_PKEY_TABLE, w.ATTR_GUID_INFO, w.ATTR_SM_INFO, 0x1234]


@pytest.fixture(params=["full", "python_sma"])
def full_path(request, monkeypatch):
    """A context in which every SMP takes the full path; or (python_sma) in which the SMA's
    compiled path is its Python reference (Device.sma_fast_py) rather than fabric.devices._smafast,
    the rest compiled as before."""
    def off():
        monkeypatch.setattr(base_mod.Device, "sma_fast", base_mod.Device.sma_fast_py)
        monkeypatch.setattr(hca_mod.HCA, "_smp_fast", hca_mod.HCA._smp_fast_py)
        if request.param == "python_sma":
            return
        monkeypatch.setattr(base_mod, "_smp_answer", None)
        monkeypatch.setattr(hca_mod, "smp_arrival", None)
        monkeypatch.setattr(switch_mod, "_dr_transit_c", None)
        monkeypatch.setattr(switch_mod, "_forward_burst", None)

    return off


def test_the_compiled_sma_is_bound_when_built():
    """With the compiled wire helpers, Device.sma_fast is the C twin of sma_fast_py, which the
    tests here hold it to."""
    assert base_mod._smafast is not None
    assert base_mod.Device.sma_fast is base_mod._smafast.sma_fast
    assert base_mod.Device.sma_fast is not base_mod.Device.sma_fast_py
    assert hca_mod.HCA._smp_fast is base_mod._smafast.hca_smp_fast  # and the HCA's SMP dispatch


def _reseal(pkt: bytearray) -> bytes:
    body = bytes(pkt[:-6])
    raw = body + icrc_bytes(body)
    return raw + vcrc_bytes(raw)


def _smp(rng: random.Random, *, dr: bool, hop_cnt: int, hop_ptr: int, d: int, in_port: int, lid: int,
         slid: int) -> bytes:
    attr = rng.choice(ATTRS)
    method = rng.choice([w.GET] * 6 + [w.SET] * 3 + [w.GET_RESP, w.TRAP])
    mod = rng.choice([0, 1, 2, 3, 4, 5, 40, 1 << 16, (3 << 16) | 1])
    data = bytes(rng.randrange(256) for _ in range(64)) if method == w.SET and rng.random() < 0.3 else bytes(64)
    if method == w.SET and attr == w.ATTR_PORT_INFO:
        # a Set an SM would make: the port's own PortInfo with a state change, sometimes a key
        data = w.put_attr(w.PortInfo(port_state=rng.choice([0, 1, 3, 4]), lid=lid, master_sm_lid=1,
                                     m_key=rng.choice([0, 0, 0, 0x1234]), m_key_protect_bits=rng.choice([0, 1]),
                                     neighbor_mtu=rng.choice([0, 4, 5])), 64)
    common = dict(method=method, attr_id=attr, attr_mod=mod, tid=rng.randrange(1 << 64), data=data,
                  m_key=rng.choice([0, 0, 0, 0x1234]))
    if dr:
        ipath = bytes([0] + [rng.choice([1, 2, 3, 4, 4, 7]) for _ in range(63)])
        rpath = bytes([0] + [rng.choice([1, 2, 3, 4]) for _ in range(63)])
        mad = w.new_mad(w.SMPDirected, hop_cnt=hop_cnt, hop_ptr=hop_ptr, d=d, initial_path=ipath,
                        return_path=rpath, dr_slid=rng.choice([w.LID_PERMISSIVE] * 5 + [slid]),
                        dr_dlid=rng.choice([w.LID_PERMISSIVE] * 5 + [lid]), **common)
        # the LRH's SLID is where the answer goes: permissive as an SM sends, sometimes a multicast
        # LID (the answer then counts as a multicast packet sent)
        raw = w.build_ud_packet(slid=rng.choice([w.LID_PERMISSIVE] * 8 + [0xC001]),
                                dlid=rng.choice([w.LID_PERMISSIVE] * 6 + [lid]), dest_qp=0,
                                src_qp=0, qkey=rng.choice([0, 0, 7]), vl=15, payload=mad.pack(),
                                sl=rng.choice([0, 3]))
    else:
        mad = w.new_mad(w.SMPLid, **common)
        raw = w.build_ud_packet(slid=slid, dlid=rng.choice([lid] * 6 + [slid, w.LID_PERMISSIVE]), dest_qp=0,
                                src_qp=0, qkey=0, vl=15, payload=mad.pack(), sl=rng.choice([0, 5]))
    pkt = bytearray(raw)
    roll = rng.random()
    if roll < 0.06:
        pkt[28 + rng.choice([36, 40, 60, 18])] ^= 0x5A  # reserved octets of the MAD: answered with zeros
        return _reseal(pkt)
    if roll < 0.10:
        pkt[rng.randrange(len(pkt))] ^= 1 << rng.randrange(8)  # a flipped bit: a CRC fails
        return bytes(pkt)
    if roll < 0.14:
        pkt[rng.choice([0, 8, 9, 13, 25, 28, 29, 30])] ^= rng.choice([1, 0x10, 0x40])  # a header field
        return _reseal(pkt)
    return raw


def _outputs(dev) -> list:
    out = []
    for item in dev.outbox:
        if type(item) is Segment:
            out.extend((item.port, bytes(p)) for p in decode_burst_packets(item.buf, BURST_HEADROOM, item.count))
        else:
            out.append((item[0], bytes(item[1])))
    dev.outbox.clear()
    return out


def _state(dev) -> tuple:
    snap = dev.snapshot()
    return (Counter(dev.drops), [list(e) for e in dev.events], snap,
            {n: (dict(p.counters.pc), dict(p.counters.ext)) for n, p in dev.ports.items()},
            getattr(dev, "lft", None) and bytes(dev.lft[:64]), list(getattr(dev, "mft", [])[:8]))


def _pair(full_path, topo="single:4"):
    """Two fabrics brought up alike; the second's devices take the full path (patched after both
    came up, so their bring-up was the same)."""
    a, b = Fab(topo), Fab(topo)
    return a, b


def _run(a, b, name, in_port, packets, full_path, *, burst=False):
    da, db = a[name], b[name]
    for d in (da, db):
        d.outbox.clear()
        d.events.clear()
    got_a, got_b = [], []
    if da.kind == "hca":
        da.sm_consumer = lambda pkt, mad, port, now: got_a.append((mad, port))
        db.sm_consumer = lambda pkt, mad, port, now: got_b.append((mad, port))
    for raw in packets:
        if burst:
            body = bytearray(BURST_HEADROOM) + b"".join(LEN.pack(len(p)) + p for p in [raw])
            da.receive_burst(in_port, body, BURST_HEADROOM, 1, a.net.now)
        else:
            da.receive(in_port, raw, a.net.now)
    out_a, state_a = _outputs(da), _state(da)
    full_path()
    for raw in packets:
        db.receive(in_port, raw, b.net.now)
    out_b, state_b = _outputs(db), _state(db)
    return (out_a, state_a, got_a), (out_b, state_b, got_b)


@pytest.mark.parametrize("seed", range(40))
def test_switch_smi_and_sma_equal_the_full_path(seed, full_path):
    rng = random.Random(seed)
    a, b = _pair(full_path)
    sw = a["sw01"]
    lid = sw.lid
    packets = []
    for _ in range(60):
        dr = rng.random() < 0.8
        hc = rng.choice([1, 2, 3, 5, 63, 64])
        kind = rng.random()
        if kind < 0.4:  # ends here
            hp, d = hc, 0
        elif kind < 0.7:  # passing through, outgoing
            hp, d = rng.randrange(0, hc + 1), 0
        else:  # passing through, returning
            hp, d = rng.randrange(0, hc + 2), 1
        packets.append(_smp(rng, dr=dr, hop_cnt=hc, hop_ptr=hp, d=d, in_port=1, lid=lid, slid=a.lid("node0001")))
    in_port = rng.choice([1, 2, 3, 4])
    (out_a, st_a, _), (out_b, st_b, _) = _run(a, b, "sw01", in_port, packets, full_path, burst=seed % 2 == 1)
    assert out_a == out_b
    assert st_a == st_b
    assert len(out_a) > 10  # it did answer and forward


@pytest.mark.parametrize("seed", range(40))
def test_hca_sma_and_sm_responses_equal_the_full_path(seed, full_path):
    rng = random.Random(1000 + seed)
    a, b = _pair(full_path)
    node = "node0002"
    lid = a.lid(node)
    packets = []
    for _ in range(60):
        dr = rng.random() < 0.8
        hc = rng.choice([1, 2, 3, 63])
        if rng.random() < 0.7:
            hp, d = hc, 0  # a request at the end of its path
        else:
            hp, d = rng.choice([1, 1, 1, 0, 2]), 1  # a response back at its requester
        packets.append(_smp(rng, dr=dr, hop_cnt=hc, hop_ptr=hp, d=d, in_port=1, lid=lid, slid=a.lid("node0001")))
    (out_a, st_a, got_a), (out_b, st_b, got_b) = _run(a, b, node, 1, packets, full_path)
    assert out_a == out_b
    assert st_a == st_b
    assert got_a == got_b
    assert len(out_a) > 10 and got_a  # answers went out, and responses reached the SM


def test_an_sm_brings_the_subnet_up_the_same_either_way(full_path):
    """The LIDs, LFTs and port states a whole bring-up leaves behind do not depend on the path."""
    a = Fab("fattree:2,2,2,2")
    full_path()
    b = Fab("fattree:2,2,2,2")
    for name, da in a.net.devices.items():
        db = b[name]
        assert [(p.num, p.lid, p.state) for p in da.ports.values()] == [(p.num, p.lid, p.state)
                                                                          for p in db.ports.values()]
        if da.kind == "switch":
            assert bytes(da.lft) == bytes(db.lft)


@pytest.mark.parametrize("impl", ["compiled", "python"])
def test_a_lid_routed_answer_reaches_our_sm_by_the_fast_path_as_by_the_full_one(impl, monkeypatch):
    """Our SM's Sets after the LIDs are LID-routed: their GetResps reach its HCA's QP0 by LID.
    HCA._smp_fast (compiled, or its reference) hands them to the SM parsed once; the full path
    hands over the same MAD. A DLID that is not the port's, an answer a blocking caller awaits,
    and a multicast DLID are left to the full path (which counts or keeps them)."""
    if impl == "python":
        monkeypatch.setattr(hca_mod.HCA, "_smp_fast", hca_mod.HCA._smp_fast_py)
    a = Fab("single:4")
    hca = a["node0002"]
    lid = a.lid("node0002")
    got = []
    hca.sm_consumer = lambda pkt, mad, port, now: got.append((mad, port))

    def answer(dlid: int, tid: int) -> bytes:
        mad = w.new_mad(w.SMPLid, method=w.GET_RESP, tid=tid, attr_id=w.ATTR_PORT_INFO, attr_mod=1,
                        data=bytes(range(64)))
        return w.build_ud_packet(slid=a.lid("node0001"), dlid=dlid, dest_qp=0, src_qp=0, qkey=0, vl=15,
                                 payload=mad.pack())

    assert hca._smp_fast(1, answer(lid, 7), a.net.now) is hca_mod.TAKEN_BY_SOFTWARE
    # permissive: QP0's; and as a packet of a burst arrives (a slice of the burst's bytearray)
    assert hca._smp_fast(1, bytearray(answer(0xFFFF, 8)), a.net.now) is hca_mod.TAKEN_BY_SOFTWARE
    assert [(m.tid, m.attr_id, m.data[:4], p, type(m)) for m, p in got] == \
        [(7, w.ATTR_PORT_INFO, bytes(range(4)), 1, w.SMPLid), (8, w.ATTR_PORT_INFO, bytes(range(4)), 1, w.SMPLid)]
    fast = [m.pack() for m, _ in got]
    got.clear()
    monkeypatch.setattr(hca_mod, "smp_arrival", None)  # the full path, for the same two
    hca.receive_local(1, answer(lid, 7), a.net.now)
    hca.receive_local(1, answer(0xFFFF, 8), a.net.now)
    assert [m.pack() for m, _ in got] == fast
    monkeypatch.undo()
    if impl == "python":
        monkeypatch.setattr(hca_mod.HCA, "_smp_fast", hca_mod.HCA._smp_fast_py)
    got.clear()
    assert hca._smp_fast(1, answer(lid + 1, 9), a.net.now) == 0  # another port's LID: dlid_mismatch there
    assert hca._smp_fast(1, answer(0xC001, 9), a.net.now) == 0
    hca.smp_waiting[10] = None  # a blocking caller awaits TID 10 (send_smp_wait)
    assert hca._smp_fast(1, answer(lid, 10), a.net.now) == 0
    hca.receive_local(1, answer(lid, 10), a.net.now)
    assert hca.smp_waiting[10] is not None and not got  # the full path kept it for the caller


def test_a_directed_route_request_goes_on_the_wire_as_the_reference_sends_it():
    """``send_dr_packet`` (our SM's and an ibsim client's request onto the wire) in C against
    ``send_dr_packet_py``: the same return, outbox, counters and drops for a port that is up, one
    that is down, one the HCA lacks, port 0, and a packet to a multicast DLID."""
    assert hca_mod.send_dr_packet is base_mod._smafast.send_dr_packet

    def run(send):
        a = Fab("single:4")
        hca = a["node0002"]
        hca.outbox.clear()
        mad = w.new_mad(w.SMPDirected, method=w.GET, tid=5, attr_id=w.ATTR_NODE_INFO, hop_cnt=1, hop_ptr=1,
                        dr_slid=0xFFFF, dr_dlid=0xFFFF, initial_path=bytes([0, 1]).ljust(64, b"\0")).pack()
        pkt = w.build_ud_packet(slid=0xFFFF, dlid=0xFFFF, dest_qp=0, src_qp=0, qkey=0, vl=15, payload=mad)
        mcast = w.build_ud_packet(slid=0xFFFF, dlid=0xC004, dest_qp=0, src_qp=0, qkey=0, vl=15, payload=mad)
        went = [send(hca, 1, pkt), send(hca, 1, mcast), send(hca, 9, pkt), send(hca, 0, pkt)]
        outbox = [(p, bytes(r)) for p, r in hca.outbox]
        a.net.set_link("node0002", 1, False)
        went.append(send(hca, 1, pkt))
        return (went, outbox, dict(hca.drops),
                (dict(hca.ports[1].counters.pc), dict(hca.ports[1].counters.ext)))

    fast, ref = run(hca_mod.send_dr_packet), run(hca_mod.send_dr_packet_py)
    assert fast == ref
    went, outbox, drops, (pc, ext) = fast
    assert went == [True, True, False, False, False] and len(outbox) == 2
    assert drops["dr_originate"] == 2 and drops["send_port_down"] == 1 and pc["port_xmit_discards"] == 1
    assert ext["port_multicast_xmit_pkts"] == 1 and ext["port_unicast_xmit_pkts"] >= 1


def _port_fields(dev) -> dict:
    """Every int-valued field of every port, the core's included (what a PortInfo Set may change)."""
    out = {}
    for n, p in dev.ports.items():
        d = {k: v for k, v in vars(p).items() if type(v) in (int, bool)}
        d.update(num=p.num, lid=p.lid, lmc=p.lmc, state=p.state, phys=p.phys)
        out[n] = d
    return out


def _random_port_info_set(rng: random.Random, lid: int, port_mod: int) -> bytes:
    """A directed-route PortInfo Set with every settable field random, valid or not (a PortState
    or PhysState that cannot be set, a NeighborMTU beyond MTUCap, Armed from Down...)."""
    pi = w.PortInfo(
        m_key=rng.choice([0] * 6 + [rng.randrange(1 << 64)]), gid_prefix=rng.randrange(1 << 64),
        lid=rng.randrange(1 << 16), master_sm_lid=rng.choice([1, 1, rng.randrange(1 << 16)]),
        m_key_lease_period=rng.randrange(1 << 16), link_width_enabled=rng.choice([0, 0, 1, 2, 3, 255]),
        port_state=rng.choice([0, 0, 1, 2, 3, 3, 4, 4, 5, 15]), phys_state=rng.choice([0, 0, 0, 1, 2, 3, 4, 5]),
        m_key_protect_bits=rng.randrange(4), lmc=rng.randrange(8), neighbor_mtu=rng.choice([0, 1, 3, 4, 5, 6]),
        master_sm_sl=rng.randrange(16), vl_high_limit=rng.randrange(256), hoq_life=rng.randrange(32),
        operational_vls=rng.randrange(16), partition_enforcement_inbound=rng.randrange(2),
        partition_enforcement_outbound=rng.randrange(2), client_reregister=rng.randrange(2),
        subnet_timeout=rng.randrange(32), resp_time_value=rng.randrange(32),
        capability_mask=rng.randrange(1 << 32), vl_cap=rng.randrange(16), mtu_cap=rng.randrange(16))
    mad = w.new_mad(w.SMPDirected, method=w.SET, attr_id=w.ATTR_PORT_INFO, attr_mod=port_mod,
                    tid=rng.randrange(1 << 64), data=w.put_attr(pi, 64), hop_cnt=1, hop_ptr=1, d=0,
                    initial_path=bytes([0, 1]).ljust(64, b"\0"), dr_slid=w.LID_PERMISSIVE, dr_dlid=w.LID_PERMISSIVE)
    return w.build_ud_packet(slid=w.LID_PERMISSIVE, dlid=w.LID_PERMISSIVE, dest_qp=0, src_qp=0, qkey=0, vl=15,
                             payload=mad.pack())


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("name", ["sw01", "node0002"])
def test_a_port_info_set_in_c_changes_what_the_python_code_changes(name, seed, full_path, monkeypatch):
    """The SMA's PortInfo Set and Get done in C for the HCA and the switch (``_smafast``'s
    ``_set_port_info`` and ``_overrides``) against their Python code: every settable field random,
    Sets that are refused among them; the same answers, events, drops and every field of every
    port after each Set, and the switch's ports marked for its tables alike."""
    rng = random.Random(seed * 7 + len(name))
    a, b = _pair(full_path)
    mods = [0, 1, 2, 3, 4, 5] if name == "sw01" else [0, 1, 2]
    packets = [_random_port_info_set(rng, a.lid(name), rng.choice(mods)) for _ in range(40)]
    for d in (a[name], b[name]):  # what the answers and a Set must not carry over as they stand
        for n, p in d.ports.items():
            p.client_reregister = 1  # an HCA's Set clears it
            if d.kind == "switch" and n:
                p.lmc = 3  # a switch's external port answers LMC 0 whatever it holds
    for i in range(0, len(packets), 4):  # a few at a time, so that each step's state is compared
        for d in (a[name], b[name]):
            if d.kind == "switch":
                d._dirty_ports = set()
        (out_a, st_a, _), (out_b, st_b, _) = _run(a, b, name, 1, packets[i:i + 4], full_path)
        assert out_a == out_b
        assert st_a == st_b
        assert _port_fields(a[name]) == _port_fields(b[name])
        if name == "sw01":
            assert a[name]._dirty_ports == b[name]._dirty_ports
        monkeypatch.undo()  # _run put the second device on the reference: the first is compiled again


def test_the_port_info_code_in_c_steps_aside_for_a_changed_class(monkeypatch):
    """A class whose PortInfo code was replaced after it was registered (a subclass, a patched
    method) is answered by its own code; restored, by the C code again."""
    a = Fab("single:4")
    hca = a["node0002"]
    calls = []
    orig = hca_mod.HCA.set_port_info

    def spy(self, port, pi, now):
        calls.append(pi.lid)
        return orig(self, port, pi, now)

    pkt = _random_port_info_set(random.Random(3), a.lid("node0002"), 1)
    monkeypatch.setattr(hca_mod.HCA, "set_port_info", spy)
    hca.receive(1, pkt, a.net.now)
    assert len(calls) == 1
    monkeypatch.undo()
    hca.receive(1, pkt, a.net.now)
    assert len(calls) == 1  # the C code again: the spy is gone
