/* bench_store_scale.c — `refit bench store-scale`: the metadata of one
 * refit cycle at cluster scale against a real redis-server.
 *
 * 256 publishers and 1024 receivers by default, each with a store handle
 * (a connection) of its own, driven by a handful of threads, make the
 * store calls the engine makes, in its order, through the public store and
 * catalog API (refit/store.h, refit/catalog.h):
 *
 *   publish   catalog (content-addressed: cas-if-absent once per handle),
 *             checksums (the segments versions/V/sums/<id>/<k>, one
 *             put_many; none with --sums
 *             transport, where they travel in the source's table over the
 *             transport, pub_sums.c), record (sources/ and
 *             versions/V/sources/, one pipelined put), heartbeat;
 *   receive   a watch of members/ (--watch sources: of sources/) from the last cycle's cursor (first
 *             cycle: a cursor and a listing), the records and heartbeats
 *             (cold: every source's; warm: those of the --reads sources
 *             its cached plan reads, discover.c; --records all: every
 *             source's, as before) in one read with the checksum segments
 *             the plan reads (--seg-share of each read source's segments;
 *             none with --sums transport), a catalog per distinct hash not
 *             yet held, the fence (the records and heartbeats of the
 *             sources read, one read), the ack;
 *   release   each publisher counts the acks once (list + get of each);
 *   lease     each receiver takes and drops a lease on load/trainer by
 *             compare-and-swap (the fan-out lease list, fanout.md).
 *
 * Catalogs are those the trainer ranks of the model would publish (one per
 * distinct parallel position, from the model's layouts); records, acks and
 * checksum blobs have their real encodings and sizes.  Per phase it
 * prints wall time, the server's CPU time (INFO used_cpu_*), Redis
 * commands (INFO commandstats before and after; per command with
 * REFIT_BENCH_COMMANDS=1), bytes in and out of Redis (INFO stats) and the
 * store round trips per participant (refit_store_round_trips).  Then the waiting loops, one
 * round each at this scale: the push publisher's old advert scan (list
 * push/slots/ and get every advert, each 200 ms) beside its watch now, and
 * a fan-out receiver's source choice (list replicas/, get every
 * replica record and lease list, each 1..25 ms). */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/catalog.h"
#include "refit/convert.h"
#include "refit/status.h"
#include "refit/store_core.h"
#include "../../core/src/engine/engine.h"
#include "../../core/src/engine/sums.h"

struct ss_opts {
    int receivers, publishers, threads, cycles, t_tp, t_ep, e_tp, reads;
    double seg_share; /* of a read source's checksum segments, those the plan's checks cover */
    const char *model, *sums, *records;
    int sums_transport; /* --sums transport: no checksum in the store */
    const char *watch;  /* --watch members|sources */
    int watch_sources;  /* --watch sources: a receiver watches every record (before members/) */
    int records_all;    /* --records all: a warm receiver reads every record (before discover.c's partial read) */
};

struct ss {
    struct ss_opts o;
    int port;
    pid_t redis;
    refit_config_t *cfg;
    refit_loader_t *loader;
    refit_store_t **pub, **rcv;
    /* Catalogs per distinct trainer position (tp_rank * ep + ep_rank). */
    int n_cat;
    uint8_t *present; /* a publisher holds this position */
    void **cat_enc;
    size_t *cat_len;
    struct refit_hash128 *cat_hash;
    size_t *n_seg;     /* checksum segments per position (sums.h, from the catalog) */
    size_t **seg_len;  /* their lengths */
    uint8_t *held; /* receivers x n_cat: catalog already fetched */
    uint64_t *cursor; /* receivers: the watch of sources/ */
    uint64_t version;
    int errors;
    char err[512];
    pthread_mutex_t mu;
};

/* ------------------------------------------------------------------ */
/* The server and its counters */

static int redis_up(struct ss *s)
{
    s->port = cli_free_port();
    char port[16];
    snprintf(port, sizeof(port), "%d", s->port);
    s->redis = fork();
    if (s->redis == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr))
            _exit(126);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly",
               "no", "--maxclients", "10000", (char *)NULL);
        _exit(127);
    }
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d ping >/dev/null 2>&1", s->port);
    for (int i = 0; s->redis > 0 && i < 100; i++) {
        usleep(50000);
        if (system(cmd) == 0)
            return 0;
    }
    return refit_error_set(REFIT_ENOENT, "redis-server did not start (installed? tools/dev/deps.sh)");
}

#define SS_CMDS 48

struct counters {
    double calls, in_bytes, out_bytes;
    double cpu; /* the server's CPU seconds (user + system): the store's own time */
    /* per command: name, calls, microseconds (INFO commandstats) */
    int n_cmd;
    char cmd[SS_CMDS][32];
    double cmd_calls[SS_CMDS], cmd_usec[SS_CMDS];
};

static void redis_counters(const struct ss *s, struct counters *c)
{
    char cmd[128], line[512];
    memset(c, 0, sizeof(*c));
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d info all 2>/dev/null", s->port);
    FILE *p = popen(cmd, "r");
    while (p && fgets(line, sizeof(line), p)) {
        const char *k = strstr(line, "calls=");
        if (!strncmp(line, "cmdstat_", 8) && k && strncmp(line, "cmdstat_info:", 13)) {
            c->calls += strtod(k + 6, NULL);
            const char *colon = strchr(line, ':'), *us = strstr(line, "usec=");
            if (c->n_cmd < SS_CMDS && colon && us && colon - line - 8 < 32) {
                snprintf(c->cmd[c->n_cmd], 32, "%.*s", (int)(colon - line - 8), line + 8);
                c->cmd_calls[c->n_cmd] = strtod(k + 6, NULL);
                c->cmd_usec[c->n_cmd++] = strtod(us + 5, NULL);
            }
        }
        if (!strncmp(line, "total_net_input_bytes:", 22))
            c->in_bytes = strtod(line + 22, NULL);
        if (!strncmp(line, "total_net_output_bytes:", 23))
            c->out_bytes = strtod(line + 23, NULL);
        if (!strncmp(line, "used_cpu_user:", 14) || !strncmp(line, "used_cpu_sys:", 13))
            c->cpu += strtod(strchr(line, ':') + 1, NULL);
    }
    if (p)
        pclose(p);
}

