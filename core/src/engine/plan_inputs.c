/* plan_inputs.c — the plan stage of a pull (receiver.h): what the planner
 * (plan.c) is given and what the transfer needs from its output.
 *
 * Inputs: the target layout composed with every source's Megatron layout
 * (refit_layout_compose) gives pieces, rectangles of destination tensors
 * with the source tensors (candidates) that hold them; each candidate is a
 * catalog tensor seen as a 2-D matrix (struct rf_psrc); each destination an
 * image in its sources' dtype, in staging or (when converted) in scratch.
 * Outputs kept beside the plan: per descriptor the tensors it feeds and
 * per tensor its scatters (so a tensor is converted the moment its last
 * byte lands), and the checksum checks sorted by where they lie. */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "receiver.h"
#include "../sched.h"

void rf_layout_dims(const struct refit_layout_tensor *t, uint64_t *rows, uint64_t *cols, uint64_t *slot_rows)
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

void rf_rplan_drop(struct rf_rplan *p)
{
    rf_plan_free(&p->plan);
    for (size_t i = 0; i < p->n_psrc_of; i++)
        free(p->psrc_of[i]);
    free(p->psrc_of);
    free(p->psrc);
    free(p->psrc_source);
    free(p->psrc_cat);
    free(p->pdst);
    free(p->img_dtype);
    free(p->feed_first);
    free(p->feed);
    free(p->scat_first);
    free(p->scat);
    free(p->check_order);
    struct refit_hash128 key = p->key;
    memset(p, 0, sizeof(*p));
    p->key = key; /* invalid without `have` */
}

const char *rf_rplan_dst_name(void *receiver, uint32_t lt)
{
    refit_receiver_t *r = receiver;
    const struct refit_layout_tensor *t = refit_layout_at(r->lay, lt);
    return t ? t->name : "?";
}

/* ------------------------------------------------------------------ */
/* Inputs */

static int psrc_grow(struct rf_rplan *p)
{
    if (p->n_psrc < p->cap_psrc)
        return 0;
    size_t nc = p->cap_psrc ? p->cap_psrc * 2 : 256;
    struct rf_psrc *np = realloc(p->psrc, nc * sizeof(*np));
    if (np)
        p->psrc = np;
    uint32_t *ns = realloc(p->psrc_source, nc * sizeof(*ns));
    if (ns)
        p->psrc_source = ns;
    size_t *ncat = realloc(p->psrc_cat, nc * sizeof(*ncat));
    if (ncat)
        p->psrc_cat = ncat;
    if (!np || !ns || !ncat)
        return REFIT_ENOMEM;
    p->cap_psrc = nc;
    return 0;
}

/* The psrc of catalog tensor ci of source si (made on first use). */
static int psrc_at(refit_receiver_t *r, uint32_t si, ptrdiff_t ci, uint32_t *out)
{
    struct rf_rplan *p = &r->plan;
    if (p->psrc_of[si][ci] >= 0) {
        *out = (uint32_t)p->psrc_of[si][ci];
        return 0;
    }
    int rc = psrc_grow(p);
    if (rc)
        return rc;
    const struct refit_cat_tensor *ct = &r->disc.src[si].cat->tensors[ci];
    uint64_t cols = ct->ndim >= 2 ? ct->shape[ct->ndim - 1] : 1;
    uint64_t es = refit_dtype_size(ct->dtype);
    uint64_t rows = cols && es ? ct->nbytes / (cols * es) : 0;
    p->psrc[p->n_psrc] = (struct rf_psrc){si, ct->region, ct->offset, rows, cols, (uint32_t)es, ct->chunk_rows};
    p->psrc_source[p->n_psrc] = si;
    p->psrc_cat[p->n_psrc] = (size_t)ci;
    p->psrc_of[si][ci] = (ptrdiff_t)p->n_psrc;
    *out = (uint32_t)p->n_psrc++;
    return 0;
}

