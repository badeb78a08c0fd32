"""Known-answer tests for the wire layouts.

Every expected octet string below is written out by hand from the field positions of the IBA
specification (vol. 1: LRH 7.7, GRH 8.3, BTH 9.2, DETH 9.3, MAD 13.4, SMP 14.2, SA 15.2, PMA 16.1)
and RFC 4391 (IPoIB); nothing here calls the code under test to produce an expected value. Each
check goes both ways: pack() of the described object gives the octets, and unpack() of the octets
gives the object.
"""

from __future__ import annotations

import pytest

import fabric.wire as w
from ipoib.encap import IPoIBHeader, IPoIBLinkAddr, ipv4_mcast_mgid
from fabric.wire import (
    BTH, DETH, GRH, LRH, MAD, ClassPortInfo, GUIDInfo, InformInfo,
    LinearForwardingTable, MADHeader, MCMemberRecord, MulticastForwardingTable, NodeDescription,
    NodeInfo, NodeRecord, Notice, PathRecord, PKeyTable, PMAMad, PortCounters, PortCountersExtended,
    PortInfo, PortInfoRecord, SAMad, SMInfo, SMPDirected, SMPLid, SwitchInfo, new_mad, parse_mad,
)


def image(size: int, *spans) -> bytes:
    """``size`` zero octets with literal hex strings written at the given offsets."""
    out = bytearray(size)
    for off, hx in spans:
        raw = bytes.fromhex(hx)
        assert off + len(raw) <= size, (off, hx)
        out[off:off + len(raw)] = raw
    return bytes(out)


def check(obj, expected: bytes):
    got = obj.pack()
    assert got.hex() == expected.hex()
    assert type(obj).unpack(expected) == obj


# GIDs used below
GID_A = "fe800000000000000002c90300001235"  # link-local prefix + port GUID 0002:c903:0000:1235
GID_B = "fe800000000000000002c9030000aaaa"
MGID_BCAST = "ff12401bffff000000000000ffffffff"  # IPoIB broadcast group, P_Key 0xffff


# -- transport headers ---------------------------------------------------------------------------


def test_lrh():
    lrh = LRH(vl=5, lver=3, sl=0xC, lnh=2, dlid=0x1234, pktlen=0x5A6, slid=0xBEEF)
    expected = bytes.fromhex(
        "53"      # byte 0: VL=5 (high nibble), LVer=3 (low nibble)
        "c2"      # byte 1: SL=0xC (high nibble), Rsv2=00, LNH=10b (IBA local)
        "1234"    # bytes 2-3: DLID
        "05a6"    # bytes 4-5: Rsv5=00000, PktLen=0x5A6 (11 bits)
        "beef"    # bytes 6-7: SLID
    )
    check(lrh, expected)
    # reserved bits (byte 1 bits 3..2, byte 4 bits 7..3) set on receive are ignored
    assert LRH.unpack(bytes.fromhex("53ce1234fda6beef")) == lrh


def test_lrh_vl15_smp():
    # An SMP to the permissive LID on VL15: 8 LRH + 12 BTH + 8 DETH + 256 MAD + 4 ICRC = 288 = 72 words
    lrh = LRH(vl=15, lver=0, sl=0, lnh=2, dlid=0xFFFF, pktlen=72, slid=0xFFFF)
    check(lrh, bytes.fromhex("f0" "02" "ffff" "0048" "ffff"))
    # PktLen max (11 bits all ones) and LNH=3 (IBA global)
    check(LRH(lnh=3, pktlen=0x7FF), bytes.fromhex("00" "03" "0000" "07ff" "0000"))


def test_grh():
    grh = GRH(ipver=6, tclass=0xAB, flow_label=0xCDEF1, paylen=0x0123, nxthdr=0x1B, hoplmt=0x40,
              sgid=bytes.fromhex(GID_A), dgid=bytes.fromhex(MGID_BCAST))
    expected = bytes.fromhex(
        "6abcdef1"  # IPVer=6 (4 bits) | TClass=0xAB (8 bits) | FlowLabel=0xCDEF1 (20 bits)
        "0123"      # bytes 4-5: PayLen
        "1b"        # byte 6: NxtHdr (IBA transport)
        "40"        # byte 7: HopLmt
        + GID_A     # bytes 8-23: SGID
        + MGID_BCAST  # bytes 24-39: DGID
    )
    check(grh, expected)


