"""Fabric topologies: ibsim net files, ibnetdiscover dumps, and generators.

A :class:`Topology` is the static description of a fabric: its nodes (switches and HCAs, with
their GUIDs) and the cables between their ports. It comes from one of three places:

- an ibsim net file (the format of ibsim's ``net-examples``),
- the output of the real ``ibnetdiscover`` (infiniband-diags), which is the same format with more
  header keywords, GUIDs in parentheses and ``#`` comments carrying descriptions, LIDs and link
  rates,
- a generator spec: ``single:N``, ``linear:N``, ``fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS``.

ibsim's parser (``ibsim/sim_net.c``) is the reference for the format, and for the GUIDs a net
file gets when it names none: switches take ``0x200000, 0x200001, ...`` and HCAs take
``0x100000`` onwards, each HCA consuming ``1 + num_ports`` GUIDs (node GUID, then port *i* =
node GUID + *i*), both counters advancing in order of *declaration* (the node's header line, not
its first mention). The same net file therefore gives the same GUIDs here and in ibsim.
:meth:`Topology.to_net` writes a net file that ibsim reads back to the same fabric.

See ``docs/topology.md`` for the format, the rules and where this parser departs from ibsim.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

__all__ = [
    "LinkSpec",
    "MAX_PORTS",
    "NodeSpec",
    "SPEEDS",
    "Topology",
    "TopologyError",
    "WIDTHS",
    "generate",
    "load_topology",
    "parse_topology",
]

#: Highest port number a node may have (port 255 is reserved in IB).
MAX_PORTS = 254
#: Unicast LIDs available with LMC 0 (0x0001..0xBFFF).
MAX_UNICAST_LIDS = 0xBFFF
#: Link widths a :class:`LinkSpec` may carry.
WIDTHS = ("1x", "2x", "4x", "8x", "12x")
#: Link speeds a :class:`LinkSpec` may carry.
SPEEDS = ("SDR", "DDR", "QDR", "FDR10", "FDR", "EDR", "HDR", "NDR")

# --- ibsim's link-rate model -------------------------------------------------------------------
# ibsim keeps, per port, the *enabled* width and speed masks (PortInfo LinkWidthEnabled,
# LinkSpeedEnabled, LinkSpeedExtEnabled, and Mellanox's FDR10 bit); when two ports are cabled the
# active value is the highest bit both ends enable. The masks come from the global `width=`,
# `speed=`, `extspeed=` lines, from the per-port options `w=`, `s=`, `e=` (numbers: these masks),
# and from the ibnetdiscover comment `lid N 4xQDR`. Defaults: 4x, SDR (ibsim's DEFAULT_LINKWIDTH
# and DEFAULT_LINKSPEED).
_W_BIT = {"1x": 1, "4x": 2, "8x": 4, "12x": 8, "2x": 16}
_W_PRIORITY = ("12x", "8x", "4x", "2x", "1x")
_S_BIT = {"SDR": 1, "DDR": 2, "QDR": 4}
_E_BIT = {"FDR": 1, "EDR": 2, "HDR": 4, "NDR": 8}
_DEFAULT_MASKS = (2, 1, 0, 0)  # width 4x, speed SDR, no extended speed, no FDR10
# What ibsim enables when a comment says "<N>x<SPEED>" (parse_port_link_width_and_speed).
_COMMENT_WIDTH = {1: 1, 2: 16, 4: 3, 8: 4, 12: 11}
_COMMENT_SPEED = {  # name -> (speed mask or None, ext mask or None, fdr10 mask or None)
    "SDR": (1, None, None),
    "DDR": (3, None, None),
    "QDR": (7, None, None),
    "FDR": (7, 1, 1),
    "EDR": (7, 3, 1),
    "HDR": (7, 7, 1),
    "NDR": (7, 15, 1),
    "FDR10": (7, None, 1),
}

_SWITCH_GUID_BASE = 0x200000
_HCA_GUID_BASE = 0x100000


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

        The SM node's record comes first, with the SM port as its first port line: ibsim attaches
        clients that name no node (the SM) to the first port of the first record, and our parser
        picks that port as the SM port. GUIDs are left to ibsim's allocation wherever it gives the
        right value, and set by ``switchguid=``/``caguid=`` lines where it would not; system image
        GUIDs, vendor and device ids get their lines when they differ from ibsim's defaults.
        Links other than 4x SDR (ibsim's default) carry ``w=``/``s=``/``e=`` options on both ends
        (FDR10, which has no option, is written as ibnetdiscover writes it, ``# lid 0 4xFDR10``).
        An HCA port GUID other than node GUID + port is written as ``[p](guid)``, which this parser
        honours and ibsim ignores.
        """
        self.validate()
        for node in self.nodes.values():
            if '"' in node.description or "\n" in node.description:
                raise TopologyError(f"node {node.name!r}: description {node.description!r} "
                                    "cannot be written in a net file", self.source)
        order = [self.nodes[self.sm_node]] + [n for n in self.nodes.values()
                                              if n.name != self.sm_node]
        out = [
            "# ibsim net file written by ibfabric (fabric/topology.py)",
            f"# {self.summary()}",
            f"# SM port: {self.sm_node}[{self.sm_port}] (first record, so ibsim attaches the SM "
            "there)",
        ]
        if self.nodes[self.sm_node].kind == "hca" and self.sm_port != 1:
            out.append(f"# NB: ibsim attaches its default client to port 1 of {self.sm_node}")
        out.append("")
        counters = {"switch": _SWITCH_GUID_BASE, "hca": _HCA_GUID_BASE}
        devid = 0
        by_end = {end: lk for lk in self.links for end in lk.ends()}
        for node in order:
            p0 = node.port_guids.get(0) if node.kind == "switch" else None
            if node.kind == "switch" and p0 != node.node_guid:
                out.append(f"switchguid={node.node_guid:#x}({p0:x})")
            elif node.node_guid != counters[node.kind]:
                kw = "switchguid" if node.kind == "switch" else "caguid"
                out.append(f"{kw}={node.node_guid:#x}")
            counters[node.kind] = node.node_guid + (
                1 if node.kind == "switch" else node.num_ports + 1)
            if node.sys_guid != node.node_guid:
                out.append(f"sysimgguid={node.sys_guid:#x}")
            if node.vendor_id:
                out.append(f"vendid={node.vendor_id:#x}")
            if node.device_id != devid:
                out.append(f"devid={node.device_id:#x}")
                devid = node.device_id
            keyword = "Switch" if node.kind == "switch" else "Hca"
            header = f'{keyword}\t{node.num_ports} "{node.name}"'
            if node.description != node.name:
                header += f'\t# "{node.description}"'
            out.append(header)
            ports = self.connected_ports(node.name)
            port_order = sorted(ports)
            if node.name == self.sm_node and self.sm_port in ports:
                port_order.remove(self.sm_port)
                port_order.insert(0, self.sm_port)
            for p in port_order:
                rname, rport = ports[p]
                link = by_end[(node.name, p)]
                left = f"[{p}]"
                if node.kind == "hca" and node.port_guids[p] != node.node_guid + p:
                    left += f"({node.port_guids[p]:x})"
                line = f'{left}\t"{rname}"[{rport}]'
                opts = _net_link_options(link.width, link.speed)
                if opts:
                    line += "\t" + opts
                out.append(line)
            out.append("")
        return "\n".join(out)


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


