/* test_delta_fuzz.c — a structural fuzzer for the delta decoder: deltas
 * made by the encoder and then mutated (bit flips, header lengths and tags,
 * block counts, positions, truncation, extension, records dropped or
 * repeated), and deltas built record by record from the grammar with
 * fields that are right, off by one or random.  Each sits in a malloc of
 * exactly its length and each destination in one of exactly the chunk's
 * length, so under ASan a read or write past either is a crash.  Every
 * delta must be refused with REFIT_EPROTO naming its chunk and leave the
 * destination untouched, or be applied exactly as delta_ref.h's plain
 * decoder applies it (whole chunk and a slice).  Bounded by iterations and
 * by seconds (ASan is slower); the seed is printed for a failure. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../check_run.h"
#include "delta.h"
#include "delta_ref.h"
#include "refit/status.h"

#define ITERATIONS 40000
#define MAX_SECONDS 6.0

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static const size_t sizes[] = {2, 5, 16, 130, 256, 258, 1024, 4098, 65536, 65540, 131075};

struct buf {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct buf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void put8(struct buf *b, uint8_t v)
{
    put(b, &v, 1);
}

static void put32(struct buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}

/* "Usually right": the right value, sometimes one off, rarely random. */
static size_t skew(uint64_t *s, size_t right)
{
    uint64_t r = rnd(s) % 64;
    return r < 56 ? right : r < 60 ? right + 1 : r < 62 ? (right ? right - 1 : 0) : (size_t)(rnd(s) % 300);
}

/* One record from the grammar for an n-byte segment. */
static void gen_record(uint64_t *s, struct buf *d, size_t n)
{
    struct buf p = {0};
    unsigned tag = (unsigned)(rnd(s) % 9);
    tag = tag < 8 ? tag % 4 : (unsigned)(rnd(s) % 16);
    size_t nu = n / 2, nblk = (nu + 127) / 128, nbm = (nu + 7) / 8, k = 0, e = 0;
    if (tag == RF_DELTA_RAW)
        for (size_t i = 0; i < skew(s, n); i++)
            put8(&p, (uint8_t)rnd(s));
    if (tag == RF_DELTA_SPARSE) {
        uint8_t *cnt = calloc(nblk + 1, 1);
        for (size_t bl = 0; bl < nblk; bl++) {
            size_t ub = nu - bl * 128 < 128 ? nu - bl * 128 : 128;
            cnt[bl] = (uint8_t)(rnd(s) % 4 ? rnd(s) % (ub < 6 ? ub + 1 : 6) : skew(s, ub));
            k += cnt[bl];
            put8(&p, cnt[bl]);
        }
        for (size_t bl = 0; bl < nblk; bl++) { /* increasing positions, sometimes not */
            size_t ub = nu - bl * 128 < 128 ? nu - bl * 128 : 128;
            for (unsigned j = 0; j < cnt[bl]; j++)
                put8(&p, (uint8_t)(rnd(s) % 32 ? (cnt[bl] <= ub ? j * (ub / (cnt[bl] ? cnt[bl] : 1)) : j)
                                               : rnd(s) % 256));
        }
        free(cnt);
    }
    if (tag == RF_DELTA_BITMAP) {
        for (size_t i = 0; i < nbm; i++) {
            uint8_t v = (uint8_t)(rnd(s) % 3 ? rnd(s) & rnd(s) & rnd(s) : rnd(s));
            if (i == nbm - 1 && nu % 8 && rnd(s) % 8)
                v &= (uint8_t)((1u << (nu % 8)) - 1);
            k += (size_t)__builtin_popcount(v);
            put8(&p, v);
        }
    }
    if (tag == RF_DELTA_SPARSE || tag == RF_DELTA_BITMAP) {
        for (size_t i = 0; i < skew(s, k); i++) {
            uint8_t v = (uint8_t)(rnd(s) % 5 ? rnd(s) % 256 : 0);
            e += v == 0;
            put8(&p, v);
        }
        for (size_t i = 0; i < skew(s, 2 * e); i++)
            put8(&p, (uint8_t)rnd(s));
    }
    put32(d, (uint32_t)(skew(s, p.n) << 4 | tag));
    if (p.n)
        put(d, p.p, p.n);
    free(p.p);
}

/* A chunk delta from the grammar, record by record. */
static void gen_delta(uint64_t *s, struct buf *d, size_t n)
{
    size_t nseg = (n + 65535) / 65536;
    nseg = rnd(s) % 16 ? nseg : nseg + (rnd(s) % 3) - 1;
    for (size_t i = 0; i < nseg; i++)
        gen_record(s, d, i * 65536 < n ? (n - i * 65536 < 65536 ? n - i * 65536 : 65536) : 2);
}

