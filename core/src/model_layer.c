/* model_layer.c — per-layer dimensions (REFIT_DIMF_PER_LAYER): a config
 * list with one item per decoder layer (GLM-5's indexer_types says which
 * layers own a sparse-attention indexer), read once, and the presence of an
 * entry's instance at a layer when its `when` names one.  Generic: the
 * plugin's table says which key and which string counts. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"
#include "refit/status.h"

static int item_value(const refit_model_t *m, const struct refit_model_dim *d, const char *key, const char *want,
                      size_t j, json_t *it, int64_t *out)
{
    (void)m;
    if (json_is_integer(it))
        *out = (int64_t)json_integer_value(it);
    else if (json_is_boolean(it))
        *out = json_is_true(it);
    else if (json_is_string(it) && want)
        *out = !strcmp(json_string_value(it), want);
    else
        return refit_error_set(REFIT_EPROTO, "config.json: %s[%zu] is not %s (dimension '%s')", key, j,
                               want ? "a string, integer or boolean" : "an integer or boolean", d->name);
    return 0;
}

int rf_dim_layers_read(refit_model_t *m, size_t i)
{
    const struct refit_model_dim *d = &m->spec->dims[i];
    char key[128];
    const char *eq = d->keys ? strchr(d->keys, '=') : NULL;
    size_t len = d->keys ? (eq ? (size_t)(eq - d->keys) : strlen(d->keys)) : 0;
    if (!d->def || len == 0 || len >= sizeof(key) || memchr(d->keys, '|', len))
        return refit_error_set(REFIT_EPROTO, "per-layer dimension '%s': one key and a default needed", d->name);
    memcpy(key, d->keys, len);
    key[len] = '\0';
    int rc = rf_expr_eval(d->def, m->dim_names, m->dim_vals, i, &m->dim_vals[i]);
    if (rc)
        return refit_error_push(rc, "dimension '%s'", d->name);
    if (!m->layer_vals && !(m->layer_vals = calloc(m->spec->n_dims, sizeof(*m->layer_vals))))
        return REFIT_ENOMEM;
    int64_t n = m->shape.n_layers;
    int64_t *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(*v));
    if (!v)
        return REFIT_ENOMEM;
    m->layer_vals[i] = v;
    for (int64_t l = 0; l < n; l++)
        v[l] = m->dim_vals[i];
    json_t *list = json_object_get(m->json, key);
    if (!list || json_is_null(list))
        return 0;
    if (!json_is_array(list))
        return refit_error_set(REFIT_EPROTO, "config.json: key '%s' is not a list (dimension '%s')", key, d->name);
    size_t items = json_array_size(list);
    for (size_t j = 0; j < items && (int64_t)j < n; j++) {
        rc = item_value(m, d, key, eq ? eq + 1 : NULL, j, json_array_get(list, j), &v[j]);
        if (rc)
            return rc;
    }
    return 0;
}

static bool is_ident(char c)
{
    return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool rf_entry_names_layer_dim(const refit_model_t *m, const struct refit_model_entry *e)
{
    if (!m->layer_vals || !e->when)
        return false;
    for (const char *p = e->when; *p;) {
        if (!is_ident(*p)) {
            p++;
            continue;
        }
        const char *s = p;
        while (is_ident(*p))
            p++;
        for (size_t i = 0; i < m->spec->n_dims; i++)
            if (m->layer_vals[i] && strlen(m->dim_names[i]) == (size_t)(p - s) &&
                !strncmp(m->dim_names[i], s, (size_t)(p - s)))
                return true;
    }
    return false;
}

int rf_entry_present_at(const refit_model_t *m, const struct refit_model_entry *e, int64_t layer, int64_t *vals,
                        bool *out)
{
    const struct rf_entry_val *ev = rf_entry_val(m, e);
    if (!ev->per_layer || layer < 0 || layer >= m->shape.n_layers) {
        *out = ev->present;
        return 0;
    }
    size_t nd = m->spec->n_dims;
    for (size_t i = 0; i < nd; i++)
        vals[i] = m->layer_vals[i] ? m->layer_vals[i][layer] : m->dim_vals[i];
    int64_t w = 0;
    int rc = rf_expr_eval(e->when, m->dim_names, vals, nd, &w);
    if (rc)
        return refit_error_push(rc, "spec entry '%s', layer %lld", e->megatron, (long long)layer);
    *out = w != 0;
    return 0;
}
