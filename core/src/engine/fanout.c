/* fanout.c — tree fan-out: receivers re-publish the version they committed
 * as replicas, and receivers choose among the trainer and the replicas the
 * least-loaded source with a free slot (docs/fanout.md).
 *
 * A receiver is in fan-out mode when refit.fanout.republish is true or
 * refit.fanout.max_pullers_per_source is above 0, it pulls through staging
 * (not refit.in_place) and in pull mode.  The hooks in receiver.c are:
 *   rf_fanout_retire  before the pull touches a buffer: a replica whose
 *                     bytes are about to be overwritten goes UPDATING, and
 *                     the pullers of what is overwritten finish first;
 *   rf_fanout_pull    after planning: choose a source, take its lease; a
 *                     replica is copied, verified, fenced and committed here,
 *                     the trainer is pulled by the normal path;
 *   rf_fanout_fence   the fence of rf_rcv_commit for a replica pull;
 *   rf_fanout_end     re-publish on success, release the lease.
 *
 * Why the replica's bytes stay valid while they are read: a puller takes
 * its lease (load/<replica>, with the version it reads) and then re-reads
 * the record; a replica first changes its record (to UPDATING, or to the
 * next version), then waits for the leases on the buffer it will overwrite.
 * With a linearizable store one of the two sees the other: either the
 * replica waits for the lease, or the puller sees the record move and reads
 * nothing.  Leases expire after refit.timeout; the fence checks that ours
 * is still held, so a puller slower than its lease never commits. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "exec.h"
#include "receiver.h"
#include "refit/log.h"
#include "replica.h"

#define KEYSZ (REFIT_STORE_MAX_KEY + 1)
#define TRAINER "trainer"

struct rf_rpeer {
    char *id;
    void *addr;
    size_t addr_len;
    refit_tp_peer_t *peer;
    /* A double-buffered replica alternates two keys: both stay unpacked. */
    struct {
        void *blob;
        size_t len;
        refit_tp_rkey_t *rkey;
    } keys[2];
    int next;
};

struct rf_fanout {
    int republish;
    int64_t max;
    char self_key[KEYSZ], self_load[KEYSZ];
    /* Re-publishing. */
    void *addr;
    size_t addr_len;
    struct {
        refit_tp_region_t *reg;
        void *blob;
        size_t len;
    } packed[2];
    uint64_t *sums;
    size_t cap_sums;
    int published;
    struct rf_replica rec; /* what the store says about us */
    void *pub_ptr;         /* the buffer the record names */
    pthread_t hb;
    int hb_running, hb_stop;
    pthread_mutex_t lock; /* enc and the puts of the record */
    pthread_cond_t cond;
    void *enc;
    size_t enc_len;
    /* Pulling. */
    struct rf_rpeer *peers;
    size_t n_peers;
    char lease_key[KEYSZ];
    int lease_held;
    struct rf_replica *cur; /* the replica of this pull; NULL: the trainer */
    struct refit_hash128 layout;
    int fenced;
    uint32_t fallbacks;
    /* The copy in flight. */
    refit_receiver_t *r;
    refit_tp_region_t *local;
};

/* ------------------------------------------------------------------ */
/* The record and its heartbeat */

static void *heartbeat_main(void *arg)
{
    refit_receiver_t *r = arg;
    struct rf_fanout *f = r->fan;
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

/* ------------------------------------------------------------------ */
/* Leases: load/<source> = [(puller, expires_ms, version)] */

static void sleep_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - 1000.0 * (double)(time_t)(ms / 1000)) * 1e6)};
    nanosleep(&ts, NULL);
}

/* The live entries of a lease list (expired ones dropped); *raw keeps the
 * bytes read, for a cas. */
