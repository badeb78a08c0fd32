"""``ibfab up TOPO --machines FILE``: a fabric over several machines (fabric.machines,
fabric.cluster). Its other commands (status, down, kill-host, restart-host...) are the usual
ones; they reach the remote hosts through the same remote command."""

from __future__ import annotations

import sys


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


def print_placement(info, out=sys.stdout) -> None:
    from ..cluster import placement_table

    placement = info.data.get("placement")
    if placement:
        for line in placement_table(placement):
            print(line, file=out)


def register(sub, common) -> None:
    common.parsers["up"].add_argument(
        "--machines", default=None, metavar="FILE",
        help="run the device hosts on these machines (one HOST[:PORT] [addr=ADDRESS] [dir=PATH] a line), "
             "started over ssh (IBFAB_REMOTE overrides the command); links and control over tcp:// with "
             "CURVE; --hosts is then per machine")
