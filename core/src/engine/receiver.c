/* receiver.c — one inference rank's side of the refit cycle: the receiver
 * object, its public API, and refit_receiver_pull, which sequences the
 * stages of receiver.h.
 *
 * pull(V): discover the sources READY at V and their catalogs, plan
 * (cached while catalogs, source layouts and our own layout are
 * unchanged), get the buffers, let the mode move the bytes of V into
 * staging (converted and verified as they land), fence, commit into the
 * destinations and acknowledge.  Until the commit nothing touches the
 * destinations (unless refit.in_place), so a failed pull leaves the
 * previous version in place. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "ackpost.h"
#include "bells.h"
#include "devpath.h"
#include "../layout_int.h"
#include "receiver.h"
#include "refit/log.h"

/* A parallel size as given (0 or 1 both mean one). */
static int par_size(int v)
{
    return v > 0 ? v : 1;
}

/* The strategy for this context, chosen once. */
static const struct rf_rcv_mode *choose_mode(refit_receiver_t *r, int *rc)
{
    int fan = 0;
    if ((*rc = rf_fanout_requested(r->ctx, &fan)))
        return NULL;
    if (fan && (r->ctx->in_place || r->ctx->push))
        refit_log(REFIT_LOG_WARN, "fanout", "%s: fan-out is off: it needs pull mode through staging (%s)", r->id,
                  r->ctx->in_place ? "refit.in_place is on" : "refit.mode is push");
    if (r->ctx->push)
        return &rf_mode_push;
    return fan && !r->ctx->in_place ? &rf_mode_fanout : &rf_mode_pull;
}

static int set_target(refit_receiver_t *r, const struct refit_target *target, const char **id, char *idbuf,
                      size_t idcap)
{
    int rc = 0;
    if (target->name) {
        /* any target layout of the model plugin; the layout says if it has none */
        r->copts.target = !strcmp(target->name, "hf") ? REFIT_TARGET_HF : REFIT_TARGET_VLLM;
        free(r->target_name);
        r->target_name = strdup(target->name);
        if (!r->target_name)
            rc = REFIT_ENOMEM;
        r->copts.target_name = r->target_name;
    }
    r->copts.tp = par_size(target->tp_size);
    r->copts.rank = target->tp_rank;
    r->copts.ep = target->ep_size > 1 ? target->ep_size : 0;
    if (!*id) {
        snprintf(idbuf, idcap, "%.64s-tp%d", rf_receiver_target(r), target->tp_rank);
        *id = idbuf;
    }
    if (!rc)
        rc = refit_check_id("receiver id", *id);
    if (!rc && !(r->id = strdup(*id)))
        rc = REFIT_ENOMEM;
    if (!rc && (target->tp_rank < 0 || target->tp_rank >= par_size(target->tp_size)))
        rc = refit_error_set(REFIT_EINVAL, "receiver %s: tp rank %d of %d", *id, target->tp_rank, target->tp_size);
    return rc;
}

/* refit.ack_async: the ack worker, with a store handle of its own. */
static int ack_worker(refit_receiver_t *r)
{
    refit_store_t *s = NULL;
    int rc = refit_store_open(r->ctx->cfg, r->ctx->loader, refit_store_namespace(r->ctx->store), &s);
    if (!rc)
        rc = rf_ackpost_create(s, r->id, &r->ackpost);
    return rc ? refit_error_push(rc, "receiver %s: refit.ack_async", r->id) : 0;
}

