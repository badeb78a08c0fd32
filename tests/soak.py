"""The soak: mixed traffic over a running fabric while cables flap and device hosts are killed and
restarted, with exact packet conservation on every link checked at each quiet checkpoint.

Conservation, per cable and direction, between two checkpoints at which neither end's host
restarted: every packet the sending port counted (PortXmitPkts, extended) is counted by the
receiving port (PortRcvPkts, which includes packets with errors) or as lost with a reason (it came
while that port was down; the sender's link queue was full; the sender's port had no cable). A
checkpoint stops the traffic, lets the fabric go quiet, and reads every device; SM sweeps and
IPoIB's own packets may still be in flight, so a checkpoint whose sums do not meet is read again
(up to a few times) before a difference counts as a loss.

``Soak(fab, seconds).run()`` returns the figures ``make soak`` reports (and RESULTS.md keeps).
"""

from __future__ import annotations

import random
import time

from fabric import launcher

GROUP = "239.7.7.7"
MPORT = 7777


def rss_kib(pid: int) -> int | None:
    """A process's resident set (VmRSS), KiB; None if it is gone (the soak and the start-up bench)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Soak:
    def __init__(self, fab, seconds: float, *, flap_every: float = 4.0, kill_every: float = 60.0,
                 checkpoint_every: float = 15.0, victims=(1, 2), seed: int = 1):
        self.fab = fab
        self.seconds = seconds
        self.flap_every = flap_every
        self.kill_every = kill_every
        self.checkpoint_every = checkpoint_every
        self.victims = list(victims)
        self.rng = random.Random(seed)
        self.topo = fab.topology
        self.links = [(lk.a, lk.a_port, lk.b, lk.b_port) for lk in self.topo.links]
        self.hcas = [n.name for n in self.topo.hcas()]
        self.ip = {h: fab.nodes[h].ip for h in self.hcas}  # fixed: 198.18.0.N by node index
        self.report = {"seconds": seconds, "checkpoints": 0, "links_checked": 0, "packets": 0,
                       "flaps": 0, "kills": 0, "recoveries_s": [], "violations": [], "lost": {},
                       "drops": {}, "rss_kb": {}, "pings": {"sent": 0, "received": 0},
                       "udp_datagrams": 0, "mcast_joins": 0, "mcast_leaves": 0}
        self.pings: dict = {}  # (src, dst) -> ping id
        self.mcast_socks: dict = {}
        self.sender = None

    # -- traffic -------------------------------------------------------------------------------

    def _call(self, dev, op, **kw):
        return self.fab.client.call(dev, op, **kw)

    def _alive(self, dev) -> bool:
        return self.fab.info.host_of(dev) not in launcher.dead_hosts(self.fab.info)

    def start_traffic(self) -> None:
        ip = {h: self.ip[h] for h in self.hcas if self._alive(h)}
        pairs = [(a, b) for a in ip for b in ip if a != b]
        self.rng.shuffle(pairs)
        for a, b in pairs[:4]:
            try:
                self.pings[(a, b)] = self._call(a, "ping_start", dst=ip[b], count=100000, interval=0.02,
                                                timeout=0.5)
            except Exception:
                pass
        src = next(iter(ip), None)
        if src is not None and self.sender is None:
            try:
                self.sender = (src, self._call(src, "udp_open")["sock"])
            except Exception:
                self.sender = None

    def stop_traffic(self) -> None:
        for (a, _b), pid in list(self.pings.items()):
            try:
                r = self._call(a, "ping_stop", ping=pid)
                if r and r.get("summary"):
                    self.report["pings"]["sent"] += r["summary"]["transmitted"]
                    self.report["pings"]["received"] += r["summary"]["received"]
            except Exception:
                pass
        self.pings.clear()

    def udp_and_mcast(self) -> None:
        """A few datagrams to the group and to each node; a member joins or leaves now and then."""
        if self.sender is not None:
            src, sock = self.sender
            try:
                for h in self.hcas:
                    if h != src and self._alive(h):
                        self._call(src, "udp_sendto", sock=sock, data=b"s" * 1400, ip=self.ip[h], port=9)
                        self.report["udp_datagrams"] += 1
                self._call(src, "udp_sendto", sock=sock, data=b"m" * 200, ip=GROUP, port=MPORT)
                self.report["udp_datagrams"] += 1
            except Exception:
                self.sender = None
        h = self.rng.choice(self.hcas)
        if not self._alive(h):
            return
        try:
            if h in self.mcast_socks:
                self._call(h, "udp_leave", sock=self.mcast_socks[h], group=GROUP)
                self._call(h, "udp_close", sock=self.mcast_socks.pop(h))
                self.report["mcast_leaves"] += 1
            else:
                sock = self._call(h, "udp_open", port=MPORT)["sock"]
                self._call(h, "udp_join", sock=sock, group=GROUP)
                self.mcast_socks[h] = sock
                self.report["mcast_joins"] += 1
        except Exception:
            self.mcast_socks.pop(h, None)

    # -- faults --------------------------------------------------------------------------------

    def flap(self) -> None:
        a, ap, b, bp = self.rng.choice(self.links)
        if not (self._alive(a) and self._alive(b)):
            return
        self.fab.link_down(a, ap)
        time.sleep(0.3)
        self.fab.link_up(a, ap)
        self.report["flaps"] += 1

    def kill_and_restart(self, host: int) -> None:
        devices = self.fab.info.hosts[host]["devices"]
        last = self._snapshot_host(host)
        for d in last.values():  # what the dead host counted goes into the totals
            for k, v in (d.get("drops") or {}).items():
                self.report["drops"][k] = self.report["drops"].get(k, 0) + v
        self.fab.kill_host(host)
        self.report["kills"] += 1
        time.sleep(1.0)
        t0 = time.monotonic()
        self.fab.restart_host(host)
        self.mcast_socks = {h: s for h, s in self.mcast_socks.items() if h not in devices}
        if self.sender is not None and self.sender[0] in devices:
            self.sender = None
        # recovered: an HCA there and one elsewhere ping each other
        here = [h for h in self.hcas if h in devices]
        there = [h for h in self.hcas if h not in devices]
        pair = (here[0], there[0]) if here and there else (there[0], there[1])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.fab.nodes[pair[0]].ping(self.ip[pair[1]], timeout=0.3)["received"]:
                    self.report["recoveries_s"].append(round(time.monotonic() - t0, 2))
                    return
            except Exception:
                time.sleep(0.1)
        self.report["violations"].append(f"host {host} did not recover within 30 s")

    # -- checkpoints ---------------------------------------------------------------------------

    def _snapshot_host(self, host: int) -> dict:
        c = self.fab.client.clients[host]
        st = c.call("status")
        counters = c.call("all_counters")
        return {d["name"]: dict(d, pid=st["pid"], counters=counters[d["name"]]) for d in st["devices"]}

    def snapshot(self) -> dict:
        out = {}
        for i in range(len(self.fab.info.hosts)):
            if i not in launcher.dead_hosts(self.fab.info):
                out.update(self._snapshot_host(i))
        return out

    @staticmethod
    def _port(snap, dev, num):
        d = snap.get(dev)
        if d is None:
            return None
        c = d["counters"].get(num, d["counters"].get(str(num)))
        return None if c is None else {"counters": c}

    def residuals(self, s0: dict, s1: dict) -> tuple[dict, int, int]:
        """{(a, ap, b, bp): packets unaccounted for}, links checked, packets sent, between two
        snapshots (links whose ends kept their process only)."""
        bad, checked, sent_total = {}, 0, 0
        for a, ap, b, bp in self.links:
            for x, xp, y, yp in ((a, ap, b, bp), (b, bp, a, ap)):
                if x not in s0 or x not in s1 or y not in s0 or y not in s1:
                    continue
                if s0[x]["pid"] != s1[x]["pid"] or s0[y]["pid"] != s1[y]["pid"]:
                    continue  # a host restarted in between: its counters began again
                tx0, tx1 = self._port(s0, x, xp), self._port(s1, x, xp)
                rx0, rx1 = self._port(s0, y, yp), self._port(s1, y, yp)
                sent = tx1["counters"]["extended"]["port_xmit_pkts"] - tx0["counters"]["extended"]["port_xmit_pkts"]
                got = rx1["counters"]["extended"]["port_rcv_pkts"] - rx0["counters"]["extended"]["port_rcv_pkts"]
                lost_rx = rx1["counters"]["lost"]["ingress_down"] - rx0["counters"]["lost"]["ingress_down"]
                lost_tx = sum(tx1["counters"]["lost"][k] - tx0["counters"]["lost"][k] for k in ("link_full", "uncabled"))
                checked += 1
                sent_total += sent
                diff = sent - got - lost_rx - lost_tx
                if diff:
                    bad[(x, xp, y, yp)] = diff
        return bad, checked, sent_total

    def checkpoint(self, prev: dict | None) -> dict:
        self.stop_traffic()
        time.sleep(1.0)
        snap = self.snapshot()
        if prev is not None:
            for _ in range(5):
                bad, checked, sent = self.residuals(prev, snap)
                if not bad:
                    break
                time.sleep(0.5)  # something was still in flight: read again
                snap = self.snapshot()
            self.report["checkpoints"] += 1
            self.report["links_checked"] += checked
            self.report["packets"] += sent
            for k, v in bad.items():
                self.report["violations"].append(f"checkpoint {self.report['checkpoints']}: {k[0]}:{k[1]} -> "
                                                 f"{k[2]}:{k[3]}: {v} packets unaccounted for")
            for a, ap, b, bp in self.links:
                for x, xp in ((a, ap), (b, bp)):
                    p0, p1 = self._port(prev, x, xp), self._port(snap, x, xp)
                    if p0 and p1 and prev[x]["pid"] == snap[x]["pid"]:
                        for k, v in p1["counters"]["lost"].items():
                            self.report["lost"][k] = self.report["lost"].get(k, 0) + v - p0["counters"]["lost"][k]
        for i in range(len(self.fab.info.hosts)):
            pid = launcher.host_pid(self.fab.info, i)
            rss = rss_kib(pid) if pid else None
            if rss:
                self.report["rss_kb"].setdefault(str(i), []).append(rss)
        self.start_traffic()
        return snap

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> dict:
        t_end = time.monotonic() + self.seconds
        next_flap = time.monotonic() + self.flap_every
        next_kill = time.monotonic() + self.kill_every
        next_cp = time.monotonic() + self.checkpoint_every
        kills = 0
        self.start_traffic()
        snap = self.checkpoint(None)
        while time.monotonic() < t_end:
            now = time.monotonic()
            self.udp_and_mcast()
            if now >= next_flap:
                self.flap()
                next_flap = now + self.flap_every
            if now >= next_kill:
                self.kill_and_restart(self.victims[kills % len(self.victims)])
                kills += 1
                next_kill = time.monotonic() + self.kill_every
                # the next checkpoint checks the links between hosts that lived through it; those
                # of the restarted host begin again from their new counters
                next_cp = min(next_cp, time.monotonic() + 2.0)
            if now >= next_cp:
                snap = self.checkpoint(snap)
                next_cp = time.monotonic() + self.checkpoint_every
            for (a, _b), pid in list(self.pings.items()):
                try:
                    self._call(a, "ping_poll", ping=pid)  # keeps its lease
                except Exception:
                    self.pings.pop((a, _b), None)
            time.sleep(0.2)
        self.checkpoint(snap)
        self.stop_traffic()
        final = self.snapshot()
        for d in final.values():
            for k, v in (d.get("drops") or {}).items():
                self.report["drops"][k] = self.report["drops"].get(k, 0) + v
        return self.report
