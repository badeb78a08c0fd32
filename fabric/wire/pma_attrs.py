"""Performance management attributes (IBA vol. 1 section 16.1). Field names follow infiniband-diags
(perfquery prints them with these names, in CamelCase)."""

from __future__ import annotations

from .fields import R, Struct, U


class PortCounters(Struct):
    """PortCounters (0x0012), 44 octets. Data counters count 4-octet words and saturate."""

    FIELDS = (
        R(8), U("port_select", 8), U("counter_select", 16),
        U("symbol_error_counter", 16), U("link_error_recovery_counter", 8), U("link_downed_counter", 8),
        U("port_rcv_errors", 16), U("port_rcv_remote_physical_errors", 16),
        U("port_rcv_switch_relay_errors", 16), U("port_xmit_discards", 16),
        U("port_xmit_constraint_errors", 8), U("port_rcv_constraint_errors", 8),
        U("counter_select2", 8), U("local_link_integrity_errors", 4),
        U("excessive_buffer_overrun_errors", 4),
        U("qp1_dropped", 16), U("vl15_dropped", 16),
        U("port_xmit_data", 32), U("port_rcv_data", 32), U("port_xmit_pkts", 32), U("port_rcv_pkts", 32),
        U("port_xmit_wait", 32),
    )


class PortCountersExtended(Struct):
    """PortCountersExtended (0x001D), 72 octets of 64-bit counters."""

    FIELDS = (
        R(8), U("port_select", 8), U("counter_select", 16), R(32),
        U("port_xmit_data", 64), U("port_rcv_data", 64), U("port_xmit_pkts", 64), U("port_rcv_pkts", 64),
        U("port_unicast_xmit_pkts", 64), U("port_unicast_rcv_pkts", 64),
        U("port_multicast_xmit_pkts", 64), U("port_multicast_rcv_pkts", 64),
    )


def counter_width(cls: type, name: str) -> int:
    """Bits of a counter, for saturating arithmetic (counters stop at all ones, they do not wrap)."""
    for f in cls.FIELDS:
        if f.name == name:
            return f.bits
    raise KeyError(name)
