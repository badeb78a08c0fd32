"""The real fabric: device hosts as processes, ZeroMQ links, programmed with SMPs over RPC."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import zmq

from fabric import Fabric, launcher
from fabric.rpc import RpcClient
from fabric.runinfo import run_dir_for
from handsm import HandSM

from paths import shared_topology
IBFAB = [sys.executable, "-m", "fabric.cli"]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def _no_leftovers(name, pids):
    assert not os.path.exists(run_dir_for(name)), "run directory left behind"
    deadline = time.time() + 5
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)], "device-host processes left behind"


@pytest.fixture
def two_switch():
    with Fabric(shared_topology("ibsim/net.2sw2path4hca"), sm=False) as fab:
        yield fab


def test_hand_programmed_fabric_carries_ud_between_every_hca_pair(two_switch):
    fab = two_switch
    topo = fab.topology
    sm = HandSM(lambda smp: fab.smp(topo.sm_node, smp, port=topo.sm_port)).bring_up()
    assert len(sm.nodes) == len(topo.nodes)
    assert len(sm.links) == 2 * len(topo.links)
    hcas = [n.name for n in topo.hcas()]
    lid = {n.name: sm.lid_of(n.node_guid) for n in topo.hcas()}
    qpn = {h: fab.create_qp(h, qkey=0x1234) for h in hcas}
    for src in hcas:
        for dst in hcas:
            if src != dst:
                fab.post_send(src, qpn[src], dlid=lid[dst], dest_qp=qpn[dst], payload=f"{src}->{dst}".encode())
    for dst in hcas:
        got = []
        deadline = time.time() + 5
        while len(got) < len(hcas) - 1 and time.time() < deadline:
            got += fab.poll(dst, qpn[dst], timeout=0.5)
        assert sorted(c["payload"].decode() for c in got) == sorted(f"{s}->{dst}" for s in hcas if s != dst)
        assert {c["slid"] for c in got} == {lid[s] for s in hcas if s != dst}
    st = fab.devices()
    assert all(p["state"] == "Active" for d in st.values() for p in d["ports"] if p["cabled"])


def test_bad_input_on_a_link_is_counted_and_the_host_survives(two_switch):
    from fabric.wire.burst import BURST_HDR, BURST_VERSION, KIND_DATA

    fab = two_switch
    sw = next(n for n in fab.topology.switches())
    info = fab.info
    host = info.host_of(sw.name)
    dev = info.device_index(sw.name)
    token = bytes.fromhex(info.data["link_token"])
    errors_before = next(h["burst_errors"] for h in fab.client.status() if h["host"] == host)
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 2000)  # deliver everything before close
    s.connect(info.ingress(host))
    # junk that names no device (the host counts it), and bursts to the switch whose framing is bad
    nameless = [b"", b"\x01", b"\x09\x00\x01\x00\x00\x00", b"\x01\x00\x01\x00\x00\x05\x00\x10abc"]
    header = lambda count, version=BURST_VERSION: BURST_HDR.pack(version, KIND_DATA, 1, count, token, dev)  # noqa: E731
    bad_framing = [header(5), header(1) + b"\x00\x10abc", header(0) + b"trailing", header(1, version=2) + os.urandom(40)]
    for j in nameless + bad_framing:
        s.send(j)
    s.close()
    deadline = time.time() + 5
    while time.time() < deadline:
        d = fab.devices()[sw.name]
        errors = next(h["burst_errors"] for h in fab.client.status() if h["host"] == host)
        if d["drops"].get("bad_burst", 0) >= 4 and errors - errors_before >= 8:
            break
        time.sleep(0.05)
    assert d["drops"].get("bad_burst", 0) >= 4
    assert errors - errors_before >= 8  # every one of them counted by the host
    assert all(_alive(p) for p in fab.pids())


def test_cli_up_status_down_leaves_nothing_behind():
    name = "clitest"
    r = subprocess.run(IBFAB + ["up", "fattree:4,2,24,6", "--name", name, "--no-sm"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "every link up" in r.stdout
    st = subprocess.run(IBFAB + ["status", "--name", name, "--json"], capture_output=True, text=True,
                        timeout=60)
    assert st.returncode == 0, st.stderr
    devices = json.loads(st.stdout)["devices"]
    assert sum(d["type"] == "hca" for d in devices) == 96
    assert sum(d["type"] == "switch" for d in devices) == 6
    assert all(p["phys"] == "LinkUp" for d in devices for p in d["ports"] if p["cabled"])
    pids = sorted({d["pid"] for d in devices})
    assert len(pids) >= 2  # many devices per process, more than one process
    dn = subprocess.run(IBFAB + ["down", "--name", name], capture_output=True, text=True, timeout=60)
    assert dn.returncode == 0, dn.stderr
    _no_leftovers(name, pids)


def test_two_named_fabrics_at_once_and_down_after_a_crash():
    with Fabric("single:2", name="fa", sm=False) as fa, Fabric("linear:2", name="fb", sm=False) as fb:
        pa, pb = fa.pids(), fb.pids()
        assert set(pa).isdisjoint(pb)
        assert launcher.is_running("fa") and launcher.is_running("fb")
        os.kill(pa[0], signal.SIGKILL)  # a crashed device host
        time.sleep(0.1)
        assert launcher.down("fa")
        _no_leftovers("fa", pa)
        assert launcher.is_running("fb")
        assert fb.devices()  # the other fabric is untouched
    _no_leftovers("fb", pb)


def test_up_refuses_a_running_name_and_cleans_a_stale_one():
    with Fabric("single:2", name="dup", sm=False):
        with pytest.raises(launcher.LaunchError, match="already running"):
            launcher.up("single:2", "dup", sm=False)
    stale = run_dir_for("stale")
    os.makedirs(stale)
    with open(os.path.join(stale, "fabric.json"), "w") as f:
        f.write("{}")
    with Fabric("single:2", name="stale", sm=False) as fab:
        assert fab.devices()


def test_link_down_and_up_through_rpc():
    with Fabric("single:2", sm=False) as fab:
        fab.link_down("sw01", 1)
        deadline = time.time() + 5  # the DOWN reaches the far end asynchronously (another host)
        while time.time() < deadline and fab.devices()["node0001"]["ports"][0]["phys"] == "LinkUp":
            time.sleep(0.02)
        devs = fab.devices()
        assert devs["node0001"]["ports"][0]["phys"] != "LinkUp"
        assert devs["sw01"]["ports"][1]["phys"] == "Disabled"
        fab.link_up("sw01", 1)
        deadline = time.time() + 5
        while time.time() < deadline:
            devs = fab.devices()
            if devs["node0001"]["ports"][0]["phys"] == "LinkUp" and devs["sw01"]["ports"][1]["phys"] == "LinkUp":
                break
            time.sleep(0.05)
        assert devs["node0001"]["ports"][0]["state"] == "Initialize"


def test_rpc_errors_are_clear():
    with Fabric("single:2", sm=False) as fab:
        with pytest.raises(Exception, match="no port 9"):
            fab.link_down("sw01", 9)
        with pytest.raises(Exception, match="unknown operation"):
            RpcClient(fab.info.control(0)).call("frobnicate")


def test_host_plan_follows_the_sm():
    """Our SM keeps many SMPs in flight and gains from a second process; the real OpenSM keeps 4
    on the wire and waits on each round trip, so its fabric stays in as few processes as the size
    allows (fewer cables between processes on its directed routes). An explicit count wins."""
    from fabric.topology import load_topology

    topo = load_topology("fattree:4,2,24,6")  # 102 devices
    ours = launcher.plan_hosts(topo, None, launcher.devices_per_host("ours"))
    theirs = launcher.plan_hosts(topo, None, launcher.devices_per_host("opensm"))
    assert len(ours) == 2 and len(theirs) == 1
    assert sorted(d for h in ours for d in h) == sorted(theirs[0]) == sorted(topo.nodes)
    assert len(launcher.plan_hosts(topo, 2, launcher.devices_per_host("opensm"))) == 2


def test_link_states_is_what_the_launcher_waits_on():
    """The light op ``up`` polls while links train: every cabled port LinkUp once up returns, and
    a port taken down shows as pending at both ends (the far end loses its signal)."""
    with Fabric("single:2", name="lstates", sm=False) as fab:
        states = [fab.client.clients[i].call("link_states") for i in range(len(fab.info.hosts))]
        up = {(d, p) for st in states for d, ports in st["up"].items() for p in ports}
        assert sum(st["pending"] for st in states) == 0
        assert up == {e for lk in fab.topology.links for e in lk.ends()}
        fab.client.call("node0001", "link", port=1, up=False)
        end = time.monotonic() + 10
        while True:
            states = [fab.client.clients[i].call("link_states") for i in range(len(fab.info.hosts))]
            if sum(st["pending"] for st in states) == 2:
                break
            assert time.monotonic() < end, states
            time.sleep(0.05)
        up = {(d, p) for st in states for d, ports in st["up"].items() for p in ports}
        assert ("node0001", 1) not in up and len(up) == len(fab.topology.links) * 2 - 2


def test_device_hosts_start_without_blas_threads(monkeypatch):
    """A host does no linear algebra: numpy's OpenBLAS gets one thread (no spinning pool eating a
    core while the fabric comes up) should node software import numpy, unless whoever launched the
    fabric asked for another count. A host running IPoIB does not import numpy at all (the fast
    provider's rings are C memory that numpy only looks at when asked)."""
    from fabric.pidfiles import host_pids

    def host_threads(fab):
        out = []
        for pid in host_pids(fab.info.run_dir):
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
            with open(f"/proc/{pid}/maps") as f:
                maps = f.read()
            out.append((env.get(b"OPENBLAS_NUM_THREADS"), "openblas" in maps or "_multiarray_umath" in maps))
        return out

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with Fabric("single:2", name="blas1") as fab:
        assert fab.client.call("node0001", "ipoib_status")["interfaces"]  # IPoIB runs there
        one = host_threads(fab)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    with Fabric("single:2", name="blas2") as fab:
        two = host_threads(fab)
    assert one and {e for e, _ in one} == {b"1"}
    assert two and {e for e, _ in two} == {b"2"}
    assert not any(numpy for _, numpy in one + two)


def _ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[2]), int(fields[3])  # parent, process group, session


