/* config_value.c — the text of a configuration value as a number: integers,
 * numbers, booleans, sizes ("64KiB", "1MB"), durations ("250ms", "5m") and
 * enum choices ("a|b|c").  Pure functions of the text, so the lookup in
 * config.c and anything else reading a value agree on its meaning. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_int.h"

int rf_cfg_parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

int rf_cfg_parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

int rf_cfg_parse_bool(const char *s, bool *out)
{
    static const char *t[] = {"true", "yes", "on", "1"}, *f[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, t[i])) {
            *out = true;
            return 0;
        }
        if (!strcasecmp(s, f[i])) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static int scaled(const char *s, const char *const *units, const double *mult, size_t nu,
                        double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0)
        return -1;
    while (*end == ' ')
        end++;
    if (!*end) {
        *out = v;
        return 0;
    }
    for (size_t i = 0; i < nu; i++)
        if (!strcmp(end, units[i])) {
            *out = v * mult[i];
            return 0;
        }
    return -1;
}

int rf_cfg_parse_size(const char *s, double *out)
{
    static const char *u[] = {"B", "K", "KiB", "KB", "M", "MiB", "MB", "G", "GiB", "GB", "T", "TiB", "TB"};
    static const double m[] = {1, 1024.0, 1024.0, 1e3, 1048576.0, 1048576.0, 1e6,
                               1073741824.0, 1073741824.0, 1e9, 1099511627776.0, 1099511627776.0, 1e12};
    return scaled(s, u, m, sizeof(u) / sizeof(u[0]), out);
}

int rf_cfg_parse_duration(const char *s, double *out)
{
    static const char *u[] = {"us", "ms", "s", "m", "min", "h"};
    static const double m[] = {0.001, 1, 1000, 60000, 60000, 3600000};
    return scaled(s, u, m, sizeof(u) / sizeof(u[0]), out);
}

int rf_cfg_enum_has(const char *choices, const char *v)
{
    size_t vl = strlen(v);
    for (const char *p = choices; p && *p;) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == vl && !strncmp(p, v, l))
            return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}
