"""Which device-host processes of a run directory are alive: their pid files (``host-<i>.pid``,
written once a host has bound its sockets), and a pid that is a device host of that directory
still (a pid can be reused by anything once its process is gone). Shared by the launcher and by
``fabric.remote``, which does the same on the other machines of a fabric."""

from __future__ import annotations

import os
import subprocess
import sys


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
    env = dict(os.environ)
    for k, v in _HOST_ENV.items():
        env.setdefault(k, v)
    return subprocess.Popen([sys.executable, "-m", "fabric.host", run_dir, str(index)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            close_fds=True, cwd=cwd, env=env)
