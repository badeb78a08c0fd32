"""The host IPv4 stack (ipoib/iphost/): IpStacks wired back to back through a fake link."""

from __future__ import annotations

import errno
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipoib import inet
from ipoib.inet import IP_FLAG_DF, IP_FLAG_MF, IPPROTO_ICMP, IPPROTO_UDP, ip4
from ipoib.iphost import (RX_DROP_REASONS, RX_ERROR_REASONS, TX_DROP_REASONS, TX_ERROR_REASONS, IpError, IpStack,
                      UdpError)

A, B, C = "198.18.0.1", "198.18.0.2", "198.18.0.3"
MTU = 2044


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Link:
    """One broadcast segment. ``xmit`` queues a packet for the stack whose address is the next hop
    (unicast) or for every other stack (broadcast; multicast only to stacks whose interface joined
    the group, like an IB multicast group). ``run()`` delivers the queue, advancing the clock by
    ``latency`` before each delivery. ``wire`` records (sender, next_hop, packet)."""

    def __init__(self, clock: Clock, latency: float = 0.0):
        self.clock = clock
        self.latency = latency
        self.ports = []  # (stack, ifname, addr, prefix)
        self.queue = deque()
        self.wire = []
        self.joined = set()  # (stack node, ifname, group)
        self.unknown = "refuse"  # unicast to nobody: 'refuse' (xmit False, like a failed ARP) or 'lose'
        self.filter = None  # callable(packets list) -> packets list, applied per xmit burst in run()
        self.hold = False  # True: queue but do not deliver until run(force=True)
        self.dup_replies = False

    def attach(self, stack: IpStack, addr: str, ifname: str = "ib0", prefix: int = 24, mtu: int = MTU):
        self.ports.append((stack, ifname, ip4(addr), prefix))
        return stack.add_interface(ifname, addr, prefix, mtu,
                                   lambda ifn, nh, pkt, s=stack: self.xmit(s, ifn, nh, pkt),
                                   join=lambda ifn, g, s=stack: self.joined.add((s.node, ifn, g)),
                                   leave=lambda ifn, g, s=stack: self.joined.discard((s.node, ifn, g)))

    def xmit(self, sender, ifname, next_hop, pkt):
        assert isinstance(next_hop, bytes) and len(next_hop) == 4
        self.wire.append((sender.node, next_hop, pkt))
        if next_hop[0] >= 224 and next_hop != b"\xff\xff\xff\xff":
            dests = [p for p in self.ports if p[0] is not sender
                     and ((p[0].node, p[1], next_hop) in self.joined or next_hop == bytes([224, 0, 0, 1]))]
        elif next_hop == b"\xff\xff\xff\xff" or next_hop[3] == 255:
            dests = [p for p in self.ports if p[0] is not sender]
        else:
            dests = [p for p in self.ports if p[2] == next_hop]
            if not dests:
                return self.unknown != "refuse"
        for p in dests:
            self.queue.append((p[0], p[1], pkt))
            if self.dup_replies and pkt[20] == inet.ICMP_ECHO_REPLY and pkt[9] == IPPROTO_ICMP:
                self.queue.append((p[0], p[1], pkt))
        return True

    def run(self, limit: int = 100000):
        n = 0
        while self.queue and not self.hold:
            batch = list(self.queue)
            self.queue.clear()
            if self.filter is not None:
                batch = self.filter(batch)
            for stack, ifname, pkt in batch:
                self.clock.t += self.latency
                stack.input(ifname, pkt)
                n += 1
                assert n < limit
        return n

    def sent_by(self, node):
        return [pkt for s, _, pkt in self.wire if s == node]


def pair(latency=0.0, **kw):
    clock = Clock()
    link = Link(clock, latency)
    a, b = IpStack("a", now=clock, **kw), IpStack("b", now=clock, **kw)
    link.attach(a, A)
    link.attach(b, B)
    return clock, link, a, b


def check_accounting(stack: IpStack):
    """Every received frame is delivered, dropped with one reason, or waits in a reassembly queue;
    every frame handed to a link is sent or dropped with one reason."""
    tx_reasons = TX_DROP_REASONS | TX_ERROR_REASONS
    tot = stack.stats()
    for d in list(tot["interfaces"].values()) + [tot]:
        assert d["rx_packets"] == d["rx_delivered"] + d["rx_errors"] + d["rx_dropped"] + d["reasm_pending"], d
        rx = {k: v for k, v in d["drops"].items() if k not in tx_reasons}
        assert sum(rx.values()) == d["rx_errors"] + d["rx_dropped"], d
        assert sum(v for k, v in rx.items() if k in RX_DROP_REASONS) == d["rx_dropped"], d
        tx = {k: v for k, v in d["drops"].items() if k in tx_reasons}
        assert sum(tx.values()) == d["tx_errors"] + d["tx_dropped"], d
        assert d["reasm_pending"] >= 0
    assert tot["drops"].get("internal_error", 0) == 0
    return tot


# -- ping ---------------------------------------------------------------------------------------


