/* publisher.c — one trainer rank's side of the refit cycle: the publisher
 * object, its tensors, regions and catalog, and refit_publisher_publish,
 * which runs the sequence of publisher.h for every strategy.
 *
 * publish(V): (first time, or after tensors moved) register memory and
 * build the catalog; let the hold strategy pick V's arena and withdraw
 * what that memory backs; copy the small tensors (copy mode: all) into the
 * arena; hash every tensor (whole and per chunk) into this version's
 * checksums; write them (segments, sums.h), then the source record READY(V); then the
 * delivery strategy (push: write V into every receiver).  A heartbeat
 * thread keeps heartbeats/<id> fresh so readers can tell a live source
 * from a dead one.  wait_released(V) waits for the receivers'
 * acknowledgements. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bells.h"
#include "devpath.h"
#include "publisher.h"
#include "refit/log.h"
#include "sums.h"

static int par_size(int s)
{
    return s > 0 ? s : 1;
}

static void *heartbeat_main(void *arg)
{
    refit_publisher_t *pub = arg;
    refit_store_t *st = NULL;
    int rc = refit_store_open(pub->ctx->cfg, pub->ctx->loader, NULL, &st);
    if (rc)
        refit_log(REFIT_LOG_ERROR, "publisher", "%s: heartbeat store: %s", pub->id, refit_error_message());
    pthread_mutex_lock(&pub->hb_lock);
    while (!pub->hb_stop) {
        uint64_t v = pub->hb_version;
        pthread_mutex_unlock(&pub->hb_lock);
        if (st && refit_heartbeat_put(st, pub->id, v, pub->ctx->stale_after_ms))
            refit_log(REFIT_LOG_WARN, "publisher", "%s: heartbeat: %s", pub->id, refit_error_message());
        pthread_mutex_lock(&pub->hb_lock);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (pub->ctx->heartbeat_ms % 1000) * 1000000;
        ts.tv_sec += pub->ctx->heartbeat_ms / 1000 + ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        if (!pub->hb_stop)
            pthread_cond_timedwait(&pub->hb_cond, &pub->hb_lock, &ts);
    }
    pthread_mutex_unlock(&pub->hb_lock);
    refit_store_close(st);
    return NULL;
}

/* The position with its strings and split owned by the publisher. */
static int rf_par_copy(refit_publisher_t *pub, const struct refit_parallel *par)
{
    pub->par = *par;
    pub->par.layout = NULL;
    pub->par.pp_layers = NULL;
    if (par->layout && !(pub->par.layout = pub->par_layout = strdup(par->layout)))
        return REFIT_ENOMEM;
    if (par->pp_layers) {
        size_t n = (size_t)par_size(par->pp_size) * (size_t)par_size(par->vp_size);
        if (n > REFIT_RECORD_MAX_CHUNKS)
            return refit_error_set(REFIT_EINVAL, "%zu pipeline chunks: at most %d", n, REFIT_RECORD_MAX_CHUNKS);
        if (!(pub->par_pp_layers = malloc(n * sizeof(int))))
            return REFIT_ENOMEM;
        memcpy(pub->par_pp_layers, par->pp_layers, n * sizeof(int));
        pub->par.pp_layers = pub->par_pp_layers;
    }
    return 0;
}

