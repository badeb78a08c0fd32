# cython: language_level=3
"""ibsim's client protocol in C, for what OpenSM's sweep is made of: a client's plain directed-route
request (``sim_request``) made into the packet its HCA sends, and the answer back at the port made
into the client's datagram, with the endpoint's bookkeeping around them (``on_data``,
``take_dr_answer``, which ``SimEndpoint`` takes when built). ``SimEndpoint.on_data_py`` and
``take_dr_answer_py`` are the reference (tests/test_simproto.py: the same octets on the wire and in
the datagrams, the same counts); anything else goes to them."""

from libc.stdint cimport uint8_t
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from fabric._wirefast cimport _dr_request_packet, _plain_dr_request

from fabric.devices.hca import send_dr_packet

# struct sim_request: dlid u32, slid u32, dqp, sqp, status, 4 octets of padding, length u64, mad[256]
cdef enum:
    SIM_REQUEST = 288
    SIM_MAD = 32  # where the MAD starts in a sim_request
    SMP_PACKET = 290  # an SMP without a GRH, LRH to VCRC
    SMP_MAD = 28  # where its MAD starts
    MAD_TID = 8
    DR_HOP_PTR = 6
    DR_PATH = 128  # InitialPath

cdef double _pending_s = 30.0
cdef Py_ssize_t _pending_expiry = 4096


def setup(double pending_s, Py_ssize_t pending_expiry):
    """How long a request's answer is waited for and the pending table's size above which
    ``SimEndpoint._expire`` looks at it (endpoint.PENDING_S, PENDING_EXPIRY)."""
    global _pending_s, _pending_expiry
    _pending_s, _pending_expiry = pending_s, pending_expiry


cdef tuple _request(const uint8_t *raw, Py_ssize_t n, unsigned int index):
    cdef const uint8_t *m
    cdef unsigned long long tid = 0
    cdef int k
    if n != SIM_REQUEST or index > 0xFFFF:
        return None
    m = raw + SIM_MAD
    if m[0] != 1 or not _plain_dr_request(m):
        return None
    for k in range(8):
        tid = (tid << 8) | m[MAD_TID + k]
    tid = (tid & 0xFFFFFFFFFFFF) | (<unsigned long long> index << 48)
    return tid, m[DR_PATH + 1], _dr_request_packet(m, True, tid)


def sim_dr_request(const unsigned char[::1] raw not None, unsigned int index):
    """A client's ``sim_request`` carrying a plain outgoing directed-route request (base version
    1, and what ``fabric._wirefast.dr_request_packet`` takes) as the packet its HCA sends:
    ``(TID, port, packet)``, the TID with the client's ``index`` in its top 16 bits (where the
    answer finds its way back), the port InitialPath[1] names, octet for octet what
    ``send_dr_request`` builds. None for anything else."""
    if raw.shape[0] != SIM_REQUEST:
        return None
    return _request(&raw[0], SIM_REQUEST, index)


cdef bytes _answer(const uint8_t *packet, unsigned int lid, unsigned long long *tid):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, SIM_REQUEST)
    cdef uint8_t *q = <uint8_t *> PyBytes_AS_STRING(out)
    cdef int k
    memset(q, 0, SIM_MAD)
    q[0] = (lid >> 8) & 0xFF
    q[1] = lid & 0xFF
    q[4] = packet[6]
    q[5] = packet[7]
    q[30] = 1  # length 256, a big-endian u64 at 24
    memcpy(q + SIM_MAD, packet + SMP_MAD, 256)
    q[SIM_MAD + DR_HOP_PTR] = 0
    tid[0] = 0
    for k in range(8):
        tid[0] = (tid[0] << 8) | packet[SMP_MAD + MAD_TID + k]
    return out


def sim_dr_answer(const unsigned char[::1] packet not None, unsigned int lid):
    """A directed-route answer back at its requester (``smp_arrival``'s SMP_RESPONSE_DR) as the
    ``sim_request`` a client receives: ``(TID, datagram)``, DLID ``lid`` (the port's), SLID the
    packet's, QPs and status 0, length 256, the MAD with its hop pointer at 0 (C14-13:3 leaves it
    so at the requester)."""
    cdef unsigned long long tid
    if packet.shape[0] != SMP_PACKET:
        raise ValueError("sim_dr_answer needs a 290-octet SMP packet")
    out = _answer(&packet[0], lid, &tid)
    return tid, out


def on_data(ep, int index, raw, double now):
    """``SimEndpoint.on_data``: a plain directed-route request goes out as its packet from here
    (``on_data_py``'s path for it, without the Request object and the calls); anything else is
    ``on_data_py``'s."""
    cdef const uint8_t[::1] view
    client = ep.clients.get(index)
    if client is None:
        return True
    if index < 0 or len(raw) != SIM_REQUEST:
        return ep.on_data_py(index, raw, now)
    view = raw
    r = _request(&view[0], SIM_REQUEST, index)
    if r is None:
        return ep.on_data_py(index, raw, now)
    tid, out, packet = r
    ep.stats["requests"] += 1
    client.sent += 1
    pending = ep.pending
    pending[tid] = (index, now + _pending_s, now)  # SimEndpoint._await
    if len(pending) > _pending_expiry:
        ep._expire(now)
    if not send_dr_packet(ep.hca, out, packet):
        ep._refused_plain(client, raw, tid)
    return True


def take_dr_answer(ep, packet, int in_port, double now):
    """``SimEndpoint.take_dr_answer_py``: the answer's datagram to the client that asked."""
    cdef const uint8_t[::1] view
    cdef unsigned long long tid
    if in_port != ep.port:
        return False
    view = packet
    if view.shape[0] != SMP_PACKET:
        raise ValueError("a directed-route answer is a 290-octet SMP packet")
    datagram = _answer(&view[0], ep.hca.ports[in_port].lid, &tid)
    entry = ep.pending.pop(tid, None)  # SimEndpoint._client_for(tid, True, now, last=True)
    if entry is None or entry[1] < now:
        return False
    if entry[2] is not None:
        ep.rtts.append(now - entry[2])
    client = ep.clients.get(entry[0])
    if client is None:
        return False
    client.received += 1  # SimEndpoint._send_to
    ep.stats["to_clients"] += 1
    ep.send(client.index, datagram)
    return True