int refit_receiver_create(refit_context_t *ctx, const struct refit_target *target, const char *receiver_id,
                          refit_receiver_t **out)
{
    if (!ctx || !target || !out)
        return refit_error_set(REFIT_EINVAL, "refit_receiver_create: NULL argument");
    refit_receiver_t *r = calloc(1, sizeof(*r));
    if (!r)
        return REFIT_ENOMEM;
    r->ctx = ctx;
    r->target = *target;
    const char *trace = getenv("REFIT_PULL_TRACE");
    r->trace.on = trace && !strcmp(trace, "1");
    r->copts = ctx->copts;
    r->mode = &rf_mode_pull; /* until chosen: its operations are safe on a half-made receiver */
    char idbuf[REFIT_RECORD_MAX_ID + 1];
    int rc = set_target(r, target, &receiver_id, idbuf, sizeof(idbuf));
    if (!rc)
        rc = refit_layout_target(ctx->model, &r->copts, &r->lay);
    if (!rc)
        rc = rf_dests_build(&r->dests, r->lay);
    if (!rc)
        rc = rf_context_transport(ctx, r->id, &r->tp);
    const struct rf_rcv_mode *mode = rc ? NULL : choose_mode(r, &rc);
    if (mode) {
        r->mode = mode;
        rc = mode->create(r);
    }
    if (!rc && ctx->ack_async)
        rc = ack_worker(r);
    if (!rc) {
        /* Registered so a publisher waiting for acks can name us. */
        char key[REFIT_STORE_MAX_KEY + 1];
        rc = rf_key_receiver(key, r->id);
        if (!rc)
            rc = refit_store_put_live(ctx->store, key, r->id, strlen(r->id), 0);
    }
    if (rc) {
        refit_error_push(rc, "receiver %s", receiver_id);
        refit_receiver_destroy(r);
        return rc;
    }
    *out = r;
    return 0;
}

static void drop_plan(refit_receiver_t *r)
{
    r->mode->plan_drop(r);
    rf_rplan_drop(&r->plan);
}

/* Best effort, and the caller's error message must survive it. */
static void unregister(refit_receiver_t *r)
{
    char key[REFIT_STORE_MAX_KEY + 1], saved[1024];
    int saved_st = refit_error_status();
    snprintf(saved, sizeof(saved), "%s", refit_error_message());
    if (!rf_key_receiver(key, r->id)) {
        refit_store_forget(r->ctx->store, key);
        refit_store_del(r->ctx->store, key);
    }
    if (saved[0])
        refit_error_set(saved_st, "%s", saved);
    else
        refit_error_clear();
}

void refit_receiver_destroy(refit_receiver_t *r)
{
    if (!r)
        return;
    rf_ackpost_destroy(r->ackpost); /* the last ack written first */
    rf_rcv_bells_fini(r);
    r->mode->destroy(r); /* fan-out: the replica record goes before its buffers */
    rf_rcvdelta_destroy(r); /* its registrations before the transport goes */
    drop_plan(r);
    rf_xfer_fini(&r->xfer);
    rf_verify_fini(&r->verify);
    rf_peers_fini(r);
    rf_discover_fini(&r->disc);
    rf_dests_fini(&r->dests, r->tp, r->bufs.doubled);
    rf_rcvprog_destroy(r); /* waits for its kernel before anything is freed */
    rf_rcvdev_destroy(r); /* unpins staging before it is unmapped */
    rf_bufs_fini(r);
    if (r->id && r->ctx && r->ctx->store)
        unregister(r);
    refit_layout_destroy(r->lay);
    rf_arena_destroy(r->dry_arena);
    rf_arena_destroy(r->scratch);
    free(r->id);
    free(r->target_name);
    free(r);
}

size_t refit_receiver_count(const refit_receiver_t *r)
{
    return r ? r->dests.n : 0;
}

int refit_receiver_tensor(const refit_receiver_t *r, size_t i, struct refit_tensor_info *out)
{
    if (!r || i >= r->dests.n || !out)
        return refit_error_set(REFIT_EINVAL, "refit_receiver_tensor: index %zu out of range", i);
    const struct rf_dst *d = &r->dests.d[i];
    memset(out, 0, sizeof(*out));
    out->name = d->name;
    out->dtype = d->dtype;
    out->ndim = d->ndim;
    memcpy(out->shape, d->shape, sizeof(int64_t) * (size_t)d->ndim);
    out->ptr = d->ptr;
    out->memtype = d->memtype;
    out->nbytes = d->nbytes;
    return 0;
}

int refit_receiver_bind(refit_receiver_t *r, const char *name, void *ptr, enum refit_dtype dtype, int ndim,
                        const int64_t *shape, uint32_t memtype)
{
    if (!r || !name || !ptr || !shape)
        return refit_error_set(REFIT_EINVAL, "refit_receiver_bind: bad argument");
    if (memtype != REFIT_MEM_HOST && memtype != REFIT_MEM_CUDA)
        return refit_error_set(REFIT_EINVAL, "receiver %s: '%s': unknown memory type %u", r->id, name, memtype);
    return rf_dests_bind(r, name, ptr, dtype, ndim, shape, memtype);
}

