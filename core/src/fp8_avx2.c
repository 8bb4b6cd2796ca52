/* fp8_avx2.c — AVX2 FP8 kernels: 8 fp32 lanes per step, 32 elements per
 * packed 32-byte store, and the scalar steps of fp8_impl.h for the last
 * few columns of a row.  Built with -mavx2 and only called after fp8.c
 * checked the CPU. */
#include <immintrin.h>

#include "fp8_impl.h"
#include "refit/fp8.h"

/* The rule before the cast, up to clamp and sign: the cast takes |y|
 * capped as an integer (magnitudes order like their bits), which for the
 * trainer rule is its clamp at 448, and keeps y's sign, which is x's. */
static inline __m256 apply(__m256 x, __m256 s, __m256 inv, int rule)
{
    return rule == RF_RULE_MUL ? _mm256_mul_ps(x, inv) : _mm256_div_ps(x, s);
}

static inline __m256i rule_cap(int rule)
{
    /* deepgemm: 480, from where the scalar path returns NaN outright and
     * the capped value rounds to the NaN code 0x7f */
    return _mm256_set1_epi32((int)(rule == RF_RULE_MUL ? RF_E4M3_NAN_BITS : 0x43e00000u));
}

/* The e4m3 byte of each lane, still in a 32-bit lane: the steps of
 * rf_e4m3_scalar with the exponent rebias folded into the rounding
 * constant.  |y| bits are below 2^31, so AVX2's signed compare orders
 * them correctly. */
/* The code of |y| (capped) alone, in the low byte of each lane. */
static inline __m256i e4m3_mag(__m256 y, __m256i cap)
{
    const __m256i b = _mm256_castps_si256(y);
    const __m256i a = _mm256_min_epu32(_mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff)), cap);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(a, 20), _mm256_set1_epi32(1));
    __m256i nrm = _mm256_add_epi32(a, _mm256_set1_epi32((int)(0x7ffffu - (120u << 23))));
    nrm = _mm256_srli_epi32(_mm256_add_epi32(nrm, odd), 20);
    const __m256i magic = _mm256_set1_epi32((int)RF_E4M3_SUB_MAGIC_BITS);
    __m256i sub = _mm256_castps_si256(
        _mm256_add_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(magic)));
    sub = _mm256_sub_epi32(sub, magic);
    __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)RF_E4M3_MIN_NORMAL_BITS), a);
    return _mm256_blendv_epi8(nrm, sub, is_sub);
}

static inline __m256i e4m3(__m256 y, __m256i cap)
{
    __m256i sign = _mm256_srli_epi32(_mm256_castps_si256(y), 24);
    return _mm256_or_si256(e4m3_mag(y, cap), _mm256_and_si256(sign, _mm256_set1_epi32(0x80)));
}

/* 32 bf16 from two loads: as fp32 the even elements are the low halves
 * shifted up and the odd ones the high halves masked (no widening
 * shuffles); their codes meet as the two bytes of a word, and the signs
 * (y's sign is x's: s > 0) are taken from the input's high bytes. */
static inline __m256i quant32_bf16(const uint16_t *p, __m256 vs, __m256 vi, __m256i cap,
                                   int rule)
{
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    __m256i v0 = _mm256_loadu_si256((const __m256i *)p);
    __m256i v1 = _mm256_loadu_si256((const __m256i *)(p + 16));
    __m256i e0 = e4m3_mag(apply(_mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), vs, vi, rule), cap);
    __m256i o0 = e4m3_mag(apply(_mm256_castsi256_ps(_mm256_and_si256(v0, hi)), vs, vi, rule), cap);
    __m256i e1 = e4m3_mag(apply(_mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), vs, vi, rule), cap);
    __m256i o1 = e4m3_mag(apply(_mm256_castsi256_ps(_mm256_and_si256(v1, hi)), vs, vi, rule), cap);
    __m256i w0 = _mm256_or_si256(e0, _mm256_slli_epi32(o0, 8));
    __m256i w1 = _mm256_or_si256(e1, _mm256_slli_epi32(o1, 8));
    /* packs work within 128-bit lanes; the permute restores the order */
    __m256i q = _mm256_permute4x64_epi64(_mm256_packus_epi32(w0, w1), 0xd8);
    __m256i sg = _mm256_packus_epi16(_mm256_srli_epi16(v0, 8), _mm256_srli_epi16(v1, 8));
    sg = _mm256_and_si256(_mm256_permute4x64_epi64(sg, 0xd8), _mm256_set1_epi8((char)0x80));
    return _mm256_or_si256(q, sg);
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

/* amax (RF_FP8_AMAX_KERNEL): block b's accumulator takes |x| a vector at
 * a time; the columns past the last multiple of 16 (8) go through the
 * scalar steps into m[b] directly. */
static inline __attribute__((always_inline)) __m256i
amax_block_bf16(__m256i acc, const uint16_t *q, size_t n, uint16_t *m)
{
    const __m256i abs = _mm256_set1_epi16(0x7fff);
    size_t c = 0;
    for (; c + 16 <= n; c += 16)
        acc = _mm256_max_epu16(acc, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(q + c)), abs));
    *m = rf_fp8_amax_run_bf16(q + c, n - c, *m);
    return acc;
}

