"""LID assignment, as OpenSM's LID manager does it (``opensm/osm_lid_mgr.c``).

What OpenSM 3.3 does on a sweep (``lid_mgr_init_sweep``, ``lid_mgr_get_port_lid``,
``osm_lid_mgr_process_sm``, ``osm_lid_mgr_process_subnet``):

- The guid2lid cache is validated first (``lid_mgr_validate_db``): entries with LID 0, beyond the
  unicast range, misaligned for the LMC, or overlapping an earlier entry are dropped; the others
  reserve their LIDs, also for ports that are absent from the fabric today.
- The SM's own port is handled first, then every other port in the order of the SM's
  ``port_guid_tbl``. That table is a ``cl_qmap`` keyed by the port GUID *in network byte order*,
  compared as a native integer, so on a little-endian host the order is the order of the
  byte-swapped GUIDs (the last octet of the GUID is the most significant). It is not discovery
  order: on ibsim's ``net.2sw2path4hca`` the SM's switch gets LID 1 and then Hca1 (0x100001),
  Switch2 (0x200001), Hca2 (0x100004), Hca3 (0x100007), Hca4 (0x10000a) get 2..6, and on the
  generated fat trees leaf01 (0x200000) gets LID 2, before the HCAs.
- A port keeps the LID of its guid2lid entry. Otherwise it keeps the LID it already has (PortInfo)
  when that LID is aligned and not reserved by the cache or taken by a port handled before it.
  Otherwise it gets the lowest free, aligned LID range; free means not reserved by the cache and
  not held by a discovered port that may keep its LID.
- A switch's base port 0 takes one LID; a CA port takes 2**LMC (enhanced switch port 0 is not
  modelled).
"""

from __future__ import annotations

from .subnet import Subnet, SmPort

__all__ = ["MAX_UCAST_LID", "assign_lids", "osm_guid_key", "osm_port_order"]

#: Highest unicast LID (0xBFFF).
MAX_UCAST_LID = 0xBFFF


def osm_guid_key(guid: int) -> int:
    """The sort key of a GUID in OpenSM's ``cl_qmap`` tables on a little-endian host: the GUID in
    network byte order read as a native (little-endian) 64-bit integer."""
    return int.from_bytes(guid.to_bytes(8, "big"), "little")


def osm_port_order(subnet: Subnet) -> list[SmPort]:
    """Every endport (switch port 0, cabled CA port) in OpenSM's ``port_guid_tbl`` order."""
    return sorted(subnet.endports(), key=lambda p: osm_guid_key(p.gid_guid))


def _nlids(port: SmPort, lmc: int) -> int:
    return 1 if port.node.is_switch else 1 << lmc


def assign_lids(subnet: Subnet, guid2lid: dict | None = None, *, lmc: int = 0,
                keep_current: bool = True) -> dict[int, int]:
    """Base LIDs for every endport of ``subnet``: ``{port GUID: base LID}``.

    ``guid2lid`` is the SM's cache (``{port GUID: base LID}``; a ``(min, max)`` pair is accepted
    too). ``keep_current`` lets a port keep the LID it already has (``SmPort.lid``, as read from
    PortInfo), as OpenSM does. The subnet is not modified; the caller writes the LIDs to the ports
    (and merges the result into its cache). Raises ValueError when the LID space runs out.
    """
    if not 0 <= lmc <= 7:
        raise ValueError(f"LMC {lmc} is not in 0..7")
    step = 1 << lmc
    mask = ~(step - 1)

    # 1. validate the cache, reserving the LIDs of its valid entries (lid_mgr_validate_db)
    reserved = bytearray(MAX_UCAST_LID + 2)
    cache: dict[int, int] = {}
    for guid, val in (guid2lid or {}).items():
        lo, hi = (val, val) if isinstance(val, int) else (int(val[0]), int(val[1]))
        if not guid or lo <= 0 or lo > hi or hi > MAX_UCAST_LID:
            continue
        if lo != hi and lo & mask != lo:
            continue
        if any(reserved[lo:hi + 1]):
            continue
        for lid in range(lo, min(hi, lo + step - 1) + 1):
            reserved[lid] = 1
        cache[guid] = lo

    sm_port = subnet.sm_port
    order = osm_port_order(subnet)
    if sm_port is not None and sm_port in order:
        order.remove(sm_port)
        order.insert(0, sm_port)

    # 2. LIDs that discovered ports may keep are not free either (lid_mgr_init_sweep)
    held = bytearray(MAX_UCAST_LID + 2)
    if keep_current:
        for p in order:
            if p.gid_guid in cache or not p.lid:
                continue
            n = _nlids(p, lmc)
            lo = p.lid
            if n > 1 and lo & mask != lo or lo + n - 1 > MAX_UCAST_LID:
                continue
            if any(reserved[lo + 1:lo + n]):
                continue
            for lid in range(lo, lo + n):
                held[lid] = 1

    # 3. the free ranges, computed once per sweep as OpenSM does: LIDs freed later in the sweep
    # (a port that moves) do not become free before the next sweep
    taken = bytes(a | b for a, b in zip(reserved, held))
    ranges: list[list[int]] = []
    lid = taken.find(0, 1, MAX_UCAST_LID + 1)
    while lid >= 0:
        end = taken.find(1, lid, MAX_UCAST_LID + 1)
        end = MAX_UCAST_LID + 1 if end < 0 else end
        ranges.append([lid, end - 1])
        lid = taken.find(0, end, MAX_UCAST_LID + 1) if end <= MAX_UCAST_LID else -1

    def find_free(n: int) -> int:
        for i, r in enumerate(ranges):
            lid = r[0]
            if n > 1 and lid & mask != lid:
                lid = (lid + step) & mask
            if lid + n - 1 <= r[1]:
                if lid + n - 1 == r[1]:
                    del ranges[i]
                else:
                    r[0] = lid + n
                return lid
        raise ValueError("out of LIDs: no free LID range is left")

    used = bytearray(reserved)  # used_lids: grows as ports are assigned
    out: dict[int, int] = {}
    for p in order:
        guid = p.gid_guid
        n = _nlids(p, lmc)
        if guid in cache:
            lid = cache[guid]
        elif keep_current and p.lid and (n == 1 or p.lid & mask == p.lid) \
                and p.lid + n - 1 <= MAX_UCAST_LID and not any(used[p.lid:p.lid + n]):
            lid = p.lid
        else:
            lid = find_free(n)
        for x in range(lid, lid + n):
            used[x] = 1
        out[guid] = lid
    return out
