"""ZeroMQ CURVE keys of a fabric that spans machines (``ibfab up --machines``).

Each such fabric gets its own two key pairs at ``up``: the servers' (every device host's ingress
PULL and control ROUTER) and the clients' (every PUSH toward a peer host and every RPC client).
They live in ``RUN_DIR/curve.keys`` (mode 0600) on every machine of the fabric; a host admits a
connection only when the client proves the fabric's client key (fabric.host.zap). There is no
plaintext fallback: a host with a tcp:// endpoint and no keys does not start.

Local fabrics (ipc:// in a private run directory) have no keys: the directory's mode is their
protection.
"""

from __future__ import annotations

import json
import os

import zmq

KEYS_FILE = "curve.keys"


class CurveKeys:
    def __init__(self, server_public: bytes, server_secret: bytes, client_public: bytes, client_secret: bytes):
        self.server_public, self.server_secret = server_public, server_secret
        self.client_public, self.client_secret = client_public, client_secret

    @classmethod
    def generate(cls) -> "CurveKeys":
        return cls(*zmq.curve_keypair(), *zmq.curve_keypair())

    def to_json(self) -> str:
        return json.dumps({k: getattr(self, k).decode() for k in
                           ("server_public", "server_secret", "client_public", "client_secret")})

    @classmethod
    def from_json(cls, text: str) -> "CurveKeys":
        d = json.loads(text)
        return cls(*(d[k].encode() for k in ("server_public", "server_secret", "client_public", "client_secret")))

    def client(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the fabric's hosts (before it connects)."""
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.client_public
        sock.curve_secretkey = self.client_secret

    def server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server (before it binds); the ZAP handler decides who gets in."""
        sock.curve_server = True
        sock.curve_secretkey = self.server_secret
        sock.zap_domain = b"ibfab"


def write_keys(run_dir: str, keys: CurveKeys) -> str:
    """``RUN_DIR/curve.keys``, created 0600 (never readable by others, not even for an instant)."""
    path = os.path.join(run_dir, KEYS_FILE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(keys.to_json())
    os.chmod(path, 0o600)
    return path


def read_keys(run_dir: str) -> CurveKeys | None:
    path = os.path.join(run_dir, KEYS_FILE)
    try:
        with open(path) as f:
            return CurveKeys.from_json(f.read())
    except FileNotFoundError:
        return None


# The keys of each tcp:// control endpoint this process learnt (RunInfo.control registers them),
# so that every RpcClient made for it, wherever in the code, speaks CURVE.
_BY_ENDPOINT: dict = {}


def register(endpoint: str, keys: CurveKeys) -> None:
    _BY_ENDPOINT[endpoint] = keys


def keys_for(endpoint: str) -> CurveKeys | None:
    return _BY_ENDPOINT.get(endpoint)
