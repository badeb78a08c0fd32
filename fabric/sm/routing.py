"""Unicast routing engines: pure functions over the SM's subnet model (:mod:`fabric.sm.subnet`).

Every function here reads a :class:`~fabric.sm.subnet.Subnet` whose endports have LIDs and whose
ports have their ``remote`` links, and returns data; nothing sends an SMP or changes the subnet.

- :func:`min_hops`: hop counts from every switch port to every LID (breadth-first search per
  destination switch over the switch graph, kept as integer arrays).
- :func:`route_minhop`: OpenSM's default engine, ``minhop`` (``opensm/osm_ucast_mgr.c``,
  ``opensm/osm_switch.c``), rule for rule; see ``docs/routing.md``.
- :func:`route_updn`: OpenSM's ``updn`` (``opensm/osm_ucast_updn.c``): ranks from the roots, a
  per-destination BFS that never goes down then up, then the same LFT builder as minhop.
- :func:`lft_blocks_changed`: which 64-entry LFT blocks differ (what a sweep must rewrite).
- :func:`trace`: follow LFTs hop by hop, detecting loops and dead ends.
- :func:`subnet_from_topology`: a Subnet built straight from a Topology, for tests and tools.

An LFT here is a ``bytearray`` indexed by LID: 0 routes to the switch itself, 0xFF is no route.
Its length is LinearFDBTop + 1 rounded up to whole 64-entry blocks, as OpenSM sizes its tables.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from ..wire import smp_attrs as sa
from .lids import assign_lids, osm_guid_key, osm_port_order
from .subnet import CA, SWITCH, SmNode, SmPort, Subnet

__all__ = [
    "ENGINES", "LFT_BLOCK", "NO_ROUTE", "MinHops", "RoutingError", "TraceError",
    "lft_blocks_changed", "min_hops", "route", "route_minhop", "route_updn", "subnet_from_topology",
    "trace", "updn_roots",
]

NO_ROUTE = 0xFF
LFT_BLOCK = 64
_INF = 0xFF  # "no path" in hop arrays, as OpenSM's OSM_NO_PATH


class RoutingError(Exception):
    """A subnet the engine cannot route (e.g. up/down without any root)."""


class TraceError(RoutingError):
    """A route that does not arrive: ``kind`` is ``loop``, ``no_route`` (0xFF or no LFT),
    ``unlinked`` (the LFT names a port without a cable), ``wrong_port`` (delivered to an endport
    that does not own the LID) or ``too_long``; ``path`` holds the ports left so far."""

    def __init__(self, kind: str, message: str, path: list):
        super().__init__(message)
        self.kind = kind
        self.path = path


# ------------------------------------------------------------------------------------------------
# The switch graph, with integers
# ------------------------------------------------------------------------------------------------

class _Dest:
    """One destination endport: its base LID, how many LIDs, and where it sits."""

    __slots__ = ("port", "lid", "nlids", "sw", "aport", "is_ca")

    def __init__(self, port: SmPort, lid: int, nlids: int, sw: int, aport: int, is_ca: bool):
        self.port, self.lid, self.nlids, self.sw, self.aport, self.is_ca = (
            port, lid, nlids, sw, aport, is_ca)


class _Index:
    """The subnet as integer arrays: switches in OpenSM's ``sw_guid_tbl`` order, their
    switch-to-switch cables, the endports and which switch each hangs off, BFS distances."""

    def __init__(self, subnet: Subnet):
        self.subnet = subnet
        sws = sorted((n for n in subnet.nodes.values() if n.is_switch),
                     key=lambda n: osm_guid_key(n.guid))
        self.sw: list[SmNode] = sws
        self.sidx: dict[int, int] = {n.guid: i for i, n in enumerate(sws)}
        nodes = subnet.nodes
        # links[s]: (port, remote switch, remote port), by port; parallel cables all listed;
        # a cable from a switch to itself is not a route (OpenSM skips it too)
        self.links: list[list[tuple[int, int, int]]] = []
        self.endport_links: list[int] = []
        for n in sws:
            ls, ends = [], 0
            for pn in sorted(n.ports):
                p = n.ports[pn]
                if pn == 0 or not _usable(p, nodes):
                    continue
                r = p.remote
                if r.node.is_switch:
                    if r.node is not n:
                        ls.append((pn, self.sidx[r.node.guid], r.num))
                else:
                    ends += 1
            self.links.append(ls)
            self.endport_links.append(ends)
        self.adj: list[list[int]] = [sorted({r for _, r, _ in ls}) for ls in self.links]

        # endports (destinations)
        self.dests: list[_Dest] = []
        self.by_port: dict[int, _Dest] = {}
        max_lid = 0
        for p in subnet.endports():
            if not p.lid:
                continue
            node = p.node
            if node.is_switch:
                d = _Dest(p, p.lid, 1 << p.lmc, self.sidx[node.guid], 0, False)
            else:
                r = p.remote
                if _usable(p, nodes) and r.node.is_switch:
                    d = _Dest(p, p.lid, 1 << p.lmc, self.sidx[r.node.guid], r.num, True)
                else:
                    d = _Dest(p, p.lid, 1 << p.lmc, -1, 0, True)
            self.dests.append(d)
            self.by_port[id(p)] = d
            max_lid = max(max_lid, p.lid + d.nlids - 1)
        self.max_lid = max_lid
        self.lmc = max((d.port.lmc for d in self.dests), default=0)
        self._dist: list[bytearray] | None = None

    @property
    def dist(self) -> list[bytearray]:
        """dist[d][s]: hops from switch s to switch d over switch cables (0xFF: no path)."""
        if self._dist is None:
            n = len(self.sw)
            adj = self.adj
            out = []
            for d in range(n):
                dist = bytearray(b"\xff") * n
                dist[d] = 0
                frontier = [d]
                h = 0
                while frontier:
                    h += 1
                    if h >= _INF:
                        break
                    nxt = []
                    for u in frontier:
                        for v in adj[u]:
                            if dist[v] == _INF:
                                dist[v] = h
                                nxt.append(v)
                    frontier = nxt
                out.append(dist)
            self._dist = out
        return self._dist

    def lft_size(self) -> int:
        return (self.max_lid // LFT_BLOCK + 1) * LFT_BLOCK

    def route_order(self) -> list[_Dest]:
        """The order OpenSM routes destinations in (``ucast_mgr_build_lfts``): switches sorted by
        how many endports hang off them, most first (``sort_ports_by_switch_load``; glibc's qsort
        is a stable merge sort, so ties keep ``sw_guid_tbl`` order), each contributing the
        endports on its ports 1..N in port order (``add_sw_endports_to_order_list``); then every
        other port, switches' port 0 included, in ``port_guid_tbl`` order."""
        order: list[_Dest] = []
        seen: set[int] = set()
        byp = self.by_port
        nodes = self.subnet.nodes
        for s in sorted(range(len(self.sw)), key=lambda i: -self.endport_links[i]):
            n = self.sw[s]
            for pn in sorted(n.ports):
                p = n.ports[pn]
                if pn == 0 or not _usable(p, nodes) or p.remote.node.is_switch:
                    continue
                d = byp.get(id(p.remote))
                if d is not None and id(d) not in seen:
                    seen.add(id(d))
                    order.append(d)
        for p in osm_port_order(self.subnet):
            d = byp.get(id(p))
            if d is not None and id(d) not in seen:
                seen.add(id(d))
                order.append(d)
        return order


