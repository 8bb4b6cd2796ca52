/* test_tcp_fuzz.c — structural fuzzing of the tcp transport's server: its
 * handshake parser, its request frames and its notification path, driven
 * in this process through raw sockets (tcp_raw.h) so that the sanitizers
 * watch the server's code.
 *
 * Each round is one connection: a handshake with mutated bytes (magic,
 * version, role, name length and bytes, MAC, truncation), or an honest
 * handshake followed by frames built from a genuine key with one field
 * bent (region id, generation, secret, length, offset and length at and
 * past the boundaries, wrapping sums), WRITE payloads cut short, NOTIFY
 * frames of every size up to past the limit, unknown ops.  Between rounds
 * an honest client of the same server reads a guard region that no fuzzed
 * frame may change, and the notification queue is polled with buffers of
 * every size and must stay within its bounds.  REFIT_FUZZ_ITERS (default
 * 1000 connections) and REFIT_FUZZ_SEED change the run. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcp_raw.h"
#include "refit/config.h"
#include "refit/loader.h"
#include "refit/status.h"
#include "refit/transport_core.h"
#include "../check_run.h"

#define TOKEN "fuzz-token"
#define RLEN 65536

static uint64_t rng;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t env_size(const char *name, size_t def)
{
    const char *v = getenv(name);
    return v && *v ? (size_t)strtoull(v, NULL, 0) : def;
}

struct server {
    refit_config_t *cfg;
    refit_loader_t *ld;
    refit_transport_t *t, *c; /* the fuzzed server, an honest client */
    uint8_t *a, *g, *buf;     /* writable region, guard region, client buffer */
    refit_tp_region_t *ra, *rg, *rb;
    struct raw_key ka, kg;
    uint8_t addr[64];
    refit_tp_peer_t *peer;
    refit_tp_rkey_t *gk;
};

static void open_tp(struct server *s, const char *name, refit_transport_t **out)
{
    struct refit_transport_open o = {.size = sizeof(o), .plugin = "tcp", .name = name, .cuda_device = -1};
    int rc = refit_transport_init(s->ld, s->cfg, &o, out);
    ck_assert_msg(rc == 0, "tcp init: %s", refit_error_message());
}

static void key_of(refit_transport_t *t, refit_tp_region_t *r, struct raw_key *k, void **blob, size_t *len)
{
    ck_assert_int_eq(refit_transport_pack(t, r, blob, len), 0);
    ck_assert_uint_eq(*len, TCP_RKEY_SIZE);
    raw_key_parse(*blob, k);
}

static void server_open(struct server *s)
{
    setenv("REFIT_TCP_TOKEN", TOKEN, 1);
    ck_assert_int_eq(refit_config_create(&s->cfg), 0);
    const char *sets[] = {"transport.timeout=2s", "transport.tcp.bind=127.0.0.1",
                          "transport.tcp.handshake_timeout=300ms", "transport.tcp.notify_queue=16",
                          "transport.tcp.notify_queue_bytes=65536", "transport.tcp.max_unauth=8"};
    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
        ck_assert_int_eq(refit_config_set(s->cfg, sets[i], "fuzz"), 0);
    ck_assert_int_eq(refit_loader_create(s->cfg, &s->ld), 0);
    open_tp(s, "server", &s->t);
    open_tp(s, "honest", &s->c);
    s->a = calloc(1, RLEN);
    s->g = malloc(RLEN);
    s->buf = malloc(RLEN);
    for (size_t i = 0; i < RLEN; i++)
        s->g[i] = (uint8_t)(i * 7 + 3);
    ck_assert_int_eq(refit_transport_reg(s->t, s->a, RLEN, REFIT_MEM_HOST, &s->ra), 0);
    ck_assert_int_eq(refit_transport_reg(s->t, s->g, RLEN, REFIT_MEM_HOST, &s->rg), 0);
    ck_assert_int_eq(refit_transport_reg(s->c, s->buf, RLEN, REFIT_MEM_HOST, &s->rb), 0);
    void *blob, *addr;
    size_t len, alen;
    key_of(s->t, s->ra, &s->ka, &blob, &len);
    free(blob);
    key_of(s->t, s->rg, &s->kg, &blob, &len);
    ck_assert_int_eq(refit_transport_address_get(s->t, &addr, &alen), 0);
    ck_assert_uint_le(alen, sizeof(s->addr));
    memcpy(s->addr, addr, alen);
    int rc = refit_transport_connect(s->c, addr, alen, "server", &s->peer);
    ck_assert_msg(rc == 0, "honest connect: %s", refit_error_message());
    ck_assert_int_eq(refit_transport_unpack(s->c, s->peer, blob, len, &s->gk), 0);
    free(blob);
    free(addr);
}

