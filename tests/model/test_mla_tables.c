/* test_mla_tables.c — the MLA tables of mla_tables.h against the world:
 * the hand-written synthetic checkpoints of mla_synth.h (names, shapes,
 * dtypes, FP8 scales), the published counts of the real checkpoints
 * (Megatron-Bridge's audit of GLM-5, a listing of DeepSeek's FP8 release)
 * expanded from configs/models/ (the MLA files), the coverage of every HF tensor by
 * the Megatron and engine tables, vLLM's block-FP8 partition rule at real
 * shapes, and the expectation builders of mla_expect.h (every rank's slices
 * put back together give the checkpoint).  Nothing here loads a model
 * plugin; test_mla_convert.c holds refit's conversions against the tables. */
#include "mla_expect.h"
#include "mla_synth.h"
#include "refit/config.h"
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

/* ------------------------------------------------------------------ */
/* A list of tensors (names, shapes) */

struct tlist {
    struct mla_t *t;
    size_t n, cap;
    uint64_t bytes, elems;
};

static void tlist_add(void *ctx, const struct mla_t *t)
{
    struct tlist *l = ctx;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->t = realloc(l->t, l->cap * sizeof(*l->t));
        ck_assert_ptr_nonnull(l->t);
    }
    l->t[l->n++] = *t;
    uint64_t e = 1;
    for (int d = 0; d < t->ndim; d++)
        e *= (uint64_t)t->shape[d];
    l->elems += e;
    l->bytes += e * refit_dtype_size(t->dtype);
}

static const struct mla_t *tlist_find(const struct tlist *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->t[i].name, name))
            return &l->t[i];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The synthetic writers against the HF table */

static const struct {
    const struct mla_cfg *cfg;
    bool fp8;
} synth_cases[] = {{&MLA_DS, false},   {&MLA_DS_NOQ, false}, {&MLA_KIMI, false}, {&MLA_GLM5, false},
                   {&MLA_DS_GRID, false}, {&MLA_DS_GRID, true}, {&MLA_GLM5, true}};

