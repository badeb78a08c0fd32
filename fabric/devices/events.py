"""Carrying out what a device's recorded events ask of its links and its software.

One function for the device hosts and for LoopNet, so that both drive devices identically.
"""

from __future__ import annotations

from ..link import KIND_DOWN, KIND_HELLO


def apply_events(dev, now: float, *, emit, control, observe=None) -> None:
    """Act on ``dev.events`` until none are left (acting on one may record more):

    - a PortState=Down Set bounces the link: down here, DOWN to the peer, then retraining (HELLO);
    - PhysState=Disabled takes the link down; Polling starts training again;
    - every event also reaches the node's agents (``on_event``: the SM, IPoIB) and ``observe``.

    ``emit(txs)`` puts packets on the wire, ``control(port, kind)`` sends a link control frame.
    """
    while dev.events:
        events, dev.events = dev.events, []
        for kind, port, detail in events:
            if kind == "link_bounce":
                emit(dev.set_link(port, False, now))
                control(port, KIND_DOWN)
                control(port, KIND_HELLO)
            elif kind == "link_disable":
                emit(dev.set_link(port, False, now))
                control(port, KIND_DOWN)
            elif kind == "link_enable":
                control(port, KIND_HELLO)
            for agent in list(dev.agents):
                hook = getattr(agent, "on_event", None)
                if hook is not None:
                    hook(kind, port, detail)
            if observe is not None:
                observe(kind, port, detail)
