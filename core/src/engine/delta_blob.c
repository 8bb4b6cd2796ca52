/* delta_blob.c — the delta record "versions/<V>/delta/<source>"
 * (delta_eng.h): written with msgpack-c's packer, read with the bounded
 * reader and checked against the catalog it belongs to before anyone uses
 * an offset from it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../delta/delta.h"
#include "delta_eng.h"
#include "../msgpack_pk.h"
#include "../msgpack_rd.h"
#include "refit/store.h"
#include "refit/transport_core.h"
#include "../util.h"

void rf_delta_cat_chunks(const struct refit_cat_tensor *ct, uint64_t *n_chunks, uint64_t *chunk_bytes)
{
    uint64_t row = (ct->ndim >= 2 ? ct->shape[ct->ndim - 1] : 1) * refit_dtype_size((enum refit_dtype)ct->dtype);
    *n_chunks = *chunk_bytes = 0;
    if (!ct->chunk_rows || !row || !ct->nbytes || row > RF_DELTA_MAX_CHUNK / ct->chunk_rows)
        return;
    *chunk_bytes = row * ct->chunk_rows;
    *n_chunks = ct->nbytes / *chunk_bytes + (ct->nbytes % *chunk_bytes != 0);
}

int rf_key_delta(char *buf, uint64_t version, const char *source_id)
{
    int rc = refit_check_id("source id", source_id);
    if (rc)
        return rc;
    snprintf(buf, REFIT_STORE_MAX_KEY + 1, "versions/%llu/delta/%s", (unsigned long long)version, source_id);
    return 0;
}

static const char *const names[] = {"schema", "version", "base", "catalog", "base_sums", "rkey", "data_len", "index"};
enum { N_FIELDS = 8 };

int rf_delta_rec_encode(const struct rf_delta_rec *r, const uint32_t *index, size_t n, void **buf, size_t *len)
{
    if (n > RF_DELTA_MAX_INDEX || r->rkey.len > REFIT_RECORD_MAX_BLOB)
        return refit_error_set(REFIT_EINVAL, "delta record of v%llu: %zu chunks or a %zu-byte key is too many",
                               (unsigned long long)r->version, n, r->rkey.len);
    uint8_t *le = malloc(n ? n * 4 : 1);
    if (!le)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 4; b++)
            le[i * 4 + (size_t)b] = (uint8_t)(index[i] >> (8 * b));
    struct pk k;
    pk_init(&k, n * 4 + 256);
    PK(&k, msgpack_pack_map(&k.p, N_FIELDS));
    pk_str(&k, "schema");
    PK(&k, msgpack_pack_uint32(&k.p, RF_DELTA_REC_SCHEMA));
    pk_str(&k, "version");
    PK(&k, msgpack_pack_uint64(&k.p, r->version));
    pk_str(&k, "base");
    PK(&k, msgpack_pack_uint64(&k.p, r->base));
    pk_str(&k, "catalog");
    pk_bin(&k, r->catalog.b, 16);
    pk_str(&k, "base_sums");
    PK(&k, msgpack_pack_uint64(&k.p, r->base_sums));
    pk_str(&k, "rkey");
    pk_bin(&k, r->rkey.data, r->rkey.len);
    pk_str(&k, "data_len");
    PK(&k, msgpack_pack_uint64(&k.p, r->data_len));
    pk_str(&k, "index");
    pk_bin(&k, le, n * 4);
    free(le);
    return pk_finish(&k, buf, len);
}

void rf_delta_rec_free(struct rf_delta_rec *r)
{
    if (!r)
        return;
    free(r->len);
    free(r->off);
    free(r->first);
    free(r);
}

struct raw_rec {
    struct rf_delta_rec r;
    const uint8_t *rkey, *index;
    uint32_t rkey_len, index_len;
};

static int rd_field(struct rf_mp *d, int f, struct raw_rec *w)
{
    const uint8_t *p;
    uint32_t l, schema;
    int rc;
    switch (f) {
    case 0:
        if (!(rc = rf_mp_u32(d, &schema, UINT32_MAX)) && schema != RF_DELTA_REC_SCHEMA)
            rc = rf_mp_fail(d, "schema %u, this build reads %u", schema, RF_DELTA_REC_SCHEMA);
        return rc;
    case 1: return rf_mp_u64(d, &w->r.version);
    case 2: return rf_mp_u64(d, &w->r.base);
    case 3:
        if (!(rc = rf_mp_bin(d, &p, &l, 16)) && l != 16)
            rc = rf_mp_fail(d, "%u bytes, 16 expected", l);
        if (!rc)
            memcpy(w->r.catalog.b, p, 16);
        return rc;
    case 4: return rf_mp_u64(d, &w->r.base_sums);
    case 5: return rf_mp_bin(d, &w->rkey, &w->rkey_len, REFIT_RECORD_MAX_BLOB);
    case 6: return rf_mp_u64(d, &w->r.data_len);
    default:
        if (!(rc = rf_mp_bin(d, &w->index, &w->index_len, (uint32_t)(RF_DELTA_MAX_INDEX * 4))) && w->index_len % 4)
            rc = rf_mp_fail(d, "%u bytes, not a whole number of u32", w->index_len);
        return rc;
    }
}

/* The index against the catalog: counts, bounds, offsets. */
static int index_check(struct rf_mp *d, struct raw_rec *w, const refit_catalog_t *cat, struct rf_delta_rec *o)
{
    d->field = "index";
    size_t n = w->index_len / 4, k = 0;
    uint64_t at = 0;
    for (size_t t = 0; t < cat->n_tensors; t++) {
        uint64_t nc, cb;
        rf_delta_cat_chunks(&cat->tensors[t], &nc, &cb);
        o->first[t] = k;
        if (!rf_fits(k, nc, n))
            return rf_mp_fail(d, "%zu entries, the catalog has more chunks (tensor '%s')", n, cat->tensors[t].name);
        for (uint64_t c = 0; c < nc; c++, k++) {
            const uint8_t *e = w->index + k * 4;
            uint32_t l = (uint32_t)e[0] | (uint32_t)e[1] << 8 | (uint32_t)e[2] << 16 | (uint32_t)e[3] << 24;
            uint64_t csize = c + 1 < nc ? cb : cat->tensors[t].nbytes - c * cb;
            o->len[k] = l;
            o->off[k] = at;
            if (l == RF_DELTA_ABSENT)
                continue;
            if (l > rf_delta_bound(csize))
                return rf_mp_fail(d, "tensor '%s' chunk %llu: %u bytes, more than a delta of %llu bytes takes",
                                  cat->tensors[t].name, (unsigned long long)c, l, (unsigned long long)csize);
            at += l;
        }
    }
    if (k != n)
        return rf_mp_fail(d, "%zu entries, the catalog has %zu chunks", n, k);
    if (at != o->data_len) {
        d->field = "data_len";
        return rf_mp_fail(d, "%llu, the index adds up to %llu", (unsigned long long)o->data_len,
                          (unsigned long long)at);
    }
    return 0;
}

