"""``ibfab up`` shows its phases on stderr: one plain line per phase with its counts and time when
stderr is not a terminal, a line redrawn in place on a terminal, nothing with -q; stdout keeps
what it printed before."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from fabric.topology import generate

IBFAB = [sys.executable, "-m", "fabric.cli"]
pytestmark = pytest.mark.timeout(60)
TOPO = "fattree:2,2,4,2"
LINE = re.compile(r"(?P<phase>[A-Za-z ]+?) (?P<done>\d+)/(?P<total>\d+) \((?P<s>\d+\.\d) s\)\Z")


def _expected(spec: str, hosts: int) -> list:
    """The phases and their counts, from the topology itself: every host, cable, node, LID (one
    per switch and per cabled HCA port, LMC 0), switch routed and IPoIB node."""
    t = generate(spec)
    hca_ports = {e for lk in t.links for e in lk.ends() if t.nodes[e[0]].kind == "hca"}
    return [("hosts started", hosts), ("links trained", len(t.links)), ("SM sweep", len(t.nodes)),
            ("LIDs", len(t.switches()) + len(hca_ports)), ("routes", len(t.switches())),
            ("IPoIB joins", len(t.hcas()))]


def _down(name):
    subprocess.run(IBFAB + ["down", "--name", name], capture_output=True, timeout=60)


def test_phase_lines_in_order_with_counts_when_stderr_is_a_pipe():
    name = "progpipe"
    try:
        r = subprocess.run(IBFAB + ["up", TOPO, "--name", name, "--hosts", "2"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert "\r" not in r.stderr and "\x1b" not in r.stderr
        got = []
        for line in r.stderr.splitlines():
            m = LINE.match(line)
            assert m, f"not a phase line: {line!r}"
            got.append((m["phase"], int(m["done"]), int(m["total"])))
        assert [(p, d) for p, d, _ in got] == _expected(TOPO, 2)
        assert all(done == total for _, done, total in got)
        # stdout is what it was: the summary lines
        assert "every link up in" in r.stdout and "subnet up in" in r.stdout and "node software: ipoib" in r.stdout
    finally:
        _down(name)


def test_quiet_and_bare_hcas():
    name = "progquiet"
    try:
        r = subprocess.run(IBFAB + ["up", "single:3", "--name", name, "-q"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert "every link up in" in r.stdout
    finally:
        _down(name)
    name = "progbare"
    try:  # no SM: no SM phases, nothing to join
        r = subprocess.run(IBFAB + ["up", "single:3", "--name", name, "--no-sm"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert [LINE.match(x)["phase"] for x in r.stderr.splitlines()] == ["hosts started", "links trained"]
    finally:
        _down(name)


def test_a_terminal_gets_a_line_redrawn_in_place():
    name = "progtty"
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(IBFAB + ["up", TOPO, "--name", name, "--hosts", "2"], stdout=subprocess.PIPE,
                             stderr=slave, stdin=subprocess.DEVNULL)
        os.close(slave)
        slave = None
        chunks = []
        deadline = time.monotonic() + 50
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif p.poll() is not None:
                break
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 0
        tty = b"".join(chunks).decode()
        assert "every link up in" in out.decode()
        redraws = [seg for seg in tty.split("\r") if seg.startswith("\x1b[K")]
        # a phase under way drawn with its bar, then overwritten (not a line of its own)
        assert any(re.match(r"\x1b\[K[A-Za-z ]+ \[[#-]+\] \d+/\d+", seg) and "\n" not in seg for seg in redraws), tty
        finals = [LINE.match(line.strip().replace("\x1b[K", "")) for line in tty.replace("\r", "\n").splitlines()]
        got = [(m["phase"], int(m["done"])) for m in finals if m]
        assert got == _expected(TOPO, 2)
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
        _down(name)
