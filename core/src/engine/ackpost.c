/* ackpost.c — acknowledgements written by a worker thread (ackpost.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ackpost.h"
#include "refit/catalog.h"
#include "refit/log.h"
#include "refit/status.h"

struct rf_ackpost {
    refit_store_t *store; /* the worker's own: store handles are not shared between threads */
    char *id;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t work, idle;
    uint64_t v, prev; /* the posted ack (v 0: none pending) */
    int busy, stop, started;
    /* The first failure since the last report: status and message (the
     * error text is per thread, so it is carried over by value). */
    int err;
    char msg[512];
};

/* On the worker: the ack of v, then the previous one forgotten. */
static void write_ack(struct rf_ackpost *a, uint64_t v, uint64_t prev)
{
    int rc = refit_ack_put(a->store, v, a->id);
    if (!rc && prev && prev != v) {
        char old[REFIT_STORE_MAX_KEY + 1];
        if (!refit_key_ack(old, prev, a->id))
            refit_store_forget(a->store, old);
    }
    pthread_mutex_lock(&a->mu);
    if (rc && !a->err) {
        a->err = rc;
        snprintf(a->msg, sizeof(a->msg), "receiver %s: acknowledging v%llu: %s", a->id, (unsigned long long)v,
                 refit_error_message());
    }
    pthread_mutex_unlock(&a->mu);
    refit_error_clear();
}

static void *worker(void *arg)
{
    struct rf_ackpost *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->v && !a->stop)
            pthread_cond_wait(&a->work, &a->mu);
        if (!a->v)
            break; /* stopping with nothing pending */
        uint64_t v = a->v, prev = a->prev;
        a->v = 0;
        a->busy = 1;
        pthread_mutex_unlock(&a->mu);
        write_ack(a, v, prev);
        pthread_mutex_lock(&a->mu);
        a->busy = 0;
        pthread_cond_broadcast(&a->idle);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

int rf_ackpost_create(refit_store_t *store, const char *id, struct rf_ackpost **out)
{
    struct rf_ackpost *a = calloc(1, sizeof(*a));
    if (!a || !(a->id = strdup(id))) {
        free(a);
        refit_store_close(store);
        return refit_error_set(REFIT_ENOMEM, "receiver %s: the acknowledgement worker", id);
    }
    a->store = store;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->work, NULL);
    pthread_cond_init(&a->idle, NULL);
    if (pthread_create(&a->th, NULL, worker, a)) {
        rf_ackpost_destroy(a);
        return refit_error_set(REFIT_EIO, "receiver %s: starting the acknowledgement worker", id);
    }
    a->started = 1;
    *out = a;
    return 0;
}

/* With mu held: wait for the worker to be idle, then take its failure. */
static int drain(struct rf_ackpost *a)
{
    while (a->v || a->busy)
        pthread_cond_wait(&a->idle, &a->mu);
    int rc = a->err;
    a->err = 0;
    return rc;
}

static int report(struct rf_ackpost *a, int rc)
{
    return rc ? refit_error_set(rc, "%s", a->msg) : 0;
}

int rf_ackpost_post(struct rf_ackpost *a, uint64_t v, uint64_t prev)
{
    if (!v)
        return refit_error_set(REFIT_EINVAL, "receiver %s: acknowledging version 0", a->id);
    pthread_mutex_lock(&a->mu);
    int rc = drain(a);
    if (!rc) {
        a->v = v;
        a->prev = prev;
        pthread_cond_signal(&a->work);
    }
    pthread_mutex_unlock(&a->mu);
    return report(a, rc);
}

int rf_ackpost_flush(struct rf_ackpost *a)
{
    pthread_mutex_lock(&a->mu);
    int rc = drain(a);
    pthread_mutex_unlock(&a->mu);
    return report(a, rc);
}

void rf_ackpost_destroy(struct rf_ackpost *a)
{
    if (!a)
        return;
    if (a->started) {
        pthread_mutex_lock(&a->mu);
        int rc = drain(a);
        a->stop = 1;
        pthread_cond_signal(&a->work);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->th, NULL);
        if (rc)
            refit_log(REFIT_LOG_WARN, "receiver", "%s", a->msg);
    }
    pthread_cond_destroy(&a->idle);
    pthread_cond_destroy(&a->work);
    pthread_mutex_destroy(&a->mu);
    refit_store_close(a->store);
    free(a->id);
    free(a);
}
