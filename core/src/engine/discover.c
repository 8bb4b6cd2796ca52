/* discover.c — the discover stage of a pull (receiver.h): which sources
 * are live and READY, which version to pull, the sources at it with their
 * catalogs (cached by content hash) and Megatron layouts, and the key of
 * what the plan is made from.  The fence is fence.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

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

void rf_discover_fini(struct rf_discover *d)
{
    rf_discover_drop_sources(d);
    for (size_t i = 0; i < d->n_cats; i++)
        refit_catalog_destroy(d->cats[i].cat);
    free(d->cats);
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

int rf_discover_read(refit_receiver_t *r, struct rf_seen *out)
{
    char **keys = NULL;
    size_t nk = 0;
    memset(out, 0, sizeof(*out));
    int rc = refit_store_list(r->ctx->store, "sources/", &keys, &nk);
    if (rc)
        return refit_error_push(rc, "listing sources");
    out->rec = calloc(nk ? nk : 1, sizeof(*out->rec));
    if (!out->rec) {
        free(keys);
        return REFIT_ENOMEM;
    }
    for (size_t i = 0; i < nk && !rc; i++) {
        const char *id = keys[i] + strlen("sources/");
        if (strchr(id, '/'))
            continue;
        bool stale = false;
        struct refit_source_record *rec = NULL;
        int c = refit_source_check(r->ctx->store, id, r->ctx->stale_after_ms, &rec, &stale);
        if (c == REFIT_ENOENT)
            continue; /* withdrawn meanwhile */
        if (c == REFIT_EPROTO) {
            refit_log(REFIT_LOG_WARN, "receiver", "%s: ignoring source %s: %s", r->id, id, refit_error_message());
            continue;
        }
        if (c)
            rc = c;
        else if (usable(r, id, rec, stale))
            out->rec[out->n++] = rec;
        else {
            refit_log(REFIT_LOG_DEBUG, "receiver", "%s: source %s not usable (%s, v%llu%s)", r->id, id,
                      refit_source_status_name(rec->status), (unsigned long long)rec->version, stale ? ", stale" : "");
            free(rec);
        }
    }
    free(keys);
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
    if (want == REFIT_LATEST) {
        *v = newest;
        return 0;
    }
    if (want == REFIT_NEXT) {
        *v = newest > r->last_version ? newest : 0;
        return 0;
    }
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
        if (sv->rec[i]->version < v)
            return 0;
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

int rf_discover_adopt(refit_receiver_t *r, struct rf_seen *sv, uint64_t v)
{
    struct rf_discover *d = &r->disc;
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
