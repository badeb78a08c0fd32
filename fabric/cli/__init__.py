"""``ibfab``: the command line of the fabric emulator.

One command, assembled from parts: the fabric's own (:mod:`.manage`: up, down, link, list;
:mod:`.capture`; :mod:`.status`; :mod:`.diag`: ibnetdiscover, dump-fts, perfquery, saquery; :mod:`.diagtools`:
ibstat, iblinkinfo, ibroute, ibtracert, smpquery; :mod:`.demo`; :mod:`.top`), then those that
installed node software registers through the ``ibfab.commands`` entry point (IPoIB's ping, perf,
coalesce, features, queues, and its options of ``up`` and ``demo``). The fabric imports none of
them by name (:mod:`fabric.plugins`).
"""

from __future__ import annotations

import argparse

from .common import Common


def build_parser() -> argparse.ArgumentParser:
    from .. import plugins
    from . import capture, completion, demo, diag, diagtools, machines, manage, status, tools, top

    p = argparse.ArgumentParser(prog="ibfab", description="InfiniBand fabric emulator with accelerated IPoIB")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = p.add_subparsers(dest="command", required=True)
    common = Common(sub)
    for register in (manage.register, capture.register, status.register, diag.register, diagtools.register,
                     tools.register, demo.register, top.register, machines.register, completion.register,
                     *plugins.command_plugins()):
        register(sub, common)
    return p


def main(argv=None) -> int:
    """Every failure ends in one line on stderr, ``ibfab COMMAND: what went wrong``: exit 2 for a
    usage error (argparse's), 1 for a failure, 130 for ^C; a traceback only with ``--debug`` (or
    IBFAB_DEBUG=1), and only for what nobody expected."""
    import os
    import signal
    import sys

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `ibfab status | head` ends quietly
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("IBFAB_DEBUG") == "1"
    try:
        from ..names import UnknownNode

        try:
            _name_nodes(args)
        except UnknownNode as exc:
            print(f"ibfab {args.command}: {exc}", file=sys.stderr)
            return 2
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\nibfab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from ..host.ops import user_message
        from ..launcher import LaunchError
        from ..rpc import RpcError
        from ..topology import TopologyError

        if debug:
            raise
        if isinstance(exc, (RpcError, LaunchError, TopologyError, OSError, ValueError, KeyError)):
            print(f"ibfab {args.command}: {user_message(exc)}", file=sys.stderr)
        else:
            print(f"ibfab {args.command}: internal error: {type(exc).__name__}: {exc} (--debug shows where)",
                  file=sys.stderr)
        return 1


NODE_ARGS = ("node", "src", "dst", "device", "via")  # the arguments that name a node of the fabric


def _name_nodes(args) -> None:
    """Every node argument becomes the node's id in the topology, whichever way it was named
    (fabric.names: id, first word of the NodeDescription, GUID, LID); IPv4 addresses stay."""
    import re

    present = [a for a in NODE_ARGS if isinstance(getattr(args, a, None), str)]
    if getattr(args, "command", None) == "saquery" and getattr(args, "what", None) in ("path", "nodes"):
        present.append("args")
    if getattr(args, "direct", False):
        present.remove("node")  # smpquery -D: a directed route, not a node
    name = getattr(args, "name", None)
    if not present or not isinstance(name, str):
        return
    from .. import launcher, names
    from ..runinfo import RunInfo
    from ..topology import load_topology

    if not launcher.is_running(name):
        return  # the command says so itself
    info = RunInfo.load(launcher.run_dir_for(name))
    topo = load_topology(info.topology_path)
    cache: dict = {}

    def lids() -> dict:
        if "lids" not in cache:
            with launcher.FabricClient(name) as fc:
                cache["lids"] = {p["lid"] + i: d["name"] for d in fc.devices().values() for p in d["ports"]
                                 if p.get("lid") for i in range(1 << p.get("lmc", 0))}
        return cache["lids"]

    def one(text: str, attr: str) -> str:
        if attr == "dst" and re.fullmatch(r"\d+\.\d+\.\d+\.\d+", text):
            return text  # an IPv4 address
        return names.resolve(topo, text, lids, fabric=name)

    for attr in present:
        value = getattr(args, attr)
        setattr(args, attr, [one(v, attr) for v in value] if isinstance(value, list) else one(value, attr))
