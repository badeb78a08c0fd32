"""The device host's in-process links in C (fabric/host/_localfast.pyx) against the Python
``DeviceHost.run_local`` it replaces: the same traffic through both must reach every device in the
same order per link and leave the same counters and drops, including what only the per-packet path
handles (an SMP to a switch's own SMA, a bad burst, a port that is down)."""

from __future__ import annotations

from collections import deque

import pytest

from fabric import wire as w
from fabric.devices.hca import send_smp
from fabric.host import loop
from fabric.host.loop import DeviceHost
from fabric.wire.burst import BURST_HEADROOM, LEN, decode_burst_packets, encode_burst
from smnet import SmNet

_COMPILED = loop._localfast
pytestmark = pytest.mark.skipif(_COMPILED is None, reason="the compiled run_local comes with the fast backend")


def _host_over(net) -> DeviceHost:
    """A DeviceHost with ``net``'s devices and nothing else: every cable an in-process link."""
    host = DeviceHost.__new__(DeviceHost)
    host.devices = net.devices
    host.local = {}
    for lk in net.topology.links:
        (a, ap), (b, bp) = lk.ends()
        host.local[(a, ap)], host.local[(b, bp)] = (b, bp), (a, ap)
    host.links, host.txq, host.local_q = {}, {}, deque()
    host._stale, host._due = set(), {}
    host.capture, host.bursts_out, host.burst_errors, host.token = None, 0, 0, bytes(8)
    return host


def _fabric(monkeypatch, compiled: bool = True) -> tuple:
    """``fattree:2,1,1,1`` brought up by our SM, which then stops (its timers would send on their
    own clock: only the test's packets move), over a DeviceHost whose every cable is in-process
    (``_host_over``), its local delivery in C or in Python: ``(net, host)``."""
    monkeypatch.setattr(loop, "_localfast", _COMPILED if compiled else None)
    net = SmNet("fattree:2,1,1,1")
    net.start_sm()
    net.stop_sm()
    return net, _host_over(net)


def _send_through(host, src, smp, now) -> None:
    """``smp`` sent by ``src``'s port 1, and every hop and answer it makes delivered."""
    send_smp(src, 1, smp, now)
    host.drain(src.name, src)
    host.flush()
    while host.local_q:
        host.run_local(now)


