/* test_sources.c — trainer source layouts beyond Megatron PP 1: Megatron
 * with pipeline parallelism (2 and 3 stages, with TP and EP, virtual
 * stages, uneven splits, tied embeddings) and FSDP (dim-0 chunks, uneven,
 * empty trailing ranks), each read back by `refit convert --shards` into
 * every target.
 *
 * The expectations are Megatron-Core's and PyTorch's definitions, written
 * here: stage s of P holds layers [s·L/P, (s+1)·L/P) renumbered from 0
 * (TransformerBlock._get_layer_offset / get_transformer_layer_offset), the
 * embedding on the first stage (pre_process), the final norm and output
 * layer on the last (post_process), with tied embeddings a copy of the
 * embedding as output_layer.weight on a last stage that is not the first
 * (LanguageModule.setup_embeddings_and_output_layer); virtual stage v of
 * rank p is chunk v·P + p; torch.chunk(n, N) gives chunks of ceil(n/N) rows,
 * the last smaller.  Shard contents are checked against the PP-1 shards
 * (tested against conversion.md in test_synth) renumbered by those rules,
 * and FSDP shards against the HF tensors directly. */
#include "synth.h"
#include "tfix.h"
#include "../check_run.h"

static void ck_synth(struct ck *k, const struct dims *d, const char *name)
{
    snprintf(k->dir, sizeof(k->dir), "%s/%s", tmp, name);
    struct t_ckpt c;
    t_ckpt_begin(&c, 3);
    write_ckpt(d, k->dir, &c);
    ck_open_dir(k, NULL);
}

/* The shared fixture (tied embeddings); 0 when absent. */
static int ck_fixture(struct ck *k)
{
    char *fx = t_fixture_or_null("qwen3-tiny");
    if (!fx)
        return 0;
    snprintf(k->dir, sizeof(k->dir), "%s", fx);
    free(fx);
    ck_open_dir(k, NULL);
    return 1;
}

static void shard(struct ck *k, const struct refit_shard_opts *so, char *dir, const char *name)
{
    snprintf(dir, 4096, "%s/%s", tmp, name);
    ck_assert_msg(refit_shard_write_ex(k->m, k->v, so, NULL, dir) == 0, "%s", refit_error_message());
}

/* `target` rank r of tp from the view into path. */
static void convert(struct ck *k, const refit_hf_view_t *v, const char *target, int tp, int r, int ep,
                    const char *path)
{
    struct refit_convert_opts o = {.target_name = target, .tp = tp, .rank = r, .ep = ep};
    ck_assert_msg(refit_convert_write(k->m, v, &o, path) == 0, "%s", refit_error_message());
}

/* Shards -> HF is the checkpoint's bytes, and shards -> vLLM (and every
 * other target the plugin offers) equals HF -> that target. */
static void check_roundtrip(struct ck *k, const char *sh, int vtp, int vep)
{
    refit_hf_view_t *mv;
    ck_assert_msg(refit_hf_view_open_shards(k->m, sh, NULL, &mv) == 0, "%s", refit_error_message());
    char a[4200], b[4200];
    snprintf(a, sizeof(a), "%s/back.safetensors", tmp);
    convert(k, mv, "hf", 1, 0, 0, a);
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(a, &f), 0);
    for (size_t i = 0; i < refit_st_checkpoint_count(k->st); i++) {
        const struct refit_st_tensor *t = refit_st_checkpoint_at(k->st, i);
        if (strstr(t->name, "model.layers.2.") && refit_model_shape(k->m)->n_mtp_layers)
            continue; /* GLM's MTP layer is not converted */
        t_assert_bytes(refit_st_find(f, t->name), t->data, t->nbytes, t->name);
    }
    refit_st_close(f);
    const struct refit_model_spec *sp = refit_model_spec(k->m);
    for (size_t t = 0; t < sp->n_targets; t++)
        for (int r = 0; r < vtp; r++) {
            snprintf(a, sizeof(a), "%s/from_hf.safetensors", tmp);
            snprintf(b, sizeof(b), "%s/from_shards.safetensors", tmp);
            convert(k, k->v, sp->targets[t].name, vtp, r, vep, a);
            convert(k, mv, sp->targets[t].name, vtp, r, vep, b);
            t_assert_same_files(a, b);
        }
    refit_hf_view_close(mv);
}

/* "decoder.layers.<n>.rest" with n shifted by `by`; other names as they are. */
static void renumber(const char *name, long by, char *out, size_t n)
{
    const char *p = strstr(name, "decoder.layers.");
    if (!p) {
        snprintf(out, n, "%s", name);
        return;
    }
    char *end;
    long l = strtol(p + 15, &end, 10);
    snprintf(out, n, "%.*sdecoder.layers.%ld%s", (int)(p - name), name, l + by, end);
}

