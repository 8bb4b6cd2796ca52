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
 *   receive   warm: no watch, the membership epoch read with the records
 *             (discover.c; --watch members|sources: a watch of members/ or
 *             sources/ from the last cycle's cursor first); the first
 *             cycle: a cursor, the epoch and a listing; the records and heartbeats
 *             (cold: every source's; warm: those of the --reads sources
 *             its cached plan reads, discover.c; --records all: every
 *             source's, as before) in one read with the checksum segments
 *             the plan reads (--seg-share of each read source's segments;
 *             none with --sums transport), a catalog per distinct hash not
 *             yet held, the fence (the records of the sources read, one
 *             read) with the ack in the same round trip (--ack apart:
 *             the ack in one of its own, as before);
 *   release   each publisher waits for the acks as the engine does
 *             (release.c: the first to claim released/<V> counts, list +
 *             get of each ack, and the others read its verdict; --release
 *             count: each counts, as before);
 *   lease     each receiver takes and drops a lease on load/trainer by
 *             compare-and-swap (the fan-out lease list, fanout.md).
 *
 * Catalogs are those the trainer ranks of the model would publish (one per
 * distinct parallel position, from the model's layouts); records, acks and
 * checksum segments have their real encodings and sizes.  Per phase it
 * prints wall time, the server's CPU time (INFO used_cpu_*), Redis
 * commands (INFO commandstats before and after; per command with
 * REFIT_BENCH_COMMANDS=1), bytes in and out of Redis (INFO stats) and the
 * store round trips per participant (refit_store_round_trips).  Then the waiting loops, one
 * round each at this scale: the push publisher's old advert scan (list
 * push/slots/ and get every advert, each 200 ms) beside its watch now, and
 * a fan-out receiver's source choice (list replicas/, get every
 * replica record and lease list, each 1..25 ms).  The participants' calls
 * are in bench_store_scale_who.c, the loops in bench_store_scale_loops.c. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_store_scale.h"
#include "cli.h"
#include "cli_opts.h"
#include "refit/convert.h"
#include "refit/status.h"
#include "../../core/src/engine/engine.h"
#include "../../core/src/engine/sums.h"

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

void ss_counters(const struct ss *s, struct counters *c)
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
        s->present[ss_pub_pos(s, p)] = 1;
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
/* Phases over threads */

static void fail(struct ss *s, int rc, const char *what, int who)
{
    pthread_mutex_lock(&s->mu);
    if (!s->errors++)
        snprintf(s->err, sizeof(s->err), "%s %d: %s (%s)", what, who, refit_error_message(), refit_strerror(rc));
    pthread_mutex_unlock(&s->mu);
}
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
        double t0 = cli_now();
        int rc = j->fn(j->s, i);
        j->s->lat[i] = cli_now() - t0;
        if (rc)
            fail(j->s, rc, j->what, i);
    }
    return NULL;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* This process's CPU seconds (user + system) and context switches: the
 * clients' own work, which a cluster spreads over its hosts. */
