"""The device host's RPC operations (msgpack over its control socket): inspection, faults, the SM,
diagnostics and raw QP access (captures: :mod:`.capture`). The node software adds its own (``DeviceHost.add_op``).

An operation is ``op_<name>(env, now, **args)``. It answers at once, or returns ``DEFERRED`` after
``defer`` and is answered when its ``check`` has a result or its timeout passes.
"""

from __future__ import annotations

import inspect
import math
import os
import time

from .. import wire as w
from ..devices import HCA, send_smp
from ..wire.smp_attrs import PORT_STATE_NAMES
from .gmp import GmpMux, completion_dict

DEFERRED = object()
MAX_SMPS = 256  # SMPs one ``smps`` call may have in flight


class Late:
    """A deferred call's answer at its timeout that is made then (what did come), not fixed before."""

    def __init__(self, fn):
        self.fn = fn


class RpcError(Exception):
    pass


# what an annotation allows, for the checks every call goes through (``bool`` is not an ``int``
# here: msgpack keeps them apart, and True as a port number is a caller's mistake)
_TYPES = {
    "int": lambda v: type(v) is int,
    "float": lambda v: type(v) is int or type(v) is float and math.isfinite(v),
    "bool": lambda v: type(v) is bool or v in (0, 1) and type(v) is int,
    "str": lambda v: type(v) is str,
    "bytes": lambda v: type(v) is bytes,
    "dict": lambda v: type(v) is dict,
    "list": lambda v: type(v) in (list, tuple),
}


# The values the fabric's own operations take, by argument name (the names mean one thing in every
# operation: an IB port number, a LID, a QPN). Node software checks its own (its ``port`` is UDP's).
ARG_LIMITS = {
    "port": (0, 254),
    "qpn": (0, 0xFFFFFF),
    "dest_qp": (0, 0xFFFFFF),
    "qkey": (0, 0xFFFFFFFF),
    "dlid": (0, 0xFFFF),
    "mlid": (0xC000, 0xFFFE),
    "sl": (0, 15),
    "pkey_index": (0, 0xFFFF),
    "max": (1, 65536),
    "timeout": (0, 3600),
}
MAX_RAW_PACKET = 0xFFFF  # a burst frames each packet with a 16-bit length
# the PortCounters fields that count packets a port dropped or refused (``ibfab top``'s drops)
TOP_ERROR_COUNTERS = (
    "port_rcv_errors", "port_rcv_remote_physical_errors", "port_rcv_switch_relay_errors", "port_xmit_discards",
    "port_xmit_constraint_errors", "port_rcv_constraint_errors", "vl15_dropped",
)


class OpSpec:
    """An operation's arguments, from its signature: which are required, which may be given, and
    the type each annotated one must have. A call is checked against it before the operation runs,
    so a wrong argument is an error reply that names it and changes nothing."""

    def __init__(self, name: str, fn, limits: dict | None = None):
        self.name = name
        self.limits = limits or {}
        self.required, self.allowed, self.types = [], set(), {}
        self.varkw = False
        for p in inspect.signature(fn).parameters.values():
            if p.name in ("self", "env", "now"):
                continue
            if p.kind is p.VAR_KEYWORD:
                self.varkw = True
                continue
            self.allowed.add(p.name)
            if p.default is p.empty:
                self.required.append(p.name)
            ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
            if ann and ann != "_empty":
                kinds = [a.strip() for a in ann.split("|")]
                if all(k in _TYPES or k == "None" for k in kinds):
                    self.types[p.name] = kinds

    def check(self, args: dict) -> None:
        for k in args:
            if k not in self.allowed and not self.varkw:
                raise RpcError(f"{self.name}: unknown argument {k!r}")
        for k in self.required:
            if k not in args:
                raise RpcError(f"{self.name}: missing argument {k!r}")
        for k, kinds in self.types.items():
            if k in args:
                v = args[k]
                if not any(v is None if t == "None" else _TYPES[t](v) for t in kinds):
                    what = " or ".join("finite number" if t == "float" else t for t in kinds)
                    raise RpcError(f"{self.name}: {k} must be {what}, not {_show(v)}")
        for k, (lo, hi) in self.limits.items():
            v = args.get(k)
            if type(v) in (int, float) and not lo <= v <= hi:
                raise RpcError(f"{self.name}: {k} {v!r} is not in {lo}..{hi}")


