/* model.c — a model: the model plugin chosen for an HF config, the
 * config itself (jansson, kept in the core so plugins never see JSON) and
 * the shapes and layer kinds the plugin derives from it. */
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"
#include "refit/log.h"
#include "refit/status.h"

/* ------------------------------------------------------------------ */
/* The getter handed to plugins */

static int cfg_get(void *ctx, const char *key, json_t **out)
{
    json_t *v = json_object_get((json_t *)ctx, key);
    if (!v || json_is_null(v))
        return REFIT_ENOENT;
    *out = v;
    return 0;
}

static int cfg_get_int(void *ctx, const char *key, int64_t *out)
{
    json_t *v;
    int rc = cfg_get(ctx, key, &v);
    if (rc)
        return rc;
    if (!json_is_integer(v))
        return refit_error_set(REFIT_EPROTO, "key '%s' is not an integer", key);
    *out = (int64_t)json_integer_value(v);
    return 0;
}

static int cfg_get_bool(void *ctx, const char *key, bool *out)
{
    json_t *v;
    int rc = cfg_get(ctx, key, &v);
    if (rc)
        return rc;
    if (!json_is_boolean(v))
        return refit_error_set(REFIT_EPROTO, "key '%s' is not true or false", key);
    *out = json_is_true(v);
    return 0;
}

static int cfg_get_str(void *ctx, const char *key, const char **out)
{
    json_t *v;
    int rc = cfg_get(ctx, key, &v);
    if (rc)
        return rc;
    if (!json_is_string(v))
        return refit_error_set(REFIT_EPROTO, "key '%s' is not a string", key);
    *out = json_string_value(v);
    return 0;
}

static int cfg_get_len(void *ctx, const char *key, size_t *out)
{
    json_t *v;
    int rc = cfg_get(ctx, key, &v);
    if (rc)
        return rc;
    if (!json_is_array(v))
        return refit_error_set(REFIT_EPROTO, "key '%s' is not a list", key);
    *out = json_array_size(v);
    return 0;
}

static int cfg_get_int_at(void *ctx, const char *key, size_t i, int64_t *out)
{
    json_t *v;
    int rc = cfg_get(ctx, key, &v);
    if (rc)
        return rc;
    json_t *it = json_is_array(v) ? json_array_get(v, i) : NULL;
    if (!it || !json_is_integer(it))
        return refit_error_set(REFIT_EPROTO, "key '%s' item %zu is not an integer", key, i);
    *out = (int64_t)json_integer_value(it);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Plugin choice */

struct scan_names {
    char **names;
    size_t n;
    int oom;
};

static void collect_model(void *arg, const struct refit_plugin_report *r)
{
    struct scan_names *s = arg;
    if (!r->ok || r->shadowed || r->kind != REFIT_PLUGIN_MODEL || !r->name)
        return;
    char **nn = realloc(s->names, (s->n + 1) * sizeof(*nn));
    if (!nn || !(nn[s->n] = strdup(r->name))) {
        s->oom = 1;
        if (nn)
            s->names = nn;
        return;
    }
    s->names = nn;
    s->n++;
}

static int ops_of(const struct refit_plugin *p, const struct refit_model_ops **out)
{
    const struct refit_model_ops *ops = p->ops;
    /* The first four operations are every plugin's; later ones are checked where used. */
    size_t v1 = offsetof(struct refit_model_ops, spec) + sizeof(ops->spec);
    if (!ops || ops->size < v1 || !ops->claims || !ops->shape ||
        !ops->layer_kind || !ops->spec)
        return refit_error_set(REFIT_EABI, "model plugin '%s': its ops table is incomplete", p->name);
    *out = ops;
    return 0;
}

static int choose_plugin(refit_model_t *m, const char *plugin)
{
    const struct refit_plugin *p;
    if (plugin && *plugin && strcmp(plugin, "auto")) {
        int rc = refit_loader_load(m->loader, REFIT_PLUGIN_MODEL, plugin, &p);
        if (!rc)
            rc = ops_of(p, &m->ops);
        if (rc)
            return rc;
        if (!m->ops->claims(m->model_type))
            return refit_error_set(REFIT_EINVAL, "model plugin '%s' does not convert model_type '%s'",
                                   plugin, m->model_type);
        m->plugin = p;
        return 0;
    }
    struct scan_names s = {0};
    int rc = refit_loader_scan(m->loader, collect_model, &s);
    if (!rc && s.oom)
        rc = REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < s.n && !m->plugin; i++) {
        if (refit_loader_load(m->loader, REFIT_PLUGIN_MODEL, s.names[i], &p))
            continue;
        const struct refit_model_ops *ops;
        if (ops_of(p, &ops))
            continue;
        if (ops->claims(m->model_type)) {
            m->plugin = p;
            m->ops = ops;
        }
    }
    if (!rc && !m->plugin) {
        char list[512] = "";
        size_t len = 0;
        for (size_t i = 0; i < s.n && len < sizeof(list); i++)
            len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "", s.names[i]);
        rc = refit_error_set(REFIT_ENOENT, "no model plugin claims model_type '%s' (model plugins found: %s)",
                             m->model_type, s.n ? list : "none");
    }
    for (size_t i = 0; i < s.n; i++)
        free(s.names[i]);
    free(s.names);
    return rc;
}

