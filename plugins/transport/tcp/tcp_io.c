/* tcp_io.c — sockets for the tcp transport: exact reads and writes with
 * timeouts, the buffered reader, dialing with a deadline, the mutual HMAC
 * handshake, and translating errno and wire status into REFIT_E*. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tcp_int.h"

int tcp_io_errfmt(char *buf, size_t cap, refit_tp_t *tp, const char *peer, const char *what, int err)
{
    int e = err < 0 ? -err : err;
    if (e == EAGAIN || e == EWOULDBLOCK || e == ETIMEDOUT) {
        snprintf(buf, cap, "tcp: %s: peer '%s': %s: no progress for %lld ms (transport.timeout)",
                 tp->name, peer, what, (long long)tp->timeout_ms);
        return REFIT_ETIMEDOUT;
    }
    if (e == ENOTCONN) {
        snprintf(buf, cap, "tcp: %s: peer '%s': %s: peer closed the connection", tp->name, peer, what);
        return REFIT_ECONN;
    }
    snprintf(buf, cap, "tcp: %s: peer '%s': %s: %s (errno %d)", tp->name, peer, what, strerror(e), e);
    if (e == ECONNRESET || e == EPIPE || e == ECONNREFUSED || e == EHOSTUNREACH ||
        e == ENETUNREACH || e == ECONNABORTED || e == ESHUTDOWN)
        return REFIT_ECONN;
    return e == ENOMEM ? REFIT_ENOMEM : REFIT_EIO;
}

int tcp_io_err(refit_tp_t *tp, const char *peer, const char *what, int err)
{
    char m[512];
    int rc = tcp_io_errfmt(m, sizeof(m), tp, peer, what, err);
    return tcp_h->error_set(rc, "%s", m);
}

int tcp_send_all(int fd, const void *p, size_t n)
{
    struct iovec iov = {(void *)p, n};
    return tcp_send_iov(fd, &iov, 1);
}

/* sendmsg until every byte left; advances iov in place.  SO_SNDTIMEO turns
 * a peer that stopped reading into EAGAIN. */
int tcp_send_iov(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr m = {0};
        m.msg_iov = iov;
        m.msg_iovlen = (size_t)(n > IOV_MAX ? IOV_MAX : n);
        ssize_t k = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        size_t left = (size_t)k;
        while (n > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + left;
            iov->iov_len -= left;
        }
        while (n > 0 && iov->iov_len == 0) {
            iov++;
            n--;
        }
    }
    return 0;
}

int tcp_rb_init(struct tcp_rbuf *rb)
{
    rb->b = malloc(TCP_RBUF);
    rb->cap = TCP_RBUF;
    rb->beg = rb->end = 0;
    return rb->b ? 0 : -ENOMEM;
}

void tcp_rb_free(struct tcp_rbuf *rb)
{
    free(rb->b);
    rb->b = NULL;
}

size_t tcp_rb_avail(const struct tcp_rbuf *rb) { return rb->end - rb->beg; }

/* deadline_ms 0: none (the socket's SO_RCVTIMEO bounds each recv);
 * else no recv starts after it, whatever the peer trickles. */
static int recv_some(int fd, void *dst, size_t n, size_t *got, int64_t deadline_ms)
{
    for (;;) {
        if (deadline_ms) {
            int64_t left = deadline_ms - tcp_now_ms();
            if (left <= 0)
                return -ETIMEDOUT;
            struct pollfd p = {.fd = fd, .events = POLLIN};
            int k = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
            if (k == 0)
                return -ETIMEDOUT;
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0)
                return -errno;
        }
        ssize_t k = recv(fd, dst, n, 0);
        if (k > 0) {
            *got = (size_t)k;
            return 0;
        }
        if (k == 0)
            return -ENOTCONN;
        if (errno != EINTR)
            return -errno;
    }
}

int tcp_rb_read(int fd, struct tcp_rbuf *rb, void *dst, size_t n)
{
    return tcp_rb_read_by(fd, rb, dst, n, 0);
}

