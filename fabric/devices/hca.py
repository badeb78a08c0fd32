"""A host channel adapter: 1 or 2 ports, UD QPs (QP0 SMI, QP1 GSI, general UD QPs), SMA and PMA.

Receive checks run in the order hardware applies them (IBA vol. 1 ch. 7, 9 and 10): link-level
integrity (length, VCRC, ICRC), DLID, port state, P_Key, destination QP, Q_Key; the table of them
is :data:`fabric.devices.ingress.HCA_INGRESS`. Each failure drops the packet and counts it where
hardware counts it; the ``drops`` Counter says exactly why.

One way out: whatever the HCA sends (a consumer's ``post_send``, a compiled driver's
``post_segment``, the SMA's and PMA's answers) is counted on its port and appended to ``outbox``.
"""

from __future__ import annotations

import enum

from collections import deque
from dataclasses import dataclass

from .. import wire as w
from ..wire import smp_attrs as sa
from ..wire.burst import Segment, decode_burst_packets
from ..wire.compiled import wirefast
from ..wire.crc import vcrc16
from .base import SMP_PACKET_LEN, SMP_REQUEST_LID, SMP_RESPONSE_DR, Device, _smafast, smp_arrival
from . import smi
from .ingress import count_failure
from .cores import HCACore, QPCore
from .port import Port

FIRST_QPN = 0x48
MAX_QPN = 0xFFFFFF
RQ_DEPTH = 4096
# the firmware version a CA reports to its host (no MAD carries it: ibsim's client protocol and
# ibstat show it)
FW_VERSION = 1


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


class UDQP(QPCore):
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


