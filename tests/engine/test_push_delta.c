/* test_push_delta.c — delta refit in push mode (docs/delta.md, "Push
 * mode"): a publisher (refit.mode: push, refit.delta.enabled) publishing in
 * a thread of this process, over tcp and a file store, into a push
 * receiver with delta on beside one without (the full push refit), the
 * trainer changing about 1 % of its bf16 elements per version.  Every pull
 * must leave the delta receiver byte-identical to the full one, and:
 *   - consecutive versions go by delta, with a fraction of the wire bytes;
 *   - a skipped version and a restarted receiver are pushed whole (the
 *     advert's base is not the base of the publisher's delta, or none);
 *   - a torn delta record makes the receiver ask for the wrong ranges: the
 *     result fails the checks and the version is pulled whole, never
 *     committed wrong;
 *   - an advert whose delta request lies (ranges past the delta, a skip
 *     bitmap of the wrong size, another version) is refused with an error
 *     naming the receiver and the field, before a byte moves. */
#include <pthread.h>

#include "harness.h"

#include <stdint.h>
#include <xxhash.h>

#include "../check_run.h"
/* (core/src/engine, not core/src: its sched.h would hide the system one) */
#include "delta_eng.h"
#include "th_delta.h"
#include "push_work.h"

static char dir[256], ckpt[300], cfg_path[300], ns[32];

static void setup(void)
{
    th_workdir(REFIT_BIN, "pushdelta", 1, 1024, dir, sizeof(dir), ckpt, sizeof(ckpt));
    th_cluster_file(dir, ckpt, "pd", ns, sizeof(ns), cfg_path, sizeof(cfg_path));
}

static void teardown(void)
{
    th_rmdir(dir);
}

static refit_context_t *context(int delta, const char *receivers)
{
    const char *ovr[4] = {"refit.mode=push", delta ? "refit.delta.enabled=true" : "refit.delta.enabled=false",
                          "refit.timeout=20s", receivers};
    return th_context(cfg_path, ovr, receivers ? 4 : 3);
}

/* One trainer step: about one element in 97 moves by one or two ulps. */
static void step(struct refit_standin_shard *sh, uint64_t v)
{
    for (size_t i = 0; i < sh->n; i++) {
        uint16_t *u = sh->t[i].data;
        size_t n = sh->t[i].nbytes / 2;
        for (size_t k = (size_t)(v * 31) % 97; k < n; k += 97)
            u[k] = (uint16_t)(u[k] + (k & 1 ? 1 : 0xffff) * (uint16_t)(1 + (v & 1)));
    }
}

struct rig {
    refit_context_t *pctx, *fctx, *dctx;
    refit_publisher_t *pub;
    struct refit_standin_shard sh;
    refit_receiver_t *full, *dr, *spare;
    /* The publish in flight. */
    pthread_t th;
    uint64_t v;
    int rc;
    char err[1024];
};

static void rig_open(struct rig *g, const char *receivers)
{
    memset(g, 0, sizeof(*g));
    g->pctx = context(1, receivers ? receivers : "refit.receivers=2");
    g->fctx = context(0, NULL);
    g->dctx = context(1, NULL);
    struct refit_parallel par = {.tp_rank = 0, .tp_size = 1, .ep_size = 1, .pp_size = 1, .etp_size = 1};
    ck_assert_msg(refit_standin_shard_load(refit_context_model(g->pctx), ckpt, &par, &g->sh) == 0, "%s",
                  refit_error_message());
    ck_assert_msg(refit_publisher_create(g->pctx, &par, "trainer0", &g->pub) == 0, "%s", refit_error_message());
    for (size_t i = 0; i < g->sh.n; i++)
        ck_assert_msg(refit_publisher_add(g->pub, g->sh.t[i].name, g->sh.t[i].data, g->sh.t[i].dtype,
                                          g->sh.t[i].ndim, g->sh.t[i].shape, REFIT_MEM_HOST) == 0,
                      "%s", refit_error_message());
    g->full = th_receiver(g->fctx, "full", 1, 0);
    g->dr = th_receiver(g->dctx, "delta", 1, 0);
    g->spare = th_receiver(g->fctx, "spare", 1, 0);
}

