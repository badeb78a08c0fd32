"""The device host's in-process links in C: ``DeviceHost.run_local`` (``fabric/host/loop.py`` keeps
the reference in Python, which the std backend runs) with a switch's hop, and an HCA's receive
through its ``rx_accel``, done here.

A burst that reaches a switch over an in-process link is forwarded by ``fabric._wirefast``'s
``forward_burst`` as ``Switch.receive_burst`` does, and each egress port's share that goes on to
another in-process device is queued for it at once: no Segment, no outbox, no pass through the
host's transmit queue. That is what a directed-route SMP pays at every switch on its way out and
back (OpenSM's sweep is thousands of them, four at a time), and every data burst at every switch.

A link stays a FIFO: a share goes straight on only while nothing else waits in the host's
transmit queue for that link (what the switch's per-packet path sent earlier goes first then), and
never while a capture watches the links (captures see what ``flush`` sends).
"""

import traceback

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, errno
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

cdef extern from "sys/epoll.h" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64
    cdef struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)

from cpython cimport array
from fabric._corefast cimport DeviceCore, HCACore, PortCore, QPCore, SwitchCore, class_unchanged, not_patched
from fabric.devices._smafast cimport hca_smp_fast_c
from fabric._wirefast cimport (FWD_OUT, _smp_sound, _dr_route_port, _dr_transit_patch, count_unicast as _count, COUNT_RCV, COUNT_XMIT,
                              unicast_verdict)

from ..devices import port as _port
from ..wire import smp_attrs as _sa
from ..devices.base import smp_arrival as _smp_arrival
from ..devices.hca import HCA, TAKEN_BY_DEVICE
from ..devices.switch import PKEY_SLOTS, Switch
from ..devices.training import LINK_EVENTS
from ..devices import _smafast
from ..wire.burst import BURST_HEADROOM, Segment, decode_burst_packets
from ..wire.errors import ParseError
from ..wire.smp_attrs import PHYS_LINKUP, PORT_ACTIVE
from .. import _wirefast

cdef object _forward = _wirefast.forward_burst
cdef object _link_events = LINK_EVENTS
cdef object _mtu_bytes = _sa.MTU_BYTES
cdef Py_ssize_t _pkey_slots = PKEY_SLOTS

# The devices' own Python that the shortcuts below stand for, while the class still has it
# (``class_unchanged``; a subclass, or a method patched in, takes its own way): a switch's
# ``keeps_time`` (its agents or its traps to resend), the refresh of its forwarding tables' port
# entries after a Set, and its events that nobody hears (``_passive_events``); an HCA's
# ``receive_local`` for an SMP (its ``_smp_fast`` first), and its ``keeps_time`` for its events.
cdef dict _sw_methods = {n: getattr(Switch, n) for n in ("keeps_time", "_refresh_port_table", "_refresh_port",
                                                         "_port_flags", "_put_pkeys")}
cdef dict _hca_methods = {n: getattr(HCA, n) for n in ("receive_local", "_smp_fast")}
cdef dict _hca_time_methods = {"keeps_time": HCA.keeps_time}
cdef unsigned int _sw_tag = 0, _hca_tag = 0, _hca_time_tag = 0
cdef bint _smp_shortcut = _smp_arrival is not None and HCA._smp_fast is _smafast.hca_smp_fast



cdef inline bint _switch_plain() except -1:
    return class_unchanged(Switch, &_sw_tag, _sw_methods)


cdef inline bint _switch_quiet(SwitchCore sw) except -1:
    """``not sw.keeps_time()``: no software on it and no trap to resend."""
    if _switch_plain():
        return not sw.agents and not sw._traps
    return not sw.keeps_time()


cdef inline object _outbox(object dev):
    """``dev.outbox``, by the struct's field for a device (a test's stand-in has a plain one)."""
    return (<DeviceCore> dev).outbox if isinstance(dev, DeviceCore) else dev.outbox


cdef inline object _events(object dev):
    return (<DeviceCore> dev).events if isinstance(dev, DeviceCore) else dev.events


cdef inline object _agents(object dev):
    return (<DeviceCore> dev).agents if isinstance(dev, DeviceCore) else dev.agents


cdef class HostCore:
    """The state of a ``DeviceHost`` that the C paths below read on every burst and every wake,
    kept in a C struct (``DeviceHost`` derives from this class): a field here is read by a pointer
    load, where an attribute of a plain instance is a type lookup and a dict lookup each time (a
    kernel ping through a switch read about 60 of them). Python code sees ordinary attributes.
    ``fabric/host/loop.py`` has the pure-Python twin for the std backend (no fields: plain
    attributes)."""
    cdef public dict devices, readers, txq, links, local
    cdef public set _stale, zcheck
    cdef public object local_q, pending, capture
    cdef public bint running

