"""The kernel as the IP host (``Fabric(topo, netns=True)``, ``ibfab up --netns``): every IPoIB interface is
a TUN device in its node's network namespace, and the kernel's own ping, iperf3 and sockets run over
the fabric. Real kernel traffic, in namespaces these tests create and remove; the suite runs it on
both providers (IPOIB_BACKEND)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fabric import Fabric, launcher
from fabric.wire import fmt_gid
from ipoib.encap import ipv4_mcast_mgid
from ipoib.iphost import netns
from tsharkjson import tshark_json

IBFAB = [sys.executable, "-m", "fabric.cli"]
TOPO = "fattree:2,2,4,2"  # 2 leaves, 2 spines, 4 HCAs per leaf, 2 cables per leaf-spine pair
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and TUN devices need root"),
              pytest.mark.timeout(240)]


def _need(cmd):
    if shutil.which(cmd) is None:
        pytest.fail(f"{cmd} is not installed: run `make debs` (scripts/install-debs.sh)")


@pytest.fixture(scope="module")
def fab():
    _need("ping")
    with Fabric(TOPO, netns=True) as f:
        _wait_carrier(f, list(f.nodes))
        yield f
    assert not netns.list_with_prefix(netns.fabric_prefix(f.name)), "namespaces left behind"


def _wait_carrier(fab, nodes, timeout=10.0):
    end = time.monotonic() + timeout
    for n in nodes:
        while not fab.nodes[n].interface("ib0")["carrier"]:
            assert time.monotonic() < end, f"{n}: no carrier"
            time.sleep(0.05)


def _link(fab, node):
    """The kernel's view of node's ib0 (ip -s link) and ours (the TUN link's counts)."""
    return fab.nodes[node].status()["ip"]["interfaces"]["ib0"]


def _py(fab, node, code, **kw):
    """Run a Python snippet in node's namespace."""
    return fab.nodes[node].popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, **kw)


# -- ping --------------------------------------------------------------------------------------


def test_kernel_ping_across_leaves_without_loss(fab):
    for src, dst in (("node0001", "node0008"), ("node0005", "node0002"), ("node0003", "node0004")):
        r = fab.nodes[src].ping(dst, count=5, interval=0.1)
        assert (r["transmitted"], r["received"]) == (5, 5), r["output"]
    # the kernel did no ARP of its own on a TUN device: the ULP resolved the neighbour on the wire
    neigh = {n["ip"]: n for n in fab.nodes["node0001"].interface("ib0")["neigh"]}
    assert neigh[fab.nodes["node0008"].ip]["state"] == "REACHABLE"
    assert fab.nodes["node0001"].cmd("ip neigh show dev ib0").strip() == ""


def test_frames_for_the_kernel_go_up_in_the_poll_right_after_their_interrupt(fab):
    """The fast provider runs NAPI right after the interrupt, in C, for what goes up to the
    kernel's TUN queues (as net_rx_action runs on the interrupt's way out): the node's software is
    not woken per packet. Interrupt moderation still defers the poll to its timer."""
    import ipoib

    if ipoib.backend_name == "std":
        pytest.skip("the standard provider has no NAPI of its own: the node's software polls it")
    src, dst = fab.nodes["node0003"], fab.nodes["node0006"]
    assert src.ping(dst, count=1, timeout=5)["received"] == 1  # the neighbour resolved
    q0 = dst.interface("ib0")["queues"]
    r = src.ping(dst, count=20, interval=0.01)
    assert r["received"] == 20, r["output"]
    q1 = dst.interface("ib0")["queues"]
    assert q1["napi_direct"] - q0["napi_direct"] >= 20  # each echo request went up from its interrupt
    fab.client.call("node0006", "ipoib_coalesce", ifname="ib0", rx_usecs=300)
    try:
        r = src.ping(dst, count=20, interval=0.01)
        assert r["received"] == 20, r["output"]
        q2 = dst.interface("ib0")["queues"]
        assert q2["napi_direct"] == q1["napi_direct"]  # the rx-usecs timer ran each poll instead
        assert q2["interrupts"] - q1["interrupts"] >= 20
    finally:
        fab.client.call("node0006", "ipoib_coalesce", ifname="ib0", rx_usecs=0)


