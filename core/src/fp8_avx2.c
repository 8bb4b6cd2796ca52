/* fp8_avx2.c — AVX2 FP8 kernels: 8 fp32 lanes per step, 32 elements per
 * packed 32-byte store, and the scalar steps of fp8_impl.h for the last
 * few columns of a row.  Built with -mavx2 and only called after fp8.c
 * checked the CPU. */
#include <immintrin.h>

#include "fp8_impl.h"

static inline __m256 apply(__m256 x, __m256 s, __m256 inv, int rule)
{
    if (rule == RF_RULE_MUL)
        return _mm256_mul_ps(x, inv);
    __m256 y = _mm256_div_ps(x, s);
    y = _mm256_max_ps(y, _mm256_set1_ps(-RF_E4M3_MAX));
    return _mm256_min_ps(y, _mm256_set1_ps(RF_E4M3_MAX));
}

/* The e4m3 byte of each lane, still in a 32-bit lane.  |v| bits are below
 * 2^31, so the signed compares AVX2 offers order them correctly. */
static inline __m256i e4m3(__m256 y)
{
    const __m256i b = _mm256_castps_si256(y);
    const __m256i sign = _mm256_srli_epi32(_mm256_and_si256(b, _mm256_set1_epi32((int)0x80000000u)), 24);
    const __m256i a = _mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff));
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(a, 20), _mm256_set1_epi32(1));
    __m256i nrm = _mm256_add_epi32(_mm256_add_epi32(a, _mm256_set1_epi32(0x7ffff)), odd);
    nrm = _mm256_sub_epi32(_mm256_srli_epi32(nrm, 20), _mm256_set1_epi32(120 << 3));
    const __m256i magic = _mm256_set1_epi32((int)RF_E4M3_SUB_MAGIC_BITS);
    __m256i sub = _mm256_castps_si256(
        _mm256_add_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(magic)));
    sub = _mm256_sub_epi32(sub, magic);
    __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)RF_E4M3_MIN_NORMAL_BITS), a);
    __m256i is_nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32((int)RF_E4M3_NAN_BITS - 1));
    __m256i r = _mm256_blendv_epi8(nrm, sub, is_sub);
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7f), is_nan);
    return _mm256_or_si256(r, sign);
}

/* Four vectors of bytes-in-dwords to 32 bytes in order: the packs work
 * within 128-bit lanes, the permute puts the lanes back in sequence. */
static inline __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i ab = _mm256_packus_epi32(a, b), cd = _mm256_packus_epi32(c, d);
    __m256i x = _mm256_packus_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* One vector to 8 bytes (in the low 64 bits). */
static inline __m128i pack8(__m256i a)
{
    __m256i w = _mm256_packus_epi32(a, a);
    __m256i x = _mm256_packus_epi16(w, w);
    x = _mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));
    return _mm256_castsi256_si128(x);
}

static uint16_t avx2_amax_bf16(const uint16_t *src, size_t rows, size_t cols, size_t stride)
{
    const __m256i abs = _mm256_set1_epi16(0x7fff);
    __m256i m = _mm256_setzero_si256();
    uint16_t tail = 0;
    for (size_t r = 0; r < rows; r++) {
        const uint16_t *p = src + r * stride;
        size_t c = 0;
        for (; c + 16 <= cols; c += 16)
            m = _mm256_max_epu16(m, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + c)), abs));
        for (; c < cols; c++) {
            uint16_t a = p[c] & 0x7fffu;
            tail = a > tail ? a : tail;
        }
    }
    __m128i x = _mm_max_epu16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    x = _mm_max_epu16(x, _mm_srli_si128(x, 8));
    x = _mm_max_epu16(x, _mm_srli_si128(x, 4));
    x = _mm_max_epu16(x, _mm_srli_si128(x, 2));
    uint16_t v = (uint16_t)_mm_extract_epi16(x, 0);
    return v > tail ? v : tail;
}

