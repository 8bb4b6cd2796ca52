/* peers.c — a receiver's connections to its sources (receiver.h, transfer
 * stage): one transport peer per source and its remote keys, unpacked
 * once and kept while the record names the same ones (a copy-mode source
 * alternates two arenas: both keys stay unpacked).
 *
 * A peer whose request failed in the transport (a reset connection, a
 * publisher stopped past transport.timeout) is broken for good: the
 * transport fails every later request on it.  So rf_peers_broken drops
 * its connection and keys, and the next pull connects again; when that
 * connect fails too, it is retried with backoff while the source is still
 * READY and fresh, within refit.timeout.  Only the transport ABI's
 * disconnect, connect and unpack are used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "receiver.h"
#include "refit/log.h"

static void release_keys(refit_receiver_t *r, refit_tp_rkey_t **k, struct refit_blob *b, size_t n)
{
    for (size_t i = 0; k && i < n; i++) {
        refit_transport_release(r->tp, k[i]);
        free((void *)b[i].data);
        k[i] = NULL;
        b[i] = (struct refit_blob){NULL, 0};
    }
}

static void drop_alt(refit_receiver_t *r, struct rf_peer *p)
{
    release_keys(r, p->alt_rkeys, p->alt_blobs, p->n_rkeys);
    free(p->alt_rkeys);
    free(p->alt_blobs);
    p->alt_rkeys = NULL;
    p->alt_blobs = NULL;
}

/* The connection and every key; the slot stays (id, failures). */
static void disconnect(refit_receiver_t *r, struct rf_peer *p)
{
    drop_alt(r, p);
    release_keys(r, p->rkeys, p->rkey_blobs, p->n_rkeys);
    free(p->rkeys);
    free(p->rkey_blobs);
    p->rkeys = NULL;
    p->rkey_blobs = NULL;
    p->n_rkeys = 0;
    refit_transport_disconnect(r->tp, p->peer);
    p->peer = NULL;
    free(p->addr);
    p->addr = NULL;
    p->addr_len = 0;
}

static void peer_fini(refit_receiver_t *r, struct rf_peer *p)
{
    disconnect(r, p);
    free(p->id);
    memset(p, 0, sizeof(*p));
}

void rf_peers_fini(refit_receiver_t *r)
{
    for (size_t i = 0; i < r->peers.n; i++)
        peer_fini(r, &r->peers.p[i]);
    free(r->peers.p);
    r->peers.p = NULL;
    r->peers.n = 0;
}

int rf_peers_sync(refit_receiver_t *r)
{
    struct rf_peers *ps = &r->peers;
    const struct rf_discover *d = &r->disc;
    int same = ps->n == d->n_src;
    for (size_t i = 0; same && i < d->n_src; i++)
        same = !strcmp(ps->p[i].id, d->src[i].id);
    if (same)
        return 0;
    struct rf_peer *np = calloc(d->n_src ? d->n_src : 1, sizeof(*np));
    if (!np)
        return REFIT_ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < d->n_src; i++) {
        for (size_t j = 0; j < ps->n && !np[i].id; j++)
            if (ps->p[j].id && !strcmp(ps->p[j].id, d->src[i].id)) {
                np[i] = ps->p[j];
                memset(&ps->p[j], 0, sizeof(ps->p[j]));
            }
        if (!np[i].id && !(np[i].id = strdup(d->src[i].id)))
            rc = REFIT_ENOMEM;
    }
    /* The peers of sources that are gone. */
    for (size_t j = 0; j < ps->n; j++)
        peer_fini(r, &ps->p[j]);
    free(ps->p);
    ps->p = np;
    ps->n = d->n_src;
    return rc;
}

void rf_peers_broken(refit_receiver_t *r, size_t i)
{
    struct rf_peer *p = &r->peers.p[i];
    if (!p->peer)
        return;
    refit_log(REFIT_LOG_INFO, "receiver", "%s: dropping the connection to source %s after a transport failure; "
              "the next pull connects again", r->id, p->id);
    disconnect(r, p);
    p->failures++;
}

/* A source that failed before may be restarting or resuming: connect again
 * with backoff while its record stays READY and fresh, until the deadline.
 * A source never connected before fails at once, as it always did. */
static int connect_peer(refit_receiver_t *r, struct rf_peer *p, const struct refit_source_record *rec)
{
    double deadline = rf_seconds() + (double)r->ctx->timeout_ms / 1000.0, wait = RF_RECONNECT_FIRST_S;
    for (;;) {
        int rc = refit_transport_connect(r->tp, rec->address.data, rec->address.len, p->id, &p->peer);
        if (!rc || !p->failures || rf_seconds() + wait > deadline)
            return rc ? refit_error_push(rc, "connecting to source %s", p->id) : 0;
        struct refit_source_record *now = NULL;
        bool stale = false;
        int c = refit_source_check(r->ctx->store, p->id, r->ctx->stale_after_ms, &now, &stale);
        int live = !c && !stale && now->status == REFIT_SOURCE_READY;
        free(now);
        if (!live)
            return refit_error_push(rc, "connecting to source %s again (it is no longer live)", p->id);
        refit_error_clear();
        rf_sleep_ms(wait * 1000.0);
        wait = wait * 2 < RF_RECONNECT_MAX_S ? wait * 2 : RF_RECONNECT_MAX_S;
    }
}

