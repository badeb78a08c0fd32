"""Differential tests of the two rdma_netdev providers: the accelerated one (``ipoib._fastpath``)
must behave exactly like the standard one (``ipoib._stdpath``, i.e. ``ipoib/std.py``).

Every test runs the SAME scenario on two in-process fabrics (``IpNet``, sans-IO, virtual clock),
one per backend, chosen explicitly (so the test means the same under ``IPOIB_BACKEND=std`` and
``=fast``), and compares what was delivered and what was counted:

- deliveries: per flow (sender, source port, destination port), the datagrams in arrival order,
  each as ``(seq, size, payload intact)``;
- counters: the IP stack's (``node.ip.stats()``), every interface's (``ifc.stats``/``ifc.drops``),
  the netdev's (``ctx.stats``), the IPoIB QPs' sent/received, every port's PMA counters (HCAs and
  switches: the same octets on the wire give the same PortXmitPkts/PortRcvPkts/data words
  everywhere), P_Key/Q_Key violations, and every device's ``drops`` Counter.

Both are flattened into ``{"node0001.ib0.stats.tx_packets": n, ...}`` and compared key by key, so
a failure shows only the facts that differ, as ``{key: {"std": a, "fast": b}}``.

Where a fact differs between the providers BY DESIGN (the fast provider has 4 TX rings of 256 slots
and 4 RSS receive rings of 256, serves each RX queue up to the NAPI budget per poll, and may
moderate interrupts; the standard one has one send queue of 128 and one receive queue of 256), the
test says so in a comment and compares the invariant that must hold for both instead (every frame
delivered or counted as dropped exactly once, order kept per flow, queues woken, ...). Counters only
the fast provider has (per-queue, interrupts, NAPI polls) are not compared.

Scenarios: unicast UDP of 1..5000 octets over many flows and node pairs (with and without interrupt
moderation); ping, all pairs and fragmented; multicast (member and send-only senders), subnet and
limited broadcast, broadcast ping, ARP and a failed ARP; a P_Key child partition; direct netdev
sends (MTU-sized, oversized, loopback, unknown QPN, stopped device, bursts); the port going down
with frames queued, and a link bounce; the interface going down with frames queued; TX bursts that
fill the queues; the send_burst op under and over capacity; RX bursts within and over the receive
queues' capacity; bad packets on receive; one flow over both receive paths; a P_Key table change
and SM restarts with traffic.
"""

from __future__ import annotations

import fnmatch
import pprint

import pytest

from fabric import wire as w
from fabric.wire.burst import LEN
from fabric.wire import smp_attrs as sa
from fabric.wire.crc import vcrc16
from ipnet import IpNet
from ipoib import _stdpath
from ipoib import inet
from ipoib.iphost import UdpError
from ipoib.netdev import OK, AddressHandle
from ipoib import encap

_fastpath = pytest.importorskip("ipoib._fastpath")

FATTREE = "fattree:2,2,2,2"  # 2 leaves, 2 spines, 2 HCAs per leaf: node0001/2 on one leaf, 3/4 on the other
NODES = ("node0001", "node0002", "node0003", "node0004")
GROUP = "239.1.2.3"
STD_SENDQ = 128  # ipoib.std.SENDQ_SIZE


# -- harness -------------------------------------------------------------------------------------


def _net(backend, topo=FATTREE, partitions=None) -> IpNet:
    net = IpNet(topo, backend=backend)
    if partitions is not None:
        net.config["partitions"] = partitions(net)
    return net.up()


def _both(scenario, *args, **kw) -> tuple[dict, dict]:
    """Run ``scenario(backend, ...)`` on a fresh fabric per backend; returns (std facts, fast facts)."""
    return scenario(_stdpath, *args, **kw), scenario(_fastpath, *args, **kw)


def _settle(net, seconds=0.5):
    net.settle(seconds, step=0.05)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


_MISSING = "<missing>"


def _diff(std: dict, fast: dict, ignore=()) -> dict:
    """{key: {"std": a, "fast": b}} for every flattened fact that differs. A counter missing on one
    side counts as 0 (drop reasons appear when first counted). Keys only the fast provider has under
    ``netdev`` are its own extras (per-queue counters, ...), not compared."""
    a, b = _flat(std), _flat(fast)
    out = {}
    for k in sorted(set(a) | set(b)):
        if any(fnmatch.fnmatchcase(k, p) for p in ignore):
            continue
        if k not in a and ".netdev." in k:
            continue
        va, vb = a.get(k, _MISSING), b.get(k, _MISSING)
        if va == vb or (va in (0, _MISSING) and vb in (0, _MISSING)):
            continue
        out[k] = {"std": va, "fast": vb}
    return out


def _compact(v):
    """Delivered datagrams [(seq, size, ok), ...] as "seq/size" words ("!" marks a damaged payload)."""
    if isinstance(v, list) and v and all(isinstance(x, tuple) and len(x) == 3 for x in v):
        return " ".join(f"{s}/{n}{'' if ok else '!'}" for s, n, ok in v)
    return v


def _assert_same(std: dict, fast: dict, ignore=()) -> None:
    diff = {k: {side: _compact(v) for side, v in d.items()} for k, d in _diff(std, fast, ignore).items()}
    assert diff == {}, "the fast provider differs from the standard one:\n" + pprint.pformat(diff, width=110)


def _counters(net) -> dict:
    """Every counter of the fabric that both providers define the same way."""
    out = {}
    for name, dev in sorted(net.devices.items()):
        d = {"drops": dict(dev.drops)}
        for pn, port in sorted(dev.ports.items()):
            d[f"port{pn}"] = {"pc": dict(port.counters.pc), "ext": dict(port.counters.ext),
                              "p_key_violations": port.p_key_violations,
                              "q_key_violations": port.q_key_violations, "state": port.state}
        node = net.nodes.get(name)
        if node is not None:
            d["ip"] = node.ip.stats()
            for ifname, ifc in sorted(node.ifs.items()):
                snap = ifc.snapshot()
                qp = dev.qps.get(ifc.qpn)
                d[ifname] = {
                    "stats": snap["stats"], "drops": snap["drops"], "netdev": snap["netdev"],
                    "carrier": snap["carrier"], "mtu": snap["mtu"], "queue_stopped": ifc.queue_stopped,
                    "neigh": {e["ip"]: f'{e["state"]} {e["lladdr"]}' for e in snap["neigh"]},
                    "paths": {e["dgid"]: f'{e["dlid"]} {e["valid"]}' for e in snap["paths"]},
                    "mcg": {e["mgid"]: f'{e["state"]} {e["mlid"]} {e["join_state"]}' for e in snap["mcg"]},
                    "qp_sent": qp.sent if qp else None, "qp_received": qp.received if qp else None,
                }
        out[name] = d
    return out


