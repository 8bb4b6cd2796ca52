/* check_run.h — the end of every Check program here: run the suite (in
 * Check's fork mode unless CK_FORK says otherwise), print with the given
 * verbosity (CK_ENV: as CK_VERBOSITY says) and return how many tests
 * failed.  Included as "../check_run.h" from tests/<area>/. */
#ifndef REFIT_TESTS_CHECK_RUN_H
#define REFIT_TESTS_CHECK_RUN_H

#include <check.h>

static inline int t_run_suite(Suite *s, enum print_output mode)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, mode);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed;
}

#endif
