/* spec_mla.h — the spec-table pieces of the multi-head latent attention
 * (MLA) families, DeepSeek-V3 / Kimi-K2 (plugin deepseek_v3) and GLM-5
 * (plugin glm5): their dimensions, attention and MoE entries and the
 * engines' fused parameters, as data over spec_common.h's vocabulary.
 * Header-only: each plugin compiles its own copy into its own table.
 *
 * Sources (docs/models.md "MLA models" has the tables in prose):
 *  - HF names and shapes: transformers' DeepseekV3Attention / DeepseekV3MoE
 *    and GlmMoeDsaIndexer; DeepSeek's README_WEIGHTS.md (FP8 release);
 *  - Megatron-Core: MLASelfAttention (linear_q_down_proj / linear_kv_down_proj
 *    duplicated over TP, linear_q_up_proj / linear_q_proj / linear_kv_up_proj
 *    column-parallel by heads, linear_proj row-parallel), the TE MLA layer
 *    spec (q_a / kv_a norms fused into the up projections as
 *    layer_norm_weight) and the DSA spec (separate q_layernorm /
 *    kv_layernorm, the indexer's projections duplicated); Megatron-Bridge's
 *    DeepSeek-V3, Kimi-K2 and GLM-5 bridges (the name mappings);
 *  - vLLM deepseek_v2.py: fused_qkv_a_proj = [q_a_proj; kv_a_proj_with_mqa]
 *    (not split, only with q LoRA), q_b_proj / q_proj / kv_b_proj
 *    ColumnParallelLinear, o_proj RowParallelLinear, the indexer's
 *    wk_weights_proj = [wk; weights_proj] kept in bf16, gate_up_proj, expert
 *    stacks w13_weight / w2_weight, e_score_correction_bias in float32;
 *  - SGLang deepseek_v2.py / deepseek_weight_loader.py: the same parameters,
 *    the fused one named fused_qkv_a_proj_with_mqa;
 *  - transformers >= 5: checkpoint names with the routed experts stacked
 *    (mlp.experts.gate_up_proj [E, 2*Im, K], mlp.experts.down_proj [E, K, Im]).
 *
 * The up projections keep HF's per-head row layout on every side (q_b_proj
 * rows are head h's [q_nope; q_pe], kv_b_proj rows head h's [k_nope; v]), so a
 * row split over TP hands each rank whole heads: their role argument is the
 * rows of one head, and a split that would cut a head is refused. */
#ifndef REFIT_MODEL_SPEC_MLA_H
#define REFIT_MODEL_SPEC_MLA_H

#include <string.h>

#include "shape_common.h"
#include "spec_common.h"

/* ------------------------------------------------------------------ */
/* Dimensions */

/* q_lora_rank null (DeepSeek-V2-Lite style): no q LoRA, q_proj instead. */
#define DIMS_MLA                                                              \
    {"q_lora_rank", "q_lora_rank", "0", 0},                                   \
    {"kv_lora_rank", "kv_lora_rank", NULL, D_POS},                            \
    {"qk_nope", "qk_nope_head_dim", NULL, D_POS},                             \
    {"qk_rope", "qk_rope_head_dim", NULL, D_POS},                             \
    {"v_head", "v_head_dim", NULL, D_POS},                                    \
    {"intermediate", "intermediate_size", NULL, D_POS},                       \
    {"moe_intermediate", "moe_intermediate_size", NULL, D_POS},               \
    DIM_EXPERTS,                                                              \
    {"n_shared_experts", "n_shared_experts", "0", 0}

#define QLORA "q_lora_rank > 0"
#define NOQLORA "q_lora_rank == 0"
#define Q_HEAD "qk_nope + qk_rope"        /* rows of one query head */
#define KV_HEAD "qk_nope + v_head"        /* rows of one k_nope/v head */
#define Q_UP_ROWS "heads * (qk_nope + qk_rope)"
#define KV_UP_ROWS "heads * (qk_nope + v_head)"
#define KV_A_ROWS "kv_lora_rank + qk_rope" /* [compressed kv; k_pe] */

/* ------------------------------------------------------------------ */
/* Destinations */

#define SG_CAT(name) D("sglang", name, REFIT_FUSE_CONCAT, KEEP)
/* vLLM and SGLang fuse q_a_proj and kv_a_proj_with_mqa (with q LoRA only),
 * replicated: DeepSeekV2FusedQkvAProjLinear (disable_tp) / ReplicatedLinear */
