/* cli.h — the `refit` command: one file per subcommand group, each
 * exporting int cmd_<group>(int argc, char **argv) with argv[0] = group. */
#ifndef REFIT_CLI_H
#define REFIT_CLI_H

#include <stddef.h>
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
/* Monotonic seconds. */
double cli_now(void);

/* Blocking copies between host memory and device memory (cli_cuda.c);
 * REFIT_ENOTSUP in a refit built without CUDA. */
int cli_cuda_upload(void *dev, const void *host, size_t n);
int cli_cuda_download(void *host, const void *dev, size_t n);

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

/* `refit bench <what>`: bench_<what>.c each, dispatched by cmd_bench.c;
 * argv[0] = what. */
int bench_cycle(int argc, char **argv);
int bench_fp8(int argc, char **argv);
int bench_layout(int argc, char **argv);
int bench_plan(int argc, char **argv);
/* `refit bench fp8 --device cuda` (bench_fp8_cuda.c); sized: rows/cols
 * were given (else a default size for the GPU). */
int bench_fp8_cuda(size_t rows, size_t cols, size_t iters, int sized);
int bench_staged(int argc, char **argv);
int bench_store(int argc, char **argv);
int bench_transport(int argc, char **argv);

#endif
