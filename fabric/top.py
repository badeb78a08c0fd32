"""What ``ibfab top`` shows: samples of a running fabric, the rates between two of them, and the
plain-text screen made of those rates (the batch mode prints it, the curses mode draws it).

A sample is one ``top`` RPC per device host (:meth:`fabric.host.ops.HostOps.op_top`), never one per
port. A rate is the difference of a counter between two samples of the same host divided by the
time between them on that host's own clock; a counter that went down (a host restarted, a
``perfquery --reset``) counts as no traffic for that interval rather than as a negative rate.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

SORT_KEYS = ("pkts", "bits", "drops", "name")  # what `s` cycles through, busiest first except name

# perfquery's names for the PortCounters that count what a port dropped; the rest (link_full,
# ingress_down, uncabled) are the emulator's own, for packets no PMA counter holds
_REASON_NAMES = {
    "port_rcv_errors": "RcvErrors", "port_rcv_remote_physical_errors": "RcvRemotePhysErrors",
    "port_rcv_switch_relay_errors": "RcvSwRelayErrors", "port_xmit_discards": "XmitDiscards",
    "port_xmit_constraint_errors": "XmitConstraintErrors", "port_rcv_constraint_errors": "RcvConstraintErrors",
    "vl15_dropped": "VL15Dropped",
}


@dataclass
class Sample:
    """One reading of a fabric: each live host's answer to ``top``, and which hosts gave none."""

    hosts: dict  # host index -> its answer
    missing: dict  # host index -> why it gave none ("dead", "no answer")
    opensm: dict | None = None  # OpenSM's status, when it is the fabric's SM (it is no device host's)
    wall: float = field(default_factory=time.time)


def take_sample(fc) -> Sample:
    """One ``top`` call per live device host of the fabric ``fc`` (a :class:`FabricClient`)."""
    from . import launcher
    from .rpc import RpcError

    hosts, missing = {}, {}
    for i, client in enumerate(fc.clients):
        try:
            got = launcher.ask_live_host(fc.info, i, "top", client)
        except RpcError as exc:
            missing[i] = f"no answer ({exc})"
            continue
        if got is None:
            missing[i] = "dead"
        else:
            hosts[i] = got
    opensm = None
    if (fc.info.data.get("sm") or {}).get("kind") == "opensm":
        from . import opensm as osm

        opensm = osm.status(fc.info)
    return Sample(hosts, missing, opensm)


@dataclass
class PortRow:
    name: str  # device/port
    state: str
    rx_pps: float
    tx_pps: float
    rx_gbps: float
    tx_gbps: float
    drops: dict  # reason -> per second

    @property
    def drop_rate(self) -> float:
        return sum(self.drops.values())

    def busy(self) -> bool:
        return bool(self.rx_pps or self.tx_pps or self.drop_rate)


@dataclass
class Section:
    title: str
    columns: list  # [key, heading, kind]
    rows: list  # [(name, {key: shown value}, sort weight)]
    error: str | None = None


@dataclass
class View:
    """The rates between two samples, ready to show."""

    ports: list
    device_drops: list  # [(device, {reason: per second})], those that dropped anything
    sections: list
    sm: str
    interval: float
    missing: dict
    devices: int  # how many the live hosts run
    hosts: int


def _rate(cur, prev, dt) -> float:
    if cur is None or prev is None or dt <= 0:
        return 0.0
    d = cur - prev
    return d / dt if d > 0 else 0.0


def _rates(cur: dict, prev: dict, dt: float) -> dict:
    return {k: _rate(v, prev.get(k), dt) for k, v in cur.items() if isinstance(v, (int, float))}


