/* fanout_replica.c — a fan-out receiver as a replica (fanout.h): after a
 * commit it re-publishes its staging image ("replicas/<id>", checksummed
 * in 4 MiB chunks, written with a TTL of refit.stale_after and refreshed
 * by a heartbeat thread), and before a pull overwrites the buffer the
 * record names it retires the record (UPDATING) and waits for the pullers
 * still reading it; and the load leases ("load/<source>") pullers take.
 *
 * Why the replica's bytes stay valid while they are read: a puller takes
 * its lease (with the version it reads) and then re-reads the record; a
 * replica first changes its record (to UPDATING, or to the next version),
 * then waits for the leases on the buffer it will overwrite.  With a
 * linearizable store one of the two sees the other: either the replica
 * waits for the lease, or the puller sees the record move and reads
 * nothing.  Leases expire after refit.timeout; the fence (fence.c) checks
 * that the puller's is still held, so a puller slower than its lease
 * never commits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "fanout.h"
#include "refit/log.h"

/* ------------------------------------------------------------------ */
/* The record and its heartbeat */

static void *heartbeat_main(void *arg)
{
    refit_receiver_t *r = arg;
    struct rf_fanout *f = r->mode_state;
    refit_store_t *st = NULL;
    if (refit_store_open(r->ctx->cfg, r->ctx->loader, NULL, &st))
        refit_log(REFIT_LOG_ERROR, "fanout", "%s: heartbeat store: %s", r->id, refit_error_message());
    pthread_mutex_lock(&f->lock);
    while (!f->hb_stop) {
        /* Under the lock: a put of an older encoding never lands after
         * the main thread's put of a newer one. */
        if (st && f->enc && refit_store_put_ttl(st, f->self_key, f->enc, f->enc_len, r->ctx->stale_after_ms))
            refit_log(REFIT_LOG_WARN, "fanout", "%s: replica heartbeat: %s", r->id, refit_error_message());
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (r->ctx->heartbeat_ms % 1000) * 1000000;
        ts.tv_sec += r->ctx->heartbeat_ms / 1000 + ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        if (!f->hb_stop)
            pthread_cond_timedwait(&f->cond, &f->lock, &ts);
    }
    pthread_mutex_unlock(&f->lock);
    refit_store_close(st);
    return NULL;
}

/* Write f->rec (TTL refit.stale_after, refreshed by the heartbeat). */
static int put_record(refit_receiver_t *r, struct rf_fanout *f)
{
    f->rec.heartbeat_ms = refit_time_ms();
    void *enc = NULL;
    size_t len = 0;
    int rc = rf_replica_encode(&f->rec, &enc, &len);
    if (rc)
        return rc;
    pthread_mutex_lock(&f->lock);
    free(f->enc);
    f->enc = enc;
    f->enc_len = len;
    rc = refit_store_put_ttl(r->ctx->store, f->self_key, enc, len, r->ctx->stale_after_ms);
    pthread_mutex_unlock(&f->lock);
    if (rc)
        return refit_error_push(rc, "replica %s: writing %s", r->id, f->self_key);
    if (!f->hb_running) {
        if (pthread_create(&f->hb, NULL, heartbeat_main, r) == 0)
            f->hb_running = 1;
        else
            refit_log(REFIT_LOG_WARN, "fanout", "%s: no heartbeat thread for the replica record", r->id);
    }
    return 0;
}

int rf_lease_edit(refit_store_t *s, const char *key, const char *id, int take, int64_t max, uint64_t version,
                      int64_t ttl_ms)
{
    for (int attempt = 0; attempt < 1000; attempt++) {
        struct rf_lease *l = NULL;
        size_t n = 0, len = 0;
        void *raw = NULL;
        int rc = rf_lease_read(s, key, &l, &n, &raw, &len);
        if (rc)
            return rc;
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (strcmp(l[i].id, id))
                l[m++] = l[i];
        if (take && max > 0 && m >= (size_t)max) {
            free(l);
            free(raw);
            return REFIT_EAGAIN;
        }
        if (!take && m == n) { /* nothing of ours to remove */
            free(l);
            free(raw);
            return 0;
        }
        if (take) {
            struct rf_lease *nl = realloc(l, (m + 1) * sizeof(*nl));
            if (!nl) {
                free(l);
                free(raw);
                return REFIT_ENOMEM;
            }
            l = nl;
            snprintf(l[m].id, sizeof(l[m].id), "%s", id);
            l[m].expires_ms = refit_time_ms() + (uint64_t)ttl_ms;
            l[m].version = version;
            m++;
        }
        void *enc = NULL;
        size_t elen = 0;
        rc = rf_lease_encode(l, m, &enc, &elen);
        free(l);
        if (!rc)
            rc = refit_store_cas(s, key, raw, raw ? len : 0, enc, elen);
        free(enc);
        free(raw);
        if (rc != REFIT_ECONFLICT)
            return rc ? refit_error_push(rc, "lease %s", key) : 0;
        refit_error_clear();
        rf_sleep_ms(0.2 + (double)(rand() % 1000) / 1000.0); /* a little jitter */
    }
    return refit_error_set(REFIT_ECONFLICT, "lease %s: too many concurrent updates", key);
}

