/* demo.h — the multi-process refit runner behind `refit demo` and
 * `refit bench cycle`: a checkpoint, trainer ranks (`refit publish`) and
 * inference ranks (`refit pull`) as processes, their per-cycle figures and,
 * for the demo, a byte-for-byte check against offline conversions. */
#ifndef REFIT_DEMO_H
#define REFIT_DEMO_H

#include <sys/types.h>

struct demo {
    const char *model;    /* qwen3 | qwen3_moe | glm, or a model YAML (configs/models/...) */
    const char *hf, *config, *transport, *store, *mode, *fp8, *keep;
    const char *make_only; /* --make-checkpoint DIR */
    int src_tp, src_ep, dst_tp, dst_ep, engines, cycles, layers, vocab;
    int src_pp, src_fsdp, src_dp; /* trainer pipeline stages, FSDP shards, data-parallel replicas */
    const char *device; /* host | cuda | cuda-src | cuda-dst: where trainers and engines keep weights */
    int verify; /* compare every engine's result with refit convert */
    int pub_stats; /* trainers append their per-version figures to pstats */
    int quiet;  /* children's progress lines off (benchmarks) */
    /* GPUs for --device cuda: trainers on GPU src_gpu, engines on dst_gpu
     * (REFIT_CUDA_DEVICE of each child, set when > 0; 0: the environment's
     * choice, device 0 by default). */
    int src_gpu, dst_gpu;
    char dir[512];
    char ckpt[600];
    char self[4096];
    char stats[700];
    char pstats[700];
    pid_t redis;
};

/* The demo's options (shared with `refit bench cycle`). */
int demo_parse(struct demo *d, int argc, char **argv);
/* Runs everything; d->stats names the JSON-lines file of per-cycle figures
 * (read it before demo_cleanup).  Returns 0 or an error with its message. */
int demo_run(struct demo *d);
/* Removes the work directory unless --keep. */
void demo_cleanup(struct demo *d);
/* Print the per-cycle table of a stats file; returns the number of rows. */
int demo_print_table(const char *stats_path);

#endif
