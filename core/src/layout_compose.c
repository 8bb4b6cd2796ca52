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
};

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
static int xindex(const refit_layout_t *names, const refit_layout_t *const *ranks, size_t n, size_t **startp,
                  struct xent **entp)
{
    int rc = 0;
    uint32_t **map = calloc(n ? n : 1, sizeof(*map));
    size_t *start = calloc(names->n_src + 1, sizeof(*start));
    size_t *fill = calloc(names->n_src + 1, sizeof(*fill));
    struct xent *ent = NULL;
    if (!rc && (!map || !start || !fill))
        rc = REFIT_ENOMEM;
    for (size_t r = 0; r < n && !rc; r++) {
        map[r] = malloc((ranks[r]->n_src ? ranks[r]->n_src : 1) * sizeof(**map));
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
            ent = calloc(start[names->n_src] ? start[names->n_src] : 1, sizeof(*ent));
            if (!ent)
                rc = REFIT_ENOMEM;
        }
    }
    for (size_t r = 0; map && r < n; r++)
        free(map[r]);
    free(map);
    free(fill);
    if (rc) {
        free(start);
        free(ent);
        return rc;
    }
    *startp = start;
    *entp = ent;
    return 0;
}

static int xrec_push(struct xrec **v, size_t *n, size_t *cap, struct xrec r)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 1024;
        struct xrec *nv = realloc(*v, c * sizeof(*nv));
        if (!nv)
            return REFIT_ENOMEM;
        *v = nv;
        *cap = c;
    }
    (*v)[(*n)++] = r;
    return 0;
}

static int xgroup(struct xrec *rec, size_t n, refit_layout_xmap_t *x)
{
    qsort(rec, n, sizeof(*rec), xrec_cmp);
    x->cand = calloc(n ? n : 1, sizeof(*x->cand));
    x->x = calloc(n ? n : 1, sizeof(*x->x));
    if (!x->cand || !x->x)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        x->cand[i] = rec[i].c;
        struct refit_layout_xpiece *last = x->n ? &x->x[x->n - 1] : NULL;
        if (last && last->dst == rec[i].dst && last->dst_index == rec[i].di && last->dst_row == rec[i].dr &&
            last->dst_col == rec[i].dc && last->rows == rec[i].rows && last->cols == rec[i].cols) {
            last->n_cand++;
            continue;
        }
        x->x[x->n++] = (struct refit_layout_xpiece){rec[i].dst, rec[i].di, rec[i].dr, rec[i].dc,
                                                    rec[i].rows, rec[i].cols, &x->cand[i], 1};
    }
    return 0;
}

int refit_layout_compose(const refit_layout_t *dst, const refit_layout_t *const *ranks, size_t n_ranks,
                         refit_layout_xmap_t **out)
{
    if (!dst || (!ranks && n_ranks) || !out)
        return refit_error_set(REFIT_EINVAL, "refit_layout_compose: NULL argument");
    refit_layout_xmap_t *x = calloc(1, sizeof(*x));
    size_t *start = NULL, n = 0, cap = 0;
    struct xent *ent = NULL;
    struct xrec *rec = NULL;
    /* The destination's own source table numbers the HF tensors it needs:
     * every layout interns its sources (rf_lay_intern_src), each name once
     * and found by its hash, so a piece's source index is its number. */
    int rc = x ? xindex(dst, ranks, n_ranks, &start, &ent) : REFIT_ENOMEM;
    for (size_t t = 0; !rc && t < dst->n; t++) {
        const struct ltensor *lt = &dst->t[t];
        for (size_t k = 0; !rc && k < lt->count; k++) {
            const struct refit_layout_piece *q = &dst->pieces[lt->first + k];
            const char *hf = dst->src[q->src].name;
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
                    rc = xrec_push(&rec, &n, &cap, r);
                }
            if (!rc && covered < q->rows * q->cols)
                rc = refit_error_set(REFIT_ENOENT,
                                     "'%s': rows %lld..%lld of HF tensor '%s' are on no trainer rank given",
                                     lt->pub.name, (long long)q->src_row, (long long)(q->src_row + q->rows),
                                     hf);
        }
    }
    if (!rc)
        rc = xgroup(rec, n, x);
    free(rec);
    free(start);
    free(ent);
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
    free(x->x);
    free(x->cand);
    free(x);
}
