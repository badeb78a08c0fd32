"""Directed-route discovery (sans-IO): every node and port reachable from the SM's port.

Breadth first from the SM's own node: NodeInfo on a path says which node is there and through which
of its ports we arrived; a switch's PortInfo says which of its ports have a link to explore next.
Many SMPs are in flight at once (see RequestEngine).
"""

from __future__ import annotations

from .. import wire as w
from ..wire import smp_attrs as sa
from .engine import RequestEngine, ok
from .subnet import CA, SWITCH, SmNode, SmPort, Subnet


class Discovery:
    def __init__(self, engine: RequestEngine, *, read_lfts: bool = False, on_done=None):
        self.engine = engine
        self.subnet = Subnet()
        self.read_lfts = read_lfts
        self.on_done = on_done
        self.errors: list[str] = []
        self._at_path: dict[tuple, int] = {}  # path -> node GUID

    def start(self) -> None:
        self.engine.dr_get(w.ATTR_NODE_INFO, (), lambda r: self._node_info((), r))
        self.engine.when_idle(self._finish)

    def _finish(self) -> None:
        if self.read_lfts:
            self.read_lfts = False
            for sw in self.subnet.switches():
                self._read_lft(sw)
            self.engine.when_idle(self._finish)
            return
        if self.on_done is not None:
            self.on_done(self.subnet)

    # -- responses -----------------------------------------------------------------------------

    def _node_info(self, path: tuple, resp) -> None:
        if not ok(resp):
            self.errors.append(f"NodeInfo via {list(path)}: {'no response' if resp is None else hex(resp.status)}")
            return
        ni = w.NodeInfo.unpack(resp.data)
        sub = self.subnet
        node = sub.nodes.get(ni.node_guid)
        new = node is None
        if new:
            kind = SWITCH if ni.node_type == sa.NODE_TYPE_SWITCH else CA
            node = SmNode(ni.node_guid, kind, ni.num_ports, path=path, node_info=ni)
            sub.nodes[ni.node_guid] = node
            if not path:
                sub.sm_node = node
                sub.sm_port_num = ni.local_port
            self.engine.dr_get(w.ATTR_NODE_DESC, path, lambda r: self._node_desc(node, r))
            if node.is_switch:
                self.engine.dr_get(w.ATTR_SWITCH_INFO, path, lambda r: self._switch_info(node, r))
                for p in range(0, ni.num_ports + 1):
                    self.engine.dr_get(w.ATTR_PORT_INFO, path,
                                       lambda r, p=p: self._port_info(node, p, path, r), attr_mod=p)
        self._at_path[path] = ni.node_guid
        if not node.is_switch and ni.local_port not in node.ports:
            # a CA port seen for the first time (a CA may be reached through each of its ports)
            node.ports[ni.local_port] = SmPort(node, ni.local_port, guid=ni.port_guid)
            self.engine.dr_get(w.ATTR_PORT_INFO, path,
                               lambda r: self._port_info(node, ni.local_port, path, r), attr_mod=ni.local_port)
        if path:
            parent = sub.nodes[self._at_path[path[:-1]]]
            a = parent.ports.get(path[-1])
            if a is None:
                a = parent.ports[path[-1]] = SmPort(parent, path[-1])
            b = node.ports.get(ni.local_port)
            if b is None:
                b = node.ports[ni.local_port] = SmPort(node, ni.local_port)
            a.remote, b.remote = b, a

    def _node_desc(self, node: SmNode, resp) -> None:
        node.desc = w.NodeDescription.unpack(resp.data).description if ok(resp) else f"0x{node.guid:016x}"

    def _switch_info(self, node: SmNode, resp) -> None:
        if ok(resp):
            node.switch_info = w.SwitchInfo.unpack(resp.data)

    def _port_info(self, node: SmNode, num: int, path: tuple, resp) -> None:
        if not ok(resp):
            self.errors.append(f"PortInfo {num} of {node.desc or hex(node.guid)}: no answer")
            return
        pi = w.PortInfo.unpack(resp.data)
        port = node.ports.get(num)
        if port is None:
            port = node.ports[num] = SmPort(node, num)
        if node.is_switch and num == 0:
            port.guid = node.guid
        port.info = pi
        port.lid, port.lmc = pi.lid, pi.lmc
        port.state, port.phys = pi.port_state, pi.phys_state
        port.mtu_cap, port.neighbor_mtu = pi.mtu_cap, pi.neighbor_mtu
        port.width_active, port.speed_active = pi.link_width_active, pi.link_speed_active
        explore = num and pi.phys_state == sa.PHYS_LINKUP
        if node.is_switch and explore:
            arrived = node.node_info.local_port if path else 0
            if num != arrived or not path:
                self.engine.dr_get(w.ATTR_NODE_INFO, path + (num,), lambda r: self._node_info(path + (num,), r))
        elif not node.is_switch and not path and explore:
            # the SM's own CA: leave through the SM port
            self.engine.dr_get(w.ATTR_NODE_INFO, (num,), lambda r: self._node_info((num,), r))

    def _read_lft(self, sw: SmNode) -> None:
        top = sw.switch_info.linear_fdb_top if sw.switch_info else 0
        sw.lft = bytearray(b"\xff" * (top + 1))
        for block in range(top // w.LFT_BLOCK + 1):
            def done(r, block=block):
                if ok(r):
                    ports = w.LinearForwardingTable.unpack(r.data).ports
                    base = block * w.LFT_BLOCK
                    n = min(w.LFT_BLOCK, len(sw.lft) - base)
                    sw.lft[base:base + n] = bytes(ports[:n])
            self.engine.dr_get(w.ATTR_LFT, sw.path, done, attr_mod=block)
