/* tp_common.c — the request, notification, revoke-protocol and progress
 * thread code of the ucx and ofi plugins (tp_common.h says why it is
 * compiled into each of them rather than linked). */
#include "tp_common.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "refit/status.h"
#include "tp_req_fail.h"
#include "tp_strdup.h"

static const struct refit_host *H;

void rtp_load(const struct refit_host *host)
{
    H = host;
}

int64_t rtp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

RTP_DEFINE_STRDUP(rtp_strdup)

/* ------------------------------------------------------------------ */
/* Setup, teardown */

void rtp_core_init(struct rtp_core *c, refit_tp_t *tp, const struct rtp_ops *ops,
                   const char *plugin, int64_t timeout_ms)
{
    c->ops = ops;
    c->tp = tp;
    c->plugin = plugin;
    c->timeout_ms = timeout_ms;
    c->stop_pipe[0] = c->stop_pipe[1] = -1;
    c->nq.max = 1024;
    c->nq.max_bytes = 16u << 20;
    pthread_mutex_init(&c->lock, NULL);
    /* Unique enough among the processes of one job: it only has to tell
     * the owners of our peers apart. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c->id = ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
            (uint64_t)(uintptr_t)tp;
}

void rtp_watchers_close(struct rtp_core *c, void (*close_watcher)(refit_tp_t *tp, struct rtp_watcher *w))
{
    while (c->watchers) {
        struct rtp_watcher *w = c->watchers;
        c->watchers = w->next;
        if (close_watcher)
            close_watcher(c->tp, w);
        H->free(w->addr);
        H->free(w);
    }
}

void rtp_core_fini(struct rtp_core *c, void (*close_watcher)(refit_tp_t *tp, struct rtp_watcher *w))
{
    /* Closing a watcher's endpoint progresses the library, which may
     * still complete operations into requests: they go after. */
    rtp_watchers_close(c, close_watcher);
    while (c->acks) {
        struct rtp_ack *k = c->acks;
        c->acks = k->next;
        H->free(k);
    }
    /* Outstanding requests fail; fini frees every request, so the
     * caller's handles are invalid afterwards. */
    while (c->reqs)
        rtp_req_unlink_free(c, c->reqs);
    for (struct rtp_notice *n; (n = rtp_nq_take(&c->nq));)
        H->free(n);
    pthread_mutex_destroy(&c->lock);
}

/* ------------------------------------------------------------------ */
/* Progress thread and lock */

void rtp_lock(struct rtp_core *c)
{
    __atomic_add_fetch(&c->want_lock, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&c->lock);
    __atomic_sub_fetch(&c->want_lock, 1, __ATOMIC_RELAXED);
}

void rtp_unlock(struct rtp_core *c)
{
    pthread_mutex_unlock(&c->lock);
}

/* Serves the peers (a READ of our memory over an emulated or manually
 * progressed transport needs our progress) while the caller is elsewhere. */
static void *progress_thread(void *arg)
{
    struct rtp_core *c = arg;
    while (!c->stop) {
        pthread_mutex_lock(&c->lock);
        /* One round per hold while the caller waits for the lock: a
         * dereg() must get in between the pieces of a large READ we serve,
         * not after all of it. */
        size_t n = c->ops->progress(c->tp, __atomic_load_n(&c->want_lock, __ATOMIC_RELAXED));
        int may_sleep = !n && (!c->ops->arm || c->ops->arm(c->tp));
        pthread_mutex_unlock(&c->lock);
        if (__atomic_load_n(&c->want_lock, __ATOMIC_RELAXED))
            sched_yield();
        if (may_sleep)
            c->ops->idle(c->tp, c->stop_pipe[0]);
    }
    return NULL;
}

int rtp_thread_start(struct rtp_core *c)
{
    if (pipe(c->stop_pipe)) {
        c->stop_pipe[0] = c->stop_pipe[1] = -1;
        return H->error_set(REFIT_EIO, "%s: pipe: %s", c->plugin, strerror(errno));
    }
    int e = pthread_create(&c->thread, NULL, progress_thread, c);
    if (e)
        return H->error_set(REFIT_EIO, "%s: progress thread: %s", c->plugin, strerror(e));
    c->thread_on = 1;
    return 0;
}

