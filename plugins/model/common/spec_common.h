/* spec_common.h — the spec-table pieces that Qwen3, Qwen3-MoE and GLM-4.5
 * share (dimensions, embedding, attention, dense MLP, experts) and the
 * target layouts they offer, written as initializers so each plugin's table
 * stays a flat, readable list of data.  Header-only: every plugin compiles
 * its own copy into its own table.
 *
 * Target layouts (the engines' rules as data; docs/models.md "Targets"):
 *   hf      the checkpoint's names and shapes, unfused; no padding, no FP8 rule
 *   transformers  transformers >= 5 in memory: hf names, but each MoE layer's
 *           experts as two stacks, mlp.experts.gate_up_proj [E, 2*Im, K]
 *           (expert e: gate rows, then up rows) and mlp.experts.down_proj
 *           [E, K, Im] (modeling_qwen3_moe.py Qwen3MoeExperts; the
 *           conversion_mapping MergeModulelist + Concatenate of the
 *           checkpoint names); no padding; FP8 for 2-D linears only
 *           (FineGrainedFP8's weight + weight_scale_inv), stacks keep the dtype
 *   vllm    vLLM's parameters (qkv_proj, gate_up_proj, experts.w13_weight /
 *           w2_weight), vocabulary padded to 64 (VocabParallelEmbedding's
 *           pad_vocab_size), the block-FP8 partition rule of fp8.py
 *           (create_weights: every output partition of a merged or split
 *           layer, the input partition of a row-parallel one, on the 128
 *           grid; Fp8MoEMethod: the intermediate partition of the expert stacks)
 *   sglang  SGLang's parameters: the same stacked_params_mapping (qkv_proj,
 *           gate_up_proj) and FusedMoE w13_weight / w2_weight as vLLM
 *           (models/qwen3.py, qwen3_moe.py, glm4_moe.py load_weights), the
 *           vocabulary padded to 64 (its vocab_parallel_embedding.py), the
 *           same block-FP8 partition checks; what differs per family is in
 *           its entries (GLM: the router weight in the model dtype, the shared
 *           expert fused as expert E without expert parallelism). */
#ifndef REFIT_MODEL_SPEC_COMMON_H
#define REFIT_MODEL_SPEC_COMMON_H

#include "refit/model.h"

#define ML "decoder.layers.{L}."
#define HL "model.layers.{L}."

/* ------------------------------------------------------------------ */
/* Dimensions (config.json keys; docs/models.md "Dimensions") */

#define D_POS REFIT_DIMF_POSITIVE
#define D_BOOL REFIT_DIMF_BOOL

/* The attention and vocabulary fields every family has.  head_dim from the
 * config: hidden/heads is wrong for Qwen3 and GLM. */
#define DIMS_COMMON                                                         \
    {"vocab", "vocab_size", NULL, D_POS},                                   \
    {"hidden", "hidden_size", NULL, D_POS},                                 \
    {"heads", "num_attention_heads", NULL, D_POS},                          \
    {"kv_heads", "num_key_value_heads", "heads", D_POS},                    \
    {"head_dim", "head_dim", "hidden / heads", D_POS},                      \
    {"tie_word_embeddings", "tie_word_embeddings", "0", D_BOOL},            \
    {"attention_bias", "attention_bias", "0", D_BOOL}
/* Expert count: num_experts (Qwen3-MoE on the hub), num_local_experts
 * (transformers 5), n_routed_experts (GLM). */
#define DIM_EXPERTS {"experts", "num_experts|num_local_experts|n_routed_experts", NULL, D_POS}

/* ------------------------------------------------------------------ */
/* Target layouts */

#define FP8_GRID_VLLM                                                       \
    (REFIT_FP8_GRID_SPLIT_PARTS | REFIT_FP8_GRID_MERGED_PARTS |             \
     REFIT_FP8_GRID_SPLIT_COLS | REFIT_FP8_GRID_STACKS)
#define TARGET_HF {"hf", NULL, 0, 128, 0, "HF"}
#define TARGET_TRANSFORMERS {"transformers", NULL, 0, 128, 0, "transformers"}
#define TARGET_VLLM {"vllm", NULL, 64, 128, FP8_GRID_VLLM, "vLLM"}
#define TARGET_SGLANG {"sglang", "vllm", 64, 128, FP8_GRID_VLLM, "SGLang"}
#define TARGETS_ALL TARGET_HF, TARGET_TRANSFORMERS, TARGET_VLLM, TARGET_SGLANG

/* Per-target destinations: a compound literal list ended by an empty one.
 * D(target, name, fusion, dtype) with the entry's FP8 default; DW(...,
 * when) only where the condition holds.  KEEP: the source dtype. */
