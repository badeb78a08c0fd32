"""Where a fabric's devices run: over device-host processes (``plan_hosts``) and, for a fabric that
spans several machines, first over the machines (``plan_machines``).

The unit of placement is a switch with the HCAs cabled to it (an HCA cabled to no switch is a unit
of its own): a leaf and its HCAs always share a process, and so a machine. Groups are grown along
the cables: a group starts from the first unit not placed yet (in topology order) and then takes,
one at a time, the unit with the most cables into what it holds so far (the first in topology
order among equals). Growing this way keeps a pod of a three-level fat tree together, and only
the cables between groups cross processes (a ZeroMQ socket) or machines (tcp with CURVE).

Machines are balanced on HCAs, the devices that carry the node software's work: a machine stops
growing at its share of the HCAs not placed yet, or before a unit that would overshoot that share
by more than it would fall short without it; the last machine takes what is left. Switch-only
units (spines) weigh nothing and join the machine whose cables reach them first.
"""

from __future__ import annotations

import math
from collections import Counter


def units_of(topology, devices=None) -> list[list[str]]:
    """The units of placement among ``devices`` (all by default), in topology order."""
    keep = set(topology.nodes) if devices is None else set(devices)
    units: list[list[str]] = []
    seen: set = set()
    for sw in topology.switches():
        if sw.name not in keep:
            continue
        group = [sw.name] + [peer for port in range(1, sw.num_ports + 1)
                             if (pp := topology.peer(sw.name, port)) is not None
                             and topology.nodes[(peer := pp[0])].kind == "hca" and peer not in seen
                             and peer in keep]
        seen.update(group)
        units.append(group)
    for x in topology.nodes:  # HCAs cabled to no switch (back to back): a unit each
        if x in keep and x not in seen:
            seen.add(x)
            units.append([x])
    return units


def _cables(topology, units) -> list[Counter]:
    unit_of = {d: i for i, u in enumerate(units) for d in u}
    cables = [Counter() for _ in units]
    for link in topology.links:
        ua, ub = unit_of.get(link.a), unit_of.get(link.b)
        if ua is not None and ub is not None and ua != ub:
            cables[ua][ub] += 1
            cables[ub][ua] += 1
    return cables


class _Grower:
    """Picks the next unit of a growing group: the most cables into it, else the first unplaced."""

    def __init__(self, units, cables):
        self.units, self.cables = units, cables
        self.placed: set = set()
        self.nxt = 0

    def left(self) -> bool:
        return len(self.placed) < len(self.units)

    def start(self) -> None:
        self.gain: Counter = Counter()

    def peek(self) -> int:
        candidates = [u for u in self.gain if u not in self.placed]
        if candidates:
            return max(candidates, key=lambda c: (self.gain[c], -c))
        while self.nxt in self.placed:
            self.nxt += 1
        return self.nxt

    def take(self, u: int) -> None:
        self.placed.add(u)
        for v, c in self.cables[u].items():
            if v not in self.placed:
                self.gain[v] += c
        self.gain.pop(u, None)


def split_hosts(topology, k: int, devices=None) -> list[list[str]]:
    """``devices`` (all by default) over ``k`` host processes, each filled to about
    ``devices / k``; a unit is not split unless there are fewer units than hosts (then every
    device is one), so the plan may have fewer hosts than ``k``."""
    units = units_of(topology, devices)
    n = sum(len(u) for u in units)
    k = max(1, min(k, n))
    if len(units) < k:
        units = [[d] for u in units for d in u]
    g = _Grower(units, _cables(topology, units))
    size = math.ceil(n / k)
    plan: list[list[str]] = []
    for h in range(k):
        if not g.left():
            break
        last = h == k - 1
        held: list[str] = []
        g.start()
        while g.left() and (last or len(held) < size):
            u = g.peek()
            g.take(u)
            held.extend(units[u])
        plan.append(held)
    return plan


def plan_machines(topology, machines: int) -> list[list[str]]:
    """The devices of each of ``machines`` machines, balanced on HCAs (see the module's text); a
    machine may get nothing when there are fewer units with HCAs than machines."""
    units = units_of(topology)
    weight = [sum(1 for d in u if topology.nodes[d].kind == "hca") for u in units]
    g = _Grower(units, _cables(topology, units))
    plan: list[list[str]] = []
    left_w = sum(weight)
    for m in range(machines):
        held: list[str] = []
        if m == machines - 1:
            while g.left():
                u = g.peek()
                g.take(u)
                held.extend(units[u])
            plan.append(held)
            break
        share = left_w / (machines - m)
        w = 0
        g.start()
        while g.left() and w < share:
            u = g.peek()
            if w and w + weight[u] - share > share - w:
                break  # overshooting the share by more than stopping short of it
            g.take(u)
            held.extend(units[u])
            w += weight[u]
        left_w -= w
        plan.append(held)
    return plan


def crossing(topology, groups: list[list[str]]) -> list[int]:
    """Per group, the cables with one end in it and the other in another group."""
    where = {d: i for i, g in enumerate(groups) for d in g}
    out = [0] * len(groups)
    for link in topology.links:
        a, b = where.get(link.a), where.get(link.b)
        if a is not None and b is not None and a != b:
            out[a] += 1
            out[b] += 1
    return out
