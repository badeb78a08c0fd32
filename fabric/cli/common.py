"""What every ``ibfab`` command shares: the parser parents, the running fabric's client, and the
one way an RPC failure is reported (``ibfab CMD: what went wrong`` on stderr)."""

from __future__ import annotations

import argparse
import json
import sys


class Common:
    """Handed to every command's ``register``: the ``--name`` parent parser every command that
    talks to a running fabric takes, the subparsers registered so far (so that a plugin can add
    options to ``up`` or ``demo``), and ``node_option``, for node software settings on ``up``."""

    def __init__(self, sub):
        self.sub = sub
        self.name = argparse.ArgumentParser(add_help=False)
        self.name.add_argument("--name", default="default", type=_fabric_name,
                               help="name of the fabric (several can run at once)")
        self.parsers: dict[str, argparse.ArgumentParser] = {}
        self.node_options: list[str] = []  # dests of ``up``'s options that are node software settings

    def add(self, command: str, func, help: str, *, named: bool = True, **kw) -> argparse.ArgumentParser:
        p = self.sub.add_parser(command, help=help, parents=[self.name] if named else [], **kw)
        p.set_defaults(func=func)
        self.parsers[command] = p
        return p

    def node_option(self, *flags, **kw) -> None:
        """An option of ``ibfab up`` that becomes a node software setting (``--tx-queues``)."""
        action = self.parsers["up"].add_argument(*flags, **kw)
        self.node_options.append(action.dest)


def _fabric_name(text: str) -> str:
    from ..runinfo import check_name

    try:
        return check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def client(name):
    from .. import launcher

    if not launcher.is_running(name):
        raise SystemExit(f"ibfab: no running fabric named {name!r} (ibfab up TOPO --name {name})")
    return launcher.FabricClient(name)


def call_or_report(args, cmd: str, call):
    """``call(fc)`` on the named fabric; an RPC or lookup failure is printed as ``ibfab CMD: ...``
    and gives None (so these operations must never answer None)."""
    from ..rpc import RpcError

    with client(args.name) as fc:
        try:
            return call(fc)
        except (RpcError, KeyError) as exc:
            print(f"ibfab {cmd}: {exc}", file=sys.stderr)
            return None


def print_json(r) -> int:
    print(json.dumps(r))
    return 0


def table_lines(rows) -> list:
    """Rows of cells as text columns, each as wide as its widest cell, two spaces apart."""
    rows = [[str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def run_foreground(argv: list, **popen) -> int:
    """Run a program in the foreground (this terminal) and return its exit code; ^C, SIGTERM or
    SIGHUP stop it and wait for it (130): nothing is left running, not even a zombie."""
    import subprocess

    from ..launcher import signals_raise

    child = None
    try:
        with signals_raise():
            child = subprocess.Popen(argv, **popen)
            return child.wait()
    except KeyboardInterrupt:
        if child is not None:
            child.kill()
            child.wait()
        return 130


def bounded(kind, low, high=None, *, above: bool = False, unit: str = ""):
    """An argparse type: a number of ``kind`` (int or float) from ``low`` (or above it) to
    ``high``; anything else (NaN too) is a one-line usage error that says the range."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {'whole ' if kind is int else ''}number: {text!r}") from None
        if v == v and (v > low if above else v >= low) and (high is None or v <= high):
            return v
        unit_ = f" {unit}" if unit else ""
        if high is None:
            want = f"above {low}" if above else f"at least {low}"
        else:
            want = f"above {low} and at most {high}" if above else f"{low} to {high}"
        raise argparse.ArgumentTypeError(f"must be {want}{unit_}, not {text}")

    return parse


def onoff(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, not {text!r}")
    return text == "on"


def fmt_guid(g: int) -> str:
    return f"0x{g:016x}"


def topology_sm(info):
    from ..topology import load_topology

    t = load_topology(info.topology_path)
    return t.sm_node, t.sm_port
