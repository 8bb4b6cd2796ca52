/* test_vocab.c — the open model vocabulary, through a test plugin
 * (tests/model/plugins/vocabt.c) shaped like an MLA family: its declared
 * dimensions read back with defaults, conditions switching entries (with
 * and without q LoRA), vLLM's fused_qkv_a_proj made of two trainer tensors,
 * column and row splits of the MLA projections, and HF -> Megatron shards ->
 * HF identity.  Expected names, shapes and bytes are written here from
 * DeepSeek-V3's modeling code and vLLM's deepseek_v2.py (as summarised in
 * mla_tables.h), never from refit's layout code. */
#include "tfix.h"
#include "../check_run.h"

/* hidden 256, 4 heads, nope 32, rope 16, v 32, kv_lora 128, inter 256 */
enum { K = 256, H = 4, NOPE = 32, ROPE = 16, VH = 32, KVR = 128, QR = 192, I = 256, V = 300, LAYERS = 2 };

static void setup(void)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/tests/model", getenv("REFIT_BUILD_ROOT"));
    setenv("REFIT_PLUGIN_PATH", dir, 1);
    t_setup();
}

/* Writes config.json and model.safetensors of the test model into
 * tmp/name; qr 0 leaves q LoRA out (q_lora_rank null). */
static void write_model(const char *name, int qr, bool v_head_dim, char *dir)
{
    snprintf(dir, 4096, "%s/%s", tmp, name);
    mkdir(dir, 0777);
    char p[4200], cfg[1024];
    snprintf(cfg, sizeof(cfg),
             "{\"model_type\": \"refit_vocab_test\", \"num_hidden_layers\": %d, \"hidden_size\": %d, "
             "\"num_attention_heads\": %d, \"vocab_size\": %d, \"q_lora_rank\": %s, \"kv_lora_rank\": %d, "
             "\"qk_nope_head_dim\": %d, \"qk_rope_head_dim\": %d%s, \"intermediate_size\": %d}",
             LAYERS, K, H, V, qr ? "192" : "null", KVR, NOPE, ROPE, v_head_dim ? ", \"v_head_dim\": 32" : "", I);
    snprintf(p, sizeof(p), "%s/config.json", dir);
    t_write_file(p, cfg);
    struct t_ckpt c;
    t_ckpt_begin(&c, 5);
    t_ckpt_add(&c, "model.embed_tokens.weight", REFIT_DTYPE_BF16, V, K);
    t_ckpt_add(&c, "lm_head.weight", REFIT_DTYPE_BF16, V, K);
    t_ckpt_add(&c, "model.norm.weight", REFIT_DTYPE_BF16, K, 0);
    for (long l = 0; l < LAYERS; l++) {
        t_ckpt_addf(&c, REFIT_DTYPE_BF16, K, 0, "model.layers.%ld.input_layernorm.weight", l, 0);
        if (qr) {
            t_ckpt_addf(&c, REFIT_DTYPE_BF16, QR, K, "model.layers.%ld.self_attn.q_a_proj.weight", l, 0);
            t_ckpt_addf(&c, REFIT_DTYPE_BF16, QR, 0, "model.layers.%ld.self_attn.q_a_layernorm.weight", l, 0);
            t_ckpt_addf(&c, REFIT_DTYPE_BF16, H * (NOPE + ROPE), QR, "model.layers.%ld.self_attn.q_b_proj.weight",
                        l, 0);
        } else {
            t_ckpt_addf(&c, REFIT_DTYPE_BF16, H * (NOPE + ROPE), K, "model.layers.%ld.self_attn.q_proj.weight", l,
                        0);
        }
        t_ckpt_addf(&c, REFIT_DTYPE_BF16, KVR + ROPE, K, "model.layers.%ld.self_attn.kv_a_proj_with_mqa.weight", l,
                    0);
        t_ckpt_addf(&c, REFIT_DTYPE_BF16, KVR, 0, "model.layers.%ld.self_attn.kv_a_layernorm.weight", l, 0);
        t_ckpt_addf(&c, REFIT_DTYPE_BF16, H * (NOPE + VH), KVR, "model.layers.%ld.self_attn.kv_b_proj.weight", l,
                    0);
        t_ckpt_addf(&c, REFIT_DTYPE_BF16, K, H * VH, "model.layers.%ld.self_attn.o_proj.weight", l, 0);
        t_ckpt_addf(&c, REFIT_DTYPE_BF16, K, 0, "model.layers.%ld.post_attention_layernorm.weight", l, 0);
        t_ckpt_addf(&c, REFIT_DTYPE_BF16, I, K, "model.layers.%ld.mlp.gate_proj.weight", l, 0);
        t_ckpt_addf(&c, REFIT_DTYPE_BF16, I, K, "model.layers.%ld.mlp.up_proj.weight", l, 0);
        t_ckpt_addf(&c, REFIT_DTYPE_BF16, K, I, "model.layers.%ld.mlp.down_proj.weight", l, 0);
    }
    t_ckpt_end(&c, dir);
}

