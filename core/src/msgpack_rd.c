/* msgpack_rd.c — the bounded msgpack reader (see msgpack_rd.h). */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "msgpack_rd.h"
#include "refit/catalog.h"
#include "refit/status.h"

void rf_mp_init(struct rf_mp *d, const void *buf, size_t len, const char *key, const char *what)
{
    *d = (struct rf_mp){.p = buf, .end = (const uint8_t *)buf + len, .start = buf, .key = key ? key : what,
                        .field = "(top)", .item = NULL, .index = -1};
}

int rf_mp_fail(struct rf_mp *d, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *key = d->key ? d->key : "(value)";
    if (!d->start) /* checking values being built, not bytes */
        return refit_error_set(REFIT_EPROTO, "field '%s': %s", d->field, msg);
    if (d->index >= 0)
        return refit_error_set(REFIT_EPROTO, "%s: %s %td, field '%s': %s (byte %td)", key,
                               d->item ? d->item : "item", d->index, d->field, msg, d->p - d->start);
    return refit_error_set(REFIT_EPROTO, "%s: field '%s': %s (byte %td)", key, d->field, msg, d->p - d->start);
}

static inline uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* n bytes of big-endian length or number after the type byte. */
static int take(struct rf_mp *d, int n, uint64_t *v)
{
    if (rf_mp_left(d) < (size_t)n)
        return rf_mp_fail(d, "truncated");
    *v = be(d->p, n);
    d->p += n;
    return 0;
}

static const char *type_name(uint8_t t)
{
    if (t <= 0x7f || t >= 0xe0 || (t >= 0xcc && t <= 0xd3))
        return "integer";
    if ((t >= 0xa0 && t <= 0xbf) || (t >= 0xd9 && t <= 0xdb))
        return "string";
    if ((t >= 0x90 && t <= 0x9f) || t == 0xdc || t == 0xdd)
        return "array";
    if ((t >= 0x80 && t <= 0x8f) || t == 0xde || t == 0xdf)
        return "map";
    if (t >= 0xc4 && t <= 0xc6)
        return "binary";
    if (t == 0xc0)
        return "nil";
    if (t == 0xc2 || t == 0xc3)
        return "boolean";
    if (t == 0xca || t == 0xcb)
        return "float";
    return "ext or reserved";
}

int rf_mp_int(struct rf_mp *d, int64_t *out)
{
    if (!rf_mp_left(d))
        return rf_mp_fail(d, "truncated, integer expected");
    uint8_t t = *d->p++;
    uint64_t v = 0;
    int rc;
    if (t <= 0x7f) {
        *out = t;
        return 0;
    }
    if (t >= 0xe0) {
        *out = (int8_t)t;
        return 0;
    }
    switch (t) {
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        if ((rc = take(d, 1 << (t - 0xcc), &v)))
            return rc;
        if (v > INT64_MAX)
            return rf_mp_fail(d, "integer %" PRIu64 " out of range", v);
        *out = (int64_t)v;
        return 0;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int n = 1 << (t - 0xd0);
        if ((rc = take(d, n, &v)))
            return rc;
        int shift = 64 - 8 * n; /* sign-extend n bytes */
        *out = shift ? (int64_t)(v << shift) >> shift : (int64_t)v;
        return 0;
    }
    default:
        d->p--;
        return rf_mp_fail(d, "%s where an integer was expected", type_name(t));
    }
}

int rf_mp_u64(struct rf_mp *d, uint64_t *out)
{
    if (rf_mp_left(d) && *d->p == 0xcf) { /* the full u64 range */
        d->p++;
        return take(d, 8, out);
    }
    int64_t v;
    int rc = rf_mp_int(d, &v);
    if (rc)
        return rc;
    if (v < 0)
        return rf_mp_fail(d, "negative value %" PRId64, v);
    *out = (uint64_t)v;
    return 0;
}

int rf_mp_u32(struct rf_mp *d, uint32_t *out, uint32_t max)
{
    uint64_t v = 0;
    int rc = rf_mp_u64(d, &v);
    if (rc)
        return rc;
    if (v > max)
        return rf_mp_fail(d, "value %" PRIu64 " above the limit %" PRIu32, v, max);
    *out = (uint32_t)v;
    return 0;
}