def test_hosts_of_one_machine_are_forked_from_one_process_and_all_go_down():
    """Several hosts start as children of one process that imported what they need once; each is
    a host of its own (its own session, log and pid), the launcher knows every one (a host that
    dies is reported with its status), and down leaves none of them, nor their parent."""
    from fabric.pidfiles import ForkedHost

    with Fabric("fattree:2,2,4,2", name="forked", hosts=3, sm=False) as fab:
        pids = fab.pids()
        parents = {_ppid(p)[0] for p in pids}
        assert len(pids) == 3 and len(parents) == 1
        parent = parents.pop()
        assert launcher._SPAWNED[fab.info.run_dir][-1].pid == parent
        assert all(_ppid(p)[2] == p for p in pids)  # each leads its own session
        hosts = launcher._SPAWNED[fab.info.run_dir][:-1]
        assert [type(h) for h in hosts] == [ForkedHost] * 3 and [h.pid for h in hosts] == pids
        for i in range(3):
            with open(fab.info.log_file(i)) as f:
                assert "Traceback" not in f.read()
        assert all(h.poll() is None for h in hosts)
        os.kill(pids[2], signal.SIGKILL)
        assert hosts[2].wait(timeout=5) == -signal.SIGKILL  # its status, as its parent reaped it
        assert hosts[0].poll() is None
        all_pids = pids + [parent]
    _no_leftovers("forked", all_pids)


