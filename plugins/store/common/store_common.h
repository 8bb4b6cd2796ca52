/* store_common.h — what the file and redis store plugins share: monotonic
 * time, sleeping, and poll()'s wait for a change with backoff.
 *
 * Not a library: store_common.c is compiled into each store plugin that
 * uses it (hidden visibility, like the rest of the plugin) and reaches
 * the host only through the table handed to rsc_load(). */
#ifndef REFIT_STORE_COMMON_H
#define REFIT_STORE_COMMON_H

#include <stdint.h>

#include "refit/plugin.h"

/* The plugin's load() hands its host table here first. */
void rsc_load(const struct refit_host *host);

int64_t rsc_now_ms(void);     /* monotonic */
void rsc_sleep_ms(int64_t ms); /* the whole of it, across signals */

/* How poll() sees the store: the current cursor of the watched prefix
 * (0 or an error), and how to wait up to ms for a change (NULL: sleep). */
struct rsc_poll_ops {
    int (*cursor)(void *arg, uint64_t *cur);
    void (*wait)(void *arg, int64_t ms);
};

/* The store ABI's poll(): the cursor now; with since, re-read it (first
 * after min_ms, the interval doubling up to max_ms) until it differs from
 * since, or REFIT_ETIMEDOUT after timeout_ms ("store WHERE: no change
 * below 'PREFIX' ..."). *cursor is set unless reading it failed. */
int rsc_poll(const struct rsc_poll_ops *ops, void *arg, const char *where, const char *prefix,
             uint64_t since, uint64_t *cursor, int64_t timeout_ms, int64_t min_ms, int64_t max_ms);

#endif
