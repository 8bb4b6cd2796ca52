/* layout_int.h — the layout map under construction, shared by the files
 * that build it (not installed): layout.c (tensors, pieces, sources, the
 * accessors), layout_target.c (inference ranks), layout_trainer.c (Megatron
 * and FSDP trainer ranks), layout_compose.c (joining the two). */
#ifndef REFIT_LAYOUT_INT_H
#define REFIT_LAYOUT_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "model_int.h"

/* Parts of one destination: three per entry, or more when entries of one
 * layer fuse into one destination by name. */
#define RF_MAX_PARTS 8

struct ltensor {
    struct refit_layout_tensor pub;
    size_t first, count; /* into lay->pieces */
    /* 1 + index into lay->fparts (target layouts only: a trainer layout
     * never asks, and ~130 bytes a tensor of first-touched memory per
     * trainer rank was half its layout), 0 when it has none; and whether
     * rows / columns are TP partitions (the block-FP8 check). */
    uint32_t fparts;
    bool rows_split, cols_split, merged;
    bool stack_row, stack_col; /* an expert stack of down (row) or gate/up (column) projections */
};

/* For the vLLM block-FP8 check: each fused part's rows per rank. */
struct rf_lay_fparts {
    int n;
    const char *name[RF_MAX_PARTS];
    int64_t rows[RF_MAX_PARTS];
};

struct refit_layout {
    struct ltensor *t;
    struct rf_lay_fparts *fparts; /* target layouts only */
    size_t n_fparts, cap_fparts;
    size_t n, cap;
    struct refit_layout_piece *pieces;
    uint32_t *owner;      /* while building: the tensor of each piece */
    size_t n_pieces, cap_pieces;
    size_t cur;           /* the tensor add_piece appends to */
    struct refit_layout_src *src;
    size_t n_src, cap_src;
    /* open-addressing hash of source names -> index + 1 */
    uint32_t *hash;
    size_t hash_cap;
    /* the source names' bytes, in blocks (a trainer layout interns
     * thousands of names per plan: one allocation each was churn) */
    struct rf_lay_block *names;
    /* where the arrays, blocks and tensor names live when the layout is
     * one of many built and dropped together (NULL: malloc, freed with the
     * layout) */
    struct rf_arena *arena;
};

struct rf_lay_block {
    struct rf_lay_block *next;
    size_t used, cap;
    char bytes[];
};


struct part {
    char *name;
    int ndim;
    int64_t rows, cols; /* cols 1 for 1-D */
};

/* t's fused-part record, made on first use; NULL when out of memory. */
struct rf_lay_fparts *rf_lay_fparts_get(refit_layout_t *lay, struct ltensor *t);
/* t's fused-part record, or NULL when it has none. */
static inline const struct rf_lay_fparts *rf_lay_fparts_of(const refit_layout_t *lay, const struct ltensor *t)
{
    return t->fparts ? &lay->fparts[t->fparts - 1] : NULL;
}

/* n bytes for the layout's arrays: from its arena when it has one (gone
 * with the arena), else malloc'ed (freed with the layout). */
void *rf_lay_alloc(refit_layout_t *lay, size_t n);
/* refit_layout_trainer with the layout's memory in arena (NULL: malloc):
 * the layout must be destroyed before the arena is reset. */
int rf_layout_trainer_in(const refit_model_t *m, const struct refit_parallel *par,
                         const struct refit_convert_opts *skip, struct rf_arena *arena, refit_layout_t **out);

/* refit_layout_compose with the map's arrays and its temporaries in arena
 * (NULL: malloc): the map must be destroyed before the arena is reset. */
int rf_layout_compose_in(const refit_layout_t *dst, const refit_layout_t *const *ranks, size_t n_ranks,
                         struct rf_arena *arena, refit_layout_xmap_t **out);

/* The source index of an HF tensor already interned; REFIT_ENOENT when none. */
int rf_lay_find_src(const refit_layout_t *lay, const char *name, uint32_t *out);
/* Source index of an HF tensor, added on first use. */
int rf_lay_intern_src(refit_layout_t *lay, const char *name, int ndim, int64_t rows, int64_t cols,
                      uint32_t *out);
/* A piece of the tensor being built (lay->cur: the last one begun, or an
 * earlier one of the layer that later entries fuse into); merged with the
 * previous piece when both sides continue it row-wise.  rf_lay_finish() groups
 * the pieces by tensor. */
int rf_lay_add_piece(refit_layout_t *lay, uint32_t src, int64_t sr, int64_t sc, int64_t di, int64_t dr,
                     int64_t dc, int64_t rows, int64_t cols);
/* Start a destination tensor; takes ownership of name. */
int rf_lay_begin_tensor(refit_layout_t *lay, char *name, const struct refit_model_entry *e, int64_t layer,
                        int64_t expert, int ndim, int64_t d0, int64_t d1, int64_t d2);
/* HF part i of an entry's instance (name malloc'ed into p). */
int rf_lay_part_of(const refit_model_t *m, const struct refit_model_entry *e, int i, int64_t layer,
                   int64_t expert, struct part *p);
/* rf_lay_intern_src of a part. */
int rf_lay_src_of(refit_layout_t *lay, const struct part *p, uint32_t *out);
/* REFIT_EINVAL (error set) naming what when `by` does not divide n. */
int rf_lay_divides(const char *what, int64_t n, int64_t by, const char *name);
/* A TP split of n rows (or columns) made of whole units of `unit` (an
 * attention head's rows: the role's first argument, 0 for none) must not
 * cut a unit: every rank holds whole heads. */
int rf_lay_divides_units(const char *what, int64_t n, int64_t unit, int64_t by, const char *name);
/* Group the pieces by tensor (stable: a tensor's pieces keep their order)
 * and point every tensor at its own. */
int rf_lay_finish(refit_layout_t *lay);
/* The end of a layout's making: lay into *out when rc is 0, else
 * destroyed; returns rc. */
int rf_lay_hand_out(refit_layout_t *lay, int rc, refit_layout_t **out);
/* Whether the opts' skip patterns drop a name. */
int rf_lay_skip_name(const struct refit_convert_opts *o, const char *name);

static inline int rf_lay_n_parts(const refit_model_t *m, const struct refit_model_entry *e)
{
    return rf_entry_val(m, e)->n_parts;
}

static inline int64_t rf_lay_round_up(int64_t v, int64_t m)
{
    return (v + m - 1) / m * m;
}

#endif
