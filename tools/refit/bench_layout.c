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
#include "cli_opts.h"
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

struct layout_opts {
    const char *cfgfile;
    int ttp, tep, vtp, vep;
};

#define AT(f) CLI_AT(struct layout_opts, f)
static const struct cli_opt layout_table[] = {
    {"--hf-config", NULL, CLI_STR, "FILE", 0, 0, NULL, NULL, AT(cfgfile),
     "the model's HF config.json (default: Qwen3-235B-A22B)"},
    {"--trainer-tp", NULL, CLI_INT, "N", 1, 4096, NULL, "4", AT(ttp), "trainer tensor-parallel size"},
    {"--trainer-ep", NULL, CLI_INT, "N", 1, 4096, NULL, "8", AT(tep), "trainer expert-parallel size"},
    {"--tp", NULL, CLI_INT, "N", 1, 4096, NULL, "8", AT(vtp), "inference tensor-parallel size"},
    {"--ep", NULL, CLI_INT, "N", 1, 4096, NULL, NULL, AT(vep), "inference expert parallelism (default none)"},
};
#undef AT

static const struct cli_spec layout_spec = {
    .cmd = "bench layout",
    .about = "Times the layout maps of one inference rank against every trainer rank\n"
             "(default: Qwen3-235B-A22B, trainer TP4 EP8, inference TP8).\n",
    .opts = layout_table,
    .n_opts = CLI_N(layout_table),
};

int bench_layout(int argc, char **argv)
{
    struct layout_opts o = {0};
    int rc = cli_opts_parse(&layout_spec, argc, argv, &o, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    const char *cfgfile = o.cfgfile;
    int ttp = o.ttp, tep = o.tep, vtp = o.vtp, vep = o.vep;
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
