/* emu.h — the part of CUDA that core/src/cuda/delta.cu uses, on the CPU,
 * so that its kernels' bytes can be checked where no GPU is lent (see
 * run.sh).  A launch runs its CTAs one after another, each as blockDim
 * std::threads: __syncthreads is a barrier of the CTA, a warp shuffle an
 * exchange through a per-warp buffer between two barriers of the warp
 * (every lane of the code checked here reaches each shuffle), atomics are
 * the compiler's, __shared__ variables are statics (one CTA at a time),
 * device memory is host memory.  Bytes only: nothing here says anything
 * about speed, and a race the GPU would show may not show here. */
#pragma once
#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)
struct uint4 { uint32_t x, y, z, w; };
struct uint2 { uint32_t x, y; };
inline uint2 make_uint2(uint32_t a, uint32_t b) { return uint2{a, b}; }
struct emu_dim { unsigned x, y, z; };
extern thread_local emu_dim threadIdx, blockIdx;
extern emu_dim blockDim, gridDim;
struct emu_cta {
    std::unique_ptr<std::barrier<>> all;
    std::vector<std::unique_ptr<std::barrier<>>> warp;
    uint64_t xbuf[32][32];
    int orbuf[1024];
};
extern emu_cta *emu_cur;
inline void __syncthreads() { emu_cur->all->arrive_and_wait(); }
inline int __syncthreads_or(int v)
{
    emu_cur->orbuf[threadIdx.x] = v;
    __syncthreads();
    int r = 0;
    for (unsigned i = 0; i < blockDim.x; i++) r |= emu_cur->orbuf[i];
    __syncthreads();
    return r;
}
template <typename T> inline T emu_xchg(T v, unsigned src)
{
    unsigned w = threadIdx.x / 32, l = threadIdx.x % 32;
    emu_cur->xbuf[w][l] = (uint64_t)v;
    emu_cur->warp[w]->arrive_and_wait();
    T r = (T)emu_cur->xbuf[w][src];
    emu_cur->warp[w]->arrive_and_wait();
    return r;
}
template <typename T> inline T __shfl_xor_sync(unsigned, T v, int m, int width = 32)
{
    unsigned l = threadIdx.x % 32;
    unsigned src = l ^ (unsigned)m;
    if (src / width != l / width) src = l;
    return emu_xchg(v, src);
}
template <typename T> inline T __shfl_up_sync(unsigned, T v, unsigned d, int width = 32)
{
    unsigned l = threadIdx.x % 32;
    unsigned src = (l % width) >= d ? l - d : l;
    return emu_xchg(v, src);
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v)
{
    unsigned long long o = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v < o && !__atomic_compare_exchange_n(p, &o, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return o;
}
inline int atomicMax(int *p, int v)
{
    int o = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v > o && !__atomic_compare_exchange_n(p, &o, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return o;
}
template <typename T> inline T __ldg(const T *p) { return *p; }
template <typename T> inline T __ldcs(const T *p) { return *p; }
// runtime
typedef int cudaError_t;
typedef void *cudaStream_t;
enum { cudaSuccess = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
inline cudaError_t cudaMalloc(void **p, size_t n) { *p = aligned_alloc(256, (n + 255) / 256 * 256); return *p ? 0 : 2; }
inline cudaError_t cudaMallocHost(void **p, size_t n) { return cudaMalloc(p, n); }
inline cudaError_t cudaFree(void *p) { free(p); return 0; }
inline cudaError_t cudaFreeHost(void *p) { free(p); return 0; }
inline cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t) { memset(p, v, n); return 0; }
inline cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, int, cudaStream_t) { memcpy(d, s, n); return 0; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return 0; }
inline cudaError_t cudaGetLastError() { return 0; }
inline const char *cudaGetErrorName(cudaError_t) { return "emu"; }
inline const char *cudaGetErrorString(cudaError_t) { return "emu"; }
void emu_launch(unsigned grid, unsigned block, std::function<void()> f);
