"""Hostile input for the device models: whatever arrives on a port, ``Switch.receive`` and
``HCA.receive`` never raise, and every packet is accounted for exactly once — dropped (counted in
``dev.drops``), delivered to a QP, or answered/forwarded — and the fabric still works afterwards.

One brought-up fabric serves the whole module. Every port's M_Key is set (protection level 1), so a
fuzzed SMP Set or TrapRepress cannot reprogram the fabric under the test: it is refused and counted.
"""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric import wire as w
from fabric.devices.hca import HCA
from fabric.wire.burst import BURST_HDR, KIND_NAMES, encode_burst, encode_control, decode_burst
from fabric.wire import smp_attrs as sa
from fabric.wire.packet import check_vcrc
from devnet import Fab, with_crcs

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    database=None)
M_KEY = 0x5EC0_0000_CAFE_F00D
QKEY = 0x22220000
MLID = 0xC003
MGID = bytes.fromhex("ff12601bffff00000000000000000003")
TARGETS = [("Switch1", 1), ("Switch1", 2), ("Switch1", 3), ("Switch2", 5), ("Switch1", 0), ("Switch1", 4),
           ("Switch1", 9), ("Hca1", 1), ("Hca3", 1), ("Hca2", 2), ("Hca4", 3)]


class Fuzzed:
    def __init__(self):
        self.fab = fab = Fab()
        self.qp1 = fab["Hca1"].create_qp(QKEY, qpn=0x48)
        self.qp3 = fab["Hca3"].create_qp(QKEY, qpn=0x48)
        mqp = fab["Hca1"].create_qp(QKEY, qpn=0x49)
        fab["Hca1"].attach_mcast(mqp.qpn, MGID, MLID)
        masks = [0] * 32
        masks[MLID - 0xC000] = 1 << 1 | 1 << 2  # Hca1 and Hca3
        fab.sm.set(w.MulticastForwardingTable, w.ATTR_MFT, fab.path("Switch1"),
                   w.MulticastForwardingTable(port_masks=tuple(masks)), attr_mod=sa.mft_attr_mod(0, 0))
        for name, dev in fab.net.devices.items():
            for port in ([0] if dev.kind == "switch" else [p.num for p in dev.ports.values() if p.cabled]):
                pi = fab.sm.get(w.PortInfo, w.ATTR_PORT_INFO, fab.path(name), attr_mod=port)
                new = pi.replace(m_key=M_KEY, m_key_protect_bits=1, port_state=0, phys_state=0,
                                 neighbor_mtu=0, link_speed_enabled=0, link_width_enabled=0, client_reregister=0)
                fab.sm.set(w.PortInfo, w.ATTR_PORT_INFO, fab.path(name), new, attr_mod=port)
        self.templates = self._templates()
        assert sorted(self.templates) == sorted(TEMPLATE_NAMES)
        self.packets = 0
        self.accounted = 0

    def _templates(self):
        fab = self.fab
        l1, l3, s1 = fab.lid("Hca1"), fab.lid("Hca3"), fab.lid("Switch1")

        def ud(payload, **kw):
            args = dict(slid=l3, dlid=l1, dest_qp=0x48, src_qp=0x48, qkey=QKEY, payload=payload)
            args.update(kw)
            return w.build_ud_packet(**args)

        def smp_pkt(smp, dlid, slid=l1):
            return w.build_ud_packet(slid=slid, dlid=dlid, dest_qp=0, src_qp=0, qkey=0, vl=w.VL15,
                                     payload=smp.pack())

        def dr(hop_cnt, hop_ptr, path, d=0, method=w.GET, attr=w.ATTR_NODE_INFO, return_path=bytes(64)):
            return w.new_mad(w.SMPDirected, method=method, tid=0x1234, attr_id=attr, hop_cnt=hop_cnt,
                             hop_ptr=hop_ptr, d=d, dr_slid=w.LID_PERMISSIVE, dr_dlid=w.LID_PERMISSIVE,
                             initial_path=bytes([0, *path]).ljust(64, b"\0"), return_path=return_path)

        pma = w.new_mad(w.PMAMad, method=w.GET, tid=0x99, attr_id=w.ATTR_PORT_COUNTERS,
                        data=w.put_attr(w.PortCounters(port_select=1), 192))
        lidsmp = w.new_mad(w.SMPLid, method=w.GET, tid=0x98, attr_id=w.ATTR_PORT_INFO)
        return {
            "data": ud(b"hello fabric" * 5),
            "data_imm_pad": ud(b"odd!5"),
            "data_grh": ud(bytes(77), dgid=fab["Hca1"].gid(1), sgid=fab["Hca3"].gid(1)),
            "mcast": ud(b"group" * 9, dlid=MLID, dest_qp=0xFFFFFF, dgid=MGID, sgid=fab["Hca3"].gid(1)),
            "dr_here": smp_pkt(dr(1, 1, (1,)), w.LID_PERMISSIVE),
            "dr_through": smp_pkt(dr(2, 1, (1, 2)), w.LID_PERMISSIVE),
            "dr_return": smp_pkt(dr(2, 2, (1, 2), d=1, method=w.GET_RESP, return_path=bytes([0, 1, 1]).ljust(64, b"\0")),
                                 w.LID_PERMISSIVE, slid=w.LID_PERMISSIVE),
            "lid_smp_sw": smp_pkt(lidsmp, s1),
            "lid_smp_hca": smp_pkt(lidsmp, l1, slid=s1),
            "trap_repress": smp_pkt(lidsmp.replace(method=w.TRAP_REPRESS, attr_id=w.ATTR_NOTICE), s1),
            "pma_sw": ud(pma.pack(), dlid=s1, dest_qp=1, src_qp=1, qkey=w.QKEY_GSI),
            "pma_hca": ud(pma.pack(), dest_qp=1, src_qp=1, qkey=w.QKEY_GSI),
        }

    # -- the property ----------------------------------------------------------------------------

    def feed(self, name, port, data):
        dev = self.fab[name]
        d0, r0 = sum(dev.drops.values()), _received(dev)
        dev.receive(port, data, self.fab.net.now)  # must not raise
        out = dev.take_outbox()
        dropped, delivered = sum(dev.drops.values()) - d0, _received(dev) - r0
        for p, pkt in out:
            assert p in dev.ports and p != 0 and dev.ports[p].link_up, (name, p)
            assert isinstance(pkt, bytes) and check_vcrc(pkt)
        assert dropped + delivered + (1 if out else 0) == 1, (name, port, data.hex(), dev.drops, out)
        assert dev.events == []  # nothing reconfigured the device
        for qp in getattr(dev, "qps", {}).values():
            qp.rq.clear()
        self.packets += 1
        self.accounted += dropped + delivered + (1 if out else 0)
        return out, dropped, delivered

    def check_fabric_works(self):
        fab = self.fab
        names = fab.hca_names()
        qps = {n: fab[n].qps.get(0x60) or fab[n].create_qp(QKEY + 7, qpn=0x60) for n in names}
        for src in names:
            for dst in names:
                if src != dst:
                    fab.send(src, 0x60, dst, 0x60, f"{src}>{dst}".encode())
                    assert [c.payload for c in qps[dst].poll()] == [f"{src}>{dst}".encode()]
        assert fab.sm.get(w.NodeInfo, w.ATTR_NODE_INFO, fab.path("Hca4")).node_guid == fab.guid("Hca4")


