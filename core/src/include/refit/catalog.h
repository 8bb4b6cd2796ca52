/* refit/catalog.h — what a source publishes in the store: its tensor
 * catalog, its source record, heartbeats and receivers' acknowledgements;
 * their msgpack encoding (schema 1, laid out field by field in
 * docs/store.md), their keys, and the store-side rules built on them
 * (content-addressed catalogs, version retention, stale detection).
 *
 * Decoders treat their input as hostile: every type, count, length and
 * range is checked before use, names must be unique, tensors must lie
 * inside their regions, and a failure is REFIT_EPROTO with a message that
 * names the store key and the field ("sources/tp0: field 'layout': ..."). */
#ifndef REFIT_CATALOG_H
#define REFIT_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "refit/dtype.h"
#include "refit/store_core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define REFIT_CATALOG_SCHEMA 1
#define REFIT_CATALOG_MAX_NAME 1024     /* bytes of a tensor name */
#define REFIT_CATALOG_MAX_REGIONS 65536
#define REFIT_CATALOG_MAX_TENSORS 10000000
#define REFIT_RECORD_MAX_ID 128         /* source and receiver ids: one key component */
#define REFIT_RECORD_MAX_STRING 256     /* model, transport names */
#define REFIT_RECORD_MAX_BLOB 65536     /* address and each remote key */

/* The layout vocabulary of the design (docs: design.md, "Layout
 * vocabulary"); the wire spells them in lower case. */
enum refit_cat_role {
    REFIT_CAT_ROLE_REPLICATED = 1, /* no shard axis */
    REFIT_CAT_ROLE_COLUMN,         /* axis 0 */
    REFIT_CAT_ROLE_QKV_COLUMN,     /* axis 0, interleaved per query group */
    REFIT_CAT_ROLE_GATED_COLUMN,   /* axis 0, [gate_r; up_r] */
    REFIT_CAT_ROLE_ROW,            /* axis 1 */
    REFIT_CAT_ROLE_EXPERT_COLUMN,  /* axis 0, with an expert id */
    REFIT_CAT_ROLE_EXPERT_ROW,     /* axis 1, with an expert id */
    REFIT_CAT_ROLE_VOCAB,          /* axis 0, the embedding / output vocabulary */
    REFIT_CAT_ROLE_COUNT_
};
const char *refit_cat_role_name(enum refit_cat_role r); /* "column"; "invalid" */
int refit_cat_role_parse(const char *s, enum refit_cat_role *out);

struct refit_hash128 {
    uint8_t b[16]; /* XXH3-128, big-endian (canonical) byte order */
};
/* 32 lower-case hex digits and a NUL into out[33]. */
void refit_hash128_hex(const struct refit_hash128 *h, char out[33]);
int refit_hash128_parse(const char *hex, struct refit_hash128 *out);
void refit_hash128_of(const void *buf, size_t len, struct refit_hash128 *out);

/* ------------------------------------------------------------------ */
/* Catalog */

struct refit_cat_tensor {
    const char *name;  /* NUL-terminated; unique in the catalog */
    uint32_t dtype;    /* enum refit_dtype */
    uint32_t role;     /* enum refit_cat_role */
    uint32_t ndim;     /* 0..REFIT_MAX_DIMS */
    uint64_t shape[REFIT_MAX_DIMS];        /* this source's shard */
    uint64_t global_shape[REFIT_MAX_DIMS]; /* the whole tensor */
    int32_t shard_axis;   /* -1: not sharded (replicated) */
    uint64_t shard_start; /* first index along shard_axis in the global tensor */
    uint64_t shard_len;   /* == shape[shard_axis] */
    int64_t expert;       /* global expert id; -1 for non-expert roles */
    uint32_t region;      /* index into the catalog's regions */
    uint64_t offset;      /* byte offset inside the region */
    uint64_t nbytes;      /* == prod(shape) * dtype size */
    uint64_t checksum;    /* XXH3-64 of the nbytes bytes */
    /* Rows of a checksum chunk: the tensor seen as [rows, last dim] is
     * hashed per chunk of this many rows in the per-version checksums
     * (0: whole-tensor checksum only).  Optional field 14 on the wire. */
    uint32_t chunk_rows;
};

