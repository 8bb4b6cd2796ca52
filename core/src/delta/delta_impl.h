/* delta_impl.h — what the portable, AVX2 and AVX-512 delta kernels share
 * (not installed).  A kernel does the one pass that reads the dense bytes:
 * it compares a segment's base and next units and writes the change bitmap
 * (which BITMAP records carry as is), the per-block counts (which SPARSE
 * records carry as is) and the totals that decide the encoding.  Emitting
 * the record from the bitmap (delta.c) touches only changed units. */
#ifndef RF_DELTA_IMPL_H
#define RF_DELTA_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "delta.h"

#define RF_DELTA_SEG_UNITS (RF_DELTA_SEG / 2)
#define RF_DELTA_SEG_BLOCKS (RF_DELTA_SEG_UNITS / RF_DELTA_BLOCK)
#define RF_DELTA_SEG_BITS (RF_DELTA_SEG_UNITS / 8)

struct rf_delta_kernels {
    /* Units [0, nu) of a and b (nu <= RF_DELTA_SEG_UNITS; any alignment):
     * bits[i/8] bit i%8 = a[i] != b[i] for i < nu, zero up to the next
     * multiple of 64 units; cnt[blk] = changed units of each 128-unit block
     * (ceil(nu/128) entries); *k = changed units; *e = those whose
     * difference b - a (mod 2^16, as int16) is outside [-128, 127]. */
    void (*scan)(const void *a, const void *b, size_t nu, uint8_t *bits, uint8_t *cnt, uint32_t *k,
                 uint32_t *e);
};

extern const struct rf_delta_kernels rf_delta_scalar_kernels;
extern const struct rf_delta_kernels rf_delta_avx2_kernels;
extern const struct rf_delta_kernels rf_delta_avx512_kernels;

static inline uint16_t rf_ld16(const void *p)
{
    const uint8_t *b = (const uint8_t *)p;
    return (uint16_t)(b[0] | b[1] << 8);
}

static inline void rf_st16(void *p, uint16_t v)
{
    uint8_t *b = (uint8_t *)p;
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
}

static inline uint32_t rf_ld32(const void *p)
{
    const uint8_t *b = (const uint8_t *)p;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static inline void rf_st32(void *p, uint32_t v)
{
    uint8_t *b = (uint8_t *)p;
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t rf_ld64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8); /* the bitmap words: byte order matches on little-endian hosts */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* A changed unit's difference needs the escape: b - a outside [-128, 127]. */
static inline int rf_delta_escapes(uint16_t a, uint16_t b)
{
    return (uint16_t)(b - a + 128u) > 255u;
}

/* The scalar scan of units [i0, nu) onto bits already zero there, for the
 * vector kernels' tails; returns (k, e) added. */
static inline void rf_delta_scan_tail(const uint8_t *a, const uint8_t *b, size_t i0, size_t nu,
                                      uint8_t *bits, uint8_t *cnt, uint32_t *k, uint32_t *e)
{
    for (size_t i = i0; i < nu; i++) {
        uint16_t x = rf_ld16(a + 2 * i), y = rf_ld16(b + 2 * i);
        if (x != y) {
            bits[i / 8] |= (uint8_t)(1u << (i % 8));
            cnt[i / RF_DELTA_BLOCK]++;
            ++*k;
            *e += (uint32_t)rf_delta_escapes(x, y);
        }
    }
}

#endif
