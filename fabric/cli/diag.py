"""``ibfab`` commands shaped like infiniband-diags: ibnetdiscover, dump-fts, perfquery, saquery.
Each reads the fabric with real SMPs or GMPs sent from an HCA port (the SM's, unless ``--via``)."""

from __future__ import annotations

import os
import sys

from .common import client, topology_sm


def _discover(args, lfts: bool) -> dict:
    from ..rpc import RpcError

    with client(args.name) as fc:
        info = fc.info
        via = args.via or (info.data.get("sm") or {}).get("node")
        if via is None:
            topo_sm = topology_sm(info)
            via = topo_sm[0]
        port = args.port or ((info.data.get("sm") or {}).get("port") if via == (info.data.get("sm") or {}).get("node")
                             else 1) or 1
        try:
            data = fc.call(via, "discover", port=port, lfts=lfts, timeout=60.0)
        except (RpcError, KeyError) as exc:
            raise SystemExit(f"ibfab: discovery from {via} failed: {exc}")
    if data is None:
        raise SystemExit(f"ibfab: discovery from {via} port {port} did not finish")
    return data


def cmd_ibnetdiscover(args) -> int:
    from ..diag import format_ibnetdiscover

    sys.stdout.write(format_ibnetdiscover(_discover(args, lfts=False)))
    return 0


def cmd_dump_fts(args) -> int:
    from ..diag import format_dump_fts

    sys.stdout.write(format_dump_fts(_discover(args, lfts=True)))
    return 0


def _diag_name(field: str) -> str:
    """perfquery's names: port_xmit_data -> PortXmitData, vl15_dropped -> VL15Dropped."""
    special = {"vl15": "VL15", "qp1": "QP1"}
    return "".join(special.get(p, p.capitalize()) for p in field.split("_"))


def _lid_of(fc, node: str) -> int:
    d = fc.devices()[node]
    if d["type"] == "switch":
        return d["lid"]
    return next((p["lid"] for p in d["ports"] if p["lid"]), 0)


def _via(fc, args) -> str:
    if args.via:
        return args.via
    sm = fc.info.data.get("sm") or {}
    return sm.get("node") or topology_sm(fc.info)[0]


def _gmp(fc, via: str, dlid: int, mad) -> list:
    from ..rpc import RpcError

    try:
        got = fc.call(via, "gmp", dlid=dlid, mad=mad.pack() if hasattr(mad, "pack") else mad, timeout=2.0)
    except RpcError as exc:
        raise SystemExit(f"ibfab: {exc}")
    if got is None:
        raise SystemExit(f"ibfab: no answer from LID {dlid}")
    return got


def cmd_perfquery(args) -> int:
    """PortCounters (or --extended) of a node's port, read with a PMA Get; --reset clears them."""
    from .. import wire as w

    with client(args.name) as fc:
        lid = _lid_of(fc, args.node)
        if not lid:
            print(f"ibfab perfquery: {args.node} has no LID (is the subnet up?)", file=sys.stderr)
            return 1
        attr_cls, attr_id = ((w.PortCountersExtended, w.ATTR_PORT_COUNTERS_EXT) if args.extended
                             else (w.PortCounters, w.ATTR_PORT_COUNTERS))
        req = attr_cls(port_select=args.port, counter_select=0xFFFF if args.reset else 0)
        if args.reset and not args.extended:
            req = req.replace(counter_select2=0xFF)
        mad = w.new_mad(w.PMAMad, method=w.SET if args.reset else w.GET, tid=((os.getpid() & 0xFFFF) << 16) | 1,
                        attr_id=attr_id, data=w.put_attr(req, 192))
        resp = w.parse_mad(_gmp(fc, _via(fc, args), lid, mad)[0])
    if resp.status:
        print(f"ibfab perfquery: MAD status 0x{resp.status:04x}", file=sys.stderr)
        return 1
    attr = attr_cls.unpack(resp.data)
    title = "Port extended counters" if args.extended else "Port counters"
    print(f"# {title}: Lid {lid} port {args.port}")
    for f in attr_cls.FIELDS:
        if f.kind == "uint":
            name = _diag_name(f.name) + ":"
            val = getattr(attr, f.name)
            shown = f"0x{val:04x}" if f.name.startswith("counter_select") else str(val)
            print(f"{name:.<33}{shown}")
    return 0