def test_bth():
    bth = BTH(opcode=0x64, se=1, m=0, padcnt=3, tver=0, pkey=0x8001, dest_qp=0xABCDEF, ack_req=1,
              psn=0x123456)
    expected = bytes.fromhex(
        "64"      # byte 0: OpCode = UD SEND only
        "b0"      # byte 1: SE=1, M=0, PadCnt=11b, TVer=0000
        "8001"    # bytes 2-3: P_Key
        "00"      # byte 4: Resv8a
        "abcdef"  # bytes 5-7: DestQP
        "80"      # byte 8: A=1, Resv7
        "123456"  # bytes 9-11: PSN
    )
    check(bth, expected)
    # Reserved octet 4 and the 7 reserved bits of byte 8 are ignored on receive
    assert BTH.unpack(bytes.fromhex("64b08001ffabcdefff123456")) == bth


def test_bth_other_bits():
    bth = BTH(opcode=0x65, se=0, m=1, padcnt=2, tver=5, pkey=0x7FFF, dest_qp=0xFFFFFF, ack_req=0,
              psn=0xFFFFFF)
    # byte 1: SE=0, M=1 (0x40), PadCnt=10b (0x20), TVer=0101 -> 0x65
    check(bth, bytes.fromhex("65" "65" "7fff" "00" "ffffff" "00" "ffffff"))


def test_deth():
    check(DETH(qkey=0x80010000, src_qp=1), bytes.fromhex("80010000" "00" "000001"))  # Q_Key, Resv8, SrcQP
    deth = DETH(qkey=0x00000B1B, src_qp=0xFEDCBA)
    check(deth, bytes.fromhex("00000b1b" "00" "fedcba"))
    assert DETH.unpack(bytes.fromhex("00000b1bfffedcba")) == deth


def test_ipoib_header():
    check(IPoIBHeader(ethertype=0x0800), bytes.fromhex("0800" "0000"))  # type, 16 reserved bits
    check(IPoIBHeader(ethertype=0x86DD), bytes.fromhex("86dd0000"))
    assert IPoIBHeader.unpack(bytes.fromhex("0806ffff")) == IPoIBHeader(ethertype=0x0806)


def test_ipoib_link_address():
    # RFC 4391 section 9.1.1: 1 octet of flags (bit 7: connected mode), 3 octets QPN, 16 octets GID
    addr = IPoIBLinkAddr(flags=0x80, qpn=0x000048, gid=bytes.fromhex(GID_A))
    check(addr, bytes.fromhex("80" "000048" + GID_A))
    bcast = IPoIBLinkAddr(flags=0, qpn=0xFFFFFF, gid=bytes.fromhex(MGID_BCAST))
    check(bcast, bytes.fromhex("00" "ffffff" + MGID_BCAST))
    assert len(bcast.pack()) == 20


# -- MADs ------------------------------------------------------------------------------------------

HDR_GET_RESP = (
    "01"                # byte 0: BaseVersion
    "81"                # byte 1: MgmtClass (SubnMgt directed route)
    "01"                # byte 2: ClassVersion
    "81"                # byte 3: R=1 | Method=0x01 (GetResp)
    "001c"              # bytes 4-5: Status (invalid attribute value)
    "0203"              # bytes 6-7: ClassSpecific
    "0102030405060708"  # bytes 8-15: TransactionID
    "0015"              # bytes 16-17: AttributeID (PortInfo)
    "0000"              # bytes 18-19: Reserved
    "00000001"          # bytes 20-23: AttributeModifier
)


def test_mad_common_header():
    hdr = MADHeader(base_version=1, mgmt_class=0x81, class_version=1, method=0x81, status=0x001C,
                    class_specific=0x0203, tid=0x0102030405060708, attr_id=0x0015, attr_mod=1)
    check(hdr, bytes.fromhex(HDR_GET_RESP))
    # The reserved octets 18-19 are ignored
    assert MADHeader.unpack(bytes.fromhex(HDR_GET_RESP[:36] + "ffff" + HDR_GET_RESP[40:])) == hdr


def test_generic_mad():
    mad = MAD(base_version=1, mgmt_class=0x81, class_version=1, method=0x81, status=0x1C,
              class_specific=0x0203, tid=0x0102030405060708, attr_id=0x15, attr_mod=1,
              data=bytes(range(232)))
    check(mad, bytes.fromhex(HDR_GET_RESP) + bytes(range(232)))  # data area: bytes 24..255


