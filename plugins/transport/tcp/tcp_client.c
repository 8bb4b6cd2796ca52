/* tcp_client.c — the requesting side of the tcp transport: peers with
 * `streams` data connections and one control connection, a worker thread
 * per data connection, and requests split into chunks that the workers take
 * from the peer's queue in batches (one system call for many small
 * descriptors, several chunks in flight per stream for large ones). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "refit/log.h"
#include "tcp_int.h"

#define BATCH_MAX 512

struct item {
    refit_tp_req_t *r;
    size_t ci;
};

static void req_unlink(refit_tp_peer_t *p, refit_tp_req_t *r)
{
    if (r->lprev)
        r->lprev->lnext = r->lnext;
    else
        p->live = r->lnext;
    if (r->lnext)
        r->lnext->lprev = r->lprev;
    r->lprev = r->lnext = NULL;
}

static void req_destroy(refit_tp_req_t *r)
{
    free(r->d);
    free(r->c);
    free(r);
}

/* Account k finished chunks of r (status st, message msg).  Lock held. */
static void req_finish(refit_tp_peer_t *p, refit_tp_req_t *r, size_t k, int st, const char *msg)
{
    if (st && !r->status) {
        r->status = st;
        snprintf(r->msg, sizeof(r->msg), "%s", msg);
    }
    r->done += k;
    p->outstanding -= k;
    if (r->done == r->n_chunks && r->orphan) {
        req_unlink(p, r);
        req_destroy(r);
    }
}

/* Fail every chunk not yet taken.  Lock held. */
static void fail_queue(refit_tp_peer_t *p, int st, const char *msg)
{
    while (p->qhead) {
        refit_tp_req_t *r = p->qhead;
        p->qhead = r->qnext;
        size_t left = r->n_chunks - r->cursor;
        r->cursor = r->n_chunks;
        req_finish(p, r, left, st, msg);
    }
    p->qtail = NULL;
    pthread_cond_broadcast(&p->done);
}

/* Take up to BATCH_MAX chunks of one op and about batch_bytes.  Chunks of a
 * failed or cancelled request are completed without I/O.  Lock held. */
static size_t take_batch(refit_tp_peer_t *p, struct item *it, uint32_t *op)
{
    size_t n = 0;
    uint64_t bytes = 0;
    *op = 0;
    while (p->qhead && n < BATCH_MAX) {
        refit_tp_req_t *r = p->qhead;
        if (r->status) {
            size_t left = r->n_chunks - r->cursor;
            r->cursor = r->n_chunks;
            p->qhead = r->qnext;
            req_finish(p, r, left, 0, NULL);
            pthread_cond_broadcast(&p->done);
            continue;
        }
        struct tcp_chunk *c = &r->c[r->cursor];
        uint32_t o = r->d[c->desc].op;
        if (n && (o != *op || bytes + c->len > p->tp->batch_bytes))
            break;
        *op = o;
        it[n].r = r;
        it[n].ci = r->cursor++;
        bytes += c->len;
        n++;
        if (r->cursor == r->n_chunks)
            p->qhead = r->qnext;
    }
    if (!p->qhead)
        p->qtail = NULL;
    return n;
}

static void put_req(uint8_t *h, uint32_t op, const refit_tp_rkey_t *k, uint64_t off, uint64_t len)
{
    memset(h, 0, TCP_REQ_SIZE);
    tcp_put32(h, op);
    tcp_put64(h + 8, k->id);
    tcp_put64(h + 16, k->gen);
    memcpy(h + 24, k->secret, TCP_SECRET);
    tcp_put64(h + 40, off);
    tcp_put64(h + 48, len);
    tcp_put64(h + 56, k->len); /* the key's own length: part of what the server checks */
}

/* One batch on one stream: all requests out, then all replies in.  The
 * batch limits keep the direction that is not drained (READ requests, WRITE
 * acknowledgements) far below any socket buffer, so the two sides never
 * wait on each other.  Returns 0 or an errno (the stream is then broken);
 * per-chunk wire status lands in st[]. */
