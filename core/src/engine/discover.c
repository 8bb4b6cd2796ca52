/* discover.c — the discover stage of a pull (receiver.h): which sources
 * are live and READY, which version to pull, the sources at it with their
 * catalogs (cached by content hash) and Megatron layouts, and the key of
 * what the plan is made from.  The fence is fence.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "bells.h"
#include "receiver.h"
#include "refit/log.h"

static const refit_catalog_t *catalog_get(refit_receiver_t *r, const struct refit_hash128 *h, int *rc)
{
    struct rf_discover *d = &r->disc;
    for (size_t i = 0; i < d->n_cats; i++)
        if (!memcmp(d->cats[i].hash.b, h->b, 16))
            return d->cats[i].cat;
    refit_catalog_t *c = NULL;
    *rc = refit_catalog_fetch(r->ctx->store, h, &c);
    if (*rc)
        return NULL;
    void *nc = realloc(d->cats, (d->n_cats + 1) * sizeof(*d->cats));
    if (!nc) {
        refit_catalog_destroy(c);
        *rc = REFIT_ENOMEM;
        return NULL;
    }
    d->cats = nc;
    d->cats[d->n_cats].hash = *h;
    d->cats[d->n_cats].cat = c;
    d->n_cats++;
    return c;
}

static void source_fini(struct rf_source *s)
{
    free(s->rec);
    refit_layout_destroy(s->meg);
    free(s->id);
    memset(s, 0, sizeof(*s));
}

void rf_discover_drop_sources(struct rf_discover *d)
{
    for (size_t i = 0; i < d->n_src; i++)
        source_fini(&d->src[i]);
    free(d->src);
    d->src = NULL;
    d->n_src = 0;
}

static void ids_free(struct rf_discover *d);
static void presum_free(struct rf_discover *d);

void rf_discover_fini(struct rf_discover *d)
{
    rf_discover_drop_sources(d);
    ids_free(d);
    presum_free(d);
    for (size_t i = 0; i < d->n_cats; i++)
        refit_catalog_destroy(d->cats[i].cat);
    free(d->cats);
    free(d->epoch);
    memset(d, 0, sizeof(*d));
}

void rf_seen_free(struct rf_seen *sv)
{
    for (size_t i = 0; sv->rec && i < sv->n; i++)
        free(sv->rec[i]);
    free(sv->rec);
    sv->rec = NULL;
    sv->n = 0;
}

static int cmp_rec(const void *a, const void *b)
{
    return strcmp((*(struct refit_source_record *const *)a)->source_id,
                  (*(struct refit_source_record *const *)b)->source_id);
}

/* Whether a record read under sources/<id> is one to plan from. */
static int usable(refit_receiver_t *r, const char *id, struct refit_source_record *rec, bool stale)
{
    if (rec->status == REFIT_SOURCE_READY && !stale && !strcmp(rec->model, refit_model_type(r->ctx->model)))
        return 1;
    if (stale && rec->status == REFIT_SOURCE_READY)
        refit_log(REFIT_LOG_INFO, "receiver", "%s: source %s is stale (no heartbeat)", r->id, id);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The set of source ids, kept by a watch on sources/ */

static void gone_free(struct rf_discover *d)
{
    for (size_t i = 0; i < d->n_gone; i++)
        free(d->gone[i]);
    free(d->gone);
    d->gone = NULL;
    d->n_gone = 0;
}

static void ids_free(struct rf_discover *d)
{
    gone_free(d);
    for (size_t i = 0; i < d->n_ids; i++)
        free(d->ids[i]);
    free(d->ids);
    d->ids = NULL;
    d->n_ids = 0;
    d->ids_gen++;
}

static void presum_free(struct rf_discover *d)
{
    for (size_t i = 0; i < d->n_pre; i++) {
        free(d->pre[i].key);
        free(d->pre[i].val);
    }
    free(d->pre);
    d->pre = NULL;
    d->n_pre = 0;
}

/* Take key ("sources/<id>" or "members/<id>") into the set unless it is
 * there. */
static int ids_add(struct rf_discover *d, const char *key)
{
    const char *id = key + strlen("sources/");
    if ((strncmp(key, "sources/", 8) && strncmp(key, "members/", 8)) || !*id || strchr(id, '/'))
        return 0;
    for (size_t i = 0; i < d->n_ids; i++)
        if (!strcmp(d->ids[i], id))
            return 0;
    char **n = realloc(d->ids, (d->n_ids + 1) * sizeof(*n));
    if (!n)
        return REFIT_ENOMEM;
    d->ids = n;
    if (!(d->ids[d->n_ids] = strdup(id)))
        return REFIT_ENOMEM;
    d->n_ids++;
    d->ids_gen++;
    return 0;
}

static int ids_merge(struct rf_discover *d, char **keys, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        rc = ids_add(d, keys[i]);
    free(keys);
    return rc;
}

/* A watch result into the set: ERANGE (history gone) lists at the next
 * read. */
static int watched(struct rf_discover *d, int rc, char **keys, size_t n)
{
    if (rc == REFIT_ERANGE) {
        refit_error_clear();
        d->synced = 0;
        ids_free(d);
        return 0; /* the cursor is set: the listing goes after it */
    }
    if (rc == REFIT_ETIMEDOUT) {
        refit_error_clear();
        rc = 0;
    }
    size_t had = d->n_ids;
    rc = rc ? rc : ids_merge(d, keys, n);
    /* New ids from a watch: the epoch read before the last listing no
     * longer stands for the set (it may predate these joins); it is read
     * again before the next watch of members/. */
    if (!rc && d->n_ids > had)
        d->epoch_seen = 0;
    return rc;
}

/* The membership epoch as it is before a listing: a publisher writes it
 * after its record (publisher.c), so one that joins after this read is in
 * the listing or changes the epoch, which a warm read then sees. */
static int epoch_read(refit_receiver_t *r)
{
    struct rf_discover *d = &r->disc;
    void *v = NULL;
    size_t l = 0;
    int rc = refit_store_get(r->ctx->store, RF_KEY_MEMBERSHIP, &v, &l);
    if (rc == REFIT_ENOENT) {
        refit_error_clear();
        rc = 0;
    }
    if (rc)
        return refit_error_push(rc, "reading the membership epoch");
    free(d->epoch);
    d->epoch = v;
    d->epoch_len = v ? l : 0;
    d->epoch_seen = 1;
    return 0;
}

static int epoch_same(const struct rf_discover *d, const struct refit_store_get_item *it)
{
    if (it->status == REFIT_ENOENT)
        return !d->epoch;
    return !it->status && d->epoch && it->len == d->epoch_len && !memcmp(it->val, d->epoch, it->len);
}

/* The set current: from the watch's cursor if there is one (one round
 * trip, none just after a wait), else a new cursor and a listing.  The
 * watch is of members/, which a publisher writes once (publisher.c), so a
 * warm watch comes back empty instead of naming every record a version
 * rewrote; the listing is of sources/ (every record, a publisher of an
 * older refit included). */
static int sync_ids(refit_receiver_t *r)
{
    struct rf_discover *d = &r->disc;
    char **keys = NULL;
    size_t n = 0;
    int rc = 0;
    if (d->cursor && !d->synced && d->ids) {
        /* The epoch before the watch: a source that joins after this read
         * is in the watch or moves the epoch. */
        if (!d->epoch_seen && (rc = epoch_read(r)))
            return rc;
        rc = refit_store_watch(r->ctx->store, "members/", d->cursor, &d->cursor, 0, &keys, &n);
        if ((rc = watched(d, rc, keys, n)))
            return refit_error_push(rc, "watching members");
    }
    d->synced = 0;
    if (d->cursor && d->ids)
        return 0;
    if (!d->cursor && (rc = refit_store_watch(r->ctx->store, "members/", 0, &d->cursor, 0, &keys, &n)))
        return refit_error_push(rc, "watching members");
    if (!d->wcursor && (rc = refit_store_watch(r->ctx->store, "sources/", 0, &d->wcursor, 0, &keys, &n)))
        return refit_error_push(rc, "watching sources");
    ids_free(d);
    if ((rc = epoch_read(r)))
        return rc;
    if ((rc = refit_store_list(r->ctx->store, "sources/", &keys, &n)))
        return refit_error_push(rc, "listing sources");
    if (!n) /* an empty set is a set: no listing again until a change */
        d->ids = calloc(1, sizeof(char *));
    return d->ids || n ? ids_merge(d, keys, n) : REFIT_ENOMEM;
}

int rf_discover_wait(refit_receiver_t *r, int64_t ms)
{
    struct rf_discover *d = &r->disc;
    char **keys = NULL;
    size_t n = 0;
    if (!d->cursor || !d->wcursor) /* never read: nothing to wait from */
        return 0;
    /* The sources' doorbells, where they have them: woken by the publisher's
     * ring, the records are read next (one watch round: synced cleared). */
    int waited = 0, brc = rf_rcv_bells_wait(r, ms, &waited);
    if (waited && (brc == 0 || brc == REFIT_ETIMEDOUT)) {
        d->synced = 0;
        return brc;
    }
    /* A new version rewrites records: wait on sources/.  Its cursor is
     * only moved here, so it may name changes already read (a spurious
     * wake: one read more) or be older than the history kept: then take
     * the current position and wait from it (the set is the members
     * watch's; a restarted store fails that one too and lists again). */
    int rc = refit_store_watch(r->ctx->store, "sources/", d->wcursor, &d->wcursor, ms, &keys, &n);
    if (rc == REFIT_ERANGE) {
        refit_error_clear();
        rc = refit_store_watch(r->ctx->store, "sources/", d->wcursor, &d->wcursor, ms, &keys, &n);
    }
    int timed_out = rc == REFIT_ETIMEDOUT;
    if ((rc = watched(d, rc, keys, n)))
        return refit_error_push(rc, "waiting for sources");
    d->synced = d->ids != NULL;
    return timed_out ? REFIT_ETIMEDOUT : 0;
}

/* ------------------------------------------------------------------ */
/* Reading the records */

/* The checksum keys of version v the current plan reads (rf_verify_keys). */
static int presum_items(refit_receiver_t *r, uint64_t v, struct refit_store_get_item **out, size_t *n,
                        char (**keys)[REFIT_STORE_MAX_KEY + 1])
{
    struct rf_discover *d = &r->disc;
    presum_free(d);
    *out = NULL;
    *n = 0;
    *keys = NULL;
    if (!v || !r->plan.have || r->ctx->verify == RF_VERIFY_OFF || !d->n_src)
        return 0;
    struct rf_sumkey *sk = NULL;
    size_t m = 0;
    int rc = rf_verify_keys(r, v, &sk, &m);
    if (!rc && m) {
        d->pre = calloc(m, sizeof(*d->pre));
        *out = calloc(m, sizeof(**out));
        *keys = calloc(m, sizeof(**keys));
        if (!d->pre || !*out || !*keys)
            rc = REFIT_ENOMEM;
    }
    for (size_t i = 0; !rc && i < m; i++) {
        memcpy((*keys)[i], sk[i].key, sizeof(sk[i].key));
        if (!(d->pre[i].key = strdup(sk[i].key)))
            rc = REFIT_ENOMEM;
        (*out)[i].key = (*keys)[i];
        d->n_pre = *n = i + 1;
    }
    free(sk);
    return rc;
}

int rf_discover_presum(refit_receiver_t *r, const char *key, void **val, size_t *len, int *status)
{
    struct rf_discover *d = &r->disc;
    for (size_t i = 0; i < d->n_pre; i++) {
        struct rf_presum *p = &d->pre[i];
        /* Not found ahead: read again (it may have been written since). */
        if (strcmp(p->key, key) || !p->val || p->status)
            continue;
        *val = p->val;
        *len = p->len;
        *status = p->status;
        p->val = NULL;
        p->status = 0;
        return 0;
    }
    return REFIT_ENOENT;
}

/* One record read back: kept, or why not. */
static int take_record(refit_receiver_t *r, struct refit_source_check *c, struct rf_seen *out)
{
    if (c->status == REFIT_ENOENT)
        return 0; /* withdrawn meanwhile */
    if (c->status == REFIT_EPROTO) {
        refit_log(REFIT_LOG_WARN, "receiver", "%s: ignoring source %s: its record or heartbeat does not decode",
                  r->id, c->id);
        return 0;
    }
    if (c->status)
        return refit_error_set(c->status, "source %s: reading its record: %s", c->id, refit_strerror(c->status));
    if (usable(r, c->id, c->rec, c->stale))
        out->rec[out->n++] = c->rec;
    else
        free(c->rec);
    c->rec = NULL;
    return 0;
}

/* Whether this read may take only the plan's sources: a warm pull whose
 * set of source ids did not change since the last full read, the plain
 * pull mode (push, fan-out and delta read every record), no source
 * excluded by a data-parallel retry. */
static int partial_ok(const refit_receiver_t *r)
{
    const struct rf_discover *d = &r->disc;
    return !d->full_next && d->ids_gen == d->full_gen && r->plan.have && d->n_src && r->mode == &rf_mode_pull &&
           !r->ctx->delta && !r->n_excluded;
}

/* The records and heartbeats of the sources the cached plan reads, in one
 * read with the checksums ahead and the membership epoch: 1 in *done when
 * every one is usable and the epoch is the one listed with (else the
 * caller reads every record, listing again first when the epoch moved). */
static int read_partial(refit_receiver_t *r, struct refit_store_get_item *pre, size_t np, struct rf_seen *out,
                        int *done)
{
    struct rf_discover *d = &r->disc;
    *done = 0;
    struct refit_source_check *c = calloc(d->n_src + d->n_gone, sizeof(*c));
    struct refit_store_get_item *ex = calloc(np + 1, sizeof(*ex));
    out->rec = calloc(d->n_src, sizeof(*out->rec));
    int rc = c && ex && out->rec ? 0 : REFIT_ENOMEM;
    size_t n = 0;
    for (size_t i = 0; !rc && i < d->n_src; i++)
        if (r->plan.plan.bytes_per_source[i] > 0)
            c[n++].id = d->src[i].id;
    for (size_t i = 0; !rc && n && i < d->n_gone; i++)
        c[n + i].id = d->gone[i];
    for (size_t i = 0; !rc && i < np; i++)
        ex[i].key = pre[i].key;
    if (ex)
        ex[np].key = RF_KEY_MEMBERSHIP;
    if (!rc && n)
        rc = refit_source_check_many(r->ctx->store, c, n + d->n_gone, r->ctx->stale_after_ms, ex, np + 1);
    for (size_t i = 0; !rc && n && i < np; i++)
        pre[i] = ex[i];
    int all = !rc && n; /* a plan that reads nothing learns no version from it */
    if (all && !epoch_same(d, &ex[np])) { /* a source joined (or the store restarted) */
        d->relist = 1;
        all = 0;
    }
    if (!rc && n && ex)
        free(ex[np].val);
    free(ex);
    for (size_t i = n; c && n && i < n + d->n_gone; i++) {
        if (c[i].status != REFIT_ENOENT) /* back (or unreadable): read every record */
            all = 0;
        free(c[i].rec);
    }
    for (size_t i = 0; i < n; i++) {
        if (all && !c[i].status && usable(r, c[i].id, c[i].rec, c[i].stale)) {
            out->rec[out->n++] = c[i].rec;
            c[i].rec = NULL;
        } else {
            all = 0;
        }
        free(c[i].rec);
    }
    free(c);
    /* The checksums read ahead are kept with a partial read that stands;
     * the full read reads them again. */
    for (size_t i = 0; i < np; i++) {
        if (all) {
            d->pre[i].val = pre[i].val;
            d->pre[i].len = pre[i].len;
            d->pre[i].status = pre[i].status;
        } else {
            free(pre[i].val);
        }
        pre[i].val = NULL;
        pre[i].len = 0;
        pre[i].status = 0;
    }
    if (rc || !all) {
        refit_error_clear();
        rf_seen_free(out);
        memset(out, 0, sizeof(*out));
        return rc == REFIT_ENOMEM ? rc : 0;
    }
    qsort(out->rec, out->n, sizeof(*out->rec), cmp_rec);
    out->partial = 1;
    *done = 1;
    return 0;
}

int rf_discover_read(refit_receiver_t *r, uint64_t guess, struct rf_seen *out)
{
    struct rf_discover *d = &r->disc;
    memset(out, 0, sizeof(*out));
    struct refit_store_get_item *pre = NULL;
    char (*pkeys)[REFIT_STORE_MAX_KEY + 1] = NULL;
    size_t np = 0;
    /* A warm partial read learns of a joining source from the epoch it
     * reads with the records: no watch of members/ then (the watch's
     * cursor stays where it was; a later watch from it costs at most a
     * listing). */
    int partial = partial_ok(r) && d->epoch_seen && d->ids;
    int rc = partial ? 0 : sync_ids(r);
    if (partial)
        d->synced = 0;
    if (!rc)
        rc = presum_items(r, guess, &pre, &np, &pkeys);
    int done = 0;
    if (!rc && partial)
        rc = read_partial(r, pre, np, out, &done);
    d->full_next = 0;
    if (!rc && !done && d->relist) { /* the epoch moved: list again, then read every record */
        d->relist = 0;
        ids_free(d);
        rc = sync_ids(r);
    }
    if (rc || done) {
        free(pre);
        free(pkeys);
        return rc;
    }
    /* The ids absent last time are read again (and leave the set again
     * if still absent). */
    for (size_t i = 0; !rc && i < d->n_gone; i++) {
        char key[REFIT_STORE_MAX_KEY + 1];
        snprintf(key, sizeof(key), "sources/%s", d->gone[i]);
        rc = ids_add(d, key);
    }
    gone_free(d);
    d->full_gen = d->ids_gen;
    struct refit_source_check *c = rc ? NULL : calloc(d->n_ids ? d->n_ids : 1, sizeof(*c));
    out->rec = rc ? NULL : calloc(d->n_ids ? d->n_ids : 1, sizeof(*out->rec));
    if (!rc && (!c || !out->rec))
        rc = REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < d->n_ids; i++)
        c[i].id = d->ids[i];
    if (!rc)
        rc = refit_source_check_many(r->ctx->store, c, d->n_ids, r->ctx->stale_after_ms, pre, np);
    for (size_t i = 0; !rc && i < np; i++) {
        d->pre[i].val = pre[i].val;
        d->pre[i].len = pre[i].len;
        d->pre[i].status = pre[i].status;
    }
    for (size_t i = 0; !rc && i < d->n_ids; i++)
        rc = take_record(r, &c[i], out);
    /* Withdrawn sources leave the set for the gone list (a warm read looks
     * at them: a record that comes back writes no member key). */
    size_t kept = 0;
    char **gone = c && d->n_ids ? calloc(d->n_ids, sizeof(*gone)) : NULL;
    for (size_t i = 0; c && i < d->n_ids; i++) {
        free(c[i].rec);
        if (!rc && gone && c[i].status == REFIT_ENOENT)
            gone[d->n_gone++] = d->ids[i];
        else
            d->ids[kept++] = d->ids[i];
    }
    if (gone && d->n_gone)
        d->gone = gone;
    else
        free(gone);
    if (c)
        d->n_ids = kept;
    free(c);
    free(pre);
    free(pkeys);
    if (rc) {
        rf_seen_free(out);
        return rc;
    }
    qsort(out->rec, out->n, sizeof(*out->rec), cmp_rec);
    return 0;
}

