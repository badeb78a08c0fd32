"""Subnet administration records (IBA vol. 1 section 15.2.5) and ClassPortInfo / InformInfo."""

from __future__ import annotations

from .fields import B, R, S, Struct, U
from .smp_attrs import NodeInfo, NodeDescription, PortInfo, Notice  # noqa: F401  (Notice re-exported)


class ClassPortInfo(Struct):
    """ClassPortInfo (0x0001), 72 octets."""

    FIELDS = (
        U("base_version", 8, 1), U("class_version", 8), U("capability_mask", 16),
        U("capability_mask2", 27), U("resp_time_value", 5),
        B("redirect_gid", 16), U("redirect_tc", 8), U("redirect_sl", 4), U("redirect_fl", 20),
        U("redirect_lid", 16), U("redirect_pkey", 16), R(8), U("redirect_qp", 24), U("redirect_qkey", 32),
        B("trap_gid", 16), U("trap_tc", 8), U("trap_sl", 4), U("trap_fl", 20),
        U("trap_lid", 16), U("trap_pkey", 16), U("trap_hl", 8), U("trap_qp", 24), U("trap_qkey", 32),
    )


class PathRecord(Struct):
    """PathRecord (0x0035), 64 octets."""

    FIELDS = (
        U("service_id", 64),
        B("dgid", 16), B("sgid", 16),
        U("dlid", 16), U("slid", 16),
        U("raw_traffic", 1), R(3), U("flow_label", 20), U("hop_limit", 8),
        U("tclass", 8), U("reversible", 1), U("numb_path", 7), U("pkey", 16),
        U("qos_class", 12), U("sl", 4),
        U("mtu_selector", 2), U("mtu", 6), U("rate_selector", 2), U("rate", 6),
        U("pkt_life_selector", 2), U("pkt_life", 6),
        U("preference", 8), R(48),
    )


# Selectors of the MTU, Rate and PacketLifeTime of a PathRecord or MCMemberRecord: greater than,
# less than, exactly, the largest available (IBA table 213)
SELECTOR_GT, SELECTOR_LT, SELECTOR_EXACT, SELECTOR_BEST = 0, 1, 2, 3

# Component mask bits of PathRecord (IBA table 213)
PR_COMP = {
    "service_id": (0, 1), "dgid": (2,), "sgid": (3,), "dlid": (4,), "slid": (5,), "raw_traffic": (6,),
    "flow_label": (8,), "hop_limit": (9,), "tclass": (10,), "reversible": (11,), "numb_path": (12,),
    "pkey": (13,), "qos_class": (14,), "sl": (15,), "mtu_selector": (16,), "mtu": (17,),
    "rate_selector": (18,), "rate": (19,), "pkt_life_selector": (20,), "pkt_life": (21,),
    "preference": (22,),
}


class MCMemberRecord(Struct):
    """MCMemberRecord (0x0038), 52 octets."""

    FIELDS = (
        B("mgid", 16), B("port_gid", 16),
        U("qkey", 32), U("mlid", 16),
        U("mtu_selector", 2), U("mtu", 6), U("tclass", 8), U("pkey", 16),
        U("rate_selector", 2), U("rate", 6), U("pkt_life_selector", 2), U("pkt_life", 6),
        U("sl", 4), U("flow_label", 20), U("hop_limit", 8),
        U("scope", 4), U("join_state", 4), U("proxy_join", 1), R(23),
    )


MCM_COMP = {
    "mgid": (0,), "port_gid": (1,), "qkey": (2,), "mlid": (3,), "mtu_selector": (4,), "mtu": (5,),
    "tclass": (6,), "pkey": (7,), "rate_selector": (8,), "rate": (9,), "pkt_life_selector": (10,),
    "pkt_life": (11,), "sl": (12,), "flow_label": (13,), "hop_limit": (14,), "scope": (15,),
    "join_state": (16,), "proxy_join": (17,),
}

# MCMemberRecord.JoinState bits
# PathRecord/MCMemberRecord Rate codes in Gb/s (IBA vol. 1, table 224 "Rate")
RATE_GBPS = {2: 2.5, 3: 10, 4: 30, 5: 5, 6: 20, 7: 40, 8: 60, 9: 80, 10: 120, 11: 14, 12: 56, 13: 112,
             14: 168, 15: 25, 16: 100, 17: 200, 18: 300, 19: 28, 20: 50, 21: 400, 22: 600}