def _received(dev):
    return sum(qp.received for qp in dev.qps.values()) if isinstance(dev, HCA) else 0


@pytest.fixture(scope="module")
def fz():
    f = Fuzzed()
    yield f
    assert f.accounted == f.packets
    f.check_fabric_works()


def test_templates_do_what_they_say(fz):
    """The seeds of the fuzzing are meaningful: each is handled the way a good packet is."""
    t = fz.templates
    assert fz.feed("Hca1", 1, t["data"])[2] == 1
    assert fz.feed("Hca1", 1, t["data_imm_pad"])[2] == 1
    assert fz.feed("Hca1", 1, t["data_grh"])[2] == 1
    assert fz.feed("Hca1", 1, t["mcast"])[2] == 1
    assert [p for p, _ in fz.feed("Switch1", 2, t["data"])[0]] == [1]
    assert [p for p, _ in fz.feed("Switch1", 2, t["mcast"])[0]] == [1]
    assert [p for p, _ in fz.feed("Switch1", 1, t["dr_here"])[0]] == [1]  # answered
    assert [p for p, _ in fz.feed("Switch1", 1, t["dr_through"])[0]] == [2]  # forwarded
    assert [p for p, _ in fz.feed("Switch1", 2, t["dr_return"])[0]] == [1]  # returned
    assert [p for p, _ in fz.feed("Hca1", 1, t["dr_here"])[0]] == [1]
    assert [p for p, _ in fz.feed("Switch1", 1, t["lid_smp_sw"])[0]] == [1]
    assert [p for p, _ in fz.feed("Hca1", 1, t["lid_smp_hca"])[0]] == [1]
    assert fz.feed("Switch1", 1, t["trap_repress"])[1] == 1  # wrong M_Key: counted
    assert [p for p, _ in fz.feed("Switch1", 2, t["pma_sw"])[0]] == [2]
    assert [p for p, _ in fz.feed("Hca1", 1, t["pma_hca"])[0]] == [1]
    assert fz.fab["Switch1"].drops["m_key_violation"] == 1


