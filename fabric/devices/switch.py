"""An InfiniBand switch: forwarding by DLID through the LFT and MFT, SMA and PMA on port 0."""

from __future__ import annotations

import array

from .. import wire as w
from ..wire import smp_attrs as sa
from ..wire.burst import BURST_HEADROOM, Segment, decode_burst_packets
from ..wire.compiled import wirefast
from ..wire.crc import icrc_bytes, vcrc16, vcrc_bytes
from .base import Device, SmpError
from .cores import SwitchCore
from .port import Port, port_core_fields, port_info_overrides

_forward_burst = wirefast.forward_burst if wirefast is not None else None  # None: packet by packet
_dr_transit_c = wirefast.dr_transit if wirefast is not None else None

LFT_CAP = 0xC000  # every unicast LID
MFT_CAP = 1024  # MLIDs 0xC000 .. 0xC3FF
MGMT_HDR = 8 + 12 + 8 + 6  # LRH BTH DETH + CRCs, the overhead around a payload without GRH
DR_MAD_OFF = 8 + 12 + 8  # where the MAD starts in an SMP packet (no GRH)
DR_PACKET_LEN = DR_MAD_OFF + 256 + 6


def _dr_transit_py(data: bytes, in_port: int, num_ports: int) -> tuple:
    """fabric._wirefast.dr_transit in Python: (egress port, packet), (0, None) when the SMP does
    not simply pass through, (-1, None) when its path names no port here."""
    if len(data) != DR_PACKET_LEN or data[0] != 0xF0 or data[1] & 3 != w.LNH_IBA_LOCAL or data[2:4] != b"\xff\xff":
        return 0, None
    m = DR_MAD_OFF
    if ((data[4] & 7) << 8 | data[5]) * 4 + 2 != len(data) or data[8] != w.OPCODE_UD_SEND_ONLY \
            or data[9] & 0x3F or any(data[13:16]) or any(data[25:28]):  # PadCnt, TVer; DestQP, SrcQP 0
        return 0, None
    if data[m] != 1 or data[m + 1] != w.CLASS_SUBN_DIRECTED or data[m + 2] != 1:
        return 0, None
    if not _vcrc_ok(data) or icrc_bytes(data[:-6]) != data[-6:-2]:
        return 0, None
    hp, hc = data[m + 6], data[m + 7]
    if hc > 63:
        return 0, None
    d = data[m + 4] & 0x80
    if not d and 1 <= hp < hc:
        out = data[m + 128 + hp + 1]
    elif d and 2 <= hp <= hc:
        out = data[m + 192 + hp - 1]
    else:
        return 0, None
    if not 1 <= out <= num_ports:
        return -1, None
    pkt = bytearray(data)
    if not d:
        pkt[m + 192 + hp] = in_port
        pkt[m + 6] = hp + 1
    else:
        pkt[m + 6] = hp - 1
    body = bytes(pkt[:-6])
    raw = body + icrc_bytes(body)
    return out, raw + vcrc_bytes(raw)


def _vcrc_ok(data: bytes) -> bool:
    c = vcrc16(data[:-2])
    return data[-2] == (c & 0xFF) and data[-1] == (c >> 8)


SWITCH_PORT0_CAPS = sa.CAP_IS_TRAP_SUP | sa.CAP_IS_SYS_IMAGE_GUID_SUP  # what port 0's PortInfo offers
PKEY_SLOTS = 32  # entries per port in the table the C path checks (fabric._wirefast)


def _partition_in(port: Port, pkey: int) -> bool:
    """A switch port lets a P_Key through when its table has the same partition (the low 15
    bits): whether two limited members may talk is for the end ports to enforce."""
    base = pkey & 0x7FFF
    return base != 0 and any(k & 0x7FFF == base for k in port.pkeys[:PKEY_SLOTS])


def _bth_pkey(data: bytes, lnh: int) -> int:
    """The P_Key in a packet's BTH (after the LRH, and the GRH when there is one)."""
    off = 8 + (40 if lnh == w.LNH_IBA_GLOBAL else 0) + 2
    return (data[off] << 8) | data[off + 1] if len(data) >= off + 2 else 0


