"""The accelerated provider's TX path against the standard one: the same frames put the same octets
on the wire; TSS spreads flows over the TX queues; queues stop when full and wake at half."""

import pytest

from fabric import wire as w
from ipnet import IpNet
from ipoib import _stdpath
from ipoib import inet
from ipoib.netdev import BUSY, OK, AddressHandle
from ipoib import encap

_fastpath = pytest.importorskip("ipoib._fastpath")


def _frame(i, sport):
    src, dst = inet.ip4("198.18.0.1"), inet.ip4("198.18.0.3")
    return encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack() + inet.build_ipv4(
        src, dst, inet.IPPROTO_UDP, inet.build_udp(src, dst, sport, 9000, i.to_bytes(4, "big") * 8), ident=i)


def _wire_of(backend, frames, udp4="sd"):
    """What node0001 puts on its link for ``frames`` sent to node0003 through the provider."""
    net = IpNet("fattree:2,2,2,2", backend=backend).up()
    seen = []
    net.capture = lambda dev, port, pkt: seen.append(pkt) if dev == "node0001" else None
    ifc = net.nodes["node0001"].ifs["ib0"]
    if udp4 != "sd":
        ifc.netdev.provider.set_rx_flow_hash(udp4)
    dst = net.nodes["node0003"].ifs["ib0"]
    ah = AddressHandle(dlid=net.lid("node0003"))
    for f in frames:
        assert ifc.netdev.send(f, ah, dst.qpn) == OK
    ifc.netdev.poll(64)
    net._service("node0001", net.devices["node0001"])
    net.run()
    # our IPv4 frames only: the node's own ARP traffic may share the window
    return net, ifc, [p for p in seen if w.split_ud_packet(p).bth.dest_qp == dst.qpn
                      and w.split_ud_packet(p).payload[:2] == b"\x08\x00"]


def test_fast_and_std_put_the_same_octets_on_the_wire():
    frames = [_frame(i, 5000) for i in range(20)]  # one flow: one TX queue, so order is kept
    _, f_ifc, fast = _wire_of(_fastpath, frames)
    _, s_ifc, std = _wire_of(_stdpath, frames)
    assert f_ifc.netdev.served_by["send"] == "provider"  # the compiled TX path...
    assert s_ifc.netdev.served_by["send"] == "standard"  # ...against the standard implementation
    assert len(fast) == len(std) == 20
    assert fast == std


def test_tss_spreads_flows_and_keeps_each_flow_in_order():
    frames = [_frame(i, 5000 + (i % 16)) for i in range(64)]
    net, ifc, wire = _wire_of(_fastpath, frames, udp4="sdfn")  # UDP ports in the hash
    prov = ifc.netdev.provider
    used = [q for q in range(prov.ntx) if prov.q_packets[q]]
    assert len(used) >= 2, prov.queue_stats()
    assert sum(prov.q_packets) >= 64  # ours, plus whatever the node itself sent meanwhile
    # per flow (UDP source port), datagrams arrive in the order they were sent
    by_flow = {}
    for p in wire:
        body = w.split_ud_packet(p).payload[4:]
        h, payload = inet.parse_ipv4(body)
        u, data = inet.parse_udp(h.src, h.dst, payload)
        by_flow.setdefault(u.sport, []).append(int.from_bytes(data[:4], "big"))
    assert all(seq == sorted(seq) for seq in by_flow.values())
    assert sum(len(v) for v in by_flow.values()) == 64


