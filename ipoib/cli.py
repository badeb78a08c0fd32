"""The ``ibfab`` commands IPoIB adds (registered through the ``ibfab.commands`` entry point): ping
(like iputils ping), perf (like iperf3 and ib_send_bw/ib_send_lat), coalesce, features and queues
(like ethtool -c/-C, -k/-K/-N and -S), IPoIB's settings of ``ibfab up`` and its part of
``ibfab demo``."""

from __future__ import annotations

import argparse
import sys

from fabric.cli.common import bounded, call_or_report, client, onoff, print_json, run_foreground


def _namespaces(name: str) -> dict:
    """``{node: namespace}`` of a running fabric started with --netns; {} without."""
    from .software import netns_names

    with client(name) as fc:  # a clear error when no such fabric runs
        return netns_names(fc.info)


def _exec_in(args, node: str, argv: list[str]) -> int:
    """Run ``argv`` in ``node``'s namespace with this terminal; its exit code."""
    from .iphost.netns import exec_argv

    ns = _namespaces(args.name).get(node)
    if ns is None:
        known = _namespaces(args.name)
        if not known:
            print(f"ibfab: fabric {args.name!r} runs the embedded IP stack; its nodes have no namespace "
                  f"(start it with ibfab up TOPO --netns)", file=sys.stderr)
        else:
            print(f"ibfab: no node {node!r} in fabric {args.name!r} (nodes: {', '.join(sorted(known)[:8])}"
                  f"{', ...' if len(known) > 8 else ''})", file=sys.stderr)
        return 2
    return run_foreground(exec_argv(ns, argv))  # a signal to us stops it too: nothing left in the namespace


def cmd_exec(args) -> int:
    """Like Mininet's ``h1 cmd``: a command inside a node's network namespace (--netns fabrics)."""
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("ibfab exec: no command (ibfab exec NODE -- CMD ...)", file=sys.stderr)
        return 2
    client(args.name).close()  # a clear error when the fabric is not running
    return _exec_in(args, args.node, argv)


def _rtt_text(seconds: float) -> str:
    """ping(8)'s precision: three decimals below 1 ms, two below 10, one below 100, then none."""
    ms = seconds * 1000.0
    for limit, digits in ((1, 3), (10, 2), (100, 1)):
        if ms < limit:
            return f"{ms:.{digits}f}"
    return f"{ms:.0f}"


def _print_ping_news(r: dict, dst: str, size: int) -> None:
    for seq, rtt, ttl in r.get("replies", []):
        print(f"{size + 8} bytes from {dst}: icmp_seq={seq} ttl={ttl} time={_rtt_text(rtt)} ms", flush=True)
    for seq, frm, text in r.get("errors", []):
        print(f"From {frm or dst} icmp_seq={seq} {text}", flush=True)


def _print_ping_summary(target: str, st: dict) -> None:
    tx, rx, err = st.get("transmitted", 0), st.get("received", 0), st.get("errors", 0)
    loss = 100.0 * (tx - rx) / tx if tx else 0.0
    errs = f", +{err} errors" if err else ""
    print(f"\n--- {target} ping statistics ---")
    print(f"{tx} packets transmitted, {rx} received{errs}, {loss:g}% packet loss, time {st.get('time_ms', 0):.0f}ms")
    if rx:
        print(f"rtt min/avg/max/mdev = {st['rtt_min_ms']:.3f}/{st['rtt_avg_ms']:.3f}/{st['rtt_max_ms']:.3f}/"
              f"{st['rtt_mdev_ms']:.3f} ms")


