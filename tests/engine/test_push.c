/* test_push.c — push mode (refit.mode: push) with real processes, the file
 * store and the tcp transport:
 *   - push and pull receivers of the same version end byte-identical, and
 *     push with FP8 quantized by the trainer moves fewer bytes;
 *   - a receiver that registered but never advertises slots is named by the
 *     publisher at the timeout;
 *   - a publisher killed mid-push leaves the receiver with an error naming
 *     it, within the timeout, and its previous weights;
 *   - a malformed work list or advert in the store is rejected with an
 *     error naming the key, never followed, and so is a well-formed one
 *     whose offsets or lengths wrap (issue 22.1);
 *   - completion notifications are taken only from the source's own
 *     transport: a stranger's forged "ok" cannot finish a pull, its forged
 *     "err" or a 600-byte note cannot fail one (issue 22.6);
 *   - after the receiver's connections are reset the publisher connects
 *     again: one version may fail, the next arrives (issue 22.3);
 *   - a publisher serving one receiver at a time (refit.push_streams 1) and
 *     four at once (4) leaves four receivers of two layouts, pulling from
 *     threads, byte-identical, for two versions. */
#include <msgpack.h>
#include <pthread.h>
#include <xxhash.h>

#include "harness.h"
#include "refit/transport_core.h"
#include "../check_run.h"

static char dir[256], ckpt[300], cfg_path[300];

static void setup(void)
{
    th_workdir(REFIT_BIN, "push", 2, 1024, dir, sizeof(dir), ckpt, sizeof(ckpt));
    snprintf(cfg_path, sizeof(cfg_path), "%s/cluster.yaml", dir);
    FILE *f = fopen(cfg_path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "store:\n  plugin: file\n  namespace: p%d\n  file:\n    path: %s/store\n    fsync: false\n"
            "transport:\n  plugin: tcp\n  timeout: 5s\n"
            "refit:\n  timeout: 8s\n  release_timeout: 20s\n  stale_after: 1s\n  heartbeat: 150ms\n"
            "  receivers: 1\n"
            "model:\n  plugin: auto\n  hf_config: %s/config.json\n  target: vllm\n  fp8:\n    enabled: true\n",
            (int)getpid(), dir, ckpt);
    fclose(f);
}

static void teardown(void)
{
    th_rmdir(dir);
}

/* A forked publisher on the C API: `cycles` versions, each after the
 * previous one is released, changing its tensors between them. */
static pid_t start_api_publisher(const char *const *ovr, size_t n_ovr, int cycles, int go_fd)
{
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p)
        return p;
    refit_context_t *ctx;
    refit_publisher_t *pub = NULL;
    struct refit_standin_shard sh;
    if (refit_context_create(cfg_path, ovr, n_ovr, &ctx) || th_publisher(ctx, ckpt, "trainer", &sh, &pub))
        _exit(2);
    for (int v = 1; v <= cycles; v++) {
        for (size_t i = 0; v > 1 && i < sh.n; i++)
            if (refit_standin_step(sh.t[i].data, sh.t[i].nbytes, sh.t[i].dtype, (uint64_t)v - 1, (uint64_t)v))
                _exit(4);
        if (refit_publisher_publish(pub, (uint64_t)v)) {
            fprintf(stderr, "publisher: %s\n", refit_error_message());
            _exit(5);
        }
        if (refit_publisher_wait_released(pub, (uint64_t)v, 30000))
            _exit(6);
        /* refit.receivers counts one; the test may have more readers. */
        char c;
        if (go_fd >= 0 && read(go_fd, &c, 1) != 1)
            _exit(7);
    }
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_context_destroy(ctx);
    _exit(0);
}

static refit_receiver_t *receiver(refit_context_t *ctx, const char *id)
{
    refit_receiver_t *r;
    struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
    ck_assert_msg(refit_receiver_create(ctx, &tg, id, &r) == 0, "%s", refit_error_message());
    ck_assert_int_eq(refit_receiver_allocate(r), 0);
    return r;
}

