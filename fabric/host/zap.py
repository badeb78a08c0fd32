"""Who may reach a device host over tcp://: the ZAP handler that admits the fabric's CURVE client
key only, and the count of connections refused.

The host loop is single-threaded, so the handler is a socket its loop watches (``inproc://
zeromq.zap.01``, where libzmq asks during each CURVE handshake) rather than pyzmq's authenticator
thread. Refusals are counted from socket monitors on the host's server sockets: a wrong client key
(``HANDSHAKE_FAILED_AUTH``, after the handler said 400) and a peer without the server key or
without CURVE at all (``HANDSHAKE_FAILED_PROTOCOL``, which never reaches the handler). A
connection that says nothing (a port probe) fails with no detail and is not counted.
"""

from __future__ import annotations

import sys

import zmq
import zmq.utils.z85

from .. import zsock

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
REFUSED = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
LOGGED_MAX = 20  # refusals named in the host's log; the count goes on


class Gate:
    def __init__(self, ctx: zmq.Context, keys):
        self.allowed = zmq.utils.z85.decode(keys.client_public)
        self.handler = ctx.socket(zmq.REP)
        self.handler.setsockopt(zmq.LINGER, 0)
        self.handler.bind(ZAP_ENDPOINT)  # before any server socket binds: no handshake without it
        self.monitors: list = []
        self.refused = 0  # connections refused, by reason below
        self.reasons = {"wrong_key": 0, "no_curve_or_server_key": 0}
        self.denied_from: list = []  # the addresses of the last clients the handler turned away

    def watch(self, sock: zmq.Socket) -> zmq.Socket:
        """A monitor of ``sock``'s failed handshakes, for the host loop."""
        mon = sock.get_monitor_socket(REFUSED)
        self.monitors.append(mon)
        return mon

    def on_request(self) -> None:
        while True:
            try:
                frames = self.handler.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            version, request_id = frames[0], frames[1]
            address, mechanism = frames[3], frames[5]
            ok = mechanism == b"CURVE" and len(frames) > 6 and frames[6] == self.allowed
            if not ok:
                self.denied_from = (self.denied_from + [address.decode(errors="replace")])[-8:]
                if self.reasons["wrong_key"] < LOGGED_MAX:
                    print(f"fabric.host: refused a {mechanism.decode(errors='replace')} client from "
                          f"{address.decode(errors='replace')}: not the fabric's key", file=sys.stderr, flush=True)
            self.handler.send_multipart([version, request_id, b"200" if ok else b"400",
                                         b"OK" if ok else b"not the fabric's client key", b"", b""])

    def on_monitor(self, mon: zmq.Socket) -> None:
        while True:
            try:
                event, _ = zsock.monitor_event(mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.refused += 1
                self.reasons["wrong_key"] += 1
            elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self.refused += 1
                self.reasons["no_curve_or_server_key"] += 1

    def status(self) -> dict:
        return {"refused": self.refused, **self.reasons, "denied_from": list(self.denied_from)}

    def close(self) -> None:
        for s in [self.handler, *self.monitors]:
            s.close(0)
