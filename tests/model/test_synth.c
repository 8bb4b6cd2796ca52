/* test_synth.c — synthetic Qwen3-MoE and GLM-4.5 checkpoints written here
 * (with refit's safetensors writer) from the name tables of
 * ../shared/conversion.md, with awkward shapes: G < tp, hidden sizes off the
 * 128 grid (edge FP8 blocks), attention biases, dense-then-MoE layers, a GLM
 * MTP layer, vocabularies that need padding.  Expected layouts are built
 * here from the document, never through the engine. */
#include "synth.h"
#include "tfix.h"
#include "../check_run.h"

/* The synthetic checkpoint most tests work on, written into tmp by ckpt(),
 * with its model, its HF view and the checkpoint itself (the expectations
 * are built from it): one per test, released by teardown. */
static struct {
    char *dir;
    refit_model_t *m;
    refit_hf_view_t *v;
    refit_st_checkpoint_t *ck;
} S;

static void teardown(void)
{
    refit_st_checkpoint_close(S.ck);
    refit_hf_view_close(S.v);
    refit_model_close(S.m);
    free(S.dir);
    memset(&S, 0, sizeof(S));
    t_teardown();
}


static char *make(const struct dims *d, const char *name, const char *omit, const char *reshape,
                  const char *nan)
{
    char *dir = malloc(4096);
    snprintf(dir, 4096, "%s/%s", tmp, name);
    struct t_ckpt c;
    t_ckpt_begin(&c, d->glm ? 7 : 11);
    c.omit = omit;
    c.reshape = reshape;
    c.nan = nan;
    write_ckpt(d, dir, &c);
    return dir;
}

static refit_model_t *open_model(const char *dir)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/config.json", dir);
    refit_model_t *m;
    ck_assert_msg(refit_model_open(loader, NULL, p, &m) == 0, "%s", refit_error_message());
    return m;
}

static refit_hf_view_t *open_view(refit_model_t *m, const char *dir)
{
    refit_hf_view_t *v;
    ck_assert_msg(refit_hf_view_open(m, dir, NULL, &v) == 0, "%s", refit_error_message());
    return v;
}

static void conv(refit_model_t *m, const refit_hf_view_t *v, struct refit_convert_opts *o, const char *path)
{
    ck_assert_msg(refit_convert_write(m, v, o, path) == 0, "%s", refit_error_message());
}

static void ckpt(const struct dims *d, const char *name, const char *nan)
{
    S.dir = make(d, name, NULL, NULL, nan);
    S.m = open_model(S.dir);
    S.v = open_view(S.m, S.dir);
    ck_assert_int_eq(refit_st_checkpoint_open(S.dir, &S.ck), 0);
}

static struct refit_convert_opts opts(enum refit_model_target t, int tp, int rank, int ep)
{
    struct refit_convert_opts o = {.target = t, .tp = tp, .rank = rank, .ep = ep};
    o.fp8.floor = -1;
    return o;
}

static struct t_mat hf(refit_st_checkpoint_t *ck, const char *fmt, long a, long b)
{
    char name[256];
    snprintf(name, sizeof(name), fmt, a, b);
    const struct refit_st_tensor *t = refit_st_checkpoint_find(ck, name);
    ck_assert_msg(t != NULL, "checkpoint lacks %s", name);
    return t_mat_of(t);
}

/* ------------------------------------------------------------------ */

START_TEST(test_plugins_claim)
{
    char *q = make(&QM, "qm", NULL, NULL, NULL), *g = make(&GL, "glm", NULL, NULL, NULL);
    refit_model_t *mq = open_model(q), *mg = open_model(g);
    ck_assert_str_eq(refit_model_plugin(mq), "qwen3_moe");
    ck_assert_str_eq(refit_model_plugin(mg), "glm");
    enum refit_layer_kind k;
    ck_assert_int_eq(refit_model_layer_kind(mq, 0, &k), 0);
    ck_assert_int_eq(k, REFIT_LAYER_DENSE);
    ck_assert_int_eq(refit_model_layer_kind(mq, 2, &k), 0);
    ck_assert_int_eq(k, REFIT_LAYER_MOE);
    ck_assert_int_eq(refit_model_layer_kind(mg, 2, &k), 0);
    ck_assert_int_eq(k, REFIT_LAYER_MTP);
    const struct refit_model_shape *s = refit_model_shape(mg);
    ck_assert_int_eq(s->experts, 4);
    ck_assert_int_eq(s->head_dim, 48);
    ck_assert(s->attention_bias && !s->qk_norm && s->expert_bias);
    refit_model_close(mq);
    refit_model_close(mg);
    free(q);
    free(g);
}
END_TEST

