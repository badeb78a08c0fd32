/* Reflected CRCs by carry-less multiplication (PCLMULQDQ): the ICRC (CRC-32, 0x04C11DB7) and the
 * VCRC (CRC-16, 0x100B) of every packet, about five times faster than slicing-by-8 on long packets.
 *
 * The message is folded 64 octets at a time into four 128-bit accumulators, which are then folded
 * into one, and the last 16 octets and the tail go through a byte table: the CRC of the message is
 * the CRC of its folded remainder (folding is multiplication by x^n mod P, which the CRC does not
 * see). The constants are computed here, at first use, from the polynomial itself.
 *
 * In the reflected bit order of these CRCs, a 64-bit word loaded from memory holds the coefficient of
 * x^(63-j) in bit j, and PCLMULQDQ of two such words yields their product times x; so the folding
 * constants are x^(d-1) mod P for a fold over d bits. fabric/_wirefast.pyx uses these when the CPU
 * has PCLMULQDQ and falls back to its slicing-by-8 tables otherwise; tests compare the two. */
#ifndef IBFAB_CRCFOLD_H
#define IBFAB_CRCFOLD_H

#include <stdint.h>
#include <string.h>
#include <immintrin.h>

typedef struct {
    int w;                  /* CRC width: 32 or 16 */
    uint32_t poly;          /* the generator without its x^w term, normal (MSB-first) order */
    uint32_t table[8][256]; /* reflected slicing-by-8 tables, for the last octets: table[k][b] is
                               octet b followed by k zero octets */
    uint64_t k128[2];       /* fold 128 bits: {x^191, x^127} mod P, reflected into 64 bits */
    uint64_t k512[2];       /* fold 512 bits: {x^575, x^511} mod P */
    uint64_t k2048[2];      /* fold 2048 bits: {x^2111, x^2047} mod P (four 512-bit registers) */
} crcfold_t;

static crcfold_t crcfold_icrc, crcfold_vcrc;
static int crcfold_ready = 0;      /* 1: the CPU has PCLMULQDQ and the constants are set */
static int crcfold_wide = 0;       /* 1: it has VPCLMULQDQ on 512-bit registers too */

static uint64_t crcfold_xn_mod(int n, uint32_t poly, int w)
{
    uint64_t r = 1, top = (uint64_t)1 << w;
    for (int i = 0; i < n; i++) {
        r <<= 1;
        if (r & top)
            r ^= top | poly;
    }
    return r;
}

static uint64_t crcfold_rev64(uint64_t k, int w)
{
    uint64_t out = 0;
    for (int j = 0; j < w; j++)
        if ((k >> j) & 1)
            out |= (uint64_t)1 << (63 - j);
    return out;
}

static uint32_t crcfold_reflect(uint32_t v, int w)
{
    uint32_t out = 0;
    for (int j = 0; j < w; j++)
        if ((v >> j) & 1)
            out |= (uint32_t)1 << (w - 1 - j);
    return out;
}

static void crcfold_setup(crcfold_t *c, uint32_t poly, int w)
{
    uint32_t rpoly = crcfold_reflect(poly, w);
    c->w = w;
    c->poly = poly;
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t r = b;
        for (int k = 0; k < 8; k++)
            r = (r & 1) ? (r >> 1) ^ rpoly : r >> 1;
        c->table[0][b] = r;
    }
    for (int k = 1; k < 8; k++)
        for (uint32_t b = 0; b < 256; b++)
            c->table[k][b] = (c->table[k - 1][b] >> 8) ^ c->table[0][c->table[k - 1][b] & 0xFF];
    c->k128[0] = crcfold_rev64(crcfold_xn_mod(191, poly, w), w);
    c->k128[1] = crcfold_rev64(crcfold_xn_mod(127, poly, w), w);
    c->k512[0] = crcfold_rev64(crcfold_xn_mod(575, poly, w), w);
    c->k512[1] = crcfold_rev64(crcfold_xn_mod(511, poly, w), w);
    c->k2048[0] = crcfold_rev64(crcfold_xn_mod(2111, poly, w), w);
    c->k2048[1] = crcfold_rev64(crcfold_xn_mod(2047, poly, w), w);
}

/* 1 when the folded CRCs can be used (and set up); 0 otherwise. */
static int crcfold_init(void)
{
    if (crcfold_ready)
        return 1;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("pclmul") || !__builtin_cpu_supports("sse4.1"))
        return 0;
    crcfold_setup(&crcfold_icrc, 0x04C11DB7u, 32);
    crcfold_setup(&crcfold_vcrc, 0x100Bu, 16);
    crcfold_wide = __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("avx512f");
    crcfold_ready = 1;
    return 1;
}