def _delta(after: dict, before: dict) -> dict:
    a, b = _flat(after), _flat(before)
    return {k: v - b.get(k, 0) for k, v in a.items()
            if isinstance(v, int) and not isinstance(v, bool) and v != b.get(k, 0)}


def _payload(seq: int, size: int) -> bytes:
    """A payload that names its sequence number in its first octet and is otherwise distinct."""
    return (bytes([seq & 0xFF]) + bytes(((seq * 31 + i * 7) & 0xFF) for i in range(size - 1)))[:size]


def _received(sock) -> list:
    out = []
    while (m := sock.recvfrom()) is not None:
        data, (src, sport) = m
        out.append((src, sport, data))
    return out


def _by_flow(sockets) -> dict:
    """What the receiving sockets {(node, dport): sock} got, per flow, in arrival order:
    {"<src ip>:<sport>><node>:<dport>": [(seq, size, payload intact), ...]}."""
    flows = {}
    for (node, dport), sock in sorted(sockets.items()):
        for src, sport, data in _received(sock):
            seq = data[0] if data else None
            ok = data == _payload(seq, len(data)) if data else True
            flows.setdefault(f"{src}:{sport}>{node}:{dport}", []).append((seq, len(data), ok))
    return flows


def _resolve(net, pairs):
    """ARP and PathRecord both ways for each pair, so that later traffic goes straight to the QP."""
    for a, b in pairs:
        s = net.ping(a, b)
        assert s.received == 1, (a, b, s)


def _tx_queues_used(ifc):
    """How many TX queues the provider spread the traffic over, when it says (None otherwise)."""
    qs = getattr(ifc.netdev.provider, "queue_stats", None)
    if qs is None:
        return None
    return sum(1 for k, v in qs().items() if k.startswith("tx") and k.endswith("_packets") and v)


def _record_polls(ifc) -> list:
    """Record the (budget, delivered) of every NAPI poll of ``ifc``."""
    calls = []
    nd = ifc.netdev
    orig = nd.poll

    def poll(budget):
        n = orig(budget)
        calls.append((budget, n))
        return n

    nd.poll = poll
    return calls


# -- 1. unicast UDP: sizes, fragmentation, many flows, order per flow ------------------------------

SIZES = (1, 5000, 64, 2017, 1000, 2016)  # 2016 + 8 + 20 = 2044, the IPoIB MTU; 2017 and 5000 fragment
PAIRS = (("node0001", "node0003"), ("node0002", "node0004"), ("node0004", "node0001"), ("node0003", "node0002"))
FLOWS_PER_PAIR = 6
REPS = 2
# per sender: 6 flows x 2 reps x (1 + 3 + 1 + 2 + 1 + 1 frames) = 108 frames < 128 (the std send
# queue), so nothing is refused by either provider and every fact must match exactly


def _unicast_udp(backend, sizes=SIZES, coalesce=None):
    net = _net(backend)
    if coalesce is not None and backend is not _stdpath:  # the standard provider has no moderation
        for node in net.nodes.values():
            for ifc in node.ifs.values():
                ifc.netdev.set_coalesce(coalesce.get("rx_usecs"), coalesce.get("rx_frames"),
                                        coalesce.get("adaptive"))
    _resolve(net, PAIRS)
    rx, tx, sent = {}, {}, {}
    for p, (src, dst) in enumerate(PAIRS):
        for f in range(FLOWS_PER_PAIR):
            sport, dport = 40000 + 100 * p + f, 5000 + 100 * p + f
            r = rx[(dst, dport)] = net.nodes[dst].ip.udp_socket()
            r.bind(dport)
            t = tx[(src, sport, dst, dport)] = net.nodes[src].ip.udp_socket()
            t.bind(sport)
            sent[f"{net.ip(src)}:{sport}>{dst}:{dport}"] = []
    seq = 0
    for _rep in range(REPS):
        for size in sizes:  # every flow sends the same sizes interleaved with the others
            for (src, sport, dst, dport), t in tx.items():
                assert t.sendto(_payload(seq, size), (net.ip(dst), dport)) == size
                sent[f"{net.ip(src)}:{sport}>{dst}:{dport}"].append((seq, size, True))
            seq += 1
    queues = {src: _tx_queues_used(net.nodes[src].ifs["ib0"]) for src, _ in PAIRS}
    _settle(net)
    return {"sent": sent, "delivered": _by_flow(rx), "counters": _counters(net), "tx_queues": queues}


def test_unicast_udp_sizes_fragments_and_flows_deliver_the_same_in_the_same_order():
    std, fast = _both(_unicast_udp)
    # the reference itself: every datagram of every flow arrives once, intact, in the order sent
    assert std["delivered"] == std["sent"]
    nonempty = {k: v for k, v in std["counters"].items() if k in NODES}
    assert all(c["ip"]["drops"] == {} for c in nonempty.values()), {k: c["ip"]["drops"] for k, c in nonempty.items()}
    # the scenario does spread flows over TX queues (when the provider says how)
    assert all(n is None or n >= 2 for n in fast["tx_queues"].values()), fast["tx_queues"]
    _assert_same(std, fast, ignore=("tx_queues.*",))


@pytest.mark.parametrize("coalesce", [{"rx_usecs": 64}, {"rx_usecs": 1000, "rx_frames": 8}, {"adaptive": True}],
                         ids=["rx-usecs", "rx-frames", "adaptive"])
def test_interrupt_moderation_changes_when_not_what(coalesce):
    """Moderation on the fast provider (the standard one has none) may delay NAPI in virtual time,
    but what is delivered, in which order per flow, and every counter must stay the standard's.
    Unfragmented sizes only, so that this test is about moderation alone."""
    std, fast = _both(_unicast_udp, sizes=(1, 64, 1000, 2016), coalesce=coalesce)
    assert std["delivered"] == std["sent"]
    if not coalesce.get("adaptive"):  # the moderation did engage: fewer interrupts than frames
        nd = fast["counters"]["node0001"]["ib0"]["netdev"]
        assert nd.get("interrupts", 0) < nd["rx_packets"], nd
    _assert_same(std, fast, ignore=("tx_queues.*",))


# -- 2. ICMP: all-pairs ping, a fragmented echo, ping to ourselves ---------------------------------


def _pings(backend):
    net = _net(backend)
    out = {}
    for a in NODES:
        for b in NODES:
            s = net.ping(a, b, count=2)
            out[f"{a}>{b}"] = (s.sent, s.received, s.errors, s.corrupted)
    s = net.ping("node0001", "node0004", count=2, size=3000)  # 3028-octet datagrams: two fragments each
    out["node0001>node0004 3000 B"] = (s.sent, s.received, s.errors, s.corrupted)
    return {"pings": out, "counters": _counters(net)}


