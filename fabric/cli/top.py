"""``ibfab top``: a live view of a running fabric, refreshed in place in the terminal (curses, so
it works over ssh), or printed as plain-text snapshots with ``-b`` (like ``top -b -n N -d S``).

Per port: packets and Gbit/s each way and what it dropped, by reason; each device's drops by
reason; the SM's role, state and sweeps; and what the node software adds (IPoIB: per interface
and per queue traffic, ring fill, interrupts and NAPI polls). One RPC per device host a refresh.
"""

from __future__ import annotations

import sys
import time

from .common import bounded, client

KEYS = "q quit  s sort  i idle"


class _Stopped(Exception):
    """The fabric is gone (every device host dead or the fabric stopped)."""


def _sampler(args):
    """``sample()`` of the named fabric, and the client to close."""
    from .. import launcher
    from ..top import take_sample

    fc = client(args.name)

    def sample():
        if not launcher.is_running(args.name):
            raise _Stopped(f"fabric {args.name!r} stopped")
        s = take_sample(fc)
        if not s.hosts:
            raise _Stopped(f"every device host of {args.name!r} is gone (ibfab status --name {args.name})")
        return s

    return fc, sample


def _ticks(delay: float):
    """Sleep to each refresh on a fixed grid, so that slow samples do not stretch the interval."""
    t = time.monotonic()
    while True:
        t += delay
        left = t - time.monotonic()
        if left > 0:
            time.sleep(left)
        else:
            t = time.monotonic()  # far behind (a suspended terminal): start the grid again
        yield


def _batch(args, sample) -> int:
    from ..top import compute, screen

    prev = sample()
    ticks = _ticks(args.delay)
    n = 0
    while args.iterations is None or n < args.iterations:
        next(ticks)
        cur = sample()
        if n:
            print()
        print("\n".join(screen(args.name, compute(prev, cur), sort=args.sort, idle=not args.active,
                               when=cur.wall)), flush=True)
        prev = cur
        n += 1
    return 0


def _interactive(args, sample) -> int:
    import curses

    def run(stdscr) -> int:
        from ..top import SORT_KEYS, compute, screen

        try:
            curses.curs_set(0)
        except curses.error:
            pass  # a terminal without an invisible cursor
        stdscr.timeout(50)  # the key loop's tick: q answers within it
        sort, idle = args.sort, not args.active
        prev = sample()
        view, when = None, prev.wall
        due = time.monotonic() + args.delay
        n = 0
        while True:
            if view is not None:
                _draw(stdscr, screen(args.name, view, sort=sort, idle=idle, when=when,
                                     height=stdscr.getmaxyx()[0]))
            else:
                _draw(stdscr, [(f"ibfab top - fabric {args.name!r}: first sample taken, rates in "
                                f"{args.delay:g} s")])
            while True:
                ch = stdscr.getch()
                if ch in (ord("q"), ord("Q")):
                    return 0
                if ch == ord("s"):
                    sort = SORT_KEYS[(SORT_KEYS.index(sort) + 1) % len(SORT_KEYS)]
                    break
                if ch == ord("i"):
                    idle = not idle
                    break
                if ch == curses.KEY_RESIZE:
                    break
                if time.monotonic() >= due:
                    cur = sample()
                    view, when, prev = compute(prev, cur), cur.wall, cur
                    due = max(due + args.delay, time.monotonic())
                    n += 1
                    if args.iterations is not None and n > args.iterations:
                        return 0
                    break

    def _draw(stdscr, lines) -> None:
        height, width = stdscr.getmaxyx()
        stdscr.erase()
        if lines:
            lines[0] = f"{lines[0]}  [{KEYS}]"
        for y, line in enumerate(lines[:height]):
            try:
                stdscr.addnstr(y, 0, line, max(0, width - 1))
            except curses.error:
                pass  # the last cell of the screen, or a terminal resized under us
        stdscr.refresh()

    try:
        return curses.wrapper(run)
    except curses.error as exc:
        import os

        print(f"ibfab top: cannot drive the terminal (TERM={os.environ.get('TERM', '')!r}): {exc} "
              "(use -b for plain text)", file=sys.stderr)
        return 1


def cmd_top(args) -> int:
    if not args.batch and not (sys.stdout.isatty() and sys.stdin.isatty()):
        print("ibfab top: not a terminal: use -b for plain-text snapshots (ibfab top -b -n 1)", file=sys.stderr)
        return 2
    fc, sample = _sampler(args)
    try:
        return _batch(args, sample) if args.batch else _interactive(args, sample)
    except _Stopped as exc:
        print(f"ibfab top: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.batch:
            raise  # the snapshots so far are printed; ibfab's own ^C line and exit code follow
        return 0  # ^C leaves an interactive top as q does
    finally:
        fc.close()


def register(sub, common) -> None:
    from ..top import SORT_KEYS

    t = common.add("top", cmd_top, "live view of a running fabric: per-port rates and drops, the SM, "
                   "and per-queue IPoIB counters; q quits (like top)")
    t.add_argument("-b", "--batch", action="store_true",
                   help="print plain-text snapshots instead of the full-screen view (for scripts, like top -b)")
    t.add_argument("-n", "--iterations", type=bounded(int, 1), default=None, metavar="N",
                   help="stop after N refreshes (default: until q or ^C)")
    t.add_argument("-d", "--delay", type=bounded(float, 0.05, 3600, unit="seconds"), default=1.0, metavar="SECONDS",
                   help="seconds between refreshes; each rate is over that interval (default 1)")
    t.add_argument("-s", "--sort", choices=SORT_KEYS, default="pkts",
                   help="order of the ports, busiest first: pkts (default), bits, drops, or name; the s key cycles")
    t.add_argument("-i", "--active", action="store_true",
                   help="hide idle ports and queues, those whose rates are all 0 (like top -i; the i key toggles)")
