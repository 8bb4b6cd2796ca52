/* redis_read.c — the redis store's reads: get, get_many (one MGET per
 * 512 keys, with TYPE only for the keys that came back nil) and list (SCAN
 * with the namespace's prefix).  Values are taken over from hiredis's reply
 * where the allocators agree (take_value).  Writes, connections and the
 * plugin's table are in redis_store.c. */
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "refit/plugin.h"
#include "refit/store.h"
#include "redis_int.h"

/* Turn a GET reply into a value allocated with H->alloc.  hiredis 0.14
 * allocates a string reply with malloc(); when the host allocates with
 * malloc too, the string is taken over instead of copied (one copy of a
 * catalog-sized value less per read). */
static int take_value(struct rd_store *st, redisReply *r, const char *key, void **val, size_t *len)
{
    if (r->type == REDIS_REPLY_NIL)
        return H->error_set(REFIT_ENOENT, "store %s: key '%s' not found", st->where, key);
    if (r->type == REDIS_REPLY_ERROR)
        return rd_reply_error(st, r, "GET", key);
    if (r->type != REDIS_REPLY_STRING)
        return H->error_set(REFIT_EPROTO, "store %s: GET key '%s': reply of type %d, not a string", st->where,
                            key, r->type);
    if ((uint64_t)r->len > st->max_value)
        return H->error_set(REFIT_ETOOBIG, "store %s: key '%s': value of %zu bytes exceeds max_value %llu",
                            st->where, key, (size_t)r->len, (unsigned long long)st->max_value);
    void *b;
#if HIREDIS_MAJOR == 0
    if (H->alloc == malloc && H->free == free && r->str) {
        b = r->str;
        r->str = NULL; /* freeReplyObject frees NULL harmlessly */
    } else
#endif
    {
        b = H->alloc(r->len ? (size_t)r->len : 1);
        if (!b)
            return REFIT_ENOMEM;
        if (r->len)
            memcpy(b, r->str, (size_t)r->len);
    }
    *val = b;
    *len = (size_t)r->len;
    return 0;
}

/* Keys per MGET: one command for many keys (Redis then parses and
 * answers one command instead of n), several per round trip. */
#define MGET_KEYS 512

/* A key MGET answered nil for: absent, or holding what is not a string
 * (MGET does not say which; TYPE does, in one more round trip for all). */
static int classify_nils(struct rd_store *st, struct refit_store_get_item *items, char **keys, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += items[i].status == REFIT_ENOENT;
    if (!m)
        return 0;
    struct rd_cmd *cmds = H->calloc(m, sizeof(*cmds));
    size_t *who = H->calloc(m, sizeof(*who));
    redisReply **rep = H->calloc(m, sizeof(*rep));
    int rc = cmds && who && rep ? 0 : REFIT_ENOMEM;
    for (size_t i = 0, k = 0; !rc && i < n; i++)
        if (items[i].status == REFIT_ENOENT) {
            cmds[k] = (struct rd_cmd){2, {"TYPE", keys[i]}, {4, strlen(keys[i])}, NULL, NULL};
            who[k++] = i;
        }
    if (!rc)
        rc = rd_batch(st, cmds, m, rep, "pipelined TYPE", NULL);
    for (size_t k = 0; !rc && k < m; k++)
        if (rep[k]->type == REDIS_REPLY_STATUS && strcmp(rep[k]->str, "none"))
            items[who[k]].status = H->error_set(REFIT_EPROTO, "store %s: key '%s' holds a %s, not a value",
                                                st->where, items[who[k]].key, rep[k]->str);
    if (!rc)
        rd_free_replies(rep, m);
    H->free(cmds);
    H->free(who);
    H->free(rep);
    return rc;
}

/* The MGETs of a pipelined read: nb commands in cmds, the full keys and
 * argument vectors they point into. */
struct rd_mget {
    size_t n, nb;
    struct rd_cmd *cmds;
    char **keys;
    const char **av;
    size_t *al;
};

static void mget_free(struct rd_mget *m)
{
    for (size_t i = 0; m->keys && i < m->n; i++)
        H->free(m->keys[i]);
    H->free(m->keys);
    H->free(m->cmds);
    H->free(m->av);
    H->free(m->al);
    memset(m, 0, sizeof(*m));
}

