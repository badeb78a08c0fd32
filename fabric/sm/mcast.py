"""Multicast groups of the SA and their spanning trees (sans-IO).

:class:`McastManager` holds the groups (MGID, MLID, Q_Key, P_Key, MTU, rate, ...) and their members
with the JoinState semantics of IBA 15.2.5.17, allocates MLIDs from 0xC000 upward, and computes
each group's multicast forwarding entries on the SM's subnet model (:meth:`McastManager.mft_for`).

JoinState bits: FullMember 1, NonMember 2, SendOnlyNonMember 4, SendOnlyFullMember 8. A join ORs
bits into the port's state; a leave clears bits. FullMember and SendOnlyFullMember count as full
members: when the last full member leaves, the remaining members are dropped and the group is
deleted, unless the SM created it (the IPoIB broadcast groups of partitions.conf), which stays
with no members. That is OpenSM's rule (``osm_mgrp_remove_port``) and IBA's.

Who receives: FullMember and NonMember ports receive the group's packets; the two SendOnly states
only send, so their switch is connected into the tree but their own port gets no MFT bit. (OpenSM
does not make that distinction: its tree delivers to every member.)

The tree: the root is the switch whose largest hop count to the members' switches is smallest
(each CA member adds one hop; OpenSM's ``mcast_mgr_find_optimal_switch``), lowest node GUID on a
tie; a BFS from the root over switch-to-switch links (the lowest-numbered port between two switches)
gives a spanning tree, which is pruned to the smallest subtree joining the members' switches. A
switch's mask has the bits of its receiving member ports and of each tree link whose far side holds
a receiver, so a packet from any member reaches every receiver exactly once and never loops.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..wire.headers import LID_MCAST_FIRST
from ..wire.sa_attrs import (JOIN_FULL_MEMBER, JOIN_NON_MEMBER, JOIN_SENDONLY_FULL_MEMBER,
                             JOIN_SENDONLY_NON_MEMBER)
from ..wire.smp_attrs import MTU_2048

__all__ = [
    "JOIN_FULL_MEMBER", "JOIN_NON_MEMBER", "JOIN_SENDONLY_NON_MEMBER", "JOIN_SENDONLY_FULL_MEMBER",
    "RECEIVER_STATES", "FULL_STATES", "McGroup", "McastManager", "McastError", "McTree",
    "RATE_GBPS", "RATE_10_GBPS", "rate_valid", "rate_gbps", "compare_rates", "port_rate",
    "rate_next", "rate_prev", "mtu_valid", "DEFAULT_PKT_LIFE", "SCOPE_LINK_LOCAL",
]

RECEIVER_STATES = JOIN_FULL_MEMBER | JOIN_NON_MEMBER
FULL_STATES = JOIN_FULL_MEMBER | JOIN_SENDONLY_FULL_MEMBER
SCOPE_LINK_LOCAL = 2
DEFAULT_PKT_LIFE = 0x12  # OpenSM's subnet_timeout default, used as the packet lifetime

# -- rates (PathRecord/MCMemberRecord Rate, IBA table 205 and later additions) -----------------

RATE_GBPS = {2: 2.5, 3: 10, 4: 30, 5: 5, 6: 20, 7: 40, 8: 60, 9: 80, 10: 120, 11: 14, 12: 56,
             13: 112, 14: 168, 15: 25, 16: 100, 17: 200, 18: 300, 19: 28, 20: 50, 21: 400, 22: 600}
RATE_10_GBPS = 3
_RATE_ORDER = sorted(RATE_GBPS, key=lambda c: (RATE_GBPS[c], c))
_GBPS_TO_RATE = {2.5: 2, 5: 5, 10: 3, 20: 6, 30: 4, 40: 7, 60: 8, 80: 9, 120: 10}
_LANES = {1: 1, 2: 4, 4: 8, 8: 12, 16: 2}          # PortInfo LinkWidth bit -> lanes
_LANE_GBPS = {1: 2.5, 2: 5, 4: 10}                  # PortInfo LinkSpeed code -> Gb/s per lane


def rate_valid(code: int) -> bool:
    return code in RATE_GBPS


def mtu_valid(code: int) -> bool:
    return 1 <= code <= 5


def rate_gbps(code: int) -> float:
    return RATE_GBPS.get(code, 0)


def compare_rates(a: int, b: int) -> int:
    """<0, 0, >0 as rate code ``a`` is slower than, as fast as, faster than ``b`` (codes are not
    in speed order: 10 Gb/s is 3, 5 Gb/s is 5)."""
    ga, gb = rate_gbps(a), rate_gbps(b)
    return (ga > gb) - (ga < gb)


def rate_next(code: int) -> int:
    """The next faster rate code, or ``code`` itself at the top."""
    i = _RATE_ORDER.index(code)
    return _RATE_ORDER[min(i + 1, len(_RATE_ORDER) - 1)]


def rate_prev(code: int) -> int:
    """The next slower rate code, or 0 below the slowest."""
    i = _RATE_ORDER.index(code)
    return _RATE_ORDER[i - 1] if i > 0 else 0


def port_rate(width_active: int, speed_active: int) -> int:
    """PathRecord rate code of a link from PortInfo LinkWidthActive and LinkSpeedActive."""
    lanes = _LANES.get(width_active, 1)
    gbps = lanes * _LANE_GBPS.get(speed_active, 2.5)
    if gbps in _GBPS_TO_RATE:
        return _GBPS_TO_RATE[gbps]
    best = 2
    for code, g in RATE_GBPS.items():  # the fastest code not above the link
        if g <= gbps and g > RATE_GBPS[best]:
            best = code
    return best


# -- groups ------------------------------------------------------------------------------------


class McastError(Exception):
    """A group operation that cannot be done; ``kind``: no_resources, exists, no_group, not_member."""

    def __init__(self, reason: str, *, kind: str):
        super().__init__(reason)
        self.kind = kind


@dataclass(eq=False)
class McGroup:
    mgid: bytes
    mlid: int
    qkey: int
    pkey: int
    mtu: int = MTU_2048
    rate: int = RATE_10_GBPS
    sl: int = 0
    flow_label: int = 0
    tclass: int = 0
    hop_limit: int = 0
    scope: int = SCOPE_LINK_LOCAL
    members: dict = field(default_factory=dict)  # port GID (16 octets) -> JoinState bits
    created_by_sm: bool = False
    pkt_life: int = DEFAULT_PKT_LIFE
    join_state: int = JOIN_FULL_MEMBER  # JoinState of the creating request (group-level records)
    proxy: dict = field(default_factory=dict)  # port GID -> joined by proxy

    @property
    def full_members(self) -> int:
        return self.count_full()

    def count_full(self, limit: int | None = None) -> int:
        """The full members, counted up to ``limit`` when given: whether a join made the first one
        or a leave took the last asks for at most two, and stopping there keeps a join O(1) when
        every port of a large subnet joins the broadcast group (a whole count is O(N), O(N^2) for
        N joins)."""
        n = 0
        for s in self.members.values():
            if s & FULL_STATES:
                n += 1
                if n == limit:
                    break
        return n

    def receivers(self) -> list[bytes]:
        return [g for g, s in self.members.items() if s & RECEIVER_STATES]

    def __repr__(self):
        return (f"<McGroup {self.mgid.hex()} mlid 0x{self.mlid:04x} pkey 0x{self.pkey:04x} "
                f"{len(self.members)} members{' sm' if self.created_by_sm else ''}>")


@dataclass(frozen=True)
class McTree:
    """A group's spanning tree: the root switch, each tree switch's parent link, and the masks."""

    root: int | None                 # node GUID of the root switch
    parent: dict                     # switch GUID -> (parent GUID, port on parent, port on child)
    masks: dict                      # switch GUID -> port mask (nonzero only)


class McastManager:
    def __init__(self, *, mlid_first: int = LID_MCAST_FIRST, max_mlids: int = 1024):
        self.mlid_first = mlid_first
        self.max_mlids = max_mlids
        self.groups: dict[bytes, McGroup] = {}   # MGID -> group
        self._by_mlid: dict[int, McGroup] = {}
        self._dist_cache: tuple | None = None    # (fingerprint, adjacency, {sw: {sw: hops}})

    # -- lookups -------------------------------------------------------------------------------

    def get(self, mgid: bytes) -> McGroup | None:
        return self.groups.get(bytes(mgid))

    def by_mlid(self, mlid: int) -> McGroup | None:
        return self._by_mlid.get(mlid)

    def __iter__(self):
        return iter(sorted(self.groups.values(), key=lambda g: g.mgid))

    def __len__(self):
        return len(self.groups)

    # -- group life ----------------------------------------------------------------------------

    def alloc_mlid(self, requested: int | None = None) -> int:
        last = self.mlid_first + self.max_mlids - 1
        if requested and self.mlid_first <= requested <= last and requested not in self._by_mlid:
            return requested
        for mlid in range(self.mlid_first, last + 1):
            if mlid not in self._by_mlid:
                return mlid
        raise McastError(f"all {self.max_mlids} MLIDs are in use", kind="no_resources")

    def create_group(self, mgid: bytes, *, qkey: int, pkey: int, mtu: int = MTU_2048,
                     rate: int = RATE_10_GBPS, sl: int = 0, flow_label: int = 0, tclass: int = 0,
                     hop_limit: int = 0, scope: int | None = None, pkt_life: int = DEFAULT_PKT_LIFE,
                     created_by_sm: bool = False, mlid: int | None = None,
                     join_state: int = JOIN_FULL_MEMBER) -> McGroup:
        mgid = bytes(mgid)
        if len(mgid) != 16:
            raise ValueError("an MGID is 16 octets")
        if mgid in self.groups:
            raise McastError(f"group {mgid.hex()} exists", kind="exists")
        g = McGroup(mgid=mgid, mlid=self.alloc_mlid(mlid), qkey=qkey, pkey=pkey, mtu=mtu, rate=rate,
                    sl=sl, flow_label=flow_label, tclass=tclass, hop_limit=hop_limit,
                    scope=mgid[1] & 0xF if scope is None else scope, created_by_sm=created_by_sm,
                    pkt_life=pkt_life, join_state=join_state)
        self.groups[mgid] = g
        self._by_mlid[g.mlid] = g
        return g

    def delete_group(self, mgid: bytes) -> McGroup:
        g = self.groups.pop(bytes(mgid), None)
        if g is None:
            raise McastError(f"no group {bytes(mgid).hex()}", kind="no_group")
        self._by_mlid.pop(g.mlid, None)  # the MLID is free again
        return g

    def ensure_sm_groups(self, specs) -> list[McGroup]:
        """Create the groups the SM owns (``partitions.McGroupSpec`` list) that do not exist yet.
        A spec whose MGID is taken by a group a client created is left alone. Returns the new ones."""
        new = []
        for s in specs:
            g = self.groups.get(s.mgid)
            if g is not None:
                g.created_by_sm = True
                continue
            new.append(self.create_group(
                s.mgid, qkey=s.qkey, pkey=s.pkey, mtu=s.mtu, rate=s.rate, sl=s.sl,
                flow_label=s.flow_label, tclass=s.tclass, hop_limit=s.hop_limit, scope=s.scope,
                pkt_life=s.pkt_life, created_by_sm=True))
        return new

    # -- membership ----------------------------------------------------------------------------

    def join(self, mgid: bytes, port_gid: bytes, join_state: int, *, proxy: bool = False) -> tuple[int, int]:
        """OR ``join_state`` into the port's state; returns (old state, new state)."""
        g = self.groups.get(bytes(mgid))
        if g is None:
            raise McastError(f"no group {bytes(mgid).hex()}", kind="no_group")
        port_gid = bytes(port_gid)
        old = g.members.get(port_gid, 0)
        new = old | (join_state & 0xF)
        g.members[port_gid] = new
        if not old:
            g.proxy[port_gid] = proxy
        return old, new

    def leave(self, mgid: bytes, port_gid: bytes, join_state: int) -> tuple[int, int, bool]:
        """Clear ``join_state`` bits of the port; a port left with no bits is removed. When the last
        full member goes, the other members are dropped and the group is deleted unless the SM
        created it. Returns (old state, new state, group deleted)."""
        g = self.groups.get(bytes(mgid))
        if g is None:
            raise McastError(f"no group {bytes(mgid).hex()}", kind="no_group")
        port_gid = bytes(port_gid)
        if port_gid not in g.members:
            raise McastError("port is not a member", kind="not_member")
        old = g.members[port_gid]
        new = old & ~join_state & 0xF
        if new:
            g.members[port_gid] = new
        else:
            del g.members[port_gid]
            g.proxy.pop(port_gid, None)
        deleted = False
        if old & FULL_STATES and not new & FULL_STATES and g.count_full(1) == 0:
            g.members.clear()
            g.proxy.clear()
            if not g.created_by_sm:
                self.delete_group(g.mgid)
                deleted = True
        return old, new, deleted

    # -- forwarding ----------------------------------------------------------------------------

    def _switch_graph(self, subnet):
        """Switch adjacency and switch-to-switch hop counts, cached on a fingerprint of the
        switch-to-switch cabling."""
        adj: dict[int, list] = {}
        for n in subnet.nodes.values():
            if not n.is_switch:
                continue
            links = []
            for num in sorted(n.ports):
                p = n.ports[num]
                r = p.remote
                if num and r is not None and r.node.is_switch and r.node.guid in subnet.nodes:
                    links.append((num, r.node.guid, r.num))
            adj[n.guid] = links
        fp = tuple(sorted((g, tuple(links)) for g, links in adj.items()))
        if self._dist_cache is not None and self._dist_cache[0] == fp:
            return self._dist_cache[1], self._dist_cache[2]
        dist = {}
        self._dist_cache = (fp, adj, dist)
        return adj, dist

    @staticmethod
    def _bfs(adj, src) -> dict:
        d = {src: 0}
        q = deque([src])
        while q:
            u = q.popleft()
            for _, v, _ in adj.get(u, ()):
                if v not in d:
                    d[v] = d[u] + 1
                    q.append(v)
        return d

    def tree(self, subnet, group: McGroup, *, port_index: dict | None = None) -> McTree:
        """The group's spanning tree and masks on ``subnet`` (see the module docstring).

        ``port_index`` maps port GUIDs to :class:`SmPort` (an SA passes its own; otherwise one is
        built from the subnet)."""
        if port_index is None:
            port_index = {p.gid_guid: p for p in subnet.endports()}
        adj, dist_cache = self._switch_graph(subnet)
        receivers: dict[int, int] = {}      # switch GUID -> mask of receiving member ports
        member_sw: dict[int, bool] = {}     # switch GUID -> the switch itself is a member
        for gid, state in group.members.items():
            port = port_index.get(int.from_bytes(gid[8:], "big"))
            if port is None:
                continue
            if port.node.is_switch:
                sw, num = port.node.guid, 0
                member_sw[sw] = True
            else:
                r = port.remote
                if r is None or not r.node.is_switch or r.node.guid not in adj:
                    continue
                sw, num = r.node.guid, r.num
                member_sw.setdefault(sw, False)
            if sw not in adj:
                continue
            if state & RECEIVER_STATES:
                receivers[sw] = receivers.get(sw, 0) | (1 << num)
        if not member_sw or not receivers:
            return McTree(None, {}, {})
        # root: the switch with the smallest largest hop count to the members' switches
        for sw in member_sw:
            if sw not in dist_cache:
                dist_cache[sw] = self._bfs(adj, sw)
        best = None
        for cand in sorted(adj):
            worst = 0
            for sw, is_member in member_sw.items():
                d = dist_cache[sw].get(cand)
                if d is None:
                    worst = None
                    break
                worst = max(worst, d + (0 if is_member else 1))
            if worst is not None and (best is None or worst < best[0]):
                best = (worst, cand)
        if best is None:  # members in disconnected parts: serve the part of the first member switch
            root = min(member_sw)
        else:
            root = best[1]
        # BFS spanning tree from the root; one link per switch pair (lowest port number)
        parent: dict[int, tuple] = {}
        order = [root]
        seen = {root}
        q = deque([root])
        while q:
            u = q.popleft()
            for num, v, rnum in adj[u]:
                if v not in seen:
                    seen.add(v)
                    parent[v] = (u, num, rnum)
                    order.append(v)
                    q.append(v)
        members = [sw for sw in member_sw if sw in seen]
        total_members = len(members)
        total_recv = sum(1 for sw in receivers if sw in seen)
        sub_members = {sw: (1 if sw in member_sw else 0) for sw in order}
        sub_recv = {sw: (1 if sw in receivers else 0) for sw in order}
        for sw in reversed(order):
            if sw in parent:
                p = parent[sw][0]
                sub_members[p] += sub_members[sw]
                sub_recv[p] += sub_recv[sw]
        masks = {sw: mask for sw, mask in receivers.items() if sw in seen}
        kept_parent = {}
        for sw in order:
            if sw not in parent:
                continue
            below = sub_members[sw]
            if not 0 < below < total_members:
                continue  # no member on one side of this link: not part of the minimal tree
            p, pnum, cnum = parent[sw]
            kept_parent[sw] = parent[sw]
            if sub_recv[sw]:                       # receivers below: parent forwards down
                masks[p] = masks.get(p, 0) | (1 << pnum)
            if total_recv - sub_recv[sw]:          # receivers elsewhere: child forwards up
                masks[sw] = masks.get(sw, 0) | (1 << cnum)
        masks = {sw: mk for sw, mk in masks.items() if mk}
        return McTree(root, kept_parent, masks)

    def mft_for(self, subnet, group: McGroup, *, port_index: dict | None = None) -> dict[int, int]:
        """{switch node GUID: port mask} for the group's MLID (only switches with a nonzero mask)."""
        if group is None:
            return {}
        return dict(self.tree(subnet, group, port_index=port_index).masks)

    def mft_updates(self, subnet, mlid: int, *, port_index: dict | None = None) -> dict[int, int]:
        """What the SM must write for ``mlid``: the new mask of every switch in the tree, and 0 for
        every switch whose programmed MFT (``SmNode.mft``) still has the MLID but is no longer in
        the tree (or whose group is gone)."""
        g = self.by_mlid(mlid)
        new = self.mft_for(subnet, g, port_index=port_index) if g is not None else {}
        out = dict(new)
        for n in subnet.switches():
            if n.guid not in out and n.mft.get(mlid):
                out[n.guid] = 0
        return out

    def all_mfts(self, subnet, *, port_index: dict | None = None) -> dict[int, dict[int, int]]:
        """{switch GUID: {MLID: mask}} for every group: what a full sweep programs."""
        if port_index is None:
            port_index = {p.gid_guid: p for p in subnet.endports()}
        out: dict[int, dict[int, int]] = {}
        for g in self:
            for sw, mask in self.mft_for(subnet, g, port_index=port_index).items():
                out.setdefault(sw, {})[g.mlid] = mask
        return out
