// dprog.cu — the device program of dprog.h on the CUDA runtime: a table of
// tiles in device memory and, per phase, one launch over its FP8 blocks and
// one over its copies (a kernel without the FP8 block's register cap, so
// more CTAs share an SM), one CTA per tile.
//
// A copy tile is up to RF_DPROG_TILE bytes of a 2-D copy (a run of whole
// rows, or a piece of one long row): 256 threads move 16-byte vectors,
// four loads in flight each, with streaming stores (the engine reads its
// parameters later, not now: keep them out of L2).  An FP8 tile is one
// 128x128 block: loaded once into registers from the trainer's bf16, its
// amax reduced, the scale computed, cast and stored as e4m3 (the
// arithmetic of fp8.cu through fp8_dev.cuh, so the same bytes as the CPU
// path).  The tile kind is uniform in a CTA, so the block's barrier is too.
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dprog.h"
#include "refit/status.h"

#include "fp8_dev.cuh"

namespace {

enum : uint32_t {
    kTileCopy16 = 1, // 16-byte vectors (every address and length aligned)
    kTileCopy1 = 2,  // bytes
    kTileFp8 = 3,    // a bf16 block
    kKindMask = 15,
    kVecIn = 16,     // FP8: 16-byte loads (source and pitch aligned)
    kVecOut = 32,    // FP8: 8-byte stores
};

struct tile {
    const char *src;
    char *dst;
    unsigned long long spitch, dpitch;
    float *scale; // FP8: this block's scale
    uint32_t rows, width; // copy: rows and bytes per row; FP8: rows and columns (<= 128)
    uint32_t kind, op;
};
static_assert(sizeof(tile) == 56, "tile table layout");

constexpr unsigned long long kNoError = ~0ull;
constexpr int kUnroll = 4; // the FP8 program's copies (run_tiles, under its register cap)

// REFIT_DPROG_FLAG=1: the completion signal of a run's last launch.  Each
// CTA, when done, counts itself in a device word; the last one to count
// writes the run's sequence number into host-mapped memory, which the
// waiting host polls instead of the event (a read of its own memory, not a
// driver call).  word is null in every other launch.
struct done_sig {
    unsigned int *count;     // device: CTAs of this launch done (the last resets it for the next run)
    volatile uint32_t *word; // host-mapped: the sequence number of the last run that ended
    uint32_t seq;            // this run's (never 0: the word's initial value)
};

// The end of a CTA.  Thread 0 counts the CTA once all its threads are done
// (the barrier) and its writes are visible on the device (the fence; an
// FP8 block's error flag was fenced at system scope when raised, by this
// same thread).  The last CTA fences at system scope, so that every
// counted CTA's writes, the error flag among them, precede the sequence
// number for the host too, then publishes it.  The next run's launch comes
// after this one on the stream, so the reset is seen by it.
__device__ __forceinline__ void signal_done(const done_sig &d)
{
    if (!d.word)
        return;
    __syncthreads();
    if (threadIdx.x)
        return;
    __threadfence();
    if (atomicAdd(d.count, 1u) == gridDim.x - 1) {
        __threadfence_system();
        *d.count = 0;
        *d.word = d.seq;
    }
}

// The copy loop's shape (REFIT_DPROG_UNROLL, _LOAD, _STORE: measurement
// knobs, docs/configuration.md): U 16-byte vectors in flight per thread;
// loads through the read-only path (ld.global.nc) or streaming (ld.global.cs,
// evict first: the trainer's tensors are not read again by this kernel);
// stores streaming (st.global.cs: the engine reads its parameters later) or
// write-back.
enum : int { kLoadNc = 0, kLoadCs = 1, kStoreCs = 0, kStoreWb = 1 };

template <int LD>
__device__ __forceinline__ uint4 load16(const uint4 *p)
{
    return LD == kLoadCs ? __ldcs(p) : __ldg(p);
}

template <int ST>
__device__ __forceinline__ void store16(uint4 *p, const uint4 &v)
{
    if (ST == kStoreWb)
        *p = v;
    else
        __stcs(p, v);
}

template <int U, int LD, int ST>
__device__ __forceinline__ void copy16(const tile &t)
{
    const uint32_t w16 = t.width / 16, n = t.rows * w16;
    if (t.rows == 1) {
        const uint4 *s = (const uint4 *)t.src;
        uint4 *d = (uint4 *)t.dst;
        for (uint32_t i = threadIdx.x; i < n; i += U * kThreads) {
            uint4 v[U];
#pragma unroll
            for (int k = 0; k < U; k++)
                if (i + k * kThreads < n)
                    v[k] = load16<LD>(s + i + k * kThreads);
#pragma unroll
            for (int k = 0; k < U; k++)
                if (i + k * kThreads < n)
                    store16<ST>(d + i + k * kThreads, v[k]);
        }
        return;
    }
    for (uint32_t i = threadIdx.x; i < n; i += U * kThreads) {
        uint4 v[U];
#pragma unroll
        for (int k = 0; k < U; k++) {
            const uint32_t j = i + k * kThreads, r = j / w16, c = j - r * w16;
            if (j < n)
                v[k] = load16<LD>((const uint4 *)(t.src + r * t.spitch) + c);
        }
#pragma unroll
        for (int k = 0; k < U; k++) {
            const uint32_t j = i + k * kThreads, r = j / w16, c = j - r * w16;
            if (j < n)
                store16<ST>((uint4 *)(t.dst + r * t.dpitch) + c, v[k]);
        }
    }
}

__device__ __forceinline__ void copy1(const tile &t)
{
    const uint32_t n = t.rows * t.width;
    for (uint32_t j = threadIdx.x; j < n; j += kThreads) {
        const uint32_t r = j / t.width, c = j - r * t.width;
        t.dst[r * t.dpitch + c] = t.src[r * t.spitch + c];
    }
}

// An FP8 block with NaN or Inf: the lowest such operation goes to the
// device word (atomicMin), and the host-mapped flag says that there is one,
// so that a clean run needs no read-back of the word (rf_dprog_wait).
__device__ __forceinline__ void report(const tile &t, unsigned long long *err, volatile uint32_t *flag)
{
    atomicMin(err, (unsigned long long)t.op);
    __threadfence_system();
    *flag = 1;
}

template <int RULE>
__device__ __forceinline__ void fp8_block(const tile &t, float floor, unsigned long long *err,
                                          volatile uint32_t *flag, uint32_t *warp_max)
{
    constexpr int kRowsPerItem = kThreads / kVecPerRow;
    const int nr = (int)t.rows, nc = (int)t.width, th = threadIdx.x;
    const int tr = th / kVecPerRow, tc = (th % kVecPerRow) * kVec;
    const bool vin = t.kind & kVecIn, vout = t.kind & kVecOut;
    const bool full = vin && vout && nr == kB && nc == kB;
    const char *sp = t.src + (size_t)tr * t.spitch + (size_t)tc * 2;
    const size_t sstep = t.spitch * kRowsPerItem;
    uint32_t x[kItems][item_words<true>::n];
#pragma unroll
    for (int i = 0; i < kItems; i++) {
        const int r = i * kRowsPerItem + tr;
        const int n = full ? kVec : (r < nr ? (nc - tc < kVec ? (nc - tc > 0 ? nc - tc : 0) : kVec) : 0);
        load_item<true>(sp + i * sstep, n, vin, x[i]);
    }
    const uint32_t m = block_amax<true>(x, th, warp_max);
    if (m >= 0x7f800000u) { // NaN or Inf: the operation is reported
        if (th == 0)
            report(t, err, flag);
        return;
    }
    const float amax = __uint_as_float(m);
    float s, inv = 0.0f;
    if (RULE == kRuleDiv) {
        const float q = __fdiv_rn(amax, kE4m3Max);
        s = q < floor ? floor : q;
    } else {
        const float q = amax < floor ? floor : amax;
        s = __fdiv_rn(q, kE4m3Max);
        inv = __fdiv_rn(1.0f, s);
    }
    if (th == 0)
        *t.scale = s;
    char *dp = t.dst + (size_t)tr * t.dpitch + tc;
#pragma unroll
    for (int i = 0; i < kItems; i++) {
        const int r = i * kRowsPerItem + tr;
        if (!full && (r >= nr || tc >= nc))
            continue;
        uint32_t h[kVec / 2];
#pragma unroll
        for (int k = 0; k < kVec; k += 2)
            h[k / 2] = e4m3x2(scale1<RULE>(elem<true>(x[i], k), s, inv),
                              scale1<RULE>(elem<true>(x[i], k + 1), s, inv));
        char *d = dp + (size_t)i * kRowsPerItem * t.dpitch;
        if (full || (vout && nc - tc >= kVec)) {
            *(uint2 *)d = make_uint2(h[0] | h[1] << 16, h[2] | h[3] << 16);
        } else {
#pragma unroll
            for (int k = 0; k < kVec; k++)
                if (tc + k < nc)
                    d[k] = (char)(h[k / 2] >> (8 * (k & 1)));
        }
    }
}

// One CTA per tile of [first, first + gridDim.x): a phase's FP8 blocks and
// copies in one launch.  The register cap is the FP8 block's (fp8.cu: 3
// CTAs per SM for the trainer rule's division); three CTAs of 256 threads
// with four 16-byte loads in flight each still keep 48 KiB per SM in
// flight for the copies.
template <int RULE>
__global__ void __launch_bounds__(kThreads, 3) run_tiles(const tile *__restrict__ tiles, size_t first,
                                                          float floor, unsigned long long *err,
                                                          volatile uint32_t *flag, done_sig done)
{
    __shared__ uint32_t warp_max[kThreads / 32];
    const tile t = tiles[first + blockIdx.x];
    switch (t.kind & kKindMask) {
    case kTileCopy16:
        copy16<kUnroll, 0, 0>(t);
        break;
    case kTileCopy1:
        copy1(t);
        break;
    default:
        fp8_block<RULE>(t, floor, err, flag, warp_max);
        break;
    }
    signal_done(done);
}

// The copy tiles of a phase: without the FP8 block's registers, so that
// more CTAs share an SM (the copies are bound by memory, not by the SMs).
// A grid smaller than the tiles walks them (REFIT_DPROG_CTAS: a measurement knob).
template <int U, int LD, int ST>
__global__ void __launch_bounds__(kThreads) copy_tiles(const tile *__restrict__ tiles, size_t first, size_t n,
                                                      done_sig done)
{
    for (size_t i = blockIdx.x; i < n; i += gridDim.x) {
        const tile t = tiles[first + i];
        if ((t.kind & kKindMask) == kTileCopy16)
            copy16<U, LD, ST>(t);
        else
            copy1(t);
    }
    signal_done(done);
}

// REFIT_DPROG_PROBE=kernel: nothing, launched and waited for before a run
// (the launch-to-start latency of a cycle's first work, apart from the program).
__global__ void probe_kernel() {}

// The copy kernel of variant v (bit 0: 8 vectors in flight per thread, not
// 4; bit 1: streaming loads; bit 2: write-back stores).
typedef void (*copy_fn)(const tile *__restrict__, size_t, size_t, done_sig);
const copy_fn kCopyVariants[8] = {
    copy_tiles<4, kLoadNc, kStoreCs>, copy_tiles<8, kLoadNc, kStoreCs>,
    copy_tiles<4, kLoadCs, kStoreCs>, copy_tiles<8, kLoadCs, kStoreCs>,
    copy_tiles<4, kLoadNc, kStoreWb>, copy_tiles<8, kLoadNc, kStoreWb>,
    copy_tiles<4, kLoadCs, kStoreWb>, copy_tiles<8, kLoadCs, kStoreWb>,
};

int cuda_fail(cudaError_t e, const char *what)
{
    (void)cudaGetLastError();
    return refit_error_set(REFIT_EIO, "cuda: device program: %s: %s (%s)", what, cudaGetErrorString(e),
                           cudaGetErrorName(e));
}

struct tiles_vec {
    tile *t;
    size_t n, cap;
};

int push(tiles_vec *v, const tile &t)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 1024;
        tile *nt = (tile *)realloc(v->t, nc * sizeof(*nt));
        if (!nt)
            return refit_error_set(REFIT_ENOMEM, "device program: %zu tiles", nc);
        v->t = nt;
        v->cap = nc;
    }
    v->t[v->n++] = t;
    return 0;
}

