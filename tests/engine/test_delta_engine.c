/* test_delta_engine.c — delta refit through the engine (docs/delta.md):
 * publishers and receivers in one process over tcp and a file store, a
 * receiver with refit.delta.enabled beside one without (the full refit),
 * the trainer changing about 1 % of its bf16 elements per version.  Every
 * pull must leave the delta receiver byte-identical to the full one, and:
 *   - consecutive versions go by delta, with a fraction of the wire bytes;
 *   - a skipped version, a restarted receiver, a torn delta (an index that
 *     moves deltas onto the wrong chunks) each fall back to a whole pull;
 *   - TP2 -> TP1 (two sources resharded), an FP8 target, copy mode. */
#include "harness.h"

#include <stdint.h>

#include "../check_run.h"
#include "engine/delta_eng.h"
#include "th_delta.h"

static char dir[256], ckpt[300], cfg_path[300], ns[32];

static void setup(void)
{
    th_workdir(REFIT_BIN, "delta", 1, 1024, dir, sizeof(dir), ckpt, sizeof(ckpt));
    th_cluster_file(dir, ckpt, "d", ns, sizeof(ns), cfg_path, sizeof(cfg_path));
}

static void teardown(void)
{
    th_rmdir(dir);
}

/* A context with delta on or off and `extra` overrides. */
static refit_context_t *context(int delta, const char *extra1, const char *extra2)
{
    const char *ovr[3] = {delta ? "refit.delta.enabled=true" : "refit.delta.enabled=false", extra1, extra2};
    size_t n = 1 + (extra1 != NULL) + (extra2 != NULL);
    return th_context(cfg_path, ovr, n);
}

static refit_receiver_t *receiver(refit_context_t *ctx, const char *id)
{
    return th_receiver(ctx, id, 1, 0);
}

/* TP rank `rank` of `tp` with its stand-in shard. */
static refit_publisher_t *publisher(refit_context_t *ctx, int rank, int tp, struct refit_standin_shard *sh)
{
    struct refit_parallel par = {.tp_rank = rank, .tp_size = tp, .ep_size = 1, .pp_size = 1, .etp_size = 1};
    char id[32];
    snprintf(id, sizeof(id), "trainer%d", rank);
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher_at(ctx, ckpt, &par, id, sh, &pub) == 0, "%s", refit_error_message());
    return pub;
}

/* One trainer step: about one element in 97 moves by one or two ulps
 * (where, by version), the rest stays. */
static void step(struct refit_standin_shard *sh, uint64_t v)
{
    for (size_t i = 0; i < sh->n; i++) {
        uint16_t *u = sh->t[i].data;
        size_t n = sh->t[i].nbytes / 2;
        for (size_t k = (size_t)(v * 31) % 97; k < n; k += 97)
            u[k] = (uint16_t)(u[k] + (k & 1 ? 1 : 0xffff) * (uint16_t)(1 + (v & 1)));
    }
}

/* The delta receiver equals the full one. */
static void same(refit_receiver_t *full, refit_receiver_t *dr, uint64_t v)
{
    size_t n;
    char *want = th_snapshot(full, &n);
    ck_assert_msg(th_same_as(dr, want), "v%llu: the delta refit differs from the full refit", (unsigned long long)v);
    free(want);
}

struct rig {
    refit_context_t *pctx, *fctx;
    refit_publisher_t *pub[2];
    struct refit_standin_shard sh[2];
    int n_pub;
    refit_receiver_t *full, *dr;
};

static void rig_open(struct rig *g, int tp, const char *extra1, const char *extra2)
{
    memset(g, 0, sizeof(*g));
    g->pctx = context(1, extra1, extra2);
    g->fctx = context(0, extra1, extra2);
    g->n_pub = tp;
    for (int k = 0; k < tp; k++)
        g->pub[k] = publisher(g->pctx, k, tp, &g->sh[k]);
    g->full = receiver(g->fctx, "full");
    g->dr = receiver(g->pctx, "delta");
}

static void rig_publish(struct rig *g, uint64_t v)
{
    for (int k = 0; k < g->n_pub; k++) {
        if (v > 1)
            step(&g->sh[k], v);
        ck_assert_msg(refit_publisher_publish(g->pub[k], v) == 0, "%s", refit_error_message());
    }
}

static void rig_close(struct rig *g)
{
    refit_receiver_destroy(g->dr);
    refit_receiver_destroy(g->full);
    for (int k = 0; k < g->n_pub; k++) {
        refit_publisher_destroy(g->pub[k]);
        refit_standin_shard_free(&g->sh[k]);
    }
    refit_context_destroy(g->fctx);
    refit_context_destroy(g->pctx);
}