/* Sources with the same catalog (one cached object per content hash) and
 * the same trainer layout hold the same tensors at the same offsets: they
 * are candidates of each other for every piece.  The layout is composed
 * once per class (a tp8·ep32 trainer on 256 GPUs has 32) and each piece's
 * candidates are expanded to the classes' members in source order, which
 * gives exactly the pieces of composing every source on its own
 * (refit.plan_dedupe: false, the reference tests/engine/test_plan_dedupe.c
 * compares with). */
struct classes {
    uint32_t *of;  /* per source: its class */
    uint32_t *rep; /* per class: its first source */
    size_t n;
    uint32_t *first, *mem; /* per class: its members in source order, mem[first[k]..first[k+1]) */
    size_t *at;    /* per class: its first candidate in the piece at hand (SIZE_MAX: none) */
    ptrdiff_t *ci; /* per candidate of the piece at hand: its catalog index (-1: absent) */
    size_t cap_ci;
    uint32_t *pres, *next; /* the classes of the piece at hand, and where each is in its members */
    /* per class, per tensor of its layout: the catalog index (-1: absent),
     * looked up by name once, not once per piece (-2: not yet) */
    ptrdiff_t **cat_of;
};

static void classes_free(struct classes *c)
{
    free(c->of);
    free(c->rep);
    free(c->at);
    free(c->ci);
    free(c->first);
    free(c->mem);
    free(c->pres);
    free(c->next);
    for (size_t k = 0; c->cat_of && k < c->n; k++)
        free(c->cat_of[k]);
    free(c->cat_of);
}

static int same_layout(const struct rf_source *a, const struct rf_source *b)
{
    if (a->meg == b->meg)
        return 1;
    if (!a->rec || !b->rec)
        return 0;
    struct refit_src_ext x = a->meg_ext, y = b->meg_ext;
    x.dp_rank = y.dp_rank = 0; /* data-parallel replicas differ only there */
    return !memcmp(&a->meg_lay, &b->meg_lay, sizeof(a->meg_lay)) && !memcmp(&x, &y, sizeof(x));
}

static int classes_of(refit_receiver_t *r, struct classes *c)
{
    size_t n = r->disc.n_src ? r->disc.n_src : 1;
    memset(c, 0, sizeof(*c));
    c->of = malloc(n * sizeof(*c->of));
    c->rep = malloc(n * sizeof(*c->rep));
    c->at = malloc(n * sizeof(*c->at));
    if (!c->of || !c->rep || !c->at)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < r->disc.n_src; i++) {
        const struct rf_source *s = &r->disc.src[i];
        size_t k = r->ctx->plan_dedupe ? 0 : c->n;
        while (k < c->n && !(r->disc.src[c->rep[k]].cat == s->cat && same_layout(&r->disc.src[c->rep[k]], s)))
            k++;
        if (k == c->n) {
            c->rep[c->n] = (uint32_t)i;
            c->at[c->n++] = SIZE_MAX;
        }
        c->of[i] = (uint32_t)k;
    }
    c->first = calloc(c->n + 1, sizeof(*c->first));
    c->mem = malloc(n * sizeof(*c->mem));
    c->pres = malloc((c->n ? c->n : 1) * sizeof(*c->pres));
    c->next = calloc(c->n ? c->n : 1, sizeof(*c->next));
    c->cat_of = calloc(c->n ? c->n : 1, sizeof(*c->cat_of));
    if (!c->first || !c->mem || !c->pres || !c->next || !c->cat_of)
        return REFIT_ENOMEM;
    for (size_t k = 0; k < c->n; k++) {
        size_t nt = refit_layout_count(r->disc.src[c->rep[k]].meg);
        if (!(c->cat_of[k] = malloc((nt ? nt : 1) * sizeof(**c->cat_of))))
            return REFIT_ENOMEM;
        for (size_t t = 0; t < nt; t++)
            c->cat_of[k][t] = -2;
    }
    for (size_t i = 0; i < r->disc.n_src; i++)
        c->first[c->of[i] + 1]++;
    for (size_t k = 0; k < c->n; k++)
        c->first[k + 1] += c->first[k];
    for (size_t i = 0; i < r->disc.n_src; i++)
        c->mem[c->first[c->of[i]] + c->next[c->of[i]]++] = (uint32_t)i;
    return 0;
}

