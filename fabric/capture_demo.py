"""The demo capture of ``ibfab capture --demo``: one packet of each kind the fabric carries.

The fabric's own kinds (a directed-route SMP, an SA query) and those of every installed node
software that has a ``demo_packets()`` (IPoIB's ICMP, ARP and UDP). Each entry comes with the field
values it was built from, so a test can decode the file with tshark and compare every field with
what was written.
"""

from __future__ import annotations

from . import plugins
from . import wire as w

HCA1_GUID = 0x0002C90300000101
HCA2_GUID = 0x0002C90300000201
SM_LID, HCA1_LID = 1, 2
PKEY = 0xFFFF


def _gid(guid: int) -> bytes:
    return w.make_gid(w.GID_PREFIX_DEFAULT, guid)


def management_packets() -> list:
    """[(name, packet, expected fields)] of the fabric's management traffic."""
    out = []
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
    return out


def demo_packets(t0_ns: int = 1_700_000_000 * 10**9) -> list:
    """[(timestamp in ns, name, packet, expected fields)], one millisecond apart: the node
    software's packets first, then the fabric's."""
    out = []
    for name in plugins.node_software_names():
        sw = plugins.node_software(name)
        if sw is not None and hasattr(sw, "demo_packets"):
            out += sw.demo_packets()
    out += management_packets()
    return [(t0_ns + i * 1_000_000, name, pkt, exp) for i, (name, pkt, exp) in enumerate(out)]


def write_demo(path) -> list:
    from .capture import ErfWriter

    pkts = demo_packets()
    with ErfWriter(path) as wr:
        for ts, _name, pkt, _exp in pkts:
            wr.write(pkt, ts)
    return pkts
