/* transfer.c — the transfer stage of a pull (receiver.h) and pull mode.
 *
 * Whoever moves the bytes (the receiver's READs here, the publishers'
 * WRITEs in push mode), every landed descriptor goes through
 * rf_xfer_done: its checksum chunks are verified (verify.c) and each
 * layout tensor whose last descriptor it was is scattered from scratch and
 * converted into its staging bytes at once, while later batches are on the
 * wire.
 *
 * Pull mode (rf_mode_pull) is the default strategy: fetch the checksums,
 * connect (peers.c), READ in batches of refit.flush_every per source
 * (exec.c), finish, then the common fence of the discovered sources. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devpath.h"
#include "exec.h"
#include "receiver.h"

void rf_xfer_fini(struct rf_xfer *x)
{
    free(x->pending);
    free(x->unfed);
    free(x->finished);
    memset(x, 0, sizeof(*x));
}

int rf_xfer_begin(refit_receiver_t *r, const uint8_t *ready)
{
    struct rf_xfer *x = &r->xfer;
    const struct rf_rplan *p = &r->plan;
    size_t nl = refit_layout_count(r->lay);
    if (!x->pending && !(x->pending = calloc(nl ? nl : 1, sizeof(*x->pending))))
        return REFIT_ENOMEM;
    if (!x->unfed && !(x->unfed = calloc(nl ? nl : 1, 1)))
        return REFIT_ENOMEM;
    if (!x->finished && !(x->finished = calloc(nl ? nl : 1, 1)))
        return REFIT_ENOMEM;
    if (!x->keep)
        memset(x->finished, 0, nl ? nl : 1);
    x->keep = 0;
    memset(x->pending, 0, (nl ? nl : 1) * sizeof(*x->pending));
    for (size_t i = 0; i < p->plan.n_desc; i++)
        for (size_t k = p->feed_first[i]; k < p->feed_first[i + 1]; k++)
            x->pending[p->feed[k]]++;
    for (size_t t = 0; t < nl; t++)
        x->unfed[t] = x->pending[t] == 0;
    x->ready = ready;
    r->verify.on = r->ctx->verify != RF_VERIFY_OFF;
    return 0;
}

static int scatter(refit_receiver_t *r, const struct rf_scatter *s)
{
    const struct rf_bufs *b = &r->bufs;
    if (b->scratch_dev)
        return rf_rcvdev_scatter(r, rf_bufs_ptr(r, s->to_buf, s->to), s->to_pitch, (char *)b->scratch + s->from,
                                 s->from_pitch, s->row_bytes, s->rows);
    for (uint64_t row = 0; row < s->rows; row++)
        memcpy(rf_bufs_ptr(r, s->to_buf, s->to + row * s->to_pitch), (char *)b->scratch + s->from + row * s->from_pitch,
               s->row_bytes);
    return 0;
}

/* Every descriptor of layout tensor t is in: scatter into its image and
 * convert into its destination's staging bytes. */
static int finish_tensor(refit_receiver_t *r, size_t t)
{
    double t0 = rf_seconds();
    const struct rf_rplan *p = &r->plan;
    if (r->xfer.ready && r->xfer.ready[t])
        return 0; /* in its final form already (push: quantized by the trainer) */
    int rc = 0;
    for (size_t q = p->scat_first[t]; !rc && q < p->scat_first[t + 1]; q++)
        rc = scatter(r, &p->plan.scatter[p->scat[q]]);
    const struct rf_pdst *pd = &p->pdst[t];
    if (!rc && pd->in_scratch) {
        const struct refit_layout_tensor *lt = refit_layout_at(r->lay, t);
        const struct rf_dst *d = &r->dests.d[r->dests.dst_of_lt[t]];
        void *out = rf_bufs_ptr(r, RF_BUF_STAGING, d->staging_off);
        const void *img = (char *)r->bufs.scratch + pd->offset;
        float *scale = NULL;
        if (r->dests.scale_of_lt[t] >= 0)
            scale = rf_bufs_ptr(r, RF_BUF_STAGING, r->dests.d[r->dests.scale_of_lt[t]].staging_off);
        if (r->bufs.scratch_dev)
            rc = rf_rcvdev_convert(r, t, img, out, scale);
        else
            rc = refit_convert_image(lt, p->img_dtype[t], img, &r->copts.fp8, d->dtype, out, scale);
    }
    r->xfer.convert_s += rf_seconds() - t0;
    return rc;
}

