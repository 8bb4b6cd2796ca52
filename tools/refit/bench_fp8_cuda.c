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

#define MAXBUF 16

/* Everything one run holds; zeroed, then freed by gb_free() in any state. */
struct gpu_bench {
    size_t rows, cols, n, ns, nbuf, iters;
    void *src[MAXBUF], *dst[MAXBUF], *cpy;
    float *sc[MAXBUF];
    uint16_t *h;
    uint8_t *want, *got;
    float *ws, *gs;
    double *t;
    cudaStream_t st;
    cudaEvent_t ev[2];
    struct refit_fp8_cuda *q;
    char gpu[256];
};

static int cu_fail(cudaError_t e, const char *what)
{
    fprintf(stderr, "refit bench fp8: %s: %s\n", what, cudaGetErrorString(e));
    return 1;
}

#define CU(call)                                                                             \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess)                                                               \
            return cu_fail(e_, #call);                                                       \
    } while (0)

static void gb_free(struct gpu_bench *g)
{
    refit_fp8_cuda_destroy(g->q);
    for (size_t b = 0; b < MAXBUF; b++) {
        cudaFree(g->src[b]);
        cudaFree(g->dst[b]);
        cudaFree(g->sc[b]);
    }
    cudaFree(g->cpy);
    for (int i = 0; i < 2; i++)
        if (g->ev[i])
            cudaEventDestroy(g->ev[i]);
    if (g->st)
        cudaStreamDestroy(g->st);
    free(g->h);
    free(g->want);
    free(g->got);
    free(g->ws);
    free(g->gs);
    free(g->t);
}

