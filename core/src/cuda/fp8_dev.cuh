// fp8_dev.cuh — the device side of FP8 (e4m3fn) 128x128 block
// quantization shared by fp8.cu (the quantization kernel) and dprog.cu (the
// colocated copy program, which quantizes while it copies): constants, the
// e4m3 casts, the two scale rules and the 8-element item loads.  Every
// floating-point step is an explicit IEEE round-to-nearest-even intrinsic
// (the files are built with -fmad=false), so both kernels give the CPU
// path's bytes (fp8.c, fp8_impl.h).  Internal linkage: each file gets its
// own copy.
#ifndef RF_FP8_DEV_CUH
#define RF_FP8_DEV_CUH

#include <stdint.h>

#include "refit/fp8.h"

namespace {

constexpr int kB = REFIT_FP8_BLOCK;               /* block edge */
constexpr int kThreads = 256;                     /* per CTA */
constexpr int kVec = 8;                           /* elements per thread and item */
constexpr int kVecPerRow = kB / kVec;             /* 16 */
constexpr int kItems = kB * kVecPerRow / kThreads; /* 8 items per thread */
constexpr float kE4m3Max = 448.0f;

enum { kRuleDiv = 0, kRuleMul = 1 };

/* Hardware e4m3 conversion where the GPU has it (see e4m3x2); 0 uses the
 * integer cast everywhere (for comparison: docs/cuda.md). */
#ifndef RF_FP8_CUDA_HWCVT
#define RF_FP8_CUDA_HWCVT 1
#endif

#if RF_FP8_CUDA_HWCVT && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define RF_FP8_CUDA_HW_E4M3 1
#else
#define RF_FP8_CUDA_HW_E4M3 0
#endif

#if !RF_FP8_CUDA_HW_E4M3
constexpr uint32_t kNanBits = 0x43f00000u;      /* 480: rounds to the NaN code */
constexpr uint32_t kMinNormalBits = 121u << 23; /* 2^-6 */
constexpr uint32_t kSubMagicBits = 141u << 23;  /* 2^14 */

/* fp8_impl.h's rf_e4m3_branchless, on the device. */
__device__ __forceinline__ uint32_t e4m3(float v)
{
    uint32_t b = __float_as_uint(v), sign = (b >> 24) & 0x80u, a = b & 0x7fffffffu;
    a = a < kNanBits ? a : kNanBits;
    uint32_t nrm = (a + (0x7ffffu - (120u << 23)) + ((a >> 20) & 1u)) >> 20;
    uint32_t sub = __float_as_uint(__fadd_rn(__uint_as_float(a), __uint_as_float(kSubMagicBits))) -
                   kSubMagicBits;
    return ((a < kMinNormalBits ? sub : nrm) | sign) & 0xffu;
}
#endif

/* Two e4m3 codes (v0 in the low byte).  On sm_89 and later one
 * cvt.rn.satfinite.e4m3x2.f32 does it: it rounds to nearest even like
 * PyTorch, and differs from PyTorch only above 464 (saturating to 448
 * instead of NaN), which no input of either rule reaches: the trainer
 * clamps to +-448 and deepgemm's |x * (1/s)| stays below 448 * (1 + 2^-22)
 * (docs/fp8.md).  The tests compare with the CPU path on every bf16 value. */
__device__ __forceinline__ uint32_t e4m3x2(float v0, float v1)
{
#if RF_FP8_CUDA_HW_E4M3
    unsigned short r;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(v1), "f"(v0));
    return r;
#else
    return e4m3(v0) | e4m3(v1) << 8;
#endif
}

/* x * (1/s) (deepgemm), or x / s clamped to +-448 (trainer): one IEEE
 * operation each, rounded to nearest even as on the CPU. */
template <int RULE>
__device__ __forceinline__ float scale1(uint32_t bits, float s, float inv)
{
    float x = __uint_as_float(bits);
    if (RULE == kRuleMul)
        return __fmul_rn(x, inv);
    float y = __fdiv_rn(x, s);
#if !RF_FP8_CUDA_HW_E4M3
    /* (the saturating cvt of e4m3x2 clamps by itself) */
    y = y < -kE4m3Max ? -kE4m3Max : (y > kE4m3Max ? kE4m3Max : y);
#endif
    return y;
}

/* One item: 8 consecutive elements of a row, kept as loaded (bf16: 4
 * words of two elements each, so the block costs 32 registers a thread;
 * fp32: 8 words).  Missing elements (edge blocks) read as 0. */
template <bool BF16> struct item_words { static constexpr int n = BF16 ? 4 : 8; };

template <bool BF16>
__device__ __forceinline__ void load_item(const char *src, int n, bool vec,
                                          uint32_t (&x)[item_words<BF16>::n])
{
    if (BF16) {
        const uint16_t *p = (const uint16_t *)src;
        if (vec && n == kVec) {
            uint4 u = __ldg((const uint4 *)p);
            x[0] = u.x; x[1] = u.y; x[2] = u.z; x[3] = u.w;
        } else {
#pragma unroll
            for (int k = 0; k < kVec; k += 2)
                x[k / 2] = (k < n ? (uint32_t)__ldg(p + k) : 0u) |
                           (k + 1 < n ? (uint32_t)__ldg(p + k + 1) << 16 : 0u);
        }
    } else {
        const float *p = (const float *)src;
        if (vec && n == kVec) {
            float4 a = __ldg((const float4 *)p), b = __ldg((const float4 *)p + 1);
            x[0] = __float_as_uint(a.x); x[1] = __float_as_uint(a.y);
            x[2] = __float_as_uint(a.z); x[3] = __float_as_uint(a.w);
            x[4] = __float_as_uint(b.x); x[5] = __float_as_uint(b.y);
            x[6] = __float_as_uint(b.z); x[7] = __float_as_uint(b.w);
        } else {
#pragma unroll
            for (int k = 0; k < kVec; k++)
                x[k] = k < n ? __float_as_uint(__ldg(p + k)) : 0u;
        }
    }
}

/* Element k of an item as fp32 bits: bf16 widens exactly by a shift. */
template <bool BF16>
__device__ __forceinline__ uint32_t elem(const uint32_t (&x)[item_words<BF16>::n], int k)
{
    if (BF16)
        return (k & 1) ? (x[k / 2] & 0xffff0000u) : (x[k / 2] << 16);
    return x[k];
}

/* The block's amax as fp32 magnitude bits, in every thread of the CTA:
 * the thread's items, its warp (shuffles), then the warps (warp_max:
 * kThreads / 32 words of shared memory).  Magnitude bit patterns order
 * like their values; >= 0x7f800000 is Inf or NaN.  Zero padding never
 * raises the max. */
template <bool BF16>
__device__ __forceinline__ uint32_t block_amax(const uint32_t (&x)[kItems][item_words<BF16>::n], int th,
                                               uint32_t *warp_max)
{
    uint32_t m = 0;
#pragma unroll
    for (int i = 0; i < kItems; i++)
#pragma unroll
        for (int k = 0; k < kVec; k++)
            m = max(m, elem<BF16>(x[i], k) & 0x7fffffffu);
#pragma unroll
    for (int o = 16; o; o >>= 1)
        m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((th & 31) == 0)
        warp_max[th >> 5] = m;
    __syncthreads();
#pragma unroll
    for (int w = 0; w < kThreads / 32; w++)
        m = max(m, warp_max[w]);
    return m;
}

} // namespace

#endif
