"""``ibfab``: the command line of the fabric emulator.

One command, assembled from parts: the fabric's own (:mod:`.manage`: up, down, status, link, list,
capture; :mod:`.diag`: ibnetdiscover, dump-fts, perfquery, saquery; :mod:`.demo`), then those that
installed node software registers through the ``ibfab.commands`` entry point (IPoIB's ping, perf,
coalesce, features, queues, and its options of ``up`` and ``demo``). The fabric imports none of
them by name (:mod:`fabric.plugins`).
"""

from __future__ import annotations

import argparse

from .common import Common


def build_parser() -> argparse.ArgumentParser:
    from .. import plugins
    from . import demo, diag, manage, tools

    p = argparse.ArgumentParser(prog="ibfab", description="InfiniBand fabric emulator with accelerated IPoIB")
    sub = p.add_subparsers(dest="command", required=True)
    common = Common(sub)
    for register in (manage.register, diag.register, tools.register, demo.register, *plugins.command_plugins()):
        register(sub, common)
    return p


def main(argv=None) -> int:
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `ibfab status | head` ends quietly
    args = build_parser().parse_args(argv)
    return args.func(args)
