/* sched.h — which source each receiver reads a replicated byte range from,
 * and in what order participants start (internal to the core; also
 * compiled into `refit sim`, which predicts what it does at scale).
 *
 * Many trainer ranks hold the same bytes: attention shards on every
 * data-parallel replica, experts on every expert-data-parallel replica,
 * norms everywhere.  The planner picks one candidate per piece.  Picked
 * per receiver alone (RF_SCHED_NAIVE, what rf_plan_build does on its own:
 * largest piece first, least-loaded candidate, ties to the first), every
 * engine of one layout makes the same picks, so the trainer ranks those
 * picks favour carry the whole fleet's share.  RF_SCHED_SPREAD makes the
 * picks of all the engines of one layout together, deterministically, so
 * each engine can compute its own without talking to the others: pieces
 * largest first, and for each piece every engine of the layout in turn
 * takes the least-loaded candidate of the layout-wide load.  Each engine
 * keeps its own row.  Cost: n_replicas times the naive pass.
 *
 * rf_sched_order gives the order in which a participant visits its peers
 * (a push publisher its receivers, a receiver its sources): naive 0..n-1
 * for everyone, so every publisher writes into the same receiver at once;
 * spread rotates each participant's start so concurrent participants start
 * on different peers (staggered starts), and gives each its own step
 * through the peers (a number coprime with their count), so participants
 * that meet on one peer part at the next instead of moving on together.
 *
 * How the engine uses it (the engine is not changed by this module): in
 * make_plan, after the composed pieces are built and before rf_plan_build,
 * fill one rf_sched_item per piece (its candidates' source indices), call
 * rf_sched_choose, and collapse each piece's candidates to the chosen one
 * (ncand = 1), so rf_plan_build keeps the choice; the push publisher visits
 * the adverts in rf_sched_order(..., its rank, its count) order. */
#ifndef RF_SCHED_H
#define RF_SCHED_H

#include <stddef.h>
#include <stdint.h>

enum rf_sched_policy {
    RF_SCHED_NAIVE = 0,  /* per receiver, as the planner alone does */
    RF_SCHED_SPREAD = 1  /* layout-wide, engines in turn; rotated starts */
};

/* One piece with a choice of sources. */
struct rf_sched_item {
    uint32_t ncand;
    const uint32_t *cand; /* source indices, each < n_sources */
    uint64_t bytes;       /* wire bytes, whichever candidate serves it */
};

/* Which of the engines of one layout this receiver is.  n_replicas 0 or 1:
 * alone (spread is then naive with rotated ties). */
struct rf_sched_who {
    uint32_t replica, n_replicas;
};

/* choice[i]: the index into items[i].cand this receiver reads item i from.
 * load (n_sources entries, may be NULL) gets this receiver's bytes per
 * source added.  Ties between equal items keep the items' order, so the
 * caller's order is the tie-break (the planner's: size, then destination).
 * 0, or REFIT_ENOMEM, or REFIT_EINVAL for an item without candidates or
 * with a candidate >= n_sources. */
int rf_sched_choose(const struct rf_sched_item *items, size_t n, uint32_t n_sources,
                    enum rf_sched_policy pol, const struct rf_sched_who *who, uint32_t *choice,
                    uint64_t *load);

/* order[0..n): the peers 0..n-1 in the order participant `self` of
 * n_self visits them. */
void rf_sched_order(enum rf_sched_policy pol, uint32_t n, uint32_t self, uint32_t n_self, uint32_t *order);

#endif
