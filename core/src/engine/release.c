/* release.c — refit_publisher_wait_released for a whole job at once: one
 * publisher counts the acks of V, the others read its verdict.
 *
 * Every publisher of V waits for the same thing (refit.receivers acks of
 * V), and counting them costs a listing of versions/V/acks/ (on Redis a
 * SCAN of the whole keyspace) and a read of every ack: at 256 publishers
 * and 1024 receivers, 256 listings and 262 k ack reads a cycle for one
 * answer.  So the first publisher to take "released/<V>" (compare-and-swap
 * of an absent key) counts, as acks.c does, renewing its claim (a short
 * TTL) while it waits, and writes its verdict there; the others read the
 * key and, while it is a claim, wait on a watch of released/ for the
 * verdict.  A claim whose counter died expires within RF_CLAIM_TTL_MS, and
 * the next waiter to look takes it over.  A value a waiter cannot read (a
 * store shared with something else) or a verdict below its own
 * refit.receivers: it counts itself, as before.  Values (docs/protocol.md):
 * "claim <publisher id>", "released <V> <acks counted>". */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "refit/store_core.h"
#include "sums.h"

/* A counter renews its claim each wait (RF_POLL_ACKS_MS); three missed
 * renewals and it is presumed gone. */
#define RF_CLAIM_TTL_MS (3 * RF_POLL_ACKS_MS)
/* The verdict only spares later waiters their count: kept an hour (a
 * publisher calling wait_released later counts for itself). */
#define RF_VERDICT_TTL_MS (3600 * 1000)

enum rel_state { REL_ABSENT, REL_CLAIMED, REL_RELEASED, REL_OTHER };

/* What the key says about v for a waiter that wants `want` acks. */
static enum rel_state parse(const void *val, size_t len, uint64_t v, size_t want)
{
    char buf[256];
    if (len >= sizeof(buf))
        return REL_OTHER;
    memcpy(buf, val, len);
    buf[len] = '\0';
    if (len > 6 && !strncmp(buf, "claim ", 6))
        return REL_CLAIMED;
    uint64_t ver = 0;
    unsigned long long n = 0;
    int end = 0;
    if (sscanf(buf, "released %" SCNu64 " %llu%n", &ver, &n, &end) == 2 && (size_t)end == len && ver == v)
        return n >= want ? REL_RELEASED : REL_OTHER;
    return REL_OTHER;
}

static int read_state(refit_store_t *s, const char *key, uint64_t v, size_t want, enum rel_state *st)
{
    void *val = NULL;
    size_t len = 0;
    int rc = refit_store_get(s, key, &val, &len);
    if (rc == REFIT_ENOENT) {
        refit_error_clear();
        *st = REL_ABSENT;
        return 0;
    }
    if (!rc)
        *st = parse(val, len, v, want);
    free(val);
    return rc;
}

struct claim {
    refit_store_t *s;
    const char *key;
    char val[REFIT_STORE_MAX_KEY + 16];
    size_t len;
    double renewed; /* rf_seconds() of the claim's last write */
};

/* The counter's renewal, at most every RF_POLL_ACKS_MS / 2 (each one wakes
 * the waiters; acks arriving fast wake the counter far more often): a
 * failure only risks a second counter. */
static void renew(void *arg)
{
    struct claim *c = arg;
    double now = rf_seconds();
    if (now - c->renewed < RF_POLL_ACKS_MS / 2000.0)
        return;
    c->renewed = now;
    if (refit_store_put_ttl(c->s, c->key, c->val, c->len, RF_CLAIM_TTL_MS))
        refit_error_clear();
}

/* Count as acks.c does, then leave the verdict for the others. */
static int count(struct claim *c, uint64_t v, size_t want, int64_t timeout_ms, const char *who)
{
    int rc = rf_acks_wait_each(c->s, v, want, timeout_ms, who, renew, c);
    if (rc)
        return rc; /* the claim expires: a waiter with time left takes it over */
    char verdict[64];
    int n = snprintf(verdict, sizeof(verdict), "released %" PRIu64 " %zu", v, want);
    if (refit_store_put_ttl(c->s, c->key, verdict, (size_t)n, RF_VERDICT_TTL_MS))
        refit_error_clear(); /* the others count for themselves */
    return 0;
}

int rf_release_wait(refit_store_t *s, uint64_t version, size_t want, int64_t timeout_ms, const char *who)
{
    if (!want)
        return rf_acks_wait(s, version, want, timeout_ms, who);
    char key[64];
    snprintf(key, sizeof(key), "released/%" PRIu64, version);
    struct claim c = {s, key, "", 0, 0};
    c.len = (size_t)snprintf(c.val, sizeof(c.val), "claim %s", who);
    double deadline = rf_seconds() + (double)timeout_ms / 1000.0;
    uint64_t cursor = 0;
    int watching = 0;
    for (;;) {
        enum rel_state st = REL_OTHER;
        int rc = read_state(s, key, version, want, &st);
        double left = deadline - rf_seconds();
        int64_t left_ms = left > 0 ? (int64_t)(left * 1000) : 0;
        if (rc || st == REL_RELEASED)
            return rc;
        if (st == REL_OTHER || left_ms <= 0) /* count ourselves (after the deadline: to name who is missing) */
            return rf_acks_wait(s, version, want, left_ms, who);
        if (st == REL_ABSENT) {
            rc = refit_store_cas_ttl(s, key, NULL, 0, c.val, c.len, RF_CLAIM_TTL_MS);
            c.renewed = rf_seconds();
            if (!rc)
                return count(&c, version, want, left_ms, who);
            if (rc != REFIT_ECONFLICT)
                return rc;
            refit_error_clear();
            continue; /* another took it: read what it is */
        }
        /* Claimed by another: the cursor before the next look, so a verdict
         * written after that look wakes the watch. */
        char **keys = NULL;
        size_t nk = 0;
        int listed = 1;
        if (!watching) {
            rc = refit_store_watch(s, "released/", 0, &cursor, 0, &keys, &nk);
            if (rc == REFIT_ERANGE || rc == REFIT_ETIMEDOUT)
                rc = 0;
            watching = 1;
        } else {
            rc = rf_watch_step(s, "released/", left, RF_POLL_ACKS_MS, &cursor, &keys, &nk, &listed);
        }
        free(keys);
        if (rc)
            return rc;
    }
}
