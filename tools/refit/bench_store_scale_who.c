/* bench_store_scale_who.c — one participant's part of a refit cycle in
 * `refit bench store-scale` (bench_store_scale.c): a publisher's publish,
 * a receiver's receive, a publisher's count of the acks, a receiver's
 * lease, through the public store and catalog API in the engine's order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_store_scale.h"
#include "refit/status.h"
#include "../../core/src/engine/engine.h"
#include "../../core/src/engine/sums.h"

int ss_publish_one(struct ss *s, int p)
{
    refit_store_t *st = s->pub[p];
    int k = ss_pub_pos(s, p), rc = 0;
    char id[32], key[REFIT_STORE_MAX_KEY + 1];
    snprintf(id, sizeof(id), "trainer-%d", p);
    (void)key;
    struct refit_hash128 h;
    rc = refit_catalog_publish(st, s->cat_enc[k], s->cat_len[k], &h, NULL);
    /* The checksum segments in one round trip (publisher.c); with the
     * table over the transport, none (no delta stage here). */
    size_t ns = s->n_seg[k], big = 1;
    int table = s->o.sums_transport;
    for (size_t j = 0; j < ns; j++)
        big = s->seg_len[k][j] > big ? s->seg_len[k][j] : big;
    void *sums = calloc(1, big);
    struct refit_store_put_item *pi = calloc(ns + 1, sizeof(*pi));
    char (*sk)[REFIT_STORE_MAX_KEY + 1] = calloc(ns + 1, sizeof(*sk));
    if (!rc && (!sums || !pi || !sk))
        rc = REFIT_ENOMEM;
    for (size_t j = 0; !rc && j < ns; j++) {
        snprintf(sk[j], sizeof(sk[j]), "versions/%llu/sums/%s/%zu", (unsigned long long)s->version, id, j);
        pi[j] = (struct refit_store_put_item){sk[j], sums, s->seg_len[k][j], 0};
    }
    if (!rc && !table && ns)
        rc = refit_store_put_many(st, pi, ns);
    free(sums);
    free(pi);
    free(sk);
    uint8_t addr[28] = {2}, rk[40] = {1};
    /* the region's key, and the checksum table's after it */
    struct refit_blob rkey[2] = {{rk, sizeof(rk)}, {rk, sizeof(rk)}};
    struct refit_source_record r = {.schema = 1, .source_id = id, .model = "qwen3_moe",
                                    .layout = {(uint32_t)(p % s->o.t_tp), (uint32_t)s->o.t_tp, 0, 1,
                                               (uint32_t)(p % s->o.t_ep), (uint32_t)s->o.t_ep, 0, 1},
                                    .transport = "tcp", .address = {addr, sizeof(addr)},
                                    .n_rkeys = table ? 2 : 1, .rkeys = rkey, .catalog = h, .version = s->version,
                                    .status = REFIT_SOURCE_READY, .heartbeat_ms = refit_time_ms()};
    if (!rc)
        rc = refit_record_publish(st, &r);
    if (!rc)
        rc = refit_heartbeat_put(st, id, s->version, 30000);
    /* The membership key, once per source (publisher.c: after its first
     * record, so a receiver that sees it finds the record). */
    if (!rc && s->version == 1) {
        char epoch[64];
        snprintf(key, sizeof(key), "members/%s", id);
        int el = snprintf(epoch, sizeof(epoch), "%s %llu", id, (unsigned long long)refit_time_ms());
        struct refit_store_put_item it[2] = {{key, id, strlen(id), 0}, {RF_KEY_MEMBERSHIP, epoch, (size_t)el, 0}};
        rc = refit_store_put_many(st, it, 2);
    }
    return rc;
}

/* Every source's record and heartbeat in one read (the engine's
 * refit_source_check_many), with `extra` keys in the same round trip.
 * hb (by publisher, may be NULL): the heartbeats seen, kept from
 * discovery for the fence, which then reads the records alone while they
 * are young (fence.c). */
