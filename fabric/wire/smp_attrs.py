"""Subnet management attributes carried in SMP data (64 octets at most)."""

from __future__ import annotations

from .fields import A, B, R, Struct, T, U

NODE_TYPE_CA, NODE_TYPE_SWITCH, NODE_TYPE_ROUTER = 1, 2, 3

# PortInfo.PortState
PORT_NOP, PORT_DOWN, PORT_INIT, PORT_ARMED, PORT_ACTIVE = 0, 1, 2, 3, 4
PORT_STATE_NAMES = {0: "NoChange", 1: "Down", 2: "Initialize", 3: "Armed", 4: "Active"}
# PortInfo.PortPhysicalState
PHYS_NOP, PHYS_SLEEP, PHYS_POLLING, PHYS_DISABLED, PHYS_TRAINING, PHYS_LINKUP, PHYS_ERROR_RECOVERY = range(7)
PHYS_STATE_NAMES = {0: "NoChange", 1: "Sleep", 2: "Polling", 3: "Disabled", 4: "PortConfigurationTraining",
                    5: "LinkUp", 6: "LinkErrorRecovery", 7: "PhyTest"}
# MTU codes (PortInfo, PathRecord, MCMemberRecord)
MTU_256, MTU_512, MTU_1024, MTU_2048, MTU_4096 = 1, 2, 3, 4, 5
MTU_BYTES = {1: 256, 2: 512, 3: 1024, 4: 2048, 5: 4096}
# Link width bits and speed codes
WIDTH_1X, WIDTH_4X, WIDTH_8X, WIDTH_12X, WIDTH_2X = 1, 2, 4, 8, 16
WIDTH_NAMES = {1: "1X", 2: "4X", 4: "8X", 8: "12X", 16: "2X"}
SPEED_SDR, SPEED_DDR, SPEED_QDR = 1, 2, 4
SPEED_NAMES = {1: "2.5 Gbps", 2: "5.0 Gbps", 4: "10.0 Gbps"}
# CapabilityMask bits
CAP_IS_SM = 1 << 1
CAP_IS_NOTICE_SUP = 1 << 2
CAP_IS_TRAP_SUP = 1 << 3
CAP_IS_AUTO_MIGR_SUP = 1 << 5
CAP_IS_SL_MAP_SUP = 1 << 6
CAP_IS_SM_DISABLED = 1 << 10
CAP_IS_SYS_IMAGE_GUID_SUP = 1 << 11
CAP_IS_PKEY_SW_EXT_PORT_TRAP_SUP = 1 << 12
CAP_IS_CLIENT_REREG_SUP = 1 << 25


class NodeInfo(Struct):
    """NodeInfo (0x0011), 40 octets."""

    FIELDS = (
        U("base_version", 8, 1), U("class_version", 8, 1), U("node_type", 8), U("num_ports", 8),
        U("sys_guid", 64), U("node_guid", 64), U("port_guid", 64),
        U("partition_cap", 16), U("device_id", 16), U("revision", 32),
        U("local_port", 8), U("vendor_id", 24),
    )


class NodeDescription(Struct):
    """NodeDescription (0x0010): 64 octets of UTF-8 text."""

    FIELDS = (T("description", 64),)


class PortInfo(Struct):
    """PortInfo (0x0015), 64 octets."""

    FIELDS = (
        U("m_key", 64),
        U("gid_prefix", 64),
        U("lid", 16), U("master_sm_lid", 16),
        U("capability_mask", 32),
        U("diag_code", 16), U("m_key_lease_period", 16),
        U("local_port", 8), U("link_width_enabled", 8), U("link_width_supported", 8),
        U("link_width_active", 8),
        U("link_speed_supported", 4), U("port_state", 4), U("phys_state", 4),
        U("link_down_default_state", 4),
        U("m_key_protect_bits", 2), R(3), U("lmc", 3), U("link_speed_active", 4),
        U("link_speed_enabled", 4),
        U("neighbor_mtu", 4), U("master_sm_sl", 4), U("vl_cap", 4), U("init_type", 4),
        U("vl_high_limit", 8), U("vl_arb_high_cap", 8), U("vl_arb_low_cap", 8),
        U("init_type_reply", 4), U("mtu_cap", 4),
        U("vl_stall_count", 3), U("hoq_life", 5), U("operational_vls", 4),
        U("partition_enforcement_inbound", 1), U("partition_enforcement_outbound", 1),
        U("filter_raw_inbound", 1), U("filter_raw_outbound", 1),
        U("m_key_violations", 16), U("p_key_violations", 16), U("q_key_violations", 16),
        U("guid_cap", 8), U("client_reregister", 1), U("mcast_pkey_trap_suppression", 1), R(1),
        U("subnet_timeout", 5),
        R(3), U("resp_time_value", 5),
        U("local_phy_errors", 4), U("overrun_errors", 4),
        U("max_credit_hint", 16),
        R(8), U("link_round_trip_latency", 24),
        U("capability_mask2", 16),
        U("link_speed_ext_active", 4), U("link_speed_ext_supported", 4), R(3),
        U("link_speed_ext_enabled", 5),
    )


