"""Topologies written in Python, the way Mininet's are::

    from fabric.topology import Topo

    class TwoLeaves(Topo):
        def build(self, hcas_per_leaf=2):
            spine = self.add_switch("spine01", ports=8)
            for i in (1, 2):
                leaf = self.add_switch(f"leaf{i:02d}", ports=8)
                self.add_link(leaf, spine)               # the next free port at each end
                for j in range(hcas_per_leaf):
                    self.add_link(self.add_hca(f"node{i}{j}"), leaf)

    Fabric(TwoLeaves(hcas_per_leaf=3))

What a ``Topo`` builds is the :class:`Topology` a net file with the same nodes and cables, declared
in the same order, parses to: the same GUIDs (ibsim's allocation, :mod:`.ibsim`), descriptions,
4x SDR links and SM port, checked by the same :meth:`Topology.validate`. An error names the line of
the Python file that added the node or cable, as the parser names the line of a net file.
"""

from __future__ import annotations

import os
import sys

from .ibsim import FIRST_GUID, default_port_guids, guids_taken
from .model import LinkSpec, NodeSpec, Topology, TopologyError

_HERE = os.path.normcase(os.path.abspath(__file__))


def _caller() -> tuple[str, int]:
    """The file and line, outside this module, that called into it (the user's ``build``)."""
    f = sys._getframe(1)
    while f is not None and os.path.normcase(os.path.abspath(f.f_code.co_filename)) == _HERE:
        f = f.f_back
    return (f.f_code.co_filename, f.f_lineno) if f is not None else ("<python>", 0)


class Topo:
    """A fabric described in Python: subclass it and override :meth:`build`, which the
    constructor calls with its arguments (Mininet's ``Topo``). :meth:`topology` gives the validated
    :class:`Topology`; ``Fabric(MyTopo(...))`` and ``ibfab up --custom FILE --topo NAME`` take it."""

    def __init__(self, *args, **params):
        self._topology = Topology(source=f"Python topology {type(self).__name__}")
        self._guids = dict(FIRST_GUID)  # ibsim's counters, advanced in declaration order
        self._cabled: dict[str, set] = {}
        self._sm: tuple[str, int] | None = None
        self.build(*args, **params)

    def build(self, *args, **params) -> None:
        """Add the switches, HCAs and cables (override this)."""

    # -- building --------------------------------------------------------------------------------

    def add_switch(self, name: str, ports: int = 36, *, description: str | None = None,
                   guid: int | None = None, sys_guid: int | None = None, vendor_id: int = 0,
                   device_id: int = 0) -> str:
        """A switch with ``ports`` external ports (its port 0 is the management port). Without
        ``guid`` it gets the next of ibsim's switch GUIDs (0x200000, 0x200001, ...)."""
        return self._node("switch", name, ports, description, guid, sys_guid, vendor_id, device_id)

    def add_hca(self, name: str, ports: int = 1, *, description: str | None = None, guid: int | None = None,
                sys_guid: int | None = None, vendor_id: int = 0, device_id: int = 0) -> str:
        """An HCA (channel adapter) with ``ports`` ports; port *i*'s GUID is its node GUID + *i*.
        Without ``guid`` it gets ibsim's next HCA GUID (0x100000 onwards, 1 + ports per HCA)."""
        return self._node("hca", name, ports, description, guid, sys_guid, vendor_id, device_id)

    def add_link(self, a: str, b: str, a_port: int | None = None, b_port: int | None = None, *,
                 width: str = "4x", speed: str = "SDR") -> LinkSpec:
        """A cable between port ``a_port`` of ``a`` and ``b_port`` of ``b``; a port left out is the
        node's lowest port without a cable. ibsim's default rate, 4x SDR, unless given."""
        where = _caller()
        a_port = self._free_port(a) if a_port is None else a_port
        self._cabled.setdefault(a, set()).add(a_port)
        b_port = self._free_port(b) if b_port is None else b_port
        self._cabled.setdefault(b, set()).add(b_port)
        link = LinkSpec(a, a_port, b, b_port, width, speed)
        self._topology.links.append(link)
        self._topology._origins.setdefault(("link", link), where)
        return link

    def set_sm(self, name: str, port: int = 1) -> None:
        """Run the SM on ``name``/``port`` (default: as a net file, the first HCA port cabled)."""
        self._sm = (name, port)

    # -- the result -----------------------------------------------------------------------------

    def topology(self) -> Topology:
        """The validated :class:`Topology` (TopologyError, naming the line that added the node or
        cable, when it is not usable)."""
        t = self._topology
        t.sm_node, t.sm_port = self._sm or self._first_hca_port()
        t.reindex()
        t.validate()
        return t

    def hcas(self) -> list[str]:
        return [n.name for n in self._topology.hcas()]

    def switches(self) -> list[str]:
        return [n.name for n in self._topology.switches()]

    # -- the rest -------------------------------------------------------------------------------

    def _node(self, kind, name, ports, description, guid, sys_guid, vendor_id, device_id) -> str:
        where = _caller()
        t = self._topology
        if name in t.nodes:
            src, line = t._origins[("node", name)]
            raise TopologyError(f"node {name!r} is declared twice (first at {src}:{line})", *where)
        if guid is None:
            guid = self._guids[kind]
            if isinstance(ports, int):
                self._guids[kind] += guids_taken(kind, ports)
        port_guids = default_port_guids(kind, guid, ports) if isinstance(ports, int) and isinstance(guid, int) else {}
        t.nodes[name] = NodeSpec(name, kind, ports, guid, guid if sys_guid is None else sys_guid, port_guids,
                                 name if description is None else description, vendor_id, device_id)
        t._origins[("node", name)] = where
        return name

    def _free_port(self, name: str) -> int:
        node = self._topology.nodes.get(name)
        used = self._cabled.get(name, set())
        if node is None or not isinstance(node.num_ports, int):
            return 1  # validate() names the unknown node
        # past the last port when all are cabled: validate() says it is out of range
        return next(p for p in range(1, node.num_ports + 2) if p not in used)

    def _first_hca_port(self) -> tuple[str, int]:
        """Where a net file's SM goes: the first HCA end of the first cable that has one, else
        the first HCA's port 1 (net_parser's choose_sm)."""
        nodes = self._topology.nodes
        for link in self._topology.links:
            for name, port in link.ends():
                if name in nodes and nodes[name].kind == "hca":
                    return name, port
        for node in nodes.values():
            if node.kind == "hca":
                return node.name, 1
        return next(iter(nodes), ""), 0
