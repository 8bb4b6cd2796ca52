/* verify.c — the verify stage of a pull (receiver.h): this version's
 * checksums of the tensors the plan reads (versions/<V>/sums/<id>/<k>,
 * the segments holding them, one pipelined read; every segment with
 * refit.delta.enabled),
 * and the check of every checksum chunk a landed descriptor completes
 * (refit.verify: full, or a sample chosen by a hash of the chunk's
 * position with refit.verify: sample).
 *
 * A receiver that asks for verification gets it or fails: a chunk its
 * source published no checksum for (the publisher's refit.verify is off,
 * or a tensor of zero chunks) fails the pull naming the source and the
 * tensor, before anything is committed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "exec.h"
#include "receiver.h"

void rf_verify_fini(struct rf_sumcheck *v)
{
    for (size_t i = 0; i < v->n; i++)
        rf_sums_fini(&v->sums[i]);
    free(v->sums);
    memset(v, 0, sizeof(*v));
}

/* One slot per discovered source, emptied. */
static int slots(struct rf_sumcheck *vf, size_t n)
{
    for (size_t i = 0; i < vf->n; i++)
        rf_sums_fini(&vf->sums[i]);
    if (n > vf->n || !vf->sums) {
        struct rf_sums *ns = realloc(vf->sums, (n ? n : 1) * sizeof(*ns));
        if (!ns)
            return REFIT_ENOMEM;
        vf->sums = ns;
    }
    memset(vf->sums, 0, n * sizeof(*vf->sums));
    vf->n = n;
    return 0;
}

int rf_verify_remote(const refit_receiver_t *r, size_t i)
{
    const struct rf_source *s = &r->disc.src[i];
    return r->plan.have && !r->ctx->delta && r->mode != &rf_mode_push && s->cat && s->rec &&
           s->rec->n_rkeys == (size_t)s->cat->n_regions + 1;
}

/* Whether the plan reads anything of source i (every source when there
 * is no plan to tell). */
static int reads_from(const refit_receiver_t *r, size_t i)
{
    return !r->plan.have || r->plan.plan.bytes_per_source[i] > 0;
}

static int decode_one(refit_receiver_t *r, const struct rf_sumkey *k, uint64_t v, void *val, size_t len, int status,
                      const uint32_t *const *segs)
{
    size_t i = k->src;
    const struct rf_source *s = &r->disc.src[i];
    if (status)
        return refit_error_set(status == REFIT_ENOENT ? REFIT_ESTALE : status,
                               "source %s: no checksums for v%llu (%s%s)", s->id, (unsigned long long)v, k->key,
                               status == REFIT_ENOENT ? "; a source of an older refit publishes no checksum segments"
                                                      : "");
    return rf_sums_decode_seg(val, len, k->key, s->cat, &s->rec->catalog, v, segs[i], k->seg, &r->verify.sums[i]);
}

/* Per source the plan reads, the segment of each catalog tensor
 * (segs[i], NULL for the others) and their count; with want (non-NULL)
 * the catalog's chunk counts too. */
static int segments_of(refit_receiver_t *r, uint32_t **segs, size_t *n_seg)
{
    for (size_t i = 0; i < r->disc.n_src; i++) {
        const refit_catalog_t *cat = r->disc.src[i].cat;
        if (!reads_from(r, i) || !cat)
            continue;
        uint64_t *want = NULL;
        int rc = rf_sums_cat_segments(cat, &want, &segs[i], &n_seg[i]);
        free(want);
        if (rc)
            return rc;
    }
    return 0;
}

static int add_key(struct rf_sumkey **out, size_t *n, size_t *cap, uint64_t v, const char *id, size_t src, size_t seg)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        struct rf_sumkey *nk = realloc(*out, nc * sizeof(*nk));
        if (!nk)
            return REFIT_ENOMEM;
        *out = nk;
        *cap = nc;
    }
    struct rf_sumkey *k = &(*out)[*n];
    k->src = src;
    k->seg = seg;
    int rc = rf_key_sums_seg(k->key, v, id, seg);
    if (!rc)
        ++*n;
    return rc;
}

/* need[i][k]: segment k of source i is read — those the plan's checks
 * cover, or every one (all). */
static int needed(const refit_receiver_t *r, uint32_t *const *segs, const size_t *n_seg, int all, uint8_t **need)
{
    size_t ns = r->disc.n_src;
    for (size_t i = 0; i < ns; i++)
        if (segs[i] && !(need[i] = calloc(n_seg[i] ? n_seg[i] : 1, 1)))
            return REFIT_ENOMEM;
    for (size_t i = 0; all && i < ns; i++)
        if (segs[i])
            memset(need[i], 1, n_seg[i]);
    const struct rf_rplan *rp = &r->plan;
    for (size_t c = 0; !all && c < rp->plan.n_check; c++) {
        uint32_t psrc = rp->plan.check[c].psrc, si = rp->psrc_source[psrc];
        size_t ci = rp->psrc_cat[psrc];
        if (si < ns && segs[si] && ci < r->disc.src[si].cat->n_tensors)
            need[si][segs[si][ci]] = 1;
    }
    return 0;
}

