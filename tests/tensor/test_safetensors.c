/* test_safetensors.c — the safetensors reader, writer and checkpoint
 * directories on files built here: round trips of every dtype, the exact
 * header the writer emits, and each kind of corrupt file with the error
 * naming the file and the tensor. */
#include <check.h>
#include <dirent.h>

#include "refit/safetensors.h"
#include "refit/status.h"
#include "tensor_test.h"
#include "../check_run.h"

static char *dir;

static void setup(void)
{
    dir = tt_tmpdir();
    ck_assert_ptr_nonnull(dir);
}

static void teardown(void)
{
    tt_rmdir(dir);
    dir = NULL;
}

static char *path_in(const char *name)
{
    char *p = NULL;
    ck_assert_int_ge(asprintf(&p, "%s/%s", dir, name), 0);
    return p;
}

/* A file from a header text and data, the length field as given (or the
 * real one when hlen is UINT64_MAX). */
static char *write_raw(const char *name, const char *hdr, uint64_t hlen, const void *data,
                       size_t n)
{
    char *p = path_in(name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    uint64_t l = hlen == UINT64_MAX ? strlen(hdr) : hlen;
    unsigned char lb[8];
    for (int i = 0; i < 8; i++)
        lb[i] = (unsigned char)(l >> (8 * i));
    fwrite(lb, 1, 8, f);
    fwrite(hdr, 1, strlen(hdr), f);
    if (n)
        fwrite(data, 1, n, f);
    fclose(f);
    return p;
}

/* Opens a corrupt file, expects EPROTO (or `want`) and a message holding
 * the file's path and each of the given fragments. */
static void expect_bad(const char *name, const char *hdr, uint64_t hlen, size_t n, int want,
                       const char *frag1, const char *frag2)
{
    static const unsigned char zeros[4096];
    ck_assert_uint_le(n, sizeof(zeros));
    char *p = write_raw(name, hdr, hlen, zeros, n);
    refit_st_file_t *f = NULL;
    int rc = refit_st_open(p, &f);
    ck_assert_msg(rc == want, "%s: rc %d, want %d (%s)", name, rc, want, refit_error_message());
    ck_assert_ptr_null(f);
    const char *m = refit_error_message();
    ck_assert_msg(strstr(m, p) != NULL, "message does not name the file: %s", m);
    if (frag1)
        ck_assert_msg(strstr(m, frag1) != NULL, "'%s' not in: %s", frag1, m);
    if (frag2)
        ck_assert_msg(strstr(m, frag2) != NULL, "'%s' not in: %s", frag2, m);
    free(p);
}

/* --- writer and round trip -------------------------------------------- */

static const enum refit_dtype all_dtypes[] = {
    REFIT_DTYPE_BOOL, REFIT_DTYPE_U8,   REFIT_DTYPE_I8,   REFIT_DTYPE_I16,
    REFIT_DTYPE_I32,  REFIT_DTYPE_I64,  REFIT_DTYPE_F8_E4M3, REFIT_DTYPE_F16,
    REFIT_DTYPE_BF16, REFIT_DTYPE_F32,  REFIT_DTYPE_F64};
#define N_DTYPES (sizeof(all_dtypes) / sizeof(all_dtypes[0]))

START_TEST(round_trip_every_dtype)
{
    refit_st_writer_t *w;
    ck_assert_int_eq(refit_st_writer_create(&w), 0);
    unsigned char *bufs[N_DTYPES];
    int64_t shapes[N_DTYPES][3];
    uint64_t s = 1;
    for (size_t i = 0; i < N_DTYPES; i++) {
        /* odd element counts so that later tensors start unaligned */
        shapes[i][0] = 3;
        shapes[i][1] = (int64_t)(i % 3 + 1);
        shapes[i][2] = 5;
        size_t n = 15 * (size_t)shapes[i][1] * refit_dtype_size(all_dtypes[i]);
        bufs[i] = malloc(n);
        for (size_t k = 0; k < n; k++)
            bufs[i][k] = (unsigned char)tt_rand(&s);
        char name[64];
        snprintf(name, sizeof(name), "t.%s", refit_dtype_name(all_dtypes[i]));
        ck_assert_int_eq(refit_st_writer_add(w, name, all_dtypes[i], 3, shapes[i], bufs[i], n), 0);
    }
    int64_t zero_shape[1] = {0};
    float scalar = 3.5f;
    ck_assert_int_eq(refit_st_writer_add_copy(w, "scalar", REFIT_DTYPE_F32, 0, NULL, &scalar, 4), 0);
    scalar = 0; /* _copy took its own copy */
    ck_assert_int_eq(refit_st_writer_add(w, "empty", REFIT_DTYPE_BF16, 1, zero_shape, NULL, 0), 0);
    ck_assert_int_eq(refit_st_writer_set_metadata(w, "format", "pt"), 0);
    ck_assert_int_eq(refit_st_writer_set_metadata(w, "note", "first"), 0);
    ck_assert_int_eq(refit_st_writer_set_metadata(w, "note", "ünïcode \"quoted\""), 0);
    char *p = path_in("all.safetensors");
    ck_assert_msg(refit_st_writer_write(w, p) == 0, "%s", refit_error_message());
    refit_st_writer_destroy(w);

    refit_st_file_t *f;
    ck_assert_msg(refit_st_open(p, &f) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(refit_st_count(f), N_DTYPES + 2);
    ck_assert_str_eq(refit_st_path(f), p);
    for (size_t i = 0; i < N_DTYPES; i++) {
        char name[64];
        snprintf(name, sizeof(name), "t.%s", refit_dtype_name(all_dtypes[i]));
        const struct refit_st_tensor *t = refit_st_find(f, name);
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(t->name, name);
        ck_assert_int_eq(t->dtype, all_dtypes[i]);
        ck_assert_int_eq(t->ndim, 3);
        ck_assert_mem_eq(t->shape, shapes[i], sizeof(shapes[i]));
        ck_assert_uint_eq(t->nbytes, 15 * (size_t)shapes[i][1] * refit_dtype_size(all_dtypes[i]));
        ck_assert_mem_eq(t->data, bufs[i], t->nbytes);
        ck_assert_str_eq(t->file, p);
        /* added order is file order */
        ck_assert_ptr_eq(refit_st_at(f, i), t);
        free(bufs[i]);
    }
    const struct refit_st_tensor *t = refit_st_find(f, "scalar");
    ck_assert_int_eq(t->ndim, 0);
    ck_assert_uint_eq(t->nbytes, 4);
    ck_assert_mem_eq(t->data, &(float){3.5f}, 4);
    t = refit_st_find(f, "empty");
    ck_assert_int_eq(t->ndim, 1);
    ck_assert_int_eq(t->shape[0], 0);
    ck_assert_uint_eq(t->nbytes, 0);
    ck_assert_ptr_null(refit_st_find(f, "absent"));
    ck_assert_str_eq(refit_st_metadata(f, "format"), "pt");
    ck_assert_str_eq(refit_st_metadata(f, "note"), "ünïcode \"quoted\"");
    ck_assert_ptr_null(refit_st_metadata(f, "nope"));
    refit_st_close(f);
    free(p);
}
END_TEST

/* What PyTorch's reader requires and the reference writer produces:
 * compact JSON, metadata first, keys dtype/shape/data_offsets, header
 * padded with spaces to 8 + N ≡ 0 (mod 8), data contiguous from 0. */
START_TEST(writer_header_format)
{
    refit_st_writer_t *w;
    ck_assert_int_eq(refit_st_writer_create(&w), 0);
    uint16_t a[3] = {1, 2, 3};
    uint8_t b[1] = {9};
    ck_assert_int_eq(refit_st_writer_add(w, "b", REFIT_DTYPE_U8, 1, (int64_t[]){1}, b, 1), 0);
    ck_assert_int_eq(refit_st_writer_add(w, "a", REFIT_DTYPE_BF16, 1, (int64_t[]){3}, a, 6), 0);
    ck_assert_int_eq(refit_st_writer_set_metadata(w, "format", "pt"), 0);
    char *p = path_in("h.safetensors");
    ck_assert_int_eq(refit_st_writer_write(w, p), 0);
    size_t len;
    char *raw = tt_read_file(p, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | (unsigned char)raw[i];
    ck_assert_uint_eq((8 + n) % 8, 0);
    ck_assert_uint_eq(len, 8 + n + 7);
    const char *want = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                       "\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[1,7]}}";
    ck_assert_uint_eq(n, (strlen(want) + 7) / 8 * 8);
    ck_assert_int_eq(memcmp(raw + 8, want, strlen(want)), 0);
    for (size_t i = 8 + strlen(want); i < 8 + n; i++)
        ck_assert_int_eq(raw[i], ' ');
    ck_assert_int_eq((unsigned char)raw[8 + n], 9);
    ck_assert_mem_eq(raw + 8 + n + 1, a, 6);
    free(raw);

    /* name order and the reference (aligned) order */
    refit_st_writer_set_order(w, REFIT_ST_ORDER_NAME);
    ck_assert_int_eq(refit_st_writer_write(w, p), 0);
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(p, &f), 0);
    ck_assert_str_eq(refit_st_at(f, 0)->name, "a");
    refit_st_close(f);
    float one = 1; /* referenced until write: must outlive the assert's block */
    ck_assert_int_eq(refit_st_writer_add(w, "c", REFIT_DTYPE_F32, 1, (int64_t[]){1}, &one, 4), 0);
    refit_st_writer_set_order(w, REFIT_ST_ORDER_ALIGNED);
    ck_assert_int_eq(refit_st_writer_write(w, p), 0);
    ck_assert_int_eq(refit_st_open(p, &f), 0);
    ck_assert_str_eq(refit_st_at(f, 0)->name, "c");
    ck_assert_str_eq(refit_st_at(f, 1)->name, "a");
    ck_assert_str_eq(refit_st_at(f, 2)->name, "b");
    for (size_t i = 0; i < 3; i++) /* every tensor naturally aligned in the file */
        ck_assert_uint_eq(((uintptr_t)refit_st_at(f, i)->data) %
                              refit_dtype_size(refit_st_at(f, i)->dtype), 0);
    refit_st_close(f);
    refit_st_writer_destroy(w);
    free(p);
}
END_TEST

START_TEST(writer_rejects_bad_input)
{
    refit_st_writer_t *w;
    ck_assert_int_eq(refit_st_writer_create(&w), 0);
    uint32_t v[4] = {0};
    int64_t sh[2] = {2, 2}, neg[1] = {-1};
    ck_assert_int_eq(refit_st_writer_add(w, "x", REFIT_DTYPE_F32, 2, sh, v, 12), REFIT_EINVAL);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "'x'"));
    ck_assert_int_eq(refit_st_writer_add(w, "x", REFIT_DTYPE_INVALID, 2, sh, v, 16), REFIT_EINVAL);
    ck_assert_int_eq(refit_st_writer_add(w, "x", REFIT_DTYPE_F32, 9, sh, v, 16), REFIT_EINVAL);
    ck_assert_int_eq(refit_st_writer_add(w, "x", REFIT_DTYPE_F32, 1, neg, v, 16), REFIT_EINVAL);
    ck_assert_int_eq(refit_st_writer_add(w, "__metadata__", REFIT_DTYPE_F32, 2, sh, v, 16),
                     REFIT_EINVAL);
    ck_assert_int_eq(refit_st_writer_add(w, "", REFIT_DTYPE_F32, 2, sh, v, 16), REFIT_EINVAL);
    ck_assert_int_eq(refit_st_writer_add(w, "x", REFIT_DTYPE_F32, 2, sh, v, 16), 0);
    ck_assert_int_eq(refit_st_writer_add(w, "x", REFIT_DTYPE_F32, 2, sh, v, 16), 0);
    char *p = path_in("dup.safetensors");
    ck_assert_int_eq(refit_st_writer_write(w, p), REFIT_EEXIST);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "'x' added twice"));
    refit_st_writer_destroy(w);
    /* invalid UTF-8 cannot be a JSON key */
    ck_assert_int_eq(refit_st_writer_create(&w), 0);
    ck_assert_int_eq(refit_st_writer_add(w, "bad\xff", REFIT_DTYPE_F32, 2, sh, v, 16), 0);
    ck_assert_int_eq(refit_st_writer_write(w, p), REFIT_EINVAL);
    refit_st_writer_destroy(w);
    /* a directory that does not exist: error, and nothing left behind */
    ck_assert_int_eq(refit_st_writer_create(&w), 0);
    char *q = path_in("no/such/dir/x.safetensors");
    ck_assert_int_ne(refit_st_writer_write(w, q), 0);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "no/such/dir"));
    refit_st_writer_destroy(w);
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)))
        ck_assert_msg(e->d_name[0] == '.', "left behind: %s", e->d_name);
    closedir(d);
    free(p);
    free(q);
}
END_TEST

