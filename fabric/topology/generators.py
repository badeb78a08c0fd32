"""The generators: a :class:`Topology` from a spec such as ``fattree:2,2,4,2``.

``single:N``, ``linear:N``, ``fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS`` and the three-level
``fattree3:PODS,LEAVES,AGGS,HCAS_PER_LEAF,CORES``; each gives the GUIDs
ibsim would give the equivalent net file, so a generated fabric and its ``to_net()`` agree.
"""

from __future__ import annotations

import re

from .ibsim import FIRST_GUID, default_port_guids, guids_taken
from .model import MAX_PORTS, MAX_UNICAST_LIDS, LinkSpec, NodeSpec, Topology, TopologyError

_SPEC_RE = re.compile(r"([A-Za-z][A-Za-z0-9]*):(.*)\Z", re.S)


def is_spec(text: str) -> bool:
    """Whether ``text`` has the ``KIND:ARGS`` form of a spec (:func:`generate` judges the rest)."""
    return _SPEC_RE.match(text.strip()) is not None


class _Builder:
    """Builds a topology the way ibsim would allocate GUIDs for the equivalent net file."""

    def __init__(self, source: str):
        self.topo = Topology(source=source)
        self.guids = dict(FIRST_GUID)

    def node(self, kind: str, name: str, nports: int) -> None:
        guid = self.guids[kind]
        self.guids[kind] += guids_taken(kind, nports)
        port_guids = default_port_guids(kind, guid, nports)
        self.topo.nodes[name] = NodeSpec(name, kind, nports, guid, guid, port_guids, name)

    def cable(self, a: str, ap: int, b: str, bp: int) -> None:
        self.topo.links.append(LinkSpec(a, ap, b, bp, "4x", "SDR"))

    def done(self) -> Topology:
        first = self.topo.hcas()[0]
        self.topo.sm_node, self.topo.sm_port = first.name, 1
        self.topo.validate()
        return self.topo


def _hca_name(i: int) -> str:
    return f"node{i:04d}"


def _fattree3(b: _Builder, bad, pods: int, leaves: int, aggs: int, per_leaf: int, cores: int) -> None:
    for what, need in (("leaves", per_leaf + aggs), ("aggregation switches", leaves + cores), ("cores", pods)):
        if need > MAX_PORTS:
            raise bad(f"{what} need {need} ports; at most {MAX_PORTS}")
    hcas = pods * leaves * per_leaf
    if hcas + pods * (leaves + aggs) + aggs * cores > MAX_UNICAST_LIDS:
        raise bad(f"{hcas} HCAs and their switches need more than {MAX_UNICAST_LIDS} LIDs")
    if max(pods, leaves, aggs) > 99 or cores > 99:
        raise bad("at most 99 pods, leaves, aggregation switches and cores (two-digit names)")
    for i in range(1, hcas + 1):
        b.node("hca", _hca_name(i), 1)
    leaf = lambda p, li: f"p{p:02d}leaf{li:02d}"  # noqa: E731
    agg = lambda p, a: f"p{p:02d}agg{a:02d}"  # noqa: E731
    core = lambda a, c: f"core{a:02d}{c:02d}"  # noqa: E731
    for p in range(1, pods + 1):
        for li in range(1, leaves + 1):
            b.node("switch", leaf(p, li), max(36, per_leaf + aggs))
    for p in range(1, pods + 1):
        for a in range(1, aggs + 1):
            b.node("switch", agg(p, a), max(36, leaves + cores))
    for a in range(1, aggs + 1):
        for c in range(1, cores + 1):
            b.node("switch", core(a, c), max(36, pods))
    n = 0
    for p in range(1, pods + 1):
        for li in range(1, leaves + 1):
            for j in range(1, per_leaf + 1):
                n += 1
                b.cable(leaf(p, li), j, _hca_name(n), 1)
            for a in range(1, aggs + 1):
                b.cable(leaf(p, li), per_leaf + a, agg(p, a), li)
        for a in range(1, aggs + 1):
            for c in range(1, cores + 1):
                b.cable(agg(p, a), leaves + c, core(a, c), p)


