/* delta_avx512.c — the delta scan with AVX-512BW: 32 units per compare,
 * whose 32-bit mask is the bitmap word as stored (unit i at bit i), four
 * of them per 128-unit block; masked loads for the last units, which read
 * nothing past the segment.  Built with -mavx512f -mavx512bw -mavx512vl
 * and only called after delta.c checked the CPU. */
#include <immintrin.h>

#include "delta_impl.h"

/* Units [i, i+32) under load mask m: changed mask and escape count. */
static inline __mmask32 ne32(const uint8_t *a, const uint8_t *b, size_t i, __mmask32 m, uint32_t *esc)
{
    const __m512i x = _mm512_maskz_loadu_epi16(m, a + 2 * i), y = _mm512_maskz_loadu_epi16(m, b + 2 * i);
    const __mmask32 ne = _mm512_cmpneq_epi16_mask(x, y);
    /* (y - x + 128) above 255 as unsigned: the difference leaves int8 */
    const __m512i d = _mm512_add_epi16(_mm512_sub_epi16(y, x), _mm512_set1_epi16(128));
    *esc += (uint32_t)__builtin_popcount(_mm512_mask_cmpgt_epu16_mask(ne, d, _mm512_set1_epi16(255)));
    return ne;
}

static void avx512_scan(const void *pa, const void *pb, size_t nu, uint8_t *bits, uint8_t *cnt,
                        uint32_t *k, uint32_t *e)
{
    const uint8_t *a = pa, *b = pb;
    memset(bits, 0, (nu + 63) / 64 * 8);
    uint32_t kk = 0, ee = 0;
    size_t i = 0, blk = 0;
    /* Whole blocks: four independent compares in flight. */
    for (; i + RF_DELTA_BLOCK <= nu; i += RF_DELTA_BLOCK, blk++) {
        uint32_t m0 = ne32(a, b, i, ~0u, &ee), m1 = ne32(a, b, i + 32, ~0u, &ee);
        uint32_t m2 = ne32(a, b, i + 64, ~0u, &ee), m3 = ne32(a, b, i + 96, ~0u, &ee);
        uint64_t lo = m0 | (uint64_t)m1 << 32, hi = m2 | (uint64_t)m3 << 32;
        memcpy(bits + i / 8, &lo, 8);
        memcpy(bits + i / 8 + 8, &hi, 8);
        uint32_t c = (uint32_t)(__builtin_popcountll(lo) + __builtin_popcountll(hi));
        cnt[blk] = (uint8_t)c;
        kk += c;
    }
    if (i < nu) {
        uint32_t c = 0;
        for (; i < nu; i += 32) {
            size_t rem = nu - i;
            __mmask32 m = rem >= 32 ? ~0u : (__mmask32)((1u << rem) - 1);
            uint32_t w = ne32(a, b, i, m, &ee);
            memcpy(bits + i / 8, &w, 4);
            c += (uint32_t)__builtin_popcount(w);
        }
        cnt[blk] = (uint8_t)c;
        kk += c;
    }
    *k = kk;
    *e = ee;
}

const struct rf_delta_kernels rf_delta_avx512_kernels = {
    .scan = avx512_scan,
};
