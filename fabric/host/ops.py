"""The device host's RPC operations (msgpack over its control socket): inspection, faults, the SM,
diagnostics, raw QP access and captures. The node software adds its own (``DeviceHost.add_op``).

An operation is ``op_<name>(env, now, **args)``. It answers at once, or returns ``DEFERRED`` after
``defer`` and is answered when its ``check`` has a result or its timeout passes.
"""

from __future__ import annotations

import os
import time

from .. import wire as w
from ..devices import HCA, send_smp
from ..wire.burst import LEN
from .gmp import GmpMux, completion_dict

DEFERRED = object()


class RpcError(Exception):
    pass


class HostOps:
    """Mixed into :class:`fabric.host.loop.DeviceHost`."""

    # -- dispatch ------------------------------------------------------------------------------

    def rpc(self, env: tuple, req: dict, now: float):
        op = req.get("op")
        fn = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if fn is None and isinstance(op, str):
            fn = self.extra_ops.get(op)
        if fn is None:
            raise RpcError(f"unknown operation {op!r}")
        return fn(env=env, now=now, **{k: v for k, v in req.items() if k != "op"})

    def device(self, name: str):
        dev = self.devices.get(name)
        if dev is None:
            raise RpcError(f"device {name!r} is not on host {self.index}")
        return dev

    def hca(self, name: str) -> HCA:
        dev = self.device(name)
        if not isinstance(dev, HCA):
            raise RpcError(f"{name} is not an HCA")
        return dev

    def defer(self, env, now, timeout, check, default, on_timeout=None):
        """Answer now if ``check`` has a result, else when it has one or the timeout passes."""
        value = check()
        if value is not None or timeout <= 0:
            return value if value is not None else default
        self.pending.append((now + timeout, check, env, default, on_timeout))
        return DEFERRED

    def service_pending(self, now: float) -> None:
        keep = []
        for deadline, check, env, default, on_timeout in self.pending:
            try:
                value = check()
            except Exception as exc:  # a deferred request that fails is answered with the error
                self.reply(env, False, f"{type(exc).__name__}: {exc}")
                continue
            if value is not None:
                self.reply(env, True, value)
            elif now >= deadline:
                if on_timeout is not None:
                    on_timeout()
                self.reply(env, True, default)
            else:
                keep.append((deadline, check, env, default, on_timeout))
        self.pending = keep

    # -- inspection and faults -----------------------------------------------------------------

    def op_hello(self, env, now):
        return {"host": self.index, "pid": os.getpid()}

    def op_status(self, env, now):
        return {"host": self.index, "pid": os.getpid(), "uptime": now - self.started,
                "bursts_in": self.bursts_in, "bursts_out": self.bursts_out, "burst_errors": self.burst_errors,
                "devices": [self.devices[n].snapshot() for n in self.names]}

    def op_counters(self, env, now, device, port):
        return self.device(device).ports[port].counters.snapshot()

    def op_link(self, env, now, device, port, up):
        dev = self.device(device)
        if port not in dev.ports or port == 0 and dev.kind == "switch":
            raise RpcError(f"{device} has no port {port}")
        self.set_admin(device, port, bool(up), now)
        return True

    def op_shutdown(self, env, now):
        self.running = False
        return True

    # -- the SM and diagnostics ----------------------------------------------------------------

    def op_sm_start(self, env, now, device, port=1, config=None):
        """Run the subnet manager on an HCA port of this host (stopping one that runs here)."""
        from ..sm.core import SMConfig
        from ..sm.driver import SmAgent

        dev = self.hca(device)
        if self.sm is not None:
            self.sm.detach()
        cfg = SMConfig(**(config or {}))
        if cfg.guid2lid_path is None:
            cfg.guid2lid_path = os.path.join(self.info.run_dir, "guid2lid")
        self.sm = SmAgent(dev, port, cfg)
        self.sm.start(now)
        self.handle_events(device, now)
        return True

    def op_sm_stop(self, env, now):
        if self.sm is not None:
            self.sm.detach()
            self.sm = None
        return True

    def op_sm_status(self, env, now):
        return None if self.sm is None else dict(self.sm.status(), node=self.sm.hca.name, port=self.sm.port)

    # -- ibsim's client protocol (fabric.simproto) ----------------------------------------------

    def op_sim_endpoint(self, env, now, device, port=1):
        """Open (once) the endpoint through which ``libumad2sim.so`` tools attach to ``device``'s
        port; its IBSIM_SOCKNAME."""
        from ..simproto.server import SimServer, sockname_for

        hca = self.hca(device)
        if port not in hca.ports or port == 0:
            raise RpcError(f"{device} has no port {port}")
        server = self.sim_servers.get(device)
        if server is None:
            server = SimServer(self, device, int(port), sockname_for(self.info.name, device))
            self.sim_servers[device] = server
        elif server.endpoint.port != port:
            raise RpcError(f"{device} serves tools on port {server.endpoint.port} already")
        return {"sockname": server.sockname, "node": device, "port": server.endpoint.port}

    def op_sim_status(self, env, now, device=None):
        return {d: s.snapshot() for d, s in self.sim_servers.items() if device in (None, d)}

    def close_sim_servers(self) -> None:
        for server in self.sim_servers.values():
            server.close()
        self.sim_servers.clear()

    def op_discover(self, env, now, device, port=1, lfts=False, timeout=30.0):
        """Read the fabric with DR SMPs from an HCA port (ibnetdiscover, dump_fts)."""
        from ..diag import DiagAgent, subnet_to_dict

        agent = DiagAgent(self.hca(device), port, read_lfts=bool(lfts))
        agent.start(now)
        self.handle_events(device, now)

        def check():
            return subnet_to_dict(agent.result) if agent.result is not None else None

        return self.defer(env, now, timeout, check, None, agent.detach)

    # -- raw QP access (tests and tools) -------------------------------------------------------

    def op_create_qp(self, env, now, device, qkey, port=1):
        return self.hca(device).create_qp(qkey, port).qpn

    def op_attach_mcast(self, env, now, device, qpn, mgid, mlid):
        self.hca(device).attach_mcast(qpn, mgid, mlid)
        return True

    def op_post_send(self, env, now, device, qpn, dlid, dest_qp, payload, qkey=None, pkey_index=None,
                     dgid=None, sl=0):
        posted = self.hca(device).post_send(qpn, dlid=dlid, dest_qp=dest_qp, payload=payload, qkey=qkey,
                                            pkey_index=pkey_index, dgid=dgid, sl=sl, now=now)
        self.handle_events(device, now)
        return posted

    def op_send_raw(self, env, now, device, port, packet):
        """Put arbitrary octets on a link from a device's port (tests provoke drops with this)."""
        self.device(device).outbox.append((port, packet))
        return True

    def op_poll(self, env, now, device, qpn, max=64, timeout=0.0):
        """Receive completions of a QP; waits up to ``timeout`` for the first one."""
        qp = self.hca(device).qps.get(qpn)
        if qp is None:
            raise RpcError(f"{device} has no QP 0x{qpn:x}")

        def check():
            if not qp.rq:
                return None
            return [completion_dict(c) for c in qp.poll(max)]

        return self.defer(env, now, timeout, check, [])

    def op_smp(self, env, now, device, port, smp, dlid=None, timeout=2.0):
        """Send an SMP from an HCA port as an SM would and wait for its response (matched by TID)."""
        dev = self.hca(device)
        mad = w.parse_mad(smp)
        tid = mad.tid
        send_smp(dev, port, mad, now, dlid=dlid)
        self.handle_events(device, now)
        qp0 = dev.qps[0]

        def check():
            for c in list(qp0.rq):
                if w.MADHeader.unpack(c.payload).tid == tid:
                    qp0.rq.remove(c)
                    return c.payload
            return None

        return self.defer(env, now, timeout, check, None)

    def op_gmp(self, env, now, device, dlid, mad, port=1, dest_qp=1, timeout=2.0):
        """Send a GMP (SA or PMA MAD) from an HCA's QP1 and wait for its answer: a list of the
        response MADs (several for an RMPP transfer), or None on timeout."""
        dev = self.hca(device)
        tid = w.MADHeader.unpack(mad).tid
        mux = GmpMux.on(dev)
        mux.waiting[tid] = []
        dev.post_send(1, dlid=dlid, dest_qp=dest_qp, payload=bytes(mad), qkey=w.QKEY_GSI, now=now, port_num=port)

        def check():
            got = mux.waiting.get(tid)
            if got and mux.complete(got):
                del mux.waiting[tid]
                return got
            return None

        return self.defer(env, now, timeout, check, None, on_timeout=lambda: mux.waiting.pop(tid, None))

    # -- captures ------------------------------------------------------------------------------

    def op_capture_start(self, env, now, path):
        from ..capture import ErfWriter

        if self.capture is not None:
            self.capture.close()
        self.capture = ErfWriter(f"{path}.host{self.index}")
        return True

    def op_capture_stop(self, env, now):
        if self.capture is not None:
            self.capture.close()
            self.capture = None
        return True

    def _capture(self, name, port, body) -> None:
        """Write every packet of a burst leaving a device port to this host's capture (a tap on
        each link); ``body`` is the burst after its header."""
        raw = bytes(body)
        off = 0
        ts = time.time_ns()
        while off + 2 <= len(raw):
            (ln,) = LEN.unpack_from(raw, off)
            self.capture.write(raw[off + 2:off + 2 + ln], ts, interface=port & 3)
            off += 2 + ln
        self.captured += 1