#define KEEP REFIT_DTYPE_INVALID
#define FP8_E REFIT_FP8_ENTRY
#define DST(...) ((const struct refit_model_dst[]){__VA_ARGS__, {.target = NULL}})
#define D(t_, n_, f_, d_) {.target = t_, .name = n_, .fusion = f_, .dtype = d_, .fp8 = FP8_E}
#define DW(t_, n_, f_, d_, w_) {.target = t_, .name = n_, .fusion = f_, .dtype = d_, .fp8 = FP8_E, .when = w_}
/* vLLM's fused parameter of one entry (SGLang's too: its base is vllm) */
#define VL_CAT(name) D("vllm", name, REFIT_FUSE_CONCAT, KEEP)
#define VL_STACK(name) D("vllm", name, REFIT_FUSE_STACK, KEEP)
/* transformers' expert stacks: no FP8 (FineGrainedFP8 quantizes 2-D linears) */
#define TF_STACK(n_) {.target = "transformers", .name = n_, .fusion = REFIT_FUSE_STACK, .dtype = KEEP, .fp8 = REFIT_FP8_OFF}

/* ------------------------------------------------------------------ */
/* Entries: {megatron, role, scope, when, hf parts, rows, cols, role args,
 * fp8, destinations} */

#define Q_ROWS "heads * head_dim"
#define KV_ROWS "kv_heads * head_dim"
#define QKV_ARGS {"heads", "kv_heads", "head_dim"}

#define E_EMBED                                                                          \
    {"embedding.word_embeddings.weight", REFIT_ROLE_VOCAB, REFIT_SCOPE_GLOBAL, NULL,     \
     {"model.embed_tokens.weight"}, {"vocab"}, "hidden", {NULL}, false, NULL}
#define E_LM_HEAD                                                                        \
    {"output_layer.weight", REFIT_ROLE_VOCAB, REFIT_SCOPE_FINAL, "!tie_word_embeddings",  \
     {"lm_head.weight"}, {"vocab"}, "hidden", {NULL}, false, NULL}
/* With tied embeddings, Megatron's last pipeline stage (when it is not the
 * first) keeps its own copy of the embedding as output_layer.weight
 * (LanguageModule.setup_embeddings_and_output_layer). */
#define E_LM_HEAD_TIED                                                                   \
    {"output_layer.weight", REFIT_ROLE_VOCAB, REFIT_SCOPE_TIED_COPY, "tie_word_embeddings", \
     {"model.embed_tokens.weight"}, {"vocab"}, "hidden", {NULL}, false, NULL}
