/* glm5.c — model plugin for GLM-5 (HF model_type "glm_moe_dsa"): DeepSeek-V3's
 * multi-head latent attention and MoE plus the DeepSeek-sparse-attention
 * indexer of every layer that indexer_types calls "full" (wq_b, wk, a
 * LayerNorm k_norm with weight and bias, weights_proj), dense or MoE
 * layers as mlp_layer_types says, and an MTP layer after
 * num_hidden_layers (converted on request: include_mtp).  Megatron names follow the DSA
 * layer spec GLM-5 trains with (q_layernorm and kv_layernorm unfused, the
 * indexer under core_attention, every indexer projection duplicated over
 * TP); spec_mla.h has the sources.  vLLM and SGLang fuse the indexer's wk
 * and weights_proj into wk_weights_proj, kept in bf16 (its quant_config is
 * None: an e4m3 wk is dequantized). */
#include <string.h>

#include "../common/plugin_common.h"
#include "../common/shape_common.h"
#include "../common/spec_mla.h"

static const struct refit_host *host;

static const struct refit_model_dim glm5_dims[] = {
    DIMS_COMMON,
    DIMS_MLA,
    {"index_heads", "index_n_heads", NULL, D_POS},
    {"index_dim", "index_head_dim", NULL, D_POS},
    /* IndexShare (transformers' GlmMoeDsaConfig.indexer_types): a "full"
     * layer owns an indexer, a "shared" one reuses the previous full
     * layer's top-k and has no indexer weights; without the list, or past
     * its end (MTP layers), every layer owns one. */
    {"index_full", "indexer_types=full", "1", REFIT_DIMF_PER_LAYER},
};

#define IX ML "self_attention.core_attention.indexer."
#define HIX HL "self_attn.indexer."
#define WKW_DST(t)                                                                    \
    {.target = t, .name = HIX "wk_weights_proj.weight", .fusion = REFIT_FUSE_CONCAT, .dtype = REFIT_DTYPE_BF16, \
     .fp8 = REFIT_FP8_OFF}

static const struct refit_model_entry glm5_entries[] = {
    E_EMBED, E_LM_HEAD, E_LM_HEAD_TIED, E_FINAL_NORM,
    E_MLA_INPUT_NORM,
    E_MLA_Q_DOWN, E_MLA_KV_DOWN_FUSED, E_MLA_KV_DOWN,
    E_MLA_Q_NORM("self_attention.q_layernorm.weight"),
    E_MLA_Q_UP, E_MLA_Q,
    E_MLA_KV_NORM("self_attention.kv_layernorm.weight"),
    E_MLA_KV_UP, E_MLA_O,
    /* the indexer: replicated everywhere */
    {IX "linear_wq_b.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER, "index_full", {HIX "wq_b.weight"},
     {"index_heads * index_dim"}, "q_lora_rank", {NULL}, true, NULL},
    /* wk_weights_proj's parts in this order: wk, weights_proj */
    {IX "linear_wk.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER, "index_full", {HIX "wk.weight"}, {"index_dim"},
     "hidden", {NULL}, true, DST(WKW_DST("vllm"), WKW_DST("sglang"))},
    {IX "linear_weights_proj.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER, "index_full",
     {HIX "weights_proj.weight"}, {"index_heads"}, "hidden", {NULL}, false, DST(WKW_DST("vllm"), WKW_DST("sglang"))},
    {IX "k_norm.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER, "index_full", {HIX "k_norm.weight"}, {"index_dim"},
     NULL, {NULL}, false, NULL},
    {IX "k_norm.bias", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER, "index_full", {HIX "k_norm.bias"}, {"index_dim"}, NULL,
     {NULL}, false, NULL},
    E_DENSE_NORM, E_DENSE_FC1, E_DENSE_FC2,
    E_MOE_NORM, E_ROUTER(NULL), E_MLA_EXPERT_BIAS,
    E_MLA_SHARED_FC1, E_MLA_SHARED_FC2,
    E_EXPERT_FC1, E_EXPERT_FC2,
    E_MTP_ALL,
};

static const struct refit_target_layout glm5_targets[] = {TARGETS_MLA};

static const struct refit_model_spec glm5_spec =
    RFM_SPEC_MTP(glm5_dims, glm5_entries, glm5_targets, "experts", REFIT_LAYER_MOE, rfm_mla_mtp,
                 sizeof(rfm_mla_mtp) / sizeof(rfm_mla_mtp[0]));