/* ------------------------------------------------------------------ */
/* Catalogs the trainer ranks publish (bf16, one region) */

static int pub_pos(const struct ss *s, int p)
{
    return (p % s->o.t_tp) * s->o.t_ep + p % s->o.t_ep;
}

static int make_catalogs(struct ss *s)
{
    refit_model_t *m = NULL;
    char text[PATH_MAX + 32];
    snprintf(text, sizeof(text), "model:\n  file: %s\n", s->o.model);
    refit_config_t *mc = NULL;
    int rc = refit_config_create(&mc);
    if (!rc)
        rc = refit_config_load_string(mc, "store-scale.yaml", text, strlen(text));
    if (!rc)
        rc = refit_model_open_config(s->loader, mc, &m);
    s->n_cat = s->o.t_tp * s->o.t_ep;
    s->cat_enc = calloc((size_t)s->n_cat, sizeof(void *));
    s->cat_len = calloc((size_t)s->n_cat, sizeof(size_t));
    s->cat_hash = calloc((size_t)s->n_cat, sizeof(*s->cat_hash));
    s->present = calloc((size_t)s->n_cat, 1);
    s->n_seg = calloc((size_t)s->n_cat, sizeof(size_t));
    s->seg_len = calloc((size_t)s->n_cat, sizeof(size_t *));
    if (!rc && (!s->cat_enc || !s->cat_len || !s->cat_hash || !s->present || !s->n_seg ||
                !s->seg_len))
        rc = REFIT_ENOMEM;
    for (int p = 0; !rc && p < s->o.publishers; p++)
        s->present[pub_pos(s, p)] = 1;
    for (int k = 0; !rc && k < s->n_cat; k++) {
        if (!s->present[k])
            continue;
        struct refit_megatron_rank mr = {.tp = s->o.t_tp, .ep = s->o.t_ep, .etp = 1, .tp_rank = k / s->o.t_ep,
                                         .ep_rank = k % s->o.t_ep};
        refit_layout_t *lay = NULL;
        refit_catalog_t *c = NULL;
        rc = refit_layout_megatron(m, &mr, NULL, &lay);
        if (!rc)
            rc = refit_catalog_create(&c);
        uint64_t total = 0;
        for (size_t t = 0; !rc && t < refit_layout_count(lay); t++) {
            const struct refit_layout_tensor *lt = refit_layout_at(lay, t);
            uint64_t n = 2;
            for (int d = 0; d < lt->ndim; d++)
                n *= (uint64_t)lt->shape[d];
            total += (n + 63) & ~63ull;
        }
        uint32_t reg = 0;
        if (!rc)
            rc = refit_catalog_add_region(c, total ? total : 1, &reg);
        uint64_t off = 0;
        for (size_t t = 0; !rc && t < refit_layout_count(lay); t++) {
            const struct refit_layout_tensor *lt = refit_layout_at(lay, t);
            struct refit_cat_tensor ct = {.name = lt->name, .dtype = REFIT_DTYPE_BF16,
                                          .role = REFIT_CAT_ROLE_REPLICATED, .ndim = (uint32_t)lt->ndim,
                                          .shard_axis = -1, .expert = -1, .region = reg, .offset = off};
            uint64_t n = 2;
            for (int d = 0; d < lt->ndim; d++) {
                ct.shape[d] = ct.global_shape[d] = (uint64_t)lt->shape[d];
                n *= (uint64_t)lt->shape[d];
            }
            ct.nbytes = n;
            ct.checksum = n * 2654435761u + t;
            /* Checksum chunks of whole rows, sized as the publisher sizes them. */
            uint64_t rows = ct.ndim >= 2 ? ct.shape[0] : n / 2;
            for (uint32_t d = 1; ct.ndim > 2 && d + 1 < ct.ndim; d++)
                rows *= ct.shape[d];
            ct.chunk_rows = rf_chunk_rows(rows, rows ? n / rows : n);
            off += (n + 63) & ~63ull;
            rc = refit_catalog_add(c, &ct);
        }
        if (!rc)
            rc = refit_catalog_encode(c, &s->cat_enc[k], &s->cat_len[k]);
        if (!rc)
            refit_hash128_of(s->cat_enc[k], s->cat_len[k], &s->cat_hash[k]);
        /* The checksum segments, sized from the catalog (sums.h). */
        uint64_t *want = NULL;
        uint32_t *seg = NULL;
        if (!rc)
            rc = rf_sums_cat_segments(c, &want, &seg, &s->n_seg[k]);
        if (!rc && !(s->seg_len[k] = calloc(s->n_seg[k] ? s->n_seg[k] : 1, sizeof(size_t))))
            rc = REFIT_ENOMEM;
        size_t nt = rc ? 0 : refit_layout_count(lay);
        for (size_t t = 0; t < nt; t++) {
            s->seg_len[k][seg[t]] += 8 * (2 + want[t]);
        }
        for (size_t j = 0; !rc && j < s->n_seg[k]; j++)
            s->seg_len[k][j] += 64;
        free(want);
        free(seg);
        refit_catalog_destroy(c);
        refit_layout_destroy(lay);
    }
    refit_model_close(m);
    refit_config_destroy(mc);
    return rc ? refit_error_push(rc, "building the trainer ranks' catalogs from %s", s->o.model) : 0;
}