def test_ping_all_pairs_and_fragmented_echo():
    std, fast = _both(_pings)
    assert all(v == (2, 2, [], 0) for v in std["pings"].values()), std["pings"]
    # (rtt is left out on purpose: interrupt moderation may legitimately delay a reply in virtual time)
    _assert_same(std, fast)


# -- 3. ARP, multicast and broadcast -------------------------------------------------------------


def _mcast_bcast(backend):
    net = _net(backend)
    port = 5353
    socks = {}
    for n in NODES:
        s = net.nodes[n].ip.udp_socket()
        s.bind(port)
        if n != "node0004":
            s.join_group(GROUP)
        socks[(n, port)] = s
    _settle(net)
    tx = {n: net.nodes[n].ip.udp_socket() for n in NODES}
    for n, t in tx.items():
        t.bind(41000)
    # a non-member sends (send-only join; its first frames wait for the join), members send
    for seq in range(3):
        tx["node0004"].sendto(_payload(seq, 100), (GROUP, port))
    tx["node0001"].sendto(_payload(10, 64), (GROUP, port))
    tx["node0001"].sendto(_payload(11, 3000), (GROUP, port))  # a fragmented multicast datagram
    _settle(net)
    # subnet broadcast and limited broadcast (they go to the broadcast group)
    tx["node0002"].sendto(_payload(20, 200), ("198.18.255.255", port))
    tx["node0003"].sendto(_payload(21, 5000), ("255.255.255.255", port))
    _settle(net)
    # a broadcast ping: ignored by every host (icmp_echo_ignore_broadcasts), counted as such
    s = net.nodes["node0001"].ip.ping("198.18.255.255", count=1, timeout=0.5)
    _settle(net, 1.0)
    bping = (s.sent, s.received, s.errors)
    # ARP: a first unicast resolves node0003 from node0002 (request to the broadcast group)
    tx["node0002"].sendto(_payload(30, 10), (net.ip("node0003"), port))
    _settle(net)
    # and an address nobody has: three requests, then the queued frames are dropped and counted
    tx["node0002"].sendto(_payload(31, 10), ("198.18.0.200", port))
    net.settle(3.5, step=0.1)
    return {"delivered": _by_flow(socks), "bcast_ping": bping, "counters": _counters(net)}


def test_multicast_broadcast_and_arp():
    std, fast = _both(_mcast_bcast)
    d = std["delivered"]
    assert d["198.18.0.4:41000>node0002:5353"] == [(0, 100, True), (1, 100, True), (2, 100, True)]
    assert d["198.18.0.1:41000>node0003:5353"] == [(10, 64, True), (11, 3000, True)]
    assert d["198.18.0.2:41000>node0004:5353"] == [(20, 200, True)]
    assert d["198.18.0.3:41000>node0001:5353"] == [(21, 5000, True)]
    assert d["198.18.0.2:41000>node0003:5353"] == [(20, 200, True), (30, 10, True)]
    assert std["counters"]["node0001"]["ib0"]["netdev"]["rx_own_mcast"] >= 1
    assert std["counters"]["node0002"]["ib0"]["drops"].get("arp_timeout") == 1
    _assert_same(std, fast)


# -- 4. a P_Key child partition ------------------------------------------------------------------


def _blue(net) -> str:
    g1, g2 = net.devices["node0001"].ports[1].guid, net.devices["node0002"].ports[1].guid
    return (f"Default=0x7fff, ipoib : ALL=full;\n"
            f"Blue=0x8001, ipoib : 0x{g1:016x}=full, 0x{g2:016x}=full;\n")


def _partition(backend):
    net = _net(backend, partitions=_blue)
    assert set(net.nodes["node0001"].ifs) == {"ib0", "ib0.8001"}
    s = net.ping("node0001", "198.19.1.2", count=2)
    ping = (s.sent, s.received, s.errors)
    rx = {}
    for f in range(4):
        r = rx[("node0002", 6000 + f)] = net.nodes["node0002"].ip.udp_socket()
        r.bind(6000 + f)
    tx = [net.nodes["node0001"].ip.udp_socket() for _ in range(4)]
    for seq, size in enumerate((1, 64, 1000, 2016, 5000, 3)):
        for f, t in enumerate(tx):
            t.sendto(_payload(seq, size), ("198.19.1.2", 6000 + f))
    # and the same to a node outside the partition: nobody answers ARP there
    tx[0].sendto(_payload(9, 9), ("198.19.1.3", 6000))
    net.settle(3.5, step=0.1)
    return {"ping": ping, "delivered": _by_flow(rx), "counters": _counters(net)}


def test_pkey_child_interface_traffic():
    std, fast = _both(_partition)
    assert std["ping"] == (2, 2, [])
    assert sum(len(v) for v in std["delivered"].values()) == 24
    c1 = std["counters"]["node0001"]["ib0.8001"]
    assert c1["stats"]["tx_packets"] > 24 and c1["drops"] == {"arp_timeout": 1}
    _assert_same(std, fast)


# -- 5. frames the provider refuses or the HCA drops: oversized, loopback, no such QP --------------


def _frame(src, dst, sport, dport, seq, size):
    s, d = inet.ip4(src), inet.ip4(dst)
    return encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack() + inet.build_ipv4(
        s, d, inet.IPPROTO_UDP, inet.build_udp(s, d, sport, dport, _payload(seq, size)), ident=seq)


def _frames(src, dst, sport, dport, seq, size, ident, mtu=2044):
    """The IPoIB frames of one UDP datagram, fragmented to ``mtu`` the way the IP layer does."""
    s, d = inet.ip4(src), inet.ip4(dst)
    udp = inet.build_udp(s, d, sport, dport, _payload(seq, size))
    hdr = encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack()
    if 20 + len(udp) <= mtu:
        return [hdr + inet.build_ipv4(s, d, inet.IPPROTO_UDP, udp, ident=ident)]
    chunk = (mtu - 20) & ~7
    return [hdr + inet.build_ipv4(s, d, inet.IPPROTO_UDP, udp[o:o + chunk], ident=ident, df=False,
                                  mf=o + chunk < len(udp), frag_offset=o >> 3)
            for o in range(0, len(udp), chunk)]


