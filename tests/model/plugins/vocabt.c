/* vocabt.c — a test model plugin (model_type "refit_vocab_test") that uses
 * the open vocabulary the way an MLA family does: its own dimensions
 * (q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim,
 * v_head_dim), conditions on them, replicated down projections, column
 * up projections, a row output projection, and vLLM's fused_qkv_a_proj made
 * of two trainer tensors.  Names follow DeepSeek-V3's checkpoint,
 * Megatron-Core's MLA and vLLM's deepseek_v2.py (tests/model/mla_tables.h);
 * the core has no code for any of it. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../../../plugins/model/common/shape_common.h"
#include "../../../plugins/model/common/spec_common.h"

static const struct refit_host *host;

static const struct refit_model_dim vt_dims[] = {
    {"vocab", "vocab_size", NULL, D_POS},
    {"hidden", "hidden_size", NULL, D_POS},
    {"heads", "num_attention_heads", NULL, D_POS},
    {"tie_word_embeddings", "tie_word_embeddings", "0", D_BOOL},
    {"q_lora_rank", "q_lora_rank", "0", 0}, /* null: no q LoRA */
    {"kv_lora_rank", "kv_lora_rank", NULL, D_POS},
    {"qk_nope_head_dim", "qk_nope_head_dim", NULL, D_POS},
    {"qk_rope_head_dim", "qk_rope_head_dim", NULL, D_POS},
    {"v_head_dim", "v_head_dim", "qk_nope_head_dim", D_POS},
    {"qk_head_dim", NULL, "qk_nope_head_dim + qk_rope_head_dim", 0},
    {"intermediate", "intermediate_size", NULL, D_POS},
};

#define QL "q_lora_rank > 0"
#define NQL "q_lora_rank == 0"
#define SA ML "self_attention."
#define FUSED_QKV_A DST(D("vllm", HL "self_attn.fused_qkv_a_proj.weight", REFIT_FUSE_CONCAT, KEEP))

static const struct refit_model_entry vt_entries[] = {
    E_EMBED, E_LM_HEAD, E_LM_HEAD_TIED, E_FINAL_NORM,
    {ML "input_layernorm.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER, NULL,
     {HL "input_layernorm.weight"}, {"hidden"}, NULL, {NULL}, false, NULL},
    /* the two down projections, adjacent: vLLM fuses them with q LoRA */
    {SA "linear_q_down_proj.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER, QL,
     {HL "self_attn.q_a_proj.weight"}, {"q_lora_rank"}, "hidden", {NULL}, true, FUSED_QKV_A},
    {SA "linear_kv_down_proj.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER, QL,
     {HL "self_attn.kv_a_proj_with_mqa.weight"}, {"kv_lora_rank + qk_rope_head_dim"}, "hidden", {NULL}, true,
     FUSED_QKV_A},
    {SA "linear_kv_down_proj.weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER, NQL,
     {HL "self_attn.kv_a_proj_with_mqa.weight"}, {"kv_lora_rank + qk_rope_head_dim"}, "hidden", {NULL}, true,
     NULL},
    {SA "linear_q_up_proj.layer_norm_weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER, QL,
     {HL "self_attn.q_a_layernorm.weight"}, {"q_lora_rank"}, NULL, {NULL}, false, NULL},
    {SA "linear_q_up_proj.weight", REFIT_ROLE_COLUMN, REFIT_SCOPE_LAYER, QL, {HL "self_attn.q_b_proj.weight"},
     {"heads * qk_head_dim"}, "q_lora_rank", {NULL}, true, NULL},
    {SA "linear_q_proj.weight", REFIT_ROLE_COLUMN, REFIT_SCOPE_LAYER, NQL, {HL "self_attn.q_proj.weight"},
     {"heads * qk_head_dim"}, "hidden", {NULL}, true, NULL},
    {SA "linear_kv_up_proj.layer_norm_weight", REFIT_ROLE_REPLICATED, REFIT_SCOPE_LAYER, NULL,
     {HL "self_attn.kv_a_layernorm.weight"}, {"kv_lora_rank"}, NULL, {NULL}, false, NULL},
    {SA "linear_kv_up_proj.weight", REFIT_ROLE_COLUMN, REFIT_SCOPE_LAYER, NULL, {HL "self_attn.kv_b_proj.weight"},
     {"heads * (qk_nope_head_dim + v_head_dim)"}, "kv_lora_rank", {NULL}, true, NULL},
    {SA "linear_proj.weight", REFIT_ROLE_ROW, REFIT_SCOPE_LAYER, NULL, {HL "self_attn.o_proj.weight"},
     {"hidden"}, "heads * v_head_dim", {NULL}, true, NULL},
    E_DENSE_NORM, E_DENSE_FC1, E_DENSE_FC2,
};

static const struct refit_target_layout vt_targets[] = {TARGETS_ALL};

static const struct refit_model_spec vt_spec = RFM_SPEC(vt_dims, vt_entries, vt_targets, NULL);

static int vt_claims(const char *model_type)
{
    return model_type && !strcmp(model_type, "refit_vocab_test");
}

static int vt_shape(const struct refit_model_hfcfg *c, struct refit_model_shape *s)
{
    memset(s, 0, sizeof(*s));
    int rc = rfm_req_int(host, c, "num_hidden_layers", &s->n_layers);
    if (!rc)
        rc = rfm_req_int(host, c, "hidden_size", &s->hidden);
    if (!rc)
        rc = rfm_req_int(host, c, "vocab_size", &s->vocab);
    return rc;
}

static int vt_layer_kind(const struct refit_model_hfcfg *c, const struct refit_model_shape *s, int64_t layer,
                         enum refit_layer_kind *out)
{
    (void)c;
    (void)s;
    (void)layer;
    *out = REFIT_LAYER_DENSE;
    return 0;
}

/* VOCABT_OLD_SPEC=1: the table as a plugin built against the header
 * before the MTP fields would give it (its size ends at n_sources), which
 * the core must refuse: that plugin's dst arrays have the older stride. */
static struct refit_model_spec vt_old;

static const struct refit_model_spec *vt_table(void)
{
    if (!getenv("VOCABT_OLD_SPEC"))
        return &vt_spec;
    vt_old = vt_spec;
    vt_old.size = offsetof(struct refit_model_spec, n_sources) + sizeof(vt_old.n_sources);
    return &vt_old;
}

static const struct refit_model_ops vt_ops = {
    .size = sizeof(struct refit_model_ops),
    .claims = vt_claims,
    .shape = vt_shape,
    .layer_kind = vt_layer_kind,
    .table = vt_table,
};

static int vt_load(const struct refit_host *h)
{
    host = h;
    return 0;
}

static const struct refit_plugin vt_plugin = {
    .abi_major = REFIT_ABI_MAJOR,
    .abi_minor = REFIT_ABI_MINOR,
    .kind = REFIT_PLUGIN_MODEL,
    .name = "vocabt",
    .version = "0.1.0",
    .description = "test: an MLA-shaped model in the open vocabulary",
    .load = vt_load,
    .ops = &vt_ops,
};

REFIT_PLUGIN_EXPORT const struct refit_plugin *refit_plugin_entry(void)
{
    return &vt_plugin;
}
