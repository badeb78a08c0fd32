"""IPoIB end to end over LoopNet (sans-IO): the SM and an IPoIBNode on every HCA, time as an input.

The bulk of the IPoIB behaviour tests: reachability across switches, ARP and the neighbour table,
multicast membership through the SA and the MFTs, P_Key child interfaces, SM restart and
ClientReregister, carrier on port down/up, the rdma_netdev per-op fallback, the standard
provider's UD behaviour, a tshark-decoded capture, and bad input on every parser of the layer.
The real-process counterpart is test_ipoib_processes.py.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric import wire as w
from fabric.capture import ErfWriter, read_erf
from fabric.wire import smp_attrs as sa
from ipnet import IpNet
from ipoib import _stdpath, queues, ulp
from ipoib import inet
from ipoib.iphost import UdpError
from ipoib.netdev import BUSY, OK, OPS, AddressHandle, NetdevParams, NotSupported, RdmaNetdev, RxInfo
from ipoib.std import GRH_AREA, SENDQ_SIZE, StdProvider
from paths import shared_topology
from tsharkjson import find
from ipoib import encap

FATTREE = "fattree:2,2,2,2"  # 2 leaves, 2 spines, 2 HCAs per leaf, 2 parallel links per leaf-spine pair
NODES = ["node0001", "node0002", "node0003", "node0004"]
BCAST_MGID = bytes.fromhex("ff12401bffff000000000000ffffffff")
GROUP = "239.1.2.3"
GROUP_MGID = bytes.fromhex("ff12401bffff0000000000000f010203")  # RFC 4391: low 28 bits of the group
PORT = 5000


def _net(topo=FATTREE, **kw) -> IpNet:
    return IpNet(topo, **kw).up()


def _ifc(net, name, ifname="ib0") -> ulp.IPoIBInterface:
    return net.nodes[name].ifs[ifname]


def _ip(text) -> bytes:
    return ipaddress.IPv4Address(text).packed


def _link_addr(qpn: int, gid: bytes) -> bytes:
    """RFC 4391 section 9.1.1: 1 octet of flags (0: UD only), 3 of QPN, 16 of port GID."""
    return b"\x00" + qpn.to_bytes(3, "big") + gid


def _settle(net, seconds=0.5, step=0.05):
    net.settle(seconds, step=step)


def _sa_group(net, mgid):
    return net.sm.sa.mcast.groups.get(mgid)


def _attached_switch_port(net, hca):
    return net.peers[(hca, 1)]


def _inter_switch_unicast(net) -> int:
    """Unicast packets sent on switch-to-switch links so far."""
    total = 0
    for (a, pa), (b, _pb) in net.peers.items():
        if net.devices[a].kind == "switch" and net.devices[b].kind == "switch":
            total += net.devices[a].ports[pa].counters.ext["port_unicast_xmit_pkts"]
    return total


def _mft_has(net, mlid, hca) -> bool:
    """Does the switch HCA ``hca`` hangs off forward MLID ``mlid`` to it?"""
    sw, port = _attached_switch_port(net, hca)
    return bool(net.devices[sw].mft[mlid - w.LID_MCAST_FIRST] >> port & 1)


def _udp_pair(net, members, port=PORT, group=GROUP):
    socks = {}
    for n in members:
        s = net.nodes[n].ip.udp_socket()
        s.bind(port)
        if group is not None:
            s.join_group(group)
        socks[n] = s
    return socks


def _drain(sock):
    out = []
    while (m := sock.recvfrom()) is not None:
        out.append(m)
    return out


# -- 1. reachability across switches ----------------------------------------------------------


@pytest.mark.parametrize("topo", [FATTREE, "ibsim/net.2sw2path4hca"])
def test_all_pairs_ping_across_switches(topo):
    path = shared_topology(topo) if topo.startswith("ibsim/") else topo
    net = _net(path)
    names = list(net.nodes)
    assert len(names) == 4
    inter0 = _inter_switch_unicast(net)
    for i, n in enumerate(names):
        ifc = _ifc(net, n)
        assert ifc.carrier and ifc.mtu == 2048 - 4, n
        assert ifc.snapshot()["addr"] == f"198.18.0.{i + 1}/16"
    for a in names:
        for b in names:
            if a == b:
                continue
            s = net.ping(a, b, count=2)
            assert (s.sent, s.received, s.errors, s.corrupted) == (2, 2, [], 0), (a, b, s)
            # the unicast path is the SA's: the DLID of the target's port
            paths = {p["dgid"]: p for p in _ifc(net, a).snapshot()["paths"]}
            p = paths[w.fmt_gid(net.devices[b].gid(1))]
            assert p["valid"] and p["dlid"] == net.lid(b)
    # pairs on different switches exist, and their traffic crossed the switch-to-switch links
    leaf = {n: _attached_switch_port(net, n)[0] for n in names}
    assert len(set(leaf.values())) > 1
    assert _inter_switch_unicast(net) > inter0
    for n in names:
        st = net.nodes[n].ip.stats()
        assert st["drops"].get("internal_error", 0) == 0


def test_ping_to_own_address_uses_the_loopback_not_the_fabric():
    net = _net()
    ifc = _ifc(net, "node0002")
    before = dict(ifc.stats)
    s = net.ping("node0002", "node0002", count=1)
    assert s.received == 1
    assert ifc.stats["tx_packets"] == before["tx_packets"]


# -- 2. ARP and neighbours --------------------------------------------------------------------


def test_arp_resolves_to_the_targets_flags_qpn_and_gid():
    net = _net()
    a, b, c = _ifc(net, "node0001"), _ifc(net, "node0003"), _ifc(net, "node0004")
    assert not a.neigh
    s = net.ping("node0001", "node0003", count=1)
    assert s.received == 1
    n = a.neigh[_ip("198.18.0.3")]
    assert n.state == "REACHABLE"
    want = _link_addr(b.qpn, net.devices["node0003"].gid(1))
    assert len(n.hwaddr) == 20 and n.hwaddr == want
    assert b.qpn >= 0x48  # a general UD QP, not QP0/QP1
    snap = {e["ip"]: e for e in a.snapshot()["neigh"]}
    assert snap["198.18.0.3"] == {"ip": "198.18.0.3", "lladdr": want.hex(":"), "state": "REACHABLE"}
    # the target learned the requester from the request aimed at it (Linux does the same) ...
    nb = b.neigh[_ip("198.18.0.1")]
    assert nb.state == "REACHABLE" and nb.hwaddr == _link_addr(a.qpn, net.devices["node0001"].gid(1))
    # ... and a bystander that saw the broadcast request learned nothing
    assert not c.neigh
    assert a.stats["arp_requests"] == 1 and b.stats["arp_replies"] == 1
    # resolved once: a second ping sends no ARP
    net.ping("node0001", "node0003", count=1)
    assert a.stats["arp_requests"] == 1


def _captured(net):
    pkts = []
    hcas = {n.name for n in net.topology.hcas()}
    net.capture = lambda dev, port, raw: pkts.append((dev, raw)) if dev in hcas else None
    return pkts


def _ipoib_packets(pkts, src=None, ethertype=None):
    out = []
    for dev, raw in pkts:
        p = w.split_ud_packet(raw)
        if p.bth.dest_qp in (0, 1) or len(p.payload) < 4:
            continue
        if src is not None and dev != src:
            continue
        if ethertype is not None and int.from_bytes(p.payload[:2], "big") != ethertype:
            continue
        out.append(p)
    return out


def test_arp_request_goes_to_the_broadcast_group_and_the_reply_comes_back_unicast():
    net = _net()
    pkts = _captured(net)
    a, b = _ifc(net, "node0001"), _ifc(net, "node0003")
    assert net.ping("node0001", "node0003").received == 1
    reqs = _ipoib_packets(pkts, "node0001", encap.ETHERTYPE_ARP)
    assert len(reqs) == 1
    p = reqs[0]
    bcast = a.groups[BCAST_MGID]
    assert bcast.mlid == _sa_group(net, BCAST_MGID).mlid and w.is_mcast_lid(bcast.mlid)
    assert p.lrh.dlid == bcast.mlid == 0xC000
    assert p.grh is not None and p.grh.dgid == BCAST_MGID
    assert str(ipaddress.IPv6Address(p.grh.dgid)) == "ff12:401b:ffff::ffff:ffff"
    assert p.grh.sgid == net.devices["node0001"].gid(1)
    assert p.bth.dest_qp == 0xFFFFFF and p.deth.src_qp == a.qpn
    assert p.deth.qkey == w.IPOIB_QKEY and p.bth.pkey == 0xFFFF
    arp = encap.parse_arp(p.payload[4:])
    assert arp.oper == encap.ARP_REQUEST
    assert arp.sha == a.hwaddr and arp.spa == _ip("198.18.0.1")
    assert arp.tha == bytes(20) and arp.tpa == _ip("198.18.0.3")
    # the reply: unicast from the target's QP to the requester's QP, no GRH
    reps = _ipoib_packets(pkts, "node0003", encap.ETHERTYPE_ARP)
    assert len(reps) == 1
    r = reps[0]
    assert r.lrh.dlid == net.lid("node0001") and r.grh is None
    assert r.bth.dest_qp == a.qpn and r.deth.src_qp == b.qpn
    rep = encap.parse_arp(r.payload[4:])
    assert rep.oper == encap.ARP_REPLY and rep.sha == b.hwaddr and rep.tha == a.hwaddr
    # and the echo request follows unicast to the resolved QPN
    icmp = _ipoib_packets(pkts, "node0001", encap.ETHERTYPE_IPV4)
    assert icmp and all(q.bth.dest_qp == b.qpn and q.lrh.dlid == net.lid("node0003") for q in icmp)


def test_unused_neighbours_are_garbage_collected():
    net = _net()
    a, b = _ifc(net, "node0001"), _ifc(net, "node0003")
    assert net.ping("node0001", "node0003").received == 1
    key_b, key_a = _ip("198.18.0.3"), _ip("198.18.0.1")
    assert key_b in a.neigh and key_a in b.neigh
    net.settle(ulp.NEIGH_STALE_S - 5, step=1.0)
    assert key_b in a.neigh and key_a in b.neigh, "collected before NEIGH_STALE_S"
    # using them keeps them: past the limit counted from the first use, they are still there
    assert net.ping("node0001", "node0003").received == 1
    net.settle(10, step=1.0)
    assert key_b in a.neigh and key_a in b.neigh
    assert a.stats["arp_requests"] == 1
    # unused for longer than NEIGH_STALE_S: gone on both sides
    net.settle(ulp.NEIGH_STALE_S, step=1.0)
    assert key_b not in a.neigh and key_a not in b.neigh
    # and resolved again on demand
    assert net.ping("node0001", "node0003").received == 1
    assert a.neigh[key_b].state == "REACHABLE" and a.stats["arp_requests"] == 2


def test_unresolvable_address_drops_and_counts_the_pending_frames_after_the_retries():
    net = _net()
    a = _ifc(net, "node0002")
    nobody = "198.18.0.200"
    s = net.nodes["node0002"].ip.ping(nobody, count=5, interval=0.2, timeout=1.0)
    net.settle(ulp.ARP_RETRIES * ulp.ARP_RETRY_S + 0.5, step=0.1)
    assert s.done and s.received == 0 and s.sent == 5
    n = a.neigh[_ip(nobody)]
    assert n.state == "FAILED" and n.hwaddr is None
    assert a.stats["arp_requests"] == ulp.ARP_RETRIES
    # 5 frames handed over: the queue (bounded in octets) holds them all, and each is dropped and
    # counted once when ARP gives up
    assert a.drops == {"arp_timeout": 5}
    assert a.stats["tx_dropped"] == 5 and not n.pending
    # ARP is not retried right away: an echo now fails at once, as ping reports a failed ARP
    s2 = net.nodes["node0002"].ip.ping(nobody, count=1, timeout=0.5)
    assert s2.errors == ["Destination Host Unreachable"]
    assert a.drops["neigh_failed"] == 1 and a.stats["arp_requests"] == ulp.ARP_RETRIES
    # after the hold-down a new send starts a new resolution
    net.settle(1.5, step=0.1)
    net.nodes["node0002"].ip.ping(nobody, count=1, timeout=0.5)
    assert a.stats["arp_requests"] == ulp.ARP_RETRIES + 1 and a.neigh[_ip(nobody)].state == "INCOMPLETE"
    # nobody else was disturbed
    assert net.ping("node0002", "node0004").received == 1


def test_the_first_large_datagram_to_an_unresolved_neighbour_arrives_whole():
    """60000 octets are 30 fragments at MTU 2044: every one waits for ARP and then for the
    PathRecord, and the datagram is reassembled; nothing is dropped."""
    net = _net()
    a = _ifc(net, "node0001")
    socks = _udp_pair(net, ["node0001", "node0003"], group=None)
    payload = bytes(range(256)) * 234 + b"tail"
    socks["node0001"].sendto(payload, ("198.18.0.3", PORT))
    _settle(net, 1.0)
    assert _drain(socks["node0003"]) == [(payload, ("198.18.0.1", PORT))]
    assert a.stats["tx_dropped"] == 0 and not a.drops
    assert a.stats["arp_requests"] == 1 and a.stats["path_queries"] == 1


def test_what_overflows_the_resolution_queue_is_dropped_oldest_first_and_counted():
    net = _net()
    a = _ifc(net, "node0001")
    socks = _udp_pair(net, ["node0001", "node0003"], group=None)
    sent = 5
    for i in range(sent):  # 5 x 30 fragments of 2 KB: more than the queue's 212992 octets
        socks["node0001"].sendto(bytes([i]) * 60000, ("198.18.0.3", PORT))
    frames = a.neigh[_ip("198.18.0.3")].pending
    assert frames.octets <= queues.RESOLVE_QUEUE_BYTES
    _settle(net, 1.0)
    got = _drain(socks["node0003"])
    dropped = a.drops.get("neigh_queue_full", 0)
    assert dropped > 0 and a.stats["tx_dropped"] == dropped
    # the oldest went: the last datagrams arrive whole, the first lost fragments and never completed
    assert got and got[-1][0] == bytes([sent - 1]) * 60000
    assert [d[0][0] for d in got] == list(range(sent - len(got), sent))
    assert 30 * sent - dropped == a.stats["tx_packets"] - a.stats["arp_requests"]


def test_a_path_in_use_is_revalidated_when_it_ages_and_after_a_new_sm_without_a_gap():
    net = _net()
    a = _ifc(net, "node0001")
    assert net.ping("node0001", "node0003").received == 1
    dgid = net.devices["node0003"].gid(1)
    queries = a.stats["path_queries"]
    assert queries == 1 and a.paths[dgid].valid
    # still fresh: no query
    net.settle(10, step=1.0)
    assert net.ping("node0001", "node0003").received == 1 and a.stats["path_queries"] == queries
    # aged: the next frame goes out by the old AH and asks the SA again
    net.settle(ulp.PATH_AGE_S, step=5.0)
    assert net.ping("node0001", "node0003").received == 1
    assert a.stats["path_queries"] == queries + 1
    assert a.paths[dgid].resolved >= net.now - 1
    # a new SM: a light flush marks the path invalid; traffic keeps flowing while it is re-asked
    net.stop_sm()
    net.start_sm("node0004", 1)
    net.settle(1.0, step=0.1)
    assert not a.paths[dgid].valid and a.paths[dgid].ah is not None
    assert net.ping("node0001", "node0003").received == 1
    assert a.stats["path_queries"] == queries + 2 and a.paths[dgid].valid
    assert a.stats["tx_dropped"] == 0


def test_a_failed_path_revalidation_backs_off_and_gives_up_the_old_ah():
    """The SA is gone (the SM stopped, the ports still name it): an aged path is asked again with
    backoff, not on every frame, and after PATH_REVALIDATE_TRIES failures its AH is dropped."""
    net = _net()
    a = _ifc(net, "node0001")
    assert net.ping("node0001", "node0003").received == 1
    dgid = net.devices["node0003"].gid(1)
    net.stop_sm()
    net.settle(ulp.PATH_AGE_S + 1, step=10.0)
    queries = a.stats["path_queries"]
    s = net.nodes["node0001"].ip.ping("198.18.0.3", count=20, interval=0.05, timeout=0.5)
    net.settle(1.5, step=0.05)
    assert s.received >= 1  # the old AH still carries traffic while the SA does not answer
    assert a.stats["path_queries"] == queries + 1  # one query in flight or failed, not one per frame
    for _ in range(6):  # failures back off (2, 4, 8 s ...): a few rounds of traffic and time
        net.nodes["node0001"].ip.ping("198.18.0.3", count=1, timeout=0.5)
        net.settle(20, step=1.0)
    assert a.paths[dgid].failures >= ulp.PATH_REVALIDATE_TRIES and a.paths[dgid].ah is None


# -- 3. IPv4 multicast through the SA and the MFTs ---------------------------------------------


def test_udp_multicast_reaches_exactly_the_members():
    net = _net()
    members = ["node0001", "node0002", "node0003"]
    socks = _udp_pair(net, members)
    outsider = _udp_pair(net, ["node0004"], group=None)["node0004"]  # bound to the port, not joined
    _settle(net)
    g = _sa_group(net, GROUP_MGID)
    assert g is not None and not g.created_by_sm
    assert set(g.members) == {net.devices[n].gid(1) for n in members}
    assert all(v == w.JOIN_FULL_MEMBER for v in g.members.values())
    for n in members:
        mg = _ifc(net, n).groups[GROUP_MGID]
        assert (mg.state, mg.mlid, mg.join_state, mg.attached) == ("joined", g.mlid, w.JOIN_FULL_MEMBER, True)
        assert _mft_has(net, g.mlid, n), n
    assert GROUP_MGID not in _ifc(net, "node0004").groups
    assert not _mft_has(net, g.mlid, "node0004")
    assert g.mlid not in net.devices["node0004"].mcast_lids
    rx4 = net.nodes["node0004"].ip.stats("ib0")["rx_packets"]
    socks["node0001"].sendto(b"to the group", (GROUP, PORT))
    _settle(net)
    assert _drain(socks["node0002"]) == [(b"to the group", ("198.18.0.1", PORT))]
    assert _drain(socks["node0003"]) == [(b"to the group", ("198.18.0.1", PORT))]
    assert _drain(socks["node0001"]) == []  # no IP_MULTICAST_LOOP, and the HCA loopback is dropped
    assert _drain(outsider) == []
    assert net.nodes["node0004"].ip.stats("ib0")["rx_packets"] == rx4  # it never even got there
    assert _ifc(net, "node0001").netdev.standard.ctx.stats["rx_own_mcast"] >= 1


def test_a_non_member_sender_makes_a_send_only_join_and_its_datagrams_arrive():
    net = _net()
    socks = _udp_pair(net, ["node0001", "node0002", "node0003"])
    _settle(net)
    sender = net.nodes["node0004"].ip.udp_socket()
    sender.sendto(b"first", (GROUP, PORT))  # queued while the send-only join is in flight
    sender.sendto(b"second", (GROUP, PORT))
    _settle(net)
    mg = _ifc(net, "node0004").groups[GROUP_MGID]
    assert mg.state == "joined" and mg.join_state == w.JOIN_SENDONLY_FULL_MEMBER  # as the kernel joins
    snap = {e["mgid"]: e for e in _ifc(net, "node0004").snapshot()["mcg"]}
    assert snap[w.fmt_gid(GROUP_MGID)]["join_state"] == 8
    g = _sa_group(net, GROUP_MGID)
    assert g.members[net.devices["node0004"].gid(1)] == mg.join_state
    assert not mg.attached  # a send-only member does not receive
    for n, s in socks.items():
        assert [d for d, _ in _drain(s)] == [b"first", b"second"], n
    sender.sendto(b"third", (GROUP, PORT))
    _settle(net)
    for n, s in socks.items():
        assert [d for d, _ in _drain(s)] == [b"third"], n
    assert _ifc(net, "node0004").stats["joins"] == 2  # broadcast + one send-only join, not one per frame


def test_leaving_the_group_stops_delivery():
    net = _net()
    socks = _udp_pair(net, ["node0001", "node0002", "node0003"])
    sender = net.nodes["node0004"].ip.udp_socket()
    _settle(net)
    sender.sendto(b"a", (GROUP, PORT))
    _settle(net)
    assert all(len(_drain(s)) == 1 for s in socks.values())
    socks["node0002"].leave_group(GROUP)
    _settle(net)
    g = _sa_group(net, GROUP_MGID)
    assert net.devices["node0002"].gid(1) not in g.members
    assert GROUP_MGID not in _ifc(net, "node0002").groups
    assert not _mft_has(net, g.mlid, "node0002") and g.mlid not in net.devices["node0002"].mcast_lids
    before = net.nodes["node0002"].ip.stats("ib0")["rx_packets"]
    sender.sendto(b"b", (GROUP, PORT))
    _settle(net)
    assert _drain(socks["node0002"]) == []
    assert net.nodes["node0002"].ip.stats("ib0")["rx_packets"] == before
    assert [d for d, _ in _drain(socks["node0001"])] == [b"b"]
    assert [d for d, _ in _drain(socks["node0003"])] == [b"b"]
    # the last receivers leave: the sender's SendOnlyFullMember keeps the group while it sends,
    # and once it has not sent for NEIGH_STALE_S it leaves too, and the group goes away at the SA
    socks["node0001"].close()
    socks["node0003"].close()
    _settle(net)
    g = _sa_group(net, GROUP_MGID)
    assert g is not None and set(g.members) == {net.devices["node0004"].gid(1)}
    net.settle(ulp.NEIGH_STALE_S + 2, step=1.0)
    assert GROUP_MGID not in _ifc(net, "node0004").groups
    assert _sa_group(net, GROUP_MGID) is None


def test_sending_to_a_group_with_no_member_creates_it_and_a_later_member_receives():
    """SendOnlyFullMember (JoinState 8, as the kernel's ipoib): the sender's join creates the group,
    its frames leave (to nobody yet), and a receiver that joins later gets what follows."""
    net = _net()
    ifc = _ifc(net, "node0002")
    s = net.nodes["node0002"].ip.udp_socket()
    for i in range(3):
        s.sendto(b"x", ("239.9.9.9", PORT))
        _settle(net, 0.2)
    mgid = ifc.ip_mgid(_ip("239.9.9.9"))
    g = ifc.groups[mgid]
    assert g.state == "joined" and g.join_state == w.JOIN_SENDONLY_FULL_MEMBER and not g.pending
    assert ifc.stats["join_failures"] == 0 and not ifc.drops and ifc.stats["joins"] == 2
    assert ifc.stats["tx_multicast"] == 3
    sa_g = _sa_group(net, mgid)
    assert sa_g is not None and sa_g.members == {net.devices["node0002"].gid(1): w.JOIN_SENDONLY_FULL_MEMBER}
    r = _udp_pair(net, ["node0003"], group="239.9.9.9")["node0003"]
    _settle(net)
    s.sendto(b"now", ("239.9.9.9", PORT))
    _settle(net)
    assert [d for d, _ in _drain(r)] == [b"now"]


def test_send_only_join_that_fails_drops_its_frames_and_the_next_frame_tries_again():
    """A join the SA never answers (the SM is gone; the ports still name it) costs the queued
    frames, counted, and no retry timer runs forever: the next frame tries again."""
    net = _net()
    net.stop_sm()
    ifc = _ifc(net, "node0002")
    s = net.nodes["node0002"].ip.udp_socket()
    for i in range(3):
        s.sendto(b"x", ("239.9.9.9", PORT))
        _settle(net, ulp.SA_TIMEOUT_S + 0.2)
    g = ifc.groups[ifc.ip_mgid(_ip("239.9.9.9"))]
    assert g.state == "idle" and not g.pending
    assert ifc.stats["join_failures"] == 3 and ifc.drops == {"mcast_join_failed": 3}
    joins = ifc.stats["joins"]
    net.settle(20, step=1.0)
    assert ifc.stats["joins"] == joins


# -- 4. P_Key child interfaces ------------------------------------------------------------------


def _blue_net(**smconfig):
    net = IpNet(FATTREE, **smconfig)
    g1, g2 = net.devices["node0001"].ports[1].guid, net.devices["node0002"].ports[1].guid
    net.config["partitions"] = (f"Default=0x7fff, ipoib : ALL=full;\n"
                                f"Blue=0x8001, ipoib : 0x{g1:016x}=full, 0x{g2:016x}=full;\n")
    return net.up()


def test_partition_members_get_a_pkey_child_interface_with_its_own_subnet():
    net = _blue_net()
    for i, n in enumerate(NODES):
        node = net.nodes[n]
        if n in ("node0001", "node0002"):
            assert set(node.ifs) == {"ib0", "ib0.8001"}
            child = node.ifs["ib0.8001"]
            assert child.pkey == 0x8001 and child.carrier and child.mtu == 2044
            assert child.snapshot()["addr"] == f"198.19.1.{i + 1}/24"
            assert child.bcast_mgid == bytes.fromhex("ff12401b800100000000 0000ffffffff".replace(" ", ""))
            assert child.groups[child.bcast_mgid].state == "joined"
            assert child.qpn != node.ifs["ib0"].qpn  # its own UD QP
            assert net.devices[n].qps[child.qpn].pkey_index == net.devices[n].ports[1].pkey_index(0x8001)
        else:
            assert set(node.ifs) == {"ib0"}
            assert "ib0.8001" not in node.ip.interfaces
        assert node.ifs["ib0"].carrier


def test_child_interfaces_talk_within_their_partition_only():
    net = _blue_net()
    pkts = _captured(net)
    s = net.ping("node0001", "198.19.1.2", count=2)
    assert s.received == 2 and s.errors == []
    child = _ifc(net, "node0001", "ib0.8001")
    assert child.neigh[_ip("198.19.1.2")].hwaddr == _link_addr(_ifc(net, "node0002", "ib0.8001").qpn,
                                                                net.devices["node0002"].gid(1))
    mine = _ipoib_packets(pkts, "node0001")
    assert mine and all(p.bth.pkey == 0x8001 for p in mine)  # ARP and ICMP on the partition's P_Key
    # the default partition is untouched
    assert not _ifc(net, "node0001").neigh
    # node0003 is not in the partition: nobody answers there, and it saw nothing
    n3 = net.nodes["node0003"]
    rx3 = n3.ifs["ib0"].stats["rx_packets"]
    s = net.ping("node0001", "198.19.1.3", count=1)
    net.settle(ulp.ARP_RETRIES * ulp.ARP_RETRY_S + 0.5, step=0.1)
    assert s.received == 0 and child.neigh[_ip("198.19.1.3")].state == "FAILED"
    assert n3.ifs["ib0"].stats["rx_packets"] == rx3


@pytest.mark.parametrize("part_enforce", ["off", "both"])
def test_a_packet_with_a_foreign_pkey_is_dropped_at_the_hca(part_enforce):
    """Without partition enforcement the receiving HCA drops it (P_Key violation); with it (OpenSM's
    default) the switch port facing the receiver refuses it on the way out, and the HCA never
    sees it."""
    net = _blue_net(part_enforce=part_enforce)
    sw, num = next((net.devices[x], xp) for lk in net.topology.links
                   for x, xp, y in ((lk.a, lk.a_port, lk.b), (lk.b, lk.b_port, lk.a)) if y == "node0003")
    xmit0 = sw.ports[num].counters.snapshot()["counters"]["port_xmit_constraint_errors"]
    n1, n3 = net.devices["node0001"], net.devices["node0003"]
    child = _ifc(net, "node0001", "ib0.8001")
    target = _ifc(net, "node0003")
    viol, drops = n3.ports[1].p_key_violations, n3.drops["pkey"]
    rx = target.stats["rx_packets"]
    frame = encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack() + inet.build_ipv4(
        _ip("198.19.1.1"), _ip("198.18.0.3"), inet.IPPROTO_UDP,
        inet.build_udp(_ip("198.19.1.1"), _ip("198.18.0.3"), 1, 2, b"x"))
    # from the child's QP (P_Key index of 0x8001) straight to node0003's IPoIB QP
    n1.post_send(child.qpn, dlid=net.lid("node0003"), dest_qp=target.qpn,
                 payload=frame, now=net.now)
    net.inject("node0001")
    _settle(net, 0.2)
    xmit = sw.ports[num].counters.snapshot()["counters"]["port_xmit_constraint_errors"] - xmit0
    if part_enforce == "off":
        assert n3.ports[1].p_key_violations == viol + 1 and n3.drops["pkey"] == drops + 1 and xmit == 0
    else:
        assert n3.ports[1].p_key_violations == viol and xmit == 1 and sw.drops["pkey_outbound"] == 1
    assert target.stats["rx_packets"] == rx
    # the same frame on the default P_Key gets through (the drop was the P_Key, nothing else)
    n1.post_send(_ifc(net, "node0001").qpn, dlid=net.lid("node0003"),
                 dest_qp=target.qpn, payload=frame, now=net.now)
    net.inject("node0001")
    _settle(net, 0.2)
    assert target.stats["rx_packets"] == rx + 1


def test_pkey_table_change_adds_and_removes_child_interfaces():
    net = _net()
    assert all(set(n.ifs) == {"ib0"} for n in net.nodes.values())
    g = {n: net.devices[n].ports[1].guid for n in NODES}
    net.config["partitions"] = (f"Default=0x7fff, ipoib : ALL=full;\n"
                                f"Green=0x0005, ipoib : 0x{g['node0001']:016x}=full, 0x{g['node0004']:016x}=full;\n")
    net.stop_sm()
    net.start_sm("node0001", 1)
    net.settle(2.0, step=0.1)
    assert set(net.nodes["node0001"].ifs) == set(net.nodes["node0004"].ifs) == {"ib0", "ib0.8005"}
    assert _ifc(net, "node0004", "ib0.8005").snapshot()["addr"] == "198.19.5.4/24"
    assert _ifc(net, "node0001").stats["flushes_heavy"] >= 1
    assert net.ping("node0001", "198.19.5.4").received == 1
    net.config["partitions"] = "Default=0x7fff, ipoib : ALL=full;\n"
    net.stop_sm()
    net.start_sm("node0001", 1)
    net.settle(2.0, step=0.1)
    assert set(net.nodes["node0004"].ifs) == {"ib0"} and "ib0.8005" not in net.nodes["node0004"].ip.interfaces
    assert net.ping("node0001", "node0004").received == 1


# -- 5. SM restart: ClientReregister, rejoin, traffic resumes -------------------------------------


def test_sm_restart_client_reregister_rejoins_groups_and_traffic_resumes():
    net = _net()
    socks = _udp_pair(net, ["node0002", "node0003"])
    _settle(net)
    assert net.ping("node0001", "node0003").received == 1
    old_sa = net.sm.sa
    net.stop_sm()
    net.events_seen.clear()
    net.start_sm("node0004", 1, run=False)
    new_sa = net.sm.sa
    assert new_sa is not old_sa
    assert _sa_group(net, GROUP_MGID) is None  # the new SA knows no IPv4 group
    assert not _sa_group(net, BCAST_MGID).members  # and the broadcast group is empty
    net.settle(2.0, step=0.1)
    rereg = {n for n, kind, _ in net.events_seen if kind == "client_reregister"}
    assert rereg == set(NODES)
    for n in NODES:
        ifc = _ifc(net, n)
        assert ifc.stats["flushes_light"] == 1, n
        assert net.devices[n].ports[1].sm_lid == net.lid("node0004")
        assert ifc.carrier and ifc.groups[BCAST_MGID].state == "joined", n
    assert set(_sa_group(net, BCAST_MGID).members) == {net.devices[n].gid(1) for n in NODES}
    g = _sa_group(net, GROUP_MGID)
    assert g is not None and set(g.members) == {net.devices[n].gid(1) for n in ("node0002", "node0003")}
    for n in ("node0002", "node0003"):
        assert _ifc(net, n).groups[GROUP_MGID].state == "joined"
        assert _ifc(net, n).groups[GROUP_MGID].mlid == g.mlid
        assert _mft_has(net, g.mlid, n)
    assert not _mft_has(net, g.mlid, "node0001")
    # unicast and multicast both work again
    assert net.ping("node0001", "node0003").received == 1
    assert net.ping("node0004", "node0002").received == 1
    net.nodes["node0001"].ip.udp_socket().sendto(b"after", (GROUP, PORT))
    _settle(net)
    for n in ("node0002", "node0003"):
        assert [d for d, _ in _drain(socks[n])] == [b"after"], n


def test_rejoin_after_reregister_is_broadcast_first_and_prompt():
    """The IPv4 group is rejoined only once the broadcast group is (its join copies the broadcast
    group's parameters to create the group at the new SA); nothing waits for a doubled backoff."""
    net = _net()
    _udp_pair(net, ["node0002"])
    _settle(net)
    ifc = _ifc(net, "node0002")
    statuses = []
    orig = ifc._join_done

    def spy(g, resp, now, tid=None):
        if tid is None or tid == g.tid:
            statuses.append((g.mgid, None if resp is None else resp.status))
        return orig(g, resp, now, tid)

    ifc._join_done = spy
    net.stop_sm()
    net.start_sm("node0004", 1)
    t0 = net.now
    while net.now - t0 < 5 and ifc.groups[GROUP_MGID].state != "joined":
        net.advance(0.1)
    assert ifc.groups[GROUP_MGID].state == "joined"
    assert net.now - t0 <= 1.5, "the rejoin waited for a backoff of more than a second"
    # the IPv4 group's join went out once, after the broadcast group's succeeded, and succeeded
    assert [s for m, s in statuses if m == GROUP_MGID] == [0]


def test_a_stale_join_answer_does_not_undo_a_newer_join():
    """A join sent to a dead SA times out after the ClientReregister flush superseded it: the
    timeout must not mark the group failed (it would stay unusable until a retry)."""
    net = _net()
    net.stop_sm()  # the SM dies; the ports still name it
    sock = _udp_pair(net, ["node0002"])["node0002"]  # this join goes to the dead SA
    node = net.nodes["node0002"]
    ifc = node.ifs["ib0"]
    g = ifc.groups[GROUP_MGID]
    assert g.state == "joining"
    stale_deadline = node._sa_pending[g.tid][1]
    net.advance(0.5)
    net.start_sm("node0004", 1)
    while net.now < stale_deadline + 0.3:  # the stale join's timeout fires in here
        net.advance(0.1)
    assert ifc.groups[GROUP_MGID].state in ("joining", "joined", "waiting"), ifc.groups[GROUP_MGID]
    net.settle(1.5, step=0.1)
    assert ifc.groups[GROUP_MGID].state == "joined"
    assert ifc.stats["join_failures"] <= 1  # the new SA's "not ready yet" for the broadcast group, at most
    net.nodes["node0001"].ip.udp_socket().sendto(b"x", (GROUP, PORT))
    _settle(net)
    assert [d for d, _ in _drain(sock)] == [b"x"]


# -- 6. port down/up: carrier ---------------------------------------------------------------------


def test_port_down_drops_the_carrier_and_port_up_restores_it():
    net = _net()
    node = net.nodes["node0003"]
    ifc = node.ifs["ib0"]
    assert net.ping("node0001", "node0003").received == 1
    normal = ifc.stats["flushes_normal"]
    net.set_link("node0003", 1, False)
    assert net.devices["node0003"].ports[1].state == sa.PORT_DOWN
    assert not ifc.carrier and not node.ip.interfaces["ib0"].carrier
    assert ifc.stats["flushes_normal"] > normal
    sock = node.ip.udp_socket()
    with pytest.raises(UdpError) as ei:
        sock.sendto(b"x", ("198.18.0.1", PORT))
    assert ei.value.reason == "ENETDOWN"
    s = node.ip.ping("198.18.0.1", count=1)
    assert s.errors == ["Network is down"]
    st = node.ip.stats("ib0")
    assert st["drops"] == {"carrier_down": 2} and st["tx_dropped"] == 2
    assert net.ping("node0001", "node0003").received == 0
    net.set_link("node0003", 1, True)
    net.settle(1.0, step=0.1)
    assert net.devices["node0003"].ports[1].state == sa.PORT_ACTIVE
    assert ifc.carrier and node.ip.interfaces["ib0"].carrier
    assert ifc.groups[BCAST_MGID].state == "joined"
    assert net.ping("node0001", "node0003").received == 1
    assert net.ping("node0003", "node0002").received == 1


# -- 7. rdma_netdev: per-op fallback ----------------------------------------------------------


class PartialProvider:
    """A provider with two ops: get_params and send. Its send posts on the QP itself."""

    name = "partial"

    def __init__(self, ctx):
        self.ctx = ctx
        self.sent = []

    def get_params(self):
        return NetdevParams(tx_queues=2, rx_queues=2, priv_size=0)

    def send(self, packet, ah, dqpn):
        c = self.ctx
        c.hca.post_send(c.qp.qpn, dlid=ah.dlid, dest_qp=dqpn, payload=packet, sl=ah.sl, dgid=ah.dgid,
                        now=c.now(), port_num=c.port)
        self.sent.append(bytes(packet))
        return OK


class ArpShyProvider(PartialProvider):
    """Sends IPv4 itself and leaves ARP frames to the standard implementation."""

    def send(self, packet, ah, dqpn):
        if packet[:2] == b"\x08\x06":
            raise NotSupported("ARP")
        return super().send(packet, ah, dqpn)


def _backend(cls):
    return types.SimpleNamespace(Provider=cls, BACKEND=cls.name)


def test_a_partial_provider_serves_its_ops_and_the_standard_the_rest():
    net = _net(backend=_backend(PartialProvider))
    assert net.ping("node0001", "node0004", count=2).received == 2
    for n in ("node0001", "node0004"):
        ifc = _ifc(net, n)
        nd = ifc.netdev
        assert isinstance(nd.provider, PartialProvider)
        assert ifc.params == NetdevParams(tx_queues=2, rx_queues=2)
        assert nd.served_by["get_params"] == "provider" and nd.served_by["send"] == "provider"
        for op in ("init", "open", "set_id", "attach_mcast", "poll"):
            assert nd.served_by[op] == "standard", op
            assert nd.fallbacks[op] >= 1, op
        assert "send" not in nd.fallbacks and "get_params" not in nd.fallbacks
        assert ifc.snapshot()["served_by"] == nd.served_by
        # every frame went through the provider's send; the standard send queue carried none
        assert len(nd.provider.sent) == ifc.stats["tx_packets"] > 0
        assert nd.standard.ctx.stats["tx_packets"] == 0
    kinds = {bytes(f[:2]) for f in _ifc(net, "node0001").netdev.provider.sent}
    assert kinds == {b"\x08\x06", b"\x08\x00"}


def test_a_provider_send_that_raises_not_supported_falls_back_to_the_standard_send():
    net = _net(backend=_backend(ArpShyProvider))
    assert net.ping("node0001", "node0004", count=2).received == 2
    for n in ("node0001", "node0004"):
        ifc = _ifc(net, n)
        nd = ifc.netdev
        arp = ifc.stats["arp_requests"] + ifc.stats["arp_replies"]
        assert arp == 1
        assert nd.fallbacks["send"] == arp
        assert nd.standard.ctx.stats["tx_packets"] == arp  # the ARP frames went the standard way
        assert all(f[:2] == b"\x08\x00" for f in nd.provider.sent) and len(nd.provider.sent) == 2
        assert nd.served_by["send"] == "provider"  # the last frame, an echo, was the provider's


@pytest.mark.parametrize("module", ["ipoib._fastpath", "ipoib._stdpath"])
def test_real_backends_ping_with_per_op_fallback(module):
    mod = pytest.importorskip(module)
    net = _net(backend=mod)
    assert net.ping("node0002", "node0003", count=2).received == 2
    assert net.nodes["node0002"].snapshot()["backend"] == mod.BACKEND
    nd = _ifc(net, "node0002").netdev
    prov_cls = mod.Provider
    if prov_cls is StdProvider:
        assert nd.provider is None and set(nd.served_by.values()) == {"standard"}
    else:
        assert isinstance(nd.provider, prov_cls)
        assert nd.served_by["get_params"] == "provider"
        assert _ifc(net, "node0002").params == nd.provider.get_params()
    for op, who in nd.served_by.items():
        if nd.provider is None or not hasattr(nd.provider, op):
            assert who == "standard", op
    for op in ("init", "open", "attach_mcast", "send", "poll"):
        assert op in nd.served_by, op


def test_dispatch_unit():
    calls = []

    class Std:
        def __getattr__(self, op):
            return lambda *a: calls.append(("std", op, a)) or "std"

    class Prov:
        def send(self, *a):
            calls.append(("prov", "send", a))
            return "prov"

        def poll(self, budget):
            raise NotSupported

    nd = RdmaNetdev(Prov(), Std())
    assert nd.send(b"f", None, 1) == "prov" and nd.poll(8) == "std" and nd.open() == "std"
    assert nd.served_by == {"send": "provider", "poll": "standard", "open": "standard"}
    assert nd.fallbacks == {"poll": 1, "open": 1}
    assert calls == [("prov", "send", (b"f", None, 1)), ("std", "poll", (8,)), ("std", "open", ())]
    with pytest.raises(AttributeError):
        nd.not_an_op  # noqa: B018
    assert set(OPS) >= {"get_params", "send", "poll", "attach_mcast"}
    # each op is bound at its first use and kept: the same callable every time after, and an op
    # never called costs nothing when the interface comes up
    assert set(vars(nd)) & set(OPS) == {"send", "poll", "open"}
    assert nd.send is nd.send and nd.send(b"g", None, 2) == "prov"
    assert callable(nd.tx_timeout) and "tx_timeout" in vars(nd) and "stop" not in vars(nd)


# -- 8. the standard provider's UD behaviour ------------------------------------------------------


def test_send_queue_stops_when_full_and_wakes_at_half():
    net = _net(backend=_stdpath)  # the standard provider's queue (the fast one has its own test)
    ifc = _ifc(net, "node0001")
    ctx = ifc.netdev.standard.ctx
    stops, wakes = [], []
    orig_stop, orig_wake = ctx.stop_queue, ctx.wake_queue
    ctx.stop_queue = lambda q: (stops.append((q, len(ctx.sendq))), orig_stop(q))
    ctx.wake_queue = lambda q: (wakes.append((q, len(ctx.sendq))), orig_wake(q))
    dst = _ifc(net, "node0003")
    sock = net.nodes["node0003"].ip.udp_socket()
    sock.bind(PORT)
    ah = AddressHandle(dlid=net.lid("node0003"))
    frames = [encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack() + inet.build_ipv4(
        _ip("198.18.0.1"), _ip("198.18.0.3"), inet.IPPROTO_UDP,
        inet.build_udp(_ip("198.18.0.1"), _ip("198.18.0.3"), 7, PORT, i.to_bytes(2, "big")), ident=i)
        for i in range(200)]
    rcs = [ifc.netdev.send(f, ah, dst.qpn) for f in frames]  # nobody polls meanwhile
    assert rcs == [OK] * SENDQ_SIZE + [BUSY] * (200 - SENDQ_SIZE)
    assert stops == [(0, SENDQ_SIZE)] and wakes == []
    assert ifc.queue_stopped  # netif_stop_queue reached the interface
    assert ctx.stats["tx_busy"] == 200 - SENDQ_SIZE and ctx.stats["tx_stops"] == 1
    assert len(ctx.sendq) == SENDQ_SIZE and ctx.stats["tx_packets"] == 0
    # while stopped, the interface does not even try the provider: the frame waits in the qdisc
    assert ifc._send_frame(frames[0], ah, dst.qpn)
    assert ifc.qdisc.length == 1 and ctx.stats["tx_busy"] == 200 - SENDQ_SIZE and not ifc.drops
    # one NAPI poll completes the sends: the queue wakes once, when half of it is left
    ifc.netdev.poll(64)
    assert wakes == [(0, SENDQ_SIZE // 2)] and not ifc.queue_stopped
    assert ctx.stats["tx_packets"] == SENDQ_SIZE and ctx.stats["tx_wakes"] == 1
    net._service("node0001", net.devices["node0001"])
    net.run()
    _settle(net, 0.5)
    got = [int.from_bytes(d, "big") for d, _ in _drain(sock)]
    assert got == list(range(SENDQ_SIZE)) + [0]  # the accepted ones in order, then the one held
    assert ifc.qdisc.length == 0
    assert ifc.netdev.send(frames[0], ah, dst.qpn) == OK


def test_received_frames_start_with_the_40_octet_grh_area():
    net = _net()
    ctx = _ifc(net, "node0003").netdev.standard.ctx
    seen = []
    orig = ctx.deliver
    ctx.deliver = lambda frame, info: (seen.append((frame, info)), orig(frame, info))
    assert net.ping("node0001", "node0003").received == 1
    arp = [(f, i) for f, i in seen if f[GRH_AREA:GRH_AREA + 2] == b"\x08\x06"]
    icmp = [(f, i) for f, i in seen if f[GRH_AREA:GRH_AREA + 2] == b"\x08\x00"]
    assert len(arp) == 1 and icmp
    frame, info = arp[0]  # multicast: the GRH area holds the packet's GRH
    grh = w.GRH.unpack(frame[:GRH_AREA])
    assert grh.dgid == BCAST_MGID and grh.sgid == net.devices["node0001"].gid(1)
    assert info.dgid == BCAST_MGID and info.slid == net.lid("node0001")
    assert info.src_qp == _ifc(net, "node0001").qpn and info.pkey == 0xFFFF
    assert encap.parse_arp(frame[GRH_AREA + 4:]).tpa == _ip("198.18.0.3")
    for frame, info in icmp:  # unicast: no GRH, the area is there anyway, zeroed
        assert frame[:GRH_AREA] == bytes(GRH_AREA) and info.dgid is None and info.sgid is None
        hdr, _ = inet.parse_ipv4(frame[GRH_AREA + 4:])
        assert hdr.proto == inet.IPPROTO_ICMP


def test_own_multicast_looped_back_by_the_hca_is_dropped():
    net = _net()
    a = _ifc(net, "node0001")
    ctx = a.netdev.standard.ctx
    qp = net.devices["node0001"].qps[a.qpn]
    own, rx, received = ctx.stats["rx_own_mcast"], a.stats["rx_packets"], qp.received
    assert net.ping("node0001", "node0003").received == 1  # one broadcast ARP request
    assert ctx.stats["rx_own_mcast"] == own + 1
    # the HCA delivered three: its own ARP request looped back, the ARP reply, the echo reply ...
    assert qp.received == received + 3
    # ... and the interface saw the two replies only
    assert a.stats["rx_packets"] == rx + 2
    assert a.stats["arp_requests"] == 1 and not a.neigh[_ip("198.18.0.3")].pending


# -- 9. capture decoded by tshark ----------------------------------------------------------------


def test_capture_of_ipoib_traffic_decodes_in_tshark(tshark, tmp_path):
    path = tmp_path / "ipoib.erf"
    net = IpNet(FATTREE)
    hcas = {n.name for n in net.topology.hcas()}
    base = 1_700_000_000 * 10**9
    with ErfWriter(path) as wr:
        # every packet an HCA puts on its link, once (switch hops would repeat it)
        net.capture = lambda dev, port, raw: wr.write(raw, base + int(net.now * 1e9)) if dev in hcas else None
        net.up()
        assert net.ping("node0001", "node0004", count=2).received == 2
        rx = net.nodes["node0002"].ip.udp_socket()
        rx.bind(PORT)
        rx.join_group(GROUP)
        _settle(net)
        tx = net.nodes["node0003"].ip.udp_socket()
        tx.sendto(b"unicast datagram", ("198.18.0.2", PORT))
        tx.sendto(b"multicast datagram", (GROUP, PORT))
        _settle(net)
        # (the unicast one waited for ARP and a PathRecord, so the multicast one may come first)
        assert sorted(d for d, _ in _drain(rx)) == [b"multicast datagram", b"unicast datagram"]
        written = wr.count
    assert len(read_erf(path)) == written
    out = subprocess.run([tshark, "-r", str(path), "-T", "json", "-V"], capture_output=True, text=True,
                         timeout=60, check=True)
    frames = json.loads(out.stdout)
    assert len(frames) == written
    for i, frame in enumerate(frames):
        layers = frame["_source"]["layers"]
        assert "_ws.malformed" not in json.dumps(layers), f"frame {i + 1} is malformed"
        assert not find(layers, "_ws.expert"), f"frame {i + 1}: {find(layers, '_ws.expert')}"
    protos = [f["_source"]["layers"]["frame"]["frame.protocols"] for f in frames]
    ipoib_protos = [p for p in protos if ":ethertype" in p]
    assert any(p.endswith("infiniband:ethertype:arp") for p in ipoib_protos)
    assert any(":infiniband:ethertype:ip:icmp" in p for p in ipoib_protos)
    assert sum(":infiniband:ethertype:ip:udp" in p for p in ipoib_protos) == 2
    # the fields tshark reads are the ones on the wire: the multicast datagram's DLID and DGID
    udp = [f["_source"]["layers"] for f in frames if ":ip:udp" in f["_source"]["layers"]["frame"]["frame.protocols"]]
    mc = [lay for lay in udp if find(lay, "ip.dst") == [GROUP]]
    assert len(mc) == 1
    mlid = _ifc(net, "node0003").groups[GROUP_MGID].mlid
    assert int(find(mc[0], "infiniband.lrh.dlid")[0], 0) == mlid
    assert ipaddress.IPv6Address(find(mc[0], "infiniband.grh.dgid")[0]) == ipaddress.IPv6Address(GROUP_MGID)


# -- 10. bad input to every parser of the layer -----------------------------------------------------


_FUZZ = {}


def _fuzz_net():
    if "net" not in _FUZZ:
        net = _net()
        assert net.ping("node0001", "node0002").received == 1
        _FUZZ["net"] = net
    return _FUZZ["net"]


SRC_IP, DST_IP = _ip("198.18.0.1"), _ip("198.18.0.2")


def _valid_bodies():
    """One well-formed body per parser: (ethertype, body)."""
    a1 = _link_addr(0x48, bytes.fromhex("fe800000000000000000000000100001"))
    arp = encap.IPoIBArp(oper=encap.ARP_REQUEST, sha=a1, spa=SRC_IP, tha=bytes(20), tpa=DST_IP).pack()
    icmp = inet.build_ipv4(SRC_IP, DST_IP, inet.IPPROTO_ICMP, inet.build_icmp_echo(7, 1, b"abcdefgh"))
    udp = inet.build_ipv4(SRC_IP, DST_IP, inet.IPPROTO_UDP, inet.build_udp(SRC_IP, DST_IP, 1000, 9, b"payload"))
    frag = inet.build_ipv4(SRC_IP, DST_IP, inet.IPPROTO_UDP, b"12345678", mf=True, df=False, ident=99)
    return [(encap.ETHERTYPE_ARP, arp), (encap.ETHERTYPE_IPV4, icmp), (encap.ETHERTYPE_IPV4, udp), (encap.ETHERTYPE_IPV4, frag)]


_ADDRS = [SRC_IP, DST_IP, _ip("198.18.0.3"), _ip("198.18.255.255"), _ip("255.255.255.255"), _ip("224.0.0.1"),
          _ip("239.1.2.3"), _ip("127.0.0.1"), _ip("0.0.0.0"), _ip("10.0.0.1")]


@st.composite
def _ipv4_well_formed(draw):
    """Valid IPv4 headers and checksums around ICMP/UDP/other payloads that are well formed at
    their own level too, so the parsers behind the checksums get exercised."""
    src, dst = draw(st.sampled_from(_ADDRS)), draw(st.sampled_from(_ADDRS))
    proto = draw(st.sampled_from([inet.IPPROTO_ICMP, inet.IPPROTO_UDP, draw(st.integers(0, 255))]))
    data = draw(st.binary(max_size=60))
    if proto == inet.IPPROTO_ICMP:
        if draw(st.booleans()):  # an ICMP error quoting (maybe) one of our datagrams
            quoted = inet.build_ipv4(dst, src, draw(st.sampled_from([1, 17])), draw(st.binary(max_size=12)))
            data = quoted[:draw(st.integers(0, len(quoted)))]
        payload = inet.build_icmp(draw(st.sampled_from([0, 3, 8, 11, 13, draw(st.integers(0, 255))])),
                                  draw(st.integers(0, 15)), data, rest=draw(st.binary(min_size=4, max_size=4)))
    elif proto == inet.IPPROTO_UDP:
        payload = inet.build_udp(src, dst, draw(st.integers(0, 0xFFFF)),
                                 draw(st.sampled_from([9, PORT, draw(st.integers(0, 0xFFFF))])), data)
    else:
        payload = data
    mf, off = draw(st.booleans()), draw(st.sampled_from([0, 0, 1, 8, 8191]))
    return inet.build_ipv4(src, dst, proto, payload, mf=mf and off < 8191, df=False, frag_offset=off,
                           ident=draw(st.integers(0, 3)), ttl=draw(st.integers(0, 255)))


@st.composite
def _ipoib_frames(draw):
    kind = draw(st.sampled_from(["random", "mutated", "ethertype", "ipv4"]))
    if kind == "random":
        return draw(st.binary(max_size=120))
    if kind == "ipv4":
        return bytes(GRH_AREA) + b"\x08\x00\x00\x00" + draw(_ipv4_well_formed())
    if kind == "ethertype":
        et = draw(st.integers(0, 0xFFFF))
        return bytes(GRH_AREA) + et.to_bytes(2, "big") + draw(st.binary(max_size=4)) + draw(st.binary(max_size=80))
    et, body = draw(st.sampled_from(_valid_bodies()))
    body = bytearray(body)
    for _ in range(draw(st.integers(0, 4))):
        if body:
            i = draw(st.integers(0, len(body) - 1))
            body[i] ^= draw(st.integers(1, 255))
    body = bytes(body[:draw(st.integers(0, len(body)))]) + draw(st.binary(max_size=8))
    reserved = draw(st.sampled_from([b"\0\0", b"\xff\xff"]))
    return bytes(GRH_AREA) + et.to_bytes(2, "big") + reserved + body


def _ifc_counts(ifc):
    return dict(ifc.stats), dict(ifc.drops)


def _quiet(net):
    """Run until no node has a NAPI poll or a send pending, so a fuzz example starts clean."""
    for _ in range(20):
        if not any(n._poll_pending or n.hca.outbox for n in net.nodes.values()):
            return
        net.advance(0.0)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=_ipoib_frames(), multicast=st.booleans())
def test_bad_frames_into_the_receive_path_are_dropped_and_counted(frame, multicast):
    net = _fuzz_net()
    _quiet(net)
    node = net.nodes["node0002"]
    ifc = node.ifs["ib0"]
    (s0, d0), ip0 = _ifc_counts(ifc), node.ip.stats("ib0")
    info = RxInfo(slid=net.lid("node0001"), src_qp=0x48, pkey=0xFFFF,
                  sgid=net.devices["node0001"].gid(1) if multicast else None,
                  dgid=BCAST_MGID if multicast else None)
    ifc.rx_frame(frame, info, net.now)  # must not raise
    (s1, d1), ip1 = _ifc_counts(ifc), node.ip.stats("ib0")
    net._service("node0002", net.devices["node0002"])  # whatever it answered goes out
    net.run()
    errs = s1["rx_errors"] - s0["rx_errors"]
    dropped = s1["rx_dropped"] - s0["rx_dropped"]
    new_drops = {k: d1.get(k, 0) - d0.get(k, 0) for k in d1 if d1.get(k, 0) != d0.get(k, 0)}
    to_ip = ip1["rx_packets"] - ip0["rx_packets"]
    if len(frame) < GRH_AREA + 4:
        assert (errs, dropped, to_ip) == (1, 0, 0) and new_drops == {"runt": 1}
        assert s1["rx_packets"] == s0["rx_packets"]
        return
    assert s1["rx_packets"] == s0["rx_packets"] + 1
    assert s1["multicast"] - s0["multicast"] == int(multicast)
    et = int.from_bytes(frame[GRH_AREA:GRH_AREA + 2], "big")
    body = frame[GRH_AREA + 4:]
    if et == encap.ETHERTYPE_IPV4:
        assert (errs, dropped, to_ip) == (0, 0, 1) and new_drops == {}
        # the IP layer accounts for the frame exactly once, and never as a bug of its own
        assert ip1["rx_packets"] == ip1["rx_delivered"] + ip1["rx_errors"] + ip1["rx_dropped"] + ip1["reasm_pending"]
        assert ip1["drops"].get("internal_error", 0) == 0
        try:
            inet.parse_ipv4(body)
        except w.ParseError as exc:  # a bad IPv4 header: an IP-level error under the parser's reason
            assert ip1["drops"].get(exc.kind, 0) == ip0["drops"].get(exc.kind, 0) + 1
            assert ip1["rx_errors"] == ip0["rx_errors"] + 1
    elif et == encap.ETHERTYPE_ARP:
        assert to_ip == 0 and dropped == 0
        try:
            encap.parse_arp(body)
        except w.ParseError as exc:
            assert errs == 1 and new_drops == {"arp_" + exc.kind: 1}
        else:
            assert errs == 0 and new_drops == {}
    else:
        assert (errs, dropped, to_ip) == (0, 1, 0) and new_drops == {f"ethertype_0x{et:04x}": 1}


def _truncated_valid(eb_cut_tail):
    (et, body), cut, tail = eb_cut_tail
    return (et.to_bytes(2, "big") + b"\0\0" + body)[:cut + 4] + tail


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.one_of(st.binary(max_size=100),
                         st.tuples(st.sampled_from(_valid_bodies()), st.integers(0, 80),
                                   st.binary(max_size=6)).map(_truncated_valid)),
       src_qp=st.integers(2, 0xFFFFFF), flip=st.one_of(st.none(), st.integers(0, 200)))
def test_raw_ud_packets_to_the_ipoib_qp_never_raise_and_are_counted(payload, src_qp, flip):
    net = _fuzz_net()
    _quiet(net)
    hca = net.devices["node0002"]
    node = net.nodes["node0002"]
    ifc = node.ifs["ib0"]
    raw = bytearray(w.build_ud_packet(slid=net.lid("node0001"), dlid=net.lid("node0002"), dest_qp=ifc.qpn,
                                      src_qp=src_qp, qkey=w.IPOIB_QKEY, payload=payload))
    if flip is not None and flip < len(raw):
        raw[flip] ^= 0x01  # a damaged packet: the HCA's checks must catch it
    drops0, qp_rx0 = sum(hca.drops.values()), hca.qps[ifc.qpn].received
    nd0 = dict(ifc.netdev.standard.ctx.stats)
    s0, ip0 = dict(ifc.stats), node.ip.stats("ib0")
    hca.receive(1, bytes(raw), net.now)
    assert hca.outbox == []
    node.tick(net.now)  # the NAPI poll hands the frame to the interface
    s1, ip1, nd1 = dict(ifc.stats), node.ip.stats("ib0"), dict(ifc.netdev.standard.ctx.stats)
    net.send_out("node0002")
    net.run()
    delivered = hca.qps[ifc.qpn].received - qp_rx0
    hca_drops = sum(hca.drops.values()) - drops0
    assert delivered + hca_drops == 1  # the HCA dropped it (and counted why) or delivered it
    if flip is not None and flip < len(raw):
        assert hca_drops == 1
    if not delivered:
        assert s1 == s0
        return
    assert nd1["rx_packets"] == nd0["rx_packets"] + 1
    if len(payload) < encap.IPOIB_HDR_LEN:
        assert s1["rx_errors"] == s0["rx_errors"] + 1 and s1["rx_packets"] == s0["rx_packets"]
    else:
        assert s1["rx_packets"] == s0["rx_packets"] + 1
        handled = ((s1["rx_errors"] - s0["rx_errors"]) + (s1["rx_dropped"] - s0["rx_dropped"])
                   + (ip1["rx_packets"] - ip0["rx_packets"]))
        is_arp = payload[:2] == b"\x08\x06"
        assert handled == 1 or (is_arp and handled == 0)  # a good ARP is consumed, nothing to count
    assert ip1["drops"].get("internal_error", 0) == 0
    assert ip1["rx_packets"] == ip1["rx_delivered"] + ip1["rx_errors"] + ip1["rx_dropped"] + ip1["reasm_pending"]


def test_fuzz_left_the_node_working():
    net = _fuzz_net()
    assert net.ping("node0001", "node0002").received == 1
    assert net.ping("node0002", "node0003").received == 1
