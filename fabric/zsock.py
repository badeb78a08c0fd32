"""ZeroMQ settings that every process of a fabric shares.

A socket that connects before its peer has bound (the launcher's RPC clients while the hosts still
start, one host's link socket to another still building its devices) is refused, and libzmq tries
again after ``ZMQ_RECONNECT_IVL``: 100 ms by default, which every fabric's launch waited once or
twice. Here the first retry comes after 2 ms and the interval doubles up to 100 ms, so a peer that
is slow to come costs no more attempts than before, and one that comes a moment later costs
nothing.

A socket monitor's event is read here too (the 16-bit event and 32-bit value of libzmq's first
monitor frame, then the endpoint): pyzmq's ``zmq.utils.monitor`` imports asyncio for it, 20 ms of
every host's start.
"""

from __future__ import annotations

import struct

import zmq

RECONNECT_FIRST_MS = 2
RECONNECT_MAX_MS = 100
_EVENT = struct.Struct("=HI")  # zmq_socket_monitor: event number, value (host order)


def connect(sock: zmq.Socket, endpoint: str) -> None:
    """``sock.connect(endpoint)``, retrying soon when the peer is not there yet."""
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_FIRST_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
    sock.connect(endpoint)


def monitor_event(mon: zmq.Socket, flags: int = 0) -> tuple[int, int]:
    """The next event of monitor socket ``mon``: ``(zmq.EVENT_*, value)`` (the value: a file
    descriptor, an errno, a reconnect interval in ms, by event); raises ``zmq.Again`` as recv does
    with NOBLOCK. A message that is not a monitor event raises ValueError."""
    frames = mon.recv_multipart(flags)
    if len(frames) != 2 or len(frames[0]) != _EVENT.size:
        raise ValueError(f"not a socket monitor event: {len(frames)} frames")
    event, value = _EVENT.unpack(frames[0])
    return event, value
