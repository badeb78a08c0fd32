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
from fabric._corefast cimport DeviceCore, HCACore, PortCore, SwitchCore, _TypeWithTag, class_unchanged

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
    PORT_DOWN = 1  # PortState and PortPhysicalState values (fabric.wire.smp_attrs)
    PORT_INIT = 2
    PORT_ARMED = 3
    PORT_ACTIVE = 4
    PHYS_POLLING = 2
    PHYS_DISABLED = 3
    PI_OTHER = 0  # how a device's PortInfo is answered: by its own Python (_pi_kind)
    PI_HCA = 1  # fabric.devices.hca.HCA's code, done here
    PI_SWITCH = 2  # fabric.devices.switch.Switch's

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


def hca_smp_fast(HCACore hca not None, int in_port, data, double now):
    """``HCA._smp_fast_py`` compiled (the reference, tests/test_smp_compiled.py): a request to the
    HCA's SMA answered by ``sma_fast``, a directed-route answer handed to the software attached
    through ibsim's protocol (``user_mad``) or to our SM (``sm_consumer``), a LID-routed answer to
    our SM, without a frame of Python around it. 0 leaves the packet to the full path (which may
    call this again: a second call decides as the first did)."""
    return hca_smp_fast_c(hca, in_port, data, now)


cdef object hca_smp_fast_c(HCACore hca, int in_port, object data, double now):
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


cdef object _lid_answer(HCACore hca, int in_port, const uint8_t *p, double now):
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


# -- PortInfo without Python (the HCA's and the switch's own code, which stays the reference) ------

cdef object _hca_cls = None, _sw_cls = None, _port_cls = None
cdef dict _hca_methods = None, _sw_methods = None
cdef unsigned int _hca_tag = 0, _sw_tag = 0, _port_tag = 0
cdef object _sw_port0_caps = None
# the PortInfo fields a Set reads, and their bit offset and width (register_port_info)
cdef enum:
    F_M_KEY, F_GID_PREFIX, F_LID, F_SM_LID, F_LEASE, F_WIDTH_ENABLED, F_PORT_STATE, F_PHYS_STATE, F_PROTECT,
    F_LMC, F_NMTU, F_SM_SL, F_VL_HIGH, F_HOQ, F_OP_VLS, F_ENF_IN, F_ENF_OUT, F_REREG, F_SUBNET_TIMEOUT,
    F_RESP_TIME, N_SET_FIELDS
_SET_FIELDS = ("m_key", "gid_prefix", "lid", "master_sm_lid", "m_key_lease_period", "link_width_enabled",
               "port_state", "phys_state", "m_key_protect_bits", "lmc", "neighbor_mtu", "master_sm_sl",
               "vl_high_limit", "hoq_life", "operational_vls", "partition_enforcement_inbound",
               "partition_enforcement_outbound", "client_reregister", "subnet_timeout", "resp_time_value")
cdef int _f_off[N_SET_FIELDS]
cdef int _f_width[N_SET_FIELDS]

_HCA_METHODS = ("set_port_info", "apply_port_info", "addressable", "port_for_attr", "mgmt_port", "port_info_overrides")
_SWITCH_METHODS = ("set_port_info", "apply_port_info", "addressable", "port_for_attr", "mgmt_port", "port_info_overrides",
                   "_mark")


def register_port_info(hca_cls, switch_cls, port_cls, port_info_fields, switch_port0_caps):
    """The HCA and Switch classes whose PortInfo Get and Set ``sma_fast`` does here, as their
    methods do (``_HCA_METHODS``, ``_SWITCH_METHODS``: while a class still has the methods it had
    now, checked again whenever the class changes), ``Port``, PortInfo's field table
    (``fabric.wire.smp_attrs.PortInfo.FIELDS``) and a switch's port 0 CapabilityMask."""
    global _hca_cls, _sw_cls, _port_cls, _hca_methods, _sw_methods, _hca_tag, _sw_tag, _port_tag, _sw_port0_caps
    cdef int i
    at, off = {}, 0
    for f in port_info_fields:
        at[f.name] = (off, f.bits)
        off += f.bits
    if off != 512:
        raise ValueError(f"PortInfo's table is {off} bits, not 512")
    if len(_SET_FIELDS) != N_SET_FIELDS:
        raise RuntimeError("_SET_FIELDS and the F_ enum disagree")
    for i, name in enumerate(_SET_FIELDS):
        o, b = at[name]
        if b > 64 or (b > 56 and o % 8):
            raise ValueError(f"PortInfo field {name} spans more than 8 octets")
        _f_off[i], _f_width[i] = o, b
    _hca_methods = {n: getattr(hca_cls, n) for n in _HCA_METHODS}
    _sw_methods = {n: getattr(switch_cls, n) for n in _SWITCH_METHODS}
    _hca_cls, _sw_cls, _port_cls, _sw_port0_caps = hca_cls, switch_cls, port_cls, switch_port0_caps
    _hca_tag = _sw_tag = 0
    getattr(port_cls, "__init__")  # gives the class a version tag, which changes if it is modified
    _port_tag = (<_TypeWithTag *> port_cls).tp_version_tag


