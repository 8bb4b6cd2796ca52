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

struct section {
    char *name;
    const struct refit_cfg_field *fields;
    size_t n;
};

struct override {
    char *path, *value, *origin;
};

struct refit_config {
    struct node *root;   /* NULL until a file is loaded */
    char *file;          /* main file */
    char **files;        /* every file name a node points at */
    size_t n_files;
    struct section *sections;
    size_t n_sections;
    struct override *ovr;
    size_t n_ovr;
    int use_env;
    char *const *envp;
    /* Scratch for env values returned by refit_config_str. */
    char **scratch;
    size_t n_scratch;
};

/* ------------------------------------------------------------------ */
/* The core schema.  Plugin sections ("transport.tcp") are added by the
 * loader from each plugin's own table. */

static const struct refit_cfg_field store_fields[] = {
    {"plugin", REFIT_CFG_STRING, "file", 0, -1, NULL, "store plugin: file (embedded) or redis"},
    {"namespace", REFIT_CFG_STRING, "default", 0, -1, NULL,
     "keys live under refit/<namespace>/ so jobs sharing a store never meet"},
    {"max_value", REFIT_CFG_SIZE, "256MiB", 1, 4294967296.0, NULL, "largest value a store accepts"},
    {"timeout", REFIT_CFG_DURATION, "10s", 1, 86400000, NULL, "timeout of one store operation"},
};

static const struct refit_cfg_field transport_fields[] = {
    {"plugin", REFIT_CFG_STRING, "tcp", 0, -1, NULL, "transport plugin: tcp, ucx, ofi, cuda_ipc"},
    {"timeout", REFIT_CFG_DURATION, "30s", 1, 86400000, NULL,
     "a transfer or connection that makes no progress for this long fails"},
};

static const struct refit_cfg_field topology_fields[] = {
    {"nic_pin", REFIT_CFG_ENUM, "off", 0, -1, "off|auto|stripe",
     "bind each rank to its NUMA-local NIC (auto) or spread it over several (stripe)"},
    {"devices", REFIT_CFG_LIST, NULL, 0, -1, NULL, "restrict NIC choice to these devices"},
    {"max_stripe", REFIT_CFG_INT, "4", 1, 64, NULL, "most local devices one rank stripes over"},
};