targets = st.sampled_from(TARGETS)
TEMPLATE_NAMES = ["data", "data_imm_pad", "data_grh", "mcast", "dr_here", "dr_through", "dr_return",
                  "lid_smp_sw", "lid_smp_hca", "trap_repress", "pma_sw", "pma_hca"]
template_names = st.sampled_from(TEMPLATE_NAMES)


@SETTINGS
@given(target=targets, data=st.binary(max_size=400))
def test_random_octets(fz, target, data):
    fz.feed(*target, data)


@SETTINGS
@given(target=targets, name=template_names, cut=st.integers(0, 2000),
       mode=st.sampled_from(["raw", "vcrc", "pktlen+vcrc"]))
def test_truncated_packets(fz, target, name, cut, mode):
    t = fz.templates[name]
    data = t[:cut % len(t)]
    if mode != "raw" and len(data) >= 8:
        if mode == "pktlen+vcrc":
            n = (len(data) + 2) // 4
            data = data[:4] + bytes([data[4] & 0xF8 | n >> 8 & 7, n & 0xFF]) + data[6:]
        data = data + w.vcrc_bytes(data)
    fz.feed(*target, data)


@SETTINGS
@given(target=targets, name=template_names,
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=6),
       crcs=st.sampled_from(["none", "vcrc", "both"]))
def test_byte_flips(fz, target, name, flips, crcs):
    b = bytearray(fz.templates[name])
    limit = len(b) - (6 if crcs == "both" else 2 if crcs == "vcrc" else 0)
    for pos, x in flips:
        b[pos % limit] ^= x
    data = bytes(b)
    if crcs == "both":
        data = with_crcs(data[:-6])
    elif crcs == "vcrc":
        data = data[:-2] + w.vcrc_bytes(data[:-2])
    fz.feed(*target, data)


_lids = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 0x50, 0xBFFF, 0xC000, MLID, 0xFFFE, 0xFFFF]),
                  st.integers(0, 0xFFFF))
_qpns = st.one_of(st.sampled_from([0, 1, 2, 0x48, 0x49, 0x60, 0xFFFFFF]), st.integers(0, 0xFFFFFF))
_pkeys = st.one_of(st.sampled_from([0xFFFF, 0x7FFF, 0x8000, 0, 0x8001, 0x0001]), st.integers(0, 0xFFFF))
_qkeys = st.one_of(st.sampled_from([QKEY, w.QKEY_GSI, 0, 0x80000000]), st.integers(0, 0xFFFFFFFF))