/* Catalog index of every candidate of x (its class representative's
 * catalog is every member's), and where each class's candidates begin
 * (x->cand is sorted by class, then tensor). */
static int piece_classes(refit_receiver_t *r, struct classes *cl, const struct refit_layout_xpiece *x,
                         const refit_layout_t **meg)
{
    if (x->n_cand > cl->cap_ci) {
        ptrdiff_t *nc = realloc(cl->ci, x->n_cand * sizeof(*nc));
        if (!nc)
            return REFIT_ENOMEM;
        cl->ci = nc;
        cl->cap_ci = x->n_cand;
    }
    for (size_t c = 0; c < x->n_cand; c++) {
        const struct refit_layout_cand *cd = &x->cand[c];
        ptrdiff_t *ci = &cl->cat_of[cd->rank][cd->tensor];
        if (*ci == -2) {
            /* Catalogs usually list a rank's tensors in its layout's order
             * (dry catalogs always do): try that place before the hash. */
            const refit_catalog_t *cat = r->disc.src[cl->rep[cd->rank]].cat;
            const char *name = refit_layout_at(meg[cd->rank], cd->tensor)->name;
            *ci = cd->tensor < cat->n_tensors && !strcmp(cat->tensors[cd->tensor].name, name)
                      ? (ptrdiff_t)cd->tensor
                      : refit_catalog_find(cat, name);
        }
        cl->ci[c] = *ci;
        if (!c || cd->rank != x->cand[c - 1].rank)
            cl->at[cd->rank] = c;
    }
    return 0;
}

/* Candidate c of x on source si, unless its placement differs from the
 * first one kept (same bytes elsewhere in that rank's tensor: one
 * placement suffices) or the source does not publish it. */
static int add_cand(refit_receiver_t *r, const struct classes *cl, const struct refit_layout_xpiece *x, size_t c,
                    uint32_t si, struct rf_piece *p)
{
    const struct refit_layout_cand *cd = &x->cand[c];
    if (p->ncand && ((uint64_t)cd->src_row != p->src_row || (uint64_t)cd->src_col != p->src_col))
        return 0;
    if (cl->ci[c] < 0)
        return 0;
    uint32_t ps;
    int rc = psrc_at(r, si, cl->ci[c], &ps);
    if (rc)
        return rc;
    if (!p->ncand) {
        p->src_row = (uint64_t)cd->src_row;
        p->src_col = (uint64_t)cd->src_col;
    }
    p->cand[p->ncand++] = ps;
    return 0;
}

/* One composed piece, its candidates those of every source in source
 * order (the order composing every source gives: by rank, then tensor);
 * *kept 0 when no candidate's source publishes it (a gap the planner
 * reports). */
