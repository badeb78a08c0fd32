"""What every emulated device has: ports, an SMA, a PMA, drop accounting and events.

Devices are sans-IO. ``receive(in_port, octets, now)`` and the other entry points take their input
and return nothing: whatever the device puts on a wire is appended to ``outbox``, as ``(out_port,
octets)`` or as a :class:`fabric.wire.burst.Segment`, and only the device host (or LoopNet, the
in-process one) empties it. Local deliveries (an HCA's QPs) and events (port state,
ClientReregister, ...) are recorded on the device for the host.
"""

from __future__ import annotations

from collections import Counter

from .. import wire as w
from ..wire import smp_attrs as sa
from . import smi
from ..wire.burst import Segment
from ..wire.compiled import wirefast
from .cores import DeviceCore
from .port import PORT_INFO, Port, port_core_fields

# the compiled SMI and SMA's packets (fabric._wirefast): None packet by packet through the full path only
smp_arrival = wirefast.smp_arrival if wirefast is not None else None
_smp_answer = wirefast.smp_answer if wirefast is not None else None
# Device.sma_fast in C (fabric/devices/_smafast.pyx), built and chosen with the compiled wire helpers
_smafast = None
if wirefast is not None:
    try:
        from . import _smafast
    except ImportError as exc:  # pragma: no cover - depends on the build
        raise ImportError("fabric._wirefast is built but fabric.devices._smafast is not (run `make install`)") from exc
SMP_PACKET_LEN = 8 + 12 + 8 + 256 + 6  # an SMP without a GRH, CRCs included
SMP_REQUEST_DR, SMP_REQUEST_LID, SMP_RESPONSE_DR = 1, 2, 3  # what smp_arrival returns
_MAD = 8 + 12 + 8  # where an SMP's MAD starts

PMA_CAP_ALL_PORT_SELECT = 1 << 8
PMA_CAP_EXT_WIDTH = 1 << 9
TRAP_RESEND_S = 1.0
TRAP_MAX_SENDS = 4
VENDOR_ID = 0x0002C9  # the OUI our emulated devices report
REVISION = 1  # NodeInfo.Revision of every device (a CA's hardware version, as ibstat shows it)


class SmpError(Exception):
    """An SMP/GMP the agent answers with a MAD status instead of data."""

    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


class _SmpView:
    """The fields of a request the SMA's attribute code reads, taken from the packet's octets."""

    __slots__ = ("method", "attr_id", "attr_mod", "data", "m_key")

    def __init__(self, method: int, attr_id: int, attr_mod: int, data: bytes, m_key: int):
        self.method, self.attr_id, self.attr_mod, self.data, self.m_key = method, attr_id, attr_mod, data, m_key


if _smafast is not None:
    _smafast.setup(SmpError, _SmpView, w.put_attr, w.PortInfo.unpack, PORT_INFO)


