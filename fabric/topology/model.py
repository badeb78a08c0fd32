"""The topology model: nodes, ports, cables, the SM port, and the checks a usable fabric passes.

A :class:`Topology` is the static description of a fabric: its nodes (:class:`NodeSpec`, switches
and HCAs with their GUIDs) and the cables between their ports (:class:`LinkSpec`). Where one comes
from (a net file, an ibnetdiscover dump, a generator) is the business of the other modules of
:mod:`fabric.topology`; this one holds what they all build and what the fabric reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Highest port number a node may have (port 255 is reserved in IB).
MAX_PORTS = 254
#: Unicast LIDs available with LMC 0 (0x0001..0xBFFF).
MAX_UNICAST_LIDS = 0xBFFF
#: Link widths a :class:`LinkSpec` may carry.
WIDTHS = ("1x", "2x", "4x", "8x", "12x")
#: Link speeds a :class:`LinkSpec` may carry.
SPEEDS = ("SDR", "DDR", "QDR", "FDR10", "FDR", "EDR", "HDR", "NDR")


class TopologyError(ValueError):
    """A topology that cannot be used. The message names the file (or generator spec) and line."""

    def __init__(self, reason: str, source: str = "<string>", line: int | None = None,
                 included_from: tuple[tuple[str, int], ...] = ()):
        self.reason = reason
        self.source = source
        self.line = line
        self.included_from = tuple(included_from)
        where = f"{source}:{line}" if line is not None else source
        msg = f"{where}: {reason}"
        for src, ln in reversed(self.included_from):
            msg += f" (included from {src}:{ln})"
        super().__init__(msg)


@dataclass
class NodeSpec:
    """One switch or HCA."""

    name: str  # unique key: the quoted node id of the file ("Switch1", "S-0000000000200000")
    kind: str  # "switch" or "hca"
    num_ports: int
    node_guid: int
    sys_guid: int
    port_guids: dict[int, int]  # HCA: ports 1..N; switch: {0: port-0 GUID} (= node GUID)
    description: str  # NodeDescription
    vendor_id: int = 0
    device_id: int = 0
    # LIDs seen in ibnetdiscover comments (port -> LID; port 0 for a switch). Informational only,
    # never compared: the SM assigns LIDs.
    lid_hint: dict[int, int] = field(default_factory=dict, compare=False)

    @property
    def is_switch(self) -> bool:
        return self.kind == "switch"

    def port_guid(self, port: int) -> int:
        """The GUID of a port; every switch port answers with the port-0 GUID."""
        if self.kind == "switch":
            return self.port_guids[0]
        return self.port_guids[port]


@dataclass(frozen=True)
class LinkSpec:
    """One cable between port ``a_port`` of node ``a`` and port ``b_port`` of node ``b``."""

    a: str
    a_port: int
    b: str
    b_port: int
    width: str = "4x"  # one of WIDTHS
    speed: str = "QDR"  # one of SPEEDS. NB: files and generators that say nothing give ibsim's SDR

    def ends(self) -> tuple[tuple[str, int], tuple[str, int]]:
        return (self.a, self.a_port), (self.b, self.b_port)

    def canonical(self) -> tuple:
        """A key that is the same whichever end the cable is described from."""
        x, y = sorted(self.ends())
        return (x, y, self.width, self.speed)


@dataclass(eq=False)
class Topology:
    """Nodes (in file order) and cables (each once), plus the port the SM runs on.

    Two topologies are equal when they have the same nodes (all fields but ``lid_hint``), the same
    cables whichever end they are written from and in any order, and the same SM port.
    """

    nodes: dict[str, NodeSpec] = field(default_factory=dict)
    links: list[LinkSpec] = field(default_factory=list)
    sm_node: str = ""
    sm_port: int = 0
    source: str = "<topology>"
    warnings: list[str] = field(default_factory=list)
    # (kind, key) -> (source, line): where a node or link was declared, for error messages.
    _origins: dict = field(default_factory=dict, init=False, repr=False)
    _index_key: tuple | None = field(default=None, init=False, repr=False)
    _index: dict = field(default_factory=dict, init=False, repr=False)

    # --- queries ------------------------------------------------------------------------------
    def _peers(self) -> dict[tuple[str, int], tuple[str, int]]:
        key = (id(self.links), len(self.links))
        if self._index_key != key:
            index: dict[tuple[str, int], tuple[str, int]] = {}
            for link in self.links:
                index[(link.a, link.a_port)] = (link.b, link.b_port)
                index[(link.b, link.b_port)] = (link.a, link.a_port)
            self._index, self._index_key = index, key
        return self._index

    def peer(self, name: str, port: int) -> tuple[str, int] | None:
        """``(node, port)`` at the other end of the cable on ``name``/``port``, or None.

        Raises KeyError for a node that is not in the topology. (The index is cached; after
        replacing an element of ``links`` in place, call :meth:`reindex`.)
        """
        if name not in self.nodes:
            raise KeyError(name)
        return self._peers().get((name, port))

    def reindex(self) -> None:
        """Drop the cached peer index (needed only after editing ``links`` in place)."""
        self._index_key = None

    def connected_ports(self, name: str) -> dict[int, tuple[str, int]]:
        """Cabled ports of a node: ``{port: (peer node, peer port)}``, in port order."""
        if name not in self.nodes:
            raise KeyError(name)
        peers = self._peers()
        return {p: peers[(name, p)] for p in range(1, self.nodes[name].num_ports + 1)
                if (name, p) in peers}

    def link_at(self, name: str, port: int) -> LinkSpec | None:
        """The cable on a port, or None."""
        for link in self.links:
            if (link.a, link.a_port) == (name, port) or (link.b, link.b_port) == (name, port):
                return link
        return None

    def switches(self) -> list[NodeSpec]:
        return [n for n in self.nodes.values() if n.kind == "switch"]

    def hcas(self) -> list[NodeSpec]:
        return [n for n in self.nodes.values() if n.kind == "hca"]

    def node_by_guid(self, guid: int) -> NodeSpec | None:
        for node in self.nodes.values():
            if node.node_guid == guid:
                return node
        return None

    def summary(self) -> str:
        return f"{len(self.switches())} switches, {len(self.hcas())} HCAs, {len(self.links)} links"

    def __repr__(self) -> str:
        return f"<Topology {self.source}: {self.summary()}; SM at {self.sm_node}/{self.sm_port}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Topology):
            return NotImplemented
        return (self.nodes == other.nodes
                and sorted(lk.canonical() for lk in self.links)
                == sorted(lk.canonical() for lk in other.links)
                and (self.sm_node, self.sm_port) == (other.sm_node, other.sm_port))

    __hash__ = None  # mutable

    # --- checks -------------------------------------------------------------------------------
    def _err(self, reason: str, *origin_keys) -> TopologyError:
        """An error citing where the first of `origin_keys` that came from a file was declared."""
        for key in origin_keys:
            if key in self._origins:
                src, line = self._origins[key]
                return TopologyError(reason, src, line)
        return TopologyError(reason, self.source)

    def validate(self) -> None:
        """Raise TopologyError unless the topology is usable.

        Checks: node names and fields (kind, port count, GUIDs present and unique, description
        length), every cable's ends (known node, port in range, not the same port twice, no port
        cabled twice; a list of cables cannot be asymmetric, so a cable listed twice, from either
        end, is "cabled twice"), link width/speed values, the SM port, and the LID space.
        """
        if not self.nodes:
            raise TopologyError("the topology has no nodes", self.source)
        node_guids: dict[int, str] = {}
        port_guids: dict[int, str] = {}
        for key, node in self.nodes.items():
            okey = ("node", key)
            if node.name != key:
                raise self._err(f"node stored under {key!r} is named {node.name!r}", okey)
            _check_name(node.name, lambda r: self._err(r, okey))
            if node.kind not in ("switch", "hca"):
                raise self._err(f"node {key!r}: kind must be 'switch' or 'hca', not "
                                f"{node.kind!r}", okey)
            if not isinstance(node.num_ports, int) or not 1 <= node.num_ports <= MAX_PORTS:
                raise self._err(f"node {key!r}: port count {node.num_ports!r} is not in "
                                f"1..{MAX_PORTS}", okey)
            if len(node.description.encode("utf-8")) > 64:
                raise self._err(f"node {key!r}: description {node.description!r} is longer "
                                "than the 64 bytes of a NodeDescription", okey)
            if not 0 <= node.vendor_id < 1 << 24 or not 0 <= node.device_id < 1 << 16:
                raise self._err(f"node {key!r}: vendor id must fit 24 bits and device id 16",
                                okey)
            for what, guid in (("node GUID", node.node_guid), ("system image GUID",
                                                               node.sys_guid)):
                if not isinstance(guid, int) or not 0 <= guid < 1 << 64:
                    raise self._err(f"node {key!r}: {what} {guid!r} is not a 64-bit value", okey)
            if node.node_guid == 0:
                raise self._err(f"node {key!r}: node GUID 0 is not valid", okey)
            if node.node_guid in node_guids:
                raise self._err(f"node {key!r}: node GUID {node.node_guid:#x} is also the GUID "
                                f"of node {node_guids[node.node_guid]!r}", okey)
            node_guids[node.node_guid] = key
            wanted = {0} if node.kind == "switch" else set(range(1, node.num_ports + 1))
            if set(node.port_guids) != wanted:
                raise self._err(f"node {key!r}: port GUIDs are given for ports "
                                f"{sorted(node.port_guids)}, expected {sorted(wanted)}", okey)
            for port, guid in sorted(node.port_guids.items()):
                if not isinstance(guid, int) or not 0 < guid < 1 << 64:
                    raise self._err(f"node {key!r}: port {port} GUID {guid!r} is not valid",
                                    okey)
                if guid in port_guids:
                    raise self._err(f"node {key!r}: port {port} GUID {guid:#x} is also a port "
                                    f"GUID of node {port_guids[guid]!r}", okey)
                port_guids[guid] = key
        for guid, owner in port_guids.items():
            if guid in node_guids and node_guids[guid] != owner:
                raise self._err(f"node {owner!r}: a port GUID {guid:#x} is the node GUID of "
                                f"node {node_guids[guid]!r}", ("node", owner))

        used: dict[tuple[str, int], LinkSpec] = {}
        for link in self.links:
            okey = ("link", link)
            if link.width not in WIDTHS:
                raise self._err(f"cable {_fmt_link(link)}: width {link.width!r} is not one of "
                                f"{', '.join(WIDTHS)}", okey)
            if link.speed not in SPEEDS:
                raise self._err(f"cable {_fmt_link(link)}: speed {link.speed!r} is not one of "
                                f"{', '.join(SPEEDS)}", okey)
            for name, port in link.ends():
                node = self.nodes.get(name)
                if node is None:
                    raise self._err(f"cable {_fmt_link(link)}: unknown node {name!r}", okey)
                if not isinstance(port, int) or not 1 <= port <= node.num_ports:
                    raise self._err(f"cable {_fmt_link(link)}: port {port!r} is out of range "
                                    f"for {name!r}, which has ports 1..{node.num_ports}", okey)
            if (link.a, link.a_port) == (link.b, link.b_port):
                raise self._err(f"cable {_fmt_link(link)} joins a port to itself", okey)
            for end in link.ends():
                if end in used:
                    raise self._err(f"port {end[0]}[{end[1]}] is cabled twice: "
                                    f"{_fmt_link(used[end])} and {_fmt_link(link)}", okey,
                                    ("link", used[end]))
                used[end] = link

        sm = self.nodes.get(self.sm_node)
        if sm is None:
            raise TopologyError(f"SM node {self.sm_node!r} is not in the topology", self.source)
        ok = (self.sm_port == 0) if sm.kind == "switch" else 1 <= self.sm_port <= sm.num_ports
        if not ok:
            raise TopologyError(f"SM port {self.sm_node}[{self.sm_port}] does not exist",
                                self.source)

        lids = len(self.switches()) + sum(
            1 for end in used if self.nodes[end[0]].kind == "hca")
        if lids > MAX_UNICAST_LIDS:
            raise TopologyError(f"{lids} LIDs needed (switches + cabled HCA ports), more than the "
                                f"{MAX_UNICAST_LIDS} unicast LIDs", self.source)

    # --- output -------------------------------------------------------------------------------
    def to_net(self) -> str:
        """An ibsim net file for this topology; ``parse_topology(t.to_net()) == t``.

        :func:`fabric.topology.net_writer.format_net` says how the file is laid out.
        """
        from .net_writer import format_net  # here, not at the top: the writer imports this module
        return format_net(self)


def _fmt_link(link: LinkSpec) -> str:
    return f"{link.a}[{link.a_port}] <-> {link.b}[{link.b_port}]"


def _check_name(name: str, err) -> None:
    if not isinstance(name, str) or not name:
        raise err(f"node id {name!r} is empty")
    bad = [c for c in '"#@\n\r' if c in name]
    if bad:
        raise err(f"node id {name!r} contains {bad[0]!r}: '#' and '@' are reserved by ibsim and "
                  "'\"' ends the id")
    if len(name.encode("utf-8")) > 64:
        raise err(f"node id {name!r} is longer than 64 bytes (ibsim truncates ids to 64)")