static int piece_of(refit_receiver_t *r, struct classes *cl, const struct refit_layout_xpiece *x,
                    const refit_layout_t **meg, struct rf_piece *p, int *kept)
{
    uint64_t rows, cols, slot;
    rf_layout_dims(refit_layout_at(r->lay, x->dst), &rows, &cols, &slot);
    /* p is zeroed (calloc'ed) or holds a dropped piece, which wrote no
     * candidate: the fields, not the 300-byte piece, are set. */
    p->ncand = 0;
    p->src_row = p->src_col = 0;
    p->dst = x->dst;
    p->rows = (uint64_t)x->rows;
    p->cols = (uint64_t)x->cols;
    p->dst_row = (uint64_t)x->dst_index * slot + (uint64_t)x->dst_row;
    p->dst_col = (uint64_t)x->dst_col;
    int rc = piece_classes(r, cl, x, meg);
    /* The members of the classes present, merged in source order. */
    size_t np = 0;
    for (size_t c = 0; c < x->n_cand; c++)
        if (!c || x->cand[c].rank != x->cand[c - 1].rank) {
            cl->next[np] = cl->first[x->cand[c].rank];
            cl->pres[np++] = x->cand[c].rank;
        }
    while (!rc && p->ncand < RF_MAX_CAND) {
        size_t best = np;
        for (size_t j = 0; j < np; j++)
            if (cl->next[j] < cl->first[cl->pres[j] + 1] &&
                (best == np || cl->mem[cl->next[j]] < cl->mem[cl->next[best]]))
                best = j;
        if (best == np)
            break;
        uint32_t k = cl->pres[best], si = cl->mem[cl->next[best]++];
        for (size_t c = cl->at[k]; !rc && c < x->n_cand && x->cand[c].rank == k && p->ncand < RF_MAX_CAND; c++)
            rc = add_cand(r, cl, x, c, si, p);
    }
    for (size_t c = 0; c < x->n_cand; c++)
        cl->at[x->cand[c].rank] = SIZE_MAX;
    *kept = p->ncand > 0;
    return rc;
}

/* The composed layout as planner pieces. */
static int pieces_of(refit_receiver_t *r, struct rf_piece **out, size_t *n_out)
{
    struct classes cl;
    int rc = classes_of(r, &cl);
    const refit_layout_t **meg = rc ? NULL : calloc(cl.n ? cl.n : 1, sizeof(*meg));
    if (!rc && !meg)
        rc = REFIT_ENOMEM;
    for (size_t k = 0; !rc && k < cl.n; k++)
        meg[k] = r->disc.src[cl.rep[k]].meg;
    refit_layout_xmap_t *xm = NULL;
    if (!rc)
        rc = refit_layout_compose(r->lay, meg, cl.n, &xm);
    size_t n = rc ? 0 : refit_layout_xmap_count(xm), m = 0;
    struct rf_piece *pc = rc ? NULL : calloc(n ? n : 1, sizeof(*pc));
    if (!rc && !pc)
        rc = REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < n; i++) {
        int kept = 0;
        rc = piece_of(r, &cl, refit_layout_xmap_at(xm, i), meg, &pc[m], &kept);
        m += kept;
    }
    free(meg);
    classes_free(&cl);
    refit_layout_xmap_destroy(xm);
    if (rc) {
        free(pc);
        return rc;
    }
    *out = pc;
    *n_out = m;
    return 0;
}

/* Image dtype per tensor: its sources', which must agree; where no source
 * says, the destination's (bf16 for FP8). */
static int image_dtypes(refit_receiver_t *r, const struct rf_piece *pc, size_t np)
{
    struct rf_rplan *p = &r->plan;
    size_t nl = refit_layout_count(r->lay);
    for (size_t k = 0; k < np; k++) {
        uint32_t c = pc[k].cand[0];
        const struct refit_cat_tensor *ct = &r->disc.src[p->psrc_source[c]].cat->tensors[p->psrc_cat[c]];
        enum refit_dtype *dt = &p->img_dtype[pc[k].dst];
        if (*dt == REFIT_DTYPE_INVALID)
            *dt = (enum refit_dtype)ct->dtype;
        else if (*dt != (enum refit_dtype)ct->dtype)
            return refit_error_set(REFIT_EPROTO, "'%s': its sources differ in dtype (%s and %s)",
                                   rf_rplan_dst_name(r, pc[k].dst), refit_dtype_name(*dt),
                                   refit_dtype_name((enum refit_dtype)ct->dtype));
    }
    for (size_t t = 0; t < nl; t++) {
        const struct rf_dst *d = &r->dests.d[r->dests.dst_of_lt[t]];
        if (p->img_dtype[t] == REFIT_DTYPE_INVALID)
            p->img_dtype[t] = d->dtype == REFIT_DTYPE_F8_E4M3 ? REFIT_DTYPE_BF16 : d->dtype;
    }
    return 0;
}

