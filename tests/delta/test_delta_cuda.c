/* test_delta_cuda.c — the delta kernels (core/src/cuda/delta.cu) against
 * the host codec: batches of tensors of awkward sizes (odd lengths, short
 * last chunks, chunks of several segments, unaligned starts) at every
 * change density, encoded on the device and compared byte for byte with
 * rf_delta_encode_tensor (bytes and chunk lengths), applied on the device
 * and compared with the next version, and damaged deltas, which the device
 * must refuse (untouched destinations) exactly when the host refuses them;
 * and the device XXH3-64 (xxh3.cu) against the host's on random data.
 * Without CUDA it checks the ENOTSUP stubs; without a device it exits 77. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "../check_run.h"
#include "delta.h"
#include "refit/status.h"

#ifdef REFIT_TEST_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <xxhash.h>

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

static void *dev(size_t n)
{
    void *p = NULL;
    ck_assert_int_eq(cudaMalloc(&p, n ? n : 1), cudaSuccess);
    return p;
}

static void up(void *d, const void *h, size_t n)
{
    ck_assert_int_eq(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice), cudaSuccess);
}

static void down(void *h, const void *d, size_t n)
{
    ck_assert_int_eq(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost), cudaSuccess);
}

/* The batch: one arena per side; tensor i at offset off[i]. */
#define NT 9
static const uint64_t t_bytes[NT] = {2, 4097, 64 * 1024, 1000 * 1536 + 512, 3 * 65536 + 10, 300000,
                                     2048 * 1024, 131, 65536 * 2};
static const uint64_t t_chunk[NT] = {2, 1024, 65536, 32 * 1536, 3 * 65536 + 10, 150000, 65536, 64, 65536 * 2};
static const uint64_t t_skew[NT] = {0, 2, 0, 6, 0, 1, 0, 0, 0}; /* unaligned starts */

struct batch {
    uint8_t *a, *b;    /* host */
    uint8_t *da, *db;  /* device */
    uint64_t off[NT], total, bound, nchunks;
    struct rf_delta_span sp[NT];
};

static void make_batch(struct batch *bt, uint64_t *s, double p)
{
    uint64_t o = 0;
    bt->bound = bt->nchunks = 0;
    for (int i = 0; i < NT; i++) {
        o = (o + 255) / 256 * 256 + t_skew[i];
        bt->off[i] = o;
        o += t_bytes[i];
        bt->bound += rf_delta_tensor_bound(t_bytes[i], t_chunk[i]);
        bt->nchunks += rf_delta_tensor_chunks(t_bytes[i], t_chunk[i]);
    }
    bt->total = o;
    bt->a = malloc(o);
    bt->b = malloc(o);
    for (uint64_t i = 0; i < o; i++)
        bt->a[i] = (uint8_t)rnd(s);
    memcpy(bt->b, bt->a, o);
    for (uint64_t i = 0; i + 1 < o; i += 2)
        if ((double)(rnd(s) % 1000000) < p * 1e6) {
            uint64_t r = rnd(s);
            unsigned v = bt->a[i] | bt->a[i + 1] << 8;
            v = r % 16 ? v + (r & 32 ? 1 : 0xffff) : (unsigned)(r >> 40);
            bt->b[i] = (uint8_t)v;
            bt->b[i + 1] = (uint8_t)((v >> 8) ^ (v == (unsigned)(bt->a[i] | bt->a[i + 1] << 8)));
        }
    bt->b[o - 1] ^= 0x10;
    bt->da = dev(o);
    bt->db = dev(o);
    up(bt->da, bt->a, o);
    up(bt->db, bt->b, o);
    for (int i = 0; i < NT; i++)
        bt->sp[i] = (struct rf_delta_span){"t", bt->da + bt->off[i], bt->db + bt->off[i], t_bytes[i], t_chunk[i]};
}

static void free_batch(struct batch *bt)
{
    free(bt->a);
    free(bt->b);
    cudaFree(bt->da);
    cudaFree(bt->db);
}

/* The host's bytes and lens for the batch. */
static size_t host_encode(const struct batch *bt, uint8_t *out, uint32_t *lens)
{
    size_t off = 0, ch = 0;
    for (int i = 0; i < NT; i++) {
        size_t len;
        ck_assert_int_eq(rf_delta_encode_tensor(bt->a + bt->off[i], bt->b + bt->off[i], t_bytes[i], t_chunk[i],
                                                out + off, bt->bound - off, lens + ch, &len, RF_DELTA_IMPL_AUTO,
                                                NULL), 0);
        off += len;
        ch += rf_delta_tensor_chunks(t_bytes[i], t_chunk[i]);
    }
    return off;
}

