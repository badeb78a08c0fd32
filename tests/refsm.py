"""The reference SM: run OpenSM once on an ibsim-simulated fabric and read back what it did.

    from refsm import run_opensm
    ref = run_opensm(topo.to_net(), workdir, engine="minhop")
    ref.lfts        # {switch GUID: {LID: port}}, as dump_fts reads them from the switches
    ref.lids        # {port GUID: base LID}, from the destinations dump_fts names
    ref.subnet_up_seconds   # OpenSM's own log: first line to "SUBNET UP"

How (Debian packages ``opensm``, ``ibsim-utils``, ``infiniband-diags``; scripts/install-debs.sh):

1. ``ibsim -s -n NET`` in its own session, on a private abstract socket (``IBSIM_SOCKNAME``);
   ready when ``/proc/net/unix`` lists ``@<sock>:ctl``. ibsim attaches clients that name no node
   to the first port of the first node record of the net file (``Topology.to_net()`` puts the SM's
   HCA there).
2. ``opensm -F /dev/null -o -s 0 -R ENGINE ...`` with ``LD_PRELOAD=libumad2sim.so``: one sweep,
   then it exits. Private cache/tmp/dump directories, so nothing leaks between runs or into
   ``/var``.
3. ``dump_fts`` (same preload) reads every switch's LFT through the simulator.
4. Teardown: TERM, then KILL, to each process group we started; the ``sys-<pid>`` directories
   umad2sim creates in the working directory are removed. No process is ever left behind.

Also a command: ``python tests/refsm.py NETFILE|SPEC [-R ENGINE] [-o DIR]`` prints a summary.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

__all__ = ["RefResult", "RefSMError", "missing_tools", "parse_dump_fts", "parse_lid_matrix",
           "run_opensm"]

TOOLS = ("ibsim", "opensm", "dump_fts")
_UMAD2SIM_GLOBS = ("/usr/lib/*/umad2sim/libumad2sim.so", "/usr/lib/umad2sim/libumad2sim.so",
                   "/usr/lib64/umad2sim/libumad2sim.so", "/usr/local/lib/umad2sim/libumad2sim.so")


class RefSMError(RuntimeError):
    """OpenSM or ibsim could not be run, or did not bring the subnet up."""


@dataclass
class RefResult:
    lfts: dict[int, dict[int, int]]  # switch GUID -> {LID: port}
    lids: dict[int, int]  # port GUID -> base LID
    subnet_up_seconds: float
    log: str
    names: dict[int, str] = field(default_factory=dict)  # port/switch GUID -> description
    kinds: dict[int, str] = field(default_factory=dict)  # port GUID -> "switch" | "hca"
    dump_fts: str = ""
    # switch GUID -> {switch LID: [hops via port 0 (= least), port 1, ...]}, 0xFF = no path;
    # OpenSM's own opensm-lid-matrix.dump (only with dump_routing=True)
    lid_matrix: dict[int, dict[int, list[int]]] = field(default_factory=dict)
    wall_seconds: float = 0.0  # opensm start to exit, as we measured it
    workdir: str = ""


def umad2sim_path() -> str | None:
    for pat in _UMAD2SIM_GLOBS:
        hits = sorted(glob.glob(pat))
        if hits:
            return hits[0]
    return None


def missing_tools() -> list[str]:
    """What is missing to run the reference SM (empty when all is there)."""
    miss = [t for t in TOOLS if shutil.which(t) is None
            and not os.path.exists(f"/usr/sbin/{t}")]
    if umad2sim_path() is None:
        miss.append("libumad2sim.so")
    return miss


def _which(tool: str) -> str:
    return shutil.which(tool) or f"/usr/sbin/{tool}"


# ------------------------------------------------------------------------------------------------
# dump_fts output
# ------------------------------------------------------------------------------------------------

_HDR_RE = re.compile(r"Unicast lids \[[^\]]*\] of switch .*?guid (0x[0-9a-fA-F]+) \((.*)\):\s*$")
_ENT_RE = re.compile(r"(0x[0-9a-fA-F]+)\s+(\d+)\s*:\s*\((Switch|Channel Adapter|Router)"
                     r"\s+portguid (0x[0-9a-fA-F]+): '(.*)'\)")
# LMC > 0: the LIDs above a port's base LID
_PATH_RE = re.compile(r"(0x[0-9a-fA-F]+)\s+(\d+)\s*:\s*\(path #\d+ out of \d+: portguid "
                      r"(0x[0-9a-fA-F]+)\)")
_FOOT_RE = re.compile(r"(\d+) valid lids dumped")


def parse_dump_fts(text: str) -> tuple[dict[int, dict[int, int]], dict[int, int], dict, dict]:
    """Parse ``dump_fts`` output: ``(lfts, lids, names, kinds)``.

    ``lfts``: ``{switch GUID: {LID: port}}`` (valid entries only); ``lids``: ``{port GUID: LID}``
    for every destination named in any table; ``names``: GUID -> description; ``kinds``: port GUID
    -> ``"switch"``/``"hca"``. Each table's footer count is checked against its entries.
    """
    lfts: dict[int, dict[int, int]] = {}
    lids: dict[int, int] = {}
    names: dict[int, str] = {}
    kinds: dict[int, str] = {}
    cur = None
    cur_guid = None
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _HDR_RE.match(line)
        if m:
            cur_guid = int(m.group(1), 16)
            cur = lfts.setdefault(cur_guid, {})
            names[cur_guid] = m.group(2)
            continue
        m = _ENT_RE.match(line)
        if m:
            if cur is None:
                raise ValueError(f"dump_fts line {lineno}: entry before any switch header")
            lid, port = int(m.group(1), 16), int(m.group(2))
            guid = int(m.group(4), 16)
            cur[lid] = port
            if lids.setdefault(guid, lid) != lid and lid < lids[guid]:
                lids[guid] = lid  # LMC > 0: several LIDs name the port; keep the base
            names.setdefault(guid, m.group(5))
            kinds[guid] = "switch" if m.group(3) == "Switch" else "hca"
            continue
        m = _PATH_RE.match(line)
        if m:
            if cur is None:
                raise ValueError(f"dump_fts line {lineno}: entry before any switch header")
            cur[int(m.group(1), 16)] = int(m.group(2))
            continue
        m = _FOOT_RE.search(line)
        if m and cur is not None:
            if int(m.group(1)) != len(cur):
                raise ValueError(f"dump_fts line {lineno}: footer says {m.group(1)} lids, "
                                 f"parsed {len(cur)} for switch 0x{cur_guid:016x}")
    return lfts, lids, names, kinds


_MSW_RE = re.compile(r"Switch: guid (0x[0-9a-fA-F]+)")
_MROW_RE = re.compile(r"(0x[0-9a-fA-F]+):((?:\s+[0-9a-fA-F]{2})+)\s*#")


def parse_lid_matrix(text: str) -> dict[int, dict[int, list[int]]]:
    """Parse OpenSM's ``opensm-lid-matrix.dump``: ``{switch GUID: {switch LID: hops}}`` where
    ``hops[0]`` is the least hop count and ``hops[p]`` the count through port p (0xFF: none)."""
    out: dict[int, dict[int, list[int]]] = {}
    cur = None
    for line in text.splitlines():
        m = _MSW_RE.match(line)
        if m:
            cur = out.setdefault(int(m.group(1), 16), {})
            continue
        m = _MROW_RE.match(line)
        if m and cur is not None:
            cur[int(m.group(1), 16)] = [int(x, 16) for x in m.group(2).split()]
    return out


# ------------------------------------------------------------------------------------------------
# Running it
# ------------------------------------------------------------------------------------------------

_TS_RE = re.compile(r"\w{3} +\d+ (\d+):(\d+):(\d+) (\d{6}) ")


def _log_seconds(line: str) -> float | None:
    m = _TS_RE.match(line)
    if not m:
        return None
    h, mi, s, us = map(int, m.groups())
    return h * 3600 + mi * 60 + s + us / 1e6


def subnet_up_seconds(log: str) -> float | None:
    """Seconds from OpenSM's first log line to its first "SUBNET UP", from its own timestamps."""
    lines = log.splitlines()
    first = next((t for t in map(_log_seconds, lines) if t is not None), None)
    for line in lines:
        if "SUBNET UP" in line:
            t = _log_seconds(line)
            if t is None or first is None:
                return None
            return (t - first) % 86400
    return None


