/* redis_store.c — the store on a Redis server (hiredis).
 *
 * Key "k" of namespace N is the Redis string "refit/N/k"; TTLs are Redis
 * TTLs (SET ... PX).  Every write also INCRs "refit/N~seq" and, for a key
 * "c/...", "refit/N~seq/c" in the same pipeline: those counters are poll()'s
 * cursors, and '~' (which keys cannot contain) keeps them out of every
 * listing.  Every write also PUBLISHes on channels of the same names, so
 * that poll() waits for a message (redis_notify.c) instead of sleeping out
 * its re-check interval.  cas is one Lua script, so it is
 * atomic on the server.  Bulk reads and writes are pipelined: one round
 * trip for any number of keys.
 *
 * A lost connection (Redis restarted, network cut) is noticed as a NULL
 * reply; the plugin then reconnects with backoff within store.timeout,
 * re-authenticates, bumps its generation (so the core re-writes the
 * publisher's live records) and sends the failed batch once more.  Every
 * reply is checked for NULL and for REDIS_REPLY_ERROR.  Values always go
 * through redisAppendCommandArgv (binary-safe).  Reads (get, get_many,
 * list) are in redis_read.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "refit/log.h"
#include "refit/plugin.h"
#include "refit/store.h"
#include "redis_int.h"
#include "store_common.h"

const struct refit_host *H;

static const struct refit_cfg_field rd_fields[] = {
    {"host", REFIT_CFG_STRING, "127.0.0.1", 0, -1, NULL, "Redis host"},
    {"port", REFIT_CFG_INT, "6379", 1, 65535, NULL, "Redis port"},
    {"unix_socket", REFIT_CFG_STRING, NULL, 0, -1, NULL, "connect through this Unix socket instead"},
    {"db", REFIT_CFG_INT, "0", 0, 1000000, NULL, "database number (SELECT)"},
    {"user", REFIT_CFG_STRING, NULL, 0, -1, NULL, "ACL user (Redis 6+); with password"},
    {"password", REFIT_CFG_STRING, NULL, 0, -1, NULL, "password (prefer password_file)"},
    {"password_file", REFIT_CFG_STRING, NULL, 0, -1, NULL,
     "file whose first line is the password (relative to the config file)"},
    {"connect_timeout", REFIT_CFG_DURATION, "2s", 1, 3600000, NULL, "one connection attempt's limit"},
    {"command_timeout", REFIT_CFG_DURATION, NULL, 1, 86400000, NULL,
     "socket timeout of one command (default store.timeout)"},
    {"backoff_max", REFIT_CFG_DURATION, "1s", 1, 60000, NULL,
     "longest pause between reconnection attempts (they stop at store.timeout)"},
    {"poll_min", REFIT_CFG_DURATION, "5ms", 1, 60000, NULL, "first re-check interval of poll"},
    {"poll_max", REFIT_CFG_DURATION, "200ms", 1, 60000, NULL, "longest re-check interval of poll"},
    {"notify", REFIT_CFG_BOOL, "true", 0, -1, NULL,
     "wake poll at once through Redis pub/sub when a key below its prefix changes (else only its re-checks)"},
};

/* The cas script: KEYS[1] the key, KEYS[2] and KEYS[3] the change counters
 * (namespace, first component; the same key when the key has no '/'),
 * KEYS[4] the change stream (redis_watch.c); ARGV[1] "1" when an expected
 * value is given, ARGV[2] that value, ARGV[3] the new value, ARGV[4] the
 * ttl in ms ("0": none), ARGV[5] the relative key for the stream ("": no
 * stream, a key without '/').  Lua strings are binary-safe. */
