/* harness.h — what the engine's multi-process tests share: a work
 * directory with a synthetic checkpoint (`refit demo --make-checkpoint`),
 * waiting for a source to be READY, snapshots of a receiver's destinations,
 * a publisher of a stand-in shard, child processes.  Header-only (static
 * inline): each test is one executable. */
#ifndef REFIT_TEST_HARNESS_H
#define REFIT_TEST_HARNESS_H

#include <check.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "refit/catalog.h"
#include "refit/refit.h"
#include "refit/standin.h"
#include "refit/store_core.h"

static inline double th_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* tp_peer's reset: connect(AF_UNSPEC) on each connected TCP socket of this
 * process sends RST and leaves the descriptor to its owner.  How many. */
static inline int th_reset_tcp(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dirfd(d))
            continue;
        int type = 0;
        socklen_t tl = sizeof(type);
        struct sockaddr_storage sa;
        socklen_t sl = sizeof(sa);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_STREAM ||
            getpeername(fd, (struct sockaddr *)&sa, &sl) || (sa.ss_family != AF_INET && sa.ss_family != AF_INET6))
            continue;
        struct sockaddr un = {.sa_family = AF_UNSPEC};
        n += connect(fd, &un, sizeof(un)) == 0;
    }
    if (d)
        closedir(d);
    return n;
}

/* A port the kernel just had free on 127.0.0.1 (-1: none), for a test's
 * own redis-server (restarts reuse it): not one derived from the pid,
 * which a test running beside this one may hold. */
static inline int th_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int port = -1;
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&sa, sizeof(sa)) && !getsockname(fd, (struct sockaddr *)&sa, &sl))
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* A fresh directory $TMPDIR/refit-<tag>-XXXXXX (/tmp without TMPDIR). */
static inline void th_tmpdir(const char *tag, char *dir, size_t dcap)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, dcap, "%s/refit-%s-XXXXXX", t && *t ? t : "/tmp", tag);
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* The checkpoints of th_workdir, made once per test program: `refit demo
 * --make-checkpoint` is deterministic (a fixed seed) and the tests only
 * read it, but making it (a process, ~60 MB written) in every forked test
 * cost CI ~1-2 s of CPU each, ~50 times per build.  The cache lives in
 * $TMPDIR/refit-ckc-<pid of the test program>-<layers>-<vocab>; the
 * program's main process removes its caches at exit (Check's forked
 * children exit too: they leave them alone). */
static pid_t th_main_pid;

__attribute__((constructor)) static void th_ckcache_init(void)
{
    th_main_pid = getpid();
}

__attribute__((destructor)) static void th_ckcache_fini(void)
{
    if (getpid() != th_main_pid)
        return;
    const char *t = getenv("TMPDIR");
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'/refit-ckc-%d-*", t && *t ? t : "/tmp", (int)th_main_pid);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove the checkpoint caches of %d\n", (int)th_main_pid);
}

/* The cached checkpoint of `layers` x `vocab` (made by `bin` on first use)
 * into path.  Made in a fresh directory, then renamed into place: a test
 * killed mid-way leaves no half checkpoint behind for the next. */
static inline void th_ckcache(const char *bin, int layers, int vocab, char *path, size_t cap)
{
    const char *t = getenv("TMPDIR");
    const char *tmp = t && *t ? t : "/tmp";
    ck_assert_int_lt(snprintf(path, cap, "%s/refit-ckc-%d-%d-%d", tmp, (int)th_main_pid, layers, vocab), (int)cap);
    if (access(path, F_OK) == 0)
        return;
    char mk[400], cmd[1200];
    snprintf(mk, sizeof(mk), "%s/refit-ckc-%d-new-XXXXXX", tmp, (int)th_main_pid);
    ck_assert_ptr_nonnull(mkdtemp(mk));
    snprintf(cmd, sizeof(cmd), "'%s' demo --make-checkpoint '%s' --layers %d --vocab %d >/dev/null", bin, mk,
             layers, vocab);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_msg(rename(mk, path) == 0, "%s -> %s: %s", mk, path, strerror(errno));
}

/* A fresh work directory (th_tmpdir) with a Qwen3-shaped checkpoint in
 * ckpt/ (`layers` layers, `vocab` rows), made by the refit binary `bin`:
 * a link to the program's cached copy (th_ckcache), which no test writes. */
static inline void th_workdir(const char *bin, const char *tag, int layers, int vocab, char *dir, size_t dcap,
                              char *ckpt, size_t ccap)
{
    char cache[400];
    th_ckcache(bin, layers, vocab, cache, sizeof(cache));
    th_tmpdir(tag, dir, dcap);
    snprintf(ckpt, ccap, "%s/ckpt", dir);
    ck_assert_msg(symlink(cache, ckpt) == 0, "%s -> %s: %s", ckpt, cache, strerror(errno));
}

/* The cluster file of a one-process test, <dir>/cluster.yaml (its path
 * into path): the file store under dir in namespace <prefix><pid> (into
 * ns), tcp, one receiver, timeouts a loaded machine meets, and the vLLM
 * target of the checkpoint in ckpt. */
static inline void th_cluster_file(const char *dir, const char *ckpt, const char *prefix, char *ns, size_t ncap,
                                   char *path, size_t pcap)
{
    snprintf(ns, ncap, "%s%d", prefix, (int)getpid());
    ck_assert_int_lt(snprintf(path, pcap, "%s/cluster.yaml", dir), (int)pcap);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "store:\n  plugin: file\n  namespace: %s\n  file:\n    path: %s/store\n    fsync: false\n"
            "transport:\n  plugin: tcp\n  timeout: 5s\n"
            "refit:\n  timeout: 8s\n  release_timeout: 20s\n  stale_after: 30s\n  heartbeat: 150ms\n"
            "  receivers: 1\n"
            "model:\n  plugin: auto\n  hf_config: %s/config.json\n  target: vllm\n",
            ns, dir, ckpt);
    ck_assert_int_eq(fclose(f), 0);
}

