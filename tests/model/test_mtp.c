/* test_mtp.c — multi-token-prediction layers (issue 16 item 2) of the MLA
 * plugins on synthetic checkpoints with one MTP layer (mla_synth.h:
 * DeepSeek-V3 shaped with DeepSeek's embedding/head copies in the layer,
 * GLM-5 shaped without):
 *  - hf -> Megatron shards (TP 2, PP 2) -> hf gives the checkpoint's bytes,
 *    MTP layer included (the copies aside: Megatron shares the main
 *    embedding and output layer and the bridges map no copy);
 *  - the Megatron names of the last stage against Megatron-Core's
 *    (megatron/core/transformer/multi_token_prediction.py
 *    MultiTokenPredictionLayer: enorm, hnorm, eh_proj a column-parallel
 *    linear, final_layernorm, the block as mtp_model_layer; Megatron-Bridge's
 *    MTP mappings "mtp.layers.*.eh_proj.weight", ...): MTP layers on the last
 *    stage only, numbered from 0, the block holding what a MoE decoder layer
 *    of that stage holds;
 *  - every vLLM rank's drafter names against vLLM's deepseek_mtp.py
 *    (@03356f8c: DeepSeekMultiTokenPredictorLayer, DeepSeekMTP.load_weights,
 *    _rewrite_spec_layer_name), the table below;
 *  - every SGLang rank's draft-model names against SGLang's deepseek_nextn.py
 *    (DeepseekModelNextN, its load_weights' renaming), the table below;
 *  - include_mtp off leaves every layout as it was; targets that load no
 *    MTP layers refuse include_mtp. */
#include "mla_synth.h"
#include "tfix.h"
#include "../check_run.h"

static struct refit_convert_opts mtp_opts(const char *target, int tp, int rank, bool mtp)
{
    struct refit_convert_opts o = {.target = REFIT_TARGET_HF, .tp = tp, .rank = rank, .include_mtp = mtp,
                                   .target_name = target};
    o.fp8.floor = -1;
    return o;
}

static void ck_open(struct ck *k, const struct mla_cfg *c)
{
    snprintf(k->dir, sizeof(k->dir), "%s/ck", tmp);
    mla_write_ckpt(c, k->dir, 43, false);
    struct refit_convert_opts o = mtp_opts("hf", 1, 0, true);
    ck_open_dir(k, &o);
}

static struct t_mat hf(const struct ck *k, const char *name)
{
    const struct refit_st_tensor *t = refit_st_checkpoint_find(k->st, name);
    ck_assert_msg(t != NULL, "%s not in the checkpoint", name);
    return t_mat_of(t);
}

static const struct mla_cfg *const cfgs[] = {&MLA_DS, &MLA_GLM5};

/* ------------------------------------------------------------------ */

/* hf -> Megatron TP 2 x PP 2 (layers 0-1 | 2 + MTP) -> hf: the checkpoint. */
START_TEST(test_megatron_round_trip)
{
    const struct mla_cfg *c = cfgs[_i];
    struct ck k;
    ck_open(&k, c);
    char sh[4200], out[4200], in[4200];
    snprintf(sh, sizeof(sh), "%s/pp", tmp);
    int split[2] = {2, 1};
    struct refit_shard_opts so = {.tp = 2, .pp = 2, .chunk_layers = split};
    struct refit_convert_opts o = mtp_opts("hf", 1, 0, true);
    ck_assert_msg(refit_shard_write_ex(k.m, k.v, &so, &o, sh) == 0, "%s", refit_error_message());
    refit_hf_view_t *mv;
    ck_assert_msg(refit_hf_view_open_shards(k.m, sh, &o, &mv) == 0, "%s", refit_error_message());
    snprintf(out, sizeof(out), "%s/back.safetensors", tmp);
    snprintf(in, sizeof(in), "%s/model.safetensors", k.dir);
    ck_assert_msg(refit_convert_write(k.m, mv, &o, out) == 0, "%s", refit_error_message());
    /* every tensor of the checkpoint but DeepSeek's two copies */
    t_assert_subset(out, in, c->mtp_copies ? 2 : 0);
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(out, &f), 0);
    ck_assert_ptr_nonnull(refit_st_find(f, "model.layers.3.eh_proj.weight"));
    ck_assert_ptr_nonnull(refit_st_find(f, "model.layers.3.mlp.experts.3.down_proj.weight"));
    ck_assert_ptr_null(refit_st_find(f, "model.layers.3.embed_tokens.weight"));
    refit_st_close(f);
    refit_hf_view_close(mv);
    ck_close(&k);
}
END_TEST

