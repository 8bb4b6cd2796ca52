/* publisher.h — the publisher's state, shared by the engine files that run
 * parts of a publish (publisher.c; push.c: push mode).  Internal. */
#ifndef RF_PUBLISHER_H
#define RF_PUBLISHER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "push.h"
#include "refit/catalog.h"

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
    int owned; /* the gather arena (refit's memory) */
};

struct refit_publisher {
    refit_context_t *ctx;
    refit_transport_t *tp;
    struct refit_parallel par;
    char *id;
    refit_layout_t *meg;
    struct pub_tensor *t;
    size_t n, cap;
    struct pub_region *rg;
    size_t n_rg;
    int dirty; /* tensors added or moved since the regions were built */
    void *addr;
    size_t addr_len;
    struct refit_hash128 cat_hash;
    int have_cat;
    uint64_t last_version;
    size_t registered, reused; /* registrations made and kept, for tests and logs */
    /* refit.publish: copy: every tensor is copied into one of two staging
     * arenas (pub->rg[0], pub->rg[1]); version V goes into the arena the
     * version before last used, once that version is released. */
    int copy_mode;
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
    /* Push mode (push.c): cached work lists and receiver connections. */
    struct rf_push_pub *push;
    /* CUDA tensors: device, streams, staging pipeline (pubdev.c). */
    struct rf_pubdev *dev;
};

#endif
