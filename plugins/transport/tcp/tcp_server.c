/* tcp_server.c — the serving side of the tcp transport: an acceptor thread
 * and one thread per accepted connection.  A connection is authenticated
 * first; afterwards every request is checked against the region table
 * (id, generation, secret, range) before a single byte of memory is read or
 * written, and a region's reference count keeps dereg waiting while a
 * transfer from or into it is on the wire.
 *
 * Connections not yet authenticated are kept apart: at most max_unauth of
 * them (the oldest is shut down to make room for a new one), each with
 * handshake_timeout for its whole handshake however slowly it trickles, and
 * none of them counts against max_conns, which bounds authenticated peers.
 * So sockets that connect and never authenticate cannot lock peers out.
 * A connection's thread closes its socket as it ends and wakes the
 * acceptor to join it: nothing of a gone peer lingers until the next
 * accept. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "refit/log.h"
#include "tcp_int.h"

#define PEND_MAX 64
#define PEND_BYTES (1u << 20)

struct tcp_sconn {
    refit_tp_t *tp;
    int fd;            /* -1 once the thread closed it (under tp->lock) */
    pthread_t th;
    bool done;
    bool authed;       /* counted in n_conns, else in n_unauth */
    bool evicted;      /* shut down to make room for a newer handshake */
    int64_t since_ms;  /* accepted at */
    uint64_t held[PEND_MAX + 1]; /* slots it holds references of (replies pending, one WRITE) */
    int n_held;
    struct tcp_sconn *next;
    char who[80];
    char from[REFIT_TP_NAME_MAX + 1]; /* the name it authenticated with */
    struct tcp_rbuf rb;
};


struct pend {
    uint8_t hdr[TCP_REP_SIZE];
    void *data;
    size_t len;
    uint64_t slot; /* UINT64_MAX: holds no reference */
};

static int slot_get(refit_tp_t *tp, struct tcp_sconn *c, const uint8_t *req, void **ptr, uint64_t *slot)
{
    uint64_t id = tcp_get64(req + 8), gen = tcp_get64(req + 16);
    uint64_t off = tcp_get64(req + 40), len = tcp_get64(req + 48);
    int st = TCP_S_OK;
    pthread_mutex_lock(&tp->lock);
    if (id >= tp->n_slots)
        st = TCP_S_NOREGION;
    else if (!tp->slots[id].live || tp->slots[id].gen != gen)
        st = TCP_S_STALE;
    else if (!tcp_ct_equal(tp->slots[id].secret, req + 24, TCP_SECRET) ||
             tcp_get64(req + 56) != tp->slots[id].len)
        st = TCP_S_FORGED;
    else if (off > tp->slots[id].len || len > tp->slots[id].len - off)
        st = TCP_S_RANGE;
    else {
        tp->slots[id].refs++;
        c->held[c->n_held++] = id;
        *ptr = (uint8_t *)tp->slots[id].ptr + off;
        *slot = id;
    }
    pthread_mutex_unlock(&tp->lock);
    return st;
}

static void slot_put(refit_tp_t *tp, struct tcp_sconn *c, uint64_t id)
{
    pthread_mutex_lock(&tp->lock);
    for (int i = c->n_held; i-- > 0;)
        if (c->held[i] == id) {
            c->held[i] = c->held[--c->n_held];
            break;
        }
    if (--tp->slots[id].refs == 0 && !tp->slots[id].live)
        pthread_cond_broadcast(&tp->cond);
    pthread_mutex_unlock(&tp->lock);
}

/* Replies go out in one sendmsg per batch: many small READs cost one
 * system call, not one each. */
static int flush(refit_tp_t *tp, struct tcp_sconn *c, struct pend *p, int *np)
{
    struct iovec iov[2 * PEND_MAX];
    int n = 0;
    for (int i = 0; i < *np; i++) {
        iov[n++] = (struct iovec){p[i].hdr, TCP_REP_SIZE};
        if (p[i].len)
            iov[n++] = (struct iovec){p[i].data, p[i].len};
    }
    int rc = n ? tcp_send_iov(c->fd, iov, n) : 0;
    for (int i = 0; i < *np; i++)
        if (p[i].slot != UINT64_MAX)
            slot_put(tp, c, p[i].slot);
    *np = 0;
    return rc;
}

