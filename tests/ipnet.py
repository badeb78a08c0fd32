"""A LoopNet with the SM and an IPoIB node on every HCA: IPoIB end to end, sans-IO and fast."""

from __future__ import annotations

import ipoib
from ipoib.node import IPoIBNode
from smnet import SmNet


class IpNet(SmNet):
    def __init__(self, topology, *, backend=None, addresses=None, **smconfig):
        super().__init__(topology, **smconfig)
        self.clock = 0.0
        order = [n.name for n in self.topology.hcas()]
        self.nodes = {}
        for name in order:
            hca = self.devices[name]
            self.nodes[name] = IPoIBNode(hca, order.index(name), clock=lambda: self.now,
                                         backend=backend or ipoib.core,
                                         addresses=(addresses or {}).get(name))

    def up(self, settle: float = 2.0) -> "IpNet":
        self.start_sm()
        self.settle(settle, step=0.1)
        return self

    def ip(self, name: str, ifname: str = "ib0") -> str:
        return self.nodes[name].ifs[ifname].snapshot()["addr"].split("/")[0]

    def ping(self, src: str, dst: str, *, count: int = 1, size: int = 56, ifname=None, wait: float = 3.0):
        sess = self.nodes[src].ip.ping(self.ip(dst) if dst in self.nodes else dst, count=count, interval=0.2,
                                       timeout=1.0, size=size, ifname=ifname)
        self._service(src, self.devices[src])
        self.run()
        t = 0.0
        while not sess.done and t < wait + count * 0.2:
            self.advance(0.05)
            t += 0.05
        return sess
