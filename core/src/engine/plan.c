/* plan.c — the resharding planner: pieces → descriptors, scatters, checks. */
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "refit/status.h"

/* A growable array of fixed-size items. */
struct vec {
    void *p;
    size_t n, cap, isz;
};

static void *vec_push(struct vec *v)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 64;
        void *np = realloc(v->p, nc * v->isz);
        if (!np)
            return NULL;
        v->p = np;
        v->cap = nc;
    }
    void *slot = (char *)v->p + v->n * v->isz;
    memset(slot, 0, v->isz);
    v->n++;
    return slot;
}

/* Room for n items at once: the planner knows its arrays' sizes to within
 * a small factor of the piece count, and growing them by doubling copied
 * (and faulted in) each one twice. */
static int vec_reserve(struct vec *v, size_t n)
{
    if (n <= v->cap)
        return 0;
    void *np = realloc(v->p, n * v->isz);
    if (!np)
        return REFIT_ENOMEM;
    v->p = np;
    v->cap = n;
    return 0;
}

/* Rows [a, b) of one source tensor pulled whole into scratch. */
struct span {
    uint32_t psrc;
    uint64_t a, b;
    uint64_t scratch_off;
};

static int cmp_span(const void *x, const void *y)
{
    const struct span *p = x, *q = y;
    if (p->psrc != q->psrc)
        return p->psrc < q->psrc ? -1 : 1;
    if (p->a != q->a)
        return p->a < q->a ? -1 : 1;
    return (p->b > q->b) - (p->b < q->b);
}

static int cmp_desc(const void *x, const void *y)
{
    const struct rf_desc *p = x, *q = y;
    if (p->source != q->source)
        return p->source < q->source ? -1 : 1;
    if (p->region != q->region)
        return p->region < q->region ? -1 : 1;
    return (p->remote_off > q->remote_off) - (p->remote_off < q->remote_off);
}

static int cmp_piece_dst(const void *x, const void *y)
{
    const struct rf_piece *p = x, *q = y;
    if (p->dst != q->dst)
        return p->dst < q->dst ? -1 : 1;
    if (p->dst_row != q->dst_row)
        return p->dst_row < q->dst_row ? -1 : 1;
    return (p->dst_col > q->dst_col) - (p->dst_col < q->dst_col);
}

static const char *name_of(const char *(*dst_name)(void *, uint32_t), void *arg, uint32_t d)
{
    const char *n = dst_name ? dst_name(arg, d) : NULL;
    return n ? n : "?";
}

/* Source tensor ps can serve piece p (index i) of image d. */
static int src_fits(const struct rf_psrc *src, size_t n_src, const struct rf_pdst *d, const struct rf_piece *p,
                    uint32_t ps, size_t i, const char *(*dst_name)(void *, uint32_t), void *arg)
{
    if (ps >= n_src)
        return refit_error_set(REFIT_EINVAL, "plan: piece %zu: source tensor %u of %zu", i, ps, n_src);
    const struct rf_psrc *s = &src[ps];
    if (s->esize != d->esize || p->src_row + p->rows > s->rows || p->src_col + p->cols > s->cols)
        return refit_error_set(REFIT_ERANGE,
                               "plan: destination '%s': piece reads rows %llu+%llu cols "
                               "%llu+%llu of a source tensor [%llu x %llu] (esize %u vs %u)",
                               name_of(dst_name, arg, p->dst), (unsigned long long)p->src_row,
                               (unsigned long long)p->rows, (unsigned long long)p->src_col,
                               (unsigned long long)p->cols, (unsigned long long)s->rows,
                               (unsigned long long)s->cols, s->esize, d->esize);
    return 0;
}

