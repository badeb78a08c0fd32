"""The accelerated provider's receive side: the HCA's compiled receive path into RSS rings, NAPI
budgets and interrupt moderation, and its fallback to the per-packet path for everything else."""

import pytest

from fabric import wire as w
from fabric.wire.burst import LEN
from fabric.wire import ParseError
from ipnet import IpNet
from ipoib import _stdpath
from ipoib import inet
from ipoib.netdev import OperationNotSupported
from ipoib import encap

_fastpath = pytest.importorskip("ipoib._fastpath")
PORT = 7000


class Rig:
    """node0001 -> node0002 on single:2, with packets built by hand and handed to node0002's HCA
    the way its device host does: one link burst at a time, at a time we choose."""

    def __init__(self, backend=_fastpath):
        self.net = IpNet("single:2", backend=backend).up()
        self.node = self.net.nodes["node0002"]
        self.hca = self.net.devices["node0002"]
        self.ifc = self.node.ifs["ib0"]
        self.sock = self.node.ip.udp_socket()
        self.sock.bind(PORT)
        self.src = inet.ip4(self.net.ip("node0001"))
        self.dst = inet.ip4(self.net.ip("node0002"))
        self.slid = self.net.lid("node0001")
        self.src_qp = self.net.nodes["node0001"].ifs["ib0"].qpn

    @property
    def prov(self):
        return self.ifc.netdev.provider

    def frame(self, seq, sport=5000, size=32):
        body = seq.to_bytes(4, "big") + bytes(size - 4)
        return encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack() + inet.build_ipv4(
            self.src, self.dst, inet.IPPROTO_UDP, inet.build_udp(self.src, self.dst, sport, PORT, body), ident=seq)

    def packet(self, frame, *, qkey=None, pkey=0xFFFF, dqp=None):
        return w.build_ud_packet(slid=self.slid, dlid=self.net.lid("node0002"), dest_qp=dqp or self.ifc.qpn,
                                 src_qp=self.src_qp, qkey=self.ifc.netdev.standard.ctx.qp.qkey if qkey is None
                                 else qkey, pkey=pkey, payload=frame)

    def burst(self, packets):
        data = b"".join(LEN.pack(len(p)) + p for p in packets)
        self.hca.receive_burst(1, data, 0, len(packets), self.net.now)
        self.net.send_out("node0002")

    def service(self):
        self.net._service("node0002", self.hca)

    def received(self):
        out = []
        while (d := self.sock.recvfrom()) is not None:
            out.append(d)
        return out


def test_rss_spreads_flows_over_rx_queues_and_keeps_each_flow_in_order():
    rig = Rig()
    rig.prov.set_rx_flow_hash("sdfn")  # UDP ports in the hash: 16 flows between two hosts spread
    pkts = [rig.packet(rig.frame(i, sport=5000 + i % 16)) for i in range(128)]
    for k in range(0, 128, 32):
        rig.burst(pkts[k:k + 32])
        rig.service()
    got = rig.received()
    assert len(got) == 128
    by_flow = {}
    for data, (_ip, sport) in got:
        by_flow.setdefault(sport, []).append(int.from_bytes(data[:4], "big"))
    assert all(seq == sorted(seq) for seq in by_flow.values()) and len(by_flow) == 16
    qs = rig.prov.queue_stats()
    used = [q for q in range(rig.prov.nrx) if qs[f"rx{q}_packets"]]
    assert len(used) >= 2, qs
    assert sum(qs[f"rx{q}_packets"] for q in range(rig.prov.nrx)) == 128
    assert rig.hca.rx_accel.fast_packets >= 128  # the compiled path took them, not the per-packet one
    st = rig.ifc.netdev.standard.ctx.stats
    assert st["rx_packets"] >= 128 and st["interrupts"] >= 4


