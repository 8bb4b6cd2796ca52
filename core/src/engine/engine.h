/* engine.h — internals shared by the engine's files (not installed). */
#ifndef RF_ENGINE_H
#define RF_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "refit/convert.h"
#include "refit/loader.h"
#include "refit/refit.h"
#include "refit/store.h"
#include "refit/tp.h"

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
    enum rf_verify verify;
    double verify_sample;
    bool in_place;
    bool push;
    bool publish_copy;
};

/* The transport, created on first use with this process's name. */
int rf_context_transport(refit_context_t *ctx, const char *name, refit_transport_t **out);

/* Checksum chunk height for a source tensor: a power of two of rows so a
 * chunk is about 64 KiB (at least one row). */
uint32_t rf_chunk_rows(uint64_t rows, uint64_t row_bytes);

/* Wall-clock seconds since an arbitrary origin (monotonic). */
double rf_seconds(void);

#endif
