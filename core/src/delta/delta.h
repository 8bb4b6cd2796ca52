/* delta.h — the exact delta codec (internal): what changed between the
 * bytes a publisher last published (the base) and the bytes it publishes
 * now (the next version), per checksum chunk of a source tensor (sums.h:
 * chunk k covers rows [k*chunk_rows, (k+1)*chunk_rows), about 64 KiB),
 * encoded losslessly and applied onto the base by a receiver that holds
 * exactly that base.  docs/delta.md says how the engine uses it.
 *
 * Format (all integers little-endian; a "unit" is 2 bytes, bf16 or fp16 or
 * half of an fp32; unit i of a segment is bytes [2i, 2i+2)):
 *
 *   chunk delta    empty (0 bytes): the chunk did not change; otherwise one
 *                  record per segment, in order.  Segment s covers bytes
 *                  [s*64 KiB, min((s+1)*64 KiB, n)) of the n-byte chunk.
 *   record         u32 header = payload_len << 4 | tag, then the payload.
 *   tag 0 SAME     payload empty: the segment did not change.
 *   tag 1 RAW      payload = the segment's new bytes.
 *   tag 2 SPARSE   count[nblk] u8 | pos[k] u8 | diff[k] u8 | raw[e] u16
 *                  The segment's nu units form nblk = ceil(nu/128) blocks
 *                  of 128; count[b] units of block b changed, at positions
 *                  pos (within the block, strictly increasing), k = sum of
 *                  counts.
 *   tag 3 BITMAP   bits[ceil(nu/8)] | diff[k] u8 | raw[e] u16
 *                  bit i (byte i/8, bit i%8) set: unit i changed; bits past
 *                  nu are 0; k = number of bits set.
 *   diff, raw      one byte per changed unit, in unit order: the new value
 *                  is old + (int8)diff (mod 2^16) when diff != 0; diff 0 is
 *                  the escape: the new value is the next raw[] entry (e =
 *                  number of zero diffs).  Most units that change in an RL
 *                  step move by one or a few bf16 ulps, so a byte holds them.
 *   payload_len    must equal the size the tag and the contents imply; a
 *                  segment of odd length is SAME or RAW only.
 *
 * The encoder picks per segment the smallest of SPARSE (nblk + 2k + 2e),
 * BITMAP (ceil(nu/8) + k + 2e) and RAW (n), ties in that order, SAME when
 * k = 0, and an empty chunk delta when every segment is SAME: a function of
 * (base, next) alone, so that the host paths (portable, AVX2, AVX-512) and
 * the CUDA kernels (core/src/cuda/delta.cu) produce the same bytes.
 *
 * Application validates the whole chunk delta before it writes a byte:
 * every length and position is checked against the chunk without wrap, and
 * anything malformed is REFIT_EPROTO naming the tensor, chunk and segment,
 * with the destination untouched.  Applying a well-formed delta onto the
 * wrong base gives wrong bytes: the engine checks the base (by its chunk
 * checksums) before and the result (by the new ones) after. */
#ifndef RF_DELTA_H
#define RF_DELTA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RF_DELTA_SEG 65536u /* bytes per segment */
#define RF_DELTA_BLOCK 128u /* units per SPARSE block */
#define RF_DELTA_HDR 4u     /* record header bytes */
/* Largest chunk the codec takes: its bound must fit a u32 index entry. */
#define RF_DELTA_MAX_CHUNK ((uint64_t)1 << 31)

enum rf_delta_tag { RF_DELTA_SAME = 0, RF_DELTA_RAW = 1, RF_DELTA_SPARSE = 2, RF_DELTA_BITMAP = 3 };

enum rf_delta_impl { RF_DELTA_IMPL_AUTO = 0, RF_DELTA_IMPL_SCALAR, RF_DELTA_IMPL_AVX2, RF_DELTA_IMPL_AVX512 };

int rf_delta_impl_available(enum rf_delta_impl impl);
const char *rf_delta_impl_name(enum rf_delta_impl impl);
enum rf_delta_impl rf_delta_impl_best(void);

/* What an encoder saw, summed over calls (the caller zeroes it). */
struct rf_delta_stats {
    uint64_t units;    /* 2-byte units compared */
    uint64_t changed;  /* units that differ */
    uint64_t escapes;  /* changed units whose difference needs raw bytes */
    uint64_t segs[4];  /* segments by tag */
    uint64_t in_bytes; /* dense bytes of the next version */
    uint64_t out_bytes;
};

/* Where a delta belongs, for error messages (fields may be NULL / 0). */
struct rf_delta_where {
    const char *tensor;
    uint64_t chunk;
};

/* The most bytes a chunk delta of an n-byte chunk takes. */
uint64_t rf_delta_bound(uint64_t n);

