"""Diagnostics shaped like infiniband-diags, from a fabric read with real SMPs.

``DiagAgent`` runs a directed-route discovery (and, for dump_fts, reads every LFT block) from an HCA
port inside its device host; the formatting functions print the result in the text formats of
``ibnetdiscover`` and ``dump_fts`` so that existing parsers and habits work on it.
"""

from __future__ import annotations

import time

from .devices.hca import send_smp_octets
from .sm.discovery import Discovery
from .sm.engine import RequestEngine, SendSmp
from .wire import smp_attrs as sa

SPEED = {1: "SDR", 2: "DDR", 4: "QDR"}
WIDTH = {1: "1x", 2: "4x", 4: "8x", 8: "12x", 16: "2x"}


class DiagAgent:
    """One discovery from an HCA port. Shares QP0 with an SM on the same HCA by TID."""

    def __init__(self, hca, port: int, *, read_lfts: bool = False, on_done=None):
        self.hca = hca
        self.port = port
        self.engine = RequestEngine(window=64, tid_base=0xD1A6 ^ (hca.node_guid & 0xFFFF))
        self.discovery = Discovery(self.engine, read_lfts=read_lfts, on_done=self._done)
        self.result = None
        self.on_done = on_done
        self._prev = hca.sm_consumer
        hca.sm_consumer = self._on_smp
        hca.agents.append(self)

    def start(self, now: float) -> None:
        self.discovery.start()
        self._send(self.engine.pump(now), now)

    def _done(self, subnet) -> None:
        self.result = subnet
        self.detach()
        if self.on_done is not None:
            self.on_done(subnet)

    def detach(self) -> None:
        if self.hca.sm_consumer == self._on_smp:
            self.hca.sm_consumer = self._prev
        if self in self.hca.agents:
            self.hca.agents.remove(self)

    def _on_smp(self, pkt, mad, in_port, now) -> None:
        if mad.tid in self.engine.outstanding:
            self._send(self.engine.on_response(mad, now), now)
        elif self._prev is not None:
            self._prev(pkt, mad, in_port, now)

    def tick(self, now: float) -> None:
        self._send(self.engine.tick(now), now)

    def next_deadline(self):
        return self.engine.next_deadline()

    def _send(self, actions, now) -> None:
        for a in actions:
            if isinstance(a, SendSmp):
                send_smp_octets(self.hca, self.port, a.raw, now, a.dlid, lambda: a.smp)


# -- serialisation between the host and the CLI ---------------------------------------------------

def subnet_to_dict(subnet) -> dict:
    nodes = []
    for n in subnet.nodes.values():
        ni = n.node_info
        ports = []
        for num, p in sorted(n.ports.items()):
            ports.append({"num": num, "guid": p.guid, "lid": p.lid, "lmc": p.lmc, "state": p.state,
                          "phys": p.phys, "width": p.width_active, "speed": p.speed_active,
                          "remote": [p.remote.node.guid, p.remote.num] if p.remote else None,
                          "pi": p.info.pack() if p.info is not None else None})  # all of it, for iblinkinfo
        nodes.append({"guid": n.guid, "kind": n.kind, "num_ports": n.num_ports, "desc": n.desc,
                      "path": list(n.path), "sys_guid": ni.sys_guid if ni else 0,
                      "vendor_id": ni.vendor_id if ni else 0, "device_id": ni.device_id if ni else 0,
                      "ports": ports, "lft": bytes(n.lft) if n.lft is not None else None})
    sm = subnet.sm_port
    return {"nodes": nodes, "sm": [sm.node.guid, sm.num, sm.guid] if sm else None,
            "generated": time.time()}


def _node_id(n: dict) -> str:
    return f"{'S' if n['kind'] == 'switch' else 'H'}-{n['guid']:016x}"


def _rate(p: dict) -> str:
    return f"{WIDTH.get(p['width'], '?')}{SPEED.get(p['speed'], '?')}"


