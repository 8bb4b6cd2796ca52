/* receiver.h — the receive side of the refit cycle as stages (internal;
 * docs/architecture.md, "The engine", draws the same map).
 *
 * struct refit_receiver only sequences the stages; each stage owns one
 * struct below, written by its own file(s) and read by the others:
 *
 *   stage      struct          files            owns
 *   dests      rf_dests        dests.c          the target layout's tensors: bound or owned memory
 *   discover   rf_discover     discover.c       sources READY at V, their catalogs (cached by hash)
 *              (the fence)     fence.c          the one check that what was read is still offered
 *   plan       rf_rplan        plan_inputs.c    planner inputs, the plan (plan.c), its feeds, its key
 *                              plan_cands.c     the sources holding each piece, the one it is read from
 *   buffers    rf_bufs         buffers.c        staging (double-buffered), scratch, commit, ack
 *   transfer   rf_xfer         transfer.c       tensors scattered and converted as their bytes land
 *              rf_peers        peers.c          connections and remote keys per source; reconnects
 *   verify     rf_verify       verify.c         this version's checksums and the chunks pulled
 *
 * A mode (struct rf_rcv_mode: pull in transfer.c, push in push_rcv.c,
 * fan-out in fanout.c) says how the bytes of a planned version reach
 * staging and what the fence checks; it is chosen once, in
 * refit_receiver_create, and refit_receiver_pull runs the same cycle for
 * every mode:  discover + plan -> mode.prepare -> buffers -> mode.transfer
 * -> fence (mode.fence) + commit + ack -> mode.end.  CUDA destinations are
 * rcvdev.c's (struct rf_rcvdev, devpath.h). */
#ifndef RF_RECEIVER_H
#define RF_RECEIVER_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "plan.h"
#include "refit/catalog.h"
#include "sums.h"

/* ------------------------------------------------------------------ */
/* The pull trace: with REFIT_PULL_TRACE=1 in the environment, every pull
 * prints on stderr how long each of its steps took (milliseconds), and the
 * device program its kernels' time on the device (CUDA events): where a
 * warm cycle's time goes, measured in the pull itself (docs/cuda.md). */

#define RF_TRACE_MAX 24

struct rf_trace {
    int on; /* REFIT_PULL_TRACE=1 (read at receiver creation) */
    int n;
    const char *what[RF_TRACE_MAX]; /* the step that ended at t[i] */
    double t[RF_TRACE_MAX];
    double kernel_ms; /* the device program's kernels, on the device; < 0 none */
    char steps[192];  /* the device program's host steps (rf_dprog_steps) */
};

/* The end of a step of this pull (a no-op unless tracing). */
void rf_trace_mark(struct rf_trace *tr, const char *what);

/* ------------------------------------------------------------------ */
/* dests.c: the destinations */

