/* test_fanout.c — tree fan-out with real processes, the file store and tcp:
 *   - one trainer rank and six receivers started together with
 *     max_pullers_per_source 2 and republish on: every receiver ends
 *     byte-identical to a plain pull, never more than two pull from the
 *     trainer at once (from the receivers' transfer intervals), and some
 *     pull from a replica;
 *   - a replica frozen and then killed while a receiver copies from it:
 *     the receiver falls back to the trainer and still ends byte-identical;
 *   - a replica whose bytes change after it published its checksums: the
 *     mismatch is detected, the receiver falls back, nothing bad commits.
 * The trainer is a `refit publish` process; receivers are forked children
 * using the C API, reporting their stats and a hash of their weights
 * through a pipe and staying alive (serving as replicas) until released. */
#include <fcntl.h>
#include <xxhash.h>

#include "harness.h"
#include "../check_run.h"

static char dir[256], ckpt[300], cfg_path[300];

struct result {
    int rc;
    char source[64];
    double xs, xe;
    uint32_t fallbacks;
    uint64_t hash;
    char err[512];
};

static void write_cfg(int receivers, int max_pullers)
{
    snprintf(cfg_path, sizeof(cfg_path), "%s/cluster.yaml", dir);
    FILE *f = fopen(cfg_path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "store:\n  plugin: file\n  namespace: fo%d\n  file:\n    path: %s/store\n    fsync: false\n"
            "transport:\n  plugin: tcp\n  timeout: 20s\n"
            "refit:\n  timeout: 60s\n  release_timeout: 90s\n  stale_after: 3s\n  heartbeat: 150ms\n"
            "  receivers: %d\n  fanout:\n    republish: true\n    max_pullers_per_source: %d\n"
            "model:\n  plugin: auto\n  hf_config: %s/config.json\n  target: vllm\n",
            (int)getpid(), dir, receivers, max_pullers, ckpt);
    fclose(f);
}

static void setup(void)
{
    /* Large enough that a pull takes tens of milliseconds here. */
    th_workdir(REFIT_BIN, "fanout", 4, 4096, dir, sizeof(dir), ckpt, sizeof(ckpt));
}

static void teardown(void)
{
    th_rmdir(dir);
}

static pid_t start_publisher_cycles(const char *cycles)
{
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 1);
        execl(REFIT_BIN, "refit", "publish", "--config", cfg_path, "--hf", ckpt, "--tp", "1", "--rank", "0",
              "--cycles", cycles, "--id", "trainer-0", (char *)NULL);
        _exit(127);
    }
    return p;
}

static pid_t start_publisher(void)
{
    return start_publisher_cycles("1");
}

static uint64_t weights_hash(refit_receiver_t *r)
{
    XXH3_state_t *s = XXH3_createState();
    XXH3_64bits_reset(s);
    for (size_t i = 0; i < refit_receiver_count(r); i++) {
        struct refit_tensor_info ti;
        refit_receiver_tensor(r, i, &ti);
        XXH3_64bits_update(s, ti.ptr, ti.nbytes);
    }
    uint64_t h = XXH3_64bits_digest(s);
    XXH3_freeState(s);
    return h;
}

enum after { AFTER_NOTHING, AFTER_CORRUPT };

struct child {
    pid_t pid;
    int go[2], res[2], rel[2];
};

/* The parent's ends of every child's pipes: a later child closes them, or
 * an earlier child would never see its release pipe's end of file. */
static int parent_fds[64];
static size_t n_parent_fds;

static void keep_fd(int fd)
{
    ck_assert_uint_lt(n_parent_fds, 64);
    parent_fds[n_parent_fds++] = fd;
}

static void close_fd(int fd)
{
    for (size_t i = 0; i < n_parent_fds; i++)
        if (parent_fds[i] == fd)
            parent_fds[i] = parent_fds[--n_parent_fds];
    close(fd);
}