typedef struct refit_catalog refit_catalog_t;
struct refit_catalog {
    uint32_t schema;
    uint32_t n_regions;
    uint64_t *region_len; /* bytes of each registered region */
    size_t n_tensors;
    struct refit_cat_tensor *tensors;
    struct refit_catalog_priv_ *priv_; /* names, index */
};

/* An empty catalog to fill with add_region/add; destroy with
 * refit_catalog_destroy (also for decoded ones). */
int refit_catalog_create(refit_catalog_t **out);
void refit_catalog_destroy(refit_catalog_t *c);
int refit_catalog_add_region(refit_catalog_t *c, uint64_t len, uint32_t *index);
/* Room for n tensors in all, so that adding them neither copies the
 * tensors nor rebuilds the name index on the way. */
int refit_catalog_reserve(refit_catalog_t *c, size_t n);
/* Copies t (and its name).  Checks the tensor as the decoder would. */
int refit_catalog_add(refit_catalog_t *c, const struct refit_cat_tensor *t);
/* Index of the tensor named name, or -1. */
ptrdiff_t refit_catalog_find(const refit_catalog_t *c, const char *name);

/* msgpack bytes (*buf freed by the caller with free()). */
int refit_catalog_encode(const refit_catalog_t *c, void **buf, size_t *len);
/* `key` names the input in messages (a store key or a file); may be NULL. */
int refit_catalog_decode(const void *buf, size_t len, const char *key, refit_catalog_t **out);

/* Store "catalogs/<hash>" unless it is there already (cas on absence, so
 * concurrent publishers of one content agree) and keep it live.  A catalog
 * this handle published before costs nothing: no round trip, no bytes.
 * *hash receives the content hash; *sent (may be NULL) whether bytes went
 * out. */
int refit_catalog_publish(refit_store_t *s, const void *enc, size_t len, struct refit_hash128 *hash,
                          bool *sent);
/* Fetch, verify the content hash, decode. */
int refit_catalog_fetch(refit_store_t *s, const struct refit_hash128 *hash, refit_catalog_t **out);

/* ------------------------------------------------------------------ */
/* Source record */

enum refit_source_status {
    REFIT_SOURCE_INIT = 1,  /* registered, nothing published yet */
    REFIT_SOURCE_READY = 2, /* `version` may be pulled */
    REFIT_SOURCE_STALE = 3  /* withdrawn (shutdown, or declared dead by a reader) */
};
const char *refit_source_status_name(uint32_t st); /* "READY" */

struct refit_par_layout {
    uint32_t tp_rank, tp_size;
    uint32_t pp_rank, pp_size;
    uint32_t ep_rank, ep_size;
    uint32_t etp_rank, etp_size;
};

struct refit_blob {
    const void *data;
    size_t len;
};

/* What a source's position says beyond tp/pp/ep (optional on the wire,
 * defaults when absent): data-parallel replica, FSDP sharding, virtual
 * pipeline stages and an uneven pipeline split. */
#define REFIT_RECORD_MAX_CHUNKS 64
struct refit_src_ext {
    uint32_t dp_rank, dp_size;       /* 0 of 1 */
    uint32_t fsdp;                   /* 1: the fsdp layout, shard_rank of shard_size */
    uint32_t shard_rank, shard_size;
    uint32_t vp;                     /* virtual stages per pipeline rank (1) */
    uint32_t n_pp_layers;            /* 0: an even split */
    uint32_t pp_layers[REFIT_RECORD_MAX_CHUNKS];
};

