/* bench_cluster.c — `refit bench cluster`: an emulated cluster on this
 * machine, measured beside `refit sim`'s prediction for it.
 *
 * Every trainer rank and every engine rank runs as a real `refit publish`
 * / `refit pull` process in a network namespace of its own whose only NIC
 * is a veth shaped to --nic-mbit each way (tools/dev/cluster/netns.sh: a
 * bridge in a switch namespace, tbf on both ends of each veth), with a
 * redis-server in a namespace of its own as the store and the tcp
 * transport bound to each host's address (its NIC).  It runs the job
 * without fan-out (the baseline) and, with --fanout K, again with tree
 * fan-out; then the same shapes, rates and policy through the simulator,
 * its efficiency calibrated by one pull between two hosts of the same
 * network.  Per run it prints the measured cycle (warm cycles: first
 * transfer start to last transfer end, from the receivers' stats; push:
 * the longest publish) beside the prediction.
 *
 * Needs root (network namespaces, tc); without it, or without ip/tc, it
 * says why and exits with 77 (skipped).  Namespaces, processes and files
 * are removed at exit, on error and on SIGINT/SIGTERM. */
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "cli_opts.h"
#include "refit/status.h"
#include "sim.h"

extern char **environ;

#define SKIP 77
#define MAX_PROCS 128

struct cluster {
    const char *model, *mode, *fp8, *keep, *transport;
    int layers, vocab, t_tp, t_ep, e_tp, e_ep, engines, cycles, fanout, rate_mbit, delay_us;
    double efficiency; /* 0: calibrate */
    char self[PATH_MAX], script[PATH_MAX], dir[PATH_MAX], ckpt[PATH_MAX + 8], prefix[32];
    pid_t redis;
};

/* What the signal handler and atexit must undo. */
static struct cluster *g_cl;
static pid_t g_pids[MAX_PROCS];
static int g_np;
static volatile sig_atomic_t g_stop;

static void teardown(void)
{
    if (!g_cl)
        return;
    for (int i = 0; i < g_np; i++)
        if (g_pids[i] > 0)
            kill(g_pids[i], SIGKILL);
    if (g_cl->redis > 0)
        kill(g_cl->redis, SIGKILL);
    for (int i = 0; i < g_np; i++)
        if (g_pids[i] > 0)
            waitpid(g_pids[i], NULL, 0);
    if (g_cl->redis > 0)
        waitpid(g_cl->redis, NULL, 0);
    g_np = 0;
    g_cl->redis = 0;
    if (g_cl->prefix[0]) {
        char *av[] = {"bash", g_cl->script, "down", g_cl->prefix, NULL};
        pid_t p;
        if (!posix_spawnp(&p, "bash", NULL, NULL, av, environ))
            waitpid(p, NULL, 0);
        g_cl->prefix[0] = 0;
    }
    if (g_cl->dir[0] && !g_cl->keep) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_cl->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "refit bench cluster: could not remove %s\n", g_cl->dir);
        g_cl->dir[0] = 0;
    }
}

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* The options: struct cluster's knobs and the two layouts. */
struct cluster_opts {
    struct cluster c;
    const char *trainer, *engine;
};