def cmd_saquery(args) -> int:
    """SA queries from an HCA, like saquery: NodeRecords, a PathRecord, or multicast groups."""
    from ..mad import saclient

    with client(args.name) as fc:
        via = _via(fc, args)
        d = fc.devices()[via]
        sm_lid = next((p["sm_lid"] for p in d["ports"] if p["sm_lid"]), 0)
        if not sm_lid:
            print("ibfab saquery: no SM LID (is the subnet up?)", file=sys.stderr)
            return 1
        if args.what == "nodes":
            if len(args.args) > 1:
                print("ibfab saquery: nodes [NODE]", file=sys.stderr)
                return 2
            lid = None
            if args.args:  # one node's record, as `saquery NR LID`
                lid = next((p["lid"] for p in fc.devices()[args.args[0]]["ports"] if p["lid"]), 0)
                if not lid:
                    print(f"ibfab saquery: {args.args[0]} has no LID (is the subnet up?)", file=sys.stderr)
                    return 1
            _tid, mad = saclient.node_records(lid=lid)
        elif args.what == "path":
            if len(args.args) != 2:
                print("ibfab saquery path SRC DST", file=sys.stderr)
                return 2
            gids = []
            devices = fc.devices()
            for n in args.args:  # node names: resolved before the command runs (fabric.cli._name_nodes)
                port = next((p for p in devices[n]["ports"] if p["cabled"]), None)
                if port is None:
                    print(f"ibfab saquery: {n} has no cabled port", file=sys.stderr)
                    return 1
                gids.append(bytes.fromhex("fe80000000000000") + port["guid"].to_bytes(8, "big"))
            _tid, mad = saclient.path_record_query(gids[0], gids[1])
        else:
            _tid, mad = saclient.mcmember_records()
        resp = saclient.parse_response(_gmp(fc, via, sm_lid, mad))
    if resp.status:
        print(f"ibfab saquery: SA status 0x{resp.status:04x}", file=sys.stderr)
        return 1
    for r in resp.records:  # as saquery prints them: the dumps, nothing else
        print({"nodes": node_record_dump, "path": path_record_dump}.get(args.what, mcmember_record_dump)(r))
    return 0


# -- saquery's own dumps (infiniband-diags saquery.c), so that what parses its output parses ours --

_NODE_TYPES = {1: "Channel Adapter", 2: "Switch", 3: "Router"}


def _gid6(gid: bytes) -> str:
    import ipaddress

    return ipaddress.IPv6Address(bytes(gid)).compressed  # inet_ntop's form, as saquery prints GIDs


def _dump(title: str, rows) -> str:
    return title + "".join(f"\n\t\t{name:.<24}{value}" for name, value in rows)


def node_record_dump(r) -> str:
    ni = r.node_info
    return _dump("NodeRecord dump:", [
        ("lid", r.lid), ("reserved", "0x0"), ("base_version", f"0x{ni.base_version:X}"),
        ("class_version", f"0x{ni.class_version:X}"), ("node_type", _NODE_TYPES.get(ni.node_type, "???")),
        ("num_ports", ni.num_ports), ("sys_guid", f"0x{ni.sys_guid:016x}"), ("node_guid", f"0x{ni.node_guid:016x}"),
        ("port_guid", f"0x{ni.port_guid:016x}"), ("partition_cap", f"0x{ni.partition_cap:X}"),
        ("device_id", f"0x{ni.device_id:X}"), ("revision", f"0x{ni.revision:X}"), ("port_num", ni.local_port),
        ("vendor_id", f"0x{ni.vendor_id:X}"), ("NodeDescription", r.node_desc.description)])