static void rig_close(struct rig *g)
{
    refit_receiver_destroy(g->spare);
    refit_receiver_destroy(g->dr);
    refit_receiver_destroy(g->full);
    refit_publisher_destroy(g->pub);
    refit_standin_shard_free(&g->sh);
    refit_context_destroy(g->dctx);
    refit_context_destroy(g->fctx);
    refit_context_destroy(g->pctx);
}

static void *publish_main(void *arg)
{
    struct rig *g = arg;
    g->rc = refit_publisher_publish(g->pub, g->v);
    snprintf(g->err, sizeof(g->err), "%s", g->rc ? refit_error_message() : "");
    return NULL;
}

/* The trainer steps to v and publishes it in a thread (a push publish
 * returns once the receivers it waits for have advertised and been
 * written). */
static void publish_start(struct rig *g, uint64_t v)
{
    if (v > 1)
        step(&g->sh, v);
    g->v = v;
    ck_assert_int_eq(pthread_create(&g->th, NULL, publish_main, g), 0);
    /* READY before anyone pulls: a receiver that starts first sleeps a
     * discovery poll (500 ms) per version. */
    th_wait_ready(g->dctx, "trainer0", v);
}

static int publish_join(struct rig *g)
{
    ck_assert_int_eq(pthread_join(g->th, NULL), 0);
    return g->rc;
}

static void same(refit_receiver_t *full, refit_receiver_t *dr, uint64_t v)
{
    size_t n;
    char *want = th_snapshot(full, &n);
    ck_assert_msg(th_same_as(dr, want), "v%llu: the push delta refit differs from the full push",
                  (unsigned long long)v);
    free(want);
}

/* v pushed into the full receiver and `b` (the delta receiver or the spare). */
static struct refit_pull_stats push_pair(struct rig *g, refit_receiver_t *b, uint64_t v, struct refit_pull_stats *f)
{
    publish_start(g, v);
    *f = th_pull(g->full, v);
    struct refit_pull_stats d = th_pull(b, v);
    ck_assert_msg(publish_join(g) == 0, "publish v%llu: %s", (unsigned long long)v, g->err);
    same(g->full, b, v);
    return d;
}

/* Versions from..from+steps-1 pushed, each after the first by delta. */
static void run_steps(struct rig *g, uint64_t from, int steps, int first_whole)
{
    for (uint64_t v = from; v < from + (uint64_t)steps; v++) {
        struct refit_pull_stats f, d = push_pair(g, g->dr, v, &f);
        if (first_whole && v == from) {
            ck_assert_uint_eq(d.delta_descriptors, 0);
            continue;
        }
        ck_assert_msg(d.delta_descriptors > 0 && !d.delta_fallbacks, "v%llu: not pushed by delta (%u, %u)",
                      (unsigned long long)v, d.delta_descriptors, d.delta_fallbacks);
        ck_assert_msg(d.bytes_delta > 0 && d.bytes_wire * 5 < f.bytes_wire, "v%llu: %llu wire bytes by delta, "
                      "%llu whole", (unsigned long long)v, (unsigned long long)d.bytes_wire,
                      (unsigned long long)f.bytes_wire);
    }
}

START_TEST(push_by_delta)
{
    struct rig g;
    rig_open(&g, NULL);
    run_steps(&g, 1, 3, 1);
    struct refit_publisher_stats ps = {.size = sizeof(ps)};
    ck_assert_int_eq(refit_publisher_stats(g.pub, &ps), 0);
    ck_assert(ps.delta_bytes != UINT64_MAX && ps.delta_bytes > 0);
    rig_close(&g);
}
END_TEST

/* One fixture for both (each push costs a publish): a skipped version,
 * then a restarted receiver, each pushed whole, then by delta again. */