def test_directed_route_smp():
    smp = new_mad(SMPDirected, method=0x01, d=1, status=0x001C, hop_ptr=2, hop_cnt=3,
                  tid=0x0000000100000002, attr_id=0x0011, attr_mod=0, m_key=0x1122334455667788,
                  dr_slid=0xFFFF, dr_dlid=0xFFFF, data=bytes(range(64)),
                  initial_path=bytes.fromhex("00010402") + bytes(60),
                  return_path=bytes.fromhex("00000307") + bytes(60))
    expected = image(
        256,
        (0, "01" "81" "01" "01"),    # BaseVersion 1, class 0x81, ClassVersion 1, R=0 Method=Get
        (4, "801c"),                 # D bit (top bit of Status) = 1 | Status 0x001C
        (6, "02"),                   # HopPointer (first octet of the ClassSpecific field)
        (7, "03"),                   # HopCount
        (8, "0000000100000002"),     # TID
        (16, "0011" "0000" "00000000"),  # AttributeID NodeInfo, reserved, AttributeModifier
        (24, "1122334455667788"),    # M_Key
        (32, "ffff"),                # DrSLID (permissive)
        (34, "ffff"),                # DrDLID (permissive)
        # 36..63: reserved (28 octets)
        (64, bytes(range(64)).hex()),  # SMP data
        (128, "00010402"),           # InitialPath[0..3]
        (192, "00000307"),           # ReturnPath[0..3]
    )
    check(smp, expected)
    assert parse_mad(expected) == smp


def test_directed_route_smp_d_bit_is_bit_15_of_status():
    # D=1, status 0 -> bytes 4-5 = 80 00 ; D=0, status all ones (15 bits) -> 7f ff
    assert new_mad(SMPDirected, d=1, status=0).pack()[4:8] == bytes.fromhex("80000000")
    assert new_mad(SMPDirected, d=0, status=0x7FFF).pack()[4:8] == bytes.fromhex("7fff0000")
    assert new_mad(SMPDirected, hop_ptr=0xFF, hop_cnt=0x40).pack()[4:8] == bytes.fromhex("0000ff40")


def test_lid_routed_smp():
    smp = new_mad(SMPLid, method=0x02, tid=0x42, attr_id=0x0015, attr_mod=1,
                  m_key=0x0102030405060708, data=b"\xaa" * 64)
    expected = image(
        256,
        (0, "01" "01" "01" "02"),    # BaseVersion, class 0x01 (LID routed), ClassVersion 1, Set
        (8, "0000000000000042"),     # TID
        (16, "0015" "0000" "00000001"),
        (24, "0102030405060708"),    # M_Key
        # 32..63 reserved
        (64, "aa" * 64),             # SMP data at 64..127
        # 128..255 reserved
    )
    check(smp, expected)
    assert parse_mad(expected) == smp
    # the reserved areas are ignored on receive
    dirty = bytearray(expected)
    dirty[32:64] = b"\xee" * 32
    dirty[128:256] = b"\xee" * 128
    assert SMPLid.unpack(bytes(dirty)) == smp


def test_sa_mad():
    sa = new_mad(SAMad, method=0x12, tid=0x1122, attr_id=0x0035, attr_mod=0,
                 rmpp_version=1, rmpp_type=1, rmpp_resp_time=0x12, rmpp_flags=0x7, rmpp_status=0,
                 rmpp_data1=1, rmpp_data2=0xC8, sm_key=0x0102030405060708, attr_offset=8,
                 comp_mask=0x30, data=b"\x5a" * 200)
    expected = image(
        256,
        (0, "01" "03" "02" "12"),    # BaseVersion, SubnAdm, ClassVersion 2, GetTable
        (8, "0000000000001122"),
        (16, "0035" "0000" "00000000"),
        # RMPP header 24..35
        (24, "01"),                  # RMPPVersion
        (25, "01"),                  # RMPPType (DATA)
        (26, "97"),                  # RRespTime=0x12 (top 5 bits: 10010) | RMPPFlags=111 -> 1001 0111
        (27, "00"),                  # RMPPStatus
        (28, "00000001"),            # Data1 (SegmentNumber)
        (32, "000000c8"),            # Data2 (PayloadLength)
        (36, "0102030405060708"),    # SM_Key
        (44, "0008"),                # AttributeOffset (8-octet units)
        # 46..47 reserved
        (48, "0000000000000030"),    # ComponentMask
        (56, "5a" * 200),            # SA data 56..255
    )
    check(sa, expected)
    assert parse_mad(expected) == sa