struct rf_dst {
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

struct rf_dests {
    struct rf_dst *d;
    size_t n;
    size_t *dst_of_lt;      /* layout tensor -> its data destination */
    ptrdiff_t *scale_of_lt; /* layout tensor -> its scale destination or -1 */
    int resolved;           /* dtypes the layout leaves open taken from the sources */
};

int rf_dests_build(struct rf_dests *ds, const refit_layout_t *lay);
/* doubled: owned destinations live in staging (buffers.c), not freed here. */
void rf_dests_fini(struct rf_dests *ds, refit_transport_t *tp, int doubled);
int rf_dests_bind(refit_receiver_t *r, const char *name, void *ptr, enum refit_dtype dtype, int ndim,
                  const int64_t *shape, uint32_t memtype);
int rf_dests_allocate(struct rf_dests *ds, const char *who);
/* Destination dtypes the layout leaves open follow the sources' (img_dtype
 * per layout tensor), once. */
int rf_dests_resolve(struct rf_dests *ds, const refit_layout_t *lay, const enum refit_dtype *img_dtype,
                     int doubled);
/* Staging offsets: every destination's bytes, 64-byte aligned with a gap;
 * returns the staging size. */
uint64_t rf_dests_place(struct rf_dests *ds);
/* The destination holding staging offset off (offsets sorted). */
size_t rf_dests_at(const struct rf_dests *ds, uint64_t off);

/* ------------------------------------------------------------------ */
/* discover.c: sources and catalogs */

struct rf_source {
    char *id;
    struct refit_source_record *rec;
    const refit_catalog_t *cat; /* in the cache */
    refit_layout_t *meg;        /* its source layout (Megatron or FSDP) */
    struct refit_par_layout meg_lay;
    struct refit_src_ext meg_ext;
};

struct rf_discover {
    struct {
        struct refit_hash128 hash;
        refit_catalog_t *cat;
    } *cats;
    size_t n_cats;
    struct rf_source *src; /* at the version being pulled, sorted by id */
    size_t n_src;
    /* The ids below sources/ as last listed, kept current by a watch of
     * members/ (a key each publisher writes once) from cursor (0: list at
     * the next read); wcursor: the wait's watch of sources/ (a new
     * version); synced: a wait has just watched. */
    char **ids;
    size_t n_ids;
    uint64_t cursor, wcursor;
    /* Ids whose record was absent at the last full read: a warm read
     * looks at them too (their return writes no member key). */
    char **gone;
    size_t n_gone;
    int synced;
    /* ids_gen counts changes of the set (an id new to it, a listing);
     * full_gen is its value at the last read of every record.  While they
     * are equal a warm pull reads only the records of the sources its
     * cached plan reads (rf_discover_read); full_next forces a full read. */
    uint64_t ids_gen, full_gen;
    int full_next;
    /* The membership epoch (RF_KEY_MEMBERSHIP) read just before the last
     * listing (epoch_seen; epoch NULL: absent): a warm partial read reads
     * it with the records instead of watching members/ (one round trip
     * less), and relist is set when it changed (a source joined, or the
     * store restarted): the ids are listed again. */
    void *epoch;
    size_t epoch_len;
    int epoch_seen, relist;
    /* Checksums read with the records ahead of need (the version the next
     * pull most likely takes), for rf_verify_fetch. */
    struct rf_presum {
        char *key; /* a checksum key of rf_verify_keys */
        void *val;
        size_t len;
        int status;
    } *pre;
    size_t n_pre;
};

/* The live READY records of this model, sorted by id. */
struct rf_seen {
    struct refit_source_record **rec;
    size_t n;
    /* Only the records of the sources the cached plan reads (the set of
     * ids unchanged since the last full read): the others keep theirs. */
    int partial;
};

void rf_discover_fini(struct rf_discover *d);
/* The sources only (the catalog cache stays). */
void rf_discover_drop_sources(struct rf_discover *d);
/* The live READY records (one watch or list, then one read of every
 * record and heartbeat, with the checksums of version `guess` of the
 * sources the current plan reads, when it verifies; guess 0: none).  A
 * warm pull whose watch saw no new source reads only the records and
 * heartbeats of the sources its cached plan reads (sv->partial): at a
 * thousand receivers of 256 trainer ranks, 16 records each, not 256. */
int rf_discover_read(refit_receiver_t *r, uint64_t guess, struct rf_seen *out);
/* Wait up to ms for a change below sources/ (a watch; what changed is
 * read by the next rf_discover_read).  0 or REFIT_ETIMEDOUT. */
int rf_discover_wait(refit_receiver_t *r, int64_t ms);
/* The checksum value read ahead at key: 0 with the value (the caller
 * frees it), REFIT_ENOENT when none was read. */
int rf_discover_presum(refit_receiver_t *r, const char *key, void **val, size_t *len, int *status);
void rf_seen_free(struct rf_seen *sv);
/* The version to pull for `want` (a number, REFIT_LATEST or REFIT_NEXT;
 * 0: none yet).  For a number older than the newest, sources that keep
 * two versions are replaced by their record of `want`; a source that no
 * longer has it is REFIT_ESTALE. */
int rf_discover_choose(refit_receiver_t *r, struct rf_seen *sv, uint64_t want, uint64_t *v);
/* Sources at v are all there: none still publishing an older version, and
 * every declared TP/EP position present (partial: the records read all at
 * v; the positions are the cached plan's). */
int rf_discover_complete(const struct rf_seen *sv, uint64_t v);
/* r->disc.src := the records of sv at v (taken from sv), with catalogs and
 * layouts (what is known of a source is kept; whether the plan changes is
 * the plan key's to say).  Partial: the records read replace theirs, the
 * other sources stay as they were. */
int rf_discover_adopt(refit_receiver_t *r, struct rf_seen *sv, uint64_t v);
/* A hash of the plan's inputs: destinations, sources, layouts, catalogs. */
int rf_discover_plan_key(const refit_receiver_t *r, struct refit_hash128 *key);

/* ------------------------------------------------------------------ */
/* fence.c: the fence */

enum rf_fence_kind { RF_FENCE_SOURCE = 1, RF_FENCE_REPLICA = 2 };

/* What a pull read from, as the store must still offer it. */
struct rf_fence_item {
    enum rf_fence_kind kind;
    const char *id;
    uint32_t keeps;          /* as read: 2 = v stays readable while v+1 is published */
    struct refit_blob ident; /* source: its catalog hash; replica: the remote key read */
    const char *lease_key;   /* a lease the puller must still hold (NULL: none) */
    const char *holder;
};

/* Every item still offers v: READY, fresh, the same identity, at v — or,
 * unless `exact`, at v+1 when both the record read and the record now keep
 * two versions.  REFIT_ESTALE naming the item otherwise. */
int rf_fence(refit_receiver_t *r, const struct rf_fence_item *it, size_t n, uint64_t v, int exact);
/* The fence of a pull from the discovered sources; with r->fence_ack == v
 * the ack of v is written in the same round trip (r->fence_acked). */
int rf_fence_sources(refit_receiver_t *r, uint64_t v);

/* ------------------------------------------------------------------ */
/* plan_inputs.c: the plan and what it is made from */

struct rf_rplan {
    struct refit_hash128 key; /* of the inputs (rf_discover_plan_key) */
    int have;                 /* plan, feeds and key valid */
    struct rf_cands *cands;   /* while planning: the pieces' candidates (plan_cands.c, in r->scratch) */
    uint32_t *order;          /* while planning: the pieces' rf_plan_order (in r->scratch) */
    /* The source tensors read, and for each its source, catalog index and
     * number in the order candidates are first met (plan_cands.c; a plan's
     * digest names them by it). */
    struct rf_psrc *psrc;
    uint32_t *psrc_source;
    size_t *psrc_cat;
    uint32_t *psrc_num;
    size_t n_psrc;
    struct rf_pdst *pdst;        /* per layout tensor */
    enum refit_dtype *img_dtype; /* per layout tensor: the sources' dtype */
    struct rf_plan plan;
    /* Completion tracking: per descriptor the layout tensors it feeds
     * (CSR), per tensor its scatters; checks sorted by (buf, off). */
    size_t *feed_first, *feed;
    size_t *scat_first, *scat;
    size_t *check_order;
    uint64_t staging_need;
    size_t n_pieces;
};

/* 2-D view of a layout tensor: [rows, cols] (1-D: [n, 1]; a stack
 * [E, r, c]: [E*r, c]); *slot_rows = r for stacks. */
void rf_layout_dims(const struct refit_layout_tensor *t, uint64_t *rows, uint64_t *cols, uint64_t *slot_rows);
void rf_rplan_drop(struct rf_rplan *p);
/* Pieces (the composed layout; *pc malloc'ed), their candidates and image
 * dtypes. */
int rf_rplan_inputs(refit_receiver_t *r, struct rf_piece **pc, size_t *n_pc);
/* Each piece's source chosen (the planner's rule, or with refit.replicas >
 * 1 layout-wide: rf_sched_choose, RF_SCHED_SPREAD); psrc made for the
 * chosen tensors. */
int rf_rplan_choose(refit_receiver_t *r, struct rf_piece *pc, size_t n);
/* Images, the planner, feeds and check order (destinations placed). */
int rf_rplan_build(refit_receiver_t *r, struct rf_piece *pc, size_t n_pc);
const char *rf_rplan_dst_name(void *receiver, uint32_t lt);

/* plan_cands.c: which sources hold each piece (classes of equal sources),
 * which one it is read from. */
struct rf_cands;
/* The composed layout as pieces with their candidates (*cs), in
 * composition order; image dtypes noted. */
int rf_cands_pieces(refit_receiver_t *r, struct rf_piece **pc, size_t *n_pc, struct rf_cands **cs);
/* Each piece's source chosen: pc[i].psrc set, r->plan.psrc made,
 * r->plan.order the pieces' rf_plan_order.  The candidates, the pieces and
 * the order are the scratch arena's (r->scratch). */
int rf_cands_choose(refit_receiver_t *r, struct rf_cands *cs, struct rf_piece *pc, size_t n);

/* ------------------------------------------------------------------ */
/* buffers.c: staging, scratch, commit, ack */

struct rf_bufs {
    /* Staging is double-buffered when refit owns destinations: they live
     * in the front buffer, a pull writes the back one, and commit flips
     * them (no copy).  Destinations bound by the caller are copied into
     * from the back buffer.  `staging`/`staging_reg` name the back one. */
    void *stage[2];
    refit_tp_region_t *stage_reg[2];
    int front, doubled;
    void *staging, *scratch;
    size_t staging_len, scratch_len;
    refit_tp_region_t *staging_reg, *scratch_reg;
    int scratch_dev; /* device memory (rcvdev.c: resident pulls) */
};

void rf_bufs_fini(refit_receiver_t *r);
/* Owned destinations re-pointed into the front buffer (after placing). */
void rf_bufs_repoint(refit_receiver_t *r, uint64_t staging);
/* Staging and scratch as the plan needs them, registered. */
int rf_bufs_ensure(refit_receiver_t *r, double *alloc_s, double *reg_s);
/* Where (buf, off) is: a pointer, and the region and offset to land READs. */
void *rf_bufs_ptr(refit_receiver_t *r, uint32_t buf, uint64_t off);
int rf_bufs_local(void *receiver, uint32_t buf, uint64_t off, uint64_t len, refit_tp_region_t **reg,
                  uint64_t *roff);
/* Staging into the destinations (a flip, a copy, nothing in place), then
 * the acknowledgement of v. */
int rf_bufs_commit(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st);

/* ------------------------------------------------------------------ */
/* transfer.c: completion and conversion */

struct rf_xfer {
    uint32_t *pending;    /* per layout tensor: descriptors still out */
    uint8_t *unfed;       /* per layout tensor: fed by no descriptor */
    const uint8_t *ready; /* per layout tensor: arrives final (push: trainer-quantized); NULL: none */
    /* Per layout tensor: in its staging bytes, final, during this pull.  A
     * data-parallel fallback (rf_pull_retry sets keep) re-reads only the
     * descriptors that feed a tensor not finished yet. */
    uint8_t *finished;
    int keep;             /* the next rf_xfer_begin keeps `finished` (a retry of this pull) */
    double convert_s;
};

void rf_xfer_fini(struct rf_xfer *x);
/* Counts for this pull; `ready` as above (kept until the next begin). */
int rf_xfer_begin(refit_receiver_t *r, const uint8_t *ready);
/* Descriptors [first, first+n) landed: verify them, finish their tensors. */
int rf_xfer_done(void *receiver, size_t first, size_t n);
/* The tensors no descriptor feeds (padding only). */
int rf_xfer_finish_unfed(refit_receiver_t *r);

/* peers.c: per source, a connection and its unpacked remote keys */

struct rf_peer {
    char *id;
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
    /* After a transport failure: connections dropped, retried with backoff. */
    uint32_t failures;
};

struct rf_peers {
    struct rf_peer *p; /* aligned with the discovered sources */
    size_t n;
};

void rf_peers_fini(refit_receiver_t *r);
/* Align with r->disc.src: keep the peers of sources still there, drop the rest. */
int rf_peers_sync(refit_receiver_t *r);
/* Connect and unpack what changed (reconnecting failed sources with
 * backoff, within refit.timeout); *fresh when anything was made. */
int rf_peers_connect(refit_receiver_t *r, int *fresh);
/* A request to source i failed in the transport: its connection and keys
 * go, the next pull connects again. */
void rf_peers_broken(refit_receiver_t *r, size_t i);

/* ------------------------------------------------------------------ */
/* verify.c: checksums */

struct rf_sumcheck {
    struct rf_sums *sums; /* per source, this version's */
    size_t n;
    int on;               /* this pull verifies */
    double seconds;
};

void rf_verify_fini(struct rf_sumcheck *v);
/* The checksum keys of v the current plan reads: per source it reads, the
 * segments (sums.h) holding the tensors its checks cover; every segment
 * with refit.delta.enabled (the delta stage names a base by the sum of
 * their trailers, rf_sums.id) or without a plan.  Sources without a
 * catalog yet are left out. */
struct rf_sumkey {
    char key[REFIT_STORE_MAX_KEY + 1];
    size_t src, seg;
};
int rf_verify_keys(refit_receiver_t *r, uint64_t v, struct rf_sumkey **out, size_t *n);
/* Fetch and check every source's checksums of v (refit.verify not off);
 * those of sources with a checksum table wait for rf_verify_fetch_remote. */
int rf_verify_fetch(refit_receiver_t *r, uint64_t v);
/* Source i's checksums come from its table over the transport (sums.h):
 * its record names one, this pull has a plan, no delta, not push. */
int rf_verify_remote(const refit_receiver_t *r, size_t i);
/* After rf_peers_connect: READ the table slots of the segments the plan's
 * checks cover, with the data's transport, and check them as store
 * segments are checked (a slot of another version or a broken trailer is
 * refused). */
int rf_verify_fetch_remote(refit_receiver_t *r, uint64_t v);
/* The chunks lying wholly in [off, off+len) of buffer buf. */
int rf_verify_range(refit_receiver_t *r, uint32_t buf, uint64_t off, uint64_t len);

/* ------------------------------------------------------------------ */
/* Modes */

struct rf_rcv_mode {
    size_t size;
    const char *name;
    /* Mode state (r->mode_state), after the transport exists. */
    int (*create)(refit_receiver_t *r);
    void (*destroy)(refit_receiver_t *r);
    /* The plan was built (pieces: the planner's, chosen candidate first);
     * plan_drop: it goes. */
    int (*planned)(refit_receiver_t *r, struct rf_piece *pc, size_t n_pc);
    void (*plan_drop)(refit_receiver_t *r);
    /* Before the pull touches a buffer. */
    int (*prepare)(refit_receiver_t *r, uint64_t v);
    /* Bytes of v into staging (converted, verified); stats filled. */
    int (*transfer)(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st);
    /* The fence before the commit. */
    int (*fence)(refit_receiver_t *r, uint64_t v);
    /* After transfer or commit failed with *rc: 1 (and *rc = 0) to transfer
     * again from elsewhere, 0 to fail with *rc. */
    int (*retry)(refit_receiver_t *r, uint64_t v, int *rc);
    /* After every pull, success or not. */
    void (*end)(refit_receiver_t *r, uint64_t v, int rc, struct refit_pull_stats *st);
};

extern const struct rf_rcv_mode rf_mode_pull;   /* transfer.c */
extern const struct rf_rcv_mode rf_mode_push;   /* push_rcv.c */
extern const struct rf_rcv_mode rf_mode_fanout; /* fanout.c */

/* Shared by the modes: the pull transfer (fetch checksums, connect, READ
 * while converting, finish), and operations that do nothing. */
int rf_pull_transfer(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st);
int rf_mode_no_create(refit_receiver_t *r);
void rf_mode_no_destroy(refit_receiver_t *r);
int rf_mode_no_planned(refit_receiver_t *r, struct rf_piece *pc, size_t n_pc);
int rf_mode_no_prepare(refit_receiver_t *r, uint64_t v);
int rf_mode_no_retry(refit_receiver_t *r, uint64_t v, int *rc);
void rf_mode_no_end(refit_receiver_t *r, uint64_t v, int rc, struct refit_pull_stats *st);

/* delta_rcv.c (delta_eng.h): pull mode's transfer with refit.delta.enabled
 * (wanted: the receiver can use deltas), and after the pull (committed or
 * not) whether the mirror now holds v. */
int rf_rcvdelta_wanted(const refit_receiver_t *r);
/* A receiver with refit.delta.enabled that cannot use deltas (resident in
 * device memory, refit.verify not full): says why once (a warning) and
 * counts the whole pull in st->delta_fallbacks; 0 otherwise. */
int rf_rcvdelta_whole(refit_receiver_t *r, struct refit_pull_stats *st);
int rf_rcvdelta_transfer(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st);
void rf_rcvdelta_end(refit_receiver_t *r, uint64_t v, int rc);
void rf_rcvdelta_destroy(refit_receiver_t *r);
/* The device mirror holding the last pull, laid out as staging, when its
 * deltas were applied on the device (delta_rcvdev.c): the commit copies
 * the CUDA destinations from it; NULL otherwise. */
const void *rf_rcvdelta_dev_image(const refit_receiver_t *r);
/* Push mode with deltas (push_rcv.c): before advertising V, the requests
 * to put in the advert (per source whose delta of V was made from what the
 * mirror holds; drop: per plan descriptor, not sent as raw bytes); after
 * the sources wrote, every raw descriptor applied (by_delta: per source,
 * its note said it wrote the delta) or copied into the mirror, checked and
 * converted — on failure V is pulled whole (*whole 1). */
struct push_adelta;
int rf_rcvdelta_push_ask(refit_receiver_t *r, uint64_t v, const uint8_t *drop, const struct push_adelta **asks,
                         size_t *n);
int rf_rcvdelta_push_land(refit_receiver_t *r, uint64_t v, const uint8_t *drop, const uint8_t *by_delta,
                          struct refit_pull_stats *st, int *whole);

/* fanout.c: whether refit.fanout.* asks for fan-out. */
int rf_fanout_requested(const refit_context_t *ctx, int *yes);

/* ------------------------------------------------------------------ */
/* The receiver */

#define RF_MAX_EXCLUDED 8

struct refit_receiver {
    refit_context_t *ctx;
    refit_transport_t *tp;
    struct refit_target target;
    char *id;
    char *target_name; /* copts.target_name's storage (NULL: the configuration's) */
    /* The source a failed transfer or connection named ("" none), and the
     * sources this pull plans without (data-parallel fallback). */
    char failed_src[REFIT_RECORD_MAX_ID + 1];
    char excluded[RF_MAX_EXCLUDED][REFIT_RECORD_MAX_ID + 1];
    int n_excluded;
    struct refit_convert_opts copts;
    refit_layout_t *lay;
    /* refit_receiver_plan_dry's trainer layouts (reset after each plan,
     * kept for the next: arena.h) */
    struct rf_arena *dry_arena;
    /* make_plan's pieces, candidates, composition and temporaries (reset
     * when it returns) */
    struct rf_arena *scratch;
    const struct rf_rcv_mode *mode;
    void *mode_state;