#define E_FINAL_NORM                                                                     \
    {"decoder.final_layernorm.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_FINAL, NULL,   \
     {"model.norm.weight"}, {"hidden"}, NULL, {NULL}, false, NULL}

#define E_INPUT_NORM                                                                     \
    {ML "self_attention.linear_qkv.layer_norm_weight", REFIT_ROLE_REPLICATED,            \
     REFIT_SCOPE_LAYER, NULL, {HL "input_layernorm.weight"}, {"hidden"}, NULL, {NULL},   \
     false, NULL}
#define E_QKV_WEIGHT                                                                     \
    {ML "self_attention.linear_qkv.weight", REFIT_ROLE_QKV_COLUMN, REFIT_SCOPE_LAYER,    \
     NULL,                                                                               \
     {HL "self_attn.q_proj.weight", HL "self_attn.k_proj.weight",                        \
      HL "self_attn.v_proj.weight"},                                                     \
     {Q_ROWS, KV_ROWS, KV_ROWS}, "hidden", QKV_ARGS, true,                               \
     DST(VL_CAT(HL "self_attn.qkv_proj.weight"))}
#define E_QKV_BIAS                                                                       \
    {ML "self_attention.linear_qkv.bias", REFIT_ROLE_QKV_COLUMN, REFIT_SCOPE_LAYER,      \
     "attention_bias",                                                                   \
     {HL "self_attn.q_proj.bias", HL "self_attn.k_proj.bias", HL "self_attn.v_proj.bias"}, \
     {Q_ROWS, KV_ROWS, KV_ROWS}, NULL, QKV_ARGS, false,                                  \
     DST(VL_CAT(HL "self_attn.qkv_proj.bias"))}
#define E_Q_NORM                                                                         \
    {ML "self_attention.q_layernorm.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER,   \
     "qk_norm", {HL "self_attn.q_norm.weight"}, {"head_dim"}, NULL, {NULL}, false, NULL}
#define E_K_NORM                                                                         \
    {ML "self_attention.k_layernorm.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER,   \
     "qk_norm", {HL "self_attn.k_norm.weight"}, {"head_dim"}, NULL, {NULL}, false, NULL}
#define E_O_PROJ                                                                         \
    {ML "self_attention.linear_proj.weight", REFIT_ROLE_ROW, REFIT_SCOPE_LAYER, NULL,    \
     {HL "self_attn.o_proj.weight"}, {"hidden"}, Q_ROWS, {NULL}, true, NULL}

/* Dense MLP layers: the post-attention norm is fused into linear_fc1. */
#define E_DENSE_NORM                                                                     \
    {ML "mlp.linear_fc1.layer_norm_weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_DENSE,    \
     NULL, {HL "post_attention_layernorm.weight"}, {"hidden"}, NULL, {NULL}, false, NULL}
#define E_DENSE_FC1                                                                      \
    {ML "mlp.linear_fc1.weight", REFIT_ROLE_GATED_COLUMN, REFIT_SCOPE_DENSE, NULL,       \
     {HL "mlp.gate_proj.weight", HL "mlp.up_proj.weight"},                               \
     {"intermediate", "intermediate"}, "hidden", {NULL}, true,                           \
     DST(VL_CAT(HL "mlp.gate_up_proj.weight"))}
#define E_DENSE_FC2                                                                      \
    {ML "mlp.linear_fc2.weight", REFIT_ROLE_ROW, REFIT_SCOPE_DENSE, NULL,                \
     {HL "mlp.down_proj.weight"}, {"hidden"}, "intermediate", {NULL}, true, NULL}

/* MoE layers: a separate pre-MLP norm, a router, routed experts. */
#define E_MOE_NORM                                                                       \
    {ML "pre_mlp_layernorm.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_MOE, NULL,        \
     {HL "post_attention_layernorm.weight"}, {"hidden"}, NULL, {NULL}, false, NULL}
/* router_dst: the router's destinations (GLM keeps it fp32 on vLLM) */
#define E_ROUTER(router_dst)                                                             \
    {ML "mlp.router.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_MOE, NULL,               \
     {HL "mlp.gate.weight"}, {"experts"}, "hidden", {NULL}, false, router_dst}
#define E_EXPERT_FC1                                                                     \
    {ML "mlp.experts.linear_fc1.weight{k}", REFIT_ROLE_EXPERT_COLUMN, REFIT_SCOPE_MOE,   \
     NULL, {HL "mlp.experts.{e}.gate_proj.weight", HL "mlp.experts.{e}.up_proj.weight"}, \
     {"moe_intermediate", "moe_intermediate"}, "hidden", {NULL}, true,                   \
     DST(VL_STACK(HL "mlp.experts.w13_weight"), TF_STACK(HL "mlp.experts.gate_up_proj"))}
#define E_EXPERT_FC2                                                                     \
    {ML "mlp.experts.linear_fc2.weight{k}", REFIT_ROLE_EXPERT_ROW, REFIT_SCOPE_MOE, NULL, \
     {HL "mlp.experts.{e}.down_proj.weight"}, {"hidden"}, "moe_intermediate", {NULL},    \
     true, DST(VL_STACK(HL "mlp.experts.w2_weight"), TF_STACK(HL "mlp.experts.down_proj"))}

/* ------------------------------------------------------------------ */
/* Source layouts: the trainer frameworks' spellings of the table's names */

/* Megatron-Core: DDP and Float16Module wrap the model as `module.`
 * (nested wrappers repeat it); SequentialMLP names its experts
 * mlp.experts.local_experts.<k>.linear_fcN.weight where TEGroupedMLP (the
 * table's spelling, what `refit shard` writes) has
 * mlp.experts.linear_fcN.weight<k> (megatron/core/transformer/moe/experts.py
 * sharded_state_dict of both).  FSDP publishes HF names as they are. */
static const char *const rfm_megatron_strip[] = {"module."};
static const struct refit_source_alias rfm_megatron_aliases[] = {
    {"{a}mlp.experts.local_experts.{k}.{b}", "{a}mlp.experts.{b}{k}"},
};
static const struct refit_source_layout rfm_sources[] = {
    {"megatron", rfm_megatron_strip, 1, rfm_megatron_aliases, 1},
};

/* The spec struct of a plugin from its three arrays (no MTP layers). */
#define RFM_SPEC(dims_, entries_, targets_, experts_) RFM_SPEC_MTP(dims_, entries_, targets_, experts_, 0, NULL, 0)
/* The same with MTP layers: their block's kind and the layouts' names. */
#define RFM_SPEC_MTP(dims_, entries_, targets_, experts_, mtp_block_, mtp_names_, n_mtp_names_) \
    {sizeof(struct refit_model_spec), dims_, sizeof(dims_) / sizeof(dims_[0]), entries_,  \
     sizeof(entries_) / sizeof(entries_[0]), targets_,                                    \
     sizeof(targets_) / sizeof(targets_[0]), experts_, rfm_sources,                       \
     sizeof(rfm_sources) / sizeof(rfm_sources[0]), mtp_block_, mtp_names_, n_mtp_names_}

#endif
