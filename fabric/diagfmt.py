"""The text formats of infiniband-diags' ``smpquery``, ``ibstat``, ``iblinkinfo``, ``ibroute`` and
``ibtracert``, made from SMP attribute data as the device sent it (64 octets), so that what parses
the real tools' output parses ours.

Fields are named and placed as libibmad names and places them (IBA vol. 1, 14.2.5): ``(name,
offset, width, show)``, offsets in bits from the first octet, most significant bit first.
"""

from __future__ import annotations

# -- one field's value, as libibmad's dump functions write it ----------------------------------------


def bits(data: bytes, off: int, width: int) -> int:
    """The ``width`` bits at bit ``off`` (big-endian, MSB first) of an attribute."""
    raw = bytes(data[:64]).ljust(64, b"\0")
    return int.from_bytes(raw, "big") >> (512 - off - width) & ((1 << width) - 1)


def _named(table: dict, fmt: str = "?({})"):
    return lambda v, _w: table.get(v, fmt.format(v))


def _uint(v: int, _w: int) -> str:
    return str(v)


def _hex(v: int, w: int) -> str:
    return f"0x{v:0{(w + 7) // 8 * 2}x}"


def _alternatives(v: int, names: dict, over: int) -> str:
    """"1X or 4X": the set bits' names; what no name covers is ``undefined (v)``."""
    parts = "".join(f"{names[b]} or " for b in sorted(names) if v & b)
    if v == 0 or v >> over:
        return parts + f"undefined ({v})"
    return parts[:-4]


WIDTH = {1: "1X", 2: "4X", 4: "8X", 8: "12X", 16: "2X"}
SPEED = {1: "2.5 Gbps", 2: "5.0 Gbps", 4: "10.0 Gbps"}
SPEED_EXT = {1: "14.0625 Gbps", 2: "25.78125 Gbps", 4: "53.125 Gbps", 8: "106.25 Gbps"}
PORT_STATE = {0: "NoChange", 1: "Down", 2: "Initialize", 3: "Armed", 4: "Active"}
PHYS_STATE = {0: "NoChange", 1: "Sleep", 2: "Polling", 3: "Disabled", 4: "PortConfigurationTraining", 5: "LinkUp",
              6: "LinkErrorRecovery", 7: "PhyTest"}
MTU = {1: "256", 2: "512", 3: "1024", 4: "2048", 5: "4096"}
VLS = {1: "VL0", 2: "VL0-1", 3: "VL0-3", 4: "VL0-7", 5: "VL0-14"}
NODE_TYPE = {1: "Channel Adapter", 2: "Switch", 3: "Router"}
CAP_MASK = {1: "IsSM", 2: "IsNoticeSupported", 3: "IsTrapSupported", 4: "IsOptionalIPDSupported",
            5: "IsAutomaticMigrationSupported", 6: "IsSLMappingSupported", 7: "IsMKeyNVRAM", 8: "IsPKeyNVRAM",
            9: "IsLedInfoSupported", 10: "IsSMdisabled", 11: "IsSystemImageGUIDsupported",
            12: "IsPkeySwitchExternalPortTrapSupported", 14: "IsExtendedSpeedsSupported",
            15: "IsCapabilityMask2Supported", 16: "IsCommunicatonManagementSupported",
            17: "IsSNMPTunnelingSupported", 18: "IsReinitSupported", 19: "IsDeviceManagementSupported",
            20: "IsVendorClassSupported", 21: "IsDRNoticeSupported", 22: "IsCapabilityMaskNoticeSupported",
            23: "IsBootManagementSupported", 24: "IsLinkRoundTripLatencySupported",
            25: "IsClientRegistrationSupported", 26: "IsOtherLocalChangesNoticeSupported",
            27: "IsLinkSpeedWidthPairsTableSupported", 28: "IsVendorSpecificMadsTableSupported",
            29: "IsMcastPkeyTrapSuppressionSupported", 30: "IsMulticastFDBTopSupported",
            31: "IsHierarchyInfoSupported"}
