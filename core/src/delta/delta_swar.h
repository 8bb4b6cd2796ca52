/* delta_swar.h — the change of the two 16-bit units of a 32-bit word (x
 * base, y next), worked out without a branch and without a carry between
 * the two lanes: what the CUDA encoder (core/src/cuda/delta.cu) computes
 * per word of its 16-byte loads.  Here, in plain integer C, so that the
 * host tests check it against delta.h's unit-at-a-time rule
 * (tests/delta/test_delta.c: every edge value in each lane, and random
 * words). */
#ifndef RF_DELTA_SWAR_H
#define RF_DELTA_SWAR_H

#include <stdint.h>

#ifdef __CUDACC__
#define RF_SWAR_FN static inline __host__ __device__
#else
#define RF_SWAR_FN static inline
#endif

/* Per 16-bit lane of v: bit 15 of the lane set iff the lane is not 0. */
RF_SWAR_FN uint32_t rf_swar_nz16(uint32_t v)
{
    return (((v & 0x7fff7fffu) + 0x7fff7fffu) | v) & 0x80008000u;
}

/* The two units of x (base) and y (next), lane 0 the low half: *m and
 * *em get 2-bit masks (bit i: unit i changed; changed and its difference
 * y - x mod 2^16 is not an int8, an escape), *db the two difference bytes
 * (unit i's in bits 8i..8i+7; 0 where unchanged or escaped). */
RF_SWAR_FN void rf_swar_diff2(uint32_t x, uint32_t y, uint32_t *m, uint32_t *em, uint32_t *db)
{
    const uint32_t H = 0x80008000u;
    const uint32_t d = ((y | H) - (x & ~H)) ^ ((y ^ ~x) & H); /* y - x per lane */
    const uint32_t t = ((d & ~H) + 0x00800080u) ^ (d & H);   /* d + 128 per lane */
    const uint32_t fm = rf_swar_nz16(d), fe = rf_swar_nz16(t & 0xff00ff00u);
    *m = (fm >> 15 & 1u) | fm >> 30;
    *em = (fe >> 15 & 1u) | fe >> 30;
    const uint32_t keep = d & ~((fe >> 15) * 0xffu) & 0x00ff00ffu;
    *db = (keep | keep >> 8) & 0xffffu;
}

#endif