int rf_xfer_done(void *receiver, size_t first, size_t n)
{
    refit_receiver_t *r = receiver;
    const struct rf_rplan *p = &r->plan;
    for (size_t i = first; i < first + n; i++) {
        const struct rf_desc *d = &p->plan.desc[i];
        int rc = r->verify.on ? rf_verify_range(r, d->buf, d->local_off, d->len) : 0;
        for (size_t k = p->feed_first[i]; !rc && k < p->feed_first[i + 1]; k++) {
            size_t t = p->feed[k];
            if (r->xfer.finished[t] || !r->xfer.pending[t] || --r->xfer.pending[t])
                continue;
            rc = finish_tensor(r, t);
            r->xfer.finished[t] = !rc;
        }
        if (rc)
            return rc;
    }
    return 0;
}

int rf_xfer_finish_unfed(refit_receiver_t *r)
{
    size_t nl = refit_layout_count(r->lay);
    int rc = 0;
    for (size_t t = 0; !rc && t < nl; t++)
        if (r->xfer.unfed[t])
            rc = finish_tensor(r, t);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Pull mode */

/* The source a failed transfer names: its connection is dropped. */
static void drop_failed(refit_receiver_t *r, const struct rf_exec_stats *xs)
{
    if (xs->failed_source >= 0 && (size_t)xs->failed_source < r->peers.n)
        rf_peers_broken(r, (size_t)xs->failed_source);
}

/* The descriptors of a retry: those feeding a tensor the failed attempt
 * left unfinished (into *sub, with map[j] the plan index of sub's j);
 * *sub empty when nothing was finished (a first attempt: the whole plan). */
struct subplan {
    struct rf_plan plan;
    size_t *map;
    refit_receiver_t *r;
};

static int subplan_make(refit_receiver_t *r, struct subplan *sp)
{
    const struct rf_rplan *p = &r->plan;
    size_t nl = refit_layout_count(r->lay), any = 0;
    for (size_t t = 0; t < nl; t++)
        any |= r->xfer.finished[t];
    memset(sp, 0, sizeof(*sp));
    sp->r = r;
    if (!any)
        return 0;
    sp->plan = p->plan;
    sp->plan.desc = malloc((p->plan.n_desc ? p->plan.n_desc : 1) * sizeof(*sp->plan.desc));
    sp->map = malloc((p->plan.n_desc ? p->plan.n_desc : 1) * sizeof(*sp->map));
    if (!sp->plan.desc || !sp->map) {
        free(sp->plan.desc);
        free(sp->map);
        memset(sp, 0, sizeof(*sp));
        return REFIT_ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < p->plan.n_desc; i++) {
        int need = p->feed_first[i] == p->feed_first[i + 1];
        for (size_t k = p->feed_first[i]; !need && k < p->feed_first[i + 1]; k++)
            need = !r->xfer.finished[p->feed[k]];
        if (need) {
            sp->map[n] = i;
            sp->plan.desc[n++] = p->plan.desc[i]; /* still sorted by source */
        }
    }
    sp->plan.n_desc = n;
    return 0;
}

static int subplan_local(void *arg, uint32_t buf, uint64_t off, uint64_t len, refit_tp_region_t **reg,
                         uint64_t *roff)
{
    return rf_bufs_local(((struct subplan *)arg)->r, buf, off, len, reg, roff);
}

static int subplan_done(void *arg, size_t first, size_t n)
{
    struct subplan *sp = arg;
    int rc = 0;
    for (size_t j = first; !rc && j < first + n; j++)
        rc = rf_xfer_done(sp->r, sp->map[j], 1);
    return rc;
}

static int read_all(refit_receiver_t *r, struct refit_pull_stats *st)
{
    struct rf_exec_source *es = calloc(r->disc.n_src ? r->disc.n_src : 1, sizeof(*es));
    if (!es)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < r->disc.n_src; i++) {
        const struct rf_peer *p = &r->peers.p[i];
        es[i] = (struct rf_exec_source){p->peer, p->rkeys, (uint32_t)p->n_rkeys, r->disc.src[i].id};
    }
    double tx = rf_seconds();
    st->xfer_start = tx;
    struct rf_exec_stats xs = {.failed_source = -1};
    /* Colocated: the receiver's own kernel reads the mapped sources. */
    int ran = 0;
    int rc = rf_rcvprog_pull(r, &ran);
    if (!rc && ran) {
        xs.descriptors = r->plan.plan.n_desc;
        xs.bytes = r->plan.plan.wire_bytes;
    } else if (!rc) {
        struct subplan sp;
        rc = subplan_make(r, &sp);
        if (!rc && sp.map)
            rc = rf_exec_run(r->tp, &sp.plan, es, (uint32_t)r->disc.n_src, (uint32_t)r->ctx->flush_every,
                             refit_transport_timeout_ms(r->tp), subplan_local, subplan_done, &sp, &xs);
        else if (!rc)
            rc = rf_exec_run(r->tp, &r->plan.plan, es, (uint32_t)r->disc.n_src, (uint32_t)r->ctx->flush_every,
                             refit_transport_timeout_ms(r->tp), rf_bufs_local, rf_xfer_done, r, &xs);
        if (sp.map)
            st->bytes_refetched += xs.bytes;
        free(sp.plan.desc);
        free(sp.map);
    }
    free(es);
    rf_trace_mark(&r->trace, ran ? "program" : "transport-copies");
    if (rc && xs.failed_source >= 0 && (size_t)xs.failed_source < r->disc.n_src)
        snprintf(r->failed_src, sizeof(r->failed_src), "%s", r->disc.src[xs.failed_source].id);
    drop_failed(r, &xs);
    if (!rc)
        rc = rf_xfer_finish_unfed(r);
    rf_trace_mark(&r->trace, "unfed");
    /* Device scatters of a resident pull land before the fence. */
    int src = rf_rcvdev_sync(r);
    rf_trace_mark(&r->trace, "device-sync");
    if (!rc)
        rc = src;
    /* Wire time: the transfer phase less the conversion done while nothing
     * was in flight (conversion overlapping transfers is not subtracted). */
    st->xfer_end = rf_seconds();
    st->transfer_s = st->xfer_end - tx - xs.idle_wire_s;
    if (st->transfer_s < 0)
        st->transfer_s = 0;
    /* a retried pull counts every attempt's wire */
    st->descriptors += xs.descriptors;
    st->bytes_wire += xs.bytes;
    return rc;
}

