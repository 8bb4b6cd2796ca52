/* delta.cu — the delta codec (core/src/delta/delta.h) on a CUDA device:
 * the same bytes as the host encoder, and an applier that accepts exactly
 * what the host's accepts.
 *
 * A batch of tensors is cut into segments (64 KiB of a checksum chunk; the
 * host describes them once in a table, kept while the batch is the same),
 * and the encoder and the applier each run a few launches, none waiting
 * for the host:
 *
 *   encode   one CTA of 256 threads per segment reads base and next once
 *            (segments of whole 16 KiB batches from 16-byte-aligned
 *            versions: each thread's eight 16-byte streaming loads of four
 *            steps in flight before the first is used, the change worked
 *            out two units per 32-bit word; any other segment a step at a
 *            time): the change bitmap, the escape bitmap and each unit's
 *            difference byte go to shared memory, the per-block counts are
 *            scanned, the encoding is chosen by the sizes delta.h defines,
 *            and a SPARSE or BITMAP record is written from shared memory
 *            into a slot of the pool (only escaped values read global
 *            memory again); one the pool has no room left for puts the
 *            segment on the spill list;
 *   offsets  a CTA per 256 segments, one pass (decoupled look-back):
 *            each record's size (none for the segments of a chunk all of
 *            whose segments are SAME: its delta is empty), their
 *            exclusive sum (offsets in the packed stream) and the total;
 *   pack     a warp per segment: its record from its slot to its offset
 *            (16-byte stores), RAW records from next; every chunk's
 *            length;
 *   spill    a few CTAs loop over the spill list: each segment encoded
 *            again, straight to its offset: denser segments read twice,
 *            in exchange for a pool of 3/16 of the batch.  The output
 *            is never larger than rf_delta_tensor_bound (input + 4 bytes
 *            per segment: RAW is chosen over anything larger).
 *
 *   apply:   scan of the chunk lengths (chunk offsets), check (every
 *            record walked and checked as delta_apply.c does; the first bad
 *            segment is kept by atomicMin), write (nothing at all when any
 *            segment failed the check).
 *
 * Everything is integer work on bytes: the host's choice rule and record
 * layout are computed from the same counts, so equality of bytes follows
 * from equality of the counts, which tests/delta/test_delta_cuda.c checks
 * against the host codec on random data. */
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "delta.h"
#include "delta_swar.h"
#include "refit/status.h"

namespace {

constexpr int kThreads = 256;
constexpr uint32_t kSeg = RF_DELTA_SEG;
constexpr uint32_t kSegUnits = kSeg / 2;
/* Record room per segment: SPARSE and BITMAP records wait for their
 * offset in slots taken from a pool of this much per segment of the batch
 * (3/16 of it: at an RL step's ~2 % of units changed, records are ~2.5 %
 * of their segments, at lr 1e-5's first step (15.7 %) ~15 %, which
 * overflowed a pool of an eighth (1398 of 8192 segments spilled, encode at
 * half speed on an H100); a segment need not fit in its own share); SAME
 * and RAW records need none (the pack writes them from the header and
 * next), and a record the pool has no more room for is encoded again
 * straight into the output by the spill pass, so that the encoder's
 * scratch is 3/16 of the batch, not the batch again, whatever the change
 * rate. */
constexpr uint32_t kSlot = 12288 + 16;
constexpr uint64_t kNoSlot = ~0ull;
constexpr int kScanThreads = 1024;
constexpr unsigned long long kNoError = ~0ull;

/* One segment of a batch (host-built table). */
struct seg_desc {
    uint8_t *a;       /* base (apply: the destination) */
    const uint8_t *b; /* next (encode only) */
    uint32_t n;       /* bytes */
    uint32_t chunk;   /* chunk index in the batch */
    uint32_t s;       /* segment index in its chunk */
    uint32_t last;    /* 1: the chunk's last segment */
};

/* A checked record, for the write pass of apply. */
struct rec_info {
    uint64_t poff; /* payload offset in the delta */
    uint32_t tag;  /* 4: nothing to write (empty chunk delta) */
    uint32_t k;
};

enum bad_code {
    kBadTotal = 1, kBadChunkEnd, kBadHeader, kBadRecord, kBadTrailing, kBadTag, kBadSame, kBadRaw,
    kBadOdd, kBadCounts, kBadCount, kBadPosRoom, kBadPos, kBadValRoom, kBadSize, kBadBitmap, kBadBits,
};

__device__ __forceinline__ uint32_t ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Exclusive sum over the kN threads of a CTA (a multiple of 32, at most
 * 1024; the encoder's kThreads unless named); *total gets the sum.  Every
 * thread must call it. */
template <int kN = kThreads>
__device__ uint32_t cta_exclusive(uint32_t v, uint32_t *total)
{
    __shared__ uint32_t warp_sum[kN / 32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    uint32_t x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o)
            x += y;
    }
    if (lane == 31)
        warp_sum[w] = x;
    __syncthreads();
    uint32_t before = 0, all = 0;
#pragma unroll
    for (int i = 0; i < kN / 32; i++) {
        before += i < w ? warp_sum[i] : 0;
        all += warp_sum[i];
    }
    __syncthreads(); /* warp_sum is reused by the next call */
    *total = all;
    return before + x - v;
}

/* Exclusive sum over the 16 lanes of a half warp. */
__device__ __forceinline__ uint32_t half_exclusive(uint32_t v)
{
    const int l = threadIdx.x & 15;
    uint32_t x = v;
#pragma unroll
    for (int o = 1; o < 16; o <<= 1) {
        uint32_t y = __shfl_up_sync(0xffffffffu, x, o, 16);
        if (l >= o)
            x += y;
    }
    return x - v;
}

/* ------------------------------------------------------------------ */
/* encode */

/* The change of eight units (four words of base and of next): change and
 * escape masks, the eight difference bytes (two units a word:
 * delta_swar.h, tested on the host against the unit rule). */
__device__ __forceinline__ void diff8(const uint32_t wa[4], const uint32_t wb[4], uint32_t *m, uint32_t *em,
                                      uint2 *db)
{
    uint32_t mm = 0, ee = 0, b[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint32_t mi, ei;
        rf_swar_diff2(wa[i], wb[i], &mi, &ei, &b[i]);
        mm |= mi << (2 * i);
        ee |= ei << (2 * i);
    }
    *m = mm;
    *em = ee;
    *db = make_uint2(b[0] | b[1] << 16, b[2] | b[3] << 16);
}

/* Units [u0, u0+8) of a segment (any alignment, any end; units past the
 * end are equal zeros). */
__device__ __forceinline__ void scan8(const uint8_t *a, const uint8_t *b, uint32_t u0, uint32_t nu,
                                      uint32_t *m, uint32_t *em, uint2 *db)
{
    uint32_t wa[4], wb[4];
    if (u0 + 8 <= nu && (((uintptr_t)(a + 2 * u0) | (uintptr_t)(b + 2 * u0)) & 15) == 0) {
        const uint4 va = __ldg((const uint4 *)(a + 2 * u0)), vb = __ldg((const uint4 *)(b + 2 * u0));
        wa[0] = va.x, wa[1] = va.y, wa[2] = va.z, wa[3] = va.w;
        wb[0] = vb.x, wb[1] = vb.y, wb[2] = vb.z, wb[3] = vb.w;
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            wa[i] = wb[i] = 0;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const uint32_t at = 2 * u0 + 4 * i + j;
                if (at < 2 * nu) {
                    wa[i] |= (uint32_t)a[at] << (8 * j);
                    wb[i] |= (uint32_t)b[at] << (8 * j);
                }
            }
        }
    }
    diff8(wa, wb, m, em, db);
}

