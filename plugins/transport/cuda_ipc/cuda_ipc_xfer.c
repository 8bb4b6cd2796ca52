/* cuda_ipc_xfer.c — transfers of the cuda_ipc transport (descriptors
 * checked, then copies on the transport's streams and the events that
 * track them: the request's, each key's and each peer's last use) and
 * notifications (sent after every WRITE to that peer has landed). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cuda_ipc.h"

/* ------------------------------------------------------------------ */
/* Transfers */

/* Under tp->lock: every descriptor is checked before any copy starts. */
static int check_desc(refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t i)
{
    if (d->op != REFIT_OP_READ && d->op != REFIT_OP_WRITE)
        return H->error_set(REFIT_EINVAL, "%s: descriptor %zu: unknown op %u", CIPC, i, d->op);
    if (!d->local || !d->remote)
        return H->error_set(REFIT_EINVAL, "%s: descriptor %zu: no local region or remote key", CIPC, i);
    const refit_tp_rkey_t *k = d->remote;
    if (k->peer != p)
        return H->error_set(REFIT_EINVAL, "%s: descriptor %zu: the remote key is not one of peer '%s'",
                            CIPC, i, p->name);
    if (k->stale == REFIT_ESTALE)
        return H->error_set(REFIT_ESTALE, "%s: descriptor %zu: region %" PRIu64 " of peer '%s' was "
                            "deregistered (stale key)", CIPC, i, k->key.region_id, p->name);
    if (k->stale || !k->base)
        return H->error_set(REFIT_ECONN, "%s: descriptor %zu: peer '%s': %s", CIPC, i, p->name,
                            p->why[0] ? p->why : "its regions are no longer reachable");
    if (d->local_off > d->local->len || d->len > d->local->len - d->local_off)
        return H->error_set(REFIT_ERANGE, "%s: descriptor %zu: local [%" PRIu64 ", +%" PRIu64 ") is "
                            "outside the region of %zu bytes", CIPC, i, d->local_off, d->len,
                            d->local->len);
    if (d->remote_off > k->key.len || d->len > k->key.len - d->remote_off)
        return H->error_set(REFIT_ERANGE, "%s: descriptor %zu: remote [%" PRIu64 ", +%" PRIu64 ") is "
                            "outside region %" PRIu64 " of peer '%s' (%" PRIu64 " bytes)", CIPC, i,
                            d->remote_off, d->len, k->key.region_id, p->name, k->key.len);
    return 0;
}

static int req_add_region(struct refit_tp_req *r, uint64_t id, size_t cap)
{
    if (!r->regions) {
        r->regions = H->alloc(cap * sizeof(*r->regions));
        if (!r->regions)
            return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    }
    r->regions[r->n_regions++] = id;
    return 0;
}

/* Enqueue the copies of one descriptor, split into chunks over the streams. */
static int enqueue(refit_tp_t *tp, const struct refit_tp_desc *d, size_t i, uint32_t *mask,
                   uint32_t *wmask)
{
    refit_tp_rkey_t *k = d->remote;
    char *local = (char *)d->local->ptr + d->local_off, *remote = k->base + d->remote_off;
    for (uint64_t off = 0; off < d->len;) {
        uint64_t n = d->len - off < tp->chunk ? d->len - off : tp->chunk;
        int s = (int)(tp->next_stream++ % (unsigned)tp->nstreams);
        void *dst = d->op == REFIT_OP_READ ? local + off : remote + off;
        const void *src = d->op == REFIT_OP_READ ? remote + off : local + off;
        cudaError_t e = tp->kernel_copy ? cipc_kernel_copy(dst, src, n, tp->streams[s], tp->copy_blocks)
                                        : cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, tp->streams[s]);
        if (e != cudaSuccess)
            return cipc_cuda_fail(REFIT_EIO, e, "descriptor %zu: copy of %" PRIu64 " bytes %s "
                                  "region %" PRIu64 " of peer '%s'", i, n,
                                  d->op == REFIT_OP_READ ? "from" : "to", k->key.region_id, k->peer->name);
        *mask |= 1u << s;
        k->post_mask |= 1u << s;
        if (d->op == REFIT_OP_WRITE)
            *wmask |= 1u << s;
        off += n;
    }
    return 0;
}

/* Record the events of a post: the request's, and the last use of each
 * key and of the peer (WRITEs) for revokes, releases and notify. */
