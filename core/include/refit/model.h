/* refit/model.h — the model plugin ABI (kind REFIT_PLUGIN_MODEL).
 *
 * A model plugin is data plus shape functions.  It claims HF `model_type`s,
 * reads the shapes it needs from config.json through a getter the core hands
 * it (plugins never see JSON), says which kind each layer is, and returns a
 * conversion-spec table: one entry per trainer (Megatron) tensor pattern with
 * its role, the HF tensors it holds and how, and per target layout (hf,
 * vllm) the destination name, fusion, dtype and default FP8 policy.  The
 * core's conversion engine (refit/convert.h) interprets the table; plugins
 * hold no loops over bytes.  docs/models.md walks through adding a family.
 *
 * Name patterns use placeholders: {L} a decoder layer index, {k} an expert
 * index local to the trainer's expert-parallel rank (Megatron names), {e} a
 * global expert id (HF names). */
#ifndef REFIT_MODEL_H
#define REFIT_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "refit/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How a trainer tensor is sharded over tensor parallelism (design.md). */
enum refit_model_role {
    REFIT_ROLE_REPLICATED = 1, /* every TP rank holds all of it */
    REFIT_ROLE_VOCAB,          /* rows split over TP; vocabulary padded */
    REFIT_ROLE_COLUMN,         /* rows split over TP */
    REFIT_ROLE_QKV_COLUMN,     /* fused QKV interleaved per query group, rows split */
    REFIT_ROLE_GATED_COLUMN,   /* [gate_r; up_r] per TP rank */
    REFIT_ROLE_ROW,            /* columns split over TP */
    REFIT_ROLE_EXPERT_COLUMN,  /* one expert's [gate_r; up_r] over expert-TP */
    REFIT_ROLE_EXPERT_ROW      /* one expert's down, columns split over expert-TP */
};

/* How the HF tensors of an entry make up the trainer tensor. */
enum refit_model_hold {
    REFIT_HOLD_WHOLE = 1,   /* one HF tensor (hf[0]) */
    REFIT_HOLD_QKV = 2,     /* hf[0..2] = q, k, v interleaved per query group */
    REFIT_HOLD_GATE_UP = 3  /* hf[0..1] = gate, up */
};
/* Expert entries (REFIT_ROLE_EXPERT_*) hold expert {e} = ep_rank*E/ep + k. */

/* Which instances of a pattern exist. */
enum refit_model_scope {
    REFIT_SCOPE_GLOBAL = 1, /* once (embedding, final norm) */
    REFIT_SCOPE_LAYER,      /* every decoder layer */
    REFIT_SCOPE_DENSE,      /* layers with a dense MLP */
    REFIT_SCOPE_MOE         /* layers with a mixture of experts */
};

/* Entry present only when the model has the feature (bit set). */
enum refit_model_requires {
    REFIT_REQ_ATTN_BIAS = 1u << 0,      /* shape.attention_bias */
    REFIT_REQ_QK_NORM = 1u << 1,        /* shape.qk_norm */
    REFIT_REQ_UNTIED = 1u << 2,         /* !shape.tie_word_embeddings */
    REFIT_REQ_SHARED_EXPERTS = 1u << 3, /* shape.n_shared_experts > 0 */
    REFIT_REQ_EXPERT_BIAS = 1u << 4     /* shape.expert_bias */
};

/* Symbolic dimensions of an HF tensor, resolved against the shape. */
enum refit_model_dim {
    REFIT_DIM_NONE = 0,   /* a 1-D tensor has cols NONE */
    REFIT_DIM_HIDDEN,     /* K */
    REFIT_DIM_VOCAB,      /* vocab_size */
    REFIT_DIM_Q,          /* H * d */
    REFIT_DIM_KV,         /* G * d */
    REFIT_DIM_HEAD,       /* d */
    REFIT_DIM_INTER,      /* intermediate_size */
    REFIT_DIM_MOE_INTER,  /* moe_intermediate_size */
    REFIT_DIM_SHARED_INTER, /* moe_intermediate_size * n_shared_experts */
    REFIT_DIM_EXPERTS     /* E */
};

enum refit_model_target { REFIT_TARGET_HF = 0, REFIT_TARGET_VLLM = 1, REFIT_TARGET_COUNT_ };

