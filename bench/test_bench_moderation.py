"""Issue 6: interrupt moderation on the fast backend: latency against CPU per packet, per setting.

Fabric: ``single:2`` with the device host on the ``fast`` IPoIB backend. For each setting
(rx-usecs 0, 16, 64, 256 and 2048, then adaptive), applied to ib0 of both nodes with the
``ipoib_coalesce`` RPC (``ethtool -C``; rx-frames is left as it is):

- latency: the UD echo round trip (``ibfab perf --latency --ud``: 56-octet UDP payloads posted to
  the QP, echoed at the far driver, one in flight) node0001 -> switch -> node0002 and back,
  median and p99;
- CPU per packet: a stream of 64-octet UDP-in-IPoIB frames node0001 -> node0002 for SECONDS
  (``ibfab perf --ud``: the data path without the IP stacks, so that what moderation saves is
  not drowned in per-datagram IP work); the CPU time (utime + stime in /proc/<pid>/stat) of the device-host processes
  (``fab.pids()``) over the stream, divided by the datagrams received. All three devices run in
  one host process, so this is sender, switch and receiver together;
- interrupts: the receiver's ``interrupts`` counter (``ipoib_status`` -> ib0 -> ``netdev``) over
  the stream, and per packet; ``rx_usecs_effective`` is what the interface used at the end of the
  stream (for adaptive, what the rate picked).

Why 2048 as well: every device of ``single:2`` runs in one host loop, and the sender's burst of
one loop iteration reaches the receiver as one link burst, so a timer merges bursts only when it
is comparable to an iteration; 2048 us shows that end of the curve.

Nothing is asserted about the figures; each setting prints one line under "targets". They are
written to bench/moderation_results.json, and bench/plot.py draws the trade-off (latency against
CPU per packet and against packets/s, a point per setting) into bench/moderation.png. The bench is
skipped when the device hosts do not have the ``ipoib_coalesce`` RPC (before issue 6's moderation
landed).
"""

from __future__ import annotations

import os
import time

import pytest

import plot as bench_plot
import raw_tools as rt
from fabric.rpc import RpcError

pytest.importorskip("ipoib._fastpath")

NODES = ["node0001", "node0002"]
SETTINGS = [("rx-usecs 0", {"rx_usecs": 0, "adaptive": False}),
            ("rx-usecs 16", {"rx_usecs": 16, "adaptive": False}),
            ("rx-usecs 64", {"rx_usecs": 64, "adaptive": False}),
            ("rx-usecs 256", {"rx_usecs": 256, "adaptive": False}),
            ("rx-usecs 2048", {"rx_usecs": 2048, "adaptive": False}),
            ("adaptive", {"adaptive": True})]
SIZE = 64  # UDP payload of the stream
SECONDS = 1.0
PING_COUNT = 500
_rows: list = []  # one per setting, for the plot


@pytest.fixture(scope="module")
def fab():
    with rt.ipoib_fabric("fast", f"mod-{os.getpid()}") as f:
        try:
            f.client.call("node0001", "ipoib_coalesce", ifname="ib0")
        except RpcError as exc:
            if "unknown operation" in str(exc):
                pytest.skip(f"the device host has no ipoib_coalesce RPC yet (issue 6 interrupt moderation "
                            f"not landed): {exc}")
            raise
        yield f


@pytest.fixture(scope="module", autouse=True)
def results_file(report):
    """After the module: the settings' figures to the JSON, and the trade-off drawn."""
    yield
    if _rows:
        data = {"meta": {"topology": "single:2", "size": SIZE, "seconds": SECONDS, "ping_count": PING_COUNT,
                         "created": time.time()}, "settings": list(_rows)}
        bench_plot.write_and_plot(bench_plot.MODERATION, data, bench_plot.plot_moderation, bench_plot.MODERATION_PNG,
                                  report, "moderation")


def _interrupts(fab, node):
    nd = fab.client.call(node, "ipoib_status")["interfaces"][0].get("netdev", {})
    return nd.get("interrupts")


def _us(x):
    return "-" if x is None else f"{x * 1e6:.1f}"


@pytest.mark.parametrize("label,setting", SETTINGS, ids=[s[0].replace(" ", "") for s in SETTINGS])
def test_moderation_latency_vs_cpu(fab, label, setting, report):
    for n in NODES:
        applied = fab.client.call(n, "ipoib_coalesce", ifname="ib0", **setting)
    lat = rt.fabric_ping_ud(fab, PING_COUNT)
    pids = fab.pids()
    irq0 = _interrupts(fab, NODES[1])
    cpu0 = rt.cpu_seconds(pids)
    perf = rt.fabric_perf(fab, SIZE, SECONDS, ud=True)
    cpu1 = rt.cpu_seconds(pids)
    irq1 = _interrupts(fab, NODES[1])
    after = fab.client.call(NODES[1], "ipoib_coalesce", ifname="ib0")
    med, p99 = rt.median_p99(lat["rtts"])
    rx = perf["received"]
    cpu_pp = (cpu1 - cpu0) / rx if rx else None
    if irq0 is None or irq1 is None:
        irq_text = "interrupts: not reported"
    else:
        irq_text = f"interrupts {irq1 - irq0:,} ({(irq1 - irq0) / rx if rx else 0:.3f}/packet)"
    _rows.append({"label": label, "setting": setting, "rx_usecs_effective": after.get("rx_usecs_effective"),
                  "median_us": med * 1e6 if med is not None else None, "p99_us": p99 * 1e6 if p99 is not None else None,
                  "pps": perf["pps"], "loss_pct": perf["loss_pct"],
                  "cpu_us_per_packet": cpu_pp * 1e6 if cpu_pp is not None else None,
                  "interrupts_per_packet": (irq1 - irq0) / rx if rx and irq0 is not None and irq1 is not None else None})
    report.append(
        f"moderation {label:13s} (rx-frames {applied.get('rx_frames')}, adaptive "
        f"{'on' if applied.get('adaptive') else 'off'}, effective rx-usecs {after.get('rx_usecs_effective', '?')}): "
        f"UD echo RTT median/p99 {_us(med)}/{_us(p99)} us | "
        f"UD {SIZE} B stream {perf['pps']:,.0f} pps, loss {perf['loss_pct']:.1f}%, "
        f"CPU {'-' if cpu_pp is None else f'{cpu_pp * 1e6:.1f}'} us/packet, {irq_text}")
    assert lat["rtts"] and rx > 0