int tcp_rb_read_by(int fd, struct tcp_rbuf *rb, void *dst, size_t n, int64_t deadline_ms)
{
    uint8_t *d = dst;
    size_t have = rb->end - rb->beg, take = have < n ? have : n;
    if (take) {
        if (d)
            memcpy(d, rb->b + rb->beg, take);
        rb->beg += take;
        n -= take;
        if (d)
            d += take;
    }
    if (rb->beg == rb->end)
        rb->beg = rb->end = 0;
    /* Payloads go straight into registered memory; only what is smaller
     * than half the buffer (headers, small pieces) is read through it. */
    while (d && n >= rb->cap / 2) {
        size_t got = 0;
        int rc = recv_some(fd, d, n, &got, deadline_ms);
        if (rc)
            return rc;
        d += got;
        n -= got;
    }
    while (n) {
        if (rb->beg == rb->end)
            rb->beg = rb->end = 0;
        else if (rb->cap - rb->end < n) {
            memmove(rb->b, rb->b + rb->beg, rb->end - rb->beg);
            rb->end -= rb->beg;
            rb->beg = 0;
        }
        size_t got = 0;
        int rc = recv_some(fd, rb->b + rb->end, rb->cap - rb->end, &got, deadline_ms);
        if (rc)
            return rc;
        rb->end += got;
        size_t k = rb->end - rb->beg < n ? rb->end - rb->beg : n;
        if (d) {
            memcpy(d, rb->b + rb->beg, k);
            d += k;
        }
        rb->beg += k;
        n -= k;
    }
    return 0;
}

int tcp_set_timeouts(int fd, int64_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)))
        return -errno;
    return 0;
}

void tcp_sock_tune(refit_tp_t *tp, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    /* Fixed buffers switch off the kernel's autotuning, so 0 leaves it on. */
    if (tp->sndbuf) {
        int v = tp->sndbuf > INT_MAX ? INT_MAX : (int)tp->sndbuf;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
    }
    if (tp->rcvbuf) {
        int v = tp->rcvbuf > INT_MAX ? INT_MAX : (int)tp->rcvbuf;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
    }
}

void tcp_sa_str(const struct sockaddr_storage *sa, char *buf, size_t cap)
{
    char h[INET6_ADDRSTRLEN] = "?";
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)sa;
        inet_ntop(AF_INET, &s->sin_addr, h, sizeof(h));
        snprintf(buf, cap, "%s:%u", h, ntohs(s->sin_port));
    } else {
        const struct sockaddr_in6 *s = (const void *)sa;
        inet_ntop(AF_INET6, &s->sin6_addr, h, sizeof(h));
        snprintf(buf, cap, "[%s]:%u", h, ntohs(s->sin6_port));
    }
}