def _direct_sends(backend):
    """Frames straight into netdev.send/send_burst, as the ULP would hand them."""
    net = _net(backend)
    _resolve(net, [("node0001", "node0003"), ("node0001", "node0002")])
    ifc = net.nodes["node0001"].ifs["ib0"]
    dst = net.nodes["node0003"].ifs["ib0"]
    rx = {("node0003", 7000): net.nodes["node0003"].ip.udp_socket(),
          ("node0001", 7000): net.nodes["node0001"].ip.udp_socket()}
    for s in rx.values():
        s.bind(7000)
    a, c = net.ip("node0001"), net.ip("node0003")
    ah = AddressHandle(dlid=net.lid("node0003"))
    rcs = {}
    mtu_frame = _frame(a, c, 1, 7000, 0, 2044 - 28)  # 2048 octets: the broadcast group's MTU
    over_ipoib = _frame(a, c, 1, 7000, 1, 3000)  # over the IPoIB MTU, under the port's 4096
    over_link = _frame(a, c, 1, 7000, 2, 4096)  # 4128 octets: over the port MTU, the HCA drops it
    link_max = _frame(a, c, 1, 7000, 3, 4096 - 32)  # exactly 4096 octets
    for name, f in (("mtu", mtu_frame), ("over_ipoib_mtu", over_ipoib), ("over_link_mtu", over_link),
                    ("link_max", link_max)):
        rcs[name] = ifc.netdev.send(f, ah, dst.qpn)
        net.run()
        _settle(net, 0.1)
    # to a QPN nobody has: the receiving HCA drops it (no_qp)
    rcs["no_qp"] = ifc.netdev.send(_frame(a, c, 1, 7000, 4, 10), ah, 0xABCDE)
    # to our own LID and QP: HCA loopback, never on the wire
    rcs["own_lid"] = ifc.netdev.send(_frame(c, a, 1, 7000, 5, 10), AddressHandle(dlid=net.lid("node0001")), ifc.qpn)
    _settle(net, 0.1)
    # a stopped device consumes the frame and counts it as dropped
    ifc.netdev.stop()
    rcs["stopped"] = ifc.netdev.send(_frame(a, c, 1, 7000, 6, 10), ah, dst.qpn)
    ifc.netdev.open()
    _settle(net, 0.1)
    # bursts: 40 frames over 4 flows, then a burst holding an oversized frame
    burst = [_frame(a, c, 100 + i % 4, 7000, 10 + i, 100 + i) for i in range(40)]
    rcs["burst"] = ifc.netdev.send_burst(burst, ah, dst.qpn)
    _settle(net, 0.1)
    mixed = [_frame(a, c, 200, 7000, 60 + i, 50) for i in range(5)]
    mixed.insert(2, _frame(a, c, 200, 7000, 70, 4096))
    rcs["burst_with_oversized"] = ifc.netdev.send_burst(mixed, ah, dst.qpn)
    _settle(net)
    return {"rcs": rcs, "delivered": _by_flow(rx), "counters": _counters(net)}


def test_direct_sends_oversized_loopback_and_unknown_qp():
    std, fast = _both(_direct_sends)
    assert std["rcs"] == {"mtu": OK, "over_ipoib_mtu": OK, "over_link_mtu": OK, "link_max": OK, "no_qp": OK,
                          "own_lid": OK, "stopped": OK, "burst": 40, "burst_with_oversized": 6}
    drops = std["counters"]["node0001"]["drops"]
    assert drops["send_over_mtu"] == 2 and std["counters"]["node0003"]["drops"]["no_qp"] == 1
    _assert_same(std, fast)


# -- 6. port down with frames queued, traffic while down, link bounce ---------------------------


def _link_bounce(backend):
    net = _net(backend)
    _resolve(net, [("node0001", "node0003")])
    a = net.nodes["node0001"]
    rx = {("node0003", 7100 + f): net.nodes["node0003"].ip.udp_socket() for f in range(4)}
    for (_, p), s in rx.items():
        s.bind(p)
    tx = [a.ip.udp_socket() for _ in range(4)]
    seq = 0
    # frames queued in the provider (no NAPI poll yet) when the cable is pulled
    for size in (10, 3000):
        for f, t in enumerate(tx):
            t.sendto(_payload(seq, size), (net.ip("node0003"), 7100 + f))
        seq += 1
    net.set_link("node0001", 1, False)
    _settle(net, 0.2)
    down = {"state": net.devices["node0001"].ports[1].state, "carrier": a.ifs["ib0"].carrier}
    # while it is down the IP layer refuses (carrier off)
    errs = []
    for f, t in enumerate(tx):
        try:
            t.sendto(_payload(seq, 10), (net.ip("node0003"), 7100 + f))
        except UdpError as exc:
            errs.append(exc.reason)
    seq += 1
    # the cable back: the port comes up, the interface rejoins, traffic flows again
    net.set_link("node0001", 1, True)
    net.settle(1.5, step=0.1)
    up = {"state": net.devices["node0001"].ports[1].state, "carrier": a.ifs["ib0"].carrier}
    _resolve(net, [("node0001", "node0003")])  # the flush invalidated the path: resolve it again
    for size in (10, 64, 3000):
        for f, t in enumerate(tx):
            t.sendto(_payload(seq, size), (net.ip("node0003"), 7100 + f))
        seq += 1
    _settle(net)
    return {"down": down, "errs": errs, "up": up, "delivered": _by_flow(rx), "counters": _counters(net)}


def test_port_down_with_frames_queued_then_link_bounce():
    std, fast = _both(_link_bounce)
    assert std["down"] == {"state": sa.PORT_DOWN, "carrier": False}
    assert std["errs"] == ["ENETDOWN"] * 4
    assert std["up"] == {"state": sa.PORT_ACTIVE, "carrier": True}
    # the standard provider drops what was queued when the port went down (the HCA refuses to send
    # on a port that is not Active: send_port_not_active, PortXmitDiscards), nothing of it is on
    # the wire; after the bounce every flow gets its three datagrams, in order
    c1 = std["counters"]["node0001"]
    assert c1["drops"]["send_port_not_active"] == 12  # 4 x (1 + 2 fragments)
    assert c1["port1"]["pc"]["port_xmit_discards"] == 12
    assert all([s for s, _, _ in v] == [3, 4, 5] for v in std["delivered"].values()), std["delivered"]
    _assert_same(std, fast)


