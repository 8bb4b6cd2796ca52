/* test_delta.c — the delta codec (core/src/delta) on the host: hand-made
 * records for the format's cases, every CPU path against the format as
 * delta_ref.h writes it from the spec (same bytes) on random changes of
 * every density and size, round trips through chunks, slices of chunks and
 * whole tensors, and errors that name the tensor, chunk and segment.  The
 * fuzzer is test_delta_fuzz.c. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "../check_run.h"
#include "delta.h"
#include "delta_ref.h"
#include "delta_swar.h"
#include "refit/status.h"

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* bf16-like base bytes and a next version in which a fraction `p` of the
 * units moved: mostly by a few ulps, some (`big`) anywhere. */
static void make_pair(uint64_t *s, uint8_t *a, uint8_t *b, size_t n, double p, double big)
{
    for (size_t i = 0; i < n; i++)
        a[i] = (uint8_t)rnd(s);
    memcpy(b, a, n);
    for (size_t i = 0; i + 1 < n; i += 2) {
        if ((double)(rnd(s) >> 11) / 9007199254740992.0 >= p)
            continue;
        uint64_t r = rnd(s);
        unsigned v = ref_u16(a + i);
        if ((double)(r >> 11) / 9007199254740992.0 < big)
            v = (unsigned)(r >> 7);
        else
            v += (r & 1) ? 1u + (unsigned)(r >> 60) : 0xffffu - (unsigned)(r >> 60);
        if ((v & 0xffffu) == ref_u16(a + i))
            v++;
        b[i] = (uint8_t)v;
        b[i + 1] = (uint8_t)(v >> 8);
    }
    if (n % 2 && rnd(s) % 2)
        b[n - 1] ^= 0x40;
}

static const enum rf_delta_impl impls[] = {RF_DELTA_IMPL_SCALAR, RF_DELTA_IMPL_AVX2, RF_DELTA_IMPL_AVX512};

/* Encode with every path this CPU has; compare with the reference. */
static size_t encode_all(const uint8_t *a, const uint8_t *b, size_t n, uint8_t *out)
{
    size_t cap = (size_t)rf_delta_bound(n);
    uint8_t *want = malloc(cap + 1);
    size_t wl = ref_encode(a, b, n, want), len = 0;
    for (size_t k = 0; k < 3; k++) {
        if (!rf_delta_impl_available(impls[k]))
            continue;
        memset(out, 0xa5, cap);
        ck_assert_int_eq(rf_delta_encode(a, b, n, out, cap, &len, impls[k], NULL), 0);
        ck_assert_msg(len == wl && !memcmp(out, want, wl), "%s: %zu-byte chunk: %zu bytes, reference %zu",
                      rf_delta_impl_name(impls[k]), n, len, wl);
    }
    free(want);
    return len;
}

START_TEST(test_hand_made)
{
    /* 8 bytes (4 units), unit 2 moves by +1: BITMAP (1 + 1 bytes) beats
     * SPARSE (1 count + 1 pos + 1 diff). */
    uint8_t a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8] = {1, 2, 3, 4, 6, 6, 7, 8}, out[16];
    size_t len;
    ck_assert_int_eq(rf_delta_encode(a, b, 8, out, sizeof(out), &len, RF_DELTA_IMPL_AUTO, NULL), 0);
    const uint8_t want1[] = {0x23, 0, 0, 0, 0x04, 0x01};
    ck_assert_uint_eq(len, sizeof(want1));
    ck_assert_mem_eq(out, want1, sizeof(want1));
    /* Unchanged: empty. */
    ck_assert_int_eq(rf_delta_encode(a, a, 8, out, sizeof(out), &len, RF_DELTA_IMPL_AUTO, NULL), 0);
    ck_assert_uint_eq(len, 0);
    /* A 512-byte chunk (256 units, 2 blocks) with unit 200 -> +0x1234
     * (escaped) : SPARSE = 2 counts + pos + diff + 2 raw = 6 beats BITMAP
     * (32 + 1 + 2). */
    uint8_t c[512] = {0}, d[512] = {0}, o2[600];
    d[400] = 0x34;
    d[401] = 0x12;
    ck_assert_int_eq(rf_delta_encode(c, d, 512, o2, sizeof(o2), &len, RF_DELTA_IMPL_AUTO, NULL), 0);
    const uint8_t want2[] = {0x62, 0, 0, 0, 0, 1, 72, 0, 0x34, 0x12};
    ck_assert_uint_eq(len, sizeof(want2));
    ck_assert_mem_eq(o2, want2, sizeof(want2));
    /* Odd length: RAW. */
    uint8_t e[3] = {1, 2, 3}, f[3] = {1, 2, 4}, o3[8];
    ck_assert_int_eq(rf_delta_encode(e, f, 3, o3, sizeof(o3), &len, RF_DELTA_IMPL_AUTO, NULL), 0);
    const uint8_t want3[] = {0x31, 0, 0, 0, 1, 2, 4};
    ck_assert_uint_eq(len, sizeof(want3));
    ck_assert_mem_eq(o3, want3, sizeof(want3));
    ck_assert_int_eq(rf_delta_apply(o3, len, e, 3, NULL), 0);
    ck_assert_mem_eq(e, f, 3);
}
END_TEST

