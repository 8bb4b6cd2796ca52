/* tp_peer.c — the other process of the transport conformance suite.
 *
 *   tp_peer PLUGIN [--set key=value]... [--name NAME]
 *
 * Loads the transport, prints "addr HEX", then answers one command per line
 * on stdin with one line on stdout:
 *   reg SIZE SEED            register SIZE bytes of pattern SEED → "rkey ID HEX"
 *   dereg ID                 → "ok"
 *   fill ID SEED             rewrite the pattern → "ok"
 *   check ID OFF LEN SEED FROM  region bytes [OFF, +LEN) == pattern [FROM, +LEN)?
 *                            → "ok" or "bad POS"
 *   notify TIMEOUT_MS        wait for a notification → "notify HEX" or "err CODE"
 *   connect HEX              connect to the test process → "ok" / "err CODE"
 *   send HEX                 notify the connected test process → "ok" / "err CODE"
 *   sendz LEN                notify LEN bytes of 'z' → "ok" / "err CODE"
 *   reset                    reset every connected TCP socket of this process
 *                            (the kernel sends RST; the descriptors stay
 *                            ours) → "ok N"
 *   ping                     → "ok"
 *   exit                     clean shutdown
 * Errors print "err CODE MESSAGE".  The test kills it with SIGKILL or
 * SIGSTOP to play a vanished peer.
 *
 * With REFIT_TP_MEMTYPE=cuda regions are device memory (cudaMalloc) on
 * device REFIT_TP_PEER_CUDA_DEVICE (default: 1 when there are two or more,
 * so that copies cross GPUs, else 0); see tmem.h. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "pattern.h"
#include "tmem.h"
#include "refit/config.h"
#include "refit/loader.h"
#include "refit/status.h"
#include "refit/transport_core.h"

struct region {
    void *mem;
    size_t len;
    refit_tp_region_t *r;
};

static struct region regs[64];
static int n_regs;

static void hex_out(const char *tag, int id, const void *p, size_t n)
{
    const uint8_t *b = p;
    if (id >= 0)
        printf("%s %d ", tag, id);
    else
        printf("%s ", tag);
    for (size_t i = 0; i < n; i++)
        printf("%02x", b[i]);
    printf("\n");
}

static size_t hex_in(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (s[0] && s[1] && n < cap) {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1)
            break;
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

/* connect() with AF_UNSPEC disconnects a TCP socket: the kernel resets the
 * connection (RST) and the descriptor stays valid, so the transport sees a
 * peer reset without anyone closing its file descriptors. */
static int reset_tcp(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dirfd(d))
            continue;
        int type = 0;
        socklen_t tl = sizeof(type);
        struct sockaddr_storage sa;
        socklen_t sl = sizeof(sa);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_STREAM ||
            getpeername(fd, (struct sockaddr *)&sa, &sl) ||
            (sa.ss_family != AF_INET && sa.ss_family != AF_INET6))
            continue;
        struct sockaddr un = {.sa_family = AF_UNSPEC};
        n += connect(fd, &un, sizeof(un)) == 0;
    }
    if (d)
        closedir(d);
    return n;
}

