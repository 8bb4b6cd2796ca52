/* hf_view.c — the global HF tensors a model expects, as a view over an HF
 * checkpoint (checked against the spec's shapes; native FP8 sources with
 * their scales). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert_int.h"
#include "refit/log.h"
#include "refit/status.h"

/* ------------------------------------------------------------------ */
/* Expected HF tensors */

struct expect_ctx {
    const refit_model_t *m;
    const struct refit_convert_opts *o;
    refit_hf_view_t *v;
};

static int expect_add(struct expect_ctx *c, char *name, int ndim, int64_t rows, int64_t cols)
{
    if (!name)
        return REFIT_ENOMEM;
    if (c->o && c->o->n_skip && rf_match_any(name, c->o->skip, c->o->n_skip)) {
        free(name);
        return 0;
    }
    refit_hf_view_t *v = c->v;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        struct vt *n = realloc(v->t, cap * sizeof(*n));
        if (!n) {
            free(name);
            return REFIT_ENOMEM;
        }
        v->t = n;
        v->cap = cap;
    }
    struct vt *t = &v->t[v->n++];
    memset(t, 0, sizeof(*t));
    t->t.name = name;
    t->t.ndim = ndim;
    t->t.shape[0] = rows;
    t->t.shape[1] = ndim == 2 ? cols : 0;
    return 0;
}

static int expect_instance(void *arg, const struct refit_model_entry *e, int64_t layer)
{
    struct expect_ctx *c = arg;
    bool expert = e->role == REFIT_ROLE_EXPERT_COLUMN || e->role == REFIT_ROLE_EXPERT_ROW;
    int64_t ne = expert ? c->m->experts : 1;
    const struct rf_entry_val *ev = rf_entry_val(c->m, e);
    for (int64_t x = 0; x < ne; x++)
        for (int i = 0; i < ev->n_parts; i++) {
            int rc = expect_add(c, rf_model_name(e->hf[i], layer, expert ? x : -1), ev->ndim, ev->rows[i],
                                ev->cols);
            if (rc)
                return rc;
        }
    return 0;
}

static int vt_cmp(const void *a, const void *b)
{
    return strcmp(((const struct vt *)a)->t.name, ((const struct vt *)b)->t.name);
}

struct vt *rf_view_find(const refit_hf_view_t *v, const char *name)
{
    struct vt key;
    key.t.name = name;
    return bsearch(&key, v->t, v->n, sizeof(*v->t), vt_cmp);
}

int rf_view_create(const refit_model_t *m, const char *dir, const struct refit_convert_opts *o,
                   refit_hf_view_t **out)
{
    refit_hf_view_t *v = calloc(1, sizeof(*v));
    if (!v)
        return REFIT_ENOMEM;
    v->dir = strdup(dir);
    struct expect_ctx c = {m, o, v};
    int rc = v->dir ? rf_model_instances_ex(m, false, rf_model_mtp_on(m, o), expect_instance, &c) : REFIT_ENOMEM;
    if (rc) {
        refit_hf_view_close(v);
        return rc;
    }
    qsort(v->t, v->n, sizeof(*v->t), vt_cmp);
    for (size_t i = 1; i < v->n; i++)
        if (!strcmp(v->t[i - 1].t.name, v->t[i].t.name)) {
            rc = refit_error_set(REFIT_EPROTO, "model plugin %s: HF tensor '%s' appears twice in its table",
                                 m->plugin->name, v->t[i].t.name);
            refit_hf_view_close(v);
            return rc;
        }
    *out = v;
    return 0;
}

static int float_dtype(enum refit_dtype d)
{
    return d == REFIT_DTYPE_BF16 || d == REFIT_DTYPE_F16 || d == REFIT_DTYPE_F32;
}

static int shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t len = 0;
    len += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (len < n)
        snprintf(buf + len, n - len, "]");
    return 0;
}

int rf_view_check_shape(const char *where, const char *name, const struct refit_st_tensor *got, int ndim,
                        const int64_t *want)
{
    bool ok = got->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = got->shape[i] == want[i];
    if (!float_dtype(got->dtype) && got->dtype != REFIT_DTYPE_F8_E4M3)
        return refit_error_set(REFIT_EPROTO, "%s: tensor '%s' has dtype %s; expected BF16, F16 or F32",
                               where, name, refit_dtype_name(got->dtype));
    if (ok)
        return 0;
    char a[128], b[128];
    shape_str(a, sizeof(a), got->ndim, got->shape);
    shape_str(b, sizeof(b), ndim, want);
    return refit_error_set(REFIT_EPROTO, "%s: tensor '%s' has shape %s; the model's config says %s", where,
                           name, a, b);
}

