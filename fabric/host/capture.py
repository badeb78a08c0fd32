"""Captures on a device host: a tap on every burst leaving a device port (``DeviceHost.flush``),
which every packet that crosses a cable passes, the C fast paths' Segments included.

While nothing captures, ``DeviceHost.capture`` is None and a flushed burst costs one ``is not
None`` test. While something does, it is a :class:`Taps`, which hands each burst to every session:

- :class:`ErfSession`: the ERF file of ``Fabric.capture`` (``capture_start``/``capture_stop``);
- :class:`StreamSession`: a live capture (``ibfab capture``): the bursts of the link ends it asked
  for, pushed as they leave to the ZeroMQ PULL socket the client bound. The host never waits for
  the client: what the socket's queue has no room for is dropped and counted per link end. The
  client renews a lease by polling (``capture_poll``); a client that stops (killed, its terminal
  gone) has its session ended after ``LEASE_S``.

A message of a stream is two frames: msgpack ``[host, device, port, timestamp ns, count]`` and the
burst's body, its packets each behind a 16-bit big-endian length (``fabric.wire.burst``), as they
left the port: the client splits them, so the host copies a burst once and parses nothing.
"""

from __future__ import annotations

import itertools
import os
import time

import msgpack
import zmq

from .. import zsock
from ..wire.burst import LEN
from .lease import LEASE_S, Lease
from .ops import RpcError

STREAM_HWM = 500  # bursts queued toward a capture client before the host drops them (a burst can be 100s of kB)
MAX_ENDS = 65536  # link ends one capture may name
CLOSE_LINGER_MS = 2000  # how long a closed stream still delivers what it queued


class Taps:
    """Every capture running on the host, behind the one object ``flush`` tests."""

    def __init__(self):
        self.sessions: dict = {}  # id -> session

    def __call__(self, name: str, port: int, body, count: int) -> None:
        ts = time.time_ns()
        for s in self.sessions.values():
            s.take(name, port, body, count, ts)


class ErfSession:
    """``Fabric.capture``: every packet into this host's ERF file (``PATH.hostN``), merged by the
    caller; the ERF interface is the port's two low bits."""

    def __init__(self, path: str):
        from ..capture import ErfWriter

        self.writer = ErfWriter(path)

    def take(self, name, port, body, count, ts) -> None:
        raw = bytes(body)
        off = 0
        while off + 2 <= len(raw):
            (ln,) = LEN.unpack_from(raw, off)
            self.writer.write(raw[off + 2:off + 2 + ln], ts, interface=port & 3)
            off += 2 + ln

    def close(self) -> None:
        self.writer.close()


class StreamSession:
    """A live capture's stream to its client, under a :class:`fabric.host.lease.Lease`."""

    def __init__(self, host, sid: int, endpoint: str, ends, now: float):
        self.host, self.sid, self.endpoint = host, sid, endpoint
        self.ends = None if ends is None else {(d, p) for d, p in ends}
        self.sent = self.sent_packets = self.dropped = 0
        self.drops: dict = {}  # (device, port) -> packets dropped: the client was slow
        self.sock = host.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, STREAM_HWM)
        self.sock.setsockopt(zmq.LINGER, 0)
        zsock.connect(self.sock, endpoint)
        # on one of the host's devices, whose timers run it
        self.lease = Lease(host.devices[host.names[0]], self._expired, now)

    def take(self, name, port, body, count, ts) -> None:
        if self.ends is not None and (name, port) not in self.ends:
            return
        try:
            self.sock.send_multipart([msgpack.packb([self.host.index, name, port, ts, count]), body],
                                     zmq.NOBLOCK, copy=True)
            self.sent += 1
            self.sent_packets += count
        except zmq.Again:  # the client is slow: the host never waits for it
            self.dropped += count
            self.drops[(name, port)] = self.drops.get((name, port), 0) + count

    def renew(self, now: float) -> None:
        self.lease.renew(now)

    def _expired(self) -> None:
        self.host.end_capture(self.sid)
        # the client is gone and cannot remove its socket's file: the run directory keeps none
        path = self.endpoint[len("ipc://"):]
        mine = os.path.dirname(os.path.realpath(path)) == os.path.realpath(self.host.info.run_dir)
        if mine and os.path.basename(path).startswith("cap-"):
            try:
                os.unlink(path)
            except OSError:
                pass

    def stats(self) -> dict:
        return {"session": self.sid, "host": self.host.index, "sent": self.sent, "packets": self.sent_packets,
                "dropped": self.dropped, "drops": [[d, p, n] for (d, p), n in sorted(self.drops.items())]}

    def close(self) -> None:
        self.lease.cancel()
        # what is still queued reaches the client, which waits for the count ``capture_close``
        # reported (closing with no linger threw it away); a client that is gone costs at most this
        self.sock.close(linger=CLOSE_LINGER_MS)


