"""``ibfab ibstat``, ``iblinkinfo``, ``ibroute``, ``ibtracert`` and ``smpquery`` print what the real
infiniband-diags print, line for line: each is run beside the real tool (Debian infiniband-diags
through ibsim's ``libumad2sim.so``, attached to an HCA port of the same running fabric) and the two
outputs are compared. What the shim invents is the only thing normalised: the CA name (``ibsim0``).

Equality alone could hold for a wrong reason (both empty, both stale), so each command is also
shown to print something else once the fabric has changed (a cable pulled, the SM rerouted), and
to agree with the real tool again then.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from paths import require_tools

from fabric import Fabric

pytestmark = pytest.mark.timeout(120)

IBFAB = [sys.executable, "-m", "fabric.cli"]
TOOLS = ("ibstat", "iblinkinfo", "ibroute", "ibtracert", "smpquery")


@pytest.fixture(scope="module", autouse=True)
def diags():
    require_tools(*TOOLS)


@pytest.fixture(scope="module")
def fab():
    # IPoIB on the HCAs: its broadcast group gives the switches' MFTs something to show (ibroute -M)
    with Fabric("fattree:2,2,4,2") as f:
        yield f


_ENVS: dict = {}


def real(fab, node: str, *argv: str) -> str:
    """The real tool attached to ``node``'s port 1 (the environment ``ibfab env`` gives, run
    from a private directory where umad2sim can write its sysfs); its stdout."""
    key = (fab.name, node)
    if key not in _ENVS:
        r = subprocess.run(IBFAB + ["env", "--name", fab.name, node], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "IBSIM_SOCKNAME", "SIM_HOST")}
        for line in r.stdout.splitlines():
            m = re.match(r"export (\w+)=(.*)$", line)
            if m:
                env[m.group(1)] = shlex.split(m.group(2))[0]
        _ENVS[key] = env
    exe = shutil.which(argv[0]) or f"/usr/sbin/{argv[0]}"
    with tempfile.TemporaryDirectory(prefix="ibft-diag-") as work:
        r = subprocess.run([exe, *argv[1:]], env=_ENVS[key], cwd=work, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def ours(fab, *argv: str, rc: int = 0) -> str:
    """``ibfab ARGV --name F``, run in this process (the CLI's main); its stdout."""
    from fabric.cli import main

    out, err = io.StringIO(), io.StringIO()
    sigpipe = signal.getsignal(signal.SIGPIPE)  # main() sets it for a shell's pipes; not pytest's
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*argv, "--name", fab.name])
    finally:
        signal.signal(signal.SIGPIPE, sigpipe)
    assert code == rc, f"ibfab {' '.join(argv)}: exit {code}\n{out.getvalue()}\n{err.getvalue()}"
    return out.getvalue() if rc == 0 else err.getvalue()


def lid(fab, name: str) -> str:
    d = fab.devices()[name]
    return str(d["lid"] if d["type"] == "switch" else next(p["lid"] for p in d["ports"] if p["port"] == 1))


def as_shim_names(text: str, ca: str) -> str:
    """Our ibstat names the CA by its node; umad2sim names every CA it shows ``ibsim0``."""
    return re.sub(rf"(^|')({re.escape(ca)})($|')", r"\1ibsim0\3", text, flags=re.M)


# --- ibstat -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("node", ["node0002", "node0001"])  # node0001 runs the SM: PortInfo.IsSM is set
def test_ibstat_prints_what_ibstat_prints(fab, node):
    for opts in ([], ["-s"], ["-p"], ["-l"]):
        mine = ours(fab, "ibstat", node, *opts)
        assert as_shim_names(mine, node) == real(fab, node, "ibstat", *opts), opts
    assert as_shim_names(ours(fab, "ibstat", node, "1"), node) == real(fab, node, "ibstat", "ibsim0", "1")
    # the node named by its GUID and by its LID reads the same device
    guid = f"0x{fab.topology.nodes[node].node_guid:016x}"
    assert ours(fab, "ibstat", guid) == ours(fab, "ibstat", lid(fab, node)) == ours(fab, "ibstat", node)


def test_ibstat_of_each_node_is_its_own(fab):
    a, b = ours(fab, "ibstat", "node0003"), ours(fab, "ibstat", "node0007")
    assert a != b
    assert f"Base lid: {lid(fab, 'node0007')}" in b
    assert f"Node GUID: 0x{fab.topology.nodes['node0007'].node_guid:016x}" in b


# --- smpquery ---------------------------------------------------------------------------------------