START_TEST(push_and_pull_agree)
{
    const char *push_ovr[] = {"refit.mode=push"};
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    pid_t pub = start_api_publisher(push_ovr, 1, 2, go[0]);
    refit_context_t *cpull, *cpush;
    ck_assert_msg(refit_context_create(cfg_path, NULL, 0, &cpull) == 0, "%s", refit_error_message());
    ck_assert_msg(refit_context_create(cfg_path, push_ovr, 1, &cpush) == 0, "%s", refit_error_message());
    refit_receiver_t *pl = receiver(cpull, "puller"), *ps = receiver(cpush, "pushed");
    for (uint64_t v = 1; v <= 2; v++) {
        /* The publisher waits for the push receiver's slots with v READY, so
         * the pull receiver takes v first. */
        struct refit_pull_stats a = {.size = sizeof(a)}, b = {.size = sizeof(b)};
        ck_assert_msg(refit_receiver_pull(pl, v, &a) == 0, "pull v%llu: %s", (unsigned long long)v,
                      refit_error_message());
        ck_assert_msg(refit_receiver_pull(ps, v, &b) == 0, "push v%llu: %s", (unsigned long long)v,
                      refit_error_message());
        ck_assert_uint_eq(b.version, v);
        size_t na, nb;
        char *x = th_snapshot(pl, &na), *y = th_snapshot(ps, &nb);
        ck_assert_uint_eq(na, nb);
        for (size_t i = 0; i < refit_receiver_count(pl); i++) {
            struct refit_tensor_info ti, tj;
            refit_receiver_tensor(pl, i, &ti);
            refit_receiver_tensor(ps, i, &tj);
            ck_assert_str_eq(ti.name, tj.name);
            ck_assert_msg(ti.nbytes == tj.nbytes && !memcmp(ti.ptr, tj.ptr, ti.nbytes),
                          "v%llu: '%s' differs between push and pull", (unsigned long long)v, ti.name);
        }
        ck_assert_msg(!memcmp(x, y, na), "v%llu differs", (unsigned long long)v);
        /* Trainer-side FP8: one byte per weight instead of two. */
        ck_assert_msg(b.bytes_wire < a.bytes_wire * 3 / 4, "push moved %llu bytes, pull %llu",
                      (unsigned long long)b.bytes_wire, (unsigned long long)a.bytes_wire);
        free(x);
        free(y);
        ck_assert_int_eq(write(go[1], "g", 1), 1);
    }
    ck_assert_msg(th_child_ok(pub), "the push publisher failed");
    refit_receiver_destroy(pl);
    refit_receiver_destroy(ps);
    refit_context_destroy(cpull);
    refit_context_destroy(cpush);
}
END_TEST

START_TEST(silent_receiver_is_named)
{
    const char *ovr[] = {"refit.mode=push", "refit.receivers=2", "refit.timeout=1500ms"};
    refit_context_t *ctx;
    ck_assert_msg(refit_context_create(cfg_path, ovr, 3, &ctx) == 0, "%s", refit_error_message());
    refit_receiver_t *sleepy = receiver(ctx, "sleepy"); /* registers, never pulls */
    pid_t eager = fork();
    ck_assert_int_ge(eager, 0);
    if (eager == 0) {
        refit_context_t *c;
        if (refit_context_create(cfg_path, ovr, 1, &c))
            _exit(2);
        refit_receiver_t *r;
        struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
        if (refit_receiver_create(c, &tg, "eager", &r) || refit_receiver_allocate(r))
            _exit(3);
        int rc = refit_receiver_pull(r, 1, NULL);
        if (rc)
            fprintf(stderr, "eager: %s\n", refit_error_message());
        refit_receiver_destroy(r);
        refit_context_destroy(c);
        _exit(rc ? 4 : 0);
    }
    struct refit_standin_shard sh;
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher(ctx, ckpt, "trainer", &sh, &pub) == 0, "%s", refit_error_message());
    int rc = refit_publisher_publish(pub, 1);
    ck_assert_int_eq(rc, REFIT_ETIMEDOUT);
    ck_assert_msg(strstr(refit_error_message(), "1 of 2 receivers advertised") &&
                      strstr(refit_error_message(), "not advertised: sleepy"),
                  "%s", refit_error_message());
    /* The one that advertised got its weights. */
    ck_assert_msg(th_child_ok(eager), "the eager receiver failed");
    struct refit_publisher_stats ps = {.size = sizeof(ps)};
    ck_assert_int_eq(refit_publisher_stats(pub, &ps), 0);
    ck_assert_uint_gt(ps.bytes_pushed, 0);
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_receiver_destroy(sleepy);
    refit_context_destroy(ctx);
}
END_TEST