static void child_main(struct child *c, const char *id, int bind, int versions, enum after what);

/* A receiver in a child: ready → for each version 1..versions: wait for
 * go, pull it, report → (maybe corrupt its committed bytes) → serve until
 * released.  bind: the caller's own buffers (refit_receiver_bind), so
 * staging is one buffer; else refit allocates (double-buffered). */
static void start_receiver_ex(struct child *c, const char *id, int bind, int versions, enum after what)
{
    ck_assert_int_eq(pipe(c->go), 0);
    ck_assert_int_eq(pipe(c->res), 0);
    ck_assert_int_eq(pipe(c->rel), 0);
    c->pid = fork();
    ck_assert_int_ge(c->pid, 0);
    if (c->pid) {
        close(c->go[0]);
        close(c->res[1]);
        close(c->rel[0]);
        keep_fd(c->go[1]);
        keep_fd(c->res[0]);
        keep_fd(c->rel[1]);
        return;
    }
    for (size_t i = 0; i < n_parent_fds; i++)
        close(parent_fds[i]);
    child_main(c, id, bind, versions, what);
}

static void child_main(struct child *c, const char *id, int bind, int versions, enum after what)
{
    close(c->go[1]);
    close(c->res[0]);
    close(c->rel[1]);
    struct result out = {0};
    refit_context_t *ctx = NULL;
    refit_receiver_t *rcv = NULL;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    out.rc = refit_context_create(cfg_path, NULL, 0, &ctx);
    if (!out.rc)
        out.rc = refit_receiver_create(ctx, &tg, id, &rcv);
    void **mine = NULL;
    size_t n_mine = 0;
    if (!out.rc && bind) {
        n_mine = refit_receiver_count(rcv);
        mine = calloc(n_mine, sizeof(*mine));
        for (size_t i = 0; !out.rc && i < n_mine; i++) {
            struct refit_tensor_info ti;
            refit_receiver_tensor(rcv, i, &ti);
            mine[i] = calloc(1, ti.nbytes ? ti.nbytes : 1);
            out.rc = refit_receiver_bind(rcv, ti.name, mine[i], ti.dtype, ti.ndim, ti.shape, REFIT_MEM_HOST);
        }
    } else if (!out.rc) {
        out.rc = refit_receiver_allocate(rcv);
    }
    char b = 'r';
    if (write(c->res[1], &b, 1) != 1)
        _exit(3);
    for (int v = 1; v <= versions; v++) {
        if (read(c->go[0], &b, 1) != 1)
            _exit(3);
        struct refit_pull_stats st = {.size = sizeof(st)};
        if (!out.rc)
            out.rc = refit_receiver_pull(rcv, (uint64_t)v, &st);
        if (out.rc) {
            snprintf(out.err, sizeof(out.err), "%s", refit_error_message());
        } else {
            memcpy(out.source, st.source, sizeof(out.source));
            out.xs = st.xfer_start;
            out.xe = st.xfer_end;
            out.fallbacks = st.fallbacks;
            out.hash = weights_hash(rcv);
            if (what == AFTER_CORRUPT) {
                /* Refit owns the destinations: they live in the staging
                 * buffer the replica serves, behind its checksums. */
                struct refit_tensor_info ti;
                refit_receiver_tensor(rcv, 0, &ti);
                ((unsigned char *)ti.ptr)[ti.nbytes / 2] ^= 0x5a;
            }
        }
        if (write(c->res[1], &out, sizeof(out)) != (ssize_t)sizeof(out))
            _exit(4);
    }
    while (read(c->rel[0], &b, 1) > 0)
        ;
    refit_receiver_destroy(rcv);
    refit_context_destroy(ctx);
    for (size_t i = 0; i < n_mine; i++)
        free(mine[i]);
    free(mine);
    /* exit, not _exit: the leak checker of a sanitizer build runs at exit
     * and sees what the receiver (and its replica) left behind. */
    fflush(NULL);
    exit(0);
}