def _sock_listed(name: str) -> bool:
    try:
        with open("/proc/net/unix") as f:
            return any(line.rstrip().rstrip("@").endswith("@" + name) for line in f)
    except OSError:
        return False


def _stop(proc: subprocess.Popen | None, grace: float = 5.0) -> None:
    """TERM then KILL the process group led by ``proc`` (started with start_new_session)."""
    if proc is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(grace)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    # the group may outlive its leader (it should not: neither tool forks); kill what is left
    # of it, if anything, and only then
    if _group_members(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _group_members(pgid: int) -> list[int]:
    """Processes of the session and process group ``pgid`` (both are our leader's pid)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and int(fields[3]) == pgid:  # pgrp, session
            out.append(int(d))
    return out


_counter = 0


def run_opensm(net: str, workdir: str, engine: str = "minhop", *, timeout: float = 120.0,
               extra_args: tuple = (), dump_routing: bool = False) -> RefResult:
    """Run OpenSM once (routing engine ``engine``) on ibsim for the net file ``net`` (a path, or
    the text of a net file), dump the switches' LFTs, tear everything down, and return them.

    ``workdir`` is created if needed and keeps the logs: ``net``, ``ibsim.out``, ``opensm.log``,
    ``opensm.stdout``, ``dump_fts.txt``. ``dump_routing`` adds ``-D 0x43`` so that OpenSM writes
    its routing dumps to ``workdir/dump`` (``opensm-lid-matrix.dump`` is parsed into
    ``lid_matrix``); it slows big fabrics down. ``extra_args`` go to opensm as they are (e.g.
    ``("-l", "1")`` for LMC 1, ``("-a", ROOTS_FILE)`` for updn roots). Raises
    :class:`RefSMError` when a tool is missing, ibsim rejects the net file (the message starts
    with "ibsim exited" and carries ibsim's output), or OpenSM does not report SUBNET UP.
    """
    global _counter
    miss = missing_tools()
    if miss:
        raise RefSMError(f"reference SM tools missing: {', '.join(miss)} (install the Debian "
                         "packages opensm, ibsim-utils, infiniband-diags: scripts/install-debs.sh)")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    cache, dump = os.path.join(workdir, "cache"), os.path.join(workdir, "dump")
    for d in (cache, dump):  # a fresh fabric: no guid2lid cache from an earlier run
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    if "\n" not in net and not os.path.isfile(net) and os.sep in net:
        raise FileNotFoundError(net)
    if "\n" in net or not os.path.isfile(net):
        net_path = os.path.join(workdir, "net")
        with open(net_path, "w") as f:
            f.write(net if net.endswith("\n") else net + "\n")
    else:
        net_path = os.path.abspath(net)

    _counter += 1
    sock = f"refsm{os.getpid()}x{_counter}x{int(time.time() * 1000) % 100000}"
    if _sock_listed(sock + ":ctl"):
        raise RefSMError(f"ibsim socket @{sock}:ctl is already in use")
    env = dict(os.environ, IBSIM_SOCKNAME=sock, OSM_CACHE_DIR=cache, OSM_TMP_DIR=cache)
    for k in ("IBSIM_SERVER_NAME", "IBSIM_SERVER_PORT", "SIM_SET_ISSM", "SIM_HOST"):
        env.pop(k, None)
    cenv = dict(env, LD_PRELOAD=umad2sim_path())
    ibsim = osm = None
    log_path = os.path.join(workdir, "opensm.log")
    try:
        with open(os.path.join(workdir, "ibsim.out"), "w") as out:
            ibsim = subprocess.Popen([_which("ibsim"), "-s", "-n", net_path], cwd=workdir,
                                     env=env, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.monotonic()
        while not _sock_listed(sock + ":ctl"):
            if ibsim.poll() is not None:
                with open(os.path.join(workdir, "ibsim.out"), errors="replace") as f:
                    text = f.read()
                raise RefSMError(f"ibsim exited with status {ibsim.returncode} on {net_path}:\n"
                                 f"{text.strip()}")
            if time.monotonic() - t0 > 30:
                raise RefSMError("ibsim did not open its socket within 30 s")
            time.sleep(0.01)

        cmd = [_which("opensm"), "-F", "/dev/null", "-o", "-s", "0", "-R", engine,
               "-f", log_path, "-e", "--dump_files_dir", dump, *extra_args]
        if dump_routing:
            cmd += ["-D", "0x43"]  # 0x40 routing dumps; keep 0x02 (INFO) for SUBNET UP
        t1 = time.monotonic()
        with open(os.path.join(workdir, "opensm.stdout"), "w") as out:
            osm = subprocess.Popen(cmd, cwd=workdir, env=cenv, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            osm.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RefSMError(f"opensm did not finish within {timeout} s (see {log_path})") \
                from None
        wall = time.monotonic() - t1
        try:
            with open(log_path, errors="replace") as f:
                log = f.read()
        except OSError:
            log = ""
        if "SUBNET UP" not in log:
            raise RefSMError(f"opensm exited with status {osm.returncode} without SUBNET UP; "
                             f"log {log_path}:\n{log[-3000:]}")
        up = subnet_up_seconds(log)

        fts = subprocess.run([_which("dump_fts")], cwd=workdir, env=cenv,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=timeout, start_new_session=True)
        with open(os.path.join(workdir, "dump_fts.txt"), "w") as f:
            f.write(fts.stdout)
        if fts.returncode != 0:
            raise RefSMError(f"dump_fts failed with status {fts.returncode}: {fts.stderr[-2000:]}")
        lfts, lids, names, kinds = parse_dump_fts(fts.stdout)
        matrix = {}
        if dump_routing:
            try:
                with open(os.path.join(dump, "opensm-lid-matrix.dump")) as f:
                    matrix = parse_lid_matrix(f.read())
            except OSError as e:
                raise RefSMError(f"opensm wrote no lid matrix dump: {e}") from None
        return RefResult(lfts=lfts, lids=lids, subnet_up_seconds=up if up is not None else wall,
                         log=log, names=names, kinds=kinds, dump_fts=fts.stdout,
                         wall_seconds=wall, workdir=workdir, lid_matrix=matrix)
    finally:
        _stop(osm)
        _stop(ibsim)
        for d in glob.glob(os.path.join(workdir, "sys-*")):
            shutil.rmtree(d, ignore_errors=True)


def _main(argv=None) -> int:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("topology", help="net file, ibnetdiscover dump or generator spec")
    ap.add_argument("-R", "--engine", default="minhop")
    ap.add_argument("-o", "--outdir")
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from fabric.topology import load_topology

    topo = load_topology(a.topology)
    out = a.outdir or tempfile.mkdtemp(prefix="refsm-")
    ref = run_opensm(topo.to_net(), out, a.engine)
    print(f"{topo!r}\nworkdir {out}\nSUBNET UP after {ref.subnet_up_seconds:.3f} s "
          f"(opensm ran {ref.wall_seconds:.3f} s); {len(ref.lfts)} switches, "
          f"{len(ref.lids)} LIDs")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
