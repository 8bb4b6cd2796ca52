/* safetensors_write.c — the safetensors writer: tensors and metadata
 * gathered in memory, then one file written atomically (temp file, fsync,
 * rename) with the compact, 8-byte-aligned header the reference writer
 * emits.  The reader is in safetensors.c. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "refit/safetensors.h"
#include "refit/status.h"
#include "safetensors_int.h"

struct wentry {
    char *name;
    enum refit_dtype dtype;
    int ndim;
    int64_t shape[REFIT_MAX_DIMS];
    const void *data;
    size_t nbytes;
    void *owned; /* the copy made by _add_copy */
};

struct refit_st_writer {
    struct wentry *e;
    size_t n, cap;
    char **mk, **mv;
    size_t n_meta;
    enum refit_st_order order;
};

int refit_st_writer_create(refit_st_writer_t **out)
{
    if (!out)
        return refit_error_set(REFIT_EINVAL, "refit_st_writer_create: NULL argument");
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : refit_error_set(REFIT_ENOMEM, "safetensors writer");
}

void refit_st_writer_destroy(refit_st_writer_t *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->e[i].name);
        free(w->e[i].owned);
    }
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->mk[i]);
        free(w->mv[i]);
    }
    free(w->e);
    free(w->mk);
    free(w->mv);
    free(w);
}

void refit_st_writer_set_order(refit_st_writer_t *w, enum refit_st_order order)
{
    if (w && order >= REFIT_ST_ORDER_ADDED && order <= REFIT_ST_ORDER_ALIGNED)
        w->order = order;
}

static int add_entry(refit_st_writer_t *w, const char *name, enum refit_dtype dtype, int ndim,
                     const int64_t *shape, const void *data, size_t nbytes, int copy)
{
    if (!w || !name || (ndim > 0 && !shape) || (!data && nbytes))
        return refit_error_set(REFIT_EINVAL, "safetensors writer: NULL argument");
    if (!*name || !strcmp(name, ST_META))
        return refit_error_set(REFIT_EINVAL, "safetensors writer: tensor name '" NAME_FMT
                               "' is reserved or empty", name);
    if (refit_dtype_size(dtype) == 0)
        return refit_error_set(REFIT_EINVAL, "safetensors writer: tensor '" NAME_FMT "': "
                               "invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > REFIT_MAX_DIMS)
        return refit_error_set(REFIT_EINVAL, "safetensors writer: tensor '" NAME_FMT "': "
                               "%d dimensions", name, ndim);
    size_t want = refit_dtype_size(dtype);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(want, (uint64_t)shape[i], &want))
            return refit_error_set(REFIT_EINVAL, "safetensors writer: tensor '" NAME_FMT "': "
                                   "bad shape[%d] = %lld", name, i, (long long)shape[i]);
    if (want != nbytes)
        return refit_error_set(REFIT_EINVAL, "safetensors writer: tensor '" NAME_FMT "': %s x "
                               "shape is %zu bytes, given %zu", name, refit_dtype_name(dtype),
                               want, nbytes);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        struct wentry *v = realloc(w->e, cap * sizeof(*v));
        if (!v)
            return refit_error_set(REFIT_ENOMEM, "safetensors writer");
        w->e = v;
        w->cap = cap;
    }
    struct wentry *e = &w->e[w->n];
    memset(e, 0, sizeof(*e));
    e->name = strdup(name);
    if (copy && nbytes)
        e->owned = malloc(nbytes);
    if (!e->name || (copy && nbytes && !e->owned)) {
        free(e->name);
        free(e->owned);
        return refit_error_set(REFIT_ENOMEM, "safetensors writer: tensor '" NAME_FMT "'", name);
    }
    if (e->owned)
        memcpy(e->owned, data, nbytes);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        e->shape[i] = shape[i];
    e->data = e->owned ? e->owned : data;
    e->nbytes = nbytes;
    w->n++;
    return 0;
}

int refit_st_writer_add(refit_st_writer_t *w, const char *name, enum refit_dtype dtype, int ndim,
                        const int64_t *shape, const void *data, size_t nbytes)
{
    return add_entry(w, name, dtype, ndim, shape, data, nbytes, 0);
}

