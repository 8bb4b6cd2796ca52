/* receiver.c — one inference rank's side of the refit cycle.
 *
 * pull(V): discover the sources READY at V (store), fetch their catalogs
 * (cached by content hash) and this version's checksums, plan (cached while
 * catalogs, source layouts and our own layout are unchanged), connect and
 * unpack remote keys (cached), READ in batches while converting finished
 * tensors, verify the pulled chunks, check the fence (every source still
 * READY(V) and alive), commit into the destinations and acknowledge.
 * Until commit nothing touches the destinations (unless refit.in_place),
 * so a failed pull leaves the previous version in place. */
#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "devpath.h"
#include "exec.h"
#include "receiver.h"
#include "refit/catalog.h"
#include "refit/log.h"
#include "sums.h"

/* Large zeroed buffers from mmap, populated up front: the page faults are
 * paid once here (the alloc figure of the first cycle) instead of inside the
 * first transfers and conversions into each staging buffer. */
static void *big_alloc(size_t n)
{
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void big_free(void *p, size_t n)
{
    if (p)
        munmap(p, n ? n : 1);
}

static int sz(int v)
{
    return v > 0 ? v : 1;
}

/* ------------------------------------------------------------------ */
/* Destinations */

static int add_dst(refit_receiver_t *r, const char *name, enum refit_dtype dt, int ndim, const int64_t *shape,
                   size_t lt, int is_scale)
{
    struct rcv_dst *nd = realloc(r->d, (r->n_d + 1) * sizeof(*nd));
    if (!nd)
        return REFIT_ENOMEM;
    r->d = nd;
    struct rcv_dst *d = &nd[r->n_d];
    memset(d, 0, sizeof(*d));
    d->name = strdup(name);
    if (!d->name)
        return REFIT_ENOMEM;
    d->dtype = dt;
    d->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        d->shape[i] = shape[i];
        n *= (size_t)shape[i];
    }
    d->nbytes = n * refit_dtype_size(dt);
    d->lt = lt;
    d->is_scale = is_scale;
    d->memtype = REFIT_MEM_HOST;
    r->n_d++;
    return 0;
}

static int build_dsts(refit_receiver_t *r)
{
    size_t n = refit_layout_count(r->lay);
    r->dst_of_lt = calloc(n ? n : 1, sizeof(size_t));
    r->scale_of_lt = calloc(n ? n : 1, sizeof(ptrdiff_t));
    if (!r->dst_of_lt || !r->scale_of_lt)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct refit_layout_tensor *t = refit_layout_at(r->lay, i);
        enum refit_dtype dt = t->fp8 ? REFIT_DTYPE_F8_E4M3
                                     : (t->dtype != REFIT_DTYPE_INVALID ? t->dtype : REFIT_DTYPE_BF16);
        r->dst_of_lt[i] = r->n_d;
        r->scale_of_lt[i] = -1;
        int rc = add_dst(r, t->name, dt, t->ndim, t->shape, i, 0);
        if (rc)
            return rc;
        if (t->fp8) {
            int64_t s[3];
            int sd = t->ndim;
            int64_t rows = t->shape[t->ndim - 2], cols = t->shape[t->ndim - 1];
            if (t->ndim == 3) {
                s[0] = t->shape[0];
                s[1] = (rows + 127) / 128;
                s[2] = (cols + 127) / 128;
            } else {
                s[0] = (rows + 127) / 128;
                s[1] = (cols + 127) / 128;
            }
            char name[1100];
            snprintf(name, sizeof(name), "%s_scale_inv", t->name);
            r->scale_of_lt[i] = (ptrdiff_t)r->n_d;
            if ((rc = add_dst(r, name, REFIT_DTYPE_F32, sd, s, i, 1)))
                return rc;
        }
    }
    return 0;
}

int refit_receiver_create(refit_context_t *ctx, const struct refit_target *target, const char *receiver_id,
                          refit_receiver_t **out)
{
    if (!ctx || !target || !out)
        return refit_error_set(REFIT_EINVAL, "refit_receiver_create: NULL argument");
    refit_receiver_t *r = calloc(1, sizeof(*r));
    if (!r)
        return REFIT_ENOMEM;
    r->ctx = ctx;
    r->target = *target;
    r->copts = ctx->copts;
    int rc = 0;
    if (target->name) {
        if (!strcmp(target->name, "hf"))
            r->copts.target = REFIT_TARGET_HF;
        else if (!strcmp(target->name, "vllm"))
            r->copts.target = REFIT_TARGET_VLLM;
        else
            rc = refit_error_set(REFIT_EINVAL, "receiver: target '%s': use hf or vllm", target->name);
    }
    r->copts.tp = sz(target->tp_size);
    r->copts.rank = target->tp_rank;
    r->copts.ep = target->ep_size > 1 ? target->ep_size : 0;
    char idbuf[128];
    if (!receiver_id) {
        snprintf(idbuf, sizeof(idbuf), "%s-tp%d", r->copts.target == REFIT_TARGET_HF ? "hf" : "vllm",
                 target->tp_rank);
        receiver_id = idbuf;
    }
    if (!rc)
        rc = refit_check_id("receiver id", receiver_id);
    if (!rc && !(r->id = strdup(receiver_id)))
        rc = REFIT_ENOMEM;
    if (!rc && (target->tp_rank < 0 || target->tp_rank >= sz(target->tp_size)))
        rc = refit_error_set(REFIT_EINVAL, "receiver %s: tp rank %d of %d", receiver_id, target->tp_rank,
                             target->tp_size);
    if (!rc)
        rc = refit_layout_target(ctx->model, &r->copts, &r->lay);
    if (!rc)
        rc = build_dsts(r);
    if (!rc)
        rc = rf_context_transport(ctx, r->id, &r->tp);
    if (!rc)
        rc = rf_fanout_create(r);
    if (!rc) {
        /* Registered so a publisher waiting for acks can name us. */
        char key[REFIT_STORE_MAX_KEY + 1];
        rc = rf_key_receiver(key, r->id);
        if (!rc)
            rc = refit_store_put_live(ctx->store, key, r->id, strlen(r->id), 0);
    }
    if (rc) {
        refit_error_push(rc, "receiver %s", receiver_id);
        refit_receiver_destroy(r);
        return rc;
    }
    *out = r;
    return 0;
}

static void drop_alt(refit_receiver_t *r, struct rcv_source *s)
{
    for (size_t k = 0; s->alt_rkeys && k < s->n_rkeys; k++) {
        refit_tp_release(r->tp, s->alt_rkeys[k]);
        free((void *)s->alt_blobs[k].data);
    }
    free(s->alt_rkeys);
    free(s->alt_blobs);
    s->alt_rkeys = NULL;
    s->alt_blobs = NULL;
}

static void drop_source(refit_receiver_t *r, struct rcv_source *s)
{
    drop_alt(r, s);
    for (size_t k = 0; k < s->n_rkeys; k++) {
        refit_tp_release(r->tp, s->rkeys[k]);
        free((void *)s->rkey_blobs[k].data);
    }
    free(s->rkeys);
    free(s->rkey_blobs);
    refit_tp_disconnect(r->tp, s->peer);
    free(s->addr);
    free(s->rec);
    refit_layout_destroy(s->meg);
    rf_sums_fini(&s->sums);
    free(s->psrc_of);
    free(s->id);
    memset(s, 0, sizeof(*s));
}

static void drop_plan(refit_receiver_t *r)
{
    rf_push_rcv_plan_free(r);
    rf_plan_free(&r->plan);
    free(r->psrc);
    free(r->psrc_source);
    free(r->psrc_cat);
    free(r->pdst);
    free(r->img_dtype);
    free(r->feed_first);
    free(r->feed);
    free(r->scat_first);
    free(r->scat);
    free(r->pending);
    free(r->check_order);
    free(r->plan_key);
    r->psrc = NULL;
    r->psrc_source = NULL;
    r->psrc_cat = NULL;
    r->pdst = NULL;
    r->img_dtype = NULL;
    r->feed_first = r->feed = NULL;
    r->scat_first = r->scat = NULL;
    r->pending = NULL;
    r->check_order = NULL;
    r->plan_key = NULL;
    r->n_psrc = r->cap_psrc = 0;
    r->have_plan = 0;
}

