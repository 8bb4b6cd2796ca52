/* test_configs.c — the files in configs/models open as models through the
 * configuration (model.hf map), with the shapes of ../shared/conversion.md
 * section 5, and their layouts have the sizes of the real checkpoints. */
#include "tutil.h"
#include "../check_run.h"

static refit_loader_t *loader;

static void setup(void)
{
    ck_assert_int_eq(refit_loader_create(NULL, &loader), 0);
}

static void teardown(void)
{
    refit_loader_destroy(loader);
}

static refit_model_t *open_yaml(const char *file, refit_config_t **cfgp)
{
    const char *root = getenv("REFIT_SOURCE_ROOT");
    char text[4096];
    snprintf(text, sizeof(text), "model:\n  file: %s/configs/models/%s\n", root ? root : ".", file);
    refit_config_t *cfg;
    ck_assert_int_eq(refit_config_create(&cfg), 0);
    ck_assert_msg(refit_config_load_string(cfg, "cluster.yaml", text, strlen(text)) == 0, "%s",
                  refit_error_message());
    refit_model_t *m;
    ck_assert_msg(refit_model_open_config(loader, cfg, &m) == 0, "%s: %s", file, refit_error_message());
    *cfgp = cfg;
    return m;
}

struct expect {
    const char *file, *plugin;
    int64_t layers, mtp, hidden, heads, kv, d, inter, moe_inter, experts, vocab;
    bool tied, bias, qk_norm;
    size_t hf_tensors;
    uint64_t hf_bytes; /* bf16 */
};

static const struct expect models[] = {
    {"qwen3-0.6b.yaml", "qwen3", 28, 0, 1024, 16, 8, 128, 3072, 0, 0, 151936, true, false, true,
     2 + 28 * 11, 0},
    /* conversion.md: Qwen3-4B in bf16 is 398 tensors, 8.04 GB */
    {"qwen3-4b.yaml", "qwen3", 36, 0, 2560, 32, 8, 128, 9728, 0, 0, 151936, true, false, true, 398,
     8044936192ull},
    {"qwen3-30b-a3b.yaml", "qwen3_moe", 48, 0, 2048, 32, 4, 128, 6144, 768, 128, 151936, false,
     false, true, 3 + 48 * (8 + 1 + 128 * 3), 0},
    /* MTP layer skipped: 3 globals, dense layer 0 (12), 45 MoE layers (9 attention + router,
     * bias, 3 shared, 384 experts) */
    {"glm-4.5-air.yaml", "glm", 46, 1, 4096, 96, 8, 128, 10944, 1408, 128, 151552, false, true,
     false, 3 + 12 + 45 * 398, 0},
};