def test_ping_success_rtt_from_injected_time():
    clock, link, a, b = pair(latency=0.0005)
    s = a.ping(B, count=3, interval=1.0, timeout=1.0)
    assert s.sent == 1 and not s.done
    link.run()
    assert s.received == 1 and s.rtts == [pytest.approx(0.001)]
    assert a.next_deadline() == pytest.approx(1.0)
    for t in (1.0, 2.0):
        clock.t = t
        a.tick(t)
        link.run()
    assert (s.sent, s.received, s.duplicates, s.errors, s.done) == (3, 3, 0, [], True)
    assert s.rtts == [pytest.approx(0.001)] * 3
    summ = s.summary()
    assert summ["transmitted"] == 3 and summ["received"] == 3 and summ["packet_loss"] == 0.0
    assert summ["rtt_min_ms"] == pytest.approx(1.0) and summ["rtt_max_ms"] == pytest.approx(1.0)
    assert summ["rtt_mdev_ms"] == pytest.approx(0.0, abs=1e-6)
    assert a.next_deadline() is None
    # on the wire: echo requests with one identifier, sequence numbers from 1, DF (they fit)
    reqs = [inet.parse_ipv4(p) for p in link.sent_by("a")]
    assert [inet.parse_icmp(body)[0].seq for _, body in reqs] == [1, 2, 3]
    assert {inet.parse_icmp(body)[0].ident for _, body in reqs} == {s.ident}
    assert all(h.flags == IP_FLAG_DF and h.ttl == 64 and h.src == ip4(A) for h, _ in reqs)
    assert len(inet.parse_icmp(reqs[0][1])[1]) == 56
    assert b.stats()["icmp"]["InEchos"] == 3 and b.stats()["icmp"]["OutEchoReps"] == 3
    check_accounting(a), check_accounting(b)


def test_ping_sessions_get_distinct_identifiers_and_replies_match_by_id_and_seq():
    clock, link, a, b = pair()
    s1, s2 = a.ping(B, count=2), a.ping(B, count=2)
    assert s1.ident != s2.ident
    link.run()
    assert s1.received == 1 and s2.received == 1
    clock.t = 1.0
    a.tick(1.0)
    link.run()
    assert s1.done and s2.done and s1.received == 2 and s2.received == 2


def test_ping_unreachable_link_refuses():
    clock, link, a, b = pair()
    s = a.ping("198.18.0.77", count=2, timeout=1.0)
    assert s.errors == ["Destination Host Unreachable"] and s.sent == 1
    clock.t = 1.0
    a.tick(1.0)
    assert s.done and s.sent == 2 and s.received == 0 and len(s.errors) == 2
    summ = s.summary()
    assert summ["packet_loss"] == 100.0 and summ["errors"] == 2 and summ["rtt_avg_ms"] is None
    st_ = a.stats("ib0")
    assert st_["tx_dropped"] == 2 and st_["drops"]["xmit_failed"] == 2 and st_["tx_packets"] == 0
    check_accounting(a)


def test_ping_no_reply_times_out():
    clock, link, a, b = pair()
    link.unknown = "lose"
    s = a.ping("198.18.0.77", count=1, timeout=2.5)
    assert a.next_deadline() == 2.5
    a.tick(2.4)
    assert not s.done
    a.tick(2.5)
    assert s.done and s.received == 0 and s.errors == [] and s.summary()["packet_loss"] == 100.0


def test_ping_icmp_host_unreachable_is_reported_with_its_source():
    clock, link, a, b = pair()
    link.unknown = "lose"
    s = a.ping("198.18.0.77")
    req = link.sent_by("a")[-1]
    err = inet.build_ipv4(B, A, IPPROTO_ICMP, inet.build_icmp(3, 1, req[:28]))
    a.input("ib0", err)
    assert s.done and s.errors == ["Destination Host Unreachable"]
    assert s.error_details == [(1, B, "Destination Host Unreachable")]
    assert a.stats()["icmp"]["InDestUnreachs"] == 1
    check_accounting(a)


def test_ping_carrier_down_and_no_route():
    clock, link, a, b = pair()
    a.set_carrier("ib0", False)
    s = a.ping(B)
    assert s.done and s.errors == ["Network is down"]
    assert a.stats("ib0")["drops"] == {"carrier_down": 1} and a.stats("ib0")["tx_dropped"] == 1
    with pytest.raises(IpError) as ei:
        a.ping("10.1.2.3")
    assert ei.value.errno == errno.ENETUNREACH and ei.value.reason == "ENETUNREACH"
    assert a.stats()["ip"]["OutNoRoutes"] == 1
    with pytest.raises(IpError):
        a.ping(B, ifname="ib9")
    with pytest.raises(ValueError):
        a.ping(B, size=70000)
    check_accounting(a)


def test_ping_larger_than_mtu_fragments_and_reassembles():
    clock, link, a, b = pair()
    s = a.ping(B, size=3000)
    link.run()
    assert s.done and s.received == 1 and s.corrupted == 0
    for node in ("a", "b"):  # the request, then the reply
        frags = [inet.parse_ipv4(p)[0] for p in link.sent_by(node)]
        assert [len(p) for p in link.sent_by(node)] == [2044, 20 + 3008 - 2024]
        assert all(len(p) <= MTU for p in link.sent_by(node))
        assert [(f.frag_offset * 8, f.flags) for f in frags] == [(0, IP_FLAG_MF), (2024, 0)]
        assert len({f.ident for f in frags}) == 1
    assert b.stats()["ip"]["ReasmOKs"] == 1 and a.stats()["ip"]["ReasmOKs"] == 1
    assert a.stats()["ip"]["FragCreates"] == 2
    assert b.stats("ib0")["rx_packets"] == 2 and b.stats("ib0")["rx_delivered"] == 2
    check_accounting(a), check_accounting(b)