int refit_publisher_create(refit_context_t *ctx, const struct refit_parallel *par, const char *source_id,
                           refit_publisher_t **out)
{
    if (!ctx || !par || !out)
        return refit_error_set(REFIT_EINVAL, "refit_publisher_create: NULL argument");
    refit_publisher_t *pub = calloc(1, sizeof(*pub));
    if (!pub)
        return REFIT_ENOMEM;
    pub->ctx = ctx;
    pub->par = *par;
    /* The strategies, chosen once. */
    pub->hold = ctx->publish_copy ? &rf_hold_copy : &rf_hold_zero_copy;
    pub->delivery = ctx->push ? &rf_deliver_push : &rf_deliver_pull;
    char idbuf[REFIT_RECORD_MAX_ID + 1];
    if (!source_id) {
        if (par->layout && !strcmp(par->layout, "fsdp"))
            snprintf(idbuf, sizeof(idbuf), "fsdp%d-dp%d", par->shard_rank, par->dp_rank);
        else if (par_size(par->dp_size) > 1)
            snprintf(idbuf, sizeof(idbuf), "tp%d-pp%d-ep%d-dp%d", par->tp_rank, par->pp_rank, par->ep_rank,
                     par->dp_rank);
        else
            snprintf(idbuf, sizeof(idbuf), "tp%d-pp%d-ep%d", par->tp_rank, par->pp_rank, par->ep_rank);
        source_id = idbuf;
    }
    pthread_mutex_init(&pub->hb_lock, NULL);
    pthread_cond_init(&pub->hb_cond, NULL);
    int rc = refit_check_id("source id", source_id);
    if (!rc && !(pub->id = strdup(source_id)))
        rc = REFIT_ENOMEM;
    if (!rc && (par->tp_rank < 0 || par->tp_rank >= par_size(par->tp_size) || par->ep_rank < 0 ||
                par->ep_rank >= par_size(par->ep_size) || par->pp_rank < 0 ||
                par->pp_rank >= par_size(par->pp_size) || par->shard_rank < 0 ||
                par->shard_rank >= par_size(par->shard_size) || par_size(par->vp_size) > 64 ||
                par_size(par->pp_size) > 4096))
        rc = refit_error_set(REFIT_EINVAL, "publisher %s: tp %d/%d, ep %d/%d, pp %d/%d, shard %d/%d is not a "
                             "valid position", source_id, par->tp_rank, par->tp_size, par->ep_rank, par->ep_size,
                             par->pp_rank, par->pp_size, par->shard_rank, par->shard_size);
    if (!rc)
        rc = rf_par_copy(pub, par);
    if (!rc)
        rc = refit_layout_trainer(ctx->model, &pub->par, &ctx->copts, &pub->meg);
    if (!rc)
        rc = rf_context_transport(ctx, pub->id, &pub->tp);
    if (!rc)
        rc = refit_transport_address_get(pub->tp, &pub->addr, &pub->addr_len);
    if (!rc)
        rf_pub_bell_create(pub);
    if (rc) {
        refit_error_push(rc, "publisher %s", source_id);
        refit_publisher_destroy(pub);
        return rc;
    }
    *out = pub;
    return 0;
}

/* The record's optional position fields. */
static struct refit_src_ext src_ext(const struct refit_parallel *par)
{
    struct refit_src_ext x = {.dp_rank = (uint32_t)par->dp_rank, .dp_size = (uint32_t)par_size(par->dp_size),
                              .vp = (uint32_t)par_size(par->vp_size)};
    if (par->layout && !strcmp(par->layout, "fsdp")) {
        x.fsdp = 1;
        x.shard_rank = (uint32_t)par->shard_rank;
        x.shard_size = (uint32_t)par_size(par->shard_size);
    }
    if (par->pp_layers) {
        x.n_pp_layers = (uint32_t)(par_size(par->pp_size) * par_size(par->vp_size));
        for (uint32_t i = 0; i < x.n_pp_layers && i < REFIT_RECORD_MAX_CHUNKS; i++)
            x.pp_layers[i] = (uint32_t)par->pp_layers[i];
    }
    return x;
}

static void drop_regions(refit_publisher_t *pub)
{
    for (size_t i = 0; i < pub->n_rg; i++) {
        if (pub->rg[i].reg)
            refit_transport_dereg(pub->tp, pub->rg[i].reg);
        free(pub->rg[i].rkey);
        if (pub->rg[i].owned) {
            rf_pubdev_unpin(pub->dev, pub->rg[i].base);
            free(pub->rg[i].base);
        }
    }
    /* (slots moved to a new list are zeroed: nothing to free there) */
    free(pub->rg);
    pub->rg = NULL;
    pub->n_rg = 0;
}

void refit_publisher_destroy(refit_publisher_t *pub)
{
    if (!pub)
        return;
    if (pub->hb_running) {
        pthread_mutex_lock(&pub->hb_lock);
        pub->hb_stop = 1;
        pthread_cond_signal(&pub->hb_cond);
        pthread_mutex_unlock(&pub->hb_lock);
        pthread_join(pub->hb, NULL);
    }
    /* Withdraw: readers must not pull from memory that is going away.
     * Best effort; the caller's error message must survive it. */
    char saved[1024];
    int saved_st = refit_error_status();
    snprintf(saved, sizeof(saved), "%s", refit_error_message());
    if (pub->have_cat && pub->ctx->store && rf_pub_record(pub, pub->last_version, REFIT_SOURCE_STALE, 1, 0))
        refit_log(REFIT_LOG_WARN, "publisher", "%s: withdrawing: %s", pub->id, refit_error_message());
    rf_pub_bell_destroy(pub);
    if (saved[0])
        refit_error_set(saved_st, "%s", saved);
    pub->delivery->destroy(pub);
    drop_regions(pub);
    rf_pubsums_destroy(pub);
    rf_pubdev_destroy(pub->dev);
    rf_pubdelta_destroy(pub);
    for (size_t i = 0; i < pub->n; i++)
        free(pub->t[i].name);
    free(pub->t);
    free(pub->addr);
    free(pub->id);
    free(pub->par_layout);
    free(pub->par_pp_layers);
    refit_layout_destroy(pub->meg);
    pthread_mutex_destroy(&pub->hb_lock);
    pthread_cond_destroy(&pub->hb_cond);
    free(pub);
}

