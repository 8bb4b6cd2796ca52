/* refit/store.h — the metadata store's plugin ABI (kind REFIT_PLUGIN_STORE).
 * The core's wrapper, which the engine uses, is internal (refit/store_core.h).
 *
 * Shaped after SQLite's VFS: the ops table begins with its size and only
 * grows at the end; it also says how large the plugin's per-store object is,
 * so the core allocates that object (zeroed) and the plugin fills it in with
 * open().  close() must be safe on an object whose open() failed at any
 * point, including before it wrote anything (all zero).
 *
 * Keys are relative ("sources/tp0"): the plugin places them under
 * refit/<namespace>/ so that jobs sharing a store never see each other.  A
 * key is 1..REFIT_STORE_MAX_KEY bytes of [A-Za-z0-9_.:-] in components
 * separated by '/'; no empty component, no component starting with '.' or
 * longer than REFIT_STORE_MAX_COMPONENT, no leading or trailing '/'.  The wrapper checks keys before a plugin sees
 * them, so plugins may map them to file names directly.  A prefix (list,
 * poll) follows the same rules but may be empty and may end with '/'.
 *
 * Values are binary blobs of at most store.max_value bytes; the wrapper
 * refuses larger puts and plugins refuse (REFIT_ETOOBIG) larger values on
 * get, before allocating, so a corrupted store cannot make a reader
 * allocate without bound.
 *
 * Errors: negative REFIT_E* with a message (host->error_set) naming the
 * plugin, the key and the library's own code and text.  REFIT_ENOENT for a
 * missing key, REFIT_ECONFLICT for a lost cas, REFIT_ECONN when the service
 * cannot be reached within the timeout, REFIT_ETIMEDOUT for a poll that saw
 * no change. */
#ifndef REFIT_STORE_H
#define REFIT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "refit/config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define REFIT_STORE_MAX_KEY 512
#define REFIT_STORE_MAX_COMPONENT 200 /* fits a file name with room for suffixes */
#define REFIT_STORE_MAX_NAMESPACE 128

struct refit_store_open_args {
    size_t size;                      /* sizeof(struct refit_store_open_args) */
    const struct refit_cfg_view *cfg; /* section store.<name> */
    const char *ns;                   /* namespace, already validated */
    int64_t timeout_ms;               /* store.timeout: one operation's limit */
    uint64_t max_value;               /* store.max_value */
};

/* One key of a pipelined read.  The plugin sets val/len/status per item:
 * status 0 (val allocated with host->alloc, freed by the caller with free)
 * or REFIT_ENOENT (val NULL) or another error for that key. */
struct refit_store_get_item {
    const char *key;
    void *val;
    size_t len;
    int status;
};

/* One key of a pipelined write.  ttl_ms 0: no expiry. */
struct refit_store_put_item {
    const char *key;
    const void *val;
    size_t len;
    int64_t ttl_ms;
};

struct refit_store_ops {
    size_t size;     /* sizeof(struct refit_store_ops) of the plugin's build */
    size_t obj_size; /* bytes of the plugin's per-store object (core allocates, zeroed) */

    /* Fill in obj.  On failure obj must still be safe to close(). */
    int (*open)(void *obj, const struct refit_store_open_args *args);
    void (*close)(void *obj);

    /* Create or replace.  ttl_ms > 0: the key disappears (get: ENOENT)
     * ttl_ms after the write; a later put without ttl makes it permanent. */
    int (*put)(void *obj, const char *key, const void *val, size_t len, int64_t ttl_ms);
    /* *val allocated with host->alloc (at least 1 byte even for an empty
     * value); the caller frees it with free(). */
    int (*get)(void *obj, const char *key, void **val, size_t *len);
    /* REFIT_ENOENT when the key is absent. */
    int (*del)(void *obj, const char *key);
    /* Keys below prefix (relative, without the namespace), sorted, in one
     * block allocated with host->alloc: the pointer array followed by the
     * strings; the caller frees *keys with free().  *keys may be NULL when
     * *n is 0.  Expired keys are not listed. */
    int (*list)(void *obj, const char *prefix, char ***keys, size_t *n);
    /* Atomically: if the key's value equals expected (expected NULL: the
     * key is absent), set it to val and return 0, else REFIT_ECONFLICT.
     * ttl_ms as for put. */
    int (*cas)(void *obj, const char *key, const void *expected, size_t elen, const void *val,
               size_t len, int64_t ttl_ms);
    /* Change detection.  *cursor receives an opaque non-zero value that
     * changes whenever a key below prefix is created, replaced or deleted
     * (it may also change spuriously, but not for writes to keys outside
     * the prefix's first component when the prefix holds a '/': watchers of
     * "sources/" are not woken by "heartbeats/..."; expiry is not a change).  since 0:
     * return the current cursor at once.  Otherwise wait up to timeout_ms
     * for the cursor to differ from since: 0 when it does, REFIT_ETIMEDOUT
     * (with *cursor == since) when it did not. */
    int (*poll)(void *obj, const char *prefix, uint64_t since, uint64_t *cursor,
                int64_t timeout_ms);
    /* Pipelined: one round trip for all n items.  Returns 0 when every item
     * has its own status; an error of the whole call otherwise (then no
     * item holds a value). */
    int (*get_many)(void *obj, struct refit_store_get_item *items, size_t n);
    /* Pipelined writes; 0 only when every item was written. */
    int (*put_many)(void *obj, const struct refit_store_put_item *items, size_t n);
    /* Connection generation: starts at 1 and increases each time the plugin
     * reconnected to a service that may have lost data (a Redis restart).
     * The wrapper then re-writes the records marked live. */
    uint64_t (*generation)(void *obj);

    /* --- appended (a plugin built before it has a smaller size; the
     * wrapper falls back to poll + list) --- */

    /* What changed below prefix after cursor `since`.  since 0: *cursor
     * the current position at once, *n 0 (take it before listing, so that
     * nothing written after the listing is missed).  Otherwise wait up to
     * timeout_ms for a change after since: 0 with *keys the keys created,
     * replaced or deleted (relative, sorted, deduplicated, in one host->alloc
     * block like list(); a key may be named although it is unchanged, never
     * left out) and *cursor the position after them; REFIT_ETIMEDOUT with
     * *n 0 when nothing below prefix changed (*cursor: where to go on from,
     * possibly past changes outside prefix); REFIT_ERANGE when the store no
     * longer knows what changed since `since` (its history was trimmed, the
     * service restarted, or the cursor is not this handle's): *cursor is set,
     * and the caller lists the prefix again and watches from *cursor.
     * REFIT_ENOTSUP for a prefix the plugin cannot watch (the wrapper then
     * falls back).  Expiry is not a change. */
    int (*watch)(void *obj, const char *prefix, uint64_t since, uint64_t *cursor, int64_t timeout_ms,
                 char ***keys, size_t *n);

    /* --- appended (a plugin built before it has a smaller size; the
     * wrapper falls back to get_many, then put_many: two round trips) --- */

    /* Reads, then writes, in one round trip: the n_get items are read as
     * get_many reads them, then the n_put items written as put_many writes
     * them (either count may be 0).  Pipelined, not atomic: another
     * client's write may land between the reads and the writes, and a read
     * does not see the writes of the same call.  0 when every put was
     * written and every get has its own status; an error of the whole call
     * otherwise: then no get item holds a value, and each put may or may
     * not have been written (the service may have applied part of the
     * batch before the connection broke). */
    int (*get_put_many)(void *obj, struct refit_store_get_item *gets, size_t n_get,
                        const struct refit_store_put_item *puts, size_t n_put);
};

#ifdef __cplusplus
}
#endif
#endif
