"""``ibfab env`` and ``ibfab tool``: the real infiniband-diags (and any libibumad program) on an HCA port
of a running fabric, through ibsim's shim ``libumad2sim.so`` (:mod:`fabric.simproto`)::

    eval "$(ibfab env --name F node0001)"; ibnetdiscover; smpquery -D nodeinfo 0,1
    ibfab tool --name F node0001 -- perfquery 4 1
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile

from .common import client, run_foreground


def open_endpoint(name: str, node: str, port: int = 1) -> dict:
    """Ask the host of ``node`` for its endpoint (made once); ``{"sockname", "node", "port"}``."""
    from ..rpc import RpcError

    from ..topology import load_topology

    with client(name) as fc:
        topo = load_topology(fc.info.topology_path)
        if node not in topo.nodes or topo.nodes[node].kind != "hca":
            hcas = [n.name for n in topo.hcas()]
            raise SystemExit(f"ibfab: no HCA {node!r} in fabric {name!r} (HCAs: {', '.join(hcas[:8])}"
                             f"{', ...' if len(hcas) > 8 else ''})")
        try:
            return fc.call(node, "sim_endpoint", port=port)
        except (RpcError, KeyError) as exc:
            raise SystemExit(f"ibfab: {node}: {exc}")


def _env(args) -> dict:
    from ..simproto.shim import ShimMissing, tool_env

    ep = open_endpoint(args.name, args.node, args.port)
    try:
        return tool_env(ep["sockname"], ep["node"])
    except ShimMissing as exc:
        raise SystemExit(f"ibfab: {exc}")


def cmd_env(args) -> int:
    """The shell lines that attach what runs after them to the node's port."""
    for k, v in _env(args).items():
        print(f"export {k}={shlex.quote(v)}")
    print("# umad2sim writes ./sys-<pid>/ where a tool starts: run tools from a writable directory")
    return 0


def cmd_tool(args) -> int:
    """Run one tool attached to the node's port, from a private writable directory (umad2sim
    builds its fake sysfs there), with this terminal; its exit code."""
    from ..simproto.shim import clean_env

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("ibfab tool: no command (ibfab tool NODE -- ibnetdiscover ...)", file=sys.stderr)
        return 2
    if shutil.which(argv[0]) is None and not os.path.exists(f"/usr/sbin/{argv[0]}"):
        print(f"ibfab tool: {argv[0]}: command not found (infiniband-diags installs the diags)", file=sys.stderr)
        return 127
    env = dict(clean_env(os.environ), **_env(args))
    work = tempfile.mkdtemp(prefix="ibfab-tool-")
    try:  # ^C, SIGTERM, SIGHUP: the tool is stopped and its directory goes
        return run_foreground(argv, env=env, cwd=work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def register(sub, common) -> None:
    import argparse

    e = common.add("env", cmd_env, "shell lines that attach tools (libumad2sim.so) to a node's HCA port")
    e.add_argument("node", help="the HCA the tools attach to (SIM_HOST)")
    e.add_argument("--port", type=int, default=1, help="its port (default 1)")
    t = common.add("tool", cmd_tool, "run an infiniband-diags tool (or OpenSM) on a node's HCA port: "
                                     "ibfab tool node0001 -- ibnetdiscover")
    t.add_argument("node", help="the HCA the tool runs on (SIM_HOST)")
    t.add_argument("--port", type=int, default=1, help="its port (default 1)")
    t.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                   help="the command and its arguments, after --")