class Switch(Device, SwitchCore):
    kind = "switch"
    node_type = sa.NODE_TYPE_SWITCH

    def __init__(self, spec, *, lft_cap: int = LFT_CAP, mft_cap: int = MFT_CAP, mtu_cap: int = sa.MTU_4096):
        super().__init__(spec)
        self.ports[0] = Port(0, guid=self.node_guid, physical=False, mtu_cap=mtu_cap)
        for n in range(1, spec.num_ports + 1):
            self.ports[n] = Port(n, mtu_cap=mtu_cap)
        self.lft = bytearray(b"\xff" * lft_cap)
        self.lft_top = 0
        self.mft = [0] * mft_cap  # port bitmask per MLID (bit n = port n)
        self.mft_top = sa.MFT_TOP_NONE  # no entries in use
        self.life_time_value = 0
        self.port_state_change = 0
        self.default_port = 0
        self._flags = bytearray(spec.num_ports + 1)  # per port: 1 link up, 2 active (for the C path)
        self._mtu = None
        self._pkeys = None  # P_Key tables of the enforcing ports, flattened, for the C path
        self._dirty = True  # every port's entries in those tables are to be made again
        self._dirty_ports: set = set()  # ... or only these ports' (a sweep's Sets come one port at a time)

    # -- addressing ----------------------------------------------------------------------------

    def mgmt_port(self, in_port: int) -> Port:
        return self.ports[0]

    def port_guid_for(self, in_port: int) -> int:
        return self.node_guid  # only port 0 has a GUID: the node GUID

    @property
    def lid(self) -> int:
        return self.ports[0].lid

    def lft_port(self, dlid: int) -> int:
        if dlid > self.lft_top or dlid >= len(self.lft):
            return 0xFF
        return self.lft[dlid]

    # -- data path -----------------------------------------------------------------------------

    def _refresh_port_table(self) -> None:
        if not self._dirty and self._mtu is not None:
            dirty, self._dirty_ports = self._dirty_ports, set()
            for n in dirty:
                self._refresh_port(n)
            return
        self._refresh_all()

    @staticmethod
    def _port_flags(n: int, p: Port) -> int:
        """A port's entry in the flags the C path reads: 1 link up, 2 Active, 4 and 8 partition
        enforcement inbound and outbound."""
        return ((1 if p.link_up else 0) | (2 if p.state == sa.PORT_ACTIVE else 0)
                | (4 if n and p.pkey_enforce_in else 0) | (8 if n and p.pkey_enforce_out else 0))

    def _put_pkeys(self, n: int) -> None:
        """Port ``n``'s PKEY_SLOTS entries of the flattened P_Key tables, zero past its own."""
        keys = list(self.ports[n].pkeys[:PKEY_SLOTS])
        self._pkeys[n * PKEY_SLOTS:(n + 1) * PKEY_SLOTS] = array.array("H", keys + [0] * (PKEY_SLOTS - len(keys)))

    def _refresh_port(self, n: int) -> None:
        """One port's entries (a sweep's Sets come one port at a time). The first port to enforce
        partitions brings the flattened tables; a port that stops keeps its rows, unread (the C
        path reads a port's row only when its flags say it enforces)."""
        p = self.ports[n]
        f = self._port_flags(n, p)
        self._flags[n] = f
        self._mtu[n] = sa.MTU_BYTES.get(p.neighbor_mtu, 4096)
        if f & 12:
            if self._pkeys is None:
                self._pkeys = array.array("H", bytes(2 * PKEY_SLOTS * (self.num_ports + 1)))
            self._put_pkeys(n)

    def _mark(self, n: int) -> None:
        self._dirty_ports.add(n)

    def _refresh_all(self) -> None:
        self._dirty_ports = set()
        for n, p in self.ports.items():
            self._flags[n] = self._port_flags(n, p)
        enforcing = [n for n in self.ports if self._flags[n] & 12]
        if enforcing:  # the tables of the ports that enforce, PKEY_SLOTS entries each, for the C path
            self._pkeys = array.array("H", bytes(2 * PKEY_SLOTS * (self.num_ports + 1)))
            for n in enforcing:
                self._put_pkeys(n)
        else:
            self._pkeys = None
        self._mtu = array.array("I", [sa.MTU_BYTES.get(self.ports[n].neighbor_mtu, 4096)
                                      for n in range(self.num_ports + 1)])
        self._dirty = False

    def receive_burst(self, in_port: int, burst: bytes, offset: int, count: int, now: float) -> None:
        """Forward a whole burst: unicast data packets (on an Active port) and directed-route SMPs
        passing through in C, each egress port's share as one Segment in ``outbox``; everything
        else through ``receive``, packet by packet."""
        port = self.ports.get(in_port)
        if _forward_burst is None or port is None or in_port == 0 or not port.link_up:
            return self._receive_each(in_port, burst, offset, count, now)
        if self._dirty or self._dirty_ports:
            self._refresh_port_table()
        p0 = self.ports[0]
        base = p0.lid & ~((1 << p0.lmc) - 1) if p0.lid else 0
        try:
            segs, slow, (rp, rw, relay, egress, dr_path, dr_down) = _forward_burst(
                burst, offset, count, in_port, self.lft, self.lft_top, self._flags, self._mtu,
                base, (1 << p0.lmc) if p0.lid else 0, BURST_HEADROOM,
                burst if type(burst) is bytearray else None,  # an in-process burst: ours to reuse
                self._pkeys, port.state == sa.PORT_ACTIVE)
        except ValueError:
            return self._receive_each(in_port, burst, offset, count, now)
        if rp:
            port.counters.add_rcv(rp, rw)
        if relay:
            port.counters.inc("port_rcv_switch_relay_errors", relay)
            self.drops["no_route"] += relay
        if dr_path:
            self.drops["dr_path"] += dr_path
        if dr_down:
            self.drops["dr_egress_down"] += dr_down
        for k, xp, xw, xd in egress:
            c = self.ports[k].counters
            if xp:
                c.add_xmit(xp, xw)
            if xd:
                c.inc("port_xmit_discards", xd)
                self.drops["egress_not_active"] += xd
        for out, (n, buf) in segs.items():
            self.outbox.append(Segment(out, n, buf))
        for pkt in slow:
            self.receive(in_port, pkt, now)

    def _receive_each(self, in_port, burst, offset, count, now) -> None:
        for pkt in decode_burst_packets(burst, offset, count):
            self.receive(in_port, pkt, now)

    def set_link(self, port_num: int, up: bool, now: float) -> None:
        self._mark(port_num)
        super().set_link(port_num, up, now)

    def receive(self, in_port: int, data: bytes, now: float) -> None:
        port = self.ports.get(in_port)
        if port is None or in_port == 0:
            return self.drop("bad_ingress_port")
        if not port.link_up:
            port.counters.lost["ingress_down"] += 1
            return self.drop("ingress_link_down")
        n = len(data)
        # PortRcvPkts counts packets with errors too (IBA 16.1.3.5): before any check
        dlid = (data[2] << 8) | data[3] if n >= 4 else 0
        mcast = w.LID_MCAST_FIRST <= dlid <= w.LID_MCAST_LAST
        port.counters.count_rcv(n, mcast)
        if n < MGMT_HDR:
            return self.drop("runt", port, "port_rcv_errors")
        vl = data[0] >> 4
        lnh = data[1] & 3
        pktlen = ((data[4] & 7) << 8) | data[5]
        if pktlen * 4 + 2 != n:
            return self.drop("pktlen", port, "port_rcv_errors")
        if not _vcrc_ok(data):
            return self.drop("vcrc", port, "port_rcv_errors")
        if lnh not in (w.LNH_IBA_LOCAL, w.LNH_IBA_GLOBAL):
            return self.drop("lnh", port, "port_rcv_errors")
        if vl == w.VL15:
            if dlid == w.LID_PERMISSIVE and self._dr_transit(in_port, data):
                return
            if dlid == w.LID_PERMISSIVE or self.ports[0].owns_lid(dlid):
                return self._local(in_port, data, now)
            return self._unicast(port, dlid, data, management=True)
        if port.state == sa.PORT_ARMED:
            self._mark(in_port)
            port.state = sa.PORT_ACTIVE  # IBA: an Armed port goes Active on its first data packet
            self.events.append(("port_state", in_port, (sa.PORT_ARMED, sa.PORT_ACTIVE)))
        elif port.state != sa.PORT_ACTIVE:
            return self.drop("ingress_not_active", port, "port_rcv_errors")
        if port.pkey_enforce_in and not _partition_in(port, _bth_pkey(data, lnh)):
            # partition enforcement (IBA 10.9.3, OpenSM's part_enforce): the P_Key is not in
            # this port's table
            return self.drop("pkey_inbound", port, "port_rcv_constraint_errors")
        payload = n - MGMT_HDR - (40 if lnh == w.LNH_IBA_GLOBAL else 0)
        if payload > sa.MTU_BYTES.get(port.neighbor_mtu, 4096):
            return self.drop("over_mtu", port, "port_rcv_errors")
        if mcast:
            return self._multicast(port, dlid, data, payload)
        if dlid == w.LID_PERMISSIVE or dlid == 0:
            return self.drop("bad_dlid", port, "port_rcv_errors")
        if self.ports[0].owns_lid(dlid):
            return self._local(in_port, data, now)
        return self._unicast(port, dlid, data, management=False, payload=payload)

    def _egress_ok(self, out: Port, management: bool, payload: int) -> bool:
        if not out.link_up or (not management and out.state != sa.PORT_ACTIVE):
            out.counters.inc("port_xmit_discards")
            self.drops["egress_not_active"] += 1
            return False
        if payload > sa.MTU_BYTES.get(out.neighbor_mtu, 4096):
            out.counters.inc("port_xmit_discards")
            self.drops["egress_over_mtu"] += 1
            return False
        return True

    def _unicast(self, ingress: Port, dlid: int, data: bytes, *, management: bool, payload: int = 0) -> None:
        out_num = self.lft_port(dlid)
        if out_num == 0xFF or out_num > self.num_ports:
            return self.drop("no_route", ingress, "port_rcv_switch_relay_errors")
        if out_num == ingress.num or out_num == 0:
            return self.drop("route_to_ingress", ingress, "port_rcv_switch_relay_errors")
        out = self.ports[out_num]
        if self._egress_ok(out, management, payload) and (management or self._pkey_out_ok(out, data)):
            out.counters.count_xmit(len(data), False)
            self.outbox.append((out_num, data))

    def _pkey_out_ok(self, out: Port, data: bytes) -> bool:
        if not out.pkey_enforce_out or _partition_in(out, _bth_pkey(data, data[1] & 3)):
            return True
        out.counters.inc("port_xmit_constraint_errors")
        self.drops["pkey_outbound"] += 1
        return False

    def _multicast(self, ingress: Port, mlid: int, data: bytes, payload: int) -> None:
        idx = mlid - w.LID_MCAST_FIRST
        mask = self.mft[idx] if idx < len(self.mft) else 0
        mask &= ~(1 << ingress.num) & ~1  # never back out the ingress port; port 0 takes no data
        if not mask:
            return self.drop("no_mcast_route", ingress, "port_rcv_switch_relay_errors")
        for num in range(1, self.num_ports + 1):
            if mask >> num & 1:
                p = self.ports[num]
                if self._egress_ok(p, False, payload) and self._pkey_out_ok(p, data):
                    p.counters.count_xmit(len(data), True)
                    self.outbox.append((num, data))

    def route_out(self, packet: bytes, port_hint: int) -> None:
        """A packet the switch itself originates (SMA/PMA response, trap), routed by its DLID."""
        dlid = (packet[2] << 8) | packet[3]
        out_num = self.lft_port(dlid)
        if out_num == 0xFF or out_num == 0 or out_num > self.num_ports:
            return self.drop("no_route_from_port0")
        out = self.ports[out_num]
        if self._egress_ok(out, packet[0] >> 4 == w.VL15, 0):
            out.counters.count_xmit(len(packet), False)
            self.outbox.append((out_num, packet))

    def transmit_mgmt(self, out_port: int, raw: bytes) -> None:
        out = self.ports.get(out_port)
        if out is None or out_port == 0 or out.phys != sa.PHYS_LINKUP:  # not out.link_up, without its call
            return self.drop("dr_egress_down")
        out.counters.count_xmit(len(raw), False)
        self.outbox.append((out_port, raw))

    def _dr_transit(self, in_port: int, data: bytes) -> bool:
        """A directed-route SMP passing through (not for this switch): update the hop pointer and
        return path in place and re-seal the CRCs, without parsing the whole MAD. The same rules
        as smi.dr_receive (C14-9:2 and C14-13:2), in C when built (fabric._wirefast.dr_transit,
        which the burst path uses too); anything else returns False for the full path."""
        if _dr_transit_c is not None:
            out, raw = _dr_transit_c(data, in_port, self.num_ports)
        else:
            out, raw = _dr_transit_py(data, in_port, self.num_ports)
        if out == 0:
            return False
        if out < 0:
            self.drop("dr_path")
        else:
            self.transmit_mgmt(out, raw)
        return True

    # -- local delivery (port 0: SMA on QP0, PMA on QP1) ---------------------------------------

    def _local(self, in_port: int, data: bytes, now: float) -> None:
        if not self.sma_fast(in_port, data, now):
            self._local_full(in_port, data, now)

    def _local_full(self, in_port: int, data: bytes, now: float) -> None:
        """What the compiled SMA (sma_fast) did not take."""
        ingress = self.ports[in_port]
        try:
            pkt = w.split_ud_packet(data)
        except w.ParseError as exc:
            return self.drop(f"local_{exc.kind}", ingress, "port_rcv_errors")
        qp = pkt.bth.dest_qp
        if qp == 0:
            if pkt.lrh.vl != w.VL15:
                return self.drop("qp0_not_vl15", ingress, "port_rcv_errors")
            return self.handle_qp0(pkt, in_port, now)
        if pkt.lrh.vl == w.VL15:
            return self.drop("vl15_not_qp0", ingress, "port_rcv_errors")  # VL15 carries SMPs only
        if qp == 1:
            p0 = self.ports[0]
            if p0.pkey_index(pkt.bth.pkey) is None:
                p0.p_key_violations = min(p0.p_key_violations + 1, 0xFFFF)  # 16-bit PortInfo field
                return self.drop("pkey")
            if pkt.deth.qkey != w.QKEY_GSI:
                p0.q_key_violations = min(p0.q_key_violations + 1, 0xFFFF)
                return self.drop("qkey")
            try:
                mad = w.parse_mad(pkt.payload)
            except w.ParseError as exc:
                return self.drop(f"gmp_{exc.kind}")
            if mad.mgmt_class != w.CLASS_PERF or mad.method & w.RESPONSE_BIT:
                return self.drop("gmp_unsupported_class")
            resp = self.pma(mad, in_port)
            return self.route_out(self.build_reply(pkt, resp.pack(), self.ports[0], vl=0), in_port)
        return self.drop("no_qp")

    def smp_to_local_sm(self, pkt, mad, in_port: int, now: float) -> None:
        if mad.method == w.TRAP_REPRESS:
            self.trap_repressed(mad.tid)
            return
        return self.drop("smp_response_no_sm")

    # -- link events ---------------------------------------------------------------------------

    def on_link_change(self, port: Port, now: float) -> None:
        self.port_state_change = 1
        p0 = self.ports[0]
        if not p0.lid or not p0.sm_lid:
            return
        details = bytearray(54)
        details[0:2] = p0.lid.to_bytes(2, "big")  # LIDADDR of the switch
        notice = w.Notice(is_generic=1, type=sa.NOTICE_TYPE_URGENT, producer_type=sa.PRODUCER_SWITCH,
                          trap_num=sa.TRAP_LINK_STATE_CHANGE, issuer_lid=p0.lid,
                          data_details=bytes(details))
        self.queue_trap(notice, p0, 0, now)

    # -- SMA attributes specific to switches ---------------------------------------------------

    def pkey_port_block(self, mod: int, in_port: int) -> tuple:
        num = mod >> 16  # IBA 14.2.5.7: AttributeModifier bits 31..16 are the port number
        if num not in self.ports:
            raise SmpError(w.STATUS_INVALID_FIELD, f"no port {num}")
        return self.ports[num], mod & 0xFFFF

    def pkeys_changed(self, port: Port) -> None:
        self._mark(port.num)  # what the C path checks an enforcing port against

    def port_info_overrides(self, port: Port, local_port: int | None = None) -> dict:
        p0 = self.ports[0]
        d = port_core_fields(port)
        # external ports report the switch's LID (they have none of their own)
        if port.num != 0:
            d.update(port_info_overrides(local_port, p0.lid, sm_lid=p0.sm_lid, lmc=0))
        else:
            d.update(port_info_overrides(local_port, p0.lid, capability_mask=SWITCH_PORT0_CAPS))
        return d

    def addressable(self, port: Port) -> bool:
        return port.num == 0  # only port 0 takes a LID; the others keep theirs (none)

    def apply_port_info(self, port: Port, pi: w.PortInfo, now: float) -> None:
        self._mark(port.num)
        super().apply_port_info(port, pi, now)

    def switch_info(self) -> w.SwitchInfo:
        return w.SwitchInfo(linear_fdb_cap=len(self.lft), random_fdb_cap=0, mcast_fdb_cap=len(self.mft),
                            linear_fdb_top=self.lft_top, default_port=self.default_port,
                            life_time_value=self.life_time_value, port_state_change=self.port_state_change,
                            lids_per_port=0, partition_enforcement_cap=len(self.ports[1].pkeys)
                            if self.num_ports else 0, mcast_fdb_top=self.mft_top)

    def sma_attr_specific(self, smp, in_port: int, now: float):
        aid, mod, is_set = smp.attr_id, smp.attr_mod, smp.method == w.SET
        if aid == w.ATTR_SWITCH_INFO:
            if is_set:
                si = w.SwitchInfo.unpack(smp.data)
                if si.linear_fdb_top >= len(self.lft):
                    raise SmpError(w.STATUS_INVALID_FIELD, f"LinearFDBTop {si.linear_fdb_top} beyond the LFT")
                self.lft_top = si.linear_fdb_top
                self.default_port = si.default_port
                self.life_time_value = si.life_time_value
                if si.port_state_change:
                    self.port_state_change = 0  # write one to clear
                if si.mcast_fdb_top:
                    self.mft_top = si.mcast_fdb_top
            return self.switch_info()
        if aid == w.ATTR_LFT:
            base = mod * w.LFT_BLOCK
            if base >= len(self.lft):
                raise SmpError(w.STATUS_INVALID_FIELD, f"LFT block {mod} beyond LinearFDBCap")
            if is_set:
                self.lft[base:base + w.LFT_BLOCK] = bytes(w.LinearForwardingTable.unpack(smp.data).ports)
            return w.LinearForwardingTable(ports=tuple(self.lft[base:base + w.LFT_BLOCK]))
        if aid == w.ATTR_MFT:
            block, position = sa.mft_split_attr_mod(mod)
            base = block * w.MFT_BLOCK
            if base >= len(self.mft) or position * 16 > self.num_ports:
                raise SmpError(w.STATUS_INVALID_FIELD, f"MFT block {block} position {position} out of range")
            shift = position * 16
            if is_set:
                masks = w.MulticastForwardingTable.unpack(smp.data).port_masks
                for i, m in enumerate(masks):
                    cur = self.mft[base + i] & ~(0xFFFF << shift)
                    self.mft[base + i] = cur | (m << shift)
            return w.MulticastForwardingTable(
                port_masks=tuple((self.mft[base + i] >> shift) & 0xFFFF for i in range(w.MFT_BLOCK)))
        raise SmpError(w.STATUS_METHOD_ATTR_UNSUPPORTED, f"attribute 0x{aid:04x} not supported")

    def snapshot(self) -> dict:
        d = super().snapshot()
        d["lid"] = self.lid
        d["lft_top"] = self.lft_top
        return d
