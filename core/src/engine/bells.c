/* bells.c — doorbells between publishers and receivers (bells.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bells.h"
#include "publisher.h"
#include "receiver.h"
#include "refit/log.h"

/* A receiver's bells: per source id, the opened bell or none. */
struct rf_bells {
    size_t n;
    char **id;
    refit_tp_bell_t **b; /* NULL: this source has no usable bell */
    int logged;
};

static int bell_key(char *key, size_t cap, const char *id)
{
    int n = snprintf(key, cap, "bells/%s", id);
    return n > 0 && (size_t)n < cap ? 0 : refit_error_set(REFIT_EINVAL, "bells/%s: key too long", id);
}

/* ---- publisher ---- */

void rf_pub_bell_create(refit_publisher_t *pub)
{
    if (refit_transport_bell_create(pub->tp, &pub->bell)) {
        refit_error_clear(); /* no doorbells here: receivers watch the store */
        return;
    }
    char key[REFIT_STORE_MAX_KEY + 1];
    void *h = NULL;
    size_t len = 0;
    int rc = bell_key(key, sizeof(key), pub->id);
    if (!rc)
        rc = refit_transport_bell_pack(pub->tp, pub->bell, NULL, &len);
    if (!rc && !(h = malloc(len)))
        rc = REFIT_ENOMEM;
    if (!rc)
        rc = refit_transport_bell_pack(pub->tp, pub->bell, h, &len);
    if (!rc)
        rc = refit_store_put_live(pub->ctx->store, key, h, len, 0);
    free(h);
    if (rc) {
        refit_log(REFIT_LOG_WARN, "publisher", "%s: no doorbell (receivers watch the store): %s", pub->id,
                  refit_error_message());
        refit_error_clear();
        refit_transport_bell_close(pub->tp, pub->bell);
        pub->bell = NULL;
    }
}

void rf_pub_bell_ring(refit_publisher_t *pub, uint64_t v)
{
    if (pub->bell && refit_transport_bell_ring(pub->tp, pub->bell, v)) {
        refit_log(REFIT_LOG_WARN, "publisher", "%s: ringing the doorbell for v%llu: %s", pub->id,
                  (unsigned long long)v, refit_error_message());
        refit_error_clear();
    }
}

void rf_pub_bell_destroy(refit_publisher_t *pub)
{
    if (!pub->bell)
        return;
    char key[REFIT_STORE_MAX_KEY + 1];
    if (pub->ctx->store && !bell_key(key, sizeof(key), pub->id)) {
        refit_store_forget(pub->ctx->store, key);
        refit_store_del(pub->ctx->store, key);
    }
    refit_transport_bell_close(pub->tp, pub->bell);
    pub->bell = NULL;
}

/* ---- receiver ---- */

void rf_rcv_bells_fini(refit_receiver_t *r)
{
    struct rf_bells *s = r->bells;
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        refit_transport_bell_close(r->tp, s->b[i]);
        free(s->id[i]);
    }
    free(s->id);
    free(s->b);
    free(s);
    r->bells = NULL;
}

/* The bell of source id (opened on first use; NULL: none). */
static refit_tp_bell_t *bell_of(refit_receiver_t *r, const char *id)
{
    struct rf_bells *s = r->bells;
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->id[i], id))
            return s->b[i];
    char **ni = realloc(s->id, (s->n + 1) * sizeof(*ni));
    if (ni)
        s->id = ni;
    refit_tp_bell_t **nb = ni ? realloc(s->b, (s->n + 1) * sizeof(*nb)) : NULL;
    if (nb)
        s->b = nb;
    char *dup = nb ? strdup(id) : NULL;
    if (!dup)
        return NULL; /* out of memory: the store's watch */
    char key[REFIT_STORE_MAX_KEY + 1];
    void *h = NULL;
    size_t len = 0;
    refit_tp_bell_t *b = NULL;
    if (!bell_key(key, sizeof(key), id) && !refit_store_get(r->ctx->store, key, &h, &len))
        (void)refit_transport_bell_open(r->tp, h, len, &b);
    free(h);
    refit_error_clear(); /* no bell (none advertised, other host, no doorbells): not an error */
    s->id[s->n] = dup;
    s->b[s->n++] = b;
    return b;
}

int rf_rcv_bells_wait(refit_receiver_t *r, int64_t ms, int *waited)
{
    *waited = 0;
    if (!r->disc.n_src || !r->last_version || !refit_transport_has_bells(r->tp))
        return REFIT_ENOTSUP; /* no sources pulled from yet, or no doorbells: the store's watch */
    if (!r->bells && !(r->bells = calloc(1, sizeof(*r->bells))))
        return REFIT_ENOTSUP;
    size_t n = r->disc.n_src;
    refit_tp_bell_t *bs[64];
    if (n > sizeof(bs) / sizeof(bs[0]))
        return REFIT_ENOTSUP; /* many sources: the store's batched watch serves them better */
    for (size_t i = 0; i < n; i++)
        if (!(bs[i] = bell_of(r, r->disc.src[i].id)))
            return REFIT_ENOTSUP;
    if (!r->bells->logged) {
        r->bells->logged = 1;
        refit_log(REFIT_LOG_INFO, "receiver", "%s: waiting for versions on the %zu source(s)' doorbells", r->id, n);
    }
    double end = rf_seconds() + (double)ms / 1e3;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 0;
        /* Rung past our version already: this source is not what we wait for. */
        if (!refit_transport_bell_wait(r->tp, bs[i], r->last_version, &v, 0))
            continue;
        refit_error_clear();
        int64_t left = (int64_t)((end - rf_seconds()) * 1e3);
        int rc = refit_transport_bell_wait(r->tp, bs[i], r->last_version, &v, left > 0 ? left : 0);
        *waited = 1;
        if (rc == REFIT_ETIMEDOUT) {
            refit_error_clear();
            return rc;
        }
        if (rc) {
            refit_log(REFIT_LOG_WARN, "receiver", "%s: doorbell of %s: %s (watching the store)", r->id,
                      r->disc.src[i].id, refit_error_message());
            refit_error_clear();
            return REFIT_ENOTSUP;
        }
    }
    return 0;
}