int cut_copy(tiles_vec *v, const rf_dop &o, uint32_t op, uint64_t tile_bytes)
{
    const bool vec = !(((uintptr_t)o.src | (uintptr_t)o.dst | o.src_pitch | o.dst_pitch | o.width) & 15);
    const uint32_t kind = vec ? kTileCopy16 : kTileCopy1;
    int rc = 0;
    if (o.width >= tile_bytes || o.rows == 1) {
        // Long rows: pieces of one row each.
        for (uint64_t r = 0; !rc && r < o.rows; r++)
            for (uint64_t c = 0; !rc && c < o.width; c += tile_bytes) {
                uint64_t w = o.width - c < tile_bytes ? o.width - c : tile_bytes;
                tile t = {(const char *)o.src + r * o.src_pitch + c, (char *)o.dst + r * o.dst_pitch + c,
                          o.src_pitch, o.dst_pitch, nullptr, 1, (uint32_t)w, kind, op};
                rc = push(v, t);
            }
        return rc;
    }
    const uint64_t per = tile_bytes / o.width;
    for (uint64_t r = 0; !rc && r < o.rows; r += per) {
        uint64_t n = o.rows - r < per ? o.rows - r : per;
        tile t = {(const char *)o.src + r * o.src_pitch, (char *)o.dst + r * o.dst_pitch, o.src_pitch,
                  o.dst_pitch, nullptr, (uint32_t)n, (uint32_t)o.width, kind, op};
        rc = push(v, t);
    }
    return rc;
}

