"""Device host: one OS process running one or many emulated devices in a single ZeroMQ event loop.

    python -m fabric.host RUN_DIR HOST_INDEX

reads ``RUN_DIR/fabric.json`` (written by the launcher), builds the devices assigned to it, binds one
PULL ingress socket per device, connects one PUSH socket per cabled port to the peer's ingress, and
serves msgpack RPC on a ROUTER control socket.

- :mod:`fabric.host.loop`: the event loop, links, link training and timers (:class:`DeviceHost`);
- :mod:`fabric.host.ops`: the RPC operations;
- :mod:`fabric.host.gmp`: QP1 traffic of RPC clients (perfquery, saquery);
- :mod:`fabric.host.__main__`: the process entry point (signals, profiling).
"""

from .loop import DeviceHost  # noqa: F401
from .ops import RpcError  # noqa: F401