int rf_delta_rec_decode(const void *buf, size_t len, const char *key, const refit_catalog_t *cat,
                        struct rf_delta_rec **out)
{
    struct rf_mp d;
    rf_mp_init(&d, buf, len, key, "delta record");
    struct raw_rec w;
    memset(&w, 0, sizeof(w));
    uint32_t n, seen = 0;
    int rc = rf_mp_map(&d, &n, 1);
    for (uint32_t i = 0; !rc && i < n; i++) {
        int f;
        if (!(rc = rf_mp_field(&d, names, N_FIELDS, &seen, &f)) && f >= 0)
            rc = rd_field(&d, f, &w);
    }
    if (!rc)
        rc = rf_mp_required(&d, names, N_FIELDS, seen, (1u << N_FIELDS) - 1);
    if (!rc)
        rc = rf_mp_end(&d, "record");
    if (!rc && (!w.r.version || w.r.base >= w.r.version)) {
        d.field = "base";
        rc = rf_mp_fail(&d, "base v%llu is not below v%llu", (unsigned long long)w.r.base,
                        (unsigned long long)w.r.version);
    }
    if (rc)
        return rc;
    size_t ni = w.index_len / 4;
    /* One allocation for the struct and the key; arrays beside it. */
    struct rf_delta_rec *o = calloc(1, sizeof(*o) + w.rkey_len + 1);
    if (!o)
        return REFIT_ENOMEM;
    *o = w.r;
    o->len = malloc((ni ? ni : 1) * sizeof(*o->len));
    o->off = malloc((ni ? ni : 1) * sizeof(*o->off));
    o->first = malloc((cat->n_tensors ? cat->n_tensors : 1) * sizeof(*o->first));
    if (!o->len || !o->off || !o->first) {
        rf_delta_rec_free(o);
        return REFIT_ENOMEM;
    }
    o->n_index = ni;
    o->n_tensors = cat->n_tensors;
    memcpy(o + 1, w.rkey, w.rkey_len);
    o->rkey = (struct refit_blob){o + 1, w.rkey_len};
    if ((rc = index_check(&d, &w, cat, o))) {
        rf_delta_rec_free(o);
        return rc;
    }
    *out = o;
    return 0;
}