START_TEST(publisher_killed_mid_push_keeps_previous_weights)
{
    const char *ovr[] = {"refit.mode=push"};
    pid_t pub = start_api_publisher(ovr, 1, 2, -1);
    refit_context_t *ctx;
    ck_assert_msg(refit_context_create(cfg_path, ovr, 1, &ctx) == 0, "%s", refit_error_message());
    refit_receiver_t *r = receiver(ctx, "r0");
    ck_assert_msg(refit_receiver_pull(r, 1, NULL) == 0, "%s", refit_error_message());
    size_t n;
    char *v1 = th_snapshot(r, &n);
    /* v2 is READY and its publisher waits for our slots: freeze it, so it
     * never writes, and kill it while we wait. */
    th_wait_ready(ctx, "trainer", 2);
    pid_t killer = th_freeze_then_kill(pub, 500000);
    double t0 = th_now();
    int rc = refit_receiver_pull(r, 2, NULL);
    double took = th_now() - t0;
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(refit_error_message(), "source trainer"), "error does not name the source: %s",
                  refit_error_message());
    ck_assert_msg(took < 12.0, "the failure took %.1f s (refit timeout 8 s)", took);
    char *after = th_snapshot(r, &n);
    ck_assert_msg(!memcmp(v1, after, n), "the destinations changed after a failed push");
    waitpid(killer, NULL, 0);
    waitpid(pub, NULL, 0);
    free(v1);
    free(after);
    refit_receiver_destroy(r);
    refit_context_destroy(ctx);
}
END_TEST

/* An advert in the store's format (docs/protocol.md: a msgpack map),
 * pointing at `work`. */
static void *forge_advert(const struct refit_hash128 *work, uint64_t v, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 9);
    const char *strs[][2] = {{"receiver", "forger"}, {"transport", "tcp"}};
    const char *bins[][2] = {{"address", "nowhere"}, {"staging", ""}, {"scratch", ""}, {"mailbox", ""}};
    msgpack_pack_str_with_body(&pk, "schema", 6);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_str_with_body(&pk, "version", 7);
    msgpack_pack_uint64(&pk, v);
    for (int i = 0; i < 2; i++) {
        msgpack_pack_str_with_body(&pk, strs[i][0], strlen(strs[i][0]));
        msgpack_pack_str_with_body(&pk, strs[i][1], strlen(strs[i][1]));
    }
    for (int i = 0; i < 4; i++) {
        msgpack_pack_str_with_body(&pk, bins[i][0], strlen(bins[i][0]));
        msgpack_pack_bin_with_body(&pk, bins[i][1], strlen(bins[i][1]));
    }
    msgpack_pack_str_with_body(&pk, "work", 4);
    msgpack_pack_bin_with_body(&pk, work->b, 16);
    *len = sb.size;
    return msgpack_sbuffer_release(&sb);
}

