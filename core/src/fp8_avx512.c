/* fp8_avx512.c — AVX-512 (F, BW, VL) FP8 kernels: 16 fp32 lanes per step,
 * masked loads and stores for the edge columns, so no scalar tail.  Built
 * with -mavx512f -mavx512bw -mavx512vl and only called after fp8.c checked
 * the CPU; the integer steps of the cast are those of rf_e4m3_scalar. */
#include <immintrin.h>

#include "fp8_impl.h"
#include "refit/fp8.h"

_Static_assert(REFIT_FP8_BLOCK == 4 * 32, "the whole-block path loads four vectors of 32 lanes");

/* What the rule does before the cast, up to the sign: the cast below takes
 * |y| capped at `cap` and the sign from the input.  That is exact because
 * s > 0 keeps x's sign (-0 included), and for the trainer rule capping |y|
 * at 448 as an integer (magnitudes order like their bits) is the clamp. */
static inline __m512 apply(__m512 x, __m512 s, __m512 inv, int rule)
{
    return rule == RF_RULE_MUL ? _mm512_mul_ps(x, inv) : _mm512_div_ps(x, s);
}

static inline __m512i rule_cap(int rule)
{
    /* trainer: the clamp at 448; deepgemm: 480, from where the scalar path
     * returns NaN outright, and the capped value rounds to the NaN code. */
    return _mm512_set1_epi32((int)(rule == RF_RULE_MUL ? RF_E4M3_NAN_BITS : 0x43e00000u));
}

/* The e4m3 code of |y| (capped) in the low byte of each lane, the rest
 * zero: the steps of rf_e4m3_scalar with the exponent rebias folded into
 * the rounding constant and the subnormal result merged by a masked op. */
static inline __m512i e4m3_mag(__m512 y, __m512i cap)
{
    const __m512i a = _mm512_min_epu32(
        _mm512_and_si512(_mm512_castps_si512(y), _mm512_set1_epi32(0x7fffffff)), cap);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(a, 20), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(a, _mm512_set1_epi32((int)(0x7ffffu - (120u << 23))));
    r = _mm512_srli_epi32(_mm512_add_epi32(r, odd), 20);
    const __m512i magic = _mm512_set1_epi32((int)RF_E4M3_SUB_MAGIC_BITS);
    __mmask16 is_sub = _mm512_cmplt_epu32_mask(a, _mm512_set1_epi32((int)RF_E4M3_MIN_NORMAL_BITS));
    __m512 t = _mm512_add_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(magic));
    return _mm512_mask_sub_epi32(r, is_sub, _mm512_castps_si512(t), magic);
}

static inline __mmask32 mask32(size_t n)
{
    return n >= 32 ? (__mmask32)~0u : (__mmask32)((1u << n) - 1u);
}

static inline __mmask16 mask16(size_t n)
{
    return n >= 16 ? (__mmask16)0xffffu : (__mmask16)((1u << n) - 1u);
}

/* amax (RF_FP8_AMAX_KERNEL; the accumulators take 1 KiB, in L1): masked
 * loads for a short block, so no scalar tail. */
static inline __attribute__((always_inline)) __m512i
amax_block_bf16(__m512i acc, const uint16_t *q, size_t n, uint16_t *m)
{
    (void)m;
    const __m512i abs = _mm512_set1_epi16(0x7fff);
    if (n == REFIT_FP8_BLOCK) { /* a whole block: four loads of 32 lanes */
        /* |x| before the max: as unsigned, a sign bit would win */
        __m512i v0 = _mm512_and_si512(_mm512_loadu_si512(q), abs);
        __m512i v1 = _mm512_and_si512(_mm512_loadu_si512(q + 32), abs);
        __m512i v2 = _mm512_and_si512(_mm512_loadu_si512(q + 64), abs);
        __m512i v3 = _mm512_and_si512(_mm512_loadu_si512(q + 96), abs);
        return _mm512_max_epu16(acc, _mm512_max_epu16(_mm512_max_epu16(v0, v1), _mm512_max_epu16(v2, v3)));
    }
    for (size_t c = 0; c < n; c += 32)
        acc = _mm512_max_epu16(acc, _mm512_and_si512(_mm512_maskz_loadu_epi16(mask32(n - c), q + c), abs));
    return acc;
}

static inline __attribute__((always_inline)) __m512i
amax_block_f32(__m512i acc, const float *q, size_t n, uint32_t *m)
{
    (void)m;
    const __m512i abs = _mm512_set1_epi32(0x7fffffff);
    for (size_t c = 0; c < n; c += 16)
        acc = _mm512_max_epu32(acc, _mm512_and_si512(_mm512_maskz_loadu_epi32(mask16(n - c), q + c), abs));
    return acc;
}

