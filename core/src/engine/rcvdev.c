/* rcvdev.c — a receiver's CUDA destinations.
 *
 * Conversion and verification stay on the host, in the staging buffer;
 * nothing reaches a device destination before the commit, so a failed pull
 * leaves the device holding the previous version.  At the commit, after the
 * fence, staging is copied into every device destination in 16 MiB pieces
 * alternating over two streams, and the commit waits for all of them.
 * The staging buffer is page-locked (cudaHostRegister) on first use so the
 * copies run at the bus's speed; it is unpinned before it is unmapped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devmem.h"
#include "devpath.h"
#include "refit/cuda_pool.h"
#include "refit/fp8_cuda.h"
#include "refit/log.h"

#define H2D_CHUNK ((size_t)16 << 20)

struct rf_rcvdev {
    int device;
    struct rf_dcopy *cp;
    struct refit_fp8_cuda *q; /* resident FP8 conversions (legacy stream) */
    int q_used;
    int saved, active;
    void *pinned;
    void *pinned_scratch; /* delta_rcvdev.c copies whole descriptors from scratch */
};

int rf_rcvdev_bind(refit_receiver_t *r, const char *name, const void *ptr)
{
    char what[1200];
    snprintf(what, sizeof(what), "receiver %s: '%s'", r->id, name);
    if (r->ctx->in_place) {
        const struct refit_tp_caps *c = refit_transport_caps(r->tp);
        if (!(c->memtypes & REFIT_MEMTYPE_BIT(REFIT_MEM_CUDA)))
            return refit_error_set(REFIT_EINVAL, "%s is device memory and refit.in_place is on, but transport "
                                   "'%s' reaches host memory only: it cannot land in place (turn "
                                   "refit.in_place off: refit then stages on the host and copies to the "
                                   "device at commit)", what, refit_transport_plugin_name(r->tp));
        /* Resident: READs land in device memory (rf_rcvdev_resident). */
    }
    int device = -1;
    int rc = rf_dev_locate(ptr, what, &device);
    if (rc)
        return rc;
    if (r->dev) {
        if (r->dev->device != device)
            return refit_error_set(REFIT_EINVAL, "%s is on CUDA device %d, this receiver's other device "
                                   "destinations on device %d (one device per receiver)", what, device,
                                   r->dev->device);
        return 0;
    }
    struct rf_rcvdev *d = calloc(1, sizeof(*d));
    if (!d)
        return REFIT_ENOMEM;
    d->device = device;
    d->saved = -1;
    rc = rf_dcopy_create(device, &d->cp);
    if (rc) {
        free(d);
        return refit_error_push(rc, "%s", what);
    }
    r->dev = d;
    return 0;
}

static int any_device(const refit_receiver_t *r)
{
    for (size_t i = 0; i < r->dests.n; i++)
        if (r->dests.d[i].ptr && r->dests.d[i].memtype == REFIT_MEM_CUDA)
            return 1;
    return 0;
}

void rf_rcvdev_pin_staging(refit_receiver_t *r)
{
    struct rf_rcvdev *d = r->dev;
    if (d && d->pinned != r->bufs.staging) {
        rf_dev_unpin(d->pinned);
        d->pinned = NULL;
        /* Unpinned copies are still right, only slower: say so and go on. */
        if (rf_dev_pin(r->bufs.staging, r->bufs.staging_len, "receiver: staging"))
            refit_log(REFIT_LOG_WARN, "receiver", "%s: %s (copies to the device run unpinned)", r->id,
                      refit_error_message());
        else
            d->pinned = r->bufs.staging;
        refit_error_clear();
    }
}

int rf_rcvdev_commit_start(refit_receiver_t *r)
{
    struct rf_rcvdev *d = r->dev;
    if (!d || !any_device(r))
        return 0;
    int rc = rf_dev_enter(d->device, &d->saved);
    if (rc)
        return refit_error_push(rc, "receiver %s: commit", r->id);
    d->active = 1;
    /* A pull whose deltas were applied on the device left the version in
     * the device mirror (delta_rcvdev.c), laid out as staging: copied from
     * there, device to device. */
    const char *image = rf_rcvdelta_dev_image(r);
    if (!image)
        rf_rcvdev_pin_staging(r);
    for (size_t i = 0; !rc && i < r->dests.n; i++) {
        struct rf_dst *x = &r->dests.d[i];
        if (!x->ptr || x->memtype != REFIT_MEM_CUDA)
            continue;
        if (image) {
            if (x->nbytes)
                rc = rf_dcopy_post2d(d->cp, x->ptr, x->nbytes, image + x->staging_off, x->nbytes, x->nbytes, 1);
            if (rc)
                refit_error_push(rc, "receiver %s: committing '%s' from the device mirror", r->id, x->name);
            continue;
        }
        const char *from = (const char *)r->bufs.staging + x->staging_off;
        for (size_t off = 0; !rc && off < x->nbytes; off += H2D_CHUNK) {
            size_t ev, n = x->nbytes - off < H2D_CHUNK ? x->nbytes - off : H2D_CHUNK;
            rc = rf_dcopy_post(d->cp, (char *)x->ptr + off, from + off, n, RF_H2D, &ev);
        }
        if (rc)
            refit_error_push(rc, "receiver %s: committing '%s' to the device", r->id, x->name);
    }
    return rc;
}

