/* bench_fp8_cuda.c — `refit bench fp8 --device cuda`: GB/s of bf16 input
 * through the CUDA FP8 block quantizer, both rules, beside (in the same
 * run) a device-to-device copy of the same bytes and a PyTorch eager
 * implementation of the same rule timed with CUDA events in a python3
 * child.  The outputs of one pass per rule are compared with the CPU path
 * byte for byte. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "refit/fp8.h"
#include "refit/fp8_cuda.h"
#include "refit/status.h"

#ifndef REFIT_CLI_HAVE_CUDA

int bench_fp8_cuda(size_t rows, size_t cols, size_t iters, int sized)
{
    (void)rows, (void)cols, (void)iters, (void)sized;
    fprintf(stderr, "refit bench fp8: --device cuda needs a CUDA device, and this refit was "
                    "built without CUDA (meson -Dcuda=enabled)\n");
    return 2;
}

#else
#include <cuda_runtime.h>

/* The same rules in PyTorch eager, as a user would write them: pad to
 * whole blocks, amax over each 128x128 block in fp32, scale, cast. */
static const char torch_script[] =
    "import sys\n"
    "try:\n"
    "    import torch\n"
    "    import torch.nn.functional as F\n"
    "except Exception as e:\n"
    "    print('SKIP torch is not importable: %s' % e); sys.exit(0)\n"
    "if not torch.cuda.is_available():\n"
    "    print('SKIP torch sees no CUDA device'); sys.exit(0)\n"
    "rows, cols, iters, nbuf = map(int, sys.argv[1:5])\n"
    "R, C = (rows + 127) // 128, (cols + 127) // 128\n"
    "g = torch.Generator(device='cuda'); g.manual_seed(0)\n"
    "xs = [(torch.randn(rows, cols, device='cuda', generator=g) * 0.02).to(torch.bfloat16)\n"
    "      for _ in range(nbuf)]\n"
    "def blocks(x):\n"
    "    x = F.pad(x, (0, C * 128 - cols, 0, R * 128 - rows))\n"
    "    return x.float().view(R, 128, C, 128)\n"
    "def trainer(x):\n"
    "    xb = blocks(x)\n"
    "    amax = xb.abs().amax(dim=(1, 3), keepdim=True)\n"
    "    s = torch.clamp(amax / 448.0, min=1e-12)\n"
    "    q = (xb / s).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)\n"
    "    return q.view(R * 128, C * 128)[:rows, :cols], s.view(R, C)\n"
    "def deepgemm(x):\n"
    "    xb = blocks(x)\n"
    "    amax = xb.abs().amax(dim=(1, 3), keepdim=True)\n"
    "    s = torch.clamp(amax, min=1e-4) / 448.0\n"
    "    q = (xb * torch.reciprocal(s)).to(torch.float8_e4m3fn)\n"
    "    return q.view(R * 128, C * 128)[:rows, :cols], s.view(R, C)\n"
    "for name, fn in (('trainer', trainer), ('deepgemm', deepgemm)):\n"
    "    for i in range(3):\n"
    "        fn(xs[i % nbuf])\n"
    "    torch.cuda.synchronize()\n"
    "    ts = []\n"
    "    for i in range(iters):\n"
    "        a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)\n"
    "        a.record(); fn(xs[i % nbuf]); b.record(); b.synchronize()\n"
    "        ts.append(a.elapsed_time(b) / 1e3)\n"
    "    ts.sort()\n"
    "    print('%s %.9f' % (name, ts[len(ts) // 2]))\n";

/* Median seconds of the PyTorch eager rule, or < 0 when skipped (the
 * reason printed). */
static void torch_times(size_t rows, size_t cols, size_t iters, size_t nbuf, double t[2])
{
    t[0] = t[1] = -1;
    char path[] = "/tmp/refit-bench-fp8-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        printf("  (torch baseline skipped: no temporary file)\n");
        return;
    }
    FILE *f = fdopen(fd, "w");
    if (!f || fputs(torch_script, f) < 0 || fclose(f)) {
        printf("  (torch baseline skipped: could not write the script)\n");
        unlink(path);
        return;
    }
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "python3 %s %zu %zu %zu %zu 2>&1", path, rows, cols, iters, nbuf);
    fflush(stdout);
    FILE *p = popen(cmd, "r");
    char line[512];
    int any = 0;
    while (p && fgets(line, sizeof(line), p)) {
        double v;
        if (sscanf(line, "trainer %lf", &v) == 1)
            t[0] = v, any = 1;
        else if (sscanf(line, "deepgemm %lf", &v) == 1)
            t[1] = v, any = 1;
        else
            printf("  torch: %s", line);
    }
    int rc = p ? pclose(p) : -1;
    if (!any)
        printf("  (torch baseline skipped: python3 %s)\n",
               rc ? "failed or is absent" : "printed no timing");
    unlink(path);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The CPU benchmark's weight-like fill (bench_fp8.c). */
