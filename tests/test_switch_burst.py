"""The switch's compiled burst forwarding (``fabric._wirefast.forward_burst``) against its per-packet
path: for bursts mixing packets to several ports with every kind the C path hands back (bad VCRC,
VL15, multicast, its own LID, no route, an egress port that is down, a runt, a P_Key an enforcing
port lacks), both must put the same
packets on the same ports in the same order, and count the same. A burst whose packets all leave by
one port is forwarded without a copy: the outgoing segment is the incoming buffer."""

from __future__ import annotations

import random

import pytest

from devnet import Fab
from fabric import wire as w
from fabric.wire.burst import BURST_HEADROOM, LEN, Segment, decode_burst_packets

from fabric.devices import switch as switch_mod

pytestmark = pytest.mark.skipif(switch_mod._forward_burst is None,
                                reason="FABRIC_BACKEND=std: the switch forwards packet by packet only")


def _fab():
    f = Fab("single:4")
    return f, f["sw01"]


def _port_of(f, sw, name):
    return next(n for n, p in sw.ports.items() if n and f.net.peers.get(("sw01", n), ("",))[0] == name)


def _packet(f, dst, size, **kw):
    dlid = dst if isinstance(dst, int) else f.lid(dst)
    return w.build_ud_packet(slid=f.lid("node0001"), dlid=dlid, dest_qp=0x48, src_qp=0x49, qkey=0x1234,
                             payload=bytes(random.randrange(256) for _ in range(size)), **kw)


def _dr(f, *, d: int, hop_ptr: int, hop_cnt: int = 3, out: int = 2) -> bytes:
    """A directed-route SMP passing through the switch (or, with a path naming port 9, not)."""
    path = bytes([0, 1, out, 1]).ljust(64, b"\0")
    smp = w.new_mad(w.SMPDirected, method=w.GET_RESP if d else w.GET, attr_id=w.ATTR_NODE_INFO, tid=random.randrange(1 << 32),
                    hop_cnt=hop_cnt, hop_ptr=hop_ptr, d=d, initial_path=path, return_path=path,
                    dr_slid=w.LID_PERMISSIVE, dr_dlid=w.LID_PERMISSIVE)
    return w.build_ud_packet(slid=w.LID_PERMISSIVE, dlid=w.LID_PERMISSIVE, dest_qp=0, src_qp=0, qkey=0, vl=15,
                             payload=smp.pack())


def _kinds(f, sw):
    """Packet makers by kind; each returns the octets of one packet."""
    bad = lambda p: p[:-1] + bytes([p[-1] ^ 0x5A])  # noqa: E731
    return {
        # directed-route SMPs: through, outgoing and returning; a path naming no port; one that
        # ends here (for the SMA); one with a bad CRC
        "dr_out": lambda: _dr(f, d=0, hop_ptr=1),
        "dr_back": lambda: _dr(f, d=1, hop_ptr=2),
        "dr_noport": lambda: _dr(f, d=0, hop_ptr=1, out=9),
        "dr_here": lambda: _dr(f, d=0, hop_ptr=3),
        "dr_bad": lambda: bad(_dr(f, d=0, hop_ptr=1)),
        "to2": lambda: _packet(f, "node0002", random.randrange(0, 300)),
        "to3": lambda: _packet(f, "node0003", random.randrange(0, 300)),
        "to4": lambda: _packet(f, "node0004", random.randrange(0, 300)),
        "badvcrc": lambda: bad(_packet(f, "node0002", 40)),
        "noroute": lambda: _packet(f, 0x0BAD, 20),
        "mcast": lambda: _packet(f, 0xC001, 20),
        "own": lambda: _packet(f, sw.lid, 20),
        "runt": lambda: bytes(10),
        # to the same port as the run, but not for the C path: VL15, and a PktLen that disagrees
        "vl15to2": lambda: _packet(f, "node0002", 20, vl=15),
        "vl15to3": lambda: _packet(f, "node0003", 20, vl=15),
        "big2": lambda: _packet(f, "node0002", 4200),  # over the egress port's MTU: discarded there
        "badlen2": lambda: _packet(f, "node0002", 20)[:-6] + bytes(4) + _packet(f, "node0002", 20)[-6:],
        # partitions (where the ports enforce them): one the ingress port lacks, one the port to
        # node0003 lacks, one every port has (limited: the switch looks at the partition only)
        "foreign": lambda: _packet(f, "node0002", 30, pkey=0x8005),
        "blue3": lambda: _packet(f, "node0003", 30, pkey=0x8001),
        "blue2": lambda: _packet(f, "node0002", 30, pkey=0x0001),
    }


def _enforce(f, sw):
    """Partition enforcement as an SM sets it (part_enforce both): the ingress port has 0xFFFF and
    0x8001, the port to node0003 only 0xFFFF, the others both."""
    for n, p in sw.ports.items():
        if n:
            p.pkey_enforce_in = p.pkey_enforce_out = 1
            p.pkeys[:2] = [0xFFFF, 0 if n == _port_of(f, sw, "node0003") else 0x8001]
    sw._dirty = True


def _outputs(sw) -> dict:
    """What the switch queued, per egress port, in order (Segments unpacked)."""
    out: dict = {}
    for item in sw.outbox:
        if type(item) is Segment:
            out.setdefault(item.port, []).extend(bytes(p) for p in decode_burst_packets(item.buf, BURST_HEADROOM,
                                                                                        item.count))
        else:
            out.setdefault(item[0], []).append(bytes(item[1]))
    sw.outbox.clear()
    return out


