/* cmd_sim.c — `refit sim`: the refit cycle of a whole cluster predicted
 * from refit's own plans (sim.h says which file does what): options, and
 * the report — planning time and memory per receiver, bytes per receiver
 * and per NIC, the predicted cycle beside the physical floor, the busiest
 * NIC; with --schedule compare, naive and spread side by side. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "refit/status.h"
#include "sim.h"

static int usage(FILE *f)
{
    fprintf(f,
            "usage: refit sim --model YAML --trainer tp=T,ep=E[,pp=1] --trainer-gpus N --engine tp=T[,ep=T]\n"
            "                 --engines K --nic-gbps G --gpus-per-node G [--nics-per-node N]\n"
            "                 [--efficiency 0.9] [--mode pull|push] [--fp8 trainer|off] [--fanout K]\n"
            "                 [--schedule naive|spread|compare] [--flush-every N] [--latency-us U]\n"
            "                 [--poll-ms P] [--hop-ms H] [--push-streams K] [--jobs J]\n"
            "Predicts one refit cycle of a cluster: every receiver position is planned by the real\n"
            "planner (refit_receiver_plan_dry, one process per position: its time and peak memory),\n"
            "its pieces are given sources by the schedule (naive: each receiver alone, as the\n"
            "planner does; spread: all engines of a layout together, staggered push order), and the\n"
            "bytes run through a fluid model of the NICs (bandwidth x efficiency, max-min fair\n"
            "sharing at both ends, NICs pinned as topology.nic_pin auto pins them).  Prints the\n"
            "predicted cycle, the physical floor (max of the ingress per engine and the egress per\n"
            "trainer NIC of the bytes the engines keep) and their ratio, and the busiest NIC.\n"
            "--push-streams K: a push publisher serves K receivers at once (the engine: 1).\n"
            "--model takes a model YAML (configs/models) or an HF config.json.  Calibrate\n"
            "--efficiency with `refit bench transport` on the real fabric (docs/scale.md).\n");
    return f == stdout ? 0 : 2;
}

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

static int parse_num(const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end = NULL;
    double d = strtod(v, &end);
    if (!end || *end || !(d >= lo && d <= hi))
        return refit_error_set(REFIT_EINVAL, "%s '%s': expected a number in [%g, %g]", opt, v, lo, hi);
    *out = d;
    return 0;
}

static int take(void *arg, const char *o, const char *v)
{
    struct sim_opts *s = arg;
    if (!strcmp(o, "--model"))
        s->model = v;
    else if (!strcmp(o, "--trainer"))
        return parse_par(o, v, &s->t_tp, &s->t_ep, &s->t_pp);
    else if (!strcmp(o, "--engine"))
        return parse_par(o, v, &s->e_tp, &s->e_ep, NULL);
    else if (!strcmp(o, "--trainer-gpus"))
        return cli_int(o, v, 1, 65536, &s->t_gpus);
    else if (!strcmp(o, "--engines"))
        return cli_int(o, v, 1, 4096, &s->engines);
    else if (!strcmp(o, "--gpus-per-node"))
        return cli_int(o, v, 1, 32, &s->gpus_per_node);
    else if (!strcmp(o, "--nics-per-node"))
        return cli_int(o, v, 1, 32, &s->nics_per_node);
    else if (!strcmp(o, "--nic-gbps"))
        return parse_num(o, v, 1e-3, 1e5, &s->nic_gbps);
    else if (!strcmp(o, "--efficiency"))
        return parse_num(o, v, 0.01, 1, &s->efficiency);
    else if (!strcmp(o, "--latency-us"))
        return parse_num(o, v, 0, 1e6, &s->latency_us);
    else if (!strcmp(o, "--poll-ms"))
        return parse_num(o, v, 0, 1e5, &s->poll_ms);
    else if (!strcmp(o, "--hop-ms"))
        return parse_num(o, v, 0, 1e5, &s->hop_ms);
    else if (!strcmp(o, "--flush-every"))
        return cli_int(o, v, 1, 1000000, &s->flush_every);
    else if (!strcmp(o, "--fanout"))
        return cli_int(o, v, 0, 4096, &s->fanout);
    else if (!strcmp(o, "--push-streams"))
        return cli_int(o, v, 1, 4096, &s->push_streams);
    else if (!strcmp(o, "--jobs"))
        return cli_int(o, v, 1, 64, &s->jobs);
    else if (!strcmp(o, "--mode")) {
        if (strcmp(v, "pull") && strcmp(v, "push"))
            return refit_error_set(REFIT_EINVAL, "--mode '%s': pull or push", v);
        s->push = !strcmp(v, "push");
    } else if (!strcmp(o, "--fp8")) {
        if (strcmp(v, "trainer") && strcmp(v, "off"))
            return refit_error_set(REFIT_EINVAL, "--fp8 '%s': trainer or off", v);
        s->fp8 = !strcmp(v, "trainer");
    } else if (!strcmp(o, "--schedule")) {
        if (strcmp(v, "naive") && strcmp(v, "spread") && strcmp(v, "compare"))
            return refit_error_set(REFIT_EINVAL, "--schedule '%s': naive, spread or compare", v);
        s->sched = !strcmp(v, "spread") ? RF_SCHED_SPREAD : RF_SCHED_NAIVE;
        s->compare = !strcmp(v, "compare");
    } else
        return CLI_NOT_MINE;
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

void sim_opts_default(struct sim_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->t_tp = o->t_ep = o->t_pp = o->e_tp = o->e_ep = o->engines = 1;
    o->nic_gbps = 400;
    o->efficiency = 0.9;
    o->gpus_per_node = 8;
    o->flush_every = 100;
    o->latency_us = 5;
    o->poll_ms = 25;
    o->hop_ms = 0;
    o->jobs = 1;
    o->push_streams = 1;
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
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout);
    struct sim_opts o;
    sim_opts_default(&o);
    int rc = cli_parse_pairs(argc, argv, take, &o);
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
