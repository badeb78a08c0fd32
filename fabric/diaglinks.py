"""``iblinkinfo``'s text from a directed-route discovery (``discover`` with every PortInfo as the
port sent it): each node's ports, the state, width and speed of each link, and the port at its
other end, in the order libibnetdisc lists the nodes it found.
"""

from __future__ import annotations

from .diagfmt import CAP_HAS_EXT_SPEEDS, PORT_INFO, field, show

SWITCH = "switch"
PORT_INFO_SHOW = {name: (lambda v, fn=fn, w=w: fn(v, w)) for name, _o, w, fn in PORT_INFO if fn is not None}


def discovery_order(data: dict, start_guid: int) -> list[dict]:
    """The nodes as libibnetdisc lists them: it finds them breadth first from the local node, each
    node's ports in order, and puts each new one at the head of its list."""
    nodes = {n["guid"]: n for n in data["nodes"]}
    seen, order = {start_guid}, [nodes[start_guid]]
    for n in order:  # grows as it goes: breadth first
        if n["kind"] != SWITCH and n["guid"] != start_guid:
            continue  # a CA forwards no SMPs: nothing is found through it
        for p in n["ports"]:
            if p["num"] and p["remote"] and p["remote"][0] not in seen:
                seen.add(p["remote"][0])
                order.append(nodes[p["remote"][0]])
    return order[::-1]


class _Fabric:
    def __init__(self, data: dict):
        self.nodes = {n["guid"]: n for n in data["nodes"]}
        self.ports = {(n["guid"], p["num"]): p for n in data["nodes"] for p in n["ports"]}

    def info(self, node: dict, p: dict) -> bytes:
        return p.get("pi") or bytes(64)

    def cap_mask(self, node: dict, p: dict) -> int:
        """The CapabilityMask that speaks for a port: port 0's on a switch."""
        own = self.ports.get((node["guid"], 0)) if node["kind"] == SWITCH else p
        return field(PORT_INFO, "CapMask", own["pi"]) if own and own.get("pi") else 0

    def base_lid(self, node: dict, p: dict) -> int:
        if node["kind"] == SWITCH:
            return self.sma_lid(node)
        return field(PORT_INFO, "Lid", self.info(node, p))

    def sma_lid(self, node: dict) -> int:
        p0 = self.ports.get((node["guid"], 0))
        return field(PORT_INFO, "Lid", p0["pi"]) if p0 and p0.get("pi") else 0

    def port_guid(self, node: dict, p: dict) -> int:
        return node["guid"] if node["kind"] == SWITCH else p["guid"]


def _highest(v: int) -> int:
    return 1 << (v.bit_length() - 1) if v else 0


def _could_be(fab: _Fabric, node: dict, p: dict, rnode: dict, rp: dict) -> tuple[str, str]:
    """What the link could run at: the highest width and speed both ends support, when it does not."""
    pi, rpi = fab.info(node, p), fab.info(rnode, rp)
    width_msg = speed_msg = ""
    best = _highest(field(PORT_INFO, "LinkWidthSupported", pi) & field(PORT_INFO, "LinkWidthSupported", rpi))
    if not best & field(PORT_INFO, "LinkWidthActive", pi):
        width_msg = "Could be " + PORT_INFO_SHOW["LinkWidthActive"](best)
    ext = "LinkSpeedExtSupported"
    if (fab.cap_mask(node, p) & fab.cap_mask(rnode, rp) & CAP_HAS_EXT_SPEEDS
            and field(PORT_INFO, ext, pi) and field(PORT_INFO, ext, rpi)):
        best = _highest(field(PORT_INFO, ext, pi) & field(PORT_INFO, ext, rpi))
        if not best & field(PORT_INFO, "LinkSpeedExtActive", pi):
            speed_msg = "Could be " + PORT_INFO_SHOW["LinkSpeedExtActive"](best)
        return width_msg, speed_msg
    best = _highest(field(PORT_INFO, "LinkSpeedSupported", pi) & field(PORT_INFO, "LinkSpeedSupported", rpi))
    if not best & field(PORT_INFO, "LinkSpeedActive", pi):
        speed_msg = "Could be " + PORT_INFO_SHOW["LinkSpeedActive"](best)
    return width_msg, speed_msg


