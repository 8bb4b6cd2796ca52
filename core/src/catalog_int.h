/* catalog_int.h — what the three files behind refit/catalog.h share
 * (internal): catalog_codec.c (hashes, the catalog, its encoding),
 * catalog_records.c (source records, heartbeats, acks) and
 * catalog_keys.c (store keys, retention, time).  Every value they store
 * is a msgpack map whose first field is the schema; strings and blobs of
 * a decoded value are located in the input first and copied into one
 * allocation once everything is checked. */
#ifndef RF_CATALOG_INT_H
#define RF_CATALOG_INT_H

#include <string.h>

#include "msgpack_pk.h"
#include "msgpack_rd.h"
#include "refit/catalog.h"

/* The head of every value refit stores: a map of n fields, the first of
 * them the schema this build writes. */
static inline void rf_cat_head(struct pk *k, uint32_t n)
{
    PK(k, msgpack_pack_map(&k->p, n));
    pk_str(k, "schema");
    PK(k, msgpack_pack_uint32(&k->p, REFIT_CATALOG_SCHEMA));
}

/* The schema field of a catalog, record or ack: only this build's. */
int rf_cat_schema(struct rf_mp *d, uint32_t *schema);

/* A string or blob of the input. */
struct rf_span {
    const uint8_t *p;
    uint32_t l;
};

/* Copy s with a NUL after it to *at and advance *at. */
static inline char *rf_span_put(char **at, struct rf_span s)
{
    char *r = *at;
    memcpy(r, s.p, s.l);
    r[s.l] = '\0';
    *at += s.l + 1;
    return r;
}

#endif