int cut_fp8(tiles_vec *v, const rf_dop &o, uint32_t op)
{
    uint32_t kind = kTileFp8;
    if (!((uintptr_t)o.src % 16) && !(o.src_pitch % 16))
        kind |= kVecIn;
    if (!((uintptr_t)o.dst % 8) && !(o.dst_pitch % 8))
        kind |= kVecOut;
    int rc = 0;
    for (uint64_t r = 0; !rc && r < o.rows; r += kB)
        for (uint64_t c = 0; !rc && c < o.width; c += kB) {
            uint64_t nr = o.rows - r < (uint64_t)kB ? o.rows - r : kB;
            uint64_t nc = o.width - c < (uint64_t)kB ? o.width - c : kB;
            tile t = {(const char *)o.src + r * o.src_pitch + c * 2, (char *)o.dst + r * o.dst_pitch + c,
                      o.src_pitch, o.dst_pitch, o.scales + (r / kB) * o.scale_pitch + c / kB, (uint32_t)nr,
                      (uint32_t)nc, kind, op};
            rc = push(v, t);
        }
    return rc;
}

} // namespace

struct rf_dprog {
    int device;
    cudaStream_t stream;
    cudaEvent_t done;
    /* The lowest operation with NaN or Inf (device word, kNoError when
     * none; read back only when the host-mapped flag says there is one)
     * and the host's copy of it. */
    unsigned long long *d_err, *h_err;
    uint32_t *h_flag, *d_flag; /* host-mapped: the kernel raises it */
    /* REFIT_DPROG_SPLIT=1: a phase's FP8 blocks and copies as two launches
     * (the copies' kernel without the FP8 register cap), for comparison. */
    int split;
    /* The wait polls the event this long before blocking on it (REFIT_DPROG_SPIN_US,
     * default 20 ms): a blocked thread wakes tens of microseconds after the
     * kernel ends, a polling one within a few. */
    double spin_s;
    /* REFIT_DPROG_FLAG=1: the run's last launch writes seq into h_done
     * (done_sig; the host reference does it too), and the wait polls that
     * word for up to spin_s before it blocks on the event.  armed: this
     * run queued the signal (a program without tiles launches nothing). */
    int flagged, armed;
    uint32_t seq;
    uint32_t *h_done, *d_done; /* host-mapped */
    unsigned int *d_count;
    tile *d_tiles;
    size_t n_tiles;
    /* Phase ph's tiles are [phase_first[ph], phase_first[ph + 1]): its FP8
     * blocks first, up to copy_first[ph], then its copies (each kind its
     * own launch: the copies' kernel keeps more CTAs on an SM). */
    size_t phase_first[RF_DPROG_PHASES + 1], copy_first[RF_DPROG_PHASES];
    uint64_t tile_bytes; /* largest copy tile */
    unsigned ctas;       /* REFIT_DPROG_CTAS: the copy kernel's grid bound (0: a CTA per tile) */
    int copy_variant;    /* kCopyVariants[] (REFIT_DPROG_UNROLL, _LOAD, _STORE) */
    /* REFIT_DPROG_PROBE (a diagnostic, traced programs only): before each
     * run, 1 = an empty kernel, 2 = a cudaMemcpyAsync of the bytes the
     * program reads (between two buffers of this process), each waited for
     * by the host, so that the trace shows the latency of a cycle's first
     * work on the device (and, for 2, the copy's device time under the
     * cycle's conditions, probe_ms) apart from the program's. */
    int probe;
    uint64_t read_bytes; /* the bytes a run reads (copies, FP8 sources) */
    void *probe_a, *probe_b;
    uint64_t probe_cap;
    cudaEvent_t p0, p1;
    double probe_ms;
    int rule;
    float floor;
    int launched;
    /* REFIT_PULL_TRACE=1: the kernels are timed with events (rf_dprog_last_ms)
     * and the host's steps of a launch and a wait with the clock. */
    int timed;
    cudaEvent_t k0, k1;
    int n_steps;
    const char *step_name[8];
    double step_t[8];
    /* REFIT_DPROG_HOST=1 (tests on a mock runtime whose device memory the
     * host can reach): the host reference runs as a stream host function
     * instead of the kernel, on a copy of the operations. */
    int host;
    rf_dop *ops;
    size_t n_ops;
    refit_fp8_params params;
    int host_rc;
};