cdef Py_ssize_t HEADROOM = BURST_HEADROOM


# the counters' saturation, as fabric.devices.port has it (the compiled counting is _wirefast's)
if (_port._TOP_PKTS, _port._TOP_DATA) != (_wirefast.TOP_PKTS, _wirefast.TOP_DATA):  # pragma: no cover
    raise ImportError("fabric._wirefast saturates the port counters elsewhere than fabric.devices.port")


cdef bint _switch_hop(HostCore host, object name, SwitchCore sw, int in_port, object msg, object count, double now,
                      Py_ssize_t hwm) except -1:
    """The burst through switch ``sw``; False leaves it to ``receive_data`` (the per-packet path
    decides: an ingress port that is not up, bad framing)."""
    cdef dict ports = sw.ports
    cdef PortCore port = ports.get(in_port)
    cdef PortCore p0
    cdef list outbox
    if port is None or in_port == 0 or port.phys != PHYS_LINKUP:
        return False
    if sw._dirty or sw._dirty_ports:
        if sw._dirty or sw._mtu is None or not _switch_plain() or not _refresh_ports(sw):
            sw._refresh_port_table()
    if count == 1 and type(msg) is bytearray:
        done = _dr_smp_hop(host, name, sw, port, in_port, msg, now, hwm) or \
            _unicast_hop(host, name, sw, port, in_port, msg, now, hwm)
        if done:
            return True
    p0 = ports[0]
    lid, lmc = p0.lid, p0.lmc
    try:
        segs, slow, stats = _forward(msg, HEADROOM, count, in_port, sw.lft, sw.lft_top, sw._flags, sw._mtu,
                                     (lid & ~((1 << lmc) - 1)) if lid else 0, (1 << lmc) if lid else 0, HEADROOM,
                                     msg if type(msg) is bytearray else None, sw._pkeys, port.state == PORT_ACTIVE)
    except ValueError:
        return False
    rp, rw, relay, egress, dr_path, dr_down = stats
    if rp:
        _count(port.counters, COUNT_RCV, rp, rw)
    if relay or dr_path or dr_down:
        drops = sw.drops
        if relay:
            port.counters.inc("port_rcv_switch_relay_errors", relay)
            drops["no_route"] += relay
        if dr_path:
            drops["dr_path"] += dr_path
        if dr_down:
            drops["dr_egress_down"] += dr_down
    for k, xp, xw, xd in egress:
        c = (<PortCore> ports[k]).counters
        if xp:
            _count(c, COUNT_XMIT, xp, xw)
        if xd:
            c.inc("port_xmit_discards", xd)
            sw.drops["egress_not_active"] += xd
    outbox = sw.outbox
    direct = not outbox  # nothing of this switch's waits to go first
    for out, seg in segs.items():
        n, buf = seg
        if not (direct and _hand_on(host, name, out, buf, n, hwm)):
            outbox.append(Segment(out, n, buf))
    _finish(host, name, sw, in_port, slow, now, hwm, not slow)  # the C path alone moves no timer of the switch
    return True


def refresh_ports(SwitchCore sw not None):
    """``_refresh_ports`` for Python callers (tests compare it with the switch's own refresh)."""
    return _refresh_ports(sw)


cdef bint _refresh_ports(SwitchCore sw) except -1:
    """``Switch._refresh_port_table`` for the ports a sweep's Sets marked (``_dirty_ports``) when
    the tables are built already: each port's flags and MTU entry, and the P_Key rows of a port
    that enforces partitions (``_put_pkeys``; by ``_refresh_port`` while the switch has no P_Key
    tables yet). False (nothing done) when a marked port is not in the tables: the Python decides."""
    cdef bytearray flags = sw._flags
    cdef array.array mtu = sw._mtu
    cdef Py_ssize_t n, top = min(len(flags), len(mtu))
    cdef int f
    cdef PortCore p
    dirty = sw._dirty_ports
    for k in dirty:
        if type(k) is not int or not 0 <= <Py_ssize_t> k < top or sw.ports.get(k) is None:
            return False
    sw._dirty_ports = set()
    for k in dirty:
        n = k
        p = sw.ports[k]
        f = (1 if p.phys == PHYS_LINKUP else 0) | (2 if p.state == PORT_ACTIVE else 0)
        if n and (<object> p).pkey_enforce_in:
            f |= 4
        if n and (<object> p).pkey_enforce_out:
            f |= 8
        flags[n] = f
        mtu.data.as_uints[n] = _mtu_bytes.get((<object> p).neighbor_mtu, 4096)
        if f & 12 and not _put_pkeys(sw, n, p):  # the first port to enforce brings the tables
            sw._refresh_port(k)
    return True


