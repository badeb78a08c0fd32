"""A physical port of a device: link and logical state, addressing, P_Key table, counters."""

from __future__ import annotations

import array

from ..wire import pma_attrs as pma
from ..wire import smp_attrs as sa
from ..wire.fields import FieldMap
from .cores import CountersCore, PortCore

# PortCounters CounterSelect bits (IBA 16.1.3.5), in field order; CounterSelect2 bit 0 is XmitWait.
COUNTER_SELECT_BITS = (
    "symbol_error_counter", "link_error_recovery_counter", "link_downed_counter", "port_rcv_errors",
    "port_rcv_remote_physical_errors", "port_rcv_switch_relay_errors", "port_xmit_discards",
    "port_xmit_constraint_errors", "port_rcv_constraint_errors", "local_link_integrity_errors",
    "excessive_buffer_overrun_errors", "vl15_dropped", "port_xmit_data", "port_rcv_data",
    "port_xmit_pkts", "port_rcv_pkts",
)
EXT_SELECT_BITS = (
    "port_xmit_data", "port_rcv_data", "port_xmit_pkts", "port_rcv_pkts", "port_unicast_xmit_pkts",
    "port_unicast_rcv_pkts", "port_multicast_xmit_pkts", "port_multicast_rcv_pkts",
)
_PC_WIDTH = {f.name: f.bits for f in pma.PortCounters.FIELDS if f.kind == "uint"}
PC_NAMES = tuple(n for n in _PC_WIDTH if n not in ("port_select", "counter_select", "counter_select2"))
EXT_NAMES = EXT_SELECT_BITS
LOST_NAMES = ("ingress_down", "link_full", "uncabled")
# where the 32-bit PortCounters saturate (IBA 16.1.3.5): the packet and the data counters
_TOP_PKTS = (1 << _PC_WIDTH["port_rcv_pkts"]) - 1
_TOP_DATA = (1 << _PC_WIDTH["port_rcv_data"]) - 1
assert _TOP_PKTS == (1 << _PC_WIDTH["port_xmit_pkts"]) - 1 and _TOP_DATA == (1 << _PC_WIDTH["port_xmit_data"]) - 1


def _bulk_counter(direction: int):
    """``fn(counters, pkts, words)``: a method made for one direction (0 received, 1 sent), so
    that a call counts a whole burst with no further call (it runs for every burst at every port):
    into ``pending``, as compiled code counts (see PortCounterSet)."""
    i, j = 2 * direction, 2 * direction + 1

    def add(self, pkts: int, words: int) -> None:
        q = self.pending
        q[i] += pkts
        q[j] += words

    add.__name__ = add.__qualname__ = "add_" + PENDING[direction][0].split("_")[1]
    return add


def _count_multicast(counters, pkts_name: str, data_name: str, multicast_name: str, octets_on_wire: int) -> None:
    words = (octets_on_wire - 2) // 4
    counters.inc(data_name, words)
    counters.inc(pkts_name)
    e = counters._ext
    e[data_name] += words
    e[pkts_name] += 1
    e[multicast_name] += 1


# PortCounterSet.pending: the unicast counts compiled code adds (fabric._wirefast.count_unicast),
# by direction, in this order
PENDING = (("port_rcv_pkts", "port_rcv_data", "port_unicast_rcv_pkts"),
           ("port_xmit_pkts", "port_xmit_data", "port_unicast_xmit_pkts"))


