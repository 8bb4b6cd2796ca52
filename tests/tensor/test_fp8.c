/* test_fp8.c — FP8 e4m3 cast and 128x128 block quantization against an
 * independent reference written here from ../shared/conversion.md section
 * 4, and the vector paths against the scalar one byte for byte. */
#include <check.h>
#include <math.h>

#include "refit/fp8.h"
#include "refit/status.h"
#include "tensor_test.h"
#include "../check_run.h"

/* --- the reference, deliberately naive -------------------------------- */

/* Value of a positive e4m3 code (0..0x7e), from the format's definition. */
static double ref_val(int c)
{
    int e = c >> 3, m = c & 7;
    return e == 0 ? m / 512.0 : (1.0 + m / 8.0) * ldexp(1.0, e - 7);
}

/* Nearest code, ties to the even code; NaN above 464 (where nearest-even
 * rounds past 448; 464 itself ties to 448) and for NaN; no infinities. */
static uint8_t ref_e4m3(float v)
{
    uint8_t sign = signbit(v) ? 0x80 : 0;
    double a = fabs((double)v);
    if (isnan(v) || a > 464.0)
        return 0x7f | sign;
    int lo = 0, hi = 0x7e; /* largest code with value <= a */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (ref_val(mid) <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    int c = lo;
    if (c < 0x7e) {
        double d0 = a - ref_val(c), d1 = ref_val(c + 1) - a;
        if (d1 < d0 || (d1 == d0 && (c & 1)))
            c++;
    }
    return (uint8_t)(c | sign);
}

static float bf(uint16_t v)
{
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Zero-pad to whole blocks, take amax in fp32, scale per rule, cast, crop:
 * the reference procedure, spelled out. */
static void ref_quant(const float *x, size_t rows, size_t cols, size_t stride, int deepgemm,
                      float floor, uint8_t *q, float *sc)
{
    size_t nrb = (rows + 127) / 128, ncb = (cols + 127) / 128, pc = ncb * 128;
    float *pad = calloc(nrb * 128 * pc, sizeof(float));
    uint8_t *qp = calloc(nrb * 128 * pc, 1);
    ck_assert_ptr_nonnull(pad);
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++)
            pad[r * pc + c] = x[r * stride + c];
    for (size_t br = 0; br < nrb; br++)
        for (size_t bc = 0; bc < ncb; bc++) {
            float amax = 0.0f;
            for (size_t i = 0; i < 128; i++)
                for (size_t j = 0; j < 128; j++)
                    amax = fmaxf(amax, fabsf(pad[(br * 128 + i) * pc + bc * 128 + j]));
            float s, inv = 0;
            if (deepgemm) {
                s = fmaxf(amax, floor) / 448.0f;
                inv = 1.0f / s;
            } else {
                s = fmaxf(amax / 448.0f, floor);
            }
            sc[br * ncb + bc] = s;
            for (size_t i = 0; i < 128; i++)
                for (size_t j = 0; j < 128; j++) {
                    size_t k = (br * 128 + i) * pc + bc * 128 + j;
                    float y = deepgemm ? pad[k] * inv : fminf(fmaxf(pad[k] / s, -448.0f), 448.0f);
                    qp[k] = ref_e4m3(y);
                }
        }
    for (size_t r = 0; r < rows; r++)
        memcpy(q + r * cols, qp + r * pc, cols);
    free(pad);
    free(qp);
}

/* --- test data -------------------------------------------------------- */

/* bf16 matrix with the gap between cols and stride filled with NaN (a
 * kernel that reads past its columns fails), blocks of very different
 * magnitudes, zeros, -0, subnormals, bf16 max, and a block whose amax is
 * 448 (s = 1 for both rules) full of e4m3 rounding ties. */
static uint16_t *gen_bf16(size_t rows, size_t cols, size_t stride, uint64_t seed)
{
    uint16_t *m = malloc((rows * stride + 1) * sizeof(uint16_t));
    uint64_t s = seed * 2654435761u + 1;
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < stride; c++) {
            uint16_t v;
            size_t blk = (r / 128) * 7 + c / 128;
            if (c >= cols) {
                v = 0x7fc1;
            } else if (blk % 5 == 3) {
                /* ties: 4 mantissa bits, magnitudes up to 448 */
                int e = (int)(tt_rand(&s) % 16);
                float f = ldexpf(1.0f + (float)(tt_rand(&s) % 16) / 16.0f, e - 9);
                uint32_t u;
                memcpy(&u, &f, 4);
                v = (uint16_t)(u >> 16);
                if (r % 128 == 0 && c % 128 == 0)
                    v = 0x43e0; /* 448 */
            } else {
                /* exponent centred per block, from ~1e-38 to ~1e38 */
                int e = (int)((blk * 37) % 250) + 2 + (int)(tt_rand(&s) % 9) - 4;
                e = e < 0 ? 0 : (e > 254 ? 254 : e);
                v = (uint16_t)((e << 7) | (tt_rand(&s) & 0x7f));
                uint64_t k = tt_rand(&s) % 64;
                if (k == 0)
                    v = 0;
                else if (k == 1)
                    v = 0x0001; /* smallest subnormal */
                else if (k == 2 && blk % 4 == 1)
                    v = 0x7f7f; /* bf16 max */
                if (blk % 11 == 10)
                    v = 0; /* an all-zero block: the floor decides s */
            }
            if (tt_rand(&s) & 1)
                v |= 0x8000;
            m[r * stride + c] = v;
        }
    return m;
}