static refit_model_t *open_model(const char *dir)
{
    char p[4200];
    snprintf(p, sizeof(p), "%s/config.json", dir);
    refit_model_t *m;
    ck_assert_msg(refit_model_open(loader, NULL, p, &m) == 0, "%s", refit_error_message());
    ck_assert_str_eq(refit_model_plugin(m), "vocabt");
    return m;
}

START_TEST(test_dims)
{
    char dir[4096];
    write_model("dims", 1, false, dir);
    refit_model_t *m = open_model(dir);
    int64_t v;
    ck_assert_int_eq(refit_model_dim(m, "q_lora_rank", &v), 0);
    ck_assert_int_eq(v, QR);
    ck_assert_int_eq(refit_model_dim(m, "v_head_dim", &v), 0);
    ck_assert_int_eq(v, NOPE); /* absent: its default, qk_nope_head_dim */
    ck_assert_int_eq(refit_model_dim(m, "qk_head_dim", &v), 0);
    ck_assert_int_eq(v, NOPE + ROPE);
    ck_assert_int_eq(refit_model_dim(m, "tie_word_embeddings", &v), 0);
    ck_assert_int_eq(v, 0);
    ck_assert_int_eq(refit_model_dim(m, "num_key_value_heads", &v), REFIT_ENOENT);
    refit_model_close(m);

    /* a required key missing: the error names it */
    char p[4200];
    snprintf(p, sizeof(p), "%s/config.json", dir);
    t_write_file(p, "{\"model_type\": \"refit_vocab_test\", \"num_hidden_layers\": 1, \"hidden_size\": 64, "
                    "\"num_attention_heads\": 2, \"vocab_size\": 10, \"qk_nope_head_dim\": 8, "
                    "\"qk_rope_head_dim\": 8, \"intermediate_size\": 8}");
    ck_assert_int_eq(refit_model_open(loader, NULL, p, &m), REFIT_EPROTO);
    ck_assert_msg(strstr(refit_error_message(), "kv_lora_rank"), "%s", refit_error_message());
}
END_TEST

/* vLLM rank 1 of tp 2 (deepseek_v2.py): the names and shapes it loads. */
struct want {
    const char *name;
    int64_t rows, cols; /* cols 0: 1-D */
};

static void check_layout(const refit_layout_t *lay, const struct want *w, size_t nw)
{
    ck_assert_uint_eq(refit_layout_count(lay), LAYERS * (nw - 3) + 3);
    for (size_t i = 0; i < nw; i++)
        for (long l = 0; l < (strstr(w[i].name, "%ld") ? LAYERS : 1); l++) {
            char name[256];
            snprintf(name, sizeof(name), w[i].name, l);
            const struct refit_layout_tensor *t = refit_layout_find(lay, name);
            ck_assert_msg(t != NULL, "%s missing", name);
            ck_assert_int_eq(t->ndim, w[i].cols ? 2 : 1);
            ck_assert_msg(t->shape[0] == w[i].rows && (!w[i].cols || t->shape[1] == w[i].cols),
                          "%s: [%lld, %lld], expected [%lld, %lld]", name, (long long)t->shape[0],
                          (long long)t->shape[1], (long long)w[i].rows, (long long)w[i].cols);
        }
}

