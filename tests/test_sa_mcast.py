"""McastManager: JoinState semantics, MLID allocation, spanning trees checked by flooding."""

from __future__ import annotations

from collections import Counter, deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric import wire as w
from fabric.sm.mcast import (JOIN_FULL_MEMBER as FULL, JOIN_NON_MEMBER as NON,
                             JOIN_SENDONLY_FULL_MEMBER as SO_FULL,
                             JOIN_SENDONLY_NON_MEMBER as SO_NON, McastError, McastManager,
                             compare_rates, port_rate, rate_next, rate_prev)
from fabric.wire import smp_attrs as smp
from test_sa_net import build_subnet, ca, gid, switch

MGID = bytes.fromhex("ff12a01bfe800000000000000000abcd")
FAT = build_subnet("fattree:4,2,3,1")      # 12 HCAs on 4 leaves, 2 spines


def new_group(mm, mgid=MGID, **kw):
    return mm.create_group(mgid, qkey=0x0B1B, pkey=0xFFFF, **kw)


def flood(sub, mft, src_port):
    """Deliver one packet from ``src_port`` along the MFT masks; returns a Counter of receiving
    ports and the number of times each switch forwarded it."""
    got, visits = Counter(), Counter()
    if src_port.node.is_switch:
        start = [(src_port.node, 0)]
    else:
        start = [(src_port.remote.node, src_port.remote.num)]
    q = deque(start)
    while q:
        node, ingress = q.popleft()
        visits[node.guid] += 1
        assert visits[node.guid] < 3, "loop"
        mask = mft.get(node.guid, 0)
        for num in range(0, 64):
            if not mask >> num & 1 or num == ingress:
                continue
            if num == 0:
                got[node.ports[0]] += 1
                continue
            r = node.ports[num].remote
            if r.node.is_switch:
                q.append((r.node, r.num))
            else:
                got[r] += 1
    return got, visits


# -- JoinState and group life --------------------------------------------------------------


def test_mlid_allocation_from_c000_and_reuse():
    mm = McastManager()
    a = new_group(mm, MGID)
    b = new_group(mm, MGID[:-1] + b"\x01")
    assert (a.mlid, b.mlid) == (0xC000, 0xC001)
    mm.delete_group(a.mgid)
    assert mm.by_mlid(0xC000) is None
    c = new_group(mm, MGID[:-1] + b"\x02")
    assert c.mlid == 0xC000
    d = new_group(mm, MGID[:-1] + b"\x03", mlid=0xC010)
    assert d.mlid == 0xC010
    e = new_group(mm, MGID[:-1] + b"\x04", mlid=0xC001)   # taken: next free
    assert e.mlid == 0xC002
    with pytest.raises(McastError) as ei:
        new_group(mm, b.mgid)
    assert ei.value.kind == "exists"


def test_mlid_exhaustion():
    mm = McastManager(max_mlids=2)
    new_group(mm, MGID)
    new_group(mm, MGID[:-1] + b"\x01")
    with pytest.raises(McastError) as ei:
        new_group(mm, MGID[:-1] + b"\x02")
    assert ei.value.kind == "no_resources"


def test_join_ors_and_leave_clears():
    mm = McastManager()
    g = new_group(mm)
    p = gid(ca(FAT, 1))
    assert mm.join(MGID, p, NON) == (0, NON)
    assert mm.join(MGID, p, FULL) == (NON, NON | FULL)
    assert mm.join(MGID, p, FULL) == (NON | FULL, NON | FULL)
    q = gid(ca(FAT, 2))
    mm.join(MGID, q, FULL)
    assert mm.leave(MGID, p, FULL) == (NON | FULL, NON, False)
    assert g.members[p] == NON
    assert mm.leave(MGID, p, NON) == (NON, 0, False)
    assert p not in g.members
    with pytest.raises(McastError):
        mm.leave(MGID, p, FULL)


def test_group_deleted_when_last_full_member_leaves():
    mm = McastManager()
    g = new_group(mm)
    full, non = gid(ca(FAT, 1)), gid(ca(FAT, 2))
    mm.join(MGID, full, FULL)
    mm.join(MGID, non, NON)
    old, new, deleted = mm.leave(MGID, full, FULL)
    assert deleted and mm.get(MGID) is None and mm.by_mlid(g.mlid) is None
    assert g.members == {}  # the NonMember went with it


