/* fanout.h — tree fan-out's state, shared by its two files (internal):
 * fanout.c, the receive strategy rf_mode_fanout (choose the least-loaded
 * source with a free slot, copy a replica's staging image or pull the
 * trainer under a lease, fence the replica), and fanout_replica.c, what a
 * receiver does as a replica (re-publish what it committed, keep the
 * record alive, retire it before its buffer is overwritten) and the load
 * leases both sides take.  docs/fanout.md describes the protocol. */
#ifndef RF_FANOUT_H
#define RF_FANOUT_H

#include <pthread.h>

#include "receiver.h"
#include "replica.h"

#define RF_FANOUT_KEYSZ (REFIT_STORE_MAX_KEY + 1)
#define RF_FANOUT_TRAINER "trainer" /* the trainer ranks, as one source of the lease lists */
#define RF_FANOUT_MAX_FAILED 64     /* replicas given up on in one pull, remembered */

/* A replica this receiver copies from. */
struct rf_rpeer {
    char *id;
    void *addr;
    size_t addr_len;
    refit_tp_peer_t *peer;
    /* A double-buffered replica alternates two keys: both stay unpacked. */
    struct {
        void *blob;
        size_t len;
        refit_tp_rkey_t *rkey;
    } keys[2];
    int next;
};

struct rf_fanout {
    int republish;
    int64_t max;
    char self_key[RF_FANOUT_KEYSZ], self_load[RF_FANOUT_KEYSZ];
    /* As a replica (fanout_replica.c). */
    void *addr;
    size_t addr_len;
    struct {
        refit_tp_region_t *reg;
        void *blob;
        size_t len;
    } packed[2];
    uint64_t *sums;
    size_t cap_sums;
    int published;
    struct rf_replica rec; /* what the store says about us */
    void *pub_ptr;         /* the buffer the record names */
    pthread_t hb;
    int hb_running, hb_stop;
    pthread_mutex_t lock; /* enc and the puts of the record */
    pthread_cond_t cond;
    void *enc;
    size_t enc_len;
    /* As a puller (fanout.c). */
    struct rf_rpeer *peers;
    size_t n_peers;
    char lease_key[RF_FANOUT_KEYSZ];
    int lease_held;
    struct rf_replica *cur; /* the replica of this pull; NULL: the trainer */
    struct refit_hash128 layout;
    int fenced;
    uint32_t fallbacks;
    double deadline;
    char *failed[RF_FANOUT_MAX_FAILED];
    size_t n_failed;
    /* The copy in flight. */
    refit_receiver_t *r;
    refit_tp_region_t *local;
};

/* fanout_replica.c */
int rf_fanout_create(refit_receiver_t *r);
void rf_fanout_destroy(refit_receiver_t *r);
/* Before a pull writes a buffer the replica record may name. */
int rf_fanout_retire(refit_receiver_t *r, struct rf_fanout *f);
/* After a commit of v: the staging image as a replica record. */
int rf_fanout_republish(refit_receiver_t *r, struct rf_fanout *f, uint64_t v);
/* Take (1: while fewer than max others hold one; max 0: no limit) or give
 * back (0) this receiver's entry in the lease list `key`.  REFIT_EAGAIN:
 * the source is full. */
int rf_lease_edit(refit_store_t *s, const char *key, const char *id, int take, int64_t max, uint64_t version,
                  int64_t ttl_ms);
void rf_fanout_release_lease(refit_receiver_t *r, struct rf_fanout *f);
/* fanout.c */
void rf_fanout_drop_peer(refit_receiver_t *r, struct rf_rpeer *p);

#endif
