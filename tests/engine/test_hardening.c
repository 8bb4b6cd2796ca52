/* test_hardening.c — regressions of what issue 22 found in the engine, each
 * with real processes or a real store and the tcp transport:
 *   22.2  150 sources with the longest ids and 8-digit positions: the
 *         plan's key was built in a buffer of 200 bytes per source;
 *   22.3  a publisher stopped past transport.timeout and resumed: the next
 *         pull reconnects instead of failing with the old error;
 *   22.9  refit.verify: full on the receiver fails (naming the source) when
 *         the source publishes no checksums, or a blob of zero chunks;
 *   22.10 a failed publish(V) leaves no READY record over memory that
 *         changed: zero-copy (V-1 withdrawn) and copy (V-2 no longer kept);
 *         receivers with verify off never commit V's bytes as V-1.
 * And the ack that goes with the fence's read (receiver.c fence_commit): a
 * pull whose fence fails has acknowledged v, keeps the previous weights and
 * never reads v again.
 * The push work list checks (22.1) are test_push.c and the structural
 * fuzzer test_fuzz_decoders.c. */
#include <fcntl.h>
#include <xxhash.h>

#include "harness.h"
#include "../check_run.h"
#include "receiver.h" /* the pull mode's stages, to fail a fence on purpose */

static char dir[256], ckpt[300], cfg_path[300], ns[32];

static void setup(void)
{
    th_workdir(REFIT_BIN, "hard", 2, 1024, dir, sizeof(dir), ckpt, sizeof(ckpt));
    th_cluster_file(dir, ckpt, "h", ns, sizeof(ns), cfg_path, sizeof(cfg_path));
}

static void teardown(void)
{
    th_rmdir(dir);
}

static refit_context_t *context(const char *const *ovr, size_t n)
{
    return th_context(cfg_path, ovr, n);
}

static refit_receiver_t *receiver(refit_context_t *ctx, const char *id)
{
    return th_receiver(ctx, id, 1, 0);
}

static refit_store_t *store_of(refit_context_t *ctx, refit_loader_t **ld)
{
    refit_store_t *st;
    ck_assert_int_eq(refit_loader_create((refit_config_t *)refit_context_config(ctx), ld), 0);
    ck_assert_int_eq(refit_store_open((refit_config_t *)refit_context_config(ctx), *ld, NULL, &st), 0);
    return st;
}

/* ------------------------------------------------------------------ */
/* 22.2 */

/* The checksum segments listed in segs ("versions/1/sums/<src>/<k>") put
 * again under source id. */
static void copy_segments(refit_store_t *st, char **segs, size_t n, const char *id)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    for (size_t i = 0; i < n; i++) {
        void *v = NULL;
        size_t len = 0;
        const char *k = strrchr(segs[i], '/');
        ck_assert_ptr_nonnull(k);
        ck_assert_int_eq(refit_store_get(st, segs[i], &v, &len), 0);
        snprintf(key, sizeof(key), "versions/1/sums/%s%s", id, k);
        ck_assert_int_eq(refit_store_put(st, key, v, len), 0);
        free(v);
    }
}

