/* test_failures.c — the refit cycle when things go wrong, with real
 * processes, a real store and the tcp transport:
 *   - a publisher killed mid-pull: an error within the timeout naming the
 *     source, and the destinations still hold the previous version;
 *   - a stale source (no heartbeat) is ignored;
 *   - bytes changed behind a published checksum are detected, naming the
 *     tensor and the source;
 *   - Redis restarted between two cycles costs a retry, not the job (run
 *     as its own test, `test_failures redis`, SKIP without redis-server);
 *   - wait_released names the receivers that did not acknowledge;
 *   - a warm cycle costs the receiver at most 2 store round trips (file
 *     store, and Redis in `test_failures redis`).
 * The publishers are `refit publish` processes, or forked children using the
 * C API where the test must reach into their memory. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "harness.h"
#include "../check_run.h"

static char dir[256], ckpt[300], cfg_path[300];
static int redis_port;
static pid_t redis_pid;

static void write_cfg(const char *store_section)
{
    snprintf(cfg_path, sizeof(cfg_path), "%s/cluster.yaml", dir);
    FILE *f = fopen(cfg_path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "%s\n"
            "transport:\n  plugin: tcp\n  timeout: 5s\n"
            "refit:\n  timeout: 8s\n  release_timeout: 20s\n  stale_after: 1s\n  heartbeat: 150ms\n"
            "  receivers: 1\n"
            "model:\n  plugin: auto\n  hf_config: %s/config.json\n  target: vllm\n",
            store_section, ckpt);
    fclose(f);
}

static void file_store_cfg(void)
{
    char s[600];
    snprintf(s, sizeof(s), "store:\n  plugin: file\n  namespace: t%d\n  file:\n    path: %s/store\n    fsync: false",
             (int)getpid(), dir);
    write_cfg(s);
}

static void setup(void)
{
    th_workdir(REFIT_BIN, "fail", 2, 1024, dir, sizeof(dir), ckpt, sizeof(ckpt));
    file_store_cfg();
}

static void teardown(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = 0;
    }
    th_rmdir(dir);
}

/* `refit publish` as a child process. */
static pid_t start_publisher(const char *id, int cycles)
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
              "--cycles", c, "--id", id, (char *)NULL);
        _exit(127);
    }
    return p;
}

START_TEST(publisher_killed_mid_pull_keeps_previous_weights)
{
    pid_t pub = start_publisher("trainer", 2);
    refit_context_t *ctx;
    ck_assert_msg(refit_context_create(cfg_path, NULL, 0, &ctx) == 0, "%s", refit_error_message());
    refit_receiver_t *rcv;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "r0", &rcv), 0);
    ck_assert_int_eq(refit_receiver_allocate(rcv), 0);
    struct refit_pull_stats s = {.size = sizeof(s)};
    ck_assert_msg(refit_receiver_pull(rcv, 1, &s) == 0, "%s", refit_error_message());
    size_t n;
    char *v1 = th_snapshot(rcv, &n);
    /* v2 is published once v1 is released; freeze the publisher, and kill it
     * while the pull of v2 waits on its frozen server. */
    th_wait_ready(ctx, "trainer", 2);
    pid_t killer = th_freeze_then_kill(pub, 500000);
    double t0 = th_now();
    int rc = refit_receiver_pull(rcv, 2, &s);
    double took = th_now() - t0;
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(refit_error_message(), "trainer") != NULL, "error does not name the source: %s",
                  refit_error_message());
    ck_assert_msg(took < 12.0, "the failure took %.1f s (transport timeout 5 s, refit timeout 8 s)", took);
    ck_assert_msg(th_same_as(rcv, v1), "the destinations changed after a failed pull");
    waitpid(killer, NULL, 0);
    waitpid(pub, NULL, 0);
    free(v1);
    refit_receiver_destroy(rcv);
    refit_context_destroy(ctx);
}
END_TEST