static void start_receiver(struct child *c, const char *id, enum after what)
{
    start_receiver_ex(c, id, 0, 1, what);
}

/* Created (context, receiver, buffers): ready to pull. */
static void wait_ready(struct child *c)
{
    char b = 0;
    ck_assert_int_eq(read(c->res[0], &b, 1), 1);
    ck_assert_int_eq(b, 'r');
}

static void go(struct child *c)
{
    ck_assert_int_eq(write(c->go[1], "g", 1), 1);
}

static void result_of(struct child *c, struct result *r)
{
    ck_assert_int_eq(read(c->res[0], r, sizeof(*r)), (ssize_t)sizeof(*r));
}

static void release(struct child *c)
{
    close_fd(c->go[1]);
    close_fd(c->res[0]);
    close_fd(c->rel[1]);
    int status = 0;
    waitpid(c->pid, &status, 0);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "receiver child ended badly (%d)", status);
}

/* A plain pull (fan-out off) of v1 in this process, after the children. */
static uint64_t reference_hash(void)
{
    const char *ovr[] = {"refit.fanout.republish=false", "refit.fanout.max_pullers_per_source=0"};
    refit_context_t *ctx;
    ck_assert_msg(refit_context_create(cfg_path, ovr, 2, &ctx) == 0, "%s", refit_error_message());
    refit_receiver_t *rcv;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "reference", &rcv), 0);
    ck_assert_int_eq(refit_receiver_allocate(rcv), 0);
    struct refit_pull_stats st = {.size = sizeof(st)};
    ck_assert_msg(refit_receiver_pull(rcv, 1, &st) == 0, "%s", refit_error_message());
    ck_assert_str_eq(st.source, "trainer");
    uint64_t h = weights_hash(rcv);
    refit_receiver_destroy(rcv);
    refit_context_destroy(ctx);
    return h;
}

#define N_RCV 6

START_TEST(six_receivers_two_per_source)
{
    write_cfg(N_RCV + 1, 2);
    pid_t pub = start_publisher();
    struct child c[N_RCV];
    for (int i = 0; i < N_RCV; i++) {
        char id[32];
        snprintf(id, sizeof(id), "rx-%d", i);
        start_receiver(&c[i], id, AFTER_NOTHING);
    }
    /* The barrier: every receiver created, then all pull at once. */
    for (int i = 0; i < N_RCV; i++)
        wait_ready(&c[i]);
    for (int i = 0; i < N_RCV; i++)
        go(&c[i]);
    struct result r[N_RCV];
    for (int i = 0; i < N_RCV; i++)
        result_of(&c[i], &r[i]);
    for (int i = 0; i < N_RCV; i++)
        release(&c[i]);
    for (int i = 0; i < N_RCV; i++)
        ck_assert_msg(r[i].rc == 0, "rx-%d: %s", i, r[i].err);
    uint64_t want = reference_hash();
    th_stop(pub);
    int from_replica = 0;
    for (int i = 0; i < N_RCV; i++) {
        ck_assert_msg(r[i].hash == want, "rx-%d (from %s) differs from a plain pull", i, r[i].source);
        ck_assert(r[i].xe >= r[i].xs);
        from_replica += strcmp(r[i].source, "trainer") != 0;
    }
    /* Trainer pulls overlapping at any instant: at most 2.  The intervals
     * are the transfer phases, inside each puller's lease. */
    for (int i = 0; i < N_RCV; i++) {
        if (strcmp(r[i].source, "trainer"))
            continue;
        int at_once = 0;
        for (int j = 0; j < N_RCV; j++)
            at_once += !strcmp(r[j].source, "trainer") && r[j].xs <= r[i].xs && r[i].xs < r[j].xe;
        ck_assert_msg(at_once <= 2, "%d receivers pulled from the trainer at once", at_once);
    }
    ck_assert_msg(from_replica >= 1, "no receiver pulled from a replica");
    for (int i = 0; i < N_RCV; i++)
        fprintf(stderr, "rx-%d: from %s [%.4f, %.4f]\n", i, r[i].source, r[i].xs, r[i].xe);
}
END_TEST

