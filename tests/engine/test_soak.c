/* test_soak.c — many publish/pull cycles with random faults (issue 22):
 *
 *   test_soak pull|push SECONDS [SEED]      (or REFIT_SOAK_SEED)
 *
 * One publisher process (C API, forked; id "trainer", pull or push mode)
 * and two receivers in this process (their own contexts, pulling at once
 * from two threads), over tcp, with Redis as the store where redis-server
 * is installed (else the file store, and the Redis restart is skipped).
 * Every connection goes through a proxy in this process: the transports
 * listen on 127.0.0.1 and advertise 127.0.0.2, where the proxy listens on
 * the same ports and forwards.
 *
 * Each cycle publishes version V and, while both receivers pull it, does
 * one fault drawn from the seed: none, kill -9 of the publisher (a new one
 * takes over), SIGSTOP then SIGCONT of it (up to 1.5 transport timeouts),
 * an RST on every TCP connection of this process (tp_peer's reset:
 * connect(AF_UNSPEC)), a Redis kill -9 and restart, one store value
 * corrupted (a byte flipped or the value cut in half; put back after the
 * cycle), or one byte flipped on the wire by the proxy (any connection,
 * either direction).  After every cycle, for every receiver:
 *   - a pull that succeeded holds exactly version V's weights (the
 *     reference snapshots, taken in fault-free cycles first);
 *   - a pull that failed holds exactly what it held before, returned
 *     within a bound of its configured timeouts (a hang detector, far above
 *     any honest duration: no timing is asserted otherwise), and its error
 *     names the receiver and the version;
 * and a fault-free cycle succeeds for both receivers within three tries
 * (receivers reconnect, publishers come back, Redis keys come back).
 * The weights of version V are the checkpoint's stepped to 1 + (V-1) % 3,
 * so consecutive versions always differ and a mix matches neither.
 * The seed is printed at the start and in every failure. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include "harness.h"
#include "../check_run.h"

/* Messages are cut to their buffers on purpose. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define N_RCV 2
#define N_CONTENT 3
#define TP_TIMEOUT_S 2
#define REFIT_TIMEOUT_S 4
/* A failing call must return within this: every wait the pull makes is
 * bounded by refit.timeout or transport.timeout; this is a hang detector. */
#define FAIL_BOUND_S (3 * REFIT_TIMEOUT_S + 2 * TP_TIMEOUT_S + 20)

enum fault { F_NONE, F_KILL, F_STOP, F_RESET, F_REDIS, F_STORE, F_WIRE, F_N };
static const char *const fault_name[F_N] = {"none", "kill -9", "SIGSTOP", "TCP reset", "Redis restart",
                                            "store corruption", "wire corruption"};

static int push_mode, seconds = 30, cycle_no;
static unsigned long long seed;
static char dir[256], ckpt[300], cfg_path[300];
static int redis_port;
static pid_t redis_pid, pub_pid;
static int pub_cmd = -1, pub_ack = -1;

#define SOAK_ASSERT(cond, ...)                                                                                  \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            char m_[1500];                                                                                   \
            snprintf(m_, sizeof(m_), __VA_ARGS__);                                                           \
            ck_abort_msg("soak %s, seed %llu (rerun: test_soak %s %d %llu), cycle %d: %s", push_mode ? "push" \
                         : "pull", seed, push_mode ? "push" : "pull", seconds, seed, cycle_no, m_);          \
        }                                                                                                    \
    } while (0)

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t content_of(uint64_t v)
{
    return 1 + (v - 1) % N_CONTENT;
}

/* ------------------------------------------------------------------ */
/* The proxy: 127.0.0.2:port -> 127.0.0.1:port, flipping one byte when armed */

#define MAX_PORTS (N_RCV + 1)
static struct {
    int lfd[MAX_PORTS];
    uint16_t port[MAX_PORTS];
    int n;
    atomic_int stop, pumps, flipped;
    atomic_llong flip_at; /* bytes still to pass before the flipped one; < 0: off */
    pthread_t acceptor;
} px;