static const struct refit_cfg_field refit_fields[] = {
    {"mode", REFIT_CFG_ENUM, "pull", 0, -1, "pull|push", "who moves the bytes"},
    {"publish", REFIT_CFG_ENUM, "zero_copy", 0, -1, "zero_copy|copy",
     "zero_copy: receivers read the trainer's tensors; copy: staged, double-buffered"},
    {"timeout", REFIT_CFG_DURATION, "120s", 1, 86400000, NULL, "one refit cycle's limit"},
    {"release_timeout", REFIT_CFG_DURATION, "300s", 1, 86400000, NULL,
     "how long wait_released waits for acknowledgements"},
    {"flush_every", REFIT_CFG_INT, "100", 1, 1000000, NULL, "outstanding descriptors per peer"},
    {"gather_threshold", REFIT_CFG_SIZE, "2MiB", 0, 1099511627776.0, NULL,
     "tensors below this are packed into one region per rank"},
    {"scatter_threshold", REFIT_CFG_SIZE, "64KiB", 0, 1073741824.0, NULL,
     "runs below this are pulled whole into scratch and scattered locally"},
    {"replicas", REFIT_CFG_INT, "0", 0, 1000000, NULL,
     "engines of this layout pulling together: > 1 chooses sources layout-wide (docs/scale.md)"},
    {"replica_index", REFIT_CFG_INT, "-1", -1, 999999, NULL,
     "this engine's index among refit.replicas (-1: a hash of the receiver id)"},
    {"plan_dedupe", REFIT_CFG_BOOL, "true", 0, -1, NULL,
     "plan sources with equal catalogs and layouts as one (data-parallel copies); false: each on its own"},
    {"retain_versions", REFIT_CFG_INT, "2", 1, 1000, NULL, "versions kept in the store"},
    {"stale_after", REFIT_CFG_DURATION, "30s", 1, 86400000, NULL,
     "a source whose heartbeat is older is stale"},
    {"heartbeat", REFIT_CFG_DURATION, "2s", 1, 3600000, NULL, "heartbeat period of a source"},
    {"verify", REFIT_CFG_ENUM, "full", 0, -1, "off|full|sample", "checksum verification of pulled bytes"},
    {"verify_sample", REFIT_CFG_DOUBLE, "0.1", 0, 1, NULL, "fraction of tensors checked with verify: sample"},
    {"in_place", REFIT_CFG_BOOL, "false", 0, -1, NULL,
     "pull straight into destinations (no staging; destinations invalid on failure)"},
    {"device_program", REFIT_CFG_BOOL, "true", 0, -1, NULL,
     "resident pulls from mapped peers (cuda_ipc) run as one kernel over a tile table (docs/cuda.md)"},
    {"receivers", REFIT_CFG_INT, "1", 0, 1000000, NULL, "receivers wait_released waits for"},
    {"delta.enabled", REFIT_CFG_BOOL, "false", 0, -1, NULL,
     "publish each version's exact delta against the last; receivers holding that version apply it (docs/delta.md)"},
    {"delta.max_ratio", REFIT_CFG_DOUBLE, "0.25", 0, 1, NULL,
     "a version whose delta exceeds this fraction of the bytes is published without one"},
    {"fanout.republish", REFIT_CFG_BOOL, "false", 0, -1, NULL,
     "receivers re-publish what they committed as replicas (tree fan-out, docs/fanout.md)"},
    {"fanout.max_pullers_per_source", REFIT_CFG_INT, "0", 0, 1000000, NULL,
     "most receivers pulling from one source (the trainer, or a replica) at once; 0: unlimited"},
};

static const struct refit_cfg_field model_fields[] = {
    {"file", REFIT_CFG_STRING, NULL, 0, -1, NULL, "a model YAML whose model: section is merged under this one"},
    {"name", REFIT_CFG_STRING, NULL, 0, -1, NULL, "a label (Qwen3-0.6B)"},
    {"plugin", REFIT_CFG_STRING, "auto", 0, -1, NULL, "model plugin; auto: the one claiming hf.model_type"},
    {"hf_config", REFIT_CFG_STRING, NULL, 0, -1, NULL, "path of the HF config.json"},
    /* any target layout the model plugin offers (hf, transformers, vllm, sglang) */
    {"target", REFIT_CFG_STRING, "vllm", 0, -1, NULL, "destination layout and names (a target of the model plugin)"},
    {"skip", REFIT_CFG_LIST, NULL, 0, -1, NULL, "name patterns not transferred (MTP layers by default)"},
    {"fp8.enabled", REFIT_CFG_BOOL, "false", 0, -1, NULL, "block-quantize linear weights to FP8"},
    {"fp8.rule", REFIT_CFG_ENUM, "trainer", 0, -1, "trainer|deepgemm", "scale rule"},
    {"fp8.floor", REFIT_CFG_DOUBLE, NULL, 0, 1, NULL, "scale floor; default the rule's own"},
    {"fp8.include", REFIT_CFG_LIST, NULL, 0, -1, NULL, "extra name patterns to quantize"},
    {"fp8.exclude", REFIT_CFG_LIST, NULL, 0, -1, NULL, "name patterns never quantized"},
    /* Shapes, for model files that stand for a HF config.json. */
    {"hf", REFIT_CFG_MAP, NULL, 0, -1, NULL, "HF config.json fields (model_type, hidden_size, ...)"},
};

static const struct refit_cfg_field plugins_fields[] = {
    {"path", REFIT_CFG_LIST, NULL, 0, -1, NULL, "directories searched for plugins"},
};

