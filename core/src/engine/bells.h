/* bells.h — doorbells between a publisher and the receivers of its host
 * (internal; transport ops bell_*, offered by cuda_ipc).
 *
 * A publisher whose transport has doorbells creates one, puts its handle
 * under bells/<source id> (live: re-written after a store restart) and
 * rings it with every version it makes READY.  A receiver that has pulled
 * from sources waits for their next version on their bells rather than on
 * the store's watch: woken by the ring itself, it then reads the records
 * as before (the store stays the truth; a bell is only a wake-up).  Sources
 * without a bell, transports without doorbells, a bell that cannot be
 * opened: the store's watch, as before.  Everything here is best effort —
 * a failure is logged and falls back to the watch, never fails a pull or a
 * publish. */
#ifndef RF_BELLS_H
#define RF_BELLS_H

#include <stdint.h>

#include "refit/transport_core.h"

struct refit_publisher;
struct refit_receiver;

/* Publisher: create and advertise its bell (none where the transport has
 * none); ring it with v; withdraw and close it. */
void rf_pub_bell_create(struct refit_publisher *pub);
void rf_pub_bell_ring(struct refit_publisher *pub, uint64_t v);
void rf_pub_bell_destroy(struct refit_publisher *pub);

/* Receiver: wait up to ms for every current source's bell to pass
 * r->last_version.  0: rung (or some bell was already past: nothing to
 * wait for on bells); REFIT_ETIMEDOUT; REFIT_ENOTSUP: no bells for these
 * sources (wait on the store instead).  *waited: whether it slept on a
 * bell (else the caller waits on the store). */
int rf_rcv_bells_wait(struct refit_receiver *r, int64_t ms, int *waited);
void rf_rcv_bells_fini(struct refit_receiver *r);

#endif
