"""One HCA port seen by ibsim's clients: software attached through ``libumad2sim.so`` (OpenSM,
infiniband-diags) becomes software on this port, as it would through ``/dev/infiniband/umadN``.

Sans-IO: :meth:`SimEndpoint.on_ctl` takes a control datagram and returns the reply;
:meth:`SimEndpoint.on_data` takes a data datagram from client ``i``; whatever goes back to a client
is handed to ``send(i, datagram)``, which the socket glue (:mod:`fabric.simproto.server`) owns.

What the endpoint does is what the kernel's MAD layer does for a user MAD agent, on a real HCA:

- a MAD a client sends leaves through this port as a real packet: an SMP through the HCA's SMI
  (``send_smp``: directed-route SMPs walk the switches' SMAs hop by hop, LID-routed ones go to their
  LID), any other class on QP1 to its LID and QPN (``post_send``). A request's TID gets the client's
  index in its top 16 bits (the MAD layer puts its agent there too), so that the answer finds its
  way back: :meth:`take_smp` and :meth:`take_gmp`, which the HCA calls first (``hca.user_mad``),
  hand a response whose TID this endpoint sent to that client;
- requests that arrive at the port go to the client that took the SM role (``SET_ISSM``, or
  ``SIM_SET_ISSM``): traps on QP0 and SA requests on QP1, as the kernel delivers them to OpenSM's
  agents. What the HCA itself answers (its SMA, its PMA) never reaches a client;
- everything else goes on to whatever the HCA had before (our SM, IPoIB's SA client, the QPs).

One MAD per datagram, 256 octets: the protocol has no room for more, so a multi-packet (RMPP)
answer reaches a client as its segments, as ibsim passes them (``saquery`` of a whole table shows
the first segment's records).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from .. import wire as w
from ..devices.base import REVISION
from ..devices.hca import FW_VERSION, send_dr_request, send_smp
from ..wire import smp_attrs as sa
from ..wire.compiled import wirefast
from . import wire as sw

_simfast = None  # the plain directed-route request in and its answer out, in C (None: the Python path)
if wirefast is not None:  # built with it (setup.py), chosen with it
    try:
        from . import _simfast
    except ImportError as exc:  # pragma: no cover - depends on the build
        raise ImportError("fabric._wirefast is built but fabric.simproto._simfast is not (run `make install`)") from exc

log = logging.getLogger(__name__)
PENDING_S = 30.0  # how long an answer to a client's request is waited for (an RMPP transfer included)
PENDING_EXPIRY = 4096  # requests awaiting answers above which the unanswered ones are looked for
TID_HI_SHIFT = 48
if _simfast is not None:
    _simfast.setup(PENDING_S, PENDING_EXPIRY)


RMPP_HDR_END = 36  # common MAD header (24) and RMPP header (12): where an RMPP payload starts


def _mad_length(raw: bytes) -> int:
    """The length a client is told, as the kernel's MAD layer tells it: an RMPP transfer that fits
    in one segment is 36 octets of headers plus its PayloadLength (the SA header and the records),
    so that a tool counts the records it holds, not the padding; anything else is one whole MAD."""
    if raw[1] == w.CLASS_SUBN_ADM and raw[26] & 0x07 == 0x07:  # RMPP active, first and last
        paylen = int.from_bytes(raw[32:36], "big")
        if 0 < paylen <= w.MAD_SIZE - RMPP_HDR_END:
            return RMPP_HDR_END + paylen
    return w.MAD_SIZE


@dataclass
class Client:
    index: int
    pid: int
    qp: int
    issm: bool = False
    sent: int = 0
    received: int = 0


# the fields of SimEndpoint that _simfast reads for every request and answer: its EndpointCore's
# struct when built, plain attributes otherwise (a test compares the two lists)
ENDPOINT_CORE_FIELDS = ("hca", "port", "send", "rtts", "clients", "pending", "stats")


class _EndpointFields:
    __slots__ = ()


EndpointCore = _simfast.EndpointCore if _simfast is not None else _EndpointFields


class SimEndpoint(EndpointCore):
    """ibsim's server side for one port of ``hca``; ``names`` are what a client may call the node
    (``SIM_HOST``: its name, NodeDescription, GUID). ``connect_client(index, pid) -> bool`` wires a
    new client's data socket (the glue's business); ``send(index, datagram)`` delivers to it."""

    def __init__(self, hca, port: int, names, *, send, connect_client=lambda index, pid: True):
        self.hca = hca
        self.port = port
        self.names = {n for n in names if n}
        self.send = send
        self.connect_client = connect_client
        self.clients: dict[int, Client] = {}
        self.pending: dict[int, tuple[int, float, float]] = {}  # TID -> (client index, until, sent at)
        self.rtts: deque = deque(maxlen=1024)  # seconds from a client's request to its first answer
        self._next_expiry = 0.0
        self.stats = {"ctl": 0, "ctl_errors": 0, "requests": 0, "bad_requests": 0, "to_clients": 0,
                      "refused_sends": 0}
        if getattr(hca, "user_mad", None) is not None and hca.user_mad is not self:
            raise ValueError(f"{hca.name} has another user MAD endpoint")
        hca.user_mad = self

    def close(self) -> None:
        if self.hca.user_mad is self:
            self.hca.user_mad = None
        for c in list(self.clients.values()):
            self._detach(c)

    # -- control -------------------------------------------------------------------------------

    def on_ctl(self, raw: bytes, now: float) -> bytes | None:
        """A control datagram; the reply (None: no reply, the datagram was not a control one)."""
        self.stats["ctl"] += 1
        try:
            ctl = sw.Ctl.unpack(raw)
        except sw.SimProtoError as exc:
            self.stats["ctl_errors"] += 1
            log.warning("%s: %s", self.hca.name, exc)
            return None
        try:
            data = self._ctl(ctl, now)
        except (sw.SimProtoError, KeyError, ValueError) as exc:
            self.stats["ctl_errors"] += 1
            log.warning("%s: %s %s refused: %s", self.hca.name, sw.CTL_NAMES.get(ctl.type, ctl.type),
                        f"from client {ctl.clientid}", exc)
            return sw.Ctl(ctl.clientid, sw.CTL_ERROR, ctl.length, ctl.data).pack()
        return sw.Ctl(ctl.clientid, ctl.type, ctl.length, data if data is not None else ctl.data).pack()

    def _ctl(self, ctl: sw.Ctl, now: float) -> bytes | None:
        if ctl.type == sw.CTL_CONNECT:
            return self._connect(ctl)
        client = self.clients.get(ctl.clientid)
        if client is None:
            raise sw.SimProtoError(f"no client {ctl.clientid}")
        port = self.hca.ports[self.port]
        if ctl.type == sw.CTL_DISCONNECT:
            self._detach(client)
            return None
        if ctl.type == sw.CTL_GET_PORT:
            return sw.PORT.pack(port.lid, port.state)
        if ctl.type == sw.CTL_GET_VENDOR:
            return sw.VENDOR.pack(self.hca.vendor_id, self.hca.device_id, REVISION, FW_VERSION)
        if ctl.type == sw.CTL_GET_GID:
            return self.hca.gid(self.port)
        if ctl.type == sw.CTL_GET_GUID:
            return port.guid.to_bytes(8, "big")
        if ctl.type == sw.CTL_GET_NODEINFO:
            return w.put_attr(self.hca.node_info(self.port), sw.CTL_DATA)
        if ctl.type == sw.CTL_GET_PORTINFO:
            num = ctl.data[0]
            p = self.hca.ports.get(num) if num else port
            return w.put_attr((p or port).port_info(), sw.CTL_DATA)
        if ctl.type == sw.CTL_GET_PKEYS:
            return b"".join(k.to_bytes(2, "big") for k in port.pkeys[:sw.CTL_DATA // 2])
        if ctl.type == sw.CTL_SET_ISSM:
            self._set_issm(client, int.from_bytes(ctl.data[:4], "little") != 0)
            return None
        raise sw.SimProtoError(f"control type {ctl.type} is unknown")

    def _connect(self, ctl: sw.Ctl) -> bytes:
        pid, qp, issm, nodeid = sw.client_info(ctl.data)
        if nodeid and nodeid not in self.names:
            raise sw.SimProtoError(f"SIM_HOST={nodeid!r} is not this endpoint's node "
                                   f"({', '.join(sorted(self.names))})")
        free = [i for i in range(sw.MAX_CLIENTS) if i not in self.clients]
        if not free:
            raise sw.SimProtoError(f"{sw.MAX_CLIENTS} clients are attached already (pid {pid} refused)")
        if issm and any(c.issm for c in self.clients.values()):
            raise sw.SimProtoError(f"an SM is attached already (pid {pid} refused)")
        index = free[0]
        if not self.connect_client(index, pid):
            raise sw.SimProtoError(f"cannot reach the data socket of pid {pid}")
        client = self.clients[index] = Client(index, pid, qp)
        if issm:
            self._set_issm(client, True)
        log.info("%s: client %d (pid %d) attached to port %d", self.hca.name, index, pid, self.port)
        return sw.pack_client_info(index, qp, issm, self.hca.name)

    def _set_issm(self, client: Client, on: bool) -> None:
        if on and any(c.issm for c in self.clients.values() if c is not client):
            raise sw.SimProtoError("an SM is attached already")
        client.issm = on
        port = self.hca.ports[self.port]
        port.capability_mask = (port.capability_mask | sa.CAP_IS_SM) if on else (port.capability_mask & ~sa.CAP_IS_SM)

    def _detach(self, client: Client) -> None:
        self.clients.pop(client.index, None)
        if client.issm:
            self._set_issm(client, False)
        self.pending = {t: v for t, v in self.pending.items() if v[0] != client.index}
        log.info("%s: client %d (pid %d) detached", self.hca.name, client.index, client.pid)

    def detach_index(self, index: int) -> None:
        """The glue found the client gone (its socket refuses): as if it had disconnected."""
        c = self.clients.get(index)
        if c is not None:
            self._detach(c)

    # -- a client's MADs into the fabric ------------------------------------------------------

    def on_data_py(self, index: int, raw: bytes, now: float) -> bool:
        """A data datagram from client ``index``. True when nothing on the node ran for it (a
        plain directed-route request went out as a packet, or it was dropped): the device host
        then sends it on at once, as a quiet reader's. ``on_data`` is this, with OpenSM's every
        SMP (a plain directed-route request) done in C when built (``_simfast.on_data``)."""
        client = self.clients.get(index)
        if client is None:
            return True
        try:
            req = sw.Request.unpack(raw)
        except sw.SimProtoError as exc:
            self.stats["bad_requests"] += 1
            log.warning("%s: client %d: %s", self.hca.name, index, exc)
            return False
        self.stats["requests"] += 1
        client.sent += 1
        mad = bytearray(req.mad)
        if mad[0] != w.BASE_VERSION:
            self.stats["bad_requests"] += 1
            self._bounce(client, req)
            return False
        mgmt_class, method = mad[1], mad[3]
        response = bool(method & w.RESPONSE_BIT)
        if not response:
            tid = (int.from_bytes(mad[8:16], "big") & ((1 << TID_HI_SHIFT) - 1)) | (index << TID_HI_SHIFT)
            mad[8:16] = tid.to_bytes(8, "big")
            self._await(index, tid, now)
        if mgmt_class in (w.CLASS_SUBN_LID, w.CLASS_SUBN_DIRECTED):
            plain = send_dr_request(self.hca, self.port, bytes(mad))  # the plain directed-route request
            if plain is not None:
                if not plain:
                    self._refused(client, req, mad)
                return True  # no software of the node ran: as _simfast.on_data says
            ok = self._send_smp(bytes(mad), req, now)
        else:
            ok = self._send_gmp(bytes(mad), req, now)
        if not ok:
            self._refused(client, req, mad)
        return False

    on_data = _simfast.on_data if _simfast is not None else on_data_py

    def _await(self, index: int, tid: int, now: float) -> None:
        """Client ``index`` sent a request with ``tid`` (its index in the top bits): its answer
        goes back to it."""
        self.pending[tid] = (index, now + PENDING_S, now)
        self._expire(now)

    def _refused_plain(self, client: Client, raw: bytes, tid: int) -> None:
        """_simfast.on_data's request ``raw``, with our ``tid``, could not be sent."""
        req = sw.Request.unpack(raw)
        mad = bytearray(req.mad)
        mad[8:16] = tid.to_bytes(8, "big")
        self._refused(client, req, mad)

    def _refused(self, client: Client, req: sw.Request, mad: bytearray) -> None:
        """The HCA could not send ``mad`` (the request with our TID): back to the client at once,
        and no answer awaited."""
        self.pending.pop(int.from_bytes(mad[8:16], "big"), None)
        self.stats["refused_sends"] += 1
        self._bounce(client, sw.Request(req.dlid, req.slid, req.dqp, req.sqp, 0, req.length, bytes(mad)))

    def _send_smp(self, mad: bytes, req: sw.Request, now: float) -> bool:
        try:
            smp = w.parse_mad(mad)
        except w.ParseError:
            return False
        before = self.hca.drops.copy()
        if smp.mgmt_class == w.CLASS_SUBN_DIRECTED:
            send_smp(self.hca, self.port, smp, now)
        else:
            if req.dlid in (0, w.LID_PERMISSIVE):
                return False
            send_smp(self.hca, self.port, smp, now, dlid=req.dlid)
        return self.hca.drops == before  # a port that is down refuses it and counts why

    def _send_gmp(self, mad: bytes, req: sw.Request, now: float) -> bool:
        if req.dlid in (0, w.LID_PERMISSIVE):
            return False
        return self.hca.post_send(1, dlid=req.dlid, dest_qp=req.dqp or 1, payload=mad, qkey=w.QKEY_GSI,
                                  now=now, port_num=self.port)

    def _bounce(self, client: Client, req: sw.Request) -> None:
        """What ibsim does with a request it cannot deliver: back to its sender with status 110,
        at once, so the tool need not wait out its timeout."""
        self._deliver(client, sw.Request(req.dlid, req.slid, req.dqp, req.sqp, sw.STATUS_TIMEOUT,
                                         req.length or sw.MAD_SIZE, req.mad))

    # -- MADs from the fabric to a client (called by the HCA: hca.user_mad) ---------------------

    def take_smp(self, pkt, mad, in_port: int, now: float) -> bool:
        """An SMP for this node's software: a response or a trap. True when a client took it."""
        if in_port != self.port:
            return False
        client = self._client_for(mad.tid, bool(mad.method & w.RESPONSE_BIT), now, last=True)
        if client is None:
            return False
        self._deliver(client, sw.Request(self.hca.ports[self.port].lid, pkt.lrh.slid, 0, pkt.deth.src_qp, 0,
                                         sw.MAD_SIZE, mad.pack()))
        return True

    def take_dr_answer_py(self, packet, in_port: int, now: float) -> bool:
        """A directed-route answer back at this port, as its packet (HCA._smp_fast): as
        :meth:`take_smp`, unparsed. ``take_dr_answer`` is this in C when built."""
        if in_port != self.port:
            return False
        lid = self.hca.ports[self.port].lid
        mad = bytearray(packet[28:28 + w.MAD_SIZE])
        mad[6] = 0  # the hop pointer, as C14-13:3 leaves it at the requester
        tid = int.from_bytes(mad[8:16], "big")
        datagram = sw.Request(lid, (packet[6] << 8) | packet[7], 0, 0, 0, sw.MAD_SIZE, bytes(mad)).pack()
        client = self._client_for(tid, True, now, last=True)
        if client is None:
            return False
        self._send_to(client, datagram)
        return True

    take_dr_answer = _simfast.take_dr_answer if _simfast is not None else take_dr_answer_py

    def take_gmp(self, pkt, in_port: int, now: float) -> bool:
        """A GMP on QP1 that the HCA does not answer itself. True when a client took it."""
        if in_port != self.port:
            return False
        raw = bytes(pkt.payload)
        if len(raw) < w.MAD_SIZE:
            return False
        response = bool(raw[3] & w.RESPONSE_BIT)
        tid = int.from_bytes(raw[8:16], "big")
        # an RMPP transfer answers one request with many segments: the last one ends it
        rmpp_active = raw[1] == w.CLASS_SUBN_ADM and raw[26] & 0x01
        last = not rmpp_active or bool(raw[26] & 0x04)
        if not response and raw[1] != w.CLASS_SUBN_ADM:
            return False  # of the requests, only the SA's are the SM client's
        client = self._client_for(tid, response, now, last=last)
        if client is None:
            return False
        self._deliver(client, sw.Request(pkt.lrh.dlid, pkt.lrh.slid, 1, pkt.deth.src_qp, 0, _mad_length(raw),
                                         raw[:w.MAD_SIZE]))
        return True

    def _client_for(self, tid: int, response: bool, now: float, *, last: bool) -> Client | None:
        if response:
            entry = self.pending.pop(tid, None) if last else self.pending.get(tid)
            if entry is None or entry[1] < now:
                return None
            if entry[2] is not None:  # the first answer: how long the fabric took
                self.rtts.append(now - entry[2])
                if not last:
                    self.pending[tid] = (entry[0], entry[1], None)
            return self.clients.get(entry[0])
        return next((c for c in self.clients.values() if c.issm), None)

    def _deliver(self, client: Client, req: sw.Request) -> None:
        self._send_to(client, req.pack())

    def _send_to(self, client: Client, datagram: bytes) -> None:
        client.received += 1
        self.stats["to_clients"] += 1
        self.send(client.index, datagram)

    def _expire(self, now: float) -> None:
        """Forget requests nobody answered (lost in the fabric), at most once a second."""
        if len(self.pending) > PENDING_EXPIRY and now >= self._next_expiry:
            self._next_expiry = now + 1.0
            self.pending = {t: v for t, v in self.pending.items() if v[1] >= now}

    def snapshot(self) -> dict:
        rtts = sorted(self.rtts)
        rtt = {"median_us": rtts[len(rtts) // 2] * 1e6, "p99_us": rtts[int(len(rtts) * 0.99)] * 1e6,
               "samples": len(rtts)} if rtts else {}
        return {"port": self.port, "clients": [vars(c) for c in self.clients.values()], "stats": dict(self.stats),
                "pending": len(self.pending), "rtt": rtt}