static bool has_prefix(const char *s, const char *p)
{
    return !strncmp(s, p, strlen(p));
}

/* The last stage's MTP names (Megatron-Core's), on that stage only. */
START_TEST(test_megatron_names)
{
    const struct mla_cfg *c = cfgs[_i];
    const int64_t K = c->v[Y_K];
    struct ck k;
    ck_open(&k, c);
    char sh[4200];
    snprintf(sh, sizeof(sh), "%s/pp", tmp);
    int split[2] = {2, 1};
    struct refit_shard_opts so = {.tp = 2, .pp = 2, .chunk_layers = split};
    struct refit_convert_opts o = mtp_opts("hf", 1, 0, true);
    ck_assert_msg(refit_shard_write_ex(k.m, k.v, &so, &o, sh) == 0, "%s", refit_error_message());
    for (int r = 0; r < 4; r++) {
        char p[4300];
        snprintf(p, sizeof(p), "%s/rank%d.safetensors", sh, r);
        refit_st_file_t *f;
        ck_assert_int_eq(refit_st_open(p, &f), 0);
        size_t mtp = 0, block = 0, decoder_moe = 0;
        for (size_t i = 0; i < refit_st_count(f); i++) {
            const char *n = refit_st_at(f, i)->name;
            if (has_prefix(n, "mtp.layers."))
                mtp++;
            if (has_prefix(n, "mtp.layers.0.mtp_model_layer."))
                block++;
            if (has_prefix(n, "decoder.layers.0.")) /* stage 1's layer 0 is HF layer 2, a MoE layer */
                decoder_moe++;
        }
        if (r < 2) { /* pipeline stage 0 holds no MTP layer */
            ck_assert_uint_eq(mtp, 0);
            refit_st_close(f);
            continue;
        }
        /* the block is a MoE decoder layer: the same suffixes and shapes */
        ck_assert_uint_eq(block, decoder_moe);
        for (size_t i = 0; i < refit_st_count(f); i++) {
            const struct refit_st_tensor *t = refit_st_at(f, i);
            if (!has_prefix(t->name, "decoder.layers.0."))
                continue;
            char n[512];
            snprintf(n, sizeof(n), "mtp.layers.0.mtp_model_layer.%s", t->name + strlen("decoder.layers.0."));
            const struct refit_st_tensor *b = refit_st_find(f, n);
            ck_assert_msg(b && b->ndim == t->ndim && b->shape[0] == t->shape[0], "%s", n);
        }
        /* the MTP layer's own four tensors */
        ck_assert_uint_eq(mtp, block + 4);
        int tr = r % 2;
        t_assert_mat(f, "mtp.layers.0.enorm.weight", hf(&k, "model.layers.3.enorm.weight"));
        t_assert_mat(f, "mtp.layers.0.hnorm.weight", hf(&k, "model.layers.3.hnorm.weight"));
        t_assert_mat(f, "mtp.layers.0.final_layernorm.weight", hf(&k, "model.layers.3.shared_head.norm.weight"));
        /* eh_proj: column-parallel, output rows split over TP */
        t_assert_mat(f, "mtp.layers.0.eh_proj.weight", t_mat_rows_f(hf(&k, "model.layers.3.eh_proj.weight"),
                                                                    tr * K / 2, K / 2));
        t_assert_mat(f, "mtp.layers.0.mtp_model_layer.mlp.router.weight", hf(&k, "model.layers.3.mlp.gate.weight"));
        refit_st_close(f);
    }
    /* without include_mtp the stages hold no MTP tensor */
    snprintf(sh, sizeof(sh), "%s/nomtp", tmp);
    o.include_mtp = false;
    ck_assert_msg(refit_shard_write_ex(k.m, k.v, &so, &o, sh) == 0, "%s", refit_error_message());
    char p[4300];
    snprintf(p, sizeof(p), "%s/rank3.safetensors", sh);
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(p, &f), 0);
    for (size_t i = 0; i < refit_st_count(f); i++)
        ck_assert_msg(!has_prefix(refit_st_at(f, i)->name, "mtp."), "%s", refit_st_at(f, i)->name);
    refit_st_close(f);
    ck_close(&k);
}
END_TEST

