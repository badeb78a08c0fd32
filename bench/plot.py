"""The plots of ``make bench``, each drawn from the JSON its benchmark writes:

- throughput.png (test_bench_e2e.py -> e2e_results.json): UDP payload size against Gbit/s and
  packets/s, for the std and fast IPoIB backends and the raw pyzmq baseline (and the same for
  ``perf --ud``, no IP stack, when the run measured it);
- latency_cdf.png (test_bench_latency.py -> latency_results.json): the distribution of every round
  trip, per backend and for raw pyzmq, for the UD echo at the driver and the ICMP echo;
- moderation.png (test_bench_moderation.py -> moderation_results.json): per interrupt moderation
  setting, the echo's round trip against CPU per packet and against the stream's packets/s;
- bringup.png (test_bench_sm.py, test_bench_startup.py -> bringup_results.json): time to SUBNET UP
  by fabric size, ours against OpenSM on ibsim (and OpenSM on our fabric).

    python bench/plot.py [throughput|latency|moderation|bringup ...]   # redraw from the JSON files

Each benchmark calls :func:`write_and_plot` at the end of its run. matplotlib is the ``bench``
extra: without it the JSON is still written and the plot is skipped with a note.
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "e2e_results.json")
OUTPUT = os.path.join(HERE, "throughput.png")
SERIES = [("raw", "raw pyzmq", "tab:gray", "s", "--"), ("fast", "IPoIB fast", "tab:blue", "o", "-"),
          ("std", "IPoIB std", "tab:orange", "^", "-"),
          ("fast_gso", "IPoIB fast, --gso (UDP GSO+GRO)", "tab:purple", "P", "-"),
          ("std_gso", "IPoIB std, --gso (software GSO, no GRO)", "tab:brown", "*", "-"),
          # perf --ud (frames straight to the QP, counted at the driver), when the run had it
          ("raw_ud", "raw pyzmq, --ud bursts", "silver", "x", ":"),
          ("fast_ud", "IPoIB fast, perf --ud", "tab:green", "D", "-."),
          ("std_ud", "IPoIB std, perf --ud", "tab:red", "v", "-.")]


def plot(results: str = RESULTS, output: str = OUTPUT) -> str:
    plt = _pyplot()

    with open(results) as f:
        data = json.load(f)
    rows = sorted(data["sizes"], key=lambda r: r["size"])
    fig, (ax_g, ax_p) = plt.subplots(1, 2, figsize=(11, 4.5))
    for key, label, color, marker, style in SERIES:
        pts = [(r["size"], r[key]) for r in rows if r.get(key)]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ax_g.plot(xs, [p[1]["gbps"] for p in pts], style, color=color, marker=marker, label=label)
        ax_p.plot(xs, [p[1]["pps"] for p in pts], style, color=color, marker=marker, label=label)
    for ax, ylabel in ((ax_g, "UDP payload Gbit/s"), (ax_p, "packets/s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([r["size"] for r in rows])
        ax.set_xticklabels([str(r["size"]) for r in rows])
        ax.set_xlabel("UDP payload (octets)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    meta = data.get("meta", {})
    ud = f" (perf --ud: {meta['ud_burst']})" if meta.get("ud_burst") else ""
    fig.suptitle(f"IPoIB UDP, {meta.get('topology', 'single:2')} (node -> switch -> node), bursts of "
                 f"{meta.get('burst', '?')}{ud}; raw: {meta.get('raw_layout_text', '')}", fontsize=10)
    return _save(plt, fig, output)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, output: str) -> str:
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def write_and_plot(results: str, data: dict, draw, output: str, report: list, what: str, merge: bool = False) -> None:
    """Write ``data`` to ``results`` (with ``merge``, over what the file holds: benchmarks that
    share a file keep each other's points) and draw ``output`` from it; say what was written, or
    that the plot was skipped, in the benchmark's report (printed under "targets")."""
    if merge and os.path.exists(results):
        with open(results) as f:
            old = json.load(f)
        for k, v in data.items():
            old[k] = dict(old.get(k, {}), **v) if isinstance(v, dict) else v
        data = old
    with open(results, "w") as f:
        json.dump(data, f, indent=1)
    try:
        png = draw(results, output)
        line = f"{what}: numbers in {os.path.relpath(results)}, plot in {os.path.relpath(png)}"
    except ImportError as exc:
        line = f"{what}: numbers in {os.path.relpath(results)}; plot skipped: {exc} (pip install '.[bench]')"
    report.append(line)


LATENCY = os.path.join(HERE, "latency_results.json")
LATENCY_PNG = os.path.join(HERE, "latency_cdf.png")
_LAT_SERIES = [("raw", "raw pyzmq", "tab:gray", "--"), ("fast", "IPoIB fast", "tab:blue", "-"),
               ("std", "IPoIB std", "tab:orange", "-")]
_LAT_TITLES = {"ud": "UD echo at the driver (perf --latency --ud)",
               "icmp": "ICMP echo through the IP stacks (perf --latency)"}


def plot_latency(results: str = LATENCY, output: str = LATENCY_PNG) -> str:
    """The CDF of the round trips of each kind of echo, per backend and for raw pyzmq."""
    plt = _pyplot()
    with open(results) as f:
        data = json.load(f)
    kinds = [k for k in ("ud", "icmp") if k in data["kinds"]]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        d = data["kinds"][kind]
        for key, label, color, style in _LAT_SERIES:
            us = sorted(d["rtts_us"].get(key) or [])
            if not us:
                continue
            n = len(us)
            med = us[n // 2]
            ax.plot(us, [(i + 1) / n for i in range(n)], style, color=color,
                    label=f"{label}: median {med:.0f} us, p99 {us[min(n - 1, int(n * 0.99))]:.0f} us")
        ax.set_xscale("log")
        ax.set_xlabel("round trip (us, log scale)")
        ax.set_ylabel("fraction of echoes at most this long")
        ax.set_title(f"{_LAT_TITLES.get(kind, kind)}\n{d.get('size')} B, wire {d.get('wire')} B, one in flight",
                     fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Latency through one switch ({data.get('meta', {}).get('topology', 'single:2')}); "
                 f"raw pyzmq: {data.get('meta', {}).get('layout_text', '')}", fontsize=10)
    return _save(plt, fig, output)


MODERATION = os.path.join(HERE, "moderation_results.json")
MODERATION_PNG = os.path.join(HERE, "moderation.png")


def plot_moderation(results: str = MODERATION, output: str = MODERATION_PNG) -> str:
    """Each moderation setting as a point: the echo's median round trip (bar to its p99) against
    the stream's CPU per packet, and against its packets/s."""
    plt = _pyplot()
    with open(results) as f:
        data = json.load(f)
    rows = data["settings"]
    fig, (ax_c, ax_p) = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, xlabel in ((ax_c, "cpu_us_per_packet", "CPU per packet of the stream (us, all three devices)"),
                            (ax_p, "pps", "stream packets/s")):
        pts = [r for r in rows if r.get(key) is not None and r.get("median_us") is not None]
        xs = [r[key] for r in pts]
        ys = [r["median_us"] for r in pts]
        err = [[0] * len(pts), [r["p99_us"] - r["median_us"] for r in pts]]
        ax.errorbar(xs, ys, yerr=err, fmt="o", color="tab:blue", ecolor="tab:gray", capsize=3)
        for r, x, y in zip(pts, xs, ys):
            ax.annotate(r["label"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("UD echo round trip, median (bar: p99), us")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    meta = data.get("meta", {})
    fig.suptitle(f"Interrupt moderation, fast backend, {meta.get('topology', 'single:2')}: "
                 f"{meta.get('size', '?')} B perf --ud stream of {meta.get('seconds', '?')} s; "
                 f"echo {meta.get('ping_count', '?')} x 56 B", fontsize=10)
    return _save(plt, fig, output)


BRINGUP = os.path.join(HERE, "bringup_results.json")
BRINGUP_PNG = os.path.join(HERE, "bringup.png")
_BRINGUP_SERIES = [("opensm_ibsim", "OpenSM on ibsim", "tab:gray", "s", "--"),
                   ("ours_none", "ours, from launch (no IPoIB)", "tab:blue", "o", "-"),
                   ("ours_ipoib", "ours, from launch (IPoIB on)", "tab:green", "D", "-"),
                   ("opensm_ours", "OpenSM on our fabric", "tab:red", "^", "-."),
                   ("opensm_ibsim_placed", "OpenSM on ibsim, one CPU, SCHED_BATCH", "tab:gray", "v", ":")]


def add_bringup_point(points: dict, series: str, spec: str, hcas: int, seconds: list) -> None:
    """One fabric size of one kind of bring-up (a series of _BRINGUP_SERIES); the repeats of the
    same are pooled."""
    import statistics

    p = points.setdefault(f"{series} {spec}", {"series": series, "topology": spec, "hcas": hcas, "seconds": []})
    p["seconds"] = p["seconds"] + [round(x, 4) for x in seconds]
    p["median_s"] = statistics.median(p["seconds"])


def plot_bringup(results: str = BRINGUP, output: str = BRINGUP_PNG) -> str:
    """Seconds to SUBNET UP against the number of HCAs, one line per kind of bring-up (the
    median of the repeats; each repeat as a faint dot)."""
    plt = _pyplot()
    with open(results) as f:
        data = json.load(f)
    fig, ax = plt.subplots(figsize=(8, 5.2))
    sizes = {}  # HCAs -> the topology of that size, named once on the axis
    for key, label, color, marker, style in _BRINGUP_SERIES:
        pts = sorted((p for p in data.get("points", {}).values() if p["series"] == key), key=lambda p: p["hcas"])
        if not pts:
            continue
        ax.plot([p["hcas"] for p in pts], [p["median_s"] for p in pts], style, color=color, marker=marker,
                label=label)
        for p in pts:
            ax.scatter([p["hcas"]] * len(p["seconds"]), p["seconds"], color=color, alpha=0.3, s=10)
            sizes[p["hcas"]] = p["topology"]
    ax.set_xscale("log")
    ax.set_xticks(sorted(sizes))
    ax.set_xticklabels([f"{n:,}\n{sizes[n]}" for n in sorted(sizes)], fontsize=8)
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("HCAs in the fat tree (log scale)")
    ax.set_ylabel("seconds to SUBNET UP (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Subnet bring-up by fabric size: ours (launch to SUBNET UP) against OpenSM "
                 "(its start to SUBNET UP)", fontsize=9)
    return _save(plt, fig, output)


PLOTS = {"throughput": (plot, RESULTS, OUTPUT), "latency": (plot_latency, LATENCY, LATENCY_PNG),
         "moderation": (plot_moderation, MODERATION, MODERATION_PNG),
         "bringup": (plot_bringup, BRINGUP, BRINGUP_PNG)}


if __name__ == "__main__":
    for name in sys.argv[1:] or list(PLOTS):
        fn, results, output = PLOTS[name]
        if os.path.exists(results):
            print(fn(results, output))
        else:
            print(f"{name}: no {os.path.relpath(results)} yet (run its benchmark)")