static int run_batch(struct tcp_stream *s, struct item *it, size_t n, uint32_t op, int *st,
                     uint8_t *hdrs, struct iovec *iov)
{
    int niov = 0;
    for (size_t i = 0; i < n; i++) {
        const refit_tp_req_t *r = it[i].r;
        const struct tcp_chunk *c = &r->c[it[i].ci];
        const struct refit_tp_desc *d = &r->d[c->desc];
        uint8_t *h = hdrs + i * TCP_REQ_SIZE;
        put_req(h, op == REFIT_OP_READ ? TCP_W_READ : TCP_W_WRITE, d->remote, d->remote_off + c->off,
                c->len);
        iov[niov++] = (struct iovec){h, TCP_REQ_SIZE};
        if (op == REFIT_OP_WRITE)
            iov[niov++] = (struct iovec){(uint8_t *)d->local->ptr + d->local_off + c->off, c->len};
    }
    int rc = tcp_send_iov(s->fd, iov, niov);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const refit_tp_req_t *r = it[i].r;
        const struct tcp_chunk *c = &r->c[it[i].ci];
        const struct refit_tp_desc *d = &r->d[c->desc];
        uint8_t rep[TCP_REP_SIZE];
        rc = tcp_rb_read(s->fd, &s->rb, rep, sizeof(rep));
        if (rc)
            return rc;
        st[i] = (int)tcp_get32(rep);
        uint64_t len = tcp_get64(rep + 8);
        if (st[i] == TCP_S_OK && op == REFIT_OP_READ) {
            if (len != c->len)
                return -EPROTO;
            rc = tcp_rb_read(s->fd, &s->rb, (uint8_t *)d->local->ptr + d->local_off + c->off, len);
            if (rc)
                return rc;
        } else if (len != 0) {
            return -EPROTO;
        }
    }
    return 0;
}

static void chunk_msg(refit_tp_peer_t *p, const struct item *it, int wst, char *buf, size_t cap)
{
    const struct tcp_chunk *c = &it->r->c[it->ci];
    const struct refit_tp_desc *d = &it->r->d[c->desc];
    snprintf(buf, cap, "tcp: %s: peer '%s': %s of %llu bytes at offset %llu of remote region %llu "
             "(descriptor %u): %s", p->tp->name, p->name, d->op == REFIT_OP_READ ? "READ" : "WRITE",
             (unsigned long long)c->len, (unsigned long long)(d->remote_off + c->off),
             (unsigned long long)d->remote->id, c->desc, tcp_wstatus_str(wst));
}

