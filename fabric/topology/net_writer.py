"""The net-file writer: a :class:`~fabric.topology.model.Topology` as an ibsim net file.

What it writes, :mod:`~fabric.topology.net_parser` and ibsim both read back to the same fabric.
"""

from __future__ import annotations

from .ibsim import (FIRST_GUID, SPEED_ENABLED_BIT, SPEED_EXT_ENABLED_BIT, WIDTH_ENABLED_BIT,
                    guids_taken)
from .model import Topology, TopologyError


def format_net(topo: Topology) -> str:
    """The ibsim net file :meth:`Topology.to_net` returns; ``parse_topology(t.to_net()) == t``.

    The SM node's record comes first, with the SM port as its first port line: ibsim attaches
    clients that name no node (the SM) to the first port of the first record, and our parser
    picks that port as the SM port. GUIDs are left to ibsim's allocation wherever it gives the
    right value, and set by ``switchguid=``/``caguid=`` lines where it would not; system image
    GUIDs, vendor and device ids get their lines when they differ from ibsim's defaults.
    Links other than 4x SDR (ibsim's default) carry ``w=``/``s=``/``e=`` options on both ends
    (FDR10, which has no option, is written as ibnetdiscover writes it, ``# lid 0 4xFDR10``).
    An HCA port GUID other than node GUID + port is written as ``[p](guid)``, which this parser
    honours and ibsim ignores.
    """
    topo.validate()
    for node in topo.nodes.values():
        if '"' in node.description or "\n" in node.description:
            raise TopologyError(f"node {node.name!r}: description {node.description!r} "
                                "cannot be written in a net file", topo.source)
    order = [topo.nodes[topo.sm_node]] + [n for n in topo.nodes.values()
                                          if n.name != topo.sm_node]
    out = [
        "# ibsim net file written by ibfabric (fabric/topology.py)",
        f"# {topo.summary()}",
        f"# SM port: {topo.sm_node}[{topo.sm_port}] (first record, so ibsim attaches the SM "
        "there)",
    ]
    if topo.nodes[topo.sm_node].kind == "hca" and topo.sm_port != 1:
        out.append(f"# NB: ibsim attaches its default client to port 1 of {topo.sm_node}")
    out.append("")
    counters = dict(FIRST_GUID)
    devid = 0
    by_end = {end: lk for lk in topo.links for end in lk.ends()}
    for node in order:
        p0 = node.port_guids.get(0) if node.kind == "switch" else None
        if node.kind == "switch" and p0 != node.node_guid:
            out.append(f"switchguid={node.node_guid:#x}({p0:x})")
        elif node.node_guid != counters[node.kind]:
            kw = "switchguid" if node.kind == "switch" else "caguid"
            out.append(f"{kw}={node.node_guid:#x}")
        counters[node.kind] = node.node_guid + guids_taken(node.kind, node.num_ports)
        if node.sys_guid != node.node_guid:
            out.append(f"sysimgguid={node.sys_guid:#x}")
        if node.vendor_id:
            out.append(f"vendid={node.vendor_id:#x}")
        if node.device_id != devid:
            out.append(f"devid={node.device_id:#x}")
            devid = node.device_id
        keyword = "Switch" if node.kind == "switch" else "Hca"
        header = f'{keyword}\t{node.num_ports} "{node.name}"'
        if node.description != node.name:
            header += f'\t# "{node.description}"'
        out.append(header)
        ports = topo.connected_ports(node.name)
        port_order = sorted(ports)
        if node.name == topo.sm_node and topo.sm_port in ports:
            port_order.remove(topo.sm_port)
            port_order.insert(0, topo.sm_port)
        for p in port_order:
            rname, rport = ports[p]
            link = by_end[(node.name, p)]
            left = f"[{p}]"
            if node.kind == "hca" and node.port_guids[p] != node.node_guid + p:
                left += f"({node.port_guids[p]:x})"
            line = f'{left}\t"{rname}"[{rport}]'
            opts = _net_link_options(link.width, link.speed)
            if opts:
                line += "\t" + opts
            out.append(line)
        out.append("")
    return "\n".join(out)


def _net_link_options(width: str, speed: str) -> str:
    if speed == "FDR10":
        return f"# lid 0 {width}FDR10"
    opts = []
    if width != "4x":
        opts.append(f"w={WIDTH_ENABLED_BIT[width]}")
    if speed in SPEED_ENABLED_BIT:
        s, e = SPEED_ENABLED_BIT[speed], 0
    else:
        s, e = SPEED_ENABLED_BIT["QDR"], SPEED_EXT_ENABLED_BIT[speed]
    if s != 1:
        opts.append(f"s={s}")
    if e:
        opts.append(f"e={e}")
    return " ".join(opts)
