/* test_dp_partial.c — a data-parallel replica that dies in the middle of a
 * pull costs only its own share (issue 15): two replicas of the whole
 * model (an in-process publisher and a `refit publish` process), a warm
 * receiver whose first pull reads from both, then the process frozen and
 * killed while the next pull reads from it.  The pull completes byte-exact
 * from the live replica, and what it reads again after the failure
 * (bytes_refetched) is the failed replica's share and what feeds the
 * tensors it left unfinished, not the whole model: the tensors the live
 * replica finished in the failed attempt are kept.  The failed replica's
 * share is the plan's bytes for it (bytes_failed_share). */
#include <fcntl.h>

#include "harness.h"
#include "../check_run.h"

static char dir[256], ckpt[300], cfg_path[300], ns[32];

static void setup(void)
{
    th_workdir(REFIT_BIN, "dppart", 4, 1000, dir, sizeof(dir), ckpt, sizeof(ckpt));
    th_cluster_file(dir, ckpt, "q", ns, sizeof(ns), cfg_path, sizeof(cfg_path));
}

static void teardown(void)
{
    th_rmdir(dir);
}

struct src {
    struct refit_standin_shard sh;
    refit_publisher_t *pub;
};

static void src_start(refit_context_t *ctx, const struct refit_parallel *par, const char *id, struct src *s)
{
    ck_assert_msg(th_publisher_at(ctx, ckpt, par, id, &s->sh, &s->pub) == 0, "%s", refit_error_message());
}

static void src_stop(struct src *s)
{
    refit_publisher_destroy(s->pub);
    refit_standin_shard_free(&s->sh);
}

/* The weights of version `from` turned into those of `to`. */
static void step(struct src *s, uint64_t from, uint64_t to)
{
    for (size_t i = 0; i < s->sh.n; i++)
        ck_assert_int_eq(refit_standin_step(s->sh.t[i].data, s->sh.t[i].nbytes, s->sh.t[i].dtype, from, to), 0);
}

/* vLLM rank 1 of 2 from one trainer rank holding the weights of `weights`. */
static void *reference(refit_context_t *ctx, uint64_t weights, uint64_t *bytes)
{
    struct refit_parallel par = {.tp_size = 1};
    struct src s;
    src_start(ctx, &par, "ref", &s);
    step(&s, 1, weights);
    ck_assert_msg(refit_publisher_publish(s.pub, 1) == 0, "%s", refit_error_message());
    refit_receiver_t *r = th_receiver(ctx, "rref", 2, 1);
    struct refit_pull_stats st = {.size = sizeof(st)};
    ck_assert_msg(refit_receiver_pull(r, 1, &st) == 0, "%s", refit_error_message());
    *bytes = st.bytes_wire;
    size_t n;
    void *snap = th_snapshot(r, &n);
    refit_receiver_destroy(r);
    src_stop(&s);
    return snap;
}

START_TEST(test_fallback_reads_only_the_failed_share)
{
    refit_context_t *ctx;
    /* every source is READY before a pull here: waiting for lagging ones
     * (half of refit.timeout) only costs time */
    const char *const fast[] = {"refit.timeout=3s"};
    ck_assert_msg(refit_context_create(cfg_path, fast, 1, &ctx) == 0, "%s", refit_error_message());
    uint64_t whole;
    void *want = reference(ctx, 3, &whole);
    /* the replica process: v1 (released by the reference's receiver), v2, v3 */
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 1);
        execl(REFIT_BIN, "refit", "publish", "--config", cfg_path, "--hf", ckpt, "--tp", "1", "--rank", "0",
              "--dp", "2", "--dp-rank", "1", "--cycles", "3", "--id", "dpq1", (char *)NULL);
        _exit(127);
    }
    struct refit_parallel par = {.tp_size = 1, .dp_rank = 0, .dp_size = 2};
    struct src s0;
    src_start(ctx, &par, "dpq0", &s0);
    step(&s0, 1, 2);
    ck_assert_msg(refit_publisher_publish(s0.pub, 2) == 0, "%s", refit_error_message());
    th_wait_ready(ctx, "dpq1", 2);
    /* a warm pull from both replicas: each reads a share */
    refit_receiver_t *r = th_receiver(ctx, "rq", 2, 1);
    struct refit_pull_stats st = {.size = sizeof(st)};
    ck_assert_msg(refit_receiver_pull(r, 2, &st) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(st.sources, 2);
    ck_assert_uint_eq(st.bytes_wire, whole);
    ck_assert_uint_eq(st.bytes_refetched, 0);
    ck_assert_msg(refit_publisher_wait_released(s0.pub, 2, 20000) == 0, "%s", refit_error_message());
    step(&s0, 2, 3);
    ck_assert_msg(refit_publisher_publish(s0.pub, 3) == 0, "%s", refit_error_message());
    th_wait_ready(ctx, "dpq1", 3);
    /* the replica process stops answering, then dies, during the pull */
    pid_t killer = th_freeze_then_kill(child, 1500000);
    memset(&st, 0, sizeof(st));
    st.size = sizeof(st);
    ck_assert_msg(refit_receiver_pull(r, 3, &st) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(st.fallbacks, 1);
    ck_assert(th_same_as(r, want));
    /* Read again: the failed replica's share (what the plan gave it, about
     * half) and the live replica's pieces of tensors the failure left
     * unfinished — never the whole model, as a pull restarted from scratch
     * would.  The first attempt read every live-replica piece it was given
     * (its lane runs on after the other's failure). */
    fprintf(stderr, "whole %llu, wire %llu, refetched %llu, failed share %llu\n", (unsigned long long)whole,
            (unsigned long long)st.bytes_wire, (unsigned long long)st.bytes_refetched,
            (unsigned long long)st.bytes_failed_share);
    ck_assert_uint_gt(st.bytes_failed_share, 0);
    ck_assert_uint_lt(st.bytes_failed_share, whole);
    ck_assert_uint_gt(st.bytes_refetched, 0);
    ck_assert_uint_lt(st.bytes_refetched, whole);
    ck_assert_uint_ge(st.bytes_wire, whole);
    ck_assert_uint_lt(st.bytes_wire, 2 * whole);
    waitpid(killer, NULL, 0);
    waitpid(child, NULL, 0);
    refit_receiver_destroy(r);
    src_stop(&s0);
    free(want);
    refit_context_destroy(ctx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dp_partial");
    TCase *tc = tcase_create("dp_partial");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_fallback_reads_only_the_failed_share);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
