"""The Python API: ``with Fabric(topology) as fab:`` launches a fabric and tears it down.

    from fabric import Fabric
    with Fabric("fattree:2,2,4,1") as fab:
        print(fab.devices()["node0001"]["ports"])
        fab.link_down("leaf01", 5)

``topology`` is a topology file, a generator spec (``single:4``, ``linear:3``,
``fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS``) or a :class:`fabric.topology.Topology`.
"""

from __future__ import annotations

import itertools
import os

from . import launcher
from .topology import load_topology
from .wire import parse_mad

_names = itertools.count(1)


class Fabric:
    def __init__(self, topology, *, name: str | None = None, hosts: int | None = None, timeout: float = 120.0,
                 sm: bool = True, sm_config: dict | None = None):
        self.topology = load_topology(topology)
        self.sm = sm
        self.sm_config = sm_config
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
                                sm_config=self.sm_config)
        self.client = launcher.FabricClient(self.name)
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
