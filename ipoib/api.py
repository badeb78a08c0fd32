"""What IPoIB adds to the Python API: ``fab.nodes[name]`` of a fabric running IPoIB (the default node
software) is a :class:`Node`, with the IP host's ``ping``, UDP sockets and interface status::

    with Fabric("fattree:2,2,4,1") as fab:
        fab.nodes["node0001"].ping("node0002", count=3)
        s = fab.nodes["node0002"].udp_socket(5001)

With ``Fabric(topo, netns=True)`` the kernel is each node's IP host and a node runs programs in its
namespace, as Mininet's hosts do::

    with Fabric("fattree:2,2,4,2", netns=True) as fab:
        print(fab.nodes["node0001"].cmd("ping -c 3 198.18.0.8"))
        srv = fab.nodes["node0008"].popen(["iperf3", "-s", "-1"])
"""

from __future__ import annotations

import re
import shlex
import subprocess

from fabric.api import HcaNode

_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")
_PING_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


class Node(HcaNode):
    """One HCA of a running fabric, as the IPoIB host it carries: ``fab.nodes["node0001"]``."""

    def status(self) -> dict:
        """Interfaces (ib0 and P_Key children) with address, carrier, MTU, neighbours, paths,
        multicast groups and counters, and the IP layer's statistics."""
        return self.fab.client.call(self.name, "ipoib_status")

    def interface(self, ifname: str = "ib0") -> dict:
        for i in self.status()["interfaces"]:
            if i["ifname"] == ifname:
                return i
        raise KeyError(f"{self.name} has no interface {ifname}")

    @property
    def ip(self) -> str:
        return self.interface("ib0")["addr"].split("/")[0]

    def _addr(self, dst) -> str:
        if isinstance(dst, Node):
            return dst.ip
        if dst in self.fab.nodes:
            return self.fab.nodes[dst].ip
        return str(dst)

    @property
    def netns(self) -> str | None:
        """The node's network namespace (a ``netns=True`` fabric), else None."""
        from .software import netns_names

        return netns_names(self.fab.info).get(self.name)

    def _ns_argv(self, argv) -> list[str]:
        from .iphost.netns import exec_argv

        if self.netns is None:
            raise RuntimeError(f"{self.name} has no namespace: start the fabric with netns=True")
        return exec_argv(self.netns, list(argv))

    def popen(self, argv, **kw) -> subprocess.Popen:
        """``subprocess.Popen`` of ``argv`` (a list, or a string split like a shell) in the node's
        namespace; the caller waits for it (or kills it)."""
        return subprocess.Popen(self._ns_argv(shlex.split(argv) if isinstance(argv, str) else argv), **kw)

    def cmd(self, command, *, timeout: float = 60.0, check: bool = False) -> str:
        """Run a shell command in the node's namespace; its stdout and stderr (Mininet's ``h1.cmd``).
        ``check``: raise CalledProcessError on a non-zero exit."""
        r = subprocess.run(self._ns_argv(["sh", "-c", command]), capture_output=True, text=True, timeout=timeout)
        if check:
            r.check_returncode()
        return r.stdout + r.stderr

    def ping(self, dst, *, count: int = 1, interval: float = 0.2, timeout: float = 1.0, size: int = 56,
             ifname: str | None = None) -> dict:
        """ICMP echo from this node; the statistics ping prints (transmitted, received, rtts). In a
        ``netns=True`` fabric this is the kernel's ping(8) in the node's namespace."""
        if self.netns is not None:
            return self._kernel_ping(self._addr(dst), count, interval, timeout, size, ifname)
        return self.fab.client.call(self.name, "ping", dst=self._addr(dst), count=count, interval=interval,
                                    timeout=timeout, size=size, ifname=ifname)

    def _kernel_ping(self, dst, count, interval, timeout, size, ifname) -> dict:
        argv = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(timeout), "-s", str(size)]
        if ifname:
            argv += ["-I", ifname]
        r = subprocess.run(self._ns_argv(argv + [dst]), capture_output=True, text=True,
                           timeout=count * (interval + timeout) + 10)
        m = _PING_SUMMARY.search(r.stdout)
        out = {"transmitted": int(m.group(1)) if m else 0, "received": int(m.group(2)) if m else 0,
               "output": r.stdout + r.stderr, "returncode": r.returncode}
        rtt = _PING_RTT.search(r.stdout)
        if rtt:
            out.update(zip(("rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "rtt_mdev_ms"), map(float, rtt.groups())))
        return out

    def udp_socket(self, port: int = 0, addr: str | None = None) -> "UdpSocket":
        r = self.fab.client.call(self.name, "udp_open", port=port, addr=addr)
        return UdpSocket(self, r["sock"], r["port"])


class UdpSocket:
    def __init__(self, node: Node, sock: int, port: int):
        self.node, self.sock, self.port = node, sock, port

    def _call(self, op, **kw):
        return self.node.fab.client.call(self.node.name, op, sock=self.sock, **kw)

    def sendto(self, data: bytes, dst, port: int | None = None, ifname: str | None = None) -> int:
        """``sendto(data, (ip_or_node, port))`` or ``sendto(data, ip_or_node, port)``."""
        if port is None:
            dst, port = dst
        return self._call("udp_sendto", data=bytes(data), ip=self.node._addr(dst), port=port, ifname=ifname)

    def recv(self, timeout: float = 1.0) -> list:
        """Datagrams received (dicts with data, ip, port); waits up to ``timeout`` for the first."""
        return self._call("udp_recv", timeout=timeout)

    def join(self, group: str, ifname: str | None = None) -> None:
        self._call("udp_join", group=group, ifname=ifname)

    def leave(self, group: str, ifname: str | None = None) -> None:
        self._call("udp_leave", group=group, ifname=ifname)

    def close(self) -> None:
        self._call("udp_close")
