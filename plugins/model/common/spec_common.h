/* spec_common.h — entries of the conversion-spec table that Qwen3, Qwen3-MoE
 * and GLM-4.5 share (embedding, attention, dense MLP, experts), written as
 * initializers so each plugin's table stays a flat, readable list of data.
 * Header-only: every plugin compiles its own copy into its own table. */
#ifndef REFIT_MODEL_SPEC_COMMON_H
#define REFIT_MODEL_SPEC_COMMON_H

#include "refit/model.h"

#define ML "decoder.layers.{L}."
#define HL "model.layers.{L}."

/* dst for target hf: HF names, no fusion, source dtype. */
#define HF_KEEP(fp8_) {NULL, REFIT_FUSE_NONE, REFIT_DTYPE_INVALID, fp8_}
#define VL_KEEP(fp8_) {NULL, REFIT_FUSE_NONE, REFIT_DTYPE_INVALID, fp8_}

#define E_EMBED                                                                         \
    {"embedding.word_embeddings.weight", REFIT_ROLE_VOCAB, REFIT_HOLD_WHOLE,            \
     REFIT_SCOPE_GLOBAL, 0, {"model.embed_tokens.weight"},                              \
     {REFIT_DIM_VOCAB}, REFIT_DIM_HIDDEN, {HF_KEEP(false), VL_KEEP(false)}}
#define E_LM_HEAD                                                                       \
    {"output_layer.weight", REFIT_ROLE_VOCAB, REFIT_HOLD_WHOLE, REFIT_SCOPE_GLOBAL,     \
     REFIT_REQ_UNTIED, {"lm_head.weight"}, {REFIT_DIM_VOCAB}, REFIT_DIM_HIDDEN,         \
     {HF_KEEP(false), VL_KEEP(false)}}
#define E_FINAL_NORM                                                                    \
    {"decoder.final_layernorm.weight", REFIT_ROLE_REPLICATED, REFIT_HOLD_WHOLE,         \
     REFIT_SCOPE_GLOBAL, 0, {"model.norm.weight"}, {REFIT_DIM_HIDDEN}, REFIT_DIM_NONE,  \
     {HF_KEEP(false), VL_KEEP(false)}}

#define E_INPUT_NORM                                                                    \
    {ML "self_attention.linear_qkv.layer_norm_weight", REFIT_ROLE_REPLICATED,           \
     REFIT_HOLD_WHOLE, REFIT_SCOPE_LAYER, 0, {HL "input_layernorm.weight"},             \
     {REFIT_DIM_HIDDEN}, REFIT_DIM_NONE, {HF_KEEP(false), VL_KEEP(false)}}
#define E_QKV_WEIGHT                                                                    \
    {ML "self_attention.linear_qkv.weight", REFIT_ROLE_QKV_COLUMN, REFIT_HOLD_QKV,      \
     REFIT_SCOPE_LAYER, 0,                                                              \
     {HL "self_attn.q_proj.weight", HL "self_attn.k_proj.weight",                       \
      HL "self_attn.v_proj.weight"},                                                    \
     {REFIT_DIM_Q, REFIT_DIM_KV, REFIT_DIM_KV}, REFIT_DIM_HIDDEN,                       \
     {HF_KEEP(true),                                                                    \
      {HL "self_attn.qkv_proj.weight", REFIT_FUSE_CONCAT, REFIT_DTYPE_INVALID, true}}}
#define E_QKV_BIAS                                                                      \
    {ML "self_attention.linear_qkv.bias", REFIT_ROLE_QKV_COLUMN, REFIT_HOLD_QKV,        \
     REFIT_SCOPE_LAYER, REFIT_REQ_ATTN_BIAS,                                            \
     {HL "self_attn.q_proj.bias", HL "self_attn.k_proj.bias", HL "self_attn.v_proj.bias"}, \
     {REFIT_DIM_Q, REFIT_DIM_KV, REFIT_DIM_KV}, REFIT_DIM_NONE,                         \
     {HF_KEEP(false),                                                                   \
      {HL "self_attn.qkv_proj.bias", REFIT_FUSE_CONCAT, REFIT_DTYPE_INVALID, false}}}
#define E_Q_NORM                                                                        \
    {ML "self_attention.q_layernorm.weight", REFIT_ROLE_REPLICATED, REFIT_HOLD_WHOLE,   \
     REFIT_SCOPE_LAYER, REFIT_REQ_QK_NORM, {HL "self_attn.q_norm.weight"},              \
     {REFIT_DIM_HEAD}, REFIT_DIM_NONE, {HF_KEEP(false), VL_KEEP(false)}}
