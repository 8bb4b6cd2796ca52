/* fp8.cu — FP8 (e4m3fn) 128x128 block quantization on a CUDA device, the
 * same bytes as the CPU path (fp8.c, fp8_impl.h).
 *
 * One CTA per 128x128 block, one pass over the input: the CTA's 256
 * threads load the whole block into registers (eight 16-byte loads each,
 * all issued before the first use), reduce |x| to the block's amax,
 * compute the scale exactly as fp8.c does, then cast from the registers
 * and store 8 bytes per thread and vector.  Each input byte is read once
 * and each output byte written once; with 8 CTAs resident per SM the
 * reduction of one CTA overlaps the loads of the others.
 *
 * Exactness: every floating-point step is an explicit IEEE round-to-
 * nearest-even intrinsic (__fdiv_rn, __fmul_rn, __fadd_rn) and the file is
 * built with -fmad=false, so no contraction or approximate division can
 * change a last bit; the e4m3 cast is the integer procedure of
 * rf_e4m3_branchless() (fp8_impl.h). */
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "refit/fp8.h"
#include "refit/fp8_cuda.h"
#include "refit/status.h"

extern "C" int rf_fp8_params_check(const struct refit_fp8_params *p, int *rule, float *floor);

#include "fp8_dev.cuh"