static int glm5_claims(const char *model_type)
{
    return model_type && !strcmp(model_type, "glm_moe_dsa");
}

static int glm5_shape(const struct refit_model_hfcfg *c, struct refit_model_shape *s)
{
    memset(s, 0, sizeof(*s));
    return rfm_mla_shape(host, c, s);
}

/* mlp_layer_types ("dense" / "sparse" per layer, transformers'
 * GlmMoeDsaConfig); without it, dense before first_k_dense_replace. */
static int glm5_layer_kind(const struct refit_model_hfcfg *c, const struct refit_model_shape *s, int64_t layer,
                           enum refit_layer_kind *out)
{
    if (layer >= s->n_layers) {
        *out = REFIT_LAYER_MTP;
        return 0;
    }
    size_t n;
    int rc = c->get_len(c->ctx, "mlp_layer_types", &n);
    if (rc == REFIT_ENOENT) {
        int64_t first_dense;
        rc = rfm_opt_int(host, c, "first_k_dense_replace", 0, &first_dense);
        *out = layer < first_dense ? REFIT_LAYER_DENSE : REFIT_LAYER_MOE;
        return rc;
    }
    if (rc)
        return host->error_push(rc, "config.json: key 'mlp_layer_types'");
    if ((int64_t)n != s->n_layers)
        return host->error_set(REFIT_EPROTO, "config.json: mlp_layer_types has %zu items for %lld layers", n,
                               (long long)s->n_layers);
    const char *t;
    if (c->size < offsetof(struct refit_model_hfcfg, get_str_at) + sizeof(c->get_str_at) || !c->get_str_at)
        return host->error_set(REFIT_EABI, "mlp_layer_types: the host reads no string lists");
    rc = c->get_str_at(c->ctx, "mlp_layer_types", (size_t)layer, &t);
    if (rc)
        return host->error_push(rc, "config.json: mlp_layer_types[%lld]", (long long)layer);
    if (!strcmp(t, "dense"))
        *out = REFIT_LAYER_DENSE;
    else if (!strcmp(t, "sparse"))
        *out = REFIT_LAYER_MOE;
    else
        return host->error_set(REFIT_EPROTO, "config.json: mlp_layer_types[%lld] is '%s', not dense or sparse",
                               (long long)layer, t);
    return 0;
}

/* The demo's checkpoint (`refit demo --model glm5`): DeepSeek-V3's small
 * shape plus a sparse-attention indexer per layer, mlp_layer_types (layer
 * 0 dense) and an MTP layer that is never loaded. */
static int glm5_example_config(int64_t layers, int64_t vocab, char *buf, size_t cap)
{
    long long L = layers > 0 ? layers : 6, V = vocab > 0 ? vocab : 32000;
    if (L > 4096)
        return host->error_set(REFIT_EINVAL, "example config.json: %lld layers", L);
    size_t o = 0;
    int n = snprintf(buf, cap,
                     "{\"architectures\": [\"GlmMoeDsaForCausalLM\"], \"model_type\": \"glm_moe_dsa\", "
                     "\"num_hidden_layers\": %lld, \"num_nextn_predict_layers\": 1, \"hidden_size\": 1024, "
                     RFM_MLA_EXAMPLE_FIELDS
                     "\"vocab_size\": %lld, \"tie_word_embeddings\": false, \"attention_bias\": false, "
                     "\"index_n_heads\": 8, \"index_head_dim\": 128, \"index_topk\": 256, \"mlp_layer_types\": [",
                     L, V);
    for (long long l = 0; n >= 0 && (size_t)n < cap - o && l <= L; l++) {
        o += (size_t)n;
        n = l < L ? snprintf(buf + o, cap - o, "%s\"%s\"", l ? ", " : "", l ? "sparse" : "dense")
                  : snprintf(buf + o, cap - o, "], \"torch_dtype\": \"bfloat16\"}\n");
    }
    if (n < 0 || (size_t)n >= cap - o)
        return host->error_set(REFIT_ERANGE, "example config.json does not fit %zu bytes", cap);
    return 0;
}

RFM_DEFINE_PLUGIN(glm5, "glm5",
                  "GLM-5 (model_type glm_moe_dsa): MLA + DSA indexer + MoE; Megatron, HF, transformers, vLLM and "
                  "SGLang layouts")
