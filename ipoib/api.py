"""What IPoIB adds to the Python API: ``fab.nodes[name]`` of a fabric running IPoIB (the default node
software) is a :class:`Node`, with the IP host's ``ping``, UDP sockets and interface status::

    with Fabric("fattree:2,2,4,1") as fab:
        fab.nodes["node0001"].ping("node0002", count=3)
        s = fab.nodes["node0002"].udp_socket(5001)
"""

from __future__ import annotations

from fabric.api import HcaNode


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

    def ping(self, dst, *, count: int = 1, interval: float = 0.2, timeout: float = 1.0, size: int = 56,
             ifname: str | None = None) -> dict:
        """ICMP echo from this node; the statistics ping prints (transmitted, received, rtts)."""
        return self.fab.client.call(self.name, "ping", dst=self._addr(dst), count=count, interval=interval,
                                    timeout=timeout, size=size, ifname=ifname)

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
