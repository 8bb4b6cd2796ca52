/* refit/convert.h — the conversion engine: a model (a model plugin's spec
 * table plus the shapes of one HF config), layout maps that say which
 * rectangles of which HF tensors make up each destination tensor of one
 * rank, global HF-tensor views built from an HF checkpoint or from Megatron
 * trainer shards, and the conversion itself (fusion, dtype, block FP8).
 *
 * Every layout rule is ../shared/conversion.md's; docs/models.md explains
 * them.  The layout map is the part the pull-mode planner reuses: it needs
 * no tensor data, only the model and the rank. */
#ifndef REFIT_CONVERT_H
#define REFIT_CONVERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "refit/config.h"
#include "refit/dtype.h"
#include "refit/fp8.h"
#include "refit/loader.h"
#include "refit/model.h"
#include "refit/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Models */

typedef struct refit_model refit_model_t;

/* Open a model from an HF config.json.  `plugin` NULL or "auto": the model
 * plugin that claims the config's model_type.  The loader must outlive the
 * model.  Close with refit_model_close. */
int refit_model_open(refit_loader_t *l, const char *plugin, const char *config_json,
                     refit_model_t **out);
/* The same from JSON text; `name` stands for the file in messages. */
int refit_model_open_text(refit_loader_t *l, const char *plugin, const char *text, size_t len,
                          const char *name, refit_model_t **out);
/* From a configuration's model section: model.hf_config (a config.json) or
 * else the model.hf map; model.plugin picks the plugin. */
int refit_model_open_config(refit_loader_t *l, const refit_config_t *cfg, refit_model_t **out);
void refit_model_close(refit_model_t *m);
/* Add the target layout a configuration defines (model.target_layout:
 * name, base, engine, vocab_multiple, fp8_block, fp8_grid, rename; see
 * docs/models.md "Targets from YAML"); nothing when it defines none.
 * refit_model_open_config calls it. */
int refit_model_targets_from_config(refit_model_t *m, const refit_config_t *cfg);
/* The example HF config.json of model plugin `plugin` (its
 * example_config op: the demo's checkpoints), with layers and vocab when
 * > 0; REFIT_ENOTSUP for a plugin without one. */
int refit_model_example_config(refit_loader_t *l, const char *plugin, int64_t layers, int64_t vocab,
                               char *buf, size_t cap);

const struct refit_model_shape *refit_model_shape(const refit_model_t *m);
const char *refit_model_type(const refit_model_t *m);
const char *refit_model_plugin(const refit_model_t *m);
/* Kind of layer in [0, n_layers + n_mtp_layers). */
int refit_model_layer_kind(const refit_model_t *m, int64_t layer, enum refit_layer_kind *out);
/* The plugin's spec table. */
const struct refit_model_spec *refit_model_spec(const refit_model_t *m);
/* The value of a dimension the plugin declares (REFIT_ENOENT if none). */
int refit_model_dim(const refit_model_t *m, const char *name, int64_t *out);

/* ------------------------------------------------------------------ */
/* Options */

struct refit_fp8_policy {
    bool enabled;
    enum refit_fp8_rule rule;
    double floor; /* < 0: the rule's default */
    /* fnmatch patterns on destination names: exclude wins over include,
     * include wins over the table's default. */
    const char *const *include;
    size_t n_include;
    const char *const *exclude;
    size_t n_exclude;
};

/* Shorthands for two target layout names (older callers); target_name
 * names any target layout the model plugin offers. */
enum refit_model_target { REFIT_TARGET_HF = 0, REFIT_TARGET_VLLM = 1 };

