# cython: language_level=3
"""Accelerated data-path core (backend ``fast``): the rdma_netdev provider over preallocated rings.

Same names and behaviour as :mod:`ipoib._stdpath`. The rings, the flow hash and the checksum
helpers are in :mod:`ipoib._fastring`, the compiled receive path in :mod:`ipoib._fastrx`; this
module is the provider, its op dispatcher, and the names :mod:`ipoib` exports.
"""

cimport cython
import os as _os
import traceback
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.ref cimport PyObject


cdef extern from "Python.h":
    # on borrowed references (PyObject *), so that no reference count is taken per frame
    PyObject *PyList_GET_ITEM(object lst, Py_ssize_t i)
    bint _bytes_exact "PyBytes_CheckExact"(PyObject *o)
    char *_bytes_data "PyBytes_AS_STRING"(PyObject *o)
    Py_ssize_t _bytes_size "PyBytes_GET_SIZE"(PyObject *o)
from ipoib._fastring cimport META, PacketRing as _Ring, flow_hash, push_gso
from ipoib._fastring import ring_set
from ipoib._fastrx cimport RxEngine, RxOwner
from ipoib._fasttun cimport TunPath
from ipoib._fastctx cimport ContextCore
from fabric._corefast cimport HCACore, PortCore, QPCore, class_unchanged, not_patched
from fabric._wirefast cimport hca_post_segment_qp
from cpython.bytearray cimport PyByteArray_FromStringAndSize, PyByteArray_AS_STRING
from libc.string cimport memset
from fabric import _wirefast

cdef object _hps = _wirefast.hca_post_segment
cdef dict _HPS_METHODS = {"post_segment": _hps}


from ipoib.netdev import BUSY, OK, NetdevParams, NotSupported, RxInfo
from ipoib.gso import GsoPacket
from fabric.wire.burst import BURST_HEADROOM
cdef Py_ssize_t _HEADROOM = BURST_HEADROOM
# UdpSink is one of our public names; INFO_CACHE bounds the RxInfo cache we keep for the engine
from ipoib._fastrx import INFO_CACHE, RxDispatch, UdpSink

__all__ = ["BACKEND", "PacketRing", "Provider", "UdpSink"]

BACKEND = "fast"


cdef class PacketRing(_Ring):
    """A bounded FIFO of packets with ``slots`` entries of at most ``slot_size`` octets: the ring of
    :mod:`ipoib._fastring` under this module's name, which ``type(ipoib.PacketRing(...)).__module__``
    reports as the backend in use."""


def frame_flow_hash(const unsigned char[::1] frame not None, bint udp_ports=False):
    return flow_hash(&frame[0] if frame.shape[0] else <const unsigned char *> b"", frame.shape[0], udp_ports)


TX_SLOTS = 256
cdef enum:
    PHYS_LINKUP = 5  # PortPhysicalState LinkUp (fabric.wire.smp_attrs)
NAPI_WEIGHT = 64  # frames per RX queue per poll, as the kernel's NAPI_POLL_WEIGHT
# the NAPI poll right after the interrupt, in C, when the frames go up to the kernel's TUN queues
# (IBFAB_DIRECT_NAPI=0: the node's software runs every poll, for comparisons)
cdef bint DIRECT_NAPI = _os.environ.get("IBFAB_DIRECT_NAPI", "1") != "0"
MAX_FRAME = 4096 + 8
RX_SLOTS = 256

# Adaptive interrupt moderation (like the kernel's net_dim): the receive rate picks rx-usecs.
# Rows are (rate below, in packets/s; rx-usecs); the last row applies above every threshold.
ADAPTIVE_PROFILE = ((10_000, 0), (100_000, 8), (400_000, 32), (None, 64))
ADAPTIVE_WINDOW_S = 0.002
COALESCE_LIMITS = {"rx_usecs": 100_000, "rx_frames": RX_SLOTS}