cdef int _pi_kind(object dev) except -1:
    """PI_HCA or PI_SWITCH when ``dev``'s PortInfo code is the HCA's or the switch's as
    registered, PI_OTHER for anything else (its own methods answer)."""
    cls = type(dev)
    if cls is _sw_cls and _sw_cls is not None:
        return PI_SWITCH if class_unchanged(cls, &_sw_tag, _sw_methods) else PI_OTHER
    if cls is _hca_cls and _hca_cls is not None:
        return PI_HCA if class_unchanged(cls, &_hca_tag, _hca_methods) else PI_OTHER
    return PI_OTHER


cdef inline bint _plain_port(object port) noexcept:
    """A Port as the class was registered (no subclass, nothing patched in since)."""
    cdef unsigned int tag
    if type(port) is not _port_cls:
        return False
    tag = (<_TypeWithTag *> _port_cls).tp_version_tag
    return tag != 0 and tag == _port_tag


cdef inline unsigned long long _field(const uint8_t *p, int f) noexcept:
    """Set field ``f`` (F_...) of the PortInfo octets ``p``: a big-endian bit field."""
    cdef int off = _f_off[f], width = _f_width[f]
    cdef unsigned long long v = 0
    cdef int i, last = (off + width - 1) >> 3
    for i in range(off >> 3, last + 1):
        v = (v << 8) | p[i]
    v >>= 7 - ((off + width - 1) & 7)
    return v if width == 64 else v & ((1ULL << width) - 1)


cdef object _mgmt_port(DeviceCore dev, int kind, int in_port):
    """``dev.mgmt_port(in_port)`` as the switch's (port 0) and the HCA's (the port the SMP came in
    on) do."""
    if kind == PI_SWITCH:
        return dev.ports[0]
    port = dev.ports.get(in_port)
    return port if port else dev.ports[1]


cdef object _port_for_attr(DeviceCore dev, int kind, unsigned int mod, int in_port):
    """``dev.port_for_attr(mod, in_port)`` as the HCA's and the switch's do."""
    if kind == PI_HCA and mod == 0:  # HCA.mgmt_port
        return _mgmt_port(dev, kind, in_port)
    port = dev.ports.get(mod)
    if port is None:
        raise _SmpError(STATUS_INVALID_FIELD, f"no port {mod}")
    return port


