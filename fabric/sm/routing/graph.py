"""The switch graph as integer arrays (OpenSM's switch order), and minimum hop counts from every
switch port to every LID: what every routing engine starts from."""

from __future__ import annotations

from collections.abc import Mapping

from ..lids import osm_guid_key, osm_port_order
from ..subnet import SmNode, SmPort, Subnet

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
