"""``ibfab capture``: a running fabric's packets in pcapng, one interface per link end, decoded by
tshark (a decoder no one here wrote). Where each ping must appear comes from the topology and the
switches' LFTs as ``ibfab dump-fts`` reads them with SMPs, not from the capture code."""

import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from fabric import launcher
from fabric.api import Fabric
from fabric.pcapng import PcapngWriter, parse_pcapng

IBFAB = [sys.executable, "-m", "fabric.cli"]
NAME = "livecap"
LEASE_S = 6  # the hosts' lease on a capture (IBFAB_LEASE_S): short for the kill test, long enough for a loaded machine
FIELDS = ["frame.interface_name", "icmp.type", "ip.src", "ip.dst", "icmp.seq", "_ws.malformed"]


@pytest.fixture(scope="module")
def fab():
    old = os.environ.get("IBFAB_LEASE_S")
    os.environ["IBFAB_LEASE_S"] = str(LEASE_S)  # read by the hosts at launch
    try:
        # two device hosts: a ping crosses both, so both stream into the capture
        with Fabric("fattree:2,2,4,2", name=NAME, hosts=2) as f:
            assert f.nodes["node0001"].ping("node0008")["received"] == 1  # ARP and paths done
            yield f
    finally:
        if old is None:
            del os.environ["IBFAB_LEASE_S"]
        else:
            os.environ["IBFAB_LEASE_S"] = old


def _ibfab(*args, timeout=60):
    return subprocess.run(IBFAB + list(args), capture_output=True, text=True, timeout=timeout)


def _start(*args, stdout=subprocess.DEVNULL, name=NAME):
    """``ibfab capture`` in the background, returned once it says the hosts are tapping."""
    p = subprocess.Popen(IBFAB + ["capture", "--name", name, *args], stdout=stdout, stderr=subprocess.PIPE)
    err = b""
    deadline = time.monotonic() + 30
    while b"Capturing on" not in err:
        left = deadline - time.monotonic()
        if left <= 0 or p.poll() is not None:
            p.kill()
            p.wait()
            pytest.fail(f"ibfab capture did not start: {err.decode()}")
        if select.select([p.stderr], [], [], left)[0]:
            err += os.read(p.stderr.fileno(), 4096)
    return p


def _finish(p, timeout=30):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, err.decode()


def _fields(tshark, path):
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-E", "separator=|",
                          *sum((["-e", f] for f in FIELDS), [])],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [dict(zip(FIELDS, line.split("|"))) for line in out.splitlines()]


def _lfts(fab) -> dict:
    """{switch: {destination node: out port}}, read from the switches by ``ibfab dump-fts``."""
    r = _ibfab("dump-fts", "--name", fab.name)
    assert r.returncode == 0, r.stderr
    lfts, cur = {}, None
    for line in r.stdout.splitlines():
        m = re.match(r"Unicast lids .*\((\S+)\):$", line)
        if m:
            cur = lfts.setdefault(m.group(1), {})
            continue
        m = re.match(r"0x[0-9a-f]+ (\d+) : .*'(\S+)'\)$", line)
        if m and cur is not None:
            cur[m.group(2)] = int(m.group(1))
    return lfts


def _route(fab, lfts, src, dst) -> list:
    """The link ends (as pcapng interface names) a packet from ``src`` to ``dst`` leaves by."""
    ends, here = [f"{src}/1"], fab.topology.peer(src, 1)[0]
    while here != dst:
        out = lfts[here][dst]
        ends.append(f"{here}/{out}")
        here = fab.topology.peer(here, out)[0]
        assert len(ends) < 10
    return ends


def _pings(frames, src_ip, dst_ip, icmp_type) -> dict:
    """{icmp seq: [interfaces]} of the echo requests (8) or replies (0) from src_ip to dst_ip."""
    got: dict = {}
    for f in frames:
        if f["icmp.type"] == str(icmp_type) and f["ip.src"] == src_ip and f["ip.dst"] == dst_ip:
            got.setdefault(int(f["icmp.seq"]), []).append(f["frame.interface_name"])
    return got


