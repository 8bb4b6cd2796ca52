/* test_notify.c — the redis store's poll() woken by pub/sub
 * (plugins/store/redis/redis_notify.c): a poll whose re-check interval is
 * a minute returns as soon as another handle writes below its prefix, by
 * put, cas or del; a user whose ACL allows no channels still writes, and
 * its polls still see changes on their timer.  A wake-up that did not
 * happen shows as this suite's timeout (20 s per test, against the
 * minute-long interval), not as a timed assertion. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"
#include "refit/status.h"
#include "refit/store_core.h"
#include "../check_run.h"

struct writer {
    struct fx_store *f;
    int how; /* 0 put, 1 cas, 2 del */
    const char *key;
};

static void *write_later(void *arg)
{
    struct writer *w = arg;
    usleep(200000);
    if (w->how == 0)
        refit_store_put(w->f->s, w->key, "v", 1);
    else if (w->how == 1)
        refit_store_cas(w->f->s, w->key, NULL, 0, "v", 1);
    else
        refit_store_del(w->f->s, w->key);
    return NULL;
}

static void woken_by(int how, const char *prefix, const char *key)
{
    struct fx_store a, b;
    ck_assert_int_eq(fx_open(&a, "t-notify", "store.redis.poll_min=60s", "store.redis.poll_max=60s", NULL), 0);
    ck_assert_int_eq(fx_open(&b, "t-notify", NULL), 0);
    if (how == 2)
        ck_assert_int_eq(refit_store_put(b.s, key, "v", 1), 0);
    uint64_t c0 = 0, c1 = 0;
    ck_assert_int_eq(refit_store_poll(a.s, prefix, 0, &c0, 0), 0);
    struct writer w = {&b, how, key};
    pthread_t th;
    pthread_create(&th, NULL, write_later, &w);
    int rc = refit_store_poll(a.s, prefix, c0, &c1, 120000);
    pthread_join(th, NULL);
    ck_assert_msg(rc == 0, "poll: %s", refit_error_message());
    ck_assert_uint_ne(c0, c1);
    fx_close(&a);
    fx_close(&b);
}

START_TEST(put_wakes)
{
    woken_by(0, "sources/", "sources/tp0");
}
END_TEST

START_TEST(cas_wakes)
{
    woken_by(1, "load/", "load/trainer");
}
END_TEST

START_TEST(del_wakes)
{
    woken_by(2, "push/", "push/slots/rx-1");
}
END_TEST

START_TEST(namespace_wide)
{
    /* A prefix without '/' watches the namespace's counter. */
    woken_by(0, "", "heartbeats/tp0");
}
END_TEST

START_TEST(acl_without_channels)
{
    /* Redis 7 gives a new ACL user no channels: PUBLISH is refused.  Writes
     * must still succeed, and polls fall back to their timer. */
    static const char *const extra[] = {"--user", "refit", "on", ">pw", "~refit/*", "+@all", NULL};
    int port = 0;
    pid_t pid = -1;
    for (int i = 0; i < 5 && pid < 0; i++)
        pid = fx_redis_start_args(fx_dir(), port = fx_free_port(), extra);
    ck_assert_int_gt(pid, 0);
    char p[64];
    snprintf(p, sizeof(p), "store.redis.port=%d", port);
    struct fx_store a, b;
    ck_assert_int_eq(fx_open(&a, "t-acl", p, "store.redis.user=refit", "store.redis.password=pw",
                             "store.redis.poll_max=20ms", NULL), 0);
    ck_assert_int_eq(fx_open(&b, "t-acl", p, "store.redis.user=refit", "store.redis.password=pw", NULL), 0);
    uint64_t c0 = 0, c1 = 0;
    ck_assert_int_eq(refit_store_poll(a.s, "sources/", 0, &c0, 0), 0);
    ck_assert_int_eq(refit_store_put(b.s, "sources/x", "v", 1), 0);
    ck_assert_int_eq(refit_store_cas(b.s, "load/trainer", NULL, 0, "v", 1), 0);
    ck_assert_int_eq(refit_store_del(b.s, "sources/x"), 0);
    ck_assert_int_eq(refit_store_poll(a.s, "sources/", c0, &c1, 10000), 0);
    ck_assert_uint_ne(c0, c1);
    fx_close(&a);
    fx_close(&b);
    fx_redis_stop(pid);
}
END_TEST

START_TEST(notify_off)
{
    /* store.redis.notify: false keeps the timer alone, and still sees it. */
    struct fx_store a, b;
    ck_assert_int_eq(fx_open(&a, "t-off", "store.redis.notify=false", "store.redis.poll_max=20ms", NULL), 0);
    ck_assert_int_eq(fx_open(&b, "t-off", NULL), 0);
    uint64_t c0 = 0, c1 = 0;
    ck_assert_int_eq(refit_store_poll(a.s, "sources/", 0, &c0, 0), 0);
    ck_assert_int_eq(refit_store_put(b.s, "sources/y", "v", 1), 0);
    ck_assert_int_eq(refit_store_poll(a.s, "sources/", c0, &c1, 10000), 0);
    /* Nothing more: a timeout with the cursor unchanged. */
    ck_assert_int_eq(refit_store_poll(a.s, "sources/", c1, &c0, 100), REFIT_ETIMEDOUT);
    ck_assert_uint_eq(c0, c1);
    fx_close(&a);
    fx_close(&b);
}
END_TEST

int main(void)
{
    fx_setup("redis");
    Suite *s = suite_create("redis-notify");
    TCase *tc = tcase_create("notify");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, put_wakes);
    tcase_add_test(tc, cas_wakes);
    tcase_add_test(tc, del_wakes);
    tcase_add_test(tc, namespace_wide);
    tcase_add_test(tc, acl_without_channels);
    tcase_add_test(tc, notify_off);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_ENV) ? 1 : 0;
}
