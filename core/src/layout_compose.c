/* layout_compose.c — joins an inference rank's layout with the trainer
 * ranks' layouts: for every destination rectangle, the trainer ranks and
 * shard tensors that hold its bytes. */
#include <fnmatch.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout_int.h"
#include "refit/refit.h"
#include "refit/status.h"

/* ------------------------------------------------------------------ */
/* Composition */

struct xrec {
    uint32_t dst;
    int64_t di, dr, dc, rows, cols;
    struct refit_layout_cand c;
};

struct xent {
    uint32_t rank, tensor;
    const struct refit_layout_piece *p;
};

struct refit_layout_xmap {
    struct refit_layout_xpiece *x;
    size_t n;
    struct refit_layout_cand *cand;
    size_t n_cand;
    struct rf_arena *arena; /* where x, cand and the temporaries live (NULL: malloc) */
};

/* n items of size bytes, zeroed, from the arena when there is one. */
static void *xcalloc(struct rf_arena *a, size_t n, size_t size)
{
    return a ? rf_arena_calloc(a, n ? n : 1, size) : calloc(n ? n : 1, size);
}

static void *xmalloc(struct rf_arena *a, size_t n, size_t size)
{
    if (n > SIZE_MAX / size)
        return NULL;
    return a ? rf_arena_alloc(a, (n ? n : 1) * size) : malloc((n ? n : 1) * size);
}

static void xfree(struct rf_arena *a, void *p)
{
    if (!a)
        free(p);
}

#define XCMP(a, b)                                                                                                    \
    do {                                                                                                              \
        if ((a) != (b))                                                                                               \
            return (a) < (b) ? -1 : 1;                                                                                \
    } while (0)

/* By destination rectangle, then rank and tensor (field by field, the
 * first difference deciding: this sort orders every record of a plan). */
static int xrec_cmp(const void *a, const void *b)
{
    const struct xrec *x = a, *y = b;
    XCMP(x->dst, y->dst);
    XCMP(x->di, y->di);
    XCMP(x->dr, y->dr);
    XCMP(x->dc, y->dc);
    XCMP(x->rows, y->rows);
    XCMP(x->cols, y->cols);
    XCMP(x->c.rank, y->c.rank);
    XCMP(x->c.tensor, y->c.tensor);
    return 0;
}
#undef XCMP

/* Index the trainer pieces that copy an HF tensor the destination needs
 * (CSR over the destination's source names, `names` the table that numbers
 * them; pieces of other tensors are left out).  Each rank's source table is looked up once, not each piece:
 * a large MoE trainer has tens of thousands of pieces per plan. */
static int xindex(const refit_layout_t *names, const refit_layout_t *const *ranks, size_t n, struct rf_arena *a,
                  size_t **startp, struct xent **entp)
{
    int rc = 0;
    uint32_t **map = xcalloc(a, n, sizeof(*map));
    size_t *start = xcalloc(a, names->n_src + 1, sizeof(*start));
    size_t *fill = xcalloc(a, names->n_src + 1, sizeof(*fill));
    struct xent *ent = NULL;
    if (!rc && (!map || !start || !fill))
        rc = REFIT_ENOMEM;
    for (size_t r = 0; r < n && !rc; r++) {
        map[r] = xmalloc(a, ranks[r]->n_src, sizeof(**map));
        if (!map[r]) {
            rc = REFIT_ENOMEM;
            break;
        }
        for (size_t i = 0; i < ranks[r]->n_src; i++)
            if (rf_lay_find_src(names, ranks[r]->src[i].name, &map[r][i]))
                map[r][i] = UINT32_MAX;
    }
    for (int pass = 0; pass < 2 && !rc; pass++) {
        for (size_t r = 0; r < n; r++) {
            const refit_layout_t *l = ranks[r];
            for (size_t t = 0; t < l->n; t++)
                for (size_t k = 0; k < l->t[t].count; k++) {
                    const struct refit_layout_piece *p = &l->pieces[l->t[t].first + k];
                    uint32_t id = map[r][p->src];
                    if (id == UINT32_MAX)
                        continue;
                    if (!pass)
                        start[id + 1]++;
                    else
                        ent[start[id] + fill[id]++] = (struct xent){(uint32_t)r, (uint32_t)t, p};
                }
        }
        if (!pass) {
            for (size_t i = 0; i < names->n_src; i++)
                start[i + 1] += start[i];
            ent = xmalloc(a, start[names->n_src], sizeof(*ent)); /* every entry is filled */
            if (!ent)
                rc = REFIT_ENOMEM;
        }
    }
    for (size_t r = 0; map && r < n; r++)
        xfree(a, map[r]);
    xfree(a, map);
    xfree(a, fill);
    if (rc) {
        xfree(a, start);
        xfree(a, ent);
        return rc;
    }
    *startp = start;
    *entp = ent;
    return 0;
}

