"""IPoIB as the fabric's node software: what runs on every HCA of a fabric (``ibfab up
--node-software ipoib``, the default) and the RPC operations it serves.

The fabric finds it by name through the ``ibfab.node_software`` entry point (``SOFTWARE`` here, see
:mod:`fabric.plugins`); the fabric package itself never imports IPoIB.
"""

from __future__ import annotations

import ipaddress
import itertools
import time

from fabric.wire import smp_attrs as sa

from . import core as backend_core
from .node import IPoIBNode

QUEUE_KEYS = ("tx_queues", "rx_queues")
# After a node's broadcast join is refused (a partitions.conf without an ipoib partition for its
# P_Key, say), how long ``up`` still waits for the others: the ULP retries, but may never succeed.
JOIN_GRACE_S = 5.0
SETTINGS = QUEUE_KEYS + ("addresses", "netns", "backend", "backends")
BACKENDS = ("std", "fast")


def backend_module(name: str | None):
    """The provider module a node gets: the process's default (None), or ``std`` / ``fast`` by
    name. The two export the same names, so nodes of both kinds share a host (the seeds' case of a
    device whose vendor supplies no acceleration next to one that does)."""
    if name is None:
        return backend_core
    if name == "std":
        from . import _stdpath

        return _stdpath
    try:
        from . import _fastpath
    except ImportError as exc:
        raise ValueError("the fast provider (ipoib._fastpath) is not built: run `make install`") from exc
    return _fastpath


def _hca_names(info) -> list:
    from fabric.topology import load_topology

    return [n.name for n in load_topology(info.topology_path).hcas()]


def netns_names(info, hcas: list | None = None) -> dict:
    """``{HCA name: its network namespace}`` of a fabric run with ``netns`` (else empty); ``hcas``
    when the caller has the topology's HCAs already."""
    if not (info.data.get("node_config") or {}).get("netns"):
        return {}
    from .iphost.netns import name_for

    return {n: name_for(info.name, n) for n in (hcas if hcas is not None else _hca_names(info))}


def _node_backends(v) -> dict:
    """{node: backend} from a dict, or from ``NODE=BACKEND`` strings (``ibfab up --node-backend``)."""
    if isinstance(v, (list, tuple)):
        pairs = {}
        for item in v:
            node, sep, b = str(item).partition("=")
            if not sep or not node:
                raise ValueError(f"a node's backend is NODE=std or NODE=fast, not {item!r}")
            pairs[node] = b
        v = pairs
    if not isinstance(v, dict):
        raise ValueError(f"backends must be {{node: 'std' or 'fast'}}, not {v!r}")
    for node, b in v.items():
        if b not in BACKENDS:
            raise ValueError(f"backend of {node} must be one of {', '.join(BACKENDS)}, not {b!r}")
    return dict(v)


