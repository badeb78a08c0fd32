# cython: language_level=3
"""Compiled helpers for the fabric's per-packet work: VCRC and the switch forwarding engine.

:mod:`fabric.wire.crc` uses these when built and falls back to pure Python otherwise; the results
are identical (tests/test_wire_crc.py compares them).
"""

from libc.stdint cimport uint16_t, uint8_t

cdef uint16_t VCRC_TABLE[256]


cdef void _init_table():
    cdef int byte, bit
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


_init_table()


cdef inline uint16_t vcrc16_raw(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    cdef uint16_t crc = 0xFFFF
    cdef Py_ssize_t i
    for i in range(n):
        crc = (crc >> 8) ^ VCRC_TABLE[(crc ^ p[i]) & 0xFF]
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
