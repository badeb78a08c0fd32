"""ibsim's client protocol on our HCA ports (fabric/simproto): the layouts, the endpoint's behaviour
driven directly over an in-process fabric (sans-IO), and its sockets in a real fabric under hostile
datagrams. The real tools through the shim are in test_ibsim_tools.py and test_opensm_fabric.py."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric import Fabric
from fabric import wire as w
from fabric.simproto import wire as sw
from fabric.simproto.endpoint import TID_HI_SHIFT, SimEndpoint
from fabric.wire import smp_attrs as sa
from smnet import SmNet

# -- layouts ----------------------------------------------------------------------------------------


def test_layouts_are_the_shims():
    assert sw.CTL.size == 80 and sw.REQUEST.size == 288
    raw = sw.Request(dlid=0x1234, slid=0xFFFF, dqp=1, sqp=0x48, status=110, length=256, mad=b"m").pack()
    # htons values in 32-bit fields, the QPNs and status htonl, 4 octets of padding, a big-endian u64
    assert raw[0:4] == b"\x12\x34\x00\x00" and raw[4:8] == b"\xff\xff\x00\x00"
    assert raw[8:12] == b"\x00\x00\x00\x01" and raw[12:16] == b"\x00\x00\x00\x48"
    assert raw[16:20] == (110).to_bytes(4, "big") and raw[20:24] == bytes(4)
    assert raw[24:32] == (256).to_bytes(8, "big") and raw[32:33] == b"m"
    assert sw.Request.unpack(raw) == sw.Request(0x1234, 0xFFFF, 1, 0x48, 110, 256, b"m".ljust(256, b"\0"))
    ctl = sw.Ctl(3, sw.CTL_GET_PKEYS, 64, b"x").pack()
    assert ctl[:16] == struct.pack("<IIII", 0xDEADBEEF, 3, sw.CTL_GET_PKEYS, 64)
    with pytest.raises(sw.SimProtoError, match="magic"):
        sw.Ctl.unpack(b"\0" * 80)
    with pytest.raises(sw.SimProtoError, match="287 octets"):
        sw.Request.unpack(bytes(287))


# -- the endpoint, sans-IO ---------------------------------------------------------------------------


class Rig:
    """An endpoint on node0003 of fattree:2,2,2,1 (our SM on node0001), its clients' mailboxes."""

    def __init__(self):
        self.net = SmNet("fattree:2,2,2,1")
        self.net.start_sm()
        self.hca = self.net.devices["node0003"]
        self.got: dict[int, list] = {}
        self.quiet: list = []  # what on_data returned for each request
        self.ep = SimEndpoint(self.hca, 1, {"node0003", "nick"},
                              send=lambda i, d: self.got.setdefault(i, []).append(sw.Request.unpack(d)))

    def ctl(self, clientid, typ, data=b""):
        raw = self.ep.on_ctl(sw.Ctl(clientid, typ, len(data), data).pack(), self.net.now)
        return sw.Ctl.unpack(raw)

    def connect(self, pid=4242, issm=0, node="node0003") -> int:
        r = self.ctl(0, sw.CTL_CONNECT, sw.CLIENT_INFO.pack(pid, 0, issm, node.encode()))
        assert r.type == sw.CTL_CONNECT, "connect refused"
        return sw.client_info(r.data)[0]

    def request(self, index, mad: bytes, dlid=0xFFFF, dqp=0):
        self.quiet.append(self.ep.on_data(index, sw.Request(dlid, 0xFFFF if dlid == 0xFFFF else 0, dqp, 0, 0, 256,
                                                            mad).pack(), self.net.now))
        self.net.send_out("node0003")
        self.net.run()
        return self.got.get(index, [])


@pytest.fixture
def rig():
    return Rig()


