/* cli.h — the `refit` command: one file per subcommand group, each
 * exporting int cmd_<group>(int argc, char **argv) with argv[0] = group. */
#ifndef REFIT_CLI_H
#define REFIT_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "refit/config.h"
#include "refit/loader.h"

/* What a command's --config and --set give (cli_config_from in
 * cli_opts.h opens it). */
struct cli_common {
    const char *config_path;
    refit_config_t *cfg;
    refit_loader_t *loader;
};

void cli_common_close(struct cli_common *c);
/* Prints "refit <cmd>: <message>" for the current error and returns 1
 * (or 2 for usage errors). */
int cli_fail(const char *cmd, int status);

/* "tp=2,ep=4" (either part optional) into *tp and *ep. */
int cli_layout(const char *opt, const char *v, int *tp, int *ep);
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
