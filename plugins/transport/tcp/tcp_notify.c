/* tcp_notify.c — the tcp transport's queue of received notifications.
 *
 * A notification arrives on a peer's control connection (tcp_server.c) and
 * waits here, with the name that connection authenticated with, until
 * poll_notify takes it.  The queue is bounded in count and bytes
 * (notify_queue, notify_queue_bytes): a note that does not fit is dropped,
 * counted, logged (first, then every power of two) and its sender told
 * (TCP_S_FULL), so nobody can grow our memory by notifying, and a
 * receiver that never polls (pull mode) loses notes, not memory.  A note
 * larger than the poller's buffer is taken off the queue with ETOOBIG
 * rather than left at its head, where it would block every later one.
 * The queue itself is the one the transports share (common/tp_nq.h); here
 * are its lock, its wait and tcp's way of logging and answering. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refit/log.h"
#include "tcp_int.h"

static void log_drop(refit_tp_t *tp, const char *why, const char *from, size_t len, uint64_t k)
{
    if ((k & (k - 1)) == 0)
        tcp_h->log(REFIT_LOG_WARN, TCP_NAME, "%s: dropped a notification of %zu bytes from '%s': %s "
                   "(%llu dropped so far)", tp->name, len, from, why, (unsigned long long)k);
}

int tcp_nq_push(refit_tp_t *tp, const char *from, struct rtp_notice *m)
{
    snprintf(m->from, sizeof(m->from), "%s", from);
    char why[128];
    pthread_mutex_lock(&tp->nlock);
    uint64_t k = rtp_nq_refuse(&tp->nq, m->len, why, sizeof(why));
    if (!k) {
        rtp_nq_append(&tp->nq, m);
        pthread_cond_broadcast(&tp->ncond);
    }
    pthread_mutex_unlock(&tp->nlock);
    if (!k)
        return TCP_S_OK;
    log_drop(tp, why, from, m->len, k);
    free(m);
    return TCP_S_FULL;
}

int tcp_nq_poll(refit_tp_t *tp, void *buf, size_t cap, size_t *len, char *from, size_t from_cap,
                int64_t timeout_ms)
{
    if (!len || (!buf && cap))
        return tcp_h->error_set(REFIT_EINVAL, "tcp: %s: poll_notify without a buffer", tp->name);
    struct timespec dl;
    tcp_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&tp->nlock);
    while (!tp->nq.head)
        if (pthread_cond_timedwait(&tp->ncond, &tp->nlock, &dl) == ETIMEDOUT && !tp->nq.head) {
            pthread_mutex_unlock(&tp->nlock);
            return tcp_h->error_set(REFIT_ETIMEDOUT, "tcp: %s: no notification within %lld ms",
                                    tp->name, (long long)timeout_ms);
        }
    struct rtp_notice *m = rtp_nq_take(&tp->nq);
    uint64_t k = rtp_nq_count_out(&tp->nq, m, cap);
    pthread_mutex_unlock(&tp->nlock);
    *len = m->len;
    int rc = 0;
    if (k) {
        log_drop(tp, "larger than the poller's buffer", m->from, m->len, k);
        rc = tcp_h->error_set(REFIT_ETOOBIG, "tcp: %s: notification of %zu bytes from '%s', buffer of "
                              "%zu: dropped", tp->name, m->len, m->from, cap);
    } else {
        rtp_notice_copy(m, buf, from, from_cap);
    }
    free(m);
    return rc;
}

int tcp_notify_stats(refit_tp_t *tp, struct refit_tp_notify_stats *out)
{
    if (!out || out->size < sizeof(size_t))
        return tcp_h->error_set(REFIT_EINVAL, "tcp: notify_stats without a size");
    pthread_mutex_lock(&tp->nlock);
    rtp_nq_stats(&tp->nq, out);
    pthread_mutex_unlock(&tp->nlock);
    return 0;
}

void tcp_nq_fini(refit_tp_t *tp)
{
    for (struct rtp_notice *m; (m = rtp_nq_take(&tp->nq));)
        free(m);
}