def test_connect_describes_the_node_and_refuses_what_ibsim_refuses(rig):
    i = rig.connect(node="nick")  # SIM_HOST may be any of the node's names
    assert i == 0
    ni = w.NodeInfo.unpack(rig.ctl(i, sw.CTL_GET_NODEINFO).data[:40])
    assert (ni.node_guid, ni.node_type, ni.local_port) == (rig.hca.node_guid, 1, 1)
    pi = w.PortInfo.unpack(rig.ctl(i, sw.CTL_GET_PORTINFO, b"\0").data)
    assert (pi.lid, pi.master_sm_lid, pi.port_state) == (rig.hca.ports[1].lid, rig.hca.ports[1].sm_lid,
                                                          sa.PORT_ACTIVE)
    pkeys = rig.ctl(i, sw.CTL_GET_PKEYS).data
    assert pkeys[:2] == b"\xff\xff"
    assert struct.unpack("<HB", rig.ctl(i, sw.CTL_GET_PORT).data[:3]) == (rig.hca.ports[1].lid, sa.PORT_ACTIVE)
    # another node's name, an eleventh client, a second SM: refused with an ERROR reply
    assert rig.ctl(0, sw.CTL_CONNECT, sw.CLIENT_INFO.pack(1, 0, 0, b"node0004")).type == sw.CTL_ERROR
    for n in range(1, 10):
        rig.connect(pid=5000 + n, issm=int(n == 1))
    assert rig.ctl(0, sw.CTL_CONNECT, sw.CLIENT_INFO.pack(9999, 0, 0, b"")).type == sw.CTL_ERROR
    assert rig.ctl(3, sw.CTL_SET_ISSM, struct.pack("<i", 1)).type == sw.CTL_ERROR  # client 1 is the SM
    assert rig.ctl(42, sw.CTL_GET_NODEINFO).type == sw.CTL_ERROR  # no such client
    assert rig.ctl(0, 77).type == sw.CTL_ERROR  # no such type
    assert rig.ep.on_ctl(b"short", rig.net.now) is None


def test_set_issm_is_the_capability_bit_and_goes_with_the_client(rig):
    i = rig.connect()
    port = rig.hca.ports[1]
    assert not port.capability_mask & sa.CAP_IS_SM
    assert rig.ctl(i, sw.CTL_SET_ISSM, struct.pack("<i", 1)).type == sw.CTL_SET_ISSM
    assert port.capability_mask & sa.CAP_IS_SM
    assert rig.ctl(i, sw.CTL_DISCONNECT).type == sw.CTL_DISCONNECT
    assert not port.capability_mask & sa.CAP_IS_SM and not rig.ep.clients


def test_a_directed_route_smp_walks_the_switches_and_its_answer_finds_its_client(rig):
    i = rig.connect()
    j = rig.connect(pid=4343)
    path = bytes([0, 1, 3]).ljust(64, b"\0")  # node0003 -> leaf02 -> out of port 3: a spine
    smp = w.new_mad(w.SMPDirected, method=w.GET, tid=0x1234_5678, attr_id=w.ATTR_NODE_INFO, hop_cnt=2,
                    dr_slid=0xFFFF, dr_dlid=0xFFFF, initial_path=path)
    got = rig.request(j, smp.pack())
    assert i not in rig.got and len(got) == 1
    resp = w.parse_mad(got[0].mad)
    assert resp.method == w.GET_RESP and resp.status == 0 and resp.d == 1
    assert resp.tid == 0x1234_5678 | (j << TID_HI_SHIFT)  # the client's index in the high bits
    spine = w.NodeInfo.unpack(resp.data[:40])
    peer = rig.net.topology.peer("leaf02", 3)
    assert spine.node_guid == rig.net.devices[peer[0]].node_guid and spine.local_port == peer[1]
    assert rig.ep.stats["to_clients"] == 1 and not rig.ep.pending


def test_a_pma_query_by_lid_and_an_sa_query_are_answered(rig):
    i = rig.connect()
    target = rig.net.devices["node0001"]
    pma = w.new_mad(w.PMAMad, method=w.GET, tid=7, attr_id=w.ATTR_PORT_COUNTERS,
                    data=w.put_attr(w.PortCounters(port_select=1), 192))
    got = rig.request(i, pma.pack(), dlid=target.ports[1].lid, dqp=1)
    resp = w.parse_mad(got[-1].mad)
    assert resp.mgmt_class == w.CLASS_PERF and resp.method == w.GET_RESP and resp.status == 0
    assert got[-1].slid == target.ports[1].lid and got[-1].sqp == 1