static float *to_f32(const uint16_t *b, size_t n)
{
    float *f = malloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++)
        f[i] = bf(b[i]);
    return f;
}

static const enum refit_fp8_impl impls[] = {REFIT_FP8_IMPL_SCALAR, REFIT_FP8_IMPL_AVX2,
                                            REFIT_FP8_IMPL_AVX512, REFIT_FP8_IMPL_AUTO};

static void check_against_ref(size_t rows, size_t cols, size_t stride, int deepgemm, double floor,
                              uint64_t seed)
{
    uint16_t *x = gen_bf16(rows, cols, stride, seed);
    float *xf = to_f32(x, rows * stride);
    size_t ns = ((rows + 127) / 128) * ((cols + 127) / 128);
    uint8_t *want = malloc(rows * cols + 1), *got = malloc(rows * cols + 1);
    float *wsc = malloc(ns * 4), *gsc = malloc(ns * 4);
    float ffloor = (float)(floor > 0 ? floor : (deepgemm ? 1e-4 : 1e-12));
    ref_quant(xf, rows, cols, stride, deepgemm, ffloor, want, wsc);
    for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
        if (!refit_fp8_impl_available(impls[i]))
            continue;
        struct refit_fp8_params p = {deepgemm ? REFIT_FP8_DEEPGEMM : REFIT_FP8_TRAINER, floor,
                                     impls[i]};
        for (int in = 0; in < 2; in++) {
            memset(got, 0xaa, rows * cols);
            int rc = in ? refit_fp8_quantize_f32(xf, rows, cols, stride, got, gsc, &p)
                        : refit_fp8_quantize_bf16(x, rows, cols, stride, got, gsc, &p);
            ck_assert_msg(rc == 0, "%zux%zu %s: %s", rows, cols, refit_fp8_impl_name(impls[i]),
                          refit_error_message());
            /* if + ck_abort: a passing ck_assert costs a message to the
             * parent in fork mode, too slow for every element. */
            for (size_t k = 0; k < ns; k++)
                if (memcmp(&wsc[k], &gsc[k], 4) != 0)
                    ck_abort_msg(
                              "%zux%zu/%zu %s %s in=%s: scale %zu: %a != %a", rows, cols, stride,
                              deepgemm ? "deepgemm" : "trainer", refit_fp8_impl_name(impls[i]),
                              in ? "f32" : "bf16", k, (double)gsc[k], (double)wsc[k]);
            for (size_t k = 0; k < rows * cols; k++)
                if (want[k] != got[k])
                    ck_abort_msg(
                              "%zux%zu/%zu %s %s in=%s: [%zu,%zu] x=%a: got 0x%02x want 0x%02x",
                              rows, cols, stride, deepgemm ? "deepgemm" : "trainer",
                              refit_fp8_impl_name(impls[i]), in ? "f32" : "bf16", k / cols,
                              k % cols, (double)xf[(k / cols) * stride + k % cols], got[k],
                              want[k]);
        }
    }
    free(x);
    free(xf);
    free(want);
    free(got);
    free(wsc);
    free(gsc);
}

/* --- the cast --------------------------------------------------------- */

