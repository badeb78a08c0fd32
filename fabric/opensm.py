"""The real OpenSM (Debian ``opensm``) as a fabric's subnet manager (``ibfab up --sm opensm``).

OpenSM runs unmodified, preloaded with ``libumad2sim.so``, attached to the SM node's HCA port through
that node's ibsim-protocol endpoint (:mod:`fabric.simproto`): its SMPs and SA traffic are real packets
through our devices. Everything it keeps lives in the run directory::

    opensm.log          its log (SUBNET UP is read from it)
    opensm.out          its stdout and stderr
    opensm.pid          its process id (``ibfab down`` stops it, also after a crash)
    opensm/             OSM_CACHE_DIR and OSM_TMP_DIR: guid2lid, dumps
    partitions.conf     the partitions it is given (ours, by default: ``Default=0x7fff, ipoib : ALL=full;``)
    opensm.conf         its options file: only ``force_log_flush TRUE`` (the log is how we see SUBNET UP)

The process runs in a session of its own with the run directory as its working directory (the shim
writes ``sys-<pid>/`` there), and is stopped with SIGTERM, then SIGKILL.

During the first sweep (``ibfab up`` until SUBNET UP) OpenSM and the device host that serves its port
share one CPU (:class:`SweepPlacement`): every SMP is a hand-off between the two, and where waking a
task on another, idle, CPU is dear (a VM's vCPU: tens of microseconds), one CPU brings the subnet up
sooner (bench/RESULTS.md, the fourteenth session: 648 HCAs 0.52 s against 0.56-0.67 unpinned). On
that CPU both run as ``SCHED_BATCH``: a task woken by the other's datagram does not preempt it, so
the host answers every request it has before OpenSM runs, and OpenSM sends all it has queued before
the host runs, instead of a switch each way per SMP (the fifteenth session: 0.45-0.48 s against
0.62-0.65). Afterwards both run anywhere again, as ``SCHED_OTHER``. ``IBFAB_OPENSM_SWEEP_CPU=0``
leaves them to the scheduler.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time

from .rpc import RpcClient
from .simproto.shim import clean_env, tool_env

DEFAULT_PARTITIONS = "Default=0x7fff, ipoib : ALL=full;\n"


class OpenSMError(RuntimeError):
    pass


def binary() -> str:
    path = shutil.which("opensm") or ("/usr/sbin/opensm" if os.path.exists("/usr/sbin/opensm") else None)
    if path is None:
        raise OpenSMError("opensm is not installed (apt-get install opensm)")
    return path


def _paths(info) -> dict:
    d = info.run_dir
    return {"log": os.path.join(d, "opensm.log"), "out": os.path.join(d, "opensm.out"),
            "pid": os.path.join(d, "opensm.pid"), "cache": os.path.join(d, "opensm"),
            "partitions": os.path.join(d, "partitions.conf"), "conf": os.path.join(d, "opensm.conf")}


def start(info, node: str, port: int, args=(), partitions: str | None = None, placement=None) -> int:
    """Start OpenSM on ``node``:``port``; its pid. Returns at once (see :func:`wait_up`).
    ``placement``: a :class:`SweepPlacement` whose CPUs and policy it starts with (its threads
    inherit them), else the caller's."""
    exe = binary()
    p = _paths(info)
    os.makedirs(p["cache"], exist_ok=True)
    if not os.path.exists(p["partitions"]) or partitions is not None:
        with open(p["partitions"], "w") as f:
            f.write(partitions or DEFAULT_PARTITIONS)
    with open(p["conf"], "w") as f:
        f.write("# written by ibfab: every other option keeps OpenSM's default\nforce_log_flush TRUE\n")
    with RpcClient(info.control(info.host_of(node)), timeout=10.0) as c:
        ep = c.call("sim_endpoint", device=node, port=port)
    env = dict(clean_env(os.environ), OSM_CACHE_DIR=p["cache"], OSM_TMP_DIR=p["cache"],
               **tool_env(ep["sockname"], node))
    cmd = [exe, "-F", p["conf"], "-f", p["log"], "-P", p["partitions"], "--dump_files_dir", p["cache"],
           *map(str, args)]
    with open(p["out"], "ab") as out, (placement.forking() if placement else contextlib.nullcontext()):
        proc = subprocess.Popen(cmd, cwd=info.run_dir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    with open(p["pid"], "w") as f:
        f.write(str(proc.pid))
    _PROCS[info.run_dir] = proc
    return proc.pid


_PROCS: dict = {}  # run_dir -> Popen, to collect its exit status


def _set_threads(pid_: int, cpus=None, policy=None) -> None:
    """Every thread of process ``pid_`` onto ``cpus`` and/or scheduling ``policy`` (a thread that
    ends meanwhile is skipped)."""
    try:
        tids = os.listdir(f"/proc/{pid_}/task")
    except OSError:
        return
    for tid in tids:
        try:
            if cpus is not None:
                os.sched_setaffinity(int(tid), cpus)
            if policy is not None:
                os.sched_setscheduler(int(tid), policy, os.sched_param(0))
        except (OSError, ValueError):
            pass


class SweepPlacement:
    """OpenSM and the device host serving its port on one CPU, as ``SCHED_BATCH``, during the
    first sweep (see the module's docstring). :meth:`begin` places the host's threads and returns
    the placement (None when there is one CPU only, the host is not known, or
    ``IBFAB_OPENSM_SWEEP_CPU=0``); OpenSM is started inside :meth:`forking`; :meth:`end` gives both
    the CPUs and the policy they had before. ``policy`` is None (left alone) when the host was not
    ``SCHED_OTHER``: whoever made it real-time or idle meant it."""

    def __init__(self, host_pid: int, host_cpus, cpus, policy):
        self.host_pid, self.host_cpus, self.cpus, self.policy = host_pid, host_cpus, cpus, policy

    @classmethod
    def begin(cls, info, node: str):
        if os.environ.get("IBFAB_OPENSM_SWEEP_CPU", "1") == "0":
            return None
        try:
            with open(info.pid_file(info.host_of(node))) as f:
                host_pid = int(f.read().strip())
            host_cpus = os.sched_getaffinity(host_pid)
            policy = os.SCHED_BATCH if os.sched_getscheduler(host_pid) == os.SCHED_OTHER else None
        except (OSError, ValueError, KeyError, IndexError):
            return None
        if len(host_cpus) < 2:
            return None
        cpus = {min(host_cpus)}
        _set_threads(host_pid, cpus, policy)
        return cls(host_pid, host_cpus, cpus, policy)

    @contextlib.contextmanager
    def forking(self):
        """The calling thread on the placement's CPUs and policy while it starts a child (which
        inherits both at fork), then as it was."""
        cpus, policy = os.sched_getaffinity(0), os.sched_getscheduler(0)
        os.sched_setaffinity(0, self.cpus)
        if self.policy is not None and policy == os.SCHED_OTHER:
            os.sched_setscheduler(0, self.policy, os.sched_param(0))
        try:
            yield
        finally:
            os.sched_setaffinity(0, cpus)
            if os.sched_getscheduler(0) != policy:
                os.sched_setscheduler(0, policy, os.sched_param(0))

    def end(self, opensm_pid: int | None) -> None:
        back = os.SCHED_OTHER if self.policy is not None else None
        _set_threads(self.host_pid, self.host_cpus, back)
        if opensm_pid is not None:
            _set_threads(opensm_pid, os.sched_getaffinity(0), back)


def pid(info) -> int | None:
    proc = _PROCS.get(info.run_dir)
    if proc is not None:  # started by this process: until it execs, /proc shows python's cmdline
        return proc.pid if proc.poll() is None else None
    try:
        with open(_paths(info)["pid"]) as f:
            n = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return n if alive(n, info.run_dir) else None


def alive(n: int, run_dir: str) -> bool:
    """Is ``n`` the OpenSM of this run directory (its log is in it)?"""
    try:
        with open(f"/proc/{n}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return False
    return bool(cmd) and os.path.basename(cmd[0]) == b"opensm" and any(run_dir.encode() in a for a in cmd)


def stop(info, grace: float = 3.0) -> None:
    n = pid(info)
    proc = _PROCS.pop(info.run_dir, None)
    if n is not None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(n, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + grace
            while alive(n, info.run_dir) and time.monotonic() < end:
                if proc is not None:
                    proc.poll()
                time.sleep(0.02)
            if not alive(n, info.run_dir):
                break
    if proc is not None:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.unlink(_paths(info)["pid"])
    except OSError:
        pass


def subnet_ups(info) -> int:
    """How many times OpenSM has logged SUBNET UP (each heavy sweep that completes logs it once)."""
    try:
        with open(_paths(info)["log"], errors="replace") as f:
            return f.read().count("SUBNET UP")
    except OSError:
        return 0


def log_tail(info, lines: int = 15) -> str:
    try:
        with open(_paths(info)["log"], errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def wait_up(info, *, deadline: float, after: int = 0) -> int:
    """Wait until OpenSM's log holds more than ``after`` SUBNET UP lines; how many it holds."""
    while True:
        n = subnet_ups(info)
        if n > after:
            return n
        if pid(info) is None:
            raise OpenSMError(f"opensm exited before SUBNET UP; its log ends:\n{log_tail(info)}")
        if time.monotonic() > deadline:
            raise OpenSMError(f"opensm: no SUBNET UP before the timeout; its log ends:\n{log_tail(info)}")
        time.sleep(0.05)


def status(info) -> dict:
    n = pid(info)
    return {"kind": "opensm", "pid": n, "running": n is not None, "subnet_up_count": subnet_ups(info),
            "log": _paths(info)["log"]}