/* vLLM's drafter parameters of MTP layer 3 (deepseek_mtp.py @03356f8c):
 * DeepSeekMultiTokenPredictorLayer's enorm, hnorm, eh_proj (nn.Linear),
 * shared_head.norm, and mtp_block = DeepseekV2DecoderLayer (MoE here) with
 * the stacked_params_mapping (fused_qkv_a_proj, gate_up_proj) and FusedMoE
 * w13/w2; its embed_tokens and shared_head.head are the target model's. */
static const struct {
    const char *name;
    bool split; /* rows split over TP (heads / intermediate), else whole */
} vllm_mtp[] = {
    {"model.layers.3.enorm.weight", false},
    {"model.layers.3.hnorm.weight", false},
    {"model.layers.3.eh_proj.weight", false},
    {"model.layers.3.shared_head.norm.weight", false},
    {"model.layers.3.mtp_block.input_layernorm.weight", false},
    {"model.layers.3.mtp_block.self_attn.fused_qkv_a_proj.weight", false},
    {"model.layers.3.mtp_block.self_attn.q_a_layernorm.weight", false},
    {"model.layers.3.mtp_block.self_attn.q_b_proj.weight", true},
    {"model.layers.3.mtp_block.self_attn.kv_a_layernorm.weight", false},
    {"model.layers.3.mtp_block.self_attn.kv_b_proj.weight", true},
    {"model.layers.3.mtp_block.self_attn.o_proj.weight", false},
    {"model.layers.3.mtp_block.post_attention_layernorm.weight", false},
    {"model.layers.3.mtp_block.mlp.gate.weight", false},
    {"model.layers.3.mtp_block.mlp.gate.e_score_correction_bias", false},
    {"model.layers.3.mtp_block.mlp.shared_experts.gate_up_proj.weight", true},
    {"model.layers.3.mtp_block.mlp.shared_experts.down_proj.weight", false},
    {"model.layers.3.mtp_block.mlp.experts.w13_weight", false},
    {"model.layers.3.mtp_block.mlp.experts.w2_weight", false},
};
#define N_VLLM_MTP (sizeof(vllm_mtp) / sizeof(vllm_mtp[0]))

/* One rank's conversion with and without MTP (files <stem>{,no}<r>) and
 * the check that MTP only adds: the main model's tensors unchanged, plus
 * exactly `n_mtp` tensors. */
static void convert_pair(struct ck *k, const char *target, int r, const char *stem, size_t n_mtp, char *a,
                         size_t na)
{
    char b[4200];
    snprintf(a, na, "%s/%s%d.safetensors", tmp, stem, r);
    snprintf(b, sizeof(b), "%s/%sno%d.safetensors", tmp, stem, r);
    struct refit_convert_opts o = mtp_opts(target, 2, r, true);
    ck_assert_msg(refit_convert_write(k->m, k->v, &o, a) == 0, "%s", refit_error_message());
    o.include_mtp = false;
    ck_assert_msg(refit_convert_write(k->m, k->v, &o, b) == 0, "%s", refit_error_message());
    t_assert_subset(b, a, n_mtp);
}

/* No tensor of the MTP layer left under a name starting with one of
 * `stale` (NULL-terminated), and no copy of the target model's embedding
 * or head (the drafter shares them). */
static void assert_no_stale(refit_st_file_t *f, int r, const char *const *stale, const char *engine)
{
    for (size_t i = 0; i < refit_st_count(f); i++) {
        const char *n = refit_st_at(f, i)->name;
        bool bad = (strstr(n, "embed_tokens") && strcmp(n, "model.embed_tokens.weight")) ||
                   strstr(n, "shared_head.head");
        for (const char *const *p = stale; *p; p++)
            bad = bad || has_prefix(n, *p);
        ck_assert_msg(!bad, "rank %d: %s is no %s draft parameter", r, n, engine);
    }
}

