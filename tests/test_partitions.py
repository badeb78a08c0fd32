"""partitions.conf subset: grammar, membership, IPoIB groups, errors with line numbers."""

from __future__ import annotations

import pytest

from fabric import wire as w
from fabric.sm.partitions import (DEFAULT_CONFIG, PartitionError, default_partitions,
                                  parse_partitions)
from test_sa_net import build_subnet, ca, switch

SUB = build_subnet("fattree:2,1,3,1")   # node0001..node0006, leaf01, leaf02, spine01
SM_GUID = ca(SUB, 1).gid_guid


def pk(cfg, port):
    return cfg.pkeys_for(port, sm_port_guid=SM_GUID)


def test_default_config_is_opensm_no_file_default():
    cfg = default_partitions()
    assert DEFAULT_CONFIG == "Default=0x7fff, ipoib : ALL=full ;"
    assert list(cfg.partitions) == [0x7FFF]
    for port in SUB.endports():
        assert pk(cfg, port) == [0xFFFF]
    (g,) = cfg.ipoib_groups()
    assert g.mgid == bytes.fromhex("ff12401bffff000000000000ffffffff")
    assert (g.pkey, g.qkey, g.mtu, g.rate, g.sl, g.scope, g.hop_limit) == (0xFFFF, 0x0B1B, 4, 3, 0, 2, 0)


def test_empty_file_falls_back_to_default_config():
    cfg = parse_partitions("# nothing here\n\n")
    assert pk(cfg, ca(SUB, 3)) == [0xFFFF]
    assert len(cfg.ipoib_groups()) == 1
    assert cfg.warnings


def test_unmentioned_default_partition_is_limited_except_sm_port():
    cfg = parse_partitions("Storage=0x0002 : ALL_CAS=full ;")
    assert pk(cfg, ca(SUB, 2)) == [0x7FFF, 0x8002]          # default first, limited
    assert pk(cfg, ca(SUB, 1)) == [0xFFFF, 0x8002]          # SELF: full in the default
    assert pk(cfg, switch(SUB, "leaf01").ports[0]) == [0x7FFF]
    assert cfg.ipoib_groups() == []                          # no ipoib flag anywhere


def test_default_membership_is_limited_and_defmember():
    text = """
    P1=0x10 : 0x%x, 0x%x=full ;
    P2=0x20, defmember=full : 0x%x, 0x%x=limited ;
    """ % (ca(SUB, 2).gid_guid, ca(SUB, 3).gid_guid, ca(SUB, 2).gid_guid, ca(SUB, 3).gid_guid)
    cfg = parse_partitions(text)
    assert pk(cfg, ca(SUB, 2)) == [0x7FFF, 0x0010, 0x8020]
    assert pk(cfg, ca(SUB, 3)) == [0x7FFF, 0x8010, 0x0020]
    assert pk(cfg, ca(SUB, 4)) == [0x7FFF]


def test_keywords_all_cas_switches_self():
    cfg = parse_partitions("Default=0x7fff : ALL_CAS=full, ALL_SWITCHES=limited ;\n"
                           "Mgmt=0x0100 : SELF=full, ALL_SWITCHES=full ;\n"
                           "Nobody=0x0200 : NONE ;\n"
                           "Rtr=0x0300 : ALL_ROUTERS=full ;")
    assert pk(cfg, ca(SUB, 1)) == [0xFFFF, 0x8100]
    assert pk(cfg, ca(SUB, 5)) == [0xFFFF]
    assert pk(cfg, switch(SUB, "spine01").ports[0]) == [0x7FFF, 0x8100]


def test_later_rule_overrides_and_sm_port_always_full_in_default():
    cfg = parse_partitions("Default=0x7fff, ipoib : ALL=full, ALL_CAS=limited, SELF=limited ;")
    assert pk(cfg, ca(SUB, 2)) == [0x7FFF]
    assert pk(cfg, switch(SUB, "leaf02").ports[0]) == [0xFFFF]
    assert pk(cfg, ca(SUB, 1)) == [0xFFFF]   # the SM's port stays a full member of the default