/* The block multipliers of a native FP8 tensor: DeepSeek's format (its
 * README_WEIGHTS.md), float32 <name>_scale_inv of [ceil(N/128),
 * ceil(K/128)], quantization_config.weight_block_size [128, 128].  Other
 * grids or per-tensor scales are refused rather than misread. */
static int native_fp8_scale(const refit_st_checkpoint_t *ck, const char *dir, const struct refit_st_tensor *t,
                            const struct refit_st_tensor **out)
{
    char sn[1024];
    if (t->ndim != 2 || (size_t)snprintf(sn, sizeof(sn), "%s_scale_inv", t->name) >= sizeof(sn))
        return refit_error_set(REFIT_EPROTO, "%s: F8_E4M3 tensor '%s' is not a 2-D weight with block scales", dir,
                               t->name);
    const struct refit_st_tensor *s = refit_st_checkpoint_find(ck, sn);
    int64_t br = (t->shape[0] + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
    int64_t bc = (t->shape[1] + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
    if (!s || s->dtype != REFIT_DTYPE_F32 || s->ndim != 2 || s->shape[0] != br || s->shape[1] != bc ||
        s->nbytes < (size_t)(br * bc) * sizeof(float))
        return refit_error_set(REFIT_EPROTO,
                               "%s: F8_E4M3 tensor '%s' needs '%s' as F32 [%lld, %lld] (128x128 blocks, "
                               "DeepSeek's FP8 format); %s",
                               dir, t->name, sn, (long long)br, (long long)bc,
                               s ? "it has another dtype or shape" : "it is missing");
    *out = s;
    return 0;
}

int refit_hf_view_open(const refit_model_t *m, const char *dir, const struct refit_convert_opts *o,
                       refit_hf_view_t **out)
{
    if (!m || !dir || !out)
        return refit_error_set(REFIT_EINVAL, "refit_hf_view_open: NULL argument");
    refit_hf_view_t *v;
    int rc = rf_view_create(m, dir, o, &v);
    if (rc)
        return rc;
    rc = refit_st_checkpoint_open(dir, &v->ck);
    for (size_t i = 0; !rc && i < v->n; i++) {
        struct vt *t = &v->t[i];
        const struct refit_st_tensor *got = refit_st_checkpoint_find(v->ck, t->t.name);
        if (!got) {
            rc = refit_error_set(REFIT_ENOENT, "checkpoint %s: tensor '%s' is missing (model %s)", dir,
                                 t->t.name, m->model_type);
            break;
        }
        rc = rf_view_check_shape(dir, t->t.name, got, t->t.ndim, t->t.shape);
        if (!rc && got->dtype == REFIT_DTYPE_F8_E4M3)
            rc = native_fp8_scale(v->ck, dir, got, &t->scale);
        if (!rc) {
            t->t.dtype = got->dtype;
            t->t.data = got->data;
            t->t.nbytes = got->nbytes;
            t->t.file = got->file;
        }
    }
    if (rc) {
        refit_hf_view_close(v);
        return rc;
    }
    *out = v;
    return 0;
}

const struct refit_st_tensor *refit_hf_view_find(const refit_hf_view_t *v, const char *name)
{
    struct vt *t = v ? rf_view_find(v, name) : NULL;
    return t && t->t.data ? &t->t : NULL;
}

void refit_hf_view_close(refit_hf_view_t *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++) {
        free((char *)v->t[i].t.name);
        free(v->t[i].owned);
    }
    free(v->t);
    refit_st_checkpoint_close(v->ck);
    free(v->dir);
    free(v);
}

/* Directory names come from the user: refuse one too long for a path
 * rather than open a truncated name. */
int rf_dir_ok(const char *dir)
{
    if (strlen(dir) > 4000)
        return refit_error_set(REFIT_EINVAL, "directory name of %zu bytes is too long", strlen(dir));
    return 0;
}