/* Where the records of a composition go: counted, grouped straight into
 * the map while they come in order, or kept for sorting. */
struct xsink {
    int mode; /* XS_COUNT, XS_GROUP, XS_KEEP */
    size_t n;
    refit_layout_xmap_t *x;
    struct xrec last, *rec;
};
enum { XS_COUNT, XS_GROUP, XS_KEEP };
#define XS_UNSORTED 1 /* XS_GROUP met a record out of order */

/* Record r into piece groups (records in xrec_cmp order): a new piece, or
 * one more candidate of the last (same destination rectangle). */
static void xgroup_add(refit_layout_xmap_t *x, const struct xrec *r)
{
    x->cand[x->n_cand] = r->c;
    struct refit_layout_xpiece *last = x->n ? &x->x[x->n - 1] : NULL;
    if (last && last->dst == r->dst && last->dst_index == r->di && last->dst_row == r->dr && last->dst_col == r->dc &&
        last->rows == r->rows && last->cols == r->cols)
        last->n_cand++;
    else
        x->x[x->n++] = (struct refit_layout_xpiece){r->dst, r->di, r->dr, r->dc, r->rows, r->cols,
                                                    &x->cand[x->n_cand], 1};
    x->n_cand++;
}

static int xsink_put(struct xsink *k, const struct xrec *r)
{
    if (k->mode == XS_GROUP) {
        if (k->n && xrec_cmp(&k->last, r) > 0)
            return XS_UNSORTED;
        k->last = *r;
        xgroup_add(k->x, r);
    } else if (k->mode == XS_KEEP) {
        k->rec[k->n] = *r;
    }
    k->n++;
    return 0;
}

/* Every record of the composition into k: for each destination piece, the
 * trainer pieces of its HF tensor that overlap it. */
static int xwalk(const refit_layout_t *dst, const size_t *start, const struct xent *ent, struct xsink *k)
{
    int rc = 0;
    for (size_t t = 0; !rc && t < dst->n; t++) {
        const struct ltensor *lt = &dst->t[t];
        for (size_t i = 0; !rc && i < lt->count; i++) {
            const struct refit_layout_piece *q = &dst->pieces[lt->first + i];
            uint32_t id = q->src;
            int64_t covered = 0;
            if (id < dst->n_src)
                for (size_t j = start[id]; !rc && j < start[id + 1]; j++) {
                    const struct refit_layout_piece *p = ent[j].p;
                    int64_t r0 = q->src_row > p->src_row ? q->src_row : p->src_row;
                    int64_t r1 = q->src_row + q->rows < p->src_row + p->rows ? q->src_row + q->rows
                                                                             : p->src_row + p->rows;
                    int64_t c0 = q->src_col > p->src_col ? q->src_col : p->src_col;
                    int64_t c1 = q->src_col + q->cols < p->src_col + p->cols ? q->src_col + q->cols
                                                                             : p->src_col + p->cols;
                    if (r0 >= r1 || c0 >= c1)
                        continue;
                    covered += (r1 - r0) * (c1 - c0);
                    struct xrec r = {(uint32_t)t, q->dst_index, q->dst_row + (r0 - q->src_row),
                                     q->dst_col + (c0 - q->src_col), r1 - r0, c1 - c0,
                                     {ent[j].rank, ent[j].tensor, p->dst_row + (r0 - p->src_row),
                                      p->dst_col + (c0 - p->src_col)}};
                    rc = xsink_put(k, &r);
                }
            if (!rc && covered < q->rows * q->cols)
                rc = refit_error_set(REFIT_ENOENT,
                                     "'%s': rows %lld..%lld of HF tensor '%s' are on no trainer rank given",
                                     lt->pub.name, (long long)q->src_row, (long long)(q->src_row + q->rows),
                                     dst->src[q->src].name);
        }
    }
    return rc;
}

