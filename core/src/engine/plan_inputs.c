/* plan_inputs.c — the plan stage of a pull (receiver.h): what the planner
 * (plan.c) is given and what the transfer needs from its output.
 *
 * Inputs: the target layout composed with every source's Megatron layout
 * gives pieces, rectangles of destination tensors, each read from one
 * source tensor chosen among those that hold it (plan_cands.c), a catalog
 * tensor seen as a 2-D matrix (struct rf_psrc); each destination an image
 * in its sources' dtype, in staging or (when converted) in scratch.
 * Outputs kept beside the plan: per descriptor the tensors it feeds and
 * per tensor its scatters (so a tensor is converted the moment its last
 * byte lands), and the checksum checks sorted by where they lie. */
#include <stdlib.h>
#include <string.h>

#include "receiver.h"

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
    free(p->psrc);
    free(p->psrc_num);
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

int rf_rplan_inputs(refit_receiver_t *r, struct rf_piece **pc, size_t *n_pc)
{
    struct rf_rplan *p = &r->plan;
    size_t nl = refit_layout_count(r->lay);
    p->pdst = calloc(nl ? nl : 1, sizeof(*p->pdst));
    p->img_dtype = calloc(nl ? nl : 1, sizeof(*p->img_dtype));
    if (!p->pdst || !p->img_dtype)
        return REFIT_ENOMEM;
    /* Image dtype per tensor: its sources' (rf_cands_pieces); where no
     * source says, the destination's (bf16 for FP8). */
    int rc = rf_cands_pieces(r, pc, n_pc, &p->cands);
    for (size_t t = 0; !rc && t < nl; t++) {
        const struct rf_dst *d = &r->dests.d[r->dests.dst_of_lt[t]];
        if (p->img_dtype[t] == REFIT_DTYPE_INVALID)
            p->img_dtype[t] = d->dtype == REFIT_DTYPE_F8_E4M3 ? REFIT_DTYPE_BF16 : d->dtype;
    }
    return rc;
}

int rf_rplan_choose(refit_receiver_t *r, struct rf_piece *pc, size_t n)
{
    int rc = rf_cands_choose(r, r->plan.cands, pc, n);
    r->plan.cands = NULL; /* the scratch arena's */
    return rc;
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
                              .verify = r->ctx->verify != RF_VERIFY_OFF, .order = p->order};
    p->order = NULL; /* used up */
    p->n_pieces = n_pc;
    int rc = rf_plan_build(p->psrc, p->n_psrc, p->pdst, refit_layout_count(r->lay), pc, n_pc, NULL, 0,
                           (uint32_t)r->disc.n_src, &po, rf_rplan_dst_name, r, &p->plan);
    return rc ? rc : build_feeds(r);
}