/* A delta the encoder made, then changed where it matters. */
static void mutate_delta(uint64_t *s, struct buf *d, size_t n, const uint8_t *a)
{
    uint8_t *b = malloc(n);
    memcpy(b, a, n);
    double p = (double)(rnd(s) % 1000) / 1000.0;
    p = p * p * p;
    for (size_t i = 0; i + 1 < n; i += 2)
        if ((double)(rnd(s) % 1000000) / 1e6 < p)
            b[i] = (uint8_t)(b[i] + (rnd(s) % 2 ? 1 : 255)), b[i + 1] ^= (uint8_t)(rnd(s) % 8 ? 0 : rnd(s));
    if (n % 2 && rnd(s) % 2)
        b[n - 1] ^= 1;
    d->cap = rf_delta_bound(n) + 8;
    d->p = realloc(d->p, d->cap);
    ck_assert_int_eq(rf_delta_encode(a, b, n, d->p, d->cap, &d->n, RF_DELTA_IMPL_AUTO, NULL), 0);
    free(b);
    int edits = 1 + (int)(rnd(s) % 3);
    for (int k = 0; k < edits && d->n; k++) {
        size_t at = (size_t)(rnd(s) % d->n);
        switch (rnd(s) % 9) {
        case 0: d->p[at] ^= (uint8_t)(1u << (rnd(s) % 8)); break;
        case 1: d->p[at] = (uint8_t)rnd(s); break;
        case 2: d->n = at; break;                                   /* truncated */
        case 3: put8(d, (uint8_t)rnd(s)); break;                    /* extended */
        case 4: d->p[0] = (uint8_t)(d->p[0] ^ (1u << (rnd(s) % 4))); break;          /* tag */
        case 5: d->p[(rnd(s) % 3)] ^= (uint8_t)(1u << (rnd(s) % 8)); break;      /* length */
        case 6: if (d->n > 4) d->p[4 + rnd(s) % (d->n - 4 < 8 ? d->n - 4 : 8)]++; break; /* counts */
        case 7: if (d->n > 4) d->p[4 + rnd(s) % (d->n - 4)]--; break;
        default: { /* its first bytes again (a record repeated) */
            uint8_t head[64];
            size_t m = d->n < 64 ? d->n : 64;
            memcpy(head, d->p, m);
            put(d, head, m);
            break;
        }
        }
    }
}

static int run_one(uint64_t *s, int grammar)
{
    size_t n = sizes[rnd(s) % (sizeof(sizes) / sizeof(sizes[0]))];
    uint8_t *a = malloc(n), *dst = malloc(n), *want = malloc(n);
    for (size_t i = 0; i < n; i++)
        a[i] = (uint8_t)rnd(s);
    struct buf d = {0};
    if (grammar)
        gen_delta(s, &d, n);
    else
        mutate_delta(s, &d, n, a);
    uint8_t *exact = malloc(d.n ? d.n : 1); /* the delta alone in its allocation */
    if (d.n)
        memcpy(exact, d.p, d.n);
    memcpy(dst, a, n);
    struct rf_delta_where w = {"fuzz", 17};
    int rc = rf_delta_apply(exact, d.n, dst, n, &w);
    ck_assert_msg(rc == 0 || rc == REFIT_EPROTO, "rc %d: %s", rc, refit_error_message());
    ck_assert_int_eq(rf_delta_check(exact, d.n, n, &w), rc);
    if (rc) {
        ck_assert_msg(strstr(refit_error_message(), "chunk 17"), "%s", refit_error_message());
        ck_assert_mem_eq(dst, a, n);
    } else {
        memcpy(want, a, n);
        ref_apply(exact, d.n, want, n);
        ck_assert_mem_eq(dst, want, n);
        size_t lo = (size_t)(rnd(s) % n) & ~(size_t)1, hi = (lo + (size_t)(rnd(s) % (n - lo + 1))) & ~(size_t)1;
        uint8_t *slice = malloc(hi - lo + 1);
        memcpy(slice, a + lo, hi - lo);
        ck_assert_int_eq(rf_delta_apply_range(exact, d.n, n, lo, hi, slice, &w), 0);
        ck_assert_mem_eq(slice, want + lo, hi - lo);
        free(slice);
    }
    free(exact);
    free(d.p);
    free(a);
    free(dst);
    free(want);
    return rc;
}

START_TEST(test_fuzz)
{
    uint64_t seed = 0x5eed0000u + (uint64_t)_i, s = seed;
    double t0 = now();
    int it = 0, accepted = 0;
    for (; it < ITERATIONS && now() - t0 < MAX_SECONDS; it++) {
        accepted += run_one(&s, _i) == 0;
        refit_error_clear();
    }
    printf("delta fuzz (%s, seed %#llx): %d deltas, %d applied, %d refused\n", _i ? "grammar" : "mutated",
           (unsigned long long)seed, it, accepted, it - accepted);
    /* both outcomes must occur, or the fuzzer explores one side only */
    ck_assert_int_gt(accepted, 0);
    ck_assert_int_gt(it - accepted, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("delta-fuzz");
    TCase *tc = tcase_create("decoder");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_fuzz, 0, 2);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_ENV) ? 1 : 0;
}