/* Every piece in bounds, every image covered exactly once. */
static int check_coverage(const struct rf_psrc *src, size_t n_src, const struct rf_pdst *dst,
                          size_t n_dst, struct rf_piece *pc, size_t n, const uint32_t *cands, size_t n_cands,
                          const char *(*dst_name)(void *, uint32_t), void *arg, int *sorted)
{
    for (size_t i = 0; i < n; i++) {
        const struct rf_piece *p = &pc[i];
        if (p->dst >= n_dst || p->ncand > RF_MAX_CAND ||
            (p->ncand && (!cands || (uint64_t)p->cand + p->ncand > n_cands)))
            return refit_error_set(REFIT_EINVAL, "plan: piece %zu: bad destination or candidates", i);
        const struct rf_pdst *d = &dst[p->dst];
        if (p->rows == 0 || p->cols == 0 || p->dst_row + p->rows > d->rows ||
            p->dst_col + p->cols > d->cols)
            return refit_error_set(REFIT_ERANGE,
                                   "plan: destination '%s' [%llu x %llu]: piece rows %llu+%llu cols "
                                   "%llu+%llu out of bounds",
                                   name_of(dst_name, arg, p->dst), (unsigned long long)d->rows,
                                   (unsigned long long)d->cols, (unsigned long long)p->dst_row,
                                   (unsigned long long)p->rows, (unsigned long long)p->dst_col,
                                   (unsigned long long)p->cols);
        int rc = p->ncand ? 0 : src_fits(src, n_src, d, p, p->psrc, i, dst_name, arg);
        for (uint32_t c = 0; !rc && c < p->ncand; c++)
            rc = src_fits(src, n_src, d, p, cands[p->cand + c], i, dst_name, arg);
        if (rc)
            return rc;
    }
    /* Composed pieces usually come in this order already: a pass is
     * cheaper than sorting the pieces. */
    size_t k = 1;
    while (k < n && cmp_piece_dst(&pc[k - 1], &pc[k]) < 0)
        k++;
    if (k < n)
        qsort(pc, n, sizeof(*pc), cmp_piece_dst);
    *sorted = k < n;
    size_t i = 0;
    for (uint32_t dd = 0; dd < n_dst; dd++) {
        uint64_t area = 0;
        size_t start = i;
        while (i < n && pc[i].dst == dd) {
            area += pc[i].rows * pc[i].cols;
            i++;
        }
        for (size_t a = start; a < i; a++)
            for (size_t b = a + 1; b < i && pc[b].dst_row < pc[a].dst_row + pc[a].rows; b++)
                if (pc[b].dst_col < pc[a].dst_col + pc[a].cols && pc[a].dst_col < pc[b].dst_col + pc[b].cols)
                    return refit_error_set(REFIT_EPROTO,
                                           "plan: destination '%s': rows %llu.. cols %llu.. are "
                                           "covered twice",
                                           name_of(dst_name, arg, dd), (unsigned long long)pc[b].dst_row,
                                           (unsigned long long)pc[b].dst_col);
        uint64_t want = dst[dd].covered ? dst[dd].covered : dst[dd].rows * dst[dd].cols;
        if (area != want)
            return refit_error_set(REFIT_ENOENT,
                                   "plan: destination '%s': %llu of %llu elements have a source "
                                   "(a source is missing or stale)",
                                   name_of(dst_name, arg, dd), (unsigned long long)area,
                                   (unsigned long long)want);
    }
    return 0;
}

/* A piece's place in the planner's order (rf_plan_order), compact:
 * sorting these and moving each piece once is much cheaper than sorting
 * the pieces themselves (a Kimi-K2 plan has 70,000 of 64 bytes). */
struct pkey {
    uint64_t size, row, col;
    uint32_t dst, idx;
};

static int cmp_pkey(const void *x, const void *y)
{
    const struct pkey *p = x, *q = y;
    if (p->size != q->size)
        return p->size > q->size ? -1 : 1;
    if (p->dst != q->dst)
        return p->dst < q->dst ? -1 : 1;
    if (p->row != q->row)
        return p->row < q->row ? -1 : 1;
    return (p->col > q->col) - (p->col < q->col);
}

/* Runs of w keys of a merged pairwise from a into b (stable: a tie
 * keeps the left run's first, as qsort's merge sort does). */
