/* test_plan_dedupe.c — the planner with data-parallel copies composed once
 * per class (refit.plan_dedupe: true, the default) gives exactly the plan of
 * composing every trainer rank on its own (false): the same descriptors,
 * scatters, checks and bytes per source (refit_plan_info.digest and the
 * totals), for every inference rank, with MoE experts over EP and TP,
 * dense TP with more copies than the planner's 64 candidates, copies whose
 * dp_rank is set and ranks given in a shuffled order, FSDP shards and
 * pipeline stages.  The digest itself must tell plans apart (the same
 * layout from 8 or from 16 ranks spreads reads differently).  With
 * refit.replicas > 1 engines of one layout choose different sources for
 * the same bytes.  A receiver's later plans equal its first. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "refit/refit.h"
#include "../check_run.h"

static char dir[256];

/* Small MoE and dense configs (the fields the layouts read). */
static const char *MOE =
    "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"model_type\": \"qwen3_moe\", \"num_hidden_layers\": 4, "
    "\"hidden_size\": 256, \"num_attention_heads\": 8, \"num_key_value_heads\": 4, \"head_dim\": 32, "
    "\"intermediate_size\": 512, \"moe_intermediate_size\": 128, \"num_experts\": 8, "
    "\"num_experts_per_tok\": 2, \"decoder_sparse_step\": 1, \"mlp_only_layers\": [], \"vocab_size\": 1000, "
    "\"tie_word_embeddings\": false, \"attention_bias\": false, \"torch_dtype\": \"bfloat16\"}\n";
static const char *DENSE =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", \"num_hidden_layers\": 4, "
    "\"hidden_size\": 256, \"num_attention_heads\": 8, \"num_key_value_heads\": 4, \"head_dim\": 32, "
    "\"intermediate_size\": 768, \"vocab_size\": 1000, \"tie_word_embeddings\": true, "
    "\"attention_bias\": false, \"rms_norm_eps\": 1e-06, \"torch_dtype\": \"bfloat16\"}\n";

static void setup(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/refit-dedupe-XXXXXX", t && *t ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* Plan inference rank `rank` of tp dtp (ep dep) from the n positions, with
 * or without dedupe, with up to two more overrides (NULL: none); the
 * context's status in *ctx_rc when asked (then a failure is returned as an
 * empty info). */
/* config.json in the test's directory, and the two overrides naming it
 * and the file store there. */
static void write_config(const char *config_json, char *o_cfg, size_t n_cfg, char *o_dir, size_t n_dir)
{
    char p[400];
    snprintf(p, sizeof(p), "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(config_json, f);
    fclose(f);
    snprintf(o_cfg, n_cfg, "model.hf_config=%s", p);
    snprintf(o_dir, n_dir, "store.file.path=%s/store", dir);
}

static struct refit_plan_info plan_with(const char *config_json, int dedupe, int rank, int dtp, int dep,
                                        const struct refit_parallel *src, size_t n, const char *x1, const char *x2,
                                        int *ctx_rc)
{
    char o_cfg[450], o_dir[450];
    write_config(config_json, o_cfg, sizeof(o_cfg), o_dir, sizeof(o_dir));
    const char *ovr[] = {"model.plugin=auto", o_cfg, "store.plugin=file", o_dir, "transport.plugin=tcp",
                         "model.target=vllm", dedupe ? "refit.plan_dedupe=true" : "refit.plan_dedupe=false", x1, x2};
    size_t n_ovr = 7 + (x1 != NULL) + (x1 && x2);
    refit_context_t *ctx = NULL;
    refit_receiver_t *rcv = NULL;
    struct refit_target tg = {.tp_rank = rank, .tp_size = dtp, .ep_size = dep};
    struct refit_plan_info info = {.size = sizeof(info)};
    int crc = refit_context_create(NULL, ovr, n_ovr, &ctx);
    if (ctx_rc) {
        *ctx_rc = crc;
        if (crc)
            return info;
    }
    ck_assert_int_eq(crc, 0);
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "dedupe", &rcv), 0);
    int rc = refit_receiver_plan_dry(rcv, src, n, &info);
    if (rc)
        fprintf(stderr, "%s\n", refit_error_message());
    ck_assert_int_eq(rc, 0);
    refit_receiver_destroy(rcv);
    refit_context_destroy(ctx);
    return info;
}

/* One receiver (inference rank 0 of tp 2) planning the sources of each
 * sets[k] (n[k] of them) in turn: a receiver's later plans reuse what its
 * first built (arena.h), so they must not depend on what came before. */