/* A context of the cluster file with overrides; the test fails on error. */
static inline refit_context_t *th_context(const char *cfg_path, const char *const *ovr, size_t n)
{
    refit_context_t *ctx = NULL;
    ck_assert_msg(refit_context_create(cfg_path, ovr, n, &ctx) == 0, "%s", refit_error_message());
    return ctx;
}

/* Receiver tp rank `rank` of `tp`, its destinations allocated. */
static inline refit_receiver_t *th_receiver(refit_context_t *ctx, const char *id, int tp, int rank)
{
    refit_receiver_t *r;
    struct refit_target tg = {.tp_rank = rank, .tp_size = tp};
    ck_assert_msg(refit_receiver_create(ctx, &tg, id, &r) == 0, "%s", refit_error_message());
    ck_assert_int_eq(refit_receiver_allocate(r), 0);
    return r;
}

static inline void th_rmdir(const char *dir)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static inline void th_stop(pid_t p)
{
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
}

/* Freeze process p now and kill it after `usec` from a forked killer (the
 * caller waits for the killer's pid, then for p). */
static inline pid_t th_freeze_then_kill(pid_t p, useconds_t usec)
{
    kill(p, SIGSTOP);
    pid_t killer = fork();
    ck_assert_int_ge(killer, 0);
    if (killer == 0) {
        usleep(usec);
        kill(p, SIGKILL);
        _exit(0);
    }
    return killer;
}

/* The child exited with status 0. */
static inline int th_child_ok(pid_t p)
{
    int st = 0;
    return waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Wait (20 s at most) until source `id` is READY at version v. */
static inline void th_wait_ready(refit_context_t *ctx, const char *id, uint64_t v)
{
    refit_store_t *st;
    refit_loader_t *ld;
    ck_assert_int_eq(refit_loader_create((refit_config_t *)refit_context_config(ctx), &ld), 0);
    ck_assert_int_eq(refit_store_open((refit_config_t *)refit_context_config(ctx), ld, NULL, &st), 0);
    double t0 = th_now();
    for (;;) {
        struct refit_source_record *r = NULL;
        if (refit_record_fetch(st, id, &r) == 0) {
            int ok = r->version == v && r->status == REFIT_SOURCE_READY;
            free(r);
            if (ok)
                break;
        }
        ck_assert_msg(th_now() - t0 < 20, "source %s never reached v%llu", id, (unsigned long long)v);
        usleep(20000);
    }
    refit_store_close(st);
    refit_loader_destroy(ld);
}

/* Every destination's bytes, concatenated (malloc'ed). */
static inline void *th_snapshot(refit_receiver_t *r, size_t *total)
{
    size_t n = 0;
    for (size_t i = 0; i < refit_receiver_count(r); i++) {
        struct refit_tensor_info ti;
        refit_receiver_tensor(r, i, &ti);
        n += ti.nbytes;
    }
    char *buf = malloc(n + 1), *p = buf;
    ck_assert_ptr_nonnull(buf);
    for (size_t i = 0; i < refit_receiver_count(r); i++) {
        struct refit_tensor_info ti;
        refit_receiver_tensor(r, i, &ti);
        memcpy(p, ti.ptr, ti.nbytes);
        p += ti.nbytes;
    }
    *total = n;
    return buf;
}

static inline int th_same_as(refit_receiver_t *r, const char *snap)
{
    size_t n;
    char *now = th_snapshot(r, &n);
    int same = !memcmp(now, snap, n);
    free(now);
    return same;
}

/* A pull of v into r that must succeed; its stats. */
static inline struct refit_pull_stats th_pull(refit_receiver_t *r, uint64_t v)
{
    struct refit_pull_stats s = {.size = sizeof(s)};
    ck_assert_msg(refit_receiver_pull(r, v, &s) == 0, "pull v%llu: %s", (unsigned long long)v,
                  refit_error_message());
    ck_assert_uint_eq(s.version, v);
    return s;
}

/* A publisher `id` at position par with the checkpoint's stand-in shard
 * for it added (REFIT_MEM_HOST); 0 or the failing call's status. */
static inline int th_publisher_at(refit_context_t *ctx, const char *ckpt, const struct refit_parallel *par,
                                  const char *id, struct refit_standin_shard *sh, refit_publisher_t **pub)
{
    int rc = refit_standin_shard_load(refit_context_model(ctx), ckpt, par, sh);
    if (!rc)
        rc = refit_publisher_create(ctx, par, id, pub);
    for (size_t i = 0; !rc && i < sh->n; i++)
        rc = refit_publisher_add(*pub, sh->t[i].name, sh->t[i].data, sh->t[i].dtype, sh->t[i].ndim, sh->t[i].shape,
                                 REFIT_MEM_HOST);
    return rc;
}

/* The same at TP rank 0 of 1. */
static inline int th_publisher(refit_context_t *ctx, const char *ckpt, const char *id,
                               struct refit_standin_shard *sh, refit_publisher_t **pub)
{
    struct refit_parallel par = {.tp_size = 1, .ep_size = 1, .pp_size = 1, .etp_size = 1};
    return th_publisher_at(ctx, ckpt, &par, id, sh, pub);
}

#endif
