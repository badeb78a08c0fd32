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
       pkey=st.integers(0, 0xFFFF), sl=st.integers(0, 15), psn=st.integers(0, 0xFFFFFF), vl=st.integers(0, 15),
       se=st.integers(0, 1))
def test_compiled_ud_packet_equals_the_reference(payload, slid, dlid, dqp, sqp, qkey, pkey, sl, psn, vl, se):
    from fabric.wire import packet

    compiled, packet._build_c = packet._build_c, None  # the reference: build_ud_packet in Python
    try:
        ref = w.build_ud_packet(slid=slid, dlid=dlid, dest_qp=dqp, src_qp=sqp, qkey=qkey, pkey=pkey, sl=sl,
                                psn=psn, vl=vl, se=se, payload=payload)
    finally:
        packet._build_c = compiled
    fast = build_ud_packet_fast(payload, slid, dlid, dqp, sqp, qkey, pkey, sl, psn, vl, se)
    assert fast == ref
    # and build_ud_packet itself, which takes the compiled builder for packets without a GRH
    assert w.build_ud_packet(slid=slid, dlid=dlid, dest_qp=dqp, src_qp=sqp, qkey=qkey, pkey=pkey, sl=sl,
                             psn=psn, vl=vl, se=se, payload=payload) == ref
    p = w.split_ud_packet(fast)  # and it validates: CRCs, lengths
    assert p.payload == payload and p.deth.qkey == qkey


# -- the three ways the compiled CRCs run: VPCLMULQDQ (512-bit), PCLMULQDQ (128-bit), tables --------

_CRC_PROBE = r"""
import json, random
from fabric import _wirefast as wf
r = random.Random(11)
lengths = list(range(0, 600)) + [1023, 1024, 1025, 2044, 2048, 2049, 4096 + 30, 9000, 65535]
out = {"method": wf.CRC_METHOD, "crc": [], "vcrc": []}
for n in lengths:
    b = bytes(r.getrandbits(8) for _ in range(n))
    out["crc"].append(wf.crc32(b))
    out["vcrc"].append(wf.vcrc16(b))
print(json.dumps(out))
"""


def test_every_crc_method_computes_the_same_crcs():
    """Every length around the thresholds (80 octets to fold at all, 512 for the wide registers)
    and the packet sizes that matter; the table method is the reference (and zlib, for CRC-32)."""
    import json
    import os
    import subprocess
    import sys

    from fabric import _wirefast

    runs = {}
    for method in ("table", "pclmul", ""):
        env = dict(os.environ, IBFAB_CRC=method)
        r = subprocess.run([sys.executable, "-c", _CRC_PROBE], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        runs[method] = json.loads(r.stdout)
    assert runs["table"]["method"] == "slicing-by-8"
    if _wirefast.CRC_METHOD == "slicing-by-8":
        import pytest

        pytest.skip("this CPU has no PCLMULQDQ: only the tables run here")
    assert runs["pclmul"]["method"] == "pclmulqdq"
    for method in ("pclmul", ""):
        assert runs[method]["crc"] == runs["table"]["crc"], runs[method]["method"]
        assert runs[method]["vcrc"] == runs["table"]["vcrc"], runs[method]["method"]
