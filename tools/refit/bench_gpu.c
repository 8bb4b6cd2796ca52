/* bench_gpu.c — `refit bench gpu`: a GPU-resident refit between processes
 * on two GPUs of one host, beside an NCCL broadcast of the same bytes; or,
 * with --colocated, trainer ranks and engine ranks on one GPU (the common RL
 * setup), beside a device-to-device copy of the same bytes in the same run.
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
#include <time.h>

#include "cli.h"
#include "demo.h"
#include "refit/fp8_cuda.h"
#include "refit/status.h"

#ifdef REFIT_CLI_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

struct gpu_opts {
    struct demo d;
    const char *src, *script, *py;
    int coloc, check;
};

#define AT(f) CLI_AT(struct gpu_opts, f)
static const struct cli_opt gpu_table[] = {
    {"--colocated", NULL, CLI_FLAG, NULL, 0, 0, NULL, NULL, AT(coloc), "trainers and engines all on GPU 0"},
    {"--check", NULL, CLI_FLAG, NULL, 0, 0, NULL, NULL, AT(check),
     "with --colocated: every engine's result compared with `refit convert`"},
    {"--src", NULL, CLI_STR, "tp=N", 0, 0, NULL, NULL, AT(src), "the trainer's parallelism"},
    {"--nccl", NULL, CLI_STR, "SCRIPT", 0, 0, NULL, "tools/dev/gpu/nccl_bcast.py", AT(script),
     "the NCCL broadcast baseline"},
    {"--python", NULL, CLI_STR, "PY", 0, 0, NULL, "python3", AT(py), "the Python that runs SCRIPT (needs PyTorch)"},
    DEMO_OPTS(struct gpu_opts, d),
};
#undef AT

static const struct cli_spec gpu_spec = {
    .cmd = "bench gpu",
    .about = "Trainer ranks on GPU 0 (default tp 2) and one engine (vLLM tp 1) on GPU 1, refitting a\n"
             "Qwen3-4B-shaped model (configs/models/qwen3-4b.yaml: 8.04 GB bf16) over cuda_ipc,\n"
             "in place and unverified, 5 cycles; beside it an NCCL broadcast of the same bytes\n"
             "(SCRIPT run with PY).  Prints the per-cycle table and warm cycles / NCCL (target\n"
             "<= 1.0x).  Needs two GPUs and a refit built with CUDA.\n"
             "\n"
             "--colocated: trainer ranks (default tp 1) and engine ranks (vLLM, default tp 1) all on\n"
             "GPU 0, Qwen3-0.6B-shaped by default, in place over cuda_ipc (refit.device_program on:\n"
             "one kernel per pull reads the trainers' memory); then, in the same process, a\n"
             "device-to-device copy of the bytes the trainers hold (median of 20, CUDA events)\n"
             "and, with FP8, the FP8 kernel alone on those bytes.  Prints warm total / copy\n"
             "(targets: <= 1.25x with FP8 off, <= 1.0x with FP8).  --check: every engine's\n"
             "result compared with `refit convert` (writes each version to disk).\n",
    .opts = gpu_table,
    .n_opts = CLI_N(gpu_table),
};

/* The demo's file store is scratch (a temporary directory, removed at the
 * end): no fsync of its files, unless REFIT_STORE_FILE_FSYNC says
 * otherwise.  With fsync the acknowledgement alone costs 1-5 ms per cycle
 * on the H100 machine's disk (REFIT_PULL_TRACE=1), which is the disk's
 * figure, not the GPU data path's. */
static void scratch_store(void)
{
    setenv("REFIT_STORE_FILE_FSYNC", "false", 0);
}

/* --colocated: the engines' acks written off the pull's critical path
 * (refit.ack_async, core/src/engine/ackpost.h: a worker writes each ack
 * after the pull's reads ended, while the pull returns), unless
 * REFIT_REFIT_ACK_ASYNC says otherwise. */
