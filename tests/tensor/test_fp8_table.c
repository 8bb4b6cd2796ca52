/* test_fp8_table.c — refit's e4m3 cast against PyTorch's, entry by entry:
 * ../shared/fixtures/e4m3_cast_table.safetensors holds every finite bf16
 * value and torch's float8_e4m3fn cast of it.  Skipped (77) without the
 * fixture. */
#include <check.h>
#include <math.h>

#include "refit/fp8.h"
#include "refit/safetensors.h"
#include "refit/status.h"
#include "tensor_test.h"
#include "../check_run.h"

static char *table_path;

static void load(refit_st_file_t **f, uint16_t **x, uint8_t **y, size_t *n)
{
    ck_assert_msg(refit_st_open(table_path, f) == 0, "%s", refit_error_message());
    const struct refit_st_tensor *a = refit_st_find(*f, "bf16"), *b = refit_st_find(*f, "e4m3");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(a->dtype, REFIT_DTYPE_BF16);
    ck_assert_int_eq(b->dtype, REFIT_DTYPE_F8_E4M3);
    ck_assert_int_eq(a->ndim, 1);
    ck_assert_int_eq(a->shape[0], b->shape[0]);
    *n = (size_t)a->shape[0];
    ck_assert_uint_eq(*n, 65280);
    *x = malloc(*n * 2);
    *y = malloc(*n);
    memcpy(*x, a->data, *n * 2); /* the mapping need not be 2-byte aligned */
    memcpy(*y, b->data, *n);
}

START_TEST(scalar_cast_matches_every_entry)
{
    refit_st_file_t *f;
    uint16_t *x;
    uint8_t *y;
    size_t n, bad = 0, first = 0;
    load(&f, &x, &y, &n);
    for (size_t i = 0; i < n; i++)
        if (refit_f32_to_e4m3(refit_bf16_to_f32(x[i])) != y[i] && !bad++)
            first = i;
    ck_assert_msg(bad == 0, "%zu of %zu entries differ, first bf16 0x%04x: 0x%02x, torch 0x%02x",
                  bad, n, x[first], refit_f32_to_e4m3(refit_bf16_to_f32(x[first])), y[first]);
    free(x);
    free(y);
    refit_st_close(f);
}
END_TEST

/* The vector paths' cast, through the quantizer: a block whose amax is 448
 * has s = 1 under the deepgemm rule (448 / 448, 1 / 1), so q = e4m3(x). */
START_TEST(vector_cast_matches_entries_within_448)
{
    refit_st_file_t *f;
    uint16_t *x;
    uint8_t *y;
    size_t n;
    load(&f, &x, &y, &n);
    size_t cols = 128, rows = 0, cap = n / 127 + 2;
    uint16_t *m = calloc(cap * cols, 2);
    uint8_t *want = calloc(cap * cols, 1), *got = calloc(cap * cols, 1);
    size_t *idx = calloc(cap * cols, sizeof(size_t));
    size_t k = 1;
    for (size_t i = 0; i < n; i++) {
        if (fabsf(refit_bf16_to_f32(x[i])) > 448.0f)
            continue;
        if (k == 1) { /* a 448 sentinel opens each row */
            m[rows * cols] = 0x43e0;
            want[rows * cols] = 0x7e;
        }
        m[rows * cols + k] = x[i];
        want[rows * cols + k] = y[i];
        idx[rows * cols + k] = i;
        if (++k == cols) {
            k = 1;
            rows++;
        }
    }
    if (k > 1) {
        for (; k < cols; k++)
            m[rows * cols + k] = 0; /* pad the last row with zeros: e4m3 0 */
        rows++;
    }
    float *sc = malloc(((rows + 127) / 128) * sizeof(float));
    const enum refit_fp8_impl impls[] = {REFIT_FP8_IMPL_SCALAR, REFIT_FP8_IMPL_AVX2,
                                         REFIT_FP8_IMPL_AVX512};
    for (size_t j = 0; j < 3; j++) {
        if (!refit_fp8_impl_available(impls[j]))
            continue;
        struct refit_fp8_params p = {REFIT_FP8_DEEPGEMM, -1, impls[j]};
        ck_assert_int_eq(refit_fp8_quantize_bf16(m, rows, cols, cols, got, sc, &p), 0);
        for (size_t i = 0; i < rows * cols; i++)
            if (got[i] != want[i])
                ck_abort_msg("%s: bf16 0x%04x (entry %zu): 0x%02x, torch 0x%02x",
                             refit_fp8_impl_name(impls[j]), m[i], idx[i], got[i], want[i]);
    }
    free(sc);
    free(m);
    free(want);
    free(got);
    free(idx);
    free(x);
    free(y);
    refit_st_close(f);
}
END_TEST

int main(void)
{
    table_path = tt_fixture("e4m3_cast_table.safetensors");
    if (!table_path) {
        fprintf(stderr, "fixture e4m3_cast_table.safetensors absent: skipped\n");
        return 77;
    }
    Suite *s = suite_create("fp8-cast-table");
    TCase *tc = tcase_create("table");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, scalar_cast_matches_every_entry);
    tcase_add_test(tc, vector_cast_matches_entries_within_448);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    free(table_path);
    return failed ? 1 : 0;
}
