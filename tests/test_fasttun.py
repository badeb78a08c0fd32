"""The accelerated provider's TUN offloads (ipoib/_fasttun.pyx) against the kernel's own.

Segmentation: a super-packet (TCP or UDP, options, odd gso_size, a short last segment) is cut by our
C code and by the kernel, which we make segment in software: the same packet, sent through a packet
socket with PACKET_VNET_HDR on a TUN device that offers no offloads, comes out of that device as the
kernel's segments. The octets must be equal. GRO: our coalesced run, segmented again, gives back
exactly what was coalesced, and a run is only made of what the kernel's GRO would coalesce.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import uuid

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

_fasttun = pytest.importorskip("ipoib._fasttun")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and TUN devices need root")

TUNSETIFF, TUNSETOFFLOAD = 0x400454CA, 0x400454D0
IFF_TUN, IFF_NO_PI, IFF_VNET_HDR = 0x0001, 0x1000, 0x4000
PACKET_VNET_HDR = 15
ETH_P_IP = 0x0800
SRC, DST = bytes([10, 99, 0, 1]), bytes([10, 99, 0, 2])


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def super_packet(proto: int, payload: bytes, mss: int, *, options: bytes = b"", flags: int = 0x18,
                 ident: int = 0x1234, seq: int = 1000):
    """A virtio_net_hdr and an IPv4 super-packet as the kernel hands one to a TUN device with
    offloads: NEEDS_CSUM, the pseudo-header sum in the L4 checksum field."""
    if proto == 6:
        doff = (20 + len(options)) // 4
        l4 = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 0xABCDEF, doff << 4, flags, 4096, 0, 0) + options
        gso_type = 1
    else:
        l4 = struct.pack("!HHHH", 40000, 5201, 8 + len(payload), 0)
        gso_type = 5
    total = 20 + len(l4) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, 0x4000, 64, proto, 0, SRC, DST)
    ip = ip[:10] + struct.pack("!H", 0xFFFF - _csum(ip)) + ip[12:]
    coff = 16 if proto == 6 else 6
    pseudo = _csum(SRC + DST + struct.pack("!BBH", 0, proto, len(l4) + len(payload)))
    l4 = l4[:coff] + struct.pack("!H", pseudo) + l4[coff + 2:]
    vnet = struct.pack("<BBHHHH", 1, gso_type, 20 + len(l4), mss, 20, coff)
    return vnet, ip + l4 + payload


class KernelSegmenter:
    """A TUN device without offloads in a namespace of our own: what a packet socket sends on it
    with a virtio_net_hdr, the kernel segments and checksums in software, and we read back."""

    def __init__(self):
        from ipoib.iphost import netns

        self.netns = netns
        self.ns = f"ibft-oracle-{uuid.uuid4().hex[:8]}"
        netns.create(self.ns)
        try:
            with netns.entered(self.ns):
                self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
                fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH22x", b"o0", IFF_TUN | IFF_NO_PI | IFF_VNET_HDR))
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, 0)  # no TSO, no checksum offload: software GSO
                netns.ip_in(self.ns, "link", "set", "o0", "mtu", "65535", "up")
                self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
                self.sock.setsockopt(263, PACKET_VNET_HDR, 1)  # SOL_PACKET
        except BaseException:
            netns.delete(self.ns)
            raise

    def segment(self, vnet: bytes, packet: bytes) -> list[bytes]:
        while True:  # nothing left from before
            try:
                os.read(self.fd, 70000)
            except BlockingIOError:
                break
        self.sock.sendto(vnet + packet, ("o0", ETH_P_IP))
        out = []
        while True:
            try:
                data = os.read(self.fd, 70000)
            except BlockingIOError:
                break
            out.append(data[10:])
        return out

    def close(self):
        self.sock.close()
        os.close(self.fd)
        self.netns.delete(self.ns)


@pytest.fixture(scope="module")
def kernel():
    k = KernelSegmenter()
    yield k
    k.close()


def test_a_tcp_super_packet_is_cut_as_the_kernel_cuts_it(kernel):
    vnet, pkt = super_packet(6, bytes(range(256)) * 40, 1992, options=bytes([1, 1, 8, 10]) + bytes(range(8)))
    ours = _fasttun.segment(vnet + pkt)
    assert len(ours) == 6 and [len(s) for s in ours] == [2044] * 5 + [20 + 32 + 10240 - 5 * 1992]
    assert ours == kernel.segment(vnet, pkt)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(proto=st.sampled_from([6, 17]), size=st.integers(1, 30000), mss=st.integers(1, 2000),
       opts=st.integers(0, 10), flags=st.sampled_from([0x10, 0x18, 0x19, 0x11, 0x90, 0x98, 0x50]),
       seed=st.integers(0, 255), ident=st.integers(0, 0xFFFF), seq=st.integers(0, 0xFFFFFFFF))
def test_random_super_packets_are_cut_as_the_kernel_cuts_them(kernel, proto, size, mss, opts, flags, seed,
                                                              ident, seq):
    if (size + mss - 1) // mss > 64:
        mss = (size + 63) // 64  # keep to what a 64 KB GSO packet can be (and a quick test)
    payload = bytes((seed + i * 7) & 0xFF for i in range(size))
    options = bytes([1, 1, 1, 1] * opts)  # NOPs: 4 octets each
    vnet, pkt = super_packet(proto, payload, mss, options=options, flags=flags, ident=ident, seq=seq)
    try:
        theirs = kernel.segment(vnet, pkt)
    except OSError:  # the kernel refuses it at once (a UDP GSO packet of more than 128 segments)
        theirs = []
    assume(theirs)  # what the kernel never sends, the comparison cannot judge
    assert _fasttun.segment(vnet + pkt) == theirs


def test_a_checksum_offload_is_completed(kernel):
    vnet, pkt = super_packet(6, b"x" * 100, 1992)
    vnet = struct.pack("<BBHHHH", 1, 0, 0, 0, 20, 16)  # NEEDS_CSUM, no GSO
    assert _fasttun.segment(vnet + pkt) == kernel.segment(vnet, pkt)


@pytest.mark.parametrize("vnet", [
    struct.pack("<BBHHHH", 1, 1, 52, 0, 20, 16),        # TCP GSO with gso_size 0
    struct.pack("<BBHHHH", 1, 5, 52, 100, 20, 6),       # UDP GSO on a TCP packet
    struct.pack("<BBHHHH", 1, 3, 52, 100, 20, 6),       # UFO: not offered
    struct.pack("<BBHHHH", 1, 0, 0, 0, 20, 5000),       # checksum beyond the packet
    struct.pack("<BBHHHH", 1, 5, 28, 8, 20, 6),         # UDP GSO of more than 128 segments
])
def test_a_bad_virtio_net_hdr_is_refused(vnet):
    """(The kernel refuses these too, at sendto: what a TUN device hands over is never one.)"""
    _, pkt = super_packet(17 if vnet[1] == 5 and vnet[4] == 8 else 6, b"y" * 3000, 1000)
    assert _fasttun.segment(vnet + pkt) == []


_CSUM_PROBE = r"""
import json, os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
from test_fasttun import super_packet
from ipoib import _fasttun
out = []
for proto in (6, 17):
    for size in (1, 7, 8, 63, 64, 65, 1000, 1992, 1993, 4000, 30001, 65000):
        for mss in (1, 9, 64, 536, 1400, 1992):
            if proto == 17 and size > mss * 128:
                continue
            vnet, pkt = super_packet(proto, bytes((i * 31 + size) & 0xFF for i in range(size)), mss)
            segs = _fasttun.segment(vnet + pkt)
            out.append([s.hex() for s in segs])
            if proto == 6 and 1 < len(segs) <= 64:  # GRO checks every checksum before it joins them
                runs = _fasttun.coalesce(segs)
                assert len(runs) == 1, (size, mss, len(runs))
                out.append([h.hex() + w.hex() for h, w in runs])