int refit_receiver_allocate(refit_receiver_t *r)
{
    return r ? rf_dests_allocate(&r->dests, r->id) : REFIT_EINVAL;
}

/* ------------------------------------------------------------------ */
/* Discover and plan */

/* The plan of the adopted sources: inputs, destination dtypes and places,
 * the planner, then what the mode and the device path make of it. */
static int make_plan(refit_receiver_t *r)
{
    drop_plan(r);
    if (!r->scratch && !(r->scratch = rf_arena_create()))
        return REFIT_ENOMEM;
    struct rf_piece *pieces = NULL; /* in r->scratch */
    size_t np = 0;
    int rc = rf_rplan_inputs(r, &pieces, &np);
    if (!rc)
        rc = rf_rplan_choose(r, pieces, np);
    if (!rc)
        rc = rf_dests_resolve(&r->dests, r->lay, r->plan.img_dtype, r->bufs.doubled);
    uint64_t staging = rc ? 0 : rf_dests_place(&r->dests);
    if (!rc) {
        rf_bufs_repoint(r, staging);
        rc = rf_rplan_build(r, pieces, np);
    }
    if (!rc)
        rc = r->mode->planned(r, pieces, np);
    if (!rc)
        rc = rf_rcvdev_check_plan(r);
    r->plan.cands = NULL;
    r->plan.order = NULL;
    rf_arena_reset(r->scratch); /* kept for the next plan, already touched */
    if (rc)
        return rc;
    r->plan.staging_need = staging;
    r->plan.have = 1;
    return 0;
}

/* Plan for the sources at v unless the cached plan has the same inputs;
 * *planned 0 when a source has not published v yet (a gap: wait). */
static int plan_for(refit_receiver_t *r, struct rf_seen *sv, uint64_t v, int *planned, double *plan_s)
{
    *planned = 0;
    struct refit_hash128 key;
    int rc = rf_discover_adopt(r, sv, v);
    if (rc == REFIT_EAGAIN) /* a partial read that cannot stand: read every record */
        return 0;
    if (!rc)
        rc = rf_peers_sync(r);
    if (!rc)
        rc = rf_discover_plan_key(r, &key);
    if (rc)
        return rc == REFIT_ENOENT ? 0 : rc; /* a catalog not there yet: wait */
    if (r->plan.have && !memcmp(key.b, r->plan.key.b, 16)) {
        *planned = 1;
        r->st->plan_cached = 1;
        return 0;
    }
    if (sv->partial) { /* a new plan is made from every record */
        r->disc.full_next = 1;
        return 0;
    }
    char hex[33];
    refit_hash128_hex(&key, hex);
    refit_log(REFIT_LOG_DEBUG, "receiver", "%s: planning v%llu for inputs %s (%zu sources)", r->id, (unsigned long long)v, hex, r->disc.n_src);
    double t0 = rf_seconds();
    rc = make_plan(r);
    *plan_s += rf_seconds() - t0;
    if (!rc) {
        r->plan.key = key;
        *planned = 1;
    }
    return rc == REFIT_ENOENT ? 0 : rc; /* a gap: a source has not published v yet */
}

static int wait_timeout(refit_receiver_t *r, uint64_t want, uint64_t v, size_t seen)
{
    if (v)
        /* The gap's own message (which tensor, which rows) follows. */
        return refit_error_push(REFIT_ETIMEDOUT, "v%llu: the sources READY at it do not cover this layout within "
                                "%lld ms", (unsigned long long)v, (long long)r->ctx->timeout_ms);
    return refit_error_set(REFIT_ETIMEDOUT, "no %s within %lld ms (%zu live sources seen)",
                           want == REFIT_NEXT ? "new version" : "version READY", (long long)r->ctx->timeout_ms,
                           seen);
}

/* Sources at the chosen version with a plan that covers every byte,
 * waiting for them within refit.timeout. */
