"""IPoIB's sections of ``ibfab top``: each interface's traffic, interrupts and NAPI polls, and each
queue's traffic and ring fill, read on the device host inside the fabric's ``top`` operation
(:meth:`fabric.host.DeviceHost.add_sampler`), so a refresh stays one call per host.

The counters are those of ``ibfab queues`` (ethtool -S) and the interface's own; a provider that
does not count something (the standard one has no interrupts, NAPI or rings of its own) shows
``None``, which ``top`` prints as ``-``.
"""

from __future__ import annotations

import sys

from . import std

INTERFACE_COLUMNS = [
    ["provider", "prov", "value"],
    ["rx_pkts", "rx pkt/s", "rate"],
    ["tx_pkts", "tx pkt/s", "rate"],
    ["drops", "drop/s", "rate"],
    ["irqs", "irq/s", "rate"],
    ["napi", "napi/s", "rate"],
]
QUEUE_COLUMNS = [
    ["rx_pkts", "rx pkt/s", "rate"],
    ["rx_ring", "rx ring", "value"],
    ["napi", "napi/s", "rate"],
    ["overflow", "ovfl/s", "rate"],
    ["tx_pkts", "tx pkt/s", "rate"],
    ["tx_ring", "tx ring", "value"],
    ["busy", "busy/s", "rate"],
]


def _ring_sizes(ifc) -> tuple:
    """(TX slots, RX slots) of the interface's provider: its module's ring sizes, or the standard
    provider's send and receive queue lengths (ipoib_sendq_size, ipoib_recvq_size)."""
    prov = ifc.netdev.provider
    if prov is None:
        return std.SENDQ_SIZE, std.RECVQ_SIZE
    mod = sys.modules.get(type(prov).__module__)
    return getattr(mod, "TX_SLOTS", None), getattr(mod, "RX_SLOTS", None)


def _fill(used, slots) -> str | None:
    if used is None:
        return None
    return f"{used}/{slots}" if slots else str(used)


def interface_rows(nodes: dict) -> dict:
    rows = {}
    for name, node in nodes.items():
        for ifname, ifc in node.ifs.items():
            qs = ifc.netdev.queue_stats()
            nd = getattr(ifc.netdev.standard.ctx, "stats", None) or {}
            prov = ifc.netdev.provider
            overflow = sum(v for k, v in qs.items() if k.startswith("rx") and k.endswith("_overflow"))
            rows[f"{name} {ifname}"] = {
                "provider": getattr(prov, "name", None) or "std",
                "rx_pkts": ifc.stats["rx_packets"], "tx_pkts": ifc.stats["tx_packets"],
                # what the ULP dropped either way, and what a full receive ring refused below it
                "drops": ifc.stats["rx_dropped"] + ifc.stats["tx_dropped"] + overflow,
                "irqs": qs.get("interrupts", nd.get("interrupts")) if prov is not None else None,
                "napi": nd.get("napi_polls") if prov is not None else None,
            }
    return rows


def queue_rows(nodes: dict) -> dict:
    rows = {}
    for name, node in nodes.items():
        for ifname, ifc in node.ifs.items():
            qs = ifc.netdev.queue_stats()
            tx_slots, rx_slots = _ring_sizes(ifc)
            q = 0
            while f"tx{q}_packets" in qs or f"rx{q}_packets" in qs:
                rows[f"{name} {ifname} q{q}"] = {
                    "rx_pkts": qs.get(f"rx{q}_packets"), "rx_ring": _fill(qs.get(f"rx{q}_queued"), rx_slots),
                    "napi": qs.get(f"rx{q}_napi_polls"), "overflow": qs.get(f"rx{q}_overflow"),
                    "tx_pkts": qs.get(f"tx{q}_packets"), "tx_ring": _fill(qs.get(f"tx{q}_queued"), tx_slots),
                    "busy": qs.get(f"tx{q}_busy"),
                }
                q += 1
    return rows


def attach_top(host, nodes: dict) -> None:
    """IPoIB's two sections of ``ibfab top`` on ``host``, over its ``nodes`` ({HCA: IPoIBNode})."""
    host.add_sampler("ipoib_interfaces", lambda now: {"title": "IPoIB interfaces", "columns": INTERFACE_COLUMNS,
                                                      "rows": interface_rows(nodes)})
    host.add_sampler("ipoib_queues", lambda now: {"title": "IPoIB queues", "columns": QUEUE_COLUMNS,
                                                  "rows": queue_rows(nodes)})
