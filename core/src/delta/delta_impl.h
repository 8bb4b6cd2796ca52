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
#define RF_DELTA_IDX_ROOM (RF_DELTA_SEG_UNITS + 16) /* rf_delta_flatten's output */

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

/* Population count: the instruction where the file is built for it (the
 * AVX2 and AVX-512 objects: -mpopcnt), else the SWAR sum, which at about
 * ten operations still beats libgcc's call of the baseline build. */
static inline unsigned rf_popcount64(uint64_t x)
{
#if defined(__POPCNT__)
    return (unsigned)__builtin_popcountll(x);
#else
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (unsigned)((x * 0x0101010101010101ull) >> 56);
#endif
}

/* A changed unit's difference needs the escape: b - a outside [-128, 127]. */
static inline int rf_delta_escapes(uint16_t a, uint16_t b)
{
    return (uint16_t)(b - a + 128u) > 255u;
}

/* Word w (64 units) of a bitmap of nu units and nbm = ceil(nu/8) bytes,
 * bits past nu cleared (a payload's bitmap may end anywhere). */
static inline uint64_t rf_delta_word(const uint8_t *bits, size_t nu, size_t nbm, size_t w)
{
    if (8 * w + 8 <= nbm)
        return rf_ld64(bits + 8 * w);
    uint64_t m = 0;
    for (size_t i = 8 * w; i < nbm; i++)
        m |= (uint64_t)bits[i] << (8 * (i - 8 * w));
    return nu % 64 ? m & ((1ull << (nu % 64)) - 1) : m;
}

/* The set bits of m (base + bit) into o; returns how many.  The first N
 * are written without a branch per bit (junk past the count: bit 63 keeps
 * ctz defined on an empty word), the rest by a loop that runs only when a
 * word holds more than N: a loop whose trip count follows the data costs a
 * mispredicted exit per word. */
#define RF_DELTA_BITS_N(N)                                                                   \
    static inline size_t rf_delta_bits##N(uint64_t m, uint16_t base, uint16_t *o)            \
    {                                                                                        \
        const size_t c = rf_popcount64(m);                                                   \
        for (int j = 0; j < N; j++) {                                                        \
            o[j] = (uint16_t)(base + __builtin_ctzll(m | 1ull << 63));                       \
            m &= m - 1;                                                                      \
        }                                                                                    \
        for (size_t j = N; m; j++) {                                                         \
            o[j] = (uint16_t)(base + __builtin_ctzll(m));                                    \
            m &= m - 1;                                                                      \
        }                                                                                    \
        return c;                                                                            \
    }
RF_DELTA_BITS_N(4)
RF_DELTA_BITS_N(8)

/* The indices of the set bits of a bitmap of nu units (ceil(nu/8) bytes;
 * bits past nu ignored), in order, into idx (room for k + 16 entries, k
 * the number of bits); returns k.  Without a branch on the data where it
 * can: first the list of non-zero words (flags gathered, then taken four
 * at a time), then each of those words' bits, four or eight at a time by
 * the density k_hint. */
static inline size_t rf_delta_flatten(const uint8_t *bits, size_t nu, uint16_t *idx, size_t k_hint)
{
    const size_t nw = (nu + 63) / 64, nbm = (nu + 7) / 8;
    uint16_t nz[RF_DELTA_SEG_UNITS / 64 + 16];
    size_t nnz = 0, r = 0;
    for (size_t g = 0; g < nw; g += 64) {
        uint64_t f = 0;
        for (size_t w = g; w < nw && w < g + 64; w++)
            f |= (uint64_t)(rf_delta_word(bits, nu, nbm, w) != 0) << (w - g);
        nnz += rf_delta_bits4(f, (uint16_t)g, nz + nnz);
    }
    const int dense = k_hint > 3 * nnz; /* more than three bits a non-zero word */
    for (size_t i = 0; i < nnz; i++) {
        uint64_t m = rf_delta_word(bits, nu, nbm, nz[i]);
        const uint16_t base = (uint16_t)(64 * nz[i]);
        r += dense ? rf_delta_bits8(m, base, idx + r) : rf_delta_bits4(m, base, idx + r);
    }
    return r;
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
