/* test_fp8_cuda.c — the CUDA FP8 block quantizer (refit/fp8_cuda.h) against
 * the CPU path (refit_fp8_quantize_bf16/_f32) byte for byte: random and
 * extreme inputs, edge shapes, strided and misaligned views, both rules,
 * floors, NaN/Inf reporting, argument errors.  Without a CUDA device the
 * program exits 77 (skipped); in a build without CUDA it checks that the
 * stubs answer REFIT_ENOTSUP and also exits 77 for the device part. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "refit/fp8.h"
#include "refit/fp8_cuda.h"
#include "refit/status.h"
#include "../check_run.h"

#ifdef REFIT_TEST_HAVE_CUDA
#include <cuda_runtime.h>

#define CK_CUDA(call)                                                                       \
    do {                                                                                    \
        cudaError_t e_ = (call);                                                            \
        ck_assert_msg(e_ == cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));          \
    } while (0)

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* bf16 [rows, stride]: per-block magnitudes from ~1e-38 to ~1e38, zeros,
 * -0, subnormals, bf16 max, all-zero blocks, blocks of e4m3 rounding ties
 * with amax 448, and NaN in the gap between cols and stride (a kernel
 * that reads past its columns reports an error). */
static uint16_t *gen_bf16(size_t rows, size_t cols, size_t stride, uint64_t seed)
{
    uint16_t *m = malloc((rows * stride + 8) * sizeof(uint16_t));
    ck_assert_ptr_nonnull(m);
    uint64_t s = seed * 2654435761u + 1;
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < stride; c++) {
            uint16_t v;
            size_t blk = (r / 128) * 7 + c / 128;
            if (c >= cols) {
                v = 0x7fc1;
            } else if (blk % 5 == 3) {
                int e = (int)(rnd(&s) % 16);
                float f = ldexpf(1.0f + (float)(rnd(&s) % 16) / 16.0f, e - 9);
                uint32_t u;
                memcpy(&u, &f, 4);
                v = (uint16_t)(u >> 16);
                if (r % 128 == 0 && c % 128 == 0)
                    v = 0x43e0; /* 448 */
            } else if (blk % 5 == 1) {
                /* weights as trainers have them: ~0.02 with rare outliers */
                unsigned e = 118 + (unsigned)(rnd(&s) % 8) + (rnd(&s) % 1024 == 0 ? 6 : 0);
                v = (uint16_t)(e << 7 | (rnd(&s) & 0x7f));
            } else {
                int e = (int)((blk * 37) % 250) + 2 + (int)(rnd(&s) % 9) - 4;
                e = e < 0 ? 0 : (e > 254 ? 254 : e);
                v = (uint16_t)((e << 7) | (rnd(&s) & 0x7f));
                uint64_t k = rnd(&s) % 64;
                if (k == 0)
                    v = 0;
                else if (k == 1)
                    v = 0x0001;
                else if (k == 2 && blk % 4 == 1)
                    v = 0x7f7f;
                if (blk % 11 == 10)
                    v = 0;
            }
            if (rnd(&s) & 1)
                v |= 0x8000;
            m[r * stride + c] = v;
        }
    return m;
}

static float *to_f32(const uint16_t *b, size_t n)
{
    float *f = malloc(n * sizeof(float) + 32);
    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < n; i++)
        f[i] = refit_bf16_to_f32(b[i]);
    return f;
}

struct dev {
    struct refit_fp8_cuda *q;
    cudaStream_t st;
};

static struct dev dev_open(void)
{
    struct dev d;
    CK_CUDA(cudaStreamCreate(&d.st));
    ck_assert_int_eq(refit_fp8_cuda_create(d.st, &d.q), 0);
    return d;
}

static void dev_close(struct dev *d)
{
    refit_fp8_cuda_destroy(d->q);
    CK_CUDA(cudaStreamDestroy(d->st));
}

/* Quantize host matrix h (element size esz, `off` elements into the
 * buffer, rows `stride` apart) on the device and on the CPU and compare
 * every byte and scale.  The device outputs are poisoned first, so an
 * unwritten byte fails. */
