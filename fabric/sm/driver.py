"""Runs the SM and SA on an HCA port inside a device host: SMPs on QP0, SA MADs on QP1, and the
guid2lid file. The cores (``SubnetManager``, ``SubnetAdministrator``) are sans-IO; this is their IO:
it turns their actions into packets the HCA sends, and keeps their LID cache on disk."""

from __future__ import annotations

import os
import time
from collections import deque

from .. import wire as w
from ..devices.hca import send_smp_octets
from .core import Guid2LidChanged, SMConfig, SubnetManager, SubnetUp
from .engine import SendSmp
from .sa.actions import McastChanged, Requester, SaReply, SaReport

SA_HOLD = 1024  # SA requests held until the first sweep gives the SA a subnet; beyond, the oldest go
MFT_COALESCE_S = 0.02  # joins within it share one MFT update (after a sweep, every port joins)
MFT_WINDOW_PER_NODE_S = 30e-6
MFT_DUTY = 0.2  # at most this share of the SM's time goes to computing multicast trees
SELF_TIME_S = 0.005  # computing longer than this holds the SMPs' timeouts (see on_input)
# held SA answers sent per input of the SM (then again at its next tick, due at once): after a
# sweep thousands of joins are answered together, and all at once they overflowed the in-process
# link toward the SM's switch (fabric.host.loop.SNDHWM); the clients then retried a second later
REPLIES_PER_PASS = 64