static void *worker_main(void *arg)
{
    struct tcp_stream *s = arg;
    refit_tp_peer_t *p = s->peer;
    struct item *it = malloc(sizeof(*it) * BATCH_MAX);
    int *st = malloc(sizeof(*st) * BATCH_MAX);
    uint8_t *hdrs = malloc((size_t)TCP_REQ_SIZE * BATCH_MAX);
    struct iovec *iov = malloc(sizeof(*iov) * 2 * BATCH_MAX);
    char msg[512];
    pthread_mutex_lock(&p->lock);
    if (!it || !st || !hdrs || !iov) {
        p->err = REFIT_ENOMEM;
        snprintf(p->errmsg, sizeof(p->errmsg), "tcp: %s: peer '%s': out of memory", p->tp->name, p->name);
        fail_queue(p, p->err, p->errmsg);
    }
    while (!p->err) {
        while (!p->stop && !p->err && !p->qhead)
            pthread_cond_wait(&p->work, &p->lock);
        if (p->stop || p->err)
            break;
        uint32_t op;
        size_t n = take_batch(p, it, &op);
        if (!n)
            continue;
        pthread_mutex_unlock(&p->lock);
        int rc = run_batch(s, it, n, op, st, hdrs, iov);
        if (rc) {
            char what[64];
            snprintf(what, sizeof(what), "%s on stream %d", op == REFIT_OP_READ ? "READ" : "WRITE", s->idx);
            /* A broken stream breaks the peer, whatever broke it (the
             * message says what): REFIT_ECONN tells the caller to
             * disconnect and connect again (docs/transports.md). */
            int code = REFIT_ECONN;
            if (rc == -EPROTO)
                snprintf(msg, sizeof(msg), "tcp: %s: peer '%s': malformed reply on stream %d",
                         p->tp->name, p->name, s->idx);
            else
                tcp_io_errfmt(msg, sizeof(msg), p->tp, p->name, what, rc);
            pthread_mutex_lock(&p->lock);
            for (size_t i = 0; i < n; i++)
                req_finish(p, it[i].r, 1, code, msg);
            if (!p->err && !p->stop) {
                p->err = code;
                snprintf(p->errmsg, sizeof(p->errmsg), "%s", msg);
                tcp_h->log(REFIT_LOG_WARN, TCP_NAME, "%s", msg);
            }
            fail_queue(p, p->err ? p->err : code, p->errmsg[0] ? p->errmsg : msg);
            pthread_cond_broadcast(&p->work);
            break;
        }
        pthread_mutex_lock(&p->lock);
        for (size_t i = 0; i < n; i++) {
            if (st[i])
                chunk_msg(p, &it[i], st[i], msg, sizeof(msg));
            req_finish(p, it[i].r, 1, tcp_wstatus_to_refit(st[i]), msg);
        }
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    free(it);
    free(st);
    free(hdrs);
    free(iov);
    return NULL;
}

static int parse_addr(refit_tp_t *tp, const void *addr, size_t len, const char *peer,
                      struct sockaddr_storage *sa, uint64_t *instance)
{
    const uint8_t *b = addr;
    if (len != TCP_ADDR_SIZE || tcp_get32(b) != TCP_MAGIC_ADDR || b[4] != TCP_WIRE_VERSION ||
        (b[5] != 4 && b[5] != 6))
        return tcp_h->error_set(REFIT_EPROTO, "tcp: %s: address of peer '%s' is not a tcp transport "
                                "address (%zu bytes)", tp->name, peer, len);
    memset(sa, 0, sizeof(*sa));
    uint16_t port = (uint16_t)(b[6] | b[7] << 8);
    if (b[5] == 4) {
        struct sockaddr_in *s = (void *)sa;
        s->sin_family = AF_INET;
        s->sin_port = htons(port);
        memcpy(&s->sin_addr, b + 16, 4);
    } else {
        struct sockaddr_in6 *s = (void *)sa;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons(port);
        memcpy(&s->sin6_addr, b + 16, 16);
    }
    *instance = tcp_get64(b + 8);
    return 0;
}

static void peer_free(refit_tp_peer_t *p)
{
    for (int i = 0; i < p->n_st; i++) {
        if (p->st[i].fd >= 0)
            close(p->st[i].fd);
        tcp_rb_free(&p->st[i].rb);
    }
    if (p->ctl_fd >= 0)
        close(p->ctl_fd);
    tcp_rb_free(&p->ctl_rb);
    free(p->st);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->ctl_lock);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    free(p);
}

static int open_conn(refit_tp_t *tp, refit_tp_peer_t *p, uint32_t role, int *fd, struct tcp_rbuf *rb)
{
    if (tcp_rb_init(rb))
        return tcp_h->error_set(REFIT_ENOMEM, "tcp: %s: out of memory", tp->name);
    int rc = tcp_dial(tp, &p->sa, p->name, fd);
    if (rc)
        return rc;
    return tcp_handshake_client(tp, *fd, rb, role, p->instance, p->name);
}

int tcp_connect(refit_tp_t *tp, const void *addr, size_t len, const char *peer_name,
                refit_tp_peer_t **out)
{
    refit_tp_peer_t *p = calloc(1, sizeof(*p));
    if (!p)
        return tcp_h->error_set(REFIT_ENOMEM, "tcp: %s: out of memory", tp->name);
    p->tp = tp;
    snprintf(p->name, sizeof(p->name), "%s", peer_name);
    p->ctl_fd = -1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->ctl_lock, NULL);
    tcp_cond_init(&p->work);
    tcp_cond_init(&p->done);
    int rc = parse_addr(tp, addr, len, peer_name, &p->sa, &p->instance);
    if (rc)
        goto fail;
    p->st = calloc((size_t)tp->streams, sizeof(*p->st));
    if (!p->st) {
        rc = tcp_h->error_set(REFIT_ENOMEM, "tcp: %s: out of memory", tp->name);
        goto fail;
    }
    for (int i = 0; i < tp->streams; i++) {
        p->st[i].fd = -1;
        p->st[i].idx = i;
        p->st[i].peer = p;
        p->n_st++;
        rc = open_conn(tp, p, TCP_ROLE_DATA, &p->st[i].fd, &p->st[i].rb);
        if (rc)
            goto fail;
    }
    rc = open_conn(tp, p, TCP_ROLE_CTL, &p->ctl_fd, &p->ctl_rb);
    if (rc)
        goto fail;
    for (int i = 0; i < p->n_st; i++) {
        if (pthread_create(&p->st[i].th, NULL, worker_main, &p->st[i])) {
            rc = tcp_h->error_set(REFIT_EIO, "tcp: %s: cannot start a stream thread", tp->name);
            goto fail;
        }
        p->st[i].started = true;
    }
    pthread_mutex_lock(&tp->plock);
    p->next = tp->peers;
    tp->peers = p;
    pthread_mutex_unlock(&tp->plock);
    char where[80];
    tcp_sa_str(&p->sa, where, sizeof(where));
    tcp_h->log(REFIT_LOG_DEBUG, TCP_NAME, "%s: connected to '%s' at %s with %d streams", tp->name,
               p->name, where, p->n_st);
    *out = p;
    return 0;