static const struct {
    const char *name;
    const struct refit_cfg_field *f;
    size_t n;
} core_schema[] = {
    {"store", store_fields, sizeof(store_fields) / sizeof(store_fields[0])},
    {"transport", transport_fields, sizeof(transport_fields) / sizeof(transport_fields[0])},
    {"topology", topology_fields, sizeof(topology_fields) / sizeof(topology_fields[0])},
    {"refit", refit_fields, sizeof(refit_fields) / sizeof(refit_fields[0])},
    {"model", model_fields, sizeof(model_fields) / sizeof(model_fields[0])},
    {"plugins", plugins_fields, sizeof(plugins_fields) / sizeof(plugins_fields[0])},
};

/* Sections whose children named after a plugin are plugin sections. */
static int is_plugin_parent(const char *s)
{
    return !strcmp(s, "transport") || !strcmp(s, "store") || !strcmp(s, "model");
}

/* ------------------------------------------------------------------ */
/* Tree */

/* Walk a dotted path; NULL when any component is absent. */
static struct node *tree_find(const struct node *root, const char *path, struct node **parent,
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

static const struct refit_cfg_field *schema_find(const refit_config_t *cfg, const char *path,
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
static int schema_is_prefix(const refit_config_t *cfg, const char *path)
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
static void suggest(const refit_config_t *cfg, const char *path, char *out, size_t cap)
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

struct lookup {
    const char *value;     /* NULL: absent */
    const struct node *node; /* from the file */
    struct {
        const char *file; /* points into cfg, or into env below */
        int line, column;
    } origin;
    char env[320]; /* "env REFIT_..." while the lookup is in use */
};

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

static void lookup(const refit_config_t *cfg, const char *path, struct lookup *lk)
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
    const struct node *n = cfg->root ? tree_find(cfg->root, path, NULL, NULL) : NULL;
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

/* ------------------------------------------------------------------ */
/* Scalar parsing */

static int parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *t[] = {"true", "yes", "on", "1"}, *f[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, t[i])) {
            *out = true;
            return 0;
        }
        if (!strcasecmp(s, f[i])) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static int parse_scaled(const char *s, const char *const *units, const double *mult, size_t nu,
                        double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0)
        return -1;
    while (*end == ' ')
        end++;
    if (!*end) {
        *out = v;
        return 0;
    }
    for (size_t i = 0; i < nu; i++)
        if (!strcmp(end, units[i])) {
            *out = v * mult[i];
            return 0;
        }
    return -1;
}

static int parse_size(const char *s, double *out)
{
    static const char *u[] = {"B", "K", "KiB", "KB", "M", "MiB", "MB", "G", "GiB", "GB", "T", "TiB", "TB"};
    static const double m[] = {1, 1024.0, 1024.0, 1e3, 1048576.0, 1048576.0, 1e6,
                               1073741824.0, 1073741824.0, 1e9, 1099511627776.0, 1099511627776.0, 1e12};
    return parse_scaled(s, u, m, sizeof(u) / sizeof(u[0]), out);
}

static int parse_duration(const char *s, double *out)
{
    static const char *u[] = {"us", "ms", "s", "m", "min", "h"};
    static const double m[] = {0.001, 1, 1000, 60000, 60000, 3600000};
    return parse_scaled(s, u, m, sizeof(u) / sizeof(u[0]), out);
}

static int enum_has(const char *choices, const char *v)
{
    size_t vl = strlen(v);
    for (const char *p = choices; p && *p;) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == vl && !strncmp(p, v, l))
            return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