namespace {

int enter(int device, int *saved)
{
    cudaError_t e = cudaGetDevice(saved);
    if (e == cudaSuccess && *saved != device)
        e = cudaSetDevice(device);
    return e == cudaSuccess ? 0 : cuda_fail(e, "selecting the device");
}

void leave(int saved)
{
    int cur = -1;
    if (saved >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != saved)
        (void)cudaSetDevice(saved);
}

/* The copy kernel's variant from REFIT_DPROG_UNROLL (4, 8), REFIT_DPROG_LOAD
 * (nc, cs) and REFIT_DPROG_STORE (cs, wb); unset or other values keep the
 * default (4, nc, cs). */
int copy_variant()
{
    const char *u = getenv("REFIT_DPROG_UNROLL"), *l = getenv("REFIT_DPROG_LOAD"), *st = getenv("REFIT_DPROG_STORE");
    return (u && !strcmp(u, "8") ? 1 : 0) | (l && !strcmp(l, "cs") ? 2 : 0) | (st && !strcmp(st, "wb") ? 4 : 0);
}

} // namespace

extern "C" int rf_dprog_create(int device, struct rf_dprog **out)
{
    rf_dprog *g = (rf_dprog *)calloc(1, sizeof(*g));
    if (!g)
        return refit_error_set(REFIT_ENOMEM, "device program");
    g->device = device;
    const char *h = getenv("REFIT_DPROG_HOST"), *tr = getenv("REFIT_PULL_TRACE"), *tk = getenv("REFIT_DPROG_TILE_KB");
    const char *sp = getenv("REFIT_DPROG_SPLIT"), *spin = getenv("REFIT_DPROG_SPIN_US");
    g->host = h && !strcmp(h, "1");
    g->timed = tr && !strcmp(tr, "1");
    g->split = sp && !strcmp(sp, "1");
    long us = spin ? strtol(spin, NULL, 10) : 20000;
    g->spin_s = us > 0 && us <= 10000000 ? 1e-6 * (double)us : 0;
    /* A tuning knob for measurements: the largest copy tile in KiB (4 to 65536). */
    long kb = tk ? strtol(tk, NULL, 10) : 0;
    g->tile_bytes = kb >= 4 && kb <= 65536 ? (uint64_t)kb << 10 : RF_DPROG_TILE;
    g->copy_variant = copy_variant();
    const char *pr = getenv("REFIT_DPROG_PROBE");
    g->probe = g->timed && pr ? (!strcmp(pr, "kernel") ? 1 : !strcmp(pr, "copy") ? 2 : 0) : 0;
    const char *nb = getenv("REFIT_DPROG_NONBLOCKING");
    const unsigned stream_flags = nb && !strcmp(nb, "1") ? cudaStreamNonBlocking : cudaStreamDefault;
    const char *ct = getenv("REFIT_DPROG_CTAS");
    long ctas = ct ? strtol(ct, NULL, 10) : 0;
    g->ctas = ctas > 0 && ctas <= 1048576 ? (unsigned)ctas : 0;
    const char *fl = getenv("REFIT_DPROG_FLAG");
    g->flagged = fl && !strcmp(fl, "1");
    int saved = -1, rc = enter(device, &saved);
    cudaError_t e = cudaSuccess;
    if (!rc) {
        e = cudaStreamCreateWithFlags(&g->stream, stream_flags);
        if (e == cudaSuccess)
            e = cudaEventCreateWithFlags(&g->done, cudaEventDisableTiming);
        if (e == cudaSuccess && g->timed)
            e = cudaEventCreate(&g->k0);
        if (e == cudaSuccess && g->timed)
            e = cudaEventCreate(&g->k1);
        if (e == cudaSuccess && g->probe)
            e = cudaEventCreate(&g->p0);
        if (e == cudaSuccess && g->probe)
            e = cudaEventCreate(&g->p1);
        if (e == cudaSuccess)
            e = cudaMalloc((void **)&g->d_err, sizeof(*g->d_err));
        if (e == cudaSuccess)
            e = cudaMallocHost((void **)&g->h_err, sizeof(*g->h_err));
        if (e == cudaSuccess)
            e = cudaMemset(g->d_err, 0xff, sizeof(*g->d_err));
        if (e == cudaSuccess)
            e = cudaHostAlloc((void **)&g->h_flag, sizeof(*g->h_flag), cudaHostAllocMapped);
        if (e == cudaSuccess) {
            *(volatile uint32_t *)g->h_flag = 0;
            e = cudaHostGetDevicePointer((void **)&g->d_flag, g->h_flag, 0);
        }
        if (e == cudaSuccess && g->flagged)
            e = cudaMalloc((void **)&g->d_count, sizeof(*g->d_count));
        if (e == cudaSuccess && g->flagged)
            e = cudaMemset(g->d_count, 0, sizeof(*g->d_count));
        if (e == cudaSuccess && g->flagged)
            e = cudaHostAlloc((void **)&g->h_done, sizeof(*g->h_done), cudaHostAllocMapped);
        if (e == cudaSuccess && g->flagged) {
            __atomic_store_n(g->h_done, 0u, __ATOMIC_RELAXED);
            e = cudaHostGetDevicePointer((void **)&g->d_done, g->h_done, 0);
        }
        if (e != cudaSuccess)
            rc = cuda_fail(e, "creating its stream, event and error word");
        leave(saved);
    }
    if (rc) {
        rf_dprog_destroy(g);
        return rc;
    }
    *out = g;
    return 0;
}