static void fill(uint16_t *x, size_t n, uint64_t s)
{
    for (size_t i = 0; i < n; i++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        uint64_t r = s * 0x2545f4914f6cdd1dull;
        unsigned e = 118 + (unsigned)(r % 8) + ((r >> 8) % 1024 == 0 ? 6 : 0);
        x[i] = (uint16_t)(((r >> 20) & 1) << 15 | e << 7 | ((r >> 24) & 0x7f));
    }
}

#define CU(call)                                                                             \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "refit bench fp8: %s: %s\n", #call, cudaGetErrorString(e_));     \
            rc = 1;                                                                          \
            goto out;                                                                        \
        }                                                                                    \
    } while (0)

#define MAXBUF 16

int bench_fp8_cuda(size_t rows, size_t cols, size_t iters, int sized)
{
    if (refit_cuda_device_count() <= 0) {
        fprintf(stderr, "refit bench fp8: --device cuda: no CUDA device is present\n");
        return 2;
    }
    if (!sized)
        rows = cols = 8192; /* 134 MB of bf16: well past the L2 cache */
    const size_t n = rows * cols, ns = ((rows + 127) / 128) * ((cols + 127) / 128);
    int rc = 0, l2 = 0;
    struct cudaDeviceProp prop;
    void *src[MAXBUF] = {0}, *dst[MAXBUF] = {0}, *cpy = NULL;
    float *sc[MAXBUF] = {0};
    uint16_t *h = NULL;
    uint8_t *want = NULL, *got = NULL;
    float *ws = NULL, *gs = NULL;
    double *t = NULL;
    cudaStream_t st = NULL;
    cudaEvent_t ev[2] = {NULL, NULL};
    struct refit_fp8_cuda *q = NULL;
    CU(cudaGetDeviceProperties(&prop, 0));
    CU(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
    /* Rotate among enough inputs that each pass reads from HBM, not L2. */
    size_t nbuf = (4 * (size_t)l2) / (n * 2) + 1;
    nbuf = nbuf > MAXBUF ? MAXBUF : nbuf;
    h = malloc(n * 2);
    want = malloc(n);
    got = malloc(n);
    ws = malloc(ns * 4);
    gs = malloc(ns * 4);
    t = calloc(iters, sizeof(double));
    if (!h || !want || !got || !ws || !gs || !t) {
        fprintf(stderr, "refit bench fp8: out of memory for %zu x %zu\n", rows, cols);
        rc = 1;
        goto out;
    }
    CU(cudaStreamCreate(&st));
    CU(cudaEventCreate(&ev[0]));
    CU(cudaEventCreate(&ev[1]));
    for (size_t b = 0; b < nbuf; b++) {
        fill(h, n, 0x9e3779b97f4a7c15ull + b);
        CU(cudaMalloc(&src[b], n * 2));
        CU(cudaMalloc(&dst[b], n));
        CU(cudaMalloc((void **)&sc[b], ns * 4));
        CU(cudaMemcpy(src[b], h, n * 2, cudaMemcpyHostToDevice));
    }
    CU(cudaMalloc(&cpy, n * 2));
    if ((rc = refit_fp8_cuda_create(st, &q))) {
        rc = cli_fail("bench fp8", rc);
        goto out;
    }
    printf("refit bench fp8 --device cuda: %zu x %zu bf16 (%.1f MB), %s, %zu input buffers "
           "rotated, median of %zu, GB/s of bf16 input\n", rows, cols, n * 2 / 1e6, prop.name,
           nbuf, iters);
    /* variant 0: device copy of the same bytes; 1, 2: the two rules */
    double med[3];
    for (int v = 0; v < 3; v++) {
        struct refit_fp8_params p = {v == 2 ? REFIT_FP8_DEEPGEMM : REFIT_FP8_TRAINER, 0, 0};
        /* Each sample: one pass over every buffer, back to back, so that
         * the host's enqueue overlaps the device's work; 3 warm-up samples. */
        for (size_t it = 0; it < iters + 3; it++) {
            CU(cudaEventRecord(ev[0], st));
            for (size_t b = 0; b < nbuf; b++) {
                if (v == 0)
                    CU(cudaMemcpyAsync(cpy, src[b], n * 2, cudaMemcpyDeviceToDevice, st));
                else if ((rc = refit_fp8_cuda_quantize_bf16(q, src[b], rows, cols, cols, dst[b],
                                                             sc[b], &p))) {
                    rc = cli_fail("bench fp8", rc);
                    goto out;
                }
            }
            CU(cudaEventRecord(ev[1], st));
            CU(cudaEventSynchronize(ev[1]));
            float ms;
            CU(cudaEventElapsedTime(&ms, ev[0], ev[1]));
            if (it >= 3)
                t[it - 3] = ms / 1e3 / (double)nbuf;
        }
        if (v && (rc = refit_fp8_cuda_sync(q))) {
            rc = cli_fail("bench fp8", rc);
            goto out;
        }
        qsort(t, iters, sizeof(double), cmp_double);
        med[v] = t[iters / 2];
        if (v) {
            /* the bytes of one buffer against the CPU path */
            size_t b = nbuf - 1;
            fill(h, n, 0x9e3779b97f4a7c15ull + b);
            if ((rc = refit_fp8_quantize_bf16(h, rows, cols, cols, want, ws, &p))) {
                rc = cli_fail("bench fp8", rc);
                goto out;
            }
            CU(cudaMemcpy(got, dst[b], n, cudaMemcpyDeviceToHost));
            CU(cudaMemcpy(gs, sc[b], ns * 4, cudaMemcpyDeviceToHost));
            if (memcmp(got, want, n) || memcmp(gs, ws, ns * 4)) {
                fprintf(stderr, "refit bench fp8: the %s rule's GPU output differs from the CPU "
                                "path\n", v == 1 ? "trainer" : "deepgemm");
                rc = 1;
                goto out;
            }
        }
    }
    double tt[2];
    torch_times(rows, cols, iters, nbuf, tt);
    const double gb = n * 2 / 1e9;
    /* The quantizer moves 1.5 bytes per input byte (read bf16, write e4m3);
     * the copy 2: the copy's traffic rate bounds the quantizer at 2/1.5
     * times the copy's input rate. */
    const double bound = gb / med[0] * 2 / 1.5;
    printf("  %-9s %-10s %9s %9s %9s\n", "rule", "path", "GB/s", "x torch", "of bound");
    printf("  %-9s %-10s %9.1f %9s %8.0f%%   (%.0f GB/s read+write; bound %.0f GB/s of input)\n",
           "-", "d2d copy", gb / med[0], "-", 100 * gb / med[0] / bound, 2 * gb / med[0], bound);
    for (int r = 0; r < 2; r++) {
        const char *name = r ? "deepgemm" : "trainer";
        double g = gb / med[1 + r];
        if (tt[r] > 0) {
            printf("  %-9s %-10s %9.1f %9.2f %8.0f%%\n", name, "refit", g, tt[r] / med[1 + r],
                   100 * g / bound);
            printf("  %-9s %-10s %9.1f %9.2f %8.0f%%\n", name, "torch", gb / tt[r], 1.0,
                   100 * gb / tt[r] / bound);
        } else {
            printf("  %-9s %-10s %9.1f %9s %8.0f%%\n", name, "refit", g, "-", 100 * g / bound);
        }
    }
    printf("  (refit's bytes and scales equal the CPU path's for both rules)\n");
out:
    refit_fp8_cuda_destroy(q);
    for (size_t b = 0; b < MAXBUF; b++) {
        cudaFree(src[b]);
        cudaFree(dst[b]);
        cudaFree(sc[b]);
    }
    cudaFree(cpy);
    if (ev[0])
        cudaEventDestroy(ev[0]);
    if (ev[1])
        cudaEventDestroy(ev[1]);
    if (st)
        cudaStreamDestroy(st);
    free(h);
    free(want);
    free(got);
    free(ws);
    free(gs);
    free(t);
    return rc;
}
#endif