START_TEST(stale_source_is_ignored)
{
    /* "old" publishes v1 and freezes (no heartbeat); "new" publishes the same
     * layout.  Pulling from the frozen one would hang the transfer. */
    pid_t old = start_publisher("old", 1);
    refit_context_t *ctx;
    ck_assert_int_eq(refit_context_create(cfg_path, NULL, 0, &ctx), 0);
    th_wait_ready(ctx, "old", 1);
    kill(old, SIGSTOP);
    sleep(2); /* > stale_after */
    pid_t fresh = start_publisher("new", 1);
    th_wait_ready(ctx, "new", 1);
    refit_receiver_t *rcv;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "r0", &rcv), 0);
    ck_assert_int_eq(refit_receiver_allocate(rcv), 0);
    struct refit_pull_stats s = {.size = sizeof(s)};
    ck_assert_msg(refit_receiver_pull(rcv, REFIT_LATEST, &s) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(s.sources, 1);
    ck_assert_uint_eq(s.version, 1);
    refit_receiver_destroy(rcv);
    refit_context_destroy(ctx);
    th_stop(old);
    th_stop(fresh);
}
END_TEST

/* A publisher in a forked child through the C API, so the test can change
 * its memory behind a published checksum: a byte of its largest tensor
 * flips after publish(1) when `corrupt` is set. */
static pid_t start_api_publisher(int corrupt, int ready_fd)
{
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p)
        return p;
    refit_context_t *ctx;
    refit_publisher_t *pub = NULL;
    struct refit_standin_shard sh;
    if (refit_context_create(cfg_path, NULL, 0, &ctx) || th_publisher(ctx, ckpt, "apipub", &sh, &pub))
        _exit(2);
    size_t big = 0;
    for (size_t i = 0; i < sh.n; i++)
        if (sh.t[i].nbytes > sh.t[big].nbytes)
            big = i;
    if (refit_publisher_publish(pub, 1))
        _exit(4);
    if (corrupt)
        ((unsigned char *)sh.t[big].data)[sh.t[big].nbytes / 2] ^= 0x40;
    char c = 1;
    if (write(ready_fd, &c, 1) != 1)
        _exit(5);
    refit_publisher_wait_released(pub, 1, 30000);
    _exit(0);
}

START_TEST(corrupted_bytes_are_detected)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pub = start_api_publisher(1, fds[1]);
    char c;
    ck_assert_int_eq(read(fds[0], &c, 1), 1);
    refit_context_t *ctx;
    ck_assert_int_eq(refit_context_create(cfg_path, NULL, 0, &ctx), 0);
    refit_receiver_t *rcv;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "r0", &rcv), 0);
    ck_assert_int_eq(refit_receiver_allocate(rcv), 0);
    size_t n;
    char *before = th_snapshot(rcv, &n);
    int rc = refit_receiver_pull(rcv, 1, NULL);
    ck_assert_int_eq(rc, REFIT_ECHECKSUM);
    ck_assert_msg(strstr(refit_error_message(), "tensor '") &&
                      strstr(refit_error_message(), "from source apipub: checksum mismatch"),
                  "%s", refit_error_message());
    ck_assert_msg(th_same_as(rcv, before), "destinations changed after a failed pull");
    free(before);
    refit_receiver_destroy(rcv);
    refit_context_destroy(ctx);
    th_stop(pub);
}
END_TEST

START_TEST(uncorrupted_api_publisher_pulls_clean)
{
    /* The control for the test above: same path, no flip, no error. */
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pub = start_api_publisher(0, fds[1]);
    char c;
    ck_assert_int_eq(read(fds[0], &c, 1), 1);
    refit_context_t *ctx;
    ck_assert_int_eq(refit_context_create(cfg_path, NULL, 0, &ctx), 0);
    refit_receiver_t *rcv;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "r0", &rcv), 0);
    ck_assert_int_eq(refit_receiver_allocate(rcv), 0);
    ck_assert_msg(refit_receiver_pull(rcv, 1, NULL) == 0, "%s", refit_error_message());
    refit_receiver_destroy(rcv);
    refit_context_destroy(ctx);
    int st;
    ck_assert_int_eq(waitpid(pub, &st, 0), pub);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
END_TEST