int rf_rcvdev_commit_wait(refit_receiver_t *r)
{
    struct rf_rcvdev *d = r->dev;
    if (!d || !d->active)
        return 0;
    int rc = rf_dcopy_sync(d->cp);
    rf_dev_leave(d->saved);
    d->active = 0;
    return rc ? refit_error_push(rc, "receiver %s: commit to the device", r->id) : 0;
}

void rf_rcvdev_unpin(refit_receiver_t *r)
{
    if (r->dev && r->dev->pinned) {
        rf_dev_unpin(r->dev->pinned);
        r->dev->pinned = NULL;
    }
}

void rf_rcvdev_pin_scratch(refit_receiver_t *r)
{
    struct rf_rcvdev *d = r->dev;
    if (!d || d->pinned_scratch == r->bufs.scratch || r->bufs.scratch_dev)
        return;
    rf_rcvdev_unpin_scratch(r);
    if (!r->bufs.scratch || !r->bufs.scratch_len)
        return;
    if (rf_dev_pin(r->bufs.scratch, r->bufs.scratch_len, "receiver: scratch"))
        refit_log(REFIT_LOG_WARN, "receiver", "%s: %s (copies to the device run unpinned)", r->id,
                  refit_error_message());
    else
        d->pinned_scratch = r->bufs.scratch;
    refit_error_clear();
}

void rf_rcvdev_unpin_scratch(refit_receiver_t *r)
{
    if (r->dev && r->dev->pinned_scratch) {
        rf_dev_unpin(r->dev->pinned_scratch);
        r->dev->pinned_scratch = NULL;
    }
}

void rf_rcvdev_destroy(refit_receiver_t *r)
{
    if (!r->dev)
        return;
    rf_rcvdev_commit_wait(r);
    rf_rcvdev_unpin(r);
    rf_rcvdev_unpin_scratch(r);
    rf_dcopy_destroy(r->dev->cp);
    if (r->dev->q) {
        int saved = -1;
        if (!rf_dev_enter(r->dev->device, &saved)) {
            refit_fp8_cuda_destroy(r->dev->q);
            rf_dev_leave(saved);
        }
    }
    free(r->dev);
    r->dev = NULL;
}

/* ------------------------------------------------------------------ */
/* Device-resident pulls */

int rf_rcvdev_resident(const refit_receiver_t *r)
{
    return r->dev && r->ctx->in_place &&
           (refit_transport_caps(r->tp)->memtypes & REFIT_MEMTYPE_BIT(REFIT_MEM_CUDA));
}

int rf_rcvdev_check_plan(refit_receiver_t *r)
{
    if (!rf_rcvdev_resident(r))
        return 0;
    if (r->ctx->verify != RF_VERIFY_OFF)
        return refit_error_set(REFIT_ENOTSUP, "receiver %s: pulling in place into device memory with "
                               "refit.verify on: the checksums are computed on the host, which never sees "
                               "these bytes (set refit.verify: off, or refit.in_place: false to stage on the "
                               "host)", r->id);
    size_t nl = refit_layout_count(r->lay);
    for (size_t t = 0; t < nl; t++) {
        const struct rf_dst *d = &r->dests.d[r->dests.dst_of_lt[t]];
        const struct refit_layout_tensor *lt = refit_layout_at(r->lay, t);
        /* On the device: FP8 quantization (the kernel) and plain copies. */
        int fp8 = lt->fp8 && r->copts.fp8.enabled && d->dtype == REFIT_DTYPE_F8_E4M3 &&
                  (r->plan.img_dtype[t] == REFIT_DTYPE_BF16 || r->plan.img_dtype[t] == REFIT_DTYPE_F32) &&
                  (lt->ndim == 2 || lt->ndim == 3) && r->dests.scale_of_lt[t] >= 0;
        if (r->plan.pdst[t].in_scratch && !fp8)
            return refit_error_set(REFIT_ENOTSUP, "receiver %s: '%s' needs a cast (%s -> %s) and only FP8 "
                                   "quantization and copies run on the device: pull it with refit.in_place: "
                                   "false (staged on the host)", r->id, d->name,
                                   refit_dtype_name(r->plan.img_dtype[t]), refit_dtype_name(d->dtype));
    }
    for (size_t i = 0; i < r->dests.n; i++)
        if (!r->dests.d[i].ptr || r->dests.d[i].memtype != REFIT_MEM_CUDA)
            return refit_error_set(REFIT_EINVAL, "receiver %s: '%s' is %s while other destinations are "
                                   "device memory pulled in place: bind every destination on the device",
                                   r->id, r->dests.d[i].name, r->dests.d[i].ptr ? "host memory" : "not bound");
    return 0;
}

