"""Runs an IPoIB node on every HCA of a device host, and serves its RPC operations.

The launcher names this module in ``fabric.json`` (``node_software``); the host imports it by name,
so the fabric package never imports IPoIB.
"""

from __future__ import annotations

import itertools
import time

from . import core as backend_core
from .node import IPoIBNode


def attach(host) -> None:
    cfg = host.info.data.get("ipoib") or {}
    hca_order = [n.name for n in host.topology.hcas()]
    nodes = {}
    for name, dev in host.devices.items():
        if dev.kind != "hca":
            continue
        nodes[name] = IPoIBNode(dev, hca_order.index(name), clock=time.monotonic, backend=backend_core,
                                addresses=(cfg.get("addresses") or {}).get(name))
    host.ipoib_nodes = nodes
    sockets: dict = {}
    ids = itertools.count(1)

    def node(device):
        n = nodes.get(device)
        if n is None:
            raise KeyError(f"no IPoIB node {device!r} on this host")
        return n

    def op_ipoib_status(env, now, device):
        return node(device).snapshot()

    def op_ping(env, now, device, dst, count=1, interval=0.2, timeout=1.0, size=56, ifname=None):
        sess = node(device).ip.ping(dst, count=int(count), interval=float(interval), timeout=float(timeout),
                                    size=int(size), ifname=ifname)
        def check():
            if not sess.done:
                return None
            return dict(sess.summary(), replies=list(getattr(sess, "replies", [])),
                        error_texts=list(sess.errors))

        return host.defer(env, now, count * interval + timeout + 1.0, check, None)

    def op_udp_open(env, now, device, port=0, addr=None):
        s = node(device).ip.udp_socket()
        s.bind(int(port), addr)
        sid = next(ids)
        sockets[sid] = (device, s)
        return {"sock": sid, "port": s.port}

    def _sock(sid, device):
        entry = sockets.get(sid)
        if entry is None or entry[0] != device:
            raise KeyError(f"no socket {sid} on {device}")
        return entry[1]

    def op_udp_sendto(env, now, device, sock, data, ip, port, ifname=None):
        return _sock(sock, device).sendto(bytes(data), (ip, int(port)), ifname=ifname)

    def op_udp_recv(env, now, device, sock, timeout=1.0, max=64):
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

    def op_udp_join(env, now, device, sock, group, ifname=None):
        _sock(sock, device).join_group(group, ifname=ifname)
        return True

    def op_udp_leave(env, now, device, sock, group, ifname=None):
        _sock(sock, device).leave_group(group, ifname=ifname)
        return True

    def op_udp_close(env, now, device, sock):
        _sock(sock, device).close()
        del sockets[sock]
        return True

    for fn in (op_ipoib_status, op_ping, op_udp_open, op_udp_sendto, op_udp_recv, op_udp_join, op_udp_leave,
               op_udp_close):
        host.extra_ops[fn.__name__[3:]] = fn