namespace {

constexpr unsigned long long kNoError = ~0ull;
/* Error key: call sequence number (since the last sync) in the top bits,
 * then the element's linear index (row * cols + col), then 1 for Inf / 0
 * for NaN; atomicMin keeps the first call's first element. */
constexpr int kPosBits = 40;
constexpr uint32_t kMaxSeq = 1u << 22;

/* CTAs per SM the bf16 kernels are register-capped for (see the kernel). */
#ifndef RF_FP8_CUDA_MINB
#define RF_FP8_CUDA_MINB 4
#endif
/* The trainer rule's IEEE division (an inline fast path plus a slow-path
 * subroutine) spills at 64 registers: 3 CTAs per SM, 80 registers. */
#ifndef RF_FP8_CUDA_MINB_DIV
#define RF_FP8_CUDA_MINB_DIV 3
#endif

struct launch_args {
    const void *src;
    uint8_t *dst;
    float *scales;
    unsigned long long *err;
    unsigned long long seq_key; /* seq << (kPosBits + 1) */
    size_t rows, cols, stride;
    unsigned ncb;               /* column blocks */
    float floor;
    bool vec_in, vec_out;
};

/* A block held NaN or Inf: thread t scans the elements it loaded and the
 * block's smallest (row, col) goes to a.err by atomicMin (the caller's
 * sync picks the first over all blocks and calls). */
template <bool BF16>
__device__ __noinline__ void report_nonfinite(const void *src, size_t stride, size_t cols,
                                              unsigned long long seq_key,
                                              unsigned long long *err, size_t r0, size_t c0,
                                              int nr, int nc)
{
    unsigned long long best = kNoError;
    for (int i = threadIdx.x; i < nr * nc; i += kThreads) {
        const int r = i / nc, c = i % nc;
        const size_t off = (r0 + r) * stride + c0 + c;
        uint32_t v = BF16 ? (uint32_t)((const uint16_t *)src)[off] << 16
                          : __float_as_uint(((const float *)src)[off]);
        v &= 0x7fffffffu;
        if (v >= 0x7f800000u) {
            unsigned long long key = seq_key | ((r0 + r) * cols + c0 + c) << 1 |
                                     (v == 0x7f800000u);
            best = key < best ? key : best;
        }
    }
    if (best != kNoError)
        atomicMin(err, best);
}

/* Scale, cast and store the items a thread loaded: 8 bytes a store. */
template <bool BF16, int RULE>
__device__ __forceinline__ void quant_store(const launch_args &a,
                                            const uint32_t (&x)[kItems][item_words<BF16>::n],
                                            float s, float inv, size_t r0, size_t c0, int nr,
                                            int nc, bool full)
{
    constexpr int kRowsPerItem = kThreads / kVecPerRow;
    const int tr = threadIdx.x / kVecPerRow, tc = (threadIdx.x % kVecPerRow) * kVec;
    uint8_t *dp = a.dst + (r0 + tr) * a.cols + c0 + tc;
    const size_t dstep = a.cols * kRowsPerItem;
#pragma unroll
    for (int i = 0; i < kItems; i++) {
        const int r = i * kRowsPerItem + tr;
        if (!full && (r >= nr || tc >= nc))
            continue;
        uint32_t h[kVec / 2];
#pragma unroll
        for (int k = 0; k < kVec; k += 2)
            h[k / 2] = e4m3x2(scale1<RULE>(elem<BF16>(x[i], k), s, inv),
                              scale1<RULE>(elem<BF16>(x[i], k + 1), s, inv));
        uint8_t *d = dp + i * dstep;
        if (full || (a.vec_out && nc - tc >= kVec)) {
            *(uint2 *)d = make_uint2(h[0] | h[1] << 16, h[2] | h[3] << 16);
        } else {
#pragma unroll
            for (int k = 0; k < kVec; k++)
                if (tc + k < nc)
                    d[k] = (uint8_t)(h[k / 2] >> (8 * (k & 1)));
        }
    }
}

/* Register cap: 4 CTAs of 256 threads per SM for bf16 (64 registers;
 * 128 KB of loads in flight per SM), 2 for fp32 whose block is twice the
 * bytes. */
template <bool BF16, int RULE>
__global__ void __launch_bounds__(kThreads, BF16 ? (RULE == kRuleDiv ? RF_FP8_CUDA_MINB_DIV : RF_FP8_CUDA_MINB) : 2) quant_kernel(const launch_args a)
{
    __shared__ uint32_t warp_max[kThreads / 32];
    const unsigned br = blockIdx.x / a.ncb, bc = blockIdx.x % a.ncb;
    const size_t r0 = (size_t)br * kB, c0 = (size_t)bc * kB;
    const int nr = a.rows - r0 < (size_t)kB ? (int)(a.rows - r0) : kB;
    const int nc = a.cols - c0 < (size_t)kB ? (int)(a.cols - c0) : kB;
    const int t = threadIdx.x;

    /* Item i of thread t is vector t % 16 of row i * 16 + t / 16: a warp
     * reads two whole 256-byte rows (bf16) per item, fully coalesced.  The
     * item addresses are one base plus a constant step. */
    constexpr int kRowsPerItem = kThreads / kVecPerRow;
    constexpr size_t kEsz = BF16 ? 2 : 4;
    const int tr = t / kVecPerRow, tc = (t % kVecPerRow) * kVec;
    const char *sp = (const char *)a.src + ((r0 + tr) * a.stride + c0 + tc) * kEsz;
    const size_t sstep = a.stride * kEsz * kRowsPerItem;
    const bool full = a.vec_in && a.vec_out && nr == kB && nc == kB;
    uint32_t x[kItems][item_words<BF16>::n];
    if (full) {
        /* Interior block, aligned: no bounds checks. */
#pragma unroll
        for (int i = 0; i < kItems; i++)
            load_item<BF16>(sp + i * sstep, kVec, true, x[i]);
    } else {
#pragma unroll
        for (int i = 0; i < kItems; i++) {
            const int r = i * kRowsPerItem + tr;
            const int n = r < nr ? (nc - tc < kVec ? (nc - tc > 0 ? nc - tc : 0) : kVec) : 0;
            load_item<BF16>(sp + i * sstep, n, a.vec_in, x[i]);
        }
    }
    const uint32_t m = block_amax<BF16>(x, t, warp_max);
    if (m >= 0x7f800000u) {
        /* x is dead from here: the cold path re-reads the block, so that
         * it costs the hot path no registers. */
        report_nonfinite<BF16>(a.src, a.stride, a.cols, a.seq_key, a.err, r0, c0, nr, nc);
        return;
    }

    /* The scale, in fp32 as fp8.c's block_scale computes it. */
    const float amax = __uint_as_float(m);
    float s, inv = 0.0f;
    if (RULE == kRuleDiv) {
        const float q = __fdiv_rn(amax, kE4m3Max);
        s = q < a.floor ? a.floor : q;
    } else {
        const float q = amax < a.floor ? a.floor : amax;
        s = __fdiv_rn(q, kE4m3Max);
        inv = __fdiv_rn(1.0f, s);
    }
    if (t == 0)
        a.scales[(size_t)br * a.ncb + bc] = s;

    quant_store<BF16, RULE>(a, x, s, inv, r0, c0, nr, nc, full);
}

int cuda_fail(cudaError_t e, const char *what)
{
    return refit_error_set(REFIT_EIO, "fp8 cuda: %s: %s (%s)", what, cudaGetErrorName(e),
                           cudaGetErrorString(e));
}

/* Device, managed or mapped pinned memory is reachable by the kernel;
 * plain pageable host memory is not. */
int check_device_ptr(const void *p, const char *what)
{
    cudaPointerAttributes at;
    cudaError_t e = cudaPointerGetAttributes(&at, p);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return cuda_fail(e, what);
    }
    if (at.type == cudaMemoryTypeUnregistered)
        return refit_error_set(REFIT_EINVAL, "fp8 cuda: %s %p is not device memory", what, p);
    return 0;
}

} // namespace