def test_sendonly_full_counts_as_full():
    mm = McastManager()
    new_group(mm)
    a, b = gid(ca(FAT, 1)), gid(ca(FAT, 2))
    mm.join(MGID, a, SO_FULL)
    mm.join(MGID, b, FULL)
    assert mm.leave(MGID, b, FULL)[2] is False
    assert mm.leave(MGID, a, SO_FULL)[2] is True


def test_sm_created_group_persists_empty():
    mm = McastManager()
    g = new_group(mm, created_by_sm=True)
    a = gid(ca(FAT, 1))
    mm.join(MGID, a, FULL)
    mm.join(MGID, gid(ca(FAT, 2)), NON)
    assert mm.leave(MGID, a, FULL)[2] is False
    assert mm.get(MGID) is g and g.members == {}


# -- trees ---------------------------------------------------------------------------------


def test_single_switch_tree():
    sub = build_subnet("single:6")
    mm = McastManager()
    g = new_group(mm)
    for i in (1, 3, 4):
        mm.join(MGID, gid(ca(sub, i)), FULL)
    sw = switch(sub, "sw01")
    assert mm.mft_for(sub, g) == {sw.guid: (1 << 1) | (1 << 3) | (1 << 4)}
    t = mm.tree(sub, g)
    assert t.root == sw.guid and t.parent == {}


def test_fattree_tree_root_and_masks():
    mm = McastManager()
    g = new_group(mm)
    for i in (1, 2, 7, 12):     # leaf01 (1, 2), leaf03 (7), leaf04 (12)
        mm.join(MGID, gid(ca(FAT, i)), FULL)
    t = mm.tree(FAT, g)
    spine1, spine2 = switch(FAT, "spine01"), switch(FAT, "spine02")
    assert t.root == spine1.guid  # max hops 2 from a spine, 3 from a leaf; lowest GUID of a tie
    leaf1, leaf3, leaf4 = (switch(FAT, f"leaf0{i}") for i in (1, 3, 4))
    # leaves: HCAs on ports 1-3, spine01 on port 4; spine01: leaf0N on port N
    assert t.masks == {
        leaf1.guid: 0b10110,          # ports 1, 2 (members) and 4 (up)
        leaf3.guid: 0b10010,          # port 1 (node0007) and 4
        leaf4.guid: 0b11000,          # port 3 (node0012) and 4
        spine1.guid: 0b11010,         # leaves 1, 3, 4
    }
    assert spine2.guid not in t.masks
    assert set(t.parent) == {leaf1.guid, leaf3.guid, leaf4.guid}


def test_root_for_members_on_one_leaf_is_that_leaf():
    mm = McastManager()
    g = new_group(mm)
    mm.join(MGID, gid(ca(FAT, 4)), FULL)
    mm.join(MGID, gid(ca(FAT, 5)), FULL)
    leaf2 = switch(FAT, "leaf02")
    assert mm.tree(FAT, g).root == leaf2.guid
    assert mm.mft_for(FAT, g) == {leaf2.guid: 0b0110}


def test_sendonly_member_sends_but_does_not_receive():
    mm = McastManager()
    g = new_group(mm)
    a, b, s = ca(FAT, 1), ca(FAT, 4), ca(FAT, 12)
    mm.join(MGID, gid(a), FULL)
    mm.join(MGID, gid(b), FULL)
    mm.join(MGID, gid(s), SO_NON)
    mft = mm.mft_for(FAT, g)
    leaf4 = switch(FAT, "leaf04")
    assert mft[leaf4.guid] == 1 << 4            # only the uplink: the sender's port gets no bit
    got, _ = flood(FAT, mft, s)
    assert got == Counter({a: 1, b: 1})
    got, _ = flood(FAT, mft, a)
    assert got == Counter({b: 1})


def test_group_without_receivers_has_no_entries():
    mm = McastManager()
    g = new_group(mm)
    mm.join(MGID, gid(ca(FAT, 1)), SO_FULL)
    mm.join(MGID, gid(ca(FAT, 9)), SO_NON)
    assert mm.mft_for(FAT, g) == {}


def test_switch_port0_member():
    mm = McastManager()
    g = new_group(mm)
    spine2 = switch(FAT, "spine02")
    mm.join(MGID, gid(spine2.ports[0]), FULL)
    mm.join(MGID, gid(ca(FAT, 1)), FULL)
    mft = mm.mft_for(FAT, g)
    assert mft[spine2.guid] & 1
    got, _ = flood(FAT, mft, ca(FAT, 1))
    assert got == Counter({spine2.ports[0]: 1})


