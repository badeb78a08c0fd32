"""The sockets of an ibsim-protocol endpoint inside a device host: ``libumad2sim.so`` clients reach
them by the abstract AF_UNIX names ibsim uses, under a base name of their own (``IBSIM_SOCKNAME``)::

    "\\0<base>:ctl"                 control (ours: bound; the client's "\\0<base>:ctl<pid>" talks to it)
    "\\0<base>:out0" .. ":out9"     data, one per client (bound; connected to the client's "\\0<base>:in<pid>")

Every socket is non-blocking and watched by the device host's loop (``add_reader``); an idle
endpoint costs nothing. A client that dies without saying so is noticed when a datagram to it is
refused, or by a liveness check once a second while clients are attached.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket

from . import wire as sw
from .endpoint import SimEndpoint, _simfast

log = logging.getLogger(__name__)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
READ_BUDGET = 64


def sockname_for(fabric: str, node: str) -> str:
    """The ``IBSIM_SOCKNAME`` of ``node``'s endpoint in fabric ``fabric``."""
    return _SAFE.sub("_", f"ibf-{fabric}-{node}")


def _abstract(name: str) -> bytes:
    # the shim counts the terminating NUL of the name into the address: it is part of the name
    return b"\0" + name.encode() + b"\0"


class SimServer:
    """An endpoint on port ``port`` of the HCA ``device`` of ``host`` (a :class:`fabric.host.DeviceHost`)."""

    def __init__(self, host, device: str, port: int, sockname: str):
        self.host, self.device, self.sockname = host, device, sockname
        hca = host.devices[device]
        names = {device, hca.description, hca.description.split()[0] if hca.description.split() else "",
                 f"0x{hca.node_guid:016x}", f"{hca.node_guid:016x}"}
        self.ctl = self._socket(f"{sockname}:ctl")
        self.outs = []
        try:
            for i in range(sw.MAX_CLIENTS):
                self.outs.append(self._socket(f"{sockname}:out{i}"))
        except OSError:
            self._close_sockets()
            raise
        self.endpoint = SimEndpoint(hca, port, names, send=self._send, connect_client=self._connect_client)
        self.dropped = 0
        # the data sockets read and written in C when built (the Python below is the reference)
        self._datagrams = None if _simfast is None else \
            _simfast.Datagrams(self, self.endpoint, [s.fileno() for s in self.outs])
        if self._datagrams is not None:
            self.endpoint.send = self._datagrams.send
        host.add_reader(self.ctl.fileno(), device, self._on_ctl)
        for i, s in enumerate(self.outs):
            host.add_reader(s.fileno(), device, self._datagrams.reader(i) if self._datagrams is not None
                            else lambda now, i=i: self._on_data(i, now))
        self._liveness = _Liveness(self)
        hca.agents.append(self._liveness)

    @staticmethod
    def _socket(name: str) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            s.bind(_abstract(name))
        except OSError as exc:
            s.close()
            if exc.errno == errno.EADDRINUSE:
                raise OSError(exc.errno, f"ibsim socket @{name} is in use (another fabric or ibsim?)") from None
            raise
        return s

    def _connect_client(self, index: int, pid: int) -> bool:
        try:
            self.outs[index].connect(_abstract(f"{self.sockname}:in{pid}"))
            return True
        except OSError:
            return False

    def _send(self, index: int, data: bytes) -> None:
        try:
            self.outs[index].send(data)
        except BlockingIOError:
            self.dropped += 1  # the client does not read: UD semantics, the MAD is lost
        except OSError as exc:  # ECONNREFUSED, ENOTCONN: the client is gone
            self._unreachable(index, exc.errno)

    def _unreachable(self, index: int, err: int) -> None:
        log.info("%s: client %d unreachable (%s): detached", self.device, index, os.strerror(err))
        self.endpoint.detach_index(index)

    def _on_ctl(self, now: float) -> None:
        for _ in range(READ_BUDGET):
            try:
                raw, addr = self.ctl.recvfrom(512)
            except BlockingIOError:
                return
            reply = self.endpoint.on_ctl(raw, now)
            if reply is not None and addr:
                try:
                    self.ctl.sendto(reply, addr)
                except OSError:
                    pass  # the client went away before its answer

    def _on_data(self, index: int, now: float) -> bool:
        """True (a quiet reader: the host sends what it posted on at once, without running the
        node's timers) when no request called into the node's software."""
        quiet = True
        for _ in range(READ_BUDGET):
            try:
                raw = self.outs[index].recv(1024)
            except OSError:  # BlockingIOError: all read
                break
            if not self.endpoint.on_data(index, raw, now):
                quiet = False
        return quiet

    def snapshot(self) -> dict:
        return dict(self.endpoint.snapshot(), sockname=self.sockname, device=self.device, dropped=self.dropped)

    def _close_sockets(self) -> None:
        for s in [self.ctl, *self.outs]:
            s.close()

    def close(self) -> None:
        hca = self.host.devices[self.device]
        if self._liveness in hca.agents:
            hca.agents.remove(self._liveness)
        for s in [self.ctl, *self.outs]:
            self.host.remove_reader(s.fileno())
        self.endpoint.close()
        if self._datagrams is not None:
            self._datagrams.close()
        self._close_sockets()


class _Liveness:
    """An agent of the HCA: once a second while clients are attached, detach those whose process
    is gone (a tool killed before it could say DISCONNECT)."""

    PERIOD = 1.0

    def __init__(self, server: SimServer):
        self.server = server
        self.due = None

    def next_deadline(self):
        if not self.server.endpoint.clients:
            self.due = None
            return None
        return 0.0 if self.due is None else self.due  # the first check at once, then once a second

    def tick(self, now: float) -> None:
        self.due = now + self.PERIOD
        for c in list(self.server.endpoint.clients.values()):
            if not os.path.exists(f"/proc/{c.pid}"):
                self.server.endpoint.detach_index(c.index)