static void async_acks(void)
{
    setenv("REFIT_REFIT_ACK_ASYNC", "true", 0);
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

#ifdef REFIT_CLI_HAVE_CUDA
static int cu(cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return 0;
    (void)cudaGetLastError();
    return refit_error_set(REFIT_EIO, "cuda: %s: %s", what, cudaGetErrorString(e));
}

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* How long until the host sees an event recorded now on stream 0 (polled). */
static int event_seen_ms(cudaEvent_t ev, double *ms)
{
    double t0 = now_ms();
    cudaError_t e = cudaEventRecord(ev, 0);
    if (e == cudaSuccess)
        do
            e = cudaEventQuery(ev);
        while (e == cudaErrorNotReady);
    *ms = now_ms() - t0;
    return cu(e, "an event after an idle gap");
}

static double median3(double *v)
{
    double a = v[0] < v[1] ? v[0] : v[1], b = v[0] < v[1] ? v[1] : v[0];
    return v[2] < a ? a : v[2] > b ? b : v[2];
}

/* One device-to-device copy of len bytes from a to b on the default
 * stream, between events e0 and e1, waited for; *ms: its device time. */
static int timed_copy(char *a, char *b, size_t len, cudaEvent_t e0, cudaEvent_t e1, float *ms)
{
    int rc = cu(cudaEventRecord(e0, 0), "cudaEventRecord");
    if (!rc)
        rc = cu(cudaMemcpyAsync(b, a, len, cudaMemcpyDeviceToDevice, 0), "cudaMemcpyAsync");
    if (!rc)
        rc = cu(cudaEventRecord(e1, 0), "cudaEventRecord");
    if (!rc)
        rc = cu(cudaEventSynchronize(e1), "cudaEventSynchronize");
    if (!rc)
        rc = cu(cudaEventElapsedTime(ms, e0, e1), "cudaEventElapsedTime");
    return rc;
}

/* The conditions of a refit cycle's start, in this process alone on the GPU
 * (REFIT_BENCH_GAP_MS, default 450: the colocated cycle's idle time between
 * pulls; 0: skipped): the copy of n bytes after that idle gap (median of 3,
 * events), and the host's latency from recording an event to seeing it
 * complete after the gap and back to back.  Printed beside the baseline,
 * never instead of it. */
static int gap_copy(char *a, char *b, size_t len, cudaEvent_t e0, cudaEvent_t e1, double gap_ms, double out[3])
{
    double cp[3], seen[3], b2b[3];
    struct timespec gap = {(time_t)(gap_ms / 1e3), (long)(1e6 * (gap_ms - 1e3 * (double)(time_t)(gap_ms / 1e3)))};
    int rc = 0;
    for (int i = 0; !rc && i < 3; i++) {
        float ms = 0;
        nanosleep(&gap, NULL);
        rc = timed_copy(a, b, len, e0, e1, &ms);
        cp[i] = ms;
        nanosleep(&gap, NULL);
        if (!rc)
            rc = event_seen_ms(e0, &seen[i]);
        if (!rc)
            rc = event_seen_ms(e0, &b2b[i]);
    }
    if (!rc) {
        out[0] = median3(cp);
        out[1] = median3(seen);
        out[2] = median3(b2b);
    }
    return rc;
}

/* Median milliseconds of a device-to-device copy of n bytes (CUDA events,
 * 3 warm-ups, 20 timed) and, when fp8, of the FP8 kernel over n bytes of
 * bf16 as a [n / 8192, 4096] matrix; gap[]: gap_copy's figures (gap[0] 0:
 * not measured). */
static int copy_baseline(double n, int fp8, const char *rule, double *copy_ms, double *fp8_ms, double gap[3])
{
    size_t len = (size_t)n;
    char *a = NULL, *b = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    float ms[20];
    int rc = cu(cudaSetDevice(0), "cudaSetDevice(0)");
    if (!rc)
        rc = cu(cudaMalloc((void **)&a, len), "cudaMalloc (source)");
    if (!rc)
        rc = cu(cudaMalloc((void **)&b, len), "cudaMalloc (destination)");
    if (!rc)
        rc = cu(cudaMemset(a, 0x3c, len), "cudaMemset"); /* bf16 1.17: finite, not zero */
    if (!rc)
        rc = cu(cudaEventCreate(&e0), "cudaEventCreate");
    if (!rc)
        rc = cu(cudaEventCreate(&e1), "cudaEventCreate");
    for (int i = 0; !rc && i < 23; i++) { /* 3 warm-ups, then 20 timed */
        float t = 0;
        rc = timed_copy(a, b, len, e0, e1, &t);
        if (i >= 3)
            ms[i - 3] = t;
    }
    if (!rc) {
        qsort(ms, 20, sizeof(float), cmp_f);
        *copy_ms = (ms[9] + ms[10]) / 2;
    }
    const char *gs = getenv("REFIT_BENCH_GAP_MS");
    double gap_ms = gs ? strtod(gs, NULL) : 450;
    gap[0] = gap[1] = gap[2] = 0;
    if (!rc && gap_ms > 0 && gap_ms <= 10000)
        rc = gap_copy(a, b, len, e0, e1, gap_ms, gap);
    *fp8_ms = 0;
    struct refit_fp8_cuda *q = NULL;
    size_t rows = len / 8192;
    if (!rc && fp8 && rows && !(rc = refit_fp8_cuda_create(NULL, &q))) {
        struct refit_fp8_params p = {!strcmp(rule, "deepgemm") ? REFIT_FP8_DEEPGEMM : REFIT_FP8_TRAINER, 0,
                                     REFIT_FP8_IMPL_AUTO};
        float *scales = (float *)(b + rows * 4096);
        for (int i = 0; !rc && i < 23; i++) {
            rc = cu(cudaEventRecord(e0, 0), "cudaEventRecord");
            if (!rc)
                rc = refit_fp8_cuda_quantize_bf16(q, a, rows, 4096, 4096, b, scales, &p);
            if (!rc)
                rc = cu(cudaEventRecord(e1, 0), "cudaEventRecord");
            if (!rc)
                rc = refit_fp8_cuda_sync(q);
            if (!rc && i >= 3)
                rc = cu(cudaEventElapsedTime(&ms[i - 3], e0, e1), "cudaEventElapsedTime");
        }
        refit_fp8_cuda_destroy(q);
        if (!rc) {
            qsort(ms, 20, sizeof(float), cmp_f);
            *fp8_ms = (ms[9] + ms[10]) / 2;
        }
    }
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return rc;
}
#else
static int copy_baseline(double n, int fp8, const char *rule, double *copy_ms, double *fp8_ms, double gap[3])
{
    (void)n;
    (void)fp8;
    (void)rule;
    *copy_ms = *fp8_ms = 0;
    gap[0] = gap[1] = gap[2] = 0;
    return refit_error_set(REFIT_ENOTSUP, "this refit was built without CUDA");
}
#endif

/* The warm cycles (v >= 2) of a run: their count, summed total, transfer
 * and setup (registration + connection + planning) seconds, the best
 * total, and the bytes of the last one. */
struct warm_cycles {
    int n;
    double sum, tr, setup, best, wire, out;
};

/* Run the demo (in place, no host checksums), print its table and read
 * its warm cycles; the demo is cleaned up.  0, or an error (none warm:
 * REFIT_EIO). */
static int run_warm(struct demo *d, struct warm_cycles *w)
{
    setenv("REFIT_REFIT_IN_PLACE", "true", 1);
    setenv("REFIT_REFIT_VERIFY", "off", 1);
    int rc = demo_run(d);
    if (rc) {
        demo_cleanup(d);
        return rc;
    }
    demo_print_table(d->stats);
    FILE *f = fopen(d->stats, "r");
    char line[2048];
    memset(w, 0, sizeof(*w));
    while (f && fgets(line, sizeof(line), f)) {
        if (cli_json_num(line, "version") < 2)
            continue;
        double t = cli_json_num(line, "total_s");
        w->sum += t;
        w->tr += cli_json_num(line, "transfer_s");
        w->setup += cli_json_num(line, "register_s") + cli_json_num(line, "connect_s") + cli_json_num(line, "plan_s");
        w->wire = cli_json_num(line, "bytes_wire");
        w->out = cli_json_num(line, "bytes_out");
        if (!w->best || t < w->best)
            w->best = t;
        w->n++;
    }
    if (f)
        fclose(f);
    demo_cleanup(d);
    return w->n ? 0 : refit_error_set(REFIT_EIO, "no warm cycle recorded (use --cycles >= 2)");
}

/* --colocated: everything on GPU 0, the copy baseline in this process. */
static int colocated(struct demo *d)
{
    scratch_store();
    async_acks();
    struct warm_cycles w;
    int rc = run_warm(d, &w);
    if (rc)
        return cli_fail("bench gpu", rc);
    int fp8 = strcmp(d->fp8, "off") != 0;
    /* Each engine rank's row: per rank, the trainers' bf16 bytes it reads. */
    double copy_ms = 0, fp8_ms = 0, gap[3];
    rc = copy_baseline(w.wire, fp8, d->fp8, &copy_ms, &fp8_ms, gap);
    if (rc)
        return cli_fail("bench gpu", rc);
    double mean = w.sum / w.n;
    const char *fs = getenv("REFIT_STORE_FILE_FSYNC");
    printf("\ncolocated on GPU 0: trainer tp %d -> engine tp %d, fp8 %s; per engine rank %.3f GB read, %.3f GB "
           "written; registration+connection+planning on warm cycles %.6f s; file store fsync %s; acks async %s\n",
           d->src_tp, d->dst_tp, d->fp8, w.wire / 1e9, w.out / 1e9, w.setup / w.n, fs ? fs : "?",
           getenv("REFIT_REFIT_ACK_ASYNC") ? getenv("REFIT_REFIT_ACK_ASYNC") : "?");
    printf("device copy of %.3f GB (cudaMemcpyAsync, median of 20): %.3f ms = %.0f GB/s (read+write %.0f GB/s)\n",
           w.wire / 1e9, copy_ms, w.wire / copy_ms / 1e6, 2 * w.wire / copy_ms / 1e6);
    if (gap[0] > 0) /* beside the baseline, not instead of it: the targets stay against the line above */
        printf("the same copy after a %s ms idle gap (this process alone on the GPU, median of 3): %.3f ms; "
               "an event recorded -> seen by the host: %.3f ms after the gap, %.3f ms back to back\n",
               getenv("REFIT_BENCH_GAP_MS") ? getenv("REFIT_BENCH_GAP_MS") : "450", gap[0], gap[1], gap[2]);
    if (fp8)
        printf("FP8 kernel alone on %.3f GB of bf16 (refit_fp8_cuda, %s rule): %.3f ms\n", w.wire / 1e9, d->fp8,
               fp8_ms);
    printf("warm cycles (v >= 2): total %.3f ms mean (%.3f ms best; transfer %.3f ms) = %.2fx the device copy "
           "(best %.2fx; target <= %s)\n", 1e3 * mean, 1e3 * w.best, 1e3 * w.tr / w.n, 1e3 * mean / copy_ms,
           1e3 * w.best / copy_ms, fp8 ? "1.0x" : "1.25x");
    return 0;
}

int bench_gpu(int argc, char **argv)
{
    struct gpu_opts o = {.d = {.model = "configs/models/qwen3-4b.yaml", .transport = "cuda_ipc", .store = "file",
                               .mode = "pull", .fp8 = "off", .device = "cuda", .src_tp = 2, .src_ep = 1,
                               .dst_tp = 1, .engines = 1, .cycles = 5, .quiet = 1, .src_gpu = 0, .dst_gpu = 1}};
    /* --colocated changes the defaults the other options then override. */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--colocated")) {
            o.d.model = "configs/models/qwen3-0.6b.yaml";
            o.d.src_tp = 1;
            o.d.dst_gpu = 0;
        }
    int rc = cli_opts_parse(&gpu_spec, argc, argv, &o, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    if (!rc && o.check && !o.coloc)
        rc = refit_error_set(REFIT_EINVAL, "--check goes with --colocated");
    if (!rc && o.src)
        rc = cli_layout("--src", o.src, &o.d.src_tp, &o.d.src_ep);
    if (!rc)
        rc = demo_check(&o.d);
    o.d.verify = o.d.verify || o.check;
    struct demo d = o.d;
    const char *script = o.script, *py = o.py;
    int coloc = o.coloc;
    if (rc)
        return cli_fail("bench gpu", rc);
    if (coloc)
        return colocated(&d);
    /* Resident pulls: in place, no host checksums. */
    scratch_store();
    struct warm_cycles w;
    rc = run_warm(&d, &w);
    if (rc)
        return cli_fail("bench gpu", rc);
    double nccl = 0;
    char nline[512];
    rc = nccl_baseline(py, script, w.out, &nccl, nline, sizeof(nline));
    if (rc)
        return cli_fail("bench gpu", rc);
    printf("\nbaseline, same machine: %s", nline);
    printf("warm cycles (v >= 2): total %.4f s mean (%.4f s best; transfer %.4f s), %.3f GB into the engine = "
           "%.2fx the NCCL broadcast of the same bytes (%.4f s; target <= 1.0x)\n",
           w.sum / w.n, w.best, w.tr / w.n, w.out / 1e9, nccl > 0 ? w.sum / w.n / nccl : 0, nccl);
    return 0;
}