int refit_st_writer_add_copy(refit_st_writer_t *w, const char *name, enum refit_dtype dtype,
                             int ndim, const int64_t *shape, const void *data, size_t nbytes)
{
    return add_entry(w, name, dtype, ndim, shape, data, nbytes, 1);
}

int refit_st_writer_set_metadata(refit_st_writer_t *w, const char *key, const char *value)
{
    if (!w || !key || !value)
        return refit_error_set(REFIT_EINVAL, "safetensors writer: NULL metadata");
    for (size_t i = 0; i < w->n_meta; i++)
        if (!strcmp(w->mk[i], key)) {
            char *v = strdup(value);
            if (!v)
                return refit_error_set(REFIT_ENOMEM, "safetensors writer: metadata");
            free(w->mv[i]);
            w->mv[i] = v;
            return 0;
        }
    char **mk = realloc(w->mk, (w->n_meta + 1) * sizeof(*mk));
    if (mk)
        w->mk = mk;
    char **mv = mk ? realloc(w->mv, (w->n_meta + 1) * sizeof(*mv)) : NULL;
    if (mv)
        w->mv = mv;
    char *k = strdup(key), *v = strdup(value);
    if (!mk || !mv || !k || !v) {
        free(k);
        free(v);
        return refit_error_set(REFIT_ENOMEM, "safetensors writer: metadata");
    }
    w->mk[w->n_meta] = k;
    w->mv[w->n_meta++] = v;
    return 0;
}

static int order_cmp_name(const void *a, const void *b)
{
    return strcmp((*(const struct wentry *const *)a)->name, (*(const struct wentry *const *)b)->name);
}

