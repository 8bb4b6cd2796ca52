/* test_dprog.c — the colocated device program (core/src/engine/dprog.h).
 *
 *   test-cuda-dprog host    the host reference against independent
 *                           computations: copies and column-slice gathers
 *                           byte by byte, FP8 pieces against one CPU
 *                           quantization of the whole matrix (what `refit
 *                           convert` writes), NaN reporting, bad operations.
 *   test-cuda-dprog device  the kernel against the host reference on the
 *                           same random operations (tiles of every kind,
 *                           misaligned and strided views, several phases,
 *                           both rules); exits 77 without a CUDA device. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dprog.h"
#include "refit/fp8.h"
#include "refit/fp8_cuda.h"
#include "refit/status.h"

#ifdef REFIT_TEST_HAVE_CUDA
#include <cuda_runtime.h>
#endif

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* Random finite bf16 with magnitudes over many binades. */
static void fill_bf16(uint16_t *p, size_t n, uint64_t seed)
{
    uint64_t s = seed * 2654435761u + 7;
    for (size_t i = 0; i < n; i++) {
        uint16_t v = (uint16_t)rnd(&s);
        uint16_t e = (uint16_t)(100 + rnd(&s) % 50); /* exponent 2^-27 .. 2^22 */
        p[i] = (uint16_t)((v & 0x807f) | (e << 7));
    }
}

static void fill_bytes(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t s = seed * 40503u + 3;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd(&s);
}

START_TEST(t_ref_copies)
{
    /* A contiguous copy and a column-slice gather (row-parallel shard:
     * columns [cs, cs + w) of a [rows, C] matrix into a [rows, w] one). */
    enum { ROWS = 37, C = 300, W = 77, CS = 113 };
    uint8_t *src = malloc(ROWS * C), *dst = malloc(ROWS * W + 4096), *lin = malloc(4096);
    fill_bytes(src, ROWS * C, 1);
    memset(dst, 0xee, ROWS * W + 4096);
    struct rf_dop ops[2] = {
        {.kind = RF_DOP_COPY, .src = src + CS, .src_pitch = C, .dst = dst, .dst_pitch = W, .rows = ROWS, .width = W},
        {.kind = RF_DOP_COPY, .src = src + 5, .src_pitch = 4000, .dst = lin, .dst_pitch = 4000, .rows = 1,
         .width = 4000},
    };
    ck_assert_int_eq(rf_dprog_reference(ops, 2, NULL, NULL), 0);
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < W; c++)
            ck_assert_uint_eq(dst[r * W + c], src[r * C + CS + c]);
    ck_assert_uint_eq(dst[ROWS * W], 0xee); /* nothing past the end */
    ck_assert_int_eq(memcmp(lin, src + 5, 4000), 0);
    free(src);
    free(dst);
    free(lin);
}
END_TEST

/* FP8 of a [R, C] bf16 matrix as pieces (row blocks and column slices, as
 * sharded trainers hold it) gives the bytes and scales of one CPU
 * quantization of the whole matrix. */
static void fp8_pieces(enum refit_fp8_rule rule)
{
    enum { R = 300, C = 384, SP = 400 };
    uint16_t *m = malloc(R * SP * 2);
    fill_bf16(m, R * SP, 11 + rule);
    struct refit_fp8_params p = {rule, 0, REFIT_FP8_IMPL_AUTO};
    const size_t nrb = 3, ncb = 3;
    uint8_t *want = malloc(R * C), *got = malloc(R * C);
    float want_s[9], got_s[9];
    ck_assert_int_eq(refit_fp8_quantize_bf16(m, R, C, SP, want, want_s, &p), 0);
    memset(got, 0xaa, R * C);
    memset(got_s, 0xaa, sizeof(got_s));
    /* rows [0, 256) in two column slices [0, 128) and [128, 384); rows [256, 300) whole. */
    struct rf_dop ops[3] = {
        {.kind = RF_DOP_FP8_BF16, .src = m, .src_pitch = SP * 2, .dst = got, .dst_pitch = C, .rows = 256,
         .width = 128, .scales = got_s, .scale_pitch = ncb},
        {.kind = RF_DOP_FP8_BF16, .src = m + 128, .src_pitch = SP * 2, .dst = got + 128, .dst_pitch = C,
         .rows = 256, .width = 256, .scales = got_s + 1, .scale_pitch = ncb},
        {.kind = RF_DOP_FP8_BF16, .src = m + 256 * SP, .src_pitch = SP * 2, .dst = got + 256 * C, .dst_pitch = C,
         .rows = 44, .width = C, .scales = got_s + 2 * ncb, .scale_pitch = ncb},
    };
    ck_assert_int_eq(rf_dprog_reference(ops, 3, &p, NULL), 0);
    ck_assert_int_eq(memcmp(got, want, R * C), 0);
    ck_assert_int_eq(memcmp(got_s, want_s, nrb * ncb * sizeof(float)), 0);
    free(m);
    free(want);
    free(got);
}