START_TEST(cast_known_values)
{
    ck_assert_uint_eq(refit_f32_to_e4m3(0.0f), 0x00);
    ck_assert_uint_eq(refit_f32_to_e4m3(-0.0f), 0x80);
    ck_assert_uint_eq(refit_f32_to_e4m3(1.0f), 0x38);
    ck_assert_uint_eq(refit_f32_to_e4m3(448.0f), 0x7e);
    ck_assert_uint_eq(refit_f32_to_e4m3(463.99f), 0x7e);
    ck_assert_uint_eq(refit_f32_to_e4m3(464.0f), 0x7e); /* tie, to even 448 */
    ck_assert_uint_eq(refit_f32_to_e4m3(-464.0f), 0xfe);
    ck_assert_uint_eq(refit_f32_to_e4m3(nextafterf(464.0f, 500.0f)), 0x7f);
    ck_assert_uint_eq(refit_f32_to_e4m3(-466.0f), 0xff);
    ck_assert_uint_eq(refit_f32_to_e4m3(479.9f), 0x7f);
    ck_assert_uint_eq(refit_f32_to_e4m3(480.0f), 0x7f);
    ck_assert_uint_eq(refit_f32_to_e4m3(1e30f), 0x7f);
    ck_assert_uint_eq(refit_f32_to_e4m3(INFINITY), 0x7f);
    ck_assert_uint_eq(refit_f32_to_e4m3(-INFINITY), 0xff);
    ck_assert_uint_eq(refit_f32_to_e4m3(NAN), 0x7f);
    ck_assert_uint_eq(refit_f32_to_e4m3(ldexpf(1, -9)), 0x01);  /* smallest subnormal */
    ck_assert_uint_eq(refit_f32_to_e4m3(ldexpf(1, -10)), 0x00); /* tie, to even 0 */
    ck_assert_uint_eq(refit_f32_to_e4m3(ldexpf(3, -10)), 0x02); /* tie 1|2, to even 2 */
    ck_assert_uint_eq(refit_f32_to_e4m3(ldexpf(1, -6)), 0x08);  /* smallest normal */
    ck_assert_uint_eq(refit_f32_to_e4m3(1.0625f), 0x38);        /* tie 1|1.125, to even */
    ck_assert_uint_eq(refit_f32_to_e4m3(1.1875f), 0x3a);        /* tie 1.125|1.25, to even */
    ck_assert_uint_eq(refit_f32_to_e4m3(ldexpf(1, -100)), 0x00);
}
END_TEST

START_TEST(cast_matches_reference_on_random_floats)
{
    uint64_t s = 7;
    for (int i = 0; i < 400000; i++) {
        uint32_t u = (uint32_t)tt_rand(&s);
        if (i & 1) /* concentrate on e4m3's range: exponents 2^-12 .. 2^9 */
            u = (u & 0x807fffffu) | ((uint32_t)(115 + tt_rand(&s) % 22) << 23);
        float f;
        memcpy(&f, &u, 4);
        if (refit_f32_to_e4m3(f) != ref_e4m3(f))
            ck_abort_msg("%a (0x%08x): 0x%02x != 0x%02x",
                      (double)f, u, refit_f32_to_e4m3(f), ref_e4m3(f));
    }
}
END_TEST

START_TEST(e4m3_decode_round_trips)
{
    for (int c = 0; c < 256; c++) {
        float f = refit_e4m3_to_f32((uint8_t)c);
        if ((c & 0x7f) == 0x7f) {
            ck_assert(isnan(f));
            continue;
        }
        ck_assert_msg(refit_f32_to_e4m3(f) == c, "code 0x%02x -> %a", c, (double)f);
        ck_assert(fabs(fabs(f) - ref_val(c & 0x7f)) == 0);
    }
    ck_assert(refit_e4m3_to_f32(0x7e) == 448.0f);
}
END_TEST