#define MLA_QKV_A_DST                                                         \
    DST(VL_CAT(HL "self_attn.fused_qkv_a_proj.weight"),                       \
        SG_CAT(HL "self_attn.fused_qkv_a_proj_with_mqa.weight"))
/* the router's score-correction bias: a float32 parameter in both engines */
#define MLA_F32_DST                                                           \
    DST(D("vllm", NULL, REFIT_FUSE_NONE, REFIT_DTYPE_F32),                    \
        D("sglang", NULL, REFIT_FUSE_NONE, REFIT_DTYPE_F32))

/* ------------------------------------------------------------------ */
/* Attention entries: {megatron, role, scope, when, hf parts, rows, cols,
 * role args, fp8, destinations} */

#define E_MLA_INPUT_NORM                                                      \
    {ML "input_layernorm.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER,   \
     NULL, {HL "input_layernorm.weight"}, {"hidden"}, NULL, {NULL}, false, NULL}
#define E_MLA_Q_DOWN                                                          \
    {ML "self_attention.linear_q_down_proj.weight", REFIT_ROLE_REPLICATED,    \
     REFIT_SCOPE_LAYER, QLORA, {HL "self_attn.q_a_proj.weight"},              \
     {"q_lora_rank"}, "hidden", {NULL}, true, MLA_QKV_A_DST}
/* kv_a_proj_with_mqa: fused after q_a_proj with q LoRA, alone without */
#define E_MLA_KV_DOWN_FUSED                                                   \
    {ML "self_attention.linear_kv_down_proj.weight", REFIT_ROLE_REPLICATED,   \
     REFIT_SCOPE_LAYER, QLORA, {HL "self_attn.kv_a_proj_with_mqa.weight"},    \
     {KV_A_ROWS}, "hidden", {NULL}, true, MLA_QKV_A_DST}
#define E_MLA_KV_DOWN                                                         \
    {ML "self_attention.linear_kv_down_proj.weight", REFIT_ROLE_REPLICATED,   \
     REFIT_SCOPE_LAYER, NOQLORA, {HL "self_attn.kv_a_proj_with_mqa.weight"},  \
     {KV_A_ROWS}, "hidden", {NULL}, true, NULL}
/* q_a_layernorm / kv_a_layernorm under Megatron name `mname` */
#define E_MLA_Q_NORM(mname)                                                   \
    {ML mname, REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER, QLORA,               \
     {HL "self_attn.q_a_layernorm.weight"}, {"q_lora_rank"}, NULL, {NULL},    \
     false, NULL}
#define E_MLA_KV_NORM(mname)                                                  \
    {ML mname, REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER, NULL,                \
     {HL "self_attn.kv_a_layernorm.weight"}, {"kv_lora_rank"}, NULL, {NULL},  \
     false, NULL}
#define E_MLA_Q_UP                                                            \
    {ML "self_attention.linear_q_up_proj.weight", REFIT_ROLE_COLUMN,          \
     REFIT_SCOPE_LAYER, QLORA, {HL "self_attn.q_b_proj.weight"}, {Q_UP_ROWS}, \
     "q_lora_rank", {Q_HEAD}, true, NULL}
#define E_MLA_Q                                                               \
    {ML "self_attention.linear_q_proj.weight", REFIT_ROLE_COLUMN,             \
     REFIT_SCOPE_LAYER, NOQLORA, {HL "self_attn.q_proj.weight"}, {Q_UP_ROWS}, \
     "hidden", {Q_HEAD}, true, NULL}
#define E_MLA_KV_UP                                                           \
    {ML "self_attention.linear_kv_up_proj.weight", REFIT_ROLE_COLUMN,         \
     REFIT_SCOPE_LAYER, NULL, {HL "self_attn.kv_b_proj.weight"},              \
     {KV_UP_ROWS}, "kv_lora_rank", {KV_HEAD}, true, NULL}
#define E_MLA_O                                                               \
    {ML "self_attention.linear_proj.weight", REFIT_ROLE_ROW, REFIT_SCOPE_LAYER, \
     NULL, {HL "self_attn.o_proj.weight"}, {"hidden"}, "heads * v_head",      \
     {"v_head"}, true, NULL}

/* ------------------------------------------------------------------ */
/* MoE entries beyond spec_common.h's */

#define E_MLA_EXPERT_BIAS                                                     \
    {ML "mlp.router.expert_bias", REFIT_ROLE_REPLICATED, REFIT_SCOPE_MOE, NULL, \
     {HL "mlp.gate.e_score_correction_bias"}, {"experts"}, NULL, {NULL},      \
     false, MLA_F32_DST}
#define E_MLA_SHARED_FC1                                                      \
    {ML "mlp.shared_experts.linear_fc1.weight", REFIT_ROLE_GATED_COLUMN,      \
     REFIT_SCOPE_MOE, "n_shared_experts > 0",                                 \
     {HL "mlp.shared_experts.gate_proj.weight", HL "mlp.shared_experts.up_proj.weight"}, \
     {"moe_intermediate * n_shared_experts", "moe_intermediate * n_shared_experts"}, \
     "hidden", {NULL}, true,                                                  \
     DST(VL_CAT(HL "mlp.shared_experts.gate_up_proj.weight"))}
#define E_MLA_SHARED_FC2                                                      \
    {ML "mlp.shared_experts.linear_fc2.weight", REFIT_ROLE_ROW, REFIT_SCOPE_MOE, \
     "n_shared_experts > 0", {HL "mlp.shared_experts.down_proj.weight"},      \
     {"hidden"}, "moe_intermediate * n_shared_experts", {NULL}, true, NULL}

/* ------------------------------------------------------------------ */
/* Multi-token prediction (num_nextn_predict_layers; refit/model.h).  HF
 * layer L = num_hidden_layers + i holds a MoE decoder block plus enorm,
 * hnorm, eh_proj [K, 2K] (input cat(enorm(embedding), hnorm(hidden))) and
 * shared_head.norm (DeepSeek's README_WEIGHTS, transformers' layout).
 *  - Megatron-Core (multi_token_prediction.py get_mtp_layer_spec_for_backend,
 *    Megatron-Bridge's DeepSeek/GLM-5 mappings): mtp.layers.<i>.enorm,
 *    hnorm, eh_proj (a column-parallel linear), final_layernorm (the shared
 *    head's norm), the block as mtp.layers.<i>.mtp_model_layer.<decoder
 *    suffix>; MTP layers on the last pipeline stage; embedding and output
 *    layer shared with the main model (DeepSeek's per-layer copies,
 *    embed_tokens and shared_head.head, are not mapped).
 *  - vLLM's drafter (deepseek_mtp.py DeepSeekMultiTokenPredictorLayer and
 *    _rewrite_spec_layer_name): the block under model.layers.<L>.mtp_block.
 *    with the fused parameters of the main model, enorm / hnorm / eh_proj /
 *    shared_head.norm under their checkpoint names, eh_proj a plain
 *    nn.Linear (replicated, unquantized); its embed_tokens and
 *    shared_head.head are the target model's (the proposer shares them), so
 *    refit writes them once, as the main model's.
 * SGLang's draft model for DeepSeek-V3 (rfm_ds_mtp below); transformers
 * loads no MTP layers from refit (no naming row), nor SGLang for GLM-5. */

#define MLM "mtp.layers.{L}."
/* SGLang's draft model (DeepseekModelNextN) holds one MTP layer's own
 * tensors at model.<name>: no layer number. */
#define E_MTP_NORM(mname, hname)                                              \
    {MLM mname, REFIT_ROLE_REPLICATED, REFIT_SCOPE_MTP, NULL, {HL hname},     \
     {"hidden"}, NULL, {NULL}, false,                                         \
     DST(D("sglang", "model." hname, REFIT_FUSE_NONE, KEEP))}
#define E_MTP_ENORM E_MTP_NORM("enorm.weight", "enorm.weight")
#define E_MTP_HNORM E_MTP_NORM("hnorm.weight", "hnorm.weight")
#define E_MTP_HEAD_NORM E_MTP_NORM("final_layernorm.weight", "shared_head.norm.weight")
#define MTP_EH_PROJ_DST(t_, n_)                                               \
    {.target = t_, .name = n_, .fusion = REFIT_FUSE_NONE, .dtype = KEEP,      \
     .fp8 = REFIT_FP8_OFF, .role = REFIT_ROLE_REPLICATED}
#define E_MTP_EH_PROJ                                                         \
    {MLM "eh_proj.weight", REFIT_ROLE_COLUMN, REFIT_SCOPE_MTP, NULL,          \
     {HL "eh_proj.weight"}, {"hidden"}, "2 * hidden", {NULL}, false,          \
     DST(MTP_EH_PROJ_DST("sglang", "model.eh_proj.weight"),                   \
         MTP_EH_PROJ_DST("vllm", NULL))}
#define E_MTP_ALL E_MTP_ENORM, E_MTP_HNORM, E_MTP_EH_PROJ, E_MTP_HEAD_NORM

static const struct refit_mtp_naming rfm_mla_mtp[] = {
    {"megatron", ML, "mtp.layers.{L}.mtp_model_layer."},
    {"hf", NULL, NULL},
    {"vllm", HL, HL "mtp_block."},
};

/* DeepSeek-V3 in SGLang too: its draft model DeepseekV3ForCausalLMNextN
 * (models/deepseek_nextn.py) loads the one MTP layer of the checkpoint
 * ("Only 1 nextn layer is supported"), the layer's own tensors renamed
 * model.layers.<L>.<name> -> model.<name> (enorm, hnorm, eh_proj, a plain
 * nn.Linear, shared_head.norm), the decoder block -> model.decoder.<name>
 * with the main model's fused parameters (DeepseekV2DecoderLayer); its
 * embed_tokens and shared_head.head are the target model's.  A target name
 * without {L} holds one MTP layer: more are refused. */
static const struct refit_mtp_naming rfm_ds_mtp[] = {
    {"megatron", ML, "mtp.layers.{L}.mtp_model_layer."},
    {"hf", NULL, NULL},
    {"vllm", HL, HL "mtp_block."},
    {"sglang", HL, "model.decoder."},
};

/* ------------------------------------------------------------------ */
/* Target layouts (spec_common.h's four): SGLang takes vLLM's parameters but
 * for the fused q_a / kv_a projection's name; transformers the checkpoint's
 * names with the routed experts stacked (E_EXPERT_FC1/FC2). */

#define TARGETS_MLA TARGETS_ALL

/* ------------------------------------------------------------------ */
/* The demo checkpoints' attention and MoE fields (deepseek_v3's and glm5's
 * example_config, between hidden_size and vocab_size): q LoRA, layer 0
 * dense, routed and shared experts, noaux_tc routing.  Every vLLM
 * partition at TP 1, 2 and 4 sits on the 128 grid, so FP8 stays on. */
#define RFM_MLA_EXAMPLE_FIELDS                                                                   \
    "\"num_attention_heads\": 16, \"num_key_value_heads\": 16, \"q_lora_rank\": 384, "            \
    "\"kv_lora_rank\": 256, \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64, "                \
    "\"v_head_dim\": 128, \"intermediate_size\": 2816, \"moe_intermediate_size\": 256, "          \
    "\"n_routed_experts\": 16, \"n_shared_experts\": 1, \"num_experts_per_tok\": 4, "             \
    "\"first_k_dense_replace\": 1, \"moe_layer_freq\": 1, \"topk_method\": \"noaux_tc\", "         \
    "\"scoring_func\": \"sigmoid\", "

/* ------------------------------------------------------------------ */
/* The summary shape of an MLA model (sizes for tools; layouts use the
 * declared dimensions). */
static inline int rfm_mla_shape(const struct refit_host *h, const struct refit_model_hfcfg *c,
                                struct refit_model_shape *s)
{
    int64_t nope, rope;
    int rc = rfm_common_shape(h, c, s);
    if (!rc)
        rc = rfm_req_int(h, c, "intermediate_size", &s->intermediate);
    if (!rc)
        rc = rfm_req_int(h, c, "moe_intermediate_size", &s->moe_intermediate);
    if (!rc)
        rc = rfm_expert_count(h, c, &s->experts);
    if (!rc)
        rc = rfm_opt_int(h, c, "n_shared_experts", 0, &s->n_shared_experts);
    if (!rc)
        rc = rfm_opt_int(h, c, "num_nextn_predict_layers", 0, &s->n_mtp_layers);
    if (!rc)
        rc = rfm_req_int(h, c, "qk_nope_head_dim", &nope);
    if (!rc)
        rc = rfm_req_int(h, c, "qk_rope_head_dim", &rope);
    if (rc)
        return rc;
    s->head_dim = nope + rope; /* a query head's width */
    s->expert_bias = true;     /* noaux_tc routing: e_score_correction_bias */
    return 0;
}

#endif
