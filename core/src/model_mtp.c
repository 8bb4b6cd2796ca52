/* model_mtp.c — multi-token-prediction (MTP) layers as the spec declares
 * them (refit/model.h "Multi-token prediction"): whether a conversion
 * carries them, and the names a layout gives the decoder block of an MTP
 * layer.  Generic: which layouts rename what comes from the plugin's
 * table; the core names no model, trainer or engine here. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"
#include "refit/status.h"

static bool spec_has_mtp(const struct refit_model_spec *s)
{
    return s->size >= offsetof(struct refit_model_spec, n_mtp_names) + sizeof(s->n_mtp_names);
}

enum refit_layer_kind rf_model_mtp_block(const refit_model_t *m)
{
    return spec_has_mtp(m->spec) ? m->spec->mtp_block : 0;
}

bool rf_model_mtp_on(const refit_model_t *m, const struct refit_convert_opts *o)
{
    return o && o->include_mtp && m->shape.n_mtp_layers > 0 && rf_model_mtp_block(m) != 0;
}

const struct refit_mtp_naming *rf_model_mtp_naming(const refit_model_t *m, const char *layout)
{
    const struct refit_model_spec *s = m->spec;
    for (size_t i = 0; spec_has_mtp(s) && layout && i < s->n_mtp_names; i++)
        if (s->mtp_names[i].layout && !strcmp(s->mtp_names[i].layout, layout))
            return &s->mtp_names[i];
    return NULL;
}

int rf_model_mtp_check(const refit_model_t *m)
{
    const struct refit_model_spec *s = m->spec;
    if (!spec_has_mtp(s) || !s->mtp_block)
        return 0;
    if (s->mtp_block != REFIT_LAYER_DENSE && s->mtp_block != REFIT_LAYER_MOE)
        return refit_error_set(REFIT_EPROTO, "mtp_block %d: an MTP layer's block is dense or MoE",
                               (int)s->mtp_block);
    if (s->n_mtp_names > 64 || (!s->mtp_names && s->n_mtp_names))
        return refit_error_set(REFIT_EPROTO, "%zu MTP naming rows", s->n_mtp_names);
    for (size_t i = 0; i < s->n_mtp_names; i++) {
        const struct refit_mtp_naming *n = &s->mtp_names[i];
        if (!n->layout || !n->from != !n->to)
            return refit_error_set(REFIT_EPROTO, "MTP naming row %zu: no layout, or `from` without `to`", i);
        if (strcmp(n->layout, "megatron") && !rf_model_target(m, n->layout))
            return refit_error_push(REFIT_EPROTO, "MTP naming row %zu", i);
    }
    if (s->experts == NULL && s->mtp_block == REFIT_LAYER_MOE)
        return refit_error_set(REFIT_EPROTO, "MoE MTP layers in a dense model");
    return 0;
}

char *rf_mtp_rename(const refit_model_t *m, const struct refit_mtp_naming *nm, const struct refit_model_entry *e,
                    int64_t layer, int64_t lval, char *name)
{
    if (!name || !nm || !nm->from || layer < m->shape.n_layers || e->scope == REFIT_SCOPE_MTP)
        return name;
    char *from = rf_model_name(nm->from, lval, -1), *to = rf_model_name(nm->to, lval, -1), *out = NULL;
    size_t fl = from ? strlen(from) : 0;
    if (from && to && strncmp(name, from, fl)) {
        free(from);
        free(to);
        return name; /* not under the decoder prefix: keeps its name */
    }
    if (from && to) {
        size_t len = strlen(to) + strlen(name + fl) + 1;
        if ((out = malloc(len)))
            snprintf(out, len, "%s%s", to, name + fl);
    }
    free(from);
    free(to);
    free(name);
    return out;
}
