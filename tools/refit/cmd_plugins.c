/* cmd_plugins.c — `refit plugins`: every plugin found and every candidate
 * rejected, with why. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
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

int cmd_plugins(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: refit plugins [--config FILE]\n"
                   "Lists every plugin in the search path (REFIT_PLUGIN_PATH, plugins.path, the build\n"
                   "tree, the install directory) and every candidate rejected, with the reason.\n");
            return 0;
        }
    struct cli_common c;
    int rc = cli_config_open(&c, NULL, argc, argv);
    if (rc) {
        cli_common_close(&c);
        return cli_fail("plugins", rc);
    }
    argc = cli_compact(argc, argv);
    if (argc > 1) {
        fprintf(stderr, "refit plugins: unexpected argument '%s'\n", argv[1]);
        cli_common_close(&c);
        return 2;
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
