/* delta_ref.h — the delta format of core/src/delta/delta.h written again
 * from its comment, as plainly as possible (one unit at a time, no bitmap
 * words, no kernels), for the tests to compare the codec and the CUDA
 * kernels against: an encoder that must give the same bytes and a decoder
 * that must give the same result on every delta the codec accepts. */
#ifndef REFIT_DELTA_REF_H
#define REFIT_DELTA_REF_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline unsigned ref_u16(const uint8_t *p)
{
    return (unsigned)p[0] | (unsigned)p[1] << 8;
}

/* Record of one segment of n bytes at out; returns its length. */
static inline size_t ref_segment(const uint8_t *a, const uint8_t *b, size_t n, uint8_t *out)
{
    uint8_t *p = out + 4;
    size_t len = 0;
    unsigned tag;
    if (memcmp(a, b, n) == 0) {
        tag = 0;
    } else if (n % 2) {
        tag = 1;
        memcpy(p, b, n);
        len = n;
    } else {
        size_t nu = n / 2, nblk = (nu + 127) / 128, nbm = (nu + 7) / 8, k = 0, e = 0;
        for (size_t i = 0; i < nu; i++) {
            unsigned x = ref_u16(a + 2 * i), y = ref_u16(b + 2 * i);
            int d = (int)(int16_t)(uint16_t)(y - x);
            if (x != y) {
                k++;
                e += d < -128 || d > 127;
            }
        }
        size_t sparse = nblk + 2 * k + 2 * e, bitmap = nbm + k + 2 * e;
        tag = sparse <= bitmap && sparse <= n ? 2 : bitmap <= n ? 3 : 1;
        if (tag == 1) {
            memcpy(p, b, n);
            len = n;
        } else {
            size_t head = tag == 2 ? nblk : nbm, r = 0, er = 0;
            memset(p, 0, head);
            uint8_t *pos = p + nblk, *dif = p + head + (tag == 2 ? k : 0), *raw = dif + k;
            for (size_t i = 0; i < nu; i++) {
                unsigned x = ref_u16(a + 2 * i), y = ref_u16(b + 2 * i);
                if (x == y)
                    continue;
                int d = (int)(int16_t)(uint16_t)(y - x);
                if (tag == 2) {
                    p[i / 128]++;
                    pos[r] = (uint8_t)(i % 128);
                } else {
                    p[i / 8] |= (uint8_t)(1u << (i % 8));
                }
                if (d < -128 || d > 127) {
                    dif[r] = 0;
                    raw[2 * er] = (uint8_t)y;
                    raw[2 * er + 1] = (uint8_t)(y >> 8);
                    er++;
                } else {
                    dif[r] = (uint8_t)d;
                }
                r++;
            }
            len = tag == 2 ? sparse : bitmap;
        }
    }
    uint32_t h = (uint32_t)(len << 4 | tag);
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(h >> (8 * i));
    return 4 + len;
}

/* A chunk delta (out: room for n + 4 per 64 KiB); returns its length. */
static inline size_t ref_encode(const uint8_t *a, const uint8_t *b, size_t n, uint8_t *out)
{
    if (memcmp(a, b, n) == 0)
        return 0;
    size_t off = 0;
    for (size_t s0 = 0; s0 < n; s0 += 65536)
        off += ref_segment(a + s0, b + s0, n - s0 < 65536 ? n - s0 : 65536, out + off);
    return off;
}

/* Applies a delta the codec accepted onto dst (n bytes), trusting it. */
static inline void ref_apply(const uint8_t *d, size_t len, uint8_t *dst, size_t n)
{
    size_t off = 0;
    for (size_t s0 = 0; len && s0 < n; s0 += 65536) {
        size_t sn = n - s0 < 65536 ? n - s0 : 65536, nu = sn / 2;
        uint32_t h = (uint32_t)d[off] | (uint32_t)d[off + 1] << 8 | (uint32_t)d[off + 2] << 16 |
                     (uint32_t)d[off + 3] << 24;
        const uint8_t *p = d + off + 4;
        unsigned tag = h & 15;
        size_t plen = h >> 4;
        uint8_t *s = dst + s0;
        off += 4 + plen;
        if (tag == 1)
            memcpy(s, p, sn);
        if (tag < 2)
            continue;
        size_t nblk = (nu + 127) / 128, nbm = (nu + 7) / 8, k = 0;
        /* the changed units in order */
        size_t *idx = malloc((nu ? nu : 1) * sizeof(size_t));
        if (tag == 2) {
            for (size_t bl = 0, r = 0; bl < nblk; bl++)
                for (unsigned j = 0; j < p[bl]; j++, r++)
                    idx[k++] = bl * 128 + p[nblk + r]; /* pos array follows the counts */
        } else {
            for (size_t i = 0; i < nu; i++)
                if (p[i / 8] >> (i % 8) & 1)
                    idx[k++] = i;
        }
        const uint8_t *dif = p + (tag == 2 ? nblk + k : nbm), *raw = dif + k;
        for (size_t r = 0, er = 0; r < k; r++) {
            uint8_t *u = s + 2 * idx[r];
            unsigned v = dif[r] ? (ref_u16(u) + (unsigned)(int)(int8_t)dif[r]) & 0xffffu
                                : ref_u16(raw + 2 * er++);
            u[0] = (uint8_t)v;
            u[1] = (uint8_t)(v >> 8);
        }
        free(idx);
    }
}

#endif
