/* replica.h — what tree fan-out keeps in the store (internal): replica
 * records and load leases, their msgpack encoding and their keys.
 *
 * A replica is a receiver that re-publishes the staging image of the
 * version it committed ("replicas/<receiver id>", written with a TTL of
 * refit.stale_after and refreshed every refit.heartbeat, so a dead replica
 * disappears).  Another receiver whose staging layout is byte-identical
 * (equal layout keys) may copy the image instead of pulling from the
 * trainer.  A load lease list ("load/<source>") counts the receivers
 * pulling from a source; entries expire, so a crashed puller never pins a
 * slot.  Both decoders treat their input as hostile (counts checked
 * against the bytes left before allocating, lengths bounded, fields typed)
 * and fail with REFIT_EPROTO naming the key and the field. */
#ifndef RF_REPLICA_H
#define RF_REPLICA_H

#include <stddef.h>
#include <stdint.h>

#include "refit/catalog.h"

#define RF_REPLICA_SCHEMA 1
#define RF_REPLICA_CHUNK (4u << 20)      /* bytes per checksum chunk and per READ */
#define RF_REPLICA_MAX_SUMS (1u << 24)   /* 64 TiB of staging at 4 MiB chunks */
#define RF_LEASE_MAX 65536               /* entries of one lease list */

enum rf_replica_status {
    RF_REPLICA_READY = 1,    /* `version` may be read */
    RF_REPLICA_UPDATING = 2, /* the buffer is about to be (or being) overwritten */
};

struct rf_replica {
    const char *id;        /* the receiver's id (one key component) */
    const char *model;     /* model type */
    const char *transport; /* plugin name */
    struct refit_blob address;
    struct refit_blob rkey;     /* packed remote key of the buffer holding `version` */
    struct refit_hash128 layout; /* layout key: equal keys, byte-identical staging images */
    uint64_t version;
    uint32_t status;       /* enum rf_replica_status */
    uint32_t keeps;        /* 2: `version` stays readable until the pull after next starts (double buffer) */
    uint64_t length;       /* bytes of the staging image */
    uint64_t chunk;        /* bytes per checksum chunk */
    size_t n_sums;         /* ceil(length / chunk) */
    const uint64_t *sums;  /* XXH3-64 per chunk */
    uint64_t heartbeat_ms; /* Unix ms of the write */
};

/* *buf freed by the caller with free(). */
int rf_replica_encode(const struct rf_replica *r, void **buf, size_t *len);
/* *out is one allocation (strings, blobs and sums inside), freed with free(). */
int rf_replica_decode(const void *buf, size_t len, const char *key, struct rf_replica **out);
const char *rf_replica_status_name(uint32_t st);

struct rf_lease {
    char id[REFIT_RECORD_MAX_ID + 1]; /* the puller */
    uint64_t expires_ms;              /* Unix ms */
    uint64_t version;                 /* the version it reads */
};

int rf_lease_encode(const struct rf_lease *l, size_t n, void **buf, size_t *len);
/* *out freed with free() (NULL when *n is 0). */
int rf_lease_decode(const void *buf, size_t len, const char *key, struct rf_lease **out, size_t *n);

/* The live (unexpired) entries of the lease list at key (none when it is
 * absent or malformed: a bad list pins nobody); *raw (may be NULL) keeps
 * the bytes read, for a cas.  *out and *raw freed with free(). */
int rf_lease_read(refit_store_t *s, const char *key, struct rf_lease **out, size_t *n, void **raw,
                  size_t *raw_len);

/* "replicas/<id>" and "load/<source>" into buf (REFIT_STORE_MAX_KEY + 1). */
int rf_key_replica(char *buf, const char *id);
int rf_key_load(char *buf, const char *source);

#endif
