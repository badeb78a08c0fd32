"""Raw pyzmq roles for the forwarding benchmark, each run as its own process:

    python bench/fwd_tools.py gen  ENDPOINT PACKET_HEX COUNT BURST PORT TOKEN_HEX DEVICE
    python bench/fwd_tools.py sink ENDPOINT COUNT IDLE_S          -> prints JSON {packets, seconds}
    python bench/fwd_tools.py fwd  IN_ENDPOINT OUT_ENDPOINT OUT_PORT

The generator and the sink are the same in both runs; only the element between them changes (our
switch's device host, or the raw forwarder below, which re-sends each burst with the same framing
and nothing else).
"""

import json
import struct
import sys
import time

import zmq

HDR = struct.Struct("!BBBxH8sH")  # fabric.wire.burst, format 3: ... token, receiving device


def gen(endpoint, packet_hex, count, burst, port, token_hex, device):
    pkt = bytes.fromhex(packet_hex)
    count, burst, port = int(count), int(burst), int(port)
    body = b"".join(struct.pack("!H", len(pkt)) + pkt for _ in range(burst))
    msg = HDR.pack(3, 0, port, burst, bytes.fromhex(token_hex), int(device)) + body
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 1000)
    s.connect(endpoint)
    time.sleep(0.2)  # let the connection come up
    for _ in range(count // burst):
        s.send(msg)  # blocks at the high-water mark: back-pressure, not loss
    s.close(linger=5000)
    ctx.term()


def sink(endpoint, count, idle):
    count, idle = int(count), float(idle)
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.RCVHWM, 1000)
    s.bind(endpoint)
    print("ready", flush=True)
    got = 0
    t0 = t1 = None
    while got < count:
        if not s.poll(int(idle * 1000)):
            break
        m = s.recv(copy=True)
        v, kind, _port, n, _tok, _dev = HDR.unpack_from(m)
        if kind != 0:
            continue
        if t0 is None:
            t0 = time.perf_counter()
        got += n
        t1 = time.perf_counter()
    print(json.dumps({"packets": got, "seconds": (t1 - t0) if t0 else 0.0}), flush=True)
    s.close(0)
    ctx.term()


def fwd(in_ep, out_ep, out_port):
    out_port = int(out_port)
    ctx = zmq.Context()
    i = ctx.socket(zmq.PULL)
    i.setsockopt(zmq.RCVHWM, 1000)
    i.bind(in_ep)
    o = ctx.socket(zmq.PUSH)
    o.setsockopt(zmq.SNDHWM, 1000)
    o.connect(out_ep)
    print("ready", flush=True)
    while True:
        m = i.recv(copy=True)
        # the same framing: rewrite the destination port of the header, keep the packets
        o.send(m[:2] + bytes([out_port]) + m[3:])


if __name__ == "__main__":
    {"gen": gen, "sink": sink, "fwd": fwd}[sys.argv[1]](*sys.argv[2:])