START_TEST(malformed_work_is_rejected)
{
    const char *ovr[] = {"refit.mode=push", "refit.timeout=2s"};
    refit_context_t *ctx;
    ck_assert_msg(refit_context_create(cfg_path, ovr, 2, &ctx) == 0, "%s", refit_error_message());
    refit_store_t *st;
    refit_loader_t *ld;
    ck_assert_int_eq(refit_loader_create((refit_config_t *)refit_context_config(ctx), &ld), 0);
    ck_assert_int_eq(refit_store_open((refit_config_t *)refit_context_config(ctx), ld, NULL, &st), 0);
    /* A work list whose body lies: a sections array far longer than the
     * bytes that follow. */
    unsigned char work[64];
    size_t wl = 0;
    {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 5);
        msgpack_pack_str_with_body(&pk, "schema", 6);
        msgpack_pack_uint64(&pk, 1);
        msgpack_pack_str_with_body(&pk, "rule", 4);
        msgpack_pack_uint64(&pk, 0);
        msgpack_pack_str_with_body(&pk, "floor", 5);
        msgpack_pack_double(&pk, 0.0);
        msgpack_pack_str_with_body(&pk, "mail_len", 8);
        msgpack_pack_uint64(&pk, 0);
        msgpack_pack_str_with_body(&pk, "sections", 8);
        msgpack_pack_array(&pk, 0xffffffffu);
        ck_assert_uint_le(sb.size, sizeof(work));
        memcpy(work, sb.data, sb.size);
        wl = sb.size;
        msgpack_sbuffer_destroy(&sb);
    }
    struct refit_hash128 wh;
    refit_hash128_of(work, wl, &wh);
    char key[200], hex[33];
    refit_hash128_hex(&wh, hex);
    snprintf(key, sizeof(key), "push/work/%s", hex);
    ck_assert_int_eq(refit_store_put(st, key, work, wl), 0);
    size_t alen;
    void *adv = forge_advert(&wh, 1, &alen);
    ck_assert_int_eq(refit_store_put(st, "push/slots/forger", adv, alen), 0);
    /* And an advert that is not one at all: ignored with a warning. */
    ck_assert_int_eq(refit_store_put(st, "push/slots/junk", "junk", 4), 0);

    struct refit_standin_shard sh;
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher(ctx, ckpt, "trainer", &sh, &pub) == 0, "%s", refit_error_message());
    int rc = refit_publisher_publish(pub, 1);
    ck_assert_int_eq(rc, REFIT_EPROTO);
    ck_assert_msg(strstr(refit_error_message(), "malformed push work list") && strstr(refit_error_message(), key) &&
                      strstr(refit_error_message(), "receiver forger"),
                  "%s", refit_error_message());
    /* The work's hash must match its content. */
    work[20] ^= 1;
    ck_assert_int_eq(refit_store_put(st, key, work, wl), 0);
    free(adv);
    adv = forge_advert(&wh, 2, &alen);
    ck_assert_int_eq(refit_store_put(st, "push/slots/forger", adv, alen), 0);
    rc = refit_publisher_publish(pub, 2);
    ck_assert_int_eq(rc, REFIT_EPROTO);
    ck_assert_msg(strstr(refit_error_message(), "does not match its hash"), "%s", refit_error_message());
    free(adv);
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_store_close(st);
    refit_loader_destroy(ld);
    refit_context_destroy(ctx);
}
END_TEST

/* A work list of one section for source `src`: one BF16 unit of 2 x 8
 * elements made of one piece, whose fields are given (docs/protocol.md). */
static void *forge_work(const char *src, const uint64_t piece[10], size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    msgpack_pack_str_with_body(&pk, "schema", 6);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_str_with_body(&pk, "rule", 4);
    msgpack_pack_uint64(&pk, 0);
    msgpack_pack_str_with_body(&pk, "floor", 5);
    msgpack_pack_double(&pk, 0.0);
    msgpack_pack_str_with_body(&pk, "mail_len", 8);
    msgpack_pack_uint64(&pk, 64);
    msgpack_pack_str_with_body(&pk, "sections", 8);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_str_with_body(&pk, src, strlen(src));
    msgpack_pack_uint64(&pk, 0); /* mailbox offset */
    msgpack_pack_array(&pk, 0);  /* no raw descriptors */
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 7);
    msgpack_pack_uint64(&pk, 0);
    msgpack_pack_str_with_body(&pk, "BF16", 4);
    uint64_t u[4] = {2, 8, 0, 4096};
    for (int i = 0; i < 4; i++)
        msgpack_pack_uint64(&pk, u[i]);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 10);
    for (int i = 0; i < 10; i++)
        msgpack_pack_uint64(&pk, piece[i]);
    *len = sb.size;
    return msgpack_sbuffer_release(&sb);
}

