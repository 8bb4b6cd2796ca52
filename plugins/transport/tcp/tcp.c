/* tcp.c — the tcp transport plugin: descriptor, configuration, the process
 * object (listener, region table, notification queue) and registration.
 * Serving lives in tcp_server.c, requesting in tcp_client.c, sockets and
 * the handshake in tcp_io.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "refit/log.h"
#include "tcp_int.h"

const struct refit_host *tcp_h;

static const struct refit_cfg_field tcp_fields[] = {
    {"bind", REFIT_CFG_STRING, NULL, 0, -1, NULL,
     "address to listen on (IPv4 or IPv6); default 0.0.0.0 with a token, 127.0.0.1 without"},
    {"advertise", REFIT_CFG_STRING, NULL, 0, -1, NULL,
     "address peers dial when bind is a wildcard; default the host name's first address"},
    {"port_min", REFIT_CFG_INT, "0", 0, 65535, NULL, "lowest listening port (0 with port_max 0: any)"},
    {"port_max", REFIT_CFG_INT, "0", 0, 65535, NULL, "highest listening port"},
    {"streams", REFIT_CFG_INT, "2", 1, 64, NULL, "parallel TCP connections per peer"},
    {"sndbuf", REFIT_CFG_SIZE, "0", 0, 2147483647.0, NULL,
     "SO_SNDBUF per connection; 0 keeps the kernel's autotuning (else at least 256 KiB)"},
    {"rcvbuf", REFIT_CFG_SIZE, "0", 0, 2147483647.0, NULL,
     "SO_RCVBUF per connection; 0 keeps the kernel's autotuning (else at least 256 KiB)"},
    {"chunk", REFIT_CFG_SIZE, "4MiB", 4096, 1073741824.0, NULL,
     "largest piece of a descriptor in one wire request (spreads large transfers over streams)"},
    {"batch", REFIT_CFG_SIZE, "8MiB", 4096, 1073741824.0, NULL,
     "bytes a stream takes from the queue at once"},
    {"token_file", REFIT_CFG_STRING, NULL, 0, -1, NULL,
     "file holding the shared authentication token (else REFIT_TCP_TOKEN; none: loopback only, "
     "keyed by this user's local secret)"},
    {"secret_dir", REFIT_CFG_STRING, NULL, 0, -1, NULL,
     "without a token: directory of this user's local secret (default ${TMPDIR:-/tmp}/refit-<uid>)"},
    {"max_conns", REFIT_CFG_INT, "1024", 1, 65536, NULL, "authenticated connections served at once"},
    {"notify_queue", REFIT_CFG_INT, "1024", 1, 1048576, NULL,
     "notifications kept until polled; more are dropped (counted, logged, the sender told)"},
    {"notify_queue_bytes", REFIT_CFG_SIZE, "16MiB", 65536, 1073741824.0, NULL,
     "bytes of notifications kept until polled"},
    {"max_unauth", REFIT_CFG_INT, "64", 1, 65536, NULL,
     "connections still in their handshake; the oldest is dropped to make room for a new one"},
    {"handshake_timeout", REFIT_CFG_DURATION, "5s", 10, 600000, NULL,
     "a connecting peer must complete its whole handshake within this (not per read)"},
};

static int read_token(refit_tp_t *tp, const struct refit_cfg_view *cfg)
{
    if (cfg && tcp_h->cfg_has(cfg, "token_file") > 0) {
        char *path = NULL;
        int rc = tcp_h->cfg_path(cfg, "token_file", &path);
        if (rc)
            return rc;
        FILE *f = fopen(path, "rb");
        if (!f) {
            rc = tcp_h->error_set(REFIT_ECONFIG, "tcp: %s: token_file '%s': %s", tp->name, path,
                                  strerror(errno));
            tcp_h->free(path);
            return rc;
        }
        struct stat st;
        if (!fstat(fileno(f), &st) && (st.st_mode & 077))
            tcp_h->log(REFIT_LOG_WARN, TCP_NAME, "%s: token_file '%s' is readable by group or others "
                       "(chmod 600 it)", tp->name, path);
        /* A token is a secret of a few dozen bytes; 4 KiB is plenty. */
        tp->token = malloc(4097);
        size_t n = tp->token ? fread(tp->token, 1, 4097, f) : 0;
        fclose(f);
        if (!tp->token || n > 4096) {
            rc = tcp_h->error_set(REFIT_ECONFIG, "tcp: %s: token_file '%s' is larger than 4 KiB",
                                  tp->name, path);
            tcp_h->free(path);
            return rc;
        }
        while (n && (tp->token[n - 1] == '\n' || tp->token[n - 1] == '\r' || tp->token[n - 1] == ' '))
            n--;
        if (!n) {
            rc = tcp_h->error_set(REFIT_ECONFIG, "tcp: %s: token_file '%s' is empty", tp->name, path);
            tcp_h->free(path);
            return rc;
        }
        tcp_h->free(path);
        tp->token_len = n;
        return 0;
    }
    const char *e = getenv("REFIT_TCP_TOKEN");
    if (e && *e) {
        tp->token_len = strlen(e);
        tp->token = malloc(tp->token_len);
        if (!tp->token)
            return tcp_h->error_set(REFIT_ENOMEM, "tcp: out of memory");
        memcpy(tp->token, e, tp->token_len);
        return 0;
    }
    /* No token: loopback only, and the key is this user's secret, so
     * another user of the host cannot authenticate. */
    char *dir = NULL;
    if (cfg && tcp_h->cfg_has(cfg, "secret_dir") > 0) {
        int rc = tcp_h->cfg_path(cfg, "secret_dir", &dir);
        if (rc)
            return rc;
    }
    int rc = tcp_local_secret(tp, dir);
    tcp_h->free(dir);
    return rc;
}

