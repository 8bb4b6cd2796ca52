/* bench_transport.c — `refit bench transport --plugin P`: READ and WRITE
 * between two processes on this host (this one and a peer started from the
 * same executable), sizes 4 KiB .. 1 GiB, the many-descriptors case against
 * one READ of the same total, and the plugin's baseline measured in the
 * same run with the ratio printed (tcp: iperf3 over loopback). */
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_transport.h"
#include "cli_opts.h"
#include "refit/status.h"
#include "refit/transport_core.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void hex_print(FILE *f, const char *tag, const void *p, size_t n)
{
    fprintf(f, "%s ", tag);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%02x", ((const uint8_t *)p)[i]);
    fprintf(f, "\n");
    fflush(f);
}

static size_t hex_parse(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    unsigned v;
    while (n < cap && sscanf(s, "%2x", &v) == 1) {
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static void *map_touched(uint64_t n)
{
    void *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    memset(m, 0x5a, n); /* fault the pages in before timing */
    return m;
}

/* The peer: register one region, print address and key, serve until stdin
 * closes. */
static int peer_main(struct cli_common *cc, const char *plugin, uint64_t size)
{
    struct refit_transport_open op = {.size = sizeof(op), .plugin = plugin, .name = "bench-peer", .cuda_device = -1};
    refit_transport_t *t = NULL;
    refit_tp_region_t *r = NULL;
    void *addr = NULL, *key = NULL;
    size_t al, kl;
    void *mem = map_touched(size);
    int rc = mem ? refit_transport_init(cc->loader, cc->cfg, &op, &t)
                 : refit_error_set(REFIT_ENOMEM, "peer: %llu bytes", (unsigned long long)size);
    if (!rc)
        rc = refit_transport_reg(t, mem, size, REFIT_MEM_HOST, &r);
    if (!rc)
        rc = refit_transport_address_get(t, &addr, &al);
    if (!rc)
        rc = refit_transport_pack(t, r, &key, &kl);
    if (rc) {
        printf("err %s\n", refit_error_message());
        fflush(stdout);
    } else {
        hex_print(stdout, "addr", addr, al);
        hex_print(stdout, "rkey", key, kl);
        char buf[64];
        while (fgets(buf, sizeof(buf), stdin))
            ;
    }
    free(addr);
    free(key);
    refit_transport_dereg(t, r);
    refit_transport_fini(t);
    if (mem)
        munmap(mem, size);
    return rc ? 1 : 0;
}

struct peer_proc {
    pid_t pid;
    FILE *to, *from;
};

static int peer_spawn(const struct bt_opts *o, const char *plugin, uint64_t size, struct peer_proc *p)
{
    int in[2], out[2];
    if (pipe(in) || pipe(out))
        return refit_error_set(REFIT_EIO, "pipe: %s", strerror(errno));
    char sz[32];
    snprintf(sz, sizeof(sz), "%llu", (unsigned long long)size);
    p->pid = fork();
    if (p->pid < 0)
        return refit_error_set(REFIT_EIO, "fork: %s", strerror(errno));
    if (p->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        char **av = calloc((size_t)o->n_peer_args + 10, sizeof(*av));
        int n = 0;
        av[n++] = "refit";
        av[n++] = "transport";
        av[n++] = "--peer";
        av[n++] = sz;
        av[n++] = "--plugin";
        av[n++] = (char *)plugin;
        for (int i = 0; i < o->n_peer_args; i++)
            av[n++] = o->peer_args[i];
        av[n] = NULL;
        /* Re-enter `refit bench` in a fresh process: no plugin state or
         * threads of this one leak into the peer. */
        char **full = calloc((size_t)n + 2, sizeof(*full));
        full[0] = "refit";
        full[1] = "bench";
        memcpy(full + 2, av + 1, sizeof(*av) * (size_t)n);
        execv("/proc/self/exe", full);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->to = fdopen(in[1], "w");
    p->from = fdopen(out[0], "r");
    return 0;
}

static void peer_end(struct peer_proc *p)
{
    if (p->pid <= 0)
        return;
    fclose(p->to);
    fclose(p->from);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

static int time_xfer(refit_transport_t *t, refit_tp_peer_t *peer, const struct refit_tp_desc *d,
                     size_t n, double min_time, uint64_t bytes, double *gbps, double *us)
{
    int rc = refit_transport_xfer(t, peer, d, n, -1); /* warm-up: connections, pages, caches */
    if (rc)
        return rc;
    uint64_t iters = 0;
    double t0 = now_s(), el;
    do {
        rc = refit_transport_xfer(t, peer, d, n, -1);
        if (rc)
            return rc;
        iters++;
        el = now_s() - t0;
    } while (el < min_time);
    *gbps = (double)bytes * (double)iters / el / 1e9;
    *us = el / (double)iters * 1e6;
    return 0;
}

struct bt_session {
    struct peer_proc pp;
    refit_transport_t *t;
    refit_tp_peer_t *peer;
    refit_tp_rkey_t *rk;
    refit_tp_region_t *lr;
    void *mem;
    uint64_t size;
};

void bt_session_close(struct bt_session *s)
{
    if (!s)
        return;
    refit_transport_dereg(s->t, s->lr);
    refit_transport_release(s->t, s->rk);
    refit_transport_disconnect(s->t, s->peer);
    refit_transport_fini(s->t);
    if (s->mem)
        munmap(s->mem, s->size);
    peer_end(&s->pp);
    free(s);
}

int bt_session_open(struct cli_common *cc, const struct bt_opts *o, const char *plugin, uint64_t size,
                    struct bt_session **out)
{
    struct bt_session *s = calloc(1, sizeof(*s));
    char *line = malloc(1 << 16);
    uint8_t *blob = malloc(1 << 15);
    int rc = 0;
    if (!s || !line || !blob) {
        rc = refit_error_set(REFIT_ENOMEM, "bench session");
        goto out;
    }
    s->size = size;
    if ((rc = peer_spawn(o, plugin, size, &s->pp)))
        goto out;
    struct refit_transport_open op = {.size = sizeof(op), .plugin = plugin, .name = "bench", .cuda_device = -1};
    if (!fgets(line, 1 << 16, s->pp.from) || strncmp(line, "addr ", 5)) {
        rc = refit_error_set(REFIT_ECONN, "bench peer did not start: %s", line);
        goto out;
    }
    size_t al = hex_parse(line + 5, blob, 1 << 15);
    if ((rc = refit_transport_init(cc->loader, cc->cfg, &op, &s->t)) ||
        (rc = refit_transport_connect(s->t, blob, al, "bench-peer", &s->peer)))
        goto out;
    if (!fgets(line, 1 << 16, s->pp.from) || strncmp(line, "rkey ", 5)) {
        rc = refit_error_set(REFIT_EPROTO, "bench peer sent no key");
        goto out;
    }
    if ((rc = refit_transport_unpack(s->t, s->peer, blob, hex_parse(line + 5, blob, 1 << 15), &s->rk)))
        goto out;
    if (!(s->mem = map_touched(size))) {
        rc = refit_error_set(REFIT_ENOMEM, "%llu bytes", (unsigned long long)size);
        goto out;
    }
    rc = refit_transport_reg(s->t, s->mem, size, REFIT_MEM_HOST, &s->lr);
out:
    free(line);
    free(blob);
    if (rc) {
        bt_session_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

int bt_session_time(struct bt_session *s, uint32_t op, uint64_t size, double min_time, double *gbps,
                    double *us)
{
    struct refit_tp_desc one = {op, s->lr, 0, s->rk, 0, size};
    return time_xfer(s->t, s->peer, &one, 1, min_time, size, gbps, us);
}

int bt_measure(struct cli_common *cc, const struct bt_opts *o, const char *plugin, struct bt_result *out)
{
    if (!plugin)
        plugin = o->plugin;
    uint64_t maxsz = (uint64_t)o->many_n * o->many_len;
    for (size_t i = 0; i < o->n_sizes; i++)
        if (o->sizes[i] > maxsz)
            maxsz = o->sizes[i];
    memset(out, 0, sizeof(*out));
    struct bt_session *s = NULL;
    struct refit_tp_desc *d = NULL;
    int rc = bt_session_open(cc, o, plugin, maxsz, &s);
    if (rc)
        return rc;
    out->pts = calloc(o->n_sizes, sizeof(*out->pts));
    d = calloc((size_t)o->many_n + 1, sizeof(*d));
    if (!out->pts || !d) {
        rc = refit_error_set(REFIT_ENOMEM, "results");
        goto out;
    }
    out->n = o->n_sizes;
    for (size_t i = 0; i < o->n_sizes; i++) {
        out->pts[i].size = o->sizes[i];
        for (int k = 0; k < 2; k++)
            if ((rc = bt_session_time(s, k ? REFIT_OP_WRITE : REFIT_OP_READ, o->sizes[i], o->min_time,
                                      &out->pts[i].gbps[k], &out->pts[i].us_op[k])))
                goto out;
    }
    if (o->many_n > 0) {
        for (int i = 0; i < o->many_n; i++)
            d[i] = (struct refit_tp_desc){REFIT_OP_READ, s->lr, (uint64_t)i * o->many_len, s->rk,
                                          (uint64_t)i * o->many_len, o->many_len};
        double us;
        uint64_t total = (uint64_t)o->many_n * o->many_len;
        rc = time_xfer(s->t, s->peer, d, (size_t)o->many_n, o->min_time, total, &out->many_gbps, &us);
        if (!rc)
            rc = bt_session_time(s, REFIT_OP_READ, total, o->min_time, &out->one_gbps, &us);
    }
    if (!rc && o->keep) {
        *o->keep = s;
        s = NULL;
    }
out:
    free(d);
    bt_session_close(s);
    if (rc) {
        free(out->pts);
        out->pts = NULL;
    }
    return rc;
}

/* ---- baselines ---- */

/* iperf3 -s -1 and iperf3 -c -P streams over loopback, JSON output. */
static int iperf3_run(int seconds, int streams, double *gbps)
{
    int port = cli_free_port();
    if (port < 0)
        return refit_error_set(REFIT_EIO, "iperf3: no free port");
    int out[2];
    if (pipe(out))
        return refit_error_set(REFIT_EIO, "pipe: %s", strerror(errno));
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    pid_t srv = fork();
    if (srv == 0) {
        dup2(out[1], 1);
        dup2(out[1], 2);
        close(out[0]);
        execlp("iperf3", "iperf3", "-s", "-1", "--forceflush", "-B", "127.0.0.1", "-p", ps, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    char seen[4096];
    size_t ns = 0;
    int ready = 0;
    struct pollfd pf = {.fd = out[0], .events = POLLIN};
    /* The server says "Server listening on <port>" once it accepts (its
     * output is flushed per line with --forceflush). */
    while (!ready && ns + 1 < sizeof(seen) && poll(&pf, 1, 10000) > 0) {
        ssize_t k = read(out[0], seen + ns, sizeof(seen) - 1 - ns);
        if (k <= 0)
            break;
        ns += (size_t)k;
        seen[ns] = 0;
        ready = strstr(seen, "listening") != NULL;
    }
    if (!ready) {
        kill(srv, SIGKILL);
        waitpid(srv, NULL, 0);
        close(out[0]);
        return refit_error_set(REFIT_ENOENT, "iperf3 server did not start (is iperf3 installed?)");
    }
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "iperf3 -c 127.0.0.1 -p %d -t %d -P %d -J 2>&1", port, seconds, streams);
    FILE *c = popen(cmd, "r");
    size_t cap = 1 << 20, n = 0;
    char *js = malloc(cap);
    while (c && js && n + 1 < cap) {
        size_t k = fread(js + n, 1, cap - 1 - n, c);
        if (!k)
            break;
        n += k;
    }
    if (c)
        pclose(c);
    kill(srv, SIGTERM); /* -1 exits on its own; this only covers a failed client */
    waitpid(srv, NULL, 0);
    close(out[0]);
    if (!js)
        return refit_error_set(REFIT_ENOMEM, "iperf3 output");
    js[n] = 0;
    json_error_t je;
    json_t *root = json_loads(js, 0, &je);
    json_t *bps = json_object_get(json_object_get(json_object_get(root, "end"), "sum_received"),
                                  "bits_per_second");
    int rc = 0;
    if (!json_is_number(bps))
        rc = refit_error_set(REFIT_EPROTO, "iperf3 -J gave no end.sum_received.bits_per_second: %.200s", js);
    else
        *gbps = json_number_value(bps) / 8 / 1e9;
    json_decref(root);
    free(js);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Rounds alternate our largest READ and WRITE with iperf3 (one stream and
 * as many streams as the plugin uses), so a neighbour's load hits both
 * sides alike; the medians and their ratios are printed. */
static int baseline_iperf3(struct cli_common *cc, const struct bt_opts *o, const struct bt_result *ours,
                           struct bt_session *s)
{
    int64_t streams = 1;
    if (refit_config_int(cc->cfg, "transport.tcp.streams", &streams))
        streams = 1;
    uint64_t size = ours->pts[ours->n - 1].size;
    enum { R = 0, W, I1, IN, NCOL };
    double v[NCOL][16];
    int rounds = o->rounds < 1 ? 1 : o->rounds > 16 ? 16 : o->rounds;
    for (int r = 0; r < rounds; r++) {
        double us;
        int rc = bt_session_time(s, REFIT_OP_READ, size, o->min_time, &v[R][r], &us);
        if (!rc)
            rc = bt_session_time(s, REFIT_OP_WRITE, size, o->min_time, &v[W][r], &us);
        if (!rc)
            rc = iperf3_run(2, 1, &v[I1][r]);
        if (!rc)
            rc = streams > 1 ? iperf3_run(2, (int)streams, &v[IN][r]) : (v[IN][r] = v[I1][r], 0);
        if (rc)
            return rc;
        printf("round %d: %s READ %.3f, WRITE %.3f, iperf3 -P 1 %.3f, -P %lld %.3f GB/s\n", r + 1,
               o->plugin, v[R][r], v[W][r], v[I1][r], (long long)streams, v[IN][r]);
    }
    double mr = median(v[R], rounds), mw = median(v[W], rounds);
    double m1 = median(v[I1], rounds), mn = median(v[IN], rounds);
    char sz[32];
    snprintf(sz, sizeof(sz), "%.0f MiB", (double)size / 1048576.0);
    printf("\nbaseline: iperf3 over loopback, same run, median of %d rounds: %.3f GB/s (1 stream), "
           "%.3f GB/s (%lld streams)\n", rounds, m1, mn, (long long)streams);
    printf("%s %s: READ %.3f GB/s, WRITE %.3f GB/s (medians, %lld streams)\n", o->plugin, sz, mr, mw,
           (long long)streams);
    printf("ratio READ  / iperf3 -P 1: %.2fx   / iperf3 -P %lld: %.2fx   (target >= 0.90)\n", mr / m1,
           (long long)streams, mr / mn);
    printf("ratio WRITE / iperf3 -P 1: %.2fx   / iperf3 -P %lld: %.2fx   (target >= 0.90)\n", mw / m1,
           (long long)streams, mw / mn);
    return 0;
}

/* One entry per plugin; fabric plugins add theirs (ucx: ucx_perftest with
 * the same UCX_TLS and size; ofi: ucx on the same medium via bt_measure). */
static const struct bt_baseline baselines[] = {
    {"tcp", "iperf3 over loopback", baseline_iperf3},
    {"ucx", "ucx_perftest ucp_get / ucp_put_bw, same UCX settings and size", bt_baseline_ucx},
    {"ofi", "the ucx plugin on the same medium", bt_baseline_ofi},
};

/* ---- command ---- */

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    double v = strtod(s, &end);
    uint64_t m = 1;
    if (*end == 'K' || *end == 'k')
        m = 1024;
    else if (*end == 'M' || *end == 'm')
        m = 1024 * 1024;
    else if (*end == 'G' || *end == 'g')
        m = 1024ull * 1024 * 1024;
    else if (*end)
        return -1;
    if (v <= 0)
        return -1;
    *out = (uint64_t)(v * (double)m);
    return 0;
}

static void fmt_size(uint64_t n, char *buf, size_t cap)
{
    if (n >= (1ull << 30) && n % (1ull << 30) == 0)
        snprintf(buf, cap, "%llu GiB", (unsigned long long)(n >> 30));
    else if (n >= (1u << 20) && n % (1u << 20) == 0)
        snprintf(buf, cap, "%llu MiB", (unsigned long long)(n >> 20));
    else if (n >= 1024 && n % 1024 == 0)
        snprintf(buf, cap, "%llu KiB", (unsigned long long)(n >> 10));
    else
        snprintf(buf, cap, "%llu B", (unsigned long long)n);
}

/* The command line, before the sizes and the peer's arguments are made
 * from it. */
struct bt_cli {
    const char *cfg, *plugin, *sizes, *peer;
    double min_time;
    int rounds, many, no_baseline;
    struct cli_list set;
};

#define AT(f) CLI_AT(struct bt_cli, f)
static const struct cli_opt bt_table[] = {
    CLI_COMMON(struct bt_cli, cfg, set),
    {"--plugin", NULL, CLI_STR, "P", 0, 0, NULL, NULL, AT(plugin), "the transport plugin (default transport.plugin)"},
    {"--sizes", NULL, CLI_STR, "LIST", 0, 0, NULL, "4K,64K,1M,16M,256M,1G", AT(sizes), "transfer sizes, comma-separated"},
    {"--time", NULL, CLI_DBL, "SEC", 0, 0, NULL, "0.5", AT(min_time), "seconds per figure at least"},
    {"--many", NULL, CLI_INT, "N", 0, 100000000, NULL, "10000", AT(many),
     "4 KiB READs in one post (0: skip that case)"},
    {"--rounds", NULL, CLI_INT, "N", 0, 100000, NULL, "3", AT(rounds), "baseline rounds alternating with our largest size"},
    {"--no-baseline", NULL, CLI_FLAG, NULL, 0, 0, NULL, NULL, AT(no_baseline), "skip the plugin's baseline"},
    {"--peer", NULL, CLI_STR, "SIZE", 0, 0, NULL, NULL, AT(peer), "(internal) run as the peer process of SIZE bytes"},
};
#undef AT

static const struct cli_spec bt_spec = {
    .cmd = "bench transport",
    .about = "Two processes on this host: READ and WRITE of each size, N x 4 KiB READs in one post\n"
             "against one READ of the same total, then the plugin's baseline in the same run (tcp:\n"
             "iperf3 over loopback), alternating with our largest size for --rounds rounds, and the\n"
             "ratio of the medians.  GB/s are 1e9 bytes per second.  The plugin's options come from\n"
             "the configuration (--set transport.tcp.streams=4).\n",
    .opts = bt_table,
    .n_opts = CLI_N(bt_table),
};

/* "4K,64K,1M" into sizes[0..*n). */
static int parse_sizes(const char *list, uint64_t *sizes, size_t max, size_t *n)
{
    char *s = strdup(list), *save = NULL;
    int rc = s ? 0 : REFIT_ENOMEM;
    *n = 0;
    for (char *tok = s ? strtok_r(s, ",", &save) : NULL; !rc && tok && *n < max; tok = strtok_r(NULL, ",", &save))
        if (parse_size(tok, &sizes[(*n)++]))
            rc = refit_error_set(REFIT_EINVAL, "--sizes: bad size '%s'", tok);
    free(s);
    return rc;
}

/* The common options again, for the peer process: its configuration is
 * ours. */
static char **peer_argv(int argc, char **argv, const struct bt_cli *c, int *n)
{
    char **pa = calloc(2 * c->set.n + (size_t)argc + 3, sizeof(*pa));
    *n = 0;
    if (!pa)
        return NULL;
    if (c->cfg) {
        pa[(*n)++] = "--config";
        pa[(*n)++] = (char *)c->cfg;
    }
    for (size_t i = 0; i < c->set.n; i++) {
        pa[(*n)++] = "--set";
        pa[(*n)++] = (char *)c->set.v[i];
    }
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--log=", 6))
            pa[(*n)++] = argv[i];
        else if (!strcmp(argv[i], "--log") && i + 1 < argc) {
            pa[(*n)++] = argv[i];
            pa[(*n)++] = argv[++i];
        }
    return pa;
}

int bench_transport(int argc, char **argv)
{
    const char *set[64];
    struct bt_cli c = {.set = {.v = set, .max = 64}};
    int rc = cli_opts_parse(&bt_spec, argc, argv, &c, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    struct cli_common cc = {0};
    uint64_t sizes[32], peer_size = 0;
    size_t n_sizes = 0;
    if (!rc && c.peer && parse_size(c.peer, &peer_size))
        rc = refit_error_set(REFIT_EINVAL, "--peer: bad size '%s'", c.peer);
    if (!rc)
        rc = parse_sizes(c.sizes, sizes, 32, &n_sizes);
    if (!rc)
        rc = cli_config_from(&cc, c.cfg, &c.set);
    int n_peer = 0;
    char **peer_args = rc ? NULL : peer_argv(argc, argv, &c, &n_peer);
    if (!rc && !peer_args)
        rc = REFIT_ENOMEM;
    if (rc) {
        cli_common_close(&cc);
        return cli_fail("bench transport", rc);
    }
    struct bt_opts o = {.plugin = c.plugin, .min_time = c.min_time, .many_n = c.many, .many_len = 4096,
                        .rounds = c.rounds, .peer_args = peer_args, .n_peer_args = n_peer};
    int baseline = !c.no_baseline;
    if (!o.plugin && (rc = refit_config_str(cc.cfg, "transport.plugin", &o.plugin))) {
        cli_common_close(&cc);
        free(peer_args);
        return cli_fail("bench transport", rc);
    }
    if (peer_size) {
        rc = peer_main(&cc, o.plugin, peer_size);
        cli_common_close(&cc);
        free(peer_args);
        return rc;
    }
    o.sizes = sizes;
    o.n_sizes = n_sizes;
    signal(SIGPIPE, SIG_IGN);
    printf("refit bench transport: plugin %s, two processes on this host, >= %.1f s per figure\n",
           o.plugin, o.min_time);
    struct bt_result res;
    struct bt_session *sess = NULL;
    o.keep = &sess; /* the baseline interleaves rounds with our own transfers */
    rc = bt_measure(&cc, &o, NULL, &res);
    if (rc) {
        cli_common_close(&cc);
        free(peer_args);
        return cli_fail("bench transport", rc);
    }
    printf("\n%-10s %12s %12s %12s %12s\n", "size", "READ GB/s", "WRITE GB/s", "READ us/op", "WRITE us/op");
    for (size_t i = 0; i < res.n; i++) {
        char s[32];
        fmt_size(res.pts[i].size, s, sizeof(s));
        printf("%-10s %12.3f %12.3f %12.1f %12.1f\n", s, res.pts[i].gbps[0], res.pts[i].gbps[1],
               res.pts[i].us_op[0], res.pts[i].us_op[1]);
    }
    if (o.many_n > 0) {
        char s[32];
        fmt_size(o.many_len, s, sizeof(s));
        printf("\nmany descriptors: %d x %s READs in one post: %.3f GB/s; one READ of the same %.1f MB: "
               "%.3f GB/s; ratio %.2fx (target >= 0.50)\n", o.many_n, s, res.many_gbps,
               (double)o.many_n * (double)o.many_len / 1e6, res.one_gbps, res.many_gbps / res.one_gbps);
    }
    int found = 0;
    for (size_t i = 0; baseline && i < sizeof(baselines) / sizeof(baselines[0]); i++)
        if (!strcmp(baselines[i].plugin, o.plugin)) {
            found = 1;
            rc = baselines[i].fn(&cc, &o, &res, sess);
            if (rc) {
                cli_fail("bench transport: baseline", rc);
                rc = 0; /* our own figures stand; the baseline's failure is reported */
            }
        }
    if (baseline && !found)
        printf("\nno baseline is defined for plugin %s\n", o.plugin);
    free(res.pts);
    bt_session_close(sess);
    cli_common_close(&cc);
    free(peer_args);
    return 0;
}
