"""`ibfab top`: the rates it shows against the port counters read directly, the SM line, the
IPoIB queue sections, the full-screen view in a pseudo-terminal, and its errors."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from fabric import Fabric

IBFAB = [sys.executable, "-m", "fabric.cli"]
NAME = "toptest"
PORT_ROW = re.compile(r"^(\S+/\d+)\s+(\w+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)(?:\s+(.*))?$")


@pytest.fixture(scope="module")
def fab():
    with Fabric("fattree:2,2,2,2", name=NAME, hosts=2) as f:
        assert f.nodes["node0001"].ping("node0004")["received"] == 1  # IPoIB is up
        yield f


def _ibfab(*args, timeout=60):
    return subprocess.run(IBFAB + [*args, "--name", NAME], capture_output=True, text=True, timeout=timeout)


def _snapshots(text: str) -> list[list[str]]:
    out = []
    for line in text.splitlines():
        if line.startswith("ibfab top - "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def _ports(snapshot: list[str]) -> dict:
    """{device/port: (rx pkt/s, tx pkt/s, rx Gb/s, tx Gb/s, drop/s)} of one snapshot, in its order."""
    rows = {}
    for line in snapshot:
        m = PORT_ROW.match(line)
        if m:
            rows[m[1]] = (int(m[3]), int(m[4]), float(m[5]), float(m[6]), int(m[7]))
    return rows


def _section(snapshot: list[str], title: str) -> dict:
    """{row name: [cells]} of a node software section (its rows are 'node ifname [qN]' then cells)."""
    rows, inside = {}, False
    for line in snapshot:
        if line.startswith(title):
            inside = True
            continue
        if inside:
            if not line.strip():
                break
            words = line.split()
            n = 3 if len(words) > 2 and re.fullmatch(r"q\d+", words[2]) else 2
            rows[" ".join(words[:n])] = words[n:]
    return rows


def _all_counters(fab) -> tuple[float, dict]:
    """Every cabled port's 64-bit packet counters, read directly from each host: (when, {name: (rcv, xmit)})."""
    out = {}
    for c in fab.client.clients:
        for dev, ports in c.call("all_counters").items():
            for num, snap in ports.items():
                e = snap["extended"]
                out[f"{dev}/{num}"] = (e["port_rcv_pkts"], e["port_xmit_pkts"])
    return time.monotonic(), out


def _wait_traffic(fab, deadline_s=30.0):
    start = fab.counters("node0001", 1)["extended"]["port_xmit_pkts"]
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if fab.counters("node0001", 1)["extended"]["port_xmit_pkts"] - start > 1000:
            return
        time.sleep(0.1)
    pytest.fail("the perf traffic did not start")


