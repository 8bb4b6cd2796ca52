/* receiver.h — the receiver's state, shared by the files of the engine that
 * run parts of a pull (receiver.c: pull mode; push.c: push mode; fanout.c:
 * replicas).  Internal: not installed. */
#ifndef RF_RECEIVER_H
#define RF_RECEIVER_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "plan.h"
#include "push.h"
#include "refit/catalog.h"
#include "sums.h"

struct rcv_dst {
    char *name;
    enum refit_dtype dtype;
    int ndim;
    int64_t shape[REFIT_MAX_DIMS];
    size_t nbytes;
    size_t lt;    /* index in the target layout */
    int is_scale; /* the <name>_scale_inv of lt */
    void *ptr;    /* bound by the caller, or allocated (owned) */
    int owned;
    uint32_t memtype;
    uint64_t staging_off;
    refit_tp_region_t *reg; /* in_place: the destination registered */
    void *reg_ptr;
};

struct cat_cache {
    struct refit_hash128 hash;
    refit_catalog_t *cat;
};

struct rcv_source {
    char *id;
    struct refit_source_record *rec;
    const refit_catalog_t *cat;
    refit_layout_t *meg;
    struct refit_par_layout meg_lay; /* the layout meg was made for */
    refit_tp_peer_t *peer;
    void *addr;
    size_t addr_len;
    refit_tp_rkey_t **rkeys;
    struct refit_blob *rkey_blobs; /* copies, to notice changes */
    size_t n_rkeys;
    /* The previous key of each region: a copy-mode source alternates two
     * staging arenas, so both stay unpacked. */
    refit_tp_rkey_t **alt_rkeys;
    struct refit_blob *alt_blobs;
    struct rf_sums sums;
    ptrdiff_t *psrc_of; /* catalog index → psrc index, -1 */
};

struct refit_receiver {
    refit_context_t *ctx;
    refit_transport_t *tp;
    struct refit_target target;
    char *id;
    struct refit_convert_opts copts;
    refit_layout_t *lay;
    struct rcv_dst *d;
    size_t n_d;
    size_t *dst_of_lt;   /* lt → its data destination */
    ptrdiff_t *scale_of_lt; /* lt → its scale destination or -1 */
    int allocate;
    int resolved; /* destination dtypes resolved from the sources */

    struct cat_cache *cats;
    size_t n_cats;
    struct rcv_source *src;
    size_t n_src;

    /* Plan and its inputs, cached under plan_key. */
    char *plan_key;
    struct rf_psrc *psrc;
    uint32_t *psrc_source;
    size_t *psrc_cat;
    size_t n_psrc, cap_psrc;
    struct rf_pdst *pdst;
    enum refit_dtype *img_dtype;
    struct rf_plan plan;
    int have_plan;
    /* Completion tracking: per desc the lts it feeds (CSR), per lt pending. */
    size_t *feed_first, *feed;
    size_t *scat_first, *scat; /* scatters per tensor */
    uint32_t *pending;
    uint64_t staging_need;
    size_t n_pieces;
    uint8_t *unfed; /* tensors no descriptor feeds (padding only) */
    size_t *check_order; /* checks sorted by (buf, off) */

    /* Staging is double-buffered when refit owns destinations: they live in
     * the front buffer, a pull writes the back one, and commit flips them
     * (no copy).  Destinations bound by the caller are copied into from the
     * back buffer.  `staging`/`staging_reg` name the back buffer. */
    void *stage[2];
    refit_tp_region_t *stage_reg[2];
    int front, doubled;
    void *staging, *scratch;
    size_t staging_len, scratch_len;
    refit_tp_region_t *staging_reg, *scratch_reg;

    uint64_t last_version;
    /* During a pull. */
    struct refit_pull_stats *st;
    double convert_s, verify_s;
    int verify_this;
    /* Push mode (push.c): the work list and mailbox; NULL in pull mode. */
    struct rf_push_rcv *push;
    /* CUDA destinations: streams and the pinned staging (rcvdev.c). */
    struct rf_rcvdev *dev;
    int scratch_dev; /* scratch is device memory (rcvdev.c: resident pulls) */

    struct rf_fanout *fan; /* tree fan-out (fanout.c); NULL: off */
};

/* Fence, commit and acknowledge version v (receiver.c). */
int rf_rcv_commit(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st);

/* Tree fan-out (fanout.c; docs/fanout.md).  create: sets r->fan when
 * refit.fanout.* asks for it; retire: before a pull writes any buffer;
 * pull: after planning and buffers, chooses the source (*done: a replica
 * was copied and committed; else the trainer is pulled, under its lease);
 * fence: rf_rcv_commit's fence for a replica pull (rf_fanout_replica);
 * end: after every pull, re-publishes on success and releases the lease. */
int rf_fanout_create(refit_receiver_t *r);
void rf_fanout_destroy(refit_receiver_t *r);
int rf_fanout_retire(refit_receiver_t *r, uint64_t v);
int rf_fanout_pull(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st, int *done);
int rf_fanout_replica(const refit_receiver_t *r);
int rf_fanout_fence(refit_receiver_t *r, uint64_t v);
void rf_fanout_end(refit_receiver_t *r, uint64_t v, int rc, struct refit_pull_stats *st);

#endif
