/* fanout.c — tree fan-out as a receive strategy (rf_mode_fanout of
 * receiver.h; docs/fanout.md): receivers re-publish the version they
 * committed as replicas (fanout_replica.c), and a receiver chooses among
 * the trainer and the replicas the least-loaded source with a free slot
 * (refit.fanout.max_pullers_per_source), takes its lease, and either
 * copies a replica's staging image (its chunks verified against the
 * record's checksums as they land) or pulls the trainer the normal way
 * (rf_pull_transfer).  A replica that fails before the commit is given up
 * for another source within the same refit.timeout (the retry operation).
 * Fan-out needs pull mode through staging (not refit.in_place): the
 * receiver uses it only then. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "exec.h"
#include "fanout.h"
#include "refit/log.h"

void rf_fanout_drop_peer(refit_receiver_t *r, struct rf_rpeer *p)
{
    for (int k = 0; k < 2; k++) {
        refit_transport_release(r->tp, p->keys[k].rkey);
        free(p->keys[k].blob);
    }
    refit_transport_disconnect(r->tp, p->peer);
    free(p->addr);
    free(p->id);
    memset(p, 0, sizeof(*p));
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
                       r->copts.fp8.rule, (int64_t)r->dests.n, (int64_t)r->plan.staging_need};
    XXH3_128bits_update(s, head, sizeof(head));
    /* targets beyond the enum's two (sglang, transformers) by name; hf and
     * vllm keep their keys */
    const char *tn = rf_receiver_target(r);
    if (strcmp(tn, "hf") && strcmp(tn, "vllm"))
        XXH3_128bits_update(s, tn, strlen(tn) + 1);
    XXH3_128bits_update(s, &r->copts.fp8.floor, sizeof(r->copts.fp8.floor));
    for (size_t i = 0; i < r->dests.n; i++) {
        const struct rf_dst *d = &r->dests.d[i];
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

static int failed_before(const struct rf_fanout *f, const char *id)
{
    for (size_t i = 0; i < f->n_failed; i++)
        if (!strcmp(f->failed[i], id))
            return 1;
    return 0;
}

/* The replica records as last read (replicas/<id> values), kept across
 * the rounds of one source choice: after the first listing only the
 * records a watch names as changed are read again (docs/scale.md §5). */
struct rep_cache {
    struct refit_store_get_item *it; /* keys and values owned */
    size_t n, cap;
    int valid;
};

static void rep_cache_free(struct rep_cache *rc)
{
    for (size_t i = 0; i < rc->n; i++) {
        free((char *)rc->it[i].key);
        free(rc->it[i].val);
    }
    free(rc->it);
    memset(rc, 0, sizeof(*rc));
}

/* Set key's value (status ENOENT: drop it), taking val. */
static int rep_cache_set(struct rep_cache *rc, const char *key, void *val, size_t len, int status)
{
    size_t i = 0;
    while (i < rc->n && strcmp(rc->it[i].key, key))
        i++;
    if (status == REFIT_ENOENT) {
        free(val);
        if (i < rc->n) {
            free((char *)rc->it[i].key);
            free(rc->it[i].val);
            rc->it[i] = rc->it[--rc->n];
        }
        return 0;
    }
    if (i == rc->n) {
        if (rc->n == rc->cap) {
            size_t nc = rc->cap ? rc->cap * 2 : 16;
            struct refit_store_get_item *ni = realloc(rc->it, nc * sizeof(*ni));
            if (!ni) {
                free(val);
                return REFIT_ENOMEM;
            }
            rc->it = ni;
            rc->cap = nc;
        }
        char *k = strdup(key);
        if (!k) {
            free(val);
            return REFIT_ENOMEM;
        }
        rc->it[rc->n++] = (struct refit_store_get_item){.key = k};
    } else {
        free(rc->it[i].val);
    }
    rc->it[i].val = val;
    rc->it[i].len = len;
    rc->it[i].status = status;
    return 0;
}

/* Read keys (below replicas/) into the cache, in one round trip. */
static int rep_cache_read(refit_receiver_t *r, struct rep_cache *rc, char **keys, size_t nk)
{
    if (!nk)
        return 0;
    struct refit_store_get_item *it = calloc(nk, sizeof(*it));
    if (!it)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < nk; i++)
        it[i].key = keys[i];
    int rc2 = refit_store_get_many(r->ctx->store, it, nk);
    for (size_t i = 0; i < nk; i++) {
        if (!rc2)
            rc2 = rep_cache_set(rc, keys[i], it[i].val, it[i].len, it[i].status);
        else
            free(it[i].val);
    }
    free(it);
    return rc2 ? refit_error_push(rc2, "reading replica records") : 0;
}