def _traffic(compiled: bool, monkeypatch) -> tuple:
    monkeypatch.setattr(loop, "_localfast", _COMPILED if compiled else None)
    net = SmNet("fattree:2,1,1,1")
    net.start_sm()
    net.stop_sm()  # the SM's timers would send on their own clock: only the test's packets move
    host = _host_over(net)
    src, dst = net.devices["node0001"], net.devices["node0002"]
    arrivals = []  # (device, port, packet) in the order the devices got them
    for name, dev in net.devices.items():
        # what both paths hand the HCA's per-packet receive (the compiled one takes a lone packet
        # there directly, without receive_burst)
        if dev.kind == "hca":
            def record(port, data, now, _orig=dev.receive_local, _name=name):
                arrivals.append((_name, port, bytes(data)))
                return _orig(port, data, now)
            dev.receive_local = record
    slow = []  # the switches' bursts that went through receive_data (Python) instead

    def receive_data(name, port, data, offset, count, now, _orig=host.receive_data):
        if net.devices[name].kind == "switch":
            slow.append(name)
        return _orig(name, port, data, offset, count, now)
    host.receive_data = receive_data
    dlid = dst.ports[1].lid
    leaf_port = host.local[("node0001", 1)][1]
    assert net.devices["leaf01"].ports[leaf_port].pkey_enforce_in  # the SM turned partition enforcement on
    for round_ in range(3):
        for i in range(5):  # PMA Gets both ways through leaf -> spine -> leaf
            pma = w.new_mad(w.PMAMad, method=w.GET, tid=100 * round_ + i, attr_id=w.ATTR_PORT_COUNTERS)
            assert src.post_send(1, dlid=dlid, dest_qp=1, payload=pma.pack(), qkey=w.QKEY_GSI, now=net.now)
        # a directed-route Get that passes through both leaves and the spine, and one to the
        # first leaf's own SMA (the per-packet path there), between the data
        smp = w.new_mad(w.SMPDirected, method=w.GET, tid=500 + round_, attr_id=w.ATTR_NODE_INFO, hop_cnt=3,
                        dr_slid=0xFFFF, dr_dlid=0xFFFF, initial_path=bytes([0, 1, 2, 2]).ljust(64, b"\0"))
        send_smp(src, 1, smp, net.now)
        smp = w.new_mad(w.SMPLid, method=w.GET, tid=600 + round_, attr_id=w.ATTR_NODE_INFO)
        send_smp(src, 1, smp, net.now, dlid=net.devices["leaf01"].ports[0].lid)
        # and a directed-route one that ends at the first leaf, in the same burst
        smp = w.new_mad(w.SMPDirected, method=w.GET, tid=650 + round_, attr_id=w.ATTR_PORT_INFO, attr_mod=2,
                        hop_cnt=1, dr_slid=0xFFFF, dr_dlid=0xFFFF, initial_path=bytes([0, 1]).ljust(64, b"\0"))
        send_smp(src, 1, smp, net.now)
        host.drain("node0001", src)
        host.flush()
        # and one alone in its burst, as a sweep's SMPs go: every switch passes it on in place
        smp = w.new_mad(w.SMPDirected, method=w.GET, tid=700 + round_, attr_id=w.ATTR_PORT_INFO, hop_cnt=4,
                        attr_mod=1, dr_slid=0xFFFF, dr_dlid=0xFFFF, initial_path=bytes([0, 1, 2, 2, 1]).ljust(64, b"\0"))
        send_smp(src, 1, smp, net.now)
        host.drain("node0001", src)
        host.flush()
        # and one alone in its burst for the spine's own SMA (its switch answers it from the hop)
        smp = w.new_mad(w.SMPDirected, method=w.GET, tid=750 + round_, attr_id=w.ATTR_SWITCH_INFO, hop_cnt=2,
                        dr_slid=0xFFFF, dr_dlid=0xFFFF, initial_path=bytes([0, 1, 2]).ljust(64, b"\0"))
        send_smp(src, 1, smp, net.now)
        host.drain("node0001", src)
        host.flush()
        # and a data packet alone in its burst (a ping's): every switch hands that buffer on
        pma = w.new_mad(w.PMAMad, method=w.GET, tid=800 + round_, attr_id=w.ATTR_PORT_COUNTERS)
        assert src.post_send(1, dlid=dlid, dest_qp=1, payload=pma.pack(), qkey=w.QKEY_GSI, now=net.now)
        host.drain("node0001", src)
        host.flush()
        if round_ == 2:  # alone in its burst too, with a P_Key the leaf's enforcing port lacks: dropped there
            bad = w.build_ud_packet(slid=src.ports[1].lid, dlid=dlid, dest_qp=1, src_qp=1, qkey=w.QKEY_GSI,
                                    pkey=0x7123, sl=0, payload=pma.pack())
            host.local_q.append(("leaf01", leaf_port, bytearray(BURST_HEADROOM) + LEN.pack(len(bad)) + bad, 1))
        if round_ == 1:  # a truncated burst on the spine's link: counted, and nothing else lost
            host.local_q.append(("spine01", 1, bytearray(BURST_HEADROOM) + LEN.pack(40) + b"x" * 10, 1))
        host.run_local(net.now)
        while host.local_q:
            host.run_local(net.now)
        if round_ == 0:  # bursts as a socket brings them (bytes, after a burst header): the same hops
            spine_port = host.local[("leaf01", next(p for (n, p), (m, _) in host.local.items()
                                                    if n == "leaf01" and m == "spine01"))][1]
            gets = [_pma_get(src.ports[1].lid, dlid, 900 + k) for k in range(3)]
            host.on_burst("spine01", encode_burst(spine_port, gets[:1]), net.now)
            host.on_burst("spine01", encode_burst(spine_port, gets[1:]), net.now)
            host.on_burst("node0002", encode_burst(1, [_pma_get(src.ports[1].lid, dlid, 910)]), net.now)
            host.flush()
            while host.local_q:
                host.run_local(net.now)
    per_link = {}  # a link is a FIFO; which link is served first is the loop's business
    for n, p, pkt in arrivals:
        per_link.setdefault((n, p), []).append(pkt)
    counters = {n: {p: d.ports[p].counters.snapshot() for p in d.ports} for n, d in net.devices.items()}
    drops = {n: dict(d.drops) for n, d in net.devices.items()}
    return per_link, counters, drops, slow


