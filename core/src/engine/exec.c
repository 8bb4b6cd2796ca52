/* exec.c — batched one-sided READs, one batch in flight per source.
 *
 * A source that fails on the wire (a post refused, a completion in error,
 * none within the timeout) is given up on alone: its lane stops and the
 * other sources' lanes run to their end, so a data-parallel fallback
 * re-reads only what the failed source left unlanded.  The first such
 * failure is returned at the end; a failure of the receiver's own (its
 * local regions, the `done` callback) stops everything at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "engine.h"
#include "refit/status.h"

struct lane {
    size_t next, end;        /* this source's descriptors still to post */
    size_t batch_first, batch_n;
    refit_tp_req_t *req;     /* in flight, or NULL */
    struct refit_tp_desc *d; /* batch buffer */
    double posted_at;
    int dead;                /* the source failed: nothing more is posted or tested */
};

/* The first source failure, kept while the other lanes finish. */
struct lane_fail {
    int rc;
    char msg[1024];
};

/* Lane s failed with rc (its message set): stop it, drop its descriptors
 * still out from `remaining`, remember the first failure. */
static void lane_fail(struct lane *L, uint32_t s, int rc, int in_flight, size_t *remaining, struct lane_fail *f,
                      struct rf_exec_stats *st)
{
    size_t lost = (L->end - L->next) + (in_flight ? L->batch_n : 0);
    *remaining -= lost;
    L->next = L->end;
    L->dead = 1;
    if (!f->rc) {
        f->rc = rc;
        snprintf(f->msg, sizeof(f->msg), "%s", refit_error_message());
        if (st)
            st->failed_source = s;
    }
}

/* Post lane s's next batch of at most per_post descriptors. */
static int post_next(refit_transport_t *tp, const struct rf_plan *plan, const struct rf_exec_source *src,
                     uint32_t s, struct lane *L, uint32_t per_post, rf_exec_local_fn local, void *arg,
                     struct rf_exec_stats *st, int *wire)
{
    *wire = 0;
    size_t n = L->end - L->next < per_post ? L->end - L->next : per_post;
    int rc = 0;
    for (size_t k = 0; k < n && !rc; k++) {
        const struct rf_desc *pd = &plan->desc[L->next + k];
        if (pd->region >= src[s].n_rkeys)
            return refit_error_set(REFIT_EPROTO, "source %s: region %u has no remote key", src[s].name, pd->region);
        refit_tp_region_t *lr;
        uint64_t loff;
        rc = local(arg, pd->buf, pd->local_off, pd->len, &lr, &loff);
        L->d[k] = (struct refit_tp_desc){REFIT_OP_READ, lr, loff, src[s].rkeys[pd->region], pd->remote_off, pd->len};
        if (st)
            st->bytes += pd->len;
    }
    if (rc)
        return rc;
    rc = refit_transport_post(tp, src[s].peer, L->d, n, &L->req);
    if (rc) {
        *wire = 1;
        return refit_error_push(rc, "posting %zu reads to source %s", n, src[s].name);
    }
    L->batch_first = L->next;
    L->batch_n = n;
    L->next += n;
    L->posted_at = rf_seconds();
    if (st) {
        st->descriptors += n;
        st->posts++;
    }
    return 0;
}

