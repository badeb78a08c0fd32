"""The standard rdma_netdev implementation: pure Python, one TX and one RX queue, the kernel's UD
behaviour (drivers/infiniband/ulp/ipoib/ipoib_ib.c):

- the send queue holds ``SENDQ_SIZE`` frames; when it is full the TX queue stops, and it wakes
  once completions bring it down to half;
- receive buffers start with a 40-octet GRH area, filled or not, which the ULP skips;
- multicast frames the interface sent itself (our LID and QPN) are dropped on receive.

Provider state lives in the shared :class:`ipoib.netdev.NetdevContext`, so that a provider which
implements only some operations and this standard one can serve the same interface op by op.
"""

from __future__ import annotations

from collections import deque


from .gso import GsoPacket, segment
from .netdev import BUSY, OK, NetdevParams, OperationNotSupported, RxInfo

SENDQ_SIZE = 128  # ipoib_sendq_size
RECVQ_SIZE = 256  # ipoib_recvq_size
GRH_AREA = 40


def _stats(ctx) -> dict:
    st = getattr(ctx, "stats", None)
    if st is None:
        st = ctx.stats = dict(tx_packets=0, tx_bytes=0, tx_dropped=0, tx_busy=0, tx_stops=0, tx_wakes=0,
                              rx_packets=0, rx_bytes=0, rx_dropped=0, rx_own_mcast=0, rx_overflow=0)
    return st