START_TEST(test_synth_matches_table)
{
    const struct mla_cfg *c = synth_cases[_i].cfg;
    bool fp8 = synth_cases[_i].fp8;
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/ck", tmp);
    mla_write_ckpt(c, dir, 5 + (uint64_t)_i, fp8);
    refit_st_checkpoint_t *ck;
    ck_assert_int_eq(refit_st_checkpoint_open(dir, &ck), 0);
    struct tlist want = {0};
    mla_hf_each(c, true, fp8, tlist_add, &want);
    ck_assert_uint_eq(refit_st_checkpoint_count(ck), want.n);
    for (size_t i = 0; i < want.n; i++) {
        const struct mla_t *w = &want.t[i];
        const struct refit_st_tensor *t = refit_st_checkpoint_find(ck, w->name);
        ck_assert_msg(t != NULL, "%s: %s in the table, not written", c->model_type, w->name);
        ck_assert_msg(t->dtype == w->dtype, "%s: dtype %s, table %s", w->name, refit_dtype_name(t->dtype),
                      refit_dtype_name(w->dtype));
        ck_assert_int_eq(t->ndim, w->ndim);
        for (int d = 0; d < w->ndim; d++)
            ck_assert_msg(t->shape[d] == w->shape[d], "%s dim %d: %lld, table %lld", w->name, d,
                          (long long)t->shape[d], (long long)w->shape[d]);
    }
    free(want.t);
    refit_st_checkpoint_close(ck);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Real shapes from the MLA files of configs/models against published counts */

/* One hf: map entry into the table configuration (the values are text;
 * "null" for q_lora_rank means no q LoRA). */
struct ycfg {
    struct mla_cfg c;
    char model_type[64];
};

static int put_field(void *arg, const char *key, const char *value)
{
    static const char *keys[] = {
        [Y_K] = "hidden_size", [Y_V] = "vocab_size", [Y_H] = "num_attention_heads",
        [Y_QR] = "q_lora_rank", [Y_KR] = "kv_lora_rank", [Y_NOPE] = "qk_nope_head_dim",
        [Y_ROPE] = "qk_rope_head_dim", [Y_VH] = "v_head_dim", [Y_I] = "intermediate_size",
        [Y_IM] = "moe_intermediate_size", [Y_NS] = "n_shared_experts", [Y_E] = "n_routed_experts",
        [Y_IH] = "index_n_heads", [Y_ID] = "index_head_dim"};
    struct ycfg *y = arg;
    int64_t v = strcmp(value, "null") ? strtoll(value, NULL, 10) : 0;
    if (!strcmp(key, "model_type"))
        snprintf(y->model_type, sizeof(y->model_type), "%s", value);
    else if (!strcmp(key, "num_hidden_layers"))
        y->c.layers = v;
    else if (!strcmp(key, "num_nextn_predict_layers"))
        y->c.mtp = v;
    else if (!strcmp(key, "first_k_dense_replace"))
        y->c.first_dense = v;
    for (int s = Y_K; s <= Y_ID; s++)
        if (!strcmp(key, keys[s]))
            y->c.v[s] = v;
    return 0;
}

/* The yaml's hf: map as a table configuration (read with the plain config
 * API: no model plugin is involved). */
static struct mla_cfg cfg_from_yaml(const char *file, struct ycfg *y)
{
    const char *root = getenv("REFIT_SOURCE_ROOT");
    char path[4096];
    snprintf(path, sizeof(path), "%s/configs/models/%s", root ? root : ".", file);
    refit_config_t *cfg;
    ck_assert_int_eq(refit_config_create(&cfg), 0);
    ck_assert_msg(refit_config_load(cfg, path) == 0, "%s: %s", path, refit_error_message());
    memset(y, 0, sizeof(*y));
    ck_assert_msg(refit_config_map_each(cfg, "model.hf", put_field, y) == 0, "%s: %s", path,
                  refit_error_message());
    refit_config_destroy(cfg);
    y->c.model_type = y->model_type;
    y->c.indexer = !strcmp(y->model_type, "glm_moe_dsa");
    y->c.mtp_copies = !strcmp(y->model_type, "deepseek_v3"); /* [DS-R1]; GLM-5 has none */
    ck_assert_msg(y->c.layers > 0 && y->c.v[Y_K] > 0 && y->c.v[Y_E] > 0, "%s: shapes missing", path);
    return y->c;
}

/* GLM-5: Megatron-Bridge's verified import/export of zai-org/GLM-5 covers
 * "59,079 tensors and 1,487,822,475,264 tensor-payload bytes in the
 * 78-layer inference graph", "743,911,199,232 parameters" (buffers like
 * e_score_correction_bias excluded), and "the 791 source tensors under
 * model.layers.78" ([MB-GLM5] glm5/card.yaml). */
START_TEST(test_real_glm5)
{
    struct ycfg y;
    struct mla_cfg c = cfg_from_yaml("glm-5.yaml", &y);
    ck_assert_int_eq(c.layers, 78);
    struct tlist main = {0}, all = {0};
    mla_hf_each(&c, false, false, tlist_add, &main);
    mla_hf_each(&c, true, false, tlist_add, &all);
    ck_assert_uint_eq(main.n, 59079);
    ck_assert_uint_eq(main.bytes, 1487822475264ull);
    uint64_t buffers = (uint64_t)(c.layers - c.first_dense) * (uint64_t)c.v[Y_E];
    ck_assert_uint_eq(main.elems - buffers, 743911199232ull);
    ck_assert_uint_eq(all.n - main.n, 791);
    free(main.t);
    free(all.t);
}
END_TEST

/* DeepSeek-V3's FP8 release, as listed for DeepSeek-R1 (same architecture,
 * same format): 91,991 tensors with the MTP layer and the scales,
 * 684,531,386,000 elements, and these shapes ([DS-R1]). */
START_TEST(test_real_deepseek_fp8)
{
    struct ycfg y;
    struct mla_cfg c = cfg_from_yaml("deepseek-v3.yaml", &y);
    struct tlist l = {0};
    mla_hf_each(&c, true, true, tlist_add, &l);
    ck_assert_uint_eq(l.n, 91991);
    ck_assert_uint_eq(l.elems, 684531386000ull);
    static const struct {
        const char *name;
        enum refit_dtype dt;
        int64_t r, c;
    } spot[] = {
        {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight", REFIT_DTYPE_F8_E4M3, 576, 7168},
        {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv", REFIT_DTYPE_F32, 5, 56},
        {"model.layers.61.self_attn.q_b_proj.weight", REFIT_DTYPE_F8_E4M3, 24576, 1536},
        {"model.layers.7.self_attn.q_b_proj.weight_scale_inv", REFIT_DTYPE_F32, 192, 12},
        {"model.layers.3.self_attn.kv_b_proj.weight_scale_inv", REFIT_DTYPE_F32, 256, 4},
        {"model.layers.60.self_attn.o_proj.weight", REFIT_DTYPE_F8_E4M3, 7168, 16384},
        {"model.layers.2.mlp.down_proj.weight_scale_inv", REFIT_DTYPE_F32, 56, 144},
        {"model.layers.3.mlp.gate.weight", REFIT_DTYPE_BF16, 256, 7168},
        {"model.layers.61.mlp.experts.255.down_proj.weight_scale_inv", REFIT_DTYPE_F32, 56, 16},
        {"model.layers.61.eh_proj.weight", REFIT_DTYPE_BF16, 7168, 14336},
        {"model.layers.61.shared_head.head.weight", REFIT_DTYPE_BF16, 129280, 7168},
    };
    for (size_t i = 0; i < sizeof(spot) / sizeof(spot[0]); i++) {
        const struct mla_t *t = tlist_find(&l, spot[i].name);
        ck_assert_msg(t != NULL, "%s missing", spot[i].name);
        ck_assert_msg(t->dtype == spot[i].dt && t->shape[0] == spot[i].r && t->shape[1] == spot[i].c,
                      "%s: %s [%lld, %lld]", t->name, refit_dtype_name(t->dtype), (long long)t->shape[0],
                      (long long)t->shape[1]);
    }
    const struct mla_t *b = tlist_find(&l, "model.layers.3.mlp.gate.e_score_correction_bias");
    ck_assert(b && b->dtype == REFIT_DTYPE_F32 && b->ndim == 1 && b->shape[0] == 256);
    ck_assert_ptr_null(tlist_find(&l, "model.layers.2.mlp.gate.weight")); /* dense */
    free(l.t);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Coverage: every HF tensor of the main model in exactly one trainer
 * tensor, and every engine parameter built from HF tensors that exist */

static size_t count_refs(const struct mla_cfg *c, const char *hf_name, bool engine, uint8_t target)
{
    size_t n = 0;
    int64_t nl = c->layers;
    for (size_t i = 0; i < (engine ? MLA_N_DST : MLA_N_MCORE); i++) {
        const char *const *part = engine ? mla_dst[i].part : mla_mcore[i].part;
        uint8_t scope = engine ? mla_dst[i].scope : mla_mcore[i].scope;
        uint8_t when = engine ? mla_dst[i].when : mla_mcore[i].when;
        if (!mla_when(c, when) || scope == M_MTP || (engine && !(mla_dst[i].targets & target)))
            continue;
        for (int p = 0; p < 2 && part[p]; p++)
            for (long l = 0; l < (scope == M_GLOBAL ? 1 : nl); l++) {
                if (scope != M_GLOBAL && !mla_scope_has(c, scope, l))
                    continue;
                bool stacked = scope == M_EXPERT || (engine && mla_dst[i].fuse == F_STACK);
                for (long e = 0; e < (stacked ? c->v[Y_E] : 1); e++) {
                    char name[192];
                    mla_name(name, sizeof(name), part[p], l, e);
                    n += !strcmp(name, hf_name);
                }
            }
    }
    return n;
}

static const struct mla_cfg *const cfgs[] = {&MLA_DS, &MLA_DS_NOQ, &MLA_KIMI, &MLA_GLM5};

START_TEST(test_tables_cover_hf)
{
    const struct mla_cfg *c = cfgs[_i];
    struct tlist hf = {0};
    mla_hf_each(c, false, false, tlist_add, &hf);
    for (size_t i = 0; i < hf.n; i++) {
        const char *n = hf.t[i].name;
        ck_assert_msg(count_refs(c, n, false, 0) == 1, "%s: %zu Megatron tensors hold it", n,
                      count_refs(c, n, false, 0));
        for (uint8_t tg = T_VLLM; tg <= T_SGLANG; tg <<= 1)
            ck_assert_msg(count_refs(c, n, true, tg) == 1, "%s: %zu %s parameters hold it", n,
                          count_refs(c, n, true, tg), tg == T_VLLM ? "vLLM" : "SGLang");
    }
    free(hf.t);
}
END_TEST

/* ------------------------------------------------------------------ */
/* vLLM's block-FP8 partition rule at real shapes */

/* The vLLM parameters of layer-kind rows that break the rule at tp (ep: whole
 * experts), as a space-separated list of their names without the prefix. */
static void fp8_refusals(const struct mla_cfg *c, int tp, bool ep, char *out, size_t n)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < MLA_N_DST; i++) {
        const struct mla_dst_row *d = &mla_dst[i];
        if (!(d->targets & T_VLLM) || !d->fp8 || !mla_when(c, d->when))
            continue;
        bool ok = true;
        const struct mla_hf_row *part[2] = {NULL, NULL};
        for (int p = 0; p < 2 && d->part[p]; p++)
            for (size_t h = 0; h < MLA_N_HF; h++)
                if (!strcmp(mla_hf[h].name, d->part[p]))
                    part[p] = &mla_hf[h];
        ck_assert_msg(part[0] != NULL, "%s: part not in the HF table", d->name);
        int64_t rows = mla_eval(c, part[0]->dim[0]), cols = mla_eval(c, part[0]->dim[1]);
        if (d->fuse == F_STACK)
            ok = mla_fp8_grid(d->tp == P_EXPERT_ROW ? cols / (ep ? 1 : tp) : rows / (ep ? 1 : tp));
        else if (d->tp == P_COL || d->tp == P_GATED)
            for (int p = 0; p < 2 && part[p]; p++)
                ok = ok && (tp == 1 || mla_fp8_grid(mla_eval(c, part[p]->dim[0]) / tp));
        else if (d->tp == P_ROW)
            ok = tp == 1 || mla_fp8_grid(cols / tp);
        else if (d->fuse == F_CAT) /* merged, not split: all parts but the last */
            ok = mla_fp8_grid(rows);
        if (!ok)
            o += (size_t)snprintf(out + o, n - o, "%s%s", o ? " " : "", d->name + strlen(HL));
    }
}

START_TEST(test_vllm_fp8_real)
{
    static const struct {
        const char *file;
        int tp;
        bool ep;
        const char *refused;
    } cases[] = {
        /* 128 heads / 16 = 8: q_b 1536, kv_b 2048, o_proj 1024 columns; I/16 1152, Im/16 128 */
        {"deepseek-v3.yaml", 8, false, ""},
        {"deepseek-v3.yaml", 16, false, ""},
        /* I/32 = 576 and Im/32 = 64 rows per rank; heads stay on the grid */
        {"deepseek-v3.yaml", 32, false,
         "mlp.gate_up_proj.weight mlp.down_proj.weight mlp.shared_experts.gate_up_proj.weight "
         "mlp.shared_experts.down_proj.weight mlp.experts.w13_weight mlp.experts.w2_weight"},
        {"deepseek-v3.yaml", 32, true,
         "mlp.gate_up_proj.weight mlp.down_proj.weight mlp.shared_experts.gate_up_proj.weight "
         "mlp.shared_experts.down_proj.weight"},
        /* Kimi-K2 at TP16: 4 heads per rank, q_b 768, kv_b 1024, o_proj 512 */
        {"kimi-k2.yaml", 8, false, ""},
        {"kimi-k2.yaml", 16, false, ""},
        /* GLM-5 at TP16: q_b 4*256, kv_b 4*448 = 1792, I/16 768, Im/16 128 */
        {"glm-5.yaml", 8, false, ""},
        {"glm-5.yaml", 16, false, ""},
        {"glm-5.yaml", 32, false,
         "mlp.shared_experts.gate_up_proj.weight mlp.shared_experts.down_proj.weight mlp.experts.w13_weight "
         "mlp.experts.w2_weight"},
    };
    struct ycfg y;
    struct mla_cfg c = cfg_from_yaml(cases[_i].file, &y);
    char got[1024];
    fp8_refusals(&c, cases[_i].tp, cases[_i].ep, got, sizeof(got));
    ck_assert_msg(!strcmp(got, cases[_i].refused), "%s tp %d: refused \"%s\", expected \"%s\"", cases[_i].file,
                  cases[_i].tp, got, cases[_i].refused);
}
END_TEST

/* ------------------------------------------------------------------ */
/* The expectation builders: every rank's slices put back together give the
 * checkpoint, byte for byte (so test_mla_convert.c compares refit against
 * builders that hold every byte once, in its place) */

struct olist {
    struct ent {
        char name[192];
        struct t_mat m;
    } *e;
    size_t n, cap;
};

static void olist_add(void *ctx, const char *name, struct t_mat m, int ndim, int64_t n_stack)
{
    (void)ndim, (void)n_stack;
    struct olist *l = ctx;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->e = realloc(l->e, l->cap * sizeof(*l->e));
        ck_assert_ptr_nonnull(l->e);
    }
    snprintf(l->e[l->n].name, sizeof(l->e[l->n].name), "%s", name);
    l->e[l->n++].m = m;
}

static struct t_mat olist_get(const struct olist *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->e[i].name, name))
            return t_mat_slice(l->e[i].m, 0, l->e[i].m.rows, 0, l->e[i].m.cols); /* a copy */
    ck_abort_msg("no tensor %s on the rank", name);
    return (struct t_mat){0};
}

