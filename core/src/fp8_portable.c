/* fp8_portable.c — the FP8 kernels in plain C: REFIT_FP8_IMPL_SCALAR, the
 * path every CPU has.  Written so that the compiler can vectorize it for
 * the baseline target (SSE2 on x86-64, NEON on arm64): no branches in the
 * cast, one block-row segment per loop with its scale fixed.  Built with
 * -ftree-vectorize -fno-trapping-math where supported: the latter only lets
 * the compiler evaluate both arms of a select (no FP exception is ever
 * observed here); results stay IEEE, the same bytes as the reference. */
#include "fp8_impl.h"
#include "refit/fp8.h"

static void scalar_amax_bf16(const uint16_t *src, size_t rows, size_t cols, size_t stride,
                             uint16_t *m)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t c0 = 0; c0 < cols; c0 += REFIT_FP8_BLOCK) {
            const uint16_t *p = src + r * stride + c0;
            size_t n = cols - c0 < REFIT_FP8_BLOCK ? cols - c0 : REFIT_FP8_BLOCK;
            m[c0 / REFIT_FP8_BLOCK] = rf_fp8_amax_run_bf16(p, n, m[c0 / REFIT_FP8_BLOCK]);
        }
}

static void scalar_amax_f32(const float *src, size_t rows, size_t cols, size_t stride,
                            uint32_t *m)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t c0 = 0; c0 < cols; c0 += REFIT_FP8_BLOCK) {
            const float *p = src + r * stride + c0;
            size_t n = cols - c0 < REFIT_FP8_BLOCK ? cols - c0 : REFIT_FP8_BLOCK;
            m[c0 / REFIT_FP8_BLOCK] = rf_fp8_amax_run_f32(p, n, m[c0 / REFIT_FP8_BLOCK]);
        }
}

/* Plain C, one block row segment at a time with its scale fixed and the
 * rule hoisted out of the loop, so that the compiler may vectorize it. */
static void scalar_quant_bf16(const uint16_t *src, size_t rows, size_t cols, size_t stride,
                              uint8_t *dst, size_t dst_stride, const float *s, const float *inv,
                              int rule, const struct rf_fp8_next *next)
{
    (void)next; /* compute-bound throughout: nothing to overlap */
    for (size_t r = 0; r < rows; r++)
        for (size_t c0 = 0; c0 < cols; c0 += REFIT_FP8_BLOCK) {
            const uint16_t *p = src + r * stride + c0;
            uint8_t *q = dst + r * dst_stride + c0;
            size_t n = cols - c0 < REFIT_FP8_BLOCK ? cols - c0 : REFIT_FP8_BLOCK;
            const float sb = s[c0 / REFIT_FP8_BLOCK], ib = inv[c0 / REFIT_FP8_BLOCK];
            if (rule == RF_RULE_MUL)
                for (size_t c = 0; c < n; c++)
                    q[c] = rf_e4m3_branchless(rf_bf16_f32(p[c]) * ib);
            else
                for (size_t c = 0; c < n; c++)
                    q[c] = rf_e4m3_branchless(rf_fp8_apply(rf_bf16_f32(p[c]), sb, ib, RF_RULE_DIV));
        }
}

static void scalar_quant_f32(const float *src, size_t rows, size_t cols, size_t stride,
                             uint8_t *dst, size_t dst_stride, const float *s, const float *inv,
                             int rule, const struct rf_fp8_next *next)
{
    (void)next;
    for (size_t r = 0; r < rows; r++)
        for (size_t c0 = 0; c0 < cols; c0 += REFIT_FP8_BLOCK) {
            const float *p = src + r * stride + c0;
            uint8_t *q = dst + r * dst_stride + c0;
            size_t n = cols - c0 < REFIT_FP8_BLOCK ? cols - c0 : REFIT_FP8_BLOCK;
            const float sb = s[c0 / REFIT_FP8_BLOCK], ib = inv[c0 / REFIT_FP8_BLOCK];
            if (rule == RF_RULE_MUL)
                for (size_t c = 0; c < n; c++)
                    q[c] = rf_e4m3_branchless(p[c] * ib);
            else
                for (size_t c = 0; c < n; c++)
                    q[c] = rf_e4m3_branchless(rf_fp8_apply(p[c], sb, ib, RF_RULE_DIV));
        }
}

const struct rf_fp8_kernels rf_fp8_scalar_kernels = {
    .amax_bf16 = scalar_amax_bf16,
    .amax_f32 = scalar_amax_f32,
    .quant_bf16 = scalar_quant_bf16,
    .quant_f32 = scalar_quant_f32,
};