/* Sizes around every boundary of the format: units, bitmap words,
 * blocks, vector widths, segments. */
static const size_t sizes[] = {2, 3, 6, 14, 16, 62, 64, 66, 126, 128, 130, 254, 256, 258, 510, 1000, 4096,
                               4098, 65534, 65535, 65536, 65538, 65536 + 255, 131072, 200002, 262144};
static const double dens[] = {0, 1e-5, 1e-3, 0.01, 0.03, 0.08, 0.15, 0.3, 0.6, 1.0};

START_TEST(test_paths_match_reference)
{
    uint64_t s = 0x1234567 + (uint64_t)_i;
    size_t n = sizes[_i];
    uint8_t *a = malloc(n), *b = malloc(n), *out = malloc(rf_delta_bound(n) + 1), *dst = malloc(n);
    for (size_t di = 0; di < sizeof(dens) / sizeof(dens[0]); di++)
        for (int bigi = 0; bigi < 3; bigi++) {
            make_pair(&s, a, b, n, dens[di], bigi == 0 ? 0 : bigi == 1 ? 0.02 : 0.9);
            struct rf_delta_stats st = {0};
            size_t len = encode_all(a, b, n, out), l2;
            ck_assert_int_eq(rf_delta_encode(a, b, n, out, rf_delta_bound(n), &l2, RF_DELTA_IMPL_AUTO, &st), 0);
            ck_assert_uint_eq(st.in_bytes, n);
            ck_assert_uint_eq(st.out_bytes, len);
            ck_assert_uint_le(len, rf_delta_bound(n));
            memcpy(dst, a, n);
            ck_assert_int_eq(rf_delta_apply(out, len, dst, n, NULL), 0);
            ck_assert_mem_eq(dst, b, n);
        }
    free(a);
    free(b);
    free(out);
    free(dst);
}
END_TEST

START_TEST(test_ranges)
{
    uint64_t s = 99;
    size_t n = 3 * 65536 + 1000;
    uint8_t *a = malloc(n), *b = malloc(n), *out = malloc(rf_delta_bound(n)), *dst = malloc(n);
    for (int it = 0; it < 200; it++) {
        make_pair(&s, a, b, n, it % 2 ? 0.02 : 0.4, 0.05);
        size_t len;
        ck_assert_int_eq(rf_delta_encode(a, b, n, out, rf_delta_bound(n), &len, RF_DELTA_IMPL_AUTO, NULL), 0);
        size_t lo = (size_t)(rnd(&s) % n) & ~(size_t)1, hi = lo + (size_t)(rnd(&s) % (n - lo + 1));
        hi &= ~(size_t)1;
        uint8_t *slice = malloc(hi - lo + 1);
        memcpy(slice, a + lo, hi - lo);
        ck_assert_int_eq(rf_delta_apply_range(out, len, n, lo, hi, slice, NULL), 0);
        ck_assert_mem_eq(slice, b + lo, hi - lo);
        free(slice);
    }
    /* A slice may end at an odd chunk end; may not split a unit elsewhere. */
    uint8_t x[5] = {1, 2, 3, 4, 5}, y[5] = {1, 2, 3, 9, 6}, o[16], z[4];
    size_t len;
    ck_assert_int_eq(rf_delta_encode(x, y, 5, o, sizeof(o), &len, RF_DELTA_IMPL_AUTO, NULL), 0);
    memcpy(z, x + 2, 3);
    ck_assert_int_eq(rf_delta_apply_range(o, len, 5, 2, 5, z, NULL), 0);
    ck_assert_mem_eq(z, y + 2, 3);
    ck_assert_int_eq(rf_delta_apply_range(o, len, 5, 1, 4, z, NULL), REFIT_EINVAL);
    ck_assert_int_eq(rf_delta_apply_range(o, len, 5, 2, 6, z, NULL), REFIT_EINVAL);
    free(a);
    free(b);
    free(out);
    free(dst);
}
END_TEST