struct __align__(16) enc_smem {
    uint8_t diff[kSegUnits];
    uint8_t bits[kSegUnits / 8];
    uint8_t esc[kSegUnits / 8];
    uint32_t blk[kSegUnits / RF_DELTA_BLOCK];  /* changed | escapes << 16, per block */
    uint32_t pre[kSegUnits / RF_DELTA_BLOCK];  /* their exclusive sums */
    uint64_t slot;                             /* the record's place in the pool */
};

/* Units per step of the pass (every thread 8), and the steps whose loads
 * a thread issues before using the first. */
constexpr uint32_t kStep = kThreads * 8;
constexpr uint32_t kBatch = 4;

/* One step's eight units of this thread into shared memory (in: u0 <
 * nu); the half warp's 128 units are one block, whose counts lane 0 of the
 * half writes.  Every lane must call it. */
__device__ __forceinline__ void put8(enc_smem &sm, uint32_t u0, bool in, uint32_t m, uint32_t em, uint2 db)
{
    if (in) {
        sm.bits[u0 / 8] = (uint8_t)m;
        sm.esc[u0 / 8] = (uint8_t)em;
        *(uint2 *)&sm.diff[u0] = db;
    }
    uint32_t v = __popc(m) | __popc(em) << 16;
#pragma unroll
    for (int o = 8; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 15) == 0 && in)
        sm.blk[u0 / RF_DELTA_BLOCK] = v;
}

/* The pass over a segment of whole batches of steps (its bytes a multiple
 * of 16 KiB) whose base and next are 16-byte aligned: no bounds or
 * alignment test between the loads, so that each thread's eight 16-byte
 * loads of a batch are all in flight before the first is used (128 bytes
 * per thread: the pass is bound by how much is in flight, the load of
 * each step waiting on the last was about 0.6x a copy's speed).  Streaming
 * loads: every byte is read once. */
template <uint32_t kB>
__device__ __forceinline__ void pass_whole(const seg_desc &d, uint32_t nu, enc_smem &sm)
{
    const uint4 *pa = (const uint4 *)d.a + threadIdx.x, *pb = (const uint4 *)d.b + threadIdx.x;
    const uint32_t nsteps = nu / kStep;
#pragma unroll 1
    for (uint32_t s0 = 0; s0 < nsteps; s0 += kB) {
        uint4 va[kB], vb[kB];
#pragma unroll
        for (uint32_t j = 0; j < kB; j++) {
            va[j] = __ldcs(pa + (size_t)(s0 + j) * kThreads);
            vb[j] = __ldcs(pb + (size_t)(s0 + j) * kThreads);
        }
#pragma unroll
        for (uint32_t j = 0; j < kB; j++) {
            const uint32_t wa[4] = {va[j].x, va[j].y, va[j].z, va[j].w}, wb[4] = {vb[j].x, vb[j].y, vb[j].z, vb[j].w};
            uint32_t m, em;
            uint2 db;
            diff8(wa, wb, &m, &em, &db);
            put8(sm, (s0 + j) * kStep + threadIdx.x * 8, true, m, em, db);
        }
    }
}

/* The pass over any other segment: all threads take the same number of
 * steps (put8's half-warp sums need every lane). */
__device__ void pass_any(const seg_desc &d, uint32_t nu, enc_smem &sm)
{
    for (uint32_t u0 = threadIdx.x * 8; u0 < (nu + kStep - 1) / kStep * kStep; u0 += kStep) {
        uint32_t m = 0, em = 0;
        uint2 db = make_uint2(0, 0);
        if (u0 < nu)
            scan8(d.a, d.b, u0, nu, &m, &em, &db);
        put8(sm, u0, u0 < nu, m, em, db);
    }
}

/* The changed units' bytes of a SPARSE or BITMAP payload (pos NULL for
 * BITMAP), thread by thread in the layout of the pass. */
__device__ void emit_units(const enc_smem &sm, const uint8_t *b, uint32_t nu, uint8_t *pos, uint8_t *dif,
                           uint8_t *raw)
{
    for (uint32_t u0 = threadIdx.x * 8; u0 < (nu + kStep - 1) / kStep * kStep; u0 += kStep) {
        uint32_t m = 0, em = 0;
        if (u0 < nu) {
            m = sm.bits[u0 / 8];
            em = sm.esc[u0 / 8];
        }
        uint32_t before = half_exclusive(__popc(m) | __popc(em) << 16);
        uint32_t base = sm.pre[u0 / RF_DELTA_BLOCK < kSegUnits / RF_DELTA_BLOCK ? u0 / RF_DELTA_BLOCK : 0];
        const uint32_t r = (base & 0xffffu) + (before & 0xffffu), er = (base >> 16) + (before >> 16);
        /* only the changed units, each ranked by the changes and escapes
         * before it (at ~2 % changed a thread's eight units hold one or
         * none: a loop over all eight took eight rounds of the warp per
         * step, this one as many as its lane with the most changes) */
        for (uint32_t left = m; left; left &= left - 1) {
            const uint32_t j = __ffs(left) - 1, i = u0 + j, below = (1u << j) - 1;
            const uint32_t ri = r + __popc(m & below);
            if (pos)
                pos[ri] = (uint8_t)(i % RF_DELTA_BLOCK);
            dif[ri] = sm.diff[i];
            if (em >> j & 1) {
                const uint32_t ei = er + __popc(em & m & below);
                raw[2 * ei] = b[2 * i];
                raw[2 * ei + 1] = b[2 * i + 1];
            }
        }
    }
}

/* What the encoder's first launch writes beside the records: per segment
 * its header (meta) and where its record waits in the pool (slot_off,
 * kNoSlot: nowhere), per chunk whether any segment changed, the pool's
 * use in 16-byte units, and the list of spilled segments with their
 * count. */
struct enc_out {
    uint32_t *meta, *chunk_changed, *spill_n, *spill;
    uint64_t *slot_off;
    unsigned long long *pool_used, pool16; /* pool16: the pool's 16-byte units */
};

/* A segment of odd length: SAME or RAW (the pack writes either). */
__device__ void encode_odd(const seg_desc &d, uint32_t g, const enc_out &o)
{
    int diff = 0;
    for (uint32_t i = threadIdx.x; i < d.n; i += kThreads)
        diff |= d.a[i] != d.b[i];
    bool changed = __syncthreads_or(diff);
    if (threadIdx.x == 0) {
        o.meta[g] = changed ? (d.n << 4 | RF_DELTA_RAW) : RF_DELTA_SAME;
        o.slot_off[g] = kNoSlot;
        if (changed)
            o.chunk_changed[d.chunk] = 1;
    }
}