#define AT(f) CLI_AT(struct cluster_opts, f)
static const struct cli_opt cluster_table[] = {
    {"--model", NULL, CLI_STR, "NAME", 0, 0, NULL, NULL, AT(c.model), "qwen3, qwen3_moe or a model YAML (default qwen3)"},
    {"--layers", NULL, CLI_INT, "L", 1, 1000, NULL, NULL, AT(c.layers), "layers of the model (default 2)"},
    {"--vocab", NULL, CLI_INT, "V", 64, 10000000, NULL, NULL, AT(c.vocab), "vocabulary of the model (default 8000)"},
    {"--trainer", NULL, CLI_STR, "tp=N[,ep=M]", 0, 0, NULL, NULL, AT(trainer), "the trainer's parallelism (default tp=1)"},
    {"--engine", NULL, CLI_STR, "tp=N[,ep=N]", 0, 0, NULL, NULL, AT(engine), "each engine's parallelism (default tp=1)"},
    {"--engines", NULL, CLI_INT, "E", 1, 64, NULL, NULL, AT(c.engines), "inference engines (default 8)"},
    {"--nic-mbit", NULL, CLI_INT, "R", 10, 100000, NULL, NULL, AT(c.rate_mbit), "each NIC's rate each way (default 1000)"},
    {"--delay-us", NULL, CLI_INT, "D", 0, 100000, NULL, NULL, AT(c.delay_us), "each NIC's added delay"},
    {"--cycles", NULL, CLI_INT, "K", 2, 64, NULL, NULL, AT(c.cycles), "refit cycles (default 3)"},
    {"--mode", NULL, CLI_STR, "MODE", 0, 0, NULL, NULL, AT(c.mode), "pull or push (default pull)"},
    {"--fp8", NULL, CLI_STR, "RULE", 0, 0, NULL, NULL, AT(c.fp8), "off or trainer (default off)"},
    {"--fanout", NULL, CLI_INT, "K", 0, 64, NULL, NULL, AT(c.fanout), "also run with tree fan-out, K pullers a source"},
    {"--efficiency", NULL, CLI_DBL, "X", 0, 0, NULL, NULL, AT(c.efficiency),
     "the sim's link efficiency in (0, 1] (default: calibrated by one pull between two hosts)"},
    {"--keep", NULL, CLI_STR, "DIR", 0, 0, NULL, NULL, AT(c.keep), "work in DIR and keep it"},
    {"--transport", NULL, CLI_STR, "NAME", 0, 0, NULL, NULL, AT(c.transport), "tcp, ucx or ofi (default tcp)"},
};
#undef AT

static const struct cli_spec cluster_spec = {
    .cmd = "bench cluster",
    .about = "An emulated cluster on this machine (root): each trainer and engine rank a process in a\n"
             "network namespace with one veth NIC shaped to R Mbit/s each way, a Redis in its own\n"
             "namespace, refit over tcp bound to each host's NIC (ucx, ofi: over tcp on eth0).\n"
             "Runs the job (default: the qwen3 demo model with 2 layers and an 8000 vocabulary, trainer\n"
             "tp 1, 8 engines of tp 1, 3 cycles) without fan-out and, with --fanout K, with tree fan-out,\n"
             "and compares the measured warm cycles with `refit sim` for the same shapes and rates.\n"
             "Without root: exit 77.\n",
    .opts = cluster_table,
    .n_opts = CLI_N(cluster_table),
};

/* ------------------------------------------------------------------ */
/* Processes */

static int spawn_in(struct cluster *c, int host, const char *bind, char *const *args, int quiet, pid_t *out)
{
    char ns[64], env_bind[64];
    snprintf(ns, sizeof(ns), "%s-h%d", c->prefix, host);
    snprintf(env_bind, sizeof(env_bind), "REFIT_TRANSPORT_TCP_BIND=%s", bind);
    char *av[48] = {"ip", "netns", "exec", ns, "env", env_bind};
    int k = 6;
    for (int i = 0; args[i] && k < 47; i++)
        av[k++] = args[i];
    av[k] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (quiet)
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    int e = posix_spawnp(out, "ip", &fa, NULL, av, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e)
        return refit_error_set(REFIT_EIO, "starting %s in %s: %s", args[0], ns, strerror(e));
    if (g_np < MAX_PROCS)
        g_pids[g_np++] = *out;
    return 0;
}

