/* test_qwen3_tiny.c — golden tests on ../shared/fixtures/qwen3-tiny (a real
 * HF checkpoint written by transformers): HF -> Megatron -> HF byte
 * identity, the Megatron and vLLM layouts against constructions written
 * here from ../shared/conversion.md, and FP8 block by block. */
#include "tutil.h"
#include "../check_run.h"

static char *fixture;
static refit_loader_t *loader;
static refit_model_t *model;
static refit_st_checkpoint_t *ck;
/* qwen3-tiny: H 8, G 4, d 64, K 256, I 512, V 512, tied */
enum { H = 8, G = 4, D = 64, K = 256, I = 512, V = 512, L = 2 };

static void setup(void)
{
    ck_assert_int_eq(refit_loader_create(NULL, &loader), 0);
    char p[4096];
    snprintf(p, sizeof(p), "%s/config.json", fixture);
    ck_assert_msg(refit_model_open(loader, "auto", p, &model) == 0, "%s", refit_error_message());
    ck_assert_int_eq(refit_st_checkpoint_open(fixture, &ck), 0);
}

static void teardown(void)
{
    refit_st_checkpoint_close(ck);
    refit_model_close(model);
    refit_loader_destroy(loader);
}

static struct t_mat hf(const char *fmt, long layer)
{
    char name[256];
    snprintf(name, sizeof(name), fmt, layer);
    const struct refit_st_tensor *t = refit_st_checkpoint_find(ck, name);
    ck_assert_msg(t != NULL, "fixture lacks %s", name);
    return t_mat_of(t);
}

START_TEST(test_model_shape)
{
    const struct refit_model_shape *s = refit_model_shape(model);
    ck_assert_str_eq(refit_model_plugin(model), "qwen3");
    ck_assert_int_eq(s->heads, H);
    ck_assert_int_eq(s->kv_heads, G);
    ck_assert_int_eq(s->head_dim, D); /* from the config, not hidden/heads = 32 */
    ck_assert(s->tie_word_embeddings);
    ck_assert(s->qk_norm);
}
END_TEST

static void convert_to(const refit_hf_view_t *v, enum refit_model_target target, int tp, int rank,
                       const char *fp8, const char *path)
{
    struct refit_convert_opts o = {.target = target, .tp = tp, .rank = rank};
    o.fp8.floor = -1;
    if (fp8) {
        o.fp8.enabled = true;
        o.fp8.rule = !strcmp(fp8, "deepgemm") ? REFIT_FP8_DEEPGEMM : REFIT_FP8_TRAINER;
    }
    ck_assert_msg(refit_convert_write(model, v, &o, path) == 0, "%s", refit_error_message());
}

/* HF -> Megatron (tp 1, 2, 4) -> HF is byte-identical to the fixture. */
START_TEST(test_roundtrip_megatron)
{
    static const int tps[] = {1, 2, 4};
    int tp = tps[_i];
    char *dir = t_mkdtemp(), sh[4096], out[4096], ref[4096];
    refit_hf_view_t *v, *mv;
    ck_assert_int_eq(refit_hf_view_open(model, fixture, NULL, &v), 0);
    snprintf(sh, sizeof(sh), "%s/shards", dir);
    ck_assert_msg(refit_shard_write(model, v, tp, 1, NULL, sh) == 0, "%s", refit_error_message());
    ck_assert_msg(refit_hf_view_open_megatron(model, sh, NULL, &mv) == 0, "%s", refit_error_message());
    snprintf(out, sizeof(out), "%s/hf.safetensors", dir);
    convert_to(mv, REFIT_TARGET_HF, 1, 0, NULL, out);
    snprintf(ref, sizeof(ref), "%s/model.safetensors", fixture);
    t_assert_same_files(ref, out);
    t_assert_same_files(out, ref);
    refit_hf_view_close(mv);
    refit_hf_view_close(v);
    t_rmtree(dir);
    free(dir);
}
END_TEST