cdef bint _put_pkeys(SwitchCore sw, Py_ssize_t n, PortCore p) except -1:
    """``Switch._put_pkeys``: port ``n``'s PKEY_SLOTS entries of the flattened P_Key tables,
    zero past its own. False (nothing done) when there are no tables yet, or an entry is not a
    16-bit int: the Python's to make or refuse."""
    cdef array.array table = sw._pkeys
    cdef Py_ssize_t i, m
    cdef unsigned short *row
    keys = p.pkeys
    if table is None or type(keys) is not list or len(table) < (n + 1) * _pkey_slots:
        return False
    m = min(len(keys), _pkey_slots)
    for i in range(m):
        if type(keys[i]) is not int or not 0 <= keys[i] <= 0xFFFF:
            return False
    row = table.data.as_ushorts + n * _pkey_slots
    for i in range(_pkey_slots):
        row[i] = keys[i] if i < m else 0
    return True


cdef object _local_peer(HostCore host, object name, object out, Py_ssize_t hwm):
    """The in-process device ``(name, port)`` behind ``name``'s port ``out``, when what leaves by
    it may go straight there; None when it must go through the outbox instead (no in-process
    peer, something already waits in the transmit queue for that link, a capture watching, the
    in-process queue full)."""
    key = (name, out)
    peer = host.local.get(key)
    if peer is None or host.capture is not None or (host.txq and key in host.txq) \
            or (host.links and key in host.links) or len(host.local_q) >= hwm:
        return None
    return peer


cdef bint _hand_on(HostCore host, object name, object out, object buf, object n, Py_ssize_t hwm) except -1:
    """Queue a switch's share for ``out`` straight for the in-process device behind that port
    (``_local_peer``); False when it must go through the outbox instead."""
    peer = _local_peer(host, name, out, hwm)
    if peer is None:
        return False
    host.local_q.append((peer[0], peer[1], buf, n))
    return True


cdef enum:
    SMP_PACKET = 290  # an SMP without a GRH, LRH to VCRC (fabric/_wirefast.pyx)
    SMP_CLASS_DR = 0x81  # MgmtClass SubnMgmt, directed route
    LID_MCAST_FIRST = 0xC000
    LID_MCAST_LAST = 0xFFFE


cdef bint _dr_smp_hop(HostCore host, object name, SwitchCore sw, PortCore port, int in_port, bytearray msg,
                      double now, Py_ssize_t hwm) except -1:
    """A burst of one directed-route SMP passing through (what OpenSM's and our SM's sweeps are
    made of): forward_burst's transit for it, patched in place (the buffer is ours) and handed on,
    without the call's tables and dicts. False: not such a burst, forward_burst decides."""
    cdef Py_ssize_t n = len(msg)
    cdef uint8_t *p = <uint8_t *> PyByteArray_AS_STRING(msg)
    cdef bytearray flags = sw._flags
    cdef int out
    peer = None
    if n != HEADROOM + 2 + SMP_PACKET or ((p[HEADROOM] << 8) | p[HEADROOM + 1]) != SMP_PACKET:
        return False
    p += HEADROOM + 2
    if p[0] != 0xF0 or (p[2] & p[3]) != 0xFF or not _smp_sound(p, SMP_PACKET, SMP_CLASS_DR):
        return False  # the full path classifies and counts it
    out = _dr_route_port(p, len(flags))
    if out == 0:  # its path ends here (or its hop pointer is odd, which the SMI sorts out)
        _to_own_sma(sw, in_port, PyBytes_FromStringAndSize(<char *> p, SMP_PACKET), now)
        # a switch without software or traps to resend has no deadline for its SMA to move
        _finish(host, name, sw, in_port, None, now, hwm, _switch_quiet(sw))
        return True
    words = (SMP_PACKET - 2) >> 2
    _count(port.counters, COUNT_RCV, 1, words)
    if out < 0:
        sw.drops["dr_path"] += 1
    elif not flags[out] & 1:
        sw.drops["dr_egress_down"] += 1
    else:
        _dr_transit_patch(p, in_port)
        peer = _pass_on(host, name, sw, out, msg, words, hwm)
    return _passed(host, name, sw, in_port, peer, msg, now, hwm)


