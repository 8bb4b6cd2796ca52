/* smoke_tp.c — a two-process READ/WRITE/notify round trip through one
 * transport plugin, named by REFIT_TEST_PLUGIN, configured by the
 * assignments in REFIT_TEST_SET ("k=v;k=v").  The full conformance suite
 * lives in tests/transport/; this keeps the fabric plugins' basic path
 * checked on their own. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <sys/select.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "refit/config.h"
#include "refit/loader.h"
#include "refit/status.h"
#include "refit/transport.h"
#include "../check_run.h"

static const char *plugin_name(void)
{
    const char *p = getenv("REFIT_TEST_PLUGIN");
    return p ? p : "ucx";
}

struct ctx {
    refit_config_t *cfg;
    refit_loader_t *l;
    const struct refit_transport_ops *ops;
    struct refit_cfg_view view;
    char section[64];
    refit_tp_t *tp;
};

static void ctx_open(struct ctx *c, const char *name)
{
    memset(c, 0, sizeof(*c));
    ck_assert_int_eq(refit_config_create(&c->cfg), 0);
    ck_assert_int_eq(refit_loader_create(c->cfg, &c->l), 0);
    const struct refit_plugin *p;
    int rc = refit_loader_load(c->l, REFIT_PLUGIN_TRANSPORT, plugin_name(), &p);
    ck_assert_msg(rc == 0, "load: %s", refit_error_message());
    c->ops = p->ops;
    const char *set = getenv("REFIT_TEST_SET");
    if (set) {
        char *s = strdup(set), *save = NULL;
        for (char *t = strtok_r(s, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
            rc = refit_config_set(c->cfg, t, "test");
            ck_assert_msg(rc == 0, "set %s: %s", t, refit_error_message());
        }
        free(s);
    }
    snprintf(c->section, sizeof(c->section), "transport.%s", plugin_name());
    c->view.cfg = c->cfg;
    c->view.section = c->section;
    /* REFIT_TEST_NIC_HINT stands for topology's choice (one device). */
    const char *hint = getenv("REFIT_TEST_NIC_HINT");
    const char *hints[1] = {hint};
    struct refit_tp_init_args a = {sizeof(a), &c->view, 5000, name, -1, hint ? hints : NULL,
                                   hint ? 1 : 0};
    rc = c->ops->init(&a, &c->tp);
    ck_assert_msg(rc == 0, "init: %s", refit_error_message());
}

static void ctx_close(struct ctx *c)
{
    c->ops->fini(c->tp);
    refit_loader_destroy(c->l);
    refit_config_destroy(c->cfg);
}

static void xwrite(int fd, const void *b, size_t n)
{
    ck_assert_int_eq(write(fd, &n, sizeof(n)), sizeof(n));
    ck_assert_int_eq(write(fd, b, n), (ssize_t)n);
}

static void *xread(int fd, size_t *n)
{
    ck_assert_int_eq(read(fd, n, sizeof(*n)), sizeof(*n));
    char *b = malloc(*n);
    size_t got = 0;
    while (got < *n) {
        ssize_t k = read(fd, b + got, *n - got);
        ck_assert_int_gt(k, 0);
        got += (size_t)k;
    }
    return b;
}

#define LEN (4u << 20)

/* The first offset in [lo, hi) whose byte differs from want(i), or hi.
 * One assertion per range, not per byte: each passing ck_assert is a
 * message to check's parent in fork mode (millions made this test slow). */
static size_t first_bad(const unsigned char *b, size_t lo, size_t hi, unsigned char (*want)(size_t))
{
    for (size_t i = lo; i < hi; i++)
        if (b[i] != want(i))
            return i;
    return hi;
}

static unsigned char want_ab(size_t i)
{
    (void)i;
    return 0xAB;
}

static unsigned char want_pattern(size_t i)
{
    return (unsigned char)(i * 7 + 1);
}

