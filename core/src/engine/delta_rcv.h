/* delta_rcv.h — the receiver's side of delta refit, shared by its pull
 * (delta_rcv.c) and push (delta_rcv_push.c) halves (internal; delta_eng.h,
 * docs/delta.md). */
#ifndef RF_DELTA_RCV_H
#define RF_DELTA_RCV_H

#include <stddef.h>
#include <stdint.h>

#include "delta_eng.h"
#include "push.h"
#include "push_work.h"
#include "receiver.h"

#define BUF_DELTA 2u /* local buffer of delta reads (beside enum rf_buf) */

enum { USE_FULL = 0, USE_EMPTY = 1, USE_DELTA = 2 };

struct rf_rcvdelta {
    struct refit_hash128 key; /* of the plan the mirror is laid out for */
    int have_key;
    uint8_t *mirror;
    size_t mirror_len;
    uint64_t *moff; /* per descriptor */
    size_t n_desc, n_src;
    uint64_t *base_v, *base_h, *got_h; /* per source */
    struct rf_sums *base_sums;
    uint64_t pulled; /* the version this pull's transfer brought the mirror to */
    /* This pull. */
    struct rf_delta_rec **rec;
    size_t **order; /* per source with a record: catalog tensors by (region, offset) */
    uint8_t *use;   /* per descriptor */
    uint64_t *dlo, *dhi, *loff;
    uint8_t *land;
    size_t land_cap;
    refit_tp_region_t *land_reg;
    struct {
        refit_tp_peer_t *peer;
        refit_tp_rkey_t *rk;
        void *blob;
        size_t len;
        uint64_t stamp;
    } (*keys)[2];
    uint64_t stamp;
    struct rf_desc *sub;      /* the reads of one execution */
    size_t *sub_of, sub_cap;  /* per read: its descriptor */
    uint32_t *pending;        /* per descriptor: its reads not landed yet */
    uint64_t read_delta;      /* bytes of delta reads in the last execution */
    struct refit_pull_stats *st;
    /* Push mode: this pull's requests (per source with a usable record),
     * their ranges and bitmaps, and the landing buffer's packed key. */
    struct push_adelta *ask;
    uint8_t **ask_buf;
    size_t n_ask;
    void *land_rk;
    size_t land_rk_len;
    int told; /* rf_rcvdelta_whole logged why */
};

/* One chunk of a descriptor's walk: tensor ti, chunk k, its delta entry e,
 * the chunk's size n and the bytes [lo, hi) of it the descriptor holds,
 * at byte `at` of the descriptor. */
struct piece {
    size_t ti, e;
    uint64_t k, n, lo, hi, at;
};
typedef int (*piece_fn)(refit_receiver_t *r, size_t i, const struct piece *pc, void *arg);

/* The reads of a descriptor that goes by delta: one per run of its chunk
 * deltas that lie back to back in the arena (a descriptor spanning tensors
 * whose catalog order is not their memory order covers deltas apart from
 * each other; reading [dlo, dhi) whole would move the ones between).  Each
 * lands where rf_rcvd_plan put it: loff + (arena offset - dlo). */
struct reads {
    size_t i, m;
};

/* Every chunk descriptor i covers (tensors of its region overlapping it):
 * fn's nonzero return ends the walk and is returned; 1 also when a tensor
 * of the descriptor has no chunks. */
int rf_rcvd_walk(refit_receiver_t *r, size_t i, piece_fn fn, void *arg);
/* piece_fn of a walk with a struct reads: the reads of descriptor i. */
int rf_rcvd_read_piece(refit_receiver_t *r, size_t i, const struct piece *pc, void *arg);
/* The start of a delta version, pull or push (drop: descriptors the
 * publisher will not write; *bytes the deltas' extent). */
int rf_rcvd_begin(refit_receiver_t *r, uint64_t v, const uint8_t *drop, uint64_t *bytes);
/* This pull's records and requests freed. */
void rf_rcvd_pull_free(struct rf_rcvdelta *d);
/* Descriptor i by delta (or unchanged): applied onto the mirror, copied
 * where it lands, verified and converted. */
int rf_rcvd_apply_desc(refit_receiver_t *r, size_t i);
/* Per descriptor: whole, by delta (on) or unchanged; the landing buffer. */
int rf_rcvd_plan(refit_receiver_t *r, struct rf_rcvdelta *d, int on, const uint8_t *drop, uint64_t *delta_bytes);
/* One execution: whole descriptors and delta reads, by source. */
int rf_rcvd_run(refit_receiver_t *r, struct rf_rcvdelta *d, struct refit_pull_stats *st);

#endif