static void pend_add(struct pend *p, int *np, int st, void *data, uint64_t len, uint64_t slot)
{
    struct pend *e = &p[(*np)++];
    tcp_put32(e->hdr, (uint32_t)st);
    tcp_put32(e->hdr + 4, 0);
    tcp_put64(e->hdr + 8, data ? len : 0);
    e->data = data;
    e->len = data ? len : 0;
    e->slot = slot;
}

/* A notification's payload (len <= TCP_MAX_NOTIFY) into the queue; *st
 * says whether it was queued.  Returns 0 or the stream's errno. */
static int take_notify(refit_tp_t *tp, struct tcp_sconn *c, uint64_t len, int *st)
{
    struct rtp_notice *m = malloc(sizeof(*m) + (len ? len : 1));
    if (!m) {
        *st = TCP_S_NOMEM;
        return tcp_rb_read(c->fd, &c->rb, NULL, len); /* drained: the stream stays in step */
    }
    m->len = len;
    int rc = tcp_rb_read(c->fd, &c->rb, m->data, len);
    if (rc) {
        free(m);
        return rc;
    }
    *st = tcp_nq_push(tp, c->from, m);
    return 0;
}

/* Wait for the next request without a timeout: a connection may idle
 * between refit cycles.  fini's shutdown() ends the wait. */
static int idle_wait(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (;;) {
        int k = poll(&p, 1, -1);
        if (k > 0)
            return 0;
        if (k < 0 && errno != EINTR)
            return -errno;
    }
}

/* Answer one connection's requests until it closes or fails. */
static int serve_requests(refit_tp_t *tp, struct tcp_sconn *c)
{
    struct pend *p = malloc(sizeof(*p) * PEND_MAX);
    if (!p)
        return -ENOMEM;
    int np = 0, rc = 0;
    size_t pbytes = 0;
    uint8_t req[TCP_REQ_SIZE];
    for (;;) {
        if (tcp_rb_avail(&c->rb) < TCP_REQ_SIZE) {
            rc = flush(tp, c, p, &np);
            pbytes = 0;
            if (!rc && tcp_rb_avail(&c->rb) == 0)
                rc = idle_wait(c->fd);
            if (rc)
                break;
        }
        rc = tcp_rb_read(c->fd, &c->rb, req, sizeof(req));
        if (rc)
            break;
        uint32_t op = tcp_get32(req);
        uint64_t len = tcp_get64(req + 48), slot = UINT64_MAX;
        void *ptr = NULL;
        int st;
        if (op == TCP_W_READ) {
            st = slot_get(tp, c, req, &ptr, &slot);
            pend_add(p, &np, st, st == TCP_S_OK ? ptr : NULL, len, slot);
            pbytes += st == TCP_S_OK ? len : 0;
        } else if (op == TCP_W_WRITE) {
            st = slot_get(tp, c, req, &ptr, &slot);
            /* A rejected WRITE's payload is drained, never stored, so the
             * stream stays in step. */
            rc = tcp_rb_read(c->fd, &c->rb, st == TCP_S_OK ? ptr : NULL, len);
            if (st == TCP_S_OK)
                slot_put(tp, c, slot);
            if (rc)
                break;
            pend_add(p, &np, st, NULL, 0, UINT64_MAX);
        } else if (op == TCP_W_NOTIFY && len <= TCP_MAX_NOTIFY) {
            rc = take_notify(tp, c, len, &st);
            if (rc)
                break;
            pend_add(p, &np, st, NULL, 0, UINT64_MAX);
        } else {
            if (op == TCP_W_NOTIFY) {
                pthread_mutex_lock(&tp->nlock);
                tp->nq.dropped_big++;
                pthread_mutex_unlock(&tp->nlock);
            }
            /* Unknown op or an oversized message: the stream cannot be
             * trusted any more, answer and close. */
            pend_add(p, &np, op == TCP_W_NOTIFY ? TCP_S_TOOBIG : TCP_S_BADOP, NULL, 0, UINT64_MAX);
            flush(tp, c, p, &np);
            rc = -EPROTO;
            break;
        }
        if (np == PEND_MAX || pbytes >= PEND_BYTES) {
            rc = flush(tp, c, p, &np);
            pbytes = 0;
            if (rc)
                break;
        }
    }
    /* Release references of replies never sent. */
    for (int i = 0; i < np; i++)
        if (p[i].slot != UINT64_MAX)
            slot_put(tp, c, p[i].slot);
    free(p);
    return rc;
}

/* Log the first refusal of a kind and then every power of two: a flood of
 * connections must not become a flood of log lines. */