static const double dens[] = {0, 1e-4, 0.01, 0.05, 0.2, 0.7, 1.0};

START_TEST(test_same_bytes)
{
    uint64_t s = 0xc0da + (uint64_t)_i;
    struct batch bt;
    make_batch(&bt, &s, dens[_i]);
    uint8_t *want = malloc(bt.bound), *got = malloc(bt.bound), *res = malloc(bt.total);
    uint32_t *wl = malloc(bt.nchunks * 4), *gl = malloc(bt.nchunks * 4), *dl = dev(bt.nchunks * 4);
    uint8_t *dout = dev(bt.bound);
    size_t wlen = host_encode(&bt, want, wl);
    struct rf_delta_cuda *c;
    ck_assert_int_eq(rf_delta_cuda_create(NULL, &c), 0);
    for (int rep = 0; rep < 2; rep++) { /* the second reuses the table */
        uint64_t glen = 0;
        ck_assert_int_eq(cudaMemset(dout, 0xa5, bt.bound), cudaSuccess);
        ck_assert_int_eq(rf_delta_cuda_encode(c, bt.sp, NT, dout, bt.bound, dl, &glen), 0);
        ck_assert_int_eq(rf_delta_cuda_sync(c), 0);
        ck_assert_uint_eq(glen, wlen);
        down(got, dout, glen);
        down(gl, dl, bt.nchunks * 4);
        ck_assert_mem_eq(gl, wl, bt.nchunks * 4);
        ck_assert_mem_eq(got, want, wlen);
    }
    /* apply onto the base (da) and compare with next */
    ck_assert_int_eq(rf_delta_cuda_apply(c, bt.sp, NT, dout, wlen, dl), 0);
    ck_assert_int_eq(rf_delta_cuda_sync(c), 0);
    down(res, bt.da, bt.total);
    for (int i = 0; i < NT; i++)
        ck_assert_mem_eq(res + bt.off[i], bt.b + bt.off[i], t_bytes[i]);
    rf_delta_cuda_destroy(c);
    free(want);
    free(got);
    free(res);
    free(wl);
    free(gl);
    cudaFree(dl);
    cudaFree(dout);
    free_batch(&bt);
}
END_TEST

/* Damaged deltas: the device refuses exactly what the host refuses, and
 * then writes nothing; what both accept gives the same bytes. */
START_TEST(test_damaged)
{
    uint64_t s = 0xbad;
    struct batch bt;
    make_batch(&bt, &s, 0.02);
    uint8_t *d = malloc(bt.bound), *dd = malloc(bt.bound), *hres = malloc(bt.total), *gres = malloc(bt.total);
    uint32_t *lens = malloc(bt.nchunks * 4), *dl = dev(bt.nchunks * 4);
    uint8_t *ddev = dev(bt.bound), *dst = dev(bt.total);
    size_t len = host_encode(&bt, d, lens);
    struct rf_delta_cuda *c;
    ck_assert_int_eq(rf_delta_cuda_create(NULL, &c), 0);
    int refused = 0;
    for (int it = 0; it < 300; it++) {
        memcpy(dd, d, len);
        size_t dlen = len;
        uint32_t *ll = malloc(bt.nchunks * 4);
        memcpy(ll, lens, bt.nchunks * 4);
        switch (it % 4) {
        case 0: dd[rnd(&s) % len] ^= (uint8_t)(1u << (rnd(&s) % 8)); break;
        case 1: dd[rnd(&s) % len] = (uint8_t)rnd(&s); break;
        case 2: ll[rnd(&s) % bt.nchunks] += (uint32_t)(rnd(&s) % 3) - 1; break;
        default: dlen = len - 1 - rnd(&s) % 4; break;
        }
        /* host verdict, tensor by tensor over the same layout */
        memcpy(hres, bt.a, bt.total);
        int hrc = 0;
        size_t off = 0, ch = 0;
        for (int i = 0; i < NT && !hrc; i++) {
            uint64_t nc = rf_delta_tensor_chunks(t_bytes[i], t_chunk[i]), tl = 0;
            for (uint64_t k = 0; k < nc; k++)
                tl += ll[ch + k];
            if (tl > dlen - off || (i == NT - 1 && off + tl != dlen))
                hrc = REFIT_EPROTO;
            else
                hrc = rf_delta_apply_tensor(dd + off, tl, ll + ch, t_bytes[i], t_chunk[i], hres + bt.off[i], "t");
            off += tl;
            ch += nc;
        }
        up(ddev, dd, len);
        up(dl, ll, bt.nchunks * 4);
        up(dst, bt.a, bt.total);
        for (int i = 0; i < NT; i++)
            bt.sp[i].base = dst + bt.off[i];
        ck_assert_int_eq(rf_delta_cuda_apply(c, bt.sp, NT, ddev, dlen, dl), 0);
        int grc = rf_delta_cuda_sync(c);
        down(gres, dst, bt.total);
        ck_assert_msg((hrc == 0) == (grc == 0), "iteration %d: host %d, device %d (%s)", it, hrc, grc,
                      refit_error_message());
        if (grc) {
            ck_assert_int_eq(grc, REFIT_EPROTO);
            ck_assert_mem_eq(gres, bt.a, bt.total);
            refused++;
        } else {
            for (int i = 0; i < NT; i++)
                ck_assert_mem_eq(gres + bt.off[i], hres + bt.off[i], t_bytes[i]);
        }
        free(ll);
    }
    ck_assert_int_gt(refused, 0);
    rf_delta_cuda_destroy(c);
    free(d);
    free(dd);
    free(hres);
    free(gres);
    free(lens);
    cudaFree(dl);
    cudaFree(ddev);
    cudaFree(dst);
    free_batch(&bt);
}
END_TEST