static void olist_free(struct olist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->e[i].m.d);
    free(l->e);
}

/* b to the right of a; frees both. */
static struct t_mat cat_cols(struct t_mat a, struct t_mat b)
{
    if (!a.d)
        return b;
    ck_assert_int_eq(a.rows, b.rows);
    struct t_mat m = {a.rows, a.cols + b.cols, a.es, malloc((size_t)(a.rows * (a.cols + b.cols)) * a.es + 1)};
    for (int64_t r = 0; r < a.rows; r++) {
        memcpy(m.d + (size_t)(r * m.cols) * m.es, a.d + (size_t)(r * a.cols) * a.es, (size_t)a.cols * a.es);
        memcpy(m.d + (size_t)(r * m.cols + a.cols) * m.es, b.d + (size_t)(r * b.cols) * b.es, (size_t)b.cols * b.es);
    }
    free(a.d);
    free(b.d);
    return m;
}

/* The HF tensor `pat` (layer l, expert e) equals m; frees m. */
static void assert_hf(refit_st_checkpoint_t *ck, const char *pat, long l, long e, struct t_mat m, const char *via)
{
    struct t_mat h = mla_hf_mat(ck, pat, l, e);
    char name[192];
    mla_name(name, sizeof(name), pat, l, e);
    ck_assert_msg(h.rows * h.cols == m.rows * m.cols && h.es == m.es, "%s from %s: %lldx%lld, HF %lldx%lld", name,
                  via, (long long)m.rows, (long long)m.cols, (long long)h.rows, (long long)h.cols);
    ck_assert_msg(!memcmp(h.d, m.d, (size_t)(h.rows * h.cols) * h.es), "%s from %s: bytes differ", name, via);
    free(h.d);
    free(m.d);
}

