"""A fabric over several machines (``ibfab up --machines``), tested on one machine: the "machines"
are network namespaces this module makes, joined by veth pairs to a bridge in a namespace of its
own, with addresses from the benchmark range (198.18.0.0/15) that exist only inside them. The
remote command is ``ip netns exec {host}``, and every ibfab command runs inside the first
namespace, as on the first machine of a cluster: no traffic touches the root namespace."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fabric import placement
from fabric.machines import MachinesError, parse
from fabric.topology import load_topology

IBFAB = [sys.executable, "-m", "fabric.cli"]
TOPO = "fattree:2,1,2,1"  # leaf01 + node0001..2, leaf02 + node0003..4, spine01 between them
PREFIX = f"ibmm{os.getpid() % 100000}"
NAME = "mm"
SUBNET = "198.18.231"  # the machines' own addresses, inside the namespaces only


def _hcas_by_leaf(topo):
    return {sw.name: {p[0] for port in range(1, sw.num_ports + 1) if (p := topo.peer(sw.name, port))
                      and topo.nodes[p[0]].kind == "hca"} for sw in topo.switches()}


# -- placement and the machines file (no namespaces) ---------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("spec,machines", [("fattree:4,2,4,1", 2), ("fattree:4,2,4,1", 4), ("fattree:6,2,3,1", 3),
                                           ("fattree3:2,3,2,4,2", 2)])
def test_placement_keeps_leaves_whole_and_balances_hcas(spec, machines):
    topo = load_topology(spec)
    groups = placement.plan_machines(topo, machines)
    where = {d: k for k, g in enumerate(groups) for d in g}
    assert sorted(where) == sorted(topo.nodes) and sum(map(len, groups)) == len(topo.nodes)  # each once
    for leaf, hcas in _hcas_by_leaf(topo).items():
        assert {where[h] for h in hcas} <= {where[leaf]}, f"{leaf}'s HCAs left its machine"
    counts = [sum(1 for d in g if topo.nodes[d].kind == "hca") for g in groups]
    per_leaf = max(len(h) for h in _hcas_by_leaf(topo).values())
    assert max(counts) - min(counts) <= per_leaf, counts  # balanced up to one leaf's HCAs
    crossing = [lk for lk in topo.links if where[lk.a] != where[lk.b]]
    assert sum(placement.crossing(topo, groups)) == 2 * len(crossing)
    assert all(topo.nodes[lk.a].kind == "switch" and topo.nodes[lk.b].kind == "switch" for lk in crossing)


@pytest.mark.timeout(30)
def test_pod_of_a_three_level_tree_stays_on_one_machine():
    topo = load_topology("fattree3:2,3,2,4,2")  # 2 pods of 3 leaves and 2 aggregation switches
    groups = placement.plan_machines(topo, 2)
    where = {d: k for k, g in enumerate(groups) for d in g}
    pod_of = {sw.name: sw.name[:3] for sw in topo.switches() if sw.name.startswith("p")}
    for leaf, hcas in _hcas_by_leaf(topo).items():
        pod_of.update({h: pod_of.get(leaf) for h in hcas})
    machines_of_pod = {}
    for d, pod in pod_of.items():
        machines_of_pod.setdefault(pod, set()).add(where[d])
    assert set(machines_of_pod) == {"p01", "p02"}
    assert all(len(m) == 1 for m in machines_of_pod.values()) and machines_of_pod["p01"] != machines_of_pod["p02"]


@pytest.mark.timeout(30)
def test_machines_file_parsing():
    ms = parse(["# the cluster", "", "alpha", "beta:18000 addr=10.0.0.2  # second", "gamma addr=10.0.0.3 dir=/srv/x"])
    assert [(m["name"], m["port"], m["addr"], m["dir"]) for m in ms] == [
        ("alpha", 17000, None, None), ("beta", 18000, "10.0.0.2", None), ("gamma", 17000, "10.0.0.3", "/srv/x")]
    from fabric.machines import normalize

    assert normalize([{"name": "beta", "port": 18000, "addr": "10.0.0.2"}, "alpha"]) == [
        {"name": "beta", "port": 18000, "addr": "10.0.0.2", "dir": None},
        {"name": "alpha", "port": 17000, "addr": None, "dir": None}]
    for bad in (["a:port"], ["a:80"], ["a addr=nothing"], ["a addr=::1"], ["a colour=red"], ["a dir=rel"], ["a", "a"], ["# none"],
                ["bad/name"], ["-oProxyCommand=x"]):  # a leading '-' would be an option of ssh
        with pytest.raises(MachinesError):
            parse(bad)


def test_remote_run_directories_are_the_fabrics_own_and_private(tmp_path):
    """Two fabrics given one dir= each get a directory of their own there; what a machine unpacks
    is 0700/0600, and a directory of another user on the way is refused (it could swap ours)."""
    from fabric import cluster, remote

    class Info:
        name, run_dir = "fab1", "/tmp/ibfab-x/fab1"
        machines = [{"name": "a", "dir": str(tmp_path / "srv")}, {"name": "b", "dir": None}]

    assert cluster.remote_dir(Info, 0) == str(tmp_path / "srv" / "fab1" / "m0")
    assert cluster.remote_dir(Info, 1) == "/tmp/ibfab-x/fab1/m1"
    d = tmp_path / "srv" / "fab1" / "m0"
    remote.unpack(str(d), {"fabric.json": "{}", "curve.keys": "k"})
    assert os.stat(d).st_mode & 0o777 == 0o700 and os.stat(d / "curve.keys").st_mode & 0o777 == 0o600
    os.symlink("/nonexistent", d / "curve.keys.tmp")  # a link left where the keys are written first
    remote.unpack(str(d), {"curve.keys": "k2"})
    assert (d / "curve.keys").read_text() == "k2" and not os.path.lexists(d / "curve.keys.tmp")
    other = tmp_path / "other"
    other.mkdir()
    os.chown(other, 54321, 54321)
    with pytest.raises(PermissionError):
        remote.unpack(str(other / "m0"), {"fabric.json": "{}"})


@pytest.mark.timeout(30)
def test_bad_machines_file_is_one_line_exit_2(tmp_path):
    f = tmp_path / "machines"
    f.write_text("ok1\nnot a machine line\n")
    r = subprocess.run(IBFAB + ["up", "single:2", "--machines", str(f), "--name", "mmbad"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "machines:2" in r.stderr, r.stderr
    r = subprocess.run(IBFAB + ["up", "single:2", "--machines", str(tmp_path / "absent"), "--name", "mmbad"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.startswith("ibfab up: ") and r.stderr.count("\n") == 1, r.stderr
    assert not os.path.exists(os.path.join(os.environ["IBFAB_RUN_BASE"], "mmbad"))


@pytest.mark.timeout(30)
def test_a_tcp_host_without_keys_refuses_to_start(tmp_path):
    """No plaintext fallback: a host whose endpoints are tcp:// and whose run directory has no
    CURVE keys exits before it binds anything, and no RPC client is made for it."""
    from fabric.runinfo import RunInfo

    topo = load_topology("single:2")
    (tmp_path / "topology.net").write_text(topo.to_net())
    info = RunInfo(str(tmp_path), {"name": "nokeys", "topology": str(tmp_path / "topology.net"),
                                   "hosts": [{"devices": list(topo.nodes), "machine": 0,
                                              "ingress": "tcp://127.0.0.1:17990", "control": "tcp://127.0.0.1:17991"}],
                                   "machines": [{"name": "here", "addr": "127.0.0.1", "port": 17990}],
                                   "node_software": None, "link_token": "00" * 8})
    info.save()
    r = subprocess.run([sys.executable, "-m", "fabric.host", str(tmp_path), "0"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and "refusing plaintext" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "host-0.pid").exists()
    with pytest.raises(PermissionError):
        info.control(0)


# -- across namespaces ----------------------------------------------------------------------------

def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def _ns_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


class Cluster:
    def __init__(self, tmp):
        self.br, self.ns = f"{PREFIX}-br", [f"{PREFIX}-m{i}" for i in range(2)]
        self.addr = [f"{SUBNET}.{i + 1}" for i in range(2)]
        self.env = dict(os.environ, IBFAB_REMOTE="ip netns exec {host}", IBFAB_RPC_TIMEOUT="10")
        self.machines = os.path.join(tmp, "machines")
        with open(self.machines, "w") as f:
            f.write(f"{self.ns[0]} addr={self.addr[0]}\n{self.ns[1]}:17100 addr={self.addr[1]}\n")
        self.run_dir = os.path.join(os.environ["IBFAB_RUN_BASE"], NAME)
        self.made: list[str] = []

    def make(self):
        for ns in (self.br, *self.ns):
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.br, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.br, "link", "set", "br0", "up")
        for i, ns in enumerate(self.ns):
            _ip("-n", self.br, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.br, "link", "set", f"p{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr[i]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def ibfab(self, *args, timeout=60, ns=0):
        return subprocess.run(["ip", "netns", "exec", self.ns[ns], *IBFAB, *args, "--name", NAME], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def py(self, code, ns=0, timeout=30):
        return subprocess.run(["ip", "netns", "exec", self.ns[ns], sys.executable, "-c", textwrap.dedent(code)],
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def info(self) -> dict:
        with open(os.path.join(self.run_dir, "fabric.json")) as f:
            return json.load(f)

    def remote_pid(self, host: int) -> int:
        m = self.info()["hosts"][host]["machine"]
        with open(os.path.join(self.run_dir, f"m{m}", f"host-{host}.pid")) as f:
            return int(f.read())

    def host_pids(self) -> list[int]:
        """Every process of ours that still runs a device host of this fabric."""
        out = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                if b"fabric.host" in cmd and self.run_dir.encode() in cmd:
                    out.append(int(p))
        return out

    def cleanup(self):
        if os.path.exists(self.run_dir) and all(os.path.exists(f"/run/netns/{ns}") for ns in self.ns):
            self.ibfab("down", timeout=60)
        for pid in self.host_pids():  # what a failed test left: our own hosts, by pid
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for ns in reversed(self.made):
            _ip("netns", "del", ns, check=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("ip") is None or _ip("netns", "list", check=False).returncode != 0:
        pytest.skip("ip netns is not available")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    c = Cluster(str(tmp_path_factory.mktemp("mm")))
    try:
        c.make()
        r = c.ibfab("up", TOPO, "--machines", c.machines, "-q", timeout=90)
        assert r.returncode == 0, r.stderr + r.stdout
        c.up_output = r.stdout
        yield c
    finally:
        c.cleanup()
        assert not c.host_pids(), "device hosts left behind"
        assert not [ns for ns in c.made if os.path.exists(f"/run/netns/{ns}")], "namespaces left behind"


@pytest.mark.timeout(60)
def test_hosts_run_in_their_machines_and_ping_across(cluster):
    info = cluster.info()
    hosts = info["hosts"]
    machine_of = {d: h["machine"] for h in hosts for d in h["devices"]}
    topo = load_topology(TOPO)
    for leaf, hcas in _hcas_by_leaf(topo).items():
        assert {machine_of[h] for h in hcas} <= {machine_of[leaf]}
    assert {machine_of["node0001"], machine_of["node0004"]} == {0, 1}  # one leaf per machine
    crossing = sum(1 for lk in topo.links if machine_of[lk.a] != machine_of[lk.b])
    assert crossing == info["placement"]["cables_crossing"] == 1
    assert f"{crossing} of {len(topo.links)} cables cross machines" in cluster.up_output
    for m, addr in enumerate(cluster.addr):  # the table names every machine with its address
        assert any(cluster.ns[m] in line and addr in line for line in cluster.up_output.splitlines())
    # each host is a process inside its own machine's namespace, with tcp endpoints of that machine
    for i, h in enumerate(hosts):
        pid = cluster.remote_pid(i)
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == _ns_inode(cluster.ns[h["machine"]])
        assert h["ingress"].startswith(f"tcp://{cluster.addr[h['machine']]}:")
    # the cable between machines is a tcp connection between the namespaces' addresses
    ss = subprocess.run(["ip", "netns", "exec", cluster.ns[1], "ss", "-Htn", "state", "established"],
                        capture_output=True, text=True, timeout=10).stdout
    assert f"{cluster.addr[0]}:" in ss and f"{cluster.addr[1]}:" in ss, ss
    r = cluster.ibfab("ping", "node0001", "node0004", "-c", "3")
    assert r.returncode == 0 and "3 received" in r.stdout, r.stdout + r.stderr
    # a live capture streams to an ipc:// socket of this machine: refused, in one line
    r = cluster.ibfab("capture", "-c", "1", "-w", os.path.join(cluster.run_dir, "x.pcapng"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "across machines" in r.stderr, r.stderr
    for d in (cluster.run_dir, *(os.path.join(cluster.run_dir, f"m{m}") for m in range(2))):
        assert os.stat(os.path.join(d, "curve.keys")).st_mode & 0o777 == 0o600


@pytest.mark.timeout(60)
def test_a_peer_without_the_fabric_key_is_refused_and_counted(cluster):
    r = cluster.py(f"""
        import json, time, zmq
        from fabric.curve import CurveKeys
        from fabric.rpc import RpcClient, RpcError
        from fabric.runinfo import RunInfo
        info = RunInfo.load({cluster.run_dir!r})
        keys = info.curve_keys()
        ep = info.control(1)
        with RpcClient(ep, timeout=10) as c:
            before = c.call("status")["auth"]
        out = {{"before": before}}
        other = CurveKeys(keys.server_public, keys.server_secret, *zmq.curve_keypair())  # not the fabric's
        try:
            RpcClient(ep, timeout=1.5, curve=other).call("status")
            out["wrong_key"] = "answered"
        except RpcError:
            out["wrong_key"] = "refused"
        try:
            RpcClient(ep.replace("tcp://", "tcp://"), timeout=1.5, curve=CurveKeys(*zmq.curve_keypair(),
                      *zmq.curve_keypair())).call("status")
            out["wrong_server"] = "answered"
        except RpcError:
            out["wrong_server"] = "refused"
        s = zmq.Context.instance().socket(zmq.PUSH)  # plaintext: a link burst without CURVE
        s.connect(info.ingress(1))
        s.send(b"\\x03" * 64)
        time.sleep(1.0)
        s.close(0)
        with RpcClient(ep, timeout=10) as c:
            st = c.call("status")
        out["after"], out["bursts_in"] = st["auth"], st["bursts_in"]
        print(json.dumps(out))
    """)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["wrong_key"] == "refused" and out["wrong_server"] == "refused"
    before, after = out["before"], out["after"]
    assert after["wrong_key"] > before["wrong_key"]
    assert after["no_curve_or_server_key"] >= before["no_curve_or_server_key"] + 2  # wrong server key, plaintext
    assert after["refused"] == after["wrong_key"] + after["no_curve_or_server_key"]
    assert cluster.addr[0] in after["denied_from"]
    r = cluster.ibfab("machines", "--json")
    assert r.returncode == 0, r.stderr
    doc = {h["host"]: h for h in json.loads(r.stdout)["hosts"]}
    assert doc[1]["auth"]["refused"] >= after["refused"] and doc[1]["machine"] == cluster.ns[1]
    # and nothing of it reached a device: the fabric still works
    r = cluster.ibfab("ping", "node0002", "node0003", "-c", "1")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(60)
def test_killed_remote_host_is_reported_and_restarted(cluster):
    pid = cluster.remote_pid(1)
    os.kill(pid, signal.SIGKILL)  # a crash of the host on the second machine
    end = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < end:
        time.sleep(0.02)
    r = cluster.ibfab("status")
    assert r.returncode == 1, r.stdout + r.stderr
    dead = [line for line in r.stdout.splitlines() if "DEAD" in line]
    assert len(dead) == 1 and "device host 1" in dead[0] and f"pid {pid}" in dead[0], r.stdout
    assert set(cluster.info()["hosts"][1]["devices"]) == {d.strip() for d in dead[0].split(":")[0].split(",")}
    r = cluster.ibfab("ping", "node0001", "node0004", "-c", "1", "-W", "1")
    assert r.returncode != 0
    r = cluster.ibfab("machines")
    assert r.returncode == 1 and any(line.split()[:2] == ["1", cluster.ns[1]] and "DEAD" in line
                                     for line in r.stdout.splitlines()), r.stdout
    r = cluster.ibfab("restart-host", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    new = cluster.remote_pid(1)
    assert new != pid and os.stat(f"/proc/{new}/ns/net").st_ino == _ns_inode(cluster.ns[1])
    r = cluster.ibfab("status")
    assert r.returncode == 0 and "DEAD" not in r.stdout, r.stdout + r.stderr
    end = time.monotonic() + 30
    while True:  # IPoIB on the restarted HCAs joins again through the SA
        r = cluster.ibfab("ping", "node0001", "node0004", "-c", "1", "-W", "2")
        if r.returncode == 0 or time.monotonic() > end:
            break
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(60)
def test_down_after_a_machine_vanished(cluster):
    """The second machine goes away with its hosts (a crash of the machine); down reports it and
    stops everything else."""
    gone = cluster.remote_pid(1)
    os.kill(gone, signal.SIGKILL)
    _ip("netns", "del", cluster.ns[1])
    survivor = cluster.remote_pid(0)
    t0 = time.monotonic()
    r = cluster.ibfab("down", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - t0 < 30
    assert cluster.ns[1] in r.stderr and "did not answer" in r.stderr, r.stderr
    assert f"fabric '{NAME}' stopped" in r.stdout
    end = time.monotonic() + 10
    while os.path.exists(f"/proc/{survivor}") and time.monotonic() < end:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{survivor}") and not cluster.host_pids()
    assert not os.path.exists(cluster.run_dir)
