/* replica.c — the encoding of replica records and load leases (see
 * replica.h; field by field in docs/fanout.md).  msgpack maps with string
 * keys, as catalog.c writes its records; unknown fields are skipped so the
 * records can grow. */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../msgpack_pk.h"
#include "replica.h"
#include "refit/status.h"

/* ------------------------------------------------------------------ */
/* A small bounded msgpack reader: every length is checked against the
 * bytes left before it is used. */

struct rd {
    const uint8_t *p, *end, *start;
    const char *key, *field;
};

static int fail(struct rd *d, const char *what)
{
    return refit_error_set(REFIT_EPROTO, "%s: field '%s': %s (byte %td)", d->key, d->field, what, d->p - d->start);
}

static size_t left(const struct rd *d)
{
    return (size_t)(d->end - d->p);
}

static int be(struct rd *d, int n, uint64_t *v)
{
    if (left(d) < (size_t)n)
        return fail(d, "truncated");
    *v = 0;
    for (int i = 0; i < n; i++)
        *v = *v << 8 | d->p[i];
    d->p += n;
    return 0;
}

static int rd_uint(struct rd *d, uint64_t *v)
{
    if (!left(d))
        return fail(d, "truncated, integer expected");
    uint8_t t = *d->p++;
    if (t <= 0x7f) {
        *v = t;
        return 0;
    }
    if (t >= 0xcc && t <= 0xcf)
        return be(d, 1 << (t - 0xcc), v);
    d->p--;
    return fail(d, "not an unsigned integer");
}

/* map (want 'm') or array ('a') header; each element takes >= 1 byte. */
static int rd_head(struct rd *d, char kind, uint32_t *n)
{
    if (!left(d))
        return fail(d, "truncated");
    uint8_t t = *d->p++;
    uint64_t v = 0;
    int rc = 0;
    uint8_t fix = kind == 'm' ? 0x80 : 0x90, c16 = kind == 'm' ? 0xde : 0xdc;
    if (t >= fix && t <= fix + 15)
        v = t & 15u;
    else if (t == c16)
        rc = be(d, 2, &v);
    else if (t == c16 + 1)
        rc = be(d, 4, &v);
    else {
        d->p--;
        return fail(d, kind == 'm' ? "a map expected" : "an array expected");
    }
    if (rc)
        return rc;
    if (v * (kind == 'm' ? 2u : 1u) > left(d))
        return fail(d, "more elements than bytes left");
    *n = (uint32_t)v;
    return 0;
}

/* str (bin 0) or bin (bin 1) of at most max bytes. */
static int rd_raw(struct rd *d, int bin, const uint8_t **s, uint32_t *l, uint32_t max)
{
    if (!left(d))
        return fail(d, "truncated");
    uint8_t t = *d->p++;
    uint64_t v = 0;
    int rc = 0;
    if (!bin && t >= 0xa0 && t <= 0xbf)
        v = t & 31u;
    else if (t == (bin ? 0xc4 : 0xd9))
        rc = be(d, 1, &v);
    else if (t == (bin ? 0xc5 : 0xda))
        rc = be(d, 2, &v);
    else if (t == (bin ? 0xc6 : 0xdb))
        rc = be(d, 4, &v);
    else {
        d->p--;
        return fail(d, bin ? "binary expected" : "a string expected");
    }
    if (rc)
        return rc;
    if (v > max || v > left(d))
        return fail(d, "too long");
    *s = d->p;
    *l = (uint32_t)v;
    d->p += v;
    if (!bin && memchr(*s, 0, *l))
        return fail(d, "string contains a NUL byte");
    return 0;
}

/* Skip one value of the types these writers use (and nil/bool). */
static int rd_skip(struct rd *d, int depth)
{
    if (depth > 8)
        return fail(d, "nested too deep");
    if (!left(d))
        return fail(d, "truncated");
    uint8_t t = *d->p;
    uint64_t v;
    const uint8_t *s;
    uint32_t l, n;
    if (t <= 0x7f || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        d->p++;
        return 0;
    }
    if (t >= 0xcc && t <= 0xcf)
        return rd_uint(d, &v);
    if ((t >= 0xa0 && t <= 0xbf) || (t >= 0xd9 && t <= 0xdb))
        return rd_raw(d, 0, &s, &l, UINT32_MAX);
    if (t >= 0xc4 && t <= 0xc6)
        return rd_raw(d, 1, &s, &l, UINT32_MAX);
    int map = (t >= 0x80 && t <= 0x8f) || t == 0xde || t == 0xdf;
    if (map || (t >= 0x90 && t <= 0x9f) || t == 0xdc || t == 0xdd) {
        int rc = rd_head(d, map ? 'm' : 'a', &n);
        for (uint64_t i = 0; !rc && i < (uint64_t)n * (map ? 2u : 1u); i++)
            rc = rd_skip(d, depth + 1);
        return rc;
    }
    return fail(d, "unexpected type");
}

