"""``ibfab capture``: capture a running fabric's packets into pcapng as they cross its cables (as
dumpcap does), list a capture file, or write the demo capture.

    ibfab capture --name F -w out.pcapng -c 100          # 100 packets of every link
    ibfab capture --name F -i node0001 -w - | tshark -i -  # node0001's cable, both directions
    ibfab capture x.pcapng                               # list a capture (pcapng or ERF)
"""

from __future__ import annotations

import os
import signal
import sys
import time

from .common import bounded


def register(sub, common) -> None:
    c = common.add("capture", cmd_capture,
                   "capture a running fabric's packets into pcapng, one interface per link end (like dumpcap); "
                   "or list a capture file, or write the demo capture")
    c.add_argument("file", nargs="?", default=None,
                   help="a capture file to list (pcapng or ERF), or with --demo the ERF file to write; "
                        "without it, capture live")
    c.add_argument("--demo", action="store_true", help="write one packet of each kind the fabric carries to FILE")
    c.add_argument("-i", "--interface", action="append", metavar="DEVICE[:PORT]",
                   help="capture the cables of this device (or of this one port), both directions; "
                        "repeatable; default: every cable")
    c.add_argument("-w", "--write", metavar="FILE",
                   help="the pcapng file to write, '-' for standard output (ibfab capture -w - | tshark -i -); "
                        "default: a new file in the temporary directory, named on stderr")
    c.add_argument("-c", "--count", type=bounded(int, 1), metavar="N", help="stop after N packets")
    c.add_argument("--duration", type=bounded(float, 0, above=True, unit="seconds"), metavar="S",
                   help="stop after S seconds")


def cmd_capture(args) -> int:
    live_opts = [o for o, v in (("-i", args.interface), ("-w", args.write), ("-c", args.count),
                                ("--duration", args.duration)) if v is not None]
    if args.demo:
        if args.file is None or live_opts:
            print("ibfab capture: --demo takes the FILE to write and no live capture option", file=sys.stderr)
            return 2
        return _demo(args.file)
    if args.file is not None:
        if live_opts:
            print(f"ibfab capture: {args.file} is a file to list; {', '.join(live_opts)} capture live "
                  f"(use -w FILE to write one)", file=sys.stderr)
            return 2
        return _list(args.file)
    return _live(args)


def _demo(path) -> int:
    from ..capture_demo import write_demo

    pkts = write_demo(path)
    for ts, name, pkt, _exp in pkts:
        print(f"{ts / 1e9:.6f}  {len(pkt):5d} octets  {name}")
    print(f"wrote {len(pkts)} packets to {path}")
    return 0


def _list(path) -> int:
    from ..capture import parse_records
    from ..pcapng import is_pcapng, parse_pcapng
    from ..wire import ParseError, split_ud_packet

    try:
        with open(path, "rb") as f:
            data = f.read()
        if is_pcapng(data):
            records = [(p.timestamp_ns / 1e9, f"{p.interface:<14}", p.packet) for p in parse_pcapng(data)]
        else:
            records = [(r.timestamp, "", r.packet) for r in parse_records(data)]
    except (OSError, ParseError) as exc:
        print(f"ibfab capture: {path}: {exc}", file=sys.stderr)
        return 1
    for ts, where, pkt in records:
        try:
            p = split_ud_packet(pkt)
            desc = (f"SLID {p.slid} -> DLID {p.dlid}  QP 0x{p.deth.src_qp:x} -> 0x{p.bth.dest_qp:x}  "
                    f"P_Key 0x{p.bth.pkey:04x}  Q_Key 0x{p.deth.qkey:x}  {len(p.payload)} octets")
        except ParseError as exc:
            desc = f"invalid packet: {exc}"
        print(f"{ts:.6f}  {where + '  ' if where else ''}{desc}")
    return 0