/* ------------------------------------------------------------------ */
/* Participants */

static void fail(struct ss *s, int rc, const char *what, int who)
{
    pthread_mutex_lock(&s->mu);
    if (!s->errors++)
        snprintf(s->err, sizeof(s->err), "%s %d: %s (%s)", what, who, refit_error_message(), refit_strerror(rc));
    pthread_mutex_unlock(&s->mu);
}

static int publish_one(struct ss *s, int p)
{
    refit_store_t *st = s->pub[p];
    int k = pub_pos(s, p), rc = 0;
    char id[32], key[REFIT_STORE_MAX_KEY + 1];
    snprintf(id, sizeof(id), "trainer-%d", p);
    (void)key;
    struct refit_hash128 h;
    rc = refit_catalog_publish(st, s->cat_enc[k], s->cat_len[k], &h, NULL);
    /* The checksum segments in one round trip (publisher.c); with the
     * table over the transport, none (no delta stage here). */
    size_t ns = s->n_seg[k], big = 1;
    int table = s->o.sums_transport;
    for (size_t j = 0; j < ns; j++)
        big = s->seg_len[k][j] > big ? s->seg_len[k][j] : big;
    void *sums = calloc(1, big);
    struct refit_store_put_item *pi = calloc(ns + 1, sizeof(*pi));
    char (*sk)[REFIT_STORE_MAX_KEY + 1] = calloc(ns + 1, sizeof(*sk));
    if (!rc && (!sums || !pi || !sk))
        rc = REFIT_ENOMEM;
    for (size_t j = 0; !rc && j < ns; j++) {
        snprintf(sk[j], sizeof(sk[j]), "versions/%llu/sums/%s/%zu", (unsigned long long)s->version, id, j);
        pi[j] = (struct refit_store_put_item){sk[j], sums, s->seg_len[k][j], 0};
    }
    if (!rc && !table && ns)
        rc = refit_store_put_many(st, pi, ns);
    free(sums);
    free(pi);
    free(sk);
    uint8_t addr[28] = {2}, rk[40] = {1};
    /* the region's key, and the checksum table's after it */
    struct refit_blob rkey[2] = {{rk, sizeof(rk)}, {rk, sizeof(rk)}};
    struct refit_source_record r = {.schema = 1, .source_id = id, .model = "qwen3_moe",
                                    .layout = {(uint32_t)(p % s->o.t_tp), (uint32_t)s->o.t_tp, 0, 1,
                                               (uint32_t)(p % s->o.t_ep), (uint32_t)s->o.t_ep, 0, 1},
                                    .transport = "tcp", .address = {addr, sizeof(addr)},
                                    .n_rkeys = table ? 2 : 1, .rkeys = rkey, .catalog = h, .version = s->version,
                                    .status = REFIT_SOURCE_READY, .heartbeat_ms = refit_time_ms()};
    if (!rc)
        rc = refit_record_publish(st, &r);
    if (!rc)
        rc = refit_heartbeat_put(st, id, s->version, 30000);
    /* The membership key, once per source (publisher.c: after its first
     * record, so a receiver that sees it finds the record). */
    if (!rc && s->version == 1) {
        snprintf(key, sizeof(key), "members/%s", id);
        rc = refit_store_put(st, key, id, strlen(id));
    }
    return rc;
}

/* Every source's record and heartbeat in one read (the engine's
 * refit_source_check_many), with `extra` keys in the same round trip. */
static int check_sources(refit_store_t *st, int n, const int *which, struct refit_store_get_item *extra,
                         size_t n_extra)
{
    struct refit_source_check *c = calloc((size_t)n, sizeof(*c));
    char (*ids)[32] = calloc((size_t)n, 32);
    int rc = c && ids ? 0 : REFIT_ENOMEM;
    for (int i = 0; !rc && i < n; i++) {
        snprintf(ids[i], 32, "trainer-%d", which ? which[i] : i);
        c[i].id = ids[i];
    }
    if (!rc)
        rc = refit_source_check_many(st, c, (size_t)n, 30000, extra, n_extra);
    for (int i = 0; c && i < n; i++) {
        if (!rc && c[i].status)
            rc = refit_error_set(c[i].status, "source %s: %s", ids[i], refit_strerror(c[i].status));
        free(c[i].rec);
    }
    free(c);
    free(ids);
    return rc;
}

/* The receiver's cycle as the engine makes it (discover.c, verify.c,
 * fence.c, buffers.c): a watch of sources/ from the last cycle's cursor
 * (the first cycle: a cursor and a listing), every record and heartbeat in
 * one read with the checksums of the `reads` sources its plan reads (warm:
 * the plan is cached, so it knows them), a catalog per distinct hash not
 * held yet, the fence (every record and heartbeat again, one read), the
 * ack. */
