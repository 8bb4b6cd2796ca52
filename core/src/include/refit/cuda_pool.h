/* refit/cuda_pool.h — device memory from refit's own pool of plain
 * cudaMalloc slabs, for tensors that a transport registers with the network
 * (docs/cuda.md: "GPU buffers for the network").
 *
 * Why a pool: RDMA registration (ibv_reg_mr through nvidia-peermem or a
 * dma-buf) and CUDA IPC handles are taken on a virtual range backed by
 * physical pages that must stay put.  cudaMalloc memory never moves, so a
 * slab can be registered once and carved up; memory from a virtual-memory
 * allocator (cuMemCreate + cuMemMap, PyTorch's expandable_segments:True)
 * may be remapped under a registration and is refused by
 * cudaIpcGetMemHandle.  Allocations come from slabs of at least 256 MiB
 * (larger requests get a slab of their own), 256-byte aligned.
 *
 * The pool serves the current CUDA device of the calling thread; each
 * device has its own slabs.  Thread-safe.  Every function exists in every
 * build; without CUDA they return REFIT_ENOTSUP. */
#ifndef REFIT_CUDA_POOL_H
#define REFIT_CUDA_POOL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* `bytes` (> 0) of device memory on the current device; *out is set only
 * on success and freed with refit_cuda_free().  The memory is not
 * cleared. */
int refit_cuda_alloc(size_t bytes, void **out);
/* Return memory from refit_cuda_alloc (NULL is ignored; a pointer the pool
 * did not hand out is REFIT_EINVAL).  Slabs stay allocated (and registered)
 * until refit_cuda_pool_trim(). */
int refit_cuda_free(void *p);

struct refit_cuda_pool_stats {
    size_t size;        /* set by the caller: sizeof(struct refit_cuda_pool_stats) */
    size_t slabs;       /* cudaMalloc'ed slabs held, all devices */
    size_t slab_bytes;  /* their total size */
    size_t used_bytes;  /* handed out and not freed (rounded up to 256) */
    size_t allocations; /* live allocations */
};
int refit_cuda_pool_stats(struct refit_cuda_pool_stats *out);
/* cudaFree every slab with no live allocation.  Returns how many were
 * freed (>= 0) or an error. */
int refit_cuda_pool_trim(void);

#ifdef __cplusplus
}
#endif
#endif
