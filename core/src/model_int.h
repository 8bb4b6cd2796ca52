/* model_int.h — the model object shared by model*.c, layout*.c and the
 * conversion files (not installed). */
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
    const struct refit_model_spec *spec;
    const struct refit_model_entry *entries;
    size_t n_entries;
    /* The declared dimensions' names and values (spec->dims order). */
    const char **dim_names;
    int64_t *dim_vals;
    /* Each entry's expressions, evaluated once (entries order). */
    struct rf_entry_val *ev;
    int64_t experts; /* spec->experts evaluated; 0 for dense models */
    /* REFIT_DIMF_PER_LAYER dimensions: each one's value per decoder layer
     * (NULL for the others); NULL when the spec declares none. */
    int64_t **layer_vals;
    /* A target layout from configuration (model_target_cfg.c), its strings
     * (name, base, engine) and prefix renames (from, to pairs); NULL: none. */
    struct refit_target_layout *cfg_target;
    char *cfg_strs[3];
    char **cfg_rename;
    size_t n_cfg_rename;
};

/* An entry's expressions against this model's dimensions. */
struct rf_entry_val {
    bool present;     /* `when` holds */
    int n_parts;      /* hf[] entries */
    int ndim;         /* 1 (cols NULL) or 2 */
    int64_t rows[3], cols; /* cols 1 for 1-D */
    int64_t args[3];
    bool per_layer;   /* `when` names a per-layer dimension: present is per instance */
};

/* Evaluate an expression over names[i] = vals[i] (model_expr.c). */
int rf_expr_eval(const char *expr, const char *const *names, const int64_t *vals, size_t n, int64_t *out);
/* The evaluated values of an entry of m. */
static inline const struct rf_entry_val *rf_entry_val(const refit_model_t *m, const struct refit_model_entry *e)
{
    return &m->ev[e - m->entries];
}
/* A REFIT_DIMF_PER_LAYER dimension read from config.json (model_layer.c). */
int rf_dim_layers_read(refit_model_t *m, size_t i);
/* Whether an entry's `when` names a per-layer dimension. */
bool rf_entry_names_layer_dim(const refit_model_t *m, const struct refit_model_entry *e);
/* Whether an instance of e at layer (-1 global) is present: its `when`
 * with the per-layer dimensions at that layer.  vals: n_dims scratch. */
int rf_entry_present_at(const refit_model_t *m, const struct refit_model_entry *e, int64_t layer, int64_t *vals,
                        bool *out);
/* A target layout of the model by name; NULL (error set) when it offers none. */
const struct refit_target_layout *rf_model_target(const refit_model_t *m, const char *name);
/* The destination of every entry (out[i] for entries[i], malloc'ed) in
 * target t for a rank of tp (and ep): the first of the entry's own whose
 * `when` holds, else its base's, else NULL (HF names, unfused, source
 * dtype, the entry's fp8).  REFIT_EPROTO (error set) when a `when` does not
 * evaluate. */
int rf_model_dsts(const refit_model_t *m, const struct refit_target_layout *t, int tp, int ep,
                  const struct refit_model_dst ***out);
/* Whether the spec's source layouts are well formed (model_source.c);
 * REFIT_EPROTO (error set) naming the bad one. */
int rf_model_sources_check(const refit_model_t *m);
/* The name of the opts' target ("hf" / "vllm" from the enum when no name). */
const char *rf_target_name(const struct refit_convert_opts *o);

/* A destination name (taken) in target t: renamed by the configured
 * target's prefix rules when t is it.  NULL on ENOMEM. */
char *rf_target_rename(const refit_model_t *m, const struct refit_target_layout *t, char *name);
void rf_model_cfg_free(refit_model_t *m);

/* The kind of an MTP layer's decoder block (the spec's mtp_block), 0 when
 * the plugin converts no MTP layers. */
enum refit_layer_kind rf_model_mtp_block(const refit_model_t *m);
/* Whether the model has MTP layers the plugin converts and o asks for them. */
bool rf_model_mtp_on(const refit_model_t *m, const struct refit_convert_opts *o);
/* The MTP naming row of a layout ("megatron", a target name); NULL when
 * the spec has none (that layout loads no MTP layers). */
const struct refit_mtp_naming *rf_model_mtp_naming(const refit_model_t *m, const char *layout);
/* The spec's MTP fields well formed (REFIT_EPROTO, error set). */
int rf_model_mtp_check(const refit_model_t *m);
/* name (taken) with the naming's prefix rewritten when it is a decoder
 * block tensor of an MTP layer: `lval` is what {L} stands for in this
 * layout's names.  NULL on ENOMEM. */
char *rf_mtp_rename(const refit_model_t *m, const struct refit_mtp_naming *nm, const struct refit_model_entry *e,
                    int64_t layer, int64_t lval, char *name);

/* One instance of a spec entry: a layer (-1 global) and, for per-expert
 * entries, nothing yet (experts are expanded by the caller). */
typedef int (*rf_instance_fn)(void *arg, const struct refit_model_entry *e, int64_t layer);
/* Every instance present in this model (requires bits, layer kinds; MTP
 * layers left out). */
int rf_model_instances(const refit_model_t *m, rf_instance_fn fn, void *arg);
/* The same, with REFIT_SCOPE_TIED_COPY entries when tied_copies (trainer
 * layouts with pipeline parallelism), and the MTP layers (layer numbers
 * n_layers + i: their decoder block and REFIT_SCOPE_MTP entries) when mtp. */
int rf_model_instances_ex(const refit_model_t *m, bool tied_copies, bool mtp, rf_instance_fn fn, void *arg);
/* Expand a name pattern: {L} layer, {k} local expert, {e} global expert.
 * malloc'ed. */
char *rf_model_name(const char *pattern, int64_t layer, int64_t expert);
/* Whether name matches one of the fnmatch patterns. */
int rf_match_any(const char *name, const char *const *pats, size_t n);

#endif
