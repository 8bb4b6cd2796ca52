/* model_source.c — a trainer framework's spellings of tensor names, as the
 * model plugin's source layouts give them (struct refit_source_layout):
 * wrapper prefixes stripped, aliases rewritten to the spec's patterns.  The
 * core knows no framework: the rules are the plugin's data. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"
#include "refit/status.h"

#define MAX_CAPS 8
#define MAX_CAP_NAME 16

struct caps {
    int n;
    char name[MAX_CAPS][MAX_CAP_NAME];
    const char *at[MAX_CAPS];
    size_t len[MAX_CAPS];
};

/* The capture name of a `{x}` at p (p points at '{'): its length and the
 * pattern position after '}'; 0 when p is no valid capture. */
static size_t cap_name(const char *p, const char **after)
{
    size_t n = 0;
    while (p[1 + n] && p[1 + n] != '}' && p[1 + n] != '{')
        n++;
    if (p[1 + n] != '}' || n == 0 || n >= MAX_CAP_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[1 + i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return 0;
    }
    *after = p + n + 2;
    return n;
}

static int is_number_cap(const char *name, size_t n)
{
    return n == 1 && (name[0] == 'k' || name[0] == 'e' || name[0] == 'L');
}

static int cap_find(const struct caps *c, const char *name, size_t n)
{
    for (int i = 0; i < c->n; i++)
        if (strlen(c->name[i]) == n && !strncmp(c->name[i], name, n))
            return i;
    return -1;
}

/* Whether s matches pattern p from here, filling captures (backtracking;
 * patterns and names are short). */
static int match(const char *p, const char *s, struct caps *c)
{
    while (*p && *p != '{') {
        if (*p++ != *s++)
            return 0;
    }
    if (!*p)
        return !*s;
    const char *after;
    size_t n = cap_name(p, &after);
    if (!n || c->n >= MAX_CAPS)
        return 0;
    int slot = c->n++;
    memcpy(c->name[slot], p + 1, n);
    c->name[slot][n] = 0;
    size_t max = strlen(s);
    if (is_number_cap(p + 1, n)) {
        max = 0;
        while (s[max] >= '0' && s[max] <= '9')
            max++;
    }
    for (size_t len = max; len >= 1; len--) {
        c->at[slot] = s;
        c->len[slot] = len;
        if (match(after, s + len, c))
            return 1;
    }
    c->n--;
    return 0;
}

/* `to` with the captures substituted; malloc'ed, NULL on no memory. */
static char *expand(const char *to, const struct caps *c)
{
    size_t cap = strlen(to) + 1;
    for (int i = 0; i < c->n; i++)
        cap += c->len[i];
    char *out = malloc(cap), *o = out;
    if (!out)
        return NULL;
    for (const char *p = to; *p;) {
        const char *after;
        size_t n = *p == '{' ? cap_name(p, &after) : 0;
        int i = n ? cap_find(c, p + 1, n) : -1;
        if (i < 0) {
            *o++ = *p++;
            continue;
        }
        memcpy(o, c->at[i], c->len[i]);
        o += c->len[i];
        p = after;
    }
    *o = 0;
    return out;
}

static const struct refit_source_layout *source_layout(const refit_model_t *m, const char *layout)
{
    const struct refit_model_spec *s = m->spec;
    if (s->size < offsetof(struct refit_model_spec, n_sources) + sizeof(s->n_sources))
        return NULL;
    for (size_t i = 0; i < s->n_sources; i++)
        if (!strcmp(s->sources[i].name, layout ? layout : "megatron"))
            return &s->sources[i];
    return NULL;
}

char *refit_model_source_name(const refit_model_t *m, const char *layout, const char *name)
{
    const struct refit_source_layout *sl = m ? source_layout(m, layout) : NULL;
    if (!sl)
        return strdup(name);
    for (bool again = true; again;) {
        again = false;
        for (size_t i = 0; i < sl->n_strip; i++) {
            size_t n = strlen(sl->strip[i]);
            if (n && !strncmp(name, sl->strip[i], n)) {
                name += n;
                again = true;
            }
        }
    }
    for (size_t i = 0; i < sl->n_aliases; i++) {
        struct caps c = {0};
        if (match(sl->aliases[i].from, name, &c))
            return expand(sl->aliases[i].to, &c);
    }
    return strdup(name);
}

/* Every capture of `to` appears in `from`, and every `{` opens a capture. */
static int alias_check(const struct refit_source_alias *a)
{
    struct caps c = {0};
    const char *after;
    if (!a->from || !a->to)
        return -1;
    for (const char *p = a->from; *p; p++) {
        if (*p != '{')
            continue;
        size_t n = cap_name(p, &after);
        if (!n || c.n >= MAX_CAPS || cap_find(&c, p + 1, n) >= 0)
            return -1;
        memcpy(c.name[c.n], p + 1, n);
        c.name[c.n++][n] = 0;
    }
    for (const char *p = a->to; *p; p++) {
        if (*p != '{')
            continue;
        size_t n = cap_name(p, &after);
        if (!n || cap_find(&c, p + 1, n) < 0)
            return -1;
    }
    return 0;
}

int rf_model_sources_check(const refit_model_t *m)
{
    const struct refit_model_spec *s = m->spec;
    if (s->size < offsetof(struct refit_model_spec, n_sources) + sizeof(s->n_sources))
        return 0;
    if (!s->sources && s->n_sources)
        return refit_error_set(REFIT_EPROTO, "source layouts: NULL table of %zu", s->n_sources);
    for (size_t i = 0; i < s->n_sources; i++) {
        const struct refit_source_layout *sl = &s->sources[i];
        if (!sl->name || (!sl->strip && sl->n_strip) || (!sl->aliases && sl->n_aliases))
            return refit_error_set(REFIT_EPROTO, "source layout %zu: no name or a NULL table", i);
        for (size_t j = 0; j < sl->n_strip; j++)
            if (!sl->strip[j] || !*sl->strip[j])
                return refit_error_set(REFIT_EPROTO, "source layout '%s': empty prefix %zu", sl->name, j);
        for (size_t j = 0; j < sl->n_aliases; j++)
            if (alias_check(&sl->aliases[j]))
                return refit_error_set(REFIT_EPROTO,
                                       "source layout '%s': alias '%s' -> '%s' is not a valid pair of patterns",
                                       sl->name, sl->aliases[j].from ? sl->aliases[j].from : "(null)",
                                       sl->aliases[j].to ? sl->aliases[j].to : "(null)");
    }
    return 0;
}
