"""``ibfab``: the command line of the fabric emulator."""

from __future__ import annotations

import argparse
import sys


def _cmd_capture(args) -> int:
    if args.demo:
        # The demo holds IPoIB traffic, so it comes from the ipoib package (fabric itself knows no IP).
        from ipoib.demo_capture import write_demo

        pkts = write_demo(args.file)
        for ts, name, pkt, _exp in pkts:
            print(f"{ts / 1e9:.6f}  {len(pkt):5d} octets  {name}")
        print(f"wrote {len(pkts)} packets to {args.file}")
        return 0
    from .capture import read_erf
    from .wire import ParseError, split_ud_packet

    try:
        records = read_erf(args.file)
    except (OSError, ParseError) as exc:
        print(f"ibfab capture: {args.file}: {exc}", file=sys.stderr)
        return 1
    for r in records:
        try:
            p = split_ud_packet(r.packet)
            desc = (f"SLID {p.slid} -> DLID {p.dlid}  QP 0x{p.deth.src_qp:x} -> 0x{p.bth.dest_qp:x}  "
                    f"P_Key 0x{p.bth.pkey:04x}  Q_Key 0x{p.deth.qkey:x}  {len(p.payload)} octets")
        except ParseError as exc:
            desc = f"invalid packet: {exc}"
        print(f"{r.timestamp:.6f}  {desc}")
    return 0


def _fmt_guid(g: int) -> str:
    return f"0x{g:016x}"


def _cmd_up(args) -> int:
    from . import launcher
    from .topology import TopologyError

    try:
        from .api import IPOIB_PLUGIN

        queues = {k: v for k, v in (("tx_queues", args.tx_queues), ("rx_queues", args.rx_queues)) if v is not None}
        for k, v in queues.items():
            if not 1 <= v <= 64:
                raise ValueError(f"--{k.replace('_', '-')} must be 1 to 64, not {v}")
        info = launcher.up(args.topology, args.name, hosts=args.hosts, timeout=args.timeout, sm=not args.no_sm,
                           node_software=None if args.no_sm or args.no_ipoib else IPOIB_PLUGIN,
                           node_config=queues or None)
    except (TopologyError, launcher.LaunchError, ValueError, OSError) as exc:
        print(f"ibfab up: {exc}", file=sys.stderr)
        return 1
    n = sum(len(h["devices"]) for h in info.hosts)
    print(f"fabric {args.name!r}: {n} devices in {len(info.hosts)} host processes, "
          f"every link up in {info.data['links_seconds']:.2f} s")
    up = info.data.get("subnet_up")
    if up:
        print(f"subnet up in {info.data['up_seconds']:.2f} s from launch (SM sweep {up['seconds']:.2f} s): "
              f"{up['nodes']} nodes, {up['ports_active']} ports Active")
    print(f"run directory: {info.run_dir}")
    return 0


def _cmd_down(args) -> int:
    from . import launcher

    names = launcher.list_fabrics() if args.all else [args.name]
    any_down = False
    for name in names:
        if launcher.down(name):
            print(f"fabric {name!r} stopped")
            any_down = True
        elif not args.all:
            print(f"ibfab down: no fabric named {name!r}", file=sys.stderr)
            return 1
    if args.all and not any_down:
        print("no fabrics running")
    return 0


def _client(name):
    from . import launcher

    if not launcher.is_running(name):
        raise SystemExit(f"ibfab: no running fabric named {name!r} (ibfab up TOPO --name {name})")
    return launcher.FabricClient(name)


def _cmd_status(args) -> int:
    import json

    with _client(args.name) as fc:
        devices = fc.devices()
    if args.json:
        print(json.dumps({"name": args.name, "devices": list(devices.values())}, indent=1, default=str))
        return 0
    print(f"{'name':<20} {'type':<6} {'guid':<18} {'ports':>5} {'lid':>5}  {'pid':>7}  port states")
    for name, d in devices.items():
        ports = [p for p in d["ports"] if p["cabled"] or p["port"] == 0]
        lids = sorted({p["lid"] for p in ports if p["lid"]})
        states = " ".join(f"{p['port']}:{p['state'][:4]}/{p['phys'][:6]}" for p in ports if p["cabled"])
        nports = sum(1 for p in d["ports"] if p["port"])
        print(f"{name:<20} {d['type']:<6} {_fmt_guid(d['guid']):<18} {nports:>5} "
              f"{','.join(map(str, lids)) or '-':>5}  {d['pid']:>7}  {states}")
    return 0