cdef inline bint _ends_here(const uint8_t *p, Py_ssize_t n, int nports) noexcept nogil:
    """A whole, sound directed-route SMP with a permissive DLID that does not go on from this
    switch (its path ends here, or its hop pointer is odd, which the SMI sorts out)."""
    return (n == SMP_PACKET and (p[2] & p[3]) == 0xFF and _smp_sound(p, n, SMP_CLASS_DR)
            and _dr_route_port(p, nports) == 0)


cdef void _to_own_sma(SwitchCore sw, int in_port, bytes pkt, double now) except *:
    """What ``Switch.receive`` makes of such an SMP after its checks, which it passed: counted,
    then to the management port (``Switch._local``). The ingress port is up (the caller's)."""
    _count((<PortCore> sw.ports[in_port]).counters, COUNT_RCV, 1, (SMP_PACKET - 2) >> 2)
    if not sw.sma_fast(in_port, pkt, now):  # Switch._local, without its frame
        sw._local_full(in_port, pkt, now)


cdef bint _unicast_hop(HostCore host, object name, SwitchCore sw, PortCore port, int in_port, bytearray msg, double now,
                       Py_ssize_t hwm) except -1:
    """A burst of one packet that the switch simply forwards (a ping, an ACK, a lone datagram):
    forward_burst's verdict for it (``unicast_verdict``), and the very buffer handed on, since a
    switch forwards a packet unchanged, partition enforcement included. False: anything else,
    which forward_burst takes."""
    cdef Py_ssize_t n = len(msg), plen
    cdef uint8_t *p = <uint8_t *> PyByteArray_AS_STRING(msg)
    cdef bytearray lft = sw.lft
    cdef bytearray flags = sw._flags
    cdef array.array mtu
    cdef array.array pkeys = sw._pkeys  # the enforcing ports' P_Key tables, or None
    cdef int outp = 0
    cdef unsigned int lid, lmc
    cdef PortCore p0
    if n < HEADROOM + 2 or sw._mtu is None:
        return False
    plen = (p[HEADROOM] << 8) | p[HEADROOM + 1]
    if n != HEADROOM + 2 + plen:
        return False
    mtu = sw._mtu
    p0 = sw.ports[0]
    lid, lmc = p0.lid, p0.lmc
    if unicast_verdict(p + HEADROOM + 2, plen, in_port, port.state == PORT_ACTIVE, <uint8_t *> PyByteArray_AS_STRING(lft),
                       len(lft), sw.lft_top, <uint8_t *> PyByteArray_AS_STRING(flags), len(flags), mtu.data.as_uints,
                       pkeys.data.as_ushorts if pkeys is not None else NULL, (lid & ~((1u << lmc) - 1)) if lid else 0, (1u << lmc) if lid else 0, &outp) != FWD_OUT:
        return False
    words = (plen - 2) >> 2
    _count(port.counters, COUNT_RCV, 1, words)
    peer = _pass_on(host, name, sw, outp, msg, words, hwm)
    return _passed(host, name, sw, in_port, peer, msg, now, hwm)


cdef object _pass_on(HostCore host, object name, SwitchCore sw, int out, bytearray msg, object words,
                     Py_ssize_t hwm):
    """A burst of one packet leaves switch ``sw`` by port ``out`` in the buffer it came in:
    counted there, and handed straight on unless something of the switch's waits to go first.
    Returns the in-process peer ``(name, port)`` instead, when ``run_local`` is delivering and
    nothing at all waits in its queue (it would take this packet next), the switch runs no
    software and no capture watches: the hop then hands the packet to ``_deliver`` once it is
    done itself (``_next_direct``), which delivers it without the queue. (Outside ``run_local``,
    a burst from a socket, the queue keeps the packet until the loop's turn for in-process links
    comes, as before.)"""
    _count((<PortCore> sw.ports[out]).counters, COUNT_XMIT, 1, words)
    if not sw.outbox:
        if _in_run_local and not host.local_q and not sw.agents:
            peer = _local_peer(host, name, out, hwm)
            if peer is not None:
                return peer
        if _hand_on(host, name, out, msg, 1, hwm):
            return None
    sw.outbox.append(Segment(out, 1, msg))
    return None


# _deliver's next burst, set by the hop it just ran (_pass_on's peer): at most one, taken at once
cdef object _direct_peer = None
cdef object _direct_msg = None
cdef bint _in_run_local = False  # run_local is delivering (what _pass_on's shortcut needs)