struct pump {
    int a, b;
};

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* An error on one side resets the other (linger 0), an end ends it. */
static void *pump_main(void *arg)
{
    struct pump pp = *(struct pump *)arg;
    free(arg);
    static _Thread_local uint8_t buf[65536];
    int fds[2] = {pp.a, pp.b}, hard = 0;
    while (!atomic_load(&px.stop)) {
        struct pollfd pf[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
        int n = poll(pf, 2, 200);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        int done = 0;
        for (int i = 0; i < 2 && !done; i++) {
            if (!pf[i].revents)
                continue;
            ssize_t r = recv(fds[i], buf, sizeof(buf), 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                hard = r < 0;
                done = 1;
                break;
            }
            long long left = atomic_fetch_sub(&px.flip_at, r);
            if (left >= 0 && left < r) {
                buf[left] ^= (uint8_t)(1u << (left % 8));
                atomic_fetch_add(&px.flipped, 1);
                atomic_store(&px.flip_at, -1);
            } else if (left < 0) {
                atomic_store(&px.flip_at, -1);
            }
            if (write_all(fds[1 - i], buf, (size_t)r)) {
                hard = 1;
                done = 1;
            }
        }
        if (done)
            break;
    }
    if (hard) {
        struct linger lg = {1, 0};
        setsockopt(fds[0], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        setsockopt(fds[1], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(fds[0]);
    close(fds[1]);
    atomic_fetch_sub(&px.pumps, 1);
    return NULL;
}

static void *acceptor_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&px.stop)) {
        struct pollfd pf[MAX_PORTS];
        for (int i = 0; i < px.n; i++)
            pf[i] = (struct pollfd){px.lfd[i], POLLIN, 0};
        if (poll(pf, (nfds_t)px.n, 200) <= 0)
            continue;
        for (int i = 0; i < px.n; i++) {
            if (!(pf[i].revents & POLLIN))
                continue;
            int c = accept(px.lfd[i], NULL, NULL);
            if (c < 0)
                continue;
            int s = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(px.port[i])};
            inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
            if (s < 0 || connect(s, (struct sockaddr *)&to, sizeof(to))) {
                struct linger lg = {1, 0};
                setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
                close(c);
                if (s >= 0)
                    close(s);
                continue;
            }
            struct pump *pp = malloc(sizeof(*pp));
            *pp = (struct pump){c, s};
            pthread_t t;
            atomic_fetch_add(&px.pumps, 1);
            if (pthread_create(&t, NULL, pump_main, pp)) {
                atomic_fetch_sub(&px.pumps, 1);
                close(c);
                close(s);
                free(pp);
                continue;
            }
            pthread_detach(t);
        }
    }
    return NULL;
}

/* A port free on 127.0.0.1 whose twin on 127.0.0.2 the proxy holds. */
static int proxy_add_port(void)
{
    for (int tries = 0; tries < 50; tries++) {
        int a = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET};
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        socklen_t sl = sizeof(sa);
        if (a < 0 || bind(a, (struct sockaddr *)&sa, sizeof(sa)) || getsockname(a, (struct sockaddr *)&sa, &sl)) {
            if (a >= 0)
                close(a);
            continue;
        }
        int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in la = sa;
        inet_pton(AF_INET, "127.0.0.2", &la.sin_addr);
        int ok = l >= 0 && !bind(l, (struct sockaddr *)&la, sizeof(la)) && !listen(l, 64);
        close(a);
        if (!ok) {
            if (l >= 0)
                close(l);
            continue;
        }
        px.lfd[px.n] = l;
        px.port[px.n] = ntohs(sa.sin_port);
        return px.port[px.n++];
    }
    return -1;
}

static void proxy_stop(void)
{
    atomic_store(&px.stop, 1);
    pthread_join(px.acceptor, NULL);
    for (int i = 0; i < 100 && atomic_load(&px.pumps); i++)
        usleep(50000);
    for (int i = 0; i < px.n; i++)
        close(px.lfd[i]);
}

/* ------------------------------------------------------------------ */
/* Redis, the publisher */

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
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d ping >/dev/null 2>&1", redis_port);
    for (int i = 0; i < 200 && system(cmd) != 0; i++)
        usleep(50000);
}