class StdProvider:
    """Every rdma_netdev op, in Python."""

    name = "std"

    def __init__(self, ctx):
        self.ctx = ctx
        _stats(ctx)
        if getattr(ctx, "sendq", None) is None:  # (a context whose fields are a C struct has them all, None)
            ctx.sendq = deque()  # posted, not yet completed: (packet, ah, dqpn)
            ctx.rxq = deque()
            ctx.qp = None
            ctx.running = False
            ctx.queue_stopped = False
            ctx.rx_sink = None  # a driver-level receive hook (ipoib.core.UdpSink), or None

    # -- control-facing operations -------------------------------------------------------------

    def get_params(self) -> NetdevParams:
        return NetdevParams(tx_queues=1, rx_queues=1, priv_size=0)

    def init(self, ctx=None) -> int:
        c = self.ctx
        if c.qp is None:
            c.qp = c.hca.create_qp(0, c.port)
            c.qp.consumer = self._on_completion
        return c.qp.qpn

    def uninit(self) -> None:
        c = self.ctx
        if c.qp is not None:
            c.hca.destroy_qp(c.qp.qpn)
            c.qp = None

    def open(self) -> None:
        self.ctx.running = True

    def stop(self) -> None:
        c = self.ctx
        c.running = False
        c.sendq.clear()
        c.rxq.clear()
        if c.queue_stopped:  # an empty send queue is not a full one: the next open starts clean
            c.queue_stopped = False
            c.wake_queue(0)

    def set_id(self, pkey_index: int) -> None:
        self.ctx.qp.pkey_index = pkey_index

    def attach_mcast(self, gid: bytes, mlid: int, set_qkey: bool, qkey: int) -> None:
        c = self.ctx
        if set_qkey:
            c.qp.qkey = qkey
        c.hca.attach_mcast(c.qp.qpn, gid, mlid)

    def detach_mcast(self, gid: bytes, mlid: int) -> None:
        c = self.ctx
        c.hca.detach_mcast(c.qp.qpn, gid, mlid)

    # -- data path -----------------------------------------------------------------------------

    def select_queue(self, packet) -> int:
        return 0  # one send queue

    def send(self, packet: bytes, ah, dqpn: int) -> int:
        c = self.ctx
        st = c.stats
        if type(packet) is GsoPacket:  # no offload here: segment in software, all or nothing
            if not c.running or c.qp is None:
                st["tx_dropped"] += packet.segments
                return OK
            frames = segment(packet)
            if len(c.sendq) + len(frames) > SENDQ_SIZE:
                return self._busy()
            for f in frames:
                self.send(f, ah, dqpn)
            return OK
        if not c.running or c.qp is None:
            st["tx_dropped"] += 1
            return OK  # the frame is consumed (dropped), as a stopped device does
        if len(c.sendq) >= SENDQ_SIZE:
            st["tx_busy"] += 1
            if not c.queue_stopped:
                c.queue_stopped = True
                st["tx_stops"] += 1
                c.stop_queue(0)
            return BUSY
        c.sendq.append((packet, ah, dqpn))
        if len(c.sendq) >= SENDQ_SIZE and not c.queue_stopped:
            c.queue_stopped = True
            st["tx_stops"] += 1
            c.stop_queue(0)
        c.schedule_poll()
        return OK

    def _busy(self) -> int:
        """BUSY for a GSO packet that does not fit in what is left of the send queue."""
        c = self.ctx
        c.stats["tx_busy"] += 1
        if not c.queue_stopped:
            c.queue_stopped = True
            c.stats["tx_stops"] += 1
            c.stop_queue(0)
        return BUSY

    def send_burst(self, packets, ah, dqpn: int) -> int:
        """The burst API in terms of single sends: stops at the first BUSY."""
        n = 0
        for p in packets:
            if self.send(p, ah, dqpn) != OK:
                break
            n += 1
        return n

    def tx_timeout(self, queue: int) -> None:
        c = self.ctx
        c.sendq.clear()
        if c.queue_stopped:
            c.queue_stopped = False
            c.wake_queue(queue)

    def poll(self, budget: int) -> int:
        """NAPI poll: complete the posted sends, then deliver up to ``budget`` received frames
        (and complete what answering them posted)."""
        c = self.ctx
        self._complete_sends()
        done = 0
        sink = c.rx_sink
        while c.rxq and done < budget:
            frame, info = c.rxq.popleft()
            if sink is None or not sink.consume(frame, GRH_AREA):
                c.deliver(frame, info)
            elif sink.echo:
                c.reflect(sink.reflect(frame, GRH_AREA), info.slid, info.src_qp)
            done += 1
        if sink is not None:
            sink.mark(c.now())
            if sink.echo and c.sendq:
                self._complete_sends()
        if c.rxq:
            c.schedule_poll()
        return done

    def _complete_sends(self) -> None:
        c = self.ctx
        st = c.stats
        while c.sendq:
            packet, ah, dqpn = c.sendq.popleft()
            c.hca.post_send(c.qp.qpn, dlid=ah.dlid, dest_qp=dqpn, payload=packet, sl=ah.sl, dgid=ah.dgid,
                            src_path_bits=ah.src_path_bits, now=c.now(), port_num=c.port)
            st["tx_packets"] += 1
            st["tx_bytes"] += len(packet)
            if c.queue_stopped and len(c.sendq) <= SENDQ_SIZE // 2:
                c.queue_stopped = False
                st["tx_wakes"] += 1
                c.wake_queue(0)

    # -- ethtool ---------------------------------------------------------------------------------

    def get_coalesce(self) -> dict:
        """No moderation: every receive completion schedules NAPI at once."""
        return {"rx_usecs": 0, "rx_frames": 1, "adaptive": False, "rx_usecs_effective": 0}

    def set_coalesce(self, rx_usecs=None, rx_frames=None, adaptive=None) -> dict:
        raise OperationNotSupported("the standard provider has no interrupt moderation "
                                    "(Operation not supported); use IPOIB_BACKEND=fast")

    def get_features(self) -> dict:
        """GSO is done in software here (the stack's packets are cut up in Python), GRO not at all."""
        return {"tx-udp-segmentation": "software", "rx-gro": False, "rx-flow-hash-udp4": "sd"}

    def set_features(self, gro=None, rx_flow_hash_udp4=None, tso=None, uso=None, tx_checksum=None) -> dict:
        raise OperationNotSupported("the standard provider has no offloads to switch "
                                    "(Operation not supported); use IPOIB_BACKEND=fast")

    # -- the kernel's TUN queues: the standard device leaves them to the IP host -------------------

    def tun_offloads(self) -> bool:
        return False

    def attach_tun(self, fds, mtu, slow) -> bool:
        return False

    def detach_tun(self) -> None:
        pass

    def tun_read(self, q) -> int:
        return 0

    def tun_reader(self, q):
        return None

    def tun_write(self, q, data) -> bool:
        return False  # never asked: the IP host writes the queues of a device that did not take them

    def set_neigh(self, ip, ah, dqpn) -> None:
        pass

    def flush_neigh(self) -> None:
        pass

    def set_tun_mtu(self, mtu) -> None:
        pass

    def queue_stats(self) -> dict:
        """One TX and one RX queue (ethtool -S)."""
        st = self.ctx.stats
        return {"tx0_packets": st["tx_packets"], "tx0_bytes": st["tx_bytes"], "tx0_busy": st["tx_busy"],
                "tx0_stops": st["tx_stops"], "tx0_wakes": st["tx_wakes"], "tx0_queued": len(self.ctx.sendq),
                "rx0_packets": st["rx_packets"], "rx0_bytes": st["rx_bytes"], "rx0_overflow": st["rx_overflow"],
                "rx0_queued": len(self.ctx.rxq)}

    def _on_completion(self, comp) -> None:
        """A receive completion on the IPoIB QP (called by the HCA)."""
        c = self.ctx
        st = c.stats
        if not c.running:
            st["rx_dropped"] += 1
            return
        port = c.hca.ports[c.port]
        if comp.grh is not None and comp.slid == port.lid and comp.src_qp == c.qp.qpn:
            st["rx_own_mcast"] += 1  # our own multicast, looped back by the HCA
            return
        if len(c.rxq) >= RECVQ_SIZE:
            st["rx_overflow"] += 1
            st["rx_dropped"] += 1
            return
        grh = comp.grh.pack() if comp.grh is not None else bytes(GRH_AREA)
        st["rx_packets"] += 1
        st["rx_bytes"] += len(comp.payload)
        c.rxq.append((grh + comp.payload, RxInfo(comp.slid, comp.src_qp, comp.pkey,
                                                 comp.grh.sgid if comp.grh is not None else None,
                                                 comp.grh.dgid if comp.grh is not None else None)))
        c.schedule_poll()


Provider = StdProvider