CAP_MASK2 = {0: "IsSetNodeDescriptionSupported", 1: "IsPortInfoExtendedSupported", 2: "IsVirtualizationSupported",
             3: "IsSwitchPortStateTableSupported", 4: "IsLinkWidth2xSupported", 5: "IsLinkSpeedHDRSupported",
             6: "IsMKeyProtectBitsExtSupported", 7: "IsEnhancedTrap128Supported", 8: "IsPartitionTopSupported",
             9: "IsEnhancedQoSArbiterSupported", 10: "IsLinkSpeedNDRSupported"}
CAP_HAS_EXT_SPEEDS = 1 << 14


def _mask(names: dict):
    return lambda v, _w: f"0x{v:x}" + "".join(f"\n\t\t\t\t{n}" for b, n in names.items() if v >> b & 1)


def _width_supported(v: int, _w: int) -> str:
    text = _alternatives(v, WIDTH, 5)
    return text if v in (1, 3, 7, 11, 15, 17, 19, 23, 27, 31) or v >> 5 else text + " (IBA extension)"


def _speeds(v: int, _w: int) -> str:
    text = _alternatives(v, SPEED, 3)
    return text if v in (1, 3, 5, 7) or v >> 3 else text + " (IBA extension)"


def _speeds_ext(v: int, _w: int) -> str:
    return "0" if v == 0 else _alternatives(v, SPEED_EXT, 4)


def _speeds_ext_enabled(v: int, w: int) -> str:
    return "Extended link speeds disabled" if v == 30 else _speeds_ext(v, w)


_width = _named(WIDTH, "undefined ({})")
_speed = _named({0: "Extended speed", **SPEED}, "undefined ({})")

