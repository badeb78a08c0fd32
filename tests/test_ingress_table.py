"""The HCA's receive checks are one table (fabric.devices.ingress.HCA_INGRESS) that both receive
paths follow: the per-packet path in Python and the compiled path the fast provider installs
(``hca.rx_accel``). For every entry of the table, a packet that fails that check and no other is
handed to node0002 inside a link burst, once on each backend; each must drop it for exactly that
reason and count it in exactly the same port counters."""

from __future__ import annotations

import pytest

from devnet import patch, with_crcs
from fabric import wire as w
from fabric.devices.ingress import BY_REASON, HCA_INGRESS
from fabric.wire import smp_attrs as sa
from fabric.wire.burst import LEN
from ipnet import IpNet
from ipoib import _stdpath, encap, inet

_fastpath = pytest.importorskip("ipoib._fastpath")

BCAST_MGID = w.ipoib_broadcast_mgid(0xFFFF)


class Rig:
    """single:2 with IPoIB up; packets for node0002's ib0 built by hand."""

    def __init__(self, backend):
        self.net = IpNet("single:2", backend=backend).up()
        self.hca = self.net.devices["node0002"]
        self.ifc = self.net.nodes["node0002"].ifs["ib0"]
        self.lid = self.net.lid("node0002")
        self.slid = self.net.lid("node0001")
        self.src_qp = self.net.nodes["node0001"].ifs["ib0"].qpn
        self.mlid = self.ifc.groups[BCAST_MGID].mlid

    def frame(self) -> bytes:
        src, dst = inet.ip4(self.net.ip("node0001")), inet.ip4(self.net.ip("node0002"))
        return encap.IPoIBHeader(ethertype=encap.ETHERTYPE_IPV4).pack() + inet.build_ipv4(
            src, dst, inet.IPPROTO_UDP, inet.build_udp(src, dst, 4000, 4001, bytes(20)))

    def packet(self, **kw) -> bytes:
        args = dict(slid=self.slid, dlid=self.lid, dest_qp=self.ifc.qpn, src_qp=self.src_qp,
                    qkey=w.IPOIB_QKEY, payload=self.frame())
        args.update(kw)
        return w.build_ud_packet(**args)

    def state(self):
        port = self.hca.ports[1]
        return (dict(self.hca.drops), dict(port.counters.pc), port.p_key_violations, port.q_key_violations)

    def feed(self, pkt: bytes) -> None:
        """A valid packet, then ``pkt``, in one link burst (so the compiled path sees both)."""
        good = self.packet()
        data = LEN.pack(len(good)) + good + LEN.pack(len(pkt)) + pkt
        self.hca.receive_burst(1, data, 0, 2, self.net.now)
        self.net.send_out("node0002")
        self.net.run()


def _set_lrh_byte(pkt, i, fn):
    return patch(pkt, i, bytes([fn(pkt[i])]))


def _short_grh(pkt):
    """LNH says a GRH follows, but after the LRH there are only a BTH and a DETH (LRH.PktLen agrees)."""
    body = bytearray(pkt[:8 + 12 + 8])
    body[1] |= 3
    words = (len(body) + 4) // 4  # up to and including the ICRC
    body[4], body[5] = (body[4] & 0xF8) | (words >> 8), words & 0xFF
    return with_crcs(bytes(body))


def _grh_packet(rig, **kw):
    return rig.packet(sgid=rig.net.devices["node0001"].gid(1), dgid=rig.hca.gid(1), **kw)


