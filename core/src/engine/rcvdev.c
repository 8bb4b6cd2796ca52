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
#include "refit/log.h"

#define H2D_CHUNK ((size_t)16 << 20)

struct rf_rcvdev {
    int device;
    struct rf_dcopy *cp;
    int saved, active;
    void *pinned;
};

int rf_rcvdev_bind(refit_receiver_t *r, const char *name, const void *ptr)
{
    char what[1200];
    snprintf(what, sizeof(what), "receiver %s: '%s'", r->id, name);
    if (r->ctx->in_place) {
        const struct refit_tp_caps *c = refit_tp_caps(r->tp);
        if (!(c->memtypes & REFIT_MEMTYPE_BIT(REFIT_MEM_CUDA)))
            return refit_error_set(REFIT_EINVAL, "%s is device memory and refit.in_place is on, but transport "
                                   "'%s' reaches host memory only: it cannot land in place (turn "
                                   "refit.in_place off: refit then stages on the host and copies to the "
                                   "device at commit)", what, refit_tp_plugin_name(r->tp));
        return refit_error_set(REFIT_ENOTSUP, "%s is device memory and refit.in_place is on: pulling in "
                               "place into device memory needs the conversions and checks on the device, "
                               "which are not built yet (turn refit.in_place off)", what);
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
    for (size_t i = 0; i < r->n_d; i++)
        if (r->d[i].ptr && r->d[i].memtype == REFIT_MEM_CUDA)
            return 1;
    return 0;
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
    if (d->pinned != r->staging) {
        rf_dev_unpin(d->pinned);
        d->pinned = NULL;
        /* Unpinned copies are still right, only slower: say so and go on. */
        if (rf_dev_pin(r->staging, r->staging_len, "receiver: staging"))
            refit_log(REFIT_LOG_WARN, "receiver", "%s: %s (copies to the device run unpinned)", r->id,
                      refit_error_message());
        else
            d->pinned = r->staging;
        refit_error_clear();
    }
    for (size_t i = 0; !rc && i < r->n_d; i++) {
        struct rcv_dst *x = &r->d[i];
        if (!x->ptr || x->memtype != REFIT_MEM_CUDA)
            continue;
        const char *from = (const char *)r->staging + x->staging_off;
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

void rf_rcvdev_destroy(refit_receiver_t *r)
{
    if (!r->dev)
        return;
    rf_rcvdev_commit_wait(r);
    rf_rcvdev_unpin(r);
    rf_dcopy_destroy(r->dev->cp);
    free(r->dev);
    r->dev = NULL;
}