def format_ibnetdiscover(data: dict) -> str:
    """The topology in ibnetdiscover's format (parsable by ibsim and by fabric.topology)."""
    nodes = {n["guid"]: n for n in data["nodes"]}
    ports = {(n["guid"], p["num"]): p for n in data["nodes"] for p in n["ports"]}
    out = ["#", f"# Topology file: generated on {time.strftime('%a %b %d %H:%M:%S %Y')}", "#"]
    if data.get("sm"):
        g, _num, pguid = data["sm"]
        out.append(f"# Initiated from node {g:016x} port {pguid:016x}")
    out.append("")
    order = [n for n in data["nodes"] if n["kind"] == "switch"] + [n for n in data["nodes"] if n["kind"] != "switch"]
    for n in order:
        out += [f"vendid=0x{n['vendor_id']:x}", f"devid=0x{n['device_id']:x}", f"sysimgguid=0x{n['sys_guid']:x}"]
        if n["kind"] == "switch":
            p0 = ports.get((n["guid"], 0), {})
            out.append(f"switchguid=0x{n['guid']:x}({n['guid']:x})")
            out.append(f"Switch\t{n['num_ports']} \"{_node_id(n)}\"\t\t# \"{n['desc']}\" base port 0 "
                       f"lid {p0.get('lid', 0)} lmc {p0.get('lmc', 0)}")
        else:
            out.append(f"caguid=0x{n['guid']:x}")
            out.append(f"Ca\t{n['num_ports']} \"{_node_id(n)}\"\t\t# \"{n['desc']}\"")
        for p in n["ports"]:
            if not p["num"] or not p["remote"]:
                continue
            rn = nodes[p["remote"][0]]
            rp = ports[tuple(p["remote"])]
            rlid = ports.get((rn["guid"], 0), {}).get("lid", 0) if rn["kind"] == "switch" else rp["lid"]
            rguid = f"({rp['guid']:x}) " if rn["kind"] != "switch" else ""
            if n["kind"] == "switch":
                out.append(f"[{p['num']}]\t\"{_node_id(rn)}\"[{rp['num']}]{rguid}\t\t# \"{rn['desc']}\" "
                           f"lid {rlid} {_rate(p)}")
            else:
                out.append(f"[{p['num']}]({p['guid']:x}) \t\"{_node_id(rn)}\"[{rp['num']}]{rguid}\t\t# lid "
                           f"{p['lid']} lmc {p['lmc']} \"{rn['desc']}\" lid {rlid} {_rate(p)}")
        out.append("")
    return "\n".join(out) + "\n"


def format_dump_fts(data: dict) -> str:
    """Every switch's LFT in the format of infiniband-diags ``dump_fts``."""
    owners = {}
    for n in data["nodes"]:
        for p in n["ports"]:
            if p["lid"] and (n["kind"] != "switch" or p["num"] == 0):
                kind = "Switch" if n["kind"] == "switch" else "Channel Adapter"
                guid = n["guid"] if n["kind"] == "switch" else p["guid"]
                owners[p["lid"]] = f"({kind} portguid 0x{guid:016x}: '{n['desc']}')"
    out = []
    for n in data["nodes"]:
        if n["kind"] != "switch" or n["lft"] is None:
            continue
        lft = n["lft"]
        top = len(lft) - 1
        path = ",".join(["0"] + [str(x) for x in n["path"]])
        out.append(f"Unicast lids [0x0-0x{top:x}] of switch DR path slid 0; dlid 0; {path} "
                   f"guid 0x{n['guid']:016x} ({n['desc']}):")
        out.append("  Lid  Out   Destination")
        out.append("       Port     Info ")
        count = 0
        for lid in range(1, top + 1):
            port = lft[lid]
            if port == 0xFF:
                continue
            out.append(f"0x{lid:04x} {port:03d} : {owners.get(lid, '(unknown node and type)')}")
            count += 1
        out.append(f"{count} valid lids dumped ")
    return "\n".join(out) + "\n"


def port_state_name(state: int) -> str:
    return sa.PORT_STATE_NAMES.get(state, str(state))