static int shape_eq(const struct refit_layout_tensor *lt, int ndim, const int64_t *shape)
{
    if (lt->ndim != ndim)
        return 0;
    for (int d = 0; d < ndim; d++)
        if (lt->shape[d] != shape[d])
            return 0;
    return 1;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t l = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && l < n; d++)
        l += (size_t)snprintf(buf + l, n - l, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (l < n)
        snprintf(buf + l, n - l, "]");
}

int refit_publisher_add(refit_publisher_t *pub, const char *name, void *ptr, enum refit_dtype dtype,
                        int ndim, const int64_t *shape, uint32_t memtype)
{
    if (!pub || !name || !ptr || ndim < 1 || ndim > REFIT_MAX_DIMS || !shape)
        return refit_error_set(REFIT_EINVAL, "refit_publisher_add: bad argument");
    if (memtype != REFIT_MEM_HOST && memtype != REFIT_MEM_CUDA)
        return refit_error_set(REFIT_EINVAL, "publisher %s: tensor '%s': unknown memory type %u", pub->id,
                               name, memtype);
    if (!refit_dtype_size(dtype))
        return refit_error_set(REFIT_EINVAL, "publisher %s: tensor '%s': invalid dtype", pub->id, name);
    char *canon = refit_model_source_name(pub->ctx->model, pub->par.layout, name);
    if (!canon)
        return REFIT_ENOMEM;
    const struct refit_layout_tensor *lt = refit_layout_find(pub->meg, canon);
    if (!lt) {
        int rc = refit_error_set(REFIT_ENOENT,
                                 "publisher %s: tensor '%s' is not a %s trainer tensor of this rank "
                                 "(tp %d/%d, ep %d/%d)",
                                 pub->id, name, refit_model_type(pub->ctx->model), pub->par.tp_rank,
                                 par_size(pub->par.tp_size), pub->par.ep_rank, par_size(pub->par.ep_size));
        free(canon);
        return rc;
    }
    if (!shape_eq(lt, ndim, shape)) {
        char want[128], got[128];
        shape_str(want, sizeof(want), lt->ndim, lt->shape);
        shape_str(got, sizeof(got), ndim, shape);
        int rc = refit_error_set(REFIT_EINVAL, "publisher %s: tensor '%s' has shape %s, this rank's is %s",
                                 pub->id, name, got, want);
        free(canon);
        return rc;
    }
    if (memtype == REFIT_MEM_CUDA) {
        char what[1200];
        snprintf(what, sizeof(what), "publisher %s: tensor '%s'", pub->id, name);
        int rc = rf_pubdev_add(&pub->dev, what, ptr);
        if (rc) {
            free(canon);
            return rc;
        }
    }
    size_t n = refit_dtype_size(dtype);
    for (int d = 0; d < ndim; d++)
        n *= (size_t)shape[d];
    for (size_t i = 0; i < pub->n; i++)
        if (!strcmp(pub->t[i].name, canon)) {
            struct pub_tensor *t = &pub->t[i];
            if (t->ptr != ptr || t->nbytes != n || t->dtype != dtype || t->memtype != memtype)
                pub->dirty = 1;
            t->memtype = memtype;
            t->ptr = ptr;
            t->nbytes = n;
            t->dtype = dtype;
            free(canon);
            return 0;
        }
    if (pub->n == pub->cap) {
        size_t nc = pub->cap ? pub->cap * 2 : 256;
        struct pub_tensor *nt = realloc(pub->t, nc * sizeof(*nt));
        if (!nt) {
            free(canon);
            return REFIT_ENOMEM;
        }
        pub->t = nt;
        pub->cap = nc;
    }
    struct pub_tensor *t = &pub->t[pub->n++];
    memset(t, 0, sizeof(*t));
    t->name = canon;
    t->ptr = ptr;
    t->dtype = dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    t->memtype = memtype;
    t->nbytes = n;
    t->lt = lt;
    t->row_bytes = (uint64_t)(ndim >= 2 ? shape[ndim - 1] : 1) * refit_dtype_size(dtype);
    t->rows = t->row_bytes ? n / t->row_bytes : 0;
    t->chunk_rows = rf_chunk_rows(t->rows, t->row_bytes);
    pub->dirty = 1;
    return 0;
}

