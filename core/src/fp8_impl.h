/* fp8_impl.h — what the scalar, AVX2 and AVX-512 FP8 kernels share (not
 * installed).  The block driver in fp8.c computes the scale; a kernel only
 * finds a block's amax and casts the block, so every path divides by the
 * same fp32 s (or multiplies by the same fp32 1/s) and the bytes agree. */
#ifndef REFIT_FP8_IMPL_H
#define REFIT_FP8_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define RF_E4M3_MAX 448.0f
/* From 480 up PyTorch returns NaN outright.  Between 464 (exclusive) and 480
 * the nearest-even rounding itself lands on code 0x7f, which is NaN; 464 is
 * a tie and goes to the even 448.  So: NaN exactly for |v| > 464 (PyTorch's
 * cast table in shared/fixtures confirms 464 -> 448, 466 -> NaN). */
#define RF_E4M3_NAN_BITS 0x43f00000u
/* Below 2^-6 (the smallest e4m3 normal) the result is subnormal. */
#define RF_E4M3_MIN_NORMAL_BITS (121u << 23)
/* 2^14: adding it to |v| < 2^-6 leaves |v| rounded (nearest even) to the
 * e4m3 subnormal step 2^-9 in the low mantissa bits. */
#define RF_E4M3_SUB_MAGIC_BITS (141u << 23)

enum { RF_RULE_DIV = 0, RF_RULE_MUL = 1 }; /* trainer, deepgemm */

/* The driver hands kernels a band of up to 128 rows and a chunk of up to
 * RF_FP8_CHUNK_BLOCKS column blocks, and kernels walk it row by row: long
 * sequential reads that the prefetchers follow (a 128x128 block read alone
 * is 128 short strided rows), and a chunk small enough (128 rows x 4 KiB
 * of bf16) that the second pass finds it in L2. */
#ifndef RF_FP8_CHUNK_BLOCKS
#define RF_FP8_CHUNK_BLOCKS 16
#endif

/* The chunk the driver does next.  A vector cast pass (compute-bound)
 * pulls it into L2 row by row while it works, so that the next amax pass
 * (memory-bound) reads from cache: the two overlap instead of taking
 * turns.  base NULL: nothing next. */
struct rf_fp8_next {
    const char *base;
    size_t rows, row_bytes, stride_bytes;
};

struct rf_fp8_kernels {
    /* m[b] = largest |x| of column block b of the chunk, as bits: for bf16
     * and fp32 alike the bit pattern of a magnitude orders like its value,
     * and one at or above the all-ones exponent is Inf or NaN. */
    void (*amax_bf16)(const uint16_t *src, size_t rows, size_t cols, size_t stride, uint16_t *m);
    void (*amax_f32)(const float *src, size_t rows, size_t cols, size_t stride, uint32_t *m);
    /* Column block b: q = e4m3(clamp(x / s[b], ±448)) for RF_RULE_DIV,
     * e4m3(x * inv[b]) for RF_RULE_MUL; rows dst_stride bytes apart. */
    void (*quant_bf16)(const uint16_t *src, size_t rows, size_t cols, size_t stride,
                       uint8_t *dst, size_t dst_stride, const float *s, const float *inv,
                       int rule, const struct rf_fp8_next *next);
    void (*quant_f32)(const float *src, size_t rows, size_t cols, size_t stride, uint8_t *dst,
                      size_t dst_stride, const float *s, const float *inv, int rule,
                      const struct rf_fp8_next *next);
};

/* Check the rule and floor of p (NULL: defaults) and return them as used:
 * the rule and the floor in fp32.  fp8.c; also used by cuda/fp8.cu. */
struct refit_fp8_params;
int rf_fp8_params_check(const struct refit_fp8_params *p, int *rule, float *floor);

extern const struct rf_fp8_kernels rf_fp8_scalar_kernels;
extern const struct rf_fp8_kernels rf_fp8_avx2_kernels;
extern const struct rf_fp8_kernels rf_fp8_avx512_kernels;

static inline uint32_t rf_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float rf_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* PyTorch's float -> float8_e4m3fn, written from its definition: nearest
 * even on the 3-bit mantissa, subnormals on the 2^-9 grid, NaN above 464.
 * The vector kernels compute exactly these integer and fp32 steps. */
