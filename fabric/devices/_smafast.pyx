# cython: language_level=3
"""``Device.sma_fast`` compiled: the SMA's answer to a Get or Set that ends at this node, with the
request read from its octets and the answer's packet written by ``fabric._wirefast`` in C.

The attribute code stays the device's (``port_for_attr``, ``set_port_info``, ``port_info_overrides``,
``sma_attr``): what this does in C is the part around it that ran as Python for every SMP of a sweep
(the checks on the request, the fields it reads, NodeInfo from the device's packed copy, PortInfo
without the generic dispatch, the M_Key hiding, the answer). ``Device.sma_fast_py`` is the
reference, octet for octet (tests/test_smp_compiled.py); chosen with the compiled wire helpers.
"""

from libc.stdint cimport uint8_t
from libc.string cimport memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from fabric._corefast cimport DeviceCore, PortCore

from fabric._wirefast cimport (COUNT_XMIT, SMP_KIND_REQUEST_DR, SMP_KIND_REQUEST_LID, SMP_KIND_RESPONSE_DR,
                              count_unicast, smp_answer_packet, smp_kind)

cdef enum:
    SMP_PACKET = 290  # an SMP without a GRH, LRH to VCRC
    MAD = 28  # where its MAD starts
    GET = 0x01
    SET = 0x02
    ATTR_NODE_INFO = 0x0011
    ATTR_PORT_INFO = 0x0015
    ATTR_PKEY_TABLE = 0x0016
    ATTR_SM_INFO = 0x0020
    PKEY_BLOCK = 32  # entries in a PKeyTable block
    STATUS_INVALID_FIELD = 0x001C  # MAD status: invalid value in an attribute field or modifier
    LID_PERMISSIVE = 0xFFFF
    PHYS_LINKUP = 5  # PortPhysicalState LinkUp (fabric.wire.smp_attrs)
    RESPONSE_BIT = 0x80
    MAD_SIZE = 256
    DR_HOP_PTR = 6

# what base.py hands over (it imports this module, so this one cannot import it)
cdef object _SmpError = None
cdef object _SmpView = None
cdef object _put_attr = None
cdef object _port_info_unpack = None
cdef object _pi_codec = None  # PORT_INFO's compiled packing (FieldMap.compiled)
cdef tuple _pi_keys = None


# what hca.py hands over (setup_hca): its verdicts and the SM's parse of an answer
cdef object _taken_by_device = None
cdef object _taken_by_software = None
cdef object _smp_directed_unpack = None
cdef object _smp_lid_unpack = None
cdef object _send_dr_packet_py = None


def setup_hca(taken_by_device, taken_by_software, smp_directed_unpack, smp_lid_unpack, send_dr_packet_py):
    """HCA.receive_local's TAKEN_BY_DEVICE and TAKEN_BY_SOFTWARE, ``SMPDirected.unpack``,
    ``SMPLid.unpack`` and hca.py's ``send_dr_packet_py``."""
    global _taken_by_device, _taken_by_software, _smp_directed_unpack, _smp_lid_unpack, _send_dr_packet_py
    _taken_by_device, _taken_by_software = taken_by_device, taken_by_software
    _smp_directed_unpack, _smp_lid_unpack = smp_directed_unpack, smp_lid_unpack
    _send_dr_packet_py = send_dr_packet_py


cdef bint _put_unicast(dev, int out, bytes raw) except -1:
    """Onto ``dev``'s outbox by port ``out``, counted as one unicast packet sent, what an HCA's
    ``send_raw`` and a switch's ``transmit_mgmt`` do alike when the port is up and the DLID is
    not multicast; False (nothing done) for anything else, which their own code counts its way."""
    cdef const uint8_t *q = <const uint8_t *> PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = len(raw)
    if out <= 0 or n < 4 or 0xC000 <= ((q[2] << 8) | q[3]) <= 0xFFFE:
        return False
    cdef DeviceCore d
    cdef PortCore port
    if not isinstance(dev, DeviceCore):
        return False
    d = <DeviceCore> dev
    port = d.ports.get(out)
    if port is None or port.phys != PHYS_LINKUP:
        return False
    count_unicast(port.counters, COUNT_XMIT, 1, (n - 2) >> 2)
    d.outbox.append((out, raw))
    return True


cdef bint send_dr_packet_c(object hca, int out, bytes packet) except -1:
    """``fabric.devices.hca.send_dr_packet_py`` (a built directed-route request onto the wire by
    port ``out``), its common case in C (``_put_unicast``); anything else is the reference's.
    Whether it went."""
    return _put_unicast(hca, out, packet) or _send_dr_packet_py(hca, out, packet)