class SmAgent:
    """Glue between an HCA (sans-IO device) and the SubnetManager (sans-IO protocol core)."""

    def __init__(self, hca, port: int, config: SMConfig | None = None):
        self.hca = hca
        self.port = port
        config = config or SMConfig()
        self.sm = SubnetManager(config, tid_base=(hca.node_guid & 0xFFFF) ^ 0x5300,
                                guid2lid=read_guid2lid(config.guid2lid_path), sm_guid=hca.ports[port].guid)
        self.last_up: SubnetUp | None = None
        self.started_at = None
        self._busy = False
        self.mft_due = None  # when coalesced multicast changes get programmed
        self.mft_last = float("-inf")  # when they last were
        self.mft_cost = 0.0  # how long that took, in seconds of this process's time
        self.mft_held = False  # changes that came during a sweep: programmed once it is over
        self._pending: deque = deque()
        self.clock = None  # the host's clock (time.monotonic), to tell the SM's own computing time
        self._timing = False
        self._held: deque = deque(maxlen=SA_HOLD)  # SA requests that came before the SA had a subnet
        # answers to joins and leaves that change a group's tree, sent once the switches have it
        # (see _sa_actions); the next MFT programming takes them along (_tick); once it is
        # answered they wait in ``_replies``, sent REPLIES_PER_PASS at a time
        self._mft_waiters: list = []
        self._replies: deque = deque()
        hca.sm_consumer = self.on_smp
        hca.gsi_consumer = self.on_gmp
        hca.sm_info_source = self.sm.sm_info  # SMInfo is the SM's to answer (IBA 14.4.1)
        hca.ports[port].capability_mask |= w.CAP_IS_SM  # PortInfo.IsSM: other SMs find us by it
        hca.agents.append(self)

    def detach(self) -> None:
        self.sm.stop()
        if self.hca.sm_consumer == self.on_smp:
            self.hca.sm_consumer = None
        if self.hca.gsi_consumer == self.on_gmp:
            self.hca.gsi_consumer = None
        if getattr(self.hca, "sm_info_source", None) == self.sm.sm_info:
            self.hca.sm_info_source = None
            self.hca.ports[self.port].capability_mask &= ~w.CAP_IS_SM
        if self in self.hca.agents:
            self.hca.agents.remove(self)

    # -- inputs --------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.started_at = now
        self.on_input(lambda: self._run(self.sm.start(now), now))

    def on_smp(self, pkt, mad, in_port: int, now: float) -> None:
        self.on_input(lambda: self._run(self.sm.on_smp(mad, now), now))

    def on_gmp(self, pkt, in_port: int, now: float) -> None:
        self.on_input(self._on_gmp, pkt, in_port, now)

    def _on_gmp(self, pkt, in_port: int, now: float) -> None:
        raw = bytes(pkt.payload)
        try:
            mad = w.parse_mad(raw)
        except w.ParseError as exc:
            if exc.kind == "mad_version" and len(raw) >= w.MAD_SIZE and raw[1] == w.CLASS_SUBN_ADM:
                # a request of the SA's class with another base or class version: the SA answers
                # it with status 0x0004 (IBA 13.4.7, docs/sa.md); responses are never answered
                mad = None
            else:
                self.hca.drops["gmp_malformed"] += 1
                return
        if mad is None:
            pass
        elif mad.mgmt_class != w.CLASS_SUBN_ADM or mad.method & w.RESPONSE_BIT:
            # not for the SA: answers to this node's own GMPs (a PMA reply to perfquery, the SA
            # answering an SA client on this node through loopback), and other classes' MADs go
            # to QP1's receive side as on any HCA
            self.hca._deliver(self.hca.qps[1], pkt, in_port, 0)
            return
        req = Requester(lid=pkt.lrh.slid, qpn=pkt.deth.src_qp, pkey=pkt.bth.pkey,
                        gid=pkt.grh.sgid if pkt.grh is not None else None)
        if not self.sm.sa_ready:
            # The SA has no subnet to answer from until the first sweep has routed it (ports go
            # Active just after). OpenSM says nothing then, and the client retries after its
            # timeout; we hold the request and answer it as soon as the subnet is there (no
            # wrong answer either way, and a port that came up early is not kept waiting).
            stats = self.sm.sa.stats
            if len(self._held) == SA_HOLD:
                stats["dropped_before_subnet_up"] = stats.get("dropped_before_subnet_up", 0) + 1
            stats["held_before_subnet_up"] = stats.get("held_before_subnet_up", 0) + 1
            self._held.append((raw if mad is None else mad, req))
            return
        self._run(self._sa_actions(self.sm.sa.handle(raw if mad is None else mad, req, now)), now)

    def _sa_actions(self, actions: list) -> list:
        """An SA answer whose request changed a multicast tree (a join that adds a branch, a leave
        that prunes one) waits until the MFT blocks of that change are programmed: a port that
        hears its join answered sends to the group at once (IPoIB's first ARP), and a switch that
        had no branch for it yet would drop that. The kernel then retries only after a second."""
        if not any(isinstance(a, McastChanged) for a in actions):
            return actions
        self._mft_waiters += [a for a in actions if isinstance(a, SaReply)]
        return [a for a in actions if not isinstance(a, SaReply)]

    def _release_mft_waiters(self, batch: list) -> None:
        """The MFT programming that carried ``batch``'s changes is answered (the engine is idle):
        their answers go, in the order they were held, the first REPLIES_PER_PASS now and the rest
        from the next ticks (``next_deadline`` is due at once while any wait)."""
        self._replies.extend(batch)
        self._pending.extend(self._take_replies())

    def _take_replies(self) -> list:
        replies = self._replies
        return [replies.popleft() for _ in range(min(REPLIES_PER_PASS, len(replies)))]

    def tick(self, now: float) -> None:
        self.on_input(self._tick, now)

    def _tick(self, now: float) -> None:
        actions = self.sm.tick(now) + self._take_replies()
        if self.mft_due is not None and now >= self.mft_due:
            self.mft_due = None
            self.mft_last = now
            t0 = time.process_time()
            batch, self._mft_waiters = self._mft_waiters, []
            self.sm.program_mfts()
            self.mft_cost = time.process_time() - t0
            if batch:  # after the MFT Sets just queued (and whatever else is in flight) are answered
                self.sm.engine.when_idle(lambda: self._release_mft_waiters(batch))
            actions = actions + self.sm.engine.pump(now)
        self._run(actions, now)

    def request_sweep(self, now: float) -> None:
        """Start a heavy sweep now (or after the one in progress)."""
        self.sm.now = now
        self.on_input(lambda: self._run(self.sm.request_sweep(), now))

    def next_deadline(self):
        if self._replies:
            return 0.0  # due now: the next held answers go on the host's next pass
        d = self.sm.next_deadline()
        if self.mft_due is not None:
            d = self.mft_due if d is None else min(d, self.mft_due)
        return d

    # -- outputs -------------------------------------------------------------------------------

    def _run(self, actions: list, now: float) -> None:
        """Carry out actions. SMPs to this very node are answered synchronously and their
        answers feed back into the SM, so actions are processed from a queue, not recursively."""
        self._pending.extend(actions)
        if self._busy:
            return
        self._busy = True
        try:
            self._run_pending(now)
        finally:
            self._busy = False

    def on_input(self, fn, *args) -> None:
        """Call the SM with an input; time it spent computing (routing thousands of nodes takes
        a second) does not count against the SMPs in flight, whose answers wait unread meanwhile
        (with a ``clock``: the host's; LoopNet's simulated time has none)."""
        if self.clock is None or self._timing:
            return fn(*args)  # a nested input (an SMP to this very node) is timed by the outer one
        self._timing = True
        t0 = self.clock()
        try:
            return fn(*args)
        finally:
            self._timing = False
            spent = self.clock() - t0
            if spent > SELF_TIME_S:
                self.sm.engine.pause(spent)

    def _run_pending(self, now: float) -> None:
        while True:
            while self._pending:
                self._do(self._pending.popleft(), now)
            if not (self._held and self.sm.sa_ready):
                break
            held, self._held = self._held, deque(maxlen=SA_HOLD)
            for mad, req in held:  # the subnet is up: what waited for it is answered now
                self._pending.extend(self._sa_actions(self.sm.sa.handle(mad, req, now)))
        if self.mft_held and self.sm.state != "sweeping":
            self.mft_held = False  # the sweep is over (up, or given up): program what it held
            self._mft_changed(now)

    def _do(self, a, now: float) -> None:
        if isinstance(a, SendSmp):  # a plain directed-route request (most of a sweep) from its octets
            send_smp_octets(self.hca, self.port, a.raw, now, a.dlid, lambda: a.smp)
        elif isinstance(a, SubnetUp):
            self.last_up = a
        elif isinstance(a, SaReply):
            for mad in a.mads:
                self._gmp(a.dest, mad, now)
        elif isinstance(a, SaReport):
            self._gmp(a.dest, a.mad, now)
        elif isinstance(a, McastChanged):
            if self.sm.state == "sweeping":
                # ports join as the sweep makes them Active: their trees wait for the end of the
                # sweep, as OpenSM programs MFTs after it, and SUBNET UP is not held up by them
                self.mft_held = True
            else:
                self._mft_changed(now)
        elif isinstance(a, Guid2LidChanged):
            write_guid2lid(self.sm.config.guid2lid_path, a.guid2lid, a.lmc)

    def _mft_changed(self, now: float) -> None:
        """Coalesce: a change in a quiet subnet is programmed at once (a new sender's first frames
        must find their way); changes that follow soon after the last programming wait for the end
        of a window, so a burst of joins (every port joining the broadcast group after a sweep)
        costs one tree per window, not one per join."""
        if self.mft_due is None:
            self.mft_due = max(now, self.mft_last + self._mft_window())

    def _mft_window(self) -> float:
        """How long changes wait behind the last programming: a tree costs time in proportion to
        the subnet, so the window grows with it (0.3 ms for 10 nodes, MFT_COALESCE_S from about
        700), and a small subnet programs as good as at once; and never so short that computing
        trees takes more than MFT_DUTY of the SM's time (on thousands of nodes, one pass of trees
        takes longer than MFT_COALESCE_S)."""
        subnet = self.sm.subnet
        n = len(subnet.nodes) if subnet is not None else 0
        return max(min(MFT_COALESCE_S, n * MFT_WINDOW_PER_NODE_S), self.mft_cost / MFT_DUTY)

    def _gmp(self, dest, mad: bytes, now: float) -> None:
        port = self.hca.ports[self.port]
        idx = port.pkey_index(dest.pkey) if dest.pkey else 0
        self.hca.post_send(1, dlid=dest.lid, dest_qp=dest.qpn, payload=mad, qkey=w.QKEY_GSI,
                           pkey_index=idx or 0, now=now, port_num=self.port)

    def status(self) -> dict:
        st = self.sm.status()
        st["subnet_up"] = None if self.last_up is None else {
            "sweep": self.last_up.sweep, "seconds": self.last_up.seconds, "nodes": self.last_up.nodes,
            "ports_active": self.last_up.ports_active, "lids": self.last_up.lids,
            "switches_routed": self.last_up.switches_routed, "stages": dict(self.last_up.stages)}
        return st


# -- the guid2lid file (OpenSM's format: "GUID base-LID top-LID" per line) -------------------------

def read_guid2lid(path: str | None) -> dict:
    """``{port GUID: base LID}`` from the file; empty when there is none. Lines that do not parse
    are skipped, as OpenSM skips them."""
    out = {}
    if not path or not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 2:
                try:
                    out[int(parts[0], 16)] = int(parts[1], 16)
                except ValueError:
                    continue
    return out


def write_guid2lid(path: str | None, guid2lid: dict, lmc: int) -> None:
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for guid, lid in sorted(guid2lid.items(), key=lambda kv: kv[1]):
            f.write(f"0x{guid:016x} 0x{lid:04x} 0x{lid + (1 << lmc) - 1:04x}\n")
    os.replace(tmp, path)  # atomic: an SM stopped mid-write leaves the old file whole
