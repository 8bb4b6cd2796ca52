/* test_tcp.c — what only the tcp transport promises, beyond the
 * conformance suite (test_transport.c): authentication by token and by the
 * per-user local secret, forged keys, addresses and ports.  The other side
 * is tp_peer, as in the conformance suite. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <poll.h>
#include <unistd.h>

#include "tcp_raw.h"
#include "tpeer.h"

static struct side S;
static struct peer P;

static void setup(void)
{
    peer_start(&P, NULL, NULL);
    side_open(&S, NULL);
    side_connect(&S, &P);
}

static void teardown(void)
{
    side_close(&S);
    if (P.pid > 0)
        peer_stop(&P);
}

/* A name below $TMPDIR (else /tmp) for mkstemp/mkdtemp. */
static void tmp_path(char *buf, size_t cap, const char *tmpl)
{
    const char *t = getenv("TMPDIR");
    snprintf(buf, cap, "%s/%s", t && *t ? t : "/tmp", tmpl);
}

/* ---- tcp only: authentication, forged keys, addresses ---- */

START_TEST(t_tcp_forged_key)
{
    int id;
    const char *l = peer_cmd(&P, "reg 65536 5");
    int n = 0;
    ck_assert(sscanf(l, "rkey %d %n", &id, &n) == 1);
    uint8_t k[256];
    size_t kl = unhex(l + n, k, sizeof(k));
    uint8_t *buf = map(65536);
    refit_tp_region_t *lr;
    ck_assert_int_eq(refit_transport_reg(S.t, buf, 65536, tm_memtype(), &lr), 0);
    /* Flip a bit of the secret, the generation, the id; and grow the length. */
    static const int at[] = {40, 55, 24, 16, 33};
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        uint8_t f[256];
        memcpy(f, k, kl);
        f[at[i]] ^= 0x40;
        refit_tp_rkey_t *rk;
        int rc = refit_transport_unpack(S.t, S.peer, f, kl, &rk);
        if (rc)
            continue;
        rc = xfer1(&S, REFIT_OP_READ, lr, 0, rk, 0, 4096);
        ck_assert_msg(rc < 0, "READ through a forged key (byte %d) succeeded", at[i]);
        rc = xfer1(&S, REFIT_OP_WRITE, lr, 0, rk, 0, 4096);
        ck_assert_msg(rc < 0, "WRITE through a forged key (byte %d) succeeded", at[i]);
        ck_assert_str_eq(peer_cmd(&P, "check %d 0 65536 5 0", id), "ok");
        refit_transport_release(S.t, rk);
    }
    refit_transport_dereg(S.t, lr);
    munmap_buf(buf, 65536);
}
END_TEST

