/* redis_notify.c — poll(): the change counters, and waking by Redis
 * pub/sub instead of a timer.
 *
 * Writers PUBLISH on the channel named like each change counter they INCR
 * (redis_store.c: in the write's own pipeline, and inside the cas script).
 * A store handle that waits in poll() opens a second connection, SUBSCRIBEs
 * it to the counter's channel and keeps the subscription, so messages that
 * arrive between two polls are buffered and the next wait returns at once.
 * A message only says "re-read the counter": poll() decides from the
 * counter, so a lost or spurious message costs at most one re-check
 * interval or one extra read, never a wrong answer.
 *
 * The wait never calls a blocking hiredis read: it waits for the socket
 * with poll(2) and parses what arrived, because a hiredis read timeout
 * leaves the context unusable.  A broken subscription is dropped and made
 * again by the next wait. */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include "redis_int.h"
#include "refit/log.h"
#include "refit/status.h"
#include "store_common.h"

static void sub_drop(struct rd_store *st)
{
    if (st->sub)
        redisFree(st->sub);
    st->sub = NULL;
    for (size_t i = 0; i < st->n_subs; i++)
        H->free(st->subs[i]);
    H->free(st->subs);
    st->subs = NULL;
    st->n_subs = 0;
}

void rd_notify_close(struct rd_store *st)
{
    sub_drop(st);
}

static int sub_connect(struct rd_store *st)
{
    st->sub = st->unix_path ? redisConnectUnixWithTimeout(st->unix_path, rd_tv_of(st->connect_ms))
                            : redisConnectWithTimeout(st->host, st->port, rd_tv_of(st->connect_ms));
    if (!st->sub || st->sub->err || redisSetTimeout(st->sub, rd_tv_of(st->command_ms)) != REDIS_OK) {
        sub_drop(st);
        return REFIT_ECONN;
    }
    if (st->password) {
        const char *av[3] = {"AUTH", st->user ? st->user : st->password, st->password};
        redisReply *r = redisCommandArgv(st->sub, st->user ? 3 : 2, av, NULL);
        int bad = !r || r->type == REDIS_REPLY_ERROR;
        if (r)
            freeReplyObject(r);
        if (bad) {
            sub_drop(st);
            return REFIT_EPERM;
        }
    }
    return 0;
}

/* Subscribed to channel: 0 (fresh 1 when it was just made), or an error. */
static int subscribe(struct rd_store *st, const char *channel, int *fresh)
{
    *fresh = 0;
    for (size_t i = 0; i < st->n_subs; i++)
        if (!strcmp(st->subs[i], channel))
            return 0;
    if (!st->sub && sub_connect(st))
        return REFIT_ECONN;
    char **ns = H->realloc(st->subs, (st->n_subs + 1) * sizeof(*ns));
    if (!ns)
        return REFIT_ENOMEM;
    st->subs = ns;
    size_t cl = strlen(channel);
    if (!(st->subs[st->n_subs] = H->alloc(cl + 1)))
        return REFIT_ENOMEM;
    memcpy(st->subs[st->n_subs], channel, cl + 1);
    const char *av[2] = {"SUBSCRIBE", channel};
    redisReply *r = redisCommandArgv(st->sub, 2, av, NULL);
    int bad = !r || r->type != REDIS_REPLY_ARRAY;
    if (r)
        freeReplyObject(r);
    if (bad) {
        H->free(st->subs[st->n_subs]);
        H->log(REFIT_LOG_DEBUG, "store.redis", "%s: SUBSCRIBE %s failed; poll re-checks on its timer", st->where,
               channel);
        sub_drop(st);
        return REFIT_ECONN;
    }
    st->n_subs++;
    *fresh = 1;
    return 0;
}

/* Parse and drop every message already received; 1 when there was one. */
static int drain(struct rd_store *st)
{
    int got = 0;
    for (;;) {
        void *r = NULL;
        if (redisGetReplyFromReader(st->sub, &r) != REDIS_OK) {
            sub_drop(st);
            return 1;
        }
        if (!r)
            return got;
        freeReplyObject(r);
        got = 1;
    }
}

void rd_notify_wait(struct rd_store *st, const char *channel, int64_t ms)
{
    int fresh = 0;
    if (!st->notify || subscribe(st, channel, &fresh)) {
        rsc_sleep_ms(ms);
        return;
    }
    if (fresh || drain(st) || !st->sub)
        return;
    struct pollfd p = {.fd = st->sub->fd, .events = POLLIN};
    int n = poll(&p, 1, ms > 0x7fffffff ? 0x7fffffff : (int)ms);
    if (n > 0) {
        if (redisBufferRead(st->sub) != REDIS_OK)
            sub_drop(st); /* the server went away: poll's own read reconnects */
        else
            drain(st);
    }
}

/* ------------------------------------------------------------------ */
/* poll() */

/* The namespace's change counter combined with the generation, so that a
 * restart (counter back to 0) never repeats an old cursor. */
static int read_cursor(struct rd_store *st, const char *counter, uint64_t *cur)
{
    struct rd_cmd c = {2, {"GET", counter}, {3, strlen(counter)}, NULL, NULL};
    redisReply *r = NULL;
    int rc = rd_batch(st, &c, 1, &r, "poll GET", NULL);
    if (rc)
        return rc;
    uint64_t seq = 0;
    if (r->type == REDIS_REPLY_ERROR)
        rc = rd_reply_error(st, r, "poll GET", NULL);
    else if (r->type == REDIS_REPLY_STRING)
        seq = strtoull(r->str, NULL, 10);
    else if (r->type != REDIS_REPLY_NIL)
        rc = H->error_set(REFIT_EPROTO, "store %s: change counter %s of reply type %d", st->where, counter,
                          r->type);
    freeReplyObject(r);
    *cur = (st->generation << 48) + seq + 1;
    return rc;
}

struct rd_poll_ctx {
    struct rd_store *st;
    const char *counter;
};

static int poll_cursor(void *arg, uint64_t *cur)
{
    struct rd_poll_ctx *p = arg;
    return read_cursor(p->st, p->counter, cur);
}

/* Between two reads of the counter: until a write's message, or ms. */
static void poll_wait(void *arg, int64_t ms)
{
    struct rd_poll_ctx *p = arg;
    rd_notify_wait(p->st, p->counter, ms);
}

int rd_poll(void *obj, const char *prefix, uint64_t since, uint64_t *cursor, int64_t timeout_ms)
{
    struct rd_store *st = obj;
    static const struct rsc_poll_ops ops = {poll_cursor, poll_wait};
    /* "sources/..." watches the counter of "sources"; a prefix without '/'
     * may span components: the namespace's counter. */
    char *comp = NULL;
    if (rd_comp_seq(st, prefix, &comp))
        return REFIT_ENOMEM;
    struct rd_poll_ctx p = {st, comp ? comp : st->seq_key};
    int rc = rsc_poll(&ops, &p, st->where, prefix, since, cursor, timeout_ms, st->poll_min_ms,
                      st->poll_max_ms);
    H->free(comp);
    return rc;
}

