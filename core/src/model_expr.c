/* model_expr.c — the expressions of a model plugin's spec table: shapes
 * ("heads*(qk_nope_head_dim+qk_rope_head_dim)"), conditions
 * ("!tie_word_embeddings", "q_lora_rank > 0") and role arguments, over the
 * dimensions the plugin declares.  A small recursive-descent parser with C's
 * precedence; the core gives names no meaning of its own. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"
#include "refit/status.h"

struct px {
    const char *s, *p;
    const char *const *names;
    const int64_t *vals;
    size_t n;
    int depth;
};

static int px_err(const struct px *x, const char *what)
{
    return refit_error_set(REFIT_EPROTO, "expression '%s': %s at offset %zu", x->s, what,
                           (size_t)(x->p - x->s));
}

static void skip_ws(struct px *x)
{
    while (*x->p == ' ' || *x->p == '\t')
        x->p++;
}

static int expr_or(struct px *x, int64_t *v);

static int primary(struct px *x, int64_t *v)
{
    skip_ws(x);
    if (++x->depth > 64)
        return px_err(x, "nested too deeply");
    int rc = 0;
    char c = *x->p;
    if (c == '(') {
        x->p++;
        rc = expr_or(x, v);
        skip_ws(x);
        if (!rc && *x->p++ != ')')
            rc = px_err(x, "')' expected");
    } else if (c == '!' || c == '-') {
        x->p++;
        rc = primary(x, v);
        if (!rc)
            *v = c == '!' ? !*v : -*v;
    } else if (isdigit((unsigned char)c)) {
        char *end;
        long long n = strtoll(x->p, &end, 10);
        x->p = end;
        *v = n;
    } else if (isalpha((unsigned char)c) || c == '_') {
        const char *b = x->p;
        while (isalnum((unsigned char)*x->p) || *x->p == '_')
            x->p++;
        size_t len = (size_t)(x->p - b);
        size_t i = 0;
        while (i < x->n && (strncmp(x->names[i], b, len) || x->names[i][len]))
            i++;
        if (i == x->n)
            rc = refit_error_set(REFIT_EPROTO, "expression '%s': '%.*s' is not a declared dimension", x->s,
                                 (int)len, b);
        else
            *v = x->vals[i];
    } else {
        rc = px_err(x, c ? "a value expected" : "unexpected end");
    }
    x->depth--;
    return rc;
}

static int term(struct px *x, int64_t *v)
{
    int rc = primary(x, v);
    for (skip_ws(x); !rc && (*x->p == '*' || *x->p == '/' || *x->p == '%'); skip_ws(x)) {
        char op = *x->p++;
        int64_t r;
        rc = primary(x, &r);
        if (rc)
            break;
        if (op != '*' && r == 0)
            return px_err(x, "division by zero");
        *v = op == '*' ? *v * r : op == '/' ? *v / r : *v % r;
    }
    return rc;
}

static int sum(struct px *x, int64_t *v)
{
    int rc = term(x, v);
    for (skip_ws(x); !rc && (*x->p == '+' || *x->p == '-'); skip_ws(x)) {
        char op = *x->p++;
        int64_t r;
        rc = term(x, &r);
        if (!rc)
            *v = op == '+' ? *v + r : *v - r;
    }
    return rc;
}

/* A comparison operator at x->p: its length and code, or 0. */
static int cmp_op(const char *p, int *code)
{
    static const char *ops[] = {"==", "!=", "<=", ">=", "<", ">"};
    for (int i = 0; i < 6; i++)
        if (!strncmp(p, ops[i], strlen(ops[i]))) {
            *code = i;
            return (int)strlen(ops[i]);
        }
    return 0;
}

static int compare(struct px *x, int64_t *v)
{
    int rc = sum(x, v), code, len;
    for (skip_ws(x); !rc && (len = cmp_op(x->p, &code)); skip_ws(x)) {
        x->p += len;
        int64_t r;
        rc = sum(x, &r);
        if (rc)
            break;
        int64_t a = *v;
        *v = code == 0 ? a == r : code == 1 ? a != r : code == 2 ? a <= r : code == 3 ? a >= r
           : code == 4 ? a < r : a > r;
    }
    return rc;
}

static int expr_and(struct px *x, int64_t *v)
{
    int rc = compare(x, v);
    for (skip_ws(x); !rc && !strncmp(x->p, "&&", 2); skip_ws(x)) {
        x->p += 2;
        int64_t r;
        rc = compare(x, &r);
        *v = *v && r;
    }
    return rc;
}

static int expr_or(struct px *x, int64_t *v)
{
    int rc = expr_and(x, v);
    for (skip_ws(x); !rc && !strncmp(x->p, "||", 2); skip_ws(x)) {
        x->p += 2;
        int64_t r;
        rc = expr_and(x, &r);
        *v = *v || r;
    }
    return rc;
}

int rf_expr_eval(const char *expr, const char *const *names, const int64_t *vals, size_t n, int64_t *out)
{
    if (!expr)
        return refit_error_set(REFIT_EPROTO, "missing expression");
    struct px x = {expr, expr, names, vals, n, 0};
    int rc = expr_or(&x, out);
    skip_ws(&x);
    if (!rc && *x.p)
        rc = px_err(&x, "unexpected text");
    return rc;
}