def test_compiled_run_local_delivers_what_the_python_one_does(monkeypatch):
    """Per link, the same packets in the same order; the same counters and drops everywhere."""
    py = _traffic(False, monkeypatch)
    c = _traffic(True, monkeypatch)
    arrivals, counters, drops, slow = py
    # the traffic really went everywhere: answers came back to node0001, SMPs reached the
    # leaf's SMA, the bad burst was counted
    assert set(arrivals) == {("node0001", 1), ("node0002", 1)}
    assert sum(1 for pkt in arrivals[("node0001", 1)] if pkt[0] >> 4 == 15) == 15  # DR and LID answers
    assert sum(1 for pkt in arrivals[("node0002", 1)] if pkt[0] >> 4 == 15) == 3  # the Gets to node0002
    assert sum(1 for pkt in arrivals[("node0002", 1)] if pkt[0] >> 4 != 15) == 5 * 3 + 3 + 4  # PMA Gets
    assert drops["spine01"]["bad_burst"] == 1
    assert drops["leaf01"]["pkey_inbound"] == 1
    assert counters["spine01"][2]["counters"]["port_xmit_pkts"] > 0
    assert len(slow) > 20 and c[3] == ["spine01"]  # in C every switch hop but the bad burst's
    assert c[0] == arrivals
    assert c[1] == counters
    assert c[2] == drops


def _pma_get(slid: int, dlid: int, tid: int) -> bytes:
    """A PMA Get on QP1, as a compiled driver builds each packet of its burst."""
    pma = w.new_mad(w.PMAMad, method=w.GET, tid=tid, attr_id=w.ATTR_PORT_COUNTERS)
    return w.build_ud_packet(slid=slid, dlid=dlid, dest_qp=1, src_qp=1, qkey=w.QKEY_GSI, pkey=0xFFFF, sl=0,
                             payload=pma.pack())