/* Issue 22.1: a piece whose sums wrap once drove the publisher out of its
 * buffers (a heap write at dst_row = 2^64-1, a read at tensor_off =
 * 2^64-4096).  Both are refused before a byte is copied, naming the key. */
START_TEST(hostile_work_is_refused)
{
    const char *ovr[] = {"refit.mode=push", "refit.timeout=2s"};
    refit_context_t *ctx;
    ck_assert_msg(refit_context_create(cfg_path, ovr, 2, &ctx) == 0, "%s", refit_error_message());
    refit_store_t *st;
    refit_loader_t *ld;
    ck_assert_int_eq(refit_loader_create((refit_config_t *)refit_context_config(ctx), &ld), 0);
    ck_assert_int_eq(refit_store_open((refit_config_t *)refit_context_config(ctx), ld, NULL, &st), 0);
    struct refit_standin_shard sh;
    refit_publisher_t *pub = NULL;
    ck_assert_msg(th_publisher(ctx, ckpt, "trainer", &sh, &pub) == 0, "%s", refit_error_message());
    /* region, esize, tensor_off, src_cols, src_row, src_col, rows, cols, dst_row, dst_col */
    const uint64_t wraps_dst[10] = {0, 2, 0, 8, 0, 0, 2, 8, UINT64_MAX, 0};
    const uint64_t wild_src[10] = {0, 2, UINT64_MAX - 4095, 8, 0, 0, 2, 8, 0, 0};
    const uint64_t *pieces[2] = {wraps_dst, wild_src};
    const int want[2] = {REFIT_EPROTO, REFIT_ERANGE};
    for (uint64_t v = 1; v <= 2; v++) {
        size_t wl, alen;
        void *work = forge_work("trainer", pieces[v - 1], &wl);
        struct refit_hash128 wh;
        refit_hash128_of(work, wl, &wh);
        char key[200], hex[33];
        refit_hash128_hex(&wh, hex);
        snprintf(key, sizeof(key), "push/work/%s", hex);
        ck_assert_int_eq(refit_store_put(st, key, work, wl), 0);
        void *adv = forge_advert(&wh, v, &alen);
        ck_assert_int_eq(refit_store_put(st, "push/slots/forger", adv, alen), 0);
        int rc = refit_publisher_publish(pub, v);
        ck_assert_msg(rc == want[v - 1], "v%llu: %d: %s", (unsigned long long)v, rc, refit_error_message());
        ck_assert_msg(strstr(refit_error_message(), key) && strstr(refit_error_message(), "receiver forger"), "%s",
                      refit_error_message());
        free(work);
        free(adv);
    }
    refit_publisher_destroy(pub);
    refit_standin_shard_free(&sh);
    refit_store_close(st);
    refit_loader_destroy(ld);
    refit_context_destroy(ctx);
}
END_TEST

/* The address in a receiver's advert (push/slots/<id>), read with msgpack
 * as docs/protocol.md describes it: a map with a bin "address". */
static void *advert_address(refit_store_t *st, const char *rid, size_t *alen)
{
    char key[200];
    snprintf(key, sizeof(key), "push/slots/%s", rid);
    void *val = NULL;
    size_t len = 0;
    ck_assert_msg(refit_store_get(st, key, &val, &len) == 0, "%s", refit_error_message());
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    ck_assert_int_eq(msgpack_unpack_next(&u, val, len, NULL), MSGPACK_UNPACK_SUCCESS);
    ck_assert_int_eq(u.data.type, MSGPACK_OBJECT_MAP);
    void *addr = NULL;
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        const msgpack_object_kv *kv = &u.data.via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 7 &&
            !memcmp(kv->key.via.str.ptr, "address", 7) && kv->val.type == MSGPACK_OBJECT_BIN) {
            *alen = kv->val.via.bin.size;
            addr = malloc(*alen);
            memcpy(addr, kv->val.via.bin.ptr, *alen);
        }
    }
    ck_assert_ptr_nonnull(addr);
    msgpack_unpacked_destroy(&u);
    free(val);
    return addr;
}