/* Old regions kept across a rebuild: a tensor that did not move keeps its
 * registration and remote key; only what changed is registered again. */
struct region_pool {
    struct pub_region *rg;
    size_t n;
};

static int add_region(refit_publisher_t *pub, struct region_pool *old, void *base, size_t len, int owned,
                      uint32_t memtype)
{
    struct pub_region *nr = realloc(pub->rg, (pub->n_rg + 1) * sizeof(*nr));
    if (!nr)
        return REFIT_ENOMEM;
    pub->rg = nr;
    struct pub_region *r = &nr[pub->n_rg];
    for (size_t i = 0; old && i < old->n; i++) {
        struct pub_region *o = &old->rg[i];
        if (o->reg && o->len == len && o->owned == owned && o->memtype == memtype && (owned || o->base == base)) {
            *r = *o;
            memset(o, 0, sizeof(*o));
            pub->n_rg++;
            pub->reused++;
            return 0;
        }
    }
    memset(r, 0, sizeof(*r));
    r->base = base;
    r->len = len;
    r->memtype = memtype;
    r->owned = owned;
    pub->n_rg++;
    if (owned && !base) {
        if (posix_memalign(&r->base, 4096, len ? len : 1))
            return REFIT_ENOMEM;
        memset(r->base, 0, len);
    }
    int rc = refit_transport_reg(pub->tp, r->base, len ? len : 1, r->memtype, &r->reg);
    if (!rc)
        rc = refit_transport_pack(pub->tp, r->reg, &r->rkey, &r->rkey_len);
    pub->registered++;
    return rc;
}

static uint32_t cat_role(enum refit_model_role r)
{
    switch (r) {
    case REFIT_ROLE_REPLICATED: return REFIT_CAT_ROLE_REPLICATED;
    case REFIT_ROLE_VOCAB: return REFIT_CAT_ROLE_VOCAB;
    case REFIT_ROLE_COLUMN: return REFIT_CAT_ROLE_COLUMN;
    case REFIT_ROLE_QKV_COLUMN: return REFIT_CAT_ROLE_QKV_COLUMN;
    case REFIT_ROLE_GATED_COLUMN: return REFIT_CAT_ROLE_GATED_COLUMN;
    case REFIT_ROLE_ROW: return REFIT_CAT_ROLE_ROW;
    case REFIT_ROLE_EXPERT_COLUMN: return REFIT_CAT_ROLE_EXPERT_COLUMN;
    case REFIT_ROLE_EXPERT_ROW: return REFIT_CAT_ROLE_EXPERT_ROW;
    }
    return REFIT_CAT_ROLE_REPLICATED;
}

/* Where this shard sits in the global tensor (informative: receivers plan
 * from the model's layout maps, `refit store show` prints it). */
static void shard_info(const refit_publisher_t *pub, const struct pub_tensor *t, struct refit_cat_tensor *ct)
{
    int expert = t->lt->role == REFIT_ROLE_EXPERT_COLUMN || t->lt->role == REFIT_ROLE_EXPERT_ROW;
    int axis = t->lt->role == REFIT_ROLE_REPLICATED ? -1
               : (t->lt->role == REFIT_ROLE_ROW || t->lt->role == REFIT_ROLE_EXPERT_ROW) ? 1 : 0;
    if (axis >= t->ndim)
        axis = t->ndim - 1;
    int parts = expert ? par_size(pub->par.etp_size) : par_size(pub->par.tp_size);
    int rank = expert ? pub->par.etp_rank : pub->par.tp_rank;
    if (pub->par.layout && !strcmp(pub->par.layout, "fsdp")) {
        parts = par_size(pub->par.shard_size);
        rank = pub->par.shard_rank;
    }
    ct->shard_axis = axis;
    ct->expert = expert ? t->lt->expert : -1;
    if (axis < 0)
        return;
    ct->global_shape[axis] = ct->shape[axis] * (uint64_t)parts;
    ct->shard_start = ct->shape[axis] * (uint64_t)rank;
    ct->shard_len = ct->shape[axis];
}

/* Where each tensor lives: small ones (copy mode: all) in the gather
 * arena (one descriptor for a receiver), device tensors of refit's pool in
 * their slab, the others registered where they are.  Registrations of
 * tensors that did not move are kept. */
