"""The demo capture of ``ibfab capture --demo``: one packet of each kind the fabric carries.

Each entry comes with the field values it was built from, so a test can decode the file with
tshark and compare every field with what was written.
"""

from __future__ import annotations

from fabric import wire as w

from .inet import (ARP_REQUEST, IPPROTO_ICMP, IPPROTO_UDP, IPoIBArp, build_icmp_echo, build_ipv4,
                   build_udp, ip4)

HCA1_GUID = 0x0002C90300000101
HCA2_GUID = 0x0002C90300000201
SM_LID, HCA1_LID, HCA2_LID = 1, 2, 3
IPOIB_QPN1, IPOIB_QPN2 = 0x000048, 0x000049
PKEY = 0xFFFF
BCAST_MLID = 0xC000


def _gid(guid: int) -> bytes:
    return w.make_gid(w.GID_PREFIX_DEFAULT, guid)


def _ipoib(ethertype: int, body: bytes) -> bytes:
    return w.IPoIBHeader(ethertype=ethertype).pack() + body


def demo_packets(t0_ns: int = 1_700_000_000 * 10**9):
    """[(timestamp in ns, name, packet, expected-fields)], one millisecond apart."""
    out = []
    ip1, ip2 = "198.18.0.2", "198.18.0.3"

    icmp = build_icmp_echo(0x1234, 1, b"ibfab-demo-ping-payload-0123456789")
    pkt = w.build_ud_packet(slid=HCA1_LID, dlid=HCA2_LID, dest_qp=IPOIB_QPN2, src_qp=IPOIB_QPN1,
                            qkey=w.IPOIB_QKEY, pkey=PKEY,
                            payload=_ipoib(w.ETHERTYPE_IPV4, build_ipv4(ip1, ip2, IPPROTO_ICMP, icmp)))
    out.append(("ipoib-icmp-echo", pkt, dict(dlid=HCA2_LID, slid=HCA1_LID, pkey=PKEY, dest_qp=IPOIB_QPN2,
                                             qkey=w.IPOIB_QKEY, src_qp=IPOIB_QPN1, ip_src=ip1, ip_dst=ip2,
                                             icmp_type=8)))

    mgid = w.ipoib_broadcast_mgid(PKEY)
    arp = IPoIBArp(oper=ARP_REQUEST,
                   sha=w.IPoIBLinkAddr(qpn=IPOIB_QPN1, gid=_gid(HCA1_GUID)).pack(), spa=ip4(ip1),
                   tha=bytes(20), tpa=ip4(ip2)).pack()
    pkt = w.build_ud_packet(slid=HCA1_LID, dlid=BCAST_MLID, dest_qp=w.IPOIB_BROADCAST_QPN,
                            src_qp=IPOIB_QPN1, qkey=w.IPOIB_QKEY, pkey=PKEY, sgid=_gid(HCA1_GUID),
                            dgid=mgid, payload=_ipoib(w.ETHERTYPE_ARP, arp))
    out.append(("ipoib-arp-request", pkt, dict(dlid=BCAST_MLID, slid=HCA1_LID, pkey=PKEY,
                                               dest_qp=w.IPOIB_BROADCAST_QPN, qkey=w.IPOIB_QKEY,
                                               src_qp=IPOIB_QPN1, dgid=w.fmt_gid(mgid), arp_spa=ip1,
                                               arp_tpa=ip2)))

    udp = build_udp(ip1, ip2, 40000, 5001, b"ibfab demo UDP datagram")
    pkt = w.build_ud_packet(slid=HCA1_LID, dlid=HCA2_LID, dest_qp=IPOIB_QPN2, src_qp=IPOIB_QPN1,
                            qkey=w.IPOIB_QKEY, pkey=PKEY,
                            payload=_ipoib(w.ETHERTYPE_IPV4, build_ipv4(ip1, ip2, IPPROTO_UDP, udp)))
    out.append(("ipoib-udp", pkt, dict(dlid=HCA2_LID, slid=HCA1_LID, pkey=PKEY, dest_qp=IPOIB_QPN2,
                                       qkey=w.IPOIB_QKEY, src_qp=IPOIB_QPN1, ip_src=ip1, ip_dst=ip2,
                                       udp_sport=40000, udp_dport=5001)))

    path = bytearray(64)
    path[1] = 1  # hop 1 leaves through port 1
    smp = w.new_mad(w.SMPDirected, method=w.GET, tid=0x1001, attr_id=w.ATTR_NODE_INFO, hop_ptr=0,
                    hop_cnt=1, dr_slid=w.LID_PERMISSIVE, dr_dlid=w.LID_PERMISSIVE,
                    initial_path=bytes(path))
    pkt = w.build_ud_packet(slid=w.LID_PERMISSIVE, dlid=w.LID_PERMISSIVE, dest_qp=w.QP0, src_qp=w.QP0,
                            qkey=0, pkey=PKEY, vl=w.VL15, payload=smp.pack())
    out.append(("smp-dr-get-nodeinfo", pkt, dict(dlid=w.LID_PERMISSIVE, slid=w.LID_PERMISSIVE, pkey=PKEY,
                                                 dest_qp=0, qkey=0, src_qp=0,
                                                 mgmt_class=w.CLASS_SUBN_DIRECTED, method=w.GET,
                                                 attr_id=w.ATTR_NODE_INFO)))

    pr = w.PathRecord(dgid=_gid(HCA2_GUID), sgid=_gid(HCA1_GUID), numb_path=1, reversible=1)
    sa = w.new_mad(w.SAMad, method=w.GET, tid=0x2002, attr_id=w.ATTR_PATH_RECORD,
                   comp_mask=w.comp_mask(w.PR_COMP, "dgid", "sgid", "numb_path"),
                   data=w.put_attr(pr, w.SA_DATA_LEN))
    pkt = w.build_ud_packet(slid=HCA1_LID, dlid=SM_LID, dest_qp=w.QP1, src_qp=w.QP1, qkey=w.QKEY_GSI,
                            pkey=PKEY, payload=sa.pack())
    out.append(("sa-get-pathrecord", pkt, dict(dlid=SM_LID, slid=HCA1_LID, pkey=PKEY, dest_qp=1,
                                               qkey=w.QKEY_GSI, src_qp=1, mgmt_class=w.CLASS_SUBN_ADM,
                                               method=w.GET, attr_id=w.ATTR_PATH_RECORD)))
    return [(t0_ns + i * 1_000_000, name, pkt, exp) for i, (name, pkt, exp) in enumerate(out)]


def write_demo(path) -> list:
    from fabric.capture import ErfWriter

    pkts = demo_packets()
    with ErfWriter(path) as wr:
        for ts, _name, pkt, _exp in pkts:
            wr.write(pkt, ts)
    return pkts