/* Issue 22.6: any peer could send "RFPUSH <V> <source> ok|err" (and a note
 * longer than 512 bytes failed the pull with ETOOBIG).  A stranger — a
 * process of this job (same local secret) whose transport is not the
 * source's — queues its notes before each version is pushed; the receiver
 * ignores them, counts them, and ends with exactly what a pull gets. */
START_TEST(forged_notes_are_ignored)
{
    const char *push_ovr[] = {"refit.mode=push"};
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    pid_t pub = start_api_publisher(push_ovr, 1, 4, go[0]);
    refit_context_t *cpull, *cpush;
    ck_assert_msg(refit_context_create(cfg_path, NULL, 0, &cpull) == 0, "%s", refit_error_message());
    ck_assert_msg(refit_context_create(cfg_path, push_ovr, 1, &cpush) == 0, "%s", refit_error_message());
    refit_receiver_t *pl = receiver(cpull, "puller"), *ps = receiver(cpush, "pushed");
    refit_store_t *st;
    refit_loader_t *ld;
    refit_config_t *cfg = (refit_config_t *)refit_context_config(cpush);
    ck_assert_int_eq(refit_loader_create(cfg, &ld), 0);
    ck_assert_int_eq(refit_store_open(cfg, ld, NULL, &st), 0);
    refit_transport_t *tp = NULL;
    refit_tp_peer_t *peer = NULL;
    char big[600];
    int n = snprintf(big, sizeof(big), "RFPUSH 4 trainer err ");
    memset(big + n, 'x', sizeof(big) - (size_t)n);
    /* v2: a forged "ok" (would end the wait before any byte landed); v3: a
     * forged "err" and one naming a source that is not in the list; v4: a
     * 600-byte note. */
    const char *forged[4][2] = {{NULL, NULL}, {"RFPUSH 2 trainer ok", NULL},
                                {"RFPUSH 3 trainer err forged failure", "RFPUSH 3 nobody ok"}, {big, NULL}};
    const unsigned want_ignored[4] = {0, 1, 2, 1};
    for (uint64_t v = 1; v <= 4; v++) {
        for (int k = 0; k < 2 && forged[v - 1][k]; k++) {
            size_t len = forged[v - 1][k] == big ? sizeof(big) : strlen(forged[v - 1][k]);
            ck_assert_msg(refit_transport_notify(tp, peer, forged[v - 1][k], len) == 0, "%s", refit_error_message());
        }
        if (v > 1)
            ck_assert_int_eq(write(go[1], "g", 1), 1);
        struct refit_pull_stats a = {.size = sizeof(a)}, b = {.size = sizeof(b)};
        ck_assert_msg(refit_receiver_pull(pl, v, &a) == 0, "pull v%llu: %s", (unsigned long long)v,
                      refit_error_message());
        ck_assert_msg(refit_receiver_pull(ps, v, &b) == 0, "push v%llu: %s", (unsigned long long)v,
                      refit_error_message());
        ck_assert_uint_eq(b.version, v);
        ck_assert_msg(b.notes_ignored == want_ignored[v - 1], "v%llu: %u notes ignored, %u sent by the stranger",
                      (unsigned long long)v, b.notes_ignored, want_ignored[v - 1]);
        size_t na, nb;
        char *x = th_snapshot(pl, &na), *y = th_snapshot(ps, &nb);
        ck_assert_uint_eq(na, nb);
        ck_assert_msg(!memcmp(x, y, na), "v%llu: push and pull differ", (unsigned long long)v);
        free(x);
        free(y);
        if (v == 1) {
            /* The stranger: this job's secret, its own name. */
            struct refit_transport_open o = {.size = sizeof(o), .name = "stranger", .cuda_device = -1};
            ck_assert_msg(refit_transport_init(ld, cfg, &o, &tp) == 0, "%s", refit_error_message());
            size_t alen;
            void *addr = advert_address(st, "pushed", &alen);
            ck_assert_msg(refit_transport_connect(tp, addr, alen, "pushed", &peer) == 0, "%s", refit_error_message());
            free(addr);
        }
    }
    ck_assert_int_eq(write(go[1], "g", 1), 1);
    ck_assert_msg(th_child_ok(pub), "the push publisher failed");
    refit_transport_disconnect(tp, peer);
    refit_transport_fini(tp);
    refit_store_close(st);
    refit_loader_destroy(ld);
    refit_receiver_destroy(pl);
    refit_receiver_destroy(ps);
    refit_context_destroy(cpull);
    refit_context_destroy(cpush);
}
END_TEST

