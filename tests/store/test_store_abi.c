/* test_store_abi.c — the store ABI itself, below the core wrapper: the
 * file plugin loaded with dlopen and driven through a stub host (it must
 * not need librefit), an object the core allocated zeroed, close() on a
 * never-opened and on a failed-open object; and the wrapper's own checks
 * (unknown plugin, key grammar edges, max_value, live records, round-trip
 * counting). */
#include <check.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "refit/plugin.h"
#include "refit/status.h"
#include "refit/store_core.h"
#include "../check_run.h"

/* ------------------------------------------------------------------ */
/* A stub host: malloc, messages into a buffer, config from a tiny table. */

static char stub_msg[1024];
static const char *stub_path;

static void s_log(int level, const char *component, const char *fmt, ...)
{
    (void)level;
    (void)component;
    (void)fmt;
}
static int s_err(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(stub_msg, sizeof(stub_msg), fmt, ap);
    va_end(ap);
    return status;
}
static int s_str(const struct refit_cfg_view *v, const char *k, const char **o)
{
    (void)v;
    (void)k;
    (void)o;
    return REFIT_ENOENT;
}
static int s_int(const struct refit_cfg_view *v, const char *k, int64_t *o)
{
    (void)v;
    (void)k;
    (void)o;
    return REFIT_ENOENT;
}
static int s_bool(const struct refit_cfg_view *v, const char *k, bool *o)
{
    (void)v;
    *o = !strcmp(k, "fsync");
    return 0;
}
static int s_double(const struct refit_cfg_view *v, const char *k, double *o)
{
    (void)v;
    (void)k;
    (void)o;
    return REFIT_ENOENT;
}
static int s_size(const struct refit_cfg_view *v, const char *k, uint64_t *o)
{
    (void)v;
    (void)k;
    (void)o;
    return REFIT_ENOENT;
}
static int s_dur(const struct refit_cfg_view *v, const char *k, int64_t *o)
{
    (void)v;
    *o = !strcmp(k, "poll_min") ? 5 : 200;
    return 0;
}
static int s_list(const struct refit_cfg_view *v, const char *k, const char *const **i, size_t *n)
{
    (void)v;
    (void)k;
    (void)i;
    (void)n;
    return REFIT_ENOENT;
}
static int s_map(const struct refit_cfg_view *v, const char *k, int (*fn)(void *, const char *, const char *),
                 void *a)
{
    (void)v;
    (void)k;
    (void)fn;
    (void)a;
    return REFIT_ENOENT;
}
static int s_path(const struct refit_cfg_view *v, const char *k, char **o)
{
    (void)v;
    if (strcmp(k, "path") || !stub_path)
        return REFIT_ENOENT;
    *o = strdup(stub_path);
    return *o ? 0 : REFIT_ENOMEM;
}
static int s_has(const struct refit_cfg_view *v, const char *k)
{
    (void)v;
    (void)k;
    return 0;
}

static const struct refit_host stub_host = {
    sizeof(struct refit_host), REFIT_ABI_MAJOR, REFIT_ABI_MINOR, s_log, s_err, s_err, malloc, calloc, realloc,
    free, s_str, s_int, s_bool, s_double, s_size, s_dur, s_list, s_map, s_path, s_has};

static const struct refit_store_ops *load_file_plugin(void **handle)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/plugins/store/file/refit-store-file.so", getenv("REFIT_BUILD_ROOT"));
    void *h = dlopen(p, RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(h != NULL, "dlopen %s: %s", p, dlerror());
    refit_plugin_entry_fn entry = (refit_plugin_entry_fn)(uintptr_t)dlsym(h, REFIT_PLUGIN_ENTRY_SYMBOL);
    ck_assert_ptr_nonnull(entry);
    const struct refit_plugin *d = entry();
    ck_assert_uint_eq(d->kind, REFIT_PLUGIN_STORE);
    ck_assert_str_eq(d->name, "file");
    ck_assert_int_eq(d->load(&stub_host), 0);
    *handle = h;
    return d->ops;
}