@st.composite
def headers(draw):
    name = draw(template_names)
    return name, dict(
        vl=draw(st.sampled_from([0, 15]) | st.integers(0, 15)), lver=draw(st.sampled_from([0]) | st.integers(0, 15)),
        sl=draw(st.integers(0, 15)), lnh=draw(st.sampled_from([2, 3]) | st.integers(0, 3)),
        dlid=draw(_lids), slid=draw(_lids), pktlen_delta=draw(st.sampled_from([0]) | st.integers(-3, 3)),
        opcode=draw(st.sampled_from([0x64, 0x65]) | st.integers(0, 255)), se=draw(st.integers(0, 1)),
        m=draw(st.integers(0, 1)), padcnt=draw(st.integers(0, 3)), tver=draw(st.sampled_from([0]) | st.integers(0, 15)),
        pkey=draw(_pkeys), dest_qp=draw(_qpns), qkey=draw(_qkeys), src_qp=draw(_qpns),
        grh=draw(st.none() | st.fixed_dictionaries(dict(
            ipver=st.sampled_from([6]) | st.integers(0, 15), tclass=st.integers(0, 255),
            flow_label=st.integers(0, (1 << 20) - 1), paylen_delta=st.sampled_from([0]) | st.integers(-8, 8),
            nxthdr=st.sampled_from([0x1B]) | st.integers(0, 255), hoplmt=st.integers(0, 255),
            sgid=st.sampled_from([bytes(16), MGID]) | st.binary(min_size=16, max_size=16),
            dgid=st.sampled_from([MGID, bytes(16)]) | st.binary(min_size=16, max_size=16)))),
    )


def build(template: bytes, h: dict) -> bytes:
    """The template's payload (everything after its BTH+DETH) under freshly drawn headers, with a
    correct PktLen (give or take ``pktlen_delta``) and correct CRCs."""
    off = 8 + (40 if template[1] & 3 == w.LNH_IBA_GLOBAL else 0)
    body = template[off + 20:-6]
    g = h["grh"]
    grh = b""
    if g is not None:
        grh = w.GRH(ipver=g["ipver"], tclass=g["tclass"], flow_label=g["flow_label"],
                    paylen=max(0, min(0xFFFF, 20 + len(body) + 4 + g["paylen_delta"])), nxthdr=g["nxthdr"],
                    hoplmt=g["hoplmt"], sgid=g["sgid"], dgid=g["dgid"]).pack()
    bth = w.BTH(opcode=h["opcode"], se=h["se"], m=h["m"], padcnt=h["padcnt"], tver=h["tver"], pkey=h["pkey"],
                dest_qp=h["dest_qp"]).pack()
    deth = w.DETH(qkey=h["qkey"], src_qp=h["src_qp"]).pack()
    words = (8 + len(grh) + 20 + len(body) + 4) // 4 + h["pktlen_delta"]
    lrh = w.LRH(vl=h["vl"], lver=h["lver"], sl=h["sl"], lnh=h["lnh"], dlid=h["dlid"],
                pktlen=max(0, min(words, 0x7FF)), slid=h["slid"]).pack()
    return with_crcs(lrh + grh + bth + deth + body)


@SETTINGS
@given(target=targets, drawn=headers())
def test_valid_crc_packets_with_random_headers(fz, target, drawn):
    name, h = drawn
    fz.feed(*target, build(fz.templates[name], h))


@SETTINGS
@given(target=targets, hop_cnt=st.integers(0, 255), hop_ptr=st.integers(0, 255), d=st.integers(0, 1),
       method=st.sampled_from([w.GET, w.SET, w.GET_RESP, w.TRAP, w.TRAP_REPRESS, w.SEND]) | st.integers(0, 255),
       attr=st.sampled_from([w.ATTR_NODE_INFO, w.ATTR_PORT_INFO, w.ATTR_SWITCH_INFO, w.ATTR_LFT, w.ATTR_MFT,
                             w.ATTR_PKEY_TABLE, w.ATTR_NOTICE]) | st.integers(0, 0xFFFF),
       attr_mod=st.sampled_from([0, 1, 2, 0x20000, 0x10000000]) | st.integers(0, 0xFFFFFFFF),
       ipath=st.binary(min_size=64, max_size=64) | st.sampled_from([bytes([0, 1, 2, 3] * 16), bytes(64)]),
       rpath=st.binary(min_size=64, max_size=64) | st.sampled_from([bytes([0, 1, 2, 3] * 16), bytes(64)]),
       dr_slid=st.sampled_from([w.LID_PERMISSIVE, 1, 0]), dr_dlid=st.sampled_from([w.LID_PERMISSIVE, 2, 0]),
       dlid=st.sampled_from([w.LID_PERMISSIVE, 1, 2, 3]), data=st.binary(min_size=64, max_size=64))