/* HF -> Megatron (tp, ep) -> HF is identical, for both families. */
START_TEST(test_roundtrip)
{
    static const int cases[][3] = {{0, 1, 1}, {0, 2, 2}, {0, 4, 1}, {0, 1, 2}, {0, 2, 4},
                                   {1, 1, 2}, {1, 2, 2}, {1, 4, 1}, {1, 4, 4}};
    const struct dims *d = cases[_i][0] ? &GL : &QM;
    int tp = cases[_i][1], ep = cases[_i][2];
    ckpt(d, "ck", NULL);
    char sh[4096], a[4096], b[4096];
    refit_hf_view_t *mv;
    snprintf(sh, sizeof(sh), "%s/shards", tmp);
    ck_assert_msg(refit_shard_write(S.m, S.v, tp, ep, NULL, sh) == 0, "%s", refit_error_message());
    ck_assert_msg(refit_hf_view_open_megatron(S.m, sh, NULL, &mv) == 0, "%s", refit_error_message());
    struct refit_convert_opts o = opts(REFIT_TARGET_HF, 1, 0, 0);
    snprintf(a, sizeof(a), "%s/direct.safetensors", tmp);
    snprintf(b, sizeof(b), "%s/via.safetensors", tmp);
    conv(S.m, S.v, &o, a);
    conv(S.m, mv, &o, b);
    t_assert_same_files(a, b);
    /* the hf layout is the checkpoint minus the MTP layer's 5 tensors */
    snprintf(b, sizeof(b), "%s/model.safetensors", S.dir);
    t_assert_subset(a, b, d->glm ? 5 : 0);
    refit_hf_view_close(mv);
}
END_TEST

/* Trainer shards of Qwen3-MoE at tp 4 (G = 2 < tp) and ep 2, built here. */
START_TEST(test_megatron_layout_moe)
{
    const struct dims *d = &QM;
    int tp = 4, ep = 2;
    ckpt(d, "ck", NULL);
    char sh[4096];
    snprintf(sh, sizeof(sh), "%s/shards", tmp);
    ck_assert_int_eq(refit_shard_write(S.m, S.v, tp, ep, NULL, sh), 0);
    for (int r = 0; r < 4; r++) {
        int tr = r % tp, er = r % ep;
        char p[4096], name[256];
        snprintf(p, sizeof(p), "%s/rank%d.safetensors", sh, r);
        refit_st_file_t *f;
        ck_assert_int_eq(refit_st_open(p, &f), 0);
        for (long l = 0; l < d->L; l++) {
            for (int bias = 0; bias < 2; bias++) {
                const char *sfx = bias ? "bias" : "weight";
                char fq[128], fk[128], fv[128];
                snprintf(fq, sizeof(fq), "model.layers.%%ld.self_attn.q_proj.%s", sfx);
                snprintf(fk, sizeof(fk), "model.layers.%%ld.self_attn.k_proj.%s", sfx);
                snprintf(fv, sizeof(fv), "model.layers.%%ld.self_attn.v_proj.%s", sfx);
                struct t_mat q = hf(S.ck, fq, l, 0), k = hf(S.ck, fk, l, 0), vv = hf(S.ck, fv, l, 0);
                struct t_mat all = {0};
                int n = d->H / d->G;
                for (int g = 0; g < d->G; g++) {
                    for (int j = 0; j < n; j++)
                        all = t_mat_cat(all, t_mat_rows(q, (g * n + j) * d->D, d->D));
                    all = t_mat_cat(all, t_mat_rows(k, g * d->D, d->D));
                    all = t_mat_cat(all, t_mat_rows(vv, g * d->D, d->D));
                }
                int64_t per = (d->H + 2 * d->G) * d->D / tp; /* half a group per rank */
                snprintf(name, sizeof(name), "decoder.layers.%ld.self_attention.linear_qkv.%s", l, sfx);
                t_assert_mat(f, name, t_mat_rows(all, tr * per, per));
                free(all.d), free(q.d), free(k.d), free(vv.d);
            }
            if (is_dense(d, (int)l)) {
                snprintf(name, sizeof(name), "decoder.layers.%ld.mlp.linear_fc1.layer_norm_weight", l);
                t_assert_mat(f, name, hf(S.ck, "model.layers.%ld.post_attention_layernorm.weight", l, 0));
                continue;
            }
            snprintf(name, sizeof(name), "decoder.layers.%ld.pre_mlp_layernorm.weight", l);
            t_assert_mat(f, name, hf(S.ck, "model.layers.%ld.post_attention_layernorm.weight", l, 0));
            snprintf(name, sizeof(name), "decoder.layers.%ld.mlp.router.weight", l);
            t_assert_mat(f, name, hf(S.ck, "model.layers.%ld.mlp.gate.weight", l, 0));
            for (int k = 0; k < d->E / ep; k++) {
                long e = er * (d->E / ep) + k; /* contiguous placement */
                snprintf(name, sizeof(name), "decoder.layers.%ld.mlp.experts.linear_fc1.weight%d", l, k);
                t_assert_mat(f, name,
                             t_mat_cat(hf(S.ck, "model.layers.%ld.mlp.experts.%ld.gate_proj.weight", l, e),
                                       hf(S.ck, "model.layers.%ld.mlp.experts.%ld.up_proj.weight", l, e)));
                snprintf(name, sizeof(name), "decoder.layers.%ld.mlp.experts.linear_fc2.weight%d", l, k);
                t_assert_mat(f, name, hf(S.ck, "model.layers.%ld.mlp.experts.%ld.down_proj.weight", l, e));
            }
        }
        /* padded to 128 * tp = 512 rows, 128 per rank; padding rows zero */
        struct t_mat e = t_mat_pad(hf(S.ck, "lm_head.weight", 0, 0), 512 - d->V);
        t_assert_mat(f, "output_layer.weight", t_mat_rows(e, tr * 128, 128));
        free(e.d);
        refit_st_close(f);
    }
}
END_TEST

