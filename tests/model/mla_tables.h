/* mla_tables.h — the weight layouts of the MLA models (DeepSeek-V3 and
 * Kimi-K2: model_type deepseek_v3 / kimi_k2; GLM-5: glm_moe_dsa) as test
 * data, read from the upstream sources below and from nothing in refit: the
 * HF checkpoint names and shapes, which tensors DeepSeek's FP8 release holds
 * in e4m3, Megatron-Core's names and tensor-parallel rules, and the fused
 * parameters of vLLM, SGLang and transformers >= 5.  Each row names its
 * source ([TAG] below, file and function).  docs/models.md ("MLA models")
 * says the same in prose.
 *
 * Sources (the version read):
 *  [TF-DS3]  huggingface/transformers src/transformers/models/deepseek_v3/
 *            modeling_deepseek_v3.py @00b676f8 (DeepseekV3Attention.__init__,
 *            DeepseekV3MLP, DeepseekV3TopkRouter, DeepseekV3MoE, DeepseekV3Model)
 *  [TF-GLM5] .../glm_moe_dsa/modeling_glm_moe_dsa.py @00371f38 (GlmMoeDsaIndexer,
 *            GlmMoeDsaAttention, GlmMoeDsaNaiveMoe, GlmMoeDsaDecoderLayer,
 *            GlmMoeDsaPreTrainedModel) and configuration_glm_moe_dsa.py @008e5743
 *            (mlp_layer_types, indexer_types)
 *  [TF-CONV] .../conversion_mapping.py @000c33fd (_build_checkpoint_conversion_mapping:
 *            "qwen2_moe", aliased by deepseek_v3; later versions alias glm_moe_dsa)
 *  [DS-W]    deepseek-ai/DeepSeek-V3 README_WEIGHTS.md, inference/model.py (Linear,
 *            Gate, Transformer.__init__), inference/convert.py (mapping),
 *            inference/kernel.py (weight_dequant) @9b4e9788
 *  [DS-R1]   a per-tensor listing of the deepseek-ai/DeepSeek-R1 FP8 checkpoint (the
 *            DeepSeek-V3 architecture): 91,991 tensors, 684,531,386,000 elements
 *  [MC-MLA]  NVIDIA/Megatron-LM megatron/core/transformer/multi_latent_attention.py
 *            @d98e8a64 (MLASelfAttention.__init__, qkv_up_proj_and_rope_apply),
 *            models/gpt/gpt_layer_specs.py (the MLA branch of
 *            get_gpt_layer_with_transformer_engine_submodules)
 *  [MC-DSA]  .../experimental_attention_variant/dsa.py (DSAIndexer.__init__),
 *            models/gpt/experimental_attention_variant_module_specs.py
 *            (get_dsa_module_spec_for_backend) @d98e8a64
 *  [MC-MTP]  .../transformer/multi_token_prediction.py (MultiTokenPredictionLayer) @d98e8a64
 *  [MB-DS]   NVIDIA-NeMo/Megatron-Bridge src/megatron/bridge/models/deepseek/common.py
 *            (get_common_mapping_list), deepseek_v3_bridge.py, kimi/kimi_bridge.py
 *            (provider_bridge) @067f987d
 *  [MB-GLM5] .../models/glm_moe_dsa/glm5_bridge.py (mapping_registry, provider_bridge),
 *            examples/model_verification_cards/glm5/card.yaml @067f987d
 *  [VL-DS2]  vllm-project/vllm vllm/model_executor/models/deepseek_v2.py @002d6073
 *            (DeepseekV2MLAAttention.__init__, Indexer.__init__, DeepseekV2MoE.__init__,
 *            DeepseekV2Model.load_weights, GlmMoeDsaForCausalLM)
 *  [VL-MTP]  .../models/deepseek_mtp.py @03356f8c (DeepSeekMTP.load_weights)
 *  [VL-FP8]  .../quantization/utils/fp8_utils.py @007d5005 (validate_fp8_block_shape);
 *            quantization/fp8.py (Fp8MoEMethod.create_weights: w13/w2_weight_scale_inv)
 *  [SG-DS2]  sgl-project/sglang python/sglang/srt/models/deepseek_v2.py
 *            (DeepseekV2AttentionMLA.__init__), deepseek_common/deepseek_weight_loader.py
 *            @0201c04e (do_load_weights, post_load_weights, _load_fused_indexer_wk),
 *            models/glm4_moe.py (GlmMoeDsaForCausalLM(DeepseekV2ForCausalLM))
 */
#ifndef REFIT_TEST_MODEL_MLA_TABLES_H
#define REFIT_TEST_MODEL_MLA_TABLES_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "refit/dtype.h"

/* ------------------------------------------------------------------ */
/* Configuration symbols (config.json fields) and shape expressions */

enum mla_sym {
    Y_NONE = 0,
    Y_K,    /* hidden_size */
    Y_V,    /* vocab_size */
    Y_H,    /* num_attention_heads */
    Y_QR,   /* q_lora_rank (null: no q LoRA) */
    Y_KR,   /* kv_lora_rank */
    Y_NOPE, /* qk_nope_head_dim */
    Y_ROPE, /* qk_rope_head_dim */
    Y_VH,   /* v_head_dim */
    Y_I,    /* intermediate_size (dense MLP) */
    Y_IM,   /* moe_intermediate_size */
    Y_NS,   /* n_shared_experts */
    Y_E,    /* n_routed_experts */
    Y_IH,   /* index_n_heads (GLM-5) */
    Y_ID    /* index_head_dim (GLM-5) */
};

