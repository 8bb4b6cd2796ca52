/* refit/model.h — the model plugin ABI (kind REFIT_PLUGIN_MODEL).
 *
 * A model plugin is data plus shape functions.  It claims HF `model_type`s,
 * reads a summary shape from config.json through a getter the core hands it
 * (plugins never see JSON), says which kind each layer is, and returns a
 * conversion-spec table: the dimensions it is made of (declared with their
 * config.json keys), one entry per trainer (Megatron) tensor pattern with its
 * role, the HF tensors it holds and their shapes as expressions over those
 * dimensions, per target layout the destination name, fusion, dtype and FP8
 * policy, and the target layouts themselves (name, padding, FP8 rule).  The
 * core's conversion engine (refit/convert.h) interprets the table; plugins
 * hold no loops over bytes and the core no model or engine names.
 * docs/models.md walks through adding a family or an engine.
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

/* How a trainer tensor is sharded over tensor parallelism (design.md).
 * These are the parallel linear layers of Megatron-Core and of the engines
 * (ColumnParallelLinear, RowParallelLinear, their merged and expert forms),
 * not model features: a family whose tensors shard like one of them needs
 * nothing new in the core. */
enum refit_model_role {
    REFIT_ROLE_REPLICATED = 1, /* every TP rank holds all of it */
    REFIT_ROLE_VOCAB,          /* rows split over TP; vocabulary padded */
    REFIT_ROLE_COLUMN,         /* rows split over TP; args: the rows of one head (optional):
                                  a split that would cut a head is refused */
    REFIT_ROLE_QKV_COLUMN,     /* fused QKV interleaved per query group, rows split;
                                  args: query heads, query groups, head dim */
    REFIT_ROLE_GATED_COLUMN,   /* [gate_r; up_r] per TP rank */
    REFIT_ROLE_ROW,            /* columns split over TP; args: the columns of one head
                                  (optional), as for COLUMN */
    REFIT_ROLE_EXPERT_COLUMN,  /* one expert's [gate_r; up_r] over expert-TP */
    REFIT_ROLE_EXPERT_ROW      /* one expert's down, columns split over expert-TP */
};
/* Expert entries (REFIT_ROLE_EXPERT_*) hold expert {e} = ep_rank*E/ep + k,
 * E the spec's `experts` dimension. */

/* Which layers hold an instance of a pattern, and for the global ones which
 * pipeline stage of a trainer holds them. */
enum refit_model_scope {
    REFIT_SCOPE_GLOBAL = 1, /* once, on the first pipeline stage (embedding) */
    REFIT_SCOPE_LAYER,      /* every decoder layer */
    REFIT_SCOPE_DENSE,      /* layers with a dense MLP */
    REFIT_SCOPE_MOE,        /* layers with a mixture of experts */
    REFIT_SCOPE_FINAL,      /* once, on the last pipeline stage (final norm, output layer) */
    /* A trainer-only copy on the last pipeline stage when that is not the
     * first (Megatron's output_layer.weight with tied embeddings and PP > 1):
     * its HF part is another entry's, read once, never a destination. */
    REFIT_SCOPE_TIED_COPY,
    /* Once per multi-token-prediction (MTP) layer, beside the decoder block
     * that layer holds (enorm, hnorm, eh_proj, the shared head's norm).
     * Only with the spec's MTP fields and a conversion that asks for MTP
     * layers (struct refit_convert_opts.include_mtp); see "Multi-token
     * prediction" below. */
    REFIT_SCOPE_MTP
};

/* ------------------------------------------------------------------ */
/* The open vocabulary: dimensions and expressions.
 *
 * A plugin declares the dimensions its tensors are made of (hidden,
 * kv_lora_rank, qk_rope_head_dim ...), each read from config.json keys.
 * Shapes, conditions and role arguments in the table are expressions over
 * those names: integers, names, unary - and !, * / % + -, comparisons
 * (== != < <= > >=), && || and parentheses, with C's precedence and 64-bit
 * integer arithmetic (division by zero is an error).  A boolean key reads as
 * 1 or 0.  The core knows no dimension by name. */

enum refit_model_dim_flags {
    REFIT_DIMF_BOOL = 1u << 0,     /* the key holds true/false (1/0), not an integer */
    REFIT_DIMF_POSITIVE = 1u << 1, /* a value read from the config must be > 0 */
    /* The key is a list with one item per decoder layer (integers,
     * booleans, or strings compared with the value after '=' in `keys`:
     * "indexer_types=full" counts "full" as 1, any other string as 0).  In
     * an entry's `when` the name stands for the item of the instance's
     * layer; `def` (required) for layers the list does not reach, a config
     * without the key, and everywhere else (shapes, global entries). */
    REFIT_DIMF_PER_LAYER = 1u << 2
};

