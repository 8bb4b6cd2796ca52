/* tcp_raw.h — a hand-made client of the tcp transport's wire protocol
 * (plugins/transport/tcp/tcp_int.h describes it), for the tests that must
 * behave as no honest client does: handshakes dripped a byte at a time or
 * never finished, WRITEs trickled, frames mutated by the fuzzer.  The HMAC
 * comes from the plugin's own tcp_sha256.c, compiled into the test (it is
 * checked against FIPS 180-4 / RFC 4231 answers in the tcp tests).
 * Every read has a deadline, so a test never hangs on the server. */
#ifndef TP_TCP_RAW_H
#define TP_TCP_RAW_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tcp_int.h"

#define RAW_UNUSED __attribute__((unused))

/* What a rkey blob says (pack_rkey: magic, version, instance, id, gen,
 * len, secret). */
struct raw_key {
    uint64_t instance, id, gen, len;
    uint8_t secret[TCP_SECRET];
};

static RAW_UNUSED int64_t raw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static RAW_UNUSED void raw_key_parse(const uint8_t *b, struct raw_key *k)
{
    k->instance = tcp_get64(b + 8);
    k->id = tcp_get64(b + 16);
    k->gen = tcp_get64(b + 24);
    k->len = tcp_get64(b + 32);
    memcpy(k->secret, b + 40, TCP_SECRET);
}

/* Connect to the IPv4 address of an address blob; -1 on failure. */
static RAW_UNUSED int raw_dial(const uint8_t *addr)
{
    if (addr[5] != 4)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_port = htons((uint16_t)(addr[6] | addr[7] << 8));
    memcpy(&sa.sin_addr, addr + 16, 4);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
        close(fd);
        return -1;
    }
    return fd;
}

static RAW_UNUSED int raw_send(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Exactly n bytes within ms; 0, or -1 (closed, error or timeout). */
static RAW_UNUSED int raw_recv(int fd, void *p, size_t n, int ms)
{
    uint8_t *b = p;
    int64_t end = raw_now_ms() + ms;
    while (n) {
        int64_t left = end - raw_now_ms();
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
            return -1;
        ssize_t k = recv(fd, b, n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* 1 when the server closed (or reset) the connection: a poll that sees
 * end of file or an error within ms. */
static RAW_UNUSED int raw_closed(int fd, int ms)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, ms) <= 0)
        return 0;
    uint8_t b[512];
    ssize_t k = recv(fd, b, sizeof(b), MSG_DONTWAIT);
    return k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR);
}

/* The client HELLO (40 bytes; name_len bytes of name follow it on the
 * wire) for role and the server's instance. */
static RAW_UNUSED void raw_hello(uint8_t *h, uint32_t role, uint64_t me, uint64_t server, uint8_t *nonce,
                                 size_t name_len)
{
    memset(h, 0, 40);
    tcp_put32(h, TCP_MAGIC_HELLO);
    h[4] = TCP_WIRE_VERSION;
    h[5] = (uint8_t)name_len;
    h[6] = (uint8_t)role;
    tcp_put64(h + 8, me);
    tcp_put64(h + 16, server);
    if (getrandom(nonce, TCP_NONCE, 0) != TCP_NONCE)
        memset(nonce, 7, TCP_NONCE);
    memcpy(h + 24, nonce, TCP_NONCE);
}

/* The MAC either side sends (the label says which). */
static RAW_UNUSED void raw_mac(const char *token, const char *label, const uint8_t *n1, const uint8_t *n2,
                               uint64_t ci, uint64_t si, const char *name, uint8_t *out)
{
    uint8_t ids[16];
    tcp_put64(ids, ci);
    tcp_put64(ids + 8, si);
    struct tcp_iov m[5] = {{label, strlen(label)}, {n1, TCP_NONCE}, {n2, TCP_NONCE}, {ids, 16},
                           {name, strlen(name)}};
    tcp_hmac_sha256(token, strlen(token), m, 5, out);
}

/* A whole handshake with token, as `name`; 0 when the server accepted us. */
static RAW_UNUSED int raw_handshake(int fd, const uint8_t *addr, const char *token, uint32_t role,
                                    const char *name)
{
    uint8_t hello[40], nonce[TCP_NONCE], ch[32], mac[TCP_MAC], rep[4 + TCP_MAC];
    uint64_t me = 0x7261772d636c6e74ull, server = tcp_get64(addr + 8);
    raw_hello(hello, role, me, server, nonce, strlen(name));
    if (raw_send(fd, hello, sizeof(hello)) || raw_send(fd, name, strlen(name)) ||
        raw_recv(fd, ch, sizeof(ch), 10000))
        return -1;
    raw_mac(token, "refit-tcp client", ch + 16, nonce, me, server, name, mac);
    if (raw_send(fd, mac, sizeof(mac)) || raw_recv(fd, rep, sizeof(rep), 10000))
        return -1;
    return tcp_get32(rep) == 0 ? 0 : -1;
}

/* A 64-byte request header for key k. */
static RAW_UNUSED void raw_req(uint8_t *h, uint32_t op, const struct raw_key *k, uint64_t off, uint64_t len)
{
    memset(h, 0, TCP_REQ_SIZE);
    tcp_put32(h, op);
    if (k) {
        tcp_put64(h + 8, k->id);
        tcp_put64(h + 16, k->gen);
        memcpy(h + 24, k->secret, TCP_SECRET);
        tcp_put64(h + 56, k->len);
    }
    tcp_put64(h + 40, off);
    tcp_put64(h + 48, len);
}

#endif
