/* bench_staged.c — `refit bench staged`: refit cycles with the trainer's
 * tensors and the engine's destinations in GPU memory over a transport that
 * reaches host memory only (tcp on loopback): GPU -> pinned host arena
 * (D2H, hashed as it lands) -> tcp -> pinned staging (convert, verify) ->
 * GPU (H2D at commit).  One trainer process and one engine process on this
 * machine's GPU; a row per cycle.  Beside it, in the same run, the bare
 * pinned-host copy bandwidth of the same machine for the same byte count
 * (cudaMemcpy D2H and H2D), and the ratio of a cycle to the bare D2H + H2D
 * time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "demo.h"
#include "refit/fp8_cuda.h"
#include "refit/status.h"

struct staged_opts {
    struct demo d;
};

static const struct cli_opt staged_table[] = {DEMO_OPTS(struct staged_opts, d)};

static const struct cli_spec staged_spec = {
    .cmd = "bench staged",
    .about = "A trainer (tp 1) with a Qwen3-0.6B-shaped model in GPU memory and an engine (vLLM tp 1)\n"
             "with GPU destinations, over tcp on loopback: per cycle the trainer's device-to-host\n"
             "staging, the transfer, conversion, the host-to-device commit and the total, beside the\n"
             "pinned cudaMemcpy bandwidth (D2H, H2D) of the same bytes.  Size: --layers (default 28:\n"
             "1.19 GB bf16; 56: 2.0 GB); default 5 cycles, FP8 off.  Needs a CUDA device; of the\n"
             "demo's options it takes the size, --cycles, --fp8, --config and --keep.\n",
    .opts = staged_table,
    .n_opts = CLI_N(staged_table),
};

#ifdef REFIT_CLI_HAVE_CUDA
#include <cuda_runtime_api.h>

#define CK(call, what)                                                                                 \
    do {                                                                                               \
        cudaError_t e_ = (call);                                                                       \
        if (e_ != cudaSuccess) {                                                                       \
            fprintf(stderr, "refit bench staged: %s: %s (%s)\n", what, cudaGetErrorString(e_),          \
                    cudaGetErrorName(e_));                                                             \
            ok = 0;                                                                                    \
            goto out;                                                                                  \
        }                                                                                              \
    } while (0)

/* Median seconds of 5 pinned copies of n bytes each way. */
static int bare_copies(size_t n, double *d2h_s, double *h2d_s)
{
    void *dev = NULL, *host = NULL;
    cudaEvent_t a = NULL, b = NULL;
    int ok = 1;
    double t[2][5];
    CK(cudaMalloc(&dev, n), "cudaMalloc for the baseline");
    CK(cudaMallocHost(&host, n), "cudaMallocHost for the baseline");
    memset(host, 1, n);
    CK(cudaEventCreate(&a), "cudaEventCreate");
    CK(cudaEventCreate(&b), "cudaEventCreate");
    CK(cudaMemcpy(dev, host, n, cudaMemcpyHostToDevice), "warm-up copy to the device");
    CK(cudaMemcpy(host, dev, n, cudaMemcpyDeviceToHost), "warm-up copy to the host");
    for (int dir = 0; dir < 2; dir++)
        for (int i = 0; i < 5; i++) {
            float ms = 0;
            CK(cudaEventRecord(a, NULL), "cudaEventRecord");
            if (dir == 0)
                CK(cudaMemcpyAsync(host, dev, n, cudaMemcpyDeviceToHost, NULL), "device-to-host copy");
            else
                CK(cudaMemcpyAsync(dev, host, n, cudaMemcpyHostToDevice, NULL), "host-to-device copy");
            CK(cudaEventRecord(b, NULL), "cudaEventRecord");
            CK(cudaEventSynchronize(b), "waiting for the copy");
            CK(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
            t[dir][i] = ms / 1e3;
        }
    for (int dir = 0; dir < 2; dir++)
        for (int i = 1; i < 5; i++)
            for (int j = i; j > 0 && t[dir][j - 1] > t[dir][j]; j--) {
                double x = t[dir][j];
                t[dir][j] = t[dir][j - 1];
                t[dir][j - 1] = x;
            }
    *d2h_s = t[0][2];
    *h2d_s = t[1][2];
out:
    if (a)
        cudaEventDestroy(a);
    if (b)
        cudaEventDestroy(b);
    cudaFreeHost(host);
    cudaFree(dev);
    return ok ? 0 : -1;
}
#else
static int bare_copies(size_t n, double *d2h_s, double *h2d_s)
{
    (void)n, (void)d2h_s, (void)h2d_s;
    return -1;
}
#endif

/* The trainer's line for version v in the publisher stats file. */
static int pub_line(const char *path, double v, double *stage_s, double *publish_s)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int found = 0;
    while (f && fgets(line, sizeof(line), f))
        if (cli_json_num(line, "version") == v) {
            *stage_s = cli_json_num(line, "stage_s");
            *publish_s = cli_json_num(line, "publish_s");
            found = 1;
        }
    if (f)
        fclose(f);
    return found;
}

