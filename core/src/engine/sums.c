/* sums.c — per-version checksum segments (see sums.h) and receiver keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "../util.h"
#include "refit/log.h"
#include "refit/status.h"
#include "sums.h"

#define SEG_MAGIC "RFSUMS02"
#define SEG_HEAD 56 /* magic, version, catalog hash, segment, first tensor, count */
#define NO_WORD SIZE_MAX /* a tensor whose segment was not read */

static int grow(struct rf_sums *s, size_t more)
{
    if (s->n_words + more <= s->cap)
        return 0;
    size_t nc = s->cap ? s->cap : 1024;
    while (nc < s->n_words + more)
        nc *= 2;
    uint64_t *nw = realloc(s->words, nc * sizeof(*nw));
    if (!nw)
        return REFIT_ENOMEM;
    s->words = nw;
    s->cap = nc;
    return 0;
}

int rf_sums_init(struct rf_sums *s, size_t hint)
{
    memset(s, 0, sizeof(*s));
    return grow(s, hint * 3 + 16);
}

void rf_sums_fini(struct rf_sums *s)
{
    free(s->words);
    free(s->index);
    memset(s, 0, sizeof(*s));
}

static uint64_t n_chunks_of(uint64_t nbytes, uint64_t row_bytes, uint32_t chunk_rows)
{
    if (!nbytes || !row_bytes || !chunk_rows)
        return 0;
    uint64_t rows = nbytes / row_bytes;
    return (rows + chunk_rows - 1) / chunk_rows;
}

int rf_sums_add(struct rf_sums *s, const void *data, size_t nbytes, uint64_t row_bytes, uint32_t chunk_rows)
{
    uint64_t nc = data ? n_chunks_of(nbytes, row_bytes, chunk_rows) : 0;
    int rc = grow(s, 2 + nc);
    if (rc)
        return rc;
    s->words[s->n_words++] = nc;
    s->words[s->n_words++] = data ? XXH3_64bits(data, nbytes) : 0;
    uint64_t chunk = (uint64_t)chunk_rows * row_bytes;
    for (uint64_t k = 0; k < nc; k++) {
        uint64_t off = k * chunk, len = off + chunk <= nbytes ? chunk : nbytes - off;
        s->words[s->n_words++] = XXH3_64bits((const char *)data + off, len);
    }
    s->n_tensors++;
    return 0;
}

