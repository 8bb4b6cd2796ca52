/* mla_synth.h — small synthetic checkpoints of the MLA models, written by
 * hand from the upstream modules (transformers' DeepseekV3Attention /
 * DeepseekV3MoE and GlmMoeDsaIndexer, DeepSeek's README_WEIGHTS MTP module
 * and FP8 format; see mla_tables.h for the sources), NOT from the rows of
 * mla_tables.h, so that test_mla_tables.c can hold the two transcriptions
 * against each other, and never from refit's layout code.
 *
 * The configurations cover: q LoRA and none (q_proj), dense-then-MoE,
 * per-rank head counts that are odd (3 heads per rank at tp 2 or 4), two
 * shared experts, an MTP layer with and without DeepSeek's copies of the
 * embedding and head, GLM-5's indexer and mlp_layer_types, and a native-FP8
 * checkpoint (e4m3 + weight_scale_inv) on the 128 grid with edge blocks. */
#ifndef REFIT_TEST_MODEL_MLA_SYNTH_H
#define REFIT_TEST_MODEL_MLA_SYNTH_H

#include "mla_tables.h"
#include "tutil.h"

/* DeepSeek-V3 shaped: q LoRA, layer 0 dense, one MTP layer with copies. */
static const struct mla_cfg MLA_DS __attribute__((unused)) = {
    "deepseek_v3", 3, 1,
    {[Y_K] = 160, [Y_V] = 300, [Y_H] = 4, [Y_QR] = 96, [Y_KR] = 64, [Y_NOPE] = 32, [Y_ROPE] = 16,
     [Y_VH] = 24, [Y_I] = 192, [Y_IM] = 64, [Y_NS] = 1, [Y_E] = 4},
    1, NULL, false, true};
/* No q LoRA (q_proj), 6 heads (3 per rank at tp 2), 2 shared experts,
 * layers 0-1 dense, 8 experts, no MTP. */
static const struct mla_cfg MLA_DS_NOQ __attribute__((unused)) = {
    "deepseek_v3", 4, 0,
    {[Y_K] = 192, [Y_V] = 250, [Y_H] = 6, [Y_QR] = 0, [Y_KR] = 48, [Y_NOPE] = 16, [Y_ROPE] = 8,
     [Y_VH] = 20, [Y_I] = 128, [Y_IM] = 32, [Y_NS] = 2, [Y_E] = 8},
    2, NULL, false, false};
/* Kimi-K2 shaped (model_type kimi_k2): 12 heads (3 per rank at tp 4). */
static const struct mla_cfg MLA_KIMI __attribute__((unused)) = {
    "kimi_k2", 2, 0,
    {[Y_K] = 128, [Y_V] = 270, [Y_H] = 12, [Y_QR] = 64, [Y_KR] = 32, [Y_NOPE] = 16, [Y_ROPE] = 8,
     [Y_VH] = 16, [Y_I] = 96, [Y_IM] = 32, [Y_NS] = 1, [Y_E] = 8},
    1, NULL, false, false};
/* GLM-5 shaped: the indexer, mlp_layer_types "dense, sparse, sparse", one
 * MTP layer without copies. */
static const struct mla_cfg MLA_GLM5 __attribute__((unused)) = {
    "glm_moe_dsa", 3, 1,
    {[Y_K] = 192, [Y_V] = 260, [Y_H] = 4, [Y_QR] = 64, [Y_KR] = 48, [Y_NOPE] = 24, [Y_ROPE] = 16,
     [Y_VH] = 32, [Y_I] = 160, [Y_IM] = 48, [Y_NS] = 1, [Y_E] = 4, [Y_IH] = 4, [Y_ID] = 32},
    1, "dss", true, false};
/* On the 128 grid at tp 2 (vLLM block-FP8): q_b 2 heads * 192 rows per
 * rank, kv_b 2 * 256, o_proj 256 columns, the dense MLP's and the shared
 * expert's 128 rows, the routed experts' Im / tp = 128 (Im 256);
 * kv_a_proj_with_mqa has 192 rows (an edge block, the last part of
 * fused_qkv_a_proj). */
