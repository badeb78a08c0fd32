"""Idle work: what software on a node does "when there is nothing else to do" (IPoIB's start of
ib0 once its port went Active, which the kernel's ipoib runs from a workqueue) waits behind the
packets in flight: under the SM's sweep, the SMPs still to answer go first. A device host runs it
once a pass finds no input and nothing queued, or once it has waited IDLE_MAX_WAIT_S."""

from __future__ import annotations

from collections import deque

import pytest

from fabric.host.loop import IDLE_MAX_WAIT_S, DeviceHost
from ipnet import IpNet

pytestmark = pytest.mark.timeout(60)


def test_interfaces_start_after_the_sweeps_smps_not_between_them():
    """Every HCA's port goes Active during the sweep's last phase. Its ib0 starts as idle work:
    after the SM's Active Sets in flight are all answered (SUBNET UP), not right after its own
    (which put each start and its broadcast join ahead of the SMPs still in flight)."""
    net = IpNet("fattree:2,2,4,2")
    started = []
    for name, node in net.nodes.items():
        orig = node.start

        def start(node=node, orig=orig, name=name):
            if not node.started:
                started.append((name, net.agent.last_up is not None))
            orig()

        node.start = start
    net.up()
    assert len(started) == len(net.nodes)
    assert all(up for _, up in started), [n for n, up in started if not up]
    assert all(n.ifs["ib0"].carrier for n in net.nodes.values())
    assert net.ping("node0001", "node0008").received == 1


def test_a_device_runs_the_idle_work_of_the_agents_that_have_some():
    from fabric.devices import make_device
    from fabric.topology import load_topology

    topo = load_topology("single:2")
    dev = make_device(topo.nodes["node0001"])

    class Agent:
        def __init__(self, pending):
            self.idle_pending, self.ran = pending, []

        def idle(self, now):
            self.ran.append(now)
            self.idle_pending = False

        def next_deadline(self):
            return None

        def tick(self, now):
            pass

    class Plain:  # an agent without idle work (the SM)
        def next_deadline(self):
            return None

    a, b, c = Agent(True), Agent(False), Plain()
    dev.agents += [c, a, b]
    assert dev.idle_pending()
    dev.run_idle(5.0)
    assert a.ran == [5.0] and b.ran == [] and not dev.idle_pending()


def _host(**kw):
    host = DeviceHost.__new__(DeviceHost)
    host.local_q, host.zcheck, host.txq = deque(), set(), {}
    host._idle_since = 0.0
    for k, v in kw.items():
        setattr(host, k, v)
    return host


def test_the_idle_work_runs_on_a_quiet_pass_or_once_it_waited_long_enough():
    quiet = _host()
    assert quiet.idle_ready(False, 0.001)
    assert not quiet.idle_ready(True, 0.001)  # the pass had input: more may follow at once
    for busy in (_host(local_q=deque([1])), _host(zcheck={1}), _host(txq={("a", 1): []})):
        assert not busy.idle_ready(False, 0.001)
        assert busy.idle_ready(True, IDLE_MAX_WAIT_S)  # a busy host does not starve it
    assert 0 < IDLE_MAX_WAIT_S <= 0.1


def test_loopnet_stops_when_the_idle_work_sends_nothing():
    """Idle work that puts nothing on the wire (a start on a port that is not Active) leaves the
    fabric quiet: run() returns instead of taking from an empty queue."""
    from fabric.loopnet import LoopNet
    from fabric.topology import load_topology

    net = LoopNet(load_topology("single:2"))
    dev = net.devices["node0001"]

    class Agent:
        idle_pending = True

        def idle(self, now):
            self.idle_pending = False

        def next_deadline(self):
            return None

        def tick(self, now):
            pass

    a = Agent()
    dev.agents.append(a)
    assert net.run() == 0 and not a.idle_pending
