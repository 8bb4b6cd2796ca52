/* bench_store.c — `refit bench store`: a Qwen3-30B-A3B-shaped catalog
 * (20,000 tensors by default) encoded, decoded, published and read back
 * through each store, beside msgpack_unpack on the same bytes and
 * redis-benchmark GET/SET of the same value sizes against the redis-server
 * this benchmark starts, with ratios.  Only measured figures are printed. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/catalog.h"
#include "refit/status.h"
#include "refit/store_core.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* ------------------------------------------------------------------ */
/* The catalog: HF names of Qwen3-30B-A3B (48 layers, 128 experts, 393
 * tensors a layer, 18,867 in all) as TP rank 0 of 2 holds them; layers go
 * on past 48 until `want` tensors exist. */

struct gen {
    refit_catalog_t *c;
    uint32_t region;
    uint64_t off;
    size_t want;
    int err;
};

static void add(struct gen *g, const char *name, int role, uint32_t ndim, const uint64_t *global, int64_t expert)
{
    if (g->err || g->c->n_tensors >= g->want)
        return;
    struct refit_cat_tensor t = {.name = name, .dtype = REFIT_DTYPE_BF16, .role = (uint32_t)role, .ndim = ndim,
                                 .expert = expert, .shard_axis = -1};
    uint64_t elems = 1;
    for (uint32_t i = 0; i < ndim; i++)
        t.shape[i] = t.global_shape[i] = global[i];
    if (role != REFIT_CAT_ROLE_REPLICATED) {
        int axis = (role == REFIT_CAT_ROLE_ROW || role == REFIT_CAT_ROLE_EXPERT_ROW) ? 1 : 0;
        t.shard_axis = axis;
        /* Experts are whole (etp 1); the rest is split over tp 2. */
        if (role != REFIT_CAT_ROLE_EXPERT_COLUMN && role != REFIT_CAT_ROLE_EXPERT_ROW)
            t.shape[axis] = global[axis] / 2;
        t.shard_start = 0;
        t.shard_len = t.shape[axis];
    }
    for (uint32_t i = 0; i < ndim; i++)
        elems *= t.shape[i];
    t.nbytes = elems * 2;
    t.region = g->region;
    t.offset = g->off;
    g->off += (t.nbytes + 255) & ~255ull;
    t.checksum = rnd();
    if (refit_catalog_add(g->c, &t))
        g->err = 1;
}

/* Regions are per layer, sized once the layer is laid out. */
static void close_region(struct gen *g)
{
    g->c->region_len[g->region] = g->off;
}

static int build_catalog(size_t want, refit_catalog_t **out)
{
    struct gen g = {.want = want};
    int rc = refit_catalog_create(&g.c);
    if (rc)
        return rc;
    const uint64_t H = 2048, Q = 4096, KV = 512, D = 128, I = 768, E = 128, V = 151936;
    char name[160];
    refit_catalog_add_region(g.c, UINT64_MAX, &g.region);
    add(&g, "model.embed_tokens.weight", REFIT_CAT_ROLE_VOCAB, 2, (uint64_t[]){V, H}, -1);
    add(&g, "lm_head.weight", REFIT_CAT_ROLE_COLUMN, 2, (uint64_t[]){V, H}, -1);
    add(&g, "model.norm.weight", REFIT_CAT_ROLE_REPLICATED, 1, (uint64_t[]){H}, -1);
    close_region(&g);
    for (int L = 0; !g.err && g.c->n_tensors < want; L++) {
        refit_catalog_add_region(g.c, UINT64_MAX, &g.region);
        g.off = 0;
#define N(fmt, ...) (snprintf(name, sizeof(name), "model.layers.%d." fmt, L, ##__VA_ARGS__), name)
        add(&g, N("input_layernorm.weight"), REFIT_CAT_ROLE_REPLICATED, 1, (uint64_t[]){H}, -1);
        add(&g, N("self_attn.q_proj.weight"), REFIT_CAT_ROLE_COLUMN, 2, (uint64_t[]){Q, H}, -1);
        add(&g, N("self_attn.k_proj.weight"), REFIT_CAT_ROLE_COLUMN, 2, (uint64_t[]){KV, H}, -1);
        add(&g, N("self_attn.v_proj.weight"), REFIT_CAT_ROLE_COLUMN, 2, (uint64_t[]){KV, H}, -1);
        add(&g, N("self_attn.o_proj.weight"), REFIT_CAT_ROLE_ROW, 2, (uint64_t[]){H, Q}, -1);
        add(&g, N("self_attn.q_norm.weight"), REFIT_CAT_ROLE_REPLICATED, 1, (uint64_t[]){D}, -1);
        add(&g, N("self_attn.k_norm.weight"), REFIT_CAT_ROLE_REPLICATED, 1, (uint64_t[]){D}, -1);
        add(&g, N("post_attention_layernorm.weight"), REFIT_CAT_ROLE_REPLICATED, 1, (uint64_t[]){H}, -1);
        add(&g, N("mlp.gate.weight"), REFIT_CAT_ROLE_REPLICATED, 2, (uint64_t[]){E, H}, -1);
        for (int64_t e = 0; e < (int64_t)E; e++) {
            add(&g, N("mlp.experts.%" PRId64 ".gate_proj.weight", e), REFIT_CAT_ROLE_EXPERT_COLUMN, 2,
                (uint64_t[]){I, H}, e);
            add(&g, N("mlp.experts.%" PRId64 ".up_proj.weight", e), REFIT_CAT_ROLE_EXPERT_COLUMN, 2,
                (uint64_t[]){I, H}, e);
            add(&g, N("mlp.experts.%" PRId64 ".down_proj.weight", e), REFIT_CAT_ROLE_EXPERT_ROW, 2,
                (uint64_t[]){H, I}, e);
        }
#undef N
        close_region(&g);
    }
    if (g.err) {
        refit_catalog_destroy(g.c);
        return refit_error_push(REFIT_EINVAL, "building the bench catalog");
    }
    *out = g.c;
    return 0;
}

