/* test_targets.c — the transformers and sglang target layouts against
 * tables written here from upstream source, never from refit's layout code:
 *
 *  transformers >= 5 (models/qwen3_moe/modeling_qwen3_moe.py Qwen3MoeExperts,
 *  glm4_moe Glm4MoeNaiveMoe): each MoE layer's experts in memory as
 *  mlp.experts.gate_up_proj [E, 2*Im, K] (expert e: gate_e rows, then up_e)
 *  and mlp.experts.down_proj [E, K, Im]; everything else under the
 *  checkpoint's names.
 *
 *  SGLang (python/sglang/srt/models/qwen3_moe.py, glm4_moe.py load_weights,
 *  layers/vocab_parallel_embedding.py): qkv_proj / gate_up_proj from
 *  stacked_params_mapping, FusedMoE w13_weight / w2_weight (as vLLM), the
 *  vocabulary padded to 64; GLM-4.5's Glm4MoeGate weight in the model dtype
 *  with e_score_correction_bias float32, and its one shared expert fused as
 *  expert n_routed_experts of the stacks unless experts are parallel
 *  (determine_num_fused_shared_experts; the shared_experts.* -> experts.<E>.*
 *  rename in load_weights). */
#include "synth.h"
#include "tfix.h"
#include "../check_run.h"

static void ck_open(struct ck *k, const struct dims *d)
{
    snprintf(k->dir, sizeof(k->dir), "%s/ck", tmp);
    struct t_ckpt c;
    t_ckpt_begin(&c, 9);
    write_ckpt(d, k->dir, &c);
    ck_open_dir(k, NULL);
}

static refit_st_file_t *convert(struct ck *k, const char *target, int tp, int rank, int ep, bool fp8, char *path)
{
    snprintf(path, 4200, "%s/%s-%d-%d-%d.safetensors", tmp, target, tp, rank, ep);
    /* FP8 where Qwen3-MoE's partitions are on the grid: the experts (Im 128) */
    static const char *const off_grid[] = {"*self_attn.*", "*.mlp.gate_up_proj.weight", "*.mlp.down_proj.weight"};
    struct refit_convert_opts o = {.target_name = target, .tp = tp, .rank = rank, .ep = ep};
    o.fp8.enabled = fp8;
    o.fp8.floor = -1;
    o.fp8.exclude = off_grid;
    o.fp8.n_exclude = 3;
    ck_assert_msg(refit_convert_write(k->m, k->v, &o, path) == 0, "%s", refit_error_message());
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(path, &f), 0);
    return f;
}

static struct t_mat hf(const struct ck *k, const char *fmt, long l, long e)
{
    char n[256];
    snprintf(n, sizeof(n), fmt, l, e);
    const struct refit_st_tensor *t = refit_st_checkpoint_find(k->st, n);
    ck_assert_msg(t != NULL, "%s", n);
    return t_mat_of(t);
}

/* Expert e's [gate_e; up_e] rows [r0, r0+n) each, or its down columns. */
static struct t_mat w13(const struct ck *k, const char *pre, long l, long e, int64_t r0, int64_t n)
{
    char g[256], u[256];
    snprintf(g, sizeof(g), "model.layers.%%ld.%sgate_proj.weight", pre);
    snprintf(u, sizeof(u), "model.layers.%%ld.%sup_proj.weight", pre);
    return t_mat_cat(t_mat_rows_f(hf(k, g, l, e), r0, n), t_mat_rows_f(hf(k, u, l, e), r0, n));
}

static struct t_mat w2(const struct ck *k, const char *pre, long l, long e, int64_t c0, int64_t n)
{
    char dn[256];
    snprintf(dn, sizeof(dn), "model.layers.%%ld.%sdown_proj.weight", pre);
    struct t_mat m = hf(k, dn, l, e);
    return t_mat_slice_f(m, 0, m.rows, c0, n);
}

static void assert_stack(const refit_st_file_t *f, const char *name, struct t_mat *slots, int n)
{
    const struct refit_st_tensor *t = refit_st_find(f, name);
    ck_assert_msg(t != NULL, "%s missing", name);
    ck_assert_int_eq(t->ndim, 3);
    ck_assert_int_eq(t->shape[0], n);
    ck_assert_int_eq(t->shape[1], slots[0].rows);
    ck_assert_int_eq(t->shape[2], slots[0].cols);
    size_t per = (size_t)(slots[0].rows * slots[0].cols) * slots[0].es;
    ck_assert_uint_eq(t->nbytes, per * (size_t)n);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(!memcmp((const char *)t->data + per * (size_t)i, slots[i].d, per), "%s slot %d", name, i);
        free(slots[i].d);
    }
}

