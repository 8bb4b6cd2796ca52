/* push_pub_cache.c — the push publisher's caches (push_pub_cache.h): work
 * lists by hash, receivers' connections, and each receiver's remote keys.
 * A work list is someone else's data: it is re-hashed on fetch and every
 * piece is checked against the region it reads before anything is sized
 * from it.  Entries a receiver of the round in flight holds are never
 * evicted (pub_work.busy; the key cache is larger than one push uses). */
#include <stdlib.h>
#include <string.h>

#include "push.h"
#include "push_pub_cache.h"
#include "refit/log.h"

static void pub_work_free(refit_publisher_t *pub, struct pub_work *w)
{
    if (w->out_reg)
        refit_transport_dereg(pub->tp, w->out_reg);
    free(w->out);
    free(w->u_off);
    free(w->s_off);
    free(w->img);
    rf_push_work_free(&w->w);
}

void rf_push_pub_free(refit_publisher_t *pub)
{
    struct rf_push_pub *pp = pub->push;
    if (!pp)
        return;
    for (size_t i = 0; i < pp->n_works; i++) {
        pub_work_free(pub, pp->works[i]);
        free(pp->works[i]);
    }
    free(pp->works);
    for (size_t i = 0; i < pp->n_peers; i++) {
        struct pub_peer *p = pp->peers[i];
        for (int k = 0; k < RKEY_CACHE; k++) {
            refit_transport_release(pub->tp, p->rk[k].k);
            free(p->rk[k].blob);
        }
        refit_transport_disconnect(pub->tp, p->peer);
        free(p->addr);
        free(p->receiver);
        free(p);
    }
    free(pp->peers);
    free(pp);
    pub->push = NULL;
}

/* Every piece reads inside its region, before anything is sized from the
 * work: output and image buffers follow from units whose pieces exist. */
static int pieces_in_regions(refit_publisher_t *pub, const struct push_work *w, const char *key)
{
    const struct push_section *s = w->n_s ? &w->s[0] : NULL;
    for (size_t q = 0; s && q < s->n_pc; q++) {
        struct pub_region *rg;
        int rc = pub->hold->region(pub, 0, s->pc[q].region, &rg);
        if (rc)
            return refit_error_push(rc, "%s", key);
        if (s->pc[q].src_end > rg->len)
            return refit_error_set(REFIT_ERANGE, "%s: piece %zu reads past region %u (%llu > %zu)", key, q,
                                   s->pc[q].region, (unsigned long long)s->pc[q].src_end, rg->len);
    }
    return 0;
}

int rf_pub_work_get(refit_publisher_t *pub, const struct refit_hash128 *h, struct pub_work **out)
{
    struct rf_push_pub *pp = pub->push;
    for (size_t i = 0; i < pp->n_works; i++)
        if (!memcmp(pp->works[i]->hash.b, h->b, 16)) {
            *out = pp->works[i];
            return 0;
        }
    char key[REFIT_STORE_MAX_KEY + 1];
    rf_key_push_work(key, h);
    void *val = NULL;
    size_t len = 0;
    int rc = refit_store_get(pub->ctx->store, key, &val, &len);
    if (rc)
        return refit_error_push(rc, "fetching %s", key);
    struct refit_hash128 got;
    refit_hash128_of(val, len, &got);
    struct pub_work w = {.hash = *h};
    if (memcmp(got.b, h->b, 16))
        rc = refit_error_set(REFIT_EPROTO, "%s: content does not match its hash", key);
    if (!rc)
        rc = rf_push_work_decode(val, len, key, pub->id, &w.w);
    free(val);
    if (!rc)
        rc = pieces_in_regions(pub, &w.w, key);
    if (rc) {
        rf_push_work_free(&w.w);
        return rc;
    }
    /* Output space: every unit's FP8 bytes and scales, then the mailbox. */
    const struct push_section *s = w.w.n_s ? &w.w.s[0] : NULL;
    size_t nu = s ? s->n_u : 0, at = 0, img = 0;
    w.u_off = calloc(nu ? nu : 1, sizeof(uint64_t));
    w.s_off = calloc(nu ? nu : 1, sizeof(uint64_t));
    if (!w.u_off || !w.s_off) {
        pub_work_free(pub, &w);
        return REFIT_ENOMEM;
    }
    for (size_t k = 0; k < nu; k++) {
        const struct push_unit *u = &s->u[k];
        w.u_off[k] = at;
        at += (u->rows * u->cols + 63) & ~(size_t)63;
        w.s_off[k] = at;
        at += (scale_row_bytes(u->cols) + 63) & ~(size_t)63;
        size_t il = u->rows * u->cols * refit_dtype_size((enum refit_dtype)u->src_dtype);
        if (il > img)
            img = il;
    }
    w.mail_at = at;
    at += RF_PUSH_MAIL_HEAD + RF_PUSH_MAIL_UNIT * nu;
    w.out_len = at;
    w.img_len = img;
    w.out = aligned_alloc(64, (at + 63) & ~(size_t)63);
    w.img = img ? malloc(img) : NULL;
    if (!w.out || (img && !w.img)) {
        pub_work_free(pub, &w);
        return REFIT_ENOMEM;
    }
    if (s && (rc = refit_transport_reg(pub->tp, w.out, w.out_len, REFIT_MEM_HOST, &w.out_reg))) {
        pub_work_free(pub, &w);
        return refit_error_push(rc, "publisher %s: registering push output", pub->id);
    }
    /* A few plans at most are alive (one per receiver layout): the oldest
     * that no receiver of this round uses goes. */
    for (size_t i = 0; pp->n_works >= WORKS_MAX && i < pp->n_works; i++)
        if (!pp->works[i]->busy) {
            pub_work_free(pub, pp->works[i]);
            free(pp->works[i]);
            memmove(pp->works + i, pp->works + i + 1, (pp->n_works - i - 1) * sizeof(*pp->works));
            pp->n_works--;
        }
    struct pub_work **nw = realloc(pp->works, (pp->n_works + 1) * sizeof(*nw));
    struct pub_work *heap = nw ? malloc(sizeof(*heap)) : NULL;
    if (nw)
        pp->works = nw;
    if (!heap) {
        pub_work_free(pub, &w);
        return REFIT_ENOMEM;
    }
    *heap = w;
    nw[pp->n_works++] = heap;
    *out = heap;
    return 0;
}