static int key_is(const uint8_t *k, uint32_t kl, const char *want)
{
    return kl == strlen(want) && !memcmp(k, want, kl);
}

static int id_ok(struct rd *d, const uint8_t *s, uint32_t l)
{
    char tmp[REFIT_RECORD_MAX_ID + 1];
    if (l > REFIT_RECORD_MAX_ID)
        return fail(d, "id too long");
    memcpy(tmp, s, l);
    tmp[l] = '\0';
    if (refit_check_id("id", tmp))
        return fail(d, "not a valid id");
    return 0;
}

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

int rf_replica_decode(const void *buf, size_t len, const char *key, struct rf_replica **out)
{
    struct rd d = {buf, (const uint8_t *)buf + len, buf, key ? key : "replica", "(top)"};
    struct rf_replica r = {0};
    struct span id = {0}, model = {0}, tp = {0}, addr = {0}, rkey = {0}, lay = {0}, sums = {0};
    enum { F_SCHEMA = 1, F_ID = 2, F_MODEL = 4, F_TP = 8, F_ADDR = 16, F_RKEY = 32, F_LAYOUT = 64, F_VERSION = 128,
           F_STATUS = 256, F_KEEPS = 512, F_LENGTH = 1024, F_CHUNK = 2048, F_SUMS = 4096, F_HB = 8192,
           F_ALL = 16383 };
    static const char *const names[] = {"schema", "replica", "model", "transport", "address", "rkey", "layout",
                                        "version", "status", "keeps", "length", "chunk", "sums", "heartbeat"};
    unsigned seen = 0;
    uint32_t n;
    int rc = rd_head(&d, 'm', &n);
    for (uint32_t i = 0; !rc && i < n; i++) {
        const uint8_t *k;
        uint32_t kl;
        d.field = "(key)";
        if ((rc = rd_raw(&d, 0, &k, &kl, 64)))
            break;
        int f = -1;
        for (int j = 0; j < 14 && f < 0; j++)
            if (key_is(k, kl, names[j]))
                f = j;
        if (f < 0) {
            d.field = "(unknown)";
            rc = rd_skip(&d, 0);
            continue;
        }
        d.field = names[f];
        if (seen & (1u << f)) {
            rc = fail(&d, "appears twice");
            break;
        }
        seen |= 1u << f;
        uint64_t v = 0;
        const uint8_t *s;
        uint32_t sl;
        switch (1u << f) {
        case F_SCHEMA:
            if (!(rc = rd_uint(&d, &v)) && v != RF_REPLICA_SCHEMA)
                rc = fail(&d, "unknown schema");
            break;
        case F_ID:
            if (!(rc = rd_raw(&d, 0, &id.p, &id.l, REFIT_RECORD_MAX_ID)))
                rc = id_ok(&d, id.p, id.l);
            break;
        case F_MODEL: rc = rd_raw(&d, 0, &model.p, &model.l, REFIT_RECORD_MAX_STRING); break;
        case F_TP: rc = rd_raw(&d, 0, &tp.p, &tp.l, REFIT_RECORD_MAX_STRING); break;
        case F_ADDR: rc = rd_raw(&d, 1, &addr.p, &addr.l, REFIT_RECORD_MAX_BLOB); break;
        case F_RKEY: rc = rd_raw(&d, 1, &rkey.p, &rkey.l, REFIT_RECORD_MAX_BLOB); break;
        case F_LAYOUT:
            if (!(rc = rd_raw(&d, 1, &lay.p, &lay.l, 16)) && lay.l != 16)
                rc = fail(&d, "a 16-byte key expected");
            break;
        case F_VERSION: rc = rd_uint(&d, &r.version); break;
        case F_STATUS:
            if (!(rc = rd_raw(&d, 0, &s, &sl, 16))) {
                r.status = key_is(s, sl, "READY") ? RF_REPLICA_READY
                           : key_is(s, sl, "UPDATING") ? RF_REPLICA_UPDATING : 0;
                if (!r.status)
                    rc = fail(&d, "neither READY nor UPDATING");
            }
            break;
        case F_KEEPS:
            if (!(rc = rd_uint(&d, &v)) && (v < 1 || v > 2))
                rc = fail(&d, "1 or 2 expected");
            r.keeps = (uint32_t)v;
            break;
        case F_LENGTH: rc = rd_uint(&d, &r.length); break;
        case F_CHUNK:
            if (!(rc = rd_uint(&d, &r.chunk)) && (r.chunk < 4096 || r.chunk > (1u << 30)))
                rc = fail(&d, "chunk size out of range (4 KiB .. 1 GiB)");
            break;
        case F_SUMS:
            if (!(rc = rd_raw(&d, 1, &sums.p, &sums.l, RF_REPLICA_MAX_SUMS * 8u)) && sums.l % 8)
                rc = fail(&d, "not a whole number of 8-byte checksums");
            break;
        case F_HB: rc = rd_uint(&d, &r.heartbeat_ms); break;
        }
    }
    if (!rc && seen != F_ALL) {
        for (int j = 0; j < 14; j++)
            if (!(seen & (1u << j))) {
                d.field = names[j];
                break;
            }
        rc = fail(&d, "missing");
    }
    if (!rc && d.p != d.end) {
        d.field = "(end)";
        rc = fail(&d, "bytes after the record");
    }
    if (!rc && sums_needed(r.length, r.chunk) != sums.l / 8) {
        d.field = "sums";
        rc = fail(&d, "count does not match length / chunk");
    }
    if (rc)
        return rc;
    r.n_sums = sums.l / 8;
    /* One allocation: struct, sums (aligned), then strings and blobs. */
    size_t total = sizeof(r) + r.n_sums * 8 + id.l + model.l + tp.l + 3 + addr.l + rkey.l + 2;
    struct rf_replica *o = malloc(total);
    if (!o)
        return REFIT_ENOMEM;
    *o = r;
    uint64_t *w = (uint64_t *)(o + 1);
    for (size_t i = 0; i < r.n_sums; i++) {
        uint64_t x = 0;
        for (int b = 7; b >= 0; b--)
            x = x << 8 | sums.p[i * 8 + (size_t)b];
        w[i] = x;
    }
    o->sums = w;
    char *at = (char *)(w + r.n_sums);
    struct span *str[3] = {&id, &model, &tp};
    const char **dst[3] = {&o->id, &o->model, &o->transport};
    for (int j = 0; j < 3; j++) {
        memcpy(at, str[j]->p, str[j]->l);
        at[str[j]->l] = '\0';
        *dst[j] = at;
        at += str[j]->l + 1;
    }
    memcpy(at, addr.p, addr.l);
    o->address = (struct refit_blob){at, addr.l};
    at += addr.l + 1;
    memcpy(at, rkey.p, rkey.l);
    o->rkey = (struct refit_blob){at, rkey.l};
    memcpy(o->layout.b, lay.p, 16);
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

int rf_lease_decode(const void *buf, size_t len, const char *key, struct rf_lease **out, size_t *n_out)
{
    struct rd d = {buf, (const uint8_t *)buf + len, buf, key ? key : "lease", "(top)"};
    struct rf_lease *l = NULL;
    size_t nl = 0;
    int have = 0;
    uint32_t n;
    int rc = rd_head(&d, 'm', &n);
    for (uint32_t i = 0; !rc && i < n; i++) {
        const uint8_t *k;
        uint32_t kl;
        d.field = "(key)";
        if ((rc = rd_raw(&d, 0, &k, &kl, 64)))
            break;
        uint64_t v;
        if (key_is(k, kl, "schema")) {
            d.field = "schema";
            if (!(rc = rd_uint(&d, &v)) && v != RF_REPLICA_SCHEMA)
                rc = fail(&d, "unknown schema");
        } else if (key_is(k, kl, "leases")) {
            d.field = "leases";
            uint32_t m;
            if (have) {
                rc = fail(&d, "appears twice");
                break;
            }
            have = 1;
            if ((rc = rd_head(&d, 'a', &m)))
                break;
            if (m > RF_LEASE_MAX) {
                rc = fail(&d, "too many entries");
                break;
            }
            /* Each entry takes at least 4 bytes: the header checked that
             * m bytes are left, so m entries are bounded by the input. */
            l = calloc(m ? m : 1, sizeof(*l));
            if (!l)
                return REFIT_ENOMEM;
            for (uint32_t j = 0; !rc && j < m; j++) {
                uint32_t three;
                const uint8_t *s;
                uint32_t sl;
                if ((rc = rd_head(&d, 'a', &three)))
                    break;
                if (three != 3) {
                    rc = fail(&d, "an entry is [puller, expires_ms, version]");
                    break;
                }
                if (!(rc = rd_raw(&d, 0, &s, &sl, REFIT_RECORD_MAX_ID)) && !(rc = id_ok(&d, s, sl))) {
                    memcpy(l[j].id, s, sl);
                    l[j].id[sl] = '\0';
                }
                if (!rc)
                    rc = rd_uint(&d, &l[j].expires_ms);
                if (!rc)
                    rc = rd_uint(&d, &l[j].version);
            }
            nl = m;
        } else {
            d.field = "(unknown)";
            rc = rd_skip(&d, 0);
        }
    }
    if (!rc && !have) {
        d.field = "leases";
        rc = fail(&d, "missing");
    }
    if (!rc && d.p != d.end) {
        d.field = "(end)";
        rc = fail(&d, "bytes after the list");
    }
    if (rc) {
        free(l);
        return rc;
    }
    if (!nl) {
        free(l);
        l = NULL;
    }
    *out = l;
    *n_out = nl;
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
