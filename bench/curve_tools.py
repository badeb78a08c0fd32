"""Raw pyzmq over tcp:// with CURVE, the baseline of the multi-machine benchmark
(test_bench_multimachine.py). Each role is its own process, run inside a network namespace:

    python bench/curve_tools.py sink ENDPOINT KEYS IDLE_S         prints "ready", then JSON {packets, seconds}
    python bench/curve_tools.py fwd  IN_ENDPOINT OUT_ENDPOINT KEYS    a CURVE PULL re-sent on OUT (ipc://)
    python bench/curve_tools.py gen  ENDPOINT KEYS WIRE_LEN BURST SECONDS     prints JSON {bursts}

KEYS is a fabric's curve.keys (the same key pairs the fabric's hosts use), or ``none`` for
plaintext. A message is a link burst as the fabric frames it (fabric.wire.burst: the 16-octet
header, then per packet a 16-bit length and the packet); the sink counts its packets. The sink has
no ZAP handler: the fabric's host asks its own once per connection, not per message.
"""

import json
import struct
import sys
import time

import zmq

HDR = struct.Struct("!BBBxH8sH")
HWM = 4000  # as fabric.host.loop.PEER_HWM


def _keys(path):
    if path == "none":
        return None
    sys.path.insert(0, ".")
    from fabric.curve import CurveKeys

    with open(path) as f:
        return CurveKeys.from_json(f.read())


def _server(ctx, kind, ep, keys):
    s = ctx.socket(kind)
    s.setsockopt(zmq.RCVHWM, HWM)
    if keys is not None:
        keys.server(s)
    s.bind(ep)
    return s


def _client(ctx, ep, keys):
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, HWM)
    if keys is not None:
        keys.client(s)
    s.connect(ep)
    return s


def sink(ep, keys, idle):
    ctx = zmq.Context()
    s = _server(ctx, zmq.PULL, ep, _keys(keys))
    print("ready", flush=True)
    got, t0, t1 = 0, None, None
    while s.poll(int(float(idle) * 1000) if t0 is not None else 60000):
        m = s.recv(copy=True)
        if t0 is None:
            t0 = time.perf_counter()
        got += HDR.unpack_from(m)[3]
        t1 = time.perf_counter()
    print(json.dumps({"packets": got, "seconds": (t1 - t0) if t0 is not None else 0.0}), flush=True)


def fwd(in_ep, out_ep, keys):
    ctx = zmq.Context()
    k = _keys(keys)
    src = _server(ctx, zmq.PULL, in_ep, k)
    out = _client(ctx, out_ep, None)
    print("ready", flush=True)
    while True:
        m = bytearray(src.recv(copy=True))
        m[2] = 1  # the destination port, as a switch rewrites it
        out.send(m)


def gen(ep, keys, wire_len, burst, seconds):
    wire_len, burst, seconds = int(wire_len), int(burst), float(seconds)
    body = b"".join(struct.pack("!H", wire_len) + bytes(wire_len) for _ in range(burst))
    msg = HDR.pack(3, 0, 1, burst, bytes(8), 0) + body
    ctx = zmq.Context()
    s = _client(ctx, ep, _keys(keys))
    time.sleep(0.3)  # the connection and its handshake
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        s.send(msg)  # blocks at the high-water mark: back-pressure, as the sink drains
        n += 1
    s.close(linger=5000)
    ctx.term()
    print(json.dumps({"bursts": n}), flush=True)


if __name__ == "__main__":
    {"sink": sink, "fwd": fwd, "gen": gen}[sys.argv[1]](*sys.argv[2:])
