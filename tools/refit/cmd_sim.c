/* cmd_sim.c — `refit sim`: the refit cycle of a whole cluster predicted
 * from refit's own plans (sim.h says which file does what): options, and
 * the report — planning time and memory per receiver, bytes per receiver
 * and per NIC, the predicted cycle beside the physical floor, the busiest
 * NIC; with --schedule compare, naive and spread side by side. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/config.h"
#include "refit/status.h"
#include "sim.h"

/* The command line: sim_opts' integers directly; the layouts, the choices
 * and the numbers (NAN: not given) are checked and stored by sim_cli_apply. */
struct sim_cli {
    struct sim_opts o;
    const char *trainer, *engine, *mode, *fp8, *schedule;
    double nic_gbps, efficiency, latency_us, poll_ms, hop_ms;
};

#define AT(f) CLI_AT(struct sim_cli, f)
#define NUM(name, meta, f, help) {name, NULL, CLI_DBL, meta, 0, 0, NULL, NULL, AT(f), help}
static const struct cli_opt sim_table[] = {
    {"--model", NULL, CLI_STR, "YAML", 0, 0, NULL, NULL, AT(o.model),
     "a model YAML (configs/models) or an HF config.json (required)"},
    {"--trainer", NULL, CLI_STR, "tp=T,ep=E[,pp=1]", 0, 0, NULL, NULL, AT(trainer), "the trainer's parallelism"},
    {"--trainer-gpus", NULL, CLI_INT, "N", 1, 65536, NULL, NULL, AT(o.t_gpus), "the trainer's GPUs"},
    {"--engine", NULL, CLI_STR, "tp=T[,ep=T]", 0, 0, NULL, NULL, AT(engine), "each engine's parallelism"},
    {"--engines", NULL, CLI_INT, "K", 1, 4096, NULL, NULL, AT(o.engines), "inference engines"},
    NUM("--nic-gbps", "G", nic_gbps, "each NIC's Gbit/s, in [0.001, 100000]"),
    {"--gpus-per-node", NULL, CLI_INT, "G", 1, 32, NULL, NULL, AT(o.gpus_per_node), "GPUs of a node"},
    {"--nics-per-node", NULL, CLI_INT, "N", 1, 32, NULL, NULL, AT(o.nics_per_node), "NICs of a node"},
    NUM("--efficiency", "X", efficiency, "the share of a NIC's rate refit gets, in [0.01, 1] (default 0.9)"),
    {"--mode", NULL, CLI_STR, "MODE", 0, 0, NULL, NULL, AT(mode), "pull or push"},
    {"--fp8", NULL, CLI_STR, "RULE", 0, 0, NULL, NULL, AT(fp8), "trainer or off"},
    {"--fanout", NULL, CLI_INT, "K", 0, 4096, NULL, NULL, AT(o.fanout), "tree fan-out: pullers per source"},
    {"--schedule", NULL, CLI_STR, "HOW", 0, 0, NULL, NULL, AT(schedule), "naive, spread or compare"},
    {"--flush-every", NULL, CLI_INT, "N", 1, 1000000, NULL, NULL, AT(o.flush_every), "descriptors per posted batch"},
    NUM("--latency-us", "U", latency_us, "microseconds per posted batch, in [0, 1000000]"),
    NUM("--poll-ms", "P", poll_ms, "fan-out: a waiting receiver re-checks this often, in [0, 100000]"),
    NUM("--hop-ms", "H", hop_ms, "fan-out: commit + re-publish before a replica serves, in [0, 100000]"),
    {"--push-streams", NULL, CLI_INT, "K", 1, 4096, NULL, NULL, AT(o.push_streams),
     "receivers a push publisher serves at once (default refit.push_streams)"},
    {"--jobs", NULL, CLI_INT, "J", 1, 64, NULL, NULL, AT(o.jobs), "planning processes at once"},
};
#undef NUM
#undef AT

static const struct cli_spec sim_spec = {
    .cmd = "sim",
    .about = "Predicts one refit cycle of a cluster: every receiver position is planned by the real\n"
             "planner (refit_receiver_plan_dry, one process per position: its time and peak memory),\n"
             "its pieces are given sources by the schedule (naive: each receiver alone, as the\n"
             "planner does; spread: all engines of a layout together, staggered push order), and the\n"
             "bytes run through a fluid model of the NICs (bandwidth x efficiency, max-min fair\n"
             "sharing at both ends, NICs pinned as topology.nic_pin auto pins them).  Prints the\n"
             "predicted cycle, the physical floor (max of the ingress per engine and the egress per\n"
             "trainer NIC of the bytes the engines keep) and their ratio, and the busiest NIC.\n"
             "Calibrate --efficiency with `refit bench transport` on the real fabric (docs/scale.md).\n",
    .opts = sim_table,
    .n_opts = CLI_N(sim_table),
};

