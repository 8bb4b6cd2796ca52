/* test_bell.c PLUGIN — the transport doorbell (refit_transport_bell_*,
 * transport ops bell_*): with "tcp", a transport without doorbells says
 * REFIT_ENOTSUP (the caller then waits on the store); with "cuda_ipc" (on
 * the mock CUDA runtime here, a real GPU on the device machine), a bell
 * rung by its creator wakes a waiter in this process and in a forked one,
 * only the creator rings and only upwards, a wait times out when nothing
 * rings, and forged, foreign or closed handles are refused. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "refit/config.h"
#include "refit/loader.h"
#include "refit/transport_core.h"
#include "../check_run.h"

static const char *plugin;
static refit_config_t *cfg;
static refit_loader_t *ld;
static refit_transport_t *t;

static void setup(void)
{
    setenv("REFIT_TCP_TOKEN", "bell-test-token-0123456789abcdef", 1);
    ck_assert_int_eq(refit_config_create(&cfg), 0);
    ck_assert_int_eq(refit_config_set(cfg, "transport.timeout=2s", "test"), 0);
    ck_assert_int_eq(refit_loader_create(cfg, &ld), 0);
    struct refit_transport_open o = {.size = sizeof(o), .plugin = plugin, .name = "bell",
                                     .cuda_device = strcmp(plugin, "tcp") ? 0 : -1};
    int rc = refit_transport_init(ld, cfg, &o, &t);
    ck_assert_msg(rc == 0, "%s init: %s", plugin, refit_error_message());
}

static void teardown(void)
{
    refit_transport_fini(t);
    refit_loader_destroy(ld);
    refit_config_destroy(cfg);
}

START_TEST(t_no_bells)
{
    ck_assert_int_eq(refit_transport_has_bells(t), 0);
    refit_tp_bell_t *b = (refit_tp_bell_t *)&b;
    ck_assert_int_eq(refit_transport_bell_create(t, &b), REFIT_ENOTSUP);
    ck_assert_ptr_null(b);
    ck_assert_int_eq(refit_transport_bell_open(t, "x", 1, &b), REFIT_ENOTSUP);
    refit_transport_bell_close(t, NULL);
}
END_TEST

/* A bell and its handle. */
static refit_tp_bell_t *bell(void **h, size_t *len)
{
    ck_assert_int_eq(refit_transport_has_bells(t), 1);
    refit_tp_bell_t *b = NULL;
    ck_assert_msg(refit_transport_bell_create(t, &b) == 0, "%s", refit_error_message());
    *len = 0;
    ck_assert_int_eq(refit_transport_bell_pack(t, b, NULL, len), 0);
    ck_assert_uint_gt(*len, 0);
    *h = malloc(*len);
    size_t small = *len - 1;
    ck_assert_int_eq(refit_transport_bell_pack(t, b, *h, &small), REFIT_ETOOBIG);
    ck_assert_int_eq(refit_transport_bell_pack(t, b, *h, len), 0);
    return b;
}

START_TEST(t_ring_and_wait)
{
    void *h;
    size_t len;
    refit_tp_bell_t *b = bell(&h, &len), *o = NULL;
    ck_assert_int_eq(refit_transport_bell_open(t, h, len, &o), 0);
    uint64_t v = 99;
    ck_assert_int_eq(refit_transport_bell_wait(t, o, 0, &v, 0), REFIT_ETIMEDOUT);
    ck_assert_int_eq(refit_transport_bell_wait(t, o, 0, &v, 30), REFIT_ETIMEDOUT);
    ck_assert_int_eq(refit_transport_bell_ring(t, b, 3), 0);
    ck_assert_int_eq(refit_transport_bell_wait(t, o, 0, &v, 0), 0);
    ck_assert_uint_eq(v, 3);
    ck_assert_int_eq(refit_transport_bell_wait(t, o, 2, &v, 1000), 0); /* above 2: already */
    ck_assert_uint_eq(v, 3);
    ck_assert_int_eq(refit_transport_bell_wait(t, o, 3, &v, 0), REFIT_ETIMEDOUT);
    /* Only upwards, only by its creator. */
    ck_assert_int_eq(refit_transport_bell_ring(t, b, 3), REFIT_EINVAL);
    ck_assert_int_eq(refit_transport_bell_ring(t, o, 4), REFIT_EINVAL);
    refit_error_clear();
    /* A waiter in another process wakes on the ring. */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        uint64_t got = 0;
        int rc = refit_transport_bell_wait(t, o, 3, &got, 5000);
        _exit(rc == 0 && got == 7 ? 0 : 1);
    }
    usleep(50000);
    ck_assert_int_eq(refit_transport_bell_ring(t, b, 7), 0);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    refit_transport_bell_close(t, o);
    /* Closed by its creator: no new opens. */
    refit_transport_bell_close(t, b);
    ck_assert_int_eq(refit_transport_bell_open(t, h, len, &o), REFIT_ENOENT);
    refit_error_clear();
    free(h);
}
END_TEST

START_TEST(t_forged_handles)
{
    void *h;
    size_t len;
    refit_tp_bell_t *b = bell(&h, &len), *o = NULL;
    char *f = malloc(len);
    ck_assert_int_eq(refit_transport_bell_open(t, h, len - 1, &o), REFIT_EPROTO);
    memcpy(f, h, len);
    f[0] ^= 1; /* magic */
    ck_assert_int_eq(refit_transport_bell_open(t, f, len, &o), REFIT_EPROTO);
    /* The handle's layout (cuda_ipc_bell.c): magic 4, version 2, pad 2,
     * boot id 40, name 48. */
    memcpy(f, h, len);
    f[8] = (char)(f[8] == 'z' ? 'y' : 'z'); /* another host */
    ck_assert_int_eq(refit_transport_bell_open(t, f, len, &o), REFIT_ENOTSUP);
    memcpy(f, h, len);
    memcpy(f + 48, "/etc/passwd", 12); /* not a bell's name */
    ck_assert_int_eq(refit_transport_bell_open(t, f, len, &o), REFIT_EPROTO);
    memcpy(f, h, len);
    f[48 + 13] ^= 1; /* a bell that does not exist */
    ck_assert_int_eq(refit_transport_bell_open(t, f, len, &o), REFIT_ENOENT);
    ck_assert_ptr_null(o);
    refit_error_clear();
    refit_transport_bell_close(t, b);
    free(f);
    free(h);
}
END_TEST

int main(int argc, char **argv)
{
    plugin = argc > 1 ? argv[1] : "tcp";
    Suite *s = suite_create("bell");
    TCase *tc = tcase_create(plugin);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    if (!strcmp(plugin, "tcp")) {
        tcase_add_test(tc, t_no_bells);
    } else {
        tcase_add_test(tc, t_ring_and_wait);
        tcase_add_test(tc, t_forged_handles);
    }
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? 1 : 0;
}