static int discover_and_plan(refit_receiver_t *r, uint64_t want, uint64_t *chosen, double *plan_s)
{
    double deadline = rf_seconds() + (double)r->ctx->timeout_ms / 1000.0;
    /* The version this pull most likely takes: its checksums come with
     * the records. */
    uint64_t guess = want == REFIT_LATEST || want == REFIT_NEXT ? r->last_version + 1 : want;
    for (;;) {
        struct rf_seen sv;
        uint64_t v = 0;
        int rc = rf_discover_read(r, guess, &sv), planned = 0;
        if (!rc)
            rc = rf_discover_choose(r, &sv, want, &v);
        /* Sources still publishing v, or positions not there yet: wait for
         * them rather than plan around them, for half the timeout. */
        int early = rf_seconds() < deadline - (double)r->ctx->timeout_ms / 2000.0;
        int wait = !rc && v && !rf_discover_complete(&sv, v) && early;
        if (!rc && v && !wait)
            rc = plan_for(r, &sv, v, &planned, plan_s);
        size_t seen = sv.n;
        int was_full = !sv.partial;
        rf_seen_free(&sv);
        if (rc)
            return rc;
        if (planned) {
            *chosen = v;
            return 0;
        }
        if (r->disc.full_next) /* a partial read fell short: read every record now */
            continue;
        double left = deadline - rf_seconds();
        if (!wait && left <= 0)
            return wait_timeout(r, want, v, seen);
        int64_t w = (int64_t)(left * 1000) + 1;
        if (wait || w > RF_POLL_DISCOVER_MS)
            w = wait ? RF_POLL_LAGGING_MS : RF_POLL_DISCOVER_MS;
        rc = rf_discover_wait(r, w);
        if (rc && rc != REFIT_ETIMEDOUT)
            return rc;
        refit_error_clear();
        /* A full read that made no plan (a new source at a newer version,
         * others lagging) is read in full again: a partial read would see
         * only the cached plan's sources. */
        if (was_full)
            r->disc.full_next = 1;
    }
}

/* ------------------------------------------------------------------ */
/* Data-parallel fallback */

static int is_excluded(const refit_receiver_t *r, const char *id)
{
    for (int i = 0; i < r->n_excluded; i++)
        if (!strcmp(r->excluded[i], id))
            return 1;
    return 0;
}

/* The sources at v less the excluded ones, adopted and planned for. */
static int replan_without(refit_receiver_t *r, uint64_t v)
{
    struct rf_seen sv = {0};
    r->disc.full_next = 1; /* every source but the excluded */
    int rc = rf_discover_read(r, v, &sv);
    size_t k = 0;
    for (size_t i = 0; !rc && i < sv.n; i++) {
        if (is_excluded(r, sv.rec[i]->source_id))
            free(sv.rec[i]);
        else
            sv.rec[k++] = sv.rec[i];
    }
    if (!rc)
        sv.n = k;
    if (!rc)
        rc = rf_discover_adopt(r, &sv, v);
    if (!rc)
        rc = rf_peers_sync(r);
    struct refit_hash128 key;
    if (!rc)
        rc = rf_discover_plan_key(r, &key);
    if (!rc)
        rc = make_plan(r);
    if (!rc)
        r->plan.key = key;
    rf_seen_free(&sv);
    double a = 0, g = 0;
    return rc ? rc : rf_bufs_ensure(r, &a, &g);
}

