/* test_dp_sources.c — trainer sources beyond Megatron PP 1 in a real
 * pull (file store, tcp, in one process): Megatron pipeline stages and
 * FSDP shards, each with two data-parallel replicas holding the same bytes.
 * A receiver pulling from them gets exactly what it gets from one PP-1
 * trainer rank holding everything; with one replica of every position
 * withdrawn it still completes from the other; and when a replica dies in
 * the middle of a pull, the pull completes from the other. */
#include <fcntl.h>

#include "harness.h"
#include "../check_run.h"

static char dir[256], ckpt[300], cfg_path[300], ns[32];

static void setup(void)
{
    th_workdir(REFIT_BIN, "dpsrc", 4, 1000, dir, sizeof(dir), ckpt, sizeof(ckpt));
    th_cluster_file(dir, ckpt, "d", ns, sizeof(ns), cfg_path, sizeof(cfg_path));
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
    s->pub = NULL;
}


/* The weights of version `to` (refit/standin.h) in a source's tensors. */
static void step_to(struct src *s, uint64_t to)
{
    for (size_t i = 0; to > 1 && i < s->sh.n; i++)
        ck_assert_int_eq(refit_standin_step(s->sh.t[i].data, s->sh.t[i].nbytes, s->sh.t[i].dtype, 1, to), 0);
}

/* The reference: vLLM rank `rank` of 2 pulled from one PP-1 trainer rank
 * (as version 1, holding the weights of version `weights`). */
static void *reference_of(refit_context_t *ctx, int rank, uint64_t weights, size_t *n)
{
    struct refit_parallel par = {.tp_size = 1};
    struct src s;
    src_start(ctx, &par, "ref", &s);
    step_to(&s, weights);
    ck_assert_msg(refit_publisher_publish(s.pub, 1) == 0, "%s", refit_error_message());
    refit_receiver_t *r = th_receiver(ctx, "rref", 2, rank);
    ck_assert_msg(refit_receiver_pull(r, 1, NULL) == 0, "%s", refit_error_message());
    void *snap = th_snapshot(r, n);
    refit_receiver_destroy(r);
    src_stop(&s);
    return snap;
}

static void *reference(refit_context_t *ctx, int rank, size_t *n)
{
    return reference_of(ctx, rank, 1, n);
}

/* Sources of `kind` (0: Megatron PP 2, 1: FSDP 2), two DP replicas each. */
START_TEST(test_replicas)
{
    int kind = _i;
    refit_context_t *ctx;
    ck_assert_msg(refit_context_create(cfg_path, NULL, 0, &ctx) == 0, "%s", refit_error_message());
    size_t n;
    void *want = reference(ctx, 1, &n);
    struct src s[4];
    for (int dp = 0; dp < 2; dp++)
        for (int k = 0; k < 2; k++) {
            struct refit_parallel par = {.tp_size = 1, .dp_rank = dp, .dp_size = 2};
            if (kind == 0) {
                par.pp_rank = k;
                par.pp_size = 2;
            } else {
                par.layout = "fsdp";
                par.shard_rank = k;
                par.shard_size = 2;
            }
            src_start(ctx, &par, NULL, &s[dp * 2 + k]);
            ck_assert_msg(refit_publisher_publish(s[dp * 2 + k].pub, 2) == 0, "%s", refit_error_message());
        }
    refit_receiver_t *r = th_receiver(ctx, "r1", 2, 1);
    struct refit_pull_stats st = {.size = sizeof(st)};
    ck_assert_msg(refit_receiver_pull(r, 2, &st) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(st.sources, 4);
    ck_assert(th_same_as(r, want));
    /* replica 0 of position 0 and replica 1 of position 1 withdrawn: the
     * other replicas still cover everything */
    src_stop(&s[0]);
    src_stop(&s[3]);
    for (int i = 1; i < 3; i++)
        ck_assert_msg(refit_publisher_publish(s[i].pub, 3) == 0, "%s", refit_error_message());
    refit_receiver_t *r2 = th_receiver(ctx, "r2", 2, 1);
    ck_assert_msg(refit_receiver_pull(r2, 3, &st) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(st.sources, 2);
    ck_assert(th_same_as(r2, want));
    refit_receiver_destroy(r2);
    refit_receiver_destroy(r);
    src_stop(&s[1]);
    src_stop(&s[2]);
    free(want);
    refit_context_destroy(ctx);
}
END_TEST

/* A `refit publish` replica (DP rank 1 of 2, the whole model) frozen and
 * killed while a pull reads from it and from its in-process twin. */
START_TEST(test_replica_dies_mid_pull)
{
    refit_context_t *ctx;
    ck_assert_msg(refit_context_create(cfg_path, NULL, 0, &ctx) == 0, "%s", refit_error_message());
    /* the reference's receiver releases v1, so the replica (which waits for
     * one receiver) goes on to v2: pull v2, the weights of version 2 */
    size_t n;
    void *want = reference_of(ctx, 1, 2, &n);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 1);
        execl(REFIT_BIN, "refit", "publish", "--config", cfg_path, "--hf", ckpt, "--tp", "1", "--rank", "0",
              "--dp", "2", "--dp-rank", "1", "--cycles", "2", "--id", "dp1", (char *)NULL);
        _exit(127);
    }
    struct refit_parallel par = {.tp_size = 1, .dp_rank = 0, .dp_size = 2};
    struct src s0;
    src_start(ctx, &par, "dp0", &s0);
    step_to(&s0, 2);
    ck_assert_msg(refit_publisher_publish(s0.pub, 2) == 0, "%s", refit_error_message());
    th_wait_ready(ctx, "dp1", 2);
    refit_receiver_t *r = th_receiver(ctx, "r3", 2, 1);
    pid_t killer = th_freeze_then_kill(child, 1500000);
    struct refit_pull_stats st = {.size = sizeof(st)};
    ck_assert_msg(refit_receiver_pull(r, 2, &st) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(st.fallbacks, 1);
    ck_assert(th_same_as(r, want));
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
    Suite *s = suite_create("dp_sources");
    TCase *tc = tcase_create("dp_sources");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_replicas, 0, 2);
    tcase_add_test(tc, test_replica_dies_mid_pull);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