START_TEST(t_ref_fp8_trainer)
{
    fp8_pieces(REFIT_FP8_TRAINER);
}
END_TEST

START_TEST(t_ref_fp8_deepgemm)
{
    fp8_pieces(REFIT_FP8_DEEPGEMM);
}
END_TEST

START_TEST(t_ref_errors)
{
    uint16_t m[256];
    fill_bf16(m, 256, 5);
    m[77] = 0x7fc0; /* NaN */
    uint8_t out[256];
    float sc[1];
    struct rf_dop ops[2] = {
        {.kind = RF_DOP_COPY, .src = m, .src_pitch = 8, .dst = out, .dst_pitch = 8, .rows = 2, .width = 8},
        {.kind = RF_DOP_FP8_BF16, .src = m, .src_pitch = 32, .dst = out, .dst_pitch = 16, .rows = 16, .width = 16,
         .scales = sc, .scale_pitch = 1},
    };
    size_t bad = 99;
    ck_assert_int_eq(rf_dprog_reference(ops, 2, NULL, &bad), REFIT_ENUMERIC);
    ck_assert_uint_eq(bad, 1);
    struct rf_dop b = ops[0];
    b.src_pitch = 4; /* less than the row */
    ck_assert_int_eq(rf_dprog_reference(&b, 1, NULL, NULL), REFIT_EINVAL);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "operation 0"));
    b = ops[1];
    b.scale_pitch = 0;
    ck_assert_int_eq(rf_dop_check(&b, 3), REFIT_EINVAL);
    b = ops[0];
    b.phase = RF_DPROG_PHASES;
    ck_assert_int_eq(rf_dop_check(&b, 0), REFIT_EINVAL);
    struct refit_fp8_params p = {(enum refit_fp8_rule)9, 0, REFIT_FP8_IMPL_AUTO};
    int rule;
    float fl;
    ck_assert_int_eq(rf_dprog_params(&p, &rule, &fl), REFIT_EINVAL);
}
END_TEST

#ifdef REFIT_TEST_HAVE_CUDA
#define CK_CUDA(call)                                                                       \
    do {                                                                                    \
        cudaError_t e_ = (call);                                                            \
        ck_assert_msg(e_ == cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));          \
    } while (0)

/* One random program over a source arena S and an output arena D (host
 * mirrors hs, hd): copies of every shape, FP8 pieces, a phase-1 copy that
 * reads what a phase-0 copy wrote.  Offsets are relative to the arenas. */
struct prog {
    struct rf_dop ops[64];
    size_t n;
};