static inline __attribute__((always_inline)) __m256i
amax_block_f32(__m256i acc, const float *q, size_t n, uint32_t *m)
{
    const __m256i abs = _mm256_set1_epi32(0x7fffffff);
    size_t c = 0;
    for (; c + 8 <= n; c += 8)
        acc = _mm256_max_epu32(acc, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(q + c)), abs));
    *m = rf_fp8_amax_run_f32(q + c, n - c, *m);
    return acc;
}

/* The larger of m and the largest lane. */
static inline uint16_t amax_reduce_bf16(__m256i acc, uint16_t m)
{
    __m128i x = _mm_max_epu16(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    x = _mm_max_epu16(x, _mm_srli_si128(x, 8));
    x = _mm_max_epu16(x, _mm_srli_si128(x, 4));
    x = _mm_max_epu16(x, _mm_srli_si128(x, 2));
    uint16_t v = (uint16_t)_mm_extract_epi16(x, 0);
    return v > m ? v : m;
}

static inline uint32_t amax_reduce_f32(__m256i acc, uint32_t m)
{
    __m128i x = _mm_max_epu32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    x = _mm_max_epu32(x, _mm_srli_si128(x, 8));
    x = _mm_max_epu32(x, _mm_srli_si128(x, 4));
    uint32_t v = (uint32_t)_mm_cvtsi128_si32(x);
    return v > m ? v : m;
}

RF_FP8_AMAX_KERNEL(avx2_amax_bf16, uint16_t, uint16_t, __m256i, _mm256_setzero_si256, amax_block_bf16,
                   amax_reduce_bf16)
RF_FP8_AMAX_KERNEL(avx2_amax_f32, float, uint32_t, __m256i, _mm256_setzero_si256, amax_block_f32,
                   amax_reduce_f32)

static inline __m256 load_bf16(const uint16_t *p)
{
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

/* The cast of columns [c, end) of one row (RF_FP8_QUANT_KERNEL): 32 at a
 * time, then 8, then the scalar steps. */
static inline __attribute__((always_inline)) void
quant_seg_bf16(const uint16_t *p, uint8_t *q, size_t c, size_t end, float s1, float i1,
               const int rule, struct rf_fp8_pf *pf)
{
    const __m256i cap = rule_cap(rule);
    const __m256 vs = _mm256_set1_ps(s1), vi = _mm256_set1_ps(i1);
    for (; c + 32 <= end; c += 32) {
        rf_fp8_pf_step(pf);
        _mm256_storeu_si256((__m256i *)(q + c), quant32_bf16(p + c, vs, vi, cap, rule));
    }
    for (; c + 8 <= end; c += 8)
        _mm_storel_epi64((__m128i *)(q + c), pack8(e4m3(apply(load_bf16(p + c), vs, vi, rule), cap)));
    rf_fp8_quant_run_bf16(p + c, q + c, end - c, s1, i1, rule);
}

static inline __attribute__((always_inline)) void
quant_seg_f32(const float *p, uint8_t *q, size_t c, size_t end, float s1, float i1, const int rule,
              struct rf_fp8_pf *pf)
{
    const __m256i cap = rule_cap(rule);
    const __m256 vs = _mm256_set1_ps(s1), vi = _mm256_set1_ps(i1);
    for (; c + 32 <= end; c += 32) {
        rf_fp8_pf_step(pf);
        rf_fp8_pf_step(pf); /* fp32: two lines per 32 elements */
        __m256i a = e4m3(apply(_mm256_loadu_ps(p + c), vs, vi, rule), cap);
        __m256i b = e4m3(apply(_mm256_loadu_ps(p + c + 8), vs, vi, rule), cap);
        __m256i d = e4m3(apply(_mm256_loadu_ps(p + c + 16), vs, vi, rule), cap);
        __m256i e = e4m3(apply(_mm256_loadu_ps(p + c + 24), vs, vi, rule), cap);
        _mm256_storeu_si256((__m256i *)(q + c), pack32(a, b, d, e));
    }
    for (; c + 8 <= end; c += 8)
        _mm_storel_epi64((__m128i *)(q + c), pack8(e4m3(apply(_mm256_loadu_ps(p + c), vs, vi, rule), cap)));
    rf_fp8_quant_run_f32(p + c, q + c, end - c, s1, i1, rule);
}

RF_FP8_QUANT_KERNEL(avx2_quant_bf16, uint16_t, quant_seg_bf16)
RF_FP8_QUANT_KERNEL(avx2_quant_f32, float, quant_seg_f32)

const struct rf_fp8_kernels rf_fp8_avx2_kernels = {
    .amax_bf16 = avx2_amax_bf16,
    .amax_f32 = avx2_amax_f32,
    .quant_bf16 = avx2_quant_bf16,
    .quant_f32 = avx2_quant_f32,
};