/* k * m * (a + b): m NONE counts 1, b NONE counts 0. */
struct mla_x {
    int8_t k;
    uint8_t m, a, b;
};
#define X1(a) {1, Y_NONE, a, Y_NONE}
#define XMUL(m, a) {1, m, a, Y_NONE}
#define XSUM(a, b) {1, Y_NONE, a, b}
#define XMS(m, a, b) {1, m, a, b}
#define XK(k, a) {k, Y_NONE, a, Y_NONE}

/* The values of the symbols, filled from a config. */
struct mla_cfg {
    const char *model_type;
    int64_t layers, mtp; /* num_hidden_layers, num_nextn_predict_layers */
    int64_t v[Y_ID + 1];
    int64_t first_dense;      /* first_k_dense_replace */
    const char *layer_types;  /* "d"/"s" per layer (mlp_layer_types); NULL: first_dense */
    bool indexer;             /* glm_moe_dsa: a DSA indexer in every layer */
    bool mtp_copies;          /* the MTP layer holds embed_tokens and shared_head.head */
};

static inline int64_t mla_eval(const struct mla_cfg *c, struct mla_x x)
{
    int64_t m = x.m ? c->v[x.m] : 1;
    int64_t s = c->v[x.a] + (x.b ? c->v[x.b] : 0);
    return (x.k ? x.k : 1) * m * s;
}

/* Where a row exists. */
enum mla_scope {
    M_GLOBAL = 1, /* once */
    M_LAYER,      /* every transformer layer, the MTP layers' included */
    M_DENSE,      /* layers with a dense MLP */
    M_MOE,        /* layers with experts (the MTP layers are MoE layers) */
    M_EXPERT,     /* once per routed expert {e} of a MoE layer */
    M_MTP         /* only the MTP layers L + i */
};

/* Rows present only with a feature. */
enum {
    W_QLORA = 1u << 0,   /* q_lora_rank set */
    W_NOQLORA = 1u << 1, /* q_lora_rank null */
    W_INDEXER = 1u << 2, /* GLM-5's DSA indexer */
    W_MTPCOPY = 1u << 3, /* DeepSeek's MTP layer carries copies of embed and head */
    W_NOINDEXER = 1u << 4 /* no indexer (Megatron's TE MLA spec rather than the DSA spec) */
};

/* Layer kinds: dense before first_k_dense_replace, or as mlp_layer_types
 * says ("dense"/"sparse", [TF-GLM5] GlmMoeDsaDecoderLayer); the MTP layers
 * after num_hidden_layers are MoE layers ([DS-R1]: experts in layers 3-61;
 * [MB-GLM5] card: 787 of layer 78's 791 tensors are a MoE layer's). */
static inline bool mla_is_dense(const struct mla_cfg *c, int64_t l)
{
    if (l >= c->layers)
        return false;
    if (c->layer_types)
        return c->layer_types[l] == 'd';
    return l < c->first_dense;
}

static inline bool mla_when(const struct mla_cfg *c, unsigned w)
{
    if ((w & W_QLORA) && !c->v[Y_QR])
        return false;
    if ((w & W_NOQLORA) && c->v[Y_QR])
        return false;
    if ((w & W_INDEXER) && !c->indexer)
        return false;
    if ((w & W_MTPCOPY) && !c->mtp_copies)
        return false;
    if ((w & W_NOINDEXER) && c->indexer)
        return false;
    return true;
}

/* Expands {L}, {e}, {k}, {i} in a name pattern. */
static inline void mla_name(char *out, size_t n, const char *pat, long layer, long expert)
{
    size_t o = 0;
    for (const char *p = pat; *p && o + 1 < n;) {
        if (p[0] == '{' && p[1] && p[2] == '}') {
            long v = (p[1] == 'L' || p[1] == 'i') ? layer : expert;
            int w = snprintf(out + o, n - o, "%ld", v);
            o += w > 0 ? (size_t)w : 0;
            p += 3;
        } else {
            out[o++] = *p++;
        }
    }
    out[o < n ? o : n - 1] = '\0';
}

/* ------------------------------------------------------------------ */
/* 1. The HF checkpoint */

struct mla_hf_row {
    const char *name;
    uint8_t scope, when, ndim;
    bool fp8; /* e4m3 + <name>_scale_inv in DeepSeek's FP8 release */
    struct mla_x dim[2];
    enum refit_dtype dtype; /* in a bf16 checkpoint */
    const char *src;
};