/* The trainer shards themselves, built here from conversion.md section 2. */
START_TEST(test_megatron_layout)
{
    static const int tps[] = {1, 2, 4};
    int tp = tps[_i];
    char *dir = t_mkdtemp(), sh[4096];
    refit_hf_view_t *v;
    ck_assert_int_eq(refit_hf_view_open(model, fixture, NULL, &v), 0);
    snprintf(sh, sizeof(sh), "%s/shards", dir);
    ck_assert_int_eq(refit_shard_write(model, v, tp, 1, NULL, sh), 0);
    for (int r = 0; r < tp; r++) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/rank%d.safetensors", sh, r);
        refit_st_file_t *f;
        ck_assert_int_eq(refit_st_open(p, &f), 0);
        ck_assert_ptr_null(refit_st_find(f, "output_layer.weight")); /* tied */
        for (long l = 0; l < L; l++) {
            struct t_mat q = hf("model.layers.%ld.self_attn.q_proj.weight", l);
            struct t_mat k = hf("model.layers.%ld.self_attn.k_proj.weight", l);
            struct t_mat vv = hf("model.layers.%ld.self_attn.v_proj.weight", l);
            /* interleaved per group: n query heads, its key head, its value head */
            struct t_mat all = {0};
            int n = H / G;
            for (int g = 0; g < G; g++) {
                for (int j = 0; j < n; j++)
                    all = t_mat_cat(all, t_mat_rows(q, (g * n + j) * D, D));
                all = t_mat_cat(all, t_mat_rows(k, g * D, D));
                all = t_mat_cat(all, t_mat_rows(vv, g * D, D));
            }
            int64_t per = (H + 2 * G) * D / tp;
            char name[256];
            snprintf(name, sizeof(name), "decoder.layers.%ld.self_attention.linear_qkv.weight", l);
            t_assert_mat(f, name, t_mat_rows(all, r * per, per));
            free(all.d);
            free(q.d), free(k.d), free(vv.d);
            struct t_mat gate = hf("model.layers.%ld.mlp.gate_proj.weight", l);
            struct t_mat up = hf("model.layers.%ld.mlp.up_proj.weight", l);
            snprintf(name, sizeof(name), "decoder.layers.%ld.mlp.linear_fc1.weight", l);
            t_assert_mat(f, name, t_mat_cat(t_mat_rows(gate, r * I / tp, I / tp), t_mat_rows(up, r * I / tp, I / tp)));
            free(gate.d), free(up.d);
            struct t_mat o = hf("model.layers.%ld.self_attn.o_proj.weight", l);
            snprintf(name, sizeof(name), "decoder.layers.%ld.self_attention.linear_proj.weight", l);
            t_assert_mat(f, name, t_mat_slice(o, 0, K, r * H * D / tp, H * D / tp));
            free(o.d);
            struct t_mat dn = hf("model.layers.%ld.mlp.down_proj.weight", l);
            snprintf(name, sizeof(name), "decoder.layers.%ld.mlp.linear_fc2.weight", l);
            t_assert_mat(f, name, t_mat_slice(dn, 0, K, r * I / tp, I / tp));
            free(dn.d);
            struct t_mat ln = hf("model.layers.%ld.post_attention_layernorm.weight", l);
            snprintf(name, sizeof(name), "decoder.layers.%ld.mlp.linear_fc1.layer_norm_weight", l);
            t_assert_mat(f, name, ln);
            struct t_mat qn = hf("model.layers.%ld.self_attn.q_norm.weight", l);
            snprintf(name, sizeof(name), "decoder.layers.%ld.self_attention.q_layernorm.weight", l);
            t_assert_mat(f, name, qn);
        }
        /* vocabulary padded to a multiple of 128 * tp, rows split */
        struct t_mat e = hf("model.embed_tokens.weight", 0);
        int64_t vp = (V + 128 * tp - 1) / (128 * tp) * (128 * tp);
        e = t_mat_pad(e, vp - V);
        t_assert_mat(f, "embedding.word_embeddings.weight", t_mat_rows(e, r * vp / tp, vp / tp));
        free(e.d);
        refit_st_close(f);
    }
    refit_hf_view_close(v);
    t_rmtree(dir);
    free(dir);
}
END_TEST