static int blob_eq(const struct refit_blob *a, const struct refit_blob *b)
{
    return a->len == b->len && !memcmp(a->data, b->data, a->len);
}

/* Key slots for the record's regions (all dropped when their count changes). */
static int key_slots(refit_receiver_t *r, struct rf_peer *p, size_t n)
{
    if (p->n_rkeys != n || !p->rkeys) {
        drop_alt(r, p);
        release_keys(r, p->rkeys, p->rkey_blobs, p->n_rkeys);
        free(p->rkeys);
        free(p->rkey_blobs);
        p->rkeys = calloc(n ? n : 1, sizeof(*p->rkeys));
        p->rkey_blobs = calloc(n ? n : 1, sizeof(*p->rkey_blobs));
        p->n_rkeys = n;
        if (!p->rkeys || !p->rkey_blobs)
            return REFIT_ENOMEM;
    }
    if (!p->alt_rkeys && n) {
        p->alt_rkeys = calloc(n, sizeof(*p->alt_rkeys));
        p->alt_blobs = calloc(n, sizeof(*p->alt_blobs));
        if (!p->alt_rkeys || !p->alt_blobs)
            return REFIT_ENOMEM;
    }
    return 0;
}

/* Region k's key as the record has it: kept, swapped with the previous
 * one (alternating arenas), or unpacked (the current becomes previous). */
static int key_update(refit_receiver_t *r, struct rf_peer *p, size_t k, const struct refit_blob *want)
{
    if (p->rkeys[k] && blob_eq(&p->rkey_blobs[k], want))
        return 0;
    refit_tp_rkey_t *ok = p->rkeys[k];
    struct refit_blob ob = p->rkey_blobs[k];
    if (p->alt_rkeys[k] && blob_eq(&p->alt_blobs[k], want)) {
        p->rkeys[k] = p->alt_rkeys[k];
        p->rkey_blobs[k] = p->alt_blobs[k];
        p->alt_rkeys[k] = ok;
        p->alt_blobs[k] = ob;
        return 0;
    }
    refit_transport_release(r->tp, p->alt_rkeys[k]);
    free((void *)p->alt_blobs[k].data);
    p->alt_rkeys[k] = ok;
    p->alt_blobs[k] = ob;
    p->rkeys[k] = NULL;
    p->rkey_blobs[k] = (struct refit_blob){NULL, 0};
    void *copy = malloc(want->len ? want->len : 1);
    if (!copy)
        return REFIT_ENOMEM;
    memcpy(copy, want->data, want->len);
    p->rkey_blobs[k] = (struct refit_blob){copy, want->len};
    int rc = refit_transport_unpack(r->tp, p->peer, want->data, want->len, &p->rkeys[k]);
    return rc ? refit_error_push(rc, "source %s: remote key of region %zu", p->id, k) : 0;
}

static int connect_one(refit_receiver_t *r, struct rf_peer *p, const struct refit_source_record *rec, int *fresh)
{
    if (strcmp(rec->transport, refit_transport_plugin_name(r->tp)))
        return refit_error_set(REFIT_EPROTO, "source %s publishes over '%s', this receiver uses '%s'", p->id,
                               rec->transport, refit_transport_plugin_name(r->tp));
    /* Restarted elsewhere: a new address, new keys. */
    if (p->peer && (p->addr_len != rec->address.len || memcmp(p->addr, rec->address.data, p->addr_len)))
        disconnect(r, p);
    size_t had_keys = p->n_rkeys;
    int rc = 0;
    if (!p->peer) {
        *fresh = 1;
        if ((rc = connect_peer(r, p, rec)))
            return rc;
        p->failures = 0;
        free(p->addr);
        if (!(p->addr = malloc(rec->address.len ? rec->address.len : 1)))
            return REFIT_ENOMEM;
        memcpy(p->addr, rec->address.data, rec->address.len);
        p->addr_len = rec->address.len;
    }
    if ((rc = key_slots(r, p, rec->n_rkeys)))
        return rc;
    *fresh |= had_keys != p->n_rkeys;
    for (size_t k = 0; k < rec->n_rkeys && !rc; k++)
        rc = key_update(r, p, k, &rec->rkeys[k]);
    return rc;
}

int rf_peers_connect(refit_receiver_t *r, int *fresh)
{
    *fresh = 0;
    int rc = rf_peers_sync(r);
    for (size_t i = 0; !rc && i < r->disc.n_src; i++) {
        rc = connect_one(r, &r->peers.p[i], r->disc.src[i].rec, fresh);
        if (rc) /* for the pull's retry without it (rf_pull_retry) */
            snprintf(r->failed_src, sizeof(r->failed_src), "%s", r->disc.src[i].id);
    }
    return rc;
}