static inline uint8_t rf_e4m3_scalar(float v)
{
    uint32_t b = rf_f32_bits(v), sign = (b >> 24) & 0x80u, a = b & 0x7fffffffu, r;
    if (a >= RF_E4M3_NAN_BITS)
        r = 0x7f;
    else if (a < RF_E4M3_MIN_NORMAL_BITS)
        r = rf_f32_bits(rf_bits_f32(a) + rf_bits_f32(RF_E4M3_SUB_MAGIC_BITS)) -
            RF_E4M3_SUB_MAGIC_BITS;
    else
        r = ((a + 0x7ffffu + ((a >> 20) & 1u)) >> 20) - (120u << 3);
    return (uint8_t)(r | sign);
}

/* The same function without branches (the NaN test becomes a cap at 480,
 * which rounds to the NaN code), so that compilers can vectorize the
 * portable kernels with whatever the target has (SSE2, NEON). */
static inline uint8_t rf_e4m3_branchless(float v)
{
    uint32_t b = rf_f32_bits(v), sign = (b >> 24) & 0x80u, a = b & 0x7fffffffu;
    a = a < RF_E4M3_NAN_BITS ? a : RF_E4M3_NAN_BITS;
    uint32_t nrm = (a + (0x7ffffu - (120u << 23)) + ((a >> 20) & 1u)) >> 20;
    uint32_t sub = rf_f32_bits(rf_bits_f32(a) + rf_bits_f32(RF_E4M3_SUB_MAGIC_BITS)) -
                   RF_E4M3_SUB_MAGIC_BITS;
    return (uint8_t)((a < RF_E4M3_MIN_NORMAL_BITS ? sub : nrm) | sign);
}

static inline float rf_fp8_apply(float x, float s, float inv, int rule)
{
    if (rule == RF_RULE_MUL)
        return x * inv;
    float y = x / s;
    return y < -RF_E4M3_MAX ? -RF_E4M3_MAX : (y > RF_E4M3_MAX ? RF_E4M3_MAX : y);
}

/* Cache lines of row r of the next chunk, for rf_fp8_pf_step. */
struct rf_fp8_pf {
    const char *p, *end;
};

static inline struct rf_fp8_pf rf_fp8_pf_row(const struct rf_fp8_next *n, size_t r)
{
    struct rf_fp8_pf pf = {NULL, NULL};
    if (n && n->base && r < n->rows) {
        const char *row = n->base + r * n->stride_bytes;
        pf.p = (const char *)((uintptr_t)row & ~(uintptr_t)63);
        pf.end = row + n->row_bytes;
    }
    return pf;
}

/* One line per call, spread over the cast loop; the rest at row end. */
static inline void rf_fp8_pf_step(struct rf_fp8_pf *pf)
{
    if (pf->p < pf->end) {
        __builtin_prefetch(pf->p, 0, 2);
        pf->p += 64;
    }
}

/* The lines of the row not yet asked for, at the row's end. */
static inline void rf_fp8_pf_drain(struct rf_fp8_pf *pf)
{
    while (pf->p < pf->end)
        rf_fp8_pf_step(pf);
}

static inline float rf_bf16_f32(uint16_t v)
{
    return rf_bits_f32((uint32_t)v << 16);
}

/* The end of the column block that starts at c0 (the last one may be
 * short). */
static inline size_t rf_fp8_block_end(size_t cols, size_t c0)
{
    return cols - c0 < 128 ? cols : c0 + 128;
}

/* Elements a vector loop left over, one at a time: the largest |x| of
 * p[0..n) as bits, starting from mx (the portable amax is this alone). */
static inline uint16_t rf_fp8_amax_run_bf16(const uint16_t *p, size_t n, uint16_t mx)
{
    for (size_t c = 0; c < n; c++) {
        uint16_t a = p[c] & 0x7fffu;
        mx = a > mx ? a : mx;
    }
    return mx;
}

static inline uint32_t rf_fp8_amax_run_f32(const float *p, size_t n, uint32_t mx)
{
    for (size_t c = 0; c < n; c++) {
        uint32_t a = rf_f32_bits(p[c]) & 0x7fffffffu;
        mx = a > mx ? a : mx;
    }
    return mx;
}

/* ... and their cast, by the reference steps. */
static inline void rf_fp8_quant_run_bf16(const uint16_t *p, uint8_t *q, size_t n, float s,
                                         float inv, int rule)
{
    for (size_t c = 0; c < n; c++)
        q[c] = rf_e4m3_scalar(rf_fp8_apply(rf_bf16_f32(p[c]), s, inv, rule));
}