def send_dr_packet(hca, int out, bytes packet not None):
    """``send_dr_packet_c`` for Python callers (bound as ``fabric.devices.hca.send_dr_packet``)."""
    return send_dr_packet_c(hca, out, packet)


def hca_smp_fast(hca, int in_port, data, double now):
    """``HCA._smp_fast_py`` compiled (the reference, tests/test_smp_compiled.py): a request to the
    HCA's SMA answered by ``sma_fast``, a directed-route answer handed to the software attached
    through ibsim's protocol (``user_mad``) or to our SM (``sm_consumer``), a LID-routed answer to
    our SM, without a frame of Python around it. 0 leaves the packet to the full path."""
    cdef const uint8_t[::1] view
    cdef const uint8_t *p
    cdef int k
    if len(data) != SMP_PACKET:
        return 0
    if type(data) is bytes:
        p = <const uint8_t *> PyBytes_AS_STRING(data)
    else:  # a packet of a burst (decode_burst_packets' views)
        view = data
        p = &view[0]
    k = smp_kind(p, SMP_PACKET)
    if k == SMP_KIND_REQUEST_LID and p[MAD + 3] & RESPONSE_BIT:
        return _lid_answer(hca, in_port, p, now)
    if k != SMP_KIND_RESPONSE_DR:
        return _taken_by_device if k and hca.sma_fast(in_port, data, now, k) else 0
    if not p[MAD + 3] & RESPONSE_BIT or hca.smp_waiting:
        return 0
    user = hca.user_mad
    if user is not None:
        return _taken_by_device if user.take_dr_answer(data, in_port, now) else 0
    consumer = hca.sm_consumer
    if consumer is None:
        return 0
    mad = PyBytes_FromStringAndSize(<const char *> p + MAD, MAD_SIZE)
    (<uint8_t *> PyBytes_AS_STRING(mad))[DR_HOP_PTR] = 0  # as C14-13:3 leaves it at the requester
    consumer(None, _smp_directed_unpack(mad), in_port, now)
    return _taken_by_software


cdef object _lid_answer(hca, int in_port, const uint8_t *p, double now):
    """A LID-routed response (what our SM's Sets after the LIDs are answered with) for our SM,
    as the full path hands it over (receive_local's DLID check, handle_qp0, smp_to_local_sm):
    parsed once, without the packet's headers as objects. 0 for anything else: a DLID not this
    port's (counted there), an answer awaited by a blocking caller (``smp_waiting``), software
    attached through ibsim's protocol, no SM."""
    cdef unsigned int dlid = (p[2] << 8) | p[3]
    if hca.smp_waiting or hca.user_mad is not None:
        return 0
    consumer = hca.sm_consumer
    if consumer is None:
        return 0
    if dlid != LID_PERMISSIVE:
        if 0xC000 <= dlid:  # multicast: the full path's to refuse
            return 0
        port = hca.ports.get(in_port)
        if port is None or not port.owns_lid(dlid):
            return 0
    consumer(None, _smp_lid_unpack(PyBytes_FromStringAndSize(<const char *> p + MAD, MAD_SIZE)), in_port, now)
    return _taken_by_software


cdef void _mgmt_out(dev, int out_port, bytes raw) except *:
    """``dev.transmit_mgmt(out_port, raw)`` for a directed-route answer, its common case in C
    (``_put_unicast``); a port that is not up, or an answer to a multicast DLID (the request's
    SLID was one), goes the device's own way, which counts it so."""
    if not _put_unicast(dev, out_port, raw):
        dev.transmit_mgmt(out_port, raw)


def setup(smp_error, smp_view, put_attr, port_info_unpack, port_info_map):
    """The device module's SmpError and request view, ``put_attr``, ``PortInfo.unpack`` and the
    Port's PortInfo table (``fabric.devices.port.PORT_INFO``)."""
    global _SmpError, _SmpView, _put_attr, _port_info_unpack, _pi_codec, _pi_keys
    _SmpError, _SmpView, _put_attr, _port_info_unpack = smp_error, smp_view, put_attr, port_info_unpack
    _pi_codec, _pi_keys = port_info_map.compiled() or (None, None)


cdef object _port_info_octets(dev, port, int in_port):
    """``dev.port_info_octets(port, in_port)``: the same packing (PORT_INFO, the device's
    overrides), without its frame and FieldMap.pack's."""
    if _pi_codec is not None:
        raw = _pi_codec.pack_mapped(port.__dict__, _pi_keys, dev.port_info_overrides(port, in_port))
        if raw is not None:
            return raw
    return dev.port_info_octets(port, in_port)  # what the codec declines: the reference's error