/* ------------------------------------------------------------------ */

static int model_init(refit_model_t *m, const char *plugin, const char *name)
{
    m->hfcfg.size = sizeof(m->hfcfg);
    m->hfcfg.ctx = m->json;
    m->hfcfg.get_int = cfg_get_int;
    m->hfcfg.get_bool = cfg_get_bool;
    m->hfcfg.get_str = cfg_get_str;
    m->hfcfg.get_len = cfg_get_len;
    m->hfcfg.get_int_at = cfg_get_int_at;
    const char *mt;
    int rc = cfg_get_str(m->json, "model_type", &mt);
    if (rc)
        return refit_error_set(REFIT_EPROTO, "%s: no model_type", name);
    m->model_type = mt;
    rc = choose_plugin(m, plugin);
    if (rc)
        return refit_error_push(rc, "%s", name);
    rc = m->ops->shape(&m->hfcfg, &m->shape);
    if (!rc)
        rc = m->ops->spec(&m->entries, &m->n_entries);
    if (rc)
        return refit_error_push(rc, "%s (model plugin %s)", name, m->plugin->name);
    const struct refit_model_shape *s = &m->shape;
    if (s->n_layers <= 0 || s->n_mtp_layers < 0 || s->n_layers > 100000 || s->n_mtp_layers > 1000)
        return refit_error_set(REFIT_EPROTO, "%s: %lld layers (+%lld MTP) is not a plausible model",
                               name, (long long)s->n_layers, (long long)s->n_mtp_layers);
    int64_t total = s->n_layers + s->n_mtp_layers;
    m->kinds = calloc((size_t)total, sizeof(*m->kinds));
    if (!m->kinds)
        return REFIT_ENOMEM;
    for (int64_t l = 0; l < total; l++) {
        rc = m->ops->layer_kind(&m->hfcfg, s, l, &m->kinds[l]);
        if (rc)
            return refit_error_push(rc, "%s: layer %lld", name, (long long)l);
        if (l < s->n_layers && m->kinds[l] == REFIT_LAYER_MOE && (s->experts <= 0 || s->moe_intermediate <= 0))
            return refit_error_set(REFIT_EPROTO, "%s: layer %lld has experts but the config gives none",
                                   name, (long long)l);
    }
    refit_log(REFIT_LOG_DEBUG, "model", "%s: model_type %s, plugin %s, %lld layers", name, m->model_type,
              m->plugin->name, (long long)s->n_layers);
    return 0;
}

static int model_from_json(refit_loader_t *l, const char *plugin, json_t *root, const char *name,
                           refit_model_t **out)
{
    if (!json_is_object(root)) {
        json_decref(root);
        return refit_error_set(REFIT_EPROTO, "%s: not a JSON object", name);
    }
    refit_model_t *m = calloc(1, sizeof(*m));
    if (!m) {
        json_decref(root);
        return REFIT_ENOMEM;
    }
    m->loader = l;
    m->json = root;
    int rc = model_init(m, plugin, name);
    if (rc) {
        refit_model_close(m);
        return rc;
    }
    *out = m;
    return 0;
}