/* GLM's trainer names: fp32 expert bias, shared experts gated per TP rank. */
START_TEST(test_megatron_layout_glm)
{
    const struct dims *d = &GL;
    ckpt(d, "ck", NULL);
    char sh[4096];
    snprintf(sh, sizeof(sh), "%s/shards", tmp);
    ck_assert_int_eq(refit_shard_write(S.m, S.v, 2, 1, NULL, sh), 0);
    for (int r = 0; r < 2; r++) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/rank%d.safetensors", sh, r);
        refit_st_file_t *f;
        ck_assert_int_eq(refit_st_open(p, &f), 0);
        const struct refit_st_tensor *eb = refit_st_find(f, "decoder.layers.1.mlp.router.expert_bias");
        ck_assert_ptr_nonnull(eb);
        ck_assert_int_eq(eb->dtype, REFIT_DTYPE_F32);
        t_assert_mat(f, "decoder.layers.1.mlp.router.expert_bias",
                     hf(S.ck, "model.layers.%ld.mlp.gate.e_score_correction_bias", 1, 0));
        int64_t per = d->Im / 2;
        t_assert_mat(f, "decoder.layers.1.mlp.shared_experts.linear_fc1.weight",
                     t_mat_cat(t_mat_rows_f(hf(S.ck, "model.layers.%ld.mlp.shared_experts.gate_proj.weight", 1, 0), r * per, per),
                               t_mat_rows_f(hf(S.ck, "model.layers.%ld.mlp.shared_experts.up_proj.weight", 1, 0), r * per, per)));
        t_assert_mat(f, "decoder.layers.1.mlp.shared_experts.linear_fc2.weight",
                     t_mat_slice_f(hf(S.ck, "model.layers.%ld.mlp.shared_experts.down_proj.weight", 1, 0), 0, d->K, r * per, per));
        /* no MTP, no q/k norms for GLM-4.5 */
        for (size_t i = 0; i < refit_st_count(f); i++) {
            const char *n = refit_st_at(f, i)->name;
            ck_assert_msg(!strstr(n, "layers.2."), "MTP tensor %s", n);
            ck_assert_msg(!strstr(n, "q_layernorm"), "GLM has no q norm: %s", n);
        }
        refit_st_close(f);
    }
}
END_TEST

/* vLLM tp 4 (G < tp) without and with expert parallelism, built here. */
START_TEST(test_vllm_layout_moe)
{
    const struct dims *d = &QM;
    int tp = 4, ep = _i ? 4 : 0;
    ckpt(d, "ck", NULL);
    for (int r = 0; r < tp; r++) {
        char p[4096], name[256];
        snprintf(p, sizeof(p), "%s/v%d.safetensors", tmp, r);
        struct refit_convert_opts o = opts(REFIT_TARGET_VLLM, tp, r, ep);
        conv(S.m, S.v, &o, p);
        refit_st_file_t *f;
        ck_assert_int_eq(refit_st_open(p, &f), 0);
        for (long l = 0; l < d->L; l++) {
            int kh = r / (tp / d->G); /* one KV head, replicated over tp/G ranks */
            int hq = d->H / tp;
            snprintf(name, sizeof(name), "model.layers.%ld.self_attn.qkv_proj.weight", l);
            t_assert_mat(f, name,
                         t_mat_cat(t_mat_cat(t_mat_rows_f(hf(S.ck, "model.layers.%ld.self_attn.q_proj.weight", l, 0), r * hq * d->D, hq * d->D),
                                             t_mat_rows_f(hf(S.ck, "model.layers.%ld.self_attn.k_proj.weight", l, 0), kh * d->D, d->D)),
                                   t_mat_rows_f(hf(S.ck, "model.layers.%ld.self_attn.v_proj.weight", l, 0), kh * d->D, d->D)));
            snprintf(name, sizeof(name), "model.layers.%ld.self_attn.qkv_proj.bias", l);
            t_assert_mat(f, name,
                         t_mat_cat(t_mat_cat(t_mat_rows_f(hf(S.ck, "model.layers.%ld.self_attn.q_proj.bias", l, 0), r * hq * d->D, hq * d->D),
                                             t_mat_rows_f(hf(S.ck, "model.layers.%ld.self_attn.k_proj.bias", l, 0), kh * d->D, d->D)),
                                   t_mat_rows_f(hf(S.ck, "model.layers.%ld.self_attn.v_proj.bias", l, 0), kh * d->D, d->D)));
            if (is_dense(d, (int)l))
                continue;
            snprintf(name, sizeof(name), "model.layers.%ld.mlp.gate.weight", l);
            const struct refit_st_tensor *rt = refit_st_find(f, name);
            ck_assert_int_eq(rt->dtype, REFIT_DTYPE_BF16); /* Qwen3-MoE's router stays bf16 */
            t_assert_mat(f, name, hf(S.ck, "model.layers.%ld.mlp.gate.weight", l, 0));
            int nloc = ep ? d->E / ep : d->E, tpm = ep ? 1 : tp, rm = ep ? 0 : r;
            int64_t ip = d->Im / tpm;
            struct t_mat w13 = {0}, w2 = {0};
            for (int s = 0; s < nloc; s++) {
                long e = ep ? r * nloc + s : s;
                w13 = t_mat_cat(w13, t_mat_rows_f(hf(S.ck, "model.layers.%ld.mlp.experts.%ld.gate_proj.weight", l, e), rm * ip, ip));
                w13 = t_mat_cat(w13, t_mat_rows_f(hf(S.ck, "model.layers.%ld.mlp.experts.%ld.up_proj.weight", l, e), rm * ip, ip));
                w2 = t_mat_cat(w2, t_mat_slice_f(hf(S.ck, "model.layers.%ld.mlp.experts.%ld.down_proj.weight", l, e), 0, d->K, rm * ip, ip));
            }
            snprintf(name, sizeof(name), "model.layers.%ld.mlp.experts.w13_weight", l);
            const struct refit_st_tensor *t = refit_st_find(f, name);
            ck_assert_ptr_nonnull(t);
            ck_assert_int_eq(t->ndim, 3);
            ck_assert_int_eq(t->shape[0], nloc);
            ck_assert_int_eq(t->shape[1], 2 * ip);
            ck_assert_int_eq(t->shape[2], d->K);
            t_assert_mat(f, name, w13);
            snprintf(name, sizeof(name), "model.layers.%ld.mlp.experts.w2_weight", l);
            t = refit_st_find(f, name);
            ck_assert_int_eq(t->shape[1], d->K);
            ck_assert_int_eq(t->shape[2], ip);
            t_assert_mat(f, name, w2);
        }
        /* vocabulary 300 padded to 320, 80 rows per rank */
        struct t_mat e = t_mat_pad(hf(S.ck, "model.embed_tokens.weight", 0, 0), 20);
        t_assert_mat(f, "model.embed_tokens.weight", t_mat_rows(e, r * 80, 80));
        free(e.d);
        e = t_mat_pad(hf(S.ck, "lm_head.weight", 0, 0), 20);
        t_assert_mat(f, "lm_head.weight", t_mat_rows(e, r * 80, 80));
        free(e.d);
        refit_st_close(f);
    }
}
END_TEST

