"""Start, inspect and stop named fabrics: device-host processes, run directory, readiness."""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

from . import plugins, smctl
from .pidfiles import alive, host_pids, spawn_host, spawn_hosts
from .rpc import RpcClient, RpcError
from .runinfo import RunInfo, check_name, ensure_run_base, run_base, run_dir_for
from .topology import Topology, load_topology

DEVICES_PER_HOST = 64
# With the real OpenSM as the SM, fewer and bigger hosts: OpenSM keeps 4 SMPs on the wire
# (max_wire_smps), so its sweep waits on each SMP's round trip, and every cable between two host
# processes on a directed route costs a wakeup of each, both ways; in one process the route is
# crossed in memory. fattree:36,18,18,1 (702 devices) with OpenSM: 3.0 s to SUBNET UP on 4 hosts,
# 2.1 s on 2, 1.7 s on 1 (bench/RESULTS.md). Our own SM keeps 128 SMPs in flight and gains from
# the second core instead.
DEVICES_PER_HOST_OPENSM = 1024
MAX_HOSTS = 4  # 2 cores: more processes only add start-up cost and context switches
MAX_DEVICES = 0xFFFF  # a link burst names its receiving device in 16 bits (fabric.wire.burst)


class LaunchError(RuntimeError):
    pass


_HELD: dict = {}  # fabric name -> [fd, depth]: the locks this process holds