int rf_verify_keys(refit_receiver_t *r, uint64_t v, struct rf_sumkey **out, size_t *n)
{
    size_t ns = r->disc.n_src, cap = 0;
    *out = NULL;
    *n = 0;
    uint32_t **segs = calloc(ns ? ns : 1, sizeof(*segs));
    size_t *n_seg = calloc(ns ? ns : 1, sizeof(*n_seg));
    uint8_t **need = calloc(ns ? ns : 1, sizeof(*need));
    int rc = segs && n_seg && need ? 0 : REFIT_ENOMEM;
    if (!rc)
        rc = segments_of(r, segs, n_seg);
    if (!rc)
        rc = needed(r, segs, n_seg, r->ctx->delta || !r->plan.have, need);
    for (size_t i = 0; !rc && i < ns; i++) {
        if (!segs[i] || rf_verify_remote(r, i))
            continue;
        for (size_t k = 0; !rc && k < n_seg[i]; k++)
            if (need[i][k])
                rc = add_key(out, n, &cap, v, r->disc.src[i].id, i, k);
    }
    for (size_t i = 0; segs && i < ns; i++) {
        free(segs[i]);
        if (need)
            free(need[i]);
    }
    free(segs);
    free(n_seg);
    free(need);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

int rf_verify_fetch(refit_receiver_t *r, uint64_t v)
{
    if (r->ctx->verify == RF_VERIFY_OFF)
        return 0;
    /* The keys the plan reads: those read ahead with the records are
     * decoded from there, the others read now, in one round trip. */
    size_t n = r->disc.n_src, nk = 0, m = 0;
    struct rf_sumkey *sk = NULL;
    uint32_t **segs = calloc(n ? n : 1, sizeof(*segs));
    size_t *n_seg = calloc(n ? n : 1, sizeof(*n_seg));
    int rc = segs && n_seg ? 0 : REFIT_ENOMEM;
    if (!rc)
        rc = slots(&r->verify, n);
    if (!rc)
        rc = segments_of(r, segs, n_seg);
    for (size_t i = 0; !rc && i < n; i++)
        if (segs[i])
            rc = rf_sums_prepare(&r->verify.sums[i], r->disc.src[i].cat->n_tensors);
    if (!rc)
        rc = rf_verify_keys(r, v, &sk, &nk);
    struct refit_store_get_item *it = rc ? NULL : calloc(nk ? nk : 1, sizeof(*it));
    size_t *who = rc ? NULL : calloc(nk ? nk : 1, sizeof(*who));
    if (!rc && (!it || !who))
        rc = REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < nk; i++) {
        void *val = NULL;
        size_t len = 0;
        int st = 0;
        if (!rf_discover_presum(r, sk[i].key, &val, &len, &st)) {
            rc = decode_one(r, &sk[i], v, val, len, st, (const uint32_t *const *)segs);
            free(val);
            continue;
        }
        who[m] = i;
        it[m++].key = sk[i].key;
    }
    if (!rc && m)
        rc = refit_store_get_many(r->ctx->store, it, m);
    for (size_t k = 0; !rc && k < m; k++)
        rc = decode_one(r, &sk[who[k]], v, it[k].val, it[k].len, it[k].status, (const uint32_t *const *)segs);
    for (size_t k = 0; it && k < m; k++)
        free(it[k].val);
    for (size_t i = 0; segs && i < n; i++)
        free(segs[i]);
    free(segs);
    free(n_seg);
    free(it);
    free(who);
    free(sk);
    return rc;
}

/* Checksum chunk `chunk` of psrc c is sampled this pull. */
static int sampled(const refit_receiver_t *r, uint64_t chunk, size_t ci)
{
    if (r->ctx->verify != RF_VERIFY_SAMPLE)
        return 1;
    uint64_t pick = XXH3_64bits(&chunk, sizeof(chunk)) ^ (uint64_t)ci;
    return (double)(pick % 10000) < r->ctx->verify_sample * 10000.0;
}