def _ifdown_with_frames_queued(backend):
    """ip link set ib0 down while the TX queue holds frames, then up again."""
    net = _net(backend)
    _resolve(net, [("node0001", "node0003")])
    a = net.nodes["node0001"]
    ifc = a.ifs["ib0"]
    rx = {("node0003", 7200 + f): net.nodes["node0003"].ip.udp_socket() for f in range(4)}
    for (_, p), s in rx.items():
        s.bind(p)
    tx = [a.ip.udp_socket() for _ in range(4)]
    for f, t in enumerate(tx):
        t.sendto(_payload(0, 100), (net.ip("node0003"), 7200 + f))
    ifc.stop(net.now)  # before any NAPI poll: the four frames are still in the send queue(s)
    _settle(net)
    after_down = _by_flow(rx)
    ifc.open(net.now)
    _settle(net, 1.0)
    for f, t in enumerate(tx):
        t.sendto(_payload(1, 100), (net.ip("node0003"), 7200 + f))
    _settle(net)
    return {"after_down": after_down, "after_up": _by_flow(rx), "counters": _counters(net)}


def test_interface_down_discards_the_queued_frames():
    std, fast = _both(_ifdown_with_frames_queued)
    # the standard stop() clears the send queue: none of the four frames goes out
    assert std["after_down"] == {}
    assert sorted(std["after_up"]) and all(v == [(1, 100, True)] for v in std["after_up"].values())
    _assert_same(std, fast)


# -- 7. TX bursts that fill the queue: stop, busy, drops, wake -----------------------------------

BURST_FLOWS = 8
BURST_PER_FLOW = 150  # 1200 frames: at least two flows share a queue of any 4-queue TSS, so some
#                       queue of 256 fills too (and the std queue of 128 fills long before)


def _tx_burst(backend):
    net = _net(backend)
    _resolve(net, [("node0001", "node0003")])
    a = net.nodes["node0001"]
    ifc = a.ifs["ib0"]
    ifc.qdisc.limit = 0  # no qdisc backlog: what a stopped queue refuses is dropped (the refusal path)
    rx, tx = {}, []
    for f in range(BURST_FLOWS):
        r = rx[("node0003", 7300 + f)] = net.nodes["node0003"].ip.udp_socket()
        r.bind(7300 + f)
        t = a.ip.udp_socket()
        t.bind(42000 + f)
        tx.append(t)
    before = _counters(net)
    order = []
    for seq in range(BURST_PER_FLOW):  # nobody polls meanwhile: the queue fills
        for f, t in enumerate(tx):
            t.sendto(_payload(seq, 32), (net.ip("node0003"), 7300 + f))
            order.append((f, seq))
    stopped_during = bool(ifc.stopped_queues)  # the queue these flows hash to (one per interface in std)
    _settle(net)
    delivered = _by_flow(rx)
    after = _counters(net)
    d = _delta(after, before)
    n1, n3 = "node0001", "node0003"
    got = {(int(k.rsplit(":", 1)[1]) - 7300, s) for k, v in delivered.items() for s, _, _ in v}  # (flow, seq)
    sent = len(order)
    ndel = sum(len(v) for v in delivered.values())
    accepted = d.get(f"{n1}.ib0.stats.tx_packets", 0)
    refused = d.get(f"{n1}.ib0.drops.qdisc_full", 0)
    nd = after[n1]["ib0"]["netdev"]
    ip_if = f"{n1}.ip.interfaces.ib0"
    facts = {
        # every datagram is delivered or counted as dropped at the sender, exactly once
        "unaccounted": sent - ndel - refused,
        "accepted_not_delivered": accepted - ndel,
        "payloads_intact": all(ok for v in delivered.values() for _, _, ok in v),
        # while stopped, nothing gets in: what was taken is a prefix of the send order, and each
        # flow arrived in order
        "accepted_is_a_prefix": got == set(order[:ndel]),
        "in_order_per_flow": all([s for s, _, _ in v] == sorted(s for s, _, _ in v) for v in delivered.values()),
        # one busy per refused send, counted alike by the interface and the provider
        "ifc_busy_minus_netdev_busy": d.get(f"{n1}.ib0.stats.tx_busy", 0) - d.get(f"{n1}.ib0.netdev.tx_busy", 0),
        "ifc_tx_dropped_minus_refused": d.get(f"{n1}.ib0.stats.tx_dropped", 0) - refused,
        "saturated": nd["tx_stops"] > 0 and stopped_during and refused > 0,
        # every stopped queue woke, and the interface with it
        "stops_minus_wakes": nd["tx_stops"] - nd["tx_wakes"],
        "queue_stopped_after": after[n1]["ib0"]["queue_stopped"],
        # the IP layer saw the refusals as xmit_failed, sendto as SndbufErrors
        "ip_xmit_failed_minus_refused": d.get(f"{ip_if}.drops.xmit_failed", 0) - refused,
        "ip_tx_dropped_minus_refused": d.get(f"{ip_if}.tx_dropped", 0) - refused,
        "udp_sndbuf_minus_refused": d.get(f"{n1}.ip.udp.SndbufErrors", 0) - refused,
        "udp_out_minus_delivered": d.get(f"{n1}.ip.udp.OutDatagrams", 0) - ndel,
        # the provider and the ports counted the frames that went out, and only those
        "netdev_tx_minus_accepted": d.get(f"{n1}.ib0.netdev.tx_packets", 0) - accepted,
        "port_xmit_minus_accepted": d.get(f"{n1}.port1.ext.port_xmit_pkts", 0) - accepted,
        "port_rcv_minus_accepted": d.get(f"{n3}.port1.ext.port_rcv_pkts", 0) - accepted,
        "rcv_delivered_minus_delivered": d.get(f"{n3}.ip.rx_delivered", 0) - ndel,
        "words_per_packet": d.get(f"{n1}.port1.ext.port_xmit_data", 0) // max(accepted, 1),
        "rcv_words_minus_xmit_words": d.get(f"{n3}.port1.ext.port_rcv_data", 0) - d.get(
            f"{n1}.port1.ext.port_xmit_data", 0),
        "device_drops": {k: v for k, v in d.items() if k.split(".")[1] == "drops"},
        "receiver_drops": {k: v for k, v in d.items() if k.startswith(f"{n3}.") and ".drops." in k},
    }
    # after the wake the queue takes traffic again: a short burst goes through whole
    for f, t in enumerate(tx):
        for seq in range(1000, 1010):
            t.sendto(_payload(seq, 32), (net.ip("node0003"), 7300 + f))
    _settle(net)
    facts["second_burst"] = _by_flow(rx)
    nd2 = ifc.netdev.standard.ctx.stats
    facts["stops_minus_wakes_after_second"] = nd2["tx_stops"] - nd2["tx_wakes"]
    # by design, NOT compared: how many frames got in before the stop (std: its one queue of 128;
    # fast: until the first of its 4 rings of 256 is full, which depends on how TSS spread the
    # flows), hence how many were refused, and tx_stops/tx_wakes (one per queue that filled)
    by_design = {"delivered": ndel, "refused": refused, "tx_stops": nd["tx_stops"], "tx_busy": nd["tx_busy"]}
    return facts, by_design


