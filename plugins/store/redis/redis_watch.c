/* redis_watch.c — watch(): which keys changed, from a Redis stream per
 * first key component.
 *
 * Every write (redis_store.c: put, put_many, del, and the cas script) also
 * XADDs the key written, relative, to "refit/N~ev/<component>" ('~' keeps
 * the stream out of every listing), trimmed to about RD_EV_MAXLEN entries.
 * A cursor is a stream entry ID packed into 64 bits.  watch() reads the
 * entries after it (XREAD), and when there are none it blocks in XREAD
 * BLOCK on the handle's own connection, in slices shorter than the command
 * timeout.  "The history is gone" (REFIT_ERANGE: list again) is reported
 * when the stream may have been trimmed past the cursor, when the
 * connection was re-made since the cursor was issued (the server may have
 * restarted empty), and for a cursor this handle did not issue. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_int.h"
#include "refit/status.h"
#include "store_common.h"

int rd_ev_stream(struct rd_store *st, const char *key, char **out)
{
    const char *slash = strchr(key, '/');
    *out = NULL;
    if (!slash)
        return 0;
    size_t pl = strlen(st->prefix) - 1, cl = (size_t)(slash - key); /* "refit/N" without its '/' */
    char *c = H->alloc(pl + 4 + cl + 1);
    if (!c)
        return REFIT_ENOMEM;
    memcpy(c, st->prefix, pl);
    memcpy(c + pl, "~ev/", 4);
    memcpy(c + pl + 4, key, cl);
    c[pl + 4 + cl] = '\0';
    *out = c;
    return 0;
}

void rd_xadd_cmd(struct rd_cmd *c, const char *stream, const char *key)
{
    *c = (struct rd_cmd){8, {"XADD", stream, "MAXLEN", "~", RD_EV_MAXLEN_S, "*", "k", key},
                         {4, strlen(stream), 6, 1, strlen(RD_EV_MAXLEN_S), 1, 1, strlen(key)}, NULL, NULL};
}

/* Stream IDs "ms-seq" <-> cursors: 42 bits of milliseconds (to 2109), 21
 * of sequence, plus one so that "nothing yet" (0-0) is cursor 1. */
#define SEQ_BITS 21

static uint64_t pack_id(const char *s, size_t len)
{
    char buf[48];
    if (len >= sizeof(buf))
        return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    unsigned long long ms = 0, seq = 0;
    if (sscanf(buf, "%llu-%llu", &ms, &seq) != 2 || ms >> 42 || seq >> SEQ_BITS)
        return 0;
    return ((uint64_t)ms << SEQ_BITS | seq) + 1;
}

static void unpack_id(uint64_t cur, char *buf, size_t cap)
{
    cur--;
    snprintf(buf, cap, "%" PRIu64 "-%" PRIu64, cur >> SEQ_BITS, cur & ((1u << SEQ_BITS) - 1));
}

/* The generation a stream's cursors were issued in (cursors of another
 * generation, or of a stream not in the table, are out of range). */
static uint64_t *gen_slot(struct rd_store *st, const char *stream, int make)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = stream; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    for (size_t i = 0; i < st->n_watched; i++)
        if (st->watched[i].hash == h)
            return &st->watched[i].gen;
    if (!make)
        return NULL;
    size_t i = st->n_watched < RD_MAX_WATCHED ? st->n_watched++ : (size_t)(h % RD_MAX_WATCHED);
    st->watched[i].hash = h;
    st->watched[i].gen = 0;
    return &st->watched[i].gen;
}