def test_both_membership():
    text = f"Default=0x7fff : ALL=full ;\nShared=0x0042 : 0x{ca(SUB, 4).gid_guid:x}=both ;"
    assert pk(parse_partitions(text), ca(SUB, 4)) == [0xFFFF, 0x8042]
    assert pk(parse_partitions(text, allow_both_pkeys=True), ca(SUB, 4)) == [0xFFFF, 0x8042, 0x0042]


def test_membership_prefixes_as_opensm():
    cfg = parse_partitions(f"X=0x5 : 0x{ca(SUB, 2).gid_guid:x}=limi, 0x{ca(SUB, 3).gid_guid:x}=f ;")
    assert pk(cfg, ca(SUB, 2))[1:] == [0x0005]
    assert pk(cfg, ca(SUB, 3))[1:] == [0x8005]


def test_multiline_multi_statement_comments_and_merge():
    text = """# partitions for the test fabric
Default=0x7fff,ipoib,mtu=5,rate=7,sl=3 :   # header line
    ALL=full,                              # all ports
    SELF=full
    ;
A=0x0001 : ALL_CAS ; B=0x0002 : SELF=full ;   # two statements on a line
A=0x8001 : 0x%x=full ;   # 0x8001 is partition 0x0001 again: merged
""" % ca(SUB, 6).gid_guid
    cfg = parse_partitions(text)
    assert list(cfg.partitions) == [0x7FFF, 0x0001, 0x0002]
    assert cfg.partition(0x8001).name == "A"
    assert pk(cfg, ca(SUB, 6)) == [0xFFFF, 0x8001]
    assert pk(cfg, ca(SUB, 5)) == [0xFFFF, 0x0001]
    assert pk(cfg, ca(SUB, 1)) == [0xFFFF, 0x0001, 0x8002]
    (g,) = cfg.ipoib_groups()
    assert (g.mtu, g.rate, g.sl) == (5, 7, 3)
    assert cfg.sl_for(0xFFFF) == 3 and cfg.sl_for(0x8001) == 0


def test_generated_pkeys_and_names():
    cfg = parse_partitions("Alpha : ALL ;\nBeta, ipoib : ALL ;\nAlpha : SELF=full ;\n0x0033 : ALL ;")
    names = {p.name: k for k, p in cfg.partitions.items()}
    assert names["Alpha"] == 0x0001 and names["Beta"] == 0x0002
    assert names["0033"] == 0x0033
    assert pk(cfg, ca(SUB, 1)) == [0xFFFF, 0x8001, 0x0002, 0x0033]
    assert [g.pkey for g in cfg.ipoib_groups()] == [0x8002]


def test_ipoib_group_flags_qkey_scopes():
    cfg = parse_partitions("Blue=0x0b0b, ipoib, Q_Key=0x12345, scope=2, scope=5, TClass=7, "
                           "FlowLabel=0x123, rate=6, mtu=3 : ALL=full ;")
    groups = cfg.ipoib_groups()
    assert [g.mgid for g in groups] == [w.ipoib_broadcast_mgid(0x8B0B, 2), w.ipoib_broadcast_mgid(0x8B0B, 5)]
    assert [g.hop_limit for g in groups] == [0, 0xFF]
    g = groups[1]
    assert (g.pkey, g.qkey, g.tclass, g.flow_label, g.rate, g.mtu, g.scope) == \
        (0x8B0B, 0x12345, 7, 0x123, 6, 3, 5)