@pytest.mark.parametrize("damage,drop,counter", [
    ("icrc", "icrc", "port_rcv_errors"),
    ("vcrc", "vcrc", "port_rcv_errors"),
    ("qkey", "qkey", None),
    ("pkey", "pkey", None),
    ("qpn", "no_qp", None),
])
def test_what_the_compiled_path_refuses_is_dropped_and_counted_as_std_does(damage, drop, counter):
    results = {}
    for name, backend in (("std", _stdpath), ("fast", _fastpath)):
        rig = Rig(backend)
        good = rig.packet(rig.frame(1))
        if damage == "icrc":
            bad = bytearray(good)
            bad[-6] ^= 0xFF
            c = w.crc.vcrc16(bytes(bad[:-2]))
            bad[-2:] = bytes([c & 0xFF, c >> 8])
            bad = bytes(bad)
        elif damage == "vcrc":
            bad = good[:-1] + bytes([good[-1] ^ 1])
        elif damage == "qkey":
            bad = rig.packet(rig.frame(1), qkey=0x1234)
        elif damage == "pkey":
            bad = rig.packet(rig.frame(1), pkey=0x8001)
        else:
            bad = rig.packet(rig.frame(1), dqp=0x7777)
        drops0 = dict(rig.hca.drops)
        rig.burst([bad, good])
        rig.service()
        port = rig.hca.ports[1]
        results[name] = {
            "delivered": [d[0][:4] for d in rig.received()],
            "drops": {k: v - drops0.get(k, 0) for k, v in rig.hca.drops.items() if v != drops0.get(k, 0)},
            "rcv_errors": port.counters.pc["port_rcv_errors"],
            "qkey_violations": port.q_key_violations, "pkey_violations": port.p_key_violations,
            "rx_packets": rig.ifc.netdev.standard.ctx.stats["rx_packets"],
        }
    assert results["fast"] == results["std"]
    assert results["fast"]["delivered"] == [(1).to_bytes(4, "big")]
    assert results["fast"]["drops"] == {drop: 1}
    if counter:
        assert results["fast"]["rcv_errors"] >= 1


def test_udp_hashes_on_addresses_by_default_so_fragments_keep_their_place():
    rig = Rig()
    whole = rig.frame(1, sport=5000)
    other_port = rig.frame(2, sport=6000)
    assert _fastpath.frame_flow_hash(whole) == _fastpath.frame_flow_hash(other_port)
    assert _fastpath.frame_flow_hash(whole, True) != _fastpath.frame_flow_hash(other_port, True)
    with pytest.raises(ValueError, match="sd' or 'sdfn"):
        rig.prov.set_rx_flow_hash("sdfnx")


def test_a_burst_with_bad_framing_is_refused_whole():
    rig = Rig()
    good = rig.packet(rig.frame(1))
    data = LEN.pack(len(good)) + good + LEN.pack(500) + b"short"
    before = rig.hca.rx_accel.fast_packets
    with pytest.raises(ParseError):
        rig.hca.receive_burst(1, data, 0, 2, rig.net.now)
    assert rig.hca.rx_accel.fast_packets == before and rig.prov.rx.pending == 0


def test_napi_budget_per_queue_and_rescheduling():
    rig = Rig()
    rig.burst([rig.packet(rig.frame(i)) for i in range(150)])  # one flow: one RX queue
    assert rig.prov.rx.pending == 150
    delivered = rig.ifc.netdev.poll(64)
    assert delivered == 64 and rig.prov.rx.pending == 86
    assert "ifname" not in rig.node._poll_pending and "ib0" in rig.node._poll_pending  # NAPI stays scheduled
    rig.service()
    rig.service()
    assert rig.prov.rx.pending == 0 and len(rig.received()) == 150
    qs = rig.prov.queue_stats()
    assert sum(qs[f"rx{q}_budget_exhausted"] for q in range(rig.prov.nrx)) == 2


def test_ring_overflow_is_counted_as_a_drop():
    rig = Rig()
    rig.burst([rig.packet(rig.frame(i)) for i in range(_fastpath.RX_SLOTS + 10)])
    st = rig.ifc.netdev.standard.ctx.stats
    assert st["rx_overflow"] == 10 and st["rx_dropped"] == 10
    rig.service()
    while rig.prov.rx.pending:
        rig.service()
    assert len(rig.received()) == _fastpath.RX_SLOTS


def test_rx_usecs_holds_the_interrupt_until_its_timer():
    rig = Rig()
    rig.prov.set_coalesce(rx_usecs=500)
    irq0 = rig.prov.interrupts
    rig.burst([rig.packet(rig.frame(1))])
    rig.service()
    assert rig.received() == [] and rig.prov.interrupts == irq0  # held back
    rig.net.advance(0.0004)
    assert rig.received() == []
    rig.net.advance(0.0002)
    assert [d[0][:4] for d in rig.received()] == [(1).to_bytes(4, "big")]
    assert rig.prov.interrupts == irq0 + 1


