/* catalog.c — catalogs, source records, heartbeats and acks: their msgpack
 * encoding, validating decoders, store keys and retention.
 *
 * Encoding uses msgpack-c's packer.  Decoding uses the small cursor reader
 * below rather than msgpack_unpack: msgpack_unpack allocates every array
 * and map from the count on the wire before it has seen the elements (a
 * 5-byte header can ask for 100 GB), and it builds an object tree we would
 * only walk once.  The reader checks every count against the bytes left,
 * and decodes straight into our structures (fast enough for 20k-tensor
 * catalogs at hundreds of MB/s). */
#include <inttypes.h>
#include <limits.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "msgpack_pk.h"
#include "refit/catalog.h"
#include "refit/status.h"

/* ------------------------------------------------------------------ */
/* Names, hashes, times */

static const char *const role_names[REFIT_CAT_ROLE_COUNT_] = {
    NULL, "replicated", "column", "qkv_column", "gated_column", "row", "expert_column", "expert_row", "vocab",
};

const char *refit_cat_role_name(enum refit_cat_role r)
{
    return r > 0 && r < REFIT_CAT_ROLE_COUNT_ ? role_names[r] : "invalid";
}

int refit_cat_role_parse(const char *s, enum refit_cat_role *out)
{
    for (int r = 1; r < REFIT_CAT_ROLE_COUNT_; r++)
        if (!strcmp(s, role_names[r])) {
            *out = (enum refit_cat_role)r;
            return 0;
        }
    return refit_error_set(REFIT_EINVAL, "unknown tensor role '%s'", s);
}

static const char *const status_names[] = {NULL, "INIT", "READY", "STALE"};

const char *refit_source_status_name(uint32_t st)
{
    return st >= 1 && st <= 3 ? status_names[st] : "INVALID";
}

void refit_hash128_hex(const struct refit_hash128 *h, char out[33])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hx[h->b[i] >> 4];
        out[2 * i + 1] = hx[h->b[i] & 15];
    }
    out[32] = '\0';
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int refit_hash128_parse(const char *hex, struct refit_hash128 *out)
{
    if (!hex || strlen(hex) != 32)
        return refit_error_set(REFIT_EINVAL, "catalog hash '%s': want 32 lower-case hex digits", hex ? hex : "");
    for (int i = 0; i < 16; i++) {
        int a = hexval(hex[2 * i]), b = hexval(hex[2 * i + 1]);
        if (a < 0 || b < 0)
            return refit_error_set(REFIT_EINVAL, "catalog hash '%s': want 32 lower-case hex digits", hex);
        out->b[i] = (uint8_t)(a << 4 | b);
    }
    return 0;
}

void refit_hash128_of(const void *buf, size_t len, struct refit_hash128 *out)
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(buf, len));
    memcpy(out->b, c.digest, 16);
}

uint64_t refit_time_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------ */
/* The msgpack reader */

struct dec {
    const uint8_t *p, *end, *start;
    const char *key;      /* store key or file, for messages */
    const char *field;    /* field being read */
    ptrdiff_t tensor;     /* tensor index or -1 */
};

#define DEPTH_MAX 32

static int dec_fail(struct dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int dec_fail(struct dec *d, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!d->start) /* checking a tensor being added, not bytes */
        return refit_error_set(REFIT_EPROTO, "field '%s': %s", d->field, msg);
    if (d->tensor >= 0)
        return refit_error_set(REFIT_EPROTO, "%s: tensor %td, field '%s': %s (byte %td)",
                               d->key ? d->key : "(value)", d->tensor, d->field, msg, d->p - d->start);
    return refit_error_set(REFIT_EPROTO, "%s: field '%s': %s (byte %td)", d->key ? d->key : "(value)",
                           d->field, msg, d->p - d->start);
}

/* A reader over one top-level value (what: its kind, which names it in
 * messages when no key is given). */
static struct dec dec_top(const void *buf, size_t len, const char *key, const char *what)
{
    struct dec d = {.p = buf, .end = (const uint8_t *)buf + len, .start = buf, .key = key ? key : what,
                    .field = "(top)", .tensor = -1};
    return d;
}

static inline size_t left(const struct dec *d)
{
    return (size_t)(d->end - d->p);
}

static inline uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Read n bytes of big-endian length/number after the type byte. */
static inline int take(struct dec *d, int n, uint64_t *v)
{
    if (left(d) < (size_t)n)
        return dec_fail(d, "truncated");
    *v = be(d->p, n);
    d->p += n;
    return 0;
}

static const char *type_name(uint8_t t)
{
    if (t <= 0x7f || t >= 0xe0 || (t >= 0xcc && t <= 0xd3))
        return "integer";
    if ((t >= 0xa0 && t <= 0xbf) || (t >= 0xd9 && t <= 0xdb))
        return "string";
    if ((t >= 0x90 && t <= 0x9f) || t == 0xdc || t == 0xdd)
        return "array";
    if ((t >= 0x80 && t <= 0x8f) || t == 0xde || t == 0xdf)
        return "map";
    if (t >= 0xc4 && t <= 0xc6)
        return "binary";
    if (t == 0xc0)
        return "nil";
    if (t == 0xc2 || t == 0xc3)
        return "boolean";
    if (t == 0xca || t == 0xcb)
        return "float";
    return "ext or reserved";
}

static int rd_int(struct dec *d, int64_t *out)
{
    if (!left(d))
        return dec_fail(d, "truncated, integer expected");
    uint8_t t = *d->p++;
    uint64_t v = 0;
    int rc;
    if (t <= 0x7f) {
        *out = t;
        return 0;
    }
    if (t >= 0xe0) {
        *out = (int8_t)t;
        return 0;
    }
    switch (t) {
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        if ((rc = take(d, 1 << (t - 0xcc), &v)))
            return rc;
        if (v > INT64_MAX)
            return dec_fail(d, "integer %" PRIu64 " out of range", v);
        *out = (int64_t)v;
        return 0;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int n = 1 << (t - 0xd0);
        if ((rc = take(d, n, &v)))
            return rc;
        /* sign-extend n bytes */
        int shift = 64 - 8 * n;
        *out = shift ? (int64_t)(v << shift) >> shift : (int64_t)v;
        return 0;
    }
    default:
        d->p--;
        return dec_fail(d, "%s where an integer was expected", type_name(t));
    }
}

static int rd_u64(struct dec *d, uint64_t *out)
{
    if (left(d) && *d->p == 0xcf) { /* the full u64 range */
        d->p++;
        return take(d, 8, out);
    }
    int64_t v;
    int rc = rd_int(d, &v);
    if (rc)
        return rc;
    if (v < 0)
        return dec_fail(d, "negative value %" PRId64, v);
    *out = (uint64_t)v;
    return 0;
}

static int rd_u32(struct dec *d, uint32_t *out, uint32_t max)
{
    uint64_t v = 0;
    int rc = rd_u64(d, &v);
    if (rc)
        return rc;
    if (v > max)
        return dec_fail(d, "value %" PRIu64 " above the limit %" PRIu32, v, max);
    *out = (uint32_t)v;
    return 0;
}

/* A container header; the count is checked against the bytes left (every
 * element takes at least min_elem bytes) before anyone allocates. */
static int rd_container(struct dec *d, int map, uint32_t *n, size_t min_elem)
{
    if (!left(d))
        return dec_fail(d, "truncated, %s expected", map ? "map" : "array");
    uint8_t t = *d->p++;
    uint64_t v = 0;
    int rc;
    uint8_t fix_lo = map ? 0x80 : 0x90, c16 = map ? 0xde : 0xdc, c32 = map ? 0xdf : 0xdd;
    if (t >= fix_lo && t <= fix_lo + 15) {
        v = t & 15u;
    } else if (t == c16) {
        if ((rc = take(d, 2, &v)))
            return rc;
    } else if (t == c32) {
        if ((rc = take(d, 4, &v)))
            return rc;
    } else {
        d->p--;
        return dec_fail(d, "%s where %s was expected", type_name(t), map ? "a map" : "an array");
    }
    if (v * min_elem * (map ? 2u : 1u) > left(d))
        return dec_fail(d, "%s claims %" PRIu64 " elements, more than the %zu bytes left hold",
                        map ? "map" : "array", v, left(d));
    *n = (uint32_t)v;
    return 0;
}