def test_join_and_leave_change_mft():
    mm = McastManager()
    g = new_group(mm)
    mm.join(MGID, gid(ca(FAT, 1)), FULL)
    mm.join(MGID, gid(ca(FAT, 2)), FULL)
    one_leaf = mm.mft_for(FAT, g)
    mm.join(MGID, gid(ca(FAT, 10)), NON)
    two_leaves = mm.mft_for(FAT, g)
    assert two_leaves != one_leaf and len(two_leaves) == 3
    mm.leave(MGID, gid(ca(FAT, 10)), NON)
    assert mm.mft_for(FAT, g) == one_leaf


def test_mft_updates_clear_stale_switches():
    mm = McastManager()
    g = new_group(mm)
    for i in (1, 12):
        mm.join(MGID, gid(ca(FAT, i)), FULL)
    for sw, mask in mm.mft_for(FAT, g).items():
        FAT.nodes[sw].mft[g.mlid] = mask
    try:
        mm.leave(MGID, gid(ca(FAT, 12)), FULL)
        upd = mm.mft_updates(FAT, g.mlid)
        leaf1 = switch(FAT, "leaf01")
        assert upd[leaf1.guid] == 0b10   # only node0001
        assert sum(1 for v in upd.values() if v == 0) == 2   # spine and leaf04 cleared
        mm.leave(MGID, gid(ca(FAT, 1)), FULL)
        assert set(mm.mft_updates(FAT, g.mlid).values()) == {0}
        assert mm.all_mfts(FAT) == {}
    finally:
        for n in FAT.switches():
            n.mft.clear()


def test_disconnected_member_is_skipped():
    sub = build_subnet("fattree:2,1,2,1")
    mm = McastManager()
    g = new_group(mm)
    lone = ca(sub, 4)
    lone.remote.remote = None
    lone.remote = None
    mm.join(MGID, gid(lone), FULL)
    mm.join(MGID, gid(ca(sub, 1)), FULL)
    assert mm.mft_for(sub, g) == {switch(sub, "leaf01").guid: 0b10}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.integers(1, 18), st.sampled_from([FULL, NON, SO_NON, SO_FULL, FULL | NON,
                                                            FULL | SO_NON]), min_size=1))
def test_trees_deliver_exactly_once_without_loops(members):
    sub = TREE_NET
    mm = McastManager()
    g = new_group(mm)
    for i, state in members.items():
        mm.join(MGID, gid(ca(sub, i)), state)
    mft = mm.mft_for(sub, g)
    receivers = {ca(sub, i) for i, s in members.items() if s & (FULL | NON)}
    for i in members:
        src = ca(sub, i)
        got, visits = flood(sub, mft, src)
        assert got == Counter({r: 1 for r in receivers if r is not src})
        assert all(v == 1 for v in visits.values())


TREE_NET = build_subnet("fattree:6,3,3,2")   # parallel links between each leaf and spine


def test_rates():
    assert port_rate(smp.WIDTH_4X, smp.SPEED_SDR) == 3
    assert port_rate(smp.WIDTH_1X, smp.SPEED_SDR) == 2
    assert port_rate(smp.WIDTH_4X, smp.SPEED_QDR) == 7
    assert port_rate(smp.WIDTH_12X, smp.SPEED_DDR) == 8
    assert compare_rates(5, 3) < 0 and compare_rates(3, 5) > 0 and compare_rates(3, 3) == 0
    assert rate_next(3) == 11 and rate_prev(3) == 5 and rate_prev(2) == 0
    assert w.IPOIB_QKEY == 0x0B1B


@given(st.lists(st.integers(0, 15), max_size=12), st.integers(1, 4))
def test_count_full_stops_at_its_limit_and_agrees_with_the_whole_count(states, limit):
    """What a join or leave asks (the first full member? the last?) costs a look at two members,
    not at every one: the count stops at ``limit`` and otherwise is the whole count."""
    from fabric.sm.mcast import FULL_STATES, McGroup

    class Looked(dict):
        looked = 0

        def values(self):
            for v in super().values():
                self.looked += 1
                yield v

    g = McGroup(mgid=b"\xff" * 16, mlid=0xC000, qkey=1, pkey=0xFFFF)
    g.members = Looked({bytes([i]) * 16: s for i, s in enumerate(states)})
    whole = sum(1 for s in states if s & FULL_STATES)
    assert g.full_members == g.count_full() == whole
    g.members.looked = 0
    assert g.count_full(limit) == min(whole, limit)
    fulls = [i for i, s in enumerate(states) if s & FULL_STATES]
    assert g.members.looked == (fulls[limit - 1] + 1 if whole >= limit else len(states))