void rtp_thread_stop(struct rtp_core *c)
{
    if (c->thread_on) {
        c->stop = 1;
        ssize_t w = write(c->stop_pipe[1], "x", 1);
        (void)w;
        pthread_join(c->thread, NULL);
        c->thread_on = 0;
    }
    if (c->stop_pipe[0] >= 0) {
        close(c->stop_pipe[0]);
        close(c->stop_pipe[1]);
        c->stop_pipe[0] = c->stop_pipe[1] = -1;
    }
}

int rtp_spin(struct rtp_core *c, const size_t *count, const int *failed, int64_t timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : rtp_now_ms() + timeout_ms;
    unsigned idle = 0;
    while (*count && !(failed && *failed)) {
        if (c->ops->progress(c->tp, 0)) {
            idle = 0;
            continue;
        }
        if (++idle % 256 == 0) {
            if (rtp_now_ms() >= deadline)
                return REFIT_ETIMEDOUT;
            /* Two processes often share few cores here: let the peer run. */
            sched_yield();
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Requests */

struct refit_tp_req *rtp_req_new(struct rtp_core *c, refit_tp_peer_t *p, size_t ext_size)
{
    struct refit_tp_req *r = H->calloc(1, sizeof(*r) + ext_size);
    if (!r)
        return NULL;
    r->tp = c->tp;
    r->peer = p;
    r->next = c->reqs;
    if (c->reqs)
        c->reqs->prev = r;
    c->reqs = r;
    return r;
}

RTP_DEFINE_REQ_FAIL(rtp_req_fail)

void rtp_req_unlink_free(struct rtp_core *c, struct refit_tp_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    H->free(r->regions);
    H->free(r->locals);
    H->free(r);
}

/* Few per batch: descriptors of one region come together, so only the
 * last distinct ones need comparing. */
int rtp_req_note_region(struct refit_tp_req *r, uint64_t region)
{
    size_t j = r->n_regions;
    while (j > 0 && r->regions[j - 1] != region)
        j--;
    if (j)
        return 0;
    if ((r->n_regions & (r->n_regions - 1)) == 0) { /* 0, 1, 2, 4, ...: grow */
        uint64_t *g = H->realloc(r->regions, (r->n_regions ? 2 * r->n_regions : 1) * sizeof(*g));
        if (!g)
            return REFIT_ENOMEM;
        r->regions = g;
    }
    r->regions[r->n_regions++] = region;
    return 0;
}

int rtp_req_note_local(struct refit_tp_req *r, const void *local)
{
    size_t j = r->n_locals;
    while (j > 0 && r->locals[j - 1] != local)
        j--;
    if (j)
        return 0;
    if ((r->n_locals & (r->n_locals - 1)) == 0) {
        const void **g = H->realloc(r->locals, (r->n_locals ? 2 * r->n_locals : 1) * sizeof(*g));
        if (!g)
            return REFIT_ENOMEM;
        r->locals = g;
    }
    r->locals[r->n_locals++] = local;
    return 0;
}

static size_t local_users(struct rtp_core *c, const void *local)
{
    size_t n = 0;
    for (struct refit_tp_req *r = c->reqs; r; r = r->next)
        if (r->pending)
            for (size_t i = 0; i < r->n_locals; i++)
                n += r->locals[i] == local;
    return n;
}

int rtp_local_quiesce(struct rtp_core *c, const void *local)
{
    int64_t deadline = rtp_now_ms() + c->timeout_ms;
    unsigned idle = 0;
    size_t n;
    while ((n = local_users(c, local)) > 0) {
        if (c->ops->progress(c->tp, 0)) {
            idle = 0;
            continue;
        }
        if (++idle % 256 == 0) {
            if (rtp_now_ms() >= deadline)
                return H->error_set(REFIT_ETIMEDOUT, "%s: dereg: %zu requests of this process still move "
                                    "data into or out of the region after %" PRId64 " ms (a peer presumed "
                                    "gone may still answer them): the region stays registered and its "
                                    "memory must outlive the transport", c->plugin, n, c->timeout_ms);
            sched_yield();
        }
    }
    return 0;
}

int rtp_req_result(struct refit_tp_req *r)
{
    if (r->status)
        return H->error_set(r->status, "%s", r->msg);
    return r->pending ? REFIT_EAGAIN : 0;
}

void rtp_req_release(struct rtp_core *c, struct refit_tp_req *r)
{
    /* Operations still in flight complete into the request later; it is
     * freed by the last of them (or by fini). */
    if (r->pending) {
        r->released = 1;
        return;
    }
    rtp_req_unlink_free(c, r);
}

void rtp_reqs_fail_region(struct rtp_core *c, refit_tp_peer_t *p, const char *peer_name,
                          uint64_t region)
{
    for (struct refit_tp_req *r = c->reqs; r; r = r->next) {
        if (r->peer != p || !r->pending)
            continue;
        for (size_t i = 0; i < r->n_regions; i++)
            if (r->regions[i] == region)
                rtp_req_fail(r, REFIT_ESTALE, "%s: region %" PRIu64 " of peer '%s' was "
                             "deregistered during the transfer", c->plugin, region, peer_name);
    }
}

void rtp_forget_peer(struct rtp_core *c, refit_tp_peer_t *p, const char *peer_name,
                     int fail_completed)
{
    for (struct refit_tp_req *r = c->reqs; r; r = r->next)
        if (r->peer == p) {
            if (r->pending || fail_completed)
                rtp_req_fail(r, REFIT_ECANCELED, "%s: peer '%s' disconnected", c->plugin, peer_name);
            r->peer = NULL;
        }
    for (struct rtp_ack **pk = &c->acks; *pk;) {
        if ((*pk)->peer == p) {
            struct rtp_ack *k = *pk;
            *pk = k->next;
            H->free(k);
        } else {
            pk = &(*pk)->next;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Notifications */

static void log_drop(struct rtp_core *c, const char *why, const char *from, size_t len, uint64_t k)
{
    if ((k & (k - 1)) == 0)
        H->log(2, c->plugin, "dropped a notification of %zu bytes from '%s': %s (%" PRIu64
               " dropped so far)", len, from, why, k);
}

void rtp_notice_push(struct rtp_core *c, const char *from, const void *data, size_t len)
{
    char why[128];
    uint64_t k = rtp_nq_refuse(&c->nq, len, why, sizeof(why));
    if (k) {
        log_drop(c, why, from, len, k);
        return;
    }
    struct rtp_notice *n = H->alloc(sizeof(*n) + len);
    if (!n) {
        log_drop(c, "out of memory", from, len, ++c->nq.dropped_full);
        return;
    }
    n->len = len;
    snprintf(n->from, sizeof(n->from), "%s", from);
    if (len)
        memcpy(n->data, data, len);
    rtp_nq_append(&c->nq, n);
}

void rtp_notice_drop_big(struct rtp_core *c, const char *from, size_t len)
{
    log_drop(c, "larger than max_notify_len", from, len, ++c->nq.dropped_big);
}

int rtp_poll_notify(struct rtp_core *c, void *buf, size_t cap, size_t *len, char *from,
                    size_t from_cap, int64_t timeout_ms)
{
    if (!len || (!buf && cap))
        return H->error_set(REFIT_EINVAL, "%s: poll_notify without a buffer", c->plugin);
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : rtp_now_ms() + timeout_ms;
    unsigned idle = 0;
    for (;;) {
        if (!c->nq.head)
            c->ops->progress(c->tp, 0);
        struct rtp_notice *n = rtp_nq_take(&c->nq);
        if (n) {
            *len = n->len;
            int rc = 0;
            uint64_t k = rtp_nq_count_out(&c->nq, n, cap);
            if (k) {
                log_drop(c, "larger than the poller's buffer", n->from, n->len, k);
                rc = H->error_set(REFIT_ETOOBIG, "%s: notification of %zu bytes from '%s', buffer "
                                  "of %zu: dropped", c->plugin, n->len, n->from, cap);
            } else {
                rtp_notice_copy(n, buf, from, from_cap);
            }
            H->free(n);
            return rc;
        }
        if (++idle % 64 == 0 || timeout_ms == 0) {
            if (rtp_now_ms() >= deadline)
                return H->error_set(REFIT_ETIMEDOUT, "%s: no notification within %" PRId64 " ms",
                                    c->plugin, timeout_ms);
            sched_yield();
        }
    }
}

int rtp_notify_stats(struct rtp_core *c, struct refit_tp_notify_stats *out)
{
    if (!out || out->size < sizeof(size_t))
        return H->error_set(REFIT_EINVAL, "%s: notify_stats without a size", c->plugin);
    rtp_nq_stats(&c->nq, out);
    return 0;
}

int rtp_notify_configure(struct rtp_core *c, const struct refit_cfg_view *cfg)
{
    int64_t n = 1024;
    uint64_t b = 16u << 20;
    int rc = 0;
    if (cfg && cfg->cfg) {
        rc = H->cfg_int(cfg, "notify_queue", &n);
        if (!rc)
            rc = H->cfg_size(cfg, "notify_queue_bytes", &b);
    }
    c->nq.max = (uint64_t)n;
    c->nq.max_bytes = b;
    return rc;
}

int rtp_caps(const char *plugin, uint32_t memtypes, uint64_t max_notify_len,
             struct refit_tp_caps *out)
{
    if (!out)
        return H->error_set(REFIT_EINVAL, "%s: caps without tp", plugin);
    size_t sz = out->size && out->size < sizeof(*out) ? out->size : sizeof(*out);
    struct refit_tp_caps caps = {0};
    caps.size = sz;
    caps.memtypes = memtypes;
    caps.max_desc_per_post = 0;
    caps.notify = 1;
    caps.max_notify_len = (uint32_t)max_notify_len;
    caps.max_region_len = 0;
    memcpy(out, &caps, sz);
    return 0;
}

int rtp_address_pack(const struct rtp_core *c, uint32_t magic, uint16_t version, const void *addr,
                     size_t addr_len, void *buf, size_t *len)
{
    if (!len)
        return H->error_set(REFIT_EINVAL, "%s: address without tp", c->plugin);
    size_t need = sizeof(struct rtp_addr_hdr) + addr_len;
    if (!buf) {
        *len = need;
        return 0;
    }
    if (*len < need) {
        *len = need;
        return H->error_set(REFIT_ERANGE, "%s: address needs %zu bytes", c->plugin, need);
    }
    struct rtp_addr_hdr h = {magic, version, 0, c->id, addr_len};
    memcpy(buf, &h, sizeof(h));
    memcpy((char *)buf + sizeof(h), addr, addr_len);
    *len = need;
    return 0;
}

int rtp_address_parse(const struct rtp_core *c, uint32_t magic, uint16_t version, size_t max_len,
                      const char *what, const void *blob, size_t len, const char *who,
                      struct rtp_addr_hdr *h)
{
    if (len < sizeof(*h))
        return H->error_set(REFIT_EPROTO, "%s: address of peer '%s' is %zu bytes, too short",
                            c->plugin, who, len);
    memcpy(h, blob, sizeof(*h));
    if (h->magic != magic || h->version != version || !h->addr_len ||
        h->addr_len != len - sizeof(*h) || h->addr_len > max_len)
        return H->error_set(REFIT_EPROTO, "%s: address of peer '%s' is not %s (magic %#x, "
                            "version %u, %zu bytes)", c->plugin, who, what, h->magic, h->version, len);
    return 0;
}

void rtp_ctrl_head(const struct rtp_core *c, void *m, uint32_t type, size_t len, uint64_t a, uint64_t b)
{
    struct rtp_ctrl h = {type, (uint32_t)len, c->id, a, b};
    memcpy(m, &h, sizeof(h));
}

int rtp_rkey_copy(const struct rtp_core *c, const void *key, size_t n, void *buf, size_t *len)
{
    if (!key || !len)
        return H->error_set(REFIT_EINVAL, "%s: pack_rkey without a region", c->plugin);
    if (!buf) {
        *len = n;
        return 0;
    }
    if (*len < n) {
        *len = n;
        return H->error_set(REFIT_ERANGE, "%s: remote key needs %zu bytes", c->plugin, n);
    }
    memcpy(buf, key, n);
    *len = n;
    return 0;
}

int rtp_rkey_parse(const struct rtp_core *c, uint32_t magic, uint16_t version, int word_is_tail, const void *buf,
                   size_t len, const char *who, struct rtp_rkey_hdr *h)
{
    if (len < sizeof(*h))
        return H->error_set(REFIT_EPROTO, "%s: remote key from peer '%s' is %zu bytes, too short", c->plugin, who,
                            len);
    memcpy(h, buf, sizeof(*h));
    size_t tail = len - sizeof(*h);
    int sized = word_is_tail ? h->word && h->word == tail : !tail;
    if (h->magic != magic || h->version != version || !sized || !h->len || h->base + h->len < h->base)
        return H->error_set(REFIT_EPROTO, "%s: remote key from peer '%s' is malformed (magic %#x, version %u, "
                            "%zu bytes)", c->plugin, who, h->magic, h->version, len);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The owner side of the protocol */

int rtp_watcher_rehello(struct rtp_core *c, uint64_t sender)
{
    for (struct rtp_watcher *w = c->watchers; w; w = w->next)
        if (w->id == sender) {
            w->refs++;
            w->dead = 0;
            return 1;
        }
    return 0;
}

struct rtp_watcher *rtp_watcher_find(struct rtp_core *c, uint64_t sender)
{
    for (struct rtp_watcher *w = c->watchers; w; w = w->next)
        if (w->id == sender)
            return w;
    return NULL;
}

struct rtp_watcher *rtp_watcher_add(struct rtp_core *c, uint64_t sender)
{
    struct rtp_watcher *w = H->calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->id = sender;
    w->refs = 1;
    w->next = c->watchers;
    c->watchers = w;
    return w;
}

void rtp_watcher_discard(struct rtp_core *c, struct rtp_watcher *w)
{
    for (struct rtp_watcher **pw = &c->watchers; *pw; pw = &(*pw)->next)
        if (*pw == w) {
            *pw = w->next;
            break;
        }
    H->free(w->addr);
    H->free(w);
}

void rtp_on_bye(struct rtp_core *c, uint64_t sender)
{
    for (struct rtp_watcher *w = c->watchers; w; w = w->next)
        if (w->id == sender && --w->refs <= 0)
            w->dead = 1;
}

void rtp_on_ack(struct rtp_core *c, uint64_t sender, uint64_t seq)
{
    for (struct rtp_watcher *w = c->watchers; w; w = w->next)
        if (w->id == sender && seq > w->acked)
            w->acked = seq;
}

static int awaited(const struct rtp_watcher *w, uint64_t seq)
{
    return !w->dead && w->reachable && w->acked < seq;
}

void rtp_revoke_all(struct rtp_core *c, uint64_t region)
{
    uint64_t seq = ++c->revoke_seq;
    int waiting = 0;
    for (struct rtp_watcher *w = c->watchers; w; w = w->next) {
        if (w->dead || !w->reachable)
            continue;
        if (c->ops->send_revoke(c->tp, w, region, seq) == 0)
            waiting = 1;
        else
            w->dead = 1;
    }
    int64_t deadline = rtp_now_ms() + c->timeout_ms;
    unsigned idle = 0;
    while (waiting) {
        waiting = 0;
        for (struct rtp_watcher *w = c->watchers; w && !waiting; w = w->next)
            waiting = awaited(w, seq);
        if (!waiting)
            break;
        if (c->ops->progress(c->tp, 0)) {
            idle = 0;
            continue;
        }
        if (++idle % 256 == 0) {
            if (rtp_now_ms() >= deadline) {
                for (struct rtp_watcher *w = c->watchers; w; w = w->next)
                    if (awaited(w, seq)) {
                        H->log(2, c->plugin, "deregistration of region %" PRIu64 ": a peer did "
                               "not acknowledge within %" PRId64 " ms; it is no longer waited for",
                               region, c->timeout_ms);
                        w->dead = 1; /* a later revoke does not wait for it again */
                    }
                break;
            }
            sched_yield();
        }
    }
}

/* ------------------------------------------------------------------ */
/* The requester side */

void rtp_ack_queue(struct rtp_core *c, refit_tp_peer_t *p, uint64_t seq)
{
    struct rtp_ack *k = H->calloc(1, sizeof(*k));
    if (!k)
        return; /* the owner's wait times out instead */
    k->peer = p;
    k->seq = seq;
    k->next = c->acks;
    c->acks = k;
}

size_t rtp_acks_run(struct rtp_core *c)
{
    size_t n = 0;
    while (c->acks) {
        struct rtp_ack *k = c->acks;
        c->acks = k->next;
        c->ops->ack(c->tp, k->peer, k->seq);
        H->free(k);
        n++;
    }
    return n;
}