START_TEST(many_long_id_sources)
{
    /* One real publisher and 150 more records of 128-byte ids and 8-digit
     * expert-parallel positions (a dense model ignores them): 202 bytes
     * each in the old plan key, which had 200 per source and 64 to spare,
     * so the key of the last source was written past its buffer.  The
     * records name a transport this receiver does not use, so the pull
     * plans (the key included) and then fails connecting to the first of
     * them, naming it, instead of opening 150 connections. */
    const char *ovr[] = {"refit.timeout=6s"};
    refit_context_t *ctx = context(ovr, 1);
    struct refit_standin_shard sh;
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher(ctx, ckpt, "zz-trainer", &sh, &pub) == 0, "%s", refit_error_message());
    ck_assert_msg(refit_publisher_publish(pub, 1) == 0, "%s", refit_error_message());
    refit_loader_t *ld;
    refit_store_t *st = store_of(ctx, &ld);
    struct refit_source_record *rec = NULL;
    ck_assert_int_eq(refit_record_fetch(st, "zz-trainer", &rec), 0);
    /* The checksums are stored once, in segments (versions/V/sums/<id>/<k>),
     * which receivers read in discovery: each copied source gets the
     * publisher's too. */
    void *sums = NULL;
    size_t sums_len = 0;
    ck_assert_int_eq(refit_store_get(st, "versions/1/sums/zz-trainer", &sums, &sums_len), REFIT_ENOENT);
    char **segs = NULL;
    size_t n_segs = 0;
    ck_assert_int_eq(refit_store_list(st, "versions/1/sums/zz-trainer/", &segs, &n_segs), 0);
    ck_assert_uint_gt(n_segs, 0);
    enum { N = 150 };
    for (int i = 0; i < N; i++) {
        char id[REFIT_RECORD_MAX_ID + 1];
        memset(id, 'x', REFIT_RECORD_MAX_ID - 8);
        snprintf(id + REFIT_RECORD_MAX_ID - 8, 9, "%08u", (unsigned)i % 100000000u);
        struct refit_source_record r = *rec;
        r.source_id = id;
        r.transport = "elsewhere";
        r.layout.ep_rank = r.layout.etp_rank = 10000000 + (uint32_t)i;
        r.layout.ep_size = r.layout.etp_size = 16777216;
        r.heartbeat_ms = refit_time_ms();
        ck_assert_msg(refit_record_publish(st, &r) == 0, "%s", refit_error_message());
        ck_assert_int_eq(refit_heartbeat_put(st, id, 1, 30000), 0);
        copy_segments(st, segs, n_segs, id);
    }
    free(segs);
    free(rec);
    refit_receiver_t *r = receiver(ctx, "r0");
    int rc = refit_receiver_pull(r, 1, NULL);
    ck_assert_int_eq(rc, REFIT_EPROTO);
    ck_assert_msg(strstr(refit_error_message(), "xxxxxxxx00000000 publishes over 'elsewhere'"), "%s",
                  refit_error_message());
    refit_receiver_destroy(r);
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_store_close(st);
    refit_loader_destroy(ld);
    refit_context_destroy(ctx);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 22.3 */

/* `refit publish` as a child process, with overrides. */
static pid_t start_publisher(const char *id, int cycles, const char *set)
{
    char c[16];
    snprintf(c, sizeof(c), "%d", cycles);
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 1);
        execl(REFIT_BIN, "refit", "publish", "--config", cfg_path, "--hf", ckpt, "--tp", "1", "--rank", "0",
              "--cycles", c, "--id", id, "--set", set, (char *)NULL);
        _exit(127);
    }
    return p;
}

START_TEST(reconnect_after_a_stopped_publisher)
{
    const char *ovr[] = {"transport.timeout=1s"};
    pid_t pub = start_publisher("trainer", 3, "transport.timeout=1s");
    refit_context_t *ctx = context(ovr, 1);
    refit_receiver_t *r = receiver(ctx, "r0");
    ck_assert_msg(refit_receiver_pull(r, 1, NULL) == 0, "%s", refit_error_message());
    /* v2 READY; the publisher stops for longer than the transport waits. */
    th_wait_ready(ctx, "trainer", 2);
    kill(pub, SIGSTOP);
    int rc = refit_receiver_pull(r, 2, NULL);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(refit_error_message(), "trainer"), "%s", refit_error_message());
    kill(pub, SIGCONT);
    /* Alive again, still READY at v2 (it waits for our ack): the next pull
     * connects again and succeeds. */
    ck_assert_msg(refit_receiver_pull(r, 2, NULL) == 0, "pull after the publisher resumed: %s",
                  refit_error_message());
    ck_assert_msg(refit_receiver_pull(r, 3, NULL) == 0, "%s", refit_error_message());
    ck_assert_msg(th_child_ok(pub), "the publisher failed");
    refit_receiver_destroy(r);
    refit_context_destroy(ctx);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 22.9 */