extern "C" void rf_dprog_destroy(struct rf_dprog *g)
{
    if (!g)
        return;
    int saved = -1;
    if (!enter(g->device, &saved)) {
        if (g->stream)
            (void)cudaStreamSynchronize(g->stream);
        cudaFree(g->d_tiles);
        free(g->ops);
        cudaFree(g->d_err);
        cudaFreeHost(g->h_err);
        cudaFreeHost(g->h_flag);
        cudaFree(g->d_count);
        cudaFreeHost(g->h_done);
        if (g->done)
            cudaEventDestroy(g->done);
        if (g->k0)
            cudaEventDestroy(g->k0);
        if (g->k1)
            cudaEventDestroy(g->k1);
        if (g->p0)
            cudaEventDestroy(g->p0);
        if (g->p1)
            cudaEventDestroy(g->p1);
        cudaFree(g->probe_a);
        cudaFree(g->probe_b);
        if (g->stream)
            cudaStreamDestroy(g->stream);
        leave(saved);
    }
    (void)cudaGetLastError();
    free(g);
}

extern "C" int rf_dprog_load(struct rf_dprog *g, const struct rf_dop *ops, size_t n,
                             const struct refit_fp8_params *p)
{
    int rule = REFIT_FP8_TRAINER;
    float floor = 0;
    int rc = rf_dprog_params(p, &rule, &floor);
    tiles_vec v = {nullptr, 0, 0};
    size_t first[RF_DPROG_PHASES + 1] = {0}, copies[RF_DPROG_PHASES] = {0};
    uint64_t read = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        rc = rf_dop_check(&ops[i], i);
        if (rc || !ops[i].rows || !ops[i].width)
            continue;
        read += ops[i].rows * ops[i].width * (ops[i].kind == RF_DOP_COPY ? 1 : 2);
        if (ops[i].kind == RF_DOP_FP8_F32)
            rc = refit_error_set(REFIT_ENOTSUP, "device program: operation %zu: fp32 quantization runs through "
                                 "the separate FP8 kernel", i);
        else if (i > UINT32_MAX || ops[i].rows > UINT32_MAX)
            rc = refit_error_set(REFIT_ERANGE, "device program: operation %zu: too large", i);
    }
    /* Each phase: its quantizations, then its copies (the operations of a
     * phase are independent: any order is theirs). */
    for (uint32_t ph = 0; !rc && ph < RF_DPROG_PHASES; ph++) {
        first[ph] = v.n;
        for (int copy = 0; !rc && copy < 2; copy++) {
            if (copy)
                copies[ph] = v.n;
            for (size_t i = 0; !rc && i < n; i++) {
                const rf_dop &o = ops[i];
                if (o.phase != ph || !o.rows || !o.width || (o.kind == RF_DOP_COPY) != copy)
                    continue;
                rc = copy ? cut_copy(&v, o, (uint32_t)i, g->tile_bytes) : cut_fp8(&v, o, (uint32_t)i);
            }
        }
    }
    first[RF_DPROG_PHASES] = v.n;
    int saved = -1;
    if (!rc)
        rc = enter(g->device, &saved);
    if (!rc) {
        cudaError_t e = cudaStreamSynchronize(g->stream);
        if (e == cudaSuccess) {
            cudaFree(g->d_tiles);
            g->d_tiles = nullptr;
            g->n_tiles = 0;
            if (v.n)
                e = cudaMalloc((void **)&g->d_tiles, v.n * sizeof(tile));
        }
        if (e == cudaSuccess && v.n)
            e = cudaMemcpy(g->d_tiles, v.t, v.n * sizeof(tile), cudaMemcpyHostToDevice);
        if (e != cudaSuccess)
            rc = cuda_fail(e, "uploading the tile table");
        leave(saved);
    }
    free(v.t);
    if (!rc && g->host) {
        rf_dop *c = (rf_dop *)malloc((n ? n : 1) * sizeof(*c));
        if (!c)
            rc = refit_error_set(REFIT_ENOMEM, "device program: %zu operations", n);
        else {
            memcpy(c, ops, n * sizeof(*c));
            free(g->ops);
            g->ops = c;
            g->n_ops = n;
            g->params = p ? *p : refit_fp8_params{REFIT_FP8_TRAINER, 0, REFIT_FP8_IMPL_AUTO};
        }
    }
    if (rc)
        return rc;
    g->n_tiles = v.n;
    g->read_bytes = read;
    memcpy(g->phase_first, first, sizeof(first));
    memcpy(g->copy_first, copies, sizeof(copies));
    g->rule = rule;
    g->floor = floor;
    return 0;
}