/* Every tensor of pipeline rank `pr` (of pp, chunk layers `chunk`, vp 1 or
 * more) is the PP-1 rank's tensor of its global layer, and together the
 * stages hold exactly the PP-1 rank's tensors (plus the tied copy). */
static void check_stages(const char *sh, const char *sh1, int pp, int vp, const int *chunk, int stage_ranks,
                         bool tied)
{
    for (int q = 0; q < stage_ranks; q++) {
        char p1[4200];
        snprintf(p1, sizeof(p1), "%s/rank%d.safetensors", sh1, q);
        refit_st_file_t *ref;
        ck_assert_int_eq(refit_st_open(p1, &ref), 0);
        size_t seen = 0;
        for (int pr = 0; pr < pp; pr++) {
            char pq[4200];
            snprintf(pq, sizeof(pq), "%s/rank%d.safetensors", sh, pr * stage_ranks + q);
            refit_st_file_t *f;
            ck_assert_int_eq(refit_st_open(pq, &f), 0);
            for (size_t i = 0; i < refit_st_count(f); i++) {
                const struct refit_st_tensor *t = refit_st_at(f, i);
                const char *name = t->name;
                int v = 0;
                if (vp > 1) {
                    ck_assert_msg(sscanf(name, "model%d.", &v) == 1, "%s: no chunk prefix", name);
                    name = strchr(name, '.') + 1;
                }
                int c = v * pp + pr; /* Megatron's chunk of virtual stage v on rank pr */
                long off = 0;
                for (int j = 0; j < c; j++)
                    off += chunk[j];
                char g[512];
                renumber(name, off, g, sizeof(g));
                if (tied && !strcmp(g, "output_layer.weight")) {
                    ck_assert_msg(pr == pp - 1 && v == vp - 1, "%s: tied copy off the last stage", pq);
                    g[0] = 0;
                    snprintf(g, sizeof(g), "embedding.word_embeddings.weight");
                    seen--; /* a copy, not one of the PP-1 tensors */
                }
                if (!strcmp(g, "embedding.word_embeddings.weight") && !tied)
                    ck_assert_msg(pr == 0 && v == 0, "%s: embedding off the first stage", pq);
                if (!strcmp(g, "decoder.final_layernorm.weight") || (!tied && !strcmp(g, "output_layer.weight")))
                    ck_assert_msg(pr == pp - 1 && v == vp - 1, "%s: %s off the last stage", pq, g);
                const struct refit_st_tensor *want = refit_st_find(ref, g);
                ck_assert_msg(want != NULL, "%s: %s (global %s) is not a PP-1 tensor", pq, t->name, g);
                t_assert_bytes(t, want->data, want->nbytes, t->name);
                seen++;
            }
            refit_st_close(f);
        }
        ck_assert_uint_eq(seen, refit_st_count(ref));
        refit_st_close(ref);
    }
}

/* PP 2 and 3 with TP and EP on the synthetic MoE and GLM checkpoints. */
START_TEST(test_pp)
{
    static const struct {
        int glm, tp, ep, pp, vp;
        int chunk[4]; /* layers per chunk */
        int vtp, vep;
    } cases[] = {
        {0, 2, 2, 3, 1, {1, 1, 1}, 2, 0},     /* Qwen3-MoE, L 3 */
        {0, 2, 4, 2, 1, {2, 1}, 4, 4},        /* uneven, given */
        {1, 2, 2, 2, 1, {1, 1}, 2, 2},        /* GLM, L 2 */
        {0, 1, 2, 1, 3, {1, 1, 1}, 1, 0},     /* virtual stages on one rank */
    };
    const struct dims *d = cases[_i].glm ? &GL : &QM;
    struct ck k;
    ck_synth(&k, d, "ck");
    char sh[4096], sh1[4096];
    struct refit_shard_opts so = {.tp = cases[_i].tp, .ep = cases[_i].ep, .pp = cases[_i].pp, .vp = cases[_i].vp,
                                  .chunk_layers = cases[_i].chunk};
    shard(&k, &so, sh, "pp");
    struct refit_shard_opts one = {.tp = cases[_i].tp, .ep = cases[_i].ep};
    shard(&k, &one, sh1, "pp1");
    int stage = cases[_i].tp > cases[_i].ep ? cases[_i].tp : cases[_i].ep;
    check_stages(sh, sh1, cases[_i].pp, cases[_i].vp, cases[_i].chunk, stage, false);
    check_roundtrip(&k, sh, cases[_i].vtp, cases[_i].vep);
    ck_close(&k);
}
END_TEST

