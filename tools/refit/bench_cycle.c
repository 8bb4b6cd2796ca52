/* bench_cycle.c — `refit bench cycle`: refit cycles between trainer and
 * inference processes on this machine, a table per cycle (the format of
 * the refit tables published for ModelExpress) and, for warm cycles, the
 * ratio of the whole pull to its own wire time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "demo.h"
#include "refit/status.h"

struct cycle_opts {
    struct demo d;
    const char *src, *dst;
    int fanout;
};

static const struct cli_opt cycle_table[] = {
    {"--src", NULL, CLI_STR, "tp=N[,ep=M]", 0, 0, NULL, NULL, CLI_AT(struct cycle_opts, src),
     "the trainer's parallelism (default tp=2)"},
    {"--dst", NULL, CLI_STR, "tp=N[,ep=N]", 0, 0, NULL, NULL, CLI_AT(struct cycle_opts, dst),
     "the engine's parallelism (default tp=1)"},
    {"--fanout", NULL, CLI_INT, "K", 1, 1000, NULL, NULL, CLI_AT(struct cycle_opts, fanout),
     "tree fan-out with max_pullers_per_source K, beside all engines from the trainer"},
    DEMO_OPTS(struct cycle_opts, d),
};

static const struct cli_spec cycle_spec = {
    .cmd = "bench cycle",
    .about = "Trainer ranks and inference ranks as processes (default Qwen3-0.6B-shaped, tp 2 -> 1,\n"
             "one engine, 5 cycles, FP8 off), a row per cycle and engine; warm cycles (>= 2) are\n"
             "compared with their own transfer time (target: total <= 1.05x transfer, register 0).\n"
             "--mode push runs the same job in pull mode first (the baseline) and compares wire bytes\n"
             "and cycle time (with --fp8 on, the trainer quantizes what it can: half the bytes).\n"
             "--fanout K: the same cycles twice, all engines from the trainer (baseline), then with\n"
             "refit.fanout.republish on and max_pullers_per_source K; a row per cycle and engine with\n"
             "its source, and per cycle the trainer's egress and the span of the transfers.\n",
    .opts = cycle_table,
    .n_opts = CLI_N(cycle_table),
};

/* ------------------------------------------------------------------ */
/* --fanout K: tree fan-out against pulling everything from the trainer. */

struct fo_cycle {
    double start, end, trainer_gb, total_gb;
    int replicas;
    double ts[64], te[64]; /* transfers from the trainer */
    int n_tr;
};

/* Most transfers from the trainer in flight at one instant. */
static int fo_peak(const struct fo_cycle *c)
{
    int peak = 0;
    for (int i = 0; i < c->n_tr; i++) {
        int at = 0;
        for (int j = 0; j < c->n_tr; j++)
            at += c->ts[j] <= c->ts[i] && c->ts[i] < c->te[j];
        if (at > peak)
            peak = at;
    }
    return peak;
}

/* Per version: the span from the first transfer's start to the last one's
 * end, and the bytes the trainer served.  Prints the rows when `rows`. */
static int fo_read(const char *path, int rows, struct fo_cycle *cy, int max_v)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[2048];
    int n = 0;
    if (rows)
        printf("\n%-12s %3s %-14s %9s %9s %9s %9s %4s\n", "engine", "v", "source", "start", "end", "transfer",
               "total", "fb");
    double t0 = 0;
    while (fgets(line, sizeof(line), f)) {
        char who[64] = "", src[64] = "";
        const char *w = strstr(line, "\"receiver\":\"");
        if (w)
            sscanf(w + 12, "%63[^\"]", who);
        w = strstr(line, "\"source\":\"");
        if (w)
            sscanf(w + 10, "%63[^\"]", src);
        int v = (int)cli_json_num(line, "version");
        double xs = cli_json_num(line, "xfer_start"), xe = cli_json_num(line, "xfer_end"), gb = cli_json_num(line, "bytes_wire") / 1e9;
        if (!t0 || xs < t0)
            t0 = xs;
        if (v >= 1 && v <= max_v) {
            struct fo_cycle *c = &cy[v - 1];
            if (!c->start || xs < c->start)
                c->start = xs;
            if (xe > c->end)
                c->end = xe;
            c->total_gb += gb;
            if (!strcmp(src, "trainer")) {
                c->trainer_gb += gb;
                if (c->n_tr < 64) {
                    c->ts[c->n_tr] = xs;
                    c->te[c->n_tr++] = xe;
                }
            } else
                c->replicas++;
        }
        if (rows)
            printf("%-12s %3d %-14s %9.4f %9.4f %9.4f %9.4f %4.0f\n", who, v, src, xs - t0, xe - t0,
                   cli_json_num(line, "transfer_s"), cli_json_num(line, "total_s"), cli_json_num(line, "fallbacks"));
        n++;
    }
    fclose(f);
    return n;
}