static void compare(const void *h, size_t esz, size_t off, size_t rows, size_t cols, size_t stride,
                    int rule, double floor)
{
    const size_t n = rows * stride + off, nq = rows * cols;
    const size_t ns = ((rows + 127) / 128) * ((cols + 127) / 128);
    struct refit_fp8_params p = {(enum refit_fp8_rule)rule, floor, REFIT_FP8_IMPL_AUTO};
    uint8_t *want = malloc(nq), *got = malloc(nq);
    float *ws = malloc(ns * 4), *gs = malloc(ns * 4);
    ck_assert(want && got && ws && gs);
    const char *hs = (const char *)h + off * esz;
    int rc = esz == 2 ? refit_fp8_quantize_bf16((const uint16_t *)hs, rows, cols, stride, want, ws, &p)
                      : refit_fp8_quantize_f32((const float *)hs, rows, cols, stride, want, ws, &p);
    ck_assert_msg(rc == 0, "cpu: %s", refit_error_message());

    struct dev d = dev_open();
    void *dsrc, *ddst;
    float *dsc;
    CK_CUDA(cudaMalloc(&dsrc, n * esz));
    CK_CUDA(cudaMalloc(&ddst, nq));
    CK_CUDA(cudaMalloc((void **)&dsc, ns * 4));
    CK_CUDA(cudaMemcpy(dsrc, h, n * esz, cudaMemcpyHostToDevice));
    CK_CUDA(cudaMemset(ddst, 0xa5, nq));
    CK_CUDA(cudaMemset(dsc, 0xa5, ns * 4));
    const char *ds = (const char *)dsrc + off * esz;
    rc = esz == 2 ? refit_fp8_cuda_quantize_bf16(d.q, ds, rows, cols, stride, ddst, dsc, &p)
                  : refit_fp8_cuda_quantize_f32(d.q, ds, rows, cols, stride, ddst, dsc, &p);
    ck_assert_msg(rc == 0, "cuda enqueue: %s", refit_error_message());
    rc = refit_fp8_cuda_sync(d.q);
    ck_assert_msg(rc == 0, "cuda sync: %s", refit_error_message());
    CK_CUDA(cudaMemcpy(got, ddst, nq, cudaMemcpyDeviceToHost));
    CK_CUDA(cudaMemcpy(gs, dsc, ns * 4, cudaMemcpyDeviceToHost));
    for (size_t k = 0; k < ns; k++)
        if (memcmp(&gs[k], &ws[k], 4))
            ck_abort_msg("%zux%zu/%zu+%zu %s rule %d floor %g: scale %zu is %a, want %a", rows,
                         cols, stride, off, esz == 2 ? "bf16" : "f32", rule, floor, k, gs[k],
                         ws[k]);
    for (size_t k = 0; k < nq; k++)
        if (got[k] != want[k])
            ck_abort_msg("%zux%zu/%zu+%zu %s rule %d floor %g: byte (%zu, %zu) is 0x%02x, want "
                         "0x%02x", rows, cols, stride, off, esz == 2 ? "bf16" : "f32", rule, floor,
                         k / cols, k % cols, got[k], want[k]);
    cudaFree(dsrc);
    cudaFree(ddst);
    cudaFree(dsc);
    dev_close(&d);
    free(want);
    free(got);
    free(ws);
    free(gs);
}

/* rows, cols, stride, offset in elements */
static const size_t views[][4] = {
    {1, 1, 1, 0},       {127, 129, 129, 0},  {128, 128, 128, 0}, {300, 257, 257, 0},
    {256, 384, 384, 0}, {1, 300, 300, 0},    {300, 1, 1, 0},     {129, 136, 136, 0},
    {200, 250, 264, 0}, /* strided, rows 16-byte aligned */
    {130, 140, 147, 0}, /* strided, rows misaligned */
    {140, 256, 256, 3}, /* whole view misaligned */
    {257, 512, 1024, 8},
};

