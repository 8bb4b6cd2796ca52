/* compose.c — target layout × source layouts → planner pieces. */
#include <stdlib.h>
#include <string.h>

#include "compose.h"
#include "refit/status.h"

void rf_layout_dims(const struct refit_layout_tensor *t, uint64_t *rows, uint64_t *cols,
                    uint64_t *slot_rows)
{
    if (t->ndim == 3) {
        *rows = (uint64_t)(t->shape[0] * t->shape[1]);
        *cols = (uint64_t)t->shape[2];
        *slot_rows = (uint64_t)t->shape[1];
    } else if (t->ndim == 2) {
        *rows = (uint64_t)t->shape[0];
        *cols = (uint64_t)t->shape[1];
        *slot_rows = *rows;
    } else {
        *rows = (uint64_t)t->shape[0];
        *cols = 1;
        *slot_rows = *rows;
    }
}

/* Where a rectangle of an HF tensor sits in some source tensor. */
struct held {
    uint32_t source;
    const struct refit_layout_tensor *mt; /* the Megatron tensor */
    const struct refit_layout_piece *q;
    uint64_t slot_rows;
    struct held *next; /* same HF name */
};

struct bucket {
    const char *name;
    struct held *first;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static struct bucket *bucket_get(struct bucket *tab, size_t cap, const char *name, int create)
{
    size_t i = hash_str(name) & (cap - 1);
    while (tab[i].name) {
        if (!strcmp(tab[i].name, name))
            return &tab[i];
        i = (i + 1) & (cap - 1);
    }
    if (!create)
        return NULL;
    tab[i].name = name;
    return &tab[i];
}

static int cmp_rect(const void *x, const void *y)
{
    const struct rf_piece *p = x, *q = y;
    if (p->dst_row != q->dst_row)
        return p->dst_row < q->dst_row ? -1 : 1;
    if (p->dst_col != q->dst_col)
        return p->dst_col < q->dst_col ? -1 : 1;
    if (p->rows != q->rows)
        return p->rows < q->rows ? -1 : 1;
    if (p->cols != q->cols)
        return p->cols < q->cols ? -1 : 1;
    if (p->src_row != q->src_row)
        return p->src_row < q->src_row ? -1 : 1;
    return (p->src_col > q->src_col) - (p->src_col < q->src_col);
}

static int push_piece(struct rf_piece **arr, size_t *n, size_t *cap, const struct rf_piece *p)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        struct rf_piece *np = realloc(*arr, nc * sizeof(*np));
        if (!np)
            return REFIT_ENOMEM;
        *arr = np;
        *cap = nc;
    }
    (*arr)[(*n)++] = *p;
    return 0;
}

