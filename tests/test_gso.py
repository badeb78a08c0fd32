"""UDP segmentation offload (UDP_SEGMENT): one buffer, many datagrams. The fast provider cuts the
GSO packet up in C, the standard one in software; the datagrams on the wire, what arrives and what
is counted must be what separate sends would have made."""

import pytest

from fabric import wire as w
from ipnet import IpNet
from ipoib import _stdpath, gso
from ipoib import inet
from ipoib.iphost import UdpError
from ipoib import encap

_fastpath = pytest.importorskip("ipoib._fastpath")
BACKENDS = [("std", _stdpath), ("fast", _fastpath)]


def _gso_frame(payload: bytes, size: int, ident: int = 0x1234) -> gso.GsoPacket:
    src, dst = inet.ip4("198.18.0.1"), inet.ip4("198.18.0.2")
    first = inet.build_ipv4(src, dst, inet.IPPROTO_UDP, inet.build_udp(src, dst, 4000, 5000, payload[:size]),
                            ident=ident, df=False, ttl=64)
    return gso.GsoPacket(first[:28] + payload, size).with_header(encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack())


@pytest.mark.parametrize("total,size", [(100, 100), (101, 100), (1000, 64), (1999, 999), (64 * 31, 31),
                                        (7, 3), (2016 * 2, 2016)])