    struct rf_dests dests;
    struct rf_discover disc;
    struct rf_rplan plan;
    struct rf_bufs bufs;
    struct rf_xfer xfer;
    struct rf_peers peers;
    struct rf_sumcheck verify;
    struct rf_rcvdev *dev; /* CUDA destinations: streams, pinned staging (rcvdev.c) */
    struct rf_rcvprog *prog; /* colocated pulls as one device program (rcvprog.c) */
    struct rf_rcvdelta *delta; /* refit.delta.enabled: the mirror (delta_rcv.c) */
    struct rf_ackpost *ackpost; /* refit.ack_async: the ack worker (ackpost.h) */
    struct rf_bells *bells;     /* the sources' doorbells, opened on first wait (bells.h) */

    uint64_t last_version;
    /* The ack that goes with the fence's read (fence_commit, fence.c):
     * fence_ack the version to acknowledge there (0: none: refit.ack_async,
     * or a fence that is not the sources'), fence_acked set once it was
     * sent (written, or maybe written when the read failed as a whole). */
    uint64_t fence_ack;
    int fence_acked;
    /* A version whose ack went out with its fence in a pull that then
     * failed: the trainer may be reusing its memory, so this receiver never
     * reads it again (rf_discover_choose). */
    uint64_t released;
    struct refit_pull_stats *st; /* during a pull */
    struct rf_trace trace;
};

/* A pull that failed on a source is planned again without it when other
 * sources (data-parallel replicas) hold its bytes: *rc cleared and 1 to
 * transfer again, else 0 with *rc as it was.  The pull mode's retry. */
int rf_pull_retry(refit_receiver_t *r, uint64_t v, int *rc);

/* The receiver's target layout name ("vllm", "sglang" ...). */
static inline const char *rf_receiver_target(const struct refit_receiver *r)
{
    return r->copts.target_name ? r->copts.target_name : r->copts.target == REFIT_TARGET_HF ? "hf" : "vllm";
}


#endif