/* ------------------------------------------------------------------ */
/* A private redis-server and redis-benchmark */

static int redis_ping(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = 0;
    if (fd >= 0 && !connect(fd, (struct sockaddr *)&a, sizeof(a)) && write(fd, "PING\r\n", 6) == 6) {
        char b[16] = {0};
        ok = read(fd, b, sizeof(b) - 1) > 0 && !strncmp(b, "+PONG", 5);
    }
    if (fd >= 0)
        close(fd);
    return ok;
}

static pid_t redis_start(const char *dir, int port)
{
    char ports[16];
    snprintf(ports, sizeof(ports), "%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        int dn = open("/dev/null", O_RDWR);
        if (dn >= 0) {
            dup2(dn, 0);
            dup2(dn, 1);
            dup2(dn, 2);
        }
        execlp("redis-server", "redis-server", "--port", ports, "--bind", "127.0.0.1", "--save", "", "--appendonly",
               "no", "--dir", dir, "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; pid > 0 && i < 500; i++) {
        if (redis_ping(port))
            return pid;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return -1;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return -1;
}

/* redis-benchmark's mean latency (ms) of SET and GET with one client and
 * values of `size` bytes; < 0 when it could not run. */
static int redis_benchmark(int port, size_t size, int n, double *set_ms, double *get_ms)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "redis-benchmark -h 127.0.0.1 -p %d -t set,get -n %d -d %zu -c 1 --csv 2>/dev/null",
             port, n, size);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char line[512];
    *set_ms = *get_ms = -1;
    while (fgets(line, sizeof(line), p)) {
        /* "SET","rps","avg_latency_ms",... */
        double rps = 0, avg = 0;
        char test[16];
        if (sscanf(line, "\"%15[A-Z]\",\"%lf\",\"%lf\"", test, &rps, &avg) == 3) {
            if (!strcmp(test, "SET"))
                *set_ms = avg > 0 ? avg : 1e3 / rps;
            else if (!strcmp(test, "GET"))
                *get_ms = avg > 0 ? avg : 1e3 / rps;
        }
    }
    int st = pclose(p);
    return (*set_ms > 0 && *get_ms > 0 && st == 0) ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* Measurements */

struct opts {
    uint64_t tensors;
    int iters;
    int no_redis;
    int keep;
    const char *dir;
};

static int open_store(const char *plugin, const char *dir, int port, refit_config_t **cfg, refit_loader_t **l,
                      refit_store_t **s)
{
    char buf[700];
    int rc = refit_config_create(cfg);
    snprintf(buf, sizeof(buf), "store.plugin=%s", plugin);
    if (!rc)
        rc = refit_config_set(*cfg, buf, "bench");
    if (!rc && !strcmp(plugin, "file")) {
        snprintf(buf, sizeof(buf), "store.file.path=%s", dir);
        rc = refit_config_set(*cfg, buf, "bench");
    }
    if (!rc && !strcmp(plugin, "redis")) {
        snprintf(buf, sizeof(buf), "store.redis.port=%d", port);
        rc = refit_config_set(*cfg, buf, "bench");
    }
    if (!rc)
        rc = refit_loader_create(*cfg, l);
    if (!rc)
        rc = refit_store_open(*cfg, *l, "bench", s);
    return rc;
}

struct rt {
    double put_cat, get_cat, fetch_cat, put_rec, get_rec, pub_ms, recv_ms;
    uint64_t pub_rt, recv_rt;
};

static int measure_store(refit_store_t *s, const void *enc, size_t len, const struct refit_source_record *rec0,
                         int iters, struct rt *o)
{
    struct refit_hash128 h;
    refit_hash128_of(enc, len, &h);
    char ckey[REFIT_STORE_MAX_KEY + 1];
    refit_key_catalog(ckey, &h);
    int rc = 0;
    double t = now_s();
    for (int i = 0; !rc && i < iters; i++)
        rc = refit_store_put(s, ckey, enc, len);
    o->put_cat = (now_s() - t) * 1e3 / iters;
    t = now_s();
    for (int i = 0; !rc && i < iters; i++) {
        void *v;
        size_t l;
        rc = refit_store_get(s, ckey, &v, &l);
        if (!rc)
            free(v);
    }
    o->get_cat = (now_s() - t) * 1e3 / iters;
    t = now_s();
    for (int i = 0; !rc && i < iters; i++) {
        refit_catalog_t *c;
        rc = refit_catalog_fetch(s, &h, &c);
        if (!rc)
            refit_catalog_destroy(c);
    }
    o->fetch_cat = (now_s() - t) * 1e3 / iters;
    /* Records: small values, many repetitions. */
    struct refit_source_record rec = *rec0;
    rec.catalog = h;
    void *renc;
    size_t rlen;
    if (!rc)
        rc = refit_record_encode(&rec, &renc, &rlen);
    if (rc)
        return rc;
    int small = iters * 20;
    t = now_s();
    for (int i = 0; !rc && i < small; i++)
        rc = refit_store_put(s, "sources/bench-tp0", renc, rlen);
    o->put_rec = (now_s() - t) * 1e3 / small;
    t = now_s();
    for (int i = 0; !rc && i < small; i++) {
        void *v;
        size_t l;
        rc = refit_store_get(s, "sources/bench-tp0", &v, &l);
        if (!rc)
            free(v);
    }
    o->get_rec = (now_s() - t) * 1e3 / small;
    free(renc);
    /* Warm cycles: the catalog is unchanged, so the publisher writes its
     * record (one pipelined write) and the receiver reads record and
     * heartbeat (one pipelined read), compares the catalog hash with the
     * one it holds, and acks. */
    if (!rc)
        rc = refit_heartbeat_put(s, rec.source_id, 1, 30000);
    uint64_t pub_rt = 0, recv_rt = 0;
    double pub = 0, recv = 0;
    for (int v = 1; !rc && v <= small; v++) {
        rec.version = (uint64_t)v;
        rec.heartbeat_ms = refit_time_ms();
        uint64_t r0 = refit_store_round_trips(s);
        t = now_s();
        rc = refit_record_publish(s, &rec);
        pub += now_s() - t;
        uint64_t r1 = refit_store_round_trips(s);
        struct refit_source_record *got = NULL;
        bool stale = false;
        t = now_s();
        if (!rc)
            rc = refit_source_check(s, rec.source_id, 30000, &got, &stale);
        if (!rc && memcmp(got->catalog.b, h.b, 16))
            rc = refit_error_set(REFIT_ESTALE, "catalog hash changed");
        if (!rc)
            rc = refit_ack_put(s, (uint64_t)v, "bench-rx0");
        recv += now_s() - t;
        free(got);
        pub_rt += r1 - r0;
        recv_rt += refit_store_round_trips(s) - r1;
        if (!rc && v % 8 == 0)
            rc = refit_versions_retain(s, (uint64_t)v, 2, NULL);
    }
    o->pub_ms = pub * 1e3 / small;
    o->recv_ms = recv * 1e3 / small;
    o->pub_rt = pub_rt / (uint64_t)small;
    o->recv_rt = recv_rt / (uint64_t)small;
    return rc;
}

#define AT(f) CLI_AT(struct opts, f)
static const struct cli_opt store_table[] = {
    {"--tensors", NULL, CLI_U64, "N", 1, 100000000, NULL, "20000", AT(tensors),
     "catalog size (Qwen3-30B-A3B has 18,867)"},
    {"--iters", NULL, CLI_INT, "N", 1, 1000000, NULL, "20", AT(iters),
     "repetitions of each catalog-sized operation"},
    {"--no-redis", NULL, CLI_FLAG, NULL, 0, 0, NULL, NULL, AT(no_redis), "skip the redis store and redis-benchmark"},
    {"--dir", NULL, CLI_STR, "DIR", 0, 0, NULL, NULL, AT(dir), "file store directory (default a temporary one)"},
    {"--keep", NULL, CLI_FLAG, NULL, 0, 0, NULL, NULL, AT(keep),
     "keep the file store and print how to `refit store show` the catalog"},
};
#undef AT

static const struct cli_spec store_spec = {
    .cmd = "bench store",
    .about = "Catalog encode/decode MB/s and store round trips, beside redis-benchmark GET/SET.\n",
    .opts = store_table,
    .n_opts = CLI_N(store_table),
};

int bench_store(int argc, char **argv)
{
    struct opts o = {0};
    int prc = cli_opts_parse(&store_spec, argc, argv, &o, NULL, NULL);
    if (prc == CLI_HELP)
        return 0;
    if (prc)
        return cli_fail("bench store", prc);
    char tmp[512];
    const char *td = getenv("TMPDIR");
    snprintf(tmp, sizeof(tmp), "%s/refit-bench-store-XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(tmp)) {
        fprintf(stderr, "refit bench store: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    const char *fdir = o.dir ? o.dir : tmp;

    refit_catalog_t *cat = NULL;
    int rc = build_catalog(o.tensors, &cat);
    if (rc)
        return cli_fail("bench store", rc);
    void *enc = NULL;
    size_t len = 0;
    /* Codec. */
    int reps = o.iters;
    double t = now_s();
    for (int i = 0; !rc && i < reps; i++) {
        free(enc);
        rc = refit_catalog_encode(cat, &enc, &len);
    }
    double enc_s = (now_s() - t) / reps;
    t = now_s();
    for (int i = 0; !rc && i < reps; i++) {
        refit_catalog_t *d;
        rc = refit_catalog_decode(enc, len, "bench", &d);
        if (!rc)
            refit_catalog_destroy(d);
    }
    double dec_s = (now_s() - t) / reps;
    t = now_s();
    for (int i = 0; !rc && i < reps; i++) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        if (msgpack_unpack_next(&u, enc, len, &off) != MSGPACK_UNPACK_SUCCESS)
            rc = refit_error_set(REFIT_EPROTO, "msgpack_unpack_next failed on our own catalog");
        msgpack_unpacked_destroy(&u);
    }
    double unp_s = (now_s() - t) / reps;
    struct refit_hash128 h;
    t = now_s();
    for (int i = 0; i < reps; i++)
        refit_hash128_of(enc, len, &h);
    double hash_s = (now_s() - t) / reps;
    if (rc)
        return cli_fail("bench store", rc);
    double mb = (double)len / 1e6;
    printf("refit bench store: catalog of %zu tensors (Qwen3-30B-A3B-shaped, TP rank 0 of 2), %.2f MB encoded, "
           "%u regions\n\n",
           cat->n_tensors, mb, cat->n_regions);
    printf("%-40s %10s %10s\n", "codec (mean of runs)", "ms", "MB/s");
    printf("%-40s %10.2f %10.0f\n", "encode (msgpack-c packer)", enc_s * 1e3, mb / enc_s);
    printf("%-40s %10.2f %10.0f   target >= 200 MB/s: %s\n", "decode (validating, indexed)", dec_s * 1e3,
           mb / dec_s, mb / dec_s >= 200 ? "met" : "NOT met");
    printf("%-40s %10.2f %10.0f   baseline (no checks, object tree)\n", "msgpack_unpack_next, same bytes",
           unp_s * 1e3, mb / unp_s);
    printf("%-40s %10.2f %10.0f\n", "xxh3-128 content hash", hash_s * 1e3, mb / hash_s);
    printf("%-40s %10.2f\n\n", "ratio decode / msgpack_unpack (time)", dec_s / unp_s);

    static const uint8_t rk[64] = {1};
    struct refit_blob rkeys[1] = {{rk, sizeof(rk)}};
    struct refit_source_record rec = {1, "bench-tp0", "Qwen3-30B-A3B", {0, 2, 0, 1, 0, 1, 0, 1}, "tcp",
                                      {"tcp://127.0.0.1:40000", 21}, 1, rkeys, {{0}}, 1, REFIT_SOURCE_READY, 0, 1, NULL};
    void *renc;
    size_t rlen;
    if ((rc = refit_record_encode(&rec, &renc, &rlen)))
        return cli_fail("bench store", rc);
    free(renc);

    int port = -1;
    pid_t rpid = -1;
    if (!o.no_redis) {
        for (int i = 0; i < 5 && rpid < 0; i++) {
            port = cli_free_port();
            rpid = redis_start(tmp, port);
        }
        if (rpid < 0)
            fprintf(stderr, "refit bench store: redis-server did not start (installed?); redis rows skipped\n");
    }
    printf("store round trips (mean ms per operation; catalog ops x%d, record ops x%d)\n", o.iters, o.iters * 20);
    printf("%-6s %-34s %10s %10s %12s %8s\n", "store", "operation", "bytes", "refit ms", "redis-bench", "ratio");
    const char *plugins[2] = {"file", "redis"};
    int status = 0;
    for (int p = 0; p < 2; p++) {
        if (p == 1 && rpid < 0)
            continue;
        refit_config_t *cfg = NULL;
        refit_loader_t *l = NULL;
        refit_store_t *s = NULL;
        struct rt r;
        rc = open_store(plugins[p], fdir, port, &cfg, &l, &s);
        if (!rc)
            rc = measure_store(s, enc, len, &rec, o.iters, &r);
        if (rc) {
            fprintf(stderr, "refit bench store: %s: %s\n", plugins[p], refit_error_message());
            status = 1;
        } else {
            double bs = -1, bg = -1, rs = -1, rg = -1;
            if (p == 1) {
                redis_benchmark(port, len, o.iters * 2, &bs, &bg);
                redis_benchmark(port, rlen, o.iters * 200, &rs, &rg);
            }
            struct {
                const char *op;
                size_t bytes;
                double ms, base;
            } rows[] = {
                {"put catalog", len, r.put_cat, bs},
                {"get catalog", len, r.get_cat, bg},
                {"fetch catalog (get+hash+decode)", len, r.fetch_cat, -1},
                {"put record", rlen, r.put_rec, rs},
                {"get record", rlen, r.get_rec, rg},
                {"warm cycle: publish", rlen, r.pub_ms, -1},
                {"warm cycle: check + ack", rlen, r.recv_ms, -1},
            };
            for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                char b[24], rr[24];
                snprintf(b, sizeof(b), rows[i].base > 0 ? "%.3f" : "-", rows[i].base);
                snprintf(rr, sizeof(rr), rows[i].base > 0 ? "%.2f" : "-", rows[i].ms / rows[i].base);
                printf("%-6s %-34s %10zu %10.3f %12s %8s\n", plugins[p], rows[i].op, rows[i].bytes, rows[i].ms, b, rr);
            }
            printf("%-6s warm cycle round trips per source: publisher %" PRIu64 ", receiver %" PRIu64
                   " (target <= 2 each): %s\n",
                   plugins[p], r.pub_rt, r.recv_rt, r.pub_rt <= 2 && r.recv_rt <= 2 ? "met" : "NOT met");
            if (p == 0 && o.keep) {
                bool sent;
                refit_catalog_publish(s, enc, len, &h, &sent);
                rec.catalog = h;
                rec.version = (uint64_t)o.iters * 20 + 1;
                rec.heartbeat_ms = refit_time_ms();
                refit_record_publish(s, &rec);
                char hex[33];
                refit_hash128_hex(&h, hex);
                printf("       kept: refit store show catalogs/%s --set store.file.path=%s --namespace bench\n", hex,
                       fdir);
            }
        }
        refit_store_close(s);
        refit_loader_destroy(l);
        refit_config_destroy(cfg);
    }
    printf("\nratio: refit latency / redis-benchmark latency (one client, same value size, same server); "
           "lower is better\n");
    if (rpid > 0) {
        kill(rpid, SIGKILL);
        waitpid(rpid, NULL, 0);
    }
    if (!o.keep || o.dir) {
        char cmd[1200];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
        if (system(cmd) != 0)
            fprintf(stderr, "refit bench store: could not remove %s\n", tmp);
    }
    free(enc);
    refit_catalog_destroy(cat);
    return status;
}