START_TEST(skipped_version_and_restart_pushed_whole)
{
    struct rig g;
    rig_open(&g, NULL);
    run_steps(&g, 1, 2, 1);
    /* v3 goes to the spare; the delta receiver holds v2 when v4's delta
     * (made from v3) is published: its advert says v2, the push is whole. */
    struct refit_pull_stats f, d;
    push_pair(&g, g.spare, 3, &f);
    d = push_pair(&g, g.dr, 4, &f);
    ck_assert_uint_eq(d.delta_descriptors, 0);
    ck_assert_uint_eq(d.bytes_delta, 0);
    ck_assert_uint_eq(d.bytes_wire, f.bytes_wire);
    /* Restarted: it holds nothing, asks for nothing. */
    refit_receiver_destroy(g.dr);
    g.dr = th_receiver(g.dctx, "delta", 1, 0);
    run_steps(&g, 5, 2, 1);
    rig_close(&g);
}
END_TEST

/* A store of ctx's configuration. */
static refit_store_t *store_of(refit_context_t *ctx, refit_loader_t **ld)
{
    refit_store_t *st;
    ck_assert_int_eq(refit_loader_create((refit_config_t *)refit_context_config(ctx), ld), 0);
    ck_assert_int_eq(refit_store_open((refit_config_t *)refit_context_config(ctx), *ld, NULL, &st), 0);
    return st;
}

static struct rf_delta_rec *delta_record(refit_store_t *st, uint64_t v, refit_catalog_t **cat)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    ck_assert_int_eq(rf_key_delta(key, v, "trainer0"), 0);
    void *blob = NULL;
    size_t len = 0;
    ck_assert_int_eq(refit_store_get(st, key, &blob, &len), 0);
    struct refit_source_record *rec = NULL;
    ck_assert_int_eq(refit_record_fetch(st, "trainer0", &rec), 0);
    ck_assert_int_eq(refit_catalog_fetch(st, &rec->catalog, cat), 0);
    struct rf_delta_rec *d = NULL;
    ck_assert_msg(rf_delta_rec_decode(blob, len, key, *cat, &d) == 0, "%s", refit_error_message());
    free(rec);
    free(blob);
    return d;
}


START_TEST(torn_delta_pulled_whole)
{
    struct rig g;
    rig_open(&g, NULL);
    run_steps(&g, 1, 2, 1);
    publish_start(&g, 3);
    th_delta_tear(g.dctx, 3, "trainer0");
    struct refit_pull_stats f = th_pull(g.full, 3), d = th_pull(g.dr, 3);
    ck_assert_msg(publish_join(&g) == 0, "publish v3: %s", g.err);
    same(g.full, g.dr, 3);
    ck_assert_msg(d.delta_fallbacks == 1, "a torn delta was not noticed");
    (void)f;
    run_steps(&g, 4, 1, 0); /* the whole pull left the mirror at v3 */
    rig_close(&g);
}
END_TEST

/* The delta receiver's advert of its last push, decoded (blob kept). */
static void *advert_of(refit_store_t *st, const char *rid, struct push_advert *a)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    snprintf(key, sizeof(key), "push/slots/%s", rid);
    void *blob = NULL;
    size_t len = 0;
    ck_assert_int_eq(refit_store_get(st, key, &blob, &len), 0);
    ck_assert_msg(rf_push_advert_decode(blob, len, key, a) == 0, "%s", refit_error_message());
    return blob;
}

/* A forged advert "forger" for v (the delta receiver's work list and
 * address) asking trainer0 for the delta of v from exactly its base, with
 * `ranges` and `skip` as given; the publish must fail naming `field`. */
static void forged(struct rig *g, uint64_t v, uint64_t ask_v, const uint8_t *ranges, size_t n_ranges,
                   const uint8_t *skip, size_t skip_len, const char *field)
{
    publish_start(g, v);
    refit_loader_t *ld;
    refit_store_t *st = store_of(g->dctx, &ld);
    refit_catalog_t *cat = NULL;
    struct rf_delta_rec *rec = delta_record(st, v, &cat);
    struct push_advert a;
    void *blob = advert_of(st, "delta", &a);
    struct push_adelta e = {.version = ask_v, .base = rec->base, .base_sums = rec->base_sums, .rk = "key",
                            .rk_len = 3, .ranges = ranges, .n_ranges = n_ranges, .skip = skip, .skip_len = skip_len};
    snprintf(e.source, sizeof(e.source), "trainer0");
    struct push_advert fa = a;
    fa.version = v;
    snprintf(fa.receiver, sizeof(fa.receiver), "forger");
    fa.deltas = &e;
    fa.n_deltas = 1;
    void *out = NULL;
    size_t olen = 0;
    ck_assert_int_eq(rf_push_advert_encode(&fa, &out, &olen), 0);
    ck_assert_int_eq(refit_store_put(st, "push/slots/forger", out, olen), 0);
    ck_assert_msg(publish_join(g) != 0, "v%llu: a lying advert was served", (unsigned long long)v);
    ck_assert_msg(strstr(g->err, "receiver forger") && strstr(g->err, field), "v%llu: %s", (unsigned long long)v,
                  g->err);
    ck_assert_int_eq(refit_store_del(st, "push/slots/forger"), 0);
    free(out);
    free(blob);
    rf_delta_rec_free(rec);
    refit_catalog_destroy(cat);
    refit_store_close(st);
    refit_loader_destroy(ld);
}

