/* plan_cands.c — which trainer ranks hold each planner piece, and which
 * one the piece is read from (the plan stage, receiver.h).
 *
 * Sources with the same catalog (one cached object per content hash) and
 * the same trainer layout hold the same tensors at the same offsets: a
 * *class* (the data-parallel copies of one trainer position; a tp8·ep32
 * trainer on 256 GPUs has 32 classes of 8).  The target layout is composed
 * once per class, and a piece names the classes holding it with their
 * catalog tensors (a few entries), not every rank that holds it (a
 * Kimi-K2 plan: 70 k pieces, 560 k rank candidates).  A source is chosen
 * per piece among the members of its classes, and a source tensor (struct
 * rf_psrc) is made only for the tensors chosen.
 *
 * The result is exactly that of composing every source on its own
 * (refit.plan_dedupe: false, every source its own class; the reference
 * tests/engine/test_plan_dedupe.c compares with): a piece's candidates are
 * its classes' members merged in source order, each with its class's
 * entries, at most RF_MAX_CAND (expand()); the choice is the planner's
 * (least loaded, ties to the first, largest piece first) or, with
 * refit.replicas > 1, rf_sched_choose's.  Source tensors are numbered in
 * the order candidates are first met (what every candidate's psrc index
 * was when each had one); the chosen ones are kept in that order, and a
 * plan's digest names them by that number (rf_rplan.psrc_num).
 *
 * Memory: the candidates, the pieces and every temporary live in the
 * receiver's scratch arena (arena.h), gone when make_plan returns; only
 * the chosen source tensors (rf_rplan.psrc...) are malloc'ed. */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "../layout_int.h"
#include "../sched.h"
#include "receiver.h"

#define NO_NUM UINT32_MAX

/* One entry of a piece's candidates: catalog tensor ci of class k holds
 * the piece's rectangle (at the piece's src_row, src_col). */
struct cent {
    uint32_t k, ci;
};

struct rf_cands {
    /* classes */
    uint32_t *of;    /* per source: its class */
    uint32_t *rep;   /* per class: its first source */
    size_t n;
    uint32_t *first, *mem; /* per class: its members in source order, mem[first[k]..first[k+1]) */
    ptrdiff_t **cat_of;    /* per class, per tensor of its layout: catalog index (-1 absent, -2 not yet) */
    /* the piece being composed */
    size_t *at;    /* per class: its first candidate in the piece (SIZE_MAX: none) */
    ptrdiff_t *ci; /* per candidate of the piece: its catalog index (-1: absent) */
    size_t cap_ci;
    /* per piece (composition order): its entries ent[pat[i] .. pat[i+1]) */
    struct cent *ent;
    size_t n_ent, cap_ent;
    uint32_t *pat;
    /* expand(): per class group of a piece, its first entry, count and next member */
    uint32_t *g_at, *g_n, *g_next;
    /* per source, per catalog tensor: its number in the order first met */
    uint32_t **num_of;
    uint32_t n_num;
};

/* n items of size bytes from the scratch arena (zeroed by scalloc). */
static void *salloc(refit_receiver_t *r, size_t n, size_t size)
{
    return n <= SIZE_MAX / size ? rf_arena_alloc(r->scratch, (n ? n : 1) * size) : NULL;
}

static void *scalloc(refit_receiver_t *r, size_t n, size_t size)
{
    return rf_arena_calloc(r->scratch, n ? n : 1, size);
}

/* ------------------------------------------------------------------ */
/* Classes */

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

/* Members per class (CSR, in source order). */
static int members(refit_receiver_t *r, struct rf_cands *c, size_t n_src)
{
    c->first = scalloc(r, c->n + 1, sizeof(*c->first));
    c->mem = salloc(r, n_src, sizeof(*c->mem));
    uint32_t *fill = scalloc(r, c->n, sizeof(*fill));
    int rc = c->first && c->mem && fill ? 0 : REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < n_src; i++)
        c->first[c->of[i] + 1]++;
    for (size_t k = 0; !rc && k < c->n; k++)
        c->first[k + 1] += c->first[k];
    for (size_t i = 0; !rc && i < n_src; i++)
        c->mem[c->first[c->of[i]] + fill[c->of[i]]++] = (uint32_t)i;
    return rc;
}