fail:
    if (p->st) {
        pthread_mutex_lock(&p->lock);
        p->stop = true;
        pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->lock);
        for (int i = 0; i < p->n_st; i++)
            if (p->st[i].started)
                pthread_join(p->st[i].th, NULL);
    }
    peer_free(p);
    return tcp_h->error_push(rc, "connect");
}

void tcp_disconnect(refit_tp_t *tp, refit_tp_peer_t *p)
{
    pthread_mutex_lock(&tp->plock);
    for (refit_tp_peer_t **pp = &tp->peers; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    pthread_mutex_unlock(&tp->plock);
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    /* Unblock workers that sit in send or recv. */
    for (int i = 0; i < p->n_st; i++)
        shutdown(p->st[i].fd, SHUT_RDWR);
    for (int i = 0; i < p->n_st; i++)
        if (p->st[i].started)
            pthread_join(p->st[i].th, NULL);
    char msg[256];
    snprintf(msg, sizeof(msg), "tcp: %s: peer '%s' disconnected with the request in flight", tp->name,
             p->name);
    pthread_mutex_lock(&p->lock);
    fail_queue(p, REFIT_ECANCELED, msg);
    /* Requests the caller still holds outlive the peer: complete them. */
    while (p->live) {
        refit_tp_req_t *r = p->live;
        req_unlink(p, r);
        if (r->orphan) {
            req_destroy(r);
            continue;
        }
        if (r->done < r->n_chunks && !r->status) {
            r->status = REFIT_ECANCELED;
            snprintf(r->msg, sizeof(r->msg), "%s", msg);
        }
        r->done = r->n_chunks;
        r->peer = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    peer_free(p);
}

int tcp_unpack_rkey(refit_tp_t *tp, refit_tp_peer_t *p, const void *buf, size_t len,
                    refit_tp_rkey_t **out)
{
    const uint8_t *b = buf;
    if (len != TCP_RKEY_SIZE || tcp_get32(b) != TCP_MAGIC_RKEY || b[4] != TCP_WIRE_VERSION)
        return tcp_h->error_set(REFIT_EPROTO, "tcp: %s: peer '%s': not a tcp remote key (%zu bytes)",
                                tp->name, p->name, len);
    if (tcp_get64(b + 8) != p->instance)
        return tcp_h->error_set(REFIT_EPROTO, "tcp: %s: peer '%s': remote key of another process "
                                "(instance %016llx, peer is %016llx)", tp->name, p->name,
                                (unsigned long long)tcp_get64(b + 8), (unsigned long long)p->instance);
    refit_tp_rkey_t *k = calloc(1, sizeof(*k));
    if (!k)
        return tcp_h->error_set(REFIT_ENOMEM, "tcp: %s: out of memory", tp->name);
    k->magic = TCP_RKEY_OBJ_MAGIC;
    k->peer = p;
    k->id = tcp_get64(b + 16);
    k->gen = tcp_get64(b + 24);
    k->len = tcp_get64(b + 32);
    memcpy(k->secret, b + 40, TCP_SECRET);
    *out = k;
    return 0;
}

void tcp_release_rkey(refit_tp_t *tp, refit_tp_rkey_t *k)
{
    (void)tp;
    if (k)
        k->magic = 0;
    free(k);
}

static int check_desc(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t i)
{
    if (d->op != REFIT_OP_READ && d->op != REFIT_OP_WRITE)
        return tcp_h->error_set(REFIT_EINVAL, "tcp: %s: descriptor %zu: unknown op %u", tp->name, i, d->op);
    if (!d->local || d->local->magic != TCP_REGION_MAGIC || d->local->tp != tp)
        return tcp_h->error_set(REFIT_EINVAL, "tcp: %s: descriptor %zu: not a region of this transport",
                                tp->name, i);
    if (!d->remote || d->remote->magic != TCP_RKEY_OBJ_MAGIC || d->remote->peer != p)
        return tcp_h->error_set(REFIT_EINVAL, "tcp: %s: descriptor %zu: remote key not unpacked for "
                                "peer '%s'", tp->name, i, p->name);
    if (d->local_off > d->local->len || d->len > d->local->len - d->local_off)
        return tcp_h->error_set(REFIT_ERANGE, "tcp: %s: descriptor %zu: local [%llu, +%llu) beyond "
                                "region of %llu bytes", tp->name, i, (unsigned long long)d->local_off,
                                (unsigned long long)d->len, (unsigned long long)d->local->len);
    if (d->remote_off > d->remote->len || d->len > d->remote->len - d->remote_off)
        return tcp_h->error_set(REFIT_ERANGE, "tcp: %s: peer '%s': descriptor %zu: remote [%llu, +%llu) "
                                "beyond region %llu of %llu bytes", tp->name, p->name, i,
                                (unsigned long long)d->remote_off, (unsigned long long)d->len,
                                (unsigned long long)d->remote->id, (unsigned long long)d->remote->len);
    return 0;
}

int tcp_post(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n,
             refit_tp_req_t **out)
{
    size_t nc = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = check_desc(tp, p, &d[i], i);
        if (rc)
            return rc;
        nc += (size_t)((d[i].len + tp->chunk - 1) / tp->chunk);
    }
    refit_tp_req_t *r = calloc(1, sizeof(*r));
    if (!r || !(r->d = malloc(sizeof(*d) * (n ? n : 1))) || !(r->c = malloc(sizeof(*r->c) * (nc ? nc : 1)))) {
        if (r)
            free(r->d);
        free(r);
        return tcp_h->error_set(REFIT_ENOMEM, "tcp: %s: a request of %zu descriptors", tp->name, n);
    }
    memcpy(r->d, d, sizeof(*d) * n);
    r->n_desc = n;
    r->peer = p;
    for (size_t i = 0, k = 0; i < n; i++)
        for (uint64_t off = 0; off < d[i].len; off += tp->chunk, k++) {
            r->c[k].desc = (uint32_t)i;
            r->c[k].off = off;
            r->c[k].len = d[i].len - off < tp->chunk ? d[i].len - off : tp->chunk;
        }
    r->n_chunks = nc;
    pthread_mutex_lock(&p->lock);
    if (p->err) {
        pthread_mutex_unlock(&p->lock);
        req_destroy(r);
        return tcp_h->error_set(p->err, "%s", p->errmsg);
    }
    r->lnext = p->live;
    if (p->live)
        p->live->lprev = r;
    p->live = r;
    if (nc) {
        if (p->qtail)
            p->qtail->qnext = r;
        else
            p->qhead = r;
        p->qtail = r;
        p->outstanding += nc;
        pthread_cond_broadcast(&p->work);
    }
    pthread_mutex_unlock(&p->lock);
    *out = r;
    return 0;
}

static int req_result(refit_tp_req_t *r)
{
    if (r->status)
        return tcp_h->error_set(r->status, "%s", r->msg);
    return 0;
}

int tcp_test(refit_tp_t *tp, refit_tp_req_t *r)
{
    (void)tp;
    refit_tp_peer_t *p = r->peer;
    if (!p)
        return req_result(r);
    pthread_mutex_lock(&p->lock);
    bool done = r->done == r->n_chunks;
    pthread_mutex_unlock(&p->lock);
    return done ? req_result(r) : REFIT_EAGAIN;
}

int tcp_wait(refit_tp_t *tp, refit_tp_req_t *r, int64_t timeout_ms)
{
    refit_tp_peer_t *p = r->peer;
    if (!p)
        return req_result(r);
    struct timespec dl;
    tcp_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&p->lock);
    while (r->done < r->n_chunks) {
        if (pthread_cond_timedwait(&p->done, &p->lock, &dl) == ETIMEDOUT && r->done < r->n_chunks) {
            size_t left = r->n_chunks - r->done;
            pthread_mutex_unlock(&p->lock);
            return tcp_h->error_set(REFIT_ETIMEDOUT, "tcp: %s: peer '%s': request not complete after "
                                    "%lld ms (%zu of %zu chunks left)", tp->name, p->name,
                                    (long long)timeout_ms, left, r->n_chunks);
        }
    }
    pthread_mutex_unlock(&p->lock);
    return req_result(r);
}