static const struct mla_cfg MLA_DS_GRID __attribute__((unused)) = {
    "deepseek_v3", 2, 1,
    {[Y_K] = 256, [Y_V] = 320, [Y_H] = 4, [Y_QR] = 128, [Y_KR] = 128, [Y_NOPE] = 128, [Y_ROPE] = 64,
     [Y_VH] = 128, [Y_I] = 256, [Y_IM] = 256, [Y_NS] = 1, [Y_E] = 4},
    1, NULL, false, true};

/* config.json as the models publish it (the fields refit reads). */
static inline void mla_write_config(const struct mla_cfg *c, const char *path, bool fp8)
{
    const int64_t *v = c->v;
    char types[512] = "";
    if (c->layer_types) {
        size_t o = 0;
        o += (size_t)snprintf(types + o, sizeof(types) - o, ", \"mlp_layer_types\": [");
        for (int64_t l = 0; l < c->layers && o < sizeof(types); l++)
            o += (size_t)snprintf(types + o, sizeof(types) - o, "%s\"%s\"", l ? ", " : "",
                                  c->layer_types[l] == 'd' ? "dense" : "sparse");
        snprintf(types + o, sizeof(types) - o, "]");
    }
    char qr[32], idx[160] = "";
    if (v[Y_QR])
        snprintf(qr, sizeof(qr), "%lld", (long long)v[Y_QR]);
    else
        snprintf(qr, sizeof(qr), "null");
    if (c->indexer)
        snprintf(idx, sizeof(idx), ", \"index_n_heads\": %lld, \"index_head_dim\": %lld, \"index_topk\": 8",
                 (long long)v[Y_IH], (long long)v[Y_ID]);
    char text[4096];
    snprintf(text, sizeof(text),
             "{\"model_type\": \"%s\", \"num_hidden_layers\": %lld, \"num_nextn_predict_layers\": %lld,"
             " \"hidden_size\": %lld, \"vocab_size\": %lld, \"num_attention_heads\": %lld,"
             " \"num_key_value_heads\": %lld, \"q_lora_rank\": %s, \"kv_lora_rank\": %lld,"
             " \"qk_nope_head_dim\": %lld, \"qk_rope_head_dim\": %lld, \"v_head_dim\": %lld,"
             " \"intermediate_size\": %lld, \"moe_intermediate_size\": %lld, \"n_shared_experts\": %lld,"
             " \"n_routed_experts\": %lld, \"num_experts_per_tok\": 2, \"first_k_dense_replace\": %lld,"
             " \"moe_layer_freq\": 1, \"topk_method\": \"noaux_tc\", \"scoring_func\": \"sigmoid\","
             " \"tie_word_embeddings\": false, \"attention_bias\": false%s%s%s}",
             c->model_type, (long long)c->layers, (long long)c->mtp, (long long)v[Y_K], (long long)v[Y_V],
             (long long)v[Y_H], (long long)v[Y_H], qr, (long long)v[Y_KR], (long long)v[Y_NOPE],
             (long long)v[Y_ROPE], (long long)v[Y_VH], (long long)v[Y_I], (long long)v[Y_IM],
             (long long)v[Y_NS], (long long)v[Y_E], (long long)c->first_dense, types, idx,
             fp8 ? ", \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\","
                   " \"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]}"
                 : "");
    t_write_file(path, text);
}

/* A writer that stores quantized linears as DeepSeek ships them: arbitrary
 * finite e4m3 codes and positive float32 block multipliers (the bytes are
 * what a converter must pass through or dequantize; no quantizer is
 * involved). */
struct mla_ckpt {
    struct t_ckpt c;
    bool fp8;
};

static inline uint32_t mla_rand(struct t_ckpt *c)
{
    c->seed = c->seed * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(c->seed >> 33);
}

