/* test_cli_model.c — `refit convert` and `refit shard` run as a user runs
 * them (the built binary; meson passes its path): HF -> shard -> convert
 * gives the bytes of the direct conversion, options and errors. */
#include <sys/wait.h>

#include "synth.h"
#include "../check_run.h"

static char *tmp;

static void setup(void)
{
    tmp = t_mkdtemp();
}

static void teardown(void)
{
    t_rmtree(tmp);
    free(tmp);
}

/* Runs `refit <args>`; returns the exit status, stderr in err (if given). */
static int refit(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refit(char *err, size_t errlen, const char *fmt, ...)
{
    char args[8192], cmd[16384], ef[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(ef, sizeof(ef), "%s/stderr.txt", tmp);
    snprintf(cmd, sizeof(cmd), "%s %s >/dev/null 2>%s", REFIT_BIN, args, ef);
    int st = system(cmd);
    if (err) {
        FILE *f = fopen(ef, "r");
        size_t n = f ? fread(err, 1, errlen - 1, f) : 0;
        err[n] = '\0';
        if (f)
            fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int same_bytes(const char *a, const char *b)
{
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

static int exists(const char *fmt, const char *dir, int i)
{
    char p[4096];
    snprintf(p, sizeof(p), fmt, dir, i);
    struct stat st;
    return stat(p, &st) == 0;
}

START_TEST(test_help)
{
    ck_assert_int_eq(refit(NULL, 0, "convert --help"), 0);
    ck_assert_int_eq(refit(NULL, 0, "shard --help"), 0);
    ck_assert_int_eq(refit(NULL, 0, "bench layout --help"), 0);
    char err[4096];
    ck_assert_int_eq(refit(err, sizeof(err), "convert --hf /nonexistent --target tpu --out x"), 2);
    ck_assert_msg(strstr(err, "--target"), "%s", err);
    ck_assert_int_eq(refit(err, sizeof(err), "convert --hf a --megatron b --target hf --out x"), 2);
    ck_assert_int_eq(refit(err, sizeof(err), "shard --hf a --out b"), 2);
}
END_TEST

/* The shared fixture through the CLI: HF -> shard (tp 2) -> convert equals
 * convert from HF, for vLLM ranks with and without FP8, and the hf layout
 * reproduces model.safetensors byte for byte. */
START_TEST(test_fixture_roundtrip)
{
    char *fx = t_fixture("qwen3-tiny");
    char sh[4096], a[4096], b[4096], ref[4096];
    snprintf(sh, sizeof(sh), "%s/shards", tmp);
    snprintf(a, sizeof(a), "%s/a.safetensors", tmp);
    snprintf(b, sizeof(b), "%s/b.safetensors", tmp);
    ck_assert_int_eq(refit(NULL, 0, "shard --hf %s --tp 2 --out %s", fx, sh), 0);
    ck_assert(exists("%s/rank%d.safetensors", sh, 0) && exists("%s/rank%d.safetensors", sh, 1));
    ck_assert(!exists("%s/rank%d.safetensors", sh, 2));
    ck_assert(exists("%s/layout.yaml%.0d", sh, 0));
    ck_assert_int_eq(refit(NULL, 0, "convert --hf %s --target hf --out %s", fx, a), 0);
    snprintf(ref, sizeof(ref), "%s/model.safetensors", fx);
    ck_assert(same_bytes(a, ref));
    ck_assert_int_eq(refit(NULL, 0, "convert --megatron %s --hf-config %s/config.json --target hf --out %s", sh, fx, b), 0);
    ck_assert(same_bytes(a, b));
    for (int r = 0; r < 2; r++) {
        ck_assert_int_eq(refit(NULL, 0, "convert --hf %s --target vllm --tp 2 --rank %d --fp8 deepgemm --out %s", fx, r, a), 0);
        ck_assert_int_eq(refit(NULL, 0, "convert --megatron %s --hf-config %s/config.json --target vllm --tp 2 --rank %d --fp8 deepgemm --out %s",
                               sh, fx, r, b), 0);
        ck_assert(same_bytes(a, b));
    }
    /* nothing but the target tensors and their scales */
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(a, &f), 0);
    ck_assert_uint_eq(refit_st_count(f), 2 + 8 * 2 + 4 * 2);
    ck_assert_ptr_nonnull(refit_st_find(f, "model.layers.1.mlp.gate_up_proj.weight_scale_inv"));
    refit_st_close(f);
    /* a floor changes the scales of an all-zero-free tensor only when it binds */
    ck_assert_int_eq(refit(NULL, 0, "convert --hf %s --target vllm --fp8 trainer --fp8-floor 1 --out %s", fx, b), 0);
    ck_assert_int_eq(refit_st_open(b, &f), 0);
    const struct refit_st_tensor *s = refit_st_find(f, "model.layers.0.self_attn.o_proj.weight_scale_inv");
    ck_assert_ptr_nonnull(s);
    ck_assert(((const float *)s->data)[0] == 1.0f);
    refit_st_close(f);
    free(fx);
}
END_TEST

/* Pipeline and FSDP shards through the CLI: --shards (and --megatron)
 * give the bytes of the direct conversion; L 3 over PP 2 needs the split. */
START_TEST(test_pp_fsdp_shards)
{
    char ck[4096], sh[4096], a[4096], b[4096], err[4096];
    snprintf(ck, sizeof(ck), "%s/qm", tmp);
    struct t_ckpt c;
    t_ckpt_begin(&c, 3);
    write_ckpt(&QM, ck, &c);
    snprintf(a, sizeof(a), "%s/a.safetensors", tmp);
    snprintf(b, sizeof(b), "%s/b.safetensors", tmp);
    snprintf(sh, sizeof(sh), "%s/pp", tmp);
    ck_assert_int_eq(refit(err, sizeof(err), "shard --hf %s --tp 2 --ep 2 --pp 2 --out %s", ck, sh), 2);
    ck_assert_msg(strstr(err, "divisible") && strstr(err, "split"), "%s", err);
    ck_assert_int_eq(refit(err, sizeof(err), "shard --hf %s --tp 2 --ep 2 --pp 2 --pp-layers 2,1 --out %s", ck, sh), 0);
    for (int r = 0; r < 4; r++)
        ck_assert(exists("%s/rank%d.safetensors", sh, r));
    ck_assert(!exists("%s/rank%d.safetensors", sh, 4));
    for (int r = 0; r < 2; r++) {
        ck_assert_int_eq(refit(err, sizeof(err), "convert --hf %s --target vllm --tp 2 --rank %d --out %s", ck, r, a), 0);
        ck_assert_int_eq(refit(err, sizeof(err), "convert --shards %s --hf-config %s/config.json --target vllm --tp 2 --rank %d --out %s",
                               sh, ck, r, b), 0);
        ck_assert_msg(same_bytes(a, b), "%s", err);
    }
    snprintf(sh, sizeof(sh), "%s/fsdp", tmp);
    ck_assert_int_eq(refit(err, sizeof(err), "shard --hf %s --fsdp 3 --tp 2 --out %s", ck, sh), 2);
    ck_assert_int_eq(refit(err, sizeof(err), "shard --hf %s --fsdp 3 --out %s", ck, sh), 0);
    ck_assert(exists("%s/rank%d.safetensors", sh, 2) && !exists("%s/rank%d.safetensors", sh, 3));
    ck_assert_int_eq(refit(err, sizeof(err), "convert --hf %s --target hf --out %s", ck, a), 0);
    ck_assert_int_eq(refit(err, sizeof(err), "convert --megatron %s --hf-config %s/config.json --target hf --out %s",
                           sh, ck, b), 0);
    ck_assert_msg(same_bytes(a, b), "%s", err);
}
END_TEST

/* Synthetic Qwen3-MoE: EP shards through the CLI, vLLM EP4. */
START_TEST(test_moe_ep)
{
    char ck[4096], sh[4096], a[4096], b[4096], err[4096];
    snprintf(ck, sizeof(ck), "%s/qm", tmp);
    struct t_ckpt c;
    t_ckpt_begin(&c, 3);
    write_ckpt(&QM, ck, &c);
    snprintf(sh, sizeof(sh), "%s/shards", tmp);
    snprintf(a, sizeof(a), "%s/a.safetensors", tmp);
    snprintf(b, sizeof(b), "%s/b.safetensors", tmp);
    ck_assert_int_eq(refit(err, sizeof(err), "shard --hf %s --tp 2 --ep 4 --out %s", ck, sh), 0);
    for (int r = 0; r < 4; r++)
        ck_assert(exists("%s/rank%d.safetensors", sh, r));
    for (int r = 0; r < 4; r++) {
        ck_assert_int_eq(refit(err, sizeof(err), "convert --hf %s --target vllm --tp 4 --rank %d --ep 4 --out %s", ck, r, a), 0);
        ck_assert_int_eq(refit(err, sizeof(err), "convert --megatron %s --hf-config %s/config.json --target vllm --tp 4 --rank %d --ep 4 --out %s",
                               sh, ck, r, b), 0);
        ck_assert(same_bytes(a, b));
        refit_st_file_t *f;
        ck_assert_int_eq(refit_st_open(a, &f), 0);
        const struct refit_st_tensor *t = refit_st_find(f, "model.layers.1.mlp.experts.w13_weight");
        ck_assert_ptr_nonnull(t);
        ck_assert_int_eq(t->shape[0], 1);
        ck_assert_int_eq(t->shape[1], 2 * QM.Im);
        refit_st_close(f);
    }
    /* explicit plugin, and a plugin that does not claim the model */
    ck_assert_int_eq(refit(err, sizeof(err), "convert --hf %s --model qwen3_moe --target hf --out %s", ck, a), 0);
    ck_assert_int_eq(refit(err, sizeof(err), "convert --hf %s --model glm --target hf --out %s", ck, a), 2);
    ck_assert_msg(strstr(err, "qwen3_moe"), "%s", err);
    /* --ep other than tp */
    ck_assert_int_ne(refit(err, sizeof(err), "convert --hf %s --target vllm --tp 2 --ep 4 --out %s", ck, a), 0);
    /* FP8 on an unaligned partition: refused, with the part named */
    ck_assert_int_eq(refit(err, sizeof(err), "convert --hf %s --target vllm --tp 2 --rank 1 --fp8 trainer --out %s", ck, a), 2);
    ck_assert_msg(strstr(err, "FP8 refused") && strstr(err, "128"), "%s", err);
}
END_TEST


/* --config adds the model section's skip and fp8 patterns; flags win. */
START_TEST(test_config_file)
{
    char ck[4096], cfg[4096], a[4096], err[4096];
    snprintf(ck, sizeof(ck), "%s/qm", tmp);
    struct t_ckpt c;
    t_ckpt_begin(&c, 5);
    write_ckpt(&QM, ck, &c);
    snprintf(cfg, sizeof(cfg), "%s/cluster.yaml", tmp);
    t_write_file(cfg, "model:\n  target: vllm\n  skip: [\"lm_head.weight\"]\n  fp8:\n"
                      "    enabled: true\n    exclude: [\"*.self_attn.*\", \"*.mlp.gate_up_proj.*\"]\n");
    snprintf(a, sizeof(a), "%s/a.safetensors", tmp);
    ck_assert_int_eq(refit(err, sizeof(err), "convert --config %s --hf %s --out %s", cfg, ck, a), 0);
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(a, &f), 0);
    ck_assert_ptr_null(refit_st_find(f, "lm_head.weight"));
    ck_assert_int_eq(refit_st_find(f, "model.layers.1.mlp.experts.w2_weight")->dtype, REFIT_DTYPE_F8_E4M3);
    ck_assert_int_eq(refit_st_find(f, "model.layers.1.self_attn.o_proj.weight")->dtype, REFIT_DTYPE_BF16);
    ck_assert_int_eq(refit_st_find(f, "model.layers.0.mlp.down_proj.weight")->dtype, REFIT_DTYPE_F8_E4M3);
    refit_st_close(f);
    /* --set overrides a key; --target overrides model.target */
    ck_assert_int_eq(refit(err, sizeof(err), "convert --config %s --set model.fp8.enabled=false --hf %s --target hf --out %s",
                           cfg, ck, a), 0);
    ck_assert_int_eq(refit_st_open(a, &f), 0);
    ck_assert_ptr_nonnull(refit_st_find(f, "model.layers.1.mlp.experts.3.down_proj.weight"));
    ck_assert_int_eq(refit_st_find(f, "model.layers.0.mlp.down_proj.weight")->dtype, REFIT_DTYPE_BF16);
    refit_st_close(f);
}
END_TEST

START_TEST(test_errors)
{
    char ck[4096], p[4096], err[4096];
    snprintf(ck, sizeof(ck), "%s/bad", tmp);
    mkdir(ck, 0777);
    snprintf(p, sizeof(p), "%s/config.json", ck);
    t_write_file(p, "{\"model_type\": \"mamba_zz\"}");
    ck_assert_int_eq(refit(err, sizeof(err), "convert --hf %s --target hf --out %s/x", ck, tmp), 1);
    ck_assert_msg(strstr(err, "mamba_zz") && strstr(err, "no model plugin"), "%s", err);
    ck_assert_int_eq(refit(err, sizeof(err), "shard --hf %s --tp 1 --out %s/y", ck, tmp), 1);
    /* a real config with a corrupt weights file */
    t_write_file(p, QM_CONFIG);
    snprintf(p, sizeof(p), "%s/model.safetensors", ck);
    t_write_file(p, "\xff\xff\xff\xff\xff\xff\xff\x7f{}");
    ck_assert_int_eq(refit(err, sizeof(err), "convert --hf %s --target hf --out %s/x", ck, tmp), 1);
    ck_assert_msg(strstr(err, "model.safetensors"), "%s", err);
    struct stat st;
    snprintf(p, sizeof(p), "%s/x", tmp);
    ck_assert_int_ne(stat(p, &st), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model_cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_help);
    tcase_add_test(tc, test_moe_ep);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_config_file);
    tcase_add_test(tc, test_pp_fsdp_shards);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    /* The fixture test runs in its own suite so that a missing fixture
     * skips it without hiding the rest. */
    const char *root = getenv("REFIT_SOURCE_ROOT");
    char fx[4096];
    snprintf(fx, sizeof(fx), "%s/../shared/fixtures/qwen3-tiny", root ? root : ".");
    struct stat st;
    if (!failed && stat(fx, &st) == 0) {
        Suite *s2 = suite_create("model_cli_fixture");
        TCase *t2 = tcase_create("fixture");
        tcase_set_timeout(t2, 60);
        tcase_add_checked_fixture(t2, setup, teardown);
        tcase_add_test(t2, test_fixture_roundtrip);
        suite_add_tcase(s2, t2);
        failed = t_run_suite(s2, CK_NORMAL);
    }
    return failed ? 1 : 0;
}