class HCA(Device, HCACore):
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
        # QP0 responses and traps go here (the SM on this node): fn(pkt, mad, in_port, now), pkt
        # None for directed-route responses the compiled path parsed
        self.sm_consumer = None
        # responses to SMPs sent through the ``smp``/``smps`` RPCs, by TID: kept here (None until
        # they come) before an SM on this node or QP0 sees them, so a diag tool works on the SM's node
        self.smp_waiting: dict[int, bytes | None] = {}
        self.gsi_consumer = None  # QP1 GMPs that are not PMA (SA queries and answers)
        self.sm_info_source = None  # the SM on this node: a callable giving its SMInfo
        # software attached to a port as to /dev/infiniband/umadN (fabric.simproto): it sees the
        # MADs above before the consumers, ``take_smp``/``take_gmp`` returning True when it took one
        self.user_mad = None
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
    #
    # Everything the HCA puts on a wire leaves through ``_transmit`` (one packet) or
    # ``post_segment`` (a burst a compiled driver built), or their compiled twin for an SMP
    # (``_smafast._put_unicast``: an SMA's answer, a directed-route request of our SM or an ibsim
    # client): all count it on the port and append it to ``outbox``, which only the host empties.
    # Consumers never handle packets on their way out.

    def post_send(self, qpn: int, *, dlid: int, dest_qp: int, payload: bytes, qkey: int | None = None,
                  pkey_index: int | None = None, sl: int = 0, dgid: bytes | None = None,
                  hoplmt: int = 255, tclass: int = 0, flow_label: int = 0, src_path_bits: int = 0,
                  now: float = 0.0, port_num: int | None = None) -> bool:
        """Send one UD datagram: to the wire (through ``outbox``), or, to our own LID, straight back
        to the receive side. False when the HCA refused it (counted in ``drops``).

        A Q_Key with its high bit set means "use the QP's own Q_Key" (IBA 10.2.5): a consumer cannot
        send a controlled Q_Key it was not given.
        """
        qp = self.qps[qpn]
        port = self.ports[port_num or qp.port or 1]
        if qkey is None or qkey & 0x80000000 and qpn > 1:
            qkey = qp.qkey
        idx = qp.pkey_index if pkey_index is None else pkey_index
        if not 0 <= idx < len(port.pkeys) or not port.pkeys[idx] & 0x7FFF:
            self.drop("send_bad_pkey_index")
            return False
        management = qpn == 0
        if not port.link_up or (not management and port.state != sa.PORT_ACTIVE):
            self.refuse_sends(port.num, 1)
            return False
        mtu = sa.MTU_BYTES.get(port.neighbor_mtu, 4096)
        if len(payload) > mtu and not management:
            self.drop("send_over_mtu")
            return False
        sgid = self.gid(port.num) if dgid is not None else None
        raw = w.build_ud_packet(slid=port.lid | src_path_bits, dlid=dlid, dest_qp=dest_qp, src_qp=qpn,
                                qkey=qkey, pkey=port.pkeys[idx], sl=sl, vl=w.VL15 if management else 0,
                                sgid=sgid, dgid=dgid, hoplmt=hoplmt, tclass=tclass, flow_label=flow_label,
                                payload=payload)
        qp.sent += 1
        if port.owns_lid(dlid) and not management:
            # HCA loopback never reaches the wire; what the receiver answers (an SA on this very
            # node answering, and the SMPs its answer triggers) does
            self.receive_local(port.num, raw, now)
            return True
        if w.is_mcast_lid(dlid) and dlid in self.mcast_lids:
            self.receive_local(port.num, raw, now)  # multicast loopback
        self._transmit(port, raw)
        return True

    def post_segment(self, qpn: int, port_num: int, count: int, words: int, buf) -> None:
        """A compiled driver's send: ``count`` unicast UD packets from QP ``qpn``, built whole into
        ``buf`` (a :class:`Segment`'s buffer, ``BURST_HEADROOM`` octets free in front), ``words``
        4-octet words of them in all. The driver promises what ``post_send`` would check per packet
        (a valid P_Key index, the MTU, no loopback); the port's state is the HCA's to check."""
        port = self.ports[port_num]
        if not port.link_up or port.state != sa.PORT_ACTIVE:
            self.refuse_sends(port_num, count)
            return
        port.counters.add_xmit(count, words)
        self.qps[qpn].sent += count
        self.outbox.append(Segment(port_num, count, buf))

    if wirefast is not None:  # the same, compiled (one call per burst a compiled driver sends)
        post_segment_py = post_segment
        post_segment = wirefast.hca_post_segment

    def refuse_sends(self, port_num: int, count: int) -> None:
        """Sends that found their port not Active: PortXmitDiscards, as hardware counts them."""
        self.ports[port_num].counters.inc("port_xmit_discards", count)
        self.drops["send_port_not_active"] += count

    def _transmit(self, port: Port, raw: bytes) -> None:
        port.counters.count_xmit(len(raw), w.LID_MCAST_FIRST <= ((raw[2] << 8) | raw[3]) <= w.LID_MCAST_LAST)
        self.outbox.append((port.num, raw))

    def send_raw(self, port_num: int, raw: bytes) -> bool:
        """Put an already built packet on the wire (the SM sends SMPs this way)."""
        port = self.ports[port_num]
        if port.phys != sa.PHYS_LINKUP:  # not port.link_up, without the property's call
            port.counters.inc("port_xmit_discards")
            self.drop("send_port_down")
            return False
        self._transmit(port, raw)
        return True

    def transmit_mgmt(self, out_port: int, raw: bytes) -> None:
        self.send_raw(out_port, raw)

    def route_out(self, packet: bytes, port_hint: int) -> None:
        self.send_raw(port_hint or 1, packet)

    # -- receive -------------------------------------------------------------------------------

    def receive(self, in_port: int, data: bytes, now: float) -> None:
        port = self.ports.get(in_port)
        if port is None:
            return self.drop("bad_ingress_port")
        if not port.link_up:
            port.counters.lost["ingress_down"] += 1
            return self.drop("ingress_link_down")
        n = len(data)
        # PortRcvPkts counts packets with errors too (IBA 16.1.3.5): before any check
        port.counters.count_rcv(n, n >= 4 and w.LID_MCAST_FIRST <= ((data[2] << 8) | data[3]) <= w.LID_MCAST_LAST)
        self.receive_local(in_port, data, now)

    def receive_burst(self, in_port: int, burst, offset: int, count: int, now: float) -> None:
        """A link burst: through ``rx_accel`` when there is one and the port is Active, otherwise
        (and for whatever it hands back) packet by packet.

        ``rx_accel(port, burst, offset, count, now)`` returns ``(slow, packets, words, taken)``:
        the packets it leaves to the per-packet path, how many it took (and their 4-octet words)
        and ``[(qpn, n), ...]``, what each of its QPs took; the HCA counts them."""
        port = self.ports.get(in_port)
        slow = None
        if self.rx_accel is not None and port is not None and port.link_up and port.state == sa.PORT_ACTIVE:
            # bad framing raises ParseError before any packet is taken, as the decoder below would
            slow, packets, words, taken = self.rx_accel(port, burst, offset, count, now)
            if packets:
                port.counters.add_rcv(packets, words)
                for qpn, n in taken:
                    self.qps[qpn].received += n
        if slow is None:
            slow = decode_burst_packets(burst, offset, count)
        for pkt in slow:
            self.receive(in_port, pkt, now)

    def receive_local(self, in_port: int, data: bytes, now: float) -> int | None:
        """The ingress checks of :data:`fabric.devices.ingress.HCA_INGRESS`, in that order, then
        delivery to the QP (or QPs, for multicast), the SMA or the GSI. :data:`TAKEN_BY_DEVICE`
        when the SMA or software attached through ibsim's protocol took it by the compiled path
        (no software of the node ran: the device host need not run its timers)."""
        n = len(data)
        if n == SMP_PACKET_LEN and smp_arrival is not None and data[0] == 0xF0:
            taken = self._smp_fast(in_port, data, now)
            if taken:
                return taken
        port = self.ports[in_port]
        if n < 8 + 12 + 8 + 6 or ((data[4] & 7) << 8 | data[5]) * 4 + 2 != n:
            return self._reject("malformed", port)
        c = vcrc16(data[:-2])
        if data[-2] != (c & 0xFF) or data[-1] != (c >> 8):
            return self._reject("vcrc", port)
        try:
            pkt = w.split_ud_packet(data)
        except w.ParseError as exc:
            return self._reject(exc.kind, port)
        dlid = pkt.lrh.dlid
        dqp = pkt.bth.dest_qp
        mcast = w.is_mcast_lid(dlid)
        if mcast:
            if dlid not in self.mcast_lids:
                return self._reject("mlid_not_joined", port)
            if dqp != w.QPN_MULTICAST or pkt.grh is None:
                return self._reject("mcast_needs_qp_ffffff_and_grh", port)
        elif dlid == w.LID_PERMISSIVE:
            if dqp != 0:
                return self._reject("permissive_dlid_not_qp0", port)
        elif not port.owns_lid(dlid):
            return self._reject("dlid_mismatch", port)
        if dqp == 0:
            if pkt.lrh.vl != w.VL15:
                return self._reject("qp0_not_vl15", port)
            return self.handle_qp0(pkt, in_port, now)
        if pkt.lrh.vl == w.VL15:
            return self._reject("vl15_not_qp0", port)
        if port.state == sa.PORT_ARMED:
            port.state = sa.PORT_ACTIVE
            self.events.append(("port_state", in_port, (sa.PORT_ARMED, sa.PORT_ACTIVE)))
        elif port.state != sa.PORT_ACTIVE:
            return self._reject("port_not_active", port)
        pidx = port.pkey_index(pkt.bth.pkey)
        if pidx is None:
            return self._reject("pkey", port)
        if mcast:
            members = 0  # one copy per attached QP: each is delivered or counted as its own drop
            for qpn in sorted(self.mcast_lids.get(dlid, ())):
                qp = self.qps.get(qpn)
                if qp is None or not any(g == pkt.grh.dgid and m == dlid for g, m in qp.mcast):
                    continue
                members += 1
                if pkt.deth.qkey != qp.qkey:
                    self._reject("qkey", port)
                    continue
                self._deliver(qp, pkt, in_port, pidx)
            if not members:
                self._reject("mcast_no_member_qp", port)
            return
        qp = self.qps.get(dqp)
        if qp is None:
            return self._reject("no_qp", port)
        if pkt.deth.qkey != (w.QKEY_GSI if dqp == 1 else qp.qkey):
            return self._reject("qkey", port)
        if dqp == 1:
            return self.handle_qp1(pkt, in_port, pidx, now)
        self._deliver(qp, pkt, in_port, pidx)

    def _smp_fast_py(self, in_port: int, data, now: float) -> int:
        """SMPs by the compiled path: a request to our SMA (Device.sma_fast), or the answer to a
        directed-route request: to software attached through ibsim's protocol (OpenSM) as its
        packet, or to our SM parsed once (``sm_consumer`` gets no UDPacket then: None). 0: the
        full path; TAKEN_BY_DEVICE, or TAKEN_BY_SOFTWARE when our SM took it. ``_smp_fast`` is
        this in C when built (``fabric.devices._smafast.hca_smp_fast``)."""
        kind = smp_arrival(data)
        if kind == SMP_REQUEST_LID and data[28 + 3] & w.RESPONSE_BIT:
            return self._lid_answer(in_port, data, now)
        if kind != SMP_RESPONSE_DR:
            return TAKEN_BY_DEVICE if kind and self.sma_fast(in_port, data, now, kind) else 0
        if not data[28 + 3] & w.RESPONSE_BIT or self.smp_waiting:
            return 0
        if self.user_mad is not None:
            return TAKEN_BY_DEVICE if self.user_mad.take_dr_answer(data, in_port, now) else 0
        if self.sm_consumer is None:
            return 0
        mad = bytearray(data[28:28 + w.MAD_SIZE])
        mad[DR_HOP_PTR] = 0  # as C14-13:3 leaves it at the requester
        self.sm_consumer(None, w.SMPDirected.unpack(bytes(mad)), in_port, now)
        return TAKEN_BY_SOFTWARE

    def _lid_answer(self, in_port: int, data, now: float) -> int:
        """A LID-routed response for our SM (its Sets after the LIDs), as the full path hands it
        over (the DLID check, handle_qp0, smp_to_local_sm), parsed once; 0 for anything else."""
        dlid = data[2] << 8 | data[3]
        if self.smp_waiting or self.user_mad is not None or self.sm_consumer is None:
            return 0
        if dlid != w.LID_PERMISSIVE and (w.is_mcast_lid(dlid) or not self.ports[in_port].owns_lid(dlid)):
            return 0
        self.sm_consumer(None, w.SMPLid.unpack(bytes(data[28:28 + w.MAD_SIZE])), in_port, now)
        return TAKEN_BY_SOFTWARE

    _smp_fast = _smafast.hca_smp_fast if _smafast is not None else _smp_fast_py

    def _reject(self, reason: str, port: Port) -> None:
        count_failure(self.drops, port, reason)

    def _deliver(self, qp: UDQP, pkt: w.UDPacket, in_port: int, pidx: int) -> bool:
        port = self.ports[in_port]
        c = Completion(port=in_port, slid=pkt.lrh.slid, dlid_path_bits=pkt.lrh.dlid & ((1 << port.lmc) - 1),
                       src_qp=pkt.deth.src_qp, pkey=pkt.bth.pkey, pkey_index=pidx, sl=pkt.lrh.sl,
                       grh=pkt.grh, payload=pkt.payload, qkey=pkt.deth.qkey)
        if not qp.deliver(c):
            self._reject("rq_overflow", port)
            return False
        return True

    def handle_qp1(self, pkt: w.UDPacket, in_port: int, pidx: int, now: float) -> None:
        try:
            mad = w.parse_mad(pkt.payload)
        except w.ParseError:
            mad = None
        if mad is not None and mad.mgmt_class == w.CLASS_PERF and not mad.method & w.RESPONSE_BIT:
            port = self.ports[in_port]
            reply = self.build_reply(pkt, self.pma(mad, in_port).pack(), port, vl=0)
            if port.owns_lid(pkt.lrh.slid):
                self.receive_local(in_port, reply, now)  # perfquery of our own port: looped back
            else:
                self.send_raw(in_port, reply)
            return
        if self.user_mad is not None and self.user_mad.take_gmp(pkt, in_port, now):
            return
        if self.gsi_consumer is not None:
            self.gsi_consumer(pkt, in_port, now)
            return
        self._deliver(self.qps[1], pkt, in_port, pidx)

    def send_smp_response(self, req: w.UDPacket, resp, in_port: int, now: float = 0.0) -> None:
        port = self.mgmt_port(in_port)
        if not isinstance(resp, w.SMPDirected) and port.owns_lid(req.lrh.slid):
            # a LID-routed SMP this port sent to its own LID was looped back (send_smp); so is the
            # answer: a packet to our own LID never reaches the wire (the switch would drop it as
            # routed back to its ingress port)
            return self.receive_local(port.num, self.build_reply(req, resp.pack(), port, vl=w.VL15), now)
        super().send_smp_response(req, resp, in_port, now)

    def sm_info_request(self, pkt, mad, in_port: int, now: float) -> bool:
        # an SM attached through user MADs (OpenSM) answers SMInfo itself; ours through its agent
        if self.user_mad is not None and self.user_mad.take_smp(pkt, mad, in_port, now):
            return True
        if self.sm_info_source is None or mad.method not in (w.GET, w.SET):
            return False
        # a Set (HandOver, Acknowledge, Disable, ...) is answered with the state as it is: our SMs
        # hand over by polling, not by being told
        data = self.sm_info_source().pack().ljust(len(mad.data), b"\0")  # SMP data is 64 octets
        self.send_smp_response(pkt, self._smp_reply(mad, 0, data), in_port, now)
        return True

    def smp_to_local_sm(self, pkt, mad, in_port: int, now: float) -> None:
        if mad.method == w.TRAP_REPRESS:
            self.trap_repressed(mad.tid)
            return
        if mad.method & w.RESPONSE_BIT and self.smp_waiting.get(mad.tid, b"") is None:
            self.smp_waiting[mad.tid] = mad.pack()
            return
        if self.user_mad is not None and self.user_mad.take_smp(pkt, mad, in_port, now):
            return
        if self.sm_consumer is not None:
            self.sm_consumer(pkt, mad, in_port, now)
            return
        if not self.qps[0].deliver(Completion(in_port, pkt.lrh.slid, 0, pkt.deth.src_qp, pkt.bth.pkey, 0,
                                              pkt.lrh.sl, pkt.grh, mad.pack(), pkt.deth.qkey)):
            self.drop("qp0_rq_overflow")

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


