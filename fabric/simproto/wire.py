"""The datagrams of ibsim's client protocol (ibsim's ``include/ibsim.h``), as ``libumad2sim.so`` sends
and expects them on x86-64: a control datagram (``struct sim_ctl``) and a data datagram carrying one
MAD (``struct sim_request``). Only layouts here; :mod:`fabric.simproto.endpoint` gives them meaning.

``struct sim_ctl``, 80 octets, little-endian::

    magic u32 (0xdeadbeef)  clientid u32  type u32  len u32  data[64]

``struct sim_request``, 288 octets. The LIDs are ``htons`` values stored in 32-bit fields, the QPNs
and status ``htonl`` values, the length a big-endian u64 after 4 octets of alignment padding::

    dlid u32  slid u32  dqp u32  sqp u32  status u32  (pad 4)  length u64  mad[256]
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = 0xDEADBEEF
CTL_DATA = 64
MAD_SIZE = 256
MAX_CLIENTS = 10  # IBSIM_MAX_CLIENTS: the shim names its data socket "<base>:out<client index>"
STATUS_TIMEOUT = 110  # ETIMEDOUT: the request was dropped or timed out

# SIM_CTL_TYPES
CTL_ERROR, CTL_CONNECT, CTL_DISCONNECT, CTL_GET_PORT, CTL_GET_VENDOR, CTL_GET_GID, CTL_GET_GUID, \
    CTL_GET_NODEINFO, CTL_GET_PORTINFO, CTL_SET_ISSM, CTL_GET_PKEYS = range(11)
CTL_NAMES = {CTL_ERROR: "ERROR", CTL_CONNECT: "CONNECT", CTL_DISCONNECT: "DISCONNECT", CTL_GET_PORT: "GET_PORT",
             CTL_GET_VENDOR: "GET_VENDOR", CTL_GET_GID: "GET_GID", CTL_GET_GUID: "GET_GUID",
             CTL_GET_NODEINFO: "GET_NODEINFO", CTL_GET_PORTINFO: "GET_PORTINFO", CTL_SET_ISSM: "SET_ISSM",
             CTL_GET_PKEYS: "GET_PKEYS"}

CTL = struct.Struct("<IIII64s")
CLIENT_INFO = struct.Struct("<III32s")  # id (pid in, client index out), qp, issm, nodeid
REQUEST = struct.Struct("!H2xH2xIII4xQ256s")  # dlid, slid, dqp, sqp, status, length, mad
PORT = struct.Struct("<HB")  # struct sim_port: lid, state
VENDOR = struct.Struct("<III4xQ")  # struct sim_vendor: vendor_id, vendor_part_id, hw_ver, fw_ver

assert CTL.size == 80 and REQUEST.size == 288


class SimProtoError(ValueError):
    """A datagram that is not what the protocol says; the message says what is wrong."""


@dataclass
class Ctl:
    clientid: int
    type: int
    length: int
    data: bytes

    @classmethod
    def unpack(cls, raw: bytes) -> "Ctl":
        if len(raw) != CTL.size:
            raise SimProtoError(f"control datagram of {len(raw)} octets, not {CTL.size}")
        magic, clientid, typ, length, data = CTL.unpack(raw)
        if magic != MAGIC:
            raise SimProtoError(f"control datagram with magic 0x{magic:08x}, not 0x{MAGIC:08x}")
        return cls(clientid, typ, length, data)

    def pack(self) -> bytes:
        return CTL.pack(MAGIC, self.clientid, self.type, self.length, bytes(self.data).ljust(CTL_DATA, b"\0"))


@dataclass
class Request:
    dlid: int
    slid: int
    dqp: int
    sqp: int
    status: int
    length: int
    mad: bytes

    @classmethod
    def unpack(cls, raw: bytes) -> "Request":
        if len(raw) != REQUEST.size:
            raise SimProtoError(f"data datagram of {len(raw)} octets, not {REQUEST.size}")
        return cls(*REQUEST.unpack(raw))

    def pack(self) -> bytes:
        return REQUEST.pack(self.dlid & 0xFFFF, self.slid & 0xFFFF, self.dqp, self.sqp, self.status, self.length,
                            bytes(self.mad).ljust(MAD_SIZE, b"\0"))


def client_info(data: bytes) -> tuple[int, int, int, str]:
    """(pid, qp, issm, nodeid) of a CONNECT's data."""
    pid, qp, issm, nodeid = CLIENT_INFO.unpack_from(data)
    return pid, qp, issm, nodeid.split(b"\0", 1)[0].decode("ascii", "replace")


def pack_client_info(index: int, qp: int, issm: int, nodeid: str) -> bytes:
    return CLIENT_INFO.pack(index, qp, issm, nodeid.encode("ascii", "replace")[:31])