static void make_prog(struct prog *g, char *S, char *D, size_t slen, size_t dlen, uint64_t seed)
{
    uint64_t s = seed;
    size_t doff = 0;
    g->n = 0;
    while (g->n < 40) {
        int k = (int)(rnd(&s) % 5);
        struct rf_dop o = {.kind = RF_DOP_COPY};
        if (k <= 2) {
            size_t rows = k == 0 ? 1 : 1 + rnd(&s) % 300;
            size_t w = k == 0 ? 1 + rnd(&s) % (700 << 10) : 1 + rnd(&s) % 5000;
            if (rnd(&s) % 2)
                w = (w + 15) & ~(size_t)15;
            size_t sp = w + (rnd(&s) % 3) * 16 * (rnd(&s) % 40), dp = w + (rnd(&s) % 2) * 48;
            if (rows * sp + 64 > slen || doff + rows * dp + 64 > dlen)
                break;
            size_t so = (rnd(&s) % 2) ? 16 * (rnd(&s) % 4) : rnd(&s) % 64;
            o.src = S + so;
            o.src_pitch = sp;
            o.dst = D + doff + (so & 15);
            o.dst_pitch = dp;
            o.rows = rows;
            o.width = w;
            doff += rows * dp + 64;
        } else {
            size_t rows = 1 + rnd(&s) % 400, cols = 1 + rnd(&s) % 400, sp = cols + rnd(&s) % 3 * 8;
            size_t nrb = (rows + 127) / 128, ncb = (cols + 127) / 128;
            size_t need = rows * cols + nrb * ncb * 4 + 128;
            if (rows * sp * 2 + 64 > slen || doff + need > dlen)
                break;
            o.kind = RF_DOP_FP8_BF16;
            o.src = S + 2 * (rnd(&s) % 16);
            o.src_pitch = sp * 2;
            o.dst = D + doff;
            o.dst_pitch = cols;
            o.rows = rows;
            o.width = cols;
            o.scales = (float *)(D + ((doff + rows * cols + 15) & ~(size_t)15));
            o.scale_pitch = ncb;
            doff = ((doff + rows * cols + 15) & ~(size_t)15) + nrb * ncb * 4 + 64;
        }
        g->ops[g->n++] = o;
    }
    /* Phase 1 reads what op 0 wrote (a copy onward into fresh space). */
    if (g->n && g->ops[0].kind == RF_DOP_COPY && doff + g->ops[0].width + 16 <= dlen) {
        struct rf_dop o = {.kind = RF_DOP_COPY, .phase = 1, .src = g->ops[0].dst, .src_pitch = g->ops[0].width,
                           .dst = D + doff, .dst_pitch = g->ops[0].width, .rows = 1, .width = g->ops[0].width};
        g->ops[g->n++] = o;
    }
}

static void rebase(struct prog *g, const char *from_s, char *to_s, const char *from_d, char *to_d, size_t dlen)
{
    for (size_t i = 0; i < g->n; i++) {
        struct rf_dop *o = &g->ops[i];
        const char *src = o->src;
        if (src >= from_d && src < from_d + dlen)
            o->src = to_d + (src - from_d);
        else
            o->src = to_s + (src - from_s);
        o->dst = to_d + ((char *)o->dst - from_d);
        if (o->scales)
            o->scales = (float *)(to_d + ((char *)o->scales - from_d));
    }
}