START_TEST(writer_replaces_atomically)
{
    char *p = path_in("r.safetensors");
    for (int round = 0; round < 2; round++) {
        refit_st_writer_t *w;
        ck_assert_int_eq(refit_st_writer_create(&w), 0);
        int32_t v = round;
        ck_assert_int_eq(refit_st_writer_add(w, round ? "new" : "old", REFIT_DTYPE_I32, 0, NULL,
                                             &v, 4), 0);
        ck_assert_int_eq(refit_st_writer_write(w, p), 0);
        refit_st_writer_destroy(w);
    }
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open(p, &f), 0);
    ck_assert_uint_eq(refit_st_count(f), 1);
    ck_assert_ptr_nonnull(refit_st_find(f, "new"));
    refit_st_close(f);
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    ck_assert_int_eq(n, 1); /* no temp file left */
    free(p);
}
END_TEST

/* --- reader: corrupt files -------------------------------------------- */

static void write_text(const char *name, const char *text)
{
    char *p = path_in(name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    free(p);
}


START_TEST(reader_rejects_corrupt_files)
{
    const char *ok1 = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    /* truncated: the data area is shorter than the tensor */
    expect_bad("trunc.safetensors", ok1, UINT64_MAX, 10, REFIT_EPROTO, "tensor 'w'", "truncated");
    expect_bad("nohdr.safetensors", "", 3, 0, REFIT_EPROTO, "header length 3", "truncated");
    expect_bad("hlen.safetensors", ok1, 4096, 0, REFIT_EPROTO, "header length 4096", "truncated");
    expect_bad("huge.safetensors", ok1, 1ull << 40, 0, REFIT_EPROTO, "cap", NULL);
    expect_bad("json.safetensors", "{\"w\":", UINT64_MAX, 0, REFIT_EPROTO, "header JSON", NULL);
    expect_bad("array.safetensors", "[1,2]", UINT64_MAX, 0, REFIT_EPROTO, "not a JSON object",
               NULL);
    expect_bad("dup.safetensors",
               "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
               "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
               UINT64_MAX, 2, REFIT_EPROTO, "duplicate", NULL);
    expect_bad("dtype.safetensors", "{\"w\":{\"dtype\":\"F17\",\"shape\":[1],\"data_offsets\":[0,1]}}",
               UINT64_MAX, 1, REFIT_EPROTO, "tensor 'w'", "unknown dtype \"F17\"");
    expect_bad("lower.safetensors", "{\"w\":{\"dtype\":\"bf16\",\"shape\":[1],\"data_offsets\":[0,2]}}",
               UINT64_MAX, 2, REFIT_EPROTO, "tensor 'w'", "unknown dtype");
    expect_bad("nodtype.safetensors", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", UINT64_MAX,
               1, REFIT_EPROTO, "tensor 'w'", "dtype");
    expect_bad("negshape.safetensors",
               "{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", UINT64_MAX, 1,
               REFIT_EPROTO, "tensor 'w'", "shape[0]");
    expect_bad("floatshape.safetensors",
               "{\"w\":{\"dtype\":\"U8\",\"shape\":[1.0],\"data_offsets\":[0,1]}}", UINT64_MAX, 1,
               REFIT_EPROTO, "tensor 'w'", "shape[0]");
    expect_bad("ndim.safetensors",
               "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
               UINT64_MAX, 1, REFIT_EPROTO, "tensor 'w'", "9 dimensions");
    expect_bad("overflow.safetensors",
               "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,1]}}",
               UINT64_MAX, 1, REFIT_EPROTO, "tensor 'w'", "overflow");
    expect_bad("size.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}",
               UINT64_MAX, 8, REFIT_EPROTO, "tensor 'w'", "span 4");
    expect_bad("order.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,2]}}",
               UINT64_MAX, 8, REFIT_EPROTO, "tensor 'w'", "begin after end");
    expect_bad("offs.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}",
               UINT64_MAX, 8, REFIT_EPROTO, "tensor 'w'", "data_offsets");
    expect_bad("negoff.safetensors",
               "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", UINT64_MAX, 8,
               REFIT_EPROTO, "tensor 'w'", "data_offsets");
    expect_bad("entry.safetensors", "{\"w\":[1]}", UINT64_MAX, 0, REFIT_EPROTO, "tensor 'w'",
               "not an object");
    expect_bad("overlap.safetensors",
               "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
               UINT64_MAX, 8, REFIT_EPROTO, "tensor 'b'", "overlap tensor 'a'");
    expect_bad("inside.safetensors",
               "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
               "\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]}}",
               UINT64_MAX, 8, REFIT_EPROTO, "tensor 'e'", "overlap tensor 'a'");
    expect_bad("meta.safetensors", "{\"__metadata__\":{\"k\":1}}", UINT64_MAX, 0, REFIT_EPROTO,
               "'k'", "not a string");
    expect_bad("meta2.safetensors", "{\"__metadata__\":[]}", UINT64_MAX, 0, REFIT_EPROTO,
               "__metadata__", NULL);
    refit_st_file_t *f = NULL;
    write_text("short.safetensors", "abcde");
    char *p = path_in("short.safetensors");
    ck_assert_int_eq(refit_st_open(p, &f), REFIT_EPROTO);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "too short"));
    free(p);
    write_text("zero.safetensors", "");
    p = path_in("zero.safetensors");
    ck_assert_int_eq(refit_st_open(p, &f), REFIT_EPROTO);
    free(p);
    p = path_in("missing.safetensors");
    ck_assert_int_eq(refit_st_open(p, &f), REFIT_ENOENT);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), p));
    free(p);
    ck_assert_int_eq(refit_st_open(dir, &f), REFIT_EIO); /* a directory */
    ck_assert_ptr_null(f);
}
END_TEST

