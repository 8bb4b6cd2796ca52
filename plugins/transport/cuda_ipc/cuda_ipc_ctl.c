/* cuda_ipc_ctl.c — the control channel of the `cuda_ipc` transport.
 *
 * CUDA IPC copies are one-sided: once a peer has mapped our allocation it
 * can read and write it with no help from us, and neither our dereg nor
 * our death stops it.  So every connection also opens a Unix stream socket
 * to the owner (named in the owner's address blob), and a thread of the
 * plugin serves all sockets of a transport (the listener, the connections
 * peers made to us, the ones we made to them):
 *
 *   client → owner  HELLO (who we are), CHECK (is this key one of your
 *                   live registrations? — before we open its handle),
 *                   ACK (a revoke is done), NOTIFY (push mode's message)
 *   owner → client  WELCOME, CHECK_REPLY, REVOKE (a region goes)
 *
 * The owner remembers which connections had a region's key confirmed;
 * dereg sends them a REVOKE and waits (transport.timeout at most) for their
 * ACKs.  A client acknowledges only after it marked its keys of the region
 * stale, failed its requests still copying from or to it, waited until
 * those copies finished and closed the mapping — so after dereg returns no
 * peer touches the memory.  A dead peer's socket closes by itself, so it
 * is not waited for; a client whose owner's socket closes treats all of the
 * owner's regions as revoked (ECONN). */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "cuda_ipc.h"

/* ------------------------------------------------------------------ */
/* Connections */

static struct cipc_conn *conn_new(refit_tp_t *tp, int fd, int outgoing)
{
    struct cipc_conn *c = H->calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->rx_cap = sizeof(struct cipc_msg) + CIPC_MAX_PAYLOAD;
    c->rx = H->alloc(c->rx_cap);
    if (!c->rx) {
        H->free(c);
        return NULL;
    }
    c->tp = tp;
    c->fd = fd;
    c->outgoing = outgoing;
    c->refs = 1;
    pthread_mutex_init(&c->send_lock, NULL);
    return c;
}

void cipc_conn_put(refit_tp_t *tp, struct cipc_conn *c)
{
    (void)tp;
    if (!c || --c->refs > 0)
        return;
    close(c->fd);
    pthread_mutex_destroy(&c->send_lock);
    H->free(c->rx);
    H->free(c->remote_name);
    H->free(c);
}

static void conn_link(refit_tp_t *tp, struct cipc_conn *c)
{
    c->id = ++tp->next_conn_id;
    c->next = tp->conns;
    tp->conns = c;
    c->in_list = 1;
}

static void conn_unlink(refit_tp_t *tp, struct cipc_conn *c)
{
    if (!c->in_list)
        return;
    for (struct cipc_conn **pc = &tp->conns; *pc; pc = &(*pc)->next)
        if (*pc == c) {
            *pc = c->next;
            break;
        }
    c->in_list = 0;
    cipc_conn_put(tp, c);
}