/* The records grouped into pieces: counted, then grouped as they come;
 * kept and sorted only when they do not come in order.  (Grouping straight
 * away spares a copy of every record and qsort's own copy, fresh memory on
 * each plan: 70 k records of 72 bytes for Kimi-K2.) */
static int xcompose(const refit_layout_t *dst, const size_t *start, const struct xent *ent, refit_layout_xmap_t *x)
{
    struct xsink k = {.mode = XS_COUNT, .x = x};
    int rc = xwalk(dst, start, ent, &k);
    size_t n = k.n;
    if (!rc) {
        x->cand = xcalloc(x->arena, n, sizeof(*x->cand));
        x->x = xcalloc(x->arena, n, sizeof(*x->x));
        if (!x->cand || !x->x)
            rc = REFIT_ENOMEM;
    }
    if (!rc) {
        k = (struct xsink){.mode = XS_GROUP, .x = x};
        rc = xwalk(dst, start, ent, &k);
    }
    if (rc != XS_UNSORTED)
        return rc;
    x->n = x->n_cand = 0;
    k = (struct xsink){.mode = XS_KEEP, .x = x, .rec = xmalloc(x->arena, n, sizeof(*k.rec))};
    if (!k.rec)
        return REFIT_ENOMEM;
    rc = xwalk(dst, start, ent, &k);
    if (!rc) {
        qsort(k.rec, n, sizeof(*k.rec), xrec_cmp);
        for (size_t i = 0; i < n; i++)
            xgroup_add(x, &k.rec[i]);
    }
    xfree(x->arena, k.rec);
    return rc;
}

int refit_layout_compose(const refit_layout_t *dst, const refit_layout_t *const *ranks, size_t n_ranks,
                         refit_layout_xmap_t **out)
{
    return rf_layout_compose_in(dst, ranks, n_ranks, NULL, out);
}

int rf_layout_compose_in(const refit_layout_t *dst, const refit_layout_t *const *ranks, size_t n_ranks,
                         struct rf_arena *arena, refit_layout_xmap_t **out)
{
    if (!dst || (!ranks && n_ranks) || !out)
        return refit_error_set(REFIT_EINVAL, "refit_layout_compose: NULL argument");
    refit_layout_xmap_t *x = calloc(1, sizeof(*x));
    size_t *start = NULL;
    struct xent *ent = NULL;
    if (x)
        x->arena = arena;
    /* The destination's own source table numbers the HF tensors it needs:
     * every layout interns its sources (rf_lay_intern_src), each name once
     * and found by its hash, so a piece's source index is its number. */
    int rc = x ? xindex(dst, ranks, n_ranks, arena, &start, &ent) : REFIT_ENOMEM;
    if (!rc)
        rc = xcompose(dst, start, ent, x);
    xfree(arena, start);
    xfree(arena, ent);
    if (rc) {
        refit_layout_xmap_destroy(x);
        return rc;
    }
    *out = x;
    return 0;
}

size_t refit_layout_xmap_count(const refit_layout_xmap_t *x)
{
    return x ? x->n : 0;
}

const struct refit_layout_xpiece *refit_layout_xmap_at(const refit_layout_xmap_t *x, size_t i)
{
    return x && i < x->n ? &x->x[i] : NULL;
}

void refit_layout_xmap_destroy(refit_layout_xmap_t *x)
{
    if (!x)
        return;
    xfree(x->arena, x->x);
    xfree(x->arena, x->cand);
    free(x);
}
