/* sums.h — per-version checksums of a source's tensors (internal).
 *
 * The catalog is static while the layout is unchanged (content-addressed,
 * never re-sent); the bytes change every version, so their checksums live
 * beside it, in segments (below).  Per tensor, in catalog order: u64
 * n_chunks, u64 whole-tensor XXH3-64, n_chunks × u64 chunk XXH3-64.  A
 * tensor of n_chunks 0 was published without checksums (refit.verify:
 * off).  Chunk k covers rows [k*chunk_rows, (k+1)*chunk_rows) of the
 * tensor seen as [rows, last-dim] (chunk_rows is in the catalog). */
#ifndef RF_SUMS_H
#define RF_SUMS_H

#include <stddef.h>
#include <stdint.h>

#include "refit/catalog.h"

struct rf_sums {
    uint64_t *words; /* per tensor: n_chunks, whole, chunks... */
    size_t n_words, cap;
    size_t n_tensors;
    size_t *index;   /* word offset of each tensor (decoded segments) */
    uint64_t id;     /* the sum of the trailers of the segments decoded
                        into it: with every segment of a version, the
                        identity the delta stage names a base by */
};

int rf_sums_init(struct rf_sums *s, size_t n_tensors_hint);
void rf_sums_fini(struct rf_sums *s);
/* Hash one tensor (data NULL: no checksums for it). */
int rf_sums_add(struct rf_sums *s, const void *data, size_t nbytes, uint64_t row_bytes, uint32_t chunk_rows);
/* One tensor hashed elsewhere (pubdev.c hashes device tensors as their
 * copies land): its whole-tensor hash and n_chunks chunk hashes, as
 * rf_sums_add would have computed them. */
int rf_sums_put(struct rf_sums *s, uint64_t whole, const uint64_t *chunks, uint64_t n_chunks);
/* Chunk k of tensor t (0 when no segment read has it). */
uint64_t rf_sums_chunk(const struct rf_sums *s, size_t t, uint64_t k, int *have);

/* Segments: the checksums split so that a receiver reads only those of
 * the tensors its plan reads, "versions/<V>/sums/<source>/<k>" (a
 * receiver with refit.delta.enabled reads all of them; the sum of their
 * trailers names the version's checksums, rf_sums_segs_id).  Tensors
 * in catalog order are packed into segments of at most max(RF_SUMS_SEG_WORDS,
 * all words / RF_SUMS_MAX_SEGS) words (2 + n_chunks each, n_chunks as the
 * catalog gives it whether or not the source hashed), a larger tensor
 * alone: a few dozen keys per source at most, whatever its size (every key
 * costs the store's listings).  Both sides derive the packing from the
 * catalog, so no index is read.  A segment:
 *   "RFSUMS02" | u64 version | 16-byte catalog hash | u64 segment |
 *   u64 first tensor | u64 n tensors | their words as above |
 *   u64 XXH3-64 of everything before it */
#define RF_SUMS_SEG_WORDS 512
#define RF_SUMS_MAX_SEGS 16
/* seg[t] for the n tensors whose chunk counts are want[]; *n_seg. */
void rf_sums_segment(const uint64_t *want, size_t n, uint32_t *seg, size_t *n_seg);
/* want[] and seg[] of a catalog's tensors (the caller frees both). */
int rf_sums_cat_segments(const refit_catalog_t *cat, uint64_t **want, uint32_t **seg, size_t *n_seg);
/* Every segment of s (tensors in seg[] order): bufs[k], lens[k]. */
int rf_sums_encode_segs(const struct rf_sums *s, const uint32_t *seg, size_t n_seg, const struct refit_hash128 *cat,
                        uint64_t version, void ***bufs, size_t **lens);
/* Sums of n_tensors with none known yet, for segments to be decoded into. */
int rf_sums_prepare(struct rf_sums *s, size_t n_tensors);
/* Segment k decoded into acc (prepared for the catalog), validated against
 * the catalog it belongs to (version, catalog hash, trailer, the tensors
 * of seg[] and their chunk counts from each tensor's size and chunk_rows);
 * its trailer added to acc->id. */
int rf_sums_decode_seg(const void *buf, size_t len, const char *key, const refit_catalog_t *cat,
                       const struct refit_hash128 *cat_hash, uint64_t version, const uint32_t *seg, size_t k,
                       struct rf_sums *acc);
int rf_key_sums_seg(char *buf, uint64_t version, const char *source_id, size_t k);
/* The identity of a version's checksums from all n of its segments (what
 * rf_sums_decode_seg sums into acc->id): the delta record's base_sums. */
uint64_t rf_sums_segs_id(void *const *bufs, const size_t *lens, size_t n);

/* The checksum table over the transport (refit.sums: transport, pull
 * delivery): the same segments back to back in one registered buffer per
 * arena, its remote key after the catalog regions' in the record (one key
 * more than the catalog has regions).  Segment k lies in the slot
 * [off[k], off[k+1]) sized for the catalog's chunk counts, so a receiver
 * finds the slots of the segments it needs from the catalog alone and
 * READs them with the data's transport: no checksum crosses the store.
 * A slot read while the publisher rewrites it fails its trailer or holds
 * another version (refused as a store segment would be); the record fence
 * still follows the data. */
/* off[0..n_seg]: slot offsets for want[] and seg[] of n tensors. */
int rf_sums_table_slots(const uint64_t *want, const uint32_t *seg, size_t n, size_t n_seg, uint64_t *off);
/* The length of the segment at the start of a slot of cap bytes (its
 * words walked within the slot; rf_sums_decode_seg validates them). */
int rf_sums_seg_len(const void *buf, size_t cap, size_t *len);

/* "receivers/<id>": a receiver's registration, so a publisher waiting for
 * acknowledgements can name the ones that did not come. */
int rf_key_receiver(char *buf, const char *receiver_id);
int rf_report_missing_acks(refit_store_t *s, uint64_t version, size_t want, size_t have,
                           const char *who, int64_t timeout_ms);
/* Wait until `want` receivers acknowledged version (acks.c: on a watch of
 * the acks, reading only the ones that changed); the missing ones named
 * (rf_report_missing_acks) after timeout_ms. */
int rf_acks_wait(refit_store_t *s, uint64_t version, size_t want, int64_t timeout_ms, const char *who);
/* The same, calling each(arg) before every wait on the watch (a counter
 * renewing its claim: release.c). */
int rf_acks_wait_each(refit_store_t *s, uint64_t version, size_t want, int64_t timeout_ms, const char *who,
                      void (*each)(void *arg), void *arg);
/* refit_publisher_wait_released (release.c): one publisher of the job
 * counts the acks of version (rf_acks_wait), the others read its verdict
 * ("released/<V>"); who is the waiting publisher's id. */
int rf_release_wait(refit_store_t *s, uint64_t version, size_t want, int64_t timeout_ms, const char *who);
/* One bounded wait on a watch of prefix (acks.c; the publisher's ack and
 * advert waits): at most poll_ms, never past `left` seconds.  0 with the
 * changed keys in *keys (none when it timed out), or with *listed = 0 when
 * the store kept no history from *cursor (the caller lists again); a store
 * error otherwise. */
int rf_watch_step(refit_store_t *s, const char *prefix, double left, int64_t poll_ms, uint64_t *cursor,
                  char ***keys, size_t *nk, int *listed);

#endif