def test_dr_smps_with_random_routing_fields(fz, target, hop_cnt, hop_ptr, d, method, attr, attr_mod, ipath,
                                            rpath, dr_slid, dr_dlid, dlid, data):
    """Directed-route SMPs with any hop pointer, hop count and paths (IBA 14.2.2 limits a route to
    63 hops; the paths are 64 octets)."""
    smp = w.new_mad(w.SMPDirected, method=method, tid=0x55, attr_id=attr, attr_mod=attr_mod, hop_cnt=hop_cnt,
                    hop_ptr=hop_ptr, d=d, dr_slid=dr_slid, dr_dlid=dr_dlid, initial_path=ipath,
                    return_path=rpath, data=data)
    fz.feed(*target, w.build_ud_packet(slid=w.LID_PERMISSIVE, dlid=dlid, dest_qp=0, src_qp=0, qkey=0,
                                       vl=w.VL15, payload=smp.pack()))


_SCRATCH = {}


@SETTINGS
@given(target=st.sampled_from([("Switch1", 1), ("Switch2", 3), ("Hca3", 1), ("Hca1", 1)]),
       method=st.sampled_from([w.GET, w.SET]),
       attr=st.sampled_from([w.ATTR_NODE_INFO, w.ATTR_NODE_DESC, w.ATTR_PORT_INFO, w.ATTR_SWITCH_INFO, w.ATTR_LFT,
                             w.ATTR_MFT, w.ATTR_PKEY_TABLE, w.ATTR_GUID_INFO, w.ATTR_SM_INFO, w.ATTR_NOTICE]),
       attr_mod=st.sampled_from([0, 1, 2, 3, 9, 0x20000, 0x10000000, 0xFFFFFFFF]) | st.integers(0, 0xFFFFFFFF),
       data=st.binary(min_size=64, max_size=64) | st.sampled_from([bytes(64), b"\xff" * 64]))
def test_sma_random_sets_never_raise(target, method, attr, attr_mod, data):
    """Without M_Key protection, any Get or Set of any attribute with any data is answered (or
    dropped and counted) without an exception; the fabric it scrambles is this test's own."""
    if "fab" not in _SCRATCH:
        _SCRATCH["fab"] = Fab()
    fab = _SCRATCH["fab"]
    name, port = target
    dev = fab[name]
    smp = w.new_mad(w.SMPDirected, method=method, tid=0x66, attr_id=attr, attr_mod=attr_mod, hop_cnt=1,
                    hop_ptr=1, dr_slid=w.LID_PERMISSIVE, dr_dlid=w.LID_PERMISSIVE,
                    initial_path=bytes([0, port]).ljust(64, b"\0"), data=data)
    raw = w.build_ud_packet(slid=w.LID_PERMISSIVE, dlid=w.LID_PERMISSIVE, dest_qp=0, src_qp=0, qkey=0,
                            vl=w.VL15, payload=smp.pack())
    d0 = sum(dev.drops.values())
    dev.receive(port, raw, fab.net.now)
    out = dev.take_outbox()
    if dev.ports[port].link_up:
        assert len(out) == 1 or sum(dev.drops.values()) == d0 + 1
        if out:
            resp = w.parse_mad(w.split_ud_packet(out[0][1]).payload)
            assert (resp.method, resp.tid, resp.attr_id) == (w.GET_RESP, 0x66, attr)
    fab.net._handle_events(name)  # act on link bounces etc. as LoopNet would
    fab.net.run()


