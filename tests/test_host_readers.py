"""The device host's readers (``DeviceHost.add_reader``): a file descriptor of a node's software
(a TUN queue) is read by ``fn(now)``; the node's software then runs if due, and its outbox leaves.
A reader that returns True says it called no software (a driver's C path that only posted sends):
the host then neither asks for the node's timers again nor runs them, but still drains the outbox."""

from __future__ import annotations

from collections import deque

from fabric.host.loop import DeviceHost


class _Device:
    def __init__(self):
        self.name = "node0001"
        self.outbox = []
        self.events = []
        self.drops = {"internal_error": 0}
        self.asked = 0
        self.ticks = 0

    def next_deadline(self):
        self.asked += 1
        return 0.0  # always due: a host that asks runs it

    def tick(self, now):
        self.ticks += 1


def _host(dev) -> DeviceHost:
    host = DeviceHost.__new__(DeviceHost)
    host.devices = {dev.name: dev}
    host._stale, host._due, host.txq = set(), {}, {}
    host.local, host.local_q, host.links, host.capture = {}, deque(), {}, None  # no in-process links
    host.drained = []
    host.drain = lambda name, d: (host.drained.append(list(d.outbox)), d.outbox.clear())
    host.handle_events = lambda name, now: None
    return host


def test_a_quiet_reader_leaves_the_nodes_software_alone_and_its_sends_still_leave():
    dev = _Device()
    host = _host(dev)

    def reader(now):
        dev.outbox.append((1, b"posted"))
        return True

    host._read((dev.name, reader), 1.0)
    assert dev.asked == 0 and dev.ticks == 0 and dev.name not in host._stale
    assert host.drained == [[(1, b"posted")]]


def test_a_reader_that_called_software_gets_the_node_run_after_it():
    dev = _Device()
    host = _host(dev)
    for result in (None, 3, False):  # only True means quiet
        before = dev.ticks
        host._read((dev.name, lambda now, r=result: r), 1.0)
        assert dev.ticks > before and dev.asked > 0


def test_a_reader_that_raises_is_counted_and_the_node_still_runs():
    dev = _Device()
    host = _host(dev)

    def reader(now):
        dev.outbox.append((1, b"before the error"))
        raise RuntimeError("boom")

    host._read((dev.name, reader), 1.0)
    assert dev.drops["internal_error"] == 1 and dev.ticks >= 1
    assert host.drained == [[(1, b"before the error")]]