/* transformers: fused expert stacks, everything else the checkpoint's. */
START_TEST(test_transformers)
{
    const struct dims *d = _i ? &GL : &QM;
    struct ck k;
    ck_open(&k, d);
    char path[4200];
    refit_st_file_t *f = convert(&k, "transformers", 1, 0, 0, false, path);
    size_t want = 0;
    for (size_t i = 0; i < refit_st_checkpoint_count(k.st); i++) {
        const struct refit_st_tensor *t = refit_st_checkpoint_at(k.st, i);
        if ((d->glm && strstr(t->name, "model.layers.2.")) || strstr(t->name, ".mlp.experts."))
            continue; /* the MTP layer; per-expert names */
        t_assert_bytes(refit_st_find(f, t->name), t->data, t->nbytes, t->name);
        want++;
    }
    for (long l = 0; l < d->L; l++) {
        if (is_dense(d, (int)l))
            continue;
        struct t_mat a[8], b[8];
        for (long e = 0; e < d->E; e++) {
            a[e] = w13(&k, "mlp.experts.%ld.", l, e, 0, d->Im);
            b[e] = w2(&k, "mlp.experts.%ld.", l, e, 0, d->Im);
        }
        char n[256];
        snprintf(n, sizeof(n), "model.layers.%ld.mlp.experts.gate_up_proj", l);
        assert_stack(f, n, a, d->E);
        snprintf(n, sizeof(n), "model.layers.%ld.mlp.experts.down_proj", l);
        assert_stack(f, n, b, d->E);
        want += 2;
    }
    ck_assert_uint_eq(refit_st_count(f), want);
    refit_st_close(f);
    ck_close(&k);
}
END_TEST

/* SGLang for Qwen3-MoE is vLLM's layout (the same loaders), FP8 included. */
START_TEST(test_sglang_qwen3_moe)
{
    struct ck k;
    ck_open(&k, &QM);
    char a[4200], b[4200];
    for (int r = 0; r < 2; r++) {
        refit_st_file_t *f = convert(&k, "sglang", 2, r, 0, false, a);
        refit_st_close(f);
        f = convert(&k, "vllm", 2, r, 0, false, b);
        refit_st_close(f);
        t_assert_same_files(a, b);
        /* a few by hand: padded vocabulary, fused qkv and experts */
        ck_assert_int_eq(refit_st_open(a, &f), 0);
        const struct refit_st_tensor *t = refit_st_find(f, "model.embed_tokens.weight");
        ck_assert_int_eq(t->shape[0], 320 / 2); /* pad_vocab_size(300, 64) / tp */
        struct t_mat s[4];
        for (long e = 0; e < QM.E; e++)
            s[e] = w13(&k, "mlp.experts.%ld.", 1, e, r * QM.Im / 2, QM.Im / 2);
        assert_stack(f, "model.layers.1.mlp.experts.w13_weight", s, QM.E);
        refit_st_close(f);
    }
    refit_st_file_t *f = convert(&k, "sglang", 1, 0, 0, true, a);
    refit_st_close(f);
    f = convert(&k, "vllm", 1, 0, 0, true, b);
    refit_st_close(f);
    t_assert_same_files(a, b);
    ck_assert_int_eq(refit_st_open(a, &f), 0);
    ck_assert_int_eq(refit_st_find(f, "model.layers.1.mlp.experts.w13_weight")->dtype, REFIT_DTYPE_F8_E4M3);
    ck_assert_ptr_nonnull(refit_st_find(f, "model.layers.1.mlp.experts.w13_weight_scale_inv"));
    refit_st_close(f);
    ck_close(&k);
}
END_TEST

/* SGLang for GLM-4.5: the shared expert as expert E of the stacks (tp 2),
 * or separate with expert parallelism; the router weight in bf16. */
