"""RMPP framing of SA responses: segment() and Reassembler, known answers and round trips."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric import wire as w
from fabric.mad.rmpp import (Reassembler, RmppError, paylen_first, paylen_last, reassemble,
                            segment)

HDR = w.new_mad(w.SAMad, method=w.GET_TABLE_RESP, tid=0xABCDEF, attr_id=w.ATTR_NODE_RECORD,
                attr_offset=14, comp_mask=0x81, sm_key=0)


def segs(payload: bytes):
    return [w.SAMad.unpack(x) for x in segment(HDR, payload)]


@pytest.mark.parametrize("n,count,first,last", [
    (0, 1, 20, 20),            # an empty table still takes one segment
    (1, 1, 21, 21),
    (112, 1, 132, 132),
    (200, 1, 220, 220),
    (201, 2, 241, 21),
    (400, 2, 440, 220),
    (401, 3, 461, 21),
    (702 * 112, 394, 702 * 112 + 394 * 20, 702 * 112 - 393 * 200 + 20),
])
def test_payload_length_known_answers(n, count, first, last):
    s = segs(bytes(range(256)) * (n // 256) + bytes(n % 256))
    assert len(s) == count
    assert paylen_first(n) == first and paylen_last(n) == last
    assert s[0].rmpp_data2 == (first if count > 1 else last)
    assert s[-1].rmpp_data2 == last
    assert all(x.rmpp_data2 == 0 for x in s[1:-1])
    for i, x in enumerate(s, 1):
        assert x.rmpp_version == 1 and x.rmpp_type == w.RMPP_TYPE_DATA and x.rmpp_status == 0
        assert x.rmpp_data1 == i
        flags = w.RMPP_FLAG_ACTIVE | (w.RMPP_FLAG_FIRST if i == 1 else 0) | \
            (w.RMPP_FLAG_LAST if i == count else 0)
        assert x.rmpp_flags == flags
        # the common and SA headers repeat in every segment
        assert (x.method, x.tid, x.attr_id, x.attr_offset, x.comp_mask) == \
            (w.GET_TABLE_RESP, 0xABCDEF, w.ATTR_NODE_RECORD, 14, 0x81)


def test_segment_data_and_padding():
    payload = bytes(range(250))
    s = segs(payload)
    assert s[0].data == payload[:200]
    assert s[1].data == payload[200:] + bytes(150)
    assert all(len(x) == 256 for x in segment(HDR, payload))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 20 * 1024).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
def test_round_trip(payload):
    mads = segment(HDR, payload)
    assert reassemble(mads) == payload
    r = Reassembler()
    outs = [r.feed(x) for x in mads]
    assert outs[:-1] == [None] * (len(mads) - 1) and outs[-1] == payload
    assert r.complete and r.header.tid == HDR.tid


@settings(max_examples=40, deadline=None)
@given(st.integers(401, 8000), st.data())
def test_missing_segment_detected(n, data):
    mads = segment(HDR, bytes(n))
    drop = data.draw(st.integers(0, len(mads) - 2))  # not the last: that just stays incomplete
    r = Reassembler()
    with pytest.raises(RmppError) as ei:
        for i, x in enumerate(mads):
            if i != drop:
                r.feed(x)
    assert ei.value.kind in ("missing", "not_first")


def test_missing_last_segment_is_incomplete():
    mads = segment(HDR, bytes(1000))
    with pytest.raises(RmppError) as ei:
        reassemble(mads[:-1])
    assert ei.value.kind == "missing"


def test_duplicates_ignored_and_counted():
    payload = bytes(range(256)) * 3
    mads = segment(HDR, payload)
    r = Reassembler()
    out = None
    for x in [mads[0], mads[0], mads[1], mads[0], mads[2], mads[3]]:
        out = r.feed(x) or out
    assert out == payload and r.duplicates == 2
    assert r.feed(mads[3]) is None and r.duplicates == 3   # a late duplicate after completion


def test_first_flag_and_lengths_checked():
    mads = segment(HDR, bytes(500))
    bad = w.SAMad.unpack(mads[0]).replace(rmpp_flags=w.RMPP_FLAG_ACTIVE)
    with pytest.raises(RmppError) as ei:
        Reassembler().feed(bad)
    assert ei.value.kind == "not_first"
    r = Reassembler()
    r.feed(mads[0])
    r.feed(mads[1])
    with pytest.raises(RmppError) as ei:
        r.feed(w.SAMad.unpack(mads[2]).replace(rmpp_data2=300))
    assert ei.value.kind == "bad_length"
    r = Reassembler()
    r.feed(w.SAMad.unpack(mads[0]).replace(rmpp_data2=999))
    r.feed(mads[1])
    with pytest.raises(RmppError) as ei:
        r.feed(mads[2])
    assert ei.value.kind == "bad_length"


def test_abort_and_ack_and_plain_mad():
    r = Reassembler()
    with pytest.raises(RmppError) as ei:
        r.feed(HDR.replace(rmpp_version=1, rmpp_type=w.RMPP_TYPE_ABORT, rmpp_flags=1, rmpp_status=118))
    assert ei.value.kind == "aborted"
    assert Reassembler().feed(HDR.replace(rmpp_version=1, rmpp_type=w.RMPP_TYPE_ACK, rmpp_flags=1)) is None
    plain = HDR.replace(method=w.GET_RESP, data=b"x" * 200)
    assert Reassembler().feed(plain.pack()) == b"x" * 200


def test_short_mad_is_a_parse_error():
    with pytest.raises(w.ParseError):
        Reassembler().feed(b"\x01\x03\x02")


def test_other_transaction_segment_rejected():
    mads = segment(HDR, bytes(500))
    r = Reassembler()
    r.feed(mads[0])
    with pytest.raises(RmppError) as ei:
        r.feed(w.SAMad.unpack(mads[1]).replace(tid=1))
    assert ei.value.kind == "mismatch"