def _net_link_options(width: str, speed: str) -> str:
    if speed == "FDR10":
        return f"# lid 0 {width}FDR10"
    opts = []
    if width != "4x":
        opts.append(f"w={_W_BIT[width]}")
    s, e = (_S_BIT[speed], 0) if speed in _S_BIT else (_S_BIT["QDR"], _E_BIT[speed])
    if s != 1:
        opts.append(f"s={s}")
    if e:
        opts.append(f"e={e}")
    return " ".join(opts)


# ================================================================================================
# Parser
# ================================================================================================

_HEADER_RE = re.compile(r"(Switch|Hca|Ca|Rt)(?![A-Za-z0-9_])\s*(.*)\Z")
_HEADER_REST_RE = re.compile(r'(\d+)\s*"([^"]*)"(.*)\Z')
_PORT_RE = re.compile(
    r"""\[(?P<port>[^\]]*)\]
        \s*(?:\((?P<lguid>[^)]*)\))?
        \s*"(?P<rid>[^"]*)"
        (?:\s*\[(?P<rport>[^\]]*)\])?
        (?:\s*\((?P<rguid>[^)]*)\))?
        (?P<rest>.*)\Z""", re.X)
_ASSIGN_RE = re.compile(r"(?P<kw>[A-Za-z_]+)\s*(?P<op>[=+])\s*(?P<val>.*?)\s*\Z")
_INCLUDE_RE = re.compile(
    r'include(?:\s*"(?P<q>[^"]+)"|\s*<(?P<a>[^>]+)>|\s+(?P<b>[^\s#]+))\s*(?:#.*)?\Z')
