"""Directed-route SMP hop processing (IBA vol. 1 section 14.2.2, rules C14-9 and C14-13).

Sans-IO: each function takes an SMP and the facts about the node and returns what to do with it.
The outgoing direction (D=0) walks ``initial_path`` and records the arrival port of every hop in
``return_path``; the returning direction (D=1) walks ``return_path`` back. ``hop_ptr`` counts hops.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..wire import LID_PERMISSIVE, SMPDirected

LOCAL = "local"  # hand to this node's SMA (request) or SM (response)
FORWARD = "forward"
DROP = "drop"
MAX_HOPS = 63  # IBA 14.2.2: a directed route has at most 63 hops (InitialPath/ReturnPath are 64 octets)


@dataclass(frozen=True)
class DrDecision:
    action: str
    smp: SMPDirected | None = None  # with hop_ptr / return_path updated
    port: int = 0  # for FORWARD
    reason: str = ""


def _set_path(path: bytes, index: int, port: int) -> bytes:
    b = bytearray(path)
    b[index] = port
    return bytes(b)


def dr_originate(smp: SMPDirected) -> DrDecision:
    """The node that originates a DR SMP (the SM's node for D=0, the responder's SMA for D=1)."""
    hp, hc = smp.hop_ptr, smp.hop_cnt
    if hc > MAX_HOPS:
        return DrDecision(DROP, reason=f"hop count {hc} beyond {MAX_HOPS}")
    if not smp.d:
        if hc == 0:
            return DrDecision(LOCAL, smp.replace(hop_ptr=1))  # to our own SMA
        if hp != 0:
            return DrDecision(DROP, reason=f"outgoing DR SMP must start with hop pointer 0, not {hp}")
        return DrDecision(FORWARD, smp.replace(hop_ptr=1), smp.initial_path[1])
    # response leaving the responder
    if hc == 0 or hp == 1:
        return DrDecision(LOCAL, smp.replace(hop_ptr=0))  # the requester is on this node
    if hp != hc + 1:
        return DrDecision(DROP, reason=f"DR response with hop pointer {hp}, hop count {hc}")
    hp -= 1
    return DrDecision(FORWARD, smp.replace(hop_ptr=hp), smp.return_path[hp])


def dr_receive(smp: SMPDirected, in_port: int, *, is_switch: bool, num_ports: int) -> DrDecision:
    """A DR SMP arrived on ``in_port``: process it here, forward it, or drop it."""
    hp, hc = smp.hop_ptr, smp.hop_cnt
    if hc > MAX_HOPS:
        return DrDecision(DROP, reason=f"hop count {hc} beyond {MAX_HOPS}")
    if not smp.d:
        if hp == 0:
            return DrDecision(DROP, reason="outgoing DR SMP arrived with hop pointer 0")
        if hp < hc:
            if not is_switch:
                return DrDecision(DROP, reason="a channel adapter cannot forward a DR SMP")
            smp = smp.replace(return_path=_set_path(smp.return_path, hp, in_port), hop_ptr=hp + 1)
            out = smp.initial_path[hp + 1]
            if not 1 <= out <= num_ports:
                return DrDecision(DROP, reason=f"initial path names port {out}, node has {num_ports}")
            return DrDecision(FORWARD, smp, out)
        if hp == hc:
            smp = smp.replace(return_path=_set_path(smp.return_path, hp, in_port), hop_ptr=hp + 1)
            if smp.dr_dlid != LID_PERMISSIVE:
                return DrDecision(DROP, reason="DR SMPs with a LID-routed final part are not supported")
            return DrDecision(LOCAL, smp)
        if hp == hc + 1:
            return DrDecision(LOCAL, smp)
        return DrDecision(DROP, reason=f"hop pointer {hp} beyond hop count {hc}")
    # returning
    if hp == hc + 1 and hc:
        return DrDecision(DROP, reason="DR response arrived before its first return hop")
    if 2 <= hp <= hc:
        if not is_switch:
            return DrDecision(DROP, reason="a channel adapter cannot forward a DR SMP")
        hp -= 1
        out = smp.return_path[hp]
        if not 1 <= out <= num_ports:
            return DrDecision(DROP, reason=f"return path names port {out}, node has {num_ports}")
        return DrDecision(FORWARD, smp.replace(hop_ptr=hp), out)
    if hp == 1:
        if smp.dr_slid != LID_PERMISSIVE:
            return DrDecision(DROP, reason="DR SMPs with a LID-routed first part are not supported")
        return DrDecision(LOCAL, smp.replace(hop_ptr=0))
    if hp == 0:
        return DrDecision(LOCAL, smp)
    return DrDecision(DROP, reason=f"hop pointer {hp} beyond hop count {hc}")