struct evs {
    char **k;
    size_t n, bytes;
    uint64_t last;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Entries of an XREAD reply ([[stream, [[id, [k, key]], ...]]]) whose key
 * is below prefix; ev->last the last entry's cursor. */
static int take_entries(struct rd_store *st, const redisReply *r, const char *prefix, struct evs *ev)
{
    if (r->type == REDIS_REPLY_NIL)
        return 0;
    if (r->type == REDIS_REPLY_ERROR)
        return rd_reply_error(st, r, "watch XREAD", NULL);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 || r->element[0]->type != REDIS_REPLY_ARRAY ||
        r->element[0]->elements != 2 || r->element[0]->element[1]->type != REDIS_REPLY_ARRAY)
        return H->error_set(REFIT_EPROTO, "store %s: watch: XREAD reply of unexpected shape", st->where);
    const redisReply *arr = r->element[0]->element[1];
    size_t pl = strlen(prefix);
    char **nk = H->realloc(ev->k, (ev->n + arr->elements + 1) * sizeof(char *));
    if (!nk)
        return REFIT_ENOMEM;
    ev->k = nk;
    for (size_t i = 0; i < arr->elements; i++) {
        const redisReply *e = arr->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
            e->element[1]->type != REDIS_REPLY_ARRAY || e->element[1]->elements != 2 ||
            e->element[1]->element[1]->type != REDIS_REPLY_STRING)
            return H->error_set(REFIT_EPROTO, "store %s: watch: stream entry of unexpected shape", st->where);
        uint64_t id = pack_id(e->element[0]->str, (size_t)e->element[0]->len);
        if (!id)
            return H->error_set(REFIT_EPROTO, "store %s: watch: stream entry ID '%.*s'", st->where,
                                (int)e->element[0]->len, e->element[0]->str);
        ev->last = id;
        const redisReply *k = e->element[1]->element[1];
        if ((size_t)k->len < pl || memcmp(k->str, prefix, pl) || memchr(k->str, '\0', (size_t)k->len))
            continue;
        char *c = H->alloc((size_t)k->len + 1);
        if (!c)
            return REFIT_ENOMEM;
        memcpy(c, k->str, (size_t)k->len);
        c[k->len] = '\0';
        ev->k[ev->n++] = c;
        ev->bytes += (size_t)k->len + 1;
    }
    return 0;
}

/* Sorted, deduplicated, in one block as list() returns keys. */
static int pack_keys(struct evs *ev, char ***keys, size_t *n)
{
    if (!ev->n)
        return 0;
    qsort(ev->k, ev->n, sizeof(char *), cmp_str);
    char **out = H->alloc(ev->n * sizeof(char *) + ev->bytes);
    if (!out)
        return REFIT_ENOMEM;
    char *p = (char *)(out + ev->n);
    size_t m = 0;
    for (size_t i = 0; i < ev->n; i++) {
        if (m && !strcmp(out[m - 1], ev->k[i]))
            continue;
        size_t l = strlen(ev->k[i]) + 1;
        memcpy(p, ev->k[i], l);
        out[m++] = p;
        p += l;
    }
    *keys = out;
    *n = m;
    return 0;
}

/* The newest entry's cursor (1 for an empty stream). */
static int current(struct rd_store *st, const char *stream, uint64_t *cur)
{
    struct rd_cmd c = {6, {"XREVRANGE", stream, "+", "-", "COUNT", "1"}, {9, strlen(stream), 1, 1, 5, 1}, NULL, NULL};
    redisReply *r = NULL;
    int rc = rd_batch(st, &c, 1, &r, "watch XREVRANGE", NULL);
    if (rc)
        return rc;
    *cur = 1;
    if (r->type == REDIS_REPLY_ERROR)
        rc = rd_reply_error(st, r, "watch XREVRANGE", NULL);
    else if (r->type != REDIS_REPLY_ARRAY)
        rc = H->error_set(REFIT_EPROTO, "store %s: watch: XREVRANGE reply of type %d", st->where, r->type);
    else if (r->elements && (r->element[0]->type != REDIS_REPLY_ARRAY || !r->element[0]->elements ||
                             !(*cur = pack_id(r->element[0]->element[0]->str,
                                              (size_t)r->element[0]->element[0]->len))))
        rc = H->error_set(REFIT_EPROTO, "store %s: watch: XREVRANGE entry of unexpected shape", st->where);
    freeReplyObject(r);
    return rc;
}

/* Entries after *cur without blocking, and whether the stream was trimmed
 * past it (XLEN at the cap and its first entry after *cur). */
static int read_now(struct rd_store *st, const char *stream, const char *prefix, uint64_t since,
                    struct evs *ev, int *trimmed)
{
    char id[48];
    unpack_id(since, id, sizeof(id));
    struct rd_cmd c[3] = {
        {2, {"XLEN", stream}, {4, strlen(stream)}, NULL, NULL},
        {6, {"XRANGE", stream, "-", "+", "COUNT", "1"}, {6, strlen(stream), 1, 1, 5, 1}, NULL, NULL},
        {6, {"XREAD", "COUNT", RD_EV_MAXLEN_S, "STREAMS", stream, id},
         {5, 5, strlen(RD_EV_MAXLEN_S), 7, strlen(stream), strlen(id)}, NULL, NULL},
    };
    redisReply *r[3] = {NULL, NULL, NULL};
    int rc = rd_batch(st, c, 3, r, "watch XREAD", NULL);
    if (rc)
        return rc;
    if (r[0]->type == REDIS_REPLY_INTEGER && r[0]->integer >= RD_EV_MAXLEN && r[1]->type == REDIS_REPLY_ARRAY &&
        r[1]->elements && r[1]->element[0]->type == REDIS_REPLY_ARRAY && r[1]->element[0]->elements)
        *trimmed = pack_id(r[1]->element[0]->element[0]->str, (size_t)r[1]->element[0]->element[0]->len) > since;
    rc = take_entries(st, r[2], prefix, ev);
    for (int i = 0; i < 3; i++)
        freeReplyObject(r[i]);
    return rc;
}