def _usable(p: SmPort, nodes: dict) -> bool:
    """A cable both ends agree on, to a node of this subnet."""
    r = p.remote
    return r is not None and r.remote is p and nodes.get(r.node.guid) is r.node


# ------------------------------------------------------------------------------------------------
# Hop counts
# ------------------------------------------------------------------------------------------------

class MinHops(Mapping):
    """``hops[switch_guid][lid][port] -> hops``, computed lazily from per-destination BFS arrays.

    Hops count cables: a switch reaches its own LID in 0 hops through port 0, a CA on one of its
    ports in 1 hop through that port, and through another port ``p`` whose cable leads to switch
    ``r``, ``1 + dist(r, the destination's switch)`` (+1 for a CA). Only ports with a path are
    listed. :meth:`least` and :meth:`best_ports` answer without building the dictionaries.
    """

    def __init__(self, subnet: Subnet, _ix: _Index | None = None):
        self._ix = _ix or _Index(subnet)
        self._cache: dict[int, dict] = {}
        self._lid2dest: dict[int, _Dest] = {}
        for d in self._ix.dests:
            for off in range(d.nlids):
                self._lid2dest[d.lid + off] = d

    def __getitem__(self, sw_guid: int) -> dict[int, dict[int, int]]:
        if sw_guid not in self._cache:
            s = self._ix.sidx[sw_guid]
            self._cache[sw_guid] = {lid: self._ports(s, d) for lid, d in
                                    sorted(self._lid2dest.items())}
        return self._cache[sw_guid]

    def __iter__(self):
        return (n.guid for n in self._ix.sw)

    def __len__(self):
        return len(self._ix.sw)

    def _ports(self, s: int, d: _Dest) -> dict[int, int]:
        ix = self._ix
        if d.sw < 0:
            return {}
        extra = 1 if d.is_ca else 0
        out = {}
        if d.sw == s:
            out[d.aport] = extra
        dist = ix.dist[d.sw]
        for pn, r, _ in ix.links[s]:
            if dist[r] != _INF:
                out[pn] = 1 + dist[r] + extra
        return dict(sorted(out.items()))

    def least(self, sw_guid: int, lid: int) -> int | None:
        """Fewest hops from the switch to the LID, or None without a path."""
        d = self._lid2dest.get(lid)
        if d is None or d.sw < 0:
            return None
        h = self._ix.dist[d.sw][self._ix.sidx[sw_guid]]
        return None if h == _INF else h + (1 if d.is_ca else 0)

    def best_ports(self, sw_guid: int, lid: int) -> list[int]:
        """The ports at the fewest hops (the equal-cost set minhop chooses from)."""
        ports = self._ports(self._ix.sidx[sw_guid], self._lid2dest[lid]) \
            if lid in self._lid2dest else {}
        if not ports:
            return []
        m = min(ports.values())
        return [p for p, h in ports.items() if h == m]

    def switch_distance(self, a_guid: int, b_guid: int) -> int | None:
        h = self._ix.dist[self._ix.sidx[b_guid]][self._ix.sidx[a_guid]]
        return None if h == _INF else h