START_TEST(test_tensor)
{
    uint64_t s = 7;
    const uint64_t nbytes = 1000 * 1536 + 512, chunk = 32 * 1536; /* chunk_rows 32 of 768 bf16 */
    uint8_t *a = malloc(nbytes), *b = malloc(nbytes), *dst = malloc(nbytes);
    uint64_t nc = rf_delta_tensor_chunks(nbytes, chunk), bound = rf_delta_tensor_bound(nbytes, chunk);
    ck_assert_uint_eq(nc, 32);
    uint8_t *out = malloc(bound);
    uint32_t *lens = malloc(nc * sizeof(uint32_t));
    make_pair(&s, a, b, nbytes, 0.01, 0.01);
    memcpy(b + 5 * chunk, a + 5 * chunk, chunk); /* an unchanged chunk */
    size_t len;
    struct rf_delta_stats st = {0};
    ck_assert_int_eq(rf_delta_encode_tensor(a, b, nbytes, chunk, out, bound, lens, &len, RF_DELTA_IMPL_AUTO, &st), 0);
    ck_assert_uint_eq(lens[5], 0);
    ck_assert_uint_lt(len, nbytes / 10);
    ck_assert_uint_eq(st.in_bytes, nbytes);
    memcpy(dst, a, nbytes);
    ck_assert_int_eq(rf_delta_apply_tensor(out, len, lens, nbytes, chunk, dst, "w"), 0);
    ck_assert_mem_eq(dst, b, nbytes);
    /* A chunk length that runs past the delta, or a delta with bytes left
     * over: refused before anything is written. */
    memcpy(dst, a, nbytes);
    lens[nc - 1] += 1;
    ck_assert_int_eq(rf_delta_apply_tensor(out, len, lens, nbytes, chunk, dst, "w"), REFIT_EPROTO);
    lens[nc - 1] -= 1;
    ck_assert_int_eq(rf_delta_apply_tensor(out, len + 1, lens, nbytes, chunk, dst, "w"), REFIT_EPROTO);
    ck_assert_mem_eq(dst, a, nbytes);
    ck_assert_int_eq(rf_delta_encode_tensor(a, b, nbytes, chunk, out, bound - 1, lens, &len, RF_DELTA_IMPL_AUTO,
                                            NULL), REFIT_EINVAL);
    free(a);
    free(b);
    free(dst);
    free(out);
    free(lens);
}
END_TEST

/* The error names the tensor, the chunk and the segment, and leaves the
 * destination as it was. */
START_TEST(test_errors_name_chunk)
{
    uint64_t s = 5;
    size_t n = 2 * 65536;
    uint8_t *a = malloc(n), *b = malloc(n), *out = malloc(rf_delta_bound(n)), *dst = malloc(n);
    make_pair(&s, a, b, n, 0.01, 0);
    size_t len;
    ck_assert_int_eq(rf_delta_encode(a, b, n, out, rf_delta_bound(n), &len, RF_DELTA_IMPL_AUTO, NULL), 0);
    /* the second record's first count: one more than its positions allow */
    size_t second = 4 + ((size_t)ref_u16(out) | (size_t)ref_u16(out + 2) << 16) / 16;
    out[second + 4] = 129;
    memcpy(dst, a, n);
    struct rf_delta_where w = {"model.layers.3.mlp.linear_fc1.weight", 41};
    ck_assert_int_eq(rf_delta_apply(out, len, dst, n, &w), REFIT_EPROTO);
    const char *m = refit_error_message();
    ck_assert_msg(strstr(m, "model.layers.3.mlp.linear_fc1.weight") && strstr(m, "chunk 41") &&
                      strstr(m, "segment 1"), "%s", m);
    ck_assert_mem_eq(dst, a, n);
    ck_assert_int_eq(rf_delta_apply(out, len - 1, dst, n, &w), REFIT_EPROTO);
    ck_assert_int_eq(rf_delta_apply(out, 3, dst, n, &w), REFIT_EPROTO);
    ck_assert_mem_eq(dst, a, n);
    /* too little room, too large a chunk */
    ck_assert_int_eq(rf_delta_encode(a, b, n, out, rf_delta_bound(n) - 1, &len, RF_DELTA_IMPL_AUTO, NULL),
                     REFIT_EINVAL);
    ck_assert_int_eq(rf_delta_check(out, 8, (size_t)RF_DELTA_MAX_CHUNK + 2, NULL), REFIT_ERANGE);
    free(a);
    free(b);
    free(out);
    free(dst);
}
END_TEST

