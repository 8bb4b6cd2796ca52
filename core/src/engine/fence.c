/* fence.c — the fence (receiver.h): before a pull commits, everything it
 * read from must still offer the version pulled.  One implementation for
 * every mode: a pull from trainer ranks fences their source records
 * (rf_fence_sources); a fan-out pull from a replica fences the replica's
 * record and the lease the puller holds on it; push mode uses the same
 * check to watch its sources while they write.
 *
 * What "still offers v" means: the record is READY, fresh (a source's
 * heartbeat younger than refit.stale_after; a replica's record expires by
 * itself), has the identity read (a source's catalog, a replica's remote
 * key) and is at v — or at v+1 when the source keeps two versions (copy
 * mode, double-buffered replicas) both as read and now: such a source
 * reuses v's memory only after it stops keeping v, which it says first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "receiver.h"
#include "replica.h"

/* A record as the store has it now. */
struct offer {
    int ready, stale;
    const char *status;
    uint64_t version;
    uint32_t keeps;
    struct refit_blob ident;
    void *owned; /* what to free */
};

static struct offer source_offer(struct refit_source_record *rec, bool stale);

static int read_source(refit_receiver_t *r, const struct rf_fence_item *it, struct offer *o)
{
    struct refit_source_record *rec = NULL;
    bool stale = false;
    int rc = refit_source_check(r->ctx->store, it->id, r->ctx->stale_after_ms, &rec, &stale);
    if (rc)
        return refit_error_push(rc, "source %s", it->id);
    *o = source_offer(rec, stale);
    return 0;
}

static int read_replica(refit_receiver_t *r, const struct rf_fence_item *it, struct offer *o)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    void *val = NULL;
    size_t len = 0;
    struct rf_replica *now = NULL;
    int rc = rf_key_replica(key, it->id);
    if (!rc)
        rc = refit_store_get(r->ctx->store, key, &val, &len);
    if (!rc)
        rc = rf_replica_decode(val, len, key, &now);
    free(val);
    if (rc)
        return refit_error_push(rc == REFIT_ENOENT ? REFIT_ESTALE : rc, "replica %s is gone", it->id);
    *o = (struct offer){now->status == RF_REPLICA_READY, 0, rf_replica_status_name(now->status), now->version,
                        now->keeps, now->rkey, now};
    return 0;
}

/* The puller's lease still held, with a margin for the copy's last step. */
static int lease_held(refit_receiver_t *r, const struct rf_fence_item *it, uint64_t v)
{
    struct rf_lease *l = NULL;
    size_t n = 0;
    int rc = rf_lease_read(r->ctx->store, it->lease_key, &l, &n, NULL, NULL), held = 0;
    uint64_t t = (uint64_t)r->ctx->timeout_ms / 4, spare = t < 500 ? t : 500, now = refit_time_ms();
    for (size_t i = 0; !rc && i < n; i++)
        held |= !strcmp(l[i].id, it->holder) && l[i].expires_ms > now + spare;
    free(l);
    if (!rc && !held)
        rc = refit_error_set(REFIT_ESTALE, "the lease on replica %s expired during the pull of v%llu", it->id,
                             (unsigned long long)v);
    return rc;
}

static int same(struct refit_blob a, struct refit_blob b)
{
    return a.len == b.len && !memcmp(a.data, b.data, a.len);
}

/* The verdict on what the store has now (o's memory is freed). */
static int judge(const struct rf_fence_item *it, struct offer *o, uint64_t v, int exact)
{
    int rc = 0;
    /* A source's catalog is the same at every version of one layout; a
     * replica's key names the buffer of one version. */
    int ident = same(o->ident, it->ident);
    int next = !exact && it->keeps > 1 && o->keeps > 1 && o->version == v + 1 &&
               (it->kind == RF_FENCE_REPLICA || ident);
    int ok = o->ready && !o->stale && ((o->version == v && ident) || next);
    if (!ok)
        rc = refit_error_set(REFIT_ESTALE, "%s %s is %s at v%llu%s%s (pulling v%llu)",
                             it->kind == RF_FENCE_SOURCE ? "source" : "replica", it->id, o->status,
                             (unsigned long long)o->version, o->stale ? " without a fresh heartbeat" : "",
                             o->version == v && !ident ? " with another identity" : "", (unsigned long long)v);
    free(o->owned);
    return rc;
}

static struct offer source_offer(struct refit_source_record *rec, bool stale)
{
    return (struct offer){rec->status == REFIT_SOURCE_READY, stale, refit_source_status_name(rec->status),
                          rec->version, rec->keeps, {rec->catalog.b, 16}, rec};
}