# reason -> (how to build a packet that fails that check alone, how to set the HCA up for it)
RECIPES = {
    "malformed": lambda r: r.packet()[:-4],  # shorter than LRH.PktLen says
    "vcrc": lambda r: (lambda p: p[:-1] + bytes([p[-1] ^ 0x5A]))(r.packet()),
    "lver": lambda r: _set_lrh_byte(r.packet(), 0, lambda b: b | 0x01),
    "lnh": lambda r: _set_lrh_byte(r.packet(), 1, lambda b: b & ~3),  # LNH 0: raw, not IBA
    # LNH says a GRH follows, but the packet is too short to hold one
    "truncated": lambda r: _short_grh(r.packet()),
    "pktlen": lambda r: patch(_grh_packet(r), 8 + 4, b"\x00\x10"),  # GRH.PayLen
    "icrc": lambda r: patch(r.packet(), len(r.packet()) - 6, b"\x00\x00\x00\x00", crcs="vcrc"),
    "grh": lambda r: patch(_grh_packet(r), 8, bytes([0x40 | (_grh_packet(r)[8] & 0x0F)])),  # IPVer 4
    "opcode": lambda r: patch(r.packet(), 8, b"\x04"),  # RC SEND only
    "tver": lambda r: patch(r.packet(), 9, bytes([r.packet()[9] | 0x01])),
    "padcnt": lambda r: patch(r.packet(payload=b""), 9, bytes([r.packet(payload=b"")[9] | 0x30])),
    "mlid_not_joined": lambda r: r.packet(dlid=0xC0FE, dest_qp=w.QPN_MULTICAST, sgid=r.net.devices["node0001"].gid(1),
                                          dgid=BCAST_MGID),
    "mcast_needs_qp_ffffff_and_grh": lambda r: r.packet(dlid=r.mlid, dest_qp=w.QPN_MULTICAST),
    "permissive_dlid_not_qp0": lambda r: r.packet(dlid=w.LID_PERMISSIVE),
    "dlid_mismatch": lambda r: r.packet(dlid=r.lid + 7),
    "qp0_not_vl15": lambda r: r.packet(dest_qp=0, qkey=0),
    "vl15_not_qp0": lambda r: r.packet(vl=w.VL15),
    "port_not_active": lambda r: r.packet(),
    "pkey": lambda r: r.packet(pkey=0x9234),
    "no_qp": lambda r: r.packet(dest_qp=0x7777),
    "qkey": lambda r: r.packet(qkey=0x1234),
    # a joined MLID, but a MGID no QP of this HCA is attached to
    "mcast_no_member_qp": lambda r: r.packet(dlid=r.mlid, dest_qp=w.QPN_MULTICAST,
                                             sgid=r.net.devices["node0001"].gid(1),
                                             dgid=bytes.fromhex("ff12401bffff000000000000e0000042")),
}
SETUP = {"port_not_active": lambda r: setattr(r.hca.ports[1], "state", sa.PORT_INIT)}
# The receive queue of an IPoIB QP under a provider is the provider's ring, and what overflows it is
# counted per ring (rx<q>_overflow, and the standard provider's rq_overflow), as a NIC counts an
# exhausted ring; tests/test_provider_differential.py compares the two on a burst that overflows.
NOT_BY_DAMAGE = {"rq_overflow"}


def test_every_entry_of_the_table_has_a_packet_that_fails_it():
    assert set(RECIPES) | NOT_BY_DAMAGE == set(BY_REASON)
    assert len({c.reason for c in HCA_INGRESS}) == len(HCA_INGRESS)


@pytest.fixture(scope="module")
def rigs():
    return {"std": Rig(_stdpath), "fast": Rig(_fastpath)}


@pytest.mark.parametrize("reason", list(RECIPES))
def test_both_receive_paths_drop_and_count_each_failure_alike(rigs, reason):
    deltas = {}
    for name, rig in rigs.items():
        saved_state = rig.hca.ports[1].state
        setup = SETUP.get(reason)
        if setup is not None:
            setup(rig)
        fast0 = getattr(rig.hca.rx_accel, "fast_packets", 0)
        d0, pc0, pv0, qv0 = rig.state()
        try:
            rig.feed(RECIPES[reason](rig))
        finally:
            rig.hca.ports[1].state = saved_state
        d1, pc1, pv1, qv1 = rig.state()
        drops = {k: v - d0.get(k, 0) for k, v in d1.items() if v != d0.get(k, 0)}
        counters = {k: v - pc0.get(k, 0) for k, v in pc1.items() if v != pc0.get(k, 0)}
        if reason == "port_not_active":
            # a port that is not Active takes nothing: the good packet is refused as well
            assert drops == {reason: 2}, (name, drops)
        else:
            assert drops == {reason: 1}, (name, drops)
        check = BY_REASON[reason]
        if check.counter is not None:
            assert counters.get(check.counter, 0) >= 1, (name, counters)
        assert (pv1 - pv0, qv1 - qv0) == (int(check.violation == "p_key_violations"),
                                          int(check.violation == "q_key_violations")), name
        deltas[name] = (drops, counters, pv1 - pv0, qv1 - qv0)
        if name == "fast" and reason != "port_not_active":
            # the good packet ahead of it really took the compiled path
            assert rig.hca.rx_accel.fast_packets == fast0 + 1
    assert deltas["std"] == deltas["fast"]
