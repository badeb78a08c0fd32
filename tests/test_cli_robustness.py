"""`ibfab` under bad names, races and signals (issue 14): every failure is one line and an exit
code, `up` is atomic per name, and a signal during `up` leaves nothing behind."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from fabric import launcher
from fabric.runinfo import run_base, run_dir_for

IBFAB = [sys.executable, "-m", "fabric.cli"]


def _ibfab(*args, timeout=120):
    return subprocess.run(IBFAB + list(args), capture_output=True, text=True, timeout=timeout)


def _one_line_error(r, code, text):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert text in r.stderr, r.stderr


def _host_pids(name):
    """Device-host processes of fabric ``name``, found by their command line (whatever the files say)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if b"fabric.host" in cmd and any(c.endswith(f"/{name}".encode()) for c in cmd):
            out.append(int(pid))
    return out


@pytest.mark.parametrize("name", ["../..", ".hidden", "a/b", "x" * 200, "sp ace"])
def test_a_bad_fabric_name_is_a_usage_error_and_creates_nothing(name):
    before = set(os.listdir(run_base())) if os.path.isdir(run_base()) else set()
    for cmd in (["status"], ["down"], ["up", "single:2"]):
        r = _ibfab(*cmd, "--name", name)
        _one_line_error(r, 2, "invalid fabric name")
    after = set(os.listdir(run_base())) if os.path.isdir(run_base()) else set()
    assert after == before


def test_a_missing_fabric_or_node_is_one_line():
    _one_line_error(_ibfab("status", "--name", "nosuchfabric"), 1, "no running fabric named 'nosuchfabric'")
    _one_line_error(_ibfab("down", "--name", "nosuchfabric"), 1, "no fabric named 'nosuchfabric'")


def test_the_run_directory_is_private_and_a_second_up_of_a_name_is_refused():
    r = _ibfab("up", "single:2", "--name", "robust1", "--node-software", "none")
    try:
        assert r.returncode == 0, r.stderr
        for d in (run_base(), run_dir_for("robust1")):
            assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
        again = _ibfab("up", "single:2", "--name", "robust1", "--node-software", "none")
        _one_line_error(again, 1, "already running")
        _one_line_error(_ibfab("saquery", "path", "node0001", "nosuch", "--name", "robust1"), 2,
                        "no node 'nosuch' in fabric 'robust1'")
        _one_line_error(_ibfab("link", "nosuch", "1", "down", "--name", "robust1"), 2, "no node 'nosuch'")
    finally:
        _ibfab("down", "--name", "robust1")
    assert not _host_pids("robust1")


def test_two_ups_racing_on_one_name_start_one_fabric():
    procs = [subprocess.Popen(IBFAB + ["up", "single:4", "--name", "robust2", "--node-software", "none"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        results = [p.communicate(timeout=120) for p in procs]
        codes = sorted(p.returncode for p in procs)
        assert codes == [0, 1], results
        loser = results[[p.returncode for p in procs].index(1)][1]
        assert "being started or stopped by another command" in loser or "already running" in loser, loser
        assert "Traceback" not in loser
        assert launcher.is_running("robust2")
        assert len(_host_pids("robust2")) == len(launcher.RunInfo.load(run_dir_for("robust2")).hosts)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        _ibfab("down", "--name", "robust2")
    assert not _host_pids("robust2") and not os.path.exists(run_dir_for("robust2"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_during_up_stops_what_it_started(sig):
    """The signal comes once the device hosts run but before the subnet is up (a fabric of bare
    HCAs waiting for an SM that is slow to come: a long --timeout keeps `up` waiting)."""
    p = subprocess.Popen(IBFAB + ["up", "fattree:2,2,4,2", "--name", "robust3", "--node-software", "none"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _host_pids("robust3"):
            assert time.monotonic() < deadline and p.poll() is None, p.communicate()
            time.sleep(0.02)
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
        p.wait()
    if p.returncode == 0:  # it was faster than the signal: nothing to clean up but the fabric itself
        _ibfab("down", "--name", "robust3")
        pytest.skip("the fabric came up before the signal arrived")
    assert p.returncode in (1, 130), (p.returncode, err)
    assert "Traceback" not in err, err
    deadline = time.monotonic() + 10
    while _host_pids("robust3") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _host_pids("robust3"), "device hosts left behind"
    assert not os.path.exists(run_dir_for("robust3")), "run directory left behind"
    assert not launcher.is_running("robust3")