def test_a_request_that_cannot_leave_comes_back_at_once_with_status_110(rig):
    i = rig.connect()
    pma = w.new_mad(w.PMAMad, method=w.GET, tid=8, attr_id=w.ATTR_PORT_COUNTERS,
                    data=w.put_attr(w.PortCounters(port_select=1), 192))
    got = rig.request(i, pma.pack(), dlid=0, dqp=1)  # no destination
    assert got[-1].status == sw.STATUS_TIMEOUT
    rig.net.set_link("node0003", 1, False)
    smp = w.new_mad(w.SMPDirected, method=w.GET, tid=9, attr_id=w.ATTR_NODE_INFO, hop_cnt=1,
                    dr_slid=0xFFFF, dr_dlid=0xFFFF, initial_path=bytes([0, 1]).ljust(64, b"\0"))
    got = rig.request(i, smp.pack())
    assert got[-1].status == sw.STATUS_TIMEOUT and rig.ep.stats["refused_sends"] == 2


def test_traps_and_sa_requests_go_to_the_client_that_is_sm():
    rig = Rig()
    # the endpoint on the SM's own node: an SM client there takes what an SM takes
    net = rig.net
    sm_hca = net.devices["node0001"]
    got = []
    ep = SimEndpoint(sm_hca, 1, {"node0001"}, send=lambda i, d: got.append((i, sw.Request.unpack(d))))
    ep.on_ctl(sw.Ctl(0, sw.CTL_CONNECT, 44, sw.CLIENT_INFO.pack(1, 0, 1, b"node0001")).pack(), net.now)
    # an SA query from node0004 (an IPoIB-like client: our test helper) reaches the SM client
    from fabric.mad import saclient

    _tid, mad = saclient.node_records()
    n4 = net.devices["node0004"]
    n4.post_send(1, dlid=sm_hca.ports[1].lid, dest_qp=1, payload=mad, qkey=w.QKEY_GSI, now=net.now)
    net.inject("node0004")
    assert got and got[-1][1].mad[1] == w.CLASS_SUBN_ADM and got[-1][1].slid == n4.ports[1].lid
    # a cable pulled: the leaf's Trap 128 reaches the SM client
    before = len(got)
    assert net.topology.peer("leaf01", 2)[0] == "node0002"  # not the SM's own cable
    net.set_link("leaf01", 2, False)
    traps = [r for _, r in got[before:] if r.mad[1] == w.CLASS_SUBN_LID and r.mad[3] == w.TRAP]
    assert traps, [r.mad[:4] for _, r in got[before:]]


# -- the sockets in a real fabric ---------------------------------------------------------------------


def _abstract(name):
    return b"\0" + name.encode() + b"\0"


class RawClient:
    """What libumad2sim.so does, in Python: for probing the server with exact and hostile datagrams."""

    def __init__(self, base, node, pid=None):
        self.base, self.pid = base, pid or os.getpid()
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ctl.settimeout(5)
        self.ctl.bind(_abstract(f"{base}:ctl{self.pid}"))
        self.ctl.connect(_abstract(f"{base}:ctl"))
        self.data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.data.settimeout(5)
        self.data.bind(_abstract(f"{base}:in{self.pid}"))
        self.ctl.send(sw.Ctl(0, sw.CTL_CONNECT, 44, sw.CLIENT_INFO.pack(self.pid, 0, 0, node.encode())).pack())
        r = sw.Ctl.unpack(self.ctl.recv(100))
        assert r.type == sw.CTL_CONNECT
        self.index = sw.client_info(r.data)[0]
        self.data.connect(_abstract(f"{base}:out{self.index}"))

    def nodeinfo(self, path, tid):
        smp = w.new_mad(w.SMPDirected, method=w.GET, tid=tid, attr_id=w.ATTR_NODE_INFO, hop_cnt=len(path) - 1,
                        dr_slid=0xFFFF, dr_dlid=0xFFFF, initial_path=bytes(path).ljust(64, b"\0"))
        self.data.send(sw.Request(0xFFFF, 0xFFFF, 0, 0, 0, 256, smp.pack()).pack())
        return w.parse_mad(sw.Request.unpack(self.data.recv(400)).mad)

    def close(self):
        self.ctl.send(sw.Ctl(self.index, sw.CTL_DISCONNECT, 0, b"").pack())
        self.ctl.recv(100)
        self.ctl.close()
        self.data.close()