/* GLM on vLLM: fp32 router and bias, shared gate_up_proj, no MTP layer. */
START_TEST(test_vllm_layout_glm)
{
    const struct dims *d = &GL;
    ckpt(d, "ck", NULL);
    char p[4096];
    int tp = 2;
    for (int r = 0; r < tp; r++) {
        snprintf(p, sizeof(p), "%s/g%d.safetensors", tmp, r);
        struct refit_convert_opts o = opts(REFIT_TARGET_VLLM, tp, r, 0);
        conv(S.m, S.v, &o, p);
        refit_st_file_t *f;
        ck_assert_int_eq(refit_st_open(p, &f), 0);
        const struct refit_st_tensor *g = refit_st_find(f, "model.layers.1.mlp.gate.weight");
        ck_assert_ptr_nonnull(g);
        ck_assert_int_eq(g->dtype, REFIT_DTYPE_F32);
        struct t_mat src = hf(S.ck, "model.layers.%ld.mlp.gate.weight", 1, 0);
        for (int64_t i = 0; i < d->E * d->K; i++)
            ck_assert(((const float *)g->data)[i] == refit_bf16_to_f32(((uint16_t *)src.d)[i]));
        free(src.d);
        const struct refit_st_tensor *b = refit_st_find(f, "model.layers.1.mlp.gate.e_score_correction_bias");
        ck_assert_int_eq(b->dtype, REFIT_DTYPE_F32);
        t_assert_mat(f, "model.layers.1.mlp.gate.e_score_correction_bias",
                     hf(S.ck, "model.layers.%ld.mlp.gate.e_score_correction_bias", 1, 0));
        int64_t per = d->Im / tp;
        t_assert_mat(f, "model.layers.1.mlp.shared_experts.gate_up_proj.weight",
                     t_mat_cat(t_mat_rows_f(hf(S.ck, "model.layers.%ld.mlp.shared_experts.gate_proj.weight", 1, 0), r * per, per),
                               t_mat_rows_f(hf(S.ck, "model.layers.%ld.mlp.shared_experts.up_proj.weight", 1, 0), r * per, per)));
        per = d->I / tp;
        t_assert_mat(f, "model.layers.0.mlp.gate_up_proj.weight",
                     t_mat_cat(t_mat_rows_f(hf(S.ck, "model.layers.%ld.mlp.gate_proj.weight", 0, 0), r * per, per),
                               t_mat_rows_f(hf(S.ck, "model.layers.%ld.mlp.up_proj.weight", 0, 0), r * per, per)));
        for (size_t i = 0; i < refit_st_count(f); i++)
            ck_assert_msg(!strstr(refit_st_at(f, i)->name, "layers.2."), "MTP tensor %s in output",
                          refit_st_at(f, i)->name);
        ck_assert_ptr_null(refit_st_find(f, "model.layers.0.self_attn.q_norm.weight"));
        /* 250 -> 256 rows, 128 per rank */
        struct t_mat e = t_mat_pad(hf(S.ck, "model.embed_tokens.weight", 0, 0), 6);
        t_assert_mat(f, "model.embed_tokens.weight", t_mat_rows(e, r * 128, 128));
        free(e.d);
        refit_st_close(f);
    }
    struct refit_convert_opts o = opts(REFIT_TARGET_VLLM, 1, 0, 0);
    o.include_mtp = true;
    refit_layout_t *lay;
    ck_assert_int_eq(refit_layout_target(S.m, &o, &lay), REFIT_ENOTSUP);
}
END_TEST

