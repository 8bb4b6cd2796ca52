/* test_st_fuzz.c — thousands of mutated copies of a valid safetensors file
 * (bit flips, truncations, header edits, length-field edits) fed to the
 * reader: each must fail cleanly with a message or load a file whose every
 * tensor lies inside the buffer.  Each image sits in a malloc of exactly
 * its length, so under ASan a read past it is a crash, that is a failure. */
#include <check.h>

#include "refit/safetensors.h"
#include "refit/status.h"
#include "tensor_test.h"
#include "../check_run.h"

#define ITERATIONS 12000

static unsigned char *base;
static size_t base_len, base_hlen;

/* The seed file: several dtypes and ranks, an empty tensor, metadata. */
static void make_base(void)
{
    char *dir = tt_tmpdir(), *p = NULL;
    ck_assert_int_ge(asprintf(&p, "%s/seed.safetensors", dir), 0);
    refit_st_writer_t *w;
    ck_assert_int_eq(refit_st_writer_create(&w), 0);
    static unsigned char data[512];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 7);
    ck_assert_int_eq(refit_st_writer_add(w, "model.embed.weight", REFIT_DTYPE_BF16, 2,
                                         (int64_t[]){8, 4}, data, 64), 0);
    ck_assert_int_eq(refit_st_writer_add(w, "layers.0.norm", REFIT_DTYPE_F32, 1, (int64_t[]){5},
                                         data, 20), 0);
    ck_assert_int_eq(refit_st_writer_add(w, "q", REFIT_DTYPE_F8_E4M3, 3, (int64_t[]){2, 3, 5},
                                         data, 30), 0);
    ck_assert_int_eq(refit_st_writer_add(w, "q_scale_inv", REFIT_DTYPE_F32, 2,
                                         (int64_t[]){1, 1}, data, 4), 0);
    ck_assert_int_eq(refit_st_writer_add(w, "ids", REFIT_DTYPE_I64, 1, (int64_t[]){3}, data, 24),
                     0);
    ck_assert_int_eq(refit_st_writer_add(w, "none", REFIT_DTYPE_U8, 2, (int64_t[]){0, 9}, NULL,
                                         0), 0);
    ck_assert_int_eq(refit_st_writer_add(w, "mask", REFIT_DTYPE_BOOL, 0, NULL, data, 1), 0);
    ck_assert_int_eq(refit_st_writer_set_metadata(w, "format", "pt"), 0);
    ck_assert_int_eq(refit_st_writer_write(w, p), 0);
    refit_st_writer_destroy(w);
    base = (unsigned char *)tt_read_file(p, &base_len);
    ck_assert_ptr_nonnull(base);
    for (int i = 7; i >= 0; i--)
        base_hlen = base_hlen << 8 | base[i];
    free(p);
    tt_rmdir(dir);
}

static const char header_chars[] = "{}[]\",:-0123456789eE.+ \\u_aFBIU";

/* One mutated image in a fresh malloc of exactly *len bytes. */
static unsigned char *mutate(uint64_t *s, size_t *len)
{
    size_t n = base_len;
    unsigned char *b = malloc(base_len + 64);
    memcpy(b, base, base_len);
    size_t hend = 8 + base_hlen;
    int edits = 1 + (int)(tt_rand(s) % 4);
    for (int e = 0; e < edits; e++) {
        switch (tt_rand(s) % 8) {
        case 0: /* bit flip anywhere */
            b[tt_rand(s) % n] ^= (unsigned char)(1u << (tt_rand(s) % 8));
            break;
        case 1: /* bit flip in the header */
        case 2:
            b[8 + tt_rand(s) % base_hlen] ^= (unsigned char)(1u << (tt_rand(s) % 8));
            break;
        case 3: /* a header byte replaced by JSON-ish syntax */
            b[8 + tt_rand(s) % base_hlen] = (unsigned char)header_chars[tt_rand(s) % (sizeof(header_chars) - 1)];
            break;
        case 4: { /* a digit changed: shapes and offsets move */
            size_t start = 8 + tt_rand(s) % base_hlen;
            for (size_t k = 0; k < base_hlen; k++) {
                size_t i = 8 + (start - 8 + k) % base_hlen;
                if (b[i] >= '0' && b[i] <= '9') {
                    b[i] = (unsigned char)('0' + tt_rand(s) % 10);
                    break;
                }
            }
            break;
        }
        case 5: /* truncation */
            n = tt_rand(s) % (n + 1);
            break;
        case 6: { /* the length field: off by a little, or anything */
            uint64_t l = tt_rand(s) & 1 ? base_hlen + (tt_rand(s) % 17) - 8 : tt_rand(s) >> (tt_rand(s) % 64);
            for (int i = 0; i < 8 && i < (int)n; i++)
                b[i] = (unsigned char)(l >> (8 * i));
            break;
        }
        case 7: /* a header byte deleted (the length field left as it was) */
            if (hend < n) {
                size_t i = 8 + tt_rand(s) % base_hlen;
                memmove(b + i, b + i + 1, n - i - 1);
                n--;
            }
            break;
        }
        if (n < 8)
            break;
    }
    unsigned char *exact = malloc(n ? n : 1);
    memcpy(exact, b, n);
    free(b);
    *len = n;
    return exact;
}

/* What a successful open promises, checked on the mutant (buf NULL: a
 * mapping, whose bounds only the byte-by-byte reads check). */
