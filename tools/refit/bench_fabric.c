/* bench_fabric.c — the baselines of the fabric plugins in `refit bench
 * transport`:
 *   ucx: ucx_perftest (server + client on this host) with the same UCX
 *        settings (transport.ucx.env, else the environment) and size,
 *        -t ucp_get against our READ and -t ucp_put_bw against our WRITE;
 *   ofi: the ucx plugin on the same medium (libfabric tcp vs UCX_TLS=tcp,
 *        libfabric shm vs UCX shared memory), measured by bt_measure.
 * Rounds alternate our transfers with the baseline's so that a neighbour's
 * load hits both alike; medians and ratios are printed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_transport.h"
#include "refit/status.h"
#include "refit/transport.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double t[16];
    memcpy(t, v, sizeof(double) * (size_t)n);
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

/* transport.ucx.env entries go into the environment of ucx_perftest. */
static int env_put(void *arg, const char *k, const char *v)
{
    (void)arg;
    char name[256];
    snprintf(name, sizeof(name), "%s%s", strncmp(k, "UCX_", 4) ? "UCX_" : "", k);
    setenv(name, v, 1);
    return 0;
}

static int free_port(void)
{
    /* Random in the dynamic range; ucx_perftest reports a bind failure,
     * and the client retries below. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 20000 + (int)((ts.tv_nsec / 1000 + getpid()) % 30000);
}

#define PERFTEST_LIMIT_S 30

/* One ucx_perftest run (a server and a client process); *gbps in 1e9 B/s.
 * A run that cannot finish within PERFTEST_LIMIT_S (UCX 1.13's ucp_put_bw
 * over tcp moves ~27 MB/s) yields an upper bound and *bound = 1. */
static int perftest_run(const char *test, uint64_t size, long iters, double *gbps, int *bound)
{
    *bound = 0;
    int port = free_port();
    char ps[16], ss[32], ns[32], ws[32];
    snprintf(ps, sizeof(ps), "%d", port);
    snprintf(ss, sizeof(ss), "%llu", (unsigned long long)size);
    snprintf(ns, sizeof(ns), "%ld", iters);
    snprintf(ws, sizeof(ws), "%ld", iters / 10 > 0 ? iters / 10 : 1);
    pid_t srv = fork();
    if (srv < 0)
        return refit_error_set(REFIT_EIO, "fork: %s", strerror(errno));
    if (srv == 0) {
        int dn = open("/dev/null", 1);
        dup2(dn, 1);
        dup2(dn, 2);
        execlp("ucx_perftest", "ucx_perftest", "-p", ps, (char *)NULL);
        _exit(127);
    }
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "timeout %d ucx_perftest 127.0.0.1 -p %s -t %s -s %s -n %s -w %s 2>&1; "
             "echo \"exit $?\"", PERFTEST_LIMIT_S, ps, test, ss, ns, ws);
    int rc = REFIT_ECONN;
    char line[512], last[512] = "";
    /* The server has no readiness signal: the client retries a refusal. */
    for (int attempt = 0; attempt < 20 && rc; attempt++) {
        struct timespec d = {0, 100 * 1000 * 1000};
        nanosleep(&d, NULL);
        FILE *p = popen(cmd, "r");
        if (!p)
            break;
        while (fgets(line, sizeof(line), p)) {
            double bw;
            char tag[16];
            double f[5];
            int ex;
            if (sscanf(line, "%15s %lf %lf %lf %lf %lf %lf", tag, &f[0], &f[1], &f[2], &f[3], &f[4],
                       &bw) == 7 && !strcmp(tag, "Final:")) {
                *gbps = bw * 1048576.0 / 1e9; /* ucx_perftest's MB is 2^20 bytes */
                rc = 0;
            } else if (sscanf(line, "exit %d", &ex) == 1 && ex == 124 && rc) {
                /* Killed by timeout: not even warm-up + iterations fit. */
                *gbps = (double)size * (double)(iters + (iters / 10 > 0 ? iters / 10 : 1)) /
                        PERFTEST_LIMIT_S / 1e9;
                *bound = 1;
                rc = 0;
                attempt = 100;
            }
            snprintf(last, sizeof(last), "%s", line);
        }
        pclose(p);
    }
    kill(srv, SIGTERM);
    waitpid(srv, NULL, 0);
    if (rc)
        return refit_error_set(REFIT_ECONN, "ucx_perftest -t %s gave no result (is it installed?): %s",
                               test, last);
    return 0;
}

