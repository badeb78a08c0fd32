"""Issue 3: forwarding through one switch between two HCAs, against a raw pyzmq forwarder with the
same burst framing, in the same run.

The fabric is ``single:2`` with each device in its own host process, brought up with real SMPs.
Then node0002's host is stopped and a raw sink binds its ingress, and a raw generator pushes
valid UD packets (node0001 -> node0002) into the switch's port 1. The same generator and sink
then measure a raw pyzmq forwarder bound where the switch was.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest

from fabric import Fabric
from fabric import wire as w
from handsm import HandSM

TOOLS = os.path.join(os.path.dirname(__file__), "fwd_tools.py")
COUNT = 300_000
REPEATS = 3
BURST = 32


def _measure(gen_ep, sink, packet, count, token="00" * 8, device=0):
    """The generator into ``gen_ep``; what the stand-in port (``sink``, a running ``port``
    process) counts."""
    sink.stdin.write(f"{count} 1.0\n")
    sink.stdin.flush()
    gen = subprocess.Popen([sys.executable, TOOLS, "gen", gen_ep, packet.hex(), str(count), str(BURST), "1", token,
                            str(device)])
    out = json.loads(sink.stdout.readline())
    gen.wait(timeout=60)
    return out


@pytest.fixture(scope="module")
def programmed():
    with Fabric("single:2", hosts=3, name="benchfwd", sm=False) as fab:
        topo = fab.topology
        sm = HandSM(lambda smp: fab.smp(topo.sm_node, smp, port=topo.sm_port)).bring_up()
        info = fab.info
        host_of = {d: i for i, h in enumerate(info.hosts) for d in h["devices"]}
        pid_of = {d: {s["host"]: s["pid"] for s in fab.client.status()}[host_of[d]] for d in host_of}
        sink_ep = info.ingress(host_of["node0002"])
        sw_port = next(lk.a_port if lk.a == "sw01" else lk.b_port for lk in topo.links
                       if {lk.a, lk.b} == {"sw01", "node0002"})
        os.kill(pid_of["node0002"], signal.SIGKILL)  # a stand-in port takes over node0002's ingress
        time.sleep(0.2)
        os.unlink(sink_ep[len("ipc://"):])
        # the switch's port went down with node0002's host: the stand-in trains it again, and the
        # SM's Sets take it to Active as in the bring-up
        sink = subprocess.Popen([sys.executable, TOOLS, "port", sink_ep, info.ingress(host_of["sw01"]),
                                 info.data["link_token"], str(info.device_index("sw01")), str(sw_port)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert sink.stdout.readline().strip() == "ready"
            fab.link_up("sw01", sw_port)
            deadline = time.time() + 10
            while fab.devices()["sw01"]["ports"][sw_port]["phys"] != "LinkUp":
                assert time.time() < deadline, "the switch's port did not train with the stand-in"
                time.sleep(0.05)
            sw = next(n for n in sm.nodes.values() if n["info"].node_type == 2)
            for state in (3, 4):  # Armed, Active
                cur = sm.get(w.PortInfo, w.ATTR_PORT_INFO, sw["path"], attr_mod=sw_port)
                sm.set(w.PortInfo, w.ATTR_PORT_INFO, sw["path"],
                       cur.replace(port_state=state, phys_state=0, client_reregister=0, neighbor_mtu=0,
                                   link_speed_enabled=0, link_width_enabled=0), attr_mod=sw_port)
            assert fab.devices()["sw01"]["ports"][sw_port]["state"] == "Active"
            yield fab, sm, pid_of, sink
        finally:
            sink.kill()
            sink.wait()


@pytest.mark.parametrize("size", [64, 4096])
def test_forwarding_switch_vs_raw(programmed, size, report):
    fab, sm, pid_of, sink = programmed
    topo = fab.topology
    n1, n2, sw = topo.nodes["node0001"], topo.nodes["node0002"], topo.nodes["sw01"]
    pkt = w.build_ud_packet(slid=sm.lid_of(n1.node_guid), dlid=sm.lid_of(n2.node_guid), dest_qp=0x48,
                            src_qp=0x48, qkey=0x1234, payload=bytes(size))
    info = fab.info
    sink_ep, sw_ep = info.ingress(info.host_of("node0002")), info.ingress(info.host_of("sw01"))
    sw_index = info.device_index("sw01")  # the burst names the switch: its host's one ingress socket
    ours_runs, raw_runs = [], []
    for _rep in range(REPEATS):  # interleaved, so drifting machine load hits both alike
        before = fab.counters("sw01", 2)["counters"]["port_xmit_pkts"]
        ours = _measure(sw_ep, sink, pkt, COUNT, info.data["link_token"], sw_index)
        after = fab.counters("sw01", 2)["counters"]["port_xmit_pkts"]
        assert after - before >= ours["packets"]  # the switch really forwarded (and counted) them
        ours_runs.append(ours)
        # the raw forwarder where the switch was
        os.kill(pid_of["sw01"], signal.SIGSTOP)
        raw_ep = sw_ep + ".raw"
        fwd = subprocess.Popen([sys.executable, TOOLS, "fwd", raw_ep, sink_ep, "1"], stdout=subprocess.PIPE,
                               text=True)
        try:
            assert fwd.stdout.readline().strip() == "ready"
            raw_runs.append(_measure(raw_ep, sink, pkt, COUNT))
        finally:
            fwd.kill()
            fwd.wait()
            os.kill(pid_of["sw01"], signal.SIGCONT)
    r_ours = statistics.median(r["packets"] / r["seconds"] for r in ours_runs)
    r_raw = statistics.median(r["packets"] / r["seconds"] for r in raw_runs)
    ours, raw = ours_runs[-1], raw_runs[-1]
    ratio = r_ours / r_raw
    report.append(f"forwarding {size:5d} B payload: switch {r_ours / 1e6:6.3f} Mpps "
                  f"({r_ours * len(pkt) * 8 / 1e9:6.2f} Gbit/s), raw pyzmq {r_raw / 1e6:6.3f} Mpps, "
                  f"ratio {ratio:4.2f} (target >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'}); "
                  f"delivered {ours['packets']}/{COUNT} and {raw['packets']}/{COUNT}")
    assert ours["packets"] > 0 and raw["packets"] > 0