# How many switch hops one queued burst is taken straight through (_deliver) before the queue
# takes it again: a routing loop goes round the queue, whose budget hands the loop back.
cdef enum:
    DIRECT_HOPS = 8


cdef inline void _next_direct(object peer, bytearray msg) noexcept:
    global _direct_peer, _direct_msg
    _direct_peer, _direct_msg = peer, msg


cdef bint _passed(HostCore host, object name, SwitchCore sw, int in_port, object peer, bytearray msg, double now,
                  Py_ssize_t hwm) except -1:
    """A switch's single-packet hop is done: what ``receive_data`` does after it (the switch's
    software was not called), then the packet ``_pass_on`` kept for ``_deliver``, if any, handed
    to it even if that raised (the queue would have had it already)."""
    try:
        _finish(host, name, sw, in_port, None, now, hwm, True)
    finally:
        if peer is not None:
            _next_direct(peer, msg)
    return True


cdef void _finish(HostCore host, object name, object dev, int in_port, object slow, double now,
                  Py_ssize_t hwm, bint quiet=False) except *:
    """What ``receive_data`` does after the device's burst call: the packets the compiled path
    left go through the device one by one, then its outbox and events are served. ``quiet``: the
    device's software was not called (its next deadline stands)."""
    if slow:
        try:
            if type(dev) is Switch:
                nports = len(<bytearray> dev._flags)
                for pkt in slow:
                    if type(pkt) is bytes and _ends_here(<const uint8_t *> PyBytes_AS_STRING(pkt), len(<bytes> pkt),
                                                         nports):
                        _to_own_sma(dev, in_port, pkt, now)
                    else:
                        dev.receive(in_port, pkt, now)
            else:
                for pkt in slow:
                    dev.receive(in_port, pkt, now)
        except Exception:  # a bad packet must never kill the host
            traceback.print_exc()
            dev.drops["internal_error"] += 1
    if not quiet:
        global _moved
        _moved = True
        host._stale.add(name)
    if _outbox(dev):
        _send_out(host, name, dev, hwm)
    if _events(dev):
        if (type(dev) is Switch or type(dev) is HCA) and _passive_events(host, name, dev):
            return
        host.handle_events(name, now)


cdef bint _passive_events(HostCore host, object name, DeviceCore dev) except -1:
    """``host.handle_events`` for a switch or an HCA without software whose events ask nothing
    of its links (a sweep's Sets of PortState, LID, SM LID, ClientReregister): ``apply_events``
    would only take them, nothing listens. False: anything else, which handle_events takes."""
    if dev.agents:
        return False
    if type(dev) is Switch:
        if not _switch_plain():
            return False
    elif type(dev) is not HCA or not class_unchanged(HCA, &_hca_time_tag, _hca_time_methods):
        return False
    for ev in dev.events:
        if type(ev) is not tuple or len(<tuple> ev) != 3 or (<tuple> ev)[0] in _link_events:
            return False
    dev.events = []
    if dev._traps:  # handle_events' keeps_time: a trap's deadline may have moved
        host._stale.add(name)
    return True


cdef void _send_out(HostCore host, object name, object dev, Py_ssize_t hwm) except *:
    """``host.drain`` for what a device just sent, with what can go straight onto an in-process
    link handed on at once (``_hand_on``: nothing of that link waits in the transmit queue, no
    capture, room in the queue), in order: a Segment as it is, a packet ``(port, octets)`` in a
    burst of its own, framed as ``flush`` frames one. From the first item that cannot go so, the
    rest goes through drain: an SMA's answer or a node's request costs no transmit queue and no
    flush when its link is in this host."""
    cdef list outbox = _outbox(dev)
    cdef Py_ssize_t i = 0, n = len(outbox), plen
    cdef uint8_t *q
    while i < n:
        item = outbox[i]
        if type(item) is Segment:
            if not _hand_on(host, name, (<object> item).port, (<object> item).buf, (<object> item).count, hwm):
                break
        elif type(item) is tuple and len(<tuple> item) == 2 and type((<tuple> item)[1]) is bytes:
            pkt = (<tuple> item)[1]
            plen = len(<bytes> pkt)
            if plen > 0xFFFF:
                break
            buf = PyByteArray_FromStringAndSize(NULL, HEADROOM + 2 + plen)
            q = <uint8_t *> PyByteArray_AS_STRING(buf)
            memset(q, 0, HEADROOM)
            q[HEADROOM] = plen >> 8
            q[HEADROOM + 1] = plen & 0xFF
            memcpy(q + HEADROOM + 2, PyBytes_AS_STRING(pkt), plen)
            if not _hand_on(host, name, (<tuple> item)[0], buf, 1, hwm):
                break
        else:
            break
        i += 1
    if i:
        del outbox[:i]
    if outbox:
        host.drain(name, dev)