static int mget_prepare(struct rd_store *st, const struct refit_store_get_item *items, size_t n, struct rd_mget *m)
{
    size_t nb = (n + MGET_KEYS - 1) / MGET_KEYS;
    *m = (struct rd_mget){n, nb, H->calloc(nb ? nb : 1, sizeof(struct rd_cmd)), H->calloc(n ? n : 1, sizeof(char *)),
                          H->calloc(n + nb + 1, sizeof(char *)), H->calloc(n + nb + 1, sizeof(size_t))};
    int rc = (m->cmds && m->keys && m->av && m->al) ? 0 : REFIT_ENOMEM;
    for (size_t b = 0; !rc && b < nb; b++) {
        size_t first = b * MGET_KEYS, cnt = n - first < MGET_KEYS ? n - first : MGET_KEYS;
        const char **a = m->av + first + b;
        size_t *l = m->al + first + b;
        a[0] = "MGET";
        l[0] = 4;
        for (size_t i = 0; !rc && i < cnt; i++) {
            m->keys[first + i] = rd_full_key(st, items[first + i].key, &l[1 + i]);
            a[1 + i] = m->keys[first + i];
            if (!m->keys[first + i])
                rc = REFIT_ENOMEM;
        }
        m->cmds[b] = (struct rd_cmd){.argc = (int)cnt + 1, .argvp = a, .lenp = l};
    }
    if (rc)
        mget_free(m);
    return rc;
}

/* The MGETs' replies (m->nb of them, from a successful batch) into items:
 * each item's value or status; nil keys classified (one more round trip
 * only when there are any).  On an error no item holds a value. */
static int mget_finish(struct rd_store *st, struct refit_store_get_item *items, const struct rd_mget *m,
                       redisReply **rep)
{
    int rc = 0;
    size_t n = m->n;
    for (size_t b = 0; !rc && b < m->nb; b++) {
        size_t first = b * MGET_KEYS, cnt = n - first < MGET_KEYS ? n - first : MGET_KEYS;
        if (rep[b]->type == REDIS_REPLY_ERROR)
            rc = rd_reply_error(st, rep[b], "MGET", NULL);
        else if (rep[b]->type != REDIS_REPLY_ARRAY || rep[b]->elements != cnt)
            rc = H->error_set(REFIT_EPROTO, "store %s: MGET of %zu keys: reply of type %d with %zu elements",
                              st->where, cnt, rep[b]->type, (size_t)rep[b]->elements);
        for (size_t i = 0; !rc && i < cnt; i++) {
            struct refit_store_get_item *it = &items[first + i];
            it->val = NULL;
            it->status = take_value(st, rep[b]->element[i], it->key, &it->val, &it->len);
            if (it->status == REFIT_ENOMEM)
                rc = REFIT_ENOMEM;
        }
    }
    if (!rc)
        rc = classify_nils(st, items, m->keys, n);
    if (rc)
        for (size_t i = 0; i < n; i++) {
            H->free(items[i].val);
            items[i].val = NULL;
        }
    return rc;
}

int rd_get_many(void *obj, struct refit_store_get_item *items, size_t n)
{
    struct rd_store *st = obj;
    struct rd_mget m;
    int rc = mget_prepare(st, items, n, &m);
    if (rc)
        return rc;
    redisReply **rep = H->calloc(m.nb ? m.nb : 1, sizeof(*rep));
    rc = rep ? rd_batch(st, m.cmds, m.nb, rep, n == 1 ? "GET" : "MGET", n == 1 ? items[0].key : NULL) : REFIT_ENOMEM;
    if (!rc)
        rc = mget_finish(st, items, &m, rep);
    if (rep)
        rd_free_replies(rep, m.nb);
    H->free(rep);
    mget_free(&m);
    return rc;
}

/* The MGETs, then the write's SETs and bookkeeping, in one batch: one
 * round trip (a reconnect sends the whole batch again, as rd_batch does:
 * reads and SETs are idempotent, a counter bumped twice is a spurious
 * change). */
int rd_get_put_many(void *obj, struct refit_store_get_item *gets, size_t n_get,
                    const struct refit_store_put_item *puts, size_t n_put)
{
    struct rd_store *st = obj;
    struct rd_mget m;
    struct rd_mset w;
    int rc = mget_prepare(st, gets, n_get, &m);
    if (rc)
        return rc;
    if ((rc = rd_mset_prepare(st, puts, n_put, &w))) {
        mget_free(&m);
        return rc;
    }
    size_t total = m.nb + w.total;
    struct rd_cmd *cmds = H->calloc(total ? total : 1, sizeof(*cmds));
    redisReply **rep = H->calloc(total ? total : 1, sizeof(*rep));
    rc = cmds && rep ? 0 : REFIT_ENOMEM;
    if (!rc) {
        memcpy(cmds, m.cmds, m.nb * sizeof(*cmds));
        memcpy(cmds + m.nb, w.cmds, w.total * sizeof(*cmds));
        rc = rd_batch(st, cmds, total, rep, "MGET and SET", n_put == 1 ? puts[0].key : NULL);
    }
    /* The write's verdict first: when it failed, no read is handed on. */
    if (!rc)
        rc = rd_mset_check(st, puts, &w, rep + m.nb);
    if (!rc)
        rc = mget_finish(st, gets, &m, rep);
    if (rep)
        rd_free_replies(rep, total);
    H->free(rep);
    H->free(cmds);
    rd_mset_free(&w);
    mget_free(&m);
    return rc;
}

