/* test_mla_convert.c — refit's conversions of the MLA models (plugins
 * deepseek_v3 and glm5) against the upstream tables of mla_tables.h: the hf
 * layout is the checkpoint, every Megatron trainer rank (tp 2/4, ep 2/4)
 * holds what the Megatron table says, byte for byte, and shards convert
 * back to the same bytes, every vLLM rank holds what the vLLM table says
 * (block FP8 included, with vLLM's partition rule), and DeepSeek's native
 * FP8 checkpoints pass through or dequantize as weight_dequant does.  The
 * expectations come from mla_expect.h, never from refit's layout code.
 *
 * Until a model plugin claims deepseek_v3, kimi_k2 and glm_moe_dsa, the
 * program exits 77 (skipped): the plugins are phase 2 of issue 16. */
#include "mla_expect.h"
#include "mla_synth.h"
#include "tfix.h"
#include "../check_run.h"

/* The synthetic checkpoint of one test: written, opened as model, HF view
 * and plain checkpoint (the expectations are built from the latter). */
static void ck_open(struct ck *k, const struct mla_cfg *c, bool fp8, const char *name)
{
    snprintf(k->dir, sizeof(k->dir), "%s/%s", tmp, name);
    mla_write_ckpt(c, k->dir, 41, fp8);
    ck_open_dir(k, NULL);
}

static struct refit_convert_opts opts(enum refit_model_target t, int tp, int rank, int ep)
{
    struct refit_convert_opts o = {.target = t, .tp = tp, .rank = rank, .ep = ep};
    o.fp8.floor = -1;
    return o;
}

static void conv(const struct ck *k, const struct refit_convert_opts *o, const char *path)
{
    ck_assert_msg(refit_convert_write(k->m, k->v, o, path) == 0, "%s", refit_error_message());
}

/* Every expected tensor is in the file with these bytes, and nothing else. */
struct cmp {
    refit_st_file_t *f;
    size_t seen;
    const char *what;
};

static void cmp_one(void *ctx, const char *name, struct t_mat m, int ndim, int64_t n_stack)
{
    struct cmp *c = ctx;
    const struct refit_st_tensor *t = refit_st_find(c->f, name);
    ck_assert_msg(t != NULL, "%s: %s missing", c->what, name);
    ck_assert_msg(t->ndim == (n_stack ? 3 : ndim), "%s: %s has %d dims, the table %d", c->what, name, t->ndim,
                  n_stack ? 3 : ndim);
    t_assert_bytes(t, m.d, (size_t)(m.rows * m.cols) * m.es, name);
    free(m.d);
    c->seen++;
}

static void cmp_done(struct cmp *c)
{
    ck_assert_msg(c->seen == refit_st_count(c->f), "%s: %zu tensors, the table has %zu", c->what,
                  refit_st_count(c->f), c->seen);
    refit_st_close(c->f);
}

static const struct mla_cfg *const cfgs[] = {&MLA_DS, &MLA_DS_NOQ, &MLA_KIMI, &MLA_GLM5};

/* ------------------------------------------------------------------ */

START_TEST(test_claims)
{
    struct ck k;
    ck_open(&k, cfgs[_i], false, "ck");
    ck_assert_str_eq(refit_model_plugin(k.m), cfgs[_i]->indexer ? "glm5" : "deepseek_v3");
    ck_close(&k);
}
END_TEST

static void count_one(void *ctx, const struct mla_t *t)
{
    (void)t;
    ++*(size_t *)ctx;
}

/* The hf layout is the checkpoint without its MTP layer. */
START_TEST(test_hf_target)
{
    const struct mla_cfg *c = cfgs[_i];
    struct ck k;
    ck_open(&k, c, false, "ck");
    char out[4200], in[4200];
    snprintf(out, sizeof(out), "%s/hf.safetensors", tmp);
    snprintf(in, sizeof(in), "%s/model.safetensors", k.dir);
    struct refit_convert_opts o = opts(REFIT_TARGET_HF, 1, 0, 0);
    conv(&k, &o, out);
    size_t with = 0, without = 0;
    mla_hf_each(c, true, false, count_one, &with);
    mla_hf_each(c, false, false, count_one, &without);
    ck_assert_uint_eq(refit_st_checkpoint_count(k.st), with);
    t_assert_subset(out, in, with - without); /* what is left out: the MTP layer */
    ck_close(&k);
}
END_TEST

