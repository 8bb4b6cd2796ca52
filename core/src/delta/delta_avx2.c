/* delta_avx2.c — the delta scan with AVX2: 32 units per step from two
 * 32-byte loads of each side.  AVX2 has no 16-bit mask, so the two compare
 * results are packed to bytes (packs works per 128-bit lane: a permute puts
 * the quarters back in order) and movemask gives the 32-bit bitmap word.
 * The last units of a segment (fewer than 32) take the scalar steps.
 * Built with -mavx2 and only called after delta.c checked the CPU. */
#include <immintrin.h>

#include "delta_impl.h"

/* One bit per 16-bit lane of two compare results (lanes of r0 first). */
static inline uint32_t mask16x2(__m256i r0, __m256i r1)
{
    __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi16(r0, r1), 0xd8);
    return (uint32_t)_mm256_movemask_epi8(p);
}

/* Units [i, i+32): changed mask; *esc += escapes among them. */
static inline uint32_t ne32(const uint8_t *a, const uint8_t *b, size_t i, uint32_t *esc)
{
    const __m256i x0 = _mm256_loadu_si256((const __m256i *)(a + 2 * i));
    const __m256i x1 = _mm256_loadu_si256((const __m256i *)(a + 2 * i + 32));
    const __m256i y0 = _mm256_loadu_si256((const __m256i *)(b + 2 * i));
    const __m256i y1 = _mm256_loadu_si256((const __m256i *)(b + 2 * i + 32));
    const uint32_t ne = ~mask16x2(_mm256_cmpeq_epi16(x0, y0), _mm256_cmpeq_epi16(x1, y1));
    /* The difference fits int8 when (y - x + 128) has no high byte. */
    const __m256i c128 = _mm256_set1_epi16(128), hi = _mm256_set1_epi16((short)0xff00);
    const __m256i z = _mm256_setzero_si256();
    __m256i d0 = _mm256_and_si256(_mm256_add_epi16(_mm256_sub_epi16(y0, x0), c128), hi);
    __m256i d1 = _mm256_and_si256(_mm256_add_epi16(_mm256_sub_epi16(y1, x1), c128), hi);
    const uint32_t fits = mask16x2(_mm256_cmpeq_epi16(d0, z), _mm256_cmpeq_epi16(d1, z));
    *esc += (uint32_t)__builtin_popcount(ne & ~fits);
    return ne;
}

static void avx2_scan(const void *pa, const void *pb, size_t nu, uint8_t *bits, uint8_t *cnt,
                      uint32_t *k, uint32_t *e)
{
    const uint8_t *a = pa, *b = pb;
    memset(bits, 0, (nu + 63) / 64 * 8);
    memset(cnt, 0, (nu + RF_DELTA_BLOCK - 1) / RF_DELTA_BLOCK);
    uint32_t kk = 0, ee = 0;
    size_t i = 0;
    for (; i + RF_DELTA_BLOCK <= nu; i += RF_DELTA_BLOCK) {
        uint32_t m0 = ne32(a, b, i, &ee), m1 = ne32(a, b, i + 32, &ee);
        uint32_t m2 = ne32(a, b, i + 64, &ee), m3 = ne32(a, b, i + 96, &ee);
        uint64_t lo = m0 | (uint64_t)m1 << 32, hi = m2 | (uint64_t)m3 << 32;
        memcpy(bits + i / 8, &lo, 8);
        memcpy(bits + i / 8 + 8, &hi, 8);
        uint32_t c = (uint32_t)(__builtin_popcountll(lo) + __builtin_popcountll(hi));
        cnt[i / RF_DELTA_BLOCK] = (uint8_t)c;
        kk += c;
    }
    for (; i + 32 <= nu; i += 32) {
        uint32_t w = ne32(a, b, i, &ee), c = (uint32_t)__builtin_popcount(w);
        memcpy(bits + i / 8, &w, 4);
        cnt[i / RF_DELTA_BLOCK] = (uint8_t)(cnt[i / RF_DELTA_BLOCK] + c);
        kk += c;
    }
    rf_delta_scan_tail(a, b, i, nu, bits, cnt, &kk, &ee);
    *k = kk;
    *e = ee;
}

const struct rf_delta_kernels rf_delta_avx2_kernels = {
    .scan = avx2_scan,
};