def test_pma_mad():
    pma = new_mad(PMAMad, method=0x01, tid=7, attr_id=0x0012, attr_mod=0, data=bytes(range(192)))
    expected = image(
        256,
        (0, "01" "04" "01" "01"),    # BaseVersion, PerfMgt, ClassVersion 1, Get
        (8, "0000000000000007"),
        (16, "0012" "0000" "00000000"),
        # 24..63: 40 reserved octets
        (64, bytes(range(192)).hex()),  # PMA data 64..255
    )
    check(pma, expected)
    assert parse_mad(expected) == pma


# -- subnet management attributes -------------------------------------------------------------------


def test_node_info():
    ni = NodeInfo(base_version=1, class_version=1, node_type=2, num_ports=36,
                  sys_guid=0x0002C90300001000, node_guid=0x0002C90300001234,
                  port_guid=0x0002C90300001235, partition_cap=0x0080, device_id=0xBD36,
                  revision=0xA0, local_port=5, vendor_id=0x0002C9)
    expected = image(
        40,
        (0, "01" "01"),              # BaseVersion, ClassVersion
        (2, "02"),                   # NodeType (switch)
        (3, "24"),                   # NumberOfPorts = 36
        (4, "0002c90300001000"),     # SystemImageGUID
        (12, "0002c90300001234"),    # NodeGUID
        (20, "0002c90300001235"),    # PortGUID
        (28, "0080"),                # PartitionCap
        (30, "bd36"),                # DeviceID
        (32, "000000a0"),            # Revision
        (36, "05"),                  # LocalPortNum
        (37, "0002c9"),              # VendorID (24 bits, 37..39)
    )
    check(ni, expected)


def test_node_description():
    check(NodeDescription(description="mlx5_0 HCA-1"),
          image(64, (0, "6d6c78355f3020484341 2d31".replace(" ", ""))))  # ASCII, NUL padded


def test_port_info():
    pi = PortInfo(m_key=0x0102030405060708, gid_prefix=0xFE80000000000000, lid=0x0010,
                  master_sm_lid=0x0001, capability_mask=0x02510868, local_port=1,
                  link_width_active=2, link_speed_supported=7, port_state=4, phys_state=5,
                  link_down_default_state=2, m_key_protect_bits=2, lmc=3, link_speed_active=1,
                  link_speed_enabled=7, neighbor_mtu=5, master_sm_sl=0, vl_cap=4, mtu_cap=5,
                  client_reregister=1, subnet_timeout=0x12, resp_time_value=0x13,
                  capability_mask2=0x0042, link_speed_ext_active=1, link_speed_ext_supported=3,
                  link_speed_ext_enabled=0x1F)
    expected = image(
        64,
        (0, "0102030405060708"),     # M_Key
        (8, "fe80000000000000"),     # GidPrefix
        (16, "0010"),                # LID
        (18, "0001"),                # MasterSMLID
        (20, "02510868"),            # CapabilityMask
        # 24 DiagCode, 26 M_KeyLeasePeriod
        (28, "01"),                  # LocalPortNum
        (31, "02"),                  # LinkWidthActive (4X)
        (32, "74"),                  # LinkSpeedSupported=7 (high) | PortState=4 Active (low nibble)
        (33, "52"),                  # PortPhysicalState=5 LinkUp (high nibble) | LinkDownDefault=2
        (34, "83"),                  # M_KeyProtectBits=10b | 3 reserved | LMC=011 (low 3 bits)
        (35, "17"),                  # LinkSpeedActive=1 | LinkSpeedEnabled=7
        (36, "50"),                  # NeighborMTU=5 (high nibble) | MasterSMSL=0
        (37, "40"),                  # VLCap=4 | InitType=0
        (41, "05"),                  # InitTypeReply=0 | MTUCap=5 (low nibble)
        (51, "92"),                  # ClientReregister=1 (top bit) | ... | SubnetTimeOut=0x12
        (52, "13"),                  # 3 reserved | RespTimeValue=0x13
        (60, "0042"),                # CapabilityMask2
        (62, "13"),                  # LinkSpeedExtActive=1 | LinkSpeedExtSupported=3
        (63, "1f"),                  # 3 reserved | LinkSpeedExtEnabled=0x1F
    )
    check(pi, expected)
    # reserved bits (byte 34 bits 5..3, byte 52 bits 7..5, byte 56, byte 63 bits 7..5) are ignored
    dirty = bytearray(expected)
    dirty[34] |= 0x38
    dirty[52] |= 0xE0
    dirty[56] = 0xFF
    dirty[63] |= 0xE0
    assert PortInfo.unpack(bytes(dirty)) == pi