/* EP2 trainer shards -> vLLM TP1 and -> vLLM EP4 give the bytes of the
 * direct conversion. */
START_TEST(test_ep2_shards_to_vllm)
{
    const struct dims *d = _i ? &GL : &QM;
    ckpt(d, "ck", NULL);
    char sh[4096], a[4096], b[4096];
    refit_hf_view_t *mv;
    snprintf(sh, sizeof(sh), "%s/shards", tmp);
    ck_assert_int_eq(refit_shard_write(S.m, S.v, 1, 2, NULL, sh), 0);
    ck_assert_msg(refit_hf_view_open_megatron(S.m, sh, NULL, &mv) == 0, "%s", refit_error_message());
    struct refit_convert_opts o = opts(REFIT_TARGET_VLLM, 1, 0, 0);
    snprintf(a, sizeof(a), "%s/a.safetensors", tmp);
    snprintf(b, sizeof(b), "%s/b.safetensors", tmp);
    conv(S.m, S.v, &o, a);
    conv(S.m, mv, &o, b);
    t_assert_same_files(a, b);
    for (int r = 0; r < 4; r++) {
        o = opts(REFIT_TARGET_VLLM, 4, r, 4);
        conv(S.m, S.v, &o, a);
        conv(S.m, mv, &o, b);
        t_assert_same_files(a, b);
    }
    refit_hf_view_close(mv);
}
END_TEST

/* module. prefixes and the SequentialMLP spelling are read as well. */
START_TEST(test_megatron_spellings)
{
    const struct dims *d = &QM;
    ckpt(d, "ck", NULL);
    char sh[4096], a[4096], b[4096];
    refit_hf_view_t *mv;
    snprintf(sh, sizeof(sh), "%s/shards", tmp);
    ck_assert_int_eq(refit_shard_write(S.m, S.v, 2, 2, NULL, sh), 0);
    static const char *keys[] = {"refit.tp", "refit.ep", "refit.etp", "refit.tp_rank", "refit.ep_rank",
                                 "refit.etp_rank", "refit.vocab_divisible_by"};
    for (int r = 0; r < 2; r++) {
        char p[4096], q[4096];
        snprintf(p, sizeof(p), "%s/rank%d.safetensors", sh, r);
        snprintf(q, sizeof(q), "%s/new%d.safetensors", sh, r);
        refit_st_file_t *f;
        refit_st_writer_t *w;
        ck_assert_int_eq(refit_st_open(p, &f), 0);
        ck_assert_int_eq(refit_st_writer_create(&w), 0);
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
            ck_assert_int_eq(refit_st_writer_set_metadata(w, keys[k], refit_st_metadata(f, keys[k])), 0);
        for (size_t i = 0; i < refit_st_count(f); i++) {
            const struct refit_st_tensor *t = refit_st_at(f, i);
            char name[512], *x;
            int k;
            if ((x = strstr(t->name, "mlp.experts.linear_fc")) && sscanf(x + 22, ".weight%d", &k) == 1)
                snprintf(name, sizeof(name), "module.%.*smlp.experts.local_experts.%d.linear_fc%c.weight",
                         (int)(x - t->name), t->name, k, x[21]);
            else
                snprintf(name, sizeof(name), "module.%s", t->name);
            ck_assert_int_eq(refit_st_writer_add(w, name, t->dtype, t->ndim, t->shape, t->data, t->nbytes), 0);
        }
        ck_assert_int_eq(refit_st_writer_write(w, q), 0);
        refit_st_writer_destroy(w);
        refit_st_close(f);
        ck_assert_int_eq(rename(q, p), 0);
    }
    refit_st_file_t *f;
    snprintf(a, sizeof(a), "%s/rank1.safetensors", sh);
    ck_assert_int_eq(refit_st_open(a, &f), 0);
    ck_assert_ptr_nonnull(refit_st_find(f, "module.decoder.layers.2.mlp.experts.local_experts.1.linear_fc2.weight"));
    refit_st_close(f);
    ck_assert_msg(refit_hf_view_open_megatron(S.m, sh, NULL, &mv) == 0, "%s", refit_error_message());
    struct refit_convert_opts o = opts(REFIT_TARGET_HF, 1, 0, 0);
    snprintf(a, sizeof(a), "%s/a.safetensors", tmp);
    snprintf(b, sizeof(b), "%s/b.safetensors", tmp);
    conv(S.m, S.v, &o, a);
    conv(S.m, mv, &o, b);
    t_assert_same_files(a, b);
    refit_hf_view_close(mv);
}
END_TEST