int rf_sums_put(struct rf_sums *s, uint64_t whole, const uint64_t *chunks, uint64_t n_chunks)
{
    int rc = grow(s, 2 + n_chunks);
    if (rc)
        return rc;
    s->words[s->n_words++] = n_chunks;
    s->words[s->n_words++] = whole;
    for (uint64_t k = 0; k < n_chunks; k++)
        s->words[s->n_words++] = chunks[k];
    s->n_tensors++;
    return 0;
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

uint64_t rf_sums_chunk(const struct rf_sums *s, size_t t, uint64_t k, int *have)
{
    if (t >= s->n_tensors || !s->index) {
        *have = 0;
        return 0;
    }
    size_t w = s->index[t];
    if (w == NO_WORD) {
        *have = 0;
        return 0;
    }
    uint64_t nc = s->words[w];
    *have = k < nc;
    return k < nc ? s->words[w + 2 + k] : 0;
}

int rf_key_sums_seg(char *buf, uint64_t version, const char *source_id, size_t k)
{
    int rc = refit_check_id("source id", source_id);
    if (rc)
        return rc;
    snprintf(buf, REFIT_STORE_MAX_KEY + 1, "versions/%llu/sums/%s/%zu", (unsigned long long)version, source_id, k);
    return 0;
}

void rf_sums_segment(const uint64_t *want, size_t n, uint32_t *seg, size_t *n_seg)
{
    uint32_t k = 0;
    uint64_t fill = 0, all = 0;
    for (size_t t = 0; t < n; t++)
        all += 2 + want[t];
    uint64_t budget = (all + RF_SUMS_MAX_SEGS - 1) / RF_SUMS_MAX_SEGS;
    if (budget < RF_SUMS_SEG_WORDS)
        budget = RF_SUMS_SEG_WORDS;
    for (size_t t = 0; t < n; t++) {
        uint64_t w = 2 + want[t];
        if (fill && fill + w > budget) {
            k++;
            fill = 0;
        }
        seg[t] = k;
        fill += w;
    }
    *n_seg = n ? (size_t)k + 1 : 0;
}

static uint64_t cat_want(const struct refit_cat_tensor *ct)
{
    uint64_t row_bytes = (ct->ndim >= 2 ? ct->shape[ct->ndim - 1] : 1) * refit_dtype_size(ct->dtype);
    return n_chunks_of(ct->nbytes, row_bytes, ct->chunk_rows);
}

int rf_sums_cat_segments(const refit_catalog_t *cat, uint64_t **want, uint32_t **seg, size_t *n_seg)
{
    size_t n = cat->n_tensors;
    *want = malloc((n ? n : 1) * sizeof(**want));
    *seg = malloc((n ? n : 1) * sizeof(**seg));
    if (!*want || !*seg) {
        free(*want);
        free(*seg);
        *want = NULL;
        *seg = NULL;
        return REFIT_ENOMEM;
    }
    for (size_t t = 0; t < n; t++)
        (*want)[t] = cat_want(&cat->tensors[t]);
    rf_sums_segment(*want, n, *seg, n_seg);
    return 0;
}

int rf_sums_encode_segs(const struct rf_sums *s, const uint32_t *seg, size_t n_seg, const struct refit_hash128 *cat,
                        uint64_t version, void ***bufs, size_t **lens)
{
    *bufs = calloc(n_seg ? n_seg : 1, sizeof(**bufs));
    *lens = calloc(n_seg ? n_seg : 1, sizeof(**lens));
    if (!*bufs || !*lens)
        return REFIT_ENOMEM;
    size_t w = 0, t = 0;
    for (size_t k = 0; k < n_seg; k++) {
        size_t first = t, w0 = w;
        for (; t < s->n_tensors && seg[t] == k; t++) {
            if (w >= s->n_words)
                return refit_error_set(REFIT_EINVAL, "checksum segments: tensor %zu past the words", t);
            w += 2 + s->words[w];
        }
        if (w > s->n_words)
            return refit_error_set(REFIT_EINVAL, "checksum segments: tensor %zu past the words", t);
        size_t n = SEG_HEAD + (w - w0) * 8 + 8;
        unsigned char *b = malloc(n);
        if (!b)
            return REFIT_ENOMEM;
        memcpy(b, SEG_MAGIC, 8);
        put64(b + 8, version);
        memcpy(b + 16, cat->b, 16);
        put64(b + 32, k);
        put64(b + 40, first);
        put64(b + 48, t - first);
        for (size_t i = w0; i < w; i++)
            put64(b + SEG_HEAD + (i - w0) * 8, s->words[i]);
        put64(b + n - 8, XXH3_64bits(b, n - 8));
        (*bufs)[k] = b;
        (*lens)[k] = n;
    }
    return 0;
}

int rf_sums_prepare(struct rf_sums *s, size_t n_tensors)
{
    memset(s, 0, sizeof(*s));
    s->index = malloc((n_tensors ? n_tensors : 1) * sizeof(size_t));
    if (!s->index)
        return REFIT_ENOMEM;
    for (size_t t = 0; t < n_tensors; t++)
        s->index[t] = NO_WORD;
    s->n_tensors = n_tensors;
    return 0;
}

/* A segment's frame: its size, magic, trailer, version and catalog (the
 * words and the tensors they belong to are the caller's to check). */
static int check_head(const unsigned char *b, size_t len, const char *key, const struct refit_hash128 *cat_hash,
                      uint64_t version)
{
    if (len < SEG_HEAD + 8 || (len - SEG_HEAD - 8) % 8 || memcmp(b, SEG_MAGIC, 8))
        return refit_error_set(REFIT_EPROTO, "%s: not a checksum segment (%zu bytes)", key, len);
    if (get64(b + len - 8) != XXH3_64bits(b, len - 8))
        return refit_error_set(REFIT_ECHECKSUM, "%s: the checksum segment is corrupt", key);
    if (get64(b + 8) != version)
        return refit_error_set(REFIT_ESTALE, "%s: holds version %llu, not %llu", key,
                               (unsigned long long)get64(b + 8), (unsigned long long)version);
    if (memcmp(b + 16, cat_hash->b, 16))
        return refit_error_set(REFIT_ESTALE, "%s: belongs to another catalog", key);
    return 0;
}

int rf_sums_decode_seg(const void *buf, size_t len, const char *key, const refit_catalog_t *cat,
                       const struct refit_hash128 *cat_hash, uint64_t version, const uint32_t *seg, size_t k,
                       struct rf_sums *acc)
{
    const unsigned char *b = buf;
    int rc = check_head(b, len, key, cat_hash, version);
    if (rc)
        return rc;
    uint64_t first = get64(b + 40), nt = get64(b + 48), nt_cat = cat->n_tensors;
    /* Exactly the tensors the catalog puts in segment k. */
    if (get64(b + 32) != k || acc->n_tensors != nt_cat || first > nt_cat || nt > nt_cat - first || !nt ||
        seg[first] != k || (first && seg[first - 1] == k) || seg[first + nt - 1] != k ||
        (first + nt < nt_cat && seg[first + nt] == k))
        return refit_error_set(REFIT_EPROTO, "%s: segment %llu holds tensors %llu..+%llu, not segment %zu of the "
                               "catalog's %llu tensors", key, (unsigned long long)get64(b + 32),
                               (unsigned long long)first, (unsigned long long)nt, k, (unsigned long long)nt_cat);
    size_t nw = (len - SEG_HEAD - 8) / 8;
    if ((rc = grow(acc, nw)))
        return rc;
    size_t base = acc->n_words, w = 0;
    for (size_t i = 0; i < nw; i++)
        acc->words[base + i] = get64(b + SEG_HEAD + i * 8);
    for (uint64_t t = first; t < first + nt; t++) {
        const struct refit_cat_tensor *ct = &cat->tensors[t];
        if (!rf_fits(w, 2, nw))
            return refit_error_set(REFIT_EPROTO, "%s: truncated at tensor '%s'", key, ct->name);
        uint64_t nc = acc->words[base + w], want = cat_want(ct);
        if (nc != 0 && nc != want)
            return refit_error_set(REFIT_EPROTO, "%s: tensor '%s' has %llu chunk checksums, expected %llu", key,
                                   ct->name, (unsigned long long)nc, (unsigned long long)want);
        if (!rf_fits(w + 2, nc, nw))
            return refit_error_set(REFIT_EPROTO, "%s: truncated at tensor '%s'", key, ct->name);
        w += 2 + nc;
    }
    if (w != nw)
        return refit_error_set(REFIT_EPROTO, "%s: %zu trailing words", key, nw - w);
    /* Valid: index its tensors. */
    w = 0;
    for (uint64_t t = first; t < first + nt; t++) {
        acc->index[t] = base + w;
        w += 2 + acc->words[base + w];
    }
    acc->n_words = base + nw;
    acc->id += get64(b + len - 8);
    return 0;
}

uint64_t rf_sums_segs_id(void *const *bufs, const size_t *lens, size_t n)
{
    uint64_t id = 0;
    for (size_t k = 0; k < n; k++)
        if (lens[k] >= 8)
            id += get64((const unsigned char *)bufs[k] + lens[k] - 8);
    return id;
}

int rf_key_receiver(char *buf, const char *receiver_id)
{
    int rc = refit_check_id("receiver id", receiver_id);
    if (rc)
        return rc;
    snprintf(buf, REFIT_STORE_MAX_KEY + 1, "receivers/%s", receiver_id);
    return 0;
}

int rf_report_missing_acks(refit_store_t *s, uint64_t version, size_t want, size_t have, const char *who,
                           int64_t timeout_ms)
{
    char **regs = NULL, **acks = NULL;
    size_t nr = 0, na = 0;
    char prefix[REFIT_STORE_MAX_KEY + 1];
    snprintf(prefix, sizeof(prefix), "versions/%llu/acks/", (unsigned long long)version);
    refit_store_list(s, "receivers/", &regs, &nr);
    refit_store_list(s, prefix, &acks, &na);
    char missing[768] = "";
    size_t ml = 0;
    for (size_t i = 0; i < nr && ml < sizeof(missing); i++) {
        const char *id = regs[i] + strlen("receivers/");
        int acked = 0;
        for (size_t j = 0; j < na && !acked; j++)
            acked = !strcmp(acks[j] + strlen(prefix), id);
        if (!acked)
            ml += (size_t)snprintf(missing + ml, sizeof(missing) - ml, "%s%s", ml ? ", " : "", id);
    }
    free(regs);
    free(acks);
    return refit_error_set(REFIT_ETIMEDOUT,
                           "%s: v%llu released by %zu of %zu receivers within %lld ms; not acknowledged "
                           "by: %s%s",
                           who, (unsigned long long)version, have, want, (long long)timeout_ms,
                           missing[0] ? missing : "(no other receiver is registered)",
                           nr < want ? " (fewer receivers registered than refit.receivers)" : "");
}

/* ------------------------------------------------------------------ */
/* The checksum table over the transport (sums.h) */

int rf_sums_table_slots(const uint64_t *want, const uint32_t *seg, size_t n, size_t n_seg, uint64_t *off)
{
    for (size_t k = 0; k <= n_seg; k++)
        off[k] = 0;
    for (size_t t = 0; t < n; t++) {
        if (seg[t] >= n_seg)
            return refit_error_set(REFIT_EINVAL, "checksum table: tensor %zu in segment %u of %zu", t, seg[t], n_seg);
        off[seg[t] + 1] += (2 + want[t]) * 8;
    }
    /* each slot: the segment's header and trailer around its words */
    for (size_t k = 0; k < n_seg; k++)
        off[k + 1] += off[k] + SEG_HEAD + 8;
    return 0;
}

int rf_sums_seg_len(const void *buf, size_t cap, size_t *len)
{
    const unsigned char *b = buf;
    if (cap < SEG_HEAD + 8 || memcmp(b, SEG_MAGIC, 8))
        return refit_error_set(REFIT_EPROTO, "not a checksum segment (%zu bytes in its slot)", cap);
    uint64_t nt = get64(b + 48);
    size_t w = 0, nw = (cap - SEG_HEAD - 8) / 8;
    /* Walk the words as far as the slot allows; the decoder checks them. */
    for (uint64_t t = 0; t < nt; t++) {
        if (!rf_fits(w, 2, nw))
            return refit_error_set(REFIT_EPROTO, "a checksum segment runs past its slot (%zu bytes)", cap);
        uint64_t nc = get64(b + SEG_HEAD + w * 8);
        if (!rf_fits(w + 2, nc, nw))
            return refit_error_set(REFIT_EPROTO, "a checksum segment runs past its slot (%zu bytes)", cap);
        w += 2 + (size_t)nc;
    }
    *len = SEG_HEAD + 8 + w * 8;
    return 0;
}