@pytest.fixture(scope="module")
def live():
    with Fabric("fattree:2,2,2,1", node_software="none") as fab:
        ep = fab.client.call("node0002", "sim_endpoint")
        yield fab, ep["sockname"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["ctl", "data"]), st.binary(max_size=400)), max_size=12))
def test_hostile_datagrams_never_hurt_the_fabric(live, datagrams):
    fab, base = live
    c = RawClient(base, "node0002")
    try:
        junk = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for where, raw in datagrams:
            if where == "ctl":
                junk.sendto(raw, _abstract(f"{base}:ctl"))
            else:
                c.data.send(raw)
        junk.close()
        time.sleep(0.01)
        # a proper client is still served, and the device host is alive
        assert c.nodeinfo((0, 1), 0x77).method == w.GET_RESP
    finally:
        c.close()
    assert fab.client.call("node0002", "sim_status")["node0002"]["clients"] == []


def test_a_client_that_dies_is_detached(live):
    fab, base = live
    c = RawClient(base, "node0002", pid=os.getpid() + 1_000_000)  # a pid that does not exist
    try:
        end = time.monotonic() + 5
        while fab.client.call("node0002", "sim_status")["node0002"]["clients"]:
            assert time.monotonic() < end, "a client whose process is gone stays attached"
            time.sleep(0.1)
    finally:
        c.ctl.close()
        c.data.close()


# -- the compiled request and answer against the Python path -----------------------------------------


def _wire_and_datagrams(compiled: bool, monkeypatch) -> tuple:
    """What node0003's HCA put on the wire and what its clients got for a set of requests, with
    the compiled octet paths or without them."""
    from fabric.devices import hca as hca_mod
    from fabric.simproto import endpoint

    if not compiled:
        from fabric.devices import base as base_mod

        monkeypatch.setattr(endpoint.SimEndpoint, "on_data", endpoint.SimEndpoint.on_data_py)
        monkeypatch.setattr(endpoint.SimEndpoint, "take_dr_answer", endpoint.SimEndpoint.take_dr_answer_py)
        monkeypatch.setattr(hca_mod, "_dr_request_packet", None)
        monkeypatch.setattr(hca_mod, "send_dr_packet", hca_mod.send_dr_packet_py)
        monkeypatch.setattr(hca_mod.HCA, "_smp_fast", hca_mod.HCA._smp_fast_py)  # the HCA's dispatch
        monkeypatch.setattr(base_mod.Device, "sma_fast", base_mod.Device.sma_fast_py)  # the SMAs' answers
    rig = Rig()
    wire = []  # what the HCA put on its outbox, as it leaves (whichever path put it there)
    orig = rig.net.send_out

    def send_out(name, *a, **kw):
        if name == "node0003":
            wire.extend((port, bytes(raw)) for port, raw in rig.hca.outbox)
        return orig(name, *a, **kw)

    rig.net.send_out = send_out
    i = rig.connect()
    j = rig.connect(pid=4343)

    def dr(tid, path, **kw):
        return w.new_mad(w.SMPDirected, method=w.GET, tid=tid, attr_id=w.ATTR_NODE_INFO, hop_cnt=len(path) - 1,
                         dr_slid=0xFFFF, dr_dlid=0xFFFF, initial_path=bytes(path).ljust(64, b"\0"), **kw).pack()
    rig.request(j, dr(0xFFFF_1234_5678_9ABC, [0, 1, 3]))  # the client's index replaces the TID's top 16 bits
    rig.request(i, dr(5, [0, 1, 3, 1]))
    rig.request(i, dr(6, [0, 1], attr_mod=0))
    rig.request(i, dr(7, [0, 9]))  # out of a port the HCA lacks: dropped, bounced with status 110
    rig.net.set_link("node0003", 1, False)
    rig.request(j, dr(8, [0, 1]))  # the port is down: bounced with status 110
    ep = rig.ep
    pc = rig.hca.ports[1].counters.pc
    return (wire, {k: [r.pack() for r in v] for k, v in rig.got.items()}, dict(ep.stats), dict(rig.hca.drops),
            rig.quiet, [(c.sent, c.received) for c in ep.clients.values()], sorted(ep.pending), len(ep.rtts),
            (pc["port_xmit_pkts"], pc["port_xmit_data"], pc["port_xmit_discards"]))


