"""ICMP: echo replies, errors about what we received (RFC 1122 3.2.2), errors about what we sent,
and ping sessions (:class:`PingSession`, iputils ping's behaviour and wording)."""

from __future__ import annotations

import errno as _errno
import math
import os
from typing import TYPE_CHECKING

from fabric.wire.errors import ParseError

from .common import ANY, ICMP_ERROR_MAX, MAX_PING_SIZE, IpError, _addr, _Datagram, _ipstr
from ..inet import (ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_TIME_EXCEEDED, IPPROTO_ICMP,
                   IPPROTO_UDP, build_icmp, build_icmp_echo, parse_icmp)

if TYPE_CHECKING:  # the stack these are mixed into
    from .stack import IpStack

# iputils ping's wording (pr_icmph)
_UNREACH_TEXT = {
    0: "Destination Net Unreachable", 1: "Destination Host Unreachable",
    2: "Destination Protocol Unreachable", 3: "Destination Port Unreachable",
    4: "Frag needed and DF set", 5: "Source Route Failed", 6: "Destination Net Unknown",
    7: "Destination Host Unknown", 8: "Source Host Isolated", 9: "Destination Net Prohibited",
    10: "Destination Host Prohibited", 11: "Destination Net Unreachable for Type of Service",
    12: "Destination Host Unreachable for Type of Service", 13: "Packet filtered",
    14: "Precedence Violation", 15: "Precedence Cutoff",
}
_TIMXCEED_TEXT = {0: "Time to live exceeded", 1: "Frag reassembly time exceeded"}
_ICMP_QUERY_TYPES = frozenset({0, 8, 13, 14, 15, 16, 17, 18})  # not errors: may be answered with one


# -- ping ---------------------------------------------------------------------------------------