/* Part p of a gated rank slice [gate_r; up_r] (or of [p0; p1] with the rows given). */
static struct t_mat part_of(struct t_mat m, int p, int64_t rows0)
{
    return p ? t_mat_rows_f(m, rows0, m.rows - rows0) : t_mat_rows_f(m, 0, rows0);
}

/* The ranks' slices of one tensor joined back by the TP rule. */
static struct t_mat join(struct t_mat *rk, int n, uint8_t rule, int p, int nparts, int64_t part0_rows)
{
    struct t_mat m = {0};
    for (int r = 0; r < n; r++) {
        struct t_mat x = rk[r];
        if (nparts == 2)
            x = part_of(x, p, rule == P_REPL ? part0_rows : x.rows / 2);
        if (rule == P_REPL && r) {
            ck_assert_msg(!memcmp(x.d, m.d, (size_t)(x.rows * x.cols) * x.es), "replica %d differs", r);
            free(x.d);
        } else if (rule == P_ROW || rule == P_EXPERT_ROW) {
            m = cat_cols(m, x);
        } else {
            m = t_mat_cat(m, x);
        }
    }
    return m;
}

static const struct {
    const struct mla_cfg *cfg;
    int tp, ep, vdiv;
} mcases[] = {{&MLA_DS, 2, 2, 128}, {&MLA_DS, 4, 4, 1280}, {&MLA_DS_NOQ, 2, 4, 128},
              {&MLA_KIMI, 4, 2, 128}, {&MLA_GLM5, 2, 2, 128}};
