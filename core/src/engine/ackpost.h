/* ackpost.h — a receiver's acknowledgements written off the pull's
 * critical path (refit.ack_async: true; internal).
 *
 * A pull acknowledges v after its reads of v are complete (the fence has
 * passed and the bytes are committed): from then on the trainer may
 * overwrite what the pull read.  Writing the ack is a store round trip
 * (the file store: a file created and renamed; Redis: a command) that the
 * pull's caller does not need to wait for.  Here a worker thread with a
 * store handle of its own writes it and forgets the previous version's ack,
 * while the pull returns.  The contract is unchanged — an ack of v is
 * written only after v's reads ended — the trainer merely learns it a
 * store write later than the engine does.  Acks are written in order, one
 * at a time: posting v waits for the ack before it to be written (normally
 * long done), so no version goes unacknowledged.  A failure is reported by
 * the next post, flush or destroy. */
#ifndef RF_ACKPOST_H
#define RF_ACKPOST_H

#include <stdint.h>

#include "refit/store_core.h"

struct rf_ackpost;

/* Takes store (closed by rf_ackpost_destroy, also on failure here); id is
 * copied. */
int rf_ackpost_create(refit_store_t *store, const char *id, struct rf_ackpost **out);
/* Write the ack of v, then forget the ack of prev (0: none), on the worker.
 * Waits for the previous post first; returns its failure, if any. */
int rf_ackpost_post(struct rf_ackpost *a, uint64_t v, uint64_t prev);
/* Wait until every posted ack is written; its failure, if any. */
int rf_ackpost_flush(struct rf_ackpost *a);
/* Flush (a failure is logged), stop the worker, close its store.  Safe on NULL. */
void rf_ackpost_destroy(struct rf_ackpost *a);

#endif