def _need(ok: bool, text: str) -> None:
    if not ok:
        raise RpcError(text)


# SMConfig's fields a caller may set, each with its type and the values that make sense
_SM_FIELDS = {
    "lmc": (int, 0, 7), "subnet_timeout": (int, 0, 31), "sweep_interval": (float, 0, 86400),
    "routing_engine": (str, None, None), "partitions": (str, None, None), "guid2lid_path": (str, None, None),
    "sm_key": (int, 0, (1 << 64) - 1), "window": (int, 1, 4096), "smp_timeout": (float, 0.001, 60),
    "retries": (int, 0, 100), "priority": (int, 0, 15), "part_enforce": (str, None, None),
    "poll_s": (float, 0.05, 3600), "poll_retries": (int, 1, 100),
}


def sm_config(config: dict):
    """An SMConfig from a caller's map, every key and value checked first."""
    from ..sm.core import SMConfig
    from ..sm.partitions import parse_partitions
    from ..sm.routing import ENGINES

    for k, v in config.items():
        spec = _SM_FIELDS.get(k)  # every SMConfig field, and only those (a test holds them equal)
        if spec is None:
            raise RpcError(f"sm_start: unknown SM setting {k!r}")
        typ, lo, hi = spec
        if not _TYPES[typ.__name__](v):
            raise RpcError(f"sm_start: {k} must be {typ.__name__}, not {_show(v)}")
        if lo is not None and not lo <= v <= hi:
            raise RpcError(f"sm_start: {k} {v!r} is not in {lo}..{hi}")
    cfg = SMConfig(**config)
    if cfg.part_enforce not in ("both", "in", "out", "off"):
        raise RpcError(f"sm_start: part_enforce must be both, in, out or off, not {cfg.part_enforce!r}")
    if cfg.routing_engine not in ENGINES:
        raise RpcError(f"sm_start: unknown routing engine {cfg.routing_engine!r}; known: {', '.join(ENGINES)}")
    parse_partitions(cfg.partitions)  # a ValueError that names the line
    return cfg


def _show(v) -> str:
    if type(v) in (int, float):
        return repr(v)
    return type(v).__name__


