/* tmem.h — the buffers of the transport tests and of tp_peer: host memory
 * (mmap), or device memory (cudaMalloc) when the run moves GPU memory
 * (REFIT_TP_MEMTYPE=cuda, set by the run or by test_transport once the
 * transport's caps say it reaches only CUDA memory).  Patterns are filled
 * and checked through host copies in chunks.  Without REFIT_TEST_HAVE_CUDA
 * (meson found no CUDA) only host memory exists. */
#ifndef TP_TMEM_H
#define TP_TMEM_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "pattern.h"
#include "refit/transport.h"

#ifdef REFIT_TEST_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#define TM_CHUNK (64ull << 20) /* host staging per copy */

static int tm_cuda; /* this process uses device memory */
static int tm_dev;  /* and this device */
static char tm_err[512];

static inline int tm_want_cuda(void)
{
    const char *m = getenv("REFIT_TP_MEMTYPE");
    return m && !strcmp(m, "cuda");
}

static inline uint32_t tm_memtype(void)
{
    return tm_cuda ? REFIT_MEM_CUDA : REFIT_MEM_HOST;
}

#ifdef REFIT_TEST_HAVE_CUDA
/* 0, or -1 with tm_err saying which call failed and why. */
static inline int tm_fail(cudaError_t e, const char *what)
{
    snprintf(tm_err, sizeof(tm_err), "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    return -1;
}
#endif

/* Switch to device memory on `dev` (0 ok, -1: tm_err). */
static inline int tm_use_cuda(int dev)
{
#ifdef REFIT_TEST_HAVE_CUDA
    cudaError_t e = cudaSetDevice(dev);
    if (e != cudaSuccess)
        return tm_fail(e, "cudaSetDevice");
    tm_cuda = 1;
    tm_dev = dev;
    return 0;
#else
    (void)dev;
    snprintf(tm_err, sizeof(tm_err), "built without CUDA (meson found no CUDA toolkit)");
    return -1;
#endif
}

/* Visible devices (0 when there are none or no CUDA), error text in tm_err. */
static inline int tm_device_count(void)
{
#ifdef REFIT_TEST_HAVE_CUDA
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        tm_fail(e, "cudaGetDeviceCount");
        return 0;
    }
    if (!n)
        snprintf(tm_err, sizeof(tm_err), "cudaGetDeviceCount: 0 devices");
    return n;
#else
    snprintf(tm_err, sizeof(tm_err), "built without CUDA (meson found no CUDA toolkit)");
    return 0;
#endif
}

static inline void *tm_alloc(uint64_t n)
{
#ifdef REFIT_TEST_HAVE_CUDA
    if (tm_cuda) {
        /* At least 2 MiB: smaller cudaMalloc allocations may share a
         * driver block, which CUDA IPC cannot export alone (cuda_ipc
         * refuses them). */
        void *p = NULL;
        cudaError_t e = cudaMalloc(&p, n < (2u << 20) ? (2u << 20) : n);
        if (e != cudaSuccess) {
            tm_fail(e, "cudaMalloc");
            return NULL;
        }
        return p;
    }
#endif
    void *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        snprintf(tm_err, sizeof(tm_err), "mmap of %llu bytes failed", (unsigned long long)n);
        return NULL;
    }
    return m;
}

static inline void tm_free(void *p, uint64_t n)
{
    if (!p)
        return;
#ifdef REFIT_TEST_HAVE_CUDA
    if (tm_cuda) {
        cudaFree(p);
        return;
    }
#endif
    munmap(p, n);
}

/* Pattern bytes [from, from + len) into buf.  Device memory: the copies
 * are complete (device synchronized) when it returns, so that another
 * process, or the transport's own streams, see them. */