def test_tx_burst_fills_the_queue_every_frame_delivered_or_dropped_once():
    (std, std_info), (fast, fast_info) = _both(_tx_burst)
    # (the standard queue stops as the 128th frame fills it, so the ULP never even offers it a
    # frame it would refuse: no BUSY at all, every refusal is the ULP's "queue_stopped")
    assert std_info == {"delivered": STD_SENDQ, "refused": BURST_FLOWS * BURST_PER_FLOW - STD_SENDQ,
                        "tx_stops": 1, "tx_busy": 0}
    assert std["unaccounted"] == 0 and std["saturated"] and std["accepted_is_a_prefix"]
    assert all(len(v) == 10 for v in std["second_burst"].values()) and len(std["second_burst"]) == BURST_FLOWS
    assert fast_info["delivered"] >= STD_SENDQ and fast_info["refused"] > 0, fast_info
    _assert_same(std, fast)


def _tx_burst_held(backend):
    """The same burst with the qdisc in front (txqueuelen 1000, the default): the queue stops,
    what it refuses waits and goes when it wakes, and nothing is lost."""
    net = _net(backend)
    _resolve(net, [("node0001", "node0003")])
    a = net.nodes["node0001"]
    ifc = a.ifs["ib0"]
    rx, tx = {}, []
    for f in range(BURST_FLOWS):
        r = rx[("node0003", 7300 + f)] = net.nodes["node0003"].ip.udp_socket()
        r.bind(7300 + f)
        r.rcvbuf = 1 << 24
        t = a.ip.udp_socket()
        t.bind(42000 + f)
        tx.append(t)
    sent = 0
    for seq in range(100):  # 800 frames: more than any ring, less than a queue's backlog
        for f, t in enumerate(tx):
            t.sendto(_payload(seq, 32), (net.ip("node0003"), 7300 + f))
            sent += 1
    queued = ifc.stats["tx_queued"]
    _settle(net)
    delivered = _by_flow(rx)
    return {"sent": sent, "delivered": sum(len(v) for v in delivered.values()),
            "in_order_per_flow": all([q for q, _, _ in v] == list(range(100)) for v in delivered.values()),
            "tx_dropped": ifc.stats["tx_dropped"], "backlog_after": ifc.qdisc.length,
            "held_some": queued > 0}


def test_a_momentary_stop_loses_nothing_the_qdisc_holds_the_burst():
    std, fast = _both(_tx_burst_held)
    assert std["held_some"] and std["delivered"] == std["sent"] == 800 and std["in_order_per_flow"]
    assert std["tx_dropped"] == 0 and std["backlog_after"] == 0
    _assert_same(dict(std, held_some=True), dict(fast, held_some=True))


def _burst_op(backend, n):
    """netdev.send_burst of ``n`` frames of one flow, nobody polling meanwhile."""
    net = _net(backend)
    _resolve(net, [("node0001", "node0003")])
    ifc = net.nodes["node0001"].ifs["ib0"]
    dst = net.nodes["node0003"].ifs["ib0"]
    rx = {("node0003", 7400): net.nodes["node0003"].ip.udp_socket()}
    rx[("node0003", 7400)].bind(7400)
    rx[("node0003", 7400)].rcvbuf = 10_000
    a, c = net.ip("node0001"), net.ip("node0003")
    frames = [_frame(a, c, 43000, 7400, i, 20) for i in range(n)]
    nd0 = dict(ifc.netdev.standard.ctx.stats)
    taken = ifc.netdev.send_burst(frames, AddressHandle(dlid=net.lid("node0003")), dst.qpn)
    stopped = bool(ifc.stopped_queues)  # the flow's TX queue stopped
    nd1 = dict(ifc.netdev.standard.ctx.stats)
    _settle(net)
    got = [s for s, _, _ in _by_flow(rx).get(f"{a}:43000>node0003:7400", [])]
    nd2 = dict(ifc.netdev.standard.ctx.stats)
    return {
        "taken_is_delivered_prefix": got == list(range(taken)),
        "queue_stopped_when_short": stopped == (taken < n),
        "queue_stopped_after": bool(ifc.stopped_queues),
        "tx_packets_minus_taken": nd2["tx_packets"] - nd0["tx_packets"] - taken,
        # the standard op is a loop of send() that stops at the first BUSY: one refused send, so
        # tx_busy counts 1 per short burst, and the queue stops once
        "tx_busy": nd1["tx_busy"] - nd0["tx_busy"],
        "tx_stops": nd1["tx_stops"] - nd0["tx_stops"],
        "stops_minus_wakes": (nd2["tx_stops"] - nd0["tx_stops"]) - (nd2["tx_wakes"] - nd0["tx_wakes"]),
    }, taken


@pytest.mark.parametrize("n", [40, 300])
def test_send_burst_op_over_and_under_capacity(n):
    (std, std_taken), (fast, fast_taken) = _both(_burst_op, n)
    if n <= STD_SENDQ:
        assert std_taken == fast_taken == n
    else:
        # by design: how much one burst fits (std: 128; fast: one flow, one ring of 256)
        assert std_taken == STD_SENDQ and STD_SENDQ <= fast_taken < n
    assert std["taken_is_delivered_prefix"] and std["tx_busy"] == int(n > STD_SENDQ)
    _assert_same(std, fast)


# -- 8. RX: bursts faster than NAPI polls, with and without overflowing the receive queue ---------