START_TEST(test_model_configs)
{
    const struct expect *x = &models[_i];
    refit_config_t *cfg;
    refit_model_t *m = open_yaml(x->file, &cfg);
    const struct refit_model_shape *s = refit_model_shape(m);
    ck_assert_str_eq(refit_model_plugin(m), x->plugin);
    ck_assert_int_eq(s->n_layers, x->layers);
    ck_assert_int_eq(s->n_mtp_layers, x->mtp);
    ck_assert_int_eq(s->hidden, x->hidden);
    ck_assert_int_eq(s->heads, x->heads);
    ck_assert_int_eq(s->kv_heads, x->kv);
    ck_assert_int_eq(s->head_dim, x->d);
    ck_assert_int_eq(s->intermediate, x->inter);
    ck_assert_int_eq(s->moe_intermediate, x->moe_inter);
    ck_assert_int_eq(s->experts, x->experts);
    ck_assert_int_eq(s->vocab, x->vocab);
    ck_assert(s->tie_word_embeddings == x->tied);
    ck_assert(s->attention_bias == x->bias);
    ck_assert(s->qk_norm == x->qk_norm);
    struct refit_convert_opts o = {.target = REFIT_TARGET_HF, .tp = 1};
    ck_assert_int_eq(refit_convert_opts_from_config(cfg, &o), 0);
    o.target = REFIT_TARGET_HF;
    refit_layout_t *lay;
    ck_assert_msg(refit_layout_target(m, &o, &lay) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(refit_layout_count(lay), x->hf_tensors);
    uint64_t bytes = 0;
    for (size_t i = 0; i < refit_layout_count(lay); i++) {
        const struct refit_layout_tensor *t = refit_layout_at(lay, i);
        uint64_t n = 2;
        for (int k = 0; k < t->ndim; k++)
            n *= (uint64_t)t->shape[k];
        bytes += n;
    }
    if (x->hf_bytes)
        ck_assert_uint_eq(bytes, x->hf_bytes);
    refit_layout_destroy(lay);
    refit_model_close(m);
    refit_config_destroy(cfg);
}
END_TEST

/* Real shapes at real parallelism: vLLM Qwen3-30B-A3B tp 4 and GLM-4.5-Air
 * tp 8 with FP8 where vLLM allows it. */
START_TEST(test_real_vllm_shapes)
{
    refit_config_t *cfg;
    refit_model_t *m = open_yaml("qwen3-30b-a3b.yaml", &cfg);
    struct refit_convert_opts o = {.target = REFIT_TARGET_VLLM, .tp = 4, .rank = 3};
    o.fp8.enabled = true;
    o.fp8.floor = -1;
    refit_layout_t *lay;
    /* 768 / 4 = 192 rows of gate per rank: vLLM refuses this FP8 layout
     * (the known "192 is not divisible by block_n 128" of Qwen3-30B-A3B-FP8
     * at tp 4) ... */
    ck_assert_int_eq(refit_layout_target(m, &o, &lay), REFIT_EINVAL);
    ck_assert_msg(strstr(refit_error_message(), "w13_weight") && strstr(refit_error_message(), "192"), "%s",
                  refit_error_message());
    ck_assert_msg(refit_layout_target(m, &(struct refit_convert_opts){.target = REFIT_TARGET_VLLM, .tp = 4, .rank = 3}, &lay) == 0,
                  "%s", refit_error_message());
    const struct refit_layout_tensor *t = refit_layout_find(lay, "model.layers.47.mlp.experts.w13_weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->shape[0], 128);
    ck_assert_int_eq(t->shape[1], 2 * 768 / 4);
    ck_assert_int_eq(t->shape[2], 2048);
    refit_layout_destroy(lay);
    /* ... and serves it with expert parallelism: 32 whole experts per rank */
    o.ep = 4;
    ck_assert_msg(refit_layout_target(m, &o, &lay) == 0, "%s", refit_error_message());
    t = refit_layout_find(lay, "model.layers.47.mlp.experts.w13_weight");
    ck_assert(t->fp8);
    ck_assert_int_eq(t->shape[0], 32);
    ck_assert_int_eq(t->shape[1], 2 * 768);
    ck_assert_int_eq(t->expert, -1);
    ck_assert_str_eq(refit_layout_source(lay, t->pieces[0].src)->name, "model.layers.47.mlp.experts.96.gate_proj.weight");
    t = refit_layout_find(lay, "model.layers.0.self_attn.qkv_proj.weight");
    ck_assert_int_eq(t->shape[0], (32 / 4 + 2) * 128); /* G = tp: one KV head each */
    ck_assert(refit_layout_find(lay, "lm_head.weight") && !refit_layout_find(lay, "lm_head.weight")->fp8);
    ck_assert_int_eq(refit_layout_find(lay, "lm_head.weight")->shape[0], 151936 / 4);
    refit_layout_destroy(lay);
    refit_model_close(m);
    refit_config_destroy(cfg);

    m = open_yaml("glm-4.5-air.yaml", &cfg);
    o.tp = 8;
    o.rank = 5;
    o.ep = 0;
    /* dense layer 0 has 10944 / 8 = 1368 rows of gate per rank: refused ... */
    ck_assert_int_eq(refit_layout_target(m, &o, &lay), REFIT_EINVAL);
    ck_assert_msg(strstr(refit_error_message(), "model.layers.0.mlp.gate_up_proj.weight") &&
                      strstr(refit_error_message(), "1368"),
                  "%s", refit_error_message());
    /* ... and so are the experts (1408 / 8 = 176) and the shared expert without
     * expert parallelism; with ep 8 and those two excluded it is servable */
    o.fp8.exclude = (const char *const[]){"model.layers.0.mlp.*"};
    o.fp8.n_exclude = 1;
    ck_assert_int_eq(refit_layout_target(m, &o, &lay), REFIT_EINVAL);
    ck_assert_msg(strstr(refit_error_message(), "w13_weight") && strstr(refit_error_message(), "176"), "%s",
                  refit_error_message());
    const char *ex[] = {"model.layers.0.mlp.*", "*.shared_experts.*"};
    o.fp8.exclude = ex;
    o.fp8.n_exclude = 2;
    o.ep = 8;
    ck_assert_msg(refit_layout_target(m, &o, &lay) == 0, "%s", refit_error_message());
    t = refit_layout_find(lay, "model.layers.1.mlp.gate.weight");
    ck_assert_int_eq(t->dtype, REFIT_DTYPE_F32);
    ck_assert(!t->fp8);
    t = refit_layout_find(lay, "model.layers.1.self_attn.qkv_proj.bias");
    ck_assert_int_eq(t->shape[0], (96 / 8 + 2) * 128);
    ck_assert_ptr_null(refit_layout_find(lay, "model.layers.46.self_attn.qkv_proj.weight"));
    t = refit_layout_find(lay, "model.layers.45.mlp.experts.w2_weight");
    ck_assert(t->fp8);
    ck_assert_int_eq(t->shape[0], 16);
    ck_assert_int_eq(t->shape[2], 1408);
    refit_layout_destroy(lay);
    refit_model_close(m);
    refit_config_destroy(cfg);
}
END_TEST

/* An hf: map written inline, with a list given as text. */
START_TEST(test_inline_hf_map)
{
    const char *text = "model:\n  plugin: auto\n  hf:\n    model_type: qwen3_moe\n"
                       "    num_hidden_layers: 4\n    hidden_size: 64\n    num_attention_heads: 4\n"
                       "    num_key_value_heads: 2\n    head_dim: 16\n    intermediate_size: 96\n"
                       "    moe_intermediate_size: 32\n    num_local_experts: 8\n"
                       "    decoder_sparse_step: 2\n    mlp_only_layers: \"[3]\"\n    vocab_size: 100\n";
    refit_config_t *cfg;
    ck_assert_int_eq(refit_config_create(&cfg), 0);
    ck_assert_int_eq(refit_config_load_string(cfg, "inline.yaml", text, strlen(text)), 0);
    refit_model_t *m;
    ck_assert_msg(refit_model_open_config(loader, cfg, &m) == 0, "%s", refit_error_message());
    ck_assert_int_eq(refit_model_shape(m)->experts, 8); /* num_local_experts (transformers 5) */
    /* (L+1) % 2 == 0 and L not in [3]: only layer 1 is MoE */
    static const enum refit_layer_kind want[] = {REFIT_LAYER_DENSE, REFIT_LAYER_MOE, REFIT_LAYER_DENSE,
                                                 REFIT_LAYER_DENSE};
    for (int l = 0; l < 4; l++) {
        enum refit_layer_kind k;
        ck_assert_int_eq(refit_model_layer_kind(m, l, &k), 0);
        ck_assert_int_eq(k, want[l]);
    }
    refit_model_close(m);
    refit_config_destroy(cfg);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model_configs");
    TCase *tc = tcase_create("configs");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_model_configs, 0, 4);
    tcase_add_test(tc, test_real_vllm_shapes);
    tcase_add_test(tc, test_inline_hf_map);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? 1 : 0;
}
