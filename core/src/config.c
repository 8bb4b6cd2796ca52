/* config.c — the cluster configuration.
 *
 * YAML is read (config_yaml.c, with its limits) into a small tree of our
 * own that remembers each node's file:line:column.  Values are looked up
 * lazily in precedence order: --set overrides, then REFIT_<SECTION>_<KEY>
 * environment variables, then the file, then the schema default.  Keeping
 * the layers apart (rather than patching the tree) lets `refit config
 * check` say where every effective value came from. */
#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "refit/config.h"
#include "refit/status.h"
#include "config_int.h"
#include "util.h"

/* Sections whose children named after a plugin are plugin sections. */
int rf_cfg_is_plugin_parent(const char *s)
{
    return !strcmp(s, "transport") || !strcmp(s, "store") || !strcmp(s, "model");
}

/* ------------------------------------------------------------------ */
/* Tree */

/* Walk a dotted path; NULL when any component is absent. */
struct node *rf_cfg_tree_find(const struct node *root, const char *path, struct node **parent,
                              size_t *pidx)
{
    const struct node *cur = root;
    const char *p = path;
    struct node *found = NULL;
    while (cur) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        size_t idx = 0;
        found = rf_cfg_map_get(cur, p, len, &idx);
        if (!found)
            return NULL;
        if (!dot) {
            if (parent)
                *parent = (struct node *)cur;
            if (pidx)
                *pidx = idx;
            return found;
        }
        cur = found;
        p = dot + 1;
    }
    return NULL;
}

static const char *intern_file(refit_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_files; i++)
        if (!strcmp(cfg->files[i], name))
            return cfg->files[i];
    char **nf = realloc(cfg->files, (cfg->n_files + 1) * sizeof(*nf));
    if (!nf)
        return NULL;
    cfg->files = nf;
    nf[cfg->n_files] = strdup(name);
    if (!nf[cfg->n_files])
        return NULL;
    return nf[cfg->n_files++];
}

static int parse_yaml(refit_config_t *cfg, const char *name, const char *text, size_t len,
                      struct node **out)
{
    const char *file = intern_file(cfg, name);
    if (!file)
        return REFIT_ENOMEM;
    return rf_cfg_yaml_parse(file, text, len, out);
}

/* Merge `from` (a model file's model: mapping) under `into`: keys present
 * in `into` win, recursively for nested mappings. */
static int merge_under(struct node *into, struct node *from)
{
    for (size_t i = 0; i < from->n; i++) {
        size_t idx;
        struct node *have = rf_cfg_map_get(into, from->keys[i], strlen(from->keys[i]), &idx);
        if (have) {
            if (have->kind == N_MAP && from->items[i]->kind == N_MAP) {
                int rc = merge_under(have, from->items[i]);
                if (rc)
                    return rc;
            }
            continue;
        }
        size_t nn = into->n + 1;
        struct node **it = realloc(into->items, nn * sizeof(*it));
        if (!it)
            return REFIT_ENOMEM;
        into->items = it;
        char **ks = realloc(into->keys, nn * sizeof(*ks));
        if (!ks)
            return REFIT_ENOMEM;
        into->keys = ks;
        int *kl = realloc(into->kline, nn * sizeof(int));
        if (!kl)
            return REFIT_ENOMEM;
        into->kline = kl;
        int *kc = realloc(into->kcol, nn * sizeof(int));
        if (!kc)
            return REFIT_ENOMEM;
        into->kcol = kc;
        /* Move the subtree over. */
        into->items[into->n] = from->items[i];
        into->keys[into->n] = from->keys[i];
        into->kline[into->n] = from->kline[i];
        into->kcol[into->n] = from->kcol[i];
        from->items[i] = NULL;
        from->keys[i] = NULL;
        into->n = nn;
    }
    return 0;
}

static char *dir_of(const char *file)
{
    char *copy = strdup(file);
    if (!copy)
        return NULL;
    char *d = strdup(dirname(copy));
    free(copy);
    return d;
}

static char *join_path(const char *dir, const char *rel)
{
    if (rel[0] == '/' || !dir)
        return strdup(rel);
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, rel);
    return p;
}

