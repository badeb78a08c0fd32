"""Reading LFTs back: which 64-entry blocks changed (what a sweep rewrites), and a route followed
hop by hop, detecting loops and dead ends."""

from __future__ import annotations

from ..subnet import SmPort, Subnet
from .graph import LFT_BLOCK, NO_ROUTE, TraceError
from .lft import _lft_get


def lft_blocks_changed(old: bytearray | None, new: bytearray) -> list[int]:
    """Indices of the 64-entry blocks in which ``new`` differs from ``old``.

    ``old`` None (never programmed) means every block of ``new``. Entries beyond the end of the
    shorter table count as 0xFF, so a table that shrank reports the blocks that still hold routes
    in ``old`` (the caller may skip those above the new LinearFDBTop).
    """
    nb = (len(new) + LFT_BLOCK - 1) // LFT_BLOCK
    if old is None:
        return list(range(nb))
    ob = (len(old) + LFT_BLOCK - 1) // LFT_BLOCK
    out = []
    pad = b"\xff" * LFT_BLOCK
    for b in range(max(nb, ob)):
        lo, hi = b * LFT_BLOCK, (b + 1) * LFT_BLOCK
        x = bytes(old[lo:hi]).ljust(LFT_BLOCK, b"\xff") if b < ob else pad
        y = bytes(new[lo:hi]).ljust(LFT_BLOCK, b"\xff") if b < nb else pad
        if x != y:
            out.append(b)
    return out


def _owns(p: SmPort, lid: int) -> bool:
    return bool(p.lid) and (lid >> p.lmc) == (p.lid >> p.lmc)


def trace(subnet: Subnet, lfts: dict, src_port: SmPort, dst_lid: int,
          max_hops: int = 64) -> list[SmPort]:
    """The ports a packet from ``src_port`` to ``dst_lid`` leaves through, following ``lfts``
    (``{switch GUID: LFT}``, a bytearray or a ``{lid: port}`` dict).

    The list starts with ``src_port`` when it is a CA port (a switch's port 0 starts with the
    switch's own egress port) and holds one port per cable crossed, so ``len()`` is the hop
    count; it is empty when the source owns the LID. Raises :class:`TraceError` on a loop, a
    missing route, an unlinked egress port, or delivery to the wrong endport.
    """
    path: list[SmPort] = []
    if _owns(src_port, dst_lid):
        return path
    if src_port.node.is_switch:
        node = src_port.node
    else:
        if src_port.remote is None:
            raise TraceError("unlinked", f"{src_port!r} has no cable", path)
        path.append(src_port)
        arrived = src_port.remote
        if not arrived.node.is_switch:
            if _owns(arrived, dst_lid):
                return path
            raise TraceError("wrong_port", f"LID {dst_lid} delivered to {arrived!r}", path)
        node = arrived.node
    seen = set()
    while True:
        if node.guid in seen:
            raise TraceError("loop", f"LID {dst_lid}: loop at {node!r} after "
                             f"{[repr(p) for p in path]}", path)
        seen.add(node.guid)
        if len(path) > max_hops:
            raise TraceError("too_long", f"LID {dst_lid}: more than {max_hops} hops", path)
        out = _lft_get(lfts.get(node.guid), dst_lid)
        if out == 0:
            p0 = node.ports.get(0)
            if p0 is not None and _owns(p0, dst_lid):
                return path
            raise TraceError("wrong_port", f"LID {dst_lid} delivered to port 0 of {node!r}",
                             path)
        if out == NO_ROUTE:
            raise TraceError("no_route", f"{node!r} has no route to LID {dst_lid}", path)
        port = node.ports.get(out)
        if port is None or port.remote is None:
            raise TraceError("unlinked", f"{node!r} routes LID {dst_lid} to port {out}, which "
                             "has no cable", path)
        path.append(port)
        arrived = port.remote
        if not arrived.node.is_switch:
            if _owns(arrived, dst_lid):
                return path
            raise TraceError("wrong_port", f"LID {dst_lid} delivered to {arrived!r}", path)
        node = arrived.node