def test_ping_with_dont_fragment_fits_the_ipoib_mtu_exactly(fab):
    mtu = fab.nodes["node0001"].interface("ib0")["mtu"]
    assert mtu == 2044  # a 2K IB MTU less the 4-octet IPoIB header
    assert f"mtu {mtu} " in fab.nodes["node0001"].cmd("ip link show ib0")
    big = mtu - 28
    dst = fab.nodes["node0007"].ip
    ok = fab.nodes["node0001"].cmd(f"ping -n -c 2 -i 0.1 -W 2 -M do -s {big} {dst}")
    assert "2 received" in ok, ok
    too_big = fab.nodes["node0001"].cmd(f"ping -n -c 1 -W 1 -M do -s {big + 1} {dst}")
    assert "message too long" in too_big and f"mtu={mtu}" in too_big, too_big


def test_ping_of_the_subnet_broadcast_address(fab):
    for n in fab.nodes.values():
        n.cmd("sysctl -qw net.ipv4.icmp_echo_ignore_broadcasts=0", check=True)
    try:
        out = fab.nodes["node0001"].cmd("ping -n -b -c 3 -i 0.3 -W 1 198.18.255.255")
    finally:
        for n in fab.nodes.values():
            n.cmd("sysctl -qw net.ipv4.icmp_echo_ignore_broadcasts=1")
    repliers = set(re.findall(r"bytes from (198\.18\.\d+\.\d+)", out))
    others = {fab.nodes[n].ip for n in fab.nodes if n != "node0001"}
    assert repliers & others, out
    assert repliers <= others | {fab.nodes["node0001"].ip}, out


# -- multicast ------------------------------------------------------------------------------------

RECEIVER = """
    import socket, struct, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", 6000))
    if sys.argv[1] == "join":
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                     socket.inet_aton("239.1.2.3") + socket.inet_aton(sys.argv[2]))
    print("ready", flush=True)
    s.settimeout(3.0)
    got = 0
    try:
        while True:
            s.recv(2000)
            got += 1
    except socket.timeout:
        pass
    print(got, flush=True)
"""


def test_multicast_udp_reaches_only_the_members_and_the_sa_sees_the_joins(fab):
    members, outsider = ("node0002", "node0006"), "node0007"
    procs = {}
    for n in members + (outsider,):
        argv = [sys.executable, "-c", textwrap.dedent(RECEIVER), "join" if n in members else "no",
                fab.nodes[n].ip]
        procs[n] = fab.nodes[n].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert procs[n].stdout.readline().strip() == "ready"
    mgid = fmt_gid(ipv4_mcast_mgid(bytes([239, 1, 2, 3]), 0xFFFF))  # RFC 4391: ff12:401b:ffff::f01:203

    def joined(node):
        return any(g["mgid"] == mgid and g["state"] == "joined" and g["join_state"] == 1
                   for g in fab.nodes[node].interface("ib0")["mcg"])

    end = time.monotonic() + 5
    while not all(joined(m) for m in members):  # the kernel's IGMP report makes the ULP join the MGID
        assert time.monotonic() < end, [fab.nodes[m].interface("ib0")["mcg"] for m in members]
        time.sleep(0.1)
    assert not joined(outsider)
    # the SA has the group (saquery shows one record per group, the member ports hidden, as OpenSM
    # shows them to a requester that is not trusted)
    sa = subprocess.run(IBFAB + ["saquery", "--name", fab.name, "mcmembers"], capture_output=True, text=True,
                        timeout=30).stdout
    assert re.search(rf"MGID\.+{re.escape(str(ipaddress.IPv6Address(mgid)))}\n(\s+\w+\.+\S+\n){{2}}\s+mlid\.+0xc0", sa), sa
    time.sleep(0.5)  # the SA answered the joins; the SM programs the switches' MFTs right after
    sender = fab.nodes["node0001"].popen(
        [sys.executable, "-c", "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
         "for i in range(20):\n s.sendto(b'x'*100,('239.1.2.3',6000)); time.sleep(0.02)"],
        stderr=subprocess.PIPE, text=True)
    assert sender.wait(timeout=20) == 0, sender.stderr.read()
    got = {n: int(p.communicate(timeout=30)[0].split()[-1]) for n, p in procs.items()}
    assert got == {"node0002": 20, "node0006": 20, outsider: 0}
    # when the receivers leave, the ULP leaves the group too
    end = time.monotonic() + 5
    while time.monotonic() < end:
        if not any(g["mgid"] == mgid and g["state"] == "joined"
                   for g in fab.nodes["node0002"].interface("ib0")["mcg"]):
            break
        time.sleep(0.1)
    else:
        pytest.fail("node0002 stayed in the group after its last socket closed")


