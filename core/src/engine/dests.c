/* dests.c — a receiver's destinations (receiver.h, stage "dests"): one per
 * tensor of its target layout, plus the FP8 scale tensor of each FP8 one;
 * bound to the caller's memory (refit_receiver_bind) or owned by refit
 * (refit_receiver_allocate), their dtypes completed from the sources, and
 * their place in staging. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devpath.h"
#include "receiver.h"
#include "refit/fp8.h"

static int add_dst(struct rf_dests *ds, const char *name, enum refit_dtype dt, int ndim, const int64_t *shape,
                   size_t lt, int is_scale)
{
    struct rf_dst *nd = realloc(ds->d, (ds->n + 1) * sizeof(*nd));
    if (!nd)
        return REFIT_ENOMEM;
    ds->d = nd;
    struct rf_dst *d = &nd[ds->n];
    memset(d, 0, sizeof(*d));
    d->name = strdup(name);
    if (!d->name)
        return REFIT_ENOMEM;
    d->dtype = dt;
    d->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        d->shape[i] = shape[i];
        n *= (size_t)shape[i];
    }
    d->nbytes = n * refit_dtype_size(dt);
    d->lt = lt;
    d->is_scale = is_scale;
    d->memtype = REFIT_MEM_HOST;
    ds->n++;
    return 0;
}

/* The scale tensor of an FP8 one: a float per 128 x 128 block (per expert
 * slice of a stack). */
