/* fixture.c — scratch directories and a private redis-server for the store
 * tests.  The server runs with no persistence (--save '' --appendonly no),
 * so a kill-and-restart really loses everything, as a crashed Redis would. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fixture.h"

static char fx_plugin_name[32];
static char fx_tmp[512];
static int fx_redis_port;
static pid_t fx_main_pid;

const char *fx_plugin(void) { return fx_plugin_name; }
const char *fx_dir(void) { return fx_tmp; }
int fx_port(void) { return fx_redis_port; }

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int fx_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || getsockname(fd, (struct sockaddr *)&a, &l)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

int fx_redis_cmd(int port, int argc, const char **argv, const char *want)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0)
        return -1;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        close(fd);
        return -1;
    }
    char buf[4096];
    int n = snprintf(buf, sizeof(buf), "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    int rc = -1;
    if (write(fd, buf, (size_t)n) == n) {
        ssize_t r = read(fd, buf, sizeof(buf) - 1);
        if (r > 0) {
            buf[r] = '\0';
            rc = (!want || !strncmp(buf, want, strlen(want))) ? 0 : -1;
        }
    }
    close(fd);
    return rc;
}

static int have_redis_server(void)
{
    const char *path = getenv("PATH");
    char *copy = strdup(path ? path : "/usr/bin:/bin"), *save = NULL;
    int found = 0;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char p[1024];
        snprintf(p, sizeof(p), "%s/redis-server", d);
        found = access(p, X_OK) == 0;
    }
    free(copy);
    return found;
}

pid_t fx_redis_start(const char *dir, int port)
{
    return fx_redis_start_args(dir, port, NULL);
}

pid_t fx_redis_start_args(const char *dir, int port, const char *const *extra)
{
    if (!have_redis_server())
        return -1;
    char ports[16], logf[600];
    snprintf(ports, sizeof(ports), "%d", port);
    snprintf(logf, sizeof(logf), "%s/redis-%d.log", dir, port);
    const char *argv[64] = {"redis-server", "--port", ports, "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", dir, "--logfile", logf, "--daemonize", "no",
                            "--protected-mode", "no"};
    int argc = 17;
    for (int i = 0; extra && extra[i] && argc < 63; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
        }
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    const char *ping[] = {"PING"};
    for (int i = 0; i < 500; i++) {
        /* Any reply (PONG or NOAUTH) means it is up. */
        if (fx_redis_cmd(port, 1, ping, NULL) == 0)
            return pid;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return -1;
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

void fx_redis_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0); /* ECHILD when another process started it: fine */
}

/* The live server's pid is kept in a file, because the restart test runs
 * in a forked child and the main process must still stop what it left. */
static void write_pid(pid_t pid)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/server.pid", fx_tmp);
    FILE *f = fopen(p, "w");
    if (f) {
        fprintf(f, "%ld\n", (long)pid);
        fclose(f);
    }
}

static pid_t read_pid(void)
{
    char p[600];
    long v = -1;
    snprintf(p, sizeof(p), "%s/server.pid", fx_tmp);
    FILE *f = fopen(p, "r");
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return (pid_t)v;
}

static void rm_rf(const char *dir)
{
    pid_t p = fork();
    if (p == 0) {
        execlp("rm", "rm", "-rf", dir, (char *)NULL);
        _exit(127);
    }
    if (p > 0)
        waitpid(p, NULL, 0);
}

static void teardown(void)
{
    if (getpid() != fx_main_pid)
        return;
    if (!strcmp(fx_plugin_name, "redis")) {
        pid_t pid = read_pid();
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, WNOHANG);
        }
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
    }
    if (fx_tmp[0] && !getenv("REFIT_TEST_KEEP"))
        rm_rf(fx_tmp);
}

