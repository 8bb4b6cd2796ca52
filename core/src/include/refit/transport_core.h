/* refit/transport_core.h — the core's handle on one transport plugin.
 *
 * refit_transport_init loads the configured transport plugin (transport.plugin, or
 * the name given) through the loader, builds its init arguments from the
 * configuration (section transport.<name>, transport.timeout) and wraps its
 * ops table: every call checks its arguments, checks that the plugin's ops
 * table is large enough before calling an operation added after ABI v1.0,
 * and prefixes errors with the plugin's name.  The engine, the conformance
 * suite and `refit bench transport` use this API; nothing above it calls a
 * plugin's ops directly.
 *
 * Threading: as the plugin's (one thread at a time per handle).
 * Ownership: objects returned by the plugin (regions, peers, rkeys,
 * requests) are freed with the matching call here; buffers returned by
 * refit_transport_address_get / refit_transport_pack are malloc'ed and freed by the
 * caller with free(). */
#ifndef REFIT_TRANSPORT_CORE_H
#define REFIT_TRANSPORT_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "refit/config.h"
#include "refit/loader.h"
#include "refit/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct refit_transport refit_transport_t;

struct refit_transport_open {
    size_t size;              /* sizeof(struct refit_transport_open) */
    const char *plugin;       /* NULL: transport.plugin of the configuration */
    const char *name;         /* this process in messages and to peers (the sender name of
                                 its notifications); at most REFIT_TP_NAME_MAX bytes;
                                 NULL: "pid <n>" */
    int cuda_device;          /* -1: none */
    const char *const *nic_hint; /* from topology; NULL: none */
    size_t n_nic_hint;
};

/* Load and initialise the transport.  `open` may be NULL (defaults above).
 * cfg must be the configuration the loader was created with and outlive
 * the handle; so must the loader. */
int refit_transport_init(refit_loader_t *loader, refit_config_t *cfg, const struct refit_transport_open *open,
                  refit_transport_t **out);
/* Safe on NULL.  Fails the requests still outstanding (plugin fini). */
void refit_transport_fini(refit_transport_t *t);

const char *refit_transport_plugin_name(const refit_transport_t *t);
/* The name this process's transport was opened with (refit_tp_open.name,
 * or "pid <n>"): what peers see as the sender of its notifications. */
const char *refit_transport_name(const refit_transport_t *t);
const struct refit_plugin *refit_transport_plugin(const refit_transport_t *t);
/* The capabilities reported by the plugin at init. */
const struct refit_tp_caps *refit_transport_caps(const refit_transport_t *t);
/* transport.timeout in milliseconds. */
int64_t refit_transport_timeout_ms(const refit_transport_t *t);
/* The plugin's own handle, for code that needs an op not wrapped here. */
refit_tp_t *refit_transport_raw(const refit_transport_t *t);

/* This process's address blob (malloc'ed; caller frees). */
int refit_transport_address_get(refit_transport_t *t, void **blob, size_t *len);

int refit_transport_reg(refit_transport_t *t, void *ptr, size_t len, uint32_t memtype,
                 refit_tp_region_t **out);
int refit_transport_dereg(refit_transport_t *t, refit_tp_region_t *r);
/* The packed remote key of a region (malloc'ed; caller frees). */
int refit_transport_pack(refit_transport_t *t, refit_tp_region_t *r, void **buf, size_t *len);

int refit_transport_connect(refit_transport_t *t, const void *addr, size_t len, const char *peer_name,
                     refit_tp_peer_t **out);
void refit_transport_disconnect(refit_transport_t *t, refit_tp_peer_t *p); /* safe on NULL */
int refit_transport_unpack(refit_transport_t *t, refit_tp_peer_t *p, const void *buf, size_t len,
                    refit_tp_rkey_t **out);
void refit_transport_release(refit_transport_t *t, refit_tp_rkey_t *k); /* safe on NULL */

/* Start n descriptors (n may exceed caps.max_desc_per_post: the wrapper
 * then returns REFIT_EINVAL; split with refit_transport_xfer). */
int refit_transport_post(refit_transport_t *t, refit_tp_peer_t *p, const struct refit_tp_desc *d,
                  size_t n, refit_tp_req_t **out);
int refit_transport_progress(refit_transport_t *t);
int refit_transport_test(refit_transport_t *t, refit_tp_req_t *r);
/* timeout_ms < 0: transport.timeout. */
int refit_transport_wait(refit_transport_t *t, refit_tp_req_t *r, int64_t timeout_ms);
void refit_transport_req_free(refit_transport_t *t, refit_tp_req_t *r); /* safe on NULL */

/* post + wait + req_free, splitting n into posts of at most
 * caps.max_desc_per_post.  A request that did not finish in time is left
 * to the plugin's fini (it cannot be freed while in flight). */
int refit_transport_xfer(refit_transport_t *t, refit_tp_peer_t *p, const struct refit_tp_desc *d,
                  size_t n, int64_t timeout_ms);

int refit_transport_notify(refit_transport_t *t, refit_tp_peer_t *p, const void *msg, size_t len);
/* timeout_ms < 0: transport.timeout; 0: just check.  REFIT_ETOOBIG: a
 * notification larger than cap was dropped (*len its size); keep polling. */
int refit_transport_poll_notify(refit_transport_t *t, void *buf, size_t cap, size_t *len,
                         int64_t timeout_ms);
/* The same, and the sender's name into from (from_cap >= REFIT_TP_NAME_MAX
 * + 1): the name the sending process opened its transport with
 * (refit_tp_open.name).  REFIT_ENOTSUP for a plugin built before the op. */
int refit_transport_poll_notify_from(refit_transport_t *t, void *buf, size_t cap, size_t *len, char *from,
                              size_t from_cap, int64_t timeout_ms);
/* Counters of the notification queue (dropped notes among them). */
int refit_transport_notify_stats(refit_transport_t *t, struct refit_tp_notify_stats *out);
/* A pointer through which this process reads the remote region of k
 * directly (transport op rkey_ptr); REFIT_ENOTSUP when the transport maps
 * no remote memory (or its plugin predates the op). */
int refit_transport_rkey_ptr(refit_transport_t *t, refit_tp_rkey_t *k, void **ptr);
/* Doorbells (transport ops bell_*): REFIT_ENOTSUP from create and open
 * when the plugin offers none (or predates them).  timeout_ms < 0 in wait:
 * transport.timeout. */
int refit_transport_has_bells(const refit_transport_t *t); /* 1: the plugin offers them */
int refit_transport_bell_create(refit_transport_t *t, refit_tp_bell_t **out);
int refit_transport_bell_pack(refit_transport_t *t, refit_tp_bell_t *b, void *buf, size_t *len);
int refit_transport_bell_open(refit_transport_t *t, const void *buf, size_t len, refit_tp_bell_t **out);
int refit_transport_bell_ring(refit_transport_t *t, refit_tp_bell_t *b, uint64_t value);
int refit_transport_bell_wait(refit_transport_t *t, refit_tp_bell_t *b, uint64_t seen, uint64_t *value,
                              int64_t timeout_ms);
void refit_transport_bell_close(refit_transport_t *t, refit_tp_bell_t *b);

#ifdef __cplusplus
}
#endif
#endif
