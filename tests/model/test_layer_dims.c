/* test_layer_dims.c — per-layer dimensions (REFIT_DIMF_PER_LAYER) through
 * GLM-5's indexer_types.  Expected presence written from transformers'
 * GlmMoeDsaConfig (configuration_glm_moe_dsa.py: indexer_types per layer,
 * "full" runs the indexer, "shared" reuses the previous full layer's top-k)
 * and the modeling code that builds no indexer for a "shared" layer; a
 * config without the list (GLM-5.1) has an indexer in every layer.  The HF
 * names are those of mla_tables.h (modeling_glm_moe_dsa.py
 * GlmMoeDsaIndexer), the Megatron ones Megatron-Bridge's GLM-5 DSA spec. */
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

enum { LAYERS = 4 };

/* A 4-layer GLM-5 config; types: the JSON of indexer_types, or NULL. */
static int open_glm5(const char *types, refit_model_t **m)
{
    char cfg[2048];
    snprintf(cfg, sizeof(cfg),
             "{\"model_type\": \"glm_moe_dsa\", \"num_hidden_layers\": %d, \"num_nextn_predict_layers\": 1, "
             "\"hidden_size\": 256, \"num_attention_heads\": 4, \"num_key_value_heads\": 4, \"q_lora_rank\": 128, "
             "\"kv_lora_rank\": 64, \"qk_nope_head_dim\": 32, \"qk_rope_head_dim\": 16, \"v_head_dim\": 32, "
             "\"intermediate_size\": 512, \"moe_intermediate_size\": 128, \"n_routed_experts\": 4, "
             "\"n_shared_experts\": 1, \"num_experts_per_tok\": 2, \"first_k_dense_replace\": 1, "
             "\"vocab_size\": 512, \"tie_word_embeddings\": false, \"index_n_heads\": 4, "
             "\"index_head_dim\": 64, \"index_topk\": 16%s%s}",
             LAYERS, types ? ", \"indexer_types\": " : "", types ? types : "");
    return refit_model_open_text(loader, "auto", cfg, strlen(cfg), "config.json", m);
}

static const char *const hf_indexer[] = {"wq_b.weight", "wk.weight", "k_norm.weight", "k_norm.bias",
                                         "weights_proj.weight"};
static const char *const meg_indexer[] = {"linear_wq_b.weight", "linear_wk.weight", "k_norm.weight",
                                          "k_norm.bias", "linear_weights_proj.weight"};

/* Every layer's indexer tensors are in both layouts exactly when want[l]. */
static void check_layers(refit_model_t *m, const bool *want)
{
    struct refit_convert_opts o = {.target_name = "hf"};
    refit_layout_t *hf = NULL, *meg = NULL;
    ck_assert_int_eq(refit_layout_target(m, &o, &hf), 0);
    struct refit_megatron_rank r = {.tp = 1, .ep = 1, .etp = 1};
    ck_assert_int_eq(refit_layout_megatron(m, &r, NULL, &meg), 0);
    char name[256];
    for (int l = 0; l < LAYERS; l++) {
        for (size_t i = 0; i < sizeof(hf_indexer) / sizeof(hf_indexer[0]); i++) {
            snprintf(name, sizeof(name), "model.layers.%d.self_attn.indexer.%s", l, hf_indexer[i]);
            ck_assert_msg((refit_layout_find(hf, name) != NULL) == want[l], "%s: want %s", name,
                          want[l] ? "present" : "absent");
            snprintf(name, sizeof(name), "decoder.layers.%d.self_attention.core_attention.indexer.%s", l,
                     meg_indexer[i]);
            ck_assert_msg((refit_layout_find(meg, name) != NULL) == want[l], "%s: want %s", name,
                          want[l] ? "present" : "absent");
        }
        /* the rest of the attention is in every layer */
        snprintf(name, sizeof(name), "model.layers.%d.self_attn.kv_b_proj.weight", l);
        ck_assert_ptr_nonnull(refit_layout_find(hf, name));
    }
    refit_layout_destroy(meg);
    refit_layout_destroy(hf);
}

START_TEST(test_index_share)
{
    refit_model_t *m = NULL;
    ck_assert_int_eq(open_glm5("[\"full\", \"shared\", \"shared\", \"full\"]", &m), 0);
    check_layers(m, (const bool[LAYERS]){true, false, false, true});
    refit_model_close(m);
}
END_TEST

START_TEST(test_no_list)
{
    refit_model_t *m = NULL;
    ck_assert_int_eq(open_glm5(NULL, &m), 0);
    check_layers(m, (const bool[LAYERS]){true, true, true, true});
    refit_model_close(m);
}
END_TEST

/* Layers past the list's end own an indexer (as transformers' loaders do). */
START_TEST(test_short_list)
{
    refit_model_t *m = NULL;
    ck_assert_int_eq(open_glm5("[\"full\", \"shared\"]", &m), 0);
    check_layers(m, (const bool[LAYERS]){true, false, true, true});
    refit_model_close(m);
}
END_TEST

START_TEST(test_bad_item)
{
    refit_model_t *m = NULL;
    ck_assert_int_eq(open_glm5("[\"full\", {}, \"full\", \"full\"]", &m), REFIT_EPROTO);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "indexer_types[1]"));
    refit_model_close(m);
    ck_assert_int_eq(open_glm5("\"full\"", &m), REFIT_EPROTO);
    refit_model_close(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("layer_dims");
    TCase *tc = tcase_create("layer_dims");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_index_share);
    tcase_add_test(tc, test_no_list);
    tcase_add_test(tc, test_short_list);
    tcase_add_test(tc, test_bad_item);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