START_TEST(reader_accepts_edge_cases)
{
    /* empty header object, empty tensors at boundaries, gaps, extra
     * fields, a null __metadata__, trailing spaces */
    const char *h = "{\"__metadata__\":null,"
                    "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4],\"x\":1},"
                    "\"e0\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
                    "\"e4\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]},"
                    "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8]}}    ";
    unsigned char data[8] = {1, 2, 3, 4, 0, 0, 7, 8};
    char *p = write_raw("edge.safetensors", h, UINT64_MAX, data, 8);
    refit_st_file_t *f;
    ck_assert_msg(refit_st_open(p, &f) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(refit_st_count(f), 4);
    ck_assert_str_eq(refit_st_at(f, 3)->name, "b"); /* offset order */
    ck_assert_mem_eq(refit_st_find(f, "b")->data, data + 6, 2);
    ck_assert_ptr_null(refit_st_metadata(f, "format"));
    refit_st_close(f);
    free(p);
    p = write_raw("empty.safetensors", "{}      ", UINT64_MAX, NULL, 0);
    ck_assert_int_eq(refit_st_open(p, &f), 0);
    ck_assert_uint_eq(refit_st_count(f), 0);
    refit_st_close(f);
    free(p);
}
END_TEST

START_TEST(open_memory_image)
{
    const char *h = "{\"w\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
    size_t n = 8 + strlen(h) + 4;
    unsigned char *buf = malloc(n);
    uint64_t l = strlen(h);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(l >> (8 * i));
    memcpy(buf + 8, h, l);
    memcpy(buf + 8 + l, "\x01\x00\x02\x00", 4);
    refit_st_file_t *f;
    ck_assert_int_eq(refit_st_open_memory(buf, n, "peer3:v7", &f), 0);
    const struct refit_st_tensor *t = refit_st_find(f, "w");
    ck_assert_ptr_eq(t->data, buf + 8 + l);
    ck_assert_str_eq(t->file, "peer3:v7");
    refit_st_close(f);
    ck_assert_int_eq(refit_st_open_memory(buf, n - 1, "peer3:v7", &f), REFIT_EPROTO);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "peer3:v7: tensor 'w'"));
    free(buf);
}
END_TEST