static void check_loaded(const refit_st_file_t *f, const unsigned char *buf, size_t len)
{
    const unsigned char *prev_end = NULL;
    for (size_t i = 0; i < refit_st_count(f); i++) {
        const struct refit_st_tensor *t = refit_st_at(f, i);
        const unsigned char *d = t->data;
        ck_assert(t->ndim >= 0 && t->ndim <= REFIT_MAX_DIMS);
        size_t want = refit_dtype_size(t->dtype);
        ck_assert_uint_gt(want, 0);
        for (int k = 0; k < t->ndim; k++)
            want *= (size_t)t->shape[k];
        ck_assert_uint_eq(want, t->nbytes);
        if (buf)
            ck_assert(d >= buf + 8 && d + t->nbytes <= buf + len);
        if (t->nbytes) {
            ck_assert(!prev_end || d >= prev_end); /* no overlap */
            prev_end = d + t->nbytes;
        }
        ck_assert_ptr_eq(refit_st_find(f, t->name), t);
        volatile unsigned char sink = 0; /* touch every byte: ASan checks */
        for (size_t k = 0; k < t->nbytes; k++)
            sink ^= d[k];
        (void)sink;
    }
}

START_TEST(mutations_never_crash)
{
    make_base();
    uint64_t s = 0x5eed;
    size_t ok = 0, bad = 0;
    for (int it = 0; it < ITERATIONS; it++) {
        size_t len;
        unsigned char *buf = mutate(&s, &len);
        refit_st_file_t *f = NULL;
        int rc = refit_st_open_memory(buf, len, "mutant.safetensors", &f);
        if (rc == 0) {
            check_loaded(f, buf, len);
            refit_st_close(f);
            ok++;
        } else {
            if (rc != REFIT_EPROTO || f != NULL || !strstr(refit_error_message(), "mutant.safetensors"))
                ck_abort_msg("iteration %d: rc %d, message '%s'", it, rc, refit_error_message());
            bad++;
        }
        free(buf);
    }
    fprintf(stderr, "%d mutants: %zu loaded, %zu refused\n", ITERATIONS, ok, bad);
    /* Both outcomes must really occur, or the mutations test nothing. */
    ck_assert_uint_gt(ok, ITERATIONS / 50);
    ck_assert_uint_gt(bad, ITERATIONS / 2);
    free(base);
}
END_TEST

/* The same through real files, for the mmap path. */
START_TEST(mutated_files_never_crash)
{
    make_base();
    char *dir = tt_tmpdir(), *p = NULL;
    ck_assert_int_ge(asprintf(&p, "%s/m.safetensors", dir), 0);
    uint64_t s = 0xf11e;
    for (int it = 0; it < 300; it++) {
        size_t len;
        unsigned char *buf = mutate(&s, &len);
        FILE *fp = fopen(p, "wb");
        if (len)
            fwrite(buf, 1, len, fp);
        fclose(fp);
        refit_st_file_t *f = NULL;
        int rc = refit_st_open(p, &f);
        if (rc == 0) {
            check_loaded(f, NULL, 0); /* bounds: touching each byte of the mapping */
            refit_st_close(f);
        } else if (!strstr(refit_error_message(), p)) {
            ck_abort_msg("iteration %d: message '%s' does not name the file", it,
                         refit_error_message());
        }
        free(buf);
    }
    free(p);
    tt_rmdir(dir);
    free(base);
}
END_TEST

/* The index of a sharded checkpoint is outside input too. */
START_TEST(mutated_index_never_crashes)
{
    make_base();
    char *dir = tt_tmpdir(), *p = NULL, *idx = NULL;
    ck_assert_int_ge(asprintf(&p, "%s/a.safetensors", dir), 0);
    ck_assert_int_ge(asprintf(&idx, "%s/model.safetensors.index.json", dir), 0);
    FILE *fp = fopen(p, "wb");
    fwrite(base, 1, base_len, fp);
    fclose(fp);
    const char *good = "{\"metadata\":{\"total_size\":143},\"weight_map\":{"
                       "\"q\":\"a.safetensors\",\"ids\":\"a.safetensors\","
                       "\"model.embed.weight\":\"a.safetensors\"}}";
    size_t n = strlen(good);
    uint64_t s = 0x1dc;
    int ok = 0;
    for (int it = 0; it < 600; it++) {
        char buf[512];
        memcpy(buf, good, n);
        size_t len = n;
        for (int e = 0; e < 1 + (int)(tt_rand(&s) % 3) && len; e++) {
            size_t i = tt_rand(&s) % len;
            switch (tt_rand(&s) % 3) {
            case 0: buf[i] ^= (char)(1 << (tt_rand(&s) % 8)); break;
            case 1: buf[i] = header_chars[tt_rand(&s) % (sizeof(header_chars) - 1)]; break;
            default: len = i; break;
            }
        }
        fp = fopen(idx, "wb");
        fwrite(buf, 1, len, fp);
        fclose(fp);
        refit_st_checkpoint_t *c = NULL;
        int rc = refit_st_checkpoint_open(dir, &c);
        if (rc == 0) {
            for (size_t i = 0; i < refit_st_checkpoint_count(c); i++)
                ck_assert_ptr_eq(refit_st_checkpoint_find(c, refit_st_checkpoint_at(c, i)->name),
                                 refit_st_checkpoint_at(c, i));
            refit_st_checkpoint_close(c);
            ok++;
        } else if (!refit_error_message()[0] || c) {
            ck_abort_msg("iteration %d: rc %d without a message", it, rc);
        }
    }
    ck_assert_int_gt(ok, 0);
    free(p);
    free(idx);
    tt_rmdir(dir);
    free(base);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("safetensors-fuzz");
    TCase *tc = tcase_create("mutations");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, mutations_never_crash);
    tcase_add_test(tc, mutated_files_never_crash);
    tcase_add_test(tc, mutated_index_never_crashes);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? 1 : 0;
}