cdef int _set_port_info(DeviceCore dev, int kind, PortCore port, const uint8_t *pi) except -1:
    """Device.set_port_info and apply_port_info (with the HCA's or the switch's additions) for a
    Set's PortInfo octets ``pi``: validated first, so that an invalid Set changes nothing."""
    cdef unsigned int ps = <unsigned int> _field(pi, F_PORT_STATE)
    cdef unsigned int phys = <unsigned int> _field(pi, F_PHYS_STATE)
    cdef unsigned int nmtu = <unsigned int> _field(pi, F_NMTU)
    cdef unsigned int lmc = <unsigned int> _field(pi, F_LMC)
    cdef object p = port
    if ps != 0 and ps != PORT_DOWN and ps != PORT_ARMED and ps != PORT_ACTIVE:
        raise _SmpError(STATUS_INVALID_FIELD, f"PortState {ps} cannot be set")
    if ps == PORT_ARMED and port.state != PORT_INIT and port.state != PORT_ARMED:
        raise _SmpError(STATUS_INVALID_FIELD, "Armed is reachable only from Init")
    if ps == PORT_ACTIVE and port.state != PORT_ARMED and port.state != PORT_ACTIVE:
        raise _SmpError(STATUS_INVALID_FIELD, "Active is reachable only from Armed")
    if phys != 0 and phys != PHYS_POLLING and phys != PHYS_DISABLED:
        raise _SmpError(STATUS_INVALID_FIELD, f"PortPhysicalState {phys} cannot be set")
    if nmtu and not 1 <= nmtu <= p.mtu_cap:
        raise _SmpError(STATUS_INVALID_FIELD, f"NeighborMTU {nmtu} beyond MTUCap {p.mtu_cap}")
    if lmc > 7:
        raise _SmpError(STATUS_INVALID_FIELD, "LMC above 7")
    cdef list events = dev.events
    num = port.num
    if kind == PI_SWITCH:
        (<SwitchCore> dev)._dirty_ports.add(num)  # Switch._mark
    old_lid, old_sm = port.lid, p.sm_lid
    p.m_key = _field(pi, F_M_KEY)
    p.gid_prefix = _field(pi, F_GID_PREFIX)
    if kind == PI_HCA or num == 0:  # addressable: a switch's external ports take no LID
        port.lid = _field(pi, F_LID)
        p.sm_lid = _field(pi, F_SM_LID)
        port.lmc = lmc
    p.m_key_lease = _field(pi, F_LEASE)
    p.m_key_protect = _field(pi, F_PROTECT)
    p.sm_sl = _field(pi, F_SM_SL)
    p.subnet_timeout = _field(pi, F_SUBNET_TIMEOUT)
    p.resp_time = _field(pi, F_RESP_TIME)
    if nmtu:
        p.neighbor_mtu = nmtu
    cdef unsigned long long v = _field(pi, F_WIDTH_ENABLED)
    if v:
        p.width_enabled = v
    v = _field(pi, F_OP_VLS)
    if v:
        p.operational_vls = v
    p.hoq_life = _field(pi, F_HOQ)
    p.vl_high_limit = _field(pi, F_VL_HIGH)
    p.pkey_enforce_in = _field(pi, F_ENF_IN)
    p.pkey_enforce_out = _field(pi, F_ENF_OUT)
    if ps == PORT_DOWN and p.physical:
        events.append(("link_bounce", num, None))  # down, then retrain to Init
    elif (ps == PORT_ARMED or ps == PORT_ACTIVE) and port.state != ps:
        old = port.state
        port.state = ps
        events.append(("port_state", num, (old, port.state)))
    if phys == PHYS_DISABLED and p.physical:
        p.admin_up = False
        events.append(("link_disable", num, None))
    elif phys == PHYS_POLLING and p.physical and not p.admin_up:
        p.admin_up = True
        events.append(("link_enable", num, None))
    if port.lid != old_lid:
        events.append(("lid_change", num, (old_lid, port.lid)))
    if p.sm_lid != old_sm:
        events.append(("sm_change", num, (old_sm, p.sm_lid)))
    if _field(pi, F_REREG):
        events.append(("client_reregister", num, None))
    if kind == PI_HCA:
        p.client_reregister = 0  # a pulse: the event was recorded, the bit does not stick
    return 0


cdef dict _overrides(DeviceCore dev, int kind, PortCore port, int in_port):
    """``dev.port_info_overrides(port, in_port)`` as Device's and the switch's build it."""
    cdef dict d = {"local_port": in_port, "lid": port.lid, "lmc": port.lmc, "port_state": port.state,
                   "phys_state": port.phys}
    cdef PortCore p0
    if kind == PI_SWITCH:  # external ports report the switch's LID (they have none of their own)
        p0 = dev.ports[0]
        d["lid"] = p0.lid
        if port.num != 0:
            d["master_sm_lid"] = (<object> p0).sm_lid
            d["lmc"] = 0
        else:
            d["capability_mask"] = _sw_port0_caps
    return d


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
    cdef int k, method, attr, pk
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
    pk = _pi_kind(dev)
    port = _mgmt_port(<DeviceCore> dev, pk, in_port) if pk else dev.mgmt_port(in_port)
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
            target = _port_for_attr(<DeviceCore> dev, pk, mod, in_port) if pk else dev.port_for_attr(mod, in_port)
            if pk and not _plain_port(target):
                pk = PI_OTHER
            if method == SET:
                if pk:
                    _set_port_info(<DeviceCore> dev, pk, <PortCore> target, p + MAD + 64)
                else:
                    dev.set_port_info(target, _port_info_unpack(data, MAD + 64), now)
            payload = None
            if pk and _pi_codec is not None:
                payload = _pi_codec.pack_mapped(target.__dict__, _pi_keys, _overrides(<DeviceCore> dev, pk, <PortCore> target, in_port))
            if payload is None:
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
