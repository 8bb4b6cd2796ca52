/* model_target_cfg.c — a target layout given by configuration
 * (`model.target_layout`), beside the ones the model plugin declares: an
 * engine that takes an existing target's tensors (its `base`: fusions,
 * dtypes, TP rules) under other names, with its own vocabulary padding and
 * block-FP8 rule.  Names are renamed by prefix ("from=to", the first that
 * matches).  docs/models.md "Targets from YAML" has a worked example. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"
#include "refit/status.h"

static const struct {
    const char *name;
    uint32_t bit;
} grid_names[] = {
    {"split_parts", REFIT_FP8_GRID_SPLIT_PARTS},
    {"merged_parts", REFIT_FP8_GRID_MERGED_PARTS},
    {"split_cols", REFIT_FP8_GRID_SPLIT_COLS},
    {"stacks", REFIT_FP8_GRID_STACKS},
};

static int grid_of(const refit_config_t *cfg, uint32_t *out)
{
    const char *const *items;
    size_t n;
    *out = 0;
    if (!refit_config_has(cfg, "model.target_layout.fp8_grid"))
        return 0;
    int rc = refit_config_list(cfg, "model.target_layout.fp8_grid", &items, &n);
    for (size_t i = 0; !rc && i < n; i++) {
        size_t k = 0;
        while (k < sizeof(grid_names) / sizeof(grid_names[0]) && strcmp(items[i], grid_names[k].name))
            k++;
        if (k == sizeof(grid_names) / sizeof(grid_names[0]))
            return refit_error_set(REFIT_ECONFIG, "model.target_layout.fp8_grid: '%s' is not split_parts, "
                                                  "merged_parts, split_cols or stacks", items[i]);
        *out |= grid_names[k].bit;
    }
    return rc;
}

static int renames_of(refit_model_t *m, const refit_config_t *cfg)
{
    const char *const *items;
    size_t n;
    if (!refit_config_has(cfg, "model.target_layout.rename"))
        return 0;
    int rc = refit_config_list(cfg, "model.target_layout.rename", &items, &n);
    if (rc)
        return rc;
    if (n > 1024)
        return refit_error_set(REFIT_ECONFIG, "model.target_layout.rename: %zu rules (at most 1024)", n);
    m->cfg_rename = calloc(n ? 2 * n : 1, sizeof(*m->cfg_rename));
    if (!m->cfg_rename)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(items[i], '=');
        if (!eq || eq == items[i])
            return refit_error_set(REFIT_ECONFIG, "model.target_layout.rename[%zu]: '%s' is not FROM=TO", i,
                                   items[i]);
        m->cfg_rename[2 * i] = strndup(items[i], (size_t)(eq - items[i]));
        m->cfg_rename[2 * i + 1] = strdup(eq + 1);
        m->n_cfg_rename = i + 1;
        if (!m->cfg_rename[2 * i] || !m->cfg_rename[2 * i + 1])
            return REFIT_ENOMEM;
    }
    return 0;
}

static int cfg_int(const refit_config_t *cfg, const char *path, int64_t def, int64_t *out)
{
    *out = def;
    return refit_config_has(cfg, path) ? refit_config_int(cfg, path, out) : 0;
}

static int str_dup(const refit_config_t *cfg, const char *path, char **out)
{
    const char *s = NULL;
    *out = NULL;
    if (!refit_config_has(cfg, path))
        return 0;
    int rc = refit_config_str(cfg, path, &s);
    if (!rc && !(*out = strdup(s)))
        rc = REFIT_ENOMEM;
    return rc;
}

int refit_model_targets_from_config(refit_model_t *m, const refit_config_t *cfg)
{
    if (!m || !cfg)
        return refit_error_set(REFIT_EINVAL, "refit_model_targets_from_config: NULL argument");
    if (!refit_config_has(cfg, "model.target_layout.name") || m->cfg_target)
        return 0;
    struct refit_target_layout *t = calloc(1, sizeof(*t));
    if (!t)
        return REFIT_ENOMEM;
    m->cfg_target = t;
    int64_t vm, blk;
    uint32_t grid;
    int rc = str_dup(cfg, "model.target_layout.name", &m->cfg_strs[0]);
    if (!rc)
        rc = str_dup(cfg, "model.target_layout.base", &m->cfg_strs[1]);
    if (!rc)
        rc = str_dup(cfg, "model.target_layout.engine", &m->cfg_strs[2]);
    if (!rc)
        rc = cfg_int(cfg, "model.target_layout.vocab_multiple", 0, &vm);
    if (!rc)
        rc = cfg_int(cfg, "model.target_layout.fp8_block", 128, &blk);
    if (!rc)
        rc = grid_of(cfg, &grid);
    if (!rc)
        rc = renames_of(m, cfg);
    if (rc)
        return refit_error_push(rc, "model.target_layout");
    *t = (struct refit_target_layout){m->cfg_strs[0], m->cfg_strs[1], vm, blk, grid, m->cfg_strs[2]};
    for (size_t i = 0; i < m->spec->n_targets; i++)
        if (!strcmp(m->spec->targets[i].name, t->name))
            return refit_error_set(REFIT_ECONFIG, "model.target_layout: '%s' is a target of model plugin %s already",
                                   t->name, m->plugin->name);
    if (t->base && !rf_model_target(m, t->base))
        return refit_error_push(REFIT_ECONFIG, "model.target_layout '%s': its base", t->name);
    if (blk < 1 || blk > 1 << 20 || vm < 0 || vm > 1 << 20)
        return refit_error_set(REFIT_ECONFIG, "model.target_layout '%s': fp8_block %lld, vocab_multiple %lld",
                               t->name, (long long)blk, (long long)vm);
    return 0;
}

char *rf_target_rename(const refit_model_t *m, const struct refit_target_layout *t, char *name)
{
    if (!name || !m->cfg_target || t != m->cfg_target)
        return name;
    for (size_t i = 0; i < m->n_cfg_rename; i++) {
        const char *from = m->cfg_rename[2 * i], *to = m->cfg_rename[2 * i + 1];
        size_t fl = strlen(from);
        if (strncmp(name, from, fl))
            continue;
        size_t len = strlen(to) + strlen(name + fl) + 1;
        char *out = malloc(len);
        if (out)
            snprintf(out, len, "%s%s", to, name + fl);
        free(name);
        return out;
    }
    return name;
}

void rf_model_cfg_free(refit_model_t *m)
{
    for (size_t i = 0; i < 2 * m->n_cfg_rename; i++)
        free(m->cfg_rename[i]);
    free(m->cfg_rename);
    for (size_t i = 0; i < 3; i++)
        free(m->cfg_strs[i]);
    free(m->cfg_target);
}
