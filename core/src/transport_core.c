/* transport_core.c — the core's wrapper around one transport plugin (refit/transport_core.h):
 * loading, init arguments from the configuration, argument checks, and the
 * ops-table size checks that let a newer core run an older plugin. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "refit/log.h"
#include "refit/plugin.h"
#include "refit/status.h"
#include "refit/transport_core.h"

struct refit_transport {
    const struct refit_plugin *plugin;
    const struct refit_transport_ops *ops;
    refit_tp_t *tp;
    struct refit_tp_caps caps;
    int64_t timeout_ms;
    char section[128];
    char name[REFIT_TP_NAME_MAX + 1];
    struct refit_cfg_view view;
};

/* An op may be called only when the plugin's table reaches it: a plugin
 * built against an older minor has a shorter table. */
#define HAS_OP(t, op)                                                                    \
    ((t)->ops->size >= offsetof(struct refit_transport_ops, op) + sizeof((t)->ops->op) && \
     (t)->ops->op != NULL)

#define NEED_OP(t, op)                                                                   \
    do {                                                                                 \
        if (!HAS_OP(t, op))                                                              \
            return refit_error_set(REFIT_ENOTSUP, "transport %s: operation " #op         \
                                   " not provided by this plugin build",                \
                                   (t)->plugin->name);                                   \
    } while (0)

static int check_ops(const struct refit_plugin *p)
{
    const struct refit_transport_ops *ops = p->ops;
    /* Everything up to poll_notify is ABI 1.0: a table shorter than that
     * (or with a NULL op) is a broken plugin, not an old one. */
    size_t v1 = offsetof(struct refit_transport_ops, poll_notify) + sizeof(ops->poll_notify);
    if (!ops || ops->size < v1)
        return refit_error_set(REFIT_EABI, "transport %s: ops table of %zu bytes, ABI 1.0 needs %zu",
                               p->name, ops ? ops->size : 0, v1);
    const void *const *fn = (const void *const *)((const char *)ops + sizeof(size_t));
    size_t n = (v1 - sizeof(size_t)) / sizeof(void *);
    for (size_t i = 0; i < n; i++)
        if (!fn[i])
            return refit_error_set(REFIT_EABI, "transport %s: ops table entry %zu is NULL "
                                   "(unsupported ops must return REFIT_ENOTSUP)", p->name, i);
    return 0;
}

int refit_transport_init(refit_loader_t *loader, refit_config_t *cfg, const struct refit_transport_open *open,
                  refit_transport_t **out)
{
    if (!loader || !cfg || !out)
        return refit_error_set(REFIT_EINVAL, "refit_transport_init: loader, cfg and out are required");
    const char *name = open && open->plugin ? open->plugin : NULL;
    int rc;
    if (!name) {
        rc = refit_config_str(cfg, "transport.plugin", &name);
        if (rc)
            return rc;
    }
    refit_transport_t *t = calloc(1, sizeof(*t));
    if (!t)
        return refit_error_set(REFIT_ENOMEM, "transport %s: out of memory", name);
    rc = refit_loader_load(loader, REFIT_PLUGIN_TRANSPORT, name, &t->plugin);
    if (rc)
        goto fail;
    t->ops = t->plugin->ops;
    rc = check_ops(t->plugin);
    if (rc)
        goto fail;
    rc = refit_config_duration_ms(cfg, "transport.timeout", &t->timeout_ms);
    if (rc)
        goto fail;
    snprintf(t->section, sizeof(t->section), "transport.%s", t->plugin->name);
    if (open && open->name && strlen(open->name) > REFIT_TP_NAME_MAX) {
        rc = refit_error_set(REFIT_EINVAL, "transport %s: name '%.40s...' is longer than %d bytes",
                             t->plugin->name, open->name, REFIT_TP_NAME_MAX);
        goto fail;
    }
    if (open && open->name)
        snprintf(t->name, sizeof(t->name), "%s", open->name);
    else
        snprintf(t->name, sizeof(t->name), "pid %ld", (long)getpid());
    t->view.cfg = cfg;
    t->view.section = t->section;

    struct refit_tp_init_args a = {
        .size = sizeof(a),
        .cfg = &t->view,
        .timeout_ms = t->timeout_ms,
        .name = t->name,
        .cuda_device = open ? open->cuda_device : -1,
        .nic_hint = open ? open->nic_hint : NULL,
        .n_nic_hint = open ? open->n_nic_hint : 0,
    };
    rc = t->ops->init(&a, &t->tp);
    if (rc) {
        refit_error_push(rc, "transport %s: init", t->plugin->name);
        goto fail;
    }
    t->caps.size = sizeof(t->caps);
    rc = t->ops->caps(t->tp, &t->caps);
    if (rc) {
        t->ops->fini(t->tp);
        goto fail;
    }
    *out = t;
    return 0;
fail:
    free(t);
    return rc;
}

