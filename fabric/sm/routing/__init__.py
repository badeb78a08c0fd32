"""Unicast routing engines: pure functions over the SM's subnet model (:mod:`fabric.sm.subnet`),
one module per purpose as OpenSM's ``osm_ucast_*.c``: :mod:`.graph` (the switch graph and hop
counts), :mod:`.lft` (the shared LFT builder and minhop), :mod:`.updn`, :mod:`.trace` (reading LFTs
back), :mod:`.from_topology`.

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

from ..subnet import Subnet
from .from_topology import subnet_from_topology
from .graph import LFT_BLOCK, NO_ROUTE, MinHops, RoutingError, TraceError, min_hops
from .lft import route_minhop
from .trace import lft_blocks_changed, trace
from .updn import route_updn, updn_roots

__all__ = [
    "ENGINES", "LFT_BLOCK", "NO_ROUTE", "MinHops", "RoutingError", "TraceError",
    "lft_blocks_changed", "min_hops", "route", "route_minhop", "route_updn", "subnet_from_topology",
    "trace", "updn_roots",
]


ENGINES = {"minhop": route_minhop, "updn": route_updn}


def route(subnet: Subnet, engine: str = "minhop", **kw) -> dict[int, bytearray]:
    """Route with the named engine (``minhop`` or ``updn``)."""
    try:
        fn = ENGINES[engine]
    except KeyError:
        raise ValueError(f"unknown routing engine {engine!r}; known: {', '.join(ENGINES)}") \
            from None
    return fn(subnet, **kw)