def test_port_info_later_fields():
    pi = PortInfo(vl_high_limit=0x11, vl_arb_high_cap=0x22, vl_arb_low_cap=0x33, init_type_reply=0xA,
                  vl_stall_count=7, hoq_life=0x13, operational_vls=4,
                  partition_enforcement_inbound=1, partition_enforcement_outbound=0,
                  filter_raw_inbound=1, filter_raw_outbound=0, m_key_violations=0x0102,
                  p_key_violations=0x0304, q_key_violations=0x0506, guid_cap=0x20,
                  local_phy_errors=0xC, overrun_errors=0xD, max_credit_hint=0xBEEF,
                  link_round_trip_latency=0xABCDEF)
    expected = image(
        64,
        (38, "11" "22" "33"),        # VLHighLimit, VLArbitrationHighCap, VLArbitrationLowCap
        (41, "a0"),                  # InitTypeReply=0xA (high nibble) | MTUCap=0
        (42, "f3"),                  # VLStallCount=111 | HOQLife=10011
        (43, "4a"),                  # OperationalVLs=4 | PEI=1 PEO=0 FRI=1 FRO=0
        (44, "0102" "0304" "0506"),  # M_Key/P_Key/Q_Key violations
        (50, "20"),                  # GUIDCap
        (53, "cd"),                  # LocalPhyErrors | OverrunErrors
        (54, "beef"),                # MaxCreditHint
        (56, "00" "abcdef"),         # reserved | LinkRoundTripLatency
    )
    check(pi, expected)


def test_switch_info():
    si = SwitchInfo(linear_fdb_cap=0xC000, random_fdb_cap=0, mcast_fdb_cap=0x0400, linear_fdb_top=0x0040,
                    default_port=0, default_mcast_primary_port=0xFF, default_mcast_not_primary_port=0,
                    life_time_value=0x13, port_state_change=1, optimized_sl2vl=0, lids_per_port=0,
                    partition_enforcement_cap=0x0020, inbound_enforcement_cap=1,
                    outbound_enforcement_cap=1, enhanced_port0=1, mcast_fdb_top=0xC3FF)
    expected = image(
        20,
        (0, "c000" "0000" "0400" "0040"),  # LinearFDBCap, RandomFDBCap, MulticastFDBCap, LinearFDBTop
        (8, "00" "ff" "00"),         # DefaultPort, DefaultMulticastPrimaryPort, ...NotPrimaryPort
        (11, "9c"),                  # LifeTimeValue=10011 | PortStateChange=1 | OptimizedSL2VL=00
        (12, "0000" "0020"),         # LIDsPerPort, PartitionEnforcementCap
        (16, "c8"),                  # IEC=1 OEC=1 FRIC=0 FROC=0 EnhancedPort0=1 | 3 reserved
        (18, "c3ff"),                # MulticastFDBTop
    )
    check(si, expected)


def test_linear_forwarding_table():
    # port of LID (block*64 + i) is octet i
    check(LinearForwardingTable(ports=tuple(range(64))), bytes(range(64)))
    ports = (0xFF,) * 64
    ports = (0, 1) + ports[2:63] + (0x10,)
    check(LinearForwardingTable(ports=ports), image(64, (0, "0001" + "ff" * 61 + "10")))


def test_multicast_forwarding_table():
    masks = [0] * 32
    masks[0], masks[1], masks[31] = 0x0001, 0x8000, 0x1234
    # PortMask i is the big-endian 16-bit word at octets 2i..2i+1
    check(MulticastForwardingTable(port_masks=tuple(masks)), image(64, (0, "0001"), (2, "8000"), (62, "1234")))


def test_pkey_table():
    pkeys = [0] * 32
    pkeys[0], pkeys[1], pkeys[17], pkeys[31] = 0xFFFF, 0x8001, 0x0B1B, 0x7FFF
    check(PKeyTable(pkeys=tuple(pkeys)), image(64, (0, "ffff"), (2, "8001"), (34, "0b1b"), (62, "7fff")))