START_TEST(test_vllm_drafter)
{
    struct ck k;
    ck_open(&k, &MLA_DS);
    const int64_t K = MLA_DS.v[Y_K], H = MLA_DS.v[Y_H], dn = MLA_DS.v[Y_NOPE], dv = MLA_DS.v[Y_VH];
    for (int r = 0; r < 2; r++) {
        char a[4200];
        convert_pair(&k, "vllm", r, "with", N_VLLM_MTP, a, sizeof(a));
        refit_st_file_t *f;
        ck_assert_int_eq(refit_st_open(a, &f), 0);
        for (size_t i = 0; i < N_VLLM_MTP; i++)
            ck_assert_msg(refit_st_find(f, vllm_mtp[i].name), "%s missing on rank %d", vllm_mtp[i].name, r);
        /* bytes: replicated eh_proj and norms whole, kv_b_proj whole heads */
        t_assert_mat(f, "model.layers.3.eh_proj.weight", hf(&k, "model.layers.3.eh_proj.weight"));
        t_assert_mat(f, "model.layers.3.shared_head.norm.weight", hf(&k, "model.layers.3.shared_head.norm.weight"));
        const struct refit_st_tensor *eh = refit_st_find(f, "model.layers.3.eh_proj.weight");
        ck_assert(eh->ndim == 2 && eh->shape[0] == K && eh->shape[1] == 2 * K);
        int64_t per = H / 2 * (dn + dv);
        t_assert_mat(f, "model.layers.3.mtp_block.self_attn.kv_b_proj.weight",
                     t_mat_rows_f(hf(&k, "model.layers.3.self_attn.kv_b_proj.weight"), r * per, per));
        t_assert_mat(f, "model.layers.3.mtp_block.self_attn.fused_qkv_a_proj.weight",
                     t_mat_cat(hf(&k, "model.layers.3.self_attn.q_a_proj.weight"),
                               hf(&k, "model.layers.3.self_attn.kv_a_proj_with_mqa.weight")));
        static const char *const stale[] = {"model.layers.3.self_attn.", "model.layers.3.mlp.", NULL};
        assert_no_stale(f, r, stale, "vLLM");
        refit_st_close(f);
    }
    ck_close(&k);
}
END_TEST

/* GLM-5's drafter carries its indexer under mtp_block (the block is a
 * GlmMoeDsa decoder layer; vLLM's wk_weights_proj fusion in bf16). */
START_TEST(test_vllm_drafter_glm5)
{
    struct ck k;
    ck_open(&k, &MLA_GLM5);
    char a[4200];
    snprintf(a, sizeof(a), "%s/glm5.safetensors", tmp);
    struct refit_convert_opts o = mtp_opts("vllm", 2, 1, true);
    ck_assert_msg(refit_convert_write(k.m, k.v, &o, a) == 0, "%s", refit_error_message());
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(a, &f), 0);
    ck_assert_ptr_nonnull(refit_st_find(f, "model.layers.3.mtp_block.self_attn.indexer.wk_weights_proj.weight"));
    ck_assert_ptr_nonnull(refit_st_find(f, "model.layers.3.mtp_block.self_attn.indexer.wq_b.weight"));
    ck_assert_ptr_nonnull(refit_st_find(f, "model.layers.3.eh_proj.weight"));
    ck_assert_ptr_null(refit_st_find(f, "model.layers.3.self_attn.indexer.wq_b.weight"));
    refit_st_close(f);
    ck_close(&k);
}
END_TEST

