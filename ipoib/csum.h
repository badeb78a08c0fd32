/* The bulk of an Internet checksum (RFC 1071) for the fast path: the sum of a buffer's native 32-bit
 * words in 64 bits, on AVX2 registers when the CPU has them (chosen once, at first use), and the same
 * while copying the buffer (as the kernel's csum_partial_copy), so that segmenting a TSO
 * super-packet reads each payload octet once. The caller folds the sum and swaps its octets into
 * network order (ipoib/_fastring.pxd: csum_add): the ones' complement sum commutes with swapping
 * the octets of every 16-bit word, so the native sum is as good as the big-endian one.
 *
 * Lengths here are multiples of 8; the caller adds the last octets itself. A sum of 32-bit words in
 * 64 bits cannot overflow below 4 GB. */
#ifndef IBFAB_CSUM_H
#define IBFAB_CSUM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>

static int ibf_csum_avx2 = -1;  /* -1: not yet asked */

static inline uint64_t ibf_sum32_scalar(const uint8_t *p, size_t n)
{
    uint64_t s = 0, w;
    for (size_t i = 0; i < n; i += 8) {
        memcpy(&w, p + i, 8);
        s += (w & 0xFFFFFFFFu) + (w >> 32);
    }
    return s;
}

static inline uint64_t ibf_copy_sum32_scalar(uint8_t *d, const uint8_t *p, size_t n)
{
    uint64_t s = 0, w;
    for (size_t i = 0; i < n; i += 8) {
        memcpy(&w, p + i, 8);
        memcpy(d + i, &w, 8);
        s += (w & 0xFFFFFFFFu) + (w >> 32);
    }
    return s;
}

/* Four 256-bit accumulators of 64-bit lanes; each 32-bit word widened by interleaving with zero. */
#define IBF_WIDEN_ADD(a, lo_acc, hi_acc, v, z) \
    do { lo_acc = _mm256_add_epi64(lo_acc, _mm256_unpacklo_epi32(v, z)); \
         hi_acc = _mm256_add_epi64(hi_acc, _mm256_unpackhi_epi32(v, z)); } while (0)

__attribute__((target("avx2")))
static uint64_t ibf_sum32_avx2(uint8_t *d, const uint8_t *p, size_t n)
{
    __m256i z = _mm256_setzero_si256(), a0 = z, a1 = z, a2 = z, a3 = z, v0, v1;
    uint64_t lanes[4];
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        v0 = _mm256_loadu_si256((const __m256i *)(p + i));
        v1 = _mm256_loadu_si256((const __m256i *)(p + i + 32));
        if (d) {
            _mm256_storeu_si256((__m256i *)(d + i), v0);
            _mm256_storeu_si256((__m256i *)(d + i + 32), v1);
        }
        IBF_WIDEN_ADD(a, a0, a1, v0, z);
        IBF_WIDEN_ADD(a, a2, a3, v1, z);
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    _mm256_storeu_si256((__m256i *)lanes, a0);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] +
           (d ? ibf_copy_sum32_scalar(d + i, p + i, n - i) : ibf_sum32_scalar(p + i, n - i));
}
#undef IBF_WIDEN_ADD

/* IBFAB_CSUM=scalar keeps to the 64-bit loop (the tests run both and compare them). */
static inline int ibf_have_avx2(void)
{
    if (ibf_csum_avx2 < 0) {
        const char *force = getenv("IBFAB_CSUM");
        __builtin_cpu_init();
        ibf_csum_avx2 = __builtin_cpu_supports("avx2") && !(force && strcmp(force, "scalar") == 0) ? 1 : 0;
    }
    return ibf_csum_avx2;
}

/* Sum of the native 32-bit words of p[:n] (n a multiple of 8). */
static inline uint64_t ibf_sum32(const uint8_t *p, size_t n)
{
    if (n >= 64 && ibf_have_avx2())
        return ibf_sum32_avx2(NULL, p, n);
    return ibf_sum32_scalar(p, n);
}

/* The same, copying p[:n] to d[:n] on the way (the two must not overlap). */
static inline uint64_t ibf_copy_sum32(uint8_t *d, const uint8_t *p, size_t n)
{
    if (n >= 64 && ibf_have_avx2())
        return ibf_sum32_avx2(d, p, n);
    return ibf_copy_sum32_scalar(d, p, n);
}

#endif