static int rebuild_regions(refit_publisher_t *pub)
{
    struct region_pool old = {pub->rg, pub->n_rg};
    pub->rg = NULL;
    pub->n_rg = 0;
    int rc = 0;
    size_t arena = 0;
    for (size_t i = 0; i < pub->n; i++) {
        struct pub_tensor *t = &pub->t[i];
        t->gathered = rf_pubdev_gathered(pub->tp, t->memtype, pub->hold->copy_all,
                                         t->nbytes < pub->ctx->gather_threshold, pub->delivery->host_arena);
        if (t->gathered) {
            t->offset = arena;
            arena += (t->nbytes + 63) & ~(size_t)63;
        }
    }
    for (int k = 0; arena && !rc && k < pub->hold->arenas; k++)
        rc = add_region(pub, &old, NULL, arena, 1, REFIT_MEM_HOST);
    for (size_t i = 0; i < pub->n && !rc; i++) {
        struct pub_tensor *t = &pub->t[i];
        if (t->gathered) {
            t->region = 0;
            continue;
        }
        /* A tensor in refit's device pool: its whole slab is one region,
         * registered once for every tensor in it. */
        void *slab;
        size_t slab_len;
        if (t->memtype == REFIT_MEM_CUDA && !rf_pubdev_slab(t->ptr, &slab, &slab_len)) {
            size_t k = 0;
            while (k < pub->n_rg && !(pub->rg[k].base == slab && !pub->rg[k].owned))
                k++;
            t->region = (uint32_t)k;
            t->offset = (uint64_t)((char *)t->ptr - (char *)slab);
            if (k == pub->n_rg)
                rc = add_region(pub, &old, slab, slab_len, 0, REFIT_MEM_CUDA);
            continue;
        }
        t->region = (uint32_t)pub->n_rg;
        t->offset = 0;
        rc = add_region(pub, &old, t->ptr, t->nbytes, 0, t->memtype);
    }
    /* What no tensor uses any more is deregistered. */
    struct pub_region *keep = pub->rg;
    size_t keep_n = pub->n_rg;
    pub->rg = old.rg;
    pub->n_rg = old.n;
    drop_regions(pub);
    pub->rg = keep;
    pub->n_rg = keep_n;
    return rc ? refit_error_push(rc, "publisher %s: registering memory", pub->id) : 0;
}

/* The catalog of the regions and tensors, stored content-addressed. */
static int publish_catalog(refit_publisher_t *pub)
{
    refit_catalog_t *cat = NULL;
    int rc = refit_catalog_create(&cat);
    size_t cat_regions = pub->hold->catalog_regions(pub);
    for (size_t i = 0; !rc && i < cat_regions; i++) {
        uint32_t idx;
        rc = refit_catalog_add_region(cat, pub->rg[i].len, &idx);
    }
    for (size_t i = 0; !rc && i < pub->n; i++) {
        struct pub_tensor *t = &pub->t[i];
        struct refit_cat_tensor ct = {.name = t->name, .dtype = t->dtype, .role = cat_role(t->lt->role),
                                      .ndim = (uint32_t)t->ndim, .shard_axis = -1,
                                      .expert = t->lt->expert, .region = t->region, .offset = t->offset,
                                      .nbytes = t->nbytes, .chunk_rows = t->chunk_rows};
        for (int d = 0; d < t->ndim; d++)
            ct.shape[d] = ct.global_shape[d] = (uint64_t)t->shape[d];
        shard_info(pub, t, &ct);
        rc = refit_catalog_add(cat, &ct);
    }
    void *enc = NULL;
    size_t len = 0;
    if (!rc)
        rc = refit_catalog_encode(cat, &enc, &len);
    bool sent = false;
    if (!rc)
        rc = refit_catalog_publish(pub->ctx->store, enc, len, &pub->cat_hash, &sent);
    free(enc);
    refit_catalog_destroy(cat);
    if (rc)
        return refit_error_push(rc, "publisher %s: catalog", pub->id);
    pub->have_cat = 1;
    pub->dirty = 0;
    return 0;
}

/* members/<id>, once per publisher and after its first ready record (a
 * receiver that learns of the source from it finds the record): receivers
 * watch members/ to learn of new sources, so a version's records do not
 * reach every receiver's watch.  Live, so a restarted store has it again. */