void tcp_req_free(refit_tp_t *tp, refit_tp_req_t *r)
{
    (void)tp;
    refit_tp_peer_t *p = r->peer;
    if (!p) {
        req_destroy(r);
        return;
    }
    pthread_mutex_lock(&p->lock);
    if (r->done == r->n_chunks) {
        req_unlink(p, r);
        req_destroy(r);
    } else {
        /* Still on the wire: the worker that finishes it frees it; chunks
         * not yet sent are skipped. */
        r->orphan = true;
        if (!r->status) {
            r->status = REFIT_ECANCELED;
            snprintf(r->msg, sizeof(r->msg), "request freed while in flight");
        }
    }
    pthread_mutex_unlock(&p->lock);
}

/* The control connection failed: a late reply would be read as the next
 * one, so the peer is broken as a whole (data streams shut down, every
 * later call REFIT_ECONN) until the caller reconnects. */
static int peer_break(refit_tp_t *tp, refit_tp_peer_t *p, const char *what, int rc)
{
    char msg[512];
    tcp_io_errfmt(msg, sizeof(msg), tp, p->name, what, rc);
    pthread_mutex_lock(&p->lock);
    if (!p->err) {
        p->err = REFIT_ECONN;
        snprintf(p->errmsg, sizeof(p->errmsg), "%s", msg);
        tcp_h->log(REFIT_LOG_WARN, TCP_NAME, "%s", msg);
    }
    fail_queue(p, p->err, p->errmsg);
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_st; i++)
        shutdown(p->st[i].fd, SHUT_RDWR);
    return tcp_h->error_set(REFIT_ECONN, "%s", msg);
}