@cython.final
cdef class Provider(RxOwner):
    """The accelerated rdma_netdev provider: every op, over preallocated rings.

    TX: ``tx_queues`` rings; ``send`` picks one by flow hash (TSS) and copies the frame into a
    slot behind an 8-octet address; ``poll`` builds every queued packet in C (LRH, BTH, DETH,
    ICRC, VCRC) straight into one link burst. A queue stops when its ring is full and wakes at half.

    RX: the HCA's compiled receive path (:class:`RxDispatch`) checks each packet of a link burst in
    C and puts the IPoIB frame into one of ``rx_queues`` rings by flow hash (RSS), with no Python
    object per packet. Interrupt moderation (rx-usecs, rx-frames, adaptive) decides when NAPI runs;
    ``poll(budget)`` serves each RX queue up to ``budget`` frames.

    What the hardware leaves to its slow path goes through the standard implementation, packet by
    packet: multicast (GRH) and loopback sends, sends on a port that is not Active, frames over the
    MTU, and any received packet the compiled path does not take (so every drop is classified and
    counted in one place, exactly as the standard provider does).
    """

    name = "fast"
    TX_QUEUES = 4
    RX_QUEUES = 4

    cdef public ContextCore ctx  # NetdevContext: its hot fields are this struct's
    cdef public int ntx
    cdef public int nrx
    cdef public list rings
    # per TX queue, in C: the send path touches them per packet
    cdef bint _stopped[64]
    cdef unsigned long long _qpk[64]
    cdef unsigned long long _qby[64]
    cdef unsigned long long _qbusy[64]
    cdef unsigned long long _qstops[64]
    cdef unsigned long long _qwakes[64]
    cdef bint _up               # the QP exists and the device is open (set by our own ops)
    cdef object _port
    cdef object _ah             # the last AddressHandle send() checked, and what it found
    cdef unsigned int _ah_dlid
    cdef unsigned int _ah_sl
    cdef unsigned int _ah_lid
    cdef unsigned int _hps_tag  # the HCA's class, when it last had the compiled post_segment
    cdef bint _kicked   # a poll is already scheduled for what the rings hold (one doorbell per batch)
    cdef bint _sw       # we called up into the ULP or the node (a queue stopped or woke, a poll scheduled)
    cdef public RxEngine rx
    cdef public list rx_polls
    cdef public list rx_exhausted
    cdef public object _std
    cdef public dict _infos
    cdef public dict coalesce
    cdef public bint napi_scheduled
    cdef public object timer
    cdef public unsigned long long interrupts
    cdef public unsigned long long napi_direct   # polls run right after their interrupt, in C
    cdef public int _dim_usecs
    cdef public object _win_start
    cdef public unsigned long long _win_packets
    cdef public TunPath tun     # the kernel's TUN queues, when the IP host is the kernel
    cdef public list tun_fds

    def __init__(self, ctx):
        from ipoib.std import StdProvider

        self.ctx = ctx
        self.ntx = int(getattr(ctx, "tx_queues", self.TX_QUEUES))
        self.nrx = int(getattr(ctx, "rx_queues", self.RX_QUEUES))
        if not 1 <= self.ntx <= 64 or not 1 <= self.nrx <= 64:
            raise ValueError("tx_queues and rx_queues must be 1 to 64")
        self.rings = ring_set(PacketRing, self.ntx, TX_SLOTS, MAX_FRAME)
        self.rx = RxEngine(self.nrx, RX_SLOTS, MAX_FRAME, self)
        self.set_rx_flow_hash(getattr(ctx, "rx_flow_hash_udp4", "sd"))
        self.rx_polls = [0] * self.nrx
        self.rx_exhausted = [0] * self.nrx
        self._std = StdProvider(ctx)  # the slow path: what the compiled one hands back
        self._infos = {}
        # rx-frames 128 as mlx5's default: a timer never lets a ring overflow on its own
        self.coalesce = {"rx_usecs": 0, "rx_frames": 128, "adaptive": False}
        self.napi_scheduled = False
        self.timer = None
        self.interrupts = 0
        self._dim_usecs = 0
        self._win_start = None
        self._win_packets = 0
        st = ctx.stats
        for k in ("interrupts", "napi_polls"):
            st.setdefault(k, 0)

    def bind_op(self, op, standard, served_by, fallbacks):
        """For RdmaNetdev: a compiled dispatcher for the per-packet ops (send, send_burst, poll),
        which calls our method in C and falls back to ``standard`` on NotSupported, as the
        generic dispatcher does; None for the others."""
        if op in ("send", "send_burst", "poll"):
            return _FastOp(self, op, standard, served_by, fallbacks)
        return None

    @property
    def stopped(self):
        return [bool(self._stopped[q]) for q in range(self.ntx)]

    @property
    def q_packets(self):
        return [self._qpk[q] for q in range(self.ntx)]

    # -- control-facing operations -------------------------------------------------------------

    def get_params(self):
        return NetdevParams(tx_queues=self.ntx, rx_queues=self.nrx, priv_size=0)

    def init(self, ctx=None):
        cdef ContextCore c = self.ctx
        if c.qp is None:
            c.qp = c.hca.create_qp(0, c.port)
            c.qp.consumer = self._std._on_completion  # completions of the slow path
        self.rx.qpn = c.qp.qpn
        return c.qp.qpn

    def uninit(self):
        cdef ContextCore c = self.ctx
        self._up = False
        self._rx_detach()
        if c.qp is not None:
            c.hca.destroy_qp(c.qp.qpn)
            c.qp = None

    def open(self):
        self.ctx.running = True
        self._up = self.ctx.qp is not None
        self._kicked = False
        if self.ctx.qp is not None:
            self.rx.qpn = self.ctx.qp.qpn
            d = self.ctx.hca.rx_accel
            if not isinstance(d, RxDispatch):
                d = self.ctx.hca.rx_accel = RxDispatch()
            d.add(self.rx)

    def stop(self):
        cdef ContextCore c = self.ctx
        c.running = False
        self._up = False
        c.sendq.clear()
        c.rxq.clear()
        self._rx_detach()
        self.rx.clear()
        for ring in self.rings:
            ring.pop_many(TX_SLOTS)
        self.napi_scheduled = False
        self.timer = None
        self._kicked = False
        for q in range(self.ntx):  # empty rings are not full ones: the next open starts clean
            if self._stopped[q]:
                self._stopped[q] = False
                self._qwakes[q] += 1
                self._sw = True
                c.wake_queue(q)

    def _rx_detach(self):
        d = self.ctx.hca.rx_accel
        if isinstance(d, RxDispatch) and d.engines.get(self.rx.qpn) is self.rx:
            d.remove(self.rx.qpn)
        self.rx.enabled = False

    def set_id(self, pkey_index):
        self.ctx.qp.pkey_index = pkey_index

    def attach_mcast(self, gid, mlid, set_qkey, qkey):
        cdef ContextCore c = self.ctx
        if set_qkey:
            c.qp.qkey = qkey
        c.hca.attach_mcast(c.qp.qpn, gid, mlid)

    def detach_mcast(self, gid, mlid):
        cdef ContextCore c = self.ctx
        c.hca.detach_mcast(c.qp.qpn, gid, mlid)

    def set_rx_flow_hash(self, udp4):
        """ethtool -N rx-flow-hash udp4 sd|sdfn: what UDP flows hash on, for TSS and RSS alike."""
        if udp4 not in ("sd", "sdfn"):
            raise ValueError(f"rx-flow-hash udp4 must be 'sd' or 'sdfn', not {udp4!r}")
        self.rx.udp_ports = udp4 == "sdfn"

    def get_features(self):
        out = {"tx-udp-segmentation": "on", "rx-gro": bool(self.rx.gro),
               "rx-flow-hash-udp4": "sdfn" if self.rx.udp_ports else "sd"}
        if self.tun is not None:  # what the kernel may hand us (TUNSETOFFLOAD), as ethtool -k shows it
            out["tx-checksumming"] = bool(self.tun.csum)
            out["tcp-segmentation-offload"] = bool(self.tun.tso)
            out["tx-udp-segmentation"] = "on" if self.tun.uso else "off"
        return out

    def set_features(self, gro=None, rx_flow_hash_udp4=None, tso=None, uso=None, tx_checksum=None):
        """ethtool -K ib0 gro|tso|tx-udp-segmentation|tx on|off, ethtool -N ib0 rx-flow-hash udp4
        sd|sdfn; all or nothing. TSO, USO and checksum offload are what the TUN device offers the
        kernel: off, the kernel segments and checksums in software before it hands packets over."""
        for name, val in (("gro", gro), ("tso", tso), ("uso", uso), ("tx-checksum", tx_checksum)):
            if val is not None and not isinstance(val, bool):
                raise ValueError(f"{name} must be true or false, not {val!r}")
        if rx_flow_hash_udp4 is not None and rx_flow_hash_udp4 not in ("sd", "sdfn"):
            raise ValueError(f"rx-flow-hash udp4 must be 'sd' or 'sdfn', not {rx_flow_hash_udp4!r}")
        if (tso or uso or tx_checksum is not None) and self.tun is None:
            raise ValueError("tso, uso and tx-checksum are offloads of a TUN device (a --netns fabric)")
        csum = self.tun.csum if tx_checksum is None else tx_checksum
        if self.tun is not None and not csum and ((tso if tso is not None else self.tun.tso)
                                                   or (uso if uso is not None else self.tun.uso)):
            raise ValueError("segmentation offloads need checksum offload (ethtool -K tx on)")
        if gro is not None:
            self.rx.gro = gro
            if self.tun is not None:
                self.tun.gro = gro
        if rx_flow_hash_udp4 is not None:
            self.set_rx_flow_hash(rx_flow_hash_udp4)
        if self.tun is not None and (tso, uso, tx_checksum) != (None, None, None):
            self.tun.csum = csum
            if tso is not None:
                self.tun.tso = tso
            if uso is not None:
                self.tun.uso = uso
            self._tun_offload()
        return self.get_features()

    # -- the kernel's TUN queues (ipoib._fasttun) ------------------------------------------------

    def tun_offloads(self):
        return True

    def attach_tun(self, fds, mtu, slow):
        """The IP host is the kernel: take over its TUN queues (``fds[q]`` belongs to TX and RX
        queue ``q``; opened with IFF_VNET_HDR). Packets are read and written in C from here on;
        ``slow(q, ethertype, packet)`` takes what the C path leaves to the ULP."""
        if len(fds) != self.ntx:
            raise ValueError(f"{len(fds)} TUN queues for {self.ntx} TX queues")
        self.tun = TunPath(fds, mtu, slow)
        self.tun.gro = self.rx.gro
        self.tun_fds = list(fds)
        self._tun_offload()
        return True

    def _tun_offload(self):
        import fcntl

        TUNSETOFFLOAD = 0x400454D0
        flags = 0
        if self.tun.csum:
            flags |= 0x01  # TUN_F_CSUM
            if self.tun.tso:
                flags |= 0x02 | 0x04  # TUN_F_TSO4, TUN_F_TSO6
            if self.tun.uso:
                flags |= 0x20 | 0x40  # TUN_F_USO4, TUN_F_USO6
        fcntl.ioctl(self.tun_fds[0], TUNSETOFFLOAD, flags)

    def detach_tun(self):
        if self.tun is not None:
            self.tun.quiesce()  # what the TUN writer holds goes up before the fds close
        self.tun = None
        self.tun_fds = None

    def tun_read(self, int q):
        """TUN queue ``q`` is readable: its packets into TX ring ``q`` (TSS: the queue the kernel
        chose), in C. The queue stops when the ring has no room for another super-packet, which
        stops the reads until it drains (the kernel's queue holds the packets meanwhile)."""
        return self._tun_read(q)

    def tun_reader(self, int q):
        """What the IP host's loop calls when TUN queue ``q`` is readable: ``fn(now)`` reads it as
        ``tun_read`` does and returns True when only the data path moved (no frame for the ULP, no
        queue stopped or woken): the host then has no software of the node to run for it."""
        if self.tun is None or not 0 <= q < self.ntx:
            return None
        return _TunReader(self, q)

    cdef Py_ssize_t _tun_read(self, int q) except -1:
        cdef PacketRing ring = <PacketRing> self.rings[q]
        cdef unsigned long long before = ring.pushed
        cdef Py_ssize_t n
        cdef ContextCore c = self.ctx
        if self.tun is None or self._stopped[q]:
            return 0
        n = self.tun.read_queue(q, ring, 64)
        if ring.pushed != before:
            self._qpk[q] += ring.pushed - before
            # the doorbell is rung here, as ndo_start_xmit posts to the send queue: what the kernel
            # handed us leaves now, not after a NAPI pass the host would schedule only for this
            self._drain_tx()
        if ring.slots - ring._count < 64 and not self._stopped[q]:
            self._stop_queue(q)
        return n

    def tun_write(self, int q, bytes data):
        """A frame of the ULP's (TUN header and packet) up on queue ``q``, after what the TUN
        writer's thread still holds for the kernel (a GRO run of the same flow, maybe)."""
        if self.tun is None:
            raise NotSupported("no TUN queues")
        return self.tun.write_frame(q, data)

    def set_neigh(self, bytes ip, ah, unsigned int dqpn):
        """The ULP resolved ``ip``: the C path sends to it without asking again."""
        if self.tun is None:
            raise NotSupported("no TUN queues: the ULP sends every frame")
        self.tun.set_neigh(ip, ah.dlid, ah.sl, dqpn)

    def flush_neigh(self):
        if self.tun is not None:
            self.tun.flush_neigh()

    def set_tun_mtu(self, unsigned int mtu):
        if self.tun is not None:
            self.tun.mtu = mtu

    # -- interrupt moderation (ethtool -c / -C) ------------------------------------------------

    def get_coalesce(self):
        return dict(self.coalesce, rx_usecs_effective=self._rx_usecs_now())

    def set_coalesce(self, rx_usecs=None, rx_frames=None, adaptive=None):
        new = dict(self.coalesce)
        for key, val in (("rx_usecs", rx_usecs), ("rx_frames", rx_frames)):
            if val is None:
                continue
            if isinstance(val, bool) or not isinstance(val, int) or not 0 <= val <= COALESCE_LIMITS[key]:
                raise ValueError(f"{key.replace('_', '-')} must be an integer from 0 to {COALESCE_LIMITS[key]}, "
                                 f"not {val!r}")
            new[key] = val
        if adaptive is not None:
            if not isinstance(adaptive, bool):
                raise ValueError(f"adaptive-rx must be true or false, not {adaptive!r}")
            new["adaptive"] = adaptive
        self.coalesce = new  # all or nothing: a bad value changes nothing
        return self.get_coalesce()

    cpdef _rx_usecs_now(self):
        return self._dim_usecs if self.coalesce["adaptive"] else self.coalesce["rx_usecs"]

    def _adapt(self, now, n):
        if self._win_start is None:
            self._win_start = now
        self._win_packets += n
        span = now - self._win_start
        if span >= ADAPTIVE_WINDOW_S:
            rate = self._win_packets / span
            for limit, usecs in ADAPTIVE_PROFILE:
                if limit is None or rate < limit:
                    self._dim_usecs = usecs
                    break
            self._win_start, self._win_packets = now, 0

    # -- data path -----------------------------------------------------------------------------

    def select_queue(self, packet):
        """The TX queue ``send`` puts this frame on (its flow's hash, as the RX side hashes)."""
        return frame_flow_hash(packet, self.rx.udp_ports) % self.ntx

    cdef PortCore _port_for(self, ah):
        """send's and send_burst's port, Active, and ``ah`` checked (``_ah_dlid``, ``_ah_sl``), or
        NotSupported: what only the standard path takes."""
        cdef ContextCore c = self.ctx
        cdef PortCore port = self._port
        if port is None:
            port = self._port = (<HCACore?> c.hca).ports[c.port]  # the Port object lives as long as the HCA
        if ah is not self._ah or port.lid != self._ah_lid:
            self._check_ah(ah, port)
        if port.state != 4:
            raise NotSupported("a port that is not Active: the standard path refuses and counts it")
        return port

    cdef _check_ah(self, ah, PortCore port):
        """An AddressHandle is immutable and a path reuses one for every frame: send and send_burst
        check it once and keep it (again when our LID changes, for the loopback test)."""
        cdef unsigned int dlid
        self._ah = None
        dlid = ah.dlid
        if ah.dgid is not None or ah.src_path_bits:
            raise NotSupported("multicast takes the standard path")
        if <unsigned int> (dlid - <unsigned int> port.lid) < (1u << port.lmc):
            raise NotSupported("loopback to our own LID takes the standard path")
        self._ah_dlid = dlid
        self._ah_sl = ah.sl
        self._ah_lid = port.lid
        self._ah = ah

    cpdef send(self, packet, ah, dqpn):
        cdef ContextCore c = self.ctx
        cdef PortCore port
        cdef unsigned int dlid, q
        cdef const unsigned char[::1] view
        cdef const unsigned char *f
        cdef Py_ssize_t n
        cdef PacketRing ring
        if not self._up:
            raise NotSupported("stopped devices take the standard path")
        port = self._port_for(ah)
        dlid = self._ah_dlid
        if type(packet) is GsoPacket:
            return self._send_gso(packet, dlid, dqpn, port)
        if type(packet) is bytes:
            f = <const unsigned char *> PyBytes_AS_STRING(packet)
            n = len(<bytes> packet)
        else:
            view = packet
            n = view.shape[0]
            f = &view[0] if n else <const unsigned char *> b""
        if n > _mtu_octets(port.neighbor_mtu):
            raise NotSupported("over the MTU: the standard path drops and counts it")
        q = flow_hash(f, n, self.rx.udp_ports) % self.ntx
        ring = <PacketRing> self.rings[q]
        if self._stopped[q] or not ring._push_ud(dlid, self._ah_sl, dqpn, f, n):
            c.stats["tx_busy"] += 1
            self._qbusy[q] += 1
            if not self._stopped[q]:
                self._stop_queue(q)
            return BUSY
        self._qpk[q] += 1
        self._qby[q] += n
        if ring._count >= ring.slots:
            self._stop_queue(q)
        if not self._kicked:
            self._kicked = True
            self._sw = True
            c.schedule_poll()
        return OK

    cdef _send_gso(self, packet, unsigned int dlid, unsigned int dqpn, port):
        """UDP segmentation offload: the whole GSO packet to one TX queue (one flow), cut up in C."""
        cdef const unsigned char *f = <const unsigned char *> PyBytes_AS_STRING(packet)
        cdef Py_ssize_t n = len(<bytes> packet), gso = packet.gso_size, l3 = packet.l3
        cdef Py_ssize_t segs
        cdef unsigned int q
        cdef PacketRing ring
        cdef ContextCore c = self.ctx
        if (gso < 1 or l3 < 0 or n < l3 + 28 or (f[l3] != 0x45) or f[l3 + 9] != 17
                or l3 + 28 + gso > _mtu_octets(port.neighbor_mtu)):
            raise NotSupported("a GSO packet we do not offload: the standard path segments it in software")
        segs = (n - l3 - 28 + gso - 1) // gso if n > l3 + 28 else 1
        q = flow_hash(f, n, self.rx.udp_ports) % self.ntx
        ring = <PacketRing> self.rings[q]
        if self._stopped[q] or ring.slots - ring._count < segs:
            c.stats["tx_busy"] += 1
            self._qbusy[q] += 1
            if not self._stopped[q]:
                self._stop_queue(q)
            return BUSY
        self._qby[q] += push_gso(ring, dlid, self._ah_sl, dqpn, f, n, gso, l3)
        self._qpk[q] += segs
        if ring._count >= ring.slots:
            self._stop_queue(q)
        if not self._kicked:
            self._kicked = True
            self._sw = True
            c.schedule_poll()
        return OK

    def _stop_queue(self, q):
        self._stopped[q] = True
        self._qstops[q] += 1
        self.ctx.stats["tx_stops"] += 1
        self._sw = True
        self.ctx.stop_queue(q)

    cpdef send_burst(self, frames, ah, dqpn):
        """Queue many frames to one destination (a burst API for the data path): returns how many
        were taken, stopping at the first whose queue is full. One C loop: TSS, copy, counts."""
        cdef ContextCore c = self.ctx
        cdef list fl = frames if type(frames) is list else list(frames)
        cdef Py_ssize_t i, nf = len(fl), n, mtu, done = 0
        cdef unsigned int q, last_q, dlid, sl, dq = dqpn, nq = self.ntx
        cdef const unsigned char *f
        cdef const unsigned char[::1] view
        cdef PacketRing ring = None
        cdef PortCore port
        cdef PyObject *po
        cdef unsigned long long pk[64]
        cdef unsigned long long by[64]
        cdef bint udp_ports = self.rx.udp_ports
        if c.qp is None or not c.running:
            raise NotSupported("stopped devices take the standard path")
        port = self._port_for(ah)
        dlid = self._ah_dlid
        sl = self._ah_sl
        mtu = _mtu_octets(port.neighbor_mtu)
        # the frames as borrowed references (the list holds them): no reference count written per
        # frame, which for a burst of one frame object repeated is a chain of writes to one word
        for i in range(nf):
            if i >= len(fl):  # a frame's __len__ (Python code) shortened the list: the rest is gone
                nf = i
                break
            po = PyList_GET_ITEM(fl, i)
            if _bytes_exact(po):
                n = _bytes_size(po)
            else:
                obj = <object> po
                n = mtu + 1 if type(obj) is GsoPacket else len(obj)
            if n > mtu:
                raise NotSupported("a frame over the MTU or a GSO packet: the standard path takes the burst")
        nf = min(nf, len(fl))
        for q in range(nq):
            pk[q] = 0
            by[q] = 0
        last_q = nq  # the ring of the frame before: one reference taken per change of queue
        for i in range(nf):
            po = PyList_GET_ITEM(fl, i)
            if _bytes_exact(po):
                f = <const unsigned char *> _bytes_data(po)
                n = _bytes_size(po)
            else:
                view = <object> po
                n = view.shape[0]
                f = &view[0] if n else <const unsigned char *> b""
            q = flow_hash(f, n, udp_ports) % nq
            if q != last_q:
                ring = <PacketRing> self.rings[q]
                last_q = q
            if not ring._push_ud(dlid, sl, dq, f, n):
                break
            pk[q] += 1
            by[q] += n
            done += 1
        for q in range(nq):
            if pk[q]:
                self._qpk[q] += pk[q]
                self._qby[q] += by[q]
        if done < nf:
            c.stats["tx_busy"] += 1  # one refusal per burst, as a burst of single sends stops at one
            for q in range(nq):
                ring = <PacketRing> self.rings[q]
                if ring._count >= ring.slots and not self._stopped[q]:
                    self._qbusy[q] += 1
                    self._stop_queue(q)
        if done and not self._kicked:
            self._kicked = True
            self._sw = True
            c.schedule_poll()
        return done

    cpdef poll(self, budget):
        """NAPI: transmit what the TX rings hold, then serve each RX queue up to ``budget``
        frames (and the slow path's). Interrupts stay masked until every queue is drained."""
        cdef ContextCore c = self.ctx
        st = c.stats
        self._drain_tx()
        if self.timer is not None and c.now() >= self.timer:
            self._interrupt()  # the rx-usecs timer fired
        done = 0
        left = False
        cdef RxEngine rx = self.rx
        cdef int q
        try:
            if rx.pending:
                st["napi_polls"] += 1
                deliver, sink, reflect = c.deliver, c.rx_sink, c.reflect
                for q in range(self.nrx):
                    if not (<_Ring> rx.rings[q])._count:
                        continue  # an empty queue has nothing to poll
                    n = rx.poll_queue(q, budget, deliver, self._infos, _rx_info, sink, reflect, self.tun)
                    if n:
                        self.rx_polls[q] += 1
                        done += n
                        if n >= budget:
                            self.rx_exhausted[q] += 1
                left = rx.pending > 0
            if c.rxq or c.sendq:
                done += self._std.poll(budget)  # the slow path's frames (and the sink's mark)
            elif done and c.rx_sink is not None:
                c.rx_sink.mark(c.now())  # what std.poll would have done for the sink, and only that
        except BaseException:
            # what the stack above did with a frame raised: NAPI must not stay marked as running
            # with nobody to run it, or no interrupt would ever come again
            self.napi_scheduled = False
            self.timer = None
            if self.rx.pending or c.rxq:
                self._sw = True
                c.schedule_poll()
            raise
        if c.rx_sink is not None and c.rx_sink.echo:
            self._drain_tx()  # the answers leave in this same poll
        if left:
            self._sw = True
            c.schedule_poll()  # budget spent: NAPI stays scheduled
        elif self.napi_scheduled:
            self.napi_scheduled = False  # napi_complete: interrupts on again
            self.timer = None
        return done

    cdef _drain_tx(self):
        """Build what the TX rings hold into one link burst (or refuse it on a port that is down)."""
        cdef PacketRing r
        cdef int q
        cdef unsigned long long total = 0, words = 0, octets = 0
        cdef unsigned int slid, pkey, qkey, src_qp
        cdef ContextCore c
        cdef QPCore qp
        cdef PortCore port
        cdef HCACore hca
        self._kicked = False
        for q in range(self.ntx):
            if (<PacketRing> self.rings[q])._count:
                break
        else:
            return  # nothing queued: the common case of a poll for received frames
        c = self.ctx
        qp = c.qp
        if qp is None:
            return
        hca = c.hca
        port = hca.ports[c.port]
        if port.phys != PHYS_LINKUP or port.state != 4:
            self._discard_tx()
            return
        seg = PyByteArray_FromStringAndSize(NULL, _HEADROOM)  # the host writes the burst header there
        memset(PyByteArray_AS_STRING(seg), 0, _HEADROOM)
        qpn = qp.qpn
        slid, pkey, qkey, src_qp = port.lid, port.pkeys[qp.pkey_index], qp.qkey, qpn
        for q in range(self.ntx):
            r = <PacketRing> self.rings[q]
            if r._count:
                total += r.drain_ud_c(seg, slid, pkey, qkey, src_qp, TX_SLOTS, &words, &octets)
            if self._stopped[q] and r._count <= TX_SLOTS // 2:
                self._stopped[q] = False
                self._qwakes[q] += 1
                c.stats["tx_wakes"] += 1
                self._sw = True
                c.wake_queue(q)
        if total:
            st = c.stats
            st["tx_packets"] += total
            st["tx_bytes"] += octets
            # the HCA counts and sends it: HCA.post_segment, its compiled body called in C unless
            # the HCA's class or the HCA itself has another (the std backend's, a test's spy)
            if class_unchanged(type(hca), &self._hps_tag, _HPS_METHODS) and not_patched(hca, "post_segment"):
                hca_post_segment_qp(hca, port, qp, c.port, total, words, seg)
            else:
                hca.post_segment(qpn, c.port, total, words, seg)

    cdef _discard_tx(self):
        """The port went down under queued frames: the HCA refuses each, as the standard path's
        post_send would (PortXmitDiscards), without our building it; the queues wake."""
        cdef PacketRing ring
        cdef ContextCore c = self.ctx
        st = c.stats
        for q in range(self.ntx):
            ring = <PacketRing> self.rings[q]
            slots = ring.pop_many(TX_SLOTS)
            if not slots:
                continue
            n = len(slots)
            c.hca.refuse_sends(c.port, n)
            st["tx_packets"] += n  # the standard poll counts a send it handed to the HCA, taken or not
            st["tx_bytes"] += sum(len(x) - META for x in slots)
            if self._stopped[q]:
                self._stopped[q] = False
                self._qwakes[q] += 1
                st["tx_wakes"] += 1
                self._sw = True
                c.wake_queue(q)

    cdef _raise_irq(self):
        """The interrupt itself: the moderation timer is done, NAPI is on (interrupts masked)."""
        self.timer = None
        self.napi_scheduled = True
        self.interrupts += 1
        self.ctx.stats["interrupts"] += 1

    def _interrupt(self):
        self._raise_irq()
        self._sw = True
        self.ctx.schedule_poll()

    cdef bint _napi_now(self) except -1:
        """The interrupt, and the NAPI poll right after it, as the kernel runs net_rx_action on
        the interrupt's way out, for frames that go up to the kernel's TUN queues in C: the node's
        software is not woken to run the poll a moment later. True when nothing was left for the
        software (every frame went up in C, no queue stopped or woke, nothing is left to poll)."""
        cdef ContextCore c = self.ctx
        cdef RxEngine rx = self.rx
        cdef unsigned long long up = rx.up_calls
        self._raise_irq()
        self.napi_direct += 1
        self._sw = False
        try:
            self.poll(NAPI_WEIGHT)
        except Exception:  # poll left NAPI rescheduled: the node's own poll tries again
            traceback.print_exc()
            c.stats["poll_errors"] = c.stats.get("poll_errors", 0) + 1  # as the node counts its polls'
            return False
        return not self._sw and rx.up_calls == up and not self.napi_scheduled

    # -- called by RxDispatch -------------------------------------------------------------------

    cpdef _rx_refresh(self, RxEngine engine, port):
        """Per burst: the P_Key and Q_Key the QP receives with now (the SM or the ULP may have
        changed them) and whether the compiled path may take packets for it."""
        cdef ContextCore c = self.ctx
        cdef QPCore qp = c.qp
        cdef PortCore p = port
        # while the per-packet path holds frames for us, new ones queue behind them, not past them
        ok = qp is not None and c.running and p.num == c.port and qp.qpn == engine.qpn and not c.rxq
        if ok:
            idx = qp.pkey_index
            ok = 0 <= idx < len(p.pkeys)
            if ok:
                engine.pkey = p.pkeys[idx]
                engine.qkey = qp.qkey
        engine.enabled = ok

    cpdef _rx_event(self, RxEngine engine, now):
        """Frames arrived in our rings: fold the counts into the statistics and raise an
        interrupt now, or arm the rx-usecs timer, as moderation says. True: the frames are up
        already and the node's software has nothing new to do (see ``_napi_now``)."""
        cdef ContextCore c = self.ctx
        st = c.stats
        n, ovf = engine.fresh_packets, engine.fresh_overflow
        st["rx_packets"] += n
        st["rx_bytes"] += engine.fresh_bytes
        if ovf:
            st["rx_overflow"] += ovf
            st["rx_dropped"] += ovf
        engine.fresh_packets = engine.fresh_bytes = engine.fresh_overflow = 0
        if self.coalesce["adaptive"]:
            self._adapt(now, n)
        if self.napi_scheduled or not n:
            return False  # interrupts are masked while NAPI runs
        usecs = self._rx_usecs_now()
        frames = self.coalesce["rx_frames"]
        if usecs == 0 or (frames and engine.pending >= frames):
            if self.tun is not None and DIRECT_NAPI and not c.rxq and not c.sendq and c.rx_sink is None:
                return self._napi_now()
            self._interrupt()
        elif self.timer is None:
            self.timer = now + usecs * 1e-6
            self._sw = True
            c.arm_timer(self.timer)
        return False

    def tx_timeout(self, queue):
        cdef ContextCore c = self.ctx
        c.sendq.clear()
        self._kicked = False
        for q, ring in enumerate(self.rings):
            ring.pop_many(TX_SLOTS)
            if self._stopped[q]:
                self._stopped[q] = False
                self._qwakes[q] += 1
                c.stats["tx_wakes"] += 1
                self._sw = True
                c.wake_queue(q)
        if c.queue_stopped:
            c.queue_stopped = False
            self._sw = True
            c.wake_queue(queue)

    def queue_stats(self):
        """Per-queue counters, like ``ethtool -S``."""
        out = {}
        for q, ring in enumerate(self.rings):
            out[f"tx{q}_packets"] = self._qpk[q]
            out[f"tx{q}_bytes"] = self._qby[q]
            out[f"tx{q}_busy"] = self._qbusy[q]
            out[f"tx{q}_stops"] = self._qstops[q]
            out[f"tx{q}_wakes"] = self._qwakes[q]
            out[f"tx{q}_queued"] = len(ring)
        out.update(self.rx.queue_stats())
        for q in range(self.nrx):
            out[f"rx{q}_napi_polls"] = self.rx_polls[q]
            out[f"rx{q}_budget_exhausted"] = self.rx_exhausted[q]
        out["interrupts"] = self.interrupts
        out["napi_direct"] = self.napi_direct
        if self.tun is not None:
            out.update(self.tun.stats())
        return out