void refit_receiver_destroy(refit_receiver_t *r)
{
    if (!r)
        return;
    rf_fanout_destroy(r); /* the replica record goes before its buffers */
    drop_plan(r);
    rf_push_rcv_destroy(r);
    free(r->unfed);
    for (size_t i = 0; i < r->n_src; i++)
        drop_source(r, &r->src[i]);
    free(r->src);
    for (size_t i = 0; i < r->n_cats; i++)
        refit_catalog_destroy(r->cats[i].cat);
    free(r->cats);
    for (size_t i = 0; i < r->n_d; i++) {
        if (r->d[i].reg)
            refit_tp_dereg(r->tp, r->d[i].reg);
        if (r->d[i].owned && !r->doubled)
            free(r->d[i].ptr);
        free(r->d[i].name);
    }
    free(r->d);
    free(r->dst_of_lt);
    free(r->scale_of_lt);
    rf_rcvdev_destroy(r); /* unpins staging before it is unmapped */
    for (int b = 0; b < 2; b++) {
        if (r->stage_reg[b])
            refit_tp_dereg(r->tp, r->stage_reg[b]);
        big_free(r->stage[b], r->staging_len);
    }
    if (r->scratch_reg)
        refit_tp_dereg(r->tp, r->scratch_reg);
    if (r->scratch_dev)
        rf_rcvdev_scratch_free(r, r->scratch);
    else
        big_free(r->scratch, r->scratch_len);
    if (r->id && r->ctx && r->ctx->store) {
        /* Best effort, and the caller's error message must survive it. */
        char key[REFIT_STORE_MAX_KEY + 1], saved[1024];
        int saved_st = refit_error_status();
        snprintf(saved, sizeof(saved), "%s", refit_error_message());
        if (!rf_key_receiver(key, r->id)) {
            refit_store_forget(r->ctx->store, key);
            refit_store_del(r->ctx->store, key);
        }
        if (saved[0])
            refit_error_set(saved_st, "%s", saved);
        else
            refit_error_clear();
    }
    refit_layout_destroy(r->lay);
    free(r->id);
    free(r);
}

size_t refit_receiver_count(const refit_receiver_t *r)
{
    return r ? r->n_d : 0;
}

int refit_receiver_tensor(const refit_receiver_t *r, size_t i, struct refit_tensor_info *out)
{
    if (!r || i >= r->n_d || !out)
        return refit_error_set(REFIT_EINVAL, "refit_receiver_tensor: index %zu out of range", i);
    const struct rcv_dst *d = &r->d[i];
    memset(out, 0, sizeof(*out));
    out->name = d->name;
    out->dtype = d->dtype;
    out->ndim = d->ndim;
    memcpy(out->shape, d->shape, sizeof(int64_t) * (size_t)d->ndim);
    out->ptr = d->ptr;
    out->memtype = d->memtype;
    out->nbytes = d->nbytes;
    return 0;
}

int refit_receiver_bind(refit_receiver_t *r, const char *name, void *ptr, enum refit_dtype dtype, int ndim,
                        const int64_t *shape, uint32_t memtype)
{
    if (!r || !name || !ptr || !shape)
        return refit_error_set(REFIT_EINVAL, "refit_receiver_bind: bad argument");
    if (memtype != REFIT_MEM_HOST && memtype != REFIT_MEM_CUDA)
        return refit_error_set(REFIT_EINVAL, "receiver %s: '%s': unknown memory type %u", r->id, name, memtype);
    for (size_t i = 0; i < r->n_d; i++) {
        struct rcv_dst *d = &r->d[i];
        if (strcmp(d->name, name))
            continue;
        int same = ndim == d->ndim;
        for (int k = 0; same && k < ndim; k++)
            same = shape[k] == d->shape[k];
        if (!same)
            return refit_error_set(REFIT_EINVAL, "receiver %s: '%s' is bound with another shape than "
                                   "its %s layout's", r->id, name,
                                   r->copts.target == REFIT_TARGET_HF ? "hf" : "vllm");
        if (d->is_scale && dtype != REFIT_DTYPE_F32)
            return refit_error_set(REFIT_EINVAL, "receiver %s: '%s' (FP8 scales) must be F32", r->id, name);
        if (d->dtype == REFIT_DTYPE_F8_E4M3 && dtype != REFIT_DTYPE_F8_E4M3)
            return refit_error_set(REFIT_EINVAL, "receiver %s: '%s' is FP8 in this layout, bound as %s",
                                   r->id, name, refit_dtype_name(dtype));
        if (dtype != d->dtype) {
            /* Floating destinations may differ from the source: refit casts. */
            if (dtype != REFIT_DTYPE_BF16 && dtype != REFIT_DTYPE_F32)
                return refit_error_set(REFIT_ENOTSUP, "receiver %s: '%s' as %s: bf16 and f32 only", r->id,
                                       name, refit_dtype_name(dtype));
            d->nbytes = d->nbytes / refit_dtype_size(d->dtype) * refit_dtype_size(dtype);
            d->dtype = dtype;
        }
        int rc = memtype == REFIT_MEM_CUDA ? rf_rcvdev_bind(r, name, ptr) : 0;
        if (rc)
            return rc;
        if (d->owned) {
            if (!r->doubled)
                free(d->ptr); /* else it lives in the staging buffer */
            d->owned = 0;
        }
        d->ptr = ptr;
        d->memtype = memtype;
        r->have_plan = 0; /* staging offsets depend on sizes */
        return 0;
    }
    return refit_error_set(REFIT_ENOENT, "receiver %s: no destination named '%s' in this layout", r->id, name);
}

int refit_receiver_allocate(refit_receiver_t *r)
{
    if (!r)
        return REFIT_EINVAL;
    r->allocate = 1;
    for (size_t i = 0; i < r->n_d; i++) {
        struct rcv_dst *d = &r->d[i];
        if (d->ptr)
            continue;
        d->ptr = calloc(1, d->nbytes ? d->nbytes : 1);
        if (!d->ptr)
            return refit_error_set(REFIT_ENOMEM, "receiver %s: allocating '%s' (%zu bytes)", r->id, d->name,
                                   d->nbytes);
        d->owned = 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Discovery */

static const refit_catalog_t *catalog_get(refit_receiver_t *r, const struct refit_hash128 *h, int *rc)
{
    for (size_t i = 0; i < r->n_cats; i++)
        if (!memcmp(r->cats[i].hash.b, h->b, 16))
            return r->cats[i].cat;
    refit_catalog_t *c = NULL;
    *rc = refit_catalog_fetch(r->ctx->store, h, &c);
    if (*rc)
        return NULL;
    struct cat_cache *nc = realloc(r->cats, (r->n_cats + 1) * sizeof(*nc));
    if (!nc) {
        refit_catalog_destroy(c);
        *rc = REFIT_ENOMEM;
        return NULL;
    }
    r->cats = nc;
    nc[r->n_cats].hash = *h;
    nc[r->n_cats].cat = c;
    r->n_cats++;
    return c;
}

struct seen {
    struct refit_source_record *rec;
    int stale;
};

static int cmp_seen(const void *a, const void *b)
{
    return strcmp(((const struct seen *)a)->rec->source_id, ((const struct seen *)b)->rec->source_id);
}

/* Live READY records, sorted by id. */
static int read_sources(refit_receiver_t *r, struct seen **out, size_t *n_out)
{
    char **keys = NULL;
    size_t nk = 0;
    *out = NULL;
    *n_out = 0;
    int rc = refit_store_list(r->ctx->store, "sources/", &keys, &nk);
    if (rc)
        return refit_error_push(rc, "listing sources");
    struct seen *sv = calloc(nk ? nk : 1, sizeof(*sv));
    if (!sv) {
        free(keys);
        return REFIT_ENOMEM;
    }
    size_t n = 0;
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
        if (c) {
            rc = c;
            break;
        }
        if (rec->status != REFIT_SOURCE_READY || stale || strcmp(rec->model, refit_model_type(r->ctx->model))) {
            if (stale && rec->status == REFIT_SOURCE_READY)
                refit_log(REFIT_LOG_INFO, "receiver", "%s: source %s is stale (no heartbeat)", r->id, id);
            free(rec);
            continue;
        }
        sv[n].rec = rec;
        sv[n].stale = 0;
        n++;
    }
    free(keys);
    if (rc) {
        for (size_t i = 0; i < n; i++)
            free(sv[i].rec);
        free(sv);
        return rc;
    }
    qsort(sv, n, sizeof(*sv), cmp_seen);
    *out = sv;
    *n_out = n;
    return 0;
}

static void free_seen(struct seen *sv, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(sv[i].rec);
    free(sv);
}

/* ------------------------------------------------------------------ */
/* Planning */

static int lookup_psrc(void *arg, uint32_t si, const char *name, uint32_t *out)
{
    refit_receiver_t *r = arg;
    struct rcv_source *s = &r->src[si];
    ptrdiff_t ci = refit_catalog_find(s->cat, name);
    if (ci < 0)
        return REFIT_ENOENT;
    if (s->psrc_of[ci] >= 0) {
        *out = (uint32_t)s->psrc_of[ci];
        return 0;
    }
    const struct refit_cat_tensor *ct = &s->cat->tensors[ci];
    if (r->n_psrc == r->cap_psrc) {
        size_t nc = r->cap_psrc ? r->cap_psrc * 2 : 256;
        struct rf_psrc *np = realloc(r->psrc, nc * sizeof(*np));
        if (np)
            r->psrc = np;
        uint32_t *ns = realloc(r->psrc_source, nc * sizeof(*ns));
        if (ns)
            r->psrc_source = ns;
        size_t *ncat = realloc(r->psrc_cat, nc * sizeof(*ncat));
        if (ncat)
            r->psrc_cat = ncat;
        if (!np || !ns || !ncat)
            return REFIT_ENOMEM;
        r->cap_psrc = nc;
    }
    uint64_t cols = ct->ndim >= 2 ? ct->shape[ct->ndim - 1] : 1;
    uint64_t es = refit_dtype_size(ct->dtype);
    uint64_t rows = cols && es ? ct->nbytes / (cols * es) : 0;
    r->psrc[r->n_psrc] = (struct rf_psrc){si, ct->region, ct->offset, rows, cols, (uint32_t)es, ct->chunk_rows};
    r->psrc_source[r->n_psrc] = si;
    r->psrc_cat[r->n_psrc] = (size_t)ci;
    s->psrc_of[ci] = (ptrdiff_t)r->n_psrc;
    *out = (uint32_t)r->n_psrc++;
    return 0;
}

static const char *dst_name(void *arg, uint32_t d)
{
    refit_receiver_t *r = arg;
    const struct refit_layout_tensor *t = refit_layout_at(r->lay, d);
    return t ? t->name : "?";
}

static int cmp_check(const void *a, const void *b, void *arg)
{
    const struct rf_check *c = arg;
    const struct rf_check *x = &c[*(const size_t *)a], *y = &c[*(const size_t *)b];
    if (x->buf != y->buf)
        return x->buf < y->buf ? -1 : 1;
    return (x->off > y->off) - (x->off < y->off);
}

/* For each descriptor, the layout tensors whose image it (or a scatter from
 * it) writes; for each tensor its scatters.  Descriptors are disjoint in
 * local space, so each image or scatter range finds its descriptors by
 * binary search. */
struct link {
    size_t desc, t;
};

static int cmp_link(const void *a, const void *b)
{
    const struct link *x = a, *y = b;
    if (x->desc != y->desc)
        return x->desc < y->desc ? -1 : 1;
    return (x->t > y->t) - (x->t < y->t);
}

static int cmp_desc_local(const void *a, const void *b, void *arg)
{
    const struct rf_desc *d = arg;
    const struct rf_desc *x = &d[*(const size_t *)a], *y = &d[*(const size_t *)b];
    if (x->buf != y->buf)
        return x->buf < y->buf ? -1 : 1;
    return (x->local_off > y->local_off) - (x->local_off < y->local_off);
}

static int link_range(const struct rf_plan *p, const size_t *order, uint32_t buf, uint64_t a, uint64_t b,
                      size_t t, struct link **links, size_t *n, size_t *cap)
{
    size_t lo = 0, hi = p->n_desc;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct rf_desc *d = &p->desc[order[mid]];
        if (d->buf < buf || (d->buf == buf && d->local_off + d->len <= a))
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < p->n_desc; i++) {
        const struct rf_desc *d = &p->desc[order[i]];
        if (d->buf != buf || d->local_off >= b)
            break;
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 1024;
            struct link *nl = realloc(*links, nc * sizeof(*nl));
            if (!nl)
                return REFIT_ENOMEM;
            *links = nl;
            *cap = nc;
        }
        (*links)[(*n)++] = (struct link){order[i], t};
    }
    return 0;
}