/* vLLM rank r of tp, built here from conversion.md section 3. */
START_TEST(test_vllm_layout)
{
    static const int tps[] = {1, 2, 4};
    int tp = tps[_i];
    char *dir = t_mkdtemp();
    refit_hf_view_t *v;
    ck_assert_int_eq(refit_hf_view_open(model, fixture, NULL, &v), 0);
    for (int r = 0; r < tp; r++) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/vllm%d.safetensors", dir, r);
        convert_to(v, REFIT_TARGET_VLLM, tp, r, NULL, p);
        refit_st_file_t *f;
        ck_assert_int_eq(refit_st_open(p, &f), 0);
        /* 2 globals (embedding, norm; tied: no lm_head) + 8 per layer */
        ck_assert_uint_eq(refit_st_count(f), 2 + 8 * L);
        ck_assert_ptr_null(refit_st_find(f, "lm_head.weight"));
        for (long l = 0; l < L; l++) {
            struct t_mat q = hf("model.layers.%ld.self_attn.q_proj.weight", l);
            struct t_mat k = hf("model.layers.%ld.self_attn.k_proj.weight", l);
            struct t_mat vv = hf("model.layers.%ld.self_attn.v_proj.weight", l);
            int hq = H / tp;
            struct t_mat want = t_mat_rows(q, r * hq * D, hq * D);
            if (tp >= G) { /* one KV head, replicated over tp/G ranks */
                int kh = r / (tp / G);
                want = t_mat_cat(want, t_mat_rows(k, kh * D, D));
                want = t_mat_cat(want, t_mat_rows(vv, kh * D, D));
            } else {
                int g = G / tp;
                want = t_mat_cat(want, t_mat_rows(k, r * g * D, g * D));
                want = t_mat_cat(want, t_mat_rows(vv, r * g * D, g * D));
            }
            char name[256];
            snprintf(name, sizeof(name), "model.layers.%ld.self_attn.qkv_proj.weight", l);
            t_assert_mat(f, name, want);
            free(q.d), free(k.d), free(vv.d);
            struct t_mat gate = hf("model.layers.%ld.mlp.gate_proj.weight", l);
            struct t_mat up = hf("model.layers.%ld.mlp.up_proj.weight", l);
            snprintf(name, sizeof(name), "model.layers.%ld.mlp.gate_up_proj.weight", l);
            t_assert_mat(f, name, t_mat_cat(t_mat_rows(gate, r * I / tp, I / tp), t_mat_rows(up, r * I / tp, I / tp)));
            free(gate.d), free(up.d);
            struct t_mat o = hf("model.layers.%ld.self_attn.o_proj.weight", l);
            snprintf(name, sizeof(name), "model.layers.%ld.self_attn.o_proj.weight", l);
            t_assert_mat(f, name, t_mat_slice(o, 0, K, r * H * D / tp, H * D / tp));
            free(o.d);
            struct t_mat dn = hf("model.layers.%ld.mlp.down_proj.weight", l);
            snprintf(name, sizeof(name), "model.layers.%ld.mlp.down_proj.weight", l);
            t_assert_mat(f, name, t_mat_slice(dn, 0, K, r * I / tp, I / tp));
            free(dn.d);
            struct t_mat kn = hf("model.layers.%ld.self_attn.k_norm.weight", l);
            snprintf(name, sizeof(name), "model.layers.%ld.self_attn.k_norm.weight", l);
            t_assert_mat(f, name, kn);
        }
        struct t_mat e = hf("model.embed_tokens.weight", 0);
        int64_t vp = (V + 63) / 64 * 64;
        e = t_mat_pad(e, vp - V);
        t_assert_mat(f, "model.embed_tokens.weight", t_mat_rows(e, r * vp / tp, vp / tp));
        free(e.d);
        t_assert_mat(f, "model.norm.weight", hf("model.norm.weight", 0));
        refit_st_close(f);
    }
    refit_hf_view_close(v);
    t_rmtree(dir);
    free(dir);
}
END_TEST

/* FP8 (both rules) against the block-by-block reference, on the fused vLLM
 * parameters of tp 1 and 2; embeddings and norms stay bf16. */