cdef inline Py_ssize_t _mtu_octets(object code):
    """IBA MTU code -> octets (256 << (code - 1)), 4096 for anything else."""
    cdef long c = code
    return (256 << (c - 1)) if 1 <= c <= 5 else 4096


@cython.final
cdef class _FastOp:
    """One rdma_netdev op of the fast provider, dispatched in C (see ``Provider.bind_op``)."""

    cdef Provider prov
    cdef int which      # 0 send, 1 send_burst, 2 poll
    cdef object op
    cdef object standard
    cdef dict served_by
    cdef dict fallbacks
    cdef int last       # who served last: 0 nobody yet, 1 provider, 2 standard

    def __cinit__(self, Provider prov, op, standard, dict served_by, dict fallbacks):
        self.prov = prov
        self.op = op
        self.which = ("send", "send_burst", "poll").index(op)
        self.standard = standard
        self.served_by = served_by
        self.fallbacks = fallbacks

    def __call__(self, *args):
        try:
            if self.which == 0:
                out = self.prov.send(args[0], args[1], args[2])
            elif self.which == 1:
                out = self.prov.send_burst(args[0], args[1], args[2])
            else:
                out = self.prov.poll(args[0])
        except NotSupported:
            self.fallbacks[self.op] = self.fallbacks.get(self.op, 0) + 1
            self.served_by[self.op] = "standard"
            self.last = 2
            return self.standard(*args)
        if self.last != 1:  # only this op writes its entry: it is right while ``last`` is
            self.served_by[self.op] = "provider"
            self.last = 1
        return out

    @property
    def __name__(self):
        return self.op


def _rx_info(slid, pkey, src_qp):
    return RxInfo(slid, src_qp, pkey, None, None)


@cython.final
cdef class _TunReader:
    """``Provider.tun_reader(q)``: the host loop's call for a readable TUN queue, in C."""

    cdef Provider prov
    cdef int q

    def __cinit__(self, Provider prov, int q):
        self.prov = prov
        self.q = q

    def __call__(self, now):
        cdef Provider p = self.prov
        cdef TunPath tun = p.tun
        cdef unsigned long long slow
        if tun is None:
            return False  # detached: nothing of ours to read
        slow = tun.tx_slow + tun.tx_not_ip
        p._sw = False
        p._tun_read(self.q)
        return not p._sw and tun.tx_slow + tun.tx_not_ip == slow