#define MLA_N_REASSEMBLE_M (sizeof(mcases) / sizeof(mcases[0]))

static void mcore_join_row(const struct mla_cfg *c, refit_st_checkpoint_t *ck, struct olist *rk, int tp, int ep,
                           const struct mla_mcore_row *r, long l)
{
    int np = r->part[1] ? 2 : 1;
    char name[192];
    if (r->scope == M_EXPERT) {
        long ne = (long)(c->v[Y_E] / ep);
        for (int er = 0; er < ep; er++)
            for (long x = 0; x < ne; x++) {
                mla_name(name, sizeof(name), r->name, l, x);
                for (int p = 0; p < np; p++) { /* expert-TP 1: whole experts */
                    struct t_mat m = olist_get(&rk[er], name);
                    if (np == 2)
                        m = part_of(m, p, m.rows / 2);
                    assert_hf(ck, r->part[p], l, er * ne + x, m, name);
                }
            }
        return;
    }
    mla_name(name, sizeof(name), r->name, l, 0);
    for (int p = 0; p < np; p++) {
        struct t_mat s[8];
        for (int tr = 0; tr < tp; tr++)
            s[tr] = olist_get(&rk[tr * ep], name);
        struct t_mat m = join(s, tp, r->tp, p, np, 0);
        if (r->tp == P_VOCAB) /* padding: zero rows, dropped */
            m = t_mat_rows_f(m, 0, c->v[Y_V]);
        assert_hf(ck, r->part[p], l, 0, m, name);
    }
}