/* Every replica record: listed and read when the cache is not valid. */
static int rep_cache_fill(refit_receiver_t *r, struct rep_cache *rc)
{
    if (rc->valid)
        return 0;
    char **keys = NULL;
    size_t nk = 0;
    int st = refit_store_list(r->ctx->store, "replicas/", &keys, &nk);
    if (st)
        return refit_error_push(st, "listing replicas");
    for (size_t i = 0; i < rc->n; i++) {
        free((char *)rc->it[i].key);
        free(rc->it[i].val);
    }
    rc->n = 0;
    st = rep_cache_read(r, rc, keys, nk);
    free(keys);
    rc->valid = !st;
    return st;
}

/* The trainer and the replicas READY at v with our layout, with loads. */
static int gather_candidates(refit_receiver_t *r, struct rf_fanout *f, uint64_t v, struct rep_cache *cache,
                             struct cand **out, size_t *n_out)
{
    int rc = rep_cache_fill(r, cache);
    if (rc)
        return rc;
    size_t nk = cache->n;
    struct cand *c = calloc(nk + 1, sizeof(*c));
    struct refit_store_get_item *li = calloc(nk + 1, sizeof(*li));
    char (*lk)[RF_FANOUT_KEYSZ] = calloc(nk + 1, RF_FANOUT_KEYSZ);
    if (!c || !li || !lk) {
        free(c);
        free(li);
        free(lk);
        return REFIT_ENOMEM;
    }
    size_t n = 1; /* c[0]: the trainer */
    for (size_t i = 0; i < nk; i++) {
        const struct refit_store_get_item *it = &cache->it[i];
        struct rf_replica *rep = NULL;
        if (it->status || rf_replica_decode(it->val, it->len, it->key, &rep)) {
            if (!it->status)
                refit_log(REFIT_LOG_WARN, "fanout", "%s: ignoring %s", r->id, refit_error_message());
            refit_error_clear();
            continue;
        }
        /* The record must be the one its key names (ids are key components). */
        if (!strcmp(rep->id, it->key + strlen("replicas/")) && strcmp(rep->id, r->id) &&
            rep->status == RF_REPLICA_READY && rep->version == v &&
            !memcmp(rep->layout.b, f->layout.b, 16) && rep->length == r->plan.staging_need &&
            !strcmp(rep->model, refit_model_type(r->ctx->model)) &&
            !strcmp(rep->transport, refit_transport_plugin_name(r->tp)) && !failed_before(f, rep->id)) {
            c[n].rep = rep;
            /* Spread pullers over equally loaded replicas. */
            c[n].tie = XXH3_64bits_withSeed(rep->id, strlen(rep->id), XXH3_64bits(r->id, strlen(r->id)));
            n++;
        } else {
            free(rep);
        }
    }
    /* Loads: one round trip for all candidates. */
    for (size_t i = 0; i < n && !rc; i++) {
        rc = rf_key_load(lk[i], c[i].rep ? c[i].rep->id : RF_FANOUT_TRAINER);
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
    for (size_t i = 0; i < nk + 1; i++)
        free(li[i].val);
    free(li);
    free(lk);
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
static ptrdiff_t least_loaded(const struct rf_fanout *f, const struct cand *c, size_t n)
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
                                   c[i].rep ? c[i].rep->id : RF_FANOUT_TRAINER, c[i].load, (long long)f->max);
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
        rf_fanout_drop_peer(r, p); /* restarted elsewhere */
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
            rf_fanout_drop_peer(r, p);
            *rc = REFIT_ENOMEM;
            return NULL;
        }
        memcpy(p->addr, rep->address.data, rep->address.len);
        p->addr_len = rep->address.len;
        char name[REFIT_RECORD_MAX_ID + 16];
        snprintf(name, sizeof(name), "replica %s", rep->id);
        if ((*rc = refit_transport_connect(r->tp, rep->address.data, rep->address.len, name, &p->peer))) {
            refit_error_push(*rc, "connecting to replica %s", rep->id);
            rf_fanout_drop_peer(r, p);
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
    refit_transport_release(r->tp, p->keys[k].rkey);
    free(p->keys[k].blob);
    p->keys[k].rkey = NULL;
    p->keys[k].blob = malloc(rep->rkey.len ? rep->rkey.len : 1);
    if (!p->keys[k].blob) {
        *rc = REFIT_ENOMEM;
        return NULL;
    }
    memcpy(p->keys[k].blob, rep->rkey.data, rep->rkey.len);
    p->keys[k].len = rep->rkey.len;
    if ((*rc = refit_transport_unpack(r->tp, p->peer, rep->rkey.data, rep->rkey.len, &p->keys[k].rkey))) {
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
    for (size_t i = 0; i < r->dests.n; i++)
        if (r->dests.d[i].staging_off <= off)
            name = r->dests.d[i].name;
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
        uint64_t got = XXH3_64bits((const char *)r->bufs.staging + off, len);
        if (got != rep->sums[k])
            rc = refit_error_set(REFIT_ECHECKSUM,
                                 "replica %s, v%llu: checksum mismatch in chunk %zu (staging bytes %llu.., "
                                 "destination '%s'): expected %016llx, got %016llx",
                                 rep->id, (unsigned long long)rep->version, k, (unsigned long long)off,
                                 dst_at(r, off), (unsigned long long)rep->sums[k], (unsigned long long)got);
    }
    r->verify.seconds += rf_seconds() - t0;
    return rc;
}