def user_message(exc: BaseException) -> str:
    """What an error says to a user: its text, without Python's class names (an OSError by its
    strerror, a KeyError without the quotes repr adds)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def one_line(text: str, limit: int = 300) -> str:
    """An error as users see it: one line however it came to be (a caller's name with a newline in
    it, a multi-line exception text), control characters shown escaped, and not a page long."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class HostOps:
    """Mixed into :class:`fabric.host.loop.DeviceHost`."""

    # Operations that only read (states, counters, snapshots): no device's deadline can move, so
    # the host does not ask every device for it again after one. The launcher asks ``sm_status``
    # 50 times a second during a sweep, and the SM's host then asked its 175-700 devices each time.
    READ_ONLY_OPS = frozenset({"ops", "hello", "status", "link_states", "counters", "all_counters",
                               "top", "sm_status", "sim_status"})

    # -- dispatch ------------------------------------------------------------------------------

    def rpc(self, env: tuple, req: dict, now: float):
        op = req.get("op")
        fn = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        own = fn is not None
        if fn is None and isinstance(op, str):
            fn = self.extra_ops.get(op)
        if fn is None:
            raise RpcError(f"unknown operation {op!r}")
        spec = self._specs.get(op)
        if spec is None:
            spec = self._specs[op] = OpSpec(op, fn, ARG_LIMITS if own else None)
        args = {k: v for k, v in req.items() if k != "op"}
        spec.check(args)
        return fn(env=env, now=now, **args)

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

    def hca_port(self, name: str, port: int) -> HCA:
        """The HCA ``name``, checked to have the port ``port`` (an agent on a missing port would
        fail later, at every timer, where no caller sees why)."""
        dev = self.hca(name)
        if port == 0 or port not in dev.ports:
            raise RpcError(f"{name} has no port {port}")
        return dev

    def defer(self, env, now, timeout, check, default, on_timeout=None):
        """Answer now if ``check`` has a result, else when it has one or the timeout passes."""
        value = check()
        if value is not None or timeout <= 0:
            return value if value is not None else default.fn() if isinstance(default, Late) else default
        self.pending.append((now + timeout, check, env, default, on_timeout))
        return DEFERRED

    def service_pending(self, now: float) -> None:
        keep = []
        for deadline, check, env, default, on_timeout in self.pending:
            try:
                value = check()
            except Exception as exc:  # a deferred request that fails is answered with the error
                self.reply(env, False, user_message(exc), type(exc).__name__)
                continue
            if value is not None:
                self.reply(env, True, value)
            elif now >= deadline:
                if on_timeout is not None:
                    try:
                        on_timeout()
                    except Exception:  # its undo failing must not keep the answer, or the host
                        import traceback

                        traceback.print_exc()
                self.reply(env, True, default.fn() if isinstance(default, Late) else default)
            else:
                keep.append((deadline, check, env, default, on_timeout))
        self.pending = keep

    def op_specs(self):
        """Every operation this host serves, by name: the OpSpec a call is checked against."""
        names = [n[3:] for n in dir(self) if n.startswith("op_") and callable(getattr(self, n))]
        for n in names + list(self.extra_ops):
            if n not in self._specs:
                own = hasattr(self, f"op_{n}")
                self._specs[n] = OpSpec(n, getattr(self, f"op_{n}") if own else self.extra_ops[n],
                                        ARG_LIMITS if own else None)
        return self._specs

    # -- inspection and faults -----------------------------------------------------------------

    def op_ops(self, env, now):
        """What ``ibfab`` and the fuzz tests call: each operation, its arguments and their types."""
        return {n: {"required": sp.required, "optional": sorted(sp.allowed - set(sp.required)),
                    "types": sp.types, "limits": {k: list(v) for k, v in sp.limits.items() if k in sp.allowed}}
                for n, sp in sorted(self.op_specs().items())}

    def op_hello(self, env, now):
        return {"host": self.index, "pid": os.getpid()}

    def op_status(self, env, now):
        return {"host": self.index, "pid": os.getpid(), "uptime": now - self.started,
                "bursts_in": self.bursts_in, "bursts_out": self.bursts_out, "burst_errors": self.burst_errors,
                "control_dropped": self.control_dropped,
                "peer_lost": self.peer_lost,
                **({"auth": self.gate.status()} if getattr(self, "gate", None) is not None else {}),
                "devices": [self.devices[n].snapshot() for n in self.names]}

    def op_link_states(self, env, now):
        """What the launcher waits on while the links train: each device's cabled ports that are
        LinkUp, and how many cabled ports are not yet. A tenth of what ``status`` builds (every
        port's every field), which the launcher asked of every host 20 times a second while the
        hosts were still coming up on the same cores."""
        up, pending = {}, 0
        for n in self.names:
            for num, p in self.devices[n].ports.items():
                if p.cabled:
                    if p.link_up:
                        up.setdefault(n, []).append(num)
                    else:
                        pending += 1
        return {"up": up, "pending": pending}

    def op_counters(self, env, now, device: str, port: int):
        return self.device(device).ports[port].counters.snapshot()

    def op_all_counters(self, env, now):
        """Every cabled port's counters on this host, read at one instant: ``{device: {port: ...}}``
        (the soak's conservation check compares the two ends of each cable)."""
        return {n: {num: p.counters.snapshot() for num, p in self.devices[n].ports.items() if p.cabled}
                for n in self.names}

    def op_top(self, env, now):
        """What ``ibfab top`` reads each refresh, in one call per host and at one instant (never a
        call per port): each cabled port's state, its 64-bit traffic counters and the counters of
        what it dropped, each device's drops by reason, the SM running here, and the sections the
        node software adds (``DeviceHost.add_sampler``). ``now`` is the host's monotonic clock, so
        that rates divide by the interval between the host's own two readings."""
        devices = {}
        for n in self.names:
            dev = self.devices[n]
            ports = {}
            for num, p in dev.ports.items():
                if not p.cabled:
                    continue
                c = p.counters
                errors = {k: c.pc[k] for k in TOP_ERROR_COUNTERS if c.pc[k]}
                errors.update((k, v) for k, v in c.lost.items() if v)
                ports[num] = {"state": PORT_STATE_NAMES.get(p.state, str(p.state)), "ext": dict(c.ext),
                              "errors": errors}
            devices[n] = {"type": dev.kind, "ports": ports, "drops": dict(dev.drops)}
        sections = {}
        for name, sample in self.samplers.items():
            try:
                sections[name] = sample(now)
            except Exception as exc:  # one bad section must not cost the user the whole view
                sections[name] = {"error": one_line(user_message(exc))}
        return {"host": self.index, "pid": os.getpid(), "now": now, "devices": devices,
                "sm": self.op_sm_status(env, now), "sections": sections}

    def op_link(self, env, now, device: str, port: int, up: bool):
        dev = self.device(device)
        if port not in dev.ports or port == 0 and dev.kind == "switch":
            raise RpcError(f"{device} has no port {port}")
        self.set_admin(device, port, bool(up), now)
        return True

    def op_shutdown(self, env, now):
        self.running = False
        return True

    # -- the SM and diagnostics ----------------------------------------------------------------

    def op_sm_start(self, env, now, device: str, port: int = 1, config: dict | None = None):
        """Run the subnet manager on an HCA port of this host (stopping one that runs here)."""
        from ..sm.driver import SmAgent

        dev = self.hca(device)
        _need(port in dev.ports and port != 0, f"sm_start: {device} has no port {port}")
        cfg = sm_config(config or {})  # before the running SM stops: a bad setting changes nothing
        if self.sm is not None:
            self.sm.detach()
        if cfg.guid2lid_path is None:
            cfg.guid2lid_path = os.path.join(self.info.run_dir, "guid2lid")
        self.sm = SmAgent(dev, port, cfg)
        self.sm.clock = time.monotonic  # the host's clock: its own computing does not time SMPs out
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

    def op_sim_endpoint(self, env, now, device: str, port: int = 1):
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

    def op_sim_status(self, env, now, device: str | None = None):
        return {d: s.snapshot() for d, s in self.sim_servers.items() if device in (None, d)}

    def close_sim_servers(self) -> None:
        for server in self.sim_servers.values():
            server.close()
        self.sim_servers.clear()

    def op_discover(self, env, now, device: str, port: int = 1, lfts: bool = False, timeout: float = 30.0):
        """Read the fabric with DR SMPs from an HCA port (ibnetdiscover, dump_fts)."""
        from ..diag import DiagAgent, subnet_to_dict

        agent = DiagAgent(self.hca_port(device, port), port, read_lfts=bool(lfts))
        agent.start(now)
        self.handle_events(device, now)

        def check():
            return subnet_to_dict(agent.result) if agent.result is not None else None

        return self.defer(env, now, timeout, check, None, agent.detach)

    # -- raw QP access (tests and tools) -------------------------------------------------------

    def op_create_qp(self, env, now, device: str, qkey: int, port: int = 1):
        return self.hca(device).create_qp(qkey, port).qpn

    def op_attach_mcast(self, env, now, device: str, qpn: int, mgid: bytes, mlid: int):
        _need(len(mgid) == 16, "attach_mcast: mgid must be 16 octets (a GID)")
        self.hca(device).attach_mcast(qpn, mgid, mlid)
        return True

    def op_post_send(self, env, now, device: str, qpn: int, dlid: int, dest_qp: int, payload: bytes,
                     qkey: int | None = None, pkey_index: int | None = None, dgid: bytes | None = None, sl: int = 0):
        _need(dgid is None or len(dgid) == 16, "post_send: dgid must be 16 octets (a GID)")
        _need(len(payload) <= 4096, "post_send: payload is larger than the largest IB MTU (4096)")
        posted = self.hca(device).post_send(qpn, dlid=dlid, dest_qp=dest_qp, payload=payload, qkey=qkey,
                                            pkey_index=pkey_index, dgid=dgid, sl=sl, now=now)
        self.handle_events(device, now)
        return posted

    def op_send_raw(self, env, now, device: str, port: int, packet: bytes):
        """Put arbitrary octets on a link from a device's port (tests provoke drops with this)."""
        dev = self.device(device)
        _need(port in dev.ports, f"send_raw: {device} has no port {port}")
        _need(0 < len(packet) <= MAX_RAW_PACKET, f"send_raw: packet must be 1..{MAX_RAW_PACKET} octets, not {len(packet)}")
        dev.outbox.append((port, packet))
        return True

    def op_poll(self, env, now, device: str, qpn: int, max: int = 64, timeout: float = 0.0):
        """Receive completions of a QP; waits up to ``timeout`` for the first one."""
        qp = self.hca(device).qps.get(qpn)
        if qp is None:
            raise RpcError(f"{device} has no QP 0x{qpn:x}")

        def check():
            if not qp.rq:
                return None
            return [completion_dict(c) for c in qp.poll(max)]

        return self.defer(env, now, timeout, check, [])

    def op_smp(self, env, now, device: str, port: int, smp: bytes, dlid: int | None = None, timeout: float = 2.0):
        """Send an SMP from an HCA port as an SM would and wait for its response (matched by TID)."""
        check, give_up = self._send_smps(device, port, [smp], [dlid], now)
        return self.defer(env, now, timeout, lambda: (check() or [None])[0], Late(lambda: give_up()[0]))

    def op_smps(self, env, now, device: str, port: int, smps: list, dlids: list, timeout: float = 2.0):
        """Send several SMPs from an HCA port at once (``dlids[i]`` None for a directed-route one)
        and wait for their responses: a list in the same order, None where none came."""
        check, give_up = self._send_smps(device, port, smps, dlids, now)
        return self.defer(env, now, timeout, check, Late(give_up))

    def _send_smps(self, device: str, port: int, smps: list, dlids: list, now: float):
        """Send the SMPs; ``(check, give_up)``: the responses once all came (else None), and what
        came when the caller stops waiting. The responses are the caller's even on the SM's own
        node, before the SM sees them (HCA.smp_waiting)."""
        dev = self.hca_port(device, port)
        _need(0 < len(smps) <= MAX_SMPS and len(dlids) == len(smps),
              f"smps: 1..{MAX_SMPS} SMPs, and one DLID (or None) for each")
        mads = []
        for raw, dlid in zip(smps, dlids):
            _need(type(raw) is bytes and len(raw) == w.MAD_SIZE, f"smp: an SMP is {w.MAD_SIZE} octets")
            _need(dlid is None or type(dlid) is int and 0 <= dlid <= 0xFFFF, f"smp: bad DLID {_show(dlid)}")
            mad = w.parse_mad(raw)
            _need(isinstance(mad, (w.SMPLid, w.SMPDirected)) and not mad.method & w.RESPONSE_BIT,
                  "smp: not an SMP request")
            _need(dlid is not None or isinstance(mad, w.SMPDirected), "smp: a LID-routed SMP needs a DLID")
            _need(mad.tid not in dev.smp_waiting, f"smp: TID 0x{mad.tid:x} is already waited for")
            mads.append(mad)
        tids = [m.tid for m in mads]
        _need(len(set(tids)) == len(tids), "smps: two SMPs with one TID")
        for mad, dlid in zip(mads, dlids):
            dev.smp_waiting[mad.tid] = None
            send_smp(dev, port, mad, now, dlid=dlid)
        self.handle_events(device, now)

        def check():
            if any(dev.smp_waiting.get(t) is None for t in tids):
                return None
            return [dev.smp_waiting.pop(t) for t in tids]

        def give_up():
            return [dev.smp_waiting.pop(t, None) for t in tids]

        return check, give_up

    def op_gmp(self, env, now, device: str, dlid: int, mad: bytes, port: int = 1, dest_qp: int = 1,
               timeout: float = 2.0):
        """Send a GMP (SA or PMA MAD) from an HCA's QP1 and wait for its answer: a list of the
        response MADs (several for an RMPP transfer), or None on timeout."""
        dev = self.hca_port(device, port)
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
