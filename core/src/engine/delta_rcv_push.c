/* delta_rcv_push.c — delta refit of a receiver in push mode (push_rcv.c
 * calls these; the pull half, the mirror and the apply are delta_rcv.c's). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delta_rcv.h"
#include "refit/log.h"

/* ------------------------------------------------------------------ */
/* Push mode (push_rcv.c; docs/delta.md, "Push mode")
 *
 * The receiver plans V as a delta pull would, before it advertises: per
 * source whose record of V was made from what the mirror holds, the chunk
 * deltas its raw descriptors cover (the same reads, now ranges the
 * publisher WRITEs into the landing buffer) and the descriptors they
 * replace.  The publisher writes either those (its note says "ok delta")
 * or the section whole; then each descriptor is applied onto the mirror
 * as in a pull, or copied into it, and checked against V's checksums. */

/* Source s's request: its ranges (the reads of its delta descriptors) and
 * the bitmap over its work-list section (its raw descriptors in plan
 * order) of those that go by delta or are unchanged. */
static int ask_source(refit_receiver_t *r, struct rf_rcvdelta *d, size_t s, const uint8_t *drop, size_t m)
{
    const struct rf_plan *p = &r->plan.plan;
    size_t nd = 0, nr = 0, any = 0;
    for (size_t i = 0; i < p->n_desc; i++)
        if (p->desc[i].source == s && !drop[i]) {
            nd++;
            any |= d->use[i] != USE_FULL;
        }
    for (size_t j = 0; j < m; j++)
        nr += d->sub[j].source == s;
    if (!any)
        return 0;
    size_t sl = (nd + 7) / 8;
    uint8_t *buf = calloc(nr * RF_PUSH_RANGE_BYTES + sl + 1, 1);
    if (!buf)
        return REFIT_ENOMEM;
    d->ask_buf[s] = buf;
    uint8_t *q = buf, *skip = buf + nr * RF_PUSH_RANGE_BYTES;
    for (size_t j = 0; j < m; j++) {
        const struct rf_desc *x = &d->sub[j];
        if (x->source != s)
            continue;
        uint64_t f[3] = {x->remote_off, x->local_off, x->len};
        for (int k = 0; k < 3; k++)
            for (int b = 0; b < 8; b++)
                *q++ = (uint8_t)(f[k] >> (8 * b));
    }
    for (size_t i = 0, j = 0; i < p->n_desc; i++) {
        if (p->desc[i].source != s || drop[i])
            continue;
        if (d->use[i] != USE_FULL)
            skip[j / 8] |= (uint8_t)(1u << (j % 8));
        j++;
    }
    struct push_adelta *e = &d->ask[d->n_ask++];
    *e = (struct push_adelta){.version = d->rec[s]->version, .base = d->base_v[s], .base_sums = d->base_h[s],
                              .rk = d->land_rk, .rk_len = d->land_rk_len, .ranges = buf, .n_ranges = nr,
                              .skip = skip, .skip_len = sl};
    snprintf(e->source, sizeof(e->source), "%s", r->disc.src[s].id);
    return 0;
}

int rf_rcvdelta_push_ask(refit_receiver_t *r, uint64_t v, const uint8_t *drop, const struct push_adelta **asks,
                         size_t *n)
{
    *asks = NULL;
    *n = 0;
    if (!rf_rcvdelta_wanted(r))
        return 0;
    uint64_t bytes = 0;
    int rc = rf_rcvd_begin(r, v, drop, &bytes);
    if (rc == REFIT_ENOMEM && !r->delta)
        return rc;
    struct rf_rcvdelta *d = r->delta;
    if (!rc && !d->land_rk)
        rc = refit_transport_pack(r->tp, d->land_reg, &d->land_rk, &d->land_rk_len);
    /* The reads a pull would make, in d->sub: the ranges to ask for. */
    struct reads ra = {0, 0};
    d->read_delta = 0;
    for (size_t i = 0; !rc && i < r->plan.plan.n_desc; i++)
        if (d->use[i] == USE_DELTA) {
            ra.i = i;
            d->pending[i] = 0;
            rc = rf_rcvd_walk(r, i, rf_rcvd_read_piece, &ra);
        }
    for (size_t s = 0; !rc && s < r->disc.n_src; s++)
        if (d->rec[s])
            rc = ask_source(r, d, s, drop, ra.m);
    if (rc) {
        /* Without a request the publishers write everything: still exact. */
        refit_log(REFIT_LOG_WARN, "receiver", "%s: no delta asked for v%llu: %s", r->id, (unsigned long long)v,
                  refit_error_message());
        rf_rcvd_pull_free(d);
        memset(d->use, 0, d->n_desc);
        return rc == REFIT_ENOMEM ? rc : 0;
    }
    *asks = d->ask;
    *n = d->n_ask;
    return 0;
}

