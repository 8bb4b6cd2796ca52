/* deepseek_v3.c — model plugin for DeepSeek-V3 / R1 (HF model_type
 * "deepseek_v3") and Kimi-K2 ("kimi_k2", the same architecture): multi-head
 * latent attention with or without q LoRA, the first first_k_dense_replace
 * layers dense, then routed experts with shared experts and a router with a
 * float32 score-correction bias; the multi-token-prediction layers after
 * num_hidden_layers on request (include_mtp: Megatron's mtp.layers.<i>,
 * vLLM's drafter, SGLang's NextN draft model; spec_mla.h).  Megatron names follow the TE MLA layer spec
 * these models train with (the q_a / kv_a norms fused into the up
 * projections); spec_mla.h has the sources. */
#include <string.h>

#include "../common/plugin_common.h"
#include "../common/shape_common.h"
#include "../common/spec_mla.h"

static const struct refit_host *host;

static const struct refit_model_dim ds_dims[] = {
    DIMS_COMMON,
    DIMS_MLA,
};

static const struct refit_model_entry ds_entries[] = {
    E_EMBED, E_LM_HEAD, E_LM_HEAD_TIED, E_FINAL_NORM,
    E_MLA_INPUT_NORM,
    /* fused_qkv_a_proj's parts in this order: q_a_proj, kv_a_proj_with_mqa */
    E_MLA_Q_DOWN, E_MLA_KV_DOWN_FUSED, E_MLA_KV_DOWN,
    E_MLA_Q_NORM("self_attention.linear_q_up_proj.layer_norm_weight"),
    E_MLA_Q_UP, E_MLA_Q,
    E_MLA_KV_NORM("self_attention.linear_kv_up_proj.layer_norm_weight"),
    E_MLA_KV_UP, E_MLA_O,
    E_DENSE_NORM, E_DENSE_FC1, E_DENSE_FC2,
    /* the router keeps the model dtype in both engines (GateLinear) */
    E_MOE_NORM, E_ROUTER(NULL), E_MLA_EXPERT_BIAS,
    E_MLA_SHARED_FC1, E_MLA_SHARED_FC2,
    E_EXPERT_FC1, E_EXPERT_FC2,
    E_MTP_ALL,
};

static const struct refit_target_layout ds_targets[] = {TARGETS_MLA};

static const struct refit_model_spec ds_spec =
    RFM_SPEC_MTP(ds_dims, ds_entries, ds_targets, "experts", REFIT_LAYER_MOE, rfm_ds_mtp,
                 sizeof(rfm_ds_mtp) / sizeof(rfm_ds_mtp[0]));

static int ds_claims(const char *model_type)
{
    return model_type && (!strcmp(model_type, "deepseek_v3") || !strcmp(model_type, "kimi_k2"));
}

static int ds_shape(const struct refit_model_hfcfg *c, struct refit_model_shape *s)
{
    memset(s, 0, sizeof(*s));
    return rfm_mla_shape(host, c, s);
}

/* MoE from first_k_dense_replace on, every moe_layer_freq-th layer
 * (transformers' DeepseekV3DecoderLayer, vLLM's DeepseekV2DecoderLayer). */
static int ds_layer_kind(const struct refit_model_hfcfg *c, const struct refit_model_shape *s, int64_t layer,
                         enum refit_layer_kind *out)
{
    int64_t first_dense, freq;
    int rc = rfm_opt_int(host, c, "first_k_dense_replace", 0, &first_dense);
    if (!rc)
        rc = rfm_opt_int(host, c, "moe_layer_freq", 1, &freq);
    if (rc)
        return rc;
    if (freq < 1)
        return host->error_set(REFIT_EPROTO, "config.json: moe_layer_freq must be positive");
    if (layer >= s->n_layers)
        *out = REFIT_LAYER_MTP;
    else
        *out = layer >= first_dense && layer % freq == 0 ? REFIT_LAYER_MOE : REFIT_LAYER_DENSE;
    return 0;
}

/* The demo's checkpoint (`refit demo --model deepseek_v3`): a small
 * DeepSeek-V3 (q LoRA, layer 0 dense, routed and shared experts, the
 * router's fp32 score-correction bias).  Every vLLM partition at TP 1, 2
 * and 4 sits on the 128 grid, so FP8 stays on. */
static int ds_example_config(int64_t layers, int64_t vocab, char *buf, size_t cap)
{
    return rfm_example(host, buf, cap,
                       "{\"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\", "
                       "\"num_hidden_layers\": %lld, \"num_nextn_predict_layers\": 0, \"hidden_size\": 1024, "
                       RFM_MLA_EXAMPLE_FIELDS
                       "\"vocab_size\": %lld, \"tie_word_embeddings\": false, \"attention_bias\": false, "
                       "\"torch_dtype\": \"bfloat16\"}\n",
                       layers, 6, vocab, 32000);
}

RFM_DEFINE_PLUGIN(ds, "deepseek_v3",
                  "DeepSeek-V3/R1 and Kimi-K2 (model_type deepseek_v3, kimi_k2): MLA + MoE; Megatron, HF, "
                  "transformers, vLLM and SGLang layouts")