static uint64_t newest_of(const struct rf_seen *sv)
{
    uint64_t newest = 0;
    for (size_t i = 0; i < sv->n; i++)
        if (sv->rec[i]->version > newest)
            newest = sv->rec[i]->version;
    return newest;
}

/* Sources that keep the version before their newest still have `want`:
 * its record (and remote keys) is versions/<want>/sources/<id>. */
static void rewind_to(refit_receiver_t *r, struct rf_seen *sv, uint64_t want)
{
    for (size_t i = 0; i < sv->n; i++) {
        struct refit_source_record *rec = sv->rec[i];
        if (rec->version != want + 1 || rec->keeps < 2)
            continue;
        char key[REFIT_STORE_MAX_KEY + 1];
        void *val = NULL;
        size_t len = 0;
        struct refit_source_record *old = NULL;
        if (!refit_key_version_source(key, want, rec->source_id) && !refit_store_get(r->ctx->store, key, &val, &len) &&
            !refit_record_decode(val, len, key, &old) && old->version == want) {
            old->keeps = rec->keeps;
            free(rec);
            sv->rec[i] = old;
        } else {
            free(old);
        }
        free(val);
    }
}

int rf_discover_choose(refit_receiver_t *r, struct rf_seen *sv, uint64_t want, uint64_t *v)
{
    uint64_t newest = newest_of(sv);
    /* A version acknowledged by a pull that failed after its ack (receiver.c
     * fence_commit) is not read again: wait for a newer one. */
    if (want == REFIT_LATEST) {
        *v = newest != r->released ? newest : 0;
        return 0;
    }
    if (want == REFIT_NEXT) {
        uint64_t floor = r->last_version > r->released ? r->last_version : r->released;
        *v = newest > floor ? newest : 0;
        return 0;
    }
    if (want == r->released)
        return refit_error_set(REFIT_ESTALE,
                               "v%llu was acknowledged by this receiver's failed pull of it (the ack goes with the "
                               "fence): its sources may be reusing its memory; pull a newer version",
                               (unsigned long long)want);
    *v = want;
    if (newest > want) {
        rewind_to(r, sv, want);
        newest = newest_of(sv);
    }
    for (size_t i = 0; i < sv->n; i++)
        if (sv->rec[i]->version > want)
            return refit_error_set(REFIT_ESTALE,
                                   "v%llu is gone: source %s has moved on to v%llu (zero-copy "
                                   "sources keep only their newest version)",
                                   (unsigned long long)want, sv->rec[i]->source_id,
                                   (unsigned long long)sv->rec[i]->version);
    return 0;
}