#define HL "model.layers.{L}."
#define B16 REFIT_DTYPE_BF16
static const struct mla_hf_row mla_hf[] = {
    {"model.embed_tokens.weight", M_GLOBAL, 0, 2, false, {X1(Y_V), X1(Y_K)}, B16,
     "[TF-DS3] DeepseekV3Model.__init__; [DS-R1] bf16"},
    {"model.norm.weight", M_GLOBAL, 0, 1, false, {X1(Y_K)}, B16, "[TF-DS3] DeepseekV3Model.__init__"},
    /* all three release untied embeddings (tie_word_embeddings false) */
    {"lm_head.weight", M_GLOBAL, 0, 2, false, {X1(Y_V), X1(Y_K)}, B16,
     "[TF-DS3] DeepseekV3ForCausalLM; [DS-W] Transformer.head in the default dtype"},
    {HL "input_layernorm.weight", M_LAYER, 0, 1, false, {X1(Y_K)}, B16, "[TF-DS3] DeepseekV3DecoderLayer"},
    {HL "post_attention_layernorm.weight", M_LAYER, 0, 1, false, {X1(Y_K)}, B16,
     "[TF-DS3] DeepseekV3DecoderLayer"},
    {HL "self_attn.q_a_proj.weight", M_LAYER, W_QLORA, 2, true, {X1(Y_QR), X1(Y_K)}, B16,
     "[TF-DS3] DeepseekV3Attention.__init__ (q_lora_rank set); [DS-W] wq_a is a Linear"},
    {HL "self_attn.q_a_layernorm.weight", M_LAYER, W_QLORA, 1, false, {X1(Y_QR)}, B16,
     "[TF-DS3] DeepseekV3Attention.__init__ (RMSNorm)"},
    /* per head [q_nope (qk_nope_head_dim); q_pe (qk_rope_head_dim)] rows:
     * view(-1, qk_head_dim) then split([nope, rope]) */
    {HL "self_attn.q_b_proj.weight", M_LAYER, W_QLORA, 2, true, {XMS(Y_H, Y_NOPE, Y_ROPE), X1(Y_QR)}, B16,
     "[TF-DS3] DeepseekV3Attention.__init__/forward"},
    {HL "self_attn.q_proj.weight", M_LAYER, W_NOQLORA, 2, true, {XMS(Y_H, Y_NOPE, Y_ROPE), X1(Y_K)}, B16,
     "[TF-DS3] DeepseekV3Attention.__init__ (q_lora_rank None)"},
    /* [compressed kv (kv_lora_rank); k_pe (qk_rope_head_dim)] */
    {HL "self_attn.kv_a_proj_with_mqa.weight", M_LAYER, 0, 2, true, {XSUM(Y_KR, Y_ROPE), X1(Y_K)}, B16,
     "[TF-DS3] DeepseekV3Attention.__init__; [DS-R1] [576, 7168] e4m3, scale [5, 56]"},
    {HL "self_attn.kv_a_layernorm.weight", M_LAYER, 0, 1, false, {X1(Y_KR)}, B16,
     "[TF-DS3] DeepseekV3Attention.__init__"},
    /* per head [k_nope (qk_nope_head_dim); v (v_head_dim)] rows:
     * view(..., -1, nope + v) then split([nope, v]) */
    {HL "self_attn.kv_b_proj.weight", M_LAYER, 0, 2, true, {XMS(Y_H, Y_NOPE, Y_VH), X1(Y_KR)}, B16,
     "[TF-DS3] DeepseekV3Attention.__init__/forward"},
    {HL "self_attn.o_proj.weight", M_LAYER, 0, 2, true, {X1(Y_K), XMUL(Y_H, Y_VH)}, B16,
     "[TF-DS3] DeepseekV3Attention.__init__"},
    /* GLM-5's DSA indexer: in every layer of the checkpoint, also where
     * indexer_types says "shared" ([VL-DS2] load_weights: "the checkpoint
     * ships indexer weights for all of them") */
    {HL "self_attn.indexer.wq_b.weight", M_LAYER, W_INDEXER, 2, true, {XMUL(Y_IH, Y_ID), X1(Y_QR)}, B16,
     "[TF-GLM5] GlmMoeDsaIndexer.__init__"},
    {HL "self_attn.indexer.wk.weight", M_LAYER, W_INDEXER, 2, true, {X1(Y_ID), X1(Y_K)}, B16,
     "[TF-GLM5] GlmMoeDsaIndexer.__init__; e4m3 in FP8 releases: [VL-DS2] _try_load_fp8_indexer_wk"},
    {HL "self_attn.indexer.k_norm.weight", M_LAYER, W_INDEXER, 1, false, {X1(Y_ID)}, B16,
     "[TF-GLM5] GlmMoeDsaIndexer.__init__ (nn.LayerNorm)"},
    {HL "self_attn.indexer.k_norm.bias", M_LAYER, W_INDEXER, 1, false, {X1(Y_ID)}, B16,
     "[TF-GLM5] GlmMoeDsaIndexer.__init__ (nn.LayerNorm)"},
    {HL "self_attn.indexer.weights_proj.weight", M_LAYER, W_INDEXER, 2, false, {X1(Y_IH), X1(Y_K)}, B16,
     "[TF-GLM5] GlmMoeDsaIndexer.__init__; bf16 in FP8 releases: _keep_in_fp32_modules"},
    {HL "mlp.gate_proj.weight", M_DENSE, 0, 2, true, {X1(Y_I), X1(Y_K)}, B16, "[TF-DS3] DeepseekV3MLP"},
    {HL "mlp.up_proj.weight", M_DENSE, 0, 2, true, {X1(Y_I), X1(Y_K)}, B16, "[TF-DS3] DeepseekV3MLP"},
    {HL "mlp.down_proj.weight", M_DENSE, 0, 2, true, {X1(Y_K), X1(Y_I)}, B16, "[TF-DS3] DeepseekV3MLP"},
    {HL "mlp.gate.weight", M_MOE, 0, 2, false, {X1(Y_E), X1(Y_K)}, B16,
     "[TF-DS3] DeepseekV3TopkRouter; [DS-W] Gate.weight is not a Linear; [DS-R1] bf16"},
    {HL "mlp.gate.e_score_correction_bias", M_MOE, 0, 1, false, {X1(Y_E)}, REFIT_DTYPE_F32,
     "[TF-DS3] DeepseekV3TopkRouter buffer; [DS-W] Gate.bias float32; [DS-R1]; [MB-GLM5] card bytes"},
    /* n_shared_experts fused into one MLP of moe_intermediate_size * n */
    {HL "mlp.shared_experts.gate_proj.weight", M_MOE, 0, 2, true, {XMUL(Y_IM, Y_NS), X1(Y_K)}, B16,
     "[TF-DS3] DeepseekV3MoE.__init__"},
    {HL "mlp.shared_experts.up_proj.weight", M_MOE, 0, 2, true, {XMUL(Y_IM, Y_NS), X1(Y_K)}, B16,
     "[TF-DS3] DeepseekV3MoE.__init__"},
    {HL "mlp.shared_experts.down_proj.weight", M_MOE, 0, 2, true, {X1(Y_K), XMUL(Y_IM, Y_NS)}, B16,
     "[TF-DS3] DeepseekV3MoE.__init__"},
    {HL "mlp.experts.{e}.gate_proj.weight", M_EXPERT, 0, 2, true, {X1(Y_IM), X1(Y_K)}, B16,
     "[TF-DS3] DeepseekV3MoE.experts (ModuleList)"},
    {HL "mlp.experts.{e}.up_proj.weight", M_EXPERT, 0, 2, true, {X1(Y_IM), X1(Y_K)}, B16,
     "[TF-DS3] DeepseekV3MoE.experts"},
    {HL "mlp.experts.{e}.down_proj.weight", M_EXPERT, 0, 2, true, {X1(Y_K), X1(Y_IM)}, B16,
     "[TF-DS3] DeepseekV3MoE.experts"},
    /* the MTP module: model.layers.<num_hidden_layers + i> */
    {HL "enorm.weight", M_MTP, 0, 1, false, {X1(Y_K)}, B16, "[DS-W] README_WEIGHTS MTP; [VL-MTP]"},
    {HL "hnorm.weight", M_MTP, 0, 1, false, {X1(Y_K)}, B16, "[DS-W] README_WEIGHTS MTP; [VL-MTP]"},
    /* input cat([enorm(embed), hnorm(hidden)]) */
    {HL "eh_proj.weight", M_MTP, 0, 2, false, {X1(Y_K), XK(2, Y_K)}, B16,
     "[VL-MTP] nn.Linear(2K, K); [DS-R1] bf16 [7168, 14336]"},
    {HL "shared_head.norm.weight", M_MTP, 0, 1, false, {X1(Y_K)}, B16, "[VL-MTP] SharedHead.norm"},
    {HL "embed_tokens.weight", M_MTP, W_MTPCOPY, 2, false, {X1(Y_V), X1(Y_K)}, B16,
     "[DS-R1] model.layers.61.embed_tokens; absent in GLM-5 ([MB-GLM5] card: 791 = 4 + 787)"},
    {HL "shared_head.head.weight", M_MTP, W_MTPCOPY, 2, false, {X1(Y_V), X1(Y_K)}, B16,
     "[DS-R1] model.layers.61.shared_head.head; [VL-MTP] SharedHead.head"},
};
#define MLA_N_HF (sizeof(mla_hf) / sizeof(mla_hf[0]))