static inline uint32_t crcfold_bytes(const crcfold_t *c, uint32_t r, const uint8_t *p, size_t n)
{
    /* eight octets a step by independent lookups (the folded remainder and the tail: up to 31
     * octets, which one lookup after another made cost as much as folding 2 KB) */
    while (n >= 8) {
        uint32_t lo = r ^ ((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
        r = c->table[7][lo & 0xFF] ^ c->table[6][(lo >> 8) & 0xFF] ^ c->table[5][(lo >> 16) & 0xFF]
            ^ c->table[4][lo >> 24] ^ c->table[3][p[4]] ^ c->table[2][p[5]] ^ c->table[1][p[6]] ^ c->table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        r = (r >> 8) ^ c->table[0][(r ^ *p++) & 0xFF];
    return r;
}

__attribute__((target("pclmul,sse4.1")))
static inline __m128i crcfold_fold(__m128i x, __m128i k)
{
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

/* The register enters the message as an XOR over its first w/8 octets. */
static inline void crcfold_seed(const crcfold_t *c, uint8_t *head, uint32_t r)
{
    head[0] ^= r & 0xFF;
    head[1] ^= (r >> 8) & 0xFF;
    if (c->w == 32) {
        head[2] ^= (r >> 16) & 0xFF;
        head[3] ^= (r >> 24) & 0xFF;
    }
}

__attribute__((target("pclmul,sse4.1")))
static uint32_t crcfold_tail(const crcfold_t *c, __m128i x0, const uint8_t *p, size_t n)
{
    uint8_t head[16];
    __m128i k = _mm_set_epi64x((long long)c->k128[1], (long long)c->k128[0]);
    while (n >= 16) {
        x0 = _mm_xor_si128(crcfold_fold(x0, k), _mm_loadu_si128((const __m128i *)p));
        p += 16;
        n -= 16;
    }
    _mm_storeu_si128((__m128i *)head, x0);
    return crcfold_bytes(c, crcfold_bytes(c, 0, head, 16), p, n);
}

/* 256 octets an iteration in four 512-bit registers (VPCLMULQDQ), each folding four lanes. */
__attribute__((target("vpclmulqdq,avx512f,pclmul,sse4.1")))
static uint32_t crcfold_update_wide(const crcfold_t *c, uint32_t r, const uint8_t *p, size_t n)
{
    uint8_t head[64];
    __m512i z0, z1, z2, z3, k;
    __m128i x, k128;
    memcpy(head, p, 64);
    crcfold_seed(c, head, r);
    z0 = _mm512_loadu_si512((const void *)head);
    z1 = _mm512_loadu_si512((const void *)(p + 64));
    z2 = _mm512_loadu_si512((const void *)(p + 128));
    z3 = _mm512_loadu_si512((const void *)(p + 192));
    p += 256;
    n -= 256;
    k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)c->k2048[1], (long long)c->k2048[0]));
#define FOLD512(z, k) _mm512_xor_si512(_mm512_clmulepi64_epi128(z, k, 0x00), _mm512_clmulepi64_epi128(z, k, 0x11))
    while (n >= 256) {
        z0 = _mm512_xor_si512(FOLD512(z0, k), _mm512_loadu_si512((const void *)p));
        z1 = _mm512_xor_si512(FOLD512(z1, k), _mm512_loadu_si512((const void *)(p + 64)));
        z2 = _mm512_xor_si512(FOLD512(z2, k), _mm512_loadu_si512((const void *)(p + 128)));
        z3 = _mm512_xor_si512(FOLD512(z3, k), _mm512_loadu_si512((const void *)(p + 192)));
        p += 256;
        n -= 256;
    }
    k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)c->k512[1], (long long)c->k512[0]));
    z0 = _mm512_xor_si512(FOLD512(z0, k), z1);
    z0 = _mm512_xor_si512(FOLD512(z0, k), z2);
    z0 = _mm512_xor_si512(FOLD512(z0, k), z3);
    while (n >= 64) {
        z0 = _mm512_xor_si512(FOLD512(z0, k), _mm512_loadu_si512((const void *)p));
        p += 64;
        n -= 64;
    }
#undef FOLD512
    /* the four lanes, each 16 octets after the one before: fold them into one */
    k128 = _mm_set_epi64x((long long)c->k128[1], (long long)c->k128[0]);
    x = _mm512_extracti32x4_epi32(z0, 0);
    x = _mm_xor_si128(crcfold_fold(x, k128), _mm512_extracti32x4_epi32(z0, 1));
    x = _mm_xor_si128(crcfold_fold(x, k128), _mm512_extracti32x4_epi32(z0, 2));
    x = _mm_xor_si128(crcfold_fold(x, k128), _mm512_extracti32x4_epi32(z0, 3));
    return crcfold_tail(c, x, p, n);
}

/* The CRC register after ``n`` octets at ``p``, from register ``r`` (no inversions: the caller's). */
__attribute__((target("pclmul,sse4.1")))
static uint32_t crcfold_update(const crcfold_t *c, uint32_t r, const uint8_t *p, size_t n)
{
    if (n < 80)
        return crcfold_bytes(c, r, p, n);
    if (crcfold_wide && n >= 512)
        return crcfold_update_wide(c, r, p, n);
    uint8_t head[16];
    __m128i x0, x1, x2, x3, k;
    memcpy(head, p, 16);
    crcfold_seed(c, head, r);
    x0 = _mm_loadu_si128((const __m128i *)head);
    x1 = _mm_loadu_si128((const __m128i *)(p + 16));
    x2 = _mm_loadu_si128((const __m128i *)(p + 32));
    x3 = _mm_loadu_si128((const __m128i *)(p + 48));
    p += 64;
    n -= 64;
    k = _mm_set_epi64x((long long)c->k512[1], (long long)c->k512[0]);
    while (n >= 64) {
        x0 = _mm_xor_si128(crcfold_fold(x0, k), _mm_loadu_si128((const __m128i *)p));
        x1 = _mm_xor_si128(crcfold_fold(x1, k), _mm_loadu_si128((const __m128i *)(p + 16)));
        x2 = _mm_xor_si128(crcfold_fold(x2, k), _mm_loadu_si128((const __m128i *)(p + 32)));
        x3 = _mm_xor_si128(crcfold_fold(x3, k), _mm_loadu_si128((const __m128i *)(p + 48)));
        p += 64;
        n -= 64;
    }
    k = _mm_set_epi64x((long long)c->k128[1], (long long)c->k128[0]);
    x0 = _mm_xor_si128(crcfold_fold(x0, k), x1);
    x0 = _mm_xor_si128(crcfold_fold(x0, k), x2);
    x0 = _mm_xor_si128(crcfold_fold(x0, k), x3);
    return crcfold_tail(c, x0, p, n);
}

#endif