class IPoIBSoftware:
    name = "ipoib"
    description = "IPoIB (ULP and rdma_netdev provider) and the embedded IP host on every HCA"

    def check_config(self, cfg: dict) -> dict:
        """``tx_queues``/``rx_queues`` (1 to 64, like ethtool -L), ``addresses`` ({node: {ifname:
        "ip/prefix"}}), ``netns`` (the kernel as each node's IP host, over a TUN device in a
        namespace of its own; needs root), ``backend`` (``std`` or ``fast``: every node's provider)
        and ``backends`` ({node: ``std`` or ``fast``}, or ``["node=std", ...]``: a node's own);
        anything else is an error."""
        out = {}
        for k, v in cfg.items():
            if v is None:
                continue
            if k in QUEUE_KEYS:
                if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 64:
                    raise ValueError(f"{k} must be an int from 1 to 64, not {v!r}")
            elif k == "addresses":
                if not isinstance(v, dict):
                    raise ValueError(f"addresses must be {{node: {{ifname: 'ip/prefix'}}}}, not {v!r}")
            elif k == "backend":
                if v not in BACKENDS:
                    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {v!r}")
                backend_module(v)  # a clear error now when fast is asked for and not built
            elif k == "backends":
                v = _node_backends(v)
                for b in set(v.values()):
                    backend_module(b)
            elif k == "netns":
                if not isinstance(v, bool):
                    raise ValueError(f"netns must be true or false, not {v!r}")
                if not v:
                    continue
                from .iphost.netns import check_available

                check_available()  # NetnsError is an OSError: one clear line, before anything starts
            else:
                raise ValueError(f"IPoIB has no setting {k!r} (it has {', '.join(SETTINGS)})")
            out[k] = v
        return out

    def check_topology(self, cfg: dict, topology) -> None:
        """What the settings name must be in the topology: a node's backend is for one of its HCAs."""
        hcas = {n.name for n in topology.hcas()}
        unknown = sorted(set(cfg.get("backends") or {}) - hcas)
        if unknown:
            raise ValueError(f"backends: no HCA {', '.join(unknown)} in the topology")

    def attach(self, host) -> None:
        attach(host)

    # what ``ibfab status`` shows as columns of its device lines: (title, key of describe())
    status_columns = (("IP", "addresses"), ("provider", "providers"), ("joined", "joined"))

    def describe(self, info, client=None) -> dict:
        """For ``ibfab status``: each node's namespace, in a --netns fabric, and its provider;
        with ``client`` (a :class:`fabric.launcher.FabricClient`), also each live node's ib0
        address and whether it joined its broadcast group (``joined``), and how many did
        (``status_line``)."""
        hcas = _hca_names(info)  # the topology, read once
        names = netns_names(info, hcas)
        out = {"namespaces": names} if names else {}
        cfg = info.data.get("node_config") or {}
        default = cfg.get("backend") or backend_core.BACKEND
        out["providers"] = {n: (cfg.get("backends") or {}).get(n, default) for n in hcas}
        if client is not None:
            from fabric.launcher import ask_live_host

            ib0 = {}
            for i, c in enumerate(client.clients):
                ib0.update(ask_live_host(info, i, "ipoib_summary", c) or {})
            out["addresses"] = {n: ib0[n]["addr"] for n in hcas if n in ib0 and ib0[n]["addr"]}
            out["joined"] = {n: ib0[n]["carrier"] for n in hcas if n in ib0}
            out["status_line"] = (f"IPoIB: {sum(out['joined'].values())}/{len(hcas)} ib0 joined the broadcast "
                                  f"group")
        return out

    def wait_ready(self, info, *, deadline: float, progress=None) -> int:
        """After SUBNET UP (``ibfab up``): wait until every node's ib0 has joined its broadcast
        group (its carrier is on), reporting "IPoIB joins" n/N to ``progress``. A refused join
        is retried by the ULP and may never succeed, so once one was refused the wait ends
        JOIN_GRACE_S later; it never fails the launch. Only nodes whose IPoIB port is Active can
        join (an HCA without a cable, or on a port the SM left down, is not waited for). The number
        of nodes joined."""
        from fabric.rpc import RpcClient

        clients = [RpcClient(info.control(i), timeout=5.0) for i in range(len(info.hosts))]
        refused_at = None
        joined = total = 0
        try:
            while True:
                ib0 = {}
                for c in clients:
                    ib0.update(c.call("ipoib_summary"))
                total = sum(1 for s in ib0.values() if s.get("active"))
                joined = sum(1 for s in ib0.values() if s["carrier"])
                now = time.monotonic()
                if refused_at is None and any(s["join_failures"] and not s["carrier"] for s in ib0.values()):
                    refused_at = now
                if joined >= total or now > deadline or (refused_at is not None and now - refused_at > JOIN_GRACE_S):
                    break
                if progress is not None:
                    progress("IPoIB joins", joined, total, False)
                time.sleep(0.02)
        finally:
            for c in clients:
                c.close()
        if progress is not None:
            progress("IPoIB joins", joined, total, True)
        return joined

    def cleanup(self, info, devices=None) -> None:
        """The namespaces of a fabric run with ``netns`` (of ``devices`` only, when given: a host
        restarting), also after its hosts were killed."""
        from .iphost import netns

        for dev, name in netns_names(info).items():
            if devices is None or dev in devices:
                netns.delete(name)

    @property
    def node_class(self):
        from .api import Node

        return Node

    def demo_packets(self) -> list:
        from .demo_capture import demo_packets

        return demo_packets()

    def demo(self, fc, info, args) -> bool:
        from .cli import demo_traffic

        return demo_traffic(fc, info, args)


SOFTWARE = IPoIBSoftware()


def _kernel_host(host, ns: str, device: str):
    """A namespace for ``device`` and the kernel in it as the node's IP host; the host removes the
    namespace when it stops (``ibfab down`` does too, if the host was killed)."""
    from .iphost import netns
    from .iphost.kernel import KernelHost

    netns.create(ns)

    def close():
        kh.close()
        netns.delete(ns)

    try:
        kh = KernelHost(ns, add_reader=lambda fd, fn: host.add_reader(fd, device, fn),
                        remove_reader=host.remove_reader)
    except BaseException:
        netns.delete(ns)
        raise
    host.add_closer(close)
    return kh


