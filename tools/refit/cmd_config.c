/* cmd_config.c — `refit config check FILE`: load, load the plugins it
 * names (so their sections are checked too), validate strictly, and print
 * the effective configuration with the origin of every value. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/status.h"

struct config_opts {
    const char *config;
    struct cli_list set;
};

static const struct cli_opt check_table[] = {
    {"--set", NULL, CLI_LIST, "KEY=VALUE", 0, 0, NULL, NULL, CLI_AT(struct config_opts, set),
     "override a configuration key (repeatable; after REFIT_<SECTION>_<KEY>)"},
    {"--log", NULL, CLI_LOG, "LEVEL", 0, 0, "debug|info|warn|error", NULL, 0, "log level (REFIT_LOG too)"},
};

static const struct cli_spec check_spec = {
    .cmd = "config check",
    .args = "FILE",
    .min_pos = 1,
    .max_pos = 1,
    .about = "Validates a cluster file (unknown keys, types, ranges, plugin sections) and prints\n"
             "the effective configuration after REFIT_<SECTION>_<KEY> and --set overrides.\n",
    .opts = check_table,
    .n_opts = CLI_N(check_table),
};

static const struct cli_opt keys_table[] = {
    CLI_COMMON(struct config_opts, config, set),
};

static const struct cli_spec keys_spec = {
    .cmd = "config keys",
    .about = "Lists every key (core and every plugin found): type, default, range, meaning.\n",
    .opts = keys_table,
    .n_opts = CLI_N(keys_table),
};

static int usage(FILE *f)
{
    cli_opts_help(&check_spec, f);
    fputc('\n', f);
    cli_opts_help(&keys_spec, f);
    return f == stdout ? 0 : 2;
}

/* Load the plugin named by <kind>.plugin so its section's schema is known. */
static int load_configured(struct cli_common *c, uint32_t kind, const char *key)
{
    const char *name;
    int rc = refit_config_str(c->cfg, key, &name);
    if (rc)
        return rc;
    if (!strcmp(name, "auto"))
        return 0;
    const struct refit_plugin *p;
    rc = refit_loader_load(c->loader, kind, name, &p);
    if (rc) {
        struct refit_cfg_origin o;
        if (refit_config_origin(c->cfg, key, &o))
            return refit_error_push(rc, "key '%s'", key);
        if (o.line)
            refit_error_push(rc, "%s:%d:%d: key '%s'", o.file, o.line, o.column, key);
        else
            refit_error_push(rc, "key '%s' (%s)", key, o.file);
        refit_config_origin_clear(&o);
        return rc;
    }
    return 0;
}

/* Scanning loads every plugin found, which adds its section's schema, so a
 * section for a plugin that is not selected (kept to switch by override)
 * is still checked. */
static void ignore_report(void *arg, const struct refit_plugin_report *r)
{
    (void)arg;
    (void)r;
}

static const char *type_name(enum refit_cfg_type t)
{
    static const char *names[] = {"", "string", "int", "bool", "double", "size", "duration",
                                  "enum", "list", "map"};
    return (t >= REFIT_CFG_STRING && t <= REFIT_CFG_MAP) ? names[t] : "?";
}

static int print_key(void *arg, const char *section, const struct refit_cfg_field *f)
{
    (void)arg;
    char full[256], range[128] = "";
    snprintf(full, sizeof(full), "%s.%s", section, f->name);
    if (f->type == REFIT_CFG_ENUM)
        snprintf(range, sizeof(range), "%s", f->choices);
    else if (f->min <= f->max)
        snprintf(range, sizeof(range), "[%.15g, %.15g]", f->min, f->max);
    printf("%-36s %-8s %-12s %-18s %s\n", full, type_name(f->type), f->def ? f->def : "-", range,
           f->doc ? f->doc : "");
    return 0;
}

static int config_keys(int argc, char **argv)
{
    const char *sets[64];
    struct config_opts o = {.set = {.v = sets, .max = 64}};
    int rc = cli_opts_parse(&keys_spec, argc, argv, &o, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    if (rc)
        return cli_fail("config keys", rc);
    struct cli_common c;
    rc = cli_config_from(&c, o.config, &o.set);
    if (!rc)
        rc = refit_loader_scan(c.loader, ignore_report, NULL);
    if (rc) {
        int r = cli_fail("config keys", rc);
        cli_common_close(&c);
        return r;
    }
    printf("%-36s %-8s %-12s %-18s %s\n", "KEY", "TYPE", "DEFAULT", "RANGE", "MEANING");
    refit_config_schema_each(c.cfg, print_key, NULL);
    cli_common_close(&c);
    return 0;
}

static int config_check(int argc, char **argv)
{
    const char *sets[64], *file = NULL;
    struct config_opts o = {.set = {.v = sets, .max = 64}};
    int n_pos = 0;
    int rc = cli_opts_parse(&check_spec, argc, argv, &o, &file, &n_pos);
    if (rc == CLI_HELP)
        return 0;
    if (rc)
        return cli_fail("config check", rc);
    struct cli_common c;
    rc = cli_config_from(&c, file, &o.set);
    if (!rc)
        rc = load_configured(&c, REFIT_PLUGIN_STORE, "store.plugin");
    if (!rc)
        rc = load_configured(&c, REFIT_PLUGIN_TRANSPORT, "transport.plugin");
    if (!rc)
        rc = load_configured(&c, REFIT_PLUGIN_MODEL, "model.plugin");
    if (!rc)
        rc = refit_loader_scan(c.loader, ignore_report, NULL);
    if (!rc)
        rc = refit_config_validate(c.cfg, true);
    if (rc) {
        int r = cli_fail("config check", rc);
        cli_common_close(&c);
        return r;
    }
    printf("# %s: valid\n# effective configuration (value  # where it came from)\n", file);
    refit_config_dump(c.cfg, stdout);
    cli_common_close(&c);
    return 0;
}

int cmd_config(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
        return usage(argc < 2 ? stderr : stdout);
    if (!strcmp(argv[1], "keys"))
        return config_keys(argc - 1, argv + 1);
    if (!strcmp(argv[1], "check"))
        return config_check(argc - 1, argv + 1);
    fprintf(stderr, "refit config: unknown subcommand '%s'\n", argv[1]);
    return usage(stderr);
}