struct refit_fp8_cuda {
    cudaStream_t stream;
    unsigned long long *d_err, *h_err;
    uint32_t seq;      /* quantizations enqueued since the last sync */
    size_t *cols;      /* their column counts, to turn an index into (row, col) */
    size_t cols_cap;
};

extern "C" int refit_cuda_built(void)
{
    return 1;
}

extern "C" int refit_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* no driver or no device: not sticky */
        return 0;
    }
    return n;
}

extern "C" int refit_fp8_cuda_create(void *stream, struct refit_fp8_cuda **out)
{
    if (!out)
        return refit_error_set(REFIT_EINVAL, "fp8 cuda: NULL out");
    struct refit_fp8_cuda *q = (struct refit_fp8_cuda *)calloc(1, sizeof(*q));
    if (!q)
        return refit_error_set(REFIT_ENOMEM, "fp8 cuda: quantizer");
    q->stream = (cudaStream_t)stream;
    cudaError_t e = cudaMalloc((void **)&q->d_err, sizeof(*q->d_err));
    if (e == cudaSuccess)
        e = cudaMallocHost((void **)&q->h_err, sizeof(*q->h_err));
    if (e == cudaSuccess)
        e = cudaMemsetAsync(q->d_err, 0xff, sizeof(*q->d_err), q->stream);
    if (e != cudaSuccess) {
        int rc = cuda_fail(e, "creating the quantizer");
        refit_fp8_cuda_destroy(q);
        return rc;
    }
    *out = q;
    return 0;
}

extern "C" void refit_fp8_cuda_destroy(struct refit_fp8_cuda *q)
{
    if (!q)
        return;
    (void)cudaStreamSynchronize(q->stream);
    cudaFree(q->d_err);
    cudaFreeHost(q->h_err);
    (void)cudaGetLastError();
    free(q->cols);
    free(q);
}

