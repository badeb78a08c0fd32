"""ERF records: layout, timestamps, and malformed files."""

import pytest

from fabric.capture import ERF_HDR_LEN, ErfWriter, encode_record, parse_records, read_erf
from fabric.wire import ParseError


def test_record_layout_by_hand():
    rec = encode_record(b"\xAA" * 6, 1 * 10**9 + 500_000_000)  # 1.5 s
    # ts little-endian 32.32: seconds 1 in the high word, 0x80000000 in the low word
    assert rec[:8] == bytes.fromhex("00000080" "01000000")
    assert rec[8] == 21 and rec[9] == 0x04  # type InfiniBand, varying-length flag
    assert rec[10:12] == (16 + 6).to_bytes(2, "big")  # rlen
    assert rec[12:14] == b"\0\0" and rec[14:16] == (6).to_bytes(2, "big")  # lctr, wlen
    assert rec[16:] == b"\xAA" * 6


def test_write_read_round_trip_with_snaplen(tmp_path):
    p = tmp_path / "x.erf"
    with ErfWriter(p, snaplen=10) as w:
        w.write(b"0123456789abcdef", 2 * 10**9, interface=1)
        w.write(b"short", 3.25)
    r = read_erf(p)
    assert r[0].packet == b"0123456789" and r[0].wire_length == 16 and r[0].truncated
    assert r[0].interface == 1 and r[0].timestamp == 2.0
    assert r[1].packet == b"short" and not r[1].truncated and r[1].timestamp == 3.25


@pytest.mark.parametrize("data,kind", [
    (b"\0" * 10, "truncated"),
    (encode_record(b"abc", 0)[:8] + bytes([2]) + encode_record(b"abc", 0)[9:], "erf_type"),
    (encode_record(b"abc", 0)[:10] + (100).to_bytes(2, "big") + encode_record(b"abc", 0)[12:], "erf_rlen"),
    (encode_record(b"abc", 0)[:10] + (3).to_bytes(2, "big") + encode_record(b"abc", 0)[12:], "erf_rlen"),
])
def test_malformed_files(data, kind):
    with pytest.raises(ParseError) as ei:
        parse_records(data)
    assert ei.value.kind == kind


def test_header_length_constant():
    assert ERF_HDR_LEN == 16