static int add_scale(struct rf_dests *ds, const struct refit_layout_tensor *t, size_t i)
{
    int64_t s[3];
    int64_t rows = t->shape[t->ndim - 2], cols = t->shape[t->ndim - 1];
    int64_t br = (rows + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK, bc = (cols + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
    if (t->ndim == 3) {
        s[0] = t->shape[0];
        s[1] = br;
        s[2] = bc;
    } else {
        s[0] = br;
        s[1] = bc;
    }
    char name[REFIT_CATALOG_MAX_NAME + 16];
    snprintf(name, sizeof(name), "%s_scale_inv", t->name);
    ds->scale_of_lt[i] = (ptrdiff_t)ds->n;
    return add_dst(ds, name, REFIT_DTYPE_F32, t->ndim, s, i, 1);
}

int rf_dests_build(struct rf_dests *ds, const refit_layout_t *lay)
{
    size_t n = refit_layout_count(lay);
    ds->dst_of_lt = calloc(n ? n : 1, sizeof(size_t));
    ds->scale_of_lt = calloc(n ? n : 1, sizeof(ptrdiff_t));
    if (!ds->dst_of_lt || !ds->scale_of_lt)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct refit_layout_tensor *t = refit_layout_at(lay, i);
        enum refit_dtype dt = t->fp8 ? REFIT_DTYPE_F8_E4M3
                                     : (t->dtype != REFIT_DTYPE_INVALID ? t->dtype : REFIT_DTYPE_BF16);
        ds->dst_of_lt[i] = ds->n;
        ds->scale_of_lt[i] = -1;
        int rc = add_dst(ds, t->name, dt, t->ndim, t->shape, i, 0);
        if (!rc && t->fp8)
            rc = add_scale(ds, t, i);
        if (rc)
            return rc;
    }
    return 0;
}

void rf_dests_fini(struct rf_dests *ds, refit_transport_t *tp, int doubled)
{
    for (size_t i = 0; i < ds->n; i++) {
        if (ds->d[i].reg)
            refit_transport_dereg(tp, ds->d[i].reg);
        if (ds->d[i].owned && !doubled)
            free(ds->d[i].ptr);
        free(ds->d[i].name);
    }
    free(ds->d);
    free(ds->dst_of_lt);
    free(ds->scale_of_lt);
    memset(ds, 0, sizeof(*ds));
}

/* A bound dtype other than the layout's: floating destinations may differ
 * (refit casts); FP8 and scales may not. */
static int bind_dtype(const refit_receiver_t *r, struct rf_dst *d, const char *name, enum refit_dtype dtype)
{
    if (d->is_scale && dtype != REFIT_DTYPE_F32)
        return refit_error_set(REFIT_EINVAL, "receiver %s: '%s' (FP8 scales) must be F32", r->id, name);
    if (d->dtype == REFIT_DTYPE_F8_E4M3 && dtype != REFIT_DTYPE_F8_E4M3)
        return refit_error_set(REFIT_EINVAL, "receiver %s: '%s' is FP8 in this layout, bound as %s", r->id, name,
                               refit_dtype_name(dtype));
    if (dtype == d->dtype)
        return 0;
    if (dtype != REFIT_DTYPE_BF16 && dtype != REFIT_DTYPE_F32)
        return refit_error_set(REFIT_ENOTSUP, "receiver %s: '%s' as %s: bf16 and f32 only", r->id, name,
                               refit_dtype_name(dtype));
    d->nbytes = d->nbytes / refit_dtype_size(d->dtype) * refit_dtype_size(dtype);
    d->dtype = dtype;
    return 0;
}

int rf_dests_bind(refit_receiver_t *r, const char *name, void *ptr, enum refit_dtype dtype, int ndim,
                  const int64_t *shape, uint32_t memtype)
{
    struct rf_dests *ds = &r->dests;
    for (size_t i = 0; i < ds->n; i++) {
        struct rf_dst *d = &ds->d[i];
        if (strcmp(d->name, name))
            continue;
        int same = ndim == d->ndim;
        for (int k = 0; same && k < ndim; k++)
            same = shape[k] == d->shape[k];
        if (!same)
            return refit_error_set(REFIT_EINVAL, "receiver %s: '%s' is bound with another shape than "
                                   "its %s layout's", r->id, name,
                                   rf_receiver_target(r));
        int rc = bind_dtype(r, d, name, dtype);
        if (!rc && memtype == REFIT_MEM_CUDA)
            rc = rf_rcvdev_bind(r, name, ptr);
        if (rc)
            return rc;
        if (d->owned) {
            if (!r->bufs.doubled)
                free(d->ptr); /* else it lives in the staging buffer */
            d->owned = 0;
        }
        d->ptr = ptr;
        d->memtype = memtype;
        r->plan.have = 0; /* staging offsets depend on sizes */
        return 0;
    }
    return refit_error_set(REFIT_ENOENT, "receiver %s: no destination named '%s' in this layout", r->id, name);
}

int rf_dests_allocate(struct rf_dests *ds, const char *who)
{
    for (size_t i = 0; i < ds->n; i++) {
        struct rf_dst *d = &ds->d[i];
        if (d->ptr)
            continue;
        d->ptr = calloc(1, d->nbytes ? d->nbytes : 1);
        if (!d->ptr)
            return refit_error_set(REFIT_ENOMEM, "receiver %s: allocating '%s' (%zu bytes)", who, d->name,
                                   d->nbytes);
        d->owned = 1;
    }
    return 0;
}

int rf_dests_resolve(struct rf_dests *ds, const refit_layout_t *lay, const enum refit_dtype *img_dtype, int doubled)
{
    size_t nl = refit_layout_count(lay);
    for (size_t t = 0; !ds->resolved && t < nl; t++) {
        const struct refit_layout_tensor *lt = refit_layout_at(lay, t);
        struct rf_dst *d = &ds->d[ds->dst_of_lt[t]];
        if (lt->fp8 || lt->dtype != REFIT_DTYPE_INVALID || !d->owned || d->dtype == img_dtype[t])
            continue;
        size_t elems = d->nbytes / refit_dtype_size(d->dtype);
        void *np = NULL;
        if (!doubled) {
            np = calloc(1, elems * refit_dtype_size(img_dtype[t]) + 1);
            if (!np)
                return REFIT_ENOMEM;
            free(d->ptr);
        }
        d->ptr = np; /* doubled: re-pointed into staging by the buffers */
        d->dtype = img_dtype[t];
        d->nbytes = elems * refit_dtype_size(d->dtype);
    }
    ds->resolved = 1;
    return 0;
}

uint64_t rf_dests_place(struct rf_dests *ds)
{
    /* A gap after each so descriptors never merge across destinations
     * (in place needs it). */
    uint64_t staging = 0;
    for (size_t i = 0; i < ds->n; i++) {
        ds->d[i].staging_off = staging;
        staging += ((ds->d[i].nbytes + 63) & ~(uint64_t)63) + 64;
    }
    return staging;
}

size_t rf_dests_at(const struct rf_dests *ds, uint64_t off)
{
    size_t lo = 0, hi = ds->n;
    while (lo + 1 < hi) {
        size_t mid = (lo + hi) / 2;
        if (ds->d[mid].staging_off <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}