static int build_feeds(refit_receiver_t *r)
{
    const struct rf_plan *p = &r->plan;
    size_t nl = refit_layout_count(r->lay);
    r->pending = calloc(nl ? nl : 1, sizeof(uint32_t));
    r->feed_first = calloc(p->n_desc + 1, sizeof(size_t));
    r->scat_first = calloc(nl + 1, sizeof(size_t));
    r->scat = malloc((p->n_scatter ? p->n_scatter : 1) * sizeof(size_t));
    size_t *order = malloc((p->n_desc ? p->n_desc : 1) * sizeof(size_t));
    struct link *links = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    if (!r->pending || !r->feed_first || !r->scat_first || !r->scat || !order) {
        free(order);
        return REFIT_ENOMEM;
    }
    for (size_t i = 0; i < p->n_desc; i++)
        order[i] = i;
    qsort_r(order, p->n_desc, sizeof(size_t), cmp_desc_local, p->desc);
    for (size_t t = 0; t < nl && !rc; t++) {
        const struct rf_pdst *pd = &r->pdst[t];
        uint64_t len = pd->rows * pd->cols * pd->esize;
        rc = link_range(p, order, pd->in_scratch ? RF_BUF_SCRATCH : RF_BUF_STAGING, pd->offset, pd->offset + len,
                        t, &links, &n, &cap);
    }
    for (size_t k = 0; k < p->n_scatter && !rc; k++) {
        const struct rf_scatter *sc = &p->scatter[k];
        uint64_t end = sc->from + (sc->rows - 1) * sc->from_pitch + sc->row_bytes;
        rc = link_range(p, order, RF_BUF_SCRATCH, sc->from, end, sc->dst, &links, &n, &cap);
        r->scat_first[sc->dst + 1]++;
    }
    free(order);
    if (rc) {
        free(links);
        return rc;
    }
    /* Scatters per tensor (CSR). */
    for (size_t t = 0; t < nl; t++)
        r->scat_first[t + 1] += r->scat_first[t];
    size_t *fill = calloc(nl ? nl : 1, sizeof(size_t));
    if (!fill) {
        free(links);
        return REFIT_ENOMEM;
    }
    for (size_t k = 0; k < p->n_scatter; k++) {
        uint32_t t = p->scatter[k].dst;
        r->scat[r->scat_first[t] + fill[t]++] = k;
    }
    free(fill);
    /* Links per descriptor, without duplicates (CSR). */
    if (n)
        qsort(links, n, sizeof(*links), cmp_link);
    r->feed = malloc((n ? n : 1) * sizeof(size_t));
    if (!r->feed) {
        free(links);
        return REFIT_ENOMEM;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (i && links[i].desc == links[i - 1].desc && links[i].t == links[i - 1].t)
            continue;
        r->feed[m++] = links[i].t;
        r->feed_first[links[i].desc + 1]++;
    }
    for (size_t i = 0; i < p->n_desc; i++)
        r->feed_first[i + 1] += r->feed_first[i];
    free(links);
    r->check_order = malloc((p->n_check ? p->n_check : 1) * sizeof(size_t));
    if (!r->check_order)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < p->n_check; i++)
        r->check_order[i] = i;
    qsort_r(r->check_order, p->n_check, sizeof(size_t), cmp_check, p->check);
    return 0;
}

static int ensure_buffers(refit_receiver_t *r, uint64_t staging, uint64_t scratch, double *alloc_s,
                          double *reg_s)
{
    double t0 = rf_seconds();
    int rc = 0;
    int want_double = !r->ctx->in_place;
    for (size_t i = 0; want_double && i < r->n_d; i++)
        if (!r->d[i].owned)
            want_double = 0; /* any bound destination: one buffer and a copy */
    if (staging > r->staging_len || want_double != r->doubled) {
        void *nb[2] = {NULL, NULL};
        for (int b = 0; b < 1 + want_double; b++)
            if (!(nb[b] = big_alloc(staging))) {
                big_free(nb[0], staging);
                return refit_error_set(REFIT_ENOMEM, "receiver %s: %llu bytes of staging", r->id,
                                       (unsigned long long)staging);
            }
        /* Owned destinations move into the new front buffer, keeping their
         * bytes (the previous version). */
        for (size_t i = 0; want_double && i < r->n_d; i++) {
            struct rcv_dst *d = &r->d[i];
            void *to = (char *)nb[0] + d->staging_off;
            if (d->ptr && d->ptr != to && r->last_version)
                memcpy(to, d->ptr, d->nbytes); /* never pulled: still zero */
            if (!r->doubled)
                free(d->ptr);
            d->ptr = to;
        }
        rf_rcvdev_unpin(r); /* before the old staging is unmapped */
        for (int b = 0; b < 2; b++) {
            if (r->stage_reg[b])
                refit_tp_dereg(r->tp, r->stage_reg[b]);
            r->stage_reg[b] = NULL;
            big_free(r->stage[b], r->staging_len);
            r->stage[b] = nb[b];
        }
        if (r->doubled && !want_double)
            for (size_t i = 0; i < r->n_d; i++)
                if (r->d[i].owned) {
                    /* Back to separate allocations (a destination was bound). */
                    void *m = calloc(1, r->d[i].nbytes ? r->d[i].nbytes : 1);
                    if (!m)
                        return REFIT_ENOMEM;
                    r->d[i].ptr = m;
                }
        r->doubled = want_double;
        r->front = 0;
        r->staging_len = staging;
    }
    /* The back buffer receives this pull. */
    int back = r->doubled ? r->front ^ 1 : 0;
    r->staging = r->stage[back];
    int dev_scratch = rf_rcvdev_resident(r);
    if (scratch > r->scratch_len || dev_scratch != r->scratch_dev) {
        if (r->scratch_reg)
            refit_tp_dereg(r->tp, r->scratch_reg);
        r->scratch_reg = NULL;
        if (r->scratch_dev)
            rf_rcvdev_scratch_free(r, r->scratch);
        else
            big_free(r->scratch, r->scratch_len);
        r->scratch = NULL;
        r->scratch_len = 0;
        r->scratch_dev = dev_scratch;
        /* Resident pulls scatter on the device: scratch is device memory. */
        if (dev_scratch) {
            if (scratch && (rc = rf_rcvdev_scratch_alloc(r, scratch, &r->scratch)))
                return rc;
        } else if (!(r->scratch = big_alloc(scratch))) {
            return refit_error_set(REFIT_ENOMEM, "receiver %s: %llu bytes of scratch", r->id,
                                   (unsigned long long)scratch);
        }
        r->scratch_len = r->scratch ? scratch : 0;
    }
    double t1 = rf_seconds();
    *alloc_s += t1 - t0;
    for (int b = 0; !rc && b < 1 + r->doubled; b++)
        if (!r->stage_reg[b] && r->staging_len && !r->ctx->in_place)
            rc = refit_tp_reg(r->tp, r->stage[b], r->staging_len, REFIT_MEM_HOST, &r->stage_reg[b]);
    r->staging_reg = r->stage_reg[back];
    if (!rc && !r->scratch_reg && r->scratch_len)
        rc = refit_tp_reg(r->tp, r->scratch, r->scratch_len, r->scratch_dev ? REFIT_MEM_CUDA : REFIT_MEM_HOST,
                          &r->scratch_reg);
    for (size_t i = 0; !rc && r->ctx->in_place && i < r->n_d; i++) {
        struct rcv_dst *d = &r->d[i];
        if (d->reg && d->reg_ptr == d->ptr)
            continue;
        if (d->reg)
            refit_tp_dereg(r->tp, d->reg);
        d->reg = NULL;
        rc = refit_tp_reg(r->tp, d->ptr, d->nbytes ? d->nbytes : 1, d->memtype, &d->reg);
        d->reg_ptr = d->ptr;
    }
    *reg_s += rf_seconds() - t1;
    return rc ? refit_error_push(rc, "receiver %s: registering buffers", r->id) : 0;
}