static int receive_one(struct ss *s, int q)
{
    refit_store_t *st = s->rcv[q];
    int n = s->o.publishers, nr = s->o.reads < n ? s->o.reads : n, rc = 0;
    char **keys = NULL;
    size_t nk = 0;
    uint64_t *cur = &s->cursor[q];
    /* discover.c watches members/ (a key per source, written once) */
    const char *wp = s->o.watch_sources ? "sources/" : "members/";
    if (*cur) {
        rc = refit_store_watch(st, wp, *cur, cur, 0, &keys, &nk);
        if (rc == REFIT_ETIMEDOUT || rc == REFIT_ERANGE)
            rc = 0; /* ERANGE would list again: not at this scale's history */
        free(keys);
    } else {
        rc = refit_store_watch(st, wp, 0, cur, 0, &keys, &nk);
        if (!rc)
            rc = refit_store_list(st, "sources/", &keys, &nk);
        free(keys);
    }
    int warm = s->version > 1;
    /* The checksum segments of the sources the plan reads: seg_share of
     * each one's segments (sums.h), rotated by receiver. */
    int *src = calloc((size_t)nr, sizeof(int));
    size_t n_keys = 0;
    for (int i = 0; src && i < nr; i++) {
        /* The sources a plan reads are spread over the ranks. */
        src[i] = (int)(((long)i * n / nr + q) % n);
        size_t ns = s->n_seg[pub_pos(s, src[i])], take = (size_t)(s->o.seg_share * (double)ns + 0.999);
        n_keys += s->o.sums_transport ? 0 : take < 1 ? 1 : take > ns ? ns : take;
    }
    struct refit_store_get_item *it = calloc(n_keys ? n_keys : 1, sizeof(*it));
    char (*kb)[64] = calloc(n_keys ? n_keys : 1, 64);
    if (!rc && (!it || !kb || !src))
        rc = REFIT_ENOMEM;
    size_t m = 0;
    for (int i = 0; !rc && !s->o.sums_transport && i < nr; i++) {
        size_t ns = s->n_seg[pub_pos(s, src[i])], take = (size_t)(s->o.seg_share * (double)ns + 0.999);
        take = take < 1 ? 1 : take > ns ? ns : take;
        for (size_t j = 0; j < take; j++, m++) {
            snprintf(kb[m], 64, "versions/%llu/sums/trainer-%d/%zu", (unsigned long long)s->version, src[i],
                     (j + (size_t)q) % ns);
            it[m].key = kb[m];
        }
    }
    /* Warm, with the set of sources unchanged: only the records of the
     * sources the cached plan reads (discover.c). */
    if (!rc && warm && !s->o.records_all)
        rc = check_sources(st, nr, src, it, m);
    else if (!rc)
        rc = check_sources(st, n, NULL, warm ? it : NULL, warm ? m : 0);
    /* Catalogs: fetched once per distinct hash. */
    for (int k = 0; !rc && k < s->n_cat; k++) {
        uint8_t *held = &s->held[(size_t)q * s->n_cat + k];
        if (*held || !s->present[k])
            continue;
        refit_catalog_t *c = NULL;
        rc = refit_catalog_fetch(st, &s->cat_hash[k], &c);
        refit_catalog_destroy(c);
        *held = 1;
    }
    if (!rc && !warm && m) /* cold: the plan is made now, then its checksums read */
        rc = refit_store_get_many(st, it, m);
    for (size_t i = 0; it && i < m; i++) {
        if (!rc && it[i].status)
            rc = refit_error_set(it[i].status, "%s: %s", kb[i], refit_strerror(it[i].status));
        free(it[i].val);
    }
    free(it);
    free(kb);
    if (!rc) /* the fence: the records of the sources the plan read (fence.c) */
        rc = check_sources(st, nr, src, NULL, 0);
    free(src);
    char id[32];
    snprintf(id, sizeof(id), "engine-%d-%d", q / s->o.e_tp, q % s->o.e_tp);
    if (!rc)
        rc = refit_ack_put(st, s->version, id);
    return rc;
}

static int release_one(struct ss *s, int p)
{
    size_t n = 0;
    int rc = refit_ack_count(s->pub[p], s->version, &n);
    if (!rc && n != (size_t)s->o.receivers)
        rc = refit_error_set(REFIT_EPROTO, "%zu of %d acks", n, s->o.receivers);
    return rc;
}

/* The fan-out lease list's shape (fanout.md): a map with a list of
 * [puller, expires, version]; enough bytes for the store to carry. */
static int lease_one(struct ss *s, int q)
{
    refit_store_t *st = s->rcv[q];
    for (int tries = 0; tries < 1000; tries++) {
        void *cur = NULL;
        size_t len = 0;
        int rc = refit_store_get(st, "load/trainer", &cur, &len);
        if (rc && rc != REFIT_ENOENT)
            return rc;
        char add[64];
        int al = snprintf(add, sizeof(add), "[engine-%d,%llu,%llu]", q, (unsigned long long)refit_time_ms(),
                          (unsigned long long)s->version);
        /* Expired and released entries drop out: the list stays short. */
        size_t keep = rc ? 0 : (len > 512 ? 512 : len);
        char *nv = malloc(keep + (size_t)al + 1);
        if (!nv) {
            free(cur);
            return REFIT_ENOMEM;
        }
        if (keep)
            memcpy(nv, cur, keep);
        memcpy(nv + keep, add, (size_t)al);
        rc = refit_store_cas(st, "load/trainer", rc ? NULL : cur, rc ? 0 : len, nv, keep + (size_t)al);
        free(nv);
        free(cur);
        if (rc != REFIT_ECONFLICT) {
            refit_error_clear();
            return rc;
        }
    }
    return refit_error_set(REFIT_ECONFLICT, "load/trainer: 1000 lost compare-and-swaps");
}

/* ------------------------------------------------------------------ */
/* Phases over threads */

typedef int (*ss_fn)(struct ss *s, int who);

struct job {
    struct ss *s;
    ss_fn fn;
    int n, t, nt;
    const char *what;
};