void fx_setup(const char *plugin)
{
    snprintf(fx_plugin_name, sizeof(fx_plugin_name), "%s", plugin);
    fx_main_pid = getpid();
    const char *t = getenv("TMPDIR");
    snprintf(fx_tmp, sizeof(fx_tmp), "%s/refit-store-test-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(fx_tmp)) {
        perror("mkdtemp");
        exit(1);
    }
    atexit(teardown);
    if (!strcmp(plugin, "redis")) {
        if (!have_redis_server()) {
            fprintf(stderr, "redis-server not installed: skipping\n");
            exit(77);
        }
        pid_t pid = -1;
        for (int i = 0; i < 5 && pid < 0; i++) {
            fx_redis_port = fx_free_port();
            pid = fx_redis_start(fx_tmp, fx_redis_port);
        }
        if (pid < 0) {
            fprintf(stderr, "could not start redis-server\n");
            exit(1);
        }
        write_pid(pid);
    }
}

int fx_open(struct fx_store *f, const char *ns, ...)
{
    memset(f, 0, sizeof(*f));
    int rc = refit_config_create(&f->cfg);
    char buf[700];
    snprintf(buf, sizeof(buf), "store.plugin=%s", fx_plugin_name);
    if (!rc)
        rc = refit_config_set(f->cfg, buf, "test");
    if (!rc && !strcmp(fx_plugin_name, "file")) {
        snprintf(buf, sizeof(buf), "store.file.path=%s/files", fx_tmp);
        rc = refit_config_set(f->cfg, buf, "test");
    }
    if (!rc && !strcmp(fx_plugin_name, "redis")) {
        snprintf(buf, sizeof(buf), "store.redis.port=%d", fx_redis_port);
        rc = refit_config_set(f->cfg, buf, "test");
    }
    va_list ap;
    va_start(ap, ns);
    for (const char *kv; !rc && (kv = va_arg(ap, const char *));)
        rc = refit_config_set(f->cfg, kv, "test");
    va_end(ap);
    if (!rc)
        rc = refit_loader_create(f->cfg, &f->loader);
    if (!rc)
        rc = refit_store_open(f->cfg, f->loader, ns, &f->s);
    return rc;
}

void fx_close(struct fx_store *f)
{
    refit_store_close(f->s);
    refit_loader_destroy(f->loader);
    refit_config_destroy(f->cfg);
    memset(f, 0, sizeof(*f));
}

int fx_restart(void)
{
    if (strcmp(fx_plugin_name, "redis"))
        return 0;
    pid_t old = read_pid();
    if (old > 0) {
        kill(old, SIGKILL);
        waitpid(old, NULL, WNOHANG);
    }
    /* Wait until the port is free again (the old server is gone). */
    const char *ping[] = {"PING"};
    for (int i = 0; i < 200 && fx_redis_cmd(fx_redis_port, 1, ping, NULL) == 0; i++)
        sleep_ms(10);
    pid_t pid = -1;
    for (int i = 0; i < 50 && pid < 0; i++) {
        pid = fx_redis_start(fx_tmp, fx_redis_port);
        if (pid < 0)
            sleep_ms(20);
    }
    write_pid(pid);
    return pid > 0;
}

int fx_kill(void)
{
    if (strcmp(fx_plugin_name, "redis"))
        return 0;
    pid_t old = read_pid();
    if (old <= 0)
        return 0;
    kill(old, SIGKILL);
    waitpid(old, NULL, WNOHANG);
    write_pid(-1); /* fx_restart kills nothing then */
    const char *ping[] = {"PING"};
    for (int i = 0; i < 200 && fx_redis_cmd(fx_redis_port, 1, ping, NULL) == 0; i++)
        sleep_ms(10);
    return 1;
}

void fx_corrupt(const char *ns, const char *key)
{
    if (!strcmp(fx_plugin_name, "file")) {
        char p[1400];
        snprintf(p, sizeof(p), "%s/files/refit/%s/%s=", fx_tmp, ns, key);
        FILE *f = fopen(p, "w");
        if (f) {
            fputs("garbage without the header", f);
            fclose(f);
        }
        return;
    }
    char k[1024];
    snprintf(k, sizeof(k), "refit/%s/%s", ns, key);
    const char *del[] = {"DEL", k};
    const char *push[] = {"RPUSH", k, "x"};
    fx_redis_cmd(fx_redis_port, 2, del, NULL);
    fx_redis_cmd(fx_redis_port, 3, push, NULL);
}
