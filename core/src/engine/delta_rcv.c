/* delta_rcv.c — the receiver's side of delta refit (delta_eng.h), the
 * transfer of pull mode when refit.delta.enabled.
 *
 * The mirror holds, per plan descriptor, the source bytes it read, as of
 * the version base_v[s] of its source (0: nothing usable; any failed or
 * uncommitted pull, a new plan or a restart leaves 0).  A pull of V reads
 * each source's delta record; a descriptor goes by delta when its source's
 * record was made from exactly what the mirror holds (base version and the
 * identity of that version's checksums, rf_sums_segs_id) and every chunk it covers was
 * encoded with even edges; it goes whole otherwise.  In one execution
 * (exec.c), whole descriptors are READ as always and copied into the
 * mirror; delta descriptors READ the chunk deltas they cover from the
 * source's delta arena, hash each whole base chunk against the base's
 * checksums (a wrong base is REFIT_ESTALE before a byte changes), apply
 * onto the mirror and copy the result to where the descriptor lands.
 * From there both go through rf_xfer_done: the new version's checksums
 * prove every byte, conversion (FP8 included) runs as in a full pull.  Any
 * failure with deltas in use pulls the version again whole, once.  Push
 * mode's half is delta_rcv_push.c (shared state: delta_rcv.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "../delta/delta.h"
#include "delta_eng.h"
#include "delta_rcv.h"
#include "devpath.h"
#include "exec.h"
#include "receiver.h"
#include "refit/log.h"

static void keys_release(refit_receiver_t *r, struct rf_rcvdelta *d)
{
    for (size_t s = 0; d->keys && s < d->n_src; s++)
        for (int k = 0; k < 2; k++) {
            refit_transport_release(r->tp, d->keys[s][k].rk);
            free(d->keys[s][k].blob);
        }
    free(d->keys);
    d->keys = NULL;
}

void rf_rcvd_pull_free(struct rf_rcvdelta *d)
{
    for (size_t s = 0; d->ask_buf && s < d->n_src; s++) {
        free(d->ask_buf[s]);
        d->ask_buf[s] = NULL;
    }
    d->n_ask = 0;
    for (size_t s = 0; d->rec && s < d->n_src; s++) {
        rf_delta_rec_free(d->rec[s]);
        free(d->order[s]);
        d->rec[s] = NULL;
        d->order[s] = NULL;
    }
}

static void per_plan_free(refit_receiver_t *r, struct rf_rcvdelta *d)
{
    rf_rcvd_pull_free(d);
    rf_rcvd_dev_free(d);
    keys_release(r, d);
    for (size_t s = 0; d->base_sums && s < d->n_src; s++)
        rf_sums_fini(&d->base_sums[s]);
    free(d->base_sums);
    free(d->rec);
    free(d->order);
    free(d->base_v);
    free(d->base_h);
    free(d->got_h);
    free(d->moff);
    free(d->use);
    free(d->dlo);
    free(d->dhi);
    free(d->loff);
    free(d->sub);
    free(d->sub_of);
    free(d->pending);
    free(d->mirror);
    free(d->ask);
    free(d->ask_buf);
    d->ask = NULL;
    d->ask_buf = NULL;
    d->base_sums = NULL;
    d->rec = NULL;
    d->order = NULL;
    d->base_v = d->base_h = d->got_h = d->moff = d->dlo = d->dhi = d->loff = NULL;
    d->use = NULL;
    d->sub = NULL;
    d->sub_of = NULL;
    d->pending = NULL;
    d->sub_cap = 0;
    d->mirror = NULL;
    d->mirror_len = d->n_desc = d->n_src = 0;
    d->have_key = 0;
}

void rf_rcvdelta_destroy(refit_receiver_t *r)
{
    struct rf_rcvdelta *d = r->delta;
    if (!d)
        return;
    per_plan_free(r, d);
    if (d->land_reg)
        refit_transport_dereg(r->tp, d->land_reg);
    free(d->land);
    free(d->land_rk);
    free(d);
    r->delta = NULL;
}

/* Why a receiver with refit.delta.enabled pulls whole (NULL: it does not).
 * CUDA destinations staged on the host (the default) take deltas: with no
 * conversion the mirror, base check, apply and verification run on their
 * device and the commit copies from there (delta_rcvdev.c); otherwise (FP8)
 * all of it runs on the staging side as for host destinations, and the
 * commit copies staging to the device as for a full pull.  A resident pull (in place into device memory) never
 * has the bytes on the host, where a base is proved by its checksums. */