class PortCounterSet(CountersCore):
    """The PMA counters of one port. PortCounters fields saturate at their width as the spec
    requires; the extended (64-bit) set counts alongside them.

    ``pending`` holds unicast packets and words counted (received, then sent: four 64-bit
    integers) and not in the dicts yet: a switch's hop adds to it in C without touching a dict
    or making an integer object, and the Python paths add to it too. ``pc`` and ``ext`` fold it
    in first, so whoever reads them sees every count; adding them later is the same as adding
    them at once, since a sum saturates the same either way."""

    __slots__ = ("_pc", "_ext", "lost")  # and CountersCore's "pending"

    def __init__(self):
        self._pc = dict.fromkeys(PC_NAMES, 0)
        self._ext = dict.fromkeys(EXT_NAMES, 0)
        # what no PMA counter holds, so that every packet a port sends is accounted for at the
        # other end (make soak): arrived while this port was down, or could not be queued toward
        # the peer (a full link), or left by a port with no cable
        self.lost = dict.fromkeys(LOST_NAMES, 0)
        self.pending = array.array("Q", bytes(32))

    def _fold(self) -> None:
        q = self.pending
        if q[0] or q[1] or q[2] or q[3]:
            pc, e = self._pc, self._ext
            for i, (pkts_name, data_name, unicast_name) in enumerate(PENDING):
                pkts, words = q[2 * i], q[2 * i + 1]
                pc[pkts_name] = min(pc[pkts_name] + pkts, _TOP_PKTS)
                pc[data_name] = min(pc[data_name] + words, _TOP_DATA)
                e[pkts_name] += pkts
                e[data_name] += words
                e[unicast_name] += pkts
            q[0] = q[1] = q[2] = q[3] = 0

    @property
    def pc(self) -> dict:
        """The PortCounters fields by name (a live dict: a test or the PMA may write to it)."""
        self._fold()
        return self._pc

    @property
    def ext(self) -> dict:
        """The PortCountersExtended fields by name."""
        self._fold()
        return self._ext

    def inc(self, name: str, n: int = 1) -> None:
        v = self._pc[name] + n
        top = (1 << _PC_WIDTH[name]) - 1
        self._pc[name] = v if v < top else top

    # bulk unicast counts, as the compiled paths report them per burst
    add_rcv = _bulk_counter(0)
    add_xmit = _bulk_counter(1)

    def count_xmit(self, octets_on_wire: int, multicast: bool) -> None:
        """One packet sent (LRH through ICRC counted in 4-octet words)."""
        if multicast:
            _count_multicast(self, "port_xmit_pkts", "port_xmit_data", "port_multicast_xmit_pkts", octets_on_wire)
        else:
            q = self.pending  # add_xmit(1, words), without the call
            q[2] += 1
            if octets_on_wire > 2:  # a runt (a fuzzed packet of 0 or 1 octets) carries no word
                q[3] += (octets_on_wire - 2) // 4

    def count_rcv(self, octets_on_wire: int, multicast: bool) -> None:
        """One packet received, errors included (IBA 16.1.3.5)."""
        if multicast:
            _count_multicast(self, "port_rcv_pkts", "port_rcv_data", "port_multicast_rcv_pkts", octets_on_wire)
        else:
            q = self.pending  # add_rcv(1, words), without the call
            q[0] += 1
            if octets_on_wire > 2:  # a runt (a fuzzed packet of 0 or 1 octets) carries no word
                q[1] += (octets_on_wire - 2) // 4

    def reset(self, select: int, select2: int = 0) -> None:
        pc = self.pc
        for bit, name in enumerate(COUNTER_SELECT_BITS):
            if select >> bit & 1:
                pc[name] = 0
        if select2 & 1:
            pc["port_xmit_wait"] = 0

    def reset_ext(self, select: int) -> None:
        ext = self.ext
        for bit, name in enumerate(EXT_SELECT_BITS):
            if select >> bit & 1:
                ext[name] = 0

    def snapshot(self) -> dict:
        return {"counters": dict(self.pc), "extended": dict(self.ext), "lost": dict(self.lost)}


DEFAULT_PKEYS = 32  # P_Key table entries per port (PartitionCap)

