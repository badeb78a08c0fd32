"""Naming a node the ways people do: its id in the topology (``node0001``,
``H-0000000000100078`` in an ibnetdiscover dump), the first word of its NodeDescription (as
ibsim's ``SIM_HOST`` takes it), its node or port GUID (``0x0002c90000000102``), or its LID
(``0x12`` or ``18``, from the running fabric).

:func:`resolve` gives the node's id, or raises :class:`UnknownNode` with one line that says which
names exist.
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"(0[xX][0-9a-fA-F]+|[0-9]+)\Z")
LID_MAX = 0xBFFF  # unicast LIDs; anything larger that is a number can only be a GUID


class UnknownNode(LookupError):
    """No node of the fabric answers to that name (the message lists some that do)."""


def _number(text: str) -> int | None:
    if not _NUMBER.match(text):
        return None
    return int(text, 16) if text[:2].lower() == "0x" else int(text, 10)  # "010" is ten, as the diags read it


def resolve(topology, text: str, lids=None, fabric: str | None = None) -> str:
    """The id of the node ``text`` names in ``topology``. ``lids`` is a callable giving
    ``{LID: node id}`` of the running fabric (asked only when ``text`` is a number no GUID
    matches); without it LIDs are not accepted. ``fabric`` names the fabric in the error."""
    nodes = topology.nodes
    if text in nodes:
        return text
    value = _number(text)
    if value is not None:
        for n in nodes.values():
            if value == n.node_guid or value in n.port_guids.values():
                return n.name
        if value <= LID_MAX and lids is not None:
            by_lid = lids()
            if value in by_lid:
                return by_lid[value]
    else:
        first = [n.name for n in nodes.values() if n.description.split()[:1] == [text]]
        if len(first) == 1:
            return first[0]
        if len(first) > 1:
            raise UnknownNode(f"{text!r} is the NodeDescription of {len(first)} nodes ({', '.join(first[:4])}"
                              f"{', ...' if len(first) > 4 else ''}): name one by its id or GUID")
    names = sorted(nodes)
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    where = f"fabric {fabric!r}" if fabric else "the fabric"
    raise UnknownNode(f"no node {text!r} in {where} (nodes: {shown}; a node is named by its id, the first "
                      f"word of its NodeDescription, a GUID or a LID)")
