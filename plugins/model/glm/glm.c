/* glm.c — model plugin for the GLM-4.5 family (HF model_type "glm4_moe"):
 * dense layers before first_k_dense_replace, MoE after with one shared
 * expert and a router bias, attention bias, MTP layers at the end. */
#include <string.h>

#include "../common/plugin_common.h"
#include "../common/shape_common.h"
#include "../common/spec_common.h"

static const struct refit_host *host;

static const struct refit_model_dim glm_dims[] = {
    DIMS_COMMON,
    {"intermediate", "intermediate_size", NULL, D_POS},
    {"moe_intermediate", "moe_intermediate_size", NULL, D_POS},
    DIM_EXPERTS,
    {"n_shared_experts", "n_shared_experts", "0", 0},
    {"qk_norm", "use_qk_norm", "0", D_BOOL},
    /* GLM-4.5 routes with a score-correction bias (noaux_tc) */
    {"expert_bias", NULL, "1", 0},
};

/* vLLM keeps GLM's router weight and score-correction bias in fp32; SGLang
 * keeps the weight in the model dtype (glm4_moe.py Glm4MoeGate: weight in the
 * default dtype, e_score_correction_bias float32) */
#define VL_F32 D("vllm", NULL, REFIT_FUSE_NONE, REFIT_DTYPE_F32)
/* SGLang fuses the one shared expert into the expert stacks as expert E
 * unless experts are parallel (glm4_moe.py determine_num_fused_shared_experts:
 * on CUDA sm80+ without moe_ep; load_weights renames shared_experts.* to
 * experts.<n_routed_experts>.*) */
#define SG_SHARED "ep <= 1 && n_shared_experts == 1"

static const struct refit_model_entry glm_entries[] = {
    E_EMBED, E_LM_HEAD, E_LM_HEAD_TIED, E_FINAL_NORM,
    E_INPUT_NORM, E_QKV_WEIGHT, E_QKV_BIAS, E_Q_NORM, E_K_NORM, E_O_PROJ,
    E_DENSE_NORM, E_DENSE_FC1, E_DENSE_FC2,
    E_MOE_NORM, E_ROUTER(DST(VL_F32, D("sglang", NULL, REFIT_FUSE_NONE, KEEP))),
    {ML "mlp.router.expert_bias", REFIT_ROLE_REPLICATED, REFIT_SCOPE_MOE, "expert_bias",
     {HL "mlp.gate.e_score_correction_bias"}, {"experts"}, NULL, {NULL}, false, DST(VL_F32)},
    E_EXPERT_FC1, E_EXPERT_FC2,
    {ML "mlp.shared_experts.linear_fc1.weight", REFIT_ROLE_GATED_COLUMN, REFIT_SCOPE_MOE,
     "n_shared_experts > 0",
     {HL "mlp.shared_experts.gate_proj.weight", HL "mlp.shared_experts.up_proj.weight"},
     {"moe_intermediate * n_shared_experts", "moe_intermediate * n_shared_experts"}, "hidden", {NULL},
     true, DST(VL_CAT(HL "mlp.shared_experts.gate_up_proj.weight"),
               DW("sglang", HL "mlp.experts.w13_weight", REFIT_FUSE_STACK, KEEP, SG_SHARED))},
    {ML "mlp.shared_experts.linear_fc2.weight", REFIT_ROLE_ROW, REFIT_SCOPE_MOE, "n_shared_experts > 0",
     {HL "mlp.shared_experts.down_proj.weight"}, {"hidden"}, "moe_intermediate * n_shared_experts", {NULL},
     true, DST(DW("sglang", HL "mlp.experts.w2_weight", REFIT_FUSE_STACK, KEEP, SG_SHARED))},
};

static const struct refit_target_layout glm_targets[] = {TARGETS_ALL};

static const struct refit_model_spec glm_spec = RFM_SPEC(glm_dims, glm_entries, glm_targets, "experts");

static int glm_claims(const char *model_type)
{
    return model_type && !strcmp(model_type, "glm4_moe");
}

static int glm_shape(const struct refit_model_hfcfg *c, struct refit_model_shape *s)
{
    memset(s, 0, sizeof(*s));
    int rc = rfm_common_shape(host, c, s);
    if (!rc)
        rc = rfm_req_int(host, c, "intermediate_size", &s->intermediate);
    if (!rc)
        rc = rfm_req_int(host, c, "moe_intermediate_size", &s->moe_intermediate);
    if (!rc)
        rc = rfm_expert_count(host, c, &s->experts);
    if (!rc)
        rc = rfm_opt_int(host, c, "n_shared_experts", 0, &s->n_shared_experts);
    if (!rc)
        rc = rfm_opt_int(host, c, "num_nextn_predict_layers", 0, &s->n_mtp_layers);
    if (!rc)
        rc = rfm_opt_bool(host, c, "use_qk_norm", false, &s->qk_norm);
    /* GLM-4.5 routes with a score-correction bias (noaux_tc). */
    s->expert_bias = true;
    return rc;
}

static int glm_layer_kind(const struct refit_model_hfcfg *c, const struct refit_model_shape *s,
                          int64_t layer, enum refit_layer_kind *out)
{
    int64_t first_dense;
    int rc = rfm_opt_int(host, c, "first_k_dense_replace", 0, &first_dense);
    if (rc)
        return rc;
    if (layer >= s->n_layers)
        *out = REFIT_LAYER_MTP;
    else
        *out = layer < first_dense ? REFIT_LAYER_DENSE : REFIT_LAYER_MOE;
    return 0;
}

/* The demo's checkpoint (`refit demo --model glm`): a small GLM-4.5 model. */
static int glm_example_config(int64_t layers, int64_t vocab, char *buf, size_t cap)
{
    return rfm_example(host, buf, cap,
                       "{\"architectures\": [\"Glm4MoeForCausalLM\"], \"model_type\": \"glm4_moe\", "
                       "\"num_hidden_layers\": %lld, \"num_nextn_predict_layers\": 1, \"hidden_size\": 1024, "
                       "\"num_attention_heads\": 16, \"num_key_value_heads\": 4, \"head_dim\": 128, "
                       "\"intermediate_size\": 2816, \"moe_intermediate_size\": 256, \"n_routed_experts\": 16, "
                       "\"num_experts_per_tok\": 4, \"n_shared_experts\": 1, \"first_k_dense_replace\": 1, "
                       "\"vocab_size\": %lld, \"tie_word_embeddings\": false, \"attention_bias\": true, "
                       "\"use_qk_norm\": false, \"torch_dtype\": \"bfloat16\"}\n",
                       layers, 6, vocab, 32000);
}

RFM_DEFINE_PLUGIN(glm, "glm",
                  "GLM-4.5 family (model_type glm4_moe): Megatron, HF and vLLM layouts")