def test_fast_queue_stops_when_full_and_wakes_at_half():
    net = IpNet("fattree:2,2,2,2", backend=_fastpath).up()
    ifc = net.nodes["node0001"].ifs["ib0"]
    prov = ifc.netdev.provider
    dst = net.nodes["node0003"].ifs["ib0"]
    ah = AddressHandle(dlid=net.lid("node0003"))
    f = _frame(1, 5000)
    q = _fastpath.frame_flow_hash(f) % prov.ntx
    rcs = [ifc.netdev.send(f, ah, dst.qpn) for _ in range(_fastpath.TX_SLOTS + 10)]
    assert rcs == [OK] * _fastpath.TX_SLOTS + [BUSY] * 10
    assert prov.stopped[q] and set(ifc.stopped_queues) == {q}
    assert not ifc.queue_stopped  # the other queues still run: frames for them still go out
    ifc.netdev.poll(64)  # the ring drains in one C loop: the queue wakes
    assert not prov.stopped[q] and not ifc.stopped_queues
    assert ifc.netdev.standard.ctx.stats["tx_packets"] == _fastpath.TX_SLOTS


def test_multicast_and_loopback_fall_back_to_the_standard_send_per_call():
    net = IpNet("fattree:2,2,2,2", backend=_fastpath).up()
    s = net.ping("node0001", "node0004", count=2)  # ARP to the broadcast group, then unicast
    assert s.received == 2
    nd = net.nodes["node0001"].ifs["ib0"].netdev
    assert nd.fallbacks.get("send", 0) >= 1  # the broadcast ARP went through the standard send
    assert sum(nd.provider.q_packets) >= 2  # the echoes through the fast path


@pytest.mark.parametrize("backend", [_fastpath, _stdpath], ids=["fast", "std"])
def test_burst_send_puts_the_same_packets_as_single_sends(backend):
    frames = [_frame(i, 6000 + (i % 4)) for i in range(40)]
    net = IpNet("fattree:2,2,2,2", backend=backend).up()
    seen = []
    net.capture = lambda dev, port, pkt: seen.append(pkt) if dev == "node0001" else None
    ifc = net.nodes["node0001"].ifs["ib0"]
    dst = net.nodes["node0003"].ifs["ib0"]
    ah = AddressHandle(dlid=net.lid("node0003"))
    assert ifc.netdev.send_burst(frames, ah, dst.qpn) == 40
    ifc.netdev.poll(64)
    net._service("node0001", net.devices["node0001"])
    net.run()
    got = sorted(w.split_ud_packet(p).payload for p in seen if w.split_ud_packet(p).bth.dest_qp == dst.qpn
                 and w.split_ud_packet(p).payload[:2] == b"\x08\x00")  # not the node's own ARP
    assert got == sorted(frames)


def test_burst_send_stops_where_the_ring_fills():
    net = IpNet("fattree:2,2,2,2", backend=_fastpath).up()
    ifc = net.nodes["node0001"].ifs["ib0"]
    dst = net.nodes["node0003"].ifs["ib0"]
    f = _frame(7, 5000)  # one flow: one ring
    n = ifc.netdev.send_burst([f] * (_fastpath.TX_SLOTS + 5), AddressHandle(dlid=net.lid("node0003")), dst.qpn)
    assert n == _fastpath.TX_SLOTS
    assert ifc.stopped_queues and ifc.netdev.standard.ctx.stats["tx_busy"] == 1  # one refusal per burst


def test_burst_send_refuses_what_only_the_standard_path_takes_and_rechecks_a_kept_ah():
    """The provider's send_burst keeps the last AddressHandle it checked (they are immutable), as
    send() does: loopback, multicast, over-MTU frames and a stopped device are still refused, and a
    kept handle is checked again once our own LID has changed to its DLID."""
    from ipoib.netdev import NotSupported

    net = IpNet("fattree:2,2,2,2", backend=_fastpath).up()
    ifc = net.nodes["node0001"].ifs["ib0"]
    prov = ifc.netdev.provider
    port = net.devices["node0001"].ports[1]
    dst = net.nodes["node0003"].ifs["ib0"]
    f = _frame(1, 5000)
    ah = AddressHandle(dlid=net.lid("node0003"))
    assert prov.send_burst([f], ah, dst.qpn) == 1
    before = sum(prov.q_packets)
    for bad_ah in (AddressHandle(dlid=port.lid), AddressHandle(dlid=0xC001, dgid=bytes(16)),
                   AddressHandle(dlid=net.lid("node0003"), src_path_bits=1)):
        with pytest.raises(NotSupported):
            prov.send_burst([f], bad_ah, dst.qpn)
    with pytest.raises(NotSupported):  # one frame over the MTU: the whole burst to the standard path
        prov.send_burst([f, f + bytes(5000)], ah, dst.qpn)
    assert sum(prov.q_packets) == before  # nothing of the refused bursts was queued
    own = port.lid
    port.lid = ah.dlid  # the SM gave us the LID the kept handle points at: that is loopback now
    try:
        with pytest.raises(NotSupported):
            prov.send_burst([f], ah, dst.qpn)
    finally:
        port.lid = own
    assert prov.send_burst([f], ah, dst.qpn) == 1
    ifc.netdev.stop()
    with pytest.raises(NotSupported):
        prov.send_burst([f], ah, dst.qpn)


