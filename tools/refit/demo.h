/* demo.h — the multi-process refit runner behind `refit demo` and
 * `refit bench cycle`: a checkpoint, trainer ranks (`refit publish`) and
 * inference ranks (`refit pull`) as processes, their per-cycle figures and,
 * for the demo, a byte-for-byte check against offline conversions. */
#ifndef REFIT_DEMO_H
#define REFIT_DEMO_H

#include <stddef.h>
#include <sys/types.h>

#include "cli_opts.h"

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

/* The demo's options, shared with `refit bench cycle`, `bench gpu` and
 * `bench staged`: rows of a struct cli_opt table for a command whose
 * options struct T holds a struct demo as member m.  Their defaults are
 * each command's (set in its struct demo before parsing and named in its
 * help), so the rows carry none. */
#define DEMO_AT(T, m, f) (offsetof(T, m) + offsetof(struct demo, f))
#define DEMO_INT(name, meta, lo, hi, T, m, f, help)                                                  \
    {name, NULL, CLI_INT, meta, lo, hi, NULL, NULL, DEMO_AT(T, m, f), help}
#define DEMO_STR(name, meta, T, m, f, help) {name, NULL, CLI_STR, meta, 0, 0, NULL, NULL, DEMO_AT(T, m, f), help}
#define DEMO_OPTS(T, m)                                                                                \
    DEMO_STR("--config", "FILE", T, m, config, "the cluster file (default configs/clusters/local.yaml)"), \
    {"--log", NULL, CLI_LOG, "LEVEL", 0, 0, "debug|info|warn|error", NULL, 0, "log level (REFIT_LOG too)"}, \
    DEMO_STR("--model", "NAME", T, m, model, "qwen3, qwen3_moe, glm, deepseek_v3, glm5 or a model YAML"),   \
    DEMO_STR("--hf", "DIR", T, m, hf, "an HF checkpoint instead of the made one"),                    \
    DEMO_STR("--transport", "NAME", T, m, transport, "the transport plugin (tcp, ucx, ofi, cuda_ipc)"), \
    DEMO_STR("--store", "NAME", T, m, store, "the store plugin (file, or redis: a local redis-server)"), \
    {"--mode", NULL, CLI_STR, "MODE", 0, 0, NULL, NULL, DEMO_AT(T, m, mode), "pull or push"},          \
    {"--fp8", NULL, CLI_STR, "RULE", 0, 0, NULL, NULL, DEMO_AT(T, m, fp8), "trainer, deepgemm or off"},  \
    DEMO_STR("--keep", "DIR", T, m, keep, "work in DIR and keep it"),                                 \
    DEMO_STR("--device", "WHERE", T, m, device,                                                       \
             "host, cuda, cuda-src or cuda-dst: where trainers and engines keep weights"),            \
    DEMO_STR("--make-checkpoint", "DIR", T, m, make_only, "only write the made checkpoint to DIR"),    \
    DEMO_INT("--src-tp", "N", 1, 64, T, m, src_tp, "trainer tensor-parallel size"),                   \
    DEMO_INT("--src-ep", "M", 1, 64, T, m, src_ep, "trainer expert-parallel size"),                   \
    DEMO_INT("--src-pp", "P", 1, 64, T, m, src_pp, "trainer pipeline stages"),                        \
    DEMO_INT("--src-fsdp", "N", 1, 64, T, m, src_fsdp, "N FSDP trainer ranks instead of Megatron ones"), \
    DEMO_INT("--src-dp", "D", 1, 8, T, m, src_dp, "data-parallel replicas of each trainer rank"),      \
    DEMO_INT("--dst-tp", "N", 1, 64, T, m, dst_tp, "engine tensor-parallel size"),                    \
    DEMO_INT("--dst-ep", "N", 1, 64, T, m, dst_ep, "engine expert parallelism (1, or = --dst-tp)"),    \
    DEMO_INT("--engines", "E", 1, 16, T, m, engines, "inference engines"),                            \
    DEMO_INT("--src-gpu", "N", 0, 64, T, m, src_gpu, "the trainers' GPU with --device cuda"),          \
    DEMO_INT("--dst-gpu", "N", 0, 64, T, m, dst_gpu, "the engines' GPU with --device cuda"),           \
    DEMO_INT("--cycles", "K", 1, 1000, T, m, cycles, "refit cycles"),                                 \
    DEMO_INT("--layers", "L", 1, 1000, T, m, layers, "layers of the made checkpoint"),                \
    DEMO_INT("--vocab", "V", 64, 10000000, T, m, vocab, "vocabulary of the made checkpoint")

/* What the table cannot check of the demo's options (the model, the
 * choices, ep = tp); fills in the device's default. */
int demo_check(struct demo *d);
/* Runs everything; d->stats names the JSON-lines file of per-cycle figures
 * (read it before demo_cleanup).  Returns 0 or an error with its message. */
int demo_run(struct demo *d);
/* Removes the work directory unless --keep. */
void demo_cleanup(struct demo *d);
/* Print the per-cycle table of a stats file; returns the number of rows. */
int demo_print_table(const char *stats_path);

#endif