struct refit_convert_opts {
    enum refit_model_target target; /* used when target_name is NULL */
    int tp, rank; /* inference tensor parallelism (0 means 1) and rank */
    /* Expert parallelism: 0 or 1 none (experts sliced over tp); otherwise
     * it must equal tp and rank r holds experts [r*E/ep, (r+1)*E/ep) whole. */
    int ep;
    struct refit_fp8_policy fp8;
    /* fnmatch patterns on HF or destination names; those tensors are left out. */
    const char *const *skip;
    size_t n_skip;
    /* The multi-token-prediction layers too (the model plugin's MTP
     * entries and names; refit/model.h).  Off: engines without speculative
     * decoding load none.  On for a target the plugin names no MTP layers
     * for: REFIT_ENOTSUP. */
    bool include_mtp;
    /* The target layout by name ("hf", "vllm", "sglang", "transformers": the
     * model plugin's targets); NULL: `target`. */
    const char *target_name;
};

/* Fill *o from a configuration's model section (target, skip, fp8.*). */
int refit_convert_opts_from_config(const refit_config_t *cfg, struct refit_convert_opts *o);

/* ------------------------------------------------------------------ */
/* Layout maps */

/* Source tensors of a layout: global HF tensors. */
struct refit_layout_src {
    const char *name;
    int ndim;            /* 1 or 2 */
    int64_t shape[2];
};

/* A rectangle copied from a source into the destination.  1-D tensors are
 * [n, 1].  Destination rows are within expert slot dst_index of a stack
 * ([E_local, rows, cols]); 0 otherwise.  Destination elements no piece
 * covers are zero (vocabulary padding). */
struct refit_layout_piece {
    uint32_t src;        /* index for refit_layout_source */
    int64_t src_row, src_col;
    int64_t dst_index, dst_row, dst_col;
    int64_t rows, cols;
};

struct refit_layout_tensor {
    const char *name;
    int ndim;                     /* 1, 2, or 3 for expert stacks */
    int64_t shape[3];
    enum refit_dtype dtype;       /* REFIT_DTYPE_INVALID: the source dtype */
    bool fp8;                     /* block-quantized (policy applied and checked) */
    enum refit_model_role role;
    int64_t layer;                /* -1 for global tensors */
    int64_t expert;               /* global expert id of a per-expert tensor, else -1 */
    const struct refit_model_entry *entry;
    const struct refit_layout_piece *pieces;
    size_t n_pieces;
};

typedef struct refit_layout refit_layout_t;

/* Destination tensors of inference rank o->rank of o->tp in layout
 * o->target, with FP8 decided by o->fp8.  A quantized parameter whose
 * per-rank parts vLLM's block-FP8 kernels cannot serve is REFIT_EINVAL with
 * a message naming the part.  Destroy with refit_layout_destroy. */
int refit_layout_target(const refit_model_t *m, const struct refit_convert_opts *o,
                        refit_layout_t **out);

/* A trainer tensor's name as the spec spells it: the plugin's source layout
 * `layout` (NULL: "megatron") strips its wrapper prefixes and rewrites its
 * aliases (struct refit_source_layout); a layout the plugin does not
 * declare keeps the name.  malloc'ed; NULL on no memory. */
char *refit_model_source_name(const refit_model_t *m, const char *layout, const char *name);

/* A Megatron trainer rank's position within its pipeline stage. */
struct refit_megatron_rank {
    int tp, ep, etp;
    int tp_rank, ep_rank, etp_rank;
    /* Megatron pads the vocabulary to a multiple of divisible_by * tp
     * (make_vocab_size_divisible_by; 0 means 128). */
    int vocab_divisible_by;
};

/* Its pipeline position.  The decoder layers are cut into pp * vp
 * consecutive chunks; chunk c = v * pp + p is virtual stage v of pipeline
 * rank p (Megatron's interleaved schedule), its layers numbered from 0 in
 * their names, which carry "model<v>." when vp > 1 (the legacy checkpoint's
 * per-chunk state dicts).  The embedding is on chunk 0, the final norm and
 * output layer on the last chunk (and with tied embeddings a copy of the
 * embedding as output_layer.weight when that is not chunk 0). */
struct refit_megatron_pp {
    int pp, pp_rank;          /* pp 0 means 1 */
    int vp;                   /* virtual stages per pipeline rank (0 means 1) */
    /* Layers of each chunk (pp * vp of them, chunk order), for splits that
     * are not even (Megatron's decoder_first/last_pipeline_num_layers or
     * pipeline_model_parallel_layout); NULL: L / (pp * vp) each, and L not
     * divisible is REFIT_EINVAL. */
    const int *chunk_layers;
};