/* SGLang's draft model of DeepSeek-V3, from SGLang's source (not refit's):
 * python/sglang/srt/models/deepseek_nextn.py @c28bdc90, lines 40-77
 * (DeepseekModelNextN: enorm, hnorm, eh_proj = nn.Linear(2 * hidden,
 * hidden), decoder = DeepseekV2DecoderLayer(is_nextn=True, prefix
 * "decoder"), shared_head.norm) and 125-148 (DeepseekV3ForCausalLMNextN:
 * model = DeepseekModelNextN(prefix "model"), lm_head at
 * "model.shared_head.head"); its load_weights (@0114f9c9 lines 237-263;
 * @c28bdc90 DeepseekV3ForCausalLM.load_weights(is_nextn=True) the same)
 * takes the checkpoint's model.layers.<num_hidden_layers>.*, skips
 * shared_head.head and embed_tokens (the target model's), renames
 * shared_head.norm / eh_proj / enorm / hnorm to model.<name> and the rest
 * to model.decoder.<name>, then maps the decoder's names as the main model
 * does (stacked gate_up_proj, FusedMoE w13 / w2, q_a_proj +
 * kv_a_proj_with_mqa -> fused_qkv_a_proj_with_mqa, @0114f9c9 lines
 * 186-191 and 300-330).  "Only 1 nextn layer is supported". */
static const struct {
    const char *name;
    bool split; /* rows split over TP (heads / intermediate), else whole */
} sglang_mtp[] = {
    {"model.enorm.weight", false},
    {"model.hnorm.weight", false},
    {"model.eh_proj.weight", false},
    {"model.shared_head.norm.weight", false},
    {"model.decoder.input_layernorm.weight", false},
    {"model.decoder.self_attn.fused_qkv_a_proj_with_mqa.weight", false},
    {"model.decoder.self_attn.q_a_layernorm.weight", false},
    {"model.decoder.self_attn.q_b_proj.weight", true},
    {"model.decoder.self_attn.kv_a_layernorm.weight", false},
    {"model.decoder.self_attn.kv_b_proj.weight", true},
    {"model.decoder.self_attn.o_proj.weight", false},
    {"model.decoder.post_attention_layernorm.weight", false},
    {"model.decoder.mlp.gate.weight", false},
    {"model.decoder.mlp.gate.e_score_correction_bias", false},
    {"model.decoder.mlp.shared_experts.gate_up_proj.weight", true},
    {"model.decoder.mlp.shared_experts.down_proj.weight", false},
    {"model.decoder.mlp.experts.w13_weight", false},
    {"model.decoder.mlp.experts.w2_weight", false},
};
#define N_SGLANG_MTP (sizeof(sglang_mtp) / sizeof(sglang_mtp[0]))

START_TEST(test_sglang_draft)
{
    struct ck k;
    ck_open(&k, &MLA_DS);
    const int64_t K = MLA_DS.v[Y_K], H = MLA_DS.v[Y_H], dn = MLA_DS.v[Y_NOPE], dv = MLA_DS.v[Y_VH];
    const int64_t dq = MLA_DS.v[Y_NOPE] + MLA_DS.v[Y_ROPE];
    for (int r = 0; r < 2; r++) {
        char a[4200];
        convert_pair(&k, "sglang", r, "sg", N_SGLANG_MTP, a, sizeof(a));
        refit_st_file_t *f;
        ck_assert_int_eq(refit_st_open(a, &f), 0);
        for (size_t i = 0; i < N_SGLANG_MTP; i++) {
            const struct refit_st_tensor *t = refit_st_find(f, sglang_mtp[i].name);
            ck_assert_msg(t, "%s missing on rank %d", sglang_mtp[i].name, r);
            if (!strstr(sglang_mtp[i].name, "experts.w")) {
                const char *hn = sglang_mtp[i].name + strlen(strncmp(sglang_mtp[i].name, "model.decoder.", 14)
                                                                 ? "model."
                                                                 : "model.decoder.");
                char full[256];
                snprintf(full, sizeof(full), "model.layers.3.%s", hn);
                const struct refit_st_tensor *h = refit_st_checkpoint_find(k.st, full);
                /* whole or this rank's rows of the checkpoint's tensor */
                if (h)
                    ck_assert_msg(t->shape[0] == (sglang_mtp[i].split ? h->shape[0] / 2 : h->shape[0]),
                                  "%s: %lld rows", sglang_mtp[i].name, (long long)t->shape[0]);
            }
        }
        /* bytes: eh_proj and norms whole, kv_b_proj / q_b_proj whole heads */
        t_assert_mat(f, "model.eh_proj.weight", hf(&k, "model.layers.3.eh_proj.weight"));
        t_assert_mat(f, "model.enorm.weight", hf(&k, "model.layers.3.enorm.weight"));
        t_assert_mat(f, "model.shared_head.norm.weight", hf(&k, "model.layers.3.shared_head.norm.weight"));
        const struct refit_st_tensor *eh = refit_st_find(f, "model.eh_proj.weight");
        ck_assert(eh->ndim == 2 && eh->shape[0] == K && eh->shape[1] == 2 * K);
        t_assert_mat(f, "model.decoder.self_attn.kv_b_proj.weight",
                     t_mat_rows_f(hf(&k, "model.layers.3.self_attn.kv_b_proj.weight"), r * (H / 2) * (dn + dv),
                                  (H / 2) * (dn + dv)));
        t_assert_mat(f, "model.decoder.self_attn.q_b_proj.weight",
                     t_mat_rows_f(hf(&k, "model.layers.3.self_attn.q_b_proj.weight"), r * (H / 2) * dq, (H / 2) * dq));
        t_assert_mat(f, "model.decoder.self_attn.fused_qkv_a_proj_with_mqa.weight",
                     t_mat_cat(hf(&k, "model.layers.3.self_attn.q_a_proj.weight"),
                               hf(&k, "model.layers.3.self_attn.kv_a_proj_with_mqa.weight")));
        /* nothing of the MTP layer under its checkpoint names, no copies */
        static const char *const stale[] = {"model.layers.3.", NULL};
        assert_no_stale(f, r, stale, "SGLang");
        refit_st_close(f);
    }
    ck_close(&k);
}
END_TEST

