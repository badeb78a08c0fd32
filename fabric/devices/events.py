"""Carrying out what a device's recorded events ask of its links and its software.

One function for the device hosts and for LoopNet, so that both drive devices identically.
"""

from __future__ import annotations

from .training import on_port_event


def apply_events(dev, now: float, *, control, observe=None) -> None:
    """Act on ``dev.events`` until none are left (acting on one may record more):

    - a management Set's request of the link (bounce, disable, enable) goes to link training
      (:func:`fabric.devices.training.on_port_event`), whose control frames ``control(port, kind)``
      sends to the peer;
    - every event also reaches the node's agents (``on_event``: the SM, IPoIB) and ``observe``.
    """
    while dev.events:
        events, dev.events = dev.events, []
        for kind, port, detail in events:
            for p, k in on_port_event(dev, kind, port, now):
                control(p, k)
            for agent in list(dev.agents):
                hook = getattr(agent, "on_event", None)
                if hook is not None:
                    hook(kind, port, detail)
            if observe is not None:
                observe(kind, port, detail)