static void *worker(void *arg)
{
    struct job *j = arg;
    for (int i = j->t; i < j->n && !j->s->errors; i += j->nt) {
        int rc = j->fn(j->s, i);
        if (rc)
            fail(j->s, rc, j->what, i);
    }
    return NULL;
}

static uint64_t round_trips(refit_store_t **h, int n)
{
    uint64_t rt = 0;
    for (int i = 0; i < n; i++)
        rt += refit_store_round_trips(h[i]);
    return rt;
}

static int phase(struct ss *s, const char *what, ss_fn fn, int n, refit_store_t **h)
{
    struct counters a, b;
    redis_counters(s, &a);
    uint64_t rt0 = round_trips(h, n);
    pthread_t th[64];
    struct job jb[64];
    double t0 = cli_now();
    for (int t = 0; t < s->o.threads; t++) {
        jb[t] = (struct job){s, fn, n, t, s->o.threads, what};
        pthread_create(&th[t], NULL, worker, &jb[t]);
    }
    for (int t = 0; t < s->o.threads; t++)
        pthread_join(th[t], NULL);
    double dt = cli_now() - t0;
    redis_counters(s, &b);
    uint64_t rt = round_trips(h, n) - rt0;
    if (s->errors)
        return refit_error_set(REFIT_EIO, "%s", s->err);
    double calls = b.calls - a.calls, bytes = (b.in_bytes - a.in_bytes) + (b.out_bytes - a.out_bytes);
    printf("v%-3llu %-9s %6d %9.3f %9.3f %11.0f %11.1f %12.2f %11.2f %11.1f\n", (unsigned long long)s->version, what,
           n, dt, b.cpu - a.cpu, calls, calls / n, bytes / 1e6, bytes / n / 1e3, (double)rt / n);
    /* REFIT_BENCH_COMMANDS=1: where the server's time went, per command */
    const char *env = getenv("REFIT_BENCH_COMMANDS");
    for (int i = 0; env && *env == '1' && i < b.n_cmd; i++) {
        double c0 = 0, u0 = 0;
        for (int j = 0; j < a.n_cmd; j++)
            if (!strcmp(a.cmd[j], b.cmd[i])) {
                c0 = a.cmd_calls[j];
                u0 = a.cmd_usec[j];
            }
        if (b.cmd_calls[i] > c0)
            printf("       %-12s %8.0f calls %9.1f ms\n", b.cmd[i], b.cmd_calls[i] - c0, (b.cmd_usec[i] - u0) / 1e3);
    }
    return 0;
}

static int open_handles(struct ss *s)
{
    s->pub = calloc((size_t)s->o.publishers, sizeof(*s->pub));
    s->rcv = calloc((size_t)s->o.receivers, sizeof(*s->rcv));
    s->held = calloc((size_t)s->o.receivers * (size_t)(s->o.t_tp * s->o.t_ep), 1);
    s->cursor = calloc((size_t)s->o.receivers, sizeof(*s->cursor));
    if (!s->pub || !s->rcv || !s->held || !s->cursor)
        return REFIT_ENOMEM;
    int rc = 0;
    for (int p = 0; !rc && p < s->o.publishers; p++)
        rc = refit_store_open(s->cfg, s->loader, NULL, &s->pub[p]);
    for (int q = 0; !rc && q < s->o.receivers; q++)
        rc = refit_store_open(s->cfg, s->loader, NULL, &s->rcv[q]);
    return rc;
}

/* ------------------------------------------------------------------ */
/* The waiting loops, one round each */

/* What the push publisher does now (push_pub.c): a watch of push/slots/
 * from its cursor, woken by the adverts of the next version, then one read
 * of the adverts that changed. */
static int watch_round(struct ss *s, const void *adv, size_t len)
{
    refit_store_t *st = s->pub[0];
    uint64_t cur = 0;
    char **keys = NULL;
    size_t nk = 0;
    int rc = refit_store_watch(st, "push/slots/", 0, &cur, 0, &keys, &nk);
    for (int q = 0; !rc && q < s->o.receivers; q++) {
        char key[64];
        snprintf(key, sizeof(key), "push/slots/engine-%d-%d", q / s->o.e_tp, q % s->o.e_tp);
        rc = refit_store_put(s->rcv[q], key, adv, len);
    }
    struct counters a, b;
    redis_counters(s, &a);
    uint64_t rt0 = refit_store_round_trips(st);
    double t0 = cli_now();
    size_t got = 0;
    /* Until every receiver's advert was seen (a watch returns at most one
     * stream page at a time). */
    while (!rc && got < (size_t)s->o.receivers) {
        rc = refit_store_watch(st, "push/slots/", cur, &cur, 1000, &keys, &nk);
        struct refit_store_get_item *it = rc ? NULL : calloc(nk ? nk : 1, sizeof(*it));
        if (!rc && !it)
            rc = REFIT_ENOMEM;
        for (size_t i = 0; !rc && i < nk; i++)
            it[i].key = keys[i];
        if (!rc)
            rc = refit_store_get_many(st, it, nk);
        for (size_t i = 0; it && i < nk; i++)
            free(it[i].val);
        free(it);
        free(keys);
        got += nk;
    }
    double dt = cli_now() - t0;
    redis_counters(s, &b);
    if (rc)
        return refit_error_push(rc, "push advert watch");
    double calls = b.calls - a.calls, bytes = b.in_bytes - a.in_bytes + b.out_bytes - a.out_bytes;
    printf("push publisher now (watch push/slots/ + one get_many of the %zu adverts that changed): %.1f ms, "
           "%.0f commands, %llu round trips, %.2f MB, once per version\n", got, dt * 1e3, calls,
           (unsigned long long)(refit_store_round_trips(st) - rt0), bytes / 1e6);
    return 0;
}