static void log_refusal(refit_tp_t *tp, uint64_t *count, const char *fmt, const char *who, int n)
{
    uint64_t k = __atomic_add_fetch(count, 1, __ATOMIC_RELAXED);
    if ((k & (k - 1)) == 0)
        tcp_h->log(REFIT_LOG_WARN, TCP_NAME, fmt, tp->name, who, n, (unsigned long long)k);
}

/* After the handshake: an authenticated peer, counted against max_conns. */
static int admit(refit_tp_t *tp, struct tcp_sconn *c)
{
    pthread_mutex_lock(&tp->lock);
    tp->n_unauth--;
    int full = tp->n_conns >= tp->max_conns;
    if (!full) {
        tp->n_conns++;
        c->authed = true;
    }
    pthread_mutex_unlock(&tp->lock);
    if (full) {
        log_refusal(tp, &tp->refused_full, "%s: refusing %s: %d authenticated connections open "
                    "(max_conns; %llu refused)", c->who, tp->max_conns);
        return -EUSERS;
    }
    return 0;
}

static void *sconn_main(void *arg)
{
    struct tcp_sconn *c = arg;
    refit_tp_t *tp = c->tp;
    uint32_t role = 0;
    uint64_t client = 0;
    int rc = tcp_rb_init(&c->rb);
    if (!rc)
        rc = tcp_handshake_server(tp, c->fd, &c->rb, &role, &client, c->from,
                                  c->since_ms + tp->hs_timeout_ms);
    if (rc) {
        if (rc == -ETIMEDOUT)
            log_refusal(tp, &tp->refused_slow, "%s: dropped %s: no complete handshake within %d ms "
                        "(handshake_timeout; %llu dropped)", c->who, (int)tp->hs_timeout_ms);
        else if (!c->evicted)
            tcp_h->log(REFIT_LOG_WARN, TCP_NAME, "%s: rejected connection from %s: %s", tp->name, c->who,
                       rc == -EACCES ? "authentication failed (token mismatch)" : strerror(-rc));
    } else if ((rc = admit(tp, c)) == 0) {
        tcp_h->log(REFIT_LOG_DEBUG, TCP_NAME, "%s: %s connection from %s (instance %016llx)", tp->name,
                   role == TCP_ROLE_CTL ? "control" : "data", c->who, (unsigned long long)client);
        rc = serve_requests(tp, c);
        if (rc && rc != -ENOTCONN)
            tcp_h->log(REFIT_LOG_DEBUG, TCP_NAME, "%s: connection from %s ended: %s", tp->name, c->who,
                       strerror(-rc));
    }
    tcp_rb_free(&c->rb);
    pthread_mutex_lock(&tp->lock);
    if (c->authed)
        tp->n_conns--;
    else if (rc != -EUSERS) /* admit() already took it off */
        tp->n_unauth--;
    pthread_cond_broadcast(&tp->cond); /* an acceptor waiting for room */
    close(c->fd);
    c->fd = -1;
    c->done = true;
    pthread_mutex_unlock(&tp->lock);
    char b = 'r'; /* the acceptor joins us now, not at its next accept */
    if (write(tp->wake[1], &b, 1) < 0) {
        /* A full pipe already holds a wake-up. */
    }
    return NULL;
}

/* Join connections whose thread has ended.  Called with tp->lock held. */
static void reap(refit_tp_t *tp, bool all)
{
    struct tcp_sconn **pp = &tp->conns;
    while (*pp) {
        struct tcp_sconn *c = *pp;
        if (c->done || all) {
            *pp = c->next;
            pthread_mutex_unlock(&tp->lock);
            pthread_join(c->th, NULL);
            pthread_mutex_lock(&tp->lock);
            free(c);
        } else {
            pp = &c->next;
        }
    }
}

/* While twice max_unauth handshakes are alive (shut-down ones count until
 * their threads end), the acceptor waits for them rather than accept more:
 * a new connection waits in the listen backlog instead of being refused,
 * and threads stay bounded however fast connections arrive.  Called with
 * tp->lock held; false when stopping. */
static bool wait_room(refit_tp_t *tp)
{
    while (tp->n_unauth >= 2 * tp->max_unauth && !tp->stopping) {
        struct timespec dl;
        tcp_deadline(&dl, 100);
        pthread_cond_timedwait(&tp->cond, &tp->lock, &dl);
    }
    return !tp->stopping;
}

/* At max_unauth handshakes, the oldest one still running is shut down (its
 * thread ends at once) to make room for the new one.  Lock held. */