def min_hops(subnet: Subnet) -> MinHops:
    """Hop counts from every switch port to every LID: ``hops[switch_guid][lid][port]``."""
    return MinHops(subnet)


# ------------------------------------------------------------------------------------------------
# The LFT builder shared by the engines (OpenSM's ucast_mgr_build_lfts / osm_switch_recommend_path)
# ------------------------------------------------------------------------------------------------

def _minhop_cands(ix: _Index):
    """cands(s) -> list over destination switches D of the ports of s at least hops to D
    (ascending), None when D is unreachable, () for D == s."""
    dist = ix.dist

    def cands(s: int) -> list:
        out = []
        links = ix.links[s]
        for d in range(len(ix.sw)):
            dd = dist[d]
            h = dd[s]
            if d == s:
                out.append(())
            elif h == _INF:
                out.append(None)
            else:
                want = h - 1
                out.append(tuple(pn for pn, r, _ in links if dd[r] == want))
        return out

    return cands


def _lft_get(lft, lid: int) -> int:
    if lft is None:
        return NO_ROUTE
    if isinstance(lft, dict):
        return lft.get(lid, NO_ROUTE)
    return lft[lid] if 0 <= lid < len(lft) else NO_ROUTE


def _sys_guid(node: SmNode) -> int:
    return getattr(node.node_info, "sys_guid", 0) or node.guid


def _build_lfts(ix: _Index, cands_fn, existing: dict | None) -> dict[int, bytearray]:
    order = ix.route_order()
    size = ix.lft_size()
    lmc = ix.lmc
    out: dict[int, bytearray] = {}
    for s, node in enumerate(ix.sw):
        cands = cands_fn(s)
        cset = [frozenset(c) if c else None for c in cands] if existing is not None else None
        ex = existing.get(node.guid) if existing is not None else None
        nports = node.num_ports
        load = [0] * (max(nports, max(node.ports, default=0)) + 2)
        lft = bytearray(b"\xff") * size
        if lmc == 0:
            lget = load.__getitem__
            for d in order:
                D = d.sw
                if D == s:
                    p = d.aport  # the switch itself (0) or a CA on one of its ports
                elif D < 0:
                    continue
                else:
                    c = cands[D]
                    if not c:
                        continue
                    if ex is not None and _lft_get(ex, d.lid) in cset[D]:
                        p = _lft_get(ex, d.lid)  # honour the existing route: still least hops
                    elif len(c) == 1:
                        p = c[0]
                    else:
                        p = min(c, key=lget)  # least loaded; the lowest port wins ties
                lft[d.lid] = p
                if d.is_ca:
                    load[p] += 1  # only CA LIDs count (port_profile_switch_nodes is FALSE)
        else:
            _route_switch_lmc(ix, s, node, order, cands, cset, ex, load, lft, lmc)
        out[node.guid] = lft
    return out