int rf_discover_complete(const struct rf_seen *sv, uint64_t v)
{
    /* Sources still at an older version are publishing v right now. */
    for (size_t i = 0; i < sv->n; i++)
        if (sv->rec[i]->version < v || (sv->partial && sv->rec[i]->version != v))
            return 0;
    if (sv->partial) /* the positions are the cached plan's */
        return 1;
    /* Every tensor- and expert-parallel position the sources declare, so
     * the plan (and the spread of replicated tensors) does not change when
     * a late rank shows up. */
    uint8_t tp[256] = {0}, ep[256] = {0}, pp[256] = {0}, sh[256] = {0};
    uint32_t tps = 0, eps = 0, pps = 0, shs = 0;
    for (size_t i = 0; i < sv->n; i++) {
        const struct refit_par_layout *L = &sv->rec[i]->layout;
        if (sv->rec[i]->version != v)
            continue;
        if (L->tp_size > tps)
            tps = L->tp_size;
        if (L->ep_size > eps)
            eps = L->ep_size;
        if (L->tp_rank < 256)
            tp[L->tp_rank] = 1;
        if (L->ep_rank < 256)
            ep[L->ep_rank] = 1;
        /* pipeline stages and FSDP shards too (data-parallel replicas of a
         * position count once) */
        const struct refit_src_ext *x = refit_record_ext(sv->rec[i]);
        if (L->pp_size > pps)
            pps = L->pp_size;
        if (L->pp_rank < 256)
            pp[L->pp_rank] = 1;
        if (x->fsdp && x->shard_size > shs)
            shs = x->shard_size;
        if (x->fsdp && x->shard_rank < 256)
            sh[x->shard_rank] = 1;
    }
    for (uint32_t i = 0; i < pps && i < 256; i++)
        if (!pp[i])
            return 0;
    for (uint32_t i = 0; i < shs && i < 256; i++)
        if (!sh[i])
            return 0;
    for (uint32_t i = 0; i < tps && i < 256; i++)
        if (!tp[i])
            return 0;
    for (uint32_t i = 0; i < eps && i < 256; i++)
        if (!ep[i])
            return 0;
    return 1;
}

