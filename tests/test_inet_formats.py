"""IPv4/ICMP/UDP/ARP formats of the IPoIB layer: round trips, checksums, and bad input."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.wire import ParseError
from ipoib import encap
from ipoib import inet


def test_ipv4_icmp_round_trip_and_checksums():
    icmp = inet.build_icmp_echo(7, 9, b"payload")
    pkt = inet.build_ipv4("198.18.0.1", "198.18.0.2", inet.IPPROTO_ICMP, icmp, ttl=17)
    h, body = inet.parse_ipv4(pkt)
    assert (h.src, h.dst, h.ttl, h.proto, h.total_length) == (
        bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]), 17, 1, 20 + len(icmp))
    e, data = inet.parse_icmp(body)
    assert (e.type, e.ident, e.seq, data) == (inet.ICMP_ECHO_REQUEST, 7, 9, b"payload")


def test_known_checksum_rfc1071_example():
    # RFC 1071 section 3 example: the sum of 0001 f203 f4f5 f6f7 is ddf2, checksum ~ddf2 = 220d
    assert inet.inet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_udp_checksum_covers_pseudo_header():
    src, dst = inet.ip4("198.18.0.1"), inet.ip4("198.18.0.2")
    d = inet.build_udp(src, dst, 1000, 2000, b"abc")
    h, payload = inet.parse_udp(src, dst, d)
    assert (h.sport, h.dport, h.length, payload) == (1000, 2000, 11, b"abc")
    with pytest.raises(ParseError) as ei:
        inet.parse_udp(src, inet.ip4("198.18.0.3"), d)  # wrong destination: pseudo-header differs
    assert ei.value.kind == "udp_checksum"


@pytest.mark.parametrize("mutate,kind", [
    (lambda b: b[:19], "truncated"),
    (lambda b: bytes([0x65]) + b[1:], "ip_version"),
    (lambda b: bytes([0x44]) + b[1:], "ip_header"),
    (lambda b: b[:2] + (999).to_bytes(2, "big") + b[4:], "ip_length"),
    (lambda b: b[:8] + bytes([b[8] ^ 1]) + b[9:], "ip_checksum"),
])
def test_ipv4_bad_input_kinds(mutate, kind):
    pkt = inet.build_ipv4("1.2.3.4", "5.6.7.8", inet.IPPROTO_UDP, b"x" * 12)
    with pytest.raises(ParseError) as ei:
        inet.parse_ipv4(mutate(pkt))
    assert ei.value.kind == kind


def test_arp_for_ipoib():
    a = encap.IPoIBArp(oper=encap.ARP_REQUEST, sha=bytes(range(20)), spa=inet.ip4("198.18.0.1"),
                      tha=bytes(20), tpa=inet.ip4("198.18.0.2"))
    raw = a.pack()
    assert len(raw) == 56 and raw[:6] == bytes.fromhex("0020080014" "04")
    assert encap.parse_arp(raw) == a
    with pytest.raises(ParseError) as ei:
        encap.parse_arp(a.replace(hlen=6).pack())
    assert ei.value.kind == "arp_format"
    with pytest.raises(ParseError) as ei:
        encap.parse_arp(a.replace(oper=9).pack())
    assert ei.value.kind == "arp_oper"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_parsers_only_raise_parse_error(data):
    for parse in (inet.parse_ipv4, inet.parse_icmp, encap.parse_arp,
                  lambda d: inet.parse_udp(b"\0" * 4, b"\0" * 4, d)):
        try:
            parse(data)
        except ParseError:
            pass
