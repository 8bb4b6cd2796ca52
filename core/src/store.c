/* store.c — the core side of the store ABI: loads the configured plugin,
 * allocates its object, checks keys, namespace and value sizes before the
 * plugin sees them, and re-writes a publisher's live records when the
 * plugin reports that its service restarted. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refit/log.h"
#include "refit/status.h"
#include "refit/store_core.h"

struct live_rec {
    char *key;
    void *val;
    size_t len;
    int64_t ttl_ms;
};

struct refit_store {
    const struct refit_plugin *plugin;
    const struct refit_store_ops *ops;
    void *obj;
    char *ns;
    char section[96];
    struct refit_cfg_view view;
    uint64_t max_value;
    int64_t timeout_ms;
    uint64_t generation;
    uint64_t round_trips;
    int in_rewrite;
    struct live_rec *live;
    size_t n_live;
};

/* ------------------------------------------------------------------ */
/* Key rules */

static int key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == ':' || c == '-';
}

/* allow_empty / allow_trailing_slash distinguish prefixes from keys. */
static int check_path(const char *what, const char *k, int is_prefix)
{
    if (!k)
        return refit_error_set(REFIT_EINVAL, "store %s is NULL", what);
    size_t len = strnlen(k, REFIT_STORE_MAX_KEY + 1);
    if (len > REFIT_STORE_MAX_KEY)
        return refit_error_set(REFIT_EINVAL, "store %s '%.40s...' is longer than %d bytes", what, k,
                               REFIT_STORE_MAX_KEY);
    if (len == 0)
        return is_prefix ? 0 : refit_error_set(REFIT_EINVAL, "store %s is empty", what);
    size_t comp = 0; /* length of the current component */
    for (size_t i = 0; i < len; i++) {
        char c = k[i];
        if (c == '/') {
            if (comp == 0)
                return refit_error_set(REFIT_EINVAL, "store %s '%s': empty component at byte %zu", what,
                                       k, i);
            comp = 0;
            continue;
        }
        if (!key_char(c))
            return refit_error_set(REFIT_EINVAL,
                                   "store %s '%s': byte %zu (0x%02x) is not one of [A-Za-z0-9_.:-/]",
                                   what, k, i, (unsigned char)c);
        if (comp == 0 && c == '.')
            return refit_error_set(REFIT_EINVAL,
                                   "store %s '%s': a component may not start with '.' (byte %zu)", what,
                                   k, i);
        if (++comp > REFIT_STORE_MAX_COMPONENT)
            return refit_error_set(REFIT_EINVAL, "store %s '%.60s...': a component is longer than %d bytes",
                                   what, k, REFIT_STORE_MAX_COMPONENT);
    }
    if (comp == 0 && !is_prefix)
        return refit_error_set(REFIT_EINVAL, "store %s '%s' ends with '/'", what, k);
    return 0;
}

int refit_store_check_key(const char *key)
{
    return check_path("key", key, 0);
}

int refit_store_check_prefix(const char *prefix)
{
    return check_path("prefix", prefix, 1);
}