class CaptureOps:
    """The capture operations, mixed into the device host with :class:`fabric.host.ops.HostOps`."""

    _capture_ids = itertools.count(1)

    def _add_capture(self, sid, session) -> None:
        if self.capture is None:
            self.capture = Taps()
        self.capture.sessions[sid] = session

    def end_capture(self, sid):
        """Stop session ``sid``; its last statistics (None if it was not running)."""
        taps = self.capture
        session = taps.sessions.pop(sid, None) if taps is not None else None
        if taps is not None and not taps.sessions:
            self.capture = None  # back to one `is not None` test per burst
        if session is None:
            return None
        stats = session.stats() if isinstance(session, StreamSession) else None
        session.close()
        return stats

    def _stream(self, session: int) -> StreamSession:
        s = self.capture.sessions.get(session) if self.capture is not None else None
        if not isinstance(s, StreamSession):
            raise RpcError(f"no capture session {session} on host {self.index} (ended, or its lease of "
                           f"{LEASE_S:g} s ran out)")
        return s

    # -- Fabric.capture: one ERF file per host --------------------------------------------------

    def op_capture_start(self, env, now, path: str):
        self.end_capture("erf")
        self._add_capture("erf", ErfSession(f"{path}.host{self.index}"))
        return True

    def op_capture_stop(self, env, now):
        self.end_capture("erf")
        return True

    # -- ibfab capture: live streams ------------------------------------------------------------

    def op_capture_open(self, env, now, endpoint: str, ends: list | None = None):
        """Stream the bursts leaving the link ends ``ends`` (``[[device, port], ...]``; None: all
        of them) to the PULL socket bound at ``endpoint`` (ipc://). Under a lease of LEASE_S:
        renew it with ``capture_poll``."""
        if not endpoint.startswith("ipc://") or len(endpoint) > 110:
            raise RpcError(f"capture endpoint {endpoint!r}: an ipc:// path of at most 104 characters")
        if ends is not None:
            if len(ends) > MAX_ENDS:
                raise RpcError(f"a capture names at most {MAX_ENDS} link ends")
            for e in ends:
                if (type(e) not in (list, tuple) or len(e) != 2 or type(e[0]) is not str or type(e[1]) is not int
                        or not 0 <= e[1] <= 254):
                    raise RpcError(f"link end {e!r}: expected [device, port]")
            ends = [(d, p) for d, p in ends if d in self.devices]
        sid = next(self._capture_ids)
        self._add_capture(sid, StreamSession(self, sid, endpoint, ends, now))
        return {"session": sid, "host": self.index, "lease": LEASE_S}

    def op_capture_poll(self, env, now, session: int):
        """Renew a live capture's lease; what it sent and dropped so far."""
        s = self._stream(session)
        s.renew(now)
        return s.stats()

    def op_capture_close(self, env, now, session: int):
        """End a live capture; what it sent (the client waits for that many messages) and dropped."""
        self._stream(session)
        return self.end_capture(session)

    def op_capture_list(self, env, now):
        """The live captures running on this host, with the seconds left on their leases."""
        taps = self.capture
        return [dict(s.stats(), endpoint=s.endpoint, lease_left=s.lease.expires - now)
                for s in (taps.sessions.values() if taps is not None else ()) if isinstance(s, StreamSession)]