int rf_pull_transfer(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st)
{
    r->failed_src[0] = '\0';
    int rc = rf_verify_fetch(r, v);
    double tc = rf_seconds();
    int fresh = 0;
    if (!rc)
        rc = rf_peers_connect(r, &fresh);
    st->connect_s = fresh ? rf_seconds() - tc : 0;
    if (!rc) /* checksum tables read over the transport (refit.sums: transport) */
        rc = rf_verify_fetch_remote(r, v);
    /* Pull mode with refit.delta.enabled: delta_rcv.c moves the bytes. */
    rf_trace_mark(&r->trace, "sums+connect");
    if (!rc && r->mode == &rf_mode_pull && rf_rcvdelta_wanted(r))
        return rf_rcvdelta_transfer(r, v, st);
    if (!rc && r->mode == &rf_mode_pull)
        rc = rf_rcvdelta_whole(r, st);
    if (!rc)
        rc = rf_xfer_begin(r, NULL);
    rf_trace_mark(&r->trace, "xfer-begin");
    return rc ? rc : read_all(r, st);
}

static void pull_end(refit_receiver_t *r, uint64_t v, int rc, struct refit_pull_stats *st)
{
    (void)st;
    rf_rcvdelta_end(r, v, rc);
}

int rf_mode_no_create(refit_receiver_t *r)
{
    (void)r;
    return 0;
}

void rf_mode_no_destroy(refit_receiver_t *r)
{
    (void)r;
}

int rf_mode_no_planned(refit_receiver_t *r, struct rf_piece *pc, size_t n_pc)
{
    (void)r;
    (void)pc;
    (void)n_pc;
    return 0;
}

int rf_mode_no_prepare(refit_receiver_t *r, uint64_t v)
{
    (void)r;
    (void)v;
    return 0;
}

int rf_mode_no_retry(refit_receiver_t *r, uint64_t v, int *rc)
{
    (void)r;
    (void)v;
    (void)rc;
    return 0;
}

void rf_mode_no_end(refit_receiver_t *r, uint64_t v, int rc, struct refit_pull_stats *st)
{
    (void)r;
    (void)v;
    (void)rc;
    (void)st;
}

const struct rf_rcv_mode rf_mode_pull = {
    .size = sizeof(struct rf_rcv_mode),
    .name = "pull",
    .create = rf_mode_no_create,
    .destroy = rf_mode_no_destroy,
    .planned = rf_mode_no_planned,
    .plan_drop = rf_mode_no_destroy,
    .prepare = rf_mode_no_prepare,
    .transfer = rf_pull_transfer,
    .fence = rf_fence_sources,
    .retry = rf_pull_retry,
    .end = pull_end,
};