int rf_rcvdev_scratch_alloc(refit_receiver_t *r, size_t n, void **out)
{
    int saved = -1;
    int rc = rf_dev_enter(r->dev->device, &saved);
    if (!rc)
        rc = refit_cuda_alloc(n ? n : 1, out);
    rf_dev_leave(saved);
    return rc ? refit_error_push(rc, "receiver %s: %zu bytes of device scratch", r->id, n) : 0;
}

void rf_rcvdev_scratch_free(refit_receiver_t *r, void *p)
{
    (void)r;
    if (p && refit_cuda_free(p))
        refit_log(REFIT_LOG_WARN, "receiver", "freeing device scratch: %s", refit_error_message());
}

int rf_rcvdev_scatter(refit_receiver_t *r, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                      size_t rows)
{
    int saved = -1;
    int rc = rf_dev_enter(r->dev->device, &saved);
    if (!rc)
        rc = rf_dcopy_post2d(r->dev->cp, dst, dpitch, src, spitch, width, rows);
    rf_dev_leave(saved);
    return rc;
}

int rf_rcvdev_convert(refit_receiver_t *r, size_t t, const void *img, void *out, float *scale)
{
    struct rf_rcvdev *d = r->dev;
    const struct refit_layout_tensor *lt = refit_layout_at(r->lay, t);
    int saved = -1;
    int rc = rf_dev_enter(d->device, &saved);
    /* The legacy stream: it waits for the scatters on the copy streams. */
    if (!rc && !d->q)
        rc = refit_fp8_cuda_create(NULL, &d->q);
    int64_t nidx = lt->ndim == 3 ? lt->shape[0] : 1;
    int64_t rows = lt->shape[lt->ndim - 2], cols = lt->shape[lt->ndim - 1];
    int64_t br = (rows + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK, bc = (cols + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
    size_t es = refit_dtype_size(r->plan.img_dtype[t]);
    struct refit_fp8_params p = {r->copts.fp8.rule, r->copts.fp8.floor, REFIT_FP8_IMPL_AUTO};
    for (int64_t x = 0; !rc && x < nidx; x++) {
        size_t off = (size_t)(x * rows * cols);
        if (r->plan.img_dtype[t] == REFIT_DTYPE_BF16)
            rc = refit_fp8_cuda_quantize_bf16(d->q, (const char *)img + off * es, (size_t)rows, (size_t)cols,
                                              (size_t)cols, (uint8_t *)out + off, scale + x * br * bc, &p);
        else
            rc = refit_fp8_cuda_quantize_f32(d->q, (const char *)img + off * es, (size_t)rows, (size_t)cols,
                                             (size_t)cols, (uint8_t *)out + off, scale + x * br * bc, &p);
    }
    d->q_used |= !rc;
    rf_dev_leave(saved);
    return rc ? refit_error_push(rc, "receiver %s: quantizing '%s' on the device", r->id, lt->name) : 0;
}

int rf_rcvdev_device(const refit_receiver_t *r)
{
    return r->dev ? r->dev->device : -1;
}

int rf_rcvdev_sync(refit_receiver_t *r)
{
    if (!rf_rcvdev_resident(r))
        return 0;
    int saved = -1;
    int rc = rf_dev_enter(r->dev->device, &saved);
    if (!rc)
        rc = rf_dcopy_sync(r->dev->cp);
    if (r->dev->q_used) {
        int qrc = refit_fp8_cuda_sync(r->dev->q);
        r->dev->q_used = 0;
        if (!rc)
            rc = qrc;
    }
    rf_dev_leave(saved);
    return rc ? refit_error_push(rc, "receiver %s: device scatters", r->id) : 0;
}
