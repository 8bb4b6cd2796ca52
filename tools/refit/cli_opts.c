/* cli_opts.c — parsing and --help from a command's option table
 * (cli_opts.h). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/src/util.h"
#include "cli.h"
#include "cli_opts.h"
#include "refit/log.h"
#include "refit/status.h"

static const struct cli_opt *find_opt(const struct cli_spec *s, const char *arg, size_t len)
{
    for (size_t i = 0; i < s->n_opts; i++) {
        const struct cli_opt *o = &s->opts[i];
        if ((strlen(o->name) == len && !strncmp(o->name, arg, len)) ||
            (o->alias && strlen(o->alias) == len && !strncmp(o->alias, arg, len)))
            return o;
    }
    return NULL;
}

/* Whether v is one of the '|'-separated words of choices. */
static int is_choice(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *e = strchr(p, '|');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (k == n && !strncmp(p, v, n))
            return 1;
        p = e ? e + 1 : p + k;
    }
    return 0;
}

static int bad_value(const struct cli_opt *o, const char *v, const char *want)
{
    return refit_error_set(REFIT_EINVAL, "%s '%s': expected %s", o->name, v, want);
}

/* Parse one unsigned decimal in [lo, hi]. */
static int parse_u64(const struct cli_opt *o, const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char range[96];
    snprintf(range, sizeof(range), "an integer in [%" PRIu64 ", %" PRIu64 "]", lo, hi);
    if (!*v || *v == '-' || *v == '+')
        return bad_value(o, v, range);
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || x < lo || x > hi)
        return bad_value(o, v, range);
    *out = x;
    return 0;
}

/* Store v (the option's value; NULL for a flag) where o says. */
static int store(const struct cli_opt *o, const char *v, void *out)
{
    char *at = (char *)out + o->off;
    switch (o->type) {
    case CLI_STR:
        *(const char **)at = v;
        return 0;
    case CLI_FLAG:
        *(int *)at = 1;
        return 0;
    case CLI_CHOICE:
        if (!is_choice(o->choices, v))
            return bad_value(o, v, o->choices);
        *(const char **)at = v;
        return 0;
    case CLI_LOG: {
        int l = is_choice(o->choices, v) ? refit_log_parse_level(v) : -1;
        if (l < 0)
            return bad_value(o, v, o->choices);
        refit_log_set_level(l);
        return 0;
    }
    case CLI_LIST: {
        struct cli_list *l = (struct cli_list *)(void *)at;
        if (l->n >= l->max)
            return refit_error_set(REFIT_EINVAL, "%s: at most %zu of them", o->name, l->max);
        l->v[l->n++] = v;
        return 0;
    }
    case CLI_INT: {
        char range[96];
        snprintf(range, sizeof(range), "an integer in [%" PRId64 ", %" PRId64 "]", o->lo, o->hi);
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (!*v || errno || *end || x < o->lo || x > o->hi || x < INT32_MIN || x > INT32_MAX)
            return bad_value(o, v, range);
        *(int *)at = (int)x;
        return 0;
    }
    case CLI_DBL: {
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (!*v || errno || *end || !isfinite(x))
            return bad_value(o, v, "a number");
        memcpy(at, &x, sizeof(x));
        return 0;
    }
    case CLI_U64: {
        uint64_t x = 0;
        int rc = parse_u64(o, v, (uint64_t)o->lo, (uint64_t)o->hi, &x);
        if (!rc)
            memcpy(at, &x, sizeof(x));
        return rc;
    }
    }
    return refit_error_set(REFIT_EINVAL, "%s: option of unknown type %d", o->name, (int)o->type);
}

/* An unknown option: the error names it and, for a typo, the option of
 * the table it is closest to. */
static int unknown_option(const struct cli_spec *s, const char *a, size_t len)
{
    const char *near = NULL;
    size_t best = len <= 4 ? 2 : 3; /* within 1 ("--tpp": "--tp") or 2 for longer names */
    char *given = malloc(len + 1);
    if (given) {
        memcpy(given, a, len);
        given[len] = 0;
    }
    for (size_t i = 0; given && i < s->n_opts; i++) {
        size_t d = rf_edit_distance(given, s->opts[i].name, best);
        /* On a tie, a name of the typed length wins: a swap keeps the length. */
        int same_len = strlen(s->opts[i].name) == len && (!near || strlen(near) != len);
        if (d < best || (near && d == best && same_len)) {
            near = s->opts[i].name;
            best = d;
        }
    }
    free(given);
    if (near)
        return refit_error_set(REFIT_EINVAL, "unknown option '%.*s'; did you mean '%s'? (see refit %s --help)",
                               (int)len, a, near, s->cmd);
    return refit_error_set(REFIT_EINVAL, "unknown option '%.*s' (see refit %s --help)", (int)len, a, s->cmd);
}