def generate(spec: str) -> Topology:
    """Build a topology from a generator spec.

    - ``single:N``: switch ``sw01`` with max(N, 8) ports; HCAs ``node0001..`` (1 port each) on its
      ports 1..N.
    - ``linear:N``: switches ``sw01..`` in a chain, 8 ports each: port 1 to its own HCA, port 3 to
      the next switch's port 2.
    - ``fattree:L,S,H,K``: leaves ``leaf01..`` with HCAs on ports 1..H and K cables to each spine
      on ports H+1.. (spine by spine); spines ``spine01..`` with K ports per leaf, leaf by leaf;
      every switch has max(36, ports needed) ports.
    - ``fattree3:P,L,A,H,C``: three levels. P pods, each of L leaves ``p01leaf01..`` (HCAs on
      ports 1..H, then one cable to each of the pod's A aggregation switches ``p01agg01..``) and A
      aggregation switches (leaves on ports 1..L, then one cable to each of C core switches on
      ports L+1..); core switch ``core0301`` is the first of the C that every pod's third
      aggregation switch reaches, one port per pod. ``fattree3:8,18,18,18,4`` is 2,592 HCAs on
      36-port switches (8 pods of 18 leaves and 18 aggregation switches, 72 cores).

    Nodes are listed HCAs first, then switches (leaves, then spines); GUIDs are what ibsim assigns
    to that net file; all links are 4x SDR (ibsim's default); the SM is on ``node0001`` port 1.
    """
    source = f"generator spec {spec!r}"

    def bad(reason: str) -> TopologyError:
        return TopologyError(reason, source)

    if not isinstance(spec, str):
        raise TypeError("a generator spec is a string")
    m = _SPEC_RE.match(spec.strip())
    if not m:
        raise bad("expected KIND:ARGS (single:N, linear:N, "
                  "fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS_PER_PAIR, fattree3:PODS,LEAVES,AGGS,HCAS_PER_LEAF,CORES)")
    kind, argtext = m.group(1), m.group(2)
    arity = {"single": 1, "linear": 1, "fattree": 4, "fattree3": 5}
    if kind not in arity:
        raise bad(f"unknown generator {kind!r}: use single:N, linear:N, "
                  "fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS_PER_PAIR or "
                  "fattree3:PODS,LEAVES,AGGS,HCAS_PER_LEAF,CORES")
    parts = [p.strip() for p in argtext.split(",")]
    if len(parts) != arity[kind]:
        raise bad(f"{kind} takes {arity[kind]} argument{'s' if arity[kind] > 1 else ''}, "
                  f"got {len(parts)}")
    args = []
    for p in parts:
        if not p.isdigit() or not p.isascii():
            raise bad(f"argument {p!r} is not a positive integer")
        if int(p) == 0:
            raise bad("arguments must be at least 1, got 0")
        args.append(int(p))

    b = _Builder(source)
    if kind == "single":
        (n,) = args
        if n > MAX_PORTS:
            raise bad(f"single:{n} needs a switch with {n} ports; at most {MAX_PORTS}")
        for i in range(1, n + 1):
            b.node("hca", _hca_name(i), 1)
        b.node("switch", "sw01", max(n, 8))
        for i in range(1, n + 1):
            b.cable("sw01", i, _hca_name(i), 1)
    elif kind == "linear":
        (n,) = args
        if 2 * n > MAX_UNICAST_LIDS:
            raise bad(f"linear:{n} needs {2 * n} LIDs; at most {MAX_UNICAST_LIDS}")
        for i in range(1, n + 1):
            b.node("hca", _hca_name(i), 1)
        for i in range(1, n + 1):
            b.node("switch", f"sw{i:02d}", 8)
        for i in range(1, n + 1):
            b.cable(f"sw{i:02d}", 1, _hca_name(i), 1)
            if i < n:
                b.cable(f"sw{i:02d}", 3, f"sw{i + 1:02d}", 2)
    elif kind == "fattree3":
        _fattree3(b, bad, *args)
    else:
        leaves, spines, per_leaf, k = args
        leaf_ports = per_leaf + spines * k
        spine_ports = leaves * k
        if leaf_ports > MAX_PORTS:
            raise bad(f"leaves need {per_leaf} + {spines}*{k} = {leaf_ports} ports; at most "
                      f"{MAX_PORTS}")
        if spine_ports > MAX_PORTS:
            raise bad(f"spines need {leaves}*{k} = {spine_ports} ports; at most {MAX_PORTS}")
        lids = leaves * per_leaf + leaves + spines
        if lids > MAX_UNICAST_LIDS:
            raise bad(f"{lids} LIDs needed; at most {MAX_UNICAST_LIDS}")
        for i in range(1, leaves * per_leaf + 1):
            b.node("hca", _hca_name(i), 1)
        for li in range(1, leaves + 1):
            b.node("switch", f"leaf{li:02d}", max(36, leaf_ports))
        for si in range(1, spines + 1):
            b.node("switch", f"spine{si:02d}", max(36, spine_ports))
        for li in range(1, leaves + 1):
            for j in range(1, per_leaf + 1):
                b.cable(f"leaf{li:02d}", j, _hca_name((li - 1) * per_leaf + j), 1)
        for li in range(1, leaves + 1):
            for si in range(1, spines + 1):
                for c in range(1, k + 1):
                    b.cable(f"leaf{li:02d}", per_leaf + (si - 1) * k + c,
                            f"spine{si:02d}", (li - 1) * k + c)
    return b.done()
