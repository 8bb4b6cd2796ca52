/* main.c — `refit`: dispatch to one subcommand group per file. */
#include <stdio.h>
#include <string.h>

#include "../../core/src/util.h"
#include "cli.h"
#include "refit_build.h"

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"demo", cmd_demo, "the main job on this machine: trainer ranks and engines as processes, verified refits"},
    {"publish", cmd_publish, "one trainer rank (a stand-in made from an HF checkpoint) publishing versions"},
    {"pull", cmd_pull, "one inference rank pulling a version into the hf or vllm layout"},
    {"convert", cmd_convert, "an HF checkpoint or trainer shards into one rank's hf or vllm tensors (FP8 optional)"},
    {"shard", cmd_shard, "an HF checkpoint into Megatron-layout per-rank files (a trainer stand-in)"},
    {"store", cmd_store, "ls|show|gc|watch: look into the metadata store (catalogs, records, acks)"},
    {"sim", cmd_sim, "predict a cluster's refit cycle from refit's own plans: time, floor, busiest NIC"},
    {"bench", cmd_bench, "benchmarks with their baseline in the same run (fp8, layout, store, transport)"},
    {"plugins", cmd_plugins, "list plugins found (kind, name, version, path) and those rejected"},
    {"config", cmd_config, "config check FILE: validate a cluster file; config keys: every key"},
    {"doctor", cmd_doctor, "topology, fabrics, plugins, and what each transport would pick here"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: refit <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\ncommon options: --config FILE, --set key=value (repeatable), --log debug|info|warn|error\n"
               "environment: REFIT_<SECTION>_<KEY> overrides a key, REFIT_PLUGIN_PATH adds plugin "
               "directories, REFIT_LOG sets the log level\n"
               "`refit <command> --help` describes one command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("refit %s\n", REFIT_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "refit: unknown command '%s'\n", argv[1]);
    /* Suggest the closest command for a typo ("bnech", "pul"), or those
     * sharing its first three letters. */
    const char *near = NULL;
    size_t best = strlen(argv[1]) <= 4 ? 2 : 3; /* within 1 edit, or 2 for longer words */
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        size_t d = rf_edit_distance(argv[1], commands[i].name, best);
        if (d < best) {
            near = commands[i].name;
            best = d;
        }
    }
    if (near)
        fprintf(stderr, "refit: did you mean '%s'?\n", near);
    else
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
            if (!strncmp(argv[1], commands[i].name, 3))
                fprintf(stderr, "refit: did you mean '%s'?\n", commands[i].name);
    fprintf(stderr, "run 'refit --help' for the list of commands\n");
    return 2;
}
