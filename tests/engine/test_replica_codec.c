/* test_replica_codec.c — the store records of tree fan-out (replica.c):
 * replica records and load lease lists round-trip, and random mutations of
 * valid encodings are either refused with REFIT_EPROTO and a message or
 * decode to something that keeps every invariant the engine relies on
 * (sums count = ceil(length / chunk), ids valid, status known).  Under the
 * sanitizers an out-of-bounds read fails the test.  REFIT_FUZZ_ITERS
 * (default 12000 per decoder) and REFIT_FUZZ_SEED change the run. */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/replica.h"
#include "refit/status.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static const uint8_t interesting[] = {0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc4,
                                      0xc6, 0xcc, 0xcf, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xff};

static size_t mutate(uint8_t *buf, size_t len, size_t cap)
{
    int n = 1 + (int)(rnd() % 4);
    for (int m = 0; m < n && len; m++) {
        size_t at = (size_t)(rnd() % len);
        switch (rnd() % 7) {
        case 0: buf[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
        case 1: buf[at] = interesting[rnd() % sizeof(interesting)]; break;
        case 2: buf[at] = (uint8_t)rnd(); break;
        case 3: len = at; break;
        case 4: {
            size_t l = 1 + (size_t)(rnd() % 16);
            if (at + l > len)
                l = len - at;
            memmove(buf + at, buf + at + l, len - at - l);
            len -= l;
            break;
        }
        case 5: {
            size_t l = 1 + (size_t)(rnd() % 8);
            if (len + l > cap)
                break;
            memmove(buf + at + l, buf + at, len - at);
            for (size_t i = 0; i < l; i++)
                buf[at + i] = (uint8_t)rnd();
            len += l;
            break;
        }
        default:
            if (at + 4 <= len)
                memset(buf + at, 0xff, 1 + (size_t)(rnd() % 4));
            break;
        }
    }
    return len;
}

static const uint64_t sums3[3] = {0x0123456789abcdefull, 42, UINT64_MAX};

static struct rf_replica seed_replica(void)
{
    static const uint8_t key[] = {1, 2, 3, 4, 5};
    struct rf_replica r = {.id = "engine-1-0", .model = "qwen3", .transport = "tcp", .address = {"127.0.0.1:9", 11},
                           .rkey = {key, sizeof(key)}, .version = 7, .status = RF_REPLICA_READY, .keeps = 2,
                           .length = 2 * (uint64_t)RF_REPLICA_CHUNK + 100, .chunk = RF_REPLICA_CHUNK,
                           .n_sums = 3, .sums = sums3, .heartbeat_ms = 1234567};
    for (int i = 0; i < 16; i++)
        r.layout.b[i] = (uint8_t)(i * 17);
    return r;
}

START_TEST(replica_round_trip)
{
    struct rf_replica r = seed_replica();
    void *buf;
    size_t len;
    ck_assert_int_eq(rf_replica_encode(&r, &buf, &len), 0);
    struct rf_replica *o = NULL;
    ck_assert_msg(rf_replica_decode(buf, len, "replicas/engine-1-0", &o) == 0, "%s", refit_error_message());
    ck_assert_str_eq(o->id, "engine-1-0");
    ck_assert_str_eq(o->model, "qwen3");
    ck_assert_str_eq(o->transport, "tcp");
    ck_assert_uint_eq(o->address.len, 11);
    ck_assert(!memcmp(o->address.data, "127.0.0.1:9", 11));
    ck_assert_uint_eq(o->rkey.len, 5);
    ck_assert(!memcmp(o->layout.b, r.layout.b, 16));
    ck_assert_uint_eq(o->version, 7);
    ck_assert_uint_eq(o->status, RF_REPLICA_READY);
    ck_assert_uint_eq(o->keeps, 2);
    ck_assert_uint_eq(o->length, r.length);
    ck_assert_uint_eq(o->n_sums, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_uint_eq(o->sums[i], sums3[i]);
    free(o);
    free(buf);
    /* The encoder refuses a sums count that does not match the length. */
    r.n_sums = 2;
    ck_assert_int_eq(rf_replica_encode(&r, &buf, &len), REFIT_EINVAL);
}
END_TEST

START_TEST(lease_round_trip)
{
    struct rf_lease l[2] = {{"engine-0-0", 100, 3}, {"engine-9-1", UINT64_MAX, 4}};
    void *buf;
    size_t len;
    ck_assert_int_eq(rf_lease_encode(l, 2, &buf, &len), 0);
    struct rf_lease *o = NULL;
    size_t n = 0;
    ck_assert_int_eq(rf_lease_decode(buf, len, "load/trainer", &o, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(o[1].id, "engine-9-1");
    ck_assert_uint_eq(o[1].expires_ms, UINT64_MAX);
    ck_assert_uint_eq(o[0].version, 3);
    free(o);
    free(buf);
    ck_assert_int_eq(rf_lease_encode(l, 0, &buf, &len), 0);
    ck_assert_int_eq(rf_lease_decode(buf, len, "load/trainer", &o, &n), 0);
    ck_assert_uint_eq(n, 0);
    free(buf);
    char key[REFIT_STORE_MAX_KEY + 1];
    ck_assert_int_eq(rf_key_load(key, "trainer"), 0);
    ck_assert_str_eq(key, "load/trainer");
    ck_assert_int_eq(rf_key_replica(key, "a/b"), REFIT_EINVAL);
}
END_TEST

static size_t env_size(const char *name, size_t def)
{
    const char *v = getenv(name);
    return v && *v ? (size_t)strtoull(v, NULL, 0) : def;
}

static void fuzz(int which)
{
    size_t iters = env_size("REFIT_FUZZ_ITERS", 12000), accepted = 0;
    void *seed;
    size_t slen;
    if (which == 0) {
        struct rf_replica r = seed_replica();
        ck_assert_int_eq(rf_replica_encode(&r, &seed, &slen), 0);
    } else {
        struct rf_lease l[3] = {{"a", 1, 1}, {"engine-2-0", 99999999999ull, 2}, {"x.y:z", 5, 6}};
        ck_assert_int_eq(rf_lease_encode(l, 3, &seed, &slen), 0);
    }
    size_t cap = slen + 64;
    uint8_t *buf = malloc(cap);
    for (size_t it = 0; it < iters; it++) {
        memcpy(buf, seed, slen);
        size_t len = mutate(buf, slen, cap);
        uint8_t *in = malloc(len ? len : 1); /* exact size: the sanitizer sees overreads */
        memcpy(in, buf, len);
        refit_error_clear();
        int rc;
        if (which == 0) {
            struct rf_replica *o = NULL;
            rc = rf_replica_decode(in, len, "replicas/fuzz", &o);
            if (!rc) {
                ck_assert(o->status == RF_REPLICA_READY || o->status == RF_REPLICA_UPDATING);
                ck_assert(o->keeps == 1 || o->keeps == 2);
                ck_assert(o->chunk >= 4096);
                ck_assert_uint_eq(o->n_sums, o->length / o->chunk + (o->length % o->chunk != 0));
                ck_assert_int_eq(refit_check_id("replica", o->id), 0);
                uint64_t x = 0;
                for (size_t i = 0; i < o->n_sums; i++)
                    x ^= o->sums[i];
                (void)x;
                free(o);
            }
        } else {
            struct rf_lease *o = NULL;
            size_t n = 0;
            rc = rf_lease_decode(in, len, "load/fuzz", &o, &n);
            if (!rc) {
                for (size_t i = 0; i < n; i++)
                    ck_assert_int_eq(refit_check_id("puller", o[i].id), 0);
                free(o);
            }
        }
        if (rc) {
            ck_assert_msg(rc == REFIT_EPROTO || rc == REFIT_ENOMEM, "decoder returned %d", rc);
            ck_assert(refit_error_message()[0] != '\0');
        } else {
            accepted++;
        }
        free(in);
    }
    ck_assert_uint_lt(accepted, iters / 2);
    free(buf);
    free(seed);
}

START_TEST(fuzz_replica) { fuzz(0); }
END_TEST

START_TEST(fuzz_lease) { fuzz(1); }
END_TEST

int main(void)
{
    const char *s = getenv("REFIT_FUZZ_SEED");
    if (s && *s)
        rng = strtoull(s, NULL, 0) | 1;
    printf("replica codec fuzz: seed 0x%" PRIx64 "\n", rng);
    Suite *su = suite_create("replica-codec");
    TCase *tc = tcase_create("codec");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, replica_round_trip);
    tcase_add_test(tc, lease_round_trip);
    tcase_add_test(tc, fuzz_replica);
    tcase_add_test(tc, fuzz_lease);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