class Device(DeviceCore):
    kind = "device"
    node_type = 0

    def __init__(self, spec):
        self.spec = spec
        self.name = spec.name
        self.node_guid = spec.node_guid
        self.sys_guid = spec.sys_guid or spec.node_guid
        self.description = spec.description or spec.name
        self.num_ports = spec.num_ports
        self.vendor_id = spec.vendor_id or VENDOR_ID
        self.device_id = spec.device_id
        self.ports: dict[int, Port] = {}
        self.drops: Counter = Counter()  # reason -> count; finer than the PMA counters
        self.events: list = []  # (kind, port, detail) for the host / ULP
        self._traps: list = []  # [next_time, sends_left, packet, out_port, tid]
        self.agents: list = []  # software on this node with timers (the SM): tick(now), next_deadline()
        self.outbox: list = []  # what goes on the wire: (port, packet) or Segment; the host empties it
        self._tid = (self.node_guid & 0xFFFF) << 32
        self._node_info_octets: dict[int, bytes] = {}  # by the port asked through

    # -- helpers -------------------------------------------------------------------------------

    def next_tid(self) -> int:
        self._tid = (self._tid + 1) & 0xFFFFFFFFFFFFFFFF
        return self._tid

    def take_outbox(self) -> list:
        """Empty ``outbox`` into ``(port, packet)`` pairs, a Segment's packets one by one (for
        in-process delivery and tests; the device host sends Segments as they are)."""
        out, self.outbox[:] = list(self.outbox), []
        pairs = []
        for item in out:
            if type(item) is Segment:
                pairs.extend((item.port, pkt) for pkt in item.packets())
            else:
                pairs.append(item)
        return pairs

    def drop(self, reason: str, port: Port | None = None, counter: str | None = None) -> None:
        self.drops[reason] += 1
        if port is not None and counter is not None:
            port.counters.inc(counter)

    def mgmt_port(self, in_port: int) -> Port:
        """The port whose LID, M_Key and SM LID govern management for SMPs arriving on in_port."""
        raise NotImplementedError

    def port_guid_for(self, in_port: int) -> int:
        raise NotImplementedError

    # -- entry points for the host -------------------------------------------------------------

    def receive(self, in_port: int, data: bytes, now: float) -> None:
        raise NotImplementedError

    def set_link(self, port_num: int, up: bool, now: float) -> None:
        """Physical link state from training or a pulled cable."""
        p = self.ports[port_num]
        old = p.state
        if p.set_link(up):
            self.events.append(("port_state", port_num, (old, p.state)))
            self.on_link_change(p, now)

    def on_link_change(self, port: Port, now: float) -> None:
        pass

    def tick(self, now: float) -> None:
        """Timers: resend unrepressed traps; run the software agents that are due."""
        keep = []
        for t in self._traps:
            if t[0] <= now:
                self.route_out(t[2], t[3])
                t[1] -= 1
                t[0] = now + TRAP_RESEND_S
            if t[1] > 0:
                keep.append(t)
        self._traps = keep
        for agent in list(self.agents):
            d = agent.next_deadline()
            if d is not None and d <= now:
                agent.tick(now)

    def keeps_time(self) -> bool:
        """Whether this device can have a deadline at all: software on it (agents) or traps to
        resend. One with neither has none (``next_deadline`` is None) whatever happens to it, so
        the device host need not ask it again after it was called."""
        return bool(self.agents or self._traps)

    def next_deadline(self) -> float | None:
        best = None
        for a in self.agents:
            d = a.next_deadline()
            if d is not None:
                if d <= 0.0:
                    return d  # "due now": nothing can be earlier (the host asks this per pass)
                if best is None or d < best:
                    best = d
        for t in self._traps:
            if best is None or t[0] < best:
                best = t[0]
        return best

    def route_out(self, packet: bytes, port_hint: int) -> None:
        self.outbox.append((port_hint, packet))

    # -- MAD transport -------------------------------------------------------------------------

    def build_reply(self, req: w.UDPacket, mad_bytes: bytes, from_port: Port, *, vl: int) -> bytes:
        """A response to ``req`` sent back to its source with the request's P_Key."""
        src_lid = req.lrh.dlid if req.lrh.dlid != w.LID_PERMISSIVE else from_port.lid
        grh = None
        if req.grh is not None:
            grh = w.GRH(sgid=req.grh.dgid, dgid=req.grh.sgid, hoplmt=req.grh.hoplmt)
        return w.build_ud_packet(slid=src_lid, dlid=req.lrh.slid, dest_qp=req.deth.src_qp,
                                 src_qp=req.bth.dest_qp, qkey=req.deth.qkey if req.bth.dest_qp else 0,
                                 pkey=req.bth.pkey, sl=req.lrh.sl, vl=vl, payload=mad_bytes, grh=grh)

    def handle_qp0(self, pkt: w.UDPacket, in_port: int, now: float) -> None:
        """An SMP reached this node's QP0 (LID-routed to us, or DR at the end of its path)."""
        try:
            mad = w.parse_mad(pkt.payload)
        except w.ParseError as exc:
            return self.drop(f"smp_{exc.kind}")
        if mad.mgmt_class == w.CLASS_SUBN_DIRECTED:
            dec = smi.dr_receive(mad, in_port, is_switch=self.kind == "switch", num_ports=self.num_ports)
            if dec.action == smi.DROP:
                return self.drop("dr_path")
            if dec.action == smi.FORWARD:
                return self.forward_dr(pkt, dec.smp, dec.port)
            mad = dec.smp
        elif mad.mgmt_class != w.CLASS_SUBN_LID:
            return self.drop("qp0_not_smp")
        if mad.method == w.TRAP_REPRESS and not self._m_key_ok(mad, self.mgmt_port(in_port)):
            return
        if mad.method & w.RESPONSE_BIT or mad.method in (w.TRAP, w.TRAP_REPRESS):
            return self.smp_to_local_sm(pkt, mad, in_port, now)
        if mad.attr_id == w.ATTR_SM_INFO and self.sm_info_request(pkt, mad, in_port, now):
            return  # SMInfo is the SM's to answer, not the SMA's (IBA 14.4.1)
        resp = self.sma(mad, in_port, now)
        if resp is not None:
            self.send_smp_response(pkt, resp, in_port, now)

    def forward_dr(self, pkt: w.UDPacket, smp: w.SMPDirected, out_port: int) -> None:
        raw = w.build_ud_packet(slid=pkt.lrh.slid, dlid=pkt.lrh.dlid, dest_qp=0, src_qp=0, qkey=pkt.deth.qkey,
                                pkey=pkt.bth.pkey, vl=w.VL15, sl=pkt.lrh.sl, payload=smp.pack())
        return self.transmit_mgmt(out_port, raw)

    def send_smp_response(self, req: w.UDPacket, resp, in_port: int, now: float = 0.0) -> None:
        port = self.mgmt_port(in_port)
        if isinstance(resp, w.SMPDirected):
            dec = smi.dr_originate(resp)
            if dec.action == smi.DROP:
                return self.drop("dr_response_path")
            if dec.action == smi.LOCAL:
                return self.smp_to_local_sm(req, dec.smp, in_port, now)  # the SM's own node
            raw = w.build_ud_packet(slid=w.LID_PERMISSIVE if resp.dr_slid == w.LID_PERMISSIVE else port.lid,
                                    dlid=req.lrh.slid, dest_qp=0, src_qp=0, qkey=0, pkey=req.bth.pkey,
                                    vl=w.VL15, payload=dec.smp.pack())
            return self.transmit_mgmt(dec.port, raw)
        raw = self.build_reply(req, resp.pack(), port, vl=w.VL15)
        return self.route_out(raw, in_port)

    def transmit_mgmt(self, out_port: int, raw: bytes) -> None:
        self.outbox.append((out_port, raw))

    def smp_to_local_sm(self, pkt, mad, in_port: int, now: float) -> None:
        return self.drop("smp_response_no_sm")

    def sm_info_request(self, pkt, mad, in_port: int, now: float) -> bool:
        """An SMInfo Get or Set: True when an SM on this node took it."""
        return False

    # -- SMA -----------------------------------------------------------------------------------

    def sma_fast_py(self, in_port: int, data, now: float, kind: int | None = None) -> bool:
        """The compiled SMA: a Get or Set that ends at this node, answered by the same attribute
        code as :meth:`sma` with the answer's packet built in C from the request's octets (no
        parse, no objects per SMP). False leaves the packet to the full path (``handle_qp0``):
        anything malformed or unusual, SMInfo, a port with an M_Key, a LID-routed SMP from this
        very port. ``kind`` is smp_arrival's verdict when the caller has it already. This is the
        reference of ``sma_fast``, which is the same in C when built (``_smafast``)."""
        if _smp_answer is None or len(data) != SMP_PACKET_LEN:
            return False
        if kind is None:
            kind = smp_arrival(data)
        if kind != SMP_REQUEST_DR and kind != SMP_REQUEST_LID:
            return False
        m = _MAD
        method = data[m + 3]
        attr_id = data[m + 16] << 8 | data[m + 17]
        if method != w.GET and method != w.SET or attr_id == w.ATTR_SM_INFO:
            return False
        port = self.mgmt_port(in_port)
        if port.m_key:
            return False  # protection: the full path checks keys and counts violations
        if kind == SMP_REQUEST_LID:
            dlid, slid = data[2] << 8 | data[3], data[6] << 8 | data[7]
            if dlid == w.LID_PERMISSIVE or not port.owns_lid(dlid) or port.owns_lid(slid):
                return False
        req = _SmpView(method, attr_id, int.from_bytes(data[m + 20:m + 24], "big"), bytes(data[m + 64:m + 128]),
                       int.from_bytes(data[m + 24:m + 32], "big"))
        try:
            payload, status = w.put_attr(self.sma_attr(req, in_port, now), 64), 0
        except SmpError as exc:
            payload, status = req.data, exc.status
        if port.m_key_protect == 1 and req.m_key != port.m_key and attr_id == w.ATTR_PORT_INFO and status == 0:
            payload = w.put_attr(w.PortInfo.unpack(payload).replace(m_key=0), 64)  # a Set just gave it a key
        raw = _smp_answer(data, in_port, payload, status)
        if kind == SMP_REQUEST_DR:
            self.transmit_mgmt(in_port, raw)  # back along the return path, which starts here
        else:
            self.route_out(raw, in_port)
        return True

    sma_fast = _smafast.sma_fast if _smafast is not None else sma_fast_py

    def sma(self, smp, in_port: int, now: float):
        """Answer a Get/Set SMP; None drops it silently (M_Key violation, unsupported method)."""
        port = self.mgmt_port(in_port)
        if not self._m_key_ok(smp, port):
            return None
        if smp.method not in (w.GET, w.SET):
            return self._smp_reply(smp, w.STATUS_METHOD_UNSUPPORTED, smp.data)
        try:
            attr = self.sma_attr(smp, in_port, now)
            data = w.put_attr(attr, 64)
            status = 0
        except SmpError as exc:
            data, status = smp.data, exc.status
        resp = self._smp_reply(smp, status, data)
        if port.m_key_protect == 1 and smp.m_key != port.m_key and smp.attr_id == w.ATTR_PORT_INFO \
                and status == 0:
            pi = w.PortInfo.unpack(resp.data).replace(m_key=0)  # protect bits 1: hide the key
            resp = resp.replace(data=w.put_attr(pi, 64))
        return resp

    def _smp_reply(self, smp, status: int, data: bytes):
        fields = dict(method=w.GET_RESP, status=status, data=data)
        if isinstance(smp, w.SMPDirected):
            fields["d"] = 1
        return smp.replace(**fields)

    def _m_key_ok(self, smp, port: Port) -> bool:
        """IBA 14.2.4.1: with a non-zero M_Key, a wrong key fails a Set or TrapRepress at every
        protection level, and a Get at levels 2 and 3; the SMP is dropped and the violation counted."""
        if port.m_key == 0 or smp.m_key == port.m_key:
            return True
        if smp.method == w.GET and port.m_key_protect < 2:
            return True
        port.m_key_violations = min(port.m_key_violations + 1, 0xFFFF)
        self.drops["m_key_violation"] += 1
        return False

    def sma_attr(self, smp, in_port: int, now: float):
        aid, mod, is_set = smp.attr_id, smp.attr_mod, smp.method == w.SET
        if aid == w.ATTR_NODE_INFO:
            if is_set:
                raise SmpError(w.STATUS_METHOD_ATTR_UNSUPPORTED, "NodeInfo is read-only")
            return self.node_info_octets(in_port)
        if aid == w.ATTR_NODE_DESC:
            if is_set:
                raise SmpError(w.STATUS_METHOD_ATTR_UNSUPPORTED, "NodeDescription is read-only")
            return w.NodeDescription(description=self.description.encode()[:64].decode("utf-8", "ignore"))
        if aid == w.ATTR_PORT_INFO:
            port = self.port_for_attr(mod, in_port)
            if is_set:
                self.set_port_info(port, w.PortInfo.unpack(smp.data), now)
            # LocalPortNum is the port this SMP came in on, whichever port it asks about (IBA
            # 14.2.5.6): a switch's ports all answer with the ingress port, which is how a
            # discovery (ibnetdiscover) tells where it came from
            return self.port_info_octets(port, in_port)
        if aid == w.ATTR_PKEY_TABLE:
            port, block = self.pkey_port_block(mod, in_port)
            n = w.PKEY_BLOCK
            if block * n >= len(port.pkeys):
                raise SmpError(w.STATUS_INVALID_FIELD, f"P_Key block {block} beyond the table")
            if is_set:
                new = w.PKeyTable.unpack(smp.data).pkeys
                end = min(len(port.pkeys), block * n + n)
                old = list(port.pkeys)
                port.pkeys[block * n:end] = new[:end - block * n]
                if port.pkeys != old:
                    self.events.append(("pkey_change", port.num, None))
                    self.pkeys_changed(port)
            vals = port.pkeys[block * n:block * n + n]
            return w.PKeyTable(pkeys=tuple(vals) + (0,) * (n - len(vals)))
        if aid == w.ATTR_GUID_INFO:
            if mod != 0:
                raise SmpError(w.STATUS_INVALID_FIELD, "only GUIDInfo block 0 exists")
            if is_set:
                raise SmpError(w.STATUS_METHOD_ATTR_UNSUPPORTED, "alias GUIDs are not supported")
            return w.GUIDInfo(guids=(self.port_guid_for(in_port),) + (0,) * 7)
        return self.sma_attr_specific(smp, in_port, now)

    def sma_attr_specific(self, smp, in_port: int, now: float):
        raise SmpError(w.STATUS_METHOD_ATTR_UNSUPPORTED, f"attribute 0x{smp.attr_id:04x} not supported")

    def pkeys_changed(self, port: Port) -> None:
        """A PKeyTable Set changed ``port``'s table."""

    def node_info(self, in_port: int) -> w.NodeInfo:
        return w.NodeInfo(node_type=self.node_type, num_ports=self.num_ports, sys_guid=self.sys_guid,
                          node_guid=self.node_guid, port_guid=self.port_guid_for(in_port),
                          partition_cap=len(self.mgmt_port(in_port).pkeys), device_id=self.device_id,
                          revision=REVISION, local_port=in_port, vendor_id=self.vendor_id)

    def node_info_octets(self, in_port: int) -> bytes:
        """:meth:`node_info` packed. What it holds is fixed when the device is made, so it is packed
        once per port it is asked through."""
        raw = self._node_info_octets.get(in_port)
        if raw is None:
            raw = self._node_info_octets[in_port] = self.node_info(in_port).pack()
        return raw

    def port_for_attr(self, mod: int, in_port: int) -> Port:
        if mod not in self.ports:
            raise SmpError(w.STATUS_INVALID_FIELD, f"no port {mod}")
        return self.ports[mod]

    def pkey_port_block(self, mod: int, in_port: int) -> tuple:
        return self.mgmt_port(in_port), mod & 0xFFFF

    def port_info_overrides(self, port: Port, local_port: int | None = None) -> dict:
        """The PortInfo fields this device answers for ``port`` instead of the port's own (see
        fabric.devices.port.PORT_INFO): LocalPortNum ``local_port``, the port the SMP came in on,
        when given; a switch adds its LID."""
        d = port_core_fields(port)
        if local_port is not None:
            d["local_port"] = local_port
        return d

    def port_info_fields(self, port: Port, local_port: int | None = None) -> dict:
        """``port``'s PortInfo fields as this device answers them."""
        return PORT_INFO.fields(port.__dict__, self.port_info_overrides(port, local_port))

    def port_info(self, port: Port, local_port: int | None = None) -> w.PortInfo:
        return w.PortInfo(**self.port_info_fields(port, local_port))

    def port_info_octets(self, port: Port, local_port: int | None = None) -> bytes:
        """:meth:`port_info` packed, without the object or a dict of its fields (the SMA's answer)."""
        return PORT_INFO.pack(port.__dict__, self.port_info_overrides(port, local_port))

    def set_port_info(self, port: Port, pi: w.PortInfo, now: float) -> None:
        """Apply a PortInfo Set. Validation comes first so that an invalid Set changes nothing."""
        if pi.port_state not in (sa.PORT_NOP, sa.PORT_DOWN, sa.PORT_ARMED, sa.PORT_ACTIVE):
            raise SmpError(w.STATUS_INVALID_FIELD, f"PortState {pi.port_state} cannot be set")
        if pi.port_state == sa.PORT_ARMED and port.state not in (sa.PORT_INIT, sa.PORT_ARMED):
            raise SmpError(w.STATUS_INVALID_FIELD, "Armed is reachable only from Init")
        if pi.port_state == sa.PORT_ACTIVE and port.state not in (sa.PORT_ARMED, sa.PORT_ACTIVE):
            raise SmpError(w.STATUS_INVALID_FIELD, "Active is reachable only from Armed")
        if pi.phys_state not in (sa.PHYS_NOP, sa.PHYS_POLLING, sa.PHYS_DISABLED):
            raise SmpError(w.STATUS_INVALID_FIELD, f"PortPhysicalState {pi.phys_state} cannot be set")
        if pi.neighbor_mtu and not 1 <= pi.neighbor_mtu <= port.mtu_cap:
            raise SmpError(w.STATUS_INVALID_FIELD, f"NeighborMTU {pi.neighbor_mtu} beyond MTUCap {port.mtu_cap}")
        if pi.lmc > 7:
            raise SmpError(w.STATUS_INVALID_FIELD, "LMC above 7")
        self.apply_port_info(port, pi, now)

    def addressable(self, port: Port) -> bool:
        """Whether a PortInfo Set gives ``port`` its LID, LMC and SM LID (a switch's external
        ports have none of their own)."""
        return True

    def apply_port_info(self, port: Port, pi: w.PortInfo, now: float) -> None:
        old_lid, old_sm = port.lid, port.sm_lid
        port.m_key, port.gid_prefix = pi.m_key, pi.gid_prefix
        if self.addressable(port):
            port.lid, port.sm_lid, port.lmc = pi.lid, pi.master_sm_lid, pi.lmc
        port.m_key_lease, port.m_key_protect = pi.m_key_lease_period, pi.m_key_protect_bits
        port.sm_sl, port.subnet_timeout, port.resp_time = pi.master_sm_sl, pi.subnet_timeout, pi.resp_time_value
        if pi.neighbor_mtu:
            port.neighbor_mtu = pi.neighbor_mtu
        if pi.link_width_enabled:
            port.width_enabled = pi.link_width_enabled
        if pi.operational_vls:
            port.operational_vls = pi.operational_vls
        port.hoq_life, port.vl_high_limit = pi.hoq_life, pi.vl_high_limit
        port.pkey_enforce_in = pi.partition_enforcement_inbound
        port.pkey_enforce_out = pi.partition_enforcement_outbound
        if pi.port_state == sa.PORT_DOWN and port.physical:
            self.events.append(("link_bounce", port.num, None))  # down, then retrain to Init
        elif pi.port_state in (sa.PORT_ARMED, sa.PORT_ACTIVE) and port.state != pi.port_state:
            old = port.state
            port.state = pi.port_state
            self.events.append(("port_state", port.num, (old, port.state)))
        if pi.phys_state == sa.PHYS_DISABLED and port.physical:
            port.admin_up = False
            self.events.append(("link_disable", port.num, None))
        elif pi.phys_state == sa.PHYS_POLLING and port.physical and not port.admin_up:
            port.admin_up = True
            self.events.append(("link_enable", port.num, None))
        if port.lid != old_lid:
            self.events.append(("lid_change", port.num, (old_lid, port.lid)))
        if port.sm_lid != old_sm:
            self.events.append(("sm_change", port.num, (old_sm, port.sm_lid)))
        if pi.client_reregister:
            self.events.append(("client_reregister", port.num, None))

    # -- PMA -----------------------------------------------------------------------------------

    def pma(self, mad: w.PMAMad, in_port: int):
        if mad.method not in (w.GET, w.SET):
            return mad.replace(method=w.GET_RESP, status=w.STATUS_METHOD_UNSUPPORTED)
        try:
            attr = self.pma_attr(mad, in_port)
            return mad.replace(method=w.GET_RESP, status=0, data=w.put_attr(attr, 192))
        except SmpError as exc:
            return mad.replace(method=w.GET_RESP, status=exc.status)

    def pma_ports(self, select: int, in_port: int) -> list:
        if select == 0xFF:
            return [p for n, p in sorted(self.ports.items()) if p.physical]
        if select not in self.ports:
            raise SmpError(w.STATUS_INVALID_FIELD, f"PortSelect {select}: no such port")
        return [self.ports[select]]

    def pma_attr(self, mad: w.PMAMad, in_port: int):
        if mad.attr_id == w.ATTR_CLASS_PORT_INFO:
            if mad.method == w.SET:
                raise SmpError(w.STATUS_METHOD_ATTR_UNSUPPORTED, "ClassPortInfo Set not supported")
            return w.ClassPortInfo(class_version=1, capability_mask=PMA_CAP_ALL_PORT_SELECT | PMA_CAP_EXT_WIDTH,
                                   resp_time_value=18)
        if mad.attr_id == w.ATTR_PORT_COUNTERS:
            req = w.PortCounters.unpack(mad.data)
            ports = self.pma_ports(req.port_select, in_port)
            if mad.method == w.SET:
                for p in ports:
                    p.counters.reset(req.counter_select, req.counter_select2)
            vals = {}
            for p in ports:
                for k, v in p.counters.pc.items():
                    vals[k] = vals.get(k, 0) + v
            widths = {f.name: f.bits for f in w.PortCounters.FIELDS if f.kind == "uint"}
            vals = {k: min(v, (1 << widths[k]) - 1) for k, v in vals.items()}
            return w.PortCounters(port_select=req.port_select, counter_select=req.counter_select, **vals)
        if mad.attr_id == w.ATTR_PORT_COUNTERS_EXT:
            req = w.PortCountersExtended.unpack(mad.data)
            ports = self.pma_ports(req.port_select, in_port)
            if mad.method == w.SET:
                for p in ports:
                    p.counters.reset_ext(req.counter_select)
            vals = {}
            for p in ports:
                for k, v in p.counters.ext.items():
                    vals[k] = (vals.get(k, 0) + v) & 0xFFFFFFFFFFFFFFFF
            return w.PortCountersExtended(port_select=req.port_select, counter_select=req.counter_select, **vals)
        raise SmpError(w.STATUS_METHOD_ATTR_UNSUPPORTED, f"PMA attribute 0x{mad.attr_id:04x} not supported")

    # -- traps ---------------------------------------------------------------------------------

    def queue_trap(self, notice: w.Notice, port: Port, out_port: int, now: float) -> None:
        """Send a Trap(Notice) to the master SM and resend it until an SM represses it."""
        tid = self.next_tid()
        smp = w.new_mad(w.SMPLid, method=w.TRAP, tid=tid, attr_id=w.ATTR_NOTICE,
                        data=notice.pack()[:64])
        raw = w.build_ud_packet(slid=port.lid, dlid=port.sm_lid, dest_qp=0, src_qp=0, qkey=0, vl=w.VL15,
                                sl=port.sm_sl, payload=smp.pack())
        self._traps.append([now + TRAP_RESEND_S, TRAP_MAX_SENDS - 1, raw, out_port, tid])
        self.route_out(raw, out_port)

    def trap_repressed(self, tid: int) -> None:
        self._traps = [t for t in self._traps if t[4] != tid]

    # -- status --------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        return {"name": self.name, "type": self.kind, "guid": self.node_guid, "description": self.description,
                "ports": [p.snapshot() for _, p in sorted(self.ports.items())], "drops": dict(self.drops)}