static void replan(const char *config_json, const struct refit_parallel *const *sets, const size_t *n, size_t k,
                   struct refit_plan_info *out)
{
    char o_cfg[450], o_dir[450];
    write_config(config_json, o_cfg, sizeof(o_cfg), o_dir, sizeof(o_dir));
    const char *ovr[] = {"model.plugin=auto", o_cfg, "store.plugin=file", o_dir, "transport.plugin=tcp",
                         "model.target=vllm"};
    refit_context_t *ctx = NULL;
    refit_receiver_t *rcv = NULL;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 2};
    ck_assert_int_eq(refit_context_create(NULL, ovr, 6, &ctx), 0);
    ck_assert_int_eq(refit_receiver_create(ctx, &tg, "replan", &rcv), 0);
    for (size_t i = 0; i < k; i++) {
        out[i] = (struct refit_plan_info){.size = sizeof(out[i])};
        ck_assert_int_eq(refit_receiver_plan_dry(rcv, sets[i], n[i], &out[i]), 0);
    }
    refit_receiver_destroy(rcv);
    refit_context_destroy(ctx);
}

static struct refit_plan_info plan(const char *config_json, int dedupe, int rank, int dtp, int dep,
                                   const struct refit_parallel *src, size_t n)
{
    return plan_with(config_json, dedupe, rank, dtp, dep, src, n, NULL, NULL, NULL);
}

static void same_plans(const char *config_json, int dtp, int dep, const struct refit_parallel *src, size_t n)
{
    for (int rank = 0; rank < dtp; rank++) {
        struct refit_plan_info a = plan(config_json, 0, rank, dtp, dep, src, n);
        struct refit_plan_info b = plan(config_json, 1, rank, dtp, dep, src, n);
        ck_assert_uint_gt(a.descriptors, 0);
        ck_assert_uint_eq(a.pieces, b.pieces);
        ck_assert_uint_eq(a.descriptors, b.descriptors);
        ck_assert_uint_eq(a.scatters, b.scatters);
        ck_assert_uint_eq(a.checks, b.checks);
        ck_assert_uint_eq(a.wire_bytes, b.wire_bytes);
        ck_assert_uint_eq(a.scratch_bytes, b.scratch_bytes);
        ck_assert_uint_eq(a.staging_bytes, b.staging_bytes);
        ck_assert_msg(!memcmp(a.digest, b.digest, 16), "inference rank %d of tp %d: the deduped plan differs", rank,
                      dtp);
    }
}

/* tp x ep trainer ranks on `gpus` GPUs: rank r at tp r mod tp, ep r mod
 * ep, data-parallel copy r / max(tp, ep) (set when with_dp). */
static struct refit_parallel *grid(int tp, int ep, int gpus, int with_dp)
{
    struct refit_parallel *s = calloc((size_t)gpus, sizeof(*s));
    ck_assert_ptr_nonnull(s);
    int w = tp > ep ? tp : ep;
    for (int r = 0; r < gpus; r++)
        s[r] = (struct refit_parallel){.tp_rank = r % tp, .tp_size = tp, .pp_size = 1, .ep_rank = r % ep,
                                       .ep_size = ep, .etp_size = 1, .dp_rank = with_dp ? r / w : 0,
                                       .dp_size = with_dp ? gpus / w : 0};
    return s;
}

/* same_plans from a grid of trainer ranks into each inference layout
 * {tp, ep} of infer[n_infer]. */
static void grid_plans(const char *config_json, int tp, int ep, int gpus, int with_dp, const int (*infer)[2],
                       size_t n_infer)
{
    struct refit_parallel *s = grid(tp, ep, gpus, with_dp);
    for (size_t i = 0; i < n_infer; i++)
        same_plans(config_json, infer[i][0], infer[i][1], s, (size_t)gpus);
    free(s);
}

START_TEST(moe_ep_copies)
{
    /* tp2 ep4 on 16 GPUs (4 copies of each expert, 8 of each attention
     * shard) into vLLM tp2 with and without ep. */
    grid_plans(MOE, 2, 4, 16, 1, (const int[][2]){{2, 0}, {2, 2}}, 2);
}
END_TEST

START_TEST(dense_beyond_candidate_cap)
{
    /* tp2 on 144 GPUs: 72 copies of every shard, 144 of every norm: more
     * than the planner's 64 candidates a piece. */
    grid_plans(DENSE, 2, 1, 144, 0, (const int[][2]){{1, 0}, {4, 0}}, 2);
}
END_TEST

START_TEST(shuffled_ranks)
{
    /* The copies in no particular order: candidates still in source order. */
    struct refit_parallel *s = grid(2, 4, 24, 1);
    unsigned x = 12345;
    for (int i = 23; i > 0; i--) {
        x = x * 1103515245u + 12345u;
        int j = (int)((x >> 16) % (unsigned)(i + 1));
        struct refit_parallel t = s[i];
        s[i] = s[j];
        s[j] = t;
    }
    same_plans(MOE, 4, 4, s, 24);
    free(s);
}
END_TEST

START_TEST(fsdp_and_pipeline_copies)
{
    /* FSDP: 3 shards, 2 replicas; Megatron pp2 tp2, 3 copies. */
    struct refit_parallel f[6];
    for (int r = 0; r < 6; r++)
        f[r] = (struct refit_parallel){.tp_size = 1, .pp_size = 1, .ep_size = 1, .etp_size = 1, .dp_rank = r / 3,
                                       .dp_size = 2, .layout = "fsdp", .shard_rank = r % 3, .shard_size = 3};
    same_plans(DENSE, 2, 0, f, 6);
    struct refit_parallel m[12];
    for (int r = 0; r < 12; r++)
        m[r] = (struct refit_parallel){.tp_rank = r % 2, .tp_size = 2, .pp_rank = (r / 2) % 2, .pp_size = 2,
                                       .ep_size = 1, .etp_size = 1, .dp_rank = r / 4, .dp_size = 3};
    same_plans(DENSE, 2, 0, m, 12);
}
END_TEST

