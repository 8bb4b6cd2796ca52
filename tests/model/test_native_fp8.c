/* test_native_fp8.c — native FP8 checkpoints (e4m3 weights + float32
 * <name>_scale_inv on the 128x128 grid, DeepSeek's format as its
 * README_WEIGHTS.md states it) read by the conversion engine, on a small
 * Qwen3-shaped checkpoint (any family reads them the same way): into bf16
 * every quantized weight is dequantized as DeepSeek's weight_dequant does
 * (float32 product, one round-to-nearest-even to bf16, written out here from
 * the e4m3fn definition); into an FP8 destination on the same block grid
 * (hf, vLLM TP 1 and 2 with fused qkv_proj / gate_up_proj) the bytes and
 * multipliers pass through untouched; trainer shards are bf16 and convert
 * back to the same bytes; the trainer stand-in reads them; a missing or
 * misshapen scale is refused by name. */
#include <math.h>

#include "tutil.h"
#include "refit/standin.h"
#include "tfix.h"
#include "../check_run.h"

/* H 4, G 2, d 128, K 320 (an edge column block), I 512, V 300, 2 layers:
 * at vLLM TP 2 every rank's part of every linear starts on the 128 grid. */
#define NF_CONFIG                                                                        \
    "{\"model_type\": \"qwen3\", \"num_hidden_layers\": 2, \"hidden_size\": 320,"        \
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 128,"        \
    " \"intermediate_size\": 512, \"vocab_size\": 300, \"tie_word_embeddings\": false,"  \
    " \"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e4m3\","           \
    " \"weight_block_size\": [128, 128]}}"

static uint32_t nf_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

/* Arbitrary finite e4m3 codes and positive multipliers; scale_shape_off
 * adds to the scale's rows (a misshapen scale), drop leaves it out. */
static void add_fp8(struct t_ckpt *c, const char *name, int64_t rows, int64_t cols, int scale_shape_off,
                    bool drop)
{
    int64_t shape[2] = {rows, cols}, ss[2] = {(rows + 127) / 128 + scale_shape_off, (cols + 127) / 128};
    size_t n = (size_t)(rows * cols), ns = (size_t)(ss[0] * ss[1]);
    uint8_t *q = malloc(n);
    float *s = malloc(ns * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)nf_rand(&c->seed);
        q[i] = (b & 0x7f) == 0x7f ? (uint8_t)(b & 0xf0) : b;
    }
    for (size_t i = 0; i < ns; i++)
        s[i] = ldexpf(1.0f + (float)(nf_rand(&c->seed) & 0xffff) / 65536.0f, -4 - (int)(nf_rand(&c->seed) % 9));
    char sn[512];
    snprintf(sn, sizeof(sn), "%s_scale_inv", name);
    ck_assert_int_eq(refit_st_writer_add_copy(c->w, name, REFIT_DTYPE_F8_E4M3, 2, shape, q, n), 0);
    if (!drop)
        ck_assert_int_eq(refit_st_writer_add_copy(c->w, sn, REFIT_DTYPE_F32, 2, ss, s, ns * sizeof(float)), 0);
    free(q);
    free(s);
}

/* bad: the one quantized weight written with a bad scale (1: one block row
 * too many, 2: no scale). */
static void write_ckpt(const char *dir, const char *bad_name, int bad)
{
    char p[4096];
    mkdir(dir, 0777);
    snprintf(p, sizeof(p), "%s/config.json", dir);
    t_write_file(p, NF_CONFIG);
    struct t_ckpt c;
    t_ckpt_begin(&c, 23);
    const enum refit_dtype B = REFIT_DTYPE_BF16;
    t_ckpt_add(&c, "model.embed_tokens.weight", B, 300, 320);
    t_ckpt_add(&c, "lm_head.weight", B, 300, 320);
    t_ckpt_add(&c, "model.norm.weight", B, 320, 0);
    static const struct {
        const char *s;
        int64_t r, c;
    } lin[] = {{"self_attn.q_proj.weight", 512, 320}, {"self_attn.k_proj.weight", 256, 320},
               {"self_attn.v_proj.weight", 256, 320}, {"self_attn.o_proj.weight", 320, 512},
               {"mlp.gate_proj.weight", 512, 320},    {"mlp.up_proj.weight", 512, 320},
               {"mlp.down_proj.weight", 320, 512}};
    for (long l = 0; l < 2; l++) {
        t_ckpt_addf(&c, B, 320, 0, "model.layers.%ld.input_layernorm.weight", l, 0);
        t_ckpt_addf(&c, B, 320, 0, "model.layers.%ld.post_attention_layernorm.weight", l, 0);
        t_ckpt_addf(&c, B, 128, 0, "model.layers.%ld.self_attn.q_norm.weight", l, 0);
        t_ckpt_addf(&c, B, 128, 0, "model.layers.%ld.self_attn.k_norm.weight", l, 0);
        for (size_t i = 0; i < sizeof(lin) / sizeof(lin[0]); i++) {
            char n[256];
            snprintf(n, sizeof(n), "model.layers.%ld.%s", l, lin[i].s);
            bool b = bad_name && !strcmp(n, bad_name);
            add_fp8(&c, n, lin[i].r, lin[i].c, b && bad == 1, b && bad == 2);
        }
    }
    t_ckpt_end(&c, dir);
}

