/* delta_apply.c — checking and applying chunk deltas (format in delta.h).
 *
 * A delta comes from outside (a peer's registered memory, written by a
 * publisher that may have died mid-write), so nothing in it is trusted:
 * the records are walked and every segment's payload is checked against
 * what its tag and contents imply (lengths, counts, positions, padding
 * bits) with sizes that cannot wrap, before the first byte of the
 * destination is written.  A delta that passes describes a change of
 * exactly the chunk's bytes; whether it was made from the base the
 * destination holds is the engine's question (chunk checksums). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "delta_impl.h"
#include "refit/status.h"

/* One record of a walked delta. */
struct seg {
    unsigned tag;
    const uint8_t *p; /* payload */
    size_t len;       /* payload bytes */
    size_t n;         /* segment bytes */
    uint32_t k;       /* changed units (SPARSE, BITMAP) */
    uint16_t *idx;    /* their indices (room: RF_DELTA_IDX_ROOM), set by index_seg */
};

static int bad(const struct rf_delta_where *w, size_t s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(const struct rf_delta_where *w, size_t s, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return refit_error_set(REFIT_EPROTO, "delta of tensor '%s' chunk %llu, segment %zu (bytes %zu..): %s",
                           w && w->tensor ? w->tensor : "?", (unsigned long long)(w ? w->chunk : 0), s,
                           s * (size_t)RF_DELTA_SEG, msg);
}

static size_t zeros(const uint8_t *p, size_t n)
{
    size_t z = 0;
    for (size_t i = 0; i < n; i++)
        z += p[i] == 0;
    return z;
}

/* The diff and raw tail shared by SPARSE and BITMAP: k diff bytes at
 * p[at..], then 2 bytes per zero diff, ending exactly at the payload end. */
static int check_tail(const struct seg *g, size_t at, const struct rf_delta_where *w, size_t s)
{
    if (g->len - at < g->k)
        return bad(w, s, "%u changed units but %zu bytes left for their values", g->k, g->len - at);
    size_t e = zeros(g->p + at, g->k);
    if (g->len - at - g->k != 2 * e)
        return bad(w, s, "payload of %zu bytes; %u values with %zu escapes need %zu", g->len, g->k, e,
                   at + g->k + 2 * e);
    return 0;
}

/* The unit indices of a SPARSE or BITMAP payload into g->idx, from block
 * counts and positions or from the bitmap; g->k set.  Only lengths are
 * trusted (the counts fit the payload: checked by the caller or before). */
static void index_seg(struct seg *g)
{
    const size_t nu = g->n / 2;
    if (g->tag == RF_DELTA_BITMAP) {
        size_t k = 0, nbm = (nu + 7) / 8;
        for (size_t i = 0; i < nbm; i++)
            k += rf_popcount64(g->p[i]);
        g->k = (uint32_t)rf_delta_flatten(g->p, nu, g->idx, k);
        return;
    }
    const size_t nblk = (nu + RF_DELTA_BLOCK - 1) / RF_DELTA_BLOCK;
    size_t k = 0, r = 0;
    for (size_t b = 0; b < nblk; b++)
        k += g->p[b];
    g->k = (uint32_t)k;
    const uint8_t *pos = g->p + nblk;
    for (size_t b = 0; b < nblk; b++) {
        const size_t c = g->p[b];
        const uint16_t base = (uint16_t)(b * RF_DELTA_BLOCK);
        uint16_t *o = g->idx + r;
        size_t j = 0;
        if (r + 8 <= k) /* eight without a branch on the count (junk past c) */
            for (; j < 8; j++)
                o[j] = (uint16_t)(base + pos[r + j]);
        for (j = c < j ? c : j; j < c; j++)
            o[j] = (uint16_t)(base + pos[r + j]);
        r += c;
    }
}

/* Which block of a SPARSE payload is wrong, for the message (slow path). */
static int explain_sparse(const struct seg *g, const struct rf_delta_where *w, size_t s)
{
    size_t nu = g->n / 2, nblk = (nu + RF_DELTA_BLOCK - 1) / RF_DELTA_BLOCK;
    const uint8_t *pos = g->p + nblk;
    for (size_t b = 0, r = 0; b < nblk; b++) {
        size_t ub = nu - b * RF_DELTA_BLOCK < RF_DELTA_BLOCK ? nu - b * RF_DELTA_BLOCK : RF_DELTA_BLOCK;
        int prev = -1;
        for (unsigned j = 0; j < g->p[b]; j++, r++) {
            if (pos[r] >= ub || (int)pos[r] <= prev)
                return bad(w, s, "block %zu: position %u after %d (block of %zu units)", b, pos[r], prev, ub);
            prev = pos[r];
        }
    }
    return bad(w, s, "positions out of order");
}

static int check_sparse(struct seg *g, const struct rf_delta_where *w, size_t s)
{
    size_t nu = g->n / 2, nblk = (nu + RF_DELTA_BLOCK - 1) / RF_DELTA_BLOCK;
    if (g->len < nblk)
        return bad(w, s, "sparse payload of %zu bytes is shorter than its %zu block counts", g->len, nblk);
    size_t k = 0;
    for (size_t b = 0; b < nblk; b++) {
        size_t ub = nu - b * RF_DELTA_BLOCK < RF_DELTA_BLOCK ? nu - b * RF_DELTA_BLOCK : RF_DELTA_BLOCK;
        if (g->p[b] > ub)
            return bad(w, s, "block %zu counts %u changes in %zu units", b, g->p[b], ub);
        k += g->p[b];
    }
    g->k = (uint32_t)k;
    if (g->len - nblk < k)
        return bad(w, s, "%zu changed units but %zu bytes left for their positions", k, g->len - nblk);
    /* Positions below 128 and indices strictly increasing (so, within a
     * block, positions are) with the last below nu: every position lies in
     * its block, once.  Accumulated without branches. */
    index_seg(g);
    const uint8_t *pos = g->p + nblk;
    unsigned hi = 0, order = 0;
    for (size_t r = 0; r < k; r++)
        hi |= pos[r];
    for (size_t r = 1; r < k; r++)
        order |= g->idx[r] <= g->idx[r - 1];
    if ((hi & 0x80) || order || (k && g->idx[k - 1] >= nu))
        return explain_sparse(g, w, s);
    return check_tail(g, nblk + k, w, s);
}

static int check_bitmap(struct seg *g, const struct rf_delta_where *w, size_t s)
{
    size_t nu = g->n / 2, nbm = (nu + 7) / 8;
    if (g->len < nbm)
        return bad(w, s, "bitmap payload of %zu bytes is shorter than its %zu-byte bitmap", g->len, nbm);
    if (nu % 8 && g->p[nbm - 1] >> (nu % 8))
        return bad(w, s, "bits set past the segment's %zu units", nu);
    size_t k = 0;
    for (size_t i = 0; i < nbm; i++)
        k += (size_t)rf_popcount64(g->p[i]);
    g->k = (uint32_t)k;
    return check_tail(g, nbm, w, s);
}

static int check_seg(struct seg *g, const struct rf_delta_where *w, size_t s)
{
    switch (g->tag) {
    case RF_DELTA_SAME:
        return g->len ? bad(w, s, "SAME record with a %zu-byte payload", g->len) : 0;
    case RF_DELTA_RAW:
        return g->len != g->n ? bad(w, s, "RAW payload of %zu bytes for a %zu-byte segment", g->len, g->n) : 0;
    case RF_DELTA_SPARSE:
    case RF_DELTA_BITMAP:
        if (g->n % 2)
            return bad(w, s, "tag %u on a segment of odd length %zu", g->tag, g->n);
        return g->tag == RF_DELTA_SPARSE ? check_sparse(g, w, s) : check_bitmap(g, w, s);
    default:
        return bad(w, s, "unknown tag %u", g->tag);
    }
}

/* Walk and check every record of a chunk delta; segs gets them when not
 * NULL (room for ceil(n / RF_DELTA_SEG)); idx is scratch for indices. */
static int walk(const uint8_t *d, size_t len, size_t n, const struct rf_delta_where *w, struct seg *segs,
                uint16_t *idx)
{
    size_t off = 0, s = 0;
    for (size_t s0 = 0; s0 < n; s0 += RF_DELTA_SEG, s++) {
        struct seg g = {.n = n - s0 < RF_DELTA_SEG ? n - s0 : RF_DELTA_SEG, .idx = idx};
        if (len - off < RF_DELTA_HDR)
            return bad(w, s, "delta ends at byte %zu, before this segment's record", off);
        uint32_t h = rf_ld32(d + off);
        off += RF_DELTA_HDR;
        g.tag = h & 15u;
        g.len = h >> 4;
        if (g.len > len - off)
            return bad(w, s, "record of %zu bytes at byte %zu runs past the delta's %zu", g.len, off, len);
        g.p = d + off;
        off += g.len;
        int rc = check_seg(&g, w, s);
        if (rc)
            return rc;
        if (segs)
            segs[s] = g;
    }
    if (off != len)
        return bad(w, s ? s - 1 : 0, "%zu bytes after the last record", len - off);
    return 0;
}

/* The records of a chunk delta that walk() accepted. */
static void find_records(const uint8_t *d, size_t n, struct seg *segs)
{
    size_t off = 0, s = 0;
    for (size_t s0 = 0; s0 < n; s0 += RF_DELTA_SEG, s++) {
        uint32_t h = rf_ld32(d + off);
        segs[s] = (struct seg){.tag = h & 15u, .len = h >> 4, .p = d + off + RF_DELTA_HDR,
                               .n = n - s0 < RF_DELTA_SEG ? n - s0 : RF_DELTA_SEG};
        off += RF_DELTA_HDR + segs[s].len;
    }
}

int rf_delta_check(const void *delta, size_t len, size_t n, const struct rf_delta_where *w)
{
    if (!len)
        return 0;
    if (!delta)
        return refit_error_set(REFIT_EINVAL, "delta: NULL delta of %zu bytes", len);
    if (n > RF_DELTA_MAX_CHUNK)
        return refit_error_set(REFIT_ERANGE, "delta: a chunk of %zu bytes is above the codec's limit", n);
    uint16_t idx[RF_DELTA_IDX_ROOM];
    return walk(delta, len, n, w, NULL, idx);
}

/* --- application ------------------------------------------------------- */

/* New value of a changed unit with diff byte dv (old at dst). */
static inline void put_unit(uint8_t *dst, uint8_t dv, const uint8_t *raw, size_t *er)
{
    if (dv)
        rf_st16(dst, (uint16_t)(rf_ld16(dst) + (uint16_t)(int8_t)dv));
    else /* the escape: rare, so a predictable branch */
        rf_st16(dst, rf_ld16(raw + 2 * (*er)++));
}

/* Units [ulo, uhi) of a checked and indexed segment onto dst (unit ulo at
 * dst). */
static void apply_units(const struct seg *g, size_t ulo, size_t uhi, uint8_t *dst)
{
    const size_t nu = g->n / 2, k = g->k;
    const size_t head = g->tag == RF_DELTA_SPARSE ? (nu + RF_DELTA_BLOCK - 1) / RF_DELTA_BLOCK + k : (nu + 7) / 8;
    const uint8_t *dif = g->p + head, *raw = dif + k;
    const uint16_t *idx = g->idx;
    size_t er = 0;
    if (ulo == 0 && uhi == nu) {
        /* The units' lines are spread over the segment: ask for them a few
         * changes ahead, so that the misses overlap. */
        enum { AHEAD = 16 };
        for (size_t r = 0; r < k; r++) {
            __builtin_prefetch(dst + 2 * (size_t)idx[r + AHEAD < k ? r + AHEAD : k - 1], 1);
            put_unit(dst + 2 * (size_t)idx[r], dif[r], raw, &er);
        }
        return;
    }
    for (size_t r = 0; r < k; r++) {
        const size_t i = idx[r];
        if (i >= ulo && i < uhi)
            put_unit(dst + 2 * (i - ulo), dif[r], raw, &er);
        else
            er += dif[r] == 0; /* an escape outside the slice still takes its raw value */
    }
}

/* Bytes [lo, hi) of a checked segment (even bounds unless RAW or SAME). */
static void apply_seg(struct seg *g, size_t lo, size_t hi, uint8_t *dst, int indexed)
{
    if (g->tag == RF_DELTA_RAW) {
        memcpy(dst, g->p + lo, hi - lo);
    } else if (g->tag == RF_DELTA_SPARSE || g->tag == RF_DELTA_BITMAP) {
        /* check_sparse leaves a SPARSE segment's indices (it checks them);
         * a BITMAP's are made here only, where they are used */
        if (!indexed || g->tag == RF_DELTA_BITMAP)
            index_seg(g);
        apply_units(g, lo / 2, hi / 2, dst);
    }
}

/* Apply bytes [lo, hi) of a chunk delta; `checked`: it passed walk()
 * already (only the records are found again, and indexed). */
static int apply_range(const uint8_t *d, size_t len, size_t n, size_t lo, size_t hi, uint8_t *dst,
                       const struct rf_delta_where *w, int checked)
{
    size_t nseg = (n + RF_DELTA_SEG - 1) / RF_DELTA_SEG;
    uint16_t idx[RF_DELTA_IDX_ROOM];
    struct seg one[1], *segs = nseg > 1 ? malloc(nseg * sizeof(*segs)) : one;
    if (!segs)
        return refit_error_set(REFIT_ENOMEM, "delta: %zu segment records", nseg);
    int rc = checked ? (find_records(d, n, segs), 0) : walk(d, len, n, w, segs, idx);
    for (size_t s = lo / RF_DELTA_SEG; !rc && s < nseg && s * RF_DELTA_SEG < hi; s++) {
        size_t s0 = s * RF_DELTA_SEG, a = lo > s0 ? lo - s0 : 0;
        size_t b = hi - s0 < segs[s].n ? hi - s0 : segs[s].n;
        segs[s].idx = idx;
        /* a single segment's indices are still in idx from the check */
        apply_seg(&segs[s], a, b, dst + (s0 + a - lo), !checked && nseg == 1);
    }
    if (segs != one)
        free(segs);
    return rc;
}

int rf_delta_apply_range(const void *delta, size_t len, size_t n, size_t lo, size_t hi, void *dst,
                         const struct rf_delta_where *w)
{
    if (lo > hi || hi > n)
        return refit_error_set(REFIT_EINVAL, "delta: bytes [%zu, %zu) of a %zu-byte chunk", lo, hi, n);
    if (!len || lo == hi)
        return len ? rf_delta_check(delta, len, n, w) : 0;
    if (lo % 2 || (hi % 2 && hi != n))
        return refit_error_set(REFIT_EINVAL, "delta: bytes [%zu, %zu) split a 2-byte unit", lo, hi);
    if (!delta || !dst)
        return refit_error_set(REFIT_EINVAL, "delta: NULL buffer");
    if (n > RF_DELTA_MAX_CHUNK)
        return refit_error_set(REFIT_ERANGE, "delta: a chunk of %zu bytes is above the codec's limit", n);
    return apply_range(delta, len, n, lo, hi, dst, w, 0);
}

int rf_delta_apply(const void *delta, size_t len, void *dst, size_t n, const struct rf_delta_where *w)
{
    return rf_delta_apply_range(delta, len, n, 0, n, dst, w);
}

int rf_delta_apply_tensor(const void *delta, size_t len, const uint32_t *lens, uint64_t nbytes,
                          uint64_t chunk_bytes, void *dst, const char *tensor)
{
    uint64_t nc = rf_delta_tensor_chunks(nbytes, chunk_bytes);
    if (!chunk_bytes || chunk_bytes > RF_DELTA_MAX_CHUNK)
        return refit_error_set(REFIT_ERANGE, "delta of tensor '%s': chunks of %llu bytes", tensor ? tensor : "?",
                               (unsigned long long)chunk_bytes);
    if (nc && (!lens || !dst || (len && !delta)))
        return refit_error_set(REFIT_EINVAL, "delta of tensor '%s': NULL buffer", tensor ? tensor : "?");
    const uint8_t *d = delta;
    /* Everything checked first, so that a bad chunk leaves dst untouched. */
    size_t off = 0;
    for (uint64_t k = 0; k < nc; k++) {
        struct rf_delta_where w = {tensor, k};
        size_t cn = (size_t)(nbytes - k * chunk_bytes < chunk_bytes ? nbytes - k * chunk_bytes : chunk_bytes);
        if (lens[k] > len - off)
            return refit_error_set(REFIT_EPROTO, "delta of tensor '%s' chunk %llu: %u bytes at %zu run past "
                                   "the delta's %zu", tensor ? tensor : "?", (unsigned long long)k, lens[k],
                                   off, len);
        int rc = rf_delta_check(d + off, lens[k], cn, &w);
        if (rc)
            return rc;
        off += lens[k];
    }
    if (off != len)
        return refit_error_set(REFIT_EPROTO, "delta of tensor '%s': %zu bytes after its %llu chunks",
                               tensor ? tensor : "?", len - off, (unsigned long long)nc);
    off = 0;
    for (uint64_t k = 0; k < nc; k++) {
        struct rf_delta_where w = {tensor, k};
        size_t c0 = (size_t)(k * chunk_bytes), cn = (size_t)(nbytes - c0 < chunk_bytes ? nbytes - c0 : chunk_bytes);
        if (lens[k])
            apply_range(d + off, lens[k], cn, 0, cn, (uint8_t *)dst + c0, &w, 1);
        off += lens[k];
    }
    return 0;
}
