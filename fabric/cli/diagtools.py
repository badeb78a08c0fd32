"""``ibfab ibstat``, ``iblinkinfo``, ``ibroute``, ``ibtracert`` and ``smpquery``: infiniband-diags'
commands, each reading the fabric with SMPs sent from an HCA port (the SM's unless ``--via``; ibstat
from the node's own), each printing what the real tool prints (:mod:`fabric.diagfmt`,
:mod:`fabric.diaglinks`, :mod:`fabric.diagroutes`).
"""

from __future__ import annotations

import itertools
import os
import random
import sys

from .common import client, topology_sm


def _fail(cmd: str, text: str, code: int = 1) -> int:
    print(f"ibfab {cmd}: {text}", file=sys.stderr)
    return code


class SmpPort:
    """SMP Gets from one HCA port of a running fabric, sent in batches (the ``smps`` RPC). An
    address is ``("lid", LID)`` or ``("dr", path)``; an answer is the attribute data, or None
    where none came or its status was not 0."""

    BATCH = 256  # the most one call has in flight (fabric.host.ops.MAX_SMPS)
    _tids = itertools.count(((os.getpid() & 0xFFFF) << 40) | (random.getrandbits(16) << 24))

    def __init__(self, fc, node: str, port: int, timeout: float = 1.0):
        self.fc, self.node, self.port, self.timeout = fc, node, port, timeout

    def _smp(self, attr_id: int, attr_mod: int, addr):
        from .. import wire as w
        from ..sm.engine import dr_smp

        tid = next(self._tids) & 0xFFFFFFFFFFFFFFFF
        if addr[0] == "dr":
            return dr_smp(w.GET, attr_id, addr[1], attr_mod=attr_mod).replace(tid=tid), None
        return w.new_mad(w.SMPLid, method=w.GET, tid=tid, attr_id=attr_id, attr_mod=attr_mod), addr[1]

    def query(self, reqs: list) -> list:
        from .. import wire as w

        out = []
        for i in range(0, len(reqs), self.BATCH):
            smps, dlids = zip(*(self._smp(*r) for r in reqs[i:i + self.BATCH]))
            got = self.fc.call(self.node, "smps", port=self.port, smps=[m.pack() for m in smps],
                               dlids=list(dlids), timeout=self.timeout)
            for raw in got:
                resp = w.parse_mad(raw) if raw is not None else None
                out.append(bytes(resp.data) if resp is not None and resp.status == 0 else None)
        return out

    def one(self, attr_id: int, addr, attr_mod: int = 0):
        return self.query([(attr_id, attr_mod, addr)])[0]


def _source(fc, via: str | None) -> tuple[str, int]:
    """The HCA port the SMPs leave from: ``via``'s port 1, or the SM's port."""
    sm = fc.info.data.get("sm") or {}
    node = via or sm.get("node") or topology_sm(fc.info)[0]
    return node, (sm.get("port") or 1) if node == sm.get("node") else 1


def _lid_of(fc, node: str) -> int:
    d = fc.devices()[node]
    return d["lid"] if d["type"] == "switch" else next((p["lid"] for p in d["ports"] if p["lid"]), 0)


def _topology(fc):
    from ..topology import load_topology

    return load_topology(fc.info.topology_path)


def _int(text: str) -> int:
    """A number as the diags read one (strtoul base 0): 0x10, 16."""
    return int(text, 16) if text.lower().startswith("0x") else int(text, 10)


# -- ibstat -----------------------------------------------------------------------------------------