/* The bound is input + one 4-byte header per 64 KiB segment (RAW is taken
 * over anything larger), and it is reached: every unit changed by more
 * than an int8 (all escapes) makes every segment RAW.  Encoded into an
 * allocation of exactly the bound (a byte past it is a sanitizer error),
 * whole chunks and whole tensors of awkward sizes; every impl. */
START_TEST(test_bound_reached_never_passed)
{
    static const uint64_t nb[] = {1, 2, 65535, 65536, 65537, 3 * 65536 + 10, 1000 * 1536 + 512};
    static const uint64_t cb[] = {2, 1024, 65536, 32 * 1536, 150000};
    for (size_t i = 0; i < sizeof(nb) / sizeof(nb[0]); i++) {
        uint64_t n = nb[i], segs = (n + 65535) / 65536;
        ck_assert_uint_eq(rf_delta_bound(n), n + 4 * segs);
        uint8_t *a = malloc(n), *b = malloc(n), *dst = malloc(n);
        for (uint64_t k = 0; k < n; k++) {
            a[k] = (uint8_t)(k * 7 + 3);
            b[k] = (uint8_t)(a[k] ^ 0x80); /* every unit moves by 0x8080 (or 0x80): escapes */
        }
        for (int impl = RF_DELTA_IMPL_SCALAR; impl <= RF_DELTA_IMPL_AVX512; impl++) {
            if (!rf_delta_impl_available((enum rf_delta_impl)impl) || n > 65536 * 4)
                continue;
            uint8_t *out = malloc(rf_delta_bound(n));
            size_t len = 0;
            ck_assert_int_eq(rf_delta_encode(a, b, n, out, rf_delta_bound(n), &len, (enum rf_delta_impl)impl, NULL),
                             0);
            ck_assert_uint_eq(len, rf_delta_bound(n));
            memcpy(dst, a, n);
            ck_assert_int_eq(rf_delta_apply(out, len, dst, n, NULL), 0);
            ck_assert_mem_eq(dst, b, n);
            free(out);
        }
        for (size_t j = 0; j < sizeof(cb) / sizeof(cb[0]); j++) {
            uint64_t c = cb[j], nc = rf_delta_tensor_chunks(n, c), full = n / c, last = n % c;
            uint64_t segs_t = full * ((c + 65535) / 65536) + (last + 65535) / 65536;
            uint64_t bound = rf_delta_tensor_bound(n, c);
            ck_assert_uint_eq(bound, n + 4 * segs_t);
            uint8_t *out = malloc(bound ? bound : 1);
            uint32_t *lens = malloc(nc * sizeof(uint32_t));
            size_t len = 0;
            ck_assert_int_eq(rf_delta_encode_tensor(a, b, n, c, out, bound, lens, &len, RF_DELTA_IMPL_AUTO, NULL), 0);
            ck_assert_uint_eq(len, bound);
            memcpy(dst, a, n);
            ck_assert_int_eq(rf_delta_apply_tensor(out, len, lens, n, c, dst, "t"), 0);
            ck_assert_mem_eq(dst, b, n);
            free(out);
            free(lens);
        }
        free(a);
        free(b);
        free(dst);
    }
}
END_TEST

