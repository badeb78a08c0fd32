"""fabric.zsock: a socket that connects before its peer binds tries again within milliseconds (not
libzmq's 100 ms), and socket monitor events read without pyzmq's asyncio-importing helper; the
node software loaded from the entry point reference the launcher records."""

from __future__ import annotations

import threading

import msgpack
import pytest
import zmq

from fabric import plugins, zsock
from fabric.rpc import RpcClient

pytestmark = pytest.mark.timeout(30)


def _events(mon, until, limit=200):
    """Monitor events up to and including the first ``until`` event."""
    out = []
    while len(out) < limit:
        if not mon.poll(5000):
            raise AssertionError(f"no {until} event; saw {out}")
        ev = zsock.monitor_event(mon)
        out.append(ev)
        if ev[0] == until:
            return out
    raise AssertionError(f"no {until} event in {limit}; saw {out}")


def test_a_client_before_its_server_retries_soon_and_is_answered(tmp_path):
    """The launcher's RPC clients exist before the hosts bind: each retry is announced by the
    monitor with its interval, which starts at 2 ms and doubles (libzmq's default: 100 ms flat),
    and the call made meanwhile is answered once the server binds."""
    endpoint = f"ipc://{tmp_path}/ctl"
    ctx = zmq.Context()
    client = RpcClient(endpoint, ctx=ctx, timeout=10.0)
    mon = client.sock.get_monitor_socket(zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECTED)
    server = ctx.socket(zmq.ROUTER)
    server.setsockopt(zmq.LINGER, 0)
    try:
        retries = []
        for event, value in iter(lambda: zsock.monitor_event(mon), None):
            assert event == zmq.EVENT_CONNECT_RETRIED  # nobody has bound yet
            retries.append(value)
            if len(retries) == 4:
                break
        # the first retry may come before the monitor is attached: then the series starts at
        # its second interval; either way it starts far below libzmq's 100 ms and doubles
        assert retries[0] in (zsock.RECONNECT_FIRST_MS, 2 * zsock.RECONNECT_FIRST_MS)
        assert all(b == min(2 * a, zsock.RECONNECT_MAX_MS) for a, b in zip(retries, retries[1:]))
        server.bind(endpoint)
        answered = []

        def serve():
            frames = server.recv_multipart()
            req = msgpack.unpackb(frames[-1], raw=False)
            server.send_multipart(frames[:-1] + [msgpack.packb({"id": req["id"], "ok": True, "result": 7})])

        t = threading.Thread(target=serve)
        t.start()
        answered.append(client.call("ping"))
        t.join(10)
        assert answered == [7]
        assert zmq.EVENT_CONNECTED in [e for e, _ in _events(mon, zmq.EVENT_CONNECTED)]
    finally:
        mon.close(0)
        client.close()
        server.close(0)
        ctx.term()


def test_monitor_events_are_read_as_libzmq_writes_them(tmp_path):
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    mon = b.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    try:
        a.bind(f"ipc://{tmp_path}/s")
        zsock.connect(b, f"ipc://{tmp_path}/s")
        event, fd = _events(mon, zmq.EVENT_CONNECTED)[-1]
        assert event == zmq.EVENT_CONNECTED and fd > 0  # the value: the connection's descriptor
        a.close(0)
        assert _events(mon, zmq.EVENT_DISCONNECTED)[-1][0] == zmq.EVENT_DISCONNECTED
        with pytest.raises(zmq.Again):
            zsock.monitor_event(mon, zmq.NOBLOCK)
    finally:
        mon.close(0)
        b.close(0)
        ctx.term()


def test_a_message_that_is_no_monitor_event_is_refused(tmp_path):
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind(f"ipc://{tmp_path}/p")
        b.connect(f"ipc://{tmp_path}/p")
        for msg in ([b"\x01\x00"], [b"\x01\x00\x00\x00\x00\x00", b"ep", b"more"], [b"x" * 7, b"ep"]):
            b.send_multipart(msg)
            with pytest.raises(ValueError, match="not a socket monitor event"):
                zsock.monitor_event(a)
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


def test_node_software_by_its_recorded_reference():
    """What the launcher records in fabric.json (the entry point's module:attr) loads the very
    object the entry point does, without reading the distributions' metadata."""
    ref = plugins.node_software_ref("ipoib")
    assert ref == plugins._entry("ipoib").value and ":" in ref
    assert plugins.load_ref(ref) is plugins.node_software("ipoib")
    assert plugins.node_software("ipoib", ref) is plugins.node_software("ipoib")
    assert plugins.node_software_ref("none") is None and plugins.node_software("none", ref) is None
    with pytest.raises(ValueError, match="unknown node software"):
        plugins.node_software_ref("no-such-software")
    with pytest.raises(ValueError, match="module:attr"):
        plugins.load_ref(":SOFTWARE")
    with pytest.raises(AttributeError):
        plugins.load_ref(ref + "_missing")