/* Trainer shards against the Megatron table, then back to the same bytes. */
static const struct {
    const struct mla_cfg *cfg;
    int tp, ep;
} shard_cases[] = {{&MLA_DS, 2, 2},  {&MLA_DS, 4, 4},   {&MLA_DS_NOQ, 2, 4},
                   {&MLA_KIMI, 4, 2}, {&MLA_GLM5, 2, 2}, {&MLA_GLM5, 4, 4}};

START_TEST(test_megatron_ranks)
{
    const struct mla_cfg *c = shard_cases[_i].cfg;
    int tp = shard_cases[_i].tp, ep = shard_cases[_i].ep;
    struct ck k;
    ck_open(&k, c, false, "ck");
    char sh[4200];
    snprintf(sh, sizeof(sh), "%s/shards", tmp);
    ck_assert_msg(refit_shard_write(k.m, k.v, tp, ep, NULL, sh) == 0, "%s", refit_error_message());
    for (int r = 0; r < (tp > ep ? tp : ep); r++) {
        char p[4300];
        snprintf(p, sizeof(p), "%s/rank%d.safetensors", sh, r);
        struct cmp cm = {.what = p};
        ck_assert_int_eq(refit_st_open(p, &cm.f), 0);
        const char *vd = refit_st_metadata(cm.f, "refit.vocab_divisible_by");
        struct mla_mrank mr = {tp, r % tp, ep, r % ep, vd ? atoi(vd) : 128};
        mla_mcore_rank(c, k.st, &mr, cmp_one, &cm);
        cmp_done(&cm);
    }
    refit_hf_view_t *mv;
    ck_assert_msg(refit_hf_view_open_megatron(k.m, sh, NULL, &mv) == 0, "%s", refit_error_message());
    char a[4200], b[4200];
    snprintf(a, sizeof(a), "%s/direct.safetensors", tmp);
    snprintf(b, sizeof(b), "%s/via.safetensors", tmp);
    struct refit_convert_opts o = opts(REFIT_TARGET_HF, 1, 0, 0);
    conv(&k, &o, a);
    ck_assert_msg(refit_convert_write(k.m, mv, &o, b) == 0, "%s", refit_error_message());
    t_assert_same_files(a, b);
    refit_hf_view_close(mv);
    ck_close(&k);
}
END_TEST

/* Pipeline parallelism 2 with TP and EP (uneven stages where the layer
 * count is odd): shards convert back to the checkpoint's bytes. */
static const struct {
    const struct mla_cfg *cfg;
    int tp, ep;
    int split[2];
} pp_cases[] = {{&MLA_DS, 2, 2, {1, 2}}, {&MLA_DS_NOQ, 2, 4, {2, 2}}, {&MLA_GLM5, 2, 2, {2, 1}}};

START_TEST(test_megatron_pp2)
{
    const struct mla_cfg *c = pp_cases[_i].cfg;
    struct ck k;
    ck_open(&k, c, false, "ck");
    char sh[4200], a[4200], b[4200];
    snprintf(sh, sizeof(sh), "%s/pp", tmp);
    struct refit_shard_opts so = {.tp = pp_cases[_i].tp, .ep = pp_cases[_i].ep, .pp = 2,
                                  .chunk_layers = pp_cases[_i].split};
    ck_assert_msg(refit_shard_write_ex(k.m, k.v, &so, NULL, sh) == 0, "%s", refit_error_message());
    refit_hf_view_t *mv;
    ck_assert_msg(refit_hf_view_open_shards(k.m, sh, NULL, &mv) == 0, "%s", refit_error_message());
    snprintf(a, sizeof(a), "%s/direct.safetensors", tmp);
    snprintf(b, sizeof(b), "%s/via.safetensors", tmp);
    struct refit_convert_opts o = opts(REFIT_TARGET_HF, 1, 0, 0);
    conv(&k, &o, a);
    ck_assert_msg(refit_convert_write(k.m, mv, &o, b) == 0, "%s", refit_error_message());
    t_assert_same_files(a, b);
    refit_hf_view_close(mv);
    ck_close(&k);
}
END_TEST

/* Every vLLM rank against the vLLM table. */
static const struct {
    const struct mla_cfg *cfg;
    int tp, ep;
} vllm_cases[] = {{&MLA_DS, 2, 0},   {&MLA_DS, 4, 4},   {&MLA_DS_NOQ, 2, 0}, {&MLA_DS_NOQ, 2, 2},
                  {&MLA_KIMI, 4, 0}, {&MLA_GLM5, 2, 0}, {&MLA_GLM5, 4, 4}};