static inline void mla_add_fp8(struct t_ckpt *c, const char *name, int64_t rows, int64_t cols)
{
    int64_t shape[2] = {rows, cols}, sshape[2] = {(rows + 127) / 128, (cols + 127) / 128};
    size_t n = (size_t)(rows * cols), ns = (size_t)(sshape[0] * sshape[1]);
    uint8_t *q = malloc(n);
    float *s = malloc(ns * sizeof(float));
    ck_assert(q && s);
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)mla_rand(c);
        q[i] = (b & 0x7f) == 0x7f ? (uint8_t)(b & 0xf0) : b; /* no NaN codes */
    }
    for (size_t i = 0; i < ns; i++) /* 2^-12 .. 2^-4, with a mantissa */
        s[i] = ldexpf(1.0f + (float)(mla_rand(c) & 0xffff) / 65536.0f, -4 - (int)(mla_rand(c) % 9));
    char sname[512];
    snprintf(sname, sizeof(sname), "%s_scale_inv", name);
    ck_assert_int_eq(refit_st_writer_add_copy(c->w, name, REFIT_DTYPE_F8_E4M3, 2, shape, q, n), 0);
    ck_assert_int_eq(refit_st_writer_add_copy(c->w, sname, REFIT_DTYPE_F32, 2, sshape, s, ns * sizeof(float)), 0);
    free(q);
    free(s);
}

/* A linear weight [rows, cols]: e4m3 + scale in an FP8 checkpoint. */
static inline void mla_lin(struct mla_ckpt *m, const char *name, int64_t rows, int64_t cols)
{
    if (m->fp8)
        mla_add_fp8(&m->c, name, rows, cols);
    else
        t_ckpt_add(&m->c, name, REFIT_DTYPE_BF16, rows, cols);
}

static inline void mla_bf16(struct mla_ckpt *m, const char *name, int64_t rows, int64_t cols)
{
    t_ckpt_add(&m->c, name, REFIT_DTYPE_BF16, rows, cols);
}

/* DeepseekV3Attention / GlmMoeDsaAttention (+ GlmMoeDsaIndexer) of layer l. */
static inline void mla_write_attention(struct mla_ckpt *m, const struct mla_cfg *c, long l)
{
    const int64_t *v = c->v, qk = v[Y_NOPE] + v[Y_ROPE];
    char p[256], n[320];
    snprintf(p, sizeof(p), "model.layers.%ld.self_attn.", l);
#define N(s) (snprintf(n, sizeof(n), "%s%s", p, s), n)
    if (v[Y_QR]) {
        mla_lin(m, N("q_a_proj.weight"), v[Y_QR], v[Y_K]);
        mla_bf16(m, N("q_a_layernorm.weight"), v[Y_QR], 0);
        mla_lin(m, N("q_b_proj.weight"), v[Y_H] * qk, v[Y_QR]);
    } else {
        mla_lin(m, N("q_proj.weight"), v[Y_H] * qk, v[Y_K]);
    }
    mla_lin(m, N("kv_a_proj_with_mqa.weight"), v[Y_KR] + v[Y_ROPE], v[Y_K]);
    mla_bf16(m, N("kv_a_layernorm.weight"), v[Y_KR], 0);
    mla_lin(m, N("kv_b_proj.weight"), v[Y_H] * (v[Y_NOPE] + v[Y_VH]), v[Y_KR]);
    mla_lin(m, N("o_proj.weight"), v[Y_K], v[Y_H] * v[Y_VH]);
    if (c->indexer) {
        mla_lin(m, N("indexer.wq_b.weight"), v[Y_IH] * v[Y_ID], v[Y_QR]);
        mla_lin(m, N("indexer.wk.weight"), v[Y_ID], v[Y_K]);
        mla_bf16(m, N("indexer.k_norm.weight"), v[Y_ID], 0);
        mla_bf16(m, N("indexer.k_norm.bias"), v[Y_ID], 0);
        mla_bf16(m, N("indexer.weights_proj.weight"), v[Y_IH], v[Y_K]); /* kept bf16 */
    }
#undef N
}

