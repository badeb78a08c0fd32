"""SMP request engine (sans-IO): a window of outstanding SMPs, TIDs, timeouts, retries.

The SM and the diagnostic tools issue thousands of SMPs per sweep; they keep up to ``window`` in
flight and continue from callbacks. Time is an input: ``tick(now)`` expires requests, and
``next_deadline()`` tells the caller when to call it again. Output is a list of actions.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from .. import wire as w


@dataclass(frozen=True)
class SendSmp:
    """Action: put this SMP on the wire from the SM's port (LID-routed ones go to ``dlid``)."""

    smp: object
    dlid: int | None = None


class _Req:
    __slots__ = ("smp", "dlid", "done", "deadline", "tries")

    def __init__(self, smp, dlid, done):
        self.smp, self.dlid, self.done = smp, dlid, done
        self.deadline = 0.0
        self.tries = 0


class RequestEngine:
    def __init__(self, *, window: int = 128, timeout: float = 0.25, retries: int = 3, tid_base: int = 0):
        self.window = window
        self.timeout = timeout
        self.retries = retries
        self._tids = itertools.count((tid_base & 0xFFFFFFFF) << 32 | 1)
        self.queue: deque = deque()
        self.outstanding: dict = {}
        self.sent = 0
        self.timeouts = 0
        self.failed = 0
        self.mismatched = 0  # responses whose TID matched but class/attribute/modifier did not
        self.idle_callbacks: list = []

    # -- requests ------------------------------------------------------------------------------

    def request(self, smp, done, dlid: int | None = None) -> None:
        """Queue ``smp``; ``done(response_or_None)`` runs when it is answered or given up on."""
        self.queue.append(_Req(smp, dlid, done))

    def dr_get(self, attr_id: int, path, done, attr_mod: int = 0, m_key: int = 0) -> None:
        self.request(dr_smp(w.GET, attr_id, path, attr_mod=attr_mod, m_key=m_key), done)

    def dr_set(self, attr_id: int, path, attr, done, attr_mod: int = 0, m_key: int = 0) -> None:
        self.request(dr_smp(w.SET, attr_id, path, attr, attr_mod=attr_mod, m_key=m_key), done)

    @property
    def busy(self) -> bool:
        return bool(self.queue or self.outstanding)

    def when_idle(self, callback) -> None:
        """Run ``callback()`` once nothing is queued or outstanding (a phase barrier)."""
        self.idle_callbacks.append(callback)

    # -- I/O -----------------------------------------------------------------------------------

    def pump(self, now: float) -> list:
        out = []
        while True:
            while self.queue and len(self.outstanding) < self.window:
                req = self.queue.popleft()
                out.append(self._send(req, now))
            if self.outstanding or self.queue or not self.idle_callbacks:
                return out
            callbacks, self.idle_callbacks = self.idle_callbacks, []
            for cb in callbacks:
                cb()

    def _send(self, req: _Req, now: float) -> SendSmp:
        tid = next(self._tids) & 0xFFFFFFFFFFFFFFFF
        req.smp = req.smp.replace(tid=tid)
        req.deadline = now + self.timeout
        req.tries += 1
        self.outstanding[tid] = req
        self.sent += 1
        return SendSmp(req.smp, req.dlid)

    def on_response(self, mad, now: float) -> list:
        """A GetResp arrived; returns the SMPs to send next. Unknown TIDs are ignored."""
        req = self.outstanding.get(mad.tid)
        if req is None:
            return self.pump(now)
        q = req.smp
        if (mad.mgmt_class, mad.attr_id, mad.attr_mod) != (q.mgmt_class, q.attr_id, q.attr_mod):
            # not an answer to this request (IBA 13.4.6.1: a response carries the request's class,
            # attribute and modifier): ignore it and keep waiting for the real one
            self.mismatched += 1
            return []
        del self.outstanding[mad.tid]
        req.done(mad)
        return self.pump(now)

    # Every request's deadline is its send time plus the one timeout, and ``outstanding`` keeps
    # insertion order: the first entry expires first. The engine's cost per pass does not grow
    # with its window (a sweep asks for the next deadline after every SMP).

    def tick(self, now: float) -> list:
        expired = []
        for tid, req in self.outstanding.items():
            if req.deadline > now:
                break
            expired.append(tid)
        for tid in expired:
            req = self.outstanding.pop(tid)
            self.timeouts += 1
            if req.tries <= self.retries:
                self.queue.appendleft(req)
            else:
                self.failed += 1
                req.done(None)
        return self.pump(now)

    def next_deadline(self):
        for req in self.outstanding.values():
            return req.deadline
        return None


def dr_smp(method: int, attr_id: int, path, attr=None, *, attr_mod: int = 0, m_key: int = 0):
    """A directed-route SMP along ``path`` (exit ports, starting at the SM's node)."""
    ipath = bytes([0, *path]).ljust(64, b"\0")
    return w.new_mad(w.SMPDirected, method=method, attr_id=attr_id, attr_mod=attr_mod, hop_cnt=len(path),
                     dr_slid=w.LID_PERMISSIVE, dr_dlid=w.LID_PERMISSIVE, initial_path=ipath, m_key=m_key,
                     data=w.put_attr(attr, 64) if attr is not None else bytes(64))


def ok(resp) -> bool:
    return resp is not None and resp.status == 0