START_TEST(test_mcore_reassemble)
{
    const struct mla_cfg *c = mcases[_i].cfg;
    int tp = mcases[_i].tp, ep = mcases[_i].ep;
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/ck", tmp);
    mla_write_ckpt(c, dir, 21, false);
    refit_st_checkpoint_t *ck;
    ck_assert_int_eq(refit_st_checkpoint_open(dir, &ck), 0);
    struct olist rk[32] = {{0}};
    for (int tr = 0; tr < tp; tr++)
        for (int er = 0; er < ep; er++) {
            struct mla_mrank k = {tp, tr, ep, er, mcases[_i].vdiv};
            mla_mcore_rank(c, ck, &k, olist_add, &rk[tr * ep + er]);
        }
    for (size_t i = 0; i < MLA_N_MCORE; i++) {
        const struct mla_mcore_row *r = &mla_mcore[i];
        if (!mla_when(c, r->when) || r->scope == M_MTP)
            continue;
        for (long l = 0; l < (r->scope == M_GLOBAL ? 1 : c->layers); l++)
            if (r->scope == M_GLOBAL || mla_scope_has(c, r->scope, l))
                mcore_join_row(c, ck, rk, tp, ep, r, l);
    }
    for (int i = 0; i < tp * ep; i++)
        olist_free(&rk[i]);
    refit_st_checkpoint_close(ck);
}
END_TEST

static const struct {
    const struct mla_cfg *cfg;
    uint8_t target;
    int tp, ep;
} dcases[] = {{&MLA_DS, T_VLLM, 2, 0},      {&MLA_DS, T_VLLM, 4, 4},   {&MLA_DS_NOQ, T_VLLM, 2, 0},
              {&MLA_KIMI, T_SGLANG, 4, 0},  {&MLA_GLM5, T_VLLM, 2, 2}, {&MLA_GLM5, T_SGLANG, 4, 0},
              {&MLA_DS, T_TF5, 1, 0}};
#define MLA_N_REASSEMBLE_D (sizeof(dcases) / sizeof(dcases[0]))

