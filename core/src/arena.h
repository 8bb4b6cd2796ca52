/* arena.h — a bump allocator for many objects built and dropped together
 * (not installed): the trainer layouts of one dry plan.
 *
 * Why: a receiver's first plan of a large trainer (Kimi-K2 on 256 GPUs)
 * builds tens of MiB of small arrays and names, and on virtual machines
 * whose MMU is shadowed each first touch of a 4 KiB page costs tens of
 * microseconds, more than the work done in it.  The arena maps big chunks,
 * 2 MiB aligned and advised for transparent huge pages (one fault per
 * 2 MiB where the kernel allows them, else plain pages as before), and a
 * reset keeps the chunks, so the next plan reuses memory already touched. */
#ifndef REFIT_ARENA_H
#define REFIT_ARENA_H

#include <stddef.h>

struct rf_arena;

/* An empty arena (nothing mapped yet); NULL when out of memory.
 * Destroy with rf_arena_destroy. */
struct rf_arena *rf_arena_create(void);
/* Unmaps every chunk; every pointer it gave is gone.  NULL is a no-op. */
void rf_arena_destroy(struct rf_arena *a);
/* n bytes, 16-byte aligned, not zeroed (fresh chunks are, reused ones are
 * not); NULL when out of memory.  Freed only by reset or destroy. */
void *rf_arena_alloc(struct rf_arena *a, size_t n);
/* Forget every allocation; the chunks stay mapped for the next round. */
void rf_arena_reset(struct rf_arena *a);
/* Bytes handed out since the last reset (for tests). */
size_t rf_arena_used(const struct rf_arena *a);

#endif