/* --- checkpoints ------------------------------------------------------ */

static void write_shard(const char *name, const char *const *tensors, size_t n)
{
    refit_st_writer_t *w;
    ck_assert_int_eq(refit_st_writer_create(&w), 0);
    for (size_t i = 0; i < n; i++) {
        uint16_t v[2] = {(uint16_t)i, (uint16_t)(i + 100)};
        ck_assert_int_eq(refit_st_writer_add_copy(w, tensors[i], REFIT_DTYPE_BF16, 1,
                                                  (int64_t[]){2}, v, 4), 0);
    }
    char *p = path_in(name);
    ck_assert_int_eq(refit_st_writer_write(w, p), 0);
    refit_st_writer_destroy(w);
    free(p);
}

START_TEST(checkpoint_sharded_index)
{
    write_shard("model-00001-of-00002.safetensors", (const char *[]){"z.w", "a.w"}, 2);
    write_shard("model-00002-of-00002.safetensors", (const char *[]){"m.w", "extra"}, 2);
    write_text("model.safetensors.index.json",
               "{\"metadata\":{\"total_size\":12},\"weight_map\":{"
               "\"z.w\":\"model-00001-of-00002.safetensors\","
               "\"a.w\":\"model-00001-of-00002.safetensors\","
               "\"m.w\":\"model-00002-of-00002.safetensors\"}}");
    refit_st_checkpoint_t *c;
    ck_assert_msg(refit_st_checkpoint_open(dir, &c) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(refit_st_checkpoint_count(c), 3); /* the weight_map decides */
    ck_assert_str_eq(refit_st_checkpoint_at(c, 0)->name, "a.w");
    ck_assert_str_eq(refit_st_checkpoint_at(c, 1)->name, "m.w");
    ck_assert_str_eq(refit_st_checkpoint_at(c, 2)->name, "z.w");
    ck_assert_ptr_null(refit_st_checkpoint_at(c, 3));
    const struct refit_st_tensor *t = refit_st_checkpoint_find(c, "m.w");
    ck_assert_ptr_nonnull(strstr(t->file, "model-00002-of-00002.safetensors"));
    ck_assert_ptr_null(refit_st_checkpoint_find(c, "extra"));
    ck_assert_ptr_eq(refit_st_checkpoint_at(c, 0)->file, refit_st_checkpoint_at(c, 2)->file);
    refit_st_checkpoint_close(c);

    /* a tensor listed for a file that lacks it */
    write_text("model.safetensors.index.json",
               "{\"weight_map\":{\"a.w\":\"model-00001-of-00002.safetensors\","
               "\"q.w\":\"model-00002-of-00002.safetensors\"}}");
    ck_assert_int_eq(refit_st_checkpoint_open(dir, &c), REFIT_EPROTO);
    ck_assert_msg(strstr(refit_error_message(), "tensor 'q.w' is listed for "
                                                "model-00002-of-00002.safetensors, which lacks it"),
                  "%s", refit_error_message());
    /* a missing shard */
    write_text("model.safetensors.index.json", "{\"weight_map\":{\"a.w\":\"gone.safetensors\"}}");
    ck_assert_int_eq(refit_st_checkpoint_open(dir, &c), REFIT_ENOENT);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "gone.safetensors"));
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "'a.w'"));
    /* escaping the directory */
    write_text("model.safetensors.index.json", "{\"weight_map\":{\"a.w\":\"../x.safetensors\"}}");
    ck_assert_int_eq(refit_st_checkpoint_open(dir, &c), REFIT_EPROTO);
    write_text("model.safetensors.index.json", "{\"weight_map\":[]}");
    ck_assert_int_eq(refit_st_checkpoint_open(dir, &c), REFIT_EPROTO);
    write_text("model.safetensors.index.json", "{\"weight_map\":");
    ck_assert_int_eq(refit_st_checkpoint_open(dir, &c), REFIT_EPROTO);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "model.safetensors.index.json"));
}
END_TEST