/* e4m3fn (bias 7, subnormals, no infinities) decoded from its bits, and
 * float32 -> bf16 nearest-even: the reference of weight_dequant. */
static float ref_e4m3(uint8_t b)
{
    int e = (b >> 3) & 15, m = b & 7;
    float v = e ? ldexpf(1.0f + (float)m / 8.0f, e - 7) : ldexpf((float)m / 8.0f, -6);
    return (b & 0x80) ? -v : v;
}

static uint16_t ref_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static uint16_t *ref_dequant(const struct refit_st_tensor *q, const struct refit_st_tensor *s)
{
    int64_t rows = q->shape[0], cols = q->shape[1], bc = (cols + 127) / 128;
    uint16_t *out = malloc((size_t)(rows * cols) * 2);
    const uint8_t *qb = q->data;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            float m;
            memcpy(&m, (const char *)s->data + (size_t)((i / 128) * bc + j / 128) * 4, 4);
            out[i * cols + j] = ref_bf16(ref_e4m3(qb[i * cols + j]) * m);
        }
    return out;
}

static void ck_open(struct ck *k)
{
    snprintf(k->dir, sizeof(k->dir), "%s/fp8", tmp);
    write_ckpt(k->dir, NULL, 0);
    ck_open_dir(k, NULL);
}

static struct refit_convert_opts opts(enum refit_model_target t, int tp, int rank, bool fp8)
{
    struct refit_convert_opts o = {.target = t, .tp = tp, .rank = rank};
    o.fp8.enabled = fp8;
    o.fp8.floor = -1;
    return o;
}

static void conv(const struct ck *k, const struct refit_convert_opts *o, const char *path)
{
    ck_assert_msg(refit_convert_write(k->m, k->v, o, path) == 0, "%s", refit_error_message());
}

static const struct refit_st_tensor *qt(const struct ck *k, const char *name, const struct refit_st_tensor **s)
{
    char sn[512];
    snprintf(sn, sizeof(sn), "%s_scale_inv", name);
    *s = refit_st_checkpoint_find(k->st, sn);
    const struct refit_st_tensor *t = refit_st_checkpoint_find(k->st, name);
    ck_assert(t && *s);
    return t;
}

/* Into bf16: weight_dequant's bytes; the others as they are. */
START_TEST(test_dequant_hf)
{
    struct ck k;
    ck_open(&k);
    char out[4200];
    snprintf(out, sizeof(out), "%s/bf16.safetensors", tmp);
    struct refit_convert_opts o = opts(REFIT_TARGET_HF, 1, 0, false);
    conv(&k, &o, out);
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(out, &f), 0);
    size_t n_fp8 = 0, n_other = 0;
    for (size_t i = 0; i < refit_st_checkpoint_count(k.st); i++) {
        const struct refit_st_tensor *t = refit_st_checkpoint_at(k.st, i), *s;
        if (strstr(t->name, "_scale_inv"))
            continue;
        const struct refit_st_tensor *g = refit_st_find(f, t->name);
        ck_assert_msg(g != NULL, "%s missing", t->name);
        if (t->dtype != REFIT_DTYPE_F8_E4M3) {
            t_assert_bytes(g, t->data, t->nbytes, t->name);
            n_other++;
            continue;
        }
        qt(&k, t->name, &s);
        uint16_t *want = ref_dequant(t, s);
        ck_assert_int_eq(g->dtype, REFIT_DTYPE_BF16);
        t_assert_bytes(g, want, t->nbytes * 2, t->name);
        free(want);
        n_fp8++;
    }
    ck_assert_uint_eq(n_fp8, 14);
    ck_assert_uint_eq(refit_st_count(f), n_fp8 + n_other); /* no scales in a bf16 output */
    refit_st_close(f);
    ck_close(&k);
}
END_TEST

