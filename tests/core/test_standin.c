/* test_standin.c — the trainer stand-in's weight change: element-wise,
 * reversible, finite-preserving, different for every consecutive version. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "refit/fp8.h"
#include "refit/standin.h"
#include "refit/status.h"
#include "../check_run.h"

START_TEST(versions_differ_and_compose)
{
    enum { N = 4096 };
    uint16_t base[N], a[N], b[N];
    for (int i = 0; i < N; i++)
        base[i] = (uint16_t)(i * 2654435761u >> 16) & 0x7f7f; /* finite bf16 patterns */
    memcpy(a, base, sizeof(a));
    for (uint64_t v = 1; v < 20; v++) {
        memcpy(b, a, sizeof(b));
        ck_assert_int_eq(refit_standin_step(a, sizeof(a), REFIT_DTYPE_BF16, v, v + 1), 0);
        ck_assert(memcmp(a, b, sizeof(a)) != 0);
        /* Stepping 1 → v+1 directly gives the same bytes. */
        memcpy(b, base, sizeof(b));
        ck_assert_int_eq(refit_standin_step(b, sizeof(b), REFIT_DTYPE_BF16, 1, v + 1), 0);
        ck_assert(memcmp(a, b, sizeof(a)) == 0);
        for (int i = 0; i < N; i++)
            ck_assert(!isnan(refit_bf16_to_f32(a[i])) && !isinf(refit_bf16_to_f32(a[i])));
    }
    ck_assert_int_eq(refit_standin_step(a, sizeof(a), REFIT_DTYPE_BF16, 20, 1), 0);
    ck_assert(memcmp(a, base, sizeof(a)) == 0);
}
END_TEST

START_TEST(elementwise_commutes_with_slicing)
{
    float w[64], part[16];
    for (int i = 0; i < 64; i++)
        w[i] = (float)i * 0.37f - 3.0f;
    memcpy(part, w + 16, sizeof(part));
    ck_assert_int_eq(refit_standin_step(w, sizeof(w), REFIT_DTYPE_F32, 1, 5), 0);
    ck_assert_int_eq(refit_standin_step(part, sizeof(part), REFIT_DTYPE_F32, 1, 5), 0);
    ck_assert(memcmp(part, w + 16, sizeof(part)) == 0);
}
END_TEST

START_TEST(bad_arguments)
{
    uint8_t q[8] = {0};
    ck_assert_int_eq(refit_standin_step(q, 8, REFIT_DTYPE_F8_E4M3, 1, 2), REFIT_ENOTSUP);
    ck_assert_int_eq(refit_standin_step(q, 3, REFIT_DTYPE_BF16, 1, 2), REFIT_EINVAL);
    ck_assert_int_eq(refit_standin_step(q, 8, REFIT_DTYPE_BF16, 0, 2), REFIT_EINVAL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("standin");
    TCase *tc = tcase_create("standin");
    tcase_add_test(tc, versions_differ_and_compose);
    tcase_add_test(tc, elementwise_commutes_with_slicing);
    tcase_add_test(tc, bad_arguments);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
