/* catalog_records.c — what a source and a receiver say in the store
 * besides the catalog (refit/catalog.h): source records (encode, validating
 * decode, publish, fetch), heartbeats and the staleness verdict, and
 * receivers' acknowledgements.  Decoders read through msgpack_rd.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog_int.h"
#include "refit/status.h"

static const char *const status_names[] = {NULL, "INIT", "READY", "STALE"};

const char *refit_source_status_name(uint32_t st)
{
    return st >= REFIT_SOURCE_INIT && st <= REFIT_SOURCE_STALE ? status_names[st] : "INVALID";
}

/* ------------------------------------------------------------------ */
/* Source record */

int refit_record_encode(const struct refit_source_record *r, void **buf, size_t *len)
{
    return refit_record_encode_ext(r, NULL, buf, len);
}

int refit_record_encode_ext(const struct refit_source_record *r, const struct refit_src_ext *xp, void **buf,
                            size_t *len)
{
    int rc = refit_check_id("source id", r->source_id);
    if (rc)
        return rc;
    if (!r->model || !r->transport || strlen(r->model) > REFIT_RECORD_MAX_STRING ||
        strlen(r->transport) > REFIT_RECORD_MAX_STRING)
        return refit_error_set(REFIT_EINVAL, "record of %s: model or transport missing or too long", r->source_id);
    int sender = r->sender && strcmp(r->sender, r->source_id);
    if (sender && (!*r->sender || strlen(r->sender) > REFIT_RECORD_MAX_STRING))
        return refit_error_set(REFIT_EINVAL, "record of %s: sender name empty or too long", r->source_id);
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
    static const struct refit_src_ext none = {0};
    const struct refit_src_ext *x = xp ? xp : &none;
    bool has_dp = x->dp_size > 1, has_fsdp = x->fsdp != 0, has_vp = x->vp > 1, has_ppl = x->n_pp_layers > 0;
    if (x->dp_rank >= (x->dp_size ? x->dp_size : 1) || (has_fsdp && x->shard_rank >= x->shard_size) ||
        x->n_pp_layers > REFIT_RECORD_MAX_CHUNKS)
        return refit_error_set(REFIT_EINVAL, "record of %s: dp, shard or pipeline split out of range", r->source_id);
    pk_init(&k, hint + 8 * x->n_pp_layers);
    rf_cat_head(&k, (r->keeps > 1 ? 12 : 11) + sender + has_dp + has_fsdp + has_vp + has_ppl);
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
    if (sender) {
        pk_str(&k, "sender");
        pk_str(&k, r->sender);
    }
    if (has_dp) {
        pk_str(&k, "dp");
        PK(&k, msgpack_pack_array(&k.p, 2));
        PK(&k, msgpack_pack_uint32(&k.p, x->dp_rank));
        PK(&k, msgpack_pack_uint32(&k.p, x->dp_size));
    }
    if (has_fsdp) {
        pk_str(&k, "fsdp");
        PK(&k, msgpack_pack_array(&k.p, 2));
        PK(&k, msgpack_pack_uint32(&k.p, x->shard_rank));
        PK(&k, msgpack_pack_uint32(&k.p, x->shard_size));
    }
    if (has_vp) {
        pk_str(&k, "vp");
        PK(&k, msgpack_pack_uint32(&k.p, x->vp));
    }
    if (has_ppl) {
        pk_str(&k, "pplayers");
        PK(&k, msgpack_pack_array(&k.p, x->n_pp_layers));
        for (uint32_t i = 0; i < x->n_pp_layers; i++)
            PK(&k, msgpack_pack_uint32(&k.p, x->pp_layers[i]));
    }
    return pk_finish(&k, buf, len);
}

/* Room for the position fields after a decoded record, the blob table
 * (pointers) aligned after it. */
#define EXT_SPACE ((sizeof(struct refit_src_ext) + 15) & ~(size_t)15)