def _route_switch_lmc(ix, s, node, order, cands, cset, ex, load, lft, lmc):
    """LMC > 0: OpenSM's LMC-aware mode. LIDs go offset by offset over the whole order; for
    offset > 0 the port search starts after the port the previous LID took; among least-loaded
    least-hop ports, a port towards a system (then a node) not yet used by this destination's
    other LIDs is preferred, and ties go to the remote used the fewest times."""
    num_ports = node.num_ports + 1  # OpenSM's num_ports counts port 0
    used: dict[int, list] = {}  # per destination: [remote node, remote port, forwarded_to]
    remote_of = {pn: node.ports[pn].remote for pn in node.ports if pn and node.ports[pn].remote}
    for off in range(1 << lmc):
        for d in order:
            if off >= d.nlids:
                continue
            lid = d.lid + off
            D = d.sw
            if D == s:
                p = d.aport
            elif D < 0 or not cands[D]:
                continue
            else:
                c = cands[D]
                e = _lft_get(ex, lid) if ex is not None else NO_ROUTE
                if ex is not None and e in cset[D]:
                    p = e
                else:
                    start = (lft[lid - 1] + 1) if off else 1
                    cs = set(c)
                    seq = [q % num_ports for q in range(start, start + num_ports)]
                    seq = [q for q in seq if q and q in cs]
                    r = used.setdefault(id(d), [])
                    p = _recommend_lmc(seq, load, r, remote_of)
            lft[lid] = p
            if d.is_ca:
                load[p] += 1
                if p > 0:
                    r = used.setdefault(id(d), [])
                    rem = remote_of[p]
                    for ent in r:
                        if ent[0] is rem.node:
                            break
                    else:
                        ent = [rem.node, rem.num, 0]
                        r.append(ent)
                    ent[2] += 1


def _recommend_lmc(seq, load, r, remote_of) -> int:
    """osm_switch_recommend_path with routing_for_lmc, no scatter, no port shifting."""
    least = least_sys = least_node = least_fwd = 1 << 32
    best = best_sys = best_node = 0
    for pn in seq:
        cc = load[pn]
        rnode = remote_of[pn].node
        rg = next((e for e in r if _sys_guid(e[0]) == _sys_guid(rnode)), None)
        if rg is None:
            if cc < least_sys:
                least_sys, best_sys, least_fwd = cc, pn, 0
        else:
            rg = next((e for e in r if e[0].guid == rnode.guid), None)
            if rg is None and cc < least_node:
                least_node, best_node, least_fwd = cc, pn, 0
        if cc < least:
            best, least = pn, cc
            if rg is not None and rg[2] < least_fwd:
                least_fwd = rg[2]
        elif rg is not None and cc == least and rg[2] < least_fwd:
            least_fwd, best = rg[2], pn
    if best:
        if best_sys:
            best = best_sys
        elif best_node:
            best = best_node
    return best


# ------------------------------------------------------------------------------------------------
# Engines
# ------------------------------------------------------------------------------------------------

def route_minhop(subnet: Subnet, existing: dict | None = None) -> dict[int, bytearray]:
    """OpenSM's minhop: ``{switch GUID: LFT}``.

    For each switch, destinations are taken in OpenSM's order (see ``_Index.route_order``); a CA
    on one of the switch's own ports goes out of that port, the switch's own LID to port 0, any
    other LID out of the least-loaded port among those at the fewest hops (lowest port number on
    a tie), where a port's load is the number of CA LIDs already routed through it on this switch.
    ``existing`` (``{switch GUID: LFT as programmed}``) makes an entry that is still least-hop
    stay where it is, as OpenSM does on sweeps that do not set ``ignore_existing_lfts`` (the
    first sweep, or one that found a new switch, does).
    """
    ix = _Index(subnet)
    return _build_lfts(ix, _minhop_cands(ix), existing)


_UP, _DOWN = 0, 1


def _rank_switches(ix: _Index, roots: list[int]) -> list[int]:
    rank = [1 << 32] * len(ix.sw)
    q = deque()
    for s in roots:
        rank[s] = 0
        q.append(s)
    while q:
        u = q.popleft()
        for _, r, _ in ix.links[u]:
            if rank[r] > rank[u] + 1:
                rank[r] = rank[u] + 1
                q.append(r)
    return rank