class PingSession:
    """One ``ping``: ``count`` echo requests ``interval`` seconds apart, each waited for ``timeout``
    seconds. The first is sent by :meth:`IpStack.ping`, the others by :meth:`IpStack.tick`.

    ``sent``, ``received``, ``duplicates`` (replies to a sequence number already answered),
    ``rtts`` (seconds, in arrival order), ``errors`` (ping's wording, one per failed echo:
    'Destination Host Unreachable', 'Network is down', ...), ``error_details`` ((seq, from_ip or
    None, text) tuples), ``corrupted`` (replies whose data differ from the request's), ``done``.
    """

    def __init__(self, stack: "IpStack", dst: bytes, ident: int, *, count: int, interval: float,
                 timeout: float, size: int, ifname: str | None, ttl: int, start: float,
                 adaptive: bool = False):
        self._stack = stack
        self.adaptive = adaptive  # ping -A: the next request leaves when the last one is answered
        self.dst = _ipstr(dst)
        self._dst = dst
        self.ident = ident
        self.count = count
        self.interval = interval
        self.timeout = timeout
        self.size = size
        self.ifname = ifname
        self.ttl = ttl
        self.started = start
        self.finished: float | None = None
        self.sent = 0
        self.received = 0
        self.duplicates = 0
        self.corrupted = 0
        self.rtts: list[float] = []
        self.replies: list[tuple[int, float, int]] = []  # (icmp_seq, rtt, ttl) in arrival order: ping's lines
        self.errors: list[str] = []
        self.error_details: list[tuple] = []
        self.done = False
        self.data = bytes(i & 0xFF for i in range(size))  # iputils fills the data area with i
        self._sent_at: dict[int, float] = {}
        self._answered: set[int] = set()
        self._failed: set[int] = set()
        self._waiting: set[int] = set()  # sent, neither answered nor failed, not timed out yet
        self._next_send: float | None = start

    def __repr__(self):
        return (f"PingSession({self.dst}, id={self.ident}, sent={self.sent}, received={self.received}, "
                f"errors={len(self.errors)}, done={self.done})")

    # -- driven by the stack --

    def _send(self, now: float) -> None:
        self.sent += 1
        seq = self.sent & 0xFFFF
        self._sent_at[seq] = now
        self._answered.discard(seq)
        self._failed.discard(seq)
        self._waiting.add(seq)
        self._next_send = now + self.interval if self.sent < self.count and not self.adaptive else None
        st = self._stack
        iface = None
        if self.ifname is not None:
            iface = st._ifaces.get(self.ifname)
            if iface is None:
                self._fail(seq, None, "No such device")
                return
        st._snmp["icmp"]["OutMsgs"] += 1
        st._snmp["icmp"]["OutEchos"] += 1
        icmp = build_icmp_echo(self.ident, seq, self.data)
        # ping's default is IP_PMTUDISC_WANT: DF when the datagram fits, fragments when it does not
        out_if = iface or st.route(self._dst)
        fits = out_if is not None and 20 + len(icmp) <= out_if.mtu
        err = st._send_ip(self._dst, IPPROTO_ICMP, icmp, iface=iface, ttl=self.ttl, df=fits)
        if err:
            self._fail(seq, None, _LOCAL_ERROR_TEXT.get(err, os.strerror(err)))

    def _fail(self, seq: int, src: bytes | None, text: str) -> None:
        if seq in self._failed or seq in self._answered:
            return
        self._failed.add(seq)
        self._waiting.discard(seq)
        self._next_after(seq, self._stack._now())
        self.errors.append(text)
        self.error_details.append((seq, _ipstr(src) if src else None, text))

    def _reply(self, seq: int, data: bytes, now: float, ttl: int = 64) -> bool:
        if seq not in self._sent_at:
            return False
        if seq in self._answered:
            self.duplicates += 1
            return True
        self._answered.add(seq)  # late replies (after the timeout) still count, as with ping
        self._waiting.discard(seq)
        self._next_after(seq, now)
        self.received += 1
        self.rtts.append(max(0.0, now - self._sent_at[seq]))
        self.replies.append((seq, self.rtts[-1], ttl))
        if data != self.data:
            self.corrupted += 1
        return True

    def _next_after(self, seq: int, now: float) -> None:
        """ping -A: the latest request is settled (answered, failed or timed out), send the next."""
        if self.adaptive and seq == self.sent & 0xFFFF and self.sent < self.count and not self.done:
            self._next_send = now

    def _deadline(self) -> float | None:
        if self.done:
            return None
        c = [] if self._next_send is None else [self._next_send]
        c += [self._sent_at[s] + self.timeout for s in self._waiting]
        return min(c, default=None)

    def _tick(self, now: float) -> None:
        if self.done:
            return
        if self._next_send is not None and now >= self._next_send and self.sent < self.count:
            self._send(now)
        self._check_done(now)

    def _check_done(self, now: float) -> None:
        if self.done:
            return
        for s in [s for s in self._waiting if now >= self._sent_at[s] + self.timeout]:
            self._waiting.discard(s)
            self._next_after(s, now)
        if self.sent < self.count or self._waiting:
            return
        self.done = True
        self.finished = now
        self._stack._sessions.pop(self.ident, None)

    def cancel(self) -> None:
        """Stop now (^C): nothing more is sent, late replies are no longer counted."""
        if not self.done:
            self.done = True
            self.finished = self._stack._now()
            self._next_send = None
            self._stack._sessions.pop(self.ident, None)

    def summary(self) -> dict:
        """ping's closing statistics. Times in milliseconds like ping prints them; rtt_* are None
        when no reply came. ``packet_loss`` is a percentage of ``transmitted``."""
        end = self.finished if self.finished is not None else self._stack._now()
        out = {
            "destination": self.dst, "transmitted": self.sent, "received": self.received,
            "duplicates": self.duplicates, "corrupted": self.corrupted, "errors": len(self.errors),
            "packet_loss": (100.0 * (self.sent - self.received) / self.sent) if self.sent else 0.0,
            "time_ms": max(0.0, end - self.started) * 1000.0,
            "rtt_min_ms": None, "rtt_avg_ms": None, "rtt_max_ms": None, "rtt_mdev_ms": None,
        }
        if self.rtts:
            ms = [r * 1000.0 for r in self.rtts]
            avg = sum(ms) / len(ms)
            out.update(rtt_min_ms=min(ms), rtt_avg_ms=avg, rtt_max_ms=max(ms),
                       rtt_mdev_ms=math.sqrt(max(0.0, sum(m * m for m in ms) / len(ms) - avg * avg)))
        return out