static inline int tm_fill(void *buf, uint64_t len, uint32_t seed, uint64_t from)
{
#ifdef REFIT_TEST_HAVE_CUDA
    if (tm_cuda) {
        uint8_t *h = malloc(len < TM_CHUNK ? (len ? len : 1) : TM_CHUNK);
        if (!h) {
            snprintf(tm_err, sizeof(tm_err), "out of host memory");
            return -1;
        }
        for (uint64_t o = 0; o < len; o += TM_CHUNK) {
            uint64_t n = len - o < TM_CHUNK ? len - o : TM_CHUNK;
            pat_fill(h, n, seed, from + o);
            cudaError_t e = cudaMemcpy((uint8_t *)buf + o, h, n, cudaMemcpyHostToDevice);
            if (e != cudaSuccess) {
                free(h);
                return tm_fail(e, "cudaMemcpy (fill)");
            }
        }
        free(h);
        cudaError_t e = cudaDeviceSynchronize();
        return e == cudaSuccess ? 0 : tm_fail(e, "cudaDeviceSynchronize (fill)");
    }
#endif
    pat_fill(buf, len, seed, from);
    return 0;
}

static inline int tm_zero(void *buf, uint64_t len)
{
#ifdef REFIT_TEST_HAVE_CUDA
    if (tm_cuda) {
        cudaError_t e = cudaMemset(buf, 0, len);
        if (e == cudaSuccess)
            e = cudaDeviceSynchronize();
        return e == cudaSuccess ? 0 : tm_fail(e, "cudaMemset");
    }
#endif
    memset(buf, 0, len);
    return 0;
}

/* First mismatch of buf against pattern [from, from + len): -1 none,
 * -2 a CUDA error (tm_err), else the position. */
static inline int64_t tm_check(const void *buf, uint64_t len, uint32_t seed, uint64_t from)
{
#ifdef REFIT_TEST_HAVE_CUDA
    if (tm_cuda) {
        uint8_t *h = malloc(len < TM_CHUNK ? (len ? len : 1) : TM_CHUNK);
        if (!h) {
            snprintf(tm_err, sizeof(tm_err), "out of host memory");
            return -2;
        }
        int64_t bad = -1;
        for (uint64_t o = 0; o < len && bad == -1; o += TM_CHUNK) {
            uint64_t n = len - o < TM_CHUNK ? len - o : TM_CHUNK;
            cudaError_t e = cudaMemcpy(h, (const uint8_t *)buf + o, n, cudaMemcpyDeviceToHost);
            if (e != cudaSuccess) {
                tm_fail(e, "cudaMemcpy (check)");
                bad = -2;
                break;
            }
            int64_t p = pat_check(h, n, seed, from + o);
            if (p >= 0)
                bad = (int64_t)o + p;
        }
        free(h);
        return bad;
    }
#endif
    return pat_check(buf, len, seed, from);
}

/* A host copy of [buf, buf + len) (buf itself for host memory); release
 * with tm_view_done.  NULL on failure (tm_err). */
static inline uint8_t *tm_view(const void *buf, uint64_t len)
{
    (void)len; /* host memory is its own view */
#ifdef REFIT_TEST_HAVE_CUDA
    if (tm_cuda) {
        uint8_t *h = malloc(len ? len : 1);
        if (!h) {
            snprintf(tm_err, sizeof(tm_err), "out of host memory");
            return NULL;
        }
        cudaError_t e = cudaMemcpy(h, buf, len, cudaMemcpyDeviceToHost);
        if (e != cudaSuccess) {
            free(h);
            tm_fail(e, "cudaMemcpy (view)");
            return NULL;
        }
        return h;
    }
#endif
    return (uint8_t *)buf;
}

static inline void tm_view_done(uint8_t *view, const void *buf)
{
    if (view && view != buf)
        free(view);
}

/* Free device memory on our device, or 0 (host mode, or an error). */
static inline uint64_t tm_device_free(void)
{
#ifdef REFIT_TEST_HAVE_CUDA
    size_t f = 0, t = 0;
    if (tm_cuda && cudaMemGetInfo(&f, &t) == cudaSuccess)
        return f;
#endif
    return 0;
}

#endif