static int run_tool(char *const *av, const char *what)
{
    pid_t p;
    int e = posix_spawnp(&p, av[0], NULL, NULL, av, environ), st = 0;
    if (e)
        return refit_error_set(REFIT_EIO, "%s: cannot start %s: %s", what, av[0], strerror(e));
    while (waitpid(p, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st))
        return refit_error_set(REFIT_EIO, "%s failed (exit status %d)", what, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}

/* Wait for every rank; the first failure stops the others. */
static int wait_all(void)
{
    int rc = 0;
    for (int i = 0; i < g_np; i++) {
        int st = 0;
        while (waitpid(g_pids[i], &st, 0) < 0) {
            if (errno != EINTR || g_stop)
                return refit_error_set(REFIT_ECANCELED, "interrupted");
        }
        g_pids[i] = 0;
        if (!rc && (!WIFEXITED(st) || WEXITSTATUS(st))) {
            rc = refit_error_set(REFIT_EPLUGIN, "a rank of the emulated cluster failed (%s %d; its message is above)",
                                 WIFSIGNALED(st) ? "signal" : "exit status",
                                 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
            for (int j = i + 1; j < g_np; j++)
                if (g_pids[j] > 0)
                    kill(g_pids[j], SIGTERM);
        }
    }
    g_np = 0;
    return rc;
}

static int start_redis(struct cluster *c)
{
    char ns[64];
    snprintf(ns, sizeof(ns), "%s-h0", c->prefix);
    char *av[] = {"ip", "netns", "exec", ns, "redis-server", "--bind", "10.77.0.1", "--port", "6379", "--save", "",
                  "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning", NULL};
    char log[PATH_MAX + 16];
    snprintf(log, sizeof(log), "%s/redis.log", c->dir);
    posix_spawn_file_actions_t rfa;
    posix_spawn_file_actions_init(&rfa);
    posix_spawn_file_actions_addopen(&rfa, STDOUT_FILENO, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&rfa, STDOUT_FILENO, STDERR_FILENO);
    int e = posix_spawnp(&c->redis, "ip", &rfa, NULL, av, environ);
    posix_spawn_file_actions_destroy(&rfa);
    if (e)
        return refit_error_set(REFIT_EIO, "starting redis-server: %s", strerror(e));
    /* Ready when it answers. */
    char *ping[] = {"ip", "netns", "exec", ns, "redis-cli", "-h", "10.77.0.1", "ping", NULL};
    for (int i = 0; i < 50; i++) {
        usleep(100000);
        pid_t p;
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
        int st = 1;
        if (!posix_spawnp(&p, "ip", &fa, NULL, ping, environ))
            waitpid(p, &st, 0);
        posix_spawn_file_actions_destroy(&fa);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            return 0;
    }
    return refit_error_set(REFIT_ECONN, "redis-server in %s did not answer within 5 s", ns);
}

/* ------------------------------------------------------------------ */
/* One run of the job */

/* UCX and libfabric over tcp through each host's only NIC. */
static void transport_args(const struct cluster *c, char **av, int k)
{
    if (!strcmp(c->transport, "ucx")) {
        av[k++] = "--set";
        av[k++] = "transport.ucx.env.UCX_TLS=tcp";
        av[k++] = "--set";
        av[k++] = "transport.ucx.env.UCX_NET_DEVICES=eth0";
    } else if (!strcmp(c->transport, "ofi")) {
        av[k++] = "--set";
        av[k++] = "transport.ofi.provider=tcp";
    }
    av[k] = NULL;
}

struct run {
    int t_tp, t_ep, e_tp, e_ep, engines, fanout, cycles;
    const char *mode;
    char stats[PATH_MAX + 32], pstats[PATH_MAX + 32];
    double span[64]; /* per version */
    double bytes_wire;
};

static int run_job(struct cluster *c, struct run *r, const char *tag)
{
    int n_tr = r->t_tp > r->t_ep ? r->t_tp : r->t_ep, n_rcv = r->engines * r->e_tp;
    char ns_env[64], rcv_env[32], fo_k[16], a_tp[16], a_ep[16], a_cyc[16], a_dtp[16], a_dep[16];
    snprintf(ns_env, sizeof(ns_env), "%s-%s", c->prefix, tag);
    snprintf(rcv_env, sizeof(rcv_env), "%d", n_rcv);
    snprintf(fo_k, sizeof(fo_k), "%d", r->fanout);
    setenv("REFIT_STORE_NAMESPACE", ns_env, 1);
    setenv("REFIT_REFIT_RECEIVERS", rcv_env, 1);
    setenv("REFIT_REFIT_MODE", r->mode, 1);
    setenv("REFIT_REFIT_FANOUT_REPUBLISH", r->fanout ? "true" : "false", 1);
    setenv("REFIT_REFIT_FANOUT_MAX_PULLERS_PER_SOURCE", fo_k, 1);
    snprintf(r->stats, sizeof(r->stats), "%s/%s.jsonl", c->dir, tag);
    snprintf(r->pstats, sizeof(r->pstats), "%s/%s-publish.jsonl", c->dir, tag);
    snprintf(a_tp, sizeof(a_tp), "%d", r->t_tp);
    snprintf(a_ep, sizeof(a_ep), "%d", r->t_ep);
    snprintf(a_cyc, sizeof(a_cyc), "%d", r->cycles);
    snprintf(a_dtp, sizeof(a_dtp), "%d", r->e_tp);
    snprintf(a_dep, sizeof(a_dep), "%d", r->e_ep > 1 ? r->e_ep : 1);
    int rc = 0;
    for (int t = 0; !rc && t < n_tr; t++) {
        char rank[16], id[32], ip[32];
        snprintf(rank, sizeof(rank), "%d", t);
        snprintf(id, sizeof(id), "trainer-%d", t);
        snprintf(ip, sizeof(ip), "10.77.0.%d", 2 + t);
        char *av[32] = {c->self, "publish", "--config", "configs/clusters/local.yaml", "--hf", c->ckpt, "--tp", a_tp,
                        "--ep", a_ep, "--rank", rank, "--cycles", a_cyc, "--id", id, "--stats", r->pstats, NULL};
        transport_args(c, av, 18);
        pid_t p;
        rc = spawn_in(c, 1 + t, ip, av, 1, &p);
    }
    for (int q = 0; !rc && q < n_rcv; q++) {
        char rank[16], id[32], ip[32];
        snprintf(rank, sizeof(rank), "%d", q % r->e_tp);
        snprintf(id, sizeof(id), "engine-%d-%d", q / r->e_tp, q % r->e_tp);
        snprintf(ip, sizeof(ip), "10.77.0.%d", 2 + n_tr + q);
        char *av[40] = {c->self, "pull", "--config", "configs/clusters/local.yaml", "--hf", c->ckpt, "--tp", a_dtp,
                        "--rank", rank, "--ep", a_dep, "--cycles", a_cyc, "--version", "next", "--id", id,
                        "--stats", r->stats, "--target", "vllm"};
        int k = 22;
        if (strcmp(c->fp8, "off")) {
            av[k++] = "--fp8";
            av[k++] = (char *)c->fp8;
        }
        av[k] = NULL;
        transport_args(c, av, k);
        pid_t p;
        rc = spawn_in(c, 1 + n_tr + q, ip, av, 1, &p);
    }
    int wrc = wait_all();
    return rc ? rc : wrc;
}

/* Per version: receivers' first transfer start to last end (pull), or the
 * longest publish (push: the trainers write, receivers only wait). */
static void read_spans(struct run *r)
{
    double lo[64] = {0}, hi[64] = {0};
    FILE *f = fopen(strcmp(r->mode, "push") ? r->stats : r->pstats, "r");
    char line[2048];
    while (f && fgets(line, sizeof(line), f)) {
        int v = (int)cli_json_num(line, "version");
        if (v < 1 || v > 64)
            continue;
        if (!strcmp(r->mode, "push")) {
            double s = cli_json_num(line, "publish_s");
            if (s > r->span[v - 1])
                r->span[v - 1] = s;
            continue;
        }
        double xs = cli_json_num(line, "xfer_start"), xe = cli_json_num(line, "xfer_end");
        if (!lo[v - 1] || xs < lo[v - 1])
            lo[v - 1] = xs;
        if (xe > hi[v - 1])
            hi[v - 1] = xe;
        r->span[v - 1] = hi[v - 1] - lo[v - 1];
        if (v == 1)
            r->bytes_wire += cli_json_num(line, "bytes_wire");
    }
    if (f)
        fclose(f);
}

/* Warm cycles (v >= 2): mean, min, max. */
static void warm(const struct run *r, double *mean, double *mn, double *mx)
{
    int n = 0;
    *mean = 0;
    *mn = 1e30;
    *mx = 0;
    for (int v = 2; v <= r->cycles && v <= 64; v++) {
        double s = r->span[v - 1];
        *mean += s;
        n++;
        if (s < *mn)
            *mn = s;
        if (s > *mx)
            *mx = s;
    }
    *mean = n ? *mean / n : 0;
    if (!n)
        *mn = 0;
}

/* Replica copies: the wait from the replica's transfer end to its
 * puller's start (commit, re-publish, the puller's poll). */
static double mean_hop(const struct run *r)
{
    struct rec {
        char who[64], src[64];
        int v;
        double xs, xe;
    } *a = calloc(1024, sizeof(*a));
    int n = 0;
    FILE *f = a ? fopen(r->stats, "r") : NULL;
    char line[2048];
    while (f && n < 1024 && fgets(line, sizeof(line), f)) {
        const char *w = strstr(line, "\"receiver\":\"");
        const char *s = strstr(line, "\"source\":\"");
        if (!w || !s)
            continue;
        sscanf(w + 12, "%63[^\"]", a[n].who);
        sscanf(s + 10, "%63[^\"]", a[n].src);
        a[n].v = (int)cli_json_num(line, "version");
        a[n].xs = cli_json_num(line, "xfer_start");
        a[n].xe = cli_json_num(line, "xfer_end");
        n++;
    }
    if (f)
        fclose(f);
    double sum = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n && a[i].v >= 2; j++)
            if (a[j].v == a[i].v && !strcmp(a[j].who, a[i].src)) {
                sum += a[i].xs - a[j].xe;
                k++;
            }
    free(a);
    return k ? sum / k : 0;
}

/* The simulator on the same shapes, rates and policy. */
static int predict(const struct cluster *c, const struct run *r, double eff, double *cycle)
{
    struct sim_opts o;
    sim_opts_default(&o);
    char cfg[PATH_MAX + 64];
    snprintf(cfg, sizeof(cfg), "%s/config.json", c->ckpt);
    o.model = cfg;
    o.t_tp = r->t_tp;
    o.t_ep = r->t_ep;
    o.t_gpus = r->t_tp > r->t_ep ? r->t_tp : r->t_ep;
    o.e_tp = r->e_tp;
    o.e_ep = r->e_ep;
    o.engines = r->engines;
    o.nic_gbps = c->rate_mbit / 1000.0;
    o.efficiency = eff;
    o.gpus_per_node = o.nics_per_node = 1;
    o.push = !strcmp(r->mode, "push");
    o.fp8 = strcmp(c->fp8, "off") != 0;
    o.fanout = r->fanout;
    o.latency_us = 50;
    o.hop_ms = 5;
    int rc = sim_opts_check(&o);
    struct sim_plan p;
    if (!rc)
        rc = sim_plan_make(&o, &p);
    struct sim_result res;
    if (!rc) {
        rc = sim_cycle_run(&o, &p, &res);
        sim_plan_free(&p);
    }
    *cycle = rc ? 0 : res.cycle_s;
    return rc;
}

/* What the table cannot check: the choices and how the options go together. */
static int check_opts(struct cluster *c)
{
    if (isnan(c->efficiency)) /* not given: calibrate */
        c->efficiency = 0;
    else if (!(c->efficiency > 0 && c->efficiency <= 1))
        return refit_error_set(REFIT_EINVAL, "--efficiency '%g': a number in (0, 1]", c->efficiency);
    if (strcmp(c->mode, "pull") && strcmp(c->mode, "push"))
        return refit_error_set(REFIT_EINVAL, "--mode '%s': pull or push", c->mode);
    if (strcmp(c->transport, "tcp") && strcmp(c->transport, "ucx") && strcmp(c->transport, "ofi"))
        return refit_error_set(REFIT_EINVAL, "--transport '%s': tcp, ucx or ofi (both over tcp)", c->transport);
    if (strcmp(c->fp8, "off") && strcmp(c->fp8, "trainer"))
        return refit_error_set(REFIT_EINVAL, "--fp8 '%s': off or trainer", c->fp8);
    if (c->fanout && !strcmp(c->mode, "push"))
        return refit_error_set(REFIT_EINVAL, "--fanout is for pull mode");
    int hosts = 1 + (c->t_tp > c->t_ep ? c->t_tp : c->t_ep) + c->engines * c->e_tp;
    if (hosts > 120)
        return refit_error_set(REFIT_EINVAL, "%d hosts: at most 120 here", hosts);
    return 0;
}

/* Root, ip, tc, redis-server and the setup script, or why not. */
static const char *why_skip(struct cluster *c)
{
    static char why[PATH_MAX + 128];
    if (geteuid() != 0)
        return "needs root (network namespaces and tc)";
    const char *env = getenv("REFIT_CLUSTER_SCRIPT");
    if (env)
        snprintf(c->script, sizeof(c->script), "%s", env);
    else {
        /* The source tree: cwd, or three levels above build/tools/refit/refit. */
        snprintf(c->script, sizeof(c->script), "tools/dev/cluster/netns.sh");
        if (access(c->script, R_OK)) {
            char *slash = strrchr(c->self, '/');
            if (slash)
                snprintf(c->script, sizeof(c->script), "%.*s/../../../tools/dev/cluster/netns.sh",
                         (int)(slash - c->self), c->self);
        }
    }
    if (access(c->script, R_OK)) {
        snprintf(why, sizeof(why), "tools/dev/cluster/netns.sh not found (run from the source tree or set "
                                   "REFIT_CLUSTER_SCRIPT)");
        return why;
    }
    if (access("configs/clusters/local.yaml", R_OK))
        return "configs/clusters/local.yaml not found: run from the source tree";
    char *chk[] = {"bash", c->script, "check", NULL};
    pid_t p;
    int st = 1;
    if (!posix_spawnp(&p, "bash", NULL, NULL, chk, environ))
        waitpid(p, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st))
        return "network namespaces or tc unavailable here (netns.sh check says why above)";
    char *red[] = {"sh", "-c", "command -v redis-server >/dev/null && command -v redis-cli >/dev/null", NULL};
    st = 1;
    if (!posix_spawnp(&p, "sh", NULL, NULL, red, environ))
        waitpid(p, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st))
        return "redis-server or redis-cli not installed (tools/dev/deps.sh)";
    return NULL;
}

