/* config_check.c — a loaded configuration checked and shown as a whole:
 * refit_config_validate (every key known, every value of its type and
 * range, with "did you mean" and file:line:column), refit_config_dump (the
 * effective values and where each came from, for `refit config check`) and
 * refit_config_schema_each (for `refit config keys`).  The lookup they use
 * is config.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refit/config.h"
#include "refit/status.h"
#include "config_int.h"

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
        const struct refit_cfg_field *f = rf_cfg_schema_find(cfg, sub, NULL);
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
            int rc = rf_cfg_check_value(f, &lk, sub, &d);
            if (rc)
                return rc;
            continue;
        }
        if (rf_cfg_schema_is_prefix(cfg, sub)) {
            if (v->kind != N_MAP)
                return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key '%s': expected a mapping (a section)",
                                       v->file, v->line, v->col, sub);
            int rc = validate_node(cfg, v, sub, strict);
            if (rc)
                return rc;
            continue;
        }
        if (!strict && rf_cfg_is_plugin_parent(path) && v->kind == N_MAP)
            continue; /* a plugin's section; checked when the plugin loads */
        char near[512];
        rf_cfg_suggest(cfg, sub, near, sizeof(near));
        if (rf_cfg_is_plugin_parent(path) && v->kind == N_MAP)
            return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key '%s': no %s plugin named '%s' was found%s%s%s",
                                   n->file, n->kline[i], n->kcol[i], sub, path, n->keys[i],
                                   near[0] ? "; did you mean '" : "", near, near[0] ? "'?" : "");
        return refit_error_set(REFIT_ECONFIG, "%s:%d:%d: key '%s': unknown key%s%s%s", n->file,
                               n->kline[i], n->kcol[i], sub, near[0] ? "; did you mean '" : "", near,
                               near[0] ? "'?" : "");
    }
    return 0;
}

/* Combinations of valid values that refit refuses.  Delta refit through
 * tree fan-out: a replica re-serves its staging image, not the trainer's
 * delta arena, and fan-out receivers pull whole (docs/delta.md, "Fan-out"). */
static int cross_check(const refit_config_t *cfg)
{
    bool delta = false, rep = false;
    int64_t max = 0;
    if (refit_config_bool(cfg, "refit.delta.enabled", &delta) || !delta) {
        refit_error_clear();
        return 0;
    }
    int rc = refit_config_bool(cfg, "refit.fanout.republish", &rep);
    if (!rc)
        rc = refit_config_int(cfg, "refit.fanout.max_pullers_per_source", &max);
    refit_error_clear();
    if (rc || (!rep && max <= 0))
        return 0;
    return refit_error_set(REFIT_ECONFIG, "refit.delta.enabled: true with tree fan-out (%s) is not supported: "
                           "fan-out replicas re-serve whole versions, so receivers behind them would never get a "
                           "delta; turn one of them off (refit.delta.enabled: false, or refit.fanout.republish: "
                           "false and refit.fanout.max_pullers_per_source: 0)",
                           rep ? "refit.fanout.republish: true" : "refit.fanout.max_pullers_per_source > 0");
}

int refit_config_validate(const refit_config_t *cfg, bool strict)
{
    int xrc = cross_check(cfg);
    if (xrc)
        return xrc;
    if (cfg->root) {
        int rc = validate_node(cfg, cfg->root, "", strict);
        if (rc)
            return rc;
    }
    /* Overrides given before their plugin's schema was known. */
    for (size_t i = 0; i < cfg->n_ovr; i++) {
        const char *op = cfg->ovr[i].path;
        if (rf_cfg_schema_find(cfg, op, NULL))
            continue;
        char parent[512];
        snprintf(parent, sizeof(parent), "%s", op);
        char *dot = strrchr(parent, '.');
        if (dot) {
            *dot = '\0';
            const struct refit_cfg_field *pf = rf_cfg_schema_find(cfg, parent, NULL);
            if (pf && pf->type == REFIT_CFG_MAP)
                continue;
        }
        if (!strict && rf_cfg_plugin_section_unknown(cfg, op))
            continue;
        char near[512];
        rf_cfg_suggest(cfg, op, near, sizeof(near));
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
            rf_cfg_lookup(cfg, full, &lk);
            if (!lk.value || lk.node)
                continue;
            double d;
            int rc = rf_cfg_check_value(f, &lk, full, &d);
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
    rf_cfg_lookup(cfg, full, &lk);
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
        const struct node *nd = cfg->root ? rf_cfg_tree_find(cfg->root, full, NULL, NULL) : NULL;
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