@pytest.mark.timeout(90)
def test_pings_appear_on_each_link_end_they_crossed_and_sigint_leaves_a_valid_file(fab, tshark, tmp_path):
    path = tmp_path / "all.pcapng"
    p = _start("-w", str(path))
    try:
        assert fab.nodes["node0001"].ping("node0008", count=3)["received"] == 3
        time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGINT)
    rc, err = _finish(p)
    assert rc == 0, err
    frames = _fields(tshark, path)
    n = int(re.search(r"(\d+) packets? captured", err).group(1))
    assert len(frames) == n > 0
    assert not [f for f in frames if f["_ws.malformed"]], "tshark reports malformed frames"
    lfts = _lfts(fab)
    a, b = fab.nodes["node0001"].ip, fab.nodes["node0008"].ip
    there, back = _route(fab, lfts, "node0001", "node0008"), _route(fab, lfts, "node0008", "node0001")
    assert len(there) == len(back) == 4  # HCA, leaf, spine, leaf: three cables and a switch hop each
    requests, replies = _pings(frames, a, b, 8), _pings(frames, b, a, 0)
    assert len(requests) == len(replies) == 3
    for seq in requests:
        assert sorted(requests[seq]) == sorted(there), (seq, requests[seq])
        assert sorted(replies[seq]) == sorted(back), (seq, replies[seq])
    assert "0 packets dropped" in err
    assert not [f for f in os.listdir(fab.info.run_dir) if f.startswith("cap-")]  # its socket's file is gone


@pytest.mark.timeout(90)
def test_count_stops_after_n_packets(fab, tshark, tmp_path):
    path = tmp_path / "count.pcapng"
    p = _start("-w", str(path), "-c", "25")
    deadline = time.monotonic() + 30
    while p.poll() is None and time.monotonic() < deadline:
        fab.nodes["node0002"].ping("node0007", count=2, interval=0.05)  # each ping is 8 packets on 8 link ends
    rc, err = _finish(p)
    assert rc == 0, err
    assert "25 packets captured" in err
    frames = _fields(tshark, path)
    assert len(frames) == 25 and not [f for f in frames if f["_ws.malformed"]]