cdef inline unsigned long long _be(const uint8_t *p, int n) noexcept:
    cdef unsigned long long v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


cdef bytes _pkey_block(dev, unsigned int mod, int in_port):
    """sma_attr's PKeyTable Get: the block's PKEY_BLOCK entries, zeros past the table's end."""
    port, block = dev.pkey_port_block(mod, in_port)
    cdef list pkeys = port.pkeys
    cdef Py_ssize_t first = <Py_ssize_t> block * PKEY_BLOCK, i, n = len(pkeys)
    cdef unsigned int v
    if first >= n:
        raise _SmpError(STATUS_INVALID_FIELD, f"P_Key block {block} beyond the table")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 64)
    cdef uint8_t *q = <uint8_t *> PyBytes_AS_STRING(out)
    memset(q, 0, 64)
    for i in range(min(PKEY_BLOCK, n - first)):
        v = pkeys[first + i]
        if v > 0xFFFF:
            raise ValueError(f"P_Key {v:#x} wider than 16 bits")
        q[2 * i] = v >> 8
        q[2 * i + 1] = v & 0xFF
    return out


def sma_fast(dev, int in_port, data, double now=0.0, kind=None):
    """See ``Device.sma_fast_py``: True when the SMA answered (the answer is in the outbox)."""
    cdef const uint8_t[::1] view
    cdef const uint8_t *p
    cdef int k, method, attr
    cdef unsigned int status = 0, mod, dlid, slid
    cdef unsigned long long m_key
    if _SmpError is None or len(data) != SMP_PACKET:
        return False
    if type(data) is bytes:  # what the device paths pass: no buffer view to set up
        p = <const uint8_t *> PyBytes_AS_STRING(data)
    else:
        view = data
        p = &view[0]
    k = smp_kind(p, SMP_PACKET) if kind is None else kind
    if k != SMP_KIND_REQUEST_DR and k != SMP_KIND_REQUEST_LID:
        return False
    method = p[MAD + 3]
    attr = (p[MAD + 16] << 8) | p[MAD + 17]
    if (method != GET and method != SET) or attr == ATTR_SM_INFO:
        return False
    port = dev.mgmt_port(in_port)
    if port.m_key:
        return False  # protection: the full path checks keys and counts violations
    if k == SMP_KIND_REQUEST_LID:
        dlid, slid = (p[2] << 8) | p[3], (p[6] << 8) | p[7]
        if dlid == LID_PERMISSIVE or not port.owns_lid(dlid) or port.owns_lid(slid):
            return False
    mod = <unsigned int> _be(p + MAD + 20, 4)
    m_key = _be(p + MAD + 24, 8)
    try:
        if attr == ATTR_NODE_INFO and method == GET:
            payload = dev.node_info_octets(in_port)
        elif attr == ATTR_PORT_INFO:  # sma_attr's PortInfo branch, without the dispatch to it
            target = dev.port_for_attr(mod, in_port)
            if method == SET:
                dev.set_port_info(target, _port_info_unpack(data, MAD + 64), now)
            payload = _port_info_octets(dev, target, in_port)
        elif attr == ATTR_PKEY_TABLE and method == GET:
            payload = _pkey_block(dev, mod, in_port)
        else:
            payload = _put_attr(dev.sma_attr(_SmpView(method, attr, mod, PyBytes_FromStringAndSize(
                <const char *> p + MAD + 64, 64), m_key), in_port, now), 64)
    except _SmpError as exc:
        payload, status = PyBytes_FromStringAndSize(<const char *> p + MAD + 64, 64), exc.status
    if type(payload) is not bytes or len(payload) != 64:
        payload = _put_attr(payload, 64)  # NodeInfo's 40 octets, padded as sma_attr's answers are
    if attr == ATTR_PORT_INFO and status == 0 and port.m_key_protect == 1 and m_key != port.m_key:
        # a Set just gave the port a key, and protect bits 1 hide it: M_Key is PortInfo's first 8 octets
        payload = PyBytes_FromStringAndSize(<const char *> PyBytes_AS_STRING(payload), 64)
        memset(PyBytes_AS_STRING(payload), 0, 8)
    raw = smp_answer_packet(p, in_port, <const uint8_t *> PyBytes_AS_STRING(payload), status)
    if k == SMP_KIND_REQUEST_DR:
        _mgmt_out(dev, in_port, raw)  # back along the return path, which starts here
    else:
        dev.route_out(raw, in_port)
    return True