static void CUDART_CB host_run(void *arg)
{
    rf_dprog *g = (rf_dprog *)arg;
    size_t bad = 0;
    *g->h_err = kNoError;
    g->host_rc = rf_dprog_reference(g->ops, g->n_ops, &g->params, &bad);
    if (g->host_rc == REFIT_ENUMERIC) {
        *g->h_err = bad;
        *(volatile uint32_t *)g->h_flag = 1;
        g->host_rc = 0;
    }
    /* As the kernel's last CTA: everything above before the sequence
     * number (launch and wait alternate, so g->seq is this run's). */
    if (g->armed)
        __atomic_store_n(g->h_done, g->seq, __ATOMIC_RELEASE);
}

static double now_s()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A host step of a launch or wait ends (traced programs only). */
static void step(rf_dprog *g, const char *what)
{
    if (g->timed && g->n_steps < 8) {
        g->step_name[g->n_steps] = what;
        g->step_t[g->n_steps++] = now_s();
    }
}

/* Tiles [f, e): one launch (grids beyond 2^31 - 1 in pieces) of the copy
 * kernel when copy, else of the kernel that runs every kind; the last
 * piece carries sig (the others none). */
static cudaError_t launch_range(const rf_dprog *g, cudaStream_t s, size_t f, size_t e, int copy, done_sig sig)
{
    cudaError_t err = cudaSuccess;
    for (size_t at = f; err == cudaSuccess && at < e; at += 0x7fffffffu) {
        unsigned grid = e - at < 0x7fffffffu ? (unsigned)(e - at) : 0x7fffffffu;
        done_sig d = e - at > 0x7fffffffu ? done_sig{nullptr, nullptr, 0} : sig;
        if (copy)
            kCopyVariants[g->copy_variant]<<<g->ctas && g->ctas < grid ? g->ctas : grid, kThreads, 0, s>>>(
                g->d_tiles, at, grid, d);
        else if (g->rule == REFIT_FP8_DEEPGEMM)
            run_tiles<kRuleMul><<<grid, kThreads, 0, s>>>(g->d_tiles, at, g->floor, g->d_err, g->d_flag, d);
        else
            run_tiles<kRuleDiv><<<grid, kThreads, 0, s>>>(g->d_tiles, at, g->floor, g->d_err, g->d_flag, d);
        err = cudaGetLastError();
    }
    return err;
}