#define E_K_NORM                                                                        \
    {ML "self_attention.k_layernorm.weight", REFIT_ROLE_REPLICATED, REFIT_HOLD_WHOLE,   \
     REFIT_SCOPE_LAYER, REFIT_REQ_QK_NORM, {HL "self_attn.k_norm.weight"},              \
     {REFIT_DIM_HEAD}, REFIT_DIM_NONE, {HF_KEEP(false), VL_KEEP(false)}}
#define E_O_PROJ                                                                        \
    {ML "self_attention.linear_proj.weight", REFIT_ROLE_ROW, REFIT_HOLD_WHOLE,          \
     REFIT_SCOPE_LAYER, 0, {HL "self_attn.o_proj.weight"}, {REFIT_DIM_HIDDEN},          \
     REFIT_DIM_Q, {HF_KEEP(true), VL_KEEP(true)}}

/* Dense MLP layers: the post-attention norm is fused into linear_fc1. */
#define E_DENSE_NORM                                                                    \
    {ML "mlp.linear_fc1.layer_norm_weight", REFIT_ROLE_REPLICATED, REFIT_HOLD_WHOLE,    \
     REFIT_SCOPE_DENSE, 0, {HL "post_attention_layernorm.weight"}, {REFIT_DIM_HIDDEN},  \
     REFIT_DIM_NONE, {HF_KEEP(false), VL_KEEP(false)}}
#define E_DENSE_FC1                                                                     \
    {ML "mlp.linear_fc1.weight", REFIT_ROLE_GATED_COLUMN, REFIT_HOLD_GATE_UP,           \
     REFIT_SCOPE_DENSE, 0, {HL "mlp.gate_proj.weight", HL "mlp.up_proj.weight"},        \
     {REFIT_DIM_INTER, REFIT_DIM_INTER}, REFIT_DIM_HIDDEN,                              \
     {HF_KEEP(true), {HL "mlp.gate_up_proj.weight", REFIT_FUSE_CONCAT, REFIT_DTYPE_INVALID, true}}}
#define E_DENSE_FC2                                                                     \
    {ML "mlp.linear_fc2.weight", REFIT_ROLE_ROW, REFIT_HOLD_WHOLE, REFIT_SCOPE_DENSE, 0, \
     {HL "mlp.down_proj.weight"}, {REFIT_DIM_HIDDEN}, REFIT_DIM_INTER,                  \
     {HF_KEEP(true), VL_KEEP(true)}}

/* MoE layers: a separate pre-MLP norm, a router, routed experts. */
#define E_MOE_NORM                                                                      \
    {ML "pre_mlp_layernorm.weight", REFIT_ROLE_REPLICATED, REFIT_HOLD_WHOLE,            \
     REFIT_SCOPE_MOE, 0, {HL "post_attention_layernorm.weight"}, {REFIT_DIM_HIDDEN},    \
     REFIT_DIM_NONE, {HF_KEEP(false), VL_KEEP(false)}}
/* router_dtype: the vLLM dtype of the router weight (GLM keeps it fp32). */
#define E_ROUTER(router_dtype)                                                          \
    {ML "mlp.router.weight", REFIT_ROLE_REPLICATED, REFIT_HOLD_WHOLE, REFIT_SCOPE_MOE,  \
     0, {HL "mlp.gate.weight"}, {REFIT_DIM_EXPERTS}, REFIT_DIM_HIDDEN,                  \
     {HF_KEEP(false), {NULL, REFIT_FUSE_NONE, router_dtype, false}}}
#define E_EXPERT_FC1                                                                    \
    {ML "mlp.experts.linear_fc1.weight{k}", REFIT_ROLE_EXPERT_COLUMN, REFIT_HOLD_GATE_UP, \
     REFIT_SCOPE_MOE, 0,                                                                \
     {HL "mlp.experts.{e}.gate_proj.weight", HL "mlp.experts.{e}.up_proj.weight"},      \
     {REFIT_DIM_MOE_INTER, REFIT_DIM_MOE_INTER}, REFIT_DIM_HIDDEN,                      \
     {HF_KEEP(true), {HL "mlp.experts.w13_weight", REFIT_FUSE_STACK, REFIT_DTYPE_INVALID, true}}}
#define E_EXPERT_FC2                                                                    \
    {ML "mlp.experts.linear_fc2.weight{k}", REFIT_ROLE_EXPERT_ROW, REFIT_HOLD_WHOLE,    \
     REFIT_SCOPE_MOE, 0, {HL "mlp.experts.{e}.down_proj.weight"}, {REFIT_DIM_HIDDEN},   \
     REFIT_DIM_MOE_INTER,                                                               \
     {HF_KEEP(true), {HL "mlp.experts.w2_weight", REFIT_FUSE_STACK, REFIT_DTYPE_INVALID, true}}}

#endif