void rf_fanout_release_lease(refit_receiver_t *r, struct rf_fanout *f)
{
    if (!f->lease_held)
        return;
    f->lease_held = 0;
    if (rf_lease_edit(r->ctx->store, f->lease_key, r->id, 0, 0, 0, 0)) {
        /* It expires by itself after refit.timeout. */
        refit_log(REFIT_LOG_WARN, "fanout", "%s: releasing %s: %s", r->id, f->lease_key, refit_error_message());
        refit_error_clear();
    }
}

/* ------------------------------------------------------------------ */
/* Create, destroy */

int rf_fanout_requested(const refit_context_t *ctx, int *yes)
{
    bool rep = false;
    int64_t max = 0;
    int rc = refit_config_bool(ctx->cfg, "refit.fanout.republish", &rep);
    if (!rc)
        rc = refit_config_int(ctx->cfg, "refit.fanout.max_pullers_per_source", &max);
    *yes = !rc && (rep || max > 0);
    return rc;
}

int rf_fanout_create(refit_receiver_t *r)
{
    bool rep = false;
    int64_t max = 0;
    int rc = refit_config_bool(r->ctx->cfg, "refit.fanout.republish", &rep);
    if (!rc)
        rc = refit_config_int(r->ctx->cfg, "refit.fanout.max_pullers_per_source", &max);
    if (rc)
        return rc;
    struct rf_fanout *f = calloc(1, sizeof(*f));
    if (!f)
        return REFIT_ENOMEM;
    f->republish = rep;
    f->max = max;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    r->mode_state = f;
    rc = rf_key_replica(f->self_key, r->id);
    if (!rc)
        rc = rf_key_load(f->self_load, r->id);
    return rc;
}

static void wait_pullers(refit_receiver_t *r, struct rf_fanout *f, uint64_t keep);

void rf_fanout_destroy(refit_receiver_t *r)
{
    struct rf_fanout *f = r->mode_state;
    if (!f)
        return;
    if (f->hb_running) {
        pthread_mutex_lock(&f->lock);
        f->hb_stop = 1;
        pthread_cond_signal(&f->cond);
        pthread_mutex_unlock(&f->lock);
        pthread_join(f->hb, NULL);
    }
    /* Best effort, keeping the caller's error message. */
    char saved[1024];
    int saved_st = refit_error_status();
    snprintf(saved, sizeof(saved), "%s", refit_error_message());
    if (f->published) {
        /* Withdrawn first, then the copies in flight finish (bounded by
         * refit.timeout) before the buffers go. */
        refit_store_del(r->ctx->store, f->self_key);
        wait_pullers(r, f, 0);
        refit_store_del(r->ctx->store, f->self_load);
    }
    rf_fanout_release_lease(r, f);
    if (saved[0])
        refit_error_set(saved_st, "%s", saved);
    else
        refit_error_clear();
    for (size_t i = 0; i < f->n_peers; i++)
        rf_fanout_drop_peer(r, &f->peers[i]);
    free(f->peers);
    for (int b = 0; b < 2; b++)
        free(f->packed[b].blob);
    free(f->addr);
    free(f->sums);
    free(f->enc);
    free(f->cur);
    for (size_t i = 0; i < f->n_failed; i++)
        free(f->failed[i]);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f);
    r->mode_state = NULL;
}

/* ------------------------------------------------------------------ */
/* Retire: before a pull writes a buffer a replica record may name. */

static int all_owned(const refit_receiver_t *r)
{
    for (size_t i = 0; i < r->dests.n; i++)
        if (!r->dests.d[i].owned)
            return 0;
    return 1;
}

