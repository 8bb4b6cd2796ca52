/* refit/store_core.h — the core's handle on the store plugin (internal):
 * opening it through the loader, checking keys before the plugin sees them,
 * re-writing live records after a reconnect, counting round trips.  The
 * plugin ABI it drives is refit/store.h. */
#ifndef REFIT_STORE_CORE_H
#define REFIT_STORE_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "refit/config.h"
#include "refit/loader.h"
#include "refit/store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct refit_store refit_store_t;

/* Opens the store named by store.plugin, loading it through `loader`, in
 * namespace store.namespace (or `ns` when not NULL).  The caller closes it
 * with refit_store_close before destroying loader and cfg. */
int refit_store_open(refit_config_t *cfg, refit_loader_t *loader, const char *ns,
                     refit_store_t **out);
void refit_store_close(refit_store_t *s); /* safe on NULL */

const char *refit_store_plugin_name(const refit_store_t *s);
const char *refit_store_namespace(const refit_store_t *s);
uint64_t refit_store_max_value(const refit_store_t *s);

/* Key and namespace rules (see the top of this file); 0 or REFIT_EINVAL
 * with a message naming what is wrong. */
int refit_store_check_key(const char *key);
int refit_store_check_prefix(const char *prefix);
int refit_store_check_namespace(const char *ns);

int refit_store_put(refit_store_t *s, const char *key, const void *val, size_t len);
int refit_store_put_ttl(refit_store_t *s, const char *key, const void *val, size_t len,
                        int64_t ttl_ms);
/* A put the wrapper remembers (a copy of the value) and writes again, with
 * the same ttl, after the plugin reports a new generation (the service
 * restarted and may have lost it): a publisher's own source record and
 * heartbeat.  Putting the key again replaces the remembered value. */
int refit_store_put_live(refit_store_t *s, const char *key, const void *val, size_t len,
                         int64_t ttl_ms);
/* Mark a key live without writing it (after a put_many that wrote it). */
int refit_store_remember(refit_store_t *s, const char *key, const void *val, size_t len,
                         int64_t ttl_ms);
/* Stop re-writing a live key (does not delete it). */
void refit_store_forget(refit_store_t *s, const char *key);
/* Whether key is live in this handle (written by it and remembered). */
bool refit_store_is_live(const refit_store_t *s, const char *key);

/* *val is freed by the caller with free(). */
int refit_store_get(refit_store_t *s, const char *key, void **val, size_t *len);
int refit_store_del(refit_store_t *s, const char *key);
/* *keys is one block freed by the caller with free(). */
int refit_store_list(refit_store_t *s, const char *prefix, char ***keys, size_t *n);
int refit_store_cas(refit_store_t *s, const char *key, const void *expected, size_t elen,
                    const void *val, size_t len);
/* The same, the key written with a ttl (ms > 0; 0: none), as put_ttl. */
int refit_store_cas_ttl(refit_store_t *s, const char *key, const void *expected, size_t elen,
                        const void *val, size_t len, int64_t ttl_ms);
int refit_store_poll(refit_store_t *s, const char *prefix, uint64_t since, uint64_t *cursor,
                     int64_t timeout_ms);
/* The plugin's watch() (see the ops table): *keys one block freed by the
 * caller with free().  A plugin without watch, or one that cannot watch
 * this prefix, is emulated with poll(): a change is then REFIT_ERANGE
 * (list again), so callers handle ERANGE in any case.  0 and ERANGE set
 * *cursor; ETIMEDOUT leaves *n 0. */
int refit_store_watch(refit_store_t *s, const char *prefix, uint64_t since, uint64_t *cursor,
                      int64_t timeout_ms, char ***keys, size_t *n);
/* Whether the plugin watches natively (not emulated by poll). */
bool refit_store_has_watch(const refit_store_t *s);
/* Values of successful items are freed by the caller with free(). */
int refit_store_get_many(refit_store_t *s, struct refit_store_get_item *items, size_t n);
int refit_store_put_many(refit_store_t *s, const struct refit_store_put_item *items, size_t n);
/* The plugin's get_put_many() (see the ops table): the gets read, then the
 * puts written, in one round trip; a plugin built before it takes two
 * (get_many, then put_many when the reads succeeded).  On an error of the
 * whole call no get holds a value and each put may or may not have been
 * written.  Values of successful gets are freed by the caller with free(). */
int refit_store_get_put_many(refit_store_t *s, struct refit_store_get_item *gets, size_t n_get,
                             const struct refit_store_put_item *puts, size_t n_put);

/* Plugin calls made so far: each is one round trip to the service (bulk
 * calls are pipelined), which is how "a warm cycle costs at most two round
 * trips per source" is measured. */
uint64_t refit_store_round_trips(const refit_store_t *s);

#ifdef __cplusplus
}
#endif
#endif
