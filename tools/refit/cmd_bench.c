/* cmd_bench.c — `refit bench <what>`: one benchmark per file bench_<what>.c,
 * each running its baseline in the same run and printing the ratio. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

struct bench {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct bench benches[] = {
    {"transport", bench_transport,
     "READ/WRITE 4 KiB..1 GiB and 10,000 descriptors between two processes, vs the plugin's baseline"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: refit bench <what> [options]\n\nbenchmarks:\n");
    for (size_t i = 0; i < sizeof(benches) / sizeof(benches[0]); i++)
        fprintf(f, "  %-10s %s\n", benches[i].name, benches[i].summary);
    fprintf(f, "`refit bench <what> --help` describes one benchmark.\n");
}

int cmd_bench(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof(benches) / sizeof(benches[0]); i++)
        if (!strcmp(argv[1], benches[i].name))
            return benches[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "refit bench: unknown benchmark '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