START_TEST(bf16_matches_cpu)
{
    const size_t *v = views[_i];
    /* the view starts v[3] elements into the buffer, after NaN */
    uint16_t *buf = malloc((v[0] * v[2] + v[3] + 8) * 2);
    ck_assert_ptr_nonnull(buf);
    for (size_t i = 0; i < v[3]; i++)
        buf[i] = 0x7fc1;
    uint16_t *g = gen_bf16(v[0], v[1], v[2], 11 + _i);
    memcpy(buf + v[3], g, v[0] * v[2] * 2);
    for (int rule = 0; rule < 2; rule++) {
        compare(buf, 2, v[3], v[0], v[1], v[2], rule, 0);
        compare(buf, 2, v[3], v[0], v[1], v[2], rule, rule ? 3e-2 : 2e-4); /* floor often decides */
    }
    free(g);
    free(buf);
}
END_TEST

START_TEST(f32_matches_cpu)
{
    const size_t *v = views[_i];
    uint16_t *g = gen_bf16(v[0], v[1], v[2], 101 + _i);
    float *f = to_f32(g, v[0] * v[2]);
    float *buf = malloc((v[0] * v[2] + v[3] + 8) * 4);
    ck_assert_ptr_nonnull(buf);
    /* fp32 values that are not bf16: fill the low mantissa bits */
    uint64_t s = 99 + _i;
    for (size_t i = 0; i < v[0] * v[2]; i++) {
        uint32_t u;
        memcpy(&u, &f[i], 4);
        if ((u & 0x7f800000u) != 0x7f800000u && (u & 0x7fffffffu) > 0x00800000u &&
            (u & 0x7fffffffu) < 0x7f000000u)
            u |= (uint32_t)rnd(&s) & 0xffffu;
        memcpy(&f[i], &u, 4);
    }
    for (size_t i = 0; i < v[3]; i++)
        buf[i] = NAN;
    memcpy(buf + v[3], f, v[0] * v[2] * 4);
    for (int rule = 0; rule < 2; rule++) {
        compare(buf, 4, v[3], v[0], v[1], v[2], rule, 0);
        compare(buf, 4, v[3], v[0], v[1], v[2], rule, rule ? 3e-2 : 2e-4);
    }
    free(g);
    free(f);
    free(buf);
}
END_TEST

/* A large random weight-like matrix: many blocks, every SM busy. */
START_TEST(large_matches_cpu)
{
    const size_t rows = 2048 + 64, cols = 4096 + 40;
    uint16_t *g = gen_bf16(rows, cols, cols, 7);
    for (int rule = 0; rule < 2; rule++)
        compare(g, 2, 0, rows, cols, cols, rule, 0);
    free(g);
}
END_TEST

/* fp32 subnormal blocks with tiny floors: s is inexact, x / s can pass
 * 464 and the trainer's clamp decides (see test_fp8.c). */
START_TEST(f32_subnormal_blocks_tiny_floor)
{
    const size_t rows = 3, cols = 200;
    float x[3 * 200];
    uint64_t st = 17;
    for (size_t i = 0; i < rows * cols; i++) {
        uint32_t u = ((uint32_t)rnd(&st) & 0x801fffffu) | (i % 7 == 0 ? 0x00600000u : 0);
        if (i % cols >= 128)
            u = (u & 0x80000000u) | (i % cols == 150 ? 0x27fu : (uint32_t)(rnd(&st) % 0x280));
        memcpy(&x[i], &u, 4);
    }
    compare(x, 4, 0, rows, cols, cols, 0, 1e-45);
    compare(x, 4, 0, rows, cols, cols, 1, 1.4e-36);
}
END_TEST

/* Every bf16 bit pattern that is finite, in blocks of one magnitude
 * range each: all roundings of the cast under many scales. */
START_TEST(all_bf16_values)
{
    const size_t rows = 512, cols = 128 * 4;
    uint16_t *h = malloc(rows * cols * 2);
    ck_assert_ptr_nonnull(h);
    uint32_t v = 0;
    for (size_t i = 0; i < rows * cols; i++) {
        while ((v & 0x7f80u) == 0x7f80u)
            v++;
        h[i] = (uint16_t)v;
        v = (v + 1) & 0xffffu;
    }
    for (int rule = 0; rule < 2; rule++)
        compare(h, 2, 0, rows, cols, cols, rule, 0);
    free(h);
}
END_TEST