static int put_member(refit_publisher_t *pub)
{
    char key[REFIT_STORE_MAX_KEY + 1], epoch[REFIT_STORE_MAX_KEY + 32];
    int n = snprintf(key, sizeof(key), "members/%s", pub->id);
    if (n < 0 || (size_t)n >= sizeof(key))
        return refit_error_set(REFIT_EINVAL, "publisher %s: members key too long", pub->id);
    /* A value no other join wrote: who and when. */
    int el = snprintf(epoch, sizeof(epoch), "%s %llu", pub->id, (unsigned long long)refit_time_ms());
    struct refit_store_put_item it[2] = {{key, pub->id, strlen(pub->id), 0},
                                         {RF_KEY_MEMBERSHIP, epoch, (size_t)el, 0}};
    int rc = refit_store_put_many(pub->ctx->store, it, 2);
    /* Live: a restarted store has both again (the epoch then changes for
     * the receivers, which list again: what they read may be gone). */
    if (!rc)
        rc = refit_store_remember(pub->ctx->store, key, pub->id, strlen(pub->id), 0);
    if (!rc)
        rc = refit_store_remember(pub->ctx->store, RF_KEY_MEMBERSHIP, epoch, (size_t)el, 0);
    if (rc)
        return refit_error_push(rc, "publisher %s: writing %s", pub->id, key);
    pub->member = 1;
    return 0;
}

int rf_pub_record(refit_publisher_t *pub, uint64_t version, uint32_t status, uint32_t keeps, int arena)
{
    size_t n_rk = status == REFIT_SOURCE_READY ? pub->hold->catalog_regions(pub) : 0;
    struct refit_blob tab;
    int has_tab = n_rk && rf_pubsums_key(pub, arena, &tab);
    struct refit_blob *rk = calloc(n_rk + 1, sizeof(*rk));
    if (!rk)
        return REFIT_ENOMEM;
    int rc = 0;
    for (size_t i = 0; !rc && i < n_rk; i++) {
        struct pub_region *g;
        if (!(rc = pub->hold->region(pub, arena, (uint32_t)i, &g)))
            rk[i] = (struct refit_blob){g->rkey, g->rkey_len};
    }
    if (has_tab) /* the checksum table's key after the catalog regions' (pub_sums.c) */
        rk[n_rk++] = tab;
    /* A whole record (layout included), so readers of a withdrawn one
     * decode it and see STALE rather than a malformed record. */
    struct refit_source_record r = {
        .schema = REFIT_CATALOG_SCHEMA,
        .source_id = pub->id,
        .model = refit_model_type(pub->ctx->model),
        .layout = {(uint32_t)pub->par.tp_rank, (uint32_t)par_size(pub->par.tp_size), (uint32_t)pub->par.pp_rank,
                   (uint32_t)par_size(pub->par.pp_size), (uint32_t)pub->par.ep_rank,
                   (uint32_t)par_size(pub->par.ep_size), (uint32_t)pub->par.etp_rank,
                   (uint32_t)par_size(pub->par.etp_size)},
        .transport = refit_transport_plugin_name(pub->tp),
        .address = {pub->addr, pub->addr_len},
        .n_rkeys = n_rk,
        .rkeys = rk,
        .keeps = keeps,
        .catalog = pub->cat_hash,
        .version = version,
        .status = status,
        .heartbeat_ms = refit_time_ms(),
        .sender = refit_transport_name(pub->tp),
    };
    struct refit_src_ext ext = src_ext(&pub->par);
    if (!rc)
        rc = refit_record_publish_ext(pub->ctx->store, &r, &ext);
    free(rk);
    if (!rc && status == REFIT_SOURCE_READY && !pub->member)
        rc = put_member(pub);
    return rc;
}

/* Every tensor into this version's checksums; small (copy mode: all)
 * tensors copied into `arena` first.  Device tensors: every copy to the
 * host is queued first, and each is hashed as its copies land (pubdev.c). */