def test_rx_frames_fires_before_the_timer():
    rig = Rig()
    rig.prov.set_coalesce(rx_usecs=100_000, rx_frames=4)
    irq0 = rig.prov.interrupts
    rig.burst([rig.packet(rig.frame(i)) for i in range(3)])
    rig.service()
    assert rig.received() == [] and rig.prov.interrupts == irq0
    rig.burst([rig.packet(rig.frame(3))])
    rig.service()
    assert len(rig.received()) == 4 and rig.prov.interrupts == irq0 + 1


def test_adaptive_moderation_follows_the_receive_rate():
    rig = Rig()
    rig.prov.set_coalesce(adaptive=True)
    assert rig.prov.get_coalesce()["rx_usecs_effective"] == 0
    seq = got = 0
    for _ in range(30):  # 16 packets every 0.1 ms: 160k packets/s
        rig.burst([rig.packet(rig.frame(seq + i)) for i in range(16)])
        seq += 16
        rig.net.advance(0.0001)
        got += len(rig.received())
    assert rig.prov.get_coalesce()["rx_usecs_effective"] == 32
    for _ in range(5):  # one packet every 5 ms: 200 packets/s
        rig.burst([rig.packet(rig.frame(seq))])
        seq += 1
        rig.net.advance(0.005)
        got += len(rig.received())
    assert rig.prov.get_coalesce()["rx_usecs_effective"] == 0
    assert got == seq  # nothing lost on the way


@pytest.mark.parametrize("kw,msg", [
    ({"rx_usecs": -1}, "rx-usecs must be an integer"),
    ({"rx_usecs": "8"}, "rx-usecs must be an integer"),
    ({"rx_usecs": True}, "rx-usecs must be an integer"),
    ({"rx_usecs": 8, "rx_frames": 10**6}, "rx-frames must be an integer"),
    ({"rx_usecs": 8, "adaptive": "yes"}, "adaptive-rx must be true or false"),
])
def test_bad_coalesce_settings_are_refused_and_change_nothing(kw, msg):
    rig = Rig()
    before = rig.prov.get_coalesce()
    with pytest.raises(ValueError, match=msg):
        rig.ifc.netdev.set_coalesce(kw.get("rx_usecs"), kw.get("rx_frames"), kw.get("adaptive"))
    assert rig.prov.get_coalesce() == before


def test_std_has_no_moderation():
    rig = Rig(_stdpath)
    assert rig.ifc.netdev.get_coalesce()["rx_usecs"] == 0
    with pytest.raises(OperationNotSupported, match="not supported"):
        rig.ifc.netdev.set_coalesce(8, None, None)


def test_the_fast_provider_serves_every_op_itself():
    rig = Rig()
    nd = rig.ifc.netdev
    assert rig.net.ping("node0002", "node0001").summary()["received"] == 1  # send, and poll
    for op in ("get_params", "init", "open", "set_id", "attach_mcast", "poll", "send"):
        assert nd.served_by.get(op) == "provider", (op, nd.served_by)
    rig.ifc.stop(rig.net.now)  # stop, detach_mcast, uninit on the way down
    for op in ("stop", "detach_mcast"):
        assert nd.served_by.get(op) == "provider", (op, nd.served_by)
    assert nd.fallbacks.get("stop", 0) == 0
    assert rig.prov.rx.qpn not in rig.hca.rx_accel.engines or not rig.prov.rx.enabled


# -- hostile input: the compiled receive path against the per-packet one ------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from devnet import fix_vcrc, with_crcs  # noqa: E402

_RIGS = {}


def _rig(name):
    """One rig per backend for the whole fuzz run (bringing a fabric up per example is slow)."""
    if name not in _RIGS:
        _RIGS[name] = Rig(_fastpath if name == "fast" else _stdpath)
    return _RIGS[name]


def _mutate(base: bytes, edits, cut, crcs):
    body = bytearray(base[:-6])  # LRH .. payload, without ICRC and VCRC
    for pos, val in edits:
        body[pos % len(body)] = val
    if cut:
        body = body[:max(1, len(body) - cut)]
    if crcs == 1:
        return with_crcs(bytes(body))
    if crcs == 2:  # a good VCRC over a stale ICRC: only the ICRC check can catch it
        return fix_vcrc(bytes(body) + base[-6:])
    return bytes(body) + base[-6:]


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=3),
                          st.sampled_from([0, 0, 0, 1, 7, 40]), st.integers(0, 2)), min_size=1, max_size=6))