# -- iperf3 -----------------------------------------------------------------------------------------


def _iperf(fab, src, dst, *args, seconds=2):
    _need("iperf3")
    srv = fab.nodes[dst].popen(["iperf3", "-s", "-1", "-J"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    time.sleep(0.5)
    try:
        length = ["-t", str(seconds)] if seconds else []
        cli = fab.nodes[src].popen(["iperf3", "-c", fab.nodes[dst].ip, *length, "-J", *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = cli.communicate(timeout=(seconds or 5) + 30)
        assert cli.returncode == 0, out + err
        srv.communicate(timeout=30)
        return json.loads(out)
    finally:
        srv.kill()
        srv.wait()


def test_iperf3_tcp_and_udp_across_leaves(fab):
    tcp = _iperf(fab, "node0001", "node0008")
    rx = tcp["end"]["sum_received"]
    assert rx["bytes"] > 1_000_000 and rx["bits_per_second"] > 1e6, rx
    # a rate the pure-Python provider and wire code (make test-std) also carry without loss
    udp = _iperf(fab, "node0003", "node0006", "-u", "-b", "4M", "-l", "1400")
    s = udp["end"]["sum"]
    assert s["packets"] > 500 and s["lost_percent"] < 2.0, s


def test_a_tcp_stream_survives_a_pulled_leaf_spine_cable(fab):
    """Pull the uplink the stream uses: Trap 128, the SM reroutes, TCP retransmits and goes on."""
    _need("iperf3")
    topo = fab.topology
    uplinks = [p for p in range(1, topo.nodes["leaf01"].num_ports + 1)
               if (peer := topo.peer("leaf01", p)) is not None and topo.nodes[peer[0]].kind == "switch"]
    srv = fab.nodes["node0008"].popen(["iperf3", "-s", "-1", "-J"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    before = {p: fab.counters("leaf01", p)["extended"]["port_xmit_data"] for p in uplinks}
    cli = fab.nodes["node0001"].popen(["iperf3", "-c", fab.nodes["node0008"].ip, "-t", "8", "-i", "0.5", "-J"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pulled = None
    try:
        time.sleep(2.0)
        busy = {p: fab.counters("leaf01", p)["extended"]["port_xmit_data"] - before[p] for p in uplinks}
        pulled = max(busy, key=busy.get)  # the cable the stream is on
        fab.link_down("leaf01", pulled)
        out, err = cli.communicate(timeout=60)
    finally:
        if pulled is not None:
            fab.link_up("leaf01", pulled)
        srv.kill()
        srv.wait()
    assert cli.returncode == 0, out + err
    r = json.loads(out)
    intervals = [i["sum"] for i in r["intervals"]]
    after = [i for i in intervals if i["start"] >= 3.0]
    assert after and sum(i["bytes"] for i in after) > 100_000, intervals
    stall = sum(i["seconds"] for i in intervals if i["bytes"] == 0)
    print(f"\ncable leaf01/{pulled} pulled at 2 s: stream stalled {stall:.1f} s, "
          f"{r['end']['sum_received']['bits_per_second'] / 1e6:.0f} Mbit/s over 8 s")
    assert stall < 5.0


# -- what the kernel side sends that IPoIB cannot carry ------------------------------------------------


def test_oversized_and_non_ip_frames_from_the_kernel_are_counted_and_dropped(fab):
    n = fab.nodes["node0004"]
    dst = fab.nodes["node0005"].ip
    drops0 = n.interface("ib0")["drops"].get("over_mtu", 0)
    n.cmd("ip link set ib0 mtu 4000", check=True)  # misconfigured: above the IPoIB MTU
    try:
        out = n.cmd(f"ping -n -c 2 -i 0.2 -W 1 -M do -s 3000 {dst}")
        assert "0 received" in out, out
    finally:
        n.cmd("ip link set ib0 mtu 2044", check=True)
    assert n.interface("ib0")["drops"].get("over_mtu", 0) - drops0 == 2
    # a frame of another protocol: the TUN device hands it over with its ethertype
    code = ("import socket\ns = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x88b5))\n"
            "for _ in range(3): s.sendto(b'x' * 60, ('ib0', 0x88b5))")
    r = n.popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    assert r.wait(timeout=20) == 0, r.stderr.read()
    end = time.monotonic() + 3
    while _link(fab, "node0004")["drops"].get("ethertype_0x88b5", 0) < 3 and time.monotonic() < end:
        time.sleep(0.05)
    assert _link(fab, "node0004")["drops"].get("ethertype_0x88b5") == 3
    # nothing stalled
    assert n.ping("node0005", count=2, interval=0.1)["received"] == 2


def test_the_kernels_link_counters_agree_with_ours(fab):
    fab.nodes["node0002"].ping("node0003", count=3, interval=0.05)
    time.sleep(0.2)
    for name in ("node0002", "node0003"):
        link = _link(fab, name)
        k, ours = link["kernel"], link["link"]
        assert k["tx_packets"] == ours["from_kernel"] > 0, link  # what the kernel sent, we read
        assert k["rx_packets"] == ours["to_kernel"] > 0, link  # what we wrote, the kernel received


# -- captures ---------------------------------------------------------------------------------------


def test_a_capture_of_kernel_traffic_decodes_in_tshark(fab, tshark, tmp_path):
    _need("iperf3")
    path = tmp_path / "kernel.erf"
    a, b = "node0002", "node0007"
    for n in (a, b):  # forget the neighbour, so that the capture holds IPoIB ARP too
        fab.client.call(n, "ipoib_flush_neigh")
    with fab.capture(path):
        assert fab.nodes[a].ping(b, count=2, interval=0.1)["received"] == 2
        _iperf(fab, a, b, "-n", "200K", seconds=None)
    def count(display_filter):
        r = subprocess.run([tshark, "-r", str(path), "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
                            "-o", "udp.check_checksum:TRUE", "-Y", display_filter], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        return len(r.stdout.splitlines())

    assert count("_ws.malformed || tcp.checksum.status == 0 || ip.checksum.status == 0") == 0
    assert count("tcp.checksum.status == 1") > 100  # checked, and right
    assert count("arp.opcode == 1") >= 1 and count("arp.opcode == 2") >= 1  # IPoIB ARP, 20-octet addresses
    assert count("icmp.type == 0") == 2 * 4  # two replies, each seen on the 4 cables between the leaves
    # IPoIB ARP: hardware type 32 (InfiniBand), 20-octet addresses
    assert count("arp && !(arp.hw.type == 32 && arp.hw.size == 20)") == 0
    frames = tshark_json(tshark, path)
    assert not [f for f in frames if "_ws.malformed" in json.dumps(f)]


# -- commands and lifecycle ---------------------------------------------------------------------------


def test_ibfab_exec_passes_stdin_stdout_and_the_exit_code(fab):
    r = subprocess.run(IBFAB + ["exec", "--name", fab.name, "node0003", "--", "sh", "-c",
                                "read x; echo got $x in $(ip -o -4 addr show ib0 | awk '{print $4}'); exit 3"],
                       input="hello\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 3, r.stderr
    assert r.stdout.strip() == f"got hello in {fab.nodes['node0003'].ip}/16"
    bad = subprocess.run(IBFAB + ["exec", "--name", fab.name, "sw01", "--", "true"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "no node 'sw01'" in bad.stderr and bad.stderr.count("\n") == 1


def test_a_signal_to_ibfab_exec_stops_the_command_in_the_namespace(fab):
    """SIGTERM to ``ibfab exec`` stops what it runs in the node's namespace too (an iperf3 -s left
    there would hold its port), and nothing is left, not even a zombie."""
    p = subprocess.Popen(IBFAB + ["exec", "--name", fab.name, "node0002", "--", "sleep", "61"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    found: list = []
    try:
        end = time.monotonic() + 20
        while not found:
            assert time.monotonic() < end and p.poll() is None, p.communicate()
            found = subprocess.run(["pgrep", "-f", "^sleep 61$"], capture_output=True, text=True).stdout.split()
            time.sleep(0.02)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 130
    finally:
        p.kill()
        p.wait()
        left = [pid for pid in found if os.path.exists(f"/proc/{pid}")]
        for pid in left:
            os.kill(int(pid), signal.SIGKILL)
    assert not left, left


def test_ibfab_neigh_prints_ip_neigh_and_ipoib_path_lines(fab):
    assert fab.nodes["node0001"].ping("node0006", count=1)["received"] == 1
    r = subprocess.run(IBFAB + ["neigh", "--name", fab.name, "node0001"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    ip6 = fab.nodes["node0006"].ip
    assert re.search(rf"^{re.escape(ip6)} dev ib0 lladdr ([0-9a-f]{{2}}:){{19}}[0-9a-f]{{2}} REACHABLE$", r.stdout,
                     re.M), r.stdout
    assert re.search(r"^GID: fe80(:[0-9a-f]{4}){7}\n  complete:     yes\n  DLID:     0x[0-9a-f]{4}\n", r.stdout,
                     re.M), r.stdout


def test_embedded_stack_commands_say_what_to_use_instead(fab):
    r = subprocess.run(IBFAB + ["perf", "--name", fab.name, "node0001", "node0002", "--seconds", "0.5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "kernel's IP stack (--netns)" in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_down_after_kill_9_removes_exactly_its_namespaces(tmp_path):
    decoy = netns.name_for("decoy", "node0001")
    other = "ibf-kill9x-node0001-not-ours"
    for d in (decoy, other):
        netns.delete(d)
        netns.create(d)
    name = "kill9x"
    try:
        r = subprocess.run(IBFAB + ["up", "single:3", "--name", name, "--netns"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        ours = {netns.name_for(name, f"node000{i}") for i in (1, 2, 3)}
        assert ours <= set(netns.list_with_prefix("ibf-")), netns.list_with_prefix("ibf-")
        info = launcher.RunInfo.load(launcher.run_dir_for(name))
        for i in range(len(info.hosts)):
            with open(info.pid_file(i)) as f:
                os.kill(int(f.read()), signal.SIGKILL)
        time.sleep(0.3)
        assert ours <= set(netns.list_with_prefix("ibf-"))  # nobody was left to remove them
        r = subprocess.run(IBFAB + ["down", "--name", name], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        left = set(netns.list_with_prefix("ibf-"))
        assert not ours & left and {decoy, other} <= left, left
    finally:
        subprocess.run(IBFAB + ["down", "--name", name], capture_output=True, timeout=60)
        for d in (decoy, other):
            netns.delete(d)


def test_netns_without_root_fails_at_once_with_one_line(tmp_path):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    env = dict(os.environ, IBFAB_RUN_BASE=str(tmp_path / "nobody"), HOME=str(tmp_path))
    os.chmod(tmp_path, 0o777)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *IBFAB, "up", "single:2",
                        "--name", "nr", "--netns"], capture_output=True, text=True, timeout=60, env=env,
                       cwd=str(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip() == "ibfab up: --netns needs root: network namespaces and TUN devices are root's to make"


def test_pkey_children_are_further_devices_and_the_mtu_is_the_groups():
    """A 4K broadcast group gives ib0 MTU 4092; a partition's member gets ib0.8005 with its own
    subnet and the partition's (2K) MTU, and the kernel pings over it."""
    parts = "Default=0x7fff, ipoib, mtu=5 : ALL=full;\nGreen=0x0005, ipoib, mtu=4 : ALL=full;\n"
    with Fabric("fattree:2,2,2,1", netns=True, sm_config={"partitions": parts}) as fab:
        _wait_carrier(fab, list(fab.nodes))
        n = fab.nodes["node0001"]
        assert " mtu 4092 " in n.cmd("ip -o link show ib0")
        assert " mtu 2044 " in n.cmd("ip -o link show ib0.8005")
        assert "198.19.5.1/24" in n.cmd("ip -o -4 addr show ib0.8005")
        r = n.cmd("ping -n -c 2 -i 0.1 -W 2 -M do -s 4064 198.18.0.4")
        assert "2 received" in r, r
        r = n.cmd("ping -n -c 2 -i 0.1 -W 2 198.19.5.4")
        assert "2 received" in r, r
        r = n.cmd("ping -n -c 1 -W 1 -M do -s 2017 198.19.5.4")
        assert "mtu=2044" in r, r
    assert not netns.list_with_prefix(netns.fabric_prefix(fab.name))


# -- the fast provider's offloads (its TUN queues in C: TSO, USO, checksum, GRO) --------------------


def _ethtool_k(fab, node):
    out = fab.nodes[node].cmd("ethtool -k ib0")
    return {k.strip(): v.split()[0] for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)
            if v.strip()}


def _features(fab, node, *args):
    r = subprocess.run(IBFAB + ["features", "--name", fab.name, node, "--json", *args], capture_output=True,
                       text=True, timeout=30)
    return r


def test_offloads_are_visible_in_ethtool_and_switchable_with_the_data_path_following(fab):
    import ipoib

    _need("ethtool")
    if ipoib.backend_name == "std":
        # the standard provider offers the kernel nothing: it segments and checksums for itself
        assert _ethtool_k(fab, "node0002")["tcp-segmentation-offload"] == "off"
        r = _features(fab, "node0002", "--tso", "on")
        assert r.returncode == 2 and "not supported" in r.stderr.lower()
        return
    k = _ethtool_k(fab, "node0002")
    assert k["tcp-segmentation-offload"] == "on" and k["tx-checksumming"] == "on"
    st0 = fab.nodes["node0002"].interface("ib0")["queues"]
    tcp = _iperf(fab, "node0002", "node0007")["end"]["sum_received"]["bits_per_second"]
    st1 = fab.nodes["node0002"].interface("ib0")["queues"]
    assert st1["tun_tx_super"] > st0["tun_tx_super"]  # the kernel handed over TSO super-packets
    rx = fab.nodes["node0007"].interface("ib0")["queues"]
    assert rx["tun_rx_gro_runs"] > 0 and rx["tun_rx_gro_segments"] > 2 * rx["tun_rx_gro_runs"]
    r = _features(fab, "node0002", "--tso", "off", "--gro", "off")
    assert r.returncode == 0, r.stderr
    try:
        assert json.loads(r.stdout)["tcp-segmentation-offload"] is False
        assert _ethtool_k(fab, "node0002")["tcp-segmentation-offload"] == "off"
        before = fab.nodes["node0002"].interface("ib0")["queues"]["tun_tx_super"]
        slow = _iperf(fab, "node0002", "node0007")["end"]["sum_received"]["bits_per_second"]
        after = fab.nodes["node0002"].interface("ib0")["queues"]["tun_tx_super"]
        assert after == before and slow > 0  # the kernel segmented in software; nothing was lost
        print(f"\nTCP node0002 -> node0007: {tcp / 1e9:.2f} Gbit/s with TSO and GRO, {slow / 1e9:.2f} without")
        bad = _features(fab, "node0002", "--tx-checksum", "off")  # TSO is off, but USO still needs it
        assert bad.returncode == 2 and "need checksum offload" in bad.stderr
    finally:
        assert _features(fab, "node0002", "--tso", "on", "--gro", "on").returncode == 0
    assert _ethtool_k(fab, "node0002")["tcp-segmentation-offload"] == "on"
    # the kernel's own switch, ethtool -K in the namespace: the data path follows it too
    fab.nodes["node0002"].cmd("ethtool -K ib0 tso off", check=True)
    try:
        assert _features(fab, "node0002").returncode == 0
        before = fab.nodes["node0002"].interface("ib0")["queues"]["tun_tx_super"]
        assert _iperf(fab, "node0002", "node0007", seconds=1)["end"]["sum_received"]["bytes"] > 0
        assert fab.nodes["node0002"].interface("ib0")["queues"]["tun_tx_super"] == before
    finally:
        fab.nodes["node0002"].cmd("ethtool -K ib0 tso on", check=True)
    assert _ethtool_k(fab, "node0002")["tcp-segmentation-offload"] == "on"
