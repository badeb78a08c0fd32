"""The machines of a fabric that spans several (``ibfab up TOPO --machines FILE``), and how a
command reaches each.

The machines file has one machine a line, ``HOST[:PORT] [addr=ADDRESS] [dir=PATH]``; ``#`` starts
a comment and blank lines are skipped:

- HOST is what the remote command is given (``{host}``): an ssh destination by default, a network
  namespace's name with ``IBFAB_REMOTE="ip netns exec {host}"``.
- PORT is the first of the machine's tcp ports (default 17000): its j-th device host takes
  PORT + 2j (ingress) and PORT + 2j + 1 (control).
- ``addr=`` is the address the other machines (and the launcher) reach it at, and that its hosts
  bind; by default HOST resolved.
- ``dir=`` is its run directory; by default the launcher's run directory with ``/m<k>`` added
  (in the launcher's own run directory when machines share a file system, as namespaces do).

The remote command is ``IBFAB_REMOTE`` (a template with ``{host}``, and ``{cmd}`` where the
command goes as one shell word), default ``ssh -o BatchMode=yes -o ConnectTimeout=10 {host} {cmd}``: the user's own ssh
configuration, keys and ControlMaster apply. A template without ``{cmd}`` gets the command as
arguments to execute (``ip netns exec {host}``), except ssh, which is given one shell word.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import socket
import subprocess
import sys

DEFAULT_PORT = 17000
PORTS_PER_HOST = 2  # ingress, control
DEFAULT_REMOTE = "ssh -o BatchMode=yes -o ConnectTimeout=10 {host} {cmd}"
# what a remote device host must see of the launcher's environment (backends, where the package is)
FORWARDED_ENV = ("PYTHONPATH", "IPOIB_BACKEND", "FABRIC_BACKEND", "IBFAB_CRC", "IBFAB_CSUM")
_HOST = re.compile(r"[A-Za-z0-9_.@][A-Za-z0-9_.@-]*")  # never a leading '-': ssh would read an option


class MachinesError(ValueError):
    pass


def parse_line(text: str, where: str = "") -> dict | None:
    """One machine from a line of the machines file; None for a blank or comment line."""
    text = text.split("#", 1)[0].strip()
    if not text:
        return None
    words = text.split()
    head, fields = words[0], words[1:]
    host, _, port = head.rpartition(":") if ":" in head and not head.startswith("[") else (head, "", "")
    if not _HOST.fullmatch(host or ""):
        raise MachinesError(f"{where}bad machine {head!r}: expected HOST[:PORT] [addr=ADDRESS] [dir=PATH]")
    m = {"name": host, "port": DEFAULT_PORT, "addr": None, "dir": None}
    if port:
        if not port.isdigit() or not 1024 <= int(port) <= 65535 - 2 * 64:
            raise MachinesError(f"{where}bad port {port!r} for {host}: a number in 1024..{65535 - 2 * 64}")
        m["port"] = int(port)
    for f in fields:
        key, eq, value = f.partition("=")
        if not eq or key not in ("addr", "dir") or not value:
            raise MachinesError(f"{where}bad field {f!r} for {host}: addr=ADDRESS or dir=PATH")
        if key == "addr":
            try:
                ipaddress.IPv4Address(value)
            except ValueError:  # the hosts' sockets are IPv4 (ZeroMQ needs an option per socket for IPv6)
                raise MachinesError(f"{where}bad address {value!r} for {host}: an IPv4 address") from None
        if key == "dir" and not os.path.isabs(value):
            raise MachinesError(f"{where}dir={value} for {host}: an absolute path")
        m[key] = value
    return m


def parse(lines, source: str = "machines") -> list[dict]:
    out = []
    for n, line in enumerate(lines, 1):
        m = parse_line(line, f"{source}:{n}: ")
        if m is not None:
            if any(x["name"] == m["name"] for x in out):
                raise MachinesError(f"{source}:{n}: machine {m['name']!r} listed twice")
            out.append(m)
    if not out:
        raise MachinesError(f"{source}: no machines listed")
    return out


def load(path: str) -> list[dict]:
    try:
        with open(path) as f:
            return parse(f, path)
    except OSError as exc:
        raise MachinesError(f"{path}: {exc.strerror}") from None


def normalize(machines) -> list[dict]:
    """``Fabric(topo, machines=...)``: a machines file's name, or a list of its lines, or of dicts
    with the same fields (``name``, ``port``, ``addr``, ``dir``)."""
    if isinstance(machines, (str, os.PathLike)):
        return load(os.fspath(machines))
    lines = []
    for m in machines:
        if isinstance(m, dict):
            m = m["name"] + (f":{m['port']}" if m.get("port") else "") + \
                "".join(f" {k}={m[k]}" for k in ("addr", "dir") if m.get(k))
        lines.append(str(m))
    return parse(lines, "machines")


def resolve(machine: dict) -> str:
    """The address of ``machine`` for tcp:// endpoints: its ``addr=``, or its name resolved."""
    if machine.get("addr"):
        return machine["addr"]
    host = machine["name"].rpartition("@")[2]
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
    except OSError as exc:
        raise MachinesError(f"machine {machine['name']!r}: cannot resolve {host!r} ({exc}); give addr=ADDRESS") \
            from None


def endpoint(addr: str, port: int) -> str:
    return f"tcp://{addr}:{port}"


def remote_argv(machine: str, argv: list[str]) -> list[str]:
    """The command that runs ``argv`` on ``machine`` (IBFAB_REMOTE, see the module's text)."""
    template = os.environ.get("IBFAB_REMOTE") or DEFAULT_REMOTE
    env = [f"{k}={os.environ[k]}" for k in FORWARDED_ENV if os.environ.get(k)]
    cmd = " ".join(shlex.quote(a) for a in (["env", *env] if env else []) + argv)
    words = shlex.split(template)
    if not any("{host}" in w for w in words):
        raise MachinesError(f"IBFAB_REMOTE={template!r} does not say where the machine goes ({{host}})")
    out = []
    for w in words:
        if w == "{cmd}":
            out.append(cmd)
        else:
            out.append(w.replace("{host}", machine))
    if "{cmd}" in words:
        return out
    if os.path.basename(out[0]) == "ssh":
        return out + [cmd]
    return out + ["sh", "-c", "exec " + cmd]


def python() -> str:
    """The interpreter on the machines: IBFAB_REMOTE_PYTHON, or the launcher's own path."""
    return os.environ.get("IBFAB_REMOTE_PYTHON") or sys.executable


def run(machine: str, args: list[str], *, stdin: bytes | None = None, timeout: float = 30.0):
    """``python -m fabric.remote ARGS`` on ``machine``: (exit status, stdout, stderr); status None
    when the machine did not answer within ``timeout`` (it vanished, or its ssh hangs)."""
    argv = remote_argv(machine, [python(), "-m", "fabric.remote", *args])
    try:
        p = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout,
                           stdin=None if stdin is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "", f"no answer within {timeout:.0f} s"
    except OSError as exc:
        return None, "", str(exc)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def start(machine: str, args: list[str], *, stdin: bytes | None = None) -> subprocess.Popen:
    """As :func:`run`, started and not waited for (the launcher starts every machine at once)."""
    argv = remote_argv(machine, [python(), "-m", "fabric.remote", *args])
    return subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