/* "tp=8,ep=32,pp=1" */
static int parse_par(const char *opt, const char *v, int *tp, int *ep, int *pp)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", v);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        char *end = NULL;
        long n = eq ? strtol(eq + 1, &end, 10) : 0;
        if (!eq || !end || *end || n < 1 || n > 65536)
            return refit_error_set(REFIT_EINVAL, "%s '%s': expected tp=N,ep=M[,pp=P] with N, M, P >= 1", opt, v);
        *eq = 0;
        if (!strcmp(t, "tp"))
            *tp = (int)n;
        else if (!strcmp(t, "ep"))
            *ep = (int)n;
        else if (!strcmp(t, "pp") && pp)
            *pp = (int)n;
        else
            return refit_error_set(REFIT_EINVAL, "%s '%s': unknown part '%s'", opt, v, t);
    }
    return 0;
}

/* A number given (not NAN) goes to *out after its range check. */
static int num(const char *opt, double v, double lo, double hi, double *out)
{
    if (isnan(v))
        return 0;
    if (!(v >= lo && v <= hi))
        return refit_error_set(REFIT_EINVAL, "%s '%g': expected a number in [%g, %g]", opt, v, lo, hi);
    *out = v;
    return 0;
}

/* What the table leaves as text or NAN, into c->o. */
static int sim_cli_apply(struct sim_cli *c)
{
    struct sim_opts *s = &c->o;
    int rc = c->trainer ? parse_par("--trainer", c->trainer, &s->t_tp, &s->t_ep, &s->t_pp) : 0;
    if (!rc && c->engine)
        rc = parse_par("--engine", c->engine, &s->e_tp, &s->e_ep, NULL);
    if (!rc)
        rc = num("--nic-gbps", c->nic_gbps, 1e-3, 1e5, &s->nic_gbps);
    if (!rc)
        rc = num("--efficiency", c->efficiency, 0.01, 1, &s->efficiency);
    if (!rc)
        rc = num("--latency-us", c->latency_us, 0, 1e6, &s->latency_us);
    if (!rc)
        rc = num("--poll-ms", c->poll_ms, 0, 1e5, &s->poll_ms);
    if (!rc)
        rc = num("--hop-ms", c->hop_ms, 0, 1e5, &s->hop_ms);
    if (rc)
        return rc;
    if (c->mode) {
        if (strcmp(c->mode, "pull") && strcmp(c->mode, "push"))
            return refit_error_set(REFIT_EINVAL, "--mode '%s': pull or push", c->mode);
        s->push = !strcmp(c->mode, "push");
    }
    if (c->fp8) {
        if (strcmp(c->fp8, "trainer") && strcmp(c->fp8, "off"))
            return refit_error_set(REFIT_EINVAL, "--fp8 '%s': trainer or off", c->fp8);
        s->fp8 = !strcmp(c->fp8, "trainer");
    }
    if (c->schedule) {
        const char *v = c->schedule;
        if (strcmp(v, "naive") && strcmp(v, "spread") && strcmp(v, "compare"))
            return refit_error_set(REFIT_EINVAL, "--schedule '%s': naive, spread or compare", v);
        s->sched = !strcmp(v, "spread") ? RF_SCHED_SPREAD : RF_SCHED_NAIVE;
        s->compare = !strcmp(v, "compare");
    }
    return 0;
}

