/* standin.c — the trainer stand-in's weight change (see standin.h). */
#include <stdlib.h>
#include <string.h>

#include "refit/convert.h"
#include "refit/standin.h"
#include "refit/status.h"

/* 0 for version 1, then 1..7 cycling: consecutive versions always differ. */
static uint64_t mask_of(uint64_t v)
{
    return v <= 1 ? 0 : (v - 2) % 7 + 1;
}

int refit_standin_step(void *data, size_t nbytes, enum refit_dtype dtype, uint64_t from, uint64_t to)
{
    if (from == 0 || to == 0)
        return refit_error_set(REFIT_EINVAL, "stand-in versions start at 1");
    uint64_t m = mask_of(from) ^ mask_of(to);
    size_t es = refit_dtype_size(dtype);
    if (dtype != REFIT_DTYPE_BF16 && dtype != REFIT_DTYPE_F16 && dtype != REFIT_DTYPE_F32 &&
        dtype != REFIT_DTYPE_F64)
        return refit_error_set(REFIT_ENOTSUP, "stand-in weight change of %s", refit_dtype_name(dtype));
    if (nbytes % es)
        return refit_error_set(REFIT_EINVAL, "stand-in: %zu bytes is not a whole number of %s", nbytes,
                               refit_dtype_name(dtype));
    if (!m)
        return 0;
    /* The low bits of the first byte of each little-endian element are
     * mantissa bits for every floating type. */
    unsigned char *p = data;
    for (size_t i = 0; i < nbytes; i += es)
        p[i] ^= (unsigned char)m;
    return 0;
}

void refit_standin_shard_free(struct refit_standin_shard *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->t[i].name);
    free(s->t);
    free(s->arena);
    memset(s, 0, sizeof(*s));
}

int refit_standin_shard_load(const struct refit_model *m, const char *hf_dir, const struct refit_parallel *par,
                       struct refit_standin_shard *out)
{
    memset(out, 0, sizeof(*out));
    refit_hf_view_t *v = NULL;
    refit_layout_t *lay = NULL;
    struct refit_megatron_rank r = {
        .tp = par->tp_size ? par->tp_size : 1,
        .ep = par->ep_size ? par->ep_size : 1,
        .etp = 1,
        .tp_rank = par->tp_rank,
        .ep_rank = par->ep_rank,
    };
    int rc = refit_hf_view_open(m, hf_dir, NULL, &v);
    if (!rc)
        rc = refit_layout_megatron(m, &r, NULL, &lay);
    if (rc)
        goto out;
    size_t n = refit_layout_count(lay);
    out->t = calloc(n ? n : 1, sizeof(*out->t));
    if (!out->t) {
        rc = REFIT_ENOMEM;
        goto out;
    }
    /* Sizes first: one arena, 256-byte aligned tensors. */
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const struct refit_layout_tensor *lt = refit_layout_at(lay, i);
        enum refit_dtype dt = REFIT_DTYPE_BF16;
        if (lt->n_pieces) {
            const struct refit_st_tensor *src =
                refit_hf_view_find(v, refit_layout_source(lay, lt->pieces[0].src)->name);
            /* a native FP8 source reads as bf16 (refit_convert_tensor dequantizes it) */
            if (src)
                dt = src->dtype == REFIT_DTYPE_F8_E4M3 ? REFIT_DTYPE_BF16 : src->dtype;
        }
        struct refit_standin_tensor *t = &out->t[i];
        t->name = strdup(lt->name);
        if (!t->name) {
            rc = REFIT_ENOMEM;
            goto out;
        }
        out->n++;
        t->dtype = dt;
        t->ndim = lt->ndim;
        size_t elems = 1;
        for (int d = 0; d < lt->ndim; d++) {
            t->shape[d] = lt->shape[d];
            elems *= (size_t)lt->shape[d];
        }
        t->nbytes = elems * refit_dtype_size(dt);
        t->data = (void *)(uintptr_t)total;
        total += (t->nbytes + 255) & ~(size_t)255;
    }
    if (posix_memalign(&out->arena, 4096, total ? total : 1)) {
        rc = REFIT_ENOMEM;
        goto out;
    }
    memset(out->arena, 0, total); /* vocabulary padding rows stay zero */
    out->bytes = total;
    for (size_t i = 0; i < n; i++) {
        const struct refit_layout_tensor *lt = refit_layout_at(lay, i);
        struct refit_standin_tensor *t = &out->t[i];
        t->data = (char *)out->arena + (uintptr_t)t->data;
        struct refit_converted cv;
        rc = refit_convert_tensor(v, lay, i, NULL, &cv);
        if (!rc && (cv.dtype != t->dtype || cv.nbytes != t->nbytes))
            rc = refit_error_set(REFIT_EPROTO, "trainer shard '%s': its HF sources differ in dtype", lt->name);
        if (!rc)
            memcpy(t->data, cv.data, t->nbytes);
        refit_converted_fini(&cv);
        if (rc)
            goto out;
    }
out:
    refit_layout_destroy(lay);
    refit_hf_view_close(v);
    if (rc)
        refit_standin_shard_free(out);
    return rc;
}
