"""SMP request engine (sans-IO): a window of outstanding SMPs, TIDs, timeouts, retries.

The SM and the diagnostic tools issue thousands of SMPs per sweep; they keep up to ``window`` in
flight and continue from callbacks. Time is an input: ``tick(now)`` expires requests, and
``next_deadline()`` tells the caller when to call it again. Output is a list of actions.

A request times out after the retransmission timeout TCP uses (RFC 6298): the smoothed round
trip plus four times its variation, never less than ``timeout`` (and, unlike TCP, not doubled for
a retry: an SM must tell a dead node from a slow one within a few tries). On a loaded fabric
(thousands of ports going Active, each starting its IPoIB interface) answers take longer than a
fixed timeout. Every try has a TID of its own, so an answer that comes after its try timed out is
still known: it completes the request (the retry is withdrawn, or its answer ignored) and is a
round-trip sample like any other.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from .. import wire as w


class SendSmp:
    """Action: put this SMP on the wire from the SM's port (LID-routed ones go to ``dlid``).
    ``raw`` is its 256 octets, which the SM's driver sends; ``smp`` the same parsed, made when
    first asked for (the engine builds its requests as octets, from templates)."""

    __slots__ = ("raw", "dlid", "_smp")

    def __init__(self, smp=None, dlid: int | None = None, *, raw: bytes | None = None):
        if raw is None:
            raw = smp.pack()
        self.raw, self.dlid, self._smp = raw, dlid, smp

    @property
    def smp(self):
        if self._smp is None:
            self._smp = w.parse_mad(self.raw)
        return self._smp

    def __repr__(self):
        return f"SendSmp({self.smp!r}, dlid={self.dlid!r})"


MAX_RTO = 4.0  # seconds: the longest a request waits before it is sent again
LATE_KEPT = 4  # windows' worth of timed-out tries whose answers are still taken


class _Req:
    """A request: its MAD's 256 octets (the latest try's TID in them once sent) and the class,
    attribute and modifier its answer must carry."""

    __slots__ = ("raw", "key", "_smp", "dlid", "done", "deadline", "tries", "sent_at", "tid", "finished")

    def __init__(self, raw: bytes, key: tuple, dlid, done, smp=None):
        self.raw, self.key, self._smp, self.dlid, self.done = raw, key, smp, dlid, done
        self.deadline = 0.0
        self.sent_at = 0.0
        self.tries = 0
        self.tid = None  # of the latest try
        self.finished = False  # answered or given up on

    @property
    def smp(self):
        """The request parsed (its latest try's TID once sent)."""
        if self._smp is None or self._smp.tid != int.from_bytes(self.raw[MAD_TID:MAD_TID + 8], "big"):
            self._smp = w.parse_mad(self.raw)
        return self._smp


class RequestEngine:
    def __init__(self, *, window: int = 128, timeout: float = 0.25, retries: int = 3, tid_base: int = 0):
        self.window = window
        self.timeout = timeout  # the least a request waits
        self.retries = retries
        self.srtt: float | None = None  # smoothed round trip of answered tries (each has its own TID)
        self.rttvar = 0.0
        self._deadlines: list = []  # heap of (deadline, tid); entries of answered requests linger
        self._late: dict = {}  # tid of a try that timed out -> (request, its send time), the oldest first
        self.late_answers = 0
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
        self.queue.append(_Req(smp.pack(), (smp.mgmt_class, smp.attr_id, smp.attr_mod), dlid, done, smp))

    def request_octets(self, raw: bytes, done, dlid: int | None = None) -> None:
        """:meth:`request` for a MAD given as its 256 octets (``dr_octets``)."""
        if len(raw) != w.MAD_SIZE:
            raise ValueError(f"a MAD is {w.MAD_SIZE} octets, not {len(raw)}")
        key = (raw[1], int.from_bytes(raw[MAD_ATTR_ID:MAD_ATTR_ID + 2], "big"),
               int.from_bytes(raw[MAD_ATTR_MOD:MAD_ATTR_MOD + 4], "big"))
        self.queue.append(_Req(bytes(raw), key, dlid, done))

    def dr_get(self, attr_id: int, path, done, attr_mod: int = 0, m_key: int = 0) -> None:
        self.request_octets(dr_octets(w.GET, attr_id, path, attr_mod=attr_mod, m_key=m_key), done)

    def dr_set(self, attr_id: int, path, attr, done, attr_mod: int = 0, m_key: int = 0) -> None:
        self.request_octets(dr_octets(w.SET, attr_id, path, attr, attr_mod=attr_mod, m_key=m_key), done)

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
                if not req.finished:  # a late answer to an earlier try may have completed it
                    out.append(self._send(req, now))
            if self.outstanding or self.queue or not self.idle_callbacks:
                return out
            callbacks, self.idle_callbacks = self.idle_callbacks, []
            for cb in callbacks:
                cb()

    @property
    def rto(self) -> float:
        """How long a first try waits for its answer now."""
        if self.srtt is None:
            return self.timeout
        return min(MAX_RTO, max(self.timeout, self.srtt + 4 * self.rttvar))

    def _send(self, req: _Req, now: float) -> SendSmp:
        tid = next(self._tids) & 0xFFFFFFFFFFFFFFFF
        raw = req.raw
        req.raw = raw[:MAD_TID] + tid.to_bytes(8, "big") + raw[MAD_TID + 8:]  # this try's TID
        # no backoff per retry: an SM must tell a dead node (SMInfo polling a master) in a few tries
        req.deadline = now + self.rto
        req.sent_at = now
        req.tries += 1
        req.tid = tid
        self.outstanding[tid] = req
        heapq.heappush(self._deadlines, (req.deadline, tid))
        self.sent += 1
        return SendSmp(dlid=req.dlid, raw=req.raw)

    def _sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar += (abs(self.srtt - rtt) - self.rttvar) / 4
            self.srtt += (rtt - self.srtt) / 8

    def pause(self, seconds: float) -> None:
        """The caller was busy for ``seconds`` (its own computing, not the network's): answers
        that arrived meanwhile are still unread, so every deadline moves by that much."""
        if seconds <= 0 or not (self.outstanding or self._late):
            return
        for req in self.outstanding.values():
            req.deadline += seconds
            req.sent_at += seconds
        self._deadlines = [(d + seconds, tid) for d, tid in self._deadlines]  # order unchanged
        self._late = {tid: (req, t + seconds) for tid, (req, t) in self._late.items()}

    def on_response(self, mad, now: float) -> list:
        """A GetResp arrived; returns the SMPs to send next. Unknown TIDs are ignored."""
        req = self.outstanding.get(mad.tid)
        late = None if req is not None else self._late.get(mad.tid)
        if late is not None:
            req = late[0]
        if req is None:
            return self.pump(now)
        if (mad.mgmt_class, mad.attr_id, mad.attr_mod) != req.key:
            # not an answer to this request (IBA 13.4.6.1: a response carries the request's class,
            # attribute and modifier): ignore it and keep waiting for the real one
            self.mismatched += 1
            return []
        if late is None:
            del self.outstanding[mad.tid]
            sent_at = req.sent_at
        else:
            del self._late[mad.tid]
            sent_at = late[1]
            if req.finished:
                return self.pump(now)  # another try's answer came first
            self.late_answers += 1
            if self.outstanding.get(req.tid) is req:
                del self.outstanding[req.tid]  # the retry in flight is withdrawn (its answer ignored)
        self._sample(max(0.0, now - sent_at))
        req.finished = True
        req.done(mad)
        return self.pump(now)

    def tick(self, now: float) -> list:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, tid = heapq.heappop(heap)
            req = self.outstanding.get(tid)
            if req is None:
                continue  # answered meanwhile (a retry is in the heap under its own TID)
            del self.outstanding[tid]
            self.timeouts += 1
            if req.tries <= self.retries:
                self._late[tid] = (req, req.sent_at)
                if len(self._late) > LATE_KEPT * self.window:
                    del self._late[next(iter(self._late))]
                self.queue.appendleft(req)
            else:
                self.failed += 1
                req.finished = True
                req.done(None)
        return self.pump(now)

    def next_deadline(self):
        heap, out = self._deadlines, self.outstanding
        while heap:
            deadline, tid = heap[0]
            if tid in out:
                return deadline
            heapq.heappop(heap)  # an answered request's entry: drop it now
        return None


def dr_smp(method: int, attr_id: int, path, attr=None, *, attr_mod: int = 0, m_key: int = 0):
    """A directed-route SMP along ``path`` (exit ports, starting at the SM's node)."""
    ipath = bytes([0, *path]).ljust(64, b"\0")
    return w.new_mad(w.SMPDirected, method=method, attr_id=attr_id, attr_mod=attr_mod, hop_cnt=len(path),
                     dr_slid=w.LID_PERMISSIVE, dr_dlid=w.LID_PERMISSIVE, initial_path=ipath, m_key=m_key,
                     data=w.put_attr(attr, 64) if attr is not None else bytes(64))


MAD_TID = w.SMPDirected.offset_of("tid")
MAD_ATTR_ID = w.SMPDirected.offset_of("attr_id")
MAD_ATTR_MOD = w.SMPDirected.offset_of("attr_mod")
_METHOD = w.SMPDirected.offset_of("method")
_HOP_CNT = w.SMPDirected.offset_of("hop_cnt")
_M_KEY = w.SMPDirected.offset_of("m_key")
_DATA = w.SMPDirected.offset_of("data")
_INITIAL_PATH = w.SMPDirected.offset_of("initial_path")
# every directed-route request the SM sends starts as these octets (both DR LIDs permissive)
_DR_TEMPLATE = dr_smp(w.GET, 0, ()).pack()


def dr_octets(method: int, attr_id: int, path, attr=None, *, attr_mod: int = 0, m_key: int = 0) -> bytes:
    """``dr_smp(...).pack()``, patched into a template instead of made field by field (the SM
    sends thousands of these a sweep; tests/test_sm_engine.py holds the two to the same octets)."""
    if not 0 <= len(path) <= 63:
        raise ValueError(f"a directed route has at most 63 hops, not {len(path)}")
    b = bytearray(_DR_TEMPLATE)
    b[_METHOD] = method
    b[_HOP_CNT] = len(path)
    b[MAD_ATTR_ID:MAD_ATTR_ID + 2] = attr_id.to_bytes(2, "big")
    b[MAD_ATTR_MOD:MAD_ATTR_MOD + 4] = attr_mod.to_bytes(4, "big")
    if m_key:
        b[_M_KEY:_M_KEY + 8] = m_key.to_bytes(8, "big")
    b[_INITIAL_PATH + 1:_INITIAL_PATH + 1 + len(path)] = bytes(path)
    if attr is not None:
        data = w.put_attr(attr, 64)
        b[_DATA:_DATA + 64] = data
    return bytes(b)


def ok(resp) -> bool:
    return resp is not None and resp.status == 0