def test_ping_duplicate_replies_counted():
    clock, link, a, b = pair()
    link.dup_replies = True
    s = a.ping(B, count=2, timeout=1.0)
    link.run()
    assert s.received == 1 and s.duplicates == 1
    clock.t = 1.0
    a.tick(1.0)
    link.run()
    assert s.done and s.received == 2
    # the second duplicate came after the session finished: nobody wanted it
    assert a.stats("ib0")["drops"].get("no_session") == 1 and s.duplicates == 1
    check_accounting(a)


def test_ping_own_address_through_loopback():
    clock, link, a, b = pair()
    s = a.ping(A, size=5000)
    assert s.done and s.received == 1
    assert link.wire == []
    assert a.stats("lo")["rx_packets"] == 2 and a.stats("lo")["tx_packets"] == 2
    check_accounting(a)


def test_broadcast_ping_ignored_unless_enabled():
    clock, link, a, b = pair()
    c = IpStack("c", now=clock)
    link.attach(c, C)
    s = a.ping("198.18.0.255", timeout=1.0)
    link.run()
    assert s.received == 0 and b.stats("ib0")["drops"] == {"echo_broadcast": 1}
    b.icmp_echo_ignore_broadcasts = c.icmp_echo_ignore_broadcasts = False
    s = a.ping("255.255.255.255", count=2, timeout=1.0)
    link.run()
    assert s.received == 1 and s.duplicates == 1  # two hosts answered, like ping -b's DUP!
    assert {d for d in (b.stats()["icmp"]["OutEchoReps"], c.stats()["icmp"]["OutEchoReps"])} == {1}


# -- UDP ----------------------------------------------------------------------------------------

ECHO_SIZES = sorted(set(list(range(0, 65)) + list(range(65, 8001, 97)) +
                        [2015, 2016, 2017, 2023, 2024, 2025, 4039, 4040, 4041, 4048, 6064, 6065, 7999, 8000]))


def test_udp_echo_sizes_0_to_8000_with_fragmentation():
    clock, link, a, b = pair()
    srv = b.udp_socket()
    srv.bind(7)
    cli = a.udp_socket()
    assert cli.bind() == ("0.0.0.0", 32768)
    for n in ECHO_SIZES:
        data = bytes((i * 7 + n) & 0xFF for i in range(n))
        assert cli.sendto(data, (B, 7)) == n
        link.run()
        got, src = srv.recvfrom()
        assert got == data and src == (A, 32768)
        srv.sendto(got, src)
        link.run()
        assert cli.recvfrom() == (data, (B, 7))
    assert srv.pending() == cli.pending() == 0
    for node in ("a", "b"):
        for pkt in link.sent_by(node):
            assert len(pkt) <= MTU
            h, _ = inet.parse_ipv4(pkt)  # header checksum verified
            assert not h.flags & IP_FLAG_DF
    # the UDP checksum is set (nonzero) and right: check one unfragmented datagram's
    h, body = inet.parse_ipv4(link.sent_by("a")[5])
    assert body[6:8] != b"\0\0" and inet.parse_udp(h.src, h.dst, body)[1] == bytes((i * 7 + 5) & 0xFF for i in range(5))
    nfrag = sum(1 for n in ECHO_SIZES if 28 + n > MTU)
    sa, sb = check_accounting(a), check_accounting(b)
    assert sb["ip"]["ReasmOKs"] == nfrag and sa["ip"]["FragOKs"] == nfrag
    assert sa["udp"]["OutDatagrams"] == sb["udp"]["InDatagrams"] == len(ECHO_SIZES)
    assert sa["tx_packets"] == sb["rx_packets"] and sa["tx_bytes"] == sb["rx_bytes"]
    assert sb["tx_packets"] == sa["rx_packets"] and sb["tx_bytes"] == sa["rx_bytes"]
    assert sa["rx_errors"] == sa["rx_dropped"] == sb["rx_errors"] == sb["rx_dropped"] == 0


def test_udp_reordered_fragments_reassemble():
    clock, link, a, b = pair()
    link.filter = lambda batch: batch[::-1]
    srv = b.udp_socket()
    srv.bind(9)
    data = bytes(range(256)) * 25
    a.udp_socket().sendto(data, (B, 9))
    link.run()
    assert srv.recvfrom()[0] == data


def test_udp_lost_fragment_times_out_with_icmp_time_exceeded():
    clock, link, a, b = pair()
    link.filter = lambda batch: [x for x in batch if inet.parse_ipv4(x[2])[0].frag_offset != 253]
    srv = b.udp_socket()
    srv.bind(9)
    cli = a.udp_socket()
    cli.sendto(bytes(5000), (B, 9))
    link.run()
    assert srv.pending() == 0
    sb = b.stats("ib0")
    assert sb["reasm_pending"] == 2 and b.stats()["reasm_queues"] == 1
    assert b.next_deadline() == 30.0
    link.filter = None
    clock.t = 29.9
    b.tick(29.9)
    assert b.stats()["reasm_queues"] == 1
    clock.t = 30.0
    b.tick(30.0)
    link.run()
    sb = b.stats("ib0")
    assert sb["reasm_pending"] == 0 and sb["drops"] == {"frag_timeout": 2}
    assert b.stats()["ip"]["ReasmTimeout"] == 1 and b.stats()["icmp"]["OutTimeExcds"] == 1
    assert list(cli.errors) == [("ETIMEDOUT", B, (B, 9))]
    assert b.next_deadline() is None
    check_accounting(a), check_accounting(b)


