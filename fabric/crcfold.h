/* Reflected CRCs by carry-less multiplication (PCLMULQDQ): the ICRC (CRC-32, 0x04C11DB7) and the
 * VCRC (CRC-16, 0x100B) of every packet, about five times faster than slicing-by-8 on long packets.
 *
 * The message is folded 64 octets at a time into four 128-bit accumulators, which are then folded
 * into one, and the last 16 octets go through a byte table: the CRC of the message is the CRC of
 * its folded remainder (folding is multiplication by x^n mod P, which the CRC does not see). A
 * length that is not a multiple of 16 is read as if zeros came first (see crcfold_update), so no
 * tail of single octets is left. The constants are computed here, at first use, from the
 * polynomial itself.
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

#define CRCFOLD_SHORT_BLOCKS 32  /* up to 512 octets: every block folded straight to the end */

typedef struct {
    int w;                  /* CRC width: 32 or 16 */
    uint32_t poly;          /* the generator without its x^w term, normal (MSB-first) order */
    uint32_t table[8][256]; /* reflected slicing-by-8 tables, for the last octets: table[k][b] is
                               octet b followed by k zero octets */
    uint64_t k128[2];       /* fold 128 bits: {x^191, x^127} mod P, reflected into 64 bits */
    uint64_t k512[2];       /* fold 512 bits: {x^575, x^511} mod P */
    uint64_t k2048[2];      /* fold 2048 bits: {x^2111, x^2047} mod P (four 512-bit registers) */
    uint64_t kd[CRCFOLD_SHORT_BLOCKS][2];  /* fold d 16-octet blocks at once: {x^(128d+63), x^(128d-1)} */
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
    for (int d = 1; d < CRCFOLD_SHORT_BLOCKS; d++) {
        c->kd[d][0] = crcfold_rev64(crcfold_xn_mod(128 * d + 63, poly, w), w);
        c->kd[d][1] = crcfold_rev64(crcfold_xn_mod(128 * d - 1, poly, w), w);
    }
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
    if (n >= 4) {  /* four at once: the VCRC's run over a packet's ICRC is exactly this */
        uint32_t lo = r ^ ((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
        r = c->table[3][lo & 0xFF] ^ c->table[2][(lo >> 8) & 0xFF] ^ c->table[1][(lo >> 16) & 0xFF]
            ^ c->table[0][lo >> 24];
        p += 4;
        n -= 4;
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

/* A length that is not a multiple of 16 is read as if z = (16 - n % 16) % 16 zero octets came
 * first, the register entering at the first real octet: zeros in front of a register of zeros
 * leave the CRC as it is, and the message then folds in whole 16-octet blocks to its very end,
 * with no tail of single octets (one dependent lookup after another, which cost as much as the
 * fold itself on a 124-octet packet). The first two blocks so read are built in registers (a
 * buffer written and read back at another offset stalls the loads); block i >= 2 is at
 * ``p + 16 * i - z``. n >= 32. */
static const uint8_t crcfold_shuf[48] = {
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80};

__attribute__((target("pclmul,sse4.1")))
static inline size_t crcfold_head(uint32_t r, const uint8_t *p, size_t n, __m128i or0, __m128i *x0, __m128i *x1,
                                  size_t *blocks)
{
    size_t z = (16 - (n & 15)) & 15;
    __m128i a = _mm_or_si128(_mm_loadu_si128((const __m128i *)p), or0);  /* fields a CRC sees as ones */
    a = _mm_xor_si128(a, _mm_cvtsi32_si128((int)r));
    __m128i b = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i up = _mm_loadu_si128((const __m128i *)(crcfold_shuf + 16 - z));    /* z zeros, then octets 0.. */
    __m128i down = _mm_loadu_si128((const __m128i *)(crcfold_shuf + 32 - z));  /* octets 16-z.., then zeros */
    *x0 = _mm_shuffle_epi8(a, up);
    *x1 = _mm_or_si128(_mm_shuffle_epi8(a, down), _mm_shuffle_epi8(b, up));
    *blocks = (n + z) / 16;
    return z;
}

/* The register for a 16-octet remainder: two steps of eight table lookups, from the register. */
__attribute__((target("pclmul,sse4.1")))
static inline uint32_t crcfold_final(const crcfold_t *c, __m128i x)
{
    uint64_t v[2] = {(uint64_t)_mm_cvtsi128_si64(x), (uint64_t)_mm_extract_epi64(x, 1)};
    uint32_t r = 0;
    for (int k = 0; k < 2; k++) {
        uint32_t lo = r ^ (uint32_t)v[k];
        uint32_t hi = (uint32_t)(v[k] >> 32);
        r = c->table[7][lo & 0xFF] ^ c->table[6][(lo >> 8) & 0xFF] ^ c->table[5][(lo >> 16) & 0xFF]
            ^ c->table[4][lo >> 24] ^ c->table[3][hi & 0xFF] ^ c->table[2][(hi >> 8) & 0xFF]
            ^ c->table[1][(hi >> 16) & 0xFF] ^ c->table[0][hi >> 24];
    }
    return r;
}

static inline __m128i crcfold_kd(const crcfold_t *c, size_t d)
{
    return _mm_set_epi64x((long long)c->kd[d][1], (long long)c->kd[d][0]);
}

/* From 256 octets on, on 512-bit registers (VPCLMULQDQ): 256 octets an iteration in four
 * registers, each folding four 16-octet lanes. Read as crcfold_update reads it (z zeros first), so
 * the message ends on a whole block and the last octets need no table steps one after another
 * (those cost as much as the fold of 2 KB). With ``two``, a second CRC ``b`` runs over the same
 * loads (an IB packet's ICRC and VCRC), ``a`` seeing the first 16 octets ORed with ``or_a``. */
#define CRCFOLD_Z4(x0, x1, x2, x3) \
    _mm512_inserti32x4(_mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(x0), x1, 1), x2, 2), x3, 3)
#define CRCFOLD_F512(z, k) _mm512_xor_si512(_mm512_clmulepi64_epi128(z, k, 0x00), _mm512_clmulepi64_epi128(z, k, 0x11))
#define CRCFOLD_K512(c, f) _mm512_broadcast_i32x4(_mm_set_epi64x((long long)(c)->f[1], (long long)(c)->f[0]))

__attribute__((target("vpclmulqdq,avx512f,pclmul,sse4.1"), always_inline))
static inline void crcfold_wide_run(const crcfold_t *a, const crcfold_t *b, uint32_t *ra, uint32_t *rb,
                                    const uint8_t *p, size_t n, __m128i or_a, const int two)
{
    __m128i a0, a1, b0 = _mm_setzero_si128(), b1 = _mm_setzero_si128(), x2, x3, xa, xb = _mm_setzero_si128();
    __m512i A0, A1, A2, A3, B0 = _mm512_setzero_si512(), B1, B2, B3, ka, kb = _mm512_setzero_si512(), d;
    size_t m, z = crcfold_head(*ra, p, n, or_a, &a0, &a1, &m);
    const uint8_t *q = p + 32 - z;  /* block 2 */
    size_t rem;
    if (two)
        crcfold_head(*rb, p, n, _mm_setzero_si128(), &b0, &b1, &m);
    x2 = _mm_loadu_si128((const __m128i *)q);
    x3 = _mm_loadu_si128((const __m128i *)(q + 16));
    A0 = CRCFOLD_Z4(a0, a1, x2, x3);
    A1 = B1 = _mm512_loadu_si512((const void *)(q + 32));
    A2 = B2 = _mm512_loadu_si512((const void *)(q + 96));
    A3 = B3 = _mm512_loadu_si512((const void *)(q + 160));
    if (two)
        B0 = CRCFOLD_Z4(b0, b1, x2, x3);
    q += 224;
    rem = 16 * m - 256;  /* m >= 16 */
    ka = CRCFOLD_K512(a, k2048);
    if (two)
        kb = CRCFOLD_K512(b, k2048);
    while (rem >= 256) {
        __m512i d0 = _mm512_loadu_si512((const void *)q), d1 = _mm512_loadu_si512((const void *)(q + 64));
        __m512i d2 = _mm512_loadu_si512((const void *)(q + 128)), d3 = _mm512_loadu_si512((const void *)(q + 192));
        A0 = _mm512_xor_si512(CRCFOLD_F512(A0, ka), d0);
        A1 = _mm512_xor_si512(CRCFOLD_F512(A1, ka), d1);
        A2 = _mm512_xor_si512(CRCFOLD_F512(A2, ka), d2);
        A3 = _mm512_xor_si512(CRCFOLD_F512(A3, ka), d3);
        if (two) {
            B0 = _mm512_xor_si512(CRCFOLD_F512(B0, kb), d0);
            B1 = _mm512_xor_si512(CRCFOLD_F512(B1, kb), d1);
            B2 = _mm512_xor_si512(CRCFOLD_F512(B2, kb), d2);
            B3 = _mm512_xor_si512(CRCFOLD_F512(B3, kb), d3);
        }
        q += 256;
        rem -= 256;
    }
    ka = CRCFOLD_K512(a, k512);
    A0 = _mm512_xor_si512(CRCFOLD_F512(A0, ka), A1);
    A0 = _mm512_xor_si512(CRCFOLD_F512(A0, ka), A2);
    A0 = _mm512_xor_si512(CRCFOLD_F512(A0, ka), A3);
    if (two) {
        kb = CRCFOLD_K512(b, k512);
        B0 = _mm512_xor_si512(CRCFOLD_F512(B0, kb), B1);
        B0 = _mm512_xor_si512(CRCFOLD_F512(B0, kb), B2);
        B0 = _mm512_xor_si512(CRCFOLD_F512(B0, kb), B3);
    }
    while (rem >= 64) {
        d = _mm512_loadu_si512((const void *)q);
        A0 = _mm512_xor_si512(CRCFOLD_F512(A0, ka), d);
        if (two)
            B0 = _mm512_xor_si512(CRCFOLD_F512(B0, kb), d);
        q += 64;
        rem -= 64;
    }
    /* the four lanes, each 16 octets after the one before, into one; then the last blocks */
    {
        __m128i k = _mm_set_epi64x((long long)a->k128[1], (long long)a->k128[0]);
        __m128i kbb = two ? _mm_set_epi64x((long long)b->k128[1], (long long)b->k128[0]) : k;
        xa = _mm512_extracti32x4_epi32(A0, 0);
        xa = _mm_xor_si128(crcfold_fold(xa, k), _mm512_extracti32x4_epi32(A0, 1));
        xa = _mm_xor_si128(crcfold_fold(xa, k), _mm512_extracti32x4_epi32(A0, 2));
        xa = _mm_xor_si128(crcfold_fold(xa, k), _mm512_extracti32x4_epi32(A0, 3));
        if (two) {
            xb = _mm512_extracti32x4_epi32(B0, 0);
            xb = _mm_xor_si128(crcfold_fold(xb, kbb), _mm512_extracti32x4_epi32(B0, 1));
            xb = _mm_xor_si128(crcfold_fold(xb, kbb), _mm512_extracti32x4_epi32(B0, 2));
            xb = _mm_xor_si128(crcfold_fold(xb, kbb), _mm512_extracti32x4_epi32(B0, 3));
        }
        while (rem >= 16) {
            __m128i x = _mm_loadu_si128((const __m128i *)q);
            xa = _mm_xor_si128(crcfold_fold(xa, k), x);
            if (two)
                xb = _mm_xor_si128(crcfold_fold(xb, kbb), x);
            q += 16;
            rem -= 16;
        }
    }
    *ra = crcfold_final(a, xa);
    if (two)
        *rb = crcfold_final(b, xb);
}

__attribute__((target("vpclmulqdq,avx512f,pclmul,sse4.1")))
static uint32_t crcfold_update_wide(const crcfold_t *c, uint32_t r, const uint8_t *p, size_t n)
{
    crcfold_wide_run(c, c, &r, &r, p, n, _mm_setzero_si128(), 0);
    return r;
}

__attribute__((target("vpclmulqdq,avx512f,pclmul,sse4.1")))
static void crcfold_pair_wide(const crcfold_t *a, const crcfold_t *b, uint32_t *ra, uint32_t *rb,
                              const uint8_t *p, size_t n, __m128i or_a)
{
    crcfold_wide_run(a, b, ra, rb, p, n, or_a, 1);
}

/* 32 to 16 * CRCFOLD_SHORT_BLOCKS octets: each block folded straight to the end by its own
 * distance, so the multiplications are independent of each other (the latency of one, not of a
 * chain of them). */
__attribute__((target("pclmul,sse4.1")))
static uint32_t crcfold_short(const crcfold_t *c, uint32_t r, const uint8_t *p, size_t n)
{
    __m128i x0, x1, acc;
    size_t m, z = crcfold_head(r, p, n, _mm_setzero_si128(), &x0, &x1, &m);
    if (m == 2)
        return crcfold_final(c, _mm_xor_si128(crcfold_fold(x0, crcfold_kd(c, 1)), x1));
    acc = _mm_loadu_si128((const __m128i *)(p + 16 * (m - 1) - z));
    acc = _mm_xor_si128(acc, crcfold_fold(x0, crcfold_kd(c, m - 1)));
    acc = _mm_xor_si128(acc, crcfold_fold(x1, crcfold_kd(c, m - 2)));
    for (size_t i = 2; i + 1 < m; i++)
        acc = _mm_xor_si128(acc, crcfold_fold(_mm_loadu_si128((const __m128i *)(p + 16 * i - z)),
                                              crcfold_kd(c, m - 1 - i)));
    return crcfold_final(c, acc);
}

/* The CRC register after ``n`` octets at ``p``, from register ``r`` (no inversions: the caller's). */
__attribute__((target("pclmul,sse4.1")))
static uint32_t crcfold_update(const crcfold_t *c, uint32_t r, const uint8_t *p, size_t n)
{
    if (n < 32)
        return crcfold_bytes(c, r, p, n);
    if (n <= 16 * CRCFOLD_SHORT_BLOCKS)
        return crcfold_short(c, r, p, n);
    if (crcfold_wide && n >= 512)
        return crcfold_update_wide(c, r, p, n);
    __m128i x0, x1, x2, x3, k;
    size_t m, z = crcfold_head(r, p, n, _mm_setzero_si128(), &x0, &x1, &m);
    const uint8_t *q = p + 32 - z;
    size_t rem = 16 * m - 32;  /* m > CRCFOLD_SHORT_BLOCKS here */
    __m128i k4 = _mm_set_epi64x((long long)c->k512[1], (long long)c->k512[0]);
    x2 = _mm_loadu_si128((const __m128i *)q);
    x3 = _mm_loadu_si128((const __m128i *)(q + 16));
    q += 32;
    rem -= 32;
    while (rem >= 64) {
        x0 = _mm_xor_si128(crcfold_fold(x0, k4), _mm_loadu_si128((const __m128i *)q));
        x1 = _mm_xor_si128(crcfold_fold(x1, k4), _mm_loadu_si128((const __m128i *)(q + 16)));
        x2 = _mm_xor_si128(crcfold_fold(x2, k4), _mm_loadu_si128((const __m128i *)(q + 32)));
        x3 = _mm_xor_si128(crcfold_fold(x3, k4), _mm_loadu_si128((const __m128i *)(q + 48)));
        q += 64;
        rem -= 64;
    }
    k = _mm_set_epi64x((long long)c->k128[1], (long long)c->k128[0]);
    x0 = _mm_xor_si128(crcfold_fold(x0, k), x1);
    x0 = _mm_xor_si128(crcfold_fold(x0, k), x2);
    x0 = _mm_xor_si128(crcfold_fold(x0, k), x3);
    while (rem >= 16) {
        x0 = _mm_xor_si128(crcfold_fold(x0, k), _mm_loadu_si128((const __m128i *)q));
        q += 16;
        rem -= 16;
    }
    return crcfold_final(c, x0);
}

/* Two CRCs in one pass over ``n`` octets at ``p``: ``a`` sees the first 16 octets ORed with
 * ``or_a``, ``b`` sees them as they are. An IB packet's ICRC and VCRC cover the same octets but for
 * the variant fields the ICRC sees as ones (LRH.VL, BTH.resv8a, within the first 16 when there is
 * no GRH); a receiver checks both and a sender seals both. ``*ra`` and ``*rb`` hold the registers
 * in and out. 48 <= n <= 16 * CRCFOLD_SHORT_BLOCKS. */
__attribute__((target("pclmul,sse4.1")))
static void crcfold_pair(const crcfold_t *a, const crcfold_t *b, uint32_t *ra, uint32_t *rb,
                         const uint8_t *p, size_t n, __m128i or_a)
{
    __m128i a0, a1, b0, b1, acca, accb, x;
    size_t m, z = crcfold_head(*ra, p, n, or_a, &a0, &a1, &m);
    crcfold_head(*rb, p, n, _mm_setzero_si128(), &b0, &b1, &m);
    x = _mm_loadu_si128((const __m128i *)(p + 16 * (m - 1) - z));  /* m >= 3 */
    acca = _mm_xor_si128(x, crcfold_fold(a0, crcfold_kd(a, m - 1)));
    accb = _mm_xor_si128(x, crcfold_fold(b0, crcfold_kd(b, m - 1)));
    acca = _mm_xor_si128(acca, crcfold_fold(a1, crcfold_kd(a, m - 2)));
    accb = _mm_xor_si128(accb, crcfold_fold(b1, crcfold_kd(b, m - 2)));
    for (size_t i = 2; i + 1 < m; i++) {
        x = _mm_loadu_si128((const __m128i *)(p + 16 * i - z));
        acca = _mm_xor_si128(acca, crcfold_fold(x, crcfold_kd(a, m - 1 - i)));
        accb = _mm_xor_si128(accb, crcfold_fold(x, crcfold_kd(b, m - 1 - i)));
    }
    *ra = crcfold_final(a, acca);
    *rb = crcfold_final(b, accb);
}

/* The ICRC register and the VCRC register over the first ``n`` octets of a packet without a GRH
 * (48 <= n; beyond 16 * CRCFOLD_SHORT_BLOCKS only with crcfold_wide, which the caller checks:
 * fabric/_wirefast.pyx _pair_fits). */
__attribute__((target("pclmul,sse4.1")))
static void crcfold_ib_local(uint32_t *icrc, uint32_t *vcrc, const uint8_t *p, size_t n)
{
    /* LRH.VL (the top half of octet 0) and BTH.resv8a (octet 12) */
    __m128i ones = _mm_set_epi8(0, 0, 0, (char)0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (char)0xF0);
    if (n <= 16 * CRCFOLD_SHORT_BLOCKS)
        crcfold_pair(&crcfold_icrc, &crcfold_vcrc, icrc, vcrc, p, n, ones);
    else
        crcfold_pair_wide(&crcfold_icrc, &crcfold_vcrc, icrc, vcrc, p, n, ones);
}

#endif