/* v1 whole, then `steps` versions by delta, each identical to the full refit. */
static void run_steps(struct rig *g, uint64_t from, int steps)
{
    for (uint64_t v = from; v < from + (uint64_t)steps; v++) {
        rig_publish(g, v);
        struct refit_pull_stats f = th_pull(g->full, v), d = th_pull(g->dr, v);
        same(g->full, g->dr, v);
        if (v == 1) {
            ck_assert_uint_eq(d.delta_descriptors, 0);
            continue;
        }
        ck_assert_msg(d.delta_descriptors > 0 && !d.delta_fallbacks, "v%llu: not pulled by delta (%u, %u)",
                      (unsigned long long)v, d.delta_descriptors, d.delta_fallbacks);
        ck_assert_msg(d.bytes_wire * 5 < f.bytes_wire, "v%llu: %llu wire bytes by delta, %llu whole",
                      (unsigned long long)v, (unsigned long long)d.bytes_wire, (unsigned long long)f.bytes_wire);
    }
}

START_TEST(pull_by_delta)
{
    struct rig g;
    rig_open(&g, 1, NULL, NULL);
    run_steps(&g, 1, 3);
    struct refit_publisher_stats ps = {.size = sizeof(ps)};
    ck_assert_int_eq(refit_publisher_stats(g.pub[0], &ps), 0);
    ck_assert(ps.delta_bytes != UINT64_MAX && ps.delta_changed > 0 && ps.delta_changed < ps.delta_units / 50);
    rig_close(&g);
}
END_TEST

START_TEST(skipped_version_pulls_whole)
{
    struct rig g;
    rig_open(&g, 1, NULL, NULL);
    run_steps(&g, 1, 2);
    rig_publish(&g, 3);
    rig_publish(&g, 4);
    /* The delta of v4 was made from v3; this receiver holds v2. */
    th_pull(g.full, 4);
    struct refit_pull_stats d = th_pull(g.dr, 4);
    same(g.full, g.dr, 4);
    ck_assert_uint_eq(d.delta_descriptors, 0);
    ck_assert_uint_eq(d.bytes_delta, 0);
    run_steps(&g, 5, 1);
    rig_close(&g);
}
END_TEST

START_TEST(restarted_receiver_pulls_whole)
{
    struct rig g;
    rig_open(&g, 1, NULL, NULL);
    run_steps(&g, 1, 2);
    refit_receiver_destroy(g.dr);
    g.dr = receiver(g.pctx, "delta");
    rig_publish(&g, 3);
    th_pull(g.full, 3);
    struct refit_pull_stats d = th_pull(g.dr, 3);
    same(g.full, g.dr, 3);
    ck_assert_uint_eq(d.delta_descriptors, 0);
    run_steps(&g, 4, 1);
    rig_close(&g);
}
END_TEST


START_TEST(torn_delta_pulls_whole)
{
    struct rig g;
    rig_open(&g, 1, NULL, NULL);
    run_steps(&g, 1, 2);
    rig_publish(&g, 3);
    th_delta_tear(g.pctx, 3, "trainer0");
    th_pull(g.full, 3);
    struct refit_pull_stats d = th_pull(g.dr, 3);
    same(g.full, g.dr, 3);
    ck_assert_msg(d.delta_fallbacks == 1, "a torn delta was not noticed");
    run_steps(&g, 4, 1);
    rig_close(&g);
}
END_TEST

START_TEST(resharded_tp2_to_tp1)
{
    struct rig g;
    rig_open(&g, 2, NULL, NULL);
    run_steps(&g, 1, 3);
    rig_close(&g);
}
END_TEST

START_TEST(fp8_target)
{
    struct rig g;
    rig_open(&g, 2, "model.fp8.enabled=true", NULL);
    run_steps(&g, 1, 3);
    rig_close(&g);
}
END_TEST

START_TEST(copy_mode)
{
    struct rig g;
    rig_open(&g, 1, "refit.publish=copy", NULL);
    run_steps(&g, 1, 3);
    rig_close(&g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("delta-engine");
    TCase *tc = tcase_create("delta");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, pull_by_delta);
    tcase_add_test(tc, skipped_version_pulls_whole);
    tcase_add_test(tc, restarted_receiver_pulls_whole);
    tcase_add_test(tc, torn_delta_pulls_whole);
    tcase_add_test(tc, resharded_tp2_to_tp1);
    tcase_add_test(tc, fp8_target);
    tcase_add_test(tc, copy_mode);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