def _cmd_link(args) -> int:
    from .rpc import RpcError

    with _client(args.name) as fc:
        try:
            fc.call(args.device, "link", port=args.port, up=args.state == "up")
        except (RpcError, KeyError) as exc:
            print(f"ibfab link: {exc}", file=sys.stderr)
            return 1
    print(f"{args.device} port {args.port}: link {args.state}")
    return 0


def _discover(args, lfts: bool) -> dict:
    from .rpc import RpcError

    with _client(args.name) as fc:
        info = fc.info
        via = args.via or (info.data.get("sm") or {}).get("node")
        if via is None:
            topo_sm = _topology_sm(info)
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


def _topology_sm(info):
    from .topology import load_topology

    t = load_topology(info.topology_path)
    return t.sm_node, t.sm_port


def _cmd_ibnetdiscover(args) -> int:
    from .diag import format_ibnetdiscover

    sys.stdout.write(format_ibnetdiscover(_discover(args, lfts=False)))
    return 0


def _cmd_dump_fts(args) -> int:
    from .diag import format_dump_fts

    sys.stdout.write(format_dump_fts(_discover(args, lfts=True)))
    return 0


def _trace_names(data: dict, src_guid: int, src_port: int, dlid: int) -> list[str]:
    """Hop-by-hop route of a discovered fabric (from ``discover``), as 'node[port]' strings."""
    nodes = {n["guid"]: n for n in data["nodes"]}
    ports = {(n["guid"], p["num"]): p for n in data["nodes"] for p in n["ports"]}
    hops = [f"{nodes[src_guid]['desc']}[{src_port}]"]
    cur = ports[(src_guid, src_port)]["remote"]
    for _ in range(64):
        if cur is None:
            return hops + ["(no link)"]
        node = nodes[cur[0]]
        if node["kind"] != "switch":
            return hops + [node["desc"]]
        lft = node["lft"] or b""
        out = lft[dlid] if dlid < len(lft) else 0xFF
        if out in (0, 0xFF):
            return hops + [f"{node['desc']} (no route)"]
        hops.append(f"{node['desc']}[{out}]")
        cur = ports[(node["guid"], out)]["remote"]
    return hops + ["(loop)"]