/* Into FP8 on the same grid: hf (whole tensors) and vLLM TP 1 / TP 2
 * (fused qkv_proj and gate_up_proj, row and column splits) hold the
 * checkpoint's e4m3 bytes and multipliers, cut and stacked as the layout
 * says. */
struct rect {
    const char *part;
    int64_t r0, nr, c0, nc; /* nr / nc 0: all */
};

static void expect_fp8(const struct ck *k, refit_st_file_t *f, const char *dst, const struct rect *parts, int np)
{
    char sn[512];
    snprintf(sn, sizeof(sn), "%s_scale_inv", dst);
    const struct refit_st_tensor *g = refit_st_find(f, dst), *gs = refit_st_find(f, sn);
    ck_assert_msg(g && gs, "%s or its scale missing", dst);
    ck_assert_int_eq(g->dtype, REFIT_DTYPE_F8_E4M3);
    size_t off = 0, soff = 0;
    for (int i = 0; i < np; i++) {
        const struct refit_st_tensor *s, *t = qt(k, parts[i].part, &s);
        int64_t cols = t->shape[1], bc = s->shape[1];
        int64_t nr = parts[i].nr ? parts[i].nr : t->shape[0], nc = parts[i].nc ? parts[i].nc : cols;
        for (int64_t r = 0; r < nr; r++) {
            const uint8_t *want = (const uint8_t *)t->data + (parts[i].r0 + r) * cols + parts[i].c0;
            ck_assert_msg(!memcmp((const uint8_t *)g->data + off, want, (size_t)nc), "%s row %lld", dst,
                          (long long)r);
            off += (size_t)nc;
        }
        for (int64_t br = 0; br < (nr + 127) / 128; br++) {
            const char *want = (const char *)s->data + (size_t)((parts[i].r0 / 128 + br) * bc + parts[i].c0 / 128) * 4;
            size_t len = (size_t)((nc + 127) / 128) * 4;
            ck_assert_msg(!memcmp((const char *)gs->data + soff, want, len), "%s scale row %lld", sn,
                          (long long)br);
            soff += len;
        }
    }
    ck_assert_uint_eq(off, g->nbytes);
    ck_assert_uint_eq(soff, gs->nbytes);
}

START_TEST(test_passthrough)
{
    struct ck k;
    ck_open(&k);
    char out[4200];
    snprintf(out, sizeof(out), "%s/o.safetensors", tmp);
    refit_st_file_t *f;
    /* hf */
    struct refit_convert_opts o = opts(REFIT_TARGET_HF, 1, 0, true);
    conv(&k, &o, out);
    ck_assert_int_eq(refit_st_open(out, &f), 0);
    struct rect whole = {"model.layers.1.self_attn.o_proj.weight", 0, 0, 0, 0};
    expect_fp8(&k, f, whole.part, &whole, 1);
    refit_st_close(f);
    /* vLLM TP 1: qkv_proj = q; k; v on rows */
    o = opts(REFIT_TARGET_VLLM, 1, 0, true);
    conv(&k, &o, out);
    ck_assert_int_eq(refit_st_open(out, &f), 0);
    struct rect qkv[] = {{"model.layers.0.self_attn.q_proj.weight", 0, 0, 0, 0},
                         {"model.layers.0.self_attn.k_proj.weight", 0, 0, 0, 0},
                         {"model.layers.0.self_attn.v_proj.weight", 0, 0, 0, 0}};
    expect_fp8(&k, f, "model.layers.0.self_attn.qkv_proj.weight", qkv, 3);
    refit_st_close(f);
    /* vLLM TP 2, rank 1: half of each part's rows; o_proj / down_proj columns */
    o = opts(REFIT_TARGET_VLLM, 2, 1, true);
    conv(&k, &o, out);
    ck_assert_int_eq(refit_st_open(out, &f), 0);
    struct rect qkv1[] = {{"model.layers.1.self_attn.q_proj.weight", 256, 256, 0, 0},
                          {"model.layers.1.self_attn.k_proj.weight", 128, 128, 0, 0},
                          {"model.layers.1.self_attn.v_proj.weight", 128, 128, 0, 0}};
    expect_fp8(&k, f, "model.layers.1.self_attn.qkv_proj.weight", qkv1, 3);
    struct rect gu[] = {{"model.layers.0.mlp.gate_proj.weight", 256, 256, 0, 0},
                        {"model.layers.0.mlp.up_proj.weight", 256, 256, 0, 0}};
    expect_fp8(&k, f, "model.layers.0.mlp.gate_up_proj.weight", gu, 2);
    struct rect op = {"model.layers.0.self_attn.o_proj.weight", 0, 320, 256, 256};
    expect_fp8(&k, f, op.part, &op, 1);
    struct rect dp = {"model.layers.1.mlp.down_proj.weight", 0, 320, 256, 256};
    expect_fp8(&k, f, dp.part, &dp, 1);
    refit_st_close(f);
    ck_close(&k);
}
END_TEST

