/* delta_pub.c — the publisher's side of delta refit (delta_eng.h).
 *
 * The base is a host copy of the host tensors as last published.  At
 * publish(V) every chunk is compared with it: a changed chunk's delta goes
 * into V's arena and the chunk into the base, so the base holds V after
 * one pass over both (no second copy).  CUDA tensors are encoded on their
 * device (delta_dev.c) and only their delta comes to the host, placed here
 * in catalog order; without CUDA (or on a CUDA error) their index entries
 * are RF_DELTA_ABSENT: receivers pull them whole.  The base is
 * valid only after a publish that succeeded; a failed publish leaves it
 * invalid and the next version has no delta. */
#include <stdlib.h>
#include <string.h>

#include "../delta/delta.h"
#include "delta_eng.h"
#include "publisher.h"
#include "refit/log.h"

struct rf_pubdelta {
    uint8_t *base;
    size_t base_len;
    uint64_t *base_off; /* per tensor (host tensors) */
    size_t n_t;
    uint64_t base_version; /* 0: the base holds nothing usable */
    int whole;             /* the last encode pass brought the base to the tensors' bytes */
    uint64_t base_sums;    /* the identity of its checksums (rf_sums_segs_id) */
    struct refit_hash128 base_cat;
    struct {
        uint8_t *buf;
        size_t cap;
        refit_tp_region_t *reg;
        void *rkey;
        size_t rkey_len;
    } ar[2];
    int next;
    uint32_t *index;
    size_t n_index, cap_index;
    uint8_t *tmp; /* one chunk's delta when the arena's room is short */
    size_t tmp_cap;
    struct rf_delta_stats st;
    struct rf_pubdelta_dev *dev; /* CUDA tensors (delta_dev.c) */
    uint64_t last_bytes; /* the last version's delta (UINT64_MAX: none) */
    /* The last delta made (push mode offers it): version, its base and the
     * base's checksums' identity, arena (made_v 0: none). */
    uint64_t made_v, made_base, made_sums;
    int made_arena;
    double last_s;
};

static void arenas_free(refit_publisher_t *pub, struct rf_pubdelta *d)
{
    for (int i = 0; i < 2; i++) {
        if (d->ar[i].reg)
            refit_transport_dereg(pub->tp, d->ar[i].reg);
        free(d->ar[i].rkey);
        free(d->ar[i].buf);
        memset(&d->ar[i], 0, sizeof(d->ar[i]));
    }
}

void rf_pubdelta_destroy(refit_publisher_t *pub)
{
    struct rf_pubdelta *d = pub->delta;
    if (!d)
        return;
    arenas_free(pub, d);
    rf_pubdelta_dev_destroy(d->dev);
    free(d->base);
    free(d->base_off);
    free(d->index);
    free(d->tmp);
    free(d);
    pub->delta = NULL;
}

void rf_pubdelta_invalidate(refit_publisher_t *pub)
{
    if (pub->delta) {
        pub->delta->base_version = 0;
        pub->delta->made_v = 0;
    }
}

/* Base, arenas and index sized for the tensors as they are now. */
static int layout(refit_publisher_t *pub, struct rf_pubdelta *d)
{
    size_t host = 0, chunks = 0, dev = 0;
    if (d->n_t != pub->n) {
        free(d->base_off);
        if (!(d->base_off = calloc(pub->n ? pub->n : 1, sizeof(*d->base_off))))
            return REFIT_ENOMEM;
        d->n_t = pub->n;
        d->base_version = 0;
    }
    for (size_t i = 0; i < pub->n; i++) {
        const struct pub_tensor *t = &pub->t[i];
        chunks += rf_delta_tensor_chunks(t->nbytes, (uint64_t)t->chunk_rows * t->row_bytes);
        if (t->memtype != REFIT_MEM_HOST) {
            dev += t->nbytes; /* encoded on the device: its delta still lands in the arena */
            continue;
        }
        if (d->base_off[i] != host)
            d->base_version = 0;
        d->base_off[i] = host;
        host += (t->nbytes + 63) & ~(size_t)63;
    }
    if (host != d->base_len) {
        free(d->base);
        d->base = NULL;
        d->base_len = 0;
        d->base_version = 0;
        if (host && posix_memalign((void **)&d->base, 64, host))
            return REFIT_ENOMEM;
        d->base_len = host;
    }
    if (chunks > d->cap_index) {
        uint32_t *ni = realloc(d->index, chunks * sizeof(*ni));
        if (!ni)
            return REFIT_ENOMEM;
        d->index = ni;
        d->cap_index = chunks;
    }
    d->n_index = chunks;
    if (!rf_delta_cuda_built())
        dev = 0;
    size_t cap = (size_t)(pub->ctx->delta_max_ratio * (double)(host + dev)) + 65536;
    if (d->ar[0].cap != cap) {
        arenas_free(pub, d);
        for (int i = 0; i < 2; i++) {
            int rc = posix_memalign((void **)&d->ar[i].buf, 4096, cap) ? REFIT_ENOMEM : 0;
            if (!rc) {
                memset(d->ar[i].buf, 0, cap);
                d->ar[i].cap = cap;
                rc = refit_transport_reg(pub->tp, d->ar[i].buf, cap, REFIT_MEM_HOST, &d->ar[i].reg);
            }
            if (!rc)
                rc = refit_transport_pack(pub->tp, d->ar[i].reg, &d->ar[i].rkey, &d->ar[i].rkey_len);
            if (rc)
                return refit_error_push(rc, "publisher %s: delta arena of %zu bytes", pub->id, cap);
        }
    }
    return 0;
}

