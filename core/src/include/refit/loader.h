/* refit/loader.h — finding, checking and loading plugins (libltdl).
 *
 * Search order for a plugin file refit-<kind>-<name>.so:
 *   1. REFIT_PLUGIN_PATH (colon-separated directories),
 *   2. the configuration's plugins.path,
 *   3. the build tree (so tests and `make demo` run uninstalled plugins),
 *   4. the install directory.
 * The first file that passes the checks (entry symbol, ABI major, kind,
 * name, load()) wins; a candidate that fails is unloaded and remembered with
 * why, so a later candidate can still be used and `refit plugins` can say
 * what was rejected. */
#ifndef REFIT_LOADER_H
#define REFIT_LOADER_H

#include <stdbool.h>

#include "refit/config.h"
#include "refit/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct refit_loader refit_loader_t;

/* cfg may be NULL (no plugins.path); when given, the schema of each loaded
 * plugin is added to it.  Destroy with refit_loader_destroy, which unloads
 * every plugin: their descriptors and ops are invalid afterwards. */
int refit_loader_create(refit_config_t *cfg, refit_loader_t **out);
void refit_loader_destroy(refit_loader_t *l);

/* Load a configured plugin.  Missing or rejected is an error whose message
 * names every directory searched and every candidate rejected with why.
 * The descriptor stays valid until the loader is destroyed. */
int refit_loader_load(refit_loader_t *l, uint32_t kind, const char *name,
                      const struct refit_plugin **out);

/* Like refit_loader_load but a missing plugin is not an error: returns
 * REFIT_ENOENT quietly (the caller falls back). */
int refit_loader_load_optional(refit_loader_t *l, uint32_t kind, const char *name,
                               const struct refit_plugin **out);

/* Where the plugin was loaded from ("" if it was not). */
const char *refit_loader_path_of(const refit_loader_t *l, const struct refit_plugin *p);

/* Everything found in the search path, loaded or rejected. */
struct refit_plugin_report {
    bool ok;
    uint32_t kind;       /* 0 when unknown (rejected before the descriptor) */
    const char *name;    /* from the file name when rejected early */
    const char *version; /* NULL when rejected */
    const char *description;
    const char *path;
    const char *why;     /* rejection reason, NULL when ok */
    bool shadowed;       /* a valid plugin of the same kind and name came earlier */
};
int refit_loader_scan(refit_loader_t *l,
                      void (*fn)(void *arg, const struct refit_plugin_report *r), void *arg);

/* The directories searched, in order (for messages and `refit plugins`). */
size_t refit_loader_dirs(const refit_loader_t *l, const char *const **dirs);

/* The host table handed to plugins. */
const struct refit_host *refit_host_get(void);

/* "transport", "store", "model" or "unknown" (messages, `refit plugins`). */
const char *refit_plugin_kind_name(uint32_t kind);

#ifdef __cplusplus
}
#endif
#endif