@contextlib.contextmanager
def name_lock(name: str):
    """One command at a time per fabric name: ``up`` and ``down`` hold an flock on a file in the run
    base, so two ``up`` of one name cannot both start (the second fails at once, saying why), and a
    ``down`` cannot remove what an ``up`` is starting. Re-entrant within a process (``up`` calls
    ``down`` to clean up after itself)."""
    check_name(name)
    held = _HELD.get(name)
    if held is not None:
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    fd = os.open(os.path.join(ensure_run_base(), f".{name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LaunchError(f"fabric {name!r} is being started or stopped by another command") from None
    _HELD[name] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[name]
        os.close(fd)  # releases the lock


def devices_per_host(sm_kind: str) -> int:
    """How many devices a host process takes by default under that SM (``sm_kind``)."""
    return DEVICES_PER_HOST_OPENSM if sm_kind == "opensm" else DEVICES_PER_HOST


def plan_hosts(topology: Topology, hosts: int | None = None, per_host: int = DEVICES_PER_HOST) -> list[list[str]]:
    """Split the devices over host processes so that cables stay inside a process where they can
    (a cable between processes is a ZeroMQ socket and a pass of each host's loop per burst).

    Each switch with the HCAs cabled to it is a unit, never split (unless more hosts are asked for
    than there are units: then each device is one). Hosts are filled one after the
    other, each to about ``devices / hosts``: a host starts from the first unit not placed yet (in
    topology order), then takes, one at a time, the unit with the most cables into what it holds
    so far (the first in topology order among equals). A leaf and its HCAs stay together, and so
    does a pod of a three-level fat tree (its leaves and aggregation switches). As a unit is not
    split, the plan may have fewer hosts than asked for (the last ones had nothing left)."""
    from .placement import split_hosts

    n = len(topology.nodes)
    if n > MAX_DEVICES:
        raise LaunchError(f"{n} devices: a fabric runs at most {MAX_DEVICES} (a link burst names its device in 16 bits)")
    k = hosts or max(1, min(MAX_HOSTS, math.ceil(n / per_host)))
    return split_hosts(topology, k)


def _pids(run_dir: str) -> list[int]:
    """Every pid the run directory names: the hosts' pid files and what the launcher spawned."""
    out = host_pids(run_dir)
    spawned = os.path.join(run_dir, "spawned.pids")
    if os.path.exists(spawned):
        with open(spawned) as f:
            out += [int(x) for x in f.read().split() if x.strip().isdigit()]
    return sorted(set(out))


def _valid_name(name: str) -> bool:
    try:
        check_name(name)
        return True
    except ValueError:
        return False


def host_pid(info: RunInfo, index: int) -> int | None:
    """The pid a device host wrote once its sockets were bound, if it did."""
    try:
        with open(info.pid_file(index)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def host_dead(info: RunInfo, index: int) -> bool:
    """The host started (its pid file is there) and its process is gone: killed, or crashed (on
    another machine: or the machine no longer answers)."""
    pid = host_pid(info, index)
    if pid is not None and info.remote(index):
        from . import cluster

        return cluster.host_dead(info, index, pid)
    return pid is not None and not alive(pid, info.run_dir)


def dead_hosts(info: RunInfo) -> list[int]:
    return [i for i in range(len(info.hosts)) if host_dead(info, i)]


def ask_live_host(info: RunInfo, index: int, op: str, client: RpcClient | None = None):
    """``op`` on host ``index``, or None when the host is dead or dies while asked (a dead host
    answers nothing: asking it would only wait out the RPC timeout)."""
    if host_dead(info, index):
        return None
    try:
        if client is not None:
            return client.call(op)
        with RpcClient(info.control(index), timeout=10.0) as c:
            return c.call(op)
    except RpcError:
        if host_dead(info, index):
            return None
        raise


def kill_host(info: RunInfo, index: int) -> int:
    """Fault injection: SIGKILL device host ``index``, as a crash would end it; returns its pid
    once the process is gone (SIGKILL is delivered asynchronously)."""
    pid = host_pid(info, index)
    if pid is None or host_dead(info, index):
        raise LaunchError(f"device host {index} is not running")
    if info.remote(index):
        from . import cluster

        try:
            cluster.kill(info, index, pid)
        except cluster.ClusterError as exc:
            raise LaunchError(str(exc)) from None
        return pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not host_dead(info, index) and time.monotonic() < deadline:
        time.sleep(0.005)
    return pid


def restart_host(name: str, index: int, *, timeout: float = 60.0) -> RunInfo:
    """Start a dead device host again: the same devices with the same GUIDs and cables (its peers
    train the links again), its node software afresh, and the SM if it ran there (which reads
    its LID cache, so every port gets its old LID back)."""
    with name_lock(name):
        info = RunInfo.load(run_dir_for(check_name(name)))
        if not 0 <= index < len(info.hosts):
            raise LaunchError(f"fabric {name!r} has hosts 0..{len(info.hosts) - 1}, not {index}")
        pid = host_pid(info, index)
        if pid is not None and not host_dead(info, index):
            raise LaunchError(f"device host {index} of {name!r} is running (pid {pid})")
        try:
            os.unlink(info.pid_file(index))
        except FileNotFoundError:
            pass
        procs = [None] * len(info.hosts)
        t0 = time.monotonic()
        if info.remote(index):
            from . import cluster

            try:
                cluster.start_hosts(info, [index], timeout=timeout)
            except cluster.ClusterError as exc:
                raise LaunchError(str(exc)) from None
        else:
            _cleanup_node_software(info, info.hosts[index]["devices"])  # what the dead one left (namespaces)
            log = open(info.log_file(index), "ab")
            proc = spawn_host(info.run_dir, index, log)
            log.close()
            _SPAWNED.setdefault(info.run_dir, []).append(proc)
            with open(os.path.join(info.run_dir, "spawned.pids"), "a") as f:
                f.write(f"\n{proc.pid}")
            procs[index] = proc
        wait_links_up(info, procs, deadline=t0 + timeout)
        sm = info.data.get("sm") or {}
        if sm.get("kind") == "ours" and info.host_of(sm["node"]) == index:
            # its SM comes back as the daemon would; if a standby took over meanwhile, this one
            # finds that master and stands by
            smctl.start_sm(info, sm["node"], sm["port"], sm.get("config"))
        for x in sm.get("standby", []):
            if info.host_of(x["node"]) == index:
                smctl.start_sm(info, x["node"], x["port"], x.get("config"), standby=True)
        info.data.setdefault("restarts", []).append({"host": index, "at": time.time(),
                                                     "links_seconds": time.monotonic() - t0})
        info.save()
        return info


def is_running(name: str) -> bool:
    d = run_dir_for(name)
    info = _spanning(d)
    if info is not None:
        return any(host_pid(info, i) is not None and not host_dead(info, i) for i in range(len(info.hosts)))
    return any(alive(p, d) for p in _pids(d))


def _spanning(run_dir: str) -> RunInfo | None:
    """The fabric in ``run_dir`` if it spans machines (its hosts' pids are not this machine's)."""
    try:
        info = RunInfo.load(run_dir)
    except (OSError, ValueError):
        return None
    return info if info.machines else None


def list_fabrics() -> list[str]:
    base = run_base()
    try:
        return sorted(e for e in os.listdir(base) if os.path.isdir(os.path.join(base, e)) and _valid_name(e))
    except OSError:
        return []


def check_node_config(node_software: str | None, config: dict | None) -> dict:
    """The settings for ``node_software`` (:mod:`fabric.plugins`), checked by it; ValueError when
    the software is unknown or a setting is wrong."""
    config = {k: v for k, v in (config or {}).items() if v is not None}
    software = plugins.node_software(node_software)
    if software is None:
        if config:
            raise ValueError(f"bare HCAs (node software 'none') take no settings, not {', '.join(config)}")
        return {}
    return software.check_config(config)


SM_KINDS = ("ours", "opensm", "none")


def sm_kind(sm) -> str:
    """``ours`` (True, the default), ``opensm`` (the real OpenSM over ibsim's protocol) or ``none``."""
    if sm is True or sm is None:
        return "ours"
    if sm is False:
        return "none"
    if sm not in SM_KINDS:
        raise ValueError(f"unknown SM {sm!r} (one of {', '.join(SM_KINDS)})")
    return sm


def up(topology, name: str = "default", *, hosts: int | None = None, timeout: float = 120.0,
       sm=True, sm_config: dict | None = None, sm_args=(), node_software: str | None = None,
       node_config: dict | None = None, progress=None, machines=None) -> RunInfo:
    """Launch a fabric and return once every cabled link is up and, unless ``sm`` is ``"none"``,
    once the subnet manager on the topology's SM port has brought the subnet up: ours (``"ours"``,
    the default; ``sm_config`` its settings) or the real OpenSM (``"opensm"``; ``sm_args`` its
    command-line arguments, e.g. ``["-R", "updn"]``). ``node_software`` is the name of what runs on
    the HCAs (None or ``"none"``: bare HCAs). Node software that can say when its nodes are ready
    (IPoIB: every ib0 joined its broadcast group) is waited for too, after SUBNET UP.

    ``machines`` (a machines file, or its lines: :mod:`fabric.machines`) spreads the device hosts
    over those machines, started through the remote command, with tcp:// links and control under
    CURVE (``hosts`` is then per machine; ``docs/multimachine.md``).

    ``progress``, when given, is called as the launch goes, ``progress(phase, done, total, final)``
    (:data:`PHASES`; ``final`` once per phase, when it completes); the launch is quiet without it.

    Atomic per name: a second ``up`` of the same name fails at once (:func:`name_lock`), and a
    failure, ^C, SIGTERM or SIGHUP during the launch stops what it started and removes the run
    directory."""
    sm_kind(sm)
    check_node_config(node_software, node_config)  # what can be refused is, before anything is made
    if machines is not None:
        from . import machines as mc

        machines = mc.normalize(machines)
        if sm_kind(sm) == "opensm":
            raise LaunchError("--sm opensm runs on one machine (ibsim's protocol over the run directory), "
                              "not with --machines")
        if (node_config or {}).get("netns"):
            raise LaunchError("--netns makes namespaces on the launcher's machine, not with --machines")
    with name_lock(name), signals_raise():
        return _up(topology, name, hosts=hosts, timeout=timeout, sm=sm, sm_config=sm_config, sm_args=sm_args,
                   node_software=node_software, node_config=node_config, progress=progress or quiet,
                   machines=machines)


#: What ``up`` reports to its ``progress`` callback, in this order (each only where it applies:
#: no SM, no SM phases; OpenSM, one "SM sweep" without counts; node software, its own last).
PHASES = ("hosts started", "links trained", "SM sweep", "LIDs", "routes")


def quiet(phase, done, total, final=False) -> None:
    """The ``progress`` of a launch nobody watches."""
    pass


@contextlib.contextmanager
def signals_raise():
    """SIGTERM and SIGHUP end the launch as ^C does (an exception, so the cleanup runs), where the
    process is free to set handlers (the main thread); the previous handlers come back after."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextlib.contextmanager
def _signals_ignored():
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _up(topology, name, *, hosts, timeout, sm, sm_config, sm_args, node_software, node_config,
        progress, machines=None) -> RunInfo:
    kind = sm_kind(sm)
    if kind == "opensm":
        from . import opensm
        from .simproto.shim import umad2sim_path

        opensm.binary()  # a clear error before anything starts
        umad2sim_path()
    node_config = check_node_config(node_software, node_config)
    if node_software == plugins.NONE:
        node_software = None
    topo = load_topology(topology)
    topo.validate()
    software = plugins.node_software(node_software)
    if software is not None and hasattr(software, "check_topology"):
        software.check_topology(node_config, topo)  # settings that name nodes (IPoIB's backends)
    run_dir = run_dir_for(name)
    if os.path.exists(run_dir):
        if is_running(name):
            raise LaunchError(f"fabric {name!r} is already running (ibfab down --name {name})")
        down(name)  # stale leftovers of a crash
    os.makedirs(os.path.join(run_dir, "s"), mode=0o700)
    os.chmod(run_dir, 0o700)
    topo_path = os.path.join(run_dir, "topology.net")
    if machines:
        from . import cluster

        if len(topo.nodes) > MAX_DEVICES:
            raise LaunchError(f"{len(topo.nodes)} devices: a fabric runs at most {MAX_DEVICES}")
        host_list, placement = cluster.layout(topo, machines, hosts, MAX_HOSTS, DEVICES_PER_HOST)
        cluster.make_keys(run_dir)  # before fabric.json names a tcp:// endpoint: never plaintext
    else:
        host_list, placement = [{"devices": devs} for devs in plan_hosts(topo, hosts, devices_per_host(kind))], None
    plan = [h["devices"] for h in host_list]
    info = RunInfo(run_dir, {"name": name, "topology": topo_path, "created": time.time(),
                             "hosts": host_list,
                             **({"machines": machines, "placement": placement} if machines else {}),
                             "sm": {"node": topo.sm_node, "port": topo.sm_port, "kind": kind,
                                    "args": [str(a) for a in sm_args]} if kind != "none" else None,
                             # what each host runs on its HCAs, by name (fabric.plugins), and its settings
                             "node_software": node_software, "node_config": node_config,
                             "node_software_ref": plugins.node_software_ref(node_software),
                             # what every link burst of this fabric carries (fabric.wire.burst)
                             "link_token": secrets.token_hex(8)})
    info.save_topology(topo)
    info.check_paths()
    info.save()
    procs = []
    t0 = time.monotonic()
    try:
        if machines:
            from . import cluster

            progress("hosts started", 0, len(plan))
            procs = [None] * len(plan)
            try:
                cluster.start_hosts(info, range(len(plan)), timeout=timeout)
            except cluster.ClusterError as exc:
                raise LaunchError(str(exc)) from None
        if not machines:
            procs, started = spawn_hosts(run_dir, list(range(len(plan))), info.log_file)
            _SPAWNED[run_dir] = started
        wait_links_up(info, procs, deadline=t0 + timeout, progress=progress, topo=topo)
        info.data["links_seconds"] = time.monotonic() - t0
        if kind != "none":
            t1 = time.monotonic()
            placement = None
            if kind == "opensm" and not machines:
                from . import opensm

                placement = opensm.SweepPlacement.begin(info, topo.sm_node)
            try:
                smctl.start_sm(info, topo.sm_node, topo.sm_port, sm_config, placement=placement)
                st = smctl.wait_subnet_up(info, deadline=t0 + timeout, procs=procs if not machines else (),
                                          progress=progress, topo=topo)
            finally:
                if placement is not None:
                    placement.end(opensm.pid(info))
            info.data["sm_seconds"] = time.monotonic() - t1
            info.data["subnet_up_seconds"] = time.monotonic() - t0  # hosts spawned -> SUBNET UP
            info.data["subnet_up"] = st
            if software is not None and hasattr(software, "wait_ready"):
                # what runs on the HCAs needs the SM too (IPoIB joins through the SA)
                software.wait_ready(info, deadline=t0 + timeout, progress=progress)
    except BaseException:
        with _signals_ignored():  # a second ^C or SIGTERM must not cut the cleanup short
            down(name)
        raise
    info.data["up_seconds"] = time.monotonic() - t0
    info.save()
    return info


def log_tail(info: RunInfo, i: int, lines: int = 15) -> str:
    """The last lines of device host ``i``'s log (for an error that names it)."""
    if info.remote(i):
        from . import cluster

        return cluster.log_tail(info, i, lines)
    try:
        with open(info.log_file(i), errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def wait_links_up(info: RunInfo, procs, *, deadline: float, progress=None, topo=None) -> None:
    """Wait until every host runs and every cabled port is LinkUp. ``progress`` (see :func:`up`)
    hears of the hosts started and of the cables of ``topo`` trained (both ends LinkUp)."""
    progress = progress or quiet
    clients = [RpcClient(info.control(i), timeout=5.0) for i in range(len(info.hosts))]
    hosts_done = False
    try:
        while True:
            for i, p in enumerate(procs):
                if p is not None and p.poll() is not None:
                    raise LaunchError(f"device host {i} exited with status {p.returncode}:\n{log_tail(info, i)}")
            pending = 0
            started = 0
            up_ports = set()
            for i, c in enumerate(clients):
                if not os.path.exists(info.pid_file(i)):
                    pending += 1
                    continue
                started += 1
                st = c.call("link_states")
                pending += st["pending"]
                up_ports.update((name, num) for name, ports in st["up"].items() for num in ports)
            if not hosts_done:
                hosts_done = started == len(clients)
                progress("hosts started", started, len(clients), hosts_done)
            if hosts_done and topo is not None:
                trained = sum(1 for lk in topo.links if all(e in up_ports for e in lk.ends()))
                progress("links trained", trained, len(topo.links), pending == 0)
            if pending == 0:
                return
            if time.monotonic() > deadline:
                raise LaunchError(f"fabric {info.name!r}: {pending} ports/hosts not up before the timeout")
            time.sleep(0.02)
    finally:
        for c in clients:
            c.close()


def down(name: str = "default", *, grace: float = 3.0) -> bool:
    """Stop every process of a fabric and remove its run directory. True if anything was there."""
    with name_lock(name):
        return _down(name, grace)


def _down(name: str, grace: float) -> bool:
    run_dir = run_dir_for(name)
    if not os.path.exists(run_dir):
        return False
    info = None
    try:
        info = RunInfo.load(run_dir)
        dead = dead_hosts(info)
        for i in range(len(info.hosts)):
            if os.path.exists(info.pid_file(i)) and i not in dead:
                try:
                    with RpcClient(info.control(i), timeout=1.0) as c:
                        c.call("shutdown")
                except RpcError:
                    pass
    except (OSError, ValueError, KeyError):
        pass
    if info is not None and (info.data.get("sm") or {}).get("kind") == "opensm":
        from . import opensm

        opensm.stop(info, grace=grace)  # before the hosts: it must not see the fabric go
    if info is not None and info.machines:
        from . import cluster

        cluster.report(cluster.stop_all(info, grace))  # a vanished machine is named, the rest go on
    pids = [p for p in _pids(run_dir) if alive(p, run_dir)] if info is None or not info.machines else []
    end = time.monotonic() + grace
    while pids and time.monotonic() < end:
        time.sleep(0.01)
        pids = [p for p in pids if alive(p, run_dir)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.killpg(p, sig)
            except ProcessLookupError:
                pass
            except PermissionError:
                os.kill(p, sig)
        end = time.monotonic() + grace
        while pids and time.monotonic() < end:
            time.sleep(0.01)
            pids = [p for p in pids if alive(p, run_dir)]
        if not pids:
            break
    for p in _SPAWNED.pop(run_dir, []):  # collect exit statuses: no zombies in long test runs
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
    _cleanup_node_software(info)
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


_SPAWNED: dict = {}  # run_dir -> [Popen] started by this process


def _cleanup_node_software(info: RunInfo | None, devices=None) -> None:
    """What the node software made outside the run directory and its processes (IPoIB's network
    namespaces) goes too, also when a host was killed before it could undo it itself; only that
    of ``devices`` when given (one host restarting)."""
    if info is None:
        return
    try:
        software = plugins.node_software(info.data.get("node_software"))
    except ValueError:
        return
    cleanup = getattr(software, "cleanup", None)
    if cleanup is not None:
        try:
            cleanup(info) if devices is None else cleanup(info, devices)
        except Exception as exc:  # down must go on: the run directory still has to go
            print(f"ibfab down: {software.name} cleanup failed: {exc}", file=sys.stderr)


class FabricClient:
    """RPC to the devices of a running fabric, routed to the host that runs each device."""

    def __init__(self, name: str = "default", *, timeout: float | None = None):
        if timeout is None:  # IBFAB_RPC_TIMEOUT: the tests show that long commands do not hang on it
            timeout = float(os.environ.get("IBFAB_RPC_TIMEOUT", "10"))
        self.info = RunInfo.load(run_dir_for(name))
        self.clients = [RpcClient(self.info.control(i), timeout=timeout) for i in range(len(self.info.hosts))]

    def host(self, device: str) -> RpcClient:
        return self.clients[self.info.host_of(device)]

    def call(self, device: str, op: str, **kw):
        i = self.info.host_of(device)
        if host_dead(self.info, i):  # say so now, not after a timeout
            raise RpcError(f"{device} is on device host {i}, which is dead (pid {host_pid(self.info, i)} is gone): "
                           f"ibfab restart-host --name {self.info.name} {i}", op=op, kind="dead")
        return self.clients[i].call(op, device=device, **kw)

    def status(self) -> list[dict]:
        """Each live host's status; a dead host answers nothing (see ``dead``) and is left out."""
        out = []
        for i, c in enumerate(self.clients):
            st = ask_live_host(self.info, i, "status", c)
            if st is not None:
                out.append(st)
        return out

    def dead(self) -> list[int]:
        return dead_hosts(self.info)

    def devices(self) -> dict:
        return {d["name"]: dict(d, host=st["host"], pid=st["pid"]) for st in self.status() for d in st["devices"]}

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
