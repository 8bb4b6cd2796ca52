/* cmd_plugins.c — `refit plugins`: every plugin found and every candidate
 * rejected, with why. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/status.h"

struct scan_state {
    int found, rejected;
};

static void print_one(void *arg, const struct refit_plugin_report *r)
{
    struct scan_state *st = arg;
    if (r->ok && !r->shadowed) {
        st->found++;
        printf("  %-10s %-10s %-8s %s\n", refit_plugin_kind_name(r->kind), r->name, r->version, r->path);
        if (r->description)
            printf("  %-10s %-10s %-8s   %s\n", "", "", "", r->description);
    } else if (r->ok) {
        printf("  %-10s %-10s %-8s %s (shadowed by an earlier directory)\n",
               refit_plugin_kind_name(r->kind), r->name, r->version ? r->version : "", r->path);
    } else {
        st->rejected++;
        printf("  rejected   %-10s %-8s %s\n             why: %s\n", r->name, "", r->path, r->why);
    }
}

struct plugins_opts {
    const char *config;
    struct cli_list set;
};

static const struct cli_opt plugins_table[] = {
    CLI_COMMON(struct plugins_opts, config, set),
};

static const struct cli_spec plugins_spec = {
    .cmd = "plugins",
    .about = "Lists every plugin in the search path (REFIT_PLUGIN_PATH, plugins.path, the build\n"
             "tree, the install directory) and every candidate rejected, with the reason.\n",
    .opts = plugins_table,
    .n_opts = CLI_N(plugins_table),
};

int cmd_plugins(int argc, char **argv)
{
    const char *sets[64];
    struct plugins_opts o = {.set = {.v = sets, .max = 64}};
    int rc = cli_opts_parse(&plugins_spec, argc, argv, &o, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    if (rc)
        return cli_fail("plugins", rc);
    struct cli_common c;
    rc = cli_config_from(&c, o.config, &o.set);
    if (rc) {
        cli_common_close(&c);
        return cli_fail("plugins", rc);
    }
    const char *const *dirs;
    size_t nd = refit_loader_dirs(c.loader, &dirs);
    printf("search path:\n");
    for (size_t i = 0; i < nd; i++)
        printf("  %s\n", dirs[i]);
    printf("plugins:\n  %-10s %-10s %-8s %s\n", "KIND", "NAME", "VERSION", "PATH");
    struct scan_state st = {0, 0};
    refit_loader_scan(c.loader, print_one, &st);
    printf("%d plugin%s found, %d rejected\n", st.found, st.found == 1 ? "" : "s", st.rejected);
    cli_common_close(&c);
    return 0;
}
