/* test_config.c — the configuration: parsing, every error path with its
 * file:line:column, overrides and their precedence, typed accessors. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "refit/config.h"
#include "refit/status.h"
#include "../check_run.h"

static refit_config_t *cfg;

static void setup(void)
{
    ck_assert_int_eq(refit_config_create(&cfg), 0);
}

static void teardown(void)
{
    refit_config_destroy(cfg);
    cfg = NULL;
}

static int load(const char *text)
{
    refit_error_clear();
    return refit_config_load_string(cfg, "t.yaml", text, strlen(text));
}

/* The failure's message must contain `want`. */
#define ck_assert_err(rc, status, want)                                                        \
    do {                                                                                       \
        ck_assert_int_eq((rc), (status));                                                      \
        ck_assert_msg(strstr(refit_error_message(), (want)) != NULL, "message '%s' lacks '%s'", \
                      refit_error_message(), (want));                                          \
    } while (0)

START_TEST(valid_file_and_typed_accessors)
{
    ck_assert_int_eq(load("store:\n  plugin: file\n  namespace: job7\n"
                          "refit:\n  flush_every: 50\n  gather_threshold: 4MiB\n"
                          "  timeout: 90s\n  in_place: yes\n  verify_sample: 0.25\n"
                          "model:\n  skip: [\"mtp.*\", \"foo\"]\n"),
                     0);
    const char *s;
    int64_t i;
    uint64_t u;
    bool b;
    double d;
    ck_assert_int_eq(refit_config_str(cfg, "store.namespace", &s), 0);
    ck_assert_str_eq(s, "job7");
    ck_assert_int_eq(refit_config_int(cfg, "refit.flush_every", &i), 0);
    ck_assert_int_eq(i, 50);
    ck_assert_int_eq(refit_config_size(cfg, "refit.gather_threshold", &u), 0);
    ck_assert_uint_eq(u, 4u << 20);
    ck_assert_int_eq(refit_config_duration_ms(cfg, "refit.timeout", &i), 0);
    ck_assert_int_eq(i, 90000);
    ck_assert_int_eq(refit_config_bool(cfg, "refit.in_place", &b), 0);
    ck_assert(b);
    ck_assert_int_eq(refit_config_double(cfg, "refit.verify_sample", &d), 0);
    ck_assert_double_eq(d, 0.25);
    const char *const *items;
    size_t n;
    ck_assert_int_eq(refit_config_list(cfg, "model.skip", &items, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(items[0], "mtp.*");
    ck_assert_str_eq(items[1], "foo");
}
END_TEST

START_TEST(defaults_apply_when_absent)
{
    ck_assert_int_eq(load("store:\n  plugin: file\n"), 0);
    int64_t i;
    const char *s;
    ck_assert_int_eq(refit_config_int(cfg, "refit.flush_every", &i), 0);
    ck_assert_int_eq(i, 100);
    ck_assert_int_eq(refit_config_str(cfg, "refit.mode", &s), 0);
    ck_assert_str_eq(s, "pull");
    struct refit_cfg_origin o;
    ck_assert_int_eq(refit_config_origin(cfg, "refit.mode", &o), 0);
    ck_assert_str_eq(o.file, "default");
    refit_config_origin_clear(&o);
    ck_assert(!refit_config_has(cfg, "refit.mode"));
    /* An optional key without default is ENOENT, not a made-up value. */
    ck_assert_int_eq(refit_config_str(cfg, "model.hf_config", &s), REFIT_ENOENT);
}
END_TEST

START_TEST(syntax_error_names_line_and_column)
{
    int rc = load("store:\n  plugin: file\n  namespace: [unclosed\n");
    ck_assert_int_eq(rc, REFIT_ECONFIG);
    ck_assert_msg(strncmp(refit_error_message(), "t.yaml:", 7) == 0, "%s", refit_error_message());
    ck_assert_msg(strstr(refit_error_message(), ":4:") || strstr(refit_error_message(), ":3:"), "%s",
                  refit_error_message());
}
END_TEST

START_TEST(unknown_key_suggests_closest)
{
    int rc = load("refit:\n  flush_evrey: 10\n");
    ck_assert_err(rc, REFIT_ECONFIG, "t.yaml:2:3: key 'refit.flush_evrey': unknown key");
    ck_assert_err(rc, REFIT_ECONFIG, "did you mean 'refit.flush_every'?");
}
END_TEST

START_TEST(unknown_section_suggests_closest)
{
    int rc = load("trasnport:\n  plugin: tcp\n");
    ck_assert_err(rc, REFIT_ECONFIG, "t.yaml:1:1: key 'trasnport': unknown key; did you mean 'transport'?");
}
END_TEST

START_TEST(wrong_type_and_range_and_choice)
{
    ck_assert_err(load("refit:\n  flush_every: lots\n"), REFIT_ECONFIG,
                  "t.yaml:2:16: key 'refit.flush_every': 'lots' is not an integer");
    teardown();
    setup();
    ck_assert_err(load("refit:\n  flush_every: 0\n"), REFIT_ERANGE,
                  "t.yaml:2:16: key 'refit.flush_every': 0 is outside [1, 1000000]");
    teardown();
    setup();
    ck_assert_err(load("refit:\n  mode: pul\n"), REFIT_ECONFIG,
                  "t.yaml:2:9: key 'refit.mode': 'pul' is not one of pull|push");
    teardown();
    setup();
    ck_assert_err(load("refit:\n  in_place: maybe\n"), REFIT_ECONFIG, "is not a boolean");
    teardown();
    setup();
    ck_assert_err(load("refit:\n  gather_threshold: 2 parsecs\n"), REFIT_ECONFIG, "is not a size");
    teardown();
    setup();
    ck_assert_err(load("refit:\n  timeout: soon\n"), REFIT_ECONFIG, "is not a duration");
    teardown();
    setup();
    ck_assert_err(load("refit:\n  timeout: [1, 2]\n"), REFIT_ECONFIG,
                  "t.yaml:2:12: key 'refit.timeout': expected a single value, not a list");
    teardown();
    setup();
    ck_assert_err(load("refit: 3\n"), REFIT_ECONFIG, "key 'refit': expected a mapping");
}
END_TEST

START_TEST(structural_errors)
{
    ck_assert_err(load("- a\n- b\n"), REFIT_ECONFIG, "t.yaml:1:1: the top level must be a mapping");
    teardown();
    setup();
    ck_assert_err(load("refit:\n  mode: pull\n  mode: push\n"), REFIT_ECONFIG,
                  "t.yaml:3:3: key 'mode' appears twice");
    teardown();
    setup();
    ck_assert_err(load("refit:\n  a.b: 1\n"), REFIT_ECONFIG, "t.yaml:2:3: key 'a.b'");
}
END_TEST

START_TEST(nesting_and_size_are_capped)
{
    char text[4096] = "";
    size_t len = 0;
    for (int i = 0; i < 40; i++)
        len += (size_t)snprintf(text + len, sizeof(text) - len, "%*sk%d:\n", i * 2, "", i);
    snprintf(text + len, sizeof(text) - len, "%*sv: 1\n", 80, "");
    ck_assert_err(load(text), REFIT_ECONFIG, "nesting deeper than 32 levels");
    teardown();
    setup();
    size_t big = (1u << 20) + 10;
    char *huge = malloc(big + 1);
    memset(huge, '#', big);
    huge[big] = '\0';
    ck_assert_err(refit_config_load_string(cfg, "huge.yaml", huge, big), REFIT_ECONFIG,
                  "huge.yaml: 1048586 bytes, more than the 1048576 allowed");
    free(huge);
}
END_TEST

START_TEST(alias_bombs_are_capped)
{
    /* Each level references the previous one 9 times: 9^8 nodes if expanded. */
    const char *bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n"
                       "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                       "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                       "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                       "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
    ck_assert_err(load(bomb), REFIT_ECONFIG, "more than 100000 nodes");
}
END_TEST

START_TEST(alias_bytes_are_capped)
{
    /* A 100 KB scalar and 2000 aliases of it: 2001 nodes (far under the node
     * limit) but 200 MB once expanded.  Refused at the first alias past the
     * byte limit, naming where. */
    size_t big = 100000, n_alias = 2000;
    size_t cap = big + 4 * n_alias + 64;
    char *text = malloc(cap);
    size_t len = (size_t)snprintf(text, cap, "model:\n  skip: [&a ");
    memset(text + len, 'x', big);
    len += big;
    for (size_t i = 0; i < n_alias; i++)
        len += (size_t)snprintf(text + len, cap - len, ", *a");
    len += (size_t)snprintf(text + len, cap - len, "]\n");
    refit_error_clear();
    int rc = refit_config_load_string(cfg, "t.yaml", text, len);
    free(text);
    ck_assert_err(rc, REFIT_ECONFIG, "keys and values exceed 4194304 bytes (aliases count by their expansion)");
    ck_assert_err(rc, REFIT_ECONFIG, "t.yaml:2:");
}
END_TEST

START_TEST(aliases_resolve_within_limits)
{
    ck_assert_int_eq(load("refit:\n  flush_every: &n 7\n  receivers: *n\n"
                          "model:\n  skip: &s [a, b]\n  fp8:\n    exclude: *s\n"), 0);
    int64_t i;
    ck_assert_int_eq(refit_config_int(cfg, "refit.receivers", &i), 0);
    ck_assert_int_eq(i, 7);
    const char *const *items;
    size_t n;
    ck_assert_int_eq(refit_config_list(cfg, "model.fp8.exclude", &items, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(items[1], "b");
    teardown();
    setup();
    ck_assert_err(load("refit:\n  flush_every: *nowhere\n"), REFIT_ECONFIG,
                  "t.yaml:2:16: alias '*nowhere' names no anchor");
    teardown();
    setup();
    /* An alias inside its own anchor is refused, not expanded forever. */
    ck_assert_err(load("model:\n  skip: &r [a, *r]\n"), REFIT_ECONFIG, "alias '*r' names no anchor");
}
END_TEST

START_TEST(depth_limit_stops_the_parser)
{
    /* 41 unclosed levels followed by junk: the error is the 33rd level
     * (column 36), found before the parser ever reaches the junk. */
    char text[128];
    int n = snprintf(text, sizeof(text), "a: ");
    for (int i = 0; i < 41; i++)
        text[n++] = '[';
    n += snprintf(text + n, sizeof(text) - (size_t)n, "}}} :\n");
    ck_assert_err(refit_config_load_string(cfg, "t.yaml", text, (size_t)n), REFIT_ECONFIG,
                  "t.yaml:1:36: nesting deeper than 32 levels");
    teardown();
    setup();
    /* 100,000 levels: libyaml's scanner is quadratic in them, so the
     * parser must stop at the limit rather than scan them all. */
    size_t deep = 100000;
    char *t = malloc(deep + 8);
    memcpy(t, "a: ", 3);
    memset(t + 3, '[', deep);
    ck_assert_err(refit_config_load_string(cfg, "t.yaml", t, deep + 3), REFIT_ECONFIG,
                  "t.yaml:1:36: nesting deeper than 32 levels");
    free(t);
}
END_TEST

START_TEST(fifo_config_is_refused)
{
    /* Opening a FIFO for reading waits for a writer: refused instead. */
    char dir[512], path[600];
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/refit-cfgfifo-XXXXXX", t && *t ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/cluster.yaml", dir);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    ck_assert_err(refit_config_load(cfg, path), REFIT_ECONFIG, "not a regular file");
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(env_overrides_file_and_set_overrides_env)
{
    ck_assert_int_eq(load("refit:\n  flush_every: 10\n"), 0);
    char *envp[] = {"REFIT_REFIT_FLUSH_EVERY=20", "REFIT_STORE_NAMESPACE=fromenv", NULL};
    ck_assert_int_eq(refit_config_apply_env(cfg, envp), 0);
    int64_t i;
    ck_assert_int_eq(refit_config_int(cfg, "refit.flush_every", &i), 0);
    ck_assert_int_eq(i, 20);
    struct refit_cfg_origin o, o2;
    ck_assert_int_eq(refit_config_origin(cfg, "refit.flush_every", &o), 0);
    ck_assert_str_eq(o.file, "env REFIT_REFIT_FLUSH_EVERY");
    /* A second lookup does not overwrite the first origin held. */
    ck_assert_int_eq(refit_config_origin(cfg, "store.namespace", &o2), 0);
    ck_assert_str_eq(o2.file, "env REFIT_STORE_NAMESPACE");
    ck_assert_str_eq(o.file, "env REFIT_REFIT_FLUSH_EVERY");
    refit_config_origin_clear(&o);
    refit_config_origin_clear(&o2);
    refit_config_origin_clear(&o2); /* safe twice */
    ck_assert_int_eq(refit_config_set(cfg, "refit.flush_every=30", "--set"), 0);
    ck_assert_int_eq(refit_config_int(cfg, "refit.flush_every", &i), 0);
    ck_assert_int_eq(i, 30);
    const char *s;
    ck_assert_int_eq(refit_config_str(cfg, "store.namespace", &s), 0);
    ck_assert_str_eq(s, "fromenv");
}
END_TEST

START_TEST(bad_overrides_are_errors)
{
    ck_assert_int_eq(load(""), 0);
    char *envp[] = {"REFIT_REFIT_FLUSH_EVERY=-5", NULL};
    ck_assert_err(refit_config_apply_env(cfg, envp), REFIT_ERANGE,
                  "env REFIT_REFIT_FLUSH_EVERY: key 'refit.flush_every': -5 is outside");
    teardown();
    setup();
    ck_assert_int_eq(load(""), 0);
    ck_assert_err(refit_config_set(cfg, "refit.flsh_every=3", "--set"), REFIT_ECONFIG,
                  "--set: key 'refit.flsh_every': unknown key; did you mean 'refit.flush_every'?");
    ck_assert_err(refit_config_set(cfg, "novalue", "--set"), REFIT_ECONFIG, "expected key=value");
    ck_assert_err(refit_config_set(cfg, "refit.mode=sideways", "--set"), REFIT_ECONFIG,
                  "'sideways' is not one of pull|push");
}
END_TEST

static const struct refit_cfg_field plug_fields[] = {
    {"streams", REFIT_CFG_INT, "4", 1, 64, NULL, "parallel streams"},
    {"env", REFIT_CFG_MAP, NULL, 0, -1, NULL, "free-form variables"},
};

static int collect(void *arg, const char *k, const char *v)
{
    char *buf = arg;
    strcat(buf, k);
    strcat(buf, "=");
    strcat(buf, v);
    strcat(buf, ";");
    return 0;
}

START_TEST(plugin_sections_checked_once_schema_known)
{
    /* Unknown plugin section: accepted until its schema is known... */
    ck_assert_int_eq(load("transport:\n  plugin: fake\n  fake:\n    stremas: 8\n"), 0);
    /* ...but strict validation (refit config check) rejects it. */
    ck_assert_err(refit_config_validate(cfg, true), REFIT_ECONFIG,
                  "key 'transport.fake': no transport plugin named 'fake' was found");
    ck_assert_int_eq(refit_config_add_schema(cfg, "transport.fake", plug_fields, 2), 0);
    ck_assert_err(refit_config_validate(cfg, false), REFIT_ECONFIG,
                  "t.yaml:4:5: key 'transport.fake.stremas': unknown key; did you mean "
                  "'transport.fake.streams'?");
}
END_TEST

START_TEST(plugin_map_and_overrides)
{
    ck_assert_int_eq(load("transport:\n  fake:\n    streams: 8\n    env:\n      UCX_TLS: tcp\n"), 0);
    /* A --set for a plugin key before the plugin is loaded is kept. */
    ck_assert_int_eq(refit_config_set(cfg, "transport.fake.streams=16", "--set"), 0);
    ck_assert_int_eq(refit_config_add_schema(cfg, "transport.fake", plug_fields, 2), 0);
    ck_assert_int_eq(refit_config_validate(cfg, true), 0);
    int64_t i;
    ck_assert_int_eq(refit_config_int(cfg, "transport.fake.streams", &i), 0);
    ck_assert_int_eq(i, 16);
    ck_assert_int_eq(refit_config_set(cfg, "transport.fake.env.UCX_NET_DEVICES=mlx5_0:1", "--set"), 0);
    char buf[256] = "";
    ck_assert_int_eq(refit_config_map_each(cfg, "transport.fake.env", collect, buf), 0);
    ck_assert_str_eq(buf, "UCX_TLS=tcp;UCX_NET_DEVICES=mlx5_0:1;");
    /* A typo in a plugin key given by --set is caught by validation. */
    ck_assert_int_eq(refit_config_set(cfg, "transport.fake.strems=2", "--set"), REFIT_ECONFIG);
}
END_TEST

START_TEST(variables_expand)
{
    setenv("REFIT_TEST_DIR", "/x/y", 1);
    unsetenv("REFIT_TEST_UNSET");
    ck_assert_int_eq(load("store:\n  namespace: ${REFIT_TEST_DIR}/a-${REFIT_TEST_UNSET:-dflt}\n"), 0);
    const char *s;
    ck_assert_int_eq(refit_config_str(cfg, "store.namespace", &s), 0);
    ck_assert_str_eq(s, "/x/y/a-dflt");
}
END_TEST

static char tmpdir[256];

static void write_file(const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

START_TEST(model_file_reference_merges_under)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/refit-cfgtest-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    char sub[300];
    snprintf(sub, sizeof(sub), "%s/models", tmpdir);
    mkdir(sub, 0700);
    write_file("models/m.yaml", "model:\n  name: Tiny\n  target: hf\n  fp8:\n    rule: deepgemm\n"
                                "    enabled: true\n  hf:\n    model_type: qwen3\n");
    write_file("cluster.yaml", "model:\n  file: models/m.yaml\n  target: vllm\n  fp8:\n    enabled: false\n");
    char path[300];
    snprintf(path, sizeof(path), "%s/cluster.yaml", tmpdir);
    ck_assert_int_eq(refit_config_load(cfg, path), 0);
    const char *s;
    bool b;
    ck_assert_int_eq(refit_config_str(cfg, "model.name", &s), 0);
    ck_assert_str_eq(s, "Tiny");
    ck_assert_int_eq(refit_config_str(cfg, "model.target", &s), 0); /* cluster wins */
    ck_assert_str_eq(s, "vllm");
    ck_assert_int_eq(refit_config_str(cfg, "model.fp8.rule", &s), 0);
    ck_assert_str_eq(s, "deepgemm");
    ck_assert_int_eq(refit_config_bool(cfg, "model.fp8.enabled", &b), 0);
    ck_assert(!b);
    struct refit_cfg_origin o;
    ck_assert_int_eq(refit_config_origin(cfg, "model.fp8.rule", &o), 0);
    ck_assert_msg(strstr(o.file, "models/m.yaml") != NULL, "%s", o.file);
    ck_assert_int_eq(o.line, 5);
    refit_config_origin_clear(&o);
    /* An error inside the model file names the model file. */
    write_file("models/bad.yaml", "model:\n  fp8:\n    rule: sloppy\n");
    write_file("c2.yaml", "model:\n  file: models/bad.yaml\n");
    refit_config_destroy(cfg);
    refit_config_create(&cfg);
    snprintf(path, sizeof(path), "%s/c2.yaml", tmpdir);
    int rc = refit_config_load(cfg, path);
    ck_assert_err(rc, REFIT_ECONFIG, "models/bad.yaml:3:11: key 'model.fp8.rule': 'sloppy' is not one of");
    /* A missing model file names the referencing key. */
    write_file("c3.yaml", "model:\n  file: models/none.yaml\n");
    refit_config_destroy(cfg);
    refit_config_create(&cfg);
    snprintf(path, sizeof(path), "%s/c3.yaml", tmpdir);
    ck_assert_err(refit_config_load(cfg, path), REFIT_ENOENT, "c3.yaml:2:9: key 'model.file'");
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(missing_file_is_clear)
{
    ck_assert_err(refit_config_load(cfg, "/nonexistent/cluster.yaml"), REFIT_ENOENT,
                  "/nonexistent/cluster.yaml: No such file or directory");
}
END_TEST

START_TEST(shipped_cluster_files_validate)
{
    const char *files[] = {"configs/clusters/local.yaml", "configs/models/qwen3-0.6b.yaml",
                           "configs/models/qwen3-4b.yaml", "configs/models/qwen3-30b-a3b.yaml",
                           "configs/models/glm-4.5-air.yaml"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char p[1024];
        snprintf(p, sizeof(p), "%s/%s", SOURCE_ROOT, files[i]);
        refit_config_destroy(cfg);
        refit_config_create(&cfg);
        ck_assert_msg(refit_config_load(cfg, p) == 0, "%s: %s", files[i], refit_error_message());
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, valid_file_and_typed_accessors);
    tcase_add_test(tc, defaults_apply_when_absent);
    tcase_add_test(tc, syntax_error_names_line_and_column);
    tcase_add_test(tc, unknown_key_suggests_closest);
    tcase_add_test(tc, unknown_section_suggests_closest);
    tcase_add_test(tc, wrong_type_and_range_and_choice);
    tcase_add_test(tc, structural_errors);
    tcase_add_test(tc, nesting_and_size_are_capped);
    tcase_add_test(tc, alias_bombs_are_capped);
    tcase_add_test(tc, alias_bytes_are_capped);
    tcase_add_test(tc, aliases_resolve_within_limits);
    tcase_add_test(tc, depth_limit_stops_the_parser);
    tcase_add_test(tc, fifo_config_is_refused);
    tcase_add_test(tc, env_overrides_file_and_set_overrides_env);
    tcase_add_test(tc, bad_overrides_are_errors);
    tcase_add_test(tc, plugin_sections_checked_once_schema_known);
    tcase_add_test(tc, plugin_map_and_overrides);
    tcase_add_test(tc, variables_expand);
    tcase_add_test(tc, model_file_reference_merges_under);
    tcase_add_test(tc, missing_file_is_clear);
    tcase_add_test(tc, shipped_cluster_files_validate);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
