"""Issue 17: a fabric across machines, measured across one tcp:// CURVE link between two network
namespaces (the machines of tests/test_multimachine.py), against raw pyzmq over tcp:// with CURVE
between the same namespaces, with the same framing and bursts, in one run.

- ``perf --ud`` node0001 -> node0004 on fattree:2,1,2,1: node0001 and leaf01 on the first
  machine, spine01, leaf02 and node0004 on the second; one cable (leaf01-spine01) is the tcp
  link. Raw: a generator in the first namespace, a sink in the second, one CURVE connection.
- forwarding: the same fabric path forwards through three switches, one across the link; raw: the
  generator, then a forwarder that receives over CURVE and re-sends each burst (destination port
  rewritten) over ipc:// to the sink beside it in the second namespace.

Plaintext raw tcp is printed too, to show what CURVE itself costs. Targets are printed, not
asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import raw_tools as rt
import test_multimachine

cluster = test_multimachine.cluster  # the namespaces and the fabric across them, as the tests make them

TOOLS = os.path.join(os.path.dirname(__file__), "curve_tools.py")
SECONDS = float(os.environ.get("IBFAB_BENCH_MM_SECONDS", "2"))
SIZES = [int(x) for x in os.environ.get("IBFAB_BENCH_MM_SIZES", "64,1024").split(",")]
pytestmark = pytest.mark.timeout(300)


def _in(cluster, ns, *args, **kw):
    return subprocess.Popen(["ip", "netns", "exec", cluster.ns[ns], sys.executable, TOOLS, *args], env=cluster.env,
                            stdout=subprocess.PIPE, text=True, **kw)


def _raw(cluster, wire, burst, keys, via_fwd=False) -> dict:
    port = 17900
    ep = f"tcp://{cluster.addr[1]}:{port}"
    sink_ep = f"ipc://{cluster.run_dir}/raw-sink" if via_fwd else ep
    procs = []
    try:
        sink = _in(cluster, 1, "sink", sink_ep, keys if not via_fwd else "none", "1.0")
        procs.append(sink)
        assert sink.stdout.readline().strip() == "ready"
        if via_fwd:
            fwd = _in(cluster, 1, "fwd", ep, sink_ep, keys)
            procs.append(fwd)
            assert fwd.stdout.readline().strip() == "ready"
        gen = _in(cluster, 0, "gen", ep, keys, str(wire), str(burst), str(SECONDS))
        procs.append(gen)
        gen.wait(timeout=SECONDS + 60)
        out = json.loads(sink.stdout.readline())
    finally:
        for p in procs:
            p.kill()
            p.wait()
    secs = out["seconds"] or 1e-9
    return {"pps": out["packets"] / secs, "gbps": out["packets"] * wire * 8 / secs / 1e9, "packets": out["packets"]}


def _ours(cluster, size) -> dict:
    r = cluster.ibfab("perf", "node0001", "node0004", "--ud", "--size", str(size), "--seconds", str(SECONDS),
                      "--json", timeout=SECONDS + 60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("size", SIZES)
def test_ud_and_forwarding_across_a_curve_link(cluster, size, report):
    wire, burst = rt.wire_len_udp(size), rt.ud_burst() or 32
    keys = os.path.join(cluster.run_dir, "curve.keys")
    ours = _ours(cluster, size)
    raw = _raw(cluster, wire, burst, keys)
    raw_fwd = _raw(cluster, wire, burst, keys, via_fwd=True)
    plain = _raw(cluster, wire, burst, "none")
    pps = ours.get("pps") or ours.get("received", 0) / (ours.get("seconds") or 1)
    report.append(f"across machines, perf --ud {size:4d} B (wire {wire} B, bursts of {burst}): ours {pps:9,.0f} pps "
                  f"(loss {ours.get('loss_pct', 0):.0f}%: UD drops where raw blocks) | "
                  f"raw CURVE {raw['pps']:9,.0f} pps (ratio {pps / raw['pps']:.2f}) | raw CURVE + forwarder "
                  f"{raw_fwd['pps']:9,.0f} pps (forwarding ratio {pps / raw_fwd['pps']:.2f}) | raw plaintext "
                  f"{plain['pps']:9,.0f} pps (CURVE costs {1 - raw['pps'] / plain['pps']:.0%})")
    assert pps > 0 and raw["packets"] > 0 and raw_fwd["packets"] > 0