START_TEST(digest_tells_plans_apart)
{
    struct refit_parallel *s = grid(2, 4, 16, 1);
    struct refit_plan_info a = plan(MOE, 1, 0, 2, 0, s, 8), b = plan(MOE, 1, 0, 2, 0, s, 16);
    /* The same bytes kept, spread over twice the sources. */
    ck_assert_uint_eq(a.staging_bytes, b.staging_bytes);
    ck_assert_msg(memcmp(a.digest, b.digest, 16) != 0, "8 and 16 sources gave the same digest");
    struct refit_plan_info c = plan(MOE, 1, 1, 2, 0, s, 16);
    ck_assert_msg(memcmp(b.digest, c.digest, 16) != 0, "inference ranks 0 and 1 gave the same digest");
    free(s);
}
END_TEST

/* A receiver's first plan (layouts built in fresh memory) and its later
 * ones (in memory the earlier plans used) are the same plan, whatever was
 * planned in between; and each is the plan a fresh receiver makes. */
START_TEST(replans_match_first_plans)
{
    struct refit_parallel *a = grid(2, 4, 16, 1), *b = grid(2, 2, 4, 0);
    const struct refit_parallel *sets[] = {a, b, a, b};
    size_t n[] = {16, 4, 16, 4};
    struct refit_plan_info got[4];
    replan(MOE, sets, n, 4, got);
    struct refit_plan_info fa = plan(MOE, 1, 0, 2, 0, a, 16), fb = plan(MOE, 1, 0, 2, 0, b, 4);
    ck_assert_msg(memcmp(fa.digest, fb.digest, 16) != 0, "the two source sets gave the same plan");
    for (int i = 0; i < 4; i++)
        ck_assert_msg(!memcmp(got[i].digest, (i % 2 ? fb : fa).digest, 16), "plan %d of one receiver differs", i);
    free(a);
    free(b);
}
END_TEST

/* refit.replicas > 1: each engine of the layout reads each replicated
 * piece from the source the layout-wide spread gives it; the bytes kept
 * stay the same (the bytes pulled may not: rows fetched into scratch merge
 * differently per source), the sources differ between engines. */
START_TEST(spread_across_engines)
{
    struct refit_parallel *s = grid(2, 4, 16, 1);
    struct refit_plan_info base = plan(MOE, 1, 0, 2, 0, s, 16);
    struct refit_plan_info one = plan_with(MOE, 1, 0, 2, 0, s, 16, "refit.replicas=1", NULL, NULL);
    ck_assert_msg(!memcmp(base.digest, one.digest, 16), "refit.replicas: 1 changed the plan");
    struct refit_plan_info e0 = plan_with(MOE, 1, 0, 2, 0, s, 16, "refit.replicas=2", "refit.replica_index=0", NULL);
    struct refit_plan_info e1 = plan_with(MOE, 1, 0, 2, 0, s, 16, "refit.replicas=2", "refit.replica_index=1", NULL);
    ck_assert_msg(memcmp(e0.digest, e1.digest, 16) != 0, "engines 0 and 1 of 2 read from the same sources");
    ck_assert_uint_eq(e0.staging_bytes, base.staging_bytes);
    ck_assert_uint_eq(e1.staging_bytes, base.staging_bytes);
    /* Without an index: a hash of the receiver id picks one of the two. */
    struct refit_plan_info h = plan_with(MOE, 1, 0, 2, 0, s, 16, "refit.replicas=2", NULL, NULL);
    ck_assert(!memcmp(h.digest, e0.digest, 16) || !memcmp(h.digest, e1.digest, 16));
    /* Deduped or not, the same choice. */
    struct refit_plan_info n1 = plan_with(MOE, 0, 0, 2, 0, s, 16, "refit.replicas=2", "refit.replica_index=1", NULL);
    ck_assert(!memcmp(n1.digest, e1.digest, 16));
    int crc = 0;
    plan_with(MOE, 1, 0, 2, 0, s, 16, "refit.replicas=2", "refit.replica_index=2", &crc);
    ck_assert_int_eq(crc, REFIT_EINVAL);
    free(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plan_dedupe");
    TCase *tc = tcase_create("dedupe");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, moe_ep_copies);
    tcase_add_test(tc, dense_beyond_candidate_cap);
    tcase_add_test(tc, shuffled_ranks);
    tcase_add_test(tc, fsdp_and_pipeline_copies);
    tcase_add_test(tc, digest_tells_plans_apart);
    tcase_add_test(tc, spread_across_engines);
    tcase_add_test(tc, replans_match_first_plans);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