/* The tensors (Megatron names and shapes) of one trainer rank.  `skip` as
 * in the options (may be NULL). */
int refit_layout_megatron(const refit_model_t *m, const struct refit_megatron_rank *r,
                          const struct refit_convert_opts *skip, refit_layout_t **out);
/* The same on pipeline stage `pp` (NULL: pipeline parallelism 1). */
int refit_layout_megatron_pp(const refit_model_t *m, const struct refit_megatron_rank *r,
                             const struct refit_megatron_pp *pp, const struct refit_convert_opts *skip,
                             refit_layout_t **out);

/* The tensors of a trainer rank at position `par` (refit/refit.h): its
 * Megatron layout (pipeline stages included) or its FSDP layout. */
struct refit_parallel;
int refit_layout_trainer(const refit_model_t *m, const struct refit_parallel *par,
                         const struct refit_convert_opts *skip, refit_layout_t **out);

/* The tensors of FSDP rank `rank` of `n`: HF names, every tensor split on
 * dim 0 as torch.chunk does (chunks of ceil(rows / n) rows, the last
 * smaller, ranks past the end holding [0, ...]) — FSDP2 / DTensor Shard(0).
 * Their role is REFIT_ROLE_COLUMN (rows split). */
int refit_layout_fsdp(const refit_model_t *m, int n, int rank, const struct refit_convert_opts *skip,
                      refit_layout_t **out);

size_t refit_layout_count(const refit_layout_t *lay);
const struct refit_layout_tensor *refit_layout_at(const refit_layout_t *lay, size_t i);
const struct refit_layout_tensor *refit_layout_find(const refit_layout_t *lay, const char *name);
size_t refit_layout_source_count(const refit_layout_t *lay);
const struct refit_layout_src *refit_layout_source(const refit_layout_t *lay, uint32_t i);
void refit_layout_destroy(refit_layout_t *lay);

/* Composition: where the bytes of an inference rank's tensors lie in the
 * trainer ranks' shards, for a pull planner.  Each composed piece is a
 * rectangle of a destination tensor with the candidates that hold it (the
 * same bytes on several trainer ranks: replicated tensors, experts over TP
 * ranks); pieces of one destination never overlap. */
struct refit_layout_cand {
    uint32_t rank;     /* index into the trainer layouts given to compose */
    uint32_t tensor;   /* refit_layout_at(ranks[rank], tensor) */
    int64_t src_row, src_col;
};

struct refit_layout_xpiece {
    uint32_t dst;      /* refit_layout_at(dst layout, dst) */
    int64_t dst_index, dst_row, dst_col;
    int64_t rows, cols;
    const struct refit_layout_cand *cand;
    size_t n_cand;
};

typedef struct refit_layout_xmap refit_layout_xmap_t;

/* Compose a target layout with the layouts of every trainer rank.  An HF
 * range of a destination that no trainer rank holds is REFIT_ENOENT naming
 * the tensor.  Destroy with refit_layout_xmap_destroy. */
int refit_layout_compose(const refit_layout_t *dst, const refit_layout_t *const *ranks, size_t n_ranks,
                         refit_layout_xmap_t **out);
size_t refit_layout_xmap_count(const refit_layout_xmap_t *x);
const struct refit_layout_xpiece *refit_layout_xmap_at(const refit_layout_xmap_t *x, size_t i);
void refit_layout_xmap_destroy(refit_layout_xmap_t *x);

/* ------------------------------------------------------------------ */
/* Global HF-tensor views */

typedef struct refit_hf_view refit_hf_view_t;

/* An HF checkpoint directory.  Every HF tensor the model needs (skips and
 * MTP layers aside) is checked up front: present, floating dtype, shape.
 * Native FP8 tensors (F8_E4M3 with a float32 <name>_scale_inv on the 128x128
 * grid, DeepSeek's format) are accepted: conversions read them as bf16
 * (dequantized, docs/fp8.md) or pass their bytes through into an FP8
 * destination on the same grid; refit_hf_view_find returns them as stored. */
