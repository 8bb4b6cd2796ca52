/* fp8_avx512.c — AVX-512 (F, BW, VL) FP8 kernels: 16 fp32 lanes per step,
 * masked loads and stores for the edge columns, so no scalar tail.  Built
 * with -mavx512f -mavx512bw -mavx512vl and only called after fp8.c checked
 * the CPU; the integer steps of the cast are those of rf_e4m3_scalar. */
#include <immintrin.h>

#include "fp8_impl.h"

static inline __m512 apply(__m512 x, __m512 s, __m512 inv, int rule)
{
    if (rule == RF_RULE_MUL)
        return _mm512_mul_ps(x, inv);
    __m512 y = _mm512_div_ps(x, s);
    y = _mm512_max_ps(y, _mm512_set1_ps(-RF_E4M3_MAX));
    return _mm512_min_ps(y, _mm512_set1_ps(RF_E4M3_MAX));
}

static inline __m128i e4m3(__m512 y)
{
    const __m512i b = _mm512_castps_si512(y);
    const __m512i sign = _mm512_srli_epi32(_mm512_and_si512(b, _mm512_set1_epi32((int)0x80000000u)), 24);
    const __m512i a = _mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff));
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(a, 20), _mm512_set1_epi32(1));
    __m512i nrm = _mm512_add_epi32(_mm512_add_epi32(a, _mm512_set1_epi32(0x7ffff)), odd);
    nrm = _mm512_sub_epi32(_mm512_srli_epi32(nrm, 20), _mm512_set1_epi32(120 << 3));
    const __m512i magic = _mm512_set1_epi32((int)RF_E4M3_SUB_MAGIC_BITS);
    __m512i sub = _mm512_castps_si512(
        _mm512_add_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(magic)));
    sub = _mm512_sub_epi32(sub, magic);
    __mmask16 is_sub = _mm512_cmplt_epi32_mask(a, _mm512_set1_epi32((int)RF_E4M3_MIN_NORMAL_BITS));
    __mmask16 is_nan = _mm512_cmpge_epi32_mask(a, _mm512_set1_epi32((int)RF_E4M3_NAN_BITS));
    __m512i r = _mm512_mask_blend_epi32(is_sub, nrm, sub);
    r = _mm512_mask_blend_epi32(is_nan, r, _mm512_set1_epi32(0x7f));
    return _mm512_cvtepi32_epi8(_mm512_or_si512(r, sign));
}

static inline __mmask32 mask32(size_t n)
{
    return n >= 32 ? (__mmask32)~0u : (__mmask32)((1u << n) - 1u);
}

static inline __mmask16 mask16(size_t n)
{
    return n >= 16 ? (__mmask16)0xffffu : (__mmask16)((1u << n) - 1u);
}

static uint16_t avx512_amax_bf16(const uint16_t *src, size_t rows, size_t cols, size_t stride)
{
    const __m512i abs = _mm512_set1_epi16(0x7fff);
    __m512i m = _mm512_setzero_si512();
    for (size_t r = 0; r < rows; r++) {
        const uint16_t *p = src + r * stride;
        for (size_t c = 0; c < cols; c += 32) {
            __m512i v = _mm512_maskz_loadu_epi16(mask32(cols - c), p + c);
            m = _mm512_max_epu16(m, _mm512_and_si512(v, abs));
        }
    }
    /* Widen to 32-bit lanes, where a reduction intrinsic exists. */
    __m512i lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(m));
    __m512i hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(m, 1));
    return (uint16_t)_mm512_reduce_max_epu32(_mm512_max_epu32(lo, hi));
}

static uint32_t avx512_amax_f32(const float *src, size_t rows, size_t cols, size_t stride)
{
    const __m512i abs = _mm512_set1_epi32(0x7fffffff);
    __m512i m = _mm512_setzero_si512();
    for (size_t r = 0; r < rows; r++) {
        const float *p = src + r * stride;
        for (size_t c = 0; c < cols; c += 16) {
            __m512i v = _mm512_maskz_loadu_epi32(mask16(cols - c), p + c);
            m = _mm512_max_epu32(m, _mm512_and_si512(v, abs));
        }
    }
    return _mm512_reduce_max_epu32(m);
}

static inline __m512 load_bf16(const uint16_t *p, __mmask16 k)
{
    __m256i h = _mm256_maskz_loadu_epi16(k, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static void avx512_quant_bf16(const uint16_t *src, size_t rows, size_t cols, size_t stride,
                              uint8_t *dst, size_t dst_stride, float s, float inv, int rule)
{
    const __m512 vs = _mm512_set1_ps(s), vi = _mm512_set1_ps(inv);
    for (size_t r = 0; r < rows; r++) {
        const uint16_t *p = src + r * stride;
        uint8_t *q = dst + r * dst_stride;
        size_t c = 0;
        /* Two vectors per step keep two divisions in flight. */
        for (; c + 32 <= cols; c += 32) {
            __m128i a = e4m3(apply(load_bf16(p + c, 0xffff), vs, vi, rule));
            __m128i b = e4m3(apply(load_bf16(p + c + 16, 0xffff), vs, vi, rule));
            _mm_storeu_si128((__m128i *)(q + c), a);
            _mm_storeu_si128((__m128i *)(q + c + 16), b);
        }
        for (; c < cols; c += 16) {
            __mmask16 k = mask16(cols - c);
            _mm_mask_storeu_epi8(q + c, k, e4m3(apply(load_bf16(p + c, k), vs, vi, rule)));
        }
    }
}

static void avx512_quant_f32(const float *src, size_t rows, size_t cols, size_t stride,
                             uint8_t *dst, size_t dst_stride, float s, float inv, int rule)
{
    const __m512 vs = _mm512_set1_ps(s), vi = _mm512_set1_ps(inv);
    for (size_t r = 0; r < rows; r++) {
        const float *p = src + r * stride;
        uint8_t *q = dst + r * dst_stride;
        for (size_t c = 0; c < cols; c += 16) {
            __mmask16 k = mask16(cols - c);
            __m512 x = _mm512_maskz_loadu_ps(k, p + c);
            _mm_mask_storeu_epi8(q + c, k, e4m3(apply(x, vs, vi, rule)));
        }
    }
}

const struct rf_fp8_kernels rf_fp8_avx512_kernels = {
    .amax_bf16 = avx512_amax_bf16,
    .amax_f32 = avx512_amax_f32,
    .quant_bf16 = avx512_quant_bf16,
    .quant_f32 = avx512_quant_f32,
};