int rf_rplan_inputs(refit_receiver_t *r, struct rf_piece **pc, size_t *n_pc)
{
    struct rf_rplan *p = &r->plan;
    size_t nl = refit_layout_count(r->lay);
    p->n_psrc_of = r->disc.n_src;
    p->psrc_of = calloc(p->n_psrc_of ? p->n_psrc_of : 1, sizeof(*p->psrc_of));
    if (!p->psrc_of)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < r->disc.n_src; i++) {
        size_t nt = r->disc.src[i].cat->n_tensors;
        if (!(p->psrc_of[i] = malloc((nt + 1) * sizeof(ptrdiff_t))))
            return REFIT_ENOMEM;
        for (size_t k = 0; k < nt; k++)
            p->psrc_of[i][k] = -1;
    }
    p->pdst = calloc(nl ? nl : 1, sizeof(*p->pdst));
    p->img_dtype = calloc(nl ? nl : 1, sizeof(*p->img_dtype));
    if (!p->pdst || !p->img_dtype)
        return REFIT_ENOMEM;
    int rc = pieces_of(r, pc, n_pc);
    if (!rc && (rc = image_dtypes(r, *pc, *n_pc))) {
        free(*pc);
        *pc = NULL;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* Source choice across the engines of one layout */

static uint64_t piece_bytes(const struct rf_rplan *p, const struct rf_piece *pc)
{
    return pc->rows * pc->cols * p->psrc[pc->cand[0]].esize;
}

/* The planner's own order (plan.c): largest first, then by destination;
 * rf_sched_choose keeps it for ties. */
static int cmp_piece_order(const void *a, const void *b)
{
    const struct rf_piece *x = a, *y = b;
    uint64_t bx = x->rows * x->cols, by = y->rows * y->cols;
    if (bx != by)
        return bx > by ? -1 : 1;
    if (x->dst != y->dst)
        return x->dst < y->dst ? -1 : 1;
    if (x->dst_row != y->dst_row)
        return x->dst_row < y->dst_row ? -1 : 1;
    return (x->dst_col > y->dst_col) - (x->dst_col < y->dst_col);
}

/* Which engine of the layout this receiver is: refit.replica_index, or a
 * hash of its id (engines that hash alike choose alike, as without). */
static struct rf_sched_who who_am_i(const refit_receiver_t *r)
{
    uint32_t n = (uint32_t)r->ctx->replicas;
    int64_t i = r->ctx->replica_index;
    if (i < 0)
        i = (int64_t)(XXH3_64bits(r->id, strlen(r->id)) % n);
    return (struct rf_sched_who){(uint32_t)i, n};
}

int rf_rplan_spread(refit_receiver_t *r, struct rf_piece *pc, size_t n)
{
    if (r->ctx->replicas <= 1 || !n)
        return 0;
    struct rf_rplan *p = &r->plan;
    qsort(pc, n, sizeof(*pc), cmp_piece_order);
    struct rf_sched_item *it = calloc(n, sizeof(*it));
    uint32_t *cand = calloc(n * RF_MAX_CAND, sizeof(*cand)), *choice = calloc(n, sizeof(*choice));
    int rc = it && cand && choice ? 0 : REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < n; i++) {
        for (uint32_t c = 0; c < pc[i].ncand; c++)
            cand[i * RF_MAX_CAND + c] = p->psrc[pc[i].cand[c]].source;
        it[i] = (struct rf_sched_item){pc[i].ncand, &cand[i * RF_MAX_CAND], piece_bytes(p, &pc[i])};
    }
    struct rf_sched_who who = who_am_i(r);
    if (!rc)
        rc = rf_sched_choose(it, n, (uint32_t)r->disc.n_src, RF_SCHED_SPREAD, &who, choice, NULL);
    for (size_t i = 0; !rc && i < n; i++) {
        pc[i].cand[0] = pc[i].cand[choice[i]];
        pc[i].ncand = 1;
    }
    free(it);
    free(cand);
    free(choice);
    return rc ? refit_error_push(rc, "choosing sources as engine %u of %u", who.replica, who.n_replicas) : 0;
}

