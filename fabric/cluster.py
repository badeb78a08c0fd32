"""The launcher's side of a fabric on several machines: lay its hosts out over the machines, ship
each machine its run directory, and start, watch, kill and stop the hosts there through the
remote command (:mod:`fabric.machines`; on the machine, :mod:`fabric.remote` does the work).

A remote host's pid is written into the launcher's run directory once the host has bound its
sockets, as a local host writes its own; whether it still runs is asked of its control port first
(a connection accepted: alive; nothing sent, so the host does not count it as a refusal) and, when
that fails, of its machine.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading

from . import machines as mc
from .curve import KEYS_FILE, CurveKeys, write_keys
from .placement import crossing, plan_machines, split_hosts

PROBE_S = 1.0  # a control port that does not accept within this is asked about through the machine
REMOTE_S = 15.0  # a machine that does not answer a command within this is reported and skipped


class ClusterError(RuntimeError):
    pass


def remote_dir(info, k: int) -> str:
    """Where machine ``k`` keeps its hosts' run directory: under the machines file's ``dir=``, a
    directory of this fabric's own (two fabrics given one ``dir=`` must not share files), or the
    launcher's run directory's path on that machine."""
    m = info.machines[k]
    if m.get("dir"):
        return os.path.join(m["dir"], info.name, f"m{k}")
    return os.path.join(info.run_dir, f"m{k}")


def layout(topology, machines: list[dict], hosts_per_machine, max_hosts, devices_per_host) -> tuple[list, dict]:
    """``fabric.json``'s hosts (devices, machine, tcp endpoints) and the placement summary."""
    import math

    groups = plan_machines(topology, len(machines))
    hosts = []
    for k, (m, devs) in enumerate(zip(machines, groups)):
        if not devs:
            continue
        n = hosts_per_machine or max(1, min(max_hosts, math.ceil(len(devs) / devices_per_host)))
        addr = mc.resolve(m)
        m["addr"] = addr
        for j, plan in enumerate(split_hosts(topology, n, devs)):
            port = m["port"] + mc.PORTS_PER_HOST * j
            hosts.append({"devices": plan, "machine": k, "ingress": mc.endpoint(addr, port),
                          "control": mc.endpoint(addr, port + 1)})
    cross = crossing(topology, groups)
    placement = {"machines": [{"name": m["name"], "addr": m["addr"] if groups[k] else m.get("addr"),
                               "hosts": [i for i, h in enumerate(hosts) if h["machine"] == k],
                               "devices": len(groups[k]),
                               "hcas": sum(1 for d in groups[k] if topology.nodes[d].kind == "hca"),
                               "switches": sum(1 for d in groups[k] if topology.nodes[d].kind == "switch"),
                               "cables_out": cross[k]} for k, m in enumerate(machines)],
                 "cables": len(topology.links), "cables_crossing": sum(cross) // 2}
    return hosts, placement


def make_keys(run_dir: str) -> CurveKeys:
    keys = CurveKeys.generate()
    write_keys(run_dir, keys)
    return keys


def bundle(info, k: int) -> bytes:
    """What machine ``k``'s hosts read: fabric.json (its topology path moved to the machine's run
    directory), the topology and the keys."""
    d = remote_dir(info, k)
    data = dict(info.data, topology=os.path.join(d, "topology.net"))
    files = {"fabric.json": json.dumps(data, indent=1)}
    with open(info.topology_path) as f:
        files["topology.net"] = f.read()
    with open(os.path.join(info.run_dir, KEYS_FILE)) as f:
        files[KEYS_FILE] = f.read()
    return json.dumps(files).encode()


def _by_machine(info, indices) -> dict:
    out: dict = {}
    for i in indices:
        out.setdefault(info.hosts[i]["machine"], []).append(i)
    return out


def _parallel(jobs: dict) -> dict:
    """Run ``{key: fn}`` at once (one remote command per machine); ``{key: result or exception}``."""
    out: dict = {}

    def one(key, fn):
        try:
            out[key] = fn()
        except Exception as exc:  # reported by the caller, per machine
            out[key] = exc

    threads = [threading.Thread(target=one, args=(k, fn), daemon=True) for k, fn in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def start_hosts(info, indices, *, timeout: float = 90.0) -> None:
    """Start hosts ``indices`` on their machines (the run directory shipped first), every machine
    at once; return when each has bound its sockets, its pid recorded here."""
    def job(k, idx):
        def run():
            st, out, err = mc.run(info.machines[k]["name"], ["start", remote_dir(info, k), *map(str, idx)],
                                  stdin=bundle(info, k), timeout=timeout)
            if st != 0:
                raise ClusterError(f"machine {info.machines[k]['name']!r}: the remote command failed "
                                   f"({'status ' + str(st) if st is not None else err}): {err.strip()[-400:]}")
            return json.loads(out.strip().splitlines()[-1])
        return run

    results = _parallel({k: job(k, idx) for k, idx in _by_machine(info, indices).items()})
    problems = []
    for k, r in sorted(results.items()):
        if isinstance(r, Exception):
            problems.append(str(r))
            continue
        for i, pid in r["pids"].items():
            info.mark_ready(int(i), int(pid))
        for i, why in r["failed"].items():
            problems.append(f"device host {i} on {info.machines[k]['name']} {why}")
    if problems:
        raise ClusterError("\n".join(problems))


def _probe(endpoint: str) -> bool:
    hostport = endpoint[len("tcp://"):]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_S):
            return True
    except OSError:
        return False


def host_dead(info, index: int, pid: int) -> bool:
    if _probe(info.hosts[index]["control"]):
        return False
    k = info.hosts[index]["machine"]
    st, out, err = mc.run(info.machines[k]["name"], ["alive", remote_dir(info, k), str(pid)], timeout=REMOTE_S)
    if st != 0:
        return True  # the machine does not answer: its hosts are as good as dead
    return not json.loads(out.strip().splitlines()[-1]).get(str(pid), False)


def kill(info, index: int, pid: int) -> None:
    k = info.hosts[index]["machine"]
    st, out, err = mc.run(info.machines[k]["name"], ["kill", remote_dir(info, k), str(pid)], timeout=REMOTE_S)
    if st != 0:
        raise ClusterError(f"machine {info.machines[k]['name']!r} did not kill host {index}: {err.strip()[-300:]}")


def log_tail(info, index: int, lines: int = 15) -> str:
    k = info.hosts[index]["machine"]
    st, out, err = mc.run(info.machines[k]["name"], ["log", remote_dir(info, k), str(index), str(lines)],
                          timeout=REMOTE_S)
    return json.loads(out.strip().splitlines()[-1])["log"] if st == 0 else f"(its log: {err.strip()[-200:]})"


def stop_all(info, grace: float) -> list[str]:
    """Stop every host on every machine and remove the machines' run directories; a machine that
    does not answer is reported (the returned lines) and the others go on."""
    def job(k):
        return lambda: mc.run(info.machines[k]["name"], ["stop", remote_dir(info, k), str(grace)],
                              timeout=REMOTE_S + 2 * grace)

    used = sorted({h["machine"] for h in info.hosts if h.get("machine") is not None})
    problems = []
    for k, r in sorted(_parallel({k: job(k) for k in used}).items()):
        name = info.machines[k]["name"]
        if isinstance(r, Exception):
            problems.append(f"machine {name!r}: {r}")
            continue
        st, out, err = r
        if st != 0:
            problems.append(f"machine {name!r} did not answer ({err.strip()[-200:] or 'status ' + str(st)}): "
                            f"its hosts may still run, its run directory {remote_dir(info, k)} may remain")
        elif json.loads(out.strip().splitlines()[-1]).get("left"):
            problems.append(f"machine {name!r}: some hosts did not stop")
    return problems


def report(lines, out=sys.stderr) -> None:
    for line in lines:
        print(f"ibfab down: {line}", file=out)