def _unicast_data(p: bytes) -> bool:
    return p[0] >> 4 != 15 and ((p[2] << 8) | p[3]) < 0xC000


def _state(sw):
    return dict(sw.drops), {n: dict(p.counters.pc) for n, p in sw.ports.items()}


def _burst(packets, *, inplace: bool):
    body = b"".join(LEN.pack(len(p)) + p for p in packets)
    return bytearray(BURST_HEADROOM) + body if inplace else bytes(BURST_HEADROOM) + body


@pytest.mark.parametrize("seed", range(50))
def test_compiled_forwarding_equals_the_per_packet_path(seed):
    random.seed(seed)
    fa, swa = _fab()
    fb, swb = _fab()
    in_port = _port_of(fa, swa, "node0001")
    if seed % 4 == 3:  # an egress port down: its packets are discarded, counted at that port
        down = _port_of(fa, swa, "node0004")
        for sw in (swa, swb):
            sw.set_link(down, False, fa.net.now)
            sw.events.clear()
    if seed % 5 == 4:
        _enforce(fa, swa)
        _enforce(fb, swb)
    if seed % 7 == 6:  # the ingress port Armed: data packets take the per-packet path (and make it
        for sw in (swa, swb):  # Active), directed-route SMPs still pass in C
            sw.ports[in_port].state = 3
            sw._dirty = True
    kinds = _kinds(fa, swa)
    names = list(kinds)
    # runs of one destination (the copy-free case) broken at random by the other kinds
    lead = random.choice(["to2", "to3", "blue2"] if seed % 5 == 4 else ["to2", "to3"])
    seq = [lead] * random.randrange(0, 20) + [random.choice(names) for _ in range(random.randrange(0, 12))]
    seq += [lead] * random.randrange(0, 5)
    packets = [kinds[k]() for k in seq]
    swa.outbox.clear()
    swb.outbox.clear()
    inplace = bool(seed % 2)
    swa.receive_burst(in_port, _burst(packets, inplace=inplace), BURST_HEADROOM, len(packets), fa.net.now)
    swb._receive_each(in_port, bytes(_burst(packets, inplace=False)), BURST_HEADROOM, len(packets), fb.net.now)
    got, want = _outputs(swa), _outputs(swb)
    # the same packets on each port; unicast data in the same order (VL15 and multicast, which the
    # C path hands to the per-packet one, may leave after the burst's unicast: IB orders neither
    # against the unicast data of VL0)
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}, seq
    assert {k: [p for p in v if _unicast_data(p)] for k, v in got.items()} == \
        {k: [p for p in v if _unicast_data(p)] for k, v in want.items()}, seq
    assert _state(swa) == _state(swb), seq
    if seed % 5 == 4 and ("foreign" in seq or "blue3" in seq):
        assert swa.drops["pkey_inbound"] + swa.drops["pkey_outbound"] >= 1, seq  # it did enforce


@pytest.mark.parametrize("inplace", [True, False])
def test_a_burst_to_one_port_is_forwarded_without_a_copy(inplace):
    f, sw = _fab()
    in_port = _port_of(f, sw, "node0001")
    packets = [_packet(f, "node0003", n) for n in (0, 100, 2000, 7)]
    burst = _burst(packets, inplace=inplace)
    sw.outbox.clear()
    sw.receive_burst(in_port, burst, BURST_HEADROOM, len(packets), f.net.now)
    (seg,) = sw.outbox
    assert seg.port == _port_of(f, sw, "node0003") and seg.count == 4
    assert (seg.buf is burst) == inplace  # a bytes burst cannot be given away: it is copied, once
    assert list(map(bytes, decode_burst_packets(seg.buf, BURST_HEADROOM, 4))) == packets


def test_enforcement_set_and_cleared_port_by_port_is_what_the_c_path_checks():
    """As a sweep's PortInfo Sets do it, one port at a time (``_mark``, no full refresh): the C
    path enforces on a port from the Set that turns it on, and stops at the Set that turns it off."""
    random.seed(7)
    fa, swa = _fab()
    fb, swb = _fab()
    in_port = _port_of(fa, swa, "node0001")
    kinds = _kinds(fa, swa)
    seq = ["foreign", "blue3", "blue2", "to2", "to3", "foreign", "to4"]
    for step in ("on", "ingress off", "all off"):
        for sw in (swa, swb):
            for n, p in sw.ports.items():
                if not n:
                    continue
                if step == "on":
                    p.pkey_enforce_in = p.pkey_enforce_out = 1
                    p.pkeys[:2] = [0xFFFF, 0 if n == _port_of(fa, sw, "node0003") else 0x8001]
                elif step == "all off" or n == in_port:
                    p.pkey_enforce_in = p.pkey_enforce_out = 0
                sw._mark(n)
        packets = [kinds[k]() for k in seq]
        swa.outbox.clear()
        swb.outbox.clear()
        swa.receive_burst(in_port, _burst(packets, inplace=True), BURST_HEADROOM, len(packets), fa.net.now)
        swb._receive_each(in_port, bytes(_burst(packets, inplace=False)), BURST_HEADROOM, len(packets), fb.net.now)
        assert _outputs(swa) == _outputs(swb), step
        assert _state(swa) == _state(swb), step
        refused = (swa.drops["pkey_inbound"], swa.drops["pkey_outbound"])
        if step == "on":  # the ingress port refuses both foreign packets, node0003's port blue3
            assert refused == (2, 1), dict(swa.drops)
        elif step == "ingress off":  # now node0002's port refuses the foreign ones on their way out
            assert refused == (2, 4), dict(swa.drops)
        else:
            assert refused == (2, 4), dict(swa.drops)  # nothing refused any more
