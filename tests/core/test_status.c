/* test_status.c — status codes and the error context. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "refit/status.h"
#include "../check_run.h"

START_TEST(strerror_covers_every_code)
{
    for (int s = 0; s > REFIT_STATUS_MIN_; s--)
        ck_assert_str_ne(refit_strerror(s), "unknown status");
    ck_assert_str_eq(refit_strerror(-999), "unknown status");
}
END_TEST

START_TEST(set_and_push_build_context)
{
    refit_error_clear();
    ck_assert_str_eq(refit_error_message(), "");
    int rc = refit_error_set(REFIT_ECHECKSUM, "tensor '%s': expected %x got %x", "w", 1u, 2u);
    ck_assert_int_eq(rc, REFIT_ECHECKSUM);
    rc = refit_error_push(rc, "pull v%d from %s", 3, "tp0");
    ck_assert_int_eq(rc, REFIT_ECHECKSUM);
    ck_assert_str_eq(refit_error_message(), "pull v3 from tp0: tensor 'w': expected 1 got 2");
    ck_assert_int_eq(refit_error_status(), REFIT_ECHECKSUM);
}
END_TEST

START_TEST(push_without_message_uses_strerror)
{
    refit_error_clear();
    refit_error_push(REFIT_ETIMEDOUT, "waiting for acks");
    ck_assert_str_eq(refit_error_message(), "waiting for acks: timed out");
}
END_TEST

START_TEST(long_messages_truncate_safely)
{
    char big[4000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    refit_error_set(REFIT_EIO, "%s", big);
    for (int i = 0; i < 10; i++)
        refit_error_push(REFIT_EIO, "%s", big);
    size_t n = strlen(refit_error_message());
    ck_assert_uint_lt(n, 1024);
    ck_assert_str_eq(refit_error_message() + n - 3, "...");
}
END_TEST

/* Re-tagging or prefixing the current message with the message itself as
 * an argument (issue 22.11): formatted into its own buffer before it is
 * replaced, so the result is the text asked for, not a smear of it. */
START_TEST(set_may_format_the_message_itself)
{
    refit_error_set(REFIT_ENOENT, "tensor 'w' rows 0..7: no source holds them");
    refit_error_set(REFIT_ETIMEDOUT, "within 5 s: %s", refit_error_message());
    ck_assert_str_eq(refit_error_message(), "within 5 s: tensor 'w' rows 0..7: no source holds them");
    ck_assert_int_eq(refit_error_status(), REFIT_ETIMEDOUT);
    refit_error_set(REFIT_EIO, "%s [%s]", refit_error_message(), refit_error_message());
    ck_assert_str_eq(refit_error_message(), "within 5 s: tensor 'w' rows 0..7: no source holds them [within 5 s: "
                                            "tensor 'w' rows 0..7: no source holds them]");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("status");
    TCase *tc = tcase_create("errors");
    tcase_add_test(tc, strerror_covers_every_code);
    tcase_add_test(tc, set_and_push_build_context);
    tcase_add_test(tc, push_without_message_uses_strerror);
    tcase_add_test(tc, long_messages_truncate_safely);
    tcase_add_test(tc, set_may_format_the_message_itself);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