int refit_store_check_namespace(const char *ns)
{
    if (!ns || !*ns)
        return refit_error_set(REFIT_EINVAL, "store namespace is empty");
    size_t len = strnlen(ns, REFIT_STORE_MAX_NAMESPACE + 1);
    if (len > REFIT_STORE_MAX_NAMESPACE)
        return refit_error_set(REFIT_EINVAL, "store namespace '%.40s...' is longer than %d bytes", ns,
                               REFIT_STORE_MAX_NAMESPACE);
    if (ns[0] == '.')
        return refit_error_set(REFIT_EINVAL, "store namespace '%s' may not start with '.'", ns);
    for (size_t i = 0; i < len; i++)
        if (!key_char(ns[i]) || ns[i] == ':')
            return refit_error_set(REFIT_EINVAL,
                                   "store namespace '%s': byte %zu is not one of [A-Za-z0-9_.-]", ns, i);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Open / close */

static int ops_complete(const struct refit_store_ops *o)
{
    if (o->size < offsetof(struct refit_store_ops, generation) + sizeof(o->generation))
        return 0;
    return o->open && o->close && o->put && o->get && o->del && o->list && o->cas && o->poll &&
           o->get_many && o->put_many && o->generation;
}

int refit_store_open(refit_config_t *cfg, refit_loader_t *loader, const char *ns, refit_store_t **out)
{
    const char *name = NULL, *cfg_ns = NULL;
    uint64_t max_value = 0;
    int64_t timeout_ms = 0;
    int rc = refit_config_str(cfg, "store.plugin", &name);
    if (!rc)
        rc = refit_config_str(cfg, "store.namespace", &cfg_ns);
    if (!rc)
        rc = refit_config_size(cfg, "store.max_value", &max_value);
    if (!rc)
        rc = refit_config_duration_ms(cfg, "store.timeout", &timeout_ms);
    if (rc)
        return refit_error_push(rc, "store");
    if (!ns)
        ns = cfg_ns;
    rc = refit_store_check_namespace(ns);
    if (rc)
        return rc;
    const struct refit_plugin *p = NULL;
    rc = refit_loader_load(loader, REFIT_PLUGIN_STORE, name, &p);
    if (rc)
        return rc;
    const struct refit_store_ops *ops = p->ops;
    if (!ops_complete(ops))
        return refit_error_set(REFIT_EABI,
                               "store plugin '%s': ops table of %zu bytes misses operations of ABI %d.%d",
                               name, ops->size, REFIT_ABI_MAJOR, REFIT_ABI_MINOR);
    refit_store_t *s = calloc(1, sizeof(*s));
    if (!s)
        return REFIT_ENOMEM;
    s->plugin = p;
    s->ops = ops;
    s->max_value = max_value;
    s->timeout_ms = timeout_ms;
    s->ns = strdup(ns);
    snprintf(s->section, sizeof(s->section), "store.%s", p->name);
    s->view.cfg = cfg;
    s->view.section = s->section;
    /* The object is ours so that a failed open can always be closed. */
    s->obj = calloc(1, ops->obj_size ? ops->obj_size : 1);
    if (!s->ns || !s->obj) {
        free(s->obj);
        free(s->ns);
        free(s);
        return REFIT_ENOMEM;
    }
    struct refit_store_open_args a = {
        .size = sizeof(a), .cfg = &s->view, .ns = s->ns, .timeout_ms = timeout_ms,
        .max_value = max_value};
    refit_error_clear();
    rc = ops->open(s->obj, &a);
    if (rc) {
        refit_error_push(rc, "store %s (namespace '%s'): open", p->name, ns);
        ops->close(s->obj);
        free(s->obj);
        free(s->ns);
        free(s);
        return rc;
    }
    s->generation = ops->generation(s->obj);
    refit_log(REFIT_LOG_DEBUG, "store", "opened store %s, namespace '%s'", p->name, ns);
    *out = s;
    return 0;
}

void refit_store_close(refit_store_t *s)
{
    if (!s)
        return;
    s->ops->close(s->obj);
    for (size_t i = 0; i < s->n_live; i++) {
        free(s->live[i].key);
        free(s->live[i].val);
    }
    free(s->live);
    free(s->obj);
    free(s->ns);
    free(s);
}

const char *refit_store_plugin_name(const refit_store_t *s)
{
    return s->plugin->name;
}

const char *refit_store_namespace(const refit_store_t *s)
{
    return s->ns;
}

uint64_t refit_store_max_value(const refit_store_t *s)
{
    return s->max_value;
}

uint64_t refit_store_round_trips(const refit_store_t *s)
{
    return s->round_trips;
}

/* ------------------------------------------------------------------ */
/* Live records */

/* After every call: a new generation means the service may have lost what
 * we wrote, so our live records go back in one pipelined write. */
static void check_generation(refit_store_t *s)
{
    if (s->in_rewrite)
        return;
    uint64_t g = s->ops->generation(s->obj);
    if (g == s->generation)
        return;
    s->generation = g;
    if (!s->n_live)
        return;
    struct refit_store_put_item *items = calloc(s->n_live, sizeof(*items));
    if (!items)
        return;
    for (size_t i = 0; i < s->n_live; i++)
        items[i] = (struct refit_store_put_item){s->live[i].key, s->live[i].val, s->live[i].len,
                                                 s->live[i].ttl_ms};
    s->in_rewrite = 1;
    s->round_trips++;
    int rc = s->ops->put_many(s->obj, items, s->n_live);
    s->in_rewrite = 0;
    free(items);
    if (rc)
        refit_log(REFIT_LOG_WARN, "store", "%s: re-writing %zu live record(s) after a reconnect: %s",
                  s->plugin->name, s->n_live, refit_error_message());
    else
        refit_log(REFIT_LOG_INFO, "store", "%s: service restarted; re-wrote %zu live record(s)",
                  s->plugin->name, s->n_live);
    /* Another reconnect during the re-write: pick it up next call. */
    if (rc)
        s->generation = 0;
}

int refit_store_remember(refit_store_t *s, const char *key, const void *val, size_t len, int64_t ttl_ms)
{
    int rc = refit_store_check_key(key);
    if (rc)
        return rc;
    void *copy = malloc(len ? len : 1);
    if (!copy)
        return REFIT_ENOMEM;
    if (len)
        memcpy(copy, val, len);
    for (size_t i = 0; i < s->n_live; i++)
        if (!strcmp(s->live[i].key, key)) {
            free(s->live[i].val);
            s->live[i].val = copy;
            s->live[i].len = len;
            s->live[i].ttl_ms = ttl_ms;
            return 0;
        }
    struct live_rec *nl = realloc(s->live, (s->n_live + 1) * sizeof(*nl));
    char *k = strdup(key);
    if (!nl || !k) {
        if (nl)
            s->live = nl;
        free(k);
        free(copy);
        return REFIT_ENOMEM;
    }
    s->live = nl;
    nl[s->n_live++] = (struct live_rec){k, copy, len, ttl_ms};
    return 0;
}

bool refit_store_is_live(const refit_store_t *s, const char *key)
{
    for (size_t i = 0; i < s->n_live; i++)
        if (!strcmp(s->live[i].key, key))
            return true;
    return false;
}

void refit_store_forget(refit_store_t *s, const char *key)
{
    for (size_t i = 0; i < s->n_live; i++)
        if (!strcmp(s->live[i].key, key)) {
            free(s->live[i].key);
            free(s->live[i].val);
            s->live[i] = s->live[--s->n_live];
            return;
        }
}

/* ------------------------------------------------------------------ */
/* Operations */

static int check_value(const refit_store_t *s, const char *key, size_t len)
{
    if (len > s->max_value)
        return refit_error_set(REFIT_ETOOBIG, "store %s: key '%s': value of %zu bytes exceeds store.max_value (%llu)",
                               s->plugin->name, key, len, (unsigned long long)s->max_value);
    return 0;
}

/* Every plugin call goes through here: one round trip, then the
 * generation check.  When the service restarted during the call, the live
 * records are written back first and an idempotent call is made once more,
 * so a read right after a restart sees the publisher's records. */
#define CALL_IDEM(s, expr)                     \
    ({                                         \
        (s)->round_trips++;                    \
        uint64_t g_ = (s)->generation;         \
        int rc_ = (expr);                      \
        check_generation(s);                   \
        if (g_ != (s)->generation) {           \
            (s)->round_trips++;                \
            rc_ = (expr);                      \
            check_generation(s);               \
        }                                      \
        rc_;                                   \
    })
#define CALL(s, expr)                          \
    ({                                         \
        (s)->round_trips++;                    \
        int rc_ = (expr);                      \
        check_generation(s);                   \
        rc_;                                   \
    })

int refit_store_put_ttl(refit_store_t *s, const char *key, const void *val, size_t len, int64_t ttl_ms)
{
    int rc = refit_store_check_key(key);
    if (!rc)
        rc = check_value(s, key, len);
    if (!rc && ttl_ms < 0)
        rc = refit_error_set(REFIT_EINVAL, "store key '%s': negative ttl %lld", key, (long long)ttl_ms);
    if (!rc && !val && len)
        rc = refit_error_set(REFIT_EINVAL, "store key '%s': NULL value of %zu bytes", key, len);
    if (rc)
        return rc;
    return CALL_IDEM(s, s->ops->put(s->obj, key, val ? val : "", len, ttl_ms));
}

int refit_store_put(refit_store_t *s, const char *key, const void *val, size_t len)
{
    return refit_store_put_ttl(s, key, val, len, 0);
}

int refit_store_put_live(refit_store_t *s, const char *key, const void *val, size_t len, int64_t ttl_ms)
{
    int rc = refit_store_put_ttl(s, key, val, len, ttl_ms);
    if (rc)
        return rc;
    return refit_store_remember(s, key, val, len, ttl_ms);
}

int refit_store_get(refit_store_t *s, const char *key, void **val, size_t *len)
{
    int rc = refit_store_check_key(key);
    if (rc)
        return rc;
    void *v = NULL;
    size_t l = 0;
    uint64_t g0 = s->generation;
    rc = CALL(s, s->ops->get(s->obj, key, &v, &l));
    if (g0 != s->generation) { /* restarted: read what the rewrite restored */
        if (!rc)
            free(v);
        v = NULL;
        rc = CALL(s, s->ops->get(s->obj, key, &v, &l));
    }
    if (rc)
        return rc;
    if (l > s->max_value) { /* a plugin that forgot; never hand it on */
        free(v);
        return check_value(s, key, l);
    }
    *val = v;
    *len = l;
    return 0;
}

int refit_store_del(refit_store_t *s, const char *key)
{
    int rc = refit_store_check_key(key);
    if (rc)
        return rc;
    return CALL_IDEM(s, s->ops->del(s->obj, key));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int refit_store_list(refit_store_t *s, const char *prefix, char ***keys, size_t *n)
{
    if (!prefix)
        prefix = "";
    int rc = refit_store_check_prefix(prefix);
    if (rc)
        return rc;
    char **k = NULL;
    size_t cnt = 0;
    uint64_t g0 = s->generation;
    rc = CALL(s, s->ops->list(s->obj, prefix, &k, &cnt));
    if (g0 != s->generation) {
        if (!rc)
            free(k);
        k = NULL;
        cnt = 0;
        rc = CALL(s, s->ops->list(s->obj, prefix, &k, &cnt));
    }
    if (rc)
        return rc;
    /* Plugins promise sorted output; sorting again is cheap insurance. */
    if (cnt > 1)
        qsort(k, cnt, sizeof(*k), cmp_str);
    *keys = k;
    *n = cnt;
    return 0;
}

int refit_store_cas_ttl(refit_store_t *s, const char *key, const void *expected, size_t elen,
                        const void *val, size_t len, int64_t ttl_ms)
{
    int rc = refit_store_check_key(key);
    if (!rc)
        rc = check_value(s, key, len);
    if (!rc && !val && len)
        rc = refit_error_set(REFIT_EINVAL, "store key '%s': NULL value of %zu bytes", key, len);
    if (!rc && ttl_ms < 0)
        rc = refit_error_set(REFIT_EINVAL, "store key '%s': negative ttl %lld", key, (long long)ttl_ms);
    if (rc)
        return rc;
    return CALL(s, s->ops->cas(s->obj, key, expected, elen, val ? val : "", len, ttl_ms));
}

int refit_store_cas(refit_store_t *s, const char *key, const void *expected, size_t elen,
                    const void *val, size_t len)
{
    return refit_store_cas_ttl(s, key, expected, elen, val, len, 0);
}

int refit_store_poll(refit_store_t *s, const char *prefix, uint64_t since, uint64_t *cursor,
                     int64_t timeout_ms)
{
    if (!prefix)
        prefix = "";
    int rc = refit_store_check_prefix(prefix);
    if (rc)
        return rc;
    uint64_t c = since;
    rc = CALL_IDEM(s, s->ops->poll(s->obj, prefix, since, &c, timeout_ms < 0 ? 0 : timeout_ms));
    *cursor = c;
    return rc;
}

bool refit_store_has_watch(const refit_store_t *s)
{
    const struct refit_store_ops *o = s->ops;
    return o->size >= offsetof(struct refit_store_ops, watch) + sizeof(o->watch) && o->watch;
}

/* watch() of a plugin without it: poll's cursor, and any change is
 * "list again" (the history of keys is not kept). */
static int watch_by_poll(refit_store_t *s, const char *prefix, uint64_t since, uint64_t *cursor,
                         int64_t timeout_ms)
{
    uint64_t c = since;
    int rc = CALL_IDEM(s, s->ops->poll(s->obj, prefix, since, &c, timeout_ms));
    *cursor = c;
    if (rc || !since)
        return rc;
    return refit_error_set(REFIT_ERANGE, "store %s: '%s' changed (no history of keys: list again)",
                           s->plugin->name, prefix);
}

int refit_store_watch(refit_store_t *s, const char *prefix, uint64_t since, uint64_t *cursor,
                      int64_t timeout_ms, char ***keys, size_t *n)
{
    *keys = NULL;
    *n = 0;
    if (!prefix)
        prefix = "";
    int rc = refit_store_check_prefix(prefix);
    if (rc)
        return rc;
    if (timeout_ms < 0)
        timeout_ms = 0;
    if (refit_store_has_watch(s)) {
        uint64_t c = since, g0 = s->generation;
        rc = CALL(s, s->ops->watch(s->obj, prefix, since, &c, timeout_ms, keys, n));
        /* A reconnect during the call: whatever the plugin saw, the service
         * may have lost keys since `since`. */
        if (!rc && since && g0 != s->generation) {
            free(*keys);
            *keys = NULL;
            *n = 0;
            rc = refit_error_set(REFIT_ERANGE, "store %s: the service restarted while watching '%s': list again",
                                 s->plugin->name, prefix);
        }
        if (rc != REFIT_ENOTSUP) {
            *cursor = c;
            return rc;
        }
        s->round_trips--; /* refused before reaching the service */
        refit_error_clear();
    }
    return watch_by_poll(s, prefix, since, cursor, timeout_ms);
}

/* Items cleared and their keys checked before a plugin sees them. */
static int prep_gets(struct refit_store_get_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        items[i].val = NULL;
        items[i].len = 0;
        items[i].status = 0;
        int rc = refit_store_check_key(items[i].key);
        if (rc)
            return rc;
    }
    return 0;
}

static void drop_gets(struct refit_store_get_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(items[i].val);
        items[i].val = NULL;
    }
}

