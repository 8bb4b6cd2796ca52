/* refit/plugin.h — plugin ABI v1.
 *
 * A plugin is a shared module that exports exactly one symbol,
 * refit_plugin_entry, returning a descriptor that begins with the ABI
 * version, kind and name.  The loader checks these before it touches
 * anything else and unloads a mismatch.  Every service a plugin needs from
 * the core (logging, errors, allocation, configuration) comes through the
 * host table given to load(), so a plugin never links against librefit and
 * can be driven by a stub host in tests.
 *
 * Compatibility rules: ops tables and the host table are const, begin with
 * their size, and only grow at the end.  A plugin built against minor M
 * runs on a core of the same major and any minor >= M; the core checks an
 * ops table's size before calling an operation added later. */
#ifndef REFIT_PLUGIN_H
#define REFIT_PLUGIN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "refit/config.h"
#include "refit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define REFIT_ABI_MAJOR 1
#define REFIT_ABI_MINOR 0

enum refit_plugin_kind {
    REFIT_PLUGIN_TRANSPORT = 1,
    REFIT_PLUGIN_STORE = 2,
    REFIT_PLUGIN_MODEL = 3
};

/* Services the core offers every plugin.  Valid from load() to unload(). */
struct refit_host {
    size_t size; /* sizeof(struct refit_host) of the core that built it */
    uint32_t abi_major, abi_minor;

    void (*log)(int level, const char *component, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
    /* Set / prefix this thread's error message; both return status. */
    int (*error_set)(int status, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
    int (*error_push)(int status, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

    /* Memory that crosses the plugin boundary (values returned by a store's
     * get, key lists) is allocated with these and freed by the core with
     * free() below. */
    void *(*alloc)(size_t n);
    void *(*calloc)(size_t n, size_t size);
    void *(*realloc)(void *p, size_t n);
    void (*free)(void *p);

    /* Configuration of the plugin's own section; `key` is relative to
     * view->section.  Same semantics as refit_config_* in config.h. */
    int (*cfg_str)(const struct refit_cfg_view *view, const char *key, const char **out);
    int (*cfg_int)(const struct refit_cfg_view *view, const char *key, int64_t *out);
    int (*cfg_bool)(const struct refit_cfg_view *view, const char *key, bool *out);
    int (*cfg_double)(const struct refit_cfg_view *view, const char *key, double *out);
    int (*cfg_size)(const struct refit_cfg_view *view, const char *key, uint64_t *out);
    int (*cfg_duration_ms)(const struct refit_cfg_view *view, const char *key, int64_t *out);
    int (*cfg_list)(const struct refit_cfg_view *view, const char *key,
                    const char *const **items, size_t *n);
    int (*cfg_map_each)(const struct refit_cfg_view *view, const char *key,
                        int (*fn)(void *arg, const char *k, const char *v), void *arg);
    /* A path value resolved against the directory of the file that set it;
     * *out is freed with free() above. */
    int (*cfg_path)(const struct refit_cfg_view *view, const char *key, char **out);
    int (*cfg_has)(const struct refit_cfg_view *view, const char *key);
};

/* The descriptor.  Static, const, owned by the plugin. */
struct refit_plugin {
    uint32_t abi_major; /* REFIT_ABI_MAJOR the plugin was built with */
    uint32_t abi_minor;
    uint32_t kind;      /* enum refit_plugin_kind */
    const char *name;   /* "tcp", "file", "qwen3"; must match the file name */
    const char *version;
    const char *description;

    /* Schema of the plugin's configuration section ("transport.<name>",
     * "store.<name>", "model.<name>"); may be NULL with n_config 0. */
    const struct refit_cfg_field *config;
    size_t n_config;

    /* Called once after the checks.  A non-zero return rejects the plugin
     * (the loader reports the message and unloads it).  May be NULL. */
    int (*load)(const struct refit_host *host);
    void (*unload)(void); /* may be NULL */

    /* The kind's ops table: struct refit_transport_ops, refit_store_ops or
     * refit_model_ops, each beginning with its size. */
    const void *ops;
};

typedef const struct refit_plugin *(*refit_plugin_entry_fn)(void);

#define REFIT_PLUGIN_ENTRY_SYMBOL "refit_plugin_entry"

/* Plugins define their entry with this, which gives it default visibility
 * while everything else in the module is built hidden. */
#define REFIT_PLUGIN_EXPORT __attribute__((visibility("default")))

#ifdef __cplusplus
}
#endif
#endif
