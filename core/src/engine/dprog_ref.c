/* dprog_ref.c — the checks of a device program's operations, and its host
 * reference: the same operations on host memory, quantizing through the
 * CPU FP8 path (what `refit convert` writes).  The tests compare the
 * kernel's bytes with these. */
#include <stdlib.h>
#include <string.h>

#include "dprog.h"
#include "refit/status.h"

int rf_dop_check(const struct rf_dop *o, size_t i)
{
    if (o->kind < RF_DOP_COPY || o->kind > RF_DOP_FP8_F32)
        return refit_error_set(REFIT_EINVAL, "device program: operation %zu: unknown kind %u", i, o->kind);
    if (o->phase >= RF_DPROG_PHASES)
        return refit_error_set(REFIT_EINVAL, "device program: operation %zu: phase %u of %d", i, o->phase,
                               RF_DPROG_PHASES);
    if (!o->rows || !o->width)
        return 0;
    if (!o->src || !o->dst)
        return refit_error_set(REFIT_EINVAL, "device program: operation %zu: NULL buffer", i);
    uint64_t es = o->kind == RF_DOP_FP8_BF16 ? 2 : o->kind == RF_DOP_FP8_F32 ? 4 : 1;
    if (o->width > UINT64_MAX / es || o->src_pitch < o->width * es || (o->rows > 1 && o->src_pitch % es))
        return refit_error_set(REFIT_EINVAL, "device program: operation %zu: source pitch %llu for rows of "
                               "%llu elements of %llu bytes", i, (unsigned long long)o->src_pitch,
                               (unsigned long long)o->width, (unsigned long long)es);
    if ((uintptr_t)o->src % es)
        return refit_error_set(REFIT_EINVAL, "device program: operation %zu: source %p not aligned to %llu "
                               "bytes", i, o->src, (unsigned long long)es);
    if (o->dst_pitch < o->width)
        return refit_error_set(REFIT_EINVAL, "device program: operation %zu: destination pitch %llu for rows "
                               "of %llu", i, (unsigned long long)o->dst_pitch, (unsigned long long)o->width);
    if (o->kind != RF_DOP_COPY) {
        uint64_t ncb = (o->width + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
        if (!o->scales || o->scale_pitch < ncb)
            return refit_error_set(REFIT_EINVAL, "device program: operation %zu: scales %p with pitch %llu "
                                   "for %llu block columns", i, (void *)o->scales,
                                   (unsigned long long)o->scale_pitch, (unsigned long long)ncb);
    }
    return 0;
}

int rf_dprog_params(const struct refit_fp8_params *p, int *rule, float *floor)
{
    /* One element through the CPU quantizer checks the rule and the floor
     * as every CPU conversion does (no second copy of those rules). */
    uint16_t one = 0x3f80;
    uint8_t q;
    float s;
    int rc = refit_fp8_quantize_bf16(&one, 1, 1, 1, &q, &s, p);
    if (rc)
        return refit_error_push(rc, "device program: FP8 parameters");
    *rule = p ? (int)p->rule : REFIT_FP8_TRAINER;
    *floor = (float)(p && p->floor > 0 ? p->floor : refit_fp8_default_floor((enum refit_fp8_rule)*rule));
    return 0;
}

static int ref_fp8(const struct rf_dop *o, const struct refit_fp8_params *p)
{
    uint64_t nrb = (o->rows + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
    uint64_t ncb = (o->width + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
    uint8_t *q = malloc(o->rows * o->width);
    float *s = malloc(nrb * ncb * sizeof(float));
    int rc = q && s ? 0 : REFIT_ENOMEM;
    if (!rc && o->kind == RF_DOP_FP8_BF16)
        rc = refit_fp8_quantize_bf16(o->src, o->rows, o->width, o->src_pitch / 2, q, s, p);
    else if (!rc)
        rc = refit_fp8_quantize_f32(o->src, o->rows, o->width, o->src_pitch / 4, q, s, p);
    for (uint64_t r = 0; !rc && r < o->rows; r++)
        memcpy((char *)o->dst + r * o->dst_pitch, q + r * o->width, o->width);
    for (uint64_t b = 0; !rc && b < nrb; b++)
        memcpy(o->scales + b * o->scale_pitch, s + b * ncb, ncb * sizeof(float));
    free(q);
    free(s);
    return rc;
}

/* Phase by phase, in table order within a phase, as the kernel launches
 * run them (within a phase no operation reads what another writes). */
int rf_dprog_reference(const struct rf_dop *ops, size_t n, const struct refit_fp8_params *p, size_t *bad)
{
    for (size_t i = 0; i < n; i++) {
        int rc = rf_dop_check(&ops[i], i);
        if (rc)
            return rc;
    }
    for (size_t k = 0; k < n * RF_DPROG_PHASES; k++) {
        size_t i = k % n;
        const struct rf_dop *o = &ops[i];
        int rc = 0;
        if (o->phase != k / n || !o->rows || !o->width)
            continue;
        if (o->kind == RF_DOP_COPY) {
            for (uint64_t r = 0; r < o->rows; r++)
                memmove((char *)o->dst + r * o->dst_pitch, (const char *)o->src + r * o->src_pitch, o->width);
            continue;
        }
        rc = ref_fp8(o, p);
        if (rc == REFIT_ENUMERIC && bad)
            *bad = i;
        if (rc)
            return refit_error_push(rc, "device program: operation %zu", i);
    }
    return 0;
}