/* FP8 format ([DS-W] README_WEIGHTS "FP8 Weight Documentation", model.py
 * Linear): float8_e4m3fn, quantization_config.weight_block_size [128, 128],
 * <name>_scale_inv float32 [ceil(N/128), ceil(K/128)] holding the
 * dequantization multiplier; partial edge blocks are zero-padded.
 * Dequantization ([DS-W] kernel.py weight_dequant, fp8_cast_bf16.py; the same
 * in [MB-DS] quantization_utils.dequantize_fp8_blockwise):
 *     bf16 = round_nearest_even_bf16(float32(e4m3) * s)      (fp32 product) */
#define MLA_FP8_BLOCK 128

/* ------------------------------------------------------------------ */
/* 2. Tensor-parallel rules */

enum mla_tp {
    P_REPL = 1,    /* every rank holds the whole tensor */
    P_VOCAB,       /* rows, vocabulary padded (Megatron: make_vocab_size_divisible_by * tp; vLLM: 64) */
    P_COL,         /* rows [r, r+1) * N / tp: whole heads for the MLA up projections */
    P_ROW,         /* columns [r, r+1) * K / tp */
    P_GATED,       /* [gate_r; up_r] */
    P_EXPERT_GATED,/* one expert's [gate_r; up_r] over expert-TP */
    P_EXPERT_ROW   /* one expert's down, columns over expert-TP */
};