static int setup(struct cluster *c)
{
    if (c->keep) {
        snprintf(c->dir, sizeof(c->dir), "%s", c->keep);
        mkdir(c->dir, 0700);
    } else {
        snprintf(c->dir, sizeof(c->dir), "/tmp/refit-cluster-XXXXXX");
        if (!mkdtemp(c->dir))
            return refit_error_set(REFIT_EIO, "mkdtemp: %s", strerror(errno));
    }
    snprintf(c->ckpt, sizeof(c->ckpt), "%s/ckpt", c->dir);
    char layers[16], vocab[16];
    snprintf(layers, sizeof(layers), "%d", c->layers);
    snprintf(vocab, sizeof(vocab), "%d", c->vocab);
    char *mk[] = {c->self, "demo", "--make-checkpoint", c->ckpt, "--model", (char *)c->model, "--layers", layers,
                  "--vocab", vocab, NULL};
    int rc = run_tool(mk, "making the checkpoint");
    int hosts = 1 + (c->t_tp > c->t_ep ? c->t_tp : c->t_ep) + c->engines * c->e_tp;
    if (hosts < 3)
        hosts = 3; /* the calibration pair */
    snprintf(c->prefix, sizeof(c->prefix), "rfc%d", (int)getpid());
    char h[16], rate[16], delay[16];
    snprintf(h, sizeof(h), "%d", hosts);
    snprintf(rate, sizeof(rate), "%d", c->rate_mbit);
    snprintf(delay, sizeof(delay), "%d", c->delay_us);
    char *up[] = {"bash", c->script, "up", c->prefix, h, rate, delay, NULL};
    if (!rc)
        rc = run_tool(up, "setting up the namespaces (tools/dev/cluster/netns.sh up)");
    if (!rc)
        rc = start_redis(c);
    setenv("REFIT_STORE_PLUGIN", "redis", 1);
    setenv("REFIT_STORE_REDIS_HOST", "10.77.0.1", 1);
    setenv("REFIT_STORE_REDIS_PORT", "6379", 1);
    setenv("REFIT_TRANSPORT_PLUGIN", c->transport, 1);
    setenv("FI_TCP_IFACE", "eth0", 1);
    setenv("REFIT_TCP_TOKEN", "refit-bench-cluster", 1);
    setenv("REFIT_REFIT_TIMEOUT", "120s", 1);
    if (!rc)
        printf("emulated cluster: %d hosts (%s-h*), %d Mbit/s per NIC each way%s, redis on 10.77.0.1, %s%s\n",
               hosts, c->prefix, c->rate_mbit, c->delay_us ? "" : ", no added delay", c->transport,
               strcmp(c->transport, "tcp") ? " over tcp" : "");
    return rc;
}