/* One chunk's delta at *at of the arena (or the tmp buffer when the
 * arena's room is short); *fits 0 once the arena is full. */
static int encode_chunk(struct rf_pubdelta *d, int a, const void *base, const void *next, size_t n, size_t *at,
                        uint32_t *len, int *fits)
{
    size_t bound = (size_t)rf_delta_bound(n), out_len = 0;
    int direct = d->ar[a].cap - *at >= bound;
    if (!direct && bound > d->tmp_cap) {
        uint8_t *nt = realloc(d->tmp, bound);
        if (!nt)
            return REFIT_ENOMEM;
        d->tmp = nt;
        d->tmp_cap = bound;
    }
    void *out = direct ? d->ar[a].buf + *at : d->tmp;
    int rc = rf_delta_encode(base, next, n, out, bound, &out_len, RF_DELTA_IMPL_AUTO, &d->st);
    if (rc)
        return rc;
    if (!direct) {
        if (d->ar[a].cap - *at < out_len)
            *fits = 0;
        else
            memcpy(d->ar[a].buf + *at, d->tmp, out_len);
    }
    *len = (uint32_t)out_len;
    if (*fits)
        *at += out_len;
    return 0;
}

/* Encode every host tensor against the base into arena a (when the base
 * is usable) and bring the base to the tensors' bytes.  *ok: a delta was
 * made whole. */
static int encode_all(refit_publisher_t *pub, struct rf_pubdelta *d, int a, int usable, size_t *data_len, int *ok)
{
    size_t at = 0, k = 0;
    int fits = usable;
    for (size_t i = 0; i < pub->n; i++) {
        const struct pub_tensor *t = &pub->t[i];
        uint64_t cb = (uint64_t)t->chunk_rows * t->row_bytes;
        uint64_t nc = rf_delta_tensor_chunks(t->nbytes, cb);
        const uint8_t *dsrc;
        const uint32_t *dlens;
        if (t->memtype != REFIT_MEM_HOST && rf_pubdelta_dev_tensor(d->dev, i, &dsrc, &dlens)) {
            /* Encoded on the device: its chunk deltas into the arena. */
            for (uint64_t c = 0; c < nc; c++, k++) {
                d->index[k] = fits ? dlens[c] : RF_DELTA_ABSENT;
                if (fits && d->ar[a].cap - at < dlens[c])
                    fits = 0;
                if (fits)
                    memcpy(d->ar[a].buf + at, dsrc, dlens[c]);
                at += fits ? dlens[c] : 0;
                dsrc += dlens[c];
            }
            continue;
        }
        if (t->memtype != REFIT_MEM_HOST || cb > RF_DELTA_MAX_CHUNK) {
            for (uint64_t c = 0; c < nc; c++)
                d->index[k++] = RF_DELTA_ABSENT;
            continue;
        }
        uint8_t *base = d->base + d->base_off[i];
        const uint8_t *next = t->ptr;
        for (uint64_t c = 0; c < nc; c++, k++) {
            size_t o = (size_t)(c * cb), n = (size_t)(t->nbytes - o < cb ? t->nbytes - o : cb);
            uint32_t len = 0;
            if (fits) {
                int rc = encode_chunk(d, a, base + o, next + o, n, &at, &len, &fits);
                if (rc)
                    return rc;
                d->index[k] = len;
                if (len)
                    memcpy(base + o, next + o, n);
            } else {
                memcpy(base + o, next + o, n);
            }
        }
    }
    *data_len = at;
    *ok = fits;
    return 0;
}

