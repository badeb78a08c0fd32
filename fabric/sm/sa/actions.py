"""What the SA hands back: the requester a response goes to, the actions
:meth:`~fabric.sm.sa.SubnetAdministrator.handle` returns, and the status a record handler raises
to have the request answered with an error."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Requester:
    """Where a request came from (and where its response goes): the source LID and QP of the
    request, the P_Key it was sent with, and the source GID when it had a GRH."""

    lid: int
    qpn: int = 1
    pkey: int = 0xFFFF
    gid: bytes | None = None


@dataclass(frozen=True)
class SaReply:
    dest: Requester
    mads: tuple  # 256-octet MADs: one, or the RMPP segments of a GetTableResp, in order


@dataclass(frozen=True)
class McastChanged:
    mlid: int


@dataclass(frozen=True)
class SaReport:
    dest: Requester
    mad: bytes  # a Report(Notice), method 0x06, 256 octets


class SaStatus(Exception):
    """Raised by a record handler: answer the request with this MAD status."""

    def __init__(self, status: int, reason: str = ""):
        super().__init__(reason or f"status 0x{status:04x}")
        self.status = status
