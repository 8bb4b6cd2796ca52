/* pattern.h — the byte pattern the transport tests and the peer helper
 * agree on: byte i of pattern `seed` is byte (i % 8) of a 64-bit hash of
 * (i / 8, seed), so any offset can be generated and checked without the
 * other side's buffer, and a shifted or misplaced copy never matches. */
#ifndef TP_PATTERN_H
#define TP_PATTERN_H

#include <stdint.h>
#include <string.h>

static inline uint64_t pat_word(uint64_t k, uint32_t seed)
{
    uint64_t x = (k + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed << 32 | seed);
    x ^= x >> 29;
    return x * 0xBF58476D1CE4E5B9ull;
}

static inline uint8_t pat_byte(uint64_t i, uint32_t seed)
{
    return (uint8_t)(pat_word(i / 8, seed) >> (8 * (i % 8)));
}

/* Fill buf[0, len) with pattern bytes [from, from + len). */
static inline void pat_fill(void *buf, uint64_t len, uint32_t seed, uint64_t from)
{
    uint8_t *b = buf;
    uint64_t i = 0;
    for (; i < len && (from + i) % 8; i++)
        b[i] = pat_byte(from + i, seed);
    for (; i + 8 <= len; i += 8) {
        uint64_t w = pat_word((from + i) / 8, seed);
        memcpy(b + i, &w, 8); /* little-endian hosts only, like the tests */
    }
    for (; i < len; i++)
        b[i] = pat_byte(from + i, seed);
}

/* First mismatch of buf against pattern bytes [from, from + len), or -1. */
static inline int64_t pat_check(const void *buf, uint64_t len, uint32_t seed, uint64_t from)
{
    uint8_t tmp[65536];
    const uint8_t *b = buf;
    for (uint64_t o = 0; o < len; o += sizeof(tmp)) {
        uint64_t n = len - o < sizeof(tmp) ? len - o : sizeof(tmp);
        pat_fill(tmp, n, seed, from + o);
        if (memcmp(tmp, b + o, n))
            for (uint64_t j = 0; j < n; j++)
                if (tmp[j] != b[o + j])
                    return (int64_t)(o + j);
    }
    return -1;
}

#endif
