/* bench_store_scale_loops.c — the waiting loops of `refit bench
 * store-scale` (bench_store_scale.c), one round each at the benchmark's
 * scale: the push publisher's old advert scan beside its watch now, a
 * fan-out waiter's source choice, and poll()'s wake-up latency. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_store_scale.h"
#include "cli.h"
#include "refit/status.h"


/* What the push publisher does now (push_pub.c): a watch of push/slots/
 * from its cursor, woken by the adverts of the next version, then one read
 * of the adverts that changed. */
static int watch_round(struct ss *s, const void *adv, size_t len)
{
    refit_store_t *st = s->pub[0];
    uint64_t cur = 0;
    char **keys = NULL;
    size_t nk = 0;
    int rc = refit_store_watch(st, "push/slots/", 0, &cur, 0, &keys, &nk);
    for (int q = 0; !rc && q < s->o.receivers; q++) {
        char key[64];
        snprintf(key, sizeof(key), "push/slots/engine-%d-%d", q / s->o.e_tp, q % s->o.e_tp);
        rc = refit_store_put(s->rcv[q], key, adv, len);
    }
    struct counters a, b;
    ss_counters(s, &a);
    uint64_t rt0 = refit_store_round_trips(st);
    double t0 = cli_now();
    size_t got = 0;
    /* Until every receiver's advert was seen (a watch returns at most one
     * stream page at a time). */
    while (!rc && got < (size_t)s->o.receivers) {
        rc = refit_store_watch(st, "push/slots/", cur, &cur, 1000, &keys, &nk);
        struct refit_store_get_item *it = rc ? NULL : calloc(nk ? nk : 1, sizeof(*it));
        if (!rc && !it)
            rc = REFIT_ENOMEM;
        for (size_t i = 0; !rc && i < nk; i++)
            it[i].key = keys[i];
        if (!rc)
            rc = refit_store_get_many(st, it, nk);
        for (size_t i = 0; it && i < nk; i++)
            free(it[i].val);
        free(it);
        free(keys);
        got += nk;
    }
    double dt = cli_now() - t0;
    ss_counters(s, &b);
    if (rc)
        return refit_error_push(rc, "push advert watch");
    double calls = b.calls - a.calls, bytes = b.in_bytes - a.in_bytes + b.out_bytes - a.out_bytes;
    printf("push publisher now (watch push/slots/ + one get_many of the %zu adverts that changed): %.1f ms, "
           "%.0f commands, %llu round trips, %.2f MB, once per version\n", got, dt * 1e3, calls,
           (unsigned long long)(refit_store_round_trips(st) - rt0), bytes / 1e6);
    return 0;
}

/* What one round of an old waiting loop cost: keys listed, seconds,
 * commands, bytes both ways and round trips of its handle. */
struct ss_round {
    size_t n;
    double s, calls, bytes;
    uint64_t rt;
};

/* One round of the loops as they were before they watched: list prefix,
 * then get every key one round trip at a time, and with `also` the key of
 * the same name below it (a replica's lease list beside its record). */
static int ss_list_get(struct ss *s, refit_store_t *st, const char *prefix, const char *also, struct ss_round *out)
{
    struct counters a, b;
    ss_counters(s, &a);
    uint64_t rt0 = refit_store_round_trips(st);
    double t0 = cli_now();
    char **keys = NULL;
    size_t nk = 0;
    int rc = refit_store_list(st, prefix, &keys, &nk);
    for (size_t i = 0; !rc && i < nk; i++) {
        void *v = NULL;
        size_t len = 0;
        rc = refit_store_get(st, keys[i], &v, &len);
        free(v);
        if (!rc && also) {
            char lk[REFIT_STORE_MAX_KEY + 1];
            snprintf(lk, sizeof(lk), "%s%s", also, keys[i] + strlen(prefix));
            v = NULL;
            rc = refit_store_get(st, lk, &v, &len);
            free(v);
        }
    }
    free(keys);
    out->s = cli_now() - t0;
    ss_counters(s, &b);
    out->n = nk;
    out->calls = b.calls - a.calls;
    out->bytes = b.in_bytes - a.in_bytes + b.out_bytes - a.out_bytes;
    out->rt = refit_store_round_trips(st) - rt0;
    return rc;
}

/* Push adverts (push/slots/<receiver>), as big as an advert with a tcp
 * address and three remote keys, then one publisher's scan. */