static int store_record(refit_publisher_t *pub, struct rf_pubdelta *d, uint64_t v, int a, size_t data_len,
                        uint64_t base_v, uint64_t base_sums)
{
    struct rf_delta_rec rec = {.version = v, .base = base_v, .catalog = pub->cat_hash, .base_sums = base_sums,
                               .rkey = {d->ar[a].rkey, d->ar[a].rkey_len}, .data_len = data_len};
    void *blob = NULL;
    size_t blen = 0;
    char key[REFIT_STORE_MAX_KEY + 1];
    int rc = rf_delta_rec_encode(&rec, d->index, d->n_index, &blob, &blen);
    if (!rc)
        rc = rf_key_delta(key, v, pub->id);
    if (!rc)
        rc = refit_store_put_live(pub->ctx->store, key, blob, blen, 0);
    free(blob);
    /* The previous version's record is no longer live (like its sums). */
    if (!rc && base_v && !rf_key_delta(key, base_v, pub->id))
        refit_store_forget(pub->ctx->store, key);
    return rc;
}

int rf_pubdelta_publish(refit_publisher_t *pub, uint64_t v, uint64_t sums_hash)
{
    if (!pub->ctx->delta)
        return 0;
    if (!pub->delta && !(pub->delta = calloc(1, sizeof(*pub->delta))))
        return REFIT_ENOMEM;
    struct rf_pubdelta *d = pub->delta;
    double t0 = rf_seconds();
    memset(&d->st, 0, sizeof(d->st));
    d->last_bytes = UINT64_MAX;
    d->whole = 0;
    d->made_v = 0;
    int rc = layout(pub, d);
    int usable = !rc && d->base_version && !memcmp(d->base_cat.b, pub->cat_hash.b, 16);
    int a = d->next, ok = 0;
    size_t data_len = 0;
    /* From here the base changes: it holds V only once V is READY. */
    uint64_t base_v = d->base_version, base_sums = d->base_sums;
    d->base_version = 0;
    /* CUDA tensors first, on their device: their deltas wait on the host. */
    if (!rc)
        rc = rf_pubdelta_dev_encode(pub, &d->dev, usable);
    if (!rc)
        rc = encode_all(pub, d, a, usable, &data_len, &ok);
    if (!rc) {
        d->whole = 1;
        d->base_sums = sums_hash;
        d->base_cat = pub->cat_hash;
    }
    if (!rc && ok)
        rc = store_record(pub, d, v, a, data_len, base_v, base_sums);
    d->last_s = rf_seconds() - t0;
    if (rc) {
        refit_log(REFIT_LOG_WARN, "publisher", "%s: v%llu is published without a delta: %s", pub->id,
                  (unsigned long long)v, refit_error_message());
        return 0;
    }
    if (ok) {
        d->last_bytes = data_len;
        d->made_v = v;
        d->made_base = base_v;
        d->made_sums = base_sums;
        d->made_arena = a;
        d->next ^= 1;
    }
    return 0;
}

int rf_pubdelta_offer(const refit_publisher_t *pub, uint64_t v, uint64_t base, uint64_t base_sums,
                      refit_tp_region_t **reg, uint64_t *len)
{
    const struct rf_pubdelta *d = pub->delta;
    if (!d || !d->made_v || d->made_v != v || !d->made_base || d->made_base != base || d->made_sums != base_sums)
        return 0;
    *reg = d->ar[d->made_arena].reg;
    *len = d->last_bytes;
    return 1;
}

void rf_pubdelta_published(refit_publisher_t *pub, uint64_t v)
{
    if (pub->delta && pub->delta->whole)
        pub->delta->base_version = v;
}

void rf_pubdelta_stats(const refit_publisher_t *pub, struct refit_publisher_stats *st)
{
    const struct rf_pubdelta *d = pub->delta;
    if (!d)
        return;
    st->delta_bytes = d->last_bytes;
    st->delta_dense = d->st.in_bytes;
    st->delta_units = d->st.units;
    st->delta_changed = d->st.changed;
    st->delta_s = d->last_s;
}
