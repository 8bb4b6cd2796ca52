/* sched.c — source choice among replicas and staggered visiting orders
 * (see sched.h for why and how the engine calls it). */
#include <stdlib.h>

#include "refit/status.h"
#include "sched.h"

struct ord {
    uint64_t bytes;
    size_t i;
};

/* Largest first; equal sizes keep the caller's order. */
static int cmp_ord(const void *a, const void *b)
{
    const struct ord *x = a, *y = b;
    if (x->bytes != y->bytes)
        return x->bytes > y->bytes ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* The least-loaded candidate, looking from `start` on so that ties rotate. */
static uint32_t least(const struct rf_sched_item *it, const uint64_t *load, uint32_t start)
{
    uint32_t best = start % it->ncand;
    for (uint32_t k = 1; k < it->ncand; k++) {
        uint32_t c = (start + k) % it->ncand;
        if (load[it->cand[c]] < load[it->cand[best]])
            best = c;
    }
    return best;
}

static int check_items(const struct rf_sched_item *items, size_t n, uint32_t n_sources)
{
    for (size_t i = 0; i < n; i++) {
        if (!items[i].ncand || !items[i].cand)
            return refit_error_set(REFIT_EINVAL, "schedule: piece %zu has no candidate source", i);
        for (uint32_t c = 0; c < items[i].ncand; c++)
            if (items[i].cand[c] >= n_sources)
                return refit_error_set(REFIT_EINVAL, "schedule: piece %zu: source %u of %u", i, items[i].cand[c],
                                       n_sources);
    }
    return 0;
}

int rf_sched_choose(const struct rf_sched_item *items, size_t n, uint32_t n_sources,
                    enum rf_sched_policy pol, const struct rf_sched_who *who, uint32_t *choice,
                    uint64_t *load)
{
    if ((n && (!items || !choice)) || !n_sources)
        return refit_error_set(REFIT_EINVAL, "schedule: bad arguments");
    int rc = check_items(items, n, n_sources);
    if (rc)
        return rc;
    uint32_t reps = who && who->n_replicas > 1 && pol == RF_SCHED_SPREAD ? who->n_replicas : 1;
    uint32_t self = reps > 1 ? who->replica % reps : 0;
    struct ord *ord = malloc((n ? n : 1) * sizeof(*ord));
    uint64_t *shared = calloc(n_sources, sizeof(*shared));
    if (!ord || !shared) {
        free(ord);
        free(shared);
        return REFIT_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        ord[i] = (struct ord){items[i].bytes, i};
    qsort(ord, n, sizeof(*ord), cmp_ord);
    for (size_t k = 0; k < n; k++) {
        const struct rf_sched_item *it = &items[ord[k].i];
        for (uint32_t r = 0; r < reps; r++) {
            /* Naive: ties to the first candidate, as the planner does;
             * spread: each engine of the layout looks from its own place. */
            uint32_t c = least(it, shared, pol == RF_SCHED_SPREAD ? r + (uint32_t)(k % it->ncand) : 0);
            shared[it->cand[c]] += it->bytes;
            if (r == self) {
                choice[ord[k].i] = c;
                if (load)
                    load[it->cand[c]] += it->bytes;
            }
        }
    }
    free(ord);
    free(shared);
    return 0;
}

static uint32_t gcd32(uint32_t a, uint32_t b)
{
    while (b) {
        uint32_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Participant self's step: the (self mod phi(n))-th number in 1..n-1
 * coprime with n (1 when n < 3), so its walk visits every peer once. */
static uint32_t step_of(uint32_t n, uint32_t self)
{
    uint32_t phi = 0;
    for (uint32_t s = 1; s < n; s++)
        phi += gcd32(s, n) == 1;
    if (phi < 2)
        return 1;
    uint32_t k = self % phi;
    for (uint32_t s = 1; s < n; s++)
        if (gcd32(s, n) == 1 && k-- == 0)
            return s;
    return 1;
}

void rf_sched_order(enum rf_sched_policy pol, uint32_t n, uint32_t self, uint32_t n_self, uint32_t *order)
{
    if (!n)
        return;
    /* Participants spread evenly over the peers: with as many participants
     * as peers each starts on its own; with fewer, they start n/n_self
     * apart.  And each walks with a step of its own: walking in the same
     * direction at the same pace, participants that meet on a slow peer
     * (a large share of bytes) leave it together and stay together, so
     * the peers they crowd are over-subscribed while others idle (a push
     * of Kimi-K2 into engines without expert parallelism: every engine
     * NIC 50% busy, 2.0x the floor); with their own steps they part at
     * the next peer (1.11x; docs/scale.md §3). */
    uint32_t start = 0, step = 1;
    if (pol == RF_SCHED_SPREAD && n_self) {
        start = (uint32_t)(((uint64_t)(self % n_self) * n) / n_self);
        step = step_of(n, self % n_self);
    }
    for (uint32_t k = 0; k < n; k++)
        order[k] = (uint32_t)((start + (uint64_t)k * step) % n);
}
