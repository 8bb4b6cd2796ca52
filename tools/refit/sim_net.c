/* sim_net.c — a fluid network for `refit sim`.
 *
 * Links are one direction of a NIC (egress or ingress, full duplex) with a
 * capacity in bytes per second; the fabric between NICs is non-blocking (a
 * fat tree).  A flow crosses two links, its source NIC's egress and its
 * destination's ingress, and gets a max-min fair share of both: rates are
 * recomputed by progressive filling (raise every unfrozen flow's rate
 * together; the link that saturates first freezes the flows crossing it)
 * whenever a flow starts or ends.  That is the steady state many TCP or RDMA
 * streams converge to; start-up, congestion control and incast losses are
 * not modelled.  A flow with up < 0 is a timer: no bytes, it ends at its
 * start (for waits and polls).
 *
 * Flows that end within a relative 1e-6 of each other end together, so a
 * symmetric job (every receiver alike) costs a handful of rate
 * computations, not one per flow. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "refit/status.h"
#include "sim.h"

enum { F_PENDING = 0, F_ACTIVE = 1, F_DONE = 2 };

struct flow {
    int up, down, tag, state;
    double bytes, left, rate, start;
};

struct sim_net {
    int n_links;
    double *cap, *carried, *rem;
    int *cnt, *first, *list;
    struct flow *f;
    size_t n, cap_f;
};

int sim_net_create(int n_links, const double *cap, sim_net_t **out)
{
    sim_net_t *n = calloc(1, sizeof(*n));
    if (!n)
        return REFIT_ENOMEM;
    n->n_links = n_links;
    n->cap = malloc((size_t)n_links * sizeof(double));
    n->carried = calloc((size_t)n_links, sizeof(double));
    n->rem = malloc((size_t)n_links * sizeof(double));
    n->cnt = malloc((size_t)n_links * sizeof(int));
    n->first = malloc(((size_t)n_links + 1) * sizeof(int));
    if (!n->cap || !n->carried || !n->rem || !n->cnt || !n->first) {
        sim_net_destroy(n);
        return REFIT_ENOMEM;
    }
    for (int l = 0; l < n_links; l++) {
        if (!(cap[l] > 0)) {
            sim_net_destroy(n);
            return refit_error_set(REFIT_EINVAL, "simulated link %d has no capacity", l);
        }
        n->cap[l] = cap[l];
    }
    *out = n;
    return 0;
}

void sim_net_destroy(sim_net_t *n)
{
    if (!n)
        return;
    free(n->cap);
    free(n->carried);
    free(n->rem);
    free(n->cnt);
    free(n->first);
    free(n->list);
    free(n->f);
    free(n);
}

int sim_net_add(sim_net_t *n, int up, int down, double bytes, double start, int tag)
{
    if ((up >= 0 && (up >= n->n_links || down < 0 || down >= n->n_links)) || !(bytes >= 0) || !(start >= 0))
        return refit_error_set(REFIT_EINVAL, "simulated flow: links %d -> %d, %.0f bytes at %.6f s", up, down,
                               bytes, start);
    if (n->n == n->cap_f) {
        size_t nc = n->cap_f ? n->cap_f * 2 : 1024;
        struct flow *nf = realloc(n->f, nc * sizeof(*nf));
        int *nl = realloc(n->list, nc * 2 * sizeof(int));
        if (nf)
            n->f = nf;
        if (nl)
            n->list = nl;
        if (!nf || !nl)
            return REFIT_ENOMEM;
        n->cap_f = nc;
    }
    n->f[n->n] = (struct flow){up, down, tag, F_PENDING, bytes, bytes, 0, start};
    return (int)n->n++;
}

const double *sim_net_carried(const sim_net_t *n)
{
    return n->carried;
}

/* Max-min fair rates of the active flows (progressive filling). */
static void fill_rates(sim_net_t *n)
{
    memcpy(n->rem, n->cap, (size_t)n->n_links * sizeof(double));
    memset(n->cnt, 0, (size_t)n->n_links * sizeof(int));
    for (size_t i = 0; i < n->n; i++)
        if (n->f[i].state == F_ACTIVE && n->f[i].up >= 0) {
            n->cnt[n->f[i].up]++;
            n->cnt[n->f[i].down]++;
            n->f[i].rate = -1; /* unfrozen */
        }
    /* Flows by link: first[l] .. first[l+1] in list. */
    n->first[0] = 0;
    for (int l = 0; l < n->n_links; l++)
        n->first[l + 1] = n->first[l] + n->cnt[l];
    int *at = calloc((size_t)n->n_links, sizeof(int));
    if (!at)
        return;
    for (size_t i = 0; i < n->n; i++)
        if (n->f[i].state == F_ACTIVE && n->f[i].up >= 0) {
            n->list[n->first[n->f[i].up] + at[n->f[i].up]++] = (int)i;
            n->list[n->first[n->f[i].down] + at[n->f[i].down]++] = (int)i;
        }
    free(at);
    for (;;) {
        int best = -1;
        double share = 0;
        for (int l = 0; l < n->n_links; l++)
            if (n->cnt[l] > 0) {
                double s = n->rem[l] / n->cnt[l];
                if (best < 0 || s < share) {
                    best = l;
                    share = s;
                }
            }
        if (best < 0)
            break;
        if (share < 0)
            share = 0;
        for (int k = n->first[best]; k < n->first[best + 1]; k++) {
            struct flow *f = &n->f[n->list[k]];
            if (f->rate >= 0)
                continue;
            f->rate = share;
            n->rem[f->up] -= share;
            n->cnt[f->up]--;
            n->rem[f->down] -= share;
            n->cnt[f->down]--;
        }
        n->cnt[best] = 0;
    }
}