/* The encoder's output bound (rf_delta_tensor_bound: input + 4 bytes per
 * segment) is reached and never passed: every unit escaped makes every
 * segment RAW, the delta is exactly the bound, and 4 KiB of guard bytes
 * after it stay as they were; at the spilling densities (records larger
 * than a slot) the output stays within it too, guard intact. */
START_TEST(test_bound)
{
    uint64_t s = 0xb0b0;
    static const double ps[] = {-1, 0.3, 1.0};
    for (int q = 0; q < 3; q++) {
        struct batch bt;
        make_batch(&bt, &s, ps[q] < 0 ? 0 : ps[q]);
        if (ps[q] < 0) {
            for (uint64_t i = 0; i < bt.total; i++)
                bt.b[i] = (uint8_t)(bt.a[i] ^ 0x80);
            up(bt.db, bt.b, bt.total);
        }
        const size_t guard = 4096;
        uint8_t *want = malloc(bt.bound), *got = malloc(bt.bound + guard);
        uint32_t *wl = malloc(bt.nchunks * 4), *dl = dev(bt.nchunks * 4);
        uint8_t *dout = dev(bt.bound + guard);
        size_t wlen = host_encode(&bt, want, wl);
        if (ps[q] < 0)
            ck_assert_uint_eq(wlen, bt.bound);
        struct rf_delta_cuda *c;
        ck_assert_int_eq(rf_delta_cuda_create(NULL, &c), 0);
        ck_assert_int_eq(cudaMemset(dout, 0xa5, bt.bound + guard), cudaSuccess);
        uint64_t glen = 0;
        ck_assert_int_eq(rf_delta_cuda_encode(c, bt.sp, NT, dout, bt.bound, dl, &glen), 0);
        ck_assert_int_eq(rf_delta_cuda_sync(c), 0);
        ck_assert_uint_eq(glen, wlen);
        down(got, dout, bt.bound + guard);
        ck_assert_mem_eq(got, want, wlen);
        for (size_t i = bt.bound; i < bt.bound + guard; i++)
            ck_assert_msg(got[i] == 0xa5, "byte %zu past the bound written", i - bt.bound);
        ck_assert_int_eq(rf_delta_cuda_encode(c, bt.sp, NT, dout, bt.bound - 1, dl, &glen), REFIT_EINVAL);
        rf_delta_cuda_destroy(c);
        free(want);
        free(got);
        free(wl);
        cudaFree(dl);
        cudaFree(dout);
        free_batch(&bt);
    }
}
END_TEST

/* The device XXH3-64 (xxh3.cu) equals the host's XXH3_64bits on random
 * bytes: every length 0..300 (the short paths and their edges), lengths
 * about the 1 KiB block and 64-byte stripe edges, chunk-sized and odd
 * lengths up to 200 KB, each at starts 0..7 bytes off alignment. */