START_TEST(verify_full_needs_checksums)
{
    const char *off[] = {"refit.verify=off"};
    refit_context_t *pctx = context(off, 1), *ctx = context(NULL, 0);
    struct refit_standin_shard sh;
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher(pctx, ckpt, "nosums", &sh, &pub) == 0, "%s", refit_error_message());
    ck_assert_msg(refit_publisher_publish(pub, 1) == 0, "%s", refit_error_message());
    refit_receiver_t *r = receiver(ctx, "r0");
    size_t n;
    char *before = th_snapshot(r, &n);
    int rc = refit_receiver_pull(r, 1, NULL);
    ck_assert_int_eq(rc, REFIT_ECHECKSUM);
    ck_assert_msg(strstr(refit_error_message(), "source nosums") && strstr(refit_error_message(), "no checksum"),
                  "%s", refit_error_message());
    ck_assert_msg(th_same_as(r, before), "destinations changed after a refused pull");
    /* A receiver that does not ask for verification takes it. */
    refit_receiver_t *lax = receiver(pctx, "r1");
    ck_assert_msg(refit_receiver_pull(lax, 1, NULL) == 0, "%s", refit_error_message());
    free(before);
    refit_receiver_destroy(r);
    refit_receiver_destroy(lax);
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_context_destroy(pctx);
    refit_context_destroy(ctx);
}
END_TEST

static void le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Every checksum segment under prefix replaced by a valid one whose
 * tensors have zero chunk checksums each (docs/protocol.md, "Checksums":
 * "RFSUMS02" | version | catalog hash | k | first | n | 2 words per tensor
 * | XXH3-64), keeping its version, catalog, index and tensors. */
static void empty_segments(refit_store_t *st, const char *prefix)
{
    char **segs = NULL;
    size_t n = 0;
    ck_assert_int_eq(refit_store_list(st, prefix, &segs, &n), 0);
    ck_assert_uint_gt(n, 0);
    for (size_t i = 0; i < n; i++) {
        unsigned char *v = NULL;
        size_t len = 0;
        ck_assert_int_eq(refit_store_get(st, segs[i], (void **)&v, &len), 0);
        ck_assert_uint_ge(len, 64);
        uint64_t nt = 0;
        for (int b = 0; b < 8; b++)
            nt |= (uint64_t)v[48 + b] << (8 * b);
        size_t nlen = 56 + 16 * nt + 8;
        unsigned char *e = calloc(1, nlen);
        memcpy(e, v, 56);
        le64(e + nlen - 8, XXH3_64bits(e, nlen - 8));
        ck_assert_int_eq(refit_store_put(st, segs[i], e, nlen), 0);
        free(e);
        free(v);
    }
    free(segs);
}

START_TEST(verify_full_refuses_empty_checksums)
{
    /* A publisher with checksums, whose segments are then replaced by valid
     * ones of zero chunks per tensor (docs/protocol.md, "Checksums"). */
    refit_context_t *ctx = context(NULL, 0);
    struct refit_standin_shard sh;
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher(ctx, ckpt, "emptied", &sh, &pub) == 0, "%s", refit_error_message());
    ck_assert_msg(refit_publisher_publish(pub, 1) == 0, "%s", refit_error_message());
    refit_loader_t *ld;
    refit_store_t *st = store_of(ctx, &ld);
    empty_segments(st, "versions/1/sums/emptied/");
    refit_receiver_t *r = receiver(ctx, "r0");
    int rc = refit_receiver_pull(r, 1, NULL);
    ck_assert_int_eq(rc, REFIT_ECHECKSUM);
    ck_assert_msg(strstr(refit_error_message(), "source emptied") && strstr(refit_error_message(), "no checksum"),
                  "%s", refit_error_message());
    refit_receiver_destroy(r);
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_store_close(st);
    refit_loader_destroy(ld);
    refit_context_destroy(ctx);
}
END_TEST

/* ------------------------------------------------------------------ */
/* 22.10 */

/* A regular file where the store keeps versions/<v>/: every put under it
 * fails, as on a full or broken disk. */
static void break_version(uint64_t v)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/store/refit/%s/versions/%llu", dir, ns, (unsigned long long)v);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
}