/* Server: register a patterned buffer, publish address and key, connect
 * back, wait for the client's notification, check what it wrote. */
static void server(int out, int in)
{
    struct ctx c;
    ctx_open(&c, "server");
    unsigned char *buf = malloc(LEN);
    for (size_t i = 0; i < LEN; i++)
        buf[i] = (unsigned char)(i * 7 + 1);
    refit_tp_region_t *r;
    ck_assert_int_eq(c.ops->reg(c.tp, buf, LEN, REFIT_MEM_HOST, &r), 0);
    size_t n = 0;
    ck_assert_int_eq(c.ops->address(c.tp, NULL, &n), 0);
    void *a = malloc(n);
    ck_assert_int_eq(c.ops->address(c.tp, a, &n), 0);
    xwrite(out, a, n);
    ck_assert_int_eq(c.ops->pack_rkey(c.tp, r, NULL, &n), 0);
    void *k = malloc(n);
    ck_assert_int_eq(c.ops->pack_rkey(c.tp, r, k, &n), 0);
    xwrite(out, k, n);
    /* The client's address: notifications need a connection both ways
     * for some transports (ofi needs the peer in its address vector). */
    void *ca = xread(in, &n);
    refit_tp_peer_t *p;
    ck_assert_int_eq(c.ops->connect(c.tp, ca, n, "client", &p), 0);
    char msg[64];
    size_t ml = 0;
    int rc = c.ops->poll_notify(c.tp, msg, sizeof(msg), &ml, 30000);
    ck_assert_msg(rc == 0, "poll_notify: %s", refit_error_message());
    ck_assert_uint_eq(ml, 5);
    ck_assert_int_eq(memcmp(msg, "done!", 5), 0);
    /* The client wrote 0xAB into [1 MiB, 2 MiB) before notifying. */
    size_t bad = first_bad(buf, 1u << 20, 2u << 20, want_ab);
    ck_assert_msg(bad == 2u << 20, "byte %zu: 0x%02x, the client wrote 0xab", bad, buf[bad]);
    char ok = 1;
    ck_assert_int_eq(write(out, &ok, 1), 1);
    /* Stay reachable until the client is done with us. */
    ck_assert_int_eq(read(in, &ok, 1), 1);
    c.ops->disconnect(c.tp, p);
    ck_assert_int_eq(c.ops->dereg(c.tp, r), 0);
    ctx_close(&c);
    free(buf);
    free(a);
    free(k);
    free(ca);
    exit(0);
}

