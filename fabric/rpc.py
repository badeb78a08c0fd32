"""msgpack RPC to the device hosts' control sockets."""

from __future__ import annotations

import itertools
import time

import msgpack
import zmq

from . import zsock


class RpcError(RuntimeError):
    """The host answered with an error, or did not answer in time. Its text is for users as it is;
    ``op`` is the operation, ``kind`` the class of the host's exception (None: no answer)."""

    def __init__(self, text: str, *, op: str | None = None, kind: str | None = None):
        super().__init__(text)
        self.op, self.kind = op, kind


class RpcClient:
    """One DEALER socket to one host. Calls are sequential; a late answer to an earlier call that
    timed out is recognised by its id and discarded."""

    _ids = itertools.count(1)

    def __init__(self, endpoint: str, *, ctx: zmq.Context | None = None, timeout: float = 10.0, curve=None):
        """``curve``: the fabric's :class:`fabric.curve.CurveKeys`; by default those registered for
        ``endpoint`` (``RunInfo.control`` does, for a host on another machine)."""
        from .curve import keys_for

        self.endpoint = endpoint
        self.ctx = ctx or zmq.Context.instance()
        self.timeout = timeout
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        curve = curve or keys_for(endpoint)
        if curve is not None:
            curve.client(self.sock)
        zsock.connect(self.sock, endpoint)

    def call(self, op: str, *, rpc_timeout: float | None = None, **args):
        """Call ``op`` with ``args``. An op that itself waits (a ``timeout`` argument) gets that
        much longer before the call gives up."""
        rid = next(self._ids)
        req = dict(args, op=op, id=rid)
        self.sock.send_multipart([b"", msgpack.packb(req, use_bin_type=True)])
        wait = self.timeout if rpc_timeout is None else rpc_timeout
        if isinstance(args.get("timeout"), (int, float)):
            wait += args["timeout"]
        deadline = time.monotonic() + wait  # absolute: stale replies to earlier calls do not extend it
        while True:
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self.sock.poll(left_ms):
                raise RpcError(f"{self.endpoint}: no answer to {op!r} within {wait:.1f} s", op=op)
            frames = self.sock.recv_multipart()
            body = msgpack.unpackb(frames[-1], raw=False, strict_map_key=False)
            if body.get("id") != rid:
                continue  # the answer to an earlier call that timed out
            if not body.get("ok"):
                raise RpcError(str(body.get("error")), op=op, kind=body.get("kind"))
            return body.get("result")

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
