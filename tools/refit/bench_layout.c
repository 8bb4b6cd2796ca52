/* bench_layout.c — `refit bench layout`: how long the layout maps of a
 * large model take to build and compose (the model side of the pull
 * planner): one inference rank's layout, every trainer rank's layout, and
 * their composition, with the memory they hold.  Default shape: Qwen3-235B-A22B,
 * trainer TP4·EP8, inference TP8 (the design's planner target: 200 ms, 256 MiB). */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"
#include "refit/convert.h"
#include "refit/status.h"

static const char qwen3_235b[] =
    "{\"model_type\": \"qwen3_moe\", \"num_hidden_layers\": 94, \"hidden_size\": 4096,"
    " \"num_attention_heads\": 64, \"num_key_value_heads\": 4, \"head_dim\": 128,"
    " \"intermediate_size\": 12288, \"moe_intermediate_size\": 1536, \"num_experts\": 128,"
    " \"num_experts_per_tok\": 8, \"decoder_sparse_step\": 1, \"mlp_only_layers\": [],"
    " \"vocab_size\": 151936, \"tie_word_embeddings\": false, \"attention_bias\": false}";

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static long max_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static int opt_int(const char *v, int *out)
{
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || x < 1 || x > 4096)
        return refit_error_set(REFIT_EINVAL, "expected a positive count, not '%s'", v ? v : "");
    *out = (int)x;
    return 0;
}

int bench_layout(int argc, char **argv)
{
    const char *cfgfile = NULL;
    int ttp = 4, tep = 8, vtp = 8, vep = 0, rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: refit bench layout [--hf-config FILE] [--trainer-tp N] [--trainer-ep N]\n"
                   "                          [--tp N] [--ep N]\n"
                   "Times the layout maps of one inference rank against every trainer rank\n"
                   "(default: Qwen3-235B-A22B, trainer TP4 EP8, inference TP8).\n");
            return 0;
        } else if (!strcmp(argv[i], "--hf-config")) {
            cfgfile = v;
        } else if (!strcmp(argv[i], "--trainer-tp")) {
            rc = opt_int(v, &ttp);
        } else if (!strcmp(argv[i], "--trainer-ep")) {
            rc = opt_int(v, &tep);
        } else if (!strcmp(argv[i], "--tp")) {
            rc = opt_int(v, &vtp);
        } else if (!strcmp(argv[i], "--ep")) {
            rc = opt_int(v, &vep);
        } else {
            rc = refit_error_set(REFIT_EINVAL, "unknown option '%s'", argv[i]);
        }
        i++;
    }
    if (rc)
        return cli_fail("bench layout", rc);
    refit_loader_t *l = NULL;
    refit_model_t *m = NULL;
    rc = refit_loader_create(NULL, &l);
    if (!rc)
        rc = cfgfile ? refit_model_open(l, NULL, cfgfile, &m)
                     : refit_model_open_text(l, NULL, qwen3_235b, sizeof(qwen3_235b) - 1, "Qwen3-235B-A22B", &m);
    int world = ttp > tep ? ttp : tep;
    refit_layout_t **tl = calloc((size_t)world, sizeof(*tl));
    refit_layout_t *dl = NULL;
    refit_layout_xmap_t *x = NULL;
    if (!rc && !tl)
        rc = REFIT_ENOMEM;
    long rss0 = max_rss_kib();
    double t0 = now_ms(), t1 = t0, t2 = t0, t3 = t0;
    size_t tpieces = 0;
    if (!rc) {
        struct refit_convert_opts o = {.target = REFIT_TARGET_VLLM, .tp = vtp, .rank = 0, .ep = vep};
        o.fp8.floor = -1;
        rc = refit_layout_target(m, &o, &dl);
        t1 = now_ms();
        for (int r = 0; r < world && !rc; r++) {
            struct refit_megatron_rank mr = {ttp, tep, 1, r % ttp, r % tep, 0, 128};
            rc = refit_layout_megatron(m, &mr, NULL, &tl[r]);
            for (size_t i = 0; !rc && i < refit_layout_count(tl[r]); i++)
                tpieces += refit_layout_at(tl[r], i)->n_pieces;
        }
        t2 = now_ms();
        if (!rc)
            rc = refit_layout_compose(dl, (const refit_layout_t *const *)tl, (size_t)world, &x);
        t3 = now_ms();
    }
    if (!rc) {
        size_t dpieces = 0, cands = 0;
        for (size_t i = 0; i < refit_layout_count(dl); i++)
            dpieces += refit_layout_at(dl, i)->n_pieces;
        for (size_t i = 0; i < refit_layout_xmap_count(x); i++)
            cands += refit_layout_xmap_at(x, i)->n_cand;
        double total = t3 - t0;
        long rss = max_rss_kib() - rss0;
        printf("model %s (%s), trainer TP%d EP%d (%d ranks) -> inference TP%d%s rank 0\n",
               refit_model_type(m), refit_model_plugin(m), ttp, tep, world, vtp, vep > 1 ? " EP" : "");
        printf("  inference layout   %8.2f ms  %zu tensors, %zu pieces\n", t1 - t0, refit_layout_count(dl),
               dpieces);
        printf("  trainer layouts    %8.2f ms  %zu pieces over %d ranks\n", t2 - t1, tpieces, world);
        printf("  compose            %8.2f ms  %zu rectangles, %zu candidates\n", t3 - t2,
               refit_layout_xmap_count(x), cands);
        printf("  total              %8.2f ms  (design target for the whole planner: 200 ms; %.2fx of it)\n",
               total, total / 200.0);
        printf("  peak RSS growth    %8.1f MiB (target 256 MiB)\n", (double)rss / 1024.0);
    }
    refit_layout_xmap_destroy(x);
    refit_layout_destroy(dl);
    for (int r = 0; tl && r < world; r++)
        refit_layout_destroy(tl[r]);
    free(tl);
    refit_model_close(m);
    refit_loader_destroy(l);
    return rc ? cli_fail("bench layout", rc) : 0;
}
