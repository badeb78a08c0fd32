# cython: language_level=3
"""Compiled helpers for the fabric's per-packet work on the wire: the ICRC and VCRC (crcfold.h
and its table fallback), a UD packet written and sealed (``write_ud_packet``), the SMI's checks of
a directed-route SMP and the SMA's answer, the switch forwarding engine (``unicast_verdict``,
``forward_burst``), and the HCA's post of a compiled driver's burst (``hca_post_segment``).

:mod:`fabric.wire.crc` uses these when built and falls back to pure Python otherwise; the results
are identical (tests/test_wire_crc.py compares them).
"""

from libc.stdint cimport uint16_t, uint32_t, uint64_t, uint8_t
from libc.string cimport memcpy, memset
from cpython.bytearray cimport PyByteArray_FromStringAndSize, PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython cimport array
from fabric._corefast cimport CountersCore, HCACore, PortCore, QPCore


cdef extern from "crcfold.h" nogil:
    ctypedef struct crcfold_t:
        pass
    crcfold_t crcfold_icrc
    crcfold_t crcfold_vcrc
    int crcfold_init()
    int crcfold_wide
    uint32_t crcfold_update(const crcfold_t *c, uint32_t r, const uint8_t *p, size_t n)
    void crcfold_ib_local(uint32_t *icrc, uint32_t *vcrc, const uint8_t *p, size_t n)
    int crcfold_ud_fits(size_t n)
    void crcfold_ud_write(uint8_t *out, uint64_t w0, uint64_t w1, uint64_t w2, uint32_t w3, const uint8_t *payload,
                          size_t np, size_t pad)
    uint64_t __builtin_bswap64(uint64_t x)
    uint32_t __builtin_bswap32(uint32_t x)


# Carry-less multiplication (fabric/crcfold.h) when the CPU has it, on 512-bit registers when it has
# VPCLMULQDQ; IBFAB_CRC=pclmul keeps to 128-bit ones, IBFAB_CRC=table to the slicing-by-8 tables
# below (the tests run all three and compare them)
import os as _os
cdef bint FOLD = crcfold_init() != 0 and _os.environ.get("IBFAB_CRC", "") != "table"
if _os.environ.get("IBFAB_CRC", "") == "pclmul":
    crcfold_wide = 0
CRC_METHOD = ("vpclmulqdq" if crcfold_wide else "pclmulqdq") if FOLD else "slicing-by-8"
cdef enum:
    FOLD_MIN = 80  # shorter runs go through the tables: setting up the fold costs more
    PAIR_MAX = 512  # crcfold_pair's limit on 128-bit registers; on 512-bit ones the pair has none

cdef uint16_t VCRC_TABLE[256]
# Slicing-by-8: SLICE[k][b] is the CRC contribution of octet b followed by k zero octets, so eight
# octets fold into the register with eight independent lookups instead of a chain of eight.
cdef uint16_t SLICE[8][256]


cdef void _init_table():
    cdef int byte, bit, k
    cdef uint16_t c
    # 0xD008 is 0x100B with its 16 bits reversed: the CRC runs least significant bit first.
    for byte in range(256):
        c = byte
        for bit in range(8):
            if c & 1:
                c = (c >> 1) ^ 0xD008
            else:
                c = c >> 1
        VCRC_TABLE[byte] = c
        SLICE[0][byte] = c
    for k in range(1, 8):
        for byte in range(256):
            c = SLICE[k - 1][byte]
            SLICE[k][byte] = (c >> 8) ^ SLICE[0][c & 0xFF]


_init_table()

# CRC-32 of the ICRC (Ethernet/zlib: reflected 0xEDB88320), slicing-by-8 like the VCRC.
cdef uint32_t CRC32_SLICE[8][256]
cdef uint32_t ONES32 = 0xFFFFFFFFU


cdef void _init_crc32():
    cdef int byte, bit, k
    cdef uint32_t c
    for byte in range(256):
        c = byte
        for bit in range(8):
            c = (c >> 1) ^ <uint32_t> 0xEDB88320U if c & 1 else c >> 1
        CRC32_SLICE[0][byte] = c
    for k in range(1, 8):
        for byte in range(256):
            c = CRC32_SLICE[k - 1][byte]
            CRC32_SLICE[k][byte] = (c >> 8) ^ CRC32_SLICE[0][c & 0xFF]


_init_crc32()