static inline void rf_fp8_quant_run_f32(const float *p, uint8_t *q, size_t n, float s, float inv,
                                        int rule)
{
    for (size_t c = 0; c < n; c++)
        q[c] = rf_e4m3_scalar(rf_fp8_apply(p[c], s, inv, rule));
}

/* The row walk every vector kernel shares, once per kernel.
 *
 * An amax kernel `name` (struct rf_fp8_kernels' amax_bf16 / amax_f32)
 * over elements T with results M: each column block's accumulator, of
 * vector type V, stays in vector form across the rows and is reduced once
 * per chunk.  block(acc, q, n, &m[b]) returns acc with the n (at most
 * REFIT_FP8_BLOCK) elements at q folded in (a scalar tail may go into m[b]
 * directly); reduce(acc, m[b]) returns the block's amax; zero() is V's
 * zero.  The helpers are always-inline, so the kernel is one loop nest. */
#define RF_FP8_AMAX_KERNEL(name, T, M, V, zero, block, reduce)                               \
    static void name(const T *src, size_t rows, size_t cols, size_t stride, M *m)            \
    {                                                                                        \
        const size_t nb = (cols + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;                    \
        V acc[RF_FP8_CHUNK_BLOCKS];                                                          \
        for (size_t b = 0; b < nb; b++)                                                      \
            acc[b] = zero();                                                                 \
        for (size_t r = 0; r < rows; r++) {                                                  \
            const T *p = src + r * stride;                                                   \
            for (size_t b = 0; b < nb; b++) {                                                \
                size_t left = cols - b * REFIT_FP8_BLOCK;                                    \
                acc[b] = block(acc[b], p + b * REFIT_FP8_BLOCK,                              \
                               left < REFIT_FP8_BLOCK ? left : REFIT_FP8_BLOCK, &m[b]);      \
            }                                                                                \
        }                                                                                    \
        for (size_t b = 0; b < nb; b++)                                                      \
            m[b] = reduce(acc[b], m[b]);                                                     \
    }

/* A quant kernel `name` (quant_bf16 / quant_f32) over elements T: row by
 * row, each row's column blocks through seg(p, q, c0, end, s, inv, rule,
 * &pf), which casts columns [c0, end) of the row at p into the row at q
 * with the block's scale s (inv = 1/s) and calls rf_fp8_pf_step(&pf) as it
 * goes (the row's lines of the next chunk; the rest at the row's end).
 * The walk is instantiated once per rule: the rule is a constant inside
 * (seg is always-inline), so it costs no branch per vector. */
#define RF_FP8_QUANT_KERNEL(name, T, seg)                                                    \
    static inline __attribute__((always_inline)) void name##_rows(                           \
        const T *src, size_t rows, size_t cols, size_t stride, uint8_t *dst,                 \
        size_t dst_stride, const float *s, const float *inv, const int rule,                 \
        const struct rf_fp8_next *next)                                                      \
    {                                                                                        \
        for (size_t r = 0; r < rows; r++) {                                                  \
            const T *p = src + r * stride;                                                   \
            uint8_t *q = dst + r * dst_stride;                                               \
            struct rf_fp8_pf pf = rf_fp8_pf_row(next, r);                                    \
            for (size_t c0 = 0; c0 < cols; c0 += REFIT_FP8_BLOCK)                            \
                seg(p, q, c0, rf_fp8_block_end(cols, c0), s[c0 / REFIT_FP8_BLOCK],           \
                    inv[c0 / REFIT_FP8_BLOCK], rule, &pf);                                   \
            rf_fp8_pf_drain(&pf);                                                            \
        }                                                                                    \
    }                                                                                        \
    static void name(const T *src, size_t rows, size_t cols, size_t stride, uint8_t *dst,    \
                     size_t dst_stride, const float *s, const float *inv, int rule,          \
                     const struct rf_fp8_next *next)                                         \
    {                                                                                        \
        if (rule == RF_RULE_MUL)                                                             \
            name##_rows(src, rows, cols, stride, dst, dst_stride, s, inv, RF_RULE_MUL, next); \
        else                                                                                 \
            name##_rows(src, rows, cols, stride, dst, dst_stride, s, inv, RF_RULE_DIV, next); \
    }

#endif
