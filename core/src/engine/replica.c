/* replica.c — the encoding of replica records and load leases (see
 * replica.h; field by field in docs/fanout.md).  msgpack maps with string
 * keys, as the catalog's records; unknown fields are skipped so the records
 * can grow.  Decoded with the core's bounded reader (msgpack_rd.h). */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../msgpack_pk.h"
#include "../msgpack_rd.h"
#include "replica.h"
#include "refit/log.h"
#include "refit/status.h"

/* ------------------------------------------------------------------ */
/* Replica records */

static const char *const status_names[] = {NULL, "READY", "UPDATING"};

const char *rf_replica_status_name(uint32_t st)
{
    return st >= 1 && st <= 2 ? status_names[st] : "invalid";
}

static uint64_t sums_needed(uint64_t length, uint64_t chunk)
{
    return chunk ? length / chunk + (length % chunk != 0) : 0;
}

int rf_replica_encode(const struct rf_replica *r, void **buf, size_t *len)
{
    int rc = refit_check_id("replica id", r->id);
    if (rc)
        return rc;
    if (!r->model || !r->transport || strlen(r->model) > REFIT_RECORD_MAX_STRING ||
        strlen(r->transport) > REFIT_RECORD_MAX_STRING || r->address.len > REFIT_RECORD_MAX_BLOB ||
        r->rkey.len > REFIT_RECORD_MAX_BLOB || r->status < 1 || r->status > 2 || !r->chunk ||
        r->n_sums != sums_needed(r->length, r->chunk) || r->n_sums > RF_REPLICA_MAX_SUMS)
        return refit_error_set(REFIT_EINVAL, "replica record of %s: a field is missing or out of range", r->id);
    struct pk k;
    pk_init(&k, 0);
    PK(&k, msgpack_pack_map(&k.p, 14));
    pk_str(&k, "schema");
    PK(&k, msgpack_pack_uint32(&k.p, RF_REPLICA_SCHEMA));
    pk_str(&k, "replica");
    pk_str(&k, r->id);
    pk_str(&k, "model");
    pk_str(&k, r->model);
    pk_str(&k, "transport");
    pk_str(&k, r->transport);
    pk_str(&k, "address");
    pk_bin(&k, r->address.data, r->address.len);
    pk_str(&k, "rkey");
    pk_bin(&k, r->rkey.data, r->rkey.len);
    pk_str(&k, "layout");
    pk_bin(&k, r->layout.b, 16);
    pk_str(&k, "version");
    PK(&k, msgpack_pack_uint64(&k.p, r->version));
    pk_str(&k, "status");
    pk_str(&k, rf_replica_status_name(r->status));
    pk_str(&k, "keeps");
    PK(&k, msgpack_pack_uint32(&k.p, r->keeps));
    pk_str(&k, "length");
    PK(&k, msgpack_pack_uint64(&k.p, r->length));
    pk_str(&k, "chunk");
    PK(&k, msgpack_pack_uint64(&k.p, r->chunk));
    /* Little-endian words in one binary: compact and copied, not parsed. */
    pk_str(&k, "sums");
    uint8_t *le = malloc(r->n_sums * 8 + 1);
    if (!le) {
        msgpack_sbuffer_destroy(&k.sb);
        return REFIT_ENOMEM;
    }
    for (size_t i = 0; i < r->n_sums; i++)
        for (int b = 0; b < 8; b++)
            le[i * 8 + (size_t)b] = (uint8_t)(r->sums[i] >> (8 * b));
    pk_bin(&k, le, r->n_sums * 8);
    free(le);
    pk_str(&k, "heartbeat");
    PK(&k, msgpack_pack_uint64(&k.p, r->heartbeat_ms));
    return pk_finish(&k, buf, len);
}

struct span {
    const uint8_t *p;
    uint32_t l;
};

static int rd_replica_status(struct rf_mp *d, uint32_t *st)
{
    const uint8_t *s;
    uint32_t sl;
    int rc = rf_mp_str(d, &s, &sl, 16);
    if (rc)
        return rc;
    *st = rf_mp_key_is(s, sl, "READY") ? RF_REPLICA_READY : rf_mp_key_is(s, sl, "UPDATING") ? RF_REPLICA_UPDATING : 0;
    return *st ? 0 : rf_mp_fail(d, "neither READY nor UPDATING");
}