def port_line(fab: _Fabric, node: dict, p: dict, *, line_mode: bool = False, additional: bool = False) -> str:
    pi = fab.info(node, p)
    state, phys = field(PORT_INFO, "LinkState", pi), field(PORT_INFO, "PhysLinkState", pi)
    state_s, phys_s = PORT_INFO_SHOW["LinkState"](state), PORT_INFO_SHOW["PhysLinkState"](phys)
    if state != 1:  # a Down port's other fields may be anything (C14-24.2.1)
        if fab.cap_mask(node, p) & CAP_HAS_EXT_SPEEDS and field(PORT_INFO, "LinkSpeedExtActive", pi):
            speed = show(PORT_INFO, "LinkSpeedExtActive", pi)
        else:
            speed = show(PORT_INFO, "LinkSpeedActive", pi)
        link = f"({show(PORT_INFO, 'LinkWidthActive', pi):>3} {speed:>18} {state_s:>6}/{phys_s:>8})"
        if additional:
            link += f" (HOQ:{field(PORT_INFO, 'HoqLife', pi)} VL_Stall:{field(PORT_INFO, 'VLStallCount', pi)})"
    else:
        link = f"({' ' * 14}{state_s:>6}/{phys_s:>8})"
    if p["remote"]:
        rnode = fab.nodes[p["remote"][0]]
        rp = fab.ports[tuple(p["remote"])]
        width_msg, speed_msg = _could_be(fab, node, p, rnode, rp)
        rguid = f"0x{fab.port_guid(rnode, rp):016x} " if line_mode else ""
        remote = (f"{rguid}{fab.base_lid(rnode, rp) or fab.sma_lid(rnode):6d} {rp['num']:4d}[  ] "
                  f"\"{rnode['desc']}\" ({width_msg} {speed_msg})")
    elif state == 1:
        remote = '           [  ] "" ( )'
    else:
        remote = '    "Port not available"'
    if line_mode:
        head = f"0x{fab.port_guid(node, p):016x} \"{node['desc']:>30}\" "
    else:
        head = "      " + (f"0x{p['guid']:016x} " if node["kind"] != SWITCH else "")
    lid = fab.sma_lid(node) if node["kind"] == SWITCH else fab.base_lid(node, p)
    return f"{head}{lid:6d} {p['num']:4d}[  ] =={link}==>  {remote}"


def node_lines(fab: _Fabric, node: dict, *, down_only: bool = False, line_mode: bool = False,
               additional: bool = False) -> list[str]:
    out = []
    for p in node["ports"]:
        if not p["num"] or p.get("pi") is None:
            continue
        if down_only and field(PORT_INFO, "LinkState", p["pi"]) != 1:
            continue
        if not out and not line_mode:
            if node["kind"] == SWITCH:
                out.append(f"Switch: 0x{node['guid']:016x} {node['desc']}:")
            else:
                out.append(f"CA: {node['desc']}:")
        out.append(port_line(fab, node, p, line_mode=line_mode, additional=additional))
    return out


def iblinkinfo(data: dict, start_guid: int, *, only: str | None = None, node_guid: int | None = None,
               down_only: bool = False, line_mode: bool = False, additional: bool = False) -> str:
    """The whole fabric (or the node ``node_guid``; ``only`` "switch" or "hca" for one kind) as
    iblinkinfo prints it when run on the node ``start_guid``."""
    fab = _Fabric(data)
    nodes = [fab.nodes[node_guid]] if node_guid is not None else discovery_order(data, start_guid)
    out = []
    for n in nodes:
        if only is None or (n["kind"] == SWITCH) == (only == SWITCH):
            out += node_lines(fab, n, down_only=down_only, line_mode=line_mode, additional=additional)
    return "".join(line + "\n" for line in out)