static int enqueue(struct refit_fp8_cuda *q, bool bf16, const void *src, size_t rows, size_t cols,
                   size_t stride, void *dst, float *scales, const struct refit_fp8_params *p)
{
    int rule;
    float floor;
    if (!q)
        return refit_error_set(REFIT_EINVAL, "fp8 cuda: NULL quantizer");
    int rc = rf_fp8_params_check(p, &rule, &floor);
    if (rc)
        return rc;
    if (stride < cols)
        return refit_error_set(REFIT_EINVAL, "fp8: row stride %zu is less than %zu columns",
                               stride, cols);
    if (!rows || !cols)
        return 0;
    if (!src || !dst || !scales)
        return refit_error_set(REFIT_EINVAL, "fp8: NULL buffer");
    const size_t esz = bf16 ? 2 : 4;
    if ((uintptr_t)src % esz)
        return refit_error_set(REFIT_EINVAL, "fp8 cuda: src %p is not aligned to %zu bytes", src,
                               esz);
    const size_t nrb = (rows + kB - 1) / kB, ncb = (cols + kB - 1) / kB;
    if (nrb * ncb > 0x7fffffffu || rows > ((size_t)1 << kPosBits) / cols)
        return refit_error_set(REFIT_ERANGE, "fp8 cuda: %zu x %zu is too large", rows, cols);
    if ((rc = check_device_ptr(src, "src")) || (rc = check_device_ptr(dst, "dst")) ||
        (rc = check_device_ptr(scales, "scales")))
        return rc;
    if (q->seq == kMaxSeq && (rc = refit_fp8_cuda_sync(q)))
        return refit_error_push(rc, "fp8 cuda: implicit sync after %u quantizations", kMaxSeq);
    if (q->seq == q->cols_cap) {
        size_t cap = q->cols_cap ? 2 * q->cols_cap : 64;
        size_t *nc = (size_t *)realloc(q->cols, cap * sizeof(*nc));
        if (!nc)
            return refit_error_set(REFIT_ENOMEM, "fp8 cuda: call log");
        q->cols = nc;
        q->cols_cap = cap;
    }
    launch_args a;
    a.src = src;
    a.dst = (uint8_t *)dst;
    a.scales = scales;
    a.err = q->d_err;
    a.seq_key = (unsigned long long)q->seq << (kPosBits + 1);
    a.rows = rows;
    a.cols = cols;
    a.stride = stride;
    a.ncb = (unsigned)ncb;
    a.floor = floor;
    /* 16-byte loads need every row start 16-byte aligned; 8-byte stores
     * likewise for the output rows. */
    a.vec_in = (uintptr_t)src % 16 == 0 && (stride * esz) % 16 == 0;
    a.vec_out = (uintptr_t)dst % 8 == 0 && cols % 8 == 0;
    dim3 grid((unsigned)(nrb * ncb)), block(kThreads);
    if (bf16) {
        if (rule == REFIT_FP8_DEEPGEMM)
            quant_kernel<true, kRuleMul><<<grid, block, 0, q->stream>>>(a);
        else
            quant_kernel<true, kRuleDiv><<<grid, block, 0, q->stream>>>(a);
    } else {
        if (rule == REFIT_FP8_DEEPGEMM)
            quant_kernel<false, kRuleMul><<<grid, block, 0, q->stream>>>(a);
        else
            quant_kernel<false, kRuleDiv><<<grid, block, 0, q->stream>>>(a);
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return cuda_fail(e, "launching the quantization kernel");
    q->cols[q->seq++] = cols;
    return 0;
}

extern "C" int refit_fp8_cuda_quantize_bf16(struct refit_fp8_cuda *q, const void *src, size_t rows,
                                            size_t cols, size_t stride, void *dst, float *scales,
                                            const struct refit_fp8_params *p)
{
    return enqueue(q, true, src, rows, cols, stride, dst, scales, p);
}

extern "C" int refit_fp8_cuda_quantize_f32(struct refit_fp8_cuda *q, const void *src, size_t rows,
                                           size_t cols, size_t stride, void *dst, float *scales,
                                           const struct refit_fp8_params *p)
{
    return enqueue(q, false, src, rows, cols, stride, dst, scales, p);
}

extern "C" int refit_fp8_cuda_sync(struct refit_fp8_cuda *q)
{
    if (!q)
        return refit_error_set(REFIT_EINVAL, "fp8 cuda: NULL quantizer");
    uint32_t n = q->seq;
    q->seq = 0;
    cudaError_t e = cudaMemcpyAsync(q->h_err, q->d_err, sizeof(*q->h_err), cudaMemcpyDeviceToHost,
                                    q->stream);
    if (e == cudaSuccess)
        e = cudaMemsetAsync(q->d_err, 0xff, sizeof(*q->d_err), q->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(q->stream);
    if (e != cudaSuccess)
        return cuda_fail(e, "waiting for the stream");
    unsigned long long k = *q->h_err;
    if (k == kNoError)
        return 0;
    uint32_t seq = (uint32_t)(k >> (kPosBits + 1));
    unsigned long long pos = (k >> 1) & ((1ull << kPosBits) - 1);
    size_t cols = seq < n ? q->cols[seq] : 1;
    return refit_error_set(REFIT_ENUMERIC, "%s at row %llu, column %llu (quantization %u of %u "
                           "since the last sync)", (k & 1) ? "Inf" : "NaN", pos / cols,
                           pos % cols, seq + 1, n);
}
