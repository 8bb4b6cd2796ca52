/* mla_expect.h — what the tables of mla_tables.h say a layout holds: the HF
 * tensor list of a configuration (names, shapes, dtypes; FP8 scales), and
 * the bytes every Megatron trainer rank and every vLLM / SGLang inference
 * rank holds, built here from an HF checkpoint with the tables' TP rules
 * (never through refit's layout code).  Used by test_mla_tables.c (the
 * tables against the synthetic writers and upstream's published counts) and
 * test_mla_convert.c (refit's conversions against the tables). */
#ifndef REFIT_TEST_MODEL_MLA_EXPECT_H
#define REFIT_TEST_MODEL_MLA_EXPECT_H

#include "mla_tables.h"
#include "tutil.h"

/* One tensor of a layout. */
struct mla_t {
    char name[192];
    int ndim;
    int64_t shape[3];
    enum refit_dtype dtype;
};
typedef void (*mla_each_fn)(void *ctx, const struct mla_t *t);

/* Instances of a scope: layer list (main layers, then the MTP layers when
 * asked) and, for M_EXPERT, every expert. */
static inline bool mla_scope_has(const struct mla_cfg *c, uint8_t scope, int64_t l)
{
    switch (scope) {
    case M_LAYER:
        return true;
    case M_DENSE:
        return mla_is_dense(c, l);
    case M_MOE:
    case M_EXPERT:
        return !mla_is_dense(c, l);
    case M_MTP:
        return l >= c->layers;
    default:
        return false;
    }
}

static inline void mla_emit_hf(const struct mla_cfg *c, const struct mla_hf_row *r, long l, long e, bool fp8,
                               mla_each_fn fn, void *ctx)
{
    struct mla_t t = {.ndim = r->ndim, .dtype = r->dtype};
    mla_name(t.name, sizeof(t.name), r->name, l, e);
    for (int d = 0; d < r->ndim; d++)
        t.shape[d] = mla_eval(c, r->dim[d]);
    if (!(fp8 && r->fp8)) {
        fn(ctx, &t);
        return;
    }
    t.dtype = REFIT_DTYPE_F8_E4M3;
    fn(ctx, &t);
    struct mla_t s = {.ndim = 2, .dtype = REFIT_DTYPE_F32};
    snprintf(s.name, sizeof(s.name), "%s_scale_inv", t.name);
    s.shape[0] = (t.shape[0] + MLA_FP8_BLOCK - 1) / MLA_FP8_BLOCK;
    s.shape[1] = (t.shape[1] + MLA_FP8_BLOCK - 1) / MLA_FP8_BLOCK;
    fn(ctx, &s);
}

