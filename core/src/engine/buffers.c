/* buffers.c — the buffers stage of a pull (receiver.h): staging (two
 * buffers flipped at commit when refit owns every destination, else one
 * copied from), scratch (short runs pulled whole, images to convert), their
 * registration, where a (buffer, offset) of the plan lands, and the commit:
 * staging into the destinations, then the acknowledgement.  Until the
 * commit nothing touches the destinations (unless refit.in_place), so a
 * failed pull leaves the previous version in place. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ackpost.h"
#include "devpath.h"
#include "receiver.h"

/* Large zeroed buffers from mmap, populated up front: the page faults are
 * paid once here (the alloc figure of the first cycle) instead of inside the
 * first transfers and conversions into each staging buffer. */
static void *big_alloc(size_t n)
{
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void big_free(void *p, size_t n)
{
    if (p)
        munmap(p, n ? n : 1);
}

static void scratch_free(refit_receiver_t *r)
{
    struct rf_bufs *b = &r->bufs;
    if (b->scratch_reg)
        refit_transport_dereg(r->tp, b->scratch_reg);
    b->scratch_reg = NULL;
    rf_rcvdev_unpin_scratch(r);
    if (b->scratch_dev)
        rf_rcvdev_scratch_free(r, b->scratch);
    else
        big_free(b->scratch, b->scratch_len);
    b->scratch = NULL;
    b->scratch_len = 0;
}

void rf_bufs_fini(refit_receiver_t *r)
{
    struct rf_bufs *b = &r->bufs;
    for (int k = 0; k < 2; k++) {
        if (b->stage_reg[k])
            refit_transport_dereg(r->tp, b->stage_reg[k]);
        big_free(b->stage[k], b->staging_len);
    }
    scratch_free(r);
    memset(b, 0, sizeof(*b));
}

void rf_bufs_repoint(refit_receiver_t *r, uint64_t staging)
{
    struct rf_bufs *b = &r->bufs;
    if (b->doubled && staging <= b->staging_len)
        for (size_t i = 0; i < r->dests.n; i++)
            r->dests.d[i].ptr = (char *)b->stage[b->front] + r->dests.d[i].staging_off;
}

/* New staging of `staging` bytes (two buffers when want_double); owned
 * destinations move into the new front buffer, keeping their bytes. */
static int staging_realloc(refit_receiver_t *r, uint64_t staging, int want_double)
{
    struct rf_bufs *b = &r->bufs;
    void *nb[2] = {NULL, NULL};
    for (int k = 0; k < 1 + want_double; k++)
        if (!(nb[k] = big_alloc(staging))) {
            big_free(nb[0], staging);
            return refit_error_set(REFIT_ENOMEM, "receiver %s: %llu bytes of staging", r->id,
                                   (unsigned long long)staging);
        }
    for (size_t i = 0; want_double && i < r->dests.n; i++) {
        struct rf_dst *d = &r->dests.d[i];
        void *to = (char *)nb[0] + d->staging_off;
        if (d->ptr && d->ptr != to && r->last_version)
            memcpy(to, d->ptr, d->nbytes); /* never pulled: still zero */
        if (!b->doubled)
            free(d->ptr);
        d->ptr = to;
    }
    rf_rcvdev_unpin(r); /* before the old staging is unmapped */
    for (int k = 0; k < 2; k++) {
        if (b->stage_reg[k])
            refit_transport_dereg(r->tp, b->stage_reg[k]);
        b->stage_reg[k] = NULL;
        big_free(b->stage[k], b->staging_len);
        b->stage[k] = nb[k];
    }
    if (b->doubled && !want_double)
        for (size_t i = 0; i < r->dests.n; i++)
            if (r->dests.d[i].owned) {
                /* Back to separate allocations (a destination was bound). */
                void *m = calloc(1, r->dests.d[i].nbytes ? r->dests.d[i].nbytes : 1);
                if (!m)
                    return REFIT_ENOMEM;
                r->dests.d[i].ptr = m;
            }
    b->doubled = want_double;
    b->front = 0;
    b->staging_len = staging;
    return 0;
}

static int scratch_realloc(refit_receiver_t *r, uint64_t scratch, int dev)
{
    struct rf_bufs *b = &r->bufs;
    scratch_free(r);
    b->scratch_dev = dev;
    /* Resident pulls scatter on the device: scratch is device memory. */
    if (dev) {
        int rc = scratch ? rf_rcvdev_scratch_alloc(r, scratch, &b->scratch) : 0;
        if (rc)
            return rc;
    } else if (!(b->scratch = big_alloc(scratch))) {
        return refit_error_set(REFIT_ENOMEM, "receiver %s: %llu bytes of scratch", r->id,
                               (unsigned long long)scratch);
    }
    b->scratch_len = b->scratch ? scratch : 0;
    return 0;
}

/* Registration of what is not yet registered (nothing on a warm cycle). */
static int register_all(refit_receiver_t *r, int back)
{
    struct rf_bufs *b = &r->bufs;
    int rc = 0;
    for (int k = 0; !rc && k < 1 + b->doubled; k++)
        if (!b->stage_reg[k] && b->staging_len && !r->ctx->in_place)
            rc = refit_transport_reg(r->tp, b->stage[k], b->staging_len, REFIT_MEM_HOST, &b->stage_reg[k]);
    b->staging_reg = b->stage_reg[back];
    if (!rc && !b->scratch_reg && b->scratch_len)
        rc = refit_transport_reg(r->tp, b->scratch, b->scratch_len, b->scratch_dev ? REFIT_MEM_CUDA : REFIT_MEM_HOST,
                          &b->scratch_reg);
    for (size_t i = 0; !rc && r->ctx->in_place && i < r->dests.n; i++) {
        struct rf_dst *d = &r->dests.d[i];
        if (d->reg && d->reg_ptr == d->ptr)
            continue;
        if (d->reg)
            refit_transport_dereg(r->tp, d->reg);
        d->reg = NULL;
        rc = refit_transport_reg(r->tp, d->ptr, d->nbytes ? d->nbytes : 1, d->memtype, &d->reg);
        d->reg_ptr = d->ptr;
    }
    return rc;
}

int rf_bufs_ensure(refit_receiver_t *r, double *alloc_s, double *reg_s)
{
    struct rf_bufs *b = &r->bufs;
    /* In place, READs land in the destinations: no staging. */
    uint64_t staging = r->ctx->in_place ? 0 : r->plan.staging_need, scratch = r->plan.plan.scratch_bytes;
    double t0 = rf_seconds();
    int rc = 0;
    int want_double = !r->ctx->in_place;
    for (size_t i = 0; want_double && i < r->dests.n; i++)
        if (!r->dests.d[i].owned)
            want_double = 0; /* any bound destination: one buffer and a copy */
    if ((staging > b->staging_len || want_double != b->doubled) && (rc = staging_realloc(r, staging, want_double)))
        return rc;
    /* The back buffer receives this pull. */
    int back = b->doubled ? b->front ^ 1 : 0;
    b->staging = b->stage[back];
    int dev = rf_rcvdev_resident(r);
    if ((scratch > b->scratch_len || dev != b->scratch_dev) && (rc = scratch_realloc(r, scratch, dev)))
        return rc;
    double t1 = rf_seconds();
    *alloc_s += t1 - t0;
    rc = register_all(r, back);
    *reg_s += rf_seconds() - t1;
    return rc ? refit_error_push(rc, "receiver %s: registering buffers", r->id) : 0;
}

int rf_bufs_local(void *receiver, uint32_t buf, uint64_t off, uint64_t len, refit_tp_region_t **reg,
                  uint64_t *roff)
{
    refit_receiver_t *r = receiver;
    if (buf == RF_BUF_SCRATCH || !r->ctx->in_place) {
        *reg = buf == RF_BUF_SCRATCH ? r->bufs.scratch_reg : r->bufs.staging_reg;
        *roff = off;
        return 0;
    }
    /* In place: the destination holding [off, off+len) of staging space. */
    struct rf_dst *d = &r->dests.d[rf_dests_at(&r->dests, off)];
    if (off < d->staging_off || off + len > d->staging_off + d->nbytes)
        return refit_error_set(REFIT_EPROTO, "receiver %s: in-place range outside '%s'", r->id, d->name);
    *reg = d->reg;
    *roff = off - d->staging_off;
    return 0;
}

void *rf_bufs_ptr(refit_receiver_t *r, uint32_t buf, uint64_t off)
{
    if (buf == RF_BUF_SCRATCH)
        return (char *)r->bufs.scratch + off;
    if (!r->ctx->in_place)
        return (char *)r->bufs.staging + off;
    const struct rf_dst *d = &r->dests.d[rf_dests_at(&r->dests, off)];
    return (char *)d->ptr + (off - d->staging_off);
}

/* Staging into the destinations: a flip when every destination is refit's,
 * a copy (host, and the device's queued by rcvdev.c) otherwise, nothing in
 * place. */
static int commit_bytes(refit_receiver_t *r)
{
    struct rf_bufs *b = &r->bufs;
    if (b->doubled) {
        b->front ^= 1;
        for (size_t i = 0; i < r->dests.n; i++)
            r->dests.d[i].ptr = (char *)b->stage[b->front] + r->dests.d[i].staging_off;
        return 0;
    }
    if (r->ctx->in_place)
        return 0;
    int rc = rf_rcvdev_commit_start(r);
    for (size_t i = 0; i < r->dests.n; i++) {
        const struct rf_dst *d = &r->dests.d[i];
        if (d->ptr && d->memtype != REFIT_MEM_CUDA)
            memcpy(d->ptr, (char *)b->staging + d->staging_off, d->nbytes);
    }
    int wrc = rf_rcvdev_commit_wait(r);
    return rc ? rc : wrc;
}

int rf_bufs_commit(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st)
{
    double tm = rf_seconds();
    int rc = commit_bytes(r);
    if (rc)
        return rc;
    for (size_t i = 0; i < r->dests.n; i++)
        st->bytes_out += r->dests.d[i].nbytes;
    st->commit_s = rf_seconds() - tm;
    rf_trace_mark(&r->trace, "commit");
    if (r->ackpost) {
        /* v's reads have ended: the worker writes the ack while we return. */
        rc = rf_ackpost_post(r->ackpost, v, r->last_version);
        rf_trace_mark(&r->trace, "ack-posted");
        return rc ? refit_error_push(rc, "acknowledging v%llu", (unsigned long long)v) : 0;
    }
    /* Written with the fence's read already (receiver.c fence_commit). */
    rc = r->fence_acked ? 0 : refit_ack_put(r->ctx->store, v, r->id);
    rf_trace_mark(&r->trace, "ack");
    if (rc)
        return refit_error_push(rc, "acknowledging v%llu", (unsigned long long)v);
    char old_ack[REFIT_STORE_MAX_KEY + 1];
    if (r->last_version && r->last_version != v && !refit_key_ack(old_ack, r->last_version, r->id))
        refit_store_forget(r->ctx->store, old_ack);
    /* and a failed pull's, whose ack went out with its fence */
    if (r->released && r->released != v && !refit_key_ack(old_ack, r->released, r->id))
        refit_store_forget(r->ctx->store, old_ack);
    rf_trace_mark(&r->trace, "forget-old-ack");
    return 0;
}
