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
 * rather than left at its head, where it would block every later one. */
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

int tcp_nq_push(refit_tp_t *tp, const char *from, struct tcp_nmsg *m)
{
    snprintf(m->from, sizeof(m->from), "%s", from);
    m->next = NULL;
    pthread_mutex_lock(&tp->nlock);
    if (tp->n_nmsgs >= tp->nq_max || m->len > tp->nq_max_bytes - tp->nq_bytes) {
        uint64_t k = ++tp->nq_dropped_full;
        size_t n = tp->n_nmsgs, b = tp->nq_bytes;
        pthread_mutex_unlock(&tp->nlock);
        char why[128];
        snprintf(why, sizeof(why), "the queue holds %zu notifications, %zu bytes (notify_queue, "
                 "notify_queue_bytes)", n, b);
        log_drop(tp, why, from, m->len, k);
        free(m);
        return TCP_S_FULL;
    }
    if (tp->ntail)
        tp->ntail->next = m;
    else
        tp->nhead = m;
    tp->ntail = m;
    tp->n_nmsgs++;
    tp->nq_bytes += m->len;
    tp->nq_received++;
    pthread_cond_broadcast(&tp->ncond);
    pthread_mutex_unlock(&tp->nlock);
    return TCP_S_OK;
}

/* The head of the queue, off it (nlock held). */
static struct tcp_nmsg *take_head(refit_tp_t *tp)
{
    struct tcp_nmsg *m = tp->nhead;
    tp->nhead = m->next;
    if (!tp->nhead)
        tp->ntail = NULL;
    tp->n_nmsgs--;
    tp->nq_bytes -= m->len;
    return m;
}

int tcp_nq_poll(refit_tp_t *tp, void *buf, size_t cap, size_t *len, char *from, size_t from_cap,
                int64_t timeout_ms)
{
    if (!len || (!buf && cap))
        return tcp_h->error_set(REFIT_EINVAL, "tcp: %s: poll_notify without a buffer", tp->name);
    struct timespec dl;
    tcp_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&tp->nlock);
    while (!tp->nhead)
        if (pthread_cond_timedwait(&tp->ncond, &tp->nlock, &dl) == ETIMEDOUT && !tp->nhead) {
            pthread_mutex_unlock(&tp->nlock);
            return tcp_h->error_set(REFIT_ETIMEDOUT, "tcp: %s: no notification within %lld ms",
                                    tp->name, (long long)timeout_ms);
        }
    struct tcp_nmsg *m = take_head(tp);
    int big = m->len > cap;
    uint64_t k = big ? ++tp->nq_dropped_big : (tp->nq_delivered++, 0);
    pthread_mutex_unlock(&tp->nlock);
    *len = m->len;
    int rc = 0;
    if (big) {
        log_drop(tp, "larger than the poller's buffer", m->from, m->len, k);
        rc = tcp_h->error_set(REFIT_ETOOBIG, "tcp: %s: notification of %zu bytes from '%s', buffer of "
                              "%zu: dropped", tp->name, m->len, m->from, cap);
    } else {
        memcpy(buf, m->data, m->len);
        if (from)
            snprintf(from, from_cap, "%s", m->from);
    }
    free(m);
    return rc;
}

int tcp_notify_stats(refit_tp_t *tp, struct refit_tp_notify_stats *out)
{
    if (!out || out->size < sizeof(size_t))
        return tcp_h->error_set(REFIT_EINVAL, "tcp: notify_stats without a size");
    struct refit_tp_notify_stats v = {0};
    pthread_mutex_lock(&tp->nlock);
    v.received = tp->nq_received;
    v.delivered = tp->nq_delivered;
    v.dropped_full = tp->nq_dropped_full;
    v.dropped_oversize = tp->nq_dropped_big;
    v.queued = tp->n_nmsgs;
    v.queued_bytes = tp->nq_bytes;
    v.max_count = tp->nq_max;
    v.max_bytes = tp->nq_max_bytes;
    pthread_mutex_unlock(&tp->nlock);
    size_t sz = out->size < sizeof(v) ? out->size : sizeof(v);
    v.size = sz;
    memcpy(out, &v, sz);
    return 0;
}

void tcp_nq_fini(refit_tp_t *tp)
{
    while (tp->nhead)
        free(take_head(tp));
}