def attach(host) -> None:
    """An IPoIB node on every HCA of ``host`` (a :class:`fabric.host.DeviceHost`), and its RPC
    operations."""
    cfg = host.node_config
    hca_order = [n.name for n in host.topology.hcas()]
    namespaces = netns_names(host.info)
    nodes = {}
    for name, dev in host.devices.items():
        if dev.kind != "hca":
            continue
        iphost = _kernel_host(host, namespaces[name], name) if name in namespaces else None
        backend = backend_module((cfg.get("backends") or {}).get(name) or cfg.get("backend"))
        nodes[name] = IPoIBNode(dev, hca_order.index(name), clock=time.monotonic, backend=backend,
                                addresses=(cfg.get("addresses") or {}).get(name),
                                tx_queues=cfg.get("tx_queues"), rx_queues=cfg.get("rx_queues"), iphost=iphost)
    host.ipoib_nodes = nodes
    sockets: dict = {}
    ids = itertools.count(1)

    def node(device):
        n = nodes.get(device)
        if n is None:
            raise KeyError(f"no IPoIB node {device!r} on this host")
        return n

    def embedded(device):
        """The node's embedded IP stack; a clear error when the kernel is its IP host."""
        n = node(device)
        if device in namespaces:
            raise ValueError(f"{device} runs the kernel's IP stack (--netns): use its own tools, "
                             f"e.g. ibfab exec {device} -- ping ...")
        return n

    BLOCKING_MAX_S = 600  # what one call may wait for; longer runs stream (ping_start, perf_start)

    def _need(ok, text):
        if not ok:
            raise ValueError(text)

    def op_ipoib_status(env, now, device: str):
        return node(device).snapshot()

    def op_ipoib_summary(env, now):
        """Every node of this host in one answer, cheap enough to poll: its ib0's address, carrier
        (the broadcast group joined) and refused joins."""
        out = {}
        for name, n in nodes.items():
            ifc = n.ifs.get("ib0")
            port = n.hca.ports.get(n.port)
            active = port is not None and port.state == sa.PORT_ACTIVE
            if ifc is None:
                out[name] = {"addr": None, "carrier": False, "join_failures": 0, "active": active}
                continue
            out[name] = {"addr": f"{ipaddress.IPv4Address(ifc.ip[0])}/{ifc.ip[1]}" if ifc.ip else None,
                         "carrier": bool(ifc.carrier), "join_failures": ifc.stats.get("join_failures", 0),
                         "active": active}
        return out

    def op_ipoib_flush_neigh(env, now, device: str):
        """ip neigh flush: forget every neighbour (the next packet to one resolves it again)."""
        n = 0
        for ifc in node(device).ifs.values():
            n += len(ifc.neigh)
            ifc.neigh.clear()
        return n

    def op_ping(env, now, device: str, dst: str, count: int = 1, interval: float = 0.2, timeout: float = 1.0,
                size: int = 56, ifname: str | None = None, adaptive: bool = False):
        wait = count * (interval + (timeout if adaptive else 0.0)) + timeout + 1.0
        _need(wait <= BLOCKING_MAX_S, f"a ping of {wait:.0f} s is too long to wait for in one call "
                                      f"(at most {BLOCKING_MAX_S} s): stream it with ping_start")
        sess = embedded(device).ip.ping(dst, count=int(count), interval=float(interval), timeout=float(timeout),
                                    size=int(size), ifname=ifname, adaptive=bool(adaptive))
        def check():
            if not sess.done:
                return None
            return dict(sess.summary(), replies=list(getattr(sess, "replies", [])),
                        error_texts=list(sess.errors))

        return host.defer(env, now, wait, check, None)

    pings: dict = {}

    def _drop_ping(pid):
        e = pings.pop(pid, None)
        if e is not None:
            e[0].cancel()
            e[1].release()

    def op_ping_start(env, now, device: str, dst: str, count: int = 1, interval: float = 1.0, timeout: float = 1.0,
                      size: int = 56, ifname: str | None = None, ttl: int = 64):
        """ping, streamed: ``ping_poll`` gives what came since the last poll, ``ping_stop`` is ^C.
        Under a lease: a client that stops polling for LEASE_S has its ping cancelled."""
        from fabric.host.lease import Lease

        n = embedded(device)
        sess = n.ip.ping(dst, count=int(count), interval=float(interval), timeout=float(timeout), size=int(size),
                         ifname=ifname, ttl=int(ttl))
        pid = next(ids)
        pings[pid] = (sess, Lease(n.hca, lambda: _drop_ping(pid), now), [0, 0])
        return pid

    def _ping_news(pid, now):
        e = pings.get(pid)
        if e is None:
            raise KeyError(f"no ping {pid!r} (finished and collected, or its client went away)")
        sess, lease, seen = e
        lease.renew(now)
        out = {"replies": sess.replies[seen[0]:], "errors": [list(x) for x in sess.error_details[seen[1]:]],
               "done": sess.done}
        seen[0], seen[1] = len(sess.replies), len(sess.error_details)
        return sess, out

    def op_ping_poll(env, now, device: str, ping: int):
        sess, out = _ping_news(ping, now)
        if sess.done:
            out["summary"] = sess.summary()
            _drop_ping(ping)
        return out

    def op_ping_stop(env, now, device: str, ping: int):
        if ping not in pings:
            return None
        sess, out = _ping_news(ping, now)
        sess.cancel()
        out["done"] = True
        out["summary"] = sess.summary()
        _drop_ping(ping)
        return out

    def op_udp_open(env, now, device: str, port: int = 0, addr: str | None = None):
        _need(0 <= port <= 65535, f"port {port} is not 0..65535")
        s = embedded(device).ip.udp_socket()
        s.bind(int(port), addr)
        sid = next(ids)
        sockets[sid] = (device, s)
        return {"sock": sid, "port": s.port}

    def _sock(sid, device):
        entry = sockets.get(sid)
        if entry is None or entry[0] != device:
            raise KeyError(f"no socket {sid} on {device}")
        return entry[1]

    def op_udp_sendto(env, now, device: str, sock: int, data: bytes, ip: str, port: int, ifname: str | None = None):
        _need(1 <= port <= 65535, f"port {port} is not 1..65535")
        _need(len(data) <= 65507, f"a UDP datagram holds 65507 octets at most, not {len(data)}")
        return _sock(sock, device).sendto(bytes(data), (ip, int(port)), ifname=ifname)

    def op_udp_recv(env, now, device: str, sock: int, timeout: float = 1.0, max: int = 64):
        _need(0 <= timeout <= 3600 and 1 <= max <= 65536, "timeout must be 0..3600 s and max 1..65536")
        s = _sock(sock, device)

        def check():
            got = []
            while len(got) < max:
                d = s.recvfrom()
                if d is None:
                    break
                got.append({"data": d[0], "ip": d[1][0], "port": d[1][1]})
            return got or None

        return host.defer(env, now, float(timeout), check, [])

    def op_udp_join(env, now, device: str, sock: int, group: str, ifname: str | None = None):
        _sock(sock, device).join_group(group, ifname=ifname)
        return True

    def op_udp_leave(env, now, device: str, sock: int, group: str, ifname: str | None = None):
        _sock(sock, device).leave_group(group, ifname=ifname)
        return True

    def op_udp_close(env, now, device: str, sock: int):
        _sock(sock, device).close()
        del sockets[sock]
        return True

    def op_ipoib_coalesce(env, now, device: str, ifname: str = "ib0", rx_usecs: int | None = None,
                          rx_frames: int | None = None, adaptive: bool | None = None):
        """ethtool -c (no values) / -C (some values) on one interface."""
        ifc = node(device).ifs.get(ifname)
        if ifc is None:
            raise KeyError(f"{device} has no interface {ifname!r}")
        if rx_usecs is None and rx_frames is None and adaptive is None:
            return ifc.netdev.get_coalesce()
        return ifc.netdev.set_coalesce(rx_usecs, rx_frames, adaptive)

    def op_ipoib_features(env, now, device: str, ifname: str = "ib0", gro: bool | None = None,
                          rx_flow_hash_udp4: str | None = None, tso: bool | None = None, uso: bool | None = None,
                          tx_checksum: bool | None = None):
        """ethtool -k (no values) / -K, -N (some values) on one interface."""
        ifc = node(device).ifs.get(ifname)
        if ifc is None:
            raise KeyError(f"{device} has no interface {ifname!r}")
        if (gro, rx_flow_hash_udp4, tso, uso, tx_checksum) == (None,) * 5:
            return ifc.netdev.get_features()
        return ifc.netdev.set_features(gro, rx_flow_hash_udp4, tso, uso, tx_checksum)

    for fn in (op_ipoib_status, op_ipoib_summary, op_ipoib_flush_neigh, op_ipoib_coalesce, op_ipoib_features, op_ping, op_ping_start, op_ping_poll,
               op_ping_stop, op_udp_open, op_udp_sendto,
               op_udp_recv, op_udp_join, op_udp_leave, op_udp_close):
        host.add_op(fn.__name__[3:], fn)
    from .perf import attach_perf
    from .topstats import attach_top

    attach_perf(host, embedded)
    attach_top(host, nodes)