static void put_range(uint8_t *q, uint64_t at, uint64_t to, uint64_t len)
{
    uint64_t f[3] = {at, to, len};
    for (int k = 0; k < 3; k++)
        for (int b = 0; b < 8; b++)
            q[8 * k + b] = (uint8_t)(f[k] >> (8 * b));
}

START_TEST(lying_advert_refused)
{
    struct rig g;
    rig_open(&g, "refit.receivers=1");
    /* The delta receiver alone (one advert per publish). */
    for (uint64_t v = 1; v <= 2; v++) {
        publish_start(&g, v);
        struct refit_pull_stats d = th_pull(g.dr, v);
        ck_assert_msg(publish_join(&g) == 0, "publish v%llu: %s", (unsigned long long)v, g.err);
        ck_assert(v == 1 || d.delta_descriptors > 0);
    }
    /* Work-list section of trainer0: the delta receiver's descriptors. */
    refit_loader_t *ld;
    refit_store_t *st = store_of(g.dctx, &ld);
    struct push_advert a;
    void *blob = advert_of(st, "delta", &a);
    char key[REFIT_STORE_MAX_KEY + 1];
    rf_key_push_work(key, &a.work);
    void *wb = NULL;
    size_t wl = 0;
    ck_assert_int_eq(refit_store_get(st, key, &wb, &wl), 0);
    struct push_work w;
    ck_assert_int_eq(rf_push_work_decode(wb, wl, key, "trainer0", &w), 0);
    ck_assert_uint_eq(w.n_s, 1);
    size_t nd = w.s[0].n_d, sl = (nd + 7) / 8;
    ck_assert_uint_gt(nd, 0);
    rf_push_work_free(&w);
    free(wb);
    free(blob);
    refit_store_close(st);
    refit_loader_destroy(ld);
    uint8_t *skip = calloc(sl + 1, 1), r1[RF_PUSH_RANGE_BYTES];
    ck_assert_ptr_nonnull(skip);
    memset(skip, 0xff, sl);
    if (nd % 8)
        skip[sl - 1] = (uint8_t)((1u << (nd % 8)) - 1);
    /* A range past the end of the delta. */
    put_range(r1, 0, 0, (uint64_t)1 << 40);
    forged(&g, 3, 3, r1, 1, skip, sl, "delta.ranges");
    /* A range whose end wraps. */
    put_range(r1, UINT64_MAX - 3, 0, 8);
    forged(&g, 4, 4, r1, 1, skip, sl, "delta.ranges");
    /* A request for another version; a bitmap one byte long; a padding bit set. */
    put_range(r1, 0, 0, 1);
    forged(&g, 5, 4, r1, 1, skip, sl, "delta.version");
    forged(&g, 6, 6, r1, 1, skip, sl + 1, "delta.skip");
    if (nd % 8) {
        skip[sl - 1] |= (uint8_t)(1u << (nd % 8));
        forged(&g, 7, 7, r1, 1, skip, sl, "delta.skip");
    }
    free(skip);
    rig_close(&g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("push-delta");
    TCase *tc = tcase_create("push-delta");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, push_by_delta);
    tcase_add_test(tc, skipped_version_and_restart_pushed_whole);
    tcase_add_test(tc, torn_delta_pulled_whole);
    tcase_add_test(tc, lying_advert_refused);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