START_TEST(t_tcp_auth)
{
    /* Same token: works, and the listener is no longer loopback-only. */
    struct peer p2 = {0};
    peer_start(&p2, "s3cret-token", NULL);
    setenv("REFIT_TCP_TOKEN", "s3cret-token", 1);
    struct side s2 = {0};
    side_open(&s2, NULL);
    side_connect(&s2, &p2);
    side_close(&s2);
    unsetenv("REFIT_TCP_TOKEN");
    /* The same token from token_file (trailing newline ignored). */
    char path[600];
    tmp_path(path, sizeof(path), "refit-token-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "s3cret-token\n", 13), 13);
    close(fd);
    char set[700];
    snprintf(set, sizeof(set), "transport.tcp.token_file=%s", path);
    side_open(&s2, set);
    side_connect(&s2, &p2);
    side_close(&s2);
    unlink(path);
    /* Different token: the handshake fails, in both directions of trust. */
    setenv("REFIT_TCP_TOKEN", "another-token", 1);
    side_open(&s2, NULL);
    refit_tp_peer_t *pp = NULL;
    int rc = refit_transport_connect(s2.t, p2.addr, p2.alen, "p2", &pp);
    ck_assert_int_eq(rc, REFIT_EPERM);
    side_close(&s2);
    unsetenv("REFIT_TCP_TOKEN");
    side_open(&s2, NULL);
    rc = refit_transport_connect(s2.t, p2.addr, p2.alen, "p2", &pp);
    ck_assert_int_eq(rc, REFIT_EPERM);
    side_close(&s2);
    ck_assert_str_eq(peer_cmd(&p2, "ping"), "ok");
    peer_stop(&p2);
    /* Without a token the address is a loopback one. */
    ck_assert_uint_eq(P.addr[5], 4);
    ck_assert_uint_eq(P.addr[16], 127);
}
END_TEST

START_TEST(t_tcp_ipv6_and_ports)
{
    struct peer p6 = {0};
    peer_start(&p6, NULL, "transport.tcp.bind=::1");
    ck_assert_uint_eq(p6.addr[5], 6);
    struct side s6 = {0};
    side_open(&s6, "transport.tcp.streams=3");
    side_connect(&s6, &p6);
    int id;
    refit_tp_rkey_t *rk = remote_reg(&s6, &p6, 1 << 20, 7, &id);
    uint8_t *buf = map(1 << 20);
    refit_tp_region_t *lr;
    ck_assert_int_eq(refit_transport_reg(s6.t, buf, 1 << 20, tm_memtype(), &lr), 0);
    ck_assert_int_eq(xfer1(&s6, REFIT_OP_READ, lr, 0, rk, 0, 1 << 20), 0);
    ck_assert_int_lt(check(buf, 1 << 20, 7, 0), 0);
    refit_transport_release(s6.t, rk);
    refit_transport_dereg(s6.t, lr);
    side_close(&s6);
    peer_stop(&p6);
    /* A port range: the peer listens inside it, and a second peer skips
     * the port the first one took. */
    int base = 20000 + (int)(getpid() % 20000);
    char set[64];
    snprintf(set, sizeof(set), "transport.tcp.port_min=%d", base);
    setenv("REFIT_TRANSPORT_TCP_PORT_MAX", "65535", 1);
    struct peer pr = {0}, pr2 = {0};
    peer_start(&pr, NULL, set);
    peer_start(&pr2, NULL, set);
    unsetenv("REFIT_TRANSPORT_TCP_PORT_MAX");
    int port1 = pr.addr[6] | pr.addr[7] << 8, port2 = pr2.addr[6] | pr2.addr[7] << 8;
    ck_assert_int_ge(port1, base);
    ck_assert_int_gt(port2, port1);
    peer_stop(&pr);
    peer_stop(&pr2);
    munmap_buf(buf, 1 << 20);
}
END_TEST

START_TEST(t_tcp_local_secret)
{
    /* Without a token the key is a secret only this user can read: two
     * secret directories stand for two users of one host. */
    char a[600], b[600], set_a[700], set_b[700], file[700];
    tmp_path(a, sizeof(a), "refit-secret-a-XXXXXX");
    tmp_path(b, sizeof(b), "refit-secret-b-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(a));
    ck_assert_ptr_nonnull(mkdtemp(b));
    snprintf(set_a, sizeof(set_a), "transport.tcp.secret_dir=%s", a);
    snprintf(set_b, sizeof(set_b), "transport.tcp.secret_dir=%s", b);
    struct peer pa = {0};
    peer_start(&pa, NULL, set_a);
    /* Another user's process (another secret) is refused... */
    struct side s2 = {0};
    side_open(&s2, set_b);
    refit_tp_peer_t *pp = NULL;
    ck_assert_int_eq(refit_transport_connect(s2.t, pa.addr, pa.alen, "pa", &pp), REFIT_EPERM);
    ck_assert_msg(strstr(refit_error_message(), "local secret"), "%s", refit_error_message());
    side_close(&s2);
    /* ... the same user's is not, and reads what the peer registered. */
    side_open(&s2, set_a);
    side_connect(&s2, &pa);
    int id;
    refit_tp_rkey_t *rk = remote_reg(&s2, &pa, 4096, 3, &id);
    uint8_t *buf = map(4096);
    refit_tp_region_t *lr;
    ck_assert_int_eq(refit_transport_reg(s2.t, buf, 4096, REFIT_MEM_HOST, &lr), 0);
    ck_assert_int_eq(xfer1(&s2, REFIT_OP_READ, lr, 0, rk, 0, 4096), 0);
    ck_assert_int_lt(check(buf, 4096, 3, 0), 0);
    refit_transport_release(s2.t, rk);
    refit_transport_dereg(s2.t, lr);
    munmap_buf(buf, 4096);
    side_close(&s2);
    peer_stop(&pa);
    /* The secret is a private file of this user. */
    struct stat sb;
    snprintf(file, sizeof(file), "%s/tcp.secret", a);
    ck_assert_int_eq(lstat(file, &sb), 0);
    ck_assert(S_ISREG(sb.st_mode));
    ck_assert_uint_eq(sb.st_mode & 077, 0);
    ck_assert_uint_eq(sb.st_uid, geteuid());
    /* A secret directory others may write, or a secret others may read,
     * is refused at init with the reason. */
    ck_assert_int_eq(chmod(a, 0777), 0);
    refit_config_t *cfg;
    refit_loader_t *ld;
    refit_transport_t *t = NULL;
    ck_assert_int_eq(refit_config_create(&cfg), 0);
    ck_assert_int_eq(refit_config_set(cfg, set_a, "test"), 0);
    ck_assert_int_eq(refit_loader_create(cfg, &ld), 0);
    struct refit_transport_open o = {.size = sizeof(o), .plugin = "tcp", .name = "t", .cuda_device = -1};
    ck_assert_int_eq(refit_transport_init(ld, cfg, &o, &t), REFIT_EPERM);
    ck_assert_msg(strstr(refit_error_message(), "writable by group or others"), "%s", refit_error_message());
    ck_assert_int_eq(chmod(a, 0700), 0);
    ck_assert_int_eq(chmod(file, 0644), 0);
    ck_assert_int_eq(refit_transport_init(ld, cfg, &o, &t), REFIT_EPERM);
    ck_assert_msg(strstr(refit_error_message(), "readable or writable by group or others"), "%s",
                  refit_error_message());
    refit_loader_destroy(ld);
    refit_config_destroy(cfg);
    unlink(file);
    rmdir(a);
    snprintf(file, sizeof(file), "%s/tcp.secret", b);
    unlink(file);
    rmdir(b);
}
END_TEST

/* ---- what a client that is no honest peer can do ---- */

#define RAW_TOKEN "raw-token-for-tests"

/* Sockets the process pid has open (its listener, its connections). */
static int count_sockets(pid_t pid)
{
    char d[64], l[512], t[64];
    snprintf(d, sizeof(d), "/proc/%d/fd", (int)pid);
    DIR *dir = opendir(d);
    int n = 0;
    struct dirent *e;
    while (dir && (e = readdir(dir))) {
        snprintf(l, sizeof(l), "%s/%s", d, e->d_name);
        ssize_t k = readlink(l, t, sizeof(t) - 1);
        if (k > 0) {
            t[k] = 0;
            n += !strncmp(t, "socket:", 7);
        }
    }
    if (dir)
        closedir(dir);
    return n;
}

/* Wait (WAIT_MS at most) until pid has at most `want` sockets. */
static int sockets_drop_to(pid_t pid, int want)
{
    int n = count_sockets(pid);
    for (int i = 0; i < WAIT_MS / 50 && n > want; i++) {
        usleep(50000);
        n = count_sockets(pid);
    }
    return n;
}

START_TEST(t_tcp_server_closes_ended_connections)
{
    /* A peer that connected and left: the server closes its sockets when
     * the connections end, not at some later accept. */
    int base = count_sockets(P.pid);
    for (int round = 0; round < 3; round++) {
        struct side s2 = {0};
        side_open(&s2, "transport.tcp.streams=4");
        side_connect(&s2, &P);
        ck_assert_int_gt(count_sockets(P.pid), base);
        side_close(&s2);
        int n = sockets_drop_to(P.pid, base);
        ck_assert_msg(n == base, "round %d: the peer keeps %d sockets of a peer that left (%d before)",
                      round, n, base);
    }
}
END_TEST

START_TEST(t_tcp_unauthenticated_flood)
{
    /* 64 sockets that connect and send one byte of a handshake, against a
     * server admitting 4 authenticated connections and 8 handshakes at
     * once: an honest peer still connects and reads. */
    struct peer pf = {0};
    const char *sets[] = {"transport.tcp.max_conns=4", "transport.tcp.max_unauth=8", NULL};
    peer_start_sets(&pf, RAW_TOKEN, sets);
    int fds[64];
    for (int i = 0; i < 64; i++) {
        fds[i] = raw_dial(pf.addr);
        ck_assert_int_ge(fds[i], 0);
        ck_assert_int_eq(raw_send(fds[i], "R", 1), 0);
    }
    setenv("REFIT_TCP_TOKEN", RAW_TOKEN, 1);
    struct side s2 = {0};
    side_open(&s2, NULL);
    unsetenv("REFIT_TCP_TOKEN");
    int rc = refit_transport_connect(s2.t, pf.addr, pf.alen, "pf", &s2.peer);
    ck_assert_msg(rc == 0, "connect behind 64 idle handshakes: %s", refit_error_message());
    int id;
    refit_tp_rkey_t *rk = remote_reg(&s2, &pf, 65536, 9, &id);
    uint8_t *buf = map(65536);
    refit_tp_region_t *lr;
    ck_assert_int_eq(refit_transport_reg(s2.t, buf, 65536, REFIT_MEM_HOST, &lr), 0);
    ck_assert_int_eq(xfer1(&s2, REFIT_OP_READ, lr, 0, rk, 0, 65536), 0);
    ck_assert_int_lt(check(buf, 65536, 9, 0), 0);
    refit_transport_release(s2.t, rk);
    refit_transport_dereg(s2.t, lr);
    munmap_buf(buf, 65536);
    side_close(&s2);
    for (int i = 0; i < 64; i++)
        close(fds[i]);
    peer_stop(&pf);
}
END_TEST

START_TEST(t_tcp_handshake_deadline)
{
    /* A handshake dripped a byte every 150 ms never arrives whole before
     * handshake_timeout (1 s): the server drops it, although no single read
     * waited long. */
    struct peer pd = {0};
    peer_start(&pd, RAW_TOKEN, "transport.tcp.handshake_timeout=1s");
    int fd = raw_dial(pd.addr);
    ck_assert_int_ge(fd, 0);
    uint8_t hello[40], nonce[TCP_NONCE];
    raw_hello(hello, TCP_ROLE_DATA, 1, tcp_get64(pd.addr + 8), nonce, 0);
    int sent = 0, closed = 0;
    while (sent < (int)sizeof(hello) && !closed) {
        if (raw_send(fd, hello + sent, 1))
            closed = 1;
        else
            sent++;
        closed = closed || raw_closed(fd, 150);
    }
    ck_assert_msg(closed, "the server took a whole handshake dripped over %d ms", 150 * (int)sizeof(hello));
    close(fd);
    /* An honest peer is not affected. */
    setenv("REFIT_TCP_TOKEN", RAW_TOKEN, 1);
    struct side s2 = {0};
    side_open(&s2, NULL);
    unsetenv("REFIT_TCP_TOKEN");
    side_connect(&s2, &pd);
    side_close(&s2);
    peer_stop(&pd);
}
END_TEST

START_TEST(t_tcp_dereg_trickled_write)
{
    /* A WRITE trickled a byte every 100 ms into a region: each read of the
     * server sees progress within transport.timeout, so only a deadline on
     * dereg itself ends the wait.  dereg answers while the trickle goes on,
     * and the trickling connection is cut. */
    struct peer pw = {0};
    peer_start(&pw, RAW_TOKEN, NULL);
    const char *l = peer_cmd(&pw, "reg 1048576 5");
    int id, n = 0;
    ck_assert_msg(sscanf(l, "rkey %d %n", &id, &n) == 1, "%s", l);
    uint8_t kb[TCP_RKEY_SIZE];
    ck_assert_uint_eq(unhex(l + n, kb, sizeof(kb)), TCP_RKEY_SIZE);
    struct raw_key k;
    raw_key_parse(kb, &k);
    int fd = raw_dial(pw.addr);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(raw_handshake(fd, pw.addr, RAW_TOKEN, TCP_ROLE_DATA, "trickler"), 0);
    uint8_t h[TCP_REQ_SIZE];
    raw_req(h, TCP_W_WRITE, &k, 0, 65536);
    ck_assert_int_eq(raw_send(fd, h, sizeof(h)), 0);
    ck_assert_int_eq(raw_send(fd, "x", 1), 0);
    usleep(200000); /* the server is inside the WRITE */
    fprintf(pw.to, "dereg %d\n", id);
    fflush(pw.to);
    int answered = 0, cut = 0;
    struct pollfd pf = {.fd = fileno(pw.from), .events = POLLIN};
    for (int i = 0; i < 300 && !answered; i++) { /* 30 s of trickle at most */
        if (!cut && (raw_send(fd, "x", 1) || raw_closed(fd, 0)))
            cut = 1;
        answered = poll(&pf, 1, 100) > 0;
    }
    ck_assert_msg(answered, "dereg did not return while a WRITE trickled into the region");
    ck_assert_str_eq(peer_read(&pw), "ok");
    for (int i = 0; i < 50 && !cut; i++)
        cut = raw_send(fd, "x", 1) || raw_closed(fd, 100);
    ck_assert_msg(cut, "the trickling connection was left open");
    close(fd);
    ck_assert_str_eq(peer_cmd(&pw, "ping"), "ok");
    peer_stop(&pw);
}
END_TEST

START_TEST(t_tcp_notify_sender_bound)
{
    /* A notification names the sender its connection authenticated as: a
     * peer holding the token that says "RFPUSH 1 peer ok" is still
     * "mallory", not "peer". */
    setenv("REFIT_TCP_TOKEN", RAW_TOKEN, 1);
    struct side s2 = {0};
    side_open(&s2, NULL);
    unsetenv("REFIT_TCP_TOKEN");
    void *a;
    size_t al;
    ck_assert_int_eq(refit_transport_address_get(s2.t, &a, &al), 0);
    int fd = raw_dial(a);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(raw_handshake(fd, a, RAW_TOKEN, TCP_ROLE_CTL, "mallory"), 0);
    const char *note = "RFPUSH 1 peer ok";
    uint8_t h[TCP_REQ_SIZE], rep[TCP_REP_SIZE];
    raw_req(h, TCP_W_NOTIFY, NULL, 0, strlen(note));
    ck_assert_int_eq(raw_send(fd, h, sizeof(h)), 0);
    ck_assert_int_eq(raw_send(fd, note, strlen(note)), 0);
    ck_assert_int_eq(raw_recv(fd, rep, sizeof(rep), WAIT_MS), 0);
    ck_assert_uint_eq(tcp_get32(rep), TCP_S_OK);
    char m[64], from[REFIT_TP_NAME_MAX + 1];
    size_t ml = 0;
    ck_assert_int_eq(refit_transport_poll_notify_from(s2.t, m, sizeof(m), &ml, from, sizeof(from), WAIT_MS), 0);
    ck_assert_uint_eq(ml, strlen(note));
    ck_assert_str_eq(from, "mallory");
    close(fd);
    /* A name with a NUL in it is refused at the handshake. */
    fd = raw_dial(a);
    ck_assert_int_ge(fd, 0);
    uint8_t hello[40], nonce[TCP_NONCE];
    raw_hello(hello, TCP_ROLE_CTL, 1, tcp_get64((uint8_t *)a + 8), nonce, 4);
    ck_assert_int_eq(raw_send(fd, hello, sizeof(hello)), 0);
    ck_assert_int_eq(raw_send(fd, "pe\0r", 4), 0);
    ck_assert_msg(raw_closed(fd, WAIT_MS), "a name with a NUL was taken");
    close(fd);
    free(a);
    side_close(&s2);
}
END_TEST

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    peer_exe = getenv("REFIT_TP_PEER");
    if (!peer_exe) {
        fprintf(stderr, "REFIT_TP_PEER (the tp_peer helper) is not set\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    unsetenv("REFIT_TCP_TOKEN");
    Suite *s = suite_create("tcp");
    TCase *tc = tcase_create("tcp");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, t_tcp_forged_key);
    tcase_add_test(tc, t_tcp_auth);
    tcase_add_test(tc, t_tcp_ipv6_and_ports);
    tcase_add_test(tc, t_tcp_local_secret);
    tcase_add_test(tc, t_tcp_server_closes_ended_connections);
    tcase_add_test(tc, t_tcp_unauthenticated_flood);
    tcase_add_test(tc, t_tcp_handshake_deadline);
    tcase_add_test(tc, t_tcp_dereg_trickled_write);
    tcase_add_test(tc, t_tcp_notify_sender_bound);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