def test_the_compiled_request_and_answer_are_the_python_paths_octets(monkeypatch):
    from fabric.simproto import endpoint

    assert endpoint.SimEndpoint.on_data is not endpoint.SimEndpoint.on_data_py or endpoint._simfast is None
    if endpoint._simfast is None:
        pytest.skip("the compiled wire helpers are not built (FABRIC_BACKEND=std)")
    fast = _wire_and_datagrams(True, monkeypatch)
    monkeypatch.undo()
    slow = _wire_and_datagrams(False, monkeypatch)
    assert fast == slow
    wire, got, stats, drops, quiet, counts, pending, rtts, xmit = fast
    assert len(wire) == 3 and xmit[2] == 1 and stats["refused_sends"] == 2 and drops["dr_originate"] == 1
    assert quiet == [True] * 5 and counts == [(3, 3), (2, 2)] and rtts == 3 and not pending
    assert [sw.Request.unpack(d).status for d in got[0]] == [0, 0, sw.STATUS_TIMEOUT]
    assert w.parse_mad(sw.Request.unpack(got[1][0]).mad).tid == 0x1234_5678_9ABC | (1 << TID_HI_SHIFT)


def test_only_a_plain_directed_route_request_takes_the_compiled_path():
    from fabric.simproto.endpoint import _simfast as simfast

    if simfast is None:
        pytest.skip("the compiled wire helpers are not built (FABRIC_BACKEND=std)")
    smp = w.new_mad(w.SMPDirected, method=w.GET, tid=1, attr_id=w.ATTR_NODE_INFO, hop_cnt=1, dr_slid=0xFFFF,
                    dr_dlid=0xFFFF, initial_path=bytes([0, 2]).ljust(64, b"\0")).pack()
    ok = sw.Request(0xFFFF, 0xFFFF, 0, 0, 0, 256, smp).pack()
    tid, port, packet = simfast.sim_dr_request(ok, 3)
    assert (tid, port, len(packet)) == (1 | 3 << TID_HI_SHIFT, 2, 290)

    def spoiled(offset, value):
        m = bytearray(smp)
        m[offset] = value
        return sw.Request(0xFFFF, 0xFFFF, 0, 0, 0, 256, bytes(m)).pack()
    for offset, value in [(0, 2), (1, 0x01), (3, 0x81), (4, 0x80), (6, 1), (7, 0), (7, 64), (32, 0), (35, 0x7F)]:
        assert simfast.sim_dr_request(spoiled(offset, value), 3) is None, (offset, value)
    assert simfast.sim_dr_request(ok[:-1], 3) is None and simfast.sim_dr_request(ok, 1 << 16) is None


# -- the data sockets in C against SimServer's Python ------------------------------------------------


class _Server:
    """What SimServer gives its senders: the sockets, the drop count, the detach."""

    def __init__(self, outs):
        self.outs, self.dropped, self.gone = outs, 0, []

    def _unreachable(self, index, err):
        self.gone.append((index, err))

    from fabric.simproto.server import SimServer

    _send = SimServer._send