void refit_transport_fini(refit_transport_t *t)
{
    if (!t)
        return;
    t->ops->fini(t->tp);
    free(t);
}

const char *refit_transport_plugin_name(const refit_transport_t *t) { return t->plugin->name; }
const char *refit_transport_name(const refit_transport_t *t) { return t->name; }
const struct refit_plugin *refit_transport_plugin(const refit_transport_t *t) { return t->plugin; }
const struct refit_tp_caps *refit_transport_caps(const refit_transport_t *t) { return &t->caps; }
int64_t refit_transport_timeout_ms(const refit_transport_t *t) { return t->timeout_ms; }
refit_tp_t *refit_transport_raw(const refit_transport_t *t) { return t->tp; }

int refit_transport_address_get(refit_transport_t *t, void **blob, size_t *len)
{
    size_t n = 0;
    int rc = t->ops->address(t->tp, NULL, &n);
    if (rc)
        return rc;
    void *b = malloc(n ? n : 1);
    if (!b)
        return refit_error_set(REFIT_ENOMEM, "transport %s: address of %zu bytes", t->plugin->name, n);
    rc = t->ops->address(t->tp, b, &n);
    if (rc) {
        free(b);
        return rc;
    }
    *blob = b;
    *len = n;
    return 0;
}

int refit_transport_reg(refit_transport_t *t, void *ptr, size_t len, uint32_t memtype,
                 refit_tp_region_t **out)
{
    if (!ptr || !len || !out)
        return refit_error_set(REFIT_EINVAL, "transport %s: register needs memory and a length",
                               t->plugin->name);
    if (!(t->caps.memtypes & REFIT_MEMTYPE_BIT(memtype)))
        return refit_error_set(REFIT_ENOTSUP, "transport %s: memory type %u not reached directly",
                               t->plugin->name, memtype);
    if (t->caps.max_region_len && len > t->caps.max_region_len)
        return refit_error_set(REFIT_ETOOBIG, "transport %s: region of %zu bytes, at most %llu",
                               t->plugin->name, len, (unsigned long long)t->caps.max_region_len);
    return t->ops->reg(t->tp, ptr, len, memtype, out);
}

int refit_transport_dereg(refit_transport_t *t, refit_tp_region_t *r)
{
    if (!r)
        return 0;
    return t->ops->dereg(t->tp, r);
}

int refit_transport_pack(refit_transport_t *t, refit_tp_region_t *r, void **buf, size_t *len)
{
    if (!r || !buf || !len)
        return refit_error_set(REFIT_EINVAL, "transport %s: pack_rkey without region", t->plugin->name);
    size_t n = 0;
    int rc = t->ops->pack_rkey(t->tp, r, NULL, &n);
    if (rc)
        return rc;
    void *b = malloc(n ? n : 1);
    if (!b)
        return refit_error_set(REFIT_ENOMEM, "transport %s: rkey of %zu bytes", t->plugin->name, n);
    rc = t->ops->pack_rkey(t->tp, r, b, &n);
    if (rc) {
        free(b);
        return rc;
    }
    *buf = b;
    *len = n;
    return 0;
}

int refit_transport_connect(refit_transport_t *t, const void *addr, size_t len, const char *peer_name,
                     refit_tp_peer_t **out)
{
    if (!addr || !len || !out)
        return refit_error_set(REFIT_EINVAL, "transport %s: connect needs an address", t->plugin->name);
    return t->ops->connect(t->tp, addr, len, peer_name ? peer_name : "peer", out);
}

void refit_transport_disconnect(refit_transport_t *t, refit_tp_peer_t *p)
{
    if (p)
        t->ops->disconnect(t->tp, p);
}