START_TEST(test_fp8_blocks)
{
    static const char *rules[] = {"trainer", "deepgemm"};
    const char *rule = rules[_i % 2];
    int tp = _i < 2 ? 1 : 2;
    char *dir = t_mkdtemp(), p[4096], ref[4096];
    refit_hf_view_t *v;
    ck_assert_int_eq(refit_hf_view_open(model, fixture, NULL, &v), 0);
    snprintf(p, sizeof(p), "%s/fp8.safetensors", dir);
    snprintf(ref, sizeof(ref), "%s/bf16.safetensors", dir);
    convert_to(v, REFIT_TARGET_VLLM, tp, tp - 1, rule, p);
    convert_to(v, REFIT_TARGET_VLLM, tp, tp - 1, NULL, ref);
    refit_st_file_t *f, *b;
    ck_assert_int_eq(refit_st_open(p, &f), 0);
    ck_assert_int_eq(refit_st_open(ref, &b), 0);
    int quantized = 0;
    for (size_t i = 0; i < refit_st_count(b); i++) {
        const struct refit_st_tensor *x = refit_st_at(b, i);
        const struct refit_st_tensor *y = refit_st_find(f, x->name);
        ck_assert_ptr_nonnull(y);
        char sname[512];
        snprintf(sname, sizeof(sname), "%s_scale_inv", x->name);
        const struct refit_st_tensor *s = refit_st_find(f, sname);
        bool want_q = strstr(x->name, "proj.weight") != NULL;
        if (!want_q) {
            ck_assert_msg(y->dtype == REFIT_DTYPE_BF16 && !s, "%s should stay bf16", x->name);
            t_assert_bytes(y, x->data, x->nbytes, x->name);
            continue;
        }
        quantized++;
        ck_assert_msg(y->dtype == REFIT_DTYPE_F8_E4M3, "%s not FP8", x->name);
        ck_assert_msg(s && s->dtype == REFIT_DTYPE_F32 && s->ndim == 2, "%s: no F32 scale_inv", x->name);
        int64_t rows = x->shape[0], cols = x->shape[1];
        ck_assert_int_eq(s->shape[0], (rows + 127) / 128);
        ck_assert_int_eq(s->shape[1], (cols + 127) / 128);
        uint8_t *q = malloc((size_t)(rows * cols));
        float *sc = malloc(s->nbytes);
        t_fp8_ref(x->data, rows, cols, _i % 2, _i % 2 ? 1e-4 : 1e-12, q, sc);
        t_assert_bytes(s, sc, s->nbytes, sname);
        t_assert_bytes(y, q, (size_t)(rows * cols), x->name);
        free(q);
        free(sc);
    }
    ck_assert_int_eq(quantized, 4 * L); /* qkv, o, gate_up, down per layer */
    ck_assert_uint_eq(refit_st_count(f), refit_st_count(b) + (size_t)quantized);
    refit_st_close(f);
    refit_st_close(b);
    refit_hf_view_close(v);
    t_rmtree(dir);
    free(dir);
}
END_TEST

/* tp 4 leaves 64 rows of k_proj per rank: vLLM cannot serve that as block FP8. */
START_TEST(test_fp8_unaligned_refused)
{
    refit_hf_view_t *v;
    ck_assert_int_eq(refit_hf_view_open(model, fixture, NULL, &v), 0);
    struct refit_convert_opts o = {.target = REFIT_TARGET_VLLM, .tp = 4, .rank = 1};
    o.fp8.enabled = true;
    o.fp8.floor = -1;
    refit_layout_t *lay = NULL;
    ck_assert_int_eq(refit_layout_target(model, &o, &lay), REFIT_EINVAL);
    const char *msg = refit_error_message();
    ck_assert_msg(strstr(msg, "qkv_proj") && strstr(msg, "k_proj") && strstr(msg, "64 rows") &&
                      strstr(msg, "128"),
                  "message: %s", msg);
    /* excluding the fused attention makes the rest servable */
    const char *ex[] = {"*.qkv_proj.weight", "*.o_proj.weight"};
    o.fp8.exclude = ex;
    o.fp8.n_exclude = 2;
    ck_assert_msg(refit_layout_target(model, &o, &lay) == 0, "%s", refit_error_message());
    ck_assert(!refit_layout_find(lay, "model.layers.0.self_attn.qkv_proj.weight")->fp8);
    ck_assert(refit_layout_find(lay, "model.layers.0.mlp.gate_up_proj.weight")->fp8);
    refit_layout_destroy(lay);
    /* the hf layout has no vLLM kernel constraint */
    o.target = REFIT_TARGET_HF;
    o.fp8.n_exclude = 0;
    ck_assert_int_eq(refit_layout_target(model, &o, &lay), 0);
    refit_layout_destroy(lay);
    refit_hf_view_close(v);
}
END_TEST