/* One replica R pulls v1 from the trainer; then a receiver P pulls v1: with
 * both sources idle it prefers the replica. */
static void replica_then_puller(enum after what, int kill_replica)
{
    write_cfg(2, 1);
    pid_t pub = start_publisher();
    struct child rep, p;
    start_receiver(&rep, "replica-0", what);
    wait_ready(&rep);
    go(&rep);
    struct result rr, pr;
    result_of(&rep, &rr);
    ck_assert_msg(rr.rc == 0, "replica: %s", rr.err);
    ck_assert_str_eq(rr.source, "trainer");
    start_receiver(&p, "puller", AFTER_NOTHING);
    wait_ready(&p);
    /* Its server hangs: the copy stalls mid-pull.  Its record lives on for
     * refit.stale_after (3 s), long enough for the puller to choose it. */
    if (kill_replica)
        kill(rep.pid, SIGSTOP);
    go(&p);
    if (kill_replica) {
        usleep(700000);
        kill(rep.pid, SIGKILL);
        waitpid(rep.pid, NULL, 0);
    }
    result_of(&p, &pr);
    release(&p);
    if (!kill_replica)
        release(&rep);
    else {
        close_fd(rep.go[1]);
        close_fd(rep.res[0]);
        close_fd(rep.rel[1]);
    }
    th_stop(pub);
    ck_assert_msg(pr.rc == 0, "puller: %s", pr.err);
    ck_assert_str_eq(pr.source, "trainer");
    ck_assert_msg(pr.fallbacks >= 1, "the puller never tried the replica");
    ck_assert_msg(pr.hash == rr.hash, "the puller's weights differ from the replica's before it went bad");
}

START_TEST(replica_killed_mid_pull_falls_back)
{
    replica_then_puller(AFTER_NOTHING, 1);
}
END_TEST

START_TEST(corrupt_replica_is_detected)
{
    replica_then_puller(AFTER_CORRUPT, 0);
}
END_TEST

/* Caller-bound destinations: one staging buffer, so the replica goes
 * UPDATING (and waits for its pullers) before its next pull overwrites it;
 * it serves each version in turn. */
START_TEST(bound_replica_serves_each_version)
{
    write_cfg(2, 1);
    pid_t pub = start_publisher_cycles("2");
    struct child rep, p;
    start_receiver_ex(&rep, "replica-b", 1, 2, AFTER_NOTHING);
    start_receiver_ex(&p, "puller-b", 0, 2, AFTER_NOTHING);
    wait_ready(&rep);
    wait_ready(&p);
    struct result r[2], q[2];
    for (int v = 0; v < 2; v++) {
        go(&rep);
        result_of(&rep, &r[v]);
        go(&p);
        result_of(&p, &q[v]);
    }
    release(&p);
    release(&rep);
    th_stop(pub);
    for (int v = 0; v < 2; v++) {
        ck_assert_msg(r[v].rc == 0, "replica v%d: %s", v + 1, r[v].err);
        ck_assert_msg(q[v].rc == 0, "puller v%d: %s", v + 1, q[v].err);
        ck_assert_str_eq(r[v].source, "trainer");
        ck_assert_str_eq(q[v].source, "replica-b");
        ck_assert_msg(q[v].hash == r[v].hash, "v%d copied from the replica differs from its weights", v + 1);
    }
    ck_assert_msg(r[0].hash != r[1].hash, "v2 equals v1");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fanout");
    TCase *tc = tcase_create("fanout");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, six_receivers_two_per_source);
    tcase_add_test(tc, replica_killed_mid_pull_falls_back);
    tcase_add_test(tc, corrupt_replica_is_detected);
    tcase_add_test(tc, bound_replica_serves_each_version);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