/* One unit by the rule of delta_ref.h: changed, escaped, difference byte. */
static void unit_rule(unsigned x, unsigned y, uint32_t *m, uint32_t *em, uint32_t *db)
{
    int d = (int)(int16_t)(uint16_t)(y - x);
    *m = x != y;
    *em = x != y && (d < -128 || d > 127);
    *db = x != y && !*em ? (uint8_t)d : 0;
}

/* The CUDA encoder's two units a word (delta_swar.h) against the rule:
 * every pair of 48 edge values (0, ±1, int8 and int16 limits, 0x8000,
 * ...) and of their neighbours in each lane with the other lane every
 * edge too, then random words, half of them near each other. */
START_TEST(test_swar_word)
{
    static const unsigned edge[] = {0,      1,      2,      0x7e,   0x7f,   0x80,   0x81,   0xfe,
                                    0xff,   0x100,  0x101,  0x17f,  0x180,  0x7fff, 0x8000, 0x8001,
                                    0x807f, 0x8080, 0xff00, 0xff7f, 0xff80, 0xff81, 0xfffe, 0xffff};
    const size_t ne = sizeof(edge) / sizeof(edge[0]);
    uint64_t s = 0x5a5a;
    long n = 0;
    for (size_t i = 0; i < 2 * ne * 2 * ne * ne; i++) {
        size_t r = i;
        unsigned x0 = edge[r % ne] ^ (unsigned)(r / ne % 2 ? 0x4000 : 0);
        r /= 2 * ne;
        unsigned y0 = edge[r % ne] ^ (unsigned)(r / ne % 2 ? 0x4000 : 0);
        r /= 2 * ne;
        unsigned x1 = edge[r % ne], y1 = edge[(r + i) % ne];
        for (int swap = 0; swap < 2; swap++) {
            unsigned xl = swap ? x1 : x0, yl = swap ? y1 : y0, xh = swap ? x0 : x1, yh = swap ? y0 : y1;
            uint32_t m, em, db, m0, e0, b0, m1, e1, b1;
            rf_swar_diff2(xl | xh << 16, yl | yh << 16, &m, &em, &db);
            unit_rule(xl, yl, &m0, &e0, &b0);
            unit_rule(xh, yh, &m1, &e1, &b1);
            ck_assert_msg(m == (m0 | m1 << 1) && em == (e0 | e1 << 1) && db == (b0 | b1 << 8),
                          "x %04x %04x y %04x %04x: %x %x %04x, rule %x %x %04x", xl, xh, yl, yh, m, em, db,
                          m0 | m1 << 1, e0 | e1 << 1, b0 | b1 << 8);
            n++;
        }
    }
    for (int i = 0; i < 1000000; i++) {
        uint64_t r = rnd(&s);
        uint32_t x = (uint32_t)r, y = (uint32_t)(r >> 32);
        if (i & 1) /* near: each lane moved by an int8-or-so amount */
            y = ((x & 0xffffu) + (uint32_t)(int)(int8_t)(r >> 32) * (i & 2 ? 1u : 3u)) & 0xffffu;
        if (i & 1)
            y |= ((x >> 16) + (uint32_t)(int)(int8_t)(r >> 40) * (i & 4 ? 1u : 2u)) << 16;
        uint32_t m, em, db, m0, e0, b0, m1, e1, b1;
        rf_swar_diff2(x, y, &m, &em, &db);
        unit_rule(x & 0xffffu, y & 0xffffu, &m0, &e0, &b0);
        unit_rule(x >> 16, y >> 16, &m1, &e1, &b1);
        ck_assert_msg(m == (m0 | m1 << 1) && em == (e0 | e1 << 1) && db == (b0 | b1 << 8), "x %08x y %08x", x, y);
    }
    ck_assert_int_gt(n, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("delta");
    TCase *tc = tcase_create("codec");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_hand_made);
    tcase_add_loop_test(tc, test_paths_match_reference, 0, (int)(sizeof(sizes) / sizeof(sizes[0])));
    tcase_add_test(tc, test_ranges);
    tcase_add_test(tc, test_tensor);
    tcase_add_test(tc, test_errors_name_chunk);
    tcase_add_test(tc, test_bound_reached_never_passed);
    tcase_add_test(tc, test_swar_word);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_ENV) ? 1 : 0;
}