/* The hf target with tp: HF names, unfused, each HF tensor's rank slice. */
START_TEST(test_hf_target_tp)
{
    char *dir = t_mkdtemp(), p[4096];
    refit_hf_view_t *v;
    ck_assert_int_eq(refit_hf_view_open(model, fixture, NULL, &v), 0);
    snprintf(p, sizeof(p), "%s/hf1.safetensors", dir);
    convert_to(v, REFIT_TARGET_HF, 8, 3, NULL, p);
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(p, &f), 0);
    ck_assert_ptr_null(refit_st_find(f, "model.layers.0.self_attn.qkv_proj.weight"));
    t_assert_mat(f, "model.layers.1.self_attn.q_proj.weight",
                 t_mat_rows_f(hf("model.layers.%ld.self_attn.q_proj.weight", 1), 3 * D, D));
    t_assert_mat(f, "model.layers.1.self_attn.k_proj.weight",
                 t_mat_rows_f(hf("model.layers.%ld.self_attn.k_proj.weight", 1), 1 * D, D)); /* 3 / (8/4) */
    t_assert_mat(f, "model.layers.1.mlp.up_proj.weight",
                 t_mat_rows_f(hf("model.layers.%ld.mlp.up_proj.weight", 1), 3 * I / 8, I / 8));
    t_assert_mat(f, "model.layers.0.mlp.down_proj.weight",
                 t_mat_slice_f(hf("model.layers.%ld.mlp.down_proj.weight", 0), 0, K, 3 * I / 8, I / 8));
    /* no vocabulary padding in the hf layout */
    t_assert_mat(f, "model.embed_tokens.weight", t_mat_rows_f(hf("model.embed_tokens.weight", 0), 3 * V / 8, V / 8));
    refit_st_close(f);
    refit_hf_view_close(v);
    t_rmtree(dir);
    free(dir);
}
END_TEST

/* The layout map for one destination names its HF sources and ranges. */
START_TEST(test_layout_map)
{
    struct refit_convert_opts o = {.target = REFIT_TARGET_VLLM, .tp = 8, .rank = 5};
    o.fp8.floor = -1;
    refit_layout_t *lay;
    ck_assert_int_eq(refit_layout_target(model, &o, &lay), 0);
    const struct refit_layout_tensor *t = refit_layout_find(lay, "model.layers.1.self_attn.qkv_proj.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->shape[0], 3 * D); /* one q head, one k, one v */
    ck_assert_uint_eq(t->n_pieces, 3);
    ck_assert_str_eq(refit_layout_source(lay, t->pieces[1].src)->name, "model.layers.1.self_attn.k_proj.weight");
    ck_assert_int_eq(t->pieces[0].src_row, 5 * D);
    ck_assert_int_eq(t->pieces[1].src_row, (5 / 2) * D); /* KV head r / (tp/G) */
    ck_assert_int_eq(t->pieces[2].dst_row, 2 * D);
    refit_layout_destroy(lay);
}
END_TEST

int main(void)
{
    fixture = t_fixture("qwen3-tiny");
    Suite *s = suite_create("model_qwen3_tiny");
    TCase *tc = tcase_create("golden");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_model_shape);
    tcase_add_loop_test(tc, test_roundtrip_megatron, 0, 3);
    tcase_add_loop_test(tc, test_megatron_layout, 0, 3);
    tcase_add_loop_test(tc, test_vllm_layout, 0, 3);
    tcase_add_loop_test(tc, test_fp8_blocks, 0, 4);
    tcase_add_test(tc, test_fp8_unaligned_refused);
    tcase_add_test(tc, test_layout_map);
    tcase_add_test(tc, test_hf_target_tp);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    free(fixture);
    return failed ? 1 : 0;
}