def test_udp_port_unreachable():
    clock, link, a, b = pair()
    cli = a.udp_socket()
    cli.sendto(b"hello", (B, 4242))
    link.run()
    assert b.stats()["udp"]["NoPorts"] == 1 and b.stats("ib0")["drops"] == {"no_socket": 1}
    h, body = inet.parse_ipv4(link.sent_by("b")[0])
    icmp, quote = inet.parse_icmp(body)
    assert (h.src, h.dst, icmp.type, icmp.code) == (ip4(B), ip4(A), 3, 3)
    assert quote[:28] == link.sent_by("a")[0][:28]
    assert a.stats()["icmp"]["InDestUnreachs"] == 1
    assert list(cli.errors) == [("ECONNREFUSED", B, (B, 4242))]
    # no ICMP error about a broadcast datagram, nor about an ICMP error
    cli.sendto(b"x", ("198.18.0.255", 4242))
    link.run()
    assert len(link.sent_by("b")) == 1
    check_accounting(a), check_accounting(b)


def test_unknown_protocol_gets_protocol_unreachable():
    clock, link, a, b = pair()
    b.input("ib0", inet.build_ipv4(A, B, 47, b"gre?"))
    h, body = inet.parse_ipv4(link.sent_by("b")[0])
    icmp, _ = inet.parse_icmp(body)
    assert (icmp.type, icmp.code) == (3, 2)
    assert b.stats("ib0")["drops"] == {"unknown_protocol": 1}


def test_udp_rcvbuf_overflow_counted():
    clock, link, a, b = pair()
    srv = b.udp_socket()
    srv.rcvbuf = 4
    srv.bind(5000)
    cli = a.udp_socket()
    for i in range(6):
        cli.sendto(bytes([i]), (B, 5000))
    link.run()
    assert srv.pending() == 4 and srv.rx_dropped == 2
    assert b.stats()["udp"]["RcvbufErrors"] == 2 and b.stats("ib0")["drops"] == {"rcvbuf": 2}
    assert [srv.recvfrom()[0] for _ in range(4)] == [bytes([i]) for i in range(4)]
    assert srv.recvfrom() is None
    check_accounting(b)


def test_udp_default_rcvbuf_is_256():
    clock, link, a, b = pair()
    srv = b.udp_socket()
    srv.bind(5000)
    cli = a.udp_socket()
    for i in range(300):
        cli.sendto(b"", (B, 5000))
    link.run()
    assert srv.pending() == 256 and b.stats()["udp"]["RcvbufErrors"] == 44


def test_udp_socket_errors():
    clock, link, a, b = pair()
    s1, s2 = a.udp_socket(), a.udp_socket()
    s1.bind(53)
    with pytest.raises(UdpError) as ei:
        s2.bind(53)
    assert ei.value.reason == "EADDRINUSE"
    with pytest.raises(UdpError) as ei:
        s2.bind(53, A)  # the wildcard holder conflicts with a specific bind too
    assert ei.value.errno == errno.EADDRINUSE
    with pytest.raises(UdpError) as ei:
        s2.bind(54, "10.0.0.1")
    assert ei.value.reason == "EADDRNOTAVAIL"
    with pytest.raises(UdpError) as ei:
        s1.bind(55)
    assert ei.value.reason == "EINVAL"
    r1, r2 = a.udp_socket(), a.udp_socket()
    r1.reuseaddr = r2.reuseaddr = True
    r1.bind(600), r2.bind(600)
    with pytest.raises(UdpError) as ei:
        s2.sendto(b"x", (B, 0))
    assert ei.value.reason == "EINVAL"
    with pytest.raises(UdpError) as ei:
        s2.sendto(bytes(65508), (B, 1))
    assert ei.value.reason == "EMSGSIZE"
    assert s2.sendto(bytes(65507), (B, 1)) == 65507  # the largest: 33 fragments
    with pytest.raises(UdpError) as ei:
        s2.sendto(b"x", ("10.9.9.9", 1))
    assert ei.value.reason == "ENETUNREACH"
    with pytest.raises(UdpError) as ei:
        s2.sendto(b"x", (B, 1), ifname="nope")
    assert ei.value.reason == "ENODEV"
    a.set_carrier("ib0", False)
    with pytest.raises(UdpError) as ei:
        s2.sendto(b"x", (B, 1))
    assert ei.value.reason == "ENETDOWN" and a.stats("ib0")["drops"]["carrier_down"] == 1
    a.set_carrier("ib0", True)
    # the link refusing: counted, not raised, unless IP_RECVERR
    assert s2.sendto(b"x", ("198.18.0.99", 1)) == 1
    assert a.stats()["udp"]["SndbufErrors"] == 1
    s2.recverr = True
    with pytest.raises(UdpError) as ei:
        s2.sendto(b"x", ("198.18.0.99", 1))
    assert ei.value.reason == "ENOBUFS"
    s2.close()
    with pytest.raises(UdpError) as ei:
        s2.recvfrom()
    assert ei.value.reason == "EBADF"
    check_accounting(a)