def updn_roots(subnet: Subnet) -> list[int]:
    """The roots OpenSM's updn picks by itself (``updn_find_root_nodes_by_min_hop``): switches
    for which, in the histogram of min-hop distances to all CAs, exactly one bar holds more than
    90% of the CAs and no other bar holds more than 5%. Returned as switch GUIDs."""
    ix = _Index(subnet)
    return [ix.sw[s].guid for s in _auto_roots(ix)]


def _auto_roots(ix: _Index) -> list[int]:
    cas_per_sw = [0] * len(ix.sw)
    for d in ix.dests:
        if d.is_ca and d.sw >= 0:
            cas_per_sw[d.sw] += 1
    cas = sum(cas_per_sw)
    thd1, thd2 = cas * 0.9, cas * 0.05
    dist = ix.dist
    roots = []
    for s in range(len(ix.sw)):
        hist: dict[int, int] = {}
        for D, n in enumerate(cas_per_sw):
            if n and dist[D][s] < 64:
                hist[dist[D][s]] = hist.get(dist[D][s], 0) + n
        if sum(1 for v in hist.values() if v > thd1) == 1 and \
                sum(1 for v in hist.values() if v > thd2) == 1:
            roots.append(s)
    return roots


def route_updn(subnet: Subnet, roots: list[int] | None = None, *, fallback: bool = True,
               existing: dict | None = None) -> dict[int, bytearray]:
    """OpenSM's up/down: ``{switch GUID: LFT}``.

    ``roots`` are switch GUIDs (unknown ones are ignored); by default :func:`updn_roots`. Switches
    are ranked by distance from the nearest root; a cable goes UP towards the lower rank (equal
    ranks: towards the larger GUID; between two roots: UP both ways). Per destination switch a BFS
    outward records, per port, the hops of the first path found that never goes down then up;
    the LFTs are then built as minhop builds them, over those hop counts. Without any root OpenSM
    falls back to minhop: so does this (``fallback=False`` raises RoutingError instead).
    """
    ix = _Index(subnet)
    if roots is None:
        rs = _auto_roots(ix)
    else:
        rs = [ix.sidx[g] for g in roots if g in ix.sidx]
    if not rs:
        if fallback:
            return _build_lfts(ix, _minhop_cands(ix), existing)
        raise RoutingError("up/down: no root switch")
    rank = _rank_switches(ix, rs)
    ids = [n.guid for n in ix.sw]
    nsw = len(ix.sw)

    def direction(u: int, v: int) -> int:
        ru, rv = rank[u], rank[v]
        if ru == 0 and rv == 0:
            return _UP
        if ru < rv:
            return _DOWN
        if ru > rv:
            return _UP
        return _UP if ids[u] > ids[v] else _DOWN

    # hops[D][s]: {port: hops} towards switch D; least[D][s]
    hops: list[list[dict]] = []
    least: list[list[int]] = []
    for D in range(nsw):
        h = [dict() for _ in range(nsw)]
        lst = [_INF] * nsw
        h[D][0] = 0
        lst[D] = 0
        dirs = [_UP] * nsw
        visited = [False] * nsw
        q = deque([D])
        while q:
            u = q.popleft()
            visited[u] = False
            cur = dirs[u]
            for pn, r, rpn in ix.links[u]:
                nd = direction(u, r)
                if cur == _DOWN and nd == _UP:
                    continue
                cm = lst[u] + 1
                if cm < h[r].get(rpn, _INF):
                    h[r][rpn] = cm
                    if cm < lst[r]:
                        lst[r] = cm
                    if not visited[r]:
                        dirs[r] = nd
                        visited[r] = True
                        q.append(r)
        hops.append(h)
        least.append(lst)

    def cands(s: int) -> list:
        out = []
        for D in range(nsw):
            if D == s:
                out.append(())
                continue
            m = least[D][s]
            if m == _INF:
                out.append(None)
                continue
            hs = hops[D][s]
            out.append(tuple(sorted(p for p, v in hs.items() if v == m and p)))
        return out

    return _build_lfts(ix, cands, existing)


ENGINES = {"minhop": route_minhop, "updn": route_updn}