/* One field of a replica record into r and the spans. */
static int rd_replica_field(struct rf_mp *d, int f, struct rf_replica *r, struct span *sp)
{
    uint64_t v = 0;
    int rc = 0;
    switch (f) {
    case 0:
        if (!(rc = rf_mp_u64(d, &v)) && v != RF_REPLICA_SCHEMA)
            rc = rf_mp_fail(d, "unknown schema");
        return rc;
    case 1: return rf_mp_id(d, &sp[0].p, &sp[0].l, "replica id");
    case 2: return rf_mp_str(d, &sp[1].p, &sp[1].l, REFIT_RECORD_MAX_STRING);
    case 3: return rf_mp_str(d, &sp[2].p, &sp[2].l, REFIT_RECORD_MAX_STRING);
    case 4: return rf_mp_bin(d, &sp[3].p, &sp[3].l, REFIT_RECORD_MAX_BLOB);
    case 5: return rf_mp_bin(d, &sp[4].p, &sp[4].l, REFIT_RECORD_MAX_BLOB);
    case 6:
        if (!(rc = rf_mp_bin(d, &sp[5].p, &sp[5].l, 16)) && sp[5].l != 16)
            rc = rf_mp_fail(d, "a 16-byte key expected");
        return rc;
    case 7: return rf_mp_u64(d, &r->version);
    case 8: return rd_replica_status(d, &r->status);
    case 9:
        if (!(rc = rf_mp_u64(d, &v)) && (v < 1 || v > 2))
            rc = rf_mp_fail(d, "1 or 2 expected");
        r->keeps = (uint32_t)v;
        return rc;
    case 10: return rf_mp_u64(d, &r->length);
    case 11:
        if (!(rc = rf_mp_u64(d, &r->chunk)) && (r->chunk < 4096 || r->chunk > (1u << 30)))
            rc = rf_mp_fail(d, "chunk size out of range (4 KiB .. 1 GiB)");
        return rc;
    case 12:
        if (!(rc = rf_mp_bin(d, &sp[6].p, &sp[6].l, RF_REPLICA_MAX_SUMS * 8u)) && sp[6].l % 8)
            rc = rf_mp_fail(d, "not a whole number of 8-byte checksums");
        return rc;
    case 13: return rf_mp_u64(d, &r->heartbeat_ms);
    }
    return 0;
}