static void put_bf16(void *d, size_t idx, uint16_t v)
{
    CK_CUDA(cudaMemcpy((uint16_t *)d + idx, &v, 2, cudaMemcpyHostToDevice));
}

START_TEST(nonfinite_is_reported)
{
    const size_t rows = 300, cols = 300;
    uint16_t *h = gen_bf16(rows, cols, cols, 5);
    struct dev d = dev_open();
    void *src, *dst;
    float *sc;
    CK_CUDA(cudaMalloc(&src, rows * cols * 2));
    CK_CUDA(cudaMalloc(&dst, rows * cols));
    CK_CUDA(cudaMalloc((void **)&sc, 9 * 4));
    CK_CUDA(cudaMemcpy(src, h, rows * cols * 2, cudaMemcpyHostToDevice));
    for (int rule = 0; rule < 2; rule++) {
        struct refit_fp8_params p = {(enum refit_fp8_rule)rule, 0, 0};
        /* clean input: no error */
        ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(d.q, src, rows, cols, cols, dst, sc, &p), 0);
        ck_assert_int_eq(refit_fp8_cuda_sync(d.q), 0);
        /* NaN at (290, 256) and a later one: the first is named */
        put_bf16(src, 290 * cols + 256, 0x7fc0);
        put_bf16(src, 295 * cols + 10, 0xffc0);
        ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(d.q, src, rows, cols, cols, dst, sc, &p), 0);
        ck_assert_int_eq(refit_fp8_cuda_sync(d.q), REFIT_ENUMERIC);
        ck_assert_msg(strstr(refit_error_message(), "NaN at row 290, column 256"), "%s",
                      refit_error_message());
        /* the error state is cleared by the sync that reported it */
        put_bf16(src, 290 * cols + 256, h[290 * cols + 256]);
        put_bf16(src, 295 * cols + 10, h[295 * cols + 10]);
        ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(d.q, src, rows, cols, cols, dst, sc, &p), 0);
        ck_assert_int_eq(refit_fp8_cuda_sync(d.q), 0);
        /* -Inf in the second of three calls between syncs */
        put_bf16(src, 7 * cols + 131, 0xff80);
        ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(d.q, src, 1, cols, cols, dst, sc, &p), 0);
        ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(d.q, src, rows, cols, cols, dst, sc, &p), 0);
        ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(d.q, src, rows, cols, cols, dst, sc, &p), 0);
        ck_assert_int_eq(refit_fp8_cuda_sync(d.q), REFIT_ENUMERIC);
        ck_assert_msg(strstr(refit_error_message(), "Inf at row 7, column 131 (quantization 2 of 3"),
                      "%s", refit_error_message());
        put_bf16(src, 7 * cols + 131, h[7 * cols + 131]);
    }
    /* fp32 NaN in a strided, misaligned view */
    float *f = to_f32(h, rows * cols), *fsrc;
    f[123 * cols + 45] = NAN;
    CK_CUDA(cudaMalloc((void **)&fsrc, rows * cols * 4));
    CK_CUDA(cudaMemcpy(fsrc, f, rows * cols * 4, cudaMemcpyHostToDevice));
    ck_assert_int_eq(refit_fp8_cuda_quantize_f32(d.q, fsrc + 1, 200, 250, cols, dst, sc, NULL), 0);
    ck_assert_int_eq(refit_fp8_cuda_sync(d.q), REFIT_ENUMERIC);
    ck_assert_msg(strstr(refit_error_message(), "NaN at row 123, column 44"), "%s",
                  refit_error_message());
    cudaFree(fsrc);
    free(f);
    cudaFree(src);
    cudaFree(dst);
    cudaFree(sc);
    dev_close(&d);
    free(h);
}
END_TEST