/* Trainer shards are bf16 (dequantized) and convert back to the same bytes
 * as the direct bf16 conversion; the trainer stand-in reads the same. */
START_TEST(test_shards_and_standin)
{
    struct ck k;
    ck_open(&k);
    char sh[4200], a[4200], b[4200];
    snprintf(sh, sizeof(sh), "%s/shards", tmp);
    snprintf(a, sizeof(a), "%s/direct.safetensors", tmp);
    snprintf(b, sizeof(b), "%s/via.safetensors", tmp);
    ck_assert_msg(refit_shard_write(k.m, k.v, 2, 1, NULL, sh) == 0, "%s", refit_error_message());
    refit_hf_view_t *mv;
    ck_assert_msg(refit_hf_view_open_megatron(k.m, sh, NULL, &mv) == 0, "%s", refit_error_message());
    struct refit_convert_opts o = opts(REFIT_TARGET_HF, 1, 0, false);
    conv(&k, &o, a);
    ck_assert_msg(refit_convert_write(k.m, mv, &o, b) == 0, "%s", refit_error_message());
    t_assert_same_files(a, b);
    refit_hf_view_close(mv);

    struct refit_parallel par = {.tp_size = 2, .tp_rank = 1, .ep_size = 1};
    struct refit_standin_shard sd;
    ck_assert_msg(refit_standin_shard_load(k.m, k.dir, &par, &sd) == 0, "%s", refit_error_message());
    const struct refit_st_tensor *s, *t = qt(&k, "model.layers.0.self_attn.o_proj.weight", &s);
    uint16_t *deq = ref_dequant(t, s);
    bool found = false;
    for (size_t i = 0; i < sd.n; i++) {
        if (strcmp(sd.t[i].name, "decoder.layers.0.self_attention.linear_proj.weight"))
            continue;
        found = true;
        ck_assert_int_eq(sd.t[i].dtype, REFIT_DTYPE_BF16);
        for (int64_t r = 0; r < 320; r++)
            ck_assert(!memcmp((const uint16_t *)sd.t[i].data + r * 256, deq + r * 512 + 256, 512));
    }
    ck_assert(found);
    free(deq);
    refit_standin_shard_free(&sd);
    ck_close(&k);
}
END_TEST

/* A scale of the wrong shape, or none, is refused naming it. */
START_TEST(test_bad_scale)
{
    const char *bad = "model.layers.1.mlp.up_proj.weight";
    char dir[4200], p[4300];
    snprintf(dir, sizeof(dir), "%s/bad%d", tmp, _i);
    write_ckpt(dir, bad, _i + 1);
    snprintf(p, sizeof(p), "%s/config.json", dir);
    refit_model_t *m;
    ck_assert_int_eq(refit_model_open(loader, NULL, p, &m), 0);
    refit_hf_view_t *v = NULL;
    ck_assert_int_eq(refit_hf_view_open(m, dir, NULL, &v), REFIT_EPROTO);
    const char *msg = refit_error_message();
    ck_assert_msg(strstr(msg, "up_proj.weight_scale_inv") && strstr(msg, "[4, 3]"), "%s", msg);
    refit_model_close(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model_native_fp8");
    TCase *tc = tcase_create("native_fp8");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, t_setup, t_teardown);
    tcase_add_test(tc, test_dequant_hf);
    tcase_add_test(tc, test_passthrough);
    tcase_add_test(tc, test_shards_and_standin);
    tcase_add_loop_test(tc, test_bad_scale, 0, 2);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
