/* test_ackpost.c — acknowledgements written by a worker thread
 * (core/src/engine/ackpost.c, refit.ack_async) on the file store: a posted
 * ack is in the store once flushed, acks are written in order and the
 * previous one is still there until forgotten (not deleted), a pending ack
 * is written by destroy, and a failure on the worker comes back from the
 * next flush with the receiver and version named. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "ackpost.h"
#include "refit/catalog.h"
#include "../check_run.h"
#include "../store/fixture.h"

#define NS "ackpost"

static struct fx_store fs, wfs; /* the test's handle; the worker's (its store handed over) */

static void setup(void)
{
    ck_assert_int_eq(fx_open(&fs, NS, NULL), 0);
    ck_assert_int_eq(fx_open(&wfs, NS, NULL), 0);
}

static void teardown(void)
{
    fx_close(&wfs); /* its loader after the worker closed its store */
    fx_close(&fs);
}

/* The worker's store: rf_ackpost_create takes it over. */
static refit_store_t *worker_store(void)
{
    refit_store_t *s = wfs.s;
    wfs.s = NULL;
    return s;
}

/* The version the ack of (v, id) says, read by the test's own handle; 0 none. */
static uint64_t acked(uint64_t v, const char *id)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    ck_assert_int_eq(refit_key_ack(key, v, id), 0);
    void *val = NULL;
    size_t len = 0;
    if (refit_store_get(fs.s, key, &val, &len))
        return 0;
    struct refit_ack *a = NULL;
    ck_assert_int_eq(refit_ack_decode(val, len, key, &a), 0);
    uint64_t says = a->version;
    ck_assert_str_eq(a->receiver, id);
    free(a);
    free(val);
    return says;
}

START_TEST(posted_then_flushed)
{
    struct rf_ackpost *a = NULL;
    ck_assert_int_eq(rf_ackpost_create(worker_store(), "eng-a", &a), 0);
    ck_assert_int_eq(rf_ackpost_flush(a), 0); /* nothing posted: returns at once */
    ck_assert_int_eq(rf_ackpost_post(a, 1, 0), 0);
    ck_assert_int_eq(rf_ackpost_flush(a), 0);
    ck_assert_uint_eq(acked(1, "eng-a"), 1);
    ck_assert_uint_eq(acked(2, "eng-a"), 0);
    for (uint64_t v = 2; v <= 5; v++) /* each post waits for the one before */
        ck_assert_int_eq(rf_ackpost_post(a, v, v - 1), 0);
    ck_assert_int_eq(rf_ackpost_flush(a), 0);
    for (uint64_t v = 1; v <= 5; v++)
        ck_assert_uint_eq(acked(v, "eng-a"), v);
    ck_assert_int_eq(rf_ackpost_post(a, 0, 5), REFIT_EINVAL);
    refit_error_clear();
    rf_ackpost_destroy(a);
}
END_TEST

START_TEST(destroy_writes_the_pending_ack)
{
    struct rf_ackpost *a = NULL;
    ck_assert_int_eq(rf_ackpost_create(worker_store(), "eng-b", &a), 0);
    ck_assert_int_eq(rf_ackpost_post(a, 7, 0), 0);
    rf_ackpost_destroy(a);
    ck_assert_uint_eq(acked(7, "eng-b"), 7);
    rf_ackpost_destroy(NULL);
}
END_TEST

START_TEST(failure_reported_by_the_next_flush)
{
    /* An id no key may hold: the worker's refit_ack_put fails. */
    const char *bad = "bad/id";
    struct rf_ackpost *a = NULL;
    ck_assert_int_eq(rf_ackpost_create(worker_store(), bad, &a), 0);
    ck_assert_int_eq(rf_ackpost_post(a, 3, 0), 0); /* written later: no failure yet */
    int rc = rf_ackpost_flush(a);
    ck_assert_int_lt(rc, 0);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "receiver bad/id: acknowledging v3"));
    refit_error_clear();
    ck_assert_int_eq(rf_ackpost_flush(a), 0); /* reported once */
    ck_assert_int_eq(rf_ackpost_post(a, 4, 3), 0);
    ck_assert_int_eq(rf_ackpost_post(a, 5, 4), rc); /* the failure of v4, by the next post */
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "acknowledging v4"));
    refit_error_clear();
    rf_ackpost_destroy(a); /* v5's failure is logged */
}
END_TEST

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fx_setup("file");
    Suite *s = suite_create("ackpost");
    TCase *tc = tcase_create("file");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, posted_then_flushed);
    tcase_add_test(tc, destroy_writes_the_pending_ack);
    tcase_add_test(tc, failure_reported_by_the_next_flush);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