def route(subnet: Subnet, engine: str = "minhop", **kw) -> dict[int, bytearray]:
    """Route with the named engine (``minhop`` or ``updn``)."""
    try:
        fn = ENGINES[engine]
    except KeyError:
        raise ValueError(f"unknown routing engine {engine!r}; known: {', '.join(ENGINES)}") \
            from None
    return fn(subnet, **kw)


# ------------------------------------------------------------------------------------------------
# LFT blocks, traces
# ------------------------------------------------------------------------------------------------

def lft_blocks_changed(old: bytearray | None, new: bytearray) -> list[int]:
    """Indices of the 64-entry blocks in which ``new`` differs from ``old``.

    ``old`` None (never programmed) means every block of ``new``. Entries beyond the end of the
    shorter table count as 0xFF, so a table that shrank reports the blocks that still hold routes
    in ``old`` (the caller may skip those above the new LinearFDBTop).
    """
    nb = (len(new) + LFT_BLOCK - 1) // LFT_BLOCK
    if old is None:
        return list(range(nb))
    ob = (len(old) + LFT_BLOCK - 1) // LFT_BLOCK
    out = []
    pad = b"\xff" * LFT_BLOCK
    for b in range(max(nb, ob)):
        lo, hi = b * LFT_BLOCK, (b + 1) * LFT_BLOCK
        x = bytes(old[lo:hi]).ljust(LFT_BLOCK, b"\xff") if b < ob else pad
        y = bytes(new[lo:hi]).ljust(LFT_BLOCK, b"\xff") if b < nb else pad
        if x != y:
            out.append(b)
    return out


def _owns(p: SmPort, lid: int) -> bool:
    return bool(p.lid) and (lid >> p.lmc) == (p.lid >> p.lmc)


def trace(subnet: Subnet, lfts: dict, src_port: SmPort, dst_lid: int,
          max_hops: int = 64) -> list[SmPort]:
    """The ports a packet from ``src_port`` to ``dst_lid`` leaves through, following ``lfts``
    (``{switch GUID: LFT}``, a bytearray or a ``{lid: port}`` dict).

    The list starts with ``src_port`` when it is a CA port (a switch's port 0 starts with the
    switch's own egress port) and holds one port per cable crossed, so ``len()`` is the hop
    count; it is empty when the source owns the LID. Raises :class:`TraceError` on a loop, a
    missing route, an unlinked egress port, or delivery to the wrong endport.
    """
    path: list[SmPort] = []
    if _owns(src_port, dst_lid):
        return path
    if src_port.node.is_switch:
        node = src_port.node
    else:
        if src_port.remote is None:
            raise TraceError("unlinked", f"{src_port!r} has no cable", path)
        path.append(src_port)
        arrived = src_port.remote
        if not arrived.node.is_switch:
            if _owns(arrived, dst_lid):
                return path
            raise TraceError("wrong_port", f"LID {dst_lid} delivered to {arrived!r}", path)
        node = arrived.node
    seen = set()
    while True:
        if node.guid in seen:
            raise TraceError("loop", f"LID {dst_lid}: loop at {node!r} after "
                             f"{[repr(p) for p in path]}", path)
        seen.add(node.guid)
        if len(path) > max_hops:
            raise TraceError("too_long", f"LID {dst_lid}: more than {max_hops} hops", path)
        out = _lft_get(lfts.get(node.guid), dst_lid)
        if out == 0:
            p0 = node.ports.get(0)
            if p0 is not None and _owns(p0, dst_lid):
                return path
            raise TraceError("wrong_port", f"LID {dst_lid} delivered to port 0 of {node!r}",
                             path)
        if out == NO_ROUTE:
            raise TraceError("no_route", f"{node!r} has no route to LID {dst_lid}", path)
        port = node.ports.get(out)
        if port is None or port.remote is None:
            raise TraceError("unlinked", f"{node!r} routes LID {dst_lid} to port {out}, which "
                             "has no cable", path)
        path.append(port)
        arrived = port.remote
        if not arrived.node.is_switch:
            if _owns(arrived, dst_lid):
                return path
            raise TraceError("wrong_port", f"LID {dst_lid} delivered to {arrived!r}", path)
        node = arrived.node


# ------------------------------------------------------------------------------------------------
# A Subnet from a Topology
# ------------------------------------------------------------------------------------------------

_WIDTH = {"1x": sa.WIDTH_1X, "2x": sa.WIDTH_2X, "4x": sa.WIDTH_4X, "8x": sa.WIDTH_8X,
          "12x": sa.WIDTH_12X}