/* ------------------------------------------------------------------ */
/* The plan and its feeds */

static int cmp_check(const void *a, const void *b, void *arg)
{
    const struct rf_check *c = arg;
    const struct rf_check *x = &c[*(const size_t *)a], *y = &c[*(const size_t *)b];
    if (x->buf != y->buf)
        return x->buf < y->buf ? -1 : 1;
    return (x->off > y->off) - (x->off < y->off);
}

/* For each descriptor, the layout tensors whose image it (or a scatter from
 * it) writes.  Descriptors are disjoint in local space, so each image or
 * scatter range finds its descriptors by binary search. */
struct link {
    size_t desc, t;
};

struct links {
    struct link *l;
    size_t n, cap;
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
                      size_t t, struct links *L)
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
        if (L->n == L->cap) {
            size_t nc = L->cap ? L->cap * 2 : 1024;
            struct link *nl = realloc(L->l, nc * sizeof(*nl));
            if (!nl)
                return REFIT_ENOMEM;
            L->l = nl;
            L->cap = nc;
        }
        L->l[L->n++] = (struct link){order[i], t};
    }
    return 0;
}

/* Every (descriptor, tensor) pair; per tensor its scatter count. */
static int collect_links(struct rf_rplan *rp, size_t nl, struct links *L)
{
    const struct rf_plan *p = &rp->plan;
    size_t *order = malloc((p->n_desc ? p->n_desc : 1) * sizeof(size_t));
    if (!order)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < p->n_desc; i++)
        order[i] = i;
    qsort_r(order, p->n_desc, sizeof(size_t), cmp_desc_local, p->desc);
    int rc = 0;
    for (size_t t = 0; t < nl && !rc; t++) {
        const struct rf_pdst *pd = &rp->pdst[t];
        uint64_t len = pd->rows * pd->cols * pd->esize;
        rc = link_range(p, order, pd->in_scratch ? RF_BUF_SCRATCH : RF_BUF_STAGING, pd->offset, pd->offset + len, t,
                        L);
    }
    for (size_t k = 0; k < p->n_scatter && !rc; k++) {
        const struct rf_scatter *sc = &p->scatter[k];
        uint64_t end = sc->from + (sc->rows - 1) * sc->from_pitch + sc->row_bytes;
        rc = link_range(p, order, RF_BUF_SCRATCH, sc->from, end, sc->dst, L);
        rp->scat_first[sc->dst + 1]++;
    }
    free(order);
    return rc;
}

/* Scatters per tensor (CSR over the counts collect_links made). */
static int scatters_per_tensor(struct rf_rplan *rp, size_t nl)
{
    const struct rf_plan *p = &rp->plan;
    for (size_t t = 0; t < nl; t++)
        rp->scat_first[t + 1] += rp->scat_first[t];
    size_t *fill = calloc(nl ? nl : 1, sizeof(size_t));
    if (!fill)
        return REFIT_ENOMEM;
    for (size_t k = 0; k < p->n_scatter; k++) {
        uint32_t t = p->scatter[k].dst;
        rp->scat[rp->scat_first[t] + fill[t]++] = k;
    }
    free(fill);
    return 0;
}

