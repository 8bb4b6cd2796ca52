/* sim_cycle.c — one refit cycle of a simulated job as network flows.
 *
 * Placement: trainer ranks fill trainer nodes in rank order, engines fill
 * engine nodes after them (engine e's tp rank j is engine GPU e*tp + j);
 * each GPU talks through the NIC sim_topo_pin gives it.
 *
 * Pull: a receiver reads from every source at once, one lane per source
 * (rf_exec_run: one batch of flush_every descriptors in flight per source),
 * so each (source, receiver) pair is one flow, started after the request
 * latency of its batches (a lane waits one latency per batch).  Which
 * source serves each piece is the schedule's choice (sched.c): naive is
 * what every receiver's planner picks on its own, spread is the
 * layout-wide choice.
 *
 * Push: every trainer rank serves push_streams receivers at once, taking
 * the next as soon as one is done (push_pub.c's window), in the
 * order of the advert list (naive: the same sorted order for every
 * publisher) or rotated per publisher (spread: rf_sched_order).
 *
 * Fan-out (pull with max_pullers_per_source K): the trainer ranks count as
 * one source with at most K pullers; a receiver that committed becomes a
 * replica after hop_ms and serves its staging image (its kept bytes, one
 * flow) to at most K receivers of its position; waiting receivers see a
 * freed slot or a new replica poll_ms/2 later on average; least loaded
 * wins, a replica on ties, as in fanout.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refit/status.h"
#include "sim.h"

enum { R_WAIT = 0, R_TRAINER, R_REPLICA, R_DONE };

struct cyc {
    const struct sim_opts *o;
    const struct sim_plan *p;
    int n_src, n_rcv, n_tr_nics, n_en_nics;
    int *src_nic, *rcv_nic;
    /* bytes[q * n_src + s]: receiver q's wire bytes from source s. */
    double *bytes, *desc;
    int *left;            /* flows still running per receiver */
    double *done_at;
    /* push */
    int **order;          /* per publisher: receivers in serving order */
    int *next;            /* per publisher: index into order */
    /* fan-out */
    int *state, *from, *load, trainer_load;
    int *ready;           /* replica ready */
    double lat;
    int copies, trainer_pulls;
};

static int nic_of_gpu(const struct sim_opts *o, const int *pin, int base_nic, int g)
{
    return base_nic + (g / o->gpus_per_node) * o->nics_per_node + pin[g % o->gpus_per_node];
}

static int place(struct cyc *c)
{
    const struct sim_opts *o = c->o;
    int *pin = malloc((size_t)o->gpus_per_node * sizeof(int));
    if (!pin)
        return REFIT_ENOMEM;
    int rc = sim_topo_pin(o->gpus_per_node, o->nics_per_node, pin);
    int t_nodes = (o->t_gpus + o->gpus_per_node - 1) / o->gpus_per_node;
    int e_nodes = (c->n_rcv + o->gpus_per_node - 1) / o->gpus_per_node;
    c->n_tr_nics = t_nodes * o->nics_per_node;
    c->n_en_nics = e_nodes * o->nics_per_node;
    for (int s = 0; !rc && s < c->n_src; s++)
        c->src_nic[s] = nic_of_gpu(o, pin, 0, s);
    for (int q = 0; !rc && q < c->n_rcv; q++)
        c->rcv_nic[q] = nic_of_gpu(o, pin, c->n_tr_nics, q);
    free(pin);
    return rc;
}

/* Every receiver's bytes per source under the job's schedule. */
static int assign(struct cyc *c)
{
    const struct sim_opts *o = c->o;
    int rc = 0;
    for (int j = 0; !rc && j < c->p->n_pos; j++) {
        const struct sim_pos *sp = &c->p->pos[j];
        struct rf_sched_item *it = malloc((sp->n_items ? sp->n_items : 1) * sizeof(*it));
        uint32_t *choice = malloc((sp->n_items ? sp->n_items : 1) * sizeof(*choice));
        if (!it || !choice)
            rc = REFIT_ENOMEM;
        for (size_t i = 0; !rc && i < sp->n_items; i++)
            it[i] = (struct rf_sched_item){sp->items[i].ncand, sp->cand + sp->items[i].cand_at,
                                           sp->items[i].weight};
        /* Naive choices are the same for every engine: compute once. */
        for (int e = 0; !rc && e < o->engines; e++) {
            struct rf_sched_who who = {(uint32_t)e, (uint32_t)o->engines};
            if (e == 0 || o->sched == RF_SCHED_SPREAD)
                rc = rf_sched_choose(it, sp->n_items, (uint32_t)c->n_src, o->sched, &who, choice, NULL);
            int q = e * o->e_tp + j;
            for (size_t i = 0; !rc && i < sp->n_items; i++) {
                uint32_t s = it[i].cand[choice[i]];
                c->bytes[(size_t)q * c->n_src + s] += (double)sp->items[i].wire;
                c->desc[(size_t)q * c->n_src + s] += 1;
            }
        }
        free(it);
        free(choice);
    }
    return rc;
}

