/* tpeer.h — what the transport test programs share (each is one
 * translation unit and includes this once): the peer process (tp_peer,
 * fork + exec, one command per line), this process's side of the
 * connection, and buffers of the run's memory type (tmem.h). */
#ifndef TP_TPEER_H
#define TP_TPEER_H

#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pattern.h"
#include "tmem.h"
#include "refit/config.h"
#include "refit/loader.h"
#include "refit/status.h"
#include "refit/transport_core.h"

#define TP_UNUSED __attribute__((unused))

static const char *plugin = "tcp";
static const char *peer_exe;
#define TIMEOUT "2s"         /* transport.timeout on both sides */
#define WAIT_MS 60000        /* far beyond it: a wait that reaches this hung */

/* ---- the peer process ---- */

struct peer {
    pid_t pid;
    FILE *to, *from;
    uint8_t addr[4096];
    size_t alen;
    char line[1 << 17];
};

static TP_UNUSED size_t unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    unsigned v;
    while (n < cap && sscanf(s, "%2x", &v) == 1) {
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static TP_UNUSED const char *peer_read(struct peer *p)
{
    ck_assert_msg(fgets(p->line, sizeof(p->line), p->from) != NULL, "peer died or closed its output");
    p->line[strcspn(p->line, "\n")] = 0;
    return p->line;
}

static TP_UNUSED const char *peer_cmd(struct peer *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->to, fmt, ap);
    va_end(ap);
    fputc('\n', p->to);
    fflush(p->to);
    return peer_read(p);
}

/* Starts the peer process without waiting for it: its transport's init
 * (a second or more for libfabric and UCX on a loaded machine) then runs
 * while this process initialises its own; peer_ready waits for its address.
 * token: REFIT_TCP_TOKEN for the peer (NULL: none); sets: --set values
 * (NULL-terminated, at most 4; NULL: none). */