int tcp_dial(refit_tp_t *tp, const struct sockaddr_storage *sa, const char *peer, int *out)
{
    char where[80];
    tcp_sa_str(sa, where, sizeof(where));
    int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return tcp_io_err(tp, peer, "socket", errno);
    tcp_sock_tune(tp, fd);
    socklen_t sl = sa->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    int rc = connect(fd, (const struct sockaddr *)sa, sl);
    if (rc && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int k;
        do
            k = poll(&p, 1, tp->timeout_ms > INT_MAX ? INT_MAX : (int)tp->timeout_ms);
        while (k < 0 && errno == EINTR);
        if (k == 0) {
            close(fd);
            return tcp_h->error_set(REFIT_ETIMEDOUT, "tcp: %s: connect to peer '%s' at %s: no answer "
                                    "within %lld ms", tp->name, peer, where, (long long)tp->timeout_ms);
        }
        int e = 0;
        socklen_t el = sizeof(e);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
        rc = e ? -1 : 0;
        errno = e;
    }
    if (rc) {
        int e = errno;
        close(fd);
        tcp_io_err(tp, peer, "connect", e);
        return tcp_h->error_push(REFIT_ECONN, "address %s", where);
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    tcp_set_timeouts(fd, tp->timeout_ms);
    *out = fd;
    return 0;
}

int tcp_fill_random(void *p, size_t n)
{
    uint8_t *b = p;
    while (n) {
        ssize_t k = getrandom(b, n, 0);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Both MACs bind the two nonces, the two instance ids and the client's
 * name, so a reply recorded from another session or another process does
 * not verify, and a name cannot be swapped under a valid MAC. */
static void hs_mac(refit_tp_t *tp, const char *label, const uint8_t *n1, const uint8_t *n2,
                   uint64_t ci, uint64_t si, const char *name, uint8_t out[TCP_MAC])
{
    uint8_t ids[16];
    tcp_put64(ids, ci);
    tcp_put64(ids + 8, si);
    struct tcp_iov m[5] = {{label, strlen(label)}, {n1, TCP_NONCE}, {n2, TCP_NONCE}, {ids, 16},
                           {name, strlen(name)}};
    tcp_hmac_sha256(tp->token, tp->token_len, m, 5, out);
}

int tcp_handshake_client(refit_tp_t *tp, int fd, struct tcp_rbuf *rb, uint32_t role,
                         uint64_t expect, const char *peer)
{
    /* transport.timeout for the whole handshake, not for each read. */
    int64_t dl = tcp_now_ms() + tp->timeout_ms;
    uint8_t hello[40], ch[32], mac[TCP_MAC], rep[4 + TCP_MAC], want[TCP_MAC];
    uint8_t *nc = hello + 24;
    size_t nl = strlen(tp->self);
    tcp_put32(hello, TCP_MAGIC_HELLO);
    hello[4] = TCP_WIRE_VERSION, hello[5] = (uint8_t)nl;
    hello[6] = (uint8_t)role, hello[7] = 0;
    tcp_put64(hello + 8, tp->instance);
    tcp_put64(hello + 16, expect);
    int rc = tcp_fill_random(nc, TCP_NONCE);
    struct iovec hv[2] = {{hello, sizeof(hello)}, {tp->self, nl}};
    if (!rc)
        rc = tcp_send_iov(fd, hv, nl ? 2 : 1);
    if (!rc)
        rc = tcp_rb_read_by(fd, rb, ch, sizeof(ch), dl);
    if (rc)
        return tcp_io_err(tp, peer, "handshake", rc);
    if (tcp_get32(ch) != TCP_MAGIC_HELLO || ch[4] != TCP_WIRE_VERSION)
        return tcp_h->error_set(REFIT_EPROTO, "tcp: %s: peer '%s' is not a refit tcp transport of "
                                "wire version %d", tp->name, peer, TCP_WIRE_VERSION);
    uint64_t si = tcp_get64(ch + 8);
    if (si != expect || ch[6] != 0)
        return tcp_h->error_set(REFIT_ESTALE, "tcp: %s: peer '%s': the process at this address is "
                                "not the one that published it (instance %016llx, expected %016llx)",
                                tp->name, peer, (unsigned long long)si, (unsigned long long)expect);
    hs_mac(tp, "refit-tcp client", ch + 16, nc, tp->instance, si, tp->self, mac);
    rc = tcp_send_all(fd, mac, sizeof(mac));
    if (!rc)
        rc = tcp_rb_read_by(fd, rb, rep, sizeof(rep), dl);
    if (rc == -ENOTCONN || (!rc && tcp_get32(rep) != 0)) {
        if (tp->secret_path)
            return tcp_h->error_set(REFIT_EPERM, "tcp: %s: peer '%s' rejected our authentication: "
                                    "without a token both sides must be the same user on the same host "
                                    "(the local secret %s), else both need the same token (token_file "
                                    "or REFIT_TCP_TOKEN)", tp->name, peer, tp->secret_path);
        return tcp_h->error_set(REFIT_EPERM, "tcp: %s: peer '%s' rejected our authentication: the "
                                "two sides need the same token (token_file or REFIT_TCP_TOKEN)",
                                tp->name, peer);
    }
    if (rc)
        return tcp_io_err(tp, peer, "handshake", rc);
    hs_mac(tp, "refit-tcp server", nc, ch + 16, tp->instance, si, tp->self, want);
    if (!tcp_ct_equal(want, rep + 4, TCP_MAC))
        return tcp_h->error_set(REFIT_EPERM, "tcp: %s: peer '%s' failed to prove the shared token",
                                tp->name, peer);
    return 0;
}

int tcp_handshake_server(refit_tp_t *tp, int fd, struct tcp_rbuf *rb, uint32_t *role,
                         uint64_t *client, char *name, int64_t dl)
{
    uint8_t hello[40], ch[32], mac[TCP_MAC], want[TCP_MAC], rep[4 + TCP_MAC];
    int rc = tcp_rb_read_by(fd, rb, hello, sizeof(hello), dl);
    if (rc)
        return rc;
    if (tcp_get32(hello) != TCP_MAGIC_HELLO || hello[4] != TCP_WIRE_VERSION ||
        (hello[6] != TCP_ROLE_DATA && hello[6] != TCP_ROLE_CTL))
        return -EPROTO;
    /* The name: hello[5] <= 255 bytes by its type, no NUL inside. */
    rc = tcp_rb_read_by(fd, rb, name, hello[5], dl);
    if (rc)
        return rc;
    name[hello[5]] = '\0';
    if (strlen(name) != hello[5])
        return -EPROTO;
    uint64_t ci = tcp_get64(hello + 8);
    tcp_put32(ch, TCP_MAGIC_HELLO);
    ch[4] = TCP_WIRE_VERSION, ch[5] = 0;
    ch[6] = tcp_get64(hello + 16) == tp->instance ? 0 : 1, ch[7] = 0;
    tcp_put64(ch + 8, tp->instance);
    rc = tcp_fill_random(ch + 16, TCP_NONCE);
    if (!rc)
        rc = tcp_send_all(fd, ch, sizeof(ch));
    if (!rc)
        rc = tcp_rb_read_by(fd, rb, mac, sizeof(mac), dl);
    if (rc)
        return rc;
    hs_mac(tp, "refit-tcp client", ch + 16, hello + 24, ci, tp->instance, name, want);
    if (!tcp_ct_equal(want, mac, TCP_MAC)) {
        memset(rep, 0, sizeof(rep));
        tcp_put32(rep, 1);
        tcp_send_all(fd, rep, sizeof(rep));
        return -EACCES;
    }
    tcp_put32(rep, 0);
    hs_mac(tp, "refit-tcp server", hello + 24, ch + 16, ci, tp->instance, name, rep + 4);
    rc = tcp_send_all(fd, rep, sizeof(rep));
    if (rc)
        return rc;
    *role = hello[6];
    *client = ci;
    return 0;
}

int tcp_wstatus_to_refit(int s)
{
    switch (s) {
    case TCP_S_OK: return 0;
    case TCP_S_STALE: return REFIT_ESTALE;
    case TCP_S_NOREGION:
    case TCP_S_FORGED: return REFIT_EPERM;
    case TCP_S_RANGE: return REFIT_ERANGE;
    case TCP_S_TOOBIG: return REFIT_ETOOBIG;
    case TCP_S_NOMEM: return REFIT_ENOMEM;
    case TCP_S_FULL: return REFIT_ETOOBIG;
    default: return REFIT_EPROTO;
    }
}

const char *tcp_wstatus_str(int s)
{
    switch (s) {
    case TCP_S_OK: return "ok";
    case TCP_S_NOREGION: return "no such region at the peer (invalid key)";
    case TCP_S_STALE: return "stale key: the region was deregistered";
    case TCP_S_FORGED: return "key rejected: its secret does not match (forged or corrupted)";
    case TCP_S_RANGE: return "offset and length beyond the region";
    case TCP_S_BADOP: return "unknown operation";
    case TCP_S_TOOBIG: return "message too large";
    case TCP_S_NOMEM: return "peer out of memory";
    case TCP_S_FULL: return "the peer's notification queue is full (its notify_queue bounds); dropped";
    default: return "unknown status";
    }
}

int64_t tcp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tcp_deadline(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    if (ms < 0)
        ms = 0;
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* Condition variables wait on the monotonic clock: a wall-clock step must
 * not stretch or cut a timeout. */
void tcp_cond_init(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}