static void make_room(refit_tp_t *tp)
{
    if (tp->n_unauth < tp->max_unauth)
        return;
    struct tcp_sconn *old = NULL;
    for (struct tcp_sconn *c = tp->conns; c; c = c->next)
        if (!c->authed && !c->done && !c->evicted && c->fd >= 0 && (!old || c->since_ms < old->since_ms))
            old = c;
    if (!old)
        return; /* all shut down already: they end soon */
    old->evicted = true;
    shutdown(old->fd, SHUT_RDWR);
    log_refusal(tp, &tp->refused_unauth, "%s: dropped %s to make room: %d connections in their "
                "handshake (max_unauth; %llu dropped)", old->who, tp->max_unauth);
}

static void accept_one(refit_tp_t *tp)
{
    pthread_mutex_lock(&tp->lock);
    reap(tp, false);
    bool room = wait_room(tp);
    pthread_mutex_unlock(&tp->lock);
    if (!room)
        return;
    struct sockaddr_storage sa;
    socklen_t sl = sizeof(sa);
    int fd = accept4(tp->lfd, (struct sockaddr *)&sa, &sl, SOCK_CLOEXEC);
    if (fd < 0)
        return; /* gone again, or EAGAIN: the listener does not block */
    struct tcp_sconn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->tp = tp;
    c->fd = fd;
    c->since_ms = tcp_now_ms();
    tcp_sa_str(&sa, c->who, sizeof(c->who));
    tcp_sock_tune(tp, fd);
    tcp_set_timeouts(fd, tp->timeout_ms);
    pthread_mutex_lock(&tp->lock);
    if (!tp->stopping)
        make_room(tp);
    if (tp->stopping || pthread_create(&c->th, NULL, sconn_main, c)) {
        pthread_mutex_unlock(&tp->lock);
        close(fd);
        free(c);
        return;
    }
    c->next = tp->conns;
    tp->conns = c;
    tp->n_unauth++;
    pthread_mutex_unlock(&tp->lock);
}

static void *acceptor_main(void *arg)
{
    refit_tp_t *tp = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = tp->lfd, .events = POLLIN}, {.fd = tp->wake[0], .events = POLLIN}};
        int k = poll(p, 2, -1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            break;
        if (p[1].revents) {
            /* A connection ended (join it) or fini wants us gone. */
            char buf[64];
            if (read(tp->wake[0], buf, sizeof(buf)) < 0 && errno != EAGAIN && errno != EINTR)
                break;
            pthread_mutex_lock(&tp->lock);
            bool stop = tp->stopping;
            if (!stop)
                reap(tp, false);
            pthread_mutex_unlock(&tp->lock);
            if (stop)
                break;
        }
        if (p[0].revents)
            accept_one(tp);
    }
    return NULL;
}

void tcp_server_cut_holders(refit_tp_t *tp, uint64_t slot)
{
    for (struct tcp_sconn *c = tp->conns; c; c = c->next) {
        bool holds = false;
        for (int i = 0; i < c->n_held && !holds; i++)
            holds = c->held[i] == slot;
        if (holds && c->fd >= 0) {
            tcp_h->log(REFIT_LOG_WARN, TCP_NAME, "%s: cutting the connection from %s: it kept a "
                       "transfer of a deregistered region going past transport.timeout", tp->name, c->who);
            shutdown(c->fd, SHUT_RDWR);
        }
    }
}

int tcp_server_start(refit_tp_t *tp)
{
    if (pthread_create(&tp->acceptor, NULL, acceptor_main, tp))
        return tcp_h->error_set(REFIT_EIO, "tcp: %s: cannot start the server thread", tp->name);
    tp->acceptor_started = true;
    return 0;
}

void tcp_server_stop(refit_tp_t *tp)
{
    if (!tp->acceptor_started)
        return;
    pthread_mutex_lock(&tp->lock);
    tp->stopping = true;
    pthread_mutex_unlock(&tp->lock);
    char b = 1;
    if (write(tp->wake[1], &b, 1) < 0) {
        /* The pipe cannot be full: the acceptor is the only reader. */
    }
    pthread_join(tp->acceptor, NULL);
    tp->acceptor_started = false;
    pthread_mutex_lock(&tp->lock);
    for (struct tcp_sconn *c = tp->conns; c; c = c->next)
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);
    reap(tp, true);
    pthread_mutex_unlock(&tp->lock);
}
