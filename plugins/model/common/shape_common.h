/* shape_common.h — reading config.json fields through the core's getter,
 * shared by the model plugins (header-only, static inline). */
#ifndef REFIT_MODEL_SHAPE_COMMON_H
#define REFIT_MODEL_SHAPE_COMMON_H

#include <stdio.h>

#include "refit/model.h"
#include "refit/plugin.h"
#include "refit/status.h"

/* The example_config op's printing: fmt takes the layer count, then the
 * vocabulary size (%lld each): layers and vocab when > 0, else the
 * example's own.  REFIT_ERANGE when it does not fit. */
static inline int rfm_example(const struct refit_host *h, char *buf, size_t cap, const char *fmt, int64_t layers,
                              int64_t def_layers, int64_t vocab, int64_t def_vocab)
{
    int n = snprintf(buf, cap, fmt, (long long)(layers > 0 ? layers : def_layers),
                     (long long)(vocab > 0 ? vocab : def_vocab));
    if (n < 0 || (size_t)n >= cap)
        return h->error_set(REFIT_ERANGE, "example config.json needs %d bytes, %zu given", n + 1, cap);
    return 0;
}

/* A required positive integer; the error names the key. */
static inline int rfm_req_int(const struct refit_host *h, const struct refit_model_hfcfg *c,
                              const char *key, int64_t *out)
{
    int rc = c->get_int(c->ctx, key, out);
    if (rc == REFIT_ENOENT)
        return h->error_set(REFIT_EPROTO, "config.json: required key '%s' is missing", key);
    if (rc)
        return h->error_push(rc, "config.json: key '%s'", key);
    if (*out <= 0)
        return h->error_set(REFIT_EPROTO, "config.json: key '%s' must be positive, not %lld", key,
                            (long long)*out);
    return 0;
}

/* An optional integer with a default. */
static inline int rfm_opt_int(const struct refit_host *h, const struct refit_model_hfcfg *c,
                              const char *key, int64_t def, int64_t *out)
{
    int rc = c->get_int(c->ctx, key, out);
    if (rc == REFIT_ENOENT) {
        *out = def;
        return 0;
    }
    if (rc)
        return h->error_push(rc, "config.json: key '%s'", key);
    if (*out < 0)
        return h->error_set(REFIT_EPROTO, "config.json: key '%s' may not be negative", key);
    return 0;
}

static inline int rfm_opt_bool(const struct refit_host *h, const struct refit_model_hfcfg *c,
                               const char *key, bool def, bool *out)
{
    int rc = c->get_bool(c->ctx, key, out);
    if (rc == REFIT_ENOENT) {
        *out = def;
        return 0;
    }
    return rc ? h->error_push(rc, "config.json: key '%s'", key) : 0;
}

/* The attention and vocabulary fields every family has. */
static inline int rfm_common_shape(const struct refit_host *h, const struct refit_model_hfcfg *c,
                                   struct refit_model_shape *s)
{
    int rc;
    if ((rc = rfm_req_int(h, c, "num_hidden_layers", &s->n_layers)) ||
        (rc = rfm_req_int(h, c, "hidden_size", &s->hidden)) ||
        (rc = rfm_req_int(h, c, "num_attention_heads", &s->heads)) ||
        (rc = rfm_req_int(h, c, "vocab_size", &s->vocab)) ||
        (rc = rfm_opt_int(h, c, "num_key_value_heads", s->heads, &s->kv_heads)) ||
        (rc = rfm_opt_bool(h, c, "tie_word_embeddings", false, &s->tie_word_embeddings)) ||
        (rc = rfm_opt_bool(h, c, "attention_bias", false, &s->attention_bias)))
        return rc;
    /* head_dim from the config: hidden/heads is wrong for Qwen3 and GLM. */
    rc = c->get_int(c->ctx, "head_dim", &s->head_dim);
    if (rc == REFIT_ENOENT) {
        s->head_dim = s->hidden / s->heads;
        rc = 0;
    }
    if (rc)
        return h->error_push(rc, "config.json: key 'head_dim'");
    if (s->head_dim <= 0 || s->kv_heads <= 0 || s->heads % s->kv_heads)
        return h->error_set(REFIT_EPROTO,
                            "config.json: num_attention_heads %lld is not a multiple of "
                            "num_key_value_heads %lld (or head_dim %lld invalid)",
                            (long long)s->heads, (long long)s->kv_heads, (long long)s->head_dim);
    return 0;
}

/* Expert count: num_experts (Qwen3-MoE on the hub), num_local_experts
 * (transformers 5), n_routed_experts (GLM). */
static inline int rfm_expert_count(const struct refit_host *h, const struct refit_model_hfcfg *c,
                                   int64_t *out)
{
    static const char *keys[] = {"num_experts", "num_local_experts", "n_routed_experts"};
    for (int i = 0; i < 3; i++) {
        int rc = c->get_int(c->ctx, keys[i], out);
        if (rc == REFIT_ENOENT)
            continue;
        if (rc)
            return h->error_push(rc, "config.json: key '%s'", keys[i]);
        if (*out <= 0)
            return h->error_set(REFIT_EPROTO, "config.json: key '%s' must be positive", keys[i]);
        return 0;
    }
    return h->error_set(REFIT_EPROTO, "config.json: no expert count (num_experts, "
                                      "num_local_experts or n_routed_experts)");
}

#endif
