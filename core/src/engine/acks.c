/* acks.c — a publisher waiting for the receivers' acknowledgements of a
 * version (refit_publisher_wait_released) on a watch of its acks: the acks
 * are listed and read once, then only the acks that changed are read
 * (one get_many per wake-up) instead of every ack on every round.  A store
 * that keeps no history (ERANGE) is listed again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "refit/catalog.h"
#include "refit/store_core.h"
#include "sums.h"

/* The acks seen so far: key and whether it acknowledges the version. */
struct ack_set {
    char **key;
    unsigned char *good;
    size_t n, cap, n_good;
};

static void set_free(struct ack_set *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->key[i]);
    free(a->key);
    free(a->good);
    memset(a, 0, sizeof(*a));
}

static int set_put(struct ack_set *a, const char *key, int good)
{
    size_t i = 0;
    while (i < a->n && strcmp(a->key[i], key))
        i++;
    if (i == a->n) {
        if (!good)
            return 0; /* neither counted nor known: nothing to record */
        if (a->n == a->cap) {
            size_t nc = a->cap ? a->cap * 2 : 64;
            char **nk = realloc(a->key, nc * sizeof(*nk));
            if (nk)
                a->key = nk;
            unsigned char *ng = realloc(a->good, nc);
            if (ng)
                a->good = ng;
            if (!nk || !ng)
                return REFIT_ENOMEM;
            a->cap = nc;
        }
        if (!(a->key[a->n] = strdup(key)))
            return REFIT_ENOMEM;
        a->good[a->n++] = 0;
    }
    a->n_good += (size_t)(good && !a->good[i]);
    a->n_good -= (size_t)(!good && a->good[i]);
    a->good[i] = (unsigned char)good;
    return 0;
}

/* Read keys (acks of version, or gone) and record what each says; a
 * malformed ack is not counted, a deleted one no longer. */
static int read_acks(refit_store_t *s, uint64_t version, char **keys, size_t nk, struct ack_set *a)
{
    if (!nk)
        return 0;
    struct refit_store_get_item *it = calloc(nk, sizeof(*it));
    if (!it)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < nk; i++)
        it[i].key = keys[i];
    int rc = refit_store_get_many(s, it, nk);
    for (size_t i = 0; !rc && i < nk; i++) {
        struct refit_ack *ack = NULL;
        int good = 0;
        if (it[i].status == 0 && refit_ack_decode(it[i].val, it[i].len, keys[i], &ack) == 0) {
            good = ack->version == version;
            free(ack);
        }
        rc = set_put(a, keys[i], good);
    }
    for (size_t i = 0; i < nk; i++)
        free(it[i].val);
    free(it);
    return rc;
}

/* Every ack again (the first time, and after ERANGE). */
static int relist(refit_store_t *s, const char *prefix, uint64_t version, struct ack_set *a)
{
    char **keys = NULL;
    size_t nk = 0;
    set_free(a);
    int rc = refit_store_list(s, prefix, &keys, &nk);
    if (!rc)
        rc = read_acks(s, version, keys, nk, a);
    free(keys);
    return rc;
}

int rf_watch_step(refit_store_t *s, const char *prefix, double left, int64_t poll_ms, uint64_t *cursor,
                  char ***keys, size_t *nk, int *listed)
{
    int64_t wait = (int64_t)(left * 1000) + 1;
    int rc = refit_store_watch(s, prefix, *cursor, cursor, wait < poll_ms ? wait : poll_ms, keys, nk);
    if (rc == REFIT_ERANGE)
        *listed = 0; /* the store kept no history from the cursor: list again */
    if (rc == REFIT_ERANGE || rc == REFIT_ETIMEDOUT)
        rc = 0;
    if (!rc)
        refit_error_clear(); /* an expected outcome, not the caller's error */
    return rc;
}

int rf_acks_wait(refit_store_t *s, uint64_t version, size_t want, int64_t timeout_ms, const char *who)
{
    return rf_acks_wait_each(s, version, want, timeout_ms, who, NULL, NULL);
}

int rf_acks_wait_each(refit_store_t *s, uint64_t version, size_t want, int64_t timeout_ms, const char *who,
                      void (*each)(void *arg), void *arg)
{
    char prefix[REFIT_STORE_MAX_KEY + 1];
    snprintf(prefix, sizeof(prefix), "versions/%llu/acks/", (unsigned long long)version);
    double deadline = rf_seconds() + (double)timeout_ms / 1000.0;
    struct ack_set a = {0};
    char **keys = NULL;
    size_t nk = 0;
    uint64_t cursor = 0;
    /* The cursor first, then the list: an ack written between them is
     * both listed and reported by the next watch (read twice, counted once). */
    int rc = refit_store_watch(s, prefix, 0, &cursor, 0, &keys, &nk), listed = 0;
    if (rc == REFIT_ERANGE || rc == REFIT_ETIMEDOUT)
        rc = 0;
    while (!rc) {
        if (!listed)
            rc = relist(s, prefix, version, &a);
        else
            rc = read_acks(s, version, keys, nk, &a);
        listed = 1;
        free(keys);
        keys = NULL;
        nk = 0;
        if (rc || a.n_good >= want)
            break;
        double left = deadline - rf_seconds();
        if (left <= 0) {
            rc = rf_report_missing_acks(s, version, want, a.n_good, who, timeout_ms);
            break;
        }
        if (each)
            each(arg);
        rc = rf_watch_step(s, prefix, left, RF_POLL_ACKS_MS, &cursor, &keys, &nk, &listed);
    }
    free(keys);
    set_free(&a);
    return rc;
}