int ss_advert_round(struct ss *s)
{
    uint8_t adv[240] = {0};
    int rc = 0;
    for (int q = 0; !rc && q < s->o.receivers; q++) {
        char key[64];
        snprintf(key, sizeof(key), "push/slots/engine-%d-%d", q / s->o.e_tp, q % s->o.e_tp);
        rc = refit_store_put(s->rcv[q], key, adv, sizeof(adv));
    }
    struct ss_round r = {0};
    if (!rc)
        rc = ss_list_get(s, s->rcv[0], "push/slots/", NULL, &r);
    if (rc)
        return refit_error_push(rc, "push advert scan");
    printf("push publisher's advert scan (list push/slots/ + get each of %zu): %.1f ms, %.0f commands, "
           "%llu round trips, %.2f MB\n", r.n, r.s * 1e3, r.calls, (unsigned long long)r.rt, r.bytes / 1e6);
    printf("  every 200 ms by each of %d publishers while it serves: %.0f commands/s, %.1f MB/s\n",
           s->o.publishers, r.calls * 5 * s->o.publishers, r.bytes * 5 * s->o.publishers / 1e6);
    return watch_round(s, adv, sizeof(adv));
}

/* Replica records (with the image's chunk checksums: 8 bytes per 4 MiB of
 * an engine rank's staging) and lease lists, then one waiter's choice. */
int ss_replica_round(struct ss *s, uint64_t image_bytes)
{
    size_t rec_len = 200 + 8 * (size_t)((image_bytes + (4u << 20) - 1) / (4u << 20));
    uint8_t *rec = calloc(1, rec_len);
    int rc = rec ? 0 : REFIT_ENOMEM;
    for (int q = 0; !rc && q < s->o.receivers; q++) {
        char key[64];
        snprintf(key, sizeof(key), "replicas/engine-%d-%d", q / s->o.e_tp, q % s->o.e_tp);
        rc = refit_store_put(s->rcv[q], key, rec, rec_len);
        snprintf(key, sizeof(key), "load/engine-%d-%d", q / s->o.e_tp, q % s->o.e_tp);
        if (!rc)
            rc = refit_store_put(s->rcv[q], key, "{\"leases\":[]}", 13);
    }
    free(rec);
    struct ss_round r = {0};
    if (!rc)
        rc = ss_list_get(s, s->rcv[0], "replicas/", "load/", &r);
    if (rc)
        return refit_error_push(rc, "fan-out source choice");
    printf("fan-out waiter's choice (list replicas/ + record and lease list of each of %zu; records %.1f KB with "
           "their chunk checksums): %.1f ms, %.0f commands, %llu round trips, %.2f MB\n",
           r.n, rec_len / 1e3, r.s * 1e3, r.calls, (unsigned long long)r.rt, r.bytes / 1e6);
    printf("  every 25 ms (its longest backoff) by each waiting receiver: with half of %d waiting, %.0f commands/s, "
           "%.0f MB/s\n", s->o.receivers, r.calls * 40 * s->o.receivers / 2, r.bytes * 40 * s->o.receivers / 2 / 1e6);
    return 0;
}

/* How long a waiting poll() takes to see another handle's write, with and
 * without store.redis.notify (the write lands 50 ms into the wait). */
struct wake {
    refit_store_t *w;
    int i;
};

static void *wake_writer(void *arg)
{
    struct wake *k = arg;
    usleep(50000);
    char key[48];
    snprintf(key, sizeof(key), "push/slots/wake-%d", k->i);
    refit_store_put(k->w, key, "x", 1);
    return NULL;
}

int ss_wake_latency(struct ss *s)
{
    for (int on = 1; on >= 0; on--) {
        refit_store_t *a = NULL;
        int rc = refit_config_set(s->cfg, on ? "store.redis.notify=true" : "store.redis.notify=false", "bench");
        if (!rc)
            rc = refit_store_open(s->cfg, s->loader, NULL, &a);
        double sum = 0, worst = 0;
        const int n = 20;
        for (int i = 0; !rc && i < n; i++) {
            uint64_t c0 = 0, c1 = 0;
            rc = refit_store_poll(a, "push/", 0, &c0, 0);
            /* Settle into the long end of the backoff, as a waiting
             * publisher is after its first few re-checks. */
            if (!rc && (rc = refit_store_poll(a, "push/", c0, &c1, 400)) == REFIT_ETIMEDOUT)
                rc = 0;
            struct wake k = {s->pub[0], i};
            pthread_t th;
            double t0 = cli_now();
            pthread_create(&th, NULL, wake_writer, &k);
            if (!rc)
                rc = refit_store_poll(a, "push/", c0, &c1, 10000);
            double dt = cli_now() - t0 - 0.05;
            pthread_join(th, NULL);
            sum += dt;
            worst = dt > worst ? dt : worst;
        }
        refit_store_close(a);
        if (rc)
            return refit_error_push(rc, "wake-up latency");
        printf("poll() wake-up after a write, store.redis.notify %-5s: mean %6.1f ms, worst %6.1f ms (%d writes; "
               "poll_min 5 ms, poll_max 200 ms)\n", on ? "true" : "false", sum / n * 1e3, worst * 1e3, n);
    }
    return 0;
}
