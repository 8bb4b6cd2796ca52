/* test_source_names.c — a trainer framework's spellings of its tensor
 * names, as the plugins' source layouts give them (struct
 * refit_source_layout, spec_common.h's "megatron"): the names Megatron-Core
 * publishes, written here from its source (DistributedDataParallel and
 * Float16Module wrap the model as `module`; SequentialMLP holds its experts
 * as `local_experts.<i>.linear_fcN.weight`, TEGroupedMLP as
 * `linear_fcN.weight<i>`, megatron/core/transformer/moe/experts.py), and
 * the table's spelling they must become.  Through the test plugin
 * (tests/model/plugins/vocabt.c), which takes the shared table. */
#include "tutil.h"
#include "../check_run.h"

static refit_loader_t *loader;
static refit_model_t *model;

static void setup(void)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/tests/model", getenv("REFIT_BUILD_ROOT"));
    setenv("REFIT_PLUGIN_PATH", dir, 1);
    ck_assert_int_eq(refit_loader_create(NULL, &loader), 0);
    static const char cfg[] =
        "{\"model_type\": \"refit_vocab_test\", \"num_hidden_layers\": 2, \"hidden_size\": 256, "
        "\"num_attention_heads\": 4, \"vocab_size\": 300, \"q_lora_rank\": null, \"kv_lora_rank\": 128, "
        "\"qk_nope_head_dim\": 32, \"qk_rope_head_dim\": 16, \"intermediate_size\": 256}";
    ck_assert_int_eq(refit_model_open_text(loader, "auto", cfg, sizeof(cfg) - 1, "config.json", &model), 0);
}

static void teardown(void)
{
    refit_model_close(model);
    refit_loader_destroy(loader);
}

static void expect(const char *layout, const char *published, const char *want)
{
    char *got = refit_model_source_name(model, layout, published);
    ck_assert_ptr_nonnull(got);
    ck_assert_msg(!strcmp(got, want), "%s '%s': got '%s', want '%s'", layout ? layout : "(default)", published,
                  got, want);
    free(got);
}

START_TEST(test_megatron)
{
    static const char *const cases[][2] = {
        /* the table's own spelling stays */
        {"decoder.layers.0.self_attention.linear_qkv.weight", "decoder.layers.0.self_attention.linear_qkv.weight"},
        {"decoder.layers.3.mlp.experts.linear_fc1.weight7", "decoder.layers.3.mlp.experts.linear_fc1.weight7"},
        /* DDP over Float16Module: two wrappers */
        {"module.embedding.word_embeddings.weight", "embedding.word_embeddings.weight"},
        {"module.module.decoder.final_layernorm.weight", "decoder.final_layernorm.weight"},
        /* SequentialMLP -> TEGroupedMLP, local expert index kept */
        {"decoder.layers.3.mlp.experts.local_experts.12.linear_fc2.weight",
         "decoder.layers.3.mlp.experts.linear_fc2.weight12"},
        {"module.decoder.layers.10.mlp.experts.local_experts.0.linear_fc1.weight",
         "decoder.layers.10.mlp.experts.linear_fc1.weight0"},
        /* virtual pipeline chunks keep their model<v>. prefix */
        {"model1.decoder.layers.0.mlp.experts.local_experts.3.linear_fc1.weight",
         "model1.decoder.layers.0.mlp.experts.linear_fc1.weight3"},
        /* no expert index: not an alias */
        {"decoder.layers.3.mlp.experts.local_experts.x.linear_fc1.weight",
         "decoder.layers.3.mlp.experts.local_experts.x.linear_fc1.weight"},
        /* `module.` only as a prefix */
        {"decoder.layers.0.module.weight", "decoder.layers.0.module.weight"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect("megatron", cases[i][0], cases[i][1]);
        expect(NULL, cases[i][0], cases[i][1]);
    }
}
END_TEST

/* FSDP publishes HF names: no source layout of that name, nothing changes
 * (not even a `module.`-looking prefix). */
START_TEST(test_undeclared_layout)
{
    expect("fsdp", "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.gate_proj.weight");
    expect("fsdp", "module.model.norm.weight", "module.model.norm.weight");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("source_names");
    TCase *tc = tcase_create("source_names");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_megatron);
    tcase_add_test(tc, test_undeclared_layout);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