START_TEST(read_write_notify)
{
    int s2c[2], c2s[2];
    ck_assert_int_eq(pipe(s2c), 0);
    ck_assert_int_eq(pipe(c2s), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(s2c[0]);
        close(c2s[1]);
        server(s2c[1], c2s[0]);
    }
    close(s2c[1]);
    close(c2s[0]);
    struct ctx c;
    ctx_open(&c, "client");
    size_t an, kn, n;
    void *a = xread(s2c[0], &an);
    void *k = xread(s2c[0], &kn);
    ck_assert_int_eq(c.ops->address(c.tp, NULL, &n), 0);
    void *my = malloc(n);
    ck_assert_int_eq(c.ops->address(c.tp, my, &n), 0);
    xwrite(c2s[1], my, n);
    refit_tp_peer_t *p;
    int rc = c.ops->connect(c.tp, a, an, "server", &p);
    ck_assert_msg(rc == 0, "connect: %s", refit_error_message());
    refit_tp_rkey_t *rk;
    rc = c.ops->unpack_rkey(c.tp, p, k, kn, &rk);
    ck_assert_msg(rc == 0, "unpack: %s", refit_error_message());
    /* A garbled key is rejected, not used. */
    refit_tp_rkey_t *bad;
    ck_assert_int_eq(c.ops->unpack_rkey(c.tp, p, k, kn / 2, &bad), REFIT_EPROTO);

    unsigned char *buf = calloc(1, LEN);
    refit_tp_region_t *r;
    ck_assert_int_eq(c.ops->reg(c.tp, buf, LEN, REFIT_MEM_HOST, &r), 0);
    /* READ: one large descriptor and many small ones at odd offsets. */
    enum { NSMALL = 1000 };
    struct refit_tp_desc *d = calloc(NSMALL + 1, sizeof(*d));
    d[0] = (struct refit_tp_desc){REFIT_OP_READ, r, 0, rk, 0, 2u << 20};
    for (size_t i = 0; i < NSMALL; i++)
        d[i + 1] = (struct refit_tp_desc){REFIT_OP_READ, r, (3u << 20) + i * 97, rk,
                                          (2u << 20) + i * 97 + 3, 97};
    refit_tp_req_t *q;
    rc = c.ops->post(c.tp, p, d, NSMALL + 1, &q);
    ck_assert_msg(rc == 0, "post: %s", refit_error_message());
    rc = c.ops->wait(c.tp, q, 30000);
    ck_assert_msg(rc == 0, "wait: %s", refit_error_message());
    c.ops->req_free(c.tp, q);
    size_t at = first_bad(buf, 0, 2u << 20, want_pattern);
    ck_assert_msg(at == 2u << 20, "large READ: byte %zu differs", at);
    for (size_t i = 0; i < NSMALL; i++) {
        /* Small READ i landed at 3 MiB + 97 i from the server's 2 MiB + 97 i + 3. */
        for (size_t j = 0; j < 97; j++) {
            unsigned char w = want_pattern((2u << 20) + i * 97 + 3 + j);
            if (buf[(3u << 20) + i * 97 + j] != w)
                ck_abort_msg("small READ %zu: byte %zu is 0x%02x, want 0x%02x", i, j,
                             buf[(3u << 20) + i * 97 + j], w);
        }
    }
    /* Out of range: rejected before any I/O. */
    struct refit_tp_desc oob = {REFIT_OP_READ, r, 0, rk, LEN - 10, 11};
    ck_assert_int_eq(c.ops->post(c.tp, p, &oob, 1, &q), REFIT_ERANGE);
    /* WRITE then notify: the server sees the bytes when the note arrives. */
    memset(buf, 0xAB, 1u << 20);
    struct refit_tp_desc w = {REFIT_OP_WRITE, r, 0, rk, 1u << 20, 1u << 20};
    ck_assert_int_eq(c.ops->post(c.tp, p, &w, 1, &q), 0);
    rc = c.ops->wait(c.tp, q, 30000);
    ck_assert_msg(rc == 0, "wait write: %s", refit_error_message());
    c.ops->req_free(c.tp, q);
    rc = c.ops->notify(c.tp, p, "done!", 5);
    ck_assert_msg(rc == 0, "notify: %s", refit_error_message());
    char ok = 0;
    /* Progress while waiting for the server's verdict (the note may need
     * our progress to leave). */
    for (int i = 0; i < 100000; i++) {
        c.ops->progress(c.tp);
        struct timeval tv = {0, 1000};
        fd_set fs;
        FD_ZERO(&fs);
        FD_SET(s2c[0], &fs);
        if (select(s2c[0] + 1, &fs, NULL, NULL, &tv) > 0)
            break;
    }
    ck_assert_int_eq(read(s2c[0], &ok, 1), 1);
    ck_assert_int_eq(ok, 1);
    ck_assert_int_eq(write(c2s[1], &ok, 1), 1);
    c.ops->release_rkey(c.tp, rk);
    c.ops->disconnect(c.tp, p);
    ck_assert_int_eq(c.ops->dereg(c.tp, r), 0);
    ctx_close(&c);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    free(buf);
    free(d);
    free(a);
    free(k);
    free(my);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("smoke_tp");
    TCase *tc = tcase_create("basic");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, read_write_notify);
    suite_add_tcase(s, tc);
    int nf = t_run_suite(s, CK_NORMAL);
    return nf ? 1 : 0;
}