static const char *whole_reason(const refit_receiver_t *r)
{
    if (rf_rcvdev_resident(r) || r->bufs.scratch_dev)
        return "it pulls in place into device memory (refit.in_place with a transport that reaches it): the "
               "base a delta applies onto is proved by its checksums on the host, which never sees these bytes";
    if (r->ctx->verify != RF_VERIFY_FULL)
        return "refit.verify is not 'full': a delta is applied only where the new version's checksums prove "
               "every result";
    return NULL;
}

int rf_rcvdelta_wanted(const refit_receiver_t *r)
{
    return r->ctx->delta && !whole_reason(r);
}

int rf_rcvdelta_whole(refit_receiver_t *r, struct refit_pull_stats *st)
{
    const char *why = r->ctx->delta ? whole_reason(r) : NULL;
    if (!why)
        return 0;
    if (!r->delta && !(r->delta = calloc(1, sizeof(*r->delta))))
        return REFIT_ENOMEM;
    if (!r->delta->told)
        refit_log(REFIT_LOG_WARN, "receiver", "%s: refit.delta.enabled, but every version is pulled whole: %s "
                  "(said once; counted in delta_fallbacks)", r->id, why);
    r->delta->told = 1;
    st->delta_fallbacks = 1;
    return 0;
}

/* Arrays for the current plan; a new plan empties the mirror. */
static int for_plan(refit_receiver_t *r, struct rf_rcvdelta *d)
{
    const struct rf_plan *p = &r->plan.plan;
    if (d->have_key && !memcmp(d->key.b, r->plan.key.b, 16) && d->n_desc == p->n_desc && d->n_src == r->disc.n_src)
        return 0;
    per_plan_free(r, d);
    size_t nd = p->n_desc ? p->n_desc : 1, ns = r->disc.n_src ? r->disc.n_src : 1;
    d->n_desc = p->n_desc;
    d->n_src = r->disc.n_src;
    d->moff = malloc(nd * sizeof(*d->moff));
    d->use = calloc(nd, 1);
    d->dlo = malloc(nd * sizeof(uint64_t));
    d->dhi = malloc(nd * sizeof(uint64_t));
    d->loff = malloc(nd * sizeof(uint64_t));
    d->sub = malloc(nd * sizeof(*d->sub));
    d->sub_of = malloc(nd * sizeof(*d->sub_of));
    d->sub_cap = nd;
    d->pending = calloc(nd, sizeof(*d->pending));
    d->base_v = calloc(ns, sizeof(uint64_t));
    d->base_h = calloc(ns, sizeof(uint64_t));
    d->got_h = calloc(ns, sizeof(uint64_t));
    d->base_sums = calloc(ns, sizeof(*d->base_sums));
    d->rec = calloc(ns, sizeof(*d->rec));
    d->order = calloc(ns, sizeof(*d->order));
    d->keys = calloc(ns, sizeof(*d->keys));
    d->ask = calloc(ns, sizeof(*d->ask));
    d->ask_buf = calloc(ns, sizeof(*d->ask_buf));
    if (!d->ask || !d->ask_buf || !d->moff || !d->use || !d->dlo || !d->dhi || !d->loff || !d->sub || !d->sub_of || !d->pending || !d->base_v ||
        !d->base_h || !d->got_h || !d->base_sums || !d->rec || !d->order || !d->keys)
        return REFIT_ENOMEM;
    size_t at = 0;
    for (size_t i = 0; i < p->n_desc; i++) {
        d->moff[i] = at;
        at += (p->desc[i].len + 63) & ~(uint64_t)63;
    }
    int rc = rf_rcvd_dev_setup(r, d);
    if (rc)
        return rc;
    if (d->dev)
        at = 0; /* the mirror is on the device */
    if (!(d->mirror = malloc(at ? at : 1)))
        return refit_error_set(REFIT_ENOMEM, "receiver %s: a delta mirror of %zu bytes", r->id, at);
    d->mirror_len = at;
    d->key = r->plan.key;
    d->have_key = 1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Which descriptors go by delta */

static int before(const refit_catalog_t *c, size_t a, size_t b)
{
    const struct refit_cat_tensor *x = &c->tensors[a], *y = &c->tensors[b];
    return x->region != y->region ? x->region < y->region : x->offset < y->offset;
}

/* Catalog tensors sorted by (region, offset): a merge sort (qsort takes
 * no argument, and receivers may pull in several threads). */
static int sort_tensors(const refit_catalog_t *c, size_t **out)
{
    size_t n = c->n_tensors;
    size_t *a = malloc((n ? n : 1) * sizeof(*a)), *t = malloc((n ? n : 1) * sizeof(*t));
    if (!a || !t) {
        free(a);
        free(t);
        return REFIT_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        a[i] = i;
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n, i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                t[k++] = before(c, a[j], a[i]) ? a[j++] : a[i++];
            while (i < mid)
                t[k++] = a[i++];
            while (j < hi)
                t[k++] = a[j++];
        }
        size_t *x = a;
        a = t;
        t = x;
    }
    free(t);
    *out = a;
    return 0;
}

