/* context.c — a refit context: the configuration, the loader, the store,
 * the transport and the model, opened once and shared by a process's
 * publishers and receivers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "refit/log.h"
#include "refit/topology.h"

double rf_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void rf_sleep_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - 1000.0 * (double)(time_t)(ms / 1000)) * 1e6)};
    nanosleep(&ts, NULL);
}

uint32_t rf_chunk_rows(uint64_t rows, uint64_t row_bytes)
{
    uint64_t want = row_bytes ? (64u << 10) / row_bytes : rows;
    uint32_t c = 1;
    while ((uint64_t)c * 2 <= want && c < (1u << 30))
        c *= 2;
    return c;
}

static int read_policy(refit_context_t *ctx)
{
    const refit_config_t *c = ctx->cfg;
    const char *s;
    int rc = 0;
    if (!rc)
        rc = refit_config_duration_ms(c, "refit.timeout", &ctx->timeout_ms);
    if (!rc)
        rc = refit_config_duration_ms(c, "refit.release_timeout", &ctx->release_timeout_ms);
    if (!rc)
        rc = refit_config_duration_ms(c, "refit.stale_after", &ctx->stale_after_ms);
    if (!rc)
        rc = refit_config_duration_ms(c, "refit.heartbeat", &ctx->heartbeat_ms);
    if (!rc)
        rc = refit_config_int(c, "refit.flush_every", &ctx->flush_every);
    if (!rc)
        rc = refit_config_size(c, "refit.gather_threshold", &ctx->gather_threshold);
    if (!rc)
        rc = refit_config_size(c, "refit.scatter_threshold", &ctx->scatter_threshold);
    if (!rc)
        rc = refit_config_int(c, "refit.retain_versions", &ctx->retain_versions);
    if (!rc)
        rc = refit_config_int(c, "refit.receivers", &ctx->receivers);
    if (!rc)
        rc = refit_config_int(c, "refit.push_streams", &ctx->push_streams);
    if (!rc)
        rc = refit_config_double(c, "refit.verify_sample", &ctx->verify_sample);
    if (!rc)
        rc = refit_config_bool(c, "refit.in_place", &ctx->in_place);
    if (!rc)
        rc = refit_config_bool(c, "refit.device_program", &ctx->device_program);
    if (!rc)
        rc = refit_config_bool(c, "refit.ack_async", &ctx->ack_async);
    if (!rc)
        rc = refit_config_bool(c, "refit.plan_dedupe", &ctx->plan_dedupe);
    if (!rc)
        rc = refit_config_int(c, "refit.replicas", &ctx->replicas);
    if (!rc)
        rc = refit_config_int(c, "refit.replica_index", &ctx->replica_index);
    if (!rc && ctx->replicas > 1 && ctx->replica_index >= ctx->replicas)
        rc = refit_error_set(REFIT_EINVAL, "refit.replica_index %lld: not below refit.replicas %lld",
                             (long long)ctx->replica_index, (long long)ctx->replicas);
    if (!rc)
        rc = refit_config_bool(c, "refit.delta.enabled", &ctx->delta);
    if (!rc)
        rc = refit_config_double(c, "refit.delta.max_ratio", &ctx->delta_max_ratio);
    if (!rc && !(rc = refit_config_str(c, "refit.sums", &s)))
        ctx->sums_remote = !strcmp(s, "transport");
    if (!rc && !(rc = refit_config_str(c, "refit.verify", &s)))
        ctx->verify = !strcmp(s, "off") ? RF_VERIFY_OFF : !strcmp(s, "sample") ? RF_VERIFY_SAMPLE
                                                                                : RF_VERIFY_FULL;
    if (!rc && !(rc = refit_config_str(c, "refit.mode", &s)))
        ctx->push = !strcmp(s, "push");
    if (!rc && !(rc = refit_config_str(c, "refit.publish", &s)))
        ctx->publish_copy = !strcmp(s, "copy");
    /* Publishers write into the receiver's staging; in place there is none
     * to write into safely (the weights would change before the fence). */
    if (!rc && ctx->push && ctx->in_place)
        rc = refit_error_set(REFIT_EINVAL, "refit.mode: push with refit.in_place: true is not supported "
                             "(push writes into staging; set refit.in_place: false)");
    return rc;
}