static int lease_read(refit_store_t *s, const char *key, struct rf_lease **out, size_t *n, void **raw,
                      size_t *raw_len)
{
    void *val = NULL;
    size_t len = 0;
    *out = NULL;
    *n = 0;
    int rc = refit_store_get(s, key, &val, &len);
    if (rc == REFIT_ENOENT) {
        refit_error_clear();
        if (raw)
            *raw = NULL;
        return 0;
    }
    if (rc)
        return rc;
    struct rf_lease *l = NULL;
    size_t nl = 0;
    if (rf_lease_decode(val, len, key, &l, &nl)) {
        /* A bad list pins nobody: it is replaced by the next writer. */
        refit_log(REFIT_LOG_WARN, "fanout", "ignoring a malformed lease list: %s", refit_error_message());
        refit_error_clear();
        l = NULL;
        nl = 0;
    }
    uint64_t now = refit_time_ms();
    size_t m = 0;
    for (size_t i = 0; i < nl; i++)
        if (l[i].expires_ms > now)
            l[m++] = l[i];
    *out = l;
    *n = m;
    if (raw) {
        *raw = val;
        *raw_len = len;
    } else {
        free(val);
    }
    return 0;
}

/* Acquire (take 1: only while fewer than max others hold one; max 0: no
 * limit) or release (take 0) our entry.  REFIT_EAGAIN: the source is full. */
static int lease_edit(refit_store_t *s, const char *key, const char *id, int take, int64_t max, uint64_t version,
                      int64_t ttl_ms)
{
    for (int attempt = 0; attempt < 1000; attempt++) {
        struct rf_lease *l = NULL;
        size_t n = 0, len = 0;
        void *raw = NULL;
        int rc = lease_read(s, key, &l, &n, &raw, &len);
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
        sleep_ms(0.2 + (double)(rand() % 1000) / 1000.0);
    }
    return refit_error_set(REFIT_ECONFLICT, "lease %s: too many concurrent updates", key);
}

static void release_lease(refit_receiver_t *r, struct rf_fanout *f)
{
    if (!f->lease_held)
        return;
    f->lease_held = 0;
    if (lease_edit(r->ctx->store, f->lease_key, r->id, 0, 0, 0, 0)) {
        /* It expires by itself after refit.timeout. */
        refit_log(REFIT_LOG_WARN, "fanout", "%s: releasing %s: %s", r->id, f->lease_key, refit_error_message());
        refit_error_clear();
    }
}

/* ------------------------------------------------------------------ */
/* Create, destroy */

int rf_fanout_create(refit_receiver_t *r)
{
    bool rep = false;
    int64_t max = 0;
    int rc = refit_config_bool(r->ctx->cfg, "refit.fanout.republish", &rep);
    if (!rc)
        rc = refit_config_int(r->ctx->cfg, "refit.fanout.max_pullers_per_source", &max);
    if (rc)
        return rc;
    if (!rep && max == 0)
        return 0;
    if (r->ctx->in_place || r->ctx->push) {
        refit_log(REFIT_LOG_WARN, "fanout", "%s: fan-out is off: it needs pull mode through staging (%s)", r->id,
                  r->ctx->in_place ? "refit.in_place is on" : "refit.mode is push");
        return 0;
    }
    struct rf_fanout *f = calloc(1, sizeof(*f));
    if (!f)
        return REFIT_ENOMEM;
    f->republish = rep;
    f->max = max;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    r->fan = f;
    rc = rf_key_replica(f->self_key, r->id);
    if (!rc)
        rc = rf_key_load(f->self_load, r->id);
    return rc;
}

static void wait_pullers(refit_receiver_t *r, struct rf_fanout *f, uint64_t keep);

static void drop_peer(refit_receiver_t *r, struct rf_rpeer *p)
{
    for (int k = 0; k < 2; k++) {
        refit_tp_release(r->tp, p->keys[k].rkey);
        free(p->keys[k].blob);
    }
    refit_tp_disconnect(r->tp, p->peer);
    free(p->addr);
    free(p->id);
    memset(p, 0, sizeof(*p));
}

void rf_fanout_destroy(refit_receiver_t *r)
{
    struct rf_fanout *f = r->fan;
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
    release_lease(r, f);
    if (saved[0])
        refit_error_set(saved_st, "%s", saved);
    else
        refit_error_clear();
    for (size_t i = 0; i < f->n_peers; i++)
        drop_peer(r, &f->peers[i]);
    free(f->peers);
    for (int b = 0; b < 2; b++)
        free(f->packed[b].blob);
    free(f->addr);
    free(f->sums);
    free(f->enc);
    free(f->cur);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f);
    r->fan = NULL;
}