int tcp_notify(refit_tp_t *tp, refit_tp_peer_t *p, const void *msg, size_t len)
{
    if (len > TCP_MAX_NOTIFY)
        return tcp_h->error_set(REFIT_ETOOBIG, "tcp: %s: notification of %zu bytes, at most %d",
                                tp->name, len, TCP_MAX_NOTIFY);
    /* Everything posted to this peer before must have landed first: push
     * mode reads the notification as "your weights are complete". */
    struct timespec dl;
    tcp_deadline(&dl, tp->timeout_ms);
    pthread_mutex_lock(&p->lock);
    while (p->outstanding && !p->err)
        if (pthread_cond_timedwait(&p->done, &p->lock, &dl) == ETIMEDOUT && p->outstanding) {
            pthread_mutex_unlock(&p->lock);
            return tcp_h->error_set(REFIT_ETIMEDOUT, "tcp: %s: peer '%s': notify: earlier transfers "
                                    "not complete after %lld ms", tp->name, p->name,
                                    (long long)tp->timeout_ms);
        }
    int err = p->err;
    pthread_mutex_unlock(&p->lock);
    if (err)
        return tcp_h->error_set(err, "%s", p->errmsg);
    uint8_t h[TCP_REQ_SIZE], rep[TCP_REP_SIZE];
    memset(h, 0, sizeof(h));
    tcp_put32(h, TCP_W_NOTIFY);
    tcp_put64(h + 48, len);
    struct iovec iov[2] = {{h, sizeof(h)}, {(void *)msg, len}};
    pthread_mutex_lock(&p->ctl_lock);
    int rc = tcp_send_iov(p->ctl_fd, iov, len ? 2 : 1);
    if (!rc)
        rc = tcp_rb_read(p->ctl_fd, &p->ctl_rb, rep, sizeof(rep));
    pthread_mutex_unlock(&p->ctl_lock);
    if (rc)
        return peer_break(tp, p, "notify", rc);
    int st = (int)tcp_get32(rep);
    if (st)
        return tcp_h->error_set(tcp_wstatus_to_refit(st), "tcp: %s: peer '%s': notify: %s", tp->name,
                                p->name, tcp_wstatus_str(st));
    return 0;
}