def test_mgid_groups():
    text = """Default=0x7fff,ipoib,rate=3,mtu=4:
        mgid=ff12:401b::0707,sl=1   # IPv4 group: P_Key filled in
        mgid=ff12::1,sl=1,Q_Key=0xDEADBEEF,rate=3,mtu=2
        mgid=ff15:601b::16
        ALL=full;
    """
    cfg = parse_partitions(text)
    groups = cfg.groups()
    assert len(groups) == 4 and len(cfg.ipoib_groups()) == 1
    ip4, raw, ip6 = groups[1:]
    assert ip4.mgid == bytes.fromhex("ff12401bffff00000000000000000707")
    assert (ip4.qkey, ip4.sl, ip4.pkey) == (0x0B1B, 1, 0xFFFF)
    assert raw.mgid == bytes.fromhex("ff120000000000000000000000000001")
    assert (raw.qkey, raw.mtu, raw.sl) == (0xDEADBEEF, 2, 1)
    assert ip6.mgid == bytes.fromhex("ff15601bffff00000000000000000016")
    assert ip6.scope == 5 and ip6.hop_limit == 0xFF
    assert pk(cfg, ca(SUB, 3)) == [0xFFFF]


@pytest.mark.parametrize("text,line,words", [
    ("Default=0x7fff ALL=full;", 1, "missing ':'"),
    ("\n\nP=0x0000 : ALL ;", 3, "low 15 bits are zero"),
    ("P=0x10000 : ALL ;", 1, "larger than"),
    ("P=zz : ALL ;", 1, "not a number"),
    ("P=0x1, bogus : ALL ;", 1, "unknown partition flag 'bogus'"),
    ("P=0x1, mtu=9 : ALL ;", 1, "not an MTU code"),
    ("P=0x1, rate=1 : ALL ;", 1, "not a rate code"),
    ("P=0x1, sl=16 : ALL ;", 1, "larger than"),
    ("P=0x1, scope=0 : ALL ;", 1, "scope=0"),
    ("P=0x1, defmember=sometimes : ALL ;", 1, "not full, limited or both"),
    ("P=0x1 :\n  ALL=full,\n  SELF=ful1 ;", 3, "not full, limited or both"),
    ("P=0x1 :\n ALL,\n everyone ;", 3, "bad member 'everyone'"),
    ("P=0x1 : 0x0 ;", 1, "port GUID 0"),
    ("P=0x1 : ALL ;\n;", 2, "stray ';'"),
    ("P=0x1 :\n mgid=fe80::1, sl=1\n ALL ;", 2, "not a multicast GID"),
    ("P=0x1 :\n mgid=ff12::zz\n ALL ;", 2, "is not a GID"),
    ("P=0x1 :\n mgid=ff12::1, colour=red\n ALL ;", 2, "unknown multicast group flag"),
    ("P=0x1, ipoib :\n mgid=ff12:401b:8002::1\n ALL ;", 2, "has P_Key 0x8002"),
    ("P=0x1, ipoib :\n mgid=ff12:401b::1, rate=6\n ALL ;", 2, "partition's rate"),
    ("P=0x1, mtu : ALL ;", 1, "needs a value"),
    (" , ipoib : ALL ;", 1, "without a name"),
    ("P=0x1,, ipoib : ALL ;", 1, "stray ','"),
])
def test_errors_carry_line_numbers(text, line, words):
    with pytest.raises(PartitionError) as ei:
        parse_partitions(text, source="partitions.conf")
    e = ei.value
    assert e.line == line, str(e)
    assert words in str(e)
    assert str(e).startswith(f"partitions.conf:{line}: ")


def test_statement_without_semicolon_is_taken_with_warning():
    cfg = parse_partitions("Default=0x7fff, ipoib : ALL=full")
    assert pk(cfg, ca(SUB, 2)) == [0xFFFF]
    assert any("not ended by ';'" in x for x in cfg.warnings)


def test_port_guid_decimal_and_hex():
    g = ca(SUB, 5).gid_guid
    cfg = parse_partitions(f"A=0x0a : {g}=full ;\nB=0x0b : 0x{g:X}=full ;")
    assert pk(cfg, ca(SUB, 5)) == [0x7FFF, 0x800A, 0x800B]


def test_indx0_accepted():
    cfg = parse_partitions("A=0x0a, indx0 : ALL=full ;")
    assert pk(cfg, ca(SUB, 2)) == [0x7FFF, 0x800A]
    assert any("indx0" in x for x in cfg.warnings)


def test_not_text_is_a_type_error():
    with pytest.raises(TypeError):
        parse_partitions(b"Default=0x7fff : ALL ;")