/* 2-D view of a layout tensor: [rows, cols] (1-D: [n, 1]; a stack
 * [E, r, c]: [E*r, c]); *slot_rows = r for stacks. */
static void layout_dims(const struct refit_layout_tensor *t, uint64_t *rows, uint64_t *cols,
                        uint64_t *slot_rows)
{
    if (t->ndim == 3) {
        *rows = (uint64_t)(t->shape[0] * t->shape[1]);
        *cols = (uint64_t)t->shape[2];
        *slot_rows = (uint64_t)t->shape[1];
    } else {
        *rows = (uint64_t)t->shape[0];
        *cols = t->ndim == 2 ? (uint64_t)t->shape[1] : 1;
        *slot_rows = *rows;
    }
}

/* The composed layout as planner pieces: candidates are the sources that
 * published the tensor (a candidate whose source lacks it is dropped; a
 * piece left without any is a gap the planner reports). */
static int pieces_of(refit_receiver_t *r, const refit_layout_xmap_t *xm, const refit_layout_t **meg,
                     struct rf_piece **out, size_t *n_out)
{
    size_t n = refit_layout_xmap_count(xm), m = 0;
    struct rf_piece *pc = calloc(n ? n : 1, sizeof(*pc));
    if (!pc)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct refit_layout_xpiece *x = refit_layout_xmap_at(xm, i);
        uint64_t rows, cols, slot;
        layout_dims(refit_layout_at(r->lay, x->dst), &rows, &cols, &slot);
        struct rf_piece *p = &pc[m];
        memset(p, 0, sizeof(*p));
        p->dst = x->dst;
        p->rows = (uint64_t)x->rows;
        p->cols = (uint64_t)x->cols;
        p->dst_row = (uint64_t)x->dst_index * slot + (uint64_t)x->dst_row;
        p->dst_col = (uint64_t)x->dst_col;
        for (size_t c = 0; c < x->n_cand && p->ncand < RF_MAX_CAND; c++) {
            const struct refit_layout_cand *cd = &x->cand[c];
            if (p->ncand && ((uint64_t)cd->src_row != p->src_row || (uint64_t)cd->src_col != p->src_col))
                continue; /* same bytes elsewhere in that rank's tensor: one placement suffices */
            uint32_t ps;
            int rc = lookup_psrc(r, cd->rank, refit_layout_at(meg[cd->rank], cd->tensor)->name, &ps);
            if (rc == REFIT_ENOENT)
                continue;
            if (rc) {
                free(pc);
                return rc;
            }
            if (!p->ncand) {
                p->src_row = (uint64_t)cd->src_row;
                p->src_col = (uint64_t)cd->src_col;
            }
            p->cand[p->ncand++] = ps;
        }
        if (p->ncand)
            m++;
    }
    *out = pc;
    *n_out = m;
    return 0;
}

static int make_plan(refit_receiver_t *r)
{
    drop_plan(r);
    size_t nl = refit_layout_count(r->lay);
    for (size_t i = 0; i < r->n_src; i++) {
        free(r->src[i].psrc_of);
        r->src[i].psrc_of = malloc((r->src[i].cat->n_tensors + 1) * sizeof(ptrdiff_t));
        if (!r->src[i].psrc_of)
            return REFIT_ENOMEM;
        for (size_t k = 0; k < r->src[i].cat->n_tensors; k++)
            r->src[i].psrc_of[k] = -1;
    }
    const refit_layout_t **meg = calloc(r->n_src ? r->n_src : 1, sizeof(*meg));
    if (!meg)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < r->n_src; i++)
        meg[i] = r->src[i].meg;
    refit_layout_xmap_t *xm = NULL;
    int rc = refit_layout_compose(r->lay, meg, r->n_src, &xm);
    struct rf_piece *pieces = NULL;
    size_t np = 0;
    if (!rc)
        rc = pieces_of(r, xm, meg, &pieces, &np);
    free(meg);
    refit_layout_xmap_destroy(xm);
    if (rc)
        return rc;
    r->pdst = calloc(nl ? nl : 1, sizeof(*r->pdst));
    r->img_dtype = calloc(nl ? nl : 1, sizeof(*r->img_dtype));
    if (!r->pdst || !r->img_dtype) {
        free(pieces);
        return REFIT_ENOMEM;
    }
    /* Image dtype per tensor: its sources', which must agree. */
    for (size_t k = 0; k < np; k++) {
        const struct refit_cat_tensor *ct =
            &r->src[r->psrc_source[pieces[k].cand[0]]].cat->tensors[r->psrc_cat[pieces[k].cand[0]]];
        enum refit_dtype *dt = &r->img_dtype[pieces[k].dst];
        if (*dt == REFIT_DTYPE_INVALID)
            *dt = (enum refit_dtype)ct->dtype;
        else if (*dt != (enum refit_dtype)ct->dtype) {
            free(pieces);
            return refit_error_set(REFIT_EPROTO, "'%s': its sources differ in dtype (%s and %s)",
                                   dst_name(r, pieces[k].dst), refit_dtype_name(*dt),
                                   refit_dtype_name((enum refit_dtype)ct->dtype));
        }
    }
    /* Destination dtypes follow the sources where the layout keeps them. */
    for (size_t t = 0; t < nl; t++) {
        const struct refit_layout_tensor *lt = refit_layout_at(r->lay, t);
        struct rcv_dst *d = &r->d[r->dst_of_lt[t]];
        if (r->img_dtype[t] == REFIT_DTYPE_INVALID)
            r->img_dtype[t] = d->dtype == REFIT_DTYPE_F8_E4M3 ? REFIT_DTYPE_BF16 : d->dtype;
        if (!lt->fp8 && lt->dtype == REFIT_DTYPE_INVALID && !r->resolved && d->owned &&
            d->dtype != r->img_dtype[t]) {
            size_t elems = d->nbytes / refit_dtype_size(d->dtype);
            void *np2 = NULL;
            if (!r->doubled) {
                np2 = calloc(1, elems * refit_dtype_size(r->img_dtype[t]) + 1);
                if (!np2) {
                    free(pieces);
                    return REFIT_ENOMEM;
                }
                free(d->ptr);
            }
            d->ptr = np2; /* doubled: re-pointed into staging below */
            d->dtype = r->img_dtype[t];
            d->nbytes = elems * refit_dtype_size(d->dtype);
        }
    }
    r->resolved = 1;
    /* Staging: every destination's final bytes, 64-byte aligned, with a gap
     * so descriptors never merge across destinations (in_place needs it). */
    uint64_t staging = 0;
    for (size_t i = 0; i < r->n_d; i++) {
        r->d[i].staging_off = staging;
        staging += ((r->d[i].nbytes + 63) & ~(uint64_t)63) + 64;
    }
    if (r->doubled && staging <= r->staging_len)
        for (size_t i = 0; i < r->n_d; i++)
            r->d[i].ptr = (char *)r->stage[r->front] + r->d[i].staging_off;
    for (size_t t = 0; t < nl; t++) {
        const struct refit_layout_tensor *lt = refit_layout_at(r->lay, t);
        struct rcv_dst *d = &r->d[r->dst_of_lt[t]];
        uint64_t rows, cols, slot;
        layout_dims(lt, &rows, &cols, &slot);
        struct rf_pdst *pd = &r->pdst[t];
        pd->rows = rows;
        pd->cols = cols;
        pd->esize = (uint32_t)refit_dtype_size(r->img_dtype[t]);
        pd->in_scratch = lt->fp8 || d->dtype != r->img_dtype[t];
        pd->offset = pd->in_scratch ? 0 : d->staging_off;
        uint64_t cov = 0;
        for (size_t k = 0; k < lt->n_pieces; k++)
            cov += (uint64_t)(lt->pieces[k].rows * lt->pieces[k].cols);
        pd->covered = cov ? cov : 0;
        if (!cov) /* all padding: nothing to pull, nothing to cover */
            pd->covered = 0;
    }
    struct rf_plan_opts po = {.scatter_threshold = r->ctx->scatter_threshold,
                              .verify = r->ctx->verify != RF_VERIFY_OFF};
    r->n_pieces = np;
    rc = rf_plan_build(r->psrc, r->n_psrc, r->pdst, nl, pieces, np, (uint32_t)r->n_src, &po, dst_name, r,
                       &r->plan);
    if (!rc)
        rc = build_feeds(r);
    /* Push mode: the plan split by source, for the trainer to execute. */
    if (!rc && r->ctx->push)
        rc = rf_push_rcv_plan(r, pieces, np);
    if (!rc)
        rc = rf_rcvdev_check_plan(r);
    free(pieces);
    if (rc)
        return rc;
    r->have_plan = 1;
    r->staging_need = staging;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Execution callbacks */