/* ------------------------------------------------------------------ */
/* 3. Megatron-Core (trainer) names, with the bridges' HF counterparts.
 * MLA keeps HF's per-head layouts: linear_q_up_proj output viewed as
 * [heads, qk_head_dim + qk_pos_emb_head_dim] split [nope, rope], and
 * linear_kv_up_proj as [heads, qk_head_dim + v_head_dim] split [k_nope, v]
 * ([MC-MLA] qkv_up_proj_and_rope_apply) — the same per-head interleave as
 * kv_b_proj, so the bridges map both with AutoMapping (no permutation) and a
 * column split over TP hands each rank whole heads.  Megatron's qk_head_dim
 * is HF's qk_nope_head_dim, qk_pos_emb_head_dim HF's qk_rope_head_dim. */

struct mla_mcore_row {
    const char *name;
    uint8_t scope, when, tp;
    const char *part[2];
    const char *src;
};

#define MLY "decoder.layers.{L}."
static const struct mla_mcore_row mla_mcore[] = {
    {"embedding.word_embeddings.weight", M_GLOBAL, 0, P_VOCAB, {"model.embed_tokens.weight"},
     "[MB-DS] get_common_mapping_list; vocab padded to make_vocab_size_divisible_by (1280) * tp"},
    {"output_layer.weight", M_GLOBAL, 0, P_VOCAB, {"lm_head.weight"}, "[MB-DS]"},
    {"decoder.final_layernorm.weight", M_GLOBAL, 0, P_REPL, {"model.norm.weight"}, "[MB-DS]"},
    /* the MLA layer spec keeps a separate input norm ([MC-MLA] TE spec
     * input_layernorm=backend.layer_norm) */
    {MLY "input_layernorm.weight", M_LAYER, 0, P_REPL, {HL "input_layernorm.weight"}, "[MB-DS]"},
    /* TELinear parallel_mode "duplicated": replicated down projections */
    {MLY "self_attention.linear_q_down_proj.weight", M_LAYER, W_QLORA, P_REPL, {HL "self_attn.q_a_proj.weight"},
     "[MC-MLA] MLASelfAttention.__init__ (duplicated); [MB-DS]"},
    /* TELayerNormColumnParallelLinear: the q_a norm fused into q_up (the TE
     * MLA spec DeepSeek-V3 and Kimi-K2 train with) ... */
    {MLY "self_attention.linear_q_up_proj.layer_norm_weight", M_LAYER, W_QLORA | W_NOINDEXER, P_REPL,
     {HL "self_attn.q_a_layernorm.weight"}, "[MC-MLA] TE spec, qk_layernorm; [MB-DS]"},
    /* ... unfused in the DSA spec GLM-5 trains with: the indexer reads the
     * normalized q ([MC-DSA] get_dsa_module_spec_for_backend) */
    {MLY "self_attention.q_layernorm.weight", M_LAYER, W_QLORA | W_INDEXER, P_REPL,
     {HL "self_attn.q_a_layernorm.weight"}, "[MC-DSA] q_layernorm=qk_norm; [MB-GLM5]"},
    {MLY "self_attention.linear_q_up_proj.weight", M_LAYER, W_QLORA, P_COL, {HL "self_attn.q_b_proj.weight"},
     "[MC-MLA] column-parallel, gather_output False; [MB-DS]"},
    {MLY "self_attention.linear_q_proj.weight", M_LAYER, W_NOQLORA, P_COL, {HL "self_attn.q_proj.weight"},
     "[MC-MLA] linear_q_proj column-parallel; [MB-DS]"},
    {MLY "self_attention.linear_kv_down_proj.weight", M_LAYER, 0, P_REPL,
     {HL "self_attn.kv_a_proj_with_mqa.weight"}, "[MC-MLA] (duplicated); [MB-DS]"},
    {MLY "self_attention.linear_kv_up_proj.layer_norm_weight", M_LAYER, W_NOINDEXER, P_REPL,
     {HL "self_attn.kv_a_layernorm.weight"}, "[MC-MLA] TE spec; [MB-DS]"},
    {MLY "self_attention.kv_layernorm.weight", M_LAYER, W_INDEXER, P_REPL, {HL "self_attn.kv_a_layernorm.weight"},
     "[MC-DSA] kv_layernorm=qk_norm; [MB-GLM5]"},
    {MLY "self_attention.linear_kv_up_proj.weight", M_LAYER, 0, P_COL, {HL "self_attn.kv_b_proj.weight"},
     "[MC-MLA] column-parallel; [MB-DS] AutoMapping"},
    {MLY "self_attention.linear_proj.weight", M_LAYER, 0, P_ROW, {HL "self_attn.o_proj.weight"},
     "[MC-MLA] row_parallel_linear; [MB-DS]"},
    /* DSA indexer: every projection duplicated over TP ([MC-DSA] parallel_mode="duplicated") */
    {MLY "self_attention.core_attention.indexer.linear_wq_b.weight", M_LAYER, W_INDEXER, P_REPL,
     {HL "self_attn.indexer.wq_b.weight"}, "[MC-DSA] DSAIndexer.__init__; [MB-GLM5]"},
    {MLY "self_attention.core_attention.indexer.linear_wk.weight", M_LAYER, W_INDEXER, P_REPL,
     {HL "self_attn.indexer.wk.weight"}, "[MC-DSA]; [MB-GLM5]"},
    {MLY "self_attention.core_attention.indexer.k_norm.weight", M_LAYER, W_INDEXER, P_REPL,
     {HL "self_attn.indexer.k_norm.weight"}, "[MC-DSA] LayerNorm; [MB-GLM5]"},
    {MLY "self_attention.core_attention.indexer.k_norm.bias", M_LAYER, W_INDEXER, P_REPL,
     {HL "self_attn.indexer.k_norm.bias"}, "[MC-DSA]; [MB-GLM5]"},
    {MLY "self_attention.core_attention.indexer.linear_weights_proj.weight", M_LAYER, W_INDEXER, P_REPL,
     {HL "self_attn.indexer.weights_proj.weight"}, "[MC-DSA]; [MB-GLM5]"},
    /* the post-attention norm: fused into linear_fc1 on dense layers,
     * pre_mlp_layernorm on MoE layers */
    {MLY "mlp.linear_fc1.layer_norm_weight", M_DENSE, 0, P_REPL, {HL "post_attention_layernorm.weight"},
     "[MB-DS] (b) dense layer"},
    {MLY "mlp.linear_fc1.weight", M_DENSE, 0, P_GATED, {HL "mlp.gate_proj.weight", HL "mlp.up_proj.weight"},
     "[MB-DS] GatedMLPMapping"},
    {MLY "mlp.linear_fc2.weight", M_DENSE, 0, P_ROW, {HL "mlp.down_proj.weight"}, "[MB-DS]"},
    {MLY "pre_mlp_layernorm.weight", M_MOE, 0, P_REPL, {HL "post_attention_layernorm.weight"},
     "[MB-DS] (a) MoE layer"},
    {MLY "mlp.router.weight", M_MOE, 0, P_REPL, {HL "mlp.gate.weight"}, "[MB-DS]"},
    {MLY "mlp.router.expert_bias", M_MOE, 0, P_REPL, {HL "mlp.gate.e_score_correction_bias"},
     "[MB-DS]; fp32: moe_router_dtype fp32, moe_router_enable_expert_bias"},
    {MLY "mlp.shared_experts.linear_fc1.weight", M_MOE, 0, P_GATED,
     {HL "mlp.shared_experts.gate_proj.weight", HL "mlp.shared_experts.up_proj.weight"}, "[MB-DS] GatedMLPMapping"},
    {MLY "mlp.shared_experts.linear_fc2.weight", M_MOE, 0, P_ROW, {HL "mlp.shared_experts.down_proj.weight"},
     "[MB-DS]"},
    /* TEGroupedMLP; SequentialMLP spells mlp.experts.local_experts.{k}.linear_fc1.weight */
    {MLY "mlp.experts.linear_fc1.weight{k}", M_EXPERT, 0, P_EXPERT_GATED,
     {HL "mlp.experts.{e}.gate_proj.weight", HL "mlp.experts.{e}.up_proj.weight"}, "[MB-DS] GatedMLPMapping"},
    {MLY "mlp.experts.linear_fc2.weight{k}", M_EXPERT, 0, P_EXPERT_ROW, {HL "mlp.experts.{e}.down_proj.weight"},
     "[MB-DS]"},
    /* MTP layer i (HF layer num_hidden_layers + i); its transformer layer's
     * tensors are the decoder rows above with MLA_MCORE_MTP_LAYER in place of
     * "decoder.layers.{L}." ([MB-DS] / [MB-GLM5] mapping loops) */
    {"mtp.layers.{i}.enorm.weight", M_MTP, 0, P_REPL, {HL "enorm.weight"}, "[MB-DS]; [MC-MTP]"},
    {"mtp.layers.{i}.hnorm.weight", M_MTP, 0, P_REPL, {HL "hnorm.weight"}, "[MB-DS]; [MC-MTP]"},
    {"mtp.layers.{i}.eh_proj.weight", M_MTP, 0, P_COL, {HL "eh_proj.weight"},
     "[MC-MTP] eh_proj column-parallel (gather_output False); [MB-DS]"},
    {"mtp.layers.{i}.final_layernorm.weight", M_MTP, 0, P_REPL, {HL "shared_head.norm.weight"}, "[MB-DS]"},
};
#define MLA_N_MCORE (sizeof(mla_mcore) / sizeof(mla_mcore[0]))
/* "transformer_layer" in Megatron-Core before the rename; [MB-GLM5] maps both */
#define MLA_MCORE_MTP_LAYER "mtp.layers.{i}.mtp_model_layer."
/* The bridges pad the vocabulary to a multiple of 1280 * tp
 * (provider.make_vocab_size_divisible_by = 1280 in [MB-DS], [MB-GLM5]). */
