/* exec.h — executing a plan's descriptors over the transport (internal).
 *
 * Descriptors are posted per source in batches of at most flush_every, one
 * batch in flight per source, sources round-robin, so every trainer NIC
 * is busy at once and no peer has more than flush_every descriptors
 * outstanding.  When a batch completes, `done` is called with its
 * descriptors, so the caller converts tensors while later batches are on
 * the wire. */
#ifndef RF_EXEC_H
#define RF_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "plan.h"
#include "refit/transport_core.h"

struct rf_exec_source {
    refit_tp_peer_t *peer;
    refit_tp_rkey_t **rkeys; /* per region index */
    uint32_t n_rkeys;
    const char *name;        /* for messages */
};

/* Where a local (buf, offset) lands: region and offset within it.  The
 * caller translates, so staging may be one region or one per tensor. */
typedef int (*rf_exec_local_fn)(void *arg, uint32_t buf, uint64_t off, uint64_t len,
                                refit_tp_region_t **region, uint64_t *region_off);
/* Called with descriptors [first, first+n) of the plan when they are in. */
typedef int (*rf_exec_done_fn)(void *arg, size_t first, size_t n);

struct rf_exec_stats {
    uint64_t descriptors, posts, bytes;
    double idle_wire_s; /* time in `done` while nothing was on the wire */
    /* The source whose request failed in the transport (post, completion,
     * no completion in time); -1: none.  Set it to -1 before the call. */
    int64_t failed_source;
};

/* The plan's descriptors must be sorted by source (rf_plan_build does). */
int rf_exec_run(refit_transport_t *tp, const struct rf_plan *plan, const struct rf_exec_source *src,
                uint32_t n_sources, uint32_t flush_every, int64_t timeout_ms,
                rf_exec_local_fn local, rf_exec_done_fn done, void *arg, struct rf_exec_stats *st);

#endif