/* The larger of m and the largest lane; for bf16 widened to 32-bit lanes
 * first, where a reduction intrinsic exists. */
static inline uint16_t amax_reduce_bf16(__m512i acc, uint16_t m)
{
    __m512i lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(acc));
    __m512i hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(acc, 1));
    uint16_t v = (uint16_t)_mm512_reduce_max_epu32(_mm512_max_epu32(lo, hi));
    return v > m ? v : m;
}

static inline uint32_t amax_reduce_f32(__m512i acc, uint32_t m)
{
    uint32_t v = _mm512_reduce_max_epu32(acc);
    return v > m ? v : m;
}

RF_FP8_AMAX_KERNEL(avx512_amax_bf16, uint16_t, uint16_t, __m512i, _mm512_setzero_si512, amax_block_bf16,
                   amax_reduce_bf16)
RF_FP8_AMAX_KERNEL(avx512_amax_f32, float, uint32_t, __m512i, _mm512_setzero_si512, amax_block_f32,
                   amax_reduce_f32)

/* 32 bf16 in one load: as fp32, the even elements are the low halves
 * shifted up and the odd ones the high halves masked, so no widening
 * shuffles; their codes meet again as the two bytes of one word, and the
 * 32 signs go in at the end from one mask (adding 0x80 to a code < 0x80). */
static inline __m256i quant32_bf16(__m512i v, __m512 vs, __m512 vi, __m512i cap, int rule)
{
    __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xffff0000u)));
    __m512i ce = e4m3_mag(apply(even, vs, vi, rule), cap);
    __m512i co = e4m3_mag(apply(odd, vs, vi, rule), cap);
    __m256i q = _mm512_cvtepi32_epi16(_mm512_or_si512(ce, _mm512_slli_epi32(co, 8)));
    return _mm256_mask_add_epi8(q, _mm512_movepi16_mask(v), q, _mm256_set1_epi8((char)0x80));
}

/* The cast of columns [c, end) of one row (RF_FP8_QUANT_KERNEL): 32 at a
 * time, the last ones masked. */
static inline __attribute__((always_inline)) void
quant_seg_bf16(const uint16_t *p, uint8_t *q, size_t c, size_t end, float s1, float i1,
               const int rule, struct rf_fp8_pf *pf)
{
    const __m512i cap = rule_cap(rule);
    const __m512 vs = _mm512_set1_ps(s1), vi = _mm512_set1_ps(i1);
    for (; c + 32 <= end; c += 32) {
        rf_fp8_pf_step(pf);
        _mm256_storeu_si256((__m256i *)(q + c), quant32_bf16(_mm512_loadu_si512(p + c), vs, vi, cap, rule));
    }
    if (c < end) {
        __mmask32 k = mask32(end - c);
        __m512i v = _mm512_maskz_loadu_epi16(k, p + c);
        _mm256_mask_storeu_epi8(q + c, k, quant32_bf16(v, vs, vi, cap, rule));
    }
}

/* 16 at a time, the last ones masked; the signs go in from the input's
 * sign bits (adding 0x80 to a code < 0x80). */
static inline __attribute__((always_inline)) void
quant_seg_f32(const float *p, uint8_t *q, size_t c, size_t end, float s1, float i1, const int rule,
              struct rf_fp8_pf *pf)
{
    const __m512i cap = rule_cap(rule);
    const __m512 vs = _mm512_set1_ps(s1), vi = _mm512_set1_ps(i1);
    for (; c < end; c += 16) {
        rf_fp8_pf_step(pf);
        __mmask16 k = mask16(end - c);
        __m512 x = _mm512_maskz_loadu_ps(k, p + c);
        __m128i b = _mm512_cvtepi32_epi8(e4m3_mag(apply(x, vs, vi, rule), cap));
        __mmask16 neg = _mm512_cmplt_epi32_mask(_mm512_castps_si512(x), _mm512_setzero_si512());
        b = _mm_mask_add_epi8(b, neg, b, _mm_set1_epi8((char)0x80));
        _mm_mask_storeu_epi8(q + c, k, b);
    }
}

RF_FP8_QUANT_KERNEL(avx512_quant_bf16, uint16_t, quant_seg_bf16)
RF_FP8_QUANT_KERNEL(avx512_quant_f32, float, quant_seg_f32)

const struct rf_fp8_kernels rf_fp8_avx512_kernels = {
    .amax_bf16 = avx512_amax_bf16,
    .amax_f32 = avx512_amax_f32,
    .quant_bf16 = avx512_quant_bf16,
    .quant_f32 = avx512_quant_f32,
};