struct refit_model_dim {
    const char *name;  /* [A-Za-z_][A-Za-z0-9_]*, unique in the spec */
    /* config.json keys tried in order, '|'-separated ("num_experts|n_routed_experts");
     * a key that is absent or null is skipped.  NULL: the value is def. */
    const char *keys;
    /* Expression over dimensions declared before this one, used when no key
     * is present; NULL: the dimension is required (an error names the keys). */
    const char *def;
    uint32_t flags;    /* REFIT_DIMF_* */
};

/* ------------------------------------------------------------------ */
/* Target layouts (how an engine rank wants the tensors) */

enum refit_model_fusion {
    REFIT_FUSE_NONE = 0,   /* each HF tensor keeps its own destination */
    REFIT_FUSE_CONCAT,     /* rows of the parts concatenated (qkv_proj, gate_up_proj); entries
                              of one layer whose destinations have the same name are one
                              tensor, their parts in table order (vLLM's fused_qkv_a_proj) */
    REFIT_FUSE_STACK       /* experts stacked on a new dim 0 (w13_weight, w2_weight);
                              parts of one expert concatenated on rows.  A
                              non-expert entry of the layer naming an existing
                              stack becomes its next slot (SGLang's shared
                              expert fused as expert E) */
};

/* One target layout's view of an entry. */
struct refit_model_dst {
    const char *target;    /* the target layout's name ("vllm"); NULL ends a list */
    /* Destination name pattern ({L}); NULL: the HF names, unfused. */
    const char *name;
    enum refit_model_fusion fusion;
    /* REFIT_DTYPE_INVALID: keep the source dtype. */
    enum refit_dtype dtype;
    /* Block-FP8 when FP8 is on: REFIT_FP8_ENTRY the entry's fp8, else
     * REFIT_FP8_OFF / REFIT_FP8_ON. */
    int fp8;
    /* Expression over the dimensions and the target rank's "tp" and "ep"
     * (0 or 1: no expert parallelism): this dst applies when non-zero; the
     * first that applies wins, then the target's base.  NULL: always. */
    const char *when;
    /* How this engine shards the tensor over its TP ranks when it differs
     * from the trainer's (vLLM's MTP eh_proj is a plain nn.Linear, Megatron's
     * a column-parallel one); 0: the entry's role.  Only REPLICATED, COLUMN
     * and ROW (with the entry's head argument) are accepted here. */
    enum refit_model_role role;
};
#define REFIT_FP8_ENTRY 0
#define REFIT_FP8_OFF 1
#define REFIT_FP8_ON 2

/* The block-FP8 partition rule of an engine: which per-rank extents of a
 * quantized tensor must lie on the fp8_block grid for its kernels. */
enum refit_fp8_grid_flags {
    REFIT_FP8_GRID_SPLIT_PARTS = 1u << 0,  /* each part's rows of a TP-split tensor */
    REFIT_FP8_GRID_MERGED_PARTS = 1u << 1, /* each part's rows of a fused tensor */
    REFIT_FP8_GRID_SPLIT_COLS = 1u << 2,   /* the input partition of a column-split tensor */
    REFIT_FP8_GRID_STACKS = 1u << 3        /* expert stacks: the intermediate partition,
                                              split or not (fused-MoE kernels) */
};

/* A target layout: its name, the rules of its engine, and the layout it
 * falls back to for entries that give no destination for it. */
struct refit_target_layout {
    const char *name;         /* "hf", "vllm", "sglang", "transformers" */
    const char *base;         /* entries without a dst for this target use base's; NULL: HF names */
    int64_t vocab_multiple;   /* vocabulary rows padded to a multiple (vLLM 64); <= 1 none */
    int64_t fp8_block;        /* block edge of its FP8 weights (128) */
    uint32_t fp8_grid;        /* REFIT_FP8_GRID_* its kernels require */
    const char *engine;       /* in messages: "vLLM" */
};

/* A source layout's other spelling of a trainer name.  `from` and `to`
 * are patterns: literal text and captures `{x}` (a one-word name); a
 * capture named k, e or L matches a decimal integer, any other name any
 * non-empty text.  `to` uses the captures of `from`.  Megatron's
 * SequentialMLP: from "{a}mlp.experts.local_experts.{k}.{b}",
 * to "{a}mlp.experts.{b}{k}" (TEGroupedMLP's spelling, the table's). */
struct refit_source_alias {
    const char *from;
    const char *to;
};

/* How a trainer framework names the tensors it publishes, before they are
 * looked up in the spec's `megatron` (or, for FSDP, HF) patterns: prefixes
 * its wrappers add (stripped, repeatedly) and aliases (the first that
 * matches wins).  `name` is the layout a trainer rank declares
 * (`struct refit_parallel.layout`: "megatron", "fsdp"). */
