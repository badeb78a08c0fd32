"""``ibroute`` and ``ibtracert`` over SMPs: a switch's forwarding tables, and the path between two
ports hop by hop through the switches' LFTs, printed as infiniband-diags prints them.

Both are sans-IO: they are given ``query``, which sends a batch of SMP Gets and gives each one's
attribute data (None where none came or the status was not 0). An address is ``("lid", LID)`` or
``("dr", path)``, a directed route from the querying port.
"""

from __future__ import annotations

from . import wire as w
from .diagfmt import NODE_INFO, NODE_TYPE, PORT_INFO, SWITCH_INFO, field, node_desc

LFT_BLOCK = 64
MFT_BLOCK = 32
MCAST_FIRST = 0xC000
UCAST_LAST = 0xBFFF
MCAST_LAST = 0xFFFE
MAXHOPS = 63


# -- ibroute ----------------------------------------------------------------------------------------


def unicast_range(top: int, start: int, end: int) -> tuple[int, list[int]]:
    """The last LID shown and the LFT blocks read, as ibroute reckons them (its last block is
    ALIGN(end, 64) / 64 exclusive: with the end at a multiple of 64, that LID's block is not read)."""
    if not end or end > top:
        end = top
    end = min(end, UCAST_LAST)
    return end, list(range(start // LFT_BLOCK, -(-end // LFT_BLOCK)))


class _Destinations:
    """ibroute's ``dump_lid``: what is at each LID, the LIDs of one port's LMC range said once."""

    def __init__(self, lookup):
        self.lookup = lookup  # LID -> (NodeDescription, PortInfo, NodeInfo) data, or None
        self.base = self.last = 0
        self.port_guid = 0

    def __call__(self, lid: int, valid: bool) -> str:
        if lid <= self.last:
            if not valid:
                return f": (path #{lid - self.base} - illegal port)"
            n = self.last - self.base + 1
            if not self.port_guid:
                return f": (path #{lid - self.base + 1} out of {n})"
            return f": (path #{lid - self.base + 1} out of {n}: portguid 0x{self.port_guid:016x})"
        if not valid:
            return ": (illegal port)"
        self.port_guid = 0
        got = self.lookup(lid)
        if got is None:
            return ": (unknown node and type)"
        nd, pi, ni = got
        self.port_guid = field(NODE_INFO, "PortGuid", ni)
        lmc = field(PORT_INFO, "LMC", pi)
        if lmc:
            self.base = field(PORT_INFO, "Lid", pi)
            self.last = self.base + (1 << lmc) - 1
        kind = NODE_TYPE.get(field(NODE_INFO, "NodeType", ni), f"?({field(NODE_INFO, 'NodeType', ni)})?")
        return f": ({kind} portguid 0x{self.port_guid:016x}: '{node_desc(nd)}')"


def ibroute_unicast(where: str, ni: bytes, nd: bytes, si: bytes, lft: dict, start: int, end: int, lookup, *,
                    all_lids: bool = False, brief: bool = False) -> list[str]:
    """``lft``: {LID: out port} for the blocks :func:`unicast_range` names."""
    nports = field(NODE_INFO, "NumPorts", ni)
    end, blocks = unicast_range(field(SWITCH_INFO, "LinearFdbTop", si), start, end)
    out = [(f"Unicast lids [0x{start:x}-0x{end:x}] of switch {where} guid 0x{field(NODE_INFO, 'Guid', ni):016x} "
            f"({node_desc(nd)}):"), "  Lid  Out   Destination", "       Port     Info "]
    dest = _Destinations(lookup)
    n = 0
    for block in blocks:
        for lid in range(max(block * LFT_BLOCK, start), min(block * LFT_BLOCK + LFT_BLOCK, end + 1)):
            port = lft.get(lid, 0)
            valid = port <= nports
            if not valid and not all_lids:
                continue
            out.append(f"0x{lid:04x} {port:03d} {'' if brief else dest(lid, valid)}")
            n += 1
    out.append(f"{n} {'' if all_lids else 'valid '}lids dumped ")
    return out


def multicast_range(si: bytes, start: int, end: int, all_lids: bool) -> tuple[int, int, list[int]]:
    """The first and last MLID shown and the MFT blocks read (absolute, MLID // 32), as ibroute -M."""
    cap, top = field(SWITCH_INFO, "McastFdbCap", si), field(SWITCH_INFO, "MulticastFDBTop", si)
    if not end or end > MCAST_FIRST + cap - 1:
        end = MCAST_FIRST + cap - 1
    if not all_lids and top and top < end and top >= MCAST_FIRST - 1:
        end = top
    start = max(start, MCAST_FIRST) if start else MCAST_FIRST
    end = min(end, MCAST_LAST)
    return start, end, list(range(start // MFT_BLOCK, end // MFT_BLOCK + 1))


def mft_chunks(nports: int) -> int:
    """How many 16-port slices of the MFT a switch of ``nports`` ports (and port 0) has."""
    return (nports + 1 + 15) // 16


def ibroute_multicast(where: str, ni: bytes, nd: bytes, si: bytes, mft: dict, start: int, end: int, *,
                      all_lids: bool = False, brief: bool = False) -> list[str]:
    """``mft``: {(block, chunk): 32 port masks} for the blocks :func:`multicast_range` names."""
    nports = field(NODE_INFO, "NumPorts", ni)
    start, end, blocks = multicast_range(si, start, end, all_lids)
    out = [(f"Multicast mlids [0x{start:x}-0x{end:x}] of switch {where} guid "
            f"0x{field(NODE_INFO, 'Guid', ni):016x} ({node_desc(nd)}):")]
    if brief:
        out.append(" MLid       Port Mask")
    else:
        if nports > 9:
            out.append("            " + "".join(f"{' ' if i % 10 else i // 10} " for i in range(nports + 1)))
        out.append("     Ports: " + "".join(f"{i % 10} " for i in range(nports + 1)))
        out.append(" MLid")
    chunks = mft_chunks(nports)
    n = 0
    for block in blocks:
        masks = [mft.get((block, c), [0] * MFT_BLOCK) for c in range(chunks)]
        for mlid in range(max(block * MFT_BLOCK, start), min(block * MFT_BLOCK + MFT_BLOCK, end + 1)):
            row = [m[mlid % MFT_BLOCK] for m in masks]
            if not any(row) and not all_lids:
                continue
            if brief:
                text = "".join(f"{m:04x}" for m in row)
            else:
                text = "".join("x " if row[i // 16] >> (i % 16) & 1 else "  " for i in range(nports + 1))
            out.append(f"0x{mlid:04x}      {text}")
            n += 1
    out.append(f"{n} {'' if all_lids else 'valid '}mlids dumped ")
    return out


# -- ibtracert --------------------------------------------------------------------------------------

_TYPE = {1: "ca", 2: "switch", 3: "router"}


class TraceError(Exception):
    """The walk stopped (the message says where, as ibtracert's warning does)."""


class _Port:
    """What ibtracert knows of the node and port an address reaches (NodeInfo, NodeDescription,
    and PortInfo of that port)."""

    def __init__(self, ni: bytes, nd: bytes, pi: bytes):
        self.guid = field(NODE_INFO, "Guid", ni)
        self.type = field(NODE_INFO, "NodeType", ni)
        self.nports = field(NODE_INFO, "NumPorts", ni)
        self.port_guid = field(NODE_INFO, "PortGuid", ni)
        self.portnum = field(NODE_INFO, "LocalPort", ni)
        self.lid, self.lmc = field(PORT_INFO, "Lid", pi), field(PORT_INFO, "LMC", pi)
        self.state = field(PORT_INFO, "LinkState", pi)
        self.desc = "".join(c if c.isprintable() else " " for c in node_desc(nd))

    @property
    def is_switch(self) -> bool:
        return self.type == w.NODE_TYPE_SWITCH

    def lids(self) -> str:
        return f"lid {self.lid}-{self.lid + (1 << self.lmc) - 1}"

    def kind(self) -> str:
        return _TYPE.get(self.type, "???")


class Tracer:
    """ibtracert's walk: from the querying port to the source by directed route, then on from the
    source one hop at a time, each switch's LFT entry for the destination LID giving the next."""

    def __init__(self, query):
        self.query = query
        self.enhanced_port0 = False
        self.top = 0
        self.lines: list[str] = []  # what is shown so far (also when the walk then stops)

    def node(self, addr) -> _Port | None:
        ni, nd, pi = self.query([(w.ATTR_NODE_INFO, 0, addr), (w.ATTR_NODE_DESC, 0, addr),
                                 (w.ATTR_PORT_INFO, 0, addr)])
        return None if ni is None or nd is None or pi is None else _Port(ni, nd, pi)

    def out_port(self, path: list, dlid: int) -> int:
        """The LFT entry for ``dlid`` of the switch at ``path``, or -1."""
        si, lft = self.query([(w.ATTR_SWITCH_INFO, 0, ("dr", tuple(path))),
                              (w.ATTR_LFT, dlid // LFT_BLOCK, ("dr", tuple(path)))])
        if si is None:
            return -1
        self.top = field(SWITCH_INFO, "LinearFdbTop", si)
        self.enhanced_port0 = bool(field(SWITCH_INFO, "EnhancedPort0", si))
        if dlid >= field(SWITCH_INFO, "LinearFdbCap", si) and dlid > self.top or lft is None:
            return -1
        return lft[dlid % LFT_BLOCK]

    def _inactive(self, p: _Port) -> bool:
        return p.state != 4 and (not p.is_switch or self.enhanced_port0)  # a switch's port 0 is up

    def find_route(self, path: list, dlid: int, dump: bool) -> list:
        """From the port at ``path`` to the one holding ``dlid``: the path to it. With ``dump``,
        each hop is added to :attr:`lines`."""
        src, dst = self.node(("dr", tuple(path))), self.node(("lid", dlid))
        if src is None or dst is None:
            raise TraceError("can't reach to/from ports")
        path, lines = list(path), self.lines if dump else []
        node = port = src
        if dump:
            lines.append(self._end("From", node, port))
        out = nxt_out = 255
        if node.is_switch:
            nxt_out = self.out_port(path, dlid)
            if nxt_out < 0 or nxt_out > node.nports:
                raise self._bad_table(node, dlid, nxt_out)
        for _hop in range(MAXHOPS + 1):
            if self._inactive(port):
                raise TraceError(f'Bad port state found: node "{node.desc}" port {port.portnum} state {port.state}')
            if port.port_guid == dst.port_guid:
                break
            if node.is_switch:
                out = nxt_out
                if len(path) >= MAXHOPS:
                    raise TraceError("Direct path too long!")
                path.append(out)
                nxt = self.node(("dr", tuple(path)))
                if nxt is None:
                    raise TraceError(f"can't reach port at DR path {','.join(map(str, [0, *path]))}")
                if out == 0:
                    if nxt.port_guid != dst.port_guid:
                        raise self._bad_table(node, dlid, out)
                    break
            else:
                out = port.portnum
                if port.port_guid != src.port_guid:
                    raise TraceError(f"can't continue: reached CA or router port {port.port_guid:x}, lid {port.lid}")
                back = path.pop() if path else None  # from the source CA: one hop back to its switch
                if back is None and port.portnum:
                    path.append(port.portnum)
                nxt = self.node(("dr", tuple(path)))
                if nxt is None:
                    raise TraceError(f"can't reach port at DR path {','.join(map(str, [0, *path]))}")
                if back is not None:
                    nxt.portnum = back  # the switch's port, seen from the CA's side
            if nxt.is_switch:
                nxt_out = self.out_port(path, dlid)
                if nxt_out < 0 or nxt_out > nxt.nports:
                    raise self._bad_table(nxt, dlid, nxt_out)
            port = nxt
            if self._inactive(port):
                raise TraceError(f'Bad out port state found: node "{nxt.desc}" outport {out} state {port.state}')
            node = nxt
            if dump:
                lines.append(f"[{out}] -> {node.kind()} port {{0x{port.port_guid:016x}}}[{port.portnum}] "
                             f"{port.lids()} \"{node.desc}\"")
        else:
            raise TraceError(f"no route found after {MAXHOPS} hops")
        if dump:
            lines.append(self._end("To", node, port))
        return path

    def trace(self, slid: int, dlid: int) -> list[str]:
        """ibtracert SLID DLID: first the way to the source (not shown), then the route."""
        self.find_route(self.find_route([], slid, False), dlid, True)
        return self.lines

    @staticmethod
    def _end(prompt: str, node: _Port, port: _Port) -> str:
        return (f"{prompt} {node.kind()} {{0x{node.guid:016x}}} portnum {0 if node.is_switch else port.portnum} "
                f"{port.lids()} \"{node.desc}\"")

    def _bad_table(self, node: _Port, dlid: int, out: int) -> TraceError:
        return TraceError(f'Bad forwarding table entry found at: node "{node.desc}" lid entry {dlid} is {out} '
                          f"(top {self.top})")
