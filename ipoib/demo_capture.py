"""IPoIB's share of the demo capture (``ibfab capture --demo``, :mod:`fabric.capture_demo`): one
packet of each kind IPoIB puts on the fabric (ICMP, ARP, UDP), with the field values each was built
from, so that a test can decode the file with tshark and compare every field."""

from __future__ import annotations

from fabric import wire as w

from . import encap
from .encap import ARP_REQUEST, IPoIBArp
from .inet import IPPROTO_ICMP, IPPROTO_UDP, build_icmp_echo, build_ipv4, build_udp, ip4

HCA1_GUID = 0x0002C90300000101
HCA2_GUID = 0x0002C90300000201
HCA1_LID, HCA2_LID = 2, 3
IPOIB_QPN1, IPOIB_QPN2 = 0x000048, 0x000049
PKEY = 0xFFFF
BCAST_MLID = 0xC000


def _gid(guid: int) -> bytes:
    return w.make_gid(w.GID_PREFIX_DEFAULT, guid)


def _ipoib(ethertype: int, body: bytes) -> bytes:
    return encap.IPoIBHeader(ethertype=ethertype).pack() + body


def demo_packets() -> list:
    """[(name, packet, expected fields)]."""
    out = []
    ip1, ip2 = "198.18.0.2", "198.18.0.3"

    icmp = build_icmp_echo(0x1234, 1, b"ibfab-demo-ping-payload-0123456789")
    pkt = w.build_ud_packet(slid=HCA1_LID, dlid=HCA2_LID, dest_qp=IPOIB_QPN2, src_qp=IPOIB_QPN1,
                            qkey=w.IPOIB_QKEY, pkey=PKEY,
                            payload=_ipoib(encap.ETHERTYPE_IPV4, build_ipv4(ip1, ip2, IPPROTO_ICMP, icmp)))
    out.append(("ipoib-icmp-echo", pkt, dict(dlid=HCA2_LID, slid=HCA1_LID, pkey=PKEY, dest_qp=IPOIB_QPN2,
                                             qkey=w.IPOIB_QKEY, src_qp=IPOIB_QPN1, ip_src=ip1, ip_dst=ip2,
                                             icmp_type=8)))

    mgid = w.ipoib_broadcast_mgid(PKEY)
    arp = IPoIBArp(oper=ARP_REQUEST,
                   sha=encap.IPoIBLinkAddr(qpn=IPOIB_QPN1, gid=_gid(HCA1_GUID)).pack(), spa=ip4(ip1),
                   tha=bytes(20), tpa=ip4(ip2)).pack()
    pkt = w.build_ud_packet(slid=HCA1_LID, dlid=BCAST_MLID, dest_qp=w.QPN_MULTICAST,
                            src_qp=IPOIB_QPN1, qkey=w.IPOIB_QKEY, pkey=PKEY, sgid=_gid(HCA1_GUID),
                            dgid=mgid, payload=_ipoib(encap.ETHERTYPE_ARP, arp))
    out.append(("ipoib-arp-request", pkt, dict(dlid=BCAST_MLID, slid=HCA1_LID, pkey=PKEY,
                                               dest_qp=w.QPN_MULTICAST, qkey=w.IPOIB_QKEY,
                                               src_qp=IPOIB_QPN1, dgid=w.fmt_gid(mgid), arp_spa=ip1,
                                               arp_tpa=ip2)))

    udp = build_udp(ip1, ip2, 40000, 5001, b"ibfab demo UDP datagram")
    pkt = w.build_ud_packet(slid=HCA1_LID, dlid=HCA2_LID, dest_qp=IPOIB_QPN2, src_qp=IPOIB_QPN1,
                            qkey=w.IPOIB_QKEY, pkey=PKEY,
                            payload=_ipoib(encap.ETHERTYPE_IPV4, build_ipv4(ip1, ip2, IPPROTO_UDP, udp)))
    out.append(("ipoib-udp", pkt, dict(dlid=HCA2_LID, slid=HCA1_LID, pkey=PKEY, dest_qp=IPOIB_QPN2,
                                       qkey=w.IPOIB_QKEY, src_qp=IPOIB_QPN1, ip_src=ip1, ip_dst=ip2,
                                       udp_sport=40000, udp_dport=5001)))

    return out
