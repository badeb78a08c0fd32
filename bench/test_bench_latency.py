"""Issue 6: request/response latency through one switch, per backend, against raw pyzmq in the same
run.

Fabric: ``single:2`` (node0001 -> switch -> node0002 and back), with the device hosts on the
``fast`` or the ``std`` IPoIB backend (IPOIB_BACKEND at launch). One request in flight at a time,
two kinds of request:

- ``ud``: ``ibfab perf --latency --ud``, like ib_send_lat on a UD QP: a UDP-in-IPoIB frame of
  SIZE payload octets posted to the IPoIB QP through rdma_netdev ``send``, reflected by an echo
  hook at the far driver (addresses and ports swapped, sent back through the same data path),
  caught by a hook at ours. This is the data path alone, the provider's latency: the target.
- ``icmp``: ``ibfab perf --latency``, ping -A: an ICMP echo of SIZE data octets through both IP
  stacks (Python), the next request as soon as the last reply is in.

Baseline (bench/raw_tools.py): raw pyzmq client -> forwarder -> echo server -> forwarder -> client,
one-packet bursts of the same length in the links' framing, one in flight. The launcher runs all
devices of ``single:2`` in one device-host process, so the baseline runs all three roles in one
process and one poll loop over ``inproc://`` (were the fabric split over several processes, the
baseline would use three processes over ``ipc://``).

Every round trip is written to bench/latency_results.json, and bench/plot.py draws their CDFs
into bench/latency_cdf.png at the end of the module.
"""

from __future__ import annotations

import contextlib
import os
import time

import pytest

import plot as bench_plot
import raw_tools as rt

pytest.importorskip("ipoib._fastpath")

BACKENDS = ["fast", "std"]
SIZE = 56
COUNT = {"ud": 2000, "icmp": 1000}
_kinds: dict = {}  # kind -> what the plot needs: every round trip per series
_meta: dict = {}


@pytest.fixture(scope="module")
def fabrics():
    with contextlib.ExitStack() as stack:
        yield {b: stack.enter_context(rt.ipoib_fabric(b, f"lat-{b}-{os.getpid()}")) for b in BACKENDS}


@pytest.fixture(scope="module", autouse=True)
def results_file(report):
    """After the module: every round trip to the JSON, and their CDFs drawn."""
    yield
    if _kinds:
        data = {"meta": dict(_meta, topology="single:2", created=time.time()), "kinds": dict(_kinds)}
        bench_plot.write_and_plot(bench_plot.LATENCY, data, bench_plot.plot_latency, bench_plot.LATENCY_PNG,
                                  report, "latency")


def _us(x):
    return "-" if x is None else f"{x * 1e6:7.1f}"


@pytest.mark.parametrize("kind", ["ud", "icmp"])
def test_latency_through_one_switch(fabrics, kind, report):
    layout = rt.layout_of(fabrics["fast"])
    wire = rt.wire_len_udp(SIZE) if kind == "ud" else rt.wire_len_icmp(SIZE)
    got = {}
    for b in BACKENDS:
        got[b] = (rt.fabric_ping_ud if kind == "ud" else rt.fabric_ping_adaptive)(fabrics[b], COUNT[kind], SIZE)
    got["raw"] = rt.request_response(layout, wire, COUNT[kind], "sequential")
    stats = {k: rt.median_p99(v["rtts"]) for k, v in got.items()}
    _meta["layout_text"] = "client, forwarder and echo server in " + (
        "1 process (inproc://)" if layout == "1p" else "3 processes (ipc://)")
    _kinds[kind] = {"size": SIZE, "wire": wire, "count": COUNT[kind],
                    "sent": {k: v["sent"] for k, v in got.items()},
                    "rtts_us": {k: [round(x * 1e6, 2) for x in v["rtts"]] for k, v in got.items()}}
    lost = {k: v["sent"] - len(v["rtts"]) for k, v in got.items()}
    f_med, r_med, s_med = stats["fast"][0], stats["raw"][0], stats["std"][0]
    ratio = f_med / r_med if f_med and r_med else float("inf")
    what = "UD echo at the driver (data path)" if kind == "ud" else "ICMP echo through the IP stacks"
    target = f" (target fast <= 1.3 x raw: {'met' if ratio <= 1.3 else 'NOT met'})" if kind == "ud" else ""
    report.append(
        f"latency {what}, {SIZE} B (wire {wire} B), one in flight: median/p99 us: "
        f"fast {_us(f_med)}/{_us(stats['fast'][1])} | std {_us(s_med)}/{_us(stats['std'][1])} | "
        f"raw pyzmq ({layout}) {_us(r_med)}/{_us(stats['raw'][1])} | lost fast {lost['fast']} std {lost['std']} "
        f"raw {lost['raw']} | fast/raw {ratio:.1f}{target}, std/fast {s_med / f_med if s_med and f_med else 0.0:.2f}")
    assert all(v["rtts"] for v in got.values())