static void fail(int rc)
{
    printf("err %d %s\n", rc, refit_error_message());
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tp_peer PLUGIN [--set k=v]... [--name NAME]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (tm_want_cuda()) {
        const char *e = getenv("REFIT_TP_PEER_CUDA_DEVICE");
        int n = tm_device_count();
        int dev = e && *e ? atoi(e) : n >= 2 ? 1 : 0;
        if (!n || tm_use_cuda(dev)) {
            printf("err %d tp_peer: device memory on device %d: %s\n", REFIT_ENOTSUP, dev, tm_err);
            return 1;
        }
    }
    refit_config_t *cfg;
    refit_loader_t *ld;
    refit_transport_t *t;
    const char *name = "peer";
    int rc = refit_config_create(&cfg);
    if (!rc)
        rc = refit_config_apply_env(cfg, NULL);
    for (int i = 2; !rc && i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--set"))
            rc = refit_config_set(cfg, argv[i + 1], "--set");
        else if (!strcmp(argv[i], "--name"))
            name = argv[i + 1];
    }
    if (!rc)
        rc = refit_loader_create(cfg, &ld);
    struct refit_transport_open o = {.size = sizeof(o), .plugin = argv[1], .name = name,
                              .cuda_device = tm_cuda ? tm_dev : -1};
    if (!rc)
        rc = refit_transport_init(ld, cfg, &o, &t);
    if (rc) {
        fail(rc);
        return 1;
    }
    void *addr;
    size_t alen;
    if ((rc = refit_transport_address_get(t, &addr, &alen))) {
        fail(rc);
        return 1;
    }
    hex_out("addr", -1, addr, alen);
    free(addr);

    refit_tp_peer_t *back = NULL;
    static char line[1 << 16];
    static uint8_t bin[1 << 15];
    while (fgets(line, sizeof(line), stdin)) {
        unsigned long long a, b, c, d, e;
        char arg[sizeof(line)];
        if (sscanf(line, "reg %llu %llu", &a, &b) == 2 && n_regs < 64) {
            void *m = tm_alloc(a);
            if (!m) {
                printf("err -2 %s\n", tm_err);
                continue;
            }
            if (tm_fill(m, a, (uint32_t)b, 0)) {
                tm_free(m, a);
                printf("err -5 %s\n", tm_err);
                continue;
            }
            struct region *g = &regs[n_regs];
            if ((rc = refit_transport_reg(t, m, a, tm_memtype(), &g->r))) {
                tm_free(m, a);
                fail(rc);
                continue;
            }
            g->mem = m;
            g->len = a;
            void *k;
            size_t kl;
            if ((rc = refit_transport_pack(t, g->r, &k, &kl))) {
                fail(rc);
                continue;
            }
            hex_out("rkey", n_regs++, k, kl);
            free(k);
        } else if (sscanf(line, "dereg %llu", &a) == 1 && a < (unsigned)n_regs && regs[a].r) {
            rc = refit_transport_dereg(t, regs[a].r);
            regs[a].r = NULL;
            if (rc)
                fail(rc);
            else
                printf("ok\n");
        } else if (sscanf(line, "fill %llu %llu", &a, &b) == 2 && a < (unsigned)n_regs) {
            if (tm_fill(regs[a].mem, regs[a].len, (uint32_t)b, 0))
                printf("err -5 %s\n", tm_err);
            else
                printf("ok\n");
        } else if (sscanf(line, "check %llu %llu %llu %llu %llu", &a, &b, &c, &d, &e) == 5 &&
                   a < (unsigned)n_regs) {
            if (b > regs[a].len || c > regs[a].len - b) {
                printf("err -13 range\n");
                continue;
            }
            int64_t pos = tm_check((uint8_t *)regs[a].mem + b, c, (uint32_t)d, e);
            if (pos == -2)
                printf("err -5 %s\n", tm_err);
            else if (pos < 0)
                printf("ok\n");
            else
                printf("bad %lld\n", (long long)pos);
        } else if (sscanf(line, "notify %llu", &a) == 1) {
            size_t n = 0;
            rc = refit_transport_poll_notify(t, bin, sizeof(bin), &n, (int64_t)a);
            if (rc)
                fail(rc);
            else
                hex_out("notify", -1, bin, n);
        } else if (sscanf(line, "connect %65535s", arg) == 1) {
            size_t n = hex_in(arg, bin, sizeof(bin));
            rc = refit_transport_connect(t, bin, n, "test", &back);
            if (rc)
                fail(rc);
            else
                printf("ok\n");
        } else if (sscanf(line, "sendz %llu", &a) == 1 && back && a <= sizeof(bin)) {
            memset(bin, 'z', a);
            rc = refit_transport_notify(t, back, bin, a);
            if (rc)
                fail(rc);
            else
                printf("ok\n");
        } else if (sscanf(line, "send %65535s", arg) == 1 && back) {
            size_t n = hex_in(arg, bin, sizeof(bin));
            rc = refit_transport_notify(t, back, bin, n);
            if (rc)
                fail(rc);
            else
                printf("ok\n");
        } else if (!strncmp(line, "reset", 5)) {
            printf("ok %d\n", reset_tcp());
        } else if (!strncmp(line, "ping", 4)) {
            printf("ok\n");
        } else if (!strncmp(line, "exit", 4)) {
            break;
        } else {
            printf("err -1 unknown command\n");
        }
    }
    refit_transport_disconnect(t, back);
    for (int i = 0; i < n_regs; i++)
        if (regs[i].r)
            refit_transport_dereg(t, regs[i].r);
    refit_transport_fini(t);
    for (int i = 0; i < n_regs; i++)
        tm_free(regs[i].mem, regs[i].len);
    refit_loader_destroy(ld);
    refit_config_destroy(cfg);
    return 0;
}
