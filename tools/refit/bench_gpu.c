/* bench_gpu.c — `refit bench gpu`: a GPU-resident refit between processes
 * on two GPUs of one host, beside an NCCL broadcast of the same bytes.
 *
 * Trainer ranks (`refit publish --device cuda`, TP2 by default) hold their
 * shards in GPU 0's memory; one engine (`refit pull --device cuda`, vLLM
 * TP1) holds its destinations in GPU 1's memory.  They refit over
 * `cuda_ipc` with refit.in_place on (READs land in the destinations,
 * resharding scatters run as device copies) and refit.verify off (the
 * checksums are host-side).  In the same run, tools/dev/gpu/nccl_bcast.py
 * times one flat NCCL broadcast (torch.distributed) of the engine's byte
 * count from GPU 0 to GPU 1, and the warm cycles are compared with it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "demo.h"
#include "refit/status.h"

static int usage(FILE *f)
{
    fprintf(f, "usage: refit bench gpu [--model YAML] [--hf DIR] [--src tp=N] [--cycles K] [--config C]\n"
               "                       [--nccl SCRIPT] [--python PY] [--keep DIR]\n"
               "Trainer ranks on GPU 0 (default tp 2) and one engine (vLLM tp 1) on GPU 1, refitting a\n"
               "Qwen3-4B-shaped model (configs/models/qwen3-4b.yaml: 8.04 GB bf16) over cuda_ipc,\n"
               "in place and unverified, 5 cycles; beside it an NCCL broadcast of the same bytes\n"
               "(SCRIPT, default tools/dev/gpu/nccl_bcast.py, run with PY, default python3; needs\n"
               "PyTorch).  Prints the per-cycle table and warm cycles / NCCL (target <= 1.0x).\n"
               "Needs two GPUs and a refit built with CUDA.\n");
    return f == stdout ? 0 : 2;
}

/* The baseline: median seconds of the NCCL broadcast of n bytes. */
static int nccl_baseline(const char *py, const char *script, double n, double *med_s, char *line, size_t cap)
{
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "'%s' '%s' --bytes %.0f", py, script, n);
    FILE *p = popen(cmd, "r");
    if (!p)
        return refit_error_set(REFIT_EIO, "running %s", cmd);
    line[0] = 0;
    char buf[512];
    while (fgets(buf, sizeof(buf), p))
        if (!strncmp(buf, "nccl_bcast ", 11))
            snprintf(line, cap, "%s", buf);
    int st = pclose(p);
    const char *m = strstr(line, "median_s=");
    if (st != 0 || !m)
        return refit_error_set(REFIT_EIO, "the NCCL baseline (%s) failed (status %d; its message is above)", cmd,
                               st);
    *med_s = strtod(m + 9, NULL);
    return 0;
}

int bench_gpu(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout);
    struct demo d = {.model = "configs/models/qwen3-4b.yaml", .transport = "cuda_ipc", .store = "file",
                     .mode = "pull", .fp8 = "off", .device = "cuda", .src_tp = 2, .src_ep = 1, .dst_tp = 1,
                     .engines = 1, .cycles = 5, .quiet = 1, .src_gpu = 0, .dst_gpu = 1};
    const char *script = "tools/dev/gpu/nccl_bcast.py", *py = "python3";
    char *rest[64];
    int nr = 0, rc = 0;
    rest[nr++] = argv[0];
    for (int i = 1; i < argc && !rc; i++) {
        if (!strcmp(argv[i], "--src") && i + 1 < argc) {
            rc = cli_layout("--src", argv[++i], &d.src_tp, &d.src_ep);
        } else if (!strcmp(argv[i], "--nccl") && i + 1 < argc) {
            script = argv[++i];
        } else if (!strcmp(argv[i], "--python") && i + 1 < argc) {
            py = argv[++i];
        } else if (nr < 62) {
            rest[nr++] = argv[i];
        }
    }
    rest[nr] = NULL;
    if (!rc)
        rc = demo_parse(&d, nr, rest);
    if (rc)
        return cli_fail("bench gpu", rc);
    /* Resident pulls: in place, no host checksums. */
    setenv("REFIT_REFIT_IN_PLACE", "true", 1);
    setenv("REFIT_REFIT_VERIFY", "off", 1);
    rc = demo_run(&d);
    if (rc) {
        demo_cleanup(&d);
        return cli_fail("bench gpu", rc);
    }
    demo_print_table(d.stats);
    FILE *f = fopen(d.stats, "r");
    char line[2048];
    double sum = 0, tr = 0, bytes = 0, best = 0;
    int warm = 0;
    while (f && fgets(line, sizeof(line), f)) {
        if (cli_json_num(line, "version") < 2)
            continue;
        double t = cli_json_num(line, "total_s");
        sum += t;
        tr += cli_json_num(line, "transfer_s");
        bytes = cli_json_num(line, "bytes_out");
        if (!best || t < best)
            best = t;
        warm++;
    }
    if (f)
        fclose(f);
    demo_cleanup(&d);
    if (!warm)
        return cli_fail("bench gpu", refit_error_set(REFIT_EIO, "no warm cycle recorded (use --cycles >= 2)"));
    double nccl = 0;
    char nline[512];
    rc = nccl_baseline(py, script, bytes, &nccl, nline, sizeof(nline));
    if (rc)
        return cli_fail("bench gpu", rc);
    printf("\nbaseline, same machine: %s", nline);
    printf("warm cycles (v >= 2): total %.4f s mean (%.4f s best; transfer %.4f s), %.3f GB into the engine = "
           "%.2fx the NCCL broadcast of the same bytes (%.4f s; target <= 1.0x)\n",
           sum / warm, best, tr / warm, bytes / 1e9, nccl > 0 ? sum / warm / nccl : 0, nccl);
    return 0;
}