int rd_get(void *obj, const char *key, void **val, size_t *len)
{
    struct rd_store *st = obj;
    size_t fl;
    char *fk = rd_full_key(st, key, &fl);
    if (!fk)
        return REFIT_ENOMEM;
    struct rd_cmd c = {2, {"GET", fk}, {3, fl}, NULL, NULL};
    redisReply *r = NULL;
    int rc = rd_batch(st, &c, 1, &r, "GET", key);
    H->free(fk);
    if (rc)
        return rc;
    rc = take_value(st, r, key, val, len);
    freeReplyObject(r);
    return rc;
}

struct keyvec {
    char **k;
    size_t n, cap, bytes;
};

static int keyvec_add(struct keyvec *v, const char *s, size_t len)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 256;
        char **nk = H->realloc(v->k, nc * sizeof(*nk));
        if (!nk)
            return REFIT_ENOMEM;
        v->k = nk;
        v->cap = nc;
    }
    char *c = H->alloc(len + 1);
    if (!c)
        return REFIT_ENOMEM;
    memcpy(c, s, len);
    c[len] = '\0';
    v->k[v->n++] = c;
    v->bytes += len + 1;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int rd_list(void *obj, const char *prefix, char ***keys, size_t *n)
{
    struct rd_store *st = obj;
    size_t pl = strlen(prefix);
    char *pat = H->alloc(st->prefix_len + pl + 2);
    if (!pat)
        return REFIT_ENOMEM;
    /* The key alphabet holds no glob characters, so the prefix needs no
     * escaping. */
    memcpy(pat, st->prefix, st->prefix_len);
    memcpy(pat + st->prefix_len, prefix, pl);
    memcpy(pat + st->prefix_len + pl, "*", 2);
    struct keyvec v = {0};
    char cursor[32] = "0";
    int rc = 0;
    do {
        struct rd_cmd c = {6, {"SCAN", cursor, "MATCH", pat, "COUNT", "1000"},
                           {4, strlen(cursor), 5, strlen(pat), 5, 4}, NULL, NULL};
        redisReply *r = NULL;
        rc = rd_batch(st, &c, 1, &r, "SCAN", prefix);
        if (rc)
            break;
        if (r->type == REDIS_REPLY_ERROR) {
            rc = rd_reply_error(st, r, "SCAN", NULL);
        } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !r->element[0] || !r->element[1] ||
                   r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY ||
                   (size_t)r->element[0]->len >= sizeof(cursor)) {
            rc = H->error_set(REFIT_EPROTO, "store %s: SCAN: unexpected reply shape", st->where);
        } else {
            memcpy(cursor, r->element[0]->str, (size_t)r->element[0]->len);
            cursor[r->element[0]->len] = '\0';
            redisReply *arr = r->element[1];
            for (size_t i = 0; !rc && i < arr->elements; i++) {
                redisReply *e = arr->element[i];
                if (!e || e->type != REDIS_REPLY_STRING || (size_t)e->len < st->prefix_len)
                    continue;
                rc = keyvec_add(&v, e->str + st->prefix_len, (size_t)e->len - st->prefix_len);
            }
        }
        freeReplyObject(r);
    } while (!rc && strcmp(cursor, "0"));
    H->free(pat);
    /* SCAN may return a key more than once: sort, then drop repeats. */
    if (!rc && v.n > 1) {
        qsort(v.k, v.n, sizeof(*v.k), cmp_str);
        size_t j = 1;
        for (size_t i = 1; i < v.n; i++) {
            if (!strcmp(v.k[i], v.k[j - 1])) {
                v.bytes -= strlen(v.k[i]) + 1;
                H->free(v.k[i]);
            } else {
                v.k[j++] = v.k[i];
            }
        }
        v.n = j;
    }
    char **out = NULL;
    if (!rc && v.n) {
        out = H->alloc(v.n * sizeof(char *) + v.bytes);
        if (!out)
            rc = REFIT_ENOMEM;
    }
    if (!rc) {
        char *p = (char *)(out + v.n);
        for (size_t i = 0; i < v.n; i++) {
            size_t l = strlen(v.k[i]) + 1;
            memcpy(p, v.k[i], l);
            out[i] = p;
            p += l;
        }
        *keys = out;
        *n = v.n;
    }
    for (size_t i = 0; i < v.n; i++)
        H->free(v.k[i]);
    H->free(v.k);
    return rc;
}