@pytest.mark.timeout(90)
def test_one_node_piped_into_tshark_until_the_duration_ends(fab, tshark):
    """``-i node0001 -w - | tshark -i -``: node0001's cable in both directions and nothing else,
    read by tshark from the pipe as it comes; ``--duration`` ends both."""
    t0 = time.monotonic()
    p = _start("-i", "node0001", "-w", "-", "--duration", "6", stdout=subprocess.PIPE)
    t = subprocess.Popen([tshark, "-l", "-i", "-", "-T", "fields", "-E", "separator=|",
                          *sum((["-e", f] for f in FIELDS), [])],
                         stdin=p.stdout, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    p.stdout.close()
    try:
        for peer in ("node0008", "node0004"):
            assert fab.nodes["node0001"].ping(peer, count=2)["received"] == 2
        assert fab.nodes["node0002"].ping("node0008", count=2)["received"] == 2  # not node0001's cable
        rc, err = _finish(p)
        elapsed = time.monotonic() - t0
        out, _ = t.communicate(timeout=30)
    finally:
        for q in (p, t):
            if q.poll() is None:
                q.kill()
                q.wait()
    assert rc == 0, err
    assert 6 <= elapsed < 25  # the duration ended it
    frames = [dict(zip(FIELDS, line.split("|"))) for line in out.splitlines()]
    leaf, leaf_port = fab.topology.peer("node0001", 1)
    mine = {"node0001/1", f"{leaf}/{leaf_port}"}
    assert {f["frame.interface_name"] for f in frames} <= mine
    a = fab.nodes["node0001"].ip
    for peer in ("node0008", "node0004"):
        b = fab.nodes[peer].ip
        assert {s: i for s, i in _pings(frames, a, b, 8).items()} == {1: ["node0001/1"], 2: ["node0001/1"]}
        assert {s: i for s, i in _pings(frames, b, a, 0).items()} == {1: [f"{leaf}/{leaf_port}"],
                                                                       2: [f"{leaf}/{leaf_port}"]}
    assert not [f for f in frames if f["ip.src"] == fab.nodes["node0002"].ip]
    assert not [f for f in frames if f["_ws.malformed"]]


@pytest.mark.timeout(90)
def test_a_killed_capture_stops_streaming_on_every_host_within_the_lease(fab, tmp_path):
    p = _start("-w", str(tmp_path / "killed.pcapng"))
    with launcher.FabricClient(fab.name) as fc:
        def sessions():
            return [s for c in fc.clients for s in c.call("capture_list")]

        assert {s["host"] for s in sessions()} == {0, 1}
        p.kill()
        p.wait()
        fab.nodes["node0001"].ping("node0008", count=2)  # streamed to no one: the hosts must not mind
        deadline = time.monotonic() + LEASE_S + 5
        while sessions() and time.monotonic() < deadline:
            time.sleep(0.25)
        assert sessions() == []
        assert not [f for f in os.listdir(fab.info.run_dir) if f.startswith("cap-")]
    assert fab.nodes["node0001"].ping("node0008")["received"] == 1


@pytest.mark.timeout(60)
def test_bad_capture_arguments_are_one_line_errors(fab, tmp_path):
    for args, code, text in ((["-i", "nosuchnode"], 2, "no node 'nosuchnode'"),
                             (["-i", "node0001:7"], 2, "node0001 has no port 7"),
                             (["-i", "leaf01:30"], 2, "leaf01 port 30 has no cable"),
                             (["-i", "node0001:"], 2, "expected DEVICE or DEVICE:PORT"),
                             (["-i", "node0001:x"], 2, "no node 'node0001:x'"),
                             (["-c", "0"], 2, "-c/--count: must be at least 1, not 0"),
                             (["--duration", "-1"], 2, "--duration: must be above 0 seconds, not -1"),
                             (["x.erf", "-w", "y.pcapng"], 2, "x.erf is a file to list"),
                             (["-w", str(tmp_path / "no" / "such" / "dir.pcapng")], 1, "No such file")):
        r = _ibfab("capture", "--name", NAME, *args)
        assert r.returncode == code and text in r.stderr, (args, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr
        if "usage:" not in r.stderr:  # argparse's own errors come after its usage line
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = _ibfab("capture", "--name", "nosuchfabric", "-c", "1")
    assert r.returncode == 1 and "no running fabric named 'nosuchfabric'" in r.stderr
    import pty

    master, slave = pty.openpty()  # -w - to a terminal: refused, as binary on a screen helps no one
    try:
        r = subprocess.run(IBFAB + ["capture", "--name", NAME, "-w", "-"], stdout=slave, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 2 and "will not write a capture to a terminal" in r.stderr


@pytest.mark.timeout(60)
def test_pcapng_writer_declares_interfaces_lazily_for_tshark(tshark, tmp_path):
    """The writer alone: tshark names each packet's interface and cable, and decodes it to IPoIB or
    the MAD; an interface that only lost packets is declared with its statistics; the reader the
    listing uses gives back the very packets."""
    from fabric.capture_demo import demo_packets

    pkts = demo_packets()
    path = tmp_path / "demo.pcapng"
    names = ["node0001/1", "leaf01/3", "node0001/1", "spine01/2", "leaf01/3"]
    with PcapngWriter(path) as w:
        w.descriptions = {"leaf01/3": "leaf01 port 3 -> node0001 port 1"}
        for name, (ts, _what, pkt, _exp) in zip(names, pkts):
            w.write(name, ts, pkt)
        w.statistics(pkts[-1][0] + 1, {"leaf02/9": 4})
    got = parse_pcapng(path.read_bytes())
    assert [(g.interface, g.timestamp_ns, g.packet) for g in got] == [(n, p[0], p[2]) for n, p in zip(names, pkts)]
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-E", "separator=|", "-e", "frame.interface_name",
                          "-e", "frame.interface_description", "-e", "frame.time_epoch", "-e", "frame.protocols",
                          "-e", "_ws.malformed"], capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [line.split("|") for line in out.splitlines()]
    assert [r[0] for r in rows] == names
    assert [r[1] for r in rows] == ["", "leaf01 port 3 -> node0001 port 1", "", "", "leaf01 port 3 -> node0001 port 1"]
    assert [r[2] for r in rows] == [f"{p[0] // 10**9}.{p[0] % 10**9:09d}" for p in pkts]  # nanoseconds kept
    assert all("infiniband" in r[3] for r in rows) and not [r for r in rows if r[4]]
    assert "icmp" in rows[0][3] and "arp" in rows[1][3]
    info = subprocess.run(["capinfos", str(path)], capture_output=True, text=True, timeout=60).stdout
    assert "Number of interfaces in file: 4" in info and "Name = leaf02/9" in info
    r = _ibfab("capture", str(path))
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 5 and r.stdout.splitlines()[1].split()[1] == "leaf01/3"


@pytest.mark.timeout(90)
def test_a_client_that_takes_nothing_costs_drops_never_a_stalled_host(fab):
    """A capture whose client takes nothing (here nobody is bound to its endpoint, so only the
    host's own queue of 500 bursts holds anything): the host drops the rest, counts it per link
    end, and carries traffic as before."""
    path = os.path.join(fab.info.run_dir, "cap-nobody")
    with launcher.FabricClient(fab.name) as fc:
        ends = [["node0001", 1], list(fab.topology.peer("node0001", 1))]
        sessions = {i: c.call("capture_open", endpoint=f"ipc://{path}", ends=ends)["session"]
                    for i, c in enumerate(fc.clients)}
        for _ in range(24):  # 600 echoes, one at a time: 1,200 bursts on node0001's cable
            t0 = time.monotonic()
            assert fab.nodes["node0001"].ping("node0008", count=25, interval=0.002)["received"] == 25
            assert time.monotonic() - t0 < LEASE_S  # the leases are renewed well within their time
            for i, s in sessions.items():  # renew the leases, as ibfab capture does
                fc.clients[i].call("capture_poll", session=s)
        stats = [fc.clients[i].call("capture_close", session=s) for i, s in sessions.items()]
    sent = sum(s["sent"] for s in stats)
    dropped = sum(s["dropped"] for s in stats)
    assert 0 < sent <= 500 and dropped > 0
    assert sum(s["packets"] for s in stats) + dropped >= 1200  # every echo was streamed or counted
    assert dropped == sum(n for s in stats for _d, _p, n in s["drops"])
    leaf, port = fab.topology.peer("node0001", 1)
    by_end = {(d, p): n for s in stats for d, p, n in s["drops"]}
    assert set(by_end) <= {(leaf, port), ("node0001", 1)} and by_end.get((leaf, port), 0) >= 100


@pytest.mark.timeout(90)
def test_fabric_capture_into_pcapng_from_python(fab, tshark, tmp_path):
    """``fab.capture("x.pcapng", interfaces=[...])``: the same capture from Python, pumped by a
    thread, ended by the block; no session is left on any host."""
    path = tmp_path / "py.pcapng"
    with fab.capture(path, interfaces=["node0008"]):
        assert fab.nodes["node0001"].ping("node0008", count=2)["received"] == 2
    leaf, leaf_port = fab.topology.peer("node0008", 1)
    frames = _fields(tshark, path)
    assert {f["frame.interface_name"] for f in frames} <= {"node0008/1", f"{leaf}/{leaf_port}"}
    a, b = fab.nodes["node0001"].ip, fab.nodes["node0008"].ip
    assert _pings(frames, a, b, 8) == {1: [f"{leaf}/{leaf_port}"], 2: [f"{leaf}/{leaf_port}"]}
    assert _pings(frames, b, a, 0) == {1: ["node0008/1"], 2: ["node0008/1"]}
    with launcher.FabricClient(fab.name) as fc:
        assert [s for c in fc.clients for s in c.call("capture_list")] == []
    with pytest.raises(ValueError, match="every link"):
        with fab.capture(tmp_path / "x.erf", interfaces=["node0001"]):
            pass


@pytest.mark.timeout(90)
def test_a_capture_whose_fabric_is_stopped_ends_with_a_valid_file(tshark, tmp_path):
    path = tmp_path / "down.pcapng"
    with Fabric("single:2", name="livecap-down", node_software="none", sm=False):
        p = _start("-w", str(path), name="livecap-down")
    rc, err = _finish(p, timeout=60)
    assert rc == 1 and "fabric 'livecap-down' was stopped" in err, err
    assert "no device host of the fabric is capturing any more" in err
    subprocess.run([tshark, "-r", str(path)], capture_output=True, timeout=60, check=True)