/* The chunks of one check, whose bytes lie at base. */
static int check_chunks(refit_receiver_t *r, const struct rf_check *c, const char *base)
{
    const struct rf_rplan *p = &r->plan;
    const struct rf_psrc *ps = &p->psrc[c->psrc];
    uint32_t si = p->psrc_source[c->psrc];
    const struct rf_source *s = &r->disc.src[si];
    size_t ci = p->psrc_cat[c->psrc];
    uint64_t chunk_bytes = (uint64_t)ps->chunk_rows * ps->cols * ps->esize;
    for (uint32_t k = 0; k < c->count; k++) {
        uint64_t chunk = c->chunk + k, o = (uint64_t)k * chunk_bytes;
        uint64_t len = o + chunk_bytes <= c->len ? chunk_bytes : c->len - o;
        int have;
        uint64_t want = rf_sums_chunk(&r->verify.sums[si], ci, chunk, &have);
        if (!have)
            return refit_error_set(REFIT_ECHECKSUM,
                                   "tensor '%s' from source %s: no checksum for rows %llu.. at v%llu, and "
                                   "refit.verify is %s here (the source publishes none: its refit.verify is off?)",
                                   s->cat->tensors[ci].name, s->id, (unsigned long long)(chunk * ps->chunk_rows),
                                   (unsigned long long)s->rec->version,
                                   r->ctx->verify == RF_VERIFY_SAMPLE ? "sample" : "full");
        if (!sampled(r, chunk, ci))
            continue;
        uint64_t got = XXH3_64bits(base + o, len);
        if (got != want)
            return refit_error_set(REFIT_ECHECKSUM,
                                   "tensor '%s' from source %s: checksum mismatch in rows %llu.. "
                                   "(expected %016llx, got %016llx)",
                                   s->cat->tensors[ci].name, s->id, (unsigned long long)(chunk * ps->chunk_rows),
                                   (unsigned long long)want, (unsigned long long)got);
    }
    return 0;
}

int rf_verify_range(refit_receiver_t *r, uint32_t buf, uint64_t off, uint64_t len)
{
    const struct rf_rplan *rp = &r->plan;
    const struct rf_plan *p = &rp->plan;
    /* Checks sorted by (buf, off): find the first at or after off. */
    size_t lo = 0, hi = p->n_check;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct rf_check *c = &p->check[rp->check_order[mid]];
        if (c->buf < buf || (c->buf == buf && c->off < off))
            lo = mid + 1;
        else
            hi = mid;
    }
    double t0 = rf_seconds();
    int rc = 0;
    for (size_t i = lo; !rc && i < p->n_check; i++) {
        const struct rf_check *c = &p->check[rp->check_order[i]];
        if (c->buf != buf || c->off >= off + len)
            break;
        if (c->off + c->len > off + len)
            continue; /* straddles: checked with the descriptor that ends it */
        rc = check_chunks(r, c, rf_bufs_ptr(r, c->buf, c->off));
    }
    r->verify.seconds += rf_seconds() - t0;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Checksum tables over the transport (sums.h, pub_sums.c) */

/* One segment slot to READ: source, segment, where it lands. */
struct slot {
    size_t src, seg;
    uint64_t loff, len;
};

struct remote {
    refit_receiver_t *r;
    uint64_t v;
    struct slot *sl;
    size_t n, cap;
    char *buf;
    refit_tp_region_t *reg;
    uint32_t **segs; /* per source: the catalog's packing */
};

static int remote_local(void *arg, uint32_t buf, uint64_t off, uint64_t len, refit_tp_region_t **reg, uint64_t *roff)
{
    (void)buf;
    (void)len;
    *reg = ((struct remote *)arg)->reg;
    *roff = off;
    return 0;
}

/* Slots landed: decode and check each segment into the source's sums. */
static int remote_done(void *arg, size_t first, size_t n)
{
    struct remote *m = arg;
    refit_receiver_t *r = m->r;
    int rc = 0;
    for (size_t j = first; !rc && j < first + n; j++) {
        const struct slot *q = &m->sl[j];
        const struct rf_source *s = &r->disc.src[q->src];
        char what[REFIT_STORE_MAX_KEY + 64];
        snprintf(what, sizeof(what), "source %s: checksum table segment %zu of v%llu", s->id, q->seg,
                 (unsigned long long)m->v);
        size_t len = 0;
        rc = rf_sums_seg_len(m->buf + q->loff, q->len, &len);
        if (rc)
            rc = refit_error_push(rc, "%s", what);
        else
            rc = rf_sums_decode_seg(m->buf + q->loff, len, what, s->cat, &s->rec->catalog, m->v, m->segs[q->src],
                                    q->seg, &r->verify.sums[q->src]);
    }
    return rc;
}

static int slot_add(struct remote *m, size_t src, size_t seg, uint64_t len, uint64_t *at)
{
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 64;
        struct slot *ns = realloc(m->sl, nc * sizeof(*ns));
        if (!ns)
            return REFIT_ENOMEM;
        m->sl = ns;
        m->cap = nc;
    }
    m->sl[m->n++] = (struct slot){src, seg, *at, len};
    *at += len;
    return 0;
}

/* The slots of every segment the plan's checks cover, of the sources
 * whose checksums come from their table: one descriptor each. */