def test_udp_ephemeral_ports_and_bind_to_address():
    clock, link, a, b = pair()
    socks = [b.udp_socket() for _ in range(3)]
    assert [s.bind()[1] for s in socks] == [32768, 32769, 32770]
    specific, wild = b.udp_socket(), b.udp_socket()
    specific.reuseaddr = wild.reuseaddr = True
    wild.bind(99)
    specific.bind(99, B)
    a.udp_socket().sendto(b"u", (B, 99))
    a.udp_socket().sendto(b"bc", ("198.18.0.255", 99))
    link.run()
    assert specific.recvmsg() == (b"u", (A, 32768), B, "ib0")  # the specific bind wins unicast
    assert wild.recvmsg() == (b"bc", (A, 32769), "198.18.0.255", "ib0")  # a broadcast is not for it
    assert specific.pending() == wild.pending() == 0


def test_udp_to_own_address_loops_back():
    clock, link, a, b = pair()
    srv = a.udp_socket()
    srv.bind(7)
    a.udp_socket().sendto(b"self", (A, 7))
    assert srv.recvfrom() == (b"self", (A, 32768)) and link.wire == []


def test_udp_checksum_zero_is_accepted_and_bad_one_dropped():
    clock, link, a, b = pair()
    srv = b.udp_socket()
    srv.bind(7)
    udp = inet.build_udp(A, B, 1, 7, b"nocsum")
    b.input("ib0", inet.build_ipv4(A, B, IPPROTO_UDP, udp[:6] + b"\0\0" + udp[8:]))
    assert srv.recvfrom() == (b"nocsum", (A, 1))
    b.input("ib0", inet.build_ipv4(A, B, IPPROTO_UDP, udp[:6] + b"\x12\x34" + udp[8:]))
    assert srv.recvfrom() is None and b.stats("ib0")["drops"] == {"udp_checksum": 1}
    assert b.stats()["udp"]["InCsumErrors"] == 1


# -- multicast ----------------------------------------------------------------------------------

G = "239.1.2.3"


def test_multicast_join_leave_hooks_and_delivery():
    clock, link, a, b = pair()
    calls = []
    b.interfaces["ib0"].join = lambda ifn, g: calls.append(("join", ifn, g))
    b.interfaces["ib0"].leave = lambda ifn, g: calls.append(("leave", ifn, g))
    r1, r2, other = b.udp_socket(), b.udp_socket(), b.udp_socket()
    for s in (r1, r2):
        s.reuseaddr = True
        s.bind(5000)
    other.bind(6000)
    tx = a.udp_socket()
    b.input("ib0", inet.build_ipv4(A, G, IPPROTO_UDP, inet.build_udp(A, G, 1, 5000, b"early")))
    assert b.stats("ib0")["drops"] == {"not_for_us": 1}  # the host has not joined
    r1.join_group(G)
    assert calls == [("join", "ib0", ip4(G))]
    r2.join_group(G, "ib0")
    assert len(calls) == 1
    with pytest.raises(UdpError) as ei:
        r2.join_group(G, "ib0")
    assert ei.value.reason == "EADDRINUSE"
    with pytest.raises(UdpError):
        r2.join_group("198.18.0.9")
    assert ip4(G) in b.memberships("ib0") and bytes([224, 0, 0, 1]) in b.memberships("ib0")
    link.joined.add(("b", "ib0", ip4(G)))
    tx.sendto(b"m1", (G, 5000))
    link.run()
    h, _ = inet.parse_ipv4(link.sent_by("a")[-1])
    assert h.ttl == 1 and h.dst == ip4(G)
    assert r1.recvmsg() == (b"m1", (A, 32768), G, "ib0") and r2.recvfrom()[0] == b"m1"
    assert b.stats("ib0")["multicast"] == 2
    # IP_MULTICAST_ALL (Linux default): a socket on the port gets groups other sockets joined
    r3 = b.udp_socket()
    r3.reuseaddr = True
    r3.bind(5000)
    tx.sendto(b"m2", (G, 5000))
    link.run()
    assert r3.recvfrom()[0] == b"m2"
    r3.multicast_all = False
    tx.sendto(b"m3", (G, 5000))
    link.run()
    assert r3.recvfrom() is None and r1.recvfrom()[0] == b"m2" and r1.recvfrom()[0] == b"m3"
    assert other.pending() == 0
    r1.leave_group(G)
    assert len(calls) == 1
    with pytest.raises(UdpError) as ei:
        r1.leave_group(G)
    assert ei.value.reason == "EADDRNOTAVAIL"
    r2.close()  # closing leaves
    assert calls[-1] == ("leave", "ib0", ip4(G)) and ip4(G) not in b.memberships("ib0")
    r1.join_group(G)
    b.remove_interface("ib0")
    assert calls[-1] == ("leave", "ib0", ip4(G)) and len(calls) == 4
    check_accounting(b)


def test_multicast_to_all_hosts_and_hook_failure_rolls_back():
    clock, link, a, b = pair()
    srv = b.udp_socket()
    srv.bind(7)
    a.udp_socket().sendto(b"all", ("224.0.0.1", 7))
    link.run()
    assert srv.recvfrom()[0] == b"all"

    def boom(ifn, g):
        raise RuntimeError("SA said no")
    b.interfaces["ib0"].join = boom
    with pytest.raises(RuntimeError):
        srv.join_group(G)
    assert ip4(G) not in b.memberships("ib0") and not srv.memberships


