"""The control RPC client against a real ZeroMQ ROUTER that misbehaves."""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
import zmq

from fabric.rpc import RpcClient, RpcError


@pytest.fixture
def router(tmp_path):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path}/ctl"
    sock.bind(endpoint)
    yield ctx, sock, endpoint
    sock.close(0)
    ctx.term()


def _serve(sock, stop, answer):
    """Answer every request with ``answer(request)`` (a list of bodies), until ``stop`` is set."""
    while not stop.is_set():
        if not sock.poll(20):
            continue
        frames = sock.recv_multipart()
        req = msgpack.unpackb(frames[-1], raw=False)
        for body in answer(req):
            sock.send_multipart(frames[:-1] + [msgpack.packb(body, use_bin_type=True)])


def test_stale_replies_do_not_stretch_the_timeout(router):
    """A host that keeps sending answers to an older call (another id) must not keep the caller
    waiting: the deadline is absolute."""
    ctx, sock, endpoint = router
    stop = threading.Event()

    def stale(req):
        for _ in range(40):  # 40 stale replies, 50 ms apart: 2 s of them
            time.sleep(0.05)
            yield {"ok": True, "result": "old", "id": req["id"] - 1}

    t = threading.Thread(target=_serve, args=(sock, stop, stale), daemon=True)
    t.start()
    client = RpcClient(endpoint, ctx=ctx, timeout=0.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(RpcError, match="no answer to 'hello' within 0.5 s"):
            client.call("hello")
        assert time.monotonic() - t0 < 1.2
    finally:
        client.close()
        stop.set()
        t.join(5)


def test_the_right_answer_after_stale_ones_is_returned(router):
    ctx, sock, endpoint = router
    stop = threading.Event()

    def late(req):
        yield {"ok": True, "result": "old", "id": req["id"] - 1}
        yield {"ok": True, "result": "new", "id": req["id"]}

    t = threading.Thread(target=_serve, args=(sock, stop, late), daemon=True)
    t.start()
    client = RpcClient(endpoint, ctx=ctx, timeout=2.0)
    try:
        assert client.call("hello") == "new"
    finally:
        client.close()
        stop.set()
        t.join(5)