int rf_exec_run(refit_transport_t *tp, const struct rf_plan *plan, const struct rf_exec_source *src,
                uint32_t n_sources, uint32_t flush_every, int64_t timeout_ms,
                rf_exec_local_fn local, rf_exec_done_fn done, void *arg, struct rf_exec_stats *st)
{
    const struct refit_tp_caps *caps = refit_transport_caps(tp);
    /* refit.flush_every is at least 1 (the schema); 0 here would never post. */
    uint32_t per_post = flush_every ? flush_every : 1;
    if (caps->max_desc_per_post && per_post > caps->max_desc_per_post)
        per_post = caps->max_desc_per_post;
    struct lane *lanes = calloc(n_sources ? n_sources : 1, sizeof(*lanes));
    if (!lanes)
        return REFIT_ENOMEM;
    int rc = 0;
    /* Descriptors are sorted by source: find each source's range. */
    for (size_t i = 0; i < plan->n_desc;) {
        uint32_t s = plan->desc[i].source;
        size_t j = i;
        while (j < plan->n_desc && plan->desc[j].source == s)
            j++;
        if (s >= n_sources || !src[s].peer) {
            rc = refit_error_set(REFIT_EINVAL, "exec: descriptor for an unknown source %u", s);
            goto out;
        }
        lanes[s].next = i;
        lanes[s].end = j;
        lanes[s].d = calloc(per_post, sizeof(struct refit_tp_desc));
        if (!lanes[s].d) {
            rc = REFIT_ENOMEM;
            goto out;
        }
        i = j;
    }
    size_t remaining = plan->n_desc;
    struct lane_fail fail = {0};
    int wire = 0;
    while (remaining > 0) {
        int progressed = 0;
        for (uint32_t s = 0; s < n_sources && !rc; s++) {
            struct lane *L = &lanes[s];
            if (L->dead)
                continue;
            if (L->req) {
                int t = refit_transport_test(tp, L->req);
                if (t == REFIT_EAGAIN) {
                    if (rf_seconds() - L->posted_at > (double)timeout_ms / 1000.0) {
                        refit_error_set(REFIT_ETIMEDOUT, "reading from source %s: no completion within %lld ms",
                                        src[s].name, (long long)timeout_ms);
                        /* its request stays out until the end (waited for there) */
                        lane_fail(L, s, REFIT_ETIMEDOUT, 1, &remaining, &fail, st);
                        progressed = 1;
                    }
                    continue;
                }
                refit_transport_req_free(tp, L->req);
                L->req = NULL;
                if (t) {
                    refit_error_push(t, "reading from source %s", src[s].name);
                    lane_fail(L, s, t, 1, &remaining, &fail, st);
                    progressed = 1;
                    continue;
                }
                remaining -= L->batch_n;
                progressed = 1;
                /* Keep the wire busy: post this lane's next batch before
                 * converting what just arrived. */
                size_t done_first = L->batch_first, done_n = L->batch_n;
                if (L->next < L->end && (rc = post_next(tp, plan, src, s, L, per_post, local, arg, st, &wire))) {
                    if (!wire)
                        break;
                    lane_fail(L, s, rc, 0, &remaining, &fail, st);
                    rc = 0;
                }
                int busy = 0;
                for (uint32_t q = 0; q < n_sources && !busy; q++)
                    busy = lanes[q].req != NULL;
                double t0 = rf_seconds();
                if (done && (rc = done(arg, done_first, done_n)))
                    break;
                if (!busy && st)
                    st->idle_wire_s += rf_seconds() - t0;
                continue;
            }
            if (L->next < L->end) {
                if ((rc = post_next(tp, plan, src, s, L, per_post, local, arg, st, &wire))) {
                    if (!wire)
                        break;
                    lane_fail(L, s, rc, 0, &remaining, &fail, st);
                    rc = 0;
                }
                progressed = 1;
            }
        }
        if (rc)
            break;
        if (!progressed) {
            /* Nothing moved: block briefly on one request instead of
             * spinning; its result is read by test() on the next turn. */
            int p = refit_transport_progress(tp);
            if (p && p != REFIT_EAGAIN) {
                rc = p;
                break;
            }
            for (uint32_t s = 0; s < n_sources; s++)
                if (lanes[s].req && !lanes[s].dead) {
                    refit_transport_wait(tp, lanes[s].req, 1);
                    break;
                }
        }
    }
    /* every live source done: the first failure is the result */
    if (!rc && fail.rc)
        rc = refit_error_set(fail.rc, "%s", fail.msg);
out:
    for (uint32_t s = 0; s < n_sources; s++) {
        if (lanes[s].req) {
            /* Failed elsewhere: let it finish or fail before freeing. */
            refit_transport_wait(tp, lanes[s].req, timeout_ms);
            refit_transport_req_free(tp, lanes[s].req);
        }
        free(lanes[s].d);
    }
    free(lanes);
    return rc;
}
