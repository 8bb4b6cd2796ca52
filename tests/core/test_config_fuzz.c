/* test_config_fuzz.c — structural fuzzing of the YAML reader: documents
 * built from random mappings, sequences, flow and block style, anchors
 * and aliases (aliases of aliases, bombs), long scalars, deep nesting and
 * variables, then byte mutations of them.  Every load must either succeed
 * or fail with REFIT_ECONFIG and a message that names the file (and, for a
 * YAML error, line and column); under the sanitizers a crash, leak or
 * out-of-bounds access fails the test.  REFIT_FUZZ_ITERS (default 4000)
 * and REFIT_FUZZ_SEED change the run; the run is bounded by iterations,
 * each document by the reader's own limits. */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refit/config.h"
#include "refit/status.h"
#include "../check_run.h"

static uint64_t rng;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t env_size(const char *name, size_t def)
{
    const char *v = getenv(name);
    return v && *v ? (size_t)strtoull(v, NULL, 0) : def;
}

/* A growing text buffer. */
struct buf {
    char *p;
    size_t n, cap;
};

static void put(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k >= 0 && (size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        b->cap = b->cap * 2 + (size_t)k + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
}

/* Keys of the real schema (so some documents get past validation) and
 * keys that are not. */
static const char *const sections[] = {"refit", "store", "transport", "model", "topology", "plugins", "junk"};
static const char *const keys[] = {"flush_every", "timeout", "mode", "namespace", "plugin", "skip",
                                   "fp8", "hf", "env", "receivers", "a", "b.c", "", "x y"};

static int n_anchors;

static void scalar(struct buf *b)
{
    switch (rnd() % 9) {
    case 0: put(b, "%llu", (unsigned long long)(rnd() % 100000)); break;
    case 1: put(b, "\"q%llu\\n\"", (unsigned long long)(rnd() % 1000)); break;
    case 2: put(b, "'single %llu'", (unsigned long long)(rnd() % 1000)); break;
    case 3: { /* long */
        size_t len = 1 + rnd() % 20000;
        if (b->cap - b->n < len + 8) {
            b->cap = b->n + len + 4096;
            b->p = realloc(b->p, b->cap);
        }
        memset(b->p + b->n, 'x', len);
        b->n += len;
        b->p[b->n] = 0;
        break;
    }
    case 4: put(b, "${REFIT_FUZZ_UNSET:-dflt%llu}", (unsigned long long)(rnd() % 10)); break;
    case 5: put(b, "true"); break;
    case 6: put(b, "4MiB"); break;
    case 7: put(b, "~"); break;
    default: put(b, "v%llu", (unsigned long long)(rnd() % 100)); break;
    }
}

static void value(struct buf *b, int depth);

static void anchor_or_alias(struct buf *b, int depth)
{
    if (n_anchors && rnd() % 3 == 0) {
        put(b, "*a%d", (int)(rnd() % (unsigned)(n_anchors + 1))); /* sometimes an unknown one */
        return;
    }
    int id = n_anchors++;
    put(b, "&a%d ", id);
    value(b, depth);
}

static void flow(struct buf *b, int depth)
{
    int map = rnd() % 2, n = (int)(rnd() % 5);
    put(b, map ? "{" : "[");
    for (int i = 0; i < n; i++) {
        if (i)
            put(b, ", ");
        if (map)
            put(b, "%s: ", keys[rnd() % (sizeof(keys) / sizeof(keys[0]))]);
        value(b, depth + 1);
    }
    put(b, map ? "}" : "]");
}

static void value(struct buf *b, int depth)
{
    unsigned k = (unsigned)(rnd() % 10);
    if (depth > 45 || k < 4)
        scalar(b);
    else if (k < 7)
        flow(b, depth);
    else
        anchor_or_alias(b, depth);
}

/* A block mapping of sections, each a block or flow mapping. */
static void document(struct buf *b)
{
    n_anchors = 0;
    int n = 1 + (int)(rnd() % 5);
    for (int i = 0; i < n; i++) {
        put(b, "%s:", sections[rnd() % (sizeof(sections) / sizeof(sections[0]))]);
        if (rnd() % 3 == 0) {
            put(b, " ");
            value(b, 1);
            put(b, "\n");
            continue;
        }
        put(b, "\n");
        int m = 1 + (int)(rnd() % 4);
        for (int j = 0; j < m; j++) {
            put(b, "  %s: ", keys[rnd() % (sizeof(keys) / sizeof(keys[0]))]);
            value(b, 2);
            put(b, "\n");
        }
    }
    if (rnd() % 8 == 0) { /* a bomb: each level aliases the one before 8 times */
        put(b, "bomb:\n  l0: &b0 [x, x, x, x, x, x, x, x]\n");
        for (int l = 1; l < 9; l++)
            put(b, "  l%d: &b%d [*b%d, *b%d, *b%d, *b%d, *b%d, *b%d, *b%d, *b%d]\n", l, l, l - 1, l - 1, l - 1,
                l - 1, l - 1, l - 1, l - 1, l - 1);
    }
    if (rnd() % 16 == 0) { /* deep nesting */
        int d = 20 + (int)(rnd() % 2000);
        put(b, "deep: ");
        for (int i = 0; i < d; i++)
            put(b, "[");
        if (rnd() % 2)
            for (int i = 0; i < d; i++)
                put(b, "]");
        put(b, "\n");
    }
}

static void mutate(struct buf *b)
{
    static const char interesting[] = "[]{}:,&*!|>-?'\"#%@`\n\t \\";
    int n = 1 + (int)(rnd() % 4);
    for (int i = 0; i < n && b->n; i++) {
        size_t at = (size_t)(rnd() % b->n);
        switch (rnd() % 4) {
        case 0: b->p[at] = interesting[rnd() % (sizeof(interesting) - 1)]; break;
        case 1: b->p[at] = (char)rnd(); break;
        case 2: b->n = at; break;
        default: memmove(b->p + at, b->p + at + 1, b->n - at - 1); b->n--; break;
        }
    }
}

START_TEST(fuzz_yaml)
{
    size_t iters = env_size("REFIT_FUZZ_ITERS", 4000);
    rng = env_size("REFIT_FUZZ_SEED", 0x9e3779b97f4a7c15ull) | 1;
    fprintf(stderr, "fuzz_yaml: %zu documents, seed %llu\n", iters, (unsigned long long)rng);
    size_t ok = 0, refused = 0;
    struct buf b = {malloc(4096), 0, 4096};
    for (size_t it = 0; it < iters; it++) {
        b.n = 0;
        b.p[0] = 0;
        document(&b);
        if (rnd() % 2)
            mutate(&b);
        refit_config_t *cfg = NULL;
        ck_assert_int_eq(refit_config_create(&cfg), 0);
        refit_error_clear();
        int rc = refit_config_load_string(cfg, "fuzz.yaml", b.p, b.n);
        if (rc == 0) {
            ok++;
        } else {
            refused++;
            ck_assert_msg(rc == REFIT_ECONFIG, "document %zu: status %d: %s", it, rc, refit_error_message());
            ck_assert_msg(!strncmp(refit_error_message(), "fuzz.yaml", 9), "document %zu: message without "
                          "the file: %s", it, refit_error_message());
        }
        refit_config_destroy(cfg);
    }
    free(b.p);
    fprintf(stderr, "fuzz_yaml: %zu loaded, %zu refused\n", ok, refused);
    ck_assert_uint_gt(ok, 0);
    ck_assert_uint_gt(refused, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config-fuzz");
    TCase *tc = tcase_create("fuzz");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, fuzz_yaml);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? EXIT_FAILURE : EXIT_SUCCESS;
}
