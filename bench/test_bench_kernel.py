"""Issues 11 and 12: the kernel's own tools over IPoIB (``--netns``), against bare TUN relays in the
same run.

Fabrics, with ``netns=True`` (the kernel is each node's IP host): ``single:2`` (node -> switch ->
node) and ``fattree:2,1,1,1`` (node -> leaf -> spine -> leaf -> node). Three data paths: the fast
provider with its offloads on (its TUN queues read and written in C, TSO/USO/checksum offload,
GRO), the fast provider with TSO and GRO off (the kernel segments; still C), and the standard
provider (one Python read or write per packet, no offloads). iperf3 runs in the nodes' namespaces:
TCP with one stream and with ``-P 4``, UDP of 64 and 1400 octets at full speed (``-b 0``, the rate
received counts), and ``ping -i 0.01`` for the round trip.

Baselines, in the same run: two namespaces whose TUN devices (MTU 2044, as ib0) are joined by a
relay process that moves each packet from one to the other in an epoll loop and does nothing else:
once plain (one read and one write per packet), once passing the kernel's TSO super-packets whole
(IFF_VNET_HDR with every offload on). What the fabric adds to the plain relay's work: the IPoIB
and IB headers, five CRC passes per packet (built, checked at the switch, checked at the
receiver), the switch, and the rings; with offloads it segments and coalesces too.

Each figure is the median of REPEATS interleaved runs. Targets (issue 12): fast TCP >= 2x the plain
relay and >= 0.5 of the TSO relay, fast >= 5x std, ping RTT <= 2x the plain relay's.

The RTT target is judged on a ping phase of its own, with the plain relay and the fast fabric up
at the same time and pinged in alternating batches (PING_BATCHES of PING_COUNT each, every repeat):
both sides' mean RTT over the same minute. The round trip here is mostly the kernel's wake-ups in
this VM, which drift by tens of microseconds over minutes and differ with where the scheduler
puts the forwarder (on ping's CPU or the other one); minutes apart, the same code's two runs gave
129 and 170 us and the relay's 53 and 85 (bench/RESULTS.md). Each path's ``ping`` after its iperf3
runs is printed as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and TUN devices need root"),
              pytest.mark.timeout(3600)]
pytest.importorskip("ipoib._fastpath")

REPEATS = int(os.environ.get("IBFAB_BENCH_REPEATS", "3"))
SECONDS = 3
MTU = 2044
TOPOS = {"single:2": ("node0001", "node0002"), "fattree:2,1,1,1": ("node0001", "node0002")}
PATHS = ("fast", "fast-nooffload", "std")
_rows: dict = {}

RELAY = r"""
import fcntl, os, select, struct, sys
from ipoib.iphost import netns, tun
IFF_TUN, IFF_NO_PI, IFF_VNET_HDR, TUNSETIFF, TUNSETOFFLOAD = 0x0001, 0x1000, 0x4000, 0x400454CA, 0x400454D0
tso = sys.argv[4] == "tso"
fds = []
for i, ns in enumerate(sys.argv[1:3]):
    with netns.entered(ns):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", b"ib0", IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if tso else 0)))
        if tso:  # checksum, TSO4/6, USO4/6: super-packets cross whole
            fcntl.ioctl(fd, TUNSETOFFLOAD, 0x01 | 0x02 | 0x04 | 0x20 | 0x40)
        ctl = tun.IfControl("ib0")
        ctl.set_address(bytes([198, 18, 0, i + 1]), 16)
        ctl.set_mtu(int(sys.argv[3]))
        ctl.set_up()
        lo = tun.IfControl("lo"); lo.set_up()
    fds.append(fd)
ep = select.epoll()
for fd in fds:
    ep.register(fd, select.EPOLLIN)
print("ready", flush=True)
other = {fds[0]: fds[1], fds[1]: fds[0]}
read, write = os.read, os.write
while True:
    for fd, _ in ep.poll():
        out = other[fd]
        for _ in range(64):
            try:
                pkt = read(fd, 70000)
            except BlockingIOError:
                break
            try:
                write(out, pkt)
            except OSError:
                pass