static int order_cmp_aligned(const void *a, const void *b)
{
    const struct wentry *x = *(const struct wentry *const *)a, *y = *(const struct wentry *const *)b;
    size_t sx = refit_dtype_size(x->dtype), sy = refit_dtype_size(y->dtype);
    if (sx != sy)
        return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The compact JSON the reference writer emits: metadata first, then each
 * tensor as {"dtype","shape","data_offsets"}, keys in that order. */
static json_t *build_header(const refit_st_writer_t *w, struct wentry **v)
{
    json_t *root = json_object();
    int bad = !root;
    if (!bad && w->n_meta) {
        json_t *m = json_object();
        bad = json_object_set_new(root, ST_META, m);
        for (size_t i = 0; i < w->n_meta && !bad; i++)
            bad = json_object_set_new(m, w->mk[i], json_string(w->mv[i]));
        if (bad)
            refit_error_set(REFIT_EINVAL, "safetensors writer: metadata is not valid UTF-8");
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n && !bad; i++) {
        json_t *t = json_object(), *shape = json_array();
        bad = json_object_set_new(root, v[i]->name, t);
        if (bad) {
            json_decref(shape);
            refit_error_set(REFIT_EINVAL, "safetensors writer: tensor name '" NAME_FMT "' is not "
                            "valid UTF-8", v[i]->name);
            break;
        }
        for (int d = 0; d < v[i]->ndim; d++)
            bad |= json_array_append_new(shape, json_integer(v[i]->shape[d]));
        bad |= json_object_set_new(t, "dtype", json_string(refit_dtype_name(v[i]->dtype)));
        bad |= json_object_set_new(t, "shape", shape);
        bad |= json_object_set_new(t, "data_offsets",
                                   json_pack("[II]", (json_int_t)off,
                                             (json_int_t)(off + v[i]->nbytes)));
        off += v[i]->nbytes;
        if (bad)
            refit_error_set(REFIT_ENOMEM, "safetensors writer: header");
    }
    if (bad) {
        json_decref(root);
        return NULL;
    }
    return root;
}

static int write_all(int fd, const void *buf, size_t n, const char *path)
{
    const char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return refit_error_set(REFIT_EIO, "%s: write: %s", path,
                                   k < 0 ? strerror(errno) : "no progress");
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Temp file beside the target, fsync, rename, fsync the directory: a
 * reader sees the old file or the whole new one, never a torn one. */
static int write_atomic(const char *path, const char *hdr, size_t hlen, struct wentry **v,
                        size_t n)
{
    char *tmp = NULL, *dcopy = strdup(path);
    if (!dcopy || asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
        free(dcopy);
        return refit_error_set(REFIT_ENOMEM, "%s: write", path);
    }
    int rc = 0, fd = mkstemp(tmp);
    if (fd < 0)
        rc = refit_error_set(errno == ENOENT ? REFIT_ENOENT : REFIT_EIO, "%s: %s", tmp,
                             strerror(errno));
    if (!rc && fchmod(fd, 0644) < 0)
        rc = refit_error_set(REFIT_EIO, "%s: fchmod: %s", tmp, strerror(errno));
    if (!rc)
        rc = write_all(fd, hdr, hlen, path);
    for (size_t i = 0; i < n && !rc; i++)
        rc = write_all(fd, v[i]->data, v[i]->nbytes, path);
    if (!rc && fsync(fd) < 0)
        rc = refit_error_set(REFIT_EIO, "%s: fsync: %s", path, strerror(errno));
    if (fd >= 0 && close(fd) < 0 && !rc)
        rc = refit_error_set(REFIT_EIO, "%s: close: %s", path, strerror(errno));
    if (!rc && rename(tmp, path) < 0)
        rc = refit_error_set(REFIT_EIO, "%s: rename: %s", path, strerror(errno));
    if (rc && fd >= 0)
        unlink(tmp);
    if (!rc) {
        int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) { /* best effort: some file systems refuse it */
            (void)fsync(dfd);
            close(dfd);
        }
    }
    free(tmp);
    free(dcopy);
    return rc;
}

int refit_st_writer_write(refit_st_writer_t *w, const char *path)
{
    if (!w || !path)
        return refit_error_set(REFIT_EINVAL, "refit_st_writer_write: NULL argument");
    struct wentry **v = malloc((w->n ? w->n : 1) * sizeof(*v));
    struct wentry **byname = malloc((w->n ? w->n : 1) * sizeof(*byname));
    if (!v || !byname) {
        free(v);
        free(byname);
        return refit_error_set(REFIT_ENOMEM, "%s: write", path);
    }
    for (size_t i = 0; i < w->n; i++)
        v[i] = byname[i] = &w->e[i];
    qsort(byname, w->n, sizeof(*byname), order_cmp_name);
    int rc = 0;
    for (size_t i = 1; i < w->n && !rc; i++)
        if (!strcmp(byname[i - 1]->name, byname[i]->name))
            rc = refit_error_set(REFIT_EEXIST, "%s: tensor '" NAME_FMT "' added twice", path,
                                 byname[i]->name);
    free(byname);
    if (!rc && w->order == REFIT_ST_ORDER_NAME)
        qsort(v, w->n, sizeof(*v), order_cmp_name);
    else if (!rc && w->order == REFIT_ST_ORDER_ALIGNED)
        qsort(v, w->n, sizeof(*v), order_cmp_aligned);
    json_t *root = rc ? NULL : build_header(w, v);
    char *js = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!rc && !root)
        rc = refit_error_push(refit_error_status() ? refit_error_status() : REFIT_ENOMEM, "%s",
                              path);
    else if (!rc && !js)
        rc = refit_error_set(REFIT_ENOMEM, "%s: header", path);
    if (!rc) {
        /* Pad with spaces so the data starts 8-byte aligned (8 + N ≡ 0). */
        size_t n = strlen(js), pad = (8 - n % 8) % 8;
        char *hdr = malloc(8 + n + pad);
        if (!hdr)
            rc = refit_error_set(REFIT_ENOMEM, "%s: header", path);
        else {
            uint64_t hl = n + pad;
            for (int i = 0; i < 8; i++)
                hdr[i] = (char)(hl >> (8 * i));
            memcpy(hdr + 8, js, n);
            memset(hdr + 8 + n, ' ', pad);
            rc = write_atomic(path, hdr, 8 + n + pad, v, w->n);
            free(hdr);
        }
    }
    free(js);
    free(v);
    return rc;
}