int bench_staged(int argc, char **argv)
{
    struct staged_opts o = {.d = {.model = "qwen3", .transport = "tcp", .store = "file", .mode = "pull",
                                  .fp8 = "off", .src_tp = 1, .src_ep = 1, .dst_tp = 1, .engines = 1, .cycles = 5,
                                  .quiet = 1, .device = "cuda", .pub_stats = 1}};
    int rc = cli_opts_parse(&staged_spec, argc, argv, &o, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    if (rc)
        return cli_fail("bench staged", rc);
    if (!refit_cuda_built()) {
        fprintf(stderr, "refit bench staged: needs a CUDA device, and this librefit was built without CUDA "
                        "(meson -Dcuda=enabled)\n");
        return 2;
    }
#ifndef REFIT_CLI_HAVE_CUDA
    fprintf(stderr, "refit bench staged: this refit command was built without CUDA (meson -Dcuda=enabled)\n");
    return 2;
#endif
    if (refit_cuda_device_count() <= 0) {
        fprintf(stderr, "refit bench staged: no CUDA device found (cudaGetDeviceCount); this benchmark moves "
                        "weights GPU -> host -> GPU and needs one\n");
        return 2;
    }
    struct demo d = o.d;
    rc = demo_check(&d);
    if (!rc && strcmp(d.device, "cuda"))
        rc = refit_error_set(REFIT_EINVAL, "--device: this benchmark is GPU to GPU");
    if (!rc && (d.src_tp != 1 || d.dst_tp != 1 || d.engines != 1 || strcmp(d.transport, "tcp")))
        rc = refit_error_set(REFIT_EINVAL, "this benchmark is one trainer (tp 1) to one engine (tp 1) over tcp");
    if (rc)
        return cli_fail("bench staged", rc);
    rc = demo_run(&d);
    if (rc) {
        demo_cleanup(&d);
        return cli_fail("bench staged", rc);
    }
    printf("\n%3s %9s %9s %9s %9s %9s %9s %9s %9s %8s %7s\n", "v", "D2H+hash", "publish", "transfer", "convert",
           "verify", "H2D", "pull", "total", "GB", "GB/s");
    FILE *f = fopen(d.stats, "r");
    char line[2048];
    double sum_total = 0, bytes = 0;
    int warm = 0;
    while (f && fgets(line, sizeof(line), f)) {
        double v = cli_json_num(line, "version"), stage = 0, publish = 0;
        pub_line(d.pstats, v, &stage, &publish);
        double pull = cli_json_num(line, "total_s"), total = publish + pull;
        bytes = cli_json_num(line, "bytes_wire");
        printf("%3.0f %9.4f %9.4f %9.4f %9.4f %9.4f %9.4f %9.4f %9.4f %8.3f %7.2f\n", v, stage, publish,
               cli_json_num(line, "transfer_s"), cli_json_num(line, "convert_s"), cli_json_num(line, "verify_s"), cli_json_num(line, "commit_s"),
               pull, total, bytes / 1e9, total > 0 ? bytes / total / 1e9 : 0);
        if (v >= 2) {
            sum_total += total;
            warm++;
        }
    }
    if (f)
        fclose(f);
    printf("(seconds; D2H+hash: the trainer's copies to its pinned arena with checksums, inside publish;\n"
           " H2D: the engine's commit from pinned staging to the GPU; total = publish + pull)\n");
    demo_cleanup(&d);
    double d2h = 0, h2d = 0;
    if (bytes <= 0 || bare_copies((size_t)bytes, &d2h, &h2d)) {
        fprintf(stderr, "refit bench staged: no baseline (see above)\n");
        return 1;
    }
    printf("\nbaseline, same machine, %.3f GB pinned cudaMemcpy (median of 5): D2H %.4f s (%.2f GB/s), "
           "H2D %.4f s (%.2f GB/s)\n", bytes / 1e9, d2h, bytes / d2h / 1e9, h2d, bytes / h2d / 1e9);
    if (warm)
        printf("warm cycles (v >= 2): total %.4f s mean = %.2fx the bare D2H + H2D (%.4f s); staged %.2f GB/s "
               "= %.2fx the H2D bandwidth\n", sum_total / warm, sum_total / warm / (d2h + h2d), d2h + h2d,
               bytes / (sum_total / warm) / 1e9, (bytes / (sum_total / warm)) / (bytes / h2d));
    return 0;
}