static int cfg_int(const struct refit_cfg_view *cfg, const char *key, int64_t *v)
{
    return cfg ? tcp_h->cfg_int(cfg, key, v) : 0;
}

static int cfg_size(const struct refit_cfg_view *cfg, const char *key, uint64_t *v)
{
    return cfg ? tcp_h->cfg_size(cfg, key, v) : 0;
}

static const char *cfg_str(const struct refit_cfg_view *cfg, const char *key)
{
    const char *s = NULL;
    if (cfg && tcp_h->cfg_str(cfg, key, &s))
        s = NULL;
    return s && *s ? s : NULL;
}

static bool is_loopback(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

static bool is_any(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET)
        return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

static int resolve(refit_tp_t *tp, const char *host, int family, bool passive, const char *key,
                   struct sockaddr_storage *out)
{
    struct addrinfo hints = {.ai_family = family, .ai_socktype = SOCK_STREAM,
                             .ai_flags = passive ? AI_PASSIVE : 0}, *res = NULL;
    int e = getaddrinfo(host, NULL, &hints, &res);
    if (e || !res)
        return tcp_h->error_set(REFIT_ECONFIG, "tcp: %s: %s '%s': %s", tp->name, key, host,
                                e ? gai_strerror(e) : "no address");
    memset(out, 0, sizeof(*out));
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static void set_port(struct sockaddr_storage *sa, uint16_t port)
{
    if (sa->ss_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

static uint16_t get_port(const struct sockaddr_storage *sa)
{
    return ntohs(sa->ss_family == AF_INET ? ((const struct sockaddr_in *)sa)->sin_port
                                          : ((const struct sockaddr_in6 *)sa)->sin6_port);
}

/* The host's own address of the family, for a wildcard listener. */
static void host_address(int family, struct sockaddr_storage *out)
{
    char h[256];
    if (gethostname(h, sizeof(h)))
        return;
    h[sizeof(h) - 1] = 0;
    struct addrinfo hints = {.ai_family = family, .ai_socktype = SOCK_STREAM}, *res = NULL, *r;
    if (getaddrinfo(h, NULL, &hints, &res))
        return;
    for (r = res; r; r = r->ai_next) {
        struct sockaddr_storage s = {0};
        memcpy(&s, r->ai_addr, r->ai_addrlen);
        if (!is_loopback(&s)) {
            *out = s;
            break;
        }
    }
    freeaddrinfo(res);
}

static int open_listener(refit_tp_t *tp, const struct refit_cfg_view *cfg)
{
    const char *bind_s = cfg_str(cfg, "bind");
    struct sockaddr_storage sa;
    int rc;
    if (tp->secret_path) {
        /* No shared token: peers on other hosts could not know the local
         * secret, so only this host is listened to. */
        bool v6 = bind_s && strchr(bind_s, ':');
        if (bind_s && (rc = resolve(tp, bind_s, AF_UNSPEC, true, "bind", &sa)) == 0 && is_loopback(&sa)) {
            /* keep the configured loopback address */
        } else {
            if (bind_s)
                tcp_h->log(REFIT_LOG_WARN, TCP_NAME, "%s: bind '%s' ignored: no token", tp->name, bind_s);
            bind_s = v6 ? "::1" : "127.0.0.1";
        }
        tcp_h->log(REFIT_LOG_INFO, TCP_NAME, "%s: no token (token_file or REFIT_TCP_TOKEN): listening "
                   "on loopback %s only, peers on other hosts cannot connect; peers authenticate "
                   "with this user's local secret %s", tp->name, bind_s, tp->secret_path);
    } else if (!bind_s) {
        bind_s = "0.0.0.0";
    }
    rc = resolve(tp, bind_s, AF_UNSPEC, true, "bind", &sa);
    if (rc)
        return rc;
    int64_t pmin = 0, pmax = 0;
    if ((rc = cfg_int(cfg, "port_min", &pmin)) || (rc = cfg_int(cfg, "port_max", &pmax)))
        return rc;
    if (pmax < pmin)
        pmax = pmin;
    /* Non-blocking: a connection gone between poll and accept must not
     * stall the acceptor. */
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return tcp_io_err(tp, "-", "listen socket", errno);
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (sa.ss_family == AF_INET6 && is_any(&sa))
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    tcp_sock_tune(tp, fd); /* inherited by accepted sockets */
    socklen_t sl = sa.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    int e = EADDRINUSE;
    for (int64_t port = pmin; port <= pmax; port++) {
        set_port(&sa, (uint16_t)port);
        if (!bind(fd, (struct sockaddr *)&sa, sl)) {
            e = 0;
            break;
        }
        e = errno;
        if (e != EADDRINUSE)
            break;
    }
    if (e || listen(fd, 128)) {
        close(fd);
        return tcp_h->error_set(REFIT_ECONFIG, "tcp: %s: cannot listen on %s ports %lld-%lld: %s",
                                tp->name, bind_s, (long long)pmin, (long long)pmax, strerror(e ? e : errno));
    }
    sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    tp->lfd = fd;
    tp->adv = sa;
    const char *adv = cfg_str(cfg, "advertise");
    if (adv) {
        rc = resolve(tp, adv, sa.ss_family, false, "advertise", &tp->adv);
        if (rc)
            return rc;
    } else if (is_any(&sa)) {
        host_address(sa.ss_family, &tp->adv);
        if (is_any(&tp->adv))
            resolve(tp, sa.ss_family == AF_INET ? "127.0.0.1" : "::1", sa.ss_family, false, "bind",
                    &tp->adv);
    }
    set_port(&tp->adv, get_port(&sa));
    tcp_sa_str(&tp->adv, tp->where, sizeof(tp->where));
    tcp_h->log(REFIT_LOG_INFO, TCP_NAME, "%s: listening on %s, reachable as %s", tp->name, bind_s, tp->where);
    return 0;
}

static void tcp_fini(refit_tp_t *tp);

/* A batch's requests (512 x 64 bytes) must fit the peer's receive buffer
 * while it is busy answering, or both sides would wait on each other. */
static void buf_floor(refit_tp_t *tp, uint64_t *b, const char *key)
{
    if (*b && *b < (256u << 10)) {
        tcp_h->log(REFIT_LOG_WARN, TCP_NAME, "%s: %s raised to 256 KiB", tp->name, key);
        *b = 256u << 10;
    }
}

static int tcp_init(const struct refit_tp_init_args *a, refit_tp_t **out)
{
    if (!a || a->size < offsetof(struct refit_tp_init_args, cfg) + sizeof(a->cfg))
        return tcp_h->error_set(REFIT_EINVAL, "tcp: init arguments too short");
    const struct refit_cfg_view *cfg = a->cfg;
    refit_tp_t *tp = calloc(1, sizeof(*tp));
    if (!tp)
        return tcp_h->error_set(REFIT_ENOMEM, "tcp: out of memory");
    snprintf(tp->name, sizeof(tp->name), "%s", a->name ? a->name : "refit");
    if (a->name && strlen(a->name) > REFIT_TP_NAME_MAX) {
        free(tp);
        return tcp_h->error_set(REFIT_EINVAL, "tcp: name '%.40s...' longer than %d bytes", a->name,
                                REFIT_TP_NAME_MAX);
    }
    tp->timeout_ms = a->timeout_ms > 0 ? a->timeout_ms : 30000;
    tp->lfd = tp->wake[0] = tp->wake[1] = -1;
    pthread_mutex_init(&tp->lock, NULL);
    pthread_mutex_init(&tp->nlock, NULL);
    pthread_mutex_init(&tp->plock, NULL);
    tcp_cond_init(&tp->cond); /* dereg's deadline is on the monotonic clock */
    tcp_cond_init(&tp->ncond);
    int64_t streams = 2, max_conns = 1024, max_unauth = 64, nq = 1024;
    uint64_t nq_bytes = 16u << 20;
    tp->hs_timeout_ms = 5000;
    tp->chunk = 4u << 20;
    tp->batch_bytes = 8u << 20;
    int rc;
    if ((rc = cfg_int(cfg, "streams", &streams)) || (rc = cfg_int(cfg, "max_conns", &max_conns)) ||
        (rc = cfg_int(cfg, "max_unauth", &max_unauth)) || (rc = cfg_int(cfg, "notify_queue", &nq)) ||
        (rc = cfg_size(cfg, "notify_queue_bytes", &nq_bytes)) ||
        (rc = cfg ? tcp_h->cfg_duration_ms(cfg, "handshake_timeout", &tp->hs_timeout_ms) : 0) ||
        (rc = cfg_size(cfg, "sndbuf", &tp->sndbuf)) || (rc = cfg_size(cfg, "rcvbuf", &tp->rcvbuf)) ||
        (rc = cfg_size(cfg, "chunk", &tp->chunk)) || (rc = cfg_size(cfg, "batch", &tp->batch_bytes)))
        goto fail;
    buf_floor(tp, &tp->sndbuf, "sndbuf");
    buf_floor(tp, &tp->rcvbuf, "rcvbuf");
    tp->streams = (int)streams;
    tp->max_conns = (int)max_conns;
    tp->max_unauth = (int)max_unauth;
    tp->nq.max = (uint64_t)nq;
    tp->nq.max_bytes = nq_bytes;
    if (!(tp->self = strdup(a->name ? a->name : "refit"))) {
        rc = tcp_h->error_set(REFIT_ENOMEM, "tcp: out of memory");
        goto fail;
    }
    if ((rc = read_token(tp, cfg)))
        goto fail;
    if (tcp_fill_random(&tp->instance, sizeof(tp->instance)) || pipe2(tp->wake, O_CLOEXEC | O_NONBLOCK)) {
        rc = tcp_h->error_set(REFIT_EIO, "tcp: %s: %s", tp->name, strerror(errno));
        goto fail;
    }
    if ((rc = open_listener(tp, cfg)) || (rc = tcp_server_start(tp)))
        goto fail;
    *out = tp;
    return 0;
fail:
    tcp_fini(tp);
    return rc;
}

static void tcp_fini(refit_tp_t *tp)
{
    if (!tp)
        return;
    tcp_server_stop(tp);
    while (tp->peers)
        tcp_disconnect(tp, tp->peers);
    if (tp->lfd >= 0)
        close(tp->lfd);
    for (int i = 0; i < 2; i++)
        if (tp->wake[i] >= 0)
            close(tp->wake[i]);
    tcp_nq_fini(tp);
    free(tp->self);
    if (tp->token)
        memset(tp->token, 0, tp->token_len);
    free(tp->token);
    free(tp->secret_path);
    free(tp->slots);
    pthread_mutex_destroy(&tp->lock);
    pthread_mutex_destroy(&tp->nlock);
    pthread_mutex_destroy(&tp->plock);
    pthread_cond_destroy(&tp->cond);
    pthread_cond_destroy(&tp->ncond);
    free(tp);
}

static int tcp_caps(refit_tp_t *tp, struct refit_tp_caps *c)
{
    (void)tp;
    size_t sz = c->size < sizeof(*c) ? c->size : sizeof(*c);
    struct refit_tp_caps v = {.size = sz,
                              .memtypes = REFIT_MEMTYPE_BIT(REFIT_MEM_HOST),
                              .max_desc_per_post = 0,
                              .notify = 1,
                              .max_notify_len = TCP_MAX_NOTIFY,
                              .max_region_len = 0};
    memcpy(c, &v, sz);
    return 0;
}

/* The start of a blob of n bytes (address, rkey) into buf: with buf NULL
 * only its size into *len; else, when *len holds n, the blob zeroed with
 * its magic and our wire version in the head. */
static int blob_begin(void *buf, size_t *len, size_t n, uint32_t magic, const char *what)
{
    if (!buf) {
        *len = n;
        return 0;
    }
    if (*len < n)
        return tcp_h->error_set(REFIT_ERANGE, "tcp: %s needs %zu bytes", what, n);
    uint8_t *b = buf;
    memset(b, 0, n);
    tcp_put32(b, magic);
    b[4] = TCP_WIRE_VERSION;
    return 0;
}

static int tcp_address(refit_tp_t *tp, void *buf, size_t *len)
{
    int rc = blob_begin(buf, len, TCP_ADDR_SIZE, TCP_MAGIC_ADDR, "address");
    if (rc || !buf)
        return rc;
    uint8_t *b = buf;
    uint16_t port = get_port(&tp->adv);
    b[6] = (uint8_t)port, b[7] = (uint8_t)(port >> 8);
    tcp_put64(b + 8, tp->instance);
    if (tp->adv.ss_family == AF_INET) {
        b[5] = 4;
        memcpy(b + 16, &((struct sockaddr_in *)&tp->adv)->sin_addr, 4);
    } else {
        b[5] = 6;
        memcpy(b + 16, &((struct sockaddr_in6 *)&tp->adv)->sin6_addr, 16);
    }
    *len = TCP_ADDR_SIZE;
    return 0;
}

static int tcp_reg(refit_tp_t *tp, void *ptr, size_t len, uint32_t memtype, refit_tp_region_t **out)
{
    if (memtype != REFIT_MEM_HOST)
        return tcp_h->error_set(REFIT_ENOTSUP, "tcp: %s: memory type %u: only host memory", tp->name, memtype);
    refit_tp_region_t *r = calloc(1, sizeof(*r));
    if (!r || tcp_fill_random(r->secret, TCP_SECRET)) {
        free(r);
        return tcp_h->error_set(REFIT_ENOMEM, "tcp: %s: register %zu bytes", tp->name, len);
    }
    pthread_mutex_lock(&tp->lock);
    size_t id = 0;
    while (id < tp->n_slots && (tp->slots[id].live || tp->slots[id].refs))
        id++;
    if (id == tp->n_slots) {
        struct tcp_slot *ns = realloc(tp->slots, sizeof(*ns) * (tp->n_slots + 16));
        if (!ns) {
            pthread_mutex_unlock(&tp->lock);
            free(r);
            return tcp_h->error_set(REFIT_ENOMEM, "tcp: %s: region table", tp->name);
        }
        memset(ns + tp->n_slots, 0, sizeof(*ns) * 16);
        tp->slots = ns;
        tp->n_slots += 16;
    }
    struct tcp_slot *s = &tp->slots[id];
    s->ptr = ptr;
    s->len = len;
    s->gen = ++tp->next_gen; /* never reused, so an old key stays stale */
    memcpy(s->secret, r->secret, TCP_SECRET);
    s->live = true;
    pthread_mutex_unlock(&tp->lock);
    r->magic = TCP_REGION_MAGIC;
    r->tp = tp;
    r->id = id;
    r->gen = s->gen;
    r->len = len;
    r->ptr = ptr;
    *out = r;
    return 0;
}

static int tcp_dereg(refit_tp_t *tp, refit_tp_region_t *r)
{
    if (!r || r->magic != TCP_REGION_MAGIC || r->tp != tp)
        return tcp_h->error_set(REFIT_EINVAL, "tcp: %s: dereg of a region not registered here", tp->name);
    pthread_mutex_lock(&tp->lock);
    struct tcp_slot *s = &tp->slots[r->id];
    s->live = false;
    memset(s->secret, 0, TCP_SECRET);
    /* Transfers already on the wire may finish, for transport.timeout at
     * most (a peer trickling a WRITE a byte at a time must not hold us):
     * then their connections are cut, which ends them at once.  Every later
     * request for this key is answered "stale". */
    struct timespec dl;
    tcp_deadline(&dl, tp->timeout_ms);
    while (s->refs)
        if (pthread_cond_timedwait(&tp->cond, &tp->lock, &dl) == ETIMEDOUT && s->refs) {
            tcp_server_cut_holders(tp, r->id);
            while (s->refs)
                pthread_cond_wait(&tp->cond, &tp->lock);
        }
    pthread_mutex_unlock(&tp->lock);
    r->magic = 0;
    free(r);
    return 0;
}

static int tcp_pack_rkey(refit_tp_t *tp, refit_tp_region_t *r, void *buf, size_t *len)
{
    if (!r || r->magic != TCP_REGION_MAGIC || r->tp != tp)
        return tcp_h->error_set(REFIT_EINVAL, "tcp: %s: pack_rkey of a region not registered here", tp->name);
    int rc = blob_begin(buf, len, TCP_RKEY_SIZE, TCP_MAGIC_RKEY, "rkey");
    if (rc || !buf)
        return rc;
    uint8_t *b = buf;
    tcp_put64(b + 8, tp->instance);
    tcp_put64(b + 16, r->id);
    tcp_put64(b + 24, r->gen);
    tcp_put64(b + 32, r->len);
    memcpy(b + 40, r->secret, TCP_SECRET);
    *len = TCP_RKEY_SIZE;
    return 0;
}

static int tcp_progress(refit_tp_t *tp)
{
    (void)tp; /* the stream threads make progress on their own */
    return 0;
}

static int tcp_poll_notify(refit_tp_t *tp, void *buf, size_t cap, size_t *len, int64_t timeout_ms)
{
    return tcp_nq_poll(tp, buf, cap, len, NULL, 0, timeout_ms);
}

static int tcp_poll_notify_from(refit_tp_t *tp, void *buf, size_t cap, size_t *len, char *from,
                                size_t from_cap, int64_t timeout_ms)
{
    if (!from || from_cap < REFIT_TP_NAME_MAX + 1)
        return tcp_h->error_set(REFIT_EINVAL, "tcp: %s: poll_notify_from needs %d bytes for the sender",
                                tp->name, REFIT_TP_NAME_MAX + 1);
    return tcp_nq_poll(tp, buf, cap, len, from, from_cap, timeout_ms);
}

static int tcp_describe(refit_tp_t *tp, char *buf, size_t cap)
{
    if (!buf || !cap)
        return tcp_h->error_set(REFIT_EINVAL, "tcp: describe without a buffer");
    snprintf(buf, cap, "tcp on %s, %d streams, %s", tp->where, tp->streams,
             tp->secret_path ? "loopback only, keyed by this user's local secret" : "token authentication");
    return 0;
}

static const struct refit_transport_ops tcp_ops = {
    .size = sizeof(struct refit_transport_ops),
    .init = tcp_init,
    .fini = tcp_fini,
    .caps = tcp_caps,
    .address = tcp_address,
    .reg = tcp_reg,
    .dereg = tcp_dereg,
    .pack_rkey = tcp_pack_rkey,
    .connect = tcp_connect,
    .disconnect = tcp_disconnect,
    .unpack_rkey = tcp_unpack_rkey,
    .release_rkey = tcp_release_rkey,
    .post = tcp_post,
    .progress = tcp_progress,
    .test = tcp_test,
    .wait = tcp_wait,
    .req_free = tcp_req_free,
    .notify = tcp_notify,
    .poll_notify = tcp_poll_notify,
    .describe = tcp_describe,
    .poll_notify_from = tcp_poll_notify_from,
    .notify_stats = tcp_notify_stats,
};

static int tcp_load(const struct refit_host *host)
{
    tcp_h = host;
    return 0;
}

static const struct refit_plugin tcp_plugin = {
    .abi_major = REFIT_ABI_MAJOR,
    .abi_minor = REFIT_ABI_MINOR,
    .kind = REFIT_PLUGIN_TRANSPORT,
    .name = TCP_NAME,
    .version = "1.0",
    .description = "TCP sockets: the always-built fallback (IPv4/IPv6, parallel streams, HMAC auth)",
    .config = tcp_fields,
    .n_config = sizeof(tcp_fields) / sizeof(tcp_fields[0]),
    .load = tcp_load,
    .unload = NULL,
    .ops = &tcp_ops,
};

REFIT_PLUGIN_EXPORT const struct refit_plugin *refit_plugin_entry(void)
{
    return &tcp_plugin;
}