static void device_run(enum refit_fp8_rule rule, uint64_t seed)
{
    const size_t slen = (size_t)8 << 20, dlen = (size_t)48 << 20;
    char *hs = malloc(slen), *hd = malloc(dlen), *back = malloc(dlen);
    fill_bf16((uint16_t *)hs, slen / 2, seed);
    memset(hd, 0x5a, dlen); /* poison: every byte the program writes must change */
    char *ds, *dd;
    CK_CUDA(cudaMalloc((void **)&ds, slen));
    CK_CUDA(cudaMalloc((void **)&dd, dlen));
    CK_CUDA(cudaMemcpy(ds, hs, slen, cudaMemcpyHostToDevice));
    CK_CUDA(cudaMemcpy(dd, hd, dlen, cudaMemcpyHostToDevice));
    struct prog g;
    make_prog(&g, hs, hd, slen, dlen, seed);
    struct refit_fp8_params p = {rule, 0, REFIT_FP8_IMPL_AUTO};
    ck_assert_int_eq(rf_dprog_reference(g.ops, g.n, &p, NULL), 0);
    rebase(&g, hs, ds, hd, dd, dlen);
    struct rf_dprog *dp = NULL;
    ck_assert_int_eq(rf_dprog_create(0, &dp), 0);
    ck_assert_int_eq(rf_dprog_load(dp, g.ops, g.n, &p), 0);
    ck_assert_int_ge(rf_dprog_launches(dp), 1);
    for (int rep = 0; rep < 2; rep++) { /* a loaded program runs again unchanged */
        ck_assert_int_eq(rf_dprog_launch(dp), 0);
        ck_assert_int_eq(rf_dprog_wait(dp, NULL), 0);
    }
    CK_CUDA(cudaMemcpy(back, dd, dlen, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < dlen; i++)
        if (back[i] != hd[i])
            ck_abort_msg("byte %zu: device 0x%02x, host reference 0x%02x (seed %llu)", i, (uint8_t)back[i],
                         (uint8_t)hd[i], (unsigned long long)seed);
    rf_dprog_destroy(dp);
    cudaFree(ds);
    cudaFree(dd);
    free(hs);
    free(hd);
    free(back);
}

START_TEST(t_dev_trainer)
{
    for (uint64_t s = 1; s <= 4; s++)
        device_run(REFIT_FP8_TRAINER, s);
}
END_TEST

START_TEST(t_dev_deepgemm)
{
    for (uint64_t s = 11; s <= 13; s++)
        device_run(REFIT_FP8_DEEPGEMM, s);
}
END_TEST

START_TEST(t_dev_nan)
{
    uint16_t h[64 * 64];
    fill_bf16(h, 64 * 64, 3);
    h[1000] = 0x7f80; /* Inf */
    char *d;
    CK_CUDA(cudaMalloc((void **)&d, 64 * 64 * 8));
    CK_CUDA(cudaMemcpy(d, h, sizeof(h), cudaMemcpyHostToDevice));
    struct rf_dop ops[2] = {
        {.kind = RF_DOP_COPY, .src = d, .src_pitch = 128, .dst = d + 8192, .dst_pitch = 128, .rows = 8, .width = 128},
        {.kind = RF_DOP_FP8_BF16, .src = d, .src_pitch = 128, .dst = d + 12288, .dst_pitch = 64, .rows = 64,
         .width = 64, .scales = (float *)(d + 12288 + 4096), .scale_pitch = 1},
    };
    struct rf_dprog *dp = NULL;
    ck_assert_int_eq(rf_dprog_create(0, &dp), 0);
    ck_assert_int_eq(rf_dprog_load(dp, ops, 2, NULL), 0);
    ck_assert_int_eq(rf_dprog_launch(dp), 0);
    size_t bad = 9;
    ck_assert_int_eq(rf_dprog_wait(dp, &bad), REFIT_ENUMERIC);
    ck_assert_uint_eq(bad, 1);
    /* The error word is reset: a clean program after it passes. */
    ck_assert_int_eq(rf_dprog_load(dp, ops, 1, NULL), 0);
    ck_assert_int_eq(rf_dprog_launch(dp), 0);
    ck_assert_int_eq(rf_dprog_wait(dp, NULL), 0);
    rf_dprog_destroy(dp);
    cudaFree(d);
}
END_TEST
#endif

int main(int argc, char **argv)
{
    int device = argc > 1 && !strcmp(argv[1], "device");
    /* Decide on skipping before check's suite exists: an early return
     * after suite_create leaks it, and LeakSanitizer fails the skip. */
    if (device) {
#ifdef REFIT_TEST_HAVE_CUDA
        if (refit_cuda_device_count() < 1) {
            printf("SKIP: no CUDA device\n");
            return 77;
        }
#else
        printf("SKIP: built without CUDA\n");
        return 77;
#endif
    }
    Suite *s = suite_create("dprog");
    TCase *tc = tcase_create(device ? "device" : "host");
    tcase_set_timeout(tc, 240);
    if (!device) {
        tcase_add_test(tc, t_ref_copies);
        tcase_add_test(tc, t_ref_fp8_trainer);
        tcase_add_test(tc, t_ref_fp8_deepgemm);
        tcase_add_test(tc, t_ref_errors);
    } else {
#ifdef REFIT_TEST_HAVE_CUDA
        tcase_add_test(tc, t_dev_trainer);
        tcase_add_test(tc, t_dev_deepgemm);
        tcase_add_test(tc, t_dev_nan);
#endif
    }
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    /* The device count above initialised CUDA in this process, and a CUDA
     * context does not survive fork: device tests run unforked. */
    if (device)
        srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
