"""OpenSM's ``updn`` engine (``opensm/osm_ucast_updn.c``): ranks from the roots, a per-destination
BFS that never goes down then up, then the same LFT builder as minhop."""

from __future__ import annotations

from collections import deque

from ..subnet import Subnet
from .graph import _INF, RoutingError, _Index
from .lft import _build_lfts, _minhop_cands

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