/* Thread 0: where segment g's record of header h waits, kNoSlot for none
 * (SAME and RAW need none; a SPARSE or BITMAP record the pool has no more
 * room for goes onto the spill list).  The pool's counter only grows (64
 * bits: no wrap), so once a record did not fit no later one does. */
__device__ uint64_t take_slot(uint32_t h, uint32_t g, const enc_out &o)
{
    const uint32_t tag = h & 15u;
    if (tag != RF_DELTA_SPARSE && tag != RF_DELTA_BITMAP)
        return kNoSlot;
    const unsigned long long need = (4ull + (h >> 4) + 15) / 16;
    const unsigned long long at = atomicAdd(o.pool_used, need);
    if (at + need <= o.pool16)
        return at * 16;
    o.spill[atomicAdd(o.spill_n, 1u)] = g;
    return kNoSlot;
}

/* Segment g by the CTA.  kSpill false (dst: the pool): its header into
 * meta, its record into a slot of the pool when it has room, else g onto
 * the spill list.  kSpill true (after the offsets; dst: the segment's
 * offset in the output, any alignment): a spilled segment encoded again
 * and written whole there.  Every path is the same for the whole CTA. */
template <bool kSpill, uint32_t kB>
__device__ void encode_segment(enc_smem &sm, const seg_desc &d, uint32_t g, uint8_t *dst, const enc_out &o)
{
    if (d.n & 1) {
        if (!kSpill)
            encode_odd(d, g, o);
        return;
    }
    const uint32_t nu = d.n / 2, nblk = (nu + RF_DELTA_BLOCK - 1) / RF_DELTA_BLOCK, nbm = (nu + 7) / 8;
    if (nu % (kStep * kB) == 0 && (((uintptr_t)d.a | (uintptr_t)d.b) & 15) == 0)
        pass_whole<kB>(d, nu, sm);
    else
        pass_any(d, nu, sm);
    __syncthreads();
    uint32_t tot, mine = threadIdx.x < nblk ? sm.blk[threadIdx.x] : 0;
    uint32_t pre = cta_exclusive(mine, &tot);
    if (threadIdx.x < nblk)
        sm.pre[threadIdx.x] = pre;
    const uint32_t k = tot & 0xffffu, e = tot >> 16;
    const uint32_t sparse = nblk + 2 * k + 2 * e, bitmap = nbm + k + 2 * e;
    uint32_t tag, plen;
    if (!k)
        tag = RF_DELTA_SAME, plen = 0;
    else if (sparse <= bitmap && sparse <= d.n)
        tag = RF_DELTA_SPARSE, plen = sparse;
    else if (bitmap <= d.n)
        tag = RF_DELTA_BITMAP, plen = bitmap;
    else
        tag = RF_DELTA_RAW, plen = d.n;
    const uint32_t h = plen << 4 | tag;
    if (!kSpill && threadIdx.x == 0) {
        o.meta[g] = h;
        if (tag != RF_DELTA_SAME)
            o.chunk_changed[d.chunk] = 1;
        sm.slot = take_slot(h, g, o);
        o.slot_off[g] = sm.slot;
    }
    __syncthreads(); /* sm.pre and sm.slot complete */
    if (!kSpill && sm.slot == kNoSlot)
        return;
    uint8_t *slot = kSpill ? dst : dst + sm.slot;
    if (threadIdx.x < 4)
        slot[threadIdx.x] = (uint8_t)(h >> (8 * threadIdx.x)); /* little-endian */
    uint8_t *p = slot + 4;
    if (tag == RF_DELTA_SPARSE) {
        if (threadIdx.x < nblk)
            p[threadIdx.x] = (uint8_t)(sm.blk[threadIdx.x] & 0xffffu);
        emit_units(sm, d.b, nu, p + nblk, p + nblk + k, p + nblk + 2 * k);
    } else if (tag == RF_DELTA_BITMAP) {
        for (uint32_t i = threadIdx.x; i < nbm; i += kThreads)
            p[i] = sm.bits[i];
        emit_units(sm, d.b, nu, nullptr, p + nbm, p + nbm + k);
    }
}

/* One CTA per segment: headers, chunk flags, records in the pool, the
 * spill list.
 * Four CTAs an SM (shared memory allows five; registers are capped for
 * four): a batch's loads of 4 x 256 threads, 128 KiB, in flight. */
template <uint32_t kB, int kMinCtas>
__global__ void __launch_bounds__(kThreads, kMinCtas) encode_kernel(const seg_desc *segs, uint8_t *pool, enc_out o)
{
    __shared__ enc_smem sm;
    const uint32_t g = blockIdx.x;
    const seg_desc d = segs[g];
    encode_segment<false, kB>(sm, d, g, pool, o);
}

/* The spilled segments (after the offsets), a few CTAs looping over the
 * list: most batches have none, and a grid of every segment only to
 * return cost more than the rest of the encoder's small launches. */
constexpr unsigned kSpillCtas = 528;
__global__ void __launch_bounds__(kThreads, 4) spill_kernel(const seg_desc *segs, const uint32_t *spill_n,
                                                            const uint32_t *spill, const uint64_t *offs,
                                                            uint8_t *out)
{
    __shared__ enc_smem sm;
    const uint32_t n = *spill_n;
    const enc_out none = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0};
    for (uint32_t i = blockIdx.x; i < n; i += gridDim.x) {
        const uint32_t g = spill[i];
        const seg_desc d = segs[g];
        encode_segment<true, kBatch>(sm, d, g, out + offs[g], none);
        __syncthreads(); /* sm is the next segment's */
    }
}

/* The offsets: each record's size (0 for every segment of an unchanged
 * chunk) and its offset in the packed stream, and the total, by a grid of
 * CTAs of kOffThreads segments each (a segment a thread: coalesced loads,
 * every SM's bandwidth, where one CTA walking every segment was bound by
 * what one SM could load: 0.036 ms per 8192 segments on an H100).
 * A single pass with decoupled look-back: a CTA takes its tile from a
 * ticket (so that every tile it waits on belongs to a CTA already
 * running), sums its sizes, publishes the sum, then sums the published
 * words of the tiles before it back to the nearest one that carries its
 * inclusive prefix (a warp reads 32 of them at a time) and publishes its
 * own.  A tile's word: a flag (aggregate or inclusive) and the value,
 * written and read whole (one 64-bit volatile access), zeroed with the
 * chunk flags before the encoder's first launch.  The chunk lengths are
 * the pack's (it runs after every offset is written). */
#ifndef RF_DELTA_OFF_THREADS
#define RF_DELTA_OFF_THREADS 256
#endif
constexpr uint32_t kOffThreads = RF_DELTA_OFF_THREADS; /* emulation (tools/dev/cudaemu) runs tiles of 32 */
constexpr unsigned long long kTileAgg = 1ull << 62, kTileIncl = 1ull << 63, kTileVal = kTileAgg - 1;