static void start_redis(void)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", redis_port);
    redis_pid = fork();
    ck_assert_int_ge(redis_pid, 0);
    if (redis_pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 1);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly",
               "no", (char *)NULL);
        _exit(127);
    }
    /* Ready when it answers. */
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d ping >/dev/null 2>&1", redis_port);
    for (int i = 0; i < 100 && system(cmd) != 0; i++)
        usleep(50000);
}

START_TEST(redis_restart_between_cycles)
{
    redis_port = th_free_port();
    ck_assert_int_gt(redis_port, 0);
    start_redis();
    char s[256];
    snprintf(s, sizeof(s), "store:\n  plugin: redis\n  namespace: t%d\n  redis:\n    port: %d", (int)getpid(),
             redis_port);
    write_cfg(s);
    pid_t pub = start_publisher("trainer", 2);
    refit_context_t *ctx;
    ck_assert_int_eq(refit_context_create(cfg_path, NULL, 0, &ctx), 0);
    refit_receiver_t *rcv;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "r0", &rcv), 0);
    ck_assert_int_eq(refit_receiver_allocate(rcv), 0);
    struct refit_pull_stats st = {.size = sizeof(st)};
    ck_assert_msg(refit_receiver_pull(rcv, 1, &st) == 0, "%s", refit_error_message());
    /* Restart: every key is gone; publishers and receivers reconnect and
     * re-write their live records. */
    kill(redis_pid, SIGKILL);
    waitpid(redis_pid, NULL, 0);
    start_redis();
    ck_assert_msg(refit_receiver_pull(rcv, 2, &st) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(st.version, 2);
    int status;
    ck_assert_int_eq(waitpid(pub, &status, 0), pub);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the publisher failed after the restart");
    refit_receiver_destroy(rcv);
    refit_context_destroy(ctx);
}
END_TEST

/* Metadata at scale (docs/scale.md): once the plan is cached, a pull costs
 * one read of the records and heartbeats its plan reads (with the
 * checksums it needs and the membership epoch), and the fence's one read
 * with the ack in the same round trip.  The first warm pull may cost two
 * more: the source joined while the receiver waited (the receiver starts
 * first), so the epoch is read again before a watch of members/. */
static void warm_cycles(void)
{
    pid_t pub = start_publisher("trainer", 3);
    refit_context_t *ctx;
    ck_assert_int_eq(refit_context_create(cfg_path, NULL, 0, &ctx), 0);
    refit_receiver_t *rcv;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "r0", &rcv), 0);
    ck_assert_int_eq(refit_receiver_allocate(rcv), 0);
    struct refit_pull_stats st = {.size = sizeof(st)};
    ck_assert_msg(refit_receiver_pull(rcv, 1, &st) == 0, "%s", refit_error_message());
    for (uint64_t v = 2; v <= 3; v++) {
        th_wait_ready(ctx, "trainer", v);
        ck_assert_msg(refit_receiver_pull(rcv, REFIT_NEXT, &st) == 0, "%s", refit_error_message());
        ck_assert_uint_eq(st.version, v);
        ck_assert_uint_eq(st.plan_cached, 1);
        ck_assert_msg(st.store_round_trips <= (v == 2 ? 4u : 2u), "warm pull of v%llu: %llu store round trips",
                      (unsigned long long)v, (unsigned long long)st.store_round_trips);
    }
    int status;
    ck_assert_int_eq(waitpid(pub, &status, 0), pub);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    refit_receiver_destroy(rcv);
    refit_context_destroy(ctx);
}

START_TEST(warm_cycle_store_round_trips)
{
    warm_cycles();
}
END_TEST

START_TEST(warm_cycle_store_round_trips_redis)
{
    redis_port = th_free_port();
    ck_assert_int_gt(redis_port, 0);
    start_redis();
    char s[256];
    snprintf(s, sizeof(s), "store:\n  plugin: redis\n  namespace: t%d\n  redis:\n    port: %d", (int)getpid(),
             redis_port);
    write_cfg(s);
    warm_cycles();
}
END_TEST