/* DeepseekV3MLP (dense) or DeepseekV3MoE (router, bias, shared experts, experts). */
static inline void mla_write_mlp(struct mla_ckpt *m, const struct mla_cfg *c, long l)
{
    const int64_t *v = c->v, shi = v[Y_IM] * v[Y_NS];
    char p[256], n[320];
    snprintf(p, sizeof(p), "model.layers.%ld.mlp.", l);
#define N(s) (snprintf(n, sizeof(n), "%s%s", p, s), n)
    if (mla_is_dense(c, l)) {
        mla_lin(m, N("gate_proj.weight"), v[Y_I], v[Y_K]);
        mla_lin(m, N("up_proj.weight"), v[Y_I], v[Y_K]);
        mla_lin(m, N("down_proj.weight"), v[Y_K], v[Y_I]);
        return;
    }
    mla_bf16(m, N("gate.weight"), v[Y_E], v[Y_K]);
    t_ckpt_add(&m->c, N("gate.e_score_correction_bias"), REFIT_DTYPE_F32, v[Y_E], 0);
    mla_lin(m, N("shared_experts.gate_proj.weight"), shi, v[Y_K]);
    mla_lin(m, N("shared_experts.up_proj.weight"), shi, v[Y_K]);
    mla_lin(m, N("shared_experts.down_proj.weight"), v[Y_K], shi);
    for (long e = 0; e < v[Y_E]; e++) {
        char s[96];
        snprintf(s, sizeof(s), "experts.%ld.gate_proj.weight", e);
        mla_lin(m, N(s), v[Y_IM], v[Y_K]);
        snprintf(s, sizeof(s), "experts.%ld.up_proj.weight", e);
        mla_lin(m, N(s), v[Y_IM], v[Y_K]);
        snprintf(s, sizeof(s), "experts.%ld.down_proj.weight", e);
        mla_lin(m, N(s), v[Y_K], v[Y_IM]);
    }
#undef N
}

/* The MTP module's own tensors (README_WEIGHTS: enorm, hnorm, eh_proj,
 * shared_head; DeepSeek's checkpoint also stores embed_tokens and
 * shared_head.head in the layer, GLM-5's does not); eh_proj stays bf16. */
static inline void mla_write_mtp(struct mla_ckpt *m, const struct mla_cfg *c, long l)
{
    const int64_t *v = c->v;
    char n[320];
    snprintf(n, sizeof(n), "model.layers.%ld.enorm.weight", l);
    mla_bf16(m, n, v[Y_K], 0);
    snprintf(n, sizeof(n), "model.layers.%ld.hnorm.weight", l);
    mla_bf16(m, n, v[Y_K], 0);
    snprintf(n, sizeof(n), "model.layers.%ld.eh_proj.weight", l);
    mla_bf16(m, n, v[Y_K], 2 * v[Y_K]);
    snprintf(n, sizeof(n), "model.layers.%ld.shared_head.norm.weight", l);
    mla_bf16(m, n, v[Y_K], 0);
    if (c->mtp_copies) {
        snprintf(n, sizeof(n), "model.layers.%ld.embed_tokens.weight", l);
        mla_bf16(m, n, v[Y_V], v[Y_K]);
        snprintf(n, sizeof(n), "model.layers.%ld.shared_head.head.weight", l);
        mla_bf16(m, n, v[Y_V], v[Y_K]);
    }
}

/* Writes dir/config.json and dir/model.safetensors; fp8: DeepSeek's FP8
 * format for every linear of attention, indexer (wq_b, wk), dense MLP,
 * shared experts and experts. */
static inline void mla_write_ckpt(const struct mla_cfg *c, const char *dir, uint64_t seed, bool fp8)
{
    char path[4096];
    mkdir(dir, 0777);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    mla_write_config(c, path, fp8);
    struct mla_ckpt m = {.fp8 = fp8};
    t_ckpt_begin(&m.c, seed);
    const int64_t *v = c->v;
    mla_bf16(&m, "model.embed_tokens.weight", v[Y_V], v[Y_K]);
    for (long l = 0; l < c->layers + c->mtp; l++) {
        char n[320];
        snprintf(n, sizeof(n), "model.layers.%ld.input_layernorm.weight", l);
        mla_bf16(&m, n, v[Y_K], 0);
        snprintf(n, sizeof(n), "model.layers.%ld.post_attention_layernorm.weight", l);
        mla_bf16(&m, n, v[Y_K], 0);
        mla_write_attention(&m, c, l);
        mla_write_mlp(&m, c, l);
        if (l >= c->layers)
            mla_write_mtp(&m, c, l);
    }
    mla_bf16(&m, "model.norm.weight", v[Y_K], 0);
    mla_bf16(&m, "lm_head.weight", v[Y_V], v[Y_K]);
    t_ckpt_end(&m.c, dir);
}

#endif
