# cython: language_level=3
"""The receive side of the accelerated data path: the HCA's compiled receive path for IPoIB QPs
(:class:`RxDispatch`), the RSS rings it fills (:class:`RxEngine`, drained by NAPI with GRO) and the
driver-level receive hook (:class:`UdpSink`)."""

from libc.string cimport memcmp, memcpy, memset
from libc.stdint cimport uint16_t, uint32_t
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from fabric._corefast cimport PortCore
from fabric._wirefast cimport crcs_ok_local
from ipoib._fasttun cimport TunPath
from ipoib._fastring cimport NOGIL_COPY, PacketRing, csum_add, csum_fold, flow_hash
from ipoib._fastring import ring_set

from ipoib.gso import GsoPacket
from fabric.wire import ParseError

cdef enum:
    RXMETA = 8      # RX slot header: SLID(2) P_Key(2) SrcQP(4), then the IPoIB frame
    GRH_AREA = 40   # receive buffers start with room for a GRH (ipoib_ib.c: IB_GRH_BYTES)
    UD_HDRS = 28    # LRH BTH DETH

INFO_CACHE = 1024  # RxInfo objects kept for reuse, one per (SLID, P_Key, SrcQP)


cdef inline Py_ssize_t _gro_payload(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    """The UDP payload length of an IPoIB frame GRO may coalesce, or -1: IPv4 without options or
    ECN, UDP, not a fragment, exact lengths, and both checksums valid and in the form our own
    stack writes them (so that ipoib.gso.segment gives back exactly the datagrams coalesced)."""
    cdef unsigned int tot, ulen, c
    cdef unsigned long long acc
    if n < 4 + 28 or p[0] != 0x08 or p[1] != 0x00 or p[4] != 0x45 or (p[5] & 3) or p[13] != 17:
        return -1
    if (p[10] & 0xBF) or p[11]:
        return -1
    tot = (p[6] << 8) | p[7]
    ulen = (p[28] << 8) | p[29]
    if tot != <unsigned int> (n - 4) or ulen != tot - 20 or ulen <= 8:
        return -1
    acc = csum_add(0, p + 4, 10)
    acc = csum_add(acc, p + 16, 8)
    c = (~csum_fold(acc)) & 0xFFFF
    if <unsigned int> ((p[14] << 8) | p[15]) != c:
        return -1
    acc = csum_add(0, p + 16, 8)
    acc += 17 + ulen
    acc = csum_add(acc, p + 24, 6)
    acc = csum_add(acc, p + 32, ulen - 8)
    c = (~csum_fold(acc)) & 0xFFFF
    if c == 0:
        c = 0xFFFF
    if <unsigned int> ((p[30] << 8) | p[31]) != c:
        return -1
    return ulen - 8


cdef inline bint _gro_same_flow(const unsigned char *a, const unsigned char *b, unsigned int k) noexcept nogil:
    """``b`` (with its slot header) continues ``a``'s run as its ``k``-th datagram: the same
    sender, link header and IP and UDP headers but for lengths, checksums and an identification
    ``k`` higher."""
    cdef unsigned int ia, ib
    if memcmp(a, b, RXMETA + 6) != 0:          # slot header (SLID, P_Key, SrcQP), IPoIB, IP ver/TOS
        return False
    a += RXMETA
    b += RXMETA
    if memcmp(a + 10, b + 10, 4) != 0 or memcmp(a + 16, b + 16, 12) != 0:
        return False                              # flags, TTL, protocol; addresses and ports
    ia = (a[8] << 8) | a[9]
    ib = (b[8] << 8) | b[9]
    return ((ia + k) & 0xFFFF) == ib


cdef class UdpSink:
    """A receive hook at the driver, like an XDP program that counts and drops: IPoIB frames that
    carry a whole UDP datagram to ``port`` are counted and consumed before the IP stack (the same
    rule as ``ipoib._stdpath.UdpSink``; the fast provider runs it in C on the ring slot)."""

    cdef readonly unsigned int port
    cdef readonly bint echo
    cdef readonly unsigned long long packets
    cdef readonly unsigned long long bytes
    cdef readonly object first
    cdef readonly object last
    cdef unsigned long long _seen

    def __cinit__(self, port, echo=False):
        if not 0 < int(port) < 65536:
            raise ValueError(f"UDP port must be 1 to 65535, not {port!r}")
        self.port = int(port)
        self.echo = bool(echo)  # reflect each one to its sender instead (XDP_TX), for latency

    cdef inline bint _consume(self, const unsigned char *f, Py_ssize_t n) noexcept:
        cdef Py_ssize_t ihl, ulen
        if n < 4 + 28 or f[0] != 0x08 or f[1] != 0x00:
            return False
        ihl = (f[4] & 0xF) * 4
        if (f[4] >> 4) != 4 or f[13] != 17 or (f[10] & 0x3F) or f[11] or n - 4 < ihl + 8:
            return False
        if <unsigned int> ((f[4 + ihl + 2] << 8) | f[4 + ihl + 3]) != self.port:
            return False
        ulen = (f[4 + ihl + 4] << 8) | f[4 + ihl + 5]
        if ulen < 8 or ulen > n - 4 - ihl:
            return False  # a UDP length that does not fit: not a whole datagram, the stack drops it
        self.packets += 1
        self.bytes += ulen - 8
        return True

    def consume(self, const unsigned char[::1] frame not None, Py_ssize_t off=0):
        if off < 0 or off > frame.shape[0]:
            return False
        return self._consume(&frame[0] + off if frame.shape[0] else <const unsigned char *> b"",
                             frame.shape[0] - off)

    def reflect(self, frame, Py_ssize_t off=0):
        """The frame that answers ``frame[off:]``: IPv4 addresses and UDP ports swapped (both
        checksums stay valid: a sum does not depend on the order of its terms)."""
        cdef bytearray f = bytearray(frame[off:])
        cdef unsigned char *p = <unsigned char *> PyByteArray_AS_STRING(f)
        cdef Py_ssize_t ihl = (p[4] & 0xF) * 4 if len(f) > 4 else 0
        cdef unsigned char t[4]
        if ihl < 20 or len(f) < 4 + ihl + 8:
            raise ValueError("not an IPoIB frame with an IPv4 header and a UDP header")
        memcpy(t, p + 16, 4)
        memcpy(p + 16, p + 20, 4)
        memcpy(p + 20, t, 4)
        memcpy(t, p + 4 + ihl, 2)
        memcpy(p + 4 + ihl, p + 6 + ihl, 2)
        memcpy(p + 6 + ihl, t, 2)
        return bytes(f)

    def mark(self, now):
        if self.packets != self._seen:
            self._seen = self.packets
            if self.first is None:
                self.first = now
            self.last = now

    def result(self):
        return {"packets": self.packets, "bytes": self.bytes,
                "seconds": (self.last - self.first) if self.first is not None else 0.0}


cdef class RxOwner:
    """The owner of an RxEngine: ``_rx_refresh(engine, port)`` before a burst (may the compiled
    path take packets for its QP, with which P_Key and Q_Key), ``_rx_event(engine, now)`` after
    it (frames arrived: True when they are up already with nothing for the node's software).
    The fast provider subclasses it, so a burst calls it without a Python method lookup."""

    cpdef _rx_refresh(self, RxEngine engine, port):
        engine.enabled = False

    cpdef _rx_event(self, RxEngine engine, now):
        return False


cdef class RxEngine:
    """The receive side of one IPoIB QP: ``nq`` RSS rings of preallocated slots, plus counters.

    Filled by :class:`RxDispatch` straight from a link burst, drained by ``poll_queue`` (NAPI).
    ``fresh_*`` count what arrived since the provider last folded them into its statistics.
    """

    def __cinit__(self, int nq, Py_ssize_t slots, Py_ssize_t frame_max, RxOwner owner not None):
        if nq < 1 or nq > 64:
            raise ValueError("an RX engine has 1 to 64 queues")
        self.nq = nq
        self.rings = ring_set(PacketRing, nq, slots, RXMETA + frame_max)
        self.frame_max = frame_max  # longer frames (over any MTU) go the per-packet way
        self.owner = owner
        self.enabled = False
        self.gro = True  # on by default, as Linux's; what no socket asked to get whole is split again

    @property
    def pending(self):
        cdef Py_ssize_t n = 0
        cdef PacketRing r
        for r in self.rings:
            n += r._count
        return n

    cdef inline bint _take(self, const unsigned char *p, Py_ssize_t n, unsigned int slid,
                           unsigned int src_qp) noexcept:
        """Queue one IPoIB frame (RSS by flow); False when its ring is full (counted there)."""
        cdef unsigned int q = flow_hash(p, n, self.udp_ports) % self.nq
        cdef PacketRing ring = <PacketRing> self.rings[q]
        cdef Py_ssize_t slot = ring._reserve(n + RXMETA)
        cdef unsigned char *dst
        if slot < 0:
            self.fresh_overflow += 1
            return False
        dst = ring._buf + slot * ring.slot_size
        dst[0] = (slid >> 8) & 0xFF
        dst[1] = slid & 0xFF
        dst[2] = (self.pkey >> 8) & 0xFF
        dst[3] = self.pkey & 0xFF
        dst[4] = 0
        dst[5] = (src_qp >> 16) & 0xFF
        dst[6] = (src_qp >> 8) & 0xFF
        dst[7] = src_qp & 0xFF
        if n >= NOGIL_COPY:
            with nogil:
                memcpy(dst + RXMETA, p, n)
        else:
            memcpy(dst + RXMETA, p, n)
        ring._commit(slot, n + RXMETA)
        self.fresh_packets += 1
        self.fresh_bytes += n
        self._rx_bytes[q] += n
        return True

    def poll_queue(self, int q, Py_ssize_t budget, deliver, dict infos, make_info, sink=None, reflect=None,
                   TunPath tun=None):
        """NAPI poll of RX queue ``q``: hand up to ``budget`` frames (each after a 40-octet GRH
        area, as the standard provider delivers them) to ``deliver(frame, info)``. ``infos``
        caches the RxInfo of each (SLID, P_Key, SrcQP); ``make_info(slid, pkey, src_qp)`` makes one.
        With ``tun`` (the kernel is the IP host), IPv4 frames go up to its TUN queue ``q`` in C,
        consecutive TCP segments of a flow as one super-packet (GRO); the rest as above."""
        cdef PacketRing ring = <PacketRing> self.rings[q]
        cdef Py_ssize_t done = 0, slot, n, m, k, j, s
        cdef const unsigned char *ptrs[64]
        cdef Py_ssize_t lens[64]
        cdef unsigned char *src
        cdef bytes frame
        cdef char *dst
        cdef unsigned long long key
        cdef unsigned int slid, pkey, src_qp
        cdef UdpSink csink = sink if isinstance(sink, UdpSink) else None
        while done < budget and ring._count > 0:
            slot = ring._head
            src = ring._buf + slot * ring.slot_size
            n = ring._len[slot] - RXMETA
            if tun is not None and csink is None and n >= 24 and src[RXMETA] == 0x08 and src[RXMETA + 1] == 0:
                # the IPv4 frames from here on, in ring order, up to the budget: pointers into the slots
                m = 0
                s = slot
                while m < 64 and m < ring._count and done + m < budget:
                    src = ring._buf + s * ring.slot_size
                    if ring._len[s] < RXMETA + 24 or src[RXMETA] != 0x08 or src[RXMETA + 1] != 0:
                        break
                    ptrs[m] = src + RXMETA
                    lens[m] = ring._len[s] - RXMETA
                    m += 1
                    s = s + 1 if s + 1 < ring.slots else 0
                j = 0
                while j < m:  # runs: each one write (a single frame, or a GRO super-packet)
                    k = tun.gro_run_len(&ptrs[j], &lens[j], m - j)
                    tun.write_run(q, &ptrs[j], &lens[j], k)
                    j += k
                ring._head = (ring._head + m) % ring.slots
                ring._count -= m
                ring.popped += m
                done += m
                continue
            self.up_calls += 1  # from here on, every frame goes to Python (or an echo may)
            if csink is not None and csink._consume(src + RXMETA, n):
                echo = None
                if csink.echo and reflect is not None:  # taken before the slot is given back
                    echo = csink.reflect(PyBytes_FromStringAndSize(<char *> src + RXMETA, n))
                    slid = (src[0] << 8) | src[1]
                    src_qp = (src[5] << 16) | (src[6] << 8) | src[7]
                ring._head = slot + 1 if slot + 1 < ring.slots else 0  # counted and dropped in place
                ring._count -= 1
                ring.popped += 1
                done += 1
                if echo is not None:
                    reflect(echo, slid, src_qp)
                continue
            if self.gro and sink is None and ring._count > 1 and budget - done > 1:
                run = self._gro_run(ring, budget - done)
                if run > 1:
                    slid = (src[0] << 8) | src[1]
                    pkey = (src[2] << 8) | src[3]
                    src_qp = (src[5] << 16) | (src[6] << 8) | src[7]
                    frame = self._gro_take(ring, run)
                    done += run
                    self.gro_runs += 1
                    self.gro_packets += run
                    key = (<unsigned long long> slid << 40) | (<unsigned long long> pkey << 24) | src_qp
                    if key != self._last_key or self._last_info is None:
                        info = infos.get(key)
                        if info is None:
                            if len(infos) >= INFO_CACHE:
                                infos.clear()
                            info = infos[key] = make_info(slid, pkey, src_qp)
                        self._last_key, self._last_info = key, info
                    deliver(GsoPacket(frame, self._gro_size, GRH_AREA + 4), self._last_info)
                    continue
            frame = PyBytes_FromStringAndSize(NULL, GRH_AREA + n)
            dst = PyBytes_AS_STRING(frame)
            memset(dst, 0, GRH_AREA)
            memcpy(dst + GRH_AREA, src + RXMETA, n)
            slid = (src[0] << 8) | src[1]
            pkey = (src[2] << 8) | src[3]
            src_qp = (src[5] << 16) | (src[6] << 8) | src[7]
            # the slot is free before the frame goes up: what the ULP does with it may re-enter us
            ring._head = slot + 1 if slot + 1 < ring.slots else 0
            ring._count -= 1
            ring.popped += 1
            key = (<unsigned long long> slid << 40) | (<unsigned long long> pkey << 24) | src_qp
            done += 1
            if sink is not None and csink is None and sink.consume(frame, GRH_AREA):
                if sink.echo and reflect is not None:
                    reflect(sink.reflect(frame, GRH_AREA), slid, src_qp)
                continue
            if key != self._last_key or self._last_info is None:  # most frames come from one peer
                info = infos.get(key)
                if info is None:
                    if len(infos) >= INFO_CACHE:  # senders pick their QPNs: keep the cache bounded
                        infos.clear()
                    info = infos[key] = make_info(slid, pkey, src_qp)
                self._last_key, self._last_info = key, info
            deliver(frame, self._last_info)
        return done

    cdef Py_ssize_t _gro_run(self, PacketRing ring, Py_ssize_t limit):
        """How many frames from the ring's head form one GRO run (1 when none does)."""
        cdef Py_ssize_t slot = ring._head, k = 1, slot_k, n0, nk, p0, pk, total
        cdef unsigned char *a = ring._buf + slot * ring.slot_size
        cdef unsigned char *b
        n0 = ring._len[slot] - RXMETA
        p0 = _gro_payload(a + RXMETA, n0)
        if p0 <= 0:
            return 1
        total = p0
        while k < ring._count and k < limit and k < 64:
            slot_k = ring._head + k
            if slot_k >= ring.slots:
                slot_k -= ring.slots
            b = ring._buf + slot_k * ring.slot_size
            nk = ring._len[slot_k] - RXMETA
            pk = _gro_payload(b + RXMETA, nk)
            if pk <= 0 or pk > p0 or total + pk + 28 > 0xFFFF or not _gro_same_flow(a, b, <unsigned int> k):
                break
            total += pk
            k += 1
            if pk < p0:
                break  # a shorter datagram ends a run
        self._gro_size = p0
        return k

    cdef bytes _gro_take(self, PacketRing ring, Py_ssize_t run):
        """Pop ``run`` frames as one: GRH area, the first frame's IPoIB, IP and UDP headers, then
        every payload."""
        cdef Py_ssize_t i, slot, n, total = 0, off
        cdef unsigned char *p
        for i in range(run):
            slot = ring._head + i
            if slot >= ring.slots:
                slot -= ring.slots
            total += ring._len[slot] - RXMETA - 32
        cdef bytes out = PyBytes_FromStringAndSize(NULL, GRH_AREA + 32 + total)
        cdef char *d = PyBytes_AS_STRING(out)
        memset(d, 0, GRH_AREA)
        memcpy(d + GRH_AREA, ring._buf + ring._head * ring.slot_size + RXMETA, 32)
        off = GRH_AREA + 32
        for i in range(run):
            slot = ring._head
            p = ring._buf + slot * ring.slot_size
            n = ring._len[slot] - RXMETA - 32
            memcpy(d + off, p + RXMETA + 32, n)
            off += n
            ring._head = slot + 1 if slot + 1 < ring.slots else 0
            ring._count -= 1
            ring.popped += 1
        return out

    def clear(self):
        cdef PacketRing r
        for r in self.rings:
            r._head = 0
            r._count = 0

    def queue_stats(self):
        cdef PacketRing r
        out = {}
        for q in range(self.nq):
            r = self.rings[q]
            out[f"rx{q}_packets"] = r.pushed
            out[f"rx{q}_bytes"] = int(self._rx_bytes[q])
            out[f"rx{q}_overflow"] = r.dropped_full
            out[f"rx{q}_queued"] = r._count
        out["rx_gro_runs"] = self.gro_runs
        out["rx_gro_packets"] = self.gro_packets
        return out


cdef class RxDispatch:
    """An HCA's compiled receive path (``hca.rx_accel``): a link burst is checked packet by packet
    in C against the checks of ``fabric.devices.ingress.HCA_INGRESS`` that a unicast UD SEND to an
    IPoIB QP can fail (length, LRH, DLID, BTH, destination QP, P_Key, Q_Key, VCRC, ICRC). Those that
    pass every check go straight into the QP's RSS rings. Everything else (multicast, GRH,
    management, any packet that fails a check) is returned to the HCA's per-packet path, which
    delivers, drops and counts it by that same table. It counts nothing on the HCA: it tells the HCA
    what it took, and the HCA counts."""

    cdef public dict engines   # QPN -> RxEngine
    cdef readonly unsigned long long fast_packets
    # after a call: every packet was taken and is up already, with nothing for the node's software
    # to do (the HCA's host may skip waking it; fabric.host._localfast reads it)
    cdef readonly bint quiet

    def __cinit__(self):
        self.engines = {}

    def add(self, RxEngine engine not None):
        self.engines[engine.qpn] = engine

    def remove(self, unsigned int qpn):
        self.engines.pop(qpn, None)

    def __call__(self, port, burst, Py_ssize_t offset, Py_ssize_t count, now):
        """``(slow, taken, words, [(qpn, n), ...])``: the packets left to the per-packet path, how
        many were taken and their 4-octet words (the port's counters), and each QP's share.
        ``burst`` is any object with a contiguous buffer (a bytearray of the host's, a socket's
        bytes): read through a plain buffer, not a typed memoryview, whose set-up (the format
        checked, a view object made) cost as much as the rest of a lone packet's receive."""
        cdef Py_buffer view
        PyObject_GetBuffer(burst, &view, PyBUF_SIMPLE)
        try:
            return self._receive(port, <const unsigned char *> view.buf, view.len, offset, count, now)
        finally:
            PyBuffer_Release(&view)

    cdef tuple _receive(self, port, const unsigned char *burst, Py_ssize_t n, Py_ssize_t offset, Py_ssize_t count,
                        now):
        cdef Py_ssize_t off = offset, i, plen, fn
        cdef const unsigned char *p
        cdef unsigned int lid, span, dlid, pad, dqp, last_qpn = 0xFFFFFFFF
        cdef unsigned long long taken = 0, words = 0
        cdef uint16_t c
        cdef RxEngine eng = None
        cdef RxEngine e
        cdef list slow = []
        cdef list touched = []
        cdef list qps
        self.quiet = False
        # the framing first, so that a bad burst is refused before any packet is taken
        for i in range(count):
            if off + 2 > n:
                raise ParseError(f"burst truncated at packet {i} of {count}", kind="burst")
            off += 2 + ((burst[off] << 8) | burst[off + 1])
            if off > n:
                raise ParseError(f"burst truncated at packet {i} of {count}", kind="burst")
        if off != n:
            raise ParseError("trailing octets after the burst's packets", kind="burst")
        for e in self.engines.values():
            e.owner._rx_refresh(e, port)
        lid = (<PortCore?> port).lid
        span = 1 << <unsigned int> (<PortCore> port).lmc
        off = offset
        for i in range(count):
            plen = (burst[off] << 8) | burst[off + 1]
            off += 2
            p = &burst[off]
            off += plen
            # once one packet goes the per-packet way, the rest of the burst follows it: the two
            # paths deliver in one order only if nothing overtakes what went slow
            if slow or (plen < UD_HDRS + 6 or (p[0] >> 4) == 15 or (p[0] & 0xF) != 0 or (p[1] & 3) != 2
                    or <Py_ssize_t> ((((p[4] & 7) << 8) | p[5]) * 4 + 2) != plen):
                slow.append(PyBytes_FromStringAndSize(<char *> p, plen))
                continue
            dlid = (p[2] << 8) | p[3]
            dqp = (p[13] << 16) | (p[14] << 8) | p[15]
            if dlid - lid >= span or p[8] != 0x64 or (p[9] & 0xF) != 0:
                slow.append(PyBytes_FromStringAndSize(<char *> p, plen))
                continue
            if dqp != last_qpn:
                eng = self.engines.get(dqp)
                last_qpn = dqp
            pad = (p[9] >> 4) & 3
            fn = plen - UD_HDRS - 6 - pad
            if (eng is None or not eng.enabled or fn < 0 or fn > eng.frame_max
                    or <unsigned int> ((p[10] << 8) | p[11]) != eng.pkey or not (eng.pkey & 0x8000)
                    or ((<unsigned int> p[20] << 24) | (p[21] << 16) | (p[22] << 8) | p[23]) != eng.qkey):
                slow.append(PyBytes_FromStringAndSize(<char *> p, plen))
                continue
            if not crcs_ok_local(p, plen):
                slow.append(PyBytes_FromStringAndSize(<char *> p, plen))
                continue
            taken += 1
            words += (plen - 2) >> 2
            if eng.fresh_packets == 0 and eng.fresh_overflow == 0:
                touched.append(eng)
            eng._take(p + UD_HDRS, fn, (p[6] << 8) | p[7], (p[25] << 16) | (p[26] << 8) | p[27])
        self.fast_packets += taken
        qps = [(e.qpn, e.fresh_packets + e.fresh_overflow) for e in touched]  # the QPs' receive counts
        quiet = not slow
        for e in touched:
            if e.owner._rx_event(e, now) is not True:
                quiet = False
        self.quiet = quiet and taken > 0
        return slow, taken, words, qps
