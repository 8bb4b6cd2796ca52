/* fp8.c — bf16/fp32/e4m3 conversions and the 128x128 block quantization
 * driver: it walks the blocks, turns each block's amax into the rule's
 * scale, and hands the amax and cast passes to the portable, AVX2 or
 * AVX-512 kernels (fp8_portable.c, fp8_avx2.c, fp8_avx512.c) chosen at run
 * time. */
#include <math.h>

#include "fp8_impl.h"
#include "refit/fp8.h"
#include "refit/status.h"

/* --- single values ---------------------------------------------------- */

float refit_bf16_to_f32(uint16_t v)
{
    return rf_bf16_f32(v);
}

uint16_t refit_f32_to_bf16(float v)
{
    uint32_t b = rf_f32_bits(v);
    if ((b & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign and payload top, force quiet */
        return (uint16_t)((b >> 16) | 0x40u);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

uint8_t refit_f32_to_e4m3(float v)
{
    return rf_e4m3_scalar(v);
}

float refit_e4m3_to_f32(uint8_t v)
{
    unsigned e = (v >> 3) & 0xfu, m = v & 7u;
    float mag;
    if (e == 15 && m == 7)
        mag = NAN;
    else if (e == 0)
        mag = ldexpf((float)m, -9);
    else
        mag = ldexpf((float)(8 + m), (int)e - 10);
    return (v & 0x80) ? -mag : mag;
}

void refit_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = rf_bf16_f32(src[i]);
}

void refit_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = refit_f32_to_bf16(src[i]);
}

/* --- implementation choice -------------------------------------------- */

int refit_fp8_impl_available(enum refit_fp8_impl impl)
{
    switch (impl) {
    case REFIT_FP8_IMPL_AUTO:
    case REFIT_FP8_IMPL_SCALAR:
        return 1;
#if defined(RF_HAVE_FP8_AVX2)
    case REFIT_FP8_IMPL_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
#endif
#if defined(RF_HAVE_FP8_AVX512)
    case REFIT_FP8_IMPL_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
#endif
    default:
        return 0;
    }
}

const char *refit_fp8_impl_name(enum refit_fp8_impl impl)
{
    switch (impl) {
    case REFIT_FP8_IMPL_AUTO: return "auto";
    case REFIT_FP8_IMPL_SCALAR: return "scalar";
    case REFIT_FP8_IMPL_AVX2: return "avx2";
    case REFIT_FP8_IMPL_AVX512: return "avx512";
    default: return "unknown";
    }
}

enum refit_fp8_impl refit_fp8_impl_best(void)
{
    if (refit_fp8_impl_available(REFIT_FP8_IMPL_AVX512))
        return REFIT_FP8_IMPL_AVX512;
    if (refit_fp8_impl_available(REFIT_FP8_IMPL_AVX2))
        return REFIT_FP8_IMPL_AVX2;
    return REFIT_FP8_IMPL_SCALAR;
}

double refit_fp8_default_floor(enum refit_fp8_rule rule)
{
    return rule == REFIT_FP8_DEEPGEMM ? 1e-4 : 1e-12;
}

static const struct rf_fp8_kernels *kernels_for(enum refit_fp8_impl impl)
{
    if (impl == REFIT_FP8_IMPL_AUTO)
        impl = refit_fp8_impl_best();
    if (!refit_fp8_impl_available(impl))
        return NULL;
    switch (impl) {
#if defined(RF_HAVE_FP8_AVX2)
    case REFIT_FP8_IMPL_AVX2: return &rf_fp8_avx2_kernels;
#endif
#if defined(RF_HAVE_FP8_AVX512)
    case REFIT_FP8_IMPL_AVX512: return &rf_fp8_avx512_kernels;
#endif
    default: return &rf_fp8_scalar_kernels;
    }
}

/* --- block driver ----------------------------------------------------- */

struct job {
    const struct rf_fp8_kernels *k;
    int rule;
    float floor;
};

/* The rule and floor checks, shared with the CUDA path (cuda/fp8.cu) so
 * that both refuse the same parameters with the same messages. */
int rf_fp8_params_check(const struct refit_fp8_params *p, int *rule_out, float *floor_out)
{
    enum refit_fp8_rule rule = p ? p->rule : REFIT_FP8_TRAINER;
    if (rule != REFIT_FP8_TRAINER && rule != REFIT_FP8_DEEPGEMM)
        return refit_error_set(REFIT_EINVAL, "fp8: unknown rule %d", (int)rule);
    /* Zero means the default, so that a zeroed params struct is valid; a
     * floor of 0 itself would make an all-zero block 0/0 = NaN. */
    double floor = p && p->floor > 0 ? p->floor : refit_fp8_default_floor(rule);
    if (isnan(floor) || !isfinite((float)floor) || (float)floor == 0.0f)
        return refit_error_set(REFIT_EINVAL, "fp8: floor %g is not a positive finite fp32", floor);
    /* deepgemm multiplies by 1/s: with s below ~2.9e-39 that is Inf, and
     * 0 * Inf gives a NaN whose sign is the CPU's, not the weight's. */
    float fl = (float)floor;
    if (rule == REFIT_FP8_DEEPGEMM && !isfinite(1.0f / (fl / RF_E4M3_MAX)))
        return refit_error_set(REFIT_EINVAL, "fp8: floor %g is too small for the deepgemm rule "
                               "(1/s overflows fp32; use 1.4e-36 or more)", floor);
    *rule_out = (int)rule;
    *floor_out = fl;
    return 0;
}

static int check_args(const void *src, size_t rows, size_t cols, size_t stride, const void *dst,
                      const float *scales, const struct refit_fp8_params *p, struct job *j)
{
    int rule;
    float fl;
    int rc = rf_fp8_params_check(p, &rule, &fl);
    if (rc)
        return rc;
    if ((rows && cols) && (!src || !dst || !scales))
        return refit_error_set(REFIT_EINVAL, "fp8: NULL buffer");
    if (stride < cols)
        return refit_error_set(REFIT_EINVAL, "fp8: row stride %zu is less than %zu columns",
                               stride, cols);
    j->k = kernels_for(p ? p->impl : REFIT_FP8_IMPL_AUTO);
    if (!j->k)
        return refit_error_set(REFIT_EINVAL, "fp8: implementation %s is not available on this "
                               "CPU", refit_fp8_impl_name(p->impl));
    j->rule = rule == REFIT_FP8_DEEPGEMM ? RF_RULE_MUL : RF_RULE_DIV;
    j->floor = fl;
    return 0;
}

/* The rule's scale from the block's amax, in fp32 as PyTorch computes it:
 * trainer s = max(amax / 448, floor); deepgemm s = max(amax, floor) / 448
 * and the multiplier is the fp32 reciprocal of that s. */
static void block_scale(const struct job *j, float amax, float *s, float *inv)
{
    if (j->rule == RF_RULE_DIV) {
        float t = amax / RF_E4M3_MAX;
        *s = t < j->floor ? j->floor : t;
        *inv = 0.0f;
    } else {
        float a = amax < j->floor ? j->floor : amax;
        *s = a / RF_E4M3_MAX;
        *inv = 1.0f / *s;
    }
}

static int nonfinite_at(size_t r0, size_t c0, size_t rows, size_t cols, size_t stride,
                        const void *src, int is_bf16)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            float v = is_bf16 ? rf_bf16_f32(((const uint16_t *)src)[r * stride + c])
                              : ((const float *)src)[r * stride + c];
            if (!isfinite(v))
                return refit_error_set(REFIT_ENUMERIC, "%s at row %zu, column %zu",
                                       isnan(v) ? "NaN" : "Inf", r0 + r, c0 + c);
        }
    return refit_error_set(REFIT_ENUMERIC, "non-finite value in block at row %zu, column %zu", r0,
                           c0);
}

