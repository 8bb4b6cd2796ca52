/* compose.h — composing layout maps into planner pieces (internal).
 *
 * A target layout says which rectangles of global HF tensors make up each
 * destination tensor of one inference rank; each source's Megatron layout
 * says which rectangles of global HF tensors each of its tensors holds.
 * Intersecting the two gives, for every destination, the rectangles of
 * source tensors to copy: the planner's pieces.  Identical rectangles held
 * by several sources (replicated tensors, non-expert tensors on every EP
 * rank) become one piece with several candidates. */
#ifndef RF_COMPOSE_H
#define RF_COMPOSE_H

#include <stddef.h>
#include <stdint.h>

#include "plan.h"
#include "refit/convert.h"

/* 2-D view of a layout tensor: [rows, cols] (1-D: [n, 1]; a stack
 * [E, r, c]: [E*r, c]); *slot_rows = r for stacks, rows otherwise. */
void rf_layout_dims(const struct refit_layout_tensor *t, uint64_t *rows, uint64_t *cols,
                    uint64_t *slot_rows);

/* lookup(arg, source, megatron_name, &psrc): 0 and the planner source
 * tensor index when that source published the tensor, REFIT_ENOENT when it
 * did not (a gap the planner then reports). */
typedef int (*rf_compose_lookup_fn)(void *arg, uint32_t source, const char *name, uint32_t *psrc);

/* Pieces for every tensor of `target` (piece.dst = the tensor's index in the
 * target layout) from the sources' layouts meg[0..n_sources).  *pieces is
 * malloc'ed (caller frees). */
int rf_compose(const refit_layout_t *target, const refit_layout_t *const *meg, size_t n_sources,
               rf_compose_lookup_fn lookup, void *arg, struct rf_piece **pieces, size_t *n_pieces);

#endif
