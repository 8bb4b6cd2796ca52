/* plugin_common.h — the plugin around a model family's ops, the same in
 * every model plugin (header-only: each plugin defines its own copy, and
 * refit_plugin_entry stays its one exported symbol). */
#ifndef REFIT_MODEL_PLUGIN_COMMON_H
#define REFIT_MODEL_PLUGIN_COMMON_H

#include "refit/model.h"
#include "refit/plugin.h"

/* The plugin `name_` from the family's pfx_spec (its table) and its ops
 * pfx_claims, pfx_shape, pfx_layer_kind and pfx_example_config: defines
 * pfx_table, pfx_ops, pfx_load (which keeps the host table in the plugin's
 * `host`, declared before the ops that use it), pfx_plugin and
 * refit_plugin_entry.  Put it last in the plugin's file. */
#define RFM_DEFINE_PLUGIN(pfx, name_, description_)                                          \
    static const struct refit_model_spec *pfx##_table(void)                                  \
    {                                                                                        \
        return &pfx##_spec;                                                                  \
    }                                                                                        \
    static const struct refit_model_ops pfx##_ops = {                                        \
        .size = sizeof(struct refit_model_ops),                                              \
        .claims = pfx##_claims,                                                              \
        .shape = pfx##_shape,                                                                \
        .layer_kind = pfx##_layer_kind,                                                      \
        .table = pfx##_table,                                                                \
        .example_config = pfx##_example_config,                                              \
    };                                                                                       \
    static int pfx##_load(const struct refit_host *h)                                        \
    {                                                                                        \
        host = h;                                                                            \
        return 0;                                                                            \
    }                                                                                        \
    static const struct refit_plugin pfx##_plugin = {                                        \
        .abi_major = REFIT_ABI_MAJOR,                                                        \
        .abi_minor = REFIT_ABI_MINOR,                                                        \
        .kind = REFIT_PLUGIN_MODEL,                                                          \
        .name = name_,                                                                       \
        .version = "0.1.0",                                                                  \
        .description = description_,                                                         \
        .load = pfx##_load,                                                                  \
        .ops = &pfx##_ops,                                                                   \
    };                                                                                       \
    REFIT_PLUGIN_EXPORT const struct refit_plugin *refit_plugin_entry(void)                  \
    {                                                                                        \
        return &pfx##_plugin;                                                                \
    }

#endif