int rf_replica_decode(const void *buf, size_t len, const char *key, struct rf_replica **out)
{
    static const char *const names[] = {"schema", "replica", "model", "transport", "address", "rkey", "layout",
                                        "version", "status", "keeps", "length", "chunk", "sums", "heartbeat"};
    struct rf_mp d;
    rf_mp_init(&d, buf, len, key, "replica");
    struct rf_replica r = {0};
    /* id, model, transport, address, rkey, layout, sums */
    struct span sp[7] = {{0}};
    uint32_t n, seen = 0;
    int rc = rf_mp_map(&d, &n, 1);
    for (uint32_t i = 0; !rc && i < n; i++) {
        int f;
        if (!(rc = rf_mp_field(&d, names, 14, &seen, &f)) && f >= 0)
            rc = rd_replica_field(&d, f, &r, sp);
    }
    if (!rc)
        rc = rf_mp_required(&d, names, 14, seen, (1u << 14) - 1);
    if (!rc)
        rc = rf_mp_end(&d, "record");
    if (!rc && sums_needed(r.length, r.chunk) != sp[6].l / 8) {
        d.field = "sums";
        rc = rf_mp_fail(&d, "count does not match length / chunk");
    }
    if (rc)
        return rc;
    r.n_sums = sp[6].l / 8;
    /* One allocation: struct, sums (aligned), then strings and blobs. */
    size_t total = sizeof(r) + r.n_sums * 8 + sp[0].l + sp[1].l + sp[2].l + 3 + sp[3].l + sp[4].l + 2;
    struct rf_replica *o = malloc(total);
    if (!o)
        return REFIT_ENOMEM;
    *o = r;
    uint64_t *w = (uint64_t *)(o + 1);
    for (size_t i = 0; i < r.n_sums; i++) {
        uint64_t x = 0;
        for (int b = 7; b >= 0; b--)
            x = x << 8 | sp[6].p[i * 8 + (size_t)b];
        w[i] = x;
    }
    o->sums = w;
    char *at = (char *)(w + r.n_sums);
    const char **dst[3] = {&o->id, &o->model, &o->transport};
    for (int j = 0; j < 3; j++) {
        memcpy(at, sp[j].p, sp[j].l);
        at[sp[j].l] = '\0';
        *dst[j] = at;
        at += sp[j].l + 1;
    }
    memcpy(at, sp[3].p, sp[3].l);
    o->address = (struct refit_blob){at, sp[3].l};
    at += sp[3].l + 1;
    memcpy(at, sp[4].p, sp[4].l);
    o->rkey = (struct refit_blob){at, sp[4].l};
    memcpy(o->layout.b, sp[5].p, 16);
    *out = o;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Lease lists: {"schema":1, "leases":[[puller, expires_ms, version], ...]} */

int rf_lease_encode(const struct rf_lease *l, size_t n, void **buf, size_t *len)
{
    if (n > RF_LEASE_MAX)
        return refit_error_set(REFIT_EINVAL, "lease list of %zu entries (at most %d)", n, RF_LEASE_MAX);
    struct pk k;
    pk_init(&k, 0);
    PK(&k, msgpack_pack_map(&k.p, 2));
    pk_str(&k, "schema");
    PK(&k, msgpack_pack_uint32(&k.p, RF_REPLICA_SCHEMA));
    pk_str(&k, "leases");
    PK(&k, msgpack_pack_array(&k.p, (uint32_t)n));
    for (size_t i = 0; i < n; i++) {
        PK(&k, msgpack_pack_array(&k.p, 3));
        pk_str(&k, l[i].id);
        PK(&k, msgpack_pack_uint64(&k.p, l[i].expires_ms));
        PK(&k, msgpack_pack_uint64(&k.p, l[i].version));
    }
    return pk_finish(&k, buf, len);
}

/* One entry [puller, expires_ms, version]. */
static int rd_lease(struct rf_mp *d, struct rf_lease *l)
{
    const uint8_t *s;
    uint32_t sl;
    int rc = rf_mp_tuple(d, 3);
    if (!rc && !(rc = rf_mp_id(d, &s, &sl, "puller"))) {
        memcpy(l->id, s, sl);
        l->id[sl] = '\0';
    }
    if (!rc)
        rc = rf_mp_u64(d, &l->expires_ms);
    if (!rc)
        rc = rf_mp_u64(d, &l->version);
    return rc;
}

int rf_lease_decode(const void *buf, size_t len, const char *key, struct rf_lease **out, size_t *n_out)
{
    static const char *const names[] = {"schema", "leases"};
    struct rf_mp d;
    rf_mp_init(&d, buf, len, key, "lease");
    struct rf_lease *l = NULL;
    uint32_t n, m = 0, seen = 0;
    int rc = rf_mp_map(&d, &n, 1);
    for (uint32_t i = 0; !rc && i < n; i++) {
        int f;
        uint64_t v;
        if ((rc = rf_mp_field(&d, names, 2, &seen, &f)) || f < 0)
            continue;
        if (f == 0) {
            if (!(rc = rf_mp_u64(&d, &v)) && v != RF_REPLICA_SCHEMA)
                rc = rf_mp_fail(&d, "unknown schema");
            continue;
        }
        /* Each entry takes at least 4 bytes: the count is bounded by the
         * input before anything is allocated. */
        if ((rc = rf_mp_array(&d, &m, 4)))
            break;
        if (m > RF_LEASE_MAX) {
            rc = rf_mp_fail(&d, "too many entries");
            break;
        }
        if (!(l = calloc(m ? m : 1, sizeof(*l))))
            return REFIT_ENOMEM;
        d.item = "entry";
        for (uint32_t j = 0; !rc && j < m; j++) {
            d.index = (ptrdiff_t)j;
            rc = rd_lease(&d, &l[j]);
        }
        d.index = -1;
    }
    if (!rc)
        rc = rf_mp_required(&d, names, 2, seen, 2);
    if (!rc)
        rc = rf_mp_end(&d, "list");
    if (rc || !m) {
        free(l);
        l = NULL;
    }
    if (rc)
        return rc;
    *out = l;
    *n_out = m;
    return 0;
}

int rf_lease_read(refit_store_t *s, const char *key, struct rf_lease **out, size_t *n, void **raw,
                  size_t *raw_len)
{
    void *val = NULL;
    size_t len = 0;
    *out = NULL;
    *n = 0;
    if (raw)
        *raw = NULL;
    int rc = refit_store_get(s, key, &val, &len);
    if (rc == REFIT_ENOENT) {
        refit_error_clear();
        return 0;
    }
    if (rc)
        return rc;
    struct rf_lease *l = NULL;
    size_t nl = 0;
    if (rf_lease_decode(val, len, key, &l, &nl)) {
        /* A bad list pins nobody: it is replaced by the next writer. */
        refit_log(REFIT_LOG_WARN, "fanout", "ignoring a malformed lease list: %s", refit_error_message());
        refit_error_clear();
        l = NULL;
        nl = 0;
    }
    uint64_t now = refit_time_ms();
    size_t m = 0;
    for (size_t i = 0; i < nl; i++)
        if (l[i].expires_ms > now)
            l[m++] = l[i];
    *out = l;
    *n = m;
    if (raw) {
        *raw = val;
        *raw_len = len;
    } else {
        free(val);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Keys */

static int key_of(char *buf, const char *prefix, const char *id)
{
    int rc = refit_check_id("id", id);
    if (rc)
        return rc;
    snprintf(buf, REFIT_STORE_MAX_KEY + 1, "%s/%s", prefix, id);
    return 0;
}

int rf_key_replica(char *buf, const char *id)
{
    return key_of(buf, "replicas", id);
}

int rf_key_load(char *buf, const char *source)
{
    return key_of(buf, "load", source);
}