START_TEST(test_vllm_ranks)
{
    const struct mla_cfg *c = vllm_cases[_i].cfg;
    int tp = vllm_cases[_i].tp, ep = vllm_cases[_i].ep;
    struct ck k;
    ck_open(&k, c, false, "ck");
    for (int r = 0; r < tp; r++) {
        char p[4200];
        snprintf(p, sizeof(p), "%s/v%d.safetensors", tmp, r);
        struct refit_convert_opts o = opts(REFIT_TARGET_VLLM, tp, r, ep);
        conv(&k, &o, p);
        struct cmp cm = {.what = p};
        ck_assert_int_eq(refit_st_open(p, &cm.f), 0);
        struct mla_irank ir = {T_VLLM, tp, r, ep};
        mla_dst_rank(c, k.st, &ir, cmp_one, &cm);
        cmp_done(&cm);
    }
    ck_close(&k);
}
END_TEST

/* Every SGLang rank against the SGLang table (vLLM's parameters but for
 * fused_qkv_a_proj_with_mqa). */
START_TEST(test_sglang_ranks)
{
    const struct mla_cfg *c = vllm_cases[_i].cfg;
    int tp = vllm_cases[_i].tp, ep = vllm_cases[_i].ep;
    struct ck k;
    ck_open(&k, c, false, "ck");
    for (int r = 0; r < tp; r++) {
        char p[4200];
        snprintf(p, sizeof(p), "%s/s%d.safetensors", tmp, r);
        struct refit_convert_opts o = opts(REFIT_TARGET_HF, tp, r, ep);
        o.target_name = "sglang";
        conv(&k, &o, p);
        struct cmp cm = {.what = p};
        ck_assert_int_eq(refit_st_open(p, &cm.f), 0);
        struct mla_irank ir = {T_SGLANG, tp, r, ep};
        mla_dst_rank(c, k.st, &ir, cmp_one, &cm);
        cmp_done(&cm);
    }
    ck_close(&k);
}
END_TEST

/* transformers >= 5: the checkpoint's names, the routed experts of each MoE
 * layer in the two stacks of the table. */
START_TEST(test_transformers)
{
    const struct mla_cfg *c = cfgs[_i];
    struct ck k;
    ck_open(&k, c, false, "ck");
    char p[4200];
    snprintf(p, sizeof(p), "%s/tf.safetensors", tmp);
    struct refit_convert_opts o = opts(REFIT_TARGET_HF, 1, 0, 0);
    o.target_name = "transformers";
    conv(&k, &o, p);
    struct cmp cm = {.what = p};
    ck_assert_int_eq(refit_st_open(p, &cm.f), 0);
    struct mla_irank ir = {T_TF5, 1, 0, 0};
    mla_dst_rank(c, k.st, &ir, cmp_one, &cm);
    size_t stacks = cm.seen, plain = 0;
    /* every other tensor: the checkpoint's, routed experts and MTP aside */
    for (size_t i = 0; i < refit_st_checkpoint_count(k.st); i++) {
        const struct refit_st_tensor *t = refit_st_checkpoint_at(k.st, i);
        long l = -1;
        sscanf(t->name, "model.layers.%ld.", &l);
        if (strstr(t->name, ".mlp.experts.") || l >= c->layers)
            continue;
        t_assert_bytes(refit_st_find(cm.f, t->name), t->data, t->nbytes, t->name);
        plain++;
    }
    ck_assert_uint_gt(stacks, 0);
    ck_assert_uint_eq(refit_st_count(cm.f), stacks + plain);
    refit_st_close(cm.f);
    ck_close(&k);
}
END_TEST

/* A TP that would cut an MLA head is refused, on both sides: 6 heads over 4
 * ranks (q_proj's 144 rows divide by 4, its heads do not). */
START_TEST(test_heads_not_split)
{
    struct ck k;
    ck_open(&k, &MLA_DS_NOQ, false, "ck");
    char p[4200];
    snprintf(p, sizeof(p), "%s/x.safetensors", tmp);
    struct refit_convert_opts o = opts(REFIT_TARGET_VLLM, 4, 0, 0);
    ck_assert_int_eq(refit_convert_write(k.m, k.v, &o, p), REFIT_EINVAL);
    ck_assert_msg(strstr(refit_error_message(), "q_proj") || strstr(refit_error_message(), "kv_b_proj"), "%s",
                  refit_error_message());
    snprintf(p, sizeof(p), "%s/sh", tmp);
    ck_assert_int_eq(refit_shard_write(k.m, k.v, 4, 1, NULL, p), REFIT_EINVAL);
    ck_close(&k);
}
END_TEST

