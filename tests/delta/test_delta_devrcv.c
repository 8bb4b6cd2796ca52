/* test_delta_devrcv.c — delta refit into CUDA destinations, and the cases
 * where a receiver with refit.delta.enabled takes whole versions
 * (docs/delta.md, "Device receivers"; "Fan-out").
 *
 *   device  (argument "device" or "all"; needs a CUDA device, or the mock
 *           runtime tests/cuda/mock_cudart.c preloaded, as the test
 *           'delta-devrcv-mock' does on machines without a GPU): a host
 *           publisher, a receiver with its destinations in device memory
 *           and delta on, beside a host receiver with delta off (the full
 *           refit).  Every pull leaves the device bytes (read back with
 *           cudaMemcpy) equal to the full receiver's; consecutive versions
 *           go by delta with under a fifth of the wire bytes; a skipped
 *           version is pulled whole; a torn record (chunk lengths swapped:
 *           every delta aimed at a chunk it was not made for) falls back
 *           whole, counted; TP2 -> TP1 with an FP8 target; push mode (the
 *           publisher in a thread writes the asked deltas into the device
 *           receiver's staging).
 *   host    (argument "host" or "all"; no device): refit.delta.enabled with
 *           tree fan-out is refused naming both keys; a receiver with
 *           refit.verify: sample pulls whole, counted in delta_fallbacks.
 * The process touches CUDA only in Check's forked children (a CUDA context
 * does not survive fork). */
#include <pthread.h>

#include "../engine/harness.h"

#include <stdint.h>

#include "../check_run.h"
/* (core/src/engine, not core/src: its sched.h would hide the system one) */
#include "delta_eng.h"
#include "../engine/th_delta.h"
#include "refit/cuda_pool.h"
#include "refit/fp8_cuda.h"

static char dir[256], ckpt[300], cfg_path[300], ns[32];

/* The refit binary: $REFIT_BIN (a packed build on a GPU machine) or the
 * build tree's. */
static const char *refit_bin(void)
{
    const char *b = getenv("REFIT_BIN");
    return b && *b ? b : REFIT_BIN;
}

static void setup(void)
{
    th_workdir(refit_bin(), "ddev", 1, 1024, dir, sizeof(dir), ckpt, sizeof(ckpt));
    th_cluster_file(dir, ckpt, "dd", ns, sizeof(ns), cfg_path, sizeof(cfg_path));
}

static void teardown(void)
{
    th_rmdir(dir);
}

static refit_context_t *context(int delta, const char *extra1, const char *extra2)
{
    const char *ovr[3] = {delta ? "refit.delta.enabled=true" : "refit.delta.enabled=false", extra1, extra2};
    return th_context(cfg_path, ovr, 1 + (extra1 != NULL) + (extra2 != NULL));
}

static refit_publisher_t *publisher(refit_context_t *ctx, int rank, int tp, struct refit_standin_shard *sh)
{
    struct refit_parallel par = {.tp_rank = rank, .tp_size = tp, .ep_size = 1, .pp_size = 1, .etp_size = 1};
    char id[32];
    snprintf(id, sizeof(id), "trainer%d", rank);
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher_at(ctx, ckpt, &par, id, sh, &pub) == 0, "%s", refit_error_message());
    return pub;
}

/* One trainer step: one element in 89 moves by an ulp or two. */
static void step(struct refit_standin_shard *sh, uint64_t v)
{
    for (size_t i = 0; i < sh->n; i++) {
        uint16_t *u = sh->t[i].data;
        size_t n = sh->t[i].nbytes / 2;
        for (size_t k = (size_t)(v * 17) % 89; k < n; k += 89)
            u[k] = (uint16_t)(u[k] + (k & 1 ? 1 : 0xffff) * (uint16_t)(1 + (v & 1)));
    }
}

/* ------------------------------------------------------------------ */
/* Host: the combinations that take whole versions */

START_TEST(fanout_with_delta_refused)
{
    const char *ovr[2][2] = {{"refit.delta.enabled=true", "refit.fanout.republish=true"},
                             {"refit.delta.enabled=true", "refit.fanout.max_pullers_per_source=2"}};
    for (int k = 0; k < 2; k++) {
        refit_context_t *ctx = NULL;
        int rc = refit_context_create(cfg_path, ovr[k], 2, &ctx);
        ck_assert_int_eq(rc, REFIT_ECONFIG);
        const char *m = refit_error_message();
        ck_assert_msg(strstr(m, "refit.delta.enabled") && strstr(m, k ? "refit.fanout.max_pullers_per_source"
                                                                       : "refit.fanout.republish"),
                      "%s", m);
    }
    /* Either alone is fine. */
    refit_context_destroy(th_context(cfg_path, ovr[0], 1));
    refit_context_destroy(th_context(cfg_path, ovr[0] + 1, 1));
}
END_TEST

