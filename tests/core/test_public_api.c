/* test_public_api.c — a program of an outside user: only the installed
 * headers (core/include/refit/) on its include path, linked against
 * librefit.so alone.  It builds only if the public headers stand on their
 * own, and runs only if librefit exports what they declare; the calls touch
 * each public header's functions that need no plugin. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "refit/config.h"
#include "refit/dtype.h"
#include "refit/log.h"
#include "refit/model.h"
#include "refit/plugin.h"
#include "refit/refit.h"
#include "refit/standin.h"
#include "refit/status.h"
#include "refit/store.h"
#include "refit/transport.h"
#include "../check_run.h"

START_TEST(status_and_error_context)
{
    refit_error_clear();
    ck_assert_int_eq(refit_error_set(REFIT_EINVAL, "key '%s'", "k"), REFIT_EINVAL);
    ck_assert_int_eq(refit_error_push(REFIT_EINVAL, "outer"), REFIT_EINVAL);
    ck_assert_str_eq(refit_error_message(), "outer: key 'k'");
    ck_assert_int_eq(refit_error_status(), REFIT_EINVAL);
    refit_error_clear();
    ck_assert_str_ne(refit_strerror(REFIT_ENOENT), "unknown status");
}
END_TEST

START_TEST(dtypes)
{
    enum refit_dtype t;
    ck_assert_int_eq(refit_dtype_parse("bf16", &t), 0);
    ck_assert_uint_eq(refit_dtype_size(t), 2);
    ck_assert_ptr_nonnull(refit_dtype_name(t));
}
END_TEST

START_TEST(configuration)
{
    refit_config_t *cfg = NULL;
    ck_assert_int_eq(refit_config_create(&cfg), 0);
    static const char yaml[] = "store:\n  plugin: file\n";
    ck_assert_int_eq(refit_config_load_string(cfg, "inline", yaml, strlen(yaml)), 0);
    const char *v = NULL;
    ck_assert_int_eq(refit_config_str(cfg, "store.plugin", &v), 0);
    ck_assert_str_eq(v, "file");
    ck_assert(refit_config_has(cfg, "store.plugin"));
    refit_config_destroy(cfg);
}
END_TEST

START_TEST(log_levels)
{
    ck_assert_int_eq(refit_log_parse_level("info"), REFIT_LOG_INFO);
    ck_assert_int_eq(refit_log_parse_level("nonsense"), -1);
    int old = refit_log_get_level();
    refit_log_set_level(REFIT_LOG_OFF);
    refit_log(REFIT_LOG_ERROR, "test", "not printed");
    refit_log_set_level(old);
}
END_TEST

START_TEST(standin_and_build_query)
{
    /* version 1 -> 2 changes every element; 2 -> 1 gives the bytes back. */
    uint16_t w[4] = {0x3f80, 0x4000, 0xbf80, 0x0000};
    uint16_t before[4];
    memcpy(before, w, sizeof w);
    ck_assert_int_eq(refit_standin_step(w, sizeof w, REFIT_DTYPE_BF16, 1, 2), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_uint_ne(w[i], before[i]);
    ck_assert_int_eq(refit_standin_step(w, sizeof w, REFIT_DTYPE_BF16, 2, 1), 0);
    ck_assert_mem_eq(w, before, sizeof w);
    int built = refit_cuda_built();
    ck_assert(built == 0 || built == 1);
}
END_TEST

START_TEST(null_objects_are_safe)
{
    refit_context_destroy(NULL);
    refit_publisher_destroy(NULL);
    refit_receiver_destroy(NULL);
    ck_assert_int_eq(REFIT_PLUGIN_TRANSPORT != REFIT_PLUGIN_STORE, 1);
    ck_assert_uint_gt(sizeof(struct refit_store_ops), sizeof(size_t));
    ck_assert_uint_gt(sizeof(struct refit_transport_ops), sizeof(size_t));
    ck_assert_uint_gt(sizeof(struct refit_model_ops), sizeof(size_t));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("public-api");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, status_and_error_context);
    tcase_add_test(tc, dtypes);
    tcase_add_test(tc, configuration);
    tcase_add_test(tc, log_levels);
    tcase_add_test(tc, standin_and_build_query);
    tcase_add_test(tc, null_objects_are_safe);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? EXIT_FAILURE : EXIT_SUCCESS;
}
