"""Issue 11: the kernel's own tools over IPoIB (``--netns``), node -> switch -> node, per provider,
against a bare TUN relay in the same run.

Fabric: ``single:2`` with ``netns=True``, once with the device hosts running the ``fast`` provider
and once ``std``. iperf3 runs in the nodes' namespaces: TCP (one stream), UDP of 1400 B and of 64 B
at full speed (``-b 0``), and ``ping -i 0.01`` for the round trip.

Baseline (the same run): two namespaces, each with a TUN device at the same MTU (2044) and
addresses, joined by a relay process that reads a packet from one TUN device and writes it to the
other, in a plain epoll loop: what a data path costs when it does nothing but move packets one
read and one write at a time. The fabric does the same reads and writes, plus IPoIB, the HCA,
the switch and the wire format in between.

Each TCP figure and the RTT is the median of REPEATS interleaved runs. Targets for these numbers come
with the next issue (the accelerated provider serving the kernel with offloads); here they are
measured and recorded (bench/RESULTS.md).
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

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and TUN devices need root")
pytest.importorskip("ipoib._fastpath")

REPEATS = 3
SECONDS = 3
MTU = 2044
_rows: dict = {}

RELAY = r"""
import os, select, sys
from ipoib.iphost import netns, tun
IFF_TUN, IFF_NO_PI, TUNSETIFF = 0x0001, 0x1000, 0x400454CA
import fcntl, struct
fds = []
for i, ns in enumerate(sys.argv[1:3]):
    with netns.entered(ns):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", b"ib0", IFF_TUN | IFF_NO_PI))
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
                pkt = read(fd, 65536)
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


def _ping_ms(ns, dst):
    r = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "200", "-i", "0.01", dst],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", r.stdout)
    if not m:
        raise RuntimeError(r.stdout + r.stderr)
    return float(m.group(2))


def _measure(ns_a, ns_b, dst):
    tcp = _iperf(ns_b, ns_a, dst)["sum_received"]["bits_per_second"]
    return tcp, _ping_ms(ns_a, dst)


def _udp(ns_a, ns_b, dst, size):
    s = _iperf(ns_b, ns_a, dst, "-u", "-b", "0", "-l", str(size))["sum"]
    return s["packets"] * (1 - s["lost_percent"] / 100) / s["seconds"], s["lost_percent"]


@contextlib.contextmanager
def relay():
    from ipoib.iphost import netns

    names = [f"ibfb-relay-{os.getpid()}-{x}" for x in "ab"]
    for n in names:
        netns.delete(n)
        netns.create(n)
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(RELAY), *names, str(MTU)], stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        yield names
    finally:
        p.kill()
        p.wait()
        for n in names:
            netns.delete(n)


@contextlib.contextmanager
def kernel_fabric(backend):
    from fabric import Fabric

    old = os.environ.get("IPOIB_BACKEND")
    os.environ["IPOIB_BACKEND"] = backend
    try:
        with Fabric("single:2", netns=True) as fab:
            if old is None:
                os.environ.pop("IPOIB_BACKEND", None)
            else:
                os.environ["IPOIB_BACKEND"] = old
            assert fab.nodes["node0001"].status()["backend"] == backend
            dst = fab.nodes["node0002"].ip
            end = time.monotonic() + 20
            while fab.nodes["node0001"].ping(dst, count=1, timeout=0.5)["received"] == 0:
                assert time.monotonic() < end, "no ping"
            yield fab.nodes["node0001"].netns, fab.nodes["node0002"].netns, dst
    finally:
        if old is None:
            os.environ.pop("IPOIB_BACKEND", None)
        else:
            os.environ["IPOIB_BACKEND"] = old


def test_kernel_tcp_and_rtt_against_a_bare_tun_relay(report):
    runs = {"relay": [], "fast": [], "std": []}
    for _ in range(REPEATS):
        with relay() as (a, b):
            runs["relay"].append(_measure(a, b, "198.18.0.2"))
        for backend in ("fast", "std"):
            with kernel_fabric(backend) as (a, b, dst):
                runs[backend].append(_measure(a, b, dst))
    med = {k: (statistics.median(t for t, _ in v), statistics.median(r for _, r in v)) for k, v in runs.items()}
    _rows.update(med)
    relay_tcp, relay_rtt = med["relay"]
    report.append(f"kernel TCP (iperf3, 1 stream, MTU {MTU}): relay {relay_tcp / 1e9:.2f} Gbit/s | "
                  + " | ".join(f"{k} {med[k][0] / 1e9:.2f} Gbit/s ({med[k][0] / relay_tcp:.2f} x relay)"
                               for k in ("fast", "std"))
                  + f" | fast/std {med['fast'][0] / med['std'][0]:.1f}")
    report.append(f"kernel ping RTT (ping -i 0.01, 200): relay {relay_rtt * 1000:.0f} us | "
                  + " | ".join(f"{k} {med[k][1] * 1000:.0f} us ({med[k][1] / relay_rtt:.1f} x relay)"
                               for k in ("fast", "std")))
    assert all(t > 0 for t, _ in med.values())


@pytest.mark.parametrize("size", [1400, 64])
def test_kernel_udp_against_a_bare_tun_relay(size, report):
    with relay() as (a, b):
        r = _udp(a, b, "198.18.0.2", size)
    got = {"relay": r}
    for backend in ("fast", "std"):
        with kernel_fabric(backend) as (a, b, dst):
            got[backend] = _udp(a, b, dst, size)
    report.append(f"kernel UDP {size:4d} B (iperf3 -u -b 0): "
                  + " | ".join(f"{k} {pps / 1e3:,.0f} k datagrams/s received, loss {loss:.0f}%"
                               for k, (pps, loss) in got.items())
                  + f" | fast/relay {got['fast'][0] / got['relay'][0]:.2f}")
    assert got["fast"][0] > 0