static int classes_of(refit_receiver_t *r, struct rf_cands *c)
{
    size_t n = r->disc.n_src;
    c->of = salloc(r, n, sizeof(*c->of));
    c->rep = salloc(r, n, sizeof(*c->rep));
    c->at = salloc(r, n, sizeof(*c->at));
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
    int rc = members(r, c, r->disc.n_src);
    if (rc)
        return rc;
    c->cat_of = scalloc(r, c->n, sizeof(*c->cat_of));
    c->g_at = salloc(r, c->n, sizeof(*c->g_at));
    c->g_n = salloc(r, c->n, sizeof(*c->g_n));
    c->g_next = salloc(r, c->n, sizeof(*c->g_next));
    if (!c->cat_of || !c->g_at || !c->g_n || !c->g_next)
        return REFIT_ENOMEM;
    for (size_t k = 0; k < c->n; k++) {
        size_t nt = refit_layout_count(r->disc.src[c->rep[k]].meg);
        if (!(c->cat_of[k] = salloc(r, nt, sizeof(**c->cat_of))))
            return REFIT_ENOMEM;
        for (size_t t = 0; t < nt; t++)
            c->cat_of[k][t] = -2;
    }
    return 0;
}

/* Per source, per catalog tensor: not numbered yet. */
static int numbers_of(refit_receiver_t *r, struct rf_cands *c)
{
    c->num_of = scalloc(r, r->disc.n_src + 1, sizeof(*c->num_of));
    if (!c->num_of)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < r->disc.n_src; i++) {
        size_t nt = r->disc.src[i].cat->n_tensors;
        if (!(c->num_of[i] = salloc(r, nt, sizeof(**c->num_of))))
            return REFIT_ENOMEM;
        memset(c->num_of[i], 0xff, (nt ? nt : 1) * sizeof(**c->num_of));
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* A piece's candidates */

/* Piece i's candidates as composing every source on its own lists them:
 * the members of its classes merged in source order, each with its
 * class's entries, at most RF_MAX_CAND: si[j] the source, ci[j] its
 * catalog tensor.  Returns their count. */
static uint32_t expand(const struct rf_cands *c, size_t i, uint32_t *si, uint32_t *ci)
{
    const struct cent *e = &c->ent[c->pat[i]];
    size_t ne = c->pat[i + 1] - c->pat[i], ng = 0;
    for (size_t a = 0; a < ne;) {
        size_t b = a + 1;
        while (b < ne && e[b].k == e[a].k)
            b++;
        c->g_at[ng] = (uint32_t)a;
        c->g_n[ng] = (uint32_t)(b - a);
        c->g_next[ng++] = c->first[e[a].k];
        a = b;
    }
    uint32_t m = 0;
    while (m < RF_MAX_CAND) {
        size_t best = ng;
        for (size_t g = 0; g < ng; g++)
            if (c->g_next[g] < c->first[e[c->g_at[g]].k + 1] &&
                (best == ng || c->mem[c->g_next[g]] < c->mem[c->g_next[best]]))
                best = g;
        if (best == ng)
            break;
        uint32_t s = c->mem[c->g_next[best]++];
        for (uint32_t j = 0; j < c->g_n[best] && m < RF_MAX_CAND; j++, m++) {
            si[m] = s;
            ci[m] = e[c->g_at[best] + j].ci;
        }
    }
    return m;
}

/* Catalog index of every candidate of x (its class representative's
 * catalog is every member's), and where each class's candidates begin
 * (x->cand is sorted by class, then tensor). */
static int piece_classes(refit_receiver_t *r, struct rf_cands *c, const struct refit_layout_xpiece *x,
                         const refit_layout_t **meg)
{
    if (x->n_cand > c->cap_ci) {
        size_t cap = x->n_cand > 2 * c->cap_ci ? x->n_cand : 2 * c->cap_ci;
        ptrdiff_t *nc = salloc(r, cap, sizeof(*nc)); /* the old one was only this piece's */
        if (!nc)
            return REFIT_ENOMEM;
        c->ci = nc;
        c->cap_ci = cap;
    }
    for (size_t k = 0; k < x->n_cand; k++) {
        const struct refit_layout_cand *cd = &x->cand[k];
        ptrdiff_t *ci = &c->cat_of[cd->rank][cd->tensor];
        if (*ci == -2) {
            /* Catalogs usually list a rank's tensors in its layout's order
             * (dry catalogs always do): try that place before the hash. */
            const refit_catalog_t *cat = r->disc.src[c->rep[cd->rank]].cat;
            const char *name = refit_layout_at(meg[cd->rank], cd->tensor)->name;
            *ci = cd->tensor < cat->n_tensors && !strcmp(cat->tensors[cd->tensor].name, name)
                      ? (ptrdiff_t)cd->tensor
                      : refit_catalog_find(cat, name);
        }
        c->ci[k] = *ci;
    }
    return 0;
}

/* c->ent has room for every candidate of the composition (rf_cands_pieces). */
static void push_ent(struct rf_cands *c, uint32_t k, uint32_t ci)
{
    c->ent[c->n_ent++] = (struct cent){k, ci};
}

/* The entries of x: per class (in class order), the candidates its
 * sources publish at the placement of the first one published (same
 * bytes elsewhere in that rank's tensor: one placement suffices).  The
 * first is that of the class whose first member comes first. */
static int piece_entries(refit_receiver_t *r, struct rf_cands *c, const struct refit_layout_xpiece *x,
                         const refit_layout_t **meg, struct rf_piece *p)
{
    int rc = piece_classes(r, c, x, meg);
    size_t lead = SIZE_MAX;
    for (size_t k = 0; !rc && k < x->n_cand; k++)
        if (c->ci[k] >= 0 && (lead == SIZE_MAX || c->mem[c->first[x->cand[k].rank]] <
                                                      c->mem[c->first[x->cand[lead].rank]]))
            lead = k;
    if (rc || lead == SIZE_MAX)
        return rc;
    p->src_row = (uint64_t)x->cand[lead].src_row;
    p->src_col = (uint64_t)x->cand[lead].src_col;
    for (size_t k = 0; k < x->n_cand; k++)
        if (c->ci[k] >= 0 && x->cand[k].src_row == x->cand[lead].src_row &&
            x->cand[k].src_col == x->cand[lead].src_col)
            push_ent(c, x->cand[k].rank, (uint32_t)c->ci[k]);
    return 0;
}

/* Image dtype of piece i's destination: its first candidate's, which all
 * pieces of the tensor must agree on. */
static int note_dtype(refit_receiver_t *r, const struct rf_piece *p, uint32_t si, uint32_t ci)
{
    enum refit_dtype dt = (enum refit_dtype)r->disc.src[si].cat->tensors[ci].dtype;
    enum refit_dtype *img = &r->plan.img_dtype[p->dst];
    if (*img == REFIT_DTYPE_INVALID)
        *img = dt;
    else if (*img != dt)
        return refit_error_set(REFIT_EPROTO, "'%s': its sources differ in dtype (%s and %s)",
                               rf_rplan_dst_name(r, p->dst), refit_dtype_name(*img), refit_dtype_name(dt));
    return 0;
}

/* Piece i's candidates numbered where first met. */
static void number(struct rf_cands *c, size_t i, uint32_t *si, uint32_t *ci)
{
    uint32_t m = expand(c, i, si, ci);
    for (uint32_t j = 0; j < m; j++) {
        uint32_t *v = &c->num_of[si[j]][ci[j]];
        if (*v == NO_NUM)
            *v = c->n_num++;
    }
}

/* One composed piece; *kept 0 when no candidate's source publishes it (a
 * gap the planner reports). */
static int piece_of(refit_receiver_t *r, struct rf_cands *c, const struct refit_layout_xpiece *x,
                    const refit_layout_t **meg, struct rf_piece *p, size_t i, int *kept)
{
    uint64_t rows, cols, slot;
    rf_layout_dims(refit_layout_at(r->lay, x->dst), &rows, &cols, &slot);
    *p = (struct rf_piece){.dst = x->dst, .rows = (uint64_t)x->rows, .cols = (uint64_t)x->cols,
                           .dst_row = (uint64_t)x->dst_index * slot + (uint64_t)x->dst_row,
                           .dst_col = (uint64_t)x->dst_col};
    size_t e0 = c->n_ent;
    int rc = piece_entries(r, c, x, meg, p);
    *kept = !rc && c->n_ent > e0;
    if (!*kept)
        return rc;
    c->pat[i + 1] = (uint32_t)c->n_ent;
    uint32_t si[RF_MAX_CAND], ci[RF_MAX_CAND];
    number(c, i, si, ci);
    return note_dtype(r, p, si[0], ci[0]);
}

/* Room for every candidate of the composition: a piece keeps at most
 * its own. */
static int reserve_ent(refit_receiver_t *r, struct rf_cands *c, const refit_layout_xmap_t *xm, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += refit_layout_xmap_at(xm, i)->n_cand;
    if (total >= UINT32_MAX)
        return refit_error_set(REFIT_ERANGE, "plan: %zu candidate entries", total);
    c->ent = salloc(r, total, sizeof(*c->ent));
    c->cap_ent = total;
    return c->ent ? 0 : REFIT_ENOMEM;
}

int rf_cands_pieces(refit_receiver_t *r, struct rf_piece **out, size_t *n_out, struct rf_cands **cs)
{
    struct rf_cands *c = scalloc(r, 1, sizeof(*c));
    int rc = c ? classes_of(r, c) : REFIT_ENOMEM;
    if (!rc)
        rc = numbers_of(r, c);
    const refit_layout_t **meg = rc ? NULL : salloc(r, c->n, sizeof(*meg));
    if (!rc && !meg)
        rc = REFIT_ENOMEM;
    for (size_t k = 0; !rc && k < c->n; k++)
        meg[k] = r->disc.src[c->rep[k]].meg;
    refit_layout_xmap_t *xm = NULL;
    if (!rc)
        rc = rf_layout_compose_in(r->lay, meg, c->n, r->scratch, &xm);
    size_t n = rc ? 0 : refit_layout_xmap_count(xm), m = 0;
    if (!rc && n >= UINT32_MAX)
        rc = refit_error_set(REFIT_ERANGE, "plan: %zu composed pieces", n);
    if (!rc)
        rc = reserve_ent(r, c, xm, n);
    struct rf_piece *pc = rc ? NULL : salloc(r, n, sizeof(*pc));
    if (!rc && (!pc || !(c->pat = scalloc(r, n + 1, sizeof(*c->pat)))))
        rc = REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < n; i++) {
        int kept = 0;
        rc = piece_of(r, c, refit_layout_xmap_at(xm, i), meg, &pc[m], m, &kept);
        m += kept;
    }
    refit_layout_xmap_destroy(xm);
    if (rc)
        return rc;
    *out = pc;
    *n_out = m;
    *cs = c;
    return 0;
}