/* L not divisible by P without a split: an error that says so. */
START_TEST(test_pp_uneven_refused)
{
    struct ck k;
    ck_synth(&k, &QM, "ck");
    char sh[4096];
    snprintf(sh, sizeof(sh), "%s/bad", tmp);
    struct refit_shard_opts so = {.tp = 1, .ep = 1, .pp = 2};
    ck_assert_int_eq(refit_shard_write_ex(k.m, k.v, &so, NULL, sh), REFIT_EINVAL);
    ck_assert_msg(strstr(refit_error_message(), "not divisible") && strstr(refit_error_message(), "split"), "%s",
                  refit_error_message());
    int wrong[2] = {1, 1};
    so.chunk_layers = wrong;
    ck_assert_int_eq(refit_shard_write_ex(k.m, k.v, &so, NULL, sh), REFIT_EINVAL);
    ck_close(&k);
}
END_TEST

/* Tied embeddings (the fixture): the last stage's output_layer.weight is
 * the embedding's copy; one copy is taken. */
START_TEST(test_pp_tied)
{
    struct ck k;
    if (!ck_fixture(&k))
        return;
    ck_assert(refit_model_shape(k.m)->tie_word_embeddings);
    char sh[4096], sh1[4096];
    int chunk[2] = {1, 1};
    struct refit_shard_opts so = {.tp = 2, .ep = 1, .pp = 2, .chunk_layers = chunk};
    shard(&k, &so, sh, "tied");
    struct refit_shard_opts one = {.tp = 2, .ep = 1};
    shard(&k, &one, sh1, "tied1");
    check_stages(sh, sh1, 2, 1, chunk, 2, true);
    for (int q = 0; q < 2; q++) {
        char a[4200], b[4200];
        snprintf(a, sizeof(a), "%s/rank%d.safetensors", sh, q);
        snprintf(b, sizeof(b), "%s/rank%d.safetensors", sh, 2 + q);
        refit_st_file_t *fa, *fb;
        ck_assert_int_eq(refit_st_open(a, &fa), 0);
        ck_assert_int_eq(refit_st_open(b, &fb), 0);
        const struct refit_st_tensor *e = refit_st_find(fa, "embedding.word_embeddings.weight");
        ck_assert_ptr_nonnull(e);
        t_assert_bytes(refit_st_find(fb, "output_layer.weight"), e->data, e->nbytes, "tied copy");
        refit_st_close(fa);
        refit_st_close(fb);
    }
    check_roundtrip(&k, sh, 2, 0);
    ck_close(&k);
}
END_TEST

/* FSDP N: rank r holds rows [r·c, min(n, (r+1)·c)) of every HF tensor, c =
 * ceil(n / N) (torch.chunk); ranks past the end hold [0, cols]. */
START_TEST(test_fsdp)
{
    static const int ns[] = {3, 7};
    const struct dims *d = _i ? &GL : &QM;
    struct ck k;
    ck_synth(&k, d, "ck");
    int N = ns[_i];
    char sh[4096];
    struct refit_shard_opts so = {.fsdp = N};
    shard(&k, &so, sh, "fsdp");
    size_t empty = 0;
    for (int r = 0; r < N; r++) {
        char p[4200];
        snprintf(p, sizeof(p), "%s/rank%d.safetensors", sh, r);
        refit_st_file_t *f;
        ck_assert_int_eq(refit_st_open(p, &f), 0);
        size_t n = 0;
        for (size_t i = 0; i < refit_st_checkpoint_count(k.st); i++) {
            const struct refit_st_tensor *h = refit_st_checkpoint_at(k.st, i);
            if (d->glm && strstr(h->name, "model.layers.2."))
                continue; /* the MTP layer */
            const struct refit_st_tensor *t = refit_st_find(f, h->name);
            ck_assert_msg(t != NULL, "rank %d: %s missing", r, h->name);
            int64_t rows = h->shape[0], c = (rows + N - 1) / N, a = r * c, b = a + c;
            a = a < rows ? a : rows;
            b = b < rows ? b : rows;
            size_t row = h->nbytes / (size_t)rows;
            ck_assert_int_eq(t->ndim, h->ndim);
            ck_assert_int_eq(t->shape[0], b - a);
            ck_assert_int_eq(t->dtype, h->dtype);
            t_assert_bytes(t, (const char *)h->data + (size_t)a * row, (size_t)(b - a) * row, h->name);
            empty += b == a;
            n++;
        }
        ck_assert_uint_eq(refit_st_count(f), n);
        refit_st_close(f);
    }
    if (N == 7)
        ck_assert_uint_gt(empty, 0); /* the E=4-row router: ranks 4..6 empty */
    check_roundtrip(&k, sh, 2, 0);
    ck_close(&k);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sources");
    TCase *tc = tcase_create("sources");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, t_setup, t_teardown);
    tcase_add_loop_test(tc, test_pp, 0, 4);
    tcase_add_test(tc, test_pp_uneven_refused);
    tcase_add_test(tc, test_pp_tied);
    tcase_add_loop_test(tc, test_fsdp, 0, 2);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
