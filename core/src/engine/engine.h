/* engine.h — internals shared by the engine's files (not installed). */
#ifndef RF_ENGINE_H
#define RF_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "refit/convert.h"
#include "refit/loader.h"
#include "refit/refit.h"
#include "refit/store_core.h"
#include "refit/transport_core.h"

enum rf_verify { RF_VERIFY_OFF = 0, RF_VERIFY_FULL = 1, RF_VERIFY_SAMPLE = 2 };

struct refit_context {
    refit_config_t *cfg;
    refit_loader_t *loader;
    refit_store_t *store;
    refit_transport_t *tp; /* made by the first publisher or receiver */
    refit_model_t *model;
    struct refit_convert_opts copts; /* target, skip and fp8 policy from model.* */
    /* Policy (refit.*), read once. */
    int64_t timeout_ms, release_timeout_ms, stale_after_ms, heartbeat_ms;
    int64_t flush_every;
    uint64_t gather_threshold, scatter_threshold;
    int64_t retain_versions, receivers;
    int64_t push_streams; /* refit.push_streams: receivers a push publisher serves at once */
    enum rf_verify verify;
    double verify_sample;
    bool in_place;
    bool device_program;
    bool ack_async; /* refit.ack_async: acks off the pull's critical path (ackpost.h) */
    int64_t replicas, replica_index; /* refit.replicas, refit.replica_index (-1: by id) */
    bool plan_dedupe;        /* refit.plan_dedupe: compose each class of equal sources once */
    bool push;
    bool publish_copy;
    bool delta;              /* refit.delta.enabled */
    bool sums_remote;        /* refit.sums: transport (a publisher's checksum table, sums.h) */
    double delta_max_ratio;  /* refit.delta.max_ratio */
};

/* The membership epoch: each publisher rewrites it when it joins (after
 * members/<id>, publisher.c), so a warm receiver learns that a source
 * joined by reading one key with its records (discover.c) instead of
 * watching members/. */
#define RF_KEY_MEMBERSHIP "membership"

/* Poll intervals and backoffs of the engine's waits (each wait's limit is a
 * configured timeout; these only say how often it looks). */
#define RF_POLL_DISCOVER_MS 500   /* receiver: a version or a source to appear */
#define RF_POLL_LAGGING_MS 200    /* receiver: sources still publishing the chosen version */
#define RF_POLL_ACKS_MS 1000      /* publisher: acknowledgements */
#define RF_POLL_SLOTS_MS 200      /* push publisher: receivers' adverts */
#define RF_POLL_NOTIFY_MS 100     /* push receiver: one wait for a notification */
#define RF_POLL_PUSH_DONE_MS 50   /* push receiver: completion keys (transports without notifications) */
#define RF_PUSH_LIVENESS_S 0.2    /* push receiver: how often its sources' records are checked */
#define RF_RECONNECT_FIRST_S 0.05 /* receiver: first pause before connecting a failed source again */
#define RF_RECONNECT_MAX_S 1.0    /* ... doubling up to this */
#define RF_LEASE_WATCH_MS 25      /* fan-out: longest wait on load/ before looking at replicas/ again */
#define RF_PULLERS_WATCH_MS 250   /* fan-out: longest wait on a replica's lease list (expiries change nothing) */

/* Sleep for ms milliseconds. */
void rf_sleep_ms(double ms);

/* The transport, created on first use with this process's name. */
int rf_context_transport(refit_context_t *ctx, const char *name, refit_transport_t **out);

/* Checksum chunk height for a source tensor: a power of two of rows so a
 * chunk is about 64 KiB (at least one row). */
uint32_t rf_chunk_rows(uint64_t rows, uint64_t row_bytes);

/* Wall-clock seconds since an arbitrary origin (monotonic). */
double rf_seconds(void);

#endif