/* ------------------------------------------------------------------ */
/* Layout key: what makes two staging images byte-identical. */

static void layout_key(refit_receiver_t *r, struct refit_hash128 *out)
{
    XXH3_state_t *s = XXH3_createState();
    if (!s) {
        memset(out, 0, sizeof(*out));
        return;
    }
    XXH3_128bits_reset(s);
    const char *model = refit_model_type(r->ctx->model);
    XXH3_128bits_update(s, model, strlen(model) + 1);
    int64_t head[8] = {r->copts.target, r->copts.tp, r->copts.rank, r->copts.ep, r->copts.fp8.enabled,
                       r->copts.fp8.rule, (int64_t)r->n_d, (int64_t)r->staging_need};
    XXH3_128bits_update(s, head, sizeof(head));
    XXH3_128bits_update(s, &r->copts.fp8.floor, sizeof(r->copts.fp8.floor));
    for (size_t i = 0; i < r->n_d; i++) {
        const struct rcv_dst *d = &r->d[i];
        int64_t w[4 + REFIT_MAX_DIMS] = {d->dtype, d->ndim, (int64_t)d->staging_off, (int64_t)d->nbytes};
        for (int k = 0; k < d->ndim && k < REFIT_MAX_DIMS; k++)
            w[4 + k] = d->shape[k];
        XXH3_128bits_update(s, d->name, strlen(d->name) + 1);
        XXH3_128bits_update(s, w, sizeof(w));
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(s));
    memcpy(out->b, c.digest, 16);
    XXH3_freeState(s);
}

/* ------------------------------------------------------------------ */
/* Retire: before a pull writes a buffer a replica record may name. */

static int all_owned(const refit_receiver_t *r)
{
    for (size_t i = 0; i < r->n_d; i++)
        if (!r->d[i].owned)
            return 0;
    return 1;
}