static int local_of(void *arg, uint32_t buf, uint64_t off, uint64_t len, refit_tp_region_t **reg,
                    uint64_t *roff)
{
    refit_receiver_t *r = arg;
    if (buf == RF_BUF_SCRATCH) {
        *reg = r->scratch_reg;
        *roff = off;
        return 0;
    }
    if (!r->ctx->in_place) {
        *reg = r->staging_reg;
        *roff = off;
        return 0;
    }
    /* In place: the destination holding [off, off+len) of staging space. */
    size_t lo = 0, hi = r->n_d;
    while (lo + 1 < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->d[mid].staging_off <= off)
            lo = mid;
        else
            hi = mid;
    }
    struct rcv_dst *d = &r->d[lo];
    if (off < d->staging_off || off + len > d->staging_off + d->nbytes)
        return refit_error_set(REFIT_EPROTO, "receiver %s: in-place range outside '%s'", r->id, d->name);
    *reg = d->reg;
    *roff = off - d->staging_off;
    return 0;
}

static void *buf_ptr(refit_receiver_t *r, uint32_t buf, uint64_t off)
{
    if (buf == RF_BUF_SCRATCH)
        return (char *)r->scratch + off;
    if (!r->ctx->in_place)
        return (char *)r->staging + off;
    size_t lo = 0, hi = r->n_d;
    while (lo + 1 < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->d[mid].staging_off <= off)
            lo = mid;
        else
            hi = mid;
    }
    return (char *)r->d[lo].ptr + (off - r->d[lo].staging_off);
}

static int verify_range(refit_receiver_t *r, uint32_t buf, uint64_t off, uint64_t len)
{
    const struct rf_plan *p = &r->plan;
    /* Checks sorted by (buf, off): find the first at or after off. */
    size_t lo = 0, hi = p->n_check;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct rf_check *c = &p->check[r->check_order[mid]];
        if (c->buf < buf || (c->buf == buf && c->off < off))
            lo = mid + 1;
        else
            hi = mid;
    }
    double t0 = rf_seconds();
    for (size_t i = lo; i < p->n_check; i++) {
        const struct rf_check *c = &p->check[r->check_order[i]];
        if (c->buf != buf || c->off >= off + len)
            break;
        if (c->off + c->len > off + len)
            continue; /* straddles: checked with the descriptor that ends it */
        struct rcv_source *s = &r->src[r->psrc_source[c->psrc]];
        size_t ci = r->psrc_cat[c->psrc];
        uint64_t chunk_bytes = (uint64_t)r->psrc[c->psrc].chunk_rows * r->psrc[c->psrc].cols * r->psrc[c->psrc].esize;
        const char *base = buf_ptr(r, c->buf, c->off);
        for (uint32_t k = 0; k < c->count; k++) {
            uint64_t chunk = c->chunk + k, o = (uint64_t)k * chunk_bytes;
            uint64_t len = o + chunk_bytes <= c->len ? chunk_bytes : c->len - o;
            int have;
            uint64_t want = rf_sums_chunk(&s->sums, ci, chunk, &have);
            if (!have)
                continue;
            if (r->ctx->verify == RF_VERIFY_SAMPLE) {
                uint64_t pick = XXH3_64bits(&chunk, sizeof(chunk)) ^ (uint64_t)ci;
                if ((double)(pick % 10000) >= r->ctx->verify_sample * 10000.0)
                    continue;
            }
            uint64_t got = XXH3_64bits(base + o, len);
            if (got != want) {
                r->verify_s += rf_seconds() - t0;
                return refit_error_set(REFIT_ECHECKSUM,
                                       "tensor '%s' from source %s: checksum mismatch in rows %llu.. "
                                       "(expected %016llx, got %016llx)",
                                       s->cat->tensors[ci].name, s->id,
                                       (unsigned long long)(chunk * r->psrc[c->psrc].chunk_rows),
                                       (unsigned long long)want, (unsigned long long)got);
            }
        }
    }
    r->verify_s += rf_seconds() - t0;
    return 0;
}

/* Every descriptor of layout tensor t is in: scatter into its image and
 * convert into its destination's staging bytes. */
static int finish_tensor(refit_receiver_t *r, size_t t)
{
    double t0 = rf_seconds();
    const struct rf_plan *p = &r->plan;
    if (rf_push_converted(r, t))
        return 0; /* quantized by the trainer, already in staging */
    for (size_t q = r->scat_first[t]; q < r->scat_first[t + 1]; q++) {
        const struct rf_scatter *s = &p->scatter[r->scat[q]];
        if (r->scratch_dev) {
            int rc = rf_rcvdev_scatter(r, buf_ptr(r, s->to_buf, s->to), s->to_pitch, (char *)r->scratch + s->from,
                                       s->from_pitch, s->row_bytes, s->rows);
            if (rc)
                return rc;
            continue;
        }
        for (uint64_t row = 0; row < s->rows; row++)
            memcpy(buf_ptr(r, s->to_buf, s->to + row * s->to_pitch), (char *)r->scratch + s->from + row * s->from_pitch,
                   s->row_bytes);
    }
    const struct rf_pdst *pd = &r->pdst[t];
    int rc = 0;
    if (pd->in_scratch) {
        const struct refit_layout_tensor *lt = refit_layout_at(r->lay, t);
        struct rcv_dst *d = &r->d[r->dst_of_lt[t]];
        void *out = buf_ptr(r, RF_BUF_STAGING, d->staging_off);
        float *scale = NULL;
        if (r->scale_of_lt[t] >= 0)
            scale = buf_ptr(r, RF_BUF_STAGING, r->d[r->scale_of_lt[t]].staging_off);
        if (r->scratch_dev)
            rc = rf_rcvdev_convert(r, t, (char *)r->scratch + pd->offset, out, scale);
        else
            rc = refit_convert_image(lt, r->img_dtype[t], (char *)r->scratch + pd->offset, &r->copts.fp8,
                                     d->dtype, out, scale);
    }
    r->convert_s += rf_seconds() - t0;
    return rc;
}