def _selection(args, topo, fc):
    """The link ends the -i options name, or None (all); ValueError/UnknownNode for bad ones."""
    from .. import names
    from ..livecapture import link_ends, parse_spec

    cache: dict = {}

    def lids() -> dict:
        if "lids" not in cache:
            cache["lids"] = {p["lid"] + i: d["name"] for d in fc.devices().values() for p in d["ports"]
                             if p.get("lid") for i in range(1 << p.get("lmc", 0))}
        return cache["lids"]

    selected = []
    for spec in args.interface or ():
        dev, port = parse_spec(spec)
        selected.append((names.resolve(topo, dev, lids, fabric=args.name), port))
    return link_ends(topo, selected)


def _default_path(name: str) -> str:
    import tempfile

    fd, path = tempfile.mkstemp(prefix=f"ibfab_{name}_{time.strftime('%Y%m%d%H%M%S')}_", suffix=".pcapng")
    os.close(fd)
    return path


def _live(args) -> int:
    from .. import launcher
    from ..livecapture import LiveCapture, describe, local_only
    from ..names import UnknownNode
    from ..pcapng import PcapngWriter
    from ..rpc import RpcError
    from ..runinfo import RunInfo
    from ..topology import load_topology

    def err(text):
        print(f"ibfab capture: {text}", file=sys.stderr, flush=True)

    def say(text):  # what dumpcap and tcpdump tell on stderr, so that stdout can be the capture
        print(text, file=sys.stderr, flush=True)

    if not launcher.is_running(args.name):
        err(f"no running fabric named {args.name!r} (ibfab up TOPO --name {args.name})")
        return 1
    info = RunInfo.load(launcher.run_dir_for(args.name))
    try:
        local_only(info)
    except ValueError as exc:
        err(str(exc))
        return 1
    topo = load_topology(info.topology_path)
    with launcher.FabricClient(args.name) as fc:
        try:
            ends = _selection(args, topo, fc)
        except (ValueError, UnknownNode) as exc:
            err(str(exc))
            return 2
        to_stdout = args.write == "-"
        if to_stdout and sys.stdout.isatty():
            err("will not write a capture to a terminal: pipe it (-w - | tshark -i -) or give -w FILE")
            return 2
        path = None if to_stdout else args.write or _default_path(args.name)
        try:
            writer = PcapngWriter(sys.stdout.buffer if to_stdout else path)
        except OSError as exc:
            err(f"{path}: {exc.strerror or exc}")
            return 1
        writer.descriptions = describe(topo)
        cap = LiveCapture(fc, writer, ends, count=args.count, log=err)
        where = "every link" if ends is None else ", ".join(f"'{d}/{p}'" for d, p in ends)
        if path is not None:
            say(f"File: {path}")
        # a reader that goes away (tshark quit) is an error on write, which ends the capture
        # cleanly; SIGINT (even where a shell started us ignoring it, in the background) and
        # SIGTERM end it as ^C does: a whole file and no sessions left behind
        old_pipe = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, _interrupt)
        old_int = signal.signal(signal.SIGINT, _interrupt)
        broken = lost = False
        try:
            try:
                cap.open()
                say(f"Capturing on {where} of fabric '{args.name}'")  # now: the hosts are tapping
                end = None if args.duration is None else time.monotonic() + args.duration
                while not cap.done:
                    if not cap.sessions:  # every host went away (ibfab down, a crash)
                        lost = True
                        break
                    wait = min(0.25, cap.lease / 3)
                    if end is not None:
                        left = end - time.monotonic()
                        if left <= 0:
                            break
                        wait = min(wait, left)
                    cap.pump(wait)
                    cap.renew()
            except KeyboardInterrupt:
                pass
            except BrokenPipeError:
                broken = True
            try:
                cap.close()
            except KeyboardInterrupt:  # a second ^C: the sessions are closed; the leases cover the rest
                pass
            except BrokenPipeError:
                broken = True
        except RpcError as exc:
            cap.close()
            err(str(exc))
            return 1
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGPIPE, old_pipe)
            if broken:  # nothing more can reach the reader: keep Python's exit from trying
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            else:
                writer.close()
        say(f"{writer.count} packet{'s' if writer.count != 1 else ''} captured")
        say(f"{cap.total_dropped} packet{'s' if cap.total_dropped != 1 else ''} dropped by the device hosts "
            f"(the capture did not keep up)")
    if lost:
        err("no device host of the fabric is capturing any more")
        return 1
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