int sim_opts_check(struct sim_opts *o)
{
    if (!o->model)
        return refit_error_set(REFIT_EINVAL, "--model is required (a model YAML or an HF config.json)");
    if (o->t_pp > 1)
        return refit_error_set(REFIT_ENOTSUP, "--trainer pp=%d: the planner's trainer layouts have no pipeline "
                               "stages yet (refit_megatron_rank is pipeline parallelism 1)", o->t_pp);
    if (!o->t_gpus)
        o->t_gpus = o->t_tp > o->t_ep ? o->t_tp : o->t_ep;
    if (o->t_gpus % o->t_tp || o->t_gpus % o->t_ep)
        return refit_error_set(REFIT_EINVAL, "--trainer-gpus %d: not a multiple of tp %d and ep %d", o->t_gpus,
                               o->t_tp, o->t_ep);
    if (o->e_ep > 1 && o->e_ep != o->e_tp)
        return refit_error_set(REFIT_EINVAL, "--engine ep=%d: vLLM expert parallelism here means ep = tp (%d)",
                               o->e_ep, o->e_tp);
    if (!o->nics_per_node)
        o->nics_per_node = o->gpus_per_node;
    if (o->nics_per_node > o->gpus_per_node)
        return refit_error_set(REFIT_EINVAL, "--nics-per-node %d: more NICs than GPUs (%d) per node",
                               o->nics_per_node, o->gpus_per_node);
    if (o->fanout && o->push)
        return refit_error_set(REFIT_EINVAL, "--fanout with --mode push: fan-out is for pull mode (docs/fanout.md)");
    if ((size_t)o->t_gpus * (size_t)(o->engines * o->e_tp) > 64u * 1024 * 1024)
        return refit_error_set(REFIT_ERANGE, "%d trainer GPUs x %d receivers: too many pairs to simulate", o->t_gpus,
                               o->engines * o->e_tp);
    return 0;
}

/* A refit.* integer as the core schema gives it (refit.flush_every,
 * refit.push_streams): the simulator batches and serves as an engine with
 * the default configuration does (one source of each default; 0, refused
 * by the option's range, if no config is made). */
static int schema_int(const char *key)
{
    refit_config_t *cfg = NULL;
    int64_t v = 0;
    if (refit_config_create(&cfg) == 0 && refit_config_int(cfg, key, &v) != 0)
        v = 0;
    refit_config_destroy(cfg);
    return (int)v;
}

void sim_opts_default(struct sim_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->t_tp = o->t_ep = o->t_pp = o->e_tp = o->e_ep = o->engines = 1;
    o->nic_gbps = 400;
    o->efficiency = 0.9;
    o->gpus_per_node = 8;
    o->flush_every = schema_int("refit.flush_every");
    o->latency_us = 5;
    o->poll_ms = 25;
    o->hop_ms = 0;
    o->jobs = 1;
    o->push_streams = schema_int("refit.push_streams");
}

/* ------------------------------------------------------------------ */
/* Report */

static void print_plan(const struct sim_opts *o, const struct sim_plan *p)
{
    printf("\nplanning: every receiver plans its own layout on its own host; the %d engines hold the same %d "
           "plans, one per tp rank, each planned here once in a process of its own (refit_receiver_plan_dry)\n",
           o->engines, p->n_pos);
    printf("%5s %9s %9s %10s %10s %10s %10s %10s %10s\n", "rank", "pieces", "descs", "wire GB", "kept GB",
           "items GB", "plan ms", "peak MiB", "growth MiB");
    double tmax = 0, tsum = 0, mmax = 0, gmax = 0;
    for (int j = 0; j < p->n_pos; j++) {
        const struct sim_pos *sp = &p->pos[j];
        double growth = (double)(sp->rss_peak_kib - sp->rss_base_kib) / 1024.0;
        if (j < 16 || j == p->n_pos - 1)
            printf("%5d %9llu %9llu %10.3f %10.3f %10.3f %10.1f %10.1f %10.1f\n", j,
                   (unsigned long long)sp->plan_pieces, (unsigned long long)sp->plan_desc, sp->plan_wire / 1e9,
                   sp->kept / 1e9, sp->attr_wire / 1e9, sp->plan_s * 1e3, sp->rss_peak_kib / 1024.0, growth);
        else if (j == 16)
            printf("%5s\n", "...");
        tsum += sp->plan_s;
        if (sp->plan_s > tmax)
            tmax = sp->plan_s;
        if (sp->rss_peak_kib / 1024.0 > mmax)
            mmax = sp->rss_peak_kib / 1024.0;
        if (growth > gmax)
            gmax = growth;
    }
    int n_rcv = o->engines * o->e_tp;
    printf("per receiver: at most %.1f ms and %.1f MiB peak (%.1f MiB of it the plan); all %d receivers: %.2f s "
           "of CPU in total, %.1f ms wall when each plans on its own host\n",
           tmax * 1e3, mmax, gmax, n_rcv, tsum / p->n_pos * n_rcv, tmax * 1e3);
    printf("(items GB: the wire bytes of the per-source split the simulator uses; wire GB: the planner's)\n");
}

