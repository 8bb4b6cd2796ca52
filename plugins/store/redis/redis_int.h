/* redis_int.h — what the files of the redis store plugin share (not
 * installed; hidden like the rest of the plugin): the per-store object,
 * pipelined batches, and poll() with the notifications that wake it
 * (redis_notify.c). */
#ifndef REFIT_REDIS_INT_H
#define REFIT_REDIS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "refit/plugin.h"
#include "refit/store.h"

extern const struct refit_host *H;

#define RD_MAX_WATCHED 32
/* Entries a change stream keeps (about: MAXLEN ~), and at most one
 * watch() returns. */
#define RD_EV_MAXLEN 4096
#define RD_EV_MAXLEN_S "4096"

struct rd_store {
    int opened;
    redisContext *c;
    char *host, *unix_path, *user, *password;
    int port, db;
    int64_t connect_ms, command_ms, timeout_ms, backoff_max_ms, poll_min_ms, poll_max_ms;
    uint64_t max_value;
    char *prefix; /* "refit/<ns>/" */
    size_t prefix_len;
    char *seq_key; /* "refit/<ns>~seq" */
    uint64_t generation;
    char where[300]; /* "redis 127.0.0.1:6379" for messages */
    /* Notifications (redis_notify.c): a second connection in subscribe
     * mode, opened by the first poll that waits, and the channels it
     * listens to (the change counters' names). */
    bool notify;
    redisContext *sub;
    char **subs;
    size_t n_subs;
    /* watch() (redis_watch.c): the generation each watched stream's
     * cursors were issued in, by a hash of the stream's name. */
    struct {
        uint64_t hash, gen;
    } watched[RD_MAX_WATCHED];
    size_t n_watched;
};

/* One command of a pipelined batch (argv/len as redisAppendCommandArgv). */
struct rd_cmd {
    int argc;
    const char *argv[8];
    size_t len[8];
    /* A longer command (MGET of many keys): argc entries here instead. */
    const char **argvp;
    const size_t *lenp;
};

struct timeval rd_tv_of(int64_t ms);
/* n commands, n replies, one round trip, reconnecting as redis_store.c says. */
int rd_batch(struct rd_store *st, const struct rd_cmd *cmds, size_t n, redisReply **replies, const char *what,
             const char *key);
/* The change counter of a key's first component ("refit/N~seq/sources"),
 * H->alloc'ed; NULL for a key without '/'. */
int rd_comp_seq(struct rd_store *st, const char *key, char **out);
/* The store ABI's poll() (redis_notify.c). */
int rd_poll(void *obj, const char *prefix, uint64_t since, uint64_t *cursor, int64_t timeout_ms);
/* The change stream of a key's first component ("refit/N~ev/sources"),
 * H->alloc'ed; NULL for a key without '/' (redis_watch.c). */
int rd_ev_stream(struct rd_store *st, const char *key, char **out);
/* XADD stream MAXLEN ~ RD_EV_MAXLEN * k key: the strings must outlive the batch. */
void rd_xadd_cmd(struct rd_cmd *c, const char *stream, const char *key);
/* The store ABI's watch() (redis_watch.c). */
int rd_watch(void *obj, const char *prefix, uint64_t since, uint64_t *cursor, int64_t timeout_ms, char ***keys,
             size_t *n);
int rd_reply_error(struct rd_store *st, const redisReply *r, const char *what, const char *key);
/* "refit/<ns>/" + key, H->alloc'ed (NULL: out of memory); *len its length. */
char *rd_full_key(struct rd_store *st, const char *key, size_t *len);
void rd_free_replies(redisReply **r, size_t n);
void rd_drop_conn(struct rd_store *st);
/* The store ABI's reads (redis_read.c). */
int rd_get(void *obj, const char *key, void **val, size_t *len);
int rd_get_many(void *obj, struct refit_store_get_item *items, size_t n);
int rd_list(void *obj, const char *prefix, char ***keys, size_t *n);
/* Reads, then writes, in one batch (redis_read.c). */
int rd_get_put_many(void *obj, struct refit_store_get_item *gets, size_t n_get,
                    const struct refit_store_put_item *puts, size_t n_put);

/* A pipelined write's commands (redis_store.c): total of them in cmds, the
 * strings they point into, and where the XADDs begin (their replies and the
 * PUBLISHes' are not errors of the write). */
struct rd_mset {
    size_t n, nc, total, first_x;
    struct rd_cmd *cmds;
    char **keys, **comps, **streams;
    char (*ttl)[24];
};
int rd_mset_prepare(struct rd_store *st, const struct refit_store_put_item *items, size_t n, struct rd_mset *w);
/* The write's replies (w->total of them, from a successful batch). */
int rd_mset_check(struct rd_store *st, const struct refit_store_put_item *items, const struct rd_mset *w,
                  redisReply **rep);
void rd_mset_free(struct rd_mset *w);

/* Wait up to ms for a change of `channel` (a counter's name): returns at
 * the first message, at once after subscribing for the first time (the
 * caller re-reads the counter, which closes the race with a write made
 * before the subscription), or after ms.  Without notifications, or when
 * the subscription cannot be made, it sleeps ms: poll() stays correct,
 * only slower. */
void rd_notify_wait(struct rd_store *st, const char *channel, int64_t ms);
void rd_notify_close(struct rd_store *st);

#endif
