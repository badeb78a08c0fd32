"""Raw pyzmq roles for the forwarding benchmark, each run as its own process:

    python bench/fwd_tools.py gen  ENDPOINT PACKET_HEX COUNT BURST PORT TOKEN_HEX DEVICE
    python bench/fwd_tools.py sink ENDPOINT COUNT IDLE_S          -> prints JSON {packets, seconds}
    python bench/fwd_tools.py port ENDPOINT PEER_ENDPOINT TOKEN_HEX PEER_DEVICE PEER_PORT
        a sink that stands in for an HCA port for a whole run: it answers link training (HELLO with
        HELLO_ACK, so the switch's port comes up) and, for each line "COUNT IDLE_S" on its stdin,
        counts data packets and prints JSON {packets, seconds}
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


def port(endpoint, peer_ep, token_hex, peer_device, peer_port):
    token, peer_device, peer_port = bytes.fromhex(token_hex), int(peer_device), int(peer_port)
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.RCVHWM, 1000)
    s.bind(endpoint)
    back = ctx.socket(zmq.PUSH)
    back.connect(peer_ep)
    poller = zmq.Poller()
    poller.register(s, zmq.POLLIN)
    poller.register(sys.stdin.fileno(), zmq.POLLIN)
    print("ready", flush=True)
    want = None  # [count, idle, got, t0, t1] while a measurement runs
    while True:
        timeout = int(want[1] * 1000) if want and want[3] is not None else (None if not want else 10000)
        events = dict(poller.poll(timeout))
        if not events and want:  # idle for IDLE_S: the measurement is over
            print(json.dumps({"packets": want[2], "seconds": (want[4] - want[3]) if want[3] else 0.0}), flush=True)
            want = None
            continue
        if sys.stdin.fileno() in events:
            line = sys.stdin.readline()
            if not line:
                return
            count, idle = line.split()
            want = [int(count), float(idle), 0, None, None]
        if s in events:
            while True:
                try:
                    m = s.recv(zmq.NOBLOCK, copy=True)
                except zmq.Again:
                    break
                v, kind, _port, n, _tok, _dev = HDR.unpack_from(m)
                if kind == 1:  # HELLO: answer, so the switch's port trains
                    back.send(HDR.pack(3, 2, peer_port, 0, token, peer_device))
                elif kind == 0 and want:
                    now = time.perf_counter()
                    if want[3] is None:
                        want[3] = now
                    want[2] += n
                    want[4] = now
                    if want[2] >= want[0]:
                        print(json.dumps({"packets": want[2], "seconds": want[4] - want[3]}), flush=True)
                        want = None


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
    {"gen": gen, "sink": sink, "fwd": fwd, "port": port}[sys.argv[1]](*sys.argv[2:])
