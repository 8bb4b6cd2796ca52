/* test_fuzz_decoders.c — a structural fuzzer for every decoder of what
 * refit reads from a store (issues 14 and 22): push work lists and adverts
 * (push_work.c), replica records and lease lists (replica.c), checksum
 * segments (sums.c), catalogs, source records, acks and heartbeats
 * (catalog_*.c).
 *
 * Byte mutations of a valid encoding (test_catalog_fuzz.c,
 * test_replica_codec.c) rarely produce a well-formed document with a
 * hostile value in it; this fuzzer builds documents field by field: usually
 * the type the decoder expects with a plausible value, sometimes an edge
 * value (0, 2^32-1, 2^64-1, 2^64-4096, powers of two), a wrong type, a
 * missing, repeated or unknown field, or a container whose count lies.  A
 * decoder must refuse (REFIT_EPROTO or REFIT_ENOMEM with a message) or
 * return something that keeps every invariant its users rely on — for a
 * work list: every piece inside its unit and every byte extent computable
 * without wrapping (issue 22.1: dst_row = 2^64-1 once reached a memcpy).
 * Under the sanitizers a read out of bounds fails the test.
 *
 * Each decoder runs for REFIT_FUZZ_SECONDS (default 2) or REFIT_FUZZ_ITERS
 * documents (default 200000), whichever ends first; REFIT_FUZZ_SEED picks
 * the sequence.  Every decoder must both accept and refuse some documents,
 * so the invariant checks are reached. */
