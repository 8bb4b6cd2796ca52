/* synth.h — the synthetic Qwen3-MoE and GLM-4.5 checkpoints of the model
 * tests, written from the HF name tables of ../shared/conversion.md. */
#ifndef REFIT_TEST_MODEL_SYNTH_H
#define REFIT_TEST_MODEL_SYNTH_H

#include "tutil.h"

/* Qwen3-MoE: H 8, G 2, d 32, K 200, I 192, Im 128, E 4, V 300, layer 0 dense */
#define QM_CONFIG                                                                               \
    "{\"model_type\": \"qwen3_moe\", \"num_hidden_layers\": 3, \"hidden_size\": 200,"           \
    " \"num_attention_heads\": 8, \"num_key_value_heads\": 2, \"head_dim\": 32,"                \
    " \"intermediate_size\": 192, \"moe_intermediate_size\": 128, \"num_experts\": 4,"          \
    " \"num_experts_per_tok\": 2, \"decoder_sparse_step\": 1, \"mlp_only_layers\": [0],"        \
    " \"vocab_size\": 300, \"tie_word_embeddings\": false, \"attention_bias\": true}"
/* GLM-4.5: H 4, G 2, d 48, K 160, I 256, Im 64, E 4, 1 shared, V 250,
 * layer 0 dense, layer 1 MoE, layer 2 the MTP layer */
#define GLM_CONFIG                                                                              \
    "{\"model_type\": \"glm4_moe\", \"num_hidden_layers\": 2, \"num_nextn_predict_layers\": 1," \
    " \"hidden_size\": 160, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"            \
    " \"head_dim\": 48, \"intermediate_size\": 256, \"moe_intermediate_size\": 64,"             \
    " \"n_routed_experts\": 4, \"num_experts_per_tok\": 2, \"n_shared_experts\": 1,"            \
    " \"first_k_dense_replace\": 1, \"vocab_size\": 250, \"tie_word_embeddings\": false,"       \
    " \"attention_bias\": true, \"use_qk_norm\": false}"

struct dims {
    int H, G, D, K, I, Im, E, V, L, glm;
};
static const struct dims QM __attribute__((unused)) = {8, 2, 32, 200, 192, 128, 4, 300, 3, 0};
static const struct dims GL __attribute__((unused)) = {4, 2, 48, 160, 256, 64, 4, 250, 2, 1};

static inline int is_dense(const struct dims *d, int l)
{
    (void)d;
    return l == 0; /* mlp_only_layers [0] / first_k_dense_replace 1 */
}

/* Writes dir/config.json and dir/model.safetensors with the HF names of
 * conversion.md section 1. */
static inline void write_ckpt(const struct dims *d, const char *dir, struct t_ckpt *c)
{
    char p[4096];
    mkdir(dir, 0777);
    snprintf(p, sizeof(p), "%s/config.json", dir);
    t_write_file(p, d->glm ? GLM_CONFIG : QM_CONFIG);
    const enum refit_dtype B = REFIT_DTYPE_BF16;
    t_ckpt_add(c, "model.embed_tokens.weight", B, d->V, d->K);
    t_ckpt_add(c, "lm_head.weight", B, d->V, d->K);
    t_ckpt_add(c, "model.norm.weight", B, d->K, 0);
    for (long l = 0; l < d->L; l++) {
        const char *pre = "model.layers.%ld.";
        char f[256];
#define ADD(suffix, rows, cols)                       \
    do {                                              \
        snprintf(f, sizeof(f), "%s%s", pre, suffix);  \
        t_ckpt_addf(c, B, rows, cols, f, l, 0);       \
    } while (0)
        ADD("input_layernorm.weight", d->K, 0);
        ADD("post_attention_layernorm.weight", d->K, 0);
        ADD("self_attn.q_proj.weight", d->H * d->D, d->K);
        ADD("self_attn.k_proj.weight", d->G * d->D, d->K);
        ADD("self_attn.v_proj.weight", d->G * d->D, d->K);
        ADD("self_attn.q_proj.bias", d->H * d->D, 0);
        ADD("self_attn.k_proj.bias", d->G * d->D, 0);
        ADD("self_attn.v_proj.bias", d->G * d->D, 0);
        ADD("self_attn.o_proj.weight", d->K, d->H * d->D);
        if (!d->glm) {
            ADD("self_attn.q_norm.weight", d->D, 0);
            ADD("self_attn.k_norm.weight", d->D, 0);
        }
        if (is_dense(d, (int)l)) {
            ADD("mlp.gate_proj.weight", d->I, d->K);
            ADD("mlp.up_proj.weight", d->I, d->K);
            ADD("mlp.down_proj.weight", d->K, d->I);
            continue;
        }
        ADD("mlp.gate.weight", d->E, d->K);
        if (d->glm) {
            snprintf(f, sizeof(f), "%smlp.gate.e_score_correction_bias", pre);
            t_ckpt_addf(c, REFIT_DTYPE_F32, d->E, 0, f, l, 0);
            ADD("mlp.shared_experts.gate_proj.weight", d->Im, d->K);
            ADD("mlp.shared_experts.up_proj.weight", d->Im, d->K);
            ADD("mlp.shared_experts.down_proj.weight", d->K, d->Im);
        }
        for (long e = 0; e < d->E; e++) {
            t_ckpt_addf(c, B, d->Im, d->K, "model.layers.%ld.mlp.experts.%ld.gate_proj.weight", l, e);
            t_ckpt_addf(c, B, d->Im, d->K, "model.layers.%ld.mlp.experts.%ld.up_proj.weight", l, e);
            t_ckpt_addf(c, B, d->K, d->Im, "model.layers.%ld.mlp.experts.%ld.down_proj.weight", l, e);
        }
#undef ADD
    }
    if (d->glm) { /* the MTP layer (model.layers.<num_hidden_layers>), never loaded */
        long m = d->L;
        t_ckpt_addf(c, B, d->K, 2 * d->K, "model.layers.%ld.eh_proj.weight", m, 0);
        t_ckpt_addf(c, B, d->K, 0, "model.layers.%ld.enorm.weight", m, 0);
        t_ckpt_addf(c, B, d->K, 0, "model.layers.%ld.hnorm.weight", m, 0);
        t_ckpt_addf(c, B, d->H * d->D, d->K, "model.layers.%ld.self_attn.q_proj.weight", m, 0);
        t_ckpt_addf(c, B, d->Im, d->K, "model.layers.%ld.mlp.experts.0.gate_proj.weight", m, 0);
    }
    t_ckpt_end(c, dir);
}

#endif
