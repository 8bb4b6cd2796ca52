/* plan.h — the resharding planner (internal to the core).
 *
 * Every tensor is seen as a 2-D row-major matrix [rows, cols] of esize-byte
 * elements (1-D: [n, 1]; an expert stack [E, r, c]: [E*r, c]).  A
 * destination *image* is a destination tensor in the source dtype; it is
 * assembled from *pieces*, rectangles copied from source tensors.  The
 * planner turns the pieces into:
 *   - READ descriptors per source, landing either straight in the image
 *     (a run of whole rows on both sides, large enough to be worth a
 *     descriptor) or in scratch (short runs: whole source rows are pulled
 *     and scattered locally), merged where both sides are contiguous;
 *   - local scatter copies from scratch into images;
 *   - for verification, the checksum chunks (source row blocks) each image
 *     or scratch range holds, so every pulled chunk is hashed in one place.
 * It checks that every image byte is covered exactly once, and spreads
 * replicated pieces (several candidate sources) over the sources so no
 * single trainer NIC carries them all.
 *
 * The plan is flat arrays; the receiver caches it while catalogs and layout
 * are unchanged. */
#ifndef RF_PLAN_H
#define RF_PLAN_H

#include <stddef.h>
#include <stdint.h>

/* A source tensor as the planner sees it. */
struct rf_psrc {
    uint32_t source;     /* index of the source (trainer rank) */
    uint32_t region;     /* region index within that source */
    uint64_t offset;     /* byte offset of the tensor within the region */
    uint64_t rows, cols; /* 2-D view */
    uint32_t esize;
    uint32_t chunk_rows; /* checksum chunk height in rows (0: not verified) */
};

/* A destination image. */
struct rf_pdst {
    uint64_t rows, cols;
    uint32_t esize;
    /* Where the image lives: in staging at `offset` (no conversion needed),
     * or in scratch (the planner assigns an offset) when it is converted. */
    int in_scratch;
    uint64_t offset; /* staging offset (input) or scratch offset (output) */
    /* Elements the pieces must cover: 0 means all (rows * cols).  Less when
     * the layout leaves padding (vocabulary rows), which stays zero. */
    uint64_t covered;
};

/* A rectangle of a source tensor copied into a destination image: from
 * source tensor `psrc`, or, when the piece names alternatives (ncand > 0:
 * the psrc indices cands[cand .. cand+ncand) of rf_plan_build's pool, every
 * one holding identical data), from the one the planner picks (it sets
 * psrc and ncand = 0).  64 bytes: a Kimi-K2 plan has 70,000 pieces, and
 * the receiver chooses among data-parallel copies itself (plan_cands.c)
 * so that no piece carries one entry per trainer rank. */
#define RF_MAX_CAND 64
struct rf_piece {
    uint32_t dst;
    uint32_t psrc;
    uint32_t cand, ncand;
    uint64_t src_row, src_col;
    uint64_t rows, cols;
    uint64_t dst_row, dst_col;
};

enum rf_buf { RF_BUF_STAGING = 0, RF_BUF_SCRATCH = 1 };

struct rf_desc {
    uint32_t source, region;
    uint64_t remote_off;
    uint32_t buf; /* enum rf_buf */
    uint64_t local_off;
    uint64_t len;
};

/* A local copy of a rectangle: from scratch rows of a fetched source block
 * into an image. */
struct rf_scatter {
    uint32_t dst;
    uint64_t from;      /* scratch byte offset of the block's first selected element */
    uint64_t from_pitch;/* bytes between rows in scratch */
    uint32_t to_buf;    /* enum rf_buf of the image */
    uint64_t to;        /* byte offset of the first element in the image's buffer */
    uint64_t to_pitch;
    uint64_t rows, row_bytes;
};

/* Checksum chunks to verify after the pull: chunks [chunk, chunk+count) of
 * source tensor psrc (rows [chunk*chunk_rows, ...)), whose bytes lie
 * contiguously at buf+off for len bytes (the last chunk may be short: the
 * tensor's last rows). */
struct rf_check {
    uint32_t psrc;
    uint32_t count;
    uint64_t chunk;
    uint32_t buf;
    uint64_t off, len;
};

struct rf_plan_opts {
    uint64_t scatter_threshold; /* runs shorter than this go through scratch */
    int verify;                 /* 1: plan checksum chunks for every source byte pulled */
    /* rf_plan_order of the pieces as given, when the caller has it (used
     * up; NULL: the planner sorts) */
    uint32_t *order;
};

struct rf_plan {
    struct rf_desc *desc;
    size_t n_desc;
    struct rf_scatter *scatter;
    size_t n_scatter;
    struct rf_check *check;
    size_t n_check;
    uint64_t scratch_bytes;
    uint64_t wire_bytes;
    uint64_t *bytes_per_source; /* n_sources entries */
    uint32_t n_sources;
};

/* The planner's order of pieces: largest (in elements) first, then by
 * destination, row, column.  order[0..n) gets the piece indices; the
 * receiver's source choice visits pieces in it, as the planner does. */
int rf_plan_order(const struct rf_piece *pieces, size_t n, uint32_t *order);
/* rf_plan_order in the caller's scratch of rf_plan_order_scratch(n) bytes
 * (16-byte aligned). */
size_t rf_plan_order_scratch(size_t n);
int rf_plan_order_in(const struct rf_piece *pieces, size_t n, uint32_t *order, void *scratch);

/* Build the plan.  pieces are reordered (into rf_plan_order's order) and
 * their alternatives collapsed to the one chosen; cands (n_cands entries,
 * NULL when no piece has alternatives) is their pool.  Errors name the destination
 * (through `dst_name`) and what is wrong: a gap, an overlap, a piece out of
 * bounds. */
int rf_plan_build(const struct rf_psrc *src, size_t n_src, struct rf_pdst *dst, size_t n_dst,
                  struct rf_piece *pieces, size_t n_pieces, const uint32_t *cands, size_t n_cands,
                  uint32_t n_sources,
                  const struct rf_plan_opts *opts,
                  const char *(*dst_name)(void *arg, uint32_t dst), void *arg,
                  struct rf_plan *out);
void rf_plan_free(struct rf_plan *p);

#endif