static double start_delay(const struct cyc *c, double desc)
{
    double fe = c->o->flush_every > 0 ? c->o->flush_every : 1; /* >= 1 from the schema or --flush-every */
    return ceil(desc / fe) * c->lat;
}

static int add_pull(struct cyc *c, sim_net_t *n, int q, double t)
{
    int rc = 0;
    c->left[q] = 0;
    for (int s = 0; !rc && s < c->n_src; s++) {
        double b = c->bytes[(size_t)q * c->n_src + s];
        if (b <= 0)
            continue;
        int id = sim_net_add(n, 2 * c->src_nic[s], 2 * c->rcv_nic[q] + 1, b,
                             t + start_delay(c, c->desc[(size_t)q * c->n_src + s]), q);
        rc = id < 0 ? id : 0;
        c->left[q]++;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* Push */

static int push_next(struct cyc *c, sim_net_t *n, int s, double t)
{
    while (c->next[s] < c->n_rcv) {
        int q = c->order[s][c->next[s]++];
        double b = c->bytes[(size_t)q * c->n_src + s];
        if (b <= 0)
            continue;
        /* The tag says publisher and receiver. */
        int id = sim_net_add(n, 2 * c->src_nic[s], 2 * c->rcv_nic[q] + 1, b,
                             t + start_delay(c, c->desc[(size_t)q * c->n_src + s]), s * c->n_rcv + q);
        return id < 0 ? id : 0;
    }
    return 0;
}

static int push_done(void *arg, sim_net_t *n, int flow, int tag, double t)
{
    (void)flow;
    struct cyc *c = arg;
    int s = tag / c->n_rcv, q = tag % c->n_rcv;
    if (--c->left[q] == 0)
        c->done_at[q] = t;
    return push_next(c, n, s, t);
}

static int run_push(struct cyc *c, sim_net_t *n, double *end)
{
    int rc = 0;
    c->order = calloc((size_t)c->n_src, sizeof(int *));
    c->next = calloc((size_t)c->n_src, sizeof(int));
    if (!c->order || !c->next)
        return REFIT_ENOMEM;
    for (int q = 0; q < c->n_rcv; q++)
        for (int s = 0; s < c->n_src; s++)
            c->left[q] += c->bytes[(size_t)q * c->n_src + s] > 0;
    for (int s = 0; !rc && s < c->n_src; s++) {
        c->order[s] = malloc((size_t)c->n_rcv * sizeof(int));
        if (!c->order[s])
            return REFIT_ENOMEM;
        rf_sched_order(c->o->sched, (uint32_t)c->n_rcv, (uint32_t)s, (uint32_t)c->n_src, (uint32_t *)c->order[s]);
        /* push_streams receivers served at once (refit.push_streams). */
        for (int k = 0; !rc && k < (c->o->push_streams > 0 ? c->o->push_streams : 1); k++)
            rc = push_next(c, n, s, 0);
    }
    if (!rc)
        rc = sim_net_run(n, push_done, c, end);
    for (int s = 0; s < c->n_src; s++)
        free(c->order[s]);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Pull, with or without fan-out */

static int fan_try(struct cyc *c, sim_net_t *n, double t);

/* Tags: receiver q's flows are q; timers are n_rcv + q (q's replica is
 * ready and its lease released). */
static int pull_done(void *arg, sim_net_t *n, int flow, int tag, double t)
{
    (void)flow;
    struct cyc *c = arg;
    if (tag >= c->n_rcv) {
        int q = tag - c->n_rcv;
        c->ready[q] = 1;
        if (c->from[q] < 0)
            c->trainer_load--;
        else
            c->load[c->from[q]]--;
        return fan_try(c, n, t);
    }
    if (--c->left[tag] > 0)
        return 0;
    c->done_at[tag] = t;
    c->state[tag] = R_DONE;
    if (!c->o->fanout)
        return 0;
    double hop = c->o->hop_ms / 1e3 + c->o->poll_ms / 2e3;
    int id = sim_net_add(n, -1, -1, 0, t + hop, c->n_rcv + tag);
    return id < 0 ? id : 0;
}

/* Waiting receivers take a free slot: least loaded, a replica on ties. */
static int fan_try(struct cyc *c, sim_net_t *n, double t)
{
    int K = c->o->fanout, rc = 0;
    for (int q = 0; !rc && q < c->n_rcv; q++) {
        if (c->state[q] != R_WAIT)
            continue;
        int j = q % c->o->e_tp, best = -2, best_load = 1 << 30;
        if (c->trainer_load < K) {
            best = -1;
            best_load = c->trainer_load;
        }
        for (int e = 0; e < c->o->engines; e++) {
            /* Among equal replicas the choice is spread by receiver. */
            int rr = (e + q / c->o->e_tp) % c->o->engines * c->o->e_tp + j;
            if (rr == q || !c->ready[rr] || c->load[rr] >= K)
                continue;
            if (c->load[rr] < best_load || (c->load[rr] == best_load && best == -1)) {
                best = rr;
                best_load = c->load[rr];
            }
        }
        if (best == -2)
            continue;
        c->from[q] = best;
        if (best < 0) {
            c->trainer_load++;
            c->state[q] = R_TRAINER;
            c->trainer_pulls++;
            rc = add_pull(c, n, q, t);
        } else {
            c->load[best]++;
            c->state[q] = R_REPLICA;
            c->copies++;
            c->left[q] = 1;
            int id = sim_net_add(n, 2 * c->rcv_nic[best], 2 * c->rcv_nic[q] + 1, (double)c->p->pos[j].kept,
                                 t + c->lat, q);
            rc = id < 0 ? id : 0;
        }
    }
    return rc;
}

static int run_pull(struct cyc *c, sim_net_t *n, double *end)
{
    int rc = 0;
    if (c->o->fanout)
        rc = fan_try(c, n, 0);
    else
        for (int q = 0; !rc && q < c->n_rcv; q++) {
            c->state[q] = R_TRAINER;
            c->from[q] = -1;
            rc = add_pull(c, n, q, 0);
        }
    if (!rc)
        rc = sim_net_run(n, pull_done, c, end);
    for (int q = 0; !rc && q < c->n_rcv; q++)
        if (c->state[q] != R_DONE)
            rc = refit_error_set(REFIT_EPROTO, "simulation: receiver %d never finished", q);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Results */

static void floors(const struct cyc *c, const double *carried, double cap, struct sim_result *r)
{
    const struct sim_opts *o = c->o;
    double kept_engine = 0, wire_engine = 0, kept_all = 0;
    for (int j = 0; j < c->p->n_pos; j++) {
        kept_engine += (double)c->p->pos[j].kept;
        wire_engine += (double)c->p->pos[j].attr_wire;
        if ((double)c->p->pos[j].kept > r->kept_per_rcv_max)
            r->kept_per_rcv_max = (double)c->p->pos[j].kept;
        if ((double)c->p->pos[j].attr_wire > r->wire_per_rcv_max)
            r->wire_per_rcv_max = (double)c->p->pos[j].attr_wire;
    }
    kept_all = kept_engine * (o->fanout ? 1 : o->engines);
    /* An engine's ingress: its distinct NICs. */
    int nics = 0;
    for (int j = 0; j < o->e_tp; j++) {
        int dup = 0;
        for (int k = 0; k < j; k++)
            dup |= c->rcv_nic[k] == c->rcv_nic[j];
        nics += !dup;
    }
    r->ingress_bytes_max = kept_engine;
    r->ingress_s = kept_engine / (nics * cap);
    r->egress_s = kept_all / (c->n_tr_nics * cap);
    r->floor_s = r->ingress_s > r->egress_s ? r->ingress_s : r->egress_s;
    double eg = 0, mx = 0;
    for (int k = 0; k < c->n_tr_nics; k++) {
        eg += carried[2 * k];
        if (carried[2 * k] > mx)
            mx = carried[2 * k];
    }
    r->egress_total = eg;
    r->tr_egress_max = mx;
    r->tr_egress_mean = eg / c->n_tr_nics;
    double wi = wire_engine / (nics * cap), we = eg / (c->n_tr_nics * cap);
    r->wire_floor_s = wi > we ? wi : we;
    r->busiest = -1;
    for (int k = 0; k < c->n_tr_nics + c->n_en_nics; k++) {
        double b = carried[2 * k] > carried[2 * k + 1] ? carried[2 * k] : carried[2 * k + 1];
        if (b > r->busiest_bytes) {
            r->busiest_bytes = b;
            r->busiest = k;
        }
    }
    r->busiest_busy = r->cycle_s > 0 ? r->busiest_bytes / cap / r->cycle_s : 0;
}

static void cyc_free(struct cyc *c)
{
    free(c->src_nic);
    free(c->rcv_nic);
    free(c->bytes);
    free(c->desc);
    free(c->left);
    free(c->done_at);
    free(c->order);
    free(c->next);
    free(c->state);
    free(c->from);
    free(c->load);
    free(c->ready);
}

int sim_cycle_run(const struct sim_opts *o, const struct sim_plan *p, struct sim_result *r)
{
    memset(r, 0, sizeof(*r));
    struct cyc c = {.o = o, .p = p, .n_src = p->n_src, .n_rcv = o->engines * o->e_tp, .lat = o->latency_us / 1e6};
    size_t pairs = (size_t)c.n_src * (size_t)c.n_rcv;
    c.src_nic = calloc((size_t)c.n_src, sizeof(int));
    c.rcv_nic = calloc((size_t)c.n_rcv, sizeof(int));
    c.bytes = calloc(pairs, sizeof(double));
    c.desc = calloc(pairs, sizeof(double));
    c.left = calloc((size_t)c.n_rcv, sizeof(int));
    c.done_at = calloc((size_t)c.n_rcv, sizeof(double));
    c.state = calloc((size_t)c.n_rcv, sizeof(int));
    c.from = calloc((size_t)c.n_rcv, sizeof(int));
    c.load = calloc((size_t)c.n_rcv, sizeof(int));
    c.ready = calloc((size_t)c.n_rcv, sizeof(int));
    int rc = 0;
    if (!c.src_nic || !c.rcv_nic || !c.bytes || !c.desc || !c.left || !c.done_at || !c.state || !c.from ||
        !c.load || !c.ready)
        rc = REFIT_ENOMEM;
    if (!rc)
        rc = place(&c);
    if (!rc)
        rc = assign(&c);
    int n_nics = c.n_tr_nics + c.n_en_nics;
    double cap = o->nic_gbps * 1e9 / 8 * o->efficiency;
    double *caps = rc ? NULL : malloc((size_t)n_nics * 2 * sizeof(double));
    sim_net_t *n = NULL;
    if (!rc && !caps)
        rc = REFIT_ENOMEM;
    for (int k = 0; !rc && k < 2 * n_nics; k++)
        caps[k] = cap;
    if (!rc)
        rc = sim_net_create(2 * n_nics, caps, &n);
    double end = 0;
    if (!rc)
        rc = o->push ? run_push(&c, n, &end) : run_pull(&c, n, &end);
    if (!rc) {
        r->cycle_s = 0;
        for (int q = 0; q < c.n_rcv; q++)
            if (c.done_at[q] > r->cycle_s)
                r->cycle_s = c.done_at[q];
        r->n_tr_nics = c.n_tr_nics;
        r->n_en_nics = c.n_en_nics;
        r->replica_copies = c.copies;
        r->trainer_pulls = o->fanout ? c.trainer_pulls : c.n_rcv;
        floors(&c, sim_net_carried(n), cap, r);
    }
    sim_net_destroy(n);
    free(caps);
    cyc_free(&c);
    return rc;
}

void sim_cycle_nic_name(const struct sim_opts *o, int nic, char *buf, size_t n)
{
    int t_nodes = (o->t_gpus + o->gpus_per_node - 1) / o->gpus_per_node;
    int tr = t_nodes * o->nics_per_node;
    if (nic < tr)
        snprintf(buf, n, "trainer node %d NIC %d", nic / o->nics_per_node, nic % o->nics_per_node);
    else
        snprintf(buf, n, "engine node %d NIC %d", (nic - tr) / o->nics_per_node, (nic - tr) % o->nics_per_node);
}