static int stage_and_hash(refit_publisher_t *pub, int b, struct rf_sums *sums)
{
    int rc = 0, dev_on = 0, hash = pub->ctx->verify != RF_VERIFY_OFF;
    int arena = pub->n_rg > (size_t)b && pub->rg[b].owned;
    for (size_t i = 0; !rc && pub->dev && i < pub->n; i++) {
        struct pub_tensor *t = &pub->t[i];
        if (t->memtype != REFIT_MEM_CUDA)
            continue;
        if (!dev_on && !(rc = rf_pubdev_begin(pub->dev, arena ? pub->rg[b].base : NULL, arena ? pub->rg[b].len : 0)))
            dev_on = 1;
        if (!rc)
            rc = rf_pubdev_queue(pub->dev, t->ptr, t->gathered ? (char *)pub->rg[b].base + t->offset : NULL,
                                 t->nbytes, t->row_bytes, t->chunk_rows, hash);
    }
    for (size_t i = 0; !rc && i < pub->n; i++) {
        struct pub_tensor *t = &pub->t[i];
        if (t->memtype == REFIT_MEM_CUDA) {
            rc = rf_pubdev_take(pub->dev, sums);
            continue;
        }
        const void *src = t->ptr;
        if (t->gathered) {
            memcpy((char *)pub->rg[b].base + t->offset, t->ptr, t->nbytes);
            src = (char *)pub->rg[b].base + t->offset;
        }
        rc = hash ? rf_sums_add(sums, src, t->nbytes, t->row_bytes, t->chunk_rows) : rf_sums_add(sums, NULL, 0, 0, 0);
    }
    if (dev_on) {
        int erc = rf_pubdev_end(pub->dev);
        rc = rc ? rc : erc;
    }
    return rc;
}

/* V's checksum segments (sums.h), put together in one round trip, each
 * live (re-written after a store restart, like the record they belong
 * to); *id names them for the delta stage.  With the checksum table
 * (`table`, pub_sums.c) they go to the store only for receivers with
 * refit.delta.enabled, which read every segment from there. */
static int put_segments(refit_publisher_t *pub, uint64_t version, const struct rf_sums *sums, int table,
                        size_t *n_put, uint64_t *id)
{
    uint64_t *want = malloc((pub->n ? pub->n : 1) * sizeof(*want));
    uint32_t *seg = malloc((pub->n ? pub->n : 1) * sizeof(*seg));
    void **bufs = NULL;
    size_t *lens = NULL, ns = 0;
    int rc = want && seg ? 0 : REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < pub->n; i++) {
        const struct pub_tensor *t = &pub->t[i];
        uint64_t rows = t->row_bytes ? t->nbytes / t->row_bytes : 0;
        want[i] = t->chunk_rows ? (rows + t->chunk_rows - 1) / t->chunk_rows : 0;
    }
    if (!rc) {
        rf_sums_segment(want, pub->n, seg, &ns);
        rc = rf_sums_encode_segs(sums, seg, ns, &pub->cat_hash, version, &bufs, &lens);
    }
    if (!rc)
        *id = rf_sums_segs_id(bufs, lens, ns);
    size_t np = table && !pub->ctx->delta ? 0 : ns;
    struct refit_store_put_item *it = rc ? NULL : calloc(np ? np : 1, sizeof(*it));
    char (*keys)[REFIT_STORE_MAX_KEY + 1] = rc ? NULL : calloc(np ? np : 1, sizeof(*keys));
    if (!rc && (!it || !keys))
        rc = REFIT_ENOMEM;
    for (size_t k = 0; !rc && k < np; k++) {
        rc = rf_key_sums_seg(keys[k], version, pub->id, k);
        it[k] = (struct refit_store_put_item){keys[k], bufs[k], lens[k], 0};
    }
    if (!rc && np)
        rc = refit_store_put_many(pub->ctx->store, it, np);
    for (size_t k = 0; !rc && k < np; k++)
        rc = refit_store_remember(pub->ctx->store, it[k].key, it[k].val, it[k].len, 0);
    for (size_t k = 0; bufs && k < ns; k++)
        free(bufs[k]);
    free(bufs);
    free(lens);
    free(it);
    free(keys);
    free(want);
    free(seg);
    *n_put = np;
    return rc;
}

/* versions/<V>/sums/<id>/<k>; the previous version's are no longer live. */
static int put_sums(refit_publisher_t *pub, uint64_t version, const struct rf_sums *sums, uint64_t *id, int table)
{
    char old_key[REFIT_STORE_MAX_KEY + 1];
    size_t n_put = 0;
    int rc = put_segments(pub, version, sums, table, &n_put, id);
    for (size_t k = 0; !rc && pub->last_version && k < pub->sums_segs; k++)
        if (!rf_key_sums_seg(old_key, pub->last_version, pub->id, k))
            refit_store_forget(pub->ctx->store, old_key);
    if (!rc)
        pub->sums_segs = n_put;
    return rc;
}