/* First position in ord of a tensor of `region` ending after off. */
static size_t first_at(const refit_catalog_t *c, const size_t *ord, uint32_t region, uint64_t off)
{
    size_t lo = 0, hi = c->n_tensors;
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        const struct refit_cat_tensor *x = &c->tensors[ord[m]];
        if (x->region < region || (x->region == region && x->offset + x->nbytes <= off))
            lo = m + 1;
        else
            hi = m;
    }
    return lo;
}

/* Every chunk descriptor i covers (tensors of its region overlapping it). */
int rf_rcvd_walk(refit_receiver_t *r, size_t i, piece_fn fn, void *arg)
{
    struct rf_rcvdelta *d = r->delta;
    const struct rf_desc *ds = &r->plan.plan.desc[i];
    const refit_catalog_t *c = r->disc.src[ds->source].cat;
    const struct rf_delta_rec *rec = d->rec[ds->source];
    const size_t *ord = d->order[ds->source];
    uint64_t ro = ds->remote_off, re = ds->remote_off + ds->len;
    for (size_t q = first_at(c, ord, ds->region, ro); q < c->n_tensors; q++) {
        const struct refit_cat_tensor *ct = &c->tensors[ord[q]];
        if (ct->region != ds->region || ct->offset >= re)
            break;
        uint64_t a = (ro > ct->offset ? ro : ct->offset) - ct->offset;
        uint64_t b = (re < ct->offset + ct->nbytes ? re : ct->offset + ct->nbytes) - ct->offset;
        uint64_t nc, cb;
        rf_delta_cat_chunks(ct, &nc, &cb);
        if (b <= a)
            continue;
        if (!nc)
            return 1;
        for (uint64_t k = a / cb; k <= (b - 1) / cb; k++) {
            uint64_t c0 = k * cb, n = ct->nbytes - c0 < cb ? ct->nbytes - c0 : cb;
            struct piece pc = {ord[q], rec->first[ord[q]] + k, k, n, (a > c0 ? a : c0) - c0,
                               (b < c0 + n ? b : c0 + n) - c0, 0};
            pc.at = ct->offset + c0 + pc.lo - ro;
            int rc = fn(r, i, &pc, arg);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* Planning: 1 when the piece cannot go by delta; the delta's extent. */
static int plan_piece(refit_receiver_t *r, size_t i, const struct piece *pc, void *arg)
{
    struct rf_rcvdelta *d = r->delta;
    const struct rf_delta_rec *rec = d->rec[r->plan.plan.desc[i].source];
    (void)arg;
    uint32_t l = rec->len[pc->e];
    if (l == RF_DELTA_ABSENT)
        return 1;
    if (!l)
        return 0;
    if ((pc->lo | pc->hi) & 1)
        return 1;
    if (d->dev && (pc->lo || pc->hi != pc->n))
        return 1; /* on the device only whole chunks are checked and applied */
    uint64_t o = rec->off[pc->e];
    if (d->use[i] == USE_EMPTY || o < d->dlo[i])
        d->dlo[i] = o;
    if (d->use[i] == USE_EMPTY || o + l > d->dhi[i])
        d->dhi[i] = o + l;
    d->use[i] = USE_DELTA;
    return 0;
}

/* Source s's delta record of v, when it was made from what the mirror
 * holds; NULL otherwise (and why, logged at debug level). */
static int fetch_records(refit_receiver_t *r, struct rf_rcvdelta *d, uint64_t v)
{
    size_t n = r->disc.n_src, want = 0;
    struct refit_store_get_item *it = calloc(n ? n : 1, sizeof(*it));
    char (*keys)[REFIT_STORE_MAX_KEY + 1] = calloc(n ? n : 1, REFIT_STORE_MAX_KEY + 1);
    int rc = (!it || !keys) ? REFIT_ENOMEM : 0;
    for (size_t s = 0; !rc && s < n; s++) {
        if (!(rc = rf_key_delta(keys[s], v, r->disc.src[s].id)))
            it[want++].key = keys[s];
        if (!d->base_v[s])
            want--; /* nothing to apply onto: not asked */
    }
    /* it[] holds the keys of sources with a base, in source order. */
    if (!rc && want)
        rc = refit_store_get_many(r->ctx->store, it, want);
    for (size_t s = 0, j = 0; !rc && s < n; s++) {
        if (!d->base_v[s])
            continue;
        struct refit_store_get_item *g = &it[j++];
        const struct rf_source *src = &r->disc.src[s];
        struct rf_delta_rec *rec = NULL;
        if (g->status || rf_delta_rec_decode(g->val, g->len, keys[s], src->cat, &rec)) {
            if (!g->status)
                refit_log(REFIT_LOG_WARN, "receiver", "%s: %s", r->id, refit_error_message());
            continue;
        }
        int fits = rec->version == v && rec->base == d->base_v[s] && rec->base_sums == d->base_h[s] &&
                   !memcmp(rec->catalog.b, src->rec->catalog.b, 16);
        if (fits && !(rc = sort_tensors(src->cat, &d->order[s])))
            d->rec[s] = rec;
        else
            rf_delta_rec_free(rec);
    }
    for (size_t i = 0; it && i < n; i++)
        free(it[i].val);
    free(it);
    free(keys);
    return rc;
}

/* Source s's delta arena, unpacked (two kept: the publisher alternates). */
static int delta_key(refit_receiver_t *r, struct rf_rcvdelta *d, size_t s, refit_tp_rkey_t **out)
{
    const struct rf_delta_rec *rec = d->rec[s];
    refit_tp_peer_t *peer = r->peers.p[s].peer;
    for (int k = 0; k < 2; k++)
        if (d->keys[s][k].rk && d->keys[s][k].peer == peer && d->keys[s][k].len == rec->rkey.len &&
            !memcmp(d->keys[s][k].blob, rec->rkey.data, rec->rkey.len)) {
            d->keys[s][k].stamp = ++d->stamp;
            *out = d->keys[s][k].rk;
            return 0;
        }
    /* A slot of another connection, else the one used longer ago. */
    int k = 0;
    for (int j = 0; j < 2; j++)
        if (!d->keys[s][j].rk || d->keys[s][j].peer != peer)
            k = j;
    if (d->keys[s][0].rk && d->keys[s][1].rk && d->keys[s][0].peer == peer && d->keys[s][1].peer == peer)
        k = d->keys[s][0].stamp < d->keys[s][1].stamp ? 0 : 1;
    refit_transport_release(r->tp, d->keys[s][k].rk);
    free(d->keys[s][k].blob);
    memset(&d->keys[s][k], 0, sizeof(d->keys[s][k]));
    if (!(d->keys[s][k].blob = malloc(rec->rkey.len ? rec->rkey.len : 1)))
        return REFIT_ENOMEM;
    memcpy(d->keys[s][k].blob, rec->rkey.data, rec->rkey.len);
    d->keys[s][k].len = rec->rkey.len;
    d->keys[s][k].peer = peer;
    d->keys[s][k].stamp = ++d->stamp;
    int rc = refit_transport_unpack(r->tp, peer, rec->rkey.data, rec->rkey.len, &d->keys[s][k].rk);
    if (rc)
        return refit_error_push(rc, "source %s: its delta arena's key", r->disc.src[s].id);
    *out = d->keys[s][k].rk;
    return 0;
}

/* Per descriptor: whole, by delta, or unchanged; the landing buffer for
 * the delta reads. */
int rf_rcvd_plan(refit_receiver_t *r, struct rf_rcvdelta *d, int on, const uint8_t *drop, uint64_t *delta_bytes)
{
    const struct rf_plan *p = &r->plan.plan;
    uint64_t land = 0;
    *delta_bytes = 0;
    for (size_t i = 0; i < p->n_desc; i++) {
        uint32_t s = p->desc[i].source;
        d->use[i] = USE_FULL;
        if (!on || !d->rec[s] || (drop && drop[i]))
            continue;
        d->use[i] = USE_EMPTY;
        if (rf_rcvd_walk(r, i, plan_piece, NULL)) {
            d->use[i] = USE_FULL;
            continue;
        }
        if (d->use[i] == USE_DELTA) {
            d->loff[i] = land;
            land += (d->dhi[i] - d->dlo[i] + 63) & ~(uint64_t)63;
            *delta_bytes += d->dhi[i] - d->dlo[i];
        }
    }
    if (land <= d->land_cap && d->land_reg)
        return 0;
    if (d->land_reg)
        refit_transport_dereg(r->tp, d->land_reg);
    free(d->land);
    d->land_reg = NULL;
    d->land_cap = 0;
    /* Its packed key goes with it (a new registration may reuse the address). */
    free(d->land_rk);
    d->land_rk = NULL;
    size_t cap = (size_t)land + land / 4 > 4096 ? (size_t)land + land / 4 : 4096;
    if (posix_memalign((void **)&d->land, 4096, cap))
        return REFIT_ENOMEM;
    memset(d->land, 0, cap);
    d->land_cap = cap;
    int rc = refit_transport_reg(r->tp, d->land, cap, REFIT_MEM_HOST, &d->land_reg);
    return rc ? refit_error_push(rc, "receiver %s: registering %zu bytes for deltas", r->id, cap) : 0;
}

/* ------------------------------------------------------------------ */
/* Applying */

static int apply_piece(refit_receiver_t *r, size_t i, const struct piece *pc, void *arg)
{
    struct rf_rcvdelta *d = r->delta;
    uint32_t s = r->plan.plan.desc[i].source;
    const struct rf_delta_rec *rec = d->rec[s];
    const struct rf_source *src = &r->disc.src[s];
    (void)arg;
    uint32_t l = rec->len[pc->e];
    if (!l)
        return 0;
    uint8_t *dst = d->mirror + d->moff[i] + pc->at;
    const char *name = src->cat->tensors[pc->ti].name;
    if (pc->lo == 0 && pc->hi == pc->n) {
        /* The whole chunk is here: it must be the base the delta was made from. */
        int have;
        uint64_t want = rf_sums_chunk(&d->base_sums[s], pc->ti, pc->k, &have);
        if (!have || XXH3_64bits(dst, pc->n) != want)
            return refit_error_set(REFIT_ESTALE, "tensor '%s' from source %s, chunk %llu: what this receiver "
                                   "holds is not v%llu, the base of v%llu's delta", name, src->id,
                                   (unsigned long long)pc->k, (unsigned long long)rec->base,
                                   (unsigned long long)rec->version);
    }
    const struct rf_delta_where w = {name, pc->k};
    const uint8_t *delta = d->land + d->loff[i] + (rec->off[pc->e] - d->dlo[i]);
    return rf_delta_apply_range(delta, l, pc->n, pc->lo, pc->hi, dst, &w);
}

/* Descriptor i by delta (or unchanged): the mirror brought to V, copied
 * where the descriptor lands, then verified and converted. */
int rf_rcvd_apply_desc(refit_receiver_t *r, size_t i)
{
    struct rf_rcvdelta *d = r->delta;
    const struct rf_desc *ds = &r->plan.plan.desc[i];
    if (d->dev) {
        /* Applied with the others after the execution (rf_rcvd_dev_finish). */
        d->st->delta_descriptors++;
        return rf_xfer_done(r, i, 1);
    }
    int rc = d->use[i] == USE_DELTA ? rf_rcvd_walk(r, i, apply_piece, NULL) : 0;
    if (rc == 1)
        rc = refit_error_set(REFIT_EPROTO, "receiver %s: descriptor %zu changed under the delta", r->id, i);
    if (rc)
        return rc;
    memcpy(rf_bufs_ptr(r, ds->buf, ds->local_off), d->mirror + d->moff[i], ds->len);
    d->st->delta_descriptors++;
    return rf_xfer_done(r, i, 1);
}

static int local(void *arg, uint32_t buf, uint64_t off, uint64_t len, refit_tp_region_t **reg, uint64_t *roff)
{
    refit_receiver_t *r = arg;
    if (buf == BUF_DELTA) {
        *reg = r->delta->land_reg;
        *roff = off;
        return 0;
    }
    return rf_bufs_local(arg, buf, off, len, reg, roff);
}

static int landed(void *arg, size_t first, size_t n)
{
    refit_receiver_t *r = arg;
    struct rf_rcvdelta *d = r->delta;
    for (size_t j = first; j < first + n; j++) {
        size_t i = d->sub_of[j];
        const struct rf_desc *ds = &r->plan.plan.desc[i];
        int rc;
        if (d->use[i] == USE_FULL) {
            rc = 0;
            if (d->dev)
                rc = rf_rcvd_dev_take(r, i);
            else
                memcpy(d->mirror + d->moff[i], rf_bufs_ptr(r, ds->buf, ds->local_off), ds->len);
            if (!rc)
                rc = rf_xfer_done(r, i, 1);
        } else if (!--d->pending[i]) {
            rc = rf_rcvd_apply_desc(r, i);
        } else {
            rc = 0;
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int sub_grow(struct rf_rcvdelta *d)
{
    size_t cap = d->sub_cap * 2 + 16;
    struct rf_desc *ns = realloc(d->sub, cap * sizeof(*ns));
    if (ns)
        d->sub = ns;
    size_t *no = ns ? realloc(d->sub_of, cap * sizeof(*no)) : NULL;
    if (!no)
        return REFIT_ENOMEM;
    d->sub_of = no;
    d->sub_cap = cap;
    return 0;
}

int rf_rcvd_read_piece(refit_receiver_t *r, size_t i, const struct piece *pc, void *arg)
{
    struct rf_rcvdelta *d = r->delta;
    struct reads *ra = arg;
    const struct rf_desc *ds = &r->plan.plan.desc[i];
    const struct rf_delta_rec *rec = d->rec[ds->source];
    uint32_t l = rec->len[pc->e];
    if (!l)
        return 0;
    uint64_t o = rec->off[pc->e];
    if (ra->m > 0 && d->sub_of[ra->m - 1] == i) {
        struct rf_desc *prev = &d->sub[ra->m - 1];
        if (prev->remote_off + prev->len == o) {
            prev->len += l;
            return 0;
        }
        /* a chunk read before (a descriptor covers each chunk once, but be
         * safe): already in the landing buffer */
        if (o >= prev->remote_off && o + l <= prev->remote_off + prev->len)
            return 0;
    }
    if (ra->m == d->sub_cap) {
        int rc = sub_grow(d);
        if (rc)
            return rc;
    }
    /* (push mode has no peers: the region is not used there) */
    uint32_t reg = ds->source < r->peers.n ? (uint32_t)r->peers.p[ds->source].n_rkeys : 0;
    d->sub[ra->m] = (struct rf_desc){ds->source, reg, o, BUF_DELTA,
                                     d->loff[i] + (o - d->dlo[i]), l};
    d->sub_of[ra->m++] = i;
    d->pending[i]++;
    d->read_delta += l;
    return 0;
}

/* One execution: whole descriptors and delta reads, by source. */
int rf_rcvd_run(refit_receiver_t *r, struct rf_rcvdelta *d, struct refit_pull_stats *st)
{
    const struct rf_plan *p = &r->plan.plan;
    size_t ns = r->disc.n_src, m = 0;
    struct rf_exec_source *es = calloc(ns ? ns : 1, sizeof(*es));
    refit_tp_rkey_t ***rk = calloc(ns ? ns : 1, sizeof(*rk));
    int rc = es && rk ? rf_xfer_begin(r, NULL) : REFIT_ENOMEM;
    if (d->dev)
        r->verify.on = 0; /* every chunk is verified on the device, after the apply */
    for (size_t s = 0; !rc && s < ns; s++) {
        const struct rf_peer *pe = &r->peers.p[s];
        if (!(rk[s] = calloc(pe->n_rkeys + 1, sizeof(**rk)))) {
            rc = REFIT_ENOMEM;
            break;
        }
        memcpy(rk[s], pe->rkeys, pe->n_rkeys * sizeof(**rk));
        if (d->rec[s])
            rc = delta_key(r, d, s, &rk[s][pe->n_rkeys]);
        es[s] = (struct rf_exec_source){pe->peer, rk[s], (uint32_t)pe->n_rkeys + 1, r->disc.src[s].id};
    }
    d->read_delta = 0;
    /* Unchanged descriptors need no read. */
    for (size_t i = 0; !rc && i < p->n_desc; i++)
        if (d->use[i] == USE_EMPTY)
            rc = rf_rcvd_apply_desc(r, i);
    for (size_t i = 0; !rc && i < p->n_desc; i++) {
        if (d->use[i] == USE_EMPTY)
            continue;
        if (d->use[i] == USE_DELTA) {
            struct reads ra = {i, m};
            d->pending[i] = 0;
            rc = rf_rcvd_walk(r, i, rf_rcvd_read_piece, &ra);
            m = ra.m;
            continue;
        }
        if (m == d->sub_cap && (rc = sub_grow(d)))
            break;
        d->sub[m] = p->desc[i];
        d->sub_of[m++] = i;
    }
    struct rf_plan sub = {.desc = d->sub, .n_desc = m};
    struct rf_exec_stats xs = {.failed_source = -1};
    double tx = rf_seconds();
    if (!rc)
        rc = rf_exec_run(r->tp, &sub, es, (uint32_t)ns, (uint32_t)r->ctx->flush_every, refit_transport_timeout_ms(r->tp),
                         local, landed, r, &xs);
    if (xs.failed_source >= 0 && (size_t)xs.failed_source < r->peers.n)
        rf_peers_broken(r, (size_t)xs.failed_source);
    if (!rc && d->dev)
        rc = rf_rcvd_dev_finish(r, d);
    if (!rc)
        rc = rf_xfer_finish_unfed(r);
    st->xfer_start = tx;
    st->xfer_end = rf_seconds();
    st->transfer_s = st->xfer_end - tx - xs.idle_wire_s;
    if (st->transfer_s < 0)
        st->transfer_s = 0;
    st->descriptors = xs.descriptors;
    st->bytes_wire = xs.bytes;
    for (size_t s = 0; rk && s < ns; s++)
        free(rk[s]);
    free(rk);
    free(es);
    return rc;
}

/* The start of a delta version, pull or push: the per-plan arrays, the
 * sources' checksums and delta records of v, and the plan of which
 * descriptors go by delta (drop: those the publisher will not write). */
int rf_rcvd_begin(refit_receiver_t *r, uint64_t v, const uint8_t *drop, uint64_t *bytes)
{
    if (!r->delta && !(r->delta = calloc(1, sizeof(*r->delta))))
        return REFIT_ENOMEM;
    struct rf_rcvdelta *d = r->delta;
    d->pulled = 0;
    rf_rcvd_pull_free(d);
    int rc = for_plan(r, d);
    rf_rcvd_dev_begin(d);
    for (size_t s = 0; !rc && s < r->disc.n_src; s++)
        d->got_h[s] = r->verify.sums[s].id;
    if (!rc)
        rc = fetch_records(r, d, v);
    *bytes = 0;
    if (!rc)
        rc = rf_rcvd_plan(r, d, 1, drop, bytes);
    return rc;
}

int rf_rcvdelta_transfer(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st)
{
    uint64_t bytes = 0;
    int rc = rf_rcvd_begin(r, v, NULL, &bytes);
    if (rc == REFIT_ENOMEM && !r->delta)
        return rc;
    struct rf_rcvdelta *d = r->delta;
    d->st = st;
    int used = 0;
    for (size_t i = 0; !rc && i < r->plan.plan.n_desc; i++)
        used |= d->use[i] != USE_FULL;
    if (!rc)
        rc = rf_rcvd_run(r, d, st);
    if (rc && used) {
        /* The mirror may be half V now: nothing in it is a base any more. */
        refit_log(REFIT_LOG_WARN, "receiver", "%s: delta of v%llu failed (%s); pulling it whole", r->id,
                  (unsigned long long)v, refit_error_message());
        memset(d->base_v, 0, d->n_src * sizeof(*d->base_v));
        st->delta_fallbacks = 1;
        st->delta_descriptors = 0;
        if (!(rc = rf_rcvd_plan(r, d, 0, NULL, &bytes)))
            rc = rf_rcvd_run(r, d, st);
        bytes = 0;
    }
    st->bytes_delta = rc || !bytes ? 0 : d->read_delta;
    if (!rc)
        d->pulled = v;
    rf_rcvd_pull_free(d);
    return rc;
}

void rf_rcvdelta_end(refit_receiver_t *r, uint64_t v, int rc)
{
    struct rf_rcvdelta *d = r->delta;
    if (!d || !d->base_v)
        return;
    int ok = !rc && d->pulled == v && v && r->verify.n == d->n_src;
    for (size_t s = 0; s < d->n_src; s++) {
        d->base_v[s] = ok ? v : 0;
        if (!ok)
            continue;
        /* The checksums of what the mirror holds now: this pull's. */
        struct rf_sums t = d->base_sums[s];
        d->base_sums[s] = r->verify.sums[s];
        r->verify.sums[s] = t;
        d->base_h[s] = d->got_h[s];
    }
    d->pulled = 0;
}