int refit_transport_unpack(refit_transport_t *t, refit_tp_peer_t *p, const void *buf, size_t len,
                    refit_tp_rkey_t **out)
{
    if (!p || !buf || !out)
        return refit_error_set(REFIT_EINVAL, "transport %s: unpack needs a peer and a key",
                               t->plugin->name);
    return t->ops->unpack_rkey(t->tp, p, buf, len, out);
}

void refit_transport_release(refit_transport_t *t, refit_tp_rkey_t *k)
{
    if (k)
        t->ops->release_rkey(t->tp, k);
}

int refit_transport_post(refit_transport_t *t, refit_tp_peer_t *p, const struct refit_tp_desc *d,
                  size_t n, refit_tp_req_t **out)
{
    if (!p || (n && !d) || !out)
        return refit_error_set(REFIT_EINVAL, "transport %s: post needs a peer, descriptors and out",
                               t->plugin->name);
    if (t->caps.max_desc_per_post && n > t->caps.max_desc_per_post)
        return refit_error_set(REFIT_EINVAL, "transport %s: %zu descriptors in one post, at most %u",
                               t->plugin->name, n, t->caps.max_desc_per_post);
    for (size_t i = 0; i < n; i++)
        if ((d[i].op != REFIT_OP_READ && d[i].op != REFIT_OP_WRITE) || !d[i].local || !d[i].remote)
            return refit_error_set(REFIT_EINVAL, "transport %s: descriptor %zu: bad op %u or "
                                   "missing region/rkey", t->plugin->name, i, d[i].op);
    return t->ops->post(t->tp, p, d, n, out);
}

int refit_transport_progress(refit_transport_t *t) { return t->ops->progress(t->tp); }

int refit_transport_test(refit_transport_t *t, refit_tp_req_t *r)
{
    if (!r)
        return refit_error_set(REFIT_EINVAL, "transport %s: test without request", t->plugin->name);
    return t->ops->test(t->tp, r);
}

int refit_transport_wait(refit_transport_t *t, refit_tp_req_t *r, int64_t timeout_ms)
{
    if (!r)
        return refit_error_set(REFIT_EINVAL, "transport %s: wait without request", t->plugin->name);
    return t->ops->wait(t->tp, r, timeout_ms < 0 ? t->timeout_ms : timeout_ms);
}

void refit_transport_req_free(refit_transport_t *t, refit_tp_req_t *r)
{
    if (r)
        t->ops->req_free(t->tp, r);
}

int refit_transport_xfer(refit_transport_t *t, refit_tp_peer_t *p, const struct refit_tp_desc *d,
                  size_t n, int64_t timeout_ms)
{
    size_t step = t->caps.max_desc_per_post ? t->caps.max_desc_per_post : n;
    for (size_t i = 0; i < n; i += step) {
        size_t k = n - i < step ? n - i : step;
        refit_tp_req_t *r = NULL;
        int rc = refit_transport_post(t, p, d + i, k, &r);
        if (rc)
            return rc;
        rc = refit_transport_wait(t, r, timeout_ms);
        if (rc == REFIT_ETIMEDOUT)
            return rc; /* still in flight: the plugin's fini reclaims it */
        refit_transport_req_free(t, r);
        if (rc)
            return rc;
    }
    return 0;
}

int refit_transport_notify(refit_transport_t *t, refit_tp_peer_t *p, const void *msg, size_t len)
{
    if (!p || (len && !msg))
        return refit_error_set(REFIT_EINVAL, "transport %s: notify needs a peer", t->plugin->name);
    if (!t->caps.notify)
        return refit_error_set(REFIT_ENOTSUP, "transport %s: no notifications", t->plugin->name);
    if (len > t->caps.max_notify_len)
        return refit_error_set(REFIT_ETOOBIG, "transport %s: notification of %zu bytes, at most %u",
                               t->plugin->name, len, t->caps.max_notify_len);
    return t->ops->notify(t->tp, p, msg, len);
}

int refit_transport_poll_notify(refit_transport_t *t, void *buf, size_t cap, size_t *len,
                         int64_t timeout_ms)
{
    if (!buf || !len)
        return refit_error_set(REFIT_EINVAL, "transport %s: poll_notify needs a buffer",
                               t->plugin->name);
    return t->ops->poll_notify(t->tp, buf, cap, len, timeout_ms < 0 ? t->timeout_ms : timeout_ms);
}