struct cipc_conn *cipc_conn_find(refit_tp_t *tp, uint64_t id)
{
    for (struct cipc_conn *c = tp->conns; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

int cipc_conn_hung_up(const struct cipc_conn *c)
{
    struct pollfd pf = {c->fd, POLLRDHUP, 0};
    return poll(&pf, 1, 0) > 0 && (pf.revents & (POLLHUP | POLLRDHUP | POLLERR));
}

int cipc_conn_send(struct cipc_conn *c, uint16_t type, uint64_t a, uint64_t b, const void *body,
                   size_t len, int64_t deadline_ms)
{
    struct cipc_msg m = {CIPC_MSG_MAGIC, type, 0, (uint32_t)len, 0, a, b};
    size_t total = sizeof(m) + len, sent = 0;
    int rc = 0;
    pthread_mutex_lock(&c->send_lock);
    while (sent < total) {
        if (__atomic_load_n(&c->dead, __ATOMIC_RELAXED)) {
            rc = REFIT_ECONN;
            break;
        }
        struct iovec iov[2];
        int n = 0;
        if (sent < sizeof(m))
            iov[n++] = (struct iovec){(char *)&m + sent, sizeof(m) - sent};
        size_t boff = sent > sizeof(m) ? sent - sizeof(m) : 0;
        if (len > boff)
            iov[n++] = (struct iovec){(char *)body + boff, len - boff};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t k = sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0) {
            sent += (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* The other side is not reading (stopped?): wait, but only
             * until the deadline. */
            int64_t left = deadline_ms - cipc_now_ms();
            if (left <= 0) {
                rc = REFIT_ETIMEDOUT;
                break;
            }
            struct pollfd pf = {c->fd, POLLOUT, 0};
            poll(&pf, 1, left > 100 ? 100 : (int)left);
            continue;
        }
        rc = REFIT_ECONN;
        break;
    }
    /* Half a message leaves the stream unusable: end it, so both sides
     * see the connection close instead of misreading what follows. */
    if (rc && sent > 0 && sent < total)
        shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&c->send_lock);
    return rc;
}

void cipc_ctl_wake(refit_tp_t *tp)
{
    if (tp->wake[1] >= 0) {
        ssize_t w = write(tp->wake[1], "x", 1);
        (void)w; /* a full pipe already wakes the thread */
    }
}

/* ------------------------------------------------------------------ */
/* Importer side: quiescing the regions of a peer */

static int req_uses(const struct refit_tp_req *r, uint64_t region)
{
    if (region == CIPC_ALL_REGIONS)
        return 1;
    for (size_t i = 0; i < r->n_regions; i++)
        if (r->regions[i] == region)
            return 1;
    return 0;
}

int cipc_peer_quiesce(refit_tp_t *tp, refit_tp_peer_t *p, uint64_t region, int why)
{
    for (refit_tp_rkey_t *k = p->rkeys; k; k = k->next)
        if ((region == CIPC_ALL_REGIONS || k->key.region_id == region) && !k->stale)
            k->stale = why;
    /* Requests whose copies are still running fail; they report it once
     * the copies are over (test() never reports a request the GPU still
     * works on).  Requests already complete keep their success: their
     * bytes moved while the region was registered. */
    for (struct refit_tp_req *r = tp->reqs; r; r = r->next) {
        if (r->peer != p || r->done || cipc_req_poll(r) || !req_uses(r, region))
            continue;
        if (why == REFIT_ESTALE)
            cipc_req_fail(r, why, "%s: region %" PRIu64 " of peer '%s' was deregistered during the "
                          "transfer", CIPC, region, p->name);
        else
            cipc_req_fail(r, why, "%s: peer '%s': %s", CIPC, p->name, p->why);
    }
    int64_t deadline = cipc_now_ms() + tp->timeout_ms;
    int quiet = 1;
    for (refit_tp_rkey_t *k = p->rkeys; k; k = k->next) {
        if (!(region == CIPC_ALL_REGIONS || k->key.region_id == region) || !k->ev_mask)
            continue;
        int rc = cipc_events_wait(k->ev, k->ev_mask, deadline);
        if (rc == 1) {
            k->ev_mask = 0;
            continue;
        }
        H->log(3, CIPC, "peer '%s', region %" PRIu64 ": copies still running after %" PRId64 " ms%s%s; "
               "the mapping stays open and the owner is not told we stopped", p->name,
               k->key.region_id, tp->timeout_ms, rc < 0 ? ": " : "", rc < 0 ? "CUDA error" : "");
        quiet = 0;
    }
    if (!quiet)
        return 0;
    for (refit_tp_rkey_t *k = p->rkeys; k; k = k->next)
        if (region == CIPC_ALL_REGIONS || k->key.region_id == region) {
            if (k->map)
                cipc_map_put(tp, k->map);
            k->map = NULL;
            k->base = NULL; /* loopback keys too: nothing is reachable through it */
        }
    return 1;
}

/* Under tp->lock.  The connection failed: no more traffic on it. */
static void conn_dead(refit_tp_t *tp, struct cipc_conn *c, const char *why)
{
    if (c->dead)
        return;
    __atomic_store_n(&c->dead, 1, __ATOMIC_RELAXED);
    refit_tp_peer_t *p = c->peer;
    if (c->outgoing && p && !c->closing) {
        p->dead = 1;
        snprintf(p->why, sizeof(p->why), "control connection to pid %u lost (%s): the process "
                 "ended or closed its transport", p->addr.pid, why);
        /* A warning when it cut something off; a peer that ends between
         * transfers (the end of a job) is news only. */
        int busy = 0;
        for (struct refit_tp_req *r = tp->reqs; r && !busy; r = r->next)
            busy = r->peer == p && !cipc_req_poll(r);
        H->log(busy ? 2 : 1, CIPC, "peer '%s': %s", p->name, p->why);
        cipc_peer_quiesce(tp, p, CIPC_ALL_REGIONS, REFIT_ECONN);
    } else if (!c->outgoing && c->remote_name) {
        H->log(0, CIPC, "connection from '%s' (pid %u) ended: %s", c->remote_name, c->remote_pid, why);
    }
    conn_unlink(tp, c);
    pthread_cond_broadcast(&tp->cond);
}

/* ------------------------------------------------------------------ */
/* Owner side */

static int ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

/* Under tp->lock: is this key one of our live registrations?  The
 * connection becomes an opener of the region (it gets revokes). */
static int owner_check(refit_tp_t *tp, struct cipc_conn *c, const struct cipc_key *k)
{
    if (k->magic != CIPC_KEY_MAGIC || k->version != CIPC_VERSION || k->tp_id != tp->addr.tp_id)
        return REFIT_EPERM;
    struct refit_tp_region *r = tp->regions;
    while (r && r->key.region_id != k->region_id)
        r = r->next;
    if (!r)
        return k->region_id && k->region_id < tp->next_region_id ? REFIT_ESTALE : REFIT_EPERM;
    const struct cipc_key *o = &r->key;
    if (!ct_equal(o->secret, k->secret, sizeof(o->secret)) || o->alloc_off != k->alloc_off ||
        o->len != k->len || o->owner_ptr != k->owner_ptr || o->dev != k->dev ||
        memcmp(&o->handle, &k->handle, sizeof(o->handle)))
        return REFIT_EPERM;
    for (size_t i = 0; i < r->n_openers; i++)
        if (r->openers[i] == c->id)
            return 0;
    if (r->n_openers == r->cap_openers) {
        size_t nc = r->cap_openers ? 2 * r->cap_openers : 4;
        uint64_t *no = H->realloc(r->openers, nc * sizeof(*no));
        if (!no)
            return REFIT_ENOMEM;
        r->openers = no;
        r->cap_openers = nc;
    }
    r->openers[r->n_openers++] = c->id;
    return 0;
}

int cipc_revoke(refit_tp_t *tp, struct refit_tp_region *r)
{
    uint64_t seq = ++tp->revoke_seq;
    struct cipc_conn **w = r->n_openers ? H->calloc(r->n_openers, sizeof(*w)) : NULL;
    size_t n = 0;
    for (size_t i = 0; w && i < r->n_openers; i++) {
        struct cipc_conn *c = cipc_conn_find(tp, r->openers[i]);
        if (c && !c->dead) {
            c->refs++;
            w[n++] = c;
        }
    }
    if (r->n_openers && !w)
        H->log(3, CIPC, "out of memory: region %" PRIu64 " deregistered without revoking it at "
               "its %zu peer(s)", r->key.region_id, r->n_openers);
    pthread_mutex_unlock(&tp->lock);
    int64_t deadline = cipc_now_ms() + tp->timeout_ms;
    for (size_t i = 0; i < n; i++)
        if (cipc_conn_send(w[i], MSG_REVOKE, r->key.region_id, seq, NULL, 0, deadline)) {
            pthread_mutex_lock(&tp->lock);
            conn_dead(tp, w[i], "revoke could not be sent");
            pthread_mutex_unlock(&tp->lock);
        }
    pthread_mutex_lock(&tp->lock);
    struct timespec ts = cipc_abstime(deadline);
    for (;;) {
        size_t waiting = 0;
        for (size_t i = 0; i < n; i++)
            waiting += !w[i]->dead && w[i]->acked < seq;
        if (!waiting || cipc_now_ms() >= deadline)
            break;
        pthread_cond_timedwait(&tp->cond, &tp->lock, &ts);
    }
    int rc = 0;
    char names[512];
    size_t nl = 0;
    names[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (!w[i]->dead && w[i]->acked < seq) {
            if (nl < sizeof(names))
                nl += (size_t)snprintf(names + nl, sizeof(names) - nl, "%s'%s' (pid %u)", rc ? ", " : "",
                                       w[i]->remote_name ? w[i]->remote_name : "?", w[i]->remote_pid);
            rc = REFIT_ETIMEDOUT;
        }
        cipc_conn_put(tp, w[i]);
    }
    H->free(w);
    if (rc) {
        H->log(2, CIPC, "deregistration of region %" PRIu64 ": %s did not confirm within %" PRId64
               " ms that they stopped using it", r->key.region_id, names, tp->timeout_ms);
        return H->error_set(REFIT_ETIMEDOUT, "%s: region %" PRIu64 " deregistered, but peer %s did not "
                            "confirm within %" PRId64 " ms that it stopped using the memory: keep the "
                            "allocation until that process is gone", CIPC, r->key.region_id, names,
                            tp->timeout_ms);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Messages */

static void on_incoming(refit_tp_t *tp, struct cipc_conn *c, const struct cipc_msg *m,
                        const unsigned char *body)
{
    int64_t deadline = cipc_now_ms() + tp->timeout_ms;
    switch (m->type) {
    case MSG_HELLO: {
        char *name = H->alloc(m->len + 1 > 256 ? 256 : m->len + 1);
        pthread_mutex_lock(&tp->lock);
        c->remote_tp_id = m->a;
        c->remote_pid = (uint32_t)m->b;
        if (name) {
            size_t n = m->len < 255 ? m->len : 255;
            memcpy(name, body, n);
            name[n] = 0;
            H->free(c->remote_name);
            c->remote_name = name;
        }
        pthread_mutex_unlock(&tp->lock);
        cipc_conn_send(c, MSG_WELCOME, tp->addr.tp_id, 0, NULL, 0, deadline);
        return;
    }
    case MSG_CHECK: {
        struct cipc_key k;
        int64_t st = REFIT_EPROTO;
        if (m->len == sizeof(k)) {
            memcpy(&k, body, sizeof(k));
            pthread_mutex_lock(&tp->lock);
            st = owner_check(tp, c, &k);
            pthread_mutex_unlock(&tp->lock);
        }
        cipc_conn_send(c, MSG_CHECK_REPLY, m->a, (uint64_t)st, NULL, 0, deadline);
        return;
    }
    case MSG_ACK:
        pthread_mutex_lock(&tp->lock);
        if (m->a > c->acked)
            c->acked = m->a;
        pthread_cond_broadcast(&tp->cond);
        pthread_mutex_unlock(&tp->lock);
        return;
    case MSG_NOTIFY: {
        struct cipc_notice *n = H->alloc(sizeof(*n) + m->len);
        if (!n) {
            H->log(3, CIPC, "out of memory: a notification of %u bytes was lost", m->len);
            return;
        }
        n->next = NULL;
        n->len = m->len;
        memcpy(n->data, body, m->len);
        pthread_mutex_lock(&tp->lock);
        if (tp->nq_tail)
            tp->nq_tail->next = n;
        else
            tp->nq_head = n;
        tp->nq_tail = n;
        pthread_cond_broadcast(&tp->cond);
        pthread_mutex_unlock(&tp->lock);
        return;
    }
    default:
        pthread_mutex_lock(&tp->lock);
        conn_dead(tp, c, "unexpected message from a client");
        pthread_mutex_unlock(&tp->lock);
    }
}

static void on_outgoing(refit_tp_t *tp, struct cipc_conn *c, const struct cipc_msg *m)
{
    pthread_mutex_lock(&tp->lock);
    switch (m->type) {
    case MSG_WELCOME:
        c->welcomed = 1;
        c->welcome_id = m->a;
        break;
    case MSG_CHECK_REPLY:
        c->reply_seq = m->a;
        c->reply_status = (int64_t)m->b;
        break;
    case MSG_REVOKE: {
        refit_tp_peer_t *p = c->peer;
        int quiet = p ? cipc_peer_quiesce(tp, p, m->a, REFIT_ESTALE) : 1;
        pthread_mutex_unlock(&tp->lock);
        if (quiet)
            cipc_conn_send(c, MSG_ACK, m->b, 0, NULL, 0, cipc_now_ms() + tp->timeout_ms);
        return;
    }
    default:
        conn_dead(tp, c, "unexpected message from an owner");
    }
    pthread_cond_broadcast(&tp->cond);
    pthread_mutex_unlock(&tp->lock);
}

/* Read what the socket has and handle every whole message in it. */
static void conn_readable(refit_tp_t *tp, struct cipc_conn *c)
{
    for (;;) {
        if (c->dead)
            return;
        ssize_t k = recv(c->fd, c->rx + c->rx_len, c->rx_cap - c->rx_len, MSG_DONTWAIT);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (k <= 0) {
            pthread_mutex_lock(&tp->lock);
            conn_dead(tp, c, k == 0 ? "closed" : strerror(errno));
            pthread_mutex_unlock(&tp->lock);
            return;
        }
        c->rx_len += (size_t)k;
        size_t off = 0;
        while (!c->dead && c->rx_len - off >= sizeof(struct cipc_msg)) {
            struct cipc_msg m;
            memcpy(&m, c->rx + off, sizeof(m));
            if (m.magic != CIPC_MSG_MAGIC || m.len > CIPC_MAX_PAYLOAD) {
                pthread_mutex_lock(&tp->lock);
                conn_dead(tp, c, "malformed control message");
                pthread_mutex_unlock(&tp->lock);
                return;
            }
            if (c->rx_len - off < sizeof(m) + m.len)
                break;
            if (c->outgoing)
                on_outgoing(tp, c, &m);
            else
                on_incoming(tp, c, &m, c->rx + off + sizeof(m));
            off += sizeof(m) + m.len;
        }
        memmove(c->rx, c->rx + off, c->rx_len - off);
        c->rx_len -= off;
    }
}

static void accept_all(refit_tp_t *tp)
{
    for (;;) {
        int fd = accept4(tp->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                H->log(2, CIPC, "accept on the control socket: %s", strerror(errno));
            return;
        }
        struct cipc_conn *c = conn_new(tp, fd, 0);
        if (!c) {
            H->log(3, CIPC, "out of memory: a control connection was refused");
            close(fd);
            continue;
        }
        pthread_mutex_lock(&tp->lock);
        conn_link(tp, c);
        pthread_mutex_unlock(&tp->lock);
    }
}

static void *ctl_thread(void *arg)
{
    refit_tp_t *tp = arg;
    /* Revokes wait for our events and close mappings: both need our device. */
    cudaError_t e = cudaSetDevice(tp->dev);
    if (e != cudaSuccess)
        H->log(3, CIPC, "control thread: cudaSetDevice(%d): %s", tp->dev, cudaGetErrorString(e));
    struct pollfd *pf = NULL;
    struct cipc_conn **pc = NULL;
    size_t cap = 0;
    while (!tp->stop) {
        pthread_mutex_lock(&tp->lock);
        size_t n = 2;
        for (struct cipc_conn *c = tp->conns; c; c = c->next)
            n++;
        if (n > cap) {
            struct pollfd *npf = H->realloc(pf, n * sizeof(*npf));
            if (npf)
                pf = npf;
            struct cipc_conn **npc = H->realloc(pc, n * sizeof(*npc));
            if (npc)
                pc = npc;
            if (npf && npc)
                cap = n;
        }
        if (cap < 2) { /* out of memory: serve nothing this round */
            pthread_mutex_unlock(&tp->lock);
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
            continue;
        }
        pf[0] = (struct pollfd){tp->wake[0], POLLIN, 0};
        pf[1] = (struct pollfd){tp->listen_fd, POLLIN, 0};
        size_t k = 2;
        for (struct cipc_conn *c = tp->conns; c && k < cap; c = c->next)
            if (!c->dead) {
                c->refs++; /* kept while we poll it, whatever the other threads do */
                pc[k] = c;
                pf[k++] = (struct pollfd){c->fd, POLLIN, 0};
            }
        pthread_mutex_unlock(&tp->lock);
        int rc = poll(pf, (nfds_t)k, 1000);
        if (rc > 0 && (pf[0].revents & POLLIN)) {
            char buf[64];
            while (read(tp->wake[0], buf, sizeof(buf)) > 0) {
            }
        }
        if (rc > 0 && (pf[1].revents & POLLIN))
            accept_all(tp);
        for (size_t i = 2; i < k; i++)
            if (rc > 0 && pf[i].revents)
                conn_readable(tp, pc[i]);
        pthread_mutex_lock(&tp->lock);
        for (size_t i = 2; i < k; i++)
            cipc_conn_put(tp, pc[i]);
        pthread_mutex_unlock(&tp->lock);
    }
    H->free(pf);
    H->free(pc);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Start, stop, connect */

static socklen_t sock_addr(const struct cipc_addr *a, struct sockaddr_un *su)
{
    memset(su, 0, sizeof(*su));
    su->sun_family = AF_UNIX;
    if (a->sock_kind == 1) {
        /* Abstract namespace: a leading NUL, no file, gone with the process. */
        memcpy(su->sun_path + 1, a->sock, a->sock_len);
        return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + a->sock_len);
    }
    memcpy(su->sun_path, a->sock, a->sock_len);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + a->sock_len + 1);
}

int cipc_ctl_start(refit_tp_t *tp, const char *sock_dir)
{
    struct cipc_addr *a = &tp->addr;
    char name[sizeof(a->sock) + 1];
    int n;
    if (sock_dir && *sock_dir) {
        n = snprintf(name, sizeof(name), "%s/refit-cuda_ipc-%u-%016" PRIx64 ".sock", sock_dir, a->pid,
                     a->tp_id);
        a->sock_kind = 2;
    } else {
        n = snprintf(name, sizeof(name), "refit-cuda_ipc-%u-%016" PRIx64, a->pid, a->tp_id);
        a->sock_kind = 1;
    }
    if (n < 0 || (size_t)n >= sizeof(a->sock) - 1)
        return H->error_set(REFIT_ECONFIG, "%s: transport.cuda_ipc.socket_dir '%s' is too long for a "
                            "Unix socket path (%zu bytes at most with the file name)", CIPC,
                            sock_dir ? sock_dir : "", sizeof(a->sock) - 40);
    memcpy(a->sock, name, (size_t)n);
    a->sock_len = (uint8_t)n;
    if (pipe2(tp->wake, O_CLOEXEC | O_NONBLOCK))
        return H->error_set(REFIT_EIO, "%s: pipe: %s", CIPC, strerror(errno));
    tp->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (tp->listen_fd < 0)
        return H->error_set(REFIT_EIO, "%s: socket(AF_UNIX): %s", CIPC, strerror(errno));
    struct sockaddr_un su;
    socklen_t sl = sock_addr(a, &su);
    if (bind(tp->listen_fd, (struct sockaddr *)&su, sl) || listen(tp->listen_fd, 128))
        return H->error_set(REFIT_EIO, "%s: control socket %s%s: %s", CIPC, a->sock_kind == 1 ? "@" : "",
                            name, strerror(errno));
    if (a->sock_kind == 2) {
        tp->sock_path = H->alloc((size_t)n + 1);
        if (tp->sock_path)
            memcpy(tp->sock_path, name, (size_t)n + 1);
    }
    int e = pthread_create(&tp->thread, NULL, ctl_thread, tp);
    if (e)
        return H->error_set(REFIT_EIO, "%s: control thread: %s", CIPC, strerror(e));
    tp->thread_on = 1;
    return 0;
}

void cipc_ctl_stop(refit_tp_t *tp)
{
    if (tp->thread_on) {
        tp->stop = 1;
        cipc_ctl_wake(tp);
        pthread_join(tp->thread, NULL);
        tp->thread_on = 0;
    }
    pthread_mutex_lock(&tp->lock);
    while (tp->conns) {
        struct cipc_conn *c = tp->conns;
        __atomic_store_n(&c->dead, 1, __ATOMIC_RELAXED);
        conn_unlink(tp, c);
    }
    pthread_mutex_unlock(&tp->lock);
    if (tp->listen_fd >= 0)
        close(tp->listen_fd);
    tp->listen_fd = -1;
    if (tp->sock_path)
        unlink(tp->sock_path);
    H->free(tp->sock_path);
    tp->sock_path = NULL;
    for (int i = 0; i < 2; i++)
        if (tp->wake[i] >= 0)
            close(tp->wake[i]);
    tp->wake[0] = tp->wake[1] = -1;
}

static int sock_connect(refit_tp_t *tp, refit_tp_peer_t *p, int64_t deadline, int *out)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return H->error_set(REFIT_EIO, "%s: socket(AF_UNIX): %s", CIPC, strerror(errno));
    struct sockaddr_un su;
    socklen_t sl = sock_addr(&p->addr, &su);
    for (;;) {
        if (connect(fd, (struct sockaddr *)&su, sl) == 0)
            break;
        /* A full backlog answers EAGAIN on a non-blocking Unix socket. */
        if ((errno == EAGAIN || errno == EINTR) && cipc_now_ms() < deadline) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        int err = errno;
        close(fd);
        return H->error_set(err == EAGAIN ? REFIT_ETIMEDOUT : REFIT_ECONN,
                            "%s: cannot reach the control socket %s%.*s of peer '%s' (pid %u on %s): %s%s",
                            CIPC, p->addr.sock_kind == 1 ? "@" : "", (int)p->addr.sock_len, p->addr.sock,
                            p->name, p->addr.pid, p->addr.host, strerror(err),
                            p->addr.sock_kind == 1
                                ? " (abstract sockets are per network namespace: processes in different "
                                  "containers need transport.cuda_ipc.socket_dir on a shared directory)"
                                : "");
    }
    (void)tp;
    *out = fd;
    return 0;
}

int cipc_ctl_connect(refit_tp_t *tp, refit_tp_peer_t *p)
{
    int64_t deadline = cipc_now_ms() + tp->timeout_ms;
    int fd = -1;
    int rc = sock_connect(tp, p, deadline, &fd);
    if (rc)
        return rc;
    struct cipc_conn *c = conn_new(tp, fd, 1);
    if (!c) {
        close(fd);
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    }
    c->peer = p;
    c->refs = 2; /* the list's and the peer's */
    p->conn = c;
    rc = cipc_conn_send(c, MSG_HELLO, tp->addr.tp_id, tp->addr.pid, tp->name, strlen(tp->name), deadline);
    pthread_mutex_lock(&tp->lock);
    conn_link(tp, c);
    cipc_ctl_wake(tp);
    struct timespec ts = cipc_abstime(deadline);
    while (!rc && !c->welcomed && !c->dead && cipc_now_ms() < deadline)
        pthread_cond_timedwait(&tp->cond, &tp->lock, &ts);
    int welcomed = c->welcomed, dead = c->dead;
    uint64_t wid = c->welcome_id;
    pthread_mutex_unlock(&tp->lock);
    if (rc || dead)
        return H->error_set(REFIT_ECONN, "%s: peer '%s' (pid %u) closed its control connection during "
                            "the handshake", CIPC, p->name, p->addr.pid);
    if (!welcomed)
        return H->error_set(REFIT_ETIMEDOUT, "%s: peer '%s' (pid %u) did not answer on its control "
                            "socket within %" PRId64 " ms", CIPC, p->name, p->addr.pid, tp->timeout_ms);
    if (wid != p->addr.tp_id)
        return H->error_set(REFIT_EPROTO, "%s: the control socket of peer '%s' belongs to another "
                            "transport (%016" PRIx64 ", the address says %016" PRIx64 ")", CIPC, p->name,
                            wid, p->addr.tp_id);
    return 0;
}