/* Issue 22.3 in push mode: a publisher kept the connection a reset broke
 * and failed every later push to that receiver with the old error. */
START_TEST(push_reconnects_after_a_reset)
{
    const char *ovr[] = {"refit.mode=push", "refit.timeout=3s"};
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    pid_t pub = fork();
    ck_assert_int_ge(pub, 0);
    if (pub == 0) {
        close(go[1]);
        refit_context_t *ctx;
        refit_publisher_t *p = NULL;
        struct refit_standin_shard sh;
        if (refit_context_create(cfg_path, ovr, 2, &ctx) || th_publisher(ctx, ckpt, "trainer", &sh, &p))
            _exit(2);
        char c;
        for (uint64_t v = 1; read(go[0], &c, 1) == 1; v++) {
            for (size_t i = 0; v > 1 && i < sh.n; i++)
                if (refit_standin_step(sh.t[i].data, sh.t[i].nbytes, sh.t[i].dtype, v - 1, v))
                    _exit(4);
            if (refit_publisher_publish(p, v))
                fprintf(stderr, "publisher: v%llu: %s\n", (unsigned long long)v, refit_error_message());
        }
        refit_publisher_destroy(p);
        refit_standin_shard_free(&sh);
        refit_context_destroy(ctx);
        _exit(0);
    }
    close(go[0]);
    refit_context_t *ctx;
    ck_assert_msg(refit_context_create(cfg_path, ovr, 2, &ctx) == 0, "%s", refit_error_message());
    refit_receiver_t *r = receiver(ctx, "r0");
    ck_assert_int_eq(write(go[1], "g", 1), 1);
    ck_assert_msg(refit_receiver_pull(r, 1, NULL) == 0, "v1: %s", refit_error_message());
    /* The publisher's connections into us, reset while idle. */
    ck_assert_int_gt(th_reset_tcp(), 0);
    ck_assert_int_eq(write(go[1], "g", 1), 1);
    int rc2 = refit_receiver_pull(r, 2, NULL);
    ck_assert_int_eq(write(go[1], "g", 1), 1);
    ck_assert_msg(refit_receiver_pull(r, 3, NULL) == 0, "v3 after a reset (v2: %d): %s", rc2,
                  refit_error_message());
    close(go[1]);
    ck_assert_msg(th_child_ok(pub), "the push publisher failed");
    refit_receiver_destroy(r);
    refit_context_destroy(ctx);
}
END_TEST

/* push_streams: four receivers (two of tp1, the two ranks of tp2) pulling
 * v1 and v2 at once from threads, their snapshots kept. */
#define NSTREAM_RCV 4
struct stream_rcv {
    const char *ns;
    int idx;
    char *snap[2];
    size_t len[2];
    int rc;
    char err[512];
};