START_TEST(test_vllm_layouts)
{
    char dir[4096];
    const struct want with_q[] = {
        {"model.embed_tokens.weight", 320 / 2, K}, /* padded to 64, then split */
        {"lm_head.weight", 320 / 2, K},
        {"model.norm.weight", K, 0},
        {"model.layers.%ld.input_layernorm.weight", K, 0},
        {"model.layers.%ld.self_attn.fused_qkv_a_proj.weight", QR + KVR + ROPE, K},
        {"model.layers.%ld.self_attn.q_a_layernorm.weight", QR, 0},
        {"model.layers.%ld.self_attn.q_b_proj.weight", H / 2 * (NOPE + ROPE), QR},
        {"model.layers.%ld.self_attn.kv_a_layernorm.weight", KVR, 0},
        {"model.layers.%ld.self_attn.kv_b_proj.weight", H / 2 * (NOPE + VH), KVR},
        {"model.layers.%ld.self_attn.o_proj.weight", K, H / 2 * VH},
        {"model.layers.%ld.post_attention_layernorm.weight", K, 0},
        {"model.layers.%ld.mlp.gate_up_proj.weight", 2 * I / 2, K},
        {"model.layers.%ld.mlp.down_proj.weight", K, I / 2},
    };
    const struct want no_q[] = {
        {"model.embed_tokens.weight", 320 / 2, K},
        {"lm_head.weight", 320 / 2, K},
        {"model.norm.weight", K, 0},
        {"model.layers.%ld.input_layernorm.weight", K, 0},
        {"model.layers.%ld.self_attn.q_proj.weight", H / 2 * (NOPE + ROPE), K},
        {"model.layers.%ld.self_attn.kv_a_proj_with_mqa.weight", KVR + ROPE, K},
        {"model.layers.%ld.self_attn.kv_a_layernorm.weight", KVR, 0},
        {"model.layers.%ld.self_attn.kv_b_proj.weight", H / 2 * (NOPE + VH), KVR},
        {"model.layers.%ld.self_attn.o_proj.weight", K, H / 2 * VH},
        {"model.layers.%ld.post_attention_layernorm.weight", K, 0},
        {"model.layers.%ld.mlp.gate_up_proj.weight", 2 * I / 2, K},
        {"model.layers.%ld.mlp.down_proj.weight", K, I / 2},
    };
    for (int q = 0; q < 2; q++) {
        write_model(q ? "lq" : "lnq", q, true, dir);
        refit_model_t *m = open_model(dir);
        struct refit_convert_opts o = {.target_name = "vllm", .tp = 2, .rank = 1};
        refit_layout_t *lay;
        ck_assert_msg(refit_layout_target(m, &o, &lay) == 0, "%s", refit_error_message());
        if (q)
            check_layout(lay, with_q, sizeof(with_q) / sizeof(with_q[0]));
        else
            check_layout(lay, no_q, sizeof(no_q) / sizeof(no_q[0]));
        refit_layout_destroy(lay);
        o.target_name = "nosuch";
        ck_assert_int_eq(refit_layout_target(m, &o, &lay), REFIT_EINVAL);
        ck_assert_msg(strstr(refit_error_message(), "nosuch") && strstr(refit_error_message(), "vllm"), "%s",
                      refit_error_message());
        refit_model_close(m);
    }
}
END_TEST

static struct t_mat hf_mat(refit_st_checkpoint_t *ck, const char *fmt, long l)
{
    char name[256];
    snprintf(name, sizeof(name), fmt, l);
    const struct refit_st_tensor *t = refit_st_checkpoint_find(ck, name);
    ck_assert_msg(t != NULL, "%s", name);
    return t_mat_of(t);
}

