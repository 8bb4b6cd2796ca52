/* test_catalog_fuzz.c — random mutations of valid catalogs, source records
 * and acks fed to the decoders.  A decoder must either refuse (REFIT_EPROTO,
 * with a message) or return something that obeys every invariant the
 * engine relies on; under the sanitizers a crash or an out-of-bounds read
 * fails the test.  REFIT_FUZZ_ITERS (default 12000 per decoder) and
 * REFIT_FUZZ_SEED change the run. */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refit/catalog.h"
#include "refit/status.h"
#include "../check_run.h"

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static size_t env_size(const char *name, size_t def)
{
    const char *v = getenv(name);
    return v && *v ? (size_t)strtoull(v, NULL, 0) : def;
}

/* Bytes that mean something to msgpack: container and length headers,
 * the reserved byte, integer limits. */
static const uint8_t interesting[] = {0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1,
                                      0xc2, 0xc4, 0xc6, 0xcc, 0xcf, 0xd3, 0xd9, 0xdb, 0xdc, 0xdd, 0xde,
                                      0xdf, 0xe0, 0xff};

/* Mutate buf (len bytes, capacity cap) in place; returns the new length. */
static size_t mutate(uint8_t *buf, size_t len, size_t cap)
{
    int n = 1 + (int)(rnd() % 4);
    for (int m = 0; m < n && len; m++) {
        size_t at = (size_t)(rnd() % len);
        switch (rnd() % 8) {
        case 0: buf[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
        case 1: buf[at] = interesting[rnd() % sizeof(interesting)]; break;
        case 2: buf[at] = (uint8_t)rnd(); break;
        case 3: len = at; break; /* truncate */
        case 4: { /* delete a range */
            size_t l = 1 + (size_t)(rnd() % 16);
            if (at + l > len)
                l = len - at;
            memmove(buf + at, buf + at + l, len - at - l);
            len -= l;
            break;
        }
        case 5: { /* insert random bytes */
            size_t l = 1 + (size_t)(rnd() % 8);
            if (len + l > cap)
                break;
            memmove(buf + at + l, buf + at, len - at);
            for (size_t i = 0; i < l; i++)
                buf[at + i] = (uint8_t)rnd();
            len += l;
            break;
        }
        case 6: { /* duplicate a range over another place (repeated names, fields) */
            size_t from = (size_t)(rnd() % len), l = 1 + (size_t)(rnd() % 24);
            if (from + l > len || at + l > len)
                break;
            memmove(buf + at, buf + from, l);
            break;
        }
        default: { /* big-endian length fields made huge */
            if (at + 4 <= len)
                memset(buf + at, 0xff, 1 + (size_t)(rnd() % 4));
            break;
        }
        }
    }
    return len;
}

static refit_catalog_t *seed_catalog(void)
{
    refit_catalog_t *c;
    refit_catalog_create(&c);
    uint32_t r0, r1;
    refit_catalog_add_region(c, 1 << 22, &r0);
    refit_catalog_add_region(c, 1 << 22, &r1);
    uint64_t off[2] = {0, 0};
    for (int i = 0; i < 40; i++) {
        char name[96];
        struct refit_cat_tensor t = {.name = name, .dtype = REFIT_DTYPE_BF16, .ndim = 2, .expert = -1};
        int kind = i % 4;
        snprintf(name, sizeof(name), "decoder.layers.%d.%s", i / 4,
                 kind == 0 ? "norm.weight" : kind == 1 ? "qkv.weight" : kind == 2 ? "proj.weight" : "experts.fc1");
        t.shape[0] = t.global_shape[0] = 16;
        t.shape[1] = t.global_shape[1] = 8;
        if (kind == 0) {
            t.role = REFIT_CAT_ROLE_REPLICATED;
            t.shard_axis = -1;
        } else if (kind == 1) {
            t.role = REFIT_CAT_ROLE_QKV_COLUMN;
            t.global_shape[0] = 32;
            t.shard_start = 16;
            t.shard_len = 16;
        } else if (kind == 2) {
            t.role = REFIT_CAT_ROLE_ROW;
            t.shard_axis = 1;
            t.global_shape[1] = 16;
            t.shard_len = 8;
        } else {
            t.role = REFIT_CAT_ROLE_EXPERT_COLUMN;
            t.expert = i;
            t.global_shape[0] = 64;
            t.shard_start = 48;
            t.shard_len = 16;
        }
        t.nbytes = 16 * 8 * 2;
        t.region = (uint32_t)(i & 1);
        t.offset = off[i & 1];
        off[i & 1] += t.nbytes;
        t.checksum = rnd();
        if (refit_catalog_add(c, &t))
            return NULL;
    }
    return c;
}

/* What the engine relies on in a decoded catalog. */
static void check_catalog(const refit_catalog_t *c)
{
    for (size_t i = 0; i < c->n_tensors; i++) {
        const struct refit_cat_tensor *t = &c->tensors[i];
        ck_assert(t->name && t->name[0]);
        ck_assert_uint_le(t->ndim, REFIT_MAX_DIMS);
        ck_assert_uint_lt(t->region, c->n_regions);
        ck_assert(t->offset <= c->region_len[t->region] && t->nbytes <= c->region_len[t->region] - t->offset);
        ck_assert(t->dtype > 0 && t->dtype < REFIT_DTYPE_COUNT_);
        ck_assert(t->role > 0 && t->role < REFIT_CAT_ROLE_COUNT_);
        ck_assert_int_eq(refit_catalog_find(c, t->name), (ptrdiff_t)i);
    }
}

static void check_failure(int rc)
{
    ck_assert_msg(rc == REFIT_EPROTO || rc == REFIT_ENOMEM, "decoder returned %d", rc);
    ck_assert(refit_error_message()[0] != '\0');
}

static void fuzz(int which, size_t iters)
{
    void *seed = NULL;
    size_t slen = 0;
    if (which == 0) {
        refit_catalog_t *c = seed_catalog();
        ck_assert_ptr_nonnull(c);
        ck_assert_int_eq(refit_catalog_encode(c, &seed, &slen), 0);
        refit_catalog_destroy(c);
    } else if (which == 1) {
        static const uint8_t k0[] = {9, 9, 9};
        struct refit_blob keys[2] = {{k0, 3}, {k0, 2}};
        struct refit_source_record r = {1, "tp0", "Qwen3", {0, 2, 0, 1, 1, 4, 0, 1}, "ucx", {"addr", 4}, 2, keys,
                                        {{0}}, 9, REFIT_SOURCE_READY, 12345, 1, "tp0-tcp"};
        ck_assert_int_eq(refit_record_encode(&r, &seed, &slen), 0);
    } else {
        struct refit_ack a = {1, 9, "rx-0", 777};
        ck_assert_int_eq(refit_ack_encode(&a, &seed, &slen), 0);
    }
    size_t cap = slen + 64;
    uint8_t *buf = malloc(cap);
    size_t accepted = 0;
    for (size_t it = 0; it < iters; it++) {
        memcpy(buf, seed, slen);
        size_t len = mutate(buf, slen, cap);
        /* An exact-size copy, so the sanitizer sees any read past the end. */
        uint8_t *in = malloc(len ? len : 1);
        memcpy(in, buf, len);
        refit_error_clear();
        int rc;
        if (which == 0) {
            refit_catalog_t *c = NULL;
            rc = refit_catalog_decode(in, len, "catalogs/fuzz", &c);
            if (!rc) {
                check_catalog(c);
                refit_catalog_destroy(c);
            }
        } else if (which == 1) {
            struct refit_source_record *r = NULL;
            rc = refit_record_decode(in, len, "sources/fuzz", &r);
            if (!rc) {
                ck_assert(r->status >= 1 && r->status <= 3);
                ck_assert(r->layout.tp_rank < r->layout.tp_size && r->layout.ep_rank < r->layout.ep_size);
                ck_assert_int_eq(refit_check_id("source", r->source_id), 0);
                for (size_t i = 0; i < r->n_rkeys; i++)
                    ck_assert_uint_le(r->rkeys[i].len, REFIT_RECORD_MAX_BLOB);
                free(r);
            }
        } else {
            struct refit_ack *a = NULL;
            rc = refit_ack_decode(in, len, "versions/9/acks/fuzz", &a);
            if (!rc) {
                ck_assert_int_eq(refit_check_id("receiver", a->receiver), 0);
                free(a);
            }
        }
        if (rc)
            check_failure(rc);
        else
            accepted++;
        free(in);
    }
    /* Mutations that keep the input valid exist (checksums, padding), but
     * most must be refused: the decoders really validate. */
    ck_assert_uint_lt(accepted, iters / 2);
    free(buf);
    free(seed);
}

static size_t iters;

START_TEST(fuzz_catalog) { fuzz(0, iters); }
END_TEST
START_TEST(fuzz_record) { fuzz(1, iters); }
END_TEST
START_TEST(fuzz_ack) { fuzz(2, iters); }
END_TEST

int main(void)
{
    iters = env_size("REFIT_FUZZ_ITERS", 12000);
    rng_state = env_size("REFIT_FUZZ_SEED", 0x5eed1234abcdull);
    if (!rng_state)
        rng_state = 1;
    printf("fuzz: %zu mutations per decoder, seed 0x%" PRIx64 "\n", iters, rng_state);
    Suite *s = suite_create("catalog-fuzz");
    TCase *tc = tcase_create("mutations");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, fuzz_catalog);
    tcase_add_test(tc, fuzz_record);
    tcase_add_test(tc, fuzz_ack);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_ENV);
    return failed ? 1 : 0;
}
