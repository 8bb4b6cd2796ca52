/* delta.c — the delta encoder (format in delta.h): the kernel choice
 * (portable, AVX2, AVX-512 scans, picked at run time like fp8.c's), the
 * per-segment choice of encoding and the record written from the scan's
 * bitmap, chunks and whole tensors.  Application is delta_apply.c. */
#include "delta_impl.h"
#include "refit/status.h"

/* --- implementation choice -------------------------------------------- */

int rf_delta_impl_available(enum rf_delta_impl impl)
{
    switch (impl) {
    case RF_DELTA_IMPL_AUTO:
    case RF_DELTA_IMPL_SCALAR:
        return 1;
#if defined(RF_HAVE_DELTA_AVX2)
    case RF_DELTA_IMPL_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("bmi");
#endif
#if defined(RF_HAVE_DELTA_AVX512)
    case RF_DELTA_IMPL_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("bmi");
#endif
    default:
        return 0;
    }
}

const char *rf_delta_impl_name(enum rf_delta_impl impl)
{
    switch (impl) {
    case RF_DELTA_IMPL_AUTO: return "auto";
    case RF_DELTA_IMPL_SCALAR: return "scalar";
    case RF_DELTA_IMPL_AVX2: return "avx2";
    case RF_DELTA_IMPL_AVX512: return "avx512";
    default: return "unknown";
    }
}

enum rf_delta_impl rf_delta_impl_best(void)
{
    if (rf_delta_impl_available(RF_DELTA_IMPL_AVX512))
        return RF_DELTA_IMPL_AVX512;
    if (rf_delta_impl_available(RF_DELTA_IMPL_AVX2))
        return RF_DELTA_IMPL_AVX2;
    return RF_DELTA_IMPL_SCALAR;
}

static const struct rf_delta_kernels *kernels_for(enum rf_delta_impl impl)
{
    if (impl == RF_DELTA_IMPL_AUTO)
        impl = rf_delta_impl_best();
    if (!rf_delta_impl_available(impl))
        return NULL;
    switch (impl) {
#if defined(RF_HAVE_DELTA_AVX2)
    case RF_DELTA_IMPL_AVX2: return &rf_delta_avx2_kernels;
#endif
#if defined(RF_HAVE_DELTA_AVX512)
    case RF_DELTA_IMPL_AVX512: return &rf_delta_avx512_kernels;
#endif
    default: return &rf_delta_scalar_kernels;
    }
}

/* --- one segment ------------------------------------------------------- */

/* The diff bytes (and pos bytes when pos is not NULL) of the k changed
 * units idx[0..k), in unit order; escaped values to raw. */
static void emit_units(const uint8_t *a, const uint8_t *b, const uint16_t *idx, size_t k, uint8_t *pos,
                       uint8_t *dif, uint8_t *raw)
{
    size_t er = 0;
    for (size_t r = 0; r < k; r++) {
        const size_t i = idx[r];
        const uint16_t x = rf_ld16(a + 2 * i), y = rf_ld16(b + 2 * i);
        if (pos)
            pos[r] = (uint8_t)(i % RF_DELTA_BLOCK);
        if (rf_delta_escapes(x, y)) { /* rare: a predictable branch */
            dif[r] = 0;
            rf_st16(raw + 2 * er++, y);
        } else {
            dif[r] = (uint8_t)(y - x);
        }
    }
}

/* An odd-length segment: SAME or RAW (units would split its last byte). */
static unsigned odd_segment(const uint8_t *a, const uint8_t *b, size_t n, uint8_t *out, size_t *plen,
                            struct rf_delta_stats *st)
{
    uint64_t changed = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        changed += rf_ld16(a + i) != rf_ld16(b + i);
    changed += a[n - 1] != b[n - 1];
    if (st) {
        st->units += (n + 1) / 2;
        st->changed += changed;
    }
    if (!changed) {
        *plen = 0;
        return RF_DELTA_SAME;
    }
    memcpy(out, b, n);
    *plen = n;
    return RF_DELTA_RAW;
}

/* Segment [a, a+n) -> record at out (RF_DELTA_HDR + n bytes of room);
 * returns the tag, *rlen the record's length. */
static unsigned encode_segment(const struct rf_delta_kernels *kt, const uint8_t *a, const uint8_t *b,
                               size_t n, uint8_t *out, size_t *rlen, struct rf_delta_stats *st)
{
    _Alignas(64) uint8_t bits[RF_DELTA_SEG_BITS];
    uint8_t cnt[RF_DELTA_SEG_BLOCKS];
    uint16_t idx[RF_DELTA_IDX_ROOM];
    uint8_t *p = out + RF_DELTA_HDR;
    size_t plen = 0;
    unsigned tag;
    if (n % 2) {
        tag = odd_segment(a, b, n, p, &plen, st);
    } else {
        size_t nu = n / 2, nblk = (nu + RF_DELTA_BLOCK - 1) / RF_DELTA_BLOCK, nbm = (nu + 7) / 8;
        uint32_t k, e;
        kt->scan(a, b, nu, bits, cnt, &k, &e);
        size_t sparse = nblk + 2 * (size_t)k + 2 * (size_t)e, bitmap = nbm + (size_t)k + 2 * (size_t)e;
        if (st) {
            st->units += nu;
            st->changed += k;
            st->escapes += e;
        }
        if (!k) {
            tag = RF_DELTA_SAME;
        } else if (sparse <= bitmap && sparse <= n) {
            tag = RF_DELTA_SPARSE;
            memcpy(p, cnt, nblk);
            rf_delta_flatten(bits, nu, idx, k);
            emit_units(a, b, idx, k, p + nblk, p + nblk + k, p + nblk + 2 * (size_t)k);
            plen = sparse;
        } else if (bitmap <= n) {
            tag = RF_DELTA_BITMAP;
            memcpy(p, bits, nbm);
            rf_delta_flatten(bits, nu, idx, k);
            emit_units(a, b, idx, k, NULL, p + nbm, p + nbm + k);
            plen = bitmap;
        } else {
            tag = RF_DELTA_RAW;
            memcpy(p, b, n);
            plen = n;
        }
    }
    rf_st32(out, (uint32_t)(plen << 4 | tag));
    *rlen = RF_DELTA_HDR + plen;
    if (st)
        st->segs[tag]++;
    return tag;
}