_LOCAL_ERROR_TEXT = {
    _errno.ENETUNREACH: "Network is unreachable",
    _errno.ENETDOWN: "Network is down",
    _errno.EHOSTUNREACH: "Destination Host Unreachable",
    _errno.EMSGSIZE: "Message too long",
}


class Icmp:
    """The ICMP half of :class:`ipoib.iphost.stack.IpStack` (mixed in)."""


    def _icmp_error(self, d: _Datagram, icmp_type: int, code: int) -> None:
        """Send an ICMP error about ``d`` to its source, unless RFC 1122 3.2.2 forbids it: not
        about a broadcast or multicast datagram, a non-first fragment, an ICMP error, or from a
        source that is not a single host."""
        h = d.hdr
        if d.kind != "local" or h.frag_offset or h.src == ANY:
            return
        if h.src not in self._local and self._martian(h.src, h.dst):  # our own: through the loopback
            return
        if h.proto == IPPROTO_ICMP and (not d.payload or d.payload[0] not in _ICMP_QUERY_TYPES):
            return
        icmp = self._snmp["icmp"]
        icmp["OutMsgs"] += 1
        icmp["OutDestUnreachs" if icmp_type == ICMP_DEST_UNREACH else "OutTimeExcds"] += 1
        orig = (d.head + d.payload)[:ICMP_ERROR_MAX - 20 - 8]
        self._send_ip(h.src, IPPROTO_ICMP, build_icmp(icmp_type, code, orig), src=h.dst, df=False)

    def _icmp_rcv(self, d: _Datagram) -> None:
        icmp = self._snmp["icmp"]
        try:
            ih, body = parse_icmp(d.payload)
        except ParseError as e:
            icmp["InErrors"] += 1
            if e.kind == "icmp_checksum":
                icmp["InCsumErrors"] += 1
            self._frames_drop(d.frames, "icmp_truncated" if e.kind == "truncated" else e.kind)
            return
        icmp["InMsgs"] += 1
        t = ih.type
        if t == ICMP_ECHO_REQUEST:
            icmp["InEchos"] += 1
            if d.kind != "local" and self.icmp_echo_ignore_broadcasts:
                self._frames_drop(d.frames, "echo_broadcast")
                return
            self._frames_ok(d.frames)
            src = d.hdr.dst if d.kind == "local" else d.iface.addr
            reply = build_icmp(ICMP_ECHO_REPLY, ih.code, body, rest=d.payload[4:8])
            icmp["OutMsgs"] += 1
            icmp["OutEchoReps"] += 1
            self._send_ip(d.hdr.src, IPPROTO_ICMP, reply, src=src, df=False)
            return
        if d.kind != "local":  # RFC 1122 3.2.2.6/3.2.2: only echo requests are taken from broadcasts
            self._frames_drop(d.frames, "icmp_broadcast")
            return
        if t == ICMP_ECHO_REPLY:
            icmp["InEchoReps"] += 1
            s = self._sessions.get(ih.ident)
            if s is not None and s._reply(ih.seq, body, self._now(), d.hdr.ttl):
                self._frames_ok(d.frames)
                s._check_done(self._now())
            else:
                self._frames_drop(d.frames, "no_session")
            return
        if t in (ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED):
            icmp["InDestUnreachs" if t == ICMP_DEST_UNREACH else "InTimeExcds"] += 1
            self._icmp_error_rcv(d, t, ih.code, body)
            return
        self._frames_drop(d.frames, "icmp_type")  # timestamps, redirects, ...: ignored

    def _icmp_error_rcv(self, d: _Datagram, t: int, code: int, body: bytes) -> None:
        """An ICMP error: find what of ours it is about in the quoted header and 8 octets."""
        if len(body) < 28 or body[0] >> 4 != 4 or (body[0] & 0xF) < 5 or len(body) < (body[0] & 0xF) * 4 + 8:
            self._snmp["icmp"]["InErrors"] += 1
            self._frames_drop(d.frames, "icmp_format")
            return
        hl = (body[0] & 0xF) * 4
        proto, osrc, odst = body[9], body[12:16], body[16:20]
        first8 = body[hl:hl + 8]
        if t == ICMP_DEST_UNREACH:
            text = _UNREACH_TEXT.get(code, f"Dest Unreachable, Bad Code: {code}")
        else:
            text = _TIMXCEED_TEXT.get(code, f"Time exceeded, Bad Code: {code}")
        if osrc in self._local and proto == IPPROTO_ICMP and first8[0] == ICMP_ECHO_REQUEST:
            s = self._sessions.get(int.from_bytes(first8[4:6], "big"))
            seq = int.from_bytes(first8[6:8], "big")
            if s is not None and seq in s._sent_at:
                s._fail(seq, d.hdr.src, text)
                self._frames_ok(d.frames)
                s._check_done(self._now())
                return
        elif osrc in self._local and proto == IPPROTO_UDP:
            sport, dport = int.from_bytes(first8[0:2], "big"), int.from_bytes(first8[2:4], "big")
            socks = [s for s in self._ports.get(sport, ()) if s.addr in (ANY, osrc)]
            if socks:
                name = {(ICMP_DEST_UNREACH, 3): "ECONNREFUSED", (ICMP_DEST_UNREACH, 4): "EMSGSIZE"}.get(
                    (t, code), "EHOSTUNREACH" if t == ICMP_DEST_UNREACH else "ETIMEDOUT")
                for s in socks:
                    s.errors.append((name, _ipstr(d.hdr.src), (_ipstr(odst), dport)))
                self._frames_ok(d.frames)
                return
        self._frames_drop(d.frames, "icmp_unmatched")

    # -- ICMP echo ---------------------------------------------------------------------------------

    def ping(self, dst, *, count: int = 1, interval: float = 1.0, timeout: float = 1.0, size: int = 56,
             ifname: str | None = None, ttl: int = 64, adaptive: bool = False) -> PingSession:
        """Start a ping: the first echo request leaves now, the others from :meth:`tick`, each
        ``interval`` after the last or, with ``adaptive`` (ping -A), as soon as the last is answered
        (one request outstanding: a request/response latency measurement).
        Raises ValueError for bad arguments and IpError(ENETUNREACH/ENODEV) when nothing could be
        sent at all (``ping: connect: Network is unreachable``); failures of single echoes (carrier
        off, the link refusing, ICMP errors) land in the session's ``errors``."""
        d = _addr(dst)
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count {count!r} must be a positive int")
        if not isinstance(size, int) or not 0 <= size <= MAX_PING_SIZE:
            raise ValueError(f"size {size!r} is not 0..{MAX_PING_SIZE}")
        if not 0 < ttl <= 255:
            raise ValueError(f"ttl {ttl!r} is not 1..255")
        if interval < 0 or timeout < 0:
            raise ValueError("interval and timeout must not be negative")
        if ifname is not None:
            if ifname not in self._ifaces:
                raise IpError(_errno.ENODEV, ifname)
        elif d not in self._local and self.route(d) is None:
            self._no_route()
            raise IpError(_errno.ENETUNREACH, _ipstr(d))
        ident = self._ping_id
        for _ in range(0x10000):
            ident = (ident + 1) & 0xFFFF
            if ident not in self._sessions:
                break
        else:
            raise IpError(_errno.EAGAIN, "every ICMP identifier is in use")
        self._ping_id = ident
        s = PingSession(self, d, ident, count=count, interval=interval, timeout=timeout, size=size,
                        ifname=ifname, ttl=ttl, start=self._now(), adaptive=bool(adaptive))
        self._sessions[ident] = s
        s._send(s.started)
        s._check_done(self._now())
        return s