def cmd_ping(args) -> int:
    """Like ping(8): one line per reply as it comes, then the statistics (also after ^C); exit 0
    when replies came, 1 when none did, 2 on an error. In a --netns fabric, the kernel's own ping
    runs in SRC's namespace."""
    import time

    from fabric.rpc import RpcError

    if _namespaces(args.name):
        with client(args.name) as fc:
            try:
                dst = _node_ip(fc, args.dst)
            except (RpcError, KeyError, StopIteration) as exc:
                print(f"ibfab ping: {exc}", file=sys.stderr)
                return 2
        return _exec_in(args, args.src, ["ping", *(["-c", str(args.count)] if args.count else []),
                                         "-i", str(args.interval), "-W", str(args.timeout), "-s", str(args.size), dst])
    with client(args.name) as fc:
        try:
            dst = _node_ip(fc, args.dst)
            pid = fc.call(args.src, "ping_start", dst=dst, count=args.count or 2 ** 31 - 1,
                          interval=args.interval, timeout=args.timeout, size=args.size)
        except (RpcError, KeyError, StopIteration) as exc:
            print(f"ibfab ping: {exc}", file=sys.stderr)
            return 2
        print(f"PING {args.dst} ({dst}) {args.size}({args.size + 28}) bytes of data.", flush=True)
        tick = min(0.1, max(0.005, args.interval / 4))
        summary = None
        try:
            try:
                while summary is None:
                    r = fc.call(args.src, "ping_poll", ping=pid)
                    _print_ping_news(r, dst, args.size)
                    summary = r.get("summary")
                    if summary is None:
                        time.sleep(tick)
            except KeyboardInterrupt:
                pass
            if summary is None:  # ^C: what came so far, then the statistics
                r = fc.call(args.src, "ping_stop", ping=pid) or {}
                _print_ping_news(r, dst, args.size)
                summary = r.get("summary") or {}
        except RpcError as exc:
            print(f"ibfab ping: {exc}", file=sys.stderr)
            return 2
    _print_ping_summary(args.dst, summary)
    return 0 if summary.get("received") else 1


def demo_traffic(fc, info, args) -> bool:
    """``ibfab demo``'s IPoIB part: all-pairs ping over IPoIB and one UDP transfer, with a summary table."""
    import time

    from fabric.topology import load_topology

    hcas = [n.name for n in load_topology(info.topology_path).hcas()][:args.max_nodes]
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


def _human(octets: float) -> str:
    for unit, div in (("GBytes", 1 << 30), ("MBytes", 1 << 20), ("KBytes", 1 << 10)):
        if octets >= div:
            return f"{octets / div:.3g} {unit}" if octets / div < 100 else f"{octets / div:.0f} {unit}"
    return f"{octets:.0f} Bytes"


def _rate(bits_per_s: float) -> str:
    for unit, div in (("Gbits/sec", 1e9), ("Mbits/sec", 1e6), ("Kbits/sec", 1e3)):
        if bits_per_s >= div:
            return f"{bits_per_s / div:.3g} {unit}" if bits_per_s / div < 100 else f"{bits_per_s / div:.0f} {unit}"
    return f"{bits_per_s:.0f} bits/sec"


