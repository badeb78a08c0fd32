"""Hostile RPC: every operation a device host serves, called with arguments of every type and
value (and requests that are not requests at all), never kills the host, never goes unanswered,
and never ends in an unchecked error: each bad call is one clear line naming what is wrong, and
the fabric carries traffic afterwards with no burst damaged.

``make test`` runs a sample (IBFAB_FUZZ_CALLS, 600 by default); ``make fuzz`` runs 100k.
"""

import os
import time

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric import Fabric

CALLS = int(os.environ.get("IBFAB_FUZZ_CALLS", "600"))
# what would end or reconfigure the fabric under the test: these are called with checked-bad
# arguments only (test_state_changing_ops_refuse_bad_arguments)
STATEFUL = {"shutdown", "link", "sm_start", "sm_stop", "capture_start", "capture_stop"}
REPLY_S = 8.0
# operations that wait for something (a reply, a timeout, a run): a fuzzed call may legitimately
# ask one to wait longer than the fuzz waits for it
WAITING = {"ping", "perf_send", "perf_ping_ud", "poll", "udp_recv", "discover", "smp", "smps", "gmp"}
FAST_ARGS = {"timeout", "seconds", "count", "interval"}

pytestmark = pytest.mark.timeout(max(300, CALLS // 50))


@pytest.fixture(scope="module")
def fab():
    with Fabric("single:2", name="rpcfuzz") as f:
        assert f.nodes["node0001"].ping("node0002")["received"] == 1
        yield f


class Raw:
    """A DEALER socket speaking the control protocol by hand, so that anything can be sent."""

    def __init__(self, endpoint):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.rid = 0

    def send_body(self, body: bytes):
        self.sock.send_multipart([b"", body])

    def call(self, req: dict):
        self.rid += 1
        rid = self.rid
        self.send_body(msgpack.packb(dict(req, id=rid), use_bin_type=True))
        return self.wait(rid)

    def wait(self, rid):
        deadline = time.monotonic() + REPLY_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                return None
            body = msgpack.unpackb(self.sock.recv_multipart()[-1], raw=False, strict_map_key=False)
            if body.get("id") == rid:
                return body

    def close(self):
        self.sock.close(0)


GARBAGE = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([-1, 0, 1, 2, 3, 7, 255, 0xC001, 0xFFFF, 0x10000, 0xFFFFFF, 2**31, 2**32, 2**63 - 1, -2**63,
                     2**64 - 1]),
    st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.binary(max_size=300),
    st.lists(st.integers(-9, 9), max_size=4), st.dictionaries(st.text(max_size=5), st.integers(-9, 9), max_size=3),
)


def values_for(name, devices, ips):
    """Plausible values for a named argument (so that calls get past the first check and reach
    the operation's own), mixed with garbage of every type."""
    plausible = {
        "device": st.sampled_from(devices + ["nosuch", ""]),
        "port": st.sampled_from([0, 1, 2, 3, 36, 254, 5201, 5202, 65535]),
        "dst": st.sampled_from(ips + ["node0002", "198.18.0.99", "999.1.1.1", "not-an-ip", ""]),
        "ip": st.sampled_from(ips + ["198.18.0.99", "::1", "x"]),
        "group": st.sampled_from(["239.1.2.3", "224.0.0.1", "198.18.0.1", "bogus"]),
        "timeout": st.sampled_from([0, 0.0, 0.01, 0.05]),
        "seconds": st.sampled_from([0.05, 0.0, -1.0, 1e9]),
        "count": st.sampled_from([0, 1, 2, -1, 10**9]),
        "interval": st.sampled_from([0.0, 0.01, -1.0]),
        "size": st.sampled_from([0, 1, 56, 1472, 2044, 4000, 65507, 65508, 70000, -1]),
        "qkey": st.sampled_from([0, 0x1234, 0x80000000, 0xFFFFFFFF]),
        "qpn": st.sampled_from([0, 1, 2, 0x48, 0xFFFFFF]),
        "dest_qp": st.sampled_from([0, 1, 0xFFFFFF]),
        "dlid": st.sampled_from([0, 1, 2, 3, 0xC000, 0xFFFF]),
        "mlid": st.sampled_from([0xC000, 0xC001, 0xFFFE, 5]),
        "mgid": st.binary(min_size=16, max_size=16),
        "packet": st.binary(min_size=0, max_size=5000),
        "payload": st.binary(max_size=5000),
        "data": st.binary(max_size=3000),
        "smp": st.binary(min_size=256, max_size=256),
        "smps": st.lists(st.binary(min_size=256, max_size=256), min_size=1, max_size=3),
        "dlids": st.lists(st.sampled_from([None, 0, 1, 2, 0xFFFF]), min_size=1, max_size=3),
        "mad": st.binary(min_size=256, max_size=256),
        "max": st.sampled_from([1, 64, 0, 10**6]),
        "ifname": st.sampled_from(["ib0", "ib1", "eth0", ""]),
        "sock": st.sampled_from([1, 2, 3, 10**9]),
        "sink": st.sampled_from([1, 2, 3, 10**9]),
        "sender": st.sampled_from([1, 2, 3, 10**9]),
        "ping": st.sampled_from([1, 2, 3, 10**9]),
    }.get(name, st.booleans())
    return st.integers(0, 7).flatmap(lambda k: GARBAGE if k == 0 else plausible)


def requests(ops, devices, ips):
    names = sorted(set(ops) - STATEFUL)

    @st.composite
    def one(draw):
        op = draw(st.sampled_from(names + ["nosuch", ""]))
        spec = ops.get(op, {"required": [], "optional": []})
        req = {"op": op}
        for arg in spec["required"]:
            if draw(st.integers(0, 19)):  # now and then a required one is missing
                req[arg] = draw(values_for(arg, devices, ips))
        for arg in spec["optional"]:
            # how long an operation may take is given nearly always: the defaults (a 30 s
            # discovery, a 200-probe latency run) are fine for users and too slow for a fuzz
            if arg in FAST_ARGS and draw(st.integers(0, 30)) or not draw(st.integers(0, 2)):
                req[arg] = draw(values_for(arg, devices, ips))
        if not draw(st.integers(0, 15)):
            req[draw(st.text(min_size=1, max_size=8))] = draw(GARBAGE)
        return req

    return one()


def _check_reply(body, req):
    assert isinstance(body.get("ok"), bool), body
    if not body["ok"]:
        err = body.get("error")
        assert isinstance(err, str) and err, body
        assert "\n" not in err and len(err) < 400, (req, err)
        assert body.get("kind") != "internal" and "internal error" not in err, (req, err)
        assert "Traceback" not in err and "RpcError" not in err, (req, err)


def _host_pids(fab):
    return [c.call("hello")["pid"] for c in fab.client.clients]


def test_every_op_survives_hostile_arguments_and_the_fabric_still_works(fab):
    raw, probe = Raw(fab.info.control(0)), Raw(fab.info.control(0))
    try:
        ops = raw.call({"op": "ops"})["result"]
        assert {"send_raw", "post_send", "perf_start", "ping_start", "udp_open"} <= set(ops)
        devices = list(fab.topology.nodes)
        ips = [fab.nodes[h].status()["interfaces"][0]["addr"].split("/")[0] for h in ("node0001", "node0002")]
        pids = _host_pids(fab)
        seen = {"ok": 0, "error": 0, "waiting": 0}

        @settings(max_examples=CALLS, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(req=requests(ops, devices, ips))
        def run(req):
            body = raw.call(req)
            if body is None:  # a call that waits as long as it was told to (a default of seconds)
                assert req["op"] in WAITING, f"no answer to {req}"
                assert probe.call({"op": "hello"}) is not None, f"the host stopped answering after {req}"
                seen["waiting"] += 1
                return
            _check_reply(body, req)
            seen["ok" if body["ok"] else "error"] += 1

        run()
        assert seen["ok"] > CALLS // 20 and seen["error"] > CALLS // 5, seen  # both kinds were reached

        # requests that are not requests: each is answered, or (no id to answer to) ignored
        for body in (b"", b"\xc1", b"\x93\x01\x02\x03", msgpack.packb([1, 2]), msgpack.packb({"id": [1], "op": 5}),
                     msgpack.packb({"op": "status", "id": {"x": 1}}), os.urandom(64)):
            raw.send_body(body)
        assert raw.call({"op": "hello"})["ok"]

        assert _host_pids(fab) == pids, "a device host restarted"
        for st_ in fab.client.status():
            assert st_["burst_errors"] == 0
        drops = {k: v for d in fab.client.devices().values() for k, v in (d.get("drops") or {}).items()
                 if k in ("bad_burst", "internal_error", "burst_bad_port")}
        if any(drops.values()):
            logs = "".join(open(fab.info.log_file(i), errors="replace").read()[-3000:]
                           for i in range(len(fab.info.hosts)))
            pytest.fail(f"{drops}\n{logs}")
        assert seen["waiting"] < CALLS // 50, seen
    finally:
        raw.close()
        probe.close()
    time.sleep(1.5)  # pings and perf runs the fuzz started end (each is bounded)
    r = fab.nodes["node0001"].ping("node0002", count=3)
    assert r["received"] == 3, r


def test_state_changing_ops_refuse_bad_arguments(fab):
    raw = Raw(fab.info.control(0))
    try:
        bad = [{"op": "link", "device": "sw01", "port": "1", "up": True},
               {"op": "link", "device": "sw01", "port": 1},
               {"op": "link", "device": "sw01", "port": 99, "up": False},
               {"op": "sm_start", "device": "node0001", "config": {"lmc": 9}},
               {"op": "sm_start", "device": "node0001", "config": {"routing_engine": "nosuch"}},
               {"op": "sm_start", "device": "node0001", "config": {"frob": 1}},
               {"op": "sm_start", "device": "node0001", "config": {"partitions": "Default=0x7fff"}},
               {"op": "sm_start", "device": "sw01"},
               {"op": "sm_stop", "extra": 1},
               {"op": "capture_start"}, {"op": "capture_start", "path": 5},
               {"op": "shutdown", "now": 1}]
        for req in bad:
            body = raw.call(req)
            assert body["ok"] is False, req
            _check_reply(body, req)
        status = raw.call({"op": "sm_status"})["result"]
        assert status is not None and status["node"] == fab.topology.sm_node, "a refused sm_start stopped the SM"
    finally:
        raw.close()


def test_a_raw_packet_too_large_for_a_burst_is_refused_and_the_link_keeps_working(fab):
    """70000 octets do not fit the burst's 16-bit length: once they corrupted the next burst on
    the link and the drop was counted nowhere."""
    before = fab.client.call("sw01", "counters", port=1)
    with pytest.raises(Exception, match="1..65535 octets"):
        fab.client.call("sw01", "send_raw", port=1, packet=b"\0" * 70000)
    with pytest.raises(Exception, match="packet must be bytes"):
        fab.client.call("sw01", "send_raw", port=1, packet="a string")
    after = fab.client.call("sw01", "counters", port=1)

    def errors(c):  # the traffic counters move with the SM's light sweeps (node0001 is its node)
        return {k: v for part in c.values() for k, v in part.items() if "data" not in k and "pkts" not in k}

    assert errors(after) == errors(before)
    assert fab.nodes["node0001"].ping("node0002", count=2)["received"] == 2


def test_the_sm_settings_an_rpc_may_set_are_exactly_smconfigs_fields():
    import dataclasses

    from fabric.host.ops import _SM_FIELDS
    from fabric.sm.core import SMConfig

    assert set(_SM_FIELDS) == {f.name for f in dataclasses.fields(SMConfig)}