/* --- chunks and tensors ------------------------------------------------ */

uint64_t rf_delta_bound(uint64_t n)
{
    return n ? n + (n + RF_DELTA_SEG - 1) / RF_DELTA_SEG * RF_DELTA_HDR : 0;
}

int rf_delta_encode(const void *base, const void *next, size_t n, void *out, size_t cap, size_t *len,
                    enum rf_delta_impl impl, struct rf_delta_stats *st)
{
    const struct rf_delta_kernels *kt = kernels_for(impl);
    if (!kt)
        return refit_error_set(REFIT_ENOTSUP, "delta: the %s path is not available on this CPU",
                               rf_delta_impl_name(impl));
    if (n > RF_DELTA_MAX_CHUNK)
        return refit_error_set(REFIT_ERANGE, "delta: a chunk of %zu bytes is above the codec's %llu",
                               n, (unsigned long long)RF_DELTA_MAX_CHUNK);
    if (cap < rf_delta_bound(n))
        return refit_error_set(REFIT_EINVAL, "delta: %zu bytes of room for a %zu-byte chunk (needs %llu)",
                               cap, n, (unsigned long long)rf_delta_bound(n));
    if (n && (!base || !next || !out || !len))
        return refit_error_set(REFIT_EINVAL, "delta: NULL buffer");
    const uint8_t *a = base, *b = next;
    uint8_t *o = out;
    size_t off = 0;
    int changed = 0;
    for (size_t s0 = 0; s0 < n; s0 += RF_DELTA_SEG) {
        size_t sn = n - s0 < RF_DELTA_SEG ? n - s0 : RF_DELTA_SEG, rl;
        changed |= encode_segment(kt, a + s0, b + s0, sn, o + off, &rl, st) != RF_DELTA_SAME;
        off += rl;
    }
    /* An unchanged chunk is empty: a receiver reads nothing for it. */
    *len = changed ? off : 0;
    if (st) {
        st->in_bytes += n;
        st->out_bytes += *len;
    }
    return 0;
}

uint64_t rf_delta_tensor_chunks(uint64_t nbytes, uint64_t chunk_bytes)
{
    return chunk_bytes ? nbytes / chunk_bytes + (nbytes % chunk_bytes != 0) : 0;
}

uint64_t rf_delta_tensor_bound(uint64_t nbytes, uint64_t chunk_bytes)
{
    if (!chunk_bytes || chunk_bytes > RF_DELTA_MAX_CHUNK)
        return UINT64_MAX;
    uint64_t full = nbytes / chunk_bytes, last = nbytes % chunk_bytes;
    uint64_t segs = full * ((chunk_bytes + RF_DELTA_SEG - 1) / RF_DELTA_SEG);
    segs += (last + RF_DELTA_SEG - 1) / RF_DELTA_SEG;
    if (segs > (UINT64_MAX - nbytes) / RF_DELTA_HDR)
        return UINT64_MAX;
    return nbytes + segs * RF_DELTA_HDR;
}

int rf_delta_encode_tensor(const void *base, const void *next, uint64_t nbytes, uint64_t chunk_bytes,
                           void *out, size_t cap, uint32_t *lens, size_t *len, enum rf_delta_impl impl,
                           struct rf_delta_stats *st)
{
    uint64_t bound = rf_delta_tensor_bound(nbytes, chunk_bytes);
    if (bound == UINT64_MAX)
        return refit_error_set(REFIT_ERANGE, "delta: %llu bytes in chunks of %llu cannot be encoded",
                               (unsigned long long)nbytes, (unsigned long long)chunk_bytes);
    if (cap < bound)
        return refit_error_set(REFIT_EINVAL, "delta: %zu bytes of room for a %llu-byte tensor (needs %llu)",
                               cap, (unsigned long long)nbytes, (unsigned long long)bound);
    const uint8_t *a = base, *b = next;
    uint8_t *o = out;
    size_t off = 0;
    for (uint64_t k = 0, c0 = 0; c0 < nbytes; k++, c0 += chunk_bytes) {
        size_t cn = (size_t)(nbytes - c0 < chunk_bytes ? nbytes - c0 : chunk_bytes), cl;
        int rc = rf_delta_encode(a + c0, b + c0, cn, o + off, cap - off, &cl, impl, st);
        if (rc)
            return refit_error_push(rc, "chunk %llu", (unsigned long long)k);
        lens[k] = (uint32_t)cl;
        off += cl;
    }
    *len = off;
    return 0;
}
