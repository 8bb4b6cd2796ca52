/* refit/fp8.h — bf16/fp32 helpers and FP8 (e4m3fn) 128x128 block
 * quantization in the DeepSeek-V3 format, byte-exact with the two rules of
 * ../shared/conversion.md section 4 (trainer, deepgemm); docs/fp8.md
 * describes them.  Vectorised paths (AVX2, AVX-512) are
 * chosen at run time and give the same bytes as the scalar path. */
#ifndef REFIT_FP8_H
#define REFIT_FP8_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define REFIT_FP8_BLOCK 128

enum refit_fp8_rule {
    REFIT_FP8_TRAINER = 0,  /* s = max(amax/448, floor=1e-12); q = e4m3(clamp(x/s, ±448)) */
    REFIT_FP8_DEEPGEMM = 1  /* s = max(amax, floor=1e-4)/448;  q = e4m3(x*(1/s)) */
};

enum refit_fp8_impl {
    REFIT_FP8_IMPL_AUTO = 0,
    REFIT_FP8_IMPL_SCALAR,
    REFIT_FP8_IMPL_AVX2,
    REFIT_FP8_IMPL_AVX512
};

struct refit_fp8_params {
    enum refit_fp8_rule rule;
    double floor; /* <= 0: the rule's default floor (1e-12, 1e-4) */
    enum refit_fp8_impl impl;
};

float refit_bf16_to_f32(uint16_t v);
uint16_t refit_f32_to_bf16(float v); /* round to nearest even, NaN kept */
/* PyTorch's float -> float8_e4m3fn: nearest-even, NaN (0x7f|sign) for
 * |v| > 464 and NaN input, no infinities.  464 itself is a tie between 448
 * and the NaN code and goes to the even 448, as PyTorch's table shows. */
uint8_t refit_f32_to_e4m3(float v);
float refit_e4m3_to_f32(uint8_t v);
/* Array forms of the conversions above (same results element by element). */
void refit_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void refit_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n);

/* Whether impl is usable on this CPU. */
int refit_fp8_impl_available(enum refit_fp8_impl impl);
const char *refit_fp8_impl_name(enum refit_fp8_impl impl);
/* What REFIT_FP8_IMPL_AUTO picks on this CPU (the widest available). */
enum refit_fp8_impl refit_fp8_impl_best(void);
/* The rule's default floor: 1e-12 (trainer), 1e-4 (deepgemm). */
double refit_fp8_default_floor(enum refit_fp8_rule rule);

/* Quantize a bf16 matrix [rows, cols] whose rows are `stride` elements
 * apart (src aligned to its element type) into dst ([rows, cols], contiguous) and scales
 * ([ceil(rows/128), ceil(cols/128)], row-major, fp32).  Returns
 * REFIT_ENUMERIC on a NaN or Inf input (the caller names the tensor; the
 * message gives the row and column), REFIT_EINVAL for stride < cols, a
 * floor that overflows or underflows fp32 (for deepgemm: below 1.4e-36,
 * where 1/s would overflow), or an implementation this
 * CPU lacks.  p may be NULL (trainer rule, default floor, best impl). */
int refit_fp8_quantize_bf16(const uint16_t *src, size_t rows, size_t cols, size_t stride,
                            uint8_t *dst, float *scales, const struct refit_fp8_params *p);
/* The same from fp32 input. */
int refit_fp8_quantize_f32(const float *src, size_t rows, size_t cols, size_t stride,
                           uint8_t *dst, float *scales, const struct refit_fp8_params *p);

#ifdef __cplusplus
}
#endif
#endif