static int apply_defaults(const struct cli_spec *s, void *out)
{
    for (size_t i = 0; i < s->n_opts; i++) {
        const struct cli_opt *o = &s->opts[i];
        int rc = o->def ? store(o, o->def, out) : 0;
        if (rc)
            return refit_error_push(rc, "default of %s", o->name);
    }
    return 0;
}

int cli_opts_parse(const struct cli_spec *s, int argc, char **argv, void *out, const char **pos,
                   int *n_pos)
{
    int np = 0;
    if (n_pos)
        *n_pos = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cli_opts_help(s, stdout);
            return CLI_HELP;
        }
    int rc = apply_defaults(s, out);
    for (int i = 1; !rc && i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            if (np >= s->max_pos)
                return refit_error_set(REFIT_EINVAL, "unexpected argument '%s' (see refit %s --help)", a,
                                       s->cmd);
            pos[np++] = a;
            continue;
        }
        const char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const struct cli_opt *o = find_opt(s, a, len);
        if (!o)
            return unknown_option(s, a, len);
        const char *v = NULL;
        if (o->type == CLI_FLAG) {
            if (eq)
                return refit_error_set(REFIT_EINVAL, "%s takes no value", o->name);
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            return refit_error_set(REFIT_EINVAL, "%s needs a value (%s)", o->name, o->meta ? o->meta : "");
        }
        rc = store(o, v, out);
    }
    if (!rc && np < s->min_pos) {
        cli_opts_help(s, stderr);
        rc = refit_error_set(REFIT_EINVAL, "refit %s needs %s", s->cmd, s->args ? s->args : "");
    }
    if (n_pos)
        *n_pos = np;
    return rc;
}

/* "--tp N", "--config, -c FILE" */
static void opt_label(const struct cli_opt *o, char *buf, size_t n)
{
    int k = snprintf(buf, n, "%s%s%s", o->name, o->alias ? ", " : "", o->alias ? o->alias : "");
    if (o->meta && k >= 0 && (size_t)k < n)
        snprintf(buf + k, n - (size_t)k, " %s", o->meta);
}

void cli_opts_help(const struct cli_spec *s, FILE *f)
{
    fprintf(f, "usage: refit %s%s%s%s\n", s->cmd, s->args ? " " : "", s->args ? s->args : "",
            s->n_opts ? " [options]" : "");
    if (s->about)
        fputs(s->about, f);
    if (!s->n_opts)
        return;
    fprintf(f, "options:\n");
    for (size_t i = 0; i < s->n_opts; i++) {
        const struct cli_opt *o = &s->opts[i];
        char label[64], extra[160] = "";
        opt_label(o, label, sizeof(label));
        size_t k = 0;
        if (o->type == CLI_INT || o->type == CLI_U64)
            k += (size_t)snprintf(extra, sizeof(extra), " [%" PRId64 ", %" PRId64 "]", o->lo, o->hi);
        else if (o->type == CLI_CHOICE)
            k += (size_t)snprintf(extra, sizeof(extra), " (%s)", o->choices);
        if (o->def && k < sizeof(extra))
            snprintf(extra + k, sizeof(extra) - k, "; default %s", o->def);
        if (strlen(label) > 24)
            fprintf(f, "  %s\n  %-24s %s%s\n", label, "", o->help, extra);
        else
            fprintf(f, "  %-24s %s%s\n", label, o->help, extra);
    }
}

int cli_config_from(struct cli_common *c, const char *path, const struct cli_list *set)
{
    memset(c, 0, sizeof(*c));
    c->config_path = path;
    int rc = refit_config_create(&c->cfg);
    if (!rc && path)
        rc = refit_config_load(c->cfg, path);
    if (!rc)
        rc = refit_config_apply_env(c->cfg, NULL);
    for (size_t i = 0; !rc && set && i < set->n; i++)
        rc = refit_config_set(c->cfg, set->v[i], "--set");
    if (!rc)
        rc = refit_loader_create(c->cfg, &c->loader);
    return rc;
}
