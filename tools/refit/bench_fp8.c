/* bench_fp8.c — `refit bench fp8`: GB/s of bf16 input through the FP8
 * block quantizer, both rules, every implementation this CPU has, on one
 * thread, beside memcpy of the same bytes in the same run (the target is a
 * vector path at >= 0.5x memcpy). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/fp8.h"
#include "refit/status.h"

struct fp8_opts {
    uint64_t rows, cols, iters; /* 0: not given */
    const char *device;
};

static const struct cli_opt fp8_table[] = {
    {"--rows", NULL, CLI_U64, "N", 1, 1 << 20, NULL, NULL, CLI_AT(struct fp8_opts, rows),
     "matrix rows (default 4096; 8192 on a GPU)"},
    {"--cols", NULL, CLI_U64, "N", 1, 1 << 20, NULL, NULL, CLI_AT(struct fp8_opts, cols),
     "matrix columns (default 4096; 8192 on a GPU)"},
    {"--iters", NULL, CLI_U64, "N", 1, 100000, NULL, NULL, CLI_AT(struct fp8_opts, iters),
     "timed runs (default 10; 50 on a GPU)"},
    {"--device", NULL, CLI_CHOICE, "WHERE", 0, 0, "cpu|cuda", "cpu", CLI_AT(struct fp8_opts, device),
     "the CPU paths, or the CUDA kernel on device 0"},
};

static const struct cli_spec fp8_spec = {
    .cmd = "bench fp8",
    .about = "Quantizes a random bf16 matrix [rows, cols] to FP8 e4m3 with 128x128 block scales,\n"
             "rules trainer and deepgemm, with the scalar path and each vector path this CPU has,\n"
             "on one thread; prints the median GB/s of bf16 input over --iters runs beside memcpy\n"
             "of the same bytes.  --device cuda: the CUDA kernel on device 0, beside a device copy\n"
             "of the same bytes and PyTorch eager code for the same rule timed in the same run\n"
             "(python3 with torch; skipped when absent).\n",
    .opts = fp8_table,
    .n_opts = CLI_N(fp8_table),
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void bench_fp8_fill(uint16_t *x, size_t n, uint64_t s)
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

struct variant {
    const char *rule; /* NULL: the memcpy baseline */
    struct refit_fp8_params p;
    double *t;
};

/* One timed pass of variant v. */
static int pass(const struct variant *v, const uint16_t *src, uint16_t *copy, uint8_t *dst,
                float *scales, size_t rows, size_t cols, double *secs)
{
    double t0 = now_s();
    if (v->rule) {
        int rc = refit_fp8_quantize_bf16(src, rows, cols, cols, dst, scales, &v->p);
        if (rc)
            return rc;
    } else {
        memcpy(copy, src, rows * cols * 2);
    }
    *secs = now_s() - t0;
    return 0;
}

int bench_fp8(int argc, char **argv)
{
    struct fp8_opts o = {0};
    int rc = cli_opts_parse(&fp8_spec, argc, argv, &o, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    if (rc)
        return cli_fail("bench fp8", rc);
    size_t rows = o.rows ? o.rows : 4096, cols = o.cols ? o.cols : 4096, iters = o.iters ? o.iters : 10;
    int cuda = !strcmp(o.device, "cuda"), sized = o.rows || o.cols, iters_set = o.iters != 0;
    if (rows * cols > (size_t)1 << 32) {
        fprintf(stderr, "refit bench fp8: rows x cols above 2^32 elements\n");
        return 2;
    }
    if (cuda)
        return bench_fp8_cuda(rows, cols, iters_set ? iters : 50, sized);
    size_t n = rows * cols, ns = ((rows + 127) / 128) * ((cols + 127) / 128);
    struct {
        uint16_t *copy;
        uint8_t *dst;
        float *scales;
    } r;
    uint16_t *src = malloc(n * 2);
    r.copy = malloc(n * 2);
    r.dst = malloc(n);
    r.scales = malloc(ns * sizeof(float));
    rc = 0;
    struct variant v[1 + 2 * 3];
    size_t nv = 0;
    if (!src || !r.copy || !r.dst || !r.scales) {
        fprintf(stderr, "refit bench fp8: out of memory for %zu x %zu\n", rows, cols);
        rc = 1;
        goto out;
    }
    bench_fp8_fill(src, n, 0x9e3779b97f4a7c15ull);
    memset(r.copy, 0, n * 2); /* fault the pages in before timing */
    memset(r.dst, 0, n);
    /* Variants take turns within each iteration, so that a machine whose
     * load changes during the run slows baseline and quantizer alike. */
    v[nv++] = (struct variant){NULL, {0, 0, 0}, NULL};
    static const enum refit_fp8_impl impls[] = {REFIT_FP8_IMPL_SCALAR, REFIT_FP8_IMPL_AVX2,
                                                REFIT_FP8_IMPL_AVX512};
    for (int rule = REFIT_FP8_TRAINER; rule <= REFIT_FP8_DEEPGEMM; rule++)
        for (size_t k = 0; k < 3; k++)
            if (refit_fp8_impl_available(impls[k]))
                v[nv++] = (struct variant){rule == REFIT_FP8_TRAINER ? "trainer" : "deepgemm",
                                           {(enum refit_fp8_rule)rule, -1, impls[k]}, NULL};
    for (size_t k = 0; k < nv && !rc; k++)
        if (!(v[k].t = calloc(iters, sizeof(double))))
            rc = refit_error_set(REFIT_ENOMEM, "out of memory for the timings");
    for (size_t it = 0; it <= iters && !rc; it++) /* iteration 0 warms up */
        for (size_t k = 0; k < nv && !rc; k++) {
            double t;
            rc = pass(&v[k], src, r.copy, r.dst, r.scales, rows, cols, &t);
            if (it && !rc)
                v[k].t[it - 1] = t;
        }
    if (rc) {
        rc = cli_fail("bench fp8", rc);
        goto free_t;
    }
    double gb = (double)n * 2 / 1e9, base = 0;
    printf("refit bench fp8: %zu x %zu bf16 (%.1f MB), 1 thread, median of %zu, GB/s of bf16 "
           "input\n", rows, cols, gb * 1e3, iters);
    printf("  %-9s %-7s %9s %8s\n", "rule", "path", "GB/s", "x memcpy");
    for (size_t k = 0; k < nv; k++) {
        qsort(v[k].t, iters, sizeof(double), cmp_double);
        double t = v[k].t[iters / 2];
        if (!k)
            base = t;
        printf("  %-9s %-7s %9.2f %8.2f\n", k ? v[k].rule : "memcpy",
               k ? refit_fp8_impl_name(v[k].p.impl) : "-", gb / t, base / t);
    }
    printf("  (AUTO picks %s on this CPU)\n", refit_fp8_impl_name(refit_fp8_impl_best()));
free_t:
    for (size_t k = 0; k < nv; k++)
        free(v[k].t);
out:
    free(src);
    free(r.copy);
    free(r.dst);
    free(r.scales);
    return rc;
}