static int remote_slots(struct remote *m, struct rf_desc **desc)
{
    refit_receiver_t *r = m->r;
    size_t ns = r->disc.n_src;
    uint8_t **need = calloc(ns ? ns : 1, sizeof(*need));
    uint64_t **off = calloc(ns ? ns : 1, sizeof(*off));
    size_t *n_seg = calloc(ns ? ns : 1, sizeof(*n_seg));
    int rc = need && off && n_seg ? 0 : REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < ns; i++) {
        const refit_catalog_t *cat = r->disc.src[i].cat;
        if (!reads_from(r, i) || !rf_verify_remote(r, i))
            continue;
        uint64_t *want = NULL;
        rc = rf_sums_cat_segments(cat, &want, &m->segs[i], &n_seg[i]);
        if (!rc && (!(need[i] = calloc(n_seg[i] + 1, 1)) || !(off[i] = malloc((n_seg[i] + 1) * sizeof(**off)))))
            rc = REFIT_ENOMEM;
        if (!rc)
            rc = rf_sums_table_slots(want, m->segs[i], cat->n_tensors, n_seg[i], off[i]);
        free(want);
    }
    const struct rf_rplan *rp = &r->plan;
    for (size_t c = 0; !rc && c < rp->plan.n_check; c++) {
        uint32_t psrc = rp->plan.check[c].psrc, si = rp->psrc_source[psrc];
        size_t ci = rp->psrc_cat[psrc];
        if (si < ns && need[si] && ci < r->disc.src[si].cat->n_tensors)
            need[si][m->segs[si][ci]] = 1;
    }
    uint64_t at = 0;
    for (size_t i = 0; !rc && i < ns; i++)
        for (size_t k = 0; !rc && need[i] && k < n_seg[i]; k++)
            if (need[i][k])
                rc = slot_add(m, i, k, off[i][k + 1] - off[i][k], &at);
    *desc = rc ? NULL : calloc(m->n ? m->n : 1, sizeof(**desc));
    if (!rc && !*desc)
        rc = REFIT_ENOMEM;
    for (size_t j = 0; !rc && j < m->n; j++) {
        const struct slot *q = &m->sl[j];
        /* sorted by source, as rf_exec_run wants */
        (*desc)[j] = (struct rf_desc){(uint32_t)q->src, r->disc.src[q->src].cat->n_regions, off[q->src][q->seg], 0,
                                      q->loff, q->len};
    }
    for (size_t i = 0; i < ns; i++) {
        if (need)
            free(need[i]);
        if (off)
            free(off[i]);
    }
    free(need);
    free(off);
    free(n_seg);
    return rc;
}

int rf_verify_fetch_remote(refit_receiver_t *r, uint64_t v)
{
    if (r->ctx->verify == RF_VERIFY_OFF)
        return 0;
    size_t ns = r->disc.n_src;
    struct remote m = {.r = r, .v = v};
    struct rf_desc *desc = NULL;
    int rc = (m.segs = calloc(ns ? ns : 1, sizeof(*m.segs))) ? remote_slots(&m, &desc) : REFIT_ENOMEM;
    uint64_t total = m.n ? m.sl[m.n - 1].loff + m.sl[m.n - 1].len : 0;
    if (!rc && m.n && !(m.buf = malloc(total)))
        rc = REFIT_ENOMEM;
    if (!rc && m.n)
        rc = refit_transport_reg(r->tp, m.buf, total, REFIT_MEM_HOST, &m.reg);
    struct rf_exec_source *es = rc || !m.n ? NULL : calloc(ns, sizeof(*es));
    if (!rc && m.n && !es)
        rc = REFIT_ENOMEM;
    for (size_t i = 0; es && i < ns; i++) {
        const struct rf_peer *p = &r->peers.p[i];
        es[i] = (struct rf_exec_source){p->peer, p->rkeys, (uint32_t)p->n_rkeys, r->disc.src[i].id};
    }
    struct rf_exec_stats xs = {.failed_source = -1};
    if (!rc && m.n) {
        struct rf_plan plan = {.desc = desc, .n_desc = m.n};
        rc = rf_exec_run(r->tp, &plan, es, (uint32_t)ns, (uint32_t)r->ctx->flush_every,
                         refit_transport_timeout_ms(r->tp), remote_local, remote_done, &m, &xs);
        if (rc && xs.failed_source >= 0 && (size_t)xs.failed_source < ns)
            snprintf(r->failed_src, sizeof(r->failed_src), "%s", r->disc.src[xs.failed_source].id);
        if (rc)
            rc = refit_error_push(rc, "reading checksum tables over the transport");
    }
    if (m.reg)
        refit_transport_dereg(r->tp, m.reg);
    free(es);
    free(m.buf);
    free(desc);
    free(m.sl);
    for (size_t i = 0; m.segs && i < ns; i++)
        free(m.segs[i]);
    free(m.segs);
    return rc;
}
