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

static int usage(FILE *f)
{
    fprintf(f, "usage: refit bench cycle [--config C] [--model qwen3|qwen3_moe|glm|MODEL.yaml]\n"
               "                         [--src tp=N[,ep=M]] [--dst tp=N[,ep=N]] [--cycles K] [--engines E]\n"
               "                         [--fp8 off|trainer|deepgemm] [--layers L] [--vocab V] [--hf DIR]\n"
               "                         [--transport T] [--store S]\n"
               "Trainer ranks and inference ranks as processes (default Qwen3-0.6B-shaped, tp 2 -> 1,\n"
               "5 cycles, FP8 off), a row per cycle and engine; warm cycles (>= 2) are compared with\n"
               "their own transfer time (target: total <= 1.05x transfer, register 0).\n"
               "--mode push runs the same job in pull mode first (the baseline) and compares wire bytes\n"
               "and cycle time (with --fp8 on, the trainer quantizes what it can: half the bytes).\n");
    return f == stdout ? 0 : 2;
}

static double jget(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : 0;
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
        if (jget(line, "version") < 2)
            continue;
        double tr = jget(line, "transfer_s"), tot = jget(line, "total_s");
        double ratio = tr > 0 ? tot / tr : 0;
        o->sum_ratio += ratio;
        if (ratio > o->worst)
            o->worst = ratio;
        o->reg += jget(line, "register_s") + jget(line, "connect_s") + jget(line, "plan_s");
        o->wire += jget(line, "bytes_wire");
        o->total += tot;
        o->warm++;
    }
    if (f)
        fclose(f);
}

int bench_cycle(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout);
    struct demo d = {.model = "qwen3", .transport = "tcp", .store = "file", .mode = "pull", .fp8 = "off",
                     .src_tp = 2, .src_ep = 1, .dst_tp = 1, .engines = 1, .cycles = 5, .quiet = 1};
    /* --src/--dst are this command's; the rest are the demo's options. */
    char *rest[64];
    int nr = 0, rc = 0;
    rest[nr++] = argv[0];
    for (int i = 1; i < argc && !rc; i++) {
        if ((!strcmp(argv[i], "--src") || !strcmp(argv[i], "--dst")) && i + 1 < argc) {
            rc = !strcmp(argv[i], "--src") ? cli_layout("--src", argv[i + 1], &d.src_tp, &d.src_ep)
                                           : cli_layout("--dst", argv[i + 1], &d.dst_tp, &d.dst_ep);
            i++;
        } else if (nr < 62) {
            rest[nr++] = argv[i];
        }
    }
    rest[nr] = NULL;
    if (!rc)
        rc = demo_parse(&d, nr, rest);
    if (rc)
        return cli_fail("bench cycle", rc);
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