# PortInfo (IBA 14.2.5.6) field by field: the Port attribute that holds it, or the value every
# port answers. The SMA packs its answers from a Port's attributes through this one table
# (FieldMap.pack, in C when compiled), so PortInfo and the Port cannot drift apart.
PORT_INFO = FieldMap(sa.PortInfo, dict(
    m_key="m_key", gid_prefix="gid_prefix", lid="lid", master_sm_lid="sm_lid", capability_mask="capability_mask",
    m_key_lease_period="m_key_lease", local_port="num", link_width_enabled="width_enabled",
    link_width_supported="width_supported", link_width_active="width_active",
    link_speed_supported="speed_supported", port_state="state", phys_state="phys",
    link_down_default_state=sa.PHYS_POLLING, m_key_protect_bits="m_key_protect", lmc="lmc",
    link_speed_active="speed_active", link_speed_enabled="speed_enabled", neighbor_mtu="neighbor_mtu",
    master_sm_sl="sm_sl", vl_cap="vl_cap", vl_high_limit="vl_high_limit", mtu_cap="mtu_cap", hoq_life="hoq_life",
    operational_vls="operational_vls", partition_enforcement_inbound="pkey_enforce_in",
    partition_enforcement_outbound="pkey_enforce_out", m_key_violations="m_key_violations",
    p_key_violations="p_key_violations", q_key_violations="q_key_violations", guid_cap=1,
    client_reregister="client_reregister", subnet_timeout="subnet_timeout", resp_time_value="resp_time",
))


def port_core_fields(port) -> dict:
    """The PortInfo fields of ``port`` that it keeps in its core (``fabric/devices/cores.py``: a C
    struct when compiled), which its ``__dict__`` does not hold: the overrides every answer starts
    from, the device's own (``port_info_overrides``) on top."""
    return {"local_port": port.num, "lid": port.lid, "lmc": port.lmc, "port_state": port.state,
            "phys_state": port.phys}


def port_info_overrides(local_port: int | None = None, lid: int | None = None, *, sm_lid: int | None = None,
                        lmc: int | None = None, capability_mask: int | None = None) -> dict:
    """The PortInfo fields a device answers instead of its port's own (those given)."""
    d = {}
    if local_port is not None:
        d["local_port"] = local_port
    if lid is not None:
        d["lid"] = lid
    if sm_lid is not None:
        d["master_sm_lid"] = sm_lid
    if lmc is not None:
        d["lmc"] = lmc
    if capability_mask is not None:
        d["capability_mask"] = capability_mask
    return d