static void dst_join_stack(const struct mla_cfg *c, refit_st_checkpoint_t *ck, struct olist *rk, int tp, int ep,
                           const struct mla_dst_row *d, long l, const char *name)
{
    int np = d->part[1] ? 2 : 1;
    long ne = (long)(ep ? c->v[Y_E] / ep : c->v[Y_E]);
    for (long e = 0; e < c->v[Y_E]; e++)
        for (int p = 0; p < np; p++) {
            struct t_mat m = {0};
            for (int r = 0; r < (ep ? 1 : tp); r++) {
                int rank = ep ? (int)(e / ne) : r;
                long slot = ep ? e % ne : e;
                struct t_mat all = olist_get(&rk[rank], name);
                int64_t per = all.rows / ne;
                struct t_mat x = t_mat_rows_f(all, slot * per, per);
                if (np == 2)
                    x = part_of(x, p, x.rows / 2);
                m = d->tp == P_EXPERT_ROW ? cat_cols(m, x) : t_mat_cat(m, x);
            }
            assert_hf(ck, d->part[p], l, e, m, name);
        }
}

static void dst_join_row(const struct mla_cfg *c, refit_st_checkpoint_t *ck, struct olist *rk, int tp, int ep,
                         const struct mla_dst_row *d, long l)
{
    char name[192];
    mla_name(name, sizeof(name), d->name, l, 0);
    if (d->fuse == F_STACK) {
        dst_join_stack(c, ck, rk, tp, ep, d, l, name);
        return;
    }
    int np = d->part[1] ? 2 : 1;
    struct t_mat h0 = mla_hf_mat(ck, d->part[0], l, 0);
    for (int p = 0; p < np; p++) {
        struct t_mat s[8];
        for (int r = 0; r < tp; r++)
            s[r] = olist_get(&rk[r], name);
        struct t_mat m = join(s, tp, d->tp, p, np, h0.rows);
        if (d->tp == P_VOCAB)
            m = t_mat_rows_f(m, 0, c->v[Y_V]);
        assert_hf(ck, d->part[p], l, 0, m, name);
    }
    free(h0.d);
}

START_TEST(test_dst_reassemble)
{
    const struct mla_cfg *c = dcases[_i].cfg;
    int tp = dcases[_i].tp, ep = dcases[_i].ep;
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/ck", tmp);
    mla_write_ckpt(c, dir, 33, false);
    refit_st_checkpoint_t *ck;
    ck_assert_int_eq(refit_st_checkpoint_open(dir, &ck), 0);
    struct olist rk[8] = {{0}};
    for (int r = 0; r < tp; r++) {
        struct mla_irank k = {dcases[_i].target, tp, r, ep};
        mla_dst_rank(c, ck, &k, olist_add, &rk[r]);
    }
    size_t joined = 0;
    for (size_t i = 0; i < MLA_N_DST; i++) {
        const struct mla_dst_row *d = &mla_dst[i];
        if (!(d->targets & dcases[_i].target) || !mla_when(c, d->when))
            continue;
        for (long l = 0; l < (d->scope == M_GLOBAL ? 1 : c->layers); l++)
            if (d->scope == M_GLOBAL || mla_scope_has(c, d->scope, l)) {
                dst_join_row(c, ck, rk, tp, ep, d, l);
                joined++;
            }
    }
    ck_assert_uint_eq(joined, rk[0].n); /* nothing else on a rank */
    for (int r = 0; r < tp; r++)
        olist_free(&rk[r]);
    refit_st_checkpoint_close(ck);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model_mla_tables");
    TCase *tc = tcase_create("tables");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_synth_matches_table, 0, sizeof(synth_cases) / sizeof(synth_cases[0]));
    tcase_add_test(tc, test_real_glm5);
    tcase_add_test(tc, test_real_deepseek_fp8);
    tcase_add_loop_test(tc, test_tables_cover_hf, 0, sizeof(cfgs) / sizeof(cfgs[0]));
    tcase_add_loop_test(tc, test_vllm_fp8_real, 0, 9);
    tcase_add_loop_test(tc, test_mcore_reassemble, 0, MLA_N_REASSEMBLE_M);
    tcase_add_loop_test(tc, test_dst_reassemble, 0, MLA_N_REASSEMBLE_D);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? 1 : 0;
}
