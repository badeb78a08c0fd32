"""The ``rdma_netdev`` contract: the data-path operations an RDMA device offers IPoIB.

Upstream ("Enhanced mode for IPoIB", the OFVWG "IPoIB LLD acceleration" template), the IPoIB ULP
keeps the control plane (interface registration, multicast joins, events, link state, path
resolution, ARP) and calls the data path through a table of operations. A device that does not
provide an operation gets the standard implementation, op by op, and IPoIB works as before.

Here a provider is any object with some of these methods. An op it lacks, or that raises
:class:`NotSupported`, is served by the standard provider: :class:`RdmaNetdev` does that dispatch.

    get_params()                     -> NetdevParams (TX/RX queue counts, private size)
    init(ctx)                        -> QPN            hardware resources (the UD QP)
    uninit()
    open() / stop()                                    hardware start/stop (control is the ULP's)
    set_id(pkey_index)                                 the P_Key index the QP sends and receives on
    attach_mcast(gid, mlid, set_qkey, qkey)            QP joins a multicast group; set_qkey sets the
                                                       QP's Q_Key (the broadcast group's)
    detach_mcast(gid, mlid)
    send(packet, ah, dqpn)           -> OK | BUSY      one IPoIB frame (4-octet header included)
    send_burst(packets, ah, dqpn)    -> int            many frames to one destination; how many taken
    select_queue(packet)             -> int            the TX queue ``send`` would put it on (the
                                                       ULP's qdisc holds a refused frame there)
    tx_timeout(queue)
    poll(budget)                     -> int            NAPI: deliver up to ``budget`` frames

and the ethtool side of a device, which the ULP passes through:

    get_coalesce() / set_coalesce(rx_usecs, rx_frames, adaptive)    interrupt moderation (-c / -C)
    queue_stats()                    -> dict           per-queue counters (-S)
    get_features() / set_features(gro, rx_flow_hash_udp4)           offloads and hashing (-k / -K, -N)

and, when the IP host is the kernel (a TUN device per interface, :mod:`ipoib.iphost.kernel`), the
device may serve the kernel's queues itself, as a NIC's driver does; the standard implementation
does not (the IP host then reads and writes the TUN device, one packet at a time, in Python):

    tun_offloads()                   -> bool           will attach_tun take the queues?
    attach_tun(fds, mtu, slow)       -> bool           the TUN queues (fds[q] is queue q) become ours;
                                                       slow(q, ethertype, packet) takes what we leave
    detach_tun()                                       they are going away (before the fds close)
    tun_read(q)                      -> int            queue q is readable: read it
    tun_reader(q)                    -> fn | None      ``fn(now)``, for the host loop: tun_read(q),
                                                       True when only the data path moved
    tun_write(q, data)               -> bool           write ``data`` (TUN header and packet) up on
                                                       queue q, in order with what we write ourselves
    set_neigh(ip, ah, dqpn) / flush_neigh()            the ULP's resolved neighbours, for the C path
    set_tun_mtu(mtu)                                   the interface's MTU changed
"""

from __future__ import annotations

from dataclasses import dataclass

OK, BUSY = 0, 1

OPS = ("get_params", "init", "uninit", "open", "stop", "set_id", "attach_mcast", "detach_mcast", "send",
       "send_burst", "select_queue", "tx_timeout", "poll", "get_coalesce", "set_coalesce", "queue_stats", "get_features",
       "set_features", "tun_offloads", "attach_tun", "detach_tun", "tun_read", "tun_reader", "tun_write", "set_neigh", "flush_neigh", "set_tun_mtu")


_OP_SET = frozenset(OPS)


class NotSupported(Exception):
    """Raised by a provider for an operation it leaves to the standard implementation."""


class OperationNotSupported(ValueError):
    """The device cannot do what was asked at all (EOPNOTSUPP), e.g. moderation on ``std``."""


@dataclass(frozen=True)
class NetdevParams:
    tx_queues: int = 1
    rx_queues: int = 1
    priv_size: int = 0


@dataclass(frozen=True)
class AddressHandle:
    """Where a UD datagram goes: the destination LID, SL and, for multicast, the GRH's DGID."""

    dlid: int
    sl: int = 0
    dgid: bytes | None = None
    src_path_bits: int = 0