/* Push adverts (push/slots/<receiver>), as big as an advert with a tcp
 * address and three remote keys, then one publisher's scan. */
static int advert_round(struct ss *s)
{
    refit_store_t *st = s->rcv[0];
    uint8_t adv[240] = {0};
    int rc = 0;
    for (int q = 0; !rc && q < s->o.receivers; q++) {
        char key[64];
        snprintf(key, sizeof(key), "push/slots/engine-%d-%d", q / s->o.e_tp, q % s->o.e_tp);
        rc = refit_store_put(s->rcv[q], key, adv, sizeof(adv));
    }
    struct counters a, b;
    redis_counters(s, &a);
    uint64_t rt0 = refit_store_round_trips(st);
    double t0 = cli_now();
    char **keys = NULL;
    size_t nk = 0;
    if (!rc)
        rc = refit_store_list(st, "push/slots/", &keys, &nk);
    for (size_t i = 0; !rc && i < nk; i++) {
        void *v = NULL;
        size_t len = 0;
        rc = refit_store_get(st, keys[i], &v, &len);
        free(v);
    }
    free(keys);
    double dt = cli_now() - t0;
    redis_counters(s, &b);
    if (rc)
        return refit_error_push(rc, "push advert scan");
    double calls = b.calls - a.calls, bytes = b.in_bytes - a.in_bytes + b.out_bytes - a.out_bytes;
    uint64_t rt = refit_store_round_trips(st) - rt0;
    printf("push publisher's advert scan (list push/slots/ + get each of %zu): %.1f ms, %.0f commands, "
           "%llu round trips, %.2f MB\n", nk, dt * 1e3, calls, (unsigned long long)rt, bytes / 1e6);
    printf("  every 200 ms by each of %d publishers while it serves: %.0f commands/s, %.1f MB/s\n",
           s->o.publishers, calls * 5 * s->o.publishers, bytes * 5 * s->o.publishers / 1e6);
    return watch_round(s, adv, sizeof(adv));
}

/* Replica records (with the image's chunk checksums: 8 bytes per 4 MiB of
 * an engine rank's staging) and lease lists, then one waiter's choice. */
static int replica_round(struct ss *s, uint64_t image_bytes)
{
    refit_store_t *st = s->rcv[0];
    size_t rec_len = 200 + 8 * (size_t)((image_bytes + (4u << 20) - 1) / (4u << 20));
    uint8_t *rec = calloc(1, rec_len);
    int rc = rec ? 0 : REFIT_ENOMEM;
    for (int q = 0; !rc && q < s->o.receivers; q++) {
        char key[64];
        snprintf(key, sizeof(key), "replicas/engine-%d-%d", q / s->o.e_tp, q % s->o.e_tp);
        rc = refit_store_put(s->rcv[q], key, rec, rec_len);
        snprintf(key, sizeof(key), "load/engine-%d-%d", q / s->o.e_tp, q % s->o.e_tp);
        if (!rc)
            rc = refit_store_put(s->rcv[q], key, "{\"leases\":[]}", 13);
    }
    free(rec);
    struct counters a, b;
    redis_counters(s, &a);
    uint64_t rt0 = refit_store_round_trips(st);
    double t0 = cli_now();
    char **keys = NULL;
    size_t nk = 0;
    if (!rc)
        rc = refit_store_list(st, "replicas/", &keys, &nk);
    for (size_t i = 0; !rc && i < nk; i++) {
        void *v = NULL;
        size_t len = 0;
        char lk[REFIT_STORE_MAX_KEY + 1];
        rc = refit_store_get(st, keys[i], &v, &len);
        free(v);
        snprintf(lk, sizeof(lk), "load/%s", keys[i] + strlen("replicas/"));
        if (!rc)
            rc = refit_store_get(st, lk, &v, &len);
        if (!rc)
            free(v);
    }
    free(keys);
    double dt = cli_now() - t0;
    redis_counters(s, &b);
    if (rc)
        return refit_error_push(rc, "fan-out source choice");
    double calls = b.calls - a.calls, bytes = b.in_bytes - a.in_bytes + b.out_bytes - a.out_bytes;
    printf("fan-out waiter's choice (list replicas/ + record and lease list of each of %zu; records %.1f KB with "
           "their chunk checksums): %.1f ms, %.0f commands, %llu round trips, %.2f MB\n",
           nk, rec_len / 1e3, dt * 1e3, calls, (unsigned long long)(refit_store_round_trips(st) - rt0), bytes / 1e6);
    printf("  every 25 ms (its longest backoff) by each waiting receiver: with half of %d waiting, %.0f commands/s, "
           "%.0f MB/s\n", s->o.receivers, calls * 40 * s->o.receivers / 2, bytes * 40 * s->o.receivers / 2 / 1e6);
    return 0;
}

/* How long a waiting poll() takes to see another handle's write, with and
 * without store.redis.notify (the write lands 50 ms into the wait). */
struct wake {
    refit_store_t *w;
    int i;
};

static void *wake_writer(void *arg)
{
    struct wake *k = arg;
    usleep(50000);
    char key[48];
    snprintf(key, sizeof(key), "push/slots/wake-%d", k->i);
    refit_store_put(k->w, key, "x", 1);
    return NULL;
}