/* Tensors per descriptor, without duplicates (CSR). */
static int feeds_per_desc(struct rf_rplan *rp, struct links *L)
{
    const struct rf_plan *p = &rp->plan;
    if (L->n)
        qsort(L->l, L->n, sizeof(*L->l), cmp_link);
    rp->feed = malloc((L->n ? L->n : 1) * sizeof(size_t));
    if (!rp->feed)
        return REFIT_ENOMEM;
    size_t m = 0;
    for (size_t i = 0; i < L->n; i++) {
        if (i && L->l[i].desc == L->l[i - 1].desc && L->l[i].t == L->l[i - 1].t)
            continue;
        rp->feed[m++] = L->l[i].t;
        rp->feed_first[L->l[i].desc + 1]++;
    }
    for (size_t i = 0; i < p->n_desc; i++)
        rp->feed_first[i + 1] += rp->feed_first[i];
    return 0;
}

static int build_feeds(refit_receiver_t *r)
{
    struct rf_rplan *rp = &r->plan;
    const struct rf_plan *p = &rp->plan;
    size_t nl = refit_layout_count(r->lay);
    rp->feed_first = calloc(p->n_desc + 1, sizeof(size_t));
    rp->scat_first = calloc(nl + 1, sizeof(size_t));
    rp->scat = malloc((p->n_scatter ? p->n_scatter : 1) * sizeof(size_t));
    rp->check_order = malloc((p->n_check ? p->n_check : 1) * sizeof(size_t));
    if (!rp->feed_first || !rp->scat_first || !rp->scat || !rp->check_order)
        return REFIT_ENOMEM;
    struct links L = {0};
    int rc = collect_links(rp, nl, &L);
    if (!rc)
        rc = scatters_per_tensor(rp, nl);
    if (!rc)
        rc = feeds_per_desc(rp, &L);
    free(L.l);
    if (rc)
        return rc;
    for (size_t i = 0; i < p->n_check; i++)
        rp->check_order[i] = i;
    qsort_r(rp->check_order, p->n_check, sizeof(size_t), cmp_check, p->check);
    return 0;
}

/* The images: converted tensors are assembled in scratch (the planner
 * places them), the others straight in their staging bytes. */
static void images(refit_receiver_t *r)
{
    struct rf_rplan *p = &r->plan;
    size_t nl = refit_layout_count(r->lay);
    for (size_t t = 0; t < nl; t++) {
        const struct refit_layout_tensor *lt = refit_layout_at(r->lay, t);
        const struct rf_dst *d = &r->dests.d[r->dests.dst_of_lt[t]];
        uint64_t rows, cols, slot;
        rf_layout_dims(lt, &rows, &cols, &slot);
        struct rf_pdst *pd = &p->pdst[t];
        pd->rows = rows;
        pd->cols = cols;
        pd->esize = (uint32_t)refit_dtype_size(p->img_dtype[t]);
        pd->in_scratch = lt->fp8 || d->dtype != p->img_dtype[t];
        pd->offset = pd->in_scratch ? 0 : d->staging_off;
        /* Elements the pieces cover (0: all padding, nothing to pull). */
        uint64_t cov = 0;
        for (size_t k = 0; k < lt->n_pieces; k++)
            cov += (uint64_t)(lt->pieces[k].rows * lt->pieces[k].cols);
        pd->covered = cov;
    }
}

int rf_rplan_build(refit_receiver_t *r, struct rf_piece *pc, size_t n_pc)
{
    struct rf_rplan *p = &r->plan;
    images(r);
    struct rf_plan_opts po = {.scatter_threshold = r->ctx->scatter_threshold,
                              .verify = r->ctx->verify != RF_VERIFY_OFF};
    p->n_pieces = n_pc;
    int rc = rf_plan_build(p->psrc, p->n_psrc, p->pdst, refit_layout_count(r->lay), pc, n_pc,
                           (uint32_t)r->disc.n_src, &po, rf_rplan_dst_name, r, &p->plan);
    return rc ? rc : build_feeds(r);
}