START_TEST(verify_sample_pulls_whole_counted)
{
    refit_context_t *pctx = context(1, NULL, NULL), *fctx = context(0, NULL, NULL),
                    *sctx = context(1, "refit.verify=sample", NULL);
    struct refit_standin_shard sh = {0};
    refit_publisher_t *pub = publisher(pctx, 0, 1, &sh);
    refit_receiver_t *full = th_receiver(fctx, "full", 1, 0), *r = th_receiver(sctx, "sampled", 1, 0);
    for (uint64_t v = 1; v <= 2; v++) {
        if (v > 1)
            step(&sh, v);
        ck_assert_msg(refit_publisher_publish(pub, v) == 0, "%s", refit_error_message());
        struct refit_pull_stats f = th_pull(full, v), d = th_pull(r, v);
        size_t n;
        char *want = th_snapshot(full, &n);
        ck_assert_msg(th_same_as(r, want), "v%llu differs", (unsigned long long)v);
        free(want);
        ck_assert_uint_eq(d.delta_fallbacks, 1);
        ck_assert_uint_eq(d.delta_descriptors, 0);
        ck_assert_uint_eq(d.bytes_wire, f.bytes_wire);
    }
    refit_receiver_destroy(r);
    refit_receiver_destroy(full);
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_context_destroy(sctx);
    refit_context_destroy(fctx);
    refit_context_destroy(pctx);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Device destinations */

#ifdef REFIT_TEST_HAVE_CUDA
#include <cuda_runtime_api.h>

struct rig {
    refit_context_t *pctx, *fctx;
    refit_publisher_t *pub[2];
    struct refit_standin_shard sh[2];
    int n_pub;
    refit_receiver_t *full, *dr;
    void **dev;
    size_t n_dev;
    int want_dev; /* delta_device of a delta pull: 1 mirror on the device, 0 on the host, -1 either */
};

/* A receiver of ctx with every destination in device memory (*dev). */
static refit_receiver_t *device_receiver(refit_context_t *ctx, void ***dev, size_t *n)
{
    refit_receiver_t *r = NULL;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "gpu", &r), 0);
    *n = refit_receiver_count(r);
    *dev = calloc(*n, sizeof(void *));
    ck_assert_ptr_nonnull(*dev);
    for (size_t i = 0; i < *n; i++) {
        struct refit_tensor_info ti;
        ck_assert_int_eq(refit_receiver_tensor(r, i, &ti), 0);
        ck_assert_int_eq(refit_cuda_alloc(ti.nbytes, &(*dev)[i]), 0);
        ck_assert_int_eq(cudaMemset((*dev)[i], 0x5a, ti.nbytes), cudaSuccess);
        ck_assert_msg(refit_receiver_bind(r, ti.name, (*dev)[i], ti.dtype, ti.ndim, ti.shape, REFIT_MEM_CUDA) == 0,
                      "%s", refit_error_message());
    }
    return r;
}

static void device_free(void **dev, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(refit_cuda_free(dev[i]), 0);
    free(dev);
}

static void rig_open(struct rig *g, int tp, const char *extra)
{
    memset(g, 0, sizeof(*g));
    g->pctx = context(1, extra, NULL);
    g->fctx = context(0, extra, NULL);
    g->n_pub = tp;
    for (int k = 0; k < tp; k++)
        g->pub[k] = publisher(g->pctx, k, tp, &g->sh[k]);
    g->full = th_receiver(g->fctx, "full", 1, 0);
    g->dr = device_receiver(g->pctx, &g->dev, &g->n_dev);
    g->want_dev = -1;
}

static void rig_close(struct rig *g)
{
    refit_receiver_destroy(g->dr);
    refit_receiver_destroy(g->full);
    device_free(g->dev, g->n_dev);
    for (int k = 0; k < g->n_pub; k++) {
        refit_publisher_destroy(g->pub[k]);
        refit_standin_shard_free(&g->sh[k]);
    }
    refit_context_destroy(g->fctx);
    refit_context_destroy(g->pctx);
}

static void rig_publish(struct rig *g, uint64_t v)
{
    for (int k = 0; k < g->n_pub; k++) {
        if (v > 1)
            step(&g->sh[k], v);
        ck_assert_msg(refit_publisher_publish(g->pub[k], v) == 0, "%s", refit_error_message());
    }
}