DR_HOP_PTR, DR_HOP_CNT, DR_SLID, DR_INITIAL_PATH = 6, 7, 32, 128  # offsets in a directed-route SMP


class TakenBy(enum.IntEnum):
    """What HCA.receive_local says of a packet its compiled SMP path took: the device (its SMA) or
    software attached through ibsim's protocol took it, and no software of the node ran; or our SM
    did. Members, not plain numbers: the device host tests for them by identity, so that no other
    return value reads as one."""

    DEVICE = 1
    SOFTWARE = 2


TAKEN_BY_DEVICE, TAKEN_BY_SOFTWARE = TakenBy.DEVICE, TakenBy.SOFTWARE
# send_dr_request's packet in C (None: the Python below, the reference)
_dr_request_packet = wirefast.dr_request_packet if wirefast is not None else None


def send_dr_request(hca: HCA, port_num: int, mad: bytes) -> bool | None:
    """A directed-route SMP request given as its 256 octets (what software attached through ibsim's
    protocol sends), in the plain case: outgoing, hop pointer 0, a hop count of 1 to 63, both DR
    LIDs permissive. The originating node's step (C14-9:1: hop pointer 1, out of InitialPath[1])
    is done on the octets and the packet built in C, without parsing the MAD. Whether it went on
    the wire; None for any other SMP (``send_smp`` decides)."""
    if _dr_request_packet is not None:
        plain = _dr_request_packet(mad)
        return None if plain is None else send_dr_packet(hca, *plain)
    if (len(mad) != w.MAD_SIZE or mad[1] != w.CLASS_SUBN_DIRECTED or mad[3] & w.RESPONSE_BIT or mad[4] & 0x80
            or mad[DR_HOP_PTR] or not 1 <= mad[DR_HOP_CNT] <= 63
            or mad[DR_SLID:DR_SLID + 4] != b"\xff\xff\xff\xff"):
        return None
    m = bytearray(mad)
    m[DR_HOP_PTR] = 1
    return send_dr_packet(hca, mad[DR_INITIAL_PATH + 1], w.build_ud_packet(
        slid=w.LID_PERMISSIVE, dlid=w.LID_PERMISSIVE, dest_qp=0, src_qp=0, qkey=0, vl=w.VL15, payload=bytes(m)))


