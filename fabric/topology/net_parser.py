"""The net-file parser: ibsim net files and ibnetdiscover dumps into a :class:`Topology`.

The output of the real ``ibnetdiscover`` (infiniband-diags) is the ibsim net format with more
header keywords, GUIDs in parentheses and ``#`` comments carrying descriptions, LIDs and link
rates; one parser reads both. ibsim's own parser (``ibsim/sim_net.c``) is the reference, and
``docs/topology.md`` lists where this one departs from it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .ibsim import (COMMENT_SPEED_ENABLED, COMMENT_WIDTH_ENABLED, DEFAULT_MASKS, FIRST_GUID,
                    SPEED_ENABLED_BIT, SPEED_EXT_ENABLED_BIT, WIDTH_ENABLED_BIT, WIDTH_PRIORITY,
                    default_port_guids, guids_taken)
from .model import MAX_PORTS, LinkSpec, NodeSpec, Topology, TopologyError, _check_name

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
        self.guids = dict(FIRST_GUID)
        self.absguids = dict(self.guids)
        self.vendid = 0
        self.devid = 0
        self.sysimgguid = 0
        self.switch_port0_guid: int | None = None
        self.netwidth, self.netspeed, self.netspeedext = DEFAULT_MASKS[:3]
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
        self.guids[kind] += guids_taken(kind, nports)
        port_guids = default_port_guids(kind, guid, nports)
        if kind == "switch" and self.switch_port0_guid:  # ibnetdiscover's switchguid=G(P)
            port_guids[0] = self.switch_port0_guid
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
                if lanes and lanes.group(1) + "x" in WIDTH_ENABLED_BIT:
                    w = WIDTH_ENABLED_BIT[lanes.group(1) + "x"]
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
                if val.upper() in SPEED_ENABLED_BIT:
                    s = SPEED_ENABLED_BIT[val.upper()]
                    self.warnings.append(f"{source}:{lineno}: s={val} is not ibsim syntax; write "
                                         f"s={s}")
                else:
                    v = _c_int(val)
                    if v is None or v[1] or not 0 <= v[0] <= 7:
                        raise self.err(f"bad speed option s={val}: ibsim's LinkSpeedEnabled mask,"
                                       " 1..7 (1=SDR 2=DDR 4=QDR)", source, lineno)
                    s = v[0] or SPEED_ENABLED_BIT["QDR"]  # ibsim: 0 means QDR
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
                if lanes in COMMENT_WIDTH_ENABLED:
                    w = COMMENT_WIDTH_ENABLED[lanes]
                else:
                    self.warnings.append(f"{source}:{lineno}: unknown link width {lanes}x ignored")
                if name in COMMENT_SPEED_ENABLED:
                    ns, ne, nf = COMMENT_SPEED_ENABLED[name]
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
    width = next((name for name in WIDTH_PRIORITY if w & WIDTH_ENABLED_BIT[name]), None)
    if width is None:
        raise TopologyError(f"cable {d.node}[{d.port}] <-> {d.rid}[{d.rport}]: the two ends "
                            f"enable no common width (masks {a[0]} and {b[0]})", d.source, d.line)
    s = a[1] & b[1]
    if not s:
        raise TopologyError(f"cable {d.node}[{d.port}] <-> {d.rid}[{d.rport}]: the two ends "
                            f"enable no common speed (masks {a[1]} and {b[1]})", d.source, d.line)
    e = a[2] & b[2]
    if e:
        speed = next(name for name in ("NDR", "HDR", "EDR", "FDR")
                     if e & SPEED_EXT_ENABLED_BIT[name])
    elif a[3] & b[3]:
        speed = "FDR10"
    else:
        speed = next(name for name in ("QDR", "DDR", "SDR") if s & SPEED_ENABLED_BIT[name])
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
