"""Fabric topologies: ibsim net files, ibnetdiscover dumps, and generators.

A :class:`Topology` is the static description of a fabric: its nodes (switches and HCAs, with
their GUIDs) and the cables between their ports. It comes from one of three places:

- an ibsim net file (the format of ibsim's ``net-examples``),
- the output of the real ``ibnetdiscover`` (infiniband-diags), which is the same format with more
  header keywords, GUIDs in parentheses and ``#`` comments carrying descriptions, LIDs and link
  rates,
- a generator spec: ``single:N``, ``linear:N``, ``fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS``,
  ``fattree3:PODS,LEAVES,AGGS,HCAS_PER_LEAF,CORES``,
- Python: a :class:`Topo` subclass whose ``build`` adds switches, HCAs and cables (Mininet's
  style; ``ibfab up --custom FILE --topo NAME`` loads one from a file, :mod:`.custom`).

ibsim's parser (``ibsim/sim_net.c``) is the reference for the format, and for the GUIDs a net
file gets when it names none: switches take ``0x200000, 0x200001, ...`` and HCAs take
``0x100000`` onwards, each HCA consuming ``1 + num_ports`` GUIDs (node GUID, then port *i* =
node GUID + *i*), both counters advancing in order of *declaration* (the node's header line, not
its first mention). The same net file therefore gives the same GUIDs here and in ibsim.
:meth:`Topology.to_net` writes a net file that ibsim reads back to the same fabric.

The modules:

- :mod:`.model`: ``NodeSpec``, ``LinkSpec``, ``Topology`` (queries, ``validate``),
  ``TopologyError``;
- :mod:`.ibsim`: ibsim's GUID allocation and link-rate model, which the others share;
- :mod:`.net_parser`: ``parse_topology``, for net files and ibnetdiscover dumps;
- :mod:`.net_writer`: the net file ``Topology.to_net`` returns;
- :mod:`.generators`: ``generate``;
- :mod:`.pytopo`: ``Topo``; :mod:`.custom`: ``load_custom`` (``--custom``/``--topo``);
- this one: :func:`load_topology`, which picks among them.

See ``docs/topology.md`` for the format, the rules and where this parser departs from ibsim.
"""

from __future__ import annotations

import os

from .generators import generate, is_spec
from .model import MAX_PORTS, SPEEDS, WIDTHS, LinkSpec, NodeSpec, Topology, TopologyError
from .net_parser import parse_topology
from .pytopo import Topo

__all__ = [
    "LinkSpec",
    "MAX_PORTS",
    "NodeSpec",
    "SPEEDS",
    "Topo",
    "Topology",
    "TopologyError",
    "WIDTHS",
    "generate",
    "load_topology",
    "parse_topology",
]


def load_topology(arg) -> Topology:
    """A Topology from a Topology (returned as is), a :class:`Topo` (or a Topo subclass, built
    without arguments), a file path, or a generator spec."""
    if isinstance(arg, Topology):
        return arg
    if isinstance(arg, type) and issubclass(arg, Topo):
        arg = arg()
    if isinstance(arg, Topo):
        return arg.topology()
    if isinstance(arg, os.PathLike):
        arg = os.fspath(arg)
    if not isinstance(arg, str):
        raise TypeError(f"expected a Topology, a Topo, a path or a generator spec, not "
                        f"{type(arg).__name__}")
    if os.path.isfile(arg):
        try:
            with open(arg, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            raise TopologyError(f"cannot read: {e.strerror}", arg) from None
        return parse_topology(text, source=arg, base_dir=os.path.dirname(arg) or ".")
    if is_spec(arg):
        return generate(arg)
    raise TopologyError("no such topology file, and not a generator spec (single:N, linear:N, "
                        "fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS_PER_PAIR, fattree3:PODS,LEAVES,AGGS,HCAS_PER_LEAF,CORES)", arg)