static int check_one(refit_receiver_t *r, const struct rf_fence_item *it, uint64_t v, int exact)
{
    int rc = it->lease_key ? lease_held(r, it, v) : 0;
    struct offer o = {0};
    if (!rc)
        rc = it->kind == RF_FENCE_SOURCE ? read_source(r, it, &o) : read_replica(r, it, &o);
    return rc ? rc : judge(it, &o, v, exact);
}

int rf_fence(refit_receiver_t *r, const struct rf_fence_item *it, size_t n, uint64_t v, int exact)
{
    for (size_t i = 0; i < n; i++) {
        int rc = check_one(r, &it[i], v, exact);
        if (rc)
            return rc;
    }
    return 0;
}

/* The ack of v, to go with the fence's read (r->fence_ack == v).  An ack
 * says "this receiver has finished reading v: the trainer may reuse its
 * memory" (ackpost.h), and when the fence runs every read of v has ended,
 * whatever the fence then says; the failure side is receiver.c's
 * fence_commit: a pull that fails after its ack went out never reads v
 * again (r->released).  *np 0: no ack here (the caller writes it after the
 * commit, as before). */
static int fence_ack_item(refit_receiver_t *r, uint64_t v, char *key, struct refit_store_put_item *it, size_t *np)
{
    *np = 0;
    if (r->fence_ack != v || !v)
        return 0;
    void *enc = NULL;
    size_t len = 0;
    int rc = refit_ack_item(v, r->id, key, &enc, &len);
    if (rc)
        return refit_error_push(rc, "acknowledging v%llu", (unsigned long long)v);
    *it = (struct refit_store_put_item){key, enc, len, 0};
    *np = 1;
    return 0;
}

/* Every source the pull read from, in one round trip (one read of their
 * records, and of their heartbeats unless discovery read them less than
 * half of refit.stale_after ago), with this pull's ack when fence_commit
 * asks for it.  A source the plan reads nothing of cannot have changed
 * what landed, so it is not fenced: at 256 trainer ranks a receiver reads
 * from a few. */
int rf_fence_sources(refit_receiver_t *r, uint64_t v)
{
    size_t n = 0;
    struct refit_source_check *c = calloc(r->disc.n_src ? r->disc.n_src : 1, sizeof(*c));
    size_t *si = calloc(r->disc.n_src ? r->disc.n_src : 1, sizeof(*si));
    if (!c || !si) {
        free(c);
        free(si);
        return REFIT_ENOMEM;
    }
    /* The heartbeats read at discovery stand while young (catalog.h):
     * a warm fence reads the records alone. */
    for (size_t i = 0; i < r->disc.n_src; i++)
        if (!r->plan.have || r->plan.plan.bytes_per_source[i]) {
            si[n] = i;
            c[n].seen_hb_ms = r->disc.src[i].rec->heartbeat_ms;
            c[n++].id = r->disc.src[i].id;
        }
    char ack_key[REFIT_STORE_MAX_KEY + 1];
    struct refit_store_put_item ack = {0};
    size_t na = 0;
    int rc = fence_ack_item(r, v, ack_key, &ack, &na);
    if (!rc)
        rc = refit_source_check_many_put(r->ctx->store, c, n, r->ctx->stale_after_ms, NULL, 0, &ack, na);
    if (na) {
        /* Sent: written, or (the read failed as a whole) maybe written. */
        r->fence_acked = 1;
        /* Live, like refit_ack_put's: re-written after a store restart. */
        if (!rc && refit_store_remember(r->ctx->store, ack_key, ack.val, ack.len, 0))
            refit_error_clear(); /* only the re-write after a restart is lost */
        free((void *)ack.val);
    }
    for (size_t i = 0; i < n; i++) {
        const struct rf_source *s = &r->disc.src[si[i]];
        struct rf_fence_item it = {RF_FENCE_SOURCE, s->id, s->rec->keeps, {s->rec->catalog.b, 16}, NULL, NULL};
        if (rc)
            break;
        if (c[i].status) {
            rc = refit_error_set(c[i].status == REFIT_ENOENT ? REFIT_ESTALE : c[i].status,
                                 "source %s: %s", s->id,
                                 c[i].status == REFIT_ENOENT ? "its record is gone" : "its record does not decode");
        } else {
            struct offer o = source_offer(c[i].rec, c[i].stale);
            c[i].rec = NULL;
            rc = judge(&it, &o, v, 0);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(c[i].rec);
    free(c);
    free(si);
    return rc ? refit_error_push(rc, "fence") : 0;
}