int refit_model_open_text(refit_loader_t *l, const char *plugin, const char *text, size_t len,
                          const char *name, refit_model_t **out)
{
    if (!l || !text || !out)
        return refit_error_set(REFIT_EINVAL, "refit_model_open_text: NULL argument");
    json_error_t err;
    json_t *root = json_loadb(text, len, 0, &err);
    if (!root)
        return refit_error_set(REFIT_EPROTO, "%s:%d:%d: %s", name, err.line, err.column, err.text);
    return model_from_json(l, plugin, root, name, out);
}

int refit_model_open(refit_loader_t *l, const char *plugin, const char *config_json,
                     refit_model_t **out)
{
    if (!l || !config_json || !out)
        return refit_error_set(REFIT_EINVAL, "refit_model_open: NULL argument");
    json_error_t err;
    json_t *root = json_load_file(config_json, 0, &err);
    if (!root)
        return refit_error_set(REFIT_EPROTO, "%s:%d:%d: %s", config_json, err.line, err.column, err.text);
    return model_from_json(l, plugin, root, config_json, out);
}

/* A YAML hf: map holds text; a value that parses as JSON (numbers, true,
 * [1, 2]) is taken as such, anything else as a string. */
static int put_hf(void *arg, const char *key, const char *value)
{
    json_t *obj = arg;
    json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
    if (!v)
        v = json_string(value);
    if (!v || json_object_set_new(obj, key, v))
        return REFIT_ENOMEM;
    return 0;
}

int refit_model_open_config(refit_loader_t *l, const refit_config_t *cfg, refit_model_t **out)
{
    const char *plugin = "auto";
    int rc = refit_config_str(cfg, "model.plugin", &plugin);
    if (rc)
        return rc;
    if (refit_config_has(cfg, "model.hf_config")) {
        char *path = NULL;
        rc = refit_config_path(cfg, "model.hf_config", &path);
        if (!rc)
            rc = refit_model_open(l, plugin, path, out);
        free(path);
        return rc;
    }
    if (!refit_config_has(cfg, "model.hf"))
        return refit_error_set(REFIT_ECONFIG, "model: neither hf_config nor an hf: map is given");
    json_t *obj = json_object();
    if (!obj)
        return REFIT_ENOMEM;
    rc = refit_config_map_each(cfg, "model.hf", put_hf, obj);
    if (rc) {
        json_decref(obj);
        return rc;
    }
    return model_from_json(l, plugin, obj, "model.hf", out);
}

void refit_model_close(refit_model_t *m)
{
    if (!m)
        return;
    free(m->kinds);
    json_decref(m->json);
    free(m);
}

const struct refit_model_shape *refit_model_shape(const refit_model_t *m)
{
    return &m->shape;
}

const char *refit_model_type(const refit_model_t *m)
{
    return m->model_type;
}

const char *refit_model_plugin(const refit_model_t *m)
{
    return m->plugin->name;
}

int refit_model_layer_kind(const refit_model_t *m, int64_t layer, enum refit_layer_kind *out)
{
    if (layer < 0 || layer >= m->shape.n_layers + m->shape.n_mtp_layers)
        return refit_error_set(REFIT_ERANGE, "layer %lld outside [0, %lld)", (long long)layer,
                               (long long)(m->shape.n_layers + m->shape.n_mtp_layers));
    *out = m->kinds[layer];
    return 0;
}

void refit_model_spec(const refit_model_t *m, const struct refit_model_entry **entries, size_t *n)
{
    *entries = m->entries;
    *n = m->n_entries;
}

int refit_model_example_config(refit_loader_t *l, const char *plugin, int64_t layers, int64_t vocab,
                               char *buf, size_t cap)
{
    if (!l || !plugin || !buf || !cap)
        return refit_error_set(REFIT_EINVAL, "refit_model_example_config: NULL argument");
    const struct refit_plugin *p;
    const struct refit_model_ops *ops;
    int rc = refit_loader_load(l, REFIT_PLUGIN_MODEL, plugin, &p);
    if (!rc)
        rc = ops_of(p, &ops);
    if (rc)
        return rc;
    if (ops->size < offsetof(struct refit_model_ops, example_config) + sizeof(ops->example_config) ||
        !ops->example_config)
        return refit_error_set(REFIT_ENOTSUP, "model plugin '%s' has no example config.json", plugin);
    rc = ops->example_config(layers, vocab, buf, cap);
    return rc ? refit_error_push(rc, "model plugin '%s': example config.json", plugin) : 0;
}