def test_software_segments_are_separate_datagrams(total, size):
    payload = bytes((i * 7) & 0xFF for i in range(total))
    segs = gso.segment(_gso_frame(payload, size, ident=0xFFFE))
    assert len(segs) == -(-total // size)
    got = b""
    for i, f in enumerate(segs):
        h, body = inet.parse_ipv4(f[4:])
        assert h.ident == (0xFFFE + i) & 0xFFFF  # consecutive identifications, wrapping
        u, data = inet.parse_udp(h.src, h.dst, body)  # both checksums verify
        assert (u.sport, u.dport) == (4000, 5000)
        got += data
    assert got == payload


def _wire(backend, frames):
    net = IpNet("single:2", backend=backend).up()
    seen = []
    net.capture = lambda dev, port, pkt: seen.append(pkt) if dev == "node0001" else None
    ifc = net.nodes["node0001"].ifs["ib0"]
    dst = net.nodes["node0002"].ifs["ib0"]
    from ipoib.netdev import AddressHandle

    for f in frames:
        assert ifc.netdev.send(f, AddressHandle(dlid=net.lid("node0002")), dst.qpn) == 0
    ifc.netdev.poll(64)
    net._service("node0001", net.devices["node0001"])
    net.run()
    return ifc, [p for p in seen if w.split_ud_packet(p).bth.dest_qp == dst.qpn
                 and w.split_ud_packet(p).payload[:2] == b"\x08\x00"]


@pytest.mark.parametrize("total,size", [(1000, 64), (1999, 999), (64 * 20, 20), (2016 * 3 + 5, 2016)])
def test_offload_in_c_puts_the_octets_software_gso_puts(total, size):
    payload = bytes((i * 13) & 0xFF for i in range(total))
    frame = _gso_frame(payload, size)
    f_ifc, fast = _wire(_fastpath, [frame])
    s_ifc, std = _wire(_stdpath, [frame])
    assert f_ifc.netdev.served_by["send"] == "provider" and s_ifc.netdev.served_by["send"] == "standard"
    assert len(fast) == len(std) == -(-total // size)
    assert fast == std
    assert [w.split_ud_packet(p).payload for p in fast] == gso.segment(frame)


@pytest.mark.parametrize("name,backend", BACKENDS)
def test_udp_segment_socket_option_end_to_end(name, backend):
    net = IpNet("single:2", backend=backend).up()
    a, b = net.nodes["node0001"], net.nodes["node0002"]
    rx = b.ip.udp_socket()
    rx.bind(7000)
    rx.rcvbuf = 1000
    tx = a.ip.udp_socket()
    tx.bind(7001)
    assert net.ping("node0001", "node0002").summary()["received"] == 1  # ARP and path resolved
    out0 = dict(a.ip.stats()["udp"])
    ifs0 = a.ifs["ib0"].stats["tx_packets"]
    tx.gso_size = 100
    data = b"".join(i.to_bytes(4, "big") * 25 for i in range(40))  # 40 datagrams of 100 octets
    assert tx.sendto(data, (net.ip("node0002"), 7000)) == len(data)
    tx.gso_size = 0
    tx.sendto(b"last", (net.ip("node0002"), 7000))
    net.run()
    for _ in range(5):
        net.advance(0.01)
    got = []
    while (d := rx.recvfrom()) is not None:
        got.append(d[0])
    assert got == [data[o:o + 100] for o in range(0, len(data), 100)] + [b"last"]
    udp = a.ip.stats()["udp"]
    assert udp["OutDatagrams"] - out0["OutDatagrams"] == 41
    assert a.ifs["ib0"].stats["tx_packets"] - ifs0 == 41
    assert b.ip.stats()["udp"]["InDatagrams"] >= 41


@pytest.mark.parametrize("name,backend", BACKENDS)
def test_udp_segment_errors(name, backend):
    net = IpNet("single:2", backend=backend).up()
    tx = net.nodes["node0001"].ip.udp_socket()
    tx.gso_size = 10
    with pytest.raises(UdpError) as e:
        tx.sendto(bytes(10 * 65), (net.ip("node0002"), 7000))
    assert "at most 64" in str(e.value)
    tx.gso_size = 2044
    with pytest.raises(UdpError) as e:
        tx.sendto(bytes(5000), (net.ip("node0002"), 7000))
    assert "over the MTU" in str(e.value)


def test_udp_segment_to_ourselves_is_cut_in_software():
    net = IpNet("single:2", backend=_fastpath).up()
    ip = net.nodes["node0001"].ip
    rx = ip.udp_socket()
    rx.bind(7100)
    tx = ip.udp_socket()
    tx.gso_size = 3
    tx.sendto(b"abcdefgh", (net.ip("node0001"), 7100))
    got = []
    while (d := rx.recvfrom()) is not None:
        got.append(d[0])
    assert got == [b"abc", b"def", b"gh"]


def _gro_net(backend, gro_socket):
    net = IpNet("single:2", backend=backend).up()
    a, b = net.nodes["node0001"], net.nodes["node0002"]
    rx = b.ip.udp_socket()
    rx.bind(7200)
    rx.rcvbuf = 1000
    rx.udp_gro = gro_socket
    tx = a.ip.udp_socket()
    tx.bind(7201)
    assert net.ping("node0001", "node0002").summary()["received"] == 1
    before = (dict(b.ip.stats()["udp"]), dict(b.ip.stats()["ip"]), b.ifs["ib0"].stats["rx_packets"])
    if backend is _fastpath:  # hold the interrupt so that the datagrams wait in the ring together
        b.ifs["ib0"].netdev.set_coalesce(2000, 64, False)
    tx.gso_size = 100
    data = b"".join(i.to_bytes(4, "big") * 25 for i in range(40)) + b"tail"
    tx.sendto(data, (net.ip("node0002"), 7200))
    for _ in range(5):
        net.advance(0.01)
    msgs = []
    while (m := rx.recvmsg()) is not None:
        msgs.append(m)
    udp, ip, ifrx = b.ip.stats()["udp"], b.ip.stats()["ip"], b.ifs["ib0"].stats["rx_packets"]
    counts = {"InDatagrams": udp["InDatagrams"] - before[0]["InDatagrams"],
              "InReceives": ip["InReceives"] - before[1]["InReceives"],
              "InDelivers": ip["InDelivers"] - before[1]["InDelivers"], "ib0_rx": ifrx - before[2]}
    return net, data, msgs, counts


@pytest.mark.parametrize("gro_socket", [False, True])
def test_gro_coalesces_for_udp_gro_sockets_and_splits_for_others(gro_socket):
    net, data, msgs, counts = _gro_net(_fastpath, gro_socket)
    _, _, s_msgs, s_counts = _gro_net(_stdpath, gro_socket)
    assert counts == s_counts == {"InDatagrams": 41, "InReceives": 41, "InDelivers": 41, "ib0_rx": 41}
    assert b"".join(m.data for m in msgs) == data == b"".join(m.data for m in s_msgs)
    assert sum(m.segments for m in msgs) == 41
    if gro_socket:
        assert len(msgs) < 41 and all(m.gso_size == 100 for m in msgs)  # coalesced: fewer, bigger
        prov = net.nodes["node0002"].ifs["ib0"].netdev.provider
        assert prov.queue_stats()["rx_gro_runs"] >= 1
    else:
        assert [m.data for m in msgs] == [m.data for m in s_msgs]  # split back, the same datagrams
        assert all(m.gso_size == 0 for m in msgs)
    assert [m.data for m in s_msgs] == [data[o:o + 100] for o in range(0, len(data), 100)]  # std: no GRO


# -- hostile runs: GRO must coalesce only what it can give back exactly -------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from devnet import with_crcs  # noqa: E402
from fabric.wire.burst import LEN  # noqa: E402

_NETS = {}


def _rx_rig(name):
    if name not in _NETS:
        net = IpNet("single:2", backend=_fastpath if name == "fast" else _stdpath).up()
        b = net.nodes["node0002"]
        socks = {}
        for port, gro in ((7300, False), (7301, True)):
            s = b.ip.udp_socket()
            s.bind(port)
            s.rcvbuf = 10_000
            s.udp_gro = gro
            socks[port] = s
        if name == "fast":
            b.ifs["ib0"].netdev.set_coalesce(100_000, 256, False)  # let whole bursts wait in the ring
        _NETS[name] = (net, socks)
    return _NETS[name]


def _datagram_packets(net, port, sizes, edits, ident0):
    """UD packets carrying UDP datagrams node0001 -> node0002:port with consecutive identifications,
    then octets of some changed (CRCs recomputed, so that they reach the receive rings)."""
    src, dst = inet.ip4(net.ip("node0001")), inet.ip4(net.ip("node0002"))
    ifc = net.nodes["node0002"].ifs["ib0"]
    qkey = ifc.netdev.standard.ctx.qp.qkey
    out = []
    for i, n in enumerate(sizes):
        payload = bytes((i + k) & 0xFF for k in range(n))
        frame = encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack() + inet.build_ipv4(
            src, dst, inet.IPPROTO_UDP, inet.build_udp(src, dst, 9000, port, payload), ident=(ident0 + i) & 0xFFFF,
            df=False)
        for j, pos, val in edits:
            if j == i:
                frame = frame[:pos % len(frame)] + bytes([val]) + frame[pos % len(frame) + 1:]
        pkt = w.build_ud_packet(slid=net.lid("node0001"), dlid=net.lid("node0002"), dest_qp=ifc.qpn,
                                src_qp=net.nodes["node0001"].ifs["ib0"].qpn, qkey=qkey, payload=frame)
        out.append(with_crcs(pkt[:-6]))
    return out


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.sampled_from([1, 2, 3, 50, 100, 100, 100, 100, 101, 99, 1000]), min_size=1, max_size=24),
       edits=st.lists(st.tuples(st.integers(0, 23), st.integers(0, 60), st.integers(0, 255)), max_size=3),
       port=st.sampled_from([7300, 7301]), ident0=st.integers(0, 0xFFFF))