static void merge_pass(const struct pkey *a, struct pkey *b, size_t n, size_t w)
{
    for (size_t lo = 0; lo < n; lo += 2 * w) {
        size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
        size_t i = lo, j = mid, o = lo;
        while (i < mid && j < hi)
            b[o++] = cmp_pkey(&a[j], &a[i]) < 0 ? a[j++] : a[i++];
        while (i < mid)
            b[o++] = a[i++];
        while (j < hi)
            b[o++] = a[j++];
    }
}

size_t rf_plan_order_scratch(size_t n)
{
    return 2 * (n ? n : 1) * sizeof(struct pkey);
}

int rf_plan_order_in(const struct rf_piece *pc, size_t n, uint32_t *order, void *scratch)
{
    if (n > UINT32_MAX)
        return refit_error_set(REFIT_ERANGE, "plan: %zu pieces", n);
    struct pkey *a = scratch, *b = a + (n ? n : 1);
    for (size_t i = 0; i < n; i++)
        a[i] = (struct pkey){pc[i].rows * pc[i].cols, pc[i].dst_row, pc[i].dst_col, pc[i].dst, (uint32_t)i};
    /* bottom-up merge sort between the two halves of scratch: no memory
     * of its own (qsort's copy was fresh pages on every plan) */
    for (size_t w = 1; w < n; w *= 2) {
        merge_pass(a, b, n, w);
        struct pkey *t = a;
        a = b;
        b = t;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = a[i].idx;
    return 0;
}

int rf_plan_order(const struct rf_piece *pc, size_t n, uint32_t *order)
{
    if (n > UINT32_MAX)
        return refit_error_set(REFIT_ERANGE, "plan: %zu pieces", n);
    void *scratch = malloc(rf_plan_order_scratch(n));
    if (!scratch)
        return REFIT_ENOMEM;
    int rc = rf_plan_order_in(pc, n, order, scratch);
    free(scratch);
    return rc;
}

/* Put pc in the order `order` gives (position i takes piece order[i], as
 * rf_plan_order fills it); order is used up. */
static void permute(struct rf_piece *pc, size_t n, uint32_t *order)
{
    /* Position i takes piece order[i]: follow each cycle of the permutation
     * with one piece in hand (order[i] = i marks a place filled). */
    for (size_t i = 0; i < n; i++) {
        if (order[i] == i)
            continue;
        struct rf_piece hold = pc[i];
        size_t at = i;
        while (order[at] != i) {
            size_t from = order[at];
            pc[at] = pc[from];
            order[at] = (uint32_t)at;
            at = from;
        }
        pc[at] = hold;
        order[at] = (uint32_t)at;
    }
}

/* pc in the planner's order, by `given` (rf_plan_order of pc as it is;
 * NULL: sorted here).  Pieces are disjoint (checked), so the order is
 * total and the result is the one qsort of the pieces gives. */
static int sort_size_desc(struct rf_piece *pc, size_t n, uint32_t *given)
{
    uint32_t *order = given ? given : malloc((n ? n : 1) * sizeof(*order));
    if (!order)
        return REFIT_ENOMEM;
    int rc = given ? 0 : rf_plan_order(pc, n, order);
    if (!rc)
        permute(pc, n, order);
    if (!given)
        free(order);
    return rc;
}

/* Pieces with alternatives go to the least-loaded source holding them
 * (ties to the first), largest piece first. */
static int choose_candidates(const struct rf_psrc *src, struct rf_piece *pc, size_t n, const uint32_t *cands,
                             uint64_t *load, uint32_t n_sources, uint32_t *order)
{
    int rc = sort_size_desc(pc, n, order);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++) {
        struct rf_piece *p = &pc[i];
        if (p->ncand) {
            const uint32_t *cd = &cands[p->cand];
            uint32_t best = 0;
            for (uint32_t c = 1; c < p->ncand; c++) {
                uint32_t sb = src[cd[best]].source, sc = src[cd[c]].source;
                if (sc < n_sources && (sb >= n_sources || load[sc] < load[sb]))
                    best = c;
            }
            p->psrc = cd[best];
            p->ncand = 0;
        }
        uint32_t s = src[p->psrc].source;
        if (s < n_sources)
            load[s] += p->rows * p->cols * src[p->psrc].esize;
    }
    return 0;
}

