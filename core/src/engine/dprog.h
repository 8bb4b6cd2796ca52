/* dprog.h — a device program (internal): the whole device-side work of a
 * colocated pull as one table of operations that one kernel launch runs.
 *
 * A resident pull over a transport that maps its peers' memory (cuda_ipc,
 * refit_transport_rkey_ptr) does not need the transport's copies at all: every
 * byte the plan moves goes from a trainer's tensor straight into the
 * engine's destination, as a 2-D copy (rows of `width` bytes between two
 * pitches: whole tensors, row blocks and the column slices of row-parallel
 * shards alike) or, for FP8 destinations, as a block quantization that reads
 * bf16 (or fp32) from the trainer and writes e4m3 and scales (one pass, the
 * CPU path's bytes).  The operations are cut into tiles (at most
 * RF_DPROG_TILE bytes of a copy, one 128x128 block of a quantization), the
 * tile table is uploaded once, and each pull is one launch per phase and
 * kind of tile (normally one phase: one launch, two with FP8) and one
 * event: no per-tensor launch, no per-batch host round trip.
 *
 * dprog.cu implements it on the CUDA runtime; dprog_stub.c, in builds
 * without CUDA, says so.  dprog_ref.c is the host reference: the same
 * operations on host memory with the CPU FP8 path, against which the tests
 * check the kernel's bytes. */
#ifndef RF_DPROG_H
#define RF_DPROG_H

#include <stddef.h>
#include <stdint.h>

#include "refit/fp8.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest copy tile, bytes (REFIT_DPROG_TILE_KB=K overrides it, for
 * measurements).  16 KiB is one unrolled round of a CTA (256 threads, four
 * 16-byte vectors each): on an H100, in the colocated cycle, a 1.19 GB
 * program's kernel took 0.790 ms with 16 KiB tiles, 0.800 with 32, 0.810
 * with 64 and 0.828 with 256 (docs/benchmarks.md). */
#define RF_DPROG_TILE ((uint64_t)16 << 10)
/* Phases run in order, one launch each; an operation that reads what an
 * earlier one writes goes in a later phase. */
#define RF_DPROG_PHASES 3

enum rf_dop_kind {
    RF_DOP_COPY = 1,     /* rows x width bytes */
    RF_DOP_FP8_BF16 = 2, /* rows x width bf16 -> e4m3 + fp32 scales */
    RF_DOP_FP8_F32 = 3   /* rows x width fp32 -> e4m3 + fp32 scales */
};

struct rf_dop {
    uint32_t kind;  /* enum rf_dop_kind */
    uint32_t phase; /* < RF_DPROG_PHASES */
    const void *src;
    uint64_t src_pitch; /* bytes between source rows */
    void *dst;
    uint64_t dst_pitch; /* bytes between destination rows */
    uint64_t rows;
    uint64_t width; /* COPY: bytes per row; FP8: elements per row */
    /* FP8: the scale of block (i, j) of this operation (blocks of 128x128
     * from its first element) goes to scales[i * scale_pitch + j]. */
    float *scales;
    uint64_t scale_pitch;
};

/* Whether operation i is well formed (kind, phase, pitches at least the
 * row, aligned element types); the message names i. */
int rf_dop_check(const struct rf_dop *o, size_t i);
/* The rule and fp32 floor of p (NULL: the trainer rule's defaults),
 * checked exactly as the CPU path checks them. */
int rf_dprog_params(const struct refit_fp8_params *p, int *rule, float *floor);

/* The host reference: run ops in order on host memory (FP8 through
 * refit_fp8_quantize_*).  REFIT_ENUMERIC on NaN or Inf in a quantized
 * operation, with *bad its index (bad may be NULL). */
int rf_dprog_reference(const struct rf_dop *ops, size_t n, const struct refit_fp8_params *p, size_t *bad);

/* ---- the device program ---- */

struct rf_dprog;
/* On `device`: a stream of its own (blocking: it waits for work the
 * caller queued on the legacy default stream), an event and an error
 * word. */
int rf_dprog_create(int device, struct rf_dprog **out);
/* Waits for a launched program first; safe on NULL. */
void rf_dprog_destroy(struct rf_dprog *g);
/* Cut ops into tiles and upload the table (replacing the loaded one);
 * pointers are device addresses on the program's device. */
int rf_dprog_load(struct rf_dprog *g, const struct rf_dop *ops, size_t n, const struct refit_fp8_params *p);
/* Queue the loaded program: per non-empty phase a launch over its FP8
 * blocks and one over its copies, then the event. */
int rf_dprog_launch(struct rf_dprog *g);
/* Wait for the event.  REFIT_ENUMERIC on NaN or Inf in a quantized
 * operation, with *bad the lowest such operation's index. */
int rf_dprog_wait(struct rf_dprog *g, size_t *bad);
/* Tiles and launches per run of the loaded program. */
size_t rf_dprog_tiles(const struct rf_dprog *g);
int rf_dprog_launches(const struct rf_dprog *g);
/* With REFIT_PULL_TRACE=1 at creation: the milliseconds the last run's
 * kernels took on the device (CUDA events, after rf_dprog_wait); else -1. */
double rf_dprog_last_ms(const struct rf_dprog *g);
/* Traced: the host's steps of the last launch and wait, "name ms ..." ("" none). */
int rf_dprog_steps(const struct rf_dprog *g, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