/* ------------------------------------------------------------------ */
/* The choice */

static uint32_t esize_of(const refit_receiver_t *r, uint32_t si, uint32_t ci)
{
    return (uint32_t)refit_dtype_size(r->disc.src[si].cat->tensors[ci].dtype);
}

/* The planner's own choice: largest piece first, the least-loaded
 * candidate, ties to the first (plan.c's choose_candidates). */
static void choose_naive(const refit_receiver_t *r, struct rf_cands *c, const struct rf_piece *pc,
                         const uint32_t *order, size_t n, uint64_t *load, uint32_t *ch_si, uint32_t *ch_ci)
{
    uint32_t si[RF_MAX_CAND], ci[RF_MAX_CAND];
    for (size_t k = 0; k < n; k++) {
        size_t i = order[k];
        uint32_t m = expand(c, i, si, ci), best = 0;
        for (uint32_t j = 1; j < m; j++)
            if (load[si[j]] < load[si[best]])
                best = j;
        ch_si[i] = si[best];
        ch_ci[i] = ci[best];
        load[si[best]] += pc[i].rows * pc[i].cols * esize_of(r, si[best], ci[best]);
    }
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

/* With refit.replicas > 1: the engines of one layout choose together
 * (rf_sched_choose, RF_SCHED_SPREAD), items in the planner's order. */
static int choose_spread(refit_receiver_t *r, struct rf_cands *c, const struct rf_piece *pc, const uint32_t *order,
                         size_t n, uint32_t *ch_si, uint32_t *ch_ci)
{
    struct rf_sched_item *it = scalloc(r, n, sizeof(*it));
    uint32_t *choice = scalloc(r, n, sizeof(*choice));
    size_t *at = salloc(r, n + 1, sizeof(*at));
    uint32_t *psi = NULL, *pci = NULL, si[RF_MAX_CAND], ci[RF_MAX_CAND];
    int rc = it && choice && at ? 0 : REFIT_ENOMEM;
    /* every piece's candidates, in one pool */
    size_t total = 0;
    for (size_t k = 0; !rc && k < n; k++) {
        at[k] = total;
        total += expand(c, order[k], si, ci);
    }
    if (!rc && (!(psi = salloc(r, total, sizeof(*psi))) || !(pci = salloc(r, total, sizeof(*pci)))))
        rc = REFIT_ENOMEM;
    for (size_t k = 0; !rc && k < n; k++) {
        size_t i = order[k];
        uint32_t m = expand(c, i, &psi[at[k]], &pci[at[k]]);
        it[k] = (struct rf_sched_item){m, &psi[at[k]], pc[i].rows * pc[i].cols * esize_of(r, psi[at[k]], pci[at[k]])};
    }
    struct rf_sched_who who = who_am_i(r);
    if (!rc)
        rc = rf_sched_choose(it, n, (uint32_t)r->disc.n_src, RF_SCHED_SPREAD, &who, choice, NULL);
    for (size_t k = 0; !rc && k < n; k++) {
        ch_si[order[k]] = psi[at[k] + choice[k]];
        ch_ci[order[k]] = pci[at[k] + choice[k]];
    }
    return rc ? refit_error_push(rc, "choosing sources as engine %u of %u", who.replica, who.n_replicas) : 0;
}

/* The chosen source tensors, in the order they were numbered: pc[i].psrc
 * their index, rf_rplan.psrc_num[index] their number. */
static int chosen_psrc(refit_receiver_t *r, struct rf_cands *c, struct rf_piece *pc, size_t n, const uint32_t *ch_si,
                       const uint32_t *ch_ci)
{
    struct rf_rplan *p = &r->plan;
    size_t nw = c->n_num / 64 + 1;
    uint64_t *bit = scalloc(r, nw, sizeof(*bit));
    uint32_t *below = salloc(r, nw, sizeof(*below)); /* chosen numbers in the words before */
    int rc = bit && below ? 0 : REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < n; i++) {
        uint32_t v = c->num_of[ch_si[i]][ch_ci[i]];
        bit[v / 64] |= (uint64_t)1 << (v % 64);
    }
    size_t np = 0;
    for (size_t w = 0; !rc && w < nw; w++) {
        below[w] = (uint32_t)np;
        np += (size_t)__builtin_popcountll(bit[w]);
    }
    if (!rc) {
        p->psrc = malloc((np ? np : 1) * sizeof(*p->psrc));
        p->psrc_source = malloc((np ? np : 1) * sizeof(*p->psrc_source));
        p->psrc_cat = malloc((np ? np : 1) * sizeof(*p->psrc_cat));
        p->psrc_num = malloc((np ? np : 1) * sizeof(*p->psrc_num));
        if (!p->psrc || !p->psrc_source || !p->psrc_cat || !p->psrc_num)
            rc = REFIT_ENOMEM;
    }
    for (size_t i = 0; !rc && i < n; i++) {
        uint32_t si = ch_si[i], ci = ch_ci[i], v = c->num_of[si][ci];
        uint32_t at = below[v / 64] + (uint32_t)__builtin_popcountll(bit[v / 64] & (((uint64_t)1 << (v % 64)) - 1));
        const struct refit_cat_tensor *ct = &r->disc.src[si].cat->tensors[ci];
        uint64_t cols = ct->ndim >= 2 ? ct->shape[ct->ndim - 1] : 1;
        uint64_t es = refit_dtype_size(ct->dtype);
        uint64_t rows = cols && es ? ct->nbytes / (cols * es) : 0;
        p->psrc[at] = (struct rf_psrc){si, ct->region, ct->offset, rows, cols, (uint32_t)es, ct->chunk_rows};
        p->psrc_source[at] = si;
        p->psrc_cat[at] = ci;
        p->psrc_num[at] = v;
        pc[i].psrc = at;
        pc[i].ncand = 0;
    }
    p->n_psrc = np;
    return rc;
}

int rf_cands_choose(refit_receiver_t *r, struct rf_cands *c, struct rf_piece *pc, size_t n)
{
    uint32_t *order = salloc(r, n, sizeof(*order));
    uint32_t *ch_si = salloc(r, n, sizeof(*ch_si)), *ch_ci = salloc(r, n, sizeof(*ch_ci));
    uint64_t *load = scalloc(r, r->disc.n_src, sizeof(*load));
    void *keys = salloc(r, rf_plan_order_scratch(n), 1);
    int rc = order && ch_si && ch_ci && load && keys ? 0 : REFIT_ENOMEM;
    if (!rc)
        rc = rf_plan_order_in(pc, n, order, keys);
    if (!rc && r->ctx->replicas > 1)
        rc = choose_spread(r, c, pc, order, n, ch_si, ch_ci);
    else if (!rc)
        choose_naive(r, c, pc, order, n, load, ch_si, ch_ci);
    if (!rc)
        rc = chosen_psrc(r, c, pc, n, ch_si, ch_ci);
    r->plan.order = rc ? NULL : order; /* rf_plan_build's, spared a second sort */
    return rc;
}