def test_the_forking_entry_refuses_bad_arguments(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fabric.host", str(tmp_path), "--fork", "0,x"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.startswith("usage: python -m fabric.host")


def test_a_forking_process_that_fails_is_reported_with_what_it_said(tmp_path):
    """The forking process cannot read the run directory: no host starts, each is reported as
    exited, and each host's log (what the launcher shows) holds the reason."""
    from fabric.pidfiles import spawn_hosts

    hosts, started = spawn_hosts(str(tmp_path), [0, 1], lambda i: str(tmp_path / f"host-{i}.log"))
    assert [h.poll() for h in hosts] == [1, 1]
    started[-1].wait(timeout=30)
    for i in (0, 1):
        text = (tmp_path / f"host-{i}.log").read_text()
        assert "not started by python -m fabric.host --fork" in text and "fabric.json" in text


def test_the_forking_process_stopped_stops_its_hosts_and_reaps_them():
    """ibfab down signals every process of a fabric; the forking one passes SIGTERM on to the
    hosts it started and stays to reap them (each one's status is written), then ends."""
    from fabric.pidfiles import ForkedHost

    with Fabric("fattree:2,2,4,2", name="forkstop", hosts=2, sm=False) as fab:
        started = launcher._SPAWNED[fab.info.run_dir]
        hosts, parent = started[:-1], started[-1]
        assert all(type(h) is ForkedHost for h in hosts)
        with open(os.path.join(fab.info.run_dir, "spawned.pids")) as f:
            noted = {int(x) for x in f.read().split()}
        assert noted == {h.pid for h in hosts} | {parent.pid}
        parent.send_signal(signal.SIGTERM)
        assert [h.wait(timeout=10) for h in hosts] == [0, 0]  # each stopped as asked, and reaped
        assert parent.wait(timeout=10) == 0
        pids = [h.pid for h in hosts] + [parent.pid]
    _no_leftovers("forkstop", pids)