static int check_sources(refit_store_t *st, int n, const int *which, struct refit_store_get_item *extra,
                         size_t n_extra, uint64_t *hb, int use_hb, const struct refit_store_put_item *puts,
                         size_t n_puts)
{
    struct refit_source_check *c = calloc((size_t)n, sizeof(*c));
    char (*ids)[32] = calloc((size_t)n, 32);
    int rc = c && ids ? 0 : REFIT_ENOMEM;
    for (int i = 0; !rc && i < n; i++) {
        snprintf(ids[i], 32, "trainer-%d", which ? which[i] : i);
        c[i].id = ids[i];
        c[i].seen_hb_ms = hb && use_hb ? hb[which ? which[i] : i] : 0;
    }
    if (!rc)
        rc = refit_source_check_many_put(st, c, (size_t)n, 30000, extra, n_extra, puts, n_puts);
    for (int i = 0; c && i < n; i++) {
        if (!rc && c[i].status)
            rc = refit_error_set(c[i].status, "source %s: %s", ids[i], refit_strerror(c[i].status));
        if (!rc && hb)
            hb[which ? which[i] : i] = c[i].rec->heartbeat_ms;
        free(c[i].rec);
    }
    free(c);
    free(ids);
    return rc;
}

/* The receiver's cycle as the engine makes it (discover.c, verify.c,
 * fence.c, buffers.c): a watch of sources/ from the last cycle's cursor
 * (the first cycle: a cursor and a listing), every record and heartbeat in
 * one read with the checksums of the `reads` sources its plan reads (warm:
 * the plan is cached, so it knows them), a catalog per distinct hash not
 * held yet, the fence (every record and heartbeat again, one read), the
 * ack. */
int ss_receive_one(struct ss *s, int q)
{
    refit_store_t *st = s->rcv[q];
    int n = s->o.publishers, nr = s->o.reads < n ? s->o.reads : n, rc = 0;
    char **keys = NULL;
    size_t nk = 0;
    uint64_t *cur = &s->cursor[q];
    /* discover.c watches members/ (a key per source, written once) */
    const char *wp = s->o.watch_sources ? "sources/" : "members/";
    if (*cur && s->o.watch_epoch) {
        /* warm: the epoch rides with the records (below) */
    } else if (*cur) {
        rc = refit_store_watch(st, wp, *cur, cur, 0, &keys, &nk);
        if (rc == REFIT_ETIMEDOUT || rc == REFIT_ERANGE)
            rc = 0; /* ERANGE would list again: not at this scale's history */
        free(keys);
    } else {
        rc = refit_store_watch(st, wp, 0, cur, 0, &keys, &nk);
        void *ep = NULL;
        size_t el = 0;
        if (!rc && s->o.watch_epoch && (rc = refit_store_get(st, RF_KEY_MEMBERSHIP, &ep, &el)) == REFIT_ENOENT)
            rc = 0;
        free(ep);
        if (!rc)
            rc = refit_store_list(st, "sources/", &keys, &nk);
        free(keys);
    }
    int warm = s->version > 1;
    /* The checksum segments of the sources the plan reads: seg_share of
     * each one's segments (sums.h), rotated by receiver. */
    int *src = calloc((size_t)nr, sizeof(int));
    uint64_t *hb = calloc((size_t)n, sizeof(*hb));
    size_t n_keys = 0;
    for (int i = 0; src && i < nr; i++) {
        /* The sources a plan reads are spread over the ranks. */
        src[i] = (int)(((long)i * n / nr + q) % n);
        size_t ns = s->n_seg[ss_pub_pos(s, src[i])], take = (size_t)(s->o.seg_share * (double)ns + 0.999);
        n_keys += s->o.sums_transport ? 0 : take < 1 ? 1 : take > ns ? ns : take;
    }
    struct refit_store_get_item *it = calloc(n_keys + 1, sizeof(*it));
    char (*kb)[64] = calloc(n_keys ? n_keys : 1, 64);
    if (!rc && (!it || !kb || !src || !hb))
        rc = REFIT_ENOMEM;
    size_t m = 0;
    for (int i = 0; !rc && !s->o.sums_transport && i < nr; i++) {
        size_t ns = s->n_seg[ss_pub_pos(s, src[i])], take = (size_t)(s->o.seg_share * (double)ns + 0.999);
        take = take < 1 ? 1 : take > ns ? ns : take;
        for (size_t j = 0; j < take; j++, m++) {
            snprintf(kb[m], 64, "versions/%llu/sums/trainer-%d/%zu", (unsigned long long)s->version, src[i],
                     (j + (size_t)q) % ns);
            it[m].key = kb[m];
        }
    }
    /* Warm, with the set of sources unchanged: only the records of the
     * sources the cached plan reads (discover.c). */
    /* warm, --watch epoch: the membership epoch with them (discover.c) */
    size_t me = m + (it && warm && s->o.watch_epoch);
    if (me > m)
        it[m].key = RF_KEY_MEMBERSHIP;
    if (!rc && warm && !s->o.records_all)
        rc = check_sources(st, nr, src, it, me, hb, 0, NULL, 0);
    else if (!rc)
        rc = check_sources(st, n, NULL, warm ? it : NULL, warm ? me : 0, hb, 0, NULL, 0);
    if (me > m)
        free(it[m].val);
    /* Catalogs: fetched once per distinct hash. */
    for (int k = 0; !rc && k < s->n_cat; k++) {
        uint8_t *held = &s->held[(size_t)q * s->n_cat + k];
        if (*held || !s->present[k])
            continue;
        refit_catalog_t *c = NULL;
        rc = refit_catalog_fetch(st, &s->cat_hash[k], &c);
        refit_catalog_destroy(c);
        *held = 1;
    }
    if (!rc && !warm && m) /* cold: the plan is made now, then its checksums read */
        rc = refit_store_get_many(st, it, m);
    for (size_t i = 0; it && i < m; i++) {
        if (!rc && it[i].status)
            rc = refit_error_set(it[i].status, "%s: %s", kb[i], refit_strerror(it[i].status));
        free(it[i].val);
    }
    free(it);
    free(kb);
    /* The fence: the records of the sources the plan read, with the ack
     * in the same round trip (fence.c; --ack apart: after it). */
    char id[32], ack_key[REFIT_STORE_MAX_KEY + 1];
    snprintf(id, sizeof(id), "engine-%d-%d", q / s->o.e_tp, q % s->o.e_tp);
    struct refit_store_put_item ack = {0};
    if (!rc && !s->o.ack_apart && !(rc = refit_ack_item(s->version, id, ack_key, (void **)&ack.val, &ack.len)))
        ack.key = ack_key;
    if (!rc)
        rc = check_sources(st, nr, src, NULL, 0, hb, !s->o.fence_heartbeats, &ack, ack.key ? 1 : 0);
    free((void *)ack.val);
    free(src);
    free(hb);
    if (!rc && s->o.ack_apart)
        rc = refit_ack_put(st, s->version, id);
    return rc;
}