/* Every raw descriptor of the push: applied (its source wrote the delta)
 * or copied into the mirror (it wrote the bytes), then checked and
 * converted; *saved the bytes of descriptors the deltas replaced, *delta
 * the deltas' bytes. */
static int push_land(refit_receiver_t *r, struct rf_rcvdelta *d, const uint8_t *drop, const uint8_t *by_delta,
                     uint64_t *saved, uint64_t *delta)
{
    const struct rf_plan *p = &r->plan.plan;
    int rc = 0;
    *saved = *delta = 0;
    for (size_t j = 0; j < d->n_ask; j++)
        for (size_t s = 0; s < d->n_src; s++)
            if (by_delta[s] && d->ask_buf[s] == d->ask[j].ranges)
                for (size_t k = 0; k < d->ask[j].n_ranges; k++)
                    *delta += rf_push_rd64(d->ask[j].ranges + k * RF_PUSH_RANGE_BYTES + 16);
    for (size_t i = 0; !rc && i < p->n_desc; i++) {
        const struct rf_desc *ds = &p->desc[i];
        if (drop[i])
            continue;
        if (by_delta[ds->source] && d->use[i] != USE_FULL) {
            *saved += ds->len;
            rc = rf_rcvd_apply_desc(r, i);
            continue;
        }
        memcpy(d->mirror + d->moff[i], rf_bufs_ptr(r, ds->buf, ds->local_off), ds->len);
        rc = rf_xfer_done(r, i, 1);
    }
    return rc ? rc : rf_xfer_finish_unfed(r);
}

int rf_rcvdelta_push_land(refit_receiver_t *r, uint64_t v, const uint8_t *drop, const uint8_t *by_delta,
                          struct refit_pull_stats *st, int *whole)
{
    struct rf_rcvdelta *d = r->delta;
    *whole = 0;
    d->st = st;
    int used = 0;
    for (size_t s = 0; s < d->n_src; s++)
        used |= by_delta[s];
    uint64_t saved = 0, delta = 0;
    int rc = push_land(r, d, drop, by_delta, &saved, &delta);
    if (rc && used) {
        /* A wrong base, a torn delta or a result that fails V's checksums:
         * nothing in the mirror is a base any more, and V is read whole
         * from the sources (pull mode's READs), converted as a pull is. */
        refit_log(REFIT_LOG_WARN, "receiver", "%s: pushed delta of v%llu failed (%s); pulling it whole", r->id,
                  (unsigned long long)v, refit_error_message());
        memset(d->base_v, 0, d->n_src * sizeof(*d->base_v));
        st->delta_fallbacks = 1;
        st->delta_descriptors = 0;
        int fresh = 0;
        uint64_t bytes = 0;
        *whole = 1;
        rc = rf_peers_connect(r, &fresh);
        if (!rc)
            rc = rf_rcvd_plan(r, d, 0, NULL, &bytes);
        if (!rc)
            rc = rf_rcvd_run(r, d, st);
        delta = 0;
    }
    if (!rc && !*whole) {
        st->bytes_wire = st->bytes_wire - saved + delta;
        st->bytes_delta = delta;
    }
    if (!rc)
        d->pulled = v;
    rf_rcvd_pull_free(d);
    return rc;
}