static int read_blocking(struct rd_store *st, const char *stream, const char *prefix, uint64_t since,
                         int64_t ms, struct evs *ev)
{
    char id[48], block[24];
    unpack_id(since, id, sizeof(id));
    snprintf(block, sizeof(block), "%lld", (long long)(ms > 0 ? ms : 1));
    struct rd_cmd c = {8, {"XREAD", "BLOCK", block, "COUNT", RD_EV_MAXLEN_S, "STREAMS", stream, id},
                       {5, 5, strlen(block), 5, strlen(RD_EV_MAXLEN_S), 7, strlen(stream), strlen(id)}, NULL,
                       NULL};
    redisReply *r = NULL;
    int rc = rd_batch(st, &c, 1, &r, "watch XREAD BLOCK", NULL);
    if (rc)
        return rc;
    rc = take_entries(st, r, prefix, ev);
    freeReplyObject(r);
    return rc;
}

static int out_of_range(struct rd_store *st, const char *prefix, const char *why)
{
    return H->error_set(REFIT_ERANGE, "store %s: watch '%s': %s: list again", st->where, prefix, why);
}

static int watch_stream(struct rd_store *st, const char *stream, const char *prefix, uint64_t since,
                        uint64_t *cursor, int64_t timeout_ms, struct evs *ev)
{
    uint64_t g0 = st->generation, *gen = gen_slot(st, stream, 1);
    int rc = 0;
    if (!gen)
        return REFIT_ENOMEM;
    if (!since || *gen != g0) {
        rc = current(st, stream, cursor);
        *gen = st->generation;
        if (!rc && since)
            rc = out_of_range(st, prefix, "cursor of another connection or before a reconnect");
        return rc;
    }
    int trimmed = 0;
    int64_t deadline = rsc_now_ms() + timeout_ms;
    ev->last = since;
    rc = read_now(st, stream, prefix, since, ev, &trimmed);
    /* Slices well inside the command timeout, so a blocked read is never
     * taken for a dead connection. */
    int64_t slice = st->command_ms / 2 > 1 ? st->command_ms / 2 : 1;
    for (int64_t left = deadline - rsc_now_ms(); !rc && !trimmed && !ev->n && left > 0;
         left = deadline - rsc_now_ms())
        rc = read_blocking(st, stream, prefix, ev->last, left < slice ? left : slice, ev);
    if (!rc && st->generation != g0) {
        rc = current(st, stream, cursor);
        *gen = st->generation;
        return rc ? rc : out_of_range(st, prefix, "the connection was re-made (the server may have restarted)");
    }
    if (rc)
        return rc;
    *cursor = ev->last;
    if (trimmed)
        return out_of_range(st, prefix, "the change history was trimmed past the cursor");
    return ev->n ? 0 : H->error_set(REFIT_ETIMEDOUT, "store %s: no change below '%s' within %lld ms", st->where,
                                    prefix, (long long)timeout_ms);
}

int rd_watch(void *obj, const char *prefix, uint64_t since, uint64_t *cursor, int64_t timeout_ms, char ***keys,
             size_t *n)
{
    struct rd_store *st = obj;
    char *stream = NULL;
    *keys = NULL;
    *n = 0;
    if (rd_ev_stream(st, prefix, &stream))
        return REFIT_ENOMEM;
    if (!stream) /* a prefix across components: no one stream has it */
        return H->error_set(REFIT_ENOTSUP, "store %s: watch '%s': only below a first component", st->where,
                            prefix);
    struct evs ev = {0};
    int rc = watch_stream(st, stream, prefix, since, cursor, timeout_ms, &ev);
    if (!rc)
        rc = pack_keys(&ev, keys, n);
    for (size_t i = 0; i < ev.n; i++)
        H->free(ev.k[i]);
    H->free(ev.k);
    H->free(stream);
    return rc;
}