/* Check one scalar value against its field; numbers go to *num. */
static int check_value(const struct refit_cfg_field *f, const struct lookup *lk, const char *path,
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
        if (parse_bool(v, &b))
            return origin_error(REFIT_ECONFIG, lk, path, "'%s' is not a boolean (true/false)", v);
        *num = b;
        return 0;
    case REFIT_CFG_INT:
        if (parse_int(v, &i))
            return origin_error(REFIT_ECONFIG, lk, path, "'%s' is not an integer", v);
        d = (double)i;
        break;
    case REFIT_CFG_DOUBLE:
        if (parse_double(v, &d))
            return origin_error(REFIT_ECONFIG, lk, path, "'%s' is not a number", v);
        break;
    case REFIT_CFG_SIZE:
        if (parse_size(v, &d))
            return origin_error(REFIT_ECONFIG, lk, path,
                                "'%s' is not a size (e.g. 4096, 64KiB, 2MiB, 1GiB)", v);
        break;
    case REFIT_CFG_DURATION:
        if (parse_duration(v, &d))
            return origin_error(REFIT_ECONFIG, lk, path,
                                "'%s' is not a duration (e.g. 250ms, 30s, 5m)", v);
        break;
    case REFIT_CFG_ENUM:
        if (!enum_has(f->choices, v)) {
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
    const struct refit_cfg_field *f = schema_find(cfg, path, NULL);
    if (!f)
        return refit_error_set(REFIT_EINVAL, "configuration key '%s' is not in the schema", path);
    if (f->type != want && !(want == REFIT_CFG_STRING && f->type == REFIT_CFG_ENUM))
        return refit_error_set(REFIT_EINVAL, "configuration key '%s' read with the wrong type", path);
    struct lookup lk;
    lookup(cfg, path, &lk);
    if (!lk.value && lk.node)
        return origin_error(REFIT_ECONFIG, &lk, path, "%s", "expected a single value, not a mapping or list");
    if (!lk.value) {
        if (!f->def)
            return refit_error_set(REFIT_ENOENT, "configuration key '%s' is not set", path);
        lk.value = f->def;
        lk.origin.file = "default";
    }
    double d = 0;
    int rc = check_value(f, &lk, path, &d);
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
    const struct refit_cfg_field *f = schema_find(cfg, path, NULL);
    return get_scalar(cfg, path, f && f->type == REFIT_CFG_ENUM ? REFIT_CFG_ENUM : REFIT_CFG_STRING,
                      out, NULL);
}

int refit_config_int(const refit_config_t *cfg, const char *path, int64_t *out)
{
    const char *t;
    double d;
    int rc = get_scalar(cfg, path, REFIT_CFG_INT, &t, &d);
    if (!rc)
        parse_int(t, out);
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
    const struct refit_cfg_field *f = schema_find(cfg, path, NULL);
    if (!f || f->type != REFIT_CFG_LIST)
        return refit_error_set(REFIT_EINVAL, "configuration key '%s' is not a list in the schema", path);
    struct lookup lk;
    lookup(cfg, path, &lk);
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
    const struct refit_cfg_field *f = schema_find(cfg, path, NULL);
    if (!f || f->type != REFIT_CFG_MAP)
        return refit_error_set(REFIT_EINVAL, "configuration key '%s' is not a map in the schema", path);
    const struct node *nd = cfg->root ? tree_find(cfg->root, path, NULL, NULL) : NULL;
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
    lookup(cfg, path, &lk);
    return lk.value || lk.node;
}

int refit_config_origin(const refit_config_t *cfg, const char *path, struct refit_cfg_origin *out)
{
    if (!cfg || !path || !out)
        return refit_error_set(REFIT_EINVAL, "refit_config_origin: cfg, path and out are required");
    struct lookup lk;
    lookup(cfg, path, &lk);
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
    lookup(cfg, path, &lk);
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
    for (size_t i = 0; i < sizeof(core_schema) / sizeof(core_schema[0]); i++) {
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
static int plugin_section_unknown(const refit_config_t *cfg, const char *path)
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
    return is_plugin_parent(parent) && !section_find(cfg, sec) && !schema_is_prefix(cfg, sec);
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
    const struct refit_cfg_field *f = schema_find(cfg, path, NULL);
    int is_map_entry = 0;
    if (!f) {
        /* "transport.ucx.env.UCX_TLS" sets one entry of a MAP field. */
        char *dot = strrchr(path, '.');
        if (dot) {
            *dot = '\0';
            const struct refit_cfg_field *pf = schema_find(cfg, path, NULL);
            is_map_entry = pf && pf->type == REFIT_CFG_MAP;
            *dot = '.';
        }
        if (!is_map_entry && plugin_section_unknown(cfg, path)) {
            /* A plugin's key before the plugin is loaded: kept, and checked
             * by refit_config_validate once its schema is known. */
        } else if (!is_map_entry) {
            char near[512];
            suggest(cfg, path, near, sizeof(near));
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
        lookup(cfg, o[cfg->n_ovr - 1].path, &lk);
        double d;
        if (f->type != REFIT_CFG_LIST && f->type != REFIT_CFG_MAP)
            return check_value(f, &lk, o[cfg->n_ovr - 1].path, &d);
    }
    return 0;
}

/* Walk the tree: every key must be known (or sit in a plugin section not
 * yet loaded, unless strict); every known value must parse. */
static int validate_node(const refit_config_t *cfg, const struct node *n, const char *path, int strict)
{
    for (size_t i = 0; i < n->n; i++) {
        char sub[512];
        if (path[0])
            snprintf(sub, sizeof(sub), "%s.%s", path, n->keys[i]);
        else
            snprintf(sub, sizeof(sub), "%s", n->keys[i]);
        const struct node *v = n->items[i];
        const struct refit_cfg_field *f = schema_find(cfg, sub, NULL);
        if (f) {
            if (f->type == REFIT_CFG_MAP) {
                if (v->kind != N_MAP)
                    return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key '%s': expected a mapping",
                                           v->file, v->line, v->col, sub);
                continue;
            }
            if (f->type == REFIT_CFG_LIST) {
                if (v->kind == N_MAP)
                    return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key '%s': expected a list",
                                           v->file, v->line, v->col, sub);
                for (size_t k = 0; v->kind == N_SEQ && k < v->n; k++)
                    if (v->items[k]->kind != N_SCALAR)
                        return refit_error_set(REFIT_ECONFIG,
                                               "%s:%d:%d: key '%s': list items must be scalars",
                                               v->items[k]->file, v->items[k]->line, v->items[k]->col, sub);
                continue;
            }
            if (v->kind != N_SCALAR)
                return refit_error_set(REFIT_ECONFIG,
                                       "%s:%d:%d: key '%s': expected a single value, not a %s", v->file,
                                       v->line, v->col, sub, v->kind == N_MAP ? "mapping" : "list");
            struct lookup lk = {.value = v->value, .node = v,
                                .origin = {v->file, v->line, v->col}};
            double d;
            int rc = check_value(f, &lk, sub, &d);
            if (rc)
                return rc;
            continue;
        }
        if (schema_is_prefix(cfg, sub)) {
            if (v->kind != N_MAP)
                return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key '%s': expected a mapping (a section)",
                                       v->file, v->line, v->col, sub);
            int rc = validate_node(cfg, v, sub, strict);
            if (rc)
                return rc;
            continue;
        }
        if (!strict && is_plugin_parent(path) && v->kind == N_MAP)
            continue; /* a plugin's section; checked when the plugin loads */
        char near[512];
        suggest(cfg, sub, near, sizeof(near));
        if (is_plugin_parent(path) && v->kind == N_MAP)
            return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key '%s': no %s plugin named '%s' was found%s%s%s",
                                   n->file, n->kline[i], n->kcol[i], sub, path, n->keys[i],
                                   near[0] ? "; did you mean '" : "", near, near[0] ? "'?" : "");
        return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key '%s': unknown key%s%s%s", n->file,
                               n->kline[i], n->kcol[i], sub, near[0] ? "; did you mean '" : "", near,
                               near[0] ? "'?" : "");
    }
    return 0;
}