def _rx_burst(backend, per_flow, sizes):
    """``per_flow`` datagrams on each of 4 flows arrive at node0003's HCA, in link bursts of 32
    packets, before any NAPI poll."""
    net = _net(backend)
    _resolve(net, [("node0001", "node0003")])
    hca = net.devices["node0003"]
    node = net.nodes["node0003"]
    ifc = node.ifs["ib0"]
    src = net.nodes["node0001"].ifs["ib0"]
    rx = {}
    for f in range(4):
        s = rx[("node0003", 7500 + f)] = node.ip.udp_socket()
        s.bind(7500 + f)
        s.rcvbuf = 10_000
    polls = _record_polls(ifc)
    before = _counters(net)
    a, c = net.ip("node0001"), net.ip("node0003")
    pkts = []
    for seq in range(per_flow):
        for f in range(4):
            for frame in _frames(a, c, 44000 + f, 7500 + f, seq, sizes[seq % len(sizes)], ident=seq * 4 + f):
                pkts.append(w.build_ud_packet(slid=net.lid("node0001"), dlid=net.lid("node0003"),
                                              dest_qp=ifc.qpn, src_qp=src.qpn, qkey=w.IPOIB_QKEY, pkey=0xFFFF,
                                              payload=frame))
    fast0 = getattr(hca.rx_accel, "fast_packets", 0)
    for k in range(0, len(pkts), 32):  # link bursts of 32, as a device host receives them
        burst = b"".join(LEN.pack(len(p)) + p for p in pkts[k:k + 32])
        hca.receive_burst(1, burst, 0, len(pkts[k:k + 32]), net.now)
        assert hca.outbox == []
    _settle(net)
    delivered = _by_flow(rx)
    after = _counters(net)
    d = _delta(after, before)
    ndel = sum(len(v) for v in delivered.values())
    to_ulp = d.get("node0003.ib0.stats.rx_packets", 0)  # frames handed to the interface
    rx_dropped = d.get("node0003.ib0.netdev.rx_dropped", 0)
    hca_drops = sum(v for k, v in d.items() if k.startswith("node0003.drops."))
    facts = {
        # every frame handed up, or dropped and counted once (by the provider or the HCA)
        "unaccounted_frames": len(pkts) - to_ulp - rx_dropped - hca_drops,
        "in_order_per_flow": all([s for s, _, _ in v] == sorted(s for s, _, _ in v) for v in delivered.values()),
        # a full receive queue drops the newest frames: each flow keeps its first ones, gap-free
        "prefix_per_flow": all([s for s, _, _ in v] == list(range(len(v))) for v in delivered.values()),
        "payloads_intact": all(ok for v in delivered.values() for _, _, ok in v),
        # by design a poll may deliver up to ``budget`` per RX queue (one NAPI context per queue, as
        # with multi-queue drivers), so the bound is budget x rx_queues, not budget
        "polls_within_budget": all(0 <= n <= b * ifc.params.rx_queues for b, n in polls),
        "polls_that_delivered": sum(1 for _, n in polls if n) > 0,
        "polled_total_minus_to_ulp": sum(n for _, n in polls) - to_ulp,
        "netdev_rx_minus_to_ulp": d.get("node0003.ib0.netdev.rx_packets", 0) - to_ulp,
        "ip_rx_delivered_minus_to_ulp": d.get("node0003.ip.rx_delivered", 0) - to_ulp,
        "udp_in_minus_delivered": d.get("node0003.ip.udp.InDatagrams", 0) - ndel,
        "overflow_minus_rx_dropped": d.get("node0003.ib0.netdev.rx_overflow", 0) - rx_dropped,
        "overflowed": rx_dropped > 0,
        "port_rcv_pkts": d.get("node0003.port1.ext.port_rcv_pkts", 0),
        "port_rcv_data": d.get("node0003.port1.ext.port_rcv_data", 0),
        "qp_received": d.get("node0003.ib0.qp_received", 0),
        "ip_drops": after["node0003"]["ip"]["drops"],
    }
    # frames the compiled RX path took (None where there is none, as on std)
    compiled = getattr(hca.rx_accel, "fast_packets", fast0) - fast0 if hca.rx_accel is not None else None
    return facts, {"delivered": delivered, "counters": after, "rx_dropped": rx_dropped, "compiled": compiled}


def test_rx_burst_within_capacity_is_delivered_whole():
    # 16 datagrams on each of 4 flows, a quarter of them in two fragments: 80 frames, well within
    # both providers' receive queues, so nothing may be dropped and every fact must match
    (std, std_all), (fast, fast_all) = _both(_rx_burst, 16, (1, 3000, 64, 2016))
    assert std["unaccounted_frames"] == 0 and std_all["rx_dropped"] == 0
    assert std["prefix_per_flow"] and sum(len(v) for v in std_all["delivered"].values()) == 64
    assert fast_all["compiled"] in (None, 80), fast_all["compiled"]  # the fast RX path was exercised
    _assert_same({"facts": std, **std_all}, {"facts": fast, **fast_all}, ignore=("compiled",))


def test_rx_burst_overflowing_the_receive_queue_is_accounted_for():
    # 1200 frames on 4 flows before any poll: more than 4 queues of 256 hold, so whatever the RSS
    # spread, some receive queue overflows in both providers. BY DESIGN not compared: how many are
    # dropped (std: one queue of 256; fast: one ring of 256 per RSS queue, so it depends on how the
    # flows hash), hence the deliveries, rx_packets and rx_dropped themselves; compared: the
    # accounting, the counters that see every frame, and the order
    (std, std_all), (fast, _fast_all) = _both(_rx_burst, 300, (1, 64, 1000, 2016))
    assert std_all["rx_dropped"] == 1200 - 256 and std["unaccounted_frames"] == 0 and std["prefix_per_flow"]
    _assert_same(std, fast)


def _rx_receiver(backend, port: int):
    """node0001 -> node0003 resolved, a socket on ``port`` at node0003: (net, node0003's HCA, its
    ib0, node0001's ib0, the socket, node0001's address, node0003's address)."""
    net = _net(backend)
    _resolve(net, [("node0001", "node0003")])
    sock = net.nodes["node0003"].ip.udp_socket()
    sock.bind(port)
    return (net, net.devices["node0003"], net.nodes["node0003"].ifs["ib0"], net.nodes["node0001"].ifs["ib0"], sock,
            net.ip("node0001"), net.ip("node0003"))


def _receive_one_burst(net, pkts, socks) -> dict:
    """Hand ``pkts`` to node0003's HCA as one link burst (so a compiled receive path sees them
    together), let the fabric settle, and return what arrived and what was counted."""
    data = b"".join(LEN.pack(len(p)) + p for p in pkts)
    net.devices["node0003"].receive_burst(1, data, 0, len(pkts), net.now)
    net.send_out("node0003")
    _settle(net)
    return {"delivered": _by_flow(socks), "counters": _counters(net)}


