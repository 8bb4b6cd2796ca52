/* qwen3.c — model plugin for dense Qwen3 (HF model_type "qwen3"). */
#include <string.h>

#include "../common/plugin_common.h"
#include "../common/shape_common.h"
#include "../common/spec_common.h"

static const struct refit_host *host;

static const struct refit_model_dim qwen3_dims[] = {
    DIMS_COMMON,
    {"intermediate", "intermediate_size", NULL, D_POS},
    {"qk_norm", NULL, "1", 0}, /* every Qwen3 attention has q_norm and k_norm */
};

static const struct refit_model_entry qwen3_entries[] = {
    E_EMBED, E_LM_HEAD, E_LM_HEAD_TIED, E_FINAL_NORM,
    E_INPUT_NORM, E_QKV_WEIGHT, E_QKV_BIAS, E_Q_NORM, E_K_NORM, E_O_PROJ,
    E_DENSE_NORM, E_DENSE_FC1, E_DENSE_FC2,
};

static const struct refit_target_layout qwen3_targets[] = {TARGETS_ALL};

static const struct refit_model_spec qwen3_spec = RFM_SPEC(qwen3_dims, qwen3_entries, qwen3_targets, NULL);

static int qwen3_claims(const char *model_type)
{
    return model_type && !strcmp(model_type, "qwen3");
}

static int qwen3_shape(const struct refit_model_hfcfg *c, struct refit_model_shape *s)
{
    memset(s, 0, sizeof(*s));
    int rc = rfm_common_shape(host, c, s);
    if (!rc)
        rc = rfm_req_int(host, c, "intermediate_size", &s->intermediate);
    s->qk_norm = true; /* every Qwen3 attention has q_norm and k_norm */
    return rc;
}

static int qwen3_layer_kind(const struct refit_model_hfcfg *c, const struct refit_model_shape *s,
                            int64_t layer, enum refit_layer_kind *out)
{
    (void)c;
    (void)s;
    (void)layer;
    *out = REFIT_LAYER_DENSE;
    return 0;
}

/* The demo's checkpoint (`refit demo --model qwen3`): Qwen3-0.6B-shaped model. */
static int qwen3_example_config(int64_t layers, int64_t vocab, char *buf, size_t cap)
{
    return rfm_example(host, buf, cap,
                       "{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", "
                       "\"num_hidden_layers\": %lld, \"hidden_size\": 1024, \"num_attention_heads\": 16, "
                       "\"num_key_value_heads\": 8, \"head_dim\": 128, \"intermediate_size\": 3072, "
                       "\"vocab_size\": %lld, \"tie_word_embeddings\": true, \"attention_bias\": false, "
                       "\"rms_norm_eps\": 1e-06, \"torch_dtype\": \"bfloat16\"}\n",
                       layers, 28, vocab, 151936);
}

RFM_DEFINE_PLUGIN(qwen3, "qwen3",
                  "Qwen3 dense (model_type qwen3): Megatron, HF and vLLM layouts")