static int rd_bytes(struct dec *d, int bin, const uint8_t **s, uint32_t *len, uint32_t max)
{
    if (!left(d))
        return dec_fail(d, "truncated, %s expected", bin ? "binary" : "string");
    uint8_t t = *d->p++;
    uint64_t v = 0;
    int rc;
    if (!bin && t >= 0xa0 && t <= 0xbf) {
        v = t & 31u;
    } else if ((!bin && t == 0xd9) || (bin && t == 0xc4)) {
        if ((rc = take(d, 1, &v)))
            return rc;
    } else if ((!bin && t == 0xda) || (bin && t == 0xc5)) {
        if ((rc = take(d, 2, &v)))
            return rc;
    } else if ((!bin && t == 0xdb) || (bin && t == 0xc6)) {
        if ((rc = take(d, 4, &v)))
            return rc;
    } else {
        d->p--;
        return dec_fail(d, "%s where %s was expected", type_name(t), bin ? "binary" : "a string");
    }
    if (v > max)
        return dec_fail(d, "%s of %" PRIu64 " bytes, more than the %" PRIu32 " allowed", bin ? "binary" : "string",
                        v, max);
    if (v > left(d))
        return dec_fail(d, "%s of %" PRIu64 " bytes but only %zu left", bin ? "binary" : "string", v, left(d));
    *s = d->p;
    *len = (uint32_t)v;
    d->p += v;
    return 0;
}

static int rd_str(struct dec *d, const uint8_t **s, uint32_t *len, uint32_t max)
{
    int rc = rd_bytes(d, 0, s, len, max);
    if (!rc && memchr(*s, 0, *len))
        return dec_fail(d, "string contains a NUL byte");
    return rc;
}

/* Skip one object of any type (unknown fields, trailing elements). */
/* The next key of a map; the caller reads its value. */
static int rd_key(struct dec *d, const uint8_t **k, uint32_t *kl)
{
    d->field = "(key)";
    return rd_str(d, k, kl, 64);
}

/* The schema field of a catalog, record or ack: only this build's. */
static int rd_schema(struct dec *d, uint32_t *schema)
{
    d->field = "schema";
    int rc = rd_u32(d, schema, UINT32_MAX);
    if (!rc && *schema != REFIT_CATALOG_SCHEMA)
        rc = dec_fail(d, "schema %u, this build reads %d", *schema, REFIT_CATALOG_SCHEMA);
    return rc;
}

/* Nothing may follow the value (what: the kind, for the message). */
static int dec_end(struct dec *d, const char *what)
{
    if (d->p == d->end)
        return 0;
    d->field = "(end)";
    return dec_fail(d, "%zu bytes after the %s", left(d), what);
}

static int rd_skip(struct dec *d, int depth)
{
    if (depth > DEPTH_MAX)
        return dec_fail(d, "nested deeper than %d", DEPTH_MAX);
    if (!left(d))
        return dec_fail(d, "truncated");
    uint8_t t = *d->p;
    uint64_t v = 0;
    int rc;
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        d->p++;
        return 0;
    }
    if ((t >= 0xcc && t <= 0xd3)) {
        int64_t x;
        return t == 0xcf ? (d->p++, take(d, 8, &v)) : rd_int(d, &x);
    }
    if ((t >= 0xa0 && t <= 0xbf) || (t >= 0xd9 && t <= 0xdb) || (t >= 0xc4 && t <= 0xc6)) {
        const uint8_t *s;
        uint32_t l;
        return rd_bytes(d, t >= 0xc4 && t <= 0xc6, &s, &l, UINT32_MAX);
    }
    if ((t >= 0x80 && t <= 0x9f) || (t >= 0xdc && t <= 0xdf)) {
        int map = (t >= 0x80 && t <= 0x8f) || t == 0xde || t == 0xdf;
        uint32_t n;
        if ((rc = rd_container(d, map, &n, 1)))
            return rc;
        for (uint64_t i = 0; i < (uint64_t)n * (map ? 2u : 1u); i++)
            if ((rc = rd_skip(d, depth + 1)))
                return rc;
        return 0;
    }
    d->p++;
    switch (t) {
    case 0xca: return take(d, 4, &v);
    case 0xcb: return take(d, 8, &v);
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: {
        size_t n = 1 + ((size_t)1 << (t - 0xd4));
        if (left(d) < n)
            return dec_fail(d, "truncated ext");
        d->p += n;
        return 0;
    }
    case 0xc7: case 0xc8: case 0xc9: {
        if ((rc = take(d, 1 << (t - 0xc7), &v)))
            return rc;
        if (left(d) < 1 || v > left(d) - 1)
            return dec_fail(d, "truncated ext");
        d->p += 1 + v;
        return 0;
    }
    default:
        d->p--;
        return dec_fail(d, "reserved type byte 0x%02x", t);
    }
}

/* Map keys we know are short ASCII; compare without copying. */
static inline int key_is(const uint8_t *k, uint32_t kl, const char *want)
{
    size_t wl = strlen(want);
    return kl == wl && !memcmp(k, want, wl);
}

/* ------------------------------------------------------------------ */
/* The head of every value refit stores: a map of n fields, the first
 * of them the schema this build writes. */
static void pk_head(struct pk *k, uint32_t n)
{
    PK(k, msgpack_pack_map(&k->p, n));
    pk_str(k, "schema");
    PK(k, msgpack_pack_uint32(&k->p, REFIT_CATALOG_SCHEMA));
}


/* ------------------------------------------------------------------ */
/* Catalog */

struct refit_catalog_priv_ {
    char *arena;          /* decoded: every name, NUL-terminated */
    int names_owned;      /* built: each name malloc'ed */
    uint32_t *index;      /* open addressing: tensor index + 1, 0 empty */
    size_t index_cap;     /* power of two */
    size_t cap_tensors;
    uint32_t cap_regions;
};

int refit_catalog_create(refit_catalog_t **out)
{
    refit_catalog_t *c = calloc(1, sizeof(*c));
    struct refit_catalog_priv_ *p = calloc(1, sizeof(*p));
    if (!c || !p) {
        free(c);
        free(p);
        return REFIT_ENOMEM;
    }
    c->schema = REFIT_CATALOG_SCHEMA;
    c->priv_ = p;
    p->names_owned = 1;
    *out = c;
    return 0;
}

void refit_catalog_destroy(refit_catalog_t *c)
{
    if (!c)
        return;
    if (c->priv_) {
        if (c->priv_->names_owned)
            for (size_t i = 0; i < c->n_tensors; i++)
                free((char *)c->tensors[i].name);
        free(c->priv_->arena);
        free(c->priv_->index);
        free(c->priv_);
    }
    free(c->tensors);
    free(c->region_len);
    free(c);
}

static inline uint64_t name_hash(const char *s, size_t l)
{
    return XXH3_64bits(s, l);
}

/* Insert tensor i; returns the index of an existing tensor of that name,
 * or -1 when inserted. */
static ptrdiff_t index_insert(struct refit_catalog_priv_ *p, const struct refit_cat_tensor *ts, size_t i,
                              size_t nl)
{
    size_t mask = p->index_cap - 1;
    for (size_t h = name_hash(ts[i].name, nl) & mask;; h = (h + 1) & mask) {
        uint32_t e = p->index[h];
        if (!e) {
            p->index[h] = (uint32_t)(i + 1);
            return -1;
        }
        if (!strcmp(ts[e - 1].name, ts[i].name))
            return (ptrdiff_t)e - 1;
    }
}

