"""Network namespaces for the kernel IP host: create, enter for a moment, list, delete.

Each IPoIB node of a fabric started with ``--netns`` gets a namespace named
``ibf-<fabric>-<node>`` (:func:`name_for`), so that a stale one is recognisable by its name and
``ip netns exec ibf-demo-node0001 ping ...`` works as people expect. Namespaces are made and
removed with iproute2's ``ip netns``, which also keeps ``/run/netns`` as ``ip`` wants it; entering
one is ``setns(2)`` on the calling thread only, through ctypes (Python 3.11 has no
``os.setns``), and always returns to the namespace the thread came from. What is opened inside (a
TUN device, a socket for ioctls, a /proc file) stays in that namespace after the thread leaves.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess

from fabric.libc import libc as _libc

NETNS_DIR = "/run/netns"
PREFIX = "ibf-"
CLONE_NEWNET = 0x40000000
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class NetnsError(OSError):
    """A namespace could not be made, entered or removed; the message says why in one line."""


def name_for(fabric: str, node: str) -> str:
    """``ibf-<fabric>-<node>``, with anything a file name or a shell would trip on replaced."""
    return _SAFE.sub("_", f"{PREFIX}{fabric}-{node}")


def fabric_prefix(fabric: str) -> str:
    return _SAFE.sub("_", f"{PREFIX}{fabric}-")


def check_available() -> None:
    """Raise NetnsError (one line) unless this process can make namespaces and TUN devices."""
    if os.geteuid() != 0:
        raise NetnsError("--netns needs root: network namespaces and TUN devices are root's to make")
    if not os.path.exists("/dev/net/tun"):
        raise NetnsError("--netns needs /dev/net/tun (modprobe tun)")
    if shutil.which("ip") is None:
        raise NetnsError("--netns needs iproute2's ip command (apt-get install iproute2)")
    if not os.path.exists("/proc/self/ns/net"):
        raise NetnsError("--netns needs a kernel with network namespaces")


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip() or 'failed'}")


def ip_in(name: str, *args: str) -> None:
    """``ip -n NAME ARGS``: an iproute2 command on namespace ``name``."""
    _ip("-n", name, *args)


def create(name: str) -> None:
    if os.path.exists(os.path.join(NETNS_DIR, name)):
        raise NetnsError(f"network namespace {name} exists already (left by a fabric that crashed? "
                         f"ibfab down, or ip netns del {name})")
    _ip("netns", "add", name)


def delete(name: str) -> bool:
    """Remove a namespace (what is in it goes with it); False if there was none."""
    if not os.path.exists(os.path.join(NETNS_DIR, name)):
        return False
    _ip("netns", "del", name)
    return True


def list_with_prefix(prefix: str) -> list[str]:
    try:
        return sorted(e for e in os.listdir(NETNS_DIR) if e.startswith(prefix))
    except OSError:
        return []


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise NetnsError(e, f"setns: {os.strerror(e)}")


@contextlib.contextmanager
def entered(name: str):
    """Run the ``with`` body in namespace ``name`` (this thread only), then come back."""
    try:
        target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetnsError(f"network namespace {name}: {exc.strerror}") from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def write_sysctl(path: str, value: str) -> None:
    """Write a /proc/sys/net value as the namespace the thread is in sees it."""
    with open(os.path.join("/proc/sys/net", path), "w") as f:
        f.write(value)


def exec_argv(name: str, argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` inside namespace ``name``."""
    return ["ip", "netns", "exec", name, *argv]