int bt_baseline_ucx(struct cli_common *cc, const struct bt_opts *o, const struct bt_result *ours,
                    struct bt_session *s)
{
    refit_config_map_each(cc->cfg, "transport.ucx.env", env_put, NULL);
    const char *tls = getenv("UCX_TLS");
    uint64_t size = ours->pts[ours->n - 1].size;
    /* Iterations for about min_time at our own speed, at least 3. */
    double g = ours->pts[ours->n - 1].gbps[0];
    long iters = (long)(o->min_time * g * 1e9 / (double)size) + 1;
    iters = iters < 3 ? 3 : iters > 100000 ? 100000 : iters;
    enum { R = 0, W, G, P, NCOL };
    double v[NCOL][16];
    int bound_g = 0, bound_p = 0, b;
    int rounds = o->rounds < 1 ? 1 : o->rounds > 16 ? 16 : o->rounds;
    for (int r = 0; r < rounds; r++) {
        double us;
        int rc = bt_session_time(s, REFIT_OP_READ, size, o->min_time, &v[R][r], &us);
        if (!rc)
            rc = bt_session_time(s, REFIT_OP_WRITE, size, o->min_time, &v[W][r], &us);
        if (!rc && !(rc = perftest_run("ucp_get", size, iters, &v[G][r], &b)))
            bound_g |= b;
        /* A bounded run would only repeat the bound: skip later ones. */
        if (!rc && bound_p)
            v[P][r] = v[P][0];
        else if (!rc && !(rc = perftest_run("ucp_put_bw", size, bound_p ? 1 : iters, &v[P][r], &b)))
            bound_p |= b;
        if (rc)
            return rc;
        printf("round %d: ucx READ %.3f, WRITE %.3f, ucx_perftest ucp_get %s%.3f, ucp_put_bw %s%.3f GB/s\n",
               r + 1, v[R][r], v[W][r], bound_g ? "< " : "", v[G][r], bound_p ? "< " : "", v[P][r]);
    }
    double mr = median(v[R], rounds), mw = median(v[W], rounds);
    double mg = median(v[G], rounds), mp = median(v[P], rounds);
    printf("\nbaseline: ucx_perftest, UCX_TLS=%s, %.0f MiB, %ld iterations, median of %d rounds: "
           "ucp_get %.3f GB/s, ucp_put_bw %.3f GB/s\n", tls ? tls : "(UCX default)",
           (double)size / 1048576.0, iters, rounds, mg, mp);
    printf("ucx plugin: READ %.3f GB/s, WRITE %.3f GB/s (medians)\n", mr, mw);
    printf("ratio READ  / ucp_get:    %s%.2fx   (target >= 0.95)\n", bound_g ? "> " : "", mr / mg);
    printf("ratio WRITE / ucp_put_bw: %s%.2fx   (target >= 0.95)%s\n", bound_p ? "> " : "", mw / mp,
           bound_p ? "  [ucp_put_bw did not finish within the time limit: its figure is an upper bound]"
                   : "");
    return 0;
}

/* The UCX medium that matches a libfabric provider. */
static const char *ucx_medium(const char *prov)
{
    if (!strcmp(prov, "shm"))
        return "posix,cma,self";
    if (!strcmp(prov, "tcp") || !strcmp(prov, "sockets"))
        return "tcp";
    return NULL; /* efa, verbs: UCX's own choice (rc/ud over the same NIC) */
}

int bt_baseline_ofi(struct cli_common *cc, const struct bt_opts *o, const struct bt_result *ours,
                    struct bt_session *s)
{
    const char *prov = "tcp";
    refit_config_str(cc->cfg, "transport.ofi.provider", &prov);
    const char *tls = ucx_medium(prov);
    /* The ucx plugin here and in its peer process reads these (the peer
     * inherits the environment); shared memory in UCX 1.13 has no peer
     * failure support, hence error handling none there. */
    if (tls && !refit_config_has(cc->cfg, "transport.ucx.env.UCX_TLS"))
        setenv("UCX_TLS", tls, 1);
    if (tls && !strcmp(prov, "shm"))
        setenv("REFIT_TRANSPORT_UCX_ERROR_HANDLING", "none", 1);
    uint64_t size = ours->pts[ours->n - 1].size;
    struct bt_opts uo = *o;
    uo.sizes = &size;
    uo.n_sizes = 1;
    uo.many_n = 0;
    struct bt_session *us = NULL;
    uo.keep = &us;
    struct bt_result ur;
    int rc = bt_measure(cc, &uo, "ucx", &ur);
    if (rc)
        return refit_error_push(rc, "ucx on the same medium (UCX_TLS=%s)", tls ? tls : "default");
    free(ur.pts);
    enum { R = 0, W, UR, UW, NCOL };
    double v[NCOL][16];
    int rounds = o->rounds < 1 ? 1 : o->rounds > 16 ? 16 : o->rounds;
    for (int r = 0; r < rounds && !rc; r++) {
        double t;
        rc = bt_session_time(s, REFIT_OP_READ, size, o->min_time, &v[R][r], &t);
        if (!rc)
            rc = bt_session_time(s, REFIT_OP_WRITE, size, o->min_time, &v[W][r], &t);
        if (!rc)
            rc = bt_session_time(us, REFIT_OP_READ, size, o->min_time, &v[UR][r], &t);
        if (!rc)
            rc = bt_session_time(us, REFIT_OP_WRITE, size, o->min_time, &v[UW][r], &t);
        if (!rc)
            printf("round %d: ofi(%s) READ %.3f, WRITE %.3f, ucx(%s) READ %.3f, WRITE %.3f GB/s\n", r + 1,
                   prov, v[R][r], v[W][r], tls ? tls : "default", v[UR][r], v[UW][r]);
    }
    bt_session_close(us);
    if (rc)
        return rc;
    double mr = median(v[R], rounds), mw = median(v[W], rounds);
    double ur_ = median(v[UR], rounds), uw = median(v[UW], rounds);
    printf("\nbaseline: ucx plugin on the same medium (UCX_TLS=%s), %.0f MiB, median of %d rounds: "
           "READ %.3f GB/s, WRITE %.3f GB/s\n", tls ? tls : "default", (double)size / 1048576.0, rounds,
           ur_, uw);
    printf("ofi(%s): READ %.3f GB/s, WRITE %.3f GB/s (medians)\n", prov, mr, mw);
    printf("ratio READ  / ucx: %.2fx   (target >= 0.90)\n", mr / ur_);
    printf("ratio WRITE / ucx: %.2fx   (target >= 0.90)\n", mw / uw);
    return 0;
}
