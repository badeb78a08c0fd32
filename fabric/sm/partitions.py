"""Partitions: a subset of OpenSM's ``partitions.conf`` (doc/partition-config.txt, man opensm).

Grammar, one statement per partition definition, ended by ``;``; a statement may span lines and a
line may hold several statements; ``#`` starts a comment::

    Name[=PKey] [, flag[=value]]* : member [, member]* ;

- ``Name=PKey``: ``Default=0x7fff``. A bare number is the P_Key (``0x8001 : ALL ;``). Only the
  low 15 bits are used (0x8001 and 0x0001 are the same partition). Without a P_Key the partition
  gets the one of an earlier statement with the same name, or a generated one (1, 2, ...). Two
  statements with the same P_Key are merged; the first name is kept.
- flags: ``ipoib`` (create the IPoIB broadcast group ff1<scope>:401b:<P_Key|0x8000>::ffff:ffff),
  ``mtu=`` (MTU code, default 4 = 2048), ``rate=`` (rate code, default 3 = 10 Gb/s), ``sl=``
  (default 0), ``scope=`` (default 2, link-local; given more than once it creates one group per
  scope), ``Q_Key=`` (default 0x0b1b), ``TClass=``, ``FlowLabel=``, ``defmember=full|limited|both``
  (the membership of members written without one), ``indx0`` (accepted, no effect here).
- members: ``ALL`` (every end port: CA ports and switch port 0), ``ALL_CAS``, ``ALL_SWITCHES``,
  ``ALL_ROUTERS`` (none in this fabric), ``SELF`` (the SM's port), ``NONE``, or a port GUID
  (``0x0002c90300001234`` or decimal), each optionally ``=full``, ``=limited`` or ``=both``
  (unambiguous prefixes such as ``limi`` are accepted, as OpenSM does). Without one a member gets
  the statement's ``defmember``, which defaults to **limited**, as in OpenSM.
- ``mgid=GID[,flag=value]*`` among the members creates an extra multicast group in the partition;
  it takes the rest of its line. IPv4/IPv6-over-IB MGIDs (signature 401b/601b) get the partition's
  P_Key written into them and must use the partition's rate and MTU.

Membership: a later rule overrides an earlier one for the same port (``ALL=limited, SELF=full``
leaves the SM's port full). ``both`` gives the port the full and the limited P_Key only when
``allow_both_pkeys`` is on; otherwise it means full. The default partition (0x7fff) always exists:
OpenSM starts it as ``ALL=limited, SELF=full`` before reading the file, so a file that does not
mention it leaves every port a limited member; the SM's port is always a full member of it. With no
file at all, or a file without any statement, the configuration is :data:`DEFAULT_CONFIG`
(``Default=0x7fff, ipoib : ALL=full ;``).

Where OpenSM logs a warning and skips a bad value, this parser raises :class:`PartitionError`
with the line number.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from ..wire.headers import IPOIB_QKEY, PKEY_FULL_BIT
from ..wire.smp_attrs import MTU_2048
from .mcast import DEFAULT_PKT_LIFE, RATE_10_GBPS, SCOPE_LINK_LOCAL, mtu_valid, rate_valid

__all__ = ["PartitionError", "Partition", "PartitionConfig", "McGroupSpec", "parse_partitions",
           "default_partitions", "DEFAULT_CONFIG", "DEFAULT_PKEY"]

DEFAULT_CONFIG = "Default=0x7fff, ipoib : ALL=full ;"
DEFAULT_PKEY = 0x7FFF
FULL, LIMITED, BOTH = "full", "limited", "both"
_KEYWORDS = ("ALL", "ALL_CAS", "ALL_SWITCHES", "ALL_ROUTERS", "SELF", "NONE")


class PartitionError(ValueError):
    def __init__(self, reason: str, line: int | None = None, source: str = "<partitions.conf>"):
        self.reason, self.line, self.source = reason, line, source
        where = f"{source}:{line}: " if line is not None else f"{source}: "
        super().__init__(where + reason)


@dataclass(frozen=True)
class McGroupSpec:
    """A multicast group the SM creates and owns (it persists with no members)."""

    mgid: bytes
    pkey: int          # with the full-member bit set
    qkey: int
    mtu: int
    rate: int
    sl: int
    scope: int
    tclass: int = 0
    flow_label: int = 0
    hop_limit: int = 0
    pkt_life: int = DEFAULT_PKT_LIFE
    partition: str = ""


@dataclass
class _Flags:
    mtu: int = MTU_2048
    rate: int = RATE_10_GBPS
    sl: int = 0
    scopes: tuple = ()
    qkey: int = 0
    tclass: int = 0
    flow_label: int = 0


@dataclass
class Partition:
    name: str
    pkey: int                      # the 15-bit base
    line: int | None = None
    ipoib: bool = False
    flags: _Flags = field(default_factory=_Flags)
    rules: list = field(default_factory=list)   # [(selector, membership)] in order
    groups: list = field(default_factory=list)  # McGroupSpec from mgid= lines

    @property
    def sl(self) -> int:
        return self.flags.sl

    def membership(self, port, sm_port_guid: int, allow_both: bool) -> tuple[bool, bool]:
        """(full, limited) membership of a port."""
        full = limited = False
        for sel, mem in self.rules:
            if not _selects(sel, port, sm_port_guid):
                continue
            if mem == FULL:
                full, limited = True, False
            elif mem == LIMITED:
                full, limited = False, True
            else:  # both
                full, limited = True, allow_both
        return full, limited


def _selects(sel, port, sm_port_guid: int) -> bool:
    if isinstance(sel, int):
        return port.gid_guid == sel
    if sel == "ALL":
        return True
    if sel == "ALL_CAS":
        return not port.node.is_switch
    if sel == "ALL_SWITCHES":
        return port.node.is_switch
    if sel == "SELF":
        return sm_port_guid != 0 and port.gid_guid == sm_port_guid
    return False  # ALL_ROUTERS, NONE


class PartitionConfig:
    def __init__(self, partitions: list[Partition], *, allow_both_pkeys: bool = False,
                 source: str = "<partitions.conf>", warnings: list | None = None):
        self.partitions: dict[int, Partition] = {p.pkey: p for p in partitions}
        self.allow_both_pkeys = allow_both_pkeys
        self.source = source
        self.warnings = list(warnings or [])

    def __repr__(self):
        return f"<PartitionConfig {', '.join(f'{p.name}=0x{k:04x}' for k, p in self.partitions.items())}>"

    def partition(self, pkey: int) -> Partition | None:
        return self.partitions.get(pkey & 0x7FFF)

    def sl_for(self, pkey: int) -> int:
        p = self.partition(pkey)
        return p.sl if p is not None else 0

    def pkeys_for(self, port, *, sm_port_guid: int = 0) -> list[int]:
        """The P_Keys of ``port`` (an :class:`~fabric.sm.subnet.SmPort`): bit 15 set for full
        membership; the default partition first, the others in the order of the file."""
        out = []
        for base, p in self.partitions.items():
            full, limited = p.membership(port, sm_port_guid, self.allow_both_pkeys)
            if base == DEFAULT_PKEY and sm_port_guid and port.gid_guid == sm_port_guid:
                full = True
                limited = limited and self.allow_both_pkeys
            if full:
                out.append(base | PKEY_FULL_BIT)
            if limited:
                out.append(base)
        return out

    def groups(self) -> list[McGroupSpec]:
        """Every group the SM creates: the IPoIB broadcast groups and the ``mgid=`` groups."""
        out = []
        for p in self.partitions.values():
            out.extend(_broadcast_specs(p))
            out.extend(p.groups)
        return out

    def ipoib_groups(self) -> list[McGroupSpec]:
        """The IPoIB broadcast groups to create: one per ``ipoib`` partition and scope."""
        return [s for p in self.partitions.values() for s in _broadcast_specs(p)]


def _broadcast_specs(p: Partition) -> list[McGroupSpec]:
    from ..wire.headers import ipoib_broadcast_mgid
    if not p.ipoib:
        return []
    f = p.flags
    pkey = p.pkey | PKEY_FULL_BIT
    return [McGroupSpec(mgid=ipoib_broadcast_mgid(pkey, scope), pkey=pkey, qkey=f.qkey or IPOIB_QKEY,
                        mtu=f.mtu, rate=f.rate, sl=f.sl, scope=scope, tclass=f.tclass,
                        flow_label=f.flow_label, hop_limit=0 if scope == SCOPE_LINK_LOCAL else 0xFF,
                        partition=p.name)
            for scope in (f.scopes or (SCOPE_LINK_LOCAL,))]


# -- parser ------------------------------------------------------------------------------------

_NUM_RE = re.compile(r"(0[xX][0-9a-fA-F]+|[0-9]+)\Z")


def _num(text: str, what: str, line: int, src: str, *, maximum: int) -> int:
    t = text.strip()
    if not _NUM_RE.match(t):
        raise PartitionError(f"{what} {t!r} is not a number", line, src)
    v = int(t, 0) if t.lower().startswith("0x") else int(t, 10)
    if v > maximum:
        raise PartitionError(f"{what} {t} is larger than 0x{maximum:x}", line, src)
    return v


def _membership(text: str, line: int, src: str) -> str:
    t = text.strip().lower()
    for word in (FULL, LIMITED, BOTH):
        if t and word.startswith(t):
            return word
    raise PartitionError(f"membership {text.strip()!r} is not full, limited or both", line, src)


def _group_flag(flags: _Flags, name: str, val: str | None, line: int, src: str, scopes: list) -> bool:
    """Apply an mgroup flag; False if ``name`` is not one."""
    key = name.strip().lower()
    if key not in ("mtu", "rate", "sl", "scope", "q_key", "qkey", "tclass", "flowlabel"):
        return False
    if val is None or not val.strip():
        raise PartitionError(f"flag {name.strip()!r} needs a value", line, src)
    if key == "mtu":
        v = _num(val, "mtu", line, src, maximum=0xFF)
        if not mtu_valid(v):
            raise PartitionError(f"mtu={v} is not an MTU code (1=256 .. 5=4096)", line, src)
        flags.mtu = v
    elif key == "rate":
        v = _num(val, "rate", line, src, maximum=0xFF)
        if not rate_valid(v):
            raise PartitionError(f"rate={v} is not a rate code (2..22, 3 = 10 Gb/s)", line, src)
        flags.rate = v
    elif key == "sl":
        flags.sl = _num(val, "sl", line, src, maximum=15)
    elif key == "scope":
        v = _num(val, "scope", line, src, maximum=15)
        if v == 0:
            raise PartitionError("scope=0 is not a multicast scope", line, src)
        if v not in scopes:
            scopes.append(v)
    elif key in ("q_key", "qkey"):
        flags.qkey = _num(val, "Q_Key", line, src, maximum=0xFFFFFFFF)
    elif key == "tclass":
        flags.tclass = _num(val, "TClass", line, src, maximum=0xFF)
    else:
        flags.flow_label = _num(val, "FlowLabel", line, src, maximum=0xFFFFF)
    return True


def _split_eq(item: str) -> tuple[str, str | None]:
    if "=" in item:
        a, b = item.split("=", 1)
        return a.strip(), b.strip()
    return item.strip(), None


class _Parser:
    def __init__(self, src: str, allow_both: bool):
        self.src = src
        self.allow_both = allow_both
        self.parts: dict[int, Partition] = {}
        self.pkey_counter = 0
        self.warnings: list[str] = []

    def gen_pkey(self, line: int) -> int:
        while self.pkey_counter < DEFAULT_PKEY - 1:
            self.pkey_counter += 1
            if self.pkey_counter not in self.parts:
                return self.pkey_counter
        raise PartitionError("no P_Key left to generate", line, self.src)

    def statement(self, chunks: list[tuple[int, str]]):
        """``chunks``: (line number, text) pieces of one statement, ';' removed."""
        first_line = chunks[0][0]
        text_lines = []
        colon_at = None
        for i, (ln, t) in enumerate(chunks):
            if colon_at is None and ":" in t:
                colon_at = i
            text_lines.append((ln, t))
        if colon_at is None:
            raise PartitionError("no partition definition: expected 'Name=PKey [, flags] : members ;'"
                                 " (missing ':')", first_line, self.src)
        header = " ".join(t for _, t in text_lines[:colon_at])
        ln_c, t_c = text_lines[colon_at]
        head_part, rest = t_c.split(":", 1)
        header = (header + " " + head_part).strip()
        body = [(ln_c, rest)] + text_lines[colon_at + 1:]
        part, defmember = self.header(header, first_line)
        self.members(part, defmember, body)

    def header(self, header: str, line: int) -> tuple[Partition, str]:
        items = [x.strip() for x in header.split(",")]
        if not items[0]:
            raise PartitionError("partition definition without a name or P_Key", line, self.src)
        name, pkey_text = _split_eq(items[0])
        if pkey_text is None and name[:1].isdigit():
            name, pkey_text = "", name
        if pkey_text is not None:
            if not pkey_text:
                raise PartitionError(f"partition {name!r}: '=' without a P_Key", line, self.src)
            pkey = _num(pkey_text, "P_Key", line, self.src, maximum=0xFFFF) & 0x7FFF
            if pkey == 0:
                raise PartitionError(f"P_Key {pkey_text} is invalid: its low 15 bits are zero",
                                     line, self.src)
        else:
            existing = [p for p in self.parts.values() if p.name == name]
            pkey = existing[0].pkey if existing else self.gen_pkey(line)
        part = self.parts.get(pkey)
        if part is None:
            part = Partition(name=name or f"{pkey:04x}", pkey=pkey, line=line)
            self.parts[pkey] = part
        elif name and part.name != name:
            self.warnings.append(f"{self.src}:{line}: P_Key 0x{pkey:04x} is already partition "
                                 f"{part.name!r}; merged, keeping that name")
        defmember = LIMITED
        scopes = list(part.flags.scopes)
        for item in items[1:]:
            if not item:
                raise PartitionError("empty partition flag (stray ',')", line, self.src)
            flag, val = _split_eq(item)
            if _group_flag(part.flags, flag, val, line, self.src, scopes):
                continue
            key = flag.lower()
            if key == "ipoib":
                part.ipoib = True
            elif key == "defmember":
                if val is None:
                    raise PartitionError("defmember needs a value (full, limited or both)", line, self.src)
                defmember = _membership(val, line, self.src)
            elif key == "indx0":
                self.warnings.append(f"{self.src}:{line}: indx0 is accepted but has no effect")
            else:
                raise PartitionError(f"unknown partition flag {flag!r}", line, self.src)
        part.flags.scopes = tuple(scopes)
        return part, defmember

    def members(self, part: Partition, defmember: str, body: list[tuple[int, str]]):
        for ln, text in body:
            items = text.split(",")
            i = 0
            while i < len(items):
                item = items[i].strip()
                i += 1
                if not item:
                    continue
                name, val = _split_eq(item)
                if name.lower() == "mgid":
                    self.mgroup(part, val, items[i:], ln)
                    break  # an mgid= entry takes the rest of its line
                mem = defmember if val is None else _membership(val, ln, self.src)
                if name in _KEYWORDS:
                    sel = name
                else:
                    try:
                        sel = _num(name, "port GUID", ln, self.src, maximum=(1 << 64) - 1)
                    except PartitionError:
                        raise PartitionError(f"bad member {name!r}: expected ALL, ALL_CAS, ALL_SWITCHES,"
                                             f" ALL_ROUTERS, SELF, NONE or a port GUID", ln, self.src) from None
                    if sel == 0:
                        raise PartitionError("port GUID 0 is invalid", ln, self.src)
                if sel != "NONE":
                    part.rules.append((sel, mem))

    def mgroup(self, part: Partition, gid_text: str | None, flag_items: list[str], ln: int):
        if not gid_text:
            raise PartitionError("mgid= needs a multicast GID", ln, self.src)
        try:
            mgid = bytearray(ipaddress.IPv6Address(gid_text.strip()).packed)
        except ValueError:
            raise PartitionError(f"mgid {gid_text.strip()!r} is not a GID", ln, self.src) from None
        if mgid[0] != 0xFF:
            raise PartitionError(f"mgid {gid_text.strip()} is not a multicast GID", ln, self.src)
        pf = part.flags
        flags = _Flags(mtu=pf.mtu, rate=pf.rate, sl=pf.sl, qkey=pf.qkey, tclass=pf.tclass,
                       flow_label=pf.flow_label)
        scopes: list = []
        for item in flag_items:
            item = item.strip()
            if not item:
                continue
            flag, val = _split_eq(item)
            if not _group_flag(flags, flag, val, ln, self.src, scopes):
                raise PartitionError(f"unknown multicast group flag {flag!r}", ln, self.src)
        pkey = part.pkey | PKEY_FULL_BIT
        signature = mgid[2] << 8 | mgid[3]
        if signature in (0x401B, 0x601B):  # IP over IB group: P_Key in the MGID, broadcast's rate/MTU
            mpkey = mgid[4] << 8 | mgid[5]
            if mpkey not in (0, pkey):
                raise PartitionError(f"IP multicast group {gid_text.strip()} has P_Key 0x{mpkey:04x}, "
                                     f"partition {part.name!r} is 0x{pkey:04x}", ln, self.src)
            if flags.rate != pf.rate or flags.mtu != pf.mtu:
                raise PartitionError(f"IP multicast group {gid_text.strip()} must use the partition's "
                                     f"rate {pf.rate} and mtu {pf.mtu}", ln, self.src)
            mgid[4], mgid[5] = pkey >> 8, pkey & 0xFF
            if not flags.qkey:
                flags.qkey = IPOIB_QKEY
        for scope in scopes or [mgid[1] & 0xF]:
            g = bytearray(mgid)
            g[1] = (g[1] & 0xF0) | scope
            part.groups.append(McGroupSpec(
                mgid=bytes(g), pkey=pkey, qkey=flags.qkey, mtu=flags.mtu, rate=flags.rate,
                sl=flags.sl, scope=scope, tclass=flags.tclass, flow_label=flags.flow_label,
                hop_limit=0 if scope == SCOPE_LINK_LOCAL else 0xFF, partition=part.name))


def parse_partitions(text: str, *, source: str = "<partitions.conf>",
                     allow_both_pkeys: bool = False) -> PartitionConfig:
    """Parse partitions.conf text; raises :class:`PartitionError` (with the line) on any error."""
    if not isinstance(text, str):
        raise TypeError("partitions.conf text must be a str")
    p = _Parser(source, allow_both_pkeys)
    default = Partition(name="Default", pkey=DEFAULT_PKEY, line=None)
    default.rules = [("ALL", LIMITED), ("SELF", FULL)]
    p.parts[DEFAULT_PKEY] = default
    chunks: list[tuple[int, str]] = []
    statements = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0]
        while True:
            if ";" in line:
                before, line = line.split(";", 1)
                if before.strip():
                    chunks.append((lineno, before))
                if not chunks:
                    raise PartitionError("empty statement (stray ';')", lineno, source)
                p.statement(chunks)
                statements += 1
                chunks = []
                continue
            if line.strip():
                chunks.append((lineno, line))
            break
    if chunks:
        # OpenSM takes a last statement without ';' as it is
        p.warnings.append(f"{source}:{chunks[0][0]}: statement not ended by ';'")
        p.statement(chunks)
        statements += 1
    if statements == 0:
        cfg = parse_partitions(DEFAULT_CONFIG, source="<default>", allow_both_pkeys=allow_both_pkeys)
        cfg.warnings = p.warnings + [f"{source}: no partition statement; using the default "
                                     f"configuration {DEFAULT_CONFIG!r}"]
        return cfg
    parts = list(p.parts.values())
    return PartitionConfig(parts, allow_both_pkeys=allow_both_pkeys, source=source, warnings=p.warnings)


def default_partitions(*, allow_both_pkeys: bool = False) -> PartitionConfig:
    """The configuration OpenSM uses when there is no partitions.conf."""
    return parse_partitions(DEFAULT_CONFIG, source="<default>", allow_both_pkeys=allow_both_pkeys)