"""


def _in(ns, argv, **kw):
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)


def _iperf(ns_srv, ns_cli, dst, *args):
    srv = _in(ns_srv, ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.4)
    try:
        cli = _in(ns_cli, ["iperf3", "-c", dst, "-t", str(SECONDS), "-J", *args], stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, text=True)
        out, err = cli.communicate(timeout=SECONDS + 60)
        if cli.returncode != 0:
            raise RuntimeError(f"iperf3 {' '.join(args)}: {out[-500:]} {err[-500:]}")
        return json.loads(out)["end"]
    finally:
        srv.kill()
        srv.wait()


def _ping_us(ns, dst):
    r = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "200", "-i", "0.01", dst],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", r.stdout)
    if not m:
        raise RuntimeError(r.stdout + r.stderr)
    return float(m.group(2)) * 1000


PING_BATCHES, PING_COUNT = 6, 50


def _ping_each_us(ns, dst, count) -> list[float]:
    """Every reply's RTT of ``ping -c count -i 0.01``, in microseconds."""
    r = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-c", str(count), "-i", "0.01", dst],
                       capture_output=True, text=True, timeout=60)
    rtts = [float(x) * 1000 for x in re.findall(r"time=([\d.]+) ms", r.stdout)]
    if len(rtts) < count // 2:
        raise RuntimeError(r.stdout[-500:] + r.stderr)
    return rtts


def _interleaved_rtts(topo) -> tuple[list[float], list[float]]:
    """The plain relay's and the fast fabric's replies, pinged in alternating batches while both
    are up: what drifts in the machine over the minute hits both alike."""
    relay_rtts, fabric_rtts = [], []
    with relay("plain") as (ra, _, rdst), kernel_fabric(topo, "fast") as (fa, _, fdst):
        for i in range(PING_BATCHES):  # each side first every other time
            for ns, dst, into in ((ra, rdst, relay_rtts), (fa, fdst, fabric_rtts))[::1 if i % 2 == 0 else -1]:
                into += _ping_each_us(ns, dst, PING_COUNT)
    return relay_rtts, fabric_rtts


def _measure(a, b, dst) -> dict:
    """Every figure between namespaces ``a`` (client) and ``b`` (server)."""
    out = {"tcp": _iperf(b, a, dst)["sum_received"]["bits_per_second"],
           "tcp4": _iperf(b, a, dst, "-P", "4")["sum_received"]["bits_per_second"]}
    for size in (64, 1400):
        s = _iperf(b, a, dst, "-u", "-b", "0", "-l", str(size))["sum"]
        out[f"udp{size}"] = s["packets"] * (1 - s["lost_percent"] / 100) / s["seconds"]
    out["rtt"] = _ping_us(a, dst)
    return out


@contextlib.contextmanager
def relay(mode):
    from ipoib.iphost import netns

    names = [f"ibfb-relay-{os.getpid()}-{x}" for x in "ab"]
    for n in names:
        netns.delete(n)
        netns.create(n)
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(RELAY), *names, str(MTU), mode],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        yield names[0], names[1], "198.18.0.2"
    finally:
        p.kill()
        p.wait()
        for n in names:
            netns.delete(n)


@contextlib.contextmanager
def kernel_fabric(topo, path):
    from fabric import Fabric

    backend = "std" if path == "std" else "fast"
    old = os.environ.get("IPOIB_BACKEND")
    os.environ["IPOIB_BACKEND"] = backend
    try:
        with Fabric(topo, netns=True) as fab:
            src, dst = (fab.nodes[n] for n in TOPOS[topo])
            assert src.status()["backend"] == backend
            end = time.monotonic() + 20
            while src.ping(dst.ip, count=1, timeout=0.5)["received"] == 0:
                assert time.monotonic() < end, "no ping"
            if path == "fast-nooffload":
                for n in (src, dst):
                    fab.client.call(n.name, "ipoib_features", tso=False, uso=False, gro=False)
            yield src.netns, dst.netns, dst.ip
    finally:
        if old is None:
            os.environ.pop("IPOIB_BACKEND", None)
        else:
            os.environ["IPOIB_BACKEND"] = old