static uint64_t round_down(uint64_t v, uint64_t m)
{
    return m ? v / m * m : v;
}

static uint64_t round_up(uint64_t v, uint64_t m, uint64_t cap)
{
    if (!m)
        return v;
    uint64_t r = (v + m - 1) / m * m;
    return r > cap ? cap : r;
}

static int add_span(struct vec *spans, uint32_t psrc, uint64_t a, uint64_t b)
{
    struct span *s = vec_push(spans);
    if (!s)
        return REFIT_ENOMEM;
    s->psrc = psrc;
    s->a = a;
    s->b = b;
    return 0;
}

/* The merged span holding rows [a, b) of psrc (spans sorted, merged). */
static const struct span *find_span(const struct vec *spans, uint32_t psrc, uint64_t a, uint64_t b)
{
    const struct span *s = spans->p;
    size_t lo = 0, hi = spans->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s[mid].psrc < psrc || (s[mid].psrc == psrc && s[mid].b <= a))
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < spans->n && s[lo].psrc == psrc && s[lo].a <= a && b <= s[lo].b)
        return &s[lo];
    return NULL;
}

static int add_checks(struct vec *checks, const struct rf_psrc *src, uint32_t ps, uint64_t a,
                      uint64_t b, uint32_t buf, uint64_t off)
{
    /* [a, b) is chunk aligned at a, and at b unless b is the last row: one
     * entry for the whole run of chunks. */
    const struct rf_psrc *s = &src[ps];
    if (b <= a)
        return 0;
    struct rf_check *c = vec_push(checks);
    if (!c)
        return REFIT_ENOMEM;
    c->psrc = ps;
    c->chunk = a / s->chunk_rows;
    c->count = (uint32_t)((b - a + s->chunk_rows - 1) / s->chunk_rows);
    c->buf = buf;
    c->off = off;
    c->len = (b - a) * s->cols * s->esize;
    return 0;
}

