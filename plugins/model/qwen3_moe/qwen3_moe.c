/* qwen3_moe.c — model plugin for Qwen3-MoE (HF model_type "qwen3_moe"). */
#include <string.h>

#include "../common/plugin_common.h"
#include "../common/shape_common.h"
#include "../common/spec_common.h"

static const struct refit_host *host;

static const struct refit_model_dim qwen3_moe_dims[] = {
    DIMS_COMMON,
    /* intermediate_size only matters when some layer is dense */
    {"intermediate", "intermediate_size", "0", 0},
    {"moe_intermediate", "moe_intermediate_size", NULL, D_POS},
    DIM_EXPERTS,
    {"qk_norm", NULL, "1", 0},
};

static const struct refit_model_entry qwen3_moe_entries[] = {
    E_EMBED, E_LM_HEAD, E_LM_HEAD_TIED, E_FINAL_NORM,
    E_INPUT_NORM, E_QKV_WEIGHT, E_QKV_BIAS, E_Q_NORM, E_K_NORM, E_O_PROJ,
    /* layers listed in mlp_only_layers keep a dense MLP */
    E_DENSE_NORM, E_DENSE_FC1, E_DENSE_FC2,
    /* the router stays bf16 on vLLM for Qwen3-MoE */
    E_MOE_NORM, E_ROUTER(NULL), E_EXPERT_FC1, E_EXPERT_FC2,
};

static const struct refit_target_layout qwen3_moe_targets[] = {TARGETS_ALL};

static const struct refit_model_spec qwen3_moe_spec =
    RFM_SPEC(qwen3_moe_dims, qwen3_moe_entries, qwen3_moe_targets, "experts");

static int qwen3_moe_claims(const char *model_type)
{
    return model_type && !strcmp(model_type, "qwen3_moe");
}

static int qwen3_moe_shape(const struct refit_model_hfcfg *c, struct refit_model_shape *s)
{
    memset(s, 0, sizeof(*s));
    int rc = rfm_common_shape(host, c, s);
    if (!rc)
        rc = rfm_req_int(host, c, "moe_intermediate_size", &s->moe_intermediate);
    if (!rc)
        rc = rfm_expert_count(host, c, &s->experts);
    /* intermediate_size only matters when some layer is dense. */
    if (!rc)
        rc = rfm_opt_int(host, c, "intermediate_size", 0, &s->intermediate);
    s->qk_norm = true;
    return rc;
}

/* MoE when L is not in mlp_only_layers and (L+1) % decoder_sparse_step == 0. */
static int qwen3_moe_layer_kind(const struct refit_model_hfcfg *c, const struct refit_model_shape *s,
                                int64_t layer, enum refit_layer_kind *out)
{
    int64_t step;
    int rc = rfm_opt_int(host, c, "decoder_sparse_step", 1, &step);
    if (rc)
        return rc;
    if (step < 1)
        return host->error_set(REFIT_EPROTO, "config.json: decoder_sparse_step must be >= 1");
    size_t n = 0;
    rc = c->get_len(c->ctx, "mlp_only_layers", &n);
    if (rc && rc != REFIT_ENOENT)
        return host->error_push(rc, "config.json: key 'mlp_only_layers'");
    bool dense = (layer + 1) % step != 0;
    for (size_t i = 0; !rc && i < n && !dense; i++) {
        int64_t v;
        rc = c->get_int_at(c->ctx, "mlp_only_layers", i, &v);
        if (rc)
            return host->error_push(rc, "config.json: key 'mlp_only_layers' item %zu", i);
        dense = v == layer;
    }
    if (dense && s->intermediate <= 0)
        return host->error_set(REFIT_EPROTO,
                               "config.json: layer %lld is dense but intermediate_size is missing",
                               (long long)layer);
    *out = dense ? REFIT_LAYER_DENSE : REFIT_LAYER_MOE;
    return 0;
}

/* The demo's checkpoint (`refit demo --model qwen3_moe`): a small Qwen3-MoE model. */
static int qwen3_moe_example_config(int64_t layers, int64_t vocab, char *buf, size_t cap)
{
    return rfm_example(host, buf, cap,
                       "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"model_type\": \"qwen3_moe\", "
                       "\"num_hidden_layers\": %lld, \"hidden_size\": 1024, \"num_attention_heads\": 16, "
                       "\"num_key_value_heads\": 2, \"head_dim\": 128, \"intermediate_size\": 3072, "
                       "\"moe_intermediate_size\": 384, \"num_experts\": 16, \"num_experts_per_tok\": 4, "
                       "\"decoder_sparse_step\": 1, \"mlp_only_layers\": [], \"vocab_size\": %lld, "
                       "\"tie_word_embeddings\": false, \"attention_bias\": false, \"torch_dtype\": \"bfloat16\"}\n",
                       layers, 6, vocab, 32000);
}

RFM_DEFINE_PLUGIN(qwen3_moe, "qwen3_moe",
                  "Qwen3-MoE (model_type qwen3_moe): Megatron, HF and vLLM layouts")
