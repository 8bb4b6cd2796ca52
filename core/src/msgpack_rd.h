/* msgpack_rd.h — the one msgpack reader for everything refit decodes from
 * outside (internal): catalogs, source records, heartbeats and acks
 * (catalog_codec.c, catalog_records.c), replica records and load leases
 * (engine/replica.c), push work lists and adverts (engine/push_work.c).
 * The writer beside it is msgpack_pk.h (msgpack-c's packer).
 *
 * Why not msgpack_unpack: it allocates every array and map from the count
 * on the wire before it has seen the elements (a 5-byte header can ask for
 * 100 GB), and it builds an object tree we would only walk once.  This
 * cursor reader checks every count against the bytes left before anyone
 * allocates, every length before it is used, refuses NUL bytes in strings
 * and caps nesting, and decodes straight into the caller's structures.
 *
 * A failure is REFIT_EPROTO with a message naming the input, the item and
 * the field:  "<key>: [<item> <i>, ]field '<field>': <what> (byte <n>)".
 * The caller keeps `field` (and `item`/`index`) up to date as it reads. */
#ifndef RF_MSGPACK_RD_H
#define RF_MSGPACK_RD_H

#include <stddef.h>
#include <stdint.h>

struct rf_mp {
    const uint8_t *p, *end;
    const uint8_t *start; /* NULL: checking values that came from no bytes (messages without a position) */
    const char *key;      /* store key or file, for messages */
    const char *field;    /* field being read */
    const char *item;     /* what `index` counts ("tensor", "section"); NULL: none */
    ptrdiff_t index;      /* -1: not inside an item */
};

#define RF_MP_DEPTH_MAX 32
#define RF_MP_KEY_MAX 64 /* bytes of a map key */

/* A reader over one top-level value; `what` names it when key is NULL. */
void rf_mp_init(struct rf_mp *d, const void *buf, size_t len, const char *key, const char *what);
int rf_mp_fail(struct rf_mp *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline size_t rf_mp_left(const struct rf_mp *d)
{
    return (size_t)(d->end - d->p);
}

/* Integers: any msgpack integer encoding that holds the value. */
int rf_mp_int(struct rf_mp *d, int64_t *out);
int rf_mp_u64(struct rf_mp *d, uint64_t *out);
int rf_mp_u32(struct rf_mp *d, uint32_t *out, uint32_t max);
/* float 32 or 64, finite. */
int rf_mp_f64(struct rf_mp *d, double *out);
/* Container headers: *n elements of at least min_elem bytes each must fit
 * in what is left (a map counts its keys and values). */
int rf_mp_map(struct rf_mp *d, uint32_t *n, size_t min_elem);
int rf_mp_array(struct rf_mp *d, uint32_t *n, size_t min_elem);
/* An array of exactly `want` elements (a fixed record). */
int rf_mp_tuple(struct rf_mp *d, uint32_t want);
/* str (no NUL byte inside) or bin of at most max bytes, pointing into the input. */
int rf_mp_str(struct rf_mp *d, const uint8_t **s, uint32_t *len, uint32_t max);
int rf_mp_bin(struct rf_mp *d, const uint8_t **s, uint32_t *len, uint32_t max);
/* A str that is a valid refit id (refit_check_id). */
int rf_mp_id(struct rf_mp *d, const uint8_t **s, uint32_t *len, const char *what);
/* One value of any type (unknown fields). */
int rf_mp_skip(struct rf_mp *d);
/* Nothing may follow the value. */
int rf_mp_end(struct rf_mp *d, const char *what);

int rf_mp_key_is(const uint8_t *k, uint32_t kl, const char *want);

/* Maps of named fields (at most 32): the next key as an index into names.
 * A known key seen before is an error; an unknown key's value is skipped
 * and *which is -1.  On a known key d->field is its name. */
int rf_mp_field(struct rf_mp *d, const char *const *names, unsigned n, uint32_t *seen, int *which);
/* Every bit of `required` in `seen`, else "field '<first missing>': missing". */
int rf_mp_required(struct rf_mp *d, const char *const *names, unsigned n, uint32_t seen, uint32_t required);

#endif