# -- routing, interfaces, counters --------------------------------------------------------------


def test_route_longest_prefix_and_multicast_first_up():
    s = IpStack("r")
    x = lambda *a: True  # noqa: E731
    wide = s.add_interface("ib0", "198.18.0.1", 16, MTU, x)
    narrow = s.add_interface("ib0.8001", "198.18.5.1", 24, MTU, x)
    assert s.route("198.18.5.9") is narrow and s.route(ip4("198.18.6.9")) is wide
    assert s.route("198.19.0.1") is None and s.route("198.18.5.1") is narrow
    assert s.route("239.0.0.1") is wide and s.route("255.255.255.255", "ib0.8001") is narrow
    s.set_carrier("ib0", False)
    assert s.route("239.0.0.1") is narrow and s.route("255.255.255.255") is narrow
    assert s.route("198.18.6.9") is wide  # the route stays while the carrier is off
    with pytest.raises(ValueError):
        s.add_interface("ib0", "10.0.0.1", 8, MTU, x)
    with pytest.raises(ValueError):
        s.add_interface("ib1", "10.0.0.1", 8, 20, x)
    with pytest.raises(ValueError):
        s.set_mtu("ib0", 65536)
    with pytest.raises(KeyError):
        s.set_carrier("ib7", True)
    assert narrow.broadcast == ip4("198.18.5.255") and wide.netmask == ip4("255.255.0.0")


def test_set_mtu_changes_fragment_size_and_idents_advance():
    clock, link, a, b = pair()
    a.set_mtu("ib0", 576)
    srv = b.udp_socket()
    srv.bind(7)
    a.udp_socket().sendto(bytes(1500), (B, 7))
    link.run()
    frags = [inet.parse_ipv4(p)[0] for p in link.sent_by("a")]
    assert [f.total_length for f in frags] == [572, 572, 20 + 1508 - 2 * 552] and srv.recvfrom()[0] == bytes(1500)
    a.udp_socket().sendto(b"", (B, 7))
    assert inet.parse_ipv4(link.sent_by("a")[-1])[0].ident == (frags[0].ident + 1) & 0xFFFF


def test_ttl_zero_for_us_is_accepted_like_linux():
    clock, link, a, b = pair()
    srv = b.udp_socket()
    srv.bind(7)
    b.input("ib0", inet.build_ipv4(A, B, IPPROTO_UDP, inet.build_udp(A, B, 1, 7, b"t"), ttl=0))
    assert srv.recvfrom() == (b"t", (A, 1))


def test_xmit_exception_is_a_tx_error():
    s = IpStack("x")

    def bad(*a):
        raise OSError("driver fell over")
    s.add_interface("ib0", A, 24, MTU, bad)
    p = s.ping(B)
    assert p.errors == ["Destination Host Unreachable"]
    assert s.stats("ib0")["tx_errors"] == 1 and s.stats("ib0")["drops"] == {"xmit_error": 1}


def test_reassembly_memory_is_bounded():
    clock = Clock()
    s = IpStack("s", now=clock, reasm_max_queues=4)
    s.add_interface("ib0", B, 24, MTU, lambda *a: True)
    for ident in range(5):
        s.input("ib0", inet.build_ipv4(A, B, IPPROTO_UDP, bytes(16), ident=ident, mf=True, df=False))
    st_ = s.stats("ib0")
    assert st_["reasm_pending"] == 4 and st_["drops"] == {"frag_overflow": 1}
    clock.t = 10.0
    s.input("ib0", inet.build_ipv4(A, B, IPPROTO_UDP, bytes(16), ident=0, frag_offset=4, mf=True, df=False))
    assert s.next_deadline() == 30.0
    s.tick(30.0)
    st_ = s.stats("ib0")
    assert st_["reasm_pending"] == 0 and st_["drops"] == {"frag_overflow": 1, "frag_timeout": 5}
    assert s.stats()["ip"]["ReasmFails"] == 5
    check_accounting(s)


# -- every failure mode, counted ----------------------------------------------------------------


def _csum(pkt: bytes) -> bytes:
    hl = (pkt[0] & 0xF) * 4
    h = bytearray(pkt[:hl])
    h[10:12] = b"\0\0"
    h[10:12] = inet.inet_checksum(h).to_bytes(2, "big")
    return bytes(h) + pkt[hl:]


def _patch(pkt: bytes, off: int, val: bytes, fix=True) -> bytes:
    out = pkt[:off] + val + pkt[off + len(val):]
    return _csum(out) if fix else out


UDP_OK = inet.build_ipv4(A, B, IPPROTO_UDP, inet.build_udp(A, B, 1, 7, b"data"))
ECHO = inet.build_ipv4(A, B, IPPROTO_ICMP, inet.build_icmp_echo(1, 1, b"ping"))


def _frag(off8, payload, mf, ident=77, proto=IPPROTO_UDP, dst=B):
    return inet.build_ipv4(A, dst, proto, payload, ident=ident, frag_offset=off8, mf=mf, df=False)


