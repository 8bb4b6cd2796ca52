/* testplug.c — plugins for the loader tests.  One source, built several
 * times with -DVARIANT=... into refit-<kind>-<name>.so files that are
 * good or broken in exactly one way each. */
#include <stddef.h>

#include "refit/plugin.h"

struct test_ops {
    size_t size;
    int (*answer)(void);
};

static int answer(void)
{
    return 42;
}

static const struct test_ops ops = {sizeof(struct test_ops), answer};

static const struct refit_host *host;

__attribute__((unused)) static const struct refit_cfg_field fields[] = {
    {"depth", REFIT_CFG_INT, "3", 1, 10, NULL, "a test key"},
};

__attribute__((unused)) static int load_ok(const struct refit_host *h)
{
    host = h;
    return 0;
}

__attribute__((unused)) static int load_fail(const struct refit_host *h)
{
    return h->error_set(REFIT_EPLUGIN, "testplug: libfoo.so.3 is not installed");
}

#if VARIANT == 1 /* good */
#define ABI REFIT_ABI_MAJOR
#define KIND REFIT_PLUGIN_TRANSPORT
#define LOAD load_ok
#elif VARIANT == 2 /* wrong ABI major */
#define ABI (REFIT_ABI_MAJOR + 1)
#define KIND REFIT_PLUGIN_TRANSPORT
#define LOAD load_ok
#elif VARIANT == 3 /* a store plugin in a transport plugin's file */
#define ABI REFIT_ABI_MAJOR
#define KIND REFIT_PLUGIN_STORE
#define LOAD load_ok
#elif VARIANT == 5 /* load() fails */
#define ABI REFIT_ABI_MAJOR
#define KIND REFIT_PLUGIN_TRANSPORT
#define LOAD load_fail
#endif

#if VARIANT != 4
static const struct refit_plugin desc = {
    .abi_major = ABI,
    .abi_minor = REFIT_ABI_MINOR,
    .kind = KIND,
    .name = NAME,
    .version = "1.2.3",
    .description = "loader test plugin",
    .config = fields,
    .n_config = 1,
    .load = LOAD,
    .ops = &ops,
};

REFIT_PLUGIN_EXPORT const struct refit_plugin *refit_plugin_entry(void)
{
    (void)host;
    return &desc;
}
#else /* VARIANT 4: a shared object without the entry symbol */
REFIT_PLUGIN_EXPORT int not_the_entry(void)
{
    return answer() + (int)ops.size;
}
#endif
