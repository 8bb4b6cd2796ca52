/* xxh3.cu — XXH3-64 (seed 0, the default secret) of device byte ranges,
 * bit for bit what the host's XXH3_64bits (the xxhash library, 0.8) gives:
 * the checksum sums.c computes for every chunk of a version.  With it a
 * version's bytes on a device are checked against its checksum blob (the
 * base a delta applies onto, the result it leaves) without leaving the
 * device.
 *
 * The algorithm (xxhash's specification): inputs up to 240 bytes take the
 * short paths (one thread of a span's group); longer ones accumulate 64-byte
 * stripes into 8 64-bit lanes, 16 stripes to a block, each block followed
 * by a scramble, then the last (overlapping) stripe and a merge of the
 * lanes.  Each lane's work only ever reads its own accumulator (stripe
 * word i is added to lane i ^ 1, which a shuffle hands over), so a span is
 * hashed by a group of 8 threads, one per lane, each reading one 64-bit
 * word per stripe: a warp reads 4 spans' stripes at once.  The spans'
 * pointers need no alignment (unaligned words are read as two aligned
 * ones and shifted). */
#include <cuda_runtime.h>

#include <stdint.h>

#include "delta.h"
#include "refit/status.h"

namespace {

constexpr uint64_t P32_1 = 0x9E3779B1u, P32_2 = 0x85EBCA77u, P32_3 = 0xC2B2AE3Du;
constexpr uint64_t P64_1 = 0x9E3779B185EBCA87ull, P64_2 = 0xC2B2AE3D27D4EB4Full, P64_3 = 0x165667B19E3779F9ull,
                   P64_4 = 0x85EBCA77C2B2AE63ull, P64_5 = 0x27D4EB2F165667C5ull;
constexpr uint64_t MX1 = 0x165667919E3779F9ull, MX2 = 0x9FB21C651E98DF25ull;
constexpr int kThreads = 256;

/* The default secret (192 bytes), as the specification gives it. */
__constant__ uint8_t kSecret[192] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

__device__ __forceinline__ uint64_t sec64(int off)
{
    uint64_t v = 0;
#pragma unroll
    for (int i = 7; i >= 0; i--)
        v = v << 8 | kSecret[off + i];
    return v;
}

__device__ __forceinline__ uint32_t sec32(int off)
{
    return (uint32_t)kSecret[off] | (uint32_t)kSecret[off + 1] << 8 | (uint32_t)kSecret[off + 2] << 16 |
           (uint32_t)kSecret[off + 3] << 24;
}

/* Little-endian 64-bit word at any address: aligned words as they are,
 * others from the two aligned words around them (both hold bytes of the
 * range, so neither lies outside its allocation). */
__device__ __forceinline__ uint64_t ld64(const uint8_t *p)
{
    const uintptr_t a = (uintptr_t)p;
    const unsigned sh = (unsigned)(a & 7) * 8;
    const uint64_t *w = (const uint64_t *)(a & ~(uintptr_t)7);
    if (!sh)
        return __ldg(w);
    return __ldg(w) >> sh | __ldg(w + 1) << (64 - sh);
}

/* The short paths read bytes (a word there may reach past the range). */
__device__ __forceinline__ uint64_t ldb(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

__device__ __forceinline__ uint64_t bswap(uint64_t x)
{
    return (uint64_t)__byte_perm((uint32_t)x, 0, 0x0123) << 32 | __byte_perm((uint32_t)(x >> 32), 0, 0x0123);
}

__device__ __forceinline__ uint64_t fold(uint64_t a, uint64_t b)
{
    return a * b ^ __umul64hi(a, b);
}

__device__ __forceinline__ uint64_t avalanche(uint64_t h)
{
    h ^= h >> 37;
    h *= MX1;
    return h ^ h >> 32;
}

__device__ __forceinline__ uint64_t avalanche64(uint64_t h)
{
    h ^= h >> 33;
    h *= P64_2;
    h ^= h >> 29;
    h *= P64_3;
    return h ^ h >> 32;
}

__device__ __forceinline__ uint64_t rotl(uint64_t x, int r)
{
    return x << r | x >> (64 - r);
}

__device__ __forceinline__ uint64_t mix16(const uint8_t *p, int s)
{
    return fold(ldb(p, 8) ^ sec64(s), ldb(p + 8, 8) ^ sec64(s + 8));
}

/* Inputs of 0..240 bytes (one thread). */
__device__ uint64_t hash_short(const uint8_t *p, uint64_t len)
{
    if (len > 128) {
        uint64_t acc = len * P64_1;
        const int rounds = (int)(len / 16);
        for (int i = 0; i < 8; i++)
            acc += mix16(p + 16 * i, 16 * i);
        acc = avalanche(acc);
        uint64_t end = mix16(p + len - 16, 136 - 17);
        for (int i = 8; i < rounds; i++)
            end += mix16(p + 16 * i, 16 * (i - 8) + 3);
        return avalanche(acc + end);
    }
    if (len > 16) {
        uint64_t acc = len * P64_1;
        if (len > 32) {
            if (len > 64) {
                if (len > 96) {
                    acc += mix16(p + 48, 96);
                    acc += mix16(p + len - 64, 112);
                }
                acc += mix16(p + 32, 64);
                acc += mix16(p + len - 48, 80);
            }
            acc += mix16(p + 16, 32);
            acc += mix16(p + len - 32, 48);
        }
        acc += mix16(p, 0);
        acc += mix16(p + len - 16, 16);
        return avalanche(acc);
    }
    if (len > 8) {
        const uint64_t lo = ldb(p, 8) ^ (sec64(24) ^ sec64(32)), hi = ldb(p + len - 8, 8) ^ (sec64(40) ^ sec64(48));
        return avalanche(len + bswap(lo) + hi + fold(lo, hi));
    }
    if (len >= 4) {
        const uint64_t in = ldb(p + len - 4, 4) + (ldb(p, 4) << 32);
        uint64_t h = in ^ (sec64(8) ^ sec64(16));
        h ^= rotl(h, 49) ^ rotl(h, 24);
        h *= MX2;
        h ^= (h >> 35) + len;
        h *= MX2;
        return h ^ h >> 28;
    }
    if (len) {
        const uint32_t c = (uint32_t)p[0] << 16 | (uint32_t)p[len >> 1] << 24 | (uint32_t)p[len - 1] |
                           (uint32_t)len << 8;
        return avalanche64((uint64_t)c ^ (uint64_t)(sec32(0) ^ sec32(4)));
    }
    return avalanche64(sec64(56) ^ sec64(64));
}

/* Lane j of a long input's stripe at p: its word, the partner's word
 * (lane j ^ 1) added, the keyed product. */
__device__ __forceinline__ uint64_t stripe(uint64_t acc, const uint8_t *p, uint64_t key, int j, unsigned mask)
{
    const uint64_t v = ld64(p + 8 * j);
    const uint64_t other = __shfl_xor_sync(mask, v, 1);
    const uint64_t k = v ^ key;
    return acc + other + (k & 0xffffffffu) * (k >> 32);
}

__global__ void __launch_bounds__(kThreads) xxh3_kernel(const rf_xxh3_span *spans, uint64_t n, uint64_t *out)
{
    const uint64_t g = ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 3;
    const int j = threadIdx.x & 7;
    const unsigned mask = 0xffu << (threadIdx.x & 24);
    if (g >= n)
        return; /* a whole group leaves together (n counts groups) */
    const uint8_t *p = (const uint8_t *)spans[g].p;
    const uint64_t len = spans[g].len;
    if (len <= 240) {
        if (!j)
            out[g] = hash_short(p, len);
        return;
    }
    /* This lane's keys: stripe s uses secret word s + j; then the scramble,
     * the last stripe's and the merge's. */
    uint64_t key[16];
#pragma unroll
    for (int s = 0; s < 16; s++)
        key[s] = sec64(8 * (s + j));
    const uint64_t scr = sec64(128 + 8 * j), last = sec64(121 + 8 * j), merge = sec64(11 + 8 * j);
    const uint64_t init[8] = {P32_3, P64_1, P64_2, P64_3, P64_4, P32_2, P64_5, P32_1};
    uint64_t acc = init[j];
    const uint64_t blocks = (len - 1) / 1024;
    for (uint64_t b = 0; b < blocks; b++) {
        const uint8_t *q = p + b * 1024;
#pragma unroll
        for (int s = 0; s < 16; s++)
            acc = stripe(acc, q + 64 * s, key[s], j, mask);
        acc ^= acc >> 47;
        acc ^= scr;
        acc *= P32_1;
    }
    const int stripes = (int)(((len - 1) - 1024 * blocks) / 64);
    const uint8_t *q = p + blocks * 1024;
#pragma unroll
    for (int s = 0; s < 16; s++)
        if (s < stripes)
            acc = stripe(acc, q + 64 * s, key[s], j, mask);
    acc = stripe(acc, p + len - 64, last, j, mask);
    /* Merge: lanes 2i and 2i+1 folded, the four folds summed. */
    const uint64_t x = acc ^ merge;
    const uint64_t y = __shfl_xor_sync(mask, x, 1);
    uint64_t f = (j & 1) ? 0 : fold(x, y);
    f += __shfl_xor_sync(mask, f, 2);
    f += __shfl_xor_sync(mask, f, 4);
    if (!j)
        out[g] = avalanche(len * P64_1 + f);
}

} // namespace

extern "C" int rf_xxh3_cuda(void *stream, const struct rf_xxh3_span *spans, size_t n, uint64_t *out)
{
    if (!n)
        return 0;
    if (!spans || !out)
        return refit_error_set(REFIT_EINVAL, "xxh3 cuda: NULL spans or out");
    const uint64_t threads = (uint64_t)n * 8;
    const uint64_t grid = (threads + kThreads - 1) / kThreads;
    if (grid > 0x7fffffffu)
        return refit_error_set(REFIT_EINVAL, "xxh3 cuda: %zu spans in one launch", n);
    xxh3_kernel<<<(unsigned)grid, kThreads, 0, (cudaStream_t)stream>>>(spans, (uint64_t)n, out);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return refit_error_set(REFIT_EIO, "xxh3 cuda: launching over %zu spans: %s", n, cudaGetErrorString(e));
    return 0;
}