START_TEST(bf16_conversions)
{
    ck_assert_uint_eq(refit_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(refit_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);     /* tie to even */
    ck_assert_uint_eq(refit_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82); /* tie to even */
    ck_assert_uint_eq(refit_f32_to_bf16(1.0f + ldexpf(1, -8) + ldexpf(1, -20)), 0x3f81);
    ck_assert(isnan(refit_bf16_to_f32(refit_f32_to_bf16(NAN))));
    ck_assert_uint_eq(refit_f32_to_bf16(INFINITY), 0x7f80);
    for (uint32_t v = 0; v < 65536; v++) {
        float f = refit_bf16_to_f32((uint16_t)v);
        if (!isnan(f) && refit_f32_to_bf16(f) != v)
            ck_abort_msg("bf16 0x%04x does not round-trip", v);
    }
    uint16_t b[5] = {0x3f80, 0xbf80, 0x0001, 0x7f7f, 0x8000}, back[5];
    float f[5];
    refit_bf16_to_f32_n(b, f, 5);
    refit_f32_to_bf16_n(f, back, 5);
    ck_assert_mem_eq(b, back, sizeof(b));
    ck_assert(f[1] == -1.0f);
}
END_TEST

/* --- block quantization ----------------------------------------------- */

static const size_t shapes[][2] = {{1, 1}, {127, 129}, {300, 257}, {128, 128}, {1, 300}, {300, 1},
                                   {256, 384}};

START_TEST(quant_reference_trainer)
{
    size_t r = shapes[_i][0], c = shapes[_i][1];
    check_against_ref(r, c, c, 0, -1, 10 + _i);
    check_against_ref(r, c, c + 37, 0, -1, 20 + _i);
    check_against_ref(r, c, c + 3, 0, 0.25, 30 + _i); /* a floor that bites */
}
END_TEST

START_TEST(quant_reference_deepgemm)
{
    size_t r = shapes[_i][0], c = shapes[_i][1];
    check_against_ref(r, c, c, 1, -1, 40 + _i);
    check_against_ref(r, c, c + 37, 1, -1, 50 + _i);
    check_against_ref(r, c, c + 1, 1, 3.0, 60 + _i);
}
END_TEST

START_TEST(quant_floor_and_zero_block)
{
    uint16_t z[4] = {0, 0x8000, 0, 0};
    uint8_t q[4];
    float s;
    struct refit_fp8_params p = {REFIT_FP8_TRAINER, 0, REFIT_FP8_IMPL_AUTO}; /* 0: default */
    ck_assert_int_eq(refit_fp8_quantize_bf16(z, 2, 2, 2, q, &s, &p), 0);
    ck_assert(s == (float)1e-12);
    ck_assert_uint_eq(q[1], 0x80);
    p.rule = REFIT_FP8_DEEPGEMM;
    ck_assert_int_eq(refit_fp8_quantize_bf16(z, 2, 2, 2, q, &s, &p), 0);
    ck_assert(s == (float)1e-4 / 448.0f);
    p.floor = 2.0;
    ck_assert_int_eq(refit_fp8_quantize_bf16(z, 2, 2, 2, q, &s, &p), 0);
    ck_assert(s == 2.0f / 448.0f);
    ck_assert_int_eq(refit_fp8_quantize_bf16(z, 2, 2, 2, q, &s, NULL), 0); /* NULL: trainer */
    ck_assert(s == (float)1e-12);
    /* x / s and x * (1/s) differ in the last bit for some inputs (found by
     * search): with amax 0x3a04 and x 0x3204 the trainer rule gives 0x04 and
     * deepgemm 0x03, on every path, so neither rule borrows the other's op. */
    uint16_t row[64];
    uint8_t qr[64];
    row[0] = 0x3a04;
    for (int i = 1; i < 64; i++)
        row[i] = 0x3204;
    for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
        if (!refit_fp8_impl_available(impls[i]))
            continue;
        for (int rule = 0; rule < 2; rule++) {
            struct refit_fp8_params pr = {rule, -1, impls[i]};
            ck_assert_int_eq(refit_fp8_quantize_bf16(row, 1, 64, 64, qr, &s, &pr), 0);
            for (int k = 1; k < 64; k++)
                ck_assert_msg(qr[k] == (rule ? 0x03 : 0x04), "%s rule %d: [%d] = 0x%02x",
                              refit_fp8_impl_name(impls[i]), rule, k, qr[k]);
        }
    }
}
END_TEST