static TP_UNUSED void peer_spawn_sets(struct peer *p, const char *token, const char *const *sets)
{
    int in[2], out[2];
    ck_assert_int_eq(pipe(in), 0);
    ck_assert_int_eq(pipe(out), 0);
    p->pid = fork();
    ck_assert_int_ge(p->pid, 0);
    if (p->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        if (token)
            setenv("REFIT_TCP_TOKEN", token, 1);
        else
            unsetenv("REFIT_TCP_TOKEN");
        const char *args[16] = {peer_exe, plugin, "--set", "transport.timeout=" TIMEOUT, "--name", "peer"};
        int n = 6;
        for (int i = 0; sets && sets[i] && i < 4; i++) {
            args[n++] = "--set";
            args[n++] = sets[i];
        }
        args[n] = NULL;
        execv(peer_exe, (char *const *)args);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->to = fdopen(in[1], "w");
    p->from = fdopen(out[0], "r");
}

/* The address a spawned peer prints once its transport is up. */
static TP_UNUSED void peer_ready(struct peer *p)
{
    const char *l = peer_read(p);
    ck_assert_msg(!strncmp(l, "addr ", 5), "peer did not start: %s", l);
    p->alen = unhex(l + 5, p->addr, sizeof(p->addr));
}

static TP_UNUSED void peer_start_sets(struct peer *p, const char *token, const char *const *sets)
{
    peer_spawn_sets(p, token, sets);
    peer_ready(p);
}

/* extra: one --set (NULL: none). */
static TP_UNUSED void peer_spawn(struct peer *p, const char *token, const char *extra)
{
    const char *sets[2] = {extra, NULL};
    peer_spawn_sets(p, token, sets);
}

static TP_UNUSED void peer_start(struct peer *p, const char *token, const char *extra)
{
    peer_spawn(p, token, extra);
    peer_ready(p);
}

static TP_UNUSED void peer_stop(struct peer *p)
{
    if (p->pid <= 0)
        return;
    fprintf(p->to, "exit\n");
    fclose(p->to);
    fclose(p->from);
    int st;
    waitpid(p->pid, &st, 0);
    p->pid = 0;
}

static TP_UNUSED void peer_kill(struct peer *p)
{
    kill(p->pid, SIGKILL);
    kill(p->pid, SIGCONT);
    fclose(p->to);
    fclose(p->from);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

/* ---- this process ---- */

struct side {
    refit_config_t *cfg;
    refit_loader_t *ld;
    refit_transport_t *t;
    refit_tp_peer_t *peer;
};

static TP_UNUSED void side_open(struct side *s, const char *extra)
{
    ck_assert_int_eq(refit_config_create(&s->cfg), 0);
    ck_assert_int_eq(refit_config_apply_env(s->cfg, NULL), 0);
    ck_assert_int_eq(refit_config_set(s->cfg, "transport.timeout=" TIMEOUT, "test"), 0);
    if (extra)
        ck_assert_int_eq(refit_config_set(s->cfg, extra, "test"), 0);
    ck_assert_int_eq(refit_loader_create(s->cfg, &s->ld), 0);
    struct refit_transport_open o = {.size = sizeof(o), .plugin = plugin, .name = "test",
                              .cuda_device = tm_cuda ? tm_dev : -1};
    int rc = refit_transport_init(s->ld, s->cfg, &o, &s->t);
    ck_assert_msg(rc == 0, "init %s: %s", plugin, refit_error_message());
}

static TP_UNUSED void side_connect(struct side *s, struct peer *p)
{
    int rc = refit_transport_connect(s->t, p->addr, p->alen, "peer", &s->peer);
    ck_assert_msg(rc == 0, "connect: %s", refit_error_message());
}

static TP_UNUSED void side_close(struct side *s)
{
    refit_transport_disconnect(s->t, s->peer);
    refit_transport_fini(s->t);
    refit_loader_destroy(s->ld);
    refit_config_destroy(s->cfg);
    memset(s, 0, sizeof(*s));
}

/* Register a region at the peer and unpack its key here. */
static TP_UNUSED refit_tp_rkey_t *remote_reg(struct side *s, struct peer *p, uint64_t size, uint32_t seed, int *id)
{
    const char *l = peer_cmd(p, "reg %llu %u", (unsigned long long)size, seed);
    int n = 0;
    ck_assert_msg(sscanf(l, "rkey %d %n", id, &n) == 1, "peer reg: %s", l);
    static uint8_t k[4096];
    size_t kl = unhex(l + n, k, sizeof(k));
    refit_tp_rkey_t *rk = NULL;
    int rc = refit_transport_unpack(s->t, s->peer, k, kl, &rk);
    ck_assert_msg(rc == 0, "unpack: %s", refit_error_message());
    return rk;
}

/* Buffers of this run's memory type (tmem.h); failures end the test. */
static TP_UNUSED void *map(uint64_t n)
{
    void *m = tm_alloc(n);
    ck_assert_msg(m != NULL, "buffer of %llu bytes: %s", (unsigned long long)n, tm_err);
    return m;
}

static TP_UNUSED void munmap_buf(void *p, uint64_t n) { tm_free(p, n); }

static TP_UNUSED void fill(void *buf, uint64_t len, uint32_t seed, uint64_t from)
{
    ck_assert_msg(tm_fill(buf, len, seed, from) == 0, "fill: %s", tm_err);
}

static TP_UNUSED void zero(void *buf, uint64_t len)
{
    ck_assert_msg(tm_zero(buf, len) == 0, "zero: %s", tm_err);
}

/* First mismatch against the pattern, or -1. */
static TP_UNUSED int64_t check(const void *buf, uint64_t len, uint32_t seed, uint64_t from)
{
    int64_t bad = tm_check(buf, len, seed, from);
    ck_assert_msg(bad != -2, "check: %s", tm_err);
    return bad;
}

static TP_UNUSED int byte_at(const uint8_t *buf, uint64_t off)
{
    uint8_t *v = tm_view(buf + off, 1);
    ck_assert_msg(v != NULL, "read back: %s", tm_err);
    int b = v[0];
    tm_view_done(v, buf + off);
    return b;
}

static TP_UNUSED int xfer1(struct side *s, uint32_t op, refit_tp_region_t *l, uint64_t loff, refit_tp_rkey_t *r,
                 uint64_t roff, uint64_t len)
{
    struct refit_tp_desc d = {op, l, loff, r, roff, len};
    return refit_transport_xfer(s->t, s->peer, &d, 1, WAIT_MS);
}

static TP_UNUSED uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char l[256];
    unsigned long long kb = 0;
    while (f && fgets(l, sizeof(l), f))
        if (sscanf(l, "MemAvailable: %llu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

#endif