def test_guid_info():
    guids = [0] * 8
    guids[0], guids[7] = 0x0002C90300001235, 0xFFFFFFFFFFFFFFFF
    check(GUIDInfo(guids=tuple(guids)), image(64, (0, "0002c90300001235"), (56, "ff" * 8)))


def test_sm_info():
    smi = SMInfo(guid=0x0002C90300001235, sm_key=0x0102030405060708, act_count=0x11223344, priority=0xF,
                 sm_state=3)
    # GUID, SM_Key, ActCount, Priority (high nibble) | SMState=3 master (low nibble)
    check(smi, bytes.fromhex("0002c90300001235" "0102030405060708" "11223344" "f3"))


def test_notice():
    details = bytes(6) + bytes.fromhex(GID_A) + bytes(32)  # trap 64: GID at DataDetails+6
    n = Notice(is_generic=1, type=4, producer_type=4, trap_num=64, issuer_lid=0x0001, notice_toggle=1,
               notice_count=5, data_details=details, issuer_gid=bytes.fromhex(GID_B))
    expected = image(
        80,
        (0, "84"),                   # IsGeneric=1 | Type=4 (informational)
        (1, "000004"),               # ProducerType = SM
        (4, "0040"),                 # TrapNumber 64 (GID in service)
        (6, "0001"),                 # IssuerLID
        (8, "8005"),                 # NoticeToggle=1 | NoticeCount=5
        (10, "000000000000"),        # DataDetails starts at 10 (54 octets)
        (16, GID_A),                 # ... its GID at DataDetails+6
        (64, GID_B),                 # IssuerGID 64..79
    )
    check(n, expected)


# -- performance management -------------------------------------------------------------------------


def test_port_counters():
    pc = PortCounters(port_select=1, counter_select=0xFFFF, symbol_error_counter=0x1234,
                      link_error_recovery_counter=0x56, link_downed_counter=0x78, port_rcv_errors=0x0102,
                      port_xmit_discards=0x0A0B, local_link_integrity_errors=0xA,
                      excessive_buffer_overrun_errors=0xB, qp1_dropped=0x0E0F, vl15_dropped=0x0C0D,
                      port_xmit_data=0x11223344, port_rcv_data=0x55667788, port_xmit_wait=0xDEADBEEF)
    expected = image(
        44,
        (1, "01"),                   # PortSelect (byte 0 reserved)
        (2, "ffff"),                 # CounterSelect
        (4, "1234"),                 # SymbolErrorCounter
        (6, "56"),                   # LinkErrorRecoveryCounter
        (7, "78"),                   # LinkDownedCounter
        (8, "0102"),                 # PortRcvErrors
        # 10 PortRcvRemotePhysicalErrors, 12 PortRcvSwitchRelayErrors
        (14, "0a0b"),                # PortXmitDiscards
        # 16 PortXmitConstraintErrors, 17 PortRcvConstraintErrors, 18 CounterSelect2
        (19, "ab"),                  # LocalLinkIntegrityErrors | ExcessiveBufferOverrunErrors
        (20, "0e0f"),                # QP1Dropped (IBA 1.3; reserved in 1.2.1)
        (22, "0c0d"),                # VL15Dropped
        (24, "11223344"),            # PortXmitData
        (28, "55667788"),            # PortRcvData
        # 32 PortXmitPkts, 36 PortRcvPkts
        (40, "deadbeef"),            # PortXmitWait
    )
    check(pc, expected)


def test_port_counters_extended():
    pce = PortCountersExtended(port_select=1, counter_select=0x00FF, port_xmit_data=0x0102030405060708,
                               port_rcv_data=0x1112131415161718, port_multicast_rcv_pkts=0xFFFFFFFFFFFFFFFF)
    expected = image(
        72,
        (1, "01" "00ff"),            # PortSelect, CounterSelect (byte 0 and 4..7 reserved)
        (8, "0102030405060708"),     # PortXmitData
        (16, "1112131415161718"),    # PortRcvData
        (64, "ff" * 8),              # PortMulticastRcvPkts
    )
    check(pce, expected)


# -- subnet administration ----------------------------------------------------------------------------