def path_record_dump(r) -> str:
    hop_flow = (r.raw_traffic << 31) | (r.flow_label << 8) | r.hop_limit
    return _dump("PathRecord dump:", [
        ("service_id", f"0x{r.service_id:016X}"), ("dgid", _gid6(r.dgid)), ("sgid", _gid6(r.sgid)),
        ("dlid", r.dlid), ("slid", r.slid), ("hop_flow_raw", f"0x{hop_flow:X}"), ("tclass", f"0x{r.tclass:X}"),
        ("num_path_revers", f"0x{(r.reversible << 7) | r.numb_path:X}"), ("pkey", f"0x{r.pkey:X}"),
        ("qos_class", f"0x{r.qos_class:X}"), ("sl", f"0x{r.sl:X}"),
        ("mtu", f"0x{(r.mtu_selector << 6) | r.mtu:X}"), ("rate", f"0x{(r.rate_selector << 6) | r.rate:X}"),
        ("pkt_life", f"0x{(r.pkt_life_selector << 6) | r.pkt_life:X}"), ("preference", f"0x{r.preference:X}"),
        ("resv2", "0x000000000000")])


def mcmember_record_dump(r) -> str:
    return _dump("MCMember Record dump:", [
        ("MGID", _gid6(r.mgid)), ("PortGid", _gid6(r.port_gid)), ("qkey", f"0x{r.qkey:x}"), ("mlid", f"0x{r.mlid:x}"),
        ("mtu", f"0x{(r.mtu_selector << 6) | r.mtu:x}"), ("TClass", f"0x{r.tclass:x}"), ("pkey", f"0x{r.pkey:x}"),
        ("rate", f"0x{(r.rate_selector << 6) | r.rate:x}"),
        ("pkt_life", f"0x{(r.pkt_life_selector << 6) | r.pkt_life:x}"), ("SL", f"0x{r.sl:x}"),
        ("FlowLabel", f"0x{r.flow_label:x}"), ("HopLimit", f"0x{r.hop_limit:x}"), ("Scope", f"0x{r.scope:x}"),
        ("JoinState", f"0x{r.join_state:x}"), ("ProxyJoin", f"0x{r.proxy_join:x}")])


def register(sub, common) -> None:
    for cmd, fn, hlp in (("ibnetdiscover", cmd_ibnetdiscover, "discover the fabric with DR SMPs; "
                          "print it in ibnetdiscover's format"),
                         ("dump-fts", cmd_dump_fts, "read every switch's LFT with SMPs; print it like dump_fts")):
        c = common.add(cmd, fn, hlp)
        c.add_argument("--via", default=None, help="HCA to send the SMPs from (default: the SM's)")
        c.add_argument("--port", type=int, default=None, help="its port (default: the SM port, or 1)")

    pq = common.add("perfquery", cmd_perfquery, "a port's PMA counters (PortCounters; --extended), like perfquery")
    pq.add_argument("node", help="the device whose PMA answers (HCA or switch)")
    pq.add_argument("port", type=int, nargs="?", default=1, help="port number, or 255 for all ports (default 1)")
    pq.add_argument("--extended", action="store_true", help="PortCountersExtended (64-bit counters), like perfquery -x")
    pq.add_argument("--reset", action="store_true", help="clear the counters (a PMA Set)")
    pq.add_argument("--via", default=None, help="HCA to send the MAD from (default: the SM's)")

    sq = common.add("saquery", cmd_saquery, "SA queries: nodes (NodeRecords), path SRC DST, mcmembers")
    sq.add_argument("what", choices=["nodes", "path", "mcmembers"],
                    help="nodes [NODE]: NodeRecords; path SRC DST: the PathRecord between two nodes; "
                         "mcmembers: MCMemberRecords (printed as saquery prints them)")
    sq.add_argument("args", nargs="*", help="for path: the source and destination nodes; for nodes: one node "
                                           "(default: all)")
    sq.add_argument("--via", default=None, help="HCA to query from (default: the SM's)")