static int index_reserve(refit_catalog_t *c, size_t n)
{
    struct refit_catalog_priv_ *p = c->priv_;
    if (p->index_cap >= 2 * n && p->index_cap)
        return 0;
    size_t cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    uint32_t *ni = calloc(cap, sizeof(*ni));
    if (!ni)
        return REFIT_ENOMEM;
    free(p->index);
    p->index = ni;
    p->index_cap = cap;
    for (size_t i = 0; i < c->n_tensors; i++)
        index_insert(p, c->tensors, i, strlen(c->tensors[i].name));
    return 0;
}

ptrdiff_t refit_catalog_find(const refit_catalog_t *c, const char *name)
{
    const struct refit_catalog_priv_ *p = c->priv_;
    if (!p || !p->index_cap)
        return -1;
    size_t mask = p->index_cap - 1;
    for (size_t h = name_hash(name, strlen(name)) & mask;; h = (h + 1) & mask) {
        uint32_t e = p->index[h];
        if (!e)
            return -1;
        if (!strcmp(c->tensors[e - 1].name, name))
            return (ptrdiff_t)e - 1;
    }
}

int refit_catalog_add_region(refit_catalog_t *c, uint64_t len, uint32_t *index)
{
    struct refit_catalog_priv_ *p = c->priv_;
    if (c->n_regions >= REFIT_CATALOG_MAX_REGIONS)
        return refit_error_set(REFIT_ERANGE, "catalog: more than %d regions", REFIT_CATALOG_MAX_REGIONS);
    if (c->n_regions == p->cap_regions) {
        uint32_t nc = p->cap_regions ? p->cap_regions * 2 : 8;
        uint64_t *nr = realloc(c->region_len, nc * sizeof(*nr));
        if (!nr)
            return REFIT_ENOMEM;
        c->region_len = nr;
        p->cap_regions = nc;
    }
    c->region_len[c->n_regions] = len;
    if (index)
        *index = c->n_regions;
    c->n_regions++;
    return 0;
}

/* The rules every tensor obeys, for the builder and the decoder alike.
 * `fail` formats the error with the right context. */
static int tensor_check(const refit_catalog_t *c, const struct refit_cat_tensor *t, struct dec *d)
{
#define BAD(field_, ...) (d->field = field_, dec_fail(d, __VA_ARGS__))
    size_t esz = refit_dtype_size((enum refit_dtype)t->dtype);
    if (t->dtype == 0 || t->dtype >= REFIT_DTYPE_COUNT_ || !esz)
        return BAD("dtype", "unknown dtype %u", t->dtype);
    if (t->role == 0 || t->role >= REFIT_CAT_ROLE_COUNT_)
        return BAD("role", "unknown role %u", t->role);
    if (t->ndim > REFIT_MAX_DIMS)
        return BAD("shape", "%u dimensions, at most %d", t->ndim, REFIT_MAX_DIMS);
    uint64_t elems = 1;
    for (uint32_t i = 0; i < t->ndim; i++) {
        if (t->shape[i] > t->global_shape[i])
            return BAD("shape", "dimension %u: local %" PRIu64 " > global %" PRIu64, i, t->shape[i],
                       t->global_shape[i]);
        if (t->shape[i] && elems > UINT64_MAX / t->shape[i])
            return BAD("shape", "element count overflows");
        elems *= t->shape[i];
    }
    if (elems && esz > UINT64_MAX / elems)
        return BAD("nbytes", "byte count overflows");
    if (t->nbytes != elems * esz)
        return BAD("nbytes", "%" PRIu64 " but shape and dtype make %" PRIu64, t->nbytes, elems * esz);
    int expert_role = t->role == REFIT_CAT_ROLE_EXPERT_COLUMN || t->role == REFIT_CAT_ROLE_EXPERT_ROW;
    int want_axis = t->role == REFIT_CAT_ROLE_REPLICATED ? -1
                    : (t->role == REFIT_CAT_ROLE_ROW || t->role == REFIT_CAT_ROLE_EXPERT_ROW) ? 1
                                                                                      : 0;
    if (t->shard_axis != want_axis)
        return BAD("shard_axis", "%d, but role %s shards along %d", t->shard_axis,
                   refit_cat_role_name((enum refit_cat_role)t->role), want_axis);
    if (t->shard_axis >= 0 && (uint32_t)t->shard_axis >= t->ndim)
        return BAD("shard_axis", "%d, but the tensor has %u dimensions", t->shard_axis, t->ndim);
    for (uint32_t i = 0; i < t->ndim; i++)
        if ((int32_t)i != t->shard_axis && t->shape[i] != t->global_shape[i])
            return BAD("shape", "dimension %u differs from the global shape but is not the shard axis", i);
    if (t->shard_axis >= 0) {
        uint64_t g = t->global_shape[t->shard_axis];
        if (t->shard_len != t->shape[t->shard_axis] || t->shard_start > g || t->shard_len > g - t->shard_start)
            return BAD("shard_range", "[%" PRIu64 ", +%" PRIu64 ") does not fit global %" PRIu64
                       " with local %" PRIu64, t->shard_start, t->shard_len, g, t->shape[t->shard_axis]);
    } else if (t->shard_start || t->shard_len) {
        return BAD("shard_range", "set on an unsharded tensor");
    }
    if (expert_role ? t->expert < 0 || t->expert > INT32_MAX : t->expert != -1)
        return BAD("expert", "%" PRId64 " for role %s", t->expert, refit_cat_role_name((enum refit_cat_role)t->role));
    if (t->region >= c->n_regions)
        return BAD("region", "%u, but the catalog has %u regions", t->region, c->n_regions);
    uint64_t rl = c->region_len[t->region];
    if (t->offset > rl || t->nbytes > rl - t->offset)
        return BAD("offset", "[%" PRIu64 ", +%" PRIu64 ") outside region %u of %" PRIu64 " bytes", t->offset,
                   t->nbytes, t->region, rl);
    return 0;
#undef BAD
}

int refit_catalog_add(refit_catalog_t *c, const struct refit_cat_tensor *t)
{
    struct refit_catalog_priv_ *p = c->priv_;
    if (!p->names_owned)
        return refit_error_set(REFIT_EINVAL, "catalog: a decoded catalog is read-only");
    size_t nl = t->name ? strlen(t->name) : 0;
    if (!nl || nl > REFIT_CATALOG_MAX_NAME)
        return refit_error_set(REFIT_EINVAL, "catalog: tensor name empty or longer than %d bytes",
                               REFIT_CATALOG_MAX_NAME);
    struct dec d = {.key = "catalog", .field = "", .tensor = (ptrdiff_t)c->n_tensors};
    int rc = tensor_check(c, t, &d);
    if (rc) {
        refit_error_push(rc, "catalog: adding tensor '%s'", t->name);
        return REFIT_EINVAL;
    }
    if (c->n_tensors >= REFIT_CATALOG_MAX_TENSORS)
        return refit_error_set(REFIT_ERANGE, "catalog: more than %d tensors", REFIT_CATALOG_MAX_TENSORS);
    if (refit_catalog_find(c, t->name) >= 0)
        return refit_error_set(REFIT_EEXIST, "catalog: tensor '%s' added twice", t->name);
    if (c->n_tensors == p->cap_tensors) {
        size_t nc = p->cap_tensors ? p->cap_tensors * 2 : 64;
        struct refit_cat_tensor *nt = realloc(c->tensors, nc * sizeof(*nt));
        if (!nt)
            return REFIT_ENOMEM;
        c->tensors = nt;
        p->cap_tensors = nc;
    }
    if ((rc = index_reserve(c, c->n_tensors + 1)))
        return rc;
    char *name = strdup(t->name);
    if (!name)
        return REFIT_ENOMEM;
    c->tensors[c->n_tensors] = *t;
    c->tensors[c->n_tensors].name = name;
    index_insert(p, c->tensors, c->n_tensors, nl);
    c->n_tensors++;
    return 0;
}

#define TENSOR_FIELDS 13      /* required */
#define TENSOR_FIELDS_OUT 14  /* written: + chunk_rows */