_CINT_RE = re.compile(r"\s*(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_HEX_RE = re.compile(r"(?:0[xX])?([0-9a-fA-F]{1,16})\Z")
_INITIATED_RE = re.compile(r"Initiated from node\s+([0-9a-fA-F]+)\s+port\s+([0-9a-fA-F]+)")
_RATE_RE = re.compile(r"lid\s+[-+]?\d+\s+(\d+)x(\S+)")
_ASSIGN_KEYWORDS = {"vendid", "devid", "sysimgguid", "switchguid", "caguid", "hcaguids",
                    "rtguid", "width", "speed", "extspeed", "module", "pdebug"}


def _c_int(text: str) -> tuple[int, str] | None:
    """strtoul(text, &end, 0): the leading C integer literal and what follows it, or None."""
    m = _CINT_RE.match(text)
    if not m:
        return None
    lit = m.group(1)
    if lit[:2] in ("0x", "0X"):
        value = int(lit[2:], 16)
    elif lit.startswith("0") and len(lit) > 1:
        value = int(lit, 8)
    else:
        value = int(lit)
    return value, text[m.end():]


@dataclass
class _Decl:
    """One port line: `node`[port] cabled to `rid`[rport]."""

    node: str
    port: int
    rid: str
    rport: int
    rguid: int | None
    masks: tuple[int, int, int, int]
    source: str
    line: int


class _Parser:
    MAX_INCLUDE_DEPTH = 16

    def __init__(self) -> None:
        self.nodes: dict[str, NodeSpec] = {}
        self.origins: dict = {}
        self.node_defaults: dict[str, tuple[int, int, int, int]] = {}
        self.decls: list[_Decl] = []
        self.own: dict[tuple[str, int], _Decl] = {}
        self.warnings: list[str] = []
        # ibsim's global state
        self.guids = {"switch": _SWITCH_GUID_BASE, "hca": _HCA_GUID_BASE}
        self.absguids = dict(self.guids)
        self.vendid = 0
        self.devid = 0
        self.sysimgguid = 0
        self.switch_port0_guid: int | None = None
        self.netwidth, self.netspeed, self.netspeedext = _DEFAULT_MASKS[:3]
        self.initiated_port_guid: int | None = None
        self.include_stack: list[str] = []  # real paths
        self.include_sites: list[tuple[str, int]] = []
        # the open record
        self.cur: NodeSpec | None = None
        self.cur_lines = 0

    def err(self, reason: str, source: str, line: int | None) -> TopologyError:
        return TopologyError(reason, source, line, tuple(self.include_sites))

    # --- lines --------------------------------------------------------------------------------
    def parse_text(self, text: str, source: str, base_dir: str) -> None:
        self.cur = None
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line:
                self.cur = None
                continue
            if line.startswith("#"):
                m = _INITIATED_RE.search(line)
                if m and self.initiated_port_guid is None:
                    self.initiated_port_guid = int(m.group(2), 16)
                continue
            if line.startswith("@"):
                raise self.err("ibsim port aliases ('@' lines) are not supported", source, lineno)
            if line.startswith("["):
                if self.cur is None:
                    raise self.err("port line outside a node record (a blank line ends a "
                                   "record; ibsim would ignore this line)", source, lineno)
                self.port_line(line, source, lineno)
                continue
            if self.cur is not None and self.cur_lines < self.cur.num_ports:
                self.warnings.append(
                    f"{source}:{lineno}: no blank line before this line; ibsim would swallow it "
                    "as the end of the previous record")
            self.cur = None
            self.top_line(line, source, lineno, base_dir)

    def top_line(self, line: str, source: str, lineno: int, base_dir: str) -> None:
        m = _HEADER_RE.match(line)
        if m:
            self.header_line(m.group(1), m.group(2), source, lineno)
            return
        word = re.match(r"[A-Za-z_-]*", line).group(0)
        if word == "include":
            self.include_line(line, source, lineno, base_dir)
            return
        if word == "do":
            self.warnings.append(f"{source}:{lineno}: ignored ibsim command line {line!r}")
            return
        if line == "Non-Chassis Nodes" or word == "Chassis":
            return  # ibnetdiscover -g grouping headers
        m = _ASSIGN_RE.match(line)
        if m and m.group("kw") in _ASSIGN_KEYWORDS:
            self.assignment(m.group("kw"), m.group("op"), m.group("val"), source, lineno)
            return
        if m:
            raise self.err(f"unknown setting {m.group('kw')!r}", source, lineno)
        raise self.err(f"unrecognised line {line!r}: expected a node header "
                       "(Switch|Hca|Ca <ports> \"<id>\"), a port line ([n] \"<id>\"[m]), "
                       "a setting (vendid=, devid=, sysimgguid=, switchguid=, caguid=, ...), "
                       "include, or a comment", source, lineno)

    def assignment(self, kw: str, op: str, val: str, source: str, lineno: int) -> None:
        if kw == "pdebug":
            return
        if kw == "module":
            raise self.err("ibsim 'module' name prefixes are not supported", source, lineno)
        if op == "+" and kw not in ("switchguid", "caguid", "hcaguids", "rtguid"):
            raise self.err(f"{kw} needs '=' (only GUID bases take '+')", source, lineno)
        parsed = _c_int(val)
        if parsed is None:
            raise self.err(f"bad value {val!r} for {kw}", source, lineno)
        value, rest = parsed
        rest = rest.strip()
        if kw == "switchguid" and rest:
            hm = re.fullmatch(r"\((?:0[xX])?([0-9a-fA-F]{1,16})\)", rest)
            if not hm:
                raise self.err(f"bad switchguid {val!r}: expected 0x<guid> or "
                               "0x<guid>(<port guid>)", source, lineno)
            self.switch_port0_guid = int(hm.group(1), 16)
            rest = ""
        if rest and not rest.startswith("#"):
            raise self.err(f"unexpected text {rest!r} after {kw}={value:#x}", source, lineno)
        if kw in ("switchguid", "caguid", "hcaguids", "rtguid"):
            if value >= 1 << 64:
                raise self.err(f"{kw} {value:#x} does not fit 64 bits", source, lineno)
            if kw == "rtguid":
                return  # routers are rejected at their header line
            kind = "switch" if kw == "switchguid" else "hca"
            if op == "=":
                self.absguids[kind] = value
                self.guids[kind] = value
            else:
                self.guids[kind] = self.absguids[kind] + value
        elif kw == "vendid":
            self.vendid = value
        elif kw == "devid":
            self.devid = value
        elif kw == "sysimgguid":
            if value >= 1 << 64:
                raise self.err(f"sysimgguid {value:#x} does not fit 64 bits", source, lineno)
            self.sysimgguid = value
        elif kw == "width":
            if not 1 <= value <= 31:
                raise self.err(f"width={value}: the LinkWidthEnabled mask must be 1..31 "
                               "(1=1x 2=4x 4=8x 8=12x 16=2x)", source, lineno)
            self.netwidth = value
        elif kw == "speed":
            if not 1 <= value <= 7:
                raise self.err(f"speed={value}: the LinkSpeedEnabled mask must be 1..7 "
                               "(1=SDR 2=DDR 4=QDR)", source, lineno)
            self.netspeed = value
        elif kw == "extspeed":
            if not 0 <= value <= 15:
                raise self.err(f"extspeed={value}: the LinkSpeedExtEnabled mask must be 0..15 "
                               "(1=FDR 2=EDR 4=HDR 8=NDR)", source, lineno)
            self.netspeedext = value

    def include_line(self, line: str, source: str, lineno: int, base_dir: str) -> None:
        m = _INCLUDE_RE.match(line)
        if not m:
            raise self.err(f"bad include line {line!r}: expected include \"<file>\"", source,
                           lineno)
        name = m.group("q") or m.group("a") or m.group("b")
        path = name if os.path.isabs(name) else os.path.join(base_dir, name)
        real = os.path.realpath(path)
        if real in self.include_stack:
            chain = " -> ".join(self.include_stack[self.include_stack.index(real):] + [real])
            raise self.err(f"include cycle: {chain}", source, lineno)
        if len(self.include_stack) >= self.MAX_INCLUDE_DEPTH:
            raise self.err(f"includes nested deeper than {self.MAX_INCLUDE_DEPTH}", source, lineno)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            raise self.err(f"cannot include {path!r}: {e.strerror}", source, lineno) from None
        self.include_stack.append(real)
        self.include_sites.append((source, lineno))
        try:
            self.parse_text(text, path, os.path.dirname(path) or ".")
        finally:
            self.include_sites.pop()
            self.include_stack.pop()
        self.cur = None

    def header_line(self, kw: str, rest: str, source: str, lineno: int) -> None:
        if kw == "Rt":
            raise self.err("router nodes (Rt) are not supported", source, lineno)
        m = _HEADER_REST_RE.match(rest)
        if not m:
            raise self.err(f"bad node header {kw + ' ' + rest!r}: expected "
                           f'{kw} <ports> "<node id>"', source, lineno)
        nports, name, tail = int(m.group(1)), m.group(2), m.group(3).strip()
        if not 1 <= nports <= MAX_PORTS:
            raise self.err(f"node {name!r}: port count {nports} is not in 1..{MAX_PORTS}",
                           source, lineno)
        _check_name(name, lambda r: self.err(r, source, lineno))
        if tail and not tail.startswith("#"):
            raise self.err(f"unexpected text {tail!r} after the node id", source, lineno)
        if name in self.nodes:
            osrc, oline = self.origins[("node", name)]
            raise self.err(f"node {name!r} is declared twice (first at {osrc}:{oline})",
                           source, lineno)
        kind = "switch" if kw == "Switch" else "hca"
        description, lid = name, None
        if tail:
            desc, after = _parse_node_desc(tail[1:])
            if desc:
                description = desc
            lm = re.search(r"\blid\s+(\d+)", after)
            if lm:
                lid = int(lm.group(1))
        guid = self.guids[kind]
        if guid >= 1 << 64 or (kind == "hca" and guid + nports >= 1 << 64):
            raise self.err(f"node {name!r}: GUID {guid:#x} overflows 64 bits", source, lineno)
        if kind == "switch":
            self.guids[kind] += 1
            port_guids = {0: self.switch_port0_guid if self.switch_port0_guid else guid}
        else:
            self.guids[kind] += nports + 1
            port_guids = {i: guid + i for i in range(1, nports + 1)}
        node = NodeSpec(name=name, kind=kind, num_ports=nports, node_guid=guid,
                        sys_guid=self.sysimgguid or guid, port_guids=port_guids,
                        description=description, vendor_id=self.vendid, device_id=self.devid)
        if lid is not None and kind == "switch":
            node.lid_hint[0] = lid
        # ibsim resets these after each node; devid stays (as ibsim does)
        self.vendid = 0
        self.sysimgguid = 0
        self.switch_port0_guid = None
        self.nodes[name] = node
        self.origins[("node", name)] = (source, lineno)
        self.node_defaults[name] = (self.netwidth, self.netspeed, self.netspeedext, 0)
        self.cur = node
        self.cur_lines = 0

    def port_line(self, line: str, source: str, lineno: int) -> None:
        node = self.cur
        m = _PORT_RE.match(line)
        if not m:
            raise self.err(f'bad port line {line!r}: expected [<port>] "<node id>"[<port>]',
                           source, lineno)
        port = _int_field(m.group("port"))
        if port is None:
            raise self.err(f"bad port number [{m.group('port')}]", source, lineno)
        if not 1 <= port <= node.num_ports:
            raise self.err(f"port {port} is out of range for {node.name!r}, which has ports "
                           f"1..{node.num_ports}", source, lineno)
        if (node.name, port) in self.own:
            first = self.own[(node.name, port)]
            raise self.err(f"port {node.name}[{port}] is cabled twice (first at "
                           f"{first.source}:{first.line})", source, lineno)
        if m.group("lguid") is not None:
            if node.kind == "switch":
                raise self.err("a switch port has no GUID of its own; only HCA port lines take "
                               "[n](guid)", source, lineno)
            g = _hex_guid(m.group("lguid"))
            if g is None:
                raise self.err(f"bad port GUID ({m.group('lguid')})", source, lineno)
            node.port_guids[port] = g
        rid = m.group("rid")
        if "@" in rid:
            raise self.err("ibsim port aliases ('@' names) are not supported", source, lineno)
        _check_name(rid, lambda r: self.err(r, source, lineno))
        rport = 1  # ibsim's default when the remote port is omitted
        if m.group("rport") is not None:
            rport = _int_field(m.group("rport"))
            if rport is None or rport < 1:
                raise self.err(f"bad remote port [{m.group('rport')}]", source, lineno)
        rguid = None
        if m.group("rguid") is not None:
            rguid = _hex_guid(m.group("rguid"))
            if rguid is None:
                raise self.err(f"bad remote port GUID ({m.group('rguid')})", source, lineno)
        masks = self.port_masks(node, port, m.group("rest"), source, lineno)
        decl = _Decl(node.name, port, rid, rport, rguid, masks, source, lineno)
        self.decls.append(decl)
        self.own[(node.name, port)] = decl
        self.cur_lines += 1

    def port_masks(self, node: NodeSpec, port: int, rest: str, source: str,
                   lineno: int) -> tuple[int, int, int, int]:
        w, s, e, fdr10 = self.node_defaults[node.name]
        opts, _, comment = rest.partition("#")
        for tok in opts.split():
            om = re.fullmatch(r"([A-Za-z]+)=(\S+)", tok)
            if not om:
                raise self.err(f"unexpected text {tok!r} on port line (options are w=, s=, e=; "
                               "comments start with #)", source, lineno)
            key, val = om.group(1), om.group(2)
            if key == "w":
                lanes = re.fullmatch(r"(\d+)[xX]", val)
                if lanes and lanes.group(1) + "x" in _W_BIT:
                    w = _W_BIT[lanes.group(1) + "x"]
                    self.warnings.append(
                        f"{source}:{lineno}: w={val} read as {lanes.group(1)}x; ibsim reads w= as "
                        f"the LinkWidthEnabled mask, so it takes w={val} as mask "
                        f"{int(lanes.group(1))} (write w={w} for ibsim)")
                else:
                    v = _c_int(val)
                    if v is None or v[1] or not 1 <= v[0] <= 31:
                        raise self.err(f"bad width option w={val}: ibsim's LinkWidthEnabled mask, "
                                       "1..31 (1=1x 2=4x 4=8x 8=12x 16=2x)", source, lineno)
                    w = v[0]
            elif key == "s":
                if val.upper() in _S_BIT:
                    s = _S_BIT[val.upper()]
                    self.warnings.append(f"{source}:{lineno}: s={val} is not ibsim syntax; write "
                                         f"s={s}")
                else:
                    v = _c_int(val)
                    if v is None or v[1] or not 0 <= v[0] <= 7:
                        raise self.err(f"bad speed option s={val}: ibsim's LinkSpeedEnabled mask,"
                                       " 1..7 (1=SDR 2=DDR 4=QDR)", source, lineno)
                    s = v[0] or _S_BIT["QDR"]  # ibsim: 0 means QDR
            elif key == "e":
                v = _c_int(val)
                if v is None or v[1] or not 0 <= v[0] <= 15:
                    raise self.err(f"bad extended speed option e={val}: ibsim's "
                                   "LinkSpeedExtEnabled mask, 0..15 (1=FDR 2=EDR 4=HDR 8=NDR)",
                                   source, lineno)
                e = v[0]
            else:
                self.warnings.append(f"{source}:{lineno}: ignored unknown port option {tok!r}")
        if comment:
            if node.kind == "hca":
                own = comment.split('"', 1)[0]
                lm = re.search(r"\blid\s+(\d+)", own)
                if lm:
                    node.lid_hint[port] = int(lm.group(1))
            tail = comment.rsplit('"', 1)[-1]
            rm = _RATE_RE.search(tail)
            if rm:
                lanes, name = int(rm.group(1)), rm.group(2).upper()
                if lanes in _COMMENT_WIDTH:
                    w = _COMMENT_WIDTH[lanes]
                else:
                    self.warnings.append(f"{source}:{lineno}: unknown link width {lanes}x ignored")
                if name in _COMMENT_SPEED:
                    ns, ne, nf = _COMMENT_SPEED[name]
                    s = ns
                    e = e if ne is None else ne
                    fdr10 = fdr10 if nf is None else nf
                else:
                    self.warnings.append(f"{source}:{lineno}: unknown link speed {name!r} "
                                         "ignored")
        return (w, s, e, fdr10)

    # --- whole topology -----------------------------------------------------------------------
    def finish(self, source: str) -> Topology:
        if not self.nodes:
            raise TopologyError("no nodes declared", source)
        nodes = self.nodes
        for d in self.decls:
            remote = nodes.get(d.rid)
            if remote is None:
                raise TopologyError(f"unknown node {d.rid!r} (the peer of {d.node}[{d.port}])",
                                    d.source, d.line)
            if d.rport > remote.num_ports:
                raise TopologyError(f"remote port {d.rid}[{d.rport}] is out of range: "
                                    f"{d.rid!r} has ports 1..{remote.num_ports}", d.source, d.line)
            if (d.node, d.port) == (d.rid, d.rport):
                raise TopologyError(f"port {d.node}[{d.port}] is cabled to itself", d.source,
                                    d.line)
        claims: dict[tuple[str, int], tuple[tuple[str, int], _Decl]] = {}
        for d in self.decls:
            here, there = (d.node, d.port), (d.rid, d.rport)
            for x, y in ((here, there), (there, here)):
                if x in claims and claims[x][0] != y:
                    prev_peer, prev = claims[x]
                    raise TopologyError(
                        f"conflicting cables: port {x[0]}[{x[1]}] is cabled to "
                        f"{y[0]}[{y[1]}] here but to {prev_peer[0]}[{prev_peer[1]}] at "
                        f"{prev.source}:{prev.line}", d.source, d.line)
                claims.setdefault(x, (y, d))
        # remote GUID hints must agree with the GUIDs the nodes got
        for d in self.decls:
            if d.rguid is None:
                continue
            remote = nodes[d.rid]
            actual = remote.port_guid(d.rport)
            if d.rguid != actual:
                raise TopologyError(
                    f"port GUID {d.rguid:x} given for {d.rid}[{d.rport}] does not match its GUID "
                    f"{actual:x}", d.source, d.line)
        links: list[LinkSpec] = []
        seen: set[frozenset] = set()
        origins = dict(self.origins)
        for d in self.decls:
            key = frozenset(((d.node, d.port), (d.rid, d.rport)))
            if key in seen:
                continue
            seen.add(key)
            other = self.own.get((d.rid, d.rport))
            rmasks = other.masks if other is not None else self.node_defaults[d.rid]
            width, speed = _active_rate(d.masks, rmasks, d)
            link = LinkSpec(d.node, d.port, d.rid, d.rport, width, speed)
            links.append(link)
            origins.setdefault(("link", link), (d.source, d.line))
        sm_node, sm_port = self.choose_sm()
        topo = Topology(nodes=nodes, links=links, sm_node=sm_node, sm_port=sm_port, source=source,
                        warnings=list(self.warnings))
        topo._origins = origins
        topo.validate()
        return topo

    def choose_sm(self) -> tuple[str, int]:
        if self.initiated_port_guid is not None:
            for node in self.nodes.values():
                if node.kind != "hca":
                    continue
                for p, g in node.port_guids.items():
                    if g == self.initiated_port_guid and (node.name, p) in self.own:
                        return node.name, p
        for d in self.decls:
            for name, port in ((d.node, d.port), (d.rid, d.rport)):
                if self.nodes[name].kind == "hca":
                    return name, port
        for node in self.nodes.values():
            if node.kind == "hca":
                return node.name, 1
        return next(iter(self.nodes)), 0


def _int_field(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _hex_guid(text: str) -> int | None:
    m = _HEX_RE.match(text.strip())
    return int(m.group(1), 16) if m else None


def _parse_node_desc(comment: str) -> tuple[str, str]:
    """ibsim's parse_node_desc: a quoted description, or the text up to the switch/LID notes."""
    s = comment.lstrip()
    if s.startswith('"'):
        end = s.find('"', 1)
        if end < 0:
            return s[1:], ""
        return s[1:end], s[end + 1:]
    for marker in (" enhanced port ", " base port ", " lid ", " lmc "):
        i = s.find(marker)
        if i >= 0:
            return s[:i].rstrip(), s[i:]
    return s.rstrip(), ""


def _active_rate(a: tuple[int, int, int, int], b: tuple[int, int, int, int],
                 d: _Decl) -> tuple[str, str]:
    """The active width and speed of a cable, as ibsim's link_ports computes them."""
    w = a[0] & b[0]
    width = next((name for name in _W_PRIORITY if w & _W_BIT[name]), None)
    if width is None:
        raise TopologyError(f"cable {d.node}[{d.port}] <-> {d.rid}[{d.rport}]: the two ends "
                            f"enable no common width (masks {a[0]} and {b[0]})", d.source, d.line)
    s = a[1] & b[1]
    if not s:
        raise TopologyError(f"cable {d.node}[{d.port}] <-> {d.rid}[{d.rport}]: the two ends "
                            f"enable no common speed (masks {a[1]} and {b[1]})", d.source, d.line)
    e = a[2] & b[2]
    if e:
        speed = next(name for name in ("NDR", "HDR", "EDR", "FDR") if e & _E_BIT[name])
    elif a[3] & b[3]:
        speed = "FDR10"
    else:
        speed = next(name for name in ("QDR", "DDR", "SDR") if s & _S_BIT[name])
    return width, speed


def parse_topology(text: str, *, source: str = "<string>",
                   base_dir: str | None = None) -> Topology:
    """Parse an ibsim net file or ibnetdiscover dump.

    ``source`` names the text in error messages; ``base_dir`` is where relative ``include`` paths
    are resolved (default: the directory of ``source`` if it is a file, else the current
    directory).
    """
    parser = _Parser()
    if base_dir is None:
        base_dir = os.path.dirname(source) if os.path.isfile(source) else "."
    if os.path.isfile(source):
        parser.include_stack.append(os.path.realpath(source))
    parser.parse_text(text, source, base_dir or ".")
    return parser.finish(source)


_SPEC_RE = re.compile(r"([A-Za-z]+):(.*)\Z", re.S)


def load_topology(arg) -> Topology:
    """A Topology from a Topology (returned as is), a file path, or a generator spec."""
    if isinstance(arg, Topology):
        return arg
    if isinstance(arg, os.PathLike):
        arg = os.fspath(arg)
    if not isinstance(arg, str):
        raise TypeError(f"expected a Topology, a path or a generator spec, not "
                        f"{type(arg).__name__}")
    if os.path.isfile(arg):
        try:
            with open(arg, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            raise TopologyError(f"cannot read: {e.strerror}", arg) from None
        return parse_topology(text, source=arg, base_dir=os.path.dirname(arg) or ".")
    if _SPEC_RE.match(arg.strip()):
        return generate(arg)
    raise TopologyError("no such topology file, and not a generator spec (single:N, linear:N, "
                        "fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS_PER_PAIR)", arg)


# ================================================================================================
# Generators
# ================================================================================================

class _Builder:
    """Builds a topology the way ibsim would allocate GUIDs for the equivalent net file."""

    def __init__(self, source: str):
        self.topo = Topology(source=source)
        self.guids = {"switch": _SWITCH_GUID_BASE, "hca": _HCA_GUID_BASE}

    def node(self, kind: str, name: str, nports: int) -> None:
        guid = self.guids[kind]
        if kind == "switch":
            self.guids[kind] += 1
            port_guids = {0: guid}
        else:
            self.guids[kind] += nports + 1
            port_guids = {i: guid + i for i in range(1, nports + 1)}
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