def test_class_port_info():
    cpi = ClassPortInfo(base_version=1, class_version=2, capability_mask=0x0003, capability_mask2=1,
                        resp_time_value=0x12, redirect_gid=bytes.fromhex(GID_A), redirect_tc=0x12,
                        redirect_sl=3, redirect_fl=0x45678, redirect_lid=4, redirect_pkey=0xFFFF,
                        redirect_qp=1, redirect_qkey=0x80010000, trap_gid=bytes.fromhex(GID_B),
                        trap_lid=1, trap_pkey=0xFFFF, trap_hl=0x40, trap_qp=1, trap_qkey=0x80010000)
    expected = image(
        72,
        (0, "01" "02" "0003"),       # BaseVersion, ClassVersion, CapabilityMask
        (4, "00000032"),             # CapabilityMask2=1 (27 bits) | RespTimeValue=0x12 (low 5 of byte 7)
        (8, GID_A),                  # RedirectGID
        (24, "12345678"),            # RedirectTC=0x12 | RedirectSL=3 | RedirectFL=0x45678
        (28, "0004" "ffff"),         # RedirectLID, RedirectP_Key
        (32, "00" "000001"),         # reserved | RedirectQP
        (36, "80010000"),            # RedirectQ_Key
        (40, GID_B),                 # TrapGID
        (56, "00000000"),            # TrapTC | TrapSL | TrapFL
        (60, "0001" "ffff"),         # TrapLID, TrapP_Key
        (64, "40" "000001"),         # TrapHL | TrapQP
        (68, "80010000"),            # TrapQ_Key
    )
    check(cpi, expected)


def test_path_record():
    pr = PathRecord(service_id=0x1000000000000001, dgid=bytes.fromhex(GID_B), sgid=bytes.fromhex(GID_A),
                    dlid=4, slid=3, raw_traffic=1, flow_label=0xABCDE, hop_limit=0x40, tclass=0x12,
                    reversible=1, numb_path=0x7F, pkey=0xFFFF, qos_class=0, sl=5, mtu_selector=2, mtu=4,
                    rate_selector=2, rate=7, pkt_life_selector=2, pkt_life=0x12, preference=0)
    expected = image(
        64,
        (0, "1000000000000001"),     # ServiceID
        (8, GID_B),                  # DGID
        (24, GID_A),                 # SGID
        (40, "0004"),                # DLID
        (42, "0003"),                # SLID
        (44, "8abcde40"),            # RawTraffic=1 | 3 reserved | FlowLabel=0xABCDE | HopLimit=0x40
        (48, "12"),                  # TClass
        (49, "ff"),                  # Reversible=1 | NumbPath=0x7F
        (50, "ffff"),                # P_Key
        (52, "0005"),                # QosClass (12 bits) | SL=5 (low nibble of 53)
        (54, "84"),                  # MTUSelector=10b | MTU=4 (low 6 bits)
        (55, "87"),                  # RateSelector=10b | Rate=7
        (56, "92"),                  # PacketLifeTimeSelector=10b | PacketLifeTime=0x12
        (57, "00"),                  # Preference; 58..63 reserved
    )
    check(pr, expected)


def test_mcmember_record():
    mcm = MCMemberRecord(mgid=bytes.fromhex(MGID_BCAST), port_gid=bytes.fromhex(GID_A), qkey=0x0B1B,
                         mlid=0xC000, mtu_selector=2, mtu=4, tclass=0, pkey=0xFFFF, rate_selector=2, rate=3,
                         pkt_life_selector=2, pkt_life=0, sl=1, flow_label=0x12345, hop_limit=2, scope=2,
                         join_state=1, proxy_join=1)
    expected = image(
        52,
        (0, MGID_BCAST),             # MGID
        (16, GID_A),                 # PortGID
        (32, "00000b1b"),            # Q_Key
        (36, "c000"),                # MLID
        (38, "84"),                  # MTUSelector=10b | MTU=4
        (39, "00"),                  # TClass
        (40, "ffff"),                # P_Key
        (42, "83"),                  # RateSelector=10b | Rate=3
        (43, "80"),                  # PacketLifeTimeSelector=10b | PacketLifeTime=0
        (44, "11234502"),            # SL=1 | FlowLabel=0x12345 | HopLimit=2
        (48, "21"),                  # Scope=2 | JoinState=1 (low nibble: full member)
        (49, "80"),                  # ProxyJoin=1 | 23 reserved bits
    )
    check(mcm, expected)