START_TEST(test_xxh3)
{
    const size_t cap = 1u << 20;
    uint64_t s = 0x5eed1234abcdull;
    uint8_t *h = malloc(cap);
    ck_assert_ptr_nonnull(h);
    for (size_t i = 0; i < cap; i++)
        h[i] = (uint8_t)rnd(&s);
    uint8_t *d = dev(cap);
    up(d, h, cap);
    enum { MAXN = 4096 };
    struct rf_xxh3_span *sp = malloc(MAXN * sizeof(*sp));
    uint64_t *want = malloc(MAXN * sizeof(*want)), *got = malloc(MAXN * sizeof(*got));
    ck_assert(sp && want && got);
    size_t n = 0;
    static const uint64_t edge[] = {1023, 1024, 1025, 1087, 1088, 1089, 2047, 2048, 2049, 4096, 65535, 65536,
                                    65537, 65536 + 63, 3 * 65536 + 10, 150000, 199999, 200000};
    for (uint64_t len = 0; len <= 300; len++)
        for (uint64_t a = 0; a < 8; a += 3) {
            uint64_t off = (rnd(&s) % (cap - 400)) & ~(uint64_t)7;
            sp[n] = (struct rf_xxh3_span){d + off + a, len};
            want[n++] = XXH3_64bits(h + off + a, len);
        }
    for (size_t e = 0; e < sizeof(edge) / sizeof(edge[0]); e++)
        for (uint64_t a = 0; a < 8; a++) {
            uint64_t off = (rnd(&s) % (cap - edge[e] - 8)) & ~(uint64_t)7;
            sp[n] = (struct rf_xxh3_span){d + off + a, edge[e]};
            want[n++] = XXH3_64bits(h + off + a, edge[e]);
        }
    while (n < 2000) {
        uint64_t len = 241 + rnd(&s) % 200000, off = rnd(&s) % (cap - len);
        sp[n] = (struct rf_xxh3_span){d + off, len};
        want[n++] = XXH3_64bits(h + off, len);
    }
    struct rf_xxh3_span *dsp = dev(n * sizeof(*sp));
    uint64_t *dout = dev(n * sizeof(uint64_t));
    up(dsp, sp, n * sizeof(*sp));
    ck_assert_int_eq(rf_xxh3_cuda(NULL, dsp, n, dout), 0);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    down(got, dout, n * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(got[i] == want[i], "span %zu (%llu bytes, start %% 8 = %llu): device %016llx, host %016llx", i,
                      (unsigned long long)sp[i].len, (unsigned long long)((uintptr_t)sp[i].p & 7),
                      (unsigned long long)got[i], (unsigned long long)want[i]);
    cudaFree(dsp);
    cudaFree(dout);
    cudaFree(d);
    free(sp);
    free(want);
    free(got);
    free(h);
}
END_TEST

int main(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
        return 77;
    Suite *s = suite_create("delta-cuda");
    TCase *tc = tcase_create("kernels");
    tcase_set_timeout(tc, 240);
    tcase_add_loop_test(tc, test_same_bytes, 0, (int)(sizeof(dens) / sizeof(dens[0])));
    tcase_add_test(tc, test_damaged);
    tcase_add_test(tc, test_bound);
    tcase_add_test(tc, test_xxh3);
    suite_add_tcase(s, tc);
    /* cudaGetDeviceCount initialised CUDA here, and a CUDA context does not
     * survive fork (the child's first call fails "initialization error"):
     * the kernels' tests run in this process. */
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

#else

START_TEST(test_stubs)
{
    struct rf_delta_cuda *c = NULL;
    ck_assert_int_eq(rf_delta_cuda_built(), 0);
    ck_assert_int_eq(rf_delta_cuda_create(NULL, &c), REFIT_ENOTSUP);
    ck_assert_int_eq(rf_delta_cuda_sync(c), REFIT_ENOTSUP);
    ck_assert_int_eq(rf_xxh3_cuda(NULL, NULL, 1, NULL), REFIT_ENOTSUP);
    rf_delta_cuda_destroy(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("delta-cuda");
    TCase *tc = tcase_create("stubs");
    tcase_add_test(tc, test_stubs);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_ENV) ? 1 : 0;
}

#endif
