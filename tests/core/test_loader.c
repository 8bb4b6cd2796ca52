/* test_loader.c — the plugin loader against plugins that are good or
 * broken in exactly one way (built next to this test). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "refit/loader.h"
#include "refit/status.h"
#include "../check_run.h"

struct test_ops {
    size_t size;
    int (*answer)(void);
};

static refit_loader_t *ld;
static refit_config_t *cfg;

static void setup(void)
{
    setenv("REFIT_PLUGIN_PATH", TEST_PLUGIN_DIR, 1);
    setenv("REFIT_NO_BUILD_TREE", "1", 1);
    ck_assert_int_eq(refit_config_create(&cfg), 0);
    ck_assert_int_eq(refit_loader_create(cfg, &ld), 0);
}

static void teardown(void)
{
    refit_loader_destroy(ld);
    refit_config_destroy(cfg);
}

#define ck_assert_msg_has(want) \
    ck_assert_msg(strstr(refit_error_message(), (want)) != NULL, "message '%s' lacks '%s'", \
                  refit_error_message(), (want))

START_TEST(good_plugin_loads_and_runs)
{
    const struct refit_plugin *p;
    ck_assert_int_eq(refit_loader_load(ld, REFIT_PLUGIN_TRANSPORT, "good", &p), 0);
    ck_assert_str_eq(p->name, "good");
    ck_assert_str_eq(p->version, "1.2.3");
    const struct test_ops *ops = p->ops;
    ck_assert_uint_eq(ops->size, sizeof(struct test_ops));
    ck_assert_int_eq(ops->answer(), 42);
    ck_assert_msg(strstr(refit_loader_path_of(ld, p), "refit-transport-good.so") != NULL, "path");
    /* Its schema joined the configuration. */
    int64_t depth;
    ck_assert_int_eq(refit_config_int(cfg, "transport.good.depth", &depth), 0);
    ck_assert_int_eq(depth, 3);
    /* Loading again gives the same descriptor. */
    const struct refit_plugin *q;
    ck_assert_int_eq(refit_loader_load(ld, REFIT_PLUGIN_TRANSPORT, "good", &q), 0);
    ck_assert_ptr_eq(p, q);
}
END_TEST

START_TEST(wrong_abi_major_is_rejected)
{
    const struct refit_plugin *p = NULL;
    ck_assert_int_eq(refit_loader_load(ld, REFIT_PLUGIN_TRANSPORT, "badabi", &p), REFIT_EPLUGIN);
    ck_assert_ptr_null(p);
    ck_assert_msg_has("built for plugin ABI 2.0, this refit speaks 1.0");
    ck_assert_msg_has("refit-transport-badabi.so");
}
END_TEST

START_TEST(wrong_kind_is_rejected)
{
    const struct refit_plugin *p;
    ck_assert_int_eq(refit_loader_load(ld, REFIT_PLUGIN_TRANSPORT, "wrongkind", &p), REFIT_EPLUGIN);
    ck_assert_msg_has("is a store plugin, a transport plugin was wanted");
}
END_TEST

START_TEST(missing_symbol_is_rejected)
{
    const struct refit_plugin *p;
    ck_assert_int_eq(refit_loader_load(ld, REFIT_PLUGIN_TRANSPORT, "nosym", &p), REFIT_EPLUGIN);
    ck_assert_msg_has("no symbol refit_plugin_entry: not a refit plugin");
}
END_TEST

START_TEST(not_a_shared_object_is_rejected)
{
    const struct refit_plugin *p;
    ck_assert_int_eq(refit_loader_load(ld, REFIT_PLUGIN_TRANSPORT, "garbage", &p), REFIT_EPLUGIN);
    ck_assert_msg_has("not a loadable shared object");
}
END_TEST

START_TEST(failing_load_is_rejected_with_its_message)
{
    const struct refit_plugin *p;
    ck_assert_int_eq(refit_loader_load(ld, REFIT_PLUGIN_TRANSPORT, "initfail", &p), REFIT_EPLUGIN);
    ck_assert_msg_has("its load() failed: testplug: libfoo.so.3 is not installed");
}
END_TEST

