"""Ring core: push + pop of a packet, fast backend against std, in the same run."""

import pytest

from ipoib import _stdpath

_fastpath = pytest.importorskip("ipoib._fastpath")

SIZES = [64, 1024, 4096]
BATCH = 32
_times = {}


def _cycle(ring, pkts):
    ring.push_many(pkts)
    ring.pop_many(BATCH)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("backend", ["std", "fast"])
def test_ring_push_pop_burst(benchmark, backend, size, report):
    mod = _fastpath if backend == "fast" else _stdpath
    ring = mod.PacketRing(256, 4096)
    pkts = [bytes(size)] * BATCH
    benchmark(_cycle, ring, pkts)
    per_pkt = benchmark.stats.stats.median / BATCH
    _times[(backend, size)] = per_pkt
    if backend == "fast" and ("std", size) in _times:
        ratio = _times[("std", size)] / per_pkt
        report.append(f"ring burst {size:5d} B: fast {1 / per_pkt / 1e6:6.2f} Mpps, "
                      f"std {1 / _times[('std', size)] / 1e6:6.2f} Mpps, fast/std = {ratio:5.1f}x")