int refit_catalog_encode(const refit_catalog_t *c, void **buf, size_t *len)
{
    struct pk k;
    pk_init(&k, 64 + c->n_regions * 9 + c->n_tensors * 160);
    pk_head(&k, 3);
    pk_str(&k, "regions");
    PK(&k, msgpack_pack_array(&k.p, c->n_regions));
    for (uint32_t i = 0; i < c->n_regions; i++)
        PK(&k, msgpack_pack_uint64(&k.p, c->region_len[i]));
    pk_str(&k, "tensors");
    PK(&k, msgpack_pack_array(&k.p, (uint32_t)c->n_tensors));
    for (size_t i = 0; i < c->n_tensors; i++) {
        const struct refit_cat_tensor *t = &c->tensors[i];
        PK(&k, msgpack_pack_array(&k.p, TENSOR_FIELDS_OUT));
        pk_str(&k, t->name);
        pk_str(&k, refit_dtype_name((enum refit_dtype)t->dtype));
        pk_str(&k, refit_cat_role_name((enum refit_cat_role)t->role));
        PK(&k, msgpack_pack_array(&k.p, t->ndim));
        for (uint32_t j = 0; j < t->ndim; j++)
            PK(&k, msgpack_pack_uint64(&k.p, t->shape[j]));
        PK(&k, msgpack_pack_array(&k.p, t->ndim));
        for (uint32_t j = 0; j < t->ndim; j++)
            PK(&k, msgpack_pack_uint64(&k.p, t->global_shape[j]));
        PK(&k, msgpack_pack_int32(&k.p, t->shard_axis));
        PK(&k, msgpack_pack_uint64(&k.p, t->shard_start));
        PK(&k, msgpack_pack_uint64(&k.p, t->shard_len));
        PK(&k, msgpack_pack_int64(&k.p, t->expert));
        PK(&k, msgpack_pack_uint32(&k.p, t->region));
        PK(&k, msgpack_pack_uint64(&k.p, t->offset));
        PK(&k, msgpack_pack_uint64(&k.p, t->nbytes));
        PK(&k, msgpack_pack_uint64(&k.p, t->checksum));
        PK(&k, msgpack_pack_uint32(&k.p, t->chunk_rows));
    }
    return pk_finish(&k, buf, len);
}

/* dtype and role names are matched without copying. */
static int match_name(const uint8_t *s, uint32_t l, int is_role, uint32_t *out)
{
    int n = is_role ? REFIT_CAT_ROLE_COUNT_ : REFIT_DTYPE_COUNT_;
    for (int i = 1; i < n; i++) {
        const char *nm = is_role ? role_names[i] : refit_dtype_name((enum refit_dtype)i);
        if (strlen(nm) == l && !memcmp(nm, s, l)) {
            *out = (uint32_t)i;
            return 0;
        }
    }
    return -1;
}

static int rd_shape(struct dec *d, uint64_t *dims, uint32_t *ndim)
{
    uint32_t n;
    int rc = rd_container(d, 0, &n, 1);
    if (rc)
        return rc;
    if (n > REFIT_MAX_DIMS)
        return dec_fail(d, "%u dimensions, at most %d", n, REFIT_MAX_DIMS);
    for (uint32_t i = 0; i < n; i++)
        if ((rc = rd_u64(d, &dims[i])))
            return rc;
    *ndim = n;
    return 0;
}

static int rd_tensor(struct dec *d, refit_catalog_t *c, struct refit_cat_tensor *t, char **arena)
{
    uint32_t n, l;
    const uint8_t *s;
    int rc;
    d->field = "tensor";
    if ((rc = rd_container(d, 0, &n, 1)))
        return rc;
    if (n < TENSOR_FIELDS)
        return dec_fail(d, "%u fields, %d expected", n, TENSOR_FIELDS);
    d->field = "name";
    if ((rc = rd_str(d, &s, &l, REFIT_CATALOG_MAX_NAME)))
        return rc;
    if (!l)
        return dec_fail(d, "empty name");
    memcpy(*arena, s, l);
    (*arena)[l] = '\0';
    t->name = *arena;
    *arena += l + 1;
    d->field = "dtype";
    if ((rc = rd_str(d, &s, &l, 32)))
        return rc;
    if (match_name(s, l, 0, &t->dtype))
        return dec_fail(d, "unknown dtype '%.*s'", (int)l, (const char *)s);
    d->field = "role";
    if ((rc = rd_str(d, &s, &l, 32)))
        return rc;
    if (match_name(s, l, 1, &t->role))
        return dec_fail(d, "unknown role '%.*s'", (int)l, (const char *)s);
    uint32_t gnd;
    d->field = "shape";
    if ((rc = rd_shape(d, t->shape, &t->ndim)))
        return rc;
    d->field = "global_shape";
    if ((rc = rd_shape(d, t->global_shape, &gnd)))
        return rc;
    if (gnd != t->ndim)
        return dec_fail(d, "%u dimensions, the local shape has %u", gnd, t->ndim);
    int64_t v;
    d->field = "shard_axis";
    if ((rc = rd_int(d, &v)))
        return rc;
    if (v < -1 || v >= REFIT_MAX_DIMS)
        return dec_fail(d, "%" PRId64 " out of range", v);
    t->shard_axis = (int32_t)v;
    d->field = "shard_start";
    if ((rc = rd_u64(d, &t->shard_start)))
        return rc;
    d->field = "shard_len";
    if ((rc = rd_u64(d, &t->shard_len)))
        return rc;
    d->field = "expert";
    if ((rc = rd_int(d, &t->expert)))
        return rc;
    d->field = "region";
    if ((rc = rd_u32(d, &t->region, UINT32_MAX)))
        return rc;
    d->field = "offset";
    if ((rc = rd_u64(d, &t->offset)))
        return rc;
    d->field = "nbytes";
    if ((rc = rd_u64(d, &t->nbytes)))
        return rc;
    d->field = "checksum";
    if ((rc = rd_u64(d, &t->checksum)))
        return rc;
    t->chunk_rows = 0;
    if (n > TENSOR_FIELDS) {
        d->field = "chunk_rows";
        if ((rc = rd_u32(d, &t->chunk_rows, 1u << 30)))
            return rc;
    }
    d->field = "tensor";
    for (uint32_t i = TENSOR_FIELDS + 1; i < n; i++) /* later minor versions may append fields */
        if ((rc = rd_skip(d, 1)))
            return rc;
    return tensor_check(c, t, d);
}

static int rd_tensors(struct dec *d, refit_catalog_t *c)
{
    uint32_t n;
    int rc = rd_container(d, 0, &n, TENSOR_FIELDS + 1);
    if (rc)
        return rc;
    if (n > REFIT_CATALOG_MAX_TENSORS)
        return dec_fail(d, "%u tensors, at most %d", n, REFIT_CATALOG_MAX_TENSORS);
    struct refit_catalog_priv_ *p = c->priv_;
    /* Names cannot take more than the input: one arena. */
    p->arena = malloc(left(d) + 1);
    c->tensors = calloc(n ? n : 1, sizeof(*c->tensors));
    if (!p->arena || !c->tensors)
        return REFIT_ENOMEM;
    p->cap_tensors = n;
    if ((rc = index_reserve(c, n)))
        return rc;
    char *arena = p->arena;
    for (uint32_t i = 0; i < n; i++) {
        d->tensor = (ptrdiff_t)i;
        if ((rc = rd_tensor(d, c, &c->tensors[i], &arena)))
            return rc;
        ptrdiff_t dup = index_insert(p, c->tensors, i, strlen(c->tensors[i].name));
        if (dup >= 0) {
            d->field = "name";
            return dec_fail(d, "'%s' repeats tensor %td", c->tensors[i].name, dup);
        }
        c->n_tensors = i + 1;
    }
    d->tensor = -1;
    return 0;
}