struct refit_source_record {
    uint32_t schema;
    const char *source_id; /* one key component: [A-Za-z0-9_.:-], 1..128 bytes */
    const char *model;
    struct refit_par_layout layout;
    const char *transport; /* plugin name */
    struct refit_blob address;
    size_t n_rkeys; /* one packed remote key per catalog region */
    const struct refit_blob *rkeys;
    struct refit_hash128 catalog;
    uint64_t version;
    uint32_t status;       /* enum refit_source_status */
    uint64_t heartbeat_ms; /* Unix time (ms) the record was last refreshed */
    /* Versions the source keeps readable: 0 or 1 (zero-copy: only `version`),
     * 2 (refit.publish: copy: `version` and the one before, in two staging
     * arenas).  Optional field "keeps" on the wire. */
    uint32_t keeps;
    /* The name the source's transport authenticates as (refit_tp_open.name)
     * when it is not source_id (NULL: source_id): a push receiver accepts
     * the source's completion notifications only from that sender.
     * Optional field "sender" on the wire, at most REFIT_RECORD_MAX_STRING
     * bytes. */
    const char *sender;
};

int refit_record_encode(const struct refit_source_record *r, void **buf, size_t *len);
/* The same with the position fields beyond tp/pp/ep (NULL: none): optional
 * fields "dp", "fsdp", "vp", "pplayers", written only where they differ
 * from the defaults, so records of plain Megatron sources stay as they were. */
int refit_record_encode_ext(const struct refit_source_record *r, const struct refit_src_ext *x, void **buf,
                            size_t *len);
/* Those fields of a record refit_record_decode (or _fetch) returned: kept in
 * the same allocation, defaults when the record had none. */
const struct refit_src_ext *refit_record_ext(const struct refit_source_record *r);
/* *out is one allocation (strings and blobs inside), freed with free(). */
int refit_record_decode(const void *buf, size_t len, const char *key, struct refit_source_record **out);
/* The record's regions match the catalog's (count). */
int refit_record_check_catalog(const struct refit_source_record *r, const refit_catalog_t *c,
                               const char *key);

/* Publish: one pipelined write of "sources/<id>" (marked live, re-written
 * after a store restart) and "versions/<V>/sources/<id>". */
int refit_record_publish(refit_store_t *s, const struct refit_source_record *r);
int refit_record_publish_ext(refit_store_t *s, const struct refit_source_record *r, const struct refit_src_ext *x);
/* Read and decode "sources/<id>". */
int refit_record_fetch(refit_store_t *s, const char *source_id, struct refit_source_record **out);

/* Heartbeat: "heartbeats/<id>" with a TTL of stale_after (live). */
int refit_heartbeat_put(refit_store_t *s, const char *source_id, uint64_t version, int64_t stale_after_ms);
/* The time of a heartbeat value read elsewhere (refit store show). */
int refit_heartbeat_decode(const void *buf, size_t len, const char *key, uint64_t *time_ms);
/* Unix ms of the last heartbeat; REFIT_ENOENT when none is alive. */
int refit_heartbeat_get(refit_store_t *s, const char *source_id, uint64_t *time_ms);

/* Whether readers must treat the source as stale: status STALE, or the
 * latest of the record's heartbeat and hb_ms (0: none) is more than
 * stale_after_ms before now_ms. */
bool refit_record_is_stale(const struct refit_source_record *r, uint64_t hb_ms, uint64_t now_ms,
                           int64_t stale_after_ms);
/* Record and heartbeat in one round trip, with the verdict.  *out as for
 * refit_record_decode. */
int refit_source_check(refit_store_t *s, const char *source_id, int64_t stale_after_ms,
                       struct refit_source_record **out, bool *stale);