START_TEST(quant_vector_paths_equal_scalar)
{
    uint64_t s = 99;
    for (int t = 0; t < 40; t++) {
        size_t rows = 1 + tt_rand(&s) % 300, cols = 1 + tt_rand(&s) % 400;
        size_t stride = cols + (t % 3 ? tt_rand(&s) % 50 : 0);
        int deepgemm = t & 1;
        double floor = t % 4 == 2 ? tt_unif(&s) * 4 : -1;
        uint16_t *x = gen_bf16(rows, cols, stride, 1000 + t);
        float *xf = to_f32(x, rows * stride);
        /* fp32 input with full 24-bit mantissas and fp32 subnormals */
        float *xr = malloc(rows * stride * sizeof(float) + 4);
        for (size_t i = 0; i < rows * stride; i++) {
            uint32_t e = i % 5 ? (uint32_t)(tt_rand(&s) % 255) : 0; /* no Inf/NaN */
            uint32_t u = ((uint32_t)tt_rand(&s) & 0x807fffffu) | e << 23;
            memcpy(&xr[i], &u, 4);
            if (i % stride >= cols)
                xr[i] = NAN;
        }
        size_t ns = ((rows + 127) / 128) * ((cols + 127) / 128);
        uint8_t *q0 = malloc(rows * cols), *q1 = malloc(rows * cols);
        float *s0 = malloc(ns * 4), *s1 = malloc(ns * 4);
        for (int in = 0; in < 3; in++)
            for (size_t i = 1; i < 3; i++) {
                if (!refit_fp8_impl_available(impls[i]))
                    continue;
                struct refit_fp8_params p0 = {deepgemm, floor, REFIT_FP8_IMPL_SCALAR};
                struct refit_fp8_params p1 = {deepgemm, floor, impls[i]};
                int r0, r1;
                if (in == 0) {
                    r0 = refit_fp8_quantize_bf16(x, rows, cols, stride, q0, s0, &p0);
                    r1 = refit_fp8_quantize_bf16(x, rows, cols, stride, q1, s1, &p1);
                } else {
                    const float *src = in == 1 ? xf : xr;
                    r0 = refit_fp8_quantize_f32(src, rows, cols, stride, q0, s0, &p0);
                    r1 = refit_fp8_quantize_f32(src, rows, cols, stride, q1, s1, &p1);
                }
                ck_assert_int_eq(r0, 0);
                ck_assert_int_eq(r1, 0);
                ck_assert_msg(!memcmp(s0, s1, ns * 4), "scales differ %s %zux%zu",
                              refit_fp8_impl_name(impls[i]), rows, cols);
                ck_assert_msg(!memcmp(q0, q1, rows * cols), "bytes differ %s %zux%zu/%zu in=%d",
                              refit_fp8_impl_name(impls[i]), rows, cols, stride, in);
            }
        free(x);
        free(xf);
        free(xr);
        free(q0);
        free(q1);
        free(s0);
        free(s1);
    }
}
END_TEST

/* Subnormal fp32 blocks with a floor below them: s = amax/448 is itself
 * subnormal and inexact, so x / s passes 464 and only the trainer's clamp
 * keeps it at 448.  deepgemm refuses a floor whose 1/s overflows; at the
 * smallest floor it accepts, no NaN code appears.  Every path must follow
 * the definition there too. */
START_TEST(quant_subnormal_blocks_tiny_floor)
{
    const size_t rows = 3, cols = 200;
    float x[3 * 200];
    uint64_t st = 17;
    for (size_t i = 0; i < rows * cols; i++) {
        uint32_t u = ((uint32_t)tt_rand(&st) & 0x801fffffu) | (i % 7 == 0 ? 0x00600000u : 0);
        if (i % cols >= 128) /* block 1: amax 639 x 2^-149, s = 2^-149 after rounding */
            u = (u & 0x80000000u) | (i % cols == 150 ? 0x27fu : (uint32_t)(tt_rand(&st) % 0x280));
        memcpy(&x[i], &u, 4);
    }
    int beyond = 0; /* x / s past 464 in block 1: the trainer's clamp matters */
    for (size_t i = 0; i < rows * cols; i++)
        beyond += i % cols >= 128 && fabsf(x[i] / ldexpf(1, -149)) > 464.0f;
    ck_assert_int_gt(beyond, 0);
    uint8_t want[3 * 200], got[3 * 200];
    float ws[2], gs[2];
    const double floors[2] = {1e-45, 1.4e-36};
    for (int rule = 0; rule < 2; rule++) {
        ref_quant(x, rows, cols, cols, rule, (float)floors[rule], want, ws);
        int nan_codes = 0;
        for (size_t k = 0; k < rows * cols; k++)
            nan_codes += (want[k] & 0x7f) == 0x7f;
        ck_assert_int_eq(nan_codes, 0);
        for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
            if (!refit_fp8_impl_available(impls[i]))
                continue;
            struct refit_fp8_params p = {rule, floors[rule], impls[i]};
            ck_assert_int_eq(refit_fp8_quantize_f32(x, rows, cols, cols, got, gs, &p), 0);
            ck_assert_mem_eq(gs, ws, sizeof(ws));
            for (size_t k = 0; k < rows * cols; k++)
                if (got[k] != want[k])
                    ck_abort_msg("%s rule %d [%zu]: 0x%02x, want 0x%02x",
                                 refit_fp8_impl_name(impls[i]), rule, k, got[k], want[k]);
            p.floor = 1e-37;
            if (rule == 1)
                ck_assert_int_eq(refit_fp8_quantize_f32(x, rows, cols, cols, got, gs, &p),
                                 REFIT_EINVAL);
        }
    }
}
END_TEST