def test_fuzzed_bursts_are_handled_the_same_by_both_receive_paths(packets):
    """Valid packets to the IPoIB QP with header octets changed (CRCs recomputed or not), cut
    short, mixed with good ones in one burst: the compiled path must never raise, never take what
    the per-packet path would drop, and deliver and count exactly what it does."""
    out = {}
    for name in ("std", "fast"):
        rig = _rig(name)
        rig.received()
        base = rig.packet(rig.frame(7))
        burst = [base] + [_mutate(base, edits, cut, crcs) for edits, cut, crcs in packets] + [base]
        drops0 = dict(rig.hca.drops)
        port = rig.hca.ports[1]
        pc0 = dict(port.counters.pc)
        rig.burst(burst)
        for _ in range(4):
            rig.service()
        out[name] = {
            "delivered": sorted(d[0] for d in rig.received()),
            "drops": {k: v - drops0.get(k, 0) for k, v in rig.hca.drops.items() if v != drops0.get(k, 0)},
            "counters": {k: v - pc0.get(k, 0) for k, v in port.counters.pc.items() if v != pc0.get(k, 0)},
        }
    assert out["fast"] == out["std"]


def test_queue_counts_are_configurable():
    net = IpNet("single:2", backend=_fastpath)
    for node in net.nodes.values():
        node.queues = {"tx_queues": 2, "rx_queues": 8}
    net.up()
    ifc = net.nodes["node0002"].ifs["ib0"]
    assert ifc.params.tx_queues == 2 and ifc.params.rx_queues == 8
    qs = ifc.netdev.queue_stats()
    assert "tx1_packets" in qs and "tx2_packets" not in qs and "rx7_packets" in qs
    assert net.ping("node0001", "node0002").summary()["received"] == 1


def test_fabric_rejects_bad_queue_counts():
    from fabric import Fabric

    with pytest.raises(ValueError, match="tx_queues must be an int from 1 to 64"):
        Fabric("single:2", tx_queues=0)


def test_a_frame_longer_than_any_ring_slot_goes_the_per_packet_way():
    results = {}
    for name, backend in (("std", _stdpath), ("fast", _fastpath)):
        rig = Rig(backend)
        big = rig.packet(rig.frame(3, size=5000))  # 5 KB in one UD packet: over every MTU
        drops0 = dict(rig.hca.drops)
        rig.burst([big, rig.packet(rig.frame(4))])
        rig.service()
        st = rig.ifc.netdev.standard.ctx.stats
        results[name] = ([d[0][:4] for d in rig.received()], st["rx_overflow"],
                         {k: v - drops0.get(k, 0) for k, v in rig.hca.drops.items() if v != drops0.get(k, 0)})
    assert results["fast"] == results["std"]
    assert results["fast"][1] == 0  # not a ring overflow


# -- found in review: state that must not get stuck, input that must not be trusted -------------

def test_an_exception_above_the_driver_does_not_stall_receive():
    rig = Rig()
    ctx = rig.ifc.netdev.standard.ctx
    real = ctx.deliver
    calls = {"n": 0}

    def flaky(frame, info):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in the stack above")
        real(frame, info)

    ctx.deliver = flaky
    rig.burst([rig.packet(rig.frame(1))])
    rig.service()  # the node's poll raises inside; the node counts it and goes on
    assert rig.ifc.stats.get("poll_errors") == 1
    for seq in (2, 3, 4):
        rig.burst([rig.packet(rig.frame(seq))])
        rig.service()
    assert [d[0][:4] for d in rig.received()] == [s.to_bytes(4, "big") for s in (2, 3, 4)]
    assert not rig.prov.napi_scheduled and rig.prov.rx.pending == 0


def test_a_stopped_tx_queue_does_not_stop_the_other_flows():
    net = IpNet("single:2", backend=_fastpath).up()
    ifc = net.nodes["node0001"].ifs["ib0"]
    prov = ifc.netdev.provider
    prov.set_rx_flow_hash("sdfn")
    from ipoib.netdev import AddressHandle

    ah = AddressHandle(dlid=net.lid("node0002"))
    dqpn = net.nodes["node0002"].ifs["ib0"].qpn
    src, dst = inet.ip4(net.ip("node0001")), inet.ip4(net.ip("node0002"))

    def frame(sport):
        return encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack() + inet.build_ipv4(
            src, dst, inet.IPPROTO_UDP, inet.build_udp(src, dst, sport, 9, b"x"))

    a = frame(1000)
    qa = _fastpath.frame_flow_hash(a, True) % prov.ntx
    b = next(frame(p) for p in range(1001, 2000) if _fastpath.frame_flow_hash(frame(p), True) % prov.ntx != qa)
    while not prov.stopped[qa]:
        ifc._send_frame(a, ah, dqpn)
    assert set(ifc.stopped_queues) == {qa} and not ifc.queue_stopped
    before = ifc.stats["tx_packets"]
    assert ifc._send_frame(b, ah, dqpn)  # another queue: it still goes
    assert ifc.stats["tx_packets"] == before + 1
    # its own queue says BUSY: the frame waits in that queue's backlog, the other queue's do not
    assert ifc._send_frame(a, ah, dqpn) and ifc.qdisc.length == 1 and list(ifc.qdisc.backlog) == [qa]
    assert ifc._send_frame(b, ah, dqpn) and ifc.stats["tx_packets"] == before + 2
    assert ifc._send_frame(a, ah, dqpn) and ifc.qdisc.length == 2  # behind the first: order kept