def send_dr_packet_py(hca: HCA, out: int, packet: bytes) -> bool:
    """Such a request, built (``fabric._wirefast.sim_dr_request`` builds it from ibsim's
    datagram), onto the wire by port ``out`` (its InitialPath[1]). Whether it went.
    ``send_dr_packet`` is this in C when built (``fabric.devices._smafast``)."""
    if out not in hca.ports or out == 0:
        hca.drop("dr_originate")
        return False
    return hca.send_raw(out, packet)


send_dr_packet = _smafast.send_dr_packet if _smafast is not None else send_dr_packet_py
if _smafast is not None:
    _smafast.setup_hca(TAKEN_BY_DEVICE, TAKEN_BY_SOFTWARE, w.SMPDirected.unpack, w.SMPLid.unpack, send_dr_packet_py)


def send_smp_octets(hca: HCA, port_num: int, raw: bytes, now: float = 0.0, dlid: int | None = None,
                    parsed=None) -> None:
    """:func:`send_smp` for an SMP given as its 256 octets (an SM engine's ``SendSmp.raw``): a
    plain directed-route request goes from the octets, anything else as ``parsed()`` (the octets
    parsed) takes send_smp's way."""
    if send_dr_request(hca, port_num, raw) is None:
        send_smp(hca, port_num, parsed() if parsed is not None else w.parse_mad(raw), now, dlid=dlid)