START_TEST(test_sglang_glm)
{
    struct ck k;
    ck_open(&k, &GL);
    char a[4200], b[4200];
    const long L = 1; /* the MoE layer */
    for (int r = 0; r < 2; r++) {
        refit_st_file_t *f = convert(&k, "sglang", 2, r, 0, false, a);
        struct t_mat s13[5], s2[5];
        for (long e = 0; e < GL.E; e++) {
            s13[e] = w13(&k, "mlp.experts.%ld.", L, e, r * GL.Im / 2, GL.Im / 2);
            s2[e] = w2(&k, "mlp.experts.%ld.", L, e, r * GL.Im / 2, GL.Im / 2);
        }
        s13[GL.E] = w13(&k, "mlp.shared_experts.", L, 0, r * GL.Im / 2, GL.Im / 2);
        s2[GL.E] = w2(&k, "mlp.shared_experts.", L, 0, r * GL.Im / 2, GL.Im / 2);
        assert_stack(f, "model.layers.1.mlp.experts.w13_weight", s13, GL.E + 1);
        assert_stack(f, "model.layers.1.mlp.experts.w2_weight", s2, GL.E + 1);
        ck_assert_ptr_null(refit_st_find(f, "model.layers.1.mlp.shared_experts.gate_up_proj.weight"));
        ck_assert_ptr_null(refit_st_find(f, "model.layers.1.mlp.shared_experts.down_proj.weight"));
        const struct refit_st_tensor *g = refit_st_find(f, "model.layers.1.mlp.gate.weight");
        ck_assert_int_eq(g->dtype, REFIT_DTYPE_BF16);
        struct t_mat gm = hf(&k, "model.layers.%ld.mlp.gate.weight", L, 0);
        t_assert_mat(f, "model.layers.1.mlp.gate.weight", gm);
        ck_assert_int_eq(refit_st_find(f, "model.layers.1.mlp.gate.e_score_correction_bias")->dtype,
                         REFIT_DTYPE_F32);
        /* every other tensor as vLLM has it */
        refit_st_file_t *v = convert(&k, "vllm", 2, r, 0, false, b);
        size_t common = 0;
        for (size_t i = 0; i < refit_st_count(f); i++) {
            const struct refit_st_tensor *t = refit_st_at(f, i);
            if (strstr(t->name, "mlp.experts.w") || strstr(t->name, "mlp.gate.weight"))
                continue;
            const struct refit_st_tensor *u = refit_st_find(v, t->name);
            ck_assert_msg(u != NULL, "%s not in vLLM's layout", t->name);
            t_assert_bytes(t, u->data, u->nbytes, t->name);
            common++;
        }
        /* vLLM: + shared gate_up, down; SGLang: the same others */
        ck_assert_uint_eq(refit_st_count(v), common + 2 + 3);
        refit_st_close(v);
        refit_st_close(f);
    }
    /* expert parallelism: no fusion, shared experts as vLLM has them */
    refit_st_file_t *f = convert(&k, "sglang", 2, 1, 2, false, a);
    ck_assert_ptr_nonnull(refit_st_find(f, "model.layers.1.mlp.shared_experts.gate_up_proj.weight"));
    const struct refit_st_tensor *t = refit_st_find(f, "model.layers.1.mlp.experts.w13_weight");
    ck_assert_int_eq(t->shape[0], GL.E / 2);
    refit_st_close(f);
    ck_close(&k);
}
END_TEST

/* Block FP8 on SGLang follows its partition checks: GLM's Im 64 is off the
 * 128 grid, refused; the transformers stacks stay bf16. */
START_TEST(test_fp8_policies)
{
    struct ck k;
    ck_open(&k, &GL);
    struct refit_convert_opts o = {.target_name = "sglang", .tp = 1};
    o.fp8.enabled = true;
    o.fp8.floor = -1;
    refit_layout_t *lay;
    ck_assert_int_eq(refit_layout_target(k.m, &o, &lay), REFIT_EINVAL);
    ck_assert_msg(strstr(refit_error_message(), "SGLang") && strstr(refit_error_message(), "128"), "%s",
                  refit_error_message());
    o.target_name = "transformers";
    ck_assert_msg(refit_layout_target(k.m, &o, &lay) == 0, "%s", refit_error_message());
    const struct refit_layout_tensor *t = refit_layout_find(lay, "model.layers.1.mlp.experts.gate_up_proj");
    ck_assert(t && !t->fp8);
    t = refit_layout_find(lay, "model.layers.1.self_attn.q_proj.weight");
    ck_assert(t && t->fp8);
    refit_layout_destroy(lay);
    ck_close(&k);
}
END_TEST