#define MLA_MCORE_VOCAB_DIVISIBLE 1280

/* ------------------------------------------------------------------ */
/* 4. Inference targets: vLLM, SGLang and transformers >= 5 parameters */

enum mla_target { T_VLLM = 1u << 0, T_SGLANG = 1u << 1, T_TF5 = 1u << 2 };
enum mla_fuse {
    F_NONE = 0, /* part[0], its own name */
    F_CAT,      /* rows of the parts' rank slices concatenated */
    F_STACK     /* [E_local, ...]: slot s holds expert s (+ ep_rank * E/ep), parts concatenated on rows */
};

struct mla_dst_row {
    const char *name;
    uint8_t targets, scope, when, fuse, tp;
    const char *part[2];
    enum refit_dtype dtype; /* INVALID: the source dtype */
    bool fp8;               /* block-FP8 in an FP8 deployment */
    const char *src;
};

#define VS (T_VLLM | T_SGLANG)
#define KEEP REFIT_DTYPE_INVALID
static const struct mla_dst_row mla_dst[] = {
    {"model.embed_tokens.weight", VS, M_GLOBAL, 0, F_NONE, P_VOCAB, {"model.embed_tokens.weight"}, KEEP, false,
     "[VL-DS2] VocabParallelEmbedding (padded to 64)"},
    {"lm_head.weight", VS, M_GLOBAL, 0, F_NONE, P_VOCAB, {"lm_head.weight"}, KEEP, false,
     "[VL-DS2] ParallelLMHead"},
    {"model.norm.weight", VS, M_GLOBAL, 0, F_NONE, P_REPL, {"model.norm.weight"}, KEEP, false, "[VL-DS2]"},
    {HL "input_layernorm.weight", VS, M_LAYER, 0, F_NONE, P_REPL, {HL "input_layernorm.weight"}, KEEP, false,
     "[VL-DS2] DeepseekV2DecoderLayer"},
    {HL "post_attention_layernorm.weight", VS, M_LAYER, 0, F_NONE, P_REPL, {HL "post_attention_layernorm.weight"},
     KEEP, false, "[VL-DS2]"},
    /* cat(q_a_proj, kv_a_proj_with_mqa) on rows, not split (disable_tp) */
    {HL "self_attn.fused_qkv_a_proj.weight", T_VLLM, M_LAYER, W_QLORA, F_CAT, P_REPL,
     {HL "self_attn.q_a_proj.weight", HL "self_attn.kv_a_proj_with_mqa.weight"}, KEEP, true,
     "[VL-DS2] DeepSeekV2FusedQkvAProjLinear (MergedColumnParallelLinear, disable_tp); load_weights "
     "mla_params_mapping"},
    {HL "self_attn.fused_qkv_a_proj_with_mqa.weight", T_SGLANG, M_LAYER, W_QLORA, F_CAT, P_REPL,
     {HL "self_attn.q_a_proj.weight", HL "self_attn.kv_a_proj_with_mqa.weight"}, KEEP, true,
     "[SG-DS2] ReplicatedLinear; do_load_weights cat(dim 0)"},
    {HL "self_attn.q_a_layernorm.weight", VS, M_LAYER, W_QLORA, F_NONE, P_REPL, {HL "self_attn.q_a_layernorm.weight"},
     KEEP, false, "[VL-DS2]"},
    {HL "self_attn.q_b_proj.weight", VS, M_LAYER, W_QLORA, F_NONE, P_COL, {HL "self_attn.q_b_proj.weight"}, KEEP,
     true, "[VL-DS2] ColumnParallelLinear; [SG-DS2]"},
    {HL "self_attn.q_proj.weight", VS, M_LAYER, W_NOQLORA, F_NONE, P_COL, {HL "self_attn.q_proj.weight"}, KEEP, true,
     "[VL-DS2] ColumnParallelLinear (q_lora_rank None)"},
    {HL "self_attn.kv_a_proj_with_mqa.weight", VS, M_LAYER, W_NOQLORA, F_NONE, P_REPL,
     {HL "self_attn.kv_a_proj_with_mqa.weight"}, KEEP, true, "[VL-DS2] ReplicatedLinear (no fusion)"},
    {HL "self_attn.kv_a_layernorm.weight", VS, M_LAYER, 0, F_NONE, P_REPL, {HL "self_attn.kv_a_layernorm.weight"},
     KEEP, false, "[VL-DS2]"},
    /* SGLang derives w_kc / w_vc from it after loading (post_load_weights):
     * not parameters refit writes; the engine recomputes them */
    {HL "self_attn.kv_b_proj.weight", VS, M_LAYER, 0, F_NONE, P_COL, {HL "self_attn.kv_b_proj.weight"}, KEEP, true,
     "[VL-DS2] ColumnParallelLinear; [SG-DS2] post_load_weights"},
    {HL "self_attn.o_proj.weight", VS, M_LAYER, 0, F_NONE, P_ROW, {HL "self_attn.o_proj.weight"}, KEEP, true,
     "[VL-DS2] RowParallelLinear"},
    /* the indexer: replicated; present only in layers that build one */
    {HL "self_attn.indexer.wq_b.weight", VS, M_LAYER, W_INDEXER, F_NONE, P_REPL, {HL "self_attn.indexer.wq_b.weight"},
     KEEP, true, "[VL-DS2] Indexer.wq_b ReplicatedLinear(quant_config)"},
    /* bf16 always: quant_config None, an e4m3 wk is dequantized on load */
    {HL "self_attn.indexer.wk_weights_proj.weight", VS, M_LAYER, W_INDEXER, F_CAT, P_REPL,
     {HL "self_attn.indexer.wk.weight", HL "self_attn.indexer.weights_proj.weight"}, REFIT_DTYPE_BF16, false,
     "[VL-DS2] Indexer.wk_weights_proj, indexer_fused_mapping; [SG-DS2] _load_fused_indexer_wk (CUDA)"},
    {HL "self_attn.indexer.k_norm.weight", VS, M_LAYER, W_INDEXER, F_NONE, P_REPL,
     {HL "self_attn.indexer.k_norm.weight"}, KEEP, false, "[VL-DS2] Indexer.k_norm"},
    {HL "self_attn.indexer.k_norm.bias", VS, M_LAYER, W_INDEXER, F_NONE, P_REPL, {HL "self_attn.indexer.k_norm.bias"},
     KEEP, false, "[VL-DS2]"},
    {HL "mlp.gate_up_proj.weight", VS, M_DENSE, 0, F_CAT, P_GATED, {HL "mlp.gate_proj.weight", HL "mlp.up_proj.weight"},
     KEEP, true, "[VL-DS2] DeepseekV2MLP MergedColumnParallelLinear; stacked_params_mapping"},
    {HL "mlp.down_proj.weight", VS, M_DENSE, 0, F_NONE, P_ROW, {HL "mlp.down_proj.weight"}, KEEP, true, "[VL-DS2]"},
    /* GateLinear keeps the model dtype (out_dtype fp32 changes the output only) */
    {HL "mlp.gate.weight", VS, M_MOE, 0, F_NONE, P_REPL, {HL "mlp.gate.weight"}, KEEP, false,
     "[VL-DS2] DeepseekV2MoE GateLinear"},
    /* created only with topk_method == "noaux_tc" */
    {HL "mlp.gate.e_score_correction_bias", VS, M_MOE, 0, F_NONE, P_REPL, {HL "mlp.gate.e_score_correction_bias"},
     REFIT_DTYPE_F32, false, "[VL-DS2] DeepseekV2MoE nn.Parameter float32"},
    {HL "mlp.shared_experts.gate_up_proj.weight", VS, M_MOE, 0, F_CAT, P_GATED,
     {HL "mlp.shared_experts.gate_proj.weight", HL "mlp.shared_experts.up_proj.weight"}, KEEP, true,
     "[VL-DS2] DeepseekV2MoE.shared_experts"},
    {HL "mlp.shared_experts.down_proj.weight", VS, M_MOE, 0, F_NONE, P_ROW, {HL "mlp.shared_experts.down_proj.weight"},
     KEEP, true, "[VL-DS2]"},
    {HL "mlp.experts.w13_weight", VS, M_MOE, 0, F_STACK, P_EXPERT_GATED,
     {HL "mlp.experts.{e}.gate_proj.weight", HL "mlp.experts.{e}.up_proj.weight"}, KEEP, true,
     "[VL-DS2] fused_moe_make_expert_params_mapping (w1 gate, w3 up); [VL-FP8] w13_weight_scale_inv"},
    {HL "mlp.experts.w2_weight", VS, M_MOE, 0, F_STACK, P_EXPERT_ROW, {HL "mlp.experts.{e}.down_proj.weight"}, KEEP,
     true, "[VL-DS2]; [VL-FP8] w2_weight_scale_inv"},
    /* transformers >= 5 loads the per-expert checkpoint names into stacks
     * ([TF-CONV] MergeModulelist(dim=0), Concatenate(dim=1)); no ".weight" */
    {HL "mlp.experts.gate_up_proj", T_TF5, M_MOE, 0, F_STACK, P_REPL,
     {HL "mlp.experts.{e}.gate_proj.weight", HL "mlp.experts.{e}.up_proj.weight"}, KEEP, false,
     "[TF-CONV] qwen2_moe; [TF-GLM5] GlmMoeDsaNaiveMoe [E, 2*Im, K]"},
    {HL "mlp.experts.down_proj", T_TF5, M_MOE, 0, F_STACK, P_REPL, {HL "mlp.experts.{e}.down_proj.weight"}, KEEP,
     false, "[TF-CONV]; [TF-GLM5] GlmMoeDsaNaiveMoe [E, K, Im]"},
};
#define MLA_N_DST (sizeof(mla_dst) / sizeof(mla_dst[0]))
#undef VS
#undef KEEP

/* vLLM's block-FP8 partition rule ([VL-FP8] validate_fp8_block_shape): with
 * tp > 1, a row-parallel layer's input partition and every output partition
 * of a column-parallel layer must be multiples of 128; a merged layer that is
 * not split (fused_qkv_a_proj, disable_tp) needs every part but the last on
 * the grid; ReplicatedLinear is not checked.  Fused MoE: the intermediate
 * partition (Im / tp, or Im with expert parallelism) on the grid
 * (Fp8MoEMethod.create_weights). */
static inline bool mla_fp8_grid(int64_t n)
{
    return n % MLA_FP8_BLOCK == 0;
}

#endif