def test_gro_gives_back_exactly_what_arrived(sizes, edits, port, ident0):
    out = {}
    for name in ("std", "fast"):
        net, socks = _rx_rig(name)
        hca = net.devices["node0002"]
        pkts = _datagram_packets(net, port, sizes, edits, ident0)
        hca.receive_burst(1, b"".join(LEN.pack(len(p)) + p for p in pkts), 0, len(pkts), net.now)
        net.advance(0.2)
        msgs = []
        while (m := socks[port].recvmsg()) is not None:
            msgs.append(m)
        for s in socks.values():
            while s.recvmsg() is not None:
                pass
        out[name] = msgs
    std, fast = out["std"], out["fast"]
    assert b"".join(m.data for m in fast) == b"".join(m.data for m in std)
    assert sum(m.segments for m in fast) == len(std)
    if port == 7300:  # no UDP_GRO: the very datagrams
        assert [m.data for m in fast] == [m.data for m in std]
    else:  # coalesced: each message is whole datagrams of its gso_size, the last maybe shorter
        datagrams = iter(m.data for m in std)
        for m in fast:
            if m.gso_size:
                parts = [m.data[o:o + m.gso_size] for o in range(0, len(m.data), m.gso_size)]
            else:
                parts = [m.data]
            assert parts == [next(datagrams) for _ in parts]