/* The Megatron layout a source's record declares (kept while it does not
 * change). */
static int source_layout(refit_receiver_t *r, struct rf_source *s)
{
    struct refit_par_layout *L = &s->rec->layout;
    const struct refit_src_ext *x = refit_record_ext(s->rec);
    if (s->meg && !memcmp(&s->meg_lay, L, sizeof(*L)) && !memcmp(&s->meg_ext, x, sizeof(*x)))
        return 0;
    refit_layout_destroy(s->meg);
    s->meg = NULL;
    int chunks[REFIT_RECORD_MAX_CHUNKS];
    for (uint32_t i = 0; i < x->n_pp_layers && i < REFIT_RECORD_MAX_CHUNKS; i++)
        chunks[i] = (int)x->pp_layers[i];
    if (x->n_pp_layers && x->n_pp_layers != L->pp_size * (x->vp ? x->vp : 1))
        return refit_error_set(REFIT_EPROTO, "source %s: %u pipeline chunks for pp %u x vp %u", s->id,
                               x->n_pp_layers, L->pp_size, x->vp);
    struct refit_parallel par = {
        .tp_rank = (int)L->tp_rank, .tp_size = (int)L->tp_size, .pp_rank = (int)L->pp_rank,
        .pp_size = (int)L->pp_size, .ep_rank = (int)L->ep_rank, .ep_size = (int)L->ep_size,
        .etp_rank = (int)L->etp_rank, .etp_size = (int)L->etp_size, .dp_rank = (int)x->dp_rank,
        .dp_size = (int)x->dp_size, .layout = x->fsdp ? "fsdp" : NULL, .shard_rank = (int)x->shard_rank,
        .shard_size = (int)x->shard_size, .vp_size = (int)x->vp, .pp_layers = x->n_pp_layers ? chunks : NULL};
    int rc = refit_layout_trainer(r->ctx->model, &par, &r->copts, &s->meg);
    if (rc)
        return refit_error_push(rc, "source %s", s->id);
    s->meg_lay = *L;
    s->meg_ext = *x;
    return 0;
}