class Port(PortCore):
    """One port. ``num`` 0 is a switch's management port (it has the switch's LID)."""

    def __init__(self, num: int, *, guid: int = 0, mtu_cap: int = sa.MTU_4096, width: int = sa.WIDTH_4X,
                 speed: int = sa.SPEED_QDR, pkey_entries: int = DEFAULT_PKEYS, physical: bool = True):
        self.num = num
        self.guid = guid
        self.physical = physical  # False for switch port 0 (no cable, always up)
        self.cabled = False
        self.admin_up = True  # False once 'link down' was commanded or PhysState=Disabled was set
        self.peer_seen = False  # link training: the other end answered
        self.state = sa.PORT_DOWN if physical else sa.PORT_ACTIVE
        self.phys = sa.PHYS_POLLING if physical else sa.PHYS_LINKUP
        self.lid = 0
        self.lmc = 0
        self.sm_lid = 0
        self.sm_sl = 0
        self.m_key = 0
        self.m_key_protect = 0
        self.m_key_lease = 0
        self.gid_prefix = 0xFE80000000000000
        self.subnet_timeout = 0
        self.resp_time = 0
        self.client_reregister = 0
        self.mtu_cap = mtu_cap
        self.neighbor_mtu = mtu_cap
        self.vl_cap = 1  # VL0 only (plus VL15)
        self.operational_vls = 1
        self.width_supported = sa.WIDTH_1X | sa.WIDTH_4X
        self.width_enabled = width
        self.width_active = width
        self.speed_supported = sa.SPEED_SDR | sa.SPEED_DDR | sa.SPEED_QDR
        self.speed_enabled = self.speed_supported
        self.speed_active = speed
        self.capability_mask = 0
        self.hoq_life = 0
        self.vl_high_limit = 0
        self.pkey_enforce_in = 0
        self.pkey_enforce_out = 0
        self.m_key_violations = 0
        self.p_key_violations = 0
        self.q_key_violations = 0
        self.pkeys = [0] * pkey_entries
        self.pkeys[0] = 0xFFFF  # default full-member P_Key until the SM programs the table
        self.counters = PortCounterSet()

    # -- state ---------------------------------------------------------------------------------

    @property
    def link_up(self) -> bool:
        return self.phys == sa.PHYS_LINKUP

    @property
    def active(self) -> bool:
        return self.state == sa.PORT_ACTIVE

    def lid_range(self) -> range:
        base = self.lid & ~((1 << self.lmc) - 1)
        return range(base, base + (1 << self.lmc))

    def owns_lid(self, lid: int) -> bool:
        if not self.lid:
            return False
        return (lid >> self.lmc) == (self.lid >> self.lmc)

    def set_link(self, up: bool) -> bool:
        """Physical link change from training or a pulled cable; returns True if the state changed."""
        if up and self.phys != sa.PHYS_LINKUP:
            self.phys = sa.PHYS_LINKUP
            self.state = sa.PORT_INIT
            return True
        if not up and self.phys == sa.PHYS_LINKUP:
            self.phys = sa.PHYS_DISABLED if not self.admin_up else sa.PHYS_POLLING
            self.state = sa.PORT_DOWN
            self.counters.inc("link_downed_counter")
            return True
        if not up:
            self.phys = sa.PHYS_DISABLED if not self.admin_up else sa.PHYS_POLLING
        return False

    # -- P_Key ---------------------------------------------------------------------------------

    def pkey_index(self, pkey: int) -> int | None:
        """Index of a table entry that matches ``pkey`` under the membership rule: the low 15 bits
        are equal and at least one of the two is a full member. None when nothing matches."""
        base = pkey & 0x7FFF
        if base == 0:
            return None  # 0x0000 and 0x8000 are invalid P_Keys
        for i, entry in enumerate(self.pkeys):
            if entry & 0x7FFF == base and (entry & 0x8000 or pkey & 0x8000):
                return i
        return None

    # -- PortInfo ------------------------------------------------------------------------------

    def port_info_fields(self, local_port: int | None = None, lid: int | None = None, *, sm_lid: int | None = None,
                         lmc: int | None = None, capability_mask: int | None = None) -> dict:
        """This port's PortInfo fields by name; what a device answers differently (a switch's
        external ports report its LID) comes in as arguments (see PORT_INFO)."""
        d = port_core_fields(self)
        d.update(port_info_overrides(local_port, lid, sm_lid=sm_lid, lmc=lmc, capability_mask=capability_mask))
        return PORT_INFO.fields(self.__dict__, d)

    def port_info(self, local_port: int | None = None, lid: int | None = None, *, sm_lid: int | None = None,
                  lmc: int | None = None, capability_mask: int | None = None) -> sa.PortInfo:
        """This port's PortInfo (:meth:`port_info_fields` as the attribute)."""
        return sa.PortInfo(**self.port_info_fields(local_port, lid, sm_lid=sm_lid, lmc=lmc,
                                                   capability_mask=capability_mask))

    def snapshot(self) -> dict:
        return {"port": self.num, "guid": self.guid, "lid": self.lid, "lmc": self.lmc, "sm_lid": self.sm_lid,
                "state": sa.PORT_STATE_NAMES.get(self.state, str(self.state)),
                "phys": sa.PHYS_STATE_NAMES.get(self.phys, str(self.phys)), "cabled": self.cabled,
                "mtu": sa.MTU_BYTES.get(self.neighbor_mtu, 0),
                # the active link width and lane speed, as iblinkinfo names them ("4X", "10.0 Gbps")
                "width": sa.WIDTH_NAMES.get(self.width_active, str(self.width_active)),
                "speed": sa.SPEED_NAMES.get(self.speed_active, str(self.speed_active)),
                "pkeys": [p for p in self.pkeys if p & 0x7FFF]}
