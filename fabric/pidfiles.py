"""Which device-host processes of a run directory are alive: their pid files (``host-<i>.pid``,
written once a host has bound its sockets), and a pid that is a device host of that directory
still (a pid can be reused by anything once its process is gone). Shared by the launcher and by
``fabric.remote``, which does the same on the other machines of a fabric."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time


def alive(pid: int, run_dir: str) -> bool:
    """``pid`` runs ``fabric.host`` for ``run_dir`` (not merely some process with that pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return False
    return b"fabric.host" in cmd and run_dir.encode() in cmd


def host_pids(run_dir: str) -> list[int]:
    """The pids in the directory's ``host-<i>.pid`` files (a file being written is skipped)."""
    out = []
    try:
        names = os.listdir(run_dir)
    except OSError:
        return out
    for e in names:
        if e.startswith("host-") and e.endswith(".pid"):
            try:
                with open(os.path.join(run_dir, e)) as f:
                    out.append(int(f.read().strip()))
            except (OSError, ValueError):
                pass
    return out


# numpy's OpenBLAS starts a thread per core at import and lets them spin for a tenth of a second
# of CPU: four hosts starting at once on two cores lose that from the bring-up, and the hosts do
# no linear algebra. A caller's own setting is kept.
_HOST_ENV = {"OPENBLAS_NUM_THREADS": "1"}


def spawn_host(run_dir: str, index: int, log, cwd: str | None = None) -> subprocess.Popen:
    """Start device host ``index`` of ``run_dir`` in a session of its own, output to ``log``."""
    return subprocess.Popen([sys.executable, "-m", "fabric.host", run_dir, str(index)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            close_fds=True, cwd=cwd, env=_host_env())


def _host_env() -> dict:
    env = dict(os.environ)
    for k, v in _HOST_ENV.items():
        env.setdefault(k, v)
    return env


class ForkedHost:
    """A device host that ``python -m fabric.host RUN_DIR --fork`` started: ``poll``, ``wait`` and
    ``kill`` as a Popen's, its exit status from the ``host-<i>.exit`` file its parent writes."""

    def __init__(self, pid: int, run_dir: str, index: int):
        self.pid, self.run_dir, self.index = pid, run_dir, index
        self.returncode = None

    def _exit_file(self):
        try:
            with open(os.path.join(self.run_dir, f"host-{self.index}.exit")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def poll(self):
        if self.returncode is None:
            self.returncode = self._exit_file()
            if self.returncode is None and not alive(self.pid, self.run_dir):
                for _ in range(20):  # its parent reaps it and writes the status: a moment on a busy machine
                    time.sleep(0.05)
                    self.returncode = self._exit_file()
                    if self.returncode is not None:
                        break
                else:
                    self.returncode = -1  # gone, status unknown (its parent is gone too)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired(f"device host {self.index}", timeout)
            time.sleep(0.02)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


FORK_WAIT_S = 60.0  # for the forking process to start every host (it imports first)


def _note_spawned(run_dir: str, pid: int) -> None:
    """``spawned.pids``: every process a launch started, for ``ibfab down`` (fabric.launcher)."""
    with open(os.path.join(run_dir, "spawned.pids"), "a") as f:
        f.write(f"{pid}\n")


def spawn_hosts(run_dir: str, indices: list[int], log_file) -> tuple[list, list]:
    """Start the device hosts ``indices`` of ``run_dir``: one alone as :func:`spawn_host` does,
    several forked from one process that imported what they all need once (``fabric.host``'s
    ``--fork``). ``log_file(i)`` is host i's log. Every pid goes into the run directory's
    ``spawned.pids`` as soon as it is known. Returns (the hosts, in ``indices`` order, as Popen-like
    objects; every process started, the forking one included, for reaping)."""
    if len(indices) == 1:
        with open(log_file(indices[0]), "ab") as log:
            p = spawn_host(run_dir, indices[0], log)
        _note_spawned(run_dir, p.pid)
        return [p], [p]
    with open(os.path.join(run_dir, "fork.log"), "ab") as log:
        parent = subprocess.Popen([sys.executable, "-m", "fabric.host", run_dir, "--fork",
                                   ",".join(str(i) for i in indices)], stdout=subprocess.PIPE, stderr=log,
                                  stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True, env=_host_env())
    _note_spawned(run_dir, parent.pid)  # at once: an interrupted launch stops what it started
    pids = {}
    end = time.monotonic() + FORK_WAIT_S
    fd, buf = parent.stdout.fileno(), b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    with parent.stdout:  # read unbuffered: a buffered reader would hide lines from the poll
        while len(pids) < len(indices):
            left = end - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break  # the forking process ended early: what it started is all there is
            *lines, buf = (buf + chunk).split(b"\n")
            for line in lines:
                try:
                    index, pid = (int(x) for x in line.split())
                except ValueError:
                    continue  # not one of its "INDEX PID" lines
                pids[index] = pid
                _note_spawned(run_dir, pid)
    missing = [i for i in indices if i not in pids]
    if missing:  # what the forking process said before it gave up goes where the launcher looks
        try:
            with open(os.path.join(run_dir, "fork.log"), errors="replace") as f:
                said = f.read()[-4000:]
        except OSError:
            said = ""
        for i in missing:
            with open(log_file(i), "a") as f:
                f.write(f"not started by python -m fabric.host --fork:\n{said}")
    hosts = [ForkedHost(pids[i], run_dir, i) if i in pids else _NeverStarted(i) for i in indices]
    return hosts, [*hosts, parent]


class _NeverStarted:
    """A host the forking process did not start (it failed first: what it said is in the host's log)."""

    def __init__(self, index: int):
        self.index, self.pid, self.returncode = index, None, 1

    def poll(self):
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode

    def kill(self) -> None:
        pass
