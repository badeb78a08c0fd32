"""Issue 6 harness: the rdma_netdev data path in-process, send -> queue -> poll, per backend.

Both backends run over the same HCA model on a two-HCA LoopNet, with the same frames, in the same
run; each figure is the median of 5 short runs. ``send+poll`` is the TX side; ``loop`` is the
whole data path, send -> TX ring -> link burst -> the receiving HCA -> RX ring -> poll -> a
delivered frame.
"""

import sys
import os
import statistics
import time

import pytest

import ipoib
from ipoib import _stdpath
from ipoib.netdev import AddressHandle, NetdevContext, RdmaNetdev

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from smnet import SmNet  # noqa: E402

_fastpath = pytest.importorskip("ipoib._fastpath")
SIZES = [64, 1024, 4096 - 4]
REPEATS, RUN_S = 5, 0.25  # each figure: the median of 5 runs of 0.25 s (issue 15: at least 5)
_rates = {}


def _netdev(net, name, backend):
    hca = net.devices[name]
    ctx = NetdevContext(hca, 1, deliver=lambda f, i: None, now=lambda: net.now)
    nd = RdmaNetdev.create(ctx, backend.Provider)
    nd.init()
    nd.open()
    return nd, hca.outbox  # what the HCA puts on the wire; the bench empties it as a host would


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name,backend", [("std", _stdpath), ("fast", _fastpath)])
def test_send_poll_rate(name, backend, size, report):
    net = SmNet("single:2")
    net.start_sm()
    nd, out = _netdev(net, "node0001", backend)
    dst = net.devices["node0002"]
    ah = AddressHandle(dlid=dst.ports[1].lid)
    frame = b"\x08\x00\x00\x00" + bytes(size)
    burst = 64
    runs = []
    for _ in range(REPEATS):
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < RUN_S:
            for _ in range(burst):
                nd.send(frame, ah, 0x48)
            nd.poll(burst)
            out.clear()
            n += burst
        runs.append(n / (time.perf_counter() - t0))
    rate = statistics.median(runs)
    _rates[(name, size)] = rate
    if ("std", size) in _rates and ("fast", size) in _rates:
        ratio = _rates[("fast", size)] / _rates[("std", size)]
        target = " (target fast >= 30x std at 64 B: " + ("met" if ratio >= 30 else "NOT met") + ")" if size == 64 else ""
        report.append(f"provider send+poll {size:5d} B: fast {_rates[('fast', size)]:,.0f} pkt/s, std "
                      f"{_rates[('std', size)]:,.0f} pkt/s, ratio {ratio:.2f}{target}; fast serves "
                      f"{sorted(k for k, v in nd.served_by.items() if v == 'provider') or '-'} itself")
    assert rate > 0 and ipoib.backend_name in ("std", "fast")


@pytest.mark.parametrize("name,backend", [("std", _stdpath), ("fast", _fastpath)])
def test_burst_send_poll_rate(name, backend, report):
    net = SmNet("single:2")
    net.start_sm()
    nd, out = _netdev(net, "node0001", backend)
    ah = AddressHandle(dlid=net.devices["node0002"].ports[1].lid)
    frames = [b"\x08\x00\x00\x00" + bytes(60)] * 64
    runs = []
    for _ in range(REPEATS):
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < RUN_S:
            n += nd.send_burst(frames, ah, 0x48)
            nd.poll(64)
            out.clear()
        runs.append(n / (time.perf_counter() - t0))
    rate = statistics.median(runs)
    _rates[(name, "burst")] = rate
    if ("std", "burst") in _rates and ("fast", "burst") in _rates:
        f = _rates[("fast", "burst")]
        report.append(f"provider burst send+poll 64 B: fast {f:,.0f} pkt/s, std {_rates[('std', 'burst')]:,.0f} pkt/s, "
                      f"ratio {f / _rates[('std', 'burst')]:.1f} (target >= 20 M pkt/s: "
                      f"{'met' if f >= 20e6 else 'NOT met'})")
    assert rate > 0


# -- the whole loop: send -> TX ring -> packets on the wire -> receiver's RX ring -> poll ---------

def _pair(backend):
    """Two rdma_netdevs on single:2 (the SM brings the ports up), the receiver with a counting
    deliver. Returns (tx netdev, its wire list, rx netdev, rx HCA, delivered counter)."""
    from fabric.wire.burst import BURST_HEADROOM, LEN, Segment

    net = SmNet("single:2")
    net.start_sm()
    delivered = [0]

    def mk(name, deliver):
        hca = net.devices[name]
        ctx = NetdevContext(hca, 1, deliver=deliver, now=lambda: net.now)
        nd = RdmaNetdev.create(ctx, backend.Provider)
        nd.init()
        nd.open()
        return nd, hca.outbox, hca

    def count(frame, info):
        delivered[0] += 1

    tx, wire, _ = mk("node0001", lambda f, i: None)
    rx, _, rx_hca = mk("node0002", count)
    tx.standard.ctx.qp.qkey = rx.standard.ctx.qp.qkey = 0x1234

    def to_burst(items):
        """What the device host does with a poll's output: one link burst for the receiver."""
        parts, n = [], 0
        for item in items:
            if type(item) is Segment:
                parts.append(bytes(memoryview(item.buf)[BURST_HEADROOM:]))
                n += item.count
            else:
                parts.append(LEN.pack(len(item[1])) + item[1])
                n += 1
        return b"".join(parts), n

    return tx, wire, rx, rx_hca, delivered, to_burst, net


def _loop_rate(backend, size, burst_api):
    tx, wire, rx, rx_hca, delivered, to_burst, net = _pair(backend)
    ah = AddressHandle(dlid=net.devices["node0002"].ports[1].lid)
    dqpn = rx.standard.ctx.qp.qpn
    frames = [b"\x08\x00\x00\x00" + bytes(size)] * 64
    runs = []
    for _ in range(REPEATS):
        delivered[0] = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < RUN_S:
            if burst_api:
                tx.send_burst(frames, ah, dqpn)
            else:
                for f in frames:
                    tx.send(f, ah, dqpn)
            tx.poll(64)
            data, n = to_burst(wire)
            wire.clear()
            rx_hca.receive_burst(1, data, 0, n, net.now)
            rx.poll(64)
        runs.append(delivered[0] / (time.perf_counter() - t0))
        assert delivered[0] > 0
    return statistics.median(runs)


@pytest.mark.parametrize("size", SIZES)
def test_loop_send_ring_poll(size, report):
    """send -> TX ring -> burst -> RX ring -> poll (delivered frames), per-packet API."""
    std = _loop_rate(_stdpath, size, False)
    fast = _loop_rate(_fastpath, size, False)
    target = ""
    if size == 64:
        target = f" (target fast >= 30x std: {'met' if fast >= 30 * std else 'NOT met'})"
    report.append(f"loop send->ring->poll {size:5d} B, per-packet API: fast {fast:,.0f} pkt/s, std {std:,.0f} "
                  f"pkt/s, fast/std {fast / std:.1f}{target}")


def test_loop_send_ring_poll_burst_api(report):
    std = _loop_rate(_stdpath, 64, True)
    fast = _loop_rate(_fastpath, 64, True)
    report.append(f"loop send->ring->poll    64 B, burst API: fast {fast:,.0f} pkt/s, std {std:,.0f} pkt/s, "
                  f"fast/std {fast / std:.1f} (issue 15's target for the whole loop: >= 10 M pkt/s: "
                  f"{'met' if fast >= 10e6 else 'NOT met'})")
