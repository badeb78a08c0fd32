"""The checks an HCA applies to every received packet, and how each failure is counted.

One table for both receive paths of an HCA: the per-packet path in Python (``HCA.receive_local``),
which checks in this order and drops with these reasons, and the compiled path that an
accelerated driver installs (``hca.rx_accel``, :class:`ipoib._fastrx.RxDispatch`). The compiled
path drops nothing by this table: a packet that fails any check it makes, or that is of a kind it
does not take at all (multicast, GRH, management, a port that is not Active), goes to the
per-packet path, which then drops and counts it here. So both count every failure alike;
tests/test_ingress_table.py builds a packet that fails each entry alone and compares the two. (What
overflows a compiled path's rings is the driver's to count, per ring, as a NIC counts an exhausted
receive ring; ``rq_overflow`` is the per-packet path's equivalent.)

The order follows the hardware (IBA vol. 1 ch. 7 link integrity, ch. 9 transport, ch. 10 QPs):
link-level integrity first, then addressing, then the transport header, then keys.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    reason: str                 # the key in the device's ``drops`` Counter
    counter: str | None         # the PMA PortCounters field a failure increments
    violation: str | None       # the PortInfo violation counter (16 bits, saturating)
    what: str                   # what a packet must satisfy to pass


_RCV_ERR = "port_rcv_errors"

HCA_INGRESS = (
    Check("malformed", _RCV_ERR, None, "at least LRH, BTH, DETH and both CRCs; LRH.PktLen matches its length"),
    Check("vcrc", _RCV_ERR, None, "VCRC over LRH through ICRC"),
    Check("lver", _RCV_ERR, None, "LRH.LVer is 0"),
    Check("lnh", _RCV_ERR, None, "LRH.LNH names an IBA transport packet (BTH, or GRH then BTH)"),
    Check("truncated", _RCV_ERR, None, "room for the GRH when LNH says there is one"),
    Check("pktlen", _RCV_ERR, None, "GRH.PayLen matches the packet's length"),
    Check("icrc", _RCV_ERR, None, "ICRC over the invariant fields"),
    Check("grh", _RCV_ERR, None, "GRH IPVer 6 and NxtHdr 0x1b"),
    Check("opcode", _RCV_ERR, None, "BTH opcode is UD SEND (with or without immediate)"),
    Check("tver", _RCV_ERR, None, "BTH.TVer is 0"),
    Check("padcnt", _RCV_ERR, None, "BTH.PadCnt fits in the payload"),
    Check("mlid_not_joined", _RCV_ERR, None, "a multicast DLID some QP of this HCA is attached to"),
    Check("mcast_needs_qp_ffffff_and_grh", _RCV_ERR, None, "multicast carries a GRH and DestQP 0xFFFFFF"),
    Check("permissive_dlid_not_qp0", _RCV_ERR, None, "the permissive DLID only for QP0"),
    Check("dlid_mismatch", _RCV_ERR, None, "a unicast DLID within the port's LID and LMC"),
    Check("qp0_not_vl15", _RCV_ERR, None, "QP0 traffic on VL15"),
    Check("vl15_not_qp0", _RCV_ERR, None, "VL15 only for QP0"),
    Check("port_not_active", None, None, "data only on an Active port (an Armed one goes Active on it)"),
    Check("pkey", None, "p_key_violations", "BTH.P_Key matches a table entry, one side a full member"),
    Check("no_qp", None, None, "DestQP exists on this HCA"),
    Check("qkey", None, "q_key_violations", "DETH.Q_Key is the QP's (0x80010000 for QP1)"),
    Check("mcast_no_member_qp", None, None, "some attached QP is a member of the GRH's MGID"),
    Check("rq_overflow", None, None, "room in the QP's receive queue"),
)

BY_REASON = {c.reason: c for c in HCA_INGRESS}


def count_failure(drops, port, reason: str) -> None:
    """Count one packet that failed ``reason`` on ``port``, where the table says."""
    c = BY_REASON[reason]
    drops[reason] += 1
    if c.counter is not None:
        port.counters.inc(c.counter)
    if c.violation is not None:
        setattr(port, c.violation, min(getattr(port, c.violation) + 1, 0xFFFF))