def _perf_stream(fc, args, dst: str) -> dict:
    """``perf`` throughput, as iperf3 shows it: the sink on DST and the sender on SRC, an interval
    line a second, a sender and a receiver line at the end. What it opened is closed on every way
    out (and by the nodes themselves, should this process die: their leases run out)."""
    import time

    from fabric.rpc import RpcError

    sink = fc.call(args.dst, "perf_sink", port=args.port, ud=args.ud, lease=True)
    sid = None
    closed = False
    interrupted = False
    try:
        sid = fc.call(args.src, "perf_start", dst=dst, port=args.port, size=args.size, seconds=args.seconds,
                      ud=args.ud, **({"gso": True} if args.gso else {}))
        if not args.json:
            print(f"Connecting to host {dst}, port {args.port} ({'UD QP, no IP stack' if args.ud else 'UDP'})")
            print("[ ID] Interval           Transfer     Bitrate         Total Datagrams")
        t0 = time.monotonic()
        last_t, last_sent, snd = 0.0, 0, None
        try:
            while True:
                time.sleep(max(0.0, min(1.0, last_t + 1.0 - (time.monotonic() - t0))))
                snd = fc.call(args.src, "perf_status", sender=sid)
                fc.call(args.dst, "perf_sink_result", sink=sink, close=False)  # keeps its lease
                now = snd["seconds"]
                if not args.json and now > last_t:
                    n = snd["sent"] - last_sent
                    print(f"[  5] {last_t:6.2f}-{now:<6.2f} sec  {_human(n * args.size):>10}  "
                          f"{_rate(n * args.size * 8 / (now - last_t)):>15}  {n}", flush=True)
                last_t, last_sent = now, snd["sent"]
                if snd["done"]:
                    sid = None
                    break
        except KeyboardInterrupt:
            interrupted = True
        if sid is not None:
            snd = fc.call(args.src, "perf_stop", sender=sid) or snd
            sid = None
        time.sleep(0.2)  # the tail in flight
        rcv = fc.call(args.dst, "perf_sink_result", sink=sink)
        closed = True
    finally:
        for node, op, kw in ((args.src, "perf_stop", {"sender": sid}), (args.dst, "perf_sink_result", {"sink": sink})):
            if (op == "perf_stop" and sid is not None) or (op == "perf_sink_result" and not closed):
                try:
                    fc.call(node, op, **kw)
                except RpcError:
                    pass  # its lease frees it
    secs = rcv["seconds"] or (snd or {}).get("seconds") or 0.0
    sent = (snd or {}).get("sent", 0)
    return {"mode": "ud" if args.ud else "udp", "src": args.src, "dst": dst, "size": args.size, "sent": sent,
            "received": rcv["packets"], "loss_pct": 100.0 * (1 - rcv["packets"] / sent) if sent else 0.0,
            "pps": rcv["packets"] / secs if secs else 0.0,
            "gbps": rcv["bytes"] * 8 / secs / 1e9 if secs else 0.0, "seconds": secs, "interrupted": interrupted,
            "sender_seconds": (snd or {}).get("seconds", 0.0), "received_bytes": rcv["bytes"]}


