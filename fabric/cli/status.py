"""``ibfab status``: a running fabric at a glance, for a person (or, with ``--json``, a script).

    ibfab status               summary (devices, links, SM, subnet) and one line per device
    ibfab status -v            ... and every device's cabled ports
    ibfab status NODE          one device's ports: state, physical state, LID, peer, MTU, rate
    ibfab status --json        everything, GUIDs as "0x..." strings as the diags print them

The node software adds what it knows through ``describe(info, client)`` (:mod:`fabric.plugins`):
the per-node dicts it names in ``status_columns`` become columns of the device lines (IPoIB: each
node's ib0 address and provider), and the rest is printed after them. A dead device host is
named, with how to restart it, and the exit code is 1.
"""

from __future__ import annotations

import json
import sys

from .common import client, fmt_guid, table_lines


def _hex_guids(x):
    """``x`` with every GUID (a key ``guid`` or ``*_guid``) as the diags print it: 0x and 16 digits."""
    if isinstance(x, dict):
        return {k: fmt_guid(v) if isinstance(k, str) and (k == "guid" or k.endswith("_guid"))
                and isinstance(v, int) and not isinstance(v, bool) else _hex_guids(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_hex_guids(v) for v in x]
    return x


def _describe(software, info, fc) -> dict:
    if software is None or not hasattr(software, "describe"):
        return {}
    return software.describe(info, fc)  # the interface of fabric.plugins


def gather(name: str) -> dict:
    """What status shows, read once: devices (with each port's peer), dead hosts, the SM, the
    topology's links, and what the node software adds."""
    from .. import launcher, plugins, smctl
    from ..topology import load_topology

    with client(name) as fc:
        devices = fc.devices()
        info = fc.info
        dead = fc.dead()
        software = plugins.node_software(info.data.get("node_software"))
        extra = _describe(software, info, fc)
    topo = load_topology(info.topology_path)
    order = {n: i for i, n in enumerate(topo.nodes)}  # the topology's order, not the hosts'
    devices = dict(sorted(devices.items(), key=lambda kv: order.get(kv[0], len(order))))
    for n, d in devices.items():
        for p in d["ports"]:
            peer = topo.peer(n, p["port"]) if n in topo.nodes and p["port"] else None
            p["peer"] = f"{peer[0]}/{peer[1]}" if peer else None
    try:
        sm = smctl.sm_status(info)
    except (launcher.LaunchError, OSError, ValueError):
        sm = None
    return {"info": info, "devices": devices, "topology": topo, "software": software, "extra": extra,
            "sm": sm, "dead": [{"host": i, "pid": launcher.host_pid(info, i), "devices": info.hosts[i]["devices"]}
                               for i in dead]}


def summary(st: dict) -> dict:
    """Counts for the summary lines (and ``--json``'s ``summary``)."""
    topo, devices = st["topology"], st["devices"]
    phys = {(n, p["port"]): p for n, d in devices.items() for p in d["ports"]}
    links_up = sum(1 for lk in topo.links if all(phys.get(e, {}).get("phys") == "LinkUp" for e in lk.ends()))
    cabled = [phys.get(e) for lk in topo.links for e in lk.ends()]
    configured = st["info"].data.get("sm") or {}
    sm = st["sm"] or {}
    up = sm.get("subnet_up") or st["info"].data.get("subnet_up") or {}
    if not configured:
        subnet = "no SM"
    elif sm.get("kind") == "opensm":  # OpenSM's log says SUBNET UP; it tells no state besides
        subnet = ("SUBNET UP" if sm.get("subnet_up_count") else "not up yet") if sm.get("running") else \
            "SM not running"
    elif not sm or sm.get("state") in (None, "stopped"):
        subnet = "SM not running"
    elif sm.get("state") == "up":
        subnet = "SUBNET UP"
    else:
        subnet = str(sm.get("state"))
    return {"devices": len(topo.nodes), "switches": len(topo.switches()), "hcas": len(topo.hcas()),
            "hosts": len(st["info"].hosts), "dead_hosts": len(st["dead"]),
            "links": len(topo.links), "links_up": links_up, "ports_cabled": len(cabled),
            "ports_active": sum(1 for p in cabled if p and p["state"] == "Active"),
            "sm_kind": configured.get("kind"), "sm_node": sm.get("node", configured.get("node")),
            "sm_port": sm.get("port", configured.get("port")), "sm_state": sm.get("sm_state"),
            "subnet": subnet, "sweeps": sm.get("sweeps"), "last_up_sweep": up.get("sweep")}


def _columns(st: dict) -> list:
    """[(title, {node: value})] the node software shows on the device lines."""
    software, extra = st["software"], st["extra"]
    return [(title, extra[key]) for title, key in getattr(software, "status_columns", ())
            if isinstance(extra.get(key), dict)]


def _n(count: int, what: str) -> str:
    return f"{count} {what}" + ("" if count == 1 else "es" if what.endswith("ch") else "s")


def print_summary(st: dict, s: dict, name: str, out) -> None:
    print(f"fabric {name}: {_n(s['devices'], 'device')} ({_n(s['switches'], 'switch')}, {_n(s['hcas'], 'HCA')}) "
          f"in {_n(s['hosts'], 'device host')}" + (f", {s['dead_hosts']} dead" if s["dead_hosts"] else ""), file=out)
    print(f"links: {s['links_up']}/{s['links']} up, {s['ports_active']}/{s['ports_cabled']} ports Active", file=out)
    if s["sm_kind"] is None:
        print("SM: none (ibfab sm start --node N)", file=out)
    else:
        role = f", {s['sm_state']}" if s["sm_state"] else ""
        sweeps = f", sweeps {s['sweeps']}" if s["sweeps"] is not None else ""
        print(f"SM: {s['sm_kind']} on {s['sm_node']} port {s['sm_port']}{role}{sweeps}; subnet: {s['subnet']}",
              file=out)
    if "status_line" in st["extra"]:  # the node software's own summary
        print(st["extra"]["status_line"], file=out)


def print_devices(st: dict, out) -> None:
    cols = _columns(st)
    rows = [["name", "type", "GUID", "LID", "active", *(t for t, _ in cols), "host"]]
    for n, d in st["devices"].items():
        cabled = [p for p in d["ports"] if p["cabled"]]
        lids = sorted({p["lid"] for p in d["ports"] if p["lid"] and (p["cabled"] or p["port"] == 0)})
        active = sum(1 for p in cabled if p["state"] == "Active")
        rows.append([n, d["type"], fmt_guid(d["guid"]), ",".join(map(str, lids)) or "-",
                     f"{active}/{len(cabled)}", *(_cell(v.get(n)) for _, v in cols), d["host"]])
    for line in table_lines(rows):
        print(line, file=out)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def print_ports(name: str, d: dict, out) -> None:
    cabled = [p for p in d["ports"] if p["cabled"]]
    nports = sum(1 for p in d["ports"] if p["port"])
    print(f"{name}: {d['type']} {fmt_guid(d['guid'])} \"{d.get('description', name)}\", device host {d['host']} "
          f"(pid {d['pid']}), {len(cabled)} of {nports} ports cabled", file=out)
    if not cabled:
        return
    rows = [["port", "state", "physical", "LID", "peer", "MTU", "rate"]]
    for p in cabled:
        rate = f"{p['width']} {p['speed']}" if p.get("width") else "-"
        rows.append([p["port"], p["state"], p["phys"], p["lid"] or "-", p.get("peer") or "-", p["mtu"] or "-", rate])
    for line in table_lines(rows):
        print("  " + line, file=out)


def print_dead(st: dict, name: str, out) -> None:
    for d in st["dead"]:
        print(f"{', '.join(d['devices'])}: DEAD (device host {d['host']}, pid {d['pid']}, is gone; "
              f"ibfab restart-host --name {name} {d['host']})", file=out)


def to_json(st: dict, name: str) -> dict:
    devices = []
    for n, d in st["devices"].items():
        d = dict(d)
        for title, key in getattr(st["software"], "status_columns", ()):
            if isinstance(st["extra"].get(key), dict) and n in st["extra"][key]:
                d[title.lower()] = st["extra"][key][n]
        devices.append(d)
    return _hex_guids({"name": name, "summary": summary(st), "sm": st["sm"], "devices": devices,
                       "dead_hosts": st["dead"], **st["extra"]})


def cmd_status(args) -> int:
    st = gather(args.name)
    code = 1 if st["dead"] else 0
    if args.node is not None and args.node not in st["devices"]:
        where = next((d for d in st["dead"] if args.node in d["devices"]), None)
        why = f"is on device host {where['host']}, which is dead" if where else "is not in the fabric"
        print(f"ibfab status: {args.node} {why}", file=sys.stderr)
        return 1
    if args.json:
        doc = to_json(st, args.name)
        if args.node is not None:
            doc = next(d for d in doc["devices"] if d["name"] == args.node)
        print(json.dumps(doc, indent=1, default=str))
        return code
    out = sys.stdout
    if args.node is not None:
        print_ports(args.node, st["devices"][args.node], out)
        return code
    print_summary(st, summary(st), args.name, out)
    print(file=out)
    print_devices(st, out)
    print_dead(st, args.name, out)
    if args.verbose:
        for n, d in st["devices"].items():
            print(file=out)
            print_ports(n, d, out)
    shown = {key for _, key in getattr(st["software"], "status_columns", ())} | {"status_line"}
    for key, value in st["extra"].items():  # the rest of what the node software adds (namespaces)
        if key in shown:
            continue
        if isinstance(value, dict):
            print(f"\n{key}:", file=out)
            for k, v in value.items():
                print(f"  {k:<18} {v}", file=out)
        else:
            print(f"{key}: {value}", file=out)
    return code


def register(sub, common) -> None:
    s = common.add("status", cmd_status, "a running fabric: summary (devices, links, SM, subnet), one line per "
                   "device (GUID, LID, IP, provider, host); a device's ports with NODE or -v")
    s.add_argument("node", nargs="?", default=None,
                   help="show this device's ports: state, physical state, LID, peer, MTU, rate")
    s.add_argument("-v", "--verbose", action="store_true", help="also every device's cabled ports")
    s.add_argument("--json", action="store_true",
                   help="print everything as JSON (for scripts; GUIDs as 0x strings, as the diags print them)")
