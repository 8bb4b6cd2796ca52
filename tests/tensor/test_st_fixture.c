/* test_st_fixture.c — the real Hugging Face checkpoint in
 * ../shared/fixtures/qwen3-tiny (written by PyTorch's safetensors): refit
 * reads it, and writing it back gives the same bytes, so files refit writes
 * are what PyTorch's reader expects.  Skipped (77) without the fixture. */
#include <check.h>

#include "refit/safetensors.h"
#include "refit/status.h"
#include "tensor_test.h"
#include "../check_run.h"

static char *fixture_dir, *fixture_file;

static int64_t expect_rows(const char *name)
{
    /* hidden 256, 8 heads x 64, 4 KV heads x 64, intermediate 512, vocab 512 */
    static const struct {
        const char *suffix;
        int64_t r, c;
    } w[] = {{"embed_tokens.weight", 512, 256}, {"q_proj.weight", 512, 256},
             {"k_proj.weight", 256, 256},       {"v_proj.weight", 256, 256},
             {"o_proj.weight", 256, 512},       {"gate_proj.weight", 512, 256},
             {"up_proj.weight", 512, 256},      {"down_proj.weight", 256, 512},
             {"q_norm.weight", 64, -1},         {"k_norm.weight", 64, -1},
             {"layernorm.weight", 256, -1},     {"model.norm.weight", 256, -1}};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
        size_t k = strlen(w[i].suffix);
        if (n >= k && !strcmp(name + n - k, w[i].suffix))
            return w[i].r * 1000 + (w[i].c < 0 ? 999 : w[i].c);
    }
    return -1;
}

START_TEST(reads_qwen3_tiny)
{
    refit_st_file_t *f;
    ck_assert_msg(refit_st_open(fixture_file, &f) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(refit_st_count(f), 24);
    ck_assert_str_eq(refit_st_metadata(f, "format"), "pt");
    size_t total = 0;
    for (size_t i = 0; i < refit_st_count(f); i++) {
        const struct refit_st_tensor *t = refit_st_at(f, i);
        ck_assert_int_eq(t->dtype, REFIT_DTYPE_BF16);
        int64_t want = expect_rows(t->name);
        ck_assert_msg(want >= 0, "unexpected tensor %s", t->name);
        int64_t got = t->shape[0] * 1000 + (t->ndim == 2 ? t->shape[1] : 999);
        ck_assert_msg(got == want && t->ndim == (want % 1000 == 999 ? 1 : 2),
                      "%s: shape [%lld, %lld] ndim %d", t->name, (long long)t->shape[0],
                      (long long)(t->ndim > 1 ? t->shape[1] : 0), t->ndim);
        ck_assert_ptr_eq(refit_st_find(f, t->name), t);
        if (i)
            ck_assert(t->data >= refit_st_at(f, i - 1)->data);
        total += t->nbytes;
    }
    ck_assert_ptr_nonnull(refit_st_find(f, "model.layers.1.self_attn.q_norm.weight"));
    ck_assert_ptr_null(refit_st_find(f, "lm_head.weight")); /* tied embeddings */
    size_t len;
    char *raw = tt_read_file(fixture_file, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | (unsigned char)raw[i];
    ck_assert_uint_eq(8 + n + total, len); /* the tensors tile the data area */
    free(raw);
    refit_st_close(f);

    refit_st_checkpoint_t *c;
    ck_assert_msg(refit_st_checkpoint_open(fixture_dir, &c) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(refit_st_checkpoint_count(c), 24);
    ck_assert_str_eq(refit_st_checkpoint_at(c, 0)->name, "model.embed_tokens.weight");
    refit_st_checkpoint_close(c);
}
END_TEST

START_TEST(write_back_is_byte_identical)
{
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(fixture_file, &f), 0);
    refit_st_writer_t *w;
    ck_assert_int_eq(refit_st_writer_create(&w), 0);
    ck_assert_int_eq(refit_st_writer_set_metadata(w, "format", "pt"), 0);
    for (size_t i = 0; i < refit_st_count(f); i++) {
        const struct refit_st_tensor *t = refit_st_at(f, i);
        ck_assert_int_eq(refit_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data,
                                             t->nbytes), 0);
    }
    char *tmp = tt_tmpdir(), *out = NULL;
    ck_assert_int_ge(asprintf(&out, "%s/model.safetensors", tmp), 0);
    ck_assert_msg(refit_st_writer_write(w, out) == 0, "%s", refit_error_message());
    refit_st_writer_destroy(w);
    refit_st_close(f);
    size_t la, lb;
    char *a = tt_read_file(fixture_file, &la), *b = tt_read_file(out, &lb);
    ck_assert(a && b && la > 8 && lb > 8);
    uint64_t na = 0, nb = 0;
    for (int i = 7; i >= 0; i--) {
        na = na << 8 | (unsigned char)a[i];
        nb = nb << 8 | (unsigned char)b[i];
    }
    /* the data byte for byte, and (same tensor order, same metadata, the
     * reference's compact JSON and padding) the header too */
    ck_assert_uint_eq(la - 8 - na, lb - 8 - nb);
    ck_assert_int_eq(memcmp(a + 8 + na, b + 8 + nb, la - 8 - na), 0);
    ck_assert_uint_eq(na, nb);
    ck_assert_msg(memcmp(a, b, la) == 0, "header differs:\n%.*s\n%.*s", (int)na, a + 8, (int)nb,
                  b + 8);
    free(a);
    free(b);
    free(out);
    tt_rmdir(tmp);
}
END_TEST

int main(void)
{
    fixture_dir = tt_fixture("qwen3-tiny");
    fixture_file = tt_fixture("qwen3-tiny/model.safetensors");
    if (!fixture_dir || !fixture_file) {
        fprintf(stderr, "fixture qwen3-tiny absent: skipped\n");
        return 77;
    }
    Suite *s = suite_create("safetensors-fixture");
    TCase *tc = tcase_create("qwen3-tiny");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, reads_qwen3_tiny);
    tcase_add_test(tc, write_back_is_byte_identical);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    free(fixture_dir);
    free(fixture_file);
    return failed ? 1 : 0;
}