static void publisher_main(int cmd_fd, int ack_fd)
{
    char o1[64], o2[64];
    snprintf(o1, sizeof(o1), "transport.tcp.port_min=%u", px.port[0]);
    snprintf(o2, sizeof(o2), "transport.tcp.port_max=%u", px.port[0]);
    const char *ovr[] = {o1, o2};
    refit_context_t *ctx;
    refit_publisher_t *pub = NULL;
    struct refit_standin_shard sh;
    if (refit_context_create(cfg_path, ovr, 2, &ctx) || th_publisher(ctx, ckpt, "trainer", &sh, &pub)) {
        fprintf(stderr, "soak publisher: %s\n", refit_error_message());
        _exit(2);
    }
    void *v1 = malloc(sh.bytes);
    if (!v1)
        _exit(3);
    memcpy(v1, sh.arena, sh.bytes);
    uint64_t v;
    while (read(cmd_fd, &v, sizeof(v)) == (ssize_t)sizeof(v)) {
        memcpy(sh.arena, v1, sh.bytes);
        for (size_t i = 0; content_of(v) > 1 && i < sh.n; i++)
            if (refit_standin_step(sh.t[i].data, sh.t[i].nbytes, sh.t[i].dtype, 1, content_of(v)))
                _exit(4);
        int rc = refit_publisher_publish(pub, v);
        if (rc)
            fprintf(stderr, "soak publisher: v%llu: %s\n", (unsigned long long)v, refit_error_message());
        char c = rc ? 1 : 0;
        if (write(ack_fd, &c, 1) != 1)
            break;
    }
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    free(v1);
    refit_context_destroy(ctx);
    _exit(0);
}

static void start_publisher(void)
{
    int c[2], a[2];
    ck_assert_int_eq(pipe(c), 0);
    ck_assert_int_eq(pipe(a), 0);
    pub_pid = fork();
    ck_assert_int_ge(pub_pid, 0);
    if (pub_pid == 0) {
        close(c[1]);
        close(a[0]);
        publisher_main(c[0], a[1]);
    }
    close(c[0]);
    close(a[1]);
    pub_cmd = c[1];
    pub_ack = a[0];
    fcntl(pub_ack, F_SETFL, O_NONBLOCK);
}

static void stop_publisher(int sig)
{
    if (pub_pid <= 0)
        return;
    close(pub_cmd);
    if (sig)
        kill(pub_pid, sig);
    kill(pub_pid, SIGCONT);
    int st;
    double t0 = th_now();
    while (waitpid(pub_pid, &st, WNOHANG) == 0) {
        if (th_now() - t0 > 60) {
            kill(pub_pid, SIGKILL);
            waitpid(pub_pid, &st, 0);
            break;
        }
        usleep(20000);
    }
    close(pub_ack);
    pub_pid = 0;
}