cdef int _hca_hop(HostCore host, object name, HCACore hca, int in_port, object msg, object count,
                  double now, Py_ssize_t hwm) except -1:
    """``HCA.receive_burst`` when its ``rx_accel`` (the IPoIB fast provider's receive in C) takes
    the burst: 1, or 2 when the receiver says the burst is up already with nothing left for the
    node's software (``rx_accel.quiet``: the NAPI poll ran in C right after the interrupt). A
    burst of one packet for the per-packet path (an SMP, or anything while there is no
    rx_accel) goes straight to ``receive_local`` (``_hca_lone``). 0 leaves it to ``receive_data``
    (no rx_accel, a port not Active, bad framing)."""
    rx = hca.rx_accel
    if count == 1 and type(msg) is bytearray and (rx is None or _vl15(msg)):
        return _hca_lone(host, name, hca, in_port, msg, now, hwm)
    cdef PortCore port
    cdef dict qps
    if rx is None:
        return False
    port = hca.ports.get(in_port)
    if port is None or port.phys != PHYS_LINKUP or port.state != PORT_ACTIVE:
        return False
    try:
        slow, packets, words, taken = rx(port, msg, HEADROOM, count, now)
    except ParseError:
        return False  # before any packet was taken: the per-packet path counts it
    if packets:
        _count(port.counters, COUNT_RCV, packets, words)
        qps = hca.qps
        for qpn, n in taken:
            (<QPCore> qps[qpn]).received += n
    quiet = slow is not None and not slow and getattr(rx, "quiet", False) is True
    _finish(host, name, hca, in_port, decode_burst_packets(msg, HEADROOM, count) if slow is None else slow, now,
            hwm, quiet)
    return 2 if quiet else 1


cdef inline bint _vl15(bytearray msg) noexcept:
    return len(msg) > HEADROOM + 2 and ((<uint8_t *> PyByteArray_AS_STRING(msg))[HEADROOM + 2] >> 4) == 15


cdef int _hca_lone(HostCore host, object name, HCACore hca, int in_port, bytearray msg, double now,
                   Py_ssize_t hwm) except -1:
    """A burst of one packet that the HCA's per-packet path takes (an SMP, a GMP, anything while
    the node has no compiled receive): ``HCA.receive``'s port check and count made here, then
    ``receive_local`` with the packet, without the burst's decoding and the calls around it; 2
    when the device alone took it (``TAKEN_BY_DEVICE``: no software of the node ran). 0 leaves
    it to ``receive_data`` (a port that is down or absent, bad framing, a multicast DLID)."""
    cdef Py_ssize_t n = len(msg), plen
    cdef const uint8_t *p = <const uint8_t *> PyByteArray_AS_STRING(msg) + HEADROOM
    cdef unsigned int dlid
    cdef PortCore port
    if n < HEADROOM + 2 + 4:
        return 0
    plen = (p[0] << 8) | p[1]
    if n != HEADROOM + 2 + plen:
        return 0
    p += 2
    dlid = (p[2] << 8) | p[3]
    if LID_MCAST_FIRST <= dlid <= LID_MCAST_LAST:
        return 0
    port = hca.ports.get(in_port)
    if port is None or port.phys != PHYS_LINKUP:
        return 0
    _count(port.counters, COUNT_RCV, 1, (plen - 2) >> 2)  # as count_rcv: before any check
    pkt = PyBytes_FromStringAndSize(<const char *> p, plen)
    taken = None
    if plen == SMP_PACKET and p[0] == 0xF0 and _smp_shortcut and class_unchanged(HCA, &_hca_tag, _hca_methods) \
            and not_patched(hca, "receive_local") and not_patched(hca, "_smp_fast"):
        taken = hca_smp_fast_c(hca, in_port, pkt, now)  # what receive_local tries first
    if not taken:
        taken = hca.receive_local(in_port, pkt, now)
    if taken is TAKEN_BY_DEVICE and (not hca.events or _passive_events(host, name, hca)):
        # its SMA answered (a Set's events, if any, heard by nobody), or an ibsim client (OpenSM)
        # got its answer: no software ran, no deadline moved, and the host need not run the
        # node's timers (2)
        _finish(host, name, hca, in_port, None, now, hwm, True)
        return 2
    _finish(host, name, hca, in_port, None, now, hwm)
    return 1


