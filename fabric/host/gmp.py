"""QP1 traffic that RPC clients (perfquery, saquery, tests) send through a device host."""

from __future__ import annotations

from .. import wire as w


class GmpMux:
    """Sits in front of an HCA's QP1 consumer: answers to GMPs sent through the ``gmp`` RPC are
    kept for it, everything else goes where it went before (IPoIB's SA client, or the queue)."""

    def __init__(self, hca):
        self.qp = hca.qps[1]
        self.prev = self.qp.consumer
        self.waiting: dict = {}
        self.qp.consumer = self

    @classmethod
    def on(cls, hca):
        c = hca.qps[1].consumer
        return c if isinstance(c, cls) else cls(hca)

    def __call__(self, comp) -> None:
        try:
            hdr = w.MADHeader.unpack(comp.payload)
        except w.ParseError:
            hdr = None
        if hdr is not None and hdr.tid in self.waiting and hdr.method & w.RESPONSE_BIT:
            self.waiting[hdr.tid].append(comp.payload)
        elif self.prev is not None:
            self.prev(comp)
        else:
            self.qp.rq.append(comp)

    @staticmethod
    def complete(mads: list) -> bool:
        last = mads[-1]
        if last[1] != w.CLASS_SUBN_ADM:
            return True
        sa_mad = w.SAMad.unpack(last)
        return not sa_mad.rmpp_flags & w.RMPP_FLAG_ACTIVE or bool(sa_mad.rmpp_flags & w.RMPP_FLAG_LAST)


def completion_dict(c) -> dict:
    """A receive completion as the ``poll`` RPC answers it."""
    return {"port": c.port, "slid": c.slid, "src_qp": c.src_qp, "pkey": c.pkey, "pkey_index": c.pkey_index,
            "sl": c.sl, "payload": c.payload, "qkey": c.qkey,
            "sgid": c.grh.sgid if c.grh else None, "dgid": c.grh.dgid if c.grh else None}
