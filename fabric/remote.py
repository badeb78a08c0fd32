"""``python -m fabric.remote ACTION DIR ...``: what the launcher runs on a machine of a fabric that
spans several (through the remote command, fabric.machines), to start, watch and stop the device
hosts there. It prints one JSON line, for the launcher to read.

    start DIR I...     (a bundle on stdin: fabric.json, topology, keys) unpack into DIR, start the
                       hosts I... detached, and wait until each has bound its sockets (its pid file)
    alive DIR PID...   which of these pids are device hosts of DIR still running
    kill DIR PID...    SIGKILL them (fault injection), and wait until they are gone
    stop DIR GRACE     SIGTERM every host of DIR, SIGKILL after GRACE s, and remove DIR
    log DIR I N        the last N lines of host I's log
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import sys
import time

from .pidfiles import alive, host_pids, spawn_host

START_WAIT = 60.0  # a host binds its sockets within seconds even on a loaded machine


def _pid_file(run_dir: str, i: int) -> str:
    return os.path.join(run_dir, f"host-{i}.pid")


def _tail(path: str, n: int) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def _private_dirs(run_dir: str) -> None:
    """``run_dir`` and the parents it needs, made 0700. No directory on the way may belong to
    another user than us or root, nor be a symbolic link unless root's, and one of root's that
    others may write to must be sticky (/tmp): nobody else can then swap a directory on the path
    or read the keys (as ``ensure_run_base`` checks the local run base)."""
    cur = os.sep
    for part in os.path.abspath(run_dir).split(os.sep)[1:]:
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur, 0o700)
            st = os.lstat(cur)
        if stat.S_ISLNK(st.st_mode) and st.st_uid == 0:
            st = os.stat(cur)  # root's own link (/var/run -> /run): what it points to is checked
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise PermissionError(f"{cur} is not a directory of its own (a symbolic link?)")
        if st.st_uid not in (os.getuid(), 0):
            raise PermissionError(f"{cur} belongs to uid {st.st_uid}")
        if st.st_uid != os.getuid() and st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise PermissionError(f"{cur} can be written by others")
    os.chmod(cur, 0o700)


def unpack(run_dir: str, bundle: dict) -> None:
    """The files a host reads, written private: the directory 0700, the keys 0600, each file
    created anew (never through a link someone left in its place)."""
    _private_dirs(run_dir)
    for name, text in bundle.items():
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad file name in the bundle: {name!r}")
        path = os.path.join(run_dir, name)
        tmp = path + ".tmp"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)


def start(run_dir: str, indices: list[int]) -> dict:
    procs = {}
    for i in indices:
        try:
            os.unlink(_pid_file(run_dir, i))
        except FileNotFoundError:
            pass
        log = open(os.path.join(run_dir, f"host-{i}.log"), "ab")
        procs[i] = spawn_host(run_dir, i, log, cwd=run_dir)
        log.close()
    pids, failed = {}, {}
    deadline = time.monotonic() + START_WAIT
    while len(pids) + len(failed) < len(procs):
        for i, p in procs.items():
            if i in pids or i in failed:
                continue
            if os.path.exists(_pid_file(run_dir, i)):
                pids[i] = p.pid
            elif p.poll() is not None:
                failed[i] = f"exited with status {p.returncode}:\n" + _tail(os.path.join(run_dir, f"host-{i}.log"), 15)
            elif time.monotonic() > deadline:
                failed[i] = f"did not bind its sockets within {START_WAIT:.0f} s"
        time.sleep(0.02)
    return {"pids": pids, "failed": failed}


def _wait_gone(pids, run_dir: str, seconds: float) -> list[int]:
    end = time.monotonic() + seconds
    left = [p for p in pids if alive(p, run_dir)]
    while left and time.monotonic() < end:
        time.sleep(0.02)
        left = [p for p in left if alive(p, run_dir)]
    return left


def stop(run_dir: str, grace: float) -> dict:
    pids = [p for p in host_pids(run_dir) if alive(p, run_dir)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.killpg(p, sig)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
        pids = _wait_gone(pids, run_dir, grace)
        if not pids:
            break
    # only a directory of ours goes: a wrong dir= in the machines file must not remove anything else
    if os.path.exists(os.path.join(run_dir, "fabric.json")):
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"left": pids, "removed": not os.path.exists(run_dir)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    action, run_dir, rest = argv[0], argv[1], argv[2:]
    if not os.path.isabs(run_dir):
        print(f"fabric.remote: {run_dir!r} is not an absolute path", file=sys.stderr)
        return 2
    if action == "start":
        if not sys.stdin.isatty():
            data = sys.stdin.read()
            if data:
                unpack(run_dir, json.loads(data))
        out = start(run_dir, [int(x) for x in rest])
    elif action == "alive":
        out = {p: alive(int(p), run_dir) for p in rest}
    elif action == "kill":
        pids = [int(p) for p in rest]
        for p in pids:
            if alive(p, run_dir):
                os.kill(p, signal.SIGKILL)
        out = {"left": _wait_gone(pids, run_dir, 5.0)}
    elif action == "stop":
        out = stop(run_dir, float(rest[0]) if rest else 3.0)
    elif action == "log":
        out = {"log": _tail(os.path.join(run_dir, f"host-{int(rest[0])}.log"), int(rest[1]) if len(rest) > 1 else 15)}
    else:
        print(f"fabric.remote: unknown action {action!r}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