def _median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def test_kernel_paths_against_bare_tun_relays(report):
    runs: dict = {}
    pings: dict = {topo: ([], []) for topo in TOPOS}
    for _ in range(REPEATS):  # interleaved: drifting load hits every path alike
        for topo in TOPOS:
            r, f = _interleaved_rtts(topo)
            pings[topo][0].extend(r)
            pings[topo][1].extend(f)
        for mode in ("plain", "tso"):
            with relay(mode) as (a, b, dst):
                runs.setdefault(("relay", mode), []).append(_measure(a, b, dst))
        for topo in TOPOS:
            for path in PATHS:
                with kernel_fabric(topo, path) as (a, b, dst):
                    runs.setdefault((topo, path), []).append(_measure(a, b, dst))
    med = {k: _median(v) for k, v in runs.items()}
    _rows.update(med)
    plain, tso = med[("relay", "plain")], med[("relay", "tso")]
    report.append(f"bare TUN relay, plain: TCP {plain['tcp'] / 1e9:.2f} Gbit/s (-P 4 {plain['tcp4'] / 1e9:.2f}), UDP 64 B "
                  f"{plain['udp64'] / 1e3:,.0f} k/s, 1400 B {plain['udp1400'] / 1e3:,.0f} k/s, RTT {plain['rtt']:.0f} us")
    report.append(f"bare TUN relay, TSO super-packets whole: TCP {tso['tcp'] / 1e9:.2f} Gbit/s (-P 4 {tso['tcp4'] / 1e9:.2f}),"
                  f" UDP 64 B {tso['udp64'] / 1e3:,.0f} k/s, 1400 B {tso['udp1400'] / 1e3:,.0f} k/s, RTT {tso['rtt']:.0f} us")
    for topo in TOPOS:
        for path in PATHS:
            m = med[(topo, path)]
            report.append(f"{topo:<16} {path:<15} TCP {m['tcp'] / 1e9:5.2f} Gbit/s (-P 4 {m['tcp4'] / 1e9:5.2f}), "
                          f"UDP 64 B {m['udp64'] / 1e3:6,.0f} k/s, 1400 B {m['udp1400'] / 1e3:6,.0f} k/s, "
                          f"RTT {m['rtt']:5.0f} us")
        f, s = med[(topo, "fast")], med[(topo, "std")]
        checks = [("fast TCP >= 2x plain relay", f["tcp"] / plain["tcp"], 2.0),
                  ("fast TCP >= 0.5 x TSO relay", f["tcp"] / tso["tcp"], 0.5),
                  ("fast TCP >= 5x std", f["tcp"] / s["tcp"], 5.0)]
        line = "; ".join(f"{name}: {ratio:.2f} ({'met' if ratio >= want else 'NOT met'})" for name, ratio, want in checks)
        r_rtts, f_rtts = pings[topo]
        r_mean, f_mean = statistics.fmean(r_rtts), statistics.fmean(f_rtts)
        rtt = f_mean / r_mean
        report.append(f"{topo:<16} RTT, plain relay and fast fabric pinged alternately ({len(r_rtts)} and {len(f_rtts)} "
                      f"replies): relay mean {r_mean:.0f} us (median {statistics.median(r_rtts):.0f}), fabric mean "
                      f"{f_mean:.0f} us (median {statistics.median(f_rtts):.0f})")
        report.append(f"{topo:<16} targets: {line}; fast RTT <= 2x plain relay's (alternating): {rtt:.2f} "
                      f"({'met' if rtt <= 2.0 else 'NOT met'})")
    assert all(m["tcp"] > 0 for m in med.values())
