"""A host channel adapter: 1 or 2 ports, UD QPs (QP0 SMI, QP1 GSI, general UD QPs), SMA and PMA.

Receive checks run in the order hardware applies them (IBA vol. 1 ch. 7, 9 and 10): link-level
integrity (length, VCRC, ICRC), DLID, port state, P_Key, destination QP, Q_Key. Each failure drops
the packet and counts it where hardware counts it; the ``drops`` Counter says exactly why.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .. import wire as w
from ..wire import smp_attrs as sa
from ..wire.crc import vcrc16
from .base import Device
from .port import Port

FIRST_QPN = 0x48
MAX_QPN = 0xFFFFFF
RQ_DEPTH = 4096


@dataclass(frozen=True)
class Completion:
    """A received UD datagram as a receive completion reports it."""

    port: int
    slid: int
    dlid_path_bits: int
    src_qp: int
    pkey: int
    pkey_index: int
    sl: int
    grh: w.GRH | None
    payload: bytes
    qkey: int


class UDQP:
    """A UD queue pair. ``consumer``, if set, is called with each Completion instead of queueing."""

    def __init__(self, qpn: int, qkey: int, port: int, pkey_index: int = 0, rq_depth: int = RQ_DEPTH):
        self.qpn = qpn
        self.qkey = qkey
        self.port = port
        self.pkey_index = pkey_index
        self.rq: deque = deque()
        self.rq_depth = rq_depth
        self.consumer = None
        self.mcast: set = set()  # (mgid, mlid)
        self.rq_overflow = 0
        self.received = 0
        self.sent = 0

    def deliver(self, c: Completion) -> bool:
        if self.consumer is not None:
            self.received += 1
            self.consumer(c)
            return True
        if len(self.rq) >= self.rq_depth:
            self.rq_overflow += 1
            return False
        self.received += 1
        self.rq.append(c)
        return True

    def poll(self, budget: int = 64) -> list:
        out = []
        while self.rq and len(out) < budget:
            out.append(self.rq.popleft())
        return out


class HCA(Device):
    kind = "hca"
    node_type = sa.NODE_TYPE_CA

    def __init__(self, spec, *, mtu_cap: int = sa.MTU_4096):
        super().__init__(spec)
        for n in range(1, spec.num_ports + 1):
            guid = spec.port_guids.get(n, self.node_guid + n)
            self.ports[n] = Port(n, guid=guid, mtu_cap=mtu_cap)
            self.ports[n].capability_mask = (sa.CAP_IS_TRAP_SUP | sa.CAP_IS_SYS_IMAGE_GUID_SUP
                                             | sa.CAP_IS_CLIENT_REREG_SUP | sa.CAP_IS_SM_DISABLED)
        self.qps: dict[int, UDQP] = {0: UDQP(0, 0, 0), 1: UDQP(1, w.QKEY_GSI, 0)}
        self._next_qpn = FIRST_QPN
        self.mcast_lids: dict[int, set] = {}  # MLID -> QPNs attached
        self.sm_consumer = None  # QP0 responses and traps go here (the SM on this node)
        self.gsi_consumer = None  # QP1 GMPs that are not PMA (SA queries and answers)
        # A compiled receive path for some QPs (the accelerated IPoIB provider installs one):
        # called with (port, burst, offset, count, now), it takes the packets it fully handles and
        # returns the others, which go through ``receive`` one by one.
        self.rx_accel = None

    # -- addressing ----------------------------------------------------------------------------

    def mgmt_port(self, in_port: int) -> Port:
        return self.ports.get(in_port) or self.ports[1]

    def port_guid_for(self, in_port: int) -> int:
        return self.mgmt_port(in_port).guid

    def port_for_attr(self, mod: int, in_port: int) -> Port:
        if mod == 0:
            return self.mgmt_port(in_port)  # 0 means "the port this SMP arrived on"
        return super().port_for_attr(mod, in_port)

    def gid(self, port: int = 1, index: int = 0) -> bytes:
        p = self.ports[port]
        return w.make_gid(p.gid_prefix, p.guid)

    # -- QPs -----------------------------------------------------------------------------------

    def create_qp(self, qkey: int, port: int = 1, qpn: int | None = None, pkey_index: int = 0) -> UDQP:
        if port not in self.ports:
            raise ValueError(f"{self.name} has no port {port}")
        if qpn is None:
            while self._next_qpn in self.qps:
                self._next_qpn += 1
            qpn = self._next_qpn
            self._next_qpn += 1
        if qpn in self.qps or not 2 <= qpn < MAX_QPN:
            raise ValueError(f"QPN 0x{qpn:x} is in use or reserved")
        qp = UDQP(qpn, qkey, port, pkey_index)
        self.qps[qpn] = qp
        return qp

    def destroy_qp(self, qpn: int) -> None:
        qp = self.qps.pop(qpn, None)
        if qp is None or qpn < 2:
            raise ValueError(f"no QP 0x{qpn:x}")
        for mgid, mlid in list(qp.mcast):
            self.detach_mcast(qpn, mgid, mlid)

    def attach_mcast(self, qpn: int, mgid: bytes, mlid: int) -> None:
        if not w.is_mcast_lid(mlid):
            raise ValueError(f"0x{mlid:x} is not a multicast LID")
        qp = self.qps[qpn]
        qp.mcast.add((bytes(mgid), mlid))
        self.mcast_lids.setdefault(mlid, set()).add(qpn)

    def detach_mcast(self, qpn: int, mgid: bytes, mlid: int) -> None:
        qp = self.qps.get(qpn)
        if qp is not None:
            qp.mcast.discard((bytes(mgid), mlid))
            if not any(m == mlid for _, m in qp.mcast):
                s = self.mcast_lids.get(mlid)
                if s is not None:
                    s.discard(qpn)
                    if not s:
                        del self.mcast_lids[mlid]

    # -- transmit ------------------------------------------------------------------------------

    def post_send(self, qpn: int, *, dlid: int, dest_qp: int, payload: bytes, qkey: int | None = None,
                  pkey_index: int | None = None, sl: int = 0, dgid: bytes | None = None,
                  hoplmt: int = 255, tclass: int = 0, flow_label: int = 0, src_path_bits: int = 0,
                  now: float = 0.0, port_num: int | None = None) -> list:
        """Send one UD datagram; returns what goes on the wire (loopback is delivered directly).

        A Q_Key with its high bit set means "use the QP's own Q_Key" (IBA 10.2.5): a consumer cannot
        send a controlled Q_Key it was not given.
        """
        qp = self.qps[qpn]
        port = self.ports[port_num or qp.port or 1]
        if qkey is None or qkey & 0x80000000 and qpn > 1:
            qkey = qp.qkey
        idx = qp.pkey_index if pkey_index is None else pkey_index
        if not 0 <= idx < len(port.pkeys) or not port.pkeys[idx] & 0x7FFF:
            return self.drop("send_bad_pkey_index")
        management = qpn == 0
        if not port.link_up or (not management and port.state not in (sa.PORT_ACTIVE,)):
            port.counters.inc("port_xmit_discards")
            return self.drop("send_port_not_active")
        mtu = sa.MTU_BYTES.get(port.neighbor_mtu, 4096)
        if len(payload) > mtu and not management:
            return self.drop("send_over_mtu")
        sgid = self.gid(port.num) if dgid is not None else None
        raw = w.build_ud_packet(slid=port.lid | src_path_bits, dlid=dlid, dest_qp=dest_qp, src_qp=qpn,
                                qkey=qkey, pkey=port.pkeys[idx], sl=sl, vl=w.VL15 if management else 0,
                                sgid=sgid, dgid=dgid, hoplmt=hoplmt, tclass=tclass, flow_label=flow_label,
                                payload=payload)
        qp.sent += 1
        mcast = w.is_mcast_lid(dlid)
        if port.owns_lid(dlid) and not management:
            # HCA loopback never reaches the wire; what the receiver answers (an SA on this very
            # node answering, and the SMPs its answer triggers) does
            return self.receive_local(port.num, raw, now)
        out = []
        if mcast and dlid in self.mcast_lids:
            out = self.receive_local(port.num, raw, now, loopback=True)  # multicast loopback
        port.counters.count_xmit(len(raw), mcast)
        return out + [(port.num, raw)]

    def send_raw(self, port_num: int, raw: bytes) -> list:
        """Put an already built packet on the wire (the SM sends SMPs this way)."""
        port = self.ports[port_num]
        if not port.link_up:
            port.counters.inc("port_xmit_discards")
            return self.drop("send_port_down")
        port.counters.count_xmit(len(raw), w.is_mcast_lid((raw[2] << 8) | raw[3]))
        return [(port_num, raw)]

    def transmit_mgmt(self, out_port: int, raw: bytes) -> list:
        return self.send_raw(out_port, raw)

    def route_out(self, packet: bytes, port_hint: int) -> list:
        return self.send_raw(port_hint or 1, packet)

    # -- receive -------------------------------------------------------------------------------

    def receive(self, in_port: int, data: bytes, now: float) -> list:
        port = self.ports.get(in_port)
        if port is None:
            return self.drop("bad_ingress_port")
        if not port.link_up:
            return self.drop("ingress_link_down")
        n = len(data)
        if n >= 8:
            port.counters.count_rcv(n, w.LID_MCAST_FIRST <= ((data[2] << 8) | data[3]) <= w.LID_MCAST_LAST)
        return self.receive_local(in_port, data, now)

    def receive_burst(self, in_port: int, burst, offset: int, count: int, now: float):
        """A link burst: through ``rx_accel`` when there is one and the port is Active, otherwise
        (and for whatever it hands back) packet by packet. Returns ``({}, txs)`` like a switch."""
        port = self.ports.get(in_port)
        slow = None
        if self.rx_accel is not None and port is not None and port.link_up and port.state == sa.PORT_ACTIVE:
            # bad framing raises ParseError before any packet is taken, as the decoder below would
            slow = self.rx_accel(port, burst, offset, count, now)
        if slow is None:
            from ..link import decode_burst_packets

            slow = decode_burst_packets(burst, offset, count)
        txs = []
        for pkt in slow:
            txs.extend(self.receive(in_port, pkt, now))
        return {}, txs

    def receive_local(self, in_port: int, data: bytes, now: float, loopback: bool = False) -> list:
        port = self.ports[in_port]
        n = len(data)
        if n < 8 + 12 + 8 + 6 or ((data[4] & 7) << 8 | data[5]) * 4 + 2 != n:
            return self.drop("malformed", port, "port_rcv_errors")
        c = vcrc16(data[:-2])
        if data[-2] != (c & 0xFF) or data[-1] != (c >> 8):
            return self.drop("vcrc", port, "port_rcv_errors")
        try:
            pkt = w.split_ud_packet(data)
        except w.ParseError as exc:
            return self.drop(exc.kind, port, "port_rcv_errors")
        dlid = pkt.lrh.dlid
        dqp = pkt.bth.dest_qp
        mcast = w.is_mcast_lid(dlid)
        if mcast:
            if dlid not in self.mcast_lids:
                return self.drop("mlid_not_joined", port, "port_rcv_errors")
            if dqp != w.IPOIB_BROADCAST_QPN or pkt.grh is None:
                return self.drop("mcast_needs_qp_ffffff_and_grh", port, "port_rcv_errors")
        elif dlid == w.LID_PERMISSIVE:
            if dqp != 0:
                return self.drop("permissive_dlid_not_qp0", port, "port_rcv_errors")
        elif not port.owns_lid(dlid):
            return self.drop("dlid_mismatch", port, "port_rcv_errors")
        if dqp == 0:
            if pkt.lrh.vl != w.VL15:
                return self.drop("qp0_not_vl15", port, "port_rcv_errors")
            return self.handle_qp0(pkt, in_port, now)
        if pkt.lrh.vl == w.VL15:
            return self.drop("vl15_not_qp0", port, "port_rcv_errors")
        if port.state == sa.PORT_ARMED:
            port.state = sa.PORT_ACTIVE
            self.events.append(("port_state", in_port, (sa.PORT_ARMED, sa.PORT_ACTIVE)))
        elif port.state != sa.PORT_ACTIVE:
            return self.drop("port_not_active")
        pidx = port.pkey_index(pkt.bth.pkey)
        if pidx is None:
            port.p_key_violations = min(port.p_key_violations + 1, 0xFFFF)
            return self.drop("pkey")
        if mcast:
            members = 0  # one copy per attached QP: each is delivered or counted as its own drop
            for qpn in sorted(self.mcast_lids.get(dlid, ())):
                qp = self.qps.get(qpn)
                if qp is None or not any(g == pkt.grh.dgid and m == dlid for g, m in qp.mcast):
                    continue
                members += 1
                if pkt.deth.qkey != qp.qkey:
                    port.q_key_violations = min(port.q_key_violations + 1, 0xFFFF)
                    self.drops["qkey"] += 1
                    continue
                self._deliver(qp, pkt, in_port, pidx)
            if not members:
                self.drops["mcast_no_member_qp"] += 1
            return []
        qp = self.qps.get(dqp)
        if qp is None:
            return self.drop("no_qp")
        if dqp == 1:
            if pkt.deth.qkey != w.QKEY_GSI:
                port.q_key_violations = min(port.q_key_violations + 1, 0xFFFF)
                return self.drop("qkey")
            return self.handle_qp1(pkt, in_port, pidx, now)
        if pkt.deth.qkey != qp.qkey:
            port.q_key_violations = min(port.q_key_violations + 1, 0xFFFF)
            return self.drop("qkey")
        self._deliver(qp, pkt, in_port, pidx)
        return []

    def _deliver(self, qp: UDQP, pkt: w.UDPacket, in_port: int, pidx: int) -> bool:
        port = self.ports[in_port]
        c = Completion(port=in_port, slid=pkt.lrh.slid, dlid_path_bits=pkt.lrh.dlid & ((1 << port.lmc) - 1),
                       src_qp=pkt.deth.src_qp, pkey=pkt.bth.pkey, pkey_index=pidx, sl=pkt.lrh.sl,
                       grh=pkt.grh, payload=pkt.payload, qkey=pkt.deth.qkey)
        if not qp.deliver(c):
            self.drops["rq_overflow"] += 1
            return False
        return True

    def handle_qp1(self, pkt: w.UDPacket, in_port: int, pidx: int, now: float) -> list:
        try:
            mad = w.parse_mad(pkt.payload)
        except w.ParseError:
            mad = None
        if mad is not None and mad.mgmt_class == w.CLASS_PERF and not mad.method & w.RESPONSE_BIT:
            resp = self.pma(mad, in_port)
            return self.send_raw(in_port, self.build_reply(pkt, resp.pack(), self.ports[in_port], vl=0))
        if self.gsi_consumer is not None:
            return self.gsi_consumer(pkt, in_port, now) or []
        self._deliver(self.qps[1], pkt, in_port, pidx)
        return []

    def send_smp_response(self, req: w.UDPacket, resp, in_port: int, now: float = 0.0) -> list:
        port = self.mgmt_port(in_port)
        if not isinstance(resp, w.SMPDirected) and port.owns_lid(req.lrh.slid):
            # a LID-routed SMP this port sent to its own LID was looped back (send_smp); so is the
            # answer: a packet to our own LID never reaches the wire (the switch would drop it as
            # routed back to its ingress port)
            return self.receive_local(port.num, self.build_reply(req, resp.pack(), port, vl=w.VL15), now)
        return super().send_smp_response(req, resp, in_port, now)

    def smp_to_local_sm(self, pkt, mad, in_port: int, now: float) -> list:
        if mad.method == w.TRAP_REPRESS:
            self.trap_repressed(mad.tid)
            return []
        if self.sm_consumer is not None:
            return self.sm_consumer(pkt, mad, in_port, now) or []
        if self.qps[0].deliver(Completion(in_port, pkt.lrh.slid, 0, pkt.deth.src_qp, pkt.bth.pkey, 0,
                                          pkt.lrh.sl, pkt.grh, mad.pack(), pkt.deth.qkey)):
            return []
        return self.drop("qp0_rq_overflow")

    # -- events --------------------------------------------------------------------------------

    def apply_port_info(self, port: Port, pi: w.PortInfo, now: float) -> None:
        super().apply_port_info(port, pi, now)
        port.client_reregister = 0  # a pulse: the event was recorded, the bit does not stick

    def snapshot(self) -> dict:
        d = super().snapshot()
        d["qps"] = {qpn: {"qkey": qp.qkey, "received": qp.received, "sent": qp.sent,
                          "rq": len(qp.rq), "rq_overflow": qp.rq_overflow}
                    for qpn, qp in self.qps.items()}
        d["mcast_lids"] = sorted(self.mcast_lids)
        return d


def _smp_packet(smp, *, slid: int, dlid: int) -> bytes:
    return w.build_ud_packet(slid=slid, dlid=dlid, dest_qp=0, src_qp=0, qkey=0, vl=w.VL15, payload=smp.pack())


def send_smp(hca: HCA, port_num: int, smp, now: float = 0.0, dlid: int | None = None) -> list:
    """Originate an SMP from ``hca``'s port (what an SM does). Directed-route SMPs follow their
    initial path; LID-routed ones go to ``dlid``. Returns what goes on the wire; an SMP to this very
    node (hop count 0, or our own LID) is answered locally and the answer reaches the SM consumer."""
    from . import smi

    port = hca.ports[port_num]
    if isinstance(smp, w.SMPDirected):
        dec = smi.dr_originate(smp)
        if dec.action == smi.DROP:
            return hca.drop("dr_originate")
        slid = w.LID_PERMISSIVE if smp.dr_slid == w.LID_PERMISSIVE else port.lid
        if dec.action == smi.LOCAL:
            raw = _smp_packet(dec.smp, slid=slid, dlid=w.LID_PERMISSIVE)
            return hca.handle_qp0(w.split_ud_packet(raw), port_num, now)
        return hca.send_raw(dec.port, _smp_packet(dec.smp, slid=slid, dlid=w.LID_PERMISSIVE))
    if dlid is None:
        raise ValueError("a LID-routed SMP needs a DLID")
    raw = _smp_packet(smp, slid=port.lid, dlid=dlid)
    if port.owns_lid(dlid):
        return hca.handle_qp0(w.split_ud_packet(raw), port_num, now)
    return hca.send_raw(port_num, raw)
