"""The Python API: ``with Fabric(topology) as fab:`` launches a fabric and tears it down.

    from fabric import Fabric
    with Fabric("fattree:2,2,4,1") as fab:
        print(fab.devices()["node0001"]["ports"])
        fab.link_down("leaf01", 5)

``topology`` is a topology file, a generator spec (``single:4``, ``linear:3``,
``fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS``) or a :class:`fabric.topology.Topology`.
"""

from __future__ import annotations

import contextlib
import itertools
import os

from . import launcher
from .topology import load_topology
from .wire import parse_mad

_names = itertools.count(1)
IPOIB_PLUGIN = "ipoib.hostplugin:attach"  # the software every HCA runs (fabric.host imports it by name)


class Fabric:
    def __init__(self, topology, *, name: str | None = None, hosts: int | None = None, timeout: float = 120.0,
                 sm: bool = True, sm_config: dict | None = None, ipoib: bool | None = None,
                 addresses: dict | None = None, tx_queues: int | None = None, rx_queues: int | None = None):
        self.topology = load_topology(topology)
        self.sm = sm
        self.sm_config = sm_config
        self.ipoib = sm if ipoib is None else ipoib  # IPoIB needs an SM (SA joins, paths)
        self.addresses = addresses
        self.queues = {k: v for k, v in (("tx_queues", tx_queues), ("rx_queues", rx_queues)) if v is not None}
        for k, v in self.queues.items():
            if not isinstance(v, int) or not 1 <= v <= 64:
                raise ValueError(f"{k} must be an int from 1 to 64, not {v!r}")
        self.name = name or f"py{os.getpid()}-{next(_names)}"
        self.hosts = hosts
        self.timeout = timeout
        self.info = None
        self.client: launcher.FabricClient | None = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> "Fabric":
        self.info = launcher.up(self.topology, self.name, hosts=self.hosts, timeout=self.timeout, sm=self.sm,
                                sm_config=self.sm_config,
                                node_software=IPOIB_PLUGIN if self.ipoib else None,
                                node_config=dict(self.queues, **({"addresses": self.addresses} if self.addresses
                                                                 else {})) or None)
        self.client = launcher.FabricClient(self.name)
        self.nodes = {n.name: Node(self, n.name) for n in self.topology.hcas()}
        return self

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        launcher.down(self.name)

    @property
    def up_seconds(self) -> float:
        return self.info.data.get("up_seconds", 0.0)

    # -- inspection and faults -----------------------------------------------------------------

    def devices(self) -> dict:
        return self.client.devices()

    def counters(self, device: str, port: int) -> dict:
        return self.client.call(device, "counters", port=port)

    def link_down(self, device: str, port: int) -> None:
        self.client.call(device, "link", port=port, up=False)

    def link_up(self, device: str, port: int) -> None:
        self.client.call(device, "link", port=port, up=True)

    @contextlib.contextmanager
    def capture(self, path):
        """Capture every packet put on any link while the block runs, into one ERF file
        (time-ordered), which Wireshark and tshark read::

            with fab.capture("x.erf"):
                fab.nodes["node0001"].ping("node0002")
        """
        from .capture import ErfWriter, read_erf

        path = os.fspath(path)
        for c in self.client.clients:
            c.call("capture_start", path=path)
        try:
            yield path
        finally:
            records = []
            for i, c in enumerate(self.client.clients):
                c.call("capture_stop")
                part = f"{path}.host{i}"
                if os.path.exists(part):
                    records += read_erf(part)
                    os.unlink(part)
            records.sort(key=lambda r: r.timestamp)
            with ErfWriter(path) as wr:
                for r in records:
                    wr.write(r.packet, int(r.timestamp * 1e9), interface=r.interface)

    def restart_sm(self, node: str | None = None, port: int | None = None, *, timeout: float = 60.0) -> dict:
        """Stop the SM and start a new one (on ``node``:``port``, default where it ran). Returns
        the new SM's SUBNET UP summary: it keeps the LIDs and sets ClientReregister."""
        import time as _time

        sm = self.info.data.get("sm") or {}
        node = node or sm.get("node") or self.topology.sm_node
        port = port or (sm.get("port") if node == sm.get("node") else None) or 1
        if sm:
            launcher.stop_sm(self.info)
        launcher.start_sm(self.info, node, port, self.sm_config)
        return launcher.wait_subnet_up(self.info, deadline=_time.monotonic() + timeout)

    def sm_status(self) -> dict | None:
        return launcher.sm_status(self.info)

    def pids(self) -> list[int]:
        return [st["pid"] for st in self.client.status()]

    # -- raw access for tests and tools --------------------------------------------------------

    def smp(self, hca: str, smp, *, port: int = 1, dlid: int | None = None, timeout: float = 2.0):
        """Send an SMP from an HCA port as an SM does; the response MAD, or None on timeout."""
        raw = self.client.call(hca, "smp", port=port, smp=smp.pack(), dlid=dlid, timeout=timeout)
        return parse_mad(raw) if raw is not None else None

    def create_qp(self, hca: str, qkey: int, port: int = 1) -> int:
        return self.client.call(hca, "create_qp", qkey=qkey, port=port)

    def attach_mcast(self, hca: str, qpn: int, mgid: bytes, mlid: int) -> None:
        self.client.call(hca, "attach_mcast", qpn=qpn, mgid=mgid, mlid=mlid)

    def post_send(self, hca: str, qpn: int, *, dlid: int, dest_qp: int, payload: bytes, **kw) -> None:
        self.client.call(hca, "post_send", qpn=qpn, dlid=dlid, dest_qp=dest_qp, payload=payload, **kw)

    def poll(self, hca: str, qpn: int, *, max: int = 64, timeout: float = 1.0) -> list:
        """Completions of a QP (dicts); waits up to ``timeout`` for the first."""
        return self.client.call(hca, "poll", qpn=qpn, max=max, timeout=timeout)

    def send_raw(self, device: str, port: int, packet: bytes) -> None:
        """Put arbitrary octets on the link of ``device``:``port`` (for provoking drops)."""
        self.client.call(device, "send_raw", port=port, packet=packet)


class Node:
    """One HCA of a running fabric, as the IPoIB host it carries: ``fab.nodes["node0001"]``."""

    def __init__(self, fab: Fabric, name: str):
        self.fab = fab
        self.name = name

    def __repr__(self):
        return f"<Node {self.name}>"

    def _dev(self) -> dict:
        return self.fab.devices()[self.name]

    @property
    def lid(self) -> int:
        return next((p["lid"] for p in self._dev()["ports"] if p["lid"]), 0)

    @property
    def gid(self) -> str:
        port = next((p for p in self._dev()["ports"] if p["cabled"]), None)
        return f"fe80::{port['guid']:016x}" if port else ""

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

    def counters(self, port: int = 1) -> dict:
        return self.fab.counters(self.name, port)


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
