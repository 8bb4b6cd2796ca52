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
               "their own transfer time (target: total <= 1.05x transfer, register 0).\n");
    return f == stdout ? 0 : 2;
}

static double jget(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : 0;
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
    rc = demo_run(&d);
    if (rc) {
        demo_cleanup(&d);
        return cli_fail("bench cycle", rc);
    }
    demo_print_table(d.stats);
    FILE *f = fopen(d.stats, "r");
    char line[2048];
    double worst = 0, sum_ratio = 0, reg = 0;
    int warm = 0;
    while (f && fgets(line, sizeof(line), f)) {
        if (jget(line, "version") < 2)
            continue;
        double tr = jget(line, "transfer_s"), tot = jget(line, "total_s");
        double ratio = tr > 0 ? tot / tr : 0;
        sum_ratio += ratio;
        if (ratio > worst)
            worst = ratio;
        reg += jget(line, "register_s") + jget(line, "connect_s") + jget(line, "plan_s");
        warm++;
    }
    if (f)
        fclose(f);
    if (warm)
        printf("\nwarm cycles (v >= 2): total / transfer = %.2fx mean, %.2fx worst (target <= 1.05x); "
               "register + connect + plan = %.6f s (target 0)\n",
               sum_ratio / warm, worst, reg);
    demo_cleanup(&d);
    return 0;
}
