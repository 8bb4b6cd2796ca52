/* test_catalog.c — catalogs, source records, acks and heartbeats: encode /
 * decode round trips, what the decoders refuse (with the key and field in
 * the message), and the store-side rules (content addressing, retention,
 * stale detection, catalog gc) on the file store. */
#include <check.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "refit/catalog.h"
#include "refit/status.h"
#include "../check_run.h"

#define OK(expr)                                                                           \
    do {                                                                                   \
        int rc_ = (expr);                                                                  \
        ck_assert_msg(rc_ == 0, "%s: %s (%d)", #expr, refit_error_message(), rc_);         \
    } while (0)

/* A small MoE-shaped catalog: every role once, two regions. */
static refit_catalog_t *small_catalog(void)
{
    refit_catalog_t *c;
    uint32_t r0, r1;
    OK(refit_catalog_create(&c));
    OK(refit_catalog_add_region(c, 1 << 20, &r0));
    OK(refit_catalog_add_region(c, 1 << 20, &r1));
    struct refit_cat_tensor t[] = {
        {"embedding.word_embeddings.weight", REFIT_DTYPE_BF16, REFIT_CAT_ROLE_VOCAB, 2, {64, 32}, {128, 32}, 0, 64, 64,
         -1, r0, 0, 64 * 32 * 2, 0x1111, 0},
        {"decoder.final_layernorm.weight", REFIT_DTYPE_F32, REFIT_CAT_ROLE_REPLICATED, 1, {32}, {32}, -1, 0, 0, -1, r0,
         4096, 128, 0x2222, 0},
        {"decoder.layers.0.self_attention.linear_qkv.weight", REFIT_DTYPE_BF16, REFIT_CAT_ROLE_QKV_COLUMN, 2, {48, 32},
         {96, 32}, 0, 0, 48, -1, r0, 8192, 48 * 32 * 2, 0x3333, 0},
        {"decoder.layers.0.self_attention.linear_proj.weight", REFIT_DTYPE_BF16, REFIT_CAT_ROLE_ROW, 2, {32, 16},
         {32, 32}, 1, 16, 16, -1, r0, 16384, 32 * 16 * 2, 0x4444, 0},
        {"decoder.layers.0.mlp.linear_fc1.weight", REFIT_DTYPE_BF16, REFIT_CAT_ROLE_GATED_COLUMN, 2, {64, 32},
         {128, 32}, 0, 0, 64, -1, r1, 0, 64 * 32 * 2, 0x5555, 0},
        {"decoder.layers.0.mlp.experts.linear_fc1.weight3", REFIT_DTYPE_BF16, REFIT_CAT_ROLE_EXPERT_COLUMN, 2,
         {16, 32}, {32, 32}, 0, 16, 16, 7, r1, 8192, 16 * 32 * 2, 0x6666, 0},
        {"decoder.layers.0.mlp.experts.linear_fc2.weight3", REFIT_DTYPE_BF16, REFIT_CAT_ROLE_EXPERT_ROW, 2, {32, 8},
         {32, 16}, 1, 8, 8, 7, r1, 16384, 32 * 8 * 2, 0x7777, 0},
        {"output_layer.weight", REFIT_DTYPE_F8_E4M3, REFIT_CAT_ROLE_COLUMN, 2, {64, 32}, {128, 32}, 0, 0, 64, -1, r1,
         32768, 64 * 32, UINT64_MAX, 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        OK(refit_catalog_add(c, &t[i]));
    return c;
}

static void same_tensor(const struct refit_cat_tensor *a, const struct refit_cat_tensor *b)
{
    ck_assert_str_eq(a->name, b->name);
    ck_assert_uint_eq(a->dtype, b->dtype);
    ck_assert_uint_eq(a->role, b->role);
    ck_assert_uint_eq(a->ndim, b->ndim);
    for (uint32_t i = 0; i < a->ndim; i++) {
        ck_assert_uint_eq(a->shape[i], b->shape[i]);
        ck_assert_uint_eq(a->global_shape[i], b->global_shape[i]);
    }
    ck_assert_int_eq(a->shard_axis, b->shard_axis);
    ck_assert_uint_eq(a->shard_start, b->shard_start);
    ck_assert_uint_eq(a->shard_len, b->shard_len);
    ck_assert_int_eq(a->expert, b->expert);
    ck_assert_uint_eq(a->region, b->region);
    ck_assert_uint_eq(a->offset, b->offset);
    ck_assert_uint_eq(a->nbytes, b->nbytes);
    ck_assert_uint_eq(a->checksum, b->checksum);
}

START_TEST(catalog_roundtrip)
{
    refit_catalog_t *c = small_catalog(), *d = NULL;
    void *buf, *buf2;
    size_t len, len2;
    OK(refit_catalog_encode(c, &buf, &len));
    OK(refit_catalog_encode(c, &buf2, &len2));
    ck_assert(len == len2 && !memcmp(buf, buf2, len)); /* deterministic: the hash is the identity */
    OK(refit_catalog_decode(buf, len, "catalogs/x", &d));
    ck_assert_uint_eq(d->n_tensors, c->n_tensors);
    ck_assert_uint_eq(d->n_regions, 2);
    for (size_t i = 0; i < c->n_tensors; i++)
        same_tensor(&c->tensors[i], &d->tensors[i]);
    ck_assert_int_eq(refit_catalog_find(d, "output_layer.weight"), 7);
    ck_assert_int_eq(refit_catalog_find(d, "nope"), -1);
    /* A decoded catalog is read-only. */
    ck_assert_int_eq(refit_catalog_add(d, &c->tensors[0]), REFIT_EINVAL);
    free(buf);
    free(buf2);
    refit_catalog_destroy(c);
    refit_catalog_destroy(d);
}
END_TEST

START_TEST(catalog_builder_rules)
{
    refit_catalog_t *c = small_catalog();
    struct refit_cat_tensor t = c->tensors[3]; /* row */
    t.name = "x1";
    t.shard_axis = 0; /* a row tensor shards along 1 */
    ck_assert_int_eq(refit_catalog_add(c, &t), REFIT_EINVAL);
    ck_assert(strstr(refit_error_message(), "shard_axis"));
    t = c->tensors[1];
    t.name = "x2";
    t.offset = (1 << 20) - 64; /* 128 bytes do not fit */
    ck_assert_int_eq(refit_catalog_add(c, &t), REFIT_EINVAL);
    ck_assert(strstr(refit_error_message(), "offset"));
    t = c->tensors[1];
    t.name = "x3";
    t.nbytes = 129;
    ck_assert_int_eq(refit_catalog_add(c, &t), REFIT_EINVAL);
    t = c->tensors[1];
    t.name = "x4";
    t.expert = 3; /* not an expert role */
    ck_assert_int_eq(refit_catalog_add(c, &t), REFIT_EINVAL);
    t = c->tensors[5];
    t.name = "x5";
    t.expert = -1; /* expert role without expert */
    ck_assert_int_eq(refit_catalog_add(c, &t), REFIT_EINVAL);
    t = c->tensors[0];
    t.name = "x6";
    t.shard_start = 100; /* 100 + 64 > 128 */
    ck_assert_int_eq(refit_catalog_add(c, &t), REFIT_EINVAL);
    t = c->tensors[0];
    t.region = 2;
    t.name = "x7";
    ck_assert_int_eq(refit_catalog_add(c, &t), REFIT_EINVAL);
    t = c->tensors[0]; /* same name */
    ck_assert_int_eq(refit_catalog_add(c, &t), REFIT_EEXIST);
    refit_catalog_destroy(c);
}
END_TEST

/* Hand-made catalogs for what the builder would never produce. */
static void pk_s(msgpack_packer *p, const char *s)
{
    msgpack_pack_str(p, strlen(s));
    msgpack_pack_str_body(p, s, strlen(s));
}

static void pk_tensor(msgpack_packer *p, const char *name, uint64_t offset)
{
    msgpack_pack_array(p, 13);
    pk_s(p, name);
    pk_s(p, "F32");
    pk_s(p, "replicated");
    msgpack_pack_array(p, 1);
    msgpack_pack_uint64(p, 4);
    msgpack_pack_array(p, 1);
    msgpack_pack_uint64(p, 4);
    msgpack_pack_int32(p, -1);
    msgpack_pack_uint64(p, 0);
    msgpack_pack_uint64(p, 0);
    msgpack_pack_int64(p, -1);
    msgpack_pack_uint32(p, 0);
    msgpack_pack_uint64(p, offset);
    msgpack_pack_uint64(p, 16);
    msgpack_pack_uint64(p, 0);
}

static int decode_handmade(int variant)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer p;
    msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&p, variant == 3 ? 2 : 3);
    pk_s(&p, "tensors"); /* before regions: order of map keys is free */
    msgpack_pack_array(&p, 2);
    pk_tensor(&p, "a", 0);
    pk_tensor(&p, variant == 0 ? "a" : "b", variant == 1 ? 60 : 16);
    pk_s(&p, "schema");
    msgpack_pack_uint32(&p, variant == 2 ? 99 : 1);
    if (variant != 3) {
        pk_s(&p, "regions");
        msgpack_pack_array(&p, 1);
        msgpack_pack_uint64(&p, 64);
    }
    refit_catalog_t *c = NULL;
    int rc = refit_catalog_decode(sb.data, sb.size, "catalogs/handmade", &c);
    refit_catalog_destroy(c);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

START_TEST(catalog_decoder_refuses)
{
    ck_assert_int_eq(decode_handmade(4), 0); /* the valid variant */
    ck_assert_int_eq(decode_handmade(0), REFIT_EPROTO);
    ck_assert(strstr(refit_error_message(), "catalogs/handmade") && strstr(refit_error_message(), "name"));
    ck_assert_int_eq(decode_handmade(1), REFIT_EPROTO);
    ck_assert(strstr(refit_error_message(), "offset"));
    ck_assert_int_eq(decode_handmade(2), REFIT_EPROTO);
    ck_assert(strstr(refit_error_message(), "schema"));
    ck_assert_int_eq(decode_handmade(3), REFIT_EPROTO);
    ck_assert(strstr(refit_error_message(), "regions") && strstr(refit_error_message(), "missing"));
    /* A 5-byte header asking for 4 billion tensors is refused before any
     * allocation. */
    static const uint8_t huge[] = {0x81, 0xa7, 't', 'e', 'n', 's', 'o', 'r', 's', 0xdd, 0xff, 0xff, 0xff, 0xff};
    refit_catalog_t *c = NULL;
    ck_assert_int_eq(refit_catalog_decode(huge, sizeof(huge), "k", &c), REFIT_EPROTO);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(refit_catalog_decode("", 0, "k", &c), REFIT_EPROTO);
}
END_TEST

static struct refit_source_record sample_record(void)
{
    static const uint8_t k0[] = {1, 2, 3}, k1[] = {0, 0, 0, 0};
    static struct refit_blob keys[2] = {{k0, 3}, {k1, 4}};
    struct refit_source_record r = {
        .schema = 1, .source_id = "trainer-tp1-ep3", .model = "Qwen3-30B-A3B",
        .layout = {1, 2, 0, 1, 3, 8, 0, 1}, .transport = "tcp", .address = {"\0addr\xff", 6},
        .n_rkeys = 2, .rkeys = keys, .version = 42, .status = REFIT_SOURCE_READY,
        .heartbeat_ms = 1700000000123ull};
    memset(r.catalog.b, 0xab, 16);
    return r;
}

START_TEST(record_roundtrip_and_refusals)
{
    struct refit_source_record r = sample_record(), *d = NULL;
    void *buf;
    size_t len;
    OK(refit_record_encode(&r, &buf, &len));
    OK(refit_record_decode(buf, len, "sources/trainer-tp1-ep3", &d));
    ck_assert_str_eq(d->source_id, r.source_id);
    ck_assert_str_eq(d->model, r.model);
    ck_assert_str_eq(d->transport, "tcp");
    ck_assert(!memcmp(&d->layout, &r.layout, sizeof(r.layout)));
    ck_assert(d->address.len == 6 && !memcmp(d->address.data, "\0addr\xff", 6));
    ck_assert_uint_eq(d->n_rkeys, 2);
    ck_assert(d->rkeys[1].len == 4 && d->rkeys[0].len == 3 && !memcmp(d->rkeys[0].data, "\1\2\3", 3));
    ck_assert(!memcmp(d->catalog.b, r.catalog.b, 16));
    ck_assert_uint_eq(d->version, 42);
    ck_assert_uint_eq(d->status, REFIT_SOURCE_READY);
    ck_assert_uint_eq(d->heartbeat_ms, r.heartbeat_ms);
    ck_assert_ptr_null(d->sender); /* none given: the source id */
    free(d);
    /* The sender name, when the transport is named otherwise, round-trips;
     * one equal to the id is not written. */
    {
        struct refit_source_record s = sample_record(), *e = NULL;
        void *b2;
        size_t l2, l_plain = len;
        s.sender = "rank-7";
        OK(refit_record_encode(&s, &b2, &l2));
        OK(refit_record_decode(b2, l2, "sources/trainer-tp1-ep3", &e));
        ck_assert_str_eq(e->sender, "rank-7");
        ck_assert_str_eq(e->transport, "tcp");
        ck_assert(e->address.len == 6 && !memcmp(e->address.data, "\0addr\xff", 6));
        free(e);
        free(b2);
        s.sender = s.source_id;
        OK(refit_record_encode(&s, &b2, &l2));
        ck_assert_uint_eq(l2, l_plain);
        free(b2);
        s.sender = "";
        ck_assert_int_eq(refit_record_encode(&s, &b2, &l2), REFIT_EINVAL);
    }
    /* Trailing bytes, truncation. */
    uint8_t *big = malloc(len + 1);
    memcpy(big, buf, len);
    big[len] = 0;
    ck_assert_int_eq(refit_record_decode(big, len + 1, "sources/x", &d), REFIT_EPROTO);
    ck_assert_int_eq(refit_record_decode(buf, len - 1, "sources/x", &d), REFIT_EPROTO);
    ck_assert(strstr(refit_error_message(), "sources/x"));
    free(big);
    free(buf);
    /* Encoder refuses what the decoder would. */
    r.source_id = "bad/id";
    ck_assert_int_eq(refit_record_encode(&r, &buf, &len), REFIT_EINVAL);
    r = sample_record();
    r.status = 9;
    ck_assert_int_eq(refit_record_encode(&r, &buf, &len), REFIT_EINVAL);
    /* Layout rank >= size on the wire. */
    r = sample_record();
    r.layout.ep_rank = 8;
    OK(refit_record_encode(&r, &buf, &len));
    ck_assert_int_eq(refit_record_decode(buf, len, "sources/y", &d), REFIT_EPROTO);
    ck_assert(strstr(refit_error_message(), "layout") && strstr(refit_error_message(), "ep rank"));
    free(buf);
}
END_TEST

START_TEST(ack_roundtrip)
{
    struct refit_ack a = {1, 7, "vllm-0", 123456}, *d = NULL;
    void *buf;
    size_t len;
    OK(refit_ack_encode(&a, &buf, &len));
    OK(refit_ack_decode(buf, len, "versions/7/acks/vllm-0", &d));
    ck_assert_uint_eq(d->version, 7);
    ck_assert_str_eq(d->receiver, "vllm-0");
    ck_assert_uint_eq(d->time_ms, 123456);
    free(d);
    ck_assert_int_eq(refit_ack_decode(buf, len - 2, "versions/7/acks/vllm-0", &d), REFIT_EPROTO);
    free(buf);
}
END_TEST

START_TEST(keys_and_staleness)
{
    char k[REFIT_STORE_MAX_KEY + 1];
    OK(refit_key_version_source(k, 12, "tp0"));
    ck_assert_str_eq(k, "versions/12/sources/tp0");
    uint64_t v;
    OK(refit_key_parse_version(k, &v));
    ck_assert_uint_eq(v, 12);
    ck_assert_int_eq(refit_key_parse_version("versions/12x/a", &v), REFIT_EINVAL);
    ck_assert_int_eq(refit_key_parse_version("sources/1", &v), REFIT_EINVAL);
    ck_assert_int_eq(refit_key_source(k, "a/b"), REFIT_EINVAL);
    struct refit_hash128 h, h2;
    refit_hash128_of("abc", 3, &h);
    char hex[33];
    refit_hash128_hex(&h, hex);
    OK(refit_hash128_parse(hex, &h2));
    ck_assert(!memcmp(h.b, h2.b, 16));
    struct refit_source_record r = sample_record();
    r.heartbeat_ms = 1000;
    ck_assert(!refit_record_is_stale(&r, 0, 1500, 1000));
    ck_assert(refit_record_is_stale(&r, 0, 2500, 1000));
    ck_assert(!refit_record_is_stale(&r, 2000, 2500, 1000)); /* a fresh heartbeat key */
    ck_assert(!refit_record_is_stale(&r, 0, 500, 1000));      /* clock skew is not staleness */
    r.status = REFIT_SOURCE_STALE;
    ck_assert(refit_record_is_stale(&r, 2000, 2000, 1000));
}
END_TEST

START_TEST(store_rules)
{
    struct fx_store f;
    OK(fx_open(&f, "t-catalog", NULL));
    refit_catalog_t *c = small_catalog(), *back = NULL;
    void *enc;
    size_t len;
    OK(refit_catalog_encode(c, &enc, &len));
    struct refit_hash128 h, h2;
    bool sent = false;
    OK(refit_catalog_publish(f.s, enc, len, &h, &sent));
    ck_assert(sent);
    OK(refit_catalog_publish(f.s, enc, len, &h2, &sent));
    ck_assert(!sent); /* stored once */
    ck_assert(!memcmp(h.b, h2.b, 16));
    OK(refit_catalog_fetch(f.s, &h, &back));
    ck_assert_uint_eq(back->n_tensors, c->n_tensors);
    refit_catalog_destroy(back);
    back = NULL;
    /* Tampered bytes under a hash key: the hash check catches them. */
    char key[REFIT_STORE_MAX_KEY + 1];
    refit_key_catalog(key, &h);
    ((uint8_t *)enc)[len - 1] ^= 1;
    OK(refit_store_put(f.s, key, enc, len));
    ck_assert_int_eq(refit_catalog_fetch(f.s, &h, &back), REFIT_ECHECKSUM);
    ((uint8_t *)enc)[len - 1] ^= 1;
    OK(refit_store_put(f.s, key, enc, len));
    /* Records for versions 1..5, an orphan catalog, acks. */
    struct refit_source_record r = sample_record();
    r.catalog = h;
    r.n_rkeys = 2;
    for (uint64_t v = 1; v <= 5; v++) {
        r.version = v;
        r.heartbeat_ms = refit_time_ms();
        uint64_t rt = refit_store_round_trips(f.s);
        OK(refit_record_publish(f.s, &r));
        ck_assert_uint_eq(refit_store_round_trips(f.s) - rt, 1);
        OK(refit_ack_put(f.s, v, "rx0"));
    }
    OK(refit_ack_put(f.s, 5, "rx1"));
    size_t n;
    OK(refit_ack_count(f.s, 5, &n));
    ck_assert_uint_eq(n, 2);
    struct refit_source_record *got;
    OK(refit_record_fetch(f.s, r.source_id, &got));
    ck_assert_uint_eq(got->version, 5);
    OK(refit_record_check_catalog(got, c, "sources/x"));
    /* The same record under another source's key is refused. */
    void *renc;
    size_t rlen;
    OK(refit_record_encode(got, &renc, &rlen));
    OK(refit_store_put(f.s, "sources/other", renc, rlen));
    struct refit_source_record *bad = NULL;
    ck_assert_int_eq(refit_record_fetch(f.s, "other", &bad), REFIT_EPROTO);
    ck_assert(strstr(refit_error_message(), "sources/other") && strstr(refit_error_message(), "source"));
    ck_assert_ptr_null(bad);
    OK(refit_store_del(f.s, "sources/other"));
    free(renc);
    free(got);
    bool stale = true;
    OK(refit_heartbeat_put(f.s, r.source_id, 5, 30000));
    uint64_t hb;
    OK(refit_heartbeat_get(f.s, r.source_id, &hb));
    OK(refit_source_check(f.s, r.source_id, 30000, &got, &stale));
    ck_assert(!stale);
    free(got);
    /* A heartbeat seen less than half of stale_after ago is not read
     * again (a fence after discovery): a heartbeat key that would not
     * decode goes unnoticed then, and is read (and refused) when the one
     * seen is older, or none was. */
    char hbk[REFIT_STORE_MAX_KEY + 1];
    OK(refit_key_heartbeat(hbk, r.source_id));
    OK(refit_store_put(f.s, hbk, "?", 1));
    uint64_t now = refit_time_ms();
    struct refit_source_check sc[3] = {{.id = r.source_id, .seen_hb_ms = now},
                                       {.id = r.source_id, .seen_hb_ms = now - 20000},
                                       {.id = r.source_id}};
    OK(refit_source_check_many(f.s, sc, 3, 30000, NULL, 0));
    ck_assert_int_eq(sc[0].status, 0);
    ck_assert(!sc[0].stale);
    ck_assert_uint_ge(sc[0].rec->heartbeat_ms, now); /* the latest heartbeat known */
    ck_assert_int_eq(sc[1].status, REFIT_EPROTO);
    ck_assert_int_eq(sc[2].status, REFIT_EPROTO);
    for (int i = 0; i < 3; i++)
        free(sc[i].rec);
    OK(refit_heartbeat_put(f.s, r.source_id, 5, 30000));
    size_t deleted;
    OK(refit_versions_retain(f.s, 5, 2, &deleted));
    ck_assert_uint_eq(deleted, 6); /* versions 1..3: a record and an ack each */
    char **keys;
    OK(refit_store_list(f.s, "versions/", &keys, &n));
    ck_assert_uint_eq(n, 5); /* 4: record, ack; 5: record, two acks */
    ck_assert_str_eq(keys[0], "versions/4/acks/rx0");
    free(keys);
    /* gc: an orphan goes, the referenced catalog stays. */
    OK(refit_store_put(f.s, "catalogs/00000000000000000000000000000001", "x", 1));
    OK(refit_catalogs_gc(f.s, true, &deleted));
    ck_assert_uint_eq(deleted, 1);
    OK(refit_catalogs_gc(f.s, false, &deleted));
    ck_assert_uint_eq(deleted, 1);
    OK(refit_store_list(f.s, "catalogs/", &keys, &n));
    ck_assert_uint_eq(n, 1);
    free(keys);
    free(enc);
    refit_catalog_destroy(c);
    fx_close(&f);
}
END_TEST

int main(void)
{
    fx_setup("file");
    Suite *s = suite_create("catalog");
    TCase *tc = tcase_create("codec");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, catalog_roundtrip);
    tcase_add_test(tc, catalog_builder_rules);
    tcase_add_test(tc, catalog_decoder_refuses);
    tcase_add_test(tc, record_roundtrip_and_refusals);
    tcase_add_test(tc, ack_roundtrip);
    tcase_add_test(tc, keys_and_staleness);
    tcase_add_test(tc, store_rules);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_ENV);
    return failed ? 1 : 0;
}
