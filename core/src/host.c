/* host.c — the host services table given to every plugin. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "refit/config.h"
#include "refit/log.h"
#include "refit/loader.h"
#include "refit/plugin.h"
#include "refit/status.h"

static void host_log(int level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    refit_vlog(level, component, fmt, ap);
    va_end(ap);
}

/* Forward a printf-style message to the error context. */
static int host_error_set(int status, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return refit_error_set(status, "%s", buf);
}

static int host_error_push(int status, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return refit_error_push(status, "%s", buf);
}

/* Build "<section>.<key>" for the view's accessors. */
#define VIEW_PATH(view, key, buf)                                                    \
    char buf[512];                                                                   \
    if (!(view) || !(view)->cfg || !(key))                                           \
        return refit_error_set(REFIT_EINVAL, "plugin config access without a view"); \
    snprintf(buf, sizeof(buf), "%s.%s", (view)->section, (key))

static int h_str(const struct refit_cfg_view *v, const char *k, const char **o)
{
    VIEW_PATH(v, k, p);
    return refit_config_str(v->cfg, p, o);
}
static int h_int(const struct refit_cfg_view *v, const char *k, int64_t *o)
{
    VIEW_PATH(v, k, p);
    return refit_config_int(v->cfg, p, o);
}
static int h_bool(const struct refit_cfg_view *v, const char *k, bool *o)
{
    VIEW_PATH(v, k, p);
    return refit_config_bool(v->cfg, p, o);
}
static int h_double(const struct refit_cfg_view *v, const char *k, double *o)
{
    VIEW_PATH(v, k, p);
    return refit_config_double(v->cfg, p, o);
}
static int h_size(const struct refit_cfg_view *v, const char *k, uint64_t *o)
{
    VIEW_PATH(v, k, p);
    return refit_config_size(v->cfg, p, o);
}
static int h_duration(const struct refit_cfg_view *v, const char *k, int64_t *o)
{
    VIEW_PATH(v, k, p);
    return refit_config_duration_ms(v->cfg, p, o);
}
static int h_list(const struct refit_cfg_view *v, const char *k, const char *const **items, size_t *n)
{
    VIEW_PATH(v, k, p);
    return refit_config_list(v->cfg, p, items, n);
}
static int h_map_each(const struct refit_cfg_view *v, const char *k,
                      int (*fn)(void *, const char *, const char *), void *arg)
{
    VIEW_PATH(v, k, p);
    return refit_config_map_each(v->cfg, p, fn, arg);
}
static int h_path(const struct refit_cfg_view *v, const char *k, char **o)
{
    VIEW_PATH(v, k, p);
    return refit_config_path(v->cfg, p, o);
}
static int h_has(const struct refit_cfg_view *v, const char *k)
{
    VIEW_PATH(v, k, p);
    return refit_config_has(v->cfg, p);
}

static const struct refit_host host = {
    .size = sizeof(struct refit_host),
    .abi_major = REFIT_ABI_MAJOR,
    .abi_minor = REFIT_ABI_MINOR,
    .log = host_log,
    .error_set = host_error_set,
    .error_push = host_error_push,
    .alloc = malloc,
    .calloc = calloc,
    .realloc = realloc,
    .free = free,
    .cfg_str = h_str,
    .cfg_int = h_int,
    .cfg_bool = h_bool,
    .cfg_double = h_double,
    .cfg_size = h_size,
    .cfg_duration_ms = h_duration,
    .cfg_list = h_list,
    .cfg_map_each = h_map_each,
    .cfg_path = h_path,
    .cfg_has = h_has,
};

const struct refit_host *refit_host_get(void)
{
    return &host;
}

const char *refit_plugin_kind_name(uint32_t kind)
{
    switch (kind) {
    case REFIT_PLUGIN_TRANSPORT: return "transport";
    case REFIT_PLUGIN_STORE: return "store";
    case REFIT_PLUGIN_MODEL: return "model";
    default: return "unknown";
    }
}