static int rd_regions(struct dec *d, refit_catalog_t *c)
{
    uint32_t n;
    int rc = rd_container(d, 0, &n, 1);
    if (rc)
        return rc;
    if (n > REFIT_CATALOG_MAX_REGIONS)
        return dec_fail(d, "%u regions, at most %d", n, REFIT_CATALOG_MAX_REGIONS);
    c->region_len = calloc(n ? n : 1, sizeof(uint64_t));
    if (!c->region_len)
        return REFIT_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        if ((rc = rd_u64(d, &c->region_len[i])))
            return rc;
        c->n_regions = i + 1;
    }
    c->priv_->cap_regions = n;
    return 0;
}

int refit_catalog_decode(const void *buf, size_t len, const char *key, refit_catalog_t **out)
{
    struct dec d = dec_top(buf, len, key, "catalog");
    refit_catalog_t *c;
    int rc = refit_catalog_create(&c);
    if (rc)
        return rc;
    c->priv_->names_owned = 0;
    uint32_t n;
    int have_schema = 0, have_regions = 0, have_tensors = 0;
    const uint8_t *tensors_at = NULL;
    rc = rd_container(&d, 1, &n, 1);
    for (uint32_t i = 0; !rc && i < n; i++) {
        const uint8_t *k;
        uint32_t kl;
        if ((rc = rd_key(&d, &k, &kl)))
            break;
        int is_schema = key_is(k, kl, "schema"), is_regions = key_is(k, kl, "regions"),
            is_tensors = key_is(k, kl, "tensors");
        if ((is_schema && have_schema) || (is_regions && have_regions) || (is_tensors && have_tensors)) {
            d.field = is_schema ? "schema" : is_regions ? "regions" : "tensors";
            rc = dec_fail(&d, "appears twice");
        } else if (is_schema) {
            rc = rd_schema(&d, &c->schema);
            have_schema = 1;
        } else if (is_regions) {
            d.field = "regions";
            rc = rd_regions(&d, c);
            have_regions = 1;
        } else if (is_tensors) {
            /* Tensors refer to regions: read them now when the regions came
             * first (as our encoder writes them), else skip and come back. */
            d.field = "tensors";
            if (have_regions) {
                rc = rd_tensors(&d, c);
            } else {
                tensors_at = d.p;
                rc = rd_skip(&d, 0);
            }
            have_tensors = 1;
        } else {
            d.field = "(unknown)";
            rc = rd_skip(&d, 0);
        }
    }
    if (!rc && (!have_schema || !have_regions || !have_tensors)) {
        d.field = !have_schema ? "schema" : !have_regions ? "regions" : "tensors";
        rc = dec_fail(&d, "missing");
    }
    if (!rc)
        rc = dec_end(&d, "catalog");
    if (!rc && tensors_at) {
        struct dec t = d;
        t.p = tensors_at;
        t.field = "tensors";
        rc = rd_tensors(&t, c);
    }
    if (rc) {
        refit_catalog_destroy(c);
        return rc;
    }
    *out = c;
    return 0;
}

int refit_catalog_publish(refit_store_t *s, const void *enc, size_t len, struct refit_hash128 *hash, bool *sent)
{
    struct refit_hash128 h;
    refit_hash128_of(enc, len, &h);
    char key[REFIT_STORE_MAX_KEY + 1];
    refit_key_catalog(key, &h);
    if (hash)
        *hash = h;
    if (sent)
        *sent = false;
    /* Published through this handle before: nothing to send (and a store
     * restart is covered, the catalog being live). */
    if (refit_store_is_live(s, key))
        return 0;
    int rc = refit_store_cas(s, key, NULL, 0, enc, len);
    if (rc == REFIT_ECONFLICT) { /* already there: content-addressed, so identical */
        refit_error_clear();
        rc = 0;
    } else if (!rc && sent) {
        *sent = true;
    }
    /* Live: after a Redis restart it is written again with the records
     * that refer to it. */
    if (!rc)
        rc = refit_store_remember(s, key, enc, len, 0);
    return rc ? refit_error_push(rc, "publish catalog %s", key) : 0;
}

int refit_catalog_fetch(refit_store_t *s, const struct refit_hash128 *hash, refit_catalog_t **out)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    refit_key_catalog(key, hash);
    void *v;
    size_t l;
    int rc = refit_store_get(s, key, &v, &l);
    if (rc)
        return rc;
    struct refit_hash128 got;
    refit_hash128_of(v, l, &got);
    if (memcmp(got.b, hash->b, 16)) {
        char gh[33];
        refit_hash128_hex(&got, gh);
        free(v);
        return refit_error_set(REFIT_ECHECKSUM, "%s: content hashes to %s", key, gh);
    }
    rc = refit_catalog_decode(v, l, key, out);
    free(v);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Keys */

int refit_check_id(const char *what, const char *id)
{
    size_t l = id ? strnlen(id, REFIT_RECORD_MAX_ID + 1) : 0;
    if (!l || l > REFIT_RECORD_MAX_ID || id[0] == '.')
        return refit_error_set(REFIT_EINVAL, "%s '%s': want 1..%d bytes of [A-Za-z0-9_.:-], not starting with '.'",
                               what, id ? id : "(null)", REFIT_RECORD_MAX_ID);
    for (size_t i = 0; i < l; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == ':' || c == '-'))
            return refit_error_set(REFIT_EINVAL, "%s '%s': byte %zu is not one of [A-Za-z0-9_.:-]", what, id, i);
    }
    return 0;
}

int refit_key_source(char *buf, const char *sid)
{
    int rc = refit_check_id("source id", sid);
    if (!rc)
        snprintf(buf, REFIT_STORE_MAX_KEY + 1, "sources/%s", sid);
    return rc;
}

int refit_key_version_source(char *buf, uint64_t v, const char *sid)
{
    int rc = refit_check_id("source id", sid);
    if (!rc)
        snprintf(buf, REFIT_STORE_MAX_KEY + 1, "versions/%" PRIu64 "/sources/%s", v, sid);
    return rc;
}

int refit_key_ack(char *buf, uint64_t v, const char *rid)
{
    int rc = refit_check_id("receiver id", rid);
    if (!rc)
        snprintf(buf, REFIT_STORE_MAX_KEY + 1, "versions/%" PRIu64 "/acks/%s", v, rid);
    return rc;
}

int refit_key_heartbeat(char *buf, const char *sid)
{
    int rc = refit_check_id("source id", sid);
    if (!rc)
        snprintf(buf, REFIT_STORE_MAX_KEY + 1, "heartbeats/%s", sid);
    return rc;
}

void refit_key_catalog(char *buf, const struct refit_hash128 *h)
{
    char hex[33];
    refit_hash128_hex(h, hex);
    snprintf(buf, REFIT_STORE_MAX_KEY + 1, "catalogs/%s", hex);
}

