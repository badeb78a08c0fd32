"""``ibfab up TOPO --machines FILE``: a fabric over several machines (fabric.machines,
fabric.cluster), and ``ibfab machines``: where its hosts run, whether they do, and how many
connections each refused. Its other commands (status, down, kill-host, restart-host...) are the
usual ones; they reach the remote hosts through the same remote command."""

from __future__ import annotations

import sys

from .common import client, table_lines


def load_machines(args):
    """``--machines FILE`` read and checked; None when not given; False after a one-line error."""
    path = getattr(args, "machines", None)
    if path is None:
        return None
    from ..machines import MachinesError, load

    try:
        return load(path)
    except MachinesError as exc:
        print(f"ibfab up: {exc}", file=sys.stderr)
        return False


def placement_table(placement: dict) -> list[str]:
    """What ``ibfab up --machines`` prints: where the devices went and what crosses machines."""
    rows = [("machine", "address", "hosts", "devices", "HCAs", "switches", "cables to other machines")]
    for m in placement["machines"]:
        rows.append((m["name"], m["addr"] or "-", ",".join(map(str, m["hosts"])) or "-", m["devices"], m["hcas"],
                     m["switches"], m["cables_out"]))
    return ([f"placement: {placement['cables_crossing']} of {placement['cables']} cables cross machines "
             f"(each switch with its HCAs on one machine, machines balanced on HCAs, grown along cables)"]
            + ["  " + line for line in table_lines(rows)])


def print_placement(info, out=sys.stdout) -> None:
    placement = info.data.get("placement")
    if placement:
        for line in placement_table(placement):
            print(line, file=out)


def gather(name: str) -> dict:
    """Per host: machine, address, endpoints, pid, running or dead, and its CURVE gate's counts."""
    from .. import launcher

    with client(name) as fc:
        info = fc.info
        hosts = []
        for i, h in enumerate(info.hosts):
            m = info.machines[h["machine"]] if info.remote(i) else None
            st = launcher.ask_live_host(info, i, "status", fc.clients[i])
            hosts.append({"host": i, "machine": m["name"] if m else None, "address": m["addr"] if m else None,
                          "ingress": info.ingress(i), "control": info.control(i),
                          "pid": launcher.host_pid(info, i), "running": st is not None,
                          "devices": h["devices"], "auth": (st or {}).get("auth")})
    return {"name": name, "placement": info.data.get("placement"), "hosts": hosts}


def cmd_machines(args) -> int:
    import json

    doc = gather(args.name)
    code = 0 if all(h["running"] for h in doc["hosts"]) else 1
    if args.json:
        print(json.dumps(doc, indent=1))
        return code
    if not doc["placement"]:
        print(f"fabric {args.name!r} runs on this machine only ({len(doc['hosts'])} device hosts, ipc://)")
        return code
    for line in placement_table(doc["placement"]):
        print(line)
    rows = [("host", "machine", "pid", "state", "ingress", "refused")]
    for h in doc["hosts"]:
        rows.append((h["host"], h["machine"], h["pid"] or "-", "running" if h["running"] else "DEAD",
                     h["ingress"], h["auth"]["refused"] if h["auth"] else "-"))
    print()
    for line in table_lines(rows):
        print(line)
    for h in doc["hosts"]:
        if h["auth"] and h["auth"]["denied_from"]:
            print(f"host {h['host']}: refused clients from {', '.join(sorted(set(h['auth']['denied_from'])))} "
                  f"({h['auth']['wrong_key']} with another key, {h['auth']['no_curve_or_server_key']} without "
                  f"CURVE or the server's key)")
    return code


def register(sub, common) -> None:
    m = common.add("machines", cmd_machines, "a fabric over several machines: its placement, each host's machine, "
                   "pid and state, and the connections its CURVE gate refused")
    m.add_argument("--json", action="store_true", help="print it as JSON (for scripts)")

    common.parsers["up"].add_argument(
        "--machines", default=None, metavar="FILE",
        help="run the device hosts on these machines (one HOST[:PORT] [addr=ADDRESS] [dir=PATH] a line), "
             "started over ssh (IBFAB_REMOTE overrides the command); links and control over tcp:// with "
             "CURVE; --hosts is then per machine")