static void server_close(struct server *s)
{
    refit_transport_release(s->c, s->gk);
    refit_transport_disconnect(s->c, s->peer);
    refit_transport_dereg(s->c, s->rb);
    refit_transport_dereg(s->t, s->ra);
    refit_transport_dereg(s->t, s->rg);
    refit_transport_fini(s->c);
    refit_transport_fini(s->t);
    refit_loader_destroy(s->ld);
    refit_config_destroy(s->cfg);
    free(s->a);
    free(s->g);
    free(s->buf);
    unsetenv("REFIT_TCP_TOKEN");
}

/* ---- one round ---- */

static void mutate(uint8_t *b, size_t *n)
{
    int k = 1 + (int)(rnd() % 3);
    for (int i = 0; i < k && *n; i++) {
        size_t at = (size_t)(rnd() % *n);
        switch (rnd() % 4) {
        case 0: b[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
        case 1: b[at] = (uint8_t)rnd(); break;
        case 2: b[at] = (uint8_t)(rnd() % 2 ? 0 : 0xff); break;
        default: *n = at; break; /* cut short */
        }
    }
}

/* Drain what the server says until it closes or goes quiet. */
static void drain(int fd, int ms)
{
    uint8_t b[65536];
    int64_t end = raw_now_ms() + ms;
    for (;;) {
        int64_t left = end - raw_now_ms();
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
            return;
        ssize_t k = recv(fd, b, sizeof(b), 0);
        if (k <= 0)
            return;
    }
}

static void round_handshake(struct server *s, int fd)
{
    uint8_t msg[40 + 255 + TCP_MAC], nonce[TCP_NONCE];
    size_t nl = rnd() % 256, n = 40 + nl;
    raw_hello(msg, rnd() % 2 ? TCP_ROLE_DATA : TCP_ROLE_CTL, rnd(), tcp_get64(s->addr + 8), nonce, nl);
    for (size_t i = 0; i < nl; i++)
        msg[40 + i] = (uint8_t)('a' + rnd() % 26);
    mutate(msg, &n);
    if (raw_send(fd, msg, n))
        return;
    uint8_t ch[32];
    if (n < 40 + nl || raw_recv(fd, ch, sizeof(ch), 200))
        return;
    uint8_t mac[TCP_MAC];
    for (size_t i = 0; i < TCP_MAC; i++)
        mac[i] = (uint8_t)rnd();
    raw_send(fd, mac, sizeof(mac));
    drain(fd, 100);
}

/* A key of region A or G with at most one field bent. */
static void bent_key(struct server *s, struct raw_key *k, uint64_t *off, uint64_t *len)
{
    static const uint64_t edges[] = {0, 1, RLEN - 1, RLEN, RLEN + 1, UINT64_MAX, UINT64_MAX - 1,
                                     UINT64_MAX - RLEN + 1, 1ull << 63, 4096};
    *k = rnd() % 2 ? s->ka : s->kg;
    *off = edges[rnd() % 10];
    *len = edges[rnd() % 10];
    switch (rnd() % 8) {
    case 0: k->id = rnd() % 4 ? k->id ^ 1 : rnd(); break;
    case 1: k->gen += rnd() % 2 ? 1 : (uint64_t)-1; break;
    case 2: k->secret[rnd() % TCP_SECRET] ^= (uint8_t)(1u << (rnd() % 8)); break;
    case 3: k->len = edges[rnd() % 10]; break;
    default: break; /* genuine: only the range may be wrong */
    }
    /* The guard region may only ever be reached with a bent key. */
    if (!memcmp(k, &s->kg, sizeof(*k)))
        k->secret[0] ^= 0x80;
}

static void frame(struct server *s, int fd)
{
    uint8_t h[TCP_REQ_SIZE];
    struct raw_key k;
    uint64_t off, len;
    static uint8_t zeros[65536 + 8];
    switch (rnd() % 5) {
    case 0: /* READ */
        bent_key(s, &k, &off, &len);
        raw_req(h, TCP_W_READ, &k, off, len);
        raw_send(fd, h, sizeof(h));
        break;
    case 1: /* WRITE, its payload whole when small, else cut short */
        bent_key(s, &k, &off, &len);
        raw_req(h, TCP_W_WRITE, &k, off, len);
        if (!raw_send(fd, h, sizeof(h)))
            raw_send(fd, zeros, len < sizeof(zeros) ? (size_t)len : rnd() % 1024);
        break;
    case 2: { /* NOTIFY of any size, up to past the limit */
        uint64_t n = rnd() % 4 ? rnd() % 2048 : rnd() % (TCP_MAX_NOTIFY + 16);
        raw_req(h, TCP_W_NOTIFY, NULL, 0, n);
        if (!raw_send(fd, h, sizeof(h)))
            raw_send(fd, zeros, n <= TCP_MAX_NOTIFY ? (size_t)n : 16);
        break;
    }
    case 3: /* unknown op */
        raw_req(h, (uint32_t)rnd(), &s->ka, 0, rnd() % 64);
        raw_send(fd, h, sizeof(h));
        break;
    default: { /* a header with random bytes */
        for (size_t i = 0; i < sizeof(h); i++)
            h[i] = (uint8_t)rnd();
        size_t n = rnd() % sizeof(h);
        raw_send(fd, h, n);
        break;
    }
    }
}

static void round_frames(struct server *s, int fd)
{
    uint32_t role = rnd() % 2 ? TCP_ROLE_DATA : TCP_ROLE_CTL;
    char name[32];
    snprintf(name, sizeof(name), "fuzz-%u", (unsigned)(rnd() % 1000));
    if (raw_handshake(fd, s->addr, TOKEN, role, name))
        return;
    int n = 1 + (int)(rnd() % 12);
    for (int i = 0; i < n; i++) {
        frame(s, fd);
        if (rnd() % 4 == 0)
            drain(fd, 5);
    }
    shutdown(fd, SHUT_WR);
    drain(fd, 300);
}

/* ---- what must hold between rounds ---- */

static void check_server(struct server *s)
{
    struct refit_tp_desc d = {REFIT_OP_READ, s->rb, 0, s->gk, 0, RLEN};
    memset(s->buf, 0, RLEN);
    int rc = refit_transport_xfer(s->c, s->peer, &d, 1, 30000);
    ck_assert_msg(rc == 0, "honest READ of the guard region: %s", refit_error_message());
    ck_assert_msg(!memcmp(s->buf, s->g, RLEN), "the guard region changed");
    ck_assert_msg(!memcmp(s->g, s->buf, RLEN), "the guard region changed");
    struct refit_tp_notify_stats st;
    ck_assert_int_eq(refit_transport_notify_stats(s->t, &st), 0);
    ck_assert_uint_le(st.queued, 16);
    ck_assert_uint_le(st.queued_bytes, 65536);
    /* Poll with buffers of every size: too-small ones drop a note, never
     * block the queue. */
    static uint8_t m[TCP_MAX_NOTIFY];
    char from[REFIT_TP_NAME_MAX + 1];
    size_t ml;
    for (int i = 0; i < 20; i++) {
        size_t cap = rnd() % 2 ? sizeof(m) : rnd() % 512;
        rc = refit_transport_poll_notify_from(s->t, m, cap, &ml, from, sizeof(from), 0);
        if (rc == REFIT_ETIMEDOUT)
            break;
        ck_assert_msg(rc == 0 || rc == REFIT_ETOOBIG, "poll: %d %s", rc, refit_error_message());
        if (rc == 0) {
            ck_assert_uint_le(ml, cap);
            ck_assert_msg(!strncmp(from, "fuzz-", 5), "a note from '%s'", from);
        }
    }
}

START_TEST(fuzz_tcp_server)
{
    size_t iters = env_size("REFIT_FUZZ_ITERS", 1000);
    rng = env_size("REFIT_FUZZ_SEED", 0x2545f4914f6cdd1dull) | 1;
    fprintf(stderr, "fuzz_tcp_server: %zu connections, seed %llu\n", iters, (unsigned long long)rng);
    struct server s;
    memset(&s, 0, sizeof(s));
    server_open(&s);
    for (size_t it = 0; it < iters; it++) {
        int fd = raw_dial(s.addr);
        ck_assert_int_ge(fd, 0);
        if (rnd() % 3 == 0)
            round_handshake(&s, fd);
        else
            round_frames(&s, fd);
        close(fd);
        if (it % 10 == 9)
            check_server(&s);
    }
    check_server(&s);
    struct refit_tp_notify_stats st;
    ck_assert_int_eq(refit_transport_notify_stats(s.t, &st), 0);
    fprintf(stderr, "fuzz_tcp_server: notes received %llu, delivered %llu, dropped full %llu, oversize %llu\n",
            (unsigned long long)st.received, (unsigned long long)st.delivered,
            (unsigned long long)st.dropped_full, (unsigned long long)st.dropped_oversize);
    ck_assert_uint_gt(st.received, 0);
    server_close(&s);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("tcp-fuzz");
    TCase *tc = tcase_create("fuzz");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, fuzz_tcp_server);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? EXIT_FAILURE : EXIT_SUCCESS;
}