/* Wait until no live lease on us reads anything but `keep` (0: nothing). */
static void wait_pullers(refit_receiver_t *r, struct rf_fanout *f, uint64_t keep)
{
    /* Leases expire after refit.timeout: waiting a little longer always
     * ends with none left. */
    double deadline = rf_seconds() + (double)r->ctx->timeout_ms / 1000.0 + 1.0;
    uint64_t cursor = 0;
    char **k = NULL;
    size_t nk = 0;
    /* The cursor first, then the look: a lease dropped between them wakes
     * the first wait. */
    refit_store_watch(r->ctx->store, f->self_load, 0, &cursor, 0, &k, &nk);
    free(k);
    refit_error_clear();
    for (;;) {
        struct rf_lease *l = NULL;
        size_t n = 0, busy = 0;
        if (rf_lease_read(r->ctx->store, f->self_load, &l, &n, NULL, NULL)) {
            refit_log(REFIT_LOG_WARN, "fanout", "%s: reading %s: %s", r->id, f->self_load, refit_error_message());
            refit_error_clear();
        }
        for (size_t i = 0; i < n; i++)
            busy += !keep || l[i].version != keep;
        free(l);
        if (!busy)
            return;
        if (rf_seconds() > deadline) {
            refit_log(REFIT_LOG_WARN, "fanout", "%s: %zu puller(s) still hold leases after %lld ms; going on",
                      r->id, busy, (long long)r->ctx->timeout_ms);
            return;
        }
        /* Woken by a change of our lease list; a puller that died leaves
         * none, its lease expires: look again now and then. */
        k = NULL;
        int rc = refit_store_watch(r->ctx->store, f->self_load, cursor, &cursor, RF_PULLERS_WATCH_MS, &k, &nk);
        free(k);
        if (rc && rc != REFIT_ETIMEDOUT && rc != REFIT_ERANGE)
            rf_sleep_ms(RF_PULLERS_WATCH_MS); /* the store is down: do not spin */
        refit_error_clear();
    }
}

int rf_fanout_retire(refit_receiver_t *r, struct rf_fanout *f)
{
    if (!f->published)
        return 0;
    /* Double-buffered and not reallocated: the pull writes the back
     * buffer; the record names the front one, which stays as it is.  Only
     * readers of an older version, in the back buffer, must be done. */
    const struct rf_bufs *b = &r->bufs;
    int intact = b->doubled && all_owned(r) && r->plan.staging_need <= b->staging_len &&
                 f->pub_ptr == b->stage[b->front] && f->rec.status == RF_REPLICA_READY;
    if (intact) {
        wait_pullers(r, f, f->rec.version);
        return 0;
    }
    if (f->rec.status != RF_REPLICA_UPDATING) {
        f->rec.status = RF_REPLICA_UPDATING;
        int rc = put_record(r, f);
        if (rc)
            return rc;
    }
    wait_pullers(r, f, 0);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Re-publishing after a commit */

int rf_fanout_republish(refit_receiver_t *r, struct rf_fanout *f, uint64_t v)
{
    const struct rf_bufs *b = &r->bufs;
    int buf = b->doubled ? b->front : 0;
    void *base = b->doubled ? b->stage[buf] : b->staging;
    refit_tp_region_t *reg = b->doubled ? b->stage_reg[buf] : b->staging_reg;
    uint64_t len = r->plan.staging_need;
    if (!base || !reg || len > b->staging_len)
        return 0;
    size_t n = (size_t)(len / RF_REPLICA_CHUNK + (len % RF_REPLICA_CHUNK != 0));
    if (n > f->cap_sums) {
        uint64_t *ns = realloc(f->sums, n * sizeof(*ns));
        if (!ns)
            return REFIT_ENOMEM;
        f->sums = ns;
        f->cap_sums = n;
    }
    double t0 = rf_seconds();
    for (size_t k = 0; k < n; k++) {
        uint64_t off = (uint64_t)k * RF_REPLICA_CHUNK;
        f->sums[k] = XXH3_64bits((const char *)base + off, len - off < RF_REPLICA_CHUNK ? len - off : RF_REPLICA_CHUNK);
    }
    int rc = 0;
    if (f->packed[buf].reg != reg) {
        free(f->packed[buf].blob);
        f->packed[buf].blob = NULL;
        f->packed[buf].reg = NULL;
        rc = refit_transport_pack(r->tp, reg, &f->packed[buf].blob, &f->packed[buf].len);
        if (rc)
            return refit_error_push(rc, "replica %s: packing the staging key", r->id);
        f->packed[buf].reg = reg;
    }
    if (!f->addr && (rc = refit_transport_address_get(r->tp, &f->addr, &f->addr_len)))
        return rc;
    f->rec = (struct rf_replica){.id = r->id,
                                 .model = refit_model_type(r->ctx->model),
                                 .transport = refit_transport_plugin_name(r->tp),
                                 .address = {f->addr, f->addr_len},
                                 .rkey = {f->packed[buf].blob, f->packed[buf].len},
                                 .layout = f->layout,
                                 .version = v,
                                 .status = RF_REPLICA_READY,
                                 .keeps = b->doubled ? 2 : 1,
                                 .length = len,
                                 .chunk = RF_REPLICA_CHUNK,
                                 .n_sums = n,
                                 .sums = f->sums};
    rc = put_record(r, f);
    if (rc)
        return rc;
    f->published = 1;
    f->pub_ptr = base;
    refit_log(REFIT_LOG_DEBUG, "fanout", "%s: replica of v%llu published (%llu bytes, %zu chunks, %.3f s to hash)",
              r->id, (unsigned long long)v, (unsigned long long)len, n, rf_seconds() - t0);
    return 0;
}

