"""The SM's view of the subnet, as discovery builds it: nodes, ports, links, LIDs.

Routing engines and the SA work on this model only; they never send SMPs themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..wire import smp_attrs as sa

SWITCH, CA = "switch", "hca"


@dataclass(eq=False)
class SmPort:
    node: "SmNode"
    num: int
    guid: int = 0  # port GUID (switch external ports: 0, they share port 0's)
    lid: int = 0
    lmc: int = 0
    state: int = sa.PORT_DOWN
    phys: int = sa.PHYS_POLLING
    mtu_cap: int = sa.MTU_4096
    neighbor_mtu: int = sa.MTU_4096
    width_active: int = sa.WIDTH_4X
    speed_active: int = sa.SPEED_SDR
    remote: "SmPort | None" = None  # the port at the other end of the cable
    pkeys: list = field(default_factory=list)  # as the SM programmed them
    info: object = None  # last PortInfo read

    @property
    def linked(self) -> bool:
        return self.remote is not None

    @property
    def gid_guid(self) -> int:
        return self.guid or self.node.guid

    def key(self) -> tuple:
        return (self.node.guid, self.num)

    def __repr__(self):
        return f"<{self.node.desc}[{self.num}] lid {self.lid}>"


@dataclass(eq=False)
class SmNode:
    guid: int
    kind: str
    num_ports: int
    desc: str = ""
    path: tuple = ()  # directed route from the SM's port
    ports: dict = field(default_factory=dict)  # num -> SmPort (switch: 0..N, CA: the ports seen)
    node_info: object = None
    switch_info: object = None
    lft: bytearray | None = None  # as programmed (switches)
    mft: dict = field(default_factory=dict)  # MLID -> port mask, as programmed

    @property
    def is_switch(self) -> bool:
        return self.kind == SWITCH

    @property
    def lid(self) -> int:
        """The node's LID: port 0 for a switch, the first port with a LID for a CA."""
        if self.is_switch:
            return self.ports[0].lid if 0 in self.ports else 0
        for _, p in sorted(self.ports.items()):
            if p.lid:
                return p.lid
        return 0

    def __repr__(self):
        return f"<{self.kind} {self.desc} 0x{self.guid:016x}>"


class Subnet:
    def __init__(self):
        self.nodes: dict[int, SmNode] = {}  # node GUID -> node
        self.sm_node: SmNode | None = None
        self.sm_port_num = 0

    # -- lookups -------------------------------------------------------------------------------

    def switches(self) -> list[SmNode]:
        return [n for n in self.nodes.values() if n.is_switch]

    def cas(self) -> list[SmNode]:
        return [n for n in self.nodes.values() if not n.is_switch]

    def ca_ports(self) -> list[SmPort]:
        return [p for n in self.cas() for _, p in sorted(n.ports.items()) if p.linked]

    def endports(self) -> list[SmPort]:
        """Every port that has a LID of its own: switch port 0 and CA ports."""
        out = []
        for n in self.nodes.values():
            if n.is_switch:
                if 0 in n.ports:
                    out.append(n.ports[0])
            else:
                out.extend(p for _, p in sorted(n.ports.items()) if p.linked)
        return out

    def port_by_guid(self, guid: int) -> SmPort | None:
        for n in self.nodes.values():
            for p in n.ports.values():
                if p.guid == guid and (p.num == 0 or not n.is_switch):
                    return p
        return None

    def port_by_lid(self, lid: int) -> SmPort | None:
        for p in self.endports():
            if p.lid and (lid >> p.lmc) == (p.lid >> p.lmc):
                return p
        return None

    def links(self) -> list[tuple[SmPort, SmPort]]:
        """Each cable once."""
        out = []
        for n in self.nodes.values():
            for p in n.ports.values():
                if p.remote is not None and (p.node.guid, p.num) < (p.remote.node.guid, p.remote.num):
                    out.append((p, p.remote))
        return out

    @property
    def sm_port(self) -> SmPort | None:
        if self.sm_node is None:
            return None
        return self.sm_node.ports.get(self.sm_port_num)

    def max_lid(self) -> int:
        return max((p.lid + (1 << p.lmc) - 1 for p in self.endports() if p.lid), default=0)