/* FP8 with edge blocks (K = 200, 160): the hf layout per HF tensor, and the
 * vLLM expert stacks under expert parallelism, against the reference. */
static void check_fp8_file(const char *fp8, const char *bf16, int rule)
{
    refit_st_file_t *f, *b;
    ck_assert_int_eq(refit_st_open(fp8, &f), 0);
    ck_assert_int_eq(refit_st_open(bf16, &b), 0);
    int quantized = 0;
    for (size_t i = 0; i < refit_st_count(f); i++) {
        const struct refit_st_tensor *y = refit_st_at(f, i);
        if (y->dtype != REFIT_DTYPE_F8_E4M3)
            continue;
        quantized++;
        const struct refit_st_tensor *x = refit_st_find(b, y->name);
        char sname[512];
        snprintf(sname, sizeof(sname), "%s_scale_inv", y->name);
        const struct refit_st_tensor *s = refit_st_find(f, sname);
        ck_assert_msg(s && s->dtype == REFIT_DTYPE_F32, "%s: no scale", y->name);
        int64_t ne = y->ndim == 3 ? y->shape[0] : 1;
        int64_t rows = y->shape[y->ndim - 2], cols = y->shape[y->ndim - 1];
        int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
        ck_assert_int_eq(s->ndim, y->ndim);
        ck_assert_int_eq(s->shape[s->ndim - 2], br);
        ck_assert_int_eq(s->shape[s->ndim - 1], bc);
        uint8_t *q = malloc((size_t)(ne * rows * cols));
        float *sc = malloc((size_t)(ne * br * bc) * sizeof(float));
        for (int64_t e = 0; e < ne; e++)
            t_fp8_ref((const uint16_t *)x->data + e * rows * cols, rows, cols, rule, rule ? 1e-4 : 1e-12,
                      q + e * rows * cols, sc + e * br * bc);
        t_assert_bytes(s, sc, (size_t)(ne * br * bc) * sizeof(float), sname);
        t_assert_bytes(y, q, (size_t)(ne * rows * cols), y->name);
        free(q);
        free(sc);
    }
    ck_assert_int_gt(quantized, 0);
    for (size_t i = 0; i < refit_st_count(f); i++) {
        const char *n = refit_st_at(f, i)->name;
        ck_assert_msg(!(strstr(n, "norm") || strstr(n, "embed") || strstr(n, "lm_head") ||
                        strstr(n, "mlp.gate.") || strstr(n, "bias")) ||
                          refit_st_at(f, i)->dtype != REFIT_DTYPE_F8_E4M3,
                      "%s must not be quantized", n);
    }
    refit_st_close(f);
    refit_st_close(b);
}

START_TEST(test_fp8_edges)
{
    const struct dims *d = _i / 2 ? &GL : &QM;
    int rule = _i % 2;
    ckpt(d, "ck", NULL);
    char a[4096], b[4096];
    snprintf(a, sizeof(a), "%s/fp8.safetensors", tmp);
    snprintf(b, sizeof(b), "%s/bf16.safetensors", tmp);
    struct refit_convert_opts o = opts(REFIT_TARGET_HF, 1, 0, 0);
    conv(S.m, S.v, &o, b);
    o.fp8.enabled = true;
    o.fp8.rule = rule ? REFIT_FP8_DEEPGEMM : REFIT_FP8_TRAINER;
    conv(S.m, S.v, &o, a);
    check_fp8_file(a, b, rule);
    if (!d->glm) {
        /* vLLM with ep 4: whole experts (Im 128) pass the 128-grid rule; the
         * attention and dense MLP at tp 4 do not and are excluded */
        const char *ex[] = {"*.self_attn.*", "*.mlp.gate_up_proj.*", "*.mlp.down_proj.*"};
        for (int r = 0; r < 4; r++) {
            struct refit_convert_opts p = opts(REFIT_TARGET_VLLM, 4, r, 4);
            conv(S.m, S.v, &p, b);
            p.fp8 = o.fp8;
            p.fp8.exclude = ex;
            p.fp8.n_exclude = 3;
            conv(S.m, S.v, &p, a);
            check_fp8_file(a, b, rule);
        }
        /* without ep, w13 holds 32 rows of gate per rank: refused */
        struct refit_convert_opts p = opts(REFIT_TARGET_VLLM, 4, 0, 0);
        p.fp8 = o.fp8;
        p.fp8.exclude = ex;
        p.fp8.n_exclude = 3;
        ck_assert_int_eq(refit_convert_write(S.m, S.v, &p, a), REFIT_EINVAL);
        ck_assert_msg(strstr(refit_error_message(), "w13_weight") &&
                          strstr(refit_error_message(), "gate_proj") &&
                          strstr(refit_error_message(), "32 rows"),
                      "%s", refit_error_message());
    }
}
END_TEST


/* Composing an inference layout with the trainer ranks' layouts tells,
 * for every destination byte, which trainer shard holds it: executing that
 * map from the shard files gives the direct conversion's bytes. */
