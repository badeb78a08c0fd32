"""The generators: a :class:`Topology` from a spec such as ``fattree:2,2,4,2``.

``single:N``, ``linear:N`` and ``fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS``; each gives the GUIDs
ibsim would give the equivalent net file, so a generated fabric and its ``to_net()`` agree.
"""

from __future__ import annotations

import re

from .ibsim import FIRST_GUID, default_port_guids, guids_taken
from .model import MAX_PORTS, MAX_UNICAST_LIDS, LinkSpec, NodeSpec, Topology, TopologyError

_SPEC_RE = re.compile(r"([A-Za-z]+):(.*)\Z", re.S)


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


def generate(spec: str) -> Topology:
    """Build a topology from a generator spec.

    - ``single:N``: switch ``sw01`` with max(N, 8) ports; HCAs ``node0001..`` (1 port each) on its
      ports 1..N.
    - ``linear:N``: switches ``sw01..`` in a chain, 8 ports each: port 1 to its own HCA, port 3 to
      the next switch's port 2.
    - ``fattree:L,S,H,K``: leaves ``leaf01..`` with HCAs on ports 1..H and K cables to each spine
      on ports H+1.. (spine by spine); spines ``spine01..`` with K ports per leaf, leaf by leaf;
      every switch has max(36, ports needed) ports.

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
                  "fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS_PER_PAIR)")
    kind, argtext = m.group(1), m.group(2)
    arity = {"single": 1, "linear": 1, "fattree": 4}
    if kind not in arity:
        raise bad(f"unknown generator {kind!r}: use single:N, linear:N or "
                  "fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS_PER_PAIR")
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
