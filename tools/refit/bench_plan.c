/* bench_plan.c — `refit bench plan`: the planner on a large MoE model's
 * shapes (no weights): layout maps, composition and the flat plan for one
 * inference rank, with the time and the memory it takes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/refit.h"
#include "refit/status.h"

/* Qwen3-235B-A22B's config.json (the fields the layouts use). */
static const char *QWEN3_235B =
    "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"model_type\": \"qwen3_moe\", \"num_hidden_layers\": 94, "
    "\"hidden_size\": 4096, \"num_attention_heads\": 64, \"num_key_value_heads\": 4, \"head_dim\": 128, "
    "\"intermediate_size\": 12288, \"moe_intermediate_size\": 1536, \"num_experts\": 128, "
    "\"num_experts_per_tok\": 8, \"decoder_sparse_step\": 1, \"mlp_only_layers\": [], \"vocab_size\": 151936, "
    "\"tie_word_embeddings\": false, \"attention_bias\": false, \"torch_dtype\": \"bfloat16\"}\n";

struct plan_opts {
    const char *hfcfg, *model_yaml, *src, *dst;
    int rank, iters, gpus, naive, replicas, replica;
};

#define AT(f) CLI_AT(struct plan_opts, f)
static const struct cli_opt plan_table[] = {
    {"--hf-config", NULL, CLI_STR, "FILE", 0, 0, NULL, NULL, AT(hfcfg), "the model's config.json"},
    {"--model", NULL, CLI_STR, "YAML", 0, 0, NULL, NULL, AT(model_yaml), "a model YAML (configs/models/kimi-k2.yaml)"},
    {"--src", NULL, CLI_STR, "tp=N,ep=M", 0, 0, NULL, NULL, AT(src), "the trainer's layout (default tp=4,ep=8)"},
    {"--dst", NULL, CLI_STR, "tp=N[,ep=N]", 0, 0, NULL, NULL, AT(dst), "the inference layout (default tp=8)"},
    {"--rank", NULL, CLI_INT, "R", 0, 1023, NULL, "0", AT(rank), "the inference rank to plan"},
    {"--gpus", NULL, CLI_INT, "G", 0, 65536, NULL, "0", AT(gpus),
     "trainer ranks (a multiple of max(tp, ep): the rest data-parallel copies; 0: max(tp, ep))"},
    {"--naive", NULL, CLI_FLAG, NULL, 0, 0, NULL, NULL, AT(naive),
     "plan every trainer rank on its own (refit.plan_dedupe=false): the reference digest"},
    {"--iters", NULL, CLI_INT, "K", 1, 100, NULL, "3", AT(iters), "timed plans (the median is printed)"},
    {"--replicas", NULL, CLI_INT, "N", 1, 65536, NULL, "1", AT(replicas),
     "engines of this layout choosing sources together (refit.replicas)"},
    {"--replica", NULL, CLI_INT, "I", 0, 65535, NULL, "0", AT(replica), "which of them this one is (refit.replica_index)"},
};
#undef AT

static const struct cli_spec plan_spec = {
    .cmd = "bench plan",
    .about = "Plans inference rank R of the destination layout from trainer ranks at tp N, ep M\n"
             "(G ranks, default max(N, M); tp rank r mod N, ep rank r mod M), for a model given by its\n"
             "config.json or a model YAML (default: Qwen3-235B-A22B, TP4 EP8 -> TP8).  Prints the\n"
             "plan's size, the time (median of K), the peak memory growth and the plan's digest.\n"
             "Target: <= 200 ms, <= 256 MiB.  --naive is the reference the deduped planner must\n"
             "match digest for digest; --replicas N --replica I plans engine I of N choosing sources\n"
             "together (refit.replicas).\n",
    .opts = plan_table,
    .n_opts = CLI_N(plan_table),
};

