/* cuda_ipc_peer.c — the importer's side of the cuda_ipc transport: peers
 * (connect, disconnect, teardown) and their remote keys (checked with the
 * owner before anything is mapped, then mapped once; cuda_ipc.c's header
 * comment has the design, cuda_ipc.h the locking). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cuda_ipc.h"

/* ------------------------------------------------------------------ */
/* Peers */

/* Under tp->lock: our copies with p end, its mappings close, the
 * connection hangs up (the owner then stops waiting for us). */
void cipc_peer_teardown(refit_tp_t *tp, refit_tp_peer_t *p)
{
    for (refit_tp_peer_t **pp = &tp->peers; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    if (!p->dead)
        snprintf(p->why, sizeof(p->why), "disconnected");
    cipc_peer_quiesce(tp, p, CIPC_ALL_REGIONS, REFIT_ECANCELED);
    for (struct refit_tp_req *r = tp->reqs; r; r = r->next)
        if (r->peer == p)
            r->peer = NULL;
    for (refit_tp_rkey_t *k = p->rkeys; k; k = k->next)
        k->peer = NULL; /* release_rkey frees it alone */
    struct cipc_conn *c = p->conn;
    if (c) {
        c->closing = 1;
        c->peer = NULL;
        shutdown(c->fd, SHUT_RDWR); /* the control thread sees the end and unlinks it */
        cipc_conn_put(tp, c);
        cipc_ctl_wake(tp);
    }
    cipc_events_destroy(tp, p->wev);
    H->free(p->name);
    H->free(p);
}

static int same_host(const struct cipc_addr *a, const struct cipc_addr *b)
{
    if (a->boot_id[0] && b->boot_id[0])
        return !strcmp(a->boot_id, b->boot_id);
    return !strcmp(a->host, b->host);
}

int cipc_connect(refit_tp_t *tp, const void *addr, size_t len, const char *peer_name,
                        refit_tp_peer_t **out)
{
    if (!tp || !addr || !out)
        return H->error_set(REFIT_EINVAL, "%s: connect without an address", CIPC);
    const char *who = peer_name ? peer_name : "peer";
    struct cipc_addr a;
    if (len != sizeof(a))
        return H->error_set(REFIT_EPROTO, "%s: address of peer '%s' is %zu bytes, expected %zu "
                            "(not a cuda_ipc address?)", CIPC, who, len, sizeof(a));
    memcpy(&a, addr, sizeof(a));
    if (a.magic != CIPC_ADDR_MAGIC || a.version != CIPC_VERSION || (a.sock_kind != 1 && a.sock_kind != 2) ||
        !a.sock_len || a.sock_len >= sizeof(a.sock))
        return H->error_set(REFIT_EPROTO, "%s: address of peer '%s' is malformed (magic %#x, version %u)",
                            CIPC, who, a.magic, a.version);
    a.boot_id[sizeof(a.boot_id) - 1] = 0;
    a.host[sizeof(a.host) - 1] = 0;
    a.bus_id[sizeof(a.bus_id) - 1] = 0;
    if (!same_host(&tp->addr, &a))
        return H->error_set(REFIT_ENOTSUP, "%s: peer '%s' runs on host '%s' (boot id %s), this process "
                            "('%s') on host '%s' (boot id %s): cuda_ipc connects processes of one host "
                            "only; use ucx or ofi between hosts", CIPC, who, a.host,
                            a.boot_id[0] ? a.boot_id : "?", tp->name, tp->addr.host,
                            tp->addr.boot_id[0] ? tp->addr.boot_id : "?");
    refit_tp_peer_t *p = H->calloc(1, sizeof(*p));
    if (!p || !(p->name = cipc_strdup(who))) {
        H->free(p);
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    }
    p->addr = a;
    p->loopback = a.proc_nonce == cipc_proc_nonce && a.pid == (uint32_t)getpid();
    struct cipc_devguard g;
    int rc = cipc_dev_enter(tp, &g);
    if (!rc) {
        rc = cipc_events_create(tp, p->wev, "a peer");
        cipc_dev_leave(&g);
    }
    if (!rc)
        rc = cipc_ctl_connect(tp, p);
    pthread_mutex_lock(&tp->lock);
    p->next = tp->peers;
    tp->peers = p;
    if (rc)
        cipc_peer_teardown(tp, p);
    pthread_mutex_unlock(&tp->lock);
    if (rc)
        return rc;
    H->log(0, CIPC, "%s: connected to '%s' (pid %u, device %s%s)", tp->name, who, a.pid, a.bus_id,
           p->loopback ? ", this process" : "");
    *out = p;
    return 0;
}

void cipc_disconnect(refit_tp_t *tp, refit_tp_peer_t *p)
{
    if (!tp || !p)
        return;
    pthread_mutex_lock(&tp->lock);
    cipc_peer_teardown(tp, p);
    pthread_mutex_unlock(&tp->lock);
}

/* ------------------------------------------------------------------ */
/* Remote keys */

static void rkey_unlink(refit_tp_rkey_t *k)
{
    if (!k->peer)
        return;
    for (refit_tp_rkey_t **pk = &k->peer->rkeys; *pk; pk = &(*pk)->next)
        if (*pk == k) {
            *pk = k->next;
            break;
        }
    k->peer = NULL;
}

/* Ask the owner whether the key is live; 0 or the owner's verdict. */
static int rkey_check(refit_tp_t *tp, refit_tp_peer_t *p, const struct cipc_key *key)
{
    int64_t deadline = cipc_now_ms() + tp->timeout_ms;
    uint64_t seq = ++tp->check_seq;
    struct cipc_conn *c = p->conn;
    int rc = cipc_conn_send(c, MSG_CHECK, seq, 0, key, sizeof(*key), deadline);
    if (rc)
        return H->error_set(rc, "%s: could not send a key check to peer '%s'", CIPC, p->name);
    pthread_mutex_lock(&tp->lock);
    struct timespec ts = cipc_abstime(deadline);
    while (c->reply_seq != seq && !c->dead && cipc_now_ms() < deadline)
        pthread_cond_timedwait(&tp->cond, &tp->lock, &ts);
    int answered = c->reply_seq == seq, dead = c->dead;
    int64_t st = c->reply_status;
    pthread_mutex_unlock(&tp->lock);
    if (!answered && dead)
        return H->error_set(REFIT_ECONN, "%s: peer '%s' went away while checking the key of its region %"
                            PRIu64, CIPC, p->name, key->region_id);
    if (!answered)
        return H->error_set(REFIT_ETIMEDOUT, "%s: peer '%s' did not answer the check of the key of its "
                            "region %" PRIu64 " within %" PRId64 " ms", CIPC, p->name, key->region_id,
                            tp->timeout_ms);
    if (st == REFIT_ESTALE)
        return H->error_set(REFIT_ESTALE, "%s: region %" PRIu64 " of peer '%s' is no longer registered "
                            "there (stale key)", CIPC, key->region_id, p->name);
    if (st == REFIT_EPERM)
        return H->error_set(REFIT_EPERM, "%s: peer '%s' rejected the key of region %" PRIu64 ": it matches "
                            "none of its registrations (forged or corrupted key)", CIPC, p->name,
                            key->region_id);
    if (st)
        return H->error_set(st < 0 && st > REFIT_STATUS_MIN_ ? (int)st : REFIT_EPROTO,
                            "%s: peer '%s' refused the key of region %" PRIu64 " (status %" PRId64 ")",
                            CIPC, p->name, key->region_id, st);
    return 0;
}

/* Under tp->lock: where the region is in our address space. */
static int rkey_map(refit_tp_t *tp, refit_tp_peer_t *p, refit_tp_rkey_t *k)
{
    if (k->stale == REFIT_ESTALE)
        return H->error_set(REFIT_ESTALE, "%s: region %" PRIu64 " of peer '%s' was deregistered while "
                            "its key was being unpacked", CIPC, k->key.region_id, p->name);
    if (k->stale || p->dead)
        return H->error_set(REFIT_ECONN, "%s: peer '%s': %s", CIPC, p->name, p->why);
    if (p->loopback) {
        k->base = (char *)(uintptr_t)k->key.owner_ptr;
    } else {
        int rc = cipc_map_get(tp, p, &k->key, &k->map);
        if (rc)
            return rc;
        k->base = (char *)k->map->base + k->key.alloc_off;
    }
    struct cipc_devguard g;
    int rc = cipc_dev_enter(tp, &g);
    if (!rc) {
        rc = cipc_events_create(tp, k->ev, "a remote key");
        cipc_dev_leave(&g);
    }
    if (rc && k->map) {
        cipc_map_put(tp, k->map);
        k->map = NULL;
    }
    return rc;
}

int cipc_unpack_rkey(refit_tp_t *tp, refit_tp_peer_t *p, const void *buf, size_t len,
                            refit_tp_rkey_t **out)
{
    if (!tp || !p || !buf || !out)
        return H->error_set(REFIT_EINVAL, "%s: unpack_rkey without a peer or key", CIPC);
    struct cipc_key key;
    if (len != sizeof(key))
        return H->error_set(REFIT_EPROTO, "%s: remote key from peer '%s' is %zu bytes, expected %zu",
                            CIPC, p->name, len, sizeof(key));
    memcpy(&key, buf, sizeof(key));
    if (key.magic != CIPC_KEY_MAGIC || key.version != CIPC_VERSION || !key.len || !key.region_id ||
        key.alloc_off + key.len < key.alloc_off)
        return H->error_set(REFIT_EPROTO, "%s: remote key from peer '%s' is malformed (magic %#x, "
                            "version %u)", CIPC, p->name, key.magic, key.version);
    if (key.tp_id != p->addr.tp_id)
        return H->error_set(REFIT_EPROTO, "%s: remote key of region %" PRIu64 " was made by another "
                            "transport (%016" PRIx64 "), not by peer '%s' (%016" PRIx64 ")", CIPC,
                            key.region_id, key.tp_id, p->name, p->addr.tp_id);
    refit_tp_rkey_t *k = H->calloc(1, sizeof(*k));
    if (!k)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    k->key = key;
    pthread_mutex_lock(&tp->lock);
    int rc = p->dead ? H->error_set(REFIT_ECONN, "%s: peer '%s': %s", CIPC, p->name, p->why) : 0;
    if (!rc) {
        /* Linked before the check, so that a revoke racing it marks it. */
        k->peer = p;
        k->next = p->rkeys;
        p->rkeys = k;
    }
    pthread_mutex_unlock(&tp->lock);
    if (!rc)
        rc = rkey_check(tp, p, &key);
    pthread_mutex_lock(&tp->lock);
    if (!rc)
        rc = rkey_map(tp, p, k);
    if (rc)
        rkey_unlink(k);
    else
        k->checked = 1;
    pthread_mutex_unlock(&tp->lock);
    if (rc) {
        H->free(k);
        return rc;
    }
    *out = k;
    return 0;
}

void cipc_release_rkey(refit_tp_t *tp, refit_tp_rkey_t *k)
{
    if (!tp || !k)
        return;
    pthread_mutex_lock(&tp->lock);
    rkey_unlink(k);
    int quiet = 1;
    if (k->ev_mask) {
        /* Only after a request's last copy: wait in case a timed-out
         * request still runs, rather than unmap under it. */
        quiet = cipc_events_wait(k->ev, k->ev_mask, cipc_now_ms() + tp->timeout_ms) == 1;
        if (!quiet)
            H->log(3, CIPC, "release of the key of region %" PRIu64 ": copies still running after %"
                   PRId64 " ms; its mapping stays open", k->key.region_id, tp->timeout_ms);
    }
    if (quiet && k->map)
        cipc_map_put(tp, k->map);
    pthread_mutex_unlock(&tp->lock);
    cipc_events_destroy(tp, k->ev);
    H->free(k);
}

/* The mapped region itself, for the caller's kernels (colocated pulls:
 * one launch reads every tensor).  A key that is stale or not yet mapped
 * has no pointer. */
int cipc_rkey_ptr(refit_tp_t *tp, refit_tp_rkey_t *k, void **ptr)
{
    if (!tp || !k || !ptr)
        return H->error_set(REFIT_EINVAL, "%s: rkey_ptr without a key or out", CIPC);
    pthread_mutex_lock(&tp->lock);
    int rc = 0;
    if (k->stale || !k->base)
        rc = H->error_set(k->stale == REFIT_ESTALE ? REFIT_ESTALE : REFIT_ECONN, "%s: region %" PRIu64
                          " of peer '%s' is %s", CIPC, k->key.region_id, k->peer ? k->peer->name : "?",
                          k->stale == REFIT_ESTALE ? "deregistered (stale key)" : "not reachable");
    else
        *ptr = k->base;
    pthread_mutex_unlock(&tp->lock);
    return rc;
}