static int bench_fanout(struct demo *base, int k)
{
    struct demo d[2] = {*base, *base};
    struct fo_cycle cy[2][64];
    char kbuf[16];
    memset(cy, 0, sizeof(cy));
    snprintf(kbuf, sizeof(kbuf), "%d", k);
    int rc = 0;
    for (int run = 0; run < 2 && !rc; run++) {
        /* The children read the policy from the environment. */
        setenv("REFIT_REFIT_FANOUT_REPUBLISH", run ? "true" : "false", 1);
        setenv("REFIT_REFIT_FANOUT_MAX_PULLERS_PER_SOURCE", run ? kbuf : "0", 1);
        if (run)
            d[1].hf = d[0].ckpt; /* the same checkpoint */
        printf("\n== %s ==\n", run ? "fan-out" : "baseline: every engine from the trainer");
        fflush(stdout);
        rc = demo_run(&d[run]);
        if (!rc)
            fo_read(d[run].stats, 1, cy[run], d[run].cycles < 64 ? d[run].cycles : 64);
    }
    if (!rc) {
        printf("\n%3s %12s %12s %9s %12s %12s %9s %9s %9s %9s\n", "v", "trainer GB", "trainer GB", "ratio",
               "span s", "span s", "ratio", "replica", "peak", "peak");
        printf("%3s %12s %12s %9s %12s %12s %9s %9s %9s %9s\n", "", "baseline", "fan-out", "", "baseline", "fan-out",
               "", "pulls", "baseline", "fan-out");
        int nv = base->cycles < 64 ? base->cycles : 64;
        for (int v = 0; v < nv; v++) {
            const struct fo_cycle *a = &cy[0][v], *b = &cy[1][v];
            double sa = a->end - a->start, sb = b->end - b->start;
            printf("%3d %12.3f %12.3f %8.2fx %12.4f %12.4f %8.2fx %9d %9d %9d\n", v + 1, a->trainer_gb,
                   b->trainer_gb, a->trainer_gb > 0 ? b->trainer_gb / a->trainer_gb : 0, sa, sb, sa > 0 ? sb / sa : 0,
                   b->replicas, fo_peak(a), fo_peak(b));
        }
        printf("(trainer GB: bytes the trainer ranks served; span: first transfer start to last transfer end "
               "of the cycle, over all engines; peak: most engines transferring from the trainer at once)\n");
    }
    demo_cleanup(&d[1]);
    demo_cleanup(&d[0]);
    unsetenv("REFIT_REFIT_FANOUT_REPUBLISH");
    unsetenv("REFIT_REFIT_FANOUT_MAX_PULLERS_PER_SOURCE");
    return rc ? cli_fail("bench cycle", rc) : 0;
}

/* Warm-cycle figures (v >= 2) of a stats file. */
struct cycle_sum {
    double worst, sum_ratio, reg, wire, total;
    int warm;
};

static void summarize(const char *path, struct cycle_sum *o)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    while (f && fgets(line, sizeof(line), f)) {
        if (cli_json_num(line, "version") < 2)
            continue;
        double tr = cli_json_num(line, "transfer_s"), tot = cli_json_num(line, "total_s");
        double ratio = tr > 0 ? tot / tr : 0;
        o->sum_ratio += ratio;
        if (ratio > o->worst)
            o->worst = ratio;
        o->reg += cli_json_num(line, "register_s") + cli_json_num(line, "connect_s") + cli_json_num(line, "plan_s");
        o->wire += cli_json_num(line, "bytes_wire");
        o->total += tot;
        o->warm++;
    }
    if (f)
        fclose(f);
}

int bench_cycle(int argc, char **argv)
{
    struct cycle_opts o = {.d = {.model = "qwen3", .transport = "tcp", .store = "file", .mode = "pull",
                                 .fp8 = "off", .src_tp = 2, .src_ep = 1, .dst_tp = 1, .engines = 1, .cycles = 5,
                                 .quiet = 1},
                           .fanout = -1};
    int rc = cli_opts_parse(&cycle_spec, argc, argv, &o, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    if (!rc && o.src)
        rc = cli_layout("--src", o.src, &o.d.src_tp, &o.d.src_ep);
    if (!rc && o.dst)
        rc = cli_layout("--dst", o.dst, &o.d.dst_tp, &o.d.dst_ep);
    if (!rc)
        rc = demo_check(&o.d);
    struct demo d = o.d;
    int fanout = o.fanout;
    if (rc)
        return cli_fail("bench cycle", rc);
    if (fanout > 0)
        return bench_fanout(&d, fanout);
    struct cycle_sum push = {0}, pull = {0};
    int is_push = !strcmp(d.mode, "push");
    if (is_push) {
        /* The baseline in the same run: the same job in pull mode. */
        struct demo b = d;
        b.mode = "pull";
        printf("baseline: the same refit in pull mode\n");
        rc = demo_run(&b);
        if (!rc)
            summarize(b.stats, &pull);
        demo_cleanup(&b);
        if (rc)
            return cli_fail("bench cycle (pull baseline)", rc);
        printf("\npush mode:\n");
    }
    rc = demo_run(&d);
    if (rc) {
        demo_cleanup(&d);
        return cli_fail("bench cycle", rc);
    }
    demo_print_table(d.stats);
    struct cycle_sum *me = is_push ? &push : &pull;
    summarize(d.stats, me);
    if (me->warm)
        printf("\nwarm cycles (v >= 2): total / transfer = %.2fx mean, %.2fx worst (target <= 1.05x); "
               "register + connect + plan = %.6f s (target 0)\n",
               me->sum_ratio / me->warm, me->worst, me->reg);
    if (is_push && pull.warm && push.warm)
        printf("push vs pull (warm cycles, per engine and cycle): wire %.4f GB vs %.4f GB (%.2fx), "
               "total %.4f s vs %.4f s (%.2fx)\n",
               push.wire / push.warm / 1e9, pull.wire / pull.warm / 1e9, pull.wire > 0 ? push.wire / pull.wire : 0,
               push.total / push.warm, pull.total / pull.warm, pull.total > 0 ? push.total / pull.total : 0);
    demo_cleanup(&d);
    return 0;
}