@pytest.mark.parametrize("captured", [False, True])
def test_a_quiet_readers_sends_cross_the_in_process_links_at_once(captured):
    """A reader that says it only posted sends (``add_reader``): its Segments go straight onto the
    in-process links and are delivered within the read (``_localfast.express``); while a capture
    watches, they go through the transmit queue instead, where the capture sees them."""
    net = SmNet("fattree:2,1,1,1")
    net.start_sm()
    net.stop_sm()
    host = _host_over(net)
    src, dst = net.devices["node0001"], net.devices["node0002"]
    got = []
    orig = dst.receive_local
    dst.receive_local = lambda port, data, now: (got.append(data), orig(port, data, now))[1]
    seen = []
    if captured:
        host.capture = lambda name, port, view, count: seen.append((name, port, count))
    pkt = _pma_get(src.ports[1].lid, dst.ports[1].lid, 42)
    buf = bytearray(BURST_HEADROOM) + LEN.pack(len(pkt)) + pkt

    def reader(now):
        src.post_segment(1, 1, 1, (len(pkt) - 2) // 4, buf)
        return True

    host._read(("node0001", reader), net.now)
    if captured:
        assert got == [] and ("node0001", 1) in host.txq  # queued for flush, which the capture watches
        host.flush()
        assert seen[0] == ("node0001", 1, 1)
        while host.local_q:
            host.run_local(net.now)
    assert [bytes(p) for p in got] == [bytes(pkt)]
    assert src.ports[1].counters.pc["port_xmit_pkts"] >= 1 and dst.ports[1].counters.pc["port_rcv_pkts"] >= 1


class _CountingDeque(deque):
    """The in-process queue, counting what goes into it (the compiled paths call its methods)."""

    def __init__(self):
        super().__init__()
        self.puts = 0

    def append(self, item):
        self.puts += 1
        super().append(item)

    def appendleft(self, item):
        self.puts += 1
        super().appendleft(item)


def test_a_lone_packet_crosses_the_switches_without_the_queue():
    """Within run_local, what a switch hands on while nothing else waits in the queue is delivered
    at once (``_go_direct``): a PMA Get through leaf -> spine -> leaf, and the PMA's answer back,
    are queued once each (by the HCA that sends it) where the Python reference queues each at
    every hop (four), and arrive the same."""
    counts = {}
    for compiled in (False, True):
        net = SmNet("fattree:2,1,1,1")
        net.start_sm()
        net.stop_sm()
        host = _host_over(net)
        host.local_q = _CountingDeque()
        src, dst = net.devices["node0001"], net.devices["node0002"]
        got = []
        orig = dst.receive_local
        dst.receive_local = lambda port, data, now, _o=orig: (got.append(bytes(data)), _o(port, data, now))[1]
        pkt = _pma_get(src.ports[1].lid, dst.ports[1].lid, 7)
        src.post_segment(1, 1, 1, (len(pkt) - 2) // 4, bytearray(BURST_HEADROOM) + LEN.pack(len(pkt)) + pkt)
        saved = loop._localfast
        loop._localfast = _COMPILED if compiled else None
        try:
            host.drain("node0001", src)
            host.flush()
            while host.local_q:
                host.run_local(net.now)
        finally:
            loop._localfast = saved
        assert got == [pkt]
        counts[compiled] = host.local_q.puts
    assert counts == {False: 8, True: 2}


def test_a_routing_loop_goes_round_the_queue_not_the_c_stack():
    """Four switches whose LFTs send a LID round a cycle (leaf01 -> spine01 -> leaf02 -> spine02 ->
    leaf01): the packet circulates (as on hardware without a HOQ lifetime), a few hops straight
    through and then through the queue, whose budget hands the loop back; the C stack never
    grows with it."""
    net = SmNet("fattree:2,2,1,1")
    net.start_sm()
    net.stop_sm()
    host = _host_over(net)
    src = net.devices["node0001"]
    lost = 0x0BAD  # a LID nobody has, routed in a circle

    def port_to(a, b):
        return next(p for (n, p), (m, _) in host.local.items() if n == a and m == b)

    cycle = ["leaf01", "spine01", "leaf02", "spine02", "leaf01"]
    for a, b in zip(cycle, cycle[1:]):
        sw = net.devices[a]
        if len(sw.lft) <= lost:
            sw.lft.extend(b"\xff" * (lost + 1 - len(sw.lft)))
        sw.lft[lost] = port_to(a, b)
        sw.lft_top = max(sw.lft_top, lost)
    leaf = net.devices["leaf01"]
    out = port_to("leaf01", "spine01")
    pkt = _pma_get(src.ports[1].lid, lost, 9)
    src.post_segment(1, 1, 1, (len(pkt) - 2) // 4, bytearray(BURST_HEADROOM) + LEN.pack(len(pkt)) + pkt)
    host.drain("node0001", src)
    host.flush()
    before = leaf.ports[out].counters.pc["port_xmit_pkts"]
    for _ in range(3):
        host.run_local(net.now)  # each call returns: the budget, not the loop, ends it
    assert len(host.local_q) == 1  # still going round
    assert leaf.ports[out].counters.pc["port_xmit_pkts"] - before > 100


@pytest.mark.parametrize("compiled", [False, True], ids=["python", "compiled"])
def test_a_fault_past_a_switch_is_the_receivers_not_the_switchs(compiled, monkeypatch):
    """An error in the node software of the device a switch handed a packet to (here its timers)
    leaves run_local as it does from the Python reference; the switch counts no internal error,
    and nothing of the packet stays behind for an unrelated delivery."""
    net, host = _fabric(monkeypatch, compiled)
    src, dst = net.devices["node0001"], net.devices["node0002"]
    dst.agents.append(object())  # software with timers on node0002: the host runs them after a delivery

    def tick(dev, now):
        if dev is dst:
            raise RuntimeError("node0002's software failed")
    host._tick_if_due = tick
    pkt = _pma_get(src.ports[1].lid, dst.ports[1].lid, 11)
    got = src.ports[1].counters.pc["port_rcv_pkts"]
    src.post_segment(1, 1, 1, (len(pkt) - 2) // 4, bytearray(BURST_HEADROOM) + LEN.pack(len(pkt)) + pkt)
    host.drain("node0001", src)
    host.flush()
    with pytest.raises(RuntimeError, match="node0002's software failed"):
        while host.local_q:
            host.run_local(net.now)
    assert all(d.drops.get("internal_error", 0) == 0 for d in net.devices.values())
    dst.agents.clear()
    while host.local_q:  # the PMA's answer, queued before the failure, still goes home
        host.run_local(net.now)
    assert src.ports[1].counters.pc["port_rcv_pkts"] == got + 1


# --- the sweep's shortcuts: the compiled paths stand for the devices' own Python -------------------


def test_the_compiled_refresh_of_marked_ports_makes_the_switchs_own_tables():
    """After a sweep's Sets (a port's state, link, partition enforcement, neighbor MTU) the C
    refresh of the marked ports leaves the flags, MTU and P_Key tables as Switch._refresh_port_table
    makes them; a mark for a port the switch has not is left to the Python."""
    import random

    from fabric.devices.switch import Switch

    rng = random.Random(15)
    net = SmNet("fattree:2,1,1,1")
    net.start_sm()
    net.stop_sm()
    sw = net.devices["leaf01"]
    sw._refresh_port_table()
    seen_flags = set()
    for _ in range(300):
        marked = rng.sample(sorted(sw.ports), rng.randint(1, 3))
        for n in marked:
            p = sw.ports[n]
            p.state = rng.choice([1, 2, 3, 4])
            p.phys = rng.choice([2, 3, 5])
            p.pkey_enforce_in, p.pkey_enforce_out = rng.random() < 0.3, rng.random() < 0.3
            p.neighbor_mtu = rng.choice([0, 1, 2, 3, 4, 5, 6])
            p.pkeys = [rng.choice([0xFFFF, 0x7FFF, 0x8001, 0]) | rng.randrange(0x80) for _ in range(rng.randint(0, 40))]
            sw._dirty_ports.add(n)
        assert _COMPILED.refresh_ports(sw) is True and sw._dirty_ports == set()
        ours = (bytes(sw._flags), list(sw._mtu), None if sw._pkeys is None else list(sw._pkeys))
        seen_flags.update(sw._flags)
        sw._dirty_ports.update(marked)
        Switch._refresh_port_table(sw)
        assert ours == (bytes(sw._flags), list(sw._mtu), None if sw._pkeys is None else list(sw._pkeys))
    assert {1, 2, 3, 4, 8, 12} <= seen_flags  # every bit of the flags was made, on and off
    assert sw._pkeys is not None and any(sw._pkeys)
    sw._dirty_ports.add(len(sw._flags) + 3)
    assert _COMPILED.refresh_ports(sw) is False and sw._dirty_ports == {len(sw._flags) + 3}


def _port_info_set(dev, port: int, tid: int, path: bytes, **change):
    change = {"port_state": 0, "phys_state": 0, **change}  # 0: no change, unless asked
    data = w.put_attr(dev.ports[port].port_info(port).replace(**change), 64)
    return w.new_mad(w.SMPDirected, method=w.SET, tid=tid, attr_id=w.ATTR_PORT_INFO, attr_mod=port,
                     hop_cnt=len(path) - 1, dr_slid=0xFFFF, dr_dlid=0xFFFF, initial_path=path.ljust(64, b"\0"),
                     data=data)


def _sets(compiled: bool, monkeypatch, *, trap: bool) -> tuple:
    """A sweep's PortInfo Sets to a switch, one at a time through the host (in C or in Python):
    port 0's master SM LID (an event only software would hear), then an uplink's PortState Down
    (a link bounce, which training carries out)."""
    net, host = _fabric(monkeypatch, compiled)
    src, leaf = net.devices["node0001"], net.devices["leaf01"]
    if trap:  # a Trap 128 waiting to be sent again: the switch keeps time
        leaf._traps.append([net.now + 1000.0, 2, b"", 1, 0x4242])
    uplink = next(p for (n, p), (m, _) in host.local.items() if n == "leaf01" and m == "spine01")
    stale = []
    for tid, (port, change) in enumerate([(0, {"master_sm_lid": 77}), (uplink, {"port_state": 1})]):
        _send_through(host, src, _port_info_set(leaf, port, 900 + tid, bytes([0, 1]), **change), net.now)
        stale.append("leaf01" in host._stale)
        host._stale.clear()
    state = {n: ([e for e in d.events], {p: (q.state, q.phys) for p, q in d.ports.items()})
             for n, d in net.devices.items()}
    return state, stale, leaf.ports[0].sm_lid, leaf.ports[uplink].counters.snapshot()


@pytest.mark.parametrize("trap", [False, True])
def test_a_sweeps_sets_to_a_switch_leave_it_as_the_python_does(monkeypatch, trap):
    """The compiled hop takes a switch's events that ask nothing of its links (no software hears
    them) and leaves the others to handle_events: the same ports, links, events and timers after
    the same Sets either way; a switch with a trap to resend is looked at again."""
    py = _sets(False, monkeypatch, trap=trap)
    c = _sets(True, monkeypatch, trap=trap)
    state, stale, sm_lid, uplink_counters = py
    assert sm_lid == 77 and uplink_counters["counters"]["link_downed_counter"] >= 1  # both Sets took effect
    assert all(not events for events, _ in state.values())
    assert c[0] == state and c[2:] == py[2:]
    # the Python marks every device a burst reached; the C, after the SM LID's Set, only one that
    # keeps time (the bounce retrains the link, whose control frames mark the switch either way)
    assert c[1] == [trap, True] and stale == [True, True]


def test_an_hca_whose_receive_is_patched_gets_its_smps_through_it(monkeypatch):
    """The compiled hop hands an HCA's SMPs to its SMA directly only while HCA.receive_local is
    the class's own: patched in the class (as an instance's is, above), the patch sees them."""
    from fabric.devices.hca import HCA

    net, host = _fabric(monkeypatch)
    src = net.devices["node0001"]
    seen = []
    orig = HCA.receive_local

    def spy(self, port, data, now):
        seen.append((self.name, bytes(data)[0]))
        return orig(self, port, data, now)
    monkeypatch.setattr(HCA, "receive_local", spy)
    smp = w.new_mad(w.SMPDirected, method=w.GET, tid=5, attr_id=w.ATTR_NODE_INFO, hop_cnt=4, dr_slid=0xFFFF,
                    dr_dlid=0xFFFF, initial_path=bytes([0, 1, 2, 2, 1]).ljust(64, b"\0"))
    _send_through(host, src, smp, net.now)
    assert ("node0002", 0xF0) in seen and ("node0001", 0xF0) in seen  # the request there, the answer back


def test_a_switch_whose_keeps_time_is_patched_is_asked(monkeypatch):
    """After its SMA answered in the compiled hop, a switch with no software and no trap is left
    alone; one whose class says it keeps time (a patched keeps_time) is looked at again."""
    from fabric.devices.switch import Switch

    for patched in (False, True):
        if patched:
            monkeypatch.setattr(Switch, "keeps_time", lambda self: True)
        net, host = _fabric(monkeypatch)
        smp = w.new_mad(w.SMPDirected, method=w.GET, tid=6, attr_id=w.ATTR_SWITCH_INFO, hop_cnt=2, dr_slid=0xFFFF,
                        dr_dlid=0xFFFF, initial_path=bytes([0, 1, 2]).ljust(64, b"\0"))
        host._stale.clear()
        _send_through(host, net.devices["node0001"], smp, net.now)
        assert ("spine01" in host._stale) is patched


class _Listener:
    """Software on a node that hears its device's events and keeps no time."""

    def __init__(self):
        self.heard = []

    def on_event(self, kind, port, detail):
        self.heard.append((kind, port, detail))

    def next_deadline(self):
        return None

    def tick(self, now):
        pass


@pytest.mark.parametrize("compiled", [False, True], ids=["python", "compiled"])
def test_a_sets_events_at_an_hca_reach_its_software_or_nobody(compiled, monkeypatch):
    """A Set that changes an HCA's port (its master SM LID here): with no software on the node the
    compiled hop takes the event itself and leaves the node's timers alone; software on it hears
    the event as from handle_events."""
    net, host = _fabric(monkeypatch, compiled)
    src, dst = net.devices["node0001"], net.devices["node0002"]
    path = bytes([0, 1, 2, 2, 1])
    host._stale.clear()
    _send_through(host, src, _port_info_set(dst, 1, 950, path, master_sm_lid=55), net.now)
    assert dst.ports[1].sm_lid == 55 and dst.events == []
    if compiled:
        assert "node0002" not in host._stale
    listener = _Listener()
    dst.agents.append(listener)
    _send_through(host, src, _port_info_set(dst, 1, 951, path, master_sm_lid=66), net.now)
    assert dst.ports[1].sm_lid == 66 and dst.events == []
    assert ("sm_change", 1, (55, 66)) in listener.heard