START_TEST(test_compose)
{
    const struct dims *d = &QM;
    static const int cases[][3] = {{2, 0, 0}, {2, 1, 0}, {4, 3, 4}, {1, 0, 0}};
    int vtp = cases[_i][0], vr = cases[_i][1], vep = cases[_i][2];
    int ttp = 4, tep = 2; /* trainer: 4 ranks, G = 2 < tp */
    ckpt(d, "ck", NULL);
    char sh[4096], a[4096];
    snprintf(sh, sizeof(sh), "%s/shards", tmp);
    ck_assert_int_eq(refit_shard_write(S.m, S.v, ttp, tep, NULL, sh), 0);
    refit_layout_t *tl[4];
    refit_st_file_t *tf[4];
    for (int r = 0; r < 4; r++) {
        struct refit_megatron_rank mr = {ttp, tep, 1, r % ttp, r % tep, 0, 128};
        ck_assert_int_eq(refit_layout_megatron(S.m, &mr, NULL, &tl[r]), 0);
        char p[4096];
        snprintf(p, sizeof(p), "%s/rank%d.safetensors", sh, r);
        ck_assert_int_eq(refit_st_open(p, &tf[r]), 0);
    }
    struct refit_convert_opts o = opts(REFIT_TARGET_VLLM, vtp, vr, vep);
    refit_layout_t *dl;
    ck_assert_int_eq(refit_layout_target(S.m, &o, &dl), 0);
    refit_layout_xmap_t *x;
    ck_assert_msg(refit_layout_compose(dl, (const refit_layout_t *const *)tl, 4, &x) == 0, "%s",
                  refit_error_message());
    snprintf(a, sizeof(a), "%s/direct.safetensors", tmp);
    conv(S.m, S.v, &o, a);
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(a, &f), 0);
    size_t n = refit_layout_count(dl);
    char **img = calloc(n, sizeof(*img));
    for (size_t i = 0; i < n; i++) {
        const struct refit_layout_tensor *t = refit_layout_at(dl, i);
        img[i] = calloc(refit_st_find(f, t->name)->nbytes, 1);
    }
    for (size_t k = 0; k < refit_layout_xmap_count(x); k++) {
        const struct refit_layout_xpiece *p = refit_layout_xmap_at(x, k);
        const struct refit_layout_tensor *t = refit_layout_at(dl, p->dst);
        if (!strcmp(t->name, "model.norm.weight"))
            ck_assert_uint_eq(p->n_cand, 4); /* every trainer rank holds it */
        const struct refit_layout_cand *c = &p->cand[p->n_cand - 1];
        const struct refit_layout_tensor *st = refit_layout_at(tl[c->rank], c->tensor);
        const struct refit_st_tensor *src = refit_st_find(tf[c->rank], st->name);
        ck_assert_ptr_nonnull(src);
        int64_t scols = src->ndim == 2 ? src->shape[1] : 1;
        int64_t drows = t->ndim == 1 ? t->shape[0] : t->shape[t->ndim - 2];
        int64_t dcols = t->ndim == 1 ? 1 : t->shape[t->ndim - 1];
        for (int64_t r = 0; r < p->rows; r++)
            memcpy(img[p->dst] + ((p->dst_index * drows + p->dst_row + r) * dcols + p->dst_col) * 2,
                   (const char *)src->data + ((c->src_row + r) * scols + c->src_col) * 2, (size_t)p->cols * 2);
    }
    for (size_t i = 0; i < n; i++) {
        const struct refit_layout_tensor *t = refit_layout_at(dl, i);
        const struct refit_st_tensor *want = refit_st_find(f, t->name);
        t_assert_bytes(want, img[i], want->nbytes, t->name);
        free(img[i]);
    }
    free(img);
    refit_st_close(f);
    refit_layout_xmap_destroy(x);
    /* a trainer rank missing: the experts it held are on no rank */
    ck_assert_int_eq(refit_layout_compose(dl, (const refit_layout_t *const *)tl, 1, &x), REFIT_ENOENT);
    refit_layout_destroy(dl);
    for (int r = 0; r < 4; r++) {
        refit_layout_destroy(tl[r]);
        refit_st_close(tf[r]);
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* Error paths */

START_TEST(test_unknown_model_type)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/config.json", tmp);
    t_write_file(p, "{\"model_type\": \"llama_zz\", \"num_hidden_layers\": 2}");
    refit_model_t *m = NULL;
    ck_assert_int_eq(refit_model_open(loader, "auto", p, &m), REFIT_ENOENT);
    ck_assert_msg(strstr(refit_error_message(), "llama_zz") && strstr(refit_error_message(), "qwen3"),
                  "%s", refit_error_message());
    /* a named plugin that does not claim the model */
    t_write_file(p, QM_CONFIG);
    ck_assert_int_eq(refit_model_open(loader, "qwen3", p, &m), REFIT_EINVAL);
    ck_assert_ptr_null(m);
    /* a required key missing is named */
    t_write_file(p, "{\"model_type\": \"qwen3\", \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                    " \"vocab_size\": 10, \"intermediate_size\": 8}");
    ck_assert_int_eq(refit_model_open(loader, NULL, p, &m), REFIT_EPROTO);
    ck_assert_msg(strstr(refit_error_message(), "hidden_size"), "%s", refit_error_message());
    t_write_file(p, "{\"model_type\": ");
    ck_assert_int_eq(refit_model_open(loader, NULL, p, &m), REFIT_EPROTO);
}
END_TEST