START_TEST(bad_arguments)
{
    struct dev d = dev_open();
    void *src, *dst;
    float *sc;
    CK_CUDA(cudaMalloc(&src, 4096));
    CK_CUDA(cudaMalloc(&dst, 4096));
    CK_CUDA(cudaMalloc((void **)&sc, 64));
    uint16_t host[16];
    struct refit_fp8_params p = {REFIT_FP8_DEEPGEMM, 1e-37, 0};
    ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(d.q, src, 4, 8, 8, dst, sc, &p), REFIT_EINVAL);
    ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(d.q, src, 4, 8, 7, dst, sc, NULL), REFIT_EINVAL);
    ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(d.q, host, 4, 4, 4, dst, sc, NULL), REFIT_EINVAL);
    ck_assert_msg(strstr(refit_error_message(), "not device memory"), "%s", refit_error_message());
    ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(d.q, (char *)src + 1, 4, 8, 8, dst, sc, NULL),
                     REFIT_EINVAL);
    ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(d.q, NULL, 4, 8, 8, dst, sc, NULL), REFIT_EINVAL);
    ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(NULL, src, 4, 8, 8, dst, sc, NULL), REFIT_EINVAL);
    /* an empty matrix is nothing to do */
    ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(d.q, NULL, 0, 8, 8, NULL, NULL, NULL), 0);
    ck_assert_int_eq(refit_fp8_cuda_sync(d.q), 0);
    cudaFree(src);
    cudaFree(dst);
    cudaFree(sc);
    dev_close(&d);
}
END_TEST
#endif /* REFIT_TEST_HAVE_CUDA */

START_TEST(api_without_device)
{
    /* Whatever the build: the count is sane and, without CUDA, every
     * entry point says ENOTSUP instead of crashing. */
    if (refit_cuda_built())
        return;
    struct refit_fp8_cuda *q = NULL;
    ck_assert_int_eq(refit_cuda_device_count(), 0);
    ck_assert_int_eq(refit_fp8_cuda_create(NULL, &q), REFIT_ENOTSUP);
    ck_assert_ptr_null(q);
    ck_assert_int_eq(refit_fp8_cuda_quantize_bf16(NULL, NULL, 1, 1, 1, NULL, NULL, NULL),
                     REFIT_ENOTSUP);
    ck_assert_int_eq(refit_fp8_cuda_sync(NULL), REFIT_ENOTSUP);
    refit_fp8_cuda_destroy(NULL);
}
END_TEST

/* CUDA devices, counted in a child process: a CUDA context made in this
 * process before Check forks its tests would be unusable in the children
 * ("initialization error"). */
static int probe_devices(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(refit_cuda_device_count() > 0 ? 1 : 0);
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return refit_cuda_device_count(); /* no fork: count here */
    return WIFEXITED(st) ? WEXITSTATUS(st) : 0;
}

int main(void)
{
    Suite *s = suite_create("fp8-cuda");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, api_without_device);
    suite_add_tcase(s, tc);
    int devices = probe_devices();
#ifdef REFIT_TEST_HAVE_CUDA
    if (devices > 0) {
        tc = tcase_create("device");
        tcase_set_timeout(tc, 120);
        const int nv = (int)(sizeof(views) / sizeof(views[0]));
        tcase_add_loop_test(tc, bf16_matches_cpu, 0, nv);
        tcase_add_loop_test(tc, f32_matches_cpu, 0, nv);
        tcase_add_test(tc, large_matches_cpu);
        tcase_add_test(tc, f32_subnormal_blocks_tiny_floor);
        tcase_add_test(tc, all_bf16_values);
        tcase_add_test(tc, nonfinite_is_reported);
        tcase_add_test(tc, bad_arguments);
        suite_add_tcase(s, tc);
    }
#endif
    int failed = t_run_suite(s, CK_NORMAL);
    if (failed)
        return 1;
    if (devices <= 0) {
        printf("SKIP: %s: the CUDA FP8 tests need a CUDA device (%s); only the API checks ran\n",
               "test-cuda-fp8", refit_cuda_built() ? "none found" : "librefit built without CUDA");
        return 77;
    }
    return 0;
}