BAD_INPUTS = [
    ("truncated", [b"\x45\x00"]),
    ("ip_version", [_patch(UDP_OK, 0, b"\x65")]),
    ("ip_header", [_patch(UDP_OK, 0, b"\x44")]),
    ("ip_header", [_patch(UDP_OK, 0, b"\x4f")]),
    ("ip_length", [_patch(UDP_OK, 2, (len(UDP_OK) + 1).to_bytes(2, "big"))]),
    ("ip_length", [_patch(UDP_OK, 2, (19).to_bytes(2, "big"))]),
    ("ip_checksum", [_patch(UDP_OK, 10, b"\xde\xad", fix=False)]),
    ("udp_checksum", [_patch(UDP_OK, 30, b"\xde\xad")]),
    ("udp_length", [_patch(UDP_OK, 24, (99).to_bytes(2, "big"))]),
    ("udp_truncated", [inet.build_ipv4(A, B, IPPROTO_UDP, b"\0\1\0")]),
    ("icmp_checksum", [_patch(ECHO, 22, b"\xde\xad")]),
    ("icmp_truncated", [inet.build_ipv4(A, B, IPPROTO_ICMP, b"\x08\0")]),
    ("icmp_format", [inet.build_ipv4(A, B, IPPROTO_ICMP, inet.build_icmp(3, 1, b"\x45" + bytes(10)))]),
    ("icmp_unmatched", [inet.build_ipv4(A, B, IPPROTO_ICMP, inet.build_icmp(3, 1, ECHO[:28]))]),
    ("icmp_type", [inet.build_ipv4(A, B, IPPROTO_ICMP, inet.build_icmp(13, 0, bytes(12)))]),
    ("icmp_broadcast", [inet.build_ipv4(A, "198.18.0.255", IPPROTO_ICMP, inet.build_icmp(13, 0, bytes(12)))]),
    ("echo_broadcast", [inet.build_ipv4(A, "255.255.255.255", IPPROTO_ICMP, inet.build_icmp_echo(1, 1))]),
    ("no_session", [inet.build_ipv4(A, B, IPPROTO_ICMP, inet.build_icmp_echo(9, 9, reply=True))]),
    ("not_for_us", [inet.build_ipv4(A, C, IPPROTO_UDP, inet.build_udp(A, C, 1, 7, b""))]),
    ("not_for_us", [inet.build_ipv4(A, "239.9.9.9", IPPROTO_UDP, inet.build_udp(A, "239.9.9.9", 1, 7, b""))]),
    ("martian_source", [inet.build_ipv4("224.0.0.5", B, IPPROTO_UDP, b"")]),
    ("martian_source", [inet.build_ipv4(B, B, IPPROTO_UDP, b"")]),
    ("martian_source", [inet.build_ipv4("127.0.0.1", B, IPPROTO_UDP, b"")]),
    ("unknown_protocol", [inet.build_ipv4(A, B, 6, bytes(20))]),
    ("no_socket", [inet.build_ipv4(A, B, IPPROTO_UDP, inet.build_udp(A, B, 1, 9, b""))]),
    ("frag_bad", [_frag(0, bytes(12), True)]),  # MF fragment not a multiple of 8
    ("frag_bad", [_frag(8189, bytes(16), False)]),  # ping of death: beyond 65535
    ("frag_bad", [_frag(1, b"", True)]),  # empty
    ("frag_bad", [_frag(0, bytes(16), True), _frag(4, bytes(8), False), _frag(6, bytes(8), False)]),  # two ends
    ("frag_overlap", [_frag(0, bytes(16), True), _frag(1, bytes(16), True)]),
    ("frag_dup", [_frag(0, bytes(16), True), _frag(0, bytes(16), True)]),
]


@pytest.mark.parametrize("reason,packets", BAD_INPUTS, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD_INPUTS)])
def test_every_failure_mode_is_counted(reason, packets):
    clock = Clock()
    s = IpStack("s", now=clock)
    s.add_interface("ib0", B, 24, MTU, lambda *a: True)
    s.udp_socket().bind(7)
    for p in packets:
        s.input("ib0", p)
    st_ = check_accounting(s)
    assert reason in st_["drops"], st_["drops"]
    assert st_["rx_packets"] == len(packets)
    kind = "rx_errors" if reason in RX_ERROR_REASONS else "rx_dropped"
    assert reason in RX_ERROR_REASONS | RX_DROP_REASONS
    assert st_[kind] >= 1
    # nothing but the reasons of these packets was counted
    assert set(st_["drops"]) <= {reason, "frag_bad", "frag_overlap", "frag_dup"}


def test_unknown_interface_and_odd_types_never_raise():
    s = IpStack("s")
    s.add_interface("ib0", B, 24, MTU, lambda *a: True)
    s.input("ib9", UDP_OK)
    s.input("ib0", None)
    s.input("ib0", memoryview(UDP_OK))
    s.input("ib0", bytearray(b""))
    st_ = check_accounting(s)
    assert st_["drops"]["no_interface"] == 1 and st_["drops"]["malformed"] == 1
    assert st_["rx_packets"] == 4


_odd = [ip4(a) for a in (C, "198.18.0.255", "255.255.255.255", "224.0.0.1", "239.1.2.3", "0.0.0.0", "127.0.0.1",
                         "10.0.0.1")]
_srcs = st.sampled_from([ip4(A)] * 8 + [ip4(B)] + _odd)
_dsts = st.sampled_from([ip4(B)] * 8 + [ip4(A)] + _odd)