/* SGLang names one MTP layer ("Only 1 nextn layer is supported"): a model
 * with two is refused, not given colliding names. */
START_TEST(test_sglang_one_mtp_layer)
{
    struct mla_cfg two = MLA_DS;
    two.mtp = 2;
    struct ck k;
    ck_open(&k, &two);
    struct refit_convert_opts o = mtp_opts("sglang", 1, 0, true);
    refit_layout_t *lay;
    ck_assert_int_eq(refit_layout_target(k.m, &o, &lay), REFIT_ENOTSUP);
    ck_assert_msg(strstr(refit_error_message(), "one MTP layer"), "%s", refit_error_message());
    o = mtp_opts("vllm", 1, 0, true); /* vLLM numbers its layers: both */
    ck_assert_msg(refit_layout_target(k.m, &o, &lay) == 0, "%s", refit_error_message());
    ck_assert_ptr_nonnull(refit_layout_find(lay, "model.layers.4.mtp_block.self_attn.o_proj.weight"));
    refit_layout_destroy(lay);
    ck_close(&k);
}
END_TEST

/* Engines that load no MTP layers from refit refuse include_mtp:
 * transformers, and SGLang for GLM-5 (no naming of its draft model). */
START_TEST(test_no_mtp_targets)
{
    struct ck k;
    const struct mla_cfg *cfg[] = {&MLA_DS, &MLA_GLM5};
    const char *const no[] = {"transformers", "sglang"};
    for (size_t i = 0; i < 2; i++) {
        ck_open(&k, cfg[i]);
        struct refit_convert_opts o = mtp_opts(no[i], 1, 0, true);
        refit_layout_t *lay;
        ck_assert_int_eq(refit_layout_target(k.m, &o, &lay), REFIT_ENOTSUP);
        ck_assert_msg(strstr(refit_error_message(), "include_mtp"), "%s", refit_error_message());
        ck_close(&k);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model_mtp");
    TCase *tc = tcase_create("mtp");
    tcase_add_checked_fixture(tc, t_setup, t_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_megatron_round_trip, 0, 2);
    tcase_add_loop_test(tc, test_megatron_names, 0, 2);
    tcase_add_test(tc, test_vllm_drafter);
    tcase_add_test(tc, test_vllm_drafter_glm5);
    tcase_add_test(tc, test_sglang_draft);
    tcase_add_test(tc, test_sglang_one_mtp_layer);
    tcase_add_test(tc, test_no_mtp_targets);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