/* The launches of phase ph: none when empty; one (the copy kernel when it
 * has no FP8 block, else the kernel of every kind) unless split. */
static int phase_launches(const rf_dprog *g, int ph)
{
    int fp8 = g->copy_first[ph] > g->phase_first[ph], copies = g->phase_first[ph + 1] > g->copy_first[ph];
    return g->split ? fp8 + copies : (fp8 || copies);
}

/* One run's work on stream s: each phase's launches, the last of them
 * carrying sig (the launches of a stream run one after the other, so its
 * end is the run's).  Nothing else: the error word is read back only when
 * the kernel raised the flag.  *armed: whether sig was queued. */
static cudaError_t queue_run(const rf_dprog *g, cudaStream_t s, done_sig sig, int *armed)
{
    struct { size_t f, e; int copy; } r[2 * RF_DPROG_PHASES];
    int n = 0;
    for (int ph = 0; ph < RF_DPROG_PHASES; ph++) {
        size_t f = g->phase_first[ph], c = g->copy_first[ph], end = g->phase_first[ph + 1];
        if (g->split) {
            r[n++] = {f, c, 0};
            r[n++] = {c, end, 1};
        } else {
            r[n++] = {f, end, c == f};
        }
    }
    while (n > 0 && r[n - 1].f == r[n - 1].e) /* empty: launches nothing */
        n--;
    *armed = n > 0 && sig.word;
    cudaError_t e = cudaSuccess;
    for (int i = 0; e == cudaSuccess && i < n; i++)
        e = launch_range(g, s, r[i].f, r[i].e, r[i].copy, i == n - 1 ? sig : done_sig{nullptr, nullptr, 0});
    return e;
}

/* The next run's sequence number (0 is the word's initial value: skipped). */
static uint32_t next_seq(rf_dprog *g)
{
    if (++g->seq == 0)
        g->seq = 1;
    return g->seq;
}

/* REFIT_DPROG_PROBE: the probe's work on the program's stream, waited for
 * by polling its end event (the buffers of a copy probe grow with the
 * program, on the first run after a load). */
static cudaError_t run_probe(rf_dprog *g)
{
    cudaError_t e = cudaSuccess;
    if (g->probe == 2 && g->probe_cap < g->read_bytes) {
        cudaFree(g->probe_a);
        cudaFree(g->probe_b);
        g->probe_a = g->probe_b = nullptr;
        g->probe_cap = 0;
        e = cudaMalloc(&g->probe_a, g->read_bytes);
        if (e == cudaSuccess)
            e = cudaMalloc(&g->probe_b, g->read_bytes);
        if (e == cudaSuccess)
            g->probe_cap = g->read_bytes;
    }
    if (e == cudaSuccess)
        e = cudaEventRecord(g->p0, g->stream);
    if (e == cudaSuccess && g->probe == 2 && g->read_bytes)
        e = cudaMemcpyAsync(g->probe_b, g->probe_a, g->read_bytes, cudaMemcpyDeviceToDevice, g->stream);
    else if (e == cudaSuccess) {
        probe_kernel<<<1, 32, 0, g->stream>>>();
        e = cudaGetLastError();
    }
    if (e == cudaSuccess)
        e = cudaEventRecord(g->p1, g->stream);
    if (e == cudaSuccess)
        do
            e = cudaEventQuery(g->p1);
        while (e == cudaErrorNotReady);
    float ms = -1;
    if (e == cudaSuccess)
        e = cudaEventElapsedTime(&ms, g->p0, g->p1);
    g->probe_ms = ms;
    step(g, "probe");
    return e;
}

extern "C" int rf_dprog_launch(struct rf_dprog *g)
{
    int saved = -1, rc = enter(g->device, &saved);
    if (rc)
        return rc;
    cudaError_t e = cudaSuccess;
    g->armed = 0;
    if (g->host) {
        if (g->flagged) {
            next_seq(g);
            g->armed = 1;
        }
        e = cudaLaunchHostFunc(g->stream, host_run, g);
        if (e == cudaSuccess)
            e = cudaEventRecord(g->done, g->stream);
        leave(saved);
        if (e != cudaSuccess)
            return cuda_fail(e, "queueing the host reference");
        g->launched = 1;
        return 0;
    }
    g->n_steps = 0;
    step(g, "enter");
    if (g->probe)
        e = run_probe(g);
    if (e == cudaSuccess && g->timed)
        e = cudaEventRecord(g->k0, g->stream);
    step(g, "event");
    done_sig sig = {nullptr, nullptr, 0};
    if (g->flagged)
        sig = {g->d_count, g->d_done, next_seq(g)};
    if (e == cudaSuccess)
        e = queue_run(g, g->stream, sig, &g->armed);
    step(g, "queue");
    if (e == cudaSuccess && g->timed)
        e = cudaEventRecord(g->k1, g->stream);
    if (e == cudaSuccess)
        e = cudaEventRecord(g->done, g->stream);
    step(g, "events");
    leave(saved);
    if (e != cudaSuccess)
        return cuda_fail(e, "launching");
    g->launched = 1;
    return 0;
}