START_TEST(file_plugin_on_stub_host)
{
    void *h;
    const struct refit_store_ops *ops = load_file_plugin(&h);
    ck_assert_uint_ge(ops->size, sizeof(struct refit_store_ops));
    char dir[700];
    snprintf(dir, sizeof(dir), "%s/stub", fx_dir());
    stub_path = dir;
    void *obj = calloc(1, ops->obj_size);
    ops->close(obj); /* never opened: all zero */
    struct refit_cfg_view view = {NULL, "store.file"};
    struct refit_store_open_args a = {sizeof(a), &view, "stubns", 1000, 1 << 20};
    ck_assert_int_eq(ops->open(obj, &a), 0);
    ck_assert_int_eq(ops->put(obj, "x/y", "hello", 5, 0), 0);
    void *v = NULL;
    size_t l = 0;
    ck_assert_int_eq(ops->get(obj, "x/y", &v, &l), 0);
    ck_assert(l == 5 && !memcmp(v, "hello", 5));
    free(v);
    ck_assert_int_eq(ops->get(obj, "x/z", &v, &l), REFIT_ENOENT);
    ck_assert(strstr(stub_msg, "x/z")); /* the message came through the host */
    ck_assert_uint_eq(ops->generation(obj), 1);
    ops->close(obj);
    free(obj);
    /* A failed open (a path that cannot be a directory) leaves an object
     * that close() handles. */
    stub_path = "/proc/self/status/not-a-dir";
    obj = calloc(1, ops->obj_size);
    ck_assert_int_lt(ops->open(obj, &a), 0);
    ops->close(obj);
    ops->close(obj); /* twice: still fine */
    free(obj);
    dlclose(h);
}
END_TEST

START_TEST(wrapper_checks)
{
    struct fx_store f;
    ck_assert_int_eq(fx_open(&f, "t-wrap", "store.plugin=nosuchstore", NULL), REFIT_ENOENT);
    ck_assert(strstr(refit_error_message(), "nosuchstore"));
    fx_close(&f);
    ck_assert_int_eq(fx_open(&f, "t-wrap", "store.max_value=100", NULL), 0);
    char comp[REFIT_STORE_MAX_COMPONENT + 2];
    memset(comp, 'c', sizeof(comp));
    comp[REFIT_STORE_MAX_COMPONENT] = '\0';
    ck_assert_int_eq(refit_store_put(f.s, comp, "x", 1), 0); /* 200 bytes: fine */
    comp[REFIT_STORE_MAX_COMPONENT] = 'c';
    comp[REFIT_STORE_MAX_COMPONENT + 1] = '\0';
    ck_assert_int_eq(refit_store_put(f.s, comp, "x", 1), REFIT_EINVAL);
    ck_assert_int_eq(refit_store_check_key("a:b/c-d_e.f"), 0);
    ck_assert_int_eq(refit_store_check_prefix(""), 0);
    ck_assert_int_eq(refit_store_check_prefix("a/"), 0);
    ck_assert_int_eq(refit_store_check_namespace("a:b"), REFIT_EINVAL);
    char big[101] = {0};
    ck_assert_int_eq(refit_store_put(f.s, "big", big, 101), REFIT_ETOOBIG);
    ck_assert(strstr(refit_error_message(), "store.max_value"));
    struct refit_store_put_item it[1] = {{"big", big, 101, 0}};
    ck_assert_int_eq(refit_store_put_many(f.s, it, 1), REFIT_ETOOBIG);
    ck_assert_int_eq(refit_store_cas(f.s, "big", NULL, 0, big, 101), REFIT_ETOOBIG);
    ck_assert_int_eq(refit_store_put_ttl(f.s, "t", "x", 1, -5), REFIT_EINVAL);
    /* Live records are remembered (and forgotten) by key. */
    uint64_t rt = refit_store_round_trips(f.s);
    ck_assert_int_eq(refit_store_put_live(f.s, "live/a", "1", 1, 0), 0);
    ck_assert_int_eq(refit_store_put_live(f.s, "live/a", "2", 1, 0), 0);
    ck_assert_uint_eq(refit_store_round_trips(f.s) - rt, 2);
    refit_store_forget(f.s, "live/a");
    refit_store_forget(f.s, "never");
    ck_assert_str_eq(refit_store_plugin_name(f.s), "file");
    ck_assert_uint_eq(refit_store_max_value(f.s), 100);
    fx_close(&f);
}
END_TEST

int main(void)
{
    fx_setup("file");
    Suite *s = suite_create("store-abi");
    TCase *tc = tcase_create("abi");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, file_plugin_on_stub_host);
    tcase_add_test(tc, wrapper_checks);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_ENV);
    return failed ? 1 : 0;
}
