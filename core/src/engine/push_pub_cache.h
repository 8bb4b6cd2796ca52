/* push_pub_cache.h — what the push publisher keeps from one publish to the
 * next (internal to push_pub.c and push_pub_cache.c): receivers' work lists
 * by hash, with their quantized output registered to WRITE from; receivers'
 * connections; and per receiver the remote keys it unpacked.  Rebuilding any
 * of them per publish would cost a store read, a registration, a connection
 * or an unpack per receiver — the caches exist so a steady push does none. */
#ifndef RF_PUSH_PUB_CACHE_H
#define RF_PUSH_PUB_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "publisher.h"
#include "push_work.h"
#include "refit/fp8.h"

/* Remote keys kept per receiver (staging alternates, scratch, mailbox, the
 * delta landing buffer): more than one push uses (4), so that evicting the
 * least recently used never drops a key the push in progress holds. */
#define RKEY_CACHE 8
/* Work lists kept (a few plans at most are alive: one per receiver layout). */
#define WORKS_MAX 16

/* Bytes of a band's scale row: one f32 per FP8 block of columns. */
static inline size_t scale_row_bytes(uint64_t cols)
{
    return (size_t)((cols + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK * sizeof(float));
}

struct pub_work {
    struct refit_hash128 hash;
    struct push_work w; /* only this publisher's section */
    /* Quantized units and the mailbox slot, registered to WRITE from. */
    uint8_t *out;
    size_t out_len;
    refit_tp_region_t *out_reg;
    uint64_t *u_off, *s_off; /* per unit: offsets in out */
    uint64_t mail_at;
    void *img;
    size_t img_len;
    /* Units gathered and quantized this publish, in order, and the mailbox
     * slot once all are: every receiver of this work gets the same bytes,
     * so they are made once per publish, not once per receiver, and never
     * rewritten while a WRITE of them is in flight. */
    size_t n_made;
    int busy; /* receivers of the round in flight use it: not evicted */
};

struct pub_peer {
    char *receiver;
    void *addr;
    size_t addr_len;
    refit_tp_peer_t *peer;
    struct {
        void *blob;
        size_t len;
        refit_tp_rkey_t *k;
    } rk[RKEY_CACHE]; /* staging alternates between two buffers, scratch and mailbox stay */
};

/* Pointers, so that a work or peer held by a receiver being served stays
 * where it is when the arrays grow. */
struct rf_push_pub {
    struct pub_work **works;
    size_t n_works;
    struct pub_peer **peers;
    size_t n_peers;
    uint64_t bytes; /* written by the last publish */
};

/* The work list of hash h: cached, else fetched from the store, checked
 * against its hash and this publisher's regions, its output sized and
 * registered.  *out stays owned by pub->push (freed by rf_push_pub_free). */
int rf_pub_work_get(refit_publisher_t *pub, const struct refit_hash128 *h, struct pub_work **out);
/* The receiver of advert a, connected (again when its address changed).
 * *out stays owned by pub->push. */
int rf_pub_peer_get(refit_publisher_t *pub, const struct push_advert *a, struct pub_peer **out);
/* Drop p's connection and keys: the next push connects and unpacks again. */
void rf_pub_peer_forget(refit_publisher_t *pub, struct pub_peer *p);
/* The remote key of blob on p, unpacked once and kept (least recently used
 * evicted).  *out belongs to p's cache. */
int rf_pub_rkey_get(refit_publisher_t *pub, struct pub_peer *p, const void *blob, size_t len, refit_tp_rkey_t **out);
/* Everything cached, released; pub->push becomes NULL. */
void rf_push_pub_free(refit_publisher_t *pub);

#endif
