# cython: language_level=3
"""ibsim's client protocol in C, for what OpenSM's sweep is made of: a client's plain directed-route
request (``sim_request``) made into the packet its HCA sends, and the answer back at the port made
into the client's datagram, with the endpoint's bookkeeping around them (``on_data``,
``take_dr_answer``, which ``SimEndpoint`` takes when built). ``SimEndpoint.on_data_py`` and
``take_dr_answer_py`` are the reference (tests/test_simproto.py: the same octets on the wire and in
the datagrams, the same counts); anything else goes to them. ``Datagrams`` reads and writes the
endpoint's data sockets themselves (``SimServer._on_data`` and ``_send`` are its reference)."""

from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint8_t
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from fabric._corefast cimport DeviceCore, PortCore
from fabric._wirefast cimport _dr_request_packet, _plain_dr_request
from fabric.devices._smafast cimport send_dr_packet_c

cdef extern from "sys/socket.h" nogil:
    ssize_t c_recv "recv"(int fd, void *buf, size_t n, int flags)
    ssize_t c_send "send"(int fd, const void *buf, size_t n, int flags)
    enum: MSG_DONTWAIT


# struct sim_request: dlid u32, slid u32, dqp, sqp, status, 4 octets of padding, length u64, mad[256]
cdef enum:
    SIM_REQUEST = 288
    SIM_MAD = 32  # where the MAD starts in a sim_request
    SMP_PACKET = 290  # an SMP without a GRH, LRH to VCRC
    READ_BUDGET = 64  # datagrams one readable event takes (server.READ_BUDGET)
    RECV_MAX = 1024  # what the Python reader takes of a datagram (server.SimServer._on_data)
    SMP_MAD = 28  # where its MAD starts
    MAD_TID = 8
    DR_HOP_PTR = 6
    DR_PATH = 128  # InitialPath

cdef class EndpointCore:
    """The base of ``SimEndpoint`` when built: the fields this module reads for every request and
    answer in its struct (endpoint.ENDPOINT_CORE_FIELDS names them for the pure twin; Python code
    sees plain attributes, as with fabric/_corefast's cores)."""
    cdef public object hca, port, send, rtts
    cdef public dict clients, pending, stats


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


def on_data(EndpointCore ep not None, int index, raw, double now):
    """``SimEndpoint.on_data``: a plain directed-route request goes out as its packet from here
    (``on_data_py``'s path for it, without the Request object and the calls); anything else is
    ``on_data_py``'s."""
    cdef const uint8_t[::1] view
    if index < 0 or len(raw) != SIM_REQUEST:
        return ep.on_data_py(index, raw, now)  # which answers True for a client it lacks, as _on_data
    view = raw
    return _on_data(ep, index, &view[0], SIM_REQUEST, raw, now)


cdef object _on_data(EndpointCore ep, int index, const uint8_t *raw, Py_ssize_t n, object rawobj, double now):
    """on_data with the datagram's octets (``rawobj`` them as bytes, or None: made if needed)."""
    client = ep.clients.get(index)
    if client is None:
        return True
    r = _request(raw, n, index) if index >= 0 else None
    if r is None:
        if rawobj is None:
            rawobj = PyBytes_FromStringAndSize(<const char *> raw, n)
        return ep.on_data_py(index, rawobj, now)
    tid, out, packet = r
    ep.stats["requests"] += 1
    client.sent += 1
    pending = ep.pending
    pending[tid] = (index, now + _pending_s, now)  # SimEndpoint._await
    if len(pending) > _pending_expiry:
        ep._expire(now)
    if not send_dr_packet_c(ep.hca, out, packet):
        if rawobj is None:
            rawobj = PyBytes_FromStringAndSize(<const char *> raw, n)
        ep._refused_plain(client, rawobj, tid)
    return True


cdef class Datagrams:
    """A SimServer's data sockets read and written here: ``reader(i)`` is the device host's
    reader of client i's socket (``SimServer._on_data`` in C: recv and the request without a
    Python frame), ``send`` the endpoint's ``send`` (``SimServer._send``). The sockets stay the
    server's: ``close`` before it closes them, and nothing is sent or read here after.
    A refused send goes to ``server._unreachable(index, errno)``, a full socket counts
    ``server.dropped``, as SimServer._send does."""

    cdef object server
    cdef object endpoint
    cdef EndpointCore endpoint_core
    cdef int fds[16]
    cdef int nfds

    def __init__(self, server, endpoint, fds):
        cdef int i
        self.server, self.endpoint, self.endpoint_core = server, endpoint, endpoint
        if len(fds) > 16:
            raise ValueError("at most 16 data sockets")
        self.nfds = len(fds)
        for i in range(self.nfds):
            self.fds[i] = fds[i]

    def close(self):
        cdef int i
        for i in range(self.nfds):
            self.fds[i] = -1

    def send(self, int index, bytes data not None):
        cdef ssize_t r
        if index < 0 or index >= self.nfds or self.fds[index] < 0:
            return
        cdef int err = 0
        r = c_send(self.fds[index], PyBytes_AS_STRING(data), len(data), MSG_DONTWAIT)
        if r < 0:
            err = errno
        while r < 0 and err == EINTR:  # a signal came first: again, as Python's socket.send does
            r = c_send(self.fds[index], PyBytes_AS_STRING(data), len(data), MSG_DONTWAIT)
            err = errno if r < 0 else 0
        if r < 0:
            if err == EAGAIN:  # EWOULDBLOCK on Linux
                self.server.dropped += 1  # the client does not read: UD semantics, the MAD is lost
            else:
                self.server._unreachable(index, err)

    def reader(self, int index):
        """The device host's reader for client ``index``'s data socket."""
        return _Reader(self, index)

    cdef object read(self, int index, double now):
        cdef uint8_t buf[RECV_MAX]
        cdef ssize_t n
        cdef int k = 0
        quiet = True  # index: a _Reader's, checked when it was made
        if self.endpoint_core is None:
            raise ValueError("these data sockets have no endpoint to read for")
        while k < READ_BUDGET:
            if self.fds[index] < 0:
                break
            n = c_recv(self.fds[index], buf, RECV_MAX, MSG_DONTWAIT)
            if n < 0:
                if errno == EINTR:
                    continue
                break  # EAGAIN: all read (any other error: as the Python reader, stop here)
            k += 1
            if not _on_data(self.endpoint_core, index, buf, n, None, now):
                quiet = False
        return quiet


cdef class _Reader:
    cdef Datagrams dg
    cdef int index

    def __cinit__(self, Datagrams dg not None, int index):
        if index < 0 or index >= dg.nfds:
            raise IndexError(f"no data socket {index}")
        self.dg, self.index = dg, index

    def __call__(self, double now):
        return self.dg.read(self.index, now)


def take_dr_answer(EndpointCore ep not None, packet, int in_port, double now):
    """``SimEndpoint.take_dr_answer_py``: the answer's datagram to the client that asked."""
    cdef const uint8_t[::1] view
    cdef unsigned long long tid
    if in_port != ep.port:
        return False
    cdef const uint8_t *p
    if type(packet) is bytes and len(<bytes> packet) == SMP_PACKET:  # the HCA's: no buffer view to set up
        p = <const uint8_t *> PyBytes_AS_STRING(packet)
    else:
        view = packet
        if view.shape[0] != SMP_PACKET:
            raise ValueError("a directed-route answer is a 290-octet SMP packet")
        p = &view[0]
    datagram = _answer(p, (<PortCore?> (<DeviceCore?> ep.hca).ports[in_port]).lid, &tid)
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