/* Every HF tensor of the configuration; with_mtp adds the MTP layers. */
static inline void mla_hf_each(const struct mla_cfg *c, bool with_mtp, bool fp8, mla_each_fn fn, void *ctx)
{
    int64_t nl = c->layers + (with_mtp ? c->mtp : 0);
    for (size_t i = 0; i < MLA_N_HF; i++) {
        const struct mla_hf_row *r = &mla_hf[i];
        if (!mla_when(c, r->when))
            continue;
        if (r->scope == M_GLOBAL) {
            mla_emit_hf(c, r, 0, 0, fp8, fn, ctx);
            continue;
        }
        for (long l = 0; l < nl; l++) {
            if (!mla_scope_has(c, r->scope, l))
                continue;
            long ne = r->scope == M_EXPERT ? (long)c->v[Y_E] : 1;
            for (long e = 0; e < ne; e++)
                mla_emit_hf(c, r, l, e, fp8, fn, ctx);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Rank slices */

static inline struct t_mat mla_hf_mat(refit_st_checkpoint_t *ck, const char *pat, long l, long e)
{
    char name[256];
    mla_name(name, sizeof(name), pat, l, e);
    const struct refit_st_tensor *t = refit_st_checkpoint_find(ck, name);
    ck_assert_msg(t != NULL, "checkpoint lacks %s", name);
    return t_mat_of(t);
}

/* Rows [r, r+1) * rows/tp; columns likewise. */
static inline struct t_mat mla_rows_of(struct t_mat m, int tp, int r)
{
    ck_assert_msg(m.rows % tp == 0, "%lld rows over tp %d", (long long)m.rows, tp);
    int64_t n = m.rows / tp;
    return t_mat_rows_f(m, r * n, n);
}

static inline struct t_mat mla_cols_of(struct t_mat m, int tp, int r)
{
    ck_assert_msg(m.cols % tp == 0, "%lld columns over tp %d", (long long)m.cols, tp);
    int64_t n = m.cols / tp;
    return t_mat_slice_f(m, 0, m.rows, r * n, n);
}

/* The vocabulary padded to a multiple of `mult` with zero rows, then rank r's rows. */
static inline struct t_mat mla_vocab_of(struct t_mat m, int64_t mult, int tp, int r)
{
    int64_t padded = (m.rows + mult - 1) / mult * mult;
    if (padded > m.rows)
        m = t_mat_pad(m, padded - m.rows);
    return mla_rows_of(m, tp, r);
}

/* One part sliced by a TP rule (GATED: the part is gate or up, sliced on rows). */
static inline struct t_mat mla_slice(struct t_mat m, uint8_t tp_rule, int tp, int r, int64_t vmult)
{
    switch (tp_rule) {
    case P_REPL:
        return m;
    case P_VOCAB:
        return mla_vocab_of(m, vmult, tp, r);
    case P_COL:
    case P_GATED:
    case P_EXPERT_GATED:
        return mla_rows_of(m, tp, r);
    case P_ROW:
    case P_EXPERT_ROW:
        return mla_cols_of(m, tp, r);
    default:
        ck_abort_msg("unknown TP rule %d", tp_rule);
        return m;
    }
}

typedef void (*mla_mat_fn)(void *ctx, const char *name, struct t_mat m, int ndim, int64_t n_stack);

/* ------------------------------------------------------------------ */
/* Megatron trainer rank: tp rank tr of tp, ep rank er of ep, expert-TP 1 */

struct mla_mrank {
    int tp, tr, ep, er;
    int64_t vocab_divisible; /* Megatron pads the vocabulary to this * tp */
};

static inline void mla_mcore_row(const struct mla_cfg *c, refit_st_checkpoint_t *ck, const struct mla_mrank *k,
                                 const struct mla_mcore_row *r, long l, mla_mat_fn fn, void *ctx)
{
    long ne = r->scope == M_EXPERT ? (long)(c->v[Y_E] / k->ep) : 1;
    for (long x = 0; x < ne; x++) {
        long e = r->scope == M_EXPERT ? k->er * ne + x : 0;
        /* expert-TP 1: every TP rank holds its experts whole */
        int tp = r->scope == M_EXPERT ? 1 : k->tp, tr = r->scope == M_EXPERT ? 0 : k->tr;
        struct t_mat m = {0};
        int ndim = 2;
        for (int p = 0; p < 2 && r->part[p]; p++) {
            char pn[192];
            mla_name(pn, sizeof(pn), r->part[p], l, e);
            const struct refit_st_tensor *t = refit_st_checkpoint_find(ck, pn);
            ck_assert_msg(t != NULL, "checkpoint lacks %s", pn);
            ndim = t->ndim;
            m = t_mat_cat(m, mla_slice(t_mat_of(t), r->tp, tp, tr, k->vocab_divisible * k->tp));
        }
        char name[192];
        mla_name(name, sizeof(name), r->name, l, x);
        fn(ctx, name, m, ndim, 0);
    }
}

/* Every tensor of a Megatron rank (main layers; the MTP module is left out,
 * as refit leaves it out until asked). */
static inline void mla_mcore_rank(const struct mla_cfg *c, refit_st_checkpoint_t *ck, const struct mla_mrank *k,
                                  mla_mat_fn fn, void *ctx)
{
    for (size_t i = 0; i < MLA_N_MCORE; i++) {
        const struct mla_mcore_row *r = &mla_mcore[i];
        if (!mla_when(c, r->when) || r->scope == M_MTP)
            continue;
        if (r->scope == M_GLOBAL) {
            mla_mcore_row(c, ck, k, r, 0, fn, ctx);
            continue;
        }
        for (long l = 0; l < c->layers; l++)
            if (mla_scope_has(c, r->scope, l))
                mla_mcore_row(c, ck, k, r, l, fn, ctx);
    }
}

/* ------------------------------------------------------------------ */
/* Inference rank r of tp (vLLM / SGLang): ep 0 = experts sliced over tp,
 * ep = tp: whole experts [r * E/ep, (r+1) * E/ep) per rank. */

struct mla_irank {
    uint8_t target; /* T_VLLM, T_SGLANG or T_TF5 */
    int tp, r, ep;
};

static inline void mla_dst_stack(const struct mla_cfg *c, refit_st_checkpoint_t *ck, const struct mla_irank *k,
                                 const struct mla_dst_row *d, long l, mla_mat_fn fn, void *ctx)
{
    int64_t ne = k->ep ? c->v[Y_E] / k->ep : c->v[Y_E];
    int tp = k->ep ? 1 : k->tp, r = k->ep ? 0 : k->r;
    struct t_mat m = {0};
    for (int64_t s = 0; s < ne; s++) {
        long e = (long)(k->ep ? k->r * ne + s : s);
        for (int p = 0; p < 2 && d->part[p]; p++)
            m = t_mat_cat(m, mla_slice(mla_hf_mat(ck, d->part[p], l, e), d->tp, tp, r, 1));
    }
    char name[192];
    mla_name(name, sizeof(name), d->name, l, 0);
    fn(ctx, name, m, 3, ne);
}

static inline void mla_dst_one(const struct mla_cfg *c, refit_st_checkpoint_t *ck, const struct mla_irank *k,
                               const struct mla_dst_row *d, long l, mla_mat_fn fn, void *ctx)
{
    if (d->fuse == F_STACK) {
        mla_dst_stack(c, ck, k, d, l, fn, ctx);
        return;
    }
    struct t_mat m = {0};
    int ndim = 2;
    for (int p = 0; p < 2 && d->part[p]; p++) {
        char pn[192];
        mla_name(pn, sizeof(pn), d->part[p], l, 0);
        const struct refit_st_tensor *t = refit_st_checkpoint_find(ck, pn);
        ck_assert_msg(t != NULL, "checkpoint lacks %s", pn);
        ndim = t->ndim;
        /* vLLM pads the vocabulary to a multiple of 64 (DEFAULT_VOCAB_PADDING_SIZE) */
        m = t_mat_cat(m, mla_slice(t_mat_of(t), d->tp, k->tp, k->r, 64));
    }
    char name[192];
    mla_name(name, sizeof(name), d->name, l, 0);
    fn(ctx, name, m, ndim, 0);
}

/* Every destination tensor of an inference rank (main layers only: the
 * engines load the MTP module as a separate draft model). */
static inline void mla_dst_rank(const struct mla_cfg *c, refit_st_checkpoint_t *ck, const struct mla_irank *k,
                                mla_mat_fn fn, void *ctx)
{
    for (size_t i = 0; i < MLA_N_DST; i++) {
        const struct mla_dst_row *d = &mla_dst[i];
        if (!(d->targets & k->target) || !mla_when(c, d->when))
            continue;
        if (d->scope == M_GLOBAL) {
            mla_dst_one(c, ck, k, d, 0, fn, ctx);
            continue;
        }
        for (long l = 0; l < c->layers; l++)
            if (mla_scope_has(c, d->scope, l))
                mla_dst_one(c, ck, k, d, l, fn, ctx);
    }
}

/* ------------------------------------------------------------------ */
/* FP8 reference arithmetic, written from DeepSeek's definitions: e4m3fn
 * (bias 7, no infinities, 0x7f/0xff NaN) decoded exactly; bf16 rounding to
 * nearest even from float32 (what Triton's store and torch's .to(bf16) do). */

static inline float mla_e4m3_value(uint8_t b)
{
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    float v = e ? ldexpf(1.0f + (float)m / 8.0f, e - 7) : ldexpf((float)m / 8.0f, -6);
    return s ? -v : v;
}

static inline uint16_t mla_bf16_rne(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* [rows, cols] e4m3 with its [ceil(rows/128), ceil(cols/128)] multipliers ->
 * bf16, as weight_dequant does it: fp32 product, then one rounding. */
static inline void mla_dequant(const uint8_t *q, const float *s, int64_t rows, int64_t cols, uint16_t *out)
{
    int64_t bc = (cols + MLA_FP8_BLOCK - 1) / MLA_FP8_BLOCK;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            float m = s[(i / MLA_FP8_BLOCK) * bc + j / MLA_FP8_BLOCK];
            out[i * cols + j] = mla_bf16_rne(mla_e4m3_value(q[i * cols + j]) * m);
        }
}

#endif
