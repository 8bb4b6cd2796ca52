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

static int cfg_get_str_at(void *ctx, const char *key, size_t i, const char **out)
{
    json_t *v;
    int rc = cfg_get(ctx, key, &v);
    if (rc)
        return rc;
    json_t *it = json_is_array(v) ? json_array_get(v, i) : NULL;
    if (!it || !json_is_string(it))
        return refit_error_set(REFIT_EPROTO, "key '%s' item %zu is not a string", key, i);
    *out = json_string_value(it);
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
    size_t v1 = offsetof(struct refit_model_ops, table) + sizeof(ops->table);
    if (!ops || ops->size < v1 || !ops->claims || !ops->shape || !ops->layer_kind || !ops->table)
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
/* The spec table: declared dimensions read from the config, every entry's
 * expressions evaluated once */

static int valid_ident(const char *s)
{
    if (!s || !(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
        return 0;
    for (; *s; s++)
        if (!(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

/* One dimension: the first of its keys present in the config, else def. */
static int dim_read(refit_model_t *m, size_t i)
{
    const struct refit_model_dim *d = &m->spec->dims[i];
    if (d->flags & REFIT_DIMF_PER_LAYER)
        return rf_dim_layers_read(m, i);
    char key[128];
    for (const char *k = d->keys; k && *k;) {
        const char *bar = strchr(k, '|');
        size_t len = bar ? (size_t)(bar - k) : strlen(k);
        if (len == 0 || len >= sizeof(key))
            return refit_error_set(REFIT_EPROTO, "dimension '%s': bad key list '%s'", d->name, d->keys);
        memcpy(key, k, len);
        key[len] = '\0';
        k += len + (bar ? 1 : 0);
        int rc;
        if (d->flags & REFIT_DIMF_BOOL) {
            bool b = false;
            rc = cfg_get_bool(m->json, key, &b);
            if (!rc) /* b is unset when the key is absent */
                m->dim_vals[i] = b;
        } else {
            rc = cfg_get_int(m->json, key, &m->dim_vals[i]);
        }
        if (rc == REFIT_ENOENT)
            continue;
        if (rc)
            return refit_error_push(rc, "config.json");
        if ((d->flags & REFIT_DIMF_POSITIVE) && m->dim_vals[i] <= 0)
            return refit_error_set(REFIT_EPROTO, "config.json: key '%s' must be positive, not %lld", key,
                                   (long long)m->dim_vals[i]);
        return 0;
    }
    if (!d->def)
        return refit_error_set(REFIT_EPROTO, "config.json: required key '%s' is missing",
                               d->keys ? d->keys : d->name);
    int rc = rf_expr_eval(d->def, m->dim_names, m->dim_vals, i, &m->dim_vals[i]);
    return rc ? refit_error_push(rc, "dimension '%s'", d->name) : 0;
}

static int entry_eval(refit_model_t *m, size_t i)
{
    const struct refit_model_entry *e = &m->entries[i];
    struct rf_entry_val *v = &m->ev[i];
    const char *const *nm = m->dim_names;
    size_t nd = m->spec->n_dims;
    int64_t w = 1;
    int rc = 0;
    if (!e->megatron || !e->hf[0] || e->role < REFIT_ROLE_REPLICATED || e->role > REFIT_ROLE_EXPERT_ROW ||
        e->scope < REFIT_SCOPE_GLOBAL || e->scope > REFIT_SCOPE_MTP)
        return refit_error_set(REFIT_EPROTO, "spec entry %zu: no trainer name, no HF part, or a bad role or scope",
                               i);
    if (e->when)
        rc = rf_expr_eval(e->when, nm, m->dim_vals, nd, &w);
    v->present = w != 0;
    v->per_layer = e->when && rf_entry_names_layer_dim(m, e);
    v->n_parts = e->hf[1] ? (e->hf[2] ? 3 : 2) : 1;
    v->ndim = e->cols ? 2 : 1;
    v->cols = 1;
    if (!rc && e->cols)
        rc = rf_expr_eval(e->cols, nm, m->dim_vals, nd, &v->cols);
    for (int p = 0; !rc && p < v->n_parts; p++)
        rc = rf_expr_eval(e->rows[p], nm, m->dim_vals, nd, &v->rows[p]);
    for (int a = 0; !rc && a < 3; a++)
        if (e->args[a])
            rc = rf_expr_eval(e->args[a], nm, m->dim_vals, nd, &v->args[a]);
    if (!rc && e->role == REFIT_ROLE_QKV_COLUMN && (!e->args[2] || v->n_parts != 3))
        rc = refit_error_set(REFIT_EPROTO, "a QKV_COLUMN entry needs three parts and args (heads, groups, head dim)");
    if (rc)
        return refit_error_push(rc, "spec entry '%s'", e->megatron);
    for (int p = 0; v->present && p < v->n_parts; p++)
        if (v->rows[p] < 0 || v->cols <= 0)
            return refit_error_set(REFIT_EPROTO, "spec entry '%s': part %s has shape %lld x %lld", e->megatron,
                                   e->hf[p], (long long)v->rows[p], (long long)v->cols);
    return 0;
}

/* Target names unique, bases known, every dst naming a known target. */
static int targets_check(const refit_model_t *m)
{
    const struct refit_model_spec *s = m->spec;
    for (size_t i = 0; i < s->n_targets; i++) {
        const struct refit_target_layout *t = &s->targets[i];
        if (!t->name || (t->base && !rf_model_target(m, t->base)))
            return refit_error_set(REFIT_EPROTO, "target layout %zu: no name or an unknown base", i);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(s->targets[j].name, t->name))
                return refit_error_set(REFIT_EPROTO, "target layout '%s' is declared twice", t->name);
    }
    for (size_t i = 0; i < m->n_entries; i++)
        for (const struct refit_model_dst *d = m->entries[i].dst; d && d->target; d++) {
            if (!rf_model_target(m, d->target))
                return refit_error_push(REFIT_EPROTO, "spec entry '%s'", m->entries[i].megatron);
            /* a target's own TP rule: only the plain linear layers' */
            if (d->role && d->role != REFIT_ROLE_REPLICATED && d->role != REFIT_ROLE_COLUMN &&
                d->role != REFIT_ROLE_ROW)
                return refit_error_set(REFIT_EPROTO, "spec entry '%s', target '%s': role %d is not replicated, "
                                                     "column or row", m->entries[i].megatron, d->target, (int)d->role);
        }
    return 0;
}

static int spec_load(refit_model_t *m)
{
    const struct refit_model_spec *s = m->ops->table();
    if (!s || s->size < offsetof(struct refit_model_spec, experts) + sizeof(s->experts) || (!s->dims && s->n_dims) || !s->entries || !s->n_entries ||
        (!s->targets && s->n_targets) || s->n_dims > 4096 || s->n_entries > 100000)
        return refit_error_set(REFIT_EABI, "its spec table is incomplete");
    /* struct refit_model_dst grew a field (role) with the MTP fields at the
     * spec's end: a table without those was built against the older header,
     * and its dst arrays have the older stride, which the core cannot walk. */
    if (s->size < offsetof(struct refit_model_spec, n_mtp_names) + sizeof(s->n_mtp_names))
        return refit_error_set(REFIT_EABI, "its spec table (%zu bytes) was built against an older refit/model.h "
                               "(struct refit_model_dst has grown since): rebuild the plugin", s->size);
    m->spec = s;
    m->entries = s->entries;
    m->n_entries = s->n_entries;
    m->dim_names = calloc(s->n_dims + 1, sizeof(*m->dim_names));
    m->dim_vals = calloc(s->n_dims + 1, sizeof(*m->dim_vals));
    m->ev = calloc(s->n_entries, sizeof(*m->ev));
    if (!m->dim_names || !m->dim_vals || !m->ev)
        return REFIT_ENOMEM;
    int rc = 0;
    for (size_t i = 0; !rc && i < s->n_dims; i++) {
        m->dim_names[i] = s->dims[i].name;
        if (!valid_ident(s->dims[i].name) || !strcmp(s->dims[i].name, "tp") || !strcmp(s->dims[i].name, "ep"))
            return refit_error_set(REFIT_EPROTO, "dimension %zu has no valid name (tp and ep are reserved)", i);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(s->dims[j].name, s->dims[i].name))
                return refit_error_set(REFIT_EPROTO, "dimension '%s' is declared twice", s->dims[i].name);
        rc = dim_read(m, i);
    }
    if (!rc && s->experts)
        rc = rf_expr_eval(s->experts, m->dim_names, m->dim_vals, s->n_dims, &m->experts);
    for (size_t i = 0; !rc && i < s->n_entries; i++)
        rc = entry_eval(m, i);
    if (!rc)
        rc = targets_check(m);
    if (!rc)
        rc = rf_model_sources_check(m);
    if (!rc)
        rc = rf_model_mtp_check(m);
    return rc;
}

const struct refit_target_layout *rf_model_target(const refit_model_t *m, const char *name)
{
    for (size_t i = 0; name && i < m->spec->n_targets; i++)
        if (!strcmp(m->spec->targets[i].name, name))
            return &m->spec->targets[i];
    if (name && m->cfg_target && m->cfg_target->name && !strcmp(m->cfg_target->name, name))
        return m->cfg_target;
    char list[256] = "";
    size_t len = 0;
    for (size_t i = 0; i < m->spec->n_targets && len < sizeof(list); i++)
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "", m->spec->targets[i].name);
    refit_error_set(REFIT_EINVAL, "model plugin %s has no target layout '%s' (it offers: %s)", m->plugin->name,
                    name ? name : "(none)", m->spec->n_targets ? list : "none");
    return NULL;
}

/* One entry's destination, against names/vals (dims, tp, ep). */
static int dst_of(const refit_model_t *m, const struct refit_target_layout *t, const struct refit_model_entry *e,
                  const char *const *names, const int64_t *vals, const struct refit_model_dst **out)
{
    size_t n = m->spec->n_dims + 2;
    *out = NULL;
    /* a base chain is at most n_targets long (a cycle ends there) */
    for (size_t hop = 0; t && hop <= m->spec->n_targets; hop++) {
        for (const struct refit_model_dst *d = e->dst; d && d->target; d++) {
            if (strcmp(d->target, t->name))
                continue;
            int64_t w = 1;
            if (d->when && rf_expr_eval(d->when, names, vals, n, &w))
                return refit_error_push(REFIT_EPROTO, "spec entry '%s', target %s", e->megatron, t->name);
            if (w) {
                *out = d;
                return 0;
            }
        }
        const char *base = t->base;
        t = NULL;
        for (size_t i = 0; base && i < m->spec->n_targets && !t; i++)
            if (!strcmp(m->spec->targets[i].name, base))
                t = &m->spec->targets[i];
        /* the configured target is nobody's base (its own base is checked) */
    }
    return 0;
}

int rf_model_dsts(const refit_model_t *m, const struct refit_target_layout *t, int tp, int ep,
                  const struct refit_model_dst ***out)
{
    size_t nd = m->spec->n_dims;
    const char **names = calloc(nd + 2, sizeof(*names));
    int64_t *vals = calloc(nd + 2, sizeof(*vals));
    const struct refit_model_dst **sel = calloc(m->n_entries, sizeof(*sel));
    int rc = names && vals && sel ? 0 : REFIT_ENOMEM;
    if (!rc) {
        memcpy(names, m->dim_names, nd * sizeof(*names));
        memcpy(vals, m->dim_vals, nd * sizeof(*vals));
        names[nd] = "tp";
        names[nd + 1] = "ep";
        vals[nd] = tp;
        vals[nd + 1] = ep;
    }
    for (size_t i = 0; !rc && i < m->n_entries; i++)
        rc = dst_of(m, t, &m->entries[i], names, vals, &sel[i]);
    free(names);
    free(vals);
    if (rc) {
        free(sel);
        return rc;
    }
    *out = sel;
    return 0;
}

const char *rf_target_name(const struct refit_convert_opts *o)
{
    if (o->target_name)
        return o->target_name;
    return o->target == REFIT_TARGET_HF ? "hf" : o->target == REFIT_TARGET_VLLM ? "vllm" : "(unknown)";
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
    m->hfcfg.get_str_at = cfg_get_str_at;
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
        rc = spec_load(m);
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

/* The configuration's own target layout on the opened model; closes it on error. */
static int with_cfg_target(const refit_config_t *cfg, refit_model_t **out)
{
    int rc = refit_model_targets_from_config(*out, cfg);
    if (rc) {
        refit_model_close(*out);
        *out = NULL;
    }
    return rc;
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
        return rc ? rc : with_cfg_target(cfg, out);
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
    rc = model_from_json(l, plugin, obj, "model.hf", out);
    return rc ? rc : with_cfg_target(cfg, out);
}

void refit_model_close(refit_model_t *m)
{
    if (!m)
        return;
    rf_model_cfg_free(m);
    free(m->kinds);
    free(m->dim_names);
    for (size_t i = 0; m->layer_vals && m->spec && i < m->spec->n_dims; i++)
        free(m->layer_vals[i]);
    free(m->layer_vals);
    free(m->dim_vals);
    free(m->ev);
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

const struct refit_model_spec *refit_model_spec(const refit_model_t *m)
{
    return m ? m->spec : NULL;
}

int refit_model_dim(const refit_model_t *m, const char *name, int64_t *out)
{
    for (size_t i = 0; m && name && out && i < m->spec->n_dims; i++)
        if (!strcmp(m->dim_names[i], name)) {
            *out = m->dim_vals[i];
            return 0;
        }
    return refit_error_set(REFIT_ENOENT, "model plugin %s declares no dimension '%s'",
                           m ? m->plugin->name : "?", name ? name : "(null)");
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
