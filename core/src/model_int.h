/* model_int.h — the model object shared by model.c, layout.c and convert.c
 * (not installed). */
#ifndef REFIT_MODEL_INT_H
#define REFIT_MODEL_INT_H

#include <jansson.h>

#include "refit/convert.h"

struct refit_model {
    refit_loader_t *loader;
    const struct refit_plugin *plugin;
    const struct refit_model_ops *ops;
    json_t *json;
    const char *model_type; /* into json */
    struct refit_model_hfcfg hfcfg;
    struct refit_model_shape shape;
    enum refit_layer_kind *kinds;
    const struct refit_model_entry *entries;
    size_t n_entries;
};

/* One instance of a spec entry: a layer (-1 global) and, for per-expert
 * entries, nothing yet (experts are expanded by the caller). */
typedef int (*rf_instance_fn)(void *arg, const struct refit_model_entry *e, int64_t layer);
/* Every instance present in this model (requires bits, layer kinds; MTP
 * layers left out). */
int rf_model_instances(const refit_model_t *m, rf_instance_fn fn, void *arg);
/* Resolve a symbolic dimension. */
int64_t rf_model_dim(const refit_model_t *m, enum refit_model_dim d);
/* Expand a name pattern: {L} layer, {k} local expert, {e} global expert.
 * malloc'ed. */
char *rf_model_name(const char *pattern, int64_t layer, int64_t expert);
/* Whether name matches one of the fnmatch patterns. */
int rf_match_any(const char *name, const char *const *pats, size_t n);

#endif