/* Host and device buffers, stream, events, quantizer; inputs filled. */
static int gb_setup(struct gpu_bench *g)
{
    struct cudaDeviceProp prop;
    int l2 = 0;
    CU(cudaGetDeviceProperties(&prop, 0));
    CU(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
    snprintf(g->gpu, sizeof(g->gpu), "%s", prop.name);
    /* Rotate among enough inputs that each pass reads from HBM, not L2. */
    g->nbuf = (4 * (size_t)l2) / (g->n * 2) + 1;
    g->nbuf = g->nbuf > MAXBUF ? MAXBUF : g->nbuf;
    g->h = malloc(g->n * 2);
    g->want = malloc(g->n);
    g->got = malloc(g->n);
    g->ws = malloc(g->ns * 4);
    g->gs = malloc(g->ns * 4);
    g->t = calloc(g->iters, sizeof(double));
    if (!g->h || !g->want || !g->got || !g->ws || !g->gs || !g->t) {
        fprintf(stderr, "refit bench fp8: out of memory for %zu x %zu\n", g->rows, g->cols);
        return 1;
    }
    CU(cudaStreamCreate(&g->st));
    CU(cudaEventCreate(&g->ev[0]));
    CU(cudaEventCreate(&g->ev[1]));
    for (size_t b = 0; b < g->nbuf; b++) {
        bench_fp8_fill(g->h, g->n, 0x9e3779b97f4a7c15ull + b);
        CU(cudaMalloc(&g->src[b], g->n * 2));
        CU(cudaMalloc(&g->dst[b], g->n));
        CU(cudaMalloc((void **)&g->sc[b], g->ns * 4));
        CU(cudaMemcpy(g->src[b], g->h, g->n * 2, cudaMemcpyHostToDevice));
    }
    CU(cudaMalloc(&g->cpy, g->n * 2));
    int rc = refit_fp8_cuda_create(g->st, &g->q);
    return rc ? cli_fail("bench fp8", rc) : 0;
}

/* Median seconds per pass of variant v (0: device copy of the same bytes;
 * 1, 2: trainer, deepgemm).  Each sample is one pass over every buffer,
 * back to back, so that the host's enqueue overlaps the device's work;
 * 3 warm-up samples first. */
static int gb_time(struct gpu_bench *g, int v, double *med)
{
    struct refit_fp8_params p = {v == 2 ? REFIT_FP8_DEEPGEMM : REFIT_FP8_TRAINER, 0, 0};
    for (size_t it = 0; it < g->iters + 3; it++) {
        CU(cudaEventRecord(g->ev[0], g->st));
        for (size_t b = 0; b < g->nbuf; b++) {
            int rc;
            if (v == 0)
                CU(cudaMemcpyAsync(g->cpy, g->src[b], g->n * 2, cudaMemcpyDeviceToDevice, g->st));
            else if ((rc = refit_fp8_cuda_quantize_bf16(g->q, g->src[b], g->rows, g->cols,
                                                         g->cols, g->dst[b], g->sc[b], &p)))
                return cli_fail("bench fp8", rc);
        }
        CU(cudaEventRecord(g->ev[1], g->st));
        CU(cudaEventSynchronize(g->ev[1]));
        float ms;
        CU(cudaEventElapsedTime(&ms, g->ev[0], g->ev[1]));
        if (it >= 3)
            g->t[it - 3] = ms / 1e3 / (double)g->nbuf;
    }
    int rc = v ? refit_fp8_cuda_sync(g->q) : 0;
    if (rc)
        return cli_fail("bench fp8", rc);
    qsort(g->t, g->iters, sizeof(double), cmp_double);
    *med = g->t[g->iters / 2];
    return 0;
}

/* The last buffer's output of rule v against the CPU path, byte for byte. */
static int gb_check(struct gpu_bench *g, int v)
{
    struct refit_fp8_params p = {v == 2 ? REFIT_FP8_DEEPGEMM : REFIT_FP8_TRAINER, 0, 0};
    const size_t b = g->nbuf - 1;
    bench_fp8_fill(g->h, g->n, 0x9e3779b97f4a7c15ull + b);
    int rc = refit_fp8_quantize_bf16(g->h, g->rows, g->cols, g->cols, g->want, g->ws, &p);
    if (rc)
        return cli_fail("bench fp8", rc);
    CU(cudaMemcpy(g->got, g->dst[b], g->n, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(g->gs, g->sc[b], g->ns * 4, cudaMemcpyDeviceToHost));
    if (memcmp(g->got, g->want, g->n) || memcmp(g->gs, g->ws, g->ns * 4)) {
        fprintf(stderr, "refit bench fp8: the %s rule's GPU output differs from the CPU path\n",
                v == 1 ? "trainer" : "deepgemm");
        return 1;
    }
    return 0;
}

/* med: copy, trainer, deepgemm; tt: torch trainer, deepgemm (< 0: none). */
static void gb_print(const struct gpu_bench *g, const double med[3], const double tt[2])
{
    const double gb = g->n * 2 / 1e9;
    /* The quantizer moves 1.5 bytes per input byte (read bf16, write e4m3),
     * the copy 2: the copy's traffic rate bounds the quantizer at 2/1.5
     * times the copy's input rate. */
    const double bound = gb / med[0] * 2 / 1.5;
    printf("  %-9s %-10s %9s %9s %9s\n", "rule", "path", "GB/s", "x torch", "of bound");
    printf("  %-9s %-10s %9.1f %9s %8.0f%%   (%.0f GB/s read+write; bound %.0f GB/s of input)\n",
           "-", "d2d copy", gb / med[0], "-", 100 * gb / med[0] / bound, 2 * gb / med[0], bound);
    for (int r = 0; r < 2; r++) {
        const char *name = r ? "deepgemm" : "trainer";
        double x = gb / med[1 + r];
        if (tt[r] > 0) {
            printf("  %-9s %-10s %9.1f %9.2f %8.0f%%\n", name, "refit", x, tt[r] / med[1 + r],
                   100 * x / bound);
            printf("  %-9s %-10s %9.1f %9.2f %8.0f%%\n", name, "torch", gb / tt[r], 1.0,
                   100 * gb / tt[r] / bound);
        } else {
            printf("  %-9s %-10s %9.1f %9s %8.0f%%\n", name, "refit", x, "-", 100 * x / bound);
        }
    }
    printf("  (refit's bytes and scales equal the CPU path's for both rules)\n");
}

int bench_fp8_cuda(size_t rows, size_t cols, size_t iters, int sized)
{
    if (refit_cuda_device_count() <= 0) {
        fprintf(stderr, "refit bench fp8: --device cuda: no CUDA device is present\n");
        return 2;
    }
    if (!sized)
        rows = cols = 8192; /* 134 MB of bf16: well past the L2 cache */
    struct gpu_bench g = {.rows = rows, .cols = cols, .n = rows * cols, .iters = iters,
                          .ns = ((rows + 127) / 128) * ((cols + 127) / 128)};
    double med[3], tt[2];
    int rc = gb_setup(&g);
    if (!rc)
        printf("refit bench fp8 --device cuda: %zu x %zu bf16 (%.1f MB), %s, %zu input buffers "
               "rotated, median of %zu, GB/s of bf16 input\n", rows, cols, g.n * 2 / 1e6, g.gpu,
               g.nbuf, iters);
    for (int v = 0; v < 3 && !rc; v++)
        if (!(rc = gb_time(&g, v, &med[v])) && v)
            rc = gb_check(&g, v);
    if (!rc) {
        torch_times(rows, cols, iters, g.nbuf, tt);
        gb_print(&g, med, tt);
    }
    gb_free(&g);
    return rc;
}
#endif