static int record(refit_tp_t *tp, refit_tp_peer_t *p, struct refit_tp_req *r, const struct refit_tp_desc *d,
                  size_t n, uint32_t mask, uint32_t wmask, uint64_t seq)
{
    int rc = 0;
    for (int s = 0; s < tp->nstreams; s++) {
        if (!(mask & (1u << s)))
            continue;
        cudaError_t e = cudaEventRecord(r->ev[s], tp->streams[s]);
        if (e == cudaSuccess && (wmask & (1u << s)))
            e = cudaEventRecord(p->wev[s], tp->streams[s]);
        if (e != cudaSuccess && !rc)
            rc = cipc_cuda_fail(REFIT_EIO, e, "cudaEventRecord (stream %d)", s);
    }
    if (!rc) {
        r->ev_mask = mask;
        p->wev_mask |= wmask;
    }
    for (size_t i = 0; i < n; i++) {
        refit_tp_rkey_t *k = d[i].remote;
        if (k->post_mark != seq || !k->post_mask)
            continue;
        for (int s = 0; s < tp->nstreams; s++)
            if ((k->post_mask & (1u << s)) && cudaEventRecord(k->ev[s], tp->streams[s]) == cudaSuccess)
                k->ev_mask |= 1u << s;
        k->post_mask = 0;
    }
    return rc;
}

static int post_locked(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n,
                       struct refit_tp_req *r)
{
    if (p->dead)
        return H->error_set(REFIT_ECONN, "%s: peer '%s': %s", CIPC, p->name, p->why);
    for (size_t i = 0; i < n; i++) {
        int rc = check_desc(p, &d[i], i);
        if (rc)
            return rc;
    }
    uint64_t seq = ++tp->post_seq;
    for (size_t i = 0; i < n; i++) {
        refit_tp_rkey_t *k = d[i].remote;
        if (k->post_mark != seq) {
            k->post_mark = seq;
            k->post_mask = 0;
            int rc = req_add_region(r, k->key.region_id, n);
            if (rc)
                return rc;
        }
    }
    int rc = 0;
    uint32_t mask = 0, wmask = 0;
    for (size_t i = 0; i < n && !rc; i++)
        if (d[i].len)
            rc = enqueue(tp, &d[i], i, &mask, &wmask);
    /* Also after a failed enqueue: the copies that started are tracked by
     * the keys' events, so a revoke or release waits for them. */
    int rrc = record(tp, p, r, d, n, mask, wmask, seq);
    if (rc && r->ev_mask)
        cipc_events_wait(r->ev, r->ev_mask, cipc_now_ms() + tp->timeout_ms);
    return rc ? rc : rrc;
}

int cipc_post(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n,
                     refit_tp_req_t **out)
{
    if (!tp || !p || (n && !d) || !out)
        return H->error_set(REFIT_EINVAL, "%s: post without a peer, descriptors or out", CIPC);
    struct refit_tp_req *r = H->calloc(1, sizeof(*r));
    if (!r)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    r->peer = p;
    struct cipc_devguard g;
    int rc = cipc_dev_enter(tp, &g);
    if (rc) {
        H->free(r);
        return rc;
    }
    rc = cipc_events_create(tp, r->ev, "a request");
    if (!rc) {
        pthread_mutex_lock(&tp->lock);
        /* The control thread may not have read the end of the owner's
         * socket yet: look at it here, so that a post after the owner
         * died fails at once (its copies would still "succeed"). */
        if (!p->dead && p->conn && cipc_conn_hung_up(p->conn)) {
            p->dead = 1;
            snprintf(p->why, sizeof(p->why), "control connection to pid %u closed: the process ended or "
                     "closed its transport", p->addr.pid);
        }
        rc = post_locked(tp, p, d, n, r);
        if (!rc) {
            r->next = tp->reqs;
            if (tp->reqs)
                tp->reqs->prev = r;
            tp->reqs = r;
        }
        pthread_mutex_unlock(&tp->lock);
    }
    cipc_dev_leave(&g);
    if (rc) {
        cipc_events_destroy(tp, r->ev);
        H->free(r->regions);
        H->free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int cipc_progress(refit_tp_t *tp)
{
    (void)tp; /* copies progress on the GPU, the control channel on its thread */
    return 0;
}

int cipc_test(refit_tp_t *tp, refit_tp_req_t *r)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: test without a request", CIPC);
    pthread_mutex_lock(&tp->lock);
    int rc = 0;
    if (!cipc_req_poll(r))
        rc = REFIT_EAGAIN;
    else if (r->status)
        rc = H->error_set(r->status, "%s", r->msg);
    pthread_mutex_unlock(&tp->lock);
    return rc;
}

int cipc_wait(refit_tp_t *tp, refit_tp_req_t *r, int64_t timeout_ms)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: wait without a request", CIPC);
    if (timeout_ms < 0)
        timeout_ms = tp->timeout_ms;
    int64_t deadline = cipc_deadline_after(timeout_ms);
    unsigned spin = 0;
    for (;;) {
        int rc = cipc_test(tp, r);
        if (rc != REFIT_EAGAIN)
            return rc;
        if (cipc_now_ms() >= deadline)
            return H->error_set(REFIT_ETIMEDOUT, "%s: copies with peer '%s' still running on the GPU after "
                                "%" PRId64 " ms (device busy or hung)", CIPC,
                                r->peer ? r->peer->name : "?", timeout_ms);
        cipc_backoff(&spin);
    }
}