static uint32_t avx2_amax_f32(const float *src, size_t rows, size_t cols, size_t stride)
{
    const __m256i abs = _mm256_set1_epi32(0x7fffffff);
    __m256i m = _mm256_setzero_si256();
    uint32_t tail = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *p = src + r * stride;
        size_t c = 0;
        for (; c + 8 <= cols; c += 8)
            m = _mm256_max_epu32(m, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + c)), abs));
        for (; c < cols; c++) {
            uint32_t a = rf_f32_bits(p[c]) & 0x7fffffffu;
            tail = a > tail ? a : tail;
        }
    }
    __m128i x = _mm_max_epu32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    x = _mm_max_epu32(x, _mm_srli_si128(x, 8));
    x = _mm_max_epu32(x, _mm_srli_si128(x, 4));
    uint32_t v = (uint32_t)_mm_cvtsi128_si32(x);
    return v > tail ? v : tail;
}

static inline __m256 load_bf16(const uint16_t *p)
{
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

static void avx2_quant_bf16(const uint16_t *src, size_t rows, size_t cols, size_t stride,
                            uint8_t *dst, size_t dst_stride, float s, float inv, int rule)
{
    const __m256 vs = _mm256_set1_ps(s), vi = _mm256_set1_ps(inv);
    for (size_t r = 0; r < rows; r++) {
        const uint16_t *p = src + r * stride;
        uint8_t *q = dst + r * dst_stride;
        size_t c = 0;
        for (; c + 32 <= cols; c += 32) {
            __m256i a = e4m3(apply(load_bf16(p + c), vs, vi, rule));
            __m256i b = e4m3(apply(load_bf16(p + c + 8), vs, vi, rule));
            __m256i d = e4m3(apply(load_bf16(p + c + 16), vs, vi, rule));
            __m256i e = e4m3(apply(load_bf16(p + c + 24), vs, vi, rule));
            _mm256_storeu_si256((__m256i *)(q + c), pack32(a, b, d, e));
        }
        for (; c + 8 <= cols; c += 8)
            _mm_storel_epi64((__m128i *)(q + c), pack8(e4m3(apply(load_bf16(p + c), vs, vi, rule))));
        for (; c < cols; c++)
            q[c] = rf_e4m3_scalar(rf_fp8_apply(rf_bf16_f32(p[c]), s, inv, rule));
    }
}

static void avx2_quant_f32(const float *src, size_t rows, size_t cols, size_t stride,
                           uint8_t *dst, size_t dst_stride, float s, float inv, int rule)
{
    const __m256 vs = _mm256_set1_ps(s), vi = _mm256_set1_ps(inv);
    for (size_t r = 0; r < rows; r++) {
        const float *p = src + r * stride;
        uint8_t *q = dst + r * dst_stride;
        size_t c = 0;
        for (; c + 32 <= cols; c += 32) {
            __m256i a = e4m3(apply(_mm256_loadu_ps(p + c), vs, vi, rule));
            __m256i b = e4m3(apply(_mm256_loadu_ps(p + c + 8), vs, vi, rule));
            __m256i d = e4m3(apply(_mm256_loadu_ps(p + c + 16), vs, vi, rule));
            __m256i e = e4m3(apply(_mm256_loadu_ps(p + c + 24), vs, vi, rule));
            _mm256_storeu_si256((__m256i *)(q + c), pack32(a, b, d, e));
        }
        for (; c + 8 <= cols; c += 8)
            _mm_storel_epi64((__m128i *)(q + c), pack8(e4m3(apply(_mm256_loadu_ps(p + c), vs, vi, rule))));
        for (; c < cols; c++)
            q[c] = rf_e4m3_scalar(rf_fp8_apply(p[c], s, inv, rule));
    }
}

const struct rf_fp8_kernels rf_fp8_avx2_kernels = {
    .amax_bf16 = avx2_amax_bf16,
    .amax_f32 = avx2_amax_f32,
    .quant_bf16 = avx2_quant_bf16,
    .quant_f32 = avx2_quant_f32,
};