/* Many sources' records and heartbeats, and `extra` other keys, in one
 * round trip (one get_many).  Per item: status 0 with rec (freed by the
 * caller with free) and stale, or REFIT_ENOENT (no record: withdrawn) or
 * REFIT_EPROTO (a record that does not decode or names another source).
 * rec->heartbeat_ms is the latest heartbeat known: the record's, its
 * heartbeat key's or seen_hb_ms.  extra items as refit_store_get_many
 * leaves them.  Returns an error of the whole read only.
 *
 * seen_hb_ms (in, 0: none) is a heartbeat time already read for this
 * source (a fence after discovery): while it is younger than half of
 * stale_after, the heartbeat key is not read again, since a heartbeat only
 * moves forward and its key lives stale_after past its last write, so
 * reading it could only say "fresh" (half: a margin for the clocks of the
 * publisher, the store and this host). */
struct refit_source_check {
    const char *id; /* in */
    struct refit_source_record *rec;
    bool stale;
    int status;
    uint64_t seen_hb_ms; /* in */
};
int refit_source_check_many(refit_store_t *s, struct refit_source_check *c, size_t n, int64_t stale_after_ms,
                            struct refit_store_get_item *extra, size_t n_extra);
/* The same, and `puts` written after the reads in the same round trip
 * (refit_store_get_put_many: on an error of the whole call each put may
 * or may not have been written). */
int refit_source_check_many_put(refit_store_t *s, struct refit_source_check *c, size_t n, int64_t stale_after_ms,
                                struct refit_store_get_item *extra, size_t n_extra,
                                const struct refit_store_put_item *puts, size_t n_puts);

/* ------------------------------------------------------------------ */
/* Acknowledgements: "versions/<V>/acks/<receiver>" */

struct refit_ack {
    uint32_t schema;
    uint64_t version;
    const char *receiver;
    uint64_t time_ms;
};
int refit_ack_encode(const struct refit_ack *a, void **buf, size_t *len);
int refit_ack_decode(const void *buf, size_t len, const char *key, struct refit_ack **out);
/* Written live (re-written after a store restart); forget the key of an
 * older version with refit_store_forget. */
int refit_ack_put(refit_store_t *s, uint64_t version, const char *receiver);
/* The ack's key (key: REFIT_STORE_MAX_KEY + 1 bytes) and value (*val
 * freed by the caller with free()), to write with other operations; the
 * caller marks it live (refit_store_remember) once written. */
int refit_ack_item(uint64_t version, const char *receiver, char *key, void **val, size_t *len);
/* Receivers that acknowledged version (valid acks only). */
int refit_ack_count(refit_store_t *s, uint64_t version, size_t *n);

/* ------------------------------------------------------------------ */
/* Keys and retention */

/* "sources/<id>", "versions/<V>/sources/<id>", "versions/<V>/acks/<r>",
 * "heartbeats/<id>", "catalogs/<hex>" into buf (REFIT_STORE_MAX_KEY + 1
 * bytes); REFIT_EINVAL for an id that is not one key component. */
int refit_key_source(char *buf, const char *source_id);
int refit_key_version_source(char *buf, uint64_t version, const char *source_id);
int refit_key_ack(char *buf, uint64_t version, const char *receiver);
int refit_key_heartbeat(char *buf, const char *source_id);
void refit_key_catalog(char *buf, const struct refit_hash128 *h);
int refit_check_id(const char *what, const char *id);
/* The version of a "versions/<V>/..." key; REFIT_EINVAL for other keys. */
int refit_key_parse_version(const char *key, uint64_t *version);

/* Delete every "versions/<V>/..." key with V + retain <= latest (keeps
 * the newest `retain` versions up to latest).  *deleted may be NULL. */
int refit_versions_retain(refit_store_t *s, uint64_t latest, uint32_t retain, size_t *deleted);
/* Delete catalogs no record under sources/ or versions/ refers to.  With
 * dry_run only count them. */
int refit_catalogs_gc(refit_store_t *s, bool dry_run, size_t *deleted);

/* Unix time in ms (wall clock: heartbeats are compared across hosts). */
uint64_t refit_time_ms(void);

#ifdef __cplusplus
}
#endif
#endif