static long max_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* CPU seconds of this process so far (user and system): the time a plan
 * takes on a busy machine, where wall time counts the other processes. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int bench_plan(int argc, char **argv)
{
    struct plan_opts po = {0};
    int rc = cli_opts_parse(&plan_spec, argc, argv, &po, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    const char *hfcfg = po.hfcfg, *model_yaml = po.model_yaml;
    int stp = 4, sep = 8, dtp = 8, dep = 1, rank = po.rank, iters = po.iters, gpus = po.gpus, naive = po.naive;
    if (!rc && po.src)
        rc = cli_layout("--src", po.src, &stp, &sep);
    if (!rc && po.dst)
        rc = cli_layout("--dst", po.dst, &dtp, &dep);
    if (rc)
        return cli_fail("bench plan", rc);
    /* A throwaway store for the context; nothing is published. */
    char dir[] = "/tmp/refit-bench-plan-XXXXXX";
    if (!mkdtemp(dir))
        return cli_fail("bench plan", refit_error_set(REFIT_EIO, "mkdtemp failed"));
    char path[256], o_cfg[300], o_dir[300];
    if (!hfcfg && !model_yaml) {
        snprintf(path, sizeof(path), "%s/config.json", dir);
        FILE *f = fopen(path, "w");
        if (f) {
            fputs(QWEN3_235B, f);
            fclose(f);
        }
        hfcfg = path;
    }
    snprintf(o_cfg, sizeof(o_cfg), "model.hf_config=%s", hfcfg ? hfcfg : "");
    snprintf(o_dir, sizeof(o_dir), "store.file.path=%s/store", dir);
    /* a model YAML is the configuration file (its model section), the rest overrides */
    const char *dedupe = naive ? "refit.plan_dedupe=false" : "refit.plan_dedupe=true";
    char o_reps[64], o_rep[64];
    snprintf(o_reps, sizeof(o_reps), "refit.replicas=%d", po.replicas ? po.replicas : 1);
    snprintf(o_rep, sizeof(o_rep), "refit.replica_index=%d", po.replica);
    const char *ovr_all[] = {"model.plugin=auto", o_cfg, "store.plugin=file", o_dir, "transport.plugin=tcp",
                             "model.target=vllm", dedupe, o_reps, o_rep};
    const char *ovr_yaml[] = {"store.plugin=file", o_dir, "transport.plugin=tcp", "model.target=vllm", dedupe,
                              o_reps, o_rep};
    const char *const *ovr = model_yaml ? ovr_yaml : ovr_all;
    size_t n_ovr = model_yaml ? sizeof(ovr_yaml) / sizeof(ovr_yaml[0]) : sizeof(ovr_all) / sizeof(ovr_all[0]);
    if (po.replicas <= 1)
        n_ovr -= 2; /* the engine alone: the context's defaults */
    long rss0 = max_rss_kib();
    refit_context_t *ctx = NULL;
    refit_receiver_t *rcv = NULL;
    struct refit_target tg = {.tp_rank = rank, .tp_size = dtp, .ep_size = dep};
    rc = refit_context_create(model_yaml, ovr, n_ovr, &ctx);
    if (!rc)
        rc = refit_receiver_create(ctx, &tg, "bench-plan", &rcv);
    int nsrc = stp > sep ? stp : sep;
    if (!rc && gpus && gpus % nsrc)
        rc = refit_error_set(REFIT_EINVAL, "--gpus %d: not a multiple of max(tp, ep) = %d", gpus, nsrc);
    if (gpus)
        nsrc = gpus;
    struct refit_parallel *src = calloc((size_t)nsrc, sizeof(*src));
    for (int r = 0; src && r < nsrc; r++)
        src[r] = (struct refit_parallel){.tp_rank = r % stp, .tp_size = stp, .pp_size = 1, .ep_rank = r % sep,
                                         .ep_size = sep, .etp_size = 1};
    long rss1 = max_rss_kib();
    double times[100];
    struct refit_plan_info info = {.size = sizeof(info)};
    double c0 = cpu_s();
    struct rusage ru0, ru1; /* page faults: on virtual machines a plan's main cost */
    getrusage(RUSAGE_SELF, &ru0);
    for (int k = 0; !rc && k < iters; k++) {
        double t0 = cli_now();
        rc = refit_receiver_plan_dry(rcv, src, (size_t)nsrc, &info);
        times[k] = cli_now() - t0;
    }
    double cpu = (cpu_s() - c0) / iters;
    getrusage(RUSAGE_SELF, &ru1);
    long rss2 = max_rss_kib();
    if (!rc) {
        qsort(times, (size_t)iters, sizeof(double), cmp_double);
        double med = times[iters / 2];
        printf("plan: %s, trainer tp %d ep %d (%d ranks) -> vLLM rank %d of tp %d%s\n", model_yaml ? model_yaml : hfcfg == path ? "Qwen3-235B-A22B"
               : hfcfg, stp, sep, nsrc, rank, dtp, dep > 1 ? " (ep = tp)" : "");
        printf("  %llu pieces -> %llu descriptors, %llu scatters, %llu checksum runs\n",
               (unsigned long long)info.pieces, (unsigned long long)info.descriptors,
               (unsigned long long)info.scatters, (unsigned long long)info.checks);
        printf("  wire %.2f GB, staging %.2f GB, scratch %.2f GB\n", (double)info.wire_bytes / 1e9,
               (double)info.staging_bytes / 1e9, (double)info.scratch_bytes / 1e9);
        printf("  whole plan (layout maps, composition, planner): %.1f ms median of %d (%.1f in the planner call "
               "itself on the last), target <= 200 ms\n",
               med * 1e3, iters, info.seconds * 1e3);
        printf("  CPU time per plan (user + system, mean of %d): %.1f ms\n", iters, cpu * 1e3);
        printf("  page faults per plan (mean of %d; first touches of memory): %.0f\n", iters,
               (double)(ru1.ru_minflt - ru0.ru_minflt + ru1.ru_majflt - ru0.ru_majflt) / iters);
        printf("  peak memory growth while planning: %.1f MiB (process peak %.1f MiB), target <= 256 MiB\n",
               (double)(rss2 - rss1) / 1024.0, (double)rss2 / 1024.0);
        printf("  plan digest ");
        for (int k = 0; k < 16; k++)
            printf("%02x", info.digest[k]);
        printf("%s\n", naive ? " (naive: every rank planned on its own)" : "");
        (void)rss0;
    }
    refit_receiver_destroy(rcv);
    refit_context_destroy(ctx);
    free(src);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return rc ? cli_fail("bench plan", rc) : 0;
}
