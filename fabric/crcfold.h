/* Reflected CRCs by carry-less multiplication (PCLMULQDQ): the ICRC (CRC-32, 0x04C11DB7) and the
 * VCRC (CRC-16, 0x100B) of every packet, about five times faster than slicing-by-8 on long packets.
 *
 * The message is folded 64 octets at a time into four 128-bit accumulators, which are then folded
 * into one, and the last 16 octets are reduced by Barrett's method: the CRC of the message is the
 * CRC of its folded remainder (folding is multiplication by x^n mod P, which the CRC does not see). A
 * length that is not a multiple of 16 is read as if zeros came first (see crcfold_update), so no
 * tail of single octets is left. The constants are computed here, at first use, from the
 * polynomial itself.
 *
 * In the reflected bit order of these CRCs, a 64-bit word loaded from memory holds the coefficient of
 * x^(63-j) in bit j, and PCLMULQDQ of two such words yields their product times x; so the folding
 * constants are x^(d-1) mod P for a fold over d bits. fabric/_wirefast.pyx uses these when the CPU
 * has PCLMULQDQ and falls back to its slicing-by-8 tables otherwise; tests compare the two (and,
 * with the payload against unmapped pages, that the masked 512-bit reads stay inside it). */
#ifndef IBFAB_CRCFOLD_H
#define IBFAB_CRCFOLD_H

#include <stdint.h>
#include <string.h>
#include <immintrin.h>

#define CRCFOLD_SHORT_BLOCKS 32  /* up to 512 octets: every block folded straight to the end */

typedef struct {
    int w;                  /* CRC width: 32 or 16 */
    uint32_t poly;          /* the generator without its x^w term, normal (MSB-first) order */
    uint32_t table[8][256]; /* reflected slicing-by-8 tables, for runs too short to fold: table[k][b]
                               is octet b followed by k zero octets */
    uint64_t k128[2];       /* fold 128 bits: {x^191, x^127} mod P, reflected into 64 bits */
    uint64_t k512[2];       /* fold 512 bits: {x^575, x^511} mod P */
    uint64_t kfin;          /* crcfold_final_barrett: fold 64 bits over 64 + w, x^(63+w) mod P; */
    uint64_t mu;            /* floor(x^(64+w) / P) without its x^64 term; */
    uint64_t p0;            /* and P without its x^w term */
    uint64_t k2048[2];      /* fold 2048 bits: {x^2111, x^2047} mod P (four 512-bit registers) */
    uint64_t kd[CRCFOLD_SHORT_BLOCKS][2];  /* fold d 16-octet blocks at once: {x^(128d+63), x^(128d-1)} */
    /* kd from the far end, for 512-bit registers: lane s folds over CRCFOLD_SHORT_BLOCKS - s blocks,
     * so the constants of blocks 0.. of an m-block message are the contiguous lanes from
     * CRCFOLD_SHORT_BLOCKS + 1 - m on; the last block's lane (and the padding after it) is zero */
    uint64_t kz[CRCFOLD_SHORT_BLOCKS + 4][2] __attribute__((aligned(64)));
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
    c->kfin = crcfold_rev64(crcfold_xn_mod(63 + w, poly, w), w);
    {  /* floor(x^(64+w) / P) by long division; its x^64 term is left out */
        unsigned __int128 num = (unsigned __int128)1 << (64 + w), gen = ((unsigned __int128)1 << w) | poly;
        uint64_t q = 0;
        for (int d = 64; d >= 0; d--)
            if ((num >> (d + w)) & 1) {
                num ^= gen << d;
                if (d < 64)
                    q |= (uint64_t)1 << d;
            }
        c->mu = crcfold_rev64(q, 64);
        c->p0 = crcfold_rev64(poly, w);
    }
    c->k2048[0] = crcfold_rev64(crcfold_xn_mod(2111, poly, w), w);
    c->k2048[1] = crcfold_rev64(crcfold_xn_mod(2047, poly, w), w);
    for (int d = 1; d < CRCFOLD_SHORT_BLOCKS; d++) {
        c->kd[d][0] = crcfold_rev64(crcfold_xn_mod(128 * d + 63, poly, w), w);
        c->kd[d][1] = crcfold_rev64(crcfold_xn_mod(128 * d - 1, poly, w), w);
    }
    memset(c->kz, 0, sizeof c->kz);
    for (int s = 1; s < CRCFOLD_SHORT_BLOCKS; s++) {
        c->kz[s][0] = c->kd[CRCFOLD_SHORT_BLOCKS - s][0];
        c->kz[s][1] = c->kd[CRCFOLD_SHORT_BLOCKS - s][1];
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
    crcfold_wide = __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("avx512f")
                   && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
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

/* The register for a 16-octet remainder X = H x^64 + L (H its first eight octets), by Barrett
 * reduction in vector registers: one multiplication folds H over 64 + w bits, leaving
 * T = X x^w mod P in 64 + w bits; q = floor(T / P) comes from T's top 64 bits and x^(64+w) / P,
 * and the register is T - q P in its low w bits. Three multiplications one after another and no
 * table: a third of the instructions of table lookups (two steps of eight, then one step of eight
 * after the fold), and a packet's pair of CRCs a third faster for it. ``w`` is 32 or 16 (a whole
 * number of octets, for the shifts across the register's two halves). */
__attribute__((target("pclmul,sse4.1"), always_inline))
static inline uint32_t crcfold_final_barrett(const crcfold_t *c, __m128i x, const int w)
{
    __m128i k = _mm_set_epi64x((long long)c->p0, (long long)c->kfin);
    __m128i t = _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00),
                              w == 32 ? _mm_srli_si128(_mm_unpackhi_epi64(_mm_setzero_si128(), x), 4)
                                      : _mm_srli_si128(_mm_unpackhi_epi64(_mm_setzero_si128(), x), 2));
    __m128i t64 = w == 32 ? _mm_srli_si128(t, 4) : _mm_srli_si128(t, 6);  /* T's top 64 bits, low lane */
    __m128i q = _mm_xor_si128(t64, _mm_slli_epi64(_mm_clmulepi64_si128(t64, _mm_cvtsi64_si128((long long)c->mu),
                                                                       0x00), 1));
    __m128i qp = _mm_clmulepi64_si128(q, k, 0x10);  /* q times P0 (k's high lane) */
    __m128i r = _mm_xor_si128(_mm_srli_epi64(t, 64 - w), _mm_srli_epi64(qp, 63 - w));
    return (uint32_t)_mm_extract_epi32(r, 2) & (w == 32 ? 0xFFFFFFFFu : 0xFFFFu);
}