static const char rd_cas_lua[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if ARGV[1] == '0' then\n"
    "  if cur then return 0 end\n"
    "elseif (not cur) or cur ~= ARGV[2] then\n"
    "  return 0\n"
    "end\n"
    "if ARGV[4] ~= '0' then redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])\n"
    "else redis.call('SET', KEYS[1], ARGV[3]) end\n"
    "redis.call('INCR', KEYS[2])\n"
    "redis.pcall('PUBLISH', KEYS[2], '1')\n"
    "if KEYS[3] ~= KEYS[2] then redis.call('INCR', KEYS[3]) redis.pcall('PUBLISH', KEYS[3], '1') end\n"
    "if ARGV[5] ~= '' then redis.call('XADD', KEYS[4], 'MAXLEN', '~', '" RD_EV_MAXLEN_S "', '*', 'k', ARGV[5]) end\n"
    "return 1\n";

/* ------------------------------------------------------------------ */
/* Helpers */

struct timeval rd_tv_of(int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static char *rd_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = H->alloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* "refit/<ns>/" + key, allocated with H->alloc. */
char *rd_full_key(struct rd_store *st, const char *key, size_t *len)
{
    size_t kl = strlen(key);
    char *k = H->alloc(st->prefix_len + kl + 1);
    if (!k)
        return NULL;
    memcpy(k, st->prefix, st->prefix_len);
    memcpy(k + st->prefix_len, key, kl + 1);
    *len = st->prefix_len + kl;
    return k;
}

void rd_drop_conn(struct rd_store *st)
{
    if (st->c) {
        redisFree(st->c);
        st->c = NULL;
    }
}

/* A reply that is an error: translate to a status with the server's text. */
int rd_reply_error(struct rd_store *st, const redisReply *r, const char *what, const char *key)
{
    int status = REFIT_EPLUGIN;
    if (!strncmp(r->str, "NOAUTH", 6) || !strncmp(r->str, "WRONGPASS", 9) || !strncmp(r->str, "NOPERM", 6))
        status = REFIT_EPERM;
    else if (!strncmp(r->str, "OOM", 3))
        status = REFIT_ENOMEM;
    return H->error_set(status, "store %s: %s%s%s%s: server error: %.*s", st->where, what, key ? " key '" : "",
                        key ? key : "", key ? "'" : "", (int)r->len, r->str);
}

/* One command on the current connection, used while (re)connecting. */
static int setup_cmd(struct rd_store *st, int argc, const char **argv, const char *what)
{
    redisReply *r = redisCommandArgv(st->c, argc, argv, NULL);
    if (!r)
        return H->error_set(REFIT_ECONN, "store %s: %s: %s", st->where, what, st->c->errstr);
    int rc = r->type == REDIS_REPLY_ERROR ? rd_reply_error(st, r, what, NULL) : 0;
    freeReplyObject(r);
    return rc;
}

/* One connection attempt: connect, set the command timeout, AUTH, SELECT. */
static int connect_once(struct rd_store *st)
{
    rd_drop_conn(st);
    st->c = st->unix_path ? redisConnectUnixWithTimeout(st->unix_path, rd_tv_of(st->connect_ms))
                          : redisConnectWithTimeout(st->host, st->port, rd_tv_of(st->connect_ms));
    if (!st->c)
        return H->error_set(REFIT_ENOMEM, "store %s: cannot allocate a hiredis context", st->where);
    if (st->c->err) {
        int rc = H->error_set(REFIT_ECONN, "store %s: connect: %s (hiredis error %d)", st->where,
                              st->c->errstr, st->c->err);
        rd_drop_conn(st);
        return rc;
    }
    /* hiredis frees its read buffer after every reply larger than maxbuf
     * (16 KiB by default) and grows it again for the next: keep up to
     * 8 MiB, so reading catalog-sized values does not reallocate and fault
     * in fresh pages each time. */
    if (st->c->reader)
        st->c->reader->maxbuf = 8u << 20;
    if (redisSetTimeout(st->c, rd_tv_of(st->command_ms)) != REDIS_OK) {
        rd_drop_conn(st);
        return H->error_set(REFIT_ECONN, "store %s: cannot set the command timeout", st->where);
    }
    int rc = 0;
    if (st->password) {
        const char *av[3] = {"AUTH", st->user ? st->user : st->password, st->password};
        rc = setup_cmd(st, st->user ? 3 : 2, av, "AUTH");
    }
    if (!rc) { /* a server that wants a password says so here, not at the first put */
        const char *av[1] = {"PING"};
        rc = setup_cmd(st, 1, av, "PING");
    }
    if (!rc && st->db) {
        char dbs[16];
        snprintf(dbs, sizeof(dbs), "%d", st->db);
        const char *av[2] = {"SELECT", dbs};
        rc = setup_cmd(st, 2, av, "SELECT");
    }
    if (rc)
        rd_drop_conn(st);
    return rc;
}

/* Connect if not connected, retrying with backoff until the deadline.  A
 * new connection after a lost one is a new generation: the server may have
 * restarted empty. */
static int ensure_conn(struct rd_store *st, int64_t deadline)
{
    if (st->c && !st->c->err)
        return 0;
    int64_t wait = 10;
    for (;;) {
        int rc = connect_once(st);
        if (!rc) {
            st->generation++;
            if (st->generation > 1)
                H->log(REFIT_LOG_INFO, "store.redis", "%s: reconnected (generation %llu)", st->where,
                       (unsigned long long)st->generation);
            return 0;
        }
        /* Wrong password or ACL: retrying will not help. */
        if (rc == REFIT_EPERM || rc == REFIT_ENOMEM)
            return rc;
        int64_t left = deadline - rsc_now_ms();
        if (left <= 0)
            return H->error_push(rc, "gave up reconnecting after store.timeout (%lld ms)",
                                 (long long)st->timeout_ms);
        rsc_sleep_ms(wait < left ? wait : left);
        wait = wait * 2 < st->backoff_max_ms ? wait * 2 : st->backoff_max_ms;
    }
}

/* ------------------------------------------------------------------ */
/* Pipelined batches */

/* Send n commands and read n replies in one round trip.  On a lost
 * connection: reconnect (backoff) and send the batch again, a bounded
 * number of times within the store timeout.  replies[i] are non-NULL on
 * success; the caller checks each for REDIS_REPLY_ERROR and frees them. */
int rd_batch(struct rd_store *st, const struct rd_cmd *cmds, size_t n, redisReply **replies,
                    const char *what, const char *key)
{
    int64_t deadline = rsc_now_ms() + st->timeout_ms;
    for (int attempt = 0;; attempt++) {
        int rc = ensure_conn(st, deadline);
        if (rc)
            return H->error_push(rc, "%s%s%s%s", what, key ? " key '" : "", key ? key : "", key ? "'" : "");
        size_t got = 0;
        int ok = 1;
        for (size_t i = 0; i < n && ok; i++)
            ok = redisAppendCommandArgv(st->c, cmds[i].argc, (const char **)(cmds[i].argvp ? cmds[i].argvp : cmds[i].argv),
                                        cmds[i].lenp ? cmds[i].lenp : cmds[i].len) == REDIS_OK;
        for (; ok && got < n; got++) {
            void *r = NULL;
            if (redisGetReply(st->c, &r) != REDIS_OK || !r) {
                ok = 0;
                break;
            }
            replies[got] = r;
        }
        if (ok)
            return 0;
        for (size_t i = 0; i < got; i++) {
            freeReplyObject(replies[i]);
            replies[i] = NULL;
        }
        char err[160];
        snprintf(err, sizeof(err), "%s (hiredis error %d)", st->c->errstr, st->c->err);
        int timeout = st->c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
        rd_drop_conn(st);
        H->log(REFIT_LOG_WARN, "store.redis", "%s: %s: connection lost: %s; reconnecting", st->where, what, err);
        if (attempt >= 3 || rsc_now_ms() >= deadline)
            return H->error_set(timeout ? REFIT_ETIMEDOUT : REFIT_ECONN, "store %s: %s%s%s%s: %s", st->where,
                                what, key ? " key '" : "", key ? key : "", key ? "'" : "", err);
    }
}

void rd_free_replies(redisReply **r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (r[i])
            freeReplyObject(r[i]);
}

/* SET key val [PX ttl] into cmd; ttlbuf must outlive the batch. */
static void set_cmd(struct rd_cmd *c, const char *fk, size_t fkl, const void *val, size_t len, int64_t ttl_ms,
                    char *ttlbuf)
{
    c->argc = 3;
    c->argv[0] = "SET";
    c->len[0] = 3;
    c->argv[1] = fk;
    c->len[1] = fkl;
    c->argv[2] = len ? val : "";
    c->len[2] = len;
    if (ttl_ms > 0) {
        snprintf(ttlbuf, 24, "%lld", (long long)ttl_ms);
        c->argc = 5;
        c->argv[3] = "PX";
        c->len[3] = 2;
        c->argv[4] = ttlbuf;
        c->len[4] = strlen(ttlbuf);
    }
}

static void incr_cmd(struct rd_store *st, struct rd_cmd *c, const char *counter)
{
    c->argc = 2;
    c->argv[0] = "INCR";
    c->len[0] = 4;
    c->argv[1] = counter ? counter : st->seq_key;
    c->len[1] = strlen(c->argv[1]);
}

/* PUBLISH on the channel named like a change counter: wakes pollers. */
static void publish_cmd(struct rd_store *st, struct rd_cmd *c, const char *counter)
{
    c->argc = 3;
    c->argv[0] = "PUBLISH";
    c->len[0] = 7;
    c->argv[1] = counter ? counter : st->seq_key;
    c->len[1] = strlen(c->argv[1]);
    c->argv[2] = "1";
    c->len[2] = 1;
}

/* Every write bumps the namespace's change counter and, for a key with a
 * '/', the counter of its first component ("refit/N~seq/sources"), so that
 * a poll on "sources/" is not woken by every heartbeat.  *out is NULL for a
 * key without '/'; otherwise H->alloc'ed. */
int rd_comp_seq(struct rd_store *st, const char *key, char **out)
{
    const char *slash = strchr(key, '/');
    *out = NULL;
    if (!slash)
        return 0;
    size_t sl = strlen(st->seq_key), cl = (size_t)(slash - key);
    char *c = H->alloc(sl + cl + 2);
    if (!c)
        return REFIT_ENOMEM;
    memcpy(c, st->seq_key, sl);
    c[sl] = '/';
    memcpy(c + sl + 1, key, cl);
    c[sl + 1 + cl] = '\0';
    *out = c;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Open / close */

static int read_password_file(struct rd_store *st, const struct refit_cfg_view *cfg)
{
    char *path = NULL;
    int rc = H->cfg_path(cfg, "password_file", &path);
    if (rc == REFIT_ENOENT)
        return 0;
    if (rc)
        return rc;
    FILE *f = fopen(path, "r");
    if (!f) {
        rc = H->error_set(REFIT_EPERM, "store redis: password_file %s: %s", path, strerror(errno));
        H->free(path);
        return rc;
    }
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    size_t line = strcspn(buf, "\r\n");
    if (line == sizeof(buf) - 1) /* no end of line in 1 KiB: not a password */
        rc = H->error_set(REFIT_ECONFIG, "store redis: password_file %s: first line longer than %zu bytes", path,
                          sizeof(buf) - 2);
    buf[line] = '\0';
    if (!rc && !buf[0])
        rc = H->error_set(REFIT_ECONFIG, "store redis: password_file %s is empty", path);
    H->free(path);
    if (!rc) {
        H->free(st->password);
        st->password = rd_strdup(buf);
        rc = st->password ? 0 : REFIT_ENOMEM;
    }
    explicit_bzero(buf, sizeof(buf)); /* the secret does not linger on the stack */
    return rc;
}

static int opt_str(const struct refit_cfg_view *cfg, const char *key, char **out)
{
    const char *v = NULL;
    int rc = H->cfg_str(cfg, key, &v);
    if (rc == REFIT_ENOENT)
        return 0;
    if (rc)
        return rc;
    *out = rd_strdup(v);
    return *out ? 0 : REFIT_ENOMEM;
}

static int rd_open(void *obj, const struct refit_store_open_args *a)
{
    struct rd_store *st = obj;
    st->opened = 1;
    st->timeout_ms = a->timeout_ms;
    st->max_value = a->max_value;
    int64_t port = 0, db = 0;
    int rc = opt_str(a->cfg, "host", &st->host);
    if (!rc)
        rc = H->cfg_int(a->cfg, "port", &port);
    if (!rc)
        rc = H->cfg_int(a->cfg, "db", &db);
    if (!rc)
        rc = opt_str(a->cfg, "unix_socket", &st->unix_path);
    if (!rc)
        rc = opt_str(a->cfg, "user", &st->user);
    if (!rc)
        rc = opt_str(a->cfg, "password", &st->password);
    if (!rc)
        rc = read_password_file(st, a->cfg);
    if (!rc)
        rc = H->cfg_duration_ms(a->cfg, "connect_timeout", &st->connect_ms);
    if (!rc) {
        rc = H->cfg_duration_ms(a->cfg, "command_timeout", &st->command_ms);
        if (rc == REFIT_ENOENT) {
            st->command_ms = a->timeout_ms;
            rc = 0;
        }
    }
    if (!rc)
        rc = H->cfg_duration_ms(a->cfg, "backoff_max", &st->backoff_max_ms);
    if (!rc)
        rc = H->cfg_duration_ms(a->cfg, "poll_min", &st->poll_min_ms);
    if (!rc)
        rc = H->cfg_duration_ms(a->cfg, "poll_max", &st->poll_max_ms);
    if (!rc)
        rc = H->cfg_bool(a->cfg, "notify", &st->notify);
    if (rc)
        return rc;
    if (st->user && !st->password)
        return H->error_set(REFIT_ECONFIG, "store redis: user '%s' given without password or password_file",
                            st->user);
    st->port = (int)port;
    st->db = (int)db;
    if (st->unix_path)
        snprintf(st->where, sizeof(st->where), "redis unix:%s", st->unix_path);
    else
        snprintf(st->where, sizeof(st->where), "redis %s:%d", st->host, st->port);
    size_t nl = strlen(a->ns);
    st->prefix = H->alloc(nl + 8);
    st->seq_key = H->alloc(nl + 12);
    if (!st->prefix || !st->seq_key)
        return REFIT_ENOMEM;
    st->prefix_len = (size_t)sprintf(st->prefix, "refit/%s/", a->ns);
    sprintf(st->seq_key, "refit/%s~seq", a->ns);
    /* Fail open() when the server is not there, but within the timeout. */
    return ensure_conn(st, rsc_now_ms() + st->timeout_ms);
}

static void rd_close(void *obj)
{
    struct rd_store *st = obj;
    if (!st->opened)
        return;
    rd_notify_close(st);
    rd_drop_conn(st);
    H->free(st->host);
    H->free(st->unix_path);
    H->free(st->user);
    if (st->password) /* do not leave the secret in freed memory */
        explicit_bzero(st->password, strlen(st->password));
    H->free(st->password);
    H->free(st->prefix);
    H->free(st->seq_key);
    memset(st, 0, sizeof(*st));
}

/* ------------------------------------------------------------------ */
/* Operations */

void rd_mset_free(struct rd_mset *w)
{
    for (size_t i = 0; w->keys && i < w->n; i++)
        H->free(w->keys[i]);
    for (size_t i = 0; w->streams && i < w->n; i++)
        H->free(w->streams[i]);
    for (size_t j = 0; j < w->nc; j++)
        H->free(w->comps[j]);
    H->free(w->streams);
    H->free(w->keys);
    H->free(w->comps);
    H->free(w->cmds);
    H->free(w->ttl);
    memset(w, 0, sizeof(*w));
}

int rd_mset_prepare(struct rd_store *st, const struct refit_store_put_item *items, size_t n, struct rd_mset *w)
{
    /* n SETs, the namespace's INCR, one INCR per distinct first component,
     * a PUBLISH for each counter, and an XADD to its change stream per key
     * with a component. */
    memset(w, 0, sizeof(*w));
    w->n = n;
    w->cmds = H->calloc(4 * n + 2, sizeof(*w->cmds));
    w->keys = H->calloc(n, sizeof(char *));
    w->comps = H->calloc(n, sizeof(char *));
    w->streams = H->calloc(n, sizeof(char *));
    w->ttl = H->calloc(n, 24);
    int rc = (w->cmds && w->keys && w->comps && w->streams && w->ttl) ? 0 : REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < n; i++) {
        size_t fl;
        w->keys[i] = rd_full_key(st, items[i].key, &fl);
        if (!w->keys[i]) {
            rc = REFIT_ENOMEM;
            break;
        }
        set_cmd(&w->cmds[i], w->keys[i], fl, items[i].val, items[i].len, items[i].ttl_ms, w->ttl[i]);
        if ((rc = rd_ev_stream(st, items[i].key, &w->streams[i])))
            break;
        char *c;
        if ((rc = rd_comp_seq(st, items[i].key, &c)) || !c)
            continue;
        size_t j = 0;
        while (j < w->nc && strcmp(w->comps[j], c))
            j++;
        if (j < w->nc)
            H->free(c);
        else
            w->comps[w->nc++] = c;
    }
    if (rc) {
        rd_mset_free(w);
        return rc;
    }
    size_t nc = w->nc;
    w->total = w->first_x = n + 2 * (1 + nc);
    incr_cmd(st, &w->cmds[n], NULL);
    publish_cmd(st, &w->cmds[n + 1 + nc], NULL);
    for (size_t j = 0; j < nc; j++) {
        incr_cmd(st, &w->cmds[n + 1 + j], w->comps[j]);
        publish_cmd(st, &w->cmds[n + 2 + nc + j], w->comps[j]);
    }
    for (size_t i = 0; i < n; i++)
        if (w->streams[i])
            rd_xadd_cmd(&w->cmds[w->total++], w->streams[i], items[i].key);
    return 0;
}

int rd_mset_check(struct rd_store *st, const struct refit_store_put_item *items, const struct rd_mset *w,
                  redisReply **rep)
{
    /* A PUBLISH refused (an ACL without channels) only costs pollers
     * their wake-up: they still see the counters. */
    size_t n = w->n;
    for (size_t i = 0; i < w->total; i++)
        if ((i < n + 1 + w->nc || i >= w->first_x) && rep[i]->type == REDIS_REPLY_ERROR)
            return rd_reply_error(st, rep[i], i < n ? "SET" : i < w->first_x ? "INCR" : "XADD",
                                  i < n ? items[i].key : NULL);
    return 0;
}

static int rd_put_many(void *obj, const struct refit_store_put_item *items, size_t n)
{
    struct rd_store *st = obj;
    struct rd_mset w;
    int rc = rd_mset_prepare(st, items, n, &w);
    if (rc)
        return rc;
    redisReply **rep = H->calloc(w.total, sizeof(*rep));
    rc = rep ? rd_batch(st, w.cmds, w.total, rep, n == 1 ? "SET" : "pipelined SET", n == 1 ? items[0].key : NULL)
             : REFIT_ENOMEM;
    if (!rc)
        rc = rd_mset_check(st, items, &w, rep);
    if (rep)
        rd_free_replies(rep, w.total);
    H->free(rep);
    rd_mset_free(&w);
    return rc;
}

static int rd_put(void *obj, const char *key, const void *val, size_t len, int64_t ttl_ms)
{
    struct refit_store_put_item it = {key, val, len, ttl_ms};
    return rd_put_many(obj, &it, 1);
}

static int rd_del(void *obj, const char *key)
{
    struct rd_store *st = obj;
    size_t fl;
    char *fk = rd_full_key(st, key, &fl);
    if (!fk)
        return REFIT_ENOMEM;
    char *comp = NULL, *stream = NULL;
    if (rd_comp_seq(st, key, &comp) || rd_ev_stream(st, key, &stream)) {
        H->free(comp);
        H->free(fk);
        return REFIT_ENOMEM;
    }
    struct rd_cmd cmds[6] = {{2, {"DEL", fk}, {3, fl}, NULL, NULL}};
    incr_cmd(st, &cmds[1], NULL);
    incr_cmd(st, &cmds[2], comp);
    publish_cmd(st, &cmds[3], NULL);
    publish_cmd(st, &cmds[4], comp);
    redisReply *rep[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    /* With a component: DEL, 2 INCR, 2 PUBLISH, XADD; without: DEL, INCR,
     * PUBLISH. */
    if (!comp)
        cmds[2] = cmds[3];
    else
        rd_xadd_cmd(&cmds[5], stream, key);
    size_t nc = comp ? 6 : 3;
    int rc = rd_batch(st, cmds, nc, rep, "DEL", key);
    if (!rc) {
        if (rep[0]->type == REDIS_REPLY_ERROR)
            rc = rd_reply_error(st, rep[0], "DEL", key);
        else if (rep[0]->type != REDIS_REPLY_INTEGER)
            rc = H->error_set(REFIT_EPROTO, "store %s: DEL key '%s': reply of type %d", st->where, key,
                              rep[0]->type);
        else if (rep[0]->integer == 0)
            rc = H->error_set(REFIT_ENOENT, "store %s: key '%s' not found", st->where, key);
        else if (rep[1]->type == REDIS_REPLY_ERROR)
            rc = rd_reply_error(st, rep[1], "INCR", NULL);
        else if (comp && rep[2]->type == REDIS_REPLY_ERROR)
            rc = rd_reply_error(st, rep[2], "INCR", NULL); /* PUBLISH replies: as in put_many */
        else if (comp && rep[5]->type == REDIS_REPLY_ERROR)
            rc = rd_reply_error(st, rep[5], "XADD", key);
    }
    rd_free_replies(rep, nc);
    H->free(stream);
    H->free(comp);
    H->free(fk);
    return rc;
}

static int rd_cas(void *obj, const char *key, const void *expected, size_t elen, const void *val, size_t len,
                  int64_t ttl_ms)
{
    struct rd_store *st = obj;
    size_t fl;
    char *fk = rd_full_key(st, key, &fl);
    if (!fk)
        return REFIT_ENOMEM;
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%lld", (long long)(ttl_ms > 0 ? ttl_ms : 0));
    char *comp = NULL, *stream = NULL;
    if (rd_comp_seq(st, key, &comp) || rd_ev_stream(st, key, &stream)) {
        H->free(comp);
        H->free(fk);
        return REFIT_ENOMEM;
    }
    const char *cseq = comp ? comp : st->seq_key, *xs = stream ? stream : st->seq_key;
    /* EVAL script 4 key seq comp-seq stream mode expected value ttl relkey:
     * 12 arguments. */
    const char *argv[12] = {"EVAL", rd_cas_lua, "4", fk, st->seq_key, cseq, xs, expected ? "1" : "0",
                            expected && elen ? expected : "", len ? val : "", ttl, stream ? key : ""};
    size_t lens[12] = {4, sizeof(rd_cas_lua) - 1, 1, fl, strlen(st->seq_key), strlen(cseq), strlen(xs), 1,
                       expected ? elen : 0, len, strlen(ttl), stream ? strlen(key) : 0};
    int64_t deadline = rsc_now_ms() + st->timeout_ms;
    int rc = ensure_conn(st, deadline);
    redisReply *r = NULL;
    for (int attempt = 0; !rc && attempt < 3; attempt++) {
        r = redisCommandArgv(st->c, 12, argv, lens);
        if (r)
            break;
        /* Lost connection: after a restart the old state is gone, so one
         * more try is what the caller would do. */
        rc = H->error_set(REFIT_ECONN, "store %s: cas key '%s': %s", st->where, key, st->c->errstr);
        rd_drop_conn(st);
        if (rsc_now_ms() < deadline)
            rc = ensure_conn(st, deadline);
    }
    if (!rc && !r)
        rc = H->error_set(REFIT_ECONN, "store %s: cas key '%s': connection keeps failing", st->where, key);
    if (!rc) {
        if (r->type == REDIS_REPLY_ERROR)
            rc = rd_reply_error(st, r, "cas (EVAL)", key);
        else if (r->type != REDIS_REPLY_INTEGER)
            rc = H->error_set(REFIT_EPROTO, "store %s: cas key '%s': reply of type %d", st->where, key, r->type);
        else if (r->integer != 1)
            rc = H->error_set(REFIT_ECONFLICT, "store %s: key '%s': cas lost", st->where, key);
    }
    if (r)
        freeReplyObject(r);
    H->free(stream);
    H->free(comp);
    H->free(fk);
    return rc;
}

static uint64_t rd_generation(void *obj)
{
    return ((struct rd_store *)obj)->generation;
}

static const struct refit_store_ops rd_ops = {
    .size = sizeof(struct refit_store_ops),
    .obj_size = sizeof(struct rd_store),
    .open = rd_open,
    .close = rd_close,
    .put = rd_put,
    .get = rd_get,
    .del = rd_del,
    .list = rd_list,
    .cas = rd_cas,
    .poll = rd_poll,
    .get_many = rd_get_many,
    .put_many = rd_put_many,
    .generation = rd_generation,
    .watch = rd_watch,
    .get_put_many = rd_get_put_many,
};

static int rd_load(const struct refit_host *host)
{
    if (host->size < offsetof(struct refit_host, cfg_has) + sizeof(host->cfg_has))
        return REFIT_EABI;
    H = host;
    rsc_load(host);
    return 0;
}

static const struct refit_plugin rd_plugin = {
    .abi_major = REFIT_ABI_MAJOR,
    .abi_minor = REFIT_ABI_MINOR,
    .kind = REFIT_PLUGIN_STORE,
    .name = "redis",
    .version = "1.0",
    .description = "Redis (hiredis): pipelined, Lua cas, TTL heartbeats, reconnect after restarts",
    .config = rd_fields,
    .n_config = sizeof(rd_fields) / sizeof(rd_fields[0]),
    .load = rd_load,
    .ops = &rd_ops,
};

REFIT_PLUGIN_EXPORT const struct refit_plugin *refit_plugin_entry(void)
{
    return &rd_plugin;
}
