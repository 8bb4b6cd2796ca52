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

void cli_common_close(struct cli_common *c)
{
    refit_loader_destroy(c->loader);
    refit_config_destroy(c->cfg);
    memset(c, 0, sizeof(*c));
}

static int cli_int(const char *opt, const char *v, long lo, long hi, int *out)
{
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || x < lo || x > hi)
        return refit_error_set(REFIT_EINVAL, "%s '%s': expected an integer in [%ld, %ld]", opt,
                               v ? v : "", lo, hi);
    *out = (int)x;
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