/* A source that joins after warm cycles (the plan cached, reading only the
 * records of its own sources) is learned from its members/ key: "b"
 * publishes v4 of the position "a" holds at v3, and the pull of the next
 * version finds it and plans anew from it. */
START_TEST(source_joining_after_warm_cycles_is_found)
{
    refit_context_t *ctx;
    ck_assert_int_eq(refit_context_create(cfg_path, NULL, 0, &ctx), 0);
    struct refit_standin_shard sa, sb;
    refit_publisher_t *a = NULL, *b = NULL;
    ck_assert_msg(th_publisher(ctx, ckpt, "a", &sa, &a) == 0, "%s", refit_error_message());
    refit_receiver_t *rcv;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "r0", &rcv), 0);
    ck_assert_int_eq(refit_receiver_allocate(rcv), 0);
    struct refit_pull_stats st = {.size = sizeof(st)};
    for (uint64_t v = 1; v <= 3; v++) {
        ck_assert_int_eq(refit_publisher_publish(a, v), 0);
        ck_assert_msg(refit_receiver_pull(rcv, v, &st) == 0, "%s", refit_error_message());
        ck_assert_uint_eq(st.plan_cached, v > 1);
    }
    ck_assert_msg(th_publisher(ctx, ckpt, "b", &sb, &b) == 0, "%s", refit_error_message());
    ck_assert_int_eq(refit_publisher_publish(b, 4), 0);
    ck_assert_msg(refit_receiver_pull(rcv, REFIT_NEXT, &st) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(st.version, 4);
    ck_assert_uint_eq(st.plan_cached, 0);
    refit_receiver_destroy(rcv);
    refit_publisher_destroy(b);
    refit_publisher_destroy(a);
    refit_standin_shard_free(&sb);
    refit_standin_shard_free(&sa);
    refit_context_destroy(ctx);
}
END_TEST

/* A source that joins at the version the others are at (a replica of the
 * same position) is learned from the membership epoch the warm read takes
 * with the records: no wait for a newer version brings it, and the cached
 * plan would not read it. */
START_TEST(replica_joining_at_the_same_version_is_found)
{
    refit_context_t *ctx;
    ck_assert_int_eq(refit_context_create(cfg_path, NULL, 0, &ctx), 0);
    struct refit_standin_shard sa, sb;
    refit_publisher_t *a = NULL, *b = NULL;
    ck_assert_msg(th_publisher(ctx, ckpt, "a", &sa, &a) == 0, "%s", refit_error_message());
    refit_receiver_t *rcv;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "r0", &rcv), 0);
    ck_assert_int_eq(refit_receiver_allocate(rcv), 0);
    struct refit_pull_stats st = {.size = sizeof(st)};
    for (uint64_t v = 1; v <= 3; v++) {
        ck_assert_int_eq(refit_publisher_publish(a, v), 0);
        ck_assert_msg(refit_receiver_pull(rcv, v, &st) == 0, "%s", refit_error_message());
        ck_assert_uint_eq(st.sources, 1);
    }
    ck_assert_msg(th_publisher(ctx, ckpt, "b", &sb, &b) == 0, "%s", refit_error_message());
    ck_assert_int_eq(refit_publisher_publish(a, 4), 0);
    ck_assert_int_eq(refit_publisher_publish(b, 4), 0);
    ck_assert_msg(refit_receiver_pull(rcv, REFIT_NEXT, &st) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(st.version, 4);
    ck_assert_msg(st.sources == 2, "the joining replica was not found: %u sources", st.sources);
    refit_receiver_destroy(rcv);
    refit_publisher_destroy(b);
    refit_publisher_destroy(a);
    refit_standin_shard_free(&sb);
    refit_standin_shard_free(&sa);
    refit_context_destroy(ctx);
}
END_TEST