int refit_config_validate(const refit_config_t *cfg, bool strict)
{
    if (cfg->root) {
        int rc = validate_node(cfg, cfg->root, "", strict);
        if (rc)
            return rc;
    }
    /* Overrides given before their plugin's schema was known. */
    for (size_t i = 0; i < cfg->n_ovr; i++) {
        const char *op = cfg->ovr[i].path;
        if (schema_find(cfg, op, NULL))
            continue;
        char parent[512];
        snprintf(parent, sizeof(parent), "%s", op);
        char *dot = strrchr(parent, '.');
        if (dot) {
            *dot = '\0';
            const struct refit_cfg_field *pf = schema_find(cfg, parent, NULL);
            if (pf && pf->type == REFIT_CFG_MAP)
                continue;
        }
        if (!strict && plugin_section_unknown(cfg, op))
            continue;
        char near[512];
        suggest(cfg, op, near, sizeof(near));
        return refit_error_set(REFIT_ECONFIG, "%s: key '%s': unknown key%s%s%s", cfg->ovr[i].origin, op,
                               near[0] ? "; did you mean '" : "", near, near[0] ? "'?" : "");
    }
    /* Environment and --set values of every known scalar key. */
    for (size_t s = 0; s < cfg->n_sections; s++) {
        const struct section *sec = &cfg->sections[s];
        for (size_t i = 0; i < sec->n; i++) {
            const struct refit_cfg_field *f = &sec->fields[i];
            if (f->type == REFIT_CFG_LIST || f->type == REFIT_CFG_MAP)
                continue;
            char full[512];
            snprintf(full, sizeof(full), "%s.%s", sec->name, f->name);
            struct lookup lk;
            lookup(cfg, full, &lk);
            if (!lk.value || lk.node)
                continue;
            double d;
            int rc = check_value(f, &lk, full, &d);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static void dump_value(const refit_config_t *cfg, FILE *fp, const char *full,
                       const struct refit_cfg_field *f)
{
    struct lookup lk;
    lookup(cfg, full, &lk);
    const char *origin = lk.origin.file ? lk.origin.file : "default";
    char where[600];
    if (lk.origin.line)
        snprintf(where, sizeof(where), "%s:%d:%d", origin, lk.origin.line, lk.origin.column);
    else
        snprintf(where, sizeof(where), "%s", origin);
    if (f->type == REFIT_CFG_LIST) {
        const char *const *items;
        size_t n;
        if (refit_config_list(cfg, full, &items, &n) == 0) {
            fprintf(fp, "%s: [", full);
            for (size_t i = 0; i < n; i++)
                fprintf(fp, "%s\"%s\"", i ? ", " : "", items[i]);
            fprintf(fp, "]  # %s\n", where);
        }
        return;
    }
    if (f->type == REFIT_CFG_MAP) {
        const struct node *nd = cfg->root ? tree_find(cfg->root, full, NULL, NULL) : NULL;
        fprintf(fp, "%s: {", full);
        for (size_t i = 0; nd && nd->kind == N_MAP && i < nd->n; i++)
            fprintf(fp, "%s%s: \"%s\"", i ? ", " : "", nd->keys[i],
                    nd->items[i]->kind == N_SCALAR ? nd->items[i]->value : "...");
        fprintf(fp, "}  # %s\n", where);
        return;
    }
    const char *v = lk.value ? lk.value : f->def;
    if (v)
        fprintf(fp, "%s: \"%s\"  # %s\n", full, v, where);
    else
        fprintf(fp, "%s: ~  # not set\n", full);
}

int refit_config_dump(const refit_config_t *cfg, void *file)
{
    FILE *fp = file;
    for (size_t s = 0; s < cfg->n_sections; s++) {
        const struct section *sec = &cfg->sections[s];
        for (size_t i = 0; i < sec->n; i++) {
            char full[512];
            snprintf(full, sizeof(full), "%s.%s", sec->name, sec->fields[i].name);
            dump_value(cfg, fp, full, &sec->fields[i]);
        }
    }
    return 0;
}

int refit_config_schema_each(const refit_config_t *cfg,
                             int (*fn)(void *arg, const char *section, const struct refit_cfg_field *f),
                             void *arg)
{
    for (size_t s = 0; s < cfg->n_sections; s++)
        for (size_t i = 0; i < cfg->sections[s].n; i++) {
            int rc = fn(arg, cfg->sections[s].name, &cfg->sections[s].fields[i]);
            if (rc)
                return rc;
        }
    return 0;
}