def cmd_perf(args) -> int:
    """Throughput (UDP over IPoIB, or --ud frames on the QP) or round-trip latency between two
    nodes. Exit 0 when something was measured, 1 when nothing arrived, 2 on an error."""
    import json
    import statistics

    from fabric.rpc import RpcError

    if args.ud and args.size > 4092 - 28:
        print(f"ibfab perf: --ud sends whole datagrams: --size must be at most {4092 - 28}", file=sys.stderr)
        return 2
    with client(args.name) as fc:
        try:
            dst = _node_ip(fc, args.dst)
            if args.latency and args.ud:
                # ib_send_lat on UD: one frame in flight, echoed by a hook at the far driver
                sink = fc.call(args.dst, "perf_sink", port=args.port, ud=True, echo=True, lease=True)
                try:
                    r = fc.call(args.src, "perf_ping_ud", dst=dst, port=args.port, size=args.size,
                                count=args.count, rpc_timeout=10.0 + args.count * 1.0)
                finally:
                    try:
                        fc.call(args.dst, "perf_sink_result", sink=sink)
                    except RpcError:
                        pass  # its lease frees it
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
                            size=args.size, adaptive=True, rpc_timeout=10.0 + args.count * 1.0)
                rtts = sorted(x[1] * 1e6 for x in r.get("replies", []))
                out = {"mode": "latency", "src": args.src, "dst": dst, "size": args.size, "samples": len(rtts),
                       "lost": r["transmitted"] - r["received"],
                       "median_us": statistics.median(rtts) if rtts else None,
                       "p99_us": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] if rtts else None}
            else:
                out = _perf_stream(fc, args, dst)
        except (RpcError, KeyError, StopIteration) as exc:
            print(f"ibfab perf: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("ibfab perf: interrupted", file=sys.stderr)
            return 130
    if args.json:
        print(json.dumps(out))
    elif args.latency:
        if not out["samples"]:
            print(f"{args.src} -> {dst}: no answer to {out['lost']} echoes")
        else:
            print(f"{args.src} -> {dst}: {out['samples']} {'UD ' if args.ud else ''}echoes of {args.size} B, "
                  f"RTT median {out['median_us']:.1f} us, p99 {out['p99_us']:.1f} us, lost {out['lost']}")
    else:
        secs = out["sender_seconds"]
        lost = max(0, out["sent"] - out["received"])
        print("- - - - - - - - - - - - - - - - - - - - - - - - -")
        print("[ ID] Interval           Transfer     Bitrate         Lost/Total Datagrams")
        print(f"[  5]   0.00-{secs:<6.2f} sec  {_human(out['sent'] * args.size):>10}  "
              f"{_rate(out['sent'] * args.size * 8 / secs if secs else 0):>15}  0/{out['sent']} (0%)  sender")
        print(f"[  5]   0.00-{secs:<6.2f} sec  {_human(out['received_bytes']):>10}  "
              f"{_rate(out['gbps'] * 1e9):>15}  {lost}/{out['sent']} ({out['loss_pct']:.2g}%)  receiver")
        print(f"{args.src} -> {dst} {'UD' if args.ud else 'UDP'} {args.size} B: {out['pps']:,.0f} packets/s, "
              f"{out['gbps']:.3f} Gbit/s, sent {out['sent']}, received {out['received']}, loss {out['loss_pct']:.2f}%")
    moved = out.get("samples", out.get("received", 0))
    if not moved:
        print(f"ibfab perf: nothing arrived at {args.dst}", file=sys.stderr)
        return 1
    return 0


def cmd_coalesce(args) -> int:
    """ethtool -c / -C for an IPoIB interface: interrupt moderation of its receive queues."""
    r = call_or_report(args, "coalesce", lambda fc: fc.call(
        args.node, "ipoib_coalesce", ifname=args.ifname, rx_usecs=args.rx_usecs, rx_frames=args.rx_frames,
        adaptive=args.adaptive))
    if r is None:
        return 2
    if args.json:
        return print_json(r)
    print(f"Coalesce parameters for {args.node} {args.ifname}:")
    print(f"Adaptive RX: {'on' if r['adaptive'] else 'off'}")
    print(f"rx-usecs: {r['rx_usecs']}")
    print(f"rx-frames: {r['rx_frames']}")
    print(f"rx-usecs in effect: {r['rx_usecs_effective']}")
    return 0


def cmd_features(args) -> int:
    """ethtool -k / -K / -N for an IPoIB interface: GRO, what UDP flows hash on, and (a --netns fabric
    on the fast provider) the TSO, USO and checksum offloads its TUN device offers the kernel."""
    r = call_or_report(args, "features", lambda fc: fc.call(
        args.node, "ipoib_features", ifname=args.ifname, gro=args.gro, rx_flow_hash_udp4=args.rx_flow_hash_udp4,
        tso=args.tso, uso=args.uso, tx_checksum=args.tx_checksum))
    if r is None:
        return 2
    if args.json:
        return print_json(r)
    print(f"Features for {args.node} {args.ifname}:")
    for k, v in r.items():
        print(f"{k}: {'on' if v is True else 'off' if v is False else v}")
    return 0


def cmd_queues(args) -> int:
    """ethtool -S for an IPoIB interface: per-queue counters."""
    def interface(fc):
        st = fc.call(args.node, "ipoib_status")
        ifc = next((i for i in st["interfaces"] if i["ifname"] == args.ifname), None)
        if ifc is None:
            raise KeyError(f"{args.node} has no interface {args.ifname!r}")
        return st["backend"], ifc

    r = call_or_report(args, "queues", interface)
    if r is None:
        return 2
    backend, ifc = r
    stats = dict(ifc["queues"])
    if args.json:
        return print_json(stats)
    print(f"NIC statistics ({args.node} {args.ifname}, provider {backend}):")
    for k, v in stats.items():
        print(f"     {k}: {v}")
    return 0


def cmd_neigh(args) -> int:
    """The ULP's neighbour table (like ``ip neigh``) and path table (like the kernel's ipoib
    debugfs ``path`` file) of one node."""

    r = call_or_report(args, "neigh", lambda fc: fc.call(args.node, "ipoib_status"))
    if r is None:
        return 1
    ifs = [i for i in r["interfaces"] if args.ifname in (None, i["ifname"])]
    if args.json:
        return print_json({i["ifname"]: {"neigh": i["neigh"], "paths": i["paths"]} for i in ifs})
    for i in ifs:
        for n in i["neigh"]:
            ll = f" lladdr {n['lladdr']}" if n["lladdr"] else ""
            print(f"{n['ip']} dev {i['ifname']}{ll} {n['state']}")
    for i in ifs:
        for p in i["paths"]:
            print(f"GID: {p['dgid']}")
            print(f"  complete:     {'yes' if p['valid'] else 'no'}")
            if p["valid"]:
                print(f"  DLID:     0x{p['dlid']:04x}")
                print(f"  SL: {p['sl']:12d}")
                print(f"  rate: {p.get('rate_gbps', 0):8g} Gb/sec")
            print()
    return 0


def register(sub, common) -> None:
    common.node_option("--tx-queues", type=bounded(int, 1, 64), default=None,
                       help="TX queues of each IPoIB interface (fast provider; like ethtool -L; default 4)")
    common.node_option("--rx-queues", type=bounded(int, 1, 64), default=None,
                       help="RX queues (RSS) of each IPoIB interface (default 4)")
    common.node_option("--backend", choices=["std", "fast"], default=None,
                       help="every node's IPoIB provider: std (pure Python, no offloads) or fast (compiled; "
                            "the default when built)")
    common.node_option("--node-backend", dest="backends", action="append", default=None, metavar="NODE=std|fast",
                       help="one node's provider (repeat for more): a fabric where some HCAs have no acceleration")
    common.node_option("--netns", action="store_true", default=None,
                       help="the kernel as each node's IP host: ib0 is a TUN device in a network namespace "
                            "ibf-FABRIC-NODE, so ping, iperf3 and any program run over IPoIB (needs root)")
    dm = common.parsers["demo"]
    dm.add_argument("--max-nodes", type=int, default=16, help="nodes in the all-pairs ping")
    dm.add_argument("--udp-count", type=int, default=200, help="UDP datagrams in the demo's UDP test (default 200)")
    dm.add_argument("--udp-size", type=int, default=1024, help="their payload octets (default 1024)")

    pg = common.add("ping", cmd_ping, "ICMP echo over IPoIB from node SRC to DST (a node name or an IPv4 address)")
    pg.add_argument("src", help="the node that pings")
    pg.add_argument("dst", help="the node (or IPv4 address) it pings")
    pg.add_argument("-c", "--count", type=bounded(int, 0), default=3,
                    help="echo requests (0: until interrupted, as ping without -c; default 3)")
    pg.add_argument("-i", "--interval", type=bounded(float, 0), default=1.0, help="seconds between requests")
    pg.add_argument("-W", "--timeout", type=bounded(float, 0), default=1.0, help="seconds to wait for a reply")
    pg.add_argument("-s", "--size", type=bounded(int, 0, 65507), default=56, help="ICMP data octets")

    pf = common.add("perf", cmd_perf, "UDP throughput (or --latency: ICMP round trip) between two nodes")
    pf.add_argument("src", help="the sending node")
    pf.add_argument("dst", help="the receiving node (or its IPv4 address)")
    pf.add_argument("--size", type=bounded(int, 0, 65507), default=1024, help="UDP payload or ICMP data octets")
    pf.add_argument("--seconds", type=bounded(float, 0, 86400, above=True), default=2.0, help="how long to send (above 0, at most a day)")
    pf.add_argument("--port", type=bounded(int, 1, 65535), default=5201, help="UDP port of the receiver (default 5201)")
    mode = pf.add_mutually_exclusive_group()
    mode.add_argument("--udp", action="store_true", help="UDP sockets through the IP stack (the default)")
    mode.add_argument("--ud", action="store_true",
                      help="the same IPoIB frames posted straight to the QP and counted at the receiving "
                           "driver (like ib_send_bw on UD): the data path without the IP stack")
    pf.add_argument("--gso", action="store_true",
                    help="with --udp: UDP_SEGMENT, each host-loop pass's datagrams as one buffer (GSO)")
    pf.add_argument("--latency", action="store_true",
                    help="round trips instead of throughput: one echo in flight (ping -A; with --ud, like ib_send_lat)")
    pf.add_argument("--count", type=bounded(int, 1, 10 ** 7), default=200, help="echoes for --latency")
    pf.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")

    co = common.add("coalesce", cmd_coalesce, "interrupt moderation of an IPoIB interface (like ethtool -c/-C)")
    co.add_argument("node", help="the HCA whose interface it is")
    co.add_argument("--ifname", default="ib0", help="the IPoIB interface (default ib0)")
    co.add_argument("--rx-usecs", type=int, default=None,
                    help="interrupt delay after the first frame, microseconds (ethtool -C rx-usecs)")
    co.add_argument("--rx-frames", type=int, default=None, help="frames that raise the interrupt at once (rx-frames)")
    co.add_argument("--adaptive", type=onoff, default=None, metavar="on|off",
                    help="adaptive moderation (DIM, ethtool -C adaptive-rx)")
    co.add_argument("--json", action="store_true", help="print the settings as JSON (for scripts)")

    fe = common.add("features", cmd_features, "offloads of an IPoIB interface (like ethtool -k/-K, -N rx-flow-hash)")
    fe.add_argument("node", help="the HCA whose interface it is")
    fe.add_argument("--ifname", default="ib0", help="the IPoIB interface (default ib0)")
    fe.add_argument("--gro", type=onoff, default=None, metavar="on|off", help="generic receive offload (ethtool -K gro)")
    fe.add_argument("--rx-flow-hash-udp4", choices=["sd", "sdfn"], default=None,
                    help="RSS hash of UDP over IPv4: addresses (sd) or addresses and ports (sdfn), as ethtool -N")
    fe.add_argument("--tso", type=onoff, default=None, metavar="on|off", help="TCP segmentation offload (--netns)")
    fe.add_argument("--uso", type=onoff, default=None, metavar="on|off", help="UDP segmentation offload (--netns)")
    fe.add_argument("--tx-checksum", type=onoff, default=None, metavar="on|off",
                    help="checksum offload (--netns; TSO and USO need it)")
    fe.add_argument("--json", action="store_true", help="print the features as JSON (for scripts)")

    ex = common.add("exec", cmd_exec, "run a command in a node's network namespace (--netns fabrics), "
                                      "like Mininet's h1 cmd: ibfab exec node0001 -- iperf3 -s")
    ex.add_argument("node", help="the node whose namespace it runs in")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command and its arguments, after --")

    ne = common.add("neigh", cmd_neigh, "IPoIB neighbour and path tables of a node (ip neigh; ipoib debugfs path)")
    ne.add_argument("node", help="the HCA whose tables they are")
    ne.add_argument("--ifname", default=None, help="one IPoIB interface (default: all of the node's)")
    ne.add_argument("--json", action="store_true", help="print the tables as JSON (for scripts)")

    qs = common.add("queues", cmd_queues, "per-queue counters of an IPoIB interface (like ethtool -S)")
    qs.add_argument("node", help="the HCA whose interface it is")
    qs.add_argument("--ifname", default="ib0", help="the IPoIB interface (default ib0)")
    qs.add_argument("--json", action="store_true", help="print the counters as JSON (for scripts)")
