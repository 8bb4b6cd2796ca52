/* test_names.c — tensor name patterns expanded (rf_model_name, core/src/
 * layout.c): {L} the layer, {k} and {e} the expert, every other byte as
 * written.  Expected names are spelled out by hand, and random patterns are
 * checked against a reference expansion written here with snprintf. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check_run.h"

/* internal to the core (core/src/model_int.h), linked from its library */
char *rf_model_name(const char *pattern, int64_t layer, int64_t expert);

static void expect(const char *pattern, int64_t layer, int64_t expert, const char *want)
{
    char *got = rf_model_name(pattern, layer, expert);
    ck_assert_ptr_nonnull(got);
    ck_assert_str_eq(got, want);
    free(got);
}

START_TEST(placeholders_and_literals)
{
    expect("model.layers.{L}.mlp.experts.{e}.down_proj.weight", 3, 17,
           "model.layers.3.mlp.experts.17.down_proj.weight");
    expect("decoder.layers.{L}.mlp.experts.local_experts.{k}.linear_fc1.weight", 60, 11,
           "decoder.layers.60.mlp.experts.local_experts.11.linear_fc1.weight");
    expect("model.embed_tokens.weight", -1, -1, "model.embed_tokens.weight");
    expect("", 1, 2, "");
    expect("{L}", 0, 0, "0");
    expect("{L}{e}{k}", 12, 345, "12345345");
    expect("{{L}}", 7, 0, "{7}");
    expect("a.{x}.{l}.{E}", 1, 2, "a.{x}.{l}.{E}");  /* not placeholders */
    expect("tail{", 1, 2, "tail{");
    expect("tail{L", 1, 2, "tail{L");
    expect("tail{L}", 1, 2, "tail1");
    expect("neg.{L}.{e}", -1, -25, "neg.-1.-25");        /* printed as given */
    expect("{L}.{e}", INT64_MAX, INT64_MIN, "9223372036854775807.-9223372036854775808");
}
END_TEST

/* The same expansion, written the obvious way. */
static void reference(const char *pat, int64_t layer, int64_t expert, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (const char *p = pat; *p;) {
        if (p[0] == '{' && p[1] && p[2] == '}' && strchr("Lke", p[1])) {
            n += (size_t)snprintf(out + n, cap - n, "%lld", (long long)(p[1] == 'L' ? layer : expert));
            p += 3;
        } else {
            out[n++] = *p++;
            out[n] = '\0';
        }
    }
}

START_TEST(random_patterns_match_reference)
{
    static const char alphabet[] = "{}Lkex.0";
    srand(99);
    for (int it = 0; it < 20000; it++) {
        char pat[40], want[40 * 21 + 1];
        int len = rand() % 39;
        for (int i = 0; i < len; i++)
            pat[i] = alphabet[rand() % (int)(sizeof(alphabet) - 1)];
        pat[len] = '\0';
        int64_t layer = rand() % 3 ? rand() % 200 : -(int64_t)(rand() % 3), expert = (int64_t)rand() * 7919 - 10;
        reference(pat, layer, expert, want, sizeof(want));
        char *got = rf_model_name(pat, layer, expert);
        ck_assert_ptr_nonnull(got);
        ck_assert_msg(!strcmp(got, want), "'%s' (%lld, %lld): '%s', want '%s'", pat, (long long)layer,
                      (long long)expert, got, want);
        free(got);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("names");
    TCase *tc = tcase_create("names");
    tcase_add_test(tc, placeholders_and_literals);
    tcase_add_test(tc, random_patterns_match_reference);
    suite_add_tcase(s, tc);
    return t_run_suite(s, CK_NORMAL) ? EXIT_FAILURE : EXIT_SUCCESS;
}