int rf_pull_retry(refit_receiver_t *r, uint64_t v, int *rc)
{
    /* a source that failed the wire (gone, reset, timed out), not one that
     * is misconfigured (another transport, a bad record): that is an error
     * to report, not to route around */
    if (!r->failed_src[0] || r->n_excluded >= RF_MAX_EXCLUDED || is_excluded(r, r->failed_src) ||
        *rc == REFIT_EPROTO || *rc == REFIT_EINVAL || *rc == REFIT_ENOMEM)
        return 0;
    char why[1024];
    snprintf(why, sizeof(why), "%s", refit_error_message());
    snprintf(r->excluded[r->n_excluded++], sizeof(r->excluded[0]), "%s", r->failed_src);
    /* the failed source's share of the plan, before the replan drops it */
    for (size_t i = 0; r->st && r->plan.have && i < r->disc.n_src && i < r->plan.plan.n_sources; i++)
        if (!strcmp(r->disc.src[i].id, r->failed_src))
            r->st->bytes_failed_share += r->plan.plan.bytes_per_source[i];
    void *staging = r->bufs.staging;
    int rc2 = replan_without(r, v);
    if (rc2) {
        /* no other source holds its bytes: the first failure stands */
        refit_error_set(*rc, "%s", why);
        return 0;
    }
    refit_log(REFIT_LOG_WARN, "receiver", "%s: v%llu: source %s failed (%s); pulling again from the sources that "
              "hold the same bytes", r->id, (unsigned long long)v, r->failed_src, why);
    if (r->st)
        r->st->fallbacks++;
    /* the tensors the live sources finished stay: their staging bytes are
     * where they were (the destinations did not change) */
    r->xfer.keep = r->bufs.staging == staging;
    *rc = 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* The pull trace (receiver.h) */

void rf_trace_mark(struct rf_trace *tr, const char *what)
{
    if (tr->on && tr->n < RF_TRACE_MAX) {
        tr->what[tr->n] = what;
        tr->t[tr->n++] = rf_seconds();
    }
}

static void trace_begin(struct rf_trace *tr, double t0)
{
    tr->n = 0;
    tr->kernel_ms = -1;
    tr->steps[0] = 0;
    if (tr->on) {
        tr->what[0] = "start";
        tr->t[tr->n++] = t0;
    }
}

/* One line: each step's milliseconds, the wait for the version apart. */
static void trace_print(const refit_receiver_t *r, uint64_t v, double wait_s, double total_s)
{
    const struct rf_trace *tr = &r->trace;
    if (!tr->on || tr->n < 2)
        return;
    char line[1024];
    int k = snprintf(line, sizeof(line), "refit pull trace %s v%llu: total %.3f ms (wait %.3f ms not in it):",
                     r->id, (unsigned long long)v, 1e3 * total_s, 1e3 * wait_s);
    for (int i = 1; i < tr->n && k > 0 && (size_t)k < sizeof(line); i++)
        k += snprintf(line + k, sizeof(line) - (size_t)k, " %s %.3f", tr->what[i], 1e3 * (tr->t[i] - tr->t[i - 1]));
    if (tr->kernel_ms >= 0 && k > 0 && (size_t)k < sizeof(line))
        snprintf(line + k, sizeof(line) - (size_t)k, "; kernels on the device %.3f ms (%s)", tr->kernel_ms,
                 tr->steps);
    fprintf(stderr, "%s\n", line);
}

/* ------------------------------------------------------------------ */
/* The cycle */

/* The fence, then the commit.  The ack of v goes with the fence's read
 * (one store round trip less per pull; not with refit.ack_async, whose
 * worker writes it on its own handle): every read of v has ended when the
 * fence runs, so "done reading v" is true whatever the fence says.  What
 * a failure after that must not do is read v again — the trainer may
 * already be reusing v's memory on the strength of the ack, with its
 * record still READY (a zero-copy publisher between wait_released and its
 * next publish) — so v is marked released: not retried in this pull, never
 * chosen again (rf_discover_choose). */
static int fence_commit(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st)
{
    r->fence_ack = r->ackpost ? 0 : v;
    r->fence_acked = 0;
    int rc = r->mode->fence(r, v);
    r->fence_ack = 0;
    rf_trace_mark(&r->trace, "fence");
    if (!rc)
        rc = rf_bufs_commit(r, v, st);
    if (rc && r->fence_acked) {
        r->released = v;
        refit_log(REFIT_LOG_WARN, "receiver", "%s: v%llu was acknowledged with its fence and the pull failed after: "
                  "this receiver will not read v%llu again (%s)", r->id, (unsigned long long)v, (unsigned long long)v,
                  refit_error_message());
    }
    return rc;
}

/* Stats out, the error named by version. */
static void pull_end(refit_receiver_t *r, uint64_t version, uint64_t v, int rc, struct refit_pull_stats *st,
                     struct refit_pull_stats *out)
{
    if (rc) {
        /* Name the version asked for when none was chosen. */
        char what[48];
        if (v || (version != REFIT_LATEST && version != REFIT_NEXT))
            snprintf(what, sizeof(what), "v%llu", (unsigned long long)(v ? v : version));
        else
            snprintf(what, sizeof(what), "%s", version == REFIT_LATEST ? "latest" : "next");
        refit_error_push(rc, "receiver %s: pull %s", r->id, what);
    } else {
        r->last_version = v;
    }
    if (out) {
        size_t n = out->size && out->size < sizeof(*st) ? out->size : sizeof(*st);
        st->size = n;
        memcpy(out, st, n);
    }
    r->st = NULL;
}

int refit_receiver_pull(refit_receiver_t *r, uint64_t version, struct refit_pull_stats *stats)
{
    if (!r || version == 0)
        return refit_error_set(REFIT_EINVAL, "refit_receiver_pull: bad argument");
    struct refit_pull_stats st;
    memset(&st, 0, sizeof(st));
    r->st = &st;
    r->n_excluded = 0;
    r->failed_src[0] = '\0';
    r->fence_acked = 0;
    r->xfer.convert_s = r->verify.seconds = 0;
    uint64_t rt0 = refit_store_round_trips(r->ctx->store);
    double t0 = rf_seconds();
    trace_begin(&r->trace, t0);
    uint64_t v = 0;
    int rc = discover_and_plan(r, version, &v, &st.plan_s);
    /* Waiting for a version to be published is not part of the pull. */
    st.wait_s = rf_seconds() - t0 - st.plan_s;
    rf_trace_mark(&r->trace, "discover+plan(+wait)");
    if (!rc)
        rc = r->mode->prepare(r, v);
    if (!rc)
        rc = rf_bufs_ensure(r, &st.alloc_s, &st.register_s);
    rf_trace_mark(&r->trace, "prepare+buffers");
    for (int again = !rc; again;) {
        rc = r->mode->transfer(r, v, &st);
        rf_trace_mark(&r->trace, "transfer");
        if (!rc)
            rc = fence_commit(r, v, &st);
        again = rc && !r->fence_acked && r->mode->retry(r, v, &rc);
    }
    st.version = v;
    st.sources = (uint32_t)r->disc.n_src;
    st.convert_s = r->xfer.convert_s;
    st.verify_s = r->verify.seconds;
    r->mode->end(r, v, rc, &st);
    rf_trace_mark(&r->trace, "mode-end");
    if (!rc && !st.source[0])
        snprintf(st.source, sizeof(st.source), "trainer");
    st.total_s = rf_seconds() - t0 - st.wait_s;
    rf_trace_mark(&r->trace, "end");
    trace_print(r, v, st.wait_s, st.total_s);
    st.store_round_trips = refit_store_round_trips(r->ctx->store) - rt0;
    pull_end(r, version, v, rc, &st, stats);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Dry planning: sources made up from parallel positions */

/* A catalog of every tensor of a Megatron layout, bf16, one region. */
static int dry_catalog(const refit_layout_t *meg, refit_catalog_t **out)
{
    uint64_t off = 0;
    for (size_t t = 0; t < refit_layout_count(meg); t++) {
        const struct refit_layout_tensor *lt = refit_layout_at(meg, t);
        uint64_t n = 2;
        for (int d = 0; d < lt->ndim; d++)
            n *= (uint64_t)lt->shape[d];
        off += (n + 63) & ~(uint64_t)63;
    }
    uint32_t reg;
    int rc = refit_catalog_create(out);
    if (!rc)
        rc = refit_catalog_reserve(*out, refit_layout_count(meg));
    if (!rc)
        rc = refit_catalog_add_region(*out, off ? off : 1, &reg);
    off = 0;
    for (size_t t = 0; !rc && t < refit_layout_count(meg); t++) {
        const struct refit_layout_tensor *lt = refit_layout_at(meg, t);
        struct refit_cat_tensor ct = {.name = lt->name, .dtype = REFIT_DTYPE_BF16, .role = REFIT_CAT_ROLE_REPLICATED,
                                      .ndim = (uint32_t)lt->ndim, .shard_axis = -1, .expert = -1, .region = reg,
                                      .offset = off};
        uint64_t n = 2, cols = lt->ndim >= 2 ? (uint64_t)lt->shape[lt->ndim - 1] : 1;
        for (int d = 0; d < lt->ndim; d++) {
            ct.shape[d] = ct.global_shape[d] = (uint64_t)lt->shape[d];
            n *= (uint64_t)lt->shape[d];
        }
        ct.nbytes = n;
        ct.chunk_rows = rf_chunk_rows(n / (cols * 2), cols * 2);
        off += (n + 63) & ~(uint64_t)63;
        rc = refit_catalog_add(*out, &ct);
    }
    return rc;
}

/* Positions whose layouts are equal: all but the data-parallel rank. */
static int same_position(const struct refit_parallel *a, const struct refit_parallel *b)
{
    const char *la = a->layout ? a->layout : "megatron", *lb = b->layout ? b->layout : "megatron";
    return a->tp_rank == b->tp_rank && a->tp_size == b->tp_size && a->pp_rank == b->pp_rank &&
           a->pp_size == b->pp_size && a->ep_rank == b->ep_rank && a->ep_size == b->ep_size &&
           a->etp_rank == b->etp_rank && a->etp_size == b->etp_size && a->dp_size == b->dp_size &&
           !strcmp(la, lb) && a->shard_rank == b->shard_rank && a->shard_size == b->shard_size &&
           a->vp_size == b->vp_size && a->pp_layers == b->pp_layers;
}

/* Whether cat is the dry catalog of meg: the same tensors (names and
 * shapes) in the same order, so the same bytes on the wire. */
static int dry_catalog_is(const refit_catalog_t *cat, const refit_layout_t *meg)
{
    size_t n = refit_layout_count(meg);
    if (cat->n_tensors != n)
        return 0;
    for (size_t t = 0; t < n; t++) {
        const struct refit_layout_tensor *lt = refit_layout_at(meg, t);
        const struct refit_cat_tensor *ct = &cat->tensors[t];
        if (ct->ndim != (uint32_t)lt->ndim || strcmp(ct->name, lt->name))
            return 0;
        for (int d = 0; d < lt->ndim; d++)
            if (ct->shape[d] != (uint64_t)lt->shape[d])
                return 0;
    }
    return 1;
}

/* The catalog of source i's layout: an earlier source's when its content
 * is the same (cats[i] NULL then), as the store's catalog cache keeps one
 * object per content hash.  Trainer positions that differ only in their
 * experts publish one catalog (Megatron names experts by local index): a
 * tp8·ep32 trainer's 32 positions share one, and a receiver's first plan
 * no longer builds and first-touches 31 copies of it.  Only the first
 * `look` sources are tried (none for the naive reference plan). */
static int dry_catalog_shared(refit_catalog_t **cats, size_t i, size_t look, const refit_layout_t *meg,
                              const refit_catalog_t **out)
{
    for (size_t j = 0; j < look; j++)
        if (cats[j] && dry_catalog_is(cats[j], meg)) {
            *out = cats[j];
            return 0;
        }
    int rc = dry_catalog(meg, &cats[i]);
    *out = cats[i];
    return rc;
}

/* Source i at position par: its layout and catalog, shared with an
 * earlier source at the same position when plans dedupe (*shared 1: not
 * this source's to free), as catalogs cached by content hash are. */
static int dry_source(refit_receiver_t *r, const struct refit_parallel *src, size_t i, refit_catalog_t **cats,
                      unsigned char *shared)
{
    struct rf_source *s = &r->disc.src[i];
    char id[32];
    snprintf(id, sizeof(id), "dry%zu", i);
    if (!(s->id = strdup(id)))
        return REFIT_ENOMEM;
    for (size_t j = 0; r->ctx->plan_dedupe && j < i; j++)
        if (!shared[j] && same_position(&src[j], &src[i])) {
            s->meg = r->disc.src[j].meg;
            s->cat = r->disc.src[j].cat;
            shared[i] = 1;
            return 0;
        }
    int rc = rf_layout_trainer_in(r->ctx->model, &src[i], &r->copts, r->dry_arena, &s->meg);
    if (!rc)
        rc = dry_catalog_shared(cats, i, r->ctx->plan_dedupe ? i : 0, s->meg, &s->cat);
    return rc;
}

/* What the plan is, for comparing plans (the deduped planner with the
 * reference, one version with another): a hash of its descriptors,
 * scatters, checks and bytes per source.  A check names its source tensor
 * by its number in the order candidates are first met (psrc_num), not by
 * its index among the tensors this plan reads. */
static void plan_digest(const struct rf_rplan *rp, uint8_t out[16])
{
    const struct rf_plan *p = &rp->plan;
    XXH3_state_t *st = XXH3_createState();
    memset(out, 0, 16);
    if (!st)
        return;
    XXH3_128bits_reset(st);
    if (p->n_desc)
        XXH3_128bits_update(st, p->desc, p->n_desc * sizeof(*p->desc));
    if (p->n_scatter)
        XXH3_128bits_update(st, p->scatter, p->n_scatter * sizeof(*p->scatter));
    struct rf_check blk[256];
    for (size_t i = 0; i < p->n_check; i += 256) {
        size_t n = p->n_check - i < 256 ? p->n_check - i : 256;
        memcpy(blk, &p->check[i], n * sizeof(*blk)); /* padding included, as the planner zeroed it */
        for (size_t k = 0; k < n; k++)
            blk[k].psrc = rp->psrc_num[blk[k].psrc];
        XXH3_128bits_update(st, blk, n * sizeof(*blk));
    }
    if (p->n_sources)
        XXH3_128bits_update(st, p->bytes_per_source, p->n_sources * sizeof(*p->bytes_per_source));
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
    memcpy(out, c.digest, 16);
    XXH3_freeState(st);
}

int refit_receiver_plan_dry(refit_receiver_t *r, const struct refit_parallel *src, size_t n_src,
                            struct refit_plan_info *info)
{
    if (!r || !src || !n_src || !info)
        return refit_error_set(REFIT_EINVAL, "refit_receiver_plan_dry: bad argument");
    drop_plan(r);
    rf_peers_fini(r);
    rf_discover_drop_sources(&r->disc);
    if (!r->dry_arena)
        r->dry_arena = rf_arena_create();
    r->disc.src = calloc(n_src, sizeof(*r->disc.src));
    refit_catalog_t **cats = calloc(n_src, sizeof(*cats));
    unsigned char *shared = calloc(n_src, 1);
    if (!r->dry_arena || !r->disc.src || !cats || !shared) {
        free(cats);
        free(shared);
        return REFIT_ENOMEM;
    }
    r->disc.n_src = n_src;
    int rc = 0;
    for (size_t i = 0; i < n_src && !rc; i++)
        rc = dry_source(r, src, i, cats, shared);
    double t0 = rf_seconds();
    if (!rc)
        rc = make_plan(r);
    double took = rf_seconds() - t0;
    if (!rc) {
        const struct rf_plan *p = &r->plan.plan;
        struct refit_plan_info in = {.size = sizeof(in), .seconds = took, .pieces = r->plan.n_pieces,
                                     .descriptors = p->n_desc, .scatters = p->n_scatter, .checks = p->n_check,
                                     .wire_bytes = p->wire_bytes, .scratch_bytes = p->scratch_bytes,
                                     .staging_bytes = r->plan.staging_need, .sources = (uint32_t)n_src};
        plan_digest(&r->plan, in.digest);
        size_t n = info->size && info->size < sizeof(in) ? info->size : sizeof(in);
        memcpy(info, &in, n);
    }
    /* The dry sources go (a shared layout with its owner); their catalogs
     * are not in the cache. */
    drop_plan(r);
    for (size_t i = 0; i < n_src; i++)
        if (shared[i])
            r->disc.src[i].meg = NULL;
    free(shared);
    rf_discover_drop_sources(&r->disc);
    rf_arena_reset(r->dry_arena); /* the layouts are gone */
    for (size_t i = 0; i < n_src; i++)
        refit_catalog_destroy(cats[i]);
    free(cats);
    return rc;
}
