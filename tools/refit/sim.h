/* sim.h — `refit sim`: a refit of a whole cluster predicted from refit's
 * own plans.
 *
 *   sim_plan.c   what every receiver moves: each distinct receiver position
 *                planned by the real planner (refit_receiver_plan_dry) in a
 *                process of its own (time, peak memory), and its pieces with
 *                their candidate sources (the public composition API) as
 *                schedulable items
 *   sim_topo.c   which NIC each GPU uses: a node's PCI tree as a sysfs tree,
 *                pinned by refit_topology_pick exactly as topology.nic_pin
 *                auto pins a rank
 *   sim_net.c    a fluid network: full-duplex NICs, max-min fair sharing
 *                among the flows crossing each NIC, flows started late or
 *                when others end
 *   sim_cycle.c  the cycle as flows: pull lanes, push publishers serving
 *                receivers in turn, fan-out leases and replica copies
 *   cmd_sim.c    options and the report
 *
 * Also used by `refit bench cluster`, which measures what this predicts. */
#ifndef REFIT_SIM_H
#define REFIT_SIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../../core/src/sched.h"

/* ------------------------------------------------------------------ */
/* The job */

struct sim_opts {
    const char *model;       /* model YAML (model: section) or an HF config.json */
    int t_tp, t_ep, t_pp, t_gpus;
    int e_tp, e_ep, engines;
    double nic_gbps, efficiency;
    double latency_us;       /* per posted batch of descriptors */
    int gpus_per_node, nics_per_node;
    int push, fp8, fanout, flush_every;
    int push_streams;        /* receivers a push publisher serves at once (refit.push_streams) */
    enum rf_sched_policy sched;
    double poll_ms;          /* fan-out: a waiting receiver re-checks this often */
    double hop_ms;           /* fan-out: commit + re-publish before a replica serves */
    int jobs;                /* planning processes at once */
    int compare;             /* --schedule compare: naive, then spread */
};

/* cmd_sim.c: defaults, and the checks that fill in what follows from the
 * rest (trainer GPUs, NICs per node). */
void sim_opts_default(struct sim_opts *o);
int sim_opts_check(struct sim_opts *o);

/* ------------------------------------------------------------------ */
/* sim_plan.c */

/* One receiver position (an engine's tp rank): every engine holds the same
 * plan at the same position. */
struct sim_item {
    uint64_t weight;  /* the planner's balancing weight: the piece's bytes */
    uint64_t wire;    /* bytes on the wire when read (whole rows into scratch included) */
    uint32_t ncand, cand_at;
};

struct sim_pos {
    struct sim_item *items;
    size_t n_items;
    uint32_t *cand; /* pool: items[i].cand_at .. + ncand */
    size_t n_cand;
    /* From refit_receiver_plan_dry, in the planning process. */
    double plan_s;          /* layout maps, composition and planner, wall */
    uint64_t plan_wire, plan_desc, plan_pieces, kept, scratch;
    long rss_base_kib, rss_peak_kib; /* before and after planning */
    uint64_t attr_wire;     /* the items' wire bytes with the planner's choice (cross-check) */
};

struct sim_plan {
    int n_pos;              /* e_tp */
    struct sim_pos *pos;
    int n_src;              /* trainer ranks */
    char model_name[128];
    uint64_t model_bytes;   /* bf16, the whole model once */
    double wall_s;          /* planning all positions here, wall */
};

int sim_plan_make(const struct sim_opts *o, struct sim_plan *out);
void sim_plan_free(struct sim_plan *p);

/* ------------------------------------------------------------------ */
/* sim_topo.c */

/* nic[g]: the NIC (0..nics-1) GPU g of a node uses. */
int sim_topo_pin(int gpus, int nics, int *nic);

/* ------------------------------------------------------------------ */
/* sim_net.c */

typedef struct sim_net sim_net_t;
/* Called when a flow ends at time t; may add flows. */
typedef int (*sim_net_done_fn)(void *arg, sim_net_t *n, int flow, int tag, double t);

int sim_net_create(int n_links, const double *cap, sim_net_t **out);
void sim_net_destroy(sim_net_t *n);
/* A flow of `bytes` from link `up` (a NIC's egress) to link `down` (a NIC's
 * ingress), starting at `start`.  Returns its id (>= 0) or an error. */
int sim_net_add(sim_net_t *n, int up, int down, double bytes, double start, int tag);
/* Runs every flow to its end; *end the time the last one ended. */
int sim_net_run(sim_net_t *n, sim_net_done_fn done, void *arg, double *end);
/* Bytes each link carried. */
const double *sim_net_carried(const sim_net_t *n);

/* ------------------------------------------------------------------ */
/* sim_cycle.c */

struct sim_result {
    double cycle_s;                 /* last receiver done */
    double floor_s, ingress_s, egress_s, wire_floor_s;
    double ingress_bytes_max;       /* kept bytes into one engine */
    double egress_total;            /* bytes out of all trainer NICs */
    double wire_per_rcv_max, kept_per_rcv_max;
    int busiest;                    /* NIC index; trainer NICs first */
    double busiest_bytes, busiest_busy; /* bytes through it, fraction of the cycle at full rate */
    int n_tr_nics, n_en_nics;
    int replica_copies, trainer_pulls;
    double tr_egress_max, tr_egress_mean; /* bytes per trainer NIC */
};

int sim_cycle_run(const struct sim_opts *o, const struct sim_plan *p, struct sim_result *r);
/* NIC names for reports: "trainer node 3 nic 2". */
void sim_cycle_nic_name(const struct sim_opts *o, int nic, char *buf, size_t n);

#endif
