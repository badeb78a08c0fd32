"""What ibsim does with a net file, which the parser, the writer and the generators must do alike.

ibsim's parser (``ibsim/sim_net.c``) is the reference for two things a net file may leave out:
the GUIDs of its nodes, and the rates of its links. Both are kept here so that the same net file
gives the same fabric in ibsim, in :mod:`~fabric.topology.net_parser`, from
:mod:`~fabric.topology.net_writer`'s output, and from the :mod:`~fabric.topology.generators`.
"""

from __future__ import annotations

# --- ibsim's GUID allocation -------------------------------------------------------------------
#: The first GUID of each node type (``guids[]`` in sim_net.c). Each counter advances in order of
#: declaration (a node's header line, not its first mention); a copy of this is such a counter.
FIRST_GUID = {"switch": 0x200000, "hca": 0x100000}


def guids_taken(kind: str, num_ports: int) -> int:
    """How far ``new_node()`` advances the counter: 1 for a switch, ``1 + num_ports`` for an HCA."""
    return 1 if kind == "switch" else num_ports + 1


def default_port_guids(kind: str, node_guid: int, num_ports: int) -> dict[int, int]:
    """Port GUIDs as ``init_ports()`` sets them: a switch's port 0 is the node GUID, an HCA's port
    *i* is node GUID + *i*."""
    if kind == "switch":
        return {0: node_guid}
    return {i: node_guid + i for i in range(1, num_ports + 1)}


# --- ibsim's link-rate model -------------------------------------------------------------------
# ibsim keeps, per port, the *enabled* width and speed masks (PortInfo LinkWidthEnabled,
# LinkSpeedEnabled, LinkSpeedExtEnabled, and Mellanox's FDR10 bit); when two ports are cabled the
# active value is the highest bit both ends enable. The masks come from the global `width=`,
# `speed=`, `extspeed=` lines, from the per-port options `w=`, `s=`, `e=` (numbers: these masks),
# and from the ibnetdiscover comment `lid N 4xQDR`. Defaults: 4x, SDR (ibsim's DEFAULT_LINKWIDTH
# and DEFAULT_LINKSPEED).
WIDTH_ENABLED_BIT = {"1x": 1, "4x": 2, "8x": 4, "12x": 8, "2x": 16}
WIDTH_PRIORITY = ("12x", "8x", "4x", "2x", "1x")
SPEED_ENABLED_BIT = {"SDR": 1, "DDR": 2, "QDR": 4}
SPEED_EXT_ENABLED_BIT = {"FDR": 1, "EDR": 2, "HDR": 4, "NDR": 8}
DEFAULT_MASKS = (2, 1, 0, 0)  # width 4x, speed SDR, no extended speed, no FDR10
# What ibsim enables when a comment says "<N>x<SPEED>" (parse_port_link_width_and_speed).
COMMENT_WIDTH_ENABLED = {1: 1, 2: 16, 4: 3, 8: 4, 12: 11}
COMMENT_SPEED_ENABLED = {  # name -> (speed mask or None, ext mask or None, fdr10 mask or None)
    "SDR": (1, None, None),
    "DDR": (3, None, None),
    "QDR": (7, None, None),
    "FDR": (7, 1, 1),
    "EDR": (7, 3, 1),
    "HDR": (7, 7, 1),
    "NDR": (7, 15, 1),
    "FDR10": (7, None, 1),
}