static void step_all(struct refit_standin_shard *sh, uint64_t from, uint64_t to)
{
    for (size_t i = 0; i < sh->n; i++)
        ck_assert_int_eq(refit_standin_step(sh->t[i].data, sh->t[i].nbytes, sh->t[i].dtype, from, to), 0);
}

START_TEST(failed_zero_copy_publish_withdraws)
{
    const char *ovr[] = {"refit.verify=off", "refit.timeout=2s"};
    refit_context_t *ctx = context(ovr, 2);
    struct refit_standin_shard sh;
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher(ctx, ckpt, "trainer", &sh, &pub) == 0, "%s", refit_error_message());
    ck_assert_int_eq(refit_publisher_publish(pub, 1), 0);
    refit_receiver_t *r = receiver(ctx, "r0");
    ck_assert_msg(refit_receiver_pull(r, 1, NULL) == 0, "%s", refit_error_message());
    size_t n;
    char *v1 = th_snapshot(r, &n);
    /* The trainer steps (its tensors hold v2 now) and publish(2) fails. */
    step_all(&sh, 1, 2);
    break_version(2);
    ck_assert_int_ne(refit_publisher_publish(pub, 2), 0);
    /* Nothing may be committed as v1 that is not v1. */
    refit_receiver_t *late = receiver(ctx, "r1");
    struct refit_pull_stats s = {.size = sizeof(s)};
    int rc = refit_receiver_pull(late, REFIT_LATEST, &s);
    ck_assert_msg(rc != 0 || th_same_as(late, v1), "v2's bytes committed as v%llu after a failed publish",
                  (unsigned long long)s.version);
    ck_assert_msg(rc != 0, "a withdrawn source was pulled (v%llu)", (unsigned long long)s.version);
    free(v1);
    refit_receiver_destroy(r);
    refit_receiver_destroy(late);
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_context_destroy(ctx);
}
END_TEST

START_TEST(failed_copy_publish_stops_keeping_its_arena)
{
    const char *ovr[] = {"refit.verify=off", "refit.publish=copy", "refit.timeout=2s"};
    refit_context_t *ctx = context(ovr, 3);
    struct refit_standin_shard sh;
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher(ctx, ckpt, "copier", &sh, &pub) == 0, "%s", refit_error_message());
    refit_receiver_t *r = receiver(ctx, "r0");
    size_t n;
    ck_assert_int_eq(refit_publisher_publish(pub, 1), 0);
    ck_assert_msg(refit_receiver_pull(r, 1, NULL) == 0, "%s", refit_error_message());
    char *v1 = th_snapshot(r, &n);
    step_all(&sh, 1, 2);
    ck_assert_int_eq(refit_publisher_publish(pub, 2), 0);
    ck_assert_msg(refit_receiver_pull(r, 2, NULL) == 0, "%s", refit_error_message());
    char *v2 = th_snapshot(r, &n);
    /* v3 goes into v1's arena (v1 was released) and fails after the copy. */
    step_all(&sh, 2, 3);
    break_version(3);
    ck_assert_int_ne(refit_publisher_publish(pub, 3), 0);
    /* v1's arena holds v3's bytes now: v1 must be gone, v2 still whole. */
    refit_receiver_t *late = receiver(ctx, "r1");
    int rc = refit_receiver_pull(late, 1, NULL);
    ck_assert_msg(rc != 0 || th_same_as(late, v1), "v3's bytes committed as v1 after a failed publish");
    ck_assert_msg(rc == REFIT_ESTALE, "v1 still offered after its arena was reused (%d: %s)", rc,
                  refit_error_message());
    ck_assert_msg(refit_receiver_pull(late, 2, NULL) == 0, "%s", refit_error_message());
    ck_assert_msg(th_same_as(late, v2), "v2 changed when v3's publish failed");
    free(v1);
    free(v2);
    refit_receiver_destroy(r);
    refit_receiver_destroy(late);
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_context_destroy(ctx);
}
END_TEST

/* ------------------------------------------------------------------ */
/* The ack with the fence */

static int (*real_transfer)(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st);
static refit_store_t *meddler;