class SwitchInfo(Struct):
    """SwitchInfo (0x0012), 20 octets."""

    FIELDS = (
        U("linear_fdb_cap", 16), U("random_fdb_cap", 16), U("mcast_fdb_cap", 16),
        U("linear_fdb_top", 16),
        U("default_port", 8), U("default_mcast_primary_port", 8), U("default_mcast_not_primary_port", 8),
        U("life_time_value", 5), U("port_state_change", 1), U("optimized_sl2vl", 2),
        U("lids_per_port", 16), U("partition_enforcement_cap", 16),
        U("inbound_enforcement_cap", 1), U("outbound_enforcement_cap", 1),
        U("filter_raw_inbound_cap", 1), U("filter_raw_outbound_cap", 1), U("enhanced_port0", 1), R(3),
        R(8),
        U("mcast_fdb_top", 16),
    )


LFT_BLOCK = 64
MFT_BLOCK = 32
MFT_PORTS_PER_POSITION = 16
PKEY_BLOCK = 32
GUID_BLOCK = 8
LFT_NO_PORT = 0xFF


class LinearForwardingTable(Struct):
    """LinearForwardingTable (0x0019): output ports of 64 consecutive LIDs; AttrMod = block."""

    FIELDS = (A("ports", 8, LFT_BLOCK),)


class MulticastForwardingTable(Struct):
    """MulticastForwardingTable (0x001B): 32 port masks of 16 bits.

    AttrMod: bits 31..28 select which 16 ports (position), bits 8..0 the block of 32 MLIDs
    starting at 0xC000 + 32 * block.
    """

    FIELDS = (A("port_masks", 16, MFT_BLOCK),)


MFT_TOP_NONE = 0xBFFF  # SwitchInfo.MulticastFDBTop when the MFT holds no MLID (IBA 14.2.5.4)


def mft_attr_mod(block: int, position: int) -> int:
    return (position & 0xF) << 28 | (block & 0x1FF)


def mft_split_attr_mod(attr_mod: int) -> tuple[int, int]:
    return attr_mod & 0x1FF, attr_mod >> 28 & 0xF


class PKeyTable(Struct):
    """P_KeyTable (0x0016): 32 P_Keys; AttrMod bits 15..0 = block, for switches bits 31..16 = port."""

    FIELDS = (A("pkeys", 16, PKEY_BLOCK),)


class GUIDInfo(Struct):
    """GUIDInfo (0x0014): 8 port GUIDs; AttrMod = block."""

    FIELDS = (A("guids", 64, GUID_BLOCK),)


class SMInfo(Struct):
    """SMInfo (0x0020), 21 octets."""

    FIELDS = (U("guid", 64), U("sm_key", 64), U("act_count", 32), U("priority", 4), U("sm_state", 4))


class Notice(Struct):
    """Notice (0x0002): traps and SA reports, 80 octets."""

    FIELDS = (
        U("is_generic", 1), U("type", 7), U("producer_type", 24),  # VendorID when not generic
        U("trap_num", 16),  # DeviceID when not generic
        U("issuer_lid", 16),
        U("notice_toggle", 1), U("notice_count", 15),
        B("data_details", 54),
        B("issuer_gid", 16),
    )


NOTICE_TYPE_FATAL, NOTICE_TYPE_URGENT, NOTICE_TYPE_SECURITY, NOTICE_TYPE_SM, NOTICE_TYPE_INFO = 0, 1, 2, 3, 4
TRAP_GID_IN_SERVICE = 64
TRAP_GID_OUT_OF_SERVICE = 65
TRAP_MCG_CREATED = 66
TRAP_MCG_DELETED = 67
TRAP_LINK_STATE_CHANGE = 128
PRODUCER_CA, PRODUCER_SWITCH, PRODUCER_ROUTER, PRODUCER_SM = 1, 2, 3, 4