static void print_result(const struct sim_opts *o, const struct sim_result *r, const char *label)
{
    char nic[96];
    sim_cycle_nic_name(o, r->busiest, nic, sizeof(nic));
    printf("%-8s predicted %8.3f s   floor %8.3f s   ratio %6.3fx   (wire floor %.3f s: %.3fx)   busiest: "
           "%s, %.1f GB, %.0f%% busy\n",
           label, r->cycle_s, r->floor_s, r->floor_s > 0 ? r->cycle_s / r->floor_s : 0, r->wire_floor_s,
           r->wire_floor_s > 0 ? r->cycle_s / r->wire_floor_s : 0, nic, r->busiest_bytes / 1e9,
           r->busiest_busy * 100);
    printf("%-8s trainer NIC egress: max %.2f GB, mean %.2f GB (max/mean %.3f)%s\n", "", r->tr_egress_max / 1e9,
           r->tr_egress_mean / 1e9, r->tr_egress_mean > 0 ? r->tr_egress_max / r->tr_egress_mean : 0,
           o->fanout ? "" : "");
    if (o->fanout)
        printf("%-8s fan-out: %d pulls from the trainer, %d replica copies\n", "", r->trainer_pulls,
               r->replica_copies);
}

static void print_head(const struct sim_opts *o, const struct sim_plan *p)
{
    printf("refit sim: %s (%.1f GB in bf16), trainer tp %d ep %d on %d GPUs -> %d engine%s of tp %d%s (%d "
           "receivers)\n",
           p->model_name, p->model_bytes / 1e9, o->t_tp, o->t_ep, o->t_gpus, o->engines, o->engines == 1 ? "" : "s",
           o->e_tp, o->e_ep > 1 ? " (ep = tp)" : "", o->engines * o->e_tp);
    printf("network: %d GPUs and %d NICs per node, %.0f Gb/s x %.2f = %.2f GB/s per NIC each way; %s%s%s; "
           "flush_every %d, %.0f us per batch",
           o->gpus_per_node, o->nics_per_node, o->nic_gbps, o->efficiency, o->nic_gbps / 8 * o->efficiency,
           o->push ? "push" : "pull", o->fp8 ? ", FP8 (trainer rule)" : "", o->fp8 && o->push ? " quantized by the trainer" : "",
           o->flush_every, o->latency_us);
    if (o->push && o->push_streams > 1)
        printf("; %d receivers served at once per publisher", o->push_streams);
    if (o->fanout)
        printf("; fan-out %d pullers per source, %.0f ms poll, %.0f ms per hop", o->fanout, o->poll_ms, o->hop_ms);
    printf("\n");
}

int cmd_sim(int argc, char **argv)
{
    struct sim_cli c = {.nic_gbps = NAN, .efficiency = NAN, .latency_us = NAN, .poll_ms = NAN, .hop_ms = NAN};
    sim_opts_default(&c.o);
    int rc = cli_opts_parse(&sim_spec, argc, argv, &c, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    if (!rc)
        rc = sim_cli_apply(&c);
    struct sim_opts o = c.o;
    int compare = o.compare;
    if (!rc)
        rc = sim_opts_check(&o);
    if (rc)
        return cli_fail("sim", rc);
    struct sim_plan p;
    rc = sim_plan_make(&o, &p);
    if (rc)
        return cli_fail("sim", rc);
    print_head(&o, &p);
    print_plan(&o, &p);
    printf("\ncycle (one warm cycle, wire only: conversion and verification overlap the wire):\n");
    for (int k = 0; !rc && k < (compare ? 2 : 1); k++) {
        if (compare)
            o.sched = k ? RF_SCHED_SPREAD : RF_SCHED_NAIVE;
        struct sim_result r;
        double t0 = cli_now();
        rc = sim_cycle_run(&o, &p, &r);
        if (!rc)
            print_result(&o, &r, o.sched == RF_SCHED_SPREAD ? "spread" : "naive");
        if (!rc && getenv("REFIT_SIM_TIMING"))
            printf("(simulated in %.2f s)\n", cli_now() - t0);
    }
    if (!rc)
        printf("\nfloor: the bytes the engines keep, through the engine's NICs (ingress) or out of every trainer "
               "NIC evenly (egress%s); wire floor: the same with the bytes this plan puts on the wire\n",
               o.fanout ? ", one copy per tp rank with fan-out" : "");
    sim_plan_free(&p);
    return rc ? cli_fail("sim", rc) : 0;
}
