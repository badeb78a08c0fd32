"""The demo capture decoded by tshark, a decoder no one here wrote."""

import ipaddress
import json
import subprocess

import pytest

from fabric.capture import read_erf
from tsharkjson import find, tshark_json
from fabric.wire import split_ud_packet
from fabric.capture_demo import write_demo

FIELDS = {
    "dlid": "infiniband.lrh.dlid", "slid": "infiniband.lrh.slid", "pkey": "infiniband.bth.p_key",
    "dest_qp": "infiniband.bth.destqp", "qkey": "infiniband.deth.q_key", "src_qp": "infiniband.deth.srcqp",
    "dgid": "infiniband.grh.dgid", "ip_src": "ip.src", "ip_dst": "ip.dst", "icmp_type": "icmp.type",
    "udp_sport": "udp.srcport", "udp_dport": "udp.dstport", "arp_spa": "arp.src.proto_ipv4",
    "arp_tpa": "arp.dst.proto_ipv4", "mgmt_class": "infiniband.mad.mgmtclass",
    "method": "infiniband.mad.method", "attr_id": "infiniband.mad.attributeid",
}


def _norm(value):
    if isinstance(value, str):
        v = value.strip().lower()
        if v.startswith("0x"):
            return int(v, 16)
        if v.isdigit():
            return int(v)
        return v
    return value


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("cap") / "demo.erf"
    pkts = write_demo(path)
    return path, pkts


def test_demo_capture_reads_back(demo):
    path, pkts = demo
    records = read_erf(path)
    assert [r.packet for r in records] == [p[2] for p in pkts]
    assert [round(r.timestamp, 6) for r in records] == [round(p[0] / 1e9, 6) for p in pkts]
    for r in records:
        split_ud_packet(r.packet)  # CRCs and lengths valid


def test_tshark_decodes_demo_without_errors(tshark, demo):
    path, pkts = demo
    frames = tshark_json(tshark, path)
    assert len(frames) == len(pkts)
    for frame, (_ts, name, pkt, _exp) in zip(frames, pkts):
        layers = frame["_source"]["layers"]
        assert "_ws.malformed" not in json.dumps(layers), f"{name}: tshark reports a malformed frame"
        assert not find(layers, "_ws.expert"), f"{name}: tshark expert info {find(layers, '_ws.expert')}"
        assert "infiniband" in layers, name
        assert int(layers["frame"]["frame.len"]) == len(pkt)


def test_tshark_fields_equal_what_was_written(tshark, demo):
    path, pkts = demo
    frames = tshark_json(tshark, path)
    for frame, (_ts, name, _pkt, expected) in zip(frames, pkts):
        layers = frame["_source"]["layers"]
        for key, want in expected.items():
            values = find(layers, FIELDS[key])
            assert values, f"{name}: tshark did not decode {FIELDS[key]}"
            got = _norm(values[0])
            want = _norm(want) if isinstance(want, str) else want
            if key == "dgid":
                assert ipaddress.IPv6Address(got) == ipaddress.IPv6Address(want), (name, key, got, want)
            else:
                assert got == want, (name, key, got, want)


def test_tshark_sees_ipoib_protocol_stack(tshark, demo):
    path, _ = demo
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e", "frame.protocols"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert out[0].endswith("infiniband:ethertype:ip:icmp:data")
    assert out[1].endswith("infiniband:ethertype:arp")
    assert ":ip:udp" in out[2]
    assert all(o.startswith("erf:infiniband") for o in out)


def test_expert_check_catches_a_broken_packet(tshark, tmp_path):
    """Negative control: the checks above would see a packet that tshark finds fault with."""
    from fabric.capture import ErfWriter
    from fabric.wire import split_ud_packet as split
    from fabric.wire import build_ud_packet
    from fabric.capture_demo import demo_packets

    _ts, _name, pkt, _exp = demo_packets()[0]
    p = split(pkt)
    payload = bytearray(p.payload)
    payload[4 + 20 + 2] ^= 0xFF  # ICMP checksum, after the IPoIB header and the IPv4 header
    bad = build_ud_packet(slid=p.slid, dlid=p.dlid, dest_qp=p.bth.dest_qp, src_qp=p.deth.src_qp,
                          qkey=p.deth.qkey, pkey=p.bth.pkey, payload=bytes(payload))
    with ErfWriter(tmp_path / "bad.erf") as wr:
        wr.write(bad, 1_700_000_000 * 10**9)
    layers = tshark_json(tshark, tmp_path / "bad.erf")[0]["_source"]["layers"]
    assert find(layers, "_ws.expert"), "tshark should flag the bad ICMP checksum"