/* The device receiver's bytes (read back from the device) equal the full
 * host receiver's, tensor by tensor. */
static void same_dev(refit_receiver_t *full, refit_receiver_t *dr, uint64_t v)
{
    size_t n = refit_receiver_count(dr);
    ck_assert_uint_eq(refit_receiver_count(full), n);
    for (size_t i = 0; i < n; i++) {
        struct refit_tensor_info h, d;
        ck_assert_int_eq(refit_receiver_tensor(full, i, &h), 0);
        ck_assert_int_eq(refit_receiver_tensor(dr, i, &d), 0);
        ck_assert_int_eq(d.memtype, REFIT_MEM_CUDA);
        ck_assert_uint_eq(h.nbytes, d.nbytes);
        char *buf = malloc(d.nbytes ? d.nbytes : 1);
        ck_assert_ptr_nonnull(buf);
        ck_assert_int_eq(cudaMemcpy(buf, d.ptr, d.nbytes, cudaMemcpyDeviceToHost), cudaSuccess);
        ck_assert_msg(!memcmp(buf, h.ptr, h.nbytes), "v%llu: '%s' on the device differs from the full refit",
                      (unsigned long long)v, d.name);
        free(buf);
    }
}

static void same(struct rig *g, uint64_t v)
{
    same_dev(g->full, g->dr, v);
}

/* Versions [from, from+n): pulled by both, identical; by delta after v1. */
static void by_delta(struct rig *g, uint64_t from, int n)
{
    for (uint64_t v = from; v < from + (uint64_t)n; v++) {
        rig_publish(g, v);
        struct refit_pull_stats f = th_pull(g->full, v), d = th_pull(g->dr, v);
        same(g, v);
        if (v == 1)
            continue;
        ck_assert_msg(d.delta_descriptors > 0 && !d.delta_fallbacks, "v%llu: not pulled by delta (%u, %u)",
                      (unsigned long long)v, d.delta_descriptors, d.delta_fallbacks);
        ck_assert_msg(d.bytes_wire * 5 < f.bytes_wire, "v%llu: %llu wire bytes by delta, %llu whole",
                      (unsigned long long)v, (unsigned long long)d.bytes_wire, (unsigned long long)f.bytes_wire);
        if (g->want_dev >= 0)
            ck_assert_msg(d.delta_device == (uint32_t)g->want_dev, "v%llu: delta applied on the %s, not the %s",
                          (unsigned long long)v, d.delta_device ? "device" : "host", g->want_dev ? "device" : "host");
    }
}


START_TEST(device_dst_delta_skip_torn)
{
    struct rig g;
    rig_open(&g, 1, NULL);
    /* Same dtype, TP1: the mirror, base check, apply, verification and
     * resharding scatters on the device (kernels; the mock runtime runs
     * them emulated, REFIT_DELTA_DEVICE=emulate). */
    g.want_dev = 1;
    by_delta(&g, 1, 3);
    /* Skipped: v5's delta was made from v4, the device receiver holds v3. */
    rig_publish(&g, 4);
    rig_publish(&g, 5);
    th_pull(g.full, 5);
    struct refit_pull_stats d = th_pull(g.dr, 5);
    same(&g, 5);
    ck_assert_uint_eq(d.delta_descriptors, 0);
    ck_assert_uint_eq(d.bytes_delta, 0);
    by_delta(&g, 6, 1);
    /* Torn: refused (the base chunks do not hash to the base, or the result
     * fails v7's checksums), pulled whole, counted; the device holds v7. */
    rig_publish(&g, 7);
    th_delta_tear(g.pctx, 7, "trainer0");
    th_pull(g.full, 7);
    d = th_pull(g.dr, 7);
    same(&g, 7);
    ck_assert_msg(d.delta_fallbacks == 1, "a torn delta was not noticed");
    by_delta(&g, 8, 1);
    /* Restarted: a new receiver holds no base, pulls v9 whole, then v10
     * by delta again. */
    refit_receiver_destroy(g.dr);
    device_free(g.dev, g.n_dev);
    g.dr = device_receiver(g.pctx, &g.dev, &g.n_dev);
    rig_publish(&g, 9);
    th_pull(g.full, 9);
    d = th_pull(g.dr, 9);
    same(&g, 9);
    ck_assert_uint_eq(d.delta_descriptors, 0);
    ck_assert_uint_eq(d.bytes_delta, 0);
    by_delta(&g, 10, 1);
    rig_close(&g);
}
END_TEST