/* One band of <= 128 rows by one chunk of <= RF_FP8_CHUNK_BLOCKS blocks:
 * amax pass, scales, cast pass. */
static int quantize_chunk(const struct job *j, const void *src, int is_bf16, size_t r0, size_t c0,
                          size_t nr, size_t nc, size_t stride, uint8_t *dst, size_t cols,
                          float *scales, size_t ncb, const struct rf_fp8_next *next)
{
    const size_t B = REFIT_FP8_BLOCK, nb = (nc + B - 1) / B;
    uint32_t m[RF_FP8_CHUNK_BLOCKS] = {0};
    uint16_t m16[RF_FP8_CHUNK_BLOCKS] = {0};
    float s[RF_FP8_CHUNK_BLOCKS], inv[RF_FP8_CHUNK_BLOCKS];
    const uint16_t *sb = is_bf16 ? (const uint16_t *)src + r0 * stride + c0 : NULL;
    const float *sf = is_bf16 ? NULL : (const float *)src + r0 * stride + c0;
    /* Edge blocks: the zero padding of the definition never raises the max
     * of |x|, so the amax over the real elements is the amax. */
    if (is_bf16) {
        j->k->amax_bf16(sb, nr, nc, stride, m16);
        for (size_t b = 0; b < nb; b++)
            m[b] = (uint32_t)m16[b] << 16; /* the fp32 bits of the same value */
    } else {
        j->k->amax_f32(sf, nr, nc, stride, m);
    }
    for (size_t b = 0; b < nb; b++) {
        if (m[b] >= 0x7f800000u) {
            size_t w = nc - b * B < B ? nc - b * B : B;
            return nonfinite_at(r0, c0 + b * B, nr, w, stride,
                                is_bf16 ? (const void *)(sb + b * B) : (const void *)(sf + b * B),
                                is_bf16);
        }
        block_scale(j, rf_bits_f32(m[b]), &s[b], &inv[b]);
        scales[(r0 / B) * ncb + c0 / B + b] = s[b];
    }
    uint8_t *d = dst + r0 * cols + c0;
    if (is_bf16)
        j->k->quant_bf16(sb, nr, nc, stride, d, cols, s, inv, j->rule, next);
    else
        j->k->quant_f32(sf, nr, nc, stride, d, cols, s, inv, j->rule, next);
    return 0;
}