def compute(prev: Sample, cur: Sample) -> View:
    ports, device_drops, sections = [], [], {}
    intervals = []
    for i, h in sorted(cur.hosts.items()):
        p = prev.hosts.get(i)
        same = p is not None and p["pid"] == h["pid"]  # a restarted host counts from zero again
        dt = h["now"] - p["now"] if same else 0.0
        if dt > 0:
            intervals.append(dt)
        for dev, d in h["devices"].items():
            pd = p["devices"].get(dev, {}) if same else {}
            dropped = {r: v for r, v in _rates(d["drops"], pd.get("drops", {}), dt).items() if v}
            if dropped:
                device_drops.append((dev, dropped))
            for num, port in d["ports"].items():
                pp = pd.get("ports", {}).get(num, {})
                ext, pext = port["ext"], pp.get("ext", {})
                reasons = _rates(port["errors"], pp.get("errors", {}), dt)
                ports.append(PortRow(
                    f"{dev}/{num}", port["state"],
                    _rate(ext["port_rcv_pkts"], pext.get("port_rcv_pkts"), dt),
                    _rate(ext["port_xmit_pkts"], pext.get("port_xmit_pkts"), dt),
                    # PortRcvData counts 4-octet words
                    _rate(ext["port_rcv_data"], pext.get("port_rcv_data"), dt) * 32 / 1e9,
                    _rate(ext["port_xmit_data"], pext.get("port_xmit_data"), dt) * 32 / 1e9,
                    {_REASON_NAMES.get(r, r): v for r, v in reasons.items() if v}))
        for name, sec in h["sections"].items():
            s = sections.setdefault(name, Section(sec.get("title", name), sec.get("columns", []), []))
            if "error" in sec:
                s.error = f"host {i}: {sec['error']}"
                continue
            psec = (p["sections"].get(name) or {}) if same else {}
            for row, cells in sec.get("rows", {}).items():
                prow = (psec.get("rows") or {}).get(row, {})
                shown, weight = {}, 0.0
                for key, _head, kind in s.columns:
                    v = cells.get(key)
                    if kind == "rate" and isinstance(v, (int, float)):
                        v = _rate(v, prow.get(key), dt)
                        weight += v
                    shown[key] = v
                s.rows.append((row, shown, weight))
    dt = sum(intervals) / len(intervals) if intervals else 0.0
    ndev = sum(len(h["devices"]) for h in cur.hosts.values())
    return View(ports, device_drops, list(sections.values()), sm_line(prev, cur, dt), dt, dict(cur.missing),
                ndev, len(cur.hosts) + len(cur.missing))


def sm_line(prev: Sample, cur: Sample, dt: float) -> str:
    """The SM as ``ibfab sm status`` says it, in one line: where, its role, state and sweeps."""
    if cur.opensm is not None:
        o = cur.opensm
        if not o.get("running"):
            return "SM: OpenSM not running"
        n = o["subnet_up_count"]
        return f"SM: OpenSM (pid {o['pid']}) MASTER, logged SUBNET UP {n} time{'s' if n != 1 else ''}"
    sms = [h["sm"] for h in cur.hosts.values() if h.get("sm")]
    if not sms:
        return "SM: none running"
    sms.sort(key=lambda s: (s.get("sm_state") != "master", s.get("node", "")))
    old = {s.get("node"): s for h in prev.hosts.values() if h.get("sm") for s in [h["sm"]]}
    parts = []
    for st in sms:
        before = old.get(st.get("node"), {}).get("sweeps")
        delta = f" (+{st['sweeps'] - before})" if isinstance(before, int) and st.get("sweeps", 0) >= before else ""
        parts.append(f"{st.get('node')} port {st.get('port')} {str(st.get('sm_state', '?')).upper()} "
                     f"priority {st.get('priority', 0)}, {st.get('state')}, sweeps {st.get('sweeps')}{delta}")
    return "SM: " + "; ".join(parts)


# -- the screen --------------------------------------------------------------------------------

