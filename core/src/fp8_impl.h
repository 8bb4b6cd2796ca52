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

struct rf_fp8_kernels {
    /* Largest |x| of a block as bits: for bf16 and fp32 alike, the bit
     * pattern of a magnitude orders like its value, and a pattern at or
     * above the exponent-all-ones one means Inf or NaN. */
    uint16_t (*amax_bf16)(const uint16_t *src, size_t rows, size_t cols, size_t stride);
    uint32_t (*amax_f32)(const float *src, size_t rows, size_t cols, size_t stride);
    /* q = e4m3(clamp(x / s, ±448)) for RF_RULE_DIV, e4m3(x * inv) for
     * RF_RULE_MUL, row by row into dst (dst_stride bytes apart). */
    void (*quant_bf16)(const uint16_t *src, size_t rows, size_t cols, size_t stride,
                       uint8_t *dst, size_t dst_stride, float s, float inv, int rule);
    void (*quant_f32)(const float *src, size_t rows, size_t cols, size_t stride, uint8_t *dst,
                      size_t dst_stride, float s, float inv, int rule);
};

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

static inline float rf_fp8_apply(float x, float s, float inv, int rule)
{
    if (rule == RF_RULE_MUL)
        return x * inv;
    float y = x / s;
    return y < -RF_E4M3_MAX ? -RF_E4M3_MAX : (y > RF_E4M3_MAX ? RF_E4M3_MAX : y);
}

static inline float rf_bf16_f32(uint16_t v)
{
    return rf_bits_f32((uint32_t)v << 16);
}

#endif
