/* cmd_bench.c — `refit bench <what>`: one benchmark per file
 * (bench_<what>.c), each running its baseline in the same run and printing
 * the ratio beside its own figures. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

struct bench {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct bench benches[] = {
    {"cluster", bench_cluster, "an emulated cluster (namespaces, shaped veth NICs, Redis) measured beside refit sim"},
    {"cycle", bench_cycle, "refit cycles between trainer and inference processes: a table per cycle"},
    {"delta", bench_delta, "exact deltas of a Qwen3-0.6B-shaped checkpoint over Adam steps: changed fraction, bytes, GB/s beside memcpy"},
    {"fp8", bench_fp8, "FP8 128x128 block quantization of bf16 on one core beside memcpy, or on a GPU beside PyTorch"},
    {"gpu", bench_gpu, "GPU-resident refit over cuda_ipc between two GPUs beside an NCCL broadcast"},
    {"layout", bench_layout, "layout maps of a Qwen3-235B-shaped model: inference rank x trainer ranks"},
    {"plan", bench_plan, "the planner for a Qwen3-235B-shaped model, TP4 EP8 -> TP8: time and memory"},
    {"staged", bench_staged,
     "GPU -> pinned host -> tcp -> pinned host -> GPU refit cycles beside the pinned copy bandwidth"},
    {"store-scale", bench_store_scale,
     "one cycle's metadata for 256 publishers and 1024 receivers against redis-server: commands, bytes, time"},
    {"store", bench_store, "catalog encode/decode MB/s and store round trips, beside redis-benchmark GET/SET"},
    {"transport", bench_transport,
     "READ/WRITE 4 KiB..1 GiB and 10,000 descriptors between two processes, vs the plugin's baseline"},
};

static int usage(FILE *f)
{
    fprintf(f, "usage: refit bench <what> [options]\n\nbenchmarks:\n");
    for (size_t i = 0; i < sizeof(benches) / sizeof(benches[0]); i++)
        fprintf(f, "  %-10s %s\n", benches[i].name, benches[i].summary);
    fprintf(f, "\n`refit bench <what> --help` describes its options.\n");
    return f == stdout ? 0 : 2;
}

int cmd_bench(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
        return usage(argc < 2 ? stderr : stdout);
    for (size_t i = 0; i < sizeof(benches) / sizeof(benches[0]); i++)
        if (!strcmp(argv[1], benches[i].name))
            return benches[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "refit bench: unknown benchmark '%s'\n", argv[1]);
    return usage(stderr);
}