def _rx_bad_packets(backend):
    """Good frames interleaved with packets the HCA or the interface must drop, in one link burst:
    every check the compiled receive path makes must end in the same drop, counted in the same place."""
    net, hca, ifc, src, sock, a, c = _rx_receiver(backend, 7600)
    slid, dlid = net.lid("node0001"), net.lid("node0003")

    def pkt(frame, **kw):
        args = dict(slid=slid, dlid=dlid, dest_qp=ifc.qpn, src_qp=src.qpn, qkey=w.IPOIB_QKEY, pkey=0xFFFF,
                    payload=frame)
        args.update(kw)
        return w.build_ud_packet(**args)

    def fix_vcrc(raw):
        crc = vcrc16(bytes(raw[:-2]))
        raw[-2], raw[-1] = crc & 0xFF, crc >> 8
        return bytes(raw)

    good = iter(range(100))

    def ok():
        return pkt(_frame(a, c, 45000, 7600, next(good), 50))

    bad_icrc = bytearray(pkt(_frame(a, c, 45000, 7600, 97, 50)))
    bad_icrc[40] ^= 0x01  # a payload octet: the ICRC no longer matches (the VCRC is made to)
    bad_vcrc = bytearray(pkt(_frame(a, c, 45000, 7600, 98, 50)))
    bad_vcrc[-1] ^= 0xFF
    ipv6 = encap.IPoIBHeader(ethertype=0x86DD).pack() + bytes(40)
    burst = [
        ok(), pkt(_frame(a, c, 45000, 7600, 90, 50), qkey=0x1234),  # Q_Key violation
        ok(), pkt(_frame(a, c, 45000, 7600, 91, 50), pkey=0x8001),  # a P_Key not in our table
        ok(), pkt(_frame(a, c, 45000, 7600, 92, 50), dest_qp=0xABCDE),  # no such QP
        ok(), pkt(_frame(a, c, 45000, 7600, 93, 50), dlid=net.lid("node0002")),  # not our LID
        ok(), fix_vcrc(bad_icrc), ok(), bytes(bad_vcrc), ok(),
        pkt(_frame(a, c, 45000, 7600, 94, 50), vl=15),  # VL15 is QP0's only
        ok(), pkt(b"\x08\x00"),  # a runt: shorter than the IPoIB header
        ok(), pkt(ipv6),  # an ethertype IPoIB does not carry here
        # valid, but not for a compiled path that wants no GRH and the exact P_Key (another flow,
        # so that the order across the two paths is left to the next test)
        ok(), pkt(_frame(a, c, 45001, 7600, 95, 50), sgid=net.devices["node0001"].gid(1), dgid=hca.gid(1)),
        ok(), pkt(_frame(a, c, 45001, 7600, 96, 50), pkey=0x7FFF),  # a limited member: matches our 0xFFFF
        ok(),
    ]
    return _receive_one_burst(net, burst, {("node0003", 7600): sock})


def test_rx_bad_packets_are_dropped_and_counted_alike():
    std, fast = _both(_rx_bad_packets)
    assert [s for s, _, _ in std["delivered"]["198.18.0.1:45000>node0003:7600"]] == list(range(12))
    assert [s for s, _, _ in std["delivered"]["198.18.0.1:45001>node0003:7600"]] == [95, 96]
    d = std["counters"]["node0003"]["drops"]
    assert d["qkey"] == 1 and d["pkey"] == 1 and d["no_qp"] == 1 and d["dlid_mismatch"] == 1, d
    assert std["counters"]["node0003"]["ib0"]["drops"].get("runt") == 1
    _assert_same(std, fast)


def _rx_mixed_paths(backend):
    """One flow whose packets take both receive paths within one link burst: most plain, some with
    a GRH (which a compiled path may hand back to the per-packet one)."""
    net, hca, ifc, src, sock, a, c = _rx_receiver(backend, 7700)
    pkts = []
    for seq in range(8):
        grh = dict(sgid=net.devices["node0001"].gid(1), dgid=hca.gid(1)) if seq % 3 == 1 else {}
        pkts.append(w.build_ud_packet(slid=net.lid("node0001"), dlid=net.lid("node0003"), dest_qp=ifc.qpn,
                                      src_qp=src.qpn, qkey=w.IPOIB_QKEY, payload=_frame(a, c, 45002, 7700, seq, 50),
                                      **grh))
    return _receive_one_burst(net, pkts, {("node0003", 7700): sock})


def test_rx_order_within_a_flow_across_both_receive_paths():
    # the standard provider delivers in arrival order, whichever path a packet took in the HCA
    std, fast = _both(_rx_mixed_paths)
    assert [s for s, _, _ in std["delivered"]["198.18.0.1:45002>node0003:7700"]] == list(range(8))
    _assert_same(std, fast)


# -- 9. control events with traffic: P_Key table change (heavy flush), SM restart (light flush) ----


def _pkey_change_and_sm_restart(backend):
    net = _net(backend)
    g = {n: net.devices[n].ports[1].guid for n in NODES}
    socks = {}
    for n in ("node0002", "node0003"):
        s = socks[(n, 5353)] = net.nodes[n].ip.udp_socket()
        s.bind(5353)
        s.join_group(GROUP)
    _settle(net)
    # a new partition: the SM (restarted elsewhere) programs it, the nodes get a child interface
    net.config["partitions"] = (f"Default=0x7fff, ipoib : ALL=full;\n"
                                f"Green=0x0005, ipoib : 0x{g['node0001']:016x}=full, 0x{g['node0004']:016x}=full;\n")
    net.stop_sm()
    net.start_sm("node0001", 1)
    net.settle(2.0, step=0.1)
    children = {n: sorted(net.nodes[n].ifs) for n in NODES}
    green = net.nodes["node0004"].ip.udp_socket()
    green.bind(6100)
    socks[("node0004", 6100)] = green
    t = net.nodes["node0001"].ip.udp_socket()
    t.bind(46000)
    ping1 = net.ping("node0001", "198.19.5.4", count=2).received
    for seq, size in enumerate((1, 1000, 5000, 64)):
        t.sendto(_payload(seq, size), ("198.19.5.4", 6100))
        _settle(net, 0.1)
    # the SM moves again and the partition goes: ClientReregister everywhere, the child goes away
    net.config["partitions"] = "Default=0x7fff, ipoib : ALL=full;\n"
    net.stop_sm()
    net.start_sm("node0004", 1)
    net.settle(2.0, step=0.1)
    after = {n: sorted(net.nodes[n].ifs) for n in NODES}
    ping2 = net.ping("node0001", "node0004", count=2).received
    for seq in range(10, 13):
        t.sendto(_payload(seq, 300), (GROUP, 5353))
        t.sendto(_payload(seq + 10, 300), (net.ip("node0003"), 5353))
    _settle(net)
    return {"children": children, "after": after, "pings": (ping1, ping2), "delivered": _by_flow(socks),
            "counters": _counters(net)}


def test_pkey_change_and_sm_restart_with_traffic():
    std, fast = _both(_pkey_change_and_sm_restart)
    assert std["children"]["node0001"] == ["ib0", "ib0.8005"] and std["after"]["node0001"] == ["ib0"]
    assert std["pings"] == (2, 2)
    d = std["delivered"]
    assert [s for s, _, _ in d["198.19.5.1:46000>node0004:6100"]] == [0, 1, 2, 3]
    assert sorted(s for s, _, _ in d["198.18.0.1:46000>node0003:5353"]) == [10, 11, 12, 20, 21, 22]
    _assert_same(std, fast)