int ss_release_one(struct ss *s, int p)
{
    if (!s->o.release_count) { /* the engine's wait (release.c) */
        char id[32];
        snprintf(id, sizeof(id), "trainer-%d", p);
        return rf_release_wait(s->pub[p], s->version, (size_t)s->o.receivers, 60000, id);
    }
    size_t n = 0;
    int rc = refit_ack_count(s->pub[p], s->version, &n);
    if (!rc && n != (size_t)s->o.receivers)
        rc = refit_error_set(REFIT_EPROTO, "%zu of %d acks", n, s->o.receivers);
    return rc;
}

/* The fan-out lease list's shape (fanout.md): a map with a list of
 * [puller, expires, version]; enough bytes for the store to carry. */
int ss_lease_one(struct ss *s, int q)
{
    refit_store_t *st = s->rcv[q];
    for (int tries = 0; tries < 1000; tries++) {
        void *cur = NULL;
        size_t len = 0;
        int rc = refit_store_get(st, "load/trainer", &cur, &len);
        if (rc && rc != REFIT_ENOENT)
            return rc;
        char add[64];
        int al = snprintf(add, sizeof(add), "[engine-%d,%llu,%llu]", q, (unsigned long long)refit_time_ms(),
                          (unsigned long long)s->version);
        /* Expired and released entries drop out: the list stays short. */
        size_t keep = rc ? 0 : (len > 512 ? 512 : len);
        char *nv = malloc(keep + (size_t)al + 1);
        if (!nv) {
            free(cur);
            return REFIT_ENOMEM;
        }
        if (keep)
            memcpy(nv, cur, keep);
        memcpy(nv + keep, add, (size_t)al);
        rc = refit_store_cas(st, "load/trainer", rc ? NULL : cur, rc ? 0 : len, nv, keep + (size_t)al);
        free(nv);
        free(cur);
        if (rc != REFIT_ECONFLICT) {
            refit_error_clear();
            return rc;
        }
    }
    return refit_error_set(REFIT_ECONFLICT, "load/trainer: 1000 lost compare-and-swaps");
}