/* A value larger than store.max_value (a plugin that forgot) is never
 * handed on: that item's error instead. */
static void cap_gets(const refit_store_t *s, struct refit_store_get_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!items[i].status && items[i].len > s->max_value) {
            free(items[i].val);
            items[i].val = NULL;
            items[i].status = check_value(s, items[i].key, items[i].len);
        }
}

static int check_puts(const refit_store_t *s, const struct refit_store_put_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = refit_store_check_key(items[i].key);
        if (!rc)
            rc = check_value(s, items[i].key, items[i].len);
        if (!rc && (items[i].ttl_ms < 0 || (!items[i].val && items[i].len)))
            rc = refit_error_set(REFIT_EINVAL, "store key '%s': bad ttl or NULL value", items[i].key);
        if (rc)
            return rc;
    }
    return 0;
}

int refit_store_get_many(refit_store_t *s, struct refit_store_get_item *items, size_t n)
{
    int rc = prep_gets(items, n);
    if (rc || !n)
        return rc;
    uint64_t g0 = s->generation;
    rc = CALL(s, s->ops->get_many(s->obj, items, n));
    if (g0 != s->generation) { /* restarted: read what the rewrite restored */
        if (!rc)
            drop_gets(items, n);
        rc = CALL(s, s->ops->get_many(s->obj, items, n));
    }
    if (rc)
        return rc;
    cap_gets(s, items, n);
    return 0;
}