/* Push mode: the publisher (in a thread: a push publish returns once both
 * receivers advertised and were written) writes the deltas the device
 * receiver asks for into its host staging; applied, checked, committed to
 * the device. */
struct pusher {
    refit_publisher_t *pub;
    struct refit_standin_shard sh;
    pthread_t th;
    uint64_t v;
    int rc;
    char err[1024];
};

static void *push_main(void *arg)
{
    struct pusher *p = arg;
    p->rc = refit_publisher_publish(p->pub, p->v);
    snprintf(p->err, sizeof(p->err), "%s", p->rc ? refit_error_message() : "");
    return NULL;
}

START_TEST(device_dst_push_delta)
{
    const char *po[4] = {"refit.mode=push", "refit.delta.enabled=true", "refit.timeout=20s", "refit.receivers=2"};
    const char *fo[3] = {"refit.mode=push", "refit.delta.enabled=false", "refit.timeout=20s"};
    refit_context_t *pctx = th_context(cfg_path, po, 4), *fctx = th_context(cfg_path, fo, 3),
                    *dctx = th_context(cfg_path, po, 3);
    struct pusher p = {0};
    p.pub = publisher(pctx, 0, 1, &p.sh);
    refit_receiver_t *full = th_receiver(fctx, "full", 1, 0);
    void **dev;
    size_t n_dev;
    refit_receiver_t *dr = device_receiver(dctx, &dev, &n_dev);
    for (uint64_t v = 1; v <= 3; v++) {
        if (v > 1)
            step(&p.sh, v);
        p.v = v;
        ck_assert_int_eq(pthread_create(&p.th, NULL, push_main, &p), 0);
        th_wait_ready(dctx, "trainer0", v);
        struct refit_pull_stats f = th_pull(full, v), d = th_pull(dr, v);
        ck_assert_int_eq(pthread_join(p.th, NULL), 0);
        ck_assert_msg(p.rc == 0, "publish v%llu: %s", (unsigned long long)v, p.err);
        same_dev(full, dr, v);
        if (v == 1)
            continue;
        ck_assert_msg(d.delta_descriptors > 0 && !d.delta_fallbacks, "v%llu: not pushed by delta (%u, %u)",
                      (unsigned long long)v, d.delta_descriptors, d.delta_fallbacks);
        ck_assert_msg(d.bytes_delta > 0 && d.bytes_wire * 5 < f.bytes_wire, "v%llu: %llu wire bytes by delta, "
                      "%llu whole", (unsigned long long)v, (unsigned long long)d.bytes_wire,
                      (unsigned long long)f.bytes_wire);
    }
    refit_receiver_destroy(dr);
    refit_receiver_destroy(full);
    device_free(dev, n_dev);
    refit_publisher_destroy(p.pub);
    refit_standin_shard_free(&p.sh);
    refit_context_destroy(dctx);
    refit_context_destroy(fctx);
    refit_context_destroy(pctx);
}
END_TEST

START_TEST(device_dst_delta_tp2_fp8)
{
    struct rig g;
    rig_open(&g, 2, "model.fp8.enabled=true");
    g.want_dev = 0; /* FP8 targets keep the host mirror (docs/delta.md) */
    by_delta(&g, 1, 3);
    rig_close(&g);
}
END_TEST
#endif /* REFIT_TEST_HAVE_CUDA */

/* CUDA devices (or the mock's), counted in a child. */
static int probe_devices(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(refit_cuda_device_count() > 0 ? 1 : 0);
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 0;
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "all";
    int host = strcmp(which, "device") != 0, device = strcmp(which, "host") != 0;
    int devices = device ? probe_devices() : 0;
#ifndef REFIT_TEST_HAVE_CUDA
    devices = 0;
#endif
    if (!host && devices <= 0) {
        printf("SKIP: test-delta-devrcv device: no CUDA device (%s)\n",
               refit_cuda_built() ? "none found" : "librefit built without CUDA");
        return 77;
    }
    Suite *s = suite_create("delta-devrcv");
    if (host) {
        TCase *tc = tcase_create("host");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, fanout_with_delta_refused);
        tcase_add_test(tc, verify_sample_pulls_whole_counted);
        suite_add_tcase(s, tc);
    }
#ifdef REFIT_TEST_HAVE_CUDA
    if (devices > 0) {
        TCase *tc = tcase_create("device");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 240);
        tcase_add_test(tc, device_dst_delta_skip_torn);
        tcase_add_test(tc, device_dst_delta_tp2_fp8);
        tcase_add_test(tc, device_dst_push_delta);
        suite_add_tcase(s, tc);
    }
#endif
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