/* Wait until no live lease on us reads anything but `keep` (0: nothing). */
static void wait_pullers(refit_receiver_t *r, struct rf_fanout *f, uint64_t keep)
{
    /* Leases expire after refit.timeout: waiting a little longer always
     * ends with none left. */
    double deadline = rf_seconds() + (double)r->ctx->timeout_ms / 1000.0 + 1.0;
    double nap = 1;
    for (;;) {
        struct rf_lease *l = NULL;
        size_t n = 0, busy = 0;
        if (lease_read(r->ctx->store, f->self_load, &l, &n, NULL, NULL)) {
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
        sleep_ms(nap);
        nap = nap < 20 ? nap * 2 : 20;
    }
}

int rf_fanout_retire(refit_receiver_t *r, uint64_t v)
{
    (void)v;
    struct rf_fanout *f = r->fan;
    if (!f || !f->published)
        return 0;
    /* Double-buffered and not reallocated: the pull writes the back
     * buffer; the record names the front one, which stays as it is.  Only
     * readers of an older version, in the back buffer, must be done. */
    int intact = r->doubled && all_owned(r) && r->staging_need <= r->staging_len &&
                 f->pub_ptr == r->stage[r->front] && f->rec.status == RF_REPLICA_READY;
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

static int republish(refit_receiver_t *r, struct rf_fanout *f, uint64_t v)
{
    int buf = r->doubled ? r->front : 0;
    void *base = r->doubled ? r->stage[buf] : r->staging;
    refit_tp_region_t *reg = r->doubled ? r->stage_reg[buf] : r->staging_reg;
    uint64_t len = r->staging_need;
    if (!base || !reg || len > r->staging_len)
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
        rc = refit_tp_pack(r->tp, reg, &f->packed[buf].blob, &f->packed[buf].len);
        if (rc)
            return refit_error_push(rc, "replica %s: packing the staging key", r->id);
        f->packed[buf].reg = reg;
    }
    if (!f->addr && (rc = refit_tp_address_get(r->tp, &f->addr, &f->addr_len)))
        return rc;
    f->rec = (struct rf_replica){.id = r->id,
                                 .model = refit_model_type(r->ctx->model),
                                 .transport = refit_tp_plugin_name(r->tp),
                                 .address = {f->addr, f->addr_len},
                                 .rkey = {f->packed[buf].blob, f->packed[buf].len},
                                 .layout = f->layout,
                                 .version = v,
                                 .status = RF_REPLICA_READY,
                                 .keeps = r->doubled ? 2 : 1,
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

void rf_fanout_end(refit_receiver_t *r, uint64_t v, int rc, struct refit_pull_stats *st)
{
    struct rf_fanout *f = r->fan;
    if (!f)
        return;
    /* Published before the lease goes, so a receiver waiting for the
     * trainer's slot sees the new replica at the same time. */
    if (!rc && f->republish && republish(r, f, v)) {
        refit_log(REFIT_LOG_WARN, "fanout", "%s: not re-published: %s", r->id, refit_error_message());
        refit_error_clear();
    }
    release_lease(r, f);
    if (f->cur) {
        st->sources = 1;
        free(f->cur);
        f->cur = NULL;
    }
    st->fallbacks = f->fallbacks;
}

/* ------------------------------------------------------------------ */
/* Candidates */

struct cand {
    struct rf_replica *rep; /* NULL: the trainer */
    size_t load;
    uint64_t tie;
};

static void free_cands(struct cand *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(c[i].rep);
    free(c);
}

static int failed_before(char **failed, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(failed[i], id))
            return 1;
    return 0;
}

/* The trainer and the replicas READY at v with our layout, with loads. */
static int gather(refit_receiver_t *r, struct rf_fanout *f, uint64_t v, char **failed, size_t n_failed,
                  struct cand **out, size_t *n_out)
{
    char **keys = NULL;
    size_t nk = 0;
    int rc = refit_store_list(r->ctx->store, "replicas/", &keys, &nk);
    if (rc)
        return refit_error_push(rc, "listing replicas");
    struct cand *c = calloc(nk + 1, sizeof(*c));
    struct refit_store_get_item *it = calloc(nk + 1, sizeof(*it));
    char (*lk)[KEYSZ] = calloc(nk + 1, KEYSZ);
    if (!c || !it || !lk) {
        free(keys);
        free(c);
        free(it);
        free(lk);
        return REFIT_ENOMEM;
    }
    size_t n = 1; /* c[0]: the trainer */
    for (size_t i = 0; i < nk; i++)
        it[i].key = keys[i];
    if (nk && (rc = refit_store_get_many(r->ctx->store, it, nk)))
        goto out;
    for (size_t i = 0; i < nk; i++) {
        struct rf_replica *rep = NULL;
        if (it[i].status || rf_replica_decode(it[i].val, it[i].len, keys[i], &rep)) {
            if (!it[i].status)
                refit_log(REFIT_LOG_WARN, "fanout", "%s: ignoring %s", r->id, refit_error_message());
            refit_error_clear();
            continue;
        }
        /* The record must be the one its key names (ids are key components). */
        if (!strcmp(rep->id, keys[i] + strlen("replicas/")) && strcmp(rep->id, r->id) &&
            rep->status == RF_REPLICA_READY && rep->version == v &&
            !memcmp(rep->layout.b, f->layout.b, 16) && rep->length == r->staging_need &&
            !strcmp(rep->model, refit_model_type(r->ctx->model)) &&
            !strcmp(rep->transport, refit_tp_plugin_name(r->tp)) && !failed_before(failed, n_failed, rep->id)) {
            c[n].rep = rep;
            /* Spread pullers over equally loaded replicas. */
            c[n].tie = XXH3_64bits_withSeed(rep->id, strlen(rep->id), XXH3_64bits(r->id, strlen(r->id)));
            n++;
        } else {
            free(rep);
        }
    }
    /* Loads: one round trip for all (the items are reused). */
    struct refit_store_get_item *li = it;
    for (size_t i = 0; i < nk + 1; i++) {
        free(it[i].val);
        it[i] = (struct refit_store_get_item){0};
    }
    for (size_t i = 0; i < n && !rc; i++) {
        rc = rf_key_load(lk[i], c[i].rep ? c[i].rep->id : TRAINER);
        li[i].key = lk[i];
    }
    if (!rc)
        rc = refit_store_get_many(r->ctx->store, li, n);
    uint64_t now = refit_time_ms();
    for (size_t i = 0; i < n && !rc; i++) {
        struct rf_lease *l = NULL;
        size_t nl = 0;
        if (!li[i].status && !rf_lease_decode(li[i].val, li[i].len, lk[i], &l, &nl))
            for (size_t j = 0; j < nl; j++)
                c[i].load += l[j].expires_ms > now && strcmp(l[j].id, r->id);
        refit_error_clear();
        free(l);
    }
out:
    for (size_t i = 0; i < nk + 1; i++)
        free(it[i].val);
    free(it);
    free(lk);
    free(keys);
    if (rc) {
        free_cands(c, n);
        return rc;
    }
    *out = c;
    *n_out = n;
    return 0;
}

/* The least-loaded candidate with a free slot; ties go to a replica (the
 * trainer stays free for receivers no replica serves yet). */
static ptrdiff_t choose(const struct rf_fanout *f, const struct cand *c, size_t n)
{
    ptrdiff_t best = -1;
    for (size_t i = 0; i < n; i++) {
        if ((f->max > 0 && c[i].load >= (size_t)f->max))
            continue;
        if (best < 0 || c[i].load < c[best].load ||
            (c[i].load == c[best].load &&
             ((!c[best].rep && c[i].rep) || (c[best].rep && c[i].rep && c[i].tie < c[best].tie))))
            best = (ptrdiff_t)i;
    }
    return best;
}

static int no_slot_error(refit_receiver_t *r, struct rf_fanout *f, uint64_t v, const struct cand *c, size_t n)
{
    char msg[900];
    size_t at = 0;
    for (size_t i = 0; i < n && at < sizeof(msg) - 80; i++) {
        at += (size_t)snprintf(msg + at, sizeof(msg) - at, "%s%s %zu/%lld", i ? ", " : "",
                                   c[i].rep ? c[i].rep->id : TRAINER, c[i].load, (long long)f->max);
    }
    return refit_error_set(REFIT_ETIMEDOUT, "receiver %s: no source of v%llu had a free slot within %lld ms "
                           "(pullers / max_pullers_per_source: %s)", r->id, (unsigned long long)v,
                           (long long)r->ctx->timeout_ms, n ? msg : "none");
}

/* ------------------------------------------------------------------ */
/* Copying a replica's image */

static struct rf_rpeer *peer_for(refit_receiver_t *r, struct rf_fanout *f, const struct rf_replica *rep, int *rc)
{
    struct rf_rpeer *p = NULL;
    for (size_t i = 0; i < f->n_peers && !p; i++)
        if (f->peers[i].id && !strcmp(f->peers[i].id, rep->id))
            p = &f->peers[i];
    if (p && (p->addr_len != rep->address.len || memcmp(p->addr, rep->address.data, p->addr_len)))
        drop_peer(r, p); /* restarted elsewhere */
    if (!p || !p->id) {
        if (!p) {
            for (size_t i = 0; i < f->n_peers && !p; i++)
                if (!f->peers[i].id)
                    p = &f->peers[i];
            if (!p) {
                struct rf_rpeer *np = realloc(f->peers, (f->n_peers + 1) * sizeof(*np));
                if (!np) {
                    *rc = REFIT_ENOMEM;
                    return NULL;
                }
                f->peers = np;
                p = &np[f->n_peers++];
            }
        }
        memset(p, 0, sizeof(*p));
        p->id = strdup(rep->id);
        p->addr = malloc(rep->address.len ? rep->address.len : 1);
        if (!p->id || !p->addr) {
            drop_peer(r, p);
            *rc = REFIT_ENOMEM;
            return NULL;
        }
        memcpy(p->addr, rep->address.data, rep->address.len);
        p->addr_len = rep->address.len;
        char name[REFIT_RECORD_MAX_ID + 16];
        snprintf(name, sizeof(name), "replica %s", rep->id);
        if ((*rc = refit_tp_connect(r->tp, rep->address.data, rep->address.len, name, &p->peer))) {
            refit_error_push(*rc, "connecting to replica %s", rep->id);
            drop_peer(r, p);
            return NULL;
        }
    }
    *rc = 0;
    return p;
}

static refit_tp_rkey_t *rkey_for(refit_receiver_t *r, struct rf_rpeer *p, const struct rf_replica *rep, int *rc)
{
    for (int k = 0; k < 2; k++)
        if (p->keys[k].rkey && p->keys[k].len == rep->rkey.len && !memcmp(p->keys[k].blob, rep->rkey.data, p->keys[k].len))
            return p->keys[k].rkey;
    int k = p->next;
    p->next ^= 1;
    refit_tp_release(r->tp, p->keys[k].rkey);
    free(p->keys[k].blob);
    p->keys[k].rkey = NULL;
    p->keys[k].blob = malloc(rep->rkey.len ? rep->rkey.len : 1);
    if (!p->keys[k].blob) {
        *rc = REFIT_ENOMEM;
        return NULL;
    }
    memcpy(p->keys[k].blob, rep->rkey.data, rep->rkey.len);
    p->keys[k].len = rep->rkey.len;
    if ((*rc = refit_tp_unpack(r->tp, p->peer, rep->rkey.data, rep->rkey.len, &p->keys[k].rkey))) {
        refit_error_push(*rc, "replica %s: remote key", rep->id);
        free(p->keys[k].blob);
        p->keys[k].blob = NULL;
        p->keys[k].len = 0;
        return NULL;
    }
    return p->keys[k].rkey;
}

static int local_staging(void *arg, uint32_t buf, uint64_t off, uint64_t len, refit_tp_region_t **region,
                         uint64_t *region_off)
{
    struct rf_fanout *f = arg;
    (void)buf;
    (void)len;
    *region = f->local;
    *region_off = off;
    return 0;
}

/* The name of the destination holding staging offset off (messages). */
static const char *dst_at(const refit_receiver_t *r, uint64_t off)
{
    const char *name = "?";
    for (size_t i = 0; i < r->n_d; i++)
        if (r->d[i].staging_off <= off)
            name = r->d[i].name;
    return name;
}

static int verify_chunks(void *arg, size_t first, size_t n)
{
    struct rf_fanout *f = arg;
    refit_receiver_t *r = f->r;
    if (r->ctx->verify == RF_VERIFY_OFF)
        return 0;
    double t0 = rf_seconds();
    const struct rf_replica *rep = f->cur;
    int rc = 0;
    for (size_t k = first; k < first + n && !rc; k++) {
        if (r->ctx->verify == RF_VERIFY_SAMPLE) {
            uint64_t kk = k, pick = XXH3_64bits(&kk, sizeof(kk));
            if ((double)(pick % 10000) >= r->ctx->verify_sample * 10000.0)
                continue;
        }
        uint64_t off = (uint64_t)k * rep->chunk;
        uint64_t len = rep->length - off < rep->chunk ? rep->length - off : rep->chunk;
        uint64_t got = XXH3_64bits((const char *)r->staging + off, len);
        if (got != rep->sums[k])
            rc = refit_error_set(REFIT_ECHECKSUM,
                                 "replica %s, v%llu: checksum mismatch in chunk %zu (staging bytes %llu.., "
                                 "destination '%s'): expected %016llx, got %016llx",
                                 rep->id, (unsigned long long)rep->version, k, (unsigned long long)off,
                                 dst_at(r, off), (unsigned long long)rep->sums[k], (unsigned long long)got);
    }
    r->verify_s += rf_seconds() - t0;
    return rc;
}

static int copy_replica(refit_receiver_t *r, struct rf_fanout *f, const struct rf_replica *rep,
                        struct refit_pull_stats *st)
{
    if (rep->length > r->staging_len || !r->staging_reg)
        return refit_error_set(REFIT_EPROTO, "replica %s: %llu bytes do not fit this receiver's staging", rep->id,
                               (unsigned long long)rep->length);
    int rc = 0;
    struct rf_rpeer *p = peer_for(r, f, rep, &rc);
    refit_tp_rkey_t *key = p ? rkey_for(r, p, rep, &rc) : NULL;
    if (!key)
        return rc;
    struct rf_plan plan = {0};
    plan.n_desc = rep->n_sums;
    plan.desc = calloc(plan.n_desc ? plan.n_desc : 1, sizeof(*plan.desc));
    if (!plan.desc)
        return REFIT_ENOMEM;
    for (size_t k = 0; k < plan.n_desc; k++) {
        uint64_t off = (uint64_t)k * rep->chunk;
        plan.desc[k] = (struct rf_desc){.source = 0, .region = 0, .remote_off = off, .buf = RF_BUF_STAGING,
                                        .local_off = off,
                                        .len = rep->length - off < rep->chunk ? rep->length - off : rep->chunk};
    }
    refit_tp_rkey_t *keys[1] = {key};
    struct rf_exec_source es = {p->peer, keys, 1, rep->id};
    /* A few MiB per descriptor and a few descriptors per batch, so the
     * checksums of one batch overlap the wire time of the next. */
    uint32_t batch = r->ctx->flush_every < 8 ? (uint32_t)r->ctx->flush_every : 8;
    f->r = r;
    f->local = r->staging_reg;
    struct rf_exec_stats xs = {0};
    st->xfer_start = rf_seconds();
    rc = rf_exec_run(r->tp, &plan, &es, 1, batch, refit_tp_timeout_ms(r->tp), local_staging, verify_chunks, f, &xs);
    st->xfer_end = rf_seconds();
    st->transfer_s = st->xfer_end - st->xfer_start - xs.idle_wire_s;
    if (st->transfer_s < 0)
        st->transfer_s = 0;
    st->bytes_wire = xs.bytes;
    st->descriptors = xs.descriptors;
    free(plan.desc);
    if (rc)
        refit_error_push(rc, "copying v%llu from replica %s", (unsigned long long)rep->version, rep->id);
    return rc;
}

/* After our lease is in the list: the record must still offer what we
 * chose (else the replica may already be overwriting it). */
static int still_offered(refit_receiver_t *r, const struct rf_replica *rep, uint64_t v, int exact)
{
    char key[KEYSZ];
    void *val = NULL;
    size_t len = 0;
    struct rf_replica *now = NULL;
    int rc = rf_key_replica(key, rep->id);
    if (!rc)
        rc = refit_store_get(r->ctx->store, key, &val, &len);
    if (!rc)
        rc = rf_replica_decode(val, len, key, &now);
    free(val);
    if (rc)
        return refit_error_push(rc == REFIT_ENOENT ? REFIT_ESTALE : rc, "replica %s is gone", rep->id);
    int same = now->rkey.len == rep->rkey.len && !memcmp(now->rkey.data, rep->rkey.data, rep->rkey.len);
    int ok = now->status == RF_REPLICA_READY &&
             ((now->version == v && same) || (!exact && rep->keeps > 1 && now->keeps > 1 && now->version == v + 1));
    if (!ok)
        rc = refit_error_set(REFIT_ESTALE, "replica %s is %s at v%llu (pulling v%llu)", rep->id,
                             rf_replica_status_name(now->status), (unsigned long long)now->version,
                             (unsigned long long)v);
    free(now);
    return rc;
}

int rf_fanout_replica(const refit_receiver_t *r)
{
    return r->fan && r->fan->cur;
}

int rf_fanout_fence(refit_receiver_t *r, uint64_t v)
{
    struct rf_fanout *f = r->fan;
    /* Our lease still held (with a margin for the copy's last step). */
    struct rf_lease *l = NULL;
    size_t n = 0;
    int rc = lease_read(r->ctx->store, f->lease_key, &l, &n, NULL, NULL), held = 0;
    uint64_t now = refit_time_ms(), spare = (uint64_t)r->ctx->timeout_ms / 4 < 500 ? (uint64_t)r->ctx->timeout_ms / 4 : 500;
    for (size_t i = 0; !rc && i < n; i++)
        held |= !strcmp(l[i].id, r->id) && l[i].expires_ms > now + spare;
    free(l);
    if (!rc && !held)
        rc = refit_error_set(REFIT_ESTALE, "fence: the lease on replica %s expired during the pull of v%llu",
                             f->cur->id, (unsigned long long)v);
    /* A double-buffered replica may have moved on to v+1: v stays in its
     * other buffer until its next pull, which waits for our lease. */
    if (!rc)
        rc = still_offered(r, f->cur, v, 0);
    if (rc)
        return refit_error_push(rc, "fence");
    f->fenced = 1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Choosing a source */

int rf_fanout_pull(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st, int *done)
{
    struct rf_fanout *f = r->fan;
    *done = 0;
    f->fallbacks = 0;
    layout_key(r, &f->layout);
    double deadline = rf_seconds() + (double)r->ctx->timeout_ms / 1000.0, nap = 1;
    char *failed[64];
    size_t n_failed = 0;
    int rc = 0;
    for (;;) {
        struct cand *c = NULL;
        size_t n = 0;
        if ((rc = gather(r, f, v, failed, n_failed, &c, &n)))
            break;
        ptrdiff_t b = choose(f, c, n);
        if (b < 0) {
            if (rf_seconds() > deadline) {
                rc = no_slot_error(r, f, v, c, n);
                free_cands(c, n);
                break;
            }
            free_cands(c, n);
            sleep_ms(nap);
            nap = nap < 25 ? nap * 2 : 25;
            continue;
        }
        struct rf_replica *rep = c[b].rep;
        c[b].rep = NULL;
        free_cands(c, n);
        const char *sid = rep ? rep->id : TRAINER;
        if ((rc = rf_key_load(f->lease_key, sid))) {
            free(rep);
            break;
        }
        rc = lease_edit(r->ctx->store, f->lease_key, r->id, 1, f->max, v, r->ctx->timeout_ms);
        if (rc == REFIT_EAGAIN) { /* taken meanwhile */
            free(rep);
            rc = 0;
            continue;
        }
        if (rc) {
            free(rep);
            break;
        }
        f->lease_held = 1;
        if (!rep) {
            snprintf(st->source, sizeof(st->source), "%s", TRAINER);
            break; /* the normal pull path, under our lease */
        }
        f->cur = rep;
        f->fenced = 0;
        rc = still_offered(r, rep, v, 1);
        if (!rc)
            rc = copy_replica(r, f, rep, st);
        if (!rc) {
            rc = rf_rcv_commit(r, v, st);
            if (!rc || f->fenced) {
                /* Committed (an error now is the acknowledgement's). */
                snprintf(st->source, sizeof(st->source), "%s", rep->id);
                *done = 1;
                break;
            }
        }
        /* Nothing committed: another source, within the same deadline. */
        refit_log(REFIT_LOG_WARN, "fanout", "%s: v%llu from replica %s failed, trying another source: %s", r->id,
                  (unsigned long long)v, rep->id, refit_error_message());
        refit_error_clear();
        rc = 0;
        f->fallbacks++;
        for (size_t i = 0; i < f->n_peers; i++)
            if (f->peers[i].id && !strcmp(f->peers[i].id, rep->id))
                drop_peer(r, &f->peers[i]);
        if (n_failed < sizeof(failed) / sizeof(failed[0]) && (failed[n_failed] = strdup(rep->id)))
            n_failed++;
        release_lease(r, f);
        free(rep);
        f->cur = NULL;
        if (rf_seconds() > deadline) {
            rc = refit_error_set(REFIT_ETIMEDOUT, "receiver %s: v%llu: no source succeeded within %lld ms", r->id,
                                 (unsigned long long)v, (long long)r->ctx->timeout_ms);
            break;
        }
    }
    for (size_t i = 0; i < n_failed; i++)
        free(failed[i]);
    return rc;
}