/* The bytes of vLLM rank 1 of 2, and HF -> Megatron tp 2 -> HF identity. */
START_TEST(test_bytes)
{
    char dir[4096], out[4200], sh[4200], back[4200];
    write_model("bytes", 1, true, dir);
    refit_model_t *m = open_model(dir);
    refit_hf_view_t *v;
    ck_assert_msg(refit_hf_view_open(m, dir, NULL, &v) == 0, "%s", refit_error_message());
    refit_st_checkpoint_t *ck;
    ck_assert_int_eq(refit_st_checkpoint_open(dir, &ck), 0);
    struct refit_convert_opts o = {.target_name = "vllm", .tp = 2, .rank = 1};
    snprintf(out, sizeof(out), "%s/vllm1.safetensors", tmp);
    ck_assert_msg(refit_convert_write(m, v, &o, out) == 0, "%s", refit_error_message());
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(out, &f), 0);
    for (long l = 0; l < LAYERS; l++) {
        char n[256];
        snprintf(n, sizeof(n), "model.layers.%ld.self_attn.fused_qkv_a_proj.weight", l);
        t_assert_mat(f, n, t_mat_cat(hf_mat(ck, "model.layers.%ld.self_attn.q_a_proj.weight", l),
                                     hf_mat(ck, "model.layers.%ld.self_attn.kv_a_proj_with_mqa.weight", l)));
        snprintf(n, sizeof(n), "model.layers.%ld.self_attn.q_b_proj.weight", l);
        t_assert_mat(f, n, t_mat_rows_f(hf_mat(ck, "model.layers.%ld.self_attn.q_b_proj.weight", l),
                                        H / 2 * (NOPE + ROPE), H / 2 * (NOPE + ROPE)));
        snprintf(n, sizeof(n), "model.layers.%ld.self_attn.kv_b_proj.weight", l);
        t_assert_mat(f, n, t_mat_rows_f(hf_mat(ck, "model.layers.%ld.self_attn.kv_b_proj.weight", l),
                                        H / 2 * (NOPE + VH), H / 2 * (NOPE + VH)));
        snprintf(n, sizeof(n), "model.layers.%ld.self_attn.o_proj.weight", l);
        t_assert_mat(f, n, t_mat_slice_f(hf_mat(ck, "model.layers.%ld.self_attn.o_proj.weight", l), 0, K,
                                         H / 2 * VH, H / 2 * VH));
    }
    refit_st_close(f);

    /* trainer shards (Megatron-Core MLA names) and back */
    snprintf(sh, sizeof(sh), "%s/shards", tmp);
    ck_assert_msg(refit_shard_write(m, v, 2, 1, NULL, sh) == 0, "%s", refit_error_message());
    snprintf(out, sizeof(out), "%s/rank1.safetensors", sh);
    ck_assert_int_eq(refit_st_open(out, &f), 0);
    const struct refit_st_tensor *t = refit_st_find(f, "decoder.layers.1.self_attention.linear_q_up_proj.weight");
    ck_assert(t && t->shape[0] == H / 2 * (NOPE + ROPE) && t->shape[1] == QR);
    t = refit_st_find(f, "decoder.layers.0.self_attention.linear_kv_down_proj.weight");
    ck_assert(t && t->shape[0] == KVR + ROPE && t->shape[1] == K);
    t = refit_st_find(f, "decoder.layers.0.self_attention.linear_proj.weight");
    ck_assert(t && t->shape[0] == K && t->shape[1] == H / 2 * VH);
    refit_st_close(f);
    refit_hf_view_t *mv;
    ck_assert_msg(refit_hf_view_open_megatron(m, sh, NULL, &mv) == 0, "%s", refit_error_message());
    snprintf(back, sizeof(back), "%s/back.safetensors", tmp);
    struct refit_convert_opts h = {.target = REFIT_TARGET_HF, .tp = 1};
    ck_assert_msg(refit_convert_write(m, mv, &h, back) == 0, "%s", refit_error_message());
    ck_assert_int_eq(refit_st_open(back, &f), 0);
    for (size_t i = 0; i < refit_st_checkpoint_count(ck); i++) {
        const struct refit_st_tensor *a = refit_st_checkpoint_at(ck, i);
        t_assert_bytes(refit_st_find(f, a->name), a->data, a->nbytes, a->name);
    }
    ck_assert_uint_eq(refit_st_count(f), refit_st_checkpoint_count(ck));
    refit_st_close(f);
    refit_hf_view_close(mv);
    refit_st_checkpoint_close(ck);
    refit_hf_view_close(v);
    refit_model_close(m);
}
END_TEST

/* A plugin built against the header before struct refit_model_dst grew
 * (its spec's size ends before the MTP fields) is refused by name, not
 * walked with the wrong stride. */
START_TEST(test_old_spec_refused)
{
    char dir[4096], p[4200];
    write_model("old", 192, true, dir);
    snprintf(p, sizeof(p), "%s/config.json", dir);
    setenv("VOCABT_OLD_SPEC", "1", 1);
    refit_model_t *m = NULL;
    int rc = refit_model_open(loader, NULL, p, &m);
    unsetenv("VOCABT_OLD_SPEC");
    ck_assert_int_eq(rc, REFIT_EABI);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(refit_error_message(), "older refit/model.h"), "%s", refit_error_message());
}
END_TEST

int main(void)
{
    Suite *s = suite_create("vocab");
    TCase *tc = tcase_create("vocab");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, t_teardown);
    tcase_add_test(tc, test_dims);
    tcase_add_test(tc, test_vllm_layouts);
    tcase_add_test(tc, test_bytes);
    tcase_add_test(tc, test_old_spec_refused);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