START_TEST(missing_configured_plugin_names_search_path)
{
    const struct refit_plugin *p;
    ck_assert_int_eq(refit_loader_load(ld, REFIT_PLUGIN_STORE, "nosuch", &p), REFIT_ENOENT);
    ck_assert_msg_has("store plugin 'nosuch' (refit-store-nosuch.so) not found; searched ");
    ck_assert_msg_has(TEST_PLUGIN_DIR);
}
END_TEST

START_TEST(missing_optional_plugin_is_quiet)
{
    const struct refit_plugin *p;
    refit_error_clear();
    ck_assert_int_eq(refit_loader_load_optional(ld, REFIT_PLUGIN_STORE, "nosuch", &p), REFIT_ENOENT);
    ck_assert_str_eq(refit_error_message(), "");
    /* A present but broken optional plugin is still reported. */
    ck_assert_int_eq(refit_loader_load_optional(ld, REFIT_PLUGIN_TRANSPORT, "badabi", &p), REFIT_EPLUGIN);
}
END_TEST

START_TEST(bad_names_are_refused)
{
    const struct refit_plugin *p;
    ck_assert_int_eq(refit_loader_load(ld, REFIT_PLUGIN_TRANSPORT, "../../etc/passwd", &p), REFIT_EINVAL);
    ck_assert_int_eq(refit_loader_load(ld, REFIT_PLUGIN_TRANSPORT, "", &p), REFIT_EINVAL);
}
END_TEST

struct tally {
    int ok, rejected;
    char whys[4096];
};

static void count(void *arg, const struct refit_plugin_report *r)
{
    struct tally *t = arg;
    if (r->ok && !r->shadowed)
        t->ok++;
    else if (!r->ok) {
        t->rejected++;
        strncat(t->whys, r->name, sizeof(t->whys) - strlen(t->whys) - 1);
        strncat(t->whys, ": ", sizeof(t->whys) - strlen(t->whys) - 1);
        strncat(t->whys, r->why, sizeof(t->whys) - strlen(t->whys) - 1);
        strncat(t->whys, "\n", sizeof(t->whys) - strlen(t->whys) - 1);
    }
}

START_TEST(scan_reports_found_and_rejected)
{
    struct tally t = {0};
    ck_assert_int_eq(refit_loader_scan(ld, count, &t), 0);
    ck_assert_int_eq(t.ok, 1);
    ck_assert_int_eq(t.rejected, 5);
    ck_assert_msg(strstr(t.whys, "badabi: built for plugin ABI 2.0") != NULL, "%s", t.whys);
    ck_assert_msg(strstr(t.whys, "initfail: its load() failed") != NULL, "%s", t.whys);
}
END_TEST

/* A search directory too long to join with a file name is refused with
 * its length, never cut short into another path. */
START_TEST(overlong_plugin_dir_is_refused)
{
    char *dir = malloc(4000);
    ck_assert_ptr_nonnull(dir);
    memset(dir, 'd', 3999);
    dir[0] = '/';
    dir[3999] = 0;
    setenv("REFIT_PLUGIN_PATH", dir, 1);
    refit_loader_t *l2 = NULL;
    ck_assert_int_eq(refit_loader_create(cfg, &l2), REFIT_ECONFIG);
    ck_assert_ptr_null(l2);
    ck_assert_msg_has("3999 bytes long");
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("loader");
    TCase *tc = tcase_create("loader");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, good_plugin_loads_and_runs);
    tcase_add_test(tc, wrong_abi_major_is_rejected);
    tcase_add_test(tc, wrong_kind_is_rejected);
    tcase_add_test(tc, missing_symbol_is_rejected);
    tcase_add_test(tc, not_a_shared_object_is_rejected);
    tcase_add_test(tc, failing_load_is_rejected_with_its_message);
    tcase_add_test(tc, missing_configured_plugin_names_search_path);
    tcase_add_test(tc, missing_optional_plugin_is_quiet);
    tcase_add_test(tc, bad_names_are_refused);
    tcase_add_test(tc, scan_reports_found_and_rejected);
    tcase_add_test(tc, overlong_plugin_dir_is_refused);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