static void print_row(const char *label, const struct run *r, double pred)
{
    double mean, mn, mx;
    warm(r, &mean, &mn, &mx);
    printf("%-26s %9.3f %9.3f %9.3f %11.3f %9.3f\n", label, mean, mn, mx, pred, mean > 0 ? pred / mean : 0);
}

static int bench(struct cluster *c)
{
    int rc = setup(c);
    double eff = c->efficiency;
    if (!rc && !(eff > 0)) {
        /* One flow between two hosts: what a NIC of this rate delivers. */
        struct run cal = {.t_tp = 1, .t_ep = 1, .e_tp = 1, .e_ep = 1, .engines = 1, .cycles = 3, .mode = "pull"};
        rc = run_job(c, &cal, "calibrate");
        double mean, mn, mx;
        read_spans(&cal);
        warm(&cal, &mean, &mn, &mx);
        eff = mean > 0 ? cal.bytes_wire / mean / (c->rate_mbit * 1e6 / 8) : 0;
        if (!rc)
            printf("calibration: one pull between two hosts, %.3f GB in %.3f s: efficiency %.3f of %d Mbit/s\n",
                   cal.bytes_wire / 1e9, mean, eff, c->rate_mbit);
        if (!rc && !(eff > 0 && eff <= 1.2))
            rc = refit_error_set(REFIT_EPROTO, "calibration gave efficiency %.3f", eff);
    }
    struct run base = {.t_tp = c->t_tp, .t_ep = c->t_ep, .e_tp = c->e_tp, .e_ep = c->e_ep, .engines = c->engines,
                      .cycles = c->cycles, .mode = c->mode};
    struct run fan = base;
    fan.fanout = c->fanout;
    double p_base = 0, p_fan = 0;
    if (!rc)
        rc = run_job(c, &base, "base");
    if (!rc && c->fanout)
        rc = run_job(c, &fan, "fanout");
    if (!rc)
        rc = predict(c, &base, eff, &p_base);
    if (!rc && c->fanout)
        rc = predict(c, &fan, eff, &p_fan);
    if (rc)
        return rc;
    read_spans(&base);
    printf("\ntrainer tp %d ep %d, %d engine%s of tp %d, %s%s, %d cycles; cycle = %s\n", c->t_tp, c->t_ep,
           c->engines, c->engines == 1 ? "" : "s", c->e_tp, c->mode, strcmp(c->fp8, "off") ? ", FP8" : "",
           c->cycles, strcmp(c->mode, "push") ? "first transfer start to last transfer end (receivers' stats)"
                                              : "the longest publish (the trainers write)");
    printf("%-26s %9s %9s %9s %11s %9s\n", "warm cycles (v >= 2)", "mean s", "min s", "max s", "refit sim s",
           "sim/mean");
    print_row(c->fanout ? "without fan-out" : "measured", &base, p_base);
    if (c->fanout) {
        read_spans(&fan);
        char label[64];
        snprintf(label, sizeof(label), "fan-out %d", c->fanout);
        print_row(label, &fan, p_fan);
        double mb, mf, x, y;
        warm(&base, &mb, &x, &y);
        warm(&fan, &mf, &x, &y);
        printf("fan-out / without: measured %.3fx, predicted %.3fx (target <= 0.6x when the trainer's NIC bounds "
               "the cycle); replica hop measured %.1f ms (sim assumes 5 ms + half of a 25 ms poll)\n",
               mb > 0 ? mf / mb : 0, p_base > 0 ? p_fan / p_base : 0, mean_hop(&fan) * 1e3);
    }
    return 0;
}