int rf_compose(const refit_layout_t *target, const refit_layout_t *const *meg, size_t n_sources,
               rf_compose_lookup_fn lookup, void *arg, struct rf_piece **pieces, size_t *n_pieces)
{
    /* Index every source rectangle by HF tensor name. */
    size_t total = 0;
    for (size_t s = 0; s < n_sources; s++)
        for (size_t i = 0; i < refit_layout_count(meg[s]); i++)
            total += refit_layout_at(meg[s], i)->n_pieces;
    size_t cap = 64;
    while (cap < total * 2 + 64)
        cap *= 2;
    struct bucket *tab = calloc(cap, sizeof(*tab));
    struct held *held = calloc(total ? total : 1, sizeof(*held));
    struct rf_piece *out = NULL, *tmp = NULL;
    size_t n_out = 0, cap_out = 0, cap_tmp = 0;
    int rc = 0;
    if (!tab || !held) {
        rc = REFIT_ENOMEM;
        goto done;
    }
    size_t h = 0;
    for (size_t s = 0; s < n_sources; s++)
        for (size_t i = 0; i < refit_layout_count(meg[s]); i++) {
            const struct refit_layout_tensor *mt = refit_layout_at(meg[s], i);
            uint64_t r, c, slot;
            rf_layout_dims(mt, &r, &c, &slot);
            for (size_t k = 0; k < mt->n_pieces; k++) {
                const struct refit_layout_piece *q = &mt->pieces[k];
                const char *hf = refit_layout_source(meg[s], q->src)->name;
                struct bucket *b = bucket_get(tab, cap, hf, 1);
                held[h] = (struct held){(uint32_t)s, mt, q, slot, b->first};
                b->first = &held[h++];
            }
        }

    for (size_t d = 0; d < refit_layout_count(target); d++) {
        const struct refit_layout_tensor *t = refit_layout_at(target, d);
        uint64_t trows, tcols, tslot;
        rf_layout_dims(t, &trows, &tcols, &tslot);
        for (size_t k = 0; k < t->n_pieces; k++) {
            const struct refit_layout_piece *p = &t->pieces[k];
            const char *hf = refit_layout_source(target, p->src)->name;
            struct bucket *b = bucket_get(tab, cap, hf, 0);
            size_t n_tmp = 0;
            for (struct held *e = b ? b->first : NULL; e; e = e->next) {
                const struct refit_layout_piece *q = e->q;
                int64_t r0 = p->src_row > q->src_row ? p->src_row : q->src_row;
                int64_t r1 = p->src_row + p->rows < q->src_row + q->rows ? p->src_row + p->rows
                                                                          : q->src_row + q->rows;
                int64_t c0 = p->src_col > q->src_col ? p->src_col : q->src_col;
                int64_t c1 = p->src_col + p->cols < q->src_col + q->cols ? p->src_col + p->cols
                                                                          : q->src_col + q->cols;
                if (r1 <= r0 || c1 <= c0)
                    continue;
                uint32_t ps;
                int lr = lookup(arg, e->source, e->mt->name, &ps);
                if (lr == REFIT_ENOENT)
                    continue;
                if (lr) {
                    rc = lr;
                    goto done;
                }
                struct rf_piece pc = {
                    .dst = (uint32_t)d,
                    .ncand = 1,
                    .cand = {ps},
                    .src_row = (uint64_t)(q->dst_index * (int64_t)e->slot_rows + q->dst_row + (r0 - q->src_row)),
                    .src_col = (uint64_t)(q->dst_col + (c0 - q->src_col)),
                    .rows = (uint64_t)(r1 - r0),
                    .cols = (uint64_t)(c1 - c0),
                    .dst_row = (uint64_t)(p->dst_index * (int64_t)tslot + p->dst_row + (r0 - p->src_row)),
                    .dst_col = (uint64_t)(p->dst_col + (c0 - p->src_col)),
                };
                if ((rc = push_piece(&tmp, &n_tmp, &cap_tmp, &pc)))
                    goto done;
            }
            /* Identical rectangles from several sources: one piece with
             * candidates.  Same rectangle at another source position would
             * be a different copy of the same bytes; the first one wins. */
            if (n_tmp > 1)
                qsort(tmp, n_tmp, sizeof(*tmp), cmp_rect);
            for (size_t i = 0; i < n_tmp;) {
                struct rf_piece pc = tmp[i];
                size_t j = i + 1;
                for (; j < n_tmp && tmp[j].dst_row == pc.dst_row && tmp[j].dst_col == pc.dst_col &&
                       tmp[j].rows == pc.rows && tmp[j].cols == pc.cols;
                     j++)
                    if (tmp[j].src_row == pc.src_row && tmp[j].src_col == pc.src_col &&
                        pc.ncand < RF_MAX_CAND)
                        pc.cand[pc.ncand++] = tmp[j].cand[0];
                if ((rc = push_piece(&out, &n_out, &cap_out, &pc)))
                    goto done;
                i = j;
            }
        }
    }
done:
    free(tab);
    free(held);
    free(tmp);
    if (rc) {
        free(out);
        return rc;
    }
    *pieces = out;
    *n_pieces = n_out;
    return 0;
}