def _cmd_demo(args) -> int:
    """What `make fabric` runs: launch, bring the subnet up, show it, tear it down."""
    import os

    from . import launcher
    from .diag import port_state_name
    from .rpc import RpcError
    from .topology import TopologyError

    name = args.name or f"demo-{os.getpid()}"
    from .api import IPOIB_PLUGIN

    try:
        info = launcher.up(args.topology, name, timeout=args.timeout, node_software=IPOIB_PLUGIN)
    except (TopologyError, launcher.LaunchError, ValueError, OSError) as exc:
        print(f"ibfab demo: {exc}", file=sys.stderr)
        return 1
    try:
        up = info.data["subnet_up"]
        n = sum(len(h["devices"]) for h in info.hosts)
        print(f"fabric {args.topology}: {n} devices in {len(info.hosts)} processes; links up in "
              f"{info.data['links_seconds']:.2f} s; SUBNET UP in {info.data['up_seconds']:.2f} s "
              f"(SM on {info.data['sm']['node']} port {info.data['sm']['port']}, sweep {up['seconds']:.2f} s)")
        with launcher.FabricClient(name) as fc:
            try:
                data = fc.call(info.data["sm"]["node"], "discover", port=info.data["sm"]["port"], lfts=True,
                               timeout=60.0)
            except RpcError as exc:
                print(f"ibfab demo: discovery failed: {exc}", file=sys.stderr)
                return 1
        print()
        print(f"{'node':<14} {'type':<6} {'guid':<18} {'LID':>5}  ports (state)")
        states = {}
        for nd in sorted(data["nodes"], key=lambda x: (x["kind"] != "switch", x["desc"])):
            lid = next((p["lid"] for p in nd["ports"] if p["lid"] and (nd["kind"] != "switch" or p["num"] == 0)), 0)
            linked = [p for p in nd["ports"] if p["num"] and p["remote"]]
            for p in linked:
                states[port_state_name(p["state"])] = states.get(port_state_name(p["state"]), 0) + 1
            desc = ", ".join(f"{p['num']}:{port_state_name(p['state'])}" for p in linked[:6])
            more = f" (+{len(linked) - 6})" if len(linked) > 6 else ""
            print(f"{nd['desc']:<14} {nd['kind']:<6} 0x{nd['guid']:016x} {lid:>5}  {desc}{more}")
        print()
        print("port states: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
        sm_guid, sm_port, _ = data["sm"]
        cas = [(nd, p) for nd in data["nodes"] if nd["kind"] != "switch" for p in nd["ports"] if p["remote"]]
        print()
        print("routes from the SM node (read back from the switches' LFTs):")
        for nd, p in cas[:args.routes]:
            if nd["guid"] == sm_guid and p["num"] == sm_port:
                continue
            print(f"  LID {p['lid']:>4} {nd['desc']:<12} " + " -> ".join(_trace_names(data, sm_guid, sm_port, p["lid"])))
        if len(cas) > args.routes:
            print(f"  ... and {len(cas) - args.routes} more")
        lft_entries = sum(sum(1 for x in (nd["lft"] or b"")[1:] if x != 0xFF) for nd in data["nodes"]
                          if nd["kind"] == "switch")
        print(f"\n{lft_entries} LFT entries in {sum(nd['kind'] == 'switch' for nd in data['nodes'])} switches")
        ok = states.get("Active", 0) == sum(states.values())
        if info.data.get("node_software"):
            ok = _demo_traffic(name, info, args) and ok
        return 0 if ok else 1
    finally:
        launcher.down(name)
        print("fabric torn down")


def _cmd_ping(args) -> int:
    """Like ping(8): one line per reply, then the statistics; exit 0 only when replies came."""
    from .rpc import RpcError

    with _client(args.name) as fc:
        try:
            dst = args.dst
            if not dst[0].isdigit():  # a node name: its ib0 address
                st = fc.call(dst, "ipoib_status")
                dst = next(i["addr"] for i in st["interfaces"] if i["ifname"] == "ib0").split("/")[0]
            r = fc.call(args.src, "ping", dst=dst, count=args.count, interval=args.interval,
                        timeout=args.timeout, size=args.size)
        except (RpcError, KeyError, StopIteration) as exc:
            print(f"ibfab ping: {exc}", file=sys.stderr)
            return 2
    if r is None:
        print("ibfab ping: no result", file=sys.stderr)
        return 2
    print(f"PING {dst} from {args.src}: {args.size} data bytes")
    for seq, rtt in r.get("replies", []):
        print(f"{args.size + 8} bytes from {dst}: icmp_seq={seq} time={rtt * 1000:.3f} ms")
    for err in r.get("error_texts", []):
        print(err)
    tx, rx = r.get("transmitted", 0), r.get("received", 0)
    print(f"\n--- {dst} ping statistics ---")
    print(f"{tx} packets transmitted, {rx} received, {r.get('packet_loss', 100.0):.0f}% packet loss, "
          f"time {r.get('time_ms', 0):.0f}ms")
    if rx:
        print(f"rtt min/avg/max/mdev = {r['rtt_min_ms']:.3f}/{r['rtt_avg_ms']:.3f}/{r['rtt_max_ms']:.3f}/"
              f"{r['rtt_mdev_ms']:.3f} ms")
    return 0 if rx else 1


def _demo_traffic(name: str, info, args) -> bool:
    """All-pairs ping over IPoIB and one UDP transfer, with a summary table."""
    import time

    from . import launcher
    from .topology import load_topology

    hcas = [n.name for n in load_topology(info.topology_path).hcas()][:args.max_nodes]
    with launcher.FabricClient(name, timeout=30.0) as fc:
        ips = {}
        deadline = time.monotonic() + 10
        for h in hcas:
            while True:
                ib0 = next(i for i in fc.call(h, "ipoib_status")["interfaces"] if i["ifname"] == "ib0")
                if ib0["carrier"] or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            ips[h] = ib0["addr"].split("/")[0]
        print(f"\nIPoIB: ib0 up on {len(hcas)} nodes (MTU {ib0['mtu']}, {ips[hcas[0]]} ... {ips[hcas[-1]]})")
        ok_pairs, rtts, failed = 0, [], []
        for src in hcas:
            for dst in hcas:
                if src == dst:
                    continue
                r = fc.call(src, "ping", dst=ips[dst], count=1, interval=0.1, timeout=1.0)
                if r and r["received"]:
                    ok_pairs += 1
                    rtts.append(r["rtt_avg_ms"])
                else:
                    failed.append(f"{src}->{dst}")
        pairs = len(hcas) * (len(hcas) - 1)
        src, dst = hcas[0], hcas[-1]
        rx = fc.call(dst, "udp_open", port=5001)
        tx = fc.call(src, "udp_open", port=0)
        n, size = args.udp_count, args.udp_size
        t0 = time.monotonic()
        for i in range(n):
            fc.call(src, "udp_sendto", sock=tx["sock"], data=i.to_bytes(4, "big") + bytes(size - 4), ip=ips[dst],
                    port=5001)
        got = []
        while len(got) < n:
            batch = fc.call(dst, "udp_recv", sock=rx["sock"], timeout=1.0, max=1024)
            if not batch:
                break
            got += batch
        dt = time.monotonic() - t0
        intact = sum(1 for g in got if len(g["data"]) == size)
    rtts.sort()
    print()
    print(f"{'test':<34} {'result':<26} details")
    print(f"{'all-pairs ping (ICMP echo)':<34} {f'{ok_pairs}/{pairs} pairs answered':<26} "
          f"rtt median {rtts[len(rtts) // 2] if rtts else 0:.2f} ms, max {max(rtts) if rtts else 0:.2f} ms")
    print(f"{'UDP transfer ' + src + '->' + dst:<34} {f'{intact}/{n} datagrams':<26} "
          f"{size} B each, {n * size * 8 / dt / 1e6:.1f} Mbit/s through the control RPC")
    if failed:
        print("no reply: " + ", ".join(failed[:10]))
    return ok_pairs == pairs and intact == n


def _node_ip(fc, node: str) -> str:
    if node[0].isdigit():
        return node
    st = fc.call(node, "ipoib_status")
    return next(i["addr"] for i in st["interfaces"] if i["ifname"] == "ib0").split("/")[0]


def _cmd_perf(args) -> int:
    """Throughput (UDP over IPoIB) or round-trip latency (ICMP echo) between two nodes."""
    import json
    import statistics
    import time

    from .rpc import RpcError

    with _client(args.name) as fc:
        try:
            dst = _node_ip(fc, args.dst)
            if args.latency and args.ud:
                # ib_send_lat on UD: one frame in flight, echoed by a hook at the far driver
                sink = fc.call(args.dst, "perf_sink", port=args.port, ud=True, echo=True)
                try:
                    r = fc.call(args.src, "perf_ping_ud", dst=dst, port=args.port, size=args.size,
                                count=args.count)
                finally:
                    fc.call(args.dst, "perf_sink_result", sink=sink)
                if r is None:
                    raise RpcError("the client did not finish")
                rtts = sorted(x * 1e6 for x in r["rtts"])
                out = {"mode": "latency-ud", "src": args.src, "dst": dst, "size": args.size, "samples": len(rtts),
                       "lost": r["lost"],
                       "median_us": statistics.median(rtts) if rtts else None,
                       "p99_us": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] if rtts else None}
            elif args.latency:
                # one request outstanding at a time (ping -A): the round trip, not a queue's depth
                r = fc.call(args.src, "ping", dst=dst, count=args.count, interval=0.0, timeout=1.0,
                            size=args.size, adaptive=True)
                rtts = sorted(x[1] * 1e6 for x in r.get("replies", []))
                out = {"mode": "latency", "src": args.src, "dst": dst, "size": args.size, "samples": len(rtts),
                       "lost": r["transmitted"] - r["received"],
                       "median_us": statistics.median(rtts) if rtts else None,
                       "p99_us": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] if rtts else None}
            else:
                sink = fc.call(args.dst, "perf_sink", port=args.port, ud=args.ud)
                snd = fc.call(args.src, "perf_send", dst=dst, port=args.port, size=args.size, seconds=args.seconds,
                              ud=args.ud, **({"gso": True} if args.gso else {}))
                if snd is None:
                    raise RpcError("the sender did not finish")
                time.sleep(0.2)  # let the tail drain
                rcv = fc.call(args.dst, "perf_sink_result", sink=sink)
                secs = rcv["seconds"] or snd["seconds"]
                out = {"mode": "ud" if args.ud else "udp", "src": args.src, "dst": dst, "size": args.size, "sent": snd["sent"],
                       "received": rcv["packets"], "loss_pct": 100.0 * (1 - rcv["packets"] / snd["sent"])
                       if snd["sent"] else 0.0,
                       "pps": rcv["packets"] / secs if secs else 0.0,
                       "gbps": rcv["bytes"] * 8 / secs / 1e9 if secs else 0.0, "seconds": secs}
        except (RpcError, KeyError, StopIteration) as exc:
            print(f"ibfab perf: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(out))
    elif args.latency:
        print(f"{args.src} -> {dst}: {out['samples']} {'UD ' if args.ud else ''}echoes of {args.size} B, RTT median {out['median_us']:.1f} us, "
              f"p99 {out['p99_us']:.1f} us, lost {out['lost']}")
    else:
        print(f"{args.src} -> {dst} {'UD' if args.ud else 'UDP'} {args.size} B: {out['pps']:,.0f} packets/s, {out['gbps']:.3f} Gbit/s, "
              f"sent {out['sent']}, received {out['received']}, loss {out['loss_pct']:.2f}%")
    return 0


def _onoff(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, not {text!r}")
    return text == "on"


def _ipoib_call(args, cmd: str, call):
    """``call(fc)`` on the named fabric; an RPC or lookup failure is printed as ``ibfab CMD: ...``
    and gives None (these operations never answer None)."""
    from .rpc import RpcError

    with _client(args.name) as fc:
        try:
            return call(fc)
        except (RpcError, KeyError) as exc:
            print(f"ibfab {cmd}: {exc}", file=sys.stderr)
            return None


def _print_json(r) -> int:
    import json

    print(json.dumps(r))
    return 0


def _cmd_coalesce(args) -> int:
    """ethtool -c / -C for an IPoIB interface: interrupt moderation of its receive queues."""
    r = _ipoib_call(args, "coalesce", lambda fc: fc.call(
        args.node, "ipoib_coalesce", ifname=args.ifname, rx_usecs=args.rx_usecs, rx_frames=args.rx_frames,
        adaptive=args.adaptive))
    if r is None:
        return 2
    if args.json:
        return _print_json(r)
    print(f"Coalesce parameters for {args.node} {args.ifname}:")
    print(f"Adaptive RX: {'on' if r['adaptive'] else 'off'}")
    print(f"rx-usecs: {r['rx_usecs']}")
    print(f"rx-frames: {r['rx_frames']}")
    print(f"rx-usecs in effect: {r['rx_usecs_effective']}")
    return 0


def _cmd_features(args) -> int:
    """ethtool -k / -K / -N for an IPoIB interface: GRO, and what UDP flows hash on."""
    r = _ipoib_call(args, "features", lambda fc: fc.call(
        args.node, "ipoib_features", ifname=args.ifname, gro=args.gro, rx_flow_hash_udp4=args.rx_flow_hash_udp4))
    if r is None:
        return 2
    if args.json:
        return _print_json(r)
    print(f"Features for {args.node} {args.ifname}:")
    for k, v in r.items():
        print(f"{k}: {'on' if v is True else 'off' if v is False else v}")
    return 0


def _cmd_queues(args) -> int:
    """ethtool -S for an IPoIB interface: per-queue counters."""
    def interface(fc):
        st = fc.call(args.node, "ipoib_status")
        ifc = next((i for i in st["interfaces"] if i["ifname"] == args.ifname), None)
        if ifc is None:
            raise KeyError(f"{args.node} has no interface {args.ifname!r}")
        return st["backend"], ifc

    r = _ipoib_call(args, "queues", interface)
    if r is None:
        return 2
    backend, ifc = r
    stats = dict(ifc["queues"])
    if args.json:
        return _print_json(stats)
    print(f"NIC statistics ({args.node} {args.ifname}, provider {backend}):")
    for k, v in stats.items():
        print(f"     {k}: {v}")
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
    return sm.get("node") or _topology_sm(fc.info)[0]


def _gmp(fc, via: str, dlid: int, mad) -> list:
    from .rpc import RpcError

    try:
        got = fc.call(via, "gmp", dlid=dlid, mad=mad.pack() if hasattr(mad, "pack") else mad, timeout=2.0)
    except RpcError as exc:
        raise SystemExit(f"ibfab: {exc}")
    if got is None:
        raise SystemExit(f"ibfab: no answer from LID {dlid}")
    return got


def _cmd_perfquery(args) -> int:
    """PortCounters (or --extended) of a node's port, read with a PMA Get; --reset clears them."""
    from . import wire as w

    with _client(args.name) as fc:
        lid = _lid_of(fc, args.node)
        if not lid:
            print(f"ibfab perfquery: {args.node} has no LID (is the subnet up?)", file=sys.stderr)
            return 1
        attr_cls, attr_id = ((w.PortCountersExtended, w.ATTR_PORT_COUNTERS_EXT) if args.extended
                             else (w.PortCounters, w.ATTR_PORT_COUNTERS))
        req = attr_cls(port_select=args.port, counter_select=0xFFFF if args.reset else 0)
        if args.reset and not args.extended:
            req = req.replace(counter_select2=0xFF)
        mad = w.new_mad(w.PMAMad, method=w.SET if args.reset else w.GET, tid=(os_pid() << 16) | 1,
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


def os_pid() -> int:
    import os

    return os.getpid() & 0xFFFF


def _cmd_saquery(args) -> int:
    """SA queries from an HCA, like saquery: NodeRecords, a PathRecord, or multicast groups."""
    from .mad import saclient
    from .wire import fmt_gid

    with _client(args.name) as fc:
        via = _via(fc, args)
        d = fc.devices()[via]
        sm_lid = next((p["sm_lid"] for p in d["ports"] if p["sm_lid"]), 0)
        if not sm_lid:
            print("ibfab saquery: no SM LID (is the subnet up?)", file=sys.stderr)
            return 1
        if args.what == "nodes":
            _tid, mad = saclient.node_records()
        elif args.what == "path":
            if len(args.args) != 2:
                print("ibfab saquery path SRC DST", file=sys.stderr)
                return 2
            gids = []
            for n in args.args:
                port = next(p for p in fc.devices()[n]["ports"] if p["cabled"])
                gids.append(bytes.fromhex("fe80000000000000") + port["guid"].to_bytes(8, "big"))
            _tid, mad = saclient.path_record_query(gids[0], gids[1])
        else:
            _tid, mad = saclient.mcmember_records()
        resp = saclient.parse_response(_gmp(fc, via, sm_lid, mad))
    if resp.status:
        print(f"ibfab saquery: SA status 0x{resp.status:04x}", file=sys.stderr)
        return 1
    for r in resp.records:
        if args.what == "nodes":
            ni = r.node_info
            print(f"NodeRecord dump:\n\t\tlid.....................{r.lid}\n\t\tNodeGUID................0x{ni.node_guid:016x}"
                  f"\n\t\tNodeType................{ni.node_type}\n\t\tNumPorts................{ni.num_ports}"
                  f"\n\t\tNodeDescription.........{r.node_desc.description}")
        elif args.what == "path":
            print(f"PathRecord dump:\n\t\tdgid....................{fmt_gid(r.dgid)}\n\t\tsgid....................{fmt_gid(r.sgid)}"
                  f"\n\t\tdlid....................{r.dlid}\n\t\tslid....................{r.slid}\n\t\tpkey....................0x{r.pkey:04x}"
                  f"\n\t\tsl......................{r.sl}\n\t\tmtu.....................{r.mtu}\n\t\trate....................{r.rate}"
                  f"\n\t\tpacket_life.............{r.pkt_life}\n\t\thop_limit...............{r.hop_limit}")
        else:
            print(f"MCMember Record dump:\n\t\tMGID....................{fmt_gid(r.mgid)}\n\t\tMlid....................0x{r.mlid:x}"
                  f"\n\t\tPortGid.................{fmt_gid(r.port_gid)}\n\t\tJoinState...............0x{r.join_state:x}"
                  f"\n\t\tQkey....................0x{r.qkey:08x}")
    print(f"{len(resp.records)} records")
    return 0


def _cmd_list(args) -> int:
    from . import launcher

    for name in launcher.list_fabrics():
        print(f"{name}\t{'running' if launcher.is_running(name) else 'stale (ibfab down --name ' + name + ')'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ibfab", description="InfiniBand fabric emulator with accelerated IPoIB")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("capture", help="write the demo capture, or list the packets of an ERF capture")
    c.add_argument("--demo", action="store_true", help="write one packet of each kind the fabric carries")
    c.add_argument("file", help="ERF capture file (type 21, InfiniBand)")
    c.set_defaults(func=_cmd_capture)

    u = sub.add_parser("up", help="launch a fabric: device hosts, links; returns when every link is up")
    u.add_argument("topology", help="topology file (ibnetdiscover/ibsim format) or generator spec "
                                    "(single:N, linear:N, fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS)")
    u.add_argument("--name", default="default", help="name of this fabric (several can run at once)")
    u.add_argument("--hosts", type=int, default=None, help="number of device-host processes (default: by size)")
    u.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the links and the subnet")
    u.add_argument("--no-sm", action="store_true", help="do not start the subnet manager (ports stay in Init)")
    u.add_argument("--no-ipoib", action="store_true", help="do not run IPoIB on the HCAs")
    u.add_argument("--tx-queues", type=int, default=None, help="TX queues of each IPoIB interface (fast provider; "
                                                               "like ethtool -L; default 4)")
    u.add_argument("--rx-queues", type=int, default=None, help="RX queues (RSS) of each IPoIB interface (default 4)")
    u.set_defaults(func=_cmd_up)

    d = sub.add_parser("down", help="stop a fabric and remove its run directory (also after a crash)")
    d.add_argument("--name", default="default")
    d.add_argument("--all", action="store_true", help="stop every fabric of this user")
    d.set_defaults(func=_cmd_down)

    s = sub.add_parser("status", help="devices of a running fabric: type, GUID, ports, LIDs, states, pid")
    s.add_argument("--name", default="default")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_status)

    lk = sub.add_parser("link", help="pull or plug back the cable at a device port")
    lk.add_argument("device")
    lk.add_argument("port", type=int)
    lk.add_argument("state", choices=["up", "down"])
    lk.add_argument("--name", default="default")
    lk.set_defaults(func=_cmd_link)

    for cmd, fn, hlp in (("ibnetdiscover", _cmd_ibnetdiscover, "discover the fabric with DR SMPs; "
                          "print it in ibnetdiscover's format"),
                         ("dump-fts", _cmd_dump_fts, "read every switch's LFT with SMPs; print it like dump_fts")):
        c = sub.add_parser(cmd, help=hlp)
        c.add_argument("--name", default="default")
        c.add_argument("--via", default=None, help="HCA to send the SMPs from (default: the SM's)")
        c.add_argument("--port", type=int, default=None, help="its port (default: the SM port, or 1)")
        c.set_defaults(func=fn)

    dm = sub.add_parser("demo", help="launch a fabric, bring the subnet up, print a summary, tear it down "
                                     "(what `make fabric` runs)")
    dm.add_argument("topology", nargs="?", default="fattree:2,2,4,2")
    dm.add_argument("--name", default=None)
    dm.add_argument("--routes", type=int, default=12, help="how many routes to print")
    dm.add_argument("--timeout", type=float, default=120.0)
    dm.add_argument("--max-nodes", type=int, default=16, help="nodes in the all-pairs ping")
    dm.add_argument("--udp-count", type=int, default=200)
    dm.add_argument("--udp-size", type=int, default=1024)
    dm.set_defaults(func=_cmd_demo)

    pg = sub.add_parser("ping", help="ICMP echo over IPoIB from node SRC to DST (a node name or an IPv4 address)")
    pg.add_argument("src")
    pg.add_argument("dst")
    pg.add_argument("-c", "--count", type=int, default=3)
    pg.add_argument("-i", "--interval", type=float, default=0.2)
    pg.add_argument("-W", "--timeout", type=float, default=1.0)
    pg.add_argument("-s", "--size", type=int, default=56)
    pg.add_argument("--name", default="default")
    pg.set_defaults(func=_cmd_ping)

    pf = sub.add_parser("perf", help="UDP throughput (or --latency: ICMP round trip) between two nodes")
    pf.add_argument("src")
    pf.add_argument("dst")
    pf.add_argument("--size", type=int, default=1024, help="UDP payload or ICMP data octets")
    pf.add_argument("--seconds", type=float, default=2.0)
    pf.add_argument("--port", type=int, default=5201)
    mode = pf.add_mutually_exclusive_group()
    mode.add_argument("--udp", action="store_true", help="UDP sockets through the IP stack (the default)")
    mode.add_argument("--ud", action="store_true",
                      help="the same IPoIB frames posted straight to the QP and counted at the receiving "
                           "driver (like ib_send_bw on UD): the data path without the IP stack")
    pf.add_argument("--gso", action="store_true",
                    help="with --udp: UDP_SEGMENT, each host-loop pass's datagrams as one buffer (GSO)")
    pf.add_argument("--latency", action="store_true")
    pf.add_argument("--count", type=int, default=200, help="echoes for --latency")
    pf.add_argument("--json", action="store_true")
    pf.add_argument("--name", default="default")
    pf.set_defaults(func=_cmd_perf)

    co = sub.add_parser("coalesce", help="interrupt moderation of an IPoIB interface (like ethtool -c/-C)")
    co.add_argument("node")
    co.add_argument("--ifname", default="ib0")
    co.add_argument("--rx-usecs", type=int, default=None)
    co.add_argument("--rx-frames", type=int, default=None)
    co.add_argument("--adaptive", type=_onoff, default=None, metavar="on|off")
    co.add_argument("--json", action="store_true")
    co.add_argument("--name", default="default")
    co.set_defaults(func=_cmd_coalesce)

    fe = sub.add_parser("features", help="offloads of an IPoIB interface (like ethtool -k/-K, -N rx-flow-hash)")
    fe.add_argument("node")
    fe.add_argument("--ifname", default="ib0")
    fe.add_argument("--gro", type=_onoff, default=None, metavar="on|off")
    fe.add_argument("--rx-flow-hash-udp4", choices=["sd", "sdfn"], default=None)
    fe.add_argument("--json", action="store_true")
    fe.add_argument("--name", default="default")
    fe.set_defaults(func=_cmd_features)

    qs = sub.add_parser("queues", help="per-queue counters of an IPoIB interface (like ethtool -S)")
    qs.add_argument("node")
    qs.add_argument("--ifname", default="ib0")
    qs.add_argument("--json", action="store_true")
    qs.add_argument("--name", default="default")
    qs.set_defaults(func=_cmd_queues)

    pq = sub.add_parser("perfquery", help="a port's PMA counters (PortCounters; --extended), like perfquery")
    pq.add_argument("node")
    pq.add_argument("port", type=int, nargs="?", default=1)
    pq.add_argument("--extended", action="store_true")
    pq.add_argument("--reset", action="store_true", help="clear the counters (a PMA Set)")
    pq.add_argument("--via", default=None, help="HCA to send the MAD from (default: the SM's)")
    pq.add_argument("--name", default="default")
    pq.set_defaults(func=_cmd_perfquery)

    sq = sub.add_parser("saquery", help="SA queries: nodes (NodeRecords), path SRC DST, mcmembers")
    sq.add_argument("what", choices=["nodes", "path", "mcmembers"])
    sq.add_argument("args", nargs="*")
    sq.add_argument("--via", default=None, help="HCA to query from (default: the SM's)")
    sq.add_argument("--name", default="default")
    sq.set_defaults(func=_cmd_saquery)

    ls = sub.add_parser("list", help="named fabrics of this user")
    ls.set_defaults(func=_cmd_list)
    return p


def main(argv=None) -> int:
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `ibfab status | head` ends quietly
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
