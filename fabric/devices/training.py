"""Link training and cable state (sans-IO): the one state machine that the device hosts and the
in-process LoopNet both drive.

The two ends of a cable talk with control frames (``fabric.wire.burst``: HELLO, HELLO_ACK, DOWN):

- a port that is administratively up sends HELLO when the fabric starts and when it is enabled;
- a port that is up administratively and hears HELLO comes up (PhysState LinkUp, PortState Init)
  and answers HELLO_ACK; hearing HELLO_ACK brings it up too. So both
  ends reach LinkUp only once each has heard the other, whichever started first;
- a port taken down (a pulled cable, PhysState Disabled, a PortState Down bounce) sends DOWN and
  the peer goes down as well.

Every function returns the control frames to send to the peer, as ``[(port, kind)]``; how they
travel (a ZeroMQ link, an in-memory queue) is the caller's business. Whatever a state change puts
on the wire (a switch's Trap 128) goes to the device's ``outbox`` as usual.
"""

from __future__ import annotations

from ..wire.burst import KIND_DOWN, KIND_HELLO, KIND_HELLO_ACK

Control = tuple  # (port number, control kind)


def start(dev) -> list[Control]:
    """HELLO on every cabled port that is administratively up."""
    return [(num, KIND_HELLO) for num, p in sorted(dev.ports.items()) if p.cabled and p.admin_up]


def on_control(dev, port: int, kind: int, now: float) -> list[Control]:
    """A control frame from the peer arrived on ``port``."""
    p = dev.ports[port]
    if kind == KIND_DOWN:
        dev.set_link(port, False, now)
        return []
    if not p.admin_up:
        return []  # a disabled port does not train
    if kind == KIND_HELLO and p.link_up:
        # the peer trains again while we are up (its end went down alone, or its host restarted):
        # so do we, down and back to Init, so that the SM hears of it (a switch's PortStateChange,
        # Trap 128) and activates the link again
        dev.set_link(port, False, now)
    dev.set_link(port, True, now)
    # a HELLO is always answered, so the peer comes up; an ACK answers nothing (no ping-pong)
    return [(port, KIND_HELLO_ACK)] if kind == KIND_HELLO else []


def set_admin(dev, port: int, up: bool, now: float) -> list[Control]:
    """Plug the cable back (train again) or pull it (down here and at the peer)."""
    dev.ports[port].admin_up = up
    if up:
        return [(port, KIND_HELLO)]
    dev.set_link(port, False, now)
    return [(port, KIND_DOWN)]


# the events of a management Set that act on the link; every other event is for the node's software
LINK_EVENTS = frozenset({"link_bounce", "link_disable", "link_enable"})


def on_port_event(dev, kind: str, port: int, now: float) -> list[Control]:
    """What a management Set asks of the link (the SMA records it as an event):
    PortState=Down bounces it (down, then training again), PhysState=Disabled takes it down,
    PhysState=Polling starts training again."""
    if kind == "link_bounce":
        dev.set_link(port, False, now)
        return [(port, KIND_DOWN), (port, KIND_HELLO)]
    if kind == "link_disable":
        dev.set_link(port, False, now)
        return [(port, KIND_DOWN)]
    if kind == "link_enable":
        return [(port, KIND_HELLO)]
    return []