@dataclass(frozen=True)
class RxInfo:
    """What a receive completion tells the ULP besides the frame."""

    slid: int
    src_qp: int
    pkey: int
    sgid: bytes | None
    dgid: bytes | None


# NetdevContext's fields that the accelerated provider reads per burst: a C struct when the
# extension is built (ipoib/_fastctx.pyx; under either backend, since a test may run both providers
# in one process: the fields behave as plain attributes either way), else plain attributes
CONTEXT_FIELDS = ("hca", "port", "qp", "stats", "rxq", "sendq", "rx_sink", "running", "deliver", "reflect",
                  "schedule_poll", "wake_queue")
try:
    from ._fastctx import ContextCore
except ImportError:  # pragma: no cover - depends on the build
    class ContextCore:
        __slots__ = ()


class NetdevContext(ContextCore):
    """The services a provider gets from the ULP and the host (the ``net_device`` side).

    ``hca``/``port``: the device to create the QP on and send with (``hca.post_send``,
    ``hca.post_segment``: the HCA puts them on the wire); ``deliver(frame, info)``: netif_receive_skb; ``stop_queue(q)``/``wake_queue(q)``: TX flow
    control; ``schedule_poll()``: napi_schedule (the host runs ``poll`` soon); ``arm_timer(t)``:
    run ``poll`` at time ``t`` (the interrupt moderation timer; without one, as soon as possible).
    """

    def __init__(self, hca, port: int, *, deliver, stop_queue=None, wake_queue=None,
                 schedule_poll=None, arm_timer=None, now=lambda: 0.0):
        self.hca = hca
        self.port = port
        self.deliver = deliver
        self.stop_queue = stop_queue or (lambda q: None)
        self.wake_queue = wake_queue or (lambda q: None)
        self.schedule_poll = schedule_poll or (lambda: None)
        self.arm_timer = arm_timer or (lambda deadline: self.schedule_poll())
        self.reflect = lambda frame, slid, src_qp: None  # set by the ULP: send a frame back (XDP_TX)
        self.now = now


class RdmaNetdev:
    """Dispatch each op to the provider, or to the standard implementation where the provider has
    no such op or raises NotSupported. ``served_by`` records, per op, who served it last.

    Each op is bound once, at its first use, and kept as an attribute of the device: the data
    path calls ``send`` and ``poll`` per packet and per poll, and a lookup per call would cost
    more than the fast provider's own work; and binding all of them when an interface comes up
    (every HCA's ib0 as the SM makes its port Active, hundreds in a sweep) costs more than the
    interface's other work, for ops most interfaces never call."""

    def __init__(self, provider, standard):
        self.provider = provider
        self.standard = standard
        self.served_by: dict[str, str] = {}
        self.fallbacks: dict[str, int] = {}

    def __getattr__(self, op: str):
        # only reached for what the instance does not hold yet: an op not bound so far
        if op not in _OP_SET:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {op!r}")
        bound = self._bind(op)
        setattr(self, op, bound)
        return bound

    @classmethod
    def create(cls, ctx, provider_cls) -> "RdmaNetdev":
        """The device an interface gets: a backend's ``provider_cls`` over the standard
        implementation, or the standard one alone when that is what the backend provides."""
        from .std import StdProvider

        standard = StdProvider(ctx)
        return cls(provider_cls(ctx) if provider_cls is not StdProvider else None, standard)

    def _bind(self, op: str):
        fn = getattr(self.provider, op, None) if self.provider is not None else None
        std = getattr(self.standard, op)
        served, fallbacks = self.served_by, self.fallbacks
        binder = getattr(self.provider, "bind_op", None) if fn is not None else None
        if binder is not None:  # a provider may dispatch its per-packet ops itself, compiled
            bound = binder(op, std, served, fallbacks)
            if bound is not None:
                return bound

        def standard(*args):
            fallbacks[op] = fallbacks.get(op, 0) + 1
            served[op] = "standard"
            return std(*args)

        if fn is None:
            return standard

        def call(*args):
            try:
                out = fn(*args)
            except NotSupported:
                return standard(*args)
            served[op] = "provider"
            return out

        call.__name__ = standard.__name__ = op
        return call