static int copy_replica(refit_receiver_t *r, struct rf_fanout *f, const struct rf_replica *rep,
                        struct refit_pull_stats *st)
{
    if (rep->length > r->bufs.staging_len || !r->bufs.staging_reg)
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
    f->local = r->bufs.staging_reg;
    struct rf_exec_stats xs = {.failed_source = -1};
    st->xfer_start = rf_seconds();
    rc = rf_exec_run(r->tp, &plan, &es, 1, batch, refit_transport_timeout_ms(r->tp), local_staging, verify_chunks, f, &xs);
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

/* ------------------------------------------------------------------ */
/* The strategy */

static int fanout_create(refit_receiver_t *r)
{
    return rf_fanout_create(r);
}

static void forget_failed(struct rf_fanout *f)
{
    for (size_t i = 0; i < f->n_failed; i++)
        free(f->failed[i]);
    f->n_failed = 0;
}

/* Before the buffers: retire what we offer as a replica; the pull's
 * deadline and layout key. */
static int fanout_prepare(refit_receiver_t *r, uint64_t v)
{
    (void)v;
    struct rf_fanout *f = r->mode_state;
    int rc = rf_fanout_retire(r, f);
    f->fallbacks = 0;
    f->fenced = 0;
    forget_failed(f);
    layout_key(r, &f->layout);
    f->deadline = rf_seconds() + (double)r->ctx->timeout_ms / 1000.0;
    return rc;
}

/* Until a lease changes (load/: one freed, the trainer's included) or,
 * looked at without waiting, a replica record (replicas/), or `ms`
 * passes: two cheap round trips a round instead of re-reading every
 * replica and lease list on a timer (docs/scale.md §5).  The replica
 * records that changed are read into the cache (it is listed again when
 * the store kept no history). */
static void wait_slot_change(refit_receiver_t *r, struct rep_cache *cache, uint64_t *c_rep, uint64_t *c_load,
                             int64_t ms)
{
    char **k = NULL;
    size_t n = 0;
    int rc = refit_store_watch(r->ctx->store, "replicas/", *c_rep, c_rep, 0, &k, &n);
    if (rc == 0 && n && rep_cache_read(r, cache, k, n))
        cache->valid = 0;
    free(k);
    k = NULL;
    if (rc == REFIT_ERANGE)
        cache->valid = 0;
    if ((rc == 0 && n) || rc == REFIT_ERANGE) {
        refit_error_clear();
        return;
    }
    if (rc && rc != REFIT_ETIMEDOUT) /* the store is down: do not spin */
        rf_sleep_ms((double)ms);
    else
        refit_store_watch(r->ctx->store, "load/", *c_load, c_load, ms, &k, &n);
    free(k);
    refit_error_clear();
}

/* A candidate with a free slot, its lease taken (*rep NULL: the trainer). */
static int take_source(refit_receiver_t *r, struct rf_fanout *f, uint64_t v, struct rf_replica **rep)
{
    uint64_t c_rep = 0, c_load = 0;
    char **k = NULL;
    size_t nk = 0;
    /* The cursors first, then the look: a change between them wakes the
     * first wait. */
    refit_store_watch(r->ctx->store, "replicas/", 0, &c_rep, 0, &k, &nk);
    free(k);
    k = NULL;
    refit_store_watch(r->ctx->store, "load/", 0, &c_load, 0, &k, &nk);
    free(k);
    refit_error_clear();
    struct rep_cache cache = {0};
    for (;;) {
        struct cand *c = NULL;
        size_t n = 0;
        int rc = gather_candidates(r, f, v, &cache, &c, &n);
        if (rc) {
            rep_cache_free(&cache);
            return rc;
        }
        ptrdiff_t b = least_loaded(f, c, n);
        if (b < 0) {
            if (rf_seconds() > f->deadline)
                rc = no_slot_error(r, f, v, c, n);
            free_cands(c, n);
            if (rc) {
                rep_cache_free(&cache);
                return rc;
            }
            wait_slot_change(r, &cache, &c_rep, &c_load, RF_LEASE_WATCH_MS);
            continue;
        }
        *rep = c[b].rep;
        c[b].rep = NULL;
        free_cands(c, n);
        if ((rc = rf_key_load(f->lease_key, *rep ? (*rep)->id : RF_FANOUT_TRAINER)) == 0)
            rc = rf_lease_edit(r->ctx->store, f->lease_key, r->id, 1, f->max, v, r->ctx->timeout_ms);
        if (!rc) {
            f->lease_held = 1;
            rep_cache_free(&cache);
            return 0;
        }
        free(*rep);
        *rep = NULL;
        if (rc != REFIT_EAGAIN) { /* EAGAIN: taken meanwhile */
            rep_cache_free(&cache);
            return rc;
        }
    }
}

/* The fence of a replica: our lease, and its record still offering v. */
static int replica_fence(refit_receiver_t *r, const struct rf_fanout *f, uint64_t v, int exact)
{
    const struct rf_replica *rep = f->cur;
    struct rf_fence_item it = {RF_FENCE_REPLICA, rep->id, rep->keeps, rep->rkey, exact ? NULL : f->lease_key, r->id};
    return rf_fence(r, &it, 1, v, exact);
}

static int fanout_transfer(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st)
{
    struct rf_fanout *f = r->mode_state;
    struct rf_replica *rep = NULL;
    int rc = take_source(r, f, v, &rep);
    if (rc)
        return rc;
    if (!rep) {
        snprintf(st->source, sizeof(st->source), "%s", RF_FANOUT_TRAINER);
        return rf_pull_transfer(r, v, st); /* the normal pull path, under our lease */
    }
    f->cur = rep;
    f->fenced = 0;
    rc = replica_fence(r, f, v, 1);
    return rc ? rc : copy_replica(r, f, rep, st);
}

static int fanout_fence(refit_receiver_t *r, uint64_t v)
{
    struct rf_fanout *f = r->mode_state;
    if (!f->cur)
        return rf_fence_sources(r, v);
    /* A double-buffered replica may have moved on to v+1: v stays in its
     * other buffer until its next pull, which waits for our lease. */
    int rc = replica_fence(r, f, v, 0);
    if (rc)
        return refit_error_push(rc, "fence");
    f->fenced = 1;
    return 0;
}

/* A replica failed before anything was committed: another source, within
 * the same deadline. */
static int fanout_retry(refit_receiver_t *r, uint64_t v, int *rc)
{
    struct rf_fanout *f = r->mode_state;
    struct rf_replica *rep = f->cur;
    if (!rep || f->fenced)
        return 0; /* the trainer's pull, or committed (an error now is the acknowledgement's) */
    refit_log(REFIT_LOG_WARN, "fanout", "%s: v%llu from replica %s failed, trying another source: %s", r->id,
              (unsigned long long)v, rep->id, refit_error_message());
    refit_error_clear();
    f->fallbacks++;
    for (size_t i = 0; i < f->n_peers; i++)
        if (f->peers[i].id && !strcmp(f->peers[i].id, rep->id))
            rf_fanout_drop_peer(r, &f->peers[i]);
    if (f->n_failed < RF_FANOUT_MAX_FAILED && (f->failed[f->n_failed] = strdup(rep->id)))
        f->n_failed++;
    rf_fanout_release_lease(r, f);
    free(rep);
    f->cur = NULL;
    if (rf_seconds() > f->deadline) {
        *rc = refit_error_set(REFIT_ETIMEDOUT, "receiver %s: v%llu: no source succeeded within %lld ms", r->id,
                              (unsigned long long)v, (long long)r->ctx->timeout_ms);
        return 0;
    }
    *rc = 0;
    return 1;
}

static void fanout_end(refit_receiver_t *r, uint64_t v, int rc, struct refit_pull_stats *st)
{
    struct rf_fanout *f = r->mode_state;
    if (f->cur && (!rc || f->fenced))
        snprintf(st->source, sizeof(st->source), "%s", f->cur->id);
    /* Published before the lease goes, so a receiver waiting for the
     * trainer's slot sees the new replica at the same time. */
    if (!rc && f->republish && rf_fanout_republish(r, f, v)) {
        refit_log(REFIT_LOG_WARN, "fanout", "%s: not re-published: %s", r->id, refit_error_message());
        refit_error_clear();
    }
    rf_fanout_release_lease(r, f);
    if (f->cur) {
        st->sources = 1;
        free(f->cur);
        f->cur = NULL;
    }
    forget_failed(f);
    st->fallbacks = f->fallbacks;
}

const struct rf_rcv_mode rf_mode_fanout = {
    .size = sizeof(struct rf_rcv_mode),
    .name = "fanout",
    .create = fanout_create,
    .destroy = rf_fanout_destroy,
    .planned = rf_mode_no_planned,
    .plan_drop = rf_mode_no_destroy,
    .prepare = fanout_prepare,
    .transfer = fanout_transfer,
    .fence = fanout_fence,
    .retry = fanout_retry,
    .end = fanout_end,
};