int refit_key_parse_version(const char *key, uint64_t *version)
{
    if (strncmp(key, "versions/", 9))
        return REFIT_EINVAL;
    const char *p = key + 9;
    uint64_t v = 0;
    size_t nd = 0;
    for (; *p >= '0' && *p <= '9'; p++, nd++) {
        if (v > (UINT64_MAX - 9) / 10)
            return REFIT_EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (!nd || (*p && *p != '/'))
        return REFIT_EINVAL;
    *version = v;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Source record */

int refit_record_encode(const struct refit_source_record *r, void **buf, size_t *len)
{
    int rc = refit_check_id("source id", r->source_id);
    if (rc)
        return rc;
    if (!r->model || !r->transport || strlen(r->model) > REFIT_RECORD_MAX_STRING ||
        strlen(r->transport) > REFIT_RECORD_MAX_STRING)
        return refit_error_set(REFIT_EINVAL, "record of %s: model or transport missing or too long", r->source_id);
    if (r->status < REFIT_SOURCE_INIT || r->status > REFIT_SOURCE_STALE)
        return refit_error_set(REFIT_EINVAL, "record of %s: status %u", r->source_id, r->status);
    if (r->address.len > REFIT_RECORD_MAX_BLOB || r->n_rkeys > REFIT_CATALOG_MAX_REGIONS)
        return refit_error_set(REFIT_EINVAL, "record of %s: address or remote keys too large", r->source_id);
    struct pk k;
    size_t hint = 256 + r->address.len;
    for (size_t i = 0; i < r->n_rkeys; i++) {
        if (r->rkeys[i].len > REFIT_RECORD_MAX_BLOB)
            return refit_error_set(REFIT_EINVAL, "record of %s: remote key %zu too large", r->source_id, i);
        hint += r->rkeys[i].len + 5;
    }
    pk_init(&k, hint);
    pk_head(&k, r->keeps > 1 ? 12 : 11);
    pk_str(&k, "source");
    pk_str(&k, r->source_id);
    pk_str(&k, "model");
    pk_str(&k, r->model);
    pk_str(&k, "layout");
    const struct refit_par_layout *L = &r->layout;
    uint32_t lay[8] = {L->tp_rank, L->tp_size, L->pp_rank, L->pp_size, L->ep_rank, L->ep_size, L->etp_rank,
                       L->etp_size};
    PK(&k, msgpack_pack_array(&k.p, 8));
    for (int i = 0; i < 8; i++)
        PK(&k, msgpack_pack_uint32(&k.p, lay[i]));
    pk_str(&k, "transport");
    pk_str(&k, r->transport);
    pk_str(&k, "address");
    pk_bin(&k, r->address.data, r->address.len);
    pk_str(&k, "rkeys");
    PK(&k, msgpack_pack_array(&k.p, (uint32_t)r->n_rkeys));
    for (size_t i = 0; i < r->n_rkeys; i++)
        pk_bin(&k, r->rkeys[i].data, r->rkeys[i].len);
    pk_str(&k, "catalog");
    pk_bin(&k, r->catalog.b, 16);
    pk_str(&k, "version");
    PK(&k, msgpack_pack_uint64(&k.p, r->version));
    pk_str(&k, "status");
    pk_str(&k, refit_source_status_name(r->status));
    pk_str(&k, "heartbeat");
    PK(&k, msgpack_pack_uint64(&k.p, r->heartbeat_ms));
    if (r->keeps > 1) {
        pk_str(&k, "keeps");
        PK(&k, msgpack_pack_uint32(&k.p, r->keeps));
    }
    return pk_finish(&k, buf, len);
}

static int rd_layout(struct dec *d, struct refit_par_layout *L)
{
    uint32_t n, v[8];
    int rc = rd_container(d, 0, &n, 1);
    if (rc)
        return rc;
    if (n != 8)
        return dec_fail(d, "%u entries, 8 expected (tp, pp, ep, etp rank and size)", n);
    for (int i = 0; i < 8; i++)
        if ((rc = rd_u32(d, &v[i], 1u << 24)))
            return rc;
    static const char *names[] = {"tp", "pp", "ep", "etp"};
    for (int i = 0; i < 4; i++)
        if (v[2 * i + 1] == 0 || v[2 * i] >= v[2 * i + 1])
            return dec_fail(d, "%s rank %u of size %u", names[i], v[2 * i], v[2 * i + 1]);
    *L = (struct refit_par_layout){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
    return 0;
}

/* Strings and blobs of a record, located in the input, copied into one
 * allocation once everything is checked. */
struct span {
    const uint8_t *p;
    uint32_t l;
};

static char *put_str(char **at, struct span s)
{
    char *r = *at;
    memcpy(r, s.p, s.l);
    r[s.l] = '\0';
    *at += s.l + 1;
    return r;
}

static int id_span_ok(struct dec *d, struct span s, const char *what)
{
    char tmp[REFIT_RECORD_MAX_ID + 1];
    if (s.l > REFIT_RECORD_MAX_ID)
        return dec_fail(d, "%s of %u bytes", what, s.l);
    memcpy(tmp, s.p, s.l);
    tmp[s.l] = '\0';
    if (refit_check_id(what, tmp))
        return dec_fail(d, "%s", refit_error_message());
    return 0;
}

int refit_record_decode(const void *buf, size_t len, const char *key, struct refit_source_record **out)
{
    struct dec d = dec_top(buf, len, key, "record");
    struct refit_source_record r = {0};
    struct span source = {0}, model = {0}, transport = {0}, address = {0}, hash = {0};
    const uint8_t *rkeys_at = NULL;
    uint32_t n, n_rkeys = 0;
    unsigned seen = 0;
    enum { S_SCHEMA = 1, S_SOURCE = 2, S_MODEL = 4, S_LAYOUT = 8, S_TRANSPORT = 16, S_ADDRESS = 32,
           S_RKEYS = 64, S_CATALOG = 128, S_VERSION = 256, S_STATUS = 512, S_HEARTBEAT = 1024, S_ALL = 2047, S_KEEPS = 2048 /* optional */ };
    int rc = rd_container(&d, 1, &n, 1);
    for (uint32_t i = 0; !rc && i < n; i++) {
        const uint8_t *k;
        uint32_t kl;
        if ((rc = rd_key(&d, &k, &kl)))
            break;
        unsigned bit = 0;
#define FIELD(name_, bit_) else if (key_is(k, kl, name_) && (d.field = name_, bit = bit_, !(seen & bit_)))
        if (0) {
        }
        FIELD("schema", S_SCHEMA)
        {
            rc = rd_schema(&d, &r.schema);
        }
        FIELD("source", S_SOURCE)
        {
            if (!(rc = rd_str(&d, &source.p, &source.l, REFIT_RECORD_MAX_ID)))
                rc = id_span_ok(&d, source, "source id");
        }
        FIELD("model", S_MODEL) rc = rd_str(&d, &model.p, &model.l, REFIT_RECORD_MAX_STRING);
        FIELD("layout", S_LAYOUT) rc = rd_layout(&d, &r.layout);
        FIELD("transport", S_TRANSPORT) rc = rd_str(&d, &transport.p, &transport.l, REFIT_RECORD_MAX_STRING);
        FIELD("address", S_ADDRESS) rc = rd_bytes(&d, 1, &address.p, &address.l, REFIT_RECORD_MAX_BLOB);
        FIELD("rkeys", S_RKEYS)
        {
            rkeys_at = d.p;
            rc = rd_container(&d, 0, &n_rkeys, 1);
            if (!rc && n_rkeys > REFIT_CATALOG_MAX_REGIONS)
                rc = dec_fail(&d, "%u remote keys, at most %d", n_rkeys, REFIT_CATALOG_MAX_REGIONS);
            for (uint32_t j = 0; !rc && j < n_rkeys; j++) {
                const uint8_t *b;
                uint32_t bl;
                rc = rd_bytes(&d, 1, &b, &bl, REFIT_RECORD_MAX_BLOB);
            }
        }
        FIELD("catalog", S_CATALOG)
        {
            rc = rd_bytes(&d, 1, &hash.p, &hash.l, 16);
            if (!rc && hash.l != 16)
                rc = dec_fail(&d, "%u bytes, a 16-byte hash expected", hash.l);
        }
        FIELD("version", S_VERSION) rc = rd_u64(&d, &r.version);
        FIELD("status", S_STATUS)
        {
            const uint8_t *s;
            uint32_t sl;
            rc = rd_str(&d, &s, &sl, 16);
            r.status = 0;
            for (uint32_t st = 1; !rc && st <= 3; st++)
                if (key_is(s, sl, status_names[st]))
                    r.status = st;
            if (!rc && !r.status)
                rc = dec_fail(&d, "'%.*s' is not INIT, READY or STALE", (int)sl, (const char *)s);
        }
        FIELD("heartbeat", S_HEARTBEAT) rc = rd_u64(&d, &r.heartbeat_ms);
        FIELD("keeps", S_KEEPS) rc = rd_u32(&d, &r.keeps, 2);
        else if (bit)
        {
            rc = dec_fail(&d, "appears twice");
        }
        else
        {
            d.field = "(unknown)";
            rc = rd_skip(&d, 0);
        }
#undef FIELD
        seen |= bit;
    }
    if (!rc && (seen & S_ALL) != S_ALL) {
        static const char *names[] = {"schema", "source", "model", "layout", "transport", "address",
                                      "rkeys", "catalog", "version", "status", "heartbeat"};
        for (int b = 0; b < 11; b++)
            if (!(seen & (1u << b))) {
                d.field = names[b];
                break;
            }
        rc = dec_fail(&d, "missing");
    }
    if (!rc)
        rc = dec_end(&d, "record");
    if (rc)
        return rc;
    /* One allocation: struct, blob table, then bytes. */
    size_t total = sizeof(r) + n_rkeys * sizeof(struct refit_blob) + source.l + model.l + transport.l + 3 +
                   address.l + 1;
    struct dec rk = d;
    rk.p = rkeys_at;
    rd_container(&rk, 0, &n_rkeys, 1);
    const uint8_t *rk_start = rk.p;
    for (uint32_t j = 0; j < n_rkeys; j++) {
        const uint8_t *b;
        uint32_t bl;
        rd_bytes(&rk, 1, &b, &bl, REFIT_RECORD_MAX_BLOB);
        total += bl;
    }
    struct refit_source_record *o = malloc(total);
    if (!o)
        return REFIT_ENOMEM;
    *o = r;
    struct refit_blob *blobs = (struct refit_blob *)(o + 1);
    char *at = (char *)(blobs + n_rkeys);
    o->source_id = put_str(&at, source);
    o->model = put_str(&at, model);
    o->transport = put_str(&at, transport);
    memcpy(at, address.p, address.l);
    o->address = (struct refit_blob){at, address.l};
    at += address.l + 1;
    rk.p = rk_start;
    for (uint32_t j = 0; j < n_rkeys; j++) {
        const uint8_t *b;
        uint32_t bl;
        rd_bytes(&rk, 1, &b, &bl, REFIT_RECORD_MAX_BLOB);
        memcpy(at, b, bl);
        blobs[j] = (struct refit_blob){at, bl};
        at += bl;
    }
    o->rkeys = blobs;
    o->n_rkeys = n_rkeys;
    memcpy(o->catalog.b, hash.p, 16);
    *out = o;
    return 0;
}

int refit_record_check_catalog(const struct refit_source_record *r, const refit_catalog_t *c, const char *key)
{
    if (r->n_rkeys != c->n_regions)
        return refit_error_set(REFIT_EPROTO, "%s: field 'rkeys': %zu remote keys for a catalog of %u regions",
                               key ? key : r->source_id, r->n_rkeys, c->n_regions);
    return 0;
}

/* A record stored under another source's key is a corrupt or hostile
 * store, not a record to use. */
static int record_matches_key(const struct refit_source_record *r, const char *sid, const char *key)
{
    if (strcmp(r->source_id, sid))
        return refit_error_set(REFIT_EPROTO, "%s: field 'source': '%s' stored under the key of '%s'", key,
                               r->source_id, sid);
    return 0;
}

int refit_record_publish(refit_store_t *s, const struct refit_source_record *r)
{
    char k1[REFIT_STORE_MAX_KEY + 1], k2[REFIT_STORE_MAX_KEY + 1];
    int rc = refit_key_source(k1, r->source_id);
    if (!rc)
        rc = refit_key_version_source(k2, r->version, r->source_id);
    if (rc)
        return rc;
    void *enc;
    size_t len;
    if ((rc = refit_record_encode(r, &enc, &len)))
        return rc;
    struct refit_store_put_item items[2] = {{k1, enc, len, 0}, {k2, enc, len, 0}};
    rc = refit_store_put_many(s, items, 2);
    if (!rc)
        rc = refit_store_remember(s, k1, enc, len, 0);
    free(enc);
    return rc ? refit_error_push(rc, "publish %s v%" PRIu64, k1, r->version) : 0;
}

int refit_record_fetch(refit_store_t *s, const char *sid, struct refit_source_record **out)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    int rc = refit_key_source(key, sid);
    if (rc)
        return rc;
    void *v;
    size_t l;
    if ((rc = refit_store_get(s, key, &v, &l)))
        return rc;
    rc = refit_record_decode(v, l, key, out);
    free(v);
    if (!rc && (rc = record_matches_key(*out, sid, key))) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* Heartbeats: {"schema":1, "source":id, "version":V, "time":ms} */

int refit_heartbeat_put(refit_store_t *s, const char *sid, uint64_t version, int64_t stale_after_ms)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    int rc = refit_key_heartbeat(key, sid);
    if (rc)
        return rc;
    struct pk k;
    pk_init(&k, 64 + strlen(sid));
    pk_head(&k, 4);
    pk_str(&k, "source");
    pk_str(&k, sid);
    pk_str(&k, "version");
    PK(&k, msgpack_pack_uint64(&k.p, version));
    pk_str(&k, "time");
    PK(&k, msgpack_pack_uint64(&k.p, refit_time_ms()));
    void *enc = NULL;
    size_t len = 0;
    if ((rc = pk_finish(&k, &enc, &len)))
        return rc;
    rc = refit_store_put_live(s, key, enc, len, stale_after_ms);
    free(enc);
    return rc;
}

int refit_heartbeat_decode(const void *buf, size_t len, const char *key, uint64_t *time_ms)
{
    struct dec d = dec_top(buf, len, key, "heartbeat");
    uint32_t n;
    int rc = rd_container(&d, 1, &n, 1), have_time = 0;
    for (uint32_t i = 0; !rc && i < n; i++) {
        const uint8_t *k;
        uint32_t kl;
        if ((rc = rd_key(&d, &k, &kl)))
            break;
        if (key_is(k, kl, "time")) {
            d.field = "time";
            rc = have_time ? dec_fail(&d, "appears twice") : rd_u64(&d, time_ms);
            have_time = 1;
        } else {
            d.field = "(other)";
            rc = rd_skip(&d, 0);
        }
    }
    if (!rc && !have_time) {
        d.field = "time";
        rc = dec_fail(&d, "missing");
    }
    return rc;
}

int refit_heartbeat_get(refit_store_t *s, const char *sid, uint64_t *time_ms)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    int rc = refit_key_heartbeat(key, sid);
    if (rc)
        return rc;
    void *v;
    size_t l;
    if ((rc = refit_store_get(s, key, &v, &l)))
        return rc;
    rc = refit_heartbeat_decode(v, l, key, time_ms);
    free(v);
    return rc;
}

bool refit_record_is_stale(const struct refit_source_record *r, uint64_t hb_ms, uint64_t now_ms,
                           int64_t stale_after_ms)
{
    if (r->status == REFIT_SOURCE_STALE)
        return true;
    uint64_t last = r->heartbeat_ms > hb_ms ? r->heartbeat_ms : hb_ms;
    /* A clock a little ahead on the publisher is not staleness. */
    return now_ms > last && now_ms - last > (uint64_t)stale_after_ms;
}

int refit_source_check(refit_store_t *s, const char *sid, int64_t stale_after_ms,
                       struct refit_source_record **out, bool *stale)
{
    char k1[REFIT_STORE_MAX_KEY + 1], k2[REFIT_STORE_MAX_KEY + 1];
    int rc = refit_key_source(k1, sid);
    if (!rc)
        rc = refit_key_heartbeat(k2, sid);
    if (rc)
        return rc;
    struct refit_store_get_item it[2] = {{.key = k1}, {.key = k2}};
    if ((rc = refit_store_get_many(s, it, 2)))
        return rc;
    uint64_t hb = 0;
    struct refit_source_record *r = NULL;
    rc = it[0].status;
    if (rc == REFIT_ENOENT)
        rc = refit_error_set(REFIT_ENOENT, "%s not found", k1);
    if (!rc)
        rc = refit_record_decode(it[0].val, it[0].len, k1, &r);
    if (!rc)
        rc = record_matches_key(r, sid, k1);
    if (!rc && it[1].status == 0)
        rc = refit_heartbeat_decode(it[1].val, it[1].len, k2, &hb);
    free(it[0].val);
    free(it[1].val);
    if (rc) {
        free(r);
        return rc;
    }
    *stale = refit_record_is_stale(r, hb, refit_time_ms(), stale_after_ms);
    *out = r;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Acks: {"schema":1, "version":V, "receiver":id, "time":ms} */

int refit_ack_encode(const struct refit_ack *a, void **buf, size_t *len)
{
    int rc = refit_check_id("receiver id", a->receiver);
    if (rc)
        return rc;
    struct pk k;
    pk_init(&k, 64 + strlen(a->receiver));
    pk_head(&k, 4);
    pk_str(&k, "version");
    PK(&k, msgpack_pack_uint64(&k.p, a->version));
    pk_str(&k, "receiver");
    pk_str(&k, a->receiver);
    pk_str(&k, "time");
    PK(&k, msgpack_pack_uint64(&k.p, a->time_ms));
    return pk_finish(&k, buf, len);
}

int refit_ack_decode(const void *buf, size_t len, const char *key, struct refit_ack **out)
{
    struct dec d = dec_top(buf, len, key, "ack");
    struct refit_ack a = {0};
    struct span recv = {0};
    unsigned seen = 0;
    uint32_t n;
    int rc = rd_container(&d, 1, &n, 1);
    for (uint32_t i = 0; !rc && i < n; i++) {
        const uint8_t *k;
        uint32_t kl;
        if ((rc = rd_key(&d, &k, &kl)))
            break;
        if (key_is(k, kl, "schema") && !(seen & 1)) {
            rc = rd_schema(&d, &a.schema);
            seen |= 1;
        } else if (key_is(k, kl, "version") && !(seen & 2)) {
            d.field = "version";
            rc = rd_u64(&d, &a.version);
            seen |= 2;
        } else if (key_is(k, kl, "receiver") && !(seen & 4)) {
            d.field = "receiver";
            rc = rd_str(&d, &recv.p, &recv.l, REFIT_RECORD_MAX_ID);
            if (!rc)
                rc = id_span_ok(&d, recv, "receiver id");
            seen |= 4;
        } else if (key_is(k, kl, "time") && !(seen & 8)) {
            d.field = "time";
            rc = rd_u64(&d, &a.time_ms);
            seen |= 8;
        } else if (key_is(k, kl, "schema") || key_is(k, kl, "version") || key_is(k, kl, "receiver") ||
                   key_is(k, kl, "time")) {
            d.field = "(repeated)";
            rc = dec_fail(&d, "'%.*s' appears twice", (int)kl, (const char *)k);
        } else {
            d.field = "(unknown)";
            rc = rd_skip(&d, 0);
        }
    }
    if (!rc && seen != 15) {
        d.field = !(seen & 1) ? "schema" : !(seen & 2) ? "version" : !(seen & 4) ? "receiver" : "time";
        rc = dec_fail(&d, "missing");
    }
    if (!rc)
        rc = dec_end(&d, "ack");
    if (rc)
        return rc;
    struct refit_ack *o = malloc(sizeof(*o) + recv.l + 1);
    if (!o)
        return REFIT_ENOMEM;
    *o = a;
    char *at = (char *)(o + 1);
    o->receiver = put_str(&at, recv);
    *out = o;
    return 0;
}

int refit_ack_put(refit_store_t *s, uint64_t version, const char *receiver)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    int rc = refit_key_ack(key, version, receiver);
    if (rc)
        return rc;
    struct refit_ack a = {REFIT_CATALOG_SCHEMA, version, receiver, refit_time_ms()};
    void *enc;
    size_t len;
    if ((rc = refit_ack_encode(&a, &enc, &len)))
        return rc;
    /* Live, so a store restart before the publisher saw it does not lose it
     * (the receiver forgets its previous version's ack). */
    rc = refit_store_put_live(s, key, enc, len, 0);
    free(enc);
    return rc;
}

int refit_ack_count(refit_store_t *s, uint64_t version, size_t *n)
{
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "versions/%" PRIu64 "/acks/", version);
    char **keys;
    size_t nk;
    int rc = refit_store_list(s, prefix, &keys, &nk);
    if (rc)
        return rc;
    struct refit_store_get_item *it = calloc(nk ? nk : 1, sizeof(*it));
    if (!it) {
        free(keys);
        return REFIT_ENOMEM;
    }
    for (size_t i = 0; i < nk; i++)
        it[i].key = keys[i];
    rc = nk ? refit_store_get_many(s, it, nk) : 0;
    size_t good = 0;
    for (size_t i = 0; !rc && i < nk; i++) {
        struct refit_ack *a = NULL;
        /* A malformed ack is not counted (and is worth a warning). */
        if (it[i].status == 0 && refit_ack_decode(it[i].val, it[i].len, keys[i], &a) == 0) {
            good += a->version == version;
            free(a);
        }
    }
    for (size_t i = 0; i < nk; i++)
        free(it[i].val);
    free(it);
    free(keys);
    if (!rc)
        *n = good;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Retention */

int refit_versions_retain(refit_store_t *s, uint64_t latest, uint32_t retain, size_t *deleted)
{
    char **keys;
    size_t n, del = 0;
    int rc = refit_store_list(s, "versions/", &keys, &n);
    if (rc)
        return rc;
    for (size_t i = 0; i < n && !rc; i++) {
        uint64_t v;
        if (refit_key_parse_version(keys[i], &v))
            continue;
        /* Keep latest-retain+1 .. latest (and anything newer). */
        if (v <= latest && latest - v >= retain) {
            int r = refit_store_del(s, keys[i]);
            if (r == 0)
                del++;
            else if (r != REFIT_ENOENT) /* someone else's gc got there first */
                rc = r;
        }
    }
    free(keys);
    if (deleted)
        *deleted = del;
    refit_error_clear();
    return rc;
}

/* Collect the catalog hashes the records under prefix refer to. */
static int referenced(refit_store_t *s, const char *prefix, struct refit_hash128 **hs, size_t *nh)
{
    char **keys;
    size_t n;
    int rc = refit_store_list(s, prefix, &keys, &n);
    if (rc || !n) {
        if (!rc)
            free(keys);
        return rc;
    }
    struct refit_store_get_item *it = calloc(n, sizeof(*it));
    struct refit_hash128 *nhs = realloc(*hs, (*nh + n) * sizeof(**hs));
    if (!it || !nhs) {
        free(it);
        free(keys);
        if (nhs)
            *hs = nhs;
        return REFIT_ENOMEM;
    }
    *hs = nhs;
    for (size_t i = 0; i < n; i++)
        it[i].key = keys[i];
    rc = refit_store_get_many(s, it, n);
    for (size_t i = 0; !rc && i < n; i++) {
        struct refit_source_record *r;
        if (strstr(keys[i], "/acks/"))
            continue;
        if (it[i].status == 0 && refit_record_decode(it[i].val, it[i].len, keys[i], &r) == 0) {
            nhs[(*nh)++] = r->catalog;
            free(r);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(it[i].val);
    free(it);
    free(keys);
    refit_error_clear();
    return rc;
}

int refit_catalogs_gc(refit_store_t *s, bool dry_run, size_t *deleted)
{
    struct refit_hash128 *hs = NULL;
    size_t nh = 0, del = 0;
    int rc = referenced(s, "sources/", &hs, &nh);
    if (!rc)
        rc = referenced(s, "versions/", &hs, &nh);
    char **keys = NULL;
    size_t n = 0;
    if (!rc)
        rc = refit_store_list(s, "catalogs/", &keys, &n);
    for (size_t i = 0; !rc && i < n; i++) {
        struct refit_hash128 h;
        int used = 0;
        if (refit_hash128_parse(keys[i] + 9, &h)) {
            refit_error_clear();
            continue; /* not ours to judge */
        }
        for (size_t j = 0; j < nh && !used; j++)
            used = !memcmp(hs[j].b, h.b, 16);
        if (used)
            continue;
        if (!dry_run) {
            int r = refit_store_del(s, keys[i]);
            if (r && r != REFIT_ENOENT)
                rc = r;
        }
        del++;
    }
    free(keys);
    free(hs);
    if (deleted)
        *deleted = del;
    return rc;
}