def test_node_record():
    nr = NodeRecord(lid=0x0010,
                    node_info=NodeInfo(node_type=1, num_ports=1, node_guid=0x0002C90300001234, local_port=1,
                                       vendor_id=0x0002C9),
                    node_desc=NodeDescription(description="mlx5_0 HCA-1"))
    expected = image(
        108,
        (0, "0010"),                 # LID; 2..3 reserved
        (4, "01" "01" "01" "01"),    # NodeInfo at 4: BaseVersion, ClassVersion, NodeType=CA, NumPorts
        (16, "0002c90300001234"),    # NodeInfo.NodeGUID (4 + 12)
        (40, "01" "0002c9"),         # NodeInfo.LocalPortNum (4 + 36), VendorID
        (44, "6d6c78355f30204843412d31"),  # NodeDescription at 44: "mlx5_0 HCA-1"
    )
    check(nr, expected)


def test_port_info_record():
    pir = PortInfoRecord(lid=0x0010, port_num=1, options=0,
                         port_info=PortInfo(lid=0x0010, link_speed_supported=1, port_state=4, phys_state=5))
    expected = image(
        68,
        (0, "0010" "01" "00"),       # EndportLID, PortNum, Options
        (20, "0010"),                # PortInfo at 4: its LID at 4 + 16
        (36, "14"),                  # PortInfo byte 32: LinkSpeedSupported=1 | PortState=4
        (37, "50"),                  # PortInfo byte 33: PortPhysicalState=5
    )
    check(pir, expected)


def test_inform_info():
    # IBA 13.4.8.3 / OpenSM ib_inform_info_t: GID, LIDRangeBegin, LIDRangeEnd, reserved, IsGeneric,
    # Subscribe, Type (16 bits at 24), TrapNumber (16 bits at 26), QPN (24 bits at 28..30),
    # reserved 3 | RespTimeValue 5 (byte 31), reserved 8, ProducerType (24 bits at 33..35).
    ii = InformInfo(gid=bytes.fromhex(GID_A), lid_range_begin=0xFFFF, lid_range_end=0, is_generic=1,
                    subscribe=1, type=0xFFFF, trap_num=0x0040, qpn=1, resp_time_value=0x13,
                    producer_type=4)
    expected = image(
        36,
        (0, GID_A),
        (16, "ffff" "0000"),         # LIDRangeBegin, LIDRangeEnd
        # 20..21 reserved
        (22, "01" "01"),             # IsGeneric, Subscribe
        (24, "ffff"),                # Type (all)
        (26, "0040"),                # TrapNumber 64
        (28, "000001"),              # QPN
        (31, "13"),                  # reserved | RespTimeValue
        (33, "000004"),              # ProducerType (byte 32 reserved)
    )
    check(ii, expected)


# -- IPoIB helpers ------------------------------------------------------------------------------------


def test_ipoib_broadcast_mgid():
    # ff12:401b:<P_Key with full-member bit>:0000:0000:0000:ffff:ffff
    assert w.ipoib_broadcast_mgid(0x7FFF) == bytes.fromhex("ff12401bffff000000000000ffffffff")
    assert w.ipoib_broadcast_mgid(0xFFFF) == bytes.fromhex(MGID_BCAST)
    assert w.ipoib_broadcast_mgid(0x8001, scope=5) == bytes.fromhex("ff15401b8001000000000000ffffffff")
    assert w.fmt_gid(w.ipoib_broadcast_mgid(0x7FFF)) == "ff12:401b:ffff:0000:0000:0000:ffff:ffff"


def test_ipoib_ipv4_mcast_mgid():
    # RFC 4391 section 4: the low 28 bits of the IPv4 group go into the last 32 bits of the MGID.
    # 224.1.2.3 = e0.01.02.03 -> low 28 bits 0x0010203
    assert ipv4_mcast_mgid(bytes([224, 1, 2, 3]), 0xFFFF) == bytes.fromhex(
        "ff12" "401b" "ffff" "0000" "0000" "0000" "0001" "0203")
    # 239.255.255.250 = ef.ff.ff.fa -> 0x0ffffffa ; P_Key 0x0001 gets the full-member bit
    assert ipv4_mcast_mgid(bytes([239, 255, 255, 250]), 0x0001) == bytes.fromhex(
        "ff12401b8001000000000000" "0ffffffa")
    with pytest.raises(ValueError):
        ipv4_mcast_mgid(bytes(3), 0xFFFF)


def test_gid_helpers():
    assert w.make_gid(0xFE80000000000000, 0x0002C90300001235) == bytes.fromhex(GID_A)
    assert w.parse_gid("fe80::2:c903:0:1235") == bytes.fromhex(GID_A)
    assert w.fmt_gid(bytes.fromhex(GID_A)) == "fe80:0000:0000:0000:0002:c903:0000:1235"