START_TEST(checkpoint_single_and_glob)
{
    refit_st_checkpoint_t *c;
    ck_assert_int_eq(refit_st_checkpoint_open(dir, &c), REFIT_ENOENT);
    write_shard("b.safetensors", (const char *[]){"x", "y"}, 2);
    write_shard("a.safetensors", (const char *[]){"w"}, 1);
    ck_assert_msg(refit_st_checkpoint_open(dir, &c) == 0, "%s", refit_error_message());
    ck_assert_uint_eq(refit_st_checkpoint_count(c), 3);
    refit_st_checkpoint_close(c);
    /* one file named directly */
    char *p = path_in("a.safetensors");
    ck_assert_int_eq(refit_st_checkpoint_open(p, &c), 0);
    ck_assert_uint_eq(refit_st_checkpoint_count(c), 1);
    refit_st_checkpoint_close(c);
    free(p);
    /* the same name in two files of a glob */
    write_shard("c.safetensors", (const char *[]){"x"}, 1);
    ck_assert_int_eq(refit_st_checkpoint_open(dir, &c), REFIT_EPROTO);
    ck_assert_ptr_nonnull(strstr(refit_error_message(), "tensor 'x' is in both"));
    /* model.safetensors wins over the others */
    write_shard("model.safetensors", (const char *[]){"only"}, 1);
    ck_assert_int_eq(refit_st_checkpoint_open(dir, &c), 0);
    ck_assert_uint_eq(refit_st_checkpoint_count(c), 1);
    ck_assert_ptr_nonnull(refit_st_checkpoint_find(c, "only"));
    refit_st_checkpoint_close(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("writer");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, round_trip_every_dtype);
    tcase_add_test(tc, writer_header_format);
    tcase_add_test(tc, writer_rejects_bad_input);
    tcase_add_test(tc, writer_replaces_atomically);
    suite_add_tcase(s, tc);
    tc = tcase_create("reader");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, reader_rejects_corrupt_files);
    tcase_add_test(tc, reader_accepts_edge_cases);
    tcase_add_test(tc, open_memory_image);
    suite_add_tcase(s, tc);
    tc = tcase_create("checkpoint");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, checkpoint_sharded_index);
    tcase_add_test(tc, checkpoint_single_and_glob);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? 1 : 0;
}