/* A target layout from YAML: configs/targets/vllm-language-model.yaml,
 * merged into a cluster file's model section (model.file) as users do.  Its
 * rename table, written here from that file's comment (vLLM's multimodal
 * wrappers: the text model under language_model.), over vLLM's tensors:
 * every vLLM rank's tensor appears under the renamed name with the same
 * bytes, and nothing else. */
static const char *const yaml_rename[][2] = {
    {"model.", "language_model.model."},
    {"lm_head.", "language_model.lm_head."},
};

static void renamed(const char *name, char *out, size_t cap)
{
    for (size_t i = 0; i < 2; i++)
        if (!strncmp(name, yaml_rename[i][0], strlen(yaml_rename[i][0]))) {
            snprintf(out, cap, "%s%s", yaml_rename[i][1], name + strlen(yaml_rename[i][0]));
            return;
        }
    snprintf(out, cap, "%s", name);
}

START_TEST(test_yaml_target)
{
    struct ck k;
    ck_open(&k, &QM);
    const char *root = getenv("REFIT_SOURCE_ROOT");
    char text[8400];
    snprintf(text, sizeof(text), "model:\n  file: %s/configs/targets/vllm-language-model.yaml\n"
                                 "  hf_config: %s/config.json\n", root ? root : ".", k.dir);
    refit_config_t *cfg;
    ck_assert_int_eq(refit_config_create(&cfg), 0);
    ck_assert_msg(refit_config_load_string(cfg, "cluster.yaml", text, strlen(text)) == 0, "%s",
                  refit_error_message());
    ck_assert_msg(refit_config_validate(cfg, true) == 0, "%s", refit_error_message());
    refit_model_t *m;
    ck_assert_msg(refit_model_open_config(loader, cfg, &m) == 0, "%s", refit_error_message());
    struct refit_convert_opts yo = {0};
    ck_assert_int_eq(refit_convert_opts_from_config(cfg, &yo), 0);
    ck_assert_str_eq(yo.target_name, "vllm_language_model");
    for (int r = 0; r < 2; r++) {
        char a[4300], b[4300];
        snprintf(a, sizeof(a), "%s/vllm%d.safetensors", tmp, r);
        snprintf(b, sizeof(b), "%s/yaml%d.safetensors", tmp, r);
        struct refit_convert_opts vo = {.target = REFIT_TARGET_VLLM, .tp = 2, .rank = r};
        vo.fp8.floor = -1;
        ck_assert_msg(refit_convert_write(k.m, k.v, &vo, a) == 0, "%s", refit_error_message());
        yo.tp = 2;
        yo.rank = r;
        ck_assert_msg(refit_convert_write(m, k.v, &yo, b) == 0, "%s", refit_error_message());
        refit_st_file_t *fa, *fb;
        ck_assert_int_eq(refit_st_open(a, &fa), 0);
        ck_assert_int_eq(refit_st_open(b, &fb), 0);
        ck_assert_uint_eq(refit_st_count(fa), refit_st_count(fb));
        for (size_t i = 0; i < refit_st_count(fa); i++) {
            const struct refit_st_tensor *t = refit_st_at(fa, i);
            char n[512];
            renamed(t->name, n, sizeof(n));
            ck_assert_msg(strcmp(n, t->name), "%s: no rule renames it", t->name);
            t_assert_bytes(refit_st_find(fb, n), t->data, t->nbytes, n);
        }
        refit_st_close(fa);
        refit_st_close(fb);
    }
    /* a target of the plugin's own name is refused */
    refit_model_close(m);
    ck_assert_int_eq(refit_config_set(cfg, "model.target_layout.name=vllm", "test"), 0);
    ck_assert_int_eq(refit_model_open_config(loader, cfg, &m), REFIT_ECONFIG);
    refit_config_destroy(cfg);
    ck_close(&k);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("targets");
    TCase *tc = tcase_create("targets");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, t_setup, t_teardown);
    tcase_add_loop_test(tc, test_transformers, 0, 2);
    tcase_add_test(tc, test_sglang_qwen3_moe);
    tcase_add_test(tc, test_sglang_glm);
    tcase_add_test(tc, test_fp8_policies);
    tcase_add_test(tc, test_yaml_target);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
