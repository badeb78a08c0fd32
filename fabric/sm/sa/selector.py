"""The MTU, Rate and PacketLifeTime selectors of PathRecord and MCMemberRecord (IBA table 213):
one rule for every field, OpenSM's (pr_rcv_get_path_parms, mgrp_request_is_realizable,
validate_more_comp_fields).

A selector names how a field's value is wanted: greater than it, less than it, exactly it, or the
largest available (the value is then ignored). MTU and PacketLifeTime codes compare as numbers;
rate codes are not in speed order, so a rate field compares with
:func:`~fabric.sm.mcast.compare_rates` and steps down with :func:`~fabric.sm.mcast.rate_prev`.
"""

from __future__ import annotations

from ...wire import mad as m
from ...wire.sa_attrs import SELECTOR_EXACT, SELECTOR_GT, SELECTOR_LT
from ..mcast import compare_rates, mtu_valid, rate_prev, rate_valid
from .actions import SaStatus

# What "exactly" asks of the value available (select_value's ``exact``):
EXACT_FITS = "fits"            # at least the value wanted: a path carries any smaller MTU
EXACT_EQUAL = "equal"          # the value wanted itself (OpenSM's rule for a path's rate)
EXACT_UNCHECKED = "unchecked"  # nothing: a new group's members are checked when they join


def _compare(a: int, b: int, rate: bool) -> int:
    if rate:
        return compare_rates(a, b)
    return (a > b) - (a < b)


def _below(wanted: int, rate: bool) -> int | None:
    """The largest value less than ``wanted``, None if there is none (an MTU or lifetime code
    stops at 1, as in OpenSM)."""
    if rate:
        return rate_prev(wanted) or None
    return wanted - 1 if wanted > 1 else None


def selector_ok(selector: int, wanted: int, actual: int, *, rate: bool = False) -> bool:
    """Whether ``actual`` is what ``selector`` and ``wanted`` ask for."""
    c = _compare(actual, wanted, rate)
    if selector == SELECTOR_GT:
        return c > 0
    if selector == SELECTOR_LT:
        return c < 0
    if selector == SELECTOR_EXACT:
        return c == 0
    return True


def select_value(selector: int, wanted: int, available: int, *, rate: bool = False,
                 exact: str = EXACT_FITS) -> int | None:
    """The value to answer with when ``available`` is the most there is, or None when the
    selector rules it out: greater than takes ``available`` if it is above ``wanted``; less than
    takes ``available`` if it is below, else the largest value below ``wanted``; exactly takes
    ``wanted`` if ``exact`` allows (EXACT_FITS, EXACT_EQUAL, EXACT_UNCHECKED); the largest
    available takes ``available``."""
    if selector == SELECTOR_GT:
        return available if selector_ok(selector, wanted, available, rate=rate) else None
    if selector == SELECTOR_LT:
        if selector_ok(selector, wanted, available, rate=rate):
            return available
        return _below(wanted, rate)
    if selector == SELECTOR_EXACT:
        c = _compare(available, wanted, rate)
        ok = {EXACT_FITS: c >= 0, EXACT_EQUAL: c == 0, EXACT_UNCHECKED: True}[exact]
        return wanted if ok else None
    return available


def check_mtu_rate(rec, comps) -> None:
    """A Rate or MTU given with its selector must be a valid code (else SA_ERR_REQ_INVALID)."""
    if "rate_selector" in comps and "rate" in comps and not rate_valid(rec.rate):
        raise SaStatus(m.SA_ERR_REQ_INVALID, "invalid rate")
    if "mtu_selector" in comps and "mtu" in comps and not mtu_valid(rec.mtu):
        raise SaStatus(m.SA_ERR_REQ_INVALID, "invalid MTU")