def cmd_ibstat(args) -> int:
    """The HCA's NodeInfo and each port's PortInfo, read with SMPs from its own port (hop count 0)."""
    from .. import wire as w
    from ..devices.hca import FW_VERSION
    from ..diagfmt import NODE_INFO, field, ibstat_ca, ibstat_port

    with client(args.name) as fc:
        topo = _topology(fc)
        if args.node is not None and topo.nodes[args.node].kind != "hca":
            return _fail("ibstat", f"{args.node} is a {topo.nodes[args.node].kind}, not a CA: ibstat shows CAs", 2)
        cas = [args.node] if args.node is not None else [n.name for n in topo.hcas()]
        if args.list:
            print("\n".join(cas))
            return 0
        for ca in cas:
            ni = SmpPort(fc, ca, 1).one(w.ATTR_NODE_INFO, ("dr", ()))
            if ni is None:
                return _fail("ibstat", f"{ca}: no answer to NodeInfo")
            nports = field(NODE_INFO, "NumPorts", ni)
            if args.port is not None and not 1 <= args.port <= nports:
                return _fail("ibstat", f"CA '{ca}' has no port number {args.port} - max ({nports})", 2)
            ports = []
            for num in ([args.port] if args.port is not None else range(1, nports + 1)):
                pni, pi = SmpPort(fc, ca, num).query([(w.ATTR_NODE_INFO, 0, ("dr", ())),
                                                       (w.ATTR_PORT_INFO, num, ("dr", ()))])
                if pni is None or pi is None:
                    return _fail("ibstat", f"{ca} port {num}: no answer to NodeInfo or PortInfo")
                ports.append((num, pi, field(NODE_INFO, "PortGuid", pni)))
            if args.port_list:
                lines = [f"0x{guid:016x}" for _n, _pi, guid in ports if guid]
            elif args.port is not None:
                lines = [f"CA: '{ca}'", *ibstat_port(*ports[0], alone=True)]
            else:
                lines = ibstat_ca(ca, ni, FW_VERSION)
                if not args.short:
                    lines += [line for p in ports for line in ibstat_port(*p)]
            print("\n".join(lines))
    return 0


# -- smpquery ---------------------------------------------------------------------------------------

_ATTRS = {"nodeinfo": "nodeinfo", "ni": "nodeinfo", "nodedesc": "nodedesc", "nd": "nodedesc",
          "portinfo": "portinfo", "pi": "portinfo", "switchinfo": "switchinfo", "si": "switchinfo"}


def _dr_path(text: str) -> tuple:
    """A directed route as the diags write one, ``0,1,3``: the exit ports after the local node."""
    try:
        hops = [int(x, 0) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"bad directed route {text!r} (ports after 0, comma-separated: 0,1,3)") from None
    if hops[0] != 0 or not all(0 <= h <= 254 for h in hops) or len(hops) > 64:
        raise ValueError(f"bad directed route {text!r} (it starts at 0, the local node: 0,1,3)")
    return tuple(hops[1:])


def cmd_smpquery(args) -> int:
    from .. import wire as w
    from ..diagfmt import dr_path_str, smpquery

    attr = _ATTRS[args.attr.lower()]
    attr_id = {"nodeinfo": w.ATTR_NODE_INFO, "nodedesc": w.ATTR_NODE_DESC, "portinfo": w.ATTR_PORT_INFO,
               "switchinfo": w.ATTR_SWITCH_INFO}[attr]
    port = args.port if attr == "portinfo" and args.port is not None else 0
    with client(args.name) as fc:
        via, via_port = _source(fc, args.via)
        if args.direct:
            try:
                path = _dr_path(args.node)
            except ValueError as exc:
                return _fail("smpquery", str(exc), 2)
            addr, where = ("dr", path), dr_path_str(path)
        else:
            lid = _lid_of(fc, args.node)
            if not lid:
                return _fail("smpquery", f"{args.node} has no LID (is the subnet up?)")
            addr, where = ("lid", lid), f"Lid {lid}"
        data = SmpPort(fc, via, via_port).one(attr_id, addr, port)
    if data is None:
        return _fail("smpquery", f"no answer to {attr} from {where}")
    print("\n".join(smpquery(attr, where, data, port)))
    return 0


# -- ibroute ----------------------------------------------------------------------------------------