@pytest.mark.timeout(120)
def test_busy_ports_show_the_rates_the_counters_move_at_and_idle_ports_zero(fab):
    import ipoib

    sm_before = fab.sm_status()["sweeps"]
    # long enough for top to start and end on a loaded machine; stopped (^C) once top is done
    perf = subprocess.Popen(IBFAB + ["perf", "node0001", "node0004", "--seconds", "60", "--size", "1024",
                                     "--name", NAME, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_traffic(fab)
        t0, before = _all_counters(fab)
        r = _ibfab("top", "-b", "-n", "2", "-d", "1")
        t1, after = _all_counters(fab)
        assert perf.poll() is None, "perf ended before top did: the comparison would mix busy and idle time"
    finally:
        if perf.poll() is None:
            perf.send_signal(signal.SIGINT)
        _, err = perf.communicate(timeout=60)
    assert perf.returncode in (0, 130), err  # 130: ^C, after its summary
    assert r.returncode == 0, r.stderr
    snaps = _snapshots(r.stdout)
    assert len(snaps) == 2
    moved = {p: ((after[p][0] - before[p][0]) / (t1 - t0), (after[p][1] - before[p][1]) / (t1 - t0))
             for p in after}
    busy = {p for p, (rx, tx) in moved.items() if rx + tx > 200}  # the std provider carries ~2k/s
    idle = {p for p, (rx, tx) in moved.items() if rx == tx == 0}
    # the path node0001 -> leaf -> spine -> leaf -> node0004: six ports each way carry it
    assert {"node0001/1", "node0004/1"} <= busy and len(busy) >= 6, moved
    assert len(idle) >= 8, moved  # the other nodes and the other spine
    for snap in snaps:
        ports = _ports(snap)
        assert set(ports) == set(after)  # every cabled port, once
        for p in busy:
            rx, tx = ports[p][:2]
            want_rx, want_tx = moved[p]
            for got, want in ((rx, want_rx), (tx, want_tx)):
                if want > 200:  # the same order as the counters' own average over the run of top
                    assert want / 5 < got < want * 5, (p, got, want, snap)
                elif want == 0:
                    assert got == 0, (p, snap)
        for p in idle:
            assert ports[p] == (0, 0, 0.0, 0.0, 0), (p, snap)
        # node0001 sends, node0004 receives; 1024-octet datagrams: about 8.6 kbit a packet on the wire
        rx, tx, _, txg, _ = ports["node0001/1"]
        assert tx > 0 and rx < tx / 100 and txg == pytest.approx(tx * 1100 * 8 / 1e9, rel=0.1)
        assert ports["node0004/1"][0] > 0
        # busiest first: no idle port above a busy one
        order = list(ports)
        assert max(order.index(p) for p in busy) < min(order.index(p) for p in idle)
        # the SM, as ibfab sm status reads it
        sm = next(line for line in snap if line.startswith("SM: "))
        m = re.match(r"SM: node0001 port 1 MASTER priority \d+, \w+, sweeps (\d+)", sm)
        assert m, sm
        assert sm_before <= int(m[1]) <= fab.sm_status()["sweeps"]
        # IPoIB: the receiver's interface and one of its queues carry the traffic
        ifs = _section(snap, "IPOIB INTERFACES")
        # the interfaces count what their ports carry: all of it sent; received, what was not
        # dropped or still waits in a ring (a slow receiver falls behind)
        assert int(ifs["node0001 ib0"][2]) == pytest.approx(ports["node0001/1"][1], rel=0.2)
        assert 0 < int(ifs["node0004 ib0"][1]) <= ports["node0004/1"][0] * 1.2
        assert int(ifs["node0004 ib0"][2]) == 0
        assert ifs["node0002 ib0"][1:4] == ["0"] * 3
        queues = _section(snap, "IPOIB QUEUES")
        rx_queues = [int(c[0]) for name, c in queues.items() if name.startswith("node0004 ib0 q")]
        assert 0 < sum(rx_queues) <= ports["node0004/1"][0] * 1.2
        if ipoib.backend_name == "fast":
            assert ifs["node0004 ib0"][0] == "fast" and int(ifs["node0004 ib0"][5]) > 0  # NAPI polls
            assert all(re.fullmatch(r"\d+/256", c[1]) for c in queues.values())  # ring fill of RX_SLOTS
        else:
            assert ifs["node0004 ib0"][0] == "std" and ifs["node0004 ib0"][4:] == ["-", "-"]
            assert all(re.fullmatch(r"\d+/(256|128)", c[1]) for c in queues.values())


def _rcv_errors(fab) -> tuple[float, dict]:
    out = {}
    for c in fab.client.clients:
        for dev, ports in c.call("all_counters").items():
            for num, snap in ports.items():
                out[f"{dev}/{num}"] = snap["counters"]["port_rcv_errors"]
    return time.monotonic(), out


@pytest.mark.timeout(60)
def test_drops_show_per_port_and_per_device_by_reason(fab):
    import threading

    stop = threading.Event()

    def runts():  # too short to be a packet: the leaf counts PortRcvErrors and drops it
        from fabric.rpc import RpcClient

        # a client of its own: a ZeroMQ socket is not to be shared between threads, and the main
        # thread reads the counters meanwhile
        with RpcClient(fab.info.control(fab.info.host_of("node0002"))) as c:
            while not stop.is_set():
                c.call("send_raw", device="node0002", port=1, packet=b"\x00" * 30)
                time.sleep(0.01)

    t = threading.Thread(target=runts)
    t.start()
    try:
        time.sleep(0.3)
        t0, before = _rcv_errors(fab)
        r = _ibfab("top", "-b", "-n", "1", "-d", "1", "-s", "drops")
        t1, after = _rcv_errors(fab)
    finally:
        stop.set()
        t.join(timeout=30)
    assert r.returncode == 0, r.stderr
    moved = {p: (after[p] - before[p]) / (t1 - t0) for p in after if after[p] != before[p]}
    assert len(moved) == 1, moved  # the leaf port node0002 is cabled to
    (port, rate), = moved.items()
    (snap,) = _snapshots(r.stdout)
    rows = [line for line in snap if PORT_ROW.match(line)]
    m = PORT_ROW.match(rows[0])  # sorted by drops: it comes first
    assert m[1] == port and rate / 3 < int(m[7]) < rate * 3, (rows[0], rate)
    assert re.fullmatch(r"RcvErrors=\d+", m[8] or ""), rows[0]
    assert all(PORT_ROW.match(line)[7] == "0" for line in rows[1:])
    head = snap.index("DEVICE DROPS (per second, by reason)")
    assert snap[head + 1].startswith(port.split("/")[0] + ": ") and snap[head + 2] == ""


@pytest.mark.timeout(60)
def test_sort_by_name_and_hide_idle(fab):
    r = _ibfab("top", "-b", "-n", "1", "-d", "0.3", "-s", "name")
    assert r.returncode == 0, r.stderr
    (snap,) = _snapshots(r.stdout)
    assert "sorted by name" in snap[0]
    names = list(_ports(snap))
    assert len(names) == 24 and names == sorted(names, key=lambda n: (n.split("/")[0], int(n.split("/")[1])))
    r = _ibfab("top", "-b", "-n", "1", "-d", "0.3", "-i")
    assert r.returncode == 0, r.stderr
    (snap,) = _snapshots(r.stdout)
    for p, rates in _ports(snap).items():  # the fabric is idle but for the SM's sweeps
        assert any(rates), (p, snap)


def _winsize(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd, proc, pattern: bytes, deadline: float, buf: bytearray, start: int = 0) -> bool:
    """Read the terminal's output into ``buf`` until ``pattern`` is in it after ``start``."""
    while time.monotonic() < deadline:
        if pattern in buf[start:]:
            return True
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                buf += os.read(fd, 65536)
            except OSError:  # the other end closed
                break
        elif proc.poll() is not None:
            break
    return pattern in buf[start:]


@pytest.mark.timeout(60)
def test_full_screen_view_in_a_terminal_quits_on_q_and_restores_it(fab):
    master, slave = pty.openpty()
    _winsize(slave, 40, 140)
    attrs_before = termios.tcgetattr(slave)
    proc = subprocess.Popen(IBFAB + ["top", "--name", NAME, "-d", "0.5"], stdin=slave, stdout=slave, stderr=slave,
                            env=dict(os.environ, TERM="xterm"), close_fds=True, start_new_session=True)
    buf = bytearray()
    try:
        assert _read_until(master, proc, b"sorted by pkts", time.monotonic() + 30, buf), bytes(buf)[-2000:]
        assert _read_until(master, proc, b"SM: node0001 port 1 MASTER", time.monotonic() + 10, buf)
        assert _read_until(master, proc, b"PORT", time.monotonic() + 10, buf)
        assert b"\x1b[?1049h" in buf  # on the alternate screen, as full-screen programs are
        # s cycles the order: pkts, bits, drops, name (curses redraws only what changed: "name"
        # replaces "pkts" of the same length in the header, and appears nowhere else)
        seen = len(buf)
        os.write(master, b"sss")
        assert _read_until(master, proc, b"name", time.monotonic() + 15, buf, seen), bytes(buf[seen:])[-2000:]
        os.write(master, b"q")
        assert proc.wait(timeout=15) == 0
        _read_until(master, proc, b"\x1b[?1049l", time.monotonic() + 5, buf, seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        attrs_after = termios.tcgetattr(slave)
        os.close(master)
        os.close(slave)
    assert buf.rfind(b"\x1b[?1049l") > buf.rfind(b"\x1b[?1049h")  # left the alternate screen
    assert b"Traceback" not in buf
    assert attrs_after == attrs_before  # echo and line editing back as they were


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args, text", [
    (["-d", "0"], "argument -d/--delay: must be 0.05 to 3600 seconds"),
    (["-d", "nan"], "argument -d/--delay: must be 0.05 to 3600 seconds"),
    (["-d", "soon"], "argument -d/--delay: not a number: 'soon'"),
    (["-n", "0"], "argument -n/--iterations: must be at least 1"),
    (["-s", "size"], "argument -s/--sort: invalid choice"),
    ([], "ibfab top: not a terminal: use -b"),
])
def test_bad_arguments_are_one_line_usage_errors(fab, args, text):
    r = _ibfab("top", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert text in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("ibfab top:")


@pytest.mark.timeout(60)
def test_a_missing_fabric_is_one_line():
    r = subprocess.run(IBFAB + ["top", "-b", "--name", "nosuchfabric"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no running fabric named 'nosuchfabric'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _host_answer(pid, now, ports, sections=None):
    """A host's answer to `top`, as fabric/host/ops.py op_top gives it: ports {name: (rcv, xmit) packets}."""
    devices = {}
    for name, (rcv, xmit) in ports.items():
        dev, num = name.split("/")
        devices.setdefault(dev, {"type": "switch", "ports": {}, "drops": {}})["ports"][int(num)] = {
            "state": "Active", "errors": {},
            "ext": {"port_rcv_pkts": rcv, "port_xmit_pkts": xmit, "port_rcv_data": rcv * 100,
                    "port_xmit_data": xmit * 100}}
    return {"host": 0, "pid": pid, "now": now, "devices": devices, "sm": None, "sections": sections or {}}


@pytest.mark.timeout(10)
def test_rates_divide_by_the_hosts_own_interval_and_never_go_negative():
    from fabric.top import Sample, compute

    a = Sample({0: _host_answer(1, 10.0, {"sw/1": (100, 0), "sw/2": (500, 7)})}, {})
    b = Sample({0: _host_answer(1, 12.0, {"sw/1": (300, 0), "sw/2": (0, 7)})}, {})  # sw/2 was reset
    rows = {r.name: r for r in compute(a, b).ports}
    assert rows["sw/1"].rx_pps == 100.0 and rows["sw/1"].rx_gbps == pytest.approx(100 * 100 * 32 / 1e9)
    assert rows["sw/2"].rx_pps == 0.0 and rows["sw/2"].tx_pps == 0.0
    c = Sample({0: _host_answer(2, 13.0, {"sw/1": (50, 0), "sw/2": (60, 0)})}, {})  # the host restarted
    assert all(r.rx_pps == 0.0 for r in compute(b, c).ports)


@pytest.mark.timeout(10)
def test_a_screen_fits_its_height_busiest_ports_first():
    from fabric.top import Sample, compute, screen

    names = [f"sw/{i}" for i in range(1, 61)]
    a = Sample({0: _host_answer(1, 0.0, {n: (0, 0) for n in names})}, {})
    b = Sample({0: _host_answer(1, 1.0, {n: (i * 10 if i % 7 == 0 else 0, 0) for i, n in
                                          enumerate(names, 1)})}, {})
    lines = screen("f", compute(a, b), height=20)
    assert len(lines) == 20
    shown = [line.split()[0] for line in lines if line.startswith("sw/")]
    assert shown[:8] == ["sw/56", "sw/49", "sw/42", "sw/35", "sw/28", "sw/21", "sw/14", "sw/7"]
    assert lines[-1].startswith("... ") and f"{60 - len(shown)} more rows" in lines[-1]