int rf_mp_f64(struct rf_mp *d, double *out)
{
    if (!rf_mp_left(d))
        return rf_mp_fail(d, "truncated, float expected");
    uint8_t t = *d->p++;
    uint64_t v = 0;
    int rc;
    if (t == 0xcb) {
        if ((rc = take(d, 8, &v)))
            return rc;
        memcpy(out, &v, 8);
    } else if (t == 0xca) {
        if ((rc = take(d, 4, &v)))
            return rc;
        uint32_t w = (uint32_t)v;
        float f;
        memcpy(&f, &w, 4);
        *out = f;
    } else {
        d->p--;
        return rf_mp_fail(d, "%s where a float was expected", type_name(t));
    }
    if (!isfinite(*out))
        return rf_mp_fail(d, "not a finite number");
    return 0;
}

static int container(struct rf_mp *d, int map, uint32_t *n, size_t min_elem)
{
    if (!rf_mp_left(d))
        return rf_mp_fail(d, "truncated, %s expected", map ? "map" : "array");
    uint8_t t = *d->p++;
    uint64_t v = 0;
    int rc;
    uint8_t fix_lo = map ? 0x80 : 0x90, c16 = map ? 0xde : 0xdc, c32 = map ? 0xdf : 0xdd;
    if (t >= fix_lo && t <= fix_lo + 15) {
        v = t & 15u;
    } else if (t == c16) {
        if ((rc = take(d, 2, &v)))
            return rc;
    } else if (t == c32) {
        if ((rc = take(d, 4, &v)))
            return rc;
    } else {
        d->p--;
        return rf_mp_fail(d, "%s where %s was expected", type_name(t), map ? "a map" : "an array");
    }
    /* v < 2^32 and min_elem is small: the product does not wrap. */
    if (v * (min_elem ? min_elem : 1) * (map ? 2u : 1u) > rf_mp_left(d))
        return rf_mp_fail(d, "%s claims %" PRIu64 " elements, more than the %zu bytes left hold",
                          map ? "map" : "array", v, rf_mp_left(d));
    *n = (uint32_t)v;
    return 0;
}

int rf_mp_map(struct rf_mp *d, uint32_t *n, size_t min_elem)
{
    return container(d, 1, n, min_elem);
}

int rf_mp_array(struct rf_mp *d, uint32_t *n, size_t min_elem)
{
    return container(d, 0, n, min_elem);
}

int rf_mp_tuple(struct rf_mp *d, uint32_t want)
{
    uint32_t n;
    int rc = container(d, 0, &n, 1);
    if (!rc && n != want)
        rc = rf_mp_fail(d, "%" PRIu32 " elements, %" PRIu32 " expected", n, want);
    return rc;
}

static int raw(struct rf_mp *d, int bin, const uint8_t **s, uint32_t *len, uint32_t max)
{
    if (!rf_mp_left(d))
        return rf_mp_fail(d, "truncated, %s expected", bin ? "binary" : "string");
    uint8_t t = *d->p++;
    uint64_t v = 0;
    int rc;
    if (!bin && t >= 0xa0 && t <= 0xbf) {
        v = t & 31u;
    } else if (t == (bin ? 0xc4 : 0xd9)) {
        if ((rc = take(d, 1, &v)))
            return rc;
    } else if (t == (bin ? 0xc5 : 0xda)) {
        if ((rc = take(d, 2, &v)))
            return rc;
    } else if (t == (bin ? 0xc6 : 0xdb)) {
        if ((rc = take(d, 4, &v)))
            return rc;
    } else {
        d->p--;
        return rf_mp_fail(d, "%s where %s was expected", type_name(t), bin ? "binary" : "a string");
    }
    const char *kind = bin ? "binary" : "string";
    if (v > max)
        return rf_mp_fail(d, "%s of %" PRIu64 " bytes, more than the %" PRIu32 " allowed", kind, v, max);
    if (v > rf_mp_left(d))
        return rf_mp_fail(d, "%s of %" PRIu64 " bytes but only %zu left", kind, v, rf_mp_left(d));
    *s = d->p;
    *len = (uint32_t)v;
    d->p += v;
    return 0;
}

int rf_mp_bin(struct rf_mp *d, const uint8_t **s, uint32_t *len, uint32_t max)
{
    return raw(d, 1, s, len, max);
}

int rf_mp_str(struct rf_mp *d, const uint8_t **s, uint32_t *len, uint32_t max)
{
    int rc = raw(d, 0, s, len, max);
    if (!rc && memchr(*s, 0, *len))
        return rf_mp_fail(d, "string contains a NUL byte");
    return rc;
}

