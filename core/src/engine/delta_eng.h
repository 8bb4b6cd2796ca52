/* delta_eng.h — delta refit in the engine (internal; docs/delta.md).
 *
 * A publisher with refit.delta.enabled keeps what it last published (a
 * host copy of its host tensors: the base, version B) and at publish(V)
 * encodes, per checksum chunk of every tensor, the change B -> V with the
 * codec of core/src/delta/delta.h into one of two registered delta arenas
 * (V's arena is the one V-2 used, so V's delta stays readable while V+1 is
 * published, as the record's `keeps` allows).  Beside it, before READY(V),
 * it stores the delta record "versions/<V>/delta/<source>" (msgpack, the
 * bounded reader decodes it):
 *
 *   {"schema": 1, "version": V, "base": B, "catalog": bin16,
 *    "base_sums": the identity of B's checksums (sums.h, rf_sums_segs_id),
 *    "rkey": bin (the arena),
 *    "data_len": u64, "index": bin (u32 LE per chunk of every tensor in
 *    catalog order: the chunk delta's length, 0 = unchanged, 0xffffffff =
 *    not encoded: pull it whole)}
 *
 * The chunk deltas lie back to back in the arena in index order.  A
 * version the publisher cannot encode (no base, catalog changed, delta
 * larger than refit.delta.max_ratio of the bytes) has no record.
 *
 * A receiver keeps a mirror of the source bytes each plan descriptor read
 * (delta_rcv.c) and the version they hold; it applies a delta only onto
 * that exact version (record's base and base_sums equal to what it holds,
 * base chunks hashed against those sums first), and only with
 * refit.verify: full, so the new version's chunk checksums prove every
 * result; anything else, or any failure, pulls the version whole. */
#ifndef RF_DELTA_ENG_H
#define RF_DELTA_ENG_H

#include <stddef.h>
#include <stdint.h>

#include "refit/catalog.h"

#define RF_DELTA_REC_SCHEMA 1
#define RF_DELTA_ABSENT 0xffffffffu
/* Most index entries a record may carry (4 bytes each): 64 Mi chunks of
 * ~64 KiB, 4 TiB of one source. */
#define RF_DELTA_MAX_INDEX ((uint64_t)1 << 26)

struct rf_delta_rec {
    uint64_t version, base;
    struct refit_hash128 catalog;
    uint64_t base_sums;
    struct refit_blob rkey; /* points into the record's allocation */
    uint64_t data_len;
    size_t n_index;
    uint32_t *len;   /* per chunk */
    uint64_t *off;   /* per chunk: where its delta starts in the arena */
    size_t n_tensors;
    size_t *first;   /* per catalog tensor: its first chunk's index */
};

/* Chunks of catalog tensor ct and their size in bytes (0, 0: none). */
void rf_delta_cat_chunks(const struct refit_cat_tensor *ct, uint64_t *n_chunks, uint64_t *chunk_bytes);

/* index: n u32 lengths. */
int rf_delta_rec_encode(const struct rf_delta_rec *r, const uint32_t *index, size_t n, void **buf, size_t *len);
/* Checks every field and the index against the catalog the record must
 * belong to (counts, each length within the codec's bound of its chunk,
 * the lengths adding up to data_len without wrap). */
int rf_delta_rec_decode(const void *buf, size_t len, const char *key, const refit_catalog_t *cat,
                        struct rf_delta_rec **out);
void rf_delta_rec_free(struct rf_delta_rec *r);

int rf_key_delta(char *buf, uint64_t version, const char *source_id);

#endif