def _pair(tag):
    """A data socket bound as the server's, connected to a client socket bound as the shim's."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    name = f"\0ibf-test-{os.getpid()}-{tag}"
    cli.bind(name + ":in")
    srv.bind(name + ":out")
    srv.connect(name + ":in")
    return srv, cli


@pytest.mark.parametrize("compiled", [True, False])
def test_a_full_client_socket_drops_and_a_closed_one_detaches(compiled):
    """A client that does not read loses what does not fit (counted, UD semantics), and one whose
    socket is gone is reported once per refused send: the C sender as SimServer._send."""
    from fabric.simproto.endpoint import _simfast

    if compiled and _simfast is None:
        pytest.skip("the compiled wire helpers are not built (FABRIC_BACKEND=std)")
    srv, cli = _pair(f"full{int(compiled)}")
    server = _Server([srv])
    send = _simfast.Datagrams(server, None, [srv.fileno()]).send if compiled else \
        (lambda i, d: server._send(i, d))
    try:
        datagram = bytes(range(256)) + bytes(32)
        sent = 0
        while server.dropped == 0 and sent < 100_000:
            send(0, datagram)
            sent += 1
        assert server.dropped == 1 and sent > 1  # the buffer filled, then one was lost
        got = cli.recv(1024)
        assert got == datagram  # what did go is whole
        cli.close()
        send(0, datagram)
        assert len(server.gone) == 1 and server.gone[0][0] == 0
    finally:
        srv.close()
        if cli.fileno() >= 0:
            cli.close()


def _reader_run(compiled: bool) -> tuple:
    """70 datagrams from a client (a plain directed-route request each, a short datagram among
    them, one out of a port the HCA lacks) through the C reader or SimServer._on_data: what each
    read returned, the endpoint's counts, what went on the HCA's outbox, what the client got back,
    and the datagrams left unread after each read."""
    from fabric.simproto.endpoint import _simfast
    from fabric.simproto.server import SimServer

    rig = Rig()
    srv, cli = _pair(f"reader{int(compiled)}")
    try:
        i = rig.connect()
        if compiled:
            dg = _simfast.Datagrams(None, rig.ep, [srv.fileno()] * (i + 1))
            read = dg.reader(i)
        else:
            server = SimServer.__new__(SimServer)
            server.outs, server.endpoint = [srv] * (i + 1), rig.ep
            read = lambda now: server._on_data(i, now)  # noqa: E731
        cli.connect(srv.getsockname())  # the test's client writes to the server's socket
        for k in range(70):
            if k == 10:
                cli.send(b"short")  # not a sim_request: counted by the Python path
                continue
            path = [0, 9] if k == 20 else [0, 1, 3]  # port 9: refused, bounced with status 110
            mad = w.new_mad(w.SMPDirected, method=w.GET, tid=1000 + k, attr_id=w.ATTR_NODE_INFO,
                            hop_cnt=len(path) - 1, dr_slid=0xFFFF, dr_dlid=0xFFFF,
                            initial_path=bytes(path).ljust(64, b"\0")).pack()
            cli.send(sw.Request(0xFFFF, 0xFFFF, 0, 0, 0, 256, mad).pack())
        results, outboxes = [], []
        for _ in range(3):
            results.append(read(rig.net.now))
            outboxes.append(len(rig.hca.outbox))
        wire = [(port, bytes(raw)) for port, raw in rig.hca.outbox]
        rig.net.send_out("node0003")
        rig.net.run()
        got = [r.pack() for r in rig.got.get(i, [])]
        if compiled:  # closed: nothing is read any more, nothing is sent
            dg.close()
            cli.send(sw.Request(0xFFFF, 0xFFFF, 0, 0, 0, 256, bytes(256)).pack())
            assert read(rig.net.now) is True and rig.ep.stats["bad_requests"] == 1
            dg.send(i, b"x" * 288)
            cli.setblocking(False)
            with pytest.raises(BlockingIOError):
                cli.recv(1024)
        return results, outboxes, dict(rig.ep.stats), wire, got, dict(rig.hca.drops)
    finally:
        srv.close()
        cli.close()


def test_the_compiled_reader_reads_what_the_python_one_does():
    """The device host's C reader of a client's socket (``Datagrams.reader``) takes what
    ``SimServer._on_data`` takes, 64 datagrams a read, with the same effects: the same requests
    on the wire, the same answers and bounces back, the same counts."""
    from fabric.simproto.endpoint import _simfast

    if _simfast is None:
        pytest.skip("the compiled wire helpers are not built (FABRIC_BACKEND=std)")
    fast, slow = _reader_run(True), _reader_run(False)
    assert fast == slow
    results, outboxes, stats, wire, got, drops = fast
    assert results == [False, True, True]  # the first read's short one called into Python: not quiet
    assert outboxes[0] == 62 and outboxes[1] == 68 and outboxes[2] == 68  # 64 read, of which 62 sent
    assert stats["requests"] == 69 and stats["bad_requests"] == 1 and stats["refused_sends"] == 1
    assert drops["dr_originate"] == 1 and len(wire) == 68
    assert len(got) == 69 and sum(sw.Request.unpack(d).status == sw.STATUS_TIMEOUT for d in got) == 1
