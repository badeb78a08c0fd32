"""A LoopNet with the real subnet manager running on an HCA: the sans-IO SM driven end to end."""

from __future__ import annotations

from fabric import wire as w
from fabric.loopnet import LoopNet
from fabric.sm.core import SMConfig
from fabric.sm.driver import SmAgent
from fabric.topology import load_topology


class SmNet(LoopNet):
    def __init__(self, topology, **config):
        super().__init__(load_topology(topology))
        self.events_seen: list = []
        self.train_all()
        self.agent = None
        self.config = config

    def on_event(self, name, kind, port, detail):
        self.events_seen.append((name, kind, port))

    def start_sm(self, node: str | None = None, port: int | None = None, *, run: bool = True,
                 **config) -> SmAgent:
        """Start the SM (stopping the one running). ``run=False`` only puts its first SMPs in the
        queue, so a test can interleave its own traffic with the sweep (``run(max_steps=N)``)."""
        if self.agent is not None:
            self.agent.detach()
        node = node or self.topology.sm_node
        port = port or self.topology.sm_port
        cfg = SMConfig(**{**self.config, **config})
        self.agent = SmAgent(self.devices[node], port, cfg)
        self.agent.start(self.now)
        self.send_out(node)
        if run:
            self.settle()
        return self.agent

    def sa_responses(self, client: str, *, wait: float = 0.1) -> list:
        """The complete SA responses on ``client``'s QP1, letting simulated time pass (up to
        ``wait``) until there is one: a join or leave that changes a tree is answered once the MFTs
        are written, which may wait for the SM's coalescing window (fabric/sm/driver.py)."""
        from fabric.mad import saclient as sc

        qp, col, done, waited = self.devices[client].qps[1], sc.SaCollector(), [], 0.0
        while True:
            done += [r for c in qp.poll(10000) for r in [col.feed(c.payload)] if r is not None]
            if done or waited >= wait:
                return done
            self.advance(0.001)
            waited += 0.001

    def stop_sm(self) -> None:
        if self.agent is not None:
            self.agent.detach()

    def request_sweep(self) -> None:
        """Ask the running SM for a heavy sweep now and run it to the end."""
        self.agent.request_sweep(self.now)
        self.inject(self.agent.hca.name)

    def settle(self, seconds: float = 0.0, step: float = 0.3) -> None:
        """Run until quiet, advancing time so that retries and light sweeps happen."""
        self.run()
        t = 0.0
        while t < seconds:
            self.advance(step)
            t += step

    @property
    def sm(self):
        return self.agent.sm

    def lid(self, name: str, port: int = 1) -> int:
        d = self.devices[name]
        return d.ports[0].lid if d.kind == "switch" else d.ports[port].lid

    def send_ud(self, src: str, dst: str, payload: bytes, *, qkey: int = 0x1234, pkey_index: int = 0):
        """One datagram from src's test QP to dst's; returns dst's completions."""
        s, d = self.devices[src], self.devices[dst]
        sq = self._test_qp(s, qkey)
        dq = self._test_qp(d, qkey)
        s.post_send(sq.qpn, dlid=self.lid(dst), dest_qp=dq.qpn, payload=payload, pkey_index=pkey_index,
                    now=self.now)
        self.inject(src)
        return dq.poll()

    def _test_qp(self, hca, qkey):
        for qp in hca.qps.values():
            if qp.qpn >= 2 and qp.qkey == qkey and getattr(qp, "_test", False):
                return qp
        qp = hca.create_qp(qkey)
        qp._test = True
        return qp

    def sa_request(self, client: str, mad, port: int = 1):
        """Send an SA MAD from an HCA's QP1 to the SM's LID; returns the response MADs."""
        hca = self.devices[client]
        sm_lid = hca.ports[port].sm_lid
        hca.post_send(1, dlid=sm_lid, dest_qp=1, payload=mad.pack(), qkey=w.QKEY_GSI, now=self.now,
                      port_num=port)
        self.inject(client)
        out = []
        for c in hca.qps[1].poll(1000):
            out.append(w.parse_mad(c.payload))
        return out