static void *stream_pull(void *arg)
{
    struct stream_rcv *sr = arg;
    char ovr_ns[64], id[32];
    snprintf(ovr_ns, sizeof(ovr_ns), "store.namespace=%s", sr->ns);
    snprintf(id, sizeof(id), "rcv%d", sr->idx);
    const char *ovr[] = {"refit.mode=push", ovr_ns};
    refit_context_t *ctx = NULL;
    refit_receiver_t *r = NULL;
    struct refit_target tg = {.tp_rank = sr->idx < 2 ? 0 : sr->idx - 2, .tp_size = sr->idx < 2 ? 1 : 2};
    sr->rc = refit_context_create(cfg_path, ovr, 2, &ctx);
    if (!sr->rc)
        sr->rc = refit_receiver_create(ctx, &tg, id, &r);
    if (!sr->rc)
        sr->rc = refit_receiver_allocate(r);
    for (uint64_t v = 1; !sr->rc && v <= 2; v++)
        if (!(sr->rc = refit_receiver_pull(r, v, NULL)))
            sr->snap[v - 1] = th_snapshot(r, &sr->len[v - 1]);
    if (sr->rc)
        snprintf(sr->err, sizeof(sr->err), "%s", refit_error_message());
    refit_receiver_destroy(r);
    refit_context_destroy(ctx);
    return NULL;
}

/* One publisher with refit.push_streams k and four receivers at once. */
static void run_streams(int k, struct stream_rcv *sr)
{
    char ns[32], ovr_ns[64], ovr_k[48];
    snprintf(ns, sizeof(ns), "ps%d_%d", k, (int)getpid());
    snprintf(ovr_ns, sizeof(ovr_ns), "store.namespace=%s", ns);
    snprintf(ovr_k, sizeof(ovr_k), "refit.push_streams=%d", k);
    const char *ovr[] = {"refit.mode=push", "refit.receivers=4", ovr_ns, ovr_k};
    pid_t pub = start_api_publisher(ovr, 4, 2, -1);
    pthread_t t[NSTREAM_RCV];
    for (int i = 0; i < NSTREAM_RCV; i++) {
        sr[i] = (struct stream_rcv){.ns = ns, .idx = i};
        ck_assert_int_eq(pthread_create(&t[i], NULL, stream_pull, &sr[i]), 0);
    }
    for (int i = 0; i < NSTREAM_RCV; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < NSTREAM_RCV; i++)
        ck_assert_msg(sr[i].rc == 0, "push_streams %d, receiver %d: %s", k, i, sr[i].err);
    ck_assert_msg(th_child_ok(pub), "the push publisher (push_streams %d) failed", k);
}

START_TEST(push_streams_agree)
{
    struct stream_rcv one[NSTREAM_RCV], four[NSTREAM_RCV];
    run_streams(1, one);
    run_streams(4, four);
    for (int v = 0; v < 2; v++) {
        for (int i = 0; i < NSTREAM_RCV; i++) {
            ck_assert_uint_eq(one[i].len[v], four[i].len[v]);
            ck_assert_msg(!memcmp(one[i].snap[v], four[i].snap[v], one[i].len[v]),
                          "v%d: receiver %d differs between push_streams 1 and 4", v + 1, i);
        }
        /* The two tp1 receivers hold the same bytes; the versions differ. */
        ck_assert_uint_eq(four[0].len[v], four[1].len[v]);
        ck_assert(!memcmp(four[0].snap[v], four[1].snap[v], four[0].len[v]));
    }
    ck_assert_msg(memcmp(four[0].snap[0], four[0].snap[1], four[0].len[0]), "v1 and v2 are equal: a vacuous test");
    for (int i = 0; i < NSTREAM_RCV; i++)
        for (int v = 0; v < 2; v++) {
            free(one[i].snap[v]);
            free(four[i].snap[v]);
        }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("push");
    TCase *tc = tcase_create("push");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, push_and_pull_agree);
    tcase_add_test(tc, silent_receiver_is_named);
    tcase_add_test(tc, publisher_killed_mid_push_keeps_previous_weights);
    tcase_add_test(tc, malformed_work_is_rejected);
    tcase_add_test(tc, hostile_work_is_refused);
    tcase_add_test(tc, forged_notes_are_ignored);
    tcase_add_test(tc, push_reconnects_after_a_reset);
    tcase_add_test(tc, push_streams_agree);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