static void set_status(refit_store_t *st, const char *id, enum refit_source_status status)
{
    struct refit_source_record *rec = NULL;
    ck_assert_int_eq(refit_record_fetch(st, id, &rec), 0);
    rec->status = status;
    ck_assert_int_eq(refit_record_publish(st, rec), 0);
    free(rec);
}

/* The pull's transfer, then the source withdraws v before the fence
 * looks: the fence fails after every read of v ended. */
static int transfer_then_withdraw(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st)
{
    int rc = real_transfer(r, v, st);
    set_status(meddler, "trainer", REFIT_SOURCE_STALE);
    return rc;
}

START_TEST(fence_failure_after_its_ack_never_rereads)
{
    const char *ovr[] = {"refit.timeout=2s"};
    refit_context_t *ctx = context(ovr, 1);
    struct refit_standin_shard sh;
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher(ctx, ckpt, "trainer", &sh, &pub) == 0, "%s", refit_error_message());
    refit_loader_t *ld;
    meddler = store_of(ctx, &ld);
    ck_assert_int_eq(refit_publisher_publish(pub, 1), 0);
    refit_receiver_t *r = receiver(ctx, "r0");
    ck_assert_msg(refit_receiver_pull(r, 1, NULL) == 0, "%s", refit_error_message());
    size_t n;
    char *v1 = th_snapshot(r, &n);
    step_all(&sh, 1, 2);
    ck_assert_int_eq(refit_publisher_publish(pub, 2), 0);
    /* The fence of v2 fails: an error, v1 still in place, and the ack of
     * v2 written (with the fence's read: every read of v2 had ended). */
    struct rf_rcv_mode m = *r->mode;
    const struct rf_rcv_mode *mode = r->mode;
    real_transfer = m.transfer;
    m.transfer = transfer_then_withdraw;
    r->mode = &m;
    int rc = refit_receiver_pull(r, 2, NULL);
    r->mode = mode;
    ck_assert_msg(rc == REFIT_ESTALE, "fence of a withdrawn source: %d %s", rc, refit_error_message());
    ck_assert_msg(th_same_as(r, v1), "a failed fence changed the destinations");
    void *val = NULL;
    size_t len = 0;
    ck_assert_msg(refit_store_get(meddler, "versions/2/acks/r0", &val, &len) == 0, "no ack of v2: %s",
                  refit_error_message());
    free(val);
    /* v2 READY again: still never read by r0 (the trainer may be reusing
     * its memory), by version or as the next one. */
    set_status(meddler, "trainer", REFIT_SOURCE_READY);
    rc = refit_receiver_pull(r, 2, NULL);
    ck_assert_msg(rc == REFIT_ESTALE && strstr(refit_error_message(), "acknowledged"), "pull of v2 again: %d %s", rc,
                  refit_error_message());
    rc = refit_receiver_pull(r, REFIT_NEXT, NULL);
    ck_assert_msg(rc == REFIT_ETIMEDOUT, "v2 chosen as the next version: %d %s", rc, refit_error_message());
    ck_assert_msg(th_same_as(r, v1), "v2 committed after its ack");
    /* v3 comes and is pulled as usual. */
    step_all(&sh, 2, 3);
    ck_assert_int_eq(refit_publisher_publish(pub, 3), 0);
    struct refit_pull_stats st = {.size = sizeof(st)};
    ck_assert_msg(refit_receiver_pull(r, REFIT_NEXT, &st) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(st.version, 3);
    free(v1);
    refit_store_close(meddler);
    refit_loader_destroy(ld);
    refit_receiver_destroy(r);
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_context_destroy(ctx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hardening");
    TCase *tc = tcase_create("engine");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, many_long_id_sources);
    tcase_add_test(tc, reconnect_after_a_stopped_publisher);
    tcase_add_test(tc, verify_full_needs_checksums);
    tcase_add_test(tc, verify_full_refuses_empty_checksums);
    tcase_add_test(tc, failed_zero_copy_publish_withdraws);
    tcase_add_test(tc, failed_copy_publish_stops_keeping_its_arena);
    tcase_add_test(tc, fence_failure_after_its_ack_never_rereads);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