PORT_INFO = (
    ("Mkey", 0, 64, None), ("GidPrefix", 64, 64, _hex), ("Lid", 128, 16, _uint), ("SMLid", 144, 16, _uint),
    ("CapMask", 160, 32, _mask(CAP_MASK)), ("DiagCode", 192, 16, _hex), ("MkeyLeasePeriod", 208, 16, _uint),
    ("LocalPort", 224, 8, _uint), ("LinkWidthEnabled", 232, 8, lambda v, w: _alternatives(v, WIDTH, 5)),
    ("LinkWidthSupported", 240, 8, _width_supported), ("LinkWidthActive", 248, 8, _width),
    ("LinkSpeedSupported", 256, 4, _speeds), ("LinkState", 260, 4, _named(PORT_STATE)),
    ("PhysLinkState", 264, 4, _named(PHYS_STATE)),
    ("LinkDownDefState", 268, 4, _named({0: "NoChange", 1: "Sleep", 2: "Polling"})),
    ("ProtectBits", 272, 2, _uint), ("LMC", 277, 3, _uint), ("LinkSpeedActive", 280, 4, _speed),
    ("LinkSpeedEnabled", 284, 4, _speeds), ("NeighborMTU", 288, 4, _named(MTU)), ("SMSL", 292, 4, _uint),
    ("VLCap", 296, 4, _named(VLS)), ("InitType", 300, 4, _hex), ("VLHighLimit", 304, 8, _uint),
    ("VLArbHighCap", 312, 8, _uint), ("VLArbLowCap", 320, 8, _uint), ("InitReply", 328, 4, _hex),
    ("MtuCap", 332, 4, _named(MTU)), ("VLStallCount", 336, 3, _uint), ("HoqLife", 339, 5, _uint),
    ("OperVLs", 344, 4, _named({0: "No change", **VLS})), ("PartEnforceInb", 348, 1, _uint),
    ("PartEnforceOutb", 349, 1, _uint), ("FilterRawInb", 350, 1, _uint), ("FilterRawOutb", 351, 1, _uint),
    ("MkeyViolations", 352, 16, _uint), ("PkeyViolations", 368, 16, _uint), ("QkeyViolations", 384, 16, _uint),
    ("GuidCap", 400, 8, _uint), ("ClientReregister", 408, 1, _uint),
    ("McastPkeyTrapSuppressionEnabled", 409, 2, _uint), ("SubnetTimeout", 411, 5, _uint),
    ("RespTimeVal", 419, 5, _uint), ("LocalPhysErr", 424, 4, _uint), ("OverrunErr", 428, 4, _uint),
    ("MaxCreditHint", 432, 16, _uint), ("RoundTrip", 456, 24, _uint),
    ("CapabilityMask2", 480, 16, _mask(CAP_MASK2)),
    ("LinkSpeedExtActive", 496, 4, _named({0: "No Extended Speed", **SPEED_EXT}, "undefined ({})")),
    ("LinkSpeedExtSupported", 500, 4, _speeds_ext), ("LinkSpeedExtEnabled", 507, 5, _speeds_ext_enabled),
)
NODE_INFO = (
    ("BaseVers", 0, 8, _uint), ("ClassVers", 8, 8, _uint), ("NodeType", 16, 8, _named(NODE_TYPE, "?({})?")),
    ("NumPorts", 24, 8, _uint), ("SystemGuid", 32, 64, _hex), ("Guid", 96, 64, _hex), ("PortGuid", 160, 64, _hex),
    ("PartCap", 224, 16, _uint), ("DevId", 240, 16, _hex), ("Revision", 256, 32, _hex), ("LocalPort", 288, 8, _uint),
    ("VendorId", 296, 24, _hex),
)
SWITCH_INFO = (
    ("LinearFdbCap", 0, 16, _uint), ("RandomFdbCap", 16, 16, _uint), ("McastFdbCap", 32, 16, _uint),
    ("LinearFdbTop", 48, 16, _uint), ("DefPort", 64, 8, _uint), ("DefMcastPrimPort", 72, 8, _uint),
    ("DefMcastNotPrimPort", 80, 8, _uint), ("LifeTime", 88, 5, _uint), ("StateChange", 93, 1, _uint),
    ("OptSLtoVLMapping", 94, 2, _uint), ("LidsPerPort", 96, 16, _uint), ("PartEnforceCap", 112, 16, _uint),
    ("InboundPartEnf", 128, 1, _uint), ("OutboundPartEnf", 129, 1, _uint), ("FilterRawInbound", 130, 1, _uint),
    ("FilterRawOutbound", 131, 1, _uint), ("EnhancedPort0", 132, 1, _uint), ("MulticastFDBTop", 144, 16, _hex),
)


def field(table, name: str, data: bytes) -> int:
    _, off, width, _show = next(f for f in table if f[0] == name)
    return bits(data, off, width)


def show(table, name: str, data: bytes) -> str:
    """A field's value as libibmad's mad_dump_val writes it."""
    _, off, width, fn = next(f for f in table if f[0] == name)
    return fn(bits(data, off, width), width)


def dotted(name: str, value: str) -> str:
    return f"{name}:{'.' * max(0, 32 - len(name))}{value}"


def dump(table, data: bytes) -> list[str]:
    """Every field of an attribute, one ``Name:......value`` line each (the M_Key not shown, as
    the tools show it without -K)."""
    return [dotted(name, "<not displayed>" if fn is None else fn(bits(data, off, width), width))
            for name, off, width, fn in table]


def node_desc(data: bytes) -> str:
    """A NodeDescription's text: up to the first NUL, as the tools read it."""
    return bytes(data[:64]).split(b"\0", 1)[0].decode("utf-8", "replace")


# -- smpquery -------------------------------------------------------------------------------------


def dr_path_str(path) -> str:
    """libibmad's portid2str of a directed route from the local port (permissive DR LIDs)."""
    return "DR path slid 65535; dlid 65535; " + ",".join(str(p) for p in [0, *path])