cdef uint32_t crc32_update(uint32_t crc, const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """Raw CRC-32 register update (no initial or final inversion)."""
    cdef Py_ssize_t i = 0
    cdef uint32_t lo, hi
    if FOLD and n >= FOLD_MIN:
        return crcfold_update(&crcfold_icrc, crc, p, n)
    while n - i >= 8:
        lo = crc ^ (<uint32_t> p[i] | (<uint32_t> p[i + 1] << 8) | (<uint32_t> p[i + 2] << 16)
                    | (<uint32_t> p[i + 3] << 24))
        crc = (CRC32_SLICE[7][lo & 0xFF] ^ CRC32_SLICE[6][(lo >> 8) & 0xFF] ^ CRC32_SLICE[5][(lo >> 16) & 0xFF]
               ^ CRC32_SLICE[4][lo >> 24] ^ CRC32_SLICE[3][p[i + 4]] ^ CRC32_SLICE[2][p[i + 5]]
               ^ CRC32_SLICE[1][p[i + 6]] ^ CRC32_SLICE[0][p[i + 7]])
        i += 8
    while i < n:
        crc = (crc >> 8) ^ CRC32_SLICE[0][(crc ^ p[i]) & 0xFF]
        i += 1
    return crc


cdef enum:
    ICRC_COPY_MAX = 512  # packets up to this long get their ICRC from one pass over a patched copy


cdef uint32_t icrc_local(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """The ICRC (final value) over the first ``n`` octets of a packet without a GRH, its variant
    fields (LRH.VL, BTH.resv8a) as ones. A short packet is copied with those fields patched so the
    CRC is one pass, which the carry-less fold takes from 80 octets; the two passes of a masked
    header and the rest would each be too short for it (a 64-octet datagram's ICRC went by tables)."""
    cdef uint8_t buf[ICRC_COPY_MAX]
    cdef uint8_t head[20]
    if n <= ICRC_COPY_MAX:
        memcpy(buf, p, n)
        buf[0] |= 0xF0   # LRH.VL
        buf[12] = 0xFF   # BTH.resv8a
        return crc32_update(ONES32, buf, n) ^ ONES32
    memcpy(head, p, 20)
    head[0] |= 0xF0
    head[12] = 0xFF
    return crc32_update(crc32_update(ONES32, head, 20), p + 20, n - 20) ^ ONES32


cdef inline bint _pair_fits(Py_ssize_t n) noexcept nogil:
    return FOLD and FOLD_MIN <= n and (n < PAIR_MAX or crcfold_wide)


cdef void _icrc_vcrc(const uint8_t *p, Py_ssize_t n, uint32_t *icrc, uint32_t *vreg) noexcept nogil:
    """For a packet without a GRH whose first ``n`` octets the ICRC covers (``_pair_fits(n)``):
    its ICRC (final value) and the VCRC register over the same ``n`` octets, in one pass
    (fabric/crcfold.h crcfold_ib_local)."""
    icrc[0] = ONES32
    vreg[0] = 0xFFFF
    crcfold_ib_local(icrc, vreg, p, n)
    icrc[0] ^= ONES32


cdef void seal_local(uint8_t *p, Py_ssize_t plen) noexcept nogil:
    """Write the ICRC and VCRC of a packet without a GRH, ``plen`` octets with them."""
    cdef uint32_t crc, vreg
    cdef uint16_t v
    if _pair_fits(plen - 6):
        _icrc_vcrc(p, plen - 6, &crc, &vreg)
        _put32le(p + plen - 6, crc)
        v = <uint16_t> (crcfold_update(&crcfold_vcrc, vreg, p + plen - 6, 4) ^ 0xFFFF)
    else:
        crc = icrc_local(p, plen - 6)
        _put32le(p + plen - 6, crc)
        v = vcrc16_raw(p, plen - 2)
    p[plen - 2] = v & 0xFF
    p[plen - 1] = v >> 8


cdef bint crcs_ok_local(const uint8_t *p, Py_ssize_t plen) noexcept nogil:
    """Both CRCs of a packet without a GRH (``plen`` octets with them) are right."""
    cdef uint32_t crc, vreg
    cdef uint16_t v
    if _pair_fits(plen - 6):
        _icrc_vcrc(p, plen - 6, &crc, &vreg)
        v = <uint16_t> (crcfold_update(&crcfold_vcrc, vreg, p + plen - 6, 4) ^ 0xFFFF)
    else:
        v = vcrc16_raw(p, plen - 2)
        if p[plen - 2] != (v & 0xFF) or p[plen - 1] != (v >> 8):
            return False
        crc = icrc_local(p, plen - 6)
    return (p[plen - 2] == (v & 0xFF) and p[plen - 1] == (v >> 8) and p[plen - 6] == (crc & 0xFF)
            and p[plen - 5] == ((crc >> 8) & 0xFF) and p[plen - 4] == ((crc >> 16) & 0xFF)
            and p[plen - 3] == (crc >> 24))


cdef inline void _put32le(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = v >> 24


def crc32(const unsigned char[::1] data not None):
    """zlib.crc32 of ``data`` (for cross-checking the table)."""
    if data.shape[0] == 0:
        return 0
    return crc32_update(ONES32, &data[0], data.shape[0]) ^ ONES32


cdef Py_ssize_t write_ud_packet(uint8_t *out, const uint8_t *payload, Py_ssize_t n, unsigned int slid,
                                unsigned int dlid, unsigned int sl, unsigned int pkey, unsigned int dest_qp,
                                unsigned int src_qp, unsigned int qkey, unsigned int psn, unsigned int vl,
                                unsigned int se) noexcept nogil:
    """A complete UD SEND-only packet without GRH at ``out`` (LRH BTH DETH payload pad ICRC VCRC),
    octet for octet what fabric.wire.build_ud_packet makes. Returns its length."""
    cdef Py_ssize_t pad = (4 - (n & 3)) & 3
    cdef Py_ssize_t total = 28 + n + pad + 4  # LRH..ICRC
    cdef unsigned int words = <unsigned int> (total >> 2)
    cdef uint64_t w0, w1, w2
    cdef uint32_t w3
    if FOLD and crcfold_ud_fits(total - 4):
        # the header as four words: the packet and its CRCs from these and the payload in one pass
        # (crcfold_ud_write), not read back from octets just stored
        w0 = __builtin_bswap64((<uint64_t> ((vl & 0xF) << 4) << 56) | (<uint64_t> (((sl & 0xF) << 4) | 2) << 48)
                               | (<uint64_t> (dlid & 0xFFFF) << 32) | (<uint64_t> (words & 0x7FF) << 16)
                               | (slid & 0xFFFF))
        w1 = __builtin_bswap64((<uint64_t> 0x64 << 56) | (<uint64_t> ((pad << 4) | ((se & 1) << 7)) << 48)
                               | (<uint64_t> (pkey & 0xFFFF) << 32) | (dest_qp & 0xFFFFFF))
        w2 = __builtin_bswap64((<uint64_t> (psn & 0xFFFFFF) << 32) | qkey)
        w3 = __builtin_bswap32(src_qp & 0xFFFFFF)
        crcfold_ud_write(out, w0, w1, w2, w3, payload, n, pad)
        return total + 2
    # LRH: VL, LVer 0 | SL, LNH 2 | DLID | PktLen | SLID
    out[0] = (vl & 0xF) << 4
    out[1] = ((sl & 0xF) << 4) | 2
    out[2] = (dlid >> 8) & 0xFF
    out[3] = dlid & 0xFF
    out[4] = (words >> 8) & 0x7
    out[5] = words & 0xFF
    out[6] = (slid >> 8) & 0xFF
    out[7] = slid & 0xFF
    # BTH: opcode 0x64 | SE M PadCnt TVer | P_Key | resv8a | DestQP | A resv7 | PSN
    out[8] = 0x64
    out[9] = <uint8_t> ((pad << 4) | ((se & 1) << 7))
    out[10] = (pkey >> 8) & 0xFF
    out[11] = pkey & 0xFF
    out[12] = 0
    out[13] = (dest_qp >> 16) & 0xFF
    out[14] = (dest_qp >> 8) & 0xFF
    out[15] = dest_qp & 0xFF
    out[16] = 0
    out[17] = (psn >> 16) & 0xFF
    out[18] = (psn >> 8) & 0xFF
    out[19] = psn & 0xFF
    # DETH: Q_Key | resv8 | SrcQP
    out[20] = (qkey >> 24) & 0xFF
    out[21] = (qkey >> 16) & 0xFF
    out[22] = (qkey >> 8) & 0xFF
    out[23] = qkey & 0xFF
    out[24] = 0
    out[25] = (src_qp >> 16) & 0xFF
    out[26] = (src_qp >> 8) & 0xFF
    out[27] = src_qp & 0xFF
    memcpy(out + 28, payload, n)
    if pad:
        memset(out + 28 + n, 0, pad)
    seal_local(out, total + 2)
    return total + 2


def write_ud_packet_into(unsigned char[::1] out not None, Py_ssize_t offset, const unsigned char[::1] payload not None,
                         unsigned int slid, unsigned int dlid, unsigned int dest_qp, unsigned int src_qp,
                         unsigned int qkey, unsigned int pkey=0xFFFF, unsigned int sl=0, unsigned int psn=0):
    """``write_ud_packet`` into ``out`` at ``offset`` (for tests: what it writes, and only there).
    Returns the packet's length."""
    cdef Py_ssize_t n = payload.shape[0]
    if offset < 0 or offset + 28 + n + ((4 - (n & 3)) & 3) + 6 > out.shape[0]:
        raise ValueError("the packet does not fit in the buffer there")
    return write_ud_packet(&out[offset], &payload[0] if n else <const uint8_t *> b"", n, slid & 0xFFFF,
                           dlid & 0xFFFF, sl, pkey & 0xFFFF, dest_qp & 0xFFFFFF, src_qp & 0xFFFFFF, qkey,
                           psn & 0xFFFFFF, 0, 0)


def build_ud_packet_fast(const unsigned char[::1] payload not None, unsigned int slid, unsigned int dlid,
                         unsigned int dest_qp, unsigned int src_qp, unsigned int qkey, unsigned int pkey=0xFFFF,
                         unsigned int sl=0, unsigned int psn=0, unsigned int vl=0, unsigned int se=0):
    """The compiled twin of fabric.wire.build_ud_packet for packets without a GRH (the caller
    keeps the payload within PktLen's range)."""
    cdef Py_ssize_t n = payload.shape[0]
    cdef Py_ssize_t total = 28 + n + ((4 - (n & 3)) & 3) + 6
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    write_ud_packet(<uint8_t *> PyBytes_AS_STRING(out), &payload[0] if n else <const uint8_t *> b"", n,
                    slid & 0xFFFF, dlid & 0xFFFF, sl, pkey & 0xFFFF, dest_qp & 0xFFFFFF, src_qp & 0xFFFFFF, qkey,
                    psn & 0xFFFFFF, vl, se)
    return out


cdef uint16_t vcrc16_raw(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    cdef uint16_t crc = 0xFFFF
    cdef Py_ssize_t i = 0
    if FOLD and n >= FOLD_MIN:
        return <uint16_t> (crcfold_update(&crcfold_vcrc, 0xFFFF, p, n) ^ 0xFFFF)
    while n - i >= 8:
        crc = (SLICE[7][p[i] ^ (crc & 0xFF)] ^ SLICE[6][p[i + 1] ^ (crc >> 8)] ^ SLICE[5][p[i + 2]]
               ^ SLICE[4][p[i + 3]] ^ SLICE[3][p[i + 4]] ^ SLICE[2][p[i + 5]] ^ SLICE[1][p[i + 6]]
               ^ SLICE[0][p[i + 7]])
        i += 8
    while i < n:
        crc = (crc >> 8) ^ VCRC_TABLE[(crc ^ p[i]) & 0xFF]
        i += 1
    return crc ^ 0xFFFF


def vcrc16(const unsigned char[::1] data not None):
    """CRC-16/0x100B (reflected, seed and final XOR 0xFFFF) over ``data``."""
    if data.shape[0] == 0:
        return 0xFFFF ^ 0xFFFF
    return vcrc16_raw(&data[0], data.shape[0])


def vcrc_ok(const unsigned char[::1] packet not None):
    """True when the last two octets are the VCRC (least significant octet first) of the rest."""
    cdef Py_ssize_t n = packet.shape[0]
    cdef uint16_t c
    if n < 2:
        return False
    c = vcrc16_raw(&packet[0], n - 2)
    return packet[n - 2] == (c & 0xFF) and packet[n - 1] == (c >> 8)


def crcs_ok(const unsigned char[::1] packet not None):
    """True when both CRCs of ``packet`` (without a GRH) are right, as a receiver checks them."""
    if packet.shape[0] < 34:
        return False
    return crcs_ok_local(&packet[0], packet.shape[0])


# -- the SMI and the SMA on the wire (IBA 14.2.2) --------------------------------------------------
#
# A sweep is thousands of SMPs, and each crosses several switches' SMIs and one SMA. These do the
# per-SMP packet work in C: a directed-route SMP passing through a switch is patched in place (hop
# pointer, return path, CRCs), and an SMA's answer is built from the request's own octets. The rules
# are those of fabric.devices.smi; anything they do not cover here (every malformed or unusual SMP)
# is left to that full path, which classifies and counts it.

cdef enum:
    SMP_PACKET = 290  # LRH BTH DETH, a 256-octet MAD, ICRC VCRC: an SMP without a GRH
    SMP_MAD = 28      # where its MAD starts
    CLASS_LID = 0x01
    CLASS_DR = 0x81
    DR_D = 0x80       # the direction bit, top of the status field


cdef bint _smp_sound(const uint8_t *p, Py_ssize_t plen, unsigned int mclass) noexcept nogil:
    """A whole, well-formed SMP of class ``mclass`` on QP0: VL15, no GRH, UD SEND, DestQP and
    SrcQP 0, base and class version 1, both CRCs right."""
    if plen != SMP_PACKET or p[0] != 0xF0 or (p[1] & 3) != 2:
        return False
    if ((((p[4] & 7) << 8) | p[5]) * 4 + 2) != plen:
        return False
    if p[8] != 0x64 or (p[9] & 0x3F) != 0:  # UD SEND only; PadCnt 0, TVer 0
        return False
    if p[13] | p[14] | p[15] | p[25] | p[26] | p[27]:
        return False
    if p[SMP_MAD] != 1 or p[SMP_MAD + 1] != mclass or p[SMP_MAD + 2] != 1:
        return False
    return crcs_ok_local(p, plen)


cdef int _dr_transit_port(const uint8_t *p, Py_ssize_t plen, int nports) noexcept nogil:
    """Where a directed-route SMP passing through a switch leaves (C14-9:2 outgoing, C14-13:2
    returning): its egress port; 0 when it is not simply passing through (the full path decides);
    -1 when its path names a port this switch lacks (dropped as dr_path). ``nports`` counts port 0."""
    if (p[2] & p[3]) != 0xFF or not _smp_sound(p, plen, CLASS_DR):  # DLID permissive
        return 0
    return _dr_route_port(p, nports)


cdef int _dr_route_port(const uint8_t *p, int nports) noexcept nogil:
    """``_dr_transit_port`` for an SMP already known to be sound with a permissive DLID: its hop
    pointer and path alone decide (0: it does not go on from here)."""
    cdef unsigned int hp, hc, out
    hp = p[SMP_MAD + 6]
    hc = p[SMP_MAD + 7]
    if hc > 63:
        return 0
    if not p[SMP_MAD + 4] & DR_D:
        if not 1 <= hp < hc:
            return 0
        out = p[SMP_MAD + 128 + hp + 1]
    else:
        if not 2 <= hp <= hc:
            return 0
        out = p[SMP_MAD + 192 + hp - 1]
    if out < 1 or out >= <unsigned int> nports:
        return -1
    return out


cdef void _dr_transit_patch(uint8_t *q, int in_port) noexcept nogil:
    """The transit's changes to the copy that leaves: the hop pointer, the return path, the CRCs."""
    cdef unsigned int hp = q[SMP_MAD + 6]
    if not q[SMP_MAD + 4] & DR_D:
        q[SMP_MAD + 192 + hp] = in_port
        q[SMP_MAD + 6] = hp + 1
    else:
        q[SMP_MAD + 6] = hp - 1
    seal_local(q, SMP_PACKET)


def dr_transit(const unsigned char[::1] packet not None, int in_port, int num_ports):
    """A directed-route SMP arriving on ``in_port`` of a switch with ``num_ports`` ports:
    ``(egress port, the packet that leaves)`` when it passes through; ``(0, None)`` when it does not
    simply pass through (for the full path); ``(-1, None)`` when its path names no port here."""
    cdef Py_ssize_t n = packet.shape[0]
    cdef int out
    cdef bytes q
    if n != SMP_PACKET:
        return 0, None
    out = _dr_transit_port(&packet[0], n, num_ports + 1)
    if out <= 0:
        return out, None
    q = PyBytes_FromStringAndSize(<char *> &packet[0], n)
    _dr_transit_patch(<uint8_t *> PyBytes_AS_STRING(q), in_port)
    return out, q


SMP_REQUEST_DR = SMP_KIND_REQUEST_DR  # a directed-route request at the end of its path
SMP_REQUEST_LID = SMP_KIND_REQUEST_LID  # a LID-routed request
SMP_RESPONSE_DR = SMP_KIND_RESPONSE_DR  # a directed-route response back at the node that sent the request


def smp_arrival(const unsigned char[::1] packet not None):
    """What an SMP that reached QP0 of the node it is for is, when the compiled path can take it:
    SMP_REQUEST_DR (D=0, hop pointer = hop count >= 1, the DLID and both DR LIDs permissive: C14-9:3),
    SMP_REQUEST_LID (class 0x01), SMP_RESPONSE_DR (D=1, hop pointer 1, DrSLID permissive:
    C14-13:3); 0 for anything else, which the full path handles (and counts, if it drops it)."""
    if packet.shape[0] != SMP_PACKET:
        return 0
    return smp_kind(&packet[0], SMP_PACKET)


cdef int smp_kind(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """smp_arrival for C callers."""
    cdef unsigned int hp, hc
    if n != SMP_PACKET:
        return 0
    if p[SMP_MAD + 1] == CLASS_LID:
        return SMP_KIND_REQUEST_LID if _smp_sound(p, n, CLASS_LID) else 0
    if not _smp_sound(p, n, CLASS_DR):
        return 0
    hp = p[SMP_MAD + 6]
    hc = p[SMP_MAD + 7]
    if hc > 63 or (p[2] & p[3]) != 0xFF or (p[SMP_MAD + 32] & p[SMP_MAD + 33]) != 0xFF:
        return 0  # the LRH's DLID and the DrSLID permissive: no LID-routed part
    if not p[SMP_MAD + 4] & DR_D:
        if hc >= 1 and hp == hc and p[SMP_MAD + 34] == 0xFF and p[SMP_MAD + 35] == 0xFF:
            return SMP_KIND_REQUEST_DR
        return 0
    return SMP_KIND_RESPONSE_DR if hp == 1 else 0


def smp_answer(const unsigned char[::1] req not None, int in_port, const unsigned char[::1] data not None,
               unsigned int status):
    """The GetResp packet an SMA sends for the request ``req`` (SMP_REQUEST_DR or _LID, see
    smp_arrival), carrying the 64 octets ``data`` and ``status``: octet for octet the packet the full
    path builds (fabric.devices.base: _smp_reply, smi.dr_receive and dr_originate, build_reply).
    A directed-route answer leaves by ``in_port``; a LID-routed one is routed to the requester."""
    if req.shape[0] != SMP_PACKET or data.shape[0] != 64:
        raise ValueError("smp_answer needs a 290-octet SMP packet and 64 octets of data")
    return smp_answer_packet(&req[0], in_port, &data[0], status)


cdef bytes smp_answer_packet(const uint8_t *req, int in_port, const uint8_t *data, unsigned int status):
    """smp_answer for C callers: ``req`` is SMP_PACKET octets, ``data`` 64."""
    cdef uint8_t *q
    cdef bytes out
    cdef unsigned int m = SMP_MAD, hc, sl
    cdef bint dr
    out = PyBytes_FromStringAndSize(<char *> req, SMP_PACKET)
    q = <uint8_t *> PyBytes_AS_STRING(out)
    dr = req[m + 1] == CLASS_DR
    # LRH: VL15, back to the requester's LID; a directed route's answer has SL 0 and comes from the
    # permissive LID, a LID-routed one keeps the SL and comes from the LID it was sent to
    sl = 0 if dr else req[1] >> 4
    q[0] = 0xF0
    q[1] = (sl << 4) | 2
    q[2] = req[6]
    q[3] = req[7]
    q[6] = 0xFF if dr else req[2]
    q[7] = 0xFF if dr else req[3]
    # BTH: UD SEND only, no flags, the request's P_Key, DestQP 0, PSN 0; DETH: Q_Key 0, SrcQP 0
    q[8] = 0x64
    q[9] = 0
    memset(q + 12, 0, 16)
    # MAD: GetResp, the status, the data; reserved octets zero as the full path packs them
    q[m + 3] = 0x81
    q[m + 18] = 0
    q[m + 19] = 0
    if dr:
        q[m + 4] = DR_D | ((status >> 8) & 0x7F)
        q[m + 5] = status & 0xFF
        hc = req[m + 7]
        q[m + 192 + hc] = in_port  # the arrival (C14-9:3) records its port; the answer starts back from it
        q[m + 6] = hc
        memset(q + m + 36, 0, 28)
    else:
        q[m + 4] = (status >> 8) & 0xFF
        q[m + 5] = status & 0xFF
        memset(q + m + 32, 0, 32)
        memset(q + m + 128, 0, 128)
    memcpy(q + m + 64, &data[0], 64)
    seal_local(q, SMP_PACKET)
    return out


# -- a plain directed-route request (an SM's, or an ibsim client's: fabric/simproto/_simfast.pyx) ---

cdef enum:
    MAD_TID = 8
    DR_HOP_PTR = 6
    DR_HOP_CNT = 7
    DR_SLID = 32
    DR_PATH = 128


cdef bint _plain_dr_request(const uint8_t *m) noexcept:
    """A MAD ``fabric.devices.hca.send_dr_request`` takes on the octets: class 0x81, a request,
    D=0, hop pointer 0, hop count 1 to 63, both DR LIDs permissive."""
    return not (m[1] != CLASS_DR or m[3] & 0x80 or m[4] & 0x80 or m[DR_HOP_PTR]
                or not 1 <= m[DR_HOP_CNT] <= 63
                or m[DR_SLID] != 0xFF or m[DR_SLID + 1] != 0xFF or m[DR_SLID + 2] != 0xFF
                or m[DR_SLID + 3] != 0xFF)


cdef bytes _dr_request_packet(const uint8_t *m, bint with_tid, unsigned long long tid):
    """Such a MAD as the packet its HCA sends (``write_ud_packet``: VL15, both LIDs permissive,
    QP0, Q_Key 0), the originating node's step taken (hop pointer 1, C14-9:1), the TID replaced
    by ``tid`` when ``with_tid``."""
    cdef uint8_t mad[256]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, SMP_PACKET)
    cdef int k
    memcpy(mad, m, 256)
    mad[DR_HOP_PTR] = 1
    if with_tid:
        for k in range(8):
            mad[MAD_TID + k] = <uint8_t> (tid >> (8 * (7 - k)))
    write_ud_packet(<uint8_t *> PyBytes_AS_STRING(out), mad, 256, 0xFFFF, 0xFFFF, 0, 0xFFFF, 0, 0, 0, 0, 15, 0)
    return out


def dr_request_packet(const unsigned char[::1] mad not None):
    """``fabric.devices.hca.send_dr_request``'s packet, built in C: ``(port, packet)`` for a plain
    directed-route request of 256 octets (see there), the port its InitialPath[1] names; None for
    any other MAD (the caller's full path decides)."""
    if mad.shape[0] != 256 or not _plain_dr_request(&mad[0]):
        return None
    return mad[DR_PATH + 1], _dr_request_packet(&mad[0], False, 0)


# -- switch forwarding engine ------------------------------------------------------------------


cdef enum:
    PORT_LINK_UP = 1
    PORT_ACTIVE = 2
    PORT_ENF_IN = 4  # partition enforcement, inbound: the packet's P_Key must be in the port's table
    PORT_ENF_OUT = 8  # and outbound
    PKEY_SLOTS = 32  # P_Key table entries per port that ``port_pkeys`` holds
    MCAST_FIRST = 0xC000
    HDR_NO_GRH = 34  # LRH BTH DETH ICRC VCRC


cdef inline bint _fwd_same(const unsigned char *p, Py_ssize_t plen, int single,
                           const unsigned char[::1] lft, Py_ssize_t lft_top) noexcept:
    """Would this packet simply follow the ones before it (a data packet the LFT sends to the
    same port)? A False only ends the copy-free run early; every check is still made after."""
    cdef unsigned int dlid = (p[2] << 8) | p[3]
    if dlid > <unsigned int> lft_top or dlid >= <unsigned int> lft.shape[0]:
        return False
    return lft[dlid] == single


cdef inline bint _pkey_ok(const unsigned short *table, unsigned int pkey) noexcept nogil:
    """A switch port lets a P_Key through when its table has the same partition (the low 15
    bits): whether two limited members may talk is for the end ports to enforce."""
    cdef unsigned int base = pkey & 0x7FFF
    cdef int i
    if base == 0:
        return False
    for i in range(PKEY_SLOTS):
        if (table[i] & 0x7FFF) == base:
            return True
    return False


cdef inline bint _pkeys_pass(const unsigned char *p, unsigned int lnh, int in_port, unsigned int outp,
                             Py_ssize_t nports, const uint8_t *port_flags,
                             const unsigned short *port_pkeys) noexcept nogil:
    """Partition enforcement at the ingress port and at the egress port the LFT chose."""
    cdef unsigned int off = 8 + (40 if lnh == 3 else 0)
    cdef unsigned int pkey = (p[off + 2] << 8) | p[off + 3]
    if port_flags[in_port] & PORT_ENF_IN and not _pkey_ok(&port_pkeys[in_port * PKEY_SLOTS], pkey):
        return False
    if 0 < outp < <unsigned int> nports and port_flags[outp] & PORT_ENF_OUT and not _pkey_ok(
            &port_pkeys[outp * PKEY_SLOTS], pkey):
        return False
    return True


cdef int unicast_verdict(const uint8_t *p, Py_ssize_t plen, int in_port, bint ingress_active,
                         const uint8_t *lft, Py_ssize_t lft_len, Py_ssize_t lft_top, const uint8_t *port_flags,
                         Py_ssize_t nports, const unsigned int *port_mtu, const unsigned short *port_pkeys,
                         unsigned int own_lid_base, unsigned int own_lid_count, int *outp) noexcept nogil:
    """What a switch does with one packet that is not a directed-route SMP passing through:
    FWD_OUT by ``*outp``, FWD_DISCARD there (the egress port is not Active), FWD_RELAY (no route:
    PortRcvSwitchRelayErrors), or FWD_SLOW: the per-packet path classifies and drops it (other VL15
    packets, multicast, our own LID, a malformed LRH, a bad VCRC, over an MTU, a P_Key an enforcing
    port lacks, anything while the ingress port is not Active). ``port_pkeys``: NULL when no port
    enforces partitions. ``forward_burst`` and the device host's single-packet hop share it."""
    cdef unsigned int vl, lnh, dlid, pktlen, payload, o
    cdef uint16_t c
    if plen < HDR_NO_GRH:
        return FWD_SLOW
    vl = p[0] >> 4
    lnh = p[1] & 3
    dlid = (p[2] << 8) | p[3]
    pktlen = ((p[4] & 7) << 8) | p[5]
    if (not ingress_active or vl == 15 or lnh < 2 or pktlen * 4 + 2 != <unsigned int> plen or dlid >= MCAST_FIRST
            or dlid == 0 or (dlid - own_lid_base) < own_lid_count):
        return FWD_SLOW
    c = vcrc16_raw(p, plen - 2)
    payload = plen - HDR_NO_GRH - (40 if lnh == 3 else 0)
    o = lft[dlid] if dlid <= <unsigned int> lft_top and dlid < <unsigned int> lft_len else 0xFF
    if p[plen - 2] != (c & 0xFF) or p[plen - 1] != (c >> 8) or payload > port_mtu[in_port] or (
            0 < o < <unsigned int> nports and payload > port_mtu[o]) or (
            port_pkeys != NULL and not _pkeys_pass(p, lnh, in_port, o, nports, port_flags, port_pkeys)):
        return FWD_SLOW  # a bad VCRC, or over the MTU of the link it came on or is to leave by
    outp[0] = o
    if o == 0xFF or o == 0 or o >= <unsigned int> nports or o == <unsigned int> in_port:
        return FWD_RELAY
    if (port_flags[o] & (PORT_LINK_UP | PORT_ACTIVE)) != (PORT_LINK_UP | PORT_ACTIVE):
        return FWD_DISCARD
    return FWD_OUT


cdef _copy_block(dict out, Py_ssize_t *used, int port, Py_ssize_t packets, const unsigned char[::1] burst,
                 Py_ssize_t start, Py_ssize_t length, Py_ssize_t headroom, Py_ssize_t capacity):
    """Start ``port``'s segment with the ``packets`` length-prefixed packets at ``burst[start:]``
    (``length`` octets), copied as one block; room for ``capacity`` octets after the headroom."""
    cdef bytearray ba = PyByteArray_FromStringAndSize(NULL, headroom + capacity)
    if length:
        memcpy(PyByteArray_AS_STRING(ba) + headroom, &burst[start], length)
    out[port] = [packets, ba]
    used[port] = headroom + length


cdef uint8_t *_append(dict out, Py_ssize_t *used, int port, const uint8_t *p, Py_ssize_t plen,
                      Py_ssize_t headroom, Py_ssize_t capacity):
    """Append one packet to ``port``'s segment (made on first use, with room for ``capacity``
    octets of packets); returns where the packet's copy starts."""
    cdef list seg = out.get(port)
    cdef uint8_t *dst
    if seg is None:
        # sized for the whole burst up front: growing it packet by packet costs a realloc-and-copy
        # every few packets
        seg = [0, PyByteArray_FromStringAndSize(NULL, headroom + capacity)]
        out[port] = seg
        used[port] = headroom
    seg[0] += 1
    dst = <uint8_t *> PyByteArray_AS_STRING(seg[1]) + used[port]
    dst[0] = plen >> 8
    dst[1] = plen & 0xFF
    memcpy(dst + 2, p, plen)
    used[port] += 2 + plen
    return dst + 2


def forward_burst(const unsigned char[::1] burst not None, Py_ssize_t offset, Py_ssize_t count,
                  int in_port, const unsigned char[::1] lft not None, Py_ssize_t lft_top,
                  const unsigned char[::1] port_flags not None, const unsigned int[::1] port_mtu not None,
                  unsigned int own_lid_base, unsigned int own_lid_count, Py_ssize_t headroom,
                  object inplace=None, const unsigned short[::1] port_pkeys=None, bint ingress_active=True):
    """Forward the unicast data packets of a burst by the LFT, and the directed-route SMPs that
    pass through (patched as the SMI does), in C.

    ``burst[offset:]`` holds ``count`` packets, each preceded by a 16-bit length. Returns
    ``(out, slow, stats)``: ``out`` maps an egress port to ``[packets, segment]`` where the segment
    is a bytearray that starts with ``headroom`` octets for the outgoing burst header
    (``fabric.wire.burst.BURST_HEADROOM``), followed by
    the length-prefixed packets (so the host sends it without another copy); ``slow`` lists the packets the Python path
    must handle (other VL15 packets, multicast, our own LID, anything malformed, a P_Key an enforcing
    port's table lacks, every data packet when the ingress port is not Active, so that every drop is
    classified in one place); ``stats`` is (rcv_pkts, rcv_words, relay_errors, [(port, xmit_pkts,
    xmit_words, discards)], dr_path, dr_egress_down) for the counters and drops: the last two count
    directed-route SMPs whose path names no port here, and those whose egress link is down.

    A switch forwards a packet unchanged, so when every packet of the burst leaves by one port (the
    usual case: a flow's burst) nothing is copied: with ``inplace``, the bytearray ``burst`` views
    and ``offset == headroom``, that very buffer is the outgoing segment (the caller gives it up);
    without, the packets are copied as one block. Packets are copied one by one only from the
    first one that goes elsewhere.
    """
    cdef Py_ssize_t n = burst.shape[0]
    cdef Py_ssize_t off = offset
    cdef Py_ssize_t i, plen, nports = port_flags.shape[0]
    cdef const unsigned char *p
    cdef unsigned int dlid, pktlen, lnh, vl
    cdef int verdict, outp = 0
    cdef dict out = {}
    cdef list slow = []
    cdef list seg
    cdef unsigned long rcv_pkts = 0, rcv_words = 0, relay = 0, dr_path = 0, dr_down = 0
    cdef int dr_out
    cdef unsigned long xp[256]
    cdef unsigned long xw[256]
    cdef unsigned long xd[256]
    cdef Py_ssize_t used[256]
    cdef int k, nk = nports if nports < 256 else 256
    # while every packet so far went to port ``single``, nothing is copied yet
    cdef int single = -1
    cdef bint deferred = True
    cdef Py_ssize_t forwarded = 0
    for k in range(nk):  # every port index used below is under nports (a 36-port switch: 37 each)
        xp[k] = 0
        xw[k] = 0
        xd[k] = 0
        used[k] = 0
    for i in range(count):
        if off + 2 > n:
            raise ValueError("burst truncated")
        plen = (burst[off] << 8) | burst[off + 1]
        off += 2
        if off + plen > n:
            raise ValueError("burst truncated")
        p = &burst[off]
        if deferred and forwarded and (plen < HDR_NO_GRH or not _fwd_same(p, plen, single, lft, lft_top)):
            # the first packet that does not simply follow the others: copy those as one block
            _copy_block(out, used, single, forwarded, burst, offset, off - 2 - offset, headroom, n - offset)
            deferred = False
        if plen < HDR_NO_GRH:
            deferred = False
            slow.append(PyBytes_FromStringAndSize(<char *> p, plen))
            off += plen
            continue
        vl = p[0] >> 4
        lnh = p[1] & 3
        dlid = (p[2] << 8) | p[3]
        pktlen = ((p[4] & 7) << 8) | p[5]
        if vl == 15 and dlid == 0xFFFF and plen == SMP_PACKET:
            dr_out = _dr_transit_port(p, plen, nports)
            if dr_out:  # a directed-route SMP passing through: a patched copy leaves
                if deferred and forwarded:
                    _copy_block(out, used, single, forwarded, burst, offset, off - 2 - offset, headroom, n - offset)
                deferred = False
                rcv_pkts += 1
                rcv_words += (plen - 2) >> 2
                if dr_out < 0:
                    dr_path += 1
                elif not port_flags[dr_out] & PORT_LINK_UP:
                    dr_down += 1
                else:
                    xp[dr_out] += 1
                    xw[dr_out] += (plen - 2) >> 2
                    _dr_transit_patch(_append(out, used, dr_out, p, plen, headroom, n - offset), in_port)
                off += plen
                continue
        verdict = unicast_verdict(p, plen, in_port, ingress_active, &lft[0], lft.shape[0], lft_top, &port_flags[0],
                                  nports, &port_mtu[0], &port_pkeys[0] if port_pkeys is not None else NULL,
                                  own_lid_base, own_lid_count, &outp)
        if verdict == FWD_OUT and deferred:
            rcv_pkts += 1
            rcv_words += (plen - 2) >> 2
            single = outp
            forwarded += 1
            xp[outp] += 1
            xw[outp] += (plen - 2) >> 2
            off += plen
            continue
        if deferred and forwarded:
            _copy_block(out, used, single, forwarded, burst, offset, off - 2 - offset, headroom, n - offset)
        deferred = False
        if verdict == FWD_SLOW:
            slow.append(PyBytes_FromStringAndSize(<char *> p, plen))
            off += plen
            continue
        rcv_pkts += 1
        rcv_words += (plen - 2) >> 2
        if verdict == FWD_RELAY:
            relay += 1
        elif verdict == FWD_DISCARD:
            xd[outp] += 1
        else:
            xp[outp] += 1
            xw[outp] += (plen - 2) >> 2
            _append(out, used, outp, p, plen, headroom, n - offset)
        off += plen
    if off != n:
        raise ValueError("trailing octets after the burst's packets")
    if deferred and forwarded:
        if type(inplace) is bytearray and offset == headroom:
            out[single] = [forwarded, inplace]  # the burst itself: the header goes into its headroom
            used[single] = n
        else:
            _copy_block(out, used, single, forwarded, burst, offset, n - offset, headroom, n - offset)
    for k, seg in out.items():
        if seg[1] is not inplace:
            PyByteArray_Resize(seg[1], used[k])
    ports = [(k, xp[k], xw[k], xd[k]) for k in range(nk) if xp[k] or xd[k]]
    return out, slow, (rcv_pkts, rcv_words, relay, ports, dr_path, dr_down)


# -- counting and posting bursts -----------------------------------------------------------------

# IBA 16.1.3.5: PortXmitData, PortRcvData, PortXmitPkts and PortRcvPkts are 32 bits and saturate
# (fabric.devices.port._TOP_PKTS/_TOP_DATA; fabric.host._localfast checks that they agree)
TOP_PKTS = 0xFFFFFFFF
TOP_DATA = 0xFFFFFFFF


cdef void count_unicast(CountersCore counters, int direction, unsigned long long pkts,
                        unsigned long long words) except *:
    """PortCounterSet.add_rcv (``direction`` COUNT_RCV) or add_xmit (COUNT_XMIT), into the set's
    ``pending`` array, which its ``pc`` and ``ext`` fold into the dicts when read: no dict and no
    integer object per count."""
    cdef array.array q = counters.pending
    q.data.as_ulonglongs[2 * direction] += pkts
    q.data.as_ulonglongs[2 * direction + 1] += words


cdef enum:
    PHYS_STATE_LINKUP = 5  # PortPhysicalState LinkUp (fabric.wire.smp_attrs)
    PORT_STATE_ACTIVE = 4  # PortState Active

from fabric.wire.burst import Segment as _Segment

cdef object _new_segment = _Segment.__new__


def hca_post_segment(HCACore hca not None, qpn, port_num, count, words, buf):
    """``HCA.post_segment`` (fabric/devices/hca.py keeps the reference, which the std backend
    runs), compiled: the HCA method a compiled driver calls per burst it sends (a compiled driver
    cimports ``hca_post_segment_c``, the same without the call's argument parsing)."""
    hca_post_segment_c(hca, qpn, port_num, count, words, buf)


cdef void hca_post_segment_c(HCACore hca, object qpn, object port_num, object count, object words,
                             object buf) except *:
    hca_post_segment_qp(hca, hca.ports[port_num], hca.qps[qpn], port_num, count, words, buf)


cdef void hca_post_segment_qp(HCACore hca, PortCore port, QPCore qp, object port_num, unsigned long long count,
                              unsigned long long words, object buf) except *:
    """hca_post_segment_c for a driver that holds the port and the QP already (no lookups)."""
    if port.phys != PHYS_STATE_LINKUP or port.state != PORT_STATE_ACTIVE:
        hca.refuse_sends(port_num, count)
        return
    count_unicast(port.counters, COUNT_XMIT, count, words)
    qp.sent += count
    seg = _new_segment(_Segment)  # Segment(port_num, count, buf), without running its __init__ in Python
    seg.port, seg.count, seg.buf = port_num, count, buf
    hca.outbox.append(seg)
