/* push_work.h — what push mode keeps in the store (internal): the work
 * list a receiver writes once per plan ("push/work/<xxh3-128>") and the
 * advert it writes every pull ("push/slots/<receiver>"), their msgpack
 * encoding (docs/protocol.md, "Push mode: the wire contract") and keys.
 *
 * The publisher executes a work list against its own memory, so the
 * decoder treats it as hostile: counts are checked against the bytes left
 * before allocating, and every offset and length sum is checked without
 * wrapping (rf_fits) — a piece's rectangle inside its unit, its source
 * rectangle inside its source rows, the byte extent it reads
 * (`src_end`, computed here), a descriptor's ranges on both sides.  What
 * the decoder cannot know (the publisher's region sizes) is checked
 * against `src_end` and `remote_off + len` where the bytes are read. */
#ifndef RF_PUSH_WORK_H
#define RF_PUSH_WORK_H

#include <stddef.h>
#include <stdint.h>

#include "refit/catalog.h"

#define RF_PUSH_SCHEMA 1
#define RF_PUSH_UNIT_MAX_COLS (1ull << 32)
#define RF_PUSH_MAX_SRC_ROW (1ull << 40)

/* A raw WRITE: [remote_off, +len) of the publisher's catalog region
 * `region` into [local_off, +len) of the receiver's buffer `buf`
 * (enum rf_buf: staging or scratch). */
struct push_desc {
    uint32_t region, buf;
    uint64_t remote_off, local_off, len;
};

/* A rectangle of one source tensor in a unit: rows x cols elements of
 * esize bytes from (src_row, src_col) of a tensor of src_cols columns at
 * tensor_off in region, to (dst_row, dst_col) of the unit. */
struct push_piece {
    uint32_t region, esize;
    uint64_t tensor_off, src_cols;
    uint64_t src_row, src_col, rows, cols, dst_row, dst_col;
    uint64_t src_end; /* decoded: the byte after the last one read (tensor_off + extent) */
};

/* An FP8 band the trainer quantizes: rows (1..128) x cols of layout
 * tensor t, source dtype bf16 or f32; its FP8 bytes go to out_off and its
 * scale row to scale_off of the receiver's staging. */
struct push_unit {
    uint32_t t, src_dtype;
    uint64_t rows, cols, out_off, scale_off;
    size_t first, n; /* pieces of the section */
};

/* One source's share of the plan. */
struct push_section {
    char *source;
    uint64_t mail_off;
    struct push_desc *d;
    size_t n_d;
    struct push_unit *u;
    size_t n_u;
    struct push_piece *pc;
    size_t n_pc;
};

struct push_work {
    uint32_t rule; /* enum refit_fp8_rule */
    double floor;
    uint64_t mail_len;
    struct push_section *s;
    size_t n_s;
};

void rf_push_work_free(struct push_work *w);
/* *out malloc'ed (the caller frees it). */
int rf_push_work_encode(const struct push_work *w, void **out, size_t *len);
/* Decode, keeping only the section of `source` (out->n_s is 0 or 1; every
 * section is checked); NULL source keeps them all.  `key` names the input. */
int rf_push_work_decode(const void *buf, size_t len, const char *key, const char *source, struct push_work *out);

/* A receiver's delta request for one source (an entry of the advert's
 * optional "delta" list; docs/delta.md, "Push mode"): it holds `base` of
 * that source, whose checksums' identity (rf_sums_segs_id) is base_sums, and asks
 * — when the source's delta of `version` was made from exactly that — for
 * the ranges [arena_off, +len) of the source's delta arena to be written
 * at land_off of its landing buffer (remote key rk), in place of the raw
 * descriptors of its work-list section whose bit is set in skip (bit j of
 * byte j/8: descriptor j).  A publisher whose delta was made from anything
 * else writes the section whole, as without the entry. */
#define RF_PUSH_RANGE_BYTES 24                     /* arena_off, land_off, len: u64 LE */
#define RF_PUSH_MAX_RANGES (1u << 22)              /* ranges one entry may ask for */
#define RF_PUSH_MAX_SKIP (1u << 24)                /* bytes of a skip bitmap */
struct push_adelta {
    char source[REFIT_RECORD_MAX_ID + 1];
    uint64_t version, base, base_sums;
    const void *rk;
    size_t rk_len;
    const uint8_t *ranges;
    size_t n_ranges;
    const uint8_t *skip;
    size_t skip_len;
};

struct push_advert {
    uint64_t version;
    char receiver[REFIT_RECORD_MAX_ID + 1];
    char transport[REFIT_RECORD_MAX_STRING + 1];
    const void *addr;
    size_t addr_len;
    const void *rk[3]; /* packed remote keys: staging, scratch, mailbox (empty: none) */
    size_t rk_len[3];
    struct refit_hash128 work;
    /* Encoding: the delta requests (none: a receiver without deltas). */
    const struct push_adelta *deltas;
    size_t n_deltas;
    /* Decoded: where the "delta" list's entries start in the advert and
     * how many (each checked for shape by the decoder; read them with
     * rf_push_advert_delta). */
    const uint8_t *delta_at, *delta_end;
    uint32_t n_delta_at;
};

int rf_push_advert_encode(const struct push_advert *a, void **out, size_t *len);
/* Blob fields point into buf. */
int rf_push_advert_decode(const void *buf, size_t len, const char *key, struct push_advert *a);

/* The advert's delta request for `source`, if any (*found 0: none).  The
 * fields point into the advert's buffer; their values are the receiver's
 * word only (the publisher checks them against its own delta). */
int rf_push_advert_delta(const struct push_advert *a, const char *key, const char *source, struct push_adelta *out,
                         int *found);

/* "push/slots/<receiver>", "push/work/<hex>", "push/done/<V>/<receiver>/<source>"
 * into buf (REFIT_STORE_MAX_KEY + 1 bytes). */
int rf_key_push_slots(char *buf, const char *receiver);
void rf_key_push_work(char *buf, const struct refit_hash128 *h);
int rf_key_push_done(char *buf, uint64_t v, const char *receiver, const char *source);

#endif