START_TEST(wait_released_names_missing_receivers)
{
    refit_context_t *ctx;
    const char *ovr[] = {"refit.receivers=2"};
    ck_assert_int_eq(refit_context_create(cfg_path, ovr, 1, &ctx), 0);
    /* Two receivers register; only one pulls. */
    refit_receiver_t *a, *b;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "eager", &a), 0);
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "sleepy", &b), 0);
    ck_assert_int_eq(refit_receiver_allocate(a), 0);
    struct refit_standin_shard sh;
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher(ctx, ckpt, "p", &sh, &pub) == 0, "%s", refit_error_message());
    ck_assert_int_eq(refit_publisher_publish(pub, 1), 0);
    ck_assert_msg(refit_receiver_pull(a, 1, NULL) == 0, "%s", refit_error_message());
    int rc = refit_publisher_wait_released(pub, 1, 800);
    ck_assert_int_eq(rc, REFIT_ETIMEDOUT);
    ck_assert_msg(strstr(refit_error_message(), "released by 1 of 2 receivers") &&
                      strstr(refit_error_message(), "not acknowledged by: sleepy"),
                  "%s", refit_error_message());
    /* Versions must grow; the shapes must be this rank's. */
    ck_assert_int_eq(refit_publisher_publish(pub, 1), REFIT_EINVAL);
    int64_t bad[2] = {3, 3};
    ck_assert_int_eq(refit_publisher_add(pub, sh.t[0].name, sh.t[0].data, sh.t[0].dtype, 2, bad, REFIT_MEM_HOST),
                     REFIT_EINVAL);
    ck_assert_int_eq(refit_publisher_add(pub, "decoder.layers.99.nothing.weight", sh.t[0].data, sh.t[0].dtype, 2,
                                         bad, REFIT_MEM_HOST),
                     REFIT_ENOENT);
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_receiver_destroy(a);
    refit_receiver_destroy(b);
    refit_context_destroy(ctx);
}
END_TEST

START_TEST(moved_tensor_reregisters_only_itself)
{
    refit_context_t *ctx;
    ck_assert_int_eq(refit_context_create(cfg_path, NULL, 0, &ctx), 0);
    struct refit_standin_shard sh;
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher(ctx, ckpt, "mover", &sh, &pub) == 0, "%s", refit_error_message());
    size_t big = 0;
    for (size_t i = 0; i < sh.n; i++)
        if (sh.t[i].nbytes > sh.t[big].nbytes)
            big = i;
    ck_assert_int_eq(refit_publisher_publish(pub, 1), 0);
    struct refit_publisher_stats ps = {.size = sizeof(ps)};
    refit_publisher_stats(pub, &ps);
    size_t first = ps.registrations;
    ck_assert_uint_ge(first, 2);
    /* The largest tensor moves (an optimizer reallocating it). */
    void *moved = malloc(sh.t[big].nbytes);
    memcpy(moved, sh.t[big].data, sh.t[big].nbytes);
    ck_assert_int_eq(refit_publisher_add(pub, sh.t[big].name, moved, sh.t[big].dtype, sh.t[big].ndim,
                                         sh.t[big].shape, REFIT_MEM_HOST),
                     0);
    ck_assert_int_eq(refit_publisher_publish(pub, 2), 0);
    refit_publisher_stats(pub, &ps);
    ck_assert_uint_eq(ps.registrations, first + 1);
    ck_assert_uint_eq(ps.kept, ps.regions - 1);
    /* And a receiver gets version 2 from the new memory. */
    refit_receiver_t *rcv;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "r0", &rcv), 0);
    ck_assert_int_eq(refit_receiver_allocate(rcv), 0);
    ck_assert_msg(refit_receiver_pull(rcv, 2, NULL) == 0, "%s", refit_error_message());
    refit_receiver_destroy(rcv);
    refit_publisher_destroy(pub);
    free(moved);
    refit_standin_shard_free(&sh);
    refit_context_destroy(ctx);
}
END_TEST

START_TEST(copy_publish_never_mixes_versions)
{
    /* publish: copy returns once the tensors are in a staging arena, so the
     * trainer changes its weights at once; v2 lands in the other arena and
     * never shows in a pull of v1. */
    refit_context_t *ctx;
    const char *ovr[] = {"refit.publish=copy"};
    ck_assert_int_eq(refit_context_create(cfg_path, ovr, 1, &ctx), 0);
    struct refit_standin_shard sh;
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher(ctx, ckpt, "copier", &sh, &pub) == 0, "%s", refit_error_message());
    refit_receiver_t *rcv;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "r0", &rcv), 0);
    ck_assert_int_eq(refit_receiver_allocate(rcv), 0);
    ck_assert_int_eq(refit_publisher_publish(pub, 1), 0);
    ck_assert_msg(refit_receiver_pull(rcv, 1, NULL) == 0, "%s", refit_error_message());
    size_t n;
    char *v1 = th_snapshot(rcv, &n);
    /* Training goes on: the weights change and v2 is published at once. */
    for (size_t i = 0; i < sh.n; i++)
        ck_assert_int_eq(refit_standin_step(sh.t[i].data, sh.t[i].nbytes, sh.t[i].dtype, 1, 2), 0);
    ck_assert_int_eq(refit_publisher_publish(pub, 2), 0);
    /* Then the tensors change again, without a publish (the next step). */
    for (size_t i = 0; i < sh.n; i++)
        ck_assert_int_eq(refit_standin_step(sh.t[i].data, sh.t[i].nbytes, sh.t[i].dtype, 2, 3), 0);
    /* v1 is still whole in its arena although the source moved to v2. */
    struct refit_pull_stats st = {.size = sizeof(st)};
    ck_assert_msg(refit_receiver_pull(rcv, 1, &st) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(st.version, 1);
    ck_assert_msg(th_same_as(rcv, v1), "v1 pulled after v2 was published differs from v1");
    /* v2 is v2: not v1, and not the unpublished step-3 weights. */
    ck_assert_msg(refit_receiver_pull(rcv, 2, &st) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(st.version, 2);
    ck_assert_msg(!th_same_as(rcv, v1), "v2 equals v1");
    char *v2 = th_snapshot(rcv, &n);
    /* v3 reuses v1's arena: v1 was released (acknowledged) above. */
    ck_assert_int_eq(refit_publisher_publish(pub, 3), 0);
    ck_assert_msg(refit_receiver_pull(rcv, 2, &st) == 0, "%s", refit_error_message());
    ck_assert_msg(th_same_as(rcv, v2), "v2 changed when v3 was published");
    ck_assert_msg(refit_receiver_pull(rcv, 3, &st) == 0, "%s", refit_error_message());
    ck_assert_msg(!th_same_as(rcv, v2), "v3 equals v2");
    free(v1);
    free(v2);
    refit_receiver_destroy(rcv);
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_context_destroy(ctx);
}
END_TEST

/* `test_failures redis`: the Redis restart alone, SKIP (77) without
 * redis-server; without arguments every other test. */
int main(int argc, char **argv)
{
    int redis = argc > 1 && !strcmp(argv[1], "redis");
    if (redis && system("command -v redis-server >/dev/null && command -v redis-cli >/dev/null") != 0) {
        fprintf(stderr, "redis-server not installed: SKIP\n");
        return 77;
    }
    Suite *s = suite_create("failures");
    TCase *tc = tcase_create("failures");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    if (redis) {
        tcase_add_test(tc, redis_restart_between_cycles);
        tcase_add_test(tc, warm_cycle_store_round_trips_redis);
        suite_add_tcase(s, tc);
        return t_run_suite(s, CK_NORMAL) ? EXIT_FAILURE : EXIT_SUCCESS;
    }
    tcase_add_test(tc, publisher_killed_mid_pull_keeps_previous_weights);
    tcase_add_test(tc, stale_source_is_ignored);
    tcase_add_test(tc, corrupted_bytes_are_detected);
    tcase_add_test(tc, uncorrupted_api_publisher_pulls_clean);
    tcase_add_test(tc, wait_released_names_missing_receivers);
    tcase_add_test(tc, moved_tensor_reregisters_only_itself);
    tcase_add_test(tc, copy_publish_never_mixes_versions);
    tcase_add_test(tc, warm_cycle_store_round_trips);
    tcase_add_test(tc, replica_joining_at_the_same_version_is_found);
    tcase_add_test(tc, source_joining_after_warm_cycles_is_found);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
