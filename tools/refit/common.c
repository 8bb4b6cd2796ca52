/* common.c — options every subcommand shares. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "refit/log.h"
#include "refit/status.h"

int cli_fail(const char *cmd, int status)
{
    const char *m = refit_error_message();
    fprintf(stderr, "refit %s: %s\n", cmd, m[0] ? m : refit_strerror(status));
    return status == REFIT_EINVAL ? 2 : 1;
}

int cli_compact(int argc, char **argv)
{
    int j = 0;
    for (int i = 0; i < argc; i++)
        if (argv[i])
            argv[j++] = argv[i];
    argv[j] = NULL;
    return j;
}

int cli_config_open(struct cli_common *c, const char *file, int argc, char **argv)
{
    memset(c, 0, sizeof(*c));
    c->config_path = file;
    int rc = refit_config_create(&c->cfg);
    if (rc)
        return rc;
    /* First pass: the file, so overrides apply on top of it. */
    for (int i = 1; i < argc; i++) {
        if (!argv[i])
            continue;
        if (!strcmp(argv[i], "--config") || !strcmp(argv[i], "-c")) {
            if (i + 1 >= argc || !argv[i + 1])
                return refit_error_set(REFIT_EINVAL, "%s needs a file", argv[i]);
            c->config_path = argv[i + 1];
            argv[i] = argv[i + 1] = NULL;
            i++;
        } else if (!strcmp(argv[i], "--log")) {
            if (i + 1 >= argc || refit_log_parse_level(argv[i + 1]) < 0)
                return refit_error_set(REFIT_EINVAL, "--log needs debug, info, warn or error");
            refit_log_set_level(refit_log_parse_level(argv[i + 1]));
            argv[i] = argv[i + 1] = NULL;
            i++;
        }
    }
    if (c->config_path) {
        rc = refit_config_load(c->cfg, c->config_path);
        if (rc)
            return rc;
    }
    rc = refit_config_apply_env(c->cfg, NULL);
    if (rc)
        return rc;
    for (int i = 1; i < argc; i++) {
        if (!argv[i] || strcmp(argv[i], "--set"))
            continue;
        if (i + 1 >= argc || !argv[i + 1])
            return refit_error_set(REFIT_EINVAL, "--set needs key=value");
        rc = refit_config_set(c->cfg, argv[i + 1], "--set");
        if (rc)
            return rc;
        argv[i] = argv[i + 1] = NULL;
        i++;
    }
    return refit_loader_create(c->cfg, &c->loader);
}

void cli_common_close(struct cli_common *c)
{
    refit_loader_destroy(c->loader);
    refit_config_destroy(c->cfg);
    memset(c, 0, sizeof(*c));
}

int cli_int(const char *opt, const char *v, long lo, long hi, int *out)
{
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || x < lo || x > hi)
        return refit_error_set(REFIT_EINVAL, "%s '%s': expected an integer in [%ld, %ld]", opt,
                               v ? v : "", lo, hi);
    *out = (int)x;
    return 0;
}

int cli_log_level(const char *v)
{
    int l = refit_log_parse_level(v);
    if (l < 0)
        return refit_error_set(REFIT_EINVAL, "--log '%s': use debug, info, warn or error", v);
    refit_log_set_level(l);
    return 0;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int cli_layout(const char *opt, const char *v, int *tp, int *ep)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "%s", v);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int x;
        if (!strncmp(t, "tp=", 3) && !cli_int(opt, t + 3, 1, 1024, &x))
            *tp = x;
        else if (!strncmp(t, "ep=", 3) && !cli_int(opt, t + 3, 1, 1024, &x))
            *ep = x;
        else
            return refit_error_set(REFIT_EINVAL, "%s '%s': expected tp=N[,ep=M]", opt, v);
    }
    return 0;
}

int cli_parse_pairs(int argc, char **argv, int (*take)(void *arg, const char *opt, const char *val),
                    void *arg)
{
    int rc = 0;
    for (int i = 1; i < argc && !rc; i += 2) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return refit_error_set(REFIT_EINVAL, "%s needs a value (see --help)", o);
        rc = take(arg, o, v);
        if (rc == CLI_NOT_MINE)
            rc = refit_error_set(REFIT_EINVAL, "unknown option '%s' (see --help)", o);
    }
    return rc;
}

int cli_rank_opt(void *arg, const char *o, const char *v)
{
    struct cli_rank_opts *r = arg;
    if (!strcmp(o, "--config") || !strcmp(o, "-c"))
        r->cfg = v;
    else if (!strcmp(o, "--hf"))
        r->hf = v;
    else if (!strcmp(o, "--id"))
        r->id = v;
    else if (!strcmp(o, "--device"))
        r->device = v;
    else if (!strcmp(o, "--stats"))
        r->stats = v;
    else if (!strcmp(o, "--tp"))
        return cli_int(o, v, 1, 65536, &r->tp);
    else if (!strcmp(o, "--rank"))
        return cli_int(o, v, 0, 65535, &r->rank);
    else if (!strcmp(o, "--ep"))
        return cli_int(o, v, 1, 65536, &r->ep);
    else if (!strcmp(o, "--cycles"))
        return cli_int(o, v, 1, 1000000, &r->cycles);
    else if (!strcmp(o, "--set") && r->n_ovr < r->max_set)
        r->ovr[r->n_ovr++] = v; /* a full list falls through: unknown option */
    else if (!strcmp(o, "--log"))
        return cli_log_level(v);
    else
        return CLI_NOT_MINE;
    return 0;
}

int cli_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    int port = -1;
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) && !getsockname(fd, (struct sockaddr *)&a, &l))
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

double cli_json_num(const char *line, const char *key)
{
    char pat[80];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : 0;
}