static void heartbeat_start(refit_publisher_t *pub, uint64_t version)
{
    pthread_mutex_lock(&pub->hb_lock);
    pub->hb_version = version;
    pthread_mutex_unlock(&pub->hb_lock);
    if (pub->hb_running)
        return;
    if (pthread_create(&pub->hb, NULL, heartbeat_main, pub) == 0)
        pub->hb_running = 1;
    else
        refit_log(REFIT_LOG_WARN, "publisher", "%s: no heartbeat thread", pub->id);
}

int refit_publisher_publish(refit_publisher_t *pub, uint64_t version)
{
    if (!pub || version == 0 || version >= REFIT_NEXT)
        return refit_error_set(REFIT_EINVAL, "refit_publisher_publish: bad version");
    if (version <= pub->last_version)
        return refit_error_set(REFIT_EINVAL, "publisher %s: version %llu is not above the last (%llu)",
                               pub->id, (unsigned long long)version,
                               (unsigned long long)pub->last_version);
    if (!pub->n)
        return refit_error_set(REFIT_EINVAL, "publisher %s: no tensors added", pub->id);
    int rc = 0, b = 0;
    if (pub->dirty && ((rc = rebuild_regions(pub)) || (rc = publish_catalog(pub))))
        return rc;
    if ((rc = pub->hold->begin(pub, version, &b)))
        return rc;
    struct rf_sums sums;
    rc = rf_sums_init(&sums, pub->n);
    if (!rc)
        rc = stage_and_hash(pub, b, &sums);
    uint64_t sums_hash = 0;
    int table = 0;
    if (!rc)
        rc = rf_pubsums_put(pub, b, version, &sums, &table);
    if (!rc)
        rc = put_sums(pub, version, &sums, &sums_hash, table);
    rf_sums_fini(&sums);
    if (!rc)
        rc = rf_pubdelta_publish(pub, version, sums_hash);
    if (!rc)
        rc = rf_pub_record(pub, version, REFIT_SOURCE_READY, pub->hold->keeps, b);
    if (rc)
        rf_pubdelta_invalidate(pub);
    else
        rf_pubdelta_published(pub, version);
    if (rc)
        return refit_error_push(rc, "publisher %s: publishing v%llu", pub->id, (unsigned long long)version);
    pub->last_version = version;
    rf_pub_bell_ring(pub, version); /* receivers of this host wake now, not at the store's notice */
    pub->hold->published(pub, version, b);
    heartbeat_start(pub, version);
    /* V is READY (pull receivers plan from it); now the delivery strategy
     * (push: write it into every receiver that advertised slots). */
    if ((rc = pub->delivery->deliver(pub, version, b)))
        return refit_error_push(rc, "publisher %s: pushing v%llu", pub->id, (unsigned long long)version);
    /* Old versions' keys go; failures here only leave garbage behind. */
    if (refit_versions_retain(pub->ctx->store, version, (uint32_t)pub->ctx->retain_versions, NULL))
        refit_log(REFIT_LOG_WARN, "publisher", "%s: retention: %s", pub->id, refit_error_message());
    refit_log(REFIT_LOG_INFO, "publisher", "%s: v%llu READY (%zu tensors, %zu regions; %zu registrations, %zu kept)",
              pub->id, (unsigned long long)version, pub->n, pub->n_rg, pub->registered, pub->reused);
    return 0;
}

int refit_publisher_wait_released(refit_publisher_t *pub, uint64_t version, int64_t timeout_ms)
{
    if (!pub)
        return refit_error_set(REFIT_EINVAL, "refit_publisher_wait_released: NULL publisher");
    if (timeout_ms < 0)
        timeout_ms = pub->ctx->release_timeout_ms;
    int rc = rf_release_wait(pub->ctx->store, version, (size_t)pub->ctx->receivers, timeout_ms, pub->id);
    return rc ? refit_error_push(rc, "publisher %s: waiting for v%llu acks", pub->id, (unsigned long long)version)
              : 0;
}

int refit_publisher_stats(const refit_publisher_t *pub, struct refit_publisher_stats *out)
{
    if (!pub || !out)
        return refit_error_set(REFIT_EINVAL, "refit_publisher_stats: NULL argument");
    struct refit_publisher_stats st = {.size = sizeof(st), .regions = pub->n_rg, .registrations = pub->registered,
                                       .kept = pub->reused, .version = pub->last_version,
                                       .stage_s = rf_pubdev_stage_s(pub->dev),
                                       .bytes_pushed = pub->delivery->bytes(pub), .delta_bytes = UINT64_MAX};
    rf_pubdelta_stats(pub, &st);
    size_t n = out->size && out->size < sizeof(st) ? out->size : sizeof(st);
    memcpy(out, &st, n);
    return 0;
}