static void self_usage(double *cpu, double *csw)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
    *csw = (double)ru.ru_nvcsw + (double)ru.ru_nivcsw;
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
    ss_counters(s, &a);
    uint64_t rt0 = round_trips(h, n);
    int nt = s->o.threads < n ? s->o.threads : n;
    pthread_t *th = calloc((size_t)nt, sizeof(*th));
    struct job *jb = calloc((size_t)nt, sizeof(*jb));
    if (!th || !jb) {
        free(th);
        free(jb);
        return REFIT_ENOMEM;
    }
    /* Small stacks: --threads may give every participant its own. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256u << 10);
    double cpu0, csw0, cpu1, csw1;
    self_usage(&cpu0, &csw0);
    double t0 = cli_now();
    int started = 0;
    for (int t = 0; t < nt; t++) {
        jb[t] = (struct job){s, fn, n, t, nt, what};
        if (pthread_create(&th[t], &attr, worker, &jb[t])) {
            fail(s, REFIT_ENOMEM, "starting thread", t); /* the started ones stop at the error */
            break;
        }
        started++;
    }
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    double dt = cli_now() - t0;
    self_usage(&cpu1, &csw1);
    pthread_attr_destroy(&attr);
    free(th);
    free(jb);
    ss_counters(s, &b);
    uint64_t rt = round_trips(h, n) - rt0;
    if (s->errors)
        return refit_error_set(REFIT_EIO, "%s", s->err);
    double calls = b.calls - a.calls, bytes = (b.in_bytes - a.in_bytes) + (b.out_bytes - a.out_bytes);
    qsort(s->lat, (size_t)n, sizeof(*s->lat), cmp_dbl);
    printf("v%-3llu %-9s %6d %9.3f %9.3f %9.3f %8.0f %7.2f %7.2f %9.0f %7.1f %10.2f %9.2f %6.1f\n",
           (unsigned long long)s->version, what, n, dt, b.cpu - a.cpu, cpu1 - cpu0, (csw1 - csw0) / n,
           s->lat[n / 2] * 1e3, s->lat[n - 1] * 1e3, calls, calls / n, bytes / 1e6, bytes / n / 1e3, (double)rt / n);
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
    s->lat = calloc((size_t)(s->o.receivers > s->o.publishers ? s->o.receivers : s->o.publishers), sizeof(double));
    if (!s->pub || !s->rcv || !s->held || !s->cursor || !s->lat)
        return REFIT_ENOMEM;
    int rc = 0;
    for (int p = 0; !rc && p < s->o.publishers; p++)
        rc = refit_store_open(s->cfg, s->loader, NULL, &s->pub[p]);
    for (int q = 0; !rc && q < s->o.receivers; q++)
        rc = refit_store_open(s->cfg, s->loader, NULL, &s->rcv[q]);
    return rc;
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
    {"--threads", NULL, CLI_INT, "T", 1, 8192, NULL, NULL, AT(o.threads),
     "threads driving them (default 8; as many as participants: each its own)"},
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
    {"--watch", NULL, CLI_STR, "epoch|members|sources", 0, 0, NULL, NULL, AT(o.watch),
     "how a warm receiver learns of new sources: the membership epoch read with its records (epoch, the engine: "
     "no watch), or a watch of members/ (a key per source) or of sources/ (every record)"},
    {"--fence", NULL, CLI_STR, "records|heartbeats", 0, 0, NULL, NULL, AT(o.fence),
     "the fence reads the records alone while discovery's heartbeats are young (records, the engine) or every "
     "heartbeat again (heartbeats)"},
    {"--records", NULL, CLI_STR, "plan|all", 0, 0, NULL, NULL, AT(o.records),
     "a warm receiver reads the records of the sources its plan reads (plan, the engine) or every one (all)"},
    {"--ack", NULL, CLI_STR, "fence|apart", 0, 0, NULL, NULL, AT(o.ack),
     "the receiver's ack goes with the fence's read (fence, the engine) or in a round trip of its own (apart)"},
    {"--release", NULL, CLI_STR, "verdict|count", 0, 0, NULL, NULL, AT(o.release),
     "a publisher's wait for the acks: one counts and the others read its verdict (verdict, the engine), or each "
     "lists and reads every ack (count)"},
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
    if (!rc && c.o.watch && strcmp(c.o.watch, "epoch") && strcmp(c.o.watch, "members") &&
        strcmp(c.o.watch, "sources"))
        rc = refit_error_set(REFIT_EINVAL, "--watch %s: expected epoch, members or sources", c.o.watch);
    if (!rc && c.o.fence && strcmp(c.o.fence, "records") && strcmp(c.o.fence, "heartbeats"))
        rc = refit_error_set(REFIT_EINVAL, "--fence %s: expected records or heartbeats", c.o.fence);
    if (!rc && c.o.ack && strcmp(c.o.ack, "fence") && strcmp(c.o.ack, "apart"))
        rc = refit_error_set(REFIT_EINVAL, "--ack %s: expected fence or apart", c.o.ack);
    if (!rc && c.o.release && strcmp(c.o.release, "verdict") && strcmp(c.o.release, "count"))
        rc = refit_error_set(REFIT_EINVAL, "--release %s: expected verdict or count", c.o.release);
    c.o.ack_apart = c.o.ack && !strcmp(c.o.ack, "apart");
    c.o.release_count = c.o.release && !strcmp(c.o.release, "count");
    c.o.fence_heartbeats = c.o.fence && !strcmp(c.o.fence, "heartbeats");
    c.o.watch_sources = c.o.watch && !strcmp(c.o.watch, "sources");
    c.o.watch_epoch = !c.o.watch || !strcmp(c.o.watch, "epoch");
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
    free(s->lat);
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
    printf("%-4s %-9s %6s %9s %9s %9s %8s %7s %7s %9s %7s %10s %9s %6s\n", "v", "phase", "who", "seconds",
           "redis cpu", "client cpu", "csw/who", "p50 ms", "max ms", "commands", "per who", "MB", "KB/who", "RT/who");
    for (int c = 1; !rc && c <= s->o.cycles; c++) {
        s->version = (uint64_t)c;
        rc = phase(s, "publish", ss_publish_one, s->o.publishers, s->pub);
        if (!rc)
            rc = phase(s, "receive", ss_receive_one, s->o.receivers, s->rcv);
        if (!rc)
            rc = phase(s, "release", ss_release_one, s->o.publishers, s->pub);
        if (!rc)
            rc = phase(s, "lease", ss_lease_one, s->o.receivers, s->rcv);
    }
    printf("(seconds: wall time of the phase, every participant's client work included; redis cpu: the server's "
           "CPU seconds in it, INFO used_cpu_user + used_cpu_sys; client cpu: this process's CPU seconds in it (every "
           "participant's refit code, hiredis, the threads), which a cluster spends on its own hosts; csw/who: context "
           "switches of this process per participant; p50/max ms: one participant's part, from its first store call "
           "to its last (queueing behind the other participants on these cores included); "
           "commands: Redis commands executed, INFO commandstats; MB: bytes into and out of Redis; RT: store round "
           "trips, one per plugin call; warm cycles are v >= 2; a plan reads %d sources: warm, %s, %s, and "
           "fences those sources)\n\n",
           s->o.reads, s->o.records_all ? "every source's record (--records all)" : "only their records",
           s->o.sums_transport ? "their checksums from their tables over the transport (none in the store)"
           : s->o.seg_share < 1 ? "a share of their checksum segments"
                                : "all their checksum segments");
    if (!rc)
        rc = ss_advert_round(s);
    if (!rc)
        rc = ss_replica_round(s, 15000000000ull);
    if (!rc)
        rc = ss_wake_latency(s);
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
