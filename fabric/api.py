"""The Python API: ``with Fabric(topology) as fab:`` launches a fabric and tears it down.

    from fabric import Fabric
    with Fabric("fattree:2,2,4,1") as fab:
        print(fab.devices()["node0001"]["ports"])
        fab.nodes["node0001"].ping("node0002")     # what IPoIB, the default node software, adds
        fab.link_down("leaf01", 5)

``topology`` is a topology file, a generator spec (``single:4``, ``linear:3``,
``fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS``), a :class:`fabric.topology.Topology`, or a
:class:`fabric.Topo` written in Python (an instance, or a subclass that takes no arguments).
``progress`` is called as the launch goes (:func:`fabric.launcher.up`).
``machines`` (a machines file, or a list of its lines, ``"host[:port] [addr=ADDRESS]"``) runs the
device hosts on those machines (``docs/multimachine.md``).
``node_software`` names what runs on the HCAs (:mod:`fabric.plugins`; ``"none"`` for bare HCAs);
other keyword arguments are its settings (IPoIB's: ``tx_queues``, ``rx_queues``, ``addresses``).
``fab.nodes[name]`` is an :class:`HcaNode`, or the node software's subclass of it.
"""

from __future__ import annotations

import contextlib
import itertools
import os

from . import launcher, plugins, smctl
from .topology import load_topology
from .wire import parse_mad

_names = itertools.count(1)


class Fabric:
    def __init__(self, topology, *, name: str | None = None, hosts: int | None = None, timeout: float = 120.0,
                 sm=True, sm_config: dict | None = None, sm_args=(), node_software: str | None = None,
                 progress=None, machines=None, **node_config):
        self.topology = load_topology(topology)
        self.sm = launcher.sm_kind(sm)  # "ours" (True), "opensm", "none" (False)
        self.sm_config = sm_config
        self.sm_args = tuple(sm_args)
        # the default software (IPoIB) needs an SM (SA joins, paths): without one, bare HCAs
        self.node_software = node_software or (plugins.DEFAULT if self.sm != "none" else plugins.NONE)
        self.node_config = launcher.check_node_config(self.node_software, node_config)
        self.name = name or f"py{os.getpid()}-{next(_names)}"
        self.hosts = hosts
        self.timeout = timeout
        self.progress = progress
        self.machines = machines
        self.info = None
        self.client: launcher.FabricClient | None = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> "Fabric":
        self.info = launcher.up(self.topology, self.name, hosts=self.hosts, timeout=self.timeout, sm=self.sm,
                                sm_config=self.sm_config, sm_args=self.sm_args, node_software=self.node_software,
                                node_config=self.node_config, progress=self.progress, machines=self.machines)
        self.client = launcher.FabricClient(self.name)
        software = plugins.node_software(self.node_software)
        node_class = software.node_class if software is not None else HcaNode
        self.nodes = {n.name: node_class(self, n.name) for n in self.topology.hcas()}
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
    def capture(self, path, interfaces=()):
        """Capture every packet put on any link while the block runs, which Wireshark and tshark
        read: into one ERF file (time-ordered), or, for a path ending in ``.pcapng``, into pcapng
        with one interface per link end, as ``ibfab capture`` writes it (``interfaces``: what its
        ``-i`` takes, ``"node0001"`` or ``"leaf01:3"``)::

            with fab.capture("x.erf"):
                fab.nodes["node0001"].ping("node0002")
        """
        path = os.fspath(path)
        if path.endswith(".pcapng"):
            with self._capture_pcapng(path, interfaces):
                yield path
            return
        if interfaces:
            raise ValueError("an ERF capture takes every link: capture into a .pcapng to choose interfaces")
        from .capture import ErfWriter, read_erf

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

    @contextlib.contextmanager
    def _capture_pcapng(self, path: str, interfaces):
        from . import names
        from .livecapture import CaptureThread, describe, link_ends, parse_spec
        from .pcapng import PcapngWriter

        selected = [parse_spec(i) for i in interfaces]
        ends = link_ends(self.topology, [(names.resolve(self.topology, d, fabric=self.name), p) for d, p in selected])
        with PcapngWriter(path) as writer:
            writer.descriptions = describe(self.topology)
            pump = CaptureThread(self.name, writer, ends)
            pump.start()
            try:
                yield
            finally:
                pump.finish()

    def restart_sm(self, node: str | None = None, port: int | None = None, *, timeout: float = 60.0) -> dict:
        """Stop the SM and start a new one (on ``node``:``port``, default where it ran). Returns
        the new SM's SUBNET UP summary: it keeps the LIDs and sets ClientReregister."""
        sm = self.info.data.get("sm") or {}
        node = node or sm.get("node") or self.topology.sm_node
        port = port or (sm.get("port") if node == sm.get("node") else None) or 1
        return smctl.restart_sm(self.info, node, port, self.sm_config, timeout=timeout)

    def start_standby_sm(self, node: str, port: int = 1, *, priority: int = 0, timeout: float = 10.0) -> dict:
        """One more SM on ``node`` (another host than the master's): it finds the master, stands by,
        and takes over when the master goes. Its status once it stands by."""
        return smctl.start_standby_sm(self.info, node, port, dict(self.sm_config or {}, priority=priority),
                                         timeout=timeout)

    def kill_host(self, index: int) -> int:
        """Fault injection: SIGKILL device host ``index`` (a crash); its pid."""
        return launcher.kill_host(self.info, index)

    def dead_hosts(self) -> list[int]:
        return launcher.dead_hosts(self.info)

    def restart_host(self, index: int, *, timeout: float = 60.0) -> None:
        """Start dead device host ``index`` again with the same devices, GUIDs and cables; the SM
        gives its ports their old LIDs."""
        self.info = launcher.restart_host(self.name, index, timeout=timeout)
        self.client.info = self.info

    def sm_status(self) -> dict | None:
        return smctl.sm_status(self.info)

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


class HcaNode:
    """One HCA of a running fabric: ``fab.nodes["node0001"]``. Node software extends it (IPoIB's
    adds ``ping``, ``udp_socket``, ``ip``...)."""

    def __init__(self, fab: Fabric, name: str):
        self.fab = fab
        self.name = name

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"

    def _dev(self) -> dict:
        return self.fab.devices()[self.name]

    @property
    def lid(self) -> int:
        return next((p["lid"] for p in self._dev()["ports"] if p["lid"]), 0)

    @property
    def gid(self) -> str:
        port = next((p for p in self._dev()["ports"] if p["cabled"]), None)
        return f"fe80::{port['guid']:016x}" if port else ""

    def counters(self, port: int = 1) -> dict:
        return self.fab.counters(self.name, port)