#include <check.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "engine/push_work.h"
#include "engine/delta_eng.h"
#include "engine/replica.h"
#include "engine/sums.h"
#include "refit/catalog.h"
#include "refit/status.h"
#include "../check_run.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double seconds = 2.0;
static size_t max_iters = 200000;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int chance(unsigned pct)
{
    return rnd() % 100 < pct;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ */
/* Building documents */

struct gen {
    msgpack_sbuffer sb;
    msgpack_packer pk;
};

static void gen_init(struct gen *g)
{
    msgpack_sbuffer_init(&g->sb);
    msgpack_packer_init(&g->pk, &g->sb, msgpack_sbuffer_write);
}

static uint64_t edge(void)
{
    static const uint64_t e[] = {0, 1, 2, 127, 128, 129, 4095, 4096, UINT32_MAX, 1ull << 32, (1ull << 32) + 1,
                                 1ull << 40, (1ull << 40) + 1, INT64_MAX, UINT64_MAX - 4096, UINT64_MAX - 1,
                                 UINT64_MAX};
    return chance(70) ? e[rnd() % (sizeof(e) / sizeof(e[0]))] : 1ull << (rnd() % 64);
}

static void str(struct gen *g, const char *s)
{
    msgpack_pack_str_with_body(&g->pk, s, strlen(s));
}

/* A value of a type the field does not have, or a deep one. */
static void wrong(struct gen *g, int depth)
{
    switch (rnd() % 9) {
    case 0: msgpack_pack_nil(&g->pk); break;
    case 1: msgpack_pack_true(&g->pk); break;
    case 2: msgpack_pack_int64(&g->pk, -(int64_t)(1 + rnd() % 1000)); break;
    case 3: msgpack_pack_double(&g->pk, (double)(rnd() % 1000) / 7.0); break;
    case 4: str(g, "x"); break;
    case 5: msgpack_pack_bin_with_body(&g->pk, "\0\1\2", 3); break;
    case 6: msgpack_pack_map(&g->pk, 0); break;
    case 7: /* nesting beyond any reader's limit */
        for (int i = 0; i < 40 && depth < 4; i++)
            msgpack_pack_array(&g->pk, 1);
        msgpack_pack_nil(&g->pk);
        break;
    default: msgpack_pack_array(&g->pk, 2), msgpack_pack_uint64(&g->pk, 1), msgpack_pack_uint64(&g->pk, 2); break;
    }
}

/* An unsigned field: usually `typical`, sometimes an edge, rarely wrong. */
static void u64(struct gen *g, uint64_t typical)
{
    if (chance(2))
        wrong(g, 0);
    else
        msgpack_pack_uint64(&g->pk, chance(90) ? typical : edge());
}

/* An id: usually valid, sometimes too long, empty or with a bad byte. */
static void id(struct gen *g, const char *typical)
{
    if (chance(95)) {
        str(g, typical);
        return;
    }
    char bad[200];
    switch (rnd() % 4) {
    case 0: memset(bad, 'a', 129), bad[129] = 0; break;
    case 1: bad[0] = 0; break;
    case 2: snprintf(bad, sizeof(bad), "a/b"); break;
    default: snprintf(bad, sizeof(bad), ".hidden"); break;
    }
    str(g, bad);
}

/* A binary of n bytes of b (at most 120), sometimes of another length. */
static void bin(struct gen *g, const void *b, size_t n)
{
    uint8_t buf[128] = {0};
    ck_assert_uint_le(n, 120);
    memcpy(buf, b, n);
    if (chance(2))
        wrong(g, 0);
    else
        msgpack_pack_bin_with_body(&g->pk, buf, chance(95) ? n : rnd() % (n + 3));
}

/* Array or map header: usually honest, sometimes lying. */
static void head(struct gen *g, int map, uint32_t n)
{
    uint32_t c = chance(96) ? n : chance(50) ? n + 1 + (uint32_t)(rnd() % 3) : (uint32_t)edge();
    if (map)
        msgpack_pack_map(&g->pk, c);
    else
        msgpack_pack_array(&g->pk, c);
}

typedef void (*field_fn)(struct gen *g, void *arg, int i);

/* A map of named fields in random order; some dropped, repeated or joined
 * by an unknown one. */
static void fields(struct gen *g, const char *const *names, int n, field_fn put, void *arg)
{
    int order[32], m = 0;
    for (int i = 0; i < n; i++)
        if (chance(98))
            order[m++] = i;
    if (m && chance(3)) {
        int again = order[rnd() % (uint64_t)m]; /* repeated */
        order[m++] = again;
    }
    for (int i = m - 1; i > 0 && chance(30); i--) {
        int j = (int)(rnd() % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    int extra = chance(5);
    head(g, 1, (uint32_t)(m + extra));
    for (int i = 0; i < m; i++) {
        str(g, names[order[i]]);
        put(g, arg, order[i]);
    }
    if (extra) {
        str(g, "unknown_field");
        wrong(g, 0);
    }
}

/* ------------------------------------------------------------------ */
/* Running a decoder */

typedef int (*decode_fn)(const void *buf, size_t len);
typedef void (*build_fn)(struct gen *g);

static void run(const char *what, build_fn build, decode_fn decode)
{
    size_t accepted = 0, refused = 0, it = 0;
    double end = now_s() + seconds;
    for (; it < max_iters && (it % 64 || now_s() < end); it++) {
        struct gen g;
        gen_init(&g);
        build(&g);
        size_t len = g.sb.size;
        void *in = malloc(len ? len : 1); /* exact size: the sanitizer sees overreads */
        memcpy(in, g.sb.data, len);
        msgpack_sbuffer_destroy(&g.sb);
        refit_error_clear();
        int rc = decode(in, len);
        if (rc) {
            ck_assert_msg(rc == REFIT_EPROTO || rc == REFIT_ENOMEM, "%s: decoder returned %d", what, rc);
            ck_assert_msg(refit_error_message()[0], "%s: refused without a message", what);
            refused++;
        } else {
            accepted++;
        }
        free(in);
    }
    printf("%s: %zu documents, %zu accepted, %zu refused\n", what, it, accepted, refused);
    ck_assert_msg(accepted > 0 && refused > 0, "%s: the generator must reach both outcomes", what);
}

/* ------------------------------------------------------------------ */
/* Push work lists */

static const char *const work_names[] = {"schema", "rule", "floor", "mail_len", "sections"};

static void work_piece(struct gen *g, uint64_t dst_row, uint64_t rows, uint64_t cols, uint32_t es)
{
    uint64_t src_cols = cols + rnd() % 8, f[10] = {rnd() % 3, es, rnd() % 100000, src_cols, rnd() % 1000,
                                                   rnd() % (src_cols - cols + 1), rows, cols, dst_row, 0};
    head(g, 0, 10);
    for (int i = 0; i < 10; i++)
        u64(g, f[i]);
}

static void work_unit(struct gen *g)
{
    int f32 = chance(30);
    uint64_t rows = 1 + rnd() % 128, cols = 1 + rnd() % 300, np = 1 + rnd() % 4;
    head(g, 0, 7);
    u64(g, rnd() % 50);
    str(g, chance(97) ? (f32 ? "F32" : "BF16") : "F8_E4M3");
    u64(g, rows);
    u64(g, cols);
    u64(g, rnd() % 1000000);
    u64(g, rnd() % 1000000);
    /* Bands of rows covering the unit exactly (when nothing else lies). */
    if (np > rows)
        np = rows;
    head(g, 0, (uint32_t)np);
    for (uint64_t k = 0, r0 = 0; k < np; k++) {
        uint64_t r = k + 1 == np ? rows - r0 : 1 + rnd() % (rows - r0 - (np - k - 1));
        work_piece(g, r0, r, cols, f32 ? 4 : 2);
        r0 += r;
    }
}

static void work_section(struct gen *g, int i)
{
    char sid[32];
    snprintf(sid, sizeof(sid), "tp%d", i);
    uint64_t nd = rnd() % 4, nu = rnd() % 3;
    head(g, 0, 4);
    id(g, sid);
    u64(g, (uint64_t)i * 4096);
    head(g, 0, (uint32_t)nd);
    for (uint64_t k = 0; k < nd; k++) {
        uint64_t f[5] = {rnd() % 3, rnd() % 2, rnd() % 100000, rnd() % 100000, 1 + rnd() % 100000};
        head(g, 0, 5);
        for (int j = 0; j < 5; j++)
            u64(g, f[j]);
    }
    head(g, 0, (uint32_t)nu);
    for (uint64_t k = 0; k < nu; k++)
        work_unit(g);
}

static void work_field(struct gen *g, void *arg, int i)
{
    (void)arg;
    switch (i) {
    case 0: u64(g, 1); break;
    case 1: u64(g, rnd() % 2); break;
    case 2:
        if (chance(97))
            msgpack_pack_double(&g->pk, chance(90) ? 1e-12 : (chance(50) ? 1.0 / 0.0 : -1.0));
        else
            wrong(g, 0);
        break;
    case 3: u64(g, 4096 * 4); break;
    default: {
        uint32_t n = (uint32_t)(rnd() % 4);
        head(g, 0, n);
        for (uint32_t s = 0; s < n; s++)
            work_section(g, (int)s);
    }
    }
}

static void build_work(struct gen *g)
{
    fields(g, work_names, 5, work_field, NULL);
}

/* Every piece inside its unit, every extent without wrapping: checked in
 * 128-bit arithmetic, independently of the decoder's helpers. */
static void check_work(const struct push_work *w)
{
    typedef unsigned __int128 u128;
    for (size_t i = 0; i < w->n_s; i++) {
        const struct push_section *s = &w->s[i];
        ck_assert_int_eq(refit_check_id("source", s->source), 0);
        ck_assert((u128)s->mail_off + 32 + 16 * (u128)s->n_u <= w->mail_len);
        for (size_t k = 0; k < s->n_d; k++) {
            const struct push_desc *d = &s->d[k];
            ck_assert(d->buf <= 1 && d->len > 0);
            ck_assert((u128)d->remote_off + d->len <= UINT64_MAX && (u128)d->local_off + d->len <= UINT64_MAX);
        }
        for (size_t k = 0; k < s->n_u; k++) {
            const struct push_unit *u = &s->u[k];
            ck_assert(u->rows >= 1 && u->rows <= 128 && u->cols >= 1 && u->cols <= (1ull << 32));
            ck_assert(u->src_dtype == REFIT_DTYPE_BF16 || u->src_dtype == REFIT_DTYPE_F32);
            ck_assert(u->first + u->n <= s->n_pc);
            u128 area = 0;
            for (size_t q = u->first; q < u->first + u->n; q++) {
                const struct push_piece *p = &s->pc[q];
                ck_assert(p->rows && p->cols);
                ck_assert((u128)p->dst_row + p->rows <= u->rows && (u128)p->dst_col + p->cols <= u->cols);
                ck_assert((u128)p->src_col + p->cols <= p->src_cols);
                u128 end = (u128)p->tensor_off +
                           (((u128)p->src_row + p->rows - 1) * p->src_cols + p->src_col + p->cols) * p->esize;
                ck_assert(end <= UINT64_MAX && (uint64_t)end == p->src_end);
                area += (u128)p->rows * p->cols;
            }
            ck_assert(area == (u128)u->rows * u->cols);
        }
    }
}

static int decode_work(const void *buf, size_t len)
{
    struct push_work w;
    const char *who = chance(50) ? NULL : "tp1";
    int rc = rf_push_work_decode(buf, len, "push/work/fuzz", who, &w);
    if (!rc) {
        ck_assert(!who || w.n_s <= 1);
        check_work(&w);
        rf_push_work_free(&w);
    }
    return rc;
}

START_TEST(fuzz_work_lists)
{
    run("work lists", build_work, decode_work);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Push adverts */

static const char *const advert_names[] = {"schema", "version", "receiver", "transport", "address",
                                           "staging", "scratch", "mailbox", "work", "delta"};

/* The optional delta list: entries [source, version, base, base_sums,
 * landing key, ranges (24-byte records), skip bitmap]. */
static void advert_deltas(struct gen *g)
{
    static const uint8_t r[96] = {1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3};
    uint32_t n = (uint32_t)(rnd() % 3);
    head(g, 0, n);
    for (uint32_t i = 0; i < n; i++) {
        head(g, 0, 7);
        id(g, i ? "trainer1" : "trainer0");
        u64(g, 1 + rnd() % 9);
        u64(g, 1 + rnd() % 9);
        u64(g, rnd());
        bin(g, "landkey", 1 + rnd() % 7);
        bin(g, r, 24 * (rnd() % 5));
        bin(g, "\xff\x0f", rnd() % 3);
    }
}

static void advert_field(struct gen *g, void *arg, int i)
{
    (void)arg;
    static const uint8_t h[16] = {1, 2, 3};
    switch (i) {
    case 0: u64(g, 1); break;
    case 1: u64(g, 1 + rnd() % 9); break;
    case 2: id(g, "engine-0"); break;
    case 3: chance(98) ? str(g, "tcp") : wrong(g, 0); break;
    case 8: bin(g, h, 16); break;
    case 9: advert_deltas(g); break;
    default: bin(g, "keykeykey", rnd() % 10); break;
    }
}

static void build_advert(struct gen *g)
{
    fields(g, advert_names, chance(50) ? 10 : 9, advert_field, NULL);
}

static int decode_advert(const void *buf, size_t len)
{
    struct push_advert a;
    int rc = rf_push_advert_decode(buf, len, "push/slots/fuzz", &a);
    if (!rc) {
        ck_assert(a.version > 0);
        ck_assert_int_eq(refit_check_id("receiver", a.receiver), 0);
        for (int i = 0; i < 3; i++)
            ck_assert(!a.rk_len[i] || ((const uint8_t *)a.rk[i] >= (const uint8_t *)buf &&
                                       (const uint8_t *)a.rk[i] + a.rk_len[i] <= (const uint8_t *)buf + len));
        /* An accepted delta list reads back entry by entry, inside the buffer. */
        const char *srcs[] = {"trainer0", "trainer1", "nobody"};
        for (int k = 0; k < 3; k++) {
            struct push_adelta e;
            int found = -1;
            ck_assert_int_eq(rf_push_advert_delta(&a, "push/slots/fuzz", srcs[k], &e, &found), 0);
            ck_assert(found == 0 || found == 1);
            if (!found)
                continue;
            ck_assert_str_eq(e.source, srcs[k]);
            ck_assert(e.version > 0 && e.base > 0 && e.rk_len > 0);
            const uint8_t *lo = buf, *hi = lo + len;
            ck_assert(e.ranges >= lo && e.ranges + e.n_ranges * RF_PUSH_RANGE_BYTES <= hi);
            ck_assert(e.skip >= lo && e.skip + e.skip_len <= hi);
        }
    }
    return rc;
}

START_TEST(fuzz_adverts)
{
    run("adverts", build_advert, decode_advert);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Replica records and lease lists */

static const char *const replica_names[] = {"schema", "replica", "model", "transport", "address", "rkey", "layout",
                                            "version", "status", "keeps", "length", "chunk", "sums", "heartbeat"};

struct replica_arg {
    uint64_t length, chunk;
};

static void replica_field(struct gen *g, void *arg, int i)
{
    struct replica_arg *a = arg;
    static uint8_t sums[8 * 8];
    switch (i) {
    case 0: u64(g, 1); break;
    case 1: id(g, "engine-1"); break;
    case 2: chance(98) ? str(g, "qwen3") : wrong(g, 0); break;
    case 3: chance(98) ? str(g, "tcp") : wrong(g, 0); break;
    case 4: bin(g, "127.0.0.1:1", 11); break;
    case 5: bin(g, "key", 3); break;
    case 6: bin(g, sums, 16); break;
    case 7: u64(g, 3); break;
    case 8: chance(97) ? str(g, chance(50) ? "READY" : "UPDATING") : wrong(g, 0); break;
    case 9: u64(g, 1 + rnd() % 2); break;
    case 10: u64(g, a->length); break;
    case 11: u64(g, a->chunk); break;
    case 12: {
        uint64_t n = a->length / a->chunk + (a->length % a->chunk != 0);
        bin(g, sums, (size_t)(n <= 8 ? n : 8) * 8);
        break;
    }
    default: u64(g, 1234); break;
    }
}

static void build_replica(struct gen *g)
{
    struct replica_arg a = {4096 * (1 + rnd() % 8) - rnd() % 2, 4096};
    fields(g, replica_names, 14, replica_field, &a);
}

static int decode_replica(const void *buf, size_t len)
{
    struct rf_replica *o = NULL;
    int rc = rf_replica_decode(buf, len, "replicas/fuzz", &o);
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
    return rc;
}

START_TEST(fuzz_replicas)
{
    run("replica records", build_replica, decode_replica);
}
END_TEST

static const char *const lease_names[] = {"schema", "leases"};

static void lease_field(struct gen *g, void *arg, int i)
{
    (void)arg;
    if (i == 0) {
        u64(g, 1);
        return;
    }
    uint32_t n = (uint32_t)(rnd() % 5);
    head(g, 0, n);
    for (uint32_t k = 0; k < n; k++) {
        head(g, 0, chance(97) ? 3 : 2);
        id(g, "puller-1");
        u64(g, 99999999999ull);
        u64(g, 2);
    }
}

static void build_lease(struct gen *g)
{
    fields(g, lease_names, 2, lease_field, NULL);
}

static int decode_lease(const void *buf, size_t len)
{
    struct rf_lease *l = NULL;
    size_t n = 0;
    int rc = rf_lease_decode(buf, len, "load/fuzz", &l, &n);
    if (!rc) {
        for (size_t i = 0; i < n; i++)
            ck_assert_int_eq(refit_check_id("puller", l[i].id), 0);
        free(l);
    }
    return rc;
}

START_TEST(fuzz_leases)
{
    run("lease lists", build_lease, decode_lease);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Catalogs */

static const char *const catalog_names[] = {"schema", "regions", "tensors"};

static void cat_tensor(struct gen *g, int i)
{
    static const char *const roles[] = {"replicated", "column", "row", "expert_column", "vocab", "nonsense"};
    int role = (int)(rnd() % 5), axis = role == 0 ? -1 : role == 2 ? 1 : 0;
    uint64_t r = 1 + rnd() % 64, c = 1 + rnd() % 64, parts = 1 + rnd() % 4;
    uint64_t g0 = axis == 0 ? r * parts : r, g1 = axis == 1 ? c * parts : c;
    char name[32];
    snprintf(name, sizeof(name), "t%d", chance(97) ? i : 0);
    head(g, 0, chance(95) ? 14 : 13 + (uint32_t)(rnd() % 4));
    str(g, name);
    str(g, chance(97) ? "BF16" : "NOPE");
    str(g, roles[chance(97) ? role : 5]);
    head(g, 0, 2);
    u64(g, r);
    u64(g, c);
    head(g, 0, 2);
    u64(g, g0);
    u64(g, g1);
    msgpack_pack_int64(&g->pk, chance(97) ? axis : (int64_t)(rnd() % 9) - 2);
    u64(g, axis < 0 ? 0 : (axis == 0 ? r : c) * (rnd() % parts));
    u64(g, axis < 0 ? 0 : axis == 0 ? r : c);
    msgpack_pack_int64(&g->pk, role == 3 ? (int64_t)(rnd() % 8) : -1);
    u64(g, rnd() % 2);
    u64(g, (uint64_t)i * 16384);
    u64(g, r * c * 2);
    u64(g, rnd());
    u64(g, 1 + rnd() % 64);
}

static void catalog_field(struct gen *g, void *arg, int i)
{
    (void)arg;
    if (i == 0) {
        u64(g, 1);
    } else if (i == 1) {
        head(g, 0, 2);
        u64(g, 1 << 20);
        u64(g, 1 << 20);
    } else {
        uint32_t n = (uint32_t)(rnd() % 6);
        head(g, 0, n);
        for (uint32_t t = 0; t < n; t++)
            cat_tensor(g, (int)t);
    }
}

static void build_catalog(struct gen *g)
{
    fields(g, catalog_names, 3, catalog_field, NULL);
}

static int decode_catalog(const void *buf, size_t len)
{
    refit_catalog_t *c = NULL;
    int rc = refit_catalog_decode(buf, len, "catalogs/fuzz", &c);
    if (!rc) {
        for (size_t i = 0; i < c->n_tensors; i++) {
            const struct refit_cat_tensor *t = &c->tensors[i];
            ck_assert(t->name && t->name[0] && t->ndim <= REFIT_MAX_DIMS && t->region < c->n_regions);
            ck_assert((unsigned __int128)t->offset + t->nbytes <= c->region_len[t->region]);
            ck_assert_int_eq(refit_catalog_find(c, t->name), (ptrdiff_t)i);
        }
        refit_catalog_destroy(c);
    }
    return rc;
}

START_TEST(fuzz_catalogs)
{
    run("catalogs", build_catalog, decode_catalog);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Source records, acks, heartbeats */

static const char *const record_names[] = {"schema", "source", "model", "layout", "transport", "address",
                                           "rkeys", "catalog", "version", "status", "heartbeat", "keeps", "sender"};

static void record_field(struct gen *g, void *arg, int i)
{
    (void)arg;
    static const uint8_t h[16] = {7};
    switch (i) {
    case 0: u64(g, 1); break;
    case 1: id(g, "tp0"); break;
    case 2: chance(98) ? str(g, "qwen3") : wrong(g, 0); break;
    case 3:
        head(g, 0, 8);
        for (int k = 0; k < 8; k++)
            u64(g, k % 2 ? 2 : 1);
        break;
    case 4: chance(98) ? str(g, "tcp") : wrong(g, 0); break;
    case 5: bin(g, "addr", 4); break;
    case 6: {
        uint32_t n = (uint32_t)(rnd() % 3);
        head(g, 0, n);
        for (uint32_t k = 0; k < n; k++)
            bin(g, "rk", 2);
        break;
    }
    case 7: bin(g, h, 16); break;
    case 8: u64(g, 5); break;
    case 9: chance(97) ? str(g, chance(80) ? "READY" : "STALE") : wrong(g, 0); break;
    case 10: u64(g, 1000); break;
    case 11: u64(g, 2); break;
    default: /* sender: a name, empty, or one with a NUL */
        if (chance(90))
            str(g, "rank-0-tcp");
        else if (chance(50))
            msgpack_pack_str_with_body(&g->pk, "a\0b", 3);
        else
            str(g, "");
        break;
    }
}

static void build_record(struct gen *g)
{
    fields(g, record_names, 13, record_field, NULL);
}

static int decode_record(const void *buf, size_t len)
{
    struct refit_source_record *r = NULL;
    int rc = refit_record_decode(buf, len, "sources/fuzz", &r);
    if (!rc) {
        ck_assert(r->status >= REFIT_SOURCE_INIT && r->status <= REFIT_SOURCE_STALE);
        ck_assert(r->layout.tp_rank < r->layout.tp_size && r->layout.ep_rank < r->layout.ep_size);
        ck_assert_int_eq(refit_check_id("source", r->source_id), 0);
        ck_assert_uint_le(r->keeps, 2);
        ck_assert(!r->sender || (*r->sender && strlen(r->sender) <= REFIT_RECORD_MAX_STRING));
        for (size_t i = 0; i < r->n_rkeys; i++)
            ck_assert_uint_le(r->rkeys[i].len, REFIT_RECORD_MAX_BLOB);
        free(r);
    }
    return rc;
}

START_TEST(fuzz_records)
{
    run("source records", build_record, decode_record);
}
END_TEST

static const char *const ack_names[] = {"schema", "version", "receiver", "time"};

static void ack_field(struct gen *g, void *arg, int i)
{
    (void)arg;
    if (i == 2)
        id(g, "engine-3");
    else
        u64(g, i == 0 ? 1 : 77);
}

static void build_ack(struct gen *g)
{
    fields(g, ack_names, 4, ack_field, NULL);
}

static int decode_ack(const void *buf, size_t len)
{
    struct refit_ack *a = NULL;
    int rc = refit_ack_decode(buf, len, "versions/9/acks/fuzz", &a);
    if (!rc) {
        ck_assert_int_eq(refit_check_id("receiver", a->receiver), 0);
        free(a);
    }
    return rc;
}

START_TEST(fuzz_acks)
{
    run("acks", build_ack, decode_ack);
}
END_TEST

static const char *const hb_names[] = {"schema", "source", "version", "time"};

static void hb_field(struct gen *g, void *arg, int i)
{
    (void)arg;
    if (i == 1)
        id(g, "tp0");
    else
        u64(g, i == 0 ? 1 : 1000);
}

static void build_heartbeat(struct gen *g)
{
    fields(g, hb_names, 4, hb_field, NULL);
}

static int decode_heartbeat(const void *buf, size_t len)
{
    uint64_t t = 0;
    return refit_heartbeat_decode(buf, len, "heartbeats/fuzz", &t);
}

START_TEST(fuzz_heartbeats)
{
    run("heartbeats", build_heartbeat, decode_heartbeat);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Checksum segments (little-endian words, not msgpack): built with honest or
 * lying counts and a valid trailer, so the structure checks are reached. */

static refit_catalog_t *sums_cat;
static struct refit_hash128 sums_hash;

static void le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* A checksum segment (sums.h) of sums_cat's one segment (its tensors are
 * small: all in segment 0), built field by field. */
static void build_sums(struct gen *g)
{
    size_t nt = sums_cat->n_tensors, cap = 64 + 8 * (nt * 8 + 16), n = 0;
    uint8_t *b = calloc(1, cap);
    memcpy(b, "RFSUMS02", 8);
    le64(b + 8, chance(97) ? 3 : 4);
    memcpy(b + 16, sums_hash.b, 16);
    if (chance(3))
        b[20] ^= 1;
    le64(b + 32, chance(97) ? 0 : edge());
    le64(b + 40, chance(97) ? 0 : edge());
    le64(b + 48, chance(96) ? nt : edge());
    n = 56;
    for (size_t t = 0; t < nt + (chance(3) ? 1 : 0) && n + 16 <= cap - 8; t++) {
        const struct refit_cat_tensor *ct = t < nt ? &sums_cat->tensors[t] : &sums_cat->tensors[0];
        uint64_t rows = ct->shape[0], want = (rows + ct->chunk_rows - 1) / ct->chunk_rows;
        uint64_t nc = chance(90) ? (chance(30) ? 0 : want) : edge();
        le64(b + n, nc);
        le64(b + n + 8, rnd());
        n += 16;
        for (uint64_t k = 0; k < nc && k < want + 2 && n + 8 <= cap - 8; k++, n += 8)
            le64(b + n, rnd());
    }
    if (chance(3) && n >= 64)
        n -= 8 * (1 + rnd() % 2);
    le64(b + n, XXH3_64bits(b, n));
    n += 8;
    msgpack_sbuffer_write(&g->sb, (const char *)b, n);
    free(b);
}

static int decode_sums(const void *buf, size_t len)
{
    struct rf_sums s;
    uint64_t *want;
    uint32_t *seg;
    size_t n_seg;
    ck_assert_int_eq(rf_sums_cat_segments(sums_cat, &want, &seg, &n_seg), 0);
    ck_assert_uint_eq(n_seg, 1);
    ck_assert_int_eq(rf_sums_prepare(&s, sums_cat->n_tensors), 0);
    int rc = rf_sums_decode_seg(buf, len, "versions/3/sums/fuzz/0", sums_cat, &sums_hash, 3, seg, 0, &s);
    if (rc == REFIT_ESTALE || rc == REFIT_ECHECKSUM)
        rc = REFIT_EPROTO; /* a segment of another version or catalog, a broken trailer: refused as well */
    for (size_t t = 0; !rc && t < s.n_tensors; t++)
        for (uint64_t k = 0; k < want[t] + 2; k++) {
            int have;
            uint64_t v = rf_sums_chunk(&s, t, k, &have);
            (void)v;
            ck_assert(!have || k < want[t]);
        }
    rf_sums_fini(&s);
    free(want);
    free(seg);
    return rc;
}

START_TEST(fuzz_sums)
{
    ck_assert_int_eq(refit_catalog_create(&sums_cat), 0);
    uint32_t reg;
    ck_assert_int_eq(refit_catalog_add_region(sums_cat, 1 << 22, &reg), 0);
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof(name), "w%d", i);
        uint64_t rows = 1 + (uint64_t)i * 37, cols = 64;
        struct refit_cat_tensor t = {.name = name, .dtype = REFIT_DTYPE_BF16, .role = REFIT_CAT_ROLE_REPLICATED,
                                     .ndim = 2, .shape = {rows, cols}, .global_shape = {rows, cols}, .shard_axis = -1,
                                     .expert = -1, .region = reg, .offset = (uint64_t)i * 65536,
                                     .nbytes = rows * cols * 2, .chunk_rows = 16};
        ck_assert_int_eq(refit_catalog_add(sums_cat, &t), 0);
    }
    void *enc;
    size_t len;
    ck_assert_int_eq(refit_catalog_encode(sums_cat, &enc, &len), 0);
    refit_hash128_of(enc, len, &sums_hash);
    free(enc);
    run("checksum segments", build_sums, decode_sums);
    refit_catalog_destroy(sums_cat);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Checksum segments (sums.h): every segment of a version round-trips into
 * one prepared rf_sums; a segment under another index, of another version
 * or with a broken trailer is refused; mutated segments (trailer re-sealed)
 * decode or are refused, never read past their words. */

START_TEST(sums_segments)
{
    refit_catalog_t *cat;
    ck_assert_int_eq(refit_catalog_create(&cat), 0);
    uint32_t reg;
    ck_assert_int_eq(refit_catalog_add_region(cat, 1ull << 30, &reg), 0);
    /* Small tensors around two that fill a segment alone (600 and 1000 chunks). */
    const uint64_t rows_of[] = {16, 40, 9600, 3, 160, 16000, 50, 50, 50, 1};
    size_t nt = sizeof(rows_of) / sizeof(rows_of[0]);
    uint64_t off = 0;
    for (size_t i = 0; i < nt; i++) {
        char name[16];
        snprintf(name, sizeof(name), "w%zu", i);
        struct refit_cat_tensor t = {.name = name, .dtype = REFIT_DTYPE_BF16, .role = REFIT_CAT_ROLE_REPLICATED,
                                     .ndim = 2, .shape = {rows_of[i], 8}, .global_shape = {rows_of[i], 8},
                                     .shard_axis = -1, .expert = -1, .region = reg, .offset = off,
                                     .nbytes = rows_of[i] * 16, .chunk_rows = 16};
        off += t.nbytes;
        ck_assert_int_eq(refit_catalog_add(cat, &t), 0);
    }
    void *enc;
    size_t len;
    struct refit_hash128 h;
    ck_assert_int_eq(refit_catalog_encode(cat, &enc, &len), 0);
    refit_hash128_of(enc, len, &h);
    free(enc);
    uint64_t *want;
    uint32_t *seg;
    size_t n_seg;
    ck_assert_int_eq(rf_sums_cat_segments(cat, &want, &seg, &n_seg), 0);
    ck_assert_uint_ge(n_seg, 4); /* the two big tensors alone, small ones around them */
    ck_assert_uint_ne(seg[1], seg[2]);
    ck_assert_uint_ne(seg[2], seg[3]);
    /* Tensor 4 published without checksums (n_chunks 0). */
    struct rf_sums s;
    ck_assert_int_eq(rf_sums_init(&s, nt), 0);
    for (size_t t = 0; t < nt; t++) {
        uint64_t nc = t == 4 ? 0 : want[t], *ch = calloc(nc + 1, 8);
        for (uint64_t k = 0; k < nc; k++)
            ch[k] = t * 100000 + k;
        ck_assert_int_eq(rf_sums_put(&s, 7 + t, ch, nc), 0);
        free(ch);
    }
    void **bufs;
    size_t *lens;
    ck_assert_int_eq(rf_sums_encode_segs(&s, seg, n_seg, &h, 3, &bufs, &lens), 0);
    struct rf_sums acc;
    ck_assert_int_eq(rf_sums_prepare(&acc, nt), 0);
    /* Every segment but the one of tensor 2, in reverse order. */
    for (size_t k = n_seg; k-- > 0;)
        if (k != seg[2])
            ck_assert_msg(rf_sums_decode_seg(bufs[k], lens[k], "seg", cat, &h, 3, seg, k, &acc) == 0, "%s",
                          refit_error_message());
    for (size_t t = 0; t < nt; t++)
        for (uint64_t k = 0; k < want[t] + 1; k++) {
            int have;
            uint64_t v = rf_sums_chunk(&acc, t, k, &have);
            int expect = t != 2 && t != 4 && k < want[t];
            ck_assert_int_eq(have, expect);
            if (expect)
                ck_assert_uint_eq(v, t * 100000 + k);
        }
    /* The identity of the checksums (the delta stage's base_sums) is the
     * publisher's once every segment is in, whatever their order. */
    size_t k0 = seg[0], k1 = seg[2];
    uint64_t id = rf_sums_segs_id(bufs, lens, n_seg);
    ck_assert_uint_ne(acc.id, id);
    ck_assert_int_eq(rf_sums_decode_seg(bufs[k1], lens[k1], "seg", cat, &h, 3, seg, k1, &acc), 0);
    ck_assert_uint_eq(acc.id, id);
    ck_assert_uint_ne(id, rf_sums_segs_id(bufs, lens, n_seg - 1));
    ck_assert_int_eq(rf_sums_decode_seg(bufs[k0], lens[k0], "seg", cat, &h, 3, seg, k1, &acc), REFIT_EPROTO);
    ck_assert_int_eq(rf_sums_decode_seg(bufs[k0], lens[k0], "seg", cat, &h, 4, seg, k0, &acc), REFIT_ESTALE);
    uint8_t *bad = malloc(lens[k1]);
    memcpy(bad, bufs[k1], lens[k1]);
    bad[60] ^= 1;
    ck_assert_int_eq(rf_sums_decode_seg(bad, lens[k1], "seg", cat, &h, 3, seg, k1, &acc), REFIT_ECHECKSUM);
    /* Mutations with a valid trailer: decoded or refused as malformed. */
    for (int i = 0; i < 3000; i++) {
        size_t k = (size_t)(rnd() % n_seg), l = lens[k];
        uint8_t *m = malloc(l);
        memcpy(m, bufs[k], l);
        if (chance(50) && l > 64)
            l -= 8 * (1 + rnd() % 3);
        size_t at = (size_t)(rnd() % (l - 8));
        le64(m + (at & ~(size_t)7), chance(50) ? edge() : rnd() % 1100);
        le64(m + l - 8, XXH3_64bits(m, l - 8));
        struct rf_sums t;
        ck_assert_int_eq(rf_sums_prepare(&t, nt), 0);
        int rc = rf_sums_decode_seg(m, l, "seg", cat, &h, 3, seg, k, &t);
        ck_assert_msg(rc == 0 || rc == REFIT_EPROTO || rc == REFIT_ESTALE, "rc %d: %s", rc, refit_error_message());
        rf_sums_fini(&t);
        free(m);
    }
    free(bad);
    for (size_t k = 0; k < n_seg; k++)
        free(bufs[k]);
    free(bufs);
    free(lens);
    free(want);
    free(seg);
    rf_sums_fini(&s);
    rf_sums_fini(&acc);
    refit_catalog_destroy(cat);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Delta records (delta_eng.h), against the catalog of the checksum segments */

static const char *const delta_names[] = {"schema", "version", "base", "catalog", "base_sums", "rkey", "data_len",
                                          "index"};

static uint64_t delta_chunks(void)
{
    uint64_t n = 0;
    for (size_t t = 0; t < sums_cat->n_tensors; t++)
        n += (sums_cat->tensors[t].shape[0] + 15) / 16;
    return n;
}

static void delta_field(struct gen *g, void *arg, int i)
{
    uint32_t *len = arg;
    uint64_t n = delta_chunks(), sum = 0;
    for (uint64_t k = 0; k < n; k++)
        sum += len[k] == RF_DELTA_ABSENT ? 0 : len[k];
    switch (i) {
    case 0: u64(g, 1); break;
    case 1: u64(g, 5); break;
    case 2: u64(g, 4); break;
    case 3: bin(g, sums_hash.b, 16); break;
    case 4: u64(g, rnd()); break;
    case 5: bin(g, "key", 3); break;
    case 6: u64(g, sum); break;
    default: {
        uint8_t b[4096];
        uint64_t m = chance(95) ? n : n + 1 - 2 * (rnd() % 2);
        for (uint64_t k = 0; k < m && k < n + 1; k++)
            for (int j = 0; j < 4; j++)
                b[k * 4 + (uint64_t)j] = (uint8_t)(len[k < n ? k : 0] >> (8 * j));
        if (chance(2))
            wrong(g, 0);
        else
            msgpack_pack_bin_with_body(&g->pk, b, (size_t)(m * 4 - (chance(2) ? 1 : 0)));
    }
    }
}

static void build_delta(struct gen *g)
{
    uint32_t len[1024];
    uint64_t n = delta_chunks();
    for (uint64_t k = 0; k < n; k++)
        len[k] = chance(50) ? 0 : chance(90) ? (uint32_t)(rnd() % 600) : chance(50) ? RF_DELTA_ABSENT : (uint32_t)edge();
    fields(g, delta_names, 8, delta_field, len);
}

static int decode_delta(const void *buf, size_t len)
{
    struct rf_delta_rec *r = NULL;
    int rc = rf_delta_rec_decode(buf, len, "versions/5/delta/fuzz", sums_cat, &r);
    if (!rc) {
        ck_assert_uint_eq(r->n_index, delta_chunks());
        ck_assert(r->base < r->version);
        for (size_t k = 0; k < r->n_index; k++)
            if (r->len[k] != RF_DELTA_ABSENT) {
                ck_assert_uint_le(r->len[k], 2048 + 4);
                ck_assert_uint_le(r->off[k] + r->len[k], r->data_len);
            }
        rf_delta_rec_free(r);
    }
    return rc;
}

START_TEST(fuzz_delta_records)
{
    ck_assert_int_eq(refit_catalog_create(&sums_cat), 0);
    uint32_t reg;
    ck_assert_int_eq(refit_catalog_add_region(sums_cat, 1 << 22, &reg), 0);
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof(name), "w%d", i);
        uint64_t rows = 1 + (uint64_t)i * 37, cols = 64;
        struct refit_cat_tensor t = {.name = name, .dtype = REFIT_DTYPE_BF16, .role = REFIT_CAT_ROLE_REPLICATED,
                                     .ndim = 2, .shape = {rows, cols}, .global_shape = {rows, cols}, .shard_axis = -1,
                                     .expert = -1, .region = reg, .offset = (uint64_t)i * 65536,
                                     .nbytes = rows * cols * 2, .chunk_rows = 16};
        ck_assert_int_eq(refit_catalog_add(sums_cat, &t), 0);
    }
    void *enc;
    size_t len;
    ck_assert_int_eq(refit_catalog_encode(sums_cat, &enc, &len), 0);
    refit_hash128_of(enc, len, &sums_hash);
    free(enc);
    run("delta records", build_delta, decode_delta);
    refit_catalog_destroy(sums_cat);
}
END_TEST

int main(void)
{
    const char *v = getenv("REFIT_FUZZ_SEED");
    if (v && *v)
        rng = strtoull(v, NULL, 0) | 1;
    if ((v = getenv("REFIT_FUZZ_SECONDS")) && *v)
        seconds = strtod(v, NULL);
    if ((v = getenv("REFIT_FUZZ_ITERS")) && *v)
        max_iters = (size_t)strtoull(v, NULL, 0);
    printf("structural fuzz: seed 0x%" PRIx64 ", %.1f s or %zu documents per decoder\n", rng, seconds, max_iters);
    Suite *s = suite_create("fuzz-decoders");
    TCase *tc = tcase_create("structure");
    tcase_set_timeout(tc, 60 + seconds * 4);
    tcase_add_test(tc, fuzz_work_lists);
    tcase_add_test(tc, fuzz_adverts);
    tcase_add_test(tc, fuzz_replicas);
    tcase_add_test(tc, fuzz_leases);
    tcase_add_test(tc, fuzz_catalogs);
    tcase_add_test(tc, fuzz_records);
    tcase_add_test(tc, fuzz_acks);
    tcase_add_test(tc, fuzz_heartbeats);
    tcase_add_test(tc, fuzz_sums);
    tcase_add_test(tc, sums_segments);
    tcase_add_test(tc, fuzz_delta_records);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