@pytest.mark.parametrize("name,backend", BACKENDS)
def test_a_gso_send_that_does_not_fit_is_refused_whole_and_counted_per_datagram(name, backend):
    net = IpNet("single:2", backend=backend).up()
    a = net.nodes["node0001"]
    assert net.ping("node0001", "node0002").summary()["received"] == 1
    tx = a.ip.udp_socket()
    tx.gso_size = 10
    a.ifs["ib0"].qdisc.limit = 0  # no qdisc backlog: what the full queue refuses is refused
    udp0 = dict(a.ip.stats()["udp"])
    ifc0 = dict(a.ifs["ib0"].stats)
    for _ in range(12):  # 12 x 60 datagrams without a poll in between: the send queue fills up
        tx.sendto(bytes(600), (net.ip("node0002"), 7000))
    udp = a.ip.stats()["udp"]
    sent = udp["OutDatagrams"] - udp0["OutDatagrams"]
    refused = udp["SndbufErrors"] - udp0["SndbufErrors"]
    assert refused > 0 and refused % 60 == 0  # whole GSO packets are refused, never part of one
    assert sent + refused == 12 * 60
    st = a.ifs["ib0"].stats
    assert st["tx_dropped"] - ifc0["tx_dropped"] == refused
    assert st["tx_packets"] - ifc0["tx_packets"] == sent


@pytest.mark.parametrize("name,backend", BACKENDS)
def test_a_gso_send_that_does_not_fit_waits_in_the_qdisc_whole(name, backend):
    """With the qdisc (txqueuelen 1000, the default) the same burst loses nothing: the GSO packets
    the full queue refuses wait, whole, and leave when it wakes."""
    net = IpNet("single:2", backend=backend).up()
    a = net.nodes["node0001"]
    rx = net.nodes["node0002"].ip.udp_socket()
    rx.bind(7000)
    rx.rcvbuf = 1 << 24
    assert net.ping("node0001", "node0002").summary()["received"] == 1
    tx = a.ip.udp_socket()
    tx.gso_size = 10
    udp0 = dict(a.ip.stats()["udp"])
    for _ in range(12):
        tx.sendto(bytes(600), (net.ip("node0002"), 7000))
    assert a.ifs["ib0"].stats["tx_queued"] > 0
    net.settle(0.5, step=0.05)
    udp = a.ip.stats()["udp"]
    assert udp["SndbufErrors"] == udp0["SndbufErrors"] and udp["OutDatagrams"] - udp0["OutDatagrams"] == 720
    got = 0
    while rx.recvfrom() is not None:
        got += 1
    assert got == 720 and a.ifs["ib0"].qdisc.length == 0 and a.ifs["ib0"].stats["tx_dropped"] == 0
