"""The compiled packet builder and CRC-32 against the reference implementations, octet for octet."""

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from fabric import wire as w
from fabric._wirefast import build_ud_packet_fast, crc32


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000))
def test_crc32_is_zlibs(data):
    assert crc32(data) == zlib.crc32(data)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=4096), slid=st.integers(1, 0xBFFF), dlid=st.integers(1, 0xBFFF),
       dqp=st.integers(0, 0xFFFFFF), sqp=st.integers(0, 0xFFFFFF), qkey=st.integers(0, 0xFFFFFFFF),
       pkey=st.integers(0, 0xFFFF), sl=st.integers(0, 15), psn=st.integers(0, 0xFFFFFF))
def test_compiled_ud_packet_equals_the_reference(payload, slid, dlid, dqp, sqp, qkey, pkey, sl, psn):
    ref = w.build_ud_packet(slid=slid, dlid=dlid, dest_qp=dqp, src_qp=sqp, qkey=qkey, pkey=pkey, sl=sl, psn=psn,
                            payload=payload)
    fast = build_ud_packet_fast(payload, slid, dlid, dqp, sqp, qkey, pkey, sl, psn)
    assert fast == ref
    p = w.split_ud_packet(fast)  # and it validates: CRCs, lengths
    assert p.payload == payload and p.deth.qkey == qkey