static int resolve_model_file(refit_config_t *cfg, struct node *root)
{
    struct node *model = rf_cfg_map_get(root, "model", 5, NULL);
    if (!model)
        return 0;
    if (model->kind != N_MAP)
        return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key 'model': expected a mapping",
                               model->file, model->line, model->col);
    struct node *ref = rf_cfg_map_get(model, "file", 4, NULL);
    if (!ref)
        return 0;
    if (ref->kind != N_SCALAR)
        return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key 'model.file': expected a path",
                               ref->file, ref->line, ref->col);
    char *dir = dir_of(ref->file);
    char *path = dir ? join_path(dir, ref->value) : NULL;
    free(dir);
    if (!path)
        return REFIT_ENOMEM;
    char *text = NULL;
    size_t len = 0;
    int rc = rf_cfg_read_file(path, &text, &len);
    if (rc) {
        refit_error_push(rc, "%s:%d:%d: key 'model.file'", ref->file, ref->line, ref->col);
        free(path);
        return rc;
    }
    struct node *mroot = NULL;
    rc = parse_yaml(cfg, path, text, len, &mroot);
    free(text);
    free(path);
    if (rc)
        return rc;
    struct node *mm = rf_cfg_map_get(mroot, "model", 5, NULL);
    if (!mm || mm->kind != N_MAP) {
        rc = refit_error_set(REFIT_ECONFIG, "%s:%d:%d: a model file must hold a 'model:' mapping",
                             mroot->file, mroot->line, mroot->col);
    } else if (mroot->n != 1) {
        rc = refit_error_set(REFIT_ECONFIG, "%s: a model file holds only a 'model:' section",
                             mroot->file);
    } else if (rf_cfg_map_get(mm, "file", 4, NULL)) {
        rc = refit_error_set(REFIT_ECONFIG, "%s: a model file may not reference another", mroot->file);
    } else {
        rc = merge_under(model, mm);
    }
    rf_cfg_node_free(mroot);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Schema lookup */

const struct refit_cfg_field *rf_cfg_schema_find(const refit_config_t *cfg, const char *path,
                                                 const struct section **sec_out)
{
    for (size_t s = 0; s < cfg->n_sections; s++) {
        const struct section *sec = &cfg->sections[s];
        size_t sl = strlen(sec->name);
        if (strncmp(path, sec->name, sl) || path[sl] != '.')
            continue;
        for (size_t i = 0; i < sec->n; i++)
            if (!strcmp(path + sl + 1, sec->fields[i].name)) {
                if (sec_out)
                    *sec_out = sec;
                return &sec->fields[i];
            }
    }
    return NULL;
}

static const struct section *section_find(const refit_config_t *cfg, const char *name)
{
    for (size_t s = 0; s < cfg->n_sections; s++)
        if (!strcmp(cfg->sections[s].name, name))
            return &cfg->sections[s];
    return NULL;
}

/* Is `path` a proper prefix of a known field (so a mapping belongs there)? */
int rf_cfg_schema_is_prefix(const refit_config_t *cfg, const char *path)
{
    size_t pl = strlen(path);
    for (size_t s = 0; s < cfg->n_sections; s++) {
        const struct section *sec = &cfg->sections[s];
        size_t sl = strlen(sec->name);
        if (!strcmp(sec->name, path))
            return 1;
        if (sl > pl && !strncmp(sec->name, path, pl) && sec->name[pl] == '.')
            return 1;
        for (size_t i = 0; i < sec->n; i++) {
            char full[512];
            snprintf(full, sizeof(full), "%s.%s", sec->name, sec->fields[i].name);
            if (strlen(full) > pl && !strncmp(full, path, pl) && full[pl] == '.')
                return 1;
        }
    }
    return 0;
}