struct refit_source_layout {
    const char *name;
    const char *const *strip;      /* "module." (DDP / Float16Module wrappers) */
    size_t n_strip;
    const struct refit_source_alias *aliases;
    size_t n_aliases;
};

/* ------------------------------------------------------------------ */
/* Multi-token prediction
 *
 * DeepSeek-V3, Kimi-K2 and GLM-5 checkpoints carry num_nextn_predict_layers
 * MTP layers after the decoder's: HF layer n_layers + i holds a full
 * decoder block (the LAYER / DENSE / MOE entries, with the kind the spec's
 * mtp_block says) plus the REFIT_SCOPE_MTP entries.  HF and engine names
 * use the HF layer number for {L}; trainer (Megatron) names the MTP index
 * i, and all MTP layers live on the last pipeline stage (Megatron-Core's
 * default placement).  A layout renames the decoder block's tensors of an
 * MTP layer by replacing the prefix `from` of their names with `to`
 * (Megatron "decoder.layers.{L}." -> "mtp.layers.{L}.mtp_model_layer.";
 * vLLM's drafter "model.layers.{L}." -> "model.layers.{L}.mtp_block.").
 * A target layout without a naming row loads no MTP layers. */
enum refit_layer_kind {
    REFIT_LAYER_DENSE = 1,
    REFIT_LAYER_MOE = 2,
    REFIT_LAYER_MTP = 3 /* skipped unless asked (include_mtp; the spec's mtp_block) */
};

struct refit_mtp_naming {
    const char *layout; /* "megatron" (the trainer's names) or a target layout's name */
    const char *from;   /* NULL: the decoder block keeps its names */
    const char *to;
};

/* ------------------------------------------------------------------ */
/* The spec table */

struct refit_model_entry {
    const char *megatron;    /* "decoder.layers.{L}.self_attention.linear_qkv.weight" */
    enum refit_model_role role;
    enum refit_model_scope scope;
    const char *when;        /* expression: present when non-zero; NULL always */
    const char *hf[3];       /* HF name patterns ({L}, {e}), NULL-terminated when < 3 */
    /* Shape of every HF part: rows[i] x cols, expressions (cols NULL: 1-D). */
    const char *rows[3];
    const char *cols;
    /* Role arguments (expressions); REFIT_ROLE_QKV_COLUMN: query heads,
     * query groups, head dim; REFIT_ROLE_COLUMN / ROW: one head's rows /
     * columns (MLA's up projections, o_proj), NULL for none. */
    const char *args[3];
    bool fp8;                /* a linear weight FP8 deployments quantize */
    /* Per-target destinations, ended by a NULL target; may be NULL. */
    const struct refit_model_dst *dst;
};

/* What a plugin's table() returns. */
struct refit_model_spec {
    size_t size;             /* sizeof(struct refit_model_spec) */
    const struct refit_model_dim *dims;
    size_t n_dims;
    const struct refit_model_entry *entries;
    size_t n_entries;
    const struct refit_target_layout *targets;
    size_t n_targets;
    const char *experts;     /* expression: the routed expert count ("experts"); NULL: dense */

    /* Added after the first tables (the core reads them only when size
     * covers them): the trainer frameworks' spellings of the tensor names. */
    const struct refit_source_layout *sources;
    size_t n_sources;

    /* Added after the source layouts: multi-token prediction (above).
     * mtp_block 0: the plugin converts no MTP layers. */
    enum refit_layer_kind mtp_block;   /* REFIT_LAYER_DENSE or REFIT_LAYER_MOE */
    const struct refit_mtp_naming *mtp_names;
    size_t n_mtp_names;
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
    /* String lists (mlp_layer_types): item i; *out lives as long as the model. */
    int (*get_str_at)(void *ctx, const char *key, size_t i, const char **out);
};

/* A summary of the model, filled by the plugin's shape(): the layer
 * counts the core iterates over, and the common sizes tools report (sizing,
 * benches).  Layouts never read the other fields: they use the spec's
 * declared dimensions.  A family without a field leaves it 0. */
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

struct refit_model_ops {
    size_t size; /* sizeof(struct refit_model_ops) */
    /* 1 when the plugin converts this HF model_type, else 0. */
    int (*claims)(const char *model_type);
    /* Fill *out from the config; an error names the missing or bad key. */
    int (*shape)(const struct refit_model_hfcfg *cfg, struct refit_model_shape *out);
    /* Kind of layer `layer` in [0, n_layers + n_mtp_layers). */
    int (*layer_kind)(const struct refit_model_hfcfg *cfg, const struct refit_model_shape *s,
                      int64_t layer, enum refit_layer_kind *out);
    /* The static spec table: dimensions, entries, target layouts. */
    const struct refit_model_spec *(*table)(void);

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
