/* push.h — push mode (push.c): the receiver's work list and slots, the
 * publisher's service of them.  Internal. */
#ifndef RF_PUSH_H
#define RF_PUSH_H

#include <stddef.h>
#include <stdint.h>

#include "plan.h"
#include "refit/refit.h"

/* Receiver: after the plan and its feeds are built, split it by source
 * (pieces are the planner's, each with its chosen candidate first). */
int rf_push_rcv_plan(refit_receiver_t *r, struct rf_piece *pc, size_t n_pc);
void rf_push_rcv_plan_free(refit_receiver_t *r);
void rf_push_rcv_destroy(refit_receiver_t *r);
/* Layout tensor t arrives quantized by the trainer (nothing to convert). */
int rf_push_converted(const refit_receiver_t *r, size_t t);
/* Descriptor i of the plan is not sent (it feeds only such tensors). */
int rf_push_dropped(const refit_receiver_t *r, size_t desc);
/* Advertise this pull's slots for v and wait until every source with work
 * has written it (transfer_s, bytes_wire, descriptors in st); checks the
 * trainer-quantized units against their hashes. */
int rf_push_receive(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st);

/* Publisher: serve every receiver's advert for v (refit.receivers of them)
 * from catalog arena `arena` (copy mode), or fail naming those missing. */
int rf_push_serve(refit_publisher_t *pub, uint64_t v, int arena);
void rf_push_pub_destroy(refit_publisher_t *pub);
/* Bytes this publisher wrote during its last publish. */
uint64_t rf_push_pub_bytes(const refit_publisher_t *pub);

#endif
