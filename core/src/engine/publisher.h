/* publisher.h — the publisher's state and strategies (internal).
 *
 * refit_publisher_publish (publisher.c) runs one sequence for every
 * configuration:  hold.begin (which arena V goes to; what the store must
 * stop offering before memory changes) -> stage small (or all) tensors
 * into the arena and hash everything -> checksums -> record READY(V) ->
 * hold.published -> delivery.deliver (push: write V into every receiver)
 * -> retention.  Two const strategies, chosen at refit_publisher_create:
 *   hold      refit.publish: zero_copy (receivers read the trainer's
 *             tensors; small ones gathered into one arena) or copy (every
 *             tensor into one of two arenas, V into the one V-2 used)
 *             — publish_modes.c;
 *   delivery  refit.mode: pull (receivers read; nothing to do) —
 *             publish_modes.c — or push (serve every receiver's work
 *             list) — push_pub.c. */
#ifndef RF_PUBLISHER_H
#define RF_PUBLISHER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "refit/catalog.h"
#include "sums.h"

struct pub_tensor {
    char *name; /* canonical Megatron name */
    void *ptr;
    enum refit_dtype dtype;
    int ndim;
    int64_t shape[REFIT_MAX_DIMS];
    uint32_t memtype;
    size_t nbytes;
    const struct refit_layout_tensor *lt;
    int gathered;   /* copied into the gather arena at each publish */
    uint32_t region;
    uint64_t offset;
    uint32_t chunk_rows;
    uint64_t rows, row_bytes;
};

struct pub_region {
    void *base;
    size_t len;
    uint32_t memtype;
    refit_tp_region_t *reg;
    void *rkey;
    size_t rkey_len;
    int owned; /* a gather arena (refit's memory) */
};

/* A version's checksum table exposed over the transport (refit.sums:
 * transport; sums.h), one per arena. */
struct pub_sumtab {
    void *buf;
    size_t len;
    refit_tp_region_t *reg;
    void *rkey;
    size_t rkey_len;
};

/* How a version's bytes are held (refit.publish). */
struct rf_pub_hold {
    size_t size;
    const char *name;
    int copy_all;   /* every tensor is copied into an arena */
    int arenas;     /* arenas made when something is gathered */
    uint32_t keeps; /* versions the record keeps readable */
    /* Before V touches memory: *arena := the arena V goes to, and the store
     * stops offering what that memory holds (22.10: a failed publish never
     * leaves a READY record over changed bytes). */
    int (*begin)(refit_publisher_t *pub, uint64_t v, int *arena);
    /* Regions the catalog and the record name. */
    size_t (*catalog_regions)(const refit_publisher_t *pub);
    /* Catalog region `region` of V (in `arena`): the registered memory. */
    int (*region)(refit_publisher_t *pub, int arena, uint32_t region, struct pub_region **out);
    /* V is READY in `arena`. */
    void (*published)(refit_publisher_t *pub, uint64_t v, int arena);
};

/* Who moves V to the receivers (refit.mode). */
struct rf_pub_delivery {
    size_t size;
    const char *name;
    int host_arena; /* device tensors go through the host arena (push quantizes on the host) */
    int (*deliver)(refit_publisher_t *pub, uint64_t v, int arena);
    void (*destroy)(refit_publisher_t *pub);
    uint64_t (*bytes)(const refit_publisher_t *pub); /* written during the last publish */
};

extern const struct rf_pub_hold rf_hold_zero_copy, rf_hold_copy; /* publish_modes.c */
extern const struct rf_pub_delivery rf_deliver_pull;             /* publish_modes.c */
extern const struct rf_pub_delivery rf_deliver_push;             /* push_pub.c */

