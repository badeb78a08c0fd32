"""The fabric's subnet manager, from the launcher's side: start one (ours, OpenSM, or a standby of
ours), stop it, read its status, and wait for SUBNET UP while reporting the sweep's stages to the
launch's ``progress``. The SM itself runs in a device host (``fabric.sm``) or as OpenSM
(``fabric.opensm``)."""

from __future__ import annotations

import time

from . import launcher
from .rpc import RpcClient
from .runinfo import RunInfo


def start_sm(info: RunInfo, node: str, port: int, config: dict | None = None, *, standby: bool = False,
             placement=None) -> None:
    """Start the fabric's SM (of the kind ``fabric.json`` names) on ``node``:``port``. With
    ``standby``, one more SM of ours, next to the running one: it finds the master by SMInfo,
    stands by, and takes over when the master goes. ``placement``: where and how OpenSM starts
    (a ``fabric.opensm.SweepPlacement``)."""
    old = info.data.get("sm") or {}
    kind = old.get("kind", "ours")
    if standby:
        if kind != "ours":
            raise launcher.LaunchError("a standby SM needs our SM as the master (--sm ours)")
        if old.get("node") and info.host_of(old["node"]) == info.host_of(node):
            raise launcher.LaunchError(f"{node} shares a device host with the SM on {old['node']}: a standby must run "
                              f"on another host (one SM per host)")
        with RpcClient(info.control(info.host_of(node)), timeout=10.0) as c:
            c.call("sm_start", device=node, port=port, config=config or {})
        sms = [x for x in old.get("standby", []) if x["node"] != node]
        info.data["sm"] = dict(old, standby=sms + [{"node": node, "port": port, "config": config or {}}])
        info.save()
        return
    if kind == "opensm":
        from . import opensm

        opensm.start(info, node, port, old.get("args", ()), placement=placement)
    else:
        with RpcClient(info.control(info.host_of(node)), timeout=10.0) as c:
            c.call("sm_start", device=node, port=port, config=config or {})
    info.data["sm"] = dict(old, node=node, port=port, kind=kind, config=config or {})
    info.save()


def restart_sm(info: RunInfo, node: str, port: int, config: dict | None = None, *, timeout: float = 60.0) -> dict:
    """Stop the fabric's SM and start a new one on ``node``:``port``; its SUBNET UP summary (the
    next one OpenSM logs, for OpenSM)."""
    sm = info.data.get("sm") or {}
    after = 0
    if sm:
        if sm.get("kind") == "opensm":
            after = (sm_status(info) or {}).get("subnet_up_count", 0)
        stop_sm(info)
    start_sm(info, node, port, config)
    return wait_subnet_up(info, deadline=time.monotonic() + timeout, after_sweep=after)