__device__ __forceinline__ unsigned long long tile_load(const unsigned long long *p)
{
    return *(const volatile unsigned long long *)p;
}

__device__ __forceinline__ void tile_store(unsigned long long *p, unsigned long long v)
{
    *(volatile unsigned long long *)p = v;
}

/* Warp 0 (all 32 lanes): the sum of the tiles before tile (> 0), from the
 * published words: lane l reads tile - 1 - l of each window of 32, waits
 * until it is published, and the window's sum runs to the nearest
 * inclusive word (lanes before tile 0 count as an inclusive 0). */
__device__ unsigned long long look_back(const unsigned long long *tiles, uint32_t tile)
{
    const uint32_t lane = threadIdx.x & 31;
    unsigned long long sum = 0;
    for (int64_t end = tile;; end -= 32) {
        const int64_t t = end - 1 - (int64_t)lane;
        unsigned long long w = kTileIncl;
        if (t >= 0)
            while (!((w = tile_load(tiles + t)) & (kTileAgg | kTileIncl))) {
            }
        uint32_t near = w & kTileIncl ? lane : 32;
#pragma unroll
        for (int o = 16; o; o >>= 1) {
            const uint32_t q = __shfl_xor_sync(0xffffffffu, near, o);
            near = q < near ? q : near;
        }
        unsigned long long v = lane <= near ? (w & kTileVal) : 0;
#pragma unroll
        for (int o = 16; o; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        sum += v;
        if (near < 32)
            return sum;
    }
}

__global__ void __launch_bounds__(kOffThreads) offsets_kernel(const seg_desc *segs, const uint32_t *meta,
                                                              const uint32_t *chunk_changed, uint32_t *ticket,
                                                              unsigned long long *tiles, uint64_t *sizes,
                                                              uint64_t *offs, uint32_t nseg,
                                                              unsigned long long *total)
{
    __shared__ uint32_t tile_sh;
    __shared__ unsigned long long prefix_sh;
    if (threadIdx.x == 0)
        tile_sh = atomicAdd(ticket, 1u);
    __syncthreads();
    const uint32_t tile = tile_sh, g = tile * kOffThreads + threadIdx.x;
    const uint32_t sz = g < nseg && chunk_changed[segs[g].chunk] ? 4u + (meta[g] >> 4) : 0u;
    uint32_t agg; /* at most kOffThreads * (4 + 64 KiB): no wrap */
    const uint32_t before = cta_exclusive<kOffThreads>(sz, &agg);
    if (threadIdx.x == 0)
        tile_store(tiles + tile, (tile ? kTileAgg : kTileIncl) | agg);
    if (threadIdx.x < 32) {
        const unsigned long long pre = tile ? look_back(tiles, tile) : 0;
        if (threadIdx.x == 0) {
#ifndef RF_DELTA_LOOKBACK_AGG_ONLY /* emulation: every look-back walks to tile 0 */
            if (tile)
                tile_store(tiles + tile, kTileIncl | (pre + agg));
#endif
            prefix_sh = pre;
            if (tile == (nseg - 1) / kOffThreads)
                *total = pre + agg;
        }
    }
    __syncthreads();
    if (g < nseg) {
        sizes[g] = sz;
        offs[g] = prefix_sh + before;
    }
}

/* One CTA (kScanThreads): out[i] = sum of in[0..i), *total = sum of all
 * (apply: the chunk offsets). */
template <typename T>
__global__ void __launch_bounds__(kScanThreads) scan_kernel(const T *in, uint64_t *out, uint64_t n,
                                                            unsigned long long *total)
{
    __shared__ unsigned long long warp_sum[kScanThreads / 32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    unsigned long long carry = 0;
    for (uint64_t t0 = 0; t0 < n; t0 += kScanThreads) {
        uint64_t i = t0 + threadIdx.x;
        unsigned long long v = i < n ? (unsigned long long)in[i] : 0, x = v;
        for (int o = 1; o < 32; o <<= 1) {
            unsigned long long y = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o)
                x += y;
        }
        if (lane == 31)
            warp_sum[w] = x;
        __syncthreads();
        unsigned long long before = 0, all = 0;
        for (int k = 0; k < kScanThreads / 32; k++) {
            before += k < w ? warp_sum[k] : 0;
            all += warp_sum[k];
        }
        if (i < n)
            out[i] = carry + before + x - v;
        carry += all;
        __syncthreads();
    }
    if (threadIdx.x == 0)
        *total = carry;
}

/* n bytes from src to dst by one warp, dst at any offset of the packed
 * stream and its neighbours' bytes another warp's: bytes up to dst's
 * first 16-byte boundary and after its last one a byte a lane; between,
 * when src is 4-byte aligned (slots always are; next usually), 16-byte
 * stores a lane, each made of five source words shifted by src's offset
 * from that boundary.  (A byte a lane through the whole record, 16 byte
 * stores a lane scattered over 512 bytes, was the pack's cost: 0.085 ms
 * for 13 MB on an H100.)  A source word is read only when its last byte
 * is inside [src, src + n). */
__device__ __forceinline__ uint32_t funnel(uint32_t lo, uint32_t hi, uint32_t sh)
{
    return sh ? (lo >> (8 * sh)) | (hi << (32 - 8 * sh)) : lo;
}

__device__ __forceinline__ void warp_copy(uint8_t *dst, const uint8_t *src, uint32_t n)
{
    const uint32_t lane = threadIdx.x & 31;
    const uint32_t head = (uint32_t)(-(uintptr_t)dst & 15) < n ? (uint32_t)(-(uintptr_t)dst & 15) : n;
    const uint32_t sh = head & 3; /* src + head + 16c is sh bytes past a word */
    uint32_t nv = 0;              /* 16-byte stores */
    if (((uintptr_t)src & 3) == 0) {
        const uint32_t room = n - head + sh; /* bytes of whole words from src + head - sh */
        const uint32_t need = sh ? 20 : 16;  /* words read per store */
        nv = room >= need ? (room - need) / 16 + 1 : 0;
    }
    const uint32_t *w = (const uint32_t *)(src + head - sh);
    for (uint32_t c = lane; c < nv; c += 32) {
        const uint32_t *p = w + 4 * c;
        const uint32_t w0 = p[0], w1 = p[1], w2 = p[2], w3 = p[3], w4 = sh ? p[4] : 0;
        uint4 v;
        v.x = funnel(w0, w1, sh);
        v.y = funnel(w1, w2, sh);
        v.z = funnel(w2, w3, sh);
        v.w = funnel(w3, w4, sh);
        *(uint4 *)(dst + head + 16 * c) = v;
    }
    for (uint32_t i = lane; i < head; i += 32)
        dst[i] = src[i];
    for (uint32_t i = head + 16 * nv + lane; i < n; i += 32)
        dst[i] = src[i];
}

/* Each record to its offset, a warp per segment: from its slot in the
 * pool, or (SAME, RAW) its header from meta and RAW's bytes from next;
 * spilled records are the spill pass's.  The chunk's last segment writes
 * its length (its end less its first segment's offset). */
__global__ void __launch_bounds__(kThreads) pack_kernel(const seg_desc *segs, const uint8_t *pool,
                                                        const uint32_t *meta, const uint64_t *slot_off,
                                                        const uint64_t *sizes, const uint64_t *offs, uint8_t *out,
                                                        uint32_t *lens, uint32_t nseg)
{
    const uint32_t g = blockIdx.x * (kThreads / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (g >= nseg)
        return;
    const uint64_t sz = sizes[g], off = offs[g];
    if (lane == 0 && segs[g].last)
        lens[segs[g].chunk] = (uint32_t)(off + sz - offs[g - segs[g].s]);
    if (!sz)
        return;
    const uint32_t h = meta[g], tag = h & 15u;
    uint8_t *o = out + off;
    if (tag == RF_DELTA_SAME || tag == RF_DELTA_RAW) {
        if (lane < 4)
            o[lane] = (uint8_t)(h >> (8 * lane)); /* little-endian */
        if (tag == RF_DELTA_RAW)
            warp_copy(o + 4, segs[g].b, segs[g].n);
        return;
    }
    const uint64_t at = slot_off[g];
    if (at != kNoSlot)
        warp_copy(o, pool + at, (uint32_t)sz);
}

/* ------------------------------------------------------------------ */
/* apply: check */

__device__ __forceinline__ void fail(unsigned long long *err, uint32_t g, int code)
{
    atomicMin(err, (unsigned long long)g << 8 | (unsigned)code);
}

/* Thread 0: find segment g's record in its chunk; 0 or a bad_code. */
__device__ int find_record(const seg_desc &d, const uint8_t *delta, uint64_t len, const uint32_t *lens,
                           const uint64_t *coff, rec_info *ri, uint32_t *plen)
{
    const uint64_t c0 = coff[d.chunk], cl = lens[d.chunk];
    if (cl == 0) {
        ri->tag = 4;
        return 0;
    }
    if (c0 > len || cl > len - c0)
        return kBadChunkEnd;
    const uint64_t end = c0 + cl;
    uint64_t off = c0;
    for (uint32_t j = 0;; j++) {
        if (end - off < 4)
            return kBadHeader;
        const uint32_t h = ld32(delta + off);
        if ((uint64_t)(h >> 4) > end - off - 4)
            return kBadRecord;
        if (j == d.s) {
            ri->tag = h & 15u;
            ri->poff = off + 4;
            *plen = h >> 4;
            if (d.last && off + 4 + (h >> 4) != end)
                return kBadTrailing;
            return 0;
        }
        off += 4 + (h >> 4);
    }
}

/* Zero bytes in p[0..n), by the CTA (every thread gets the count). */
__device__ uint32_t count_zeros(const uint8_t *p, uint32_t n)
{
    uint32_t z = 0, total;
    for (uint32_t i = threadIdx.x; i < n; i += kThreads)
        z += p[i] == 0;
    cta_exclusive(z, &total);
    return total;
}

/* The checks of delta_apply.c's check_sparse / check_bitmap, by the CTA;
 * 0 or a bad_code (the same for every thread). */
__device__ int check_payload(const uint8_t *p, uint32_t plen, uint32_t n, uint32_t tag, uint32_t *k_out)
{
    __shared__ int bad;
    if (threadIdx.x == 0)
        bad = 0;
    __syncthreads();
    const uint32_t nu = n / 2, nblk = (nu + RF_DELTA_BLOCK - 1) / RF_DELTA_BLOCK, nbm = (nu + 7) / 8;
    const uint32_t head = tag == RF_DELTA_SPARSE ? nblk : nbm;
    if (plen < head)
        return tag == RF_DELTA_SPARSE ? kBadCounts : kBadBitmap;
    uint32_t k, mine = 0;
    const uint32_t t = threadIdx.x;
    const uint32_t ub = t < nblk ? (nu - t * RF_DELTA_BLOCK < RF_DELTA_BLOCK ? nu - t * RF_DELTA_BLOCK : RF_DELTA_BLOCK) : 0;
    if (tag == RF_DELTA_SPARSE) {
        mine = t < nblk ? p[t] : 0;
        if (mine > ub)
            atomicMax(&bad, kBadCount);
    } else {
        for (uint32_t i = t * 16; i < t * 16 + 16 && i < nbm; i++)
            mine += __popc(p[i]);
        if (t == 0 && nu % 8 && (p[nbm - 1] >> (nu % 8)))
            atomicMax(&bad, kBadBits);
    }
    const uint32_t pre = cta_exclusive(mine, &k);
    if (bad)
        return bad;
    if (tag == RF_DELTA_SPARSE) {
        if (plen - nblk < k)
            return kBadPosRoom;
        const uint8_t *pos = p + nblk + pre;
        for (uint32_t j = 0; j < mine; j++)
            if (pos[j] >= ub || (j && pos[j] <= pos[j - 1]))
                atomicMax(&bad, kBadPos);
        __syncthreads();
        if (bad)
            return bad;
    }
    const uint32_t at = head + (tag == RF_DELTA_SPARSE ? k : 0);
    if (plen - at < k)
        return kBadValRoom;
    const uint32_t e = count_zeros(p + at, k);
    if (plen - at - k != 2 * e)
        return kBadSize;
    *k_out = k;
    return 0;
}

__global__ void __launch_bounds__(kThreads) check_kernel(const seg_desc *segs, const uint8_t *delta, uint64_t len,
                                                         const uint32_t *lens, const uint64_t *coff,
                                                         const unsigned long long *total, rec_info *recs,
                                                         unsigned long long *err)
{
    __shared__ rec_info ri;
    __shared__ uint32_t plen;
    __shared__ int code;
    const uint32_t g = blockIdx.x;
    const seg_desc d = segs[g];
    if (threadIdx.x == 0) {
        ri.k = 0;
        code = find_record(d, delta, len, lens, coff, &ri, &plen);
        if (g == 0 && *total != len)
            fail(err, 0, kBadTotal);
    }
    __syncthreads();
    int bad = code;
    if (!bad && ri.tag != 4) {
        const uint32_t tag = ri.tag;
        if (tag > RF_DELTA_BITMAP)
            bad = kBadTag;
        else if (tag == RF_DELTA_SAME)
            bad = plen ? kBadSame : 0;
        else if (tag == RF_DELTA_RAW)
            bad = plen != d.n ? kBadRaw : 0;
        else if (d.n & 1)
            bad = kBadOdd;
        else {
            uint32_t k = 0;
            bad = check_payload(delta + ri.poff, plen, d.n, tag, &k);
            if (threadIdx.x == 0)
                ri.k = k;
        }
    }
    if (threadIdx.x == 0) {
        if (bad)
            fail(err, g, bad);
        recs[g] = ri;
    }
}

/* ------------------------------------------------------------------ */
/* apply: write */

__device__ __forceinline__ void put_unit(uint8_t *u, uint8_t dv, const uint8_t *raw, uint32_t *er)
{
    uint32_t v;
    if (dv) {
        v = ((uint32_t)(u[0] | u[1] << 8) + (uint32_t)(int32_t)(int8_t)dv) & 0xffffu;
    } else {
        v = raw[2 * *er] | raw[2 * *er + 1] << 8;
        ++*er;
    }
    u[0] = (uint8_t)v;
    u[1] = (uint8_t)(v >> 8);
}

__global__ void __launch_bounds__(kThreads) write_kernel(const seg_desc *segs, const uint8_t *delta,
                                                         const rec_info *recs, const unsigned long long *err)
{
    if (*err != kNoError)
        return; /* a bad segment anywhere: nothing is written */
    const rec_info ri = recs[blockIdx.x];
    const seg_desc d = segs[blockIdx.x];
    const uint8_t *p = delta + ri.poff;
    if (ri.tag == RF_DELTA_RAW) {
        for (uint32_t i = threadIdx.x; i < d.n; i += kThreads)
            d.a[i] = p[i];
        return;
    }
    if (ri.tag != RF_DELTA_SPARSE && ri.tag != RF_DELTA_BITMAP)
        return;
    /* Thread t: units [128t, 128t+128), its changes and their ranks. */
    const uint32_t nu = d.n / 2, nblk = (nu + RF_DELTA_BLOCK - 1) / RF_DELTA_BLOCK, nbm = (nu + 7) / 8;
    const uint32_t t = threadIdx.x;
    const bool sparse = ri.tag == RF_DELTA_SPARSE;
    uint32_t mine = 0, tot;
    if (t < nblk) {
        if (sparse)
            mine = p[t];
        else
            for (uint32_t i = t * 16; i < t * 16 + 16 && i < nbm; i++)
                mine += __popc(p[i]);
    }
    const uint32_t r0 = cta_exclusive(mine, &tot);
    const uint8_t *pos = p + nblk, *dif = p + (sparse ? nblk + ri.k : nbm), *raw = dif + ri.k;
    uint32_t z = 0;
    for (uint32_t j = 0; j < mine; j++)
        z += dif[r0 + j] == 0;
    uint32_t er = cta_exclusive(z, &tot);
    if (t >= nblk)
        return;
    uint8_t *dst = d.a;
    if (sparse) {
        for (uint32_t j = 0; j < mine; j++)
            put_unit(dst + 2 * (t * RF_DELTA_BLOCK + pos[r0 + j]), dif[r0 + j], raw, &er);
    } else {
        uint32_t r = r0;
        for (uint32_t i = t * 16; i < t * 16 + 16 && i < nbm; i++)
            for (uint32_t m = p[i]; m; m &= m - 1)
                put_unit(dst + 2 * (8 * i + __ffs(m) - 1), dif[r++], raw, &er);
    }
}

int cuda_fail(cudaError_t e, const char *what)
{
    return refit_error_set(REFIT_EIO, "delta cuda: %s: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e));
}

/* Indexed by bad_code. */
const char *const kBadText[] = {
    "malformed", "the chunk lengths do not add up to the delta's length",
    "the chunk's delta runs past the end of the delta", "the delta ends before this segment's record",
    "the record runs past its chunk's delta", "bytes after the chunk's last record", "unknown tag",
    "SAME record with a payload", "RAW payload of the wrong length", "SPARSE or BITMAP on a segment of odd length",
    "sparse payload shorter than its block counts", "a block counts more changes than it has units",
    "no room for the positions", "positions out of order or outside their block", "no room for the values",
    "payload length differs from what its contents need", "bitmap payload shorter than its bitmap",
    "bits set past the segment's units",
};

} // namespace

/* Per segment, on the host: where it is, for error messages. */
struct seg_where {
    uint32_t tensor;
    uint64_t chunk; /* in its tensor */
    uint32_t s;
};

/* The segments of one batch: on the host, on the device, and the spans
 * they were made from (a batch of the same spans reuses them). */
struct seg_table {
    struct rf_delta_span *spans;
    size_t n_spans;
    seg_desc *h_segs, *d_segs;
    seg_where *where;
    size_t nseg, nchunk, d_cap;
};

struct rf_delta_cuda {
    cudaStream_t stream;
    struct seg_table tab[2]; /* [0] apply, [1] encode: a receiver's and a publisher's buffers differ */
    /* work buffers (device), grown as needed */
    uint8_t *slots;
    size_t slots_cap;
    uint32_t *meta;
    uint32_t *changed; /* the pool's use (u64), the spill count (u32), a pad, a flag per chunk */
    uint32_t *spill;   /* the spilled segments */
    uint64_t *slot_off;
    uint64_t *sizes, *offs;
    size_t seg_buf_cap, chunk_buf_cap;
    rec_info *recs;
    uint64_t *coff;
    unsigned long long *d_total, *d_err, *h_out; /* h_out: pinned {total, err} */
    /* what the next sync reports */
    uint64_t *len_out;
    int apply_pending;
    size_t apply_len;
};

extern "C" int rf_delta_cuda_built(void)
{
    return 1;
}

extern "C" int rf_delta_cuda_create(void *stream, struct rf_delta_cuda **out)
{
    if (!out)
        return refit_error_set(REFIT_EINVAL, "delta cuda: NULL out");
    struct rf_delta_cuda *c = (struct rf_delta_cuda *)calloc(1, sizeof(*c));
    if (!c)
        return refit_error_set(REFIT_ENOMEM, "delta cuda: codec");
    c->stream = (cudaStream_t)stream;
    cudaError_t e = cudaMalloc((void **)&c->d_total, 2 * sizeof(unsigned long long));
    if (e == cudaSuccess)
        e = cudaMallocHost((void **)&c->h_out, 2 * sizeof(unsigned long long));
    if (e != cudaSuccess) {
        int rc = cuda_fail(e, "creating the codec");
        rf_delta_cuda_destroy(c);
        return rc;
    }
    c->d_err = c->d_total + 1;
    *out = c;
    return 0;
}

extern "C" void rf_delta_cuda_destroy(struct rf_delta_cuda *c)
{
    if (!c)
        return;
    (void)cudaStreamSynchronize(c->stream);
    for (int i = 0; i < 2; i++) {
        cudaFree(c->tab[i].d_segs);
        free(c->tab[i].h_segs);
        free(c->tab[i].where);
        free(c->tab[i].spans);
    }
    cudaFree(c->slots);
    cudaFree(c->meta);
    cudaFree(c->changed);
    cudaFree(c->spill);
    cudaFree(c->slot_off);
    cudaFree(c->sizes);
    cudaFree(c->offs);
    cudaFree(c->recs);
    cudaFree(c->coff);
    cudaFree(c->d_total);
    cudaFreeHost(c->h_out);
    (void)cudaGetLastError();
    free(c);
}

/* Device buffer *p of at least need bytes (contents not kept). */
static int grow(void **p, size_t *cap, size_t need, const char *what)
{
    if (need <= *cap && *p)
        return 0;
    cudaFree(*p);
    *p = nullptr;
    *cap = 0;
    cudaError_t e = cudaMalloc(p, need ? need : 1);
    if (e != cudaSuccess)
        return cuda_fail(e, what);
    *cap = need;
    return 0;
}

static int spans_same(struct seg_table *tb, const struct rf_delta_span *t, size_t nt, int enc)
{
    if (!tb->spans || tb->n_spans != nt)
        return 0;
    for (size_t i = 0; i < nt; i++)
        if (t[i].base != tb->spans[i].base || (enc && t[i].next != tb->spans[i].next) ||
            t[i].nbytes != tb->spans[i].nbytes || t[i].chunk_bytes != tb->spans[i].chunk_bytes)
            return 0;
    for (size_t i = 0; i < nt; i++)
        tb->spans[i].name = t[i].name; /* for this batch's messages */
    return 1;
}

static int count_segments(const struct rf_delta_span *t, size_t nt, size_t *nseg, size_t *nchunk)
{
    uint64_t ns = 0, nc = 0;
    for (size_t i = 0; i < nt; i++) {
        const uint64_t cb = t[i].chunk_bytes, nb = t[i].nbytes;
        if (!cb || cb > RF_DELTA_MAX_CHUNK)
            return refit_error_set(REFIT_ERANGE, "delta cuda: tensor '%s': chunks of %llu bytes",
                                   t[i].name ? t[i].name : "?", (unsigned long long)cb);
        if (nb && (!t[i].base))
            return refit_error_set(REFIT_EINVAL, "delta cuda: tensor '%s': NULL base", t[i].name ? t[i].name : "?");
        const uint64_t full = nb / cb, last = nb % cb;
        ns += full * ((cb + kSeg - 1) / kSeg) + (last + kSeg - 1) / kSeg;
        nc += full + (last != 0);
        if (ns > 0x7fffffffu || nc > 0xffffffffu)
            return refit_error_set(REFIT_ERANGE, "delta cuda: a batch of more than 2^31 segments");
    }
    *nseg = (size_t)ns;
    *nchunk = (size_t)nc;
    return 0;
}

/* The segment table of a batch, on the device (kept while unchanged). */
static int make_table(struct rf_delta_cuda *c, const struct rf_delta_span *t, size_t nt, int enc)
{
    struct seg_table *tb = &c->tab[enc];
    if (spans_same(tb, t, nt, enc))
        return 0;
    size_t nseg = 0, nchunk = 0;
    int rc = count_segments(t, nt, &nseg, &nchunk);
    if (rc)
        return rc;
    free(tb->h_segs);
    free(tb->where);
    free(tb->spans);
    tb->h_segs = (seg_desc *)malloc((nseg ? nseg : 1) * sizeof(seg_desc));
    tb->where = (seg_where *)malloc((nseg ? nseg : 1) * sizeof(seg_where));
    tb->spans = (struct rf_delta_span *)malloc((nt ? nt : 1) * sizeof(*t));
    tb->n_spans = 0;
    if (!tb->h_segs || !tb->where || !tb->spans)
        return refit_error_set(REFIT_ENOMEM, "delta cuda: a table of %zu segments", nseg);
    size_t g = 0, chunk = 0;
    for (size_t i = 0; i < nt; i++) {
        const uint64_t cb = t[i].chunk_bytes, nb = t[i].nbytes;
        for (uint64_t k = 0, c0 = 0; c0 < nb; k++, c0 += cb, chunk++) {
            const uint64_t cl = nb - c0 < cb ? nb - c0 : cb;
            for (uint64_t s0 = 0, s = 0; s0 < cl; s0 += kSeg, s++, g++) {
                seg_desc *d = &tb->h_segs[g];
                d->a = (uint8_t *)t[i].base + c0 + s0;
                d->b = enc ? (const uint8_t *)t[i].next + c0 + s0 : nullptr;
                d->n = (uint32_t)(cl - s0 < kSeg ? cl - s0 : kSeg);
                d->chunk = (uint32_t)chunk;
                d->s = (uint32_t)s;
                d->last = s0 + kSeg >= cl;
                tb->where[g] = seg_where{(uint32_t)i, k, (uint32_t)s};
            }
        }
    }
    rc = grow((void **)&tb->d_segs, &tb->d_cap, nseg * sizeof(seg_desc), "segment table");
    cudaError_t e = cudaSuccess;
    if (!rc && nseg)
        e = cudaMemcpyAsync(tb->d_segs, tb->h_segs, nseg * sizeof(seg_desc), cudaMemcpyHostToDevice, c->stream);
    if (!rc && e != cudaSuccess)
        rc = cuda_fail(e, "copying the segment table");
    if (rc)
        return rc;
    memcpy(tb->spans, t, nt * sizeof(*t));
    tb->n_spans = nt;
    tb->nseg = nseg;
    tb->nchunk = nchunk;
    return 0;
}

/* The encoder's counters in c->changed (u32 units): the pool's use (a
 * u64 at 0), the spill count (2), the offsets' ticket (3), a flag per chunk
 * from 4, then (8-byte aligned) a word per tile of the offsets. */
static size_t tile_words_at(size_t nchunk)
{
    return (4 + nchunk + 1) & ~(size_t)1;
}

static size_t off_tiles(size_t nseg)
{
    return (nseg + kOffThreads - 1) / kOffThreads;
}

static int work_buffers(struct rf_delta_cuda *c, int enc)
{
    const struct seg_table *tb = &c->tab[enc];
    size_t n = tb->nseg ? tb->nseg : 1, nc = tb->nchunk ? tb->nchunk : 1;
    int rc = 0;
    if (enc) {
        size_t cap = c->slots_cap;
        rc = grow((void **)&c->slots, &cap, n * (size_t)kSlot, "record pool");
        c->slots_cap = cap;
    }
    /* one capacity for the six per-segment buffers, each sized for the
     * largest element (rec_info) */
    size_t sc = c->seg_buf_cap, s2 = sc, s3 = sc, s4 = sc, s5 = sc, s6 = sc, cc = c->chunk_buf_cap, c2 = cc;
    if (!rc)
        rc = grow((void **)&c->meta, &sc, n * sizeof(rec_info), "segment headers");
    if (!rc)
        rc = grow((void **)&c->sizes, &s2, n * sizeof(rec_info), "segment sizes");
    if (!rc)
        rc = grow((void **)&c->offs, &s3, n * sizeof(rec_info), "segment offsets");
    if (!rc)
        rc = grow((void **)&c->recs, &s4, n * sizeof(rec_info), "checked records");
    if (!rc)
        rc = grow((void **)&c->spill, &s5, n * sizeof(rec_info), "spilled segments");
    if (!rc)
        rc = grow((void **)&c->slot_off, &s6, n * sizeof(rec_info), "record slots");
    if (!rc)
        c->seg_buf_cap = sc;
    /* chunk flags behind the encoder's three counters, then the offsets'
     * tile words (zeroed with them); both chunk buffers of the same size,
     * for one capacity */
    size_t chunk_bytes = (tile_words_at(nc) + 2 * off_tiles(n)) * sizeof(uint32_t);
    if (chunk_bytes < (nc + 4) * sizeof(uint64_t))
        chunk_bytes = (nc + 4) * sizeof(uint64_t);
    if (!rc)
        rc = grow((void **)&c->changed, &cc, chunk_bytes, "chunk flags");
    if (!rc)
        rc = grow((void **)&c->coff, &c2, chunk_bytes, "chunk offsets");
    if (!rc)
        c->chunk_buf_cap = cc;
    return rc;
}

static unsigned blocks_for(size_t n, unsigned per)
{
    return (unsigned)((n + per - 1) / per);
}

extern "C" int rf_delta_cuda_encode(struct rf_delta_cuda *c, const struct rf_delta_span *t, size_t nt, void *out,
                                    size_t cap, uint32_t *lens, uint64_t *len)
{
    if (!c || (nt && !t) || !len)
        return refit_error_set(REFIT_EINVAL, "delta cuda: encode: NULL argument");
    uint64_t need = 0;
    for (size_t i = 0; i < nt; i++) {
        uint64_t b = rf_delta_tensor_bound(t[i].nbytes, t[i].chunk_bytes);
        if (b == UINT64_MAX || need + b < need)
            return refit_error_set(REFIT_ERANGE, "delta cuda: tensor '%s' cannot be encoded",
                                   t[i].name ? t[i].name : "?");
        if (t[i].nbytes && !t[i].next)
            return refit_error_set(REFIT_EINVAL, "delta cuda: tensor '%s': NULL next", t[i].name ? t[i].name : "?");
        need += b;
    }
    if (cap < need)
        return refit_error_set(REFIT_EINVAL, "delta cuda: %zu bytes of room for a delta of up to %llu", cap,
                               (unsigned long long)need);
    int rc = make_table(c, t, nt, 1);
    if (!rc)
        rc = work_buffers(c, 1);
    if (rc)
        return rc;
    const struct seg_table *tb = &c->tab[1];
    /* Five operations on the stream, none waiting for the host: the
     * counters, chunk flags and tile words zeroed; the pass (headers,
     * slots, flags, spill list); the offsets (sizes, offsets, the total);
     * the pack (records, every chunk length); the spilled segments.  A batch of no segments only zeroes
     * the total. */
    cudaError_t e = cudaSuccess;
    if (!tb->nseg) {
        e = cudaMemsetAsync(c->d_total, 0, sizeof(unsigned long long), c->stream);
    } else {
        const unsigned ns = (unsigned)tb->nseg;
        const enc_out o = {c->meta, c->changed + 4, c->changed + 2, c->spill, c->slot_off,
                           (unsigned long long *)c->changed, (unsigned long long)(c->slots_cap / 16)};
        const size_t tiles_at = tile_words_at(tb->nchunk), nt_off = off_tiles(ns);
        unsigned long long *tiles = (unsigned long long *)(c->changed + tiles_at);
        e = cudaMemsetAsync(c->changed, 0, (tiles_at + 2 * nt_off) * sizeof(uint32_t), c->stream);
        if (e == cudaSuccess) {
            encode_kernel<kBatch, 4><<<ns, kThreads, 0, c->stream>>>(tb->d_segs, c->slots, o);
            offsets_kernel<<<(unsigned)nt_off, kOffThreads, 0, c->stream>>>(tb->d_segs, c->meta, o.chunk_changed,
                                                                           c->changed + 3, tiles, c->sizes, c->offs,
                                                                           ns, c->d_total);
            pack_kernel<<<blocks_for(ns, kThreads / 32), kThreads, 0, c->stream>>>(
                tb->d_segs, c->slots, c->meta, c->slot_off, c->sizes, c->offs, (uint8_t *)out, lens, ns);
            spill_kernel<<<ns < kSpillCtas ? ns : kSpillCtas, kThreads, 0, c->stream>>>(
                tb->d_segs, o.spill_n, c->spill, c->offs, (uint8_t *)out);
            e = cudaGetLastError();
        }
    }
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(c->h_out, c->d_total, sizeof(unsigned long long), cudaMemcpyDeviceToHost, c->stream);
    if (e != cudaSuccess)
        return cuda_fail(e, "encoding");
    c->len_out = len;
    return 0;
}

extern "C" int rf_delta_cuda_apply(struct rf_delta_cuda *c, const struct rf_delta_span *t, size_t nt,
                                   const void *delta, size_t len, const uint32_t *lens)
{
    if (!c || (nt && !t) || (len && !delta))
        return refit_error_set(REFIT_EINVAL, "delta cuda: apply: NULL argument");
    int rc = make_table(c, t, nt, 0);
    if (!rc)
        rc = work_buffers(c, 0);
    if (rc)
        return rc;
    const struct seg_table *tb = &c->tab[0];
    if (!tb->nseg && len)
        return refit_error_set(REFIT_EPROTO, "delta cuda: a %zu-byte delta for a batch of no bytes", len);
    cudaError_t e = cudaMemsetAsync(c->d_err, 0xff, sizeof(unsigned long long), c->stream);
    if (e == cudaSuccess)
        e = cudaMemsetAsync(c->d_total, 0, sizeof(unsigned long long), c->stream);
    if (e == cudaSuccess && tb->nseg) {
        const unsigned ns = (unsigned)tb->nseg;
        const uint8_t *d = (const uint8_t *)delta;
        scan_kernel<uint32_t><<<1, kScanThreads, 0, c->stream>>>(lens, c->coff, tb->nchunk, c->d_total);
        check_kernel<<<ns, kThreads, 0, c->stream>>>(tb->d_segs, d, len, lens, c->coff, c->d_total, c->recs,
                                                     c->d_err);
        write_kernel<<<ns, kThreads, 0, c->stream>>>(tb->d_segs, d, c->recs, c->d_err);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(c->h_out, c->d_total, 2 * sizeof(unsigned long long), cudaMemcpyDeviceToHost, c->stream);
    if (e != cudaSuccess)
        return cuda_fail(e, "applying");
    c->apply_pending = 1;
    c->apply_len = len;
    return 0;
}

extern "C" int rf_delta_cuda_sync(struct rf_delta_cuda *c)
{
    if (!c)
        return refit_error_set(REFIT_EINVAL, "delta cuda: NULL codec");
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess)
        return cuda_fail(e, "waiting for the stream");
    if (c->len_out) {
        *c->len_out = c->h_out[0];
        c->len_out = nullptr;
    }
    if (!c->apply_pending)
        return 0;
    c->apply_pending = 0;
    unsigned long long err = c->h_out[1];
    if (err == kNoError)
        return 0;
    const size_t g = (size_t)(err >> 8);
    const int code = (int)(err & 0xff);
    if (code == kBadTotal)
        return refit_error_set(REFIT_EPROTO, "delta cuda: the chunk lengths add up to %llu bytes, the delta has %zu",
                               (unsigned long long)c->h_out[0], c->apply_len);
    const struct seg_table *tb = &c->tab[0];
    const seg_where w = g < tb->nseg ? tb->where[g] : seg_where{0, 0, 0};
    const char *name = w.tensor < tb->n_spans && tb->spans[w.tensor].name ? tb->spans[w.tensor].name : "?";
    return refit_error_set(REFIT_EPROTO, "delta of tensor '%s' chunk %llu, segment %u: %s", name,
                           (unsigned long long)w.chunk, w.s, kBadText[code <= kBadBits ? code : 0]);
}