/* The earliest time something happens after t: a start or an end. */
static double next_event(const sim_net_t *n, double t)
{
    double next = INFINITY;
    for (size_t i = 0; i < n->n; i++) {
        const struct flow *f = &n->f[i];
        if (f->state == F_PENDING && f->start < next)
            next = f->start;
        else if (f->state == F_ACTIVE && f->rate > 0 && t + f->left / f->rate < next)
            next = t + f->left / f->rate;
    }
    return next;
}

int sim_net_run(sim_net_t *n, sim_net_done_fn done, void *arg, double *end)
{
    double t = 0, last = 0;
    int *ended = NULL;
    size_t cap_e = 0;
    int rc = 0;
    for (;;) {
        /* Start what is due, end the timers and empty flows among them. */
        size_t ne = 0;
        int changed = 0;
        for (size_t i = 0; i < n->n; i++) {
            struct flow *f = &n->f[i];
            if (f->state == F_PENDING && f->start <= t * (1 + 1e-12)) {
                f->state = F_ACTIVE;
                changed = 1;
            }
            if (f->state == F_ACTIVE && (f->up < 0 || f->left <= 1e-9 * f->bytes + 1e-6)) {
                if (ne == cap_e) {
                    size_t nc = cap_e ? cap_e * 2 : 256;
                    int *ne2 = realloc(ended, nc * sizeof(int));
                    if (!ne2) {
                        free(ended);
                        return REFIT_ENOMEM;
                    }
                    ended = ne2;
                    cap_e = nc;
                }
                f->state = F_DONE;
                ended[ne++] = (int)i;
            }
        }
        for (size_t k = 0; k < ne && !rc; k++) {
            if (t > last)
                last = t;
            if (done)
                rc = done(arg, n, ended[k], n->f[ended[k]].tag, t);
        }
        if (rc)
            break;
        if (ne || changed)
            fill_rates(n);
        double next = next_event(n, t);
        if (isinf(next))
            break;
        double dt = next - t;
        /* Advance; flows ending within 1e-6 of dt end now. */
        for (size_t i = 0; i < n->n; i++) {
            struct flow *f = &n->f[i];
            if (f->state != F_ACTIVE || f->up < 0)
                continue;
            double moved = f->rate * dt;
            if (f->rate > 0 && f->left / f->rate <= dt * (1 + 1e-6))
                moved = f->left;
            f->left -= moved;
            n->carried[f->up] += moved;
            n->carried[f->down] += moved;
        }
        t = next;
    }
    free(ended);
    *end = last;
    return rc;
}
