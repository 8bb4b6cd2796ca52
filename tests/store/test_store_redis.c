/* test_store_redis.c — what only the redis store has: passwords, ACL users
 * and password files, unreachable and frozen servers (timeouts instead of
 * hangs), and server-side error replies.  Each test starts its own
 * redis-server; skipped (77) when redis-server is not installed. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"
#include "refit/status.h"
#include "refit/store_core.h"
#include "../check_run.h"

/* A server of our own with extra arguments; port in *port. */
static pid_t server(int *port, const char *const *extra)
{
    pid_t pid = -1;
    for (int i = 0; i < 5 && pid < 0; i++) {
        *port = fx_free_port();
        pid = fx_redis_start_args(fx_dir(), *port, extra);
    }
    ck_assert_int_gt(pid, 0);
    return pid;
}

static int open_on(struct fx_store *f, int port, const char *a, const char *b, const char *c)
{
    char p[64];
    snprintf(p, sizeof(p), "store.redis.port=%d", port);
    return fx_open(f, "t-redis", p, a, b, c, NULL);
}

START_TEST(password)
{
    static const char *const extra[] = {"--requirepass", "s3cret", NULL};
    int port;
    pid_t pid = server(&port, extra);
    struct fx_store f;
    ck_assert_int_eq(open_on(&f, port, "store.redis.password=s3cret", NULL, NULL), 0);
    ck_assert_int_eq(refit_store_put(f.s, "k", "v", 1), 0);
    fx_close(&f);
    ck_assert_int_eq(open_on(&f, port, "store.timeout=2s", NULL, NULL), REFIT_EPERM);
    ck_assert_msg(strstr(refit_error_message(), "NOAUTH"), "%s", refit_error_message());
    fx_close(&f);
    ck_assert_int_eq(open_on(&f, port, "store.redis.password=wrong", NULL, NULL), REFIT_EPERM);
    fx_close(&f);
    /* From a file: the first line, newline stripped. */
    char pf[700], set[760];
    snprintf(pf, sizeof(pf), "%s/redis.pass", fx_dir());
    FILE *fp = fopen(pf, "w");
    fputs("s3cret\nignored\n", fp);
    fclose(fp);
    snprintf(set, sizeof(set), "store.redis.password_file=%s", pf);
    ck_assert_int_eq(open_on(&f, port, set, NULL, NULL), 0);
    fx_close(&f);
    snprintf(set, sizeof(set), "store.redis.password_file=%s/missing", fx_dir());
    ck_assert_int_eq(open_on(&f, port, set, NULL, NULL), REFIT_EPERM);
    fx_close(&f);
    fx_redis_stop(pid);
}
END_TEST

START_TEST(acl_user)
{
    static const char *const extra[] = {"--user", "refit", "on", ">pw", "~refit/*", "+@all", NULL};
    int port;
    pid_t pid = server(&port, extra);
    struct fx_store f;
    ck_assert_int_eq(open_on(&f, port, "store.redis.user=refit", "store.redis.password=pw", NULL), 0);
    ck_assert_int_eq(refit_store_put(f.s, "k", "v", 1), 0);
    char **keys;
    size_t n;
    ck_assert_int_eq(refit_store_list(f.s, "", &keys, &n), 0);
    ck_assert_uint_eq(n, 1);
    free(keys);
    fx_close(&f);
    ck_assert_int_eq(open_on(&f, port, "store.redis.user=refit", "store.redis.password=nope", NULL), REFIT_EPERM);
    fx_close(&f);
    /* A user without a password is a configuration error, said at open. */
    ck_assert_int_eq(open_on(&f, port, "store.redis.user=refit", NULL, NULL), REFIT_ECONFIG);
    fx_close(&f);
    fx_redis_stop(pid);
}
END_TEST

START_TEST(unreachable)
{
    int port = fx_free_port(); /* nothing listens there */
    struct fx_store f;
    int rc = open_on(&f, port, "store.timeout=300ms", "store.redis.connect_timeout=100ms", NULL);
    ck_assert_int_eq(rc, REFIT_ECONN);
    ck_assert_msg(strstr(refit_error_message(), "127.0.0.1"), "%s", refit_error_message());
    fx_close(&f);
}
END_TEST

/* A frozen server (SIGSTOP) must cost a timeout, not a hang; once it
 * thaws, the store works again. */
START_TEST(frozen_server)
{
    int port;
    pid_t pid = server(&port, NULL);
    struct fx_store f;
    ck_assert_int_eq(open_on(&f, port, "store.timeout=400ms", NULL, NULL), 0);
    ck_assert_int_eq(refit_store_put(f.s, "k", "v", 1), 0);
    kill(pid, SIGSTOP);
    void *v = NULL;
    size_t l;
    int rc = refit_store_get(f.s, "k", &v, &l);
    ck_assert_msg(rc == REFIT_ETIMEDOUT || rc == REFIT_ECONN, "get from a frozen server: %d", rc);
    kill(pid, SIGCONT);
    ck_assert_int_eq(refit_store_get(f.s, "k", &v, &l), 0);
    ck_assert(l == 1 && !memcmp(v, "v", 1));
    free(v);
    fx_close(&f);
    fx_redis_stop(pid);
}
END_TEST

/* Error replies are errors with the server's text, never values. */
START_TEST(error_replies)
{
    static const char *const extra[] = {"--maxmemory", "2mb", "--maxmemory-policy", "noeviction", NULL};
    int port;
    pid_t pid = server(&port, extra);
    struct fx_store f;
    ck_assert_int_eq(open_on(&f, port, NULL, NULL, NULL), 0);
    /* A key holding another type (a list): GET's WRONGTYPE is an error. */
    const char *push[] = {"RPUSH", "refit/t-redis/list", "x"};
    ck_assert_int_eq(fx_redis_cmd(port, 3, push, ":1"), 0);
    void *v = NULL;
    size_t l;
    ck_assert_int_lt(refit_store_get(f.s, "list", &v, &l), 0);
    ck_assert_msg(strstr(refit_error_message(), "WRONGTYPE"), "%s", refit_error_message());
    ck_assert_ptr_null(v);
    size_t big = 4u << 20;
    char *val = calloc(1, big);
    int rc = 0;
    for (int i = 0; i < 4 && !rc; i++) {
        char k[16];
        snprintf(k, sizeof(k), "big%d", i);
        rc = refit_store_put(f.s, k, val, big);
    }
    ck_assert_int_eq(rc, REFIT_ENOMEM);
    ck_assert_msg(strstr(refit_error_message(), "OOM"), "%s", refit_error_message());
    struct refit_store_put_item it[2] = {{"a", "1", 1, 0}, {"b", val, big, 0}};
    ck_assert_int_lt(refit_store_put_many(f.s, it, 2), 0);
    ck_assert_int_lt(refit_store_cas(f.s, "c", NULL, 0, val, big), 0);
    free(val);
    fx_close(&f);
    fx_redis_stop(pid);
}
END_TEST

int main(void)
{
    fx_setup("redis");
    Suite *s = suite_create("redis");
    TCase *tc = tcase_create("redis-only");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, password);
    tcase_add_test(tc, acl_user);
    tcase_add_test(tc, unreachable);
    tcase_add_test(tc, frozen_server);
    tcase_add_test(tc, error_replies);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_ENV);
    return failed ? 1 : 0;
}