static int rd_layout(struct rf_mp *d, struct refit_par_layout *L)
{
    uint32_t n, v[8];
    int rc = rf_mp_array(d, &n, 1);
    if (rc)
        return rc;
    if (n != 8)
        return rf_mp_fail(d, "%u entries, 8 expected (tp, pp, ep, etp rank and size)", n);
    for (int i = 0; i < 8; i++)
        if ((rc = rf_mp_u32(d, &v[i], 1u << 24)))
            return rc;
    static const char *names[] = {"tp", "pp", "ep", "etp"};
    for (int i = 0; i < 4; i++)
        if (v[2 * i + 1] == 0 || v[2 * i] >= v[2 * i + 1])
            return rf_mp_fail(d, "%s rank %u of size %u", names[i], v[2 * i], v[2 * i + 1]);
    *L = (struct refit_par_layout){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
    return 0;
}

/* [rank, size] with rank < size. */
static int rd_pair(struct rf_mp *d, const char *what, uint32_t *rank, uint32_t *size)
{
    uint32_t n;
    int rc = rf_mp_array(d, &n, 1);
    if (!rc && n != 2)
        rc = rf_mp_fail(d, "%s: %u entries, [rank, size] expected", what, n);
    if (!rc)
        rc = rf_mp_u32(d, rank, 1u << 24);
    if (!rc)
        rc = rf_mp_u32(d, size, 1u << 24);
    if (!rc && *rank >= *size)
        rc = rf_mp_fail(d, "%s rank %u of size %u", what, *rank, *size);
    return rc;
}

static int rd_pplayers(struct rf_mp *d, struct refit_src_ext *x)
{
    uint32_t n;
    int rc = rf_mp_array(d, &n, 1);
    if (!rc && n > REFIT_RECORD_MAX_CHUNKS)
        rc = rf_mp_fail(d, "%u pipeline chunks, at most %d", n, REFIT_RECORD_MAX_CHUNKS);
    for (uint32_t i = 0; !rc && i < n; i++)
        rc = rf_mp_u32(d, &x->pp_layers[i], 1u << 20);
    if (!rc)
        x->n_pp_layers = n;
    return rc;
}

/* The remote keys: an array of blobs, counted and summed. */
static int rd_rkeys(struct rf_mp *d, uint32_t *n, uint64_t *bytes)
{
    int rc = rf_mp_array(d, n, 1);
    if (!rc && *n > REFIT_CATALOG_MAX_REGIONS)
        rc = rf_mp_fail(d, "%u remote keys, at most %d", *n, REFIT_CATALOG_MAX_REGIONS);
    *bytes = 0;
    for (uint32_t j = 0; !rc && j < *n; j++) {
        const uint8_t *b;
        uint32_t bl;
        rc = rf_mp_bin(d, &b, &bl, REFIT_RECORD_MAX_BLOB);
        *bytes += bl;
    }
    return rc;
}

static int rd_status(struct rf_mp *d, uint32_t *status)
{
    const uint8_t *s;
    uint32_t sl;
    int rc = rf_mp_str(d, &s, &sl, 16);
    *status = 0;
    for (uint32_t st = REFIT_SOURCE_INIT; !rc && st <= REFIT_SOURCE_STALE; st++)
        if (rf_mp_key_is(s, sl, status_names[st]))
            *status = st;
    if (!rc && !*status)
        rc = rf_mp_fail(d, "'%.*s' is not INIT, READY or STALE", (int)sl, (const char *)s);
    return rc;
}

int refit_record_decode(const void *buf, size_t len, const char *key, struct refit_source_record **out)
{
    static const char *const fields[] = {"schema", "source", "model",  "layout", "transport", "address",
                                         "rkeys",  "catalog", "version", "status", "heartbeat", "keeps",
                                         "dp",     "fsdp",   "vp",      "pplayers", "sender"};
    enum { F_SCHEMA, F_SOURCE, F_MODEL, F_LAYOUT, F_TRANSPORT, F_ADDRESS, F_RKEYS, F_CATALOG, F_VERSION,
           F_STATUS, F_HEARTBEAT, F_KEEPS /* optional from here */, F_DP, F_FSDP, F_VP, F_PPLAYERS, F_SENDER, F_N };
    struct rf_mp d;
    rf_mp_init(&d, buf, len, key, "record");
    struct refit_source_record r = {0};
    struct refit_src_ext ext = {.dp_size = 1, .vp = 1};
    struct rf_span source = {0}, model = {0}, transport = {0}, address = {0}, hash = {0}, sender = {0};
    const uint8_t *rkeys_at = NULL;
    uint32_t n, n_rkeys = 0, seen = 0;
    uint64_t rkey_bytes = 0;
    int rc = rf_mp_map(&d, &n, 1);
    for (uint32_t i = 0; !rc && i < n; i++) {
        int f;
        if ((rc = rf_mp_field(&d, fields, F_N, &seen, &f)))
            break;
        switch (f) {
        case F_SCHEMA: rc = rf_cat_schema(&d, &r.schema); break;
        case F_SOURCE: rc = rf_mp_id(&d, &source.p, &source.l, "source id"); break;
        case F_MODEL: rc = rf_mp_str(&d, &model.p, &model.l, REFIT_RECORD_MAX_STRING); break;
        case F_LAYOUT: rc = rd_layout(&d, &r.layout); break;
        case F_TRANSPORT: rc = rf_mp_str(&d, &transport.p, &transport.l, REFIT_RECORD_MAX_STRING); break;
        case F_ADDRESS: rc = rf_mp_bin(&d, &address.p, &address.l, REFIT_RECORD_MAX_BLOB); break;
        case F_RKEYS:
            rkeys_at = d.p;
            rc = rd_rkeys(&d, &n_rkeys, &rkey_bytes);
            break;
        case F_CATALOG:
            rc = rf_mp_bin(&d, &hash.p, &hash.l, 16);
            if (!rc && hash.l != 16)
                rc = rf_mp_fail(&d, "%u bytes, a 16-byte hash expected", hash.l);
            break;
        case F_VERSION: rc = rf_mp_u64(&d, &r.version); break;
        case F_STATUS: rc = rd_status(&d, &r.status); break;
        case F_HEARTBEAT: rc = rf_mp_u64(&d, &r.heartbeat_ms); break;
        case F_KEEPS: rc = rf_mp_u32(&d, &r.keeps, 2); break;
        case F_SENDER:
            rc = rf_mp_str(&d, &sender.p, &sender.l, REFIT_RECORD_MAX_STRING);
            if (!rc && (!sender.l || memchr(sender.p, 0, sender.l)))
                rc = rf_mp_fail(&d, "an empty sender name or one with a NUL");
            break;
        case F_DP: rc = rd_pair(&d, "dp", &ext.dp_rank, &ext.dp_size); break;
        case F_FSDP:
            rc = rd_pair(&d, "fsdp", &ext.shard_rank, &ext.shard_size);
            ext.fsdp = 1;
            break;
        case F_VP: rc = rf_mp_u32(&d, &ext.vp, 4096); break;
        case F_PPLAYERS: rc = rd_pplayers(&d, &ext); break;
        }
    }
    if (!rc)
        rc = rf_mp_required(&d, fields, F_N, seen, (1u << F_KEEPS) - 1);
    if (!rc)
        rc = rf_mp_end(&d, "record");
    if (rc)
        return rc;
    /* One allocation: struct, blob table, then bytes (every length was
     * bounded above: the sum fits). */
    size_t total = sizeof(r) + EXT_SPACE + n_rkeys * sizeof(struct refit_blob) + source.l + model.l + transport.l +
                   3 + sender.l + 1 + address.l + 1 + (size_t)rkey_bytes;
    struct refit_source_record *o = malloc(total);
    if (!o)
        return REFIT_ENOMEM;
    *o = r;
    /* the position fields right after the struct (refit_record_ext) */
    memcpy(o + 1, &ext, sizeof(ext));
    struct refit_blob *blobs = (struct refit_blob *)((char *)(o + 1) + EXT_SPACE);
    char *at = (char *)(blobs + n_rkeys);
    o->source_id = rf_span_put(&at, source);
    o->model = rf_span_put(&at, model);
    o->transport = rf_span_put(&at, transport);
    o->sender = sender.p ? rf_span_put(&at, sender) : NULL;
    memcpy(at, address.p, address.l);
    o->address = (struct refit_blob){at, address.l};
    at += address.l + 1;
    /* The keys again, from where they start: read and checked above. */
    struct rf_mp rk = d;
    rk.p = rkeys_at;
    rf_mp_array(&rk, &n_rkeys, 1);
    for (uint32_t j = 0; j < n_rkeys; j++) {
        const uint8_t *b;
        uint32_t bl;
        rf_mp_bin(&rk, &b, &bl, REFIT_RECORD_MAX_BLOB);
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

const struct refit_src_ext *refit_record_ext(const struct refit_source_record *r)
{
    return (const struct refit_src_ext *)(r + 1);
}

int refit_record_check_catalog(const struct refit_source_record *r, const refit_catalog_t *c, const char *key)
{
    /* One key more: the source's checksum table (refit.sums: transport). */
    if (r->n_rkeys != c->n_regions && r->n_rkeys != (size_t)c->n_regions + 1)
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
    return refit_record_publish_ext(s, r, NULL);
}

int refit_record_publish_ext(refit_store_t *s, const struct refit_source_record *r, const struct refit_src_ext *x)
{
    char k1[REFIT_STORE_MAX_KEY + 1], k2[REFIT_STORE_MAX_KEY + 1];
    int rc = refit_key_source(k1, r->source_id);
    if (!rc)
        rc = refit_key_version_source(k2, r->version, r->source_id);
    if (rc)
        return rc;
    void *enc;
    size_t len;
    if ((rc = refit_record_encode_ext(r, x, &enc, &len)))
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
    rf_cat_head(&k, 4);
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
    /* Only the time matters to readers; the other fields are skipped. */
    static const char *const fields[] = {"time"};
    struct rf_mp d;
    rf_mp_init(&d, buf, len, key, "heartbeat");
    uint32_t n, seen = 0;
    int rc = rf_mp_map(&d, &n, 1);
    for (uint32_t i = 0; !rc && i < n; i++) {
        int f;
        if (!(rc = rf_mp_field(&d, fields, 1, &seen, &f)) && f == 0)
            rc = rf_mp_u64(&d, time_ms);
    }
    if (!rc)
        rc = rf_mp_required(&d, fields, 1, seen, 1);
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

/* A source check read back: its verdict from the record at rec and the
 * heartbeat at hb (NULL: not read, seen_hb_ms stands for it). */
static void check_item(struct refit_source_check *c, struct refit_store_get_item *rec,
                       struct refit_store_get_item *hbk, uint64_t now, int64_t stale_after_ms)
{
    uint64_t hb = hbk ? 0 : c->seen_hb_ms;
    c->rec = NULL;
    c->stale = false;
    c->status = rec->status;
    if (!c->status && refit_record_decode(rec->val, rec->len, rec->key, &c->rec))
        c->status = REFIT_EPROTO;
    if (!c->status && record_matches_key(c->rec, c->id, rec->key))
        c->status = REFIT_EPROTO;
    if (!c->status && hbk && hbk->status == 0 && refit_heartbeat_decode(hbk->val, hbk->len, hbk->key, &hb))
        c->status = REFIT_EPROTO;
    if (c->status) {
        free(c->rec);
        c->rec = NULL;
    } else {
        c->stale = refit_record_is_stale(c->rec, hb, now, stale_after_ms);
        if (hb > c->rec->heartbeat_ms)
            c->rec->heartbeat_ms = hb;
    }
}

/* Whether source check c must read the heartbeat key (see catalog.h). */
static int needs_heartbeat(const struct refit_source_check *c, uint64_t now, int64_t stale_after_ms)
{
    return !c->seen_hb_ms || now < c->seen_hb_ms || now - c->seen_hb_ms >= (uint64_t)stale_after_ms / 2;
}

int refit_source_check_many(refit_store_t *s, struct refit_source_check *c, size_t n, int64_t stale_after_ms,
                            struct refit_store_get_item *extra, size_t n_extra)
{
    return refit_source_check_many_put(s, c, n, stale_after_ms, extra, n_extra, NULL, 0);
}

int refit_source_check_many_put(refit_store_t *s, struct refit_source_check *c, size_t n, int64_t stale_after_ms,
                                struct refit_store_get_item *extra, size_t n_extra,
                                const struct refit_store_put_item *puts, size_t n_puts)
{
    uint64_t now = refit_time_ms();
    size_t m = 2 * n + n_extra, k = 0;
    struct refit_store_get_item *it = calloc(m ? m : 1, sizeof(*it));
    char (*keys)[REFIT_STORE_MAX_KEY + 1] = calloc(n ? 2 * n : 1, REFIT_STORE_MAX_KEY + 1);
    /* hb[i]: where source i's heartbeat is in it (0: not read) */
    size_t *hb = calloc(n ? n : 1, sizeof(*hb));
    int rc = it && keys && hb ? 0 : REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < n; i++) {
        rc = refit_key_source(keys[2 * i], c[i].id);
        it[k++].key = keys[2 * i];
        if (!rc && needs_heartbeat(&c[i], now, stale_after_ms)) {
            rc = refit_key_heartbeat(keys[2 * i + 1], c[i].id);
            hb[i] = k;
            it[k++].key = keys[2 * i + 1];
        }
    }
    size_t first_extra = k;
    for (size_t i = 0; !rc && i < n_extra; i++)
        it[k++].key = extra[i].key;
    if (!rc)
        rc = refit_store_get_put_many(s, it, k, puts, n_puts);
    now = refit_time_ms();
    for (size_t i = 0, at = 0; !rc && i < n; i++) {
        check_item(&c[i], &it[at], hb[i] ? &it[hb[i]] : NULL, now, stale_after_ms);
        at += hb[i] ? 2 : 1;
    }
    for (size_t i = 0; !rc && i < n_extra; i++)
        extra[i] = it[first_extra + i];
    for (size_t i = 0; it && i < first_extra; i++)
        free(it[i].val);
    if (rc)
        for (size_t i = first_extra; it && i < k; i++)
            free(it[i].val);
    free(it);
    free(keys);
    free(hb);
    if (!rc)
        refit_error_clear(); /* per-item messages: the statuses say it */
    return rc;
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
    rf_cat_head(&k, 4);
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
    static const char *const fields[] = {"schema", "version", "receiver", "time"};
    struct rf_mp d;
    rf_mp_init(&d, buf, len, key, "ack");
    struct refit_ack a = {0};
    struct rf_span recv = {0};
    uint32_t n, seen = 0;
    int rc = rf_mp_map(&d, &n, 1);
    for (uint32_t i = 0; !rc && i < n; i++) {
        int f;
        if ((rc = rf_mp_field(&d, fields, 4, &seen, &f)))
            break;
        switch (f) {
        case 0: rc = rf_cat_schema(&d, &a.schema); break;
        case 1: rc = rf_mp_u64(&d, &a.version); break;
        case 2: rc = rf_mp_id(&d, &recv.p, &recv.l, "receiver id"); break;
        case 3: rc = rf_mp_u64(&d, &a.time_ms); break;
        }
    }
    if (!rc)
        rc = rf_mp_required(&d, fields, 4, seen, 15);
    if (!rc)
        rc = rf_mp_end(&d, "ack");
    if (rc)
        return rc;
    struct refit_ack *o = malloc(sizeof(*o) + recv.l + 1);
    if (!o)
        return REFIT_ENOMEM;
    *o = a;
    char *at = (char *)(o + 1);
    o->receiver = rf_span_put(&at, recv);
    *out = o;
    return 0;
}

int refit_ack_item(uint64_t version, const char *receiver, char *key, void **val, size_t *len)
{
    int rc = refit_key_ack(key, version, receiver);
    if (rc)
        return rc;
    struct refit_ack a = {REFIT_CATALOG_SCHEMA, version, receiver, refit_time_ms()};
    return refit_ack_encode(&a, val, len);
}

int refit_ack_put(refit_store_t *s, uint64_t version, const char *receiver)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    void *enc;
    size_t len;
    int rc = refit_ack_item(version, receiver, key, &enc, &len);
    if (rc)
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