def test_smpquery_prints_what_smpquery_prints(fab):
    up = next(p for p, (peer, _) in fab.topology.connected_ports("leaf01").items() if peer.startswith("spine"))
    cases = [  # (ours, the real tool's): ours names nodes every way a user may
        (["nodeinfo", "leaf02"], ["nodeinfo", lid(fab, "leaf02")]),
        (["NI", f"0x{fab.topology.nodes['node0006'].node_guid:x}"], ["NI", lid(fab, "node0006")]),
        (["portinfo", "node0005", "1"], ["portinfo", lid(fab, "node0005"), "1"]),
        (["portinfo", "node0005"], ["portinfo", lid(fab, "node0005")]),
        (["portinfo", "leaf02", "0"], ["portinfo", lid(fab, "leaf02"), "0"]),
        (["portinfo", "leaf02", "5"], ["portinfo", lid(fab, "leaf02"), "5"]),
        (["portinfo", "leaf02", "9"], ["portinfo", lid(fab, "leaf02"), "9"]),  # no cable: Down
        (["portinfo", "node0001", "1"], ["portinfo", lid(fab, "node0001"), "1"]),  # the SM's: IsSM
        (["switchinfo", lid(fab, "spine01")], ["switchinfo", lid(fab, "spine01")]),
        (["nodedesc", "node0007"], ["nodedesc", lid(fab, "node0007")]),
        (["nodedesc", "spine02"], ["nodedesc", lid(fab, "spine02")]),
        (["-D", "nodeinfo", "0,1"], ["-D", "nodeinfo", "0,1"]),
        (["-D", "portinfo", f"0,1,{up}", "3"], ["-D", "portinfo", f"0,1,{up}", "3"]),
    ]
    for mine, theirs in cases:
        assert ours(fab, "smpquery", *mine, "--via", "node0003") == real(fab, "node0003", "smpquery", *theirs), mine


# --- ibroute ----------------------------------------------------------------------------------------


def test_ibroute_prints_what_ibroute_prints(fab):
    for sw in fab.topology.switches():
        assert ours(fab, "ibroute", sw.name, "--via", "node0002") == real(fab, "node0002", "ibroute", lid(fab, sw.name))
    leaf = lid(fab, "leaf02")
    for mine, theirs in ((["leaf02", "4"], [leaf, "4"]), (["leaf02", "0x3", "0x9"], [leaf, "0x3", "0x9"]),
                         (["-a", "-n", "leaf02", "0", "0x50"], ["-a", "-n", leaf, "0", "0x50"]),
                         (["-M", "leaf02"], ["-M", leaf]),
                         (["-M", "-a", "spine01"], ["-M", "-a", lid(fab, "spine01")])):
        assert ours(fab, "ibroute", *mine, "--via", "node0002") == real(fab, "node0002", "ibroute", *theirs), mine
    # the broadcast group IPoIB joined is in the MFT: not a table of blanks compared with another
    assert re.search(r"^0xc0[0-9a-f]{2} +(x |  )*x ", ours(fab, "ibroute", "-M", "-a", "leaf02"), re.M)
    # and without -a too: our SM sets SwitchInfo.MulticastFDBTop after programming the MFT, as OpenSM
    # does, and the tools read the table only up to it
    assert re.search(r"^0xc000 +(x |  )*x ", ours(fab, "ibroute", "-M", "leaf02"), re.M)


# --- ibtracert --------------------------------------------------------------------------------------


@pytest.mark.parametrize("src,dst", [("node0001", "node0005"), ("node0007", "node0002"), ("node0004", "node0003"),
                                     ("node0006", "leaf01"), ("spine02", "node0008"), ("node0003", "node0003")])
def test_ibtracert_prints_what_ibtracert_prints(fab, src, dst):
    mine = ours(fab, "ibtracert", src, dst, "--via", "node0003")
    assert mine == real(fab, "node0003", "ibtracert", lid(fab, src), lid(fab, dst))
    assert mine.splitlines()[0].endswith(f'"{fab.topology.nodes[src].description}"')


# --- iblinkinfo -------------------------------------------------------------------------------------


def test_iblinkinfo_prints_what_iblinkinfo_prints(fab):
    # the nodes are listed in the order a discovery from the local port finds them: so from two ports
    for via in ("node0003", "node0006"):
        assert ours(fab, "iblinkinfo", "--via", via) == real(fab, via, "iblinkinfo")
    for opts in (["-l"], ["-d"], ["-p"], ["--switches-only"], ["--cas-only"]):
        assert ours(fab, "iblinkinfo", *opts, "--via", "node0006") == real(fab, "node0006", "iblinkinfo", *opts), opts
    assert ours(fab, "iblinkinfo") == real(fab, fab.topology.sm_node, "iblinkinfo")  # from the SM's port