/* The connection and keys of a receiver, dropped: the next push connects
 * and unpacks again. */
void rf_pub_peer_forget(refit_publisher_t *pub, struct pub_peer *p)
{
    for (int k = 0; k < RKEY_CACHE; k++) {
        refit_transport_release(pub->tp, p->rk[k].k);
        free(p->rk[k].blob);
    }
    memset(p->rk, 0, sizeof(p->rk));
    refit_transport_disconnect(pub->tp, p->peer);
    p->peer = NULL;
    free(p->addr);
    p->addr = NULL;
    p->addr_len = 0;
}

int rf_pub_peer_get(refit_publisher_t *pub, const struct push_advert *a, struct pub_peer **out)
{
    struct rf_push_pub *pp = pub->push;
    struct pub_peer *p = NULL;
    for (size_t i = 0; i < pp->n_peers; i++)
        if (!strcmp(pp->peers[i]->receiver, a->receiver))
            p = pp->peers[i];
    if (p && p->addr && (p->addr_len != a->addr_len || memcmp(p->addr, a->addr, a->addr_len)))
        rf_pub_peer_forget(pub, p); /* the receiver restarted: a new address, new keys */
    if (!p) {
        struct pub_peer **np = realloc(pp->peers, (pp->n_peers + 1) * sizeof(*np));
        if (!np)
            return REFIT_ENOMEM;
        pp->peers = np;
        if (!(p = calloc(1, sizeof(*p))) || !(p->receiver = strdup(a->receiver))) {
            free(p);
            return REFIT_ENOMEM;
        }
        np[pp->n_peers++] = p;
    }
    if (!p->peer) {
        if (!(p->addr = malloc(a->addr_len ? a->addr_len : 1)))
            return REFIT_ENOMEM;
        memcpy(p->addr, a->addr, a->addr_len);
        p->addr_len = a->addr_len;
        int rc = refit_transport_connect(pub->tp, a->addr, a->addr_len, a->receiver, &p->peer);
        if (rc) {
            free(p->addr);
            p->addr = NULL;
            return refit_error_push(rc, "connecting to receiver %s", a->receiver);
        }
    }
    *out = p;
    return 0;
}

int rf_pub_rkey_get(refit_publisher_t *pub, struct pub_peer *p, const void *blob, size_t len, refit_tp_rkey_t **out)
{
    int lru = 0;
    for (int k = 0; k < RKEY_CACHE; k++) {
        if (p->rk[k].k && p->rk[k].len == len && !memcmp(p->rk[k].blob, blob, len)) {
            /* Most recently used last: slot 0 is the one to evict. */
            __typeof__(p->rk[0]) hit = p->rk[k];
            int last = k;
            while (last + 1 < RKEY_CACHE && p->rk[last + 1].k)
                last++;
            memmove(&p->rk[k], &p->rk[k + 1], (size_t)(last - k) * sizeof(p->rk[0]));
            p->rk[last] = hit;
            *out = hit.k;
            return 0;
        }
    }
    /* The first free slot (slots fill from 0 and stay packed). */
    while (lru < RKEY_CACHE && p->rk[lru].k)
        lru++;
    if (lru == RKEY_CACHE)
        lru = RKEY_CACHE - 1; /* full: evict below */
    if (p->rk[lru].k) {
        /* Full: drop the oldest (slot 0) and shift. */
        refit_transport_release(pub->tp, p->rk[0].k);
        free(p->rk[0].blob);
        memmove(&p->rk[0], &p->rk[1], (RKEY_CACHE - 1) * sizeof(p->rk[0]));
        memset(&p->rk[RKEY_CACHE - 1], 0, sizeof(p->rk[0]));
        lru = RKEY_CACHE - 1;
    }
    void *copy = malloc(len ? len : 1);
    if (!copy)
        return REFIT_ENOMEM;
    memcpy(copy, blob, len);
    int rc = refit_transport_unpack(pub->tp, p->peer, blob, len, &p->rk[lru].k);
    if (rc) {
        free(copy);
        return rc;
    }
    p->rk[lru].blob = copy;
    p->rk[lru].len = len;
    *out = p->rk[lru].k;
    return 0;
}