@st.composite
def _packets(draw):
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=64))
    src, dst = draw(_srcs), draw(_dsts)
    proto = draw(st.sampled_from([IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_UDP, 6]))
    if proto == IPPROTO_UDP and draw(st.booleans()):
        payload = inet.build_udp(src, dst, draw(st.integers(0, 9)), draw(st.sampled_from([7, 9, 5000])),
                                 draw(st.binary(max_size=40)))
    elif proto == IPPROTO_ICMP and draw(st.booleans()):
        t = draw(st.sampled_from([0, 3, 8, 11, 13]))
        body = draw(st.one_of(st.binary(max_size=40), st.just(UDP_OK[:28]), st.just(ECHO[:28])))
        payload = inet.build_icmp(t, draw(st.integers(0, 4)), body, rest=draw(st.binary(min_size=4, max_size=4)))
    else:
        payload = draw(st.binary(max_size=48))
    frag = draw(st.integers(0, 3)) == 0
    pkt = inet.build_ipv4(src, dst, proto, payload, ttl=draw(st.integers(0, 255)), ident=draw(st.integers(0, 2)),
                          df=draw(st.booleans()), mf=frag and draw(st.booleans()),
                          frag_offset=draw(st.integers(0, 6)) if frag else 0)
    if draw(st.integers(0, 3)) == 0:  # damage it, maybe keeping the header checksum right
        i = draw(st.integers(0, len(pkt) - 1))
        pkt = _patch(pkt, i, bytes([draw(st.integers(0, 255))]), fix=draw(st.booleans()))
    if draw(st.integers(0, 5)) == 0:
        pkt = pkt[:draw(st.integers(0, len(pkt)))]
    return pkt


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_packets(), st.floats(0, 20)), max_size=25))
def test_fuzz_input_never_raises_and_everything_is_accounted(steps):
    clock = Clock()
    s = IpStack("s", now=clock)
    s.icmp_echo_ignore_broadcasts = False
    s.add_interface("ib0", B, 24, MTU, lambda *a: True)
    s.add_interface("ib1", "10.0.0.2", 8, 576, lambda *a: False)
    srv = s.udp_socket()
    srv.rcvbuf = 3
    srv.bind(7)
    srv.join_group("239.1.2.3", "ib0")
    p = s.ping(A, count=2)
    for pkt, dt in steps:
        s.input("ib0" if dt < 15 else "ib1", pkt)
        clock.t += dt
        s.tick(clock.t)
    tot = check_accounting(s)
    assert tot["rx_packets"] == len(steps) + tot["interfaces"]["lo"]["rx_packets"]
    for _ in range(10):  # every timer resolves when its deadline comes
        if s.next_deadline() is None:
            break
        clock.t = max(clock.t, s.next_deadline())
        s.tick(clock.t)
    tot = check_accounting(s)
    assert tot["reasm_pending"] == 0 and p.done


def test_stats_shape_and_totals_survive_interface_removal():
    clock, link, a, b = pair()
    a.ping(B)
    link.run()
    before = a.stats()
    assert set(before) >= {"rx_packets", "rx_bytes", "rx_errors", "rx_dropped", "tx_packets", "tx_bytes",
                           "tx_errors", "tx_dropped", "multicast", "drops", "interfaces", "ip", "icmp", "udp"}
    assert before["tx_packets"] == 1 and before["rx_packets"] == 1 and before["tx_bytes"] == 84
    a.remove_interface("ib0")
    after = a.stats()
    assert after["tx_packets"] == 1 and "ib0" not in after["interfaces"]
    assert a.route(B) is None


def test_three_hosts_multicast_only_to_members():
    clock, link, a, b = pair()
    c = IpStack("c", now=clock)
    link.attach(c, C)
    rb, rc = b.udp_socket(), c.udp_socket()
    rb.bind(5000), rc.bind(5000)
    rb.join_group(G)
    assert ("b", "ib0", ip4(G)) in link.joined and ("c", "ib0", ip4(G)) not in link.joined
    tx = a.udp_socket()
    tx.sendto(b"1", (G, 5000))
    link.run()
    assert rb.recvfrom()[0] == b"1" and rc.recvfrom() is None
    rc.join_group(G)
    tx.sendto(bytes(3000), (G, 5000))  # fragmented multicast
    link.run()
    assert rb.recvfrom()[0] == bytes(3000) and rc.recvfrom()[0] == bytes(3000)
    rb.close()
    assert ("b", "ib0", ip4(G)) not in link.joined
    for s in (a, b, c):
        check_accounting(s)
    assert c.stats("ib0")["multicast"] == 2


def test_ping_rtt_statistics_and_cancel():
    clock, link, a, b = pair()
    s = a.ping(B, count=3, interval=1.0)
    for i, t in enumerate((0.0, 1.0, 2.0)):
        if i:
            clock.t = t
            a.tick(t)
        clock.t = t + 0.001 * (i + 1)
        link.run()
    summ = s.summary()
    assert [round(r * 1000, 6) for r in s.rtts] == [1.0, 2.0, 3.0]
    assert summ["rtt_avg_ms"] == pytest.approx(2.0) and summ["rtt_mdev_ms"] == pytest.approx((2 / 3) ** 0.5)
    assert summ["time_ms"] == pytest.approx(2003.0)
    s2 = a.ping(B, count=100)
    s2.cancel()
    assert s2.done and a.next_deadline() is None
    link.run()
    assert s2.received == 0 and a.stats("ib0")["drops"] == {"no_session": 1}
