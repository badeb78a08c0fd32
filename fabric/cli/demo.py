"""``ibfab demo``, what ``make fabric`` runs: launch a fabric, bring the subnet up, show it (nodes,
LIDs, port states, routes read back from the switches), let the node software show its traffic,
tear it down."""

from __future__ import annotations

import sys


def cmd_demo(args) -> int:
    """What `make fabric` runs: launch, bring the subnet up, show it, tear it down."""
    import os

    from .. import launcher, plugins
    from ..diag import port_state_name
    from ..rpc import RpcError
    from ..topology import TopologyError

    name = args.name or f"demo-{os.getpid()}"
    try:
        info = launcher.up(args.topology, name, timeout=args.timeout, node_software=args.node_software)
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
        software = plugins.node_software(info.data.get("node_software"))
        if software is not None and hasattr(software, "demo"):
            with launcher.FabricClient(name, timeout=30.0) as fc:
                ok = software.demo(fc, info, args) and ok
        return 0 if ok else 1
    finally:
        launcher.down(name)
        print("fabric torn down")


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


def register(sub, common) -> None:
    from .. import plugins

    dm = common.add("demo", cmd_demo, "launch a fabric, bring the subnet up, print a summary, tear it down "
                                      "(what `make fabric` runs)", named=False)
    dm.add_argument("topology", nargs="?", default="fattree:2,2,4,2",
                    help="topology file or generator spec (default fattree:2,2,4,2)")
    dm.add_argument("--name", default=None, help="name of the fabric (default: a name of its own)")
    dm.add_argument("--routes", type=int, default=12, help="how many routes to print")
    dm.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the subnet (default 120)")
    dm.add_argument("--node-software", choices=plugins.node_software_names(), default=plugins.DEFAULT,
                    help=f"what runs on the HCAs and shows its traffic (default {plugins.DEFAULT})")