static int on_done(void *arg, size_t first, size_t n)
{
    refit_receiver_t *r = arg;
    for (size_t i = first; i < first + n; i++) {
        const struct rf_desc *d = &r->plan.desc[i];
        if (r->verify_this) {
            int rc = verify_range(r, d->buf, d->local_off, d->len);
            if (rc)
                return rc;
        }
        for (size_t k = r->feed_first[i]; k < r->feed_first[i + 1]; k++) {
            size_t t = r->feed[k];
            if (r->pending[t] && --r->pending[t] == 0) {
                int rc = finish_tensor(r, t);
                if (rc)
                    return rc;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Sources: connect, unpack, checksums */

static int blob_eq(const struct refit_blob *a, const struct refit_blob *b)
{
    return a->len == b->len && !memcmp(a->data, b->data, a->len);
}

static int connect_source(refit_receiver_t *r, struct rcv_source *s)
{
    const struct refit_source_record *rec = s->rec;
    if (strcmp(rec->transport, refit_tp_plugin_name(r->tp)))
        return refit_error_set(REFIT_EPROTO, "source %s publishes over '%s', this receiver uses '%s'", s->id,
                               rec->transport, refit_tp_plugin_name(r->tp));
    if (s->peer && (s->addr_len != rec->address.len || memcmp(s->addr, rec->address.data, s->addr_len))) {
        drop_alt(r, s);
        for (size_t k = 0; k < s->n_rkeys; k++) {
            refit_tp_release(r->tp, s->rkeys[k]);
            free((void *)s->rkey_blobs[k].data);
        }
        s->n_rkeys = 0;
        refit_tp_disconnect(r->tp, s->peer);
        s->peer = NULL;
    }
    int rc = 0;
    if (!s->peer) {
        rc = refit_tp_connect(r->tp, rec->address.data, rec->address.len, s->id, &s->peer);
        if (rc)
            return refit_error_push(rc, "connecting to source %s", s->id);
        free(s->addr);
        s->addr = malloc(rec->address.len ? rec->address.len : 1);
        if (!s->addr)
            return REFIT_ENOMEM;
        memcpy(s->addr, rec->address.data, rec->address.len);
        s->addr_len = rec->address.len;
    }
    /* Remote keys: unpack only those that changed. */
    if (s->n_rkeys != rec->n_rkeys) {
        drop_alt(r, s);
        for (size_t k = 0; k < s->n_rkeys; k++) {
            refit_tp_release(r->tp, s->rkeys[k]);
            free((void *)s->rkey_blobs[k].data);
        }
        free(s->rkeys);
        free(s->rkey_blobs);
        s->rkeys = calloc(rec->n_rkeys ? rec->n_rkeys : 1, sizeof(*s->rkeys));
        s->rkey_blobs = calloc(rec->n_rkeys ? rec->n_rkeys : 1, sizeof(*s->rkey_blobs));
        s->n_rkeys = rec->n_rkeys;
        if (!s->rkeys || !s->rkey_blobs)
            return REFIT_ENOMEM;
    }
    if (!s->alt_rkeys && rec->n_rkeys) {
        s->alt_rkeys = calloc(rec->n_rkeys, sizeof(*s->alt_rkeys));
        s->alt_blobs = calloc(rec->n_rkeys, sizeof(*s->alt_blobs));
        if (!s->alt_rkeys || !s->alt_blobs)
            return REFIT_ENOMEM;
    }
    for (size_t k = 0; k < rec->n_rkeys && !rc; k++) {
        if (s->rkeys[k] && blob_eq(&s->rkey_blobs[k], &rec->rkeys[k]))
            continue;
        /* The previous key again (alternating arenas): swap, no unpack. */
        refit_tp_rkey_t *ok = s->rkeys[k];
        struct refit_blob ob = s->rkey_blobs[k];
        if (s->alt_rkeys[k] && blob_eq(&s->alt_blobs[k], &rec->rkeys[k])) {
            s->rkeys[k] = s->alt_rkeys[k];
            s->rkey_blobs[k] = s->alt_blobs[k];
            s->alt_rkeys[k] = ok;
            s->alt_blobs[k] = ob;
            continue;
        }
        /* A new key: the current one becomes the previous. */
        refit_tp_release(r->tp, s->alt_rkeys[k]);
        free((void *)s->alt_blobs[k].data);
        s->alt_rkeys[k] = ok;
        s->alt_blobs[k] = ob;
        s->rkeys[k] = NULL;
        s->rkey_blobs[k] = (struct refit_blob){NULL, 0};
        void *copy = malloc(rec->rkeys[k].len ? rec->rkeys[k].len : 1);
        if (!copy)
            return REFIT_ENOMEM;
        memcpy(copy, rec->rkeys[k].data, rec->rkeys[k].len);
        s->rkey_blobs[k] = (struct refit_blob){copy, rec->rkeys[k].len};
        rc = refit_tp_unpack(r->tp, s->peer, rec->rkeys[k].data, rec->rkeys[k].len, &s->rkeys[k]);
        if (rc)
            refit_error_push(rc, "source %s: remote key of region %zu", s->id, k);
    }
    return rc;
}

/* Make r->src match the seen records at version v; 1 in *changed when the
 * plan must be rebuilt. */
static int adopt_sources(refit_receiver_t *r, struct seen *sv, size_t n, uint64_t v, int *changed)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (sv[i].rec->version == v)
            m++;
    struct rcv_source *ns = calloc(m ? m : 1, sizeof(*ns));
    if (!ns)
        return REFIT_ENOMEM;
    size_t k = 0;
    int rc = 0;
    *changed = m != r->n_src;
    for (size_t i = 0; i < n && !rc; i++) {
        struct refit_source_record *rec = sv[i].rec;
        if (rec->version != v)
            continue;
        /* Reuse what we know of this source. */
        struct rcv_source *old = NULL;
        for (size_t j = 0; j < r->n_src && !old; j++)
            if (r->src[j].id && !strcmp(r->src[j].id, rec->source_id))
                old = &r->src[j];
        struct rcv_source *s = &ns[k++];
        if (old) {
            *s = *old;
            memset(old, 0, sizeof(*old));
            free(s->rec);
            rf_sums_fini(&s->sums);
        } else {
            s->id = strdup(rec->source_id);
            if (!s->id) {
                rc = REFIT_ENOMEM;
                break;
            }
            *changed = 1;
        }
        s->rec = rec;
        sv[i].rec = NULL;
        const refit_catalog_t *prev_cat = s->cat;
        if (!(s->cat = catalog_get(r, &rec->catalog, &rc)))
            break;
        if (prev_cat != s->cat)
            *changed = 1;
        if ((rc = refit_record_check_catalog(rec, s->cat, s->id)))
            break;
        struct refit_par_layout *L = &rec->layout;
        if (!s->meg || memcmp(&s->meg_lay, L, sizeof(*L))) {
            refit_layout_destroy(s->meg);
            s->meg = NULL;
            struct refit_megatron_rank mr = {.tp = (int)L->tp_size, .ep = (int)L->ep_size, .etp = (int)L->etp_size,
                                             .tp_rank = (int)L->tp_rank, .ep_rank = (int)L->ep_rank,
                                             .etp_rank = (int)L->etp_rank};
            if ((rc = refit_layout_megatron(r->ctx->model, &mr, &r->copts, &s->meg))) {
                refit_error_push(rc, "source %s", s->id);
                break;
            }
            s->meg_lay = *L;
            *changed = 1;
        }
    }
    /* Anything left in the old list is gone. */
    for (size_t j = 0; j < r->n_src; j++)
        if (r->src[j].id)
            drop_source(r, &r->src[j]);
    free(r->src);
    r->src = ns;
    r->n_src = k;
    return rc;
}

static int fetch_sums(refit_receiver_t *r, uint64_t v)
{
    if (r->ctx->verify == RF_VERIFY_OFF)
        return 0;
    struct refit_store_get_item *it = calloc(r->n_src ? r->n_src : 1, sizeof(*it));
    char (*keys)[REFIT_STORE_MAX_KEY + 1] = calloc(r->n_src ? r->n_src : 1, REFIT_STORE_MAX_KEY + 1);
    int rc = (!it || !keys) ? REFIT_ENOMEM : 0;
    for (size_t i = 0; !rc && i < r->n_src; i++) {
        rc = rf_key_sums(keys[i], v, r->src[i].id);
        it[i].key = keys[i];
    }
    if (!rc)
        rc = refit_store_get_many(r->ctx->store, it, r->n_src);
    for (size_t i = 0; !rc && i < r->n_src; i++) {
        struct rcv_source *s = &r->src[i];
        rf_sums_fini(&s->sums);
        if (it[i].status)
            rc = refit_error_set(it[i].status == REFIT_ENOENT ? REFIT_ESTALE : it[i].status,
                                 "source %s: no checksums for v%llu (%s)", s->id, (unsigned long long)v,
                                 keys[i]);
        else
            rc = rf_sums_decode(it[i].val, it[i].len, keys[i], s->cat, &s->rec->catalog, v, &s->sums);
    }
    for (size_t i = 0; it && i < r->n_src; i++)
        free(it[i].val);
    free(it);
    free(keys);
    return rc;
}

/* A key naming the plan's inputs: sources, their layouts and catalogs. */
static char *plan_key_of(refit_receiver_t *r)
{
    size_t cap = 64 + r->n_src * 200, len = 0;
    char *k = malloc(cap);
    if (!k)
        return NULL;
    len += (size_t)snprintf(k + len, cap - len, "%zu;", r->n_d);
    for (size_t i = 0; i < r->n_src; i++) {
        char hex[33];
        const struct refit_par_layout *L = &r->src[i].rec->layout;
        refit_hash128_hex(&r->src[i].rec->catalog, hex);
        len += (size_t)snprintf(k + len, cap - len, "%s:%s:%u/%u:%u/%u:%u/%u;", r->src[i].id, hex, L->tp_rank,
                                L->tp_size, L->ep_rank, L->ep_size, L->etp_rank, L->etp_size);
    }
    return k;
}

static int positions_complete(const struct seen *sv, size_t n, uint64_t v)
{
    uint8_t tp[256] = {0}, ep[256] = {0};
    uint32_t tps = 0, eps = 0;
    for (size_t i = 0; i < n; i++) {
        const struct refit_par_layout *L = &sv[i].rec->layout;
        if (sv[i].rec->version != v)
            continue;
        if (L->tp_size > tps)
            tps = L->tp_size;
        if (L->ep_size > eps)
            eps = L->ep_size;
        if (L->tp_rank < 256)
            tp[L->tp_rank] = 1;
        if (L->ep_rank < 256)
            ep[L->ep_rank] = 1;
    }
    for (uint32_t i = 0; i < tps && i < 256; i++)
        if (!tp[i])
            return 0;
    for (uint32_t i = 0; i < eps && i < 256; i++)
        if (!ep[i])
            return 0;
    return 1;
}

/* Sources at the chosen version with a plan that covers every byte. */
static int discover_and_plan(refit_receiver_t *r, uint64_t want, uint64_t *chosen, double *plan_s)
{
    double deadline = rf_seconds() + (double)r->ctx->timeout_ms / 1000.0;
    uint64_t cursor = 0;
    refit_store_poll(r->ctx->store, "sources/", 0, &cursor, 0);
    for (;;) {
        struct seen *sv = NULL;
        size_t n = 0;
        int rc = read_sources(r, &sv, &n);
        if (rc)
            return rc;
        uint64_t v = 0, newest = 0;
        for (size_t i = 0; i < n; i++)
            if (sv[i].rec->version > newest)
                newest = sv[i].rec->version;
        if (want == REFIT_LATEST)
            v = newest;
        else if (want == REFIT_NEXT)
            v = newest > r->last_version ? newest : 0;
        else
            v = want;
        if (want != REFIT_LATEST && want != REFIT_NEXT && newest > want) {
            /* Sources that keep the version before their newest still have
             * `want`: its record (and remote keys) is versions/<want>/... */
            for (size_t i = 0; i < n; i++) {
                struct refit_source_record *rec = sv[i].rec;
                if (rec->version != want + 1 || rec->keeps < 2)
                    continue;
                char key[REFIT_STORE_MAX_KEY + 1];
                void *val = NULL;
                size_t len = 0;
                struct refit_source_record *old = NULL;
                if (!refit_key_version_source(key, want, rec->source_id) &&
                    !refit_store_get(r->ctx->store, key, &val, &len) &&
                    !refit_record_decode(val, len, key, &old) && old->version == want) {
                    old->keeps = rec->keeps;
                    free(rec);
                    sv[i].rec = old;
                } else {
                    free(old);
                }
                free(val);
            }
            newest = 0;
            for (size_t i = 0; i < n; i++)
                if (sv[i].rec->version > newest)
                    newest = sv[i].rec->version;
        }
        if (want != REFIT_LATEST && want != REFIT_NEXT && newest > want) {
            for (size_t i = 0; i < n; i++)
                if (sv[i].rec->version > want) {
                    rc = refit_error_set(REFIT_ESTALE,
                                         "v%llu is gone: source %s has moved on to v%llu (zero-copy "
                                         "sources keep only their newest version)",
                                         (unsigned long long)want, sv[i].rec->source_id,
                                         (unsigned long long)sv[i].rec->version);
                    break;
                }
            free_seen(sv, n);
            return rc;
        }
        /* Sources still at an older version are publishing v right now:
         * wait for them rather than plan around them (a dead one goes
         * stale and drops out of the list). */
        size_t lagging = 0;
        for (size_t i = 0; v && i < n; i++)
            lagging += sv[i].rec->version < v;
        /* Every tensor- and expert-parallel position the sources declare
         * should be present before planning, so the plan (and the spread of
         * replicated tensors) does not change when a late rank shows up. */
        if (v && !lagging && !positions_complete(sv, n, v))
            lagging = 1;
        int planned = 0;
        if (v && lagging && rf_seconds() < deadline - (double)r->ctx->timeout_ms / 2000.0) {
            free_seen(sv, n);
            int64_t w = 200;
            rc = refit_store_poll(r->ctx->store, "sources/", cursor, &cursor, w);
            if (rc && rc != REFIT_ETIMEDOUT)
                return rc;
            continue;
        }
        if (v) {
            int changed = 0;
            rc = adopt_sources(r, sv, n, v, &changed);
            if (!rc) {
                char *key = plan_key_of(r);
                if (!key)
                    rc = REFIT_ENOMEM;
                else if (r->have_plan && r->plan_key && !strcmp(key, r->plan_key)) {
                    free(key);
                    planned = 1;
                    if (r->st)
                        r->st->plan_cached = 1;
                } else {
                    refit_log(REFIT_LOG_DEBUG, "receiver", "%s: planning v%llu for %s (was %s)", r->id,
                              (unsigned long long)v, key, r->plan_key ? r->plan_key : "none");
                    double t0 = rf_seconds();
                    rc = make_plan(r);
                    *plan_s += rf_seconds() - t0;
                    if (!rc) {
                        r->plan_key = key;
                        planned = 1;
                    } else {
                        free(key);
                    }
                }
            }
            /* A gap means a source has not published v yet: wait for it. */
            if (rc == REFIT_ENOENT)
                rc = 0;
        }
        free_seen(sv, n);
        if (rc)
            return rc;
        if (planned) {
            *chosen = v;
            return 0;
        }
        double left = deadline - rf_seconds();
        if (left <= 0) {
            if (v) {
                /* The gap's own message (which tensor, which rows) follows. */
                refit_error_set(REFIT_ETIMEDOUT, "%s", refit_error_message());
                return refit_error_push(REFIT_ETIMEDOUT, "v%llu: the sources READY at it do not cover this "
                                        "layout within %lld ms", (unsigned long long)v, (long long)r->ctx->timeout_ms);
            }
            return refit_error_set(REFIT_ETIMEDOUT, "no %s within %lld ms (%zu live sources seen)",
                                   want == REFIT_NEXT ? "new version" : "version READY",
                                   (long long)r->ctx->timeout_ms, n);
        }
        int64_t w = (int64_t)(left * 1000) + 1;
        rc = refit_store_poll(r->ctx->store, "sources/", cursor, &cursor, w < 500 ? w : 500);
        if (rc && rc != REFIT_ETIMEDOUT)
            return rc;
    }
}

/* The fence: every source still READY at v with the same catalog, alive. */
static int fence(refit_receiver_t *r, uint64_t v)
{
    for (size_t i = 0; i < r->n_src; i++) {
        struct rcv_source *s = &r->src[i];
        struct refit_source_record *rec = NULL;
        bool stale = false;
        int rc = refit_source_check(r->ctx->store, s->id, r->ctx->stale_after_ms, &rec, &stale);
        if (rc)
            return refit_error_push(rc, "fence: source %s", s->id);
        /* A source that keeps two versions (publish: copy) may move on to
         * v+1 while v is pulled: v's arena is reused only after v is
         * released, which needs this receiver's ack. */
        uint64_t newest_ok = v + (s->rec->keeps > 1 ? 1 : 0);
        int ok = rec->status == REFIT_SOURCE_READY && rec->version >= v && rec->version <= newest_ok && !stale &&
                 !memcmp(rec->catalog.b, s->rec->catalog.b, 16);
        if (!ok) {
            rc = refit_error_set(REFIT_ESTALE, "fence: source %s is %s at v%llu%s after the pull of v%llu", s->id,
                                 refit_source_status_name(rec->status), (unsigned long long)rec->version,
                                 stale ? " without a fresh heartbeat" : "", (unsigned long long)v);
            free(rec);
            return rc;
        }
        free(rec);
    }
    return 0;
}

/* The end of every pull, whoever moved the bytes: the fence, the commit
 * (staging into the destinations: a flip, a copy, or nothing in place) and
 * the acknowledgement. */
int rf_rcv_commit(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st)
{
    int rc = rf_fanout_replica(r) ? rf_fanout_fence(r, v) : fence(r, v);
    if (rc)
        return rc;
    /* Commit: staging into the destinations (in place: already there). */
    double tm = rf_seconds();
    if (r->doubled) {
        /* Every destination is refit's: flip, no copy. */
        r->front ^= 1;
        for (size_t i = 0; i < r->n_d; i++)
            r->d[i].ptr = (char *)r->stage[r->front] + r->d[i].staging_off;
    } else if (!r->ctx->in_place) {
        /* Device destinations: copies queued here, waited for below (rcvdev.c). */
        rc = rf_rcvdev_commit_start(r);
        for (size_t i = 0; i < r->n_d; i++)
            if (r->d[i].ptr && r->d[i].memtype != REFIT_MEM_CUDA)
                memcpy(r->d[i].ptr, (char *)r->staging + r->d[i].staging_off, r->d[i].nbytes);
        int wrc = rf_rcvdev_commit_wait(r);
        if (rc || wrc)
            return rc ? rc : wrc;
    }
    for (size_t i = 0; i < r->n_d; i++)
        st->bytes_out += r->d[i].nbytes;
    st->commit_s = rf_seconds() - tm;
    rc = refit_ack_put(r->ctx->store, v, r->id);
    if (rc)
        refit_error_push(rc, "acknowledging v%llu", (unsigned long long)v);
    char old_ack[REFIT_STORE_MAX_KEY + 1];
    if (!rc && r->last_version && r->last_version != v && !refit_key_ack(old_ack, r->last_version, r->id))
        refit_store_forget(r->ctx->store, old_ack);
    return rc;
}

int refit_receiver_pull(refit_receiver_t *r, uint64_t version, struct refit_pull_stats *stats)
{
    if (!r || version == 0)
        return refit_error_set(REFIT_EINVAL, "refit_receiver_pull: bad argument");
    struct refit_pull_stats st;
    memset(&st, 0, sizeof(st));
    r->st = &st;
    r->convert_s = r->verify_s = 0;
    double t0 = rf_seconds();
    uint64_t v = 0;
    int rc = 0;
    rc = discover_and_plan(r, version, &v, &st.plan_s);
    /* Waiting for a version to be published is not part of the pull. */
    st.wait_s = rf_seconds() - t0 - st.plan_s;
    if (!rc && r->fan)
        rc = rf_fanout_retire(r, v);
    if (!rc)
        rc = ensure_buffers(r, r->ctx->in_place ? 0 : r->staging_need, r->plan.scratch_bytes, &st.alloc_s,
                            &st.register_s);
    if (!rc && r->fan) {
        int done = 0;
        rc = rf_fanout_pull(r, v, &st, &done);
        if (rc || done)
            goto out;
    }
    if (!rc)
        rc = fetch_sums(r, v);
    double tc = rf_seconds();
    int reconnect = 0;
    /* Push mode: the publishers connect to us. */
    for (size_t i = 0; !rc && !r->ctx->push && i < r->n_src; i++) {
        struct rcv_source *s = &r->src[i];
        int had = s->peer != NULL;
        size_t had_keys = s->n_rkeys;
        rc = connect_source(r, s);
        reconnect |= !had || had_keys != s->n_rkeys;
    }
    st.connect_s = reconnect ? rf_seconds() - tc : 0;
    if (rc)
        goto out;
    /* Pending counts per tensor for this cycle. */
    size_t nl = refit_layout_count(r->lay);
    memset(r->pending, 0, (nl ? nl : 1) * sizeof(uint32_t));
    for (size_t i = 0; i < r->plan.n_desc; i++)
        for (size_t k = r->feed_first[i]; k < r->feed_first[i + 1]; k++)
            r->pending[r->feed[k]]++;
    free(r->unfed);
    r->unfed = calloc(nl ? nl : 1, 1);
    if (!r->unfed) {
        rc = REFIT_ENOMEM;
        goto out;
    }
    for (size_t t = 0; t < nl; t++)
        r->unfed[t] = r->pending[t] == 0;
    r->verify_this = r->ctx->verify != RF_VERIFY_OFF;
    if (r->ctx->push) {
        /* The publishers write; then the same checks and conversions as a
         * pull, for every descriptor they sent. */
        rc = rf_push_receive(r, v, &st);
        for (size_t i = 0; !rc && i < r->plan.n_desc; i++)
            if (!rf_push_dropped(r, i))
                rc = on_done(r, i, 1);
        for (size_t t = 0; !rc && t < nl; t++)
            if (r->unfed[t])
                rc = finish_tensor(r, t);
        if (rc)
            goto out;
        rc = rf_rcv_commit(r, v, &st);
        goto out;
    }
    struct rf_exec_source *es = calloc(r->n_src ? r->n_src : 1, sizeof(*es));
    if (!es) {
        rc = REFIT_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < r->n_src; i++)
        es[i] = (struct rf_exec_source){r->src[i].peer, r->src[i].rkeys, (uint32_t)r->src[i].n_rkeys, r->src[i].id};
    double tx = rf_seconds();
    st.xfer_start = tx;
    struct rf_exec_stats xs = {0};
    rc = rf_exec_run(r->tp, &r->plan, es, (uint32_t)r->n_src, (uint32_t)r->ctx->flush_every,
                     refit_tp_timeout_ms(r->tp), local_of, on_done, r, &xs);
    free(es);
    /* Tensors fed by no descriptor (all padding, or nothing to pull). */
    for (size_t t = 0; !rc && t < nl; t++)
        if (r->unfed[t])
            rc = finish_tensor(r, t);
    /* Device scatters of a resident pull land before the fence. */
    int src = rf_rcvdev_sync(r);
    if (!rc)
        rc = src;
    /* Wire time: the transfer phase less the conversion done while nothing
     * was in flight (conversion overlapping transfers is not subtracted). */
    st.xfer_end = rf_seconds();
    st.transfer_s = st.xfer_end - tx - xs.idle_wire_s;
    if (st.transfer_s < 0)
        st.transfer_s = 0;
    st.descriptors = xs.descriptors;
    st.bytes_wire = xs.bytes;
    if (rc)
        goto out;
    rc = rf_rcv_commit(r, v, &st);
out:
    st.version = v;
    st.sources = (uint32_t)r->n_src;
    st.convert_s = r->convert_s;
    st.verify_s = r->verify_s;
    if (r->fan)
        rf_fanout_end(r, v, rc, &st);
    if (!rc && !st.source[0])
        snprintf(st.source, sizeof(st.source), "trainer");
    st.total_s = rf_seconds() - t0 - st.wait_s;
    if (!rc) {
        r->last_version = v;
    } else {
        /* Name the version asked for when none was chosen. */
        char what[48];
        if (v || (version != REFIT_LATEST && version != REFIT_NEXT))
            snprintf(what, sizeof(what), "v%llu", (unsigned long long)(v ? v : version));
        else
            snprintf(what, sizeof(what), "%s", version == REFIT_LATEST ? "latest" : "next");
        refit_error_push(rc, "receiver %s: pull %s", r->id, what);
    }
    if (stats) {
        size_t n = stats->size && stats->size < sizeof(st) ? stats->size : sizeof(st);
        st.size = n;
        memcpy(stats, &st, n);
    }
    r->st = NULL;
    return rc;
}

int refit_receiver_plan_dry(refit_receiver_t *r, const struct refit_parallel *src, size_t n_src,
                            struct refit_plan_info *info)
{
    if (!r || !src || !n_src || !info)
        return refit_error_set(REFIT_EINVAL, "refit_receiver_plan_dry: bad argument");
    drop_plan(r);
    for (size_t i = 0; i < r->n_src; i++)
        drop_source(r, &r->src[i]);
    free(r->src);
    r->src = calloc(n_src, sizeof(*r->src));
    refit_catalog_t **cats = calloc(n_src, sizeof(*cats));
    if (!r->src || !cats) {
        free(cats);
        return REFIT_ENOMEM;
    }
    r->n_src = n_src;
    int rc = 0;
    for (size_t i = 0; i < n_src && !rc; i++) {
        struct rcv_source *s = &r->src[i];
        char id[32];
        snprintf(id, sizeof(id), "dry%zu", i);
        s->id = strdup(id);
        struct refit_megatron_rank mr = {.tp = sz(src[i].tp_size), .ep = sz(src[i].ep_size),
                                         .etp = sz(src[i].etp_size), .tp_rank = src[i].tp_rank,
                                         .ep_rank = src[i].ep_rank, .etp_rank = src[i].etp_rank};
        rc = refit_layout_megatron(r->ctx->model, &mr, &r->copts, &s->meg);
        uint64_t off = 0;
        if (!rc)
            rc = refit_catalog_create(&cats[i]);
        for (size_t t = 0; !rc && t < refit_layout_count(s->meg); t++) {
            const struct refit_layout_tensor *lt = refit_layout_at(s->meg, t);
            uint64_t n = 2;
            for (int d = 0; d < lt->ndim; d++)
                n *= (uint64_t)lt->shape[d];
            off += (n + 63) & ~(uint64_t)63;
        }
        uint32_t reg;
        if (!rc)
            rc = refit_catalog_add_region(cats[i], off ? off : 1, &reg);
        off = 0;
        for (size_t t = 0; !rc && t < refit_layout_count(s->meg); t++) {
            const struct refit_layout_tensor *lt = refit_layout_at(s->meg, t);
            struct refit_cat_tensor ct = {.name = lt->name, .dtype = REFIT_DTYPE_BF16, .role = REFIT_CAT_ROLE_REPLICATED,
                                          .ndim = (uint32_t)lt->ndim, .shard_axis = -1, .expert = -1,
                                          .region = reg, .offset = off};
            uint64_t n = 2, cols = lt->ndim >= 2 ? (uint64_t)lt->shape[lt->ndim - 1] : 1;
            for (int d = 0; d < lt->ndim; d++) {
                ct.shape[d] = ct.global_shape[d] = (uint64_t)lt->shape[d];
                n *= (uint64_t)lt->shape[d];
            }
            ct.nbytes = n;
            ct.chunk_rows = rf_chunk_rows(n / (cols * 2), cols * 2);
            off += (n + 63) & ~(uint64_t)63;
            rc = refit_catalog_add(cats[i], &ct);
        }
        s->cat = cats[i];
    }
    double t0 = rf_seconds();
    if (!rc)
        rc = make_plan(r);
    double took = rf_seconds() - t0;
    if (!rc) {
        struct refit_plan_info in = {.size = sizeof(in), .seconds = took, .pieces = r->n_pieces,
                                     .descriptors = r->plan.n_desc, .scatters = r->plan.n_scatter,
                                     .checks = r->plan.n_check, .wire_bytes = r->plan.wire_bytes,
                                     .scratch_bytes = r->plan.scratch_bytes, .staging_bytes = r->staging_need,
                                     .sources = (uint32_t)n_src};
        size_t n = info->size && info->size < sizeof(in) ? info->size : sizeof(in);
        memcpy(info, &in, n);
    }
    /* The dry sources go; their catalogs are not in the cache. */
    drop_plan(r);
    for (size_t i = 0; i < n_src; i++) {
        r->src[i].cat = NULL;
        drop_source(r, &r->src[i]);
        refit_catalog_destroy(cats[i]);
    }
    free(cats);
    free(r->src);
    r->src = NULL;
    r->n_src = 0;
    return rc;
}