/* Traced programs: the host sees the kernels start (the start event
 * completes), so that the trace splits the wait into the launch's latency
 * on the device (a context switch from the trainer's process, among
 * others) and the kernels' end to the host seeing it. */
static void poll_started(rf_dprog *g)
{
    if (!g->timed)
        return;
    double end = now_s() + 0.1;
    while (cudaEventQuery(g->k0) == cudaErrorNotReady && now_s() < end)
        ;
    (void)cudaGetLastError();
    step(g, "started");
}

/* REFIT_DPROG_FLAG=1: the host-mapped word polled for up to spin_s until
 * it holds this run's sequence number (an older run's number, or 0, is
 * not it).  1 when seen; 0 after the budget: the event decides (a kernel
 * that failed never writes the word, and its error is the event's). */
static int poll_word(const rf_dprog *g)
{
    double end = now_s() + g->spin_s;
    for (unsigned i = 0;; i++) {
        if (__atomic_load_n(g->h_done, __ATOMIC_ACQUIRE) == g->seq)
            return 1;
        if ((i & 255) == 255 && now_s() > end)
            return 0;
    }
}

/* The event: polled for up to spin_s, then waited on (blocking).  With the
 * flag the word is polled instead (*flag_seen: it came), and the event is
 * waited on only when the word did not come within the budget. */
static cudaError_t poll_done(rf_dprog *g, int *flag_seen)
{
    poll_started(g);
    *flag_seen = 0;
    if (g->armed && g->spin_s > 0 && poll_word(g)) {
        *flag_seen = 1;
        return cudaSuccess;
    }
    if (g->spin_s > 0 && !g->armed) {
        double end = now_s() + g->spin_s;
        for (unsigned i = 0;; i++) {
            cudaError_t e = cudaEventQuery(g->done);
            if (e != cudaErrorNotReady)
                return e;
            if ((i & 63) == 63 && now_s() > end)
                break;
        }
        (void)cudaGetLastError(); /* NotReady is no error */
    }
    return cudaEventSynchronize(g->done);
}

/* The error word after the kernel raised the flag: read back and reset
 * (rare: a NaN or Inf in a quantized block). */
static int read_error(rf_dprog *g)
{
    int saved = -1, rc = enter(g->device, &saved);
    if (rc)
        return rc;
    cudaError_t e = cudaMemcpy(g->h_err, g->d_err, sizeof(*g->d_err), cudaMemcpyDeviceToHost);
    if (e == cudaSuccess)
        e = cudaMemset(g->d_err, 0xff, sizeof(*g->d_err));
    leave(saved);
    return e == cudaSuccess ? 0 : cuda_fail(e, "reading the error word back");
}

extern "C" int rf_dprog_wait(struct rf_dprog *g, size_t *bad)
{
    if (!g->launched)
        return 0;
    g->launched = 0;
    step(g, "launch-returned");
    int flag_seen = 0;
    cudaError_t e = poll_done(g, &flag_seen);
    step(g, flag_seen ? "flag-seen" : "event-sync");
    if (e != cudaSuccess)
        return cuda_fail(e, "waiting for the copies");
    if (g->host && g->host_rc)
        return refit_error_set(g->host_rc, "device program (host reference): %s", "failed");
    if (!*(volatile uint32_t *)g->h_flag)
        return 0;
    int rc = g->host ? 0 : read_error(g);
    *(volatile uint32_t *)g->h_flag = 0;
    if (rc)
        return rc;
    if (bad)
        *bad = (size_t)*g->h_err;
    return refit_error_set(REFIT_ENUMERIC, "NaN or Inf in quantized operation %llu", *g->h_err);
}

extern "C" size_t rf_dprog_tiles(const struct rf_dprog *g)
{
    return g->n_tiles;
}

extern "C" int rf_dprog_launches(const struct rf_dprog *g)
{
    int n = 0;
    for (int ph = 0; ph < RF_DPROG_PHASES; ph++)
        n += phase_launches(g, ph);
    return n;
}

extern "C" int rf_dprog_steps(const struct rf_dprog *g, char *buf, size_t cap)
{
    int k = 0;
    if (cap)
        buf[0] = 0;
    for (int i = 1; i < g->n_steps && k >= 0 && (size_t)k < cap; i++)
        k += snprintf(buf + k, cap - (size_t)k, "%s%s %.3f", i > 1 ? " " : "", g->step_name[i],
                      1e3 * (g->step_t[i] - g->step_t[i - 1]));
    if (g->probe && k >= 0 && (size_t)k < cap)
        snprintf(buf + k, cap - (size_t)k, " probe-%s-on-device %.3f", g->probe == 2 ? "copy" : "kernel",
                 g->probe_ms);
    return 0;
}

extern "C" double rf_dprog_last_ms(const struct rf_dprog *g)
{
    float ms = 0;
    /* After a wait that saw the flag the last CTA may still be ending: the
     * stop event is waited for here (traced programs only). */
    if (!g->timed || g->host || cudaEventSynchronize(g->k1) != cudaSuccess ||
        cudaEventElapsedTime(&ms, g->k0, g->k1) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    return ms;
}