/* Take record rec for source slot s, reusing what was known of it. */
static int adopt_one(refit_receiver_t *r, struct rf_source *s, struct refit_source_record *rec)
{
    int rc = 0;
    if (!s->id && !(s->id = strdup(rec->source_id))) {
        free(rec);
        return REFIT_ENOMEM;
    }
    free(s->rec);
    s->rec = rec;
    if (!(s->cat = catalog_get(r, &rec->catalog, &rc)))
        return rc;
    if ((rc = refit_record_check_catalog(rec, s->cat, s->id)))
        return rc;
    return source_layout(r, s);
}

/* The records read replace those of their sources; every one must be at v
 * (else the next read is a full one: REFIT_EAGAIN). */
static int adopt_partial(refit_receiver_t *r, struct rf_seen *sv, uint64_t v)
{
    struct rf_discover *d = &r->disc;
    for (size_t i = 0; i < sv->n; i++)
        if (sv->rec[i]->version != v) {
            d->full_next = 1;
            return REFIT_EAGAIN;
        }
    int rc = 0;
    for (size_t i = 0, j = 0; i < sv->n && !rc; i++) {
        while (j < d->n_src && strcmp(d->src[j].id, sv->rec[i]->source_id))
            j++;
        if (j == d->n_src) { /* read from d->src, sorted alike: cannot happen */
            d->full_next = 1;
            return REFIT_EAGAIN;
        }
        struct refit_source_record *rec = sv->rec[i];
        sv->rec[i] = NULL;
        rc = adopt_one(r, &d->src[j], rec);
    }
    return rc;
}