int bench_cluster(int argc, char **argv)
{
    struct cluster_opts o = {.c = {.model = "qwen3", .mode = "pull", .fp8 = "off", .transport = "tcp", .layers = 2,
                                   .vocab = 8000, .t_tp = 1, .t_ep = 1, .e_tp = 1, .e_ep = 1, .engines = 8,
                                   .cycles = 3, .rate_mbit = 1000, .efficiency = NAN}};
    int rc = cli_opts_parse(&cluster_spec, argc, argv, &o, NULL, NULL);
    if (rc == CLI_HELP)
        return 0;
    struct cluster c = o.c;
    if (!rc && o.trainer)
        rc = cli_layout("--trainer", o.trainer, &c.t_tp, &c.t_ep);
    if (!rc && o.engine)
        rc = cli_layout("--engine", o.engine, &c.e_tp, &c.e_ep);
    if (!rc)
        rc = check_opts(&c);
    if (rc)
        return cli_fail("bench cluster", rc);
    ssize_t sl = readlink("/proc/self/exe", c.self, sizeof(c.self) - 1);
    if (sl <= 0)
        return cli_fail("bench cluster", refit_error_set(REFIT_EIO, "cannot find the refit binary"));
    c.self[sl] = 0;
    const char *why = why_skip(&c);
    if (why) {
        printf("refit bench cluster: SKIP: %s\n", why);
        return SKIP;
    }
    g_cl = &c;
    atexit(teardown);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    rc = bench(&c);
    teardown();
    g_cl = NULL;
    return rc ? cli_fail("bench cluster", rc) : 0;
}