int refit_hf_view_open(const refit_model_t *m, const char *dir, const struct refit_convert_opts *o,
                       refit_hf_view_t **out);
/* Trainer shards written by refit_shard_write (rank<r>.safetensors with
 * their parallel position in __metadata__: refit.layout megatron (the
 * default; tp/ep/pp ranks) or fsdp): reassembled into HF tensors
 * (vocabulary padding dropped, rectangles held by several ranks taken
 * once). */
int refit_hf_view_open_shards(const refit_model_t *m, const char *dir, const struct refit_convert_opts *o,
                              refit_hf_view_t **out);
/* The same (the older name). */
int refit_hf_view_open_megatron(const refit_model_t *m, const char *dir,
                                const struct refit_convert_opts *o, refit_hf_view_t **out);
const struct refit_st_tensor *refit_hf_view_find(const refit_hf_view_t *v, const char *name);
void refit_hf_view_close(refit_hf_view_t *v);

/* ------------------------------------------------------------------ */
/* Conversion */

struct refit_converted {
    enum refit_dtype dtype;
    int ndim;
    int64_t shape[3];
    void *data;          /* malloc'ed; refit_converted_fini frees */
    size_t nbytes;
    float *scale_inv;    /* FP8 only: [ceil(N/128), ceil(K/128)] ([E, ...] for stacks) */
    int scale_ndim;
    int64_t scale_shape[3];
    size_t scale_nbytes;
};

/* Build destination tensor i of the layout from the view. */
int refit_convert_tensor(const refit_hf_view_t *v, const refit_layout_t *lay, size_t i,
                         const struct refit_fp8_policy *fp8, struct refit_converted *out);
void refit_converted_fini(struct refit_converted *c);

/* Convert an assembled image of layout tensor lt (its pieces already in
 * place, in the sources' dtype src) into caller memory: FP8 (dst holds the
 * e4m3 bytes, scale_inv the [ceil(N/128), ceil(K/128)] scales, per expert
 * slot for stacks) when lt->fp8 and the policy is on, else a cast to
 * dst_dtype (or a copy).  The same arithmetic as refit_convert_tensor, so a
 * pulled tensor is byte-identical to an offline conversion. */
int refit_convert_image(const struct refit_layout_tensor *lt, enum refit_dtype src, const void *img,
                        const struct refit_fp8_policy *fp8, enum refit_dtype dst_dtype, void *dst,
                        float *scale_inv);

/* The whole rank into one safetensors file: the destination tensors and
 * their <name>_scale_inv, nothing else. */
int refit_convert_write(const refit_model_t *m, const refit_hf_view_t *v,
                        const struct refit_convert_opts *o, const char *path);

/* Trainer shards: dir/rank<r>.safetensors for r in [0, max(tp, ep)) with tp
 * rank r % tp, ep rank r % ep, expert-TP 1, plus dir/layout.yaml. */
int refit_shard_write(const refit_model_t *m, const refit_hf_view_t *v, int tp, int ep,
                      const struct refit_convert_opts *skip, const char *dir);

/* How refit_shard_write_ex cuts a model. */
struct refit_shard_opts {
    /* Megatron: rank r in [0, pp * max(tp, ep)) is pipeline rank
     * r / max(tp, ep), tp rank (r % max(tp, ep)) % tp, ep rank ... % ep. */
    int tp, ep, pp, vp;       /* 0 means 1 */
    const int *chunk_layers;  /* pp * vp layer counts; NULL: an even split */
    /* FSDP: n > 0 writes FSDP ranks 0 .. n-1 instead (tp, ep, pp unset). */
    int fsdp;
};
int refit_shard_write_ex(const refit_model_t *m, const refit_hf_view_t *v, const struct refit_shard_opts *s,
                         const struct refit_convert_opts *skip, const char *dir);

#ifdef __cplusplus
}
#endif
#endif