def start_standby_sm(info: RunInfo, node: str, port: int, config: dict | None = None, *,
                     timeout: float = 10.0) -> dict:
    """One more SM of ours on ``node``; its status once it stands by (or took over)."""
    start_sm(info, node, port, config, standby=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = next((x for x in sm_statuses(info) if x["node"] == node), None)
        if st and st.get("state") in ("standby", "up"):
            return st
        time.sleep(0.05)
    raise TimeoutError(f"the SM on {node} did not settle within {timeout} s")


def stop_sm(info: RunInfo) -> None:
    sm = info.data.get("sm")
    if not sm:
        return
    if sm.get("kind") == "opensm":
        from . import opensm

        opensm.stop(info)
        return
    node = sm["node"]
    for st in sm_statuses(info):  # the master: the recorded one, or a standby that took over
        if st.get("sm_state") == "master":
            node = st["node"]
            break
    i = info.host_of(node)
    if i in launcher.dead_hosts(info):
        return  # it went with its host
    with RpcClient(info.control(i), timeout=10.0) as c:
        c.call("sm_stop")


def sm_status(info: RunInfo) -> dict | None:
    sm = info.data.get("sm")
    if not sm:
        return None
    if sm.get("kind") == "opensm":
        from . import opensm

        return opensm.status(info)
    found = sm_statuses(info)
    for st in found:  # a standby that took over is the master now
        if st.get("sm_state") == "master" and st.get("state") not in ("stopped",):
            return st
    return next((st for st in found if st["node"] == sm["node"]), None)


def sm_statuses(info: RunInfo) -> list[dict]:
    """The status of each SM of ours the fabric runs (the master and the standbys), live hosts only."""
    sm = info.data.get("sm") or {}
    if sm.get("kind") == "opensm":
        return []
    out = []
    for node in [sm.get("node")] + [x["node"] for x in sm.get("standby", [])]:
        st = launcher.ask_live_host(info, info.host_of(node), "sm_status") if node else None
        if st is not None and st.get("node") == node:
            out.append(st)
    return out


def wait_subnet_up(info: RunInfo, *, deadline: float, procs=(), after_sweep: int = 0, progress=None,
                   topo=None) -> dict:
    """Wait for the SM to report a completed sweep (number > ``after_sweep``; for OpenSM, a SUBNET
    UP line in its log beyond the first ``after_sweep``). ``progress`` (see :func:`fabric.launcher.up`) hears of
    the sweep's stages: nodes found, LIDs given, switches routed (of ``topo``'s)."""
    progress = progress or launcher.quiet
    if (info.data.get("sm") or {}).get("kind") == "opensm":
        from . import opensm

        t0 = time.monotonic()
        progress("SM sweep", 0, None)
        try:
            n = opensm.wait_up(info, deadline=deadline, after=after_sweep)
        except opensm.OpenSMError as exc:
            raise launcher.LaunchError(str(exc)) from None
        progress("SM sweep", 0, None, True)  # OpenSM says SUBNET UP, not how far it got
        return {"sweep": n, "seconds": time.monotonic() - t0, "nodes": None, "ports_active": None,
                "kind": "opensm"}
    stages = _SweepStages(progress, topo)
    while True:
        for i, p in enumerate(procs):
            if p.poll() is not None:
                raise launcher.LaunchError(f"device host {i} exited with status {p.returncode}:\n{launcher.log_tail(info, i)}")
        st = sm_status(info)
        if st and st.get("subnet_up") and st["subnet_up"]["sweep"] > after_sweep:
            stages.done(st["subnet_up"])
            return st["subnet_up"]
        if st and (st.get("sweep") or {}).get("number", 0) > after_sweep:
            stages.seen(st["sweep"])
        if time.monotonic() > deadline:
            raise launcher.LaunchError(f"fabric {info.name!r}: subnet not up before the timeout; SM: {st}")
        time.sleep(0.02)


class _SweepStages:
    """The SM sweep's stages as progress phases: "SM sweep" (nodes found), "LIDs" (end ports given
    one), "routes" (switches routed); a stage the polls never caught is reported when a later one
    (or SUBNET UP) shows it over."""

    ORDER = ("discovery", "lids", "routes", "ports", "up")

    def __init__(self, progress, topo):
        self.progress = progress
        self.finished: set = set()
        self.totals = {"SM sweep": None, "LIDs": None, "routes": None}
        if topo is not None:
            ends = {e for lk in topo.links for e in lk.ends() if topo.nodes[e[0]].kind == "hca"}
            self.totals = {"SM sweep": len(topo.nodes), "LIDs": len(topo.switches()) + len(ends),
                           "routes": len(topo.switches())}

    def _phase(self, phase: str, done: int, final: bool) -> None:
        if phase in self.finished:
            return
        total = self.totals[phase]
        self.progress(phase, done, total if total is not None else done, final)
        if final:
            self.finished.add(phase)

    def seen(self, sweep: dict) -> None:
        at = self.ORDER.index(sweep.get("stage", "discovery")) if sweep.get("stage") in self.ORDER else 0
        self._phase("SM sweep", sweep.get("nodes", 0), at > 0)
        if at >= 1:
            self._phase("LIDs", sweep.get("lids", 0), at > 1)
        if at >= 2:
            self._phase("routes", sweep.get("switches_routed", 0), at > 2)

    def done(self, up: dict) -> None:
        self._phase("SM sweep", up.get("nodes") or 0, True)
        self._phase("LIDs", up.get("lids") or 0, True)
        self._phase("routes", up.get("switches_routed") or 0, True)
