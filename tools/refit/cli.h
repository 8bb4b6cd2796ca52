/* cli.h — the `refit` command: one file per subcommand group, each
 * exporting int cmd_<group>(int argc, char **argv) with argv[0] = group. */
#ifndef REFIT_CLI_H
#define REFIT_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "refit/config.h"
#include "refit/loader.h"

/* Common options: --config FILE, --set k=v (repeatable), --log LEVEL.
 * Parsed by cli_config_open: loads `file` or the --config FILE (or nothing), applies env and
 * --set overrides.  argv entries consumed are set to NULL. */
struct cli_common {
    const char *config_path;
    refit_config_t *cfg;
    refit_loader_t *loader;
};

int cli_config_open(struct cli_common *c, const char *file, int argc, char **argv);
void cli_common_close(struct cli_common *c);
/* Prints "refit <cmd>: <message>" for the current error and returns 1
 * (or 2 for usage errors). */
int cli_fail(const char *cmd, int status);
/* Removes NULL entries left by consumed options; returns the new argc. */
int cli_compact(int argc, char **argv);

/* Parse an integer option value in [lo, hi]; an error names the option. */
int cli_int(const char *opt, const char *v, long lo, long hi, int *out);
/* "tp=2,ep=4" (either part optional) into *tp and *ep. */
int cli_layout(const char *opt, const char *v, int *tp, int *ep);
/* --log LEVEL */
int cli_log_level(const char *v);
/* Options given as `--opt value` pairs: each pair goes to take(arg, opt,
 * value), which returns 0, an error, or CLI_NOT_MINE for an option it does
 * not know.  A missing value or an unknown option is an error naming it. */
#define CLI_NOT_MINE 1
int cli_parse_pairs(int argc, char **argv, int (*take)(void *arg, const char *opt, const char *val),
                    void *arg);

/* The options of one rank of a parallel job, which `refit publish` and
 * `refit pull` share: --config, --hf, --id, --device, --stats, --tp,
 * --rank, --ep, --cycles, --set (into ovr, at most max_set of them) and
 * --log.  --device is taken as given: each command checks it. */
struct cli_rank_opts {
    const char *cfg, *hf, *id, *device, *stats;
    int tp, rank, ep, cycles;
    const char **ovr;
    size_t n_ovr, max_set;
};
/* A take() for cli_parse_pairs with a struct cli_rank_opts as arg; the
 * commands' own take() falls back to it. */
int cli_rank_opt(void *arg, const char *opt, const char *val);

/* A loopback TCP port free a moment ago (the kernel's pick), or -1: for
 * the servers a benchmark starts as its baseline. */
int cli_free_port(void);

/* Monotonic seconds. */
double cli_now(void);

/* Blocking copies between host memory and device memory (cli_cuda.c);
 * REFIT_ENOTSUP in a refit built without CUDA. */
int cli_cuda_upload(void *dev, const void *host, size_t n);
int cli_cuda_download(void *host, const void *dev, size_t n);
/* --device cuda: make GPU $REFIT_CUDA_DEVICE (default: the runtime's
 * current one) current for this process before any device memory is
 * allocated; a bad value is an error naming it. */
int cli_cuda_select(void);

int cmd_demo(int argc, char **argv);
int cmd_publish(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_plugins(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_shard(int argc, char **argv);
int cmd_store(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_sim(int argc, char **argv);

/* `refit bench <what>`: bench_<what>.c each, dispatched by cmd_bench.c;
 * argv[0] = what. */
int bench_cycle(int argc, char **argv);
int bench_cluster(int argc, char **argv);
int bench_delta(int argc, char **argv); /* bench_delta.c */
int bench_fp8(int argc, char **argv);
int bench_layout(int argc, char **argv);
int bench_plan(int argc, char **argv);
/* `refit bench fp8 --device cuda` (bench_fp8_cuda.c); sized: rows/cols
 * were given (else a default size for the GPU). */
int bench_fp8_cuda(size_t rows, size_t cols, size_t iters, int sized);
/* bf16 weights as a trainer has them (bench_fp8.c): magnitudes
 * ~N(0, 0.02)-like and a few outliers, so blocks get different scales;
 * the same seed gives the same bytes. */
void bench_fp8_fill(uint16_t *x, size_t n, uint64_t seed);
int bench_staged(int argc, char **argv);
/* The number after "key": in one line of a stats file (JSON lines); 0 when
 * absent. */
double cli_json_num(const char *line, const char *key);
int bench_gpu(int argc, char **argv);
int bench_store(int argc, char **argv);
int bench_store_scale(int argc, char **argv);
int bench_transport(int argc, char **argv);

#endif