/* ------------------------------------------------------------------ */
/* FP8 */

/* The table's FP8 destinations of a vLLM rank, quantized from the expected
 * bf16 bytes with the trainer rule (each expert of a stack on its own grid). */
struct fp8cmp {
    refit_st_file_t *f;
    const struct mla_cfg *c;
    int quantized;
};

static bool dst_fp8(const struct mla_cfg *c, const char *name)
{
    for (size_t i = 0; i < MLA_N_DST; i++) {
        char n[192];
        if (!(mla_dst[i].targets & T_VLLM) || !mla_when(c, mla_dst[i].when))
            continue;
        for (long l = 0; l < c->layers; l++) {
            mla_name(n, sizeof(n), mla_dst[i].name, l, 0);
            if (!strcmp(n, name))
                return mla_dst[i].fp8;
        }
    }
    return false;
}

static void fp8_one(void *ctx, const char *name, struct t_mat m, int ndim, int64_t n_stack)
{
    (void)ndim;
    struct fp8cmp *x = ctx;
    const struct refit_st_tensor *t = refit_st_find(x->f, name);
    ck_assert_msg(t != NULL, "%s missing", name);
    if (!dst_fp8(x->c, name)) {
        t_assert_bytes(t, m.d, (size_t)(m.rows * m.cols) * m.es, name);
        free(m.d);
        return;
    }
    int64_t ne = n_stack ? n_stack : 1, rows = m.rows / ne, cols = m.cols;
    int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
    uint8_t *q = malloc((size_t)(ne * rows * cols));
    float *s = malloc((size_t)(ne * br * bc) * sizeof(float));
    for (int64_t e = 0; e < ne; e++)
        t_fp8_ref((const uint16_t *)m.d + e * rows * cols, rows, cols, 0, 1e-12, q + e * rows * cols,
                  s + e * br * bc);
    char sn[256];
    snprintf(sn, sizeof(sn), "%s_scale_inv", name);
    ck_assert_int_eq(t->dtype, REFIT_DTYPE_F8_E4M3);
    t_assert_bytes(t, q, (size_t)(ne * rows * cols), name);
    t_assert_bytes(refit_st_find(x->f, sn), s, (size_t)(ne * br * bc) * sizeof(float), sn);
    x->quantized++;
    free(q);
    free(s);
    free(m.d);
}

START_TEST(test_vllm_fp8)
{
    const struct mla_cfg *c = &MLA_DS_GRID;
    struct ck k;
    ck_open(&k, c, false, "ck");
    for (int r = 0; r < 2; r++) {
        char p[4200];
        snprintf(p, sizeof(p), "%s/v%d.safetensors", tmp, r);
        struct refit_convert_opts o = opts(REFIT_TARGET_VLLM, 2, r, _i ? 2 : 0);
        o.fp8.enabled = true;
        conv(&k, &o, p);
        struct fp8cmp x = {.c = c};
        ck_assert_int_eq(refit_st_open(p, &x.f), 0);
        struct mla_irank ir = {T_VLLM, 2, r, _i ? 2 : 0};
        mla_dst_rank(c, k.st, &ir, fp8_one, &x);
        ck_assert_int_gt(x.quantized, 0);
        refit_st_close(x.f);
    }
    /* tp 4: one head, 192 rows of q_b_proj per rank, off vLLM's 128 grid
     * (so are the dense MLP's 64 and the shared expert's 32 rows) */
    char p[4200];
    snprintf(p, sizeof(p), "%s/refused.safetensors", tmp);
    struct refit_convert_opts o = opts(REFIT_TARGET_VLLM, 4, 0, 4);
    o.fp8.enabled = true;
    ck_assert_int_eq(refit_convert_write(k.m, k.v, &o, p), REFIT_EINVAL);
    const char *msg = refit_error_message();
    ck_assert_msg((strstr(msg, "q_b_proj") && strstr(msg, "192")) ||
                      (strstr(msg, "gate_up_proj") && strstr(msg, "64")) ||
                      (strstr(msg, "shared_experts") && strstr(msg, "32")),
                  "%s", msg);
    /* every attention parameter alone is refused for q_b_proj */
    const char *ex[] = {"*.mlp.*"};
    o.fp8.exclude = ex;
    o.fp8.n_exclude = 1;
    ck_assert_int_eq(refit_convert_write(k.m, k.v, &o, p), REFIT_EINVAL);
    ck_assert_msg(strstr(refit_error_message(), "q_b_proj") && strstr(refit_error_message(), "192"), "%s",
                  refit_error_message());
    ck_close(&k);
}
END_TEST