int refit_context_create(const char *config_path, const char *const *overrides, size_t n_overrides,
                         refit_context_t **out)
{
    refit_context_t *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return REFIT_ENOMEM;
    int rc = refit_config_create(&ctx->cfg);
    if (!rc && config_path)
        rc = refit_config_load(ctx->cfg, config_path);
    if (!rc)
        rc = refit_config_apply_env(ctx->cfg, NULL);
    for (size_t i = 0; !rc && i < n_overrides; i++)
        rc = refit_config_set(ctx->cfg, overrides[i], "override");
    if (!rc)
        rc = refit_loader_create(ctx->cfg, &ctx->loader);
    if (!rc)
        rc = refit_model_open_config(ctx->loader, ctx->cfg, &ctx->model);
    if (!rc)
        rc = refit_convert_opts_from_config(ctx->cfg, &ctx->copts);
    if (!rc)
        rc = refit_store_open(ctx->cfg, ctx->loader, NULL, &ctx->store);
    if (!rc)
        rc = read_policy(ctx);
    if (!rc) {
        /* The transport's section is checked now that its plugin is known. */
        const char *tname;
        rc = refit_config_str(ctx->cfg, "transport.plugin", &tname);
        const struct refit_plugin *p;
        if (!rc)
            rc = refit_loader_load(ctx->loader, REFIT_PLUGIN_TRANSPORT, tname, &p);
        if (!rc)
            rc = refit_config_validate(ctx->cfg, false);
    }
    if (rc) {
        refit_error_push(rc, "refit context%s%s", config_path ? " from " : "",
                         config_path ? config_path : "");
        refit_context_destroy(ctx);
        return rc;
    }
    *out = ctx;
    return 0;
}

int rf_context_transport(refit_context_t *ctx, const char *name, refit_transport_t **out)
{
    if (!ctx->tp) {
        struct refit_transport_open o = {.size = sizeof(o), .name = name, .cuda_device = -1};
        /* topology.nic_pin: the NUMA-local device(s) for this rank, handed
         * to the plugin (which copies what it needs during init).  Ranks
         * on one node take turns over equally close devices by LOCAL_RANK. */
        char **hint = NULL;
        size_t n_hint = 0;
        const char *pin = "off";
        if (refit_config_str(ctx->cfg, "topology.nic_pin", &pin) == 0 && strcmp(pin, "off")) {
            refit_topology_t *topo = NULL;
            const char *lr = getenv("LOCAL_RANK");
            if (refit_topology_create(NULL, &topo) == 0 &&
                refit_topology_hint(topo, ctx->cfg, NULL, lr ? atoi(lr) : 0, &hint, &n_hint) == 0) {
                o.nic_hint = (const char *const *)hint;
                o.n_nic_hint = n_hint;
            }
            refit_topology_destroy(topo);
        }
        int rc = refit_transport_init(ctx->loader, ctx->cfg, &o, &ctx->tp);
        free(hint);
        if (rc)
            return rc;
    }
    *out = ctx->tp;
    return 0;
}

void refit_context_destroy(refit_context_t *ctx)
{
    if (!ctx)
        return;
    refit_transport_fini(ctx->tp);
    refit_store_close(ctx->store);
    refit_model_close(ctx->model);
    refit_loader_destroy(ctx->loader);
    refit_config_destroy(ctx->cfg);
    free(ctx);
}

const refit_config_t *refit_context_config(const refit_context_t *ctx)
{
    return ctx->cfg;
}

const struct refit_model *refit_context_model(const refit_context_t *ctx)
{
    return ctx->model;
}
