/* store_common.c — time and poll() with backoff for the store plugins
 * (store_common.h says why it is compiled into each of them). */
#include "store_common.h"

#include <errno.h>
#include <time.h>

#include "refit/status.h"

static const struct refit_host *H;

void rsc_load(const struct refit_host *host)
{
    H = host;
}

int64_t rsc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rsc_sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

int rsc_poll(const struct rsc_poll_ops *ops, void *arg, const char *where, const char *prefix,
             uint64_t since, uint64_t *cursor, int64_t timeout_ms, int64_t min_ms, int64_t max_ms)
{
    int64_t deadline = rsc_now_ms() + timeout_ms, wait = min_ms;
    uint64_t cur = 0;
    int rc = ops->cursor(arg, &cur);
    while (!rc && since && cur == since) {
        int64_t left = deadline - rsc_now_ms();
        if (left <= 0)
            break;
        int64_t t = wait < left ? wait : left;
        if (ops->wait)
            ops->wait(arg, t);
        else
            rsc_sleep_ms(t);
        /* Backoff: a quiet store is re-read less and less often. */
        wait = wait * 2 < max_ms ? wait * 2 : max_ms;
        rc = ops->cursor(arg, &cur);
    }
    if (rc)
        return rc;
    *cursor = cur;
    if (since && cur == since)
        return H->error_set(REFIT_ETIMEDOUT, "store %s: no change below '%s' within %lld ms", where,
                            prefix, (long long)timeout_ms);
    return 0;
}