int refit_store_put_many(refit_store_t *s, const struct refit_store_put_item *items, size_t n)
{
    int rc = check_puts(s, items, n);
    if (rc || !n)
        return rc;
    return CALL_IDEM(s, s->ops->put_many(s->obj, items, n));
}

static bool has_get_put(const refit_store_t *s)
{
    const struct refit_store_ops *o = s->ops;
    return o->size >= offsetof(struct refit_store_ops, get_put_many) + sizeof(o->get_put_many) && o->get_put_many;
}

int refit_store_get_put_many(refit_store_t *s, struct refit_store_get_item *gets, size_t n_get,
                             const struct refit_store_put_item *puts, size_t n_put)
{
    int rc = prep_gets(gets, n_get);
    if (!rc)
        rc = check_puts(s, puts, n_put);
    if (rc)
        return rc;
    if (!n_put)
        return refit_store_get_many(s, gets, n_get);
    if (!n_get)
        return refit_store_put_many(s, puts, n_put);
    if (!has_get_put(s)) { /* a plugin built before it: two round trips */
        rc = refit_store_get_many(s, gets, n_get);
        if (!rc && (rc = refit_store_put_many(s, puts, n_put)))
            drop_gets(gets, n_get);
        return rc;
    }
    uint64_t g0 = s->generation;
    rc = CALL(s, s->ops->get_put_many(s->obj, gets, n_get, puts, n_put));
    /* Restarted during the call: the live records are back now; read them
     * (and write again: the writes may have gone to the server that went). */
    if (g0 != s->generation) {
        if (!rc)
            drop_gets(gets, n_get);
        rc = CALL(s, s->ops->get_put_many(s->obj, gets, n_get, puts, n_put));
    }
    if (rc)
        return rc;
    cap_gets(s, gets, n_get);
    return 0;
}