START_TEST(quant_nonfinite_is_error)
{
    const uint16_t bad[] = {0x7fc0, 0xffc1, 0x7f80, 0xff80};
    const size_t rows = 300, cols = 257, stride = 260;
    uint16_t *x = gen_bf16(rows, cols, stride, 5);
    uint8_t *q = malloc(rows * cols);
    float sc[3 * 3];
    for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
        if (!refit_fp8_impl_available(impls[i]))
            continue;
        for (size_t b = 0; b < 4; b++)
            for (int rule = 0; rule < 2; rule++) {
                struct refit_fp8_params p = {rule, -1, impls[i]};
                uint16_t keep = x[290 * stride + 256];
                x[290 * stride + 256] = bad[b];
                int rc = refit_fp8_quantize_bf16(x, rows, cols, stride, q, sc, &p);
                ck_assert_int_eq(rc, REFIT_ENUMERIC);
                ck_assert_msg(strstr(refit_error_message(), "row 290, column 256") &&
                                  strstr(refit_error_message(), b < 2 ? "NaN" : "Inf"),
                              "%s", refit_error_message());
                float *xf = to_f32(x, rows * stride);
                rc = refit_fp8_quantize_f32(xf, rows, cols, stride, q, sc, &p);
                ck_assert_int_eq(rc, REFIT_ENUMERIC);
                ck_assert_ptr_nonnull(strstr(refit_error_message(), "row 290, column 256"));
                free(xf);
                x[290 * stride + 256] = keep;
            }
    }
    free(x);
    free(q);
}
END_TEST

START_TEST(quant_bad_arguments)
{
    uint16_t x[4] = {0};
    uint8_t q[4];
    float s;
    struct refit_fp8_params p = {REFIT_FP8_TRAINER, -1, REFIT_FP8_IMPL_SCALAR};
    ck_assert_int_eq(refit_fp8_quantize_bf16(x, 2, 2, 1, q, &s, &p), REFIT_EINVAL);
    p.floor = 1e39; /* overflows fp32 */
    ck_assert_int_eq(refit_fp8_quantize_bf16(x, 2, 2, 2, q, &s, &p), REFIT_EINVAL);
    p.floor = 1e-50; /* underflows fp32 */
    ck_assert_int_eq(refit_fp8_quantize_bf16(x, 2, 2, 2, q, &s, &p), REFIT_EINVAL);
    p.floor = -1;
    p.rule = (enum refit_fp8_rule)7;
    ck_assert_int_eq(refit_fp8_quantize_bf16(x, 2, 2, 2, q, &s, &p), REFIT_EINVAL);
    p.rule = REFIT_FP8_TRAINER;
    p.impl = (enum refit_fp8_impl)42;
    ck_assert_int_eq(refit_fp8_quantize_bf16(x, 2, 2, 2, q, &s, &p), REFIT_EINVAL);
    ck_assert(refit_fp8_impl_available(REFIT_FP8_IMPL_SCALAR));
    ck_assert(refit_fp8_impl_available(refit_fp8_impl_best()));
    ck_assert_int_eq(refit_fp8_quantize_bf16(NULL, 0, 0, 0, NULL, NULL, NULL), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fp8");
    TCase *tc = tcase_create("cast");
    tcase_add_test(tc, cast_known_values);
    tcase_add_test(tc, cast_matches_reference_on_random_floats);
    tcase_add_test(tc, e4m3_decode_round_trips);
    tcase_add_test(tc, bf16_conversions);
    suite_add_tcase(s, tc);
    tc = tcase_create("quantize");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, quant_reference_trainer, 0, sizeof(shapes) / sizeof(shapes[0]));
    tcase_add_loop_test(tc, quant_reference_deepgemm, 0, sizeof(shapes) / sizeof(shapes[0]));
    tcase_add_test(tc, quant_floor_and_zero_block);
    tcase_add_test(tc, quant_vector_paths_equal_scalar);
    tcase_add_test(tc, quant_subnormal_blocks_tiny_floor);
    tcase_add_test(tc, quant_nonfinite_is_error);
    tcase_add_test(tc, quant_bad_arguments);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? 1 : 0;
}