int refit_transport_poll_notify_from(refit_transport_t *t, void *buf, size_t cap, size_t *len, char *from,
                              size_t from_cap, int64_t timeout_ms)
{
    if (!buf || !len || !from)
        return refit_error_set(REFIT_EINVAL, "transport %s: poll_notify_from needs buffers",
                               t->plugin->name);
    if (from_cap < REFIT_TP_NAME_MAX + 1)
        return refit_error_set(REFIT_EINVAL, "transport %s: poll_notify_from: sender buffer of %zu "
                               "bytes, needs %d", t->plugin->name, from_cap, REFIT_TP_NAME_MAX + 1);
    NEED_OP(t, poll_notify_from);
    from[0] = '\0';
    return t->ops->poll_notify_from(t->tp, buf, cap, len, from, from_cap,
                                    timeout_ms < 0 ? t->timeout_ms : timeout_ms);
}

int refit_transport_notify_stats(refit_transport_t *t, struct refit_tp_notify_stats *out)
{
    if (!out)
        return refit_error_set(REFIT_EINVAL, "transport %s: notify_stats needs out", t->plugin->name);
    NEED_OP(t, notify_stats);
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    return t->ops->notify_stats(t->tp, out);
}

int refit_transport_rkey_ptr(refit_transport_t *t, refit_tp_rkey_t *k, void **ptr)
{
    if (!k || !ptr)
        return refit_error_set(REFIT_EINVAL, "transport %s: rkey_ptr needs a key and out", t->plugin->name);
    NEED_OP(t, rkey_ptr);
    *ptr = NULL;
    return t->ops->rkey_ptr(t->tp, k, ptr);
}

/* Doorbells: every op or none (the plugin's table reaches bell_close). */
static int has_bells(const refit_transport_t *t)
{
    return HAS_OP(t, bell_create) && HAS_OP(t, bell_pack) && HAS_OP(t, bell_open) && HAS_OP(t, bell_ring) &&
           HAS_OP(t, bell_wait) && HAS_OP(t, bell_close);
}

#define NEED_BELLS(t)                                                                                 \
    do {                                                                                              \
        if (!has_bells(t))                                                                            \
            return refit_error_set(REFIT_ENOTSUP, "transport %s: no doorbells", (t)->plugin->name); \
    } while (0)

int refit_transport_has_bells(const refit_transport_t *t)
{
    return t && has_bells(t);
}

int refit_transport_bell_create(refit_transport_t *t, refit_tp_bell_t **out)
{
    if (!out)
        return refit_error_set(REFIT_EINVAL, "transport %s: bell_create needs out", t->plugin->name);
    *out = NULL;
    NEED_BELLS(t);
    return t->ops->bell_create(t->tp, out);
}

int refit_transport_bell_pack(refit_transport_t *t, refit_tp_bell_t *b, void *buf, size_t *len)
{
    if (!b || !len)
        return refit_error_set(REFIT_EINVAL, "transport %s: bell_pack needs a bell and len", t->plugin->name);
    NEED_BELLS(t);
    return t->ops->bell_pack(t->tp, b, buf, len);
}

int refit_transport_bell_open(refit_transport_t *t, const void *buf, size_t len, refit_tp_bell_t **out)
{
    if (!buf || !len || !out)
        return refit_error_set(REFIT_EINVAL, "transport %s: bell_open needs a handle and out", t->plugin->name);
    *out = NULL;
    NEED_BELLS(t);
    return t->ops->bell_open(t->tp, buf, len, out);
}

int refit_transport_bell_ring(refit_transport_t *t, refit_tp_bell_t *b, uint64_t value)
{
    if (!b)
        return refit_error_set(REFIT_EINVAL, "transport %s: bell_ring needs a bell", t->plugin->name);
    NEED_BELLS(t);
    return t->ops->bell_ring(t->tp, b, value);
}

int refit_transport_bell_wait(refit_transport_t *t, refit_tp_bell_t *b, uint64_t seen, uint64_t *value,
                              int64_t timeout_ms)
{
    if (!b || !value)
        return refit_error_set(REFIT_EINVAL, "transport %s: bell_wait needs a bell and value", t->plugin->name);
    NEED_BELLS(t);
    return t->ops->bell_wait(t->tp, b, seen, value, timeout_ms < 0 ? t->timeout_ms : timeout_ms);
}

void refit_transport_bell_close(refit_transport_t *t, refit_tp_bell_t *b)
{
    if (t && b && has_bells(t))
        t->ops->bell_close(t->tp, b);
}