def cmd_ibroute(args) -> int:
    """A switch's LFT (or MFT, -M) read with LID-routed SMPs, each destination looked up as ibroute does."""
    from .. import wire as w
    from ..diagfmt import NODE_INFO, SWITCH_INFO, field
    from ..diagroutes import (
        LFT_BLOCK,
        MCAST_FIRST,
        MFT_BLOCK,
        ibroute_multicast,
        ibroute_unicast,
        mft_chunks,
        multicast_range,
        unicast_range,
    )

    with client(args.name) as fc:
        lid = _lid_of(fc, args.node)
        if not lid:
            return _fail("ibroute", f"{args.node} has no LID (is the subnet up?)")
        smps = SmpPort(fc, *_source(fc, args.via))
        sw = ("lid", lid)
        ni, nd = smps.query([(w.ATTR_NODE_INFO, 0, sw), (w.ATTR_NODE_DESC, 0, sw)])
        if ni is None or nd is None:
            return _fail("ibroute", f"no answer to NodeInfo from Lid {lid}")
        if field(NODE_INFO, "NodeType", ni) != w.NODE_TYPE_SWITCH:
            return _fail("ibroute", f"{args.node} (Lid {lid}) is not a switch", 2)
        si = smps.one(w.ATTR_SWITCH_INFO, sw)
        if si is None:
            return _fail("ibroute", f"no answer to SwitchInfo from Lid {lid}")
        start, end = args.start or 0, args.end or 0
        if args.multicast:
            _s, _e, blocks = multicast_range(si, start, end, args.all)
            keys = [(b, c) for b in blocks for c in range(mft_chunks(field(NODE_INFO, "NumPorts", ni)))]
            got = smps.query([(w.ATTR_MFT, (b - MCAST_FIRST // MFT_BLOCK) | c << 28, sw) for b, c in keys])
            if any(g is None for g in got):
                return _fail("ibroute", f"no answer to a MulticastForwardingTable Get from Lid {lid}")
            mft = {k: [int.from_bytes(g[i:i + 2], "big") for i in range(0, 64, 2)] for k, g in zip(keys, got)}
            lines = ibroute_multicast(f"Lid {lid}", ni, nd, si, mft, start, end, all_lids=args.all,
                                      brief=args.no_dests)
        else:
            last, blocks = unicast_range(field(SWITCH_INFO, "LinearFdbTop", si), start, end)
            got = smps.query([(w.ATTR_LFT, b, sw) for b in blocks])
            if any(g is None for g in got):
                return _fail("ibroute", f"no answer to a LinearForwardingTable Get from Lid {lid}")
            lft = {b * LFT_BLOCK + i: port for b, g in zip(blocks, got) for i, port in enumerate(g)}
            nports = field(NODE_INFO, "NumPorts", ni)
            dests = [] if args.no_dests else sorted(x for x, port in lft.items()
                                                    if port <= nports and start <= x <= last)
            answers = smps.query([(a, 0, ("lid", x)) for x in dests
                                  for a in (w.ATTR_NODE_DESC, w.ATTR_PORT_INFO, w.ATTR_NODE_INFO)])
            found = {x: tuple(answers[3 * i:3 * i + 3]) for i, x in enumerate(dests)}
            lines = ibroute_unicast(f"Lid {lid}", ni, nd, si, lft, start, end,
                                    lambda x: None if None in found.get(x, (None,)) else found[x],
                                    all_lids=args.all, brief=args.no_dests)
    print("\n".join(lines))
    return 0


# -- ibtracert --------------------------------------------------------------------------------------


def cmd_ibtracert(args) -> int:
    """The route from SRC to DST through the switches' LFTs, walked with directed-route SMPs."""
    from ..diagroutes import TraceError, Tracer

    with client(args.name) as fc:
        slid, dlid = _lid_of(fc, args.src), _lid_of(fc, args.dst)
        if not slid or not dlid:
            return _fail("ibtracert", f"{args.src if not slid else args.dst} has no LID (is the subnet up?)")
        smps = SmpPort(fc, *_source(fc, args.via))
        tracer = Tracer(smps.query)
        try:
            tracer.trace(slid, dlid)
        except TraceError as exc:
            print("\n".join(tracer.lines), end="\n" if tracer.lines else "")
            return _fail("ibtracert", f"{exc}; no route from Lid {slid} to Lid {dlid}")
    print("\n".join(tracer.lines))
    return 0


# -- iblinkinfo -------------------------------------------------------------------------------------


def cmd_iblinkinfo(args) -> int:
    """Every link of the fabric, from one directed-route discovery."""
    from ..diaglinks import iblinkinfo
    from ..rpc import RpcError

    with client(args.name) as fc:
        via, port = _source(fc, args.via)
        try:
            data = fc.call(via, "discover", port=port, timeout=60.0)
        except RpcError as exc:
            return _fail("iblinkinfo", f"discovery from {via} failed: {exc}")
        if data is None:
            return _fail("iblinkinfo", f"discovery from {via} port {port} did not finish")
        topo = _topology(fc)
    start = next(n["guid"] for n in data["nodes"] if not n["path"])
    guid = None
    if args.node is not None:
        guid = topo.nodes[args.node].node_guid
        if all(n["guid"] != guid for n in data["nodes"]):
            return _fail("iblinkinfo", f"{args.node} was not found by the discovery from {via}")
    only = "switch" if args.switches_only else "hca" if args.cas_only else None
    sys.stdout.write(iblinkinfo(data, start, only=only, node_guid=guid, down_only=args.down,
                                line_mode=args.line, additional=args.additional))
    return 0


def register(sub, common) -> None:
    via_help = "HCA to send the SMPs from (default: the SM's)"
    st = common.add("ibstat", cmd_ibstat, "a CA's NodeInfo and PortInfo, read with SMPs from its own port, "
                                          "printed as ibstat prints them")
    st.add_argument("node", nargs="?", help="the CA (HCA); default: every CA of the fabric")
    st.add_argument("port", nargs="?", type=int, help="one port (printed as ibstat CA PORT prints it)")
    st.add_argument("-s", "--short", action="store_true", help="the CA only, not its ports")
    st.add_argument("-l", "--list", action="store_true", help="the names of the CAs only")
    st.add_argument("-p", "--port-list", action="store_true", help="the port GUIDs only")

    lk = common.add("iblinkinfo", cmd_iblinkinfo, "every link's state, width and speed and the port at its "
                                                  "other end, as iblinkinfo prints them (one DR discovery)")
    lk.add_argument("-S", "-G", "--switch", dest="node", default=None, metavar="NODE",
                    help="only this node's ports (any name of it: id, description, GUID, LID)")
    lk.add_argument("--switches-only", action="store_true", help="only switches")
    lk.add_argument("--cas-only", action="store_true", help="only CAs")
    lk.add_argument("-l", "--line", action="store_true", help="one line per link, with GUIDs and names")
    lk.add_argument("-d", "--down", action="store_true", help="only ports that are Down")
    lk.add_argument("-p", "--additional", action="store_true", help="also each port's HOQ life and VL stall count")
    lk.add_argument("--via", default=None, help="HCA to discover from (default: the SM's)")

    rt = common.add("ibroute", cmd_ibroute, "a switch's forwarding table read with SMPs, as ibroute prints it")
    rt.add_argument("node", metavar="SWITCH", help="the switch (any name of it: id, description, GUID, LID)")
    rt.add_argument("start", nargs="?", type=_int, help="first LID shown (0x10 or 16)")
    rt.add_argument("end", nargs="?", type=_int, help="last LID shown")
    rt.add_argument("-M", "--multicast", action="store_true", help="the multicast forwarding table")
    rt.add_argument("-a", "--all", action="store_true", help="every LID, also those with no valid port")
    rt.add_argument("-n", "--no-dests", action="store_true", help="do not look up what is at each LID")
    rt.add_argument("--via", default=None, help=via_help)

    tr = common.add("ibtracert", cmd_ibtracert, "the route between two ports through the switches' LFTs, "
                                                "walked with SMPs, as ibtracert prints it")
    tr.add_argument("src", help="source node (any name of it: id, description, GUID, LID)")
    tr.add_argument("dst", help="destination node")
    tr.add_argument("--via", default=None, help=via_help)

    sq = common.add("smpquery", cmd_smpquery, "one SMP attribute of a node, as smpquery prints it")
    sq.add_argument("attr", choices=sorted(_ATTRS), type=str.lower,
                    help="nodeinfo (NI), nodedesc (ND), portinfo (PI) or switchinfo (SI)")
    sq.add_argument("node", help="the node (any name of it), or with -D a directed route from --via: 0,1,3")
    sq.add_argument("port", nargs="?", type=int, help="for portinfo: the port (default 0: the one the SMP enters)")
    sq.add_argument("-D", "--direct", action="store_true", help="NODE is a directed route (0,1,3)")
    sq.add_argument("--via", default=None, help=via_help)
