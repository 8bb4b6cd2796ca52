/* catalog_codec.c — the tensor catalog (refit/catalog.h): building one,
 * its name index, its msgpack encoding and validating decoder, publishing
 * it content-addressed and fetching it back; tensor role names and the
 * 128-bit content hashes.  Records, heartbeats and acks are in
 * catalog_records.c, keys and retention in catalog_keys.c; every decoder
 * reads through msgpack_rd.h. */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "catalog_int.h"
#include "refit/status.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* Role names, content hashes, the schema field */

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

int rf_cat_schema(struct rf_mp *d, uint32_t *schema)
{
    d->field = "schema";
    int rc = rf_mp_u32(d, schema, UINT32_MAX);
    if (!rc && *schema != REFIT_CATALOG_SCHEMA)
        rc = rf_mp_fail(d, "schema %u, this build reads %d", *schema, REFIT_CATALOG_SCHEMA);
    return rc;
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

int refit_catalog_reserve(refit_catalog_t *c, size_t n)
{
    if (!c || !c->priv_)
        return refit_error_set(REFIT_EINVAL, "refit_catalog_reserve: NULL catalog");
    if (n > REFIT_CATALOG_MAX_TENSORS)
        return refit_error_set(REFIT_ERANGE, "catalog: room for %zu tensors asked (at most %d)", n,
                               REFIT_CATALOG_MAX_TENSORS);
    struct refit_catalog_priv_ *p = c->priv_;
    if (n > p->cap_tensors) {
        struct refit_cat_tensor *nt = realloc(c->tensors, n * sizeof(*nt));
        if (!nt)
            return REFIT_ENOMEM;
        c->tensors = nt;
        p->cap_tensors = n;
    }
    return index_reserve(c, n);
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
static int tensor_check(const refit_catalog_t *c, const struct refit_cat_tensor *t, struct rf_mp *d)
{
#define BAD(field_, ...) (d->field = field_, rf_mp_fail(d, __VA_ARGS__))
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
        if (t->shard_len != t->shape[t->shard_axis] || !rf_fits(t->shard_start, t->shard_len, g))
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
    if (!rf_fits(t->offset, t->nbytes, rl))
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
    struct rf_mp d = {.key = "catalog", .field = "", .item = "tensor", .index = (ptrdiff_t)c->n_tensors};
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
    rf_cat_head(&k, 3);
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

static int rd_shape(struct rf_mp *d, uint64_t *dims, uint32_t *ndim)
{
    uint32_t n;
    int rc = rf_mp_array(d, &n, 1);
    if (rc)
        return rc;
    if (n > REFIT_MAX_DIMS)
        return rf_mp_fail(d, "%u dimensions, at most %d", n, REFIT_MAX_DIMS);
    for (uint32_t i = 0; i < n; i++)
        if ((rc = rf_mp_u64(d, &dims[i])))
            return rc;
    *ndim = n;
    return 0;
}

static int rd_tensor(struct rf_mp *d, refit_catalog_t *c, struct refit_cat_tensor *t, char **arena)
{
    uint32_t n, l;
    const uint8_t *s;
    int rc;
    d->field = "tensor";
    if ((rc = rf_mp_array(d, &n, 1)))
        return rc;
    if (n < TENSOR_FIELDS)
        return rf_mp_fail(d, "%u fields, %d expected", n, TENSOR_FIELDS);
    d->field = "name";
    if ((rc = rf_mp_str(d, &s, &l, REFIT_CATALOG_MAX_NAME)))
        return rc;
    if (!l)
        return rf_mp_fail(d, "empty name");
    memcpy(*arena, s, l);
    (*arena)[l] = '\0';
    t->name = *arena;
    *arena += l + 1;
    d->field = "dtype";
    if ((rc = rf_mp_str(d, &s, &l, 32)))
        return rc;
    if (match_name(s, l, 0, &t->dtype))
        return rf_mp_fail(d, "unknown dtype '%.*s'", (int)l, (const char *)s);
    d->field = "role";
    if ((rc = rf_mp_str(d, &s, &l, 32)))
        return rc;
    if (match_name(s, l, 1, &t->role))
        return rf_mp_fail(d, "unknown role '%.*s'", (int)l, (const char *)s);
    uint32_t gnd;
    d->field = "shape";
    if ((rc = rd_shape(d, t->shape, &t->ndim)))
        return rc;
    d->field = "global_shape";
    if ((rc = rd_shape(d, t->global_shape, &gnd)))
        return rc;
    if (gnd != t->ndim)
        return rf_mp_fail(d, "%u dimensions, the local shape has %u", gnd, t->ndim);
    int64_t v;
    d->field = "shard_axis";
    if ((rc = rf_mp_int(d, &v)))
        return rc;
    if (v < -1 || v >= REFIT_MAX_DIMS)
        return rf_mp_fail(d, "%" PRId64 " out of range", v);
    t->shard_axis = (int32_t)v;
    d->field = "shard_start";
    if ((rc = rf_mp_u64(d, &t->shard_start)))
        return rc;
    d->field = "shard_len";
    if ((rc = rf_mp_u64(d, &t->shard_len)))
        return rc;
    d->field = "expert";
    if ((rc = rf_mp_int(d, &t->expert)))
        return rc;
    d->field = "region";
    if ((rc = rf_mp_u32(d, &t->region, UINT32_MAX)))
        return rc;
    d->field = "offset";
    if ((rc = rf_mp_u64(d, &t->offset)))
        return rc;
    d->field = "nbytes";
    if ((rc = rf_mp_u64(d, &t->nbytes)))
        return rc;
    d->field = "checksum";
    if ((rc = rf_mp_u64(d, &t->checksum)))
        return rc;
    t->chunk_rows = 0;
    if (n > TENSOR_FIELDS) {
        d->field = "chunk_rows";
        if ((rc = rf_mp_u32(d, &t->chunk_rows, 1u << 30)))
            return rc;
    }
    d->field = "tensor";
    for (uint32_t i = TENSOR_FIELDS + 1; i < n; i++) /* later minor versions may append fields */
        if ((rc = rf_mp_skip(d)))
            return rc;
    return tensor_check(c, t, d);
}

static int rd_tensors(struct rf_mp *d, refit_catalog_t *c)
{
    uint32_t n;
    int rc = rf_mp_array(d, &n, TENSOR_FIELDS + 1);
    if (rc)
        return rc;
    if (n > REFIT_CATALOG_MAX_TENSORS)
        return rf_mp_fail(d, "%u tensors, at most %d", n, REFIT_CATALOG_MAX_TENSORS);
    struct refit_catalog_priv_ *p = c->priv_;
    /* Names cannot take more than the input: one arena. */
    p->arena = malloc(rf_mp_left(d) + 1);
    c->tensors = calloc(n ? n : 1, sizeof(*c->tensors));
    if (!p->arena || !c->tensors)
        return REFIT_ENOMEM;
    p->cap_tensors = n;
    if ((rc = index_reserve(c, n)))
        return rc;
    char *arena = p->arena;
    for (uint32_t i = 0; i < n; i++) {
        d->item = "tensor";
        d->index = (ptrdiff_t)i;
        if ((rc = rd_tensor(d, c, &c->tensors[i], &arena)))
            return rc;
        ptrdiff_t dup = index_insert(p, c->tensors, i, strlen(c->tensors[i].name));
        if (dup >= 0) {
            d->field = "name";
            return rf_mp_fail(d, "'%s' repeats tensor %td", c->tensors[i].name, dup);
        }
        c->n_tensors = i + 1;
    }
    d->index = -1;
    return 0;
}

static int rd_regions(struct rf_mp *d, refit_catalog_t *c)
{
    uint32_t n;
    int rc = rf_mp_array(d, &n, 1);
    if (rc)
        return rc;
    if (n > REFIT_CATALOG_MAX_REGIONS)
        return rf_mp_fail(d, "%u regions, at most %d", n, REFIT_CATALOG_MAX_REGIONS);
    c->region_len = calloc(n ? n : 1, sizeof(uint64_t));
    if (!c->region_len)
        return REFIT_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        if ((rc = rf_mp_u64(d, &c->region_len[i])))
            return rc;
        c->n_regions = i + 1;
    }
    c->priv_->cap_regions = n;
    return 0;
}

int refit_catalog_decode(const void *buf, size_t len, const char *key, refit_catalog_t **out)
{
    static const char *const fields[] = {"schema", "regions", "tensors"};
    enum { F_SCHEMA, F_REGIONS, F_TENSORS };
    struct rf_mp d;
    rf_mp_init(&d, buf, len, key, "catalog");
    refit_catalog_t *c;
    int rc = refit_catalog_create(&c);
    if (rc)
        return rc;
    c->priv_->names_owned = 0;
    uint32_t n, seen = 0;
    const uint8_t *tensors_at = NULL;
    rc = rf_mp_map(&d, &n, 1);
    for (uint32_t i = 0; !rc && i < n; i++) {
        int f;
        if ((rc = rf_mp_field(&d, fields, 3, &seen, &f)))
            break;
        if (f == F_SCHEMA) {
            rc = rf_cat_schema(&d, &c->schema);
        } else if (f == F_REGIONS) {
            rc = rd_regions(&d, c);
        } else if (f == F_TENSORS) {
            /* Tensors refer to regions: read them now when the regions came
             * first (as our encoder writes them), else skip and come back. */
            if (seen & (1u << F_REGIONS)) {
                rc = rd_tensors(&d, c);
            } else {
                tensors_at = d.p;
                rc = rf_mp_skip(&d);
            }
        }
    }
    if (!rc)
        rc = rf_mp_required(&d, fields, 3, seen, 7);
    if (!rc)
        rc = rf_mp_end(&d, "catalog");
    if (!rc && tensors_at) {
        struct rf_mp t = d;
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