static int wake_latency(struct ss *s)
{
    for (int on = 1; on >= 0; on--) {
        refit_store_t *a = NULL;
        int rc = refit_config_set(s->cfg, on ? "store.redis.notify=true" : "store.redis.notify=false", "bench");
        if (!rc)
            rc = refit_store_open(s->cfg, s->loader, NULL, &a);
        double sum = 0, worst = 0;
        const int n = 20;
        for (int i = 0; !rc && i < n; i++) {
            uint64_t c0 = 0, c1 = 0;
            rc = refit_store_poll(a, "push/", 0, &c0, 0);
            /* Settle into the long end of the backoff, as a waiting
             * publisher is after its first few re-checks. */
            if (!rc && (rc = refit_store_poll(a, "push/", c0, &c1, 400)) == REFIT_ETIMEDOUT)
                rc = 0;
            struct wake k = {s->pub[0], i};
            pthread_t th;
            double t0 = cli_now();
            pthread_create(&th, NULL, wake_writer, &k);
            if (!rc)
                rc = refit_store_poll(a, "push/", c0, &c1, 10000);
            double dt = cli_now() - t0 - 0.05;
            pthread_join(th, NULL);
            sum += dt;
            worst = dt > worst ? dt : worst;
        }
        refit_store_close(a);
        if (rc)
            return refit_error_push(rc, "wake-up latency");
        printf("poll() wake-up after a write, store.redis.notify %-5s: mean %6.1f ms, worst %6.1f ms (%d writes; "
               "poll_min 5 ms, poll_max 200 ms)\n", on ? "true" : "false", sum / n * 1e3, worst * 1e3, n);
    }
    return 0;
}

/* ------------------------------------------------------------------ */

/* The command line: struct ss_opts and the trainer's layout as text. */
struct ss_cli {
    struct ss_opts o;
    const char *trainer;
};

#define AT(f) CLI_AT(struct ss_cli, f)
static const struct cli_opt ss_table[] = {
    {"--receivers", NULL, CLI_INT, "N", 1, 8192, NULL, NULL, AT(o.receivers), "receivers (default 1024)"},
    {"--publishers", NULL, CLI_INT, "P", 1, 4096, NULL, NULL, AT(o.publishers),
     "publishers, a multiple of the trainer's tp (default 256)"},
    {"--threads", NULL, CLI_INT, "T", 1, 64, NULL, NULL, AT(o.threads), "threads driving them (default 8)"},
    {"--cycles", NULL, CLI_INT, "K", 1, 100, NULL, NULL, AT(o.cycles), "cycles (default 3)"},
    {"--model", NULL, CLI_STR, "YAML", 0, 0, NULL, NULL, AT(o.model),
     "the model (default configs/models/qwen3-235b-a22b.yaml)"},
    {"--trainer", NULL, CLI_STR, "tp=T,ep=E", 0, 0, NULL, NULL, AT(trainer), "the trainer's layout (default tp=8,ep=32)"},
    {"--engine-tp", NULL, CLI_INT, "N", 1, 1024, NULL, NULL, AT(o.e_tp), "the engines' tp (default 16)"},
    {"--reads", NULL, CLI_INT, "R", 1, 4096, NULL, NULL, AT(o.reads),
     "sources whose checksums a receiver's plan reads (default 16)"},
    {"--seg-share", NULL, CLI_DBL, "F", 0, 0, NULL, NULL, AT(o.seg_share),
     "share of a read source's checksum segments the plan's checks cover, in (0, 1] (default 1: all)"},
    {"--sums", NULL, CLI_STR, "store|transport", 0, 0, NULL, NULL, AT(o.sums),
     "refit.sums of the publishers: checksum segments in the store, or a table read over the transport "
     "(default store)"},
    {"--watch", NULL, CLI_STR, "members|sources", 0, 0, NULL, NULL, AT(o.watch),
     "what a receiver's discovery watches: members/ (a key per source, the engine) or sources/ (every record)"},
    {"--records", NULL, CLI_STR, "plan|all", 0, 0, NULL, NULL, AT(o.records),
     "a warm receiver reads the records of the sources its plan reads (plan, the engine) or every one (all)"},
};
#undef AT

static const struct cli_spec ss_spec = {
    .cmd = "bench store-scale",
    .about = "One refit cycle's metadata at scale against a redis-server this benchmark starts:\n"
             "P publishers and N receivers, each with its own connection, driven by T threads,\n"
             "making the engine's store calls through the public store and catalog API (catalogs\n"
             "of the model's trainer positions).  Per phase: time, Redis commands (INFO\n"
             "commandstats), bytes in and out (INFO stats), round trips per participant.  Then one\n"
             "round of each waiting loop at this scale: the push publisher's old advert scan and its\n"
             "watch now, the fan-out waiter's choice, and poll()'s wake-up latency.\n",
    .opts = ss_table,
    .n_opts = CLI_N(ss_table),
};

static int usage(FILE *f)
{
    cli_opts_help(&ss_spec, f);
    return f == stdout ? 0 : 2;
}