static int quantize(const void *src, int is_bf16, size_t rows, size_t cols, size_t stride,
                    uint8_t *dst, float *scales, const struct refit_fp8_params *p)
{
    struct job j = {0};
    int rc = check_args(src, rows, cols, stride, dst, scales, p, &j);
    if (rc)
        return rc;
    const size_t B = REFIT_FP8_BLOCK, CH = RF_FP8_CHUNK_BLOCKS * B, ncb = (cols + B - 1) / B;
    const size_t esz = is_bf16 ? 2 : 4;
    for (size_t r0 = 0; r0 < rows; r0 += B)
        for (size_t c0 = 0; c0 < cols && !rc; c0 += CH) {
            size_t nr = rows - r0 < B ? rows - r0 : B, nc = cols - c0 < CH ? cols - c0 : CH;
            size_t r1 = c0 + CH < cols ? r0 : r0 + B, c1 = c0 + CH < cols ? c0 + CH : 0;
            struct rf_fp8_next next = {NULL, 0, 0, stride * esz};
            if (r1 < rows) {
                next.base = (const char *)src + (r1 * stride + c1) * esz;
                next.rows = rows - r1 < B ? rows - r1 : B;
                next.row_bytes = (cols - c1 < CH ? cols - c1 : CH) * esz;
            }
            rc = quantize_chunk(&j, src, is_bf16, r0, c0, nr, nc, stride, dst, cols, scales, ncb,
                                &next);
        }
    return rc;
}

int refit_fp8_quantize_bf16(const uint16_t *src, size_t rows, size_t cols, size_t stride,
                            uint8_t *dst, float *scales, const struct refit_fp8_params *p)
{
    return quantize(src, 1, rows, cols, stride, dst, scales, p);
}

int refit_fp8_quantize_f32(const float *src, size_t rows, size_t cols, size_t stride,
                           uint8_t *dst, float *scales, const struct refit_fp8_params *p)
{
    return quantize(src, 0, rows, cols, stride, dst, scales, p);
}