START_TEST(test_missing_and_misshaped)
{
    const char *omit = "model.layers.2.mlp.experts.3.up_proj.weight";
    char *dir = make(&QM, "missing", omit, NULL, NULL);
    refit_model_t *m = open_model(dir);
    refit_hf_view_t *v = NULL;
    ck_assert_int_eq(refit_hf_view_open(m, dir, NULL, &v), REFIT_ENOENT);
    ck_assert_msg(strstr(refit_error_message(), omit), "%s", refit_error_message());
    refit_model_close(m);
    free(dir);
    const char *bad = "model.layers.1.self_attn.k_proj.bias";
    dir = make(&GL, "misshaped", NULL, bad, NULL);
    m = open_model(dir);
    ck_assert_int_eq(refit_hf_view_open(m, dir, NULL, &v), REFIT_EPROTO);
    ck_assert_msg(strstr(refit_error_message(), bad) && strstr(refit_error_message(), "[97]"), "%s",
                  refit_error_message());
    ck_assert_ptr_null(v);
    refit_model_close(m);
    free(dir);
}
END_TEST

START_TEST(test_corrupt_file)
{
    char *dir = make(&QM, "corrupt", NULL, NULL, NULL), p[4096];
    snprintf(p, sizeof(p), "%s/model.safetensors", dir);
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_int_eq(truncate(p, st.st_size - 100), 0);
    refit_model_t *m = open_model(dir);
    refit_hf_view_t *v = NULL;
    ck_assert_int_ne(refit_hf_view_open(m, dir, NULL, &v), 0);
    ck_assert_msg(strstr(refit_error_message(), "model.safetensors"), "%s", refit_error_message());
    /* a garbage header */
    t_write_file(p, "\x10\0\0\0\0\0\0\0{not json at all");
    ck_assert_int_ne(refit_hf_view_open(m, dir, NULL, &v), 0);
    refit_model_close(m);
    free(dir);
}
END_TEST

START_TEST(test_megatron_missing_rank)
{
    ckpt(&QM, "ck", NULL);
    char sh[4096], p[4096];
    refit_hf_view_t *mv = NULL;
    snprintf(sh, sizeof(sh), "%s/shards", tmp);
    ck_assert_int_eq(refit_shard_write(S.m, S.v, 2, 4, NULL, sh), 0);
    snprintf(p, sizeof(p), "%s/rank3.safetensors", sh);
    ck_assert_int_eq(unlink(p), 0);
    ck_assert_int_eq(refit_hf_view_open_megatron(S.m, sh, NULL, &mv), REFIT_ENOENT);
    ck_assert_msg(strstr(refit_error_message(), "experts.3"), "%s", refit_error_message());
}
END_TEST

START_TEST(test_nan_input)
{
    const char *bad = "model.layers.1.mlp.experts.2.down_proj.weight";
    ckpt(&QM, "nan", bad);
    char p[4096];
    snprintf(p, sizeof(p), "%s/out.safetensors", tmp);
    struct refit_convert_opts o = opts(REFIT_TARGET_HF, 1, 0, 0);
    o.fp8.enabled = true;
    ck_assert_int_eq(refit_convert_write(S.m, S.v, &o, p), REFIT_ENUMERIC);
    ck_assert_msg(strstr(refit_error_message(), bad), "%s", refit_error_message());
    /* on vLLM the stack names the tensor and the expert slot */
    o = opts(REFIT_TARGET_VLLM, 1, 0, 0);
    o.fp8.enabled = true;
    const char *ex[] = {"*.self_attn.*", "*.mlp.gate_up_proj.*"};
    o.fp8.exclude = ex;
    o.fp8.n_exclude = 2;
    ck_assert_int_eq(refit_convert_write(S.m, S.v, &o, p), REFIT_ENUMERIC);
    ck_assert_msg(strstr(refit_error_message(), "model.layers.1.mlp.experts.w2_weight") &&
                      strstr(refit_error_message(), "slot 2"),
                  "%s", refit_error_message());
    struct stat st;
    ck_assert_int_ne(stat(p, &st), 0); /* nothing written */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model_synth");
    TCase *tc = tcase_create("synth");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, t_setup, teardown);
    tcase_add_test(tc, test_plugins_claim);
    tcase_add_loop_test(tc, test_roundtrip, 0, 9);
    tcase_add_test(tc, test_megatron_layout_moe);
    tcase_add_test(tc, test_megatron_layout_glm);
    tcase_add_loop_test(tc, test_vllm_layout_moe, 0, 2);
    tcase_add_test(tc, test_vllm_layout_glm);
    tcase_add_loop_test(tc, test_ep2_shards_to_vllm, 0, 2);
    tcase_add_test(tc, test_megatron_spellings);
    tcase_add_loop_test(tc, test_compose, 0, 4);
    tcase_add_loop_test(tc, test_fp8_edges, 0, 4);
    tcase_add_test(tc, test_unknown_model_type);
    tcase_add_test(tc, test_missing_and_misshaped);
    tcase_add_test(tc, test_corrupt_file);
    tcase_add_test(tc, test_megatron_missing_rank);
    tcase_add_test(tc, test_nan_input);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? 1 : 0;
}