void cipc_req_free(refit_tp_t *tp, refit_tp_req_t *r)
{
    if (!tp || !r)
        return;
    pthread_mutex_lock(&tp->lock);
    if (r->prev)
        r->prev->next = r->next;
    else if (tp->reqs == r)
        tp->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    pthread_mutex_unlock(&tp->lock);
    /* Destroying an event whose work is pending is allowed: CUDA releases
     * it on completion, and the keys' events still track the copies. */
    cipc_events_destroy(tp, r->ev);
    H->free(r->regions);
    H->free(r);
}

/* ------------------------------------------------------------------ */
/* Notifications */

int cipc_notify(refit_tp_t *tp, refit_tp_peer_t *p, const void *msg, size_t len)
{
    if (!tp || !p || (len && !msg))
        return H->error_set(REFIT_EINVAL, "%s: notify without a peer or message", CIPC);
    if (len > tp->max_notify_len)
        return H->error_set(REFIT_ETOOBIG, "%s: notification of %zu bytes, at most %" PRIu64, CIPC, len,
                            tp->max_notify_len);
    if (p->dead)
        return H->error_set(REFIT_ECONN, "%s: peer '%s': %s", CIPC, p->name, p->why);
    int64_t deadline = cipc_now_ms() + tp->timeout_ms;
    /* Every WRITE this process posted to p lands before the message
     * leaves: push mode reads the weights once it has it. */
    if (p->wev_mask) {
        int rc = cipc_events_wait(p->wev, p->wev_mask, deadline);
        if (rc < 0)
            return H->error_push(rc, "notify peer '%s'", p->name);
        if (rc == 0)
            return H->error_set(REFIT_ETIMEDOUT, "%s: WRITEs to peer '%s' still running after %" PRId64
                                " ms; notification not sent", CIPC, p->name, tp->timeout_ms);
    }
    int rc = cipc_conn_send(p->conn, MSG_NOTIFY, 0, 0, msg, len, deadline);
    if (rc)
        return H->error_set(rc, "%s: notification to peer '%s' (pid %u) not sent: %s", CIPC, p->name,
                            p->addr.pid, rc == REFIT_ETIMEDOUT ? "it does not read its socket" :
                            "its control connection is closed");
    return 0;
}

int cipc_poll_notify(refit_tp_t *tp, void *buf, size_t cap, size_t *len, int64_t timeout_ms)
{
    if (!tp || !buf || !len)
        return H->error_set(REFIT_EINVAL, "%s: poll_notify without a buffer", CIPC);
    int64_t deadline = cipc_deadline_after(timeout_ms);
    struct timespec ts = cipc_abstime(deadline);
    pthread_mutex_lock(&tp->lock);
    while (!tp->nq_head && cipc_now_ms() < deadline)
        pthread_cond_timedwait(&tp->cond, &tp->lock, &ts);
    struct cipc_notice *n = tp->nq_head;
    if (!n) {
        pthread_mutex_unlock(&tp->lock);
        return H->error_set(REFIT_ETIMEDOUT, "%s: no notification within %" PRId64 " ms", CIPC,
                            timeout_ms);
    }
    if (n->len > cap) {
        *len = n->len;
        pthread_mutex_unlock(&tp->lock);
        return H->error_set(REFIT_ETOOBIG, "%s: notification of %zu bytes, buffer of %zu", CIPC, n->len, cap);
    }
    tp->nq_head = n->next;
    if (!tp->nq_head)
        tp->nq_tail = NULL;
    pthread_mutex_unlock(&tp->lock);
    memcpy(buf, n->data, n->len);
    *len = n->len;
    H->free(n);
    return 0;
}
