/* safetensors.c — the safetensors reader (mmap or a caller's buffer, every
 * header field validated before any tensor is handed out) and sharded
 * checkpoints through model.safetensors.index.json; the writer is in
 * safetensors_write.c.
 *
 * The header is untrusted input: a file may be truncated, corrupt or
 * hostile, so each length and offset is checked against the bytes really
 * present, and a failure says which file and which tensor. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "refit/log.h"
#include "refit/safetensors.h"
#include "refit/status.h"
#include "safetensors_int.h"
#include "util.h"

/* The reference implementation refuses headers above 100 MB; a real
 * checkpoint of ten thousand tensors needs about 1 MB. */
#define ST_MAX_HEADER 100000000ull

struct refit_st_file {
    char *path;
    void *map; /* mmap'd file, NULL for a caller's buffer */
    size_t map_len;
    const uint8_t *base;
    size_t len;
    size_t count;
    struct refit_st_tensor *tensors; /* ascending data offset */
    const struct refit_st_tensor **by_name;
    size_t n_meta;
    char **meta_keys, **meta_vals;
};

/* "<file>: tensor '<name>': <reason>", the shape of every corrupt-file
 * error. */
__attribute__((format(printf, 3, 4))) static int bad_tensor(const char *file, const char *tensor,
                                                            const char *fmt, ...)
{
    char *reason = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&reason, fmt, ap);
    va_end(ap);
    if (n < 0)
        return refit_error_set(REFIT_EPROTO, "%s: tensor '" NAME_FMT "': malformed entry", file,
                               tensor);
    refit_error_set(REFIT_EPROTO, "%s: tensor '" NAME_FMT "': %s", file, tensor, reason);
    free(reason);
    return REFIT_EPROTO;
}