def natural(name: str) -> list:
    """leaf01/2 before leaf01/10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def sort_ports(rows: list, key: str) -> list:
    if key == "name":
        return sorted(rows, key=lambda r: natural(r.name))
    weight = {"pkts": lambda r: r.rx_pps + r.tx_pps, "bits": lambda r: r.rx_gbps + r.tx_gbps,
              "drops": lambda r: r.drop_rate}[key]
    return sorted(rows, key=lambda r: (-weight(r), -(r.rx_pps + r.tx_pps), natural(r.name)))


def _num(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.0f}"
    return str(v)


def port_lines(view: View, sort: str = "pkts", idle: bool = True) -> list:
    rows = [r for r in sort_ports(view.ports, sort) if idle or r.busy()]
    w = max([len("PORT")] + [len(r.name) for r in rows])
    out = [(f"{'PORT':<{w}} {'STATE':<8} {'rx pkt/s':>10} {'tx pkt/s':>10} {'rx Gb/s':>8} {'tx Gb/s':>8} "
            f"{'drop/s':>8}  drops by reason")]
    for r in rows:
        why = " ".join(f"{k}={v:.0f}" for k, v in sorted(r.drops.items()))
        out.append(f"{r.name:<{w}} {r.state:<8} {r.rx_pps:>10.0f} {r.tx_pps:>10.0f} {r.rx_gbps:>8.3f} "
                   f"{r.tx_gbps:>8.3f} {r.drop_rate:>8.0f}  {why}".rstrip())
    return out


def drop_lines(view: View) -> list:
    if not view.device_drops:
        return []
    out = ["DEVICE DROPS (per second, by reason)"]
    for dev, reasons in sorted(view.device_drops, key=lambda x: (-sum(x[1].values()), x[0])):
        out.append(f"{dev}: " + " ".join(f"{k}={v:.0f}" for k, v in sorted(reasons.items())))
    return out


def section_lines(sec: Section, idle: bool = True) -> list:
    rows = sorted(sec.rows, key=lambda r: (-r[2], natural(r[0])))
    if not idle:
        rows = [r for r in rows if r[2]]
    w = max([len(sec.title)] + [len(r[0]) for r in rows])
    heads = [(key, head, max(len(head), *(len(_num(c.get(key))) for _, c, _ in rows)) if rows else len(head))
             for key, head, _kind in sec.columns]
    out = [f"{sec.title.upper():<{w}} " + " ".join(f"{h:>{n}}" for _, h, n in heads)]
    for name, cells, _ in rows:
        out.append(f"{name:<{w}} " + " ".join(f"{_num(cells.get(k)):>{n}}" for k, _, n in heads))
    if sec.error:
        out.append(f"  ({sec.error})")
    return out


def header_lines(name: str, view: View, sort: str, when: float) -> list:
    stamp = time.strftime("%H:%M:%S", time.localtime(when))
    hosts = f"{view.hosts} host{'s' if view.hosts != 1 else ''}"
    line = (f"ibfab top - {stamp}  fabric {name!r}: {view.devices} devices on {hosts}, "
            f"interval {view.interval:.2f} s, sorted by {sort}")
    out = [line, view.sm]
    for i, why in sorted(view.missing.items()):
        out.append(f"device host {i}: {why}")
    return out


def screen(name: str, view: View, *, sort: str = "pkts", idle: bool = True, when: float | None = None,
           height: int | None = None) -> list:
    """The lines of one refresh. With ``height``, they fit it: the header, then each block (ports
    first) keeps at least its heading and first rows, and the rest of the room goes to the ports."""
    head = header_lines(name, view, sort, when or time.time())
    blocks = [port_lines(view, sort, idle), drop_lines(view)] + [section_lines(s, idle) for s in view.sections]
    blocks = [b for b in blocks if b]
    if height is None:
        out = list(head)
        for b in blocks:
            out += [""] + b
        return out
    room = max(0, height - len(head) - len(blocks))  # a blank line before each block
    keep = [min(len(b), 3) for b in blocks]
    while sum(keep) > room and any(keep):
        i = max(range(len(keep)), key=lambda k: (keep[k], -k))
        keep[i] -= 1
    left = room - sum(keep)
    for i, b in enumerate(blocks):  # the ports first, then each section in turn
        more = min(len(b) - keep[i], left)
        keep[i] += more
        left -= more
    out = list(head)
    for b, k in zip(blocks, keep):
        if k:
            out += [""] + b[:k]
            if k < len(b) and k > 1:  # say what did not fit rather than cut it off unseen
                out[-1] = f"... {len(b) - k + 1} more rows (i hides the idle ones)"
    return out[:height]