struct refit_publisher {
    refit_context_t *ctx;
    refit_transport_t *tp;
    refit_tp_bell_t *bell; /* rung with each READY version (bells.h); NULL: none */
    struct refit_parallel par;
    char *par_layout;   /* par.layout's and par.pp_layers' own copies */
    int *par_pp_layers;
    char *id;
    refit_layout_t *meg; /* its source layout (Megatron or FSDP) */
    const struct rf_pub_hold *hold;
    const struct rf_pub_delivery *delivery;
    struct pub_tensor *t;
    size_t n, cap;
    struct pub_region *rg;
    size_t n_rg;
    int dirty; /* tensors added or moved since the regions were built */
    void *addr;
    size_t addr_len;
    struct refit_hash128 cat_hash;
    int have_cat;
    int member; /* members/<id> written (receivers watch it to learn of new sources) */
    uint64_t last_version;
    size_t sums_segs; /* checksum segments of last_version (sums.h) */
    struct pub_sumtab sumtab[2]; /* refit.sums: transport, per arena (pub_sums.c) */
    int sumtab_off;              /* the table could not be registered: store segments */
    size_t registered, reused; /* registrations made and kept, for tests and logs */
    /* Copy: the arena each version went to; the next one's. */
    int next_buf;
    uint64_t buf_version[2];
    /* Heartbeat thread with its own store handle (handles are not shared
     * between threads). */
    pthread_t hb;
    int hb_running;
    pthread_mutex_t hb_lock;
    pthread_cond_t hb_cond;
    int hb_stop;
    uint64_t hb_version;
    /* Push mode (push_pub.c): cached work lists and receiver connections. */
    struct rf_push_pub *push;
    /* CUDA tensors: device, streams, staging pipeline (pubdev.c). */
    struct rf_pubdev *dev;
    /* refit.delta.enabled: the base and the delta arenas (delta_pub.c). */
    struct rf_pubdelta *delta;
};

/* pub_sums.c: V's checksums into `arena`'s table when this publisher
 * exposes one (refit.sums: transport, pull delivery, verify on): *on = 1;
 * *on = 0 when V's checksums go to the store as segments (a transport
 * that cannot register the table says so once and falls back). */
int rf_pubsums_put(refit_publisher_t *pub, int arena, uint64_t version, const struct rf_sums *sums, int *on);
/* The table's remote key of `arena` for the record: 1 if there is one. */
int rf_pubsums_key(const refit_publisher_t *pub, int arena, struct refit_blob *out);
void rf_pubsums_destroy(refit_publisher_t *pub);

/* publisher.c: write the record of `version` with `status` and `keeps`,
 * naming `arena`'s keys (READY) or none (withdrawn). */
int rf_pub_record(refit_publisher_t *pub, uint64_t version, uint32_t status, uint32_t keeps, int arena);

/* delta_pub.c (delta_eng.h): after V's checksums are stored (sums_hash:
 * their identity, rf_sums_segs_id) and before READY(V): encode V against the base
 * and store V's delta record (a failure only leaves V without one). */
int rf_pubdelta_publish(refit_publisher_t *pub, uint64_t v, uint64_t sums_hash);
/* V is READY: the base holds it. */
void rf_pubdelta_published(refit_publisher_t *pub, uint64_t v);
void rf_pubdelta_invalidate(refit_publisher_t *pub);
/* Push mode: 1 when V's delta was made from exactly base (whose checksums'
 * identity is base_sums), with its arena's registration and data
 * length; 0 otherwise (the receiver gets V whole). */
int rf_pubdelta_offer(const refit_publisher_t *pub, uint64_t v, uint64_t base, uint64_t base_sums,
                      refit_tp_region_t **reg, uint64_t *len);
void rf_pubdelta_destroy(refit_publisher_t *pub);
/* delta_dev.c: the CUDA tensors' delta, encoded on their device against a
 * device copy of the base (usable: the base is V-1 as far as delta_pub.c
 * knows), then the base brought to V; never fails the publish (a CUDA
 * error leaves them without a delta).  _tensor: 1 when tensor i's chunk
 * deltas (back to back) and lengths are on the host. */
struct rf_pubdelta_dev;
int rf_pubdelta_dev_encode(refit_publisher_t *pub, struct rf_pubdelta_dev **dd, int usable);
int rf_pubdelta_dev_tensor(const struct rf_pubdelta_dev *dd, size_t i, const uint8_t **delta, const uint32_t **lens);
void rf_pubdelta_dev_destroy(struct rf_pubdelta_dev *dd);
void rf_pubdelta_stats(const refit_publisher_t *pub, struct refit_publisher_stats *st);

#endif
