"""``ibfab``: the command line of the fabric emulator."""

from __future__ import annotations

import argparse
import sys


def _cmd_capture(args) -> int:
    if args.demo:
        # The demo holds IPoIB traffic, so it comes from the ipoib package (fabric itself knows no IP).
        from ipoib.demo_capture import write_demo

        pkts = write_demo(args.file)
        for ts, name, pkt, _exp in pkts:
            print(f"{ts / 1e9:.6f}  {len(pkt):5d} octets  {name}")
        print(f"wrote {len(pkts)} packets to {args.file}")
        return 0
    from .capture import read_erf
    from .wire import ParseError, split_ud_packet

    try:
        records = read_erf(args.file)
    except (OSError, ParseError) as exc:
        print(f"ibfab capture: {args.file}: {exc}", file=sys.stderr)
        return 1
    for r in records:
        try:
            p = split_ud_packet(r.packet)
            desc = (f"SLID {p.slid} -> DLID {p.dlid}  QP 0x{p.deth.src_qp:x} -> 0x{p.bth.dest_qp:x}  "
                    f"P_Key 0x{p.bth.pkey:04x}  Q_Key 0x{p.deth.qkey:x}  {len(p.payload)} octets")
        except ParseError as exc:
            desc = f"invalid packet: {exc}"
        print(f"{r.timestamp:.6f}  {desc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ibfab", description="InfiniBand fabric emulator with accelerated IPoIB")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("capture", help="write the demo capture, or list the packets of an ERF capture")
    c.add_argument("--demo", action="store_true", help="write one packet of each kind the fabric carries")
    c.add_argument("file", help="ERF capture file (type 21, InfiniBand)")
    c.set_defaults(func=_cmd_capture)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