@pytest.mark.parametrize("backend", [_stdpath, _fastpath])
def test_link_down_and_up_with_a_full_queue_starts_clean(backend):
    net = IpNet("single:2", backend=backend).up()
    ifc = net.nodes["node0001"].ifs["ib0"]
    from ipoib.netdev import AddressHandle

    ah = AddressHandle(dlid=net.lid("node0002"))
    dqpn = net.nodes["node0002"].ifs["ib0"].qpn
    f = encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack() + bytes(40)
    while not ifc.stopped_queues:
        ifc._send_frame(f, ah, dqpn)
    ifc.stop(net.now)
    ifc.open(net.now)
    assert not ifc.stopped_queues and not ifc.queue_stopped
    assert ifc._send_frame(f, ah, dqpn)


@pytest.mark.parametrize("sink_cls", [_stdpath.UdpSink, _fastpath.UdpSink])
def test_sink_refuses_a_udp_length_that_does_not_fit_and_reflect_checks_its_input(sink_cls):
    src, dst = inet.ip4("198.18.0.1"), inet.ip4("198.18.0.2")
    good = encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack() + inet.build_ipv4(
        src, dst, inet.IPPROTO_UDP, inet.build_udp(src, dst, 1, 5201, b"abcd"))
    short = bytearray(good)
    short[4 + 20 + 4:4 + 20 + 6] = (4).to_bytes(2, "big")  # UDP length 4: under its own header
    long_ = bytearray(good)
    long_[4 + 20 + 4:4 + 20 + 6] = (200).to_bytes(2, "big")
    sink = sink_cls(5201)
    assert not sink.consume(bytes(short)) and not sink.consume(bytes(long_))
    assert sink.consume(good) and (sink.packets, sink.bytes) == (1, 4)
    with pytest.raises(ValueError):
        sink.reflect(b"\x08\x00\x00\x00\x4f")
    r = sink.reflect(good)
    assert r[16:20] == good[20:24] and r[20:24] == good[16:20]


def test_the_rx_info_cache_stays_bounded_whatever_the_senders_pick():
    rig = Rig()
    for i in range(_fastpath.INFO_CACHE + 300):
        rig.src_qp = 0x100 + i
        rig.burst([rig.packet(rig.frame(i))])
        rig.service()
        rig.received()
    assert len(rig.prov._infos) <= _fastpath.INFO_CACHE


def test_a_sink_fed_by_the_compiled_path_is_marked_by_the_poll_that_fed_it():
    """perf --ud's sink counts frames in C; the poll that took them marks the time (the standard
    poll, which marks it otherwise, is not run when its own queues are empty), and a poll that took
    nothing leaves the marks alone."""
    rig = Rig()
    ctx = rig.ifc.netdev.standard.ctx
    sink = ctx.rx_sink = _fastpath.UdpSink(PORT)
    times = iter([10.0, 11.0, 12.0, 13.0])
    ctx.now = lambda: next(times)
    polls = []
    std_poll = rig.prov._std.poll
    rig.prov._std.poll = lambda budget: (polls.append(budget), std_poll(budget))[1]
    for seq in range(2):
        rig.burst([rig.packet(rig.frame(4 * seq + i)) for i in range(4)])
        assert rig.ifc.netdev.poll(64) == 4
    assert (sink.packets, sink.first, sink.last) == (8, 10.0, 11.0)
    assert rig.ifc.netdev.poll(64) == 0 and sink.last == 11.0  # nothing new: no mark
    assert polls == [] and rig.received() == []  # all of it in C, nothing to the stack
