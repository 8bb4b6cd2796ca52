/* convert_int.h — the HF-tensor view shared by hf_view.c (HF checkpoints),
 * convert_shards.c (trainer shards reassembled) and convert.c (the
 * conversion engine); not installed. */
#ifndef REFIT_CONVERT_INT_H
#define REFIT_CONVERT_INT_H

#include "model_int.h"

struct vt {
    struct refit_st_tensor t; /* t.data NULL until filled (Megatron views) */
    void *owned;
    size_t covered;           /* elements filled from shards */
    /* A native FP8 source (t.dtype F8_E4M3, as DeepSeek-V3 and Kimi-K2
     * ship): its <name>_scale_inv, float32 [ceil(N/128), ceil(K/128)].
     * Read as bf16 (dequantized, see fp8_dequant_row) unless an FP8
     * destination on the same block grid takes the bytes as they are. */
    const struct refit_st_tensor *scale;
};

struct refit_hf_view {
    refit_st_checkpoint_t *ck; /* HF checkpoint, or NULL */
    struct vt *t;              /* expected tensors, sorted by name */
    size_t n, cap;
    char *dir;
};

/* The expected tensor of that name; NULL when the model has none. */
struct vt *rf_view_find(const refit_hf_view_t *v, const char *name);
/* An empty view of the tensors m expects (data not read yet). */
int rf_view_create(const refit_model_t *m, const char *dir, const struct refit_convert_opts *o,
                   refit_hf_view_t **out);
/* REFIT_EPROTO (error set) naming where and name when got is not ndim x want. */
int rf_view_check_shape(const char *where, const char *name, const struct refit_st_tensor *got, int ndim,
                        const int64_t *want);
/* Directory names come from the user: REFIT_EINVAL for one too long for a path. */
int rf_dir_ok(const char *dir);

#endif