def _fields(t: bytes) -> dict:
    """The header fields of a template, as ``build`` takes them."""
    pkt = w.split_ud_packet(t)
    h = dict(vl=pkt.lrh.vl, lver=0, sl=pkt.lrh.sl, lnh=pkt.lrh.lnh, dlid=pkt.lrh.dlid, slid=pkt.lrh.slid,
             pktlen_delta=0, opcode=pkt.bth.opcode, se=0, m=0, padcnt=pkt.bth.padcnt, tver=0, pkey=pkt.bth.pkey,
             dest_qp=pkt.bth.dest_qp, qkey=pkt.deth.qkey, src_qp=pkt.deth.src_qp, grh=None)
    if pkt.grh is not None:
        g = pkt.grh
        h["grh"] = dict(ipver=6, tclass=g.tclass, flow_label=g.flow_label, paylen_delta=0, nxthdr=g.nxthdr,
                        hoplmt=g.hoplmt, sgid=g.sgid, dgid=g.dgid)
    return h


def test_random_headers_reach_every_outcome(fz):
    """The header fuzzing is not all dropped at the first check: a fixed sample of templates with a
    few header fields changed ends in deliveries, forwards and SMA/PMA answers as well as in many
    different drop reasons."""
    rng = random.Random(7)
    outcomes = set()
    before = {n: dict(d.drops) for n, d in fz.fab.net.devices.items()}
    choices = dict(vl=[0, 15, 3], sl=[0, 5], dlid=[1, 2, 3, 4, 0x50, 0xFFFF, MLID, 0], slid=[1, 3, 0xFFFF],
                   opcode=[0x64, 0x65, 0x04, 0x81], padcnt=[0, 1, 3], pkey=[0xFFFF, 0x0001, 0x7FFF, 0x8000],
                   dest_qp=[0, 1, 0x48, 0x49, 0xFFFFFF, 0x777], qkey=[QKEY, w.QKEY_GSI, 0x80000000, 5],
                   src_qp=[0, 1, 0x48])
    for _ in range(2000):
        name = rng.choice(sorted(fz.templates))
        t = fz.templates[name]
        h = _fields(t)
        for field in rng.sample(sorted(choices), rng.choice([0, 1, 1, 2])):
            h[field] = rng.choice(choices[field])
        target = rng.choice(TARGETS[:4] + TARGETS[7:9])
        out, dropped, delivered = fz.feed(*target, build(t, h))
        outcomes.add("delivered" if delivered else "sent" if out else "dropped")
    reasons = {k for n, d in fz.fab.net.devices.items() for k, v in d.drops.items() if v != before[n].get(k, 0)}
    assert outcomes == {"delivered", "sent", "dropped"}
    assert {"no_route", "pkey", "qkey", "no_qp", "dlid_mismatch", "dr_path", "qp0_not_vl15",
            "vl15_not_qp0", "opcode", "m_key_violation"} <= reasons, reasons


# -- burst framing ---------------------------------------------------------------------------------


@SETTINGS
@given(data=st.binary(max_size=300))
def test_decode_burst_random_data_raises_only_parse_error(data):
    try:
        kind, port, pkts = decode_burst(data)
    except w.ParseError:
        return
    assert kind in KIND_NAMES and 0 <= port <= 255
    assert len(data) == BURST_HDR.size + sum(2 + len(p) for p in pkts)


@SETTINGS
@given(port=st.integers(0, 255), pkts=st.lists(st.binary(max_size=80), max_size=6),
       kind=st.sampled_from(sorted(KIND_NAMES)),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=3),
       cut=st.none() | st.integers(0, 10_000), extra=st.binary(max_size=3))
def test_decode_burst_mutated_bursts(port, pkts, kind, flips, cut, extra):
    good = encode_burst(port, pkts, kind) if pkts or kind == 0 else encode_control(port, kind)
    assert decode_burst(good) == (kind, port, list(pkts))
    b = bytearray(good)
    for pos, x in flips:
        b[pos % len(b)] ^= x
    b = bytes(b)
    if cut is not None:
        b = b[:cut % (len(b) + 1)]
    b += extra
    try:
        decode_burst(b)
    except w.ParseError:
        pass
    if not flips and cut is None and extra:
        with pytest.raises(w.ParseError, match="trailing"):
            decode_burst(b)