def send_smp(hca: HCA, port_num: int, smp, now: float = 0.0, dlid: int | None = None) -> None:
    """Originate an SMP from ``hca``'s port (what an SM does). Directed-route SMPs follow their
    initial path; LID-routed ones go to ``dlid``. What goes on the wire goes to ``hca.outbox``; an
    SMP to this very node (hop count 0, or our own LID) is answered locally and the answer reaches
    the SM consumer."""
    port = hca.ports[port_num]
    if isinstance(smp, w.SMPDirected):
        if smp.hop_cnt and not smp.d and send_dr_request(hca, port_num, smp.pack()) is not None:
            return  # the plain request (an SM's every discovery SMP): its first step on the octets
        dec = smi.dr_originate(smp)
        if dec.action == smi.DROP or dec.action != smi.LOCAL and dec.port not in hca.ports:
            return hca.drop("dr_originate")  # also a first hop out of a port this CA does not have
        slid = w.LID_PERMISSIVE if smp.dr_slid == w.LID_PERMISSIVE else port.lid
        if dec.action == smi.LOCAL:
            raw = _smp_packet(dec.smp, slid=slid, dlid=w.LID_PERMISSIVE)
            return hca.handle_qp0(w.split_ud_packet(raw), port_num, now)
        hca.send_raw(dec.port, _smp_packet(dec.smp, slid=slid, dlid=w.LID_PERMISSIVE))
        return
    if dlid is None:
        raise ValueError("a LID-routed SMP needs a DLID")
    raw = _smp_packet(smp, slid=port.lid, dlid=dlid)
    if port.owns_lid(dlid):
        return hca.handle_qp0(w.split_ud_packet(raw), port_num, now)
    hca.send_raw(port_num, raw)