static int name_cmp(const void *a, const void *b)
{
    const struct refit_st_tensor *x = *(const struct refit_st_tensor *const *)a;
    const struct refit_st_tensor *y = *(const struct refit_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

/* --- header parsing --------------------------------------------------- */

static int parse_dtype(const char *file, const char *name, json_t *v, enum refit_dtype *out)
{
    const char *s = json_string_value(v);
    if (!s)
        return bad_tensor(file, name, "\"dtype\" missing or not a string");
    /* Exact spelling: PyTorch's reader is case-sensitive, so a file that
     * only refit could read would be a trap. */
    for (int t = 1; t < REFIT_DTYPE_COUNT_; t++)
        if (!strcmp(s, refit_dtype_name((enum refit_dtype)t))) {
            *out = (enum refit_dtype)t;
            return 0;
        }
    return bad_tensor(file, name, "unknown dtype \"" NAME_FMT "\"", s);
}

static int parse_shape(const char *file, struct refit_st_tensor *t, json_t *v)
{
    if (!json_is_array(v))
        return bad_tensor(file, t->name, "\"shape\" missing or not an array");
    size_t nd = json_array_size(v);
    if (nd > REFIT_MAX_DIMS)
        return bad_tensor(file, t->name, "%zu dimensions, more than %d", nd, REFIT_MAX_DIMS);
    size_t bytes = refit_dtype_size(t->dtype);
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(v, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return bad_tensor(file, t->name, "shape[%zu] is not a non-negative integer", i);
        t->shape[i] = json_integer_value(d);
        if (__builtin_mul_overflow(bytes, (uint64_t)t->shape[i], &bytes))
            return bad_tensor(file, t->name, "shape overflows the address space");
    }
    t->ndim = (int)nd;
    t->nbytes = bytes;
    return 0;
}

static int parse_offsets(const char *file, const struct refit_st_tensor *t, json_t *v,
                         size_t data_len, uint64_t *begin)
{
    if (!json_is_array(v) || json_array_size(v) != 2)
        return bad_tensor(file, t->name, "\"data_offsets\" missing or not [begin, end]");
    json_t *jb = json_array_get(v, 0), *je = json_array_get(v, 1);
    if (!json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 ||
        json_integer_value(je) < 0)
        return bad_tensor(file, t->name, "data_offsets are not non-negative integers");
    uint64_t b = (uint64_t)json_integer_value(jb), e = (uint64_t)json_integer_value(je);
    if (b > e)
        return bad_tensor(file, t->name, "data_offsets [%llu, %llu]: begin after end",
                          (unsigned long long)b, (unsigned long long)e);
    if (e > data_len)
        return bad_tensor(file, t->name,
                          "data_offsets [%llu, %llu] beyond the data area of %zu bytes "
                          "(file truncated?)",
                          (unsigned long long)b, (unsigned long long)e, data_len);
    if (e - b != t->nbytes)
        return bad_tensor(file, t->name,
                          "%s x shape is %zu bytes but data_offsets [%llu, %llu] span %llu",
                          refit_dtype_name(t->dtype), t->nbytes, (unsigned long long)b,
                          (unsigned long long)e, (unsigned long long)(e - b));
    *begin = b;
    return 0;
}

static int parse_metadata(refit_st_file_t *f, json_t *v)
{
    if (json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return refit_error_set(REFIT_EPROTO, "%s: " ST_META " is not an object", f->path);
    size_t n = json_object_size(v);
    f->meta_keys = calloc(n ? n : 1, sizeof(char *));
    f->meta_vals = calloc(n ? n : 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_vals)
        return refit_error_set(REFIT_ENOMEM, "%s: metadata", f->path);
    const char *k;
    json_t *val;
    json_object_foreach(v, k, val) {
        if (!json_is_string(val))
            return refit_error_set(REFIT_EPROTO, "%s: " ST_META " key '" NAME_FMT
                                   "': value is not a string", f->path, k);
        f->meta_keys[f->n_meta] = strdup(k);
        f->meta_vals[f->n_meta] = strdup(json_string_value(val));
        if (!f->meta_keys[f->n_meta] || !f->meta_vals[f->n_meta++])
            return refit_error_set(REFIT_ENOMEM, "%s: metadata", f->path);
    }
    return 0;
}

static int parse_tensor(refit_st_file_t *f, const char *name, json_t *v, const uint8_t *data,
                        size_t data_len, uint64_t *begin)
{
    struct refit_st_tensor *t = &f->tensors[f->count];
    t->name = strdup(name);
    if (!t->name)
        return refit_error_set(REFIT_ENOMEM, "%s: tensor names", f->path);
    t->file = f->path;
    f->count++; /* owns the name from here, for close */
    if (!json_is_object(v))
        return bad_tensor(f->path, name, "entry is not an object");
    int rc = parse_dtype(f->path, name, json_object_get(v, "dtype"), &t->dtype);
    if (!rc)
        rc = parse_shape(f->path, t, json_object_get(v, "shape"));
    if (!rc)
        rc = parse_offsets(f->path, t, json_object_get(v, "data_offsets"), data_len, begin);
    if (rc)
        return rc;
    t->data = data + *begin;
    return 0;
}

struct span {
    uint64_t begin;
    size_t nbytes, idx;
};

/* By offset; at equal offsets empty tensors first, so that an empty tensor
 * at the start of a non-empty one is not taken for an overlap. */
static int span_cmp(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Orders the tensors by offset and rejects overlaps.  Empty tensors may sit
 * at any boundary but not inside another tensor's bytes. */
static int order_and_check(refit_st_file_t *f, const uint64_t *begins)
{
    struct span *s = malloc((f->count ? f->count : 1) * sizeof(*s));
    struct refit_st_tensor *sorted = malloc((f->count ? f->count : 1) * sizeof(*sorted));
    if (!s || !sorted) {
        free(s);
        free(sorted);
        return refit_error_set(REFIT_ENOMEM, "%s: tensor table", f->path);
    }
    for (size_t i = 0; i < f->count; i++)
        s[i] = (struct span){begins[i], f->tensors[i].nbytes, i};
    qsort(s, f->count, sizeof(*s), span_cmp);
    uint64_t end = 0;
    size_t owner = SIZE_MAX;
    int rc = 0;
    for (size_t i = 0; i < f->count && !rc; i++) {
        const struct refit_st_tensor *t = &f->tensors[s[i].idx];
        uint64_t b = s[i].begin;
        if (b < end)
            rc = bad_tensor(f->path, t->name, "data_offsets [%llu, %llu] overlap tensor '" NAME_FMT
                            "' [%llu, %llu]", (unsigned long long)b,
                            (unsigned long long)(b + t->nbytes), f->tensors[owner].name,
                            (unsigned long long)begins[owner],
                            (unsigned long long)(begins[owner] + f->tensors[owner].nbytes));
        if (t->nbytes && b + t->nbytes > end) {
            end = b + t->nbytes;
            owner = s[i].idx;
        }
    }
    for (size_t i = 0; i < f->count; i++)
        sorted[i] = f->tensors[s[i].idx];
    free(s);
    free(f->tensors);
    f->tensors = sorted;
    return rc;
}

static int build_name_index(refit_st_file_t *f)
{
    f->by_name = malloc((f->count ? f->count : 1) * sizeof(*f->by_name));
    if (!f->by_name)
        return refit_error_set(REFIT_ENOMEM, "%s: name index", f->path);
    for (size_t i = 0; i < f->count; i++)
        f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, f->count, sizeof(*f->by_name), name_cmp);
    /* JSON_REJECT_DUPLICATES already refused them; this keeps find()
     * well-defined should the parser ever change. */
    for (size_t i = 1; i < f->count; i++)
        if (!strcmp(f->by_name[i - 1]->name, f->by_name[i]->name))
            return bad_tensor(f->path, f->by_name[i]->name, "name appears twice");
    return 0;
}

static int parse_header(refit_st_file_t *f)
{
    if (f->len < 8)
        return refit_error_set(REFIT_EPROTO,
                               "%s: %zu bytes, too short for a safetensors file (8-byte header "
                               "length first)", f->path, f->len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | f->base[i];
    if (n > ST_MAX_HEADER)
        return refit_error_set(REFIT_EPROTO, "%s: header length %llu exceeds the %llu-byte cap "
                               "(not a safetensors file?)", f->path, (unsigned long long)n,
                               ST_MAX_HEADER);
    if (n > f->len - 8)
        return refit_error_set(REFIT_EPROTO, "%s: header length %llu but only %zu bytes follow "
                               "(file truncated?)", f->path, (unsigned long long)n, f->len - 8);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)f->base + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return refit_error_set(REFIT_EPROTO, "%s: header JSON at byte %d: %s", f->path,
                               jerr.position + 8, jerr.text);
    int rc = 0;
    const uint8_t *data = f->base + 8 + n;
    size_t data_len = f->len - 8 - (size_t)n;
    size_t cap = json_is_object(root) ? json_object_size(root) : 0;
    uint64_t *begins = malloc((cap ? cap : 1) * sizeof(*begins));
    f->tensors = calloc(cap ? cap : 1, sizeof(*f->tensors));
    if (!json_is_object(root))
        rc = refit_error_set(REFIT_EPROTO, "%s: header is not a JSON object", f->path);
    else if (!begins || !f->tensors)
        rc = refit_error_set(REFIT_ENOMEM, "%s: tensor table", f->path);
    const char *key;
    json_t *v;
    if (!rc)
        json_object_foreach(root, key, v) {
            if (!strcmp(key, ST_META))
                rc = parse_metadata(f, v);
            else
                rc = parse_tensor(f, key, v, data, data_len, &begins[f->count]);
            if (rc)
                break;
        }
    if (!rc)
        rc = order_and_check(f, begins);
    if (!rc)
        rc = build_name_index(f);
    free(begins);
    json_decref(root);
    return rc;
}

static int file_new(const char *path, refit_st_file_t **out)
{
    refit_st_file_t *f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return refit_error_set(REFIT_ENOMEM, "%s: open", path);
    }
    *out = f;
    return 0;
}

int refit_st_open_memory(const void *buf, size_t len, const char *name, refit_st_file_t **out)
{
    if (!out || (!buf && len))
        return refit_error_set(REFIT_EINVAL, "refit_st_open_memory: NULL argument");
    refit_st_file_t *f;
    int rc = file_new(name ? name : "(memory)", &f);
    if (rc)
        return rc;
    f->base = buf;
    f->len = len;
    rc = parse_header(f);
    if (rc) {
        refit_st_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

int refit_st_open(const char *path, refit_st_file_t **out)
{
    if (!path || !out)
        return refit_error_set(REFIT_EINVAL, "refit_st_open: NULL argument");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return refit_error_set(errno == ENOENT ? REFIT_ENOENT : REFIT_EIO, "%s: %s", path,
                               strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        close(fd);
        return refit_error_set(REFIT_EIO, "%s: %s", path,
                               S_ISREG(st.st_mode) ? strerror(e) : "not a regular file");
    }
    refit_st_file_t *f;
    int rc = file_new(path, &f);
    if (rc) {
        close(fd);
        return rc;
    }
    f->len = (size_t)st.st_size;
    if (f->len >= 8) { /* mmap refuses length 0; parse_header reports short files */
        f->map = mmap(NULL, f->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            rc = refit_error_set(REFIT_EIO, "%s: mmap: %s", path, strerror(errno));
        }
        f->map_len = f->len;
        f->base = f->map;
    }
    close(fd);
    if (!rc)
        rc = parse_header(f);
    if (rc) {
        refit_st_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

void refit_st_close(refit_st_file_t *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->count; i++)
        free((char *)f->tensors[i].name);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->tensors);
    free(f->by_name);
    if (f->map)
        munmap(f->map, f->map_len);
    free(f->path);
    free(f);
}

const char *refit_st_path(const refit_st_file_t *f)
{
    return f ? f->path : NULL;
}

size_t refit_st_count(const refit_st_file_t *f)
{
    return f ? f->count : 0;
}

const struct refit_st_tensor *refit_st_at(const refit_st_file_t *f, size_t i)
{
    return f && i < f->count ? &f->tensors[i] : NULL;
}

static const struct refit_st_tensor *find_sorted(const struct refit_st_tensor *const *v, size_t n,
                                                 const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(v[mid]->name, name);
        if (!c)
            return v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const struct refit_st_tensor *refit_st_find(const refit_st_file_t *f, const char *name)
{
    return f && name ? find_sorted(f->by_name, f->count, name) : NULL;
}

const char *refit_st_metadata(const refit_st_file_t *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (size_t i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key))
            return f->meta_vals[i];
    return NULL;
}

/* --- checkpoints ------------------------------------------------------ */

struct refit_st_checkpoint {
    refit_st_file_t **files;
    size_t n_files;
    const struct refit_st_tensor **sorted;
    size_t count;
};

static char *path_join(const char *dir, const char *name)
{
    char *p = NULL;
    return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

static int is_file(const char *path)
{
    struct stat st;
    return !stat(path, &st) && S_ISREG(st.st_mode);
}

static int ckpt_add_file(refit_st_checkpoint_t *c, const char *path)
{
    refit_st_file_t **v = realloc(c->files, (c->n_files + 1) * sizeof(*v));
    if (!v)
        return refit_error_set(REFIT_ENOMEM, "%s: checkpoint", path);
    c->files = v;
    int rc = refit_st_open(path, &c->files[c->n_files]);
    if (!rc)
        c->n_files++;
    return rc;
}

/* The index names files relative to its directory; refuse anything that
 * would escape it. */
static int shard_name_ok(const char *s)
{
    if (!*s || s[0] == '/')
        return 0;
    for (const char *p = s; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return 0;
        p += n + (p[n] == '/');
    }
    return 1;
}

static int ckpt_load_index(refit_st_checkpoint_t *c, const char *dir, const char *index)
{
    json_error_t jerr;
    json_t *root = json_load_file(index, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return refit_error_set(REFIT_EPROTO, "%s:%d:%d: %s", index, jerr.line, jerr.column,
                               jerr.text);
    json_t *map = json_object_get(root, "weight_map");
    int rc = 0;
    if (!json_is_object(map))
        rc = refit_error_set(REFIT_EPROTO, "%s: no \"weight_map\" object", index);
    size_t n = rc ? 0 : json_object_size(map);
    c->sorted = calloc(n ? n : 1, sizeof(*c->sorted));
    if (!rc && !c->sorted)
        rc = refit_error_set(REFIT_ENOMEM, "%s: index", index);
    const char *name;
    json_t *v;
    size_t i = 0;
    if (!rc)
        json_object_foreach(map, name, v) {
            const char *shard = json_string_value(v);
            if (!shard || !shard_name_ok(shard)) {
                rc = refit_error_set(REFIT_EPROTO, "%s: tensor '" NAME_FMT "': file name is not "
                                     "a relative path inside the checkpoint", index, name);
                break;
            }
            /* Each shard opened once however many tensors it holds. */
            char *path = path_join(dir, shard);
            if (!path) {
                rc = refit_error_set(REFIT_ENOMEM, "%s: index", index);
                break;
            }
            size_t k = 0;
            while (k < c->n_files && strcmp(refit_st_path(c->files[k]), path))
                k++;
            if (k == c->n_files)
                rc = ckpt_add_file(c, path);
            free(path);
            if (rc) {
                refit_error_push(rc, "%s: tensor '" NAME_FMT "'", index, name);
                break;
            }
            const struct refit_st_tensor *t = refit_st_find(c->files[k], name);
            if (!t) {
                rc = refit_error_set(REFIT_EPROTO, "%s: tensor '" NAME_FMT "' is listed for %s, "
                                     "which lacks it", index, name, shard);
                break;
            }
            c->sorted[i++] = t;
        }
    c->count = i;
    json_decref(root);
    return rc;
}

static int st_suffix(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 12 && !strcmp(d->d_name + n - 12, ".safetensors");
}

static int ckpt_load_glob(refit_st_checkpoint_t *c, const char *dir)
{
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, st_suffix, alphasort);
    if (n < 0)
        return refit_error_set(errno == ENOENT ? REFIT_ENOENT : REFIT_EIO, "%s: %s", dir,
                               strerror(errno));
    int rc = n ? 0 : refit_error_set(REFIT_ENOENT, "%s: no model.safetensors.index.json, "
                                     "model.safetensors or *.safetensors", dir);
    for (int i = 0; i < n; i++) {
        char *path = rc ? NULL : path_join(dir, ents[i]->d_name);
        if (!rc && !path)
            rc = refit_error_set(REFIT_ENOMEM, "%s: checkpoint", dir);
        if (!rc && is_file(path))
            rc = ckpt_add_file(c, path);
        free(path);
        free(ents[i]);
    }
    free(ents);
    return rc;
}

static int ckpt_collect(refit_st_checkpoint_t *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_files; i++)
        n += refit_st_count(c->files[i]);
    c->sorted = calloc(n ? n : 1, sizeof(*c->sorted));
    if (!c->sorted)
        return refit_error_set(REFIT_ENOMEM, "checkpoint: tensor table");
    for (size_t i = 0; i < c->n_files; i++)
        for (size_t j = 0; j < refit_st_count(c->files[i]); j++)
            c->sorted[c->count++] = refit_st_at(c->files[i], j);
    return 0;
}

int refit_st_checkpoint_open(const char *dir, refit_st_checkpoint_t **out)
{
    if (!dir || !out)
        return refit_error_set(REFIT_EINVAL, "refit_st_checkpoint_open: NULL argument");
    refit_st_checkpoint_t *c = calloc(1, sizeof(*c));
    if (!c)
        return refit_error_set(REFIT_ENOMEM, "%s: checkpoint", dir);
    char *index = path_join(dir, "model.safetensors.index.json");
    char *single = path_join(dir, "model.safetensors");
    int rc = 0;
    if (!index || !single)
        rc = refit_error_set(REFIT_ENOMEM, "%s: checkpoint", dir);
    else if (is_file(dir)) /* a lone file named directly */
        rc = ckpt_add_file(c, dir);
    else if (is_file(index))
        rc = ckpt_load_index(c, dir, index);
    else if (is_file(single))
        rc = ckpt_add_file(c, single);
    else
        rc = ckpt_load_glob(c, dir);
    if (!rc && !c->sorted)
        rc = ckpt_collect(c);
    if (!rc) {
        qsort(c->sorted, c->count, sizeof(*c->sorted), name_cmp);
        for (size_t i = 1; i < c->count && !rc; i++)
            if (!strcmp(c->sorted[i - 1]->name, c->sorted[i]->name))
                rc = refit_error_set(REFIT_EPROTO, "%s: tensor '" NAME_FMT "' is in both %s and %s",
                                     dir, c->sorted[i]->name, c->sorted[i - 1]->file,
                                     c->sorted[i]->file);
    }
    free(index);
    free(single);
    if (rc) {
        refit_st_checkpoint_close(c);
        return rc;
    }
    refit_log(REFIT_LOG_DEBUG, "safetensors", "%s: %zu tensors in %zu files", dir, c->count,
              c->n_files);
    *out = c;
    return 0;
}

void refit_st_checkpoint_close(refit_st_checkpoint_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_files; i++)
        refit_st_close(c->files[i]);
    free(c->files);
    free(c->sorted);
    free(c);
}

size_t refit_st_checkpoint_count(const refit_st_checkpoint_t *c)
{
    return c ? c->count : 0;
}

const struct refit_st_tensor *refit_st_checkpoint_at(const refit_st_checkpoint_t *c, size_t i)
{
    return c && i < c->count ? c->sorted[i] : NULL;
}

const struct refit_st_tensor *refit_st_checkpoint_find(const refit_st_checkpoint_t *c,
                                                       const char *name)
{
    return c && name ? find_sorted(c->sorted, c->count, name) : NULL;
}