/* A native FP8 checkpoint (e4m3 + weight_scale_inv, as DeepSeek ships it):
 * into bf16 every quantized weight is weight_dequant's product; into FP8
 * with the same 128 grid the bytes and multipliers pass through untouched. */
START_TEST(test_native_fp8)
{
    const struct mla_cfg *c = &MLA_DS_GRID;
    struct ck k;
    ck_open(&k, c, true, "fp8");
    char bf[4200], f8[4200];
    snprintf(bf, sizeof(bf), "%s/bf16.safetensors", tmp);
    snprintf(f8, sizeof(f8), "%s/fp8.safetensors", tmp);
    struct refit_convert_opts o = opts(REFIT_TARGET_HF, 1, 0, 0);
    conv(&k, &o, bf);
    o.fp8.enabled = true;
    conv(&k, &o, f8);
    refit_st_file_t *a, *b;
    ck_assert_int_eq(refit_st_open(bf, &a), 0);
    ck_assert_int_eq(refit_st_open(f8, &b), 0);
    int dequantized = 0;
    for (size_t i = 0; i < refit_st_checkpoint_count(k.st); i++) {
        const struct refit_st_tensor *t = refit_st_checkpoint_at(k.st, i);
        if (t->dtype != REFIT_DTYPE_F8_E4M3 || strstr(t->name, "layers.2.")) /* layer 2: MTP */
            continue;
        char sn[256];
        snprintf(sn, sizeof(sn), "%s_scale_inv", t->name);
        const struct refit_st_tensor *s = refit_st_checkpoint_find(k.st, sn);
        uint16_t *want = malloc((size_t)(t->shape[0] * t->shape[1]) * 2);
        mla_dequant(t->data, s->data, t->shape[0], t->shape[1], want);
        t_assert_bytes(refit_st_find(a, t->name), want, (size_t)(t->shape[0] * t->shape[1]) * 2, t->name);
        t_assert_bytes(refit_st_find(b, t->name), t->data, t->nbytes, t->name);
        t_assert_bytes(refit_st_find(b, sn), s->data, s->nbytes, sn);
        free(want);
        dequantized++;
    }
    ck_assert_int_gt(dequantized, 0);
    refit_st_close(a);
    refit_st_close(b);
    ck_close(&k);
}
END_TEST

/* Whether every MLA model_type has a plugin that claims it. */
static bool plugins_present(void)
{
    static const char *types[] = {"deepseek_v3", "kimi_k2", "glm_moe_dsa"};
    refit_loader_t *l;
    if (refit_loader_create(NULL, &l))
        return false;
    bool ok = true;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]) && ok; i++) {
        char text[256];
        snprintf(text, sizeof(text), "{\"model_type\": \"%s\"}", types[i]);
        refit_model_t *m = NULL;
        int rc = refit_model_open_text(l, NULL, text, strlen(text), "probe", &m);
        /* a claimed type fails later, on the missing shapes: not ENOENT */
        ok = rc != REFIT_ENOENT;
        if (!ok)
            fprintf(stderr, "skipped: %s\n", refit_error_message());
        refit_model_close(m);
    }
    refit_loader_destroy(l);
    return ok;
}

int main(void)
{
    if (!plugins_present())
        return 77;
    Suite *s = suite_create("model_mla_convert");
    TCase *tc = tcase_create("convert");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, t_setup, t_teardown);
    tcase_add_loop_test(tc, test_claims, 0, sizeof(cfgs) / sizeof(cfgs[0]));
    tcase_add_loop_test(tc, test_hf_target, 0, sizeof(cfgs) / sizeof(cfgs[0]));
    tcase_add_loop_test(tc, test_megatron_ranks, 0, sizeof(shard_cases) / sizeof(shard_cases[0]));
    tcase_add_loop_test(tc, test_vllm_ranks, 0, sizeof(vllm_cases) / sizeof(vllm_cases[0]));
    tcase_add_loop_test(tc, test_megatron_pp2, 0, sizeof(pp_cases) / sizeof(pp_cases[0]));
    tcase_add_loop_test(tc, test_sglang_ranks, 0, sizeof(vllm_cases) / sizeof(vllm_cases[0]));
    tcase_add_loop_test(tc, test_transformers, 0, sizeof(cfgs) / sizeof(cfgs[0]));
    tcase_add_test(tc, test_heads_not_split);
    tcase_add_loop_test(tc, test_vllm_fp8, 0, 2);
    tcase_add_test(tc, test_native_fp8);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? 1 : 0;
}