int rf_mp_id(struct rf_mp *d, const uint8_t **s, uint32_t *len, const char *what)
{
    int rc = rf_mp_str(d, s, len, REFIT_RECORD_MAX_ID);
    if (rc)
        return rc;
    char tmp[REFIT_RECORD_MAX_ID + 1];
    memcpy(tmp, *s, *len);
    tmp[*len] = '\0';
    /* rf_mp_fail formats into its own buffer before it sets the error:
     * the checker's message may be an argument. */
    if (refit_check_id(what, tmp))
        return rf_mp_fail(d, "%s", refit_error_message());
    return 0;
}

static int skip(struct rf_mp *d, int depth)
{
    if (depth > RF_MP_DEPTH_MAX)
        return rf_mp_fail(d, "nested deeper than %d", RF_MP_DEPTH_MAX);
    if (!rf_mp_left(d))
        return rf_mp_fail(d, "truncated");
    uint8_t t = *d->p;
    uint64_t v = 0;
    int rc;
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        d->p++;
        return 0;
    }
    if (t >= 0xcc && t <= 0xd3) {
        int64_t x;
        return t == 0xcf ? (d->p++, take(d, 8, &v)) : rf_mp_int(d, &x);
    }
    if ((t >= 0xa0 && t <= 0xbf) || (t >= 0xd9 && t <= 0xdb) || (t >= 0xc4 && t <= 0xc6)) {
        const uint8_t *s;
        uint32_t l;
        return raw(d, t >= 0xc4 && t <= 0xc6, &s, &l, UINT32_MAX);
    }
    if ((t >= 0x80 && t <= 0x9f) || (t >= 0xdc && t <= 0xdf)) {
        int map = (t >= 0x80 && t <= 0x8f) || t == 0xde || t == 0xdf;
        uint32_t n;
        if ((rc = container(d, map, &n, 1)))
            return rc;
        for (uint64_t i = 0; i < (uint64_t)n * (map ? 2u : 1u); i++)
            if ((rc = skip(d, depth + 1)))
                return rc;
        return 0;
    }
    d->p++;
    switch (t) {
    case 0xca: return take(d, 4, &v);
    case 0xcb: return take(d, 8, &v);
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: {
        size_t n = 1 + ((size_t)1 << (t - 0xd4));
        if (rf_mp_left(d) < n)
            return rf_mp_fail(d, "truncated ext");
        d->p += n;
        return 0;
    }
    case 0xc7: case 0xc8: case 0xc9:
        if ((rc = take(d, 1 << (t - 0xc7), &v)))
            return rc;
        if (rf_mp_left(d) < 1 || v > rf_mp_left(d) - 1)
            return rf_mp_fail(d, "truncated ext");
        d->p += 1 + v;
        return 0;
    default:
        d->p--;
        return rf_mp_fail(d, "reserved type byte 0x%02x", t);
    }
}

int rf_mp_skip(struct rf_mp *d)
{
    return skip(d, 0);
}

int rf_mp_end(struct rf_mp *d, const char *what)
{
    if (d->p == d->end)
        return 0;
    d->field = "(end)";
    return rf_mp_fail(d, "%zu bytes after the %s", rf_mp_left(d), what);
}

int rf_mp_key_is(const uint8_t *k, uint32_t kl, const char *want)
{
    size_t wl = strlen(want);
    return kl == wl && !memcmp(k, want, wl);
}

int rf_mp_field(struct rf_mp *d, const char *const *names, unsigned n, uint32_t *seen, int *which)
{
    const uint8_t *k;
    uint32_t kl;
    d->field = "(key)";
    int rc = rf_mp_str(d, &k, &kl, RF_MP_KEY_MAX);
    if (rc)
        return rc;
    for (unsigned i = 0; i < n && i < 32; i++)
        if (rf_mp_key_is(k, kl, names[i])) {
            d->field = names[i];
            if (*seen & (1u << i))
                return rf_mp_fail(d, "appears twice");
            *seen |= 1u << i;
            *which = (int)i;
            return 0;
        }
    *which = -1;
    d->field = "(unknown)";
    return rf_mp_skip(d);
}

int rf_mp_required(struct rf_mp *d, const char *const *names, unsigned n, uint32_t seen, uint32_t required)
{
    for (unsigned i = 0; i < n && i < 32; i++)
        if ((required & (1u << i)) && !(seen & (1u << i))) {
            d->field = names[i];
            return rf_mp_fail(d, "missing");
        }
    return 0;
}