def smpquery(attr: str, where: str, data: bytes, port: int = 0) -> list[str]:
    if attr == "nodeinfo":
        return [f"# Node info: {where}", *dump(NODE_INFO, data)]
    if attr == "portinfo":
        return [f"# Port info: {where} port {port}", *dump(PORT_INFO, data)]
    if attr == "switchinfo":
        return [f"# Switch info: {where}", *dump(SWITCH_INFO, data)]
    desc = node_desc(data)
    return [f"Node Description:{'.' * (32 - len(desc)) if len(desc) < 32 else '.'}{desc}"]


# -- ibstat ---------------------------------------------------------------------------------------

CA_TYPE = "simulator"  # what umad2sim's sysfs says of every CA: no MAD carries a driver's hca_type
_IBSTAT_STATE = ["???", "Down", "Initializing", "Armed", "Active"]
_IBSTAT_PHYS = ["No state change", "Sleep", "Polling", "Disabled", "PortConfigurationTraining", "LinkUp",
                "LinkErrorRecovery", "PhyTest"]
_LANES = {1: 1, 2: 4, 4: 8, 8: 12, 16: 2}
_GBPS = {1: 2.5, 2: 5.0, 4: 10.0}
_GBPS_EXT = {1: 14.0, 2: 25.0, 4: 50.0, 8: 100.0}  # FDR, EDR, HDR, NDR per lane, as the kernel rates them


def ibstat_rate(pi: bytes) -> str:
    """The port's rate in Gb/s as ibstat prints sysfs' ``rate``: an integer, 2.5 for 1X SDR."""
    lanes = _LANES.get(field(PORT_INFO, "LinkWidthActive", pi), 0)
    ext = field(PORT_INFO, "LinkSpeedExtActive", pi) if field(PORT_INFO, "CapMask", pi) & CAP_HAS_EXT_SPEEDS else 0
    gbps = lanes * (_GBPS_EXT.get(ext, 0.0) if ext else _GBPS.get(field(PORT_INFO, "LinkSpeedActive", pi), 0.0))
    return "2.5" if int(gbps) == 2 else str(int(gbps))


def ibstat_port(num: int, pi: bytes, port_guid: int, *, alone: bool = False) -> list[str]:
    pre, head = ("", "") if alone else ("\t\t", "\t")
    state, phys = field(PORT_INFO, "LinkState", pi), field(PORT_INFO, "PhysLinkState", pi)
    return [f"{head}Port {num}:",
            f"{pre}State: {_IBSTAT_STATE[state] if state <= 4 else '???'}",
            f"{pre}Physical state: {_IBSTAT_PHYS[phys] if phys <= 7 else '???'}",
            f"{pre}Rate: {ibstat_rate(pi)}",
            f"{pre}Base lid: {field(PORT_INFO, 'Lid', pi)}",
            f"{pre}LMC: {field(PORT_INFO, 'LMC', pi)}",
            f"{pre}SM lid: {field(PORT_INFO, 'SMLid', pi)}",
            f"{pre}Capability mask: 0x{field(PORT_INFO, 'CapMask', pi):08x}",
            f"{pre}Port GUID: 0x{port_guid:016x}",
            f"{pre}Link layer: IB"]


def ibstat_ca(name: str, ni: bytes, firmware: int) -> list[str]:
    """The CA's header. Firmware version: sysfs' ``fw_ver``, which no MAD carries; hardware
    version: NodeInfo.Revision (both in hex, as umad2sim writes them)."""
    return [f"CA '{name}'", f"\tCA type: {CA_TYPE}", f"\tNumber of ports: {field(NODE_INFO, 'NumPorts', ni)}",
            f"\tFirmware version: {firmware:x}", f"\tHardware version: {field(NODE_INFO, 'Revision', ni):x}",
            f"\tNode GUID: 0x{field(NODE_INFO, 'Guid', ni):016x}",
            f"\tSystem image GUID: 0x{field(NODE_INFO, 'SystemGuid', ni):016x}"]