static int parse(struct ss_opts *o, int argc, char **argv)
{
    struct ss_cli c = {.o = *o};
    int rc = cli_opts_parse(&ss_spec, argc, argv, &c, NULL, NULL);
    if (!rc && c.trainer)
        rc = cli_layout("--trainer", c.trainer, &c.o.t_tp, &c.o.t_ep);
    if (!rc && !(c.o.seg_share > 0 && c.o.seg_share <= 1))
        rc = refit_error_set(REFIT_EINVAL, "--seg-share %g: expected a share in (0, 1]", c.o.seg_share);
    if (!rc && c.o.sums && strcmp(c.o.sums, "store") && strcmp(c.o.sums, "transport"))
        rc = refit_error_set(REFIT_EINVAL, "--sums %s: expected store or transport", c.o.sums);
    if (!rc && c.o.records && strcmp(c.o.records, "plan") && strcmp(c.o.records, "all"))
        rc = refit_error_set(REFIT_EINVAL, "--records %s: expected plan or all", c.o.records);
    if (!rc && c.o.watch && strcmp(c.o.watch, "members") && strcmp(c.o.watch, "sources"))
        rc = refit_error_set(REFIT_EINVAL, "--watch %s: expected members or sources", c.o.watch);
    c.o.watch_sources = c.o.watch && !strcmp(c.o.watch, "sources");
    c.o.sums_transport = c.o.sums && !strcmp(c.o.sums, "transport");
    c.o.records_all = c.o.records && !strcmp(c.o.records, "all");
    if (!rc)
        *o = c.o;
    return rc;
}

static void ss_free(struct ss *s)
{
    for (int p = 0; s->pub && p < s->o.publishers; p++)
        refit_store_close(s->pub[p]);
    for (int q = 0; s->rcv && q < s->o.receivers; q++)
        refit_store_close(s->rcv[q]);
    free(s->pub);
    free(s->rcv);
    free(s->held);
    free(s->cursor);
    for (int k = 0; s->cat_enc && k < s->n_cat; k++)
        free(s->cat_enc[k]);
    free(s->cat_enc);
    free(s->cat_len);
    for (int k = 0; s->seg_len && k < s->n_cat; k++)
        free(s->seg_len[k]);
    free(s->seg_len);
    free(s->n_seg);
    free(s->cat_hash);
    free(s->present);
    refit_loader_destroy(s->loader);
    refit_config_destroy(s->cfg);
    if (s->redis > 0) {
        kill(s->redis, SIGTERM);
        waitpid(s->redis, NULL, 0);
    }
    pthread_mutex_destroy(&s->mu);
}

static int run(struct ss *s)
{
    int rc = redis_up(s);
    char port[48];
    snprintf(port, sizeof(port), "store.redis.port=%d", s->port);
    if (!rc)
        rc = refit_config_create(&s->cfg);
    if (!rc)
        rc = refit_config_set(s->cfg, "store.plugin=redis", "bench");
    if (!rc)
        rc = refit_config_set(s->cfg, port, "bench");
    if (!rc)
        rc = refit_config_set(s->cfg, "store.namespace=scale", "bench");
    if (!rc)
        rc = refit_loader_create(s->cfg, &s->loader);
    if (!rc)
        rc = make_catalogs(s);
    if (!rc)
        rc = open_handles(s);
    if (rc)
        return rc;
    size_t cat_bytes = 0;
    int distinct = 0;
    for (int k = 0; k < s->n_cat; k++) {
        cat_bytes += s->cat_len[k];
        distinct += s->present[k];
    }
    printf("refit bench store-scale: %d publishers (trainer tp %d ep %d: %d distinct catalogs, %.2f MB in all), "
           "%d receivers, %d threads, redis-server on 127.0.0.1:%d\n\n",
           s->o.publishers, s->o.t_tp, s->o.t_ep, distinct, cat_bytes / 1e6, s->o.receivers, s->o.threads, s->port);
    printf("%-4s %-9s %6s %9s %9s %11s %11s %12s %11s %11s\n", "v", "phase", "who", "seconds", "redis cpu",
           "commands", "per who", "MB", "KB per who", "RT per who");
    for (int c = 1; !rc && c <= s->o.cycles; c++) {
        s->version = (uint64_t)c;
        rc = phase(s, "publish", publish_one, s->o.publishers, s->pub);
        if (!rc)
            rc = phase(s, "receive", receive_one, s->o.receivers, s->rcv);
        if (!rc)
            rc = phase(s, "release", release_one, s->o.publishers, s->pub);
        if (!rc)
            rc = phase(s, "lease", lease_one, s->o.receivers, s->rcv);
    }
    printf("(seconds: wall time of the phase, every participant's client work included; redis cpu: the server's "
           "CPU seconds in it, INFO used_cpu_user + used_cpu_sys; "
           "commands: Redis commands executed, INFO commandstats; MB: bytes into and out of Redis; RT: store round "
           "trips, one per plugin call; warm cycles are v >= 2; a plan reads %d sources: warm, %s, %s, and "
           "fences those sources)\n\n",
           s->o.reads, s->o.records_all ? "every source's record (--records all)" : "only their records",
           s->o.sums_transport ? "their checksums from their tables over the transport (none in the store)"
           : s->o.seg_share < 1 ? "a share of their checksum segments"
                                : "all their checksum segments");
    if (!rc)
        rc = advert_round(s);
    if (!rc)
        rc = replica_round(s, 15000000000ull);
    if (!rc)
        rc = wake_latency(s);
    return rc;
}

int bench_store_scale(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout);
    struct ss s = {.o = {.receivers = 1024, .publishers = 256, .threads = 8, .cycles = 3, .t_tp = 8, .t_ep = 32,
                         .e_tp = 16, .reads = 16, .seg_share = 1, .model = "configs/models/qwen3-235b-a22b.yaml"}};
    pthread_mutex_init(&s.mu, NULL);
    int rc = parse(&s.o, argc, argv);
    if (!rc && s.o.publishers % s.o.t_tp)
        rc = refit_error_set(REFIT_EINVAL, "--publishers %d: not a multiple of tp %d", s.o.publishers, s.o.t_tp);
    if (!rc)
        rc = run(&s);
    ss_free(&s);
    return rc ? cli_fail("bench store-scale", rc) : 0;
}