/* READY(v) of "trainer" in the store, within a bound. */
static int wait_ready(refit_store_t *st, uint64_t v, double limit_s)
{
    double t0 = th_now();
    while (th_now() - t0 < limit_s) {
        struct refit_source_record *r = NULL;
        if (refit_record_fetch(st, "trainer", &r) == 0) {
            int ok = r->version == v && r->status == REFIT_SOURCE_READY;
            free(r);
            if (ok)
                return 1;
        }
        usleep(20000);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Receivers, pulled at once */

struct rcv {
    char id[16];
    refit_context_t *ctx;
    refit_receiver_t *r;
    char *ref[N_CONTENT + 1];
    size_t bytes;
    /* this pull */
    uint64_t v;
    int rc;
    double took;
    char err[1024];
};
static struct rcv rcv[N_RCV];

static void *pull_main(void *arg)
{
    struct rcv *x = arg;
    double t0 = th_now();
    struct refit_pull_stats s = {.size = sizeof(s)};
    x->rc = refit_receiver_pull(x->r, x->v, &s);
    x->took = th_now() - t0;
    snprintf(x->err, sizeof(x->err), "%s", x->rc ? refit_error_message() : "");
    if (!x->rc && s.version != x->v)
        x->rc = -1000;
    return NULL;
}

static void pull_all(uint64_t v)
{
    pthread_t t[N_RCV];
    for (int i = 0; i < N_RCV; i++) {
        rcv[i].v = v;
        ck_assert_int_eq(pthread_create(&t[i], NULL, pull_main, &rcv[i]), 0);
    }
    for (int i = 0; i < N_RCV; i++)
        pthread_join(t[i], NULL);
}

/* ------------------------------------------------------------------ */
/* Faults that run while the receivers pull */

struct fault_run {
    enum fault f;
    useconds_t delay_us, hold_us;
    pthread_t t;
};

static void *fault_main(void *arg)
{
    struct fault_run *fr = arg;
    usleep(fr->delay_us);
    switch (fr->f) {
    case F_KILL: kill(pub_pid, SIGKILL); break;
    case F_STOP:
        kill(pub_pid, SIGSTOP);
        usleep(fr->hold_us);
        kill(pub_pid, SIGCONT);
        break;
    case F_RESET: th_reset_tcp(); break;
    case F_REDIS:
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        start_redis();
        break;
    default: break;
    }
    return NULL;
}

/* One value of the store changed; its original is put back after the cycle
 * unless someone wrote the key since. */
struct corruption {
    char key[REFIT_STORE_MAX_KEY + 1];
    void *orig, *bad;
    size_t olen, blen;
};

static int corrupt_store(refit_store_t *st, struct corruption *c)
{
    char **keys = NULL;
    size_t n = 0;
    memset(c, 0, sizeof(*c));
    if (refit_store_list(st, "", &keys, &n) || !n) {
        free(keys);
        return 0;
    }
    size_t cand = 0;
    for (size_t i = 0; i < n; i++)
        cand += strncmp(keys[i], "heartbeats/", 11) && strncmp(keys[i], "push/slots/", 11);
    if (!cand) {
        free(keys);
        return 0;
    }
    size_t pick = rnd() % cand;
    for (size_t i = 0; i < n; i++)
        if (strncmp(keys[i], "heartbeats/", 11) && strncmp(keys[i], "push/slots/", 11) && pick-- == 0)
            snprintf(c->key, sizeof(c->key), "%s", keys[i]);
    free(keys);
    if (refit_store_get(st, c->key, &c->orig, &c->olen) || !c->olen) {
        free(c->orig);
        c->orig = NULL;
        return 0;
    }
    c->bad = malloc(c->olen);
    memcpy(c->bad, c->orig, c->olen);
    c->blen = c->olen;
    if (rnd() % 4 == 0)
        c->blen = c->olen / 2;
    else
        ((uint8_t *)c->bad)[rnd() % c->olen] ^= (uint8_t)(1 + rnd() % 255);
    if (refit_store_put(st, c->key, c->bad, c->blen)) {
        free(c->orig);
        free(c->bad);
        c->orig = c->bad = NULL;
        return 0;
    }
    return 1;
}

static void restore_store(refit_store_t *st, struct corruption *c)
{
    if (!c->orig)
        return;
    void *now = NULL;
    size_t len = 0;
    if (refit_store_get(st, c->key, &now, &len) == 0 && len == c->blen && !memcmp(now, c->bad, len))
        refit_store_put(st, c->key, c->orig, c->olen);
    free(now);
    free(c->orig);
    free(c->bad);
    c->orig = c->bad = NULL;
}

/* ------------------------------------------------------------------ */

static void write_cfg(void)
{
    char store[512];
    if (redis_port)
        snprintf(store, sizeof(store), "store:\n  plugin: redis\n  namespace: s%d\n  redis:\n    port: %d\n",
                 (int)getpid(), redis_port);
    else
        snprintf(store, sizeof(store),
                 "store:\n  plugin: file\n  namespace: s%d\n  file:\n    path: %s/store\n    fsync: false\n",
                 (int)getpid(), dir);
    snprintf(cfg_path, sizeof(cfg_path), "%s/cluster.yaml", dir);
    FILE *f = fopen(cfg_path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "%s"
            "transport:\n  plugin: tcp\n  timeout: %ds\n  tcp:\n    bind: 127.0.0.1\n    advertise: 127.0.0.2\n"
            "refit:\n  mode: %s\n  timeout: %ds\n  release_timeout: 2s\n  stale_after: 2s\n  heartbeat: 200ms\n"
            "  receivers: %d\n  verify: full\n"
            "model:\n  plugin: auto\n  hf_config: %s/config.json\n  target: vllm\n  fp8:\n    enabled: true\n",
            store, TP_TIMEOUT_S, push_mode ? "push" : "pull", REFIT_TIMEOUT_S, N_RCV, ckpt);
    fclose(f);
}

static void open_receivers(void)
{
    for (int i = 0; i < N_RCV; i++) {
        struct rcv *x = &rcv[i];
        snprintf(x->id, sizeof(x->id), "r%d", i);
        char o1[64], o2[64];
        snprintf(o1, sizeof(o1), "transport.tcp.port_min=%u", px.port[1 + i]);
        snprintf(o2, sizeof(o2), "transport.tcp.port_max=%u", px.port[1 + i]);
        const char *ovr[] = {o1, o2};
        ck_assert_msg(refit_context_create(cfg_path, ovr, 2, &x->ctx) == 0, "%s", refit_error_message());
        struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
        ck_assert_msg(refit_receiver_create(x->ctx, &tg, x->id, &x->r) == 0, "%s", refit_error_message());
        ck_assert_msg(refit_receiver_allocate(x->r) == 0, "%s", refit_error_message());
    }
}

/* Publish v (the publisher's READY within a bound). */
static void publish(refit_store_t *st, uint64_t v)
{
    char drain[64];
    while (read(pub_ack, drain, sizeof(drain)) > 0)
        ;
    SOAK_ASSERT(write(pub_cmd, &v, sizeof(v)) == (ssize_t)sizeof(v), "cannot reach the publisher");
    /* A publisher still inside an earlier push (stopped, then resumed)
     * finishes it first: bounded by refit.timeout. */
    SOAK_ASSERT(wait_ready(st, v, 3 * REFIT_TIMEOUT_S + 30), "the publisher never made v%llu READY",
                (unsigned long long)v);
}

/* The invariant after a pull of v: all of v, or exactly what was there. */
static void check_after(uint64_t v, char *const before[N_RCV], enum fault f, int *ok)
{
    for (int i = 0; i < N_RCV; i++) {
        struct rcv *x = &rcv[i];
        size_t n;
        char *now = th_snapshot(x->r, &n);
        SOAK_ASSERT(n == x->bytes, "%s: %zu bytes of destinations, %zu before", x->id, n, x->bytes);
        if (!x->rc) {
            SOAK_ASSERT(!memcmp(now, x->ref[content_of(v)], n),
                        "%s: pull of v%llu succeeded (fault: %s) but its weights are not v%llu's", x->id,
                        (unsigned long long)v, fault_name[f], (unsigned long long)v);
        } else {
            SOAK_ASSERT(x->rc != -1000, "%s: pull of v%llu returned another version", x->id, (unsigned long long)v);
            SOAK_ASSERT(!memcmp(now, before[i], n),
                        "%s: pull of v%llu failed (fault: %s: %s) and the weights changed (a mix)", x->id,
                        (unsigned long long)v, fault_name[f], x->err);
            SOAK_ASSERT(x->took < FAIL_BOUND_S, "%s: failing pull of v%llu took %.1f s (fault: %s): %s", x->id,
                        (unsigned long long)v, x->took, fault_name[f], x->err);
            char who[40], ver[40];
            snprintf(who, sizeof(who), "receiver %s", x->id);
            snprintf(ver, sizeof(ver), "v%llu", (unsigned long long)v);
            SOAK_ASSERT(strstr(x->err, who) && strstr(x->err, ver),
                        "%s: the error of pull v%llu (fault: %s) does not name the receiver and version: %s", x->id,
                        (unsigned long long)v, fault_name[f], x->err);
        }
        ok[i] = !x->rc;
        free(now);
    }
}

/* Fault-free cycles: every receiver gets a whole version within three
 * (a push is not repeated, so each try is a new version).  The first ones
 * take the references instead of checking against them.  Returns the next
 * version. */
static uint64_t clean_cycle(refit_store_t *st, uint64_t v, int first)
{
    int done[N_RCV] = {0};
    for (int attempt = 0; attempt < 3; attempt++, v++) {
        cycle_no = (int)v;
        publish(st, v);
        char *before[N_RCV];
        for (int i = 0; i < N_RCV; i++)
            before[i] = th_snapshot(rcv[i].r, &rcv[i].bytes);
        pull_all(v);
        int ok[N_RCV];
        if (first) {
            for (int i = 0; i < N_RCV; i++)
                if ((ok[i] = !rcv[i].rc) && !rcv[i].ref[content_of(v)])
                    rcv[i].ref[content_of(v)] = th_snapshot(rcv[i].r, &rcv[i].bytes);
        } else {
            check_after(v, before, F_NONE, ok);
        }
        int all = 1;
        for (int i = 0; i < N_RCV; i++) {
            done[i] |= ok[i];
            all &= done[i];
            free(before[i]);
            if (!ok[i])
                fprintf(stderr, "soak: %s: fault-free pull of v%llu, try %d: %s\n", rcv[i].id,
                        (unsigned long long)v, attempt + 1, rcv[i].err);
        }
        if (all)
            return v + 1;
    }
    for (int i = 0; i < N_RCV; i++)
        SOAK_ASSERT(done[i], "%s: no fault-free pull succeeded in three tries (v%llu-v%llu): %s", rcv[i].id,
                    (unsigned long long)v - 3, (unsigned long long)v - 1, rcv[i].err);
    return v;
}

START_TEST(soak)
{
    signal(SIGPIPE, SIG_IGN);
    rng_state = seed;
    fprintf(stderr, "soak %s: seed %llu, %d s\n", push_mode ? "push" : "pull", seed, seconds);
    th_workdir(REFIT_BIN, "soak", 2, 1024, dir, sizeof(dir), ckpt, sizeof(ckpt));
    int have_redis = system("command -v redis-server >/dev/null && command -v redis-cli >/dev/null") == 0;
    if (have_redis) {
        redis_port = th_free_port();
        ck_assert_int_gt(redis_port, 0);
        start_redis();
    } else {
        fprintf(stderr, "soak: redis-server not installed: SKIP the Redis restarts (file store)\n");
    }
    for (int i = 0; i < MAX_PORTS; i++)
        if (proxy_add_port() < 0) {
            fprintf(stderr, "soak: cannot listen on 127.0.0.2: SKIP\n");
            th_rmdir(dir);
            exit(77);
        }
    ck_assert_int_eq(pthread_create(&px.acceptor, NULL, acceptor_main, NULL), 0);
    atomic_store(&px.flip_at, -1);
    write_cfg();
    refit_context_t *sctx;
    refit_store_t *st;
    refit_loader_t *ld;
    ck_assert_msg(refit_context_create(cfg_path, NULL, 0, &sctx) == 0, "%s", refit_error_message());
    ck_assert_int_eq(refit_loader_create((refit_config_t *)refit_context_config(sctx), &ld), 0);
    ck_assert_int_eq(refit_store_open((refit_config_t *)refit_context_config(sctx), ld, NULL, &st), 0);
    open_receivers();
    start_publisher();

    /* References: fault-free versions until each receiver has pulled every
     * content once (three versions when nothing fails). */
    uint64_t v = 1;
    for (int have = 0; !have;) {
        SOAK_ASSERT(v <= 4 * N_CONTENT, "no references after %llu fault-free versions", (unsigned long long)v - 1);
        v = clean_cycle(st, v, 1);
        have = 1;
        for (int i = 0; i < N_RCV; i++)
            for (int c = 1; c <= N_CONTENT; c++)
                have &= rcv[i].ref[c] != NULL;
    }
    for (int i = 0; i < N_RCV; i++)
        for (int a = 1; a <= N_CONTENT; a++)
            for (int b = a + 1; b <= N_CONTENT; b++)
                SOAK_ASSERT(memcmp(rcv[i].ref[a], rcv[i].ref[b], rcv[i].bytes), "references %d and %d agree", a, b);

    int count[F_N] = {0}, failed[F_N] = {0};
    double t_end = th_now() + seconds, worst = 0;
    int faulty = 1, next_fault = F_N - 1;
    enum fault order[F_N - 1];
    while (th_now() < t_end) {
        cycle_no = (int)v;
        if (!faulty) {
            v = clean_cycle(st, v, 0);
            count[F_NONE]++;
            faulty = 1;
            continue;
        }
        faulty = 0;
        /* Every kind once per round, in an order drawn from the seed. */
        if (next_fault == F_N - 1) {
            for (int i = 0; i < F_N - 1; i++)
                order[i] = (enum fault)(1 + i);
            for (int i = F_N - 2; i > 0; i--) {
                int j = (int)(rnd() % (uint64_t)(i + 1));
                enum fault t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
            next_fault = 0;
        }
        enum fault f = order[next_fault++];
        if (f == F_REDIS && !have_redis)
            f = F_RESET;
        struct fault_run fr = {.f = f, .delay_us = (useconds_t)(rnd() % 150000),
                               .hold_us = (useconds_t)(200000 + rnd() % (TP_TIMEOUT_S * 1500000ull))};
        struct corruption cor = {0};
        publish(st, v);
        char *before[N_RCV];
        for (int i = 0; i < N_RCV; i++)
            before[i] = th_snapshot(rcv[i].r, &rcv[i].bytes);
        if (f == F_STORE && !corrupt_store(st, &cor))
            f = F_NONE;
        if (f == F_WIRE)
            atomic_store(&px.flip_at, (long long)(rnd() % (1u << 20)));
        count[f]++;
        if (f == F_KILL || f == F_STOP || f == F_RESET || f == F_REDIS)
            ck_assert_int_eq(pthread_create(&fr.t, NULL, fault_main, &fr), 0);
        pull_all(v);
        if (f == F_KILL || f == F_STOP || f == F_RESET || f == F_REDIS)
            pthread_join(fr.t, NULL);
        atomic_store(&px.flip_at, -1);
        int ok[N_RCV];
        check_after(v, before, f, ok);
        for (int i = 0; i < N_RCV; i++) {
            failed[f] += !ok[i];
            if (!ok[i] && rcv[i].took > worst)
                worst = rcv[i].took;
            free(before[i]);
        }
        restore_store(st, &cor);
        if (f == F_KILL) {
            stop_publisher(0);
            start_publisher();
        }
        v++;
    }
    /* The end: everything recovers. */
    v = clean_cycle(st, v, 0);
    fprintf(stderr, "soak %s, seed %llu: %llu versions;", push_mode ? "push" : "pull", seed,
            (unsigned long long)v);
    for (int f = 0; f < F_N; f++)
        fprintf(stderr, " %s %d (%d pulls failed);", fault_name[f], count[f], failed[f]);
    fprintf(stderr, " bytes flipped on the wire %d; slowest failing pull %.1f s\n", atomic_load(&px.flipped),
            worst);

    stop_publisher(SIGTERM);
    for (int i = 0; i < N_RCV; i++) {
        refit_receiver_destroy(rcv[i].r);
        refit_context_destroy(rcv[i].ctx);
        for (int c = 1; c <= N_CONTENT; c++)
            free(rcv[i].ref[c]);
    }
    refit_store_close(st);
    refit_loader_destroy(ld);
    refit_context_destroy(sctx);
    proxy_stop();
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = 0;
    }
    th_rmdir(dir);
}
END_TEST

/* Nothing may outlive a failed or hung run: Redis and the publisher go with
 * it, and a hang ends with the seed. */
static void cleanup(void)
{
    if (redis_pid > 0)
        kill(redis_pid, SIGKILL);
    if (pub_pid > 0)
        kill(pub_pid, SIGKILL);
}

static void on_alarm(int sig)
{
    (void)sig;
    char m[200];
    int n = snprintf(m, sizeof(m), "soak: hung past the run's bound at cycle %d, seed %llu\n", cycle_no, seed);
    if (n > 0 && write(2, m, (size_t)n) < 0)
        n = 0;
    cleanup();
    _exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "pull") && strcmp(argv[1], "push"))) {
        fprintf(stderr, "usage: test_soak pull|push SECONDS [SEED]\n");
        return 2;
    }
    push_mode = !strcmp(argv[1], "push");
    seconds = atoi(argv[2]);
    const char *s = argc > 3 ? argv[3] : getenv("REFIT_SOAK_SEED");
    seed = s && *s ? strtoull(s, NULL, 0) : (unsigned long long)time(NULL) * 1000003ull + (unsigned)getpid();
    atexit(cleanup);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)seconds + 600);
    Suite *su = suite_create("soak");
    TCase *tc = tcase_create("soak");
    tcase_set_timeout(tc, seconds + 600);
    tcase_add_test(tc, soak);
    suite_add_tcase(su, tc);
    /* No fork: the seed and the summary go to this process's stderr, and
     * exit(77) is a SKIP. */
    SRunner *sr = srunner_create(su);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