JOIN_FULL_MEMBER = 0x1
JOIN_NON_MEMBER = 0x2
JOIN_SENDONLY_NON_MEMBER = 0x4
JOIN_SENDONLY_FULL_MEMBER = 0x8


def comp_mask(table: dict, *names: str) -> int:
    """Component mask with the bits of the named fields set."""
    mask = 0
    for n in names:
        for bit in table[n]:
            mask |= 1 << bit
    return mask


def comp_fields(table: dict, mask: int) -> list[str]:
    """Names of the fields whose component bits are all set in ``mask``."""
    return [n for n, bits in table.items() if all(mask >> b & 1 for b in bits)]


class NodeRecord(Struct):
    """NodeRecord (0x0011), 108 octets."""

    FIELDS = (U("lid", 16), R(16), S("node_info", NodeInfo), S("node_desc", NodeDescription))


NR_COMP = {"lid": (0,)}

# NodeRecord component mask (IBA table 200): bit -> field; bit 1 is reserved
NR_COMP_FULL = {
    "lid": 0, "base_version": 2, "class_version": 3, "node_type": 4, "num_ports": 5,
    "sys_guid": 6, "node_guid": 7, "port_guid": 8, "partition_cap": 9, "device_id": 10,
    "revision": 11, "local_port": 12, "vendor_id": 13, "node_desc": 14,
}


class PortInfoRecord(Struct):
    """PortInfoRecord (0x0012), 68 octets."""

    FIELDS = (U("lid", 16), U("port_num", 8), U("options", 8), S("port_info", PortInfo))


PIR_COMP = {"lid": (0,), "port_num": (1,)}

# PortInfoRecord component mask (IBA table 203): LID, PortNum, Options, then PortInfo's fields
PIR_COMP_FULL = {
    "lid": 0, "port_num": 1, "options": 2, "m_key": 3, "gid_prefix": 4, "pi_lid": 5,
    "master_sm_lid": 6, "capability_mask": 7, "diag_code": 8, "m_key_lease_period": 9,
    "local_port": 10, "link_width_enabled": 11, "link_width_supported": 12, "link_width_active": 13,
    "link_speed_supported": 14, "port_state": 15, "phys_state": 16, "link_down_default_state": 17,
    "m_key_protect_bits": 18, "lmc": 20, "link_speed_active": 21, "link_speed_enabled": 22,
    "neighbor_mtu": 23, "master_sm_sl": 24, "vl_cap": 25, "init_type": 26, "vl_high_limit": 27,
    "vl_arb_high_cap": 28, "vl_arb_low_cap": 29, "init_type_reply": 30, "mtu_cap": 31,
    "vl_stall_count": 32, "hoq_life": 33, "operational_vls": 34,
    "partition_enforcement_inbound": 35, "partition_enforcement_outbound": 36,
    "filter_raw_inbound": 37, "filter_raw_outbound": 38, "m_key_violations": 39,
    "p_key_violations": 40, "q_key_violations": 41, "guid_cap": 42, "client_reregister": 43,
    "subnet_timeout": 45, "resp_time_value": 47, "local_phy_errors": 48, "overrun_errors": 49,
    "max_credit_hint": 50, "link_round_trip_latency": 52, "capability_mask2": 53,
    "link_speed_ext_active": 54, "link_speed_ext_supported": 55, "link_speed_ext_enabled": 57,
}


class InformInfo(Struct):
    """InformInfo (0x0003), 36 octets: a subscription to traps/notices."""

    FIELDS = (
        B("gid", 16), U("lid_range_begin", 16), U("lid_range_end", 16), R(16),
        U("is_generic", 8), U("subscribe", 8), U("type", 16), U("trap_num", 16),
        U("qpn", 24), R(3), U("resp_time_value", 5),
        R(8), U("producer_type", 24),
    )


INFORM_TYPE_ALL = 0xFFFF
INFORM_TRAP_ALL = 0xFFFF