_SPEED = {"SDR": sa.SPEED_SDR, "DDR": sa.SPEED_DDR, "QDR": sa.SPEED_QDR}


def subnet_from_topology(topo, lids: dict | None = None, *, lmc: int = 0) -> Subnet:
    """The Subnet an SM would discover on ``topo`` (a Topology, path or generator spec), with
    every cabled port Active.

    Switches get ports 0..N, CAs their cabled ports. ``lids`` (``{port GUID: LID}``, e.g. what
    OpenSM assigned) sets the LIDs; ports it does not name get none. Without it LIDs come from
    :func:`fabric.sm.lids.assign_lids` on a fresh fabric. ``SmNode.path`` is the directed route
    from the SM port found breadth first, ports in ascending order. ``node_info`` carries a
    NodeInfo with the node's GUIDs (the system image GUID is used by LMC-aware routing).
    """
    from ..topology import load_topology

    topo = load_topology(topo)
    sub = Subnet()
    by_name: dict[str, SmNode] = {}
    for spec in topo.nodes.values():
        kind = SWITCH if spec.is_switch else CA
        node = SmNode(guid=spec.node_guid, kind=kind, num_ports=spec.num_ports,
                      desc=spec.description)
        node.node_info = sa.NodeInfo(
            node_type=sa.NODE_TYPE_SWITCH if spec.is_switch else sa.NODE_TYPE_CA,
            num_ports=spec.num_ports, sys_guid=spec.sys_guid, node_guid=spec.node_guid,
            port_guid=spec.port_guids[0] if spec.is_switch else spec.port_guids[1],
            device_id=spec.device_id, vendor_id=spec.vendor_id)
        if spec.is_switch:
            for pn in range(spec.num_ports + 1):
                node.ports[pn] = SmPort(node, pn, guid=spec.port_guids[0] if pn == 0 else 0)
            node.ports[0].state = sa.PORT_ACTIVE
            node.ports[0].phys = sa.PHYS_LINKUP
        sub.nodes[node.guid] = node
        by_name[spec.name] = node
    for lk in topo.links:
        ends = []
        for name, pn in lk.ends():
            node = by_name[name]
            p = node.ports.get(pn)
            if p is None:
                p = node.ports[pn] = SmPort(node, pn, guid=topo.nodes[name].port_guids[pn])
            p.state, p.phys = sa.PORT_ACTIVE, sa.PHYS_LINKUP
            p.width_active = _WIDTH.get(lk.width, sa.WIDTH_4X)
            p.speed_active = _SPEED.get(lk.speed, sa.SPEED_QDR)
            ends.append(p)
        a, b = ends
        a.remote, b.remote = b, a
    for node in sub.nodes.values():
        if not node.is_switch:
            node.ports = dict(sorted(node.ports.items()))
    sm = by_name[topo.sm_node]
    sub.sm_node, sub.sm_port_num = sm, topo.sm_port
    if not sm.is_switch and topo.sm_port not in sm.ports:
        sm.ports[topo.sm_port] = SmPort(sm, topo.sm_port,
                                        guid=topo.nodes[topo.sm_node].port_guids[topo.sm_port])

    # directed routes, breadth first from the SM port
    sm.path = ()
    seen = {sm.guid}
    q = deque()
    if sm.is_switch:
        q.append(sm)
    else:
        r = sm.ports[topo.sm_port].remote
        if r is not None and r.node.guid not in seen:
            r.node.path = (topo.sm_port,)
            seen.add(r.node.guid)
            q.append(r.node)
    while q:
        n = q.popleft()
        if not n.is_switch:
            continue
        for pn in sorted(n.ports):
            r = n.ports[pn].remote
            if pn and r is not None and r.node.guid not in seen:
                r.node.path = n.path + (pn,)
                seen.add(r.node.guid)
                q.append(r.node)

    for node in sub.nodes.values():
        for p in node.ports.values():
            if p.num == 0 or not node.is_switch:
                p.lmc = 0 if node.is_switch else lmc
    if lids is None:
        lids = assign_lids(sub, None, lmc=lmc)
    for p in sub.endports():
        p.lid = lids.get(p.gid_guid, 0)
    if sm.ports.get(topo.sm_port) is not None and not sm.ports[topo.sm_port].lid:
        sm.ports[topo.sm_port].lid = lids.get(sm.ports[topo.sm_port].gid_guid, 0)
    return sub