/* Closest known key to `path`, for "did you mean". */
void rf_cfg_suggest(const refit_config_t *cfg, const char *path, char *out, size_t cap)
{
    size_t best = 4;
    out[0] = '\0';
    for (size_t s = 0; s < cfg->n_sections; s++) {
        const struct section *sec = &cfg->sections[s];
        char full[512];
        size_t d = rf_edit_distance(path, sec->name, best);
        if (d < best) {
            best = d;
            snprintf(out, cap, "%s", sec->name);
        }
        for (size_t i = 0; i < sec->n; i++) {
            snprintf(full, sizeof(full), "%s.%s", sec->name, sec->fields[i].name);
            d = rf_edit_distance(path, full, best);
            if (d < best) {
                best = d;
                snprintf(out, cap, "%s", full);
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* Value lookup in precedence order */

static void env_name(const char *path, char *out, size_t cap)
{
    size_t j = snprintf(out, cap, "REFIT_");
    for (const char *p = path; *p && j + 1 < cap; p++)
        out[j++] = (*p == '.') ? '_' : (char)toupper((unsigned char)*p);
    out[j] = '\0';
}

static const char *env_get(const refit_config_t *cfg, const char *name)
{
    if (!cfg->envp)
        return getenv(name);
    size_t nl = strlen(name);
    for (char *const *e = cfg->envp; *e; e++)
        if (!strncmp(*e, name, nl) && (*e)[nl] == '=')
            return *e + nl + 1;
    return NULL;
}

void rf_cfg_lookup(const refit_config_t *cfg, const char *path, struct lookup *lk)
{
    memset(lk, 0, sizeof(*lk));
    for (size_t i = cfg->n_ovr; i-- > 0;)
        if (!strcmp(cfg->ovr[i].path, path)) {
            lk->value = cfg->ovr[i].value;
            lk->origin.file = cfg->ovr[i].origin;
            return;
        }
    if (cfg->use_env) {
        char ename[300];
        env_name(path, ename, sizeof(ename));
        const char *v = env_get(cfg, ename);
        if (v) {
            snprintf(lk->env, sizeof(lk->env), "env %s", ename);
            lk->value = v;
            lk->origin.file = lk->env;
            return;
        }
    }
    const struct node *n = cfg->root ? rf_cfg_tree_find(cfg->root, path, NULL, NULL) : NULL;
    if (n) {
        lk->node = n;
        lk->value = n->kind == N_SCALAR ? n->value : NULL;
        lk->origin.file = n->file;
        lk->origin.line = n->line;
        lk->origin.column = n->col;
    }
}

static int origin_error(int status, const struct lookup *lk, const char *path, const char *fmt,
                        const char *detail)
{
    char what[512];
    snprintf(what, sizeof(what), fmt, detail);
    if (lk->origin.line)
        return refit_error_set(status, "%s:%d:%d: key '%s': %s", lk->origin.file, lk->origin.line,
                               lk->origin.column, path, what);
    return refit_error_set(status, "%s: key '%s': %s", lk->origin.file ? lk->origin.file : "default",
                           path, what);
}

/* Check one scalar value against its field; numbers go to *num. */
int rf_cfg_check_value(const struct refit_cfg_field *f, const struct lookup *lk, const char *path,
                       double *num)
{
    const char *v = lk->value;
    double d = 0;
    int64_t i;
    bool b;
    switch (f->type) {
    case REFIT_CFG_STRING:
        return 0;
    case REFIT_CFG_BOOL:
        if (rf_cfg_parse_bool(v, &b))
            return origin_error(REFIT_ECONFIG, lk, path, "'%s' is not a boolean (true/false)", v);
        *num = b;
        return 0;
    case REFIT_CFG_INT:
        if (rf_cfg_parse_int(v, &i))
            return origin_error(REFIT_ECONFIG, lk, path, "'%s' is not an integer", v);
        d = (double)i;
        break;
    case REFIT_CFG_DOUBLE:
        if (rf_cfg_parse_double(v, &d))
            return origin_error(REFIT_ECONFIG, lk, path, "'%s' is not a number", v);
        break;
    case REFIT_CFG_SIZE:
        if (rf_cfg_parse_size(v, &d))
            return origin_error(REFIT_ECONFIG, lk, path,
                                "'%s' is not a size (e.g. 4096, 64KiB, 2MiB, 1GiB)", v);
        break;
    case REFIT_CFG_DURATION:
        if (rf_cfg_parse_duration(v, &d))
            return origin_error(REFIT_ECONFIG, lk, path,
                                "'%s' is not a duration (e.g. 250ms, 30s, 5m)", v);
        break;
    case REFIT_CFG_ENUM:
        if (!rf_cfg_enum_has(f->choices, v)) {
            char msg[300];
            snprintf(msg, sizeof(msg), "'%s' is not one of %s", v, f->choices);
            return origin_error(REFIT_ECONFIG, lk, path, "%s", msg);
        }
        return 0;
    default:
        return 0;
    }
    if (f->min <= f->max && (d < f->min || d > f->max)) {
        char msg[300];
        snprintf(msg, sizeof(msg), "%s is outside [%.17g, %.17g]", v, f->min, f->max);
        return origin_error(REFIT_ERANGE, lk, path, "%s", msg);
    }
    *num = d;
    return 0;
}

/* Resolve path to a checked scalar: value text and number. */
static int get_scalar(const refit_config_t *cfg, const char *path, enum refit_cfg_type want,
                      const char **text, double *num)
{
    const struct refit_cfg_field *f = rf_cfg_schema_find(cfg, path, NULL);
    if (!f)
        return refit_error_set(REFIT_EINVAL, "configuration key '%s' is not in the schema", path);
    if (f->type != want && !(want == REFIT_CFG_STRING && f->type == REFIT_CFG_ENUM))
        return refit_error_set(REFIT_EINVAL, "configuration key '%s' read with the wrong type", path);
    struct lookup lk;
    rf_cfg_lookup(cfg, path, &lk);
    if (!lk.value && lk.node)
        return origin_error(REFIT_ECONFIG, &lk, path, "%s", "expected a single value, not a mapping or list");
    if (!lk.value) {
        if (!f->def)
            return refit_error_set(REFIT_ENOENT, "configuration key '%s' is not set", path);
        lk.value = f->def;
        lk.origin.file = "default";
    }
    double d = 0;
    int rc = rf_cfg_check_value(f, &lk, path, &d);
    if (rc)
        return rc;
    if (text)
        *text = lk.value;
    if (num)
        *num = d;
    return 0;
}

int refit_config_str(const refit_config_t *cfg, const char *path, const char **out)
{
    const struct refit_cfg_field *f = rf_cfg_schema_find(cfg, path, NULL);
    return get_scalar(cfg, path, f && f->type == REFIT_CFG_ENUM ? REFIT_CFG_ENUM : REFIT_CFG_STRING,
                      out, NULL);
}

int refit_config_int(const refit_config_t *cfg, const char *path, int64_t *out)
{
    const char *t;
    double d;
    int rc = get_scalar(cfg, path, REFIT_CFG_INT, &t, &d);
    if (!rc)
        rf_cfg_parse_int(t, out);
    return rc;
}

int refit_config_bool(const refit_config_t *cfg, const char *path, bool *out)
{
    double d;
    int rc = get_scalar(cfg, path, REFIT_CFG_BOOL, NULL, &d);
    if (!rc)
        *out = d != 0;
    return rc;
}

int refit_config_double(const refit_config_t *cfg, const char *path, double *out)
{
    double d;
    int rc = get_scalar(cfg, path, REFIT_CFG_DOUBLE, NULL, &d);
    if (!rc)
        *out = d;
    return rc;
}

int refit_config_size(const refit_config_t *cfg, const char *path, uint64_t *out)
{
    double d;
    int rc = get_scalar(cfg, path, REFIT_CFG_SIZE, NULL, &d);
    if (!rc)
        *out = (uint64_t)llround(d);
    return rc;
}

int refit_config_duration_ms(const refit_config_t *cfg, const char *path, int64_t *out)
{
    double d;
    int rc = get_scalar(cfg, path, REFIT_CFG_DURATION, NULL, &d);
    if (!rc)
        *out = (int64_t)llround(d);
    return rc;
}

int refit_config_list(const refit_config_t *cfg, const char *path, const char *const **items,
                      size_t *n)
{
    const struct refit_cfg_field *f = rf_cfg_schema_find(cfg, path, NULL);
    if (!f || f->type != REFIT_CFG_LIST)
        return refit_error_set(REFIT_EINVAL, "configuration key '%s' is not a list in the schema", path);
    struct lookup lk;
    rf_cfg_lookup(cfg, path, &lk);
    *items = NULL;
    *n = 0;
    if (lk.value && !lk.node) {
        /* An override gives a comma-separated list; keep it in scratch. */
        refit_config_t *mc = (refit_config_t *)cfg;
        size_t cnt = 1;
        for (const char *p = lk.value; *p; p++)
            cnt += *p == ',';
        char *copy = strdup(lk.value);
        const char **arr = calloc(cnt + 1, sizeof(*arr));
        char **sc = realloc(mc->scratch, (mc->n_scratch + 2) * sizeof(*sc));
        if (!copy || !arr || !sc) {
            free(copy);
            free(arr);
            if (sc)
                mc->scratch = sc;
            return REFIT_ENOMEM;
        }
        mc->scratch = sc;
        sc[mc->n_scratch++] = copy;
        sc[mc->n_scratch++] = (char *)arr;
        size_t k = 0;
        for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
            if (*tok)
                arr[k++] = tok;
        *items = arr;
        *n = k;
        return 0;
    }
    if (!lk.node)
        return 0;
    struct node *nd = (struct node *)lk.node;
    if (nd->kind == N_SCALAR) {
        if (!nd->seq_view) {
            nd->seq_view = calloc(1, sizeof(char *));
            if (!nd->seq_view)
                return REFIT_ENOMEM;
            nd->seq_view[0] = nd->value;
        }
        *items = nd->seq_view;
        *n = nd->value[0] ? 1 : 0;
        return 0;
    }
    if (nd->kind != N_SEQ)
        return origin_error(REFIT_ECONFIG, &lk, path, "%s", "expected a list");
    if (!nd->seq_view) {
        nd->seq_view = calloc(nd->n + 1, sizeof(char *));
        if (!nd->seq_view)
            return REFIT_ENOMEM;
        for (size_t i = 0; i < nd->n; i++) {
            if (nd->items[i]->kind != N_SCALAR) {
                free(nd->seq_view);
                nd->seq_view = NULL;
                return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key '%s': list items must be scalars",
                                       nd->items[i]->file, nd->items[i]->line, nd->items[i]->col, path);
            }
            nd->seq_view[i] = nd->items[i]->value;
        }
    }
    *items = nd->seq_view;
    *n = nd->n;
    return 0;
}

int refit_config_map_each(const refit_config_t *cfg, const char *path,
                          int (*fn)(void *arg, const char *key, const char *value), void *arg)
{
    const struct refit_cfg_field *f = rf_cfg_schema_find(cfg, path, NULL);
    if (!f || f->type != REFIT_CFG_MAP)
        return refit_error_set(REFIT_EINVAL, "configuration key '%s' is not a map in the schema", path);
    const struct node *nd = cfg->root ? rf_cfg_tree_find(cfg->root, path, NULL, NULL) : NULL;
    if (nd) {
        if (nd->kind != N_MAP)
            return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key '%s': expected a mapping", nd->file,
                                   nd->line, nd->col, path);
        for (size_t i = 0; i < nd->n; i++) {
            /* Overrides of single entries ("ucx.env.UCX_TLS") win. */
            char sub[512];
            snprintf(sub, sizeof(sub), "%s.%s", path, nd->keys[i]);
            const char *v = NULL;
            for (size_t k = cfg->n_ovr; k-- > 0;)
                if (!strcmp(cfg->ovr[k].path, sub)) {
                    v = cfg->ovr[k].value;
                    break;
                }
            if (!v) {
                if (nd->items[i]->kind != N_SCALAR)
                    return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key '%s': values must be scalars",
                                           nd->items[i]->file, nd->items[i]->line, nd->items[i]->col,
                                           sub);
                v = nd->items[i]->value;
            }
            int rc = fn(arg, nd->keys[i], v);
            if (rc)
                return rc;
        }
    }
    /* Overrides that add entries not in the file. */
    size_t pl = strlen(path);
    for (size_t k = 0; k < cfg->n_ovr; k++) {
        const char *op = cfg->ovr[k].path;
        if (strncmp(op, path, pl) || op[pl] != '.')
            continue;
        if (nd && rf_cfg_map_get(nd, op + pl + 1, strlen(op + pl + 1), NULL))
            continue;
        int rc = fn(arg, op + pl + 1, cfg->ovr[k].value);
        if (rc)
            return rc;
    }
    return 0;
}

bool refit_config_has(const refit_config_t *cfg, const char *path)
{
    struct lookup lk;
    rf_cfg_lookup(cfg, path, &lk);
    return lk.value || lk.node;
}

int refit_config_origin(const refit_config_t *cfg, const char *path, struct refit_cfg_origin *out)
{
    if (!cfg || !path || !out)
        return refit_error_set(REFIT_EINVAL, "refit_config_origin: cfg, path and out are required");
    struct lookup lk;
    rf_cfg_lookup(cfg, path, &lk);
    int known = lk.value || lk.node;
    char *file = strdup(known && lk.origin.file ? lk.origin.file : "default");
    if (!file)
        return refit_error_set(REFIT_ENOMEM, "key '%s': origin: out of memory", path);
    out->file = file;
    out->line = known ? lk.origin.line : 0;
    out->column = known ? lk.origin.column : 0;
    return 0;
}

void refit_config_origin_clear(struct refit_cfg_origin *o)
{
    if (!o)
        return;
    free(o->file);
    o->file = NULL;
}

const char *refit_config_file(const refit_config_t *cfg)
{
    return cfg->file;
}

int refit_config_path(const refit_config_t *cfg, const char *path, char **out)
{
    const char *v;
    int rc = refit_config_str(cfg, path, &v);
    if (rc)
        return rc;
    struct lookup lk;
    rf_cfg_lookup(cfg, path, &lk);
    char *dir = (lk.node && lk.node->file) ? dir_of(lk.node->file) : NULL;
    *out = join_path(dir, v);
    free(dir);
    return *out ? 0 : REFIT_ENOMEM;
}

/* ------------------------------------------------------------------ */
/* Create, load, override, validate */

int refit_config_create(refit_config_t **out)
{
    refit_config_t *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return REFIT_ENOMEM;
    size_t n_core = 0;
    const struct rf_cfg_schema_section *core_schema = rf_cfg_core_schema(&n_core);
    for (size_t i = 0; i < n_core; i++) {
        int rc = refit_config_add_schema(cfg, core_schema[i].name, core_schema[i].f, core_schema[i].n);
        if (rc) {
            refit_config_destroy(cfg);
            return rc;
        }
    }
    *out = cfg;
    return 0;
}

void refit_config_destroy(refit_config_t *cfg)
{
    if (!cfg)
        return;
    rf_cfg_node_free(cfg->root);
    free(cfg->file);
    for (size_t i = 0; i < cfg->n_files; i++)
        free(cfg->files[i]);
    free(cfg->files);
    for (size_t i = 0; i < cfg->n_sections; i++)
        free(cfg->sections[i].name);
    free(cfg->sections);
    for (size_t i = 0; i < cfg->n_ovr; i++) {
        free(cfg->ovr[i].path);
        free(cfg->ovr[i].value);
        free(cfg->ovr[i].origin);
    }
    free(cfg->ovr);
    for (size_t i = 0; i < cfg->n_scratch; i++)
        free(cfg->scratch[i]);
    free(cfg->scratch);
    free(cfg);
}

int refit_config_add_schema(refit_config_t *cfg, const char *section,
                            const struct refit_cfg_field *fields, size_t n_fields)
{
    if (!cfg || !section)
        return REFIT_EINVAL;
    if (section_find(cfg, section))
        return 0; /* the same plugin loaded twice */
    struct section *s = realloc(cfg->sections, (cfg->n_sections + 1) * sizeof(*s));
    if (!s)
        return REFIT_ENOMEM;
    cfg->sections = s;
    s[cfg->n_sections].name = strdup(section);
    if (!s[cfg->n_sections].name)
        return REFIT_ENOMEM;
    s[cfg->n_sections].fields = fields;
    s[cfg->n_sections].n = n_fields;
    cfg->n_sections++;
    return 0;
}

static int load_text(refit_config_t *cfg, const char *name, const char *text, size_t len)
{
    if (cfg->root)
        return refit_error_set(REFIT_EINVAL, "%s: a configuration is loaded once", name);
    struct node *root = NULL;
    int rc = parse_yaml(cfg, name, text, len, &root);
    if (rc)
        return rc;
    rc = resolve_model_file(cfg, root);
    if (rc) {
        rf_cfg_node_free(root);
        return rc;
    }
    cfg->root = root;
    free(cfg->file);
    cfg->file = strdup(name);
    if (!cfg->file)
        return REFIT_ENOMEM;
    return refit_config_validate(cfg, false);
}

int refit_config_load_string(refit_config_t *cfg, const char *name, const char *text, size_t len)
{
    return load_text(cfg, name ? name : "<string>", text, len);
}

int refit_config_load(refit_config_t *cfg, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    int rc = rf_cfg_read_file(path, &text, &len);
    if (rc)
        return rc;
    rc = load_text(cfg, path, text, len);
    free(text);
    return rc;
}

int refit_config_apply_env(refit_config_t *cfg, char *const *envp)
{
    cfg->use_env = 1;
    cfg->envp = envp;
    /* Check env values of the known keys now so a bad one fails early. */
    return refit_config_validate(cfg, false);
}

/* "transport.foo.key" where no schema for "transport.foo" is known yet. */
int rf_cfg_plugin_section_unknown(const refit_config_t *cfg, const char *path)
{
    const char *d1 = strchr(path, '.');
    if (!d1)
        return 0;
    const char *d2 = strchr(d1 + 1, '.');
    if (!d2)
        return 0;
    char parent[64], sec[192];
    snprintf(parent, sizeof(parent), "%.*s", (int)(d1 - path), path);
    snprintf(sec, sizeof(sec), "%.*s", (int)(d2 - path), path);
    return rf_cfg_is_plugin_parent(parent) && !section_find(cfg, sec) && !rf_cfg_schema_is_prefix(cfg, sec);
}

int refit_config_set(refit_config_t *cfg, const char *assignment, const char *origin)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return refit_error_set(REFIT_ECONFIG, "%s: '%s': expected key=value", origin ? origin : "--set",
                               assignment);
    char *path = strndup(assignment, (size_t)(eq - assignment));
    if (!path)
        return REFIT_ENOMEM;
    const struct refit_cfg_field *f = rf_cfg_schema_find(cfg, path, NULL);
    int is_map_entry = 0;
    if (!f) {
        /* "transport.ucx.env.UCX_TLS" sets one entry of a MAP field. */
        char *dot = strrchr(path, '.');
        if (dot) {
            *dot = '\0';
            const struct refit_cfg_field *pf = rf_cfg_schema_find(cfg, path, NULL);
            is_map_entry = pf && pf->type == REFIT_CFG_MAP;
            *dot = '.';
        }
        if (!is_map_entry && rf_cfg_plugin_section_unknown(cfg, path)) {
            /* A plugin's key before the plugin is loaded: kept, and checked
             * by refit_config_validate once its schema is known. */
        } else if (!is_map_entry) {
            char near[512];
            rf_cfg_suggest(cfg, path, near, sizeof(near));
            int rc = refit_error_set(REFIT_ECONFIG, "%s: key '%s': unknown key%s%s%s",
                                     origin ? origin : "--set", path, near[0] ? "; did you mean '" : "",
                                     near, near[0] ? "'?" : "");
            free(path);
            return rc;
        }
    }
    struct override *o = realloc(cfg->ovr, (cfg->n_ovr + 1) * sizeof(*o));
    if (!o) {
        free(path);
        return REFIT_ENOMEM;
    }
    cfg->ovr = o;
    o[cfg->n_ovr].path = path;
    o[cfg->n_ovr].value = strdup(eq + 1);
    o[cfg->n_ovr].origin = strdup(origin ? origin : "--set");
    if (!o[cfg->n_ovr].value || !o[cfg->n_ovr].origin) {
        free(o[cfg->n_ovr].value);
        free(o[cfg->n_ovr].origin);
        free(path);
        return REFIT_ENOMEM;
    }
    cfg->n_ovr++;
    if (f) {
        struct lookup lk;
        rf_cfg_lookup(cfg, o[cfg->n_ovr - 1].path, &lk);
        double d;
        if (f->type != REFIT_CFG_LIST && f->type != REFIT_CFG_MAP)
            return rf_cfg_check_value(f, &lk, o[cfg->n_ovr - 1].path, &d);
    }
    return 0;
}