enum refit_model_fusion {
    REFIT_FUSE_NONE = 0,   /* each HF tensor keeps its own destination */
    REFIT_FUSE_CONCAT,     /* rows of the parts concatenated (qkv_proj, gate_up_proj) */
    REFIT_FUSE_STACK       /* experts stacked on a new dim 0 (w13_weight, w2_weight);
                              parts of one expert concatenated on rows */
};

/* One target layout's view of an entry. */
struct refit_model_dst {
    /* Destination name pattern ({L}); NULL: the HF names, unfused. */
    const char *name;
    enum refit_model_fusion fusion;
    /* REFIT_DTYPE_INVALID: keep the source dtype. */
    enum refit_dtype dtype;
    /* Block-FP8 by default when FP8 is on (2-D weights only). */
    bool fp8;
};

struct refit_model_entry {
    const char *megatron;    /* "decoder.layers.{L}.self_attention.linear_qkv.weight" */
    enum refit_model_role role;
    enum refit_model_hold hold;
    enum refit_model_scope scope;
    uint32_t requires;       /* REFIT_REQ_* bits */
    const char *hf[3];       /* HF name patterns ({L}, {e}), NULL-terminated when < 3 */
    /* Shape of every HF part: rows[i] x cols (cols NONE: 1-D). */
    enum refit_model_dim rows[3];
    enum refit_model_dim cols;
    struct refit_model_dst dst[REFIT_TARGET_COUNT_];
};

/* The HF config.json as the plugin sees it.  Getters return 0, REFIT_ENOENT
 * when the key is absent (or null), REFIT_EPROTO when it has another type. */
struct refit_model_hfcfg {
    size_t size;
    void *ctx;
    int (*get_int)(void *ctx, const char *key, int64_t *out);
    int (*get_bool)(void *ctx, const char *key, bool *out);
    int (*get_str)(void *ctx, const char *key, const char **out);
    /* Integer arrays (mlp_only_layers): length, then items. */
    int (*get_len)(void *ctx, const char *key, size_t *out);
    int (*get_int_at)(void *ctx, const char *key, size_t i, int64_t *out);
};

/* The shapes the engine needs, filled by the plugin's shape(). */
struct refit_model_shape {
    int64_t n_layers;          /* decoder layers of the main model */
    int64_t n_mtp_layers;      /* multi-token-prediction layers after them */
    int64_t hidden;            /* K */
    int64_t heads, kv_heads, head_dim; /* H, G, d (head_dim from the config) */
    int64_t intermediate;      /* I of dense MLPs */
    int64_t moe_intermediate;  /* Im (0 without experts) */
    int64_t experts;           /* E routed experts (0 for dense models) */
    int64_t n_shared_experts;
    int64_t vocab;
    bool tie_word_embeddings;
    bool attention_bias;
    bool qk_norm;
    bool expert_bias;          /* router bias (GLM e_score_correction_bias) */
};

enum refit_layer_kind {
    REFIT_LAYER_DENSE = 1,
    REFIT_LAYER_MOE = 2,
    REFIT_LAYER_MTP = 3 /* skipped unless asked */
};

struct refit_model_ops {
    size_t size; /* sizeof(struct refit_model_ops) */
    /* 1 when the plugin converts this HF model_type, else 0. */
    int (*claims)(const char *model_type);
    /* Fill *out from the config; an error names the missing or bad key. */
    int (*shape)(const struct refit_model_hfcfg *cfg, struct refit_model_shape *out);
    /* Kind of layer `layer` in [0, n_layers + n_mtp_layers). */
    int (*layer_kind)(const struct refit_model_hfcfg *cfg, const struct refit_model_shape *s,
                      int64_t layer, enum refit_layer_kind *out);
    /* The static spec table. */
    int (*spec)(const struct refit_model_entry **entries, size_t *n);

    /* Added after the first tables: the core checks size before calling. */

    /* An HF config.json of this family, small enough for the demo and the
     * tests (`refit demo --model <plugin>`), num_hidden_layers and
     * vocab_size replaced by layers and vocab when they are > 0.  Written
     * NUL-terminated into buf; REFIT_ERANGE when cap is too small. */
    int (*example_config)(int64_t layers, int64_t vocab, char *buf, size_t cap);
};

#ifdef __cplusplus
}
#endif
#endif
