/* tp_nq.h — the queue of received notifications that the transport
 * plugins share (ucx and ofi through tp_common.c, tcp directly): first in,
 * first out, bounded in count and bytes (notify_queue,
 * notify_queue_bytes), with the counters of refit_tp_notify_stats.
 *
 * Header-only, and neither locking nor allocating: each plugin allocates
 * its notes with its own allocator, holds its own lock around these calls
 * and logs with its own host table (tcp links none of tp_common.c). */
#ifndef REFIT_TP_NQ_H
#define REFIT_TP_NQ_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "refit/transport.h"

struct rtp_notice {
    struct rtp_notice *next;
    size_t len;
    char from[REFIT_TP_NAME_MAX + 1]; /* the name its sender gave */
    unsigned char data[];
};

struct rtp_nq {
    struct rtp_notice *head, *tail;
    size_t count, bytes;     /* in the queue */
    uint64_t max, max_bytes; /* its bounds */
    uint64_t received, delivered, dropped_full, dropped_big;
};

/* A note of len bytes that would pass the bounds: counted dropped, why
 * into why[cap] and the drop count returned (a plugin logs the first, then
 * every power of two).  0: it fits. */
static inline uint64_t rtp_nq_refuse(struct rtp_nq *q, size_t len, char *why, size_t cap)
{
    if (q->count < q->max && len <= q->max_bytes - q->bytes)
        return 0;
    snprintf(why, cap, "the queue holds %zu notifications, %zu bytes (notify_queue, "
             "notify_queue_bytes)", q->count, q->bytes);
    return ++q->dropped_full;
}

/* n (its len, from and data set) at the tail. */
static inline void rtp_nq_append(struct rtp_nq *q, struct rtp_notice *n)
{
    n->next = NULL;
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
    q->count++;
    q->bytes += n->len;
    q->received++;
}

/* The head off the queue, or NULL when it is empty. */
static inline struct rtp_notice *rtp_nq_take(struct rtp_nq *q)
{
    struct rtp_notice *n = q->head;
    if (!n)
        return NULL;
    q->head = n->next;
    if (!q->head)
        q->tail = NULL;
    q->count--;
    q->bytes -= n->len;
    return n;
}

/* A taken note for a poller's buffer of cap bytes: 0 (counted delivered),
 * or the drop count when the note is larger (counted dropped: left at the
 * head it would block every note behind it). */
static inline uint64_t rtp_nq_count_out(struct rtp_nq *q, const struct rtp_notice *n, size_t cap)
{
    if (n->len > cap)
        return ++q->dropped_big;
    q->delivered++;
    return 0;
}

/* A delivered note into the poller's buffer, and its sender into from
 * (NULL: not wanted). */
static inline void rtp_notice_copy(const struct rtp_notice *n, void *buf, char *from, size_t from_cap)
{
    if (n->len)
        memcpy(buf, n->data, n->len);
    if (from)
        snprintf(from, from_cap, "%s", n->from);
}

/* notify_stats(): the counters into out, as many bytes as out->size says
 * (checked by the caller to hold the size field at least). */
static inline void rtp_nq_stats(const struct rtp_nq *q, struct refit_tp_notify_stats *out)
{
    struct refit_tp_notify_stats v = {0};
    v.received = q->received;
    v.delivered = q->delivered;
    v.dropped_full = q->dropped_full;
    v.dropped_oversize = q->dropped_big;
    v.queued = q->count;
    v.queued_bytes = q->bytes;
    v.max_count = q->max;
    v.max_bytes = q->max_bytes;
    v.size = out->size < sizeof(v) ? out->size : sizeof(v);
    memcpy(out, &v, v.size);
}

#endif
