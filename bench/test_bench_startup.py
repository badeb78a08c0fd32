"""Issue 3: start-up time, memory and idle CPU of fattree:4,2,24,6 (96 HCAs, 6 switches, 6 parallel
links per leaf-spine pair), through the same launcher `ibfab up` uses. The 2,592-HCA tree's time to
SUBNET UP joins test_bench_sm.py's in bench/bringup_results.json and bench/bringup.png."""

import os
import time

import plot as bench_plot
from fabric import Fabric
from fabric.topology import load_topology
from soak import rss_kib  # tests/ is on the path (bench/conftest.py)

TOPO = "fattree:4,2,24,6"
CLK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


def test_startup_memory_idle_cpu(report):
    t0 = time.perf_counter()
    with Fabric(TOPO, name="benchup", sm=False) as fab:
        up = time.perf_counter() - t0
        pids = fab.pids()
        rss = sum(rss_kib(p) for p in pids)
        time.sleep(0.5)
        c0 = sum(_cpu_seconds(p) for p in pids)
        idle = 5.0
        time.sleep(idle)
        c1 = sum(_cpu_seconds(p) for p in pids)
        devices = len(fab.devices())
    cpu_pct = 100.0 * (c1 - c0) / idle
    report.append(f"start-up {TOPO}: {devices} devices in {len(pids)} processes, every link up in {up:.2f} s; "
                  f"memory {rss / 1024:.1f} MiB RSS in all; idle CPU {cpu_pct:.2f} % of one core over {idle:.0f} s "
                  f"(target: no CPU when idle: {'met' if cpu_pct < 1.0 else 'NOT met'})")
    assert devices == 102


BIG = "fattree3:8,18,18,18,4"  # 2,592 HCAs, 360 switches: a three-level fat tree


def test_three_level_fattree_comes_up_with_ipoib(report):
    """Issue 15: the 2,592-HCA three-level fat tree with IPoIB on every HCA, our SM: time to SUBNET
    UP, the memory of all processes, and the CPU they use once the fabric is idle (every port
    joined, nothing sent)."""
    t0 = time.perf_counter()
    with Fabric(BIG, name="benchbig", timeout=600) as fab:
        d = fab.info.data  # Fabric() returns once every ib0 joined: SUBNET UP came before
        up = time.perf_counter() - t0 - d["up_seconds"] + d["subnet_up_seconds"]
        joined = d["up_seconds"] - d["subnet_up_seconds"]
        st = fab.sm_status()
        pids = fab.pids()
        time.sleep(10.0)  # the joins and the multicast trees after SUBNET UP settle
        rss = sum(rss_kib(p) for p in pids)
        c0 = sum(_cpu_seconds(p) for p in pids)
        idle = 5.0
        time.sleep(idle)
        c1 = sum(_cpu_seconds(p) for p in pids)
    cpu_pct = 100.0 * (c1 - c0) / idle
    sm = st.get("status", st) if isinstance(st, dict) else {}
    report.append(f"{BIG} (2,592 HCAs, 360 switches, IPoIB on): SUBNET UP {up:.1f} s from launch, every ib0 "
                  f"joined {joined:.1f} s later "
                  f"(SMPs {sm.get('engine_sent')}, timed out and answered late {sm.get('late_answers')}, "
                  f"failed {sm.get('failed')}); memory {rss / 1024:.0f} MiB RSS in {len(pids)} processes; "
                  f"idle CPU {cpu_pct:.2f} % of one core over {idle:.0f} s "
                  f"(target: comes up, and no CPU when idle: {'met' if cpu_pct < 1.0 else 'NOT met'})")
    points: dict = {}
    bench_plot.add_bringup_point(points, "ours_ipoib", BIG, len(load_topology(BIG).hcas()), [up])
    bench_plot.write_and_plot(bench_plot.BRINGUP, {"points": points}, bench_plot.plot_bringup, bench_plot.BRINGUP_PNG,
                              report, "bring-up", merge=True)
    assert sm.get("failed") == 0
