"""The LFT builder the engines share (OpenSM's ``ucast_mgr_build_lfts`` and
``osm_switch_recommend_path``), and OpenSM's default engine, ``minhop``, built on it."""

from __future__ import annotations

from ..subnet import SmNode, Subnet
from .graph import _INF, NO_ROUTE, _Index


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