int rf_discover_adopt(refit_receiver_t *r, struct rf_seen *sv, uint64_t v)
{
    struct rf_discover *d = &r->disc;
    if (sv->partial)
        return adopt_partial(r, sv, v);
    size_t m = 0;
    for (size_t i = 0; i < sv->n; i++)
        m += sv->rec[i]->version == v;
    struct rf_source *ns = calloc(m ? m : 1, sizeof(*ns));
    if (!ns)
        return REFIT_ENOMEM;
    size_t k = 0;
    int rc = 0;
    for (size_t i = 0; i < sv->n && !rc; i++) {
        struct refit_source_record *rec = sv->rec[i];
        if (rec->version != v)
            continue;
        struct rf_source *s = &ns[k++];
        for (size_t j = 0; j < d->n_src; j++)
            if (d->src[j].id && !strcmp(d->src[j].id, rec->source_id)) {
                *s = d->src[j];
                memset(&d->src[j], 0, sizeof(d->src[j]));
                break;
            }
        sv->rec[i] = NULL;
        rc = adopt_one(r, s, rec);
    }
    /* Anything left in the old list is gone. */
    for (size_t j = 0; j < d->n_src; j++)
        source_fini(&d->src[j]);
    free(d->src);
    d->src = ns;
    d->n_src = k;
    return rc;
}

int rf_discover_plan_key(const refit_receiver_t *r, struct refit_hash128 *key)
{
    /* Hashed as it goes: no buffer to size from the inputs. */
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return REFIT_ENOMEM;
    XXH3_128bits_reset(st);
    uint64_t n[2] = {r->dests.n, r->disc.n_src};
    XXH3_128bits_update(st, n, sizeof(n));
    for (size_t i = 0; i < r->disc.n_src; i++) {
        const struct rf_source *s = &r->disc.src[i];
        const struct refit_par_layout *L = &s->rec->layout;
        uint32_t lay[6] = {L->tp_rank, L->tp_size, L->ep_rank, L->ep_size, L->etp_rank, L->etp_size};
        XXH3_128bits_update(st, s->id, strlen(s->id) + 1);
        XXH3_128bits_update(st, s->rec->catalog.b, 16);
        XXH3_128bits_update(st, lay, sizeof(lay));
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
    memcpy(key->b, c.digest, 16);
    XXH3_freeState(st);
    return 0;
}