def test_iblinkinfo_of_one_node(fab):
    """-S NODE: that node's ports as the full listing shows them (the real tool's -S rescans from
    the node, which does not finish through umad2sim, so ours is held to the full listing)."""
    full = ours(fab, "iblinkinfo", "--via", "node0003")
    one = ours(fab, "iblinkinfo", "-S", "leaf02", "--via", "node0003")
    assert one.startswith("Switch: 0x") and one in full and len(one.splitlines()) == 37


# --- a changed fabric -------------------------------------------------------------------------------


def _wait(check, what: str, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, what
        time.sleep(0.2)


def test_outputs_follow_the_fabric(fab):
    """Pull the cable leaf01:5 -> spine01 and node0008's: every command then prints the changed
    fabric, and still what the real tool prints."""
    pairs = [(s, d) for s in ("node0001", "node0002", "node0003", "node0004")
             for d in ("node0005", "node0006", "node0007", "node0008")]
    before = {
        "links": ours(fab, "iblinkinfo", "--via", "node0003"),
        "route": ours(fab, "ibroute", "leaf01", "--via", "node0003"),
        "port": ours(fab, "smpquery", "portinfo", "leaf01", "5", "--via", "node0003"),
        "ibstat": ours(fab, "ibstat", "node0008"),
        "traces": {p: ours(fab, "ibtracert", *p, "--via", "node0003") for p in pairs},
    }
    via5 = [p for p, t in before["traces"].items() if t.splitlines()[2].startswith("[5] -> switch port")]
    assert via5, "no route left leaf01 by port 5"
    assert fab.topology.peer("leaf01", 5)[0] == "spine01" and fab.topology.peer("node0008", 1) == ("leaf02", 4)
    fab.link_down("leaf01", 5)
    fab.link_down("node0008", 1)
    try:
        # the SM reroutes on the traps: no LID leaves leaf01 by port 5 any more
        _wait(lambda: not re.search(r"^0x\w{4} 005 ", ours(fab, "ibroute", "leaf01", "--via", "node0003"), re.M),
              "leaf01 still routes by port 5")
        route = ours(fab, "ibroute", "leaf01", "--via", "node0003")
        assert route != before["route"] and route == real(fab, "node0003", "ibroute", lid(fab, "leaf01"))
        links = ours(fab, "iblinkinfo", "--via", "node0003")
        assert links != before["links"] and links == real(fab, "node0003", "iblinkinfo")
        assert re.search(r"^ +\d+ +5\[  \] ==\( +Down/ Polling\)==> ", links, re.M)
        port = ours(fab, "smpquery", "portinfo", "leaf01", "5", "--via", "node0003")
        assert port != before["port"] and "LinkState:.......................Down" in port
        assert port == real(fab, "node0003", "smpquery", "portinfo", lid(fab, "leaf01"), "5")
        st = ours(fab, "ibstat", "node0008")
        assert st != before["ibstat"] and "State: Down" in st
        assert as_shim_names(st, "node0008") == real(fab, "node0008", "ibstat")
        for p in via5:
            trace = ours(fab, "ibtracert", *p, "--via", "node0003")
            assert trace != before["traces"][p]
            assert trace == real(fab, "node0003", "ibtracert", lid(fab, p[0]), lid(fab, p[1]))
    finally:
        fab.link_up("leaf01", 5)
        fab.link_up("node0008", 1)


# --- bad input --------------------------------------------------------------------------------------


def test_bad_input_is_one_line(fab):
    for argv, rc, says in ((["ibroute", "node0003"], 2, "is not a switch"),
                           (["ibstat", "leaf01"], 2, "not a CA"),
                           (["ibstat", "node0003", "2"], 2, "has no port number 2"),
                           (["smpquery", "-D", "nodeinfo", "1,2"], 2, "bad directed route"),
                           (["smpquery", "-D", "nodeinfo", "0,9"], 1, "no answer to nodeinfo"),
                           (["ibtracert", "node0001", "nosuch"], 2, "no node 'nosuch'"),
                           (["iblinkinfo", "-S", "nosuch"], 2, "no node 'nosuch'")):
        r = subprocess.run(IBFAB + [*argv, "--name", fab.name], capture_output=True, text=True, timeout=60)
        assert r.returncode == rc, (argv, r.stderr)
        assert r.stderr.startswith(f"ibfab {argv[0]}: ") and says in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert r.stdout == ""