def test_burst_send_survives_a_frame_that_empties_the_list_it_is_in():
    """send_burst reads the frames from the list without taking references; a frame whose length
    is Python code that empties the list (a bytearray subclass) must not make it read past the
    list's end: what is left is sent, nothing more."""
    net = IpNet("fattree:2,2,2,2", backend=_fastpath).up()
    ifc = net.nodes["node0001"].ifs["ib0"]
    prov = ifc.netdev.provider
    dst = net.nodes["node0003"].ifs["ib0"]
    f = _frame(1, 5000)
    frames = []

    class Emptying(bytearray):
        def __len__(self):
            frames.clear()
            return super().__len__()

    frames += [Emptying(f), f, f, f]
    before = sum(prov.q_packets)
    assert prov.send_burst(frames, AddressHandle(dlid=net.lid("node0003")), dst.qpn) == 0
    assert sum(prov.q_packets) == before and frames == []
    frames += [bytearray(f), Emptying(f), f]  # emptied at the second: nothing is left to send
    assert prov.send_burst(frames, AddressHandle(dlid=net.lid("node0003")), dst.qpn) == 0
    assert sum(prov.q_packets) == before


def test_the_drain_honours_a_post_segment_of_the_hcas_own():
    """The fast provider's drain calls HCA.post_segment's compiled body directly only while the
    HCA's post_segment is that one: an HCA's own (a spy here) or its class's other one is called."""
    net = IpNet("fattree:2,2,2,2", backend=_fastpath).up()
    ifc = net.nodes["node0001"].ifs["ib0"]
    hca = net.devices["node0001"]
    dst = net.nodes["node0003"].ifs["ib0"]
    ah = AddressHandle(dlid=net.lid("node0003"))
    calls = []
    real = hca.post_segment
    hca.post_segment = lambda *a: (calls.append(a[2]), real(*a))[1]
    assert ifc.netdev.send(_frame(1, 5000), ah, dst.qpn) == OK
    ifc.netdev.poll(64)
    assert calls == [1]
    del hca.post_segment
    assert ifc.netdev.send(_frame(2, 5000), ah, dst.qpn) == OK
    ifc.netdev.poll(64)
    assert calls == [1] and hca.qps[ifc.netdev.standard.ctx.qp.qpn].sent >= 2  # the compiled body sent it
    cls = type(hca)
    compiled = cls.__dict__["post_segment"] if "post_segment" in cls.__dict__ else None
    plain = cls.post_segment
    cls.post_segment = lambda self, *a: (calls.append(("class", a[2])), plain(self, *a))[1]
    try:  # the class's own changed: the drain calls it (the class's version tag is what it checks)
        assert ifc.netdev.send(_frame(3, 5000), ah, dst.qpn) == OK
        ifc.netdev.poll(64)
        assert calls == [1, ("class", 1)]
    finally:
        if compiled is None:
            del cls.post_segment
        else:
            cls.post_segment = compiled
    assert ifc.netdev.send(_frame(4, 5000), ah, dst.qpn) == OK
    ifc.netdev.poll(64)
    assert calls == [1, ("class", 1)]  # and the compiled body again once it is back