/* The same, the width read from the CRC. */
__attribute__((target("pclmul,sse4.1")))
static inline uint32_t crcfold_final(const crcfold_t *c, __m128i x)
{
    return c->w == 32 ? crcfold_final_barrett(c, x, 32) : crcfold_final_barrett(c, x, 16);
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

/* The four 128-bit lanes of a 512-bit accumulator summed, with the message's last block (which
 * is not multiplied: its distance to the end is zero): the remainder crcfold_final reduces. */
__attribute__((target("avx512f,avx512vl,sse4.1"), always_inline))
static inline __m128i crcfold_lanes(__m512i acc, __m128i last)
{
    __m256i y = _mm256_xor_si256(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
    return _mm_xor_si128(_mm_xor_si128(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1)), last);
}

/* 48 to 16 * CRCFOLD_SHORT_BLOCKS octets on 512-bit registers: as crcfold_short, each 16-octet
 * block folded straight to the end by its own distance, but four blocks a multiplication (a 92-octet
 * packet's two CRCs: 8 multiplications instead of 24). The message is read as four-block lanes from
 * ``p - z``, the octets outside it masked off (a masked-off element is never read, so nothing
 * before ``p`` or after ``p + n`` is touched); blocks 0 and 1 come from crcfold_head's registers.
 * The last block's constant is zero, and it joins the sum as it is. With ``two`` as in
 * crcfold_wide_run. */
__attribute__((target("vpclmulqdq,avx512f,avx512vl,pclmul,sse4.1"), always_inline))
static inline void crcfold_zmm_run(const crcfold_t *a, const crcfold_t *b, uint32_t *ra, uint32_t *rb,
                                   const uint8_t *p, size_t n, __m128i or_a, const int two)
{
    __m128i a0, a1, b0 = _mm_setzero_si128(), b1 = _mm_setzero_si128(), last;
    __m512i A, B = _mm512_setzero_si512(), D, accA, accB = _mm512_setzero_si512();
    size_t m, z = crcfold_head(*ra, p, n, or_a, &a0, &a1, &m);
    const uint8_t *base = p - z;  /* block i at base + 16 i, for i >= 2 */
    size_t s0 = CRCFOLD_SHORT_BLOCKS + 1 - m;  /* block 0's constant; 3 <= m <= CRCFOLD_SHORT_BLOCKS */
    if (two)
        crcfold_head(*rb, p, n, _mm_setzero_si128(), &b0, &b1, &m);
    /* qword masks: blocks 2 and 3 of the first lane group (those below m) */
    __mmask8 k = (__mmask8)(m >= 4 ? 0xF0 : 0x30);
    D = _mm512_maskz_loadu_epi64(k, (const void *)base);
    A = _mm512_inserti32x4(_mm512_inserti32x4(D, a0, 0), a1, 1);
    accA = CRCFOLD_F512(A, _mm512_loadu_si512((const void *)a->kz[s0]));
    if (two) {
        B = _mm512_inserti32x4(_mm512_inserti32x4(D, b0, 0), b1, 1);
        accB = CRCFOLD_F512(B, _mm512_loadu_si512((const void *)b->kz[s0]));
    }
    for (size_t j = 4; j < m; j += 4) {
        size_t left = m - j;
        k = (__mmask8)(left >= 4 ? 0xFF : (1u << (2 * left)) - 1);
        D = _mm512_maskz_loadu_epi64(k, (const void *)(base + 16 * j));
        accA = _mm512_xor_si512(accA, CRCFOLD_F512(D, _mm512_loadu_si512((const void *)a->kz[s0 + j])));
        if (two)
            accB = _mm512_xor_si512(accB, CRCFOLD_F512(D, _mm512_loadu_si512((const void *)b->kz[s0 + j])));
    }
    last = _mm_loadu_si128((const __m128i *)(p + n - 16));  /* block m - 1 (m >= 3: past the head's) */
    *ra = crcfold_final(a, crcfold_lanes(accA, last));
    if (two)
        *rb = crcfold_final(b, crcfold_lanes(accB, last));
}

__attribute__((target("vpclmulqdq,avx512f,avx512vl,pclmul,sse4.1")))
static uint32_t crcfold_short_zmm(const crcfold_t *c, uint32_t r, const uint8_t *p, size_t n)
{
    crcfold_zmm_run(c, c, &r, &r, p, n, _mm_setzero_si128(), 0);
    return r;
}

__attribute__((target("vpclmulqdq,avx512f,avx512vl,pclmul,sse4.1")))
static void crcfold_pair_zmm(const crcfold_t *a, const crcfold_t *b, uint32_t *ra, uint32_t *rb,
                             const uint8_t *p, size_t n, __m128i or_a)
{
    crcfold_zmm_run(a, b, ra, rb, p, n, or_a, 1);
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
        return n >= 48 && crcfold_wide ? crcfold_short_zmm(c, r, p, n) : crcfold_short(c, r, p, n);
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
    if (n <= 16 * CRCFOLD_SHORT_BLOCKS && crcfold_wide)
        crcfold_pair_zmm(&crcfold_icrc, &crcfold_vcrc, icrc, vcrc, p, n, ones);
    else if (n <= 16 * CRCFOLD_SHORT_BLOCKS)
        crcfold_pair(&crcfold_icrc, &crcfold_vcrc, icrc, vcrc, p, n, ones);
    else
        crcfold_pair_wide(&crcfold_icrc, &crcfold_vcrc, icrc, vcrc, p, n, ones);
}

/* A UD packet without a GRH written at ``out`` with its ICRC and VCRC, in one pass: ``w0``-``w3``
 * hold its 28 header octets as they go on the wire (little-endian words), ``payload`` its ``np``
 * payload octets, ``pad`` the zeros after them. The CRCs come from the header in registers and from
 * the payload where it already was, and each payload octet is stored from the register the CRC
 * read it into (no copy of its own). Read back from a packet whose header was just written field
 * by field, a CRC waited for every one of those stores to reach the cache (a 16-octet load over
 * several smaller stores is not forwarded from them). Needs crcfold_wide and
 * 48 <= 28 + np + pad <= 16 * CRCFOLD_SHORT_BLOCKS (crcfold_ud_fits); the payload must not
 * overlap ``out``. */
static inline int crcfold_ud_fits(size_t n)
{
    return crcfold_wide && n >= 48 && n <= 16 * CRCFOLD_SHORT_BLOCKS;
}

static inline uint64_t crcfold_bits(size_t from, size_t to)  /* bits from..to-1 of a 64-bit mask */
{
    uint64_t up = to >= 64 ? ~0ull : (1ull << to) - 1;
    return from >= 64 ? 0 : up & ~((1ull << from) - 1);
}

__attribute__((target("vpclmulqdq,avx512f,avx512vl,avx512bw,pclmul,sse4.1")))
static void crcfold_ud_write(uint8_t *out, uint64_t w0, uint64_t w1, uint64_t w2, uint32_t w3,
                             const uint8_t *payload, size_t np, size_t pad)
{
    const crcfold_t *a = &crcfold_icrc, *b = &crcfold_vcrc;
    const size_t n = 28 + np + pad, z = (16 - (n & 15)) & 15, m = (n + z) / 16;
    const size_t s0 = CRCFOLD_SHORT_BLOCKS + 1 - m;
    /* octets 0-15, 16-31 (the payload's first four at 28) and 32-47 of the message, in registers */
    __m128i h0 = _mm_set_epi64x((long long)w1, (long long)w0);
    int32_t first4;
    memcpy(&first4, payload, 4);
    __m128i h1 = _mm_insert_epi32(_mm_set_epi64x((long long)w3, (long long)w2), first4, 3);
    __m128i h2 = _mm_maskz_loadu_epi8((__mmask16)crcfold_bits(0, np - 4), payload + 4);
    __m128i ones = _mm_set_epi8(0, 0, 0, (char)0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (char)0xF0);
    __m128i ha = _mm_xor_si128(_mm_or_si128(h0, ones), _mm_cvtsi32_si128((int)0xFFFFFFFF));
    __m128i hb = _mm_xor_si128(h0, _mm_cvtsi32_si128(0xFFFF));
    __m128i up = _mm_loadu_si128((const __m128i *)(crcfold_shuf + 16 - z));
    __m128i down = _mm_loadu_si128((const __m128i *)(crcfold_shuf + 32 - z));
    __m128i x1r = _mm_shuffle_epi8(h1, up), x2 = _mm_or_si128(_mm_shuffle_epi8(h1, down), _mm_shuffle_epi8(h2, up));
    __m128i a0 = _mm_shuffle_epi8(ha, up), a1 = _mm_or_si128(_mm_shuffle_epi8(ha, down), x1r);
    __m128i b0 = _mm_shuffle_epi8(hb, up), b1 = _mm_or_si128(_mm_shuffle_epi8(hb, down), x1r);
    _mm_storeu_si128((__m128i *)out, h0);
    _mm_storeu_si128((__m128i *)(out + 16), h1);
    _mm_mask_storeu_epi8(out + 32, (__mmask16)crcfold_bits(0, np - 4 + pad), h2);  /* the pad's zeros too */
    /* block i >= 3 is at sbase + 16 i, all of it payload (or the zeros after it); offset j from
     * sbase is the packet's octet j - z */
    const uint8_t *sbase = payload - 28 - z;
    uint8_t *obase = out - z;
    const size_t hi = 28 + z + np;  /* the payload's end, as an offset from sbase (it starts at 28 + z) */
    __m512i D, A, B, accA, accB;
    __m128i last;
    size_t g;
    D = _mm512_maskz_loadu_epi8((__mmask64)crcfold_bits(48, hi), sbase);  /* block 3 alone */
    _mm512_mask_storeu_epi8(obase, (__mmask64)crcfold_bits(48, hi + pad), D);
    D = _mm512_inserti32x4(D, x2, 2);
    A = _mm512_inserti32x4(_mm512_inserti32x4(D, a0, 0), a1, 1);
    B = _mm512_inserti32x4(_mm512_inserti32x4(D, b0, 0), b1, 1);
    accA = CRCFOLD_F512(A, _mm512_loadu_si512((const void *)a->kz[s0]));
    accB = CRCFOLD_F512(B, _mm512_loadu_si512((const void *)b->kz[s0]));
    for (g = 64; g < 16 * m; g += 64) {  /* hi > g: the group holds at least one block */
        D = _mm512_maskz_loadu_epi8((__mmask64)crcfold_bits(0, hi - g), sbase + g);
        _mm512_mask_storeu_epi8(obase + g, (__mmask64)crcfold_bits(0, hi + pad - g), D);
        accA = _mm512_xor_si512(accA, CRCFOLD_F512(D, _mm512_loadu_si512((const void *)a->kz[s0 + g / 16])));
        accB = _mm512_xor_si512(accB, CRCFOLD_F512(D, _mm512_loadu_si512((const void *)b->kz[s0 + g / 16])));
    }
    /* the last block, whose constant is zero: octets n - 16 .. n, the zeros of the pad masked in */
    if (m == 3)
        last = x2;
    else
        last = _mm_maskz_loadu_epi8((__mmask16)((1u << (16 - pad)) - 1), payload + np + pad - 16);
    uint32_t icrc = crcfold_final_barrett(a, crcfold_lanes(accA, last), 32) ^ 0xFFFFFFFFu;
    uint8_t ile[4];
    memcpy(ile, &icrc, 4);  /* little-endian, as the ICRC goes on the wire */
    /* then the VCRC over the ICRC's four octets */
    uint32_t v = crcfold_bytes(b, crcfold_final_barrett(b, crcfold_lanes(accB, last), 16), ile, 4) ^ 0xFFFF;
    memcpy(out + n, ile, 4);
    out[n + 4] = (uint8_t)v;
    out[n + 5] = (uint8_t)(v >> 8);
}

#endif
