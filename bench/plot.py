"""Plot the end-to-end throughput of test_bench_e2e.py: UDP payload size against Gbit/s and
packets/s, for the std and fast IPoIB backends and the raw pyzmq baseline (and the same for
``perf --ud``, no IP stack, when the run measured it).

    python bench/plot.py [RESULTS_JSON [OUTPUT_PNG]]

Defaults: bench/e2e_results.json -> bench/throughput.png. The benchmark calls :func:`plot` at
the end of its run, so ``make bench`` writes the figure.
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


if __name__ == "__main__":
    args = sys.argv[1:]
    print(plot(*(args[:2])))
