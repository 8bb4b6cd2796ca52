/* tutil.h — helpers shared by the model tests: temp dirs, synthetic
 * checkpoints, byte matrices for building expected layouts by hand (from
 * ../shared/conversion.md, never through the engine), and an FP8 reference. */
#ifndef REFIT_TEST_MODEL_TUTIL_H
#define REFIT_TEST_MODEL_TUTIL_H

#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "refit/convert.h"
#include "refit/fp8.h"
#include "refit/safetensors.h"
#include "refit/status.h"

static inline char *t_mkdtemp(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char *p = malloc(strlen(base) + 32);
    ck_assert_ptr_nonnull(p);
    sprintf(p, "%s/refit-model-XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(p));
    return p;
}

static inline void t_rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        struct stat st;
        if (!lstat(p, &st) && S_ISDIR(st.st_mode))
            t_rmtree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static inline void t_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* ../shared/fixtures/<name> (malloc'ed), or NULL when absent (said on
 * stderr).  Inside a check test: return from the test on NULL (an exit
 * there is check's "early exit", an error, not a skip). */
static inline char *t_fixture_or_null(const char *name)
{
    const char *root = getenv("REFIT_SOURCE_ROOT");
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/../shared/fixtures/%s", root ? root : ".", name);
    struct stat st;
    if (stat(p, &st)) {
        fprintf(stderr, "fixture %s absent: skipped\n", p);
        free(p);
        return NULL;
    }
    return p;
}

/* The same in main(), before any suite exists: exit 77 (skipped). */
static inline char *t_fixture(const char *name)
{
    char *p = t_fixture_or_null(name);
    if (!p)
        exit(77);
    return p;
}

/* Deterministic pseudo-random bf16 in about [-1, 1] (never NaN). */
static inline uint16_t t_rand_bf16(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    float f = (float)((int32_t)(*s >> 32)) / 2147483648.0f;
    return refit_f32_to_bf16(f);
}

/* A synthetic checkpoint builder. */
struct t_ckpt {
    refit_st_writer_t *w;
    uint64_t seed;
    const char *omit;    /* a tensor left out */
    const char *reshape; /* a tensor written with one row too many */
    const char *nan;     /* a tensor holding a NaN */
};

static inline void t_ckpt_begin(struct t_ckpt *c, uint64_t seed)
{
    ck_assert_int_eq(refit_st_writer_create(&c->w), 0);
    c->seed = seed;
    c->omit = c->reshape = c->nan = NULL;
}

static inline void t_ckpt_add(struct t_ckpt *c, const char *name, enum refit_dtype dt, int64_t rows,
                              int64_t cols)
{
    if (c->omit && !strcmp(name, c->omit))
        return;
    if (c->reshape && !strcmp(name, c->reshape))
        rows++;
    int64_t shape[2] = {rows, cols};
    size_t n = (size_t)(rows * (cols ? cols : 1));
    void *buf = malloc(n * refit_dtype_size(dt));
    ck_assert_ptr_nonnull(buf);
    for (size_t i = 0; i < n; i++) {
        uint16_t b = t_rand_bf16(&c->seed);
        if (dt == REFIT_DTYPE_F32)
            ((float *)buf)[i] = refit_bf16_to_f32(b);
        else
            ((uint16_t *)buf)[i] = b;
    }
    if (c->nan && !strcmp(name, c->nan)) {
        if (dt == REFIT_DTYPE_F32)
            ((float *)buf)[n / 2] = NAN;
        else
            ((uint16_t *)buf)[n / 2] = 0x7fc0;
    }
    ck_assert_int_eq(refit_st_writer_add_copy(c->w, name, dt, cols ? 2 : 1, shape, buf,
                                              n * refit_dtype_size(dt)),
                     0);
    free(buf);
}

static inline void t_ckpt_addf(struct t_ckpt *c, enum refit_dtype dt, int64_t rows, int64_t cols,
                               const char *fmt, long a, long b)
{
    char name[512];
    snprintf(name, sizeof(name), fmt, a, b);
    t_ckpt_add(c, name, dt, rows, cols);
}

static inline void t_ckpt_end(struct t_ckpt *c, const char *dir)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/model.safetensors", dir);
    ck_assert_int_eq(refit_st_writer_write(c->w, p), 0);
    refit_st_writer_destroy(c->w);
}

/* A byte matrix: rows x cols elements of es bytes. */
struct t_mat {
    int64_t rows, cols;
    size_t es;
    char *d;
};

static inline struct t_mat t_mat_of(const struct refit_st_tensor *t)
{
    struct t_mat m = {t->shape[0], t->ndim == 2 ? t->shape[1] : 1, refit_dtype_size(t->dtype), NULL};
    m.d = malloc(t->nbytes ? t->nbytes : 1);
    memcpy(m.d, t->data, t->nbytes);
    return m;
}

/* Rows [r0, r0+n), columns [c0, c0+nc). */
static inline struct t_mat t_mat_slice(struct t_mat a, int64_t r0, int64_t n, int64_t c0, int64_t nc)
{
    ck_assert(r0 >= 0 && r0 + n <= a.rows && c0 >= 0 && c0 + nc <= a.cols);
    struct t_mat m = {n, nc, a.es, malloc((size_t)(n * nc) * a.es + 1)};
    for (int64_t r = 0; r < n; r++)
        memcpy(m.d + (size_t)(r * nc) * a.es, a.d + (size_t)((r0 + r) * a.cols + c0) * a.es,
               (size_t)nc * a.es);
    return m;
}

static inline struct t_mat t_mat_rows(struct t_mat a, int64_t r0, int64_t n)
{
    return t_mat_slice(a, r0, n, 0, a.cols);
}

/* The same, freeing a (for slices of temporaries). */
static inline struct t_mat t_mat_slice_f(struct t_mat a, int64_t r0, int64_t n, int64_t c0, int64_t nc)
{
    struct t_mat m = t_mat_slice(a, r0, n, c0, nc);
    free(a.d);
    return m;
}

static inline struct t_mat t_mat_rows_f(struct t_mat a, int64_t r0, int64_t n)
{
    return t_mat_slice_f(a, r0, n, 0, a.cols);
}

/* Concatenate b below a; frees both. */
static inline struct t_mat t_mat_cat(struct t_mat a, struct t_mat b)
{
    if (!a.d)
        return b;
    ck_assert_int_eq(a.cols, b.cols);
    struct t_mat m = {a.rows + b.rows, a.cols, a.es, malloc((size_t)((a.rows + b.rows) * a.cols) * a.es + 1)};
    memcpy(m.d, a.d, (size_t)(a.rows * a.cols) * a.es);
    memcpy(m.d + (size_t)(a.rows * a.cols) * a.es, b.d, (size_t)(b.rows * b.cols) * b.es);
    free(a.d);
    free(b.d);
    return m;
}

/* n zero rows appended. */
static inline struct t_mat t_mat_pad(struct t_mat a, int64_t n)
{
    struct t_mat z = {n, a.cols, a.es, calloc((size_t)(n * a.cols) + 1, a.es)};
    return t_mat_cat(a, z);
}

static inline void t_assert_bytes(const struct refit_st_tensor *got, const void *want, size_t n,
                                  const char *what)
{
    ck_assert_msg(got != NULL, "%s: tensor missing", what);
    ck_assert_msg(got->nbytes == n, "%s: %zu bytes, expected %zu", what, got->nbytes, n);
    ck_assert_msg(!memcmp(got->data, want, n), "%s: bytes differ", what);
}

static inline void t_assert_mat(const refit_st_file_t *f, const char *name, struct t_mat m)
{
    const struct refit_st_tensor *t = refit_st_find(f, name);
    ck_assert_msg(t != NULL, "%s: missing from the output", name);
    t_assert_bytes(t, m.d, (size_t)(m.rows * m.cols) * m.es, name);
    free(m.d);
}

/* The FP8 reference: one block at a time, straight from conversion.md. */
static inline void t_fp8_ref(const uint16_t *x, int64_t rows, int64_t cols, int deepgemm, double floor,
                             uint8_t *q, float *s)
{
    int64_t bc = (cols + 127) / 128;
    for (int64_t bi = 0; bi * 128 < rows; bi++)
        for (int64_t bj = 0; bj * 128 < cols; bj++) {
            float amax = 0;
            for (int64_t r = bi * 128; r < rows && r < bi * 128 + 128; r++)
                for (int64_t c = bj * 128; c < cols && c < bj * 128 + 128; c++)
                    amax = fmaxf(amax, fabsf(refit_bf16_to_f32(x[r * cols + c])));
            float sc;
            if (deepgemm)
                sc = fmaxf(amax, (float)floor) / 448.0f;
            else
                sc = fmaxf(amax / 448.0f, (float)floor);
            float inv = 1.0f / sc;
            s[bi * bc + bj] = sc;
            for (int64_t r = bi * 128; r < rows && r < bi * 128 + 128; r++)
                for (int64_t c = bj * 128; c < cols && c < bj * 128 + 128; c++) {
                    float v = refit_bf16_to_f32(x[r * cols + c]);
                    float y = deepgemm ? v * inv : fminf(fmaxf(v / sc, -448.0f), 448.0f);
                    q[r * cols + c] = refit_f32_to_e4m3(y);
                }
        }
}

/* Every tensor of a equals the same-named tensor of b, and b holds
 * `extra` more tensors than a. */
static inline void t_assert_subset(const char *pa, const char *pb, size_t extra)
{
    refit_st_file_t *a, *b;
    ck_assert_int_eq(refit_st_open(pa, &a), 0);
    ck_assert_int_eq(refit_st_open(pb, &b), 0);
    ck_assert_uint_eq(refit_st_count(a) + extra, refit_st_count(b));
    for (size_t i = 0; i < refit_st_count(a); i++) {
        const struct refit_st_tensor *x = refit_st_at(a, i);
        const struct refit_st_tensor *y = refit_st_find(b, x->name);
        ck_assert_msg(y != NULL, "%s missing in %s", x->name, pb);
        ck_assert_int_eq(x->dtype, y->dtype);
        ck_assert_int_eq(x->ndim, y->ndim);
        t_assert_bytes(y, x->data, x->nbytes, x->name);
    }
    refit_st_close(a);
    refit_st_close(b);
}

/* Every tensor of a equals the same-named tensor of b, and the name sets match. */
static inline void t_assert_same_files(const char *pa, const char *pb)
{
    t_assert_subset(pa, pb, 0);
}

#endif