/* Encode the change base -> next of one n-byte chunk into out (cap bytes,
 * at least rf_delta_bound(n)); *len = bytes written (0: unchanged).
 * st may be NULL. */
int rf_delta_encode(const void *base, const void *next, size_t n, void *out, size_t cap, size_t *len,
                    enum rf_delta_impl impl, struct rf_delta_stats *st);

/* Check a chunk delta of len bytes against an n-byte chunk. */
int rf_delta_check(const void *delta, size_t len, size_t n, const struct rf_delta_where *w);

/* Validate, then apply a chunk delta onto dst, which holds the n-byte base
 * and receives the next version.  On error dst is untouched. */
int rf_delta_apply(const void *delta, size_t len, void *dst, size_t n, const struct rf_delta_where *w);

/* The same for bytes [lo, hi) of the chunk only (a receiver that keeps a
 * slice of it): dst holds those bytes of the base.  lo and hi must be even
 * (units are not split) unless the delta is empty. */
int rf_delta_apply_range(const void *delta, size_t len, size_t n, size_t lo, size_t hi, void *dst,
                         const struct rf_delta_where *w);

/* --- whole tensors: chunks of chunk_bytes (the last may be short) ---- */

uint64_t rf_delta_tensor_chunks(uint64_t nbytes, uint64_t chunk_bytes);
/* The most bytes rf_delta_encode_tensor writes (UINT64_MAX: too large). */
uint64_t rf_delta_tensor_bound(uint64_t nbytes, uint64_t chunk_bytes);
/* Every chunk, back to back into out; lens[k] = chunk k's delta length
 * (rf_delta_tensor_chunks entries); *len = the total. */
int rf_delta_encode_tensor(const void *base, const void *next, uint64_t nbytes, uint64_t chunk_bytes,
                           void *out, size_t cap, uint32_t *lens, size_t *len, enum rf_delta_impl impl,
                           struct rf_delta_stats *st);
/* Validates every chunk against lens and len, then applies them all. */
int rf_delta_apply_tensor(const void *delta, size_t len, const uint32_t *lens, uint64_t nbytes,
                          uint64_t chunk_bytes, void *dst, const char *tensor);

/* --- CUDA (core/src/cuda/delta.cu; REFIT_ENOTSUP without CUDA) ------- */

/* One tensor of a batch: device pointers.  Encoding reads base and next;
 * applying writes into base (which holds the base version). */
struct rf_delta_span {
    const char *name; /* for error messages: valid until the next sync */
    void *base;
    const void *next;
    uint64_t nbytes, chunk_bytes;
};

struct rf_delta_cuda;
/* Kernels on stream (NULL: the default stream); the work buffers grow to
 * the largest batch seen and are kept, as is the last batch's segment
 * table (a batch of the same tensors is not described to the GPU again). */
int rf_delta_cuda_create(void *stream, struct rf_delta_cuda **out);
void rf_delta_cuda_destroy(struct rf_delta_cuda *c);
/* Encode a batch of tensors in one pass of a few launches: out (device,
 * cap bytes, at least the sum of rf_delta_tensor_bound) receives the bytes
 * of rf_delta_encode_tensor of each tensor in turn, lens (device) their
 * chunk lengths in the same order.  *len (host) is the total, written by
 * the next rf_delta_cuda_sync. */
int rf_delta_cuda_encode(struct rf_delta_cuda *c, const struct rf_delta_span *t, size_t nt, void *out,
                         size_t cap, uint32_t *lens, uint64_t *len);
/* Apply such a batch (delta and lens on the device) onto each span's base.
 * Every chunk is checked before any is applied: on a malformed delta no
 * destination is touched. */
int rf_delta_cuda_apply(struct rf_delta_cuda *c, const struct rf_delta_span *t, size_t nt, const void *delta,
                        size_t len, const uint32_t *lens);
/* Waits for the stream; a malformed delta found by apply is REFIT_EPROTO
 * naming the first bad tensor, chunk and segment. */
int rf_delta_cuda_sync(struct rf_delta_cuda *c);
int rf_delta_cuda_built(void);

/* XXH3-64 (seed 0, the default secret) of device byte ranges
 * (core/src/cuda/xxh3.cu): out[i] is what the host's XXH3_64bits gives for
 * the n_i bytes at p_i, so chunk checksums (core/src/engine/sums.c) are
 * computed where the bytes are.  spans and out are device memory; the
 * kernel is queued on stream (NULL: the default stream). */
struct rf_xxh3_span {
    const void *p;
    uint64_t len;
};
int rf_xxh3_cuda(void *stream, const struct rf_xxh3_span *spans, size_t n, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif
