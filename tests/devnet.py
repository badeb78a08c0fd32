"""Helpers for the device behaviour tests: a LoopNet fabric brought up by HandSM, with names for
its nodes, raw packet surgery and counter snapshots."""

from __future__ import annotations

from fabric import wire as w
from fabric.devices import send_smp
from fabric.loopnet import LoopNet
from fabric.topology import generate, load_topology
from fabric.wire.crc import icrc_bytes, vcrc_bytes
from handsm import HandSM, loopnet_exchange, pop_mad

from paths import shared_topology

NET = shared_topology("ibsim/net.2sw2path4hca")


class Fab:
    """A LoopNet of ``topo`` (a file or a generator spec), trained and, unless told otherwise,
    brought up by HandSM (discovery, LIDs, min-hop LFTs, Armed -> Active)."""

    def __init__(self, topo: str = NET, *, bring_up: bool = True):
        self.topo = load_topology(topo) if "/" in topo else generate(topo)
        self.events: list = []
        self.net = LoopNet(self.topo)
        self.net.on_event = lambda name, kind, port, detail: self.events.append((name, kind, port, detail))
        self.net.train_all()
        self.sm_name = self.topo.sm_node
        self.sm = HandSM(loopnet_exchange(self.net, self.topo.sm_node, self.topo.sm_port))
        if bring_up:
            self.sm.bring_up()

    def __getitem__(self, name):
        return self.net[name]

    # -- names -----------------------------------------------------------------------------------

    def guid(self, name: str) -> int:
        return self.net[name].node_guid

    def path(self, name: str) -> tuple:
        return self.sm.nodes[self.guid(name)]["path"]

    def lid(self, name: str) -> int:
        return self.sm.lid_of(self.guid(name))

    def hca_names(self) -> list:
        return sorted(n for n, d in self.net.devices.items() if d.kind == "hca")

    # -- traffic ---------------------------------------------------------------------------------

    def send(self, src: str, qpn: int, dst: str | int, dest_qp: int, payload: bytes, **kw) -> list:
        """post_send on ``src`` and put the result on the wire; returns the packets sent."""
        dlid = dst if isinstance(dst, int) else self.lid(dst)
        dev = self.net[src]
        dev.post_send(qpn, dlid=dlid, dest_qp=dest_qp, payload=payload, now=self.net.now, **kw)
        txs = list(dev.outbox)
        self.net.inject(src)
        return txs

    def inject_raw(self, src: str, port: int, raw: bytes) -> None:
        """Put arbitrary octets on the cable of ``src``:``port`` (the peer receives them)."""
        self.net.inject(src, [(port, raw)])

    def smp(self, smp, *, src: str | None = None, dlid: int | None = None):
        """Send an SMP from the SM's node; the response (or None) popped from its QP0 by TID."""
        src = src or self.sm_name
        hca = self.net[src]
        send_smp(hca, 1, smp, self.net.now, dlid=dlid)
        self.net.inject(src)
        return pop_mad(hca, smp.tid)

    # -- counters --------------------------------------------------------------------------------

    def counters(self) -> dict:
        """{(node, port): (PortCounters dict, extended dict)} of every port."""
        return {(n, p.num): (dict(p.counters.pc), dict(p.counters.ext))
                for n, d in self.net.devices.items() for p in d.ports.values()}

    def drops(self) -> dict:
        return {n: dict(d.drops) for n, d in self.net.devices.items()}


def counter_delta(before: dict, after: dict) -> dict:
    """{(node, port, counter): delta} for every PortCounters field that changed."""
    out = {}
    for key, (pc, _ext) in after.items():
        for k, v in pc.items():
            if v != before[key][0][k]:
                out[key + (k,)] = v - before[key][0][k]
    return out


def ext_delta(before: dict, after: dict) -> dict:
    out = {}
    for key, (_pc, ext) in after.items():
        for k, v in ext.items():
            if v != before[key][1][k]:
                out[key + (k,)] = v - before[key][1][k]
    return out


def drop_delta(before: dict, after: dict) -> dict:
    out = {}
    for n, d in after.items():
        for k, v in d.items():
            if v != before[n].get(k, 0):
                out[(n, k)] = v - before[n].get(k, 0)
    return out


def words(raw: bytes) -> int:
    """PortXmitData/PortRcvData units of one packet: LRH through ICRC in 4-octet words."""
    return (len(raw) - 2) // 4


def with_crcs(body: bytes) -> bytes:
    """Octets from LRH up to (not including) the ICRC, completed with a correct ICRC and VCRC.
    (Too short to hold the BTH its LNH implies, it has no ICRC to speak of: four zero octets.)"""
    body = bytes(body)
    bth = 48 if body[1] & 3 == w.LNH_IBA_GLOBAL else 8
    pkt = body + (icrc_bytes(body) if len(body) >= bth + 12 else bytes(4))
    return pkt + vcrc_bytes(pkt)


def fix_vcrc(pkt: bytes) -> bytes:
    """Recompute only the VCRC (keeps a broken ICRC broken)."""
    return bytes(pkt[:-2]) + vcrc_bytes(pkt[:-2])


def patch(pkt: bytes, offset: int, value: bytes, *, crcs: str = "both") -> bytes:
    """Overwrite octets at ``offset``; then recompute both CRCs, only the VCRC, or none."""
    b = bytearray(pkt)
    b[offset:offset + len(value)] = value
    b = bytes(b)
    if crcs == "both":
        return with_crcs(b[:-6])
    if crcs == "vcrc":
        return fix_vcrc(b)
    return b