# Set whenever something called into a node's software or ran its timers (a device's next deadline
# may have moved, and the host may have noted it in ``_due`` already): ``wait`` then hands back to
# the loop, which waits again with the new timeout.
cdef bint _moved = False


cdef inline double _clock() noexcept nogil:
    """time.monotonic(), which is CLOCK_MONOTONIC."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


def wait(HostCore host not None, int epfd, timeout_ms, Py_ssize_t budget, Py_ssize_t hwm):
    """``DeviceHost.run``'s wait on its epoll, with the readable file descriptors of the node
    software (TUN queues) served right here (``read_ready``), and waiting again while that is all
    there is to do: a ping through the fabric wakes the loop, reads, crosses the in-process links
    and writes up to the kernel without a pass of the Python loop. Returns the events left for the
    loop (the ZeroMQ sockets', a reader that went away), or [] when the loop must make a pass: the
    timeout, a signal, or what a read left behind (a transmit queue, in-process bursts beyond the
    budget, a node's software to run, a deferred reply). ``timeout_ms``: as ``epoll.poll``'s, in
    milliseconds, None to block."""
    cdef epoll_event evs[64]
    cdef int n, i, ms
    cdef double deadline = -1.0, left
    cdef dict readers = host.readers
    cdef list rest
    if timeout_ms is not None:
        deadline = _clock() + <double> timeout_ms / 1000.0
    while True:
        PyErr_CheckSignals()  # a signal that came while we were busy: its handler runs now
        if deadline < 0:
            ms = -1
        else:
            left = deadline - _clock()
            ms = 0 if left <= 0 else <int> (left * 1000.0) + 1
        with nogil:
            n = epoll_wait(epfd, evs, 64, ms)
        if n < 0:
            if errno == EINTR:
                PyErr_CheckSignals()
                return []
            raise OSError(errno, "epoll_wait")
        if n == 0:
            return []
        rest = None
        now = _clock()
        global _moved
        _moved = False
        for i in range(n):
            reader = readers.get(evs[i].data.fd)
            if reader is None:
                if rest is None:
                    rest = []
                rest.append((evs[i].data.fd, evs[i].events))
            else:
                _read_ready(host, reader, now, budget, hwm)
        if rest is not None:
            return rest
        if (ms == 0 or _moved or host.txq or host.local_q or host._stale or host.zcheck or host.pending
                or not host.running):
            return []


def read_ready(HostCore host not None, reader, double now, Py_ssize_t budget, Py_ssize_t hwm):
    """``DeviceHost._read`` in C (see ``_read_ready``)."""
    _read_ready(host, reader, now, budget, hwm)


cdef void _read_ready(HostCore host, object reader, double now, Py_ssize_t budget, Py_ssize_t hwm) except *:
    """``DeviceHost._read``: ``reader`` is ``(device, fn)`` and its file descriptor is readable.
    A quiet reader (``fn(now)`` is True: it called no software of the node) leaves the node's
    timers alone and its sends go on at once (``express``); any other result runs the node's
    software if due and drains its outbox, as after a burst."""
    name, fn = reader
    dev = host.devices[name]
    try:
        quiet = fn(now) is True
    except Exception:  # what a node's own file descriptor brings must not kill the host
        traceback.print_exc()
        dev.drops["internal_error"] += 1
        quiet = False
    if not quiet:  # the reader called into the node's software: its timers may have moved
        global _moved
        _moved = True
        host._stale.add(name)
        host._tick_if_due(dev, now)
    if _outbox(dev):
        if quiet:
            _express(host, name, dev, budget, hwm)
        else:
            _send_out(host, name, dev, hwm)


def express(HostCore host not None, name, dev, Py_ssize_t budget, Py_ssize_t hwm):
    """What a device's driver just posted in C (a quiet reader's sends: Segments), straight onto
    the in-process links as a switch's share goes (``_hand_on``: nothing of that link waits in the
    transmit queue, no capture) and delivered at once; whatever cannot go so goes through
    ``drain``, in order, as before."""
    _express(host, name, dev, budget, hwm)


cdef _express(HostCore host, name, dev, Py_ssize_t budget, Py_ssize_t hwm):
    _send_out(host, name, dev, hwm)
    if host.local_q:
        _run_local(host, budget, hwm)


def data_burst(HostCore host not None, name, int port, data, Py_ssize_t count, double now, Py_ssize_t hwm):
    """``DeviceHost.receive_data`` for a data burst that came on a socket (its header checked, its
    packets from BURST_HEADROOM on, as a Segment's): a switch's hop or an HCA's receive in C, as
    over an in-process link, and receive_data for whatever they leave. A burst of one packet is
    copied into a buffer of ours first, so that the single-packet hops can work in place: in a
    fabric over several processes that is every SMP of a sweep at every switch it crosses."""
    global _in_run_local
    dev = host.devices[name]
    msg = PyByteArray_FromStringAndSize(PyBytes_AS_STRING(data), len(data)) \
        if count == 1 and type(data) is bytes else data
    cdef bint outer = _in_run_local
    _in_run_local = False  # what a switch hands on here waits in the queue for run_local's turn
    try:
        if not _hop(host, name, dev, port, msg, count, now, hwm):
            host.receive_data(name, port, data, HEADROOM, count, now)
    finally:
        _in_run_local = outer


cdef int _hop(HostCore host, object name, object dev, int port, object msg, object count, double now,
              Py_ssize_t hwm) except -1:
    """A data burst into ``dev``'s ``port`` by the C paths: a switch's hop, an HCA's receive.
    0 leaves it to ``receive_data``; 2 says the node's software is untouched (``_hca_hop``)."""
    try:
        if type(dev) is Switch:
            return _switch_hop(host, name, dev, port, msg, count, now, hwm)
        if type(dev) is HCA:
            return _hca_hop(host, name, dev, port, msg, count, now, hwm)
    except Exception:  # a bad packet must never kill the host (as receive_data)
        traceback.print_exc()
        dev.drops["internal_error"] += 1
        _finish(host, name, dev, port, None, now, hwm)  # what it did send leaves, in order
        return 1
    return 0


def run_local(HostCore host not None, Py_ssize_t budget, Py_ssize_t hwm):
    """``DeviceHost.run_local``: the same deliveries in the same order, a switch's hop in C."""
    _run_local(host, budget, hwm)


cdef void _deliver(HostCore host, object name, object port, object msg, object count, double now,
                   Py_ssize_t hwm) except *:
    """One in-process burst into device ``name``'s ``port``, as ``DeviceHost.run_local`` delivers
    each: a switch's hop or an HCA's receive in C, else ``receive_data``; then the node's
    software if it has any and may have something to do. Then, if the hop handed a lone packet
    on (``_pass_on``) and nothing was queued meanwhile, that packet the same way: the burst
    ``run_local`` would have taken next (up to DIRECT_HOPS of them; then, or when something was
    queued meanwhile, it goes to the front of the queue, where it would have been)."""
    global _moved, _direct_peer, _direct_msg
    cdef dict devices = host.devices
    cdef int done, hops = 0
    try:
        while True:
            done = 0
            if port < 0:
                _moved = True
                host._deliver(name, msg, now)  # a link-training frame, framed as on a socket
            else:
                done = _hop(host, name, devices[name], port, msg, count, now, hwm)
                if not done:
                    _moved = True
                    host.receive_data(name, port, msg, HEADROOM, count, now)
            dev = devices[name]
            if _agents(dev) and done != 2:  # 2: up already, the node's software untouched: nothing to run
                _moved = True
                # the node's software runs right after its "interrupt" (see DeviceHost.run_local)
                if host.txq:
                    host.flush()
                host._tick_if_due(dev, now)
            if _direct_peer is None:
                return
            peer, msg = _direct_peer, _direct_msg
            _direct_peer = _direct_msg = None
            if host.local_q or hops >= DIRECT_HOPS:
                host.local_q.appendleft((peer[0], peer[1], msg, 1))
                return
            hops += 1
            name, port, count, now = peer[0], peer[1], 1, _clock()
    except BaseException:
        if _direct_peer is not None:  # a hop handed a packet on: it waits at the front of the queue
            peer, msg = _direct_peer, _direct_msg
            _direct_peer = _direct_msg = None
            host.local_q.appendleft((peer[0], peer[1], msg, 1))
        raise


cdef _run_local(HostCore host, Py_ssize_t budget, Py_ssize_t hwm):
    global _in_run_local
    local_q = host.local_q
    popleft = local_q.popleft
    cdef bint outer = _in_run_local
    _in_run_local = True
    try:
        while local_q and budget:
            name, port, msg, count = popleft()
            budget -= 1
            # a whole sweep can run inside this loop: keep the clock honest
            _deliver(host, name, port, msg, count, _clock(), hwm)
            if not local_q and host.txq:
                host.flush()
    finally:
        _in_run_local = outer
    if host.txq:
        host.flush()