int rf_plan_build(const struct rf_psrc *src, size_t n_src, struct rf_pdst *dst, size_t n_dst,
                  struct rf_piece *pc, size_t n, const uint32_t *cands, size_t n_cands, uint32_t n_sources,
                  const struct rf_plan_opts *opts,
                  const char *(*dst_name)(void *, uint32_t), void *arg, struct rf_plan *out)
{
    memset(out, 0, sizeof(*out));
    int sorted = 0;
    int rc = check_coverage(src, n_src, dst, n_dst, pc, n, cands, n_cands, dst_name, arg, &sorted);
    if (rc)
        return rc;
    out->n_sources = n_sources;
    out->bytes_per_source = calloc(n_sources ? n_sources : 1, sizeof(uint64_t));
    uint64_t *load = calloc(n_sources ? n_sources : 1, sizeof(uint64_t));
    struct vec descs = {.isz = sizeof(struct rf_desc)}, spans = {.isz = sizeof(struct span)},
               scat = {.isz = sizeof(struct rf_scatter)}, checks = {.isz = sizeof(struct rf_check)};
    uint8_t *direct = NULL;
    /* at most two spans per piece, a descriptor per span and per direct
     * piece, two scatters per piece, a check per descriptor: sized for the
     * common case (one of each per piece), doubling past it */
    if (vec_reserve(&descs, n + 1) || vec_reserve(&spans, n + 1) || vec_reserve(&scat, n / 2 + 1) ||
        vec_reserve(&checks, n + 1))
        rc = REFIT_ENOMEM;
    if (rc || !out->bytes_per_source || !load) {
        rc = REFIT_ENOMEM;
        goto fail;
    }
    /* the caller's order holds for the pieces as given, not once resorted */
    if ((rc = choose_candidates(src, pc, n, cands, load, n_sources, sorted ? NULL : opts->order)))
        goto fail;

    /* Images converted after the pull live in scratch, first. */
    uint64_t scratch = 0;
    for (size_t d = 0; d < n_dst; d++)
        if (dst[d].in_scratch) {
            dst[d].offset = scratch;
            scratch += (dst[d].rows * dst[d].cols * dst[d].esize + 63) & ~(uint64_t)63;
        }

    /* Classify: a piece of whole rows on both sides that is long enough
     * lands directly (its chunk-aligned middle, when verifying); the rest
     * is fetched as whole source rows into scratch. */
    direct = calloc(n ? n : 1, 1);
    if (!direct) {
        rc = REFIT_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const struct rf_piece *p = &pc[i];
        const struct rf_psrc *s = &src[p->psrc];
        const struct rf_pdst *d = &dst[p->dst];
        uint64_t r0 = p->src_row, r1 = p->src_row + p->rows;
        int whole_rows = p->cols == s->cols && p->cols == d->cols;
        uint64_t m0 = r0, m1 = r1;
        if (opts->verify && s->chunk_rows) {
            m0 = round_up(r0, s->chunk_rows, r1);
            m1 = r1 == s->rows ? r1 : round_down(r1, s->chunk_rows);
            if (m1 < m0)
                m1 = m0;
        }
        uint64_t mid_bytes = (m1 - m0) * s->cols * s->esize;
        if (whole_rows && m1 > m0 && mid_bytes >= opts->scatter_threshold) {
            direct[i] = 1;
            if (m0 > r0 && (rc = add_span(&spans, p->psrc, r0, m0)))
                goto fail;
            if (r1 > m1 && (rc = add_span(&spans, p->psrc, m1, r1)))
                goto fail;
        } else if ((rc = add_span(&spans, p->psrc, r0, r1))) {
            goto fail;
        }
    }

    /* Scratch spans: extend to chunk boundaries when verifying, merge. */
    struct span *sp = spans.p;
    for (size_t i = 0; i < spans.n; i++) {
        const struct rf_psrc *s = &src[sp[i].psrc];
        if (opts->verify && s->chunk_rows) {
            sp[i].a = round_down(sp[i].a, s->chunk_rows);
            sp[i].b = round_up(sp[i].b, s->chunk_rows, s->rows);
        }
    }
    if (spans.n)
        qsort(sp, spans.n, sizeof(*sp), cmp_span);
    size_t m = 0;
    for (size_t i = 0; i < spans.n; i++) {
        if (m && sp[m - 1].psrc == sp[i].psrc && sp[i].a <= sp[m - 1].b) {
            if (sp[i].b > sp[m - 1].b)
                sp[m - 1].b = sp[i].b;
        } else {
            sp[m++] = sp[i];
        }
    }
    spans.n = m;
    for (size_t i = 0; i < spans.n; i++) {
        const struct rf_psrc *s = &src[sp[i].psrc];
        uint64_t rb = s->cols * s->esize, len = (sp[i].b - sp[i].a) * rb;
        sp[i].scratch_off = scratch;
        scratch += (len + 63) & ~(uint64_t)63;
        struct rf_desc *d = vec_push(&descs);
        if (!d) {
            rc = REFIT_ENOMEM;
            goto fail;
        }
        *d = (struct rf_desc){s->source, s->region, s->offset + sp[i].a * rb, RF_BUF_SCRATCH,
                              sp[i].scratch_off, len};
        if (opts->verify && s->chunk_rows &&
            (rc = add_checks(&checks, src, sp[i].psrc, sp[i].a, sp[i].b, RF_BUF_SCRATCH, sp[i].scratch_off)))
            goto fail;
    }

    /* Direct descriptors and scatters. */
    for (size_t i = 0; i < n; i++) {
        const struct rf_piece *p = &pc[i];
        const struct rf_psrc *s = &src[p->psrc];
        const struct rf_pdst *dd = &dst[p->dst];
        uint64_t es = s->esize, srb = s->cols * es, drb = dd->cols * es;
        uint32_t ibuf = dd->in_scratch ? RF_BUF_SCRATCH : RF_BUF_STAGING;
        uint64_t r0 = p->src_row, r1 = p->src_row + p->rows, m0 = r0, m1 = r1;
        if (direct[i]) {
            if (opts->verify && s->chunk_rows) {
                m0 = round_up(r0, s->chunk_rows, r1);
                m1 = r1 == s->rows ? r1 : round_down(r1, s->chunk_rows);
            }
            uint64_t local = dd->offset + (p->dst_row + (m0 - r0)) * drb;
            struct rf_desc *d = vec_push(&descs);
            if (!d) {
                rc = REFIT_ENOMEM;
                goto fail;
            }
            *d = (struct rf_desc){s->source, s->region, s->offset + m0 * srb, ibuf, local, (m1 - m0) * srb};
            if (opts->verify && s->chunk_rows &&
                (rc = add_checks(&checks, src, p->psrc, m0, m1, ibuf, local)))
                goto fail;
        }
        /* Rows not landed directly come from scratch. */
        uint64_t ranges[2][2] = {{r0, m0}, {m1, r1}};
        int nr = 2;
        if (!direct[i]) {
            ranges[0][0] = r0;
            ranges[0][1] = r1;
            nr = 1;
        }
        for (int k = 0; k < nr; k++) {
            uint64_t a = ranges[k][0], b = ranges[k][1];
            if (b <= a)
                continue;
            const struct span *spn = find_span(&spans, p->psrc, a, b);
            if (!spn) {
                rc = refit_error_set(REFIT_EPROTO, "plan: internal: no scratch span for '%s'",
                                     name_of(dst_name, arg, p->dst));
                goto fail;
            }
            struct rf_scatter *sc = vec_push(&scat);
            if (!sc) {
                rc = REFIT_ENOMEM;
                goto fail;
            }
            sc->dst = p->dst;
            sc->from = spn->scratch_off + (a - spn->a) * srb + p->src_col * es;
            sc->from_pitch = srb;
            sc->to_buf = ibuf;
            sc->to = dd->offset + (p->dst_row + (a - r0)) * drb + p->dst_col * es;
            sc->to_pitch = drb;
            sc->rows = b - a;
            sc->row_bytes = p->cols * es;
        }
    }

    /* Merge descriptors contiguous on both sides. */
    struct rf_desc *ds = descs.p;
    if (descs.n)
        qsort(ds, descs.n, sizeof(*ds), cmp_desc);
    m = 0;
    for (size_t i = 0; i < descs.n; i++) {
        if (m && ds[m - 1].source == ds[i].source && ds[m - 1].region == ds[i].region &&
            ds[m - 1].buf == ds[i].buf && ds[m - 1].remote_off + ds[m - 1].len == ds[i].remote_off &&
            ds[m - 1].local_off + ds[m - 1].len == ds[i].local_off)
            ds[m - 1].len += ds[i].len;
        else
            ds[m++] = ds[i];
    }
    descs.n = m;
    for (size_t i = 0; i < descs.n; i++) {
        out->wire_bytes += ds[i].len;
        if (ds[i].source < n_sources)
            out->bytes_per_source[ds[i].source] += ds[i].len;
    }
    out->desc = descs.p;
    out->n_desc = descs.n;
    out->scatter = scat.p;
    out->n_scatter = scat.n;
    out->check = checks.p;
    out->n_check = checks.n;
    out->scratch_bytes = scratch;
    free(spans.p);
    free(load);
    free(direct);
    return 0;
fail:
    free(descs.p);
    free(spans.p);
    free(scat.p);
    free(checks.p);
    free(load);
    free(direct);
    free(out->bytes_per_source);
    memset(out, 0, sizeof(*out));
    return rc ? rc : REFIT_ENOMEM;
}

void rf_plan_free(struct rf_plan *p)
{
    if (!p)
        return;
    free(p->desc);
    free(p->scatter);
    free(p->check);
    free(p->bytes_per_source);
    memset(p, 0, sizeof(*p));
}