print(json.dumps(out))
"""


def test_the_checksum_methods_cut_alike():
    """The AVX2 sum (copying as it sums) and the 64-bit loop (IBFAB_CSUM=scalar) give the same
    segments, and GRO (which checks every checksum) joins them alike, for payloads around every length that changes the path (8, 64) and super-packets of
    many segments."""
    import json
    import subprocess
    import sys

    runs = []
    for method in ("", "scalar"):
        r = subprocess.run([sys.executable, "-c", _CSUM_PROBE], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, IBFAB_CSUM=method))
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(r.stdout))
    assert runs[0] == runs[1]
    assert sum(len(x) for x in runs[0]) > 500  # the packets were cut, not refused


# -- GRO ------------------------------------------------------------------------------------------------


def _segments(size, mss, **kw):
    vnet, pkt = super_packet(6, bytes((i * 13) & 0xFF for i in range(size)), mss, **kw)
    return vnet, pkt, _fasttun.segment(vnet + pkt)


def test_consecutive_segments_become_one_super_packet_again():
    vnet, pkt, segs = _segments(20000, 1992, options=bytes([1, 1, 8, 10]) + bytes(8))
    (hdr, whole), = _fasttun.coalesce(segs)
    flags, gso_type, hdr_len, gso_size, cstart, coff = struct.unpack("<BBHHHH", hdr)
    assert (flags, gso_type, hdr_len, gso_size, cstart, coff) == (1, 1, 52, 1992, 20, 16)
    assert whole == pkt  # the same octets, checksum field holding the pseudo-header sum
    assert _fasttun.segment(hdr + whole) == segs


def test_gro_keeps_apart_what_the_kernel_keeps_apart():
    _, _, segs = _segments(8000, 1000)
    bad = bytearray(segs[2])
    bad[-1] ^= 0xFF  # a wrong TCP checksum
    gaps = segs[:2] + segs[3:]  # a missing segment
    other = bytearray(segs[3])
    other[20:22] = struct.pack("!H", 40001)  # another flow (ports)
    other[36:38] = b"\0\0"
    L = len(other) - 20
    other[36:38] = struct.pack("!H", 0xFFFF - _csum(bytes(other[12:20]) + struct.pack("!BBH", 0, 6, L) + bytes(other[20:])))
    for run, expect in ((segs[:2] + [bytes(bad)] + segs[3:], [2, 1, 5]),
                        (gaps, [2, 5]),
                        (segs[:3] + [bytes(other)] + segs[4:], [3, 1, 4])):
        got = _fasttun.coalesce(run)
        sizes = [1 if h[1] == 0 else (len(p) - 40 + h[4] - 1) // (h[4] | h[5] << 8) for h, p in got]
        assert [1 if h[1] == 0 else round((len(p) - 40) / 1000 + 0.49) for h, p in got] == expect, sizes


def test_the_tun_writer_thread_writes_what_the_loop_would_write_in_the_same_order():
    """Runs go up through the TUN writer's thread (ipoib/tunwriter.h), and lone frames too while it
    has writes queued: many runs queued at once (more than its 16 buffers), with lone frames (UDP,
    a segment with a bad checksum) between them, come out as the loop's own writes do, in order."""
    packets = []
    for n in range(12):
        _, _, segs = _segments(8000 + 500 * n, 1000 + 37 * n)
        packets += segs
        _, udp = super_packet(17, bytes([n]) * (100 + n), 1400)
        packets.append(udp)
        if n % 3 == 0:
            bad = bytearray(segs[1])
            bad[-1] ^= 0x55
            packets.append(bytes(bad))
    direct = _fasttun.coalesce(packets, threaded=False)
    threaded = _fasttun.coalesce(packets, threaded=True)
    assert len(direct) > 20 and any(h[1] == 1 for h, _ in direct)  # runs and lone frames
    assert threaded == direct


def test_the_ulps_own_writes_stay_behind_what_the_tun_writer_holds():
    """A frame the ULP writes up (KernelLink.receive: the slow path's IPv4, after the RX dispatcher
    handed it the rest of a burst) goes behind the super-packets the writer's thread still holds,
    not past them (a TCP flow's later segments overtaking its earlier ones)."""
    packets = []
    for n in range(20):  # more runs than the writer has buffers: it is busy when the ULP writes
        packets += _segments(16000, 1400 + n)[2]
    _, late = _segments(3000, 1000)[:2]
    _, udp = super_packet(17, b"after", 1400)
    direct = _fasttun.coalesce(packets, threaded=False)
    threaded = _fasttun.coalesce(packets, threaded=True, then=[late, udp])
    assert threaded[:-2] == direct and len(direct) == 20
    assert [p for _, p in threaded[-2:]] == [late, udp] and threaded[-1][0] == bytes(10)
